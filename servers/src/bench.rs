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
    Ok(match arch {
        Arch::TaskPerConn => Box::new(crate::task_per_conn::bench::Bench::new(config, members)?),
        Arch::ThreadPool => Box::new(crate::thread_pool::bench::Bench::new(config, members)?),
        Arch::Epoll => Box::new(crate::epoll::bench::Bench::new(config, members)?),
        Arch::Cluster => {
            return Err(BenchError::Unexpected(
                "the cluster architecture has no in-process fan-out workload: its local fan-out is task-per-conn's (measure that), its backplane needs other nodes".into(),
            ))
        }
    })
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
            assert_eq!(w.run(&texts).unwrap(), 25 * 9, "{arch}");
        }
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
