//! One connection on one worker: the HTTP head (bounded, under the handshake deadline), the
//! upgrade, and the WebSocket session to its end.
//!
//! The socket is switched to non-blocking mode and the worker sleeps in `poll(2)` on it and on
//! its doorbell (see the module doc of `thread_pool`). Each wake-up: look at the control flags
//! (kick, shutdown), finish a blocked write, drain the outbound queue into tungstenite's write
//! buffer, read up to [`READ_BUDGET`] messages, flush once. While a write is blocked the worker
//! stops reading its client (backpressure, as a blocked `write` would) and the queue absorbs
//! fan-out until the slow-consumer policy applies. The [`Conn`] guard removes the connection
//! from its rooms on every exit, including unwinding from a panic.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use chatbench_protocol::close_code;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role};
use tungstenite::{Error as WsError, Message, Utf8Bytes, WebSocket};

use super::pool::Job;
use super::sys::{self, Waker};
use super::{Peer, Shared};
use crate::chat::{self, Action, FanOut, JoinedRooms, Limits, Offer, Refusal};
use crate::http::{self, Head, Route, MAX_HEAD_BYTES};
use crate::metrics::{DisconnectReason, HttpPath};
use crate::rooms::ConnId;

#[doc(hidden)]
pub mod bench;

type Ws = WebSocket<TcpStream>;

/// Messages read per wake-up before the queue gets drained again, so a client that floods
/// cannot starve its own deliveries.
const READ_BUDGET: usize = 64;

/// Serves one accepted connection to its end.
pub(super) fn serve(job: Job, shared: &Arc<Shared>, waker: &Arc<Waker>) {
    let Job { stream, accepted } = job;
    let _ = stream.set_nodelay(true);
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let deadline = accepted + shared.config.handshake_timeout;
    let Some(leftover) = http_phase(&stream, deadline, shared, waker) else {
        return;
    };
    let ws = WebSocket::from_partially_read(stream, leftover, Role::Server, Some(shared.ws_config));
    session(ws, shared, waker);
}

/// Reads the request head (at most [`MAX_HEAD_BYTES`], until `deadline`) and answers it.
/// Returns the bytes read past the head when it was a WebSocket upgrade (101 already sent).
fn http_phase(
    mut stream: &TcpStream,
    deadline: Instant,
    shared: &Shared,
    waker: &Waker,
) -> Option<Vec<u8>> {
    let metrics = &shared.metrics;
    let fd = stream.as_raw_fd();
    let mut buf = Vec::new();
    let (route, head_len) = loop {
        let old = buf.len();
        buf.resize((old + 1024).min(MAX_HEAD_BYTES), 0);
        match stream.read(&mut buf[old..]) {
            Ok(0) => return None,
            Ok(n) => buf.truncate(old + n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(old);
                let ready = sys::wait(fd, libc::POLLIN, Some(waker), Some(deadline)).ok()?;
                if ready.timed_out {
                    metrics.handshake_timeout();
                    return None;
                }
                if shared.shutdown.is_triggered() {
                    return None;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf.truncate(old);
                continue;
            }
            Err(_) => return None,
        }
        match http::parse_head(&buf) {
            Ok(Head::Partial) => continue,
            Ok(Head::Complete { route, head_len }) => break (route, head_len),
            Err(reject) => {
                metrics.http_request(HttpPath::Bad);
                respond(stream, &http::reject_response(reject), shared);
                return None;
            }
        }
    };
    metrics.http_request(route.path());
    if let Route::Upgrade { accept_key } = &route {
        let close_by = Instant::now() + shared.config.close_timeout;
        write_all(stream, &http::switching_protocols(accept_key), close_by).ok()?;
        buf.drain(..head_len);
        return Some(buf);
    }
    if let Some(response) = http::route_response(&route, metrics) {
        respond(stream, &response, shared);
    }
    None
}

/// Writes a plain HTTP response and half-closes (the connection closes after it).
fn respond(stream: &TcpStream, response: &[u8], shared: &Shared) {
    let close_by = Instant::now() + shared.config.close_timeout;
    if write_all(stream, response, close_by).is_ok() {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}

/// `write_all` on the non-blocking socket, waiting for room until `deadline`.
fn write_all(mut stream: &TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ready = sys::wait(stream.as_raw_fd(), libc::POLLOUT, None, Some(deadline))?;
                if ready.timed_out {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The WebSocket session: registration, the loop, and cleanup (the [`Conn`] guard).
fn session(mut ws: Ws, shared: &Arc<Shared>, waker: &Arc<Waker>) {
    let mut conn = Conn::open(shared, waker);
    let reason = conn.run(&mut ws);
    conn.finish(reason);
}

/// A connection's own state. Its `Drop` guarantees that room membership is cleaned up and the
/// end is counted, also when the handler panics (then the reason is `panic`).
struct Conn {
    id: ConnId,
    peer: Arc<Peer>,
    shared: Arc<Shared>,
    /// Rooms this connection is in.
    joined: JoinedRooms,
    /// Members to ring after a fan-out (collected under the shard lock, rung after it).
    wake: Vec<Arc<Peer>>,
    finished: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.finished {
            let reason = if std::thread::panicking() {
                DisconnectReason::Panic
            } else {
                DisconnectReason::Shutdown
            };
            self.finish(reason);
        }
    }
}

/// `Some(reason)` ends the session.
type Flow = Option<DisconnectReason>;

/// What a write into tungstenite did.
enum Wrote {
    /// Written, or buffered behind a full socket (then the caller must wait for `POLLOUT`).
    Done { blocked: bool },
    /// The connection failed.
    Failed,
}

fn classify(r: Result<(), WsError>) -> Wrote {
    match r {
        Ok(()) => Wrote::Done { blocked: false },
        // tungstenite keeps the frame in its write buffer and retries on the next flush.
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
            Wrote::Done { blocked: true }
        }
        Err(_) => Wrote::Failed,
    }
}

impl Conn {
    /// A new WebSocket connection served by the worker that owns `waker`: its id and queue,
    /// counted (the gate's workloads open theirs here too).
    fn open(shared: &Arc<Shared>, waker: &Arc<Waker>) -> Conn {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        shared.metrics.ws_opened();
        Conn {
            id,
            peer: Arc::new(Peer::new(waker.clone())),
            shared: shared.clone(),
            joined: JoinedRooms::new(),
            wake: Vec::new(),
            finished: false,
        }
    }

    fn finish(&mut self, reason: DisconnectReason) {
        self.leave_all();
        self.peer.release(&self.shared.metrics);
        self.shared.metrics.ws_closed(reason);
        self.finished = true;
    }

    fn leave_all(&mut self) {
        for room in self.joined.drain() {
            self.shared.rooms.leave(&room, self.id);
        }
    }

    fn run(&mut self, ws: &mut Ws) -> DisconnectReason {
        let fd = ws.get_ref().as_raw_fd();
        let mut write_blocked = false;
        let mut more_input = true;
        loop {
            // Cleared before looking at the queue: a frame queued after this rings again.
            self.peer.notified.store(false, Ordering::SeqCst);
            if self.peer.kicked.load(Ordering::Relaxed) {
                return self.close_fatal(ws, Refusal::slow_consumer(), false);
            }
            if self.shared.shutdown.is_triggered() {
                return self.close_going_away(ws);
            }
            if write_blocked {
                match classify(ws.flush()) {
                    Wrote::Done { blocked } => write_blocked = blocked,
                    Wrote::Failed => return DisconnectReason::IoError,
                }
            }
            if !write_blocked {
                match self.drain_queue(ws) {
                    Some(blocked) => write_blocked = blocked,
                    None => return DisconnectReason::IoError,
                }
            }
            if !write_blocked && more_input {
                more_input = false;
                for n in 1..=READ_BUDGET {
                    match ws.read() {
                        Ok(msg) => {
                            if let Some(reason) = self.on_message(ws, msg) {
                                return reason;
                            }
                            more_input = n == READ_BUDGET;
                        }
                        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return self.on_read_error(ws, e),
                    }
                }
                // Replies written while reading leave in one write.
                match classify(ws.flush()) {
                    Wrote::Done { blocked } => write_blocked = blocked,
                    Wrote::Failed => return DisconnectReason::IoError,
                }
            }
            if more_input && !write_blocked {
                continue; // input already buffered in user space: no need to sleep
            }
            let events = if write_blocked {
                libc::POLLOUT
            } else {
                libc::POLLIN
            };
            match sys::wait(fd, events, Some(&self.peer.waker), None) {
                Ok(ready) => more_input = ready.socket != 0,
                Err(_) => return DisconnectReason::IoError,
            }
        }
    }

    /// Moves queued frames into tungstenite's write buffer until the queue is empty or the
    /// socket is full, then flushes. `Some(blocked)`, or `None` if the connection failed.
    fn drain_queue(&mut self, ws: &mut Ws) -> Option<bool> {
        let mut written = 0u64;
        let mut bytes = 0usize;
        let mut blocked = false;
        while let Some(frame) = self.peer.pop() {
            bytes += frame.len();
            match classify(ws.write(Message::Text(frame))) {
                Wrote::Done { blocked: b } => {
                    written += 1;
                    if b {
                        blocked = true;
                        break;
                    }
                }
                Wrote::Failed => {
                    self.shared.metrics.outbound_released(bytes);
                    return None;
                }
            }
        }
        self.shared.metrics.outbound_released(bytes);
        if written > 0 {
            self.shared.metrics.frames_out(written);
            if !blocked {
                match classify(ws.flush()) {
                    Wrote::Done { blocked: b } => blocked = b,
                    Wrote::Failed => return None,
                }
            }
        }
        Some(blocked)
    }

    fn on_message(&mut self, ws: &mut Ws, msg: Message) -> Flow {
        let metrics = &self.shared.metrics;
        match msg {
            Message::Text(text) => {
                metrics.frame_in();
                self.on_text(ws, text)
            }
            Message::Binary(_) => {
                metrics.frame_in();
                Some(self.close_fatal(ws, Refusal::binary_frame(), false))
            }
            // Ping: tungstenite queues the pong and sends it on the next read or flush. Close:
            // it queues the reply, and the next read reports the end.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => None,
        }
    }

    fn on_read_error(&mut self, ws: &mut Ws, e: WsError) -> DisconnectReason {
        let refusal = match crate::ws_error::classify_read_error(e) {
            crate::ws_error::ReadFailure::Gone(reason) => return reason,
            crate::ws_error::ReadFailure::Fatal(refusal) => refusal,
        };
        self.close_fatal(ws, refusal, true)
    }

    fn on_text(&mut self, ws: &mut Ws, text: Utf8Bytes) -> Flow {
        let limits = Limits::from(&self.shared.config);
        match chat::on_text(&text, &self.joined, limits) {
            Action::Join { room, new } => {
                if new {
                    self.shared.rooms.join(&room, self.id, self.peer.clone());
                    self.joined.add(&room);
                }
                self.reply(ws, chat::joined_frame(&room))
            }
            Action::Leave { room, index } => {
                self.joined.remove(index);
                self.shared.rooms.leave(&room, self.id);
                None
            }
            Action::Publish { room, .. } => {
                self.fan_out(&room, &text);
                None
            }
            Action::Refuse(refusal) => self.reply_error(ws, refusal),
            // Not caught: the panic unwinds this worker thread (see `pool::WorkerGuard`).
            Action::Panic => chat::injected_panic(self.id),
        }
    }

    /// Queues the received frame, unchanged and uncopied (a refcount), to every other member
    /// of `room` as [`FanOut::offer`] rules, then rings the members that need it once the
    /// shard lock is released.
    fn fan_out(&mut self, room: &str, frame: &Utf8Bytes) {
        let mut fan = FanOut::new(&self.shared.config, frame.len());
        let me = self.id;
        let wake = &mut self.wake;
        self.shared.rooms.for_each_member(room, |id, peer| {
            if id == me {
                return;
            }
            let mut guard = peer.lock();
            let q = &mut *guard;
            let offer = fan.offer(q.frames.len(), &mut q.backlog);
            if offer == Offer::Queue {
                q.frames.push_back(frame.clone());
            }
            drop(guard);
            match offer {
                Offer::Queue => {
                    if !peer.notified.swap(true, Ordering::SeqCst) {
                        wake.push(peer.clone());
                    }
                }
                Offer::Drop => {}
                Offer::Kick => {
                    if !peer.kicked.swap(true, Ordering::Relaxed) {
                        wake.push(peer.clone());
                    }
                }
            }
        });
        for peer in self.wake.drain(..) {
            peer.waker.wake();
        }
        if self.wake.capacity() > 256 {
            self.wake.shrink_to(0);
        }
        fan.finish(&self.shared.metrics);
    }

    /// Writes one reply frame into tungstenite's buffer; the session flushes after the read
    /// batch. Acks and errors bypass the queue: they answer this client.
    fn reply(&self, ws: &mut Ws, text: String) -> Flow {
        match classify(ws.write(Message::text(text))) {
            Wrote::Done { .. } => {
                self.shared.metrics.frames_out(1);
                None
            }
            Wrote::Failed => Some(DisconnectReason::IoError),
        }
    }

    /// Sends an `error` frame; for fatal codes, closes with the code's close code.
    fn reply_error(&mut self, ws: &mut Ws, refusal: Refusal) -> Flow {
        if refusal.is_fatal() {
            return Some(self.close_fatal(ws, refusal, false));
        }
        self.shared.metrics.error_sent(refusal.code);
        self.reply(ws, refusal.frame())
    }

    /// Sends the `error` frame and a close frame with the code's close code, then waits (at
    /// most `close_timeout`) for the client to go. `stream_ended`: after a read error
    /// tungstenite's input state is not trustworthy, so half-close the socket and discard raw
    /// input until EOF; the client still reads our close frame instead of a reset.
    fn close_fatal(
        &mut self,
        ws: &mut Ws,
        refusal: Refusal,
        stream_ended: bool,
    ) -> DisconnectReason {
        self.leave_all();
        let metrics = &self.shared.metrics;
        metrics.error_sent(refusal.code);
        let deadline = Instant::now() + self.shared.config.close_timeout;
        if let Wrote::Done { .. } = classify(ws.write(Message::text(refusal.frame()))) {
            metrics.frames_out(1);
        }
        let close = CloseFrame {
            code: CloseCode::from(refusal.close_code()),
            reason: refusal.close_reason().into(),
        };
        let _ = ws.close(Some(close));
        if stream_ended {
            if flush_until(ws, deadline) {
                drain_raw(ws.get_mut(), deadline);
            }
        } else {
            finish_close(ws, deadline);
        }
        refusal.disconnect_reason()
    }

    /// Shutdown: close 1001 and wait (at most `close_timeout`) for the client's answer.
    fn close_going_away(&mut self, ws: &mut Ws) -> DisconnectReason {
        self.leave_all();
        let frame = CloseFrame {
            code: CloseCode::from(close_code::GOING_AWAY),
            reason: "server shutting down".into(),
        };
        let _ = ws.close(Some(frame));
        finish_close(ws, Instant::now() + self.shared.config.close_timeout);
        DisconnectReason::Shutdown
    }
}

/// Flushes tungstenite's buffer, waiting for the socket until `deadline`; whether it emptied.
fn flush_until(ws: &mut Ws, deadline: Instant) -> bool {
    let fd = ws.get_ref().as_raw_fd();
    loop {
        match ws.flush() {
            Ok(()) | Err(WsError::ConnectionClosed) => return true,
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
        match sys::wait(fd, libc::POLLOUT, None, Some(deadline)) {
            Ok(r) if !r.timed_out => {}
            _ => return false,
        }
    }
}

/// After our close frame: keep flushing and reading until the client's close (tungstenite then
/// reports the end), EOF, an error, or `deadline`.
fn finish_close(ws: &mut Ws, deadline: Instant) {
    let fd = ws.get_ref().as_raw_fd();
    while Instant::now() < deadline {
        let want_out = match ws.flush() {
            Ok(()) => false,
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(_) => return,
        };
        match ws.read() {
            Ok(_) => continue,
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        let events = libc::POLLIN | if want_out { libc::POLLOUT } else { 0 };
        match sys::wait(fd, events, None, Some(deadline)) {
            Ok(r) if !r.timed_out => {}
            _ => return,
        }
    }
}

/// Half-closes and discards input until EOF or `deadline`.
fn drain_raw(stream: &mut TcpStream, deadline: Instant) {
    if stream.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let fd = stream.as_raw_fd();
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match sys::wait(fd, libc::POLLIN, None, Some(deadline)) {
                    Ok(r) if !r.timed_out => {}
                    _ => return,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
