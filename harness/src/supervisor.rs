//! A supervisor for a local cluster of reference-server nodes (`chatbench cluster up`, and the
//! cluster runs of the load generator): starts N `chatbench serve --arch cluster` processes on
//! 127.0.0.1 ports chosen up front, restarts a node that dies at the *same* addresses (so peers
//! and clients find it again), counts and timestamps every restart, gives up on a node that
//! restarts too often (the restart intensity of an Erlang/OTP supervisor), can kill a node on
//! purpose (node-loss experiments) and stops them all.
//!
//! With the `redis` backplane and no URL given, it also starts a private `redis-server` on a
//! free loopback port (no persistence, a random password given on its stdin) and stops it at
//! the end.
//!
//! A mesh cluster gets a random secret per supervisor (32 bytes from the OS-seeded CSPRNG):
//! each node receives it, and the Redis URL with its password, in its environment
//! (`CHATBENCH_CLUSTER_SECRET`, `CHATBENCH_REDIS_URL`), never on its command line, which any
//! local user can read in `/proc`.
//!
//! A shared-port cluster ([`Supervisor::start_shared_port`], the `socketio-cluster` peer) is one
//! child instead: a primary process whose workers share its port and which re-forks a dead worker
//! itself (Node's `cluster` module). The workers are the nodes: the supervisor follows them from
//! the primary's stdout lines (started, exited, re-forked, their counts), kills one by its PID
//! for a node-loss experiment, and stops the primary (which stops its workers).
//!
//! Every child runs in its own process group and is ended by its PID: the supervisor never
//! signals a process it did not start (a shared-port cluster's worker is its primary's child,
//! started for this run, and is killed by the PID the primary reported). Every child also dies
//! with the supervisor's thread (`PR_SET_PDEATHSIG`, see
//! [`chatbench_loadgen::process::die_with_parent`]): Linux sends that signal when the thread
//! that forked exits, so the supervisor spawns only from the thread that started it
//! (the main thread of `cluster up` and of `run`; a restart asked from another thread fails,
//! counted as a failed restart, instead of making a node that dies with a passing thread).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rand::RngCore;
use serde::Serialize;
use thiserror::Error;

use crate::launcher::{LaterLines, LaunchError, ServerChild};
pub use chatbench_loadgen::faults::{Event, EventKind, NodeControl};
use chatbench_loadgen::process::{spawn_pinned, terminate_then_kill, StopOutcome};
pub use chatbench_servers::Backplane;

mod shared_port;

/// Errors starting a cluster.
#[derive(Debug, Error)]
pub enum SupervisorError {
    /// Free loopback ports could not be reserved.
    #[error("cannot reserve free ports on 127.0.0.1: {0}")]
    Ports(std::io::Error),
    /// A node did not start.
    #[error("node {node} did not start")]
    Node {
        /// Its id.
        node: u32,
        /// Why.
        source: LaunchError,
    },
    /// `redis-server` could not be started.
    #[error("cannot start redis-server for the redis backplane: {0}")]
    Redis(String),
    /// The request makes no sense.
    #[error("{0}")]
    Invalid(String),
}

/// When a node that died is restarted.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RestartPolicy {
    /// At most this many restarts of one node within `period`; one more and the supervisor
    /// gives up on that node (it stays down, and says so).
    pub max_restarts: u32,
    /// The window of `max_restarts`.
    pub period: Duration,
    /// Delay before a restart that follows another restart of the same node within `period`
    /// (doubled each time, up to 5 s); the first restart is immediate.
    pub backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            period: Duration::from_secs(30),
            backoff: Duration::from_millis(250),
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `chatbench` executable.
    pub exe: PathBuf,
    /// The architecture each node runs: `cluster` (rooms span nodes over the backplane), or a
    /// single-server architecture (independent servers: nothing crosses between them).
    pub arch: String,
    /// Number of nodes (ids 1..=nodes).
    pub nodes: u32,
    /// The backplane (of a `cluster`; ignored for independent servers).
    pub backplane: Backplane,
    /// With the redis backplane, the broker to use: `redis://HOST:PORT`, or `None` to start a
    /// private redis-server. Ignored with the mesh.
    pub redis_url: Option<String>,
    /// Extra `serve` flags for every node.
    pub server_args: Vec<String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// CPUs for the private redis-server, when one is started: the broker is part of the
    /// server side and must not run on the generator's CPUs.
    pub redis_cpus: Vec<usize>,
    /// The server side's CPUs, shared out over the nodes (`serve --cpus`, see
    /// [`node_cpu_slices`]); empty: the nodes are not pinned.
    pub node_cpus: Vec<usize>,
}

/// How `cpus` are shared out over `nodes` server processes: with at least as many CPUs as
/// nodes, each node gets its own contiguous slice (the last one the remainder), so that N
/// nodes on a 64-core machine do not each size a runtime to every CPU and fight over them;
/// with fewer, every node shares all of them (on a 2-core machine: one server CPU for all).
pub fn node_cpu_slices(cpus: &[usize], nodes: u32) -> Vec<Vec<usize>> {
    let n = nodes.max(1) as usize;
    if cpus.len() < n {
        return vec![cpus.to_vec(); n];
    }
    let chunk = cpus.len() / n;
    (0..n)
        .map(|i| {
            let end = if i + 1 == n {
                cpus.len()
            } else {
                (i + 1) * chunk
            };
            cpus[i * chunk..end].to_vec()
        })
        .collect()
}

/// One node as the supervisor knows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Node id (1-based).
    pub id: u32,
    /// Its WebSocket URL.
    pub url: String,
    /// Its client address.
    pub listen: SocketAddr,
    /// Its backplane (mesh) address.
    pub cluster_listen: SocketAddr,
    /// Its current pid, when running.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u32,
    /// Whether the supervisor gave up on it.
    pub given_up: bool,
    /// A shared-port cluster's worker: its latest counts, as its primary reported them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<WorkerReport>,
}

/// A shared-port cluster worker's counts (`worker ID report …` lines of its primary).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkerReport {
    /// Connections open now.
    pub connections: u64,
    /// The most connections it had open at once.
    pub peak: u64,
    /// Rooms with at least one member on this worker now.
    pub rooms: u64,
    /// The most such rooms at once.
    pub peak_rooms: u64,
    /// Messages its own clients published (each broadcast to the room on every worker).
    pub published: u64,
}

struct Node {
    info: NodeInfo,
    child: Option<ServerChild>,
    /// When each recent restart happened.
    recent: Vec<Instant>,
    /// Found dead at, and the earliest time of the next attempt.
    down_since: Option<(Instant, Instant)>,
}

impl Node {
    /// Node `id`, not started yet: clients reach it at `url` (on `listen`), other nodes at
    /// `cluster_listen`.
    fn new(id: u32, url: String, listen: SocketAddr, cluster_listen: SocketAddr) -> Node {
        Node {
            info: NodeInfo {
                id,
                url,
                listen,
                cluster_listen,
                pid: None,
                restarts: 0,
                given_up: false,
                report: None,
            },
            child: None,
            recent: Vec::new(),
            down_since: None,
        }
    }
}

/// The environment variable a node reads the mesh secret from (as `serve` does).
pub const SECRET_ENV: &str = "CHATBENCH_CLUSTER_SECRET";
/// The environment variable a node reads the Redis URL from (as `serve` does).
pub const REDIS_URL_ENV: &str = "CHATBENCH_REDIS_URL";

/// `n` random bytes from the OS-seeded CSPRNG, as hex.
fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `url` with its password (if any) replaced by `***`, for printing: the node's own
/// redaction, so a URL reads the same in the supervisor's state and in a node's errors.
pub use chatbench_servers::cluster::redis::redact as redact_url;

/// A program the supervisor starts beside a cluster's nodes, and the Debian package that
/// installs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// The executable, looked up on PATH.
    pub name: &'static str,
    /// The Debian package that installs it.
    pub debian_package: &'static str,
}

/// The broker the redis backplane's nodes (and the `socketio-cluster` peer's workers) meet on,
/// started private to the cluster when no URL is given.
pub const REDIS_SERVER: Program = Program {
    name: "redis-server",
    debian_package: "redis-server",
};

/// What a cluster over `backplane` needs installed besides chatbench (the supervisor starts a
/// private one); `None` when the nodes need nothing else.
pub fn needs(backplane: Backplane) -> Option<Program> {
    match backplane {
        Backplane::Mesh => None,
        Backplane::Redis => Some(REDIS_SERVER),
    }
}

/// A private `redis-server` started for the redis backplane.
struct RedisChild {
    child: Child,
    url: String,
}

impl RedisChild {
    /// The broker of a redis-backplane cluster: `spec.redis_url` when given (nothing started),
    /// else a private redis-server started now. Returns it and the URL the nodes use.
    fn broker(spec: &ClusterSpec) -> Result<(Option<RedisChild>, String), SupervisorError> {
        match &spec.redis_url {
            Some(url) => Ok((None, url.clone())),
            None => {
                let r = RedisChild::start(&spec.redis_cpus)?;
                let url = r.url.clone();
                Ok((Some(r), url))
            }
        }
    }

    fn start(cpus: &[usize]) -> Result<RedisChild, SupervisorError> {
        let port = reserve_ports(1).map_err(SupervisorError::Ports)?[0];
        let password = random_hex(32);
        let mut command = Command::new(REDIS_SERVER.name);
        // `-`: the configuration comes from stdin, so the password is not on the command line.
        command
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        spawn_pinned(&mut command, cpus);
        let mut child = command
            .spawn()
            .map_err(|e| {
                SupervisorError::Redis(if e.kind() == std::io::ErrorKind::NotFound {
                    "redis-server is not installed: install it (Debian: apt-get install redis-server) or pass --redis-url".into()
                } else {
                    e.to_string()
                })
            })?;
        let conf = format!(
            "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\nprotected-mode yes\nrequirepass {password}\n"
        );
        let written = child.stdin.take().map(|mut stdin| {
            use std::io::Write;
            stdin.write_all(conf.as_bytes())
            // stdin is closed here: redis-server reads its configuration to the end.
        });
        if let Some(Err(e)) = written {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SupervisorError::Redis(format!(
                "cannot hand redis-server its configuration: {e}"
            )));
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(SupervisorError::Redis(format!(
                    "redis-server exited at start ({status}); is port {port} taken?"
                )));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(RedisChild {
                    child,
                    url: format!("redis://:{password}@{addr}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(SupervisorError::Redis(format!(
            "redis-server did not accept connections on {addr} within 10 s"
        )))
    }

    fn stop(mut self) {
        terminate_then_kill(&mut self.child, Duration::from_secs(3));
    }
}

/// Reserves `n` distinct free ports on 127.0.0.1 (bound together, then released).
fn reserve_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A running local cluster.
pub struct Supervisor {
    spec: ClusterSpec,
    nodes: Vec<Node>,
    redis: Option<RedisChild>,
    redis_url: Option<String>,
    /// The mesh's shared secret (random per supervisor), handed to every node.
    secret: Option<String>,
    events: Vec<Event>,
    /// The thread that started the supervisor: the only one that may spawn (PDEATHSIG).
    thread: std::thread::ThreadId,
    /// A shared-port cluster's primary (its workers are the nodes); `None` otherwise.
    primary: Option<Primary>,
}

/// The primary process of a shared-port cluster.
struct Primary {
    child: Option<ServerChild>,
    lines: LaterLines,
    /// Lines that did not parse (a newer primary, or a bug): counted, never fatal.
    unparsed: u64,
}

/// How many of the primary's later stdout lines may wait for [`Supervisor::poll`].
const PRIMARY_LINES: usize = 4096;

impl Supervisor {
    /// Starts every node (and a private redis-server when the backplane needs one) and waits
    /// until each has announced its address.
    pub fn start(spec: ClusterSpec) -> Result<Supervisor, SupervisorError> {
        if spec.nodes == 0 {
            return Err(SupervisorError::Invalid(
                "a cluster needs at least one node (--nodes 1 or more)".into(),
            ));
        }
        let clustered = spec.arch == "cluster";
        let (redis, redis_url) = match spec.backplane {
            _ if !clustered => (None, None),
            Backplane::Redis => {
                let (redis, url) = RedisChild::broker(&spec)?;
                (redis, Some(url))
            }
            Backplane::Mesh => (None, None),
        };
        let ports = reserve_ports(2 * spec.nodes as usize).map_err(SupervisorError::Ports)?;
        let nodes = (0..spec.nodes)
            .map(|i| {
                let listen = SocketAddr::from(([127, 0, 0, 1], ports[2 * i as usize]));
                let cluster_listen = SocketAddr::from(([127, 0, 0, 1], ports[2 * i as usize + 1]));
                Node::new(i + 1, format!("ws://{listen}/ws"), listen, cluster_listen)
            })
            .collect();
        let secret = (clustered && spec.backplane == Backplane::Mesh).then(|| random_hex(32));
        let mut sup = Supervisor {
            spec,
            nodes,
            redis,
            redis_url,
            secret,
            events: Vec::new(),
            thread: std::thread::current().id(),
            primary: None,
        };
        for i in 0..sup.nodes.len() {
            let id = sup.nodes[i].info.id;
            match sup.spawn(i) {
                Ok(child) => {
                    let pid = child.pid;
                    sup.nodes[i].info.pid = Some(pid);
                    sup.nodes[i].child = Some(child);
                    sup.push(id, EventKind::Started { pid });
                }
                Err(source) => {
                    sup.stop(Duration::from_secs(2));
                    return Err(SupervisorError::Node { node: id, source });
                }
            }
        }
        Ok(sup)
    }

    /// The `serve` command line of node `i`.
    pub fn node_args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i].info;
        let mut args = vec![
            "serve".to_string(),
            "--arch".into(),
            self.spec.arch.clone(),
            "--listen".into(),
            n.listen.to_string(),
        ];
        if !self.spec.node_cpus.is_empty() {
            let slices = node_cpu_slices(&self.spec.node_cpus, self.spec.nodes);
            if let Some(mine) = slices.get(i) {
                args.push("--cpus".into());
                args.push(
                    mine.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
        }
        if self.spec.arch != "cluster" {
            args.extend(self.spec.server_args.iter().cloned());
            return args;
        }
        args.extend([
            "--node-id".into(),
            n.id.to_string(),
            "--backplane".into(),
            self.spec.backplane.as_str().into(),
        ]);
        if self.spec.backplane == Backplane::Mesh {
            args.push("--cluster-listen".into());
            args.push(n.cluster_listen.to_string());
        }
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|o| o.info.id != n.id)
            .map(|o| o.info.cluster_listen.to_string())
            .collect();
        if !peers.is_empty() && self.spec.backplane == Backplane::Mesh {
            args.push("--peers".into());
            args.push(peers.join(","));
        }
        args.extend(self.spec.server_args.iter().cloned());
        args
    }

    /// The environment of node `i` beyond the supervisor's own: the mesh secret or the Redis
    /// URL (both kept off the command line).
    fn node_env(&self) -> Vec<(&'static str, &str)> {
        let mut env = Vec::new();
        if self.spec.arch != "cluster" {
            return env;
        }
        if let Some(s) = &self.secret {
            env.push((SECRET_ENV, s.as_str()));
        }
        if let Some(url) = &self.redis_url {
            env.push((REDIS_URL_ENV, url.as_str()));
        }
        env
    }

    fn spawn(&self, i: usize) -> Result<ServerChild, LaunchError> {
        if std::thread::current().id() != self.thread {
            // The node would die when this thread exits (PDEATHSIG follows the forking thread).
            return Err(LaunchError::Spawn {
                cmd: format!("node {}", self.nodes[i].info.id),
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "the supervisor spawns only from the thread that started it (its children die with that thread)",
                ),
            });
        }
        ServerChild::start_command_env(&self.spec.exe, &self.node_args(i), &[], &self.node_env())
    }

    fn push(&mut self, node: u32, kind: EventKind) {
        self.events.push(Event {
            at_unix_ms: now_unix_ms(),
            node,
            kind,
        });
    }

    /// The nodes, in id order.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.iter().map(|n| n.info.clone()).collect()
    }

    /// Every node's WebSocket URL, in id order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.info.url.clone()).collect()
    }

    /// The pid of the private redis-server, when the supervisor started one.
    pub fn redis_pid(&self) -> Option<u32> {
        self.redis.as_ref().map(|r| r.child.id())
    }

    /// The Redis URL the nodes use, with the redis backplane (its password included: see
    /// [`redact_url`] before printing it).
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref()
    }

    /// Every event so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Kills node `id` with SIGKILL (a node-loss experiment); the next [`Supervisor::poll`]
    /// finds it dead and restarts it under the policy. Returns the pid killed.
    pub fn kill(&mut self, id: u32) -> Option<u32> {
        if self.primary.is_some() {
            return self.kill_worker(id);
        }
        let i = self.nodes.iter().position(|n| n.info.id == id)?;
        let child = self.nodes[i].child.as_mut()?;
        let pid = child.pid;
        child.kill_now();
        self.push(id, EventKind::Killed { pid });
        Some(pid)
    }

    /// Checks every node; restarts the dead ones whose time has come. Returns the events
    /// this call added.
    pub fn poll(&mut self) -> Vec<Event> {
        if self.primary.is_some() {
            return self.poll_shared_port();
        }
        let first_new = self.events.len();
        let policy = self.spec.restart;
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].info.id;
            if self.nodes[i].info.given_up {
                continue;
            }
            // A running child that has exited: record it, and plan the restart.
            let exited = self.nodes[i]
                .child
                .as_mut()
                .and_then(|c| c.exit_status().map(|s| (s, c.stderr_tail())));
            if let Some((status, stderr_tail)) = exited {
                self.nodes[i].child = None;
                self.nodes[i].info.pid = None;
                let now = Instant::now();
                let node = &mut self.nodes[i];
                node.recent
                    .retain(|t| now.duration_since(*t) < policy.period);
                let delay = match node.recent.len() {
                    0 => Duration::ZERO,
                    k => (policy.backoff * 2u32.saturating_pow(k as u32 - 1))
                        .min(Duration::from_secs(5)),
                };
                node.down_since = Some((now, now + delay));
                self.push(
                    id,
                    EventKind::Exited {
                        status: status.to_string(),
                        stderr_tail: last_lines(&stderr_tail, 5),
                    },
                );
            }
            let Some((since, not_before)) = self.nodes[i].down_since else {
                continue;
            };
            if Instant::now() < not_before {
                continue;
            }
            let now = Instant::now();
            self.nodes[i]
                .recent
                .retain(|t| now.duration_since(*t) < policy.period);
            if self.nodes[i].recent.len() as u32 >= policy.max_restarts {
                self.nodes[i].info.given_up = true;
                self.nodes[i].down_since = None;
                let restarts = self.nodes[i].recent.len() as u32;
                self.push(id, EventKind::GaveUp { restarts });
                continue;
            }
            self.nodes[i].recent.push(now);
            match self.spawn(i) {
                Ok(child) => {
                    let pid = child.pid;
                    let node = &mut self.nodes[i];
                    node.child = Some(child);
                    node.info.pid = Some(pid);
                    node.info.restarts += 1;
                    node.down_since = None;
                    let restart = node.info.restarts;
                    self.push(
                        id,
                        EventKind::Restarted {
                            pid,
                            restart,
                            restart_ms: since.elapsed().as_millis() as u64,
                        },
                    );
                }
                Err(e) => {
                    let delay = policy.backoff.max(Duration::from_millis(100));
                    self.nodes[i].down_since = Some((since, Instant::now() + delay));
                    self.push(
                        id,
                        EventKind::RestartFailed {
                            reason: e.to_string(),
                        },
                    );
                }
            }
        }
        self.events[first_new..].to_vec()
    }

    /// Stops every node (SIGTERM, then SIGKILL after `grace`) and the private redis-server.
    /// Returns, per node, how it ended.
    pub fn stop(&mut self, grace: Duration) -> Vec<(u32, StopOutcome)> {
        let mut out = self.stop_shared_port(grace);
        for n in &mut self.nodes {
            if let Some(child) = n.child.take() {
                let (how, _) = child.stop(grace);
                out.push((n.info.id, how));
            }
            n.info.pid = None;
            n.down_since = None;
        }
        if let Some(r) = self.redis.take() {
            r.stop();
        }
        out
    }

    /// The state as JSON (nodes and events), for `--state-file`.
    pub fn state_json(&self) -> serde_json::Value {
        serde_json::json!({
            "schema": "chatbench.cluster/v1",
            "arch": self.spec.arch,
            "backplane": (self.spec.arch == "cluster" || self.primary.is_some())
                .then(|| self.spec.backplane.as_str()),
            "primary": self.primary_json(),
            "redis_url": self.redis_url.as_deref().map(redact_url),
            "restart_policy": {
                "max_restarts": self.spec.restart.max_restarts,
                "period_s": self.spec.restart.period.as_secs_f64(),
                "backoff_s": self.spec.restart.backoff.as_secs_f64(),
            },
            "nodes": self.nodes(),
            "events": self.events,
        })
    }

    /// The executable the nodes run.
    pub fn exe(&self) -> &Path {
        &self.spec.exe
    }
}

/// The run's handle on the nodes for the node-loss fault (the trait is the load generator's, so
/// that it never depends on this crate).
impl NodeControl for Supervisor {
    fn poll(&mut self) -> Vec<Event> {
        Supervisor::poll(self)
    }

    fn events(&self) -> &[Event] {
        Supervisor::events(self)
    }

    fn kill(&mut self, id: u32) -> Option<u32> {
        Supervisor::kill(self, id)
    }

    fn node_count(&self) -> u32 {
        self.nodes.len() as u32
    }

    fn shares_one_port(&self) -> bool {
        Supervisor::shares_one_port(self)
    }

    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.nodes.iter().filter_map(|n| n.info.pid).collect();
        pids.extend(self.primary_pid());
        pids.extend(self.redis_pid());
        pids
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_their_own_cpus_when_there_are_enough() {
        // 64 cores, half for the server side: 4 nodes of 8.
        let server: Vec<usize> = (0..32).collect();
        let s = node_cpu_slices(&server, 4);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0], (0..8).collect::<Vec<_>>());
        assert_eq!(s[3], (24..32).collect::<Vec<_>>());
        // The remainder goes to the last node; nothing is left out or shared.
        let s = node_cpu_slices(&[0, 1, 2, 3, 4], 2);
        assert_eq!(s, vec![vec![0, 1], vec![2, 3, 4]]);
        // Fewer CPUs than nodes: all share them (a 2-core machine's one server CPU).
        assert_eq!(node_cpu_slices(&[0], 4), vec![vec![0]; 4]);
        assert_eq!(node_cpu_slices(&[], 2), vec![Vec::<usize>::new(); 2]);
    }

    #[test]
    fn reserved_ports_are_distinct() {
        let p = reserve_ports(8).expect("ports");
        let mut q = p.clone();
        q.sort_unstable();
        q.dedup();
        assert_eq!(q.len(), 8);
    }

    #[test]
    fn urls_are_printed_without_their_password() {
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:1"),
            "redis://:***@127.0.0.1:1"
        );
        assert_eq!(redact_url("redis://u:p@w@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(random_hex(32).len(), 64);
        assert_ne!(random_hex(32), random_hex(32));
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }
}
