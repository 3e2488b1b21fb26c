//! The `task-per-conn` architecture: a tokio multi-thread runtime with one task per connection
//! (the BEAM/goroutine model).
//!
//! Each connection task owns its WebSocket and a bounded outbound queue ([`Outbox`]: a
//! `VecDeque` that allocates nothing while empty) of shared frames. What a frame means is
//! decided by [`crate::chat`]; this module carries the actions out. Fan-out runs on the
//! sender's task: it pushes a refcounted clone of the *received* frame (the original bytes,
//! never re-encoded) to every other member of the room, under that room's shard lock, as
//! [`FanOut::offer`] says (queue, drop, or kick a slow consumer). A connection task waits on three things at once:
//! its socket, its queue, and its control `Notify` (slow-consumer kick or shutdown; a
//! per-connection `Notify`, so 15,000 idle tasks do not all poll one shared lock). When it
//! writes, it drains everything already queued with `feed` and flushes once, so frames that
//! arrived together leave in one `write(2)`.
//!
//! Memory per idle connection is the task (the future below), tungstenite's read buffer
//! (`read_buffer_size`, allocated up front), the queue's first block, and one `Peer`.
//!
//! The `cluster` architecture reuses this engine through one seam, [`Hook`]: when installed
//! (see [`serve_with_hook`]), it hears of every room membership change and every published
//! `msg` (after local fan-out), and delivers messages from other nodes through [`LocalRooms`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::TcpListener as StdListener;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chatbench_protocol::close_code;
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::collections::VecDeque;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tokio::sync::mpsc;
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::chat::{self, Action, Backlog, FanOut, JoinedRooms, Limits, Offer, Refusal};
use crate::config::{Arch, ServerConfig};
use crate::http::{self, Head, Route, MAX_HEAD_BYTES};
use crate::metrics::{DisconnectReason, HttpPath, Metrics};
use crate::rooms::{ConnId, RoomHasher, Rooms};
use crate::shutdown::Shutdown;
use crate::ServerError;

#[doc(hidden)]
pub mod bench;

type Ws = WebSocketStream<TcpStream>;

/// Runs the server until `shutdown` fires and connections have closed (at most
/// `config.shutdown_grace` later). Builds its own multi-thread runtime and blocks on it.
pub fn run(
    listener: StdListener,
    config: ServerConfig,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    config.validate().map_err(ServerError::Config)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .thread_name("chatbench-worker")
        .build()
        .map_err(ServerError::Runtime)?;
    let result = runtime.block_on(serve(listener, config, shutdown));
    // Tasks still running after the grace (peers that never answered the close) are dropped
    // here; their cleanup runs in `Conn::drop`.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// The accept loop, for callers that bring their own runtime (must be multi-thread or
/// current-thread with `enable_all`). Returns after shutdown as [`run`] does.
pub async fn serve(
    listener: StdListener,
    config: ServerConfig,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let metrics = Arc::new(Metrics::new(Arch::TaskPerConn.as_str()));
    serve_with_hook(listener, config, shutdown, metrics, |_| None).await
}

/// A boxed future a [`Hook`] hands back.
pub type HookFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a cluster backplane plugs into this engine (nothing, for plain `task-per-conn`).
/// Methods are called on connection tasks and must not block: queue work, do not do I/O.
pub trait Hook: Send + Sync {
    /// A connection joined or left `room`: its local membership may have gone from 0 to 1 or
    /// 1 to 0. Called after every change, so the last call sees the final state; re-read it
    /// with [`LocalRooms::has_room`].
    fn interest_changed(&self, room: &str);
    /// Awaited before `joined` is sent: resolves once the other nodes route `room` here (so
    /// `joined` still means "the room is live"), or after a bounded wait.
    fn joined_barrier(&self, room: &str) -> Option<HookFuture>;
    /// A client published `frame` in `room`, already fanned out locally.
    fn published(&self, room: &str, frame: &Utf8Bytes);
}

/// How a [`Hook`] reaches this node's rooms. Holds the server weakly: it does not keep a
/// stopped server alive.
#[derive(Clone)]
pub struct LocalRooms(Weak<Shared>);

impl LocalRooms {
    /// Whether `room` has a local member now.
    pub fn has_room(&self, room: &str) -> bool {
        self.0.upgrade().is_some_and(|s| s.rooms.members(room) > 0)
    }

    /// Fans `frame` (received from another node) out to every local member of `room`,
    /// unchanged: one shared buffer for all of them.
    pub fn deliver(&self, room: &str, frame: &Utf8Bytes) {
        if let Some(shared) = self.0.upgrade() {
            shared.deliver_remote(room, frame);
        }
    }
}

/// [`serve`] with `metrics` and a [`Hook`] built from the node's [`LocalRooms`] (`None`: no
/// hook). The cluster architecture's entry point.
pub async fn serve_with_hook(
    listener: StdListener,
    config: ServerConfig,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
    make_hook: impl FnOnce(LocalRooms) -> Option<Arc<dyn Hook>>,
) -> Result<(), ServerError> {
    config.validate().map_err(ServerError::Config)?;
    listener
        .set_nonblocking(true)
        .map_err(ServerError::Listener)?;
    let listener = TcpListener::from_std(listener).map_err(ServerError::Listener)?;
    let grace = config.shutdown_grace;
    let hasher = RoomHasher::Random(Default::default());
    let shared = Shared::new(config, metrics, hasher, shutdown.clone(), make_hook);
    // Every connection task holds a clone of `done_tx`; when all are gone, `recv` returns None.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.metrics.tcp_accepted();
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, shared.clone(), done_tx.clone()));
                }
                Err(e) => accept_failed(&shared.metrics, e).await,
            },
        }
    }
    drop(listener);
    shared.peers.wake_all();
    drop(done_tx);
    let _ = tokio::time::timeout(grace, done_rx.recv()).await;
    Ok(())
}

/// Out of descriptors or memory: back off briefly instead of spinning on a ready listener.
async fn accept_failed(metrics: &Metrics, e: io::Error) {
    metrics.accept_error();
    tracing::warn!("accept failed: {e}");
    if matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// tungstenite settings from the server config: small explicit buffers (the defaults cost
/// ≈ 135 KiB per connection) and the frame limit enforced by tungstenite itself.
pub fn ws_config(config: &ServerConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_write_buffer_size(config.max_write_buffer_size)
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes))
}

/// State shared by every connection task.
struct Shared {
    config: ServerConfig,
    ws_config: WebSocketConfig,
    metrics: Arc<Metrics>,
    rooms: Rooms<Arc<Peer>>,
    peers: Peers,
    next_id: AtomicU64,
    shutdown: Shutdown,
    /// The cluster backplane, if any.
    hook: Option<Arc<dyn Hook>>,
}

impl Shared {
    /// The server's state. The gate's workloads (`bench.rs`) build theirs here too, with
    /// [`RoomHasher::Fixed`] and no hook.
    fn new(
        config: ServerConfig,
        metrics: Arc<Metrics>,
        hasher: RoomHasher,
        shutdown: Shutdown,
        make_hook: impl FnOnce(LocalRooms) -> Option<Arc<dyn Hook>>,
    ) -> Arc<Shared> {
        Arc::new_cyclic(|weak| Shared {
            ws_config: ws_config(&config),
            rooms: Rooms::with_hasher(metrics.clone(), hasher),
            metrics,
            peers: Peers::new(),
            next_id: AtomicU64::new(1),
            shutdown,
            config,
            hook: make_hook(LocalRooms(weak.clone())),
        })
    }

    fn join_room(&self, room: &str, id: ConnId, peer: Arc<Peer>) {
        if self.rooms.join(room, id, peer) {
            if let Some(hook) = &self.hook {
                hook.interest_changed(room);
            }
        }
    }

    fn leave_room(&self, room: &str, id: ConnId) {
        if self.rooms.leave(room, id) {
            if let Some(hook) = &self.hook {
                hook.interest_changed(room);
            }
        }
    }

    /// Queues `frame` (from another cluster node), unchanged and uncopied, to every local
    /// member of `room`, with the same slow-consumer rule and counters as `Conn::fan_out`.
    fn deliver_remote(&self, room: &str, frame: &Utf8Bytes) {
        let mut fan = FanOut::new(&self.config, frame.len());
        self.rooms
            .for_each_member(room, |_, peer| peer.offer(frame, &mut fan));
        fan.finish(&self.metrics);
    }
}

/// How other tasks reach a connection: its outbound queue and its control signal.
struct Peer {
    /// Bounded outbound queue of frames to write. Overflow policy: `config.slow_consumer`,
    /// applied by the sender at fan-out time.
    outbox: Outbox,
    /// Set (once) when the connection must be closed as a slow consumer.
    kicked: AtomicBool,
    /// Wakes the connection task for a kick or for shutdown. `notify_one` keeps a permit, so
    /// a wake-up is never lost.
    control: Notify,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            outbox: Outbox::new(),
            kicked: AtomicBool::new(false),
            control: Notify::new(),
        }
    }

    /// Offers one fan-out frame to this recipient: queued, dropped, or a slow-consumer kick,
    /// as [`FanOut::offer`] rules.
    fn offer(&self, frame: &Utf8Bytes, fan: &mut FanOut) {
        if self.outbox.offer(frame, fan) == Offer::Kick
            && !self.kicked.swap(true, Ordering::Relaxed)
        {
            self.control.notify_one();
        }
    }
}

/// Every live WebSocket connection, so shutdown can wake each one through its own `Notify`.
struct Peers {
    shards: Box<[Mutex<PeerShard>]>,
}

type PeerShard = HashMap<ConnId, Arc<Peer>>;

impl Peers {
    const SHARDS: usize = 64;

    fn new() -> Peers {
        Peers {
            shards: (0..Self::SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, id: ConnId) -> std::sync::MutexGuard<'_, PeerShard> {
        self.shards[(id as usize) % Self::SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, id: ConnId, peer: Arc<Peer>) {
        self.shard(id).insert(id, peer);
    }

    fn remove(&self, id: ConnId) {
        self.shard(id).remove(&id);
    }

    fn wake_all(&self) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for peer in shard.values() {
                peer.control.notify_one();
            }
        }
    }
}

/// One accepted TCP connection: HTTP routing, then (for `/ws`) the WebSocket session.
async fn connection(stream: TcpStream, shared: Arc<Shared>, _done: mpsc::Sender<()>) {
    let timeout = shared.config.handshake_timeout;
    let handshake = tokio::select! {
        // Boxed: the handshake's state (timer, head buffer) is freed once it is done
        // instead of sizing the connection's future for its whole life.
        r = Box::pin(tokio::time::timeout(timeout, http_phase(stream, &shared))) => r,
        _ = shared.shutdown.wait() => return,
    };
    let (stream, leftover) = match handshake {
        Err(_elapsed) => {
            shared.metrics.handshake_timeout();
            return;
        }
        Ok(None) => return,
        Ok(Some(upgraded)) => upgraded,
    };
    let ws = if leftover.is_empty() {
        WebSocketStream::from_raw_socket(stream, Role::Server, Some(shared.ws_config)).await
    } else {
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(shared.ws_config))
            .await
    };
    session(ws, shared).await;
}

/// Reads the request head (bounded by [`MAX_HEAD_BYTES`]) and answers it. Returns the stream
/// and any bytes read past the head when it was a WebSocket upgrade (101 already sent).
async fn http_phase(mut stream: TcpStream, shared: &Shared) -> Option<(TcpStream, Vec<u8>)> {
    let metrics = &shared.metrics;
    let mut buf = Vec::new();
    let (route, head_len) = loop {
        let old = buf.len();
        buf.resize((old + 1024).min(MAX_HEAD_BYTES), 0);
        let n = stream.read(&mut buf[old..]).await.ok()?;
        buf.truncate(old + n);
        if n == 0 {
            return None;
        }
        match http::parse_head(&buf) {
            Ok(Head::Partial) => continue,
            Ok(Head::Complete { route, head_len }) => break (route, head_len),
            Err(reject) => {
                metrics.http_request(HttpPath::Bad);
                let _ = stream.write_all(&http::reject_response(reject)).await;
                let _ = stream.shutdown().await;
                return None;
            }
        }
    };
    metrics.http_request(route.path());
    if let Route::Upgrade { accept_key } = &route {
        stream
            .write_all(&http::switching_protocols(accept_key))
            .await
            .ok()?;
        buf.drain(..head_len);
        return Some((stream, buf));
    }
    if let Some(response) = http::route_response(&route, metrics) {
        let _ = stream.write_all(&response).await;
        let _ = stream.shutdown().await;
    }
    None
}

/// The WebSocket session of one connection: registration, the main loop, and cleanup on every
/// exit path (normal return, panic, or the task being dropped at runtime shutdown).
async fn session(mut ws: Ws, shared: Arc<Shared>) {
    let mut conn = Conn::open(shared);
    let reason = match AssertUnwindSafe(conn.run(&mut ws)).catch_unwind().await {
        Ok(reason) => reason,
        Err(_) => DisconnectReason::Panic,
    };
    conn.finish(reason);
}

/// A connection's own state. Its `Drop` guarantees room membership is cleaned up.
struct Conn {
    id: ConnId,
    peer: Arc<Peer>,
    shared: Arc<Shared>,
    /// Rooms this connection is in.
    joined: JoinedRooms,
    /// Bytes of the batch taken from the outbox and being written (in
    /// `chatbench_outbound_queued_bytes` until written, or released at the end).
    in_flight: usize,
    finished: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped without finishing: the runtime was shut down under us.
            self.finish(DisconnectReason::Shutdown);
        }
    }
}

/// `Some(reason)` ends the session.
type Flow = Option<DisconnectReason>;

impl Conn {
    /// A new WebSocket connection: its id, its queue, registered and counted (the gate's
    /// workloads open theirs here too).
    fn open(shared: Arc<Shared>) -> Conn {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let peer = Arc::new(Peer::new());
        shared.metrics.ws_opened();
        shared.peers.insert(id, peer.clone());
        // Shutdown sets its flag before waking peers: a connection registered after the
        // wake-up sees the flag here.
        if shared.shutdown.is_triggered() {
            peer.control.notify_one();
        }
        Conn {
            id,
            peer,
            shared,
            joined: JoinedRooms::new(),
            in_flight: 0,
            finished: false,
        }
    }

    fn finish(&mut self, reason: DisconnectReason) {
        self.leave_all();
        self.shared.peers.remove(self.id);
        self.peer.outbox.release(&self.shared.metrics);
        let in_flight = std::mem::take(&mut self.in_flight);
        self.shared.metrics.outbound_released(in_flight);
        self.shared.metrics.ws_closed(reason);
        self.finished = true;
    }

    fn leave_all(&mut self) {
        for room in self.joined.drain() {
            self.shared.leave_room(&room, self.id);
        }
    }

    async fn run(&mut self, ws: &mut Ws) -> DisconnectReason {
        let peer = self.peer.clone();
        loop {
            let flow = tokio::select! {
                _ = peer.control.notified() => Box::pin(self.on_control(ws)).await,
                _ = peer.outbox.ready.notified() => {
                    let (frames, bytes) = peer.outbox.take();
                    // Added: a batch abandoned by a control wake-up that did not end the
                    // session is released with the next one.
                    self.in_flight += bytes;
                    let metrics = &self.shared.metrics;
                    // Keep watching the control signal while blocked on a peer that does not
                    // read: that is exactly when a slow-consumer kick or shutdown arrives.
                    tokio::select! {
                        r = write_queued(ws, frames, metrics) => match r {
                            Ok(()) => {
                                metrics.outbound_released(std::mem::take(&mut self.in_flight));
                                None
                            }
                            Err(_) => Some(DisconnectReason::IoError),
                        },
                        _ = peer.control.notified() => Box::pin(self.on_control(ws)).await,
                    }
                }
                msg = ws.next() => self.on_message(ws, msg).await,
            };
            if let Some(reason) = flow {
                return reason;
            }
        }
    }

    /// A kick or shutdown woke us.
    async fn on_control(&mut self, ws: &mut Ws) -> Flow {
        if self.peer.kicked.load(Ordering::Relaxed) {
            return Some(Box::pin(self.close_fatal(ws, Refusal::slow_consumer(), false)).await);
        }
        if self.shared.shutdown.is_triggered() {
            self.leave_all();
            let frame = CloseFrame {
                code: CloseCode::from(close_code::GOING_AWAY),
                reason: "server shutting down".into(),
            };
            let _ = tokio::time::timeout(self.shared.config.close_timeout, async {
                ws.send(Message::Close(Some(frame))).await?;
                while let Some(Ok(_)) = ws.next().await {}
                Ok::<(), WsError>(())
            })
            .await;
            return Some(DisconnectReason::Shutdown);
        }
        None
    }

    async fn on_message(&mut self, ws: &mut Ws, msg: Option<Result<Message, WsError>>) -> Flow {
        let metrics = &self.shared.metrics;
        match msg {
            None => Some(DisconnectReason::ClientClose),
            Some(Ok(Message::Text(text))) => {
                metrics.frame_in();
                self.on_text(ws, text).await
            }
            Some(Ok(Message::Binary(_))) => {
                metrics.frame_in();
                Some(Box::pin(self.close_fatal(ws, Refusal::binary_frame(), false)).await)
            }
            // Ping: tungstenite queues the pong and sends it on the next read. Close: it
            // queues the reply, and the next read ends the stream (None above).
            Some(Ok(
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_),
            )) => None,
            Some(Err(e)) => Some(self.on_read_error(ws, e).await),
        }
    }

    async fn on_read_error(&mut self, ws: &mut Ws, e: WsError) -> DisconnectReason {
        let refusal = match crate::ws_error::classify_read_error(e) {
            crate::ws_error::ReadFailure::Gone(reason) => return reason,
            crate::ws_error::ReadFailure::Fatal(refusal) => refusal,
        };
        Box::pin(self.close_fatal(ws, refusal, true)).await
    }

    async fn on_text(&mut self, ws: &mut Ws, text: Utf8Bytes) -> Flow {
        let limits = Limits::from(&self.shared.config);
        match chat::on_text(&text, &self.joined, limits) {
            Action::Join { room, new } => {
                if new {
                    self.shared.join_room(&room, self.id, self.peer.clone());
                    self.joined.add(&room);
                }
                if let Some(barrier) = self
                    .shared
                    .hook
                    .as_ref()
                    .and_then(|h| h.joined_barrier(&room))
                {
                    barrier.await;
                }
                self.reply(ws, chat::joined_frame(&room)).await
            }
            Action::Leave { room, index } => {
                self.joined.remove(index);
                self.shared.leave_room(&room, self.id);
                None
            }
            Action::Publish { room, .. } => {
                self.fan_out(&room, &text);
                if let Some(hook) = &self.shared.hook {
                    hook.published(&room, &text);
                }
                None
            }
            Action::Refuse(refusal) => self.reply_error(ws, refusal).await,
            Action::Panic => chat::injected_panic(self.id),
        }
    }

    /// Queues the received frame, unchanged and uncopied, to every other member of `room`.
    fn fan_out(&self, room: &str, frame: &Utf8Bytes) {
        let mut fan = FanOut::new(&self.shared.config, frame.len());
        self.shared.rooms.for_each_member(room, |id, peer| {
            if id != self.id {
                peer.offer(frame, &mut fan);
            }
        });
        fan.finish(&self.shared.metrics);
    }

    /// Sends one reply frame now (acks and errors bypass the queue: they answer this client).
    async fn reply(&self, ws: &mut Ws, text: String) -> Flow {
        match ws.send(Message::text(text)).await {
            Ok(()) => {
                self.shared.metrics.frames_out(1);
                None
            }
            Err(_) => Some(DisconnectReason::IoError),
        }
    }

    /// Sends an `error` frame; for fatal codes, closes with the code's close code.
    async fn reply_error(&mut self, ws: &mut Ws, refusal: Refusal) -> Flow {
        if refusal.is_fatal() {
            return Some(Box::pin(self.close_fatal(ws, refusal, false)).await);
        }
        self.shared.metrics.error_sent(refusal.code);
        self.reply(ws, refusal.frame()).await
    }

    /// Sends the `error` frame and a close frame with the code's close code, then waits (at
    /// most `close_timeout`) for the client to go. `stream_ended`: tokio-tungstenite ends the
    /// read side after a read error, so the client's close reply cannot be read as frames;
    /// then half-close the socket and discard input until EOF, so the client reads our close
    /// frame instead of a reset.
    async fn close_fatal(
        &mut self,
        ws: &mut Ws,
        refusal: Refusal,
        stream_ended: bool,
    ) -> DisconnectReason {
        self.leave_all();
        let metrics = &self.shared.metrics;
        metrics.error_sent(refusal.code);
        let close = CloseFrame {
            code: CloseCode::from(refusal.close_code()),
            reason: refusal.close_reason().into(),
        };
        let _ = tokio::time::timeout(self.shared.config.close_timeout, async {
            ws.feed(Message::text(refusal.frame())).await?;
            metrics.frames_out(1);
            ws.send(Message::Close(Some(close))).await?;
            if stream_ended {
                let stream = ws.get_mut();
                stream.shutdown().await?;
                let mut sink = vec![0u8; 1024];
                while stream.read(&mut sink).await? > 0 {}
            } else {
                while let Some(Ok(_)) = ws.next().await {}
            }
            Ok::<(), WsError>(())
        })
        .await;
        refusal.disconnect_reason()
    }
}

/// Writes every frame that was queued (up to the queue bound) with `feed`, then flushes once:
/// one `write(2)` per `write_buffer_size` bytes instead of one per frame.
async fn write_queued(
    ws: &mut Ws,
    frames: VecDeque<Utf8Bytes>,
    metrics: &Metrics,
) -> Result<(), WsError> {
    let n = frames.len();
    if n == 0 {
        return Ok(());
    }
    for frame in frames {
        ws.feed(Message::Text(frame)).await?;
    }
    ws.flush().await?;
    metrics.frames_out(n as u64);
    Ok(())
}

/// A connection's bounded outbound queue: a `VecDeque` and its [`Backlog`] behind a mutex,
/// plus a `Notify`. Its bounds and slow-consumer policy are [`FanOut::offer`]'s.
///
/// Chosen over `tokio::sync::mpsc` for memory: an mpsc channel allocates a 32-slot block when
/// it is created (≈ 1.1 KiB per idle connection), while an empty `VecDeque` allocates nothing.
/// The owning task takes the whole queue in one lock and writes it as one batch; `notify_one`
/// keeps a permit, so a push between the take and the next wait is never lost. The batch's
/// bytes stay in the backlog until it is written ([`Outbox::written`]).
struct Outbox {
    queue: Mutex<Queued>,
    ready: Notify,
}

#[derive(Default)]
struct Queued {
    frames: VecDeque<Utf8Bytes>,
    backlog: Backlog,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            queue: Mutex::new(Queued::default()),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a (refcounted) frame if `fan` says so; returns what it said.
    fn offer(&self, frame: &Utf8Bytes, fan: &mut FanOut) -> Offer {
        let offer = {
            let mut q = self.lock();
            let q = &mut *q;
            let offer = fan.offer(q.frames.len(), &mut q.backlog);
            if offer == Offer::Queue {
                q.frames.push_back(frame.clone());
            }
            offer
        };
        if offer == Offer::Queue {
            self.ready.notify_one();
        }
        offer
    }

    /// Takes everything queued, leaving an empty (unallocated) queue; returns the frames and
    /// their bytes, which leave the backlog (the byte bound is the queue's; the writer holds
    /// at most one taken batch beside it). The caller releases them from
    /// `chatbench_outbound_queued_bytes` once written or dropped.
    fn take(&self) -> (VecDeque<Utf8Bytes>, usize) {
        let mut q = self.lock();
        let bytes = q.backlog.bytes();
        q.backlog.written(bytes);
        (std::mem::take(&mut q.frames), bytes)
    }

    /// The connection ended: drops what is queued and releases its bytes.
    fn release(&self, metrics: &Metrics) {
        let mut q = self.lock();
        q.frames = VecDeque::new();
        metrics.outbound_released(q.backlog.release());
    }
}
