defmodule ChatbenchPeer.Rooms do
  @moduledoc """
  Rooms as `:pg` process groups, as the Elixir write-up builds them: joining a room is
  `:pg.join/3` of the connection process, and a message is fanned out with `send/2` to every
  member of the group but the sender. `:pg` groups span every connected node of a cluster
  (`elixir-cluster`), so fan-out reaches remote members with the same `send/2`.

  A group is `{kind, name}`: chatbench v1 rooms (`:room`) and Phoenix topics (`:topic`) live
  apart. `:pg` monitors members, so a crashed connection leaves its groups by itself.
  """

  @scope ChatbenchPeer.PG

  @doc "The `:pg` scope's child spec (started by the application's supervisor)."
  def child_spec(_), do: %{id: @scope, start: {:pg, :start_link, [@scope]}}

  @doc "Joins the calling process to the group; returns when the membership is visible."
  def join(group), do: :pg.join(@scope, group, self())

  @doc "The calling process leaves the group."
  def leave(group), do: :pg.leave(@scope, group, self())

  @doc """
  Sends `{:deliver, frame}` to every member of `group` but the caller (local and remote) and
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
        send(pid, {:deliver, frame})
        n + 1
    end)
  end

  @doc "Groups with at least one member on this node (the `chatbench_rooms` gauge)."
  def local_count do
    Enum.count(:pg.which_groups(@scope), &(:pg.get_local_members(@scope, &1) != []))
  end
end
