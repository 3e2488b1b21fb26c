defmodule ChatbenchPeer.Http do
  @moduledoc """
  The HTTP/1.1 request head of a connection, read with the socket in `{packet, :http_bin}` mode
  (OTP's own HTTP parser), and its routing: `GET /healthz`, `GET /metrics`, and the WebSocket
  upgrade on `/ws` (chatbench v1) and `/socket/websocket` (Phoenix Channels v2). Everything
  but an upgrade is answered and closed (`connection: close`).

  Limits: a request or header line over 8 KiB is an `http_error` (400, the listen socket's
  `packet_size`), more than 64 headers is 431, and the whole head must arrive within the
  handshake timeout (`Connection` counts the timeout).
  """

  alias ChatbenchPeer.{Connection, Metrics, Rooms}

  @max_headers 64

  @doc "Handles one `{:http, sock, packet}` message of a connection still reading its head."
  def handle({:http, sock, {:http_request, method, uri, _version}}, s) do
    path = with {:abs_path, p} <- uri, do: p, else: (_ -> nil)
    next(sock, %{s | req: %{s.req | method: method, path: path}})
  end

  def handle({:http, sock, {:http_header, _, name, _, value}}, s) do
    if s.req.count >= @max_headers do
      respond(s, :bad, 431, "too many headers\n")
    else
      key = name |> to_string() |> String.downcase()

      next(sock, %{
        s
        | req: %{s.req | headers: Map.put(s.req.headers, key, value), count: s.req.count + 1}
      })
    end
  end

  def handle({:http, _sock, :http_eoh}, s), do: route(s)
  def handle({:http, _sock, {:http_error, _}}, s), do: respond(s, :bad, 400, "bad request\n")

  defp next(sock, s) do
    :inet.setopts(sock, active: :once)
    {:noreply, s}
  end

  defp route(%{req: %{method: :GET, path: path}} = s) when is_binary(path) do
    case path |> :binary.split("?") |> hd() do
      "/healthz" ->
        respond(s, :healthz, 200, "ok\n")

      "/metrics" ->
        # Counted before rendering, so a scrape sees itself.
        respond(
          s,
          :metrics,
          200,
          fn -> Metrics.render(Rooms.local_count()) end,
          "text/plain; version=0.0.4"
        )

      "/ws" ->
        upgrade(s, :v1, :ws)

      "/socket/websocket" ->
        upgrade(s, :phx, :phoenix)

      _ ->
        respond(s, :other, 404, "not found\n")
    end
  end

  defp route(%{req: %{path: path}} = s) when is_binary(path),
    do: respond(s, :other, 405, "GET only\n")

  defp route(s), do: respond(s, :bad, 400, "bad request target\n")

  defp upgrade(s, proto, label) do
    h = s.req.headers
    wants = String.contains?(String.downcase(Map.get(h, "upgrade", "")), "websocket")
    key = Map.get(h, "sec-websocket-key")

    if wants and is_binary(key) and Map.get(h, "sec-websocket-version") == "13" do
      Metrics.add({:http, label})

      :ok =
        :gen_tcp.send(s.sock, [
          "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
          "sec-websocket-accept: ",
          :cow_ws.encode_key(key),
          "\r\n\r\n"
        ])

      {:noreply, Connection.upgraded(s, proto)}
    else
      respond(s, :bad, 400, "expected a WebSocket upgrade (version 13)\n")
    end
  end

  defp respond(s, label, status, body, type \\ "text/plain") do
    Metrics.add({:http, label})
    body = if is_function(body, 0), do: body.(), else: body

    :gen_tcp.send(s.sock, [
      "HTTP/1.1 ",
      Integer.to_string(status),
      " ",
      reason(status),
      "\r\ncontent-type: ",
      type,
      "\r\ncontent-length: ",
      Integer.to_string(:erlang.iolist_size(body)),
      "\r\nconnection: close\r\n\r\n",
      body
    ])

    {:stop, :normal, s}
  end

  defp reason(200), do: "OK"
  defp reason(400), do: "Bad Request"
  defp reason(404), do: "Not Found"
  defp reason(405), do: "Method Not Allowed"
  defp reason(431), do: "Request Header Fields Too Large"
end
