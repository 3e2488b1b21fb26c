//! The `mesh` backplane: one TCP link per pair of nodes, peer-to-peer like Erlang `:pg`.
//!
//! - **Links.** A node dials every seed (`--peers`) that it has no live link to, and accepts
//!   links on `--cluster-listen`. Each side sends `Hello` (cluster protocol version, node id)
//!   and `Challenge` (process incarnation, fresh nonce), then `Auth`, its HMAC proof that it
//!   holds the cluster's secret ([`super::auth`]); after both proofs check, every frame carries
//!   a tag. A version or node-id clash, a missing or wrong secret, or a live node's id claimed
//!   by another process (another incarnation) is logged, counted (`refused`) and the link
//!   refused. Until then a link holds nothing but its task: at most `max_pending` accepted
//!   links may be in their handshake at once (more are closed, counted), each for at most
//!   `handshake_timeout`, reading frames of at most [`wire::MAX_HANDSHAKE_FRAME`] bytes.
//!   When two links to one peer exist (both dialled at once), both ends keep the one dialled by
//!   the lower node id and close the other, so one pair has one link.
//! - **Validation.** Every frame is checked by [`wire::decode`] (room names, `Msg` bodies as
//!   client `msg` frames for their room, sizes) and, on an authenticated link, by its tag; a
//!   frame that fails, or that breaks a limit (rooms declared), closes the link and is counted
//!   (`invalid`), and the peer's declared interest is freed.
//! - **Interest.** A node advertises the rooms it has local members in: on a new link the full
//!   set (`Reset`, then an `Add` per room, then a `Sync`), after that `Add`/`Remove` deltas.
//!   A join that makes a room new here waits (bounded) for every live peer to acknowledge a
//!   `Sync` sent after the `Add`, so `joined` still means "the room is live". A peer's declared
//!   rooms are bounded (`max_remote_rooms`, `max_remote_room_bytes`).
//! - **Forwarding.** A published `msg` is encoded once into a `Msg` frame and queued to each
//!   peer that declared interest in its room; receivers fan it out locally and never forward
//!   it again. Queues are bounded per link (`send_queue` frames): a full queue drops the
//!   message and counts it (`dropped`; `send_queue_bytes` bounds the bytes too). A peer whose
//!   link is down keeps its last declared interest, so what it misses meanwhile is counted
//!   (`lost`) instead of vanishing; it sends its full set again when it comes back. A peer that
//!   left (its interest empty when its link ended) is forgotten: its table entry is freed.
//! - **Liveness.** Each link sends `Ping` every `heartbeat`; one that receives nothing for
//!   `dead_after` is closed. Dialers retry with exponential backoff. A node that stops sends
//!   each peer a last `Reset` ([`Mesh::leave`]), so its peers stop counting its rooms.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tungstenite::Utf8Bytes;

use super::auth::{self, FrameTags, Party, TAG_LEN};
use super::wire::{self, Frame, CLUSTER_PROTOCOL_VERSION, FLAG_SECRET};
use super::{wait_until, Backoff, FaultSwitch};
use crate::config::{ClusterConfig, ClusterSecret};
use crate::metrics::{BackplaneMetrics, Metrics};
use crate::task_per_conn::{Hook, HookFuture, LocalRooms};
use crate::ServerError;

/// How a refusal for a second link to an already linked peer starts (an expected race when
/// both nodes dial, so neither logged as an error nor counted as refused).
const DUPLICATE: &str = "duplicate link";

/// Most distinct peer node ids one node keeps state for (a link, or a down link's last
/// interest). Only authenticated peers get an entry; one beyond it is refused.
pub const MAX_PEERS: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lets through at most one log line per second for what strangers can trigger at will
/// (refused or timed-out handshakes), so that a flood of them cannot flood the log; the
/// counters count every one.
#[derive(Default)]
struct LogLimit {
    /// Seconds since the Unix epoch of the last line let through.
    last: AtomicU64,
    /// Lines held back since.
    held: AtomicU64,
}

impl LogLimit {
    /// `Some(lines held back before this one)` when this line may be logged.
    fn allow(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last.load(Ordering::Relaxed);
        if now != last
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The mesh backplane of one node.
pub struct Mesh {
    this: Weak<Mesh>,
    me: u64,
    /// Random per process, sent in `Challenge`: a peer tells this process from another one
    /// claiming the same node id.
    incarnation: u64,
    cfg: ClusterConfig,
    max_frame: usize,
    local: OnceLock<LocalRooms>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Every peer's current link (live or down with its last interest), for `published`.
    snapshot: RwLock<Arc<[Arc<Link>]>>,
    /// Woken on every `SyncAck` and link change (join barriers wait on it).
    changed: Notify,
    fault: Arc<FaultSwitch>,
    /// Set by [`Mesh::leave`]: no new links.
    leaving: AtomicBool,
    /// Permits for accepted links still in their handshake (`max_pending`).
    pending: Arc<Semaphore>,
    /// Rate limit of the refusal log lines.
    refusals_logged: LogLimit,
}

struct State {
    /// Rooms advertised to peers → the token of the `Sync` sent after their `Add`.
    advertised: HashMap<Box<str>, u64>,
    next_token: u64,
    /// Peer node id → its current link.
    links: HashMap<u64, Arc<Link>>,
    /// Peer ids that have had a link before (a new link to one is a reconnect); bounded.
    seen: HashSet<u64>,
    /// Seed address → the node id found there.
    addr_ids: HashMap<SocketAddr, u64>,
}

/// One link to a peer.
struct Link {
    peer: u64,
    /// The peer process's incarnation (from its `Challenge`).
    incarnation: u64,
    dialed_by: u64,
    up: AtomicBool,
    queue: SendQueue,
    /// Rooms the peer declared interest in (bounded).
    remote: Mutex<Remote>,
    /// Highest `SyncAck` token received.
    acked: AtomicU64,
    closed: AtomicBool,
    close: Notify,
    /// Closed because a preferred link to the same peer replaced it (not a loss).
    superseded: AtomicBool,
    /// Closed because this node is leaving: write what is queued (the final `Reset`) first.
    draining: AtomicBool,
}

impl Link {
    fn kill(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.close.notify_waiters();
            self.queue.ready.notify_one();
        }
    }
}

/// The rooms a peer declared, bounded by count and bytes. Once retired (the link was replaced
/// or its state freed) it stays empty.
#[derive(Default)]
struct Remote {
    rooms: HashSet<Box<str>>,
    bytes: usize,
    retired: bool,
}

impl Remote {
    /// Adds `room`; `Ok(true)` when it is new, `Err` past either bound.
    fn add(&mut self, room: Box<str>, max_rooms: usize, max_bytes: usize) -> Result<bool, String> {
        if self.retired || self.rooms.contains(&room) {
            return Ok(false);
        }
        if self.rooms.len() >= max_rooms || self.bytes + room.len() > max_bytes {
            return Err(format!(
                "peer declared more than {max_rooms} rooms or {max_bytes} bytes of room names"
            ));
        }
        self.bytes += room.len();
        self.rooms.insert(room);
        Ok(true)
    }

    fn remove(&mut self, room: &str) -> bool {
        let gone = self.rooms.remove(room);
        if gone {
            self.bytes -= room.len();
        }
        gone
    }

    /// Forgets every room; returns how many there were.
    fn clear(&mut self) -> usize {
        let n = self.rooms.len();
        self.rooms = HashSet::new();
        self.bytes = 0;
        n
    }

    /// Forgets every room for good (the link's state is being freed).
    fn retire(&mut self) -> usize {
        self.retired = true;
        self.clear()
    }
}

/// Buffer size of each half of a link in its handshake (its frames are at most
/// [`wire::MAX_HANDSHAKE_FRAME`] bytes): a connection that never authenticates holds little.
const HANDSHAKE_BUFFER: usize = 1024;
/// Buffer size of each half of an authenticated link.
const LINK_BUFFER: usize = 64 * 1024;

/// The write half of a link: frames, each followed by its tag once the link is authenticated.
struct LinkWriter {
    w: BufWriter<OwnedWriteHalf>,
    tags: Option<FrameTags>,
}

impl LinkWriter {
    fn new(write: OwnedWriteHalf) -> LinkWriter {
        LinkWriter {
            w: BufWriter::with_capacity(HANDSHAKE_BUFFER, write),
            tags: None,
        }
    }

    /// After the handshake: the full-size buffer (what is buffered is written first).
    async fn grow(self) -> std::io::Result<LinkWriter> {
        let mut w = self.w;
        w.flush().await?;
        Ok(LinkWriter {
            w: BufWriter::with_capacity(LINK_BUFFER, w.into_inner()),
            tags: self.tags,
        })
    }

    async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.w.write_all(frame).await?;
        if let Some(t) = &mut self.tags {
            let tag = t.sign(&[frame]);
            self.w.write_all(&tag).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush().await
    }

    /// Sends `frame`, flushes and closes the write side (errors ignored: the link is ending).
    async fn last(&mut self, frame: &Frame) {
        let _ = self.send(&wire::encode(frame)).await;
        let _ = self.w.flush().await;
        let _ = self.w.shutdown().await;
    }
}

/// Why reading a frame stopped.
enum ReadEnd {
    /// The connection failed or ended.
    Io(String),
    /// The peer sent something that breaks the format, a limit or its tag (counted).
    Invalid(String),
}

/// A link's read half behind what its buffer had read ahead when it was resized.
type ReadHalf = tokio::io::Chain<std::io::Cursor<Vec<u8>>, OwnedReadHalf>;

/// The read half of a link: frames (length checked against `max` before allocating), each
/// tag checked once the link is authenticated.
struct LinkReader {
    r: BufReader<ReadHalf>,
    tags: Option<FrameTags>,
    max: usize,
}

impl LinkReader {
    fn new(read: OwnedReadHalf) -> LinkReader {
        LinkReader {
            r: BufReader::with_capacity(
                HANDSHAKE_BUFFER,
                std::io::Cursor::new(Vec::new()).chain(read),
            ),
            tags: None,
            max: wire::MAX_HANDSHAKE_FRAME,
        }
    }

    /// After the handshake: the full-size buffer and frame limit, keeping every byte the peer
    /// sent after its proof (it may already have sent its interest set).
    fn grow(self, max: usize) -> LinkReader {
        let mut ahead = self.r.buffer().to_vec();
        let (cursor, read) = self.r.into_inner().into_inner();
        let pos = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
        ahead.extend_from_slice(cursor.get_ref().get(pos..).unwrap_or_default());
        LinkReader {
            r: BufReader::with_capacity(LINK_BUFFER, std::io::Cursor::new(ahead).chain(read)),
            tags: self.tags,
            max,
        }
    }

    async fn next(&mut self) -> Result<Frame, ReadEnd> {
        let io = |e: std::io::Error| ReadEnd::Io(format!("read failed: {e}"));
        let mut prefix = [0u8; 4];
        self.r.read_exact(&mut prefix).await.map_err(io)?;
        let len = wire::frame_len(prefix, self.max)
            .map_err(|e| ReadEnd::Invalid(format!("protocol violation: {e}")))?;
        let mut body = BytesMut::zeroed(len);
        self.r.read_exact(&mut body).await.map_err(io)?;
        if let Some(t) = &mut self.tags {
            let mut tag = [0u8; TAG_LEN];
            self.r.read_exact(&mut tag).await.map_err(io)?;
            if !t.verify(&[&prefix, &body], &tag) {
                return Err(ReadEnd::Invalid(
                    "frame tag does not match: the link was altered in transit".into(),
                ));
            }
        }
        wire::decode(body.freeze())
            .map_err(|e| ReadEnd::Invalid(format!("protocol violation: {e}")))
    }
}

/// A peer that completed the handshake.
struct Peer {
    id: u64,
    incarnation: u64,
}

/// A link's bounded outbound queue. `Msg` frames are refused beyond `cap` frames or
/// `cap_bytes` bytes; control frames (interest, acks, heartbeats: small) may use as much again
/// of headroom, and a link whose control frames do not fit is reset (the peer re-syncs on
/// reconnect) rather than desynchronised.
struct SendQueue {
    items: Mutex<Queued>,
    ready: Notify,
    cap: usize,
    cap_bytes: usize,
}

#[derive(Default)]
struct Queued {
    frames: VecDeque<(Bytes, bool)>,
    bytes: usize,
}

impl SendQueue {
    fn new(cap: usize, cap_bytes: usize) -> SendQueue {
        SendQueue {
            items: Mutex::new(Queued::default()),
            ready: Notify::new(),
            cap,
            cap_bytes,
        }
    }

    fn push(&self, frame: Bytes, is_msg: bool) -> bool {
        {
            let mut q = lock(&self.items);
            let (limit, limit_bytes) = if is_msg {
                (self.cap, self.cap_bytes)
            } else {
                (self.cap * 2, self.cap_bytes.saturating_mul(2))
            };
            if q.frames.len() >= limit || q.bytes + frame.len() > limit_bytes {
                return false;
            }
            q.bytes += frame.len();
            q.frames.push_back((frame, is_msg));
        }
        self.ready.notify_one();
        true
    }

    fn take(&self) -> VecDeque<(Bytes, bool)> {
        std::mem::take(&mut *lock(&self.items)).frames
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Dialed,
    Accepted,
}

impl Mesh {
    /// Starts the acceptor on `listener` and a dialer per seed on the current runtime.
    pub(crate) fn start(
        listener: StdListener,
        peers: Vec<SocketAddr>,
        cfg: ClusterConfig,
        max_frame_bytes: usize,
        metrics: Arc<Metrics>,
        fault: Arc<FaultSwitch>,
    ) -> Result<Arc<Mesh>, ServerError> {
        if metrics.backplane().is_none() {
            return Err(ServerError::Config("mesh needs cluster metrics".into()));
        }
        let mesh = Arc::new_cyclic(|this| Mesh {
            this: this.clone(),
            me: cfg.node_id,
            incarnation: auth::incarnation(),
            pending: Arc::new(Semaphore::new(cfg.max_pending)),
            refusals_logged: LogLimit::default(),
            cfg,
            max_frame: wire::max_frame_len(max_frame_bytes),
            local: OnceLock::new(),
            metrics,
            state: Mutex::new(State {
                advertised: HashMap::new(),
                next_token: 1,
                links: HashMap::new(),
                seen: HashSet::new(),
                addr_ids: HashMap::new(),
            }),
            snapshot: RwLock::new(Arc::from(Vec::new())),
            changed: Notify::new(),
            fault,
            leaving: AtomicBool::new(false),
        });
        listener
            .set_nonblocking(true)
            .map_err(|e| ServerError::Backplane(format!("mesh listener: {e}")))?;
        let listener = TcpListener::from_std(listener)
            .map_err(|e| ServerError::Backplane(format!("mesh listener: {e}")))?;
        tokio::spawn(mesh.clone().accept_loop(listener));
        tokio::spawn(mesh.clone().fault_watch());
        for addr in peers {
            tokio::spawn(mesh.clone().dial_loop(addr));
        }
        Ok(mesh)
    }

    /// Gives the mesh the node's rooms (once, when the server starts).
    pub(crate) fn attach(&self, local: LocalRooms) {
        let _ = self.local.set(local);
    }

    fn bp(&self) -> &BackplaneMetrics {
        // `start` refuses metrics without the backplane family.
        self.metrics
            .backplane()
            .unwrap_or_else(|| unreachable!("checked in Mesh::start"))
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    if self.fault.is_cut() {
                        continue;
                    }
                    let Ok(permit) = self.pending.clone().try_acquire_owned() else {
                        // Every handshake slot is taken: hold nothing for this one.
                        self.log_refusal(format_args!(
                            "{} links already in their handshake: closed the one from {from}",
                            self.cfg.max_pending
                        ));
                        self.bp().refused();
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(
                        self.clone()
                            .run_link(stream, Side::Accepted, None, Some(permit)),
                    );
                }
                Err(e) => {
                    tracing::warn!("mesh accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Closes every link whenever the fault switch cuts the node off.
    async fn fault_watch(self: Arc<Self>) {
        loop {
            self.fault.wait_cut().await;
            let links: Vec<_> = lock(&self.state).links.values().cloned().collect();
            for l in links {
                l.kill();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn dial_loop(self: Arc<Self>, addr: SocketAddr) {
        let mut backoff = Backoff::new(self.cfg.reconnect_min, self.cfg.reconnect_max);
        loop {
            let linked = {
                let st = lock(&self.state);
                st.addr_ids
                    .get(&addr)
                    .and_then(|id| st.links.get(id))
                    .is_some_and(|l| l.up.load(Ordering::SeqCst))
            };
            if linked || self.fault.is_cut() {
                tokio::time::sleep(self.cfg.reconnect_min).await;
                continue;
            }
            let connect = tokio::time::timeout(self.cfg.dead_after, TcpStream::connect(addr));
            match connect.await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let was_up = self
                        .clone()
                        .run_link(stream, Side::Dialed, Some(addr), None)
                        .await;
                    if was_up {
                        backoff.reset();
                    }
                    backoff.wait().await;
                }
                Ok(Err(e)) => {
                    tracing::debug!("mesh: cannot reach peer {addr}: {e}");
                    backoff.wait().await;
                }
                Err(_) => backoff.wait().await,
            }
        }
    }

    /// Runs one link from the hello to its end. Returns whether it was ever up.
    async fn run_link(
        self: Arc<Self>,
        stream: TcpStream,
        side: Side,
        addr: Option<SocketAddr>,
        pending: Option<OwnedSemaphorePermit>,
    ) -> bool {
        let (read, write) = stream.into_split();
        let mut reader = LinkReader::new(read);
        let mut writer = LinkWriter::new(write);
        let handshake = self.handshake(&mut reader, &mut writer, addr);
        let peer = match tokio::time::timeout(self.cfg.handshake_timeout, handshake).await {
            Ok(Some(p)) => p,
            Ok(None) => return false,
            Err(_) => {
                if side == Side::Accepted {
                    self.log_refusal(format_args!(
                        "a peer did not complete its hello within {:?}: dropped",
                        self.cfg.handshake_timeout
                    ));
                    self.bp().refused();
                }
                return false;
            }
        };
        drop(pending);
        let mut reader = reader.grow(self.max_frame);
        let Ok(mut writer) = writer.grow().await else {
            return false;
        };
        if let Some(a) = addr {
            // Known from now on, so the dialer does not dial a node it is linked to.
            lock(&self.state).addr_ids.insert(a, peer.id);
        }
        let dialed_by = if side == Side::Dialed {
            self.me
        } else {
            peer.id
        };
        let link = Arc::new(Link {
            peer: peer.id,
            incarnation: peer.incarnation,
            dialed_by,
            up: AtomicBool::new(false),
            queue: SendQueue::new(self.cfg.send_queue, self.cfg.send_queue_bytes),
            remote: Mutex::new(Remote::default()),
            acked: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            close: Notify::new(),
            superseded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        });
        if let Err(why) = self.register(&link) {
            if why.starts_with(DUPLICATE) {
                // Both nodes dialled at once: normal, not a fault.
                tracing::debug!("mesh: node {}: {why}", self.me);
                writer.last(&Frame::Refuse(why)).await;
                return false;
            }
            return self.refuse(&mut writer, why).await;
        }
        tracing::info!("mesh: node {} linked to node {}", self.me, peer.id);
        let writer_task = tokio::spawn(write_loop(
            link.clone(),
            writer,
            self.cfg.heartbeat,
            self.metrics.clone(),
        ));
        let end = self.read_loop(&link, &mut reader).await;
        let why = match end {
            ReadEnd::Io(why) => why,
            ReadEnd::Invalid(why) => {
                // A peer that breaks the protocol loses what it declared.
                self.bp().invalid();
                self.bp()
                    .add_peer_rooms(-(lock(&link.remote).clear() as i64));
                tracing::warn!(
                    "mesh: node {} closed its link to node {}: {why}",
                    self.me,
                    peer.id
                );
                why
            }
        };
        tracing::info!(
            "mesh: link from node {} to node {} closed: {why}",
            self.me,
            peer.id
        );
        link.kill();
        let _ = writer_task.await;
        self.unregister(&link);
        true
    }

    /// The hello and authentication, both ways. `None` when the link ended (already logged,
    /// counted and refused when the peer is at fault).
    async fn handshake(
        &self,
        reader: &mut LinkReader,
        writer: &mut LinkWriter,
        addr: Option<SocketAddr>,
    ) -> Option<Peer> {
        let secret = self.cfg.secret.as_ref().map(ClusterSecret::as_bytes);
        let key = secret.unwrap_or_default();
        let mine = Party {
            node_id: self.me,
            incarnation: self.incarnation,
            nonce: auth::nonce(),
        };
        let hello = Frame::Hello {
            version: CLUSTER_PROTOCOL_VERSION,
            node_id: self.me,
        };
        let challenge = Frame::Challenge {
            incarnation: mine.incarnation,
            nonce: mine.nonce,
            flags: if secret.is_some() { FLAG_SECRET } else { 0 },
        };
        writer.send(&wire::encode(&hello)).await.ok()?;
        writer.send(&wire::encode(&challenge)).await.ok()?;
        writer.flush().await.ok()?;
        let peer_id = match self.handshake_frame(reader, writer, addr, "hello").await? {
            Frame::Hello { version, node_id } => {
                if version != CLUSTER_PROTOCOL_VERSION {
                    let why = format!(
                        "cluster protocol version {version} from node {node_id}, this node \
                         (id {}) speaks {CLUSTER_PROTOCOL_VERSION}: run the same chatbench on every node",
                        self.me
                    );
                    self.refuse(writer, why).await;
                    return None;
                }
                if node_id == self.me {
                    let why = format!(
                        "peer has this node's own id {node_id}: give every node a distinct --node-id"
                    );
                    self.refuse(writer, why).await;
                    return None;
                }
                node_id
            }
            other => return self.unexpected(writer, "hello", &other).await,
        };
        let theirs = match self
            .handshake_frame(reader, writer, addr, "challenge")
            .await?
        {
            Frame::Challenge {
                incarnation,
                nonce,
                flags,
            } => {
                let has = flags & FLAG_SECRET != 0;
                if has != secret.is_some() {
                    let (with, without) = if has {
                        (
                            format!("node {peer_id}"),
                            format!("this node ({})", self.me),
                        )
                    } else {
                        (
                            format!("this node ({})", self.me),
                            format!("node {peer_id}"),
                        )
                    };
                    let why = format!(
                        "{with} uses a cluster secret and {without} has none: give every node the \
                         same secret (--cluster-secret-file or {})",
                        ClusterSecret::ENV
                    );
                    self.refuse(writer, why).await;
                    return None;
                }
                Party {
                    node_id: peer_id,
                    incarnation,
                    nonce,
                }
            }
            other => return self.unexpected(writer, "challenge", &other).await,
        };
        let proof = auth::proof(key, &mine, &theirs);
        writer.send(&wire::encode(&Frame::Auth(proof))).await.ok()?;
        writer.flush().await.ok()?;
        match self.handshake_frame(reader, writer, addr, "auth").await? {
            Frame::Auth(p) if auth::check_proof(key, &theirs, &mine, &p) => {}
            Frame::Auth(_) => {
                let why = format!(
                    "authentication failed: node {peer_id}'s proof does not match this node's \
                     cluster secret (every node needs the same secret)"
                );
                self.refuse(writer, why).await;
                return None;
            }
            other => return self.unexpected(writer, "auth", &other).await,
        }
        if let Some(secret) = secret {
            writer.tags = Some(FrameTags::new(secret, &mine, &theirs));
            reader.tags = Some(FrameTags::new(secret, &theirs, &mine));
        }
        Some(Peer {
            id: peer_id,
            incarnation: theirs.incarnation,
        })
    }

    /// Reads one handshake frame; a refusal from the peer or a broken frame ends the link.
    async fn handshake_frame(
        &self,
        reader: &mut LinkReader,
        writer: &mut LinkWriter,
        addr: Option<SocketAddr>,
        expected: &str,
    ) -> Option<Frame> {
        match reader.next().await {
            Ok(Frame::Refuse(why)) if why.starts_with(DUPLICATE) => {
                tracing::debug!("mesh: peer {addr:?} kept its other link: {why}");
                None
            }
            Ok(Frame::Refuse(why)) => {
                tracing::error!("mesh: peer {addr:?} refused the link: {why}");
                self.bp().refused();
                None
            }
            Ok(f) => Some(f),
            Err(ReadEnd::Invalid(e)) => {
                let why = format!("expected a {expected}: {e}");
                self.refuse(writer, why).await;
                None
            }
            Err(ReadEnd::Io(e)) => {
                tracing::debug!("mesh: link {addr:?} ended in its handshake: {e}");
                None
            }
        }
    }

    async fn unexpected(
        &self,
        writer: &mut LinkWriter,
        expected: &str,
        got: &Frame,
    ) -> Option<Peer> {
        let why = format!("expected a {expected}, got {}", frame_name(got));
        self.refuse(writer, why).await;
        None
    }

    /// Logs a refusal, at most one line per second (see [`LogLimit`]).
    fn log_refusal(&self, what: std::fmt::Arguments<'_>) {
        if let Some(held) = self.refusals_logged.allow() {
            let more = if held > 0 {
                format!(" ({held} more refusals since the last line: see chatbench_backplane_refused_total)")
            } else {
                String::new()
            };
            tracing::warn!("mesh: node {}: {what}{more}", self.me);
        }
    }

    async fn refuse(&self, writer: &mut LinkWriter, why: String) -> bool {
        self.log_refusal(format_args!("refused a link: {why}"));
        self.bp().refused();
        writer.last(&Frame::Refuse(why)).await;
        false
    }

    /// Makes `link` the peer's current link and queues the full interest set on it.
    fn register(&self, link: &Arc<Link>) -> Result<(), String> {
        let mut st = lock(&self.state);
        if self.fault.is_cut() {
            return Err("node is partitioned (fault injection)".into());
        }
        if self.leaving.load(Ordering::SeqCst) {
            return Err("node is shutting down".into());
        }
        if !st.links.contains_key(&link.peer) && st.links.len() >= MAX_PEERS {
            return Err(format!(
                "this node already knows {MAX_PEERS} peers (the limit): node {} refused",
                link.peer
            ));
        }
        let preferred = self.me.min(link.peer);
        let mut replaced = false;
        if let Some(existing) = st.links.get(&link.peer) {
            if existing.up.load(Ordering::SeqCst) {
                if existing.incarnation != link.incarnation {
                    // Another process claims a live node's id: the live link stays. (A node
                    // that restarted is let in once its old link is down: at once when the
                    // old process died, since its sockets close, else after `dead_after`.)
                    return Err(format!(
                        "node id {} is already linked to a live process: another process claims it; give every node a distinct --node-id",
                        link.peer
                    ));
                }
                if existing.dialed_by == preferred && link.dialed_by != preferred {
                    return Err(format!(
                        "{DUPLICATE} to node {}: keeping the one dialled by node {preferred}",
                        link.peer
                    ));
                }
                existing.superseded.store(true, Ordering::SeqCst);
                existing.kill();
            }
            replaced = existing.superseded.load(Ordering::SeqCst);
        }
        // The full set, in order, before any delta queued after this lock is released.
        link.queue.push(wire::encode(&Frame::Reset), false);
        for room in st.advertised.keys() {
            link.queue
                .push(wire::encode(&Frame::Add(room.clone())), false);
        }
        let token = st.next_token;
        st.next_token += 1;
        if !link.queue.push(wire::encode(&Frame::Sync(token)), false) {
            link.kill();
        }
        link.up.store(true, Ordering::SeqCst);
        if let Some(old) = st.links.insert(link.peer, link.clone()) {
            // Its interest is superseded by the full set the new link brings.
            self.bp()
                .add_peer_rooms(-(lock(&old.remote).retire() as i64));
        }
        let known = st.seen.contains(&link.peer);
        if !known && st.seen.len() < 4 * MAX_PEERS {
            st.seen.insert(link.peer);
        }
        if known && !replaced {
            self.bp().reconnected();
        }
        self.bp().peer_up();
        self.rebuild_snapshot(&st);
        drop(st);
        self.changed.notify_waiters();
        Ok(())
    }

    /// The link ended: mark it down (its peer's interest is kept, so what the peer misses is
    /// counted) and count what was still queued as lost.
    /// A peer that declared nothing when its link ended (it left, or broke the protocol) is
    /// forgotten: its table entry is freed.
    fn unregister(&self, link: &Arc<Link>) {
        let mut st = lock(&self.state);
        if link.up.swap(false, Ordering::SeqCst) {
            self.bp().peer_down();
        }
        let current = st
            .links
            .get(&link.peer)
            .is_some_and(|l| Arc::ptr_eq(l, link));
        if current && lock(&link.remote).rooms.is_empty() {
            st.links.remove(&link.peer);
            lock(&link.remote).retire();
        }
        self.rebuild_snapshot(&st);
        drop(st);
        let lost = link.queue.take().iter().filter(|(_, m)| *m).count() as u64;
        if lost > 0 {
            self.bp().lost(lost);
        }
        self.changed.notify_waiters();
    }

    fn rebuild_snapshot(&self, st: &State) {
        let links: Vec<_> = st.links.values().cloned().collect();
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(links);
    }

    async fn read_loop(&self, link: &Arc<Link>, reader: &mut LinkReader) -> ReadEnd {
        loop {
            let frame = tokio::select! {
                r = tokio::time::timeout(self.cfg.dead_after, reader.next()) => r,
                _ = wait_until(&link.close, || link.closed.load(Ordering::SeqCst)) => {
                    return ReadEnd::Io("closed by this node".into());
                }
            };
            let frame = match frame {
                Err(_) => {
                    return ReadEnd::Io(format!(
                        "no frame for {:?} (heartbeat lost): peer declared dead",
                        self.cfg.dead_after
                    ))
                }
                Ok(Err(e)) => return e,
                Ok(Ok(f)) => f,
            };
            match frame {
                Frame::Msg { room, frame } => {
                    self.bp().received();
                    if let Some(local) = self.local.get() {
                        local.deliver(&room, &frame);
                    }
                }
                Frame::Add(room) => {
                    let added = lock(&link.remote).add(
                        room,
                        self.cfg.max_remote_rooms,
                        self.cfg.max_remote_room_bytes,
                    );
                    match added {
                        Ok(true) => self.bp().add_peer_rooms(1),
                        Ok(false) => {}
                        Err(why) => return ReadEnd::Invalid(format!("protocol violation: {why}")),
                    }
                }
                Frame::Remove(room) => {
                    if lock(&link.remote).remove(&room) {
                        self.bp().add_peer_rooms(-1);
                    }
                }
                Frame::Reset => {
                    let n = lock(&link.remote).clear();
                    self.bp().add_peer_rooms(-(n as i64));
                }
                Frame::Sync(t) => {
                    if !link.queue.push(wire::encode(&Frame::SyncAck(t)), false) {
                        return ReadEnd::Io("send queue overflow (control frames)".into());
                    }
                }
                Frame::SyncAck(t) => {
                    link.acked.fetch_max(t, Ordering::SeqCst);
                    self.changed.notify_waiters();
                }
                Frame::Ping => {}
                Frame::Refuse(why) => {
                    if why.starts_with(DUPLICATE) {
                        link.superseded.store(true, Ordering::SeqCst);
                    }
                    return ReadEnd::Io(format!("peer closed the link: {why}"));
                }
                f @ (Frame::Hello { .. } | Frame::Challenge { .. } | Frame::Auth(_)) => {
                    return ReadEnd::Invalid(format!(
                        "protocol violation: {} after the handshake",
                        frame_name(&f)
                    ))
                }
            }
        }
    }

    /// The node is stopping (its clients are gone, so its rooms were withdrawn already): tell
    /// every peer to forget this node's interest (`Reset`), so what they publish meanwhile is
    /// not counted as lost for us, and close the links, waiting at most `timeout`.
    pub(crate) async fn leave(&self, timeout: Duration) {
        self.leaving.store(true, Ordering::SeqCst);
        let links: Vec<Arc<Link>> = {
            let st = lock(&self.state);
            st.links
                .values()
                .filter(|l| l.up.load(Ordering::SeqCst))
                .cloned()
                .collect()
        };
        for l in &links {
            l.queue.push(wire::encode(&Frame::Reset), false);
            l.draining.store(true, Ordering::SeqCst);
            l.kill();
        }
        let all_down = || links.iter().all(|l| !l.up.load(Ordering::SeqCst));
        let _ = tokio::time::timeout(timeout, wait_until(&self.changed, all_down)).await;
    }

    /// Whether every live link has acknowledged a `Sync` at or after `token`.
    fn synced(&self, token: u64) -> bool {
        let snapshot = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        snapshot
            .iter()
            .filter(|l| l.up.load(Ordering::SeqCst))
            .all(|l| l.acked.load(Ordering::SeqCst) >= token)
    }
}

impl Hook for Mesh {
    fn interest_changed(&self, room: &str) {
        let Some(local) = self.local.get() else {
            return;
        };
        let mut st = lock(&self.state);
        let has = local.has_room(room);
        let frames: Vec<Bytes> = match (has, st.advertised.contains_key(room)) {
            (true, false) => {
                let token = st.next_token;
                st.next_token += 1;
                st.advertised.insert(room.into(), token);
                vec![
                    wire::encode(&Frame::Add(room.into())),
                    wire::encode(&Frame::Sync(token)),
                ]
            }
            (false, true) => {
                st.advertised.remove(room);
                vec![wire::encode(&Frame::Remove(room.into()))]
            }
            _ => return,
        };
        self.bp().set_interest_rooms(st.advertised.len());
        for link in st.links.values().filter(|l| l.up.load(Ordering::SeqCst)) {
            for f in &frames {
                if !link.queue.push(f.clone(), false) {
                    tracing::warn!(
                        "mesh: link to node {} reset: send queue overflow",
                        link.peer
                    );
                    link.kill();
                    break;
                }
            }
        }
    }

    fn joined_barrier(&self, room: &str) -> Option<HookFuture> {
        let token = *lock(&self.state).advertised.get(room)?;
        if self.synced(token) {
            return None;
        }
        let timeout = self.cfg.join_sync_timeout;
        let me = self.this.upgrade()?;
        Some(Box::pin(async move {
            let _ =
                tokio::time::timeout(timeout, wait_until(&me.changed, || me.synced(token))).await;
        }))
    }

    fn published(&self, room: &str, frame: &Utf8Bytes) {
        let snapshot = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut encoded: Option<Bytes> = None;
        let (mut forwarded, mut dropped, mut lost) = (0, 0, 0);
        for link in snapshot.iter() {
            if !lock(&link.remote).rooms.contains(room) {
                continue;
            }
            if !link.up.load(Ordering::SeqCst) {
                lost += 1;
                continue;
            }
            let bytes = encoded
                .get_or_insert_with(|| wire::encode_msg(room, frame.as_bytes()))
                .clone();
            if link.queue.push(bytes, true) {
                forwarded += 1;
            } else {
                dropped += 1;
            }
        }
        let bp = self.bp();
        if forwarded > 0 {
            bp.forwarded(forwarded);
        }
        if dropped > 0 {
            bp.dropped(dropped);
        }
        if lost > 0 {
            bp.lost(lost);
        }
    }
}

/// A frame's name for messages (never its payload: it may come from a stranger).
fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello { .. } => "hello",
        Frame::Challenge { .. } => "challenge",
        Frame::Auth(_) => "auth",
        Frame::Refuse(_) => "refuse",
        Frame::Reset => "reset",
        Frame::Add(_) => "add",
        Frame::Remove(_) => "remove",
        Frame::Sync(_) => "sync",
        Frame::SyncAck(_) => "sync-ack",
        Frame::Ping => "ping",
        Frame::Msg { .. } => "msg",
    }
}

/// Writes everything queued on `link` (one flush per batch) and a `Ping` every `heartbeat`,
/// until the link is closed or a write fails.
async fn write_loop(
    link: Arc<Link>,
    mut w: LinkWriter,
    heartbeat: Duration,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping = wire::encode(&Frame::Ping);
    loop {
        if link.closed.load(Ordering::SeqCst) {
            break;
        }
        tokio::select! {
            _ = link.queue.ready.notified() => {}
            _ = tick.tick() => {
                link.queue.push(ping.clone(), false);
            }
        }
        let batch = link.queue.take();
        let mut unsent = None;
        for (i, (frame, _)) in batch.iter().enumerate() {
            if w.send(frame).await.is_err() {
                unsent = Some(i);
                break;
            }
        }
        if unsent.is_none() && w.flush().await.is_err() {
            unsent = Some(batch.len());
        }
        if let Some(i) = unsent {
            // Frames that never reached the socket are lost; the ones in the failed buffer too,
            // but they cannot be told apart: count what is certain.
            let lost = batch.iter().skip(i).filter(|(_, m)| *m).count() as u64;
            if lost > 0 {
                if let Some(bp) = metrics.backplane() {
                    bp.lost(lost);
                }
            }
            link.kill();
            break;
        }
    }
    if link.draining.load(Ordering::SeqCst) {
        for (frame, _) in link.queue.take() {
            if w.send(&frame).await.is_err() {
                break;
            }
        }
        let _ = w.flush().await;
    }
    if link.superseded.load(Ordering::SeqCst) {
        // Tell the peer this link was replaced, not lost.
        let why = format!("{DUPLICATE}: replaced by the link dialled by the lower node id");
        w.last(&Frame::Refuse(why)).await;
    } else {
        let _ = w.w.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_lines_are_limited_to_one_per_second() {
        let l = LogLimit::default();
        assert_eq!(l.allow(), Some(0));
        let held = (0..100).filter(|_| l.allow().is_none()).count();
        // All within the same second, except when the clock ticked over meanwhile.
        assert!(held >= 99, "{held}");
    }

    #[test]
    fn send_queue_refuses_messages_past_either_bound_but_keeps_room_for_control() {
        let q = SendQueue::new(2, 100);
        let msg = Bytes::from(vec![b'x'; 40]);
        assert!(q.push(msg.clone(), true));
        assert!(q.push(msg.clone(), true));
        assert!(!q.push(msg.clone(), true), "frame bound");
        // Control frames have headroom beyond the message bound...
        assert!(q.push(Bytes::from_static(b"ctl"), false));
        assert!(q.push(Bytes::from_static(b"ctl"), false));
        // ...but are bounded too.
        assert!(!q.push(Bytes::from_static(b"ctl"), false));
        assert_eq!(q.take().len(), 4);
        // The byte bound: 2 × 60 > 100.
        let big = Bytes::from(vec![b'y'; 60]);
        assert!(q.push(big.clone(), true));
        assert!(!q.push(big, true), "byte bound");
        assert_eq!(q.take().len(), 1);
        assert!(q.take().is_empty());
    }
}
