defmodule ChatbenchPeer.Connection do
  @moduledoc """
  One process per TCP connection, started under `ChatbenchPeer.ConnSup` (a DynamicSupervisor)
  by an acceptor, as Ranch starts a Cowboy connection process. It owns the socket for the
  connection's whole life: the HTTP/1.1 request head (`/healthz`, `/metrics`, the WebSocket
  upgrade on `/ws` or `/socket/websocket`), then RFC 6455 framing (`cow_ws`), then hands each
  text message to the protocol module (`ChatbenchPeer.ProtocolV1` or `ChatbenchPeer.Phoenix`).

  ## The outbound queue (slow consumers)

  Room members `send/2` this process `{:deliver, group, frame}`. A mailbox is a queue another peer can
  grow, so the process never blocks on its socket: it writes with `port_command(…, [:nosuspend])`,
  which refuses instead of suspending when the socket's driver queue is over its high
  watermark, and keeps what could not be written in its own queue, bounded by count
  (`--outbound-queue`, default 1,024 frames) AND bytes (`--outbound-queue-bytes`, 4 MiB). The
  mailbox is drained into that queue every time the process runs, so it holds only what
  arrived since. A frame past either bound gets the reference servers' slow-consumer rule
  (`ChatbenchPeer.SlowConsumer`), counted: `drop` (the newest frame,
  `chatbench_drops_total{reason="queue_full"}` or `{reason="queue_bytes"}` by the bound that
  refused it) or `disconnect` (`slow_consumer`, close 1008); under `drop`, a connection whose
  frames keep being refused with nothing written to it for `--slow-consumer-grace` (10 s) is
  closed as `disconnect` does. A full socket is retried on a short timer, since the driver
  sends no "writable" message.

  The bytes in the queue are counted in `chatbench_outbound_queued_bytes` (a slot of
  `ChatbenchPeer.Metrics`' `:counters` array) as they are queued and written; the process
  keeps its own share in its process dictionary, which survives a crash in a callback, so
  `terminate/2` gives back exactly what is left whatever way the connection ends.

  ## Faults

  With `--fault-injection`, `{"t":"panic"}` raises in this process only: the supervisor logs
  the crash, `:pg` drops its memberships (it monitors members), `terminate/2` counts it as a
  `panic` disconnect, and no other connection notices.
  """

  use GenServer, restart: :temporary

  alias ChatbenchPeer.{Config, Http, Metrics, Phoenix, ProtocolV1, SlowConsumer}

  # Retry period for a socket whose driver queue is over its high watermark.
  @flush_retry_ms 2

  defstruct sock: nil,
            cfg: nil,
            phase: :http,
            proto: nil,
            req: %{method: nil, path: nil, headers: %{}, count: 0},
            timer: nil,
            buf: <<>>,
            frag: :undefined,
            frag_acc: [],
            msg_len: 0,
            utf8: 0,
            rooms: %{},
            outq: :queue.new(),
            outq_len: 0,
            outq_bytes: 0,
            refused_since: nil,
            flush_timer: nil,
            closing: nil

  @type t :: %__MODULE__{}

  @doc false
  def start_link(sock) do
    # Phoenix's socket transports hibernate after 15 s idle; so does this process.
    GenServer.start_link(__MODULE__, sock, hibernate_after: Config.get().hibernate_after_ms)
  end

  @impl true
  def init(sock), do: {:ok, %__MODULE__{sock: sock, cfg: Config.get()}}

  # The acceptor made us the socket's controlling process: start reading.
  @impl true
  def handle_info(:shoot, s) do
    :ok = :inet.setopts(s.sock, active: :once)

    {:noreply,
     %{s | timer: Process.send_after(self(), :handshake_timeout, s.cfg.handshake_timeout_ms)}}
  end

  def handle_info({:http, _, _} = m, %{phase: :http} = s), do: Http.handle(m, s)

  def handle_info({:tcp, sock, data}, %{phase: :ws} = s) do
    case frames(%{s | buf: s.buf <> data}) do
      {:ok, s} ->
        :inet.setopts(sock, active: :once)
        {:noreply, s}

      {:stop, _, _} = stop ->
        stop
    end
  end

  def handle_info({:deliver, {_kind, name}, frame}, s) do
    if s.closing == nil and Map.has_key?(s.rooms, name),
      do: {:noreply, push(s, frame, true)},
      else: {:noreply, s}
  end

  def handle_info(:flush, s), do: {:noreply, flush(%{s | flush_timer: nil})}

  def handle_info({:inet_reply, _, :ok}, s), do: {:noreply, s}
  def handle_info({:inet_reply, _, {:error, _}}, s), do: {:stop, {:shutdown, :io_error}, s}

  def handle_info(:handshake_timeout, %{phase: :http} = s) do
    Metrics.add(:handshake_timeouts)
    {:stop, :normal, s}
  end

  def handle_info(:handshake_timeout, s), do: {:noreply, s}
  def handle_info(:close_timeout, s), do: {:stop, {:shutdown, s.closing}, s}

  # Graceful stop: close 1001 and wait (up to the close timeout) for the client's answer.
  def handle_info(:going_away, %{phase: :ws, closing: nil} = s),
    do: {:noreply, begin_close(s, 1001, :shutdown)}

  def handle_info(:going_away, %{phase: :http} = s), do: {:stop, :normal, s}
  def handle_info(:going_away, s), do: {:noreply, s}

  def handle_info({:tcp_closed, _}, %{phase: :ws} = s),
    do: {:stop, {:shutdown, s.closing || :io_error}, s}

  def handle_info({:tcp_error, _, _}, %{phase: :ws} = s),
    do: {:stop, {:shutdown, s.closing || :io_error}, s}

  def handle_info({:tcp_closed, _}, s), do: {:stop, :normal, s}
  def handle_info({:tcp_error, _, _}, s), do: {:stop, :normal, s}

  @impl true
  def terminate(reason, %{phase: :ws} = s) do
    # Leave the groups before counting (`:pg` would also drop us on its monitor's signal, but
    # later): once the disconnect is counted, the memberships are gone.
    group = if s.proto == :v1, do: :room, else: :topic
    for {name, _} <- s.rooms, do: ChatbenchPeer.Rooms.leave({group, name})
    Metrics.add(:connections, -1)

    why =
      case reason do
        {:shutdown, r} when is_atom(r) -> r
        :normal -> :client_close
        :shutdown -> :shutdown
        _ -> :panic
      end

    Metrics.add({:disconnect, why})
    release_queued()
    :gen_tcp.close(s.sock)
  end

  def terminate(_reason, s) do
    release_queued()
    :gen_tcp.close(s.sock)
  end

  @doc "Called by `Http` once the upgrade response is written: from now on, WebSocket frames."
  @spec upgraded(t(), :v1 | :phx) :: t()
  def upgraded(s, proto) do
    Process.cancel_timer(s.timer)
    Metrics.add(:connections)
    :ok = :inet.setopts(s.sock, packet: :raw, active: :once)
    # The request head is not needed any more: do not keep it for the connection's life.
    %{s | phase: :ws, proto: proto, timer: nil, req: nil}
  end

  # ---------------------------------------------------------------------------------------
  # Reading: every complete frame in the buffer.

  defp frames(s) do
    case :cow_ws.parse_header(s.buf, %{}, s.frag) do
      :more ->
        {:ok, s}

      :error ->
        fatal(s, :protocol_error, "bad WebSocket frame header")

      {_type, _frag, _rsv, _len, :undefined, _rest} ->
        fatal(s, :protocol_error, "client frames must be masked")

      {type, frag, rsv, len, mask, rest} ->
        cond do
          type in [:text, :binary, :fragment] and s.msg_len + len > s.cfg.max_frame_bytes ->
            fatal(s, :frame_too_large, "message over #{s.cfg.max_frame_bytes} bytes")

          byte_size(rest) < len ->
            {:ok, s}

          true ->
            payload(s, type, frag, rsv, len, mask, rest)
        end
    end
  end

  defp payload(s, type, frag, rsv, len, mask, rest) do
    case :cow_ws.parse_payload(rest, mask, s.utf8, 0, type, len, frag, %{}, rsv) do
      {:ok, data, utf8, rest} ->
        message(
          %{s | buf: rest, frag: frag},
          :cow_ws.make_frame(type, data, :undefined, frag),
          utf8,
          len
        )

      {:ok, code, data, _utf8, rest} ->
        message(%{s | buf: rest, frag: frag}, :cow_ws.make_frame(type, data, code, frag), 0, len)

      {:error, :badencoding} ->
        fatal(s, :invalid_utf8, "text message is not UTF-8")

      _ ->
        fatal(s, :protocol_error, "bad WebSocket frame payload")
    end
  end

  defp message(s, frame, utf8, len) do
    case frame do
      {:text, text} ->
        continue(data(%{s | utf8: 0}, text))

      {:binary, _} ->
        fatal(s, :binary_frame, "binary messages are not part of the protocol")

      {:fragment, :nofin, _type, data} ->
        frames(%{s | frag_acc: [s.frag_acc | data], msg_len: s.msg_len + len, utf8: utf8})

      {:fragment, :fin, :text, data} ->
        text = IO.iodata_to_binary([s.frag_acc | data])
        continue(data(%{s | frag_acc: [], msg_len: 0, utf8: 0, frag: :undefined}, text))

      {:fragment, :fin, :binary, _} ->
        fatal(s, :binary_frame, "binary messages are not part of the protocol")

      {:ping, data} ->
        frames(pong(s, :cow_ws.frame({:pong, data}, %{})))

      :ping ->
        frames(pong(s, :cow_ws.frame(:pong, %{})))

      {:close, _code, _} ->
        client_closed(s)

      :close ->
        client_closed(s)

      _pong ->
        frames(s)
    end
  end

  defp continue({:ok, s}), do: frames(s)
  defp continue(stop), do: stop

  # The client's close: the answer to ours, or its own (answered with 1000).
  defp client_closed(%{closing: nil} = s) do
    s = control(s, :cow_ws.frame({:close, 1000, <<>>}, %{}))
    {:stop, {:shutdown, :client_close}, s}
  end

  defp client_closed(s), do: {:stop, {:shutdown, s.closing}, s}

  defp data(%{closing: nil} = s, text) do
    Metrics.add(:frames_in)

    case s.proto do
      :v1 -> ProtocolV1.handle(text, s)
      :phx -> Phoenix.handle(text, s)
    end
  end

  defp data(s, _text), do: {:ok, s}

  # ---------------------------------------------------------------------------------------
  # Writing.

  @doc "Queues a text message to this client (a reply: joined, error, phx_reply)."
  @spec reply(t(), iodata()) :: t()
  def reply(s, text), do: push(s, text_frame(text), true)

  @doc "One WebSocket text frame (header and payload) as one binary, to share among recipients."
  @spec text_frame(iodata()) :: binary()
  def text_frame(text),
    do: IO.iodata_to_binary(:cow_ws.frame({:text, IO.iodata_to_binary(text)}, %{}))

  @doc """
  Sends an `error` frame; fatal codes then close the connection with their close code and
  return `{:stop, …}` once the client answers (or the close timeout passes).
  """
  def error(s, code, reason) do
    Metrics.add({:error_sent, code})

    text = [
      "{\"t\":\"error\",\"code\":\"",
      Atom.to_string(code),
      "\",\"reason\":",
      :jiffy.encode(reason),
      "}"
    ]

    {:ok, reply(s, text)}
  end

  @doc "An error that ends the connection: error frame, close frame with the code's close code."
  def fatal(s, code, reason) do
    Metrics.add({:error_sent, code})

    text = [
      "{\"t\":\"error\",\"code\":\"",
      Atom.to_string(code),
      "\",\"reason\":",
      :jiffy.encode(reason),
      "}"
    ]

    s = force(s, text_frame(text))
    Metrics.add(:frames_out)
    {:ok, begin_close(s, close_code(code), code)}
  end

  @doc "Closes without an error frame (the Phoenix protocol has none)."
  def close_with(s, code, reason), do: {:ok, begin_close(s, code, reason)}

  defp close_code(:frame_too_large), do: 1009
  defp close_code(:invalid_utf8), do: 1007
  defp close_code(:binary_frame), do: 1003
  defp close_code(:protocol_error), do: 1002
  defp close_code(_), do: 1008

  defp begin_close(s, code, reason) do
    s = force(s, :cow_ws.frame({:close, code, <<>>}, %{}))
    Process.send_after(self(), :close_timeout, s.cfg.close_timeout_ms)
    %{s | closing: reason}
  end

  # The close frame answering the client's: behind what is queued, never dropped (once).
  defp control(s, frame), do: force(s, frame)

  # A pong: within the queue's bounds like a data frame (a client that pings and never reads
  # must not grow the queue), not counted as a data frame out.
  defp pong(s, frame), do: push(s, IO.iodata_to_binary(frame), false)

  # Appends past the bound (used for a handful of control frames) and writes what it can.
  defp force(s, frame), do: s |> enqueue(IO.iodata_to_binary(frame), false) |> flush()

  # A data frame: written now if nothing is queued and the socket takes it, else queued within
  # the bounds, else the slow-consumer rule.
  defp push(s, frame, data?) do
    if s.outq_len == 0 and write(s.sock, frame) do
      if data?, do: Metrics.add(:frames_out)
      %{s | refused_since: nil}
    else
      now = System.monotonic_time(:millisecond)

      case SlowConsumer.offer(
             byte_size(frame),
             s.outq_len,
             s.outq_bytes,
             s.refused_since,
             now,
             s.cfg
           ) do
        {:queue, _} ->
          s |> enqueue(frame, data?) |> retry_later()

        {{:drop, :queue_full}, since} ->
          Metrics.add(:drops_queue_full)
          %{s | refused_since: since}

        {{:drop, :queue_bytes}, since} ->
          Metrics.add(:drops_queue_bytes)
          %{s | refused_since: since}

        {:kick, _} ->
          kick(s)
      end
    end
  end

  # The client is not reading what is queued: drop it, then error and close (1008).
  defp kick(s) do
    account(-s.outq_bytes)
    s = %{s | outq: :queue.new(), outq_len: 0, outq_bytes: 0, refused_since: nil}

    reason =
      if s.cfg.slow_consumer == :drop,
        do: "outbound queue full and nothing written for the slow-consumer grace",
        else: "outbound queue full: the client reads too slowly"

    {:ok, s} = fatal(s, :slow_consumer, reason)
    s
  end

  defp enqueue(s, frame, data?) do
    account(byte_size(frame))

    %{
      s
      | outq: :queue.in({frame, data?}, s.outq),
        outq_len: s.outq_len + 1,
        outq_bytes: s.outq_bytes + byte_size(frame)
    }
  end

  defp flush(s) do
    case :queue.out(s.outq) do
      {:empty, _} ->
        s

      {{:value, {frame, data?}}, rest} ->
        if write(s.sock, frame) do
          if data?, do: Metrics.add(:frames_out)
          account(-byte_size(frame))

          flush(%{
            s
            | outq: rest,
              outq_len: s.outq_len - 1,
              outq_bytes: s.outq_bytes - byte_size(frame),
              refused_since: nil
          })
        else
          retry_later(s)
        end
    end
  end

  # This process's share of `chatbench_outbound_queued_bytes`: the gauge and the process
  # dictionary move together, so `release_queued/0` gives back exactly this process's bytes.
  defp account(0), do: :ok

  defp account(delta) do
    Metrics.add(:outbound_queued, delta)
    Process.put(:outbound_queued, Process.get(:outbound_queued, 0) + delta)
  end

  defp release_queued do
    case Process.put(:outbound_queued, 0) do
      n when is_integer(n) and n != 0 -> Metrics.add(:outbound_queued, -n)
      _ -> :ok
    end
  end

  # `true` when the socket took the frame (or is gone: `tcp_closed` follows and ends us).
  defp write(sock, frame) do
    :erlang.port_command(sock, frame, [:nosuspend])
  rescue
    ArgumentError -> true
  end

  defp retry_later(%{flush_timer: nil} = s),
    do: %{s | flush_timer: Process.send_after(self(), :flush, @flush_retry_ms)}

  defp retry_later(s), do: s
end
