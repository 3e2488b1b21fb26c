//! Target start-up for `chatbench run`: what `--serve ARCH` (one server, or `--nodes N` under
//! the supervisor), `--serve-peer PEER` and `--serve-cmd COMMAND` start, pinned apart from the
//! generator on two or more CPUs, and the target record of it; or the `--target` URL as given.
//! [`StartedTarget::stop`] stops what was started and hands back its last words and the
//! cluster's state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;

use chatbench_loadgen::faults::NodeControl;
use chatbench_loadgen::run::{RunError, RunReport};
use chatbench_model::results::TargetInfo;
use chatbench_model::scenario::{Scenario, TargetPolicy};

use crate::launcher::{LaunchError, ServerChild, StopOutcome};
use crate::peers::{ElixirCluster, Peer};
use crate::supervisor::{
    node_cpu_slices, Backplane, ClusterSpec, RestartPolicy, Supervisor, SupervisorError,
};
use crate::UsageError;

/// Why a target could not be started, or a run against it failed (the binary's exit code
/// follows [`TargetError::is_usage`] and [`TargetError::run_error`]).
#[derive(Debug, Error)]
pub enum TargetError {
    /// The flags do not fit together, or name something missing (exit 2).
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// `current_exe` failed: the nodes and `--serve` run this executable.
    #[error("locating the chatbench executable")]
    Exe(#[source] std::io::Error),
    /// `--serve ARCH` or `--serve-cmd`: the server did not start.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// `--serve ARCH --nodes N`: the supervisor could not start the nodes.
    #[error("starting the server nodes")]
    Nodes(#[source] SupervisorError),
    /// A cluster peer (`socketio-cluster`) did not start.
    #[error("starting the {peer} peer")]
    PeerCluster {
        /// The peer's name.
        peer: &'static str,
        /// Why.
        #[source]
        source: SupervisorError,
    },
    /// A cluster peer started, but none of its workers announced itself.
    #[error("the {0} peer started no workers")]
    NoWorkers(&'static str),
    /// The generator could not be pinned to the CPUs the server was not given.
    #[error("pinning the generator")]
    Pin(#[source] std::io::Error),
    /// The run failed.
    #[error(transparent)]
    Run(Box<RunError>),
    /// The run failed after the server it ran against had exited: its last words first.
    #[error("the {what} server {how}; its last line: {last}")]
    ServerDied {
        /// The architecture, peer or command.
        what: String,
        /// How it had ended.
        how: StopOutcome,
        /// Its last non-empty stderr line.
        last: String,
        /// The run's own error.
        #[source]
        source: Box<RunError>,
    },
    /// The server chatbench started is running, but nothing accepts connections at the
    /// address it announced (it listens on another port, or announced before binding).
    #[error("connection refused at {addr} (the address the {what} server announced): it is running, but nothing listens there; does it print the address it bound, after binding it?")]
    NotListening {
        /// The architecture, peer or command.
        what: String,
        /// The announced address.
        addr: std::net::SocketAddr,
        /// The run's own error (its exit code; not repeated: its hint is for `--target`).
        run: Box<RunError>,
    },
    /// cluster.json could not be encoded.
    #[error("encoding cluster.json")]
    EncodeClusterState(#[source] serde_json::Error),
    /// cluster.json could not be written beside the run.
    #[error("writing cluster.json")]
    WriteClusterState(#[source] chatbench_model::results::ResultsError),
}

impl TargetError {
    /// The user's mistake (flags, files, a missing runtime): exit 2.
    pub fn is_usage(&self) -> bool {
        matches!(self, TargetError::Usage(_))
    }

    /// The run's own error, when the run failed (the binary reads its exit code from it).
    pub fn run_error(&self) -> Option<&RunError> {
        match self {
            TargetError::Run(e)
            | TargetError::ServerDied { source: e, .. }
            | TargetError::NotListening { run: e, .. } => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// Worker processes of a cluster peer (`--serve-peer socketio-cluster`) without `--nodes`.
const PEER_CLUSTER_NODES: u32 = 3;

/// What to run against: the `chatbench run` flags that name the target (the binary's `RunArgs`
/// documents each).
#[derive(Debug, Clone, Default)]
pub struct TargetStartOptions {
    /// The scenario file, for messages.
    pub scenario_path: PathBuf,
    /// `--target`: the URL(s) of a running server.
    pub target: Option<String>,
    /// `--server-pid`: the pid behind `--target`, sampled.
    pub server_pid: Option<u32>,
    /// `--serve`: a reference architecture to start.
    pub serve: Option<String>,
    /// `--nodes`.
    pub nodes: Option<u32>,
    /// `--backplane`.
    pub backplane: Option<Backplane>,
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// `--serve-peer`: a peer server to start.
    pub serve_peer: Option<Peer>,
    /// `--serve-cmd`: a server command to start.
    pub serve_cmd: Option<String>,
    /// `--serve-path`.
    pub serve_path: String,
    /// `--peers-dir`.
    pub peers_dir: PathBuf,
    /// `--server-arg`s.
    pub server_args: Vec<String>,
    /// Whether `--target-policy` was given (then the scenario's policy is left as it is).
    pub target_policy_given: bool,
    /// `--no-pin`.
    pub no_pin: bool,
    /// Whether the run is spread over agents (`--agents`).
    pub agents: bool,
}

/// The target of a run, and whatever chatbench started for it.
pub struct StartedTarget {
    /// The URL(s) to load, comma-separated.
    pub url: String,
    /// What is known about the target (arch, pids, settings), recorded in the summary.
    pub info: TargetInfo,
    /// The generator's CPUs when the server was pinned apart from it (empty otherwise).
    gen_cpus: Vec<usize>,
    child: Option<ServerChild>,
    supervisor: Option<Arc<Mutex<Supervisor>>>,
    elixir_cluster: Option<Arc<Mutex<ElixirCluster>>>,
}

/// What stopping the started target gave.
pub struct Stopped {
    /// How a single started server ended, and the last lines of its stderr.
    pub server_note: Option<(StopOutcome, String)>,
    /// The supervised nodes' state (pids, restarts, events), written as cluster.json.
    pub cluster_state: Option<serde_json::Value>,
}

impl StartedTarget {
    /// The supervisor, for the run's node polling and node-loss fault.
    pub fn node_control(&self) -> Option<Arc<Mutex<dyn NodeControl>>> {
        self.supervisor
            .clone()
            .map(|s| s as Arc<Mutex<dyn NodeControl>>)
            .or_else(|| {
                self.elixir_cluster
                    .clone()
                    .map(|c| c as Arc<Mutex<dyn NodeControl>>)
            })
    }

    /// Pins this (the generator's) process to the CPUs the server was not given.
    pub fn pin_generator(&self) -> Result<(), TargetError> {
        if !self.gen_cpus.is_empty() {
            chatbench_loadgen::sys::set_cpu_affinity(&self.gen_cpus).map_err(TargetError::Pin)?;
        }
        Ok(())
    }

    /// Stops everything started (a node that did not stop cleanly is reported on stderr).
    pub fn stop(self) -> Stopped {
        let server_note = self.child.map(|c| c.stop(Duration::from_secs(10)));
        if let Some(cluster) = self.elixir_cluster {
            let mut cluster = cluster.lock().unwrap_or_else(|p| p.into_inner());
            for (how, tail) in cluster.stop_all(Duration::from_secs(10)) {
                if !how.is_clean() {
                    eprintln!("elixir-cluster node: {how}\n{tail}");
                }
            }
        }
        // The nodes' state (pids, restarts, events) beside the results, then stop them.
        let cluster_state = self.supervisor.as_ref().map(|s| {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            let state = s.state_json();
            for (id, how) in s.stop(Duration::from_secs(10)) {
                if !how.is_clean() {
                    eprintln!("server node {id}: {how}");
                }
            }
            state
        });
        Stopped {
            server_note,
            cluster_state,
        }
    }
}

impl Stopped {
    /// The run's error, with the server's own last words when it died before the run could
    /// start, or the address it announced when it is running but refused the first connection
    /// there (`what`: the architecture, peer or command).
    pub fn explain(&self, e: RunError, what: &str) -> TargetError {
        let refused_at = match &e {
            RunError::Target(chatbench_loadgen::target::TargetError::Unreachable {
                addr,
                source,
                ..
            }) if source.kind() == std::io::ErrorKind::ConnectionRefused => Some(*addr),
            _ => None,
        };
        match (&self.server_note, refused_at) {
            (Some((how, tail)), _) if how.had_already_exited() => {
                let last = tail
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no output");
                TargetError::ServerDied {
                    what: what.to_string(),
                    how: *how,
                    last: last.to_string(),
                    source: Box::new(e),
                }
            }
            (Some(_), Some(addr)) => TargetError::NotListening {
                what: what.to_string(),
                addr,
                run: Box::new(e),
            },
            _ => TargetError::Run(Box::new(e)),
        }
    }

    /// Writes cluster.json beside the run, and draws the node-loss timeline when the run had one.
    pub fn write_beside(&self, report: &RunReport) -> Result<(), TargetError> {
        if let Some(state) = &self.cluster_state {
            let json = serde_json::to_vec_pretty(state).map_err(TargetError::EncodeClusterState)?;
            chatbench_model::results::write_file_atomic(&report.dir.join("cluster.json"), &json)
                .map_err(TargetError::WriteClusterState)?;
        }
        if report.summary.failover.is_some() {
            // The node-loss timeline beside the run (the per-run timeline comes with it).
            let charts = report.dir.join("charts");
            let drawn = std::fs::create_dir_all(&charts)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    chatbench_report::charts::run_timeline(&report.dir, &charts, "timeline")
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = drawn {
                eprintln!("warning: the node-loss chart was not drawn: {e}");
            }
        }
        Ok(())
    }

    /// Prints how a single started server ended, when not cleanly.
    pub fn report_server(&self) {
        if let Some((how, tail)) = &self.server_note {
            if !how.is_clean() {
                eprintln!("server: {how}");
                if !tail.is_empty() {
                    eprintln!("server stderr (last lines):\n{tail}");
                }
            }
        }
    }
}

/// Checks the target flags against each other and against the scenario's node-kill fault.
fn check(
    opts: &TargetStartOptions,
    scenario: &Scenario,
    peer: Option<Peer>,
) -> Result<(), UsageError> {
    let clustered = opts.serve.as_deref() == Some("cluster");
    let peer_cluster = peer.is_some_and(Peer::one_port_cluster);
    let peer_nodes = peer_cluster || peer == Some(Peer::ElixirCluster);
    if opts.nodes.is_some() && opts.serve.is_none() && !peer_nodes {
        return Err(UsageError(
            "--nodes needs --serve ARCH, or --serve-peer socketio-cluster or elixir-cluster".into(),
        ));
    }
    if !opts.server_args.is_empty() && opts.serve.is_none() && peer.is_none() {
        return Err(UsageError(
            "--server-arg needs --serve ARCH or --serve-peer PEER".into(),
        ));
    }
    if opts.backplane.is_some() && !clustered {
        return Err(UsageError("--backplane needs --serve cluster".into()));
    }
    if opts.redis_url.is_some() && opts.backplane != Some(Backplane::Redis) {
        return Err(UsageError("--redis-url needs --backplane redis".into()));
    }
    let Some(f) = scenario.kill_fault() else {
        return Ok(());
    };
    // The run kills a node it started and supervises: only `--serve cluster` (and the
    // socketio-cluster and elixir-cluster peers) has them.
    if !clustered && !peer_nodes {
        return Err(UsageError(format!(
            "{}: [[fault]] kill_node = {} needs --serve cluster or --serve-peer \
             socketio-cluster or elixir-cluster (the run kills a node it started itself; add \
             --serve cluster --nodes N)",
            opts.scenario_path.display(),
            f.kill_node
        )));
    }
    if opts.agents {
        return Err(UsageError(format!(
            "{}: [[fault]] kill_node is not supported with --agents yet (run it in one process)",
            opts.scenario_path.display()
        )));
    }
    let nodes = opts
        .nodes
        .unwrap_or(if peer_nodes { PEER_CLUSTER_NODES } else { 1 });
    if f.kill_node > nodes {
        return Err(UsageError(format!(
            "{}: [[fault]] kill_node = {} but --nodes {nodes} starts nodes 1..={nodes} \
             (raise --nodes or lower kill_node)",
            opts.scenario_path.display(),
            f.kill_node
        )));
    }
    Ok(())
}

/// Where the server runs: the first half of the CPUs when chatbench starts the server and
/// there are at least two (the rest for the generator), nowhere in particular otherwise.
struct Cpus {
    pin: bool,
    server: Vec<usize>,
    generator: Vec<usize>,
}

impl Cpus {
    fn split(starts_server: bool, no_pin: bool) -> Cpus {
        let online = chatbench_loadgen::sys::cpu_affinity();
        let pin = starts_server && !no_pin && online.len() >= 2;
        if pin {
            let half = online.len() / 2;
            Cpus {
                pin,
                server: online[..half].to_vec(),
                generator: online[half..].to_vec(),
            }
        } else {
            Cpus {
                pin,
                server: Vec::new(),
                generator: Vec::new(),
            }
        }
    }

    /// The target record's `cpu_affinity`.
    fn affinity(&self) -> Option<Vec<usize>> {
        self.pin.then(|| self.server.clone())
    }
}

/// Starts what the options ask for (nothing for `--target`) and returns the target; sets the
/// scenario's target policy for a started cluster unless `--target-policy` was given.
pub fn start_target(
    opts: &TargetStartOptions,
    scenario: &mut Scenario,
) -> Result<StartedTarget, TargetError> {
    let peer = opts.serve_peer;
    check(opts, scenario, peer)?;
    let starts_server = opts.serve.is_some() || peer.is_some() || opts.serve_cmd.is_some();
    let cpus = Cpus::split(starts_server, opts.no_pin);
    let mut started = StartedTarget {
        url: String::new(),
        info: plain_target(opts, String::new()),
        gen_cpus: cpus.generator.clone(),
        child: None,
        supervisor: None,
        elixir_cluster: None,
    };
    let clustered = opts.serve.as_deref() == Some("cluster");
    let (url, info) =
        if let (Some(arch), true) = (&opts.serve, clustered || opts.nodes.is_some_and(|n| n > 1)) {
            if !opts.target_policy_given {
                scenario.target_policy = if clustered {
                    TargetPolicy::Span
                } else {
                    TargetPolicy::Partition
                };
            }
            let (url, info, sup) = start_nodes(opts, arch, clustered, &cpus)?;
            // Shared with the run, which polls it (restarts) and kills a node for a kill fault;
            // restarted nodes are spawned from this (the main) thread: see Supervisor.
            started.supervisor = Some(Arc::new(Mutex::new(sup)));
            (url, info)
        } else if let Some(arch) = &opts.serve {
            let exe = std::env::current_exe().map_err(TargetError::Exe)?;
            let mut extra = opts.server_args.clone();
            if cpus.pin {
                extra.push("--cpus".into());
                extra.push(cpu_list(&cpus.server));
            }
            let c = ServerChild::start(&exe, arch, &extra)?;
            let url = format!("ws://{}/ws", c.addr);
            let mut settings = BTreeMap::new();
            settings.insert("args".to_string(), c.args.join(" "));
            let info = started_info(
                &url,
                Some(arch.clone()),
                settings,
                &cpus,
                Some(c.pid),
                Vec::new(),
            );
            started.child = Some(c);
            (url, info)
        } else if let Some(peer) = peer {
            start_peer(opts, peer, scenario, &cpus, &mut started)?
        } else if let Some(cmd) = &opts.serve_cmd {
            let mut words = cmd.split_whitespace().map(str::to_owned);
            let program = words.next().ok_or_else(|| {
                UsageError("--serve-cmd is empty: give the server's command line".into())
            })?;
            let rest: Vec<String> = words.collect();
            if !opts.serve_path.starts_with('/') {
                return Err(UsageError(format!(
                    "--serve-path {:?}: must start with '/'",
                    opts.serve_path
                ))
                .into());
            }
            raise_nofile_for_child();
            let c = ServerChild::start_command(Path::new(&program), &rest, &cpus.server)?;
            let (url, info) = started_target(&c, &opts.serve_path, None, &cpus);
            started.child = Some(c);
            (url, info)
        } else {
            let url = opts
                .target
                .clone()
                .ok_or_else(|| UsageError("give --target URL or --serve ARCH".into()))?;
            (url.clone(), plain_target(opts, url))
        };
    started.url = url;
    started.info = info;
    Ok(started)
}

/// The target record of a server chatbench did not start (`--target`, `--server-pid`).
fn plain_target(opts: &TargetStartOptions, url: String) -> TargetInfo {
    TargetInfo {
        url,
        arch: None,
        pid: opts.server_pid,
        settings: Default::default(),
        cpu_affinity: None,
        targets: Vec::new(),
        target_policy: None,
        pids: Vec::new(),
    }
}

/// Starts `--nodes` reference-server nodes (`--serve cluster`, or independent servers) under
/// the supervisor.
fn start_nodes(
    opts: &TargetStartOptions,
    arch: &str,
    clustered: bool,
    cpus: &Cpus,
) -> Result<(String, TargetInfo, Supervisor), TargetError> {
    let nodes = opts.nodes.unwrap_or(1);
    let backplane = opts.backplane.unwrap_or(Backplane::Mesh);
    let sup = Supervisor::start(ClusterSpec {
        exe: std::env::current_exe().map_err(TargetError::Exe)?,
        arch: arch.to_string(),
        nodes,
        backplane,
        redis_url: opts.redis_url.clone(),
        server_args: opts.server_args.clone(),
        restart: RestartPolicy::default(),
        redis_cpus: cpus.server.clone(),
        node_cpus: if cpus.pin {
            cpus.server.clone()
        } else {
            Vec::new()
        },
    })
    .map_err(TargetError::Nodes)?;
    let url = sup.urls().join(",");
    let mut settings = BTreeMap::new();
    settings.insert("nodes".to_string(), nodes.to_string());
    if clustered {
        settings.insert("backplane".to_string(), backplane.as_str().to_string());
    }
    settings.insert("args".to_string(), sup.node_args(0).join(" "));
    if cpus.pin {
        let slices = node_cpu_slices(&cpus.server, nodes);
        let text: Vec<String> = slices.iter().map(|c| cpu_list(c)).collect();
        settings.insert("node_cpus".to_string(), text.join("; "));
    }
    // The private redis-server is part of the server side: sampled with the nodes.
    let mut pids: Vec<u32> = sup.nodes().iter().filter_map(|n| n.pid).collect();
    if let Some(redis) = sup.redis_pid() {
        settings.insert("redis_pid".to_string(), redis.to_string());
        pids.push(redis);
    }
    let info = started_info(
        &url,
        Some(arch.to_string()),
        settings,
        cpus,
        pids.first().copied(),
        pids,
    );
    Ok((url, info, sup))
}

/// Starts a peer server (`--serve-peer`): one process, the Elixir cluster, or a shared-port
/// cluster under the supervisor; records what was started in `started`.
fn start_peer(
    opts: &TargetStartOptions,
    peer: Peer,
    scenario: &mut Scenario,
    cpus: &Cpus,
    started: &mut StartedTarget,
) -> Result<(String, TargetInfo), TargetError> {
    // The peer inherits our open-files limit and, unlike `chatbench serve`, does not raise
    // its own: raise the soft limit to the hard one first.
    raise_nofile_for_child();
    let path = peer
        .url_path(scenario.protocol)
        .map_err(|e| UsageError(e.to_string()))?;
    if peer == Peer::ElixirCluster {
        let (url, info, cluster) = start_elixir_cluster(opts, path, cpus)?;
        if !opts.target_policy_given {
            scenario.target_policy = TargetPolicy::Span;
        }
        started.elixir_cluster = Some(Arc::new(Mutex::new(cluster)));
        Ok((url, info))
    } else if peer.one_port_cluster() {
        let (program, peer_args) = peer
            .command_with(&opts.peers_dir, &[], &opts.server_args)
            .map_err(|e| UsageError(e.to_string()))?;
        let nodes = opts.nodes.unwrap_or(PEER_CLUSTER_NODES);
        let (url, info, sup) = start_peer_cluster(peer, program, peer_args, nodes, path, cpus)?;
        started.supervisor = Some(Arc::new(Mutex::new(sup)));
        Ok((url, info))
    } else {
        let (program, peer_args) = peer
            .command_with(&opts.peers_dir, &cpus.server, &opts.server_args)
            .map_err(|e| UsageError(e.to_string()))?;
        let c = ServerChild::start_command(&program, &peer_args, &cpus.server)?;
        let (url, info) = started_target(&c, path, Some(peer.as_str()), cpus);
        started.child = Some(c);
        Ok((url, info))
    }
}

/// Starts a cluster peer (`socketio-cluster`: a primary whose `nodes` workers share one port,
/// over a private redis-server) under the supervisor, on the server CPUs when pinned. Returns
/// its one URL, the target record (every worker, the primary and redis-server sampled) and the
/// supervisor, which the run polls (re-forks) and asks to kill a worker for a kill fault.
fn start_peer_cluster(
    peer: Peer,
    program: PathBuf,
    args: Vec<String>,
    nodes: u32,
    path: &str,
    cpus: &Cpus,
) -> Result<(String, TargetInfo, Supervisor), TargetError> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let sup = Supervisor::start_shared_port(ClusterSpec {
        exe: program,
        arch: peer.as_str().into(),
        nodes,
        backplane: Backplane::Redis,
        redis_url: None,
        server_args: args,
        restart: RestartPolicy::default(),
        redis_cpus: cpus.server.clone(),
        node_cpus: if cpus.pin {
            cpus.server.clone()
        } else {
            Vec::new()
        },
    })
    .map_err(|source| TargetError::PeerCluster {
        peer: peer.as_str(),
        source,
    })?;
    let addr = sup
        .nodes()
        .first()
        .map(|n| n.listen)
        .ok_or(TargetError::NoWorkers(peer.as_str()))?;
    let url = format!("ws://{addr}{path}");
    let mut settings = BTreeMap::new();
    settings.insert("nodes".to_string(), nodes.to_string());
    settings.insert(
        "backplane".to_string(),
        Backplane::Redis.as_str().to_string(),
    );
    settings.insert(
        "command".to_string(),
        format!(
            "{command} --workers {nodes} --redis-url {}",
            sup.redis_url().unwrap_or("?")
        ),
    );
    let mut pids: Vec<u32> = sup.primary_pid().into_iter().collect();
    pids.extend(sup.nodes().iter().filter_map(|n| n.pid));
    if let Some(redis) = sup.redis_pid() {
        settings.insert("redis_pid".to_string(), redis.to_string());
        pids.push(redis);
    }
    let info = started_info(
        &url,
        Some(peer.as_str().into()),
        settings,
        cpus,
        pids.first().copied(),
        pids,
    );
    Ok((url, info, sup))
}

/// Raises our open-files soft limit to the hard one before starting a server that will inherit
/// it. A failure is only a warning here: the run itself checks the limit against its plan.
fn raise_nofile_for_child() {
    if let Err(e) = chatbench_loadgen::sys::raise_nofile() {
        tracing::warn!("cannot raise the open-files limit for the server: {e}");
    }
}

/// Starts `elixir-cluster` (`--nodes`, default 3; every node on the server CPUs, its
/// schedulers a share of them) and returns its URLs, target record and handle.
fn start_elixir_cluster(
    opts: &TargetStartOptions,
    path: &str,
    cpus: &Cpus,
) -> Result<(String, TargetInfo, ElixirCluster), TargetError> {
    let nodes = opts.nodes.unwrap_or(3) as usize;
    let n_cpus = if cpus.server.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cpus.server.len()
    };
    let schedulers = n_cpus.div_ceil(nodes).max(1);
    let cluster = ElixirCluster::start(
        &opts.peers_dir,
        nodes,
        schedulers,
        &cpus.server,
        &opts.server_args,
    )
    .map_err(|e| UsageError(e.to_string()))?;
    let url = cluster
        .addrs()
        .iter()
        .map(|a| format!("ws://{a}{path}"))
        .collect::<Vec<_>>()
        .join(",");
    let pids: Vec<u32> = cluster.nodes.iter().flatten().map(|c| c.pid).collect();
    let mut settings = BTreeMap::new();
    settings.insert("nodes".to_string(), nodes.to_string());
    settings.insert("schedulers_per_node".to_string(), schedulers.to_string());
    if let Some(c) = cluster.nodes.iter().flatten().next() {
        settings.insert("command".to_string(), c.args.join(" "));
    }
    let info = started_info(
        &url,
        Some(Peer::ElixirCluster.as_str().to_string()),
        settings,
        cpus,
        pids.first().copied(),
        pids,
    );
    Ok((url, info, cluster))
}

/// The target record of what chatbench started: `pid` the process sampled (the first of `pids`
/// when there are several), on the server CPUs when pinned.
fn started_info(
    url: &str,
    arch: Option<String>,
    settings: BTreeMap<String, String>,
    cpus: &Cpus,
    pid: Option<u32>,
    pids: Vec<u32>,
) -> TargetInfo {
    TargetInfo {
        url: url.to_string(),
        arch,
        pid,
        settings,
        cpu_affinity: cpus.affinity(),
        targets: Vec::new(),
        target_policy: None,
        pids,
    }
}

/// The URL and target record of a server chatbench started itself (not `chatbench serve`).
fn started_target(
    c: &ServerChild,
    path: &str,
    arch: Option<&str>,
    cpus: &Cpus,
) -> (String, TargetInfo) {
    let url = format!("ws://{}{path}", c.addr);
    let mut settings = BTreeMap::new();
    settings.insert("command".to_string(), c.args.join(" "));
    let info = started_info(
        &url,
        arch.map(str::to_owned),
        settings,
        cpus,
        Some(c.pid),
        Vec::new(),
    );
    (url, info)
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn scenario() -> Scenario {
        Scenario::parse("name = \"t\"\nconnections = 2\nrooms = 0\n", "test.toml")
            .expect("a minimal scenario")
    }

    #[test]
    fn flags_that_do_not_fit_are_the_users_mistake() {
        let opts = TargetStartOptions {
            target: Some("ws://127.0.0.1:1/ws".into()),
            backplane: Some(Backplane::Redis),
            ..TargetStartOptions::default()
        };
        let e = start_target(&opts, &mut scenario())
            .err()
            .expect("--backplane without --serve cluster");
        assert!(e.is_usage() && e.run_error().is_none(), "{e:?}");
        assert_eq!(e.to_string(), "--backplane needs --serve cluster");
    }

    #[test]
    fn a_run_that_failed_after_its_server_died_keeps_the_run_s_error() {
        let stopped = Stopped {
            server_note: Some((
                StopOutcome::AlreadyExited(std::process::ExitStatus::from_raw(256)),
                "starting\npanicked: boom\n\n".into(),
            )),
            cluster_state: None,
        };
        let e = stopped.explain(RunError::Layout("too few rooms".into()), "epoll");
        assert!(!e.is_usage());
        assert!(matches!(e.run_error(), Some(RunError::Layout(_))), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the epoll server had already exited: exit status: 1; its last line: panicked: boom"
        );
        // A server that was still up adds nothing to the run's error.
        let up = Stopped {
            server_note: None,
            cluster_state: None,
        };
        let e = up.explain(RunError::Agents("refused".into()), "epoll");
        assert_eq!(e.to_string(), "refused");
        assert!(matches!(e.run_error(), Some(RunError::Agents(_))));
    }

    #[test]
    fn a_started_server_that_refuses_at_its_announced_address_is_named() {
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let refused = || {
            RunError::Target(chatbench_loadgen::target::TargetError::Unreachable {
                url: "ws://127.0.0.1:9/ws".into(),
                addr,
                source: std::io::ErrorKind::ConnectionRefused.into(),
            })
        };
        let running = Stopped {
            server_note: Some((
                StopOutcome::Killed {
                    grace: Duration::ZERO,
                },
                String::new(),
            )),
            cluster_state: None,
        };
        let e = running.explain(refused(), "./my-server");
        assert!(!e.is_usage());
        assert!(matches!(e.run_error(), Some(RunError::Target(_))), "{e:?}");
        assert!(
            e.to_string().starts_with(
                "connection refused at 127.0.0.1:9 (the address the ./my-server server announced)"
            ),
            "{e}"
        );
        // Not started by us (--target): the run's own error, with its --target hint.
        let none = Stopped {
            server_note: None,
            cluster_state: None,
        };
        assert!(matches!(none.explain(refused(), "?"), TargetError::Run(_)));
    }
}
