//! `chatbench serve`: flags → `ServerConfig`, bind with a large backlog, announce the address,
//! run until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use chatbench_servers::{
    Arch, Backplane, BackplaneConfig, ClusterConfig, ClusterSecret, ServerConfig, Shutdown,
    SlowConsumerPolicy,
};

use super::UsageError;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Server architecture.
    #[arg(long, value_name = "ARCH", default_value = "task-per-conn", value_parser = parse_arch)]
    arch: Arch,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Largest accepted message, in bytes; larger ones are closed with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().max_frame_bytes)]
    max_frame_bytes: usize,
    /// Rooms one connection may be in at once; beyond it, `join` gets error too_many_rooms.
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().max_rooms_per_conn)]
    max_rooms_per_conn: usize,
    /// Outbound queue per connection, in frames; when full, the slow-consumer policy applies.
    #[arg(long, value_name = "FRAMES", default_value_t = ServerConfig::default().outbound_queue)]
    outbound_queue: usize,
    /// Outbound queue per connection, in bytes (frames queued, not yet written); a frame past
    /// it applies the slow-consumer policy. At least --max-frame-bytes + 16.
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().outbound_queue_bytes)]
    outbound_queue_bytes: usize,
    /// What to do when a connection's outbound queue is full (frames or bytes): drop the
    /// newest frame (counted), or disconnect the connection with close code 1008 (counted).
    #[arg(long, value_name = "POLICY", default_value = "drop", value_parser = parse_policy)]
    slow_consumer: SlowConsumerPolicy,
    /// Under --slow-consumer drop: a connection whose frames have been refused with nothing
    /// written to it for this long is disconnected (slow_consumer, 1008).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime_duration)]
    slow_consumer_grace: Duration,
    /// Time a new connection has to complete its HTTP/WebSocket handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime_duration)]
    handshake_timeout: Duration,
    /// On SIGINT/SIGTERM, time clients get to close after the 1001 close frame.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime_duration)]
    shutdown_grace: Duration,
    /// WebSocket read buffer per connection, bytes (tungstenite's default, 128 KiB, costs
    /// 135 KiB per idle connection).
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().read_buffer_size)]
    read_buffer_size: usize,
    /// WebSocket write buffer per connection, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().write_buffer_size)]
    write_buffer_size: usize,
    /// Largest write buffer per connection, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().max_write_buffer_size)]
    max_write_buffer_size: usize,
    /// Listen backlog (std and tokio use 128, which connection storms overflow).
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().backlog)]
    backlog: u32,
    /// Worker threads (task-per-conn); default: the CPUs this process may use.
    #[arg(long, value_name = "N")]
    worker_threads: Option<usize>,
    /// Honour the `{"t":"panic"}` frame: the handler of that connection panics (fault-isolation
    /// measurements). Off by default.
    #[arg(long)]
    fault_injection: bool,
    /// epoll: catch a panicking handler per event and close only its connection (default: the
    /// panic unwinds the loop and the process dies, like an uncaught exception in Node.js).
    #[arg(long)]
    isolate_panics: bool,
    /// thread-pool: worker threads = the most concurrent connections.
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().pool_size)]
    pool_size: usize,
    /// thread-pool: stack size per worker thread, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().thread_stack_bytes)]
    thread_stack_bytes: usize,
    /// thread-pool: how long a new connection waits for a free worker before HTTP 503.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime_duration)]
    pool_wait: Duration,
    /// Iterations of a deterministic busy loop per delivered message (default 0: none). Injects
    /// a known extra cost to measure the regression gate's power (docs/gate.md).
    #[arg(long, value_name = "N", default_value_t = 0)]
    inject_work: u32,
    /// Pin the server to these CPUs, e.g. `0` or `0,2-3`.
    #[arg(long, value_name = "LIST")]
    cpus: Option<String>,
    /// cluster: this node's id, unique in the cluster.
    #[arg(long, value_name = "N")]
    node_id: Option<u64>,
    /// cluster: how nodes reach each other: `mesh` (a TCP link per pair of nodes) or `redis`
    /// (Redis pub/sub, one channel per room).
    #[arg(long, value_name = "KIND", value_parser = super::backplane_parser(false))]
    backplane: Option<Backplane>,
    /// cluster, mesh: where this node accepts links from other nodes; port 0 picks a free port
    /// (printed on stdout as `cluster=ADDR`).
    #[arg(long, value_name = "ADDR")]
    cluster_listen: Option<SocketAddr>,
    /// cluster, mesh: the other nodes' --cluster-listen addresses, comma-separated.
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    peers: Vec<SocketAddr>,
    /// cluster, mesh: a file holding the cluster's shared secret, the same on every node (16 to
    /// 4096 bytes, surrounding whitespace ignored; e.g. `openssl rand -hex 32 > FILE; chmod 600
    /// FILE`). It must not be readable by group or others. Without this flag the
    /// CHATBENCH_CLUSTER_SECRET environment variable is used when set. Links are authenticated
    /// with it (HMAC challenge-response; the secret never crosses the wire). Required when
    /// --cluster-listen or --peers are not loopback addresses.
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// cluster, redis: the Redis server, e.g. redis://127.0.0.1:6379, with a password
    /// redis://:PASSWORD@HOST:PORT or an ACL user redis://USER:PASSWORD@HOST:PORT. Without this
    /// flag the CHATBENCH_REDIS_URL environment variable is used (keeps a password off the
    /// command line, which every local user can read).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
}

/// The environment variable `serve` reads the Redis URL from when `--redis-url` is absent.
pub const REDIS_URL_ENV: &str = "CHATBENCH_REDIS_URL";

/// A non-empty environment variable.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads the cluster secret from `path`, refusing a file that group or others may read.
fn read_secret_file(path: &Path) -> Result<ClusterSecret, UsageError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| UsageError(format!("--cluster-secret-file {shown}: {e}")))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(UsageError(format!(
            "--cluster-secret-file {shown}: readable by group or others (mode {:o}): chmod 600 {shown}",
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("--cluster-secret-file {shown}: {e}")))?;
    ClusterSecret::from_text(&text)
        .map_err(|e| UsageError(format!("--cluster-secret-file {shown}: {e}")))
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    s.parse::<Arch>().map_err(|e| e.to_string())
}

fn parse_policy(s: &str) -> Result<SlowConsumerPolicy, String> {
    s.parse()
}

pub(crate) fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 500ms, 10s, 1m)"))
}

impl ServeArgs {
    fn config(&self) -> Result<ServerConfig, UsageError> {
        let config = ServerConfig {
            max_frame_bytes: self.max_frame_bytes,
            max_rooms_per_conn: self.max_rooms_per_conn,
            outbound_queue: self.outbound_queue,
            outbound_queue_bytes: self.outbound_queue_bytes,
            slow_consumer: self.slow_consumer,
            slow_consumer_grace: self.slow_consumer_grace,
            handshake_timeout: self.handshake_timeout,
            shutdown_grace: self.shutdown_grace,
            read_buffer_size: self.read_buffer_size,
            write_buffer_size: self.write_buffer_size,
            max_write_buffer_size: self.max_write_buffer_size,
            backlog: self.backlog,
            worker_threads: self.worker_threads,
            fault_injection: self.fault_injection,
            isolate_panics: self.isolate_panics,
            pool_size: self.pool_size,
            thread_stack_bytes: self.thread_stack_bytes,
            pool_wait: self.pool_wait,
            cluster: self.cluster()?,
            inject_work: self.inject_work,
            ..ServerConfig::default()
        };
        config.validate().map_err(UsageError)?;
        Ok(config)
    }
}

impl ServeArgs {
    /// The cluster settings from `--node-id`, `--backplane`, `--cluster-listen`, `--peers`,
    /// `--redis-url`: required for `--arch cluster`, refused for every other architecture.
    fn cluster(&self) -> Result<Option<ClusterConfig>, UsageError> {
        let given: Vec<&str> = [
            ("--node-id", self.node_id.is_some()),
            ("--backplane", self.backplane.is_some()),
            ("--cluster-listen", self.cluster_listen.is_some()),
            ("--peers", !self.peers.is_empty()),
            ("--redis-url", self.redis_url.is_some()),
            ("--cluster-secret-file", self.cluster_secret_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        if self.arch != Arch::Cluster {
            if given.is_empty() {
                return Ok(None);
            }
            return Err(UsageError(format!(
                "{} only apply to --arch cluster (this is --arch {})",
                given.join(", "),
                self.arch
            )));
        }
        let node_id = self.node_id.ok_or_else(|| {
            UsageError("--arch cluster needs --node-id N (a number unique in the cluster)".into())
        })?;
        let backplane = match self.backplane {
            Some(Backplane::Mesh) => {
                if self.redis_url.is_some() {
                    return Err(UsageError(
                        "--redis-url applies to --backplane redis, not mesh".into(),
                    ));
                }
                let listen = self.cluster_listen.ok_or_else(|| {
                    UsageError(
                        "--backplane mesh needs --cluster-listen ADDR (e.g. 127.0.0.1:0) for links from other nodes"
                            .into(),
                    )
                })?;
                BackplaneConfig::Mesh {
                    listen,
                    peers: self.peers.clone(),
                }
            }
            Some(Backplane::Redis) => {
                if self.cluster_listen.is_some() || !self.peers.is_empty() {
                    return Err(UsageError(
                        "--cluster-listen and --peers apply to --backplane mesh, not redis".into(),
                    ));
                }
                if self.cluster_secret_file.is_some() {
                    return Err(UsageError(
                        "--cluster-secret-file applies to --backplane mesh; Redis takes a password in its URL (redis://USER:PASSWORD@HOST:PORT)".into(),
                    ));
                }
                let url = match (&self.redis_url, env_var(REDIS_URL_ENV)) {
                    (Some(_), Some(_)) => {
                        return Err(UsageError(format!(
                            "both --redis-url and {REDIS_URL_ENV} are set: give one"
                        )))
                    }
                    (Some(u), None) => u.clone(),
                    (None, Some(u)) => u.trim().to_string(),
                    (None, None) => {
                        return Err(UsageError(format!(
                            "--backplane redis needs --redis-url redis://HOST:PORT (or {REDIS_URL_ENV})"
                        )))
                    }
                };
                BackplaneConfig::Redis { url }
            }
            None => {
                return Err(UsageError(
                    "--arch cluster needs --backplane mesh or --backplane redis".into(),
                ))
            }
        };
        let mut cluster = ClusterConfig::new(node_id, backplane);
        if matches!(cluster.backplane, BackplaneConfig::Mesh { .. }) {
            cluster.secret = self.cluster_secret()?;
        }
        Ok(Some(cluster))
    }

    /// The mesh's secret: `--cluster-secret-file`, else `CHATBENCH_CLUSTER_SECRET`, else none.
    fn cluster_secret(&self) -> Result<Option<ClusterSecret>, UsageError> {
        let env = env_var(ClusterSecret::ENV);
        match (&self.cluster_secret_file, env) {
            (Some(_), Some(_)) => Err(UsageError(format!(
                "both --cluster-secret-file and {} are set: give one",
                ClusterSecret::ENV
            ))),
            (Some(path), None) => read_secret_file(path).map(Some),
            (None, Some(text)) => ClusterSecret::from_text(&text)
                .map(Some)
                .map_err(|e| UsageError(format!("{}: {e}", ClusterSecret::ENV))),
            (None, None) => Ok(None),
        }
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    if let Some(list) = &args.cpus {
        let cpus =
            super::parse_cpu_list(list).map_err(|e| UsageError(format!("--cpus {list:?}: {e}")))?;
        chatbench_loadgen::sys::set_cpu_affinity(&cpus)
            .with_context(|| format!("pinning to CPUs {list}"))?;
    }
    let _ = chatbench_loadgen::sys::raise_nofile();
    let listener =
        chatbench_servers::listener::bind(args.listen, config.backlog).with_context(|| {
            format!(
                "cannot listen on {} (is another process using the port?)",
                args.listen
            )
        })?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let cluster_listener =
        chatbench_servers::cluster::bind(&config).context("starting the cluster node")?;
    chatbench_servers::cluster::preflight(&config).context("starting the cluster node")?;
    let shutdown = Shutdown::new();
    install_signal_handlers(shutdown.clone())?;
    {
        let mut out = std::io::stdout().lock();
        write!(
            out,
            "{addr} ws://{addr}/ws arch={} pid={}",
            args.arch.as_str(),
            std::process::id()
        )?;
        if let Some(l) = &cluster_listener {
            let c = l.local_addr().context("reading the cluster address")?;
            write!(out, " cluster={c}")?;
        }
        writeln!(out)?;
        out.flush()?;
    }
    eprintln!(
        "chatbench serve: {} listening on {addr} (ws://{addr}/ws, /metrics, /healthz)",
        args.arch.as_str()
    );
    if let Some(c) = &config.cluster {
        if matches!(c.backplane, BackplaneConfig::Mesh { .. }) && c.secret.is_none() {
            eprintln!(
                "chatbench serve: warning: the mesh has no cluster secret, so any local process can join it; give every node --cluster-secret-file FILE or {}",
                ClusterSecret::ENV
            );
        }
    }
    if args.arch == Arch::Cluster {
        chatbench_servers::cluster::run(listener, cluster_listener, config, shutdown)
            .context("cluster node failed")?;
    } else {
        chatbench_servers::run_arch(args.arch, listener, config, shutdown)
            .context("server failed")?;
    }
    eprintln!("chatbench serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT and SIGTERM trigger the server's graceful shutdown (a second signal exits at once).
fn install_signal_handlers(shutdown: Shutdown) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("signal runtime")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
                eprintln!("chatbench serve: shutting down (closing clients with 1001)");
                shutdown.trigger();
                tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
                std::process::exit(1);
            });
        })
        .context("starting the signal thread")?;
    Ok(())
}
