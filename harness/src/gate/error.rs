//! Why a gate tier could not judge: every way `chatbench gate` fails before it has a verdict,
//! each saying what failed, on which file or flag, and how to fix it. Every one of them ends
//! in "could not judge" (exit 2).

use std::path::PathBuf;

use thiserror::Error;

use chatbench_model::thresholds::ThresholdError;
use chatbench_report::gate::runs::RunsError;

/// A baseline file that could not be read or written (the judgement's own error type).
type BaselineFileError = chatbench_report::gate::GateError;

/// Why `chatbench gate` could not judge.
#[derive(Debug, Error)]
pub enum GateError {
    /// A program the tier runs is not installed.
    #[error("{name} not found on PATH: install it (Debian: apt-get install {package})")]
    ToolMissing {
        /// The program.
        name: &'static str,
        /// The Debian package that installs it.
        package: &'static str,
    },
    /// `current_exe` failed: the workload binary and the runs are found next to it.
    #[error("locating the chatbench executable")]
    Exe(#[source] std::io::Error),
    /// The deterministic tier's workload binary is not there.
    #[error("{}: workload binary not found: build it with `cargo build --bin chatbench-gate-workload` (same profile as chatbench) or pass --workload-bin", .0.display())]
    WorkloadBinMissing(PathBuf),
    /// `--repeat`, `--messages` or `--connections` is 0.
    #[error("--repeat, --messages and --connections must be at least 1")]
    ZeroSize,
    /// `--update-baseline` with `--inject-work`.
    #[error("--inject-work is for testing the gate: a baseline is measured without it")]
    InjectWorkBaseline,
    /// A workload process could not be started.
    #[error("running {what}")]
    Spawn {
        /// The workload, e.g. "the epoll fanout workload".
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A workload process failed.
    #[error("{what} failed ({status}): {stderr_tail}")]
    WorkloadFailed {
        /// The workload.
        what: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The last lines of its stderr.
        stderr_tail: String,
    },
    /// A workload printed no JSON result line.
    #[error("{what} printed no result line")]
    NoResultLine {
        /// The workload.
        what: String,
    },
    /// A workload's result line is not JSON.
    #[error("{what}'s result line {line:?}")]
    ResultLine {
        /// The workload.
        what: String,
        /// The line.
        line: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A workload's result lacks a count the metrics are computed from.
    #[error("{what}: the workload's result has no {key}: {result}")]
    MissingCount {
        /// The workload.
        what: String,
        /// The missing field.
        key: &'static str,
        /// The result line as read.
        result: String,
    },
    /// A callgrind workload ran without an instruction count.
    #[error("{what}: no instruction count")]
    NoInstructions {
        /// The workload.
        what: String,
    },
    /// A file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A callgrind output without its `summary:` line.
    #[error("{}: no `summary:` line (is it a callgrind output?)", .0.display())]
    NotCallgrind(PathBuf),
    /// Callgrind counted nothing in the measured region.
    #[error("{}: callgrind counted nothing in {symbol}: was the workload built without that symbol?", path.display())]
    NothingCounted {
        /// The callgrind output.
        path: PathBuf,
        /// The measured region's symbol.
        symbol: &'static str,
    },
    /// A folder could not be created.
    #[error("creating {}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A report file could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The report could not be encoded as JSON.
    #[error("encoding the report")]
    Encode(#[source] serde_json::Error),
    /// The baseline file could not be read.
    #[error("{source} (write one with `{how}`)")]
    Baseline {
        /// The cause.
        #[source]
        source: BaselineFileError,
        /// The command that writes one.
        how: &'static str,
    },
    /// The baseline file could not be written.
    #[error("writing the baseline")]
    SaveBaseline(#[source] BaselineFileError),
    /// `gate` with neither a tier nor `--baseline`.
    #[error("give --baseline FILE --current RUN… (judge run results), or a tier: `chatbench gate deterministic|statistical` (see --help)")]
    NoBaseline,
    /// `--baseline` without `--current`.
    #[error("--current RUN… is missing: the run folders to judge (or to make the baseline of, with --update-baseline)")]
    NoCurrent,
    /// A negative or non-finite `--fixed-threshold`.
    #[error("--fixed-threshold {0}: give a percentage ≥ 0, e.g. 10")]
    FixedThreshold(f64),
    /// `--alpha` outside (0, 1) or a negative `--min-effect`.
    #[error("--alpha must be in (0, 1) and --min-effect ≥ 0")]
    AlphaOrEffect,
    /// A bad `--threshold`.
    #[error(transparent)]
    Threshold(#[from] ThresholdError),
    /// A `--current` path without usable runs, or runs a baseline cannot be made of.
    #[error(transparent)]
    Runs(#[from] RunsError),
    /// `-k` too small to ever reach significance.
    #[error("-k {k}: with fewer than {need} runs per arm no change can reach significance at α = {alpha} (Mann–Whitney, Holm over {figures} figures): use -k {need} or more")]
    TooFewRuns {
        /// Runs per arm asked.
        k: usize,
        /// Runs per arm needed.
        need: usize,
        /// The significance level.
        alpha: f64,
        /// Gated figures (the Holm family).
        figures: usize,
    },
    /// `-k` below 3.
    #[error("-k must be at least 3 (a rank test needs 3 runs per arm)")]
    KBelowThree,
    /// `--serve-path` without its leading `/`.
    #[error("--serve-path {0:?}: must start with '/'")]
    ServePath(String),
    /// `--scenario` names no file.
    #[error("{}: scenario not found", .0.display())]
    ScenarioMissing(PathBuf),
    /// `--baseline-bin` or `--candidate-bin` names no file.
    #[error("{}: executable not found", .0.display())]
    ExeMissing(PathBuf),
    /// A statistical run could not be started.
    #[error("starting {}", bin.display())]
    StartRun {
        /// The chatbench executable.
        bin: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A statistical run wrote no summary.
    #[error("{} run failed ({status}): {last}", bin.display())]
    RunFailed {
        /// The chatbench executable.
        bin: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
        /// Why, from its stderr: its error message (`failure_cause`).
        last: String,
    },
    /// A run's summary.json is not a summary.
    #[error("parsing {}", path.display())]
    ParseSummary {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A run marked invalid (generator-bound, …) gives no observation.
    #[error("{}: run marked invalid {why}", path.display())]
    InvalidRun {
        /// Its summary.json.
        path: PathBuf,
        /// Its invalid reasons, as JSON.
        why: String,
    },
    /// Every baseline run of a figure failed or was invalid.
    #[error("no valid observation of {0}: see the notes above")]
    NoObservation(&'static str),
}
