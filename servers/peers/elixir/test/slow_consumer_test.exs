defmodule ChatbenchPeer.SlowConsumerTest do
  use ExUnit.Case, async: true

  alias ChatbenchPeer.{Config, SlowConsumer}

  defp cfg(over) do
    {:ok, c} = Config.parse([])
    struct(c, Map.merge(%{outbound_queue: 4, outbound_queue_bytes: 100}, over))
  end

  test "a frame within both bounds is queued and leaves the refusal time alone" do
    assert SlowConsumer.offer(10, 3, 90, nil, 5, cfg(%{})) == {:queue, nil}
    assert SlowConsumer.offer(10, 0, 0, 7, 5, cfg(%{})) == {:queue, 7}
  end

  test "drop counts the bound that refused: frames when the bytes fit, else bytes" do
    c = cfg(%{slow_consumer_grace_ms: 1_000})
    assert SlowConsumer.offer(10, 4, 0, nil, 50, c) == {{:drop, :queue_full}, 50}
    assert SlowConsumer.offer(11, 0, 90, nil, 50, c) == {{:drop, :queue_bytes}, 50}
    # Both over: the byte bound is named, as the reference servers do.
    assert SlowConsumer.offer(11, 4, 90, nil, 50, c) == {{:drop, :queue_bytes}, 50}
    # The first refusal's time is kept.
    assert SlowConsumer.offer(11, 0, 90, 20, 50, c) == {{:drop, :queue_bytes}, 20}
  end

  test "drop disconnects a consumer refused for the grace with nothing written" do
    c = cfg(%{slow_consumer_grace_ms: 30})
    assert SlowConsumer.offer(11, 0, 90, 100, 129, c) == {{:drop, :queue_bytes}, 100}
    assert SlowConsumer.offer(11, 0, 90, 100, 130, c) == {:kick, 100}
    # A zero grace disconnects at the first refusal.
    assert SlowConsumer.offer(11, 0, 90, nil, 5, cfg(%{slow_consumer_grace_ms: 0})) == {:kick, 5}
  end

  test "disconnect kicks at the first refusal" do
    c = cfg(%{slow_consumer: :disconnect})
    assert SlowConsumer.offer(10, 4, 0, nil, 5, c) == {:kick, nil}
    assert SlowConsumer.offer(11, 0, 90, nil, 5, c) == {:kick, nil}
  end
end
