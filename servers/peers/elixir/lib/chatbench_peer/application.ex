defmodule ChatbenchPeer.Application do
  @moduledoc """
  The OTP application and its supervision tree (`rest_for_one`, in start order):

      ChatbenchPeer.Sup
      ├── ChatbenchPeer.PG          the :pg scope: rooms and Phoenix topics
      ├── ChatbenchPeer.Cluster     elixir-cluster only: connects to the other nodes
      ├── ChatbenchPeer.ConnSup     DynamicSupervisor: one Connection per TCP connection
      └── ChatbenchPeer.Listener    the listen socket and its acceptor pool

  Stopping (SIGTERM makes OTP call `init:stop/0`): `prep_stop/1` closes the listener, sends
  every connection `:going_away` (close 1001) and waits, up to `--shutdown-grace-ms`, for them
  to finish their close handshakes; then the tree is stopped and the VM exits 0.
  """

  use Application

  alias ChatbenchPeer.{Config, Metrics}

  @impl true
  def start(_type, _args) do
    if :persistent_term.get(Config, nil) == nil, do: Config.put(%Config{})
    cfg = Config.get()
    Metrics.init()

    children =
      [ChatbenchPeer.Rooms] ++
        if(cfg.cluster_nodes == [], do: [], else: [{ChatbenchPeer.Cluster, cfg.cluster_nodes}]) ++
        [
          {DynamicSupervisor,
           name: ChatbenchPeer.ConnSup, strategy: :one_for_one, max_children: cfg.max_connections},
          {ChatbenchPeer.Listener, cfg}
        ]

    Supervisor.start_link(children, strategy: :rest_for_one, name: ChatbenchPeer.Sup)
  end

  @impl true
  def prep_stop(state) do
    _ = Supervisor.terminate_child(ChatbenchPeer.Sup, ChatbenchPeer.Listener)

    for {_, pid, _, _} <- DynamicSupervisor.which_children(ChatbenchPeer.ConnSup),
        is_pid(pid),
        do: send(pid, :going_away)

    deadline = System.monotonic_time(:millisecond) + Config.get().shutdown_grace_ms
    wait_closed(deadline)
    state
  end

  defp wait_closed(deadline) do
    if DynamicSupervisor.count_children(ChatbenchPeer.ConnSup).active > 0 and
         System.monotonic_time(:millisecond) < deadline do
      Process.sleep(10)
      wait_closed(deadline)
    end
  end
end
