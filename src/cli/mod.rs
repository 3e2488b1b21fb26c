//! Flags and subcommands. Each subcommand turns its raw flags into a typed, validated
//! configuration and calls one library entry point.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use chatbench_loadgen::coordinator::{AgentsSpec, CoordinatorOptions};
use chatbench_loadgen::launcher::ServerChild;
use chatbench_loadgen::peers::Peer;
use chatbench_loadgen::progress::ProgressMode;
use chatbench_loadgen::run::{human_summary, RunError, RunOptions};
use chatbench_loadgen::supervisor::{Backplane, ClusterSpec, RestartPolicy, Supervisor};
use chatbench_model::results::{RunStatus, TargetInfo};
use chatbench_model::scenario::{Scenario, TargetPolicy};

mod agent;
mod cluster;
mod compare;
mod gate;
mod install;
mod report;
mod serve;

/// `--version`: the crate's version and the commit the binary was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHATBENCH_BUILD_COMMIT"),
    ")"
);

/// Exit code: a threshold was crossed (`run`), or the gate found a regression.
const EXIT_THRESHOLD: u8 = 1;
/// Exit code: usage or input error.
const EXIT_USAGE: u8 = 2;
/// Exit code: the run could not be made or measured nothing.
const EXIT_RUN_FAILED: u8 = 3;
/// Exit code: the run is invalid (generator-limited).
const EXIT_INVALID: u8 = 4;
/// Exit code: interrupted by Ctrl-C (SIGINT); results written.
const EXIT_INTERRUPTED: u8 = 130;
/// Exit code: stopped by SIGTERM (what `timeout`, `docker stop` and Kubernetes send); results
/// written, as for Ctrl-C.
const EXIT_TERMINATED: u8 = 143;

/// chatbench — measure real-time chat server architectures.
///
/// Reference chat servers in several architectures, a load generator that opens many
/// WebSocket connections and measures delivery latency from the intended send time (open
/// loop, HdrHistogram), loss, memory and CPU per connection, and results you can check.
#[derive(Debug, Parser)]
#[command(name = "chatbench", version = VERSION, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Examples:\n  chatbench run --serve task-per-conn --scenario scenarios/demo.toml\n  chatbench serve --arch task-per-conn --listen 127.0.0.1:8080\n  chatbench run --scenario scenarios/smoke.toml --target ws://127.0.0.1:8080/ws --server-pid 1234\n\nExit codes: 0 ok, 1 a threshold crossed, 2 usage or input error, 3 run failed or measured nothing, 4 run invalid (generator-limited), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM (both keep the results)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a reference chat server.
    ///
    /// Prints one line on stdout when listening: `<bound address> ws://<bound address>/ws
    /// arch=<arch> pid=<pid>` (a mesh cluster node adds ` cluster=<address>`), so that
    /// scripts can start it on port 0. WebSocket at /ws,
    /// Prometheus metrics at /metrics, health at /healthz, all on the same port. SIGINT or
    /// SIGTERM: stop accepting, close every client with 1001, exit 0.
    Serve(serve::ServeArgs),
    /// Run a scenario against a target and write the results.
    ///
    /// Either point it at a running server (--target, and --server-pid to sample its memory and
    /// CPU) or let it start a reference server itself (--serve ARCH). Results land in
    /// <out>/<UTC timestamp>-<scenario>/: summary.json, timeseries.csv, latency.hgrm.
    Run(RunArgs),
    /// Compare architectures: run a suite against each and write the comparison table.
    ///
    /// Starts each architecture itself (pinned apart from the generator when there are two or
    /// more CPUs), runs every scenario of the suite against it, and writes
    /// <out>/<UTC timestamp>-compare-<suite>/comparison.md and comparison.json, with every run's
    /// results under runs/. A failed architecture is reported as failed; the rest still run.
    Compare(compare::CompareArgs),
    /// Run a local cluster of server nodes under a supervisor (`cluster up`).
    Cluster(cluster::ClusterArgs),
    /// Rebuild a comparison's table (comparison.md and .json) and charts from its results files
    /// alone; with two folders (two comparisons, or two runs), print them side by side.
    Report(report::ReportArgs),
    /// CI performance-regression gate: compare with a committed baseline and exit 0 (pass),
    /// 1 (regression) or 2 (could not judge). See docs/gate.md.
    Gate(gate::GateArgs),
    /// Run the client engine for a coordinator (`chatbench run --agents HOST:PORT,…`).
    ///
    /// Prints its bound address as the first stdout line. Off loopback it needs --token-file;
    /// it only loads targets in its --allow-target list (default: loopback). See
    /// docs/distributed.md.
    Agent(agent::AgentArgs),
    /// Print a shell completion script: `chatbench completions bash > /etc/bash_completion.d/chatbench`.
    Completions(install::CompletionsArgs),
    /// Print the man page (roff): `chatbench man > chatbench.1`.
    Man,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProgressArg {
    /// A live status line on a terminal, log lines otherwise.
    Auto,
    /// One log line per second on stderr.
    Lines,
    /// Nothing but the final summary.
    Quiet,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TargetPolicyArg {
    /// Every room has members on every target.
    Span,
    /// Each room lives on one target.
    Partition,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario file (TOML; see docs/scenarios.md).
    #[arg(long, short = 's', value_name = "FILE")]
    scenario: PathBuf,
    /// WebSocket URL of the server under test, e.g. ws://127.0.0.1:8080/ws; several separated
    /// by commas spread the connections over them (see --target-policy).
    #[arg(
        long,
        short = 't',
        value_name = "URL",
        conflicts_with_all = ["serve", "serve_peer", "serve_cmd"],
        required_unless_present_any = ["serve", "serve_peer", "serve_cmd"]
    )]
    target: Option<String>,
    /// Start this reference server architecture as a child process and run against it.
    #[arg(long, value_name = "ARCH", value_parser = serve_arch_names(), conflicts_with_all = ["serve_peer", "serve_cmd"], group = "started_server")]
    serve: Option<String>,
    /// With --serve: start this many server processes under a supervisor (`cluster up`'s) and
    /// spread the clients over them. With `--serve cluster` rooms span the nodes over
    /// --backplane (policy `span`); with a single-server architecture they are independent
    /// servers and each room stays on one (policy `partition`). Memory and CPU are the sums
    /// over the nodes (and a private redis-server); the nodes' state lands in the run folder as cluster.json.
    /// With --serve-peer socketio-cluster: its number of worker processes (default 3); with
    /// --serve-peer elixir-cluster: that many Elixir nodes (default 3).
    #[arg(long, value_name = "N", requires = "started_server", value_parser = clap::value_parser!(u32).range(1..=256))]
    nodes: Option<u32>,
    /// With --serve cluster: how rooms span nodes (mesh: peer links; redis: a broker, private
    /// redis-server unless --redis-url).
    #[arg(long, value_enum, value_name = "BACKPLANE", requires = "serve")]
    backplane: Option<BackplaneArg>,
    /// With --serve cluster --backplane redis: an existing Redis server.
    #[arg(long, value_name = "URL", requires = "backplane")]
    redis_url: Option<String>,
    /// Start a third-party peer server from servers/peers/ (Node.js) and run against it; the
    /// scenario's `protocol` picks what it speaks (node-ws: chatbench, echo, template;
    /// socketio: socketio; socketio-cluster: socketio, from --nodes workers under Node's
    /// `cluster` module over a private redis-server; elixir and elixir-cluster: chatbench,
    /// phoenix). See docs/profiles.md.
    #[arg(long, value_name = "PEER", value_parser = peer_names(), conflicts_with = "serve_cmd", group = "started_server")]
    serve_peer: Option<String>,
    /// Start this server command and run against it: split on spaces (no shell), it must print
    /// its bound address (HOST:PORT) as the first word of its first stdout line, e.g.
    /// --serve-cmd "node my-server.js --port 0". The scenario's `protocol` says how to talk to it.
    #[arg(long, value_name = "COMMAND")]
    serve_cmd: Option<String>,
    /// The request path on the --serve-cmd server (the profile's own path when "/").
    #[arg(long, value_name = "PATH", default_value = "/", requires = "serve_cmd")]
    serve_path: String,
    /// Folder of the peer servers (with package.json and node_modules) for --serve-peer.
    #[arg(long, value_name = "DIR", default_value = "servers/peers")]
    peers_dir: PathBuf,
    /// Extra flag for the server started by --serve or --serve-peer (repeatable), e.g.
    /// --server-arg=--slow-consumer=disconnect, --server-arg=--fault-injection.
    #[arg(
        long = "server-arg",
        value_name = "ARG",
        requires = "started_server",
        allow_hyphen_values = true
    )]
    server_args: Vec<String>,
    /// How connections spread over several targets: `span` (every room has members on every
    /// target: a cluster whose rooms span nodes) or `partition` (each room on one target:
    /// independent single servers). Overrides the scenario's `target_policy`.
    #[arg(long, value_enum, value_name = "POLICY")]
    target_policy: Option<TargetPolicyArg>,
    /// Spread the run over agent processes: `local:N` (start N local agents), `auto` (as many
    /// local agents as the descriptor limit and the plan need), or HOST:PORT,… of running
    /// `chatbench agent`s. Results are merged exactly (see docs/distributed.md).
    #[arg(long, value_name = "local:N|auto|HOST:PORT,...")]
    agents: Option<String>,
    /// Token file for remote agents started with --token-file.
    #[arg(long, value_name = "FILE", requires = "agents")]
    agent_token_file: Option<PathBuf>,
    /// Pid of the server process behind --target, to sample its memory and CPU.
    #[arg(long, value_name = "PID", conflicts_with_all = ["serve", "serve_peer", "serve_cmd"])]
    server_pid: Option<u32>,
    /// Override a scenario field (repeatable), e.g. `--set connections=500 --set 'measure="5s"'`
    /// (values are TOML; a bare word is taken as a string).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// wss:// targets: trust only the CA certificates in this PEM file (instead of the built-in
    /// Mozilla roots); the same as `--set client.ca_file=FILE`, recorded with the overrides.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// wss:// targets: accept any server certificate (testing only). Printed as a warning and
    /// recorded with the overrides (`client.insecure=true`) and in the summary's notes.
    #[arg(long)]
    insecure: bool,
    /// A pass/fail limit on a figure of docs/figures.md (repeatable): KEY<=VALUE, KEY<VALUE,
    /// KEY>=VALUE or KEY>VALUE, the value in the unit the figure is shown in, e.g.
    /// --threshold 'p99_latency<=50ms' --threshold 'loss_ratio<=0.001'. Added to the scenario's
    /// [thresholds] (recorded as `--set thresholds.KEY=…`); exit 1 when one is crossed.
    #[arg(long = "threshold", value_name = "KEY<=VALUE")]
    thresholds: Vec<String>,
    /// Write the thresholds' verdicts as JUnit XML to FILE (one test case per threshold, a
    /// crossed one failed; a run that measured nothing adds a failed case), atomically.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// A name for the target, recorded in summary.json (`target.settings.label`): `chatbench
    /// gate` matches baseline and current runs by it instead of by URL (whose port changes on
    /// CI). Letters, digits, `.`, `_`, `-`.
    #[arg(long, value_name = "NAME", value_parser = parse_label)]
    label: Option<String>,
    /// Folder that receives the run folder.
    #[arg(long, value_name = "DIR", default_value = "results/runs")]
    out: PathBuf,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
    /// With --serve on 2+ CPUs, do not pin the server and the generator to separate CPUs.
    #[arg(long)]
    no_pin: bool,
}

/// How a cluster's rooms span nodes (`run --backplane`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum BackplaneArg {
    /// Peer-to-peer: one TCP link per pair of nodes.
    Mesh,
    /// A Redis broker.
    Redis,
}

/// The architectures `run --serve` accepts: every single-server one, and `cluster`.
pub(crate) fn serve_arch_names() -> clap::builder::PossibleValuesParser {
    let mut names: Vec<&'static str> = chatbench_servers::Arch::ALL.map(|a| a.as_str()).to_vec();
    names.push(chatbench_servers::Arch::Cluster.as_str());
    clap::builder::PossibleValuesParser::new(names)
}

/// The architecture names `--serve` accepts.
pub(crate) fn arch_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(chatbench_servers::Arch::ALL.map(|a| a.as_str()))
}

/// The peer names `--serve-peer` accepts.
pub(crate) fn peer_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Peer::ALL.map(|p| p.as_str()))
}

/// Entry point: parse, dispatch, map errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => run(args),
        Command::Compare(args) => compare::compare(args),
        Command::Report(args) => report::report(args),
        Command::Cluster(args) => cluster::cluster(args),
        Command::Gate(args) => gate::gate(args),
        Command::Agent(args) => agent::agent(args),
        Command::Completions(args) => install::completions(args),
        Command::Man => install::man(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            let code = if e.downcast_ref::<UsageError>().is_some() {
                EXIT_USAGE
            } else if let Some(re) = e.downcast_ref::<RunError>() {
                match re {
                    RunError::Target(
                        chatbench_loadgen::target::TargetError::BadUrl { .. }
                        | chatbench_loadgen::target::TargetError::Placeholder { .. }
                        | chatbench_loadgen::target::TargetError::TlsConfig { .. },
                    )
                    | RunError::Layout(_) => EXIT_USAGE,
                    _ => EXIT_RUN_FAILED,
                }
            } else {
                EXIT_RUN_FAILED
            };
            ExitCode::from(code)
        }
    }
}

/// An error in what the user gave us (flags, files): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn load_scenario(path: &std::path::Path, overrides: &[String]) -> anyhow::Result<Scenario> {
    let scenario = if overrides.is_empty() {
        Scenario::load(path).map_err(|e| UsageError(e.to_string()))?
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsageError(format!("{}: cannot read the scenario: {e}", path.display()))
        })?;
        let mut table: toml::Table = text
            .parse()
            .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        for o in overrides {
            let Some((key, value)) = o.split_once('=') else {
                return Err(UsageError(format!(
                    "--set {o:?}: expected KEY=VALUE, e.g. --set connections=500"
                ))
                .into());
            };
            let value: toml::Value = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_string()));
            let mut cursor = &mut table;
            let parts: Vec<&str> = key.trim().split('.').collect();
            for p in &parts[..parts.len() - 1] {
                cursor = cursor
                    .entry(p.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| UsageError(format!("--set {o:?}: {p:?} is not a table")))?;
            }
            cursor.insert(parts[parts.len() - 1].to_string(), value);
        }
        let merged = toml::to_string(&table).context("re-encoding the scenario with overrides")?;
        let origin = format!("{} (with --set overrides)", path.display());
        let mut s = Scenario::parse(&merged, &origin).map_err(|e| UsageError(e.to_string()))?;
        s.source.path = Some(path.to_path_buf());
        s
    };
    Ok(scenario)
}

/// `--ca-file` and `--insecure` as the `--set` overrides they stand for (so that they are
/// validated, sent to agents and recorded like any other).
fn tls_overrides(args: &mut RunArgs) {
    if let Some(path) = &args.ca_file {
        let value = toml::Value::String(path.display().to_string());
        args.overrides.push(format!("client.ca_file={value}"));
    }
    if args.insecure {
        eprintln!(
            "warning: --insecure: the server's TLS certificate is not verified (recorded in the results)"
        );
        args.overrides.push("client.insecure=true".into());
    }
}

fn run(mut args: RunArgs) -> anyhow::Result<ExitCode> {
    tls_overrides(&mut args);
    for t in &args.thresholds {
        let o = chatbench_model::thresholds::flag_as_override(t)
            .map_err(|e| UsageError(e.to_string()))?;
        args.overrides.push(o);
    }
    let mut scenario = load_scenario(&args.scenario, &args.overrides)?;
    preflight_out(&args.out)?;
    if let Some(junit) = &args.junit {
        preflight_junit(junit)?;
    }
    if let Some(pid) = args.server_pid {
        preflight_server_pid(pid)?;
    }
    if let Some(p) = args.target_policy {
        scenario.target_policy = match p {
            TargetPolicyArg::Span => TargetPolicy::Span,
            TargetPolicyArg::Partition => TargetPolicy::Partition,
        };
    }
    let agents = match &args.agents {
        None => None,
        Some(spec) => {
            let spec = AgentsSpec::parse(spec).map_err(UsageError)?;
            let token = match &args.agent_token_file {
                Some(p) => Some(
                    chatbench_loadgen::agent::read_token(p)
                        .map_err(|e| UsageError(e.to_string()))?,
                ),
                None => None,
            };
            let exe = std::env::current_exe().context("locating the chatbench executable")?;
            Some((spec, token, exe))
        }
    };
    let online = chatbench_loadgen::sys::cpu_affinity();
    // Pin the server and the generator to separate CPUs when chatbench starts the server and
    // there are at least two: the first half of the CPUs for the server, the rest for us.
    let starts_server =
        args.serve.is_some() || args.serve_peer.is_some() || args.serve_cmd.is_some();
    let pin = starts_server && !args.no_pin && online.len() >= 2;
    let (server_cpus, gen_cpus) = if pin {
        let half = online.len() / 2;
        (online[..half].to_vec(), online[half..].to_vec())
    } else {
        (Vec::new(), Vec::new())
    };
    let mut child = None;
    let mut supervisor = None;
    let mut elixir_cluster = None;
    let clustered = args.serve.as_deref() == Some("cluster");
    let peer = args
        .serve_peer
        .as_deref()
        .map(Peer::parse)
        .transpose()
        .map_err(|e| UsageError(e.to_string()))?;
    let peer_cluster = peer.is_some_and(Peer::is_cluster);
    let peer_nodes = peer_cluster || peer == Some(Peer::ElixirCluster);
    if args.nodes.is_some() && args.serve.is_none() && !peer_nodes {
        return Err(UsageError(
            "--nodes needs --serve ARCH, or --serve-peer socketio-cluster or elixir-cluster".into(),
        )
        .into());
    }
    if !args.server_args.is_empty() && args.serve.is_none() && peer.is_none() {
        return Err(
            UsageError("--server-arg needs --serve ARCH or --serve-peer PEER".into()).into(),
        );
    }
    if args.backplane.is_some() && !clustered {
        return Err(UsageError("--backplane needs --serve cluster".into()).into());
    }
    if args.redis_url.is_some() && !matches!(args.backplane, Some(BackplaneArg::Redis)) {
        return Err(UsageError("--redis-url needs --backplane redis".into()).into());
    }
    if let Some(f) = scenario.kill_fault() {
        // The run kills a node it started and supervises: only `--serve cluster` (and the
        // socketio-cluster peer) has them.
        if !clustered && !peer_cluster {
            return Err(UsageError(format!(
                "{}: [[fault]] kill_node = {} needs --serve cluster or --serve-peer \
                 socketio-cluster (the run kills a node it started and supervises itself; add \
                 --serve cluster --nodes N)",
                args.scenario.display(),
                f.kill_node
            ))
            .into());
        }
        if agents.is_some() {
            return Err(UsageError(format!(
                "{}: [[fault]] kill_node is not supported with --agents yet (run it in one process)",
                args.scenario.display()
            ))
            .into());
        }
        let nodes = args
            .nodes
            .unwrap_or(if peer_cluster { PEER_CLUSTER_NODES } else { 1 });
        if f.kill_node > nodes {
            return Err(UsageError(format!(
                "{}: [[fault]] kill_node = {} but --nodes {nodes} starts nodes 1..={nodes} \
                 (raise --nodes or lower kill_node)",
                args.scenario.display(),
                f.kill_node
            ))
            .into());
        }
    }
    let (target_url, target_info) = if let (Some(arch), true) =
        (&args.serve, clustered || args.nodes.is_some_and(|n| n > 1))
    {
        let nodes = args.nodes.unwrap_or(1);
        let backplane = match args.backplane {
            Some(BackplaneArg::Redis) => Backplane::Redis {
                url: args.redis_url.clone(),
            },
            _ => Backplane::Mesh,
        };
        if args.target_policy.is_none() {
            scenario.target_policy = if clustered {
                TargetPolicy::Span
            } else {
                TargetPolicy::Partition
            };
        }
        let sup = Supervisor::start(ClusterSpec {
            exe: std::env::current_exe().context("locating the chatbench executable")?,
            arch: arch.clone(),
            nodes,
            backplane: backplane.clone(),
            server_args: args.server_args.clone(),
            restart: RestartPolicy::default(),
            redis_cpus: server_cpus.clone(),
            node_cpus: if pin { server_cpus.clone() } else { Vec::new() },
        })
        .context("starting the server nodes")?;
        let url = sup.urls().join(",");
        let mut settings = std::collections::BTreeMap::new();
        settings.insert("nodes".to_string(), nodes.to_string());
        if clustered {
            settings.insert("backplane".to_string(), backplane.as_str().to_string());
        }
        settings.insert("args".to_string(), sup.node_args(0).join(" "));
        if pin {
            let slices = chatbench_loadgen::supervisor::node_cpu_slices(&server_cpus, nodes);
            let text: Vec<String> = slices.iter().map(|c| cpu_list(c)).collect();
            settings.insert("node_cpus".to_string(), text.join("; "));
        }
        // The private redis-server is part of the server side: sampled with the nodes.
        let mut pids: Vec<u32> = sup.nodes().iter().filter_map(|n| n.pid).collect();
        if let Some(redis) = sup.redis_pid() {
            settings.insert("redis_pid".to_string(), redis.to_string());
            pids.push(redis);
        }
        let info = TargetInfo {
            url: url.clone(),
            arch: Some(arch.clone()),
            pid: pids.first().copied(),
            settings,
            cpu_affinity: pin.then(|| server_cpus.clone()),
            targets: Vec::new(),
            target_policy: None,
            pids,
        };
        // Shared with the run, which polls it (restarts) and kills a node for a kill fault;
        // restarted nodes are spawned from this (the main) thread: see Supervisor.
        supervisor = Some(Arc::new(Mutex::new(sup)));
        (url, info)
    } else if let Some(arch) = &args.serve {
        let exe = std::env::current_exe().context("locating the chatbench executable")?;
        let mut extra = args.server_args.clone();
        if pin {
            extra.push("--cpus".into());
            extra.push(cpu_list(&server_cpus));
        }
        let c = ServerChild::start(&exe, arch, &extra)?;
        let url = format!("ws://{}/ws", c.addr);
        let mut settings = std::collections::BTreeMap::new();
        settings.insert("args".to_string(), c.args.join(" "));
        let info = TargetInfo {
            url: url.clone(),
            arch: Some(arch.clone()),
            pid: Some(c.pid),
            settings,
            cpu_affinity: pin.then(|| server_cpus.clone()),
            targets: Vec::new(),
            target_policy: None,
            pids: Vec::new(),
        };
        child = Some(c);
        (url, info)
    } else if let Some(peer) = peer {
        // The peer inherits our open-files limit and, unlike `chatbench serve`, does not raise
        // its own: raise the soft limit to the hard one first.
        raise_nofile_for_child();
        let path = peer
            .url_path(scenario.protocol)
            .map_err(|e| UsageError(e.to_string()))?;
        if peer == Peer::ElixirCluster {
            let (url, info, cluster) = start_elixir_cluster(&args, path, pin, &server_cpus)?;
            if args.target_policy.is_none() {
                scenario.target_policy = TargetPolicy::Span;
            }
            elixir_cluster = Some(cluster);
            (url, info)
        } else if peer_cluster {
            let (program, peer_args) = peer
                .command_with(&args.peers_dir, &[], &args.server_args)
                .map_err(|e| UsageError(e.to_string()))?;
            let nodes = args.nodes.unwrap_or(PEER_CLUSTER_NODES);
            let (url, info, sup) =
                start_peer_cluster(peer, program, peer_args, nodes, path, pin, &server_cpus)?;
            supervisor = Some(Arc::new(Mutex::new(sup)));
            (url, info)
        } else {
            let (program, peer_args) = peer
                .command_with(&args.peers_dir, &server_cpus, &args.server_args)
                .map_err(|e| UsageError(e.to_string()))?;
            let c = ServerChild::start_command(&program, &peer_args, &server_cpus)?;
            let (url, info) = started_target(&c, path, Some(peer.as_str()), pin, &server_cpus);
            child = Some(c);
            (url, info)
        }
    } else if let Some(cmd) = &args.serve_cmd {
        let mut words = cmd.split_whitespace().map(str::to_owned);
        let program = words.next().ok_or_else(|| {
            UsageError("--serve-cmd is empty: give the server's command line".into())
        })?;
        let rest: Vec<String> = words.collect();
        if !args.serve_path.starts_with('/') {
            return Err(UsageError(format!(
                "--serve-path {:?}: must start with '/'",
                args.serve_path
            ))
            .into());
        }
        raise_nofile_for_child();
        let c = ServerChild::start_command(std::path::Path::new(&program), &rest, &server_cpus)?;
        let (url, info) = started_target(&c, &args.serve_path, None, pin, &server_cpus);
        child = Some(c);
        (url, info)
    } else {
        let url = args
            .target
            .clone()
            .ok_or_else(|| UsageError("give --target URL or --serve ARCH".into()))?;
        let info = TargetInfo {
            url: url.clone(),
            arch: None,
            pid: args.server_pid,
            settings: Default::default(),
            cpu_affinity: None,
            targets: Vec::new(),
            target_policy: None,
            pids: Vec::new(),
        };
        (url, info)
    };
    if pin {
        chatbench_loadgen::sys::set_cpu_affinity(&gen_cpus).context("pinning the generator")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let progress = match args.progress {
        ProgressArg::Auto => ProgressMode::Auto,
        ProgressArg::Lines => ProgressMode::Lines,
        ProgressArg::Quiet => ProgressMode::Quiet,
    };
    // The exit code of the signal that stopped the run (0: none).
    let stop_signal = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let result = runtime.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stop_signal = stop_signal.clone();
        tokio::spawn(async move {
            let Ok(mut signals) = StopSignals::new() else {
                eprintln!("warning: cannot listen for SIGINT/SIGTERM: a signal will end the run without its results");
                return;
            };
            let first = signals.next().await;
            stop_signal.store(first.exit_code(), std::sync::atomic::Ordering::Relaxed);
            eprintln!("\n{}: finishing the current phase and writing what was measured (Ctrl-C again to abort)", first.name());
            let _ = tx.send(true);
            let second = signals.next().await;
            std::process::exit(i32::from(second.exit_code()));
        });
        let opts = RunOptions {
            scenario,
            overrides: args.overrides.clone(),
            target_url,
            target_info: with_label(target_info, args.label.as_deref()),
            out_root: args.out.clone(),
            progress,
            interrupt: rx,
            cluster: supervisor.clone(),
        };
        match agents {
            None => chatbench_loadgen::run::run(opts).await,
            Some((spec, token, exe)) => {
                chatbench_loadgen::coordinator::run(CoordinatorOptions {
                    run: opts,
                    agents: spec,
                    token,
                    exe,
                    sample_delay: Duration::ZERO,
                })
                .await
            }
        }
    });
    let server_note = child.map(|c| c.stop(Duration::from_secs(10)));
    if let Some(cluster) = elixir_cluster {
        for (how, tail) in cluster.stop(Duration::from_secs(10)) {
            if !how.is_clean() {
                eprintln!("elixir-cluster node: {how}\n{tail}");
            }
        }
    }
    // The nodes' state (pids, restarts, events) beside the results, then stop them.
    let cluster_state = supervisor.as_ref().map(|s| {
        let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
        let state = s.state_json();
        for (id, how) in s.stop(Duration::from_secs(10)) {
            if !how.is_clean() {
                eprintln!("server node {id}: {how}");
            }
        }
        state
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let mut report = match (result, &server_note) {
        (Ok(r), _) => r,
        // The server died before the run could start: its own last words are the reason.
        (Err(e), Some((how, tail))) if how.had_already_exited() => {
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            return Err(anyhow::Error::new(e).context(format!(
                "the {} server {how}; its last line: {last}",
                args.serve
                    .as_deref()
                    .or(args.serve_peer.as_deref())
                    .or(args.serve_cmd.as_deref())
                    .unwrap_or("?")
            )));
        }
        (Err(e), _) => return Err(e.into()),
    };
    if let Some(state) = cluster_state {
        let json = serde_json::to_vec_pretty(&state).context("encoding cluster.json")?;
        chatbench_model::results::write_file_atomic(&report.dir.join("cluster.json"), &json)
            .context("writing cluster.json")?;
    }
    if report.summary.failover.is_some() {
        // The node-loss timeline beside the run (the per-run timeline comes with it).
        let charts = report.dir.join("charts");
        let drawn = std::fs::create_dir_all(&charts)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                chatbench_report::charts::run_timeline(&report.dir, &charts, "timeline")
                    .map_err(anyhow::Error::from)
            });
        if let Err(e) = drawn {
            eprintln!("warning: the node-loss chart was not drawn: {e:#}");
        }
    }
    let floor = fail_if_nothing_measured(&mut report)?;
    print!("{}", human_summary(&report.summary, &report.dir));
    if let Some((how, tail)) = server_note {
        if !how.is_clean() {
            eprintln!("server: {how}");
            if !tail.is_empty() {
                eprintln!("server stderr (last lines):\n{tail}");
            }
        }
    }
    let s = &report.summary;
    let crossed = judge_thresholds(s, &floor, args.junit.as_deref())?;
    let code = match (s.status, s.valid) {
        (RunStatus::Failed, _) => EXIT_RUN_FAILED,
        (RunStatus::Interrupted, _) => match stop_signal.load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => EXIT_INTERRUPTED,
            code => code,
        },
        (_, false) => EXIT_INVALID,
        _ if crossed => EXIT_THRESHOLD,
        _ => 0,
    };
    Ok(ExitCode::from(code))
}

/// A run that measured nothing meaningful (nothing sent or delivered, every connection closed,
/// the target died: `model::thresholds::nothing_measured`) fails, with or without thresholds:
/// its summary.json is rewritten as failed with the reasons. Returns them.
fn fail_if_nothing_measured(
    report: &mut chatbench_loadgen::run::RunReport,
) -> anyhow::Result<Vec<String>> {
    let why = chatbench_model::thresholds::nothing_measured(&report.summary);
    if why.is_empty() {
        return Ok(why);
    }
    let s = &mut report.summary;
    s.status = RunStatus::Failed;
    s.valid = false;
    s.invalid_reasons.extend(
        why.iter()
            .map(|w| format!("measured nothing meaningful: {w}")),
    );
    let json = serde_json::to_vec_pretty(s).context("encoding summary.json")?;
    chatbench_model::results::write_file_atomic(&report.dir.join("summary.json"), &json)
        .context("rewriting summary.json as failed")?;
    Ok(why)
}

/// Judges the run's thresholds (the scenario's `[thresholds]`, `--threshold` included), prints
/// each with its value against its limit, writes the JUnit file when asked; true when one
/// was crossed.
fn judge_thresholds(
    s: &chatbench_model::results::Summary,
    floor: &[String],
    junit: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    use chatbench_model::thresholds;
    let limits = thresholds::of_summary(s).context("reading the run's thresholds")?;
    let judged = thresholds::judge(s, &limits);
    if !judged.is_empty() {
        println!("thresholds");
        for j in &judged {
            println!("  {}", j.line());
        }
    }
    for w in floor {
        eprintln!("FAILED: measured nothing meaningful: {w}");
    }
    if let Some(path) = junit {
        let failed_run = match (s.status, floor.first()) {
            (_, Some(w)) => Some(format!("measured nothing meaningful: {w}")),
            (RunStatus::Failed, None) => Some(
                s.invalid_reasons
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "the run failed".into()),
            ),
            _ => None,
        };
        let xml = thresholds::junit(&s.scenario.name, &judged, failed_run.as_deref());
        chatbench_model::results::write_file_atomic(path, xml.as_bytes())
            .with_context(|| format!("writing the JUnit report {}", path.display()))?;
    }
    Ok(judged.iter().any(|j| !j.passed))
}

/// `--label NAME`: 1–64 of letters, digits, `.`, `_`, `-`.
fn parse_label(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: a label is 1–64 letters, digits, '.', '_' or '-', e.g. my-chat-staging"
        ))
    }
}

/// The target with its `--label` recorded (the gate matches runs by it).
fn with_label(mut info: TargetInfo, label: Option<&str>) -> TargetInfo {
    if let Some(l) = label {
        info.settings.insert(
            chatbench_model::results::TARGET_LABEL_SETTING.to_string(),
            l.to_string(),
        );
    }
    info
}

/// `--junit FILE`: its folder must exist and be writable before any load is run.
fn preflight_junit(path: &std::path::Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let probe = dir.join(format!(".chatbench-junit-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            UsageError(format!(
                "--junit {}: cannot write in {}: {e} (create the folder or pick another path)",
                path.display(),
                dir.display()
            ))
        })?;
    Ok(())
}

/// Worker processes of a cluster peer (`--serve-peer socketio-cluster`) without `--nodes`.
const PEER_CLUSTER_NODES: u32 = 3;

/// Starts a cluster peer (`socketio-cluster`: a primary whose `nodes` workers share one port,
/// over a private redis-server) under the supervisor, on the server CPUs when pinned. Returns
/// its one URL, the target record (every worker, the primary and redis-server sampled) and the
/// supervisor, which the run polls (re-forks) and asks to kill a worker for a kill fault.
fn start_peer_cluster(
    peer: Peer,
    program: std::path::PathBuf,
    args: Vec<String>,
    nodes: u32,
    path: &str,
    pin: bool,
    server_cpus: &[usize],
) -> anyhow::Result<(String, TargetInfo, Supervisor)> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let sup = Supervisor::start_shared_port(ClusterSpec {
        exe: program,
        arch: peer.as_str().into(),
        nodes,
        backplane: Backplane::Redis { url: None },
        server_args: args,
        restart: RestartPolicy::default(),
        redis_cpus: server_cpus.to_vec(),
        node_cpus: if pin {
            server_cpus.to_vec()
        } else {
            Vec::new()
        },
    })
    .with_context(|| format!("starting the {} peer", peer.as_str()))?;
    let addr = sup
        .nodes()
        .first()
        .map(|n| n.listen)
        .ok_or_else(|| anyhow::anyhow!("the {} peer started no workers", peer.as_str()))?;
    let url = format!("ws://{addr}{path}");
    let mut settings = std::collections::BTreeMap::new();
    settings.insert("nodes".to_string(), nodes.to_string());
    settings.insert("backplane".to_string(), "redis".to_string());
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
    let info = TargetInfo {
        url: url.clone(),
        arch: Some(peer.as_str().into()),
        pid: pids.first().copied(),
        settings,
        cpu_affinity: pin.then(|| server_cpus.to_vec()),
        targets: Vec::new(),
        target_policy: None,
        pids,
    };
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
    args: &RunArgs,
    path: &str,
    pin: bool,
    server_cpus: &[usize],
) -> anyhow::Result<(String, TargetInfo, chatbench_loadgen::peers::ElixirCluster)> {
    let nodes = args.nodes.unwrap_or(3) as usize;
    let cpus = if server_cpus.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        server_cpus.len()
    };
    let schedulers = cpus.div_ceil(nodes).max(1);
    let cluster = chatbench_loadgen::peers::ElixirCluster::start(
        &args.peers_dir,
        nodes,
        schedulers,
        server_cpus,
        &args.server_args,
    )
    .map_err(|e| UsageError(e.to_string()))?;
    let url = cluster
        .addrs()
        .iter()
        .map(|a| format!("ws://{a}{path}"))
        .collect::<Vec<_>>()
        .join(",");
    let pids: Vec<u32> = cluster.nodes.iter().flatten().map(|c| c.pid).collect();
    let mut settings = std::collections::BTreeMap::new();
    settings.insert("nodes".to_string(), nodes.to_string());
    settings.insert("schedulers_per_node".to_string(), schedulers.to_string());
    if let Some(c) = cluster.nodes.iter().flatten().next() {
        settings.insert("command".to_string(), c.args.join(" "));
    }
    let info = TargetInfo {
        url: url.clone(),
        arch: Some(Peer::ElixirCluster.as_str().to_string()),
        pid: pids.first().copied(),
        settings,
        cpu_affinity: pin.then(|| server_cpus.to_vec()),
        targets: Vec::new(),
        target_policy: None,
        pids,
    };
    Ok((url, info, cluster))
}

/// The URL and target record of a server chatbench started itself (not `chatbench serve`).
fn started_target(
    c: &ServerChild,
    path: &str,
    arch: Option<&str>,
    pin: bool,
    server_cpus: &[usize],
) -> (String, TargetInfo) {
    let url = format!("ws://{}{path}", c.addr);
    let mut settings = std::collections::BTreeMap::new();
    settings.insert("command".to_string(), c.args.join(" "));
    let info = TargetInfo {
        url: url.clone(),
        arch: arch.map(str::to_owned),
        pid: Some(c.pid),
        settings,
        cpu_affinity: pin.then(|| server_cpus.to_vec()),
        targets: Vec::new(),
        target_policy: None,
        pids: Vec::new(),
    };
    (url, info)
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a CPU list like `0,2-3`.
pub fn parse_cpu_list(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
            if a > b {
                bail!("bad CPU range {part:?}");
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse()?);
        }
    }
    if out.is_empty() {
        bail!("empty CPU list");
    }
    Ok(out)
}

/// A signal that stops a run: Ctrl-C (SIGINT) or SIGTERM. The first stops it gracefully (the
/// measured part is kept), a second aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "interrupted",
            StopSignal::Terminate => "terminated (SIGTERM)",
        }
    }

    fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => EXIT_INTERRUPTED,
            StopSignal::Terminate => EXIT_TERMINATED,
        }
    }
}

/// Both stop signals, listened for together.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next stop signal.
    async fn next(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }
}

/// Checks, before any load, that results can be written under `out`, without creating
/// anything: a probe file in `out`, or, when `out` does not exist yet, in its nearest existing
/// ancestor (the run makes the rest). A run whose results cannot be kept is not worth its load.
fn preflight_out(out: &std::path::Path) -> anyhow::Result<()> {
    let unwritable = |at: &std::path::Path, e: std::io::Error| {
        UsageError(format!(
            "--out {}: cannot write results there ({}: {e}); pick a writable folder",
            out.display(),
            at.display()
        ))
    };
    let mut at = out;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = std::path::Path::new(".");
                break;
            }
        }
    }
    if !at.is_dir() {
        return Err(unwritable(
            at,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder"),
        )
        .into());
    }
    write_probe(at).map_err(|e| unwritable(at, e))?;
    Ok(())
}

/// Creates and removes a probe file in `dir`.
fn write_probe(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".chatbench-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Checks that `--server-pid` names a live process this user can read, before any load.
fn preflight_server_pid(pid: u32) -> anyhow::Result<()> {
    let stat = std::path::PathBuf::from(format!("/proc/{pid}/stat"));
    match std::fs::read_to_string(&stat) {
        Ok(_) => Ok(()),
        Err(e) => Err(UsageError(format!(
            "--server-pid {pid}: no such process to sample ({}: {e}); pass the PID of the running server (e.g. from `chatbench serve`'s first line)",
            stat.display()
        ))
        .into()),
    }
}

/// An error and its causes on one line, each said once: a library error that already quotes its
/// cause (`cannot read X: No such file…`) is not followed by that cause again.
pub(crate) fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(io)
            .context(format!(
                "cannot read /x/runs: {}",
                std::io::Error::from(std::io::ErrorKind::NotFound)
            ))
            .context("reading the comparison in /x");
        let text = error_chain(&e);
        assert_eq!(text.matches("entity not found").count(), 1, "{text}");
        assert!(
            text.starts_with("reading the comparison in /x: cannot read /x/runs"),
            "{text}"
        );
    }
}
