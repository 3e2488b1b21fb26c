//! The `task-per-conn` fan-out workload (see [`crate::bench`]): real [`Conn`]s sharing one
//! [`Shared`], driven through `Conn::on_message` on a current-thread runtime without a time
//! driver (no clock reads). Each received frame becomes a `Utf8Bytes` (one copy, as tungstenite
//! hands a message over); recipients' [`Outbox`]es are drained with `Outbox::take`, as each
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

impl Bench {
    pub(crate) fn new(config: ServerConfig, members: usize) -> Result<Bench, BenchError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let Some((server, client)) = loopback_pairs(1)?.pop() else {
            return Err(BenchError::Unexpected("no loopback pair".into()));
        };
        server.set_nonblocking(true)?;
        let metrics = Arc::new(Metrics::new(Arch::TaskPerConn.as_str()));
        let shared = Arc::new(Shared {
            ws_config: ws_config(&config),
            rooms: Rooms::with_hasher(metrics.clone(), RoomHasher::Fixed),
            metrics,
            peers: Peers::new(),
            next_id: AtomicU64::new(1),
            shutdown: Shutdown::new(),
            hook: None,
            config,
        });
        let ws_config = shared.ws_config;
        let (mut ws, mut conns) = rt.block_on(async {
            let stream = TcpStream::from_std(server)?;
            let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(ws_config)).await;
            Ok::<_, io::Error>((ws, Vec::with_capacity(members)))
        })?;
        for _ in 0..members {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let peer = Arc::new(Peer {
                outbox: Outbox::new(shared.config.outbound_queue),
                kicked: AtomicBool::new(false),
                control: Notify::new(),
            });
            shared.metrics.ws_opened();
            shared.peers.insert(id, peer.clone());
            conns.push(Conn {
                id,
                peer,
                shared: shared.clone(),
                joined: Vec::new(),
                finished: false,
            });
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
                        drained += conn.peer.outbox.take().len() as u64;
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
