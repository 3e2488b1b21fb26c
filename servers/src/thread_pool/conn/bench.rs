//! The `thread-pool` fan-out workload (see [`crate::bench`]): real [`Conn`]s sharing one
//! [`Shared`], driven through `Conn::on_message` on the calling thread. Each received frame
//! becomes a `Utf8Bytes` (one copy, as tungstenite hands a message over). Recipients share one
//! doorbell (`eventfd`); they are drained as `Conn::drain_queue` would drain a queue that it
//! can write whole (clear `notified`, pop every frame, release their bytes, give a burst's
//! memory back; under one lock rather than one per frame), minus the write into tungstenite.

use super::*;
use crate::bench::{join_text, loopback_pairs, BenchError, FanOut};
use crate::config::{Arch, ServerConfig};
use crate::metrics::Metrics;
use crate::rooms::RoomHasher;
use crate::shutdown::Shutdown;

/// See the module doc.
pub struct Bench {
    /// One WebSocket for every handler call: the `msg` path never touches it; joins write
    /// their acks into its buffer during setup.
    ws: Ws,
    conns: Vec<Conn>,
    waker: Arc<Waker>,
    /// Keeps the client side of the socket open.
    _client: TcpStream,
}

/// The server state both workloads run on: the server's own constructor, with the rooms' map
/// on fixed hash keys (repeatable counts).
fn bench_shared(config: ServerConfig) -> Arc<Shared> {
    let metrics = Arc::new(Metrics::new(Arch::ThreadPool.as_str()));
    Shared::new(config, metrics, RoomHasher::Fixed, Shutdown::new())
}

impl Bench {
    pub(crate) fn new(config: ServerConfig, members: usize) -> Result<Bench, BenchError> {
        let Some((server, client)) = loopback_pairs(1)?.pop() else {
            return Err(BenchError::Unexpected("no loopback pair".into()));
        };
        server.set_nonblocking(true)?;
        let shared = bench_shared(config);
        let mut ws = WebSocket::from_raw_socket(server, Role::Server, Some(shared.ws_config));
        let waker = Arc::new(Waker::new()?);
        let mut conns = Vec::with_capacity(members);
        for _ in 0..members {
            let mut conn = Conn::open(&shared, &waker);
            if let Some(reason) = conn.on_message(&mut ws, Message::text(join_text())) {
                return Err(BenchError::Unexpected(format!(
                    "join ended the connection: {reason:?}"
                )));
            }
            conns.push(conn);
        }
        Ok(Bench {
            ws,
            conns,
            waker,
            _client: client,
        })
    }
}

impl FanOut for Bench {
    fn run(&mut self, texts: &[String]) -> Result<u64, BenchError> {
        let members = self.conns.len();
        let mut drained = 0u64;
        for (i, text) in texts.iter().enumerate() {
            let sender = i % members;
            let msg = Message::Text(Utf8Bytes::from(text.as_str()));
            if let Some(reason) = self.conns[sender].on_message(&mut self.ws, msg) {
                return Err(BenchError::Unexpected(format!(
                    "msg ended the connection: {reason:?}"
                )));
            }
            for (j, conn) in self.conns.iter().enumerate() {
                if j == sender {
                    continue;
                }
                conn.peer.notified.store(false, Ordering::SeqCst);
                let mut guard = conn.peer.lock();
                let q = &mut *guard;
                let mut bytes = 0;
                while let Some(frame) = q.frames.pop_front() {
                    bytes += frame.len();
                    drained += 1;
                }
                q.backlog.written(bytes);
                if q.frames.capacity() > 64 {
                    q.frames.shrink_to(0);
                }
                drop(guard);
                conn.shared.metrics.outbound_released(bytes);
            }
            self.waker.clear();
        }
        Ok(drained)
    }

    fn members(&self) -> usize {
        self.conns.len()
    }
}

/// The `thread-pool` connection workload (see [`crate::bench::OpenClose`]): the acceptor's
/// part (`accept`, the accepted count, the job with its accept time) and then the worker's
/// whole per-connection path, [`serve`] (handshake, session, close), run on the calling thread
/// instead of a pool worker: one connection at a time needs no second thread.
pub struct Cycle {
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    waker: Arc<Waker>,
}

impl Cycle {
    pub(crate) fn new(config: ServerConfig) -> Result<Cycle, BenchError> {
        let shared = bench_shared(config);
        Ok(Cycle {
            shared,
            listener: std::net::TcpListener::bind("127.0.0.1:0")?,
            waker: Arc::new(Waker::new()?),
        })
    }
}

impl crate::bench::OpenClose for Cycle {
    fn run(&mut self, n: usize, measure: crate::bench::Measure<'_>) -> Result<u64, BenchError> {
        let addr = self.listener.local_addr()?;
        let mut done = 0u64;
        for _ in 0..n {
            let mut client = crate::bench::client_conversation(addr)?;
            let mut outcome: io::Result<()> = Ok(());
            measure(&mut || {
                outcome = self.listener.accept().map(|(stream, _)| {
                    self.shared.metrics.tcp_accepted();
                    let job = Job {
                        stream,
                        accepted: Instant::now(),
                    };
                    serve(job, &self.shared, &self.waker);
                });
            });
            outcome?;
            let mut rest = [0u8; 64];
            let have = crate::bench::read_upgrade(&mut client, &mut rest)?;
            crate::bench::read_close_and_eof(&mut client, &mut rest, have)?;
            done += 1;
        }
        Ok(done)
    }
}
