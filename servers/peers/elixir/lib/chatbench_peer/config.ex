defmodule ChatbenchPeer.Config do
  @moduledoc """
  The server's limits and switches, parsed from the command line: one place for every default.

  The defaults are those of chatbench's reference servers (docs/protocol.md, "Limits every
  reference server enforces"). The config is stored once in `:persistent_term` at start, so
  every connection process reads it without copying.
  """

  @enforce_keys []
  defstruct listen_ip: {127, 0, 0, 1},
            listen_port: 0,
            max_frame_bytes: 65_536,
            max_rooms_per_conn: 16,
            outbound_queue: 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            slow_consumer: :drop,
            slow_consumer_grace_ms: 10_000,
            handshake_timeout_ms: 10_000,
            close_timeout_ms: 5_000,
            shutdown_grace_ms: 5_000,
            max_connections: 1_000_000,
            acceptors: 16,
            hibernate_after_ms: 15_000,
            backlog: 4096,
            fault_injection: false,
            cluster_nodes: []

  @type t :: %__MODULE__{}

  @usage """
  usage: chatbench-peer [--listen HOST:PORT] [--max-frame-bytes N] [--max-rooms N]
         [--outbound-queue N] [--outbound-queue-bytes N] [--slow-consumer drop|disconnect]
         [--slow-consumer-grace DURATION (e.g. 10s, 300ms, 1m30s)]
         [--handshake-timeout-ms N] [--close-timeout-ms N] [--shutdown-grace-ms N]
         [--max-connections N] [--acceptors N] [--hibernate-after-ms N] [--fault-injection]
         [--join NODE,NODE...]
  """

  @doc "The usage text."
  def usage, do: @usage

  @int_flags %{
    "--max-frame-bytes" => :max_frame_bytes,
    "--max-rooms" => :max_rooms_per_conn,
    "--outbound-queue" => :outbound_queue,
    "--outbound-queue-bytes" => :outbound_queue_bytes,
    "--handshake-timeout-ms" => :handshake_timeout_ms,
    "--close-timeout-ms" => :close_timeout_ms,
    "--shutdown-grace-ms" => :shutdown_grace_ms,
    "--max-connections" => :max_connections,
    "--acceptors" => :acceptors,
    "--hibernate-after-ms" => :hibernate_after_ms
  }

  @doc """
  Parses the arguments. Returns `{:ok, config}` or `{:error, message}` naming the bad argument
  and how to fix it.
  """
  @spec parse([String.t()]) :: {:ok, t()} | {:error, String.t()}
  def parse(argv) do
    with {:ok, c} <- argv |> Enum.flat_map(&split_eq/1) |> parse(%__MODULE__{}),
         do: check(c)
  end

  # The reference servers' rule: one largest frame (payload + 14-byte header, + 2 for a close
  # frame) must fit in the byte bound, or every frame of that size would be refused.
  @max_frame_header 16
  defp check(c) do
    if c.outbound_queue_bytes < c.max_frame_bytes + @max_frame_header do
      {:error,
       "--outbound-queue-bytes #{c.outbound_queue_bytes}: must be at least --max-frame-bytes + " <>
         "#{@max_frame_header} (#{c.max_frame_bytes + @max_frame_header}): one largest frame must fit"}
    else
      {:ok, c}
    end
  end

  # `--flag=value` is `--flag value`.
  defp split_eq("--" <> _ = arg) do
    case :binary.split(arg, "=") do
      [flag, value] -> [flag, value]
      [flag] -> [flag]
    end
  end

  defp split_eq(arg), do: [arg]

  defp parse([], c), do: {:ok, c}

  defp parse(["--listen", v | rest], c) do
    with {:ok, ip, port} <- parse_listen(v),
         do: parse(rest, %{c | listen_ip: ip, listen_port: port})
  end

  defp parse(["--slow-consumer", v | rest], c) do
    case v do
      "drop" -> parse(rest, %{c | slow_consumer: :drop})
      "disconnect" -> parse(rest, %{c | slow_consumer: :disconnect})
      _ -> {:error, "--slow-consumer #{inspect(v)}: expected drop or disconnect"}
    end
  end

  defp parse(["--slow-consumer-grace", v | rest], c) do
    case parse_duration_ms(v) do
      {:ok, ms} ->
        parse(rest, %{c | slow_consumer_grace_ms: ms})

      :error ->
        {:error, "--slow-consumer-grace #{inspect(v)}: expected a duration, e.g. 10s, 300ms, 1m30s"}
    end
  end

  defp parse(["--fault-injection" | rest], c), do: parse(rest, %{c | fault_injection: true})

  defp parse(["--join", v | rest], c) do
    nodes = v |> String.split(",", trim: true) |> Enum.map(&String.to_atom/1)
    parse(rest, %{c | cluster_nodes: nodes})
  end

  defp parse([flag, v | rest], c) when is_map_key(@int_flags, flag) do
    case Integer.parse(v) do
      {n, ""} when n > 0 -> parse(rest, Map.put(c, @int_flags[flag], n))
      _ -> {:error, "#{flag} #{inspect(v)}: expected a positive integer"}
    end
  end

  defp parse([arg | _], _c),
    do: {:error, "unknown or incomplete argument #{inspect(arg)}\n" <> @usage}

  @units %{"ms" => 1, "s" => 1_000, "m" => 60_000, "h" => 3_600_000}

  @doc """
  Parses a duration as the reference servers' flags take it (humantime's common forms): one or
  more `<integer><unit>` with unit `ms`, `s`, `m` or `h` (`300ms`, `10s`, `1m30s`); `0` alone
  is zero. Returns milliseconds.
  """
  @spec parse_duration_ms(String.t()) :: {:ok, non_neg_integer()} | :error
  def parse_duration_ms("0"), do: {:ok, 0}

  def parse_duration_ms(v) do
    case Regex.scan(~r/\G(\d{1,12})(ms|s|m|h)/, v) do
      [] ->
        :error

      parts ->
        if Enum.map_join(parts, &hd/1) == v, do: {:ok, sum_ms(parts)}, else: :error
    end
  end

  defp sum_ms(parts),
    do: Enum.reduce(parts, 0, fn [_, n, u], acc -> acc + String.to_integer(n) * @units[u] end)

  @doc "Parses `HOST:PORT` (IPv6 hosts in brackets)."
  @spec parse_listen(String.t()) ::
          {:ok, :inet.ip_address(), :inet.port_number()} | {:error, String.t()}
  def parse_listen(v) do
    with [host, port] <- split_host_port(v),
         {:ok, ip} <-
           :inet.parse_address(String.to_charlist(String.trim(host, "[") |> String.trim("]"))),
         {p, ""} when p in 0..65_535 <- Integer.parse(port) do
      {:ok, ip, p}
    else
      _ ->
        {:error, "--listen #{inspect(v)}: expected HOST:PORT with a numeric host, e.g. 127.0.0.1:0"}
    end
  end

  defp split_host_port(v) do
    case :binary.matches(v, ":") do
      [] ->
        :error

      matches ->
        {at, 1} = List.last(matches)
        [binary_part(v, 0, at), binary_part(v, at + 1, byte_size(v) - at - 1)]
    end
  end

  @doc "Stores the config for every process to read."
  def put(%__MODULE__{} = c), do: :persistent_term.put(__MODULE__, c)

  @doc "The stored config."
  @spec get() :: t()
  def get, do: :persistent_term.get(__MODULE__)
end
