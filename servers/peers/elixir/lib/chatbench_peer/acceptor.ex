defmodule ChatbenchPeer.Acceptor do
  @moduledoc """
  One acceptor of the pool: blocks in `:gen_tcp.accept/1`, starts a `ChatbenchPeer.Connection`
  under `ChatbenchPeer.ConnSup` for each socket, hands the socket over
  (`controlling_process`) and tells the connection to start (`:shoot`, Ranch's word). When the
  connection limit (`--max-connections`, the DynamicSupervisor's `max_children`) is reached,
  or descriptors run out, the socket is closed and counted in `chatbench_accept_errors_total`.
  """

  alias ChatbenchPeer.{Connection, Metrics}

  # Ranch's pause after EMFILE/ENFILE, so a full descriptor table does not spin the acceptor.
  @emfile_pause_ms 100

  def child_spec(lsock), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [lsock]}}

  def start_link(lsock), do: {:ok, :proc_lib.spawn_link(fn -> loop(lsock) end)}

  defp loop(lsock) do
    case :gen_tcp.accept(lsock) do
      {:ok, sock} ->
        Metrics.add(:accepted)
        hand_over(sock)
        loop(lsock)

      {:error, :closed} ->
        exit(:shutdown)

      {:error, e} when e in [:emfile, :enfile] ->
        Metrics.add(:accept_errors)
        Process.sleep(@emfile_pause_ms)
        loop(lsock)

      {:error, _} ->
        Metrics.add(:accept_errors)
        loop(lsock)
    end
  end

  defp hand_over(sock) do
    with {:ok, pid} <- DynamicSupervisor.start_child(ChatbenchPeer.ConnSup, {Connection, sock}),
         :ok <- :gen_tcp.controlling_process(sock, pid) do
      send(pid, :shoot)
    else
      _ ->
        Metrics.add(:accept_errors)
        :gen_tcp.close(sock)
    end
  end
end
