defmodule ChatbenchPeer.Cluster do
  @moduledoc """
  `elixir-cluster`: keeps this node connected (distributed Erlang) to the nodes given with
  `--join`, so the `:pg` scope of rooms spans them all. Connection attempts repeat every
  500 ms until each node is up, and again after a `nodedown` (a node that is killed stays
  in the list; reconnecting to it is one cheap failed attempt per period). The epmd, the
  cookie and the node names are the launcher's (harness/src/peers/elixir.rs): epmd on
  loopback on a port of its own, a cookie made per run, distribution bound to 127.0.0.1.
  """

  use GenServer

  @retry_ms 500

  def start_link(nodes), do: GenServer.start_link(__MODULE__, nodes, name: __MODULE__)

  @impl true
  def init(nodes) do
    :ok = :net_kernel.monitor_nodes(true)
    send(self(), :connect)
    {:ok, nodes}
  end

  @impl true
  def handle_info(:connect, nodes) do
    for n <- nodes, n not in Node.list(), do: Node.connect(n)

    if Enum.all?(nodes, &(&1 in Node.list())),
      do: :ok,
      else: Process.send_after(self(), :connect, @retry_ms)

    {:noreply, nodes}
  end

  def handle_info({:nodedown, _}, nodes) do
    Process.send_after(self(), :connect, @retry_ms)
    {:noreply, nodes}
  end

  def handle_info({:nodeup, _}, nodes), do: {:noreply, nodes}
end
