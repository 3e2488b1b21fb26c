defmodule ChatbenchPeer.Rooms do
  @moduledoc """
  Rooms as `:pg` process groups, as the Elixir write-up builds them: joining a room is
  `:pg.join/3` of the connection process, and a message is fanned out with `send/2` to every
  member of the group but the sender. `:pg` groups span every connected node of a cluster
  (`elixir-cluster`), so fan-out reaches remote members with the same `send/2`.

  A group is `{kind, name}`: chatbench v1 rooms (`:room`) and Phoenix topics (`:topic`) live
  apart. `:pg` monitors members, so a crashed connection leaves its groups by itself. A
  delivery names its group, so a member that has just left (and a remote node's view of it
  that lags) drops it.
  """

  @scope ChatbenchPeer.PG

  @doc "The `:pg` scope's child spec (started by the application's supervisor)."
  def child_spec(_), do: %{id: @scope, start: {:pg, :start_link, [@scope]}}

  @doc """
  Joins the calling process to the group; returns when the membership is visible on every
  connected node. `:pg` tells the other nodes' scopes asynchronously; a round trip to each of
  them (a tiny `:sys` request, answered after the scope's earlier messages, which travel on
  the same node-to-node channel) makes the `joined` ack mean "live cluster-wide". On a
  single node there is no other scope and no cost.
  """
  def join(group) do
    :ok = :pg.join(@scope, group, self())

    for n <- Node.list() do
      try do
        :sys.statistics({@scope, n}, :get, 5_000)
      catch
        :exit, _ -> :down
      end
    end

    :ok
  end

  @doc "The calling process leaves the group."
  def leave(group), do: :pg.leave(@scope, group, self())

  @doc """
  Sends `{:deliver, group, frame}` to every member of `group` but the caller (local and remote) and
  returns how many it was sent to. `frame` is one binary, shared by reference between local
  recipients (no per-recipient serialisation or copy for frames over 64 bytes).
  """
  @spec broadcast_from(term(), binary()) :: non_neg_integer()
  def broadcast_from(group, frame) do
    me = self()

    Enum.reduce(:pg.get_members(@scope, group), 0, fn
      ^me, n ->
        n

      pid, n ->
        send(pid, {:deliver, group, frame})
        n + 1
    end)
  end

  @doc """
  How many other nodes' scopes this scope has synced with (`beam_pg_remote_scopes`): the
  cluster is ready when it is N − 1 on every node. Read from `:pg`'s state (OTP 25 keeps the
  remote scopes in the record's third field); -1 when that layout is not there.
  """
  def remote_scopes, do: if(Node.list() == [], do: 0, else: read_remote_scopes())

  defp read_remote_scopes do
    case :sys.get_state(@scope, 1_000) do
      {:state, _scope, _local, remote, _, _, _} when is_map(remote) -> map_size(remote)
      _ -> -1
    end
  catch
    :exit, _ -> -1
  end

  @doc "Groups with at least one member on this node (the `chatbench_rooms` gauge)."
  def local_count do
    Enum.count(:pg.which_groups(@scope), &(:pg.get_local_members(@scope, &1) != []))
  end
end
