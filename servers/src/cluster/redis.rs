//! The `redis` backplane: Redis pub/sub as a broker, like the Socket.IO Redis adapter.
//!
//! - **Channels.** One channel per room, `chatbench:room:<room>`. Room names are short and
//!   limited to a safe alphabet by the client protocol, so they are channel names as they are;
//!   Redis routes a publish only to the nodes subscribed to that channel, which is what the
//!   mesh's interest exchange does by hand. (Sharding rooms over fewer channels would make
//!   every node receive, and drop, other rooms' traffic.)
//! - **Subscriptions.** A node subscribes to exactly the rooms it has local members in, on one
//!   pub/sub connection driven by one task; a join that makes a room new here waits (bounded)
//!   for Redis to confirm the subscription before `joined` is sent.
//! - **Publishing.** A published `msg` is queued (bounded: `send_queue` messages and
//!   `send_queue_bytes`; full → `dropped`) to
//!   one publisher task that sends what is queued as one pipeline of `PUBLISH`es on a second
//!   connection. The payload is the origin node id and a random per-process instance id
//!   (8 bytes each, big-endian), then the client's frame, unchanged; a node ignores its own
//!   messages coming back (same node id and instance). Another node with the same node id is
//!   reported as a configuration error, and its messages are still delivered.
//! - **Failures.** Redis unreachable at start is an error naming the URL. Mid-run, local
//!   delivery goes on; every publish that fails or is attempted while Redis is unreachable is
//!   counted in `lost`. Both connections reconnect with exponential backoff, and the subscriber
//!   re-subscribes every room before it reports itself up again. The publisher pings Redis
//!   every `heartbeat` when idle, so an outage is seen without waiting for traffic.
//!
//! - **Access.** `--redis-url redis://[USER]:PASSWORD@HOST:PORT` authenticates with Redis's
//!   `requirepass` password or an ACL user (Redis 6+); the password never appears in errors
//!   ([`redact`]). A message on a room's channel that is not a client `msg` frame for that room
//!   is dropped and counted (`invalid`).
//!
//! Limit: a message published while a *receiving* node is still re-subscribing after an outage
//! reaches nobody there and is not counted (Redis pub/sub does not say who missed it).
//!
//! Crate: `redis` (redis-rs), the most used Rust Redis client, maintained under the
//! redis-rs organisation, with tokio support, pipelining and a split pub/sub connection.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use chatbench_protocol::{parse_client, ClientFrame};
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::AsyncConnectionConfig;
use tokio::sync::Notify;
use tungstenite::Utf8Bytes;

use super::{wait_until, Backoff};
use crate::config::ClusterConfig;
use crate::metrics::{BackplaneMetrics, Metrics};
use crate::task_per_conn::{Hook, HookFuture, LocalRooms};
use crate::ServerError;

/// Prefix of every room channel.
pub const CHANNEL_PREFIX: &str = "chatbench:room:";
/// Most `PUBLISH`es sent in one pipeline.
const MAX_BATCH: usize = 512;
/// Most channels in one `SUBSCRIBE`/`UNSUBSCRIBE`.
const MAX_SUBSCRIBE: usize = 1000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Messages waiting for the publisher: room and payload.
type PublishQueue = VecDeque<(Box<str>, Bytes)>;

/// A random number for this backplane instance (std's randomly keyed hasher, over the clock
/// and the process id).
fn instance_id() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((now, std::process::id()))
}

fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

/// Checks that Redis answers `PING` at `url` (blocking, bounded by `timeout`).
pub fn ping(url: &str, timeout: Duration) -> Result<(), ServerError> {
    let client = open(url)?;
    let mut conn = client
        .get_connection_with_timeout(timeout)
        .map_err(|e| unreachable_error(url, &e))?;
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map_err(|e| unreachable_error(url, &e))?;
    Ok(())
}

fn open(url: &str) -> Result<redis::Client, ServerError> {
    redis::Client::open(url).map_err(|e| {
        ServerError::Backplane(format!(
            "invalid --redis-url {:?}: {e} (expected redis://[[USER]:PASSWORD@]HOST:PORT)",
            redact(url)
        ))
    })
}

/// `url` with its password replaced by `***`: errors and logs never show it.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

fn unreachable_error(url: &str, e: &redis::RedisError) -> ServerError {
    let hint = if e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.to_string().contains("NOAUTH")
        || e.to_string().contains("WRONGPASS")
    {
        "check the password or ACL user in the URL: redis://USER:PASSWORD@HOST:PORT"
    } else {
        "is redis-server running there?"
    };
    ServerError::Backplane(format!(
        "cannot reach Redis at {}: {e} ({hint})",
        redact(url)
    ))
}

struct Subs {
    /// Rooms with local members: what should be subscribed.
    desired: HashSet<Box<str>>,
    /// Rooms Redis confirmed a subscription for on the current connection.
    subscribed: HashSet<Box<str>>,
}

/// The Redis backplane of one node.
pub struct RedisBackplane {
    this: Weak<RedisBackplane>,
    me: u64,
    /// Random per process: tells this node's own messages from those of another node that was
    /// (wrongly) given the same id, so a clash is reported instead of losing messages.
    instance: u64,
    clash_reported: AtomicBool,
    cfg: ClusterConfig,
    client: redis::Client,
    local: OnceLock<LocalRooms>,
    metrics: Arc<Metrics>,
    subs: Mutex<Subs>,
    /// Wakes the subscriber task when `desired` changed (`notify_one`: keeps a permit).
    interest: Notify,
    /// Woken when `subscribed` or `sub_up` changed (join barriers wait on it).
    subscribed_changed: Notify,
    sub_up: AtomicBool,
    pub_up: AtomicBool,
    /// Messages to publish, and their bytes (bounded by `send_queue`, `send_queue_bytes`).
    queue: Mutex<(PublishQueue, usize)>,
    queued: Notify,
}

impl RedisBackplane {
    /// Connects both connections (an error names the URL when Redis does not answer) and
    /// starts the subscriber and publisher tasks on the current runtime.
    pub(crate) async fn start(
        url: &str,
        cfg: ClusterConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisBackplane>, ServerError> {
        if metrics.backplane().is_none() {
            return Err(ServerError::Config("redis needs cluster metrics".into()));
        }
        let client = open(url)?;
        let timeout = cfg.dead_after;
        let publisher = connect_publisher(&client, timeout)
            .await
            .map_err(|e| unreachable_error(url, &e))?;
        let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
            .await
            .map_err(|_| {
                ServerError::Backplane(format!("cannot reach Redis at {}: timed out", redact(url)))
            })?
            .map_err(|e| unreachable_error(url, &e))?;
        let me = Arc::new_cyclic(|this| RedisBackplane {
            this: this.clone(),
            me: cfg.node_id,
            instance: instance_id(),
            clash_reported: AtomicBool::new(false),
            cfg,
            client,
            local: OnceLock::new(),
            metrics,
            subs: Mutex::new(Subs {
                desired: HashSet::new(),
                subscribed: HashSet::new(),
            }),
            interest: Notify::new(),
            subscribed_changed: Notify::new(),
            sub_up: AtomicBool::new(false),
            pub_up: AtomicBool::new(false),
            queue: Mutex::new((VecDeque::new(), 0)),
            queued: Notify::new(),
        });
        tokio::spawn(me.clone().subscriber(pubsub.split()));
        tokio::spawn(me.clone().publisher(publisher));
        Ok(me)
    }

    /// Gives the backplane the node's rooms (once, when the server starts).
    pub(crate) fn attach(&self, local: LocalRooms) {
        let _ = self.local.set(local);
    }

    fn bp(&self) -> &BackplaneMetrics {
        self.metrics
            .backplane()
            .unwrap_or_else(|| unreachable!("checked in RedisBackplane::start"))
    }

    /// Owns the pub/sub connection: keeps the subscriptions equal to the rooms with local
    /// members, fans incoming messages out, and reconnects (re-subscribing) when it drops.
    async fn subscriber(self: Arc<Self>, first: (PubSubSink, PubSubStream)) {
        let mut backoff = Backoff::new(self.cfg.reconnect_min, self.cfg.reconnect_max);
        let mut conn = Some(first);
        let mut ever_up = false;
        loop {
            if let Some((sink, stream)) = conn.take() {
                if ever_up {
                    self.bp().reconnected();
                }
                ever_up = true;
                backoff.reset();
                let why = self.subscribed_session(sink, stream).await;
                tracing::warn!("redis backplane: subscriber connection lost: {why}");
            }
            backoff.wait().await;
            match self.client.get_async_pubsub().await {
                Ok(p) => conn = Some(p.split()),
                Err(e) => tracing::debug!("redis backplane: reconnect failed: {e}"),
            }
        }
    }

    async fn subscribed_session(&self, mut sink: PubSubSink, mut stream: PubSubStream) -> String {
        lock(&self.subs).subscribed.clear();
        // Re-subscribe everything before reporting up.
        if let Err(e) = self.reconcile(&mut sink).await {
            return e;
        }
        self.sub_up.store(true, Ordering::SeqCst);
        self.bp().peer_up();
        self.subscribed_changed.notify_waiters();
        let why = loop {
            tokio::select! {
                m = stream.next() => match m {
                    Some(m) => self.on_message(&m),
                    None => break "the connection closed".to_string(),
                },
                _ = self.interest.notified() => {
                    if let Err(e) = self.reconcile(&mut sink).await {
                        break e;
                    }
                }
            }
        };
        self.sub_up.store(false, Ordering::SeqCst);
        self.bp().peer_down();
        lock(&self.subs).subscribed.clear();
        self.bp().set_interest_rooms(0);
        self.subscribed_changed.notify_waiters();
        why
    }

    /// Subscribes what is desired and not subscribed, unsubscribes the reverse.
    async fn reconcile(&self, sink: &mut PubSubSink) -> Result<(), String> {
        let (add, remove): (Vec<Box<str>>, Vec<Box<str>>) = {
            let s = lock(&self.subs);
            (
                s.desired.difference(&s.subscribed).cloned().collect(),
                s.subscribed.difference(&s.desired).cloned().collect(),
            )
        };
        for chunk in add.chunks(MAX_SUBSCRIBE) {
            let channels: Vec<String> = chunk.iter().map(|r| channel(r)).collect();
            sink.subscribe(channels)
                .await
                .map_err(|e| format!("SUBSCRIBE failed: {e}"))?;
            let mut s = lock(&self.subs);
            s.subscribed.extend(chunk.iter().cloned());
            self.bp().set_interest_rooms(s.subscribed.len());
        }
        for chunk in remove.chunks(MAX_SUBSCRIBE) {
            let channels: Vec<String> = chunk.iter().map(|r| channel(r)).collect();
            sink.unsubscribe(channels)
                .await
                .map_err(|e| format!("UNSUBSCRIBE failed: {e}"))?;
            let mut s = lock(&self.subs);
            for r in chunk {
                s.subscribed.remove(r);
            }
            self.bp().set_interest_rooms(s.subscribed.len());
        }
        if !add.is_empty() {
            self.subscribed_changed.notify_waiters();
        }
        Ok(())
    }

    fn on_message(&self, m: &redis::Msg) {
        let Some(room) = m.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
            return;
        };
        let payload = m.get_payload_bytes();
        let Some((origin, rest)) = payload.split_first_chunk::<8>() else {
            tracing::warn!("redis backplane: message without origin on {room}");
            return;
        };
        let Some((instance, frame)) = rest.split_first_chunk::<8>() else {
            tracing::warn!("redis backplane: message without origin on {room}");
            return;
        };
        if u64::from_be_bytes(*origin) == self.me {
            if u64::from_be_bytes(*instance) == self.instance {
                return;
            }
            if !self.clash_reported.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    "redis backplane: another node also uses node id {}: give every node a \
                     distinct --node-id (its messages are still delivered here)",
                    self.me
                );
            }
        }
        // One copy out of the Redis reply, then shared by every local member. Only a client
        // `msg` frame for this room is delivered: anything else on the channel is counted.
        let text = Utf8Bytes::try_from(Bytes::copy_from_slice(frame)).ok();
        let valid = text.as_ref().is_some_and(
            |t| matches!(parse_client(t), Ok(ClientFrame::Msg(m)) if *m.room == *room),
        );
        match text {
            Some(text) if valid => {
                self.bp().received();
                if let Some(local) = self.local.get() {
                    local.deliver(room, &text);
                }
            }
            _ => {
                self.bp().invalid();
                tracing::warn!(
                    "redis backplane: a message on {room} is not a client msg for it: dropped"
                );
            }
        }
    }

    /// Owns the publishing connection: sends what is queued as pipelines, pings when idle,
    /// reconnects when it fails.
    async fn publisher(self: Arc<Self>, first: MultiplexedConnection) {
        let mut backoff = Backoff::new(self.cfg.reconnect_min, self.cfg.reconnect_max);
        let mut conn = Some(first);
        let mut ever_up = false;
        loop {
            if let Some(c) = conn.take() {
                if ever_up {
                    self.bp().reconnected();
                }
                ever_up = true;
                backoff.reset();
                self.pub_up.store(true, Ordering::SeqCst);
                self.bp().peer_up();
                let why = self.publish_session(c).await;
                self.pub_up.store(false, Ordering::SeqCst);
                self.bp().peer_down();
                // What was queued behind the failure cannot go out now.
                let stranded = std::mem::take(&mut *lock(&self.queue)).0.len() as u64;
                if stranded > 0 {
                    self.bp().lost(stranded);
                }
                tracing::warn!("redis backplane: publisher connection lost: {why}");
            }
            backoff.wait().await;
            match connect_publisher(&self.client, self.cfg.dead_after).await {
                Ok(c) => conn = Some(c),
                Err(e) => tracing::debug!("redis backplane: reconnect failed: {e}"),
            }
        }
    }

    async fn publish_session(&self, mut conn: MultiplexedConnection) -> String {
        loop {
            let woke = tokio::time::timeout(self.cfg.heartbeat, self.queued.notified()).await;
            let batch: Vec<(Box<str>, Bytes)> = {
                let mut q = lock(&self.queue);
                let n = q.0.len().min(MAX_BATCH);
                let batch: Vec<_> = q.0.drain(..n).collect();
                q.1 -= batch.iter().map(|(_, p)| p.len()).sum::<usize>();
                batch
            };
            if batch.is_empty() {
                if woke.is_err() {
                    if let Err(e) = redis::cmd("PING").query_async::<String>(&mut conn).await {
                        return format!("PING failed: {e}");
                    }
                }
                continue;
            }
            let mut pipe = redis::pipe();
            for (room, payload) in &batch {
                pipe.publish(channel(room), payload.as_ref()).ignore();
            }
            let n = batch.len() as u64;
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => self.bp().forwarded(n),
                Err(e) => {
                    self.bp().lost(n);
                    return format!("PUBLISH failed: {e}");
                }
            }
            if !lock(&self.queue).0.is_empty() {
                self.queued.notify_one();
            }
        }
    }

    fn subscribed(&self, room: &str) -> bool {
        !self.sub_up.load(Ordering::SeqCst) || lock(&self.subs).subscribed.contains(room)
    }
}

async fn connect_publisher(
    client: &redis::Client,
    timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

impl Hook for RedisBackplane {
    fn interest_changed(&self, room: &str) {
        let Some(local) = self.local.get() else {
            return;
        };
        let mut s = lock(&self.subs);
        let changed = if local.has_room(room) {
            s.desired.insert(room.into())
        } else {
            s.desired.remove(room)
        };
        drop(s);
        if changed {
            self.interest.notify_one();
        }
    }

    fn joined_barrier(&self, room: &str) -> Option<HookFuture> {
        if self.subscribed(room) {
            return None;
        }
        let me = self.this.upgrade()?;
        let room: Box<str> = room.into();
        let timeout = self.cfg.join_sync_timeout;
        Some(Box::pin(async move {
            let _ = tokio::time::timeout(
                timeout,
                wait_until(&me.subscribed_changed, || me.subscribed(&room)),
            )
            .await;
        }))
    }

    fn published(&self, room: &str, frame: &Utf8Bytes) {
        if !self.pub_up.load(Ordering::SeqCst) {
            self.bp().lost(1);
            return;
        }
        let mut payload = BytesMut::with_capacity(16 + frame.len());
        payload.put_u64(self.me);
        payload.put_u64(self.instance);
        payload.put_slice(frame.as_bytes());
        {
            let mut q = lock(&self.queue);
            if q.0.len() >= self.cfg.send_queue || q.1 + payload.len() > self.cfg.send_queue_bytes {
                drop(q);
                self.bp().dropped(1);
                return;
            }
            q.1 += payload.len();
            q.0.push_back((room.into(), payload.freeze()));
        }
        self.queued.notify_one();
    }
}
