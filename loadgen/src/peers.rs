//! Third-party peer servers (`servers/peers/`): which ones exist, how to start one as a child
//! process (`chatbench run --serve-peer NAME`), and which protocol profiles each speaks (and on
//! which request path). The processes themselves are started by [`crate::launcher`].

use std::path::{Path, PathBuf};

use thiserror::Error;

use chatbench_model::profile::ProtocolKind;

/// A peer server chatbench knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `ws-room.js`: Node.js and `ws`; chatbench v1 on `/ws`, echo on `/echo`, a home-grown
    /// protocol (for the `template` profile) on `/chat`.
    NodeWs,
    /// `socketio-room.js`: Socket.IO rooms.
    SocketIo,
}

/// Why a peer cannot be started.
#[derive(Debug, Error)]
pub enum PeerError {
    /// Not a peer name.
    #[error("unknown peer {0:?}; the peers are: node-ws, socketio")]
    Unknown(String),
    /// The peer does not speak the scenario's protocol.
    #[error("peer {peer} does not speak protocol = \"{protocol}\"; it speaks {speaks} (set protocol in the scenario)")]
    Protocol {
        /// The peer.
        peer: &'static str,
        /// The scenario's protocol.
        protocol: &'static str,
        /// What it speaks.
        speaks: &'static str,
    },
    /// The script is not there.
    #[error("{path}: no such peer script; run from the repository root or pass --peers-dir DIR (the folder with package.json)")]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// `npm ci` has not been run.
    #[error("{path} is missing: install the peers' pinned packages first: npm ci --prefix {dir} (needs Node.js and npm; scripts/test.sh does this)")]
    NotInstalled {
        /// The missing `node_modules`.
        path: PathBuf,
        /// The peers folder.
        dir: String,
    },
    /// No `node` on PATH.
    #[error("node is not on PATH: install Node.js (18 or newer; Debian: apt-get install nodejs npm) to run the {peer} peer")]
    NoNode {
        /// The peer.
        peer: &'static str,
    },
}

impl Peer {
    /// Every peer.
    pub const ALL: [Peer; 2] = [Peer::NodeWs, Peer::SocketIo];

    /// Its name on the command line and in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::NodeWs => "node-ws",
            Peer::SocketIo => "socketio",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Result<Peer, PeerError> {
        Peer::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| PeerError::Unknown(name.to_owned()))
    }

    fn script(self) -> &'static str {
        match self {
            Peer::NodeWs => "ws-room.js",
            Peer::SocketIo => "socketio-room.js",
        }
    }

    /// The request path for a scenario of `protocol`, or why the peer cannot serve it.
    pub fn url_path(self, protocol: ProtocolKind) -> Result<&'static str, PeerError> {
        match (self, protocol) {
            (Peer::NodeWs, ProtocolKind::Chatbench) => Ok("/ws"),
            (Peer::NodeWs, ProtocolKind::Echo) => Ok("/echo"),
            (Peer::NodeWs, ProtocolKind::Template) => Ok("/chat"),
            (Peer::SocketIo, ProtocolKind::Socketio) => Ok("/socket.io/"),
            (peer, protocol) => Err(PeerError::Protocol {
                peer: peer.as_str(),
                protocol: protocol.as_str(),
                speaks: match peer {
                    Peer::NodeWs => {
                        "chatbench (/ws), echo (/echo) and template (/chat, see docs/profiles.md)"
                    }
                    Peer::SocketIo => "socketio",
                },
            }),
        }
    }

    /// The program and arguments that start the peer from `dir` (`servers/peers`), listening on
    /// 127.0.0.1 port 0.
    pub fn command(self, dir: &Path) -> Result<(PathBuf, Vec<String>), PeerError> {
        let script = dir.join(self.script());
        if !script.is_file() {
            return Err(PeerError::Missing { path: script });
        }
        let modules = dir.join("node_modules");
        if !modules.is_dir() {
            return Err(PeerError::NotInstalled {
                path: modules,
                dir: dir.display().to_string(),
            });
        }
        let node = find_on_path("node").ok_or(PeerError::NoNode {
            peer: self.as_str(),
        })?;
        Ok((
            node,
            vec![
                script.display().to_string(),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
        ))
    }
}

/// The first `name` on `$PATH` that is a file.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_protocols() {
        assert_eq!(Peer::parse("node-ws").expect("known"), Peer::NodeWs);
        assert!(Peer::parse("phoenix")
            .expect_err("unknown")
            .to_string()
            .contains("node-ws, socketio"));
        assert_eq!(
            Peer::NodeWs.url_path(ProtocolKind::Echo).expect("echo"),
            "/echo"
        );
        let e = Peer::SocketIo
            .url_path(ProtocolKind::Chatbench)
            .expect_err("socketio only");
        assert!(e.to_string().contains("speaks socketio"), "{e}");
    }

    #[test]
    fn missing_script_and_modules_say_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Peer::NodeWs.command(dir.path()).expect_err("no script");
        assert!(e.to_string().contains("--peers-dir"), "{e}");
        std::fs::write(dir.path().join("ws-room.js"), "").expect("write");
        let e = Peer::NodeWs.command(dir.path()).expect_err("no modules");
        assert!(e.to_string().contains("npm ci --prefix"), "{e}");
    }
}
