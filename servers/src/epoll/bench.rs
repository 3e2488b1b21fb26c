//! The `epoll` fan-out workload (see [`crate::bench`]): a real [`Server`] (its slab of
//! connections, its room maps, its frame encoder) whose connections are loopback sockets that
//! are never registered or read. Frames are handed to `Server::on_message` as the frame decoder
//! hands them over (borrowed from the read buffer: no copy); the end-of-turn flush is replaced
//! by draining each dirty connection's queue as a complete `writev` would (pop every frame,
//! free the empty queue, release the frames' bytes).

use super::*;
use crate::bench::{join_text, loopback_pairs, BenchError, FanOut};
use std::borrow::Cow;

/// See the module doc.
pub struct Bench {
    server: Server,
    tokens: Vec<usize>,
    /// Keeps the client sides of the sockets open.
    _clients: Vec<std::net::TcpStream>,
}

impl Bench {
    pub(crate) fn new(config: ServerConfig, members: usize) -> Result<Bench, BenchError> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        // No read buffer: the workload hands frames to `on_message` without reading.
        let mut server = Server::new(poll, waker, None, 0, Shutdown::new(), config);
        let mut tokens = Vec::with_capacity(members);
        let mut clients = Vec::with_capacity(members);
        for (stream, client) in loopback_pairs(members)? {
            stream.set_nonblocking(true)?;
            let (t, _) = server.insert_conn(TcpStream::from_std(stream));
            server.upgraded(t);
            server.on_message(t, Message::Text(Cow::Owned(join_text())));
            tokens.push(t);
            clients.push(client);
        }
        let acks = drain(&mut server);
        if acks != members as u64 {
            return Err(BenchError::Unexpected(format!(
                "{members} joins gave {acks} acks"
            )));
        }
        Ok(Bench {
            server,
            tokens,
            _clients: clients,
        })
    }
}

/// Empties every dirty connection's queue as a complete flush would; returns the frames.
fn drain(server: &mut Server) -> u64 {
    let mut frames = 0u64;
    for t in std::mem::take(&mut server.dirty) {
        if let Some(conn) = server.conns.get_mut(t) {
            conn.dirty = false;
            let mut bytes = 0;
            while let Some(f) = conn.out.pop_front() {
                bytes += f.len();
                frames += 1;
            }
            conn.out = VecDeque::new();
            conn.backlog.written(bytes);
            server.metrics.outbound_released(bytes);
        }
    }
    frames
}

impl FanOut for Bench {
    fn run(&mut self, texts: &[String]) -> Result<u64, BenchError> {
        let members = self.tokens.len();
        let mut drained = 0u64;
        for (i, text) in texts.iter().enumerate() {
            let t = self.tokens[i % members];
            self.server
                .on_message(t, Message::Text(Cow::Borrowed(text.as_str())));
            drained += drain(&mut self.server);
            if self
                .server
                .conns
                .get(t)
                .is_none_or(|c| c.phase != Phase::Open)
            {
                return Err(BenchError::Unexpected("msg ended the connection".into()));
            }
        }
        Ok(drained)
    }

    fn members(&self) -> usize {
        self.tokens.len()
    }
}

/// The `epoll` connection workload (see [`crate::bench::OpenClose`]): a real [`Server`] built
/// as [`run`] builds it, driven one loop turn at a time the way `run_loop` drives it when the
/// listener and then the connection report readiness: `accept` (register, handshake
/// deadline), `on_readable` (head, upgrade, the client's close right behind it), the ready
/// list, `flush_dirty` (101 and the close reply in one `writev`, half-close, finish) and
/// `expire`. Nothing waits in `epoll_wait`: the workload knows what is ready.
pub struct Cycle {
    server: Server,
    addr: std::net::SocketAddr,
}

impl Cycle {
    pub(crate) fn new(config: ServerConfig) -> Result<Cycle, BenchError> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let read_len = config.read_buffer_size.max(MIN_READ_BUFFER);
        let server = Server::new(
            poll,
            waker,
            Some(TcpListener::from_std(std_listener)),
            read_len,
            Shutdown::new(),
            config,
        );
        Ok(Cycle { server, addr })
    }

    /// One loop turn with the listener and connection `t` readable.
    fn turn(&mut self, t: usize) {
        let s = &mut self.server;
        s.accept();
        s.guarded(t, |s| s.on_readable(t));
        for r in std::mem::take(&mut s.ready) {
            s.guarded(r, |s| s.on_readable(r));
        }
        s.flush_dirty();
        s.expire(Instant::now());
    }
}

impl crate::bench::OpenClose for Cycle {
    fn run(&mut self, n: usize, measure: crate::bench::Measure<'_>) -> Result<u64, BenchError> {
        let mut done = 0u64;
        for _ in 0..n {
            let mut client = crate::bench::client_conversation(self.addr)?;
            let t = self.server.conns.vacant_key();
            measure(&mut || self.turn(t));
            if !self.server.conns.is_empty() {
                return Err(BenchError::Unexpected(
                    "the connection is still open after its close was answered".into(),
                ));
            }
            let mut rest = [0u8; 64];
            let have = crate::bench::read_upgrade(&mut client, &mut rest)?;
            crate::bench::read_close_and_eof(&mut client, &mut rest, have)?;
            done += 1;
        }
        Ok(done)
    }
}
