//! `chatbench gate`'s flags, turned into `chatbench_harness::gate::Tier` (the measuring side is
//! `chatbench_harness::gate`, the judgement `chatbench_report::gate`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use chatbench_harness::gate::{DetOptions, RunsOptions, StatOptions};

/// Either a tier subcommand (it measures, then judges) or `--baseline FILE --current RUN…`
/// (judges existing run results).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Examples:\n  chatbench gate deterministic\n  chatbench gate --update-baseline --baseline base.json --current results/runs/A1 results/runs/A2 results/runs/A3\n  chatbench gate --baseline base.json --current results/runs/B1 results/runs/B2 results/runs/B3\n\nExit codes: 0 pass, 1 regression, 2 could not judge (missing metric, other machine, too few samples, any error)."
)]
pub struct GateArgs {
    #[command(subcommand)]
    tier: Option<Tier>,
    #[command(flatten)]
    runs: RunsArgs,
}

#[derive(Debug, Subcommand)]
enum Tier {
    /// Instruction and allocation counts of fixed in-process workloads under callgrind.
    ///
    /// Each architecture's own code path (chatbench-gate-workload, one process per workload,
    /// address-space randomisation off): `fanout` parses and fans out `msg` frames to a room
    /// of 100; `connections` opens and closes 1,000 connections (upgrade, close); `idle`
    /// counts the heap held per open idle connection (1,000 of them); `generator-receive`
    /// (the epoll receive path), `generator-receive-tokio` and `generator-send` measure the
    /// load generator's own receive and send paths. Compares with the
    /// baseline file (instructions: ≤ +2 %, allocations, bytes and heap: ≤ +1 %) or, with
    /// --update-baseline, writes it.
    Deterministic(DetArgs),
    /// p99 latency, deliveries/s and CPU-µs per delivery of repeated short runs, baseline and
    /// candidate interleaved, with an A/A check (see docs/gate.md).
    Statistical(StatArgs),
}

#[derive(Debug, Args)]
struct DetArgs {
    /// Baseline file.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "results/baselines/gate/deterministic.json"
    )]
    baseline: PathBuf,
    /// Measure and write the baseline file instead of comparing.
    #[arg(long)]
    update_baseline: bool,
    /// Folder for gate-deterministic.md, gate-deterministic.json and the callgrind outputs.
    #[arg(long, value_name = "DIR", default_value = "results/gate")]
    out: PathBuf,
    /// Architectures to measure (repeatable); default: all.
    #[arg(long = "arch", value_name = "ARCH", value_parser = super::arch_names())]
    archs: Vec<String>,
    /// Runs of each workload; with more than one, every run must give the same counts.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: usize,
    /// Messages per workload (part of the baseline: a different value cannot be compared).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    messages: usize,
    /// Connections opened and closed, and held idle, per workload (part of the baseline).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    connections: usize,
    /// Server option inject_work for the measured code (busy-loop iterations per delivery), to
    /// check that the gate catches a known extra cost.
    #[arg(long, value_name = "N", default_value_t = 0)]
    inject_work: u32,
    /// The workload binary; default: chatbench-gate-workload next to this executable.
    #[arg(long, value_name = "PATH")]
    workload_bin: Option<PathBuf>,
    /// Compare against a baseline measured with another CPU model or compiler.
    #[arg(long)]
    allow_other_machine: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Baseline file of run metrics (p99 latency, deliveries/s, CPU-µs per delivery, the
    /// machine fingerprint): compared against, or written with --update-baseline.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Current runs: run folders (results/runs/<id>/), their summary.json, or folders of run
    /// folders. Several give the significance test its samples.
    #[arg(long, value_name = "RUN", num_args = 1..)]
    current: Vec<PathBuf>,
    /// Write --baseline from the --current runs instead of comparing.
    #[arg(long)]
    update_baseline: bool,
    /// Judge runs from a machine whose fingerprint differs from the baseline's.
    #[arg(long)]
    allow_other_machine: bool,
    /// Family-wise significance level (Holm over the metrics).
    #[arg(long, value_name = "P", default_value_t = 0.05)]
    alpha: f64,
    /// Smallest change of a median that counts, percent.
    #[arg(long, value_name = "PCT", default_value_t = 10.0)]
    min_effect: f64,
    /// An absolute limit every current run must meet (repeatable), as `run --threshold`:
    /// KEY<=VALUE on a figure of docs/figures.md, e.g. --threshold 'p99_latency<=50ms'. Judged
    /// as a row per run beside the runs' own recorded thresholds; crossed is a regression.
    #[arg(long = "threshold", value_name = "KEY<=VALUE")]
    thresholds: Vec<String>,
    /// Compare medians against a fixed threshold (percent) WITHOUT a significance test, e.g. for
    /// single runs; every row says so. Default: a significance test, refused ("could not
    /// judge", naming how many runs are needed) with fewer runs than can reach significance.
    #[arg(long, value_name = "PCT")]
    fixed_threshold: Option<f64>,
    /// Folder for gate-runs.md and gate-runs.json.
    #[arg(long, value_name = "DIR", default_value = "results/gate")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// Architecture to run (`chatbench run --serve ARCH`).
    #[arg(long, value_name = "ARCH", default_value = "task-per-conn", value_parser = super::arch_names())]
    arch: String,
    /// The fixed open-loop scenario.
    #[arg(long, value_name = "FILE", default_value = "scenarios/gate.toml")]
    scenario: PathBuf,
    /// Runs per arm (baseline, candidate, baseline again).
    #[arg(long, short = 'k', value_name = "K", default_value_t = 5)]
    runs: usize,
    /// chatbench executable of the baseline build; default: this executable.
    #[arg(long, value_name = "PATH")]
    baseline_bin: Option<PathBuf>,
    /// chatbench executable of the candidate build; default: this executable.
    #[arg(long, value_name = "PATH")]
    candidate_bin: Option<PathBuf>,
    /// A user's own server: the baseline build's start command (as `run --serve-cmd`: split on
    /// spaces, it prints its HOST:PORT first on stdout), e.g. "./old/my-server --port 0".
    /// Needs --candidate-cmd and --label; replaces --arch.
    #[arg(long, value_name = "COMMAND", requires_all = ["candidate_cmd", "label"])]
    baseline_cmd: Option<String>,
    /// The candidate build's start command (see --baseline-cmd).
    #[arg(long, value_name = "COMMAND", requires = "baseline_cmd")]
    candidate_cmd: Option<String>,
    /// With --baseline-cmd: the request path on those servers (`run --serve-path`).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/",
        requires = "baseline_cmd"
    )]
    serve_path: String,
    /// With --baseline-cmd: the target's name, recorded in the runs (`run --label`) and
    /// naming the metrics and the default baseline file (statistical-LABEL.json).
    #[arg(long, value_name = "NAME")]
    label: Option<String>,
    /// Extra server flag for the baseline's server (repeatable).
    #[arg(
        long = "baseline-server-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    baseline_server_args: Vec<String>,
    /// Extra server flag for the candidate's server (repeatable), e.g.
    /// --candidate-server-arg=--inject-work=400 to measure the gate's power.
    #[arg(
        long = "candidate-server-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    candidate_server_args: Vec<String>,
    /// Baseline file: the machine fingerprint runs must match, and the baseline build's runs.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Run the baseline build k times and write the baseline file instead of comparing.
    #[arg(long)]
    update_baseline: bool,
    /// Judge even though this machine's fingerprint differs from the baseline file's.
    #[arg(long)]
    allow_other_machine: bool,
    /// Family-wise significance level (Holm over the three metrics).
    #[arg(long, value_name = "P", default_value_t = 0.05)]
    alpha: f64,
    /// Smallest change that counts, percent: of the median round ratio (8 rounds or more, paired
    /// test), else of the medians.
    #[arg(long, value_name = "PCT", default_value_t = 10.0)]
    min_effect: f64,
    /// Folder for the runs, gate-statistical.md and gate-statistical.json.
    #[arg(long, value_name = "DIR", default_value = "results/gate")]
    out: PathBuf,
}

impl From<RunsArgs> for RunsOptions {
    fn from(a: RunsArgs) -> RunsOptions {
        RunsOptions {
            baseline: a.baseline,
            current: a.current,
            update_baseline: a.update_baseline,
            allow_other_machine: a.allow_other_machine,
            alpha: a.alpha,
            min_effect: a.min_effect,
            thresholds: a.thresholds,
            fixed_threshold: a.fixed_threshold,
            out: a.out,
        }
    }
}

impl From<StatArgs> for StatOptions {
    fn from(a: StatArgs) -> StatOptions {
        StatOptions {
            arch: a.arch,
            scenario: a.scenario,
            runs: a.runs,
            baseline_bin: a.baseline_bin,
            candidate_bin: a.candidate_bin,
            baseline_cmd: a.baseline_cmd,
            candidate_cmd: a.candidate_cmd,
            serve_path: a.serve_path,
            label: a.label,
            baseline_server_args: a.baseline_server_args,
            candidate_server_args: a.candidate_server_args,
            baseline: a.baseline,
            update_baseline: a.update_baseline,
            allow_other_machine: a.allow_other_machine,
            alpha: a.alpha,
            min_effect: a.min_effect,
            out: a.out,
        }
    }
}

impl From<DetArgs> for DetOptions {
    fn from(a: DetArgs) -> DetOptions {
        DetOptions {
            baseline: a.baseline,
            update_baseline: a.update_baseline,
            out: a.out,
            archs: a.archs,
            repeat: a.repeat,
            messages: a.messages,
            connections: a.connections,
            inject_work: a.inject_work,
            workload_bin: a.workload_bin,
            allow_other_machine: a.allow_other_machine,
        }
    }
}

/// `chatbench gate`.
/// Every error is the gate's "could not judge" (exit 2), said by the gate itself.
pub fn gate(args: GateArgs) -> anyhow::Result<ExitCode> {
    Ok(chatbench_harness::gate::gate(match args.tier {
        Some(Tier::Deterministic(a)) => chatbench_harness::gate::Tier::Deterministic(a.into()),
        Some(Tier::Statistical(a)) => chatbench_harness::gate::Tier::Statistical(a.into()),
        None => chatbench_harness::gate::Tier::Runs(args.runs.into()),
    }))
}
