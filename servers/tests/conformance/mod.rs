//! The conformance suite: every case any chatbench server architecture must pass, written once.
//!
//! Each case is a plain function taking a [`Sut`] (system under test: one server of an
//! [`Arch`], or a cluster of [`CLUSTER_NODES`] nodes over a backplane); [`conformance_tests!`]
//! turns the whole list into `#[test]`s for one of them, so a new architecture gets every case
//! with one line: `conformance_tests!(epoll, Arch::Epoll);`. Servers run in-process on
//! `127.0.0.1:0` (via `chatbench_servers::spawn`, or `cluster::spawn_node` per node) and are
//! driven by real tokio-tungstenite clients and a tiny raw HTTP client. Cases connect their
//! clients to [`Target::node`]`(i)`, which is the one server for a single-server architecture
//! and node `i % n` for a cluster, so the same case spreads its clients over the nodes; counter
//! checks add a metric up over every node ([`sum`]). Every wait has a deadline, so a broken
//! server fails a case instead of hanging.
//!
//! A server of another runtime ([`External`], e.g. the Elixir peer under `servers/peers/`)
//! runs as its own process, started as `chatbench run --serve-peer` starts it, with the case's
//! [`ServerConfig`] passed as its flags ([`external_flags`]); the cases that cannot apply to it
//! are listed with their reasons in [`not_applicable`], and each is printed when passed over.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chatbench_protocol::{encode_join, encode_leave, encode_msg, parse_server, ServerFrame};
use chatbench_servers::cluster::{spawn_node, ClusterNode};
use chatbench_servers::{
    spawn, Arch, BackplaneConfig, ClusterConfig, RunningServer, ServerConfig, Shutdown,
    SlowConsumerPolicy,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

/// Longest any single wait may take before the case fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Generates one `#[test]` per conformance case for an architecture.
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $arch:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(@cases $arch;
                join_is_acked,
                rejoin_re_acks,
                fan_out_reaches_every_other_member_once,
                forwarded_frames_are_byte_identical,
                multi_room_membership,
                leave_stops_delivery,
                not_joined_for_msg_and_leave,
                too_many_rooms_at_the_limit,
                unknown_type_keeps_connection_usable,
                malformed_json_closes_1008,
                bad_room_closes_1008,
                oversized_frame_closes_1009,
                invalid_utf8_closes_1007,
                binary_frame_closes_1003,
                protocol_error_closes_1002,
                handshake_timeout_is_counted,
                slow_consumer_drop_policy,
                slow_consumer_disconnect_policy,
                slow_consumer_bytes_bounded,
                slow_consumer_grace_disconnects,
                metrics_names_and_values,
                healthz_and_not_found,
                graceful_shutdown_sends_1001,
                panic_kills_only_that_connection,
                panic_without_fault_injection_is_unknown_type,
            );
        }
    };
    (@cases $arch:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let sut = super::conformance::Sut::from($arch);
                if let Some(why) = super::conformance::not_applicable(sut, stringify!($case)) {
                    eprintln!(
                        "conformance: {} does not apply to {}: {why}",
                        stringify!($case),
                        sut.as_str()
                    );
                    return;
                }
                super::conformance::$case(sut);
            }
        )*
    };
}

/// Nodes in the cluster a cluster [`Sut`] starts.
pub const CLUSTER_NODES: usize = 3;

/// A cluster backplane under test (Redis pub/sub on a private `redis-server` per case): the
/// servers' own backplane type.
pub use chatbench_servers::Backplane;

/// The system under test: one server, or a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sut {
    /// One server of this architecture.
    Single(Arch),
    /// [`CLUSTER_NODES`] `cluster` nodes over this backplane.
    Cluster(Backplane),
    /// A server of another runtime, as its own process.
    External(External),
}

/// A server of another runtime that the suite starts as a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum External {
    /// `servers/peers/elixir/` (needs `elixir`, `erlang-cowlib`, `erlang-jiffy`).
    Elixir,
    /// [`CLUSTER_NODES`] nodes of it joined with distributed Erlang (`elixir-cluster`): rooms
    /// are `:pg` groups spanning the nodes.
    ElixirCluster,
}

impl External {
    fn peer(self) -> chatbench_harness::peers::Peer {
        match self {
            External::Elixir | External::ElixirCluster => chatbench_harness::peers::Peer::Elixir,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            External::Elixir => "elixir",
            External::ElixirCluster => "elixir-cluster",
        }
    }
}

/// The cases that do not apply to `sut`, each with the reason (printed when it is passed
/// over). Every entry names a real case: `not_applicable_lists_real_cases` checks it.
pub fn not_applicable(sut: Sut, case: &str) -> Option<&'static str> {
    let list: &[(&str, &str)] = match sut {
        Sut::External(_) => ELIXIR_NOT_APPLICABLE,
        _ => &[],
    };
    list.iter().find(|(c, _)| *c == case).map(|(_, why)| *why)
}

/// The Elixir peer's exceptions to the suite (none today: every case applies, the panic case
/// with the BEAM's fault model, one crashed connection process, for both `isolate_panics`).
pub const ELIXIR_NOT_APPLICABLE: &[(&str, &str)] = &[];

/// The server flags that carry `config` to an external server (the Elixir peer's flag names).
pub fn external_flags(config: &ServerConfig) -> Vec<String> {
    let ms = |d: Duration| d.as_millis().max(1).to_string();
    let mut f = vec![
        "--max-frame-bytes".to_string(),
        config.max_frame_bytes.to_string(),
        "--max-rooms".into(),
        config.max_rooms_per_conn.to_string(),
        "--outbound-queue".into(),
        config.outbound_queue.to_string(),
        "--outbound-queue-bytes".into(),
        config.outbound_queue_bytes.to_string(),
        "--slow-consumer".into(),
        config.slow_consumer.to_string(),
        // The reference servers' flag and format (a duration: `300ms`, `10s`).
        "--slow-consumer-grace".into(),
        format!("{}ms", config.slow_consumer_grace.as_millis()),
        "--handshake-timeout-ms".into(),
        ms(config.handshake_timeout),
        "--close-timeout-ms".into(),
        ms(config.close_timeout),
        "--shutdown-grace-ms".into(),
        ms(config.shutdown_grace),
    ];
    if config.fault_injection {
        f.push("--fault-injection".into());
    }
    f
}

impl From<Arch> for Sut {
    fn from(a: Arch) -> Sut {
        Sut::Single(a)
    }
}

impl Sut {
    /// The `arch` label the servers report.
    pub fn as_str(self) -> &'static str {
        match self {
            Sut::Single(a) => a.as_str(),
            Sut::Cluster(_) => Arch::Cluster.as_str(),
            Sut::External(e) => e.as_str(),
        }
    }
}

/// Where a case's clients connect: the server, or the nodes of a cluster (`Copy`, so cases
/// use it freely inside their `async move` blocks).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    nodes: &'static [SocketAddr],
}

impl Target {
    /// The server, or node 0 of a cluster (for node-local checks).
    pub fn addr(self) -> SocketAddr {
        self.nodes[0]
    }

    /// The address for client number `i`: node `i % n` of a cluster.
    pub fn node(self, i: usize) -> SocketAddr {
        self.nodes[i % self.nodes.len()]
    }

    /// Every server address.
    pub fn nodes(self) -> &'static [SocketAddr] {
        self.nodes
    }

    /// How many of `clients` (client numbers) sit on distinct servers: the `chatbench_rooms`
    /// total of a room they all joined.
    pub fn servers_hosting(self, clients: &[usize]) -> f64 {
        let mut nodes: Vec<_> = clients.iter().map(|&i| i % self.nodes.len()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.len() as f64
    }
}

/// The running servers of a case.
pub enum Fixture {
    Single(RunningServer),
    /// The nodes, and the Redis server they use (stopped after them).
    Cluster(Vec<ClusterNode>, Option<RedisServer>),
    /// A server process of another runtime.
    External(chatbench_harness::launcher::ServerChild),
    /// Node processes of another runtime's cluster (and the epmd they use).
    ExternalCluster(chatbench_harness::peers::ElixirCluster),
}

impl Fixture {
    pub fn target(&self) -> Target {
        let nodes: Vec<SocketAddr> = match self {
            Fixture::Single(s) => vec![s.addr],
            Fixture::Cluster(n, _) => n.iter().map(|n| n.server.addr).collect(),
            Fixture::External(c) => vec![c.addr],
            Fixture::ExternalCluster(c) => c.addrs(),
        };
        Target {
            nodes: Box::leak(nodes.into_boxed_slice()),
        }
    }

    /// Shutdown signals of every in-process server (none for an external one).
    pub fn shutdowns(&self) -> Vec<Shutdown> {
        match self {
            Fixture::Single(s) => vec![s.shutdown.clone()],
            Fixture::Cluster(n, _) => n.iter().map(|n| n.server.shutdown.clone()).collect(),
            Fixture::External(_) | Fixture::ExternalCluster(_) => Vec::new(),
        }
    }

    /// Starts a graceful stop of every server: their shutdown signals, or SIGTERM to an
    /// external server's process.
    pub fn trigger_stop(&self) {
        for s in self.shutdowns() {
            s.trigger();
        }
        if let Fixture::External(c) = self {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
            unsafe {
                libc::kill(c.pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if let Fixture::ExternalCluster(c) = self {
            c.terminate();
        }
    }

    /// Waits for every server to return (after their shutdown was triggered). An external
    /// server must exit with status 0 within [`WAIT`].
    pub fn join(self) -> Result<(), chatbench_servers::ServerError> {
        match self {
            Fixture::Single(s) => s.join(),
            Fixture::Cluster(nodes, _redis) => nodes.into_iter().try_for_each(|n| n.server.join()),
            Fixture::ExternalCluster(mut cluster) => {
                for c in cluster.nodes.iter_mut().filter_map(Option::take) {
                    Fixture::External(c).join()?;
                }
                Ok(())
            }
            Fixture::External(mut c) => {
                let start = Instant::now();
                let status = loop {
                    if let Some(status) = c.exit_status() {
                        break status;
                    }
                    if start.elapsed() > WAIT {
                        let cmd = c.args.join(" ");
                        let (how, tail) = c.stop(Duration::from_millis(100));
                        panic!("the server ({cmd}) did not exit within {WAIT:?} of SIGTERM ({how}); its stderr:\n{tail}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                assert!(
                    status.success(),
                    "the server exited with {status}; its stderr:\n{}",
                    c.stderr_tail()
                );
                Ok(())
            }
        }
    }

    pub fn stop(self) -> Result<(), chatbench_servers::ServerError> {
        self.trigger_stop();
        self.join()
    }
}

/// The configuration cases start from: small timeouts so failure paths finish fast.
pub fn test_config() -> ServerConfig {
    ServerConfig {
        worker_threads: Some(2),
        shutdown_grace: Duration::from_secs(3),
        close_timeout: Duration::from_millis(500),
        handshake_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

/// Starts `arch` with `config` and runs `case` against it on a current-thread runtime.
pub fn with_server<F, Fut>(arch: impl Into<Sut>, config: ServerConfig, case: F)
where
    F: FnOnce(Target) -> Fut,
    Fut: Future<Output = ()>,
{
    let server = start(arch.into(), config);
    block_on(case(server.target()));
    server.stop().expect("server returns cleanly");
}

/// Starts the system under test and, for a cluster, waits until every node is linked.
pub fn start(arch: Sut, config: ServerConfig) -> Fixture {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    match arch {
        Sut::Single(a) => Fixture::Single(spawn(a, config, any).expect("server starts")),
        Sut::Cluster(Backplane::Mesh) => {
            let mut nodes: Vec<ClusterNode> = Vec::new();
            for id in 0..CLUSTER_NODES as u64 {
                let peers = nodes.iter().filter_map(|n| n.cluster_addr).collect();
                nodes.push(start_mesh_node(&config, id + 1, peers));
            }
            let fixture = Fixture::Cluster(nodes, None);
            let t = fixture.target();
            block_on(wait_linked(t, CLUSTER_NODES as f64 - 1.0));
            fixture
        }
        Sut::External(External::ElixirCluster) => {
            let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
            let cluster = chatbench_harness::peers::ElixirCluster::start(
                &peers,
                CLUSTER_NODES,
                1,
                &[],
                &external_flags(&config),
            )
            .unwrap_or_else(|err| panic!("cannot start the elixir-cluster: {err}"));
            let fixture = Fixture::ExternalCluster(cluster);
            // Every node's :pg scope has synced with the others'.
            let t = fixture.target();
            block_on(async move {
                for &n in t.nodes() {
                    wait_metric(n, "beam_pg_remote_scopes", |v| {
                        v == CLUSTER_NODES as f64 - 1.0
                    })
                    .await;
                }
            });
            fixture
        }
        Sut::External(e) => Fixture::External(start_external(e, &config)),
        Sut::Cluster(Backplane::Redis) => {
            let redis = RedisServer::start();
            let nodes = (1..=CLUSTER_NODES as u64)
                .map(|id| start_redis_node(&config, id, &redis.url()))
                .collect();
            let fixture = Fixture::Cluster(nodes, Some(redis));
            // Each node holds two Redis connections: publishing and subscribing.
            block_on(wait_linked(fixture.target(), 2.0));
            fixture
        }
    }
}

/// Starts an external server with `config` as its flags, as `chatbench run --serve-peer`
/// starts it; fails (never skips) with what to install when its runtime is missing.
pub fn start_external(
    e: External,
    config: &ServerConfig,
) -> chatbench_harness::launcher::ServerChild {
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let (program, args) = e
        .peer()
        .command_with(&peers, &[], &external_flags(config))
        .unwrap_or_else(|err| panic!("cannot start the {} server: {err}", e.peer().as_str()));
    chatbench_harness::launcher::ServerChild::start_command(&program, &args, &[])
        .unwrap_or_else(|err| panic!("the {} server did not start: {err}", e.peer().as_str()))
}

/// A redis-backplane node with id `id` using the Redis at `url`.
pub fn start_redis_node(config: &ServerConfig, id: u64, url: &str) -> ClusterNode {
    let mut cluster = ClusterConfig::new(id, BackplaneConfig::Redis { url: url.into() });
    cluster.reconnect_max = Duration::from_millis(500);
    let config = ServerConfig {
        cluster: Some(cluster),
        ..config.clone()
    };
    spawn_node(config, "127.0.0.1:0".parse().unwrap()).expect("cluster node starts")
}

/// A private `redis-server` on a free loopback port, killed (by PID) when dropped, also when a
/// test panics. No persistence, no other clients.
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    /// Extra configuration arguments (e.g. `--requirepass PW`).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it accepts connections.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Vec::new())
    }

    /// [`RedisServer::start`] with extra configuration arguments.
    pub fn start_with(extra: Vec<String>) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut r = RedisServer {
            child: None,
            port,
            extra,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the redis tests need a real Redis: \
                     apt-get install redis-server"
                )
            });
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "redis-server exited at start ({status}); port {} taken?",
                    self.port
                );
            }
            assert!(
                start.elapsed() < WAIT,
                "redis-server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the server (by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The mesh secret of the test clusters (every mesh node of the suite authenticates with it).
pub fn test_secret() -> chatbench_servers::ClusterSecret {
    chatbench_servers::ClusterSecret::from_text("conformance-suite-cluster-secret").expect("valid")
}

/// A mesh node with id `id` that dials `peers`, listening on free loopback ports.
pub fn start_mesh_node(config: &ServerConfig, id: u64, peers: Vec<SocketAddr>) -> ClusterNode {
    start_mesh_node_at(config, id, "127.0.0.1:0".parse().unwrap(), peers)
}

/// A mesh node with id `id` whose mesh listener is `listen`, dialling `peers`.
pub fn start_mesh_node_at(
    config: &ServerConfig,
    id: u64,
    listen: SocketAddr,
    peers: Vec<SocketAddr>,
) -> ClusterNode {
    let mut cluster = ClusterConfig::new(id, BackplaneConfig::Mesh { listen, peers });
    cluster.reconnect_max = Duration::from_millis(500);
    cluster.secret = Some(test_secret());
    let config = ServerConfig {
        cluster: Some(cluster),
        ..config.clone()
    };
    spawn_node(config, "127.0.0.1:0".parse().unwrap()).expect("cluster node starts")
}

/// Waits until every node of `t` reports `up` backplane peers.
pub async fn wait_linked(t: Target, up: f64) {
    for &n in t.nodes() {
        wait_metric(n, "chatbench_backplane_peers_up", |v| v == up).await;
    }
}

/// `sample` added up over every server of `t`.
pub async fn sum(t: Target, sample: &str) -> f64 {
    let mut total = 0.0;
    for &n in t.nodes() {
        total += value(&metrics(n).await, sample);
    }
    total
}

/// The `/metrics` text of every server of `t` with each sample's value added up over them
/// (`# HELP`/`# TYPE` lines from the first), so `value` reads cluster-wide totals.
pub async fn totals(t: Target) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut sums: std::collections::HashMap<String, f64> = Default::default();
    let mut comments = String::new();
    for (i, &n) in t.nodes().iter().enumerate() {
        for line in metrics(n).await.lines() {
            if line.starts_with('#') {
                if i == 0 {
                    comments.push_str(line);
                    comments.push('\n');
                }
                continue;
            }
            let Some((name, v)) = line.rsplit_once(' ') else {
                continue;
            };
            let v: f64 = v
                .parse()
                .unwrap_or_else(|_| panic!("bad sample line {line:?}"));
            if !sums.contains_key(name) {
                order.push(name.to_string());
            }
            *sums.entry(name.to_string()).or_default() += v;
        }
    }
    let mut out = comments;
    for name in order {
        out.push_str(&format!("{name} {}\n", sums[&name]));
    }
    out
}

/// Polls until `pred` holds for `sample` added up over every server of `t`.
pub async fn wait_sum(t: Target, sample: &str, pred: impl Fn(f64) -> bool) -> f64 {
    let start = Instant::now();
    loop {
        let v = sum(t, sample).await;
        if pred(v) {
            return v;
        }
        assert!(
            start.elapsed() < WAIT,
            "{sample} (sum over nodes) stayed at {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn block_on<Fut: Future>(f: Fut) -> Fut::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn deadline<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A WebSocket test client.
pub struct Client {
    pub ws: WebSocketStream<TcpStream>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = deadline("TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        Client::handshake(addr, stream).await
    }

    /// A client whose socket receive buffer is tiny, so a server fills it quickly.
    pub async fn connect_small_rcvbuf(addr: SocketAddr) -> Client {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        socket.set_nonblocking(true).unwrap();
        let stream = TcpStream::from_std(socket.into()).unwrap();
        Client::handshake(addr, stream).await
    }

    async fn handshake(addr: SocketAddr, stream: TcpStream) -> Client {
        let url = format!("ws://{addr}/ws");
        let (ws, _) = deadline(
            "WebSocket handshake",
            tokio_tungstenite::client_async(url, stream),
        )
        .await
        .expect("handshake");
        Client { ws }
    }

    pub async fn send(&mut self, text: &str) {
        deadline("send", self.ws.send(Message::text(text)))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        deadline("send", self.ws.send(msg)).await.expect("send");
    }

    /// The next message (pings/pongs skipped); `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        loop {
            match deadline("a frame", self.ws.next()).await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    }

    /// The next text frame; panics on anything else.
    pub async fn recv(&mut self) -> String {
        match self.next().await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub async fn join(&mut self, room: &str) {
        self.send(&encode_join(room)).await;
        let got = self.recv().await;
        assert_eq!(
            parse_server(&got),
            Ok(ServerFrame::Joined { room: room.into() }),
            "{got}"
        );
    }

    pub async fn expect_error(&mut self, code: &str) {
        let got = self.recv().await;
        match parse_server(&got) {
            Ok(ServerFrame::Error { code: c, .. }) => assert_eq!(c, code, "{got}"),
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Expects a close frame with `code`, then the end of the stream.
    pub async fn expect_close(&mut self, code: u16) {
        match self.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), code),
            other => panic!("expected close {code}, got {other:?}"),
        }
        // The client answers the close; the server then ends the TCP connection.
        loop {
            match self.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Expects an `error` frame with `code` followed by a close with `close`.
    pub async fn expect_fatal(&mut self, code: &str, close: u16) {
        self.expect_error(code).await;
        self.expect_close(close).await;
    }

    /// Expects that the connection ends (close frame, error, or EOF) without more text.
    pub async fn expect_gone(&mut self) {
        match self.next().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
            Some(Ok(other)) => panic!("expected the connection to end, got {other:?}"),
        }
    }
}

pub fn msg(room: &str, from: &str, seq: u64) -> String {
    encode_msg(room, from, seq, 1_000 + seq, "hello")
}

/// `GET path` over a fresh TCP connection; returns the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = deadline("TCP connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    deadline("HTTP response", s.read_to_end(&mut out))
        .await
        .expect("read");
    let text = String::from_utf8(out).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("complete response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

pub async fn metrics(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

pub fn value(text: &str, sample: &str) -> f64 {
    chatbench_servers::metrics::sample_value(text, sample)
        .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
}

/// Polls `/metrics` until `pred` holds for `sample` (counters are updated asynchronously to
/// what a client observes, e.g. after a socket closes).
pub async fn wait_metric(addr: SocketAddr, sample: &str, pred: impl Fn(f64) -> bool) -> f64 {
    let start = Instant::now();
    loop {
        let v = value(&metrics(addr).await, sample);
        if pred(v) {
            return v;
        }
        assert!(start.elapsed() < WAIT, "{sample} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

pub fn join_is_acked(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        a.join("r1").await;
        // Escaped-free names of every allowed character class.
        a.join("Room_1.a:b-c").await;
    });
}

pub fn rejoin_re_acks(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let (mut a, mut b) = (
            Client::connect(t.node(0)).await,
            Client::connect(t.node(1)).await,
        );
        a.join("r1").await;
        a.join("r1").await;
        b.join("r1").await;
        // Still one membership: B's message arrives once, then B's next one.
        b.send(&msg("r1", "b", 1)).await;
        b.send(&msg("r1", "b", 2)).await;
        assert_eq!(a.recv().await, msg("r1", "b", 1));
        assert_eq!(a.recv().await, msg("r1", "b", 2));
    });
}

pub fn fan_out_reaches_every_other_member_once(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut c = Vec::new();
        for _ in 0..4 {
            let mut cl = Client::connect(t.node(0)).await;
            cl.join("room").await;
            c.push(cl);
        }
        // Each member sends in turn; every other member's next frame is exactly that message.
        // An echo or a duplicate would be queued ahead of the next sender's message and show
        // up as a mismatch here, with no sleeps needed.
        for round in 0..2u64 {
            for sender in 0..c.len() {
                let text = msg("room", &format!("c{sender}"), round);
                c[sender].send(&text).await;
                for (i, cl) in c.iter_mut().enumerate() {
                    if i != sender {
                        assert_eq!(cl.recv().await, text, "member {i}");
                    }
                }
            }
        }
    });
}

pub fn forwarded_frames_are_byte_identical(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let (mut a, mut b) = (
            Client::connect(t.node(0)).await,
            Client::connect(t.node(1)).await,
        );
        a.join("r1").await;
        b.join("r1").await;
        let odd = "{ \"t\" : \"msg\",\"room\":\"r1\",\"from\":\"a0.c1\",\"seq\":7,\"ts\":8,\
                   \"body\":\"h\\u00e9llo \\\"q\\\" ✓\",\"extra\":[1,{\"x\":null}]  }";
        a.send(odd).await;
        assert_eq!(b.recv().await, odd);
        let big = encode_msg("r1", "a0.c1", 9, 10, &"x".repeat(20_000));
        a.send(&big).await;
        assert_eq!(b.recv().await, big);
    });
}

pub fn multi_room_membership(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        let mut b = Client::connect(t.node(1)).await;
        let mut c = Client::connect(t.node(2)).await;
        a.join("x").await;
        a.join("y").await;
        b.join("x").await;
        c.join("y").await;
        b.send(&msg("x", "b", 1)).await;
        assert_eq!(a.recv().await, msg("x", "b", 1));
        c.send(&msg("y", "c", 1)).await;
        assert_eq!(a.recv().await, msg("y", "c", 1));
        // A's message to x reaches B only; then A's message to y reaches C only.
        a.send(&msg("x", "a", 1)).await;
        a.send(&msg("y", "a", 2)).await;
        assert_eq!(b.recv().await, msg("x", "a", 1));
        assert_eq!(c.recv().await, msg("y", "a", 2));
        // Two senders, two rooms: both arrive, in either order.
        c.send(&msg("y", "c", 2)).await;
        b.send(&msg("x", "b", 2)).await;
        let mut got = vec![a.recv().await, a.recv().await];
        got.sort();
        let mut want = vec![msg("y", "c", 2), msg("x", "b", 2)];
        want.sort();
        assert_eq!(got, want);
    });
}

pub fn leave_stops_delivery(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let (mut a, mut b) = (
            Client::connect(t.node(0)).await,
            Client::connect(t.node(1)).await,
        );
        a.join("r1").await;
        a.join("r2").await;
        b.join("r1").await;
        b.join("r2").await;
        a.send(&encode_leave("r1")).await;
        // A's leave is processed before A's next frame, so it is out of r1 by then.
        a.send(&msg("r2", "a", 1)).await;
        assert_eq!(b.recv().await, msg("r2", "a", 1));
        b.send(&msg("r1", "b", 1)).await; // must not reach A
        b.send(&msg("r2", "b", 2)).await;
        assert_eq!(a.recv().await, msg("r2", "b", 2));
        // And A may not send to r1 any more.
        a.send(&msg("r1", "a", 2)).await;
        a.expect_error("not_joined").await;
    });
}

pub fn not_joined_for_msg_and_leave(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        a.send(&msg("r1", "a", 1)).await;
        a.expect_error("not_joined").await;
        a.send(&encode_leave("r1")).await;
        a.expect_error("not_joined").await;
        a.join("r1").await; // still open and usable
    });
}

pub fn too_many_rooms_at_the_limit(arch: Sut) {
    let config = ServerConfig {
        max_rooms_per_conn: 3,
        ..test_config()
    };
    with_server(arch, config, |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        for r in ["r1", "r2", "r3"] {
            a.join(r).await;
        }
        a.send(&encode_join("r4")).await;
        a.expect_error("too_many_rooms").await;
        a.join("r3").await; // re-joining a joined room is fine at the limit
        a.send(&encode_leave("r1")).await;
        a.join("r4").await; // a slot is free again
    });
}

pub fn unknown_type_keeps_connection_usable(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        a.send(r#"{"t":"dance","room":"r1"}"#).await;
        a.expect_error("unknown_type").await;
        a.join("r1").await;
    });
}

pub fn malformed_json_closes_1008(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        a.send("{not json").await;
        a.expect_fatal("bad_json", 1008).await;
        let mut b = Client::connect(t.node(1)).await;
        b.send(r#"{"t":"join"}"#).await;
        b.expect_fatal("bad_field", 1008).await;
        let m = totals(t).await;
        assert!(value(&m, r#"chatbench_errors_sent_total{code="bad_json"}"#) >= 1.0);
        wait_sum(
            t,
            r#"chatbench_disconnects_total{reason="bad_json"}"#,
            |v| v == 1.0,
        )
        .await;
        wait_sum(
            t,
            r#"chatbench_disconnects_total{reason="bad_field"}"#,
            |v| v == 1.0,
        )
        .await;
    });
}

pub fn bad_room_closes_1008(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        a.send(r#"{"t":"join","room":"has space"}"#).await;
        a.expect_fatal("bad_room", 1008).await;
    });
}

pub fn oversized_frame_closes_1009(arch: Sut) {
    let config = ServerConfig {
        max_frame_bytes: 1024,
        ..test_config()
    };
    with_server(arch, config, |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        a.join("r1").await;
        a.send(&encode_msg("r1", "a", 1, 1, &"x".repeat(4000)))
            .await;
        a.expect_fatal("frame_too_large", 1009).await;
        wait_sum(
            t,
            r#"chatbench_disconnects_total{reason="frame_too_large"}"#,
            |v| v == 1.0,
        )
        .await;
        // Just under the limit is fine.
        let mut b = Client::connect(t.node(1)).await;
        b.join("r1").await;
        let near = encode_msg("r1", "b", 1, 1, "");
        let near = encode_msg("r1", "b", 1, 1, &"y".repeat(1024 - near.len()));
        assert_eq!(near.len(), 1024);
        b.send(&near).await;
        b.join("r2").await;
    });
}

fn raw_text_frame(payload: &[u8], opcode: OpCode) -> Message {
    Message::Frame(Frame::message(payload.to_vec(), opcode, true))
}

pub fn invalid_utf8_closes_1007(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        // tungstenite masks raw frames from a client, but does not check their UTF-8.
        a.send_raw(raw_text_frame(
            b"{\"t\":\"join\xff\xfe",
            OpCode::Data(Data::Text),
        ))
        .await;
        a.expect_fatal("invalid_utf8", 1007).await;
    });
}

pub fn binary_frame_closes_1003(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        a.send_raw(Message::binary(
            b"{\"t\":\"join\",\"room\":\"r1\"}".to_vec(),
        ))
        .await;
        a.expect_fatal("binary_frame", 1003).await;
    });
}

pub fn protocol_error_closes_1002(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        a.send_raw(raw_text_frame(b"x", OpCode::Data(Data::Reserved(3))))
            .await;
        a.expect_fatal("protocol_error", 1002).await;
    });
}

pub fn handshake_timeout_is_counted(arch: Sut) {
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(200),
        ..test_config()
    };
    with_server(arch, config, |t| async move {
        let mut s = TcpStream::connect(t.addr()).await.unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        // The server drops us: EOF (or a reset) within the deadline.
        let n = deadline("the server to drop a stalled handshake", s.read(&mut buf)).await;
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        wait_sum(t, "chatbench_handshake_timeouts_total", |v| v == 1.0).await;
        // A silent connection is timed out too.
        let mut s = TcpStream::connect(t.addr()).await.unwrap();
        let n = deadline("the server to drop a silent connection", s.read(&mut buf)).await;
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        wait_sum(t, "chatbench_handshake_timeouts_total", |v| v == 2.0).await;
    });
}

/// A room "flood" of a member that never reads (tiny receive buffer), one that reads and one
/// that sends, on different nodes of a cluster: (slow, fast, sender).
async fn flood_room(t: Target) -> (Client, Client, Client) {
    let mut slow = Client::connect_small_rcvbuf(t.node(0)).await;
    let mut fast = Client::connect(t.node(1)).await;
    let mut sender = Client::connect(t.node(2)).await;
    slow.join("flood").await;
    fast.join("flood").await;
    sender.join("flood").await;
    (slow, fast, sender)
}

/// Floods a room holding a member that never reads, in lockstep with a member that does,
/// until `sample` is counted; the reading member must get every message in order.
async fn flood_past_slow_consumer(t: Target, sample: &str, body_len: usize) {
    let (slow, mut fast, mut sender) = flood_room(t).await;
    let body = "z".repeat(body_len);
    let mut seq = 0u64;
    // ~10 MB per 300 messages; the kernel buffers on loopback hold a few MB at most.
    while seq < 3000 {
        for _ in 0..100 {
            let text = encode_msg("flood", "sender", seq, seq, &body);
            sender.send(&text).await;
            assert!(
                fast.recv().await == text,
                "fast member lost or reordered seq {seq}"
            );
            seq += 1;
        }
        if value(&totals(t).await, sample) >= 1.0 {
            drop(slow);
            return;
        }
    }
    panic!("{sample} never counted after {seq} messages");
}

pub fn slow_consumer_drop_policy(arch: Sut) {
    let config = ServerConfig {
        outbound_queue: 16,
        slow_consumer: SlowConsumerPolicy::Drop,
        ..test_config()
    };
    with_server(arch, config, |t| async move {
        let sample = r#"chatbench_drops_total{reason="queue_full"}"#;
        flood_past_slow_consumer(t, sample, 32 * 1024).await;
        let m = totals(t).await;
        assert_eq!(
            value(&m, r#"chatbench_disconnects_total{reason="slow_consumer"}"#),
            0.0
        );
    });
}

pub fn slow_consumer_disconnect_policy(arch: Sut) {
    let config = ServerConfig {
        outbound_queue: 16,
        slow_consumer: SlowConsumerPolicy::Disconnect,
        close_timeout: Duration::from_millis(200),
        ..test_config()
    };
    with_server(arch, config, |t| async move {
        let sample = r#"chatbench_disconnects_total{reason="slow_consumer"}"#;
        flood_past_slow_consumer(t, sample, 32 * 1024).await;
        let m = totals(t).await;
        assert_eq!(
            value(&m, r#"chatbench_drops_total{reason="queue_full"}"#),
            0.0
        );
        assert!(value(&m, r#"chatbench_errors_sent_total{code="slow_consumer"}"#) >= 1.0);
    });
}

const QUEUED_BYTES: &str = "chatbench_outbound_queued_bytes";

/// A member that joins a room and never reads while 60 KB messages flow: the bytes the server
/// holds for it stay within `outbound_queue_bytes` (the 1,024-frame bound alone lets it pin
/// ~61 MB), the refused frames are counted, and its bytes are released when it goes.
pub fn slow_consumer_bytes_bounded(arch: Sut) {
    const CAP: usize = 512 * 1024;
    let config = ServerConfig {
        outbound_queue_bytes: CAP,
        slow_consumer: SlowConsumerPolicy::Drop,
        slow_consumer_grace: Duration::from_secs(600),
        ..test_config()
    };
    with_server(arch, config, |t| async move {
        let (slow, mut fast, mut sender) = flood_room(t).await;
        let body = "y".repeat(60 * 1000);
        // 400 × 60 KB = 24 MB: many times what the kernel's loopback buffers and the cap hold.
        // The slow member's queue holds at most CAP; task-per-conn's writer holds one taken
        // batch beside it (at most CAP more), and the reading member may still count the frame
        // it just read (its writer releases the bytes after the write returns).
        let bound = (2 * CAP + 2 * 64 * 1024) as f64;
        let mut peak = 0.0f64;
        for seq in 0..400u64 {
            let text = encode_msg("flood", "sender", seq, seq, &body);
            sender.send(&text).await;
            assert!(fast.recv().await == text, "fast member lost seq {seq}");
            if seq % 20 == 19 {
                let queued = sum(t, QUEUED_BYTES).await;
                assert!(
                    queued <= bound,
                    "{queued} bytes queued after {seq} messages"
                );
                peak = peak.max(queued);
            }
        }
        let m = totals(t).await;
        assert!(
            value(&m, r#"chatbench_drops_total{reason="queue_bytes"}"#) >= 1.0,
            "the byte bound never refused a frame (peak {peak} bytes queued)"
        );
        assert_eq!(
            value(&m, r#"chatbench_disconnects_total{reason="slow_consumer"}"#),
            0.0
        );
        assert!(peak > 0.0, "nothing ever counted as queued");
        drop(slow);
        wait_sum(t, QUEUED_BYTES, |v| v == 0.0).await;
    });
}

/// Under the default `drop` policy, a member whose frames keep being refused with nothing
/// written to it for `slow_consumer_grace` is disconnected (`slow_consumer`, counted).
pub fn slow_consumer_grace_disconnects(arch: Sut) {
    let config = ServerConfig {
        outbound_queue_bytes: 256 * 1024,
        slow_consumer_grace: Duration::from_millis(300),
        close_timeout: Duration::from_millis(200),
        ..test_config()
    };
    assert_eq!(config.slow_consumer, SlowConsumerPolicy::Drop);
    with_server(arch, config, |t| async move {
        let sample = r#"chatbench_disconnects_total{reason="slow_consumer"}"#;
        flood_past_slow_consumer(t, sample, 60 * 1000).await;
        let m = totals(t).await;
        assert!(value(&m, r#"chatbench_drops_total{reason="queue_bytes"}"#) >= 1.0);
        assert!(value(&m, r#"chatbench_errors_sent_total{code="slow_consumer"}"#) >= 1.0);
        wait_sum(t, QUEUED_BYTES, |v| v == 0.0).await;
    });
}

pub fn metrics_names_and_values(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let (mut a, mut b) = (
            Client::connect(t.node(0)).await,
            Client::connect(t.node(1)).await,
        );
        a.join("r1").await;
        b.join("r1").await;
        a.send(&msg("r1", "a", 1)).await;
        assert_eq!(b.recv().await, msg("r1", "a", 1));
        // A writer counts a delivery once its write returned, which can be just after the
        // reader got the frame: read the counters once they have caught up (bounded wait).
        let mut m = totals(t).await;
        for _ in 0..100 {
            if value(&m, "chatbench_deliveries_total") >= 1.0
                && value(&m, "chatbench_frames_out_total") >= 3.0
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            m = totals(t).await;
        }
        for family in [
            "chatbench_connections",
            "chatbench_connections_accepted_total",
            "chatbench_rooms",
            "chatbench_frames_in_total",
            "chatbench_frames_out_total",
            "chatbench_deliveries_total",
            "chatbench_drops_total",
            "chatbench_outbound_queued_bytes",
            "chatbench_disconnects_total",
            "chatbench_errors_sent_total",
            "chatbench_handshake_timeouts_total",
            "chatbench_http_requests_total",
            "chatbench_info",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_threads",
        ] {
            assert!(
                m.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{m}"
            );
        }
        assert!(m.contains(&format!(
            "chatbench_info{{arch=\"{}\",version=\"",
            arch.as_str()
        )));
        assert_eq!(value(&m, "chatbench_connections"), 2.0);
        // A room counts once on every server that has a member in it.
        assert_eq!(value(&m, "chatbench_rooms"), t.servers_hosting(&[0, 1]));
        assert_eq!(value(&m, "chatbench_deliveries_total"), 1.0);
        assert_eq!(value(&m, "chatbench_frames_in_total"), 3.0);
        // 2 joined acks + 1 forwarded msg.
        assert_eq!(value(&m, "chatbench_frames_out_total"), 3.0);
        assert!(value(&m, "chatbench_connections_accepted_total") >= 3.0);
        assert_eq!(
            value(&m, r#"chatbench_http_requests_total{path="/ws"}"#),
            2.0
        );
        assert!(value(&m, r#"chatbench_http_requests_total{path="/metrics"}"#) >= 1.0);
        assert!(value(&m, "process_resident_memory_bytes") > 1e6);
        assert!(value(&m, "process_open_fds") >= 3.0);
        assert!(value(&m, "process_threads") >= 2.0);
        // Membership is cleaned up when clients go.
        drop(a);
        drop(b);
        wait_sum(t, "chatbench_connections", |v| v == 0.0).await;
        wait_sum(t, "chatbench_rooms", |v| v == 0.0).await;
    });
}

pub fn healthz_and_not_found(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        assert_eq!(
            http_get(t.addr(), "/healthz").await,
            (200, "ok\n".to_string())
        );
        assert_eq!(http_get(t.addr(), "/nope").await.0, 404);
        assert_eq!(http_get(t.addr(), "/").await.0, 404);
        // /ws without an upgrade is a bad request.
        assert_eq!(http_get(t.addr(), "/ws").await.0, 400);
        let m = totals(t).await;
        assert_eq!(
            value(&m, r#"chatbench_http_requests_total{path="/healthz"}"#),
            1.0
        );
        assert_eq!(
            value(&m, r#"chatbench_http_requests_total{path="other"}"#),
            2.0
        );
        assert_eq!(
            value(&m, r#"chatbench_http_requests_total{path="bad"}"#),
            1.0
        );
    });
}

pub fn graceful_shutdown_sends_1001(arch: Sut) {
    let grace = Duration::from_secs(3);
    let server = start(
        arch,
        ServerConfig {
            shutdown_grace: grace,
            ..test_config()
        },
    );
    let t = server.target();
    block_on(async move {
        let (mut a, mut b) = (
            Client::connect(t.node(0)).await,
            Client::connect(t.node(1)).await,
        );
        a.join("r1").await;
        b.join("r1").await;
        let started = Instant::now();
        server.trigger_stop();
        a.expect_close(1001).await;
        b.expect_close(1001).await;
        let joined = tokio::task::spawn_blocking(move || server.join());
        deadline("run to return", joined)
            .await
            .unwrap()
            .expect("run returns Ok");
        assert!(
            started.elapsed() < grace,
            "run took {:?} though clients had answered the close",
            started.elapsed()
        );
        // Nothing listens any more.
        for &addr in t.nodes() {
            assert!(TcpStream::connect(addr).await.is_err());
        }
    });
}

/// What a panicking connection handler takes down with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlastRadius {
    /// Only that connection (the panic is caught; everything else keeps working).
    Connection,
    /// The whole server: the panic unwinds the one event loop, `run` does not return, and every
    /// connection is lost (an uncaught exception in Node.js).
    Server,
}

/// The fault model each architecture documents, as data: the panic case checks it.
pub fn expected_blast_radius(arch: Sut, config: &ServerConfig) -> BlastRadius {
    match arch {
        Sut::Single(Arch::Epoll) if !config.isolate_panics => BlastRadius::Server,
        _ => BlastRadius::Connection,
    }
}

/// Runs the fault-injection case with `isolate_panics` off and on, expecting for each what
/// [`expected_blast_radius`] says.
pub fn panic_kills_only_that_connection(arch: Sut) {
    for isolate_panics in [false, true] {
        let config = ServerConfig {
            fault_injection: true,
            isolate_panics,
            ..test_config()
        };
        match expected_blast_radius(arch, &config) {
            BlastRadius::Connection => panic_kills_only_the_victim(arch, config),
            BlastRadius::Server => panic_kills_the_server(arch, config),
        }
    }
}

/// A panic takes every connection and the server thread with it.
fn panic_kills_the_server(arch: Sut, config: ServerConfig) {
    let server = start(arch, config);
    let t = server.target();
    block_on(async move {
        let mut a = Client::connect(t.node(0)).await;
        let mut b = Client::connect(t.node(1)).await;
        let mut victim = Client::connect(t.node(2)).await;
        for c in [&mut a, &mut b, &mut victim] {
            c.join("r1").await;
        }
        victim.send(r#"{"t":"panic"}"#).await;
        for c in [&mut victim, &mut a, &mut b] {
            c.expect_gone().await;
        }
        let joined = tokio::task::spawn_blocking(move || server.join());
        let result = deadline("the server thread to end", joined).await.unwrap();
        assert!(
            matches!(result, Err(chatbench_servers::ServerError::Panicked)),
            "{result:?}"
        );
        assert!(
            TcpStream::connect(t.addr()).await.is_err(),
            "still listening"
        );
    });
}

/// A panic closes the victim only; the others, rooms and new connections keep working.
fn panic_kills_only_the_victim(arch: Sut, config: ServerConfig) {
    with_server(arch, config, |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        let mut b = Client::connect(t.node(1)).await;
        let mut victim = Client::connect(t.node(2)).await;
        for c in [&mut a, &mut b, &mut victim] {
            c.join("r1").await;
        }
        victim.send(r#"{"t":"panic"}"#).await;
        victim.expect_gone().await;
        wait_sum(t, r#"chatbench_disconnects_total{reason="panic"}"#, |v| {
            v == 1.0
        })
        .await;
        a.send(&msg("r1", "a", 1)).await;
        assert_eq!(b.recv().await, msg("r1", "a", 1));
        b.send(&msg("r1", "b", 1)).await;
        assert_eq!(a.recv().await, msg("r1", "b", 1));
        // The victim's membership was cleaned up: one room, two connections.
        let m = totals(t).await;
        assert_eq!(value(&m, "chatbench_connections"), 2.0);
        assert_eq!(value(&m, "chatbench_rooms"), t.servers_hosting(&[0, 1]));
        // New connections still work.
        let mut c = Client::connect(t.node(3)).await;
        c.join("r1").await;
    });
}

pub fn panic_without_fault_injection_is_unknown_type(arch: Sut) {
    with_server(arch, test_config(), |t| async move {
        let mut a = Client::connect(t.node(0)).await;
        a.send(r#"{"t":"panic"}"#).await;
        a.expect_error("unknown_type").await;
        a.join("r1").await;
    });
}
