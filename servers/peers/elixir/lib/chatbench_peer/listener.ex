defmodule ChatbenchPeer.Listener do
  @moduledoc """
  The listening socket and its acceptor pool, as `ranch_acceptors_sup` does it: this
  supervisor opens the socket (and owns it), then starts `--acceptors` `ChatbenchPeer.Acceptor`
  processes that all block in `accept` on it. An acceptor that crashes is restarted; stopping
  this supervisor closes the socket, so new connections are refused at once on shutdown.
  """

  use Supervisor

  alias ChatbenchPeer.Acceptor

  def start_link(cfg), do: Supervisor.start_link(__MODULE__, cfg, name: __MODULE__)

  @doc "The bound port (after start)."
  def port, do: :persistent_term.get({__MODULE__, :port})

  @impl true
  def init(cfg) do
    family = if tuple_size(cfg.listen_ip) == 8, do: [:inet6], else: []

    opts =
      family ++
        [
          :binary,
          ip: cfg.listen_ip,
          # The request head is parsed by OTP (`packet: :http_bin`); lines are capped at 8 KiB.
          packet: :http_bin,
          packet_size: 8192,
          active: false,
          reuseaddr: true,
          backlog: cfg.backlog,
          nodelay: true,
          # A peer that stops reading cannot hold a socket forever.
          send_timeout: 30_000,
          send_timeout_close: true,
          # The driver queue a socket may hold before writes are refused (see Connection).
          high_watermark: 64 * 1024,
          low_watermark: 32 * 1024
        ]

    case :gen_tcp.listen(cfg.listen_port, opts) do
      {:ok, lsock} ->
        {:ok, port} = :inet.port(lsock)
        :persistent_term.put({__MODULE__, :port}, port)

        children =
          for i <- 1..cfg.acceptors,
              do: Supervisor.child_spec({Acceptor, lsock}, id: {Acceptor, i})

        Supervisor.init(children, strategy: :one_for_one, max_restarts: 100, max_seconds: 1)

      {:error, reason} ->
        raise "cannot listen on #{:inet.ntoa(cfg.listen_ip)}:#{cfg.listen_port}: #{:inet.format_error(reason)}"
    end
  end
end
