//! Third-party peer servers (`servers/peers/`): which ones exist, how to start one as a child
//! process (`chatbench run --serve-peer NAME`), and which protocol profiles each speaks (and on
//! which request path). The processes themselves are started by [`crate::launcher`].

use std::path::{Path, PathBuf};

use thiserror::Error;

use chatbench_model::profile::ProtocolKind;

mod elixir;

pub use elixir::ElixirCluster;

/// A peer server chatbench knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `ws-room.js`: Node.js and `ws`; chatbench v1 on `/ws`, echo on `/echo`, a home-grown
    /// protocol (for the `template` profile) on `/chat`.
    NodeWs,
    /// `socketio-room.js`: Socket.IO rooms.
    SocketIo,
    /// `socketio-cluster.js`: N `socketio-room.js` workers under Node's `cluster` module, one
    /// shared port, rooms spanning the workers over `@socket.io/redis-adapter` (a private
    /// redis-server), a dead worker re-forked by the primary. Started by the
    /// [`crate::supervisor`] (`Supervisor::start_shared_port`).
    SocketIoCluster,
    /// `elixir/`: an OTP application (Elixir, no Hex dependencies): chatbench v1 on `/ws`,
    /// Phoenix Channels v2 on `/socket/websocket`, `{"t":"panic"}` with `--fault-injection`.
    Elixir,
    /// `elixir-cluster`: N nodes of the Elixir peer joined with distributed Erlang
    /// ([`ElixirCluster`]); rooms span the nodes.
    ElixirCluster,
}

/// Why a peer cannot be started.
#[derive(Debug, Error)]
pub enum PeerError {
    /// Not a peer name.
    #[error("unknown peer {0:?}; the peers are: node-ws, socketio, socketio-cluster, elixir, elixir-cluster")]
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
    /// No `elixir` (or `mix`) on PATH.
    #[error("{tool} is not on PATH: the {peer} peer needs Elixir 1.14+ with cowlib and jiffy (Debian: apt-get install elixir erlang-cowlib erlang-jiffy; scripts/test.sh installs them)")]
    NoElixir {
        /// The missing program.
        tool: &'static str,
        /// The peer.
        peer: &'static str,
    },
    /// Compiling a peer failed.
    #[error("compiling the {peer} peer in {dir} failed ({status}); a missing module means a missing package: apt-get install elixir erlang-cowlib erlang-jiffy. Its output:\n{output}")]
    Build {
        /// The peer.
        peer: &'static str,
        /// Its project folder.
        dir: String,
        /// How the compiler ended.
        status: String,
        /// What it printed.
        output: String,
    },
    /// Starting an `elixir-cluster` failed (epmd, a node).
    #[error("elixir-cluster: {0}")]
    Cluster(String),
    /// No `node` on PATH.
    #[error("node is not on PATH: install Node.js (18 or newer; Debian: apt-get install nodejs npm) to run the {peer} peer")]
    NoNode {
        /// The peer.
        peer: &'static str,
    },
}

impl Peer {
    /// Every peer.
    pub const ALL: [Peer; 5] = [
        Peer::NodeWs,
        Peer::SocketIo,
        Peer::SocketIoCluster,
        Peer::Elixir,
        Peer::ElixirCluster,
    ];

    /// Its name on the command line and in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::NodeWs => "node-ws",
            Peer::SocketIo => "socketio",
            Peer::SocketIoCluster => "socketio-cluster",
            Peer::Elixir => "elixir",
            Peer::ElixirCluster => "elixir-cluster",
        }
    }

    /// What it stands for, in a sentence for readers of a comparison (its column's meaning on
    /// the page; the peers have no section of docs/architectures.md).
    pub fn meaning(self) -> &'static str {
        match self {
            Peer::NodeWs => "a real Node.js server on the `ws` library (third-party peer)",
            Peer::SocketIo => "a real Socket.IO 4 server on Node.js (third-party peer)",
            Peer::SocketIoCluster => "Socket.IO on Node.js `cluster` workers behind one port, joined by the Redis adapter (third-party peer)",
            Peer::Elixir => "a real Elixir/OTP server: one process per connection, rooms as :pg groups (third-party peer)",
            Peer::ElixirCluster => "several Elixir/OTP nodes, rooms as :pg groups across them (third-party peer)",
        }
    }

    /// Whether it runs several server processes behind one port (`--nodes` of them) over a
    /// private redis-server.
    pub fn one_port_cluster(self) -> bool {
        self == Peer::SocketIoCluster
    }

    /// Whether it runs several server processes (socketio-cluster, elixir-cluster): the
    /// comparison's scaling and node-loss steps are its.
    pub fn several_nodes(self) -> bool {
        matches!(self, Peer::SocketIoCluster | Peer::ElixirCluster)
    }

    /// The protocol profile a comparison's scenarios take for it when not the scenario's own
    /// (the Socket.IO peers speak only `socketio`).
    pub fn compare_protocol(self) -> Option<ProtocolKind> {
        matches!(self, Peer::SocketIo | Peer::SocketIoCluster).then_some(ProtocolKind::Socketio)
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
            Peer::SocketIoCluster => "socketio-cluster.js",
            Peer::Elixir | Peer::ElixirCluster => "elixir/mix.exs",
        }
    }

    /// The npm packages it loads (pinned in `package-lock.json`; none for the Elixir peers).
    fn packages(self) -> &'static [&'static str] {
        match self {
            Peer::NodeWs => &["ws"],
            Peer::SocketIo => &["socket.io"],
            Peer::SocketIoCluster => &["socket.io", "@socket.io/redis-adapter", "redis"],
            Peer::Elixir | Peer::ElixirCluster => &[],
        }
    }

    /// The request path for a scenario of `protocol`, or why the peer cannot serve it.
    pub fn url_path(self, protocol: ProtocolKind) -> Result<&'static str, PeerError> {
        match (self, protocol) {
            (Peer::NodeWs, ProtocolKind::Chatbench) => Ok("/ws"),
            (Peer::NodeWs, ProtocolKind::Echo) => Ok("/echo"),
            (Peer::NodeWs, ProtocolKind::Template) => Ok("/chat"),
            (Peer::SocketIo | Peer::SocketIoCluster, ProtocolKind::Socketio) => Ok("/socket.io/"),
            (Peer::Elixir | Peer::ElixirCluster, ProtocolKind::Chatbench) => Ok("/ws"),
            (Peer::Elixir | Peer::ElixirCluster, ProtocolKind::Phoenix) => Ok("/socket/websocket"),
            (peer, protocol) => Err(PeerError::Protocol {
                peer: peer.as_str(),
                protocol: protocol.as_str(),
                speaks: match peer {
                    Peer::NodeWs => {
                        "chatbench (/ws), echo (/echo) and template (/chat, see docs/profiles.md)"
                    }
                    Peer::SocketIo | Peer::SocketIoCluster => "socketio",
                    Peer::Elixir | Peer::ElixirCluster => {
                        "chatbench (/ws) and phoenix (/socket/websocket)"
                    }
                },
            }),
        }
    }

    /// The program and arguments that start the peer from `dir` (`servers/peers`), listening on
    /// 127.0.0.1 port 0.
    pub fn command(self, dir: &Path) -> Result<(PathBuf, Vec<String>), PeerError> {
        self.command_with(dir, &[], &[])
    }

    /// [`Peer::command`] for a server pinned to `cpus` (the Elixir peer sizes its schedulers
    /// to them; empty: every CPU this process may use), with `extra` server flags appended
    /// (e.g. `--fault-injection`).
    pub fn command_with(
        self,
        dir: &Path,
        cpus: &[usize],
        extra: &[String],
    ) -> Result<(PathBuf, Vec<String>), PeerError> {
        if self == Peer::ElixirCluster {
            return Err(PeerError::Cluster(
                "several processes: start it with peers::ElixirCluster::start".into(),
            ));
        }
        if self == Peer::Elixir {
            let n = if cpus.is_empty() {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                cpus.len()
            };
            return elixir::command(dir, n, extra);
        }
        let (program, mut args) = self.node_command(dir)?;
        args.extend(extra.iter().cloned());
        Ok((program, args))
    }

    fn node_command(self, dir: &Path) -> Result<(PathBuf, Vec<String>), PeerError> {
        let script = dir.join(self.script());
        if !script.is_file() {
            return Err(PeerError::Missing { path: script });
        }
        let modules = dir.join("node_modules");
        if let Some(path) = std::iter::once(modules.clone())
            .chain(self.packages().iter().map(|p| modules.join(p)))
            .find(|p| !p.is_dir())
        {
            return Err(PeerError::NotInstalled {
                path,
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
            .contains("node-ws, socketio, socketio-cluster, elixir, elixir-cluster"));
        assert_eq!(
            Peer::NodeWs.url_path(ProtocolKind::Echo).expect("echo"),
            "/echo"
        );
        assert_eq!(
            Peer::Elixir
                .url_path(ProtocolKind::Phoenix)
                .expect("phoenix"),
            "/socket/websocket"
        );
        let e = Peer::SocketIo
            .url_path(ProtocolKind::Chatbench)
            .expect_err("socketio only");
        assert!(e.to_string().contains("speaks socketio"), "{e}");
        let cluster = Peer::parse("socketio-cluster").expect("known");
        assert!(cluster.one_port_cluster() && !Peer::SocketIo.one_port_cluster());
        assert_eq!(
            cluster.url_path(ProtocolKind::Socketio).expect("socketio"),
            "/socket.io/"
        );
    }

    #[test]
    fn missing_script_and_modules_say_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Peer::NodeWs.command(dir.path()).expect_err("no script");
        assert!(e.to_string().contains("--peers-dir"), "{e}");
        std::fs::write(dir.path().join("ws-room.js"), "").expect("write");
        let e = Peer::NodeWs.command(dir.path()).expect_err("no modules");
        assert!(e.to_string().contains("npm ci --prefix"), "{e}");
        // An older install without the cluster's packages names the missing one.
        std::fs::write(dir.path().join("socketio-cluster.js"), "").expect("write");
        std::fs::create_dir_all(dir.path().join("node_modules/socket.io")).expect("mkdir");
        let e = Peer::SocketIoCluster
            .command(dir.path())
            .expect_err("no adapter");
        assert!(e.to_string().contains("@socket.io/redis-adapter"), "{e}");
        assert!(e.to_string().contains("npm ci --prefix"), "{e}");
    }
}
