defmodule ChatbenchPeer.SlowConsumer do
  @moduledoc """
  The slow-consumer rule of chatbench's reference servers (`servers/src/chat.rs`, `FanOut`),
  as a pure function the connection process asks about every frame it cannot write at once.

  A connection's outbound queue is bounded by count (`--outbound-queue`) and bytes
  (`--outbound-queue-bytes`). A frame past either bound is refused: under `disconnect` the
  connection is closed (`slow_consumer`, 1008); under `drop` the frame is dropped and counted
  by the bound that refused it (`queue_full` when the bytes would have fit, else
  `queue_bytes`), unless frames for this connection have been refused with nothing written to
  it for `--slow-consumer-grace`: then it is closed as `disconnect` does, as NATS disconnects
  a slow consumer, so that `drop` cannot pin a stalled client's queue forever.

  The connection keeps `refused_since` (monotonic milliseconds of the first refusal since the
  last write, `nil`: none) in its state and clears it whenever it writes a frame.
  """

  @type decision :: :queue | {:drop, :queue_full | :queue_bytes} | :kick

  @doc """
  What to do with a frame of `len` bytes for a connection holding `count` frames and `bytes`
  bytes, under `cfg`. Returns the decision and the new `refused_since` (`now` is the
  monotonic clock in milliseconds).
  """
  @spec offer(
          non_neg_integer(),
          non_neg_integer(),
          non_neg_integer(),
          integer() | nil,
          integer(),
          ChatbenchPeer.Config.t()
        ) :: {decision(), integer() | nil}
  def offer(len, count, bytes, refused_since, now, cfg) do
    fits = bytes + len <= cfg.outbound_queue_bytes

    cond do
      count < cfg.outbound_queue and fits ->
        {:queue, refused_since}

      cfg.slow_consumer == :disconnect ->
        {:kick, refused_since}

      true ->
        since = refused_since || now

        cond do
          now - since >= cfg.slow_consumer_grace_ms -> {:kick, since}
          fits -> {{:drop, :queue_full}, since}
          true -> {{:drop, :queue_bytes}, since}
        end
    end
  end
end
