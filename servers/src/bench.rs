//! Deterministic in-process workloads over each architecture's own code path, for the
//! regression gate (`chatbench gate deterministic`, run under callgrind) and the criterion
//! benches. Hidden from the docs: not a stable API.
//!
//! A workload ([`FanOut`]) holds one room of `members` connections of one architecture, built
//! with that architecture's own state (its room registry, its per-connection queues, its
//! connection handler) but without a network peer: frames are handed to the connection's
//! message handler as the transport would hand them over, and each recipient's queue is
//! drained as its writer would drain it, minus the `write(2)`. Everything runs on the calling
//! thread, reads no clock and uses fixed inputs, so under callgrind the same build executes the
//! same instructions every time (see docs/gate.md for the measured spread).
//!
//! Setup (connections, joins) opens loopback TCP sockets where an architecture's connection
//! type needs one; no byte is ever sent on them after setup.
//!
//! The connection workload ([`OpenClose`]) opens and closes real loopback connections, one at
//! a time on the calling thread, through each architecture's own accept, HTTP upgrade,
//! WebSocket session and close path. The client side is raw bytes written before the server
//! runs ([`UPGRADE_REQUEST`] then [`CLIENT_CLOSE`]): loopback delivers them synchronously, so
//! the server finds the whole conversation waiting and never blocks, and the same build takes
//! the same path every time. Only the server's steps run inside the caller's measuring
//! closure; the client's socket calls run outside it.

use std::io;
use std::net::{TcpListener, TcpStream};

use crate::config::{Arch, ServerConfig};

/// The room every workload uses.
pub const ROOM: &str = "bench";

/// Why a workload could not be built or did not behave.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up sockets or a runtime failed.
    #[error("workload setup failed: {0}")]
    Setup(#[from] io::Error),
    /// The architecture did something the workload does not expect (a bug, or a changed
    /// code path the workload must follow).
    #[error("workload went wrong: {0}")]
    Unexpected(String),
}

/// A room of connections of one architecture that can be sent `msg` frames.
pub trait FanOut {
    /// For each text, connection `i % members` sends it (a `msg` frame for [`ROOM`]): the
    /// architecture parses it and fans it out to the room, then every recipient's queue is
    /// drained. Returns the number of frames drained from recipients' queues.
    fn run(&mut self, texts: &[String]) -> Result<u64, BenchError>;
    /// Members of the room.
    fn members(&self) -> usize;
}

/// Builds the fan-out workload of `arch`: `members` connections, all joined to [`ROOM`].
pub fn fan_out(
    arch: Arch,
    config: ServerConfig,
    members: usize,
) -> Result<Box<dyn FanOut>, BenchError> {
    if members < 2 {
        return Err(BenchError::Unexpected(
            "a fan-out workload needs at least 2 members".into(),
        ));
    }
    config.validate().map_err(BenchError::Unexpected)?;
    arch.fan_out(config, members)
}

/// A WebSocket upgrade request for `/ws` with a fixed key, as a client sends it.
pub const UPGRADE_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A client's close frame, code 1000 (masked with the key 1, 2, 3, 4, as clients must).
pub const CLIENT_CLOSE: &[u8] = &[0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2];

/// The server's reply to [`CLIENT_CLOSE`]: a close frame echoing 1000.
pub const SERVER_CLOSE: &[u8] = &[0x88, 0x02, 0x03, 0xE8];

/// Reads from `client` until the end of the upgrade response head (without allocating) and
/// checks that it is `101 Switching Protocols`; returns the bytes read past the head.
pub fn read_upgrade(client: &mut TcpStream, rest: &mut [u8; 64]) -> Result<usize, BenchError> {
    use std::io::Read;
    let mut buf = [0u8; 512];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(BenchError::Unexpected(
                "upgrade response head too long".into(),
            ));
        }
        let n = client.read(&mut buf[len..])?;
        if n == 0 {
            return Err(BenchError::Unexpected(
                "the server closed before answering the upgrade".into(),
            ));
        }
        len += n;
        if let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                return Err(BenchError::Unexpected(format!(
                    "upgrade answered with {:?}",
                    String::from_utf8_lossy(&buf[..len.min(40)])
                )));
            }
            let extra = len - (end + 4);
            if extra > rest.len() {
                return Err(BenchError::Unexpected(
                    "too much data after the head".into(),
                ));
            }
            rest[..extra].copy_from_slice(&buf[end + 4..len]);
            return Ok(extra);
        }
    }
}

/// After [`read_upgrade`]: reads the server's close reply (completing `rest[..have]`) and then
/// end of stream, or fails naming what came instead. Allocates nothing on success.
pub fn read_close_and_eof(
    client: &mut TcpStream,
    rest: &mut [u8; 64],
    mut have: usize,
) -> Result<(), BenchError> {
    use std::io::Read;
    loop {
        if have >= SERVER_CLOSE.len() {
            if rest[..SERVER_CLOSE.len()] != *SERVER_CLOSE || have > SERVER_CLOSE.len() {
                return Err(BenchError::Unexpected(format!(
                    "expected the close reply {SERVER_CLOSE:?}, got {:?}",
                    &rest[..have]
                )));
            }
            let n = client.read(&mut rest[..])?;
            return if n == 0 {
                Ok(())
            } else {
                Err(BenchError::Unexpected(format!(
                    "{n} more bytes after the close reply"
                )))
            };
        }
        let n = client.read(&mut rest[have..])?;
        if n == 0 {
            return Err(BenchError::Unexpected(format!(
                "end of stream after {have} bytes of the close reply"
            )));
        }
        have += n;
    }
}

/// The measuring closure an [`OpenClose`] runs each server step in.
pub type Measure<'a> = &'a mut dyn FnMut(&mut dyn FnMut());

/// Connections of one architecture opened and closed one at a time (see the module doc).
pub trait OpenClose {
    /// Opens and closes `n` connections: for each, the client connects and writes
    /// [`UPGRADE_REQUEST`] and [`CLIENT_CLOSE`]; the server accepts, answers the upgrade,
    /// runs the session until the close and closes (inside `measure`); the client checks that
    /// it got `101`, the close reply and end of stream. Returns the connections completed.
    fn run(&mut self, n: usize, measure: Measure<'_>) -> Result<u64, BenchError>;
}

/// Builds the connection workload of `arch` on a fresh loopback listener.
pub fn open_close(arch: Arch, config: ServerConfig) -> Result<Box<dyn OpenClose>, BenchError> {
    config.validate().map_err(BenchError::Unexpected)?;
    arch.open_close(config)
}

/// A client connection with the whole conversation already written.
pub(crate) fn client_conversation(addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    use std::io::Write;
    let mut c = TcpStream::connect(addr)?;
    c.write_all(UPGRADE_REQUEST)?;
    c.write_all(CLIENT_CLOSE)?;
    Ok(c)
}

/// The `msg` frame that connection `sender` sends as its `seq`-th message, with a body of
/// `body_len` bytes; fixed text for fixed arguments.
pub fn msg_text(sender: usize, seq: u64, body_len: usize) -> String {
    let body: String = (0..body_len)
        .map(|i| char::from(b'a' + ((i as u64 + seq) % 26) as u8))
        .collect();
    format!(
        r#"{{"t":"msg","room":"{ROOM}","from":"a0.c{sender}","seq":{seq},"ts":{},"body":"{body}"}}"#,
        1_700_000_000_000_000u64 + seq * 1000
    )
}

/// `n` messages as the workload sends them: message `i` from connection `i % members`.
pub fn msg_texts(n: usize, members: usize, body_len: usize) -> Vec<String> {
    (0..n)
        .map(|i| msg_text(i % members.max(1), i as u64, body_len))
        .collect()
}

/// The `join` frame for [`ROOM`].
pub fn join_text() -> String {
    format!(r#"{{"t":"join","room":"{ROOM}"}}"#)
}

/// `n` connected loopback TCP pairs: (server side, client side).
pub(crate) fn loopback_pairs(n: usize) -> io::Result<Vec<(TcpStream, TcpStream)>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    (0..n)
        .map(|_| {
            let client = TcpStream::connect(addr)?;
            let (server, _) = listener.accept()?;
            Ok((server, client))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_delivers_to_every_other_member() {
        for arch in Arch::ALL {
            let mut w = fan_out(arch, ServerConfig::default(), 10).unwrap();
            let texts = msg_texts(25, 10, 16);
            assert_eq!(w.run(&texts).unwrap(), 25 * 9, "{arch}");
            // A second batch on the same room delivers the same.
            assert_eq!(w.run(&texts).unwrap(), 25 * 9, "{arch}");
            // Injected work changes the cost, not the behaviour.
            let config = ServerConfig {
                inject_work: 50,
                ..ServerConfig::default()
            };
            let mut w = fan_out(arch, config, 10).unwrap();
            let before = crate::work::INJECTED.with(|c| c.get());
            assert_eq!(w.run(&texts).unwrap(), 25 * 9, "{arch}");
            // Every architecture's own fan-out path runs the injected work, per delivery.
            let injected = crate::work::INJECTED.with(|c| c.get()) - before;
            assert_eq!(
                injected,
                50 * 25 * 9,
                "{arch}: inject_work not applied on fan-out"
            );
        }
    }

    #[test]
    fn every_architecture_opens_and_closes_connections_through_its_own_path() {
        for arch in [Arch::TaskPerConn, Arch::ThreadPool, Arch::Epoll] {
            let mut w = open_close(arch, ServerConfig::default()).unwrap();
            let mut steps = 0;
            let n = w.run(5, &mut |f: &mut dyn FnMut()| {
                steps += 1;
                f()
            });
            assert_eq!(n.unwrap(), 5, "{arch}");
            assert_eq!(steps, 5, "{arch}: one measured server step per connection");
        }
        assert!(open_close(Arch::Cluster, ServerConfig::default()).is_err());
    }

    #[test]
    fn texts_are_valid_msg_frames() {
        let t = msg_text(3, 7, 10);
        match chatbench_protocol::parse_client(&t).unwrap() {
            chatbench_protocol::ClientFrame::Msg(m) => assert_eq!(&*m.room, ROOM),
            other => panic!("{other:?}"),
        }
        assert!(fan_out(Arch::Epoll, ServerConfig::default(), 1).is_err());
    }
}
