//! The `epoll` architecture: one OS thread, one readiness loop over non-blocking sockets (the
//! Node.js / Redis model), built on `mio` with no async runtime and no locks.
//!
//! This module owns the loop and all connection state; [`frame`] is the RFC 6455 codec it uses.
//!
//! - **Accept** is non-blocking and edge-triggered: accept until `WouldBlock`. Out of descriptors,
//!   the loop retries 10 ms later instead of spinning.
//! - **Reading**: every socket is read into *one* buffer owned by the loop. The HTTP head, or a
//!   WebSocket frame that has not fully arrived, is copied into a per-connection `Vec` that is
//!   freed as soon as it is consumed. An idle connection therefore holds no buffer at all: its
//!   cost is one slab entry (about 100 bytes) plus the kernel's socket. That is the uWebSockets
//!   trick the design points at.
//! - **Writing**: each connection has a bounded queue (`outbound_queue` frames) of encoded frames
//!   shared by reference count: a forwarded `msg` is framed once (the client's payload byte for
//!   byte) and the same allocation is queued to every recipient. Queues are flushed at the end
//!   of each loop turn with one `writev(2)` per connection, so frames that arrived together leave
//!   together; what does not fit waits for writable readiness. A full queue applies the
//!   slow-consumer policy at fan-out; a connection whose own queue is full stops having its
//!   input processed (TCP backpressure) until the queue drains.
//! - **Chat rules** are [`crate::chat`]'s: this module carries out the actions it returns, and
//!   asks it about every recipient of a fan-out.
//! - **Rooms** are plain maps: name → room id → `Vec` of member tokens, with each member's index
//!   kept on the connection so joining and leaving are O(1).
//! - **Timers**: the handshake and close timeouts are constant, so deadlines arrive in the
//!   order they were set: two FIFO queues are the whole timer wheel.
//! - **Faults**: a panic in a handler unwinds the loop, so the server thread dies with every
//!   connection, like an uncaught exception in Node.js. With `isolate_panics`, each event is
//!   handled under `catch_unwind` and only the connection whose event panicked is closed.
//! - **Shutdown**: the [`Shutdown`] signal wakes the loop through a `mio::Waker`; the listener is
//!   closed, every client gets close 1001, and the loop returns when they are gone or after
//!   `shutdown_grace`.

#[doc(hidden)]
pub mod bench;
pub mod frame;

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown as HalfClose, TcpListener as StdListener};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatbench_protocol::close_code;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use self::frame::{Fragments, FrameError, Message, Step};
use crate::chat::{self, Action, Backlog, FanOut, Limits, Membership, Offer, Refusal};
use crate::config::{Arch, ServerConfig};
use crate::http::{self, Head, Route, MAX_HEAD_BYTES};
use crate::metrics::{DisconnectReason, HttpPath, Metrics};
use crate::shutdown::Shutdown;
use crate::ServerError;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// The loop's one read buffer is at least this large (or `read_buffer_size` if larger).
const MIN_READ_BUFFER: usize = 64 * 1024;
/// Reads per connection per loop turn before it yields to the others (fairness).
const READS_PER_TURN: usize = 4;
/// Most buffers gathered into one `writev(2)`.
const IOV_MAX: usize = 64;
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;
/// Retry delay after `accept(2)` failed for lack of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Runs the server until `shutdown` fires and connections have closed (at most
/// `config.shutdown_grace` later), on the calling thread.
///
/// A panicking handler (fault injection) unwinds out of this function unless
/// `config.isolate_panics` is set: that is the architecture's fault model, not an error.
pub fn run(
    listener: StdListener,
    config: ServerConfig,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    config.validate().map_err(ServerError::Config)?;
    listener
        .set_nonblocking(true)
        .map_err(ServerError::Listener)?;
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new().map_err(ServerError::Runtime)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(ServerError::Listener)?;
    let waker = Waker::new(poll.registry(), WAKER).map_err(ServerError::Runtime)?;
    // The loop keeps its own reference: were the callback's the last one, the eventfd would
    // close right after waking, and closing it drops the pending event from epoll's ready
    // list before the loop has seen it.
    let waker = Arc::new(waker);
    let wake = waker.clone();
    shutdown.on_trigger(move || {
        let _ = wake.wake();
    });
    let read_len = config.read_buffer_size.max(MIN_READ_BUFFER);
    let mut server = Server::new(poll, waker, Some(listener), read_len, shutdown, config);
    server.run_loop().map_err(ServerError::Runtime)
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the HTTP request head (held in `Conn::inbuf`).
    Handshake,
    /// A plain HTTP response is queued; the connection ends once it is written.
    Http,
    /// An open WebSocket.
    Open,
    /// We sent (queued) a close frame and wait for the client's close, EOF, or the close
    /// timeout. `framing_ok`: the input can still be decoded (false after a framing error:
    /// then input is discarded). `reason` is what the disconnect is counted as.
    Closing {
        reason: DisconnectReason,
        framing_ok: bool,
    },
    /// The client closed first; our echo is queued and the socket ends once it is written.
    PeerClosed,
}

/// One connection, kept small: it is the whole user-space cost of an idle client.
struct Conn {
    stream: TcpStream,
    /// Tells a reused slab slot from the connection a timer entry was set for.
    serial: u32,
    phase: Phase,
    /// In the dirty list (has queued frames to flush at the end of the turn).
    dirty: bool,
    /// Input processing stopped because the outbound queue is full.
    paused: bool,
    /// `shutdown(SHUT_WR)` done after our close frame was written.
    write_shut: bool,
    /// Bytes written of the front frame of `out`.
    out_off: u32,
    /// During the handshake: the request head so far. Afterwards: input not yet decoded (an
    /// incomplete frame, or frames left while paused). Freed when empty.
    inbuf: Vec<u8>,
    /// A fragmented text message being received.
    frag: Fragments,
    /// Encoded frames to write, shared with other recipients.
    out: VecDeque<Rc<[u8]>>,
    /// The bytes of `out` (whole frames until written) and the slow-consumer rule's state.
    backlog: Backlog,
    /// Rooms joined: (room id, index in that room's member list).
    joined: Vec<(u32, u32)>,
}

impl Conn {
    /// A new connection in the handshake (the gate's workloads open theirs here too).
    fn new(stream: TcpStream, serial: u32) -> Conn {
        Conn {
            stream,
            serial,
            phase: Phase::Handshake,
            dirty: false,
            paused: false,
            write_shut: false,
            out_off: 0,
            inbuf: Vec::new(),
            frag: None,
            out: VecDeque::new(),
            backlog: Backlog::default(),
            joined: Vec::new(),
        }
    }
}

/// A connection's rooms as [`crate::chat`] sees them: its room ids, named through the
/// server's name → id map.
struct Joined<'s> {
    room_ids: &'s HashMap<Box<str>, u32>,
    joined: &'s [(u32, u32)],
}

impl Membership for Joined<'_> {
    fn position(&self, room: &str) -> Option<usize> {
        let rid = *self.room_ids.get(room)?;
        self.joined.iter().position(|j| j.0 == rid)
    }

    fn count(&self) -> usize {
        self.joined.len()
    }
}

struct Room {
    name: Box<str>,
    /// Member tokens.
    members: Vec<u32>,
}

struct Server {
    poll: Poll,
    /// Wakes the loop on shutdown (see `run`).
    _waker: Arc<Waker>,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    room_ids: HashMap<Box<str>, u32>,
    rooms: Slab<Room>,
    metrics: Arc<Metrics>,
    /// The loop's one read buffer (taken out while in use).
    rbuf: Vec<u8>,
    /// Reused while encoding a frame, before it is frozen into an `Rc<[u8]>`.
    scratch: Vec<u8>,
    /// Connections with queued frames, flushed at the end of the turn.
    dirty: Vec<usize>,
    /// Connections with input left to process (read budget used up, or resumed after a pause).
    ready: Vec<usize>,
    /// Slow consumers found during a fan-out, disconnected right after it.
    kicks: Vec<usize>,
    /// (token, serial, deadline) of connections in the handshake, in deadline order.
    handshakes: VecDeque<(usize, u32, Instant)>,
    /// (token, serial, deadline) of connections closing, in deadline order.
    closings: VecDeque<(usize, u32, Instant)>,
    next_serial: u32,
    accept_retry: Option<Instant>,
    /// Set when shutdown began: the loop returns at this instant at the latest.
    grace_until: Option<Instant>,
    shutdown: Shutdown,
    config: ServerConfig,
}

impl Server {
    /// A server with no connections yet: `run` builds it with its registered listener; the
    /// workloads in `bench.rs` build it the same way (so they measure the same structures).
    fn new(
        poll: Poll,
        waker: Arc<Waker>,
        listener: Option<TcpListener>,
        read_len: usize,
        shutdown: Shutdown,
        config: ServerConfig,
    ) -> Server {
        Server {
            poll,
            _waker: waker,
            listener,
            conns: Slab::new(),
            room_ids: HashMap::new(),
            rooms: Slab::new(),
            metrics: Arc::new(Metrics::new(Arch::Epoll.as_str())),
            rbuf: vec![0; read_len],
            scratch: Vec::new(),
            dirty: Vec::new(),
            ready: Vec::new(),
            kicks: Vec::new(),
            handshakes: VecDeque::new(),
            closings: VecDeque::new(),
            next_serial: 0,
            accept_retry: None,
            grace_until: None,
            shutdown,
            config,
        }
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            if self.grace_until.is_none() && self.shutdown.is_triggered() {
                self.begin_shutdown();
            }
            if let Some(until) = self.grace_until {
                if self.conns.is_empty() || Instant::now() >= until {
                    self.finish_all(DisconnectReason::Shutdown);
                    return Ok(());
                }
            }
            let timeout = if self.ready.is_empty() {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {} // shutdown: handled at the top of the loop
                    Token(t) => {
                        if event.is_writable() || event.is_write_closed() || event.is_error() {
                            self.guarded(t, |s| s.flush(t));
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.guarded(t, |s| s.on_readable(t));
                        }
                    }
                }
            }
            for t in std::mem::take(&mut self.ready) {
                self.guarded(t, |s| s.on_readable(t));
            }
            self.flush_dirty();
            self.expire(Instant::now());
        }
    }

    /// Runs one connection's event handler. With `isolate_panics`, a panic closes only that
    /// connection; otherwise it unwinds the loop (and the thread, and every connection).
    fn guarded(&mut self, t: usize, f: impl FnOnce(&mut Server)) {
        if !self.config.isolate_panics {
            f(self);
            return;
        }
        if panic::catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            // Restore what the handler may have had taken out when it unwound.
            if self.rbuf.is_empty() {
                self.rbuf = vec![0; self.config.read_buffer_size.max(MIN_READ_BUFFER)];
            }
            self.kicks.clear();
            self.finish(t, Some(DisconnectReason::Panic));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.handshakes.front().map(|e| e.2),
            self.closings.front().map(|e| e.2),
            self.accept_retry,
            self.grace_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // -----------------------------------------------------------------------------------------
    // Accepting and HTTP.

    fn accept(&mut self) {
        self.accept_retry = None;
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.add_conn(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.metrics.accept_error();
                    tracing::warn!("accept failed: {e}");
                    // Edge-triggered: no new event comes for connections already waiting.
                    self.accept_retry = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream) {
        self.metrics.tcp_accepted();
        let _ = stream.set_nodelay(true);
        let t = self.conns.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(t),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!("could not register a connection: {e}");
            return;
        }
        let (t, serial) = self.insert_conn(stream);
        let deadline = Instant::now() + self.config.handshake_timeout;
        self.handshakes.push_back((t, serial, deadline));
    }

    /// Adds a connection in the handshake (the slab key is the token it was registered with:
    /// `vacant_key`). Returns its token and serial.
    fn insert_conn(&mut self, stream: TcpStream) -> (usize, u32) {
        self.next_serial = self.next_serial.wrapping_add(1);
        let serial = self.next_serial;
        (self.conns.insert(Conn::new(stream, serial)), serial)
    }

    /// The upgrade was answered: the connection is an open WebSocket.
    fn upgraded(&mut self, t: usize) {
        if let Some(conn) = self.conns.get_mut(t) {
            conn.phase = Phase::Open;
            self.metrics.ws_opened();
        }
    }

    /// Reads what is available on a handshaking connection and answers a complete head.
    fn read_head(&mut self, t: usize) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let outcome = self.read_head_with(t, &mut rbuf);
        self.rbuf = rbuf;
        if let Some(leftover) = outcome {
            if !leftover.is_empty() {
                // The client sent its first frames right behind the head.
                self.process(t, leftover);
            }
            // More may wait in the socket (the head read is bounded): read it as WebSocket.
            self.ready.push(t);
        }
    }

    /// Returns the bytes after the head once the connection is upgraded.
    fn read_head_with(&mut self, t: usize, rbuf: &mut [u8]) -> Option<Vec<u8>> {
        loop {
            let conn = self.conns.get_mut(t)?;
            // Never hold more than the head limit (plus one read) for a peer.
            let room = MAX_HEAD_BYTES.saturating_sub(conn.inbuf.len()).max(1);
            let want = room.min(rbuf.len());
            let n = match (&conn.stream).read(&mut rbuf[..want]) {
                Ok(0) => {
                    self.finish(t, None);
                    return None;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.finish(t, None);
                    return None;
                }
            };
            conn.inbuf.extend_from_slice(&rbuf[..n]);
            match http::parse_head(&conn.inbuf) {
                Ok(Head::Partial) => continue,
                Ok(Head::Complete { route, head_len }) => {
                    self.metrics.http_request(route.path());
                    let mut head = std::mem::take(&mut conn.inbuf);
                    if let Route::Upgrade { accept_key } = &route {
                        self.upgraded(t);
                        let response: Rc<[u8]> = http::switching_protocols(accept_key).into();
                        self.enqueue(t, response);
                        head.drain(..head_len);
                        return Some(head);
                    }
                    if let Some(response) = http::route_response(&route, &self.metrics) {
                        self.respond_and_close(t, response);
                    }
                    return None;
                }
                Err(reject) => {
                    self.metrics.http_request(HttpPath::Bad);
                    self.respond_and_close(t, http::reject_response(reject));
                    return None;
                }
            }
        }
    }

    fn respond_and_close(&mut self, t: usize, response: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(t) else {
            return;
        };
        conn.phase = Phase::Http;
        conn.inbuf = Vec::new();
        let serial = conn.serial;
        self.enqueue(t, response.into());
        let deadline = Instant::now() + self.config.close_timeout;
        self.closings.push_back((t, serial, deadline));
    }

    // -----------------------------------------------------------------------------------------
    // Reading WebSocket input.

    fn on_readable(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(t) else {
            return;
        };
        match conn.phase {
            Phase::Handshake => return self.read_head(t),
            Phase::Open | Phase::Closing { .. } => {}
            Phase::Http | Phase::PeerClosed => return self.discard_input(t),
        }
        if conn.paused {
            return;
        }
        // Input left from a pause is processed before reading more.
        if !conn.inbuf.is_empty() {
            let pending = std::mem::take(&mut conn.inbuf);
            self.process(t, pending);
        }
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let mut budget = READS_PER_TURN;
        while let Some(conn) = self.conns.get_mut(t) {
            if conn.paused {
                break;
            }
            if budget == 0 {
                // More may be waiting: come back next turn, after the other connections (a
                // spurious read just returns WouldBlock).
                self.ready.push(t);
                break;
            }
            budget -= 1;
            match (&conn.stream).read(&mut rbuf) {
                Ok(0) => {
                    // EOF without a close frame, unless we were already closing.
                    self.finish(t, Some(DisconnectReason::IoError));
                    break;
                }
                Ok(n) => {
                    if conn.inbuf.is_empty() {
                        self.process_slice(t, &mut rbuf[..n]);
                    } else {
                        let mut pending = std::mem::take(&mut conn.inbuf);
                        pending.extend_from_slice(&rbuf[..n]);
                        self.process(t, pending);
                    }
                }
                // Edge-triggered: drained, the next arrival raises a new event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.finish(t, Some(DisconnectReason::IoError));
                    break;
                }
            }
        }
        self.rbuf = rbuf;
    }

    /// Reads and drops input (plain HTTP after the head, or after the client's close).
    fn discard_input(&mut self, t: usize) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        while let Some(conn) = self.conns.get_mut(t) {
            match (&conn.stream).read(&mut rbuf) {
                Ok(0) => {
                    self.finish(t, None);
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.finish(t, None);
                    break;
                }
            }
        }
        self.rbuf = rbuf;
    }

    /// Processes owned input and keeps what was not consumed.
    fn process(&mut self, t: usize, mut data: Vec<u8>) {
        let used = self.decode_all(t, &mut data);
        if let Some(conn) = self.conns.get_mut(t) {
            if used < data.len() {
                data.drain(..used);
                data.shrink_to_fit();
                conn.inbuf = data;
            }
        }
    }

    /// Processes input in the shared buffer and copies out what was not consumed.
    fn process_slice(&mut self, t: usize, data: &mut [u8]) {
        let used = self.decode_all(t, data);
        if let Some(conn) = self.conns.get_mut(t) {
            if used < data.len() {
                conn.inbuf = data[used..].to_vec();
            }
        }
    }

    /// Decodes and handles complete messages from `data`; returns how many bytes were used.
    fn decode_all(&mut self, t: usize, data: &mut [u8]) -> usize {
        let max = self.config.max_frame_bytes;
        let limit = self.config.outbound_queue;
        let Some(conn) = self.conns.get_mut(t) else {
            return data.len();
        };
        let mut frag = conn.frag.take();
        let mut pos = 0;
        while pos < data.len() {
            let Some(conn) = self.conns.get_mut(t) else {
                return data.len();
            };
            match conn.phase {
                Phase::Open => {}
                Phase::Closing {
                    framing_ok: true, ..
                } => {}
                _ => return data.len(),
            }
            if conn.phase == Phase::Open && conn.out.len() >= limit {
                // Backpressure: this client does not read its replies; stop reading its input.
                conn.paused = true;
                break;
            }
            match frame::decode(&mut data[pos..], &mut frag, max) {
                Ok(Step::NeedMore) => break,
                Ok(Step::Fragment(n)) => pos += n,
                Ok(Step::Message(n, msg)) => {
                    pos += n;
                    self.on_message(t, msg);
                }
                Err(e) => {
                    self.on_frame_error(t, e);
                    return data.len();
                }
            }
        }
        if let Some(conn) = self.conns.get_mut(t) {
            conn.frag = frag;
        }
        pos
    }

    fn on_frame_error(&mut self, t: usize, e: FrameError) {
        let Some(conn) = self.conns.get(t) else {
            return;
        };
        if conn.phase == Phase::Open {
            self.close_fatal(t, Refusal::new(e.code(), e.to_string()), false);
        } else if let Some(conn) = self.conns.get_mut(t) {
            // Garbage while we wait for the client's close: discard input from now on.
            if let Phase::Closing { reason, .. } = conn.phase {
                conn.phase = Phase::Closing {
                    reason,
                    framing_ok: false,
                };
                conn.inbuf = Vec::new();
            }
        }
    }

    fn on_message(&mut self, t: usize, msg: Message<'_>) {
        let Some(conn) = self.conns.get_mut(t) else {
            return;
        };
        if let Phase::Closing { .. } = conn.phase {
            // Waiting for the client's close; everything else is dropped.
            if let Message::Close(..) = msg {
                self.finish(t, None);
            }
            return;
        }
        match msg {
            Message::Text(text) => {
                self.metrics.frame_in();
                self.on_text(t, &text);
            }
            Message::Binary => {
                self.metrics.frame_in();
                self.close_fatal(t, Refusal::binary_frame(), true);
            }
            Message::Ping(payload) => {
                let frame = self.frame(frame::OP_PONG, payload);
                self.enqueue(t, frame);
            }
            Message::Pong => {}
            Message::Close(code, _) => {
                self.leave_all(t);
                let reply = match code {
                    None => Vec::new(),
                    Some(c) => {
                        let c = if frame::is_valid_close_code(c) {
                            c
                        } else {
                            close_code::PROTOCOL_ERROR
                        };
                        c.to_be_bytes().to_vec()
                    }
                };
                let frame = self.frame(frame::OP_CLOSE, &reply);
                if let Some(conn) = self.conns.get_mut(t) {
                    conn.phase = Phase::PeerClosed;
                    conn.inbuf = Vec::new();
                    conn.frag = None;
                    let serial = conn.serial;
                    let deadline = Instant::now() + self.config.close_timeout;
                    self.closings.push_back((t, serial, deadline));
                }
                self.enqueue(t, frame);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The chat protocol.

    fn on_text(&mut self, t: usize, text: &str) {
        let Some(conn) = self.conns.get(t) else {
            return;
        };
        let rooms = Joined {
            room_ids: &self.room_ids,
            joined: &conn.joined,
        };
        match chat::on_text(text, &rooms, Limits::from(&self.config)) {
            Action::Join { room, new } => {
                if new {
                    self.join(t, &room);
                }
                let ack = self.frame(frame::OP_TEXT, chat::joined_frame(&room).as_bytes());
                self.enqueue(t, ack);
            }
            Action::Leave { index, .. } => self.leave(t, index),
            Action::Publish { index, .. } => {
                let rid = self.conns[t].joined[index].0;
                self.fan_out(t, rid, text);
            }
            Action::Refuse(refusal) => self.reply_error(t, refusal),
            Action::Panic => chat::injected_panic(t),
        }
    }

    /// Adds connection `t` to `room`, creating the room.
    fn join(&mut self, t: usize, room: &str) {
        let rid = match self.room_ids.get(room) {
            Some(&rid) => rid,
            None => {
                let rid = self.rooms.insert(Room {
                    name: room.into(),
                    members: Vec::new(),
                }) as u32;
                self.room_ids.insert(room.into(), rid);
                self.metrics.room_created();
                rid
            }
        };
        let members = &mut self.rooms[rid as usize].members;
        let pos = members.len() as u32;
        members.push(t as u32);
        self.conns[t].joined.push((rid, pos));
    }

    /// Leaves the room at `joined[i]`: O(1), by moving the room's last member into the gap.
    fn leave(&mut self, t: usize, i: usize) {
        let Some(conn) = self.conns.get_mut(t) else {
            return;
        };
        let (rid, pos) = conn.joined.swap_remove(i);
        if conn.joined.is_empty() {
            conn.joined = Vec::new();
        }
        let Some(room) = self.rooms.get_mut(rid as usize) else {
            return;
        };
        let pos = pos as usize;
        if pos < room.members.len() {
            room.members.swap_remove(pos);
            if let Some(&moved) = room.members.get(pos) {
                if let Some(m) = self.conns.get_mut(moved as usize) {
                    if let Some(j) = m.joined.iter_mut().find(|j| j.0 == rid) {
                        j.1 = pos as u32;
                    }
                }
            }
        }
        if room.members.is_empty() {
            let room = self.rooms.remove(rid as usize);
            self.room_ids.remove(&room.name);
            self.metrics.room_removed();
        }
    }

    fn leave_all(&mut self, t: usize) {
        while self.conns.get(t).is_some_and(|c| !c.joined.is_empty()) {
            let last = self.conns[t].joined.len() - 1;
            self.leave(t, last);
        }
    }

    /// Frames the received text once and queues that one buffer to every other member.
    fn fan_out(&mut self, t: usize, rid: u32, text: &str) {
        if self
            .rooms
            .get(rid as usize)
            .is_none_or(|r| r.members.len() < 2)
        {
            return;
        }
        let shared = self.frame(frame::OP_TEXT, text.as_bytes());
        let Some(room) = self.rooms.get(rid as usize) else {
            return;
        };
        let mut fan = FanOut::new(&self.config, shared.len());
        for &m in &room.members {
            let m = m as usize;
            if m == t {
                continue;
            }
            let Some(peer) = self.conns.get_mut(m) else {
                continue;
            };
            match fan.offer(peer.out.len(), &mut peer.backlog) {
                Offer::Queue => {}
                Offer::Drop => continue,
                Offer::Kick => {
                    self.kicks.push(m);
                    continue;
                }
            }
            peer.out.push_back(shared.clone());
            if !peer.dirty {
                peer.dirty = true;
                self.dirty.push(m);
            }
        }
        fan.finish(&self.metrics);
        for m in std::mem::take(&mut self.kicks) {
            if self.conns.get(m).is_some_and(|c| c.phase == Phase::Open) {
                self.close_fatal(m, Refusal::slow_consumer(), true);
            }
        }
    }

    fn reply_error(&mut self, t: usize, refusal: Refusal) {
        if refusal.is_fatal() {
            return self.close_fatal(t, refusal, true);
        }
        self.metrics.error_sent(refusal.code);
        let frame = self.frame(frame::OP_TEXT, refusal.frame().as_bytes());
        self.enqueue(t, frame);
    }

    /// Queues the `error` frame and a close frame with the code's close code, leaves every
    /// room, and waits (at most `close_timeout`) for the client's close.
    fn close_fatal(&mut self, t: usize, refusal: Refusal, framing_ok: bool) {
        if !self.conns.get(t).is_some_and(|c| c.phase == Phase::Open) {
            return;
        }
        self.leave_all(t);
        self.metrics.error_sent(refusal.code);
        let error = self.frame(frame::OP_TEXT, refusal.frame().as_bytes());
        self.enqueue(t, error);
        let (cc, why) = (refusal.close_code(), refusal.close_reason());
        self.start_close(t, cc, why, refusal.disconnect_reason(), framing_ok);
    }

    /// Queues our close frame and enters [`Phase::Closing`].
    fn start_close(
        &mut self,
        t: usize,
        close: u16,
        why: &str,
        reason: DisconnectReason,
        framing_ok: bool,
    ) {
        self.scratch.clear();
        frame::encode_close(&mut self.scratch, close, why);
        let frame: Rc<[u8]> = Rc::from(&self.scratch[..]);
        let Some(conn) = self.conns.get_mut(t) else {
            return;
        };
        conn.phase = Phase::Closing { reason, framing_ok };
        conn.paused = false;
        conn.frag = None;
        if !framing_ok {
            conn.inbuf = Vec::new();
        }
        let serial = conn.serial;
        self.closings
            .push_back((t, serial, Instant::now() + self.config.close_timeout));
        self.enqueue(t, frame);
    }

    // -----------------------------------------------------------------------------------------
    // Writing.

    /// Encodes one server frame into a shareable buffer.
    fn frame(&mut self, opcode: u8, payload: &[u8]) -> Rc<[u8]> {
        self.scratch.clear();
        frame::encode_frame(&mut self.scratch, opcode, payload);
        let frame = Rc::from(&self.scratch[..]);
        if self.scratch.capacity() > MIN_READ_BUFFER * 2 {
            self.scratch = Vec::new();
        }
        frame
    }

    /// Queues a frame for `t` (bounded by the callers: fan-out checks the limit, replies stop
    /// input processing once the queue is full) and marks it for the end-of-turn flush.
    fn enqueue(&mut self, t: usize, frame: Rc<[u8]>) {
        let Some(conn) = self.conns.get_mut(t) else {
            return;
        };
        conn.backlog.queued(frame.len());
        self.metrics.outbound_queued(frame.len());
        conn.out.push_back(frame);
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(t);
        }
    }

    fn flush_dirty(&mut self) {
        while !self.dirty.is_empty() {
            for t in std::mem::take(&mut self.dirty) {
                if let Some(conn) = self.conns.get_mut(t) {
                    conn.dirty = false;
                    self.flush(t);
                }
            }
        }
    }

    /// Writes as much of the queue as the socket takes, gathering up to [`IOV_MAX`] frames
    /// per `writev(2)`; then applies what an emptied queue means in the connection's phase.
    fn flush(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(t) else {
            return;
        };
        let mut text_frames = 0u64;
        let mut released = 0usize;
        let mut failed = false;
        while !conn.out.is_empty() {
            let mut iov = [IoSlice::new(&[]); IOV_MAX];
            let mut n_iov = 0;
            for (i, f) in conn.out.iter().take(IOV_MAX).enumerate() {
                let skip = if i == 0 { conn.out_off as usize } else { 0 };
                iov[i] = IoSlice::new(&f[skip..]);
                n_iov += 1;
            }
            match (&conn.stream).write_vectored(&iov[..n_iov]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(mut n) => {
                    while n > 0 {
                        let Some(front) = conn.out.front() else {
                            break;
                        };
                        let left = front.len() - conn.out_off as usize;
                        if n >= left {
                            n -= left;
                            if front.first() == Some(&(0x80 | frame::OP_TEXT)) {
                                text_frames += 1;
                            }
                            released += front.len();
                            conn.out.pop_front();
                            conn.out_off = 0;
                        } else {
                            // Frames are at most max_frame_bytes + headers, far below 4 GiB.
                            conn.out_off += n as u32;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if text_frames > 0 {
            self.metrics.frames_out(text_frames);
        }
        conn.backlog.written(released);
        self.metrics.outbound_released(released);
        if failed {
            return self.finish(t, Some(DisconnectReason::IoError));
        }
        if !conn.out.is_empty() {
            return;
        }
        // Idle connections hold no queue allocation.
        conn.out = VecDeque::new();
        match conn.phase {
            Phase::Http | Phase::PeerClosed => {
                let _ = conn.stream.shutdown(HalfClose::Write);
                self.finish(t, None);
            }
            Phase::Closing { .. } if !conn.write_shut => {
                // The server closes its side first (TIME_WAIT stays here, not on clients).
                conn.write_shut = true;
                let _ = conn.stream.shutdown(HalfClose::Write);
            }
            _ => {
                if conn.paused {
                    conn.paused = false;
                    self.ready.push(t);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Ending connections, timers, shutdown.

    /// Removes connection `t`, leaving its rooms and counting the disconnect. `reason` is used
    /// for an open WebSocket; a closing one is counted with the reason it is closing for, a
    /// client-initiated close as `client_close`, and plain HTTP not at all.
    fn finish(&mut self, t: usize, reason: Option<DisconnectReason>) {
        self.leave_all(t);
        let Some(mut conn) = self.conns.try_remove(t) else {
            return;
        };
        self.metrics.outbound_released(conn.backlog.release());
        let counted = match conn.phase {
            Phase::Handshake | Phase::Http => None,
            Phase::Open => Some(reason.unwrap_or(DisconnectReason::IoError)),
            Phase::Closing { reason: r, .. } => match reason {
                Some(DisconnectReason::Panic) => Some(DisconnectReason::Panic),
                _ => Some(r),
            },
            Phase::PeerClosed => Some(match reason {
                Some(DisconnectReason::Panic) => DisconnectReason::Panic,
                _ => DisconnectReason::ClientClose,
            }),
        };
        if let Some(r) = counted {
            self.metrics.ws_closed(r);
        }
        let mut stream = conn.stream;
        let _ = self.poll.registry().deregister(&mut stream);
    }

    /// Applies expired handshake and close deadlines, and retries a failed accept. Entries of
    /// connections that moved on are dropped on the way, so the front is always live and the
    /// loop does not wake for them.
    fn expire(&mut self, now: Instant) {
        while let Some(&(t, serial, deadline)) = self.handshakes.front() {
            let live = self
                .conns
                .get(t)
                .is_some_and(|c| c.serial == serial && c.phase == Phase::Handshake);
            if live && deadline > now {
                break;
            }
            self.handshakes.pop_front();
            if live {
                self.metrics.handshake_timeout();
                self.finish(t, None);
            }
        }
        while let Some(&(t, serial, deadline)) = self.closings.front() {
            let live = self.conns.get(t).is_some_and(|c| c.serial == serial);
            if live && deadline > now {
                break;
            }
            self.closings.pop_front();
            if live {
                self.finish(t, None);
            }
        }
        for q in [&mut self.handshakes, &mut self.closings] {
            if q.is_empty() && q.capacity() > 1024 {
                *q = VecDeque::new();
            }
        }
        if self.accept_retry.is_some_and(|at| at <= now) {
            self.accept();
        }
    }

    /// Stops accepting and sends close 1001 to every WebSocket client.
    fn begin_shutdown(&mut self) {
        self.grace_until = Some(Instant::now() + self.config.shutdown_grace);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.accept_retry = None;
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for t in tokens {
            match self.conns[t].phase {
                Phase::Handshake => self.finish(t, None),
                Phase::Open => {
                    self.leave_all(t);
                    self.start_close(
                        t,
                        close_code::GOING_AWAY,
                        "server shutting down",
                        DisconnectReason::Shutdown,
                        true,
                    );
                }
                Phase::Http | Phase::Closing { .. } | Phase::PeerClosed => {}
            }
        }
        self.flush_dirty();
    }

    /// Drops every remaining connection (the grace period is over).
    fn finish_all(&mut self, reason: DisconnectReason) {
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for t in tokens {
            self.finish(t, Some(reason));
        }
    }
}
