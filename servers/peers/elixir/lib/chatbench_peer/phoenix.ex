defmodule ChatbenchPeer.Phoenix do
  @moduledoc """
  Phoenix Channels over WebSocket with the v2 JSON serializer (`/socket/websocket?vsn=2.0.0`),
  the subset a chat app's `RoomChannel` uses: every frame is
  `[join_ref, ref, topic, event, payload]`.

  - `phx_join` on `room:NAME` → `phx_reply` `{"status":"ok","response":{}}` with the same refs
    (the channel's `join("room:" <> _, _, socket)` returning `{:ok, socket}`); any other topic,
    or one join past `--max-rooms`, gets `{"status":"error",…}`;
  - `heartbeat` on `phoenix` → `phx_reply` ok;
  - `phx_leave` → `phx_reply` ok;
  - any other event on a joined topic is `broadcast_from!`: `[null,null,topic,event,payload]`
    to the topic's other members, encoded once for all of them. On a topic not joined:
    `phx_reply` error `unmatched topic`, as Phoenix answers.

  A topic is the `:pg` group `{:topic, topic}`. A frame that is not a v2 array closes the
  socket with 1008 (Phoenix has no error frame for it). With `--fault-injection`, the event
  `panic` on a joined topic raises in the connection's process, like v1's `{"t":"panic"}`.
  """

  alias ChatbenchPeer.{Connection, Metrics, ProtocolV1, Rooms}

  @doc "Handles one text message; returns `{:ok, conn}` or a close already begun."
  def handle(text, s) do
    case decode(text) do
      {:ok, [join_ref, ref, topic, event, payload]} ->
        event(event, topic, join_ref, ref, payload, s)

      :error ->
        Connection.close_with(s, 1008, :bad_json)
    end
  end

  defp decode(text) do
    case :jiffy.decode(text) do
      [_, _, topic, event, _] = f when is_binary(topic) and is_binary(event) -> {:ok, f}
      _ -> :error
    end
  catch
    _, _ -> :error
  end

  defp event("heartbeat", "phoenix", _join_ref, ref, _payload, s),
    do: {:ok, reply(s, :null, ref, "phoenix", :ok, {[]})}

  defp event("phx_join", topic, join_ref, ref, _payload, s) do
    cond do
      Map.has_key?(s.rooms, topic) ->
        {:ok, reply(s, join_ref, ref, topic, :ok, {[]})}

      not room_topic?(topic) ->
        {:ok, reply(s, join_ref, ref, topic, :error, {[{"reason", "unmatched topic"}]})}

      map_size(s.rooms) >= s.cfg.max_rooms_per_conn ->
        {:ok, reply(s, join_ref, ref, topic, :error, {[{"reason", "too many topics"}]})}

      true ->
        :ok = Rooms.join({:topic, topic})

        {:ok,
         reply(%{s | rooms: Map.put(s.rooms, topic, join_ref)}, join_ref, ref, topic, :ok, {[]})}
    end
  end

  defp event("phx_leave", topic, join_ref, ref, _payload, s) do
    if Map.has_key?(s.rooms, topic), do: Rooms.leave({:topic, topic})
    {:ok, reply(%{s | rooms: Map.delete(s.rooms, topic)}, join_ref, ref, topic, :ok, {[]})}
  end

  defp event(event, topic, join_ref, ref, payload, s) do
    cond do
      not Map.has_key?(s.rooms, topic) ->
        {:ok, reply(s, join_ref, ref, topic, :error, {[{"reason", "unmatched topic"}]})}

      event == "panic" and s.cfg.fault_injection ->
        raise ProtocolV1.InjectedPanic

      true ->
        text = :jiffy.encode([:null, :null, topic, event, payload])
        shared = Connection.text_frame(text)
        Metrics.add(:deliveries, Rooms.broadcast_from({:topic, topic}, shared))
        {:ok, s}
    end
  end

  defp room_topic?("room:" <> name), do: ProtocolV1.valid_room?(name)
  defp room_topic?(_), do: false

  defp reply(s, join_ref, ref, topic, status, response) do
    # Key order as Phoenix's Jason encoding of %{status: …, response: …} writes it.
    body = {[{"response", response}, {"status", Atom.to_string(status)}]}
    Connection.reply(s, :jiffy.encode([join_ref, ref, topic, "phx_reply", body]))
  end
end
