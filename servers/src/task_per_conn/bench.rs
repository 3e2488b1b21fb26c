//! The `task-per-conn` fan-out workload (see [`crate::bench`]): real [`Conn`]s sharing one
//! [`Shared`], driven through `Conn::on_message` on a current-thread runtime without a time
//! driver (no clock reads). Each received frame becomes a `Utf8Bytes` (one copy, as tungstenite
//! hands a message over); recipients' [`Outbox`]es are drained with `Outbox::take` (and their bytes released once "written"), as each
//! connection task does before writing.

use super::*;
use crate::bench::{join_text, loopback_pairs, BenchError, FanOut};
use crate::rooms::RoomHasher;

/// See the module doc.
pub struct Bench {
    rt: tokio::runtime::Runtime,
    /// One WebSocket for every handler call: the `msg` path never touches it; joins write
    /// their acks to it during setup.
    ws: Ws,
    conns: Vec<Conn>,
    /// Keeps the client side of the socket open.
    _client: std::net::TcpStream,
}

/// The server state both workloads run on: the server's own constructor, with the rooms' map
/// on fixed hash keys (repeatable counts) and no cluster hook.
fn bench_shared(config: ServerConfig) -> Arc<Shared> {
    let metrics = Arc::new(Metrics::new(Arch::TaskPerConn.as_str()));
    Shared::new(config, metrics, RoomHasher::Fixed, Shutdown::new(), |_| {
        None
    })
}

impl Bench {
    pub(crate) fn new(config: ServerConfig, members: usize) -> Result<Bench, BenchError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let Some((server, client)) = loopback_pairs(1)?.pop() else {
            return Err(BenchError::Unexpected("no loopback pair".into()));
        };
        server.set_nonblocking(true)?;
        let shared = bench_shared(config);
        let ws_config = shared.ws_config;
        let (mut ws, mut conns) = rt.block_on(async {
            let stream = TcpStream::from_std(server)?;
            let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(ws_config)).await;
            Ok::<_, io::Error>((ws, Vec::with_capacity(members)))
        })?;
        for _ in 0..members {
            conns.push(Conn::open(shared.clone()));
        }
        let join = Utf8Bytes::from(join_text());
        rt.block_on(async {
            for conn in &mut conns {
                let msg = Some(Ok(Message::Text(join.clone())));
                if let Some(reason) = conn.on_message(&mut ws, msg).await {
                    return Err(BenchError::Unexpected(format!(
                        "join ended the connection: {reason:?}"
                    )));
                }
            }
            Ok(())
        })?;
        Ok(Bench {
            rt,
            ws,
            conns,
            _client: client,
        })
    }
}

impl FanOut for Bench {
    fn run(&mut self, texts: &[String]) -> Result<u64, BenchError> {
        let (conns, ws) = (&mut self.conns, &mut self.ws);
        let members = conns.len();
        self.rt.block_on(async {
            let mut drained = 0u64;
            for (i, text) in texts.iter().enumerate() {
                let sender = i % members;
                let msg = Some(Ok(Message::Text(Utf8Bytes::from(text.as_str()))));
                if let Some(reason) = conns[sender].on_message(ws, msg).await {
                    return Err(BenchError::Unexpected(format!(
                        "msg ended the connection: {reason:?}"
                    )));
                }
                for (j, conn) in conns.iter().enumerate() {
                    if j != sender {
                        let (frames, bytes) = conn.peer.outbox.take();
                        drained += frames.len() as u64;
                        conn.shared.metrics.outbound_released(bytes);
                    }
                }
            }
            Ok(drained)
        })
    }

    fn members(&self) -> usize {
        self.conns.len()
    }
}

/// The `task-per-conn` connection workload (see [`crate::bench::OpenClose`]): the accept
/// loop's steps (`accept`, the accepted count, `TCP_NODELAY`, a task spawned per connection)
/// and that task, [`connection`] (HTTP upgrade under its handshake timeout, session, close),
/// on a current-thread runtime. The handshake timeout needs the time driver: registering and
/// cancelling that timer reads the clock, the one clock read in the path (see docs/gate.md).
pub struct Cycle {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    listener: TcpListener,
    addr: std::net::SocketAddr,
    done: mpsc::Sender<()>,
    _done_rx: mpsc::Receiver<()>,
}

impl Cycle {
    pub(crate) fn new(config: ServerConfig) -> Result<Cycle, BenchError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let shared = bench_shared(config);
        let std_listener = StdListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = rt.block_on(async { TcpListener::from_std(std_listener) })?;
        let (done, done_rx) = mpsc::channel(1);
        Ok(Cycle {
            rt,
            shared,
            listener,
            addr,
            done,
            _done_rx: done_rx,
        })
    }
}

impl crate::bench::OpenClose for Cycle {
    fn run(&mut self, n: usize, measure: crate::bench::Measure<'_>) -> Result<u64, BenchError> {
        let mut done = 0u64;
        for _ in 0..n {
            let mut client = crate::bench::client_conversation(self.addr)?;
            let mut outcome: Result<(), BenchError> = Ok(());
            let (rt, listener, shared, tx) = (&self.rt, &self.listener, &self.shared, &self.done);
            measure(&mut || {
                outcome = rt.block_on(async {
                    let (stream, _) = listener.accept().await?;
                    shared.metrics.tcp_accepted();
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, shared.clone(), tx.clone()))
                        .await
                        .map_err(|e| BenchError::Unexpected(format!("connection task: {e}")))
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
