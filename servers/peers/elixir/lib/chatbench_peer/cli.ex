defmodule ChatbenchPeer.CLI do
  @moduledoc """
  The command line: parses the flags (`ChatbenchPeer.Config`), starts the application and
  prints the one line chatbench's launcher reads, as the Node peers and `chatbench serve` do:
  `<addr> ws://<addr>/ws arch=elixir pid=<os pid>`. Logs go to stderr; stdout carries only
  that line.

      elixir --erl "+S 2:2" -pa _build/…/ebin -e "ChatbenchPeer.CLI.main(System.argv())" \\
        --no-halt -- --listen 127.0.0.1:0
  """

  alias ChatbenchPeer.Config

  def main(argv) do
    argv = Enum.drop_while(argv, &(&1 == "--"))

    case Config.parse(argv) do
      {:ok, cfg} ->
        start(cfg)

      {:error, msg} ->
        IO.puts(:stderr, "chatbench elixir peer: " <> msg)
        System.halt(2)
    end
  end

  defp start(cfg) do
    Logger.configure_backend(:console, device: :standard_error)
    Config.put(cfg)

    case Application.ensure_all_started(:chatbench_peer) do
      {:ok, _} ->
        port = ChatbenchPeer.Listener.port()
        host = :inet.ntoa(cfg.listen_ip) |> to_string()
        addr = if tuple_size(cfg.listen_ip) == 8, do: "[#{host}]:#{port}", else: "#{host}:#{port}"
        arch = if cfg.cluster_nodes == [], do: "elixir", else: "elixir-cluster"
        IO.puts("#{addr} ws://#{addr}/ws arch=#{arch} pid=#{System.pid()} node=#{node()}")

      {:error, reason} ->
        IO.puts(:stderr, "chatbench elixir peer: cannot start: #{inspect(reason)}")
        System.halt(1)
    end
  end
end
