defmodule ChatbenchPeer.ConfigTest do
  use ExUnit.Case, async: true

  alias ChatbenchPeer.Config

  test "defaults are the reference servers' limits" do
    {:ok, c} = Config.parse([])
    assert {c.max_frame_bytes, c.max_rooms_per_conn, c.outbound_queue} == {65_536, 16, 1024}
    assert c.slow_consumer == :drop
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
