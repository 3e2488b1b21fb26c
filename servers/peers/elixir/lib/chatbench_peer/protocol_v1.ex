defmodule ChatbenchPeer.ProtocolV1 do
  @moduledoc """
  chatbench wire protocol v1 (docs/protocol.md) for one connection: `join` → `joined`,
  `leave`, and `msg` forwarded byte for byte to the room's other members, with the error codes
  and fatal closes the protocol defines. A room is the `:pg` group `{:room, name}`.

  JSON is parsed with `jiffy` (Debian `erlang-jiffy`); objects come back as ordered key lists,
  so duplicate keys are seen and refused as `bad_json`. The forwarded frame is the received
  text, framed once (`cow_ws.frame/2`) into one binary every recipient shares.
  """

  alias ChatbenchPeer.{Connection, Metrics, Rooms}

  defmodule InjectedPanic do
    @moduledoc "Raised by `{\"t\":\"panic\"}` under `--fault-injection`."
    defexception message: "injected panic ({\"t\":\"panic\"} with --fault-injection)"
  end

  @doc "Handles one text message; returns `{:ok, conn}` or a fatal close already begun."
  def handle(text, s) do
    case decode(text) do
      {:ok, fields} -> frame(Map.get(fields, "t"), fields, text, s)
      :error -> Connection.fatal(s, :bad_json, "not a JSON object")
    end
  end

  @doc "A JSON object as a map, or `:error` (syntax, trailing data, not an object, duplicate keys)."
  def decode(text) do
    case :jiffy.decode(text) do
      {pairs} when is_list(pairs) ->
        map = Map.new(pairs)
        if map_size(map) == length(pairs), do: {:ok, map}, else: :error

      _ ->
        :error
    end
  catch
    _, _ -> :error
  end

  defp frame("join", f, _text, s) do
    with {:room, room} <- room(f, s) do
      cond do
        Map.has_key?(s.rooms, room) ->
          {:ok, joined(s, room)}

        map_size(s.rooms) >= s.cfg.max_rooms_per_conn ->
          Connection.error(
            s,
            :too_many_rooms,
            "at most #{s.cfg.max_rooms_per_conn} rooms per connection"
          )

        true ->
          :ok = Rooms.join({:room, room})
          {:ok, joined(%{s | rooms: Map.put(s.rooms, room, true)}, room)}
      end
    end
  end

  defp frame("leave", f, _text, s) do
    with {:room, room} <- room(f, s) do
      if Map.has_key?(s.rooms, room) do
        Rooms.leave({:room, room})
        {:ok, %{s | rooms: Map.delete(s.rooms, room)}}
      else
        Connection.error(s, :not_joined, "room #{inspect(room)} is not joined")
      end
    end
  end

  defp frame("msg", f, text, s) do
    with {:room, room} <- room(f, s) do
      if Map.has_key?(s.rooms, room) do
        shared = Connection.text_frame(text)
        Metrics.add(:deliveries, Rooms.broadcast_from({:room, room}, shared))
        {:ok, s}
      else
        Connection.error(s, :not_joined, "room #{inspect(room)} is not joined")
      end
    end
  end

  defp frame("panic", _f, _text, %{cfg: %{fault_injection: true}}), do: raise(InjectedPanic)

  defp frame(t, _f, _text, s) when is_binary(t),
    do: Connection.error(s, :unknown_type, "unknown frame type #{inspect(t)}")

  defp frame(_t, _f, _text, s), do: Connection.fatal(s, :bad_field, "\"t\" must be a string")

  defp room(f, s) do
    case Map.get(f, "room") do
      r when is_binary(r) ->
        if valid_room?(r),
          do: {:room, r},
          else: Connection.fatal(s, :bad_room, "room names are 1-64 of A-Z a-z 0-9 . _ : -")

      _ ->
        Connection.fatal(s, :bad_field, "\"room\" must be a string")
    end
  end

  defp joined(s, room), do: Connection.reply(s, ["{\"t\":\"joined\",\"room\":\"", room, "\"}"])

  @doc "Room names: 1 to 64 bytes of `A-Z a-z 0-9 . _ : -`."
  def valid_room?(r) when byte_size(r) in 1..64, do: valid_chars?(r)
  def valid_room?(_), do: false

  defp valid_chars?(<<>>), do: true

  defp valid_chars?(<<c, rest::binary>>)
       when c in ?a..?z or c in ?A..?Z or c in ?0..?9 or c in [?., ?_, ?:, ?-],
       do: valid_chars?(rest)

  defp valid_chars?(_), do: false
end
