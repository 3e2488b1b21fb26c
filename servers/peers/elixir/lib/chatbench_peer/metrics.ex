defmodule ChatbenchPeer.Metrics do
  @moduledoc """
  The server's counters and their Prometheus text for `GET /metrics`, under the names
  chatbench's reference servers use (`chatbench_*`, `process_*`), plus the BEAM's own figures
  (`beam_memory_bytes{kind}` from `:erlang.memory/0`, `beam_processes`, `beam_schedulers`).

  Counters live in one `:counters` array (lock-free, write-concurrent) whose reference is kept
  in `:persistent_term`, so counting from any process costs one atomic add and no message.
  Label values come from closed lists below: no peer can grow the label set. The gauge
  `chatbench_outbound_queued_bytes` is a slot of the same array: each connection process adds
  what it queues, subtracts what it writes, and gives back the rest when it ends.
  """

  @disconnect_reasons ~w(client_close slow_consumer bad_json bad_field bad_room frame_too_large
    invalid_utf8 binary_frame protocol_error io_error shutdown panic)a
  @error_codes ~w(bad_json bad_field bad_room unknown_type not_joined too_many_rooms
    frame_too_large invalid_utf8 binary_frame slow_consumer protocol_error)a
  @http_paths [
    ws: "/ws",
    phoenix: "/socket/websocket",
    metrics: "/metrics",
    healthz: "/healthz",
    other: "other",
    bad: "bad"
  ]
  @simple ~w(connections accepted accept_errors frames_in frames_out deliveries drops_queue_full
    drops_queue_bytes outbound_queued handshake_timeouts)a

  @slots @simple ++
           Enum.map(@disconnect_reasons, &{:disconnect, &1}) ++
           Enum.map(@error_codes, &{:error_sent, &1}) ++
           Enum.map(@http_paths, fn {k, _} -> {:http, k} end)
  @index @slots |> Enum.with_index(1) |> Map.new()

  @doc "The disconnect reasons (the `reason` label of `chatbench_disconnects_total`)."
  def disconnect_reasons, do: @disconnect_reasons

  @doc "The protocol error codes."
  def error_codes, do: @error_codes

  @doc "Creates the counters; called once at application start."
  def init do
    :persistent_term.put(__MODULE__, :counters.new(length(@slots), [:write_concurrency]))
  end

  @doc "Adds `n` to a counter: an atom of the simple list, or `{:disconnect | :error_sent | :http, label}`."
  def add(slot, n \\ 1) do
    :counters.add(:persistent_term.get(__MODULE__), Map.fetch!(@index, slot), n)
  end

  defp get(ref, slot), do: :counters.get(ref, Map.fetch!(@index, slot))

  @doc "A counter's value (for tests and the shutdown wait)."
  def value(slot), do: get(:persistent_term.get(__MODULE__), slot)

  @doc "Renders every metric in the Prometheus text format 0.0.4; `rooms` is the local room count."
  @spec render(non_neg_integer()) :: iodata()
  def render(rooms) do
    ref = :persistent_term.get(__MODULE__)
    v = &get(ref, &1)

    [
      family("chatbench_info", "gauge", "Server architecture and version.", [
        {~s(arch="#{arch()}",version="#{version()}"), 1}
      ]),
      simple("chatbench_connections", "gauge", "Live WebSocket connections.", v.(:connections)),
      simple(
        "chatbench_connections_accepted_total",
        "counter",
        "TCP connections accepted.",
        v.(:accepted)
      ),
      simple(
        "chatbench_accept_errors_total",
        "counter",
        "accept failures (e.g. out of descriptors).",
        v.(:accept_errors)
      ),
      simple(
        "chatbench_rooms",
        "gauge",
        "Rooms (pg groups) with at least one member on this node.",
        rooms
      ),
      simple(
        "chatbench_frames_in_total",
        "counter",
        "WebSocket data messages received.",
        v.(:frames_in)
      ),
      simple(
        "chatbench_frames_out_total",
        "counter",
        "WebSocket data messages written.",
        v.(:frames_out)
      ),
      simple(
        "chatbench_deliveries_total",
        "counter",
        "Forwarded frames sent to recipients' processes.",
        v.(:deliveries)
      ),
      family("chatbench_drops_total", "counter", "Frames dropped for a recipient, by reason.", [
        {~s(reason="queue_full"), v.(:drops_queue_full)},
        {~s(reason="queue_bytes"), v.(:drops_queue_bytes)}
      ]),
      simple(
        "chatbench_outbound_queued_bytes",
        "gauge",
        "Bytes queued to clients and not yet written (every connection process's queue).",
        v.(:outbound_queued)
      ),
      family(
        "chatbench_disconnects_total",
        "counter",
        "WebSocket connections ended, by reason.",
        Enum.map(@disconnect_reasons, &{~s(reason="#{&1}"), v.({:disconnect, &1})})
      ),
      family(
        "chatbench_errors_sent_total",
        "counter",
        "error frames sent, by code.",
        Enum.map(@error_codes, &{~s(code="#{&1}"), v.({:error_sent, &1})})
      ),
      simple(
        "chatbench_handshake_timeouts_total",
        "counter",
        "Connections dropped for not completing the HTTP request head in time.",
        v.(:handshake_timeouts)
      ),
      family(
        "chatbench_http_requests_total",
        "counter",
        "HTTP requests, by path.",
        Enum.map(@http_paths, fn {k, label} -> {~s(path="#{label}"), v.({:http, k})} end)
      ),
      beam(),
      process()
    ]
  end

  defp arch do
    if ChatbenchPeer.Config.get().cluster_nodes == [], do: "elixir", else: "elixir-cluster"
  end

  defp version, do: Application.spec(:chatbench_peer, :vsn) |> to_string()

  defp beam do
    [
      family(
        "beam_memory_bytes",
        "gauge",
        "erlang:memory(), by kind.",
        Enum.map(:erlang.memory(), fn {k, b} -> {~s(kind="#{k}"), b} end)
      ),
      simple("beam_processes", "gauge", "Erlang processes.", :erlang.system_info(:process_count)),
      simple(
        "beam_ports",
        "gauge",
        "Erlang ports (sockets included).",
        :erlang.system_info(:port_count)
      ),
      simple(
        "beam_schedulers_online",
        "gauge",
        "Schedulers online.",
        :erlang.system_info(:schedulers_online)
      ),
      simple("beam_cluster_nodes", "gauge", "Other connected Erlang nodes.", length(Node.list())),
      simple(
        "beam_pg_remote_scopes",
        "gauge",
        "Other nodes' :pg scopes this node's scope has synced with.",
        ChatbenchPeer.Rooms.remote_scopes()
      )
    ]
  end

  defp process do
    {rss, cpu, threads} = proc_stat()

    [
      simple("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss),
      simple("process_cpu_seconds_total", "counter", "User and system CPU time, seconds.", cpu),
      simple("process_open_fds", "gauge", "Open file descriptors.", open_fds()),
      simple("process_threads", "gauge", "OS threads.", threads)
    ]
  end

  # /proc/self/statm (resident pages) and /proc/self/stat (utime, stime, threads).
  defp proc_stat do
    page = 4096
    ticks = 100

    rss =
      with {:ok, statm} <- File.read("/proc/self/statm"),
           [_, pages | _] <- String.split(statm),
           {n, _} <- Integer.parse(pages) do
        n * page
      else
        _ -> 0
      end

    {cpu, threads} =
      with {:ok, stat} <- File.read("/proc/self/stat"),
           [_, rest] <- :binary.split(stat, ")", [:global]) |> then(&[hd(&1), List.last(&1)]),
           f <- String.split(rest),
           {ut, _} <- Integer.parse(Enum.at(f, 11, "0")),
           {st, _} <- Integer.parse(Enum.at(f, 12, "0")),
           {th, _} <- Integer.parse(Enum.at(f, 17, "0")) do
        {(ut + st) / ticks, th}
      else
        _ -> {0.0, 0}
      end

    {rss, cpu, threads}
  end

  defp open_fds do
    case File.ls("/proc/self/fd") do
      {:ok, l} -> length(l)
      _ -> 0
    end
  end

  defp simple(name, type, help, value), do: family(name, type, help, [{nil, value}])

  defp family(name, type, help, samples) do
    [
      "# HELP ",
      name,
      " ",
      help,
      "\n# TYPE ",
      name,
      " ",
      type,
      "\n"
      | Enum.map(samples, fn
          {nil, v} -> [name, " ", num(v), "\n"]
          {labels, v} -> [name, "{", labels, "} ", num(v), "\n"]
        end)
    ]
  end

  defp num(v) when is_integer(v), do: Integer.to_string(v)
  defp num(v) when is_float(v), do: :erlang.float_to_binary(v, [:short])
end
