//! The `thread-pool` architecture: blocking I/O on a bounded pool of OS threads, one connection
//! per worker for the connection's whole life (the Tomcat blocking connector / Puma model).
//! No async runtime is involved: `std::net`, `std::thread`, tungstenite's synchronous API.
//!
//! This module owns the model's three parts:
//!
//! - **the acceptor** ([`run`], on the calling thread): accepts, and hands each connection to
//!   the pool; it sleeps in `poll(2)` on the listener and a doorbell that shutdown rings, with a
//!   timeout at the next waiting connection's `pool_wait` deadline.
//! - **the pool** ([`pool`]): at most `pool_size` workers of `thread_stack_bytes` each, spawned
//!   on demand and kept. With every worker busy a connection waits up to `pool_wait` in a
//!   bounded queue, then gets `503 Service Unavailable` (`chatbench_pool_rejections_total`).
//!   A worker that dies of a panic is replaced by its drop guard.
//! - **the connection** ([`conn`]): HTTP head, upgrade, the WebSocket session and its cleanup.
//!
//! # Fan-out: the owner writes, senders only queue
//!
//! Each connection has a bounded outbound queue ([`Peer::queue`], `outbound_queue` frames).
//! A sender's worker pushes a refcounted handle to the *received* frame (never re-encoded)
//! into every other member's queue under the room's shard lock, applies the slow-consumer
//! policy when a queue is full, and rings the member's doorbell (an `eventfd` per worker,
//! rung once per batch thanks to [`Peer::notified`]) after releasing the lock. Only the owning
//! worker ever writes to a socket: it drains everything queued into tungstenite's write
//! buffer and flushes once, so frames that arrived together leave in one `write(2)`.
//!
//! Why not the two textbook alternatives: a short read timeout to poll the queue wakes every
//! idle thread 50–200 times a second (5,000 idle connections would burn cores doing
//! nothing) and adds up to the timeout in latency; writing to recipients' sockets from the
//! sender's thread (a write lock and a write timeout per recipient) lets one slow reader stall
//! the sender, and every other recipient behind it, for the whole timeout, and pays a
//! `write(2)` per frame. With the doorbell the worker still blocks in the kernel — in `poll(2)`
//! on its socket and its doorbell rather than in `read(2)` — so the model keeps what defines
//! it: a kernel-scheduled thread and a stack per connection, a context switch per wake-up.
//! The price is one more descriptor per worker.

mod conn;
mod pool;
mod sys;

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tungstenite::protocol::WebSocketConfig;
use tungstenite::Utf8Bytes;

use crate::chat::Backlog;
use crate::config::{Arch, ServerConfig};
use crate::metrics::Metrics;
use crate::rooms::{RoomHasher, Rooms};
use crate::shutdown::Shutdown;
use crate::ServerError;

#[doc(hidden)]
pub use conn::bench;
use pool::{Job, Pool};
use sys::Waker;

/// Smallest accepted `thread_stack_bytes`. Below the measured need of the deepest path (see
/// docs/architectures.md) a worker would overflow its stack, which aborts the whole process.
pub const MIN_STACK_BYTES: usize = 64 * 1024;

/// How many connections the acceptor takes per wake-up before it looks at expiries and
/// shutdown again.
const ACCEPT_BATCH: usize = 256;

/// State shared by the acceptor and every worker.
struct Shared {
    config: ServerConfig,
    ws_config: WebSocketConfig,
    metrics: Arc<Metrics>,
    rooms: Rooms<Arc<Peer>>,
    pool: Pool,
    next_id: AtomicU64,
    shutdown: Shutdown,
}

impl Shared {
    /// The server's state. The gate's workloads (`conn/bench.rs`) build theirs here too, with
    /// [`RoomHasher::Fixed`].
    fn new(
        config: ServerConfig,
        metrics: Arc<Metrics>,
        hasher: RoomHasher,
        shutdown: Shutdown,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            ws_config: crate::task_per_conn::ws_config(&config),
            rooms: Rooms::with_hasher(metrics.clone(), hasher),
            metrics,
            pool: Pool::default(),
            next_id: AtomicU64::new(1),
            shutdown,
            config,
        })
    }
}

/// How other workers reach a connection: its outbound queue and its worker's doorbell.
struct Peer {
    /// Frames waiting to be written and their bytes, bounded by `outbound_queue` and
    /// `outbound_queue_bytes`; overflow applies the slow-consumer rule ([`crate::chat::FanOut`])
    /// at fan-out time. Empty queues hold no allocation.
    queue: Mutex<Queued>,
    /// A ring is pending (set by the first sender after the owner last looked): later senders
    /// skip the `eventfd` write. The owner clears it before draining.
    notified: AtomicBool,
    /// Set (once) when the connection must be closed as a slow consumer.
    kicked: AtomicBool,
    /// The owning worker's doorbell.
    waker: Arc<Waker>,
}

/// A connection's outbound frames and their [`Backlog`].
#[derive(Default)]
struct Queued {
    frames: VecDeque<Utf8Bytes>,
    backlog: Backlog,
}

impl Peer {
    /// The handle of a new connection served by the worker that owns `waker`.
    fn new(waker: Arc<Waker>) -> Peer {
        Peer {
            queue: Mutex::new(Queued::default()),
            notified: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            waker,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the oldest queued frame (its bytes leave the backlog: the owner writes it next),
    /// giving a finished burst's memory back. The caller releases the bytes from the gauge.
    fn pop(&self) -> Option<Utf8Bytes> {
        let mut q = self.lock();
        let frame = q.frames.pop_front();
        match &frame {
            Some(f) => q.backlog.written(f.len()),
            None if q.frames.capacity() > 64 => q.frames.shrink_to(0),
            None => {}
        }
        frame
    }

    /// The connection ended: drops what is queued and releases its bytes.
    fn release(&self, metrics: &Metrics) {
        let mut q = self.lock();
        q.frames = VecDeque::new();
        metrics.outbound_released(q.backlog.release());
    }
}

/// Runs the server until `shutdown` fires and connections have closed (at most
/// `config.shutdown_grace` later). The calling thread is the acceptor.
pub fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    config.validate().map_err(ServerError::Config)?;
    if config.pool_size == 0 {
        return Err(ServerError::Config("pool_size must be at least 1".into()));
    }
    if config.thread_stack_bytes < MIN_STACK_BYTES {
        return Err(ServerError::Config(format!(
            "thread_stack_bytes must be at least {MIN_STACK_BYTES} (a worker that overflows \
             its stack aborts the process)"
        )));
    }
    listener
        .set_nonblocking(true)
        .map_err(ServerError::Listener)?;
    let doorbell = Arc::new(Waker::new().map_err(ServerError::Runtime)?);
    let metrics = Arc::new(Metrics::new(Arch::ThreadPool.as_str()));
    let hasher = RoomHasher::Random(Default::default());
    let shared = Shared::new(config, metrics, hasher, shutdown.clone());
    let bell = doorbell.clone();
    shutdown.on_trigger(move || bell.wake());

    accept_loop(&listener, &shared, &doorbell);

    drop(listener);
    shared.pool.close();
    let left = shared.pool.wait_exited(shared.config.shutdown_grace);
    if left > 0 {
        // Peers that never answered the close; their workers end within `close_timeout`.
        tracing::warn!("{left} pool workers still busy after the shutdown grace");
    }
    Ok(())
}

/// Accepts until shutdown, dispatching to the pool and refusing connections whose
/// `pool_wait` ran out.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, doorbell: &Waker) {
    let pool_wait = shared.config.pool_wait;
    while !shared.shutdown.is_triggered() {
        let deadline = shared.pool.next_expiry(pool_wait);
        let ready = sys::wait(listener.as_raw_fd(), libc::POLLIN, Some(doorbell), deadline);
        if let Err(e) = ready {
            tracing::warn!("poll on the listener failed: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
        shared.pool.expire(pool_wait, &shared.metrics);
        for _ in 0..ACCEPT_BATCH {
            match listener.accept() {
                Ok((stream, _)) => {
                    shared.metrics.tcp_accepted();
                    let job = Job {
                        stream,
                        accepted: std::time::Instant::now(),
                    };
                    Pool::dispatch(shared, job);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    accept_failed(&shared.metrics, &e);
                    break;
                }
            }
        }
    }
}

/// Out of descriptors or memory: back off briefly instead of spinning on a ready listener.
fn accept_failed(metrics: &Metrics, e: &io::Error) {
    metrics.accept_error();
    tracing::warn!("accept failed: {e}");
    if matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) {
        std::thread::sleep(Duration::from_millis(10));
    }
}
