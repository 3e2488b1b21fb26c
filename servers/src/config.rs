//! Server settings shared by every architecture.
//!
//! One plain struct, [`ServerConfig`], holds every limit the design asks all servers to enforce
//! (frame size, rooms per connection, outbound queue and its slow-consumer policy, timeouts) and
//! the buffer sizes that decide memory per connection. It lives here, free of any CLI library, so
//! that the binary maps flags to it in one place and tests build it directly. [`Arch`] names the
//! architectures; its string forms are what results record.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// What to do when a recipient's outbound queue is full (in frames or in bytes) at fan-out time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Drop the newest frame for that recipient only, and count it in
    /// `chatbench_drops_total{reason="queue_full"}` (frame bound) or `{reason="queue_bytes"}`
    /// (byte bound). The recipient stays connected, unless nothing has been written to it for
    /// [`ServerConfig::slow_consumer_grace`] while frames for it were refused: then it is
    /// disconnected as `Disconnect` does, so a consumer that stopped reading cannot pin its
    /// queue's memory forever.
    #[default]
    Drop,
    /// Send the recipient an `error` frame with code `slow_consumer` and close it with 1008,
    /// counted in `chatbench_disconnects_total{reason="slow_consumer"}`.
    Disconnect,
}

impl SlowConsumerPolicy {
    /// The CLI/results form: `drop` or `disconnect`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Drop => "drop",
            SlowConsumerPolicy::Disconnect => "disconnect",
        }
    }
}

impl FromStr for SlowConsumerPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "drop" => Ok(SlowConsumerPolicy::Drop),
            "disconnect" => Ok(SlowConsumerPolicy::Disconnect),
            other => Err(format!(
                "unknown slow-consumer policy {other:?} (expected drop or disconnect)"
            )),
        }
    }
}

impl fmt::Display for SlowConsumerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The largest WebSocket frame header a server writes (2 + 8 length bytes, rounded up).
pub const MAX_FRAME_HEADER: usize = 16;

/// Every limit and tunable of a reference server. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest WebSocket message (and frame) a client may send, in bytes. Larger ones close the
    /// connection with 1009. Also bounds the read buffer growth a peer can cause.
    pub max_frame_bytes: usize,
    /// How many rooms one connection may be in at once; a further `join` gets `too_many_rooms`.
    /// Together with the connection limit this bounds the room registry a peer can grow.
    pub max_rooms_per_conn: usize,
    /// Capacity of each connection's outbound queue, in frames. Full queues apply
    /// [`ServerConfig::slow_consumer`].
    pub outbound_queue: usize,
    /// Capacity of each connection's outbound queue, in bytes: frames queued and not yet
    /// written to the socket (task-per-conn counts the batch being written too). A frame that
    /// would take the queue past it applies [`ServerConfig::slow_consumer`]. With
    /// `outbound_queue` this bounds what a consumer that stops reading can hold.
    pub outbound_queue_bytes: usize,
    /// Under the `drop` policy: how long frames for a consumer may be refused (queue full)
    /// with nothing written to it before it is disconnected (`slow_consumer`, 1008).
    pub slow_consumer_grace: Duration,
    /// What happens when an outbound queue is full.
    pub slow_consumer: SlowConsumerPolicy,
    /// How long a client may take from TCP accept to a complete HTTP request head. Clients that
    /// take longer are dropped and counted in `chatbench_handshake_timeouts_total`.
    pub handshake_timeout: Duration,
    /// On shutdown, how long clients get to answer the 1001 close before the server returns.
    pub shutdown_grace: Duration,
    /// How long a close handshake the server starts (after a fatal error or a slow-consumer
    /// disconnect) may take before the socket is simply dropped. Bounds what a peer that stops
    /// reading can hold.
    pub close_timeout: Duration,
    /// tungstenite `read_buffer_size`: the per-connection read buffer, allocated up front. The
    /// tungstenite default (128 KiB) costs ≈ 135 KiB per idle connection: keep this small.
    /// Default 1 KiB: chat frames are a few hundred bytes; a larger burst or message takes a few
    /// more `read(2)` calls. At 15,000 idle connections 4 KiB measured 9.2 KiB/conn, 1 KiB
    /// 4.6 KiB/conn (task-per-conn). `epoll` has no per-connection read buffer: it reads every
    /// socket into one shared 64 KiB buffer (this value only raises it), and ignores the write
    /// buffer settings (it writes queued frames with `writev`).
    pub read_buffer_size: usize,
    /// tungstenite `write_buffer_size`: frames are gathered up to this many bytes before a
    /// write is attempted (flushes write earlier).
    pub write_buffer_size: usize,
    /// tungstenite `max_write_buffer_size`: the hard cap of a connection's unwritten bytes. Must
    /// exceed `write_buffer_size + max_frame_bytes`-ish so one frame always fits.
    pub max_write_buffer_size: usize,
    /// `listen(2)` backlog. std/tokio/mio use 128, which overflows under connection storms.
    pub backlog: u32,
    /// Worker threads for the runtimes that have them; `None` means one per core.
    pub worker_threads: Option<usize>,
    /// Honour the `{"t":"panic"}` frame (panic in that connection's handler) to test isolation.
    /// Off by default: then the frame is an `unknown_type` error.
    pub fault_injection: bool,
    /// `epoll`: catch a panicking event handler (`catch_unwind` per event) and close only that
    /// connection, instead of letting the panic unwind the loop and kill the process (the
    /// default, like an uncaught exception in Node.js).
    pub isolate_panics: bool,
    /// `thread-pool`: worker threads; each holds one connection for its lifetime, so this is
    /// the maximum number of concurrent connections.
    pub pool_size: usize,
    /// `thread-pool`: stack size of each worker thread, bytes.
    pub thread_stack_bytes: usize,
    /// `thread-pool`: how long a new connection waits for a free worker before it is answered
    /// with HTTP 503 (counted).
    pub pool_wait: Duration,
    /// `cluster`: the node's identity and backplane; `None` for every other architecture (and
    /// an error for `cluster`).
    pub cluster: Option<ClusterConfig>,
    /// Iterations of a deterministic busy loop ([`crate::work::inject`]) per delivered message,
    /// in every architecture's fan-out. 0 (the default) adds nothing; the regression gate sets
    /// it to inject a known extra cost and measure how often it is detected.
    pub inject_work: u32,
}

/// Which kind of backplane carries a cluster's messages between its nodes: the one name of it
/// at every seam (`serve --backplane`, `run --backplane`, `cluster up --backplane`, the
/// harness's cluster spec, a run's `target.settings.backplane`, the metrics label), each
/// reading and writing it through [`Backplane::as_str`] and [`Backplane::parse`]; a cluster
/// over it is the `compare` column [`Backplane::column`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backplane {
    /// A full mesh of TCP links between nodes (peer-to-peer, like Erlang `:pg`).
    Mesh,
    /// A Redis server's pub/sub (a broker, like the Socket.IO Redis adapter).
    Redis,
}

impl Backplane {
    /// Every backplane, in the order the CLI lists them.
    pub const ALL: [Backplane; 2] = [Backplane::Mesh, Backplane::Redis];

    /// `mesh` or `redis`: the CLI, metrics-label and results-file form.
    pub fn as_str(self) -> &'static str {
        match self {
            Backplane::Mesh => "mesh",
            Backplane::Redis => "redis",
        }
    }

    /// The name of a cluster over this backplane as a column of `chatbench compare`
    /// (`--archs`, the table, the run folders): `cluster-` and [`Backplane::as_str`].
    pub fn column(self) -> &'static str {
        match self {
            Backplane::Mesh => "cluster-mesh",
            Backplane::Redis => "cluster-redis",
        }
    }

    /// What a cluster over it stands for as a `compare` column ([`Backplane::column`]), in a
    /// sentence for the comparison's page (its section of docs/architectures.md is
    /// [`crate::Arch::Cluster`]'s).
    pub fn column_meaning(self) -> &'static str {
        match self {
            Backplane::Mesh => "several task-per-conn server processes, rooms spanning them over a peer-to-peer mesh backplane — like Erlang's :pg or Phoenix PubSub across nodes",
            Backplane::Redis => "several task-per-conn server processes, rooms spanning them through a Redis broker — like the Socket.IO Redis adapter",
        }
    }

    /// One line saying what it is (the CLI's help for each value).
    pub fn about(self) -> &'static str {
        match self {
            Backplane::Mesh => "Peer-to-peer: one TCP link per pair of nodes",
            Backplane::Redis => "A Redis broker",
        }
    }

    /// The backplane named `name` (its [`Backplane::as_str`] form).
    pub fn parse(name: &str) -> Result<Backplane, String> {
        Backplane::ALL
            .into_iter()
            .find(|b| b.as_str() == name)
            .ok_or_else(|| format!("unknown backplane {name:?} (expected mesh or redis)"))
    }
}

impl std::fmt::Display for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster node's backplane and where it reaches the other nodes through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackplaneConfig {
    /// A full mesh of TCP links between nodes (peer-to-peer, like Erlang `:pg`).
    Mesh {
        /// Where this node accepts links from other nodes (port 0: any free port).
        listen: SocketAddr,
        /// Other nodes' `listen` addresses, dialled at start and after a link is lost.
        peers: Vec<SocketAddr>,
    },
    /// A Redis server's pub/sub (a broker, like the Socket.IO Redis adapter).
    Redis {
        /// `redis://host:port[/db]`
        url: String,
    },
}

impl BackplaneConfig {
    /// Which backplane this is.
    pub fn kind(&self) -> Backplane {
        match self {
            BackplaneConfig::Mesh { .. } => Backplane::Mesh,
            BackplaneConfig::Redis { .. } => Backplane::Redis,
        }
    }
}

/// A mesh cluster's shared secret: every node of a cluster holds the same one, proves it on
/// each new link (HMAC challenge–response, `crate::cluster::auth`) and never sends it. Its
/// `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(std::sync::Arc<[u8]>);

impl ClusterSecret {
    /// Shortest secret accepted, in bytes.
    pub const MIN_LEN: usize = 16;
    /// Longest secret accepted, in bytes.
    pub const MAX_LEN: usize = 4096;
    /// The environment variable `serve` reads a secret from (`cluster up` hands its nodes their
    /// secret this way: unlike the command line, another user cannot read a process's
    /// environment).
    pub const ENV: &'static str = "CHATBENCH_CLUSTER_SECRET";

    /// A secret from text (a file's or the environment variable's contents): surrounding
    /// whitespace is ignored; what remains must be 16 to 4096 bytes.
    pub fn from_text(text: &str) -> Result<ClusterSecret, String> {
        let t = text.trim();
        if t.len() < Self::MIN_LEN {
            return Err(format!(
                "the cluster secret has {} bytes, fewer than {}: make one with `openssl rand -hex 32`",
                t.len(),
                Self::MIN_LEN
            ));
        }
        if t.len() > Self::MAX_LEN {
            return Err(format!(
                "the cluster secret has {} bytes, more than {}",
                t.len(),
                Self::MAX_LEN
            ));
        }
        Ok(ClusterSecret(t.as_bytes().into()))
    }

    /// The secret's bytes (the HMAC key).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Settings of a `cluster` node (see `crate::cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster: it names the origin of every forwarded message.
    pub node_id: u64,
    /// The backplane and its addresses.
    pub backplane: BackplaneConfig,
    /// Mesh: how often a link sends a heartbeat.
    pub heartbeat: Duration,
    /// Mesh: a link that has received nothing for this long is declared dead and closed.
    pub dead_after: Duration,
    /// First delay before re-dialling a lost peer or Redis; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// Frames queued per peer link (mesh) or for the publisher (redis). When full, forwarded
    /// messages are dropped and counted in `chatbench_backplane_dropped_total`.
    pub send_queue: usize,
    /// The same queues' bound in bytes (frames of up to `max_frame_bytes` would otherwise let
    /// `send_queue` frames reach gigabytes): beyond it, messages are dropped and counted too.
    pub send_queue_bytes: usize,
    /// Most rooms one peer may declare interest in; beyond it the link is closed as a protocol
    /// violation (counted). Bounds the interest map a peer can grow.
    pub max_remote_rooms: usize,
    /// The same map's bound in bytes of room names.
    pub max_remote_room_bytes: usize,
    /// Mesh: the shared secret links are authenticated with. `None` is allowed only when the
    /// mesh listens on, and dials, loopback addresses (see [`ClusterConfig::validate`]).
    pub secret: Option<ClusterSecret>,
    /// Mesh: time a new link has to complete its hello and authentication; a peer silent for
    /// longer is dropped, holding nothing.
    pub handshake_timeout: Duration,
    /// Mesh: most accepted links still in their handshake at once (unauthenticated); more are
    /// closed at once and counted as refused.
    pub max_pending: usize,
    /// How long a `join` that makes a room new on this node waits for the other nodes (or
    /// Redis) to confirm they will route the room here, before `joined` is sent anyway.
    pub join_sync_timeout: Duration,
}

impl ClusterConfig {
    /// A node with the documented defaults.
    pub fn new(node_id: u64, backplane: BackplaneConfig) -> ClusterConfig {
        ClusterConfig {
            node_id,
            backplane,
            heartbeat: Duration::from_millis(500),
            dead_after: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            send_queue: 16 * 1024,
            send_queue_bytes: 32 * 1024 * 1024,
            max_remote_rooms: 1 << 16,
            max_remote_room_bytes: 4 << 20,
            secret: None,
            handshake_timeout: Duration::from_secs(2),
            max_pending: 64,
            join_sync_timeout: Duration::from_secs(2),
        }
    }

    /// Checks the cluster settings against each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.dead_after <= self.heartbeat {
            return Err("cluster dead_after must be longer than the heartbeat interval".into());
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err("cluster reconnect_min must be > 0 and at most reconnect_max".into());
        }
        if self.send_queue == 0 || self.send_queue_bytes == 0 {
            return Err("cluster send_queue and send_queue_bytes must be at least 1".into());
        }
        if self.max_remote_rooms == 0
            || self.max_remote_room_bytes < chatbench_protocol::MAX_ROOM_LEN
        {
            return Err(
                "cluster max_remote_rooms must be at least 1 and max_remote_room_bytes at least 64"
                    .into(),
            );
        }
        if self.handshake_timeout.is_zero() || self.max_pending == 0 {
            return Err("cluster handshake_timeout and max_pending must be above 0".into());
        }
        match &self.backplane {
            BackplaneConfig::Mesh { listen, peers } => {
                if listen.port() != 0 && peers.contains(listen) {
                    return Err(format!(
                        "--peers contains this node's own --cluster-listen {listen}: list the other nodes only"
                    ));
                }
                if self.secret.is_none() {
                    if !listen.ip().is_loopback() {
                        return Err(format!(
                            "--cluster-listen {listen} is not a loopback address: a mesh other hosts can reach needs a shared secret (--cluster-secret-file FILE or the {} environment variable)",
                            ClusterSecret::ENV
                        ));
                    }
                    if let Some(p) = peers.iter().find(|p| !p.ip().is_loopback()) {
                        return Err(format!(
                            "--peers {p} is not a loopback address: links to other hosts need a shared secret (--cluster-secret-file FILE or the {} environment variable)",
                            ClusterSecret::ENV
                        ));
                    }
                }
            }
            BackplaneConfig::Redis { url } => {
                if !url.starts_with("redis://") {
                    return Err(format!(
                        "--redis-url {url:?} must look like redis://127.0.0.1:6379"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_bytes: 64 * 1024,
            max_rooms_per_conn: 16,
            outbound_queue: 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            slow_consumer_grace: Duration::from_secs(10),
            slow_consumer: SlowConsumerPolicy::Drop,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            read_buffer_size: 1024,
            write_buffer_size: 4096,
            max_write_buffer_size: 1024 * 1024,
            backlog: 8192,
            worker_threads: None,
            fault_injection: false,
            isolate_panics: false,
            pool_size: 1024,
            thread_stack_bytes: 128 * 1024,
            pool_wait: Duration::from_secs(1),
            cluster: None,
            inject_work: 0,
        }
    }
}

impl ServerConfig {
    /// Checks the settings against each other; the binary calls this once after mapping flags.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_frame_bytes < 64 {
            return Err("max_frame_bytes must be at least 64".into());
        }
        if self.max_rooms_per_conn == 0 {
            return Err("max_rooms_per_conn must be at least 1".into());
        }
        if self.outbound_queue == 0 {
            return Err("outbound_queue must be at least 1".into());
        }
        if self.outbound_queue_bytes > crate::chat::MAX_QUEUE_BYTES {
            return Err(format!(
                "outbound_queue_bytes ({}) must be at most {}",
                self.outbound_queue_bytes,
                crate::chat::MAX_QUEUE_BYTES
            ));
        }
        if self.outbound_queue_bytes < self.max_frame_bytes + MAX_FRAME_HEADER {
            return Err(format!(
                "outbound_queue_bytes ({}) must be at least max_frame_bytes + {MAX_FRAME_HEADER} ({}): one largest frame must fit",
                self.outbound_queue_bytes,
                self.max_frame_bytes + MAX_FRAME_HEADER
            ));
        }
        if self.read_buffer_size == 0 {
            return Err("read_buffer_size must be at least 1".into());
        }
        if self.max_write_buffer_size <= self.write_buffer_size {
            return Err("max_write_buffer_size must be larger than write_buffer_size".into());
        }
        if self.pool_size == 0 {
            return Err(
                "pool_size must be at least 1 (thread-pool: it is the most concurrent connections)"
                    .into(),
            );
        }
        if self.worker_threads == Some(0) {
            return Err("worker_threads must be at least 1".into());
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        Ok(())
    }
}

pub use crate::arch::Arch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backplane_reads_back_from_its_name_and_nothing_else_does() {
        for b in Backplane::ALL {
            assert_eq!(Backplane::parse(b.as_str()), Ok(b));
            assert_eq!(b.to_string(), b.as_str());
        }
        assert_eq!(
            BackplaneConfig::Redis {
                url: "redis://h:1".into()
            }
            .kind(),
            Backplane::Redis
        );
        for b in Backplane::ALL {
            assert_eq!(b.column(), format!("cluster-{b}"));
        }
        let e = Backplane::parse("Mesh").unwrap_err();
        assert!(e.contains("\"Mesh\"") && e.contains("mesh or redis"), "{e}");
    }

    #[test]
    fn defaults_are_valid_and_small() {
        let c = ServerConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert!(c.read_buffer_size <= 4096 && c.write_buffer_size <= 4096);
        assert_eq!(c.slow_consumer, SlowConsumerPolicy::Drop);
        assert_eq!("disconnect".parse(), Ok(SlowConsumerPolicy::Disconnect));
        let tiny = ServerConfig {
            outbound_queue_bytes: c.max_frame_bytes,
            ..ServerConfig::default()
        };
        assert!(tiny
            .validate()
            .is_err_and(|e| e.contains("outbound_queue_bytes")));
        let huge = ServerConfig {
            outbound_queue_bytes: crate::chat::MAX_QUEUE_BYTES + 1,
            ..ServerConfig::default()
        };
        assert!(huge.validate().is_err_and(|e| e.contains("at most")));
        let zero_pool = ServerConfig {
            pool_size: 0,
            ..ServerConfig::default()
        };
        assert!(zero_pool.validate().is_err_and(|e| e.contains("pool_size")));
    }

    #[test]
    fn cluster_settings_are_checked() {
        let listen: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let mesh = |peers| ServerConfig {
            cluster: Some(ClusterConfig::new(
                1,
                BackplaneConfig::Mesh { listen, peers },
            )),
            ..ServerConfig::default()
        };
        assert_eq!(
            mesh(vec!["127.0.0.1:7001".parse().unwrap()]).validate(),
            Ok(())
        );
        assert!(mesh(vec![listen])
            .validate()
            .is_err_and(|e| e.contains("own --cluster-listen")));
        let redis = |url: &str| {
            ClusterConfig::new(1, BackplaneConfig::Redis { url: url.into() }).validate()
        };
        assert_eq!(redis("redis://127.0.0.1:6379"), Ok(()));
        assert!(redis("http://x").is_err_and(|e| e.contains("redis://")));
        let mut c = ClusterConfig::new(
            1,
            BackplaneConfig::Redis {
                url: "redis://h".into(),
            },
        );
        c.dead_after = c.heartbeat;
        assert!(c.validate().is_err_and(|e| e.contains("dead_after")));
    }

    #[test]
    fn a_mesh_off_loopback_needs_a_secret() {
        let mesh = |listen: &str, peers: &[&str], secret: Option<ClusterSecret>| {
            let mut c = ClusterConfig::new(
                1,
                BackplaneConfig::Mesh {
                    listen: listen.parse().unwrap(),
                    peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
                },
            );
            c.secret = secret;
            c.validate()
        };
        assert_eq!(mesh("127.0.0.1:0", &["127.0.0.2:9"], None), Ok(()));
        assert_eq!(mesh("[::1]:0", &[], None), Ok(()));
        assert!(mesh("0.0.0.0:9000", &[], None)
            .is_err_and(|e| e.contains("--cluster-listen 0.0.0.0:9000") && e.contains("secret")));
        assert!(mesh("127.0.0.1:0", &["10.0.0.2:9000"], None)
            .is_err_and(|e| e.contains("--peers 10.0.0.2:9000")));
        let secret = ClusterSecret::from_text("0123456789abcdef\n").unwrap();
        assert_eq!(secret.as_bytes(), b"0123456789abcdef");
        assert_eq!(format!("{secret:?}"), "ClusterSecret(<redacted>)");
        assert_eq!(
            mesh("0.0.0.0:9000", &["10.0.0.2:9000"], Some(secret)),
            Ok(())
        );
        assert!(ClusterSecret::from_text("  short  ").is_err_and(|e| e.contains("openssl rand")));
    }
}
