//! The epoll receive path: receive-only connections read by a few OS threads, each one mio
//! readiness loop over many sockets, instead of a tokio task and a wake-up per message.
//!
//! A connection does its set-up conversation (handshake, join) on the tokio path as always;
//! then [`hand_over`] decides whether it moves here (`[client] receive_path`, [`applies`]):
//! plain `ws://`, role receiver or sender, the `chatbench` profile, no reconnects, not the
//! poisoner. A sender's write side goes to the pacer ([`crate::tx`]); a worker reads it.
//! What tungstenite already holds is read out first, and the bytes of a frame it had only
//! partly read come along ([`tap`] follows them, as tungstenite does not give them back); a
//! connection in the middle of a fragmented message stays on the tokio path. Then the bare
//! socket goes to a worker
//! ([`worker`]) and the connection's task parks, without a wake-up, until the connection ends
//! (counted as the tokio path counts it) or the run stops, when the socket comes back to the
//! task and is closed politely by the same code as every other connection.
//!
//! Every complete text message is judged by the engine's own `on_text` ([`conn`]), so the
//! latency histogram, loss, duplicates and echoes mean the same on both paths. Frames are
//! decoded here ([`frame`]): pings are answered, a close is counted under its code, fragmented
//! messages are put together within `max_message_size`, and an oversize frame or a protocol
//! error ends the connection as a `reset`, as on the tokio path. Each read is a `recvmsg` that
//! brings the kernel's receive time ([`stamp`]): the receive lag (read return minus kernel
//! arrival) is recorded beside the send lag.

pub mod conn;
pub mod frame;
pub mod stamp;
pub mod tap;
pub mod worker;

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::engine::{on_text, Phase, Receiver, Shared};
use crate::plan::{ConnPlan, Role};
use crate::target::Transport;
use chatbench_model::profile::ProtocolKind;
use chatbench_model::scenario::{ReceivePath, SendPath};
use conn::Conn;
use tap::Tapped;
use worker::{Command, Worker};

/// Frames read out of tungstenite's buffer before a hand-over; past it the connection stays on
/// the tokio path (a server that talks that much unasked is not a receive-only peer).
const DRAIN_LIMIT: usize = 64;

/// Why a connection left the epoll path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The run stops: the task closes it politely.
    Stop,
    /// The server closed it or it broke (counted in `closed_by_server`).
    Gone,
}

/// A connection coming back from a worker.
pub struct Ended {
    /// Why.
    pub exit: Exit,
    /// Its socket.
    pub stream: std::net::TcpStream,
}

/// What became of a connection offered to the epoll path.
pub enum Hand<S> {
    /// Not for the epoll path: its task drives it as before.
    Kept(WebSocketStream<S>),
    /// It rode the epoll path until the run stopped; back to be closed politely.
    Stopped(WebSocketStream<S>),
    /// The server closed it or it broke while here (counted).
    Gone,
}

/// The epoll path's threads of one engine, started on the first hand-over.
pub struct Pool {
    threads: u32,
    workers: OnceLock<Vec<WorkerHandle>>,
    next: AtomicUsize,
    stopping: AtomicBool,
    /// Whether the stop watcher ([`Pool::watch_stop`]) runs.
    watching: AtomicBool,
    handed: AtomicU64,
}

struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    waker: mio::Waker,
}

impl Pool {
    /// A pool of `threads` workers (none started yet).
    pub fn new(threads: u32) -> Pool {
        Pool {
            threads: threads.max(1),
            workers: OnceLock::new(),
            next: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            handed: AtomicU64::new(0),
        }
    }

    /// Receive-only connections handed over so far (senders are counted by the send path).
    pub fn handed(&self) -> u64 {
        self.handed.load(Ordering::Relaxed)
    }

    fn workers(&self) -> &[WorkerHandle] {
        self.workers.get_or_init(|| {
            (0..self.threads)
                .filter_map(|i| match start_worker(i) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::warn!("receive path: worker {i} did not start: {e}");
                        None
                    }
                })
                .collect()
        })
    }

    /// Gives `conn` to the next worker (round robin); `Err` gives it back if none runs.
    pub(crate) fn add(&self, shared: Arc<Shared>, conn: Box<Conn>) -> Result<(), Box<Conn>> {
        let workers = self.workers();
        if workers.is_empty() {
            return Err(conn);
        }
        let w = &workers[self.next.fetch_add(1, Ordering::Relaxed) % workers.len()];
        let receiver = !conn.is_sender();
        if let Err(mpsc::SendError(cmd)) = w.commands.send(Command::Add(shared, conn)) {
            // The worker's thread is gone: the connection comes back.
            return match cmd {
                Command::Add(_, conn) => Err(conn),
                Command::StopAll => Ok(()),
            };
        }
        let _ = w.waker.wake();
        if receiver {
            self.handed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Starts, once, the task that watches the run's phase for the pool: at `Stop` (or when
    /// the phase's sender is gone) it asks every worker to hand its connections back. One
    /// waiter per engine instead of one per parked connection.
    fn watch_stop(&self, shared: &Arc<Shared>) {
        if self.watching.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut phase = shared.phase();
        let shared = Arc::downgrade(shared);
        tokio::spawn(async move {
            // `Err`: the sender is gone, the run is over all the same.
            let _ = phase.wait_for(|p| *p == Phase::Stop).await;
            if let Some(shared) = shared.upgrade() {
                shared.rx.stop_all();
            }
        });
    }

    /// The run stops: every worker hands its connections back (once).
    fn stop_all(&self) {
        if self.stopping.swap(true, Ordering::Relaxed) {
            return;
        }
        for w in self.workers.get().map(Vec::as_slice).unwrap_or_default() {
            let _ = w.commands.send(Command::StopAll);
            let _ = w.waker.wake();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Dropping the senders ends each worker's loop at its next wake-up: wake it.
        for w in self.workers.take().unwrap_or_default() {
            let _ = w.waker.wake();
        }
    }
}

fn start_worker(i: u32) -> std::io::Result<WorkerHandle> {
    let (tx, rx) = mpsc::channel();
    let seed = u64::from(i) ^ crate::control::unix_us() as u64;
    let (worker, waker) = Worker::new(rx, i, seed)?;
    std::thread::Builder::new()
        .name(format!("chatbench-rx-{i}"))
        .spawn(move || worker.run())?;
    Ok(WorkerHandle {
        commands: tx,
        waker,
    })
}

/// Whether connection `plan` reads on the epoll path (its transport aside: `ws://` only); a
/// sender's writes then go through the pacer ([`crate::tx`]).
pub fn applies(shared: &Shared, plan: ConnPlan) -> bool {
    let s = &shared.scenario;
    s.client.receive_path != ReceivePath::Tokio
        && match plan.role {
            Role::Receiver => true,
            Role::Sender => s.client.send_path == SendPath::Auto,
            Role::Slow | Role::Idle => false,
        }
        && plan.room.is_some()
        && s.protocol == ProtocolKind::Chatbench
        && !s.reconnects()
        && shared.poisoner != Some(plan.index)
}

/// Offers a set-up connection to the epoll path: when it [`applies`], reads out what
/// tungstenite already holds, hands the socket to a worker, and waits (parked) until the
/// connection ends or the run stops.
pub async fn hand_over<S: Transport>(
    shared: &Arc<Shared>,
    plan: ConnPlan,
    ws: WebSocketStream<S>,
) -> Hand<S> {
    if S::TLS {
        return Hand::Kept(ws);
    }
    let mut ws = match cast::<_, WebSocketStream<Tapped>>(ws) {
        Ok(ws) => ws,
        Err(ws) => return Hand::Kept(ws),
    };
    if !applies(shared, plan) {
        ws.get_mut().finish();
        return keep(ws);
    }
    let mut receiver = Receiver::new(shared);
    match drain(shared, plan, &mut receiver, &mut ws).await {
        Drained::Empty => {}
        Drained::Busy => {
            ws.get_mut().finish();
            return keep(ws);
        }
        Drained::Gone => return Hand::Gone,
    }
    // What tungstenite holds now is the start of one frame, which the tap kept.
    let Some(partial) = ws.get_mut().finish() else {
        return keep(ws);
    };
    let std = match ws.into_inner().into_inner().into_std() {
        Ok(s) => s,
        Err(_) => {
            shared.stats.closed_by_server.add("reset");
            return Hand::Gone;
        }
    };
    // The kernel timestamps what arrives from now on (a socket that refuses is read as before:
    // its reads are timed to their return and counted as unstamped).
    if let Err(e) = stamp::enable(&std) {
        tracing::debug!("receive path: no kernel receive timestamps: {e}");
    }
    let link = crate::tx::attach(shared, plan, &std);
    let (done, ticket) = oneshot::channel();
    let mut conn = Conn::new(
        mio::net::TcpStream::from_std(std),
        plan,
        receiver,
        partial,
        done,
    );
    if let Some(link) = &link {
        conn = conn.with_link(link.clone());
    }
    if let Err(conn) = shared.rx.add(shared.clone(), Box::new(conn)) {
        // No worker runs: back to the tokio path.
        let conn = *conn;
        return match rebuild(shared, conn.stream.into()).await {
            Some(ws) => keep(ws),
            None => Hand::Gone,
        };
    }
    if let Some(link) = &link {
        crate::tx::publish(shared, plan, link);
    }
    let ended = ride(shared, ticket).await;
    let gone = !matches!(
        ended,
        Some(Ended {
            exit: Exit::Stop,
            ..
        })
    );
    // A sender's write side closes first (nothing more goes out; what it sent is final).
    let clean = link.is_none_or(|l| crate::tx::detach(shared, plan, &l, gone));
    match ended {
        Some(Ended {
            exit: Exit::Stop,
            stream,
        }) if clean => match rebuild(shared, stream).await.map(cast) {
            Some(Ok(ws)) => Hand::Stopped(ws),
            _ => Hand::Gone,
        },
        // A frame left half-written at the stop: no polite close over it.
        Some(Ended {
            exit: Exit::Stop, ..
        }) => Hand::Gone,
        Some(Ended {
            exit: Exit::Gone, ..
        }) => Hand::Gone,
        None => {
            shared.stats.closed_by_server.add("reset");
            Hand::Gone
        }
    }
}

/// Waits, parked, until the worker gives the connection back (it ends, or the run stops and
/// the pool's stop watcher asks every worker to). `None` if the worker is gone without it.
///
/// A parked connection does not watch the phase itself: a phase change would wake every one
/// of them (tens of thousands of tasks per agent, a million in a fleet, at the same instant on
/// every agent), which stalled the senders for seconds at the window's start.
async fn ride(shared: &Arc<Shared>, ticket: oneshot::Receiver<Ended>) -> Option<Ended> {
    shared.rx.watch_stop(shared);
    ticket.await.ok()
}

enum Drained {
    /// Tungstenite holds no complete frame: the socket can move.
    Empty,
    /// The server keeps talking: stay on the tokio path.
    Busy,
    /// It ended (counted).
    Gone,
}

/// Reads out, as the tokio path would, every frame tungstenite can give without waiting.
async fn drain(
    shared: &Shared,
    plan: ConnPlan,
    receiver: &mut Receiver,
    ws: &mut WebSocketStream<Tapped>,
) -> Drained {
    for _ in 0..DRAIN_LIMIT {
        let Some(item) = ws.next().now_or_never() else {
            return Drained::Empty;
        };
        match item {
            Some(Ok(Message::Text(t))) => {
                if let Some(reply) = on_text(shared, plan, receiver, &t) {
                    if ws.send(Message::text(reply.into_owned())).await.is_err() {
                        return Drained::Gone;
                    }
                }
            }
            Some(Ok(Message::Close(f))) => {
                let label = f
                    .map(|f| u16::from(f.code).to_string())
                    .unwrap_or_else(|| "none".into());
                shared.stats.closed_by_server.add(&label);
                return Drained::Gone;
            }
            Some(Ok(Message::Binary(b))) => shared
                .stats
                .bad_frame(&format!("<binary frame, {} bytes>", b.len())),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                shared.stats.closed_by_server.add("reset");
                return Drained::Gone;
            }
        }
    }
    Drained::Busy
}

/// A socket back from the epoll path as a WebSocket again (for the polite close at the end).
async fn rebuild(shared: &Shared, stream: std::net::TcpStream) -> Option<WebSocketStream<Tapped>> {
    let tcp = Tapped::plain(TcpStream::from_std(stream).ok()?);
    Some(WebSocketStream::from_raw_socket(tcp, WsRole::Client, Some(shared.ws_config())).await)
}

fn keep<S: Transport>(ws: WebSocketStream<Tapped>) -> Hand<S> {
    match cast(ws) {
        Ok(ws) => Hand::Kept(ws),
        Err(_) => Hand::Gone,
    }
}

/// `a` as a `B` when they are the same type (the engine's transports are chosen per run).
fn cast<A: 'static, B: 'static>(a: A) -> Result<B, A> {
    let mut slot = Some(a);
    if let Some(b) = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<B>>()
        .and_then(Option::take)
    {
        return Ok(b);
    }
    match slot {
        Some(a) => Err(a),
        None => unreachable!("taken only when it was a B"),
    }
}

#[cfg(test)]
mod tests;
