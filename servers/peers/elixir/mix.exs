defmodule ChatbenchPeer.MixProject do
  @moduledoc """
  The Elixir chat server chatbench measures beside its own (`chatbench run --serve-peer elixir`).

  No Hex dependencies: Hex is not reachable where chatbench is built, so the server uses what
  Erlang/OTP and Debian ship: `:pg`, `:gen_tcp`, `cowlib`'s `cow_ws` (RFC 6455 framing, Debian
  `erlang-cowlib`) and `jiffy` (JSON, Debian `erlang-jiffy`), both found on the OTP lib path.
  """
  use Mix.Project

  def project do
    [
      app: :chatbench_peer,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: true,
      deps: []
    ]
  end

  def application do
    [
      mod: {ChatbenchPeer.Application, []},
      extra_applications: [:logger, :cowlib, :jiffy]
    ]
  end
end
