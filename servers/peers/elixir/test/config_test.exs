defmodule ChatbenchPeer.ConfigTest do
  use ExUnit.Case, async: true

  alias ChatbenchPeer.Config

  test "defaults are the reference servers' limits" do
    {:ok, c} = Config.parse([])
    assert {c.max_frame_bytes, c.max_rooms_per_conn, c.outbound_queue} == {65_536, 16, 1024}
    assert c.slow_consumer == :drop
    assert {c.outbound_queue_bytes, c.slow_consumer_grace_ms} == {4 * 1024 * 1024, 10_000}
    assert {c.listen_ip, c.listen_port} == {{127, 0, 0, 1}, 0}
  end

  test "flags, in both spellings" do
    {:ok, c} =
      Config.parse(
        ~w(--listen 127.0.0.1:4000 --max-rooms=3 --slow-consumer disconnect --fault-injection)
      )

    assert {c.listen_port, c.max_rooms_per_conn, c.slow_consumer, c.fault_injection} ==
             {4000, 3, :disconnect, true}

    {:ok, c} = Config.parse(["--listen", "[::1]:0", "--join", "a@127.0.0.1,b@127.0.0.1"])
    assert c.listen_ip == {0, 0, 0, 0, 0, 0, 0, 1}
    assert c.cluster_nodes == [:"a@127.0.0.1", :"b@127.0.0.1"]
  end

  test "--slow-consumer-grace takes the reference servers' durations" do
    for {v, ms} <- [{"300ms", 300}, {"10s", 10_000}, {"1m30s", 90_000}, {"2h", 7_200_000}, {"0", 0}] do
      {:ok, c} = Config.parse(["--slow-consumer-grace", v])
      assert c.slow_consumer_grace_ms == ms, v
    end

    {:ok, c} = Config.parse(["--outbound-queue-bytes=524288", "--slow-consumer-grace=5s"])
    assert {c.outbound_queue_bytes, c.slow_consumer_grace_ms} == {524_288, 5_000}

    for v <- ["", "10", "s", "10x", "-1s", "1.5s", "10s "] do
      assert {:error, m} = Config.parse(["--slow-consumer-grace", v]), inspect(v)
      assert m =~ "expected a duration"
    end
  end

  test "the byte bound must hold one largest frame" do
    assert {:error, m} = Config.parse(~w(--outbound-queue-bytes 65551))
    assert m =~ "--outbound-queue-bytes 65551: must be at least --max-frame-bytes + 16 (65552)"
    assert {:ok, _} = Config.parse(~w(--outbound-queue-bytes 65552))
    assert {:ok, _} = Config.parse(~w(--max-frame-bytes 1000 --outbound-queue-bytes 1016))
  end

  test "bad arguments say what is wrong" do
    assert {:error, m} = Config.parse(["--listen", "nowhere"])
    assert m =~ "HOST:PORT"
    assert {:error, m} = Config.parse(["--max-rooms", "-1"])
    assert m =~ "positive integer"
    assert {:error, m} = Config.parse(["--slow-consumer", "maybe"])
    assert m =~ "drop or disconnect"
    assert {:error, m} = Config.parse(["--bogus"])
    assert m =~ "unknown or incomplete argument"
  end
end
