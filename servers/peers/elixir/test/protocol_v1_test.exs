defmodule ChatbenchPeer.ProtocolV1Test do
  use ExUnit.Case, async: true

  alias ChatbenchPeer.ProtocolV1

  test "room names: 1 to 64 of A-Z a-z 0-9 . _ : -" do
    assert ProtocolV1.valid_room?("Room_1.a:b-c")
    assert ProtocolV1.valid_room?(String.duplicate("r", 64))
    refute ProtocolV1.valid_room?("")
    refute ProtocolV1.valid_room?(String.duplicate("r", 65))
    refute ProtocolV1.valid_room?("has space")
    refute ProtocolV1.valid_room?("é")
  end

  test "decode: JSON objects only, no duplicate keys, no trailing data" do
    assert ProtocolV1.decode(~s({"t":"join","room":"r1"})) ==
             {:ok, %{"t" => "join", "room" => "r1"}}

    assert ProtocolV1.decode(~s({"t":"a","t":"b"})) == :error
    assert ProtocolV1.decode(~s({"t":"a"} x)) == :error
    assert ProtocolV1.decode(~s([1,2])) == :error
    assert ProtocolV1.decode(~s({not json)) == :error
  end
end
