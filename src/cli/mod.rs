//! Flags and subcommands. Each subcommand turns its raw flags into a typed, validated
//! configuration and calls one library entry point.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use chatbench_harness::compare::CompareError;
use chatbench_harness::floor::FloorError;
use chatbench_harness::peers::Peer;
use chatbench_harness::target_start::{start_target, TargetError, TargetStartOptions};
use chatbench_loadgen::coordinator::{AgentsSpec, CoordinatorOptions};
use chatbench_loadgen::progress::ProgressMode;
use chatbench_loadgen::run::{human_summary, RunError, RunOptions};
use chatbench_model::scenario::{Scenario, TargetPolicy};
use chatbench_servers::Backplane;

pub use chatbench_harness::{error_chain, UsageError, EXIT_RUN_FAILED};

mod agent;
mod cluster;
mod compare;
mod floor;
mod gate;
mod install;
mod report;
mod run_verdict;
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
    /// The generator's floor: the plainest epoll receiver and one-write-per-frame sender over
    /// loopback, then the generator at the same load (`run --serve`), and their ratio.
    ///
    /// Writes <out>/floor.md and floor.json. See docs/methodology.md.
    Floor(floor::FloorArgs),
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
    #[arg(long, value_parser = backplane_parser(true), value_name = "BACKPLANE", requires = "serve")]
    backplane: Option<Backplane>,
    /// With --serve cluster --backplane redis: an existing Redis server.
    #[arg(long, value_name = "URL", requires = "backplane")]
    redis_url: Option<String>,
    /// Start a third-party peer server from servers/peers/ (Node.js) and run against it; the
    /// scenario's `protocol` picks what it speaks (node-ws: chatbench, echo, template;
    /// socketio: socketio; socketio-cluster: socketio, from --nodes workers under Node's
    /// `cluster` module over a private redis-server; elixir and elixir-cluster: chatbench,
    /// phoenix). See docs/profiles.md.
    #[arg(long, value_name = "PEER", value_parser = peer_parser(), conflicts_with = "serve_cmd", group = "started_server")]
    serve_peer: Option<Peer>,
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
    /// Append a Markdown summary of the run (verdict, headline figures, thresholds) to FILE;
    /// without it, to $GITHUB_STEP_SUMMARY when that is set (a GitHub Actions job's page).
    #[arg(long, value_name = "FILE")]
    step_summary: Option<PathBuf>,
    /// A name for the target, recorded in summary.json (`target.settings.label`): `chatbench
    /// gate` matches baseline and current runs by it instead of by URL (whose port changes on
    /// CI). Letters, digits, `.`, `_`, `-`.
    #[arg(long, value_name = "NAME", value_parser = run_verdict::parse_label)]
    label: Option<String>,
    /// Serve the run's per-second figures as Prometheus text on http://ADDR/metrics while it
    /// runs (e.g. 127.0.0.1:9464; port 0 picks one, printed). Loopback only, unless
    /// --metrics-public.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Allow --metrics-listen on an address other than loopback (the figures are then readable
    /// by anyone who can reach it).
    #[arg(long, requires = "metrics_listen")]
    metrics_public: bool,
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

/// `--backplane`'s values (`run`, `cluster up`, `serve`): the servers' backplanes by name,
/// with each one's help line when `described`.
pub(crate) fn backplane_parser(
    described: bool,
) -> impl clap::builder::TypedValueParser<Value = Backplane> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Backplane::ALL.map(|b| {
        let value = clap::builder::PossibleValue::new(b.as_str());
        if described {
            value.help(b.about())
        } else {
            value
        }
    }))
    .try_map(|name| Backplane::parse(&name))
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
pub(crate) fn peer_parser() -> impl clap::builder::TypedValueParser<Value = Peer> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Peer::ALL.map(|p| p.as_str()))
        .try_map(|name| Peer::parse(&name))
}

/// Entry point: parse, dispatch, map errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every result records the build its figures came from, not only the working directory's
    // commit (build.rs).
    chatbench_loadgen::provenance::set_build_commit(env!("CHATBENCH_BUILD_COMMIT"));
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => run(args),
        Command::Compare(args) => compare::compare(args),
        Command::Report(args) => report::report(args),
        Command::Cluster(args) => cluster::cluster(args),
        Command::Gate(args) => gate::gate(args),
        Command::Floor(args) => floor::floor(args),
        Command::Agent(args) => agent::agent(args),
        Command::Completions(args) => install::completions(args),
        Command::Man => install::man(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(e.as_ref()));
            let target = e.downcast_ref::<TargetError>();
            let code = if e.downcast_ref::<UsageError>().is_some()
                || target.is_some_and(TargetError::is_usage)
                || e.downcast_ref::<CompareError>()
                    .is_some_and(CompareError::is_usage)
                || e.downcast_ref::<FloorError>()
                    .is_some_and(FloorError::is_usage)
            {
                EXIT_USAGE
            } else if let Some(re) = e
                .downcast_ref::<RunError>()
                .or_else(|| target.and_then(TargetError::run_error))
            {
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

/// The target flags of `run` as the harness's options.
fn target_options(args: &RunArgs, agents: bool) -> TargetStartOptions {
    TargetStartOptions {
        scenario_path: args.scenario.clone(),
        target: args.target.clone(),
        server_pid: args.server_pid,
        serve: args.serve.clone(),
        nodes: args.nodes,
        backplane: args.backplane,
        redis_url: args.redis_url.clone(),
        serve_peer: args.serve_peer,
        serve_cmd: args.serve_cmd.clone(),
        serve_path: args.serve_path.clone(),
        peers_dir: args.peers_dir.clone(),
        server_args: args.server_args.clone(),
        target_policy_given: args.target_policy.is_some(),
        no_pin: args.no_pin,
        agents,
    }
}

/// `--agents` and `--agent-token-file`: the agents, their token and our executable.
type AgentsArg = (AgentsSpec, Option<String>, PathBuf);

fn agents_of(args: &RunArgs) -> anyhow::Result<Option<AgentsArg>> {
    let Some(spec) = &args.agents else {
        return Ok(None);
    };
    let spec = AgentsSpec::parse(spec).map_err(UsageError)?;
    let token = match &args.agent_token_file {
        Some(p) => {
            Some(chatbench_loadgen::agent::read_token(p).map_err(|e| UsageError(e.to_string()))?)
        }
        None => None,
    };
    let exe = std::env::current_exe().context("locating the chatbench executable")?;
    Ok(Some((spec, token, exe)))
}

fn run(mut args: RunArgs) -> anyhow::Result<ExitCode> {
    tls_overrides(&mut args);
    run_verdict::threshold_overrides(&args.thresholds, &mut args.overrides)?;
    let mut scenario = load_scenario(&args.scenario, &args.overrides)?;
    preflight_out(&args.out)?;
    if let Some(junit) = &args.junit {
        run_verdict::preflight_file("--junit", junit)?;
    }
    let step_summary = run_verdict::step_summary_path(args.step_summary.as_deref());
    if let Some(p) = &step_summary {
        let flag = if args.step_summary.is_some() {
            "--step-summary"
        } else {
            "$GITHUB_STEP_SUMMARY"
        };
        run_verdict::preflight_file(flag, p)?;
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
    let metrics_listener = bind_metrics(args.metrics_listen, args.metrics_public)?;
    let agents = agents_of(&args)?;
    let target = start_target(&target_options(&args, agents.is_some()), &mut scenario)?;
    target.pin_generator()?;
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
    let live = metrics_listener
        .as_ref()
        .map(|_| chatbench_loadgen::live_metrics::LiveMetrics::new());
    let endpoint = match (metrics_listener, &live) {
        (Some(l), Some(live)) => {
            let _in_runtime = runtime.enter();
            let l = tokio::net::TcpListener::from_std(l).context("serving --metrics-listen")?;
            Some(AbortOnDrop(runtime.spawn(
                chatbench_loadgen::live_metrics::serve(l, live.clone()),
            )))
        }
        _ => None,
    };
    let result = runtime.block_on(async {
        let rx = listen_for_stop(stop_signal.clone());
        let opts = RunOptions {
            scenario,
            overrides: args.overrides.clone(),
            target_url: target.url.clone(),
            target_info: run_verdict::with_label(target.info.clone(), args.label.as_deref()),
            out_root: args.out.clone(),
            progress,
            interrupt: rx,
            cluster: target.node_control(),
            live: live.clone(),
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
    drop(endpoint);
    let stopped = target.stop();
    runtime.shutdown_timeout(Duration::from_secs(1));
    let what = args
        .serve
        .as_deref()
        .or(args.serve_peer.map(Peer::as_str))
        .or(args.serve_cmd.as_deref())
        .unwrap_or("?");
    let mut report = result.map_err(|e| stopped.explain(e, what))?;
    stopped.write_beside(&report)?;
    let floor = run_verdict::fail_if_nothing_measured(&mut report)?;
    print!("{}", human_summary(&report.summary, &report.dir));
    stopped.report_server();
    let signal = stop_signal.load(std::sync::atomic::Ordering::Relaxed);
    let outputs = run_verdict::VerdictOutputs {
        junit: args.junit.as_deref(),
        step_summary: step_summary.as_deref(),
    };
    let code = run_verdict::exit_code(&report, &floor, &outputs, signal)?;
    Ok(ExitCode::from(code))
}

/// Aborts a task when dropped (the `/metrics` endpoint ends with the run).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `--metrics-listen ADDR`: bound before any load (a taken port is a usage error), loopback
/// only unless `--metrics-public`; prints the URL (the port chosen for port 0).
fn bind_metrics(
    addr: Option<std::net::SocketAddr>,
    public: bool,
) -> anyhow::Result<Option<std::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    if !addr.ip().is_loopback() && !public {
        return Err(UsageError(format!(
            "--metrics-listen {addr}: not a loopback address; the endpoint would be readable from the network. \
             Use 127.0.0.1:PORT, or add --metrics-public to mean it"
        ))
        .into());
    }
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        UsageError(format!(
            "--metrics-listen {addr}: cannot listen there: {e} (pick a free port, or port 0 for any)"
        ))
    })?;
    l.set_nonblocking(true)
        .context("--metrics-listen: setting the socket non-blocking")?;
    let bound = l
        .local_addr()
        .context("--metrics-listen: reading the bound address")?;
    println!("metrics: http://{bound}/metrics");
    Ok(Some(l))
}

/// Listens for SIGINT/SIGTERM: the first asks the run to finish its phase and write what was
/// measured (the returned receiver becomes `true`; `stop_signal` gets its exit code), a second
/// exits at once.
fn listen_for_stop(
    stop_signal: Arc<std::sync::atomic::AtomicU8>,
) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
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
    rx
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
        let text = error_chain(e.as_ref());
        assert_eq!(text.matches("entity not found").count(), 1, "{text}");
        assert!(
            text.starts_with("reading the comparison in /x: cannot read /x/runs"),
            "{text}"
        );
    }
}
