//! The room registry: room name → members, each member a connection id and a handle to reach it.
//!
//! Rooms live in a fixed number of shards, each a `Mutex<HashMap>`, chosen by the room name's
//! hash: fan-out in one room locks only that room's shard, so fan-out in different rooms on
//! 2..64 cores does not serialise on one lock. Fan-out runs under the shard lock and must only
//! do non-blocking work per member (a `try_send`), never I/O.
//!
//! The registry is generic over the member handle `H` (the tokio architecture stores an
//! `Arc` of its per-connection queue; a thread-pool or epoll server can store its own). Rooms are
//! removed when their last member leaves, so the map holds at most
//! (connections × `max_rooms_per_conn`) rooms: a peer cannot grow it beyond its own limit.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasher, DefaultHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::metrics::Metrics;

/// A connection's id, unique for the server's lifetime.
pub type ConnId = u64;

/// Number of shards. A power of two well above any core count we target, so two busy rooms
/// rarely share a lock; each empty shard costs one mutex and an empty map (≈ 64 bytes).
pub const SHARDS: usize = 64;

type Shard<H> = HashMap<Box<str>, HashMap<ConnId, H, RoomHasher>, RoomHasher>;

/// The registry's hashing: random keys (the default, so peers cannot choose colliding room
/// names), or fixed keys for deterministic workloads (`crate::bench`), where random keys
/// would change the members' order, and with it the allocator's work, from run to run.
#[derive(Debug, Clone)]
pub enum RoomHasher {
    /// SipHash with per-process random keys.
    Random(RandomState),
    /// SipHash with zero keys: the same order in every process.
    Fixed,
}

impl BuildHasher for RoomHasher {
    type Hasher = DefaultHasher;
    fn build_hasher(&self) -> DefaultHasher {
        match self {
            RoomHasher::Random(s) => s.build_hasher(),
            RoomHasher::Fixed => DefaultHasher::new(),
        }
    }
}

/// Room name → members, sharded by room.
pub struct Rooms<H> {
    shards: Box<[Mutex<Shard<H>>]>,
    hasher: RoomHasher,
    metrics: Arc<Metrics>,
}

impl<H> Rooms<H> {
    /// An empty registry that keeps `chatbench_rooms` in `metrics` up to date.
    pub fn new(metrics: Arc<Metrics>) -> Rooms<H> {
        Rooms::with_hasher(metrics, RoomHasher::Random(RandomState::new()))
    }

    /// An empty registry hashing with `hasher` ([`RoomHasher::Fixed`] for deterministic
    /// workloads only).
    pub fn with_hasher(metrics: Arc<Metrics>, hasher: RoomHasher) -> Rooms<H> {
        Rooms {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
            metrics,
        }
    }

    fn shard(&self, room: &str) -> MutexGuard<'_, Shard<H>> {
        let i = (self.hasher.hash_one(room) as usize) % self.shards.len();
        // A panic never happens under this lock (fan-out closures must not panic); if one did,
        // the map is still consistent, so carry on rather than poison every later caller.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `id` to `room` with `handle`, creating the room. Returns false (and keeps the
    /// existing handle) if `id` was already a member.
    pub fn join(&self, room: &str, id: ConnId, handle: H) -> bool {
        let mut shard = self.shard(room);
        let members = match shard.get_mut(room) {
            Some(m) => m,
            None => {
                self.metrics.room_created();
                shard
                    .entry(room.into())
                    .or_insert_with(|| HashMap::with_hasher(self.hasher.clone()))
            }
        };
        match members.entry(id) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(handle);
                true
            }
        }
    }

    /// Removes `id` from `room`, removing the room when it empties. Returns whether `id` was a
    /// member.
    pub fn leave(&self, room: &str, id: ConnId) -> bool {
        let mut shard = self.shard(room);
        let Some(members) = shard.get_mut(room) else {
            return false;
        };
        let was = members.remove(&id).is_some();
        if members.is_empty() {
            shard.remove(room);
            self.metrics.room_removed();
        }
        was
    }

    /// Calls `f` for every member of `room` (the sender included: `f` filters), under the
    /// room's shard lock. Returns the number of members visited (0 for an unknown room).
    pub fn for_each_member(&self, room: &str, mut f: impl FnMut(ConnId, &H)) -> usize {
        let shard = self.shard(room);
        let Some(members) = shard.get(room) else {
            return 0;
        };
        for (&id, h) in members {
            f(id, h);
        }
        members.len()
    }

    /// The number of members of `room`.
    pub fn members(&self, room: &str) -> usize {
        self.shard(room).get(room).map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_appear_and_disappear_with_members() {
        let m = Arc::new(Metrics::new("test"));
        let r: Rooms<u32> = Rooms::new(m.clone());
        assert!(r.join("a", 1, 10));
        assert!(!r.join("a", 1, 11), "re-join keeps one membership");
        assert!(r.join("a", 2, 20));
        assert!(r.join("b", 2, 20));
        assert_eq!(m.rooms(), 2);
        let mut seen = Vec::new();
        assert_eq!(r.for_each_member("a", |id, h| seen.push((id, *h))), 2);
        seen.sort_unstable();
        assert_eq!(seen, vec![(1, 10), (2, 20)]);
        assert!(r.leave("a", 1));
        assert!(!r.leave("a", 1));
        assert!(r.leave("a", 2));
        assert_eq!(r.members("a"), 0);
        assert_eq!(m.rooms(), 1);
        assert!(!r.leave("nope", 1));
        assert_eq!(r.for_each_member("nope", |_, _| unreachable!()), 0);
        assert!(r.leave("b", 2));
        assert_eq!(m.rooms(), 0);
    }
}
