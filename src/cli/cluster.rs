//! `chatbench cluster up`: a local cluster of server nodes under a supervisor — addresses
//! printed, dead nodes restarted (counted and timestamped), all stopped on Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use chatbench_harness::supervisor::{
    Backplane, ClusterSpec, Event, EventKind, RestartPolicy, Supervisor,
};
use chatbench_model::results::write_file_atomic;

use super::serve::humantime_duration;
use super::{backplane_parser, UsageError};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Start N nodes on 127.0.0.1 and supervise them until Ctrl-C.
    ///
    /// Prints one line per node (`node <id> <ws url> cluster=<backplane addr> pid=<pid>`),
    /// then a `targets <url,url,…>` line for `chatbench run --target`, then one line per event
    /// (a node exited, was restarted — with the restart count and how long it took —, or was
    /// given up on after too many restarts). A node is restarted at the same addresses, so
    /// its peers and clients find it again. Ctrl-C or SIGTERM stops every node (SIGTERM, then
    /// SIGKILL after the grace period) and exits 0.
    Up(UpArgs),
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Number of nodes.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=256))]
    nodes: u32,
    /// How rooms span nodes.
    #[arg(long, value_parser = backplane_parser(true), default_value_t = Backplane::Mesh)]
    backplane: Backplane,
    /// Redis server for --backplane redis (default: start a private redis-server on a free
    /// loopback port, stopped at the end).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Node architecture: `cluster` (rooms span nodes), or a single-server architecture to run
    /// N independent servers (nothing crosses between them).
    #[arg(long, value_name = "ARCH", default_value = "cluster")]
    arch: String,
    /// Extra flag for every node (repeatable), e.g. --server-arg=--outbound-queue=256.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Keep the cluster's state (nodes, pids, restarts, events) in this JSON file, rewritten
    /// atomically on every change.
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// Restart intensity: give up on a node restarted this many times within --restart-period.
    #[arg(long, value_name = "N", default_value_t = RestartPolicy::default().max_restarts)]
    max_restarts: u32,
    /// The window of --max-restarts.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime_duration)]
    restart_period: Duration,
    /// Time each node gets to stop after SIGTERM before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime_duration)]
    grace: Duration,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn cluster(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ClusterCommand::Up(up) => cluster_up(up),
    }
}

fn cluster_up(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.redis_url.is_some() && args.backplane != Backplane::Redis {
        return Err(UsageError("--redis-url needs --backplane redis".into()).into());
    }
    let known: Vec<&str> = chatbench_servers::Arch::ALL
        .iter()
        .map(|a| a.as_str())
        .chain([chatbench_servers::Arch::Cluster.as_str()])
        .collect();
    if !known.contains(&args.arch.as_str()) {
        return Err(UsageError(format!(
            "--arch {:?}: not an architecture of this build (one of: {})",
            args.arch,
            known.join(", ")
        ))
        .into());
    }
    let spec = ClusterSpec {
        exe: std::env::current_exe().context("locating the chatbench executable")?,
        arch: args.arch.clone(),
        nodes: args.nodes,
        backplane: args.backplane,
        redis_url: args.redis_url.clone(),
        server_args: args.server_args.clone(),
        restart: RestartPolicy {
            max_restarts: args.max_restarts,
            period: args.restart_period,
            ..RestartPolicy::default()
        },
        redis_cpus: Vec::new(),
        node_cpus: Vec::new(),
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut sup = Supervisor::start(spec).context("starting the cluster")?;
    let clustered = args.arch == "cluster";
    println!(
        "cluster: {} nodes, arch {}{}; restart on exit (at most {} in {:?} per node); Ctrl-C stops all",
        args.nodes,
        args.arch,
        if clustered {
            format!(
                ", backplane {}{}",
                args.backplane,
                sup.redis_url()
                    .map(|u| format!(" ({})", chatbench_harness::supervisor::redact_url(u)))
                    .unwrap_or_default()
            )
        } else {
            " (independent servers)".into()
        },
        args.max_restarts,
        args.restart_period
    );
    for n in sup.nodes() {
        println!(
            "node {} {}{} pid={}",
            n.id,
            n.url,
            if clustered {
                format!(" cluster={}", n.cluster_listen)
            } else {
                String::new()
            },
            n.pid.unwrap_or(0)
        );
    }
    println!("targets {}", sup.urls().join(","));
    write_state(&args, &sup)?;
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        let events = sup.poll();
        if events.is_empty() {
            continue;
        }
        // The state file first, so that whoever reads a line finds the file up to date.
        write_state(&args, &sup)?;
        for e in &events {
            println!("{}", describe(e));
        }
    }
    eprintln!("cluster: stopping {} nodes …", args.nodes);
    for (id, how) in sup.stop(args.grace) {
        eprintln!("cluster: node {id} {how}");
    }
    write_state(&args, &sup)?;
    Ok(ExitCode::SUCCESS)
}

fn write_state(args: &UpArgs, sup: &Supervisor) -> anyhow::Result<()> {
    if let Some(path) = &args.state_file {
        let json = serde_json::to_vec_pretty(&sup.state_json()).context("encoding the state")?;
        write_file_atomic(path, &json)
            .with_context(|| format!("writing the state file {}", path.display()))?;
    }
    Ok(())
}

/// One event as a line: "<UTC time> node 2 exited (signal: 9 (SIGKILL))".
fn describe(e: &Event) -> String {
    let at = chrono::DateTime::from_timestamp_millis(e.at_unix_ms as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| e.at_unix_ms.to_string());
    let what = match &e.kind {
        EventKind::Started { pid } => format!("started pid={pid}"),
        EventKind::Killed { pid } => format!("killed on purpose (SIGKILL) pid={pid}"),
        EventKind::Exited {
            status,
            stderr_tail,
        } => {
            if stderr_tail.is_empty() {
                format!("exited ({status})")
            } else {
                format!(
                    "exited ({status}); last stderr: {}",
                    stderr_tail.replace('\n', " | ")
                )
            }
        }
        EventKind::Restarted {
            pid,
            restart,
            restart_ms,
        } => format!("restarted pid={pid} restart={restart} in {restart_ms} ms"),
        EventKind::RestartFailed { reason } => format!("restart failed: {reason}"),
        EventKind::GaveUp { restarts } => {
            format!("restarted {restarts} times within the restart period: given up, left down")
        }
    };
    format!("{at} node {} {what}", e.node)
}
