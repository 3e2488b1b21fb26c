//! The comparison table: one column per architecture, one row per question people ask of an
//! architecture (connections held, memory per connection, latency, CPU, loss, fault tolerance,
//! horizontal scaling), each cell with its condition and the results file it came from.
//!
//! A cell from an invalid run (generator-bound) shows as invalid, never as a number; a step that
//! failed shows its reason; a question the suite did not measure says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chatbench_model::figures::{self, Under};
use chatbench_model::results::{RunStatus, Summary};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Version of `comparison.json`.
pub const COMPARISON_SCHEMA: &str = "chatbench.comparison/v1";

/// What a cell measured while other work shared the server's CPUs carries in its text.
pub const BUSY_MARK: &str = "(machine busy)";

/// Errors reading results.
#[derive(Debug, Error)]
pub enum ReportError {
    /// A summary could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A summary is not a chatbench summary of a known version.
    #[error("{path} is not a chatbench summary (schema chatbench.summary/v1): {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What a suite step measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Idle connections: memory per connection, connections held.
    Idle,
    /// A fixed broadcast load: latency, CPU, loss.
    Broadcast,
    /// One crashing handler: blast radius.
    Poison,
    /// Idle connections at increasing counts: memory per connection against N, its slope.
    IdleRamp,
    /// Connections in steps under a light message load until a limit stops it.
    Capacity,
    /// Offered load in steps until p99 passes the SLO: the knee.
    LoadSweep,
    /// Rooms of different sizes at about the same delivery rate.
    RoomSize,
    /// The same load against 1, 2 and 4 server processes: horizontal scaling.
    Scaling,
    /// One node of a cluster SIGKILLed mid-run: reconnect time, loss, p99 (cluster columns).
    NodeLoss,
    /// Silent TCP sockets held while normal clients connect: whether the server stays
    /// available (slowloris), and the 503s.
    Slowloris,
}

impl Step {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Idle => "idle",
            Step::Broadcast => "broadcast",
            Step::Poison => "poison",
            Step::IdleRamp => "idle-ramp",
            Step::Capacity => "capacity",
            Step::LoadSweep => "load-sweep",
            Step::RoomSize => "room-size",
            Step::Scaling => "scaling",
            Step::NodeLoss => "node-loss",
            Step::Slowloris => "slowloris",
        }
    }

    /// Every step, longest names first (so that `idle-ramp` is matched before `idle`).
    pub const ALL: [Step; 10] = [
        Step::Slowloris,
        Step::NodeLoss,
        Step::IdleRamp,
        Step::LoadSweep,
        Step::RoomSize,
        Step::Scaling,
        Step::Capacity,
        Step::Broadcast,
        Step::Poison,
        Step::Idle,
    ];

    /// Whether the step is a sweep (several points, evaluated by [`crate::sweeps::evaluate`]).
    pub fn is_sweep(self) -> bool {
        matches!(
            self,
            Step::IdleRamp | Step::Capacity | Step::LoadSweep | Step::RoomSize
        )
    }
}

/// The outcome of one step for one architecture.
#[derive(Debug, Clone)]
pub enum StepResult {
    /// The run finished and wrote its results.
    Ran {
        /// The run folder.
        dir: PathBuf,
        /// Its summary.
        summary: Box<Summary>,
    },
    /// The run could not be made (server did not start, …).
    Failed {
        /// Why, in a line.
        reason: String,
    },
}

impl StepResult {
    /// Reads `dir/summary.json`.
    pub fn load(dir: &Path) -> Result<StepResult, ReportError> {
        let path = dir.join("summary.json");
        let bytes = std::fs::read(&path).map_err(|source| ReportError::Read {
            path: path.clone(),
            source,
        })?;
        let summary: Summary = serde_json::from_slice(&bytes).map_err(|e| ReportError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(StepResult::Ran {
            dir: dir.to_path_buf(),
            summary: Box::new(summary),
        })
    }
}

/// One cell of the table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    /// What the table shows.
    pub display: String,
    /// The number behind it, when there is one (in the row's unit).
    pub value: Option<f64>,
    /// What kind of cell it is.
    pub status: CellStatus,
    /// Under which conditions it was measured.
    pub condition: String,
    /// The `summary.json` it came from, relative to the comparison folder.
    pub source: Option<String>,
    /// A repeated step's figure over its repeats (median, 95 % interval, CV, what was left
    /// out); absent for a step that ran once and for rows that show one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<crate::repeats::Repeats>,
}

/// What kind of cell a table cell is (`status` in `comparison.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// A figure from a complete, valid run.
    Ok,
    /// A figure from a valid run that did not complete (interrupted): what was measured.
    Partial,
    /// The run was invalid (generator-bound): no figure.
    Invalid,
    /// The step failed (the server did not start, the run crashed): no figure.
    Failed,
    /// The suite did not measure it, or the run lacks the figure.
    NotMeasured,
    /// A sweep whose first step already stopped it (no passing point; it says what stopped it).
    Stopped,
}

impl CellStatus {
    /// The name in `comparison.json` and in the HTML table's cell class.
    pub fn as_str(self) -> &'static str {
        match self {
            CellStatus::Ok => "ok",
            CellStatus::Partial => "partial",
            CellStatus::Invalid => "invalid",
            CellStatus::Failed => "failed",
            CellStatus::NotMeasured => "not_measured",
            CellStatus::Stopped => "stopped",
        }
    }
}

impl PartialEq<&str> for CellStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// Stable key, e.g. `latency_p99_ms`.
    pub key: String,
    /// The question, as the table shows it.
    pub label: String,
    /// Unit of `value`.
    pub unit: String,
    /// One cell per architecture.
    pub cells: BTreeMap<String, Cell>,
}

/// The whole comparison (`comparison.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    /// Always [`COMPARISON_SCHEMA`].
    pub schema: String,
    /// The suite that ran.
    pub suite: String,
    /// Architectures, in column order.
    pub archs: Vec<String>,
    /// The rows.
    pub rows: Vec<Row>,
    /// The machine, from the first summary's provenance.
    pub machine: String,
    /// Steps that could not be run, with their reasons.
    pub failures: Vec<String>,
    /// Notes every reader needs.
    pub notes: Vec<String>,
    /// The latency SLO the sweeps were judged by (p99, ms), when the suite had sweeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_p99_ms: Option<f64>,
    /// The claims judged from the cells ([`crate::claims`]), when a claims file applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<crate::claims::ClaimsSection>,
    /// The suite ran with `--tiny`: sizes too small for its figures to mean anything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tiny: bool,
    /// Where the whole comparison comes from: its command, build, machine, times and every
    /// run it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ComparisonProvenance>,
    /// The sweep points run a second time because their first run was invalid (generator-bound):
    /// each first run, kept in `runs/` but counted nowhere ([`load`] leaves it out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<Superseded>,
}

/// A run of a sweep point that a retry replaced (`superseded` in `comparison.json`): its first
/// run was invalid because of the generator, so `chatbench compare` ran the point once more and
/// the retry stands for the point. The first run's folder stays in `runs/`; no table cell, chart,
/// knee or repeat statistic counts it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Superseded {
    /// Its column.
    pub column: String,
    /// Its suite step.
    pub step: String,
    /// Which point (and repeat) of the step, e.g. `connections=2500 (1/8)`.
    pub point: String,
    /// Why the first run did not count: the sweep check's reason (`generator-bound: …`).
    pub reason: String,
    /// The first run's `summary.json`, relative to the comparison folder.
    pub source: String,
    /// The retry's `summary.json` (none when the retry could not be run).
    pub retry: Option<String>,
    /// Whether the retry passed the sweep's check (else the sweep stopped at the retry).
    pub retry_passed: bool,
}

impl Superseded {
    /// The comparison's note for it: the column, step, point, the first run's reason and
    /// folder, and what the retry gave.
    pub fn note(&self) -> String {
        let retry = self.retry.as_deref().unwrap_or("no results");
        let outcome = if self.retry_passed {
            format!("the retry passed and stands for the point ({retry})")
        } else {
            format!("the retry did not pass either and the sweep stopped there, with the retry's reason ({retry})")
        };
        format!(
            "{} / {}, point {}: its first run was invalid ({}) and was run once more; {outcome}. The first run is kept in {} but counted nowhere (not in the table, charts, knee or repeats).",
            self.column, self.step, self.point, self.reason, self.source
        )
    }

    /// A record of the run in `first` (paths relative to `base`) that `retry` replaced, the
    /// retry with whether it passed; `None` when `first` left no folder.
    pub fn of(
        column: &str,
        step: Step,
        point: String,
        reason: String,
        first: &StepResult,
        (retry, retry_passed): (&StepResult, bool),
        base: &Path,
    ) -> Option<Superseded> {
        let StepResult::Ran { dir, .. } = first else {
            return None;
        };
        Some(Superseded {
            column: column.to_string(),
            step: step.as_str().to_string(),
            point,
            reason,
            source: rel(dir, base),
            retry: source_of(retry, base),
            retry_passed,
        })
    }
}

/// The provenance of a whole comparison (`provenance` in `comparison.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComparisonProvenance {
    /// The `chatbench compare` command line, as it was given.
    pub command_line: Vec<String>,
    /// The build: chatbench version and commit (from the runs' provenance).
    pub build: String,
    /// The machine and how server and generator were pinned (from the first run).
    pub machine: String,
    /// When the comparison started and ended, RFC 3339 UTC.
    pub started_at: String,
    /// When the comparison ended, RFC 3339 UTC.
    pub ended_at: String,
    /// Every run the comparison made, in the order of the table's columns.
    pub runs: Vec<SubRun>,
}

/// One run of a comparison, for its provenance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubRun {
    /// Its column.
    pub column: String,
    /// Its suite step.
    pub step: String,
    /// Its `summary.json`, relative to the comparison folder (none for a failed step).
    pub source: Option<String>,
    /// When it started and finished (RFC 3339 UTC), or why it failed.
    pub what: String,
}

impl ComparisonProvenance {
    /// The provenance of a comparison of `runs` and the runs retries replaced, `superseded`
    /// (paths relative to `base`), made by `command_line` from `started_at` to `ended_at`.
    pub fn of(
        (runs, superseded): (&Runs, &[Superseded]),
        archs: &[String],
        base: &Path,
        command_line: Vec<String>,
        started_at: String,
        ended_at: String,
    ) -> ComparisonProvenance {
        let mut list = Vec::new();
        let mut first: Option<&Summary> = None;
        for arch in archs {
            for ((a, step), rs) in runs {
                if a != arch {
                    continue;
                }
                // The runs that left a folder, then the failed ones: the order `load` reads
                // them back in (a failed run leaves no folder), so a rebuild lists the same.
                let ran = rs.iter().filter(|r| matches!(r, StepResult::Ran { .. }));
                let failed = rs.iter().filter(|r| matches!(r, StepResult::Failed { .. }));
                for r in ran.chain(failed) {
                    let (source, what) = match r {
                        StepResult::Ran { dir, summary } => {
                            first.get_or_insert(summary);
                            (
                                Some(rel(dir, base)),
                                format!(
                                    "{} – {}",
                                    summary.provenance.started_at,
                                    summary
                                        .provenance
                                        .finished_at
                                        .as_deref()
                                        .unwrap_or("not finished")
                                ),
                            )
                        }
                        StepResult::Failed { reason } => (None, format!("failed: {reason}")),
                    };
                    list.push(SubRun {
                        column: arch.clone(),
                        step: step.as_str().to_string(),
                        source,
                        what,
                    });
                }
            }
            // The runs a retry replaced: made, kept, counted nowhere.
            for r in superseded.iter().filter(|r| &r.column == arch) {
                list.push(SubRun {
                    column: arch.clone(),
                    step: r.step.clone(),
                    source: Some(r.source.clone()),
                    what: format!("superseded by its retry (point {}): {}", r.point, r.reason),
                });
            }
        }
        let build = first.map_or_else(
            || "unknown (no run produced results)".to_string(),
            |s| s.provenance.build_line(),
        );
        ComparisonProvenance {
            command_line,
            build,
            machine: first.map_or_else(
                || "unknown (no run produced results)".to_string(),
                machine_line,
            ),
            started_at,
            ended_at,
            runs: list,
        }
    }
}

/// Each (architecture, step)'s outcome: the one run that stands for the step in the table.
pub type Results = BTreeMap<(String, Step), StepResult>;

/// Every run of a suite per (architecture, step), in the order they ran: a sweep has one run
/// per point, a repeated step one per repeat.
pub type Runs = BTreeMap<(String, Step), Vec<StepResult>>;

/// One run per step, as a [`Runs`] (for suites without sweeps or repeats).
pub fn runs_of(results: &Results) -> Runs {
    results
        .iter()
        .map(|(k, v)| (k.clone(), vec![v.clone()]))
        .collect()
}

fn rel(dir: &Path, base: &Path) -> String {
    let p = dir.join("summary.json");
    p.strip_prefix(base).unwrap_or(&p).display().to_string()
}

/// Builds the cell of `arch` for a row from `step`, with `f` picking the number (or a reason it
/// has none) out of a usable summary.
fn cell(
    results: &Results,
    base: &Path,
    arch: &str,
    step: Step,
    f: impl Fn(&Summary) -> Result<(f64, String), String>,
    condition: impl Fn(&Summary) -> String,
) -> Cell {
    match results.get(&(arch.to_string(), step)) {
        None => Cell {
            display: "not measured".into(),
            value: None,
            status: CellStatus::NotMeasured,
            condition: format!("no {} step in this suite", step.as_str()),
            source: None,
            repeats: None,
        },
        Some(StepResult::Failed { .. }) => Cell {
            display: "failed".into(),
            value: None,
            status: CellStatus::Failed,
            condition: format!("the {} step failed (see Failures)", step.as_str()),
            source: None,
            repeats: None,
        },
        Some(StepResult::Ran { dir, summary }) => {
            let source = Some(rel(dir, base));
            let s = summary.as_ref();
            // The slowloris step's finding is its connection counts: a server that let no
            // client in makes the run fail (and so invalid), and that is what it measures.
            if !s.valid && step != Step::Slowloris {
                return Cell {
                    display: "invalid (generator-bound)".into(),
                    value: None,
                    status: CellStatus::Invalid,
                    condition: s.invalid_reasons.join("; "),
                    source,
                    repeats: None,
                };
            }
            // Latency and CPU under load are the server's own only if its CPUs were quiet.
            let busy = matches!(step, Step::Broadcast | Step::NodeLoss)
                .then(|| busy_warning(s))
                .flatten();
            match f(s) {
                Ok((value, display)) => Cell {
                    display: match &busy {
                        Some(_) => format!("{display} {BUSY_MARK}"),
                        None => display,
                    },
                    value: Some(value),
                    status: if s.status == RunStatus::Complete {
                        CellStatus::Ok
                    } else {
                        CellStatus::Partial
                    },
                    condition: match busy {
                        Some(w) => format!("{}; {w}", condition(s)),
                        None => condition(s),
                    },
                    source,
                    repeats: None,
                },
                Err(why) => Cell {
                    display: why,
                    value: None,
                    status: CellStatus::NotMeasured,
                    condition: condition(s),
                    source,
                    repeats: None,
                },
            }
        }
    }
}

/// The run's warning that other work shared the server's CPUs, if it did (the rule of
/// [`crate::caveats::busy`]).
fn busy_warning(s: &Summary) -> Option<String> {
    crate::caveats::busy_warning(s)
}

/// `x` rounded to three significant digits, so that conditions measured a hair apart read
/// the same (the exact figures are in the linked summaries).
fn sig3(x: f64) -> String {
    if x <= 0.0 || !x.is_finite() {
        return format!("{x:.0}");
    }
    let magnitude = 10f64.powi(x.log10().floor() as i32 - 2);
    format!("{:.0}", (x / magnitude).round() * magnitude)
}

fn load_condition(s: &Summary) -> String {
    format!(
        "{} connections, ≈{} msg/s in, ≈{} deliveries/s, window {:.0} s",
        s.connections.ready,
        sig3(s.messages.sent_per_s),
        sig3(s.messages.delivered_per_s),
        s.phases.measure
    )
}

/// The slowloris cell: the normal connections ready of those planned (the server stayed
/// available when all were), and the 503s that refused the others.
fn slowloris_cell(s: &Summary) -> Result<(f64, String), String> {
    let c = &s.connections;
    c.silent.ok_or("the run held no silent sockets")?;
    let refused = c.errors.get("handshake_status_503").copied().unwrap_or(0);
    let verdict = if c.ready == c.planned { "yes" } else { "no" };
    Ok((
        c.ready as f64,
        format!(
            "{verdict}: {} of {} ready, {refused} × 503",
            c.ready, c.planned
        ),
    ))
}

fn slowloris_condition(s: &Summary) -> String {
    format!(
        "{} silent TCP sockets (no handshake) held, then {} normal connections",
        s.connections.silent.unwrap_or(0),
        s.connections.planned
    )
}

fn idle_condition(s: &Summary) -> String {
    format!(
        "{} idle connections after {:.0} s settle",
        s.connections.ready, s.phases.settle
    )
}

/// The suite step a scenario name stands for (`quick-idle` → idle, `full-load-sweep` →
/// load-sweep, …): the name is the step's name or ends with `-<step>`.
pub fn step_of_scenario(name: &str) -> Option<Step> {
    Step::ALL.into_iter().find(|s| {
        let n = s.as_str();
        name == n || name.strip_suffix(n).is_some_and(|head| head.ends_with('-'))
    })
}

/// The table column a run belongs to: its architecture, `cluster-<backplane>` for a
/// cluster whose rooms span nodes (`cluster-mesh`, `cluster-redis`), or, for a run with no
/// architecture (a user's own server, `compare --column`), its `--label`.
pub fn column_of(s: &Summary) -> Option<String> {
    let Some(arch) = s.target.arch.clone() else {
        // A user's own server (`compare --column NAME=…`): the column is the run's label.
        return s
            .target
            .settings
            .get(chatbench_model::results::TARGET_LABEL_SETTING)
            .cloned();
    };
    if arch == "cluster" {
        if let Some(b) = s.target.settings.get("backplane") {
            return Some(format!("cluster-{b}"));
        }
    }
    Some(arch)
}

/// A comparison folder read back from its files.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The suite's name.
    pub suite: String,
    /// Architectures, in column order.
    pub archs: Vec<String>,
    /// Each (architecture, step)'s outcome: the run that stands for it (see
    /// [`crate::sweeps::headline`]).
    pub results: Results,
    /// Every run, per (architecture, step), in the order they ran.
    pub runs: Runs,
    /// The SLO recorded in the folder's `comparison.json`, if any.
    pub slo_p99_ms: Option<f64>,
    /// The notes recorded in the folder's `comparison.json` (some, like a column left out
    /// for a missing tool, are known only to the run that wrote it).
    pub notes: Vec<String>,
    /// Whether the folder's `comparison.json` says the suite ran with `--tiny`.
    pub tiny: bool,
    /// The provenance recorded in the folder's `comparison.json` (the command line and the
    /// times are known only to the compare that wrote it).
    pub provenance: Option<ComparisonProvenance>,
    /// The claims file the folder's `comparison.json` was judged against, if any.
    pub claims_file: Option<String>,
    /// The runs a retry replaced, as the folder's `comparison.json` records them (left out of
    /// `runs`; their notes are among `notes`).
    pub superseded: Vec<Superseded>,
}

/// Reads a comparison folder's files alone: every `runs/*/summary.json` (its architecture from
/// `target.arch`, its step from the scenario name; runs of one step in folder-name order, which
/// is the order they ran) but those a retry replaced (`superseded`), plus the column order,
/// suite and failures recorded in the folder's `comparison.json`, if any (a failed step leaves
/// no run folder; without `comparison.json`, a replaced run counts again and its sweep stops
/// there, as if it had not been retried).
pub fn load(dir: &Path) -> Result<Loaded, ReportError> {
    let runs = dir.join("runs");
    let entries = std::fs::read_dir(&runs).map_err(|source| ReportError::Read {
        path: runs.clone(),
        source,
    })?;
    let mut runs = Runs::new();
    let mut archs: Vec<String> = Vec::new();
    let mut suite = "quick".to_string();
    let previous: Option<Comparison> = std::fs::read(dir.join("comparison.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(p) = &previous {
        archs = p.archs.clone();
        suite = p.suite.clone();
    }
    // A run a retry replaced stays in runs/ but stands for nothing.
    let superseded: Vec<Superseded> = previous
        .as_ref()
        .map(|p| p.superseded.clone())
        .unwrap_or_default();
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("summary.json").is_file())
        .filter(|p| !superseded.iter().any(|s| s.source == rel(p, dir)))
        .collect();
    dirs.sort();
    for run in dirs {
        let StepResult::Ran {
            dir: run_dir,
            summary,
        } = StepResult::load(&run)?
        else {
            continue;
        };
        let (Some(arch), Some(step)) = (
            column_of(&summary),
            step_of_scenario(&summary.scenario.name),
        ) else {
            continue;
        };
        if !archs.contains(&arch) {
            archs.push(arch.clone());
        }
        runs.entry((arch, step)).or_default().push(StepResult::Ran {
            dir: run_dir,
            summary,
        });
    }
    if let Some(p) = &previous {
        for f in &p.failures {
            // "arch / step: reason"
            if let Some((key, reason)) = f.split_once(": ") {
                if let Some((arch, step)) = key.split_once(" / ") {
                    if let Some(step) = step_of_scenario(step) {
                        // A failed run leaves no folder: it comes after the runs that did.
                        runs.entry((arch.to_string(), step)).or_default().push(
                            StepResult::Failed {
                                reason: reason.to_string(),
                            },
                        );
                    }
                }
            }
        }
    }
    Ok(Loaded {
        suite,
        archs,
        results: crate::sweeps::headline(&runs),
        runs,
        slo_p99_ms: previous.as_ref().and_then(|p| p.slo_p99_ms),
        tiny: previous.as_ref().is_some_and(|p| p.tiny),
        provenance: previous.as_ref().and_then(|p| p.provenance.clone()),
        claims_file: previous
            .as_ref()
            .and_then(|p| p.claims.as_ref().map(|c| c.file.clone())),
        notes: previous.map(|p| p.notes).unwrap_or_default(),
        superseded,
    })
}

/// Rebuilds a comparison from a comparison folder's files alone (see [`load`]).
pub fn rebuild(dir: &Path) -> Result<Comparison, ReportError> {
    let l = load(dir)?;
    Ok(l.comparison(dir))
}

impl Loaded {
    /// The comparison of these files, as `chatbench compare` built it: the table from the
    /// runs, the notes only the compare knew (a column left out …) after the table's own, the
    /// `--tiny` label, and the provenance (its runs listed afresh from the files; the command
    /// line and times as recorded, or "unknown" when the folder has no `comparison.json`).
    pub fn comparison(&self, dir: &Path) -> Comparison {
        let mut c = build_suite(&self.suite, &self.archs, &self.runs, dir, self.slo_p99_ms);
        for n in &self.notes {
            if !c.notes.contains(n) {
                c.notes.push(n.clone());
            }
        }
        c.tiny = self.tiny;
        c.superseded = self.superseded.clone();
        let (command, started, ended) = match &self.provenance {
            Some(p) => (
                p.command_line.clone(),
                p.started_at.clone(),
                p.ended_at.clone(),
            ),
            None => (Vec::new(), "unknown".into(), "unknown".into()),
        };
        c.provenance = Some(ComparisonProvenance::of(
            (&self.runs, &self.superseded),
            &self.archs,
            dir,
            command,
            started,
            ended,
        ));
        c
    }
}

/// Builds the table from one run per step (a suite without sweeps or repeats).
pub fn build(suite: &str, archs: &[String], results: &Results, base: &Path) -> Comparison {
    build_suite(suite, archs, &runs_of(results), base, None)
}

/// Builds the table from every run of a suite. Sweeps are judged by `slo_p99_ms` (default
/// [`crate::sweeps::DEFAULT_SLO_P99_MS`]); a repeated step shows its median run.
pub fn build_suite(
    suite: &str,
    archs: &[String],
    runs: &Runs,
    base: &Path,
    slo_p99_ms: Option<f64>,
) -> Comparison {
    let headline = crate::sweeps::headline(runs);
    let results = &headline;
    let has_sweeps = runs.keys().any(|(_, s)| s.is_sweep());
    let slo = slo_p99_ms.unwrap_or(crate::sweeps::DEFAULT_SLO_P99_MS);
    let mut rows = single_rows(results, runs, archs, base);
    // The sweeps' rows, then horizontal scaling (the last question of the table).
    rows.extend(sweep_rows(runs, archs, base, slo));
    rows.extend(scaling_rows(runs, archs, base));
    rows.extend(node_loss_rows(results, archs, base));
    Comparison {
        schema: COMPARISON_SCHEMA.into(),
        suite: suite.into(),
        archs: archs.to_vec(),
        rows,
        machine: machine_of(results),
        failures: failures_of(runs),
        notes: suite_notes(runs, has_sweeps, slo),
        slo_p99_ms: has_sweeps.then_some(slo),
        claims: None,
        tiny: false,
        provenance: None,
        superseded: Vec::new(),
    }
}

/// The rows of one figure per column: the figure catalogue's (in its order), then the fault
/// blast radius and the availability under slowloris.
fn single_rows(results: &Results, runs: &Runs, archs: &[String], base: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row = |key: &str, label: &str, unit: &str, make: &dyn Fn(&str) -> Cell| {
        let cells = archs.iter().map(|a| (a.clone(), make(a))).collect();
        rows.push(Row {
            key: key.into(),
            label: label.into(),
            unit: unit.into(),
            cells,
        });
    };
    // The single-figure rows, from the figure catalogue (in its order).
    for (fig, t) in figures::table() {
        let (step, condition): (Step, fn(&Summary) -> String) = match t.under {
            Under::Idle => (Step::Idle, idle_condition),
            Under::Load => (Step::Broadcast, load_condition),
        };
        row(t.key, t.question, t.unit, &|a| {
            // A repeated step: each figure's median over its valid repeats, with its spread.
            let repeats = t
                .spread
                .then(|| runs.get(&(a.to_string(), step)))
                .flatten()
                .and_then(|rs| crate::repeats::of(rs, |s| fig.shown(s)));
            let c = cell(
                results,
                base,
                a,
                step,
                |s| {
                    let v = fig.shown(s).ok_or(t.missing)?;
                    let shown = fig.show.format(v);
                    Ok((
                        v,
                        match t.text {
                            Some(text) => text(s, shown),
                            None => shown,
                        },
                    ))
                },
                condition,
            );
            match repeats.filter(|_| matches!(c.status, CellStatus::Ok | CellStatus::Partial)) {
                Some(rep) => repeated_cell(c, &rep, |v| {
                    let shown = fig.show.format(v);
                    let d = fig.show.digits;
                    format!("{shown}{}", rep.note(d))
                }),
                None => c,
            }
        });
    }
    row(
        "fault_blast_radius",
        "Fault tolerance: other connections lost to one crashing handler",
        "connections",
        &|a| {
            cell(
                results,
                base,
                a,
                Step::Poison,
                |s| {
                    let f = s.fault.as_ref().ok_or("no fault was injected")?;
                    let others = f.open_before.saturating_sub(1);
                    Ok((
                        f.others_lost as f64,
                        format!("{} of {}", f.others_lost, others),
                    ))
                },
                |s| {
                    format!("{} connections, `{{\"t\":\"panic\"}}` from one member, server with --fault-injection", s.connections.ready)
                },
            )
        },
    );
    row(
        "slowloris_available",
        "Availability under slowloris: normal clients let in while silent sockets are held",
        "connections",
        &|a| {
            cell(
                results,
                base,
                a,
                Step::Slowloris,
                slowloris_cell,
                slowloris_condition,
            )
        },
    );
    rows
}

/// The cell of a repeated step's figure: `c` (the repeat with the median p99: its link,
/// status and condition) showing the figure's own median over the repeats as `text` makes it,
/// with the spread in `comparison.json`, and marked busy when a repeat it is made of was.
fn repeated_cell(c: Cell, rep: &crate::repeats::Repeats, text: impl Fn(f64) -> String) -> Cell {
    let busy = rep.busy > 0 || c.display.contains(BUSY_MARK);
    let mut display = text(rep.median);
    if busy {
        display = format!("{display} {BUSY_MARK}");
    }
    Cell {
        display,
        value: Some(rep.median),
        condition: format!("{}; {}", c.condition, rep.condition()),
        repeats: Some(rep.clone()),
        ..c
    }
}

/// The machine line, from the first run that produced results.
fn machine_of(results: &Results) -> String {
    results
        .values()
        .find_map(|r| match r {
            StepResult::Ran { summary, .. } => Some(machine_line(summary)),
            StepResult::Failed { .. } => None,
        })
        .unwrap_or_else(|| "unknown (no run produced results)".into())
}

/// The notes every reader of the table needs: how latency is measured, what invalid means,
/// which runs shared the machine, and (with sweeps) how a sweep step passes.
fn suite_notes(runs: &Runs, has_sweeps: bool, slo: f64) -> Vec<String> {
    let mut notes = vec![
        "Latency is measured from each message's intended send time (open loop); CPU on loopback includes the client sockets' receive processing (see docs/methodology.md).".into(),
        "A cell marked invalid comes from a run where the generator, not the server, was the bottleneck: it is not a figure of the server.".into(),
    ];
    let busy: Vec<String> = runs
        .iter()
        .flat_map(|((arch, step), rs)| {
            rs.iter().filter_map(move |r| {
                let s = summary_of(r)?;
                busy_warning(s)?;
                Some(format!("{arch} / {}", step.as_str()))
            })
        })
        .collect();
    if !busy.is_empty() {
        notes.push(format!(
            "Other work shared the server's CPUs during {} run(s) ({}): their latency and CPU cells are marked \"machine busy\" and are not the server's alone (each run's summary.json has the figures under target_resources.other_load and run_queue_wait); rerun on a quiet machine to quote them.",
            busy.len(),
            busy.join(", ")
        ));
    }
    if has_sweeps {
        notes.push(format!("A sweep step passes when every planned connection was ready, the server closed none, and (for steps that carry messages) nothing was lost and p99 ≤ {slo} ms; a sweep stops at its first step that does not pass and reports its last passing step and the reason it stopped. A step stopped by the generator is run once more (the retry stands for it, the first run is listed as superseded); a second such run stops the sweep and names the generator."));
    }
    notes
}

/// "arch / step: reason" for every step that could not be run.
fn failures_of(runs: &Runs) -> Vec<String> {
    runs.iter()
        .flat_map(|((arch, step), rs)| {
            rs.iter().filter_map(move |r| match r {
                StepResult::Failed { reason } => {
                    Some(format!("{arch} / {}: {reason}", step.as_str()))
                }
                StepResult::Ran { .. } => None,
            })
        })
        .collect()
}

/// The cell of a sweep that did not run for `arch`.
fn not_run(step: Step) -> Cell {
    Cell {
        display: "not measured".into(),
        value: None,
        status: CellStatus::NotMeasured,
        condition: format!("no {} step in this run", step.as_str()),
        source: None,
        repeats: None,
    }
}

fn source_of(r: &StepResult, base: &Path) -> Option<String> {
    match r {
        StepResult::Ran { dir, .. } => Some(rel(dir, base)),
        StepResult::Failed { .. } => None,
    }
}

fn summary_of(r: &StepResult) -> Option<&Summary> {
    match r {
        StepResult::Ran { summary, .. } => Some(summary),
        StepResult::Failed { .. } => None,
    }
}

/// "at 17500 connections: p99 212.0 ms > SLO 100 ms" — where and why a sweep stopped.
fn stop_text(step: Step, v: &crate::sweeps::Verdict<'_>) -> Option<String> {
    let (p, why) = v.stopped.as_ref()?;
    let at = match (step, p.x) {
        (_, None) => String::new(),
        (Step::LoadSweep, Some(x)) => format!("at {} deliveries/s offered: ", sig3(x)),
        (Step::RoomSize, Some(x)) => format!("at rooms of {x:.0}: "),
        (_, Some(x)) => format!("at {x:.0} connections: "),
    };
    Some(format!("{at}{why}"))
}

/// The sweep step's points for `arch`, with the verdict.
fn verdict<'r>(
    runs: &'r Runs,
    arch: &str,
    step: Step,
    slo: f64,
) -> Option<crate::sweeps::Verdict<'r>> {
    let points = runs.get(&(arch.to_string(), step))?;
    Some(crate::sweeps::evaluate(step, points, slo))
}

/// The steps a sweep tried, for its condition: "1000, 5000, 10000".
fn steps_tried(runs: &Runs, arch: &str, step: Step) -> String {
    let xs: Vec<String> = runs
        .get(&(arch.to_string(), step))
        .into_iter()
        .flatten()
        .filter_map(|r| summary_of(r).and_then(|s| crate::sweeps::x_of(step, s)))
        .map(sig3)
        .collect();
    xs.join(", ")
}

/// The rows the full suite's sweeps add (none for a suite without sweeps).
fn sweep_rows(runs: &Runs, archs: &[String], base: &Path, slo: f64) -> Vec<Row> {
    let ran = |step: Step| runs.keys().any(|(_, s)| *s == step);
    let row = |key: String, label: String, unit: &str, make: &dyn Fn(&str) -> Cell| Row {
        key,
        label,
        unit: unit.into(),
        cells: archs.iter().map(|a| (a.clone(), make(a))).collect(),
    };
    let mut rows = Vec::new();
    if ran(Step::Capacity) {
        rows.push(row(
            "max_connections".into(),
            "Max concurrent connections under a light message load (what stopped it)".into(),
            "connections",
            &|a| capacity_cell(runs, a, base, slo),
        ));
    }
    if ran(Step::IdleRamp) {
        for (key, label, kind) in [
            (
                "memory_slope_user_kib",
                "Memory per added connection, user space (slope over the idle ramp)",
                crate::sweeps::MemoryKind::User,
            ),
            (
                "memory_slope_kernel_kib",
                "Memory per added connection, kernel slab (slope over the idle ramp)",
                crate::sweeps::MemoryKind::Kernel,
            ),
        ] {
            rows.push(row(key.into(), label.into(), "KiB", &|a| {
                memory_slope_cell(runs, a, base, slo, kind)
            }));
        }
    }
    if ran(Step::LoadSweep) {
        rows.push(row(
            "knee_deliveries_per_s".into(),
            format!("Highest load with p99 ≤ {slo} ms and no loss (the knee)"),
            "deliveries/s",
            &|a| knee_cell(runs, a, base, slo),
        ));
    }
    if ran(Step::RoomSize) {
        for m in room_sizes(runs) {
            rows.push(row(
                format!("latency_p99_room_{m}_ms"),
                format!("Delivery latency p99, rooms of {m} members"),
                "ms",
                &|a| room_size_cell(runs, a, base, m),
            ));
        }
    }
    rows
}

/// The cell of a sweep with no passing point: the first step already stopped it.
fn none_held(step: Step, v: &crate::sweeps::Verdict<'_>, condition: String, base: &Path) -> Cell {
    let (p, _) = v
        .stopped
        .as_ref()
        .expect("a sweep with no passing point stopped");
    let generator = v.stopped_by_generator();
    Cell {
        display: format!(
            "{}: {}",
            if generator { "invalid" } else { "none held" },
            stop_text(step, v).unwrap_or_default()
        ),
        value: None,
        status: if generator {
            CellStatus::Invalid
        } else if matches!(p.result, StepResult::Failed { .. }) {
            CellStatus::Failed
        } else {
            CellStatus::Stopped
        },
        condition,
        source: source_of(p.result, base),
        repeats: None,
    }
}

/// `arch`'s capacity cell: the most connections a step held, and what stopped the sweep.
fn capacity_cell(runs: &Runs, a: &str, base: &Path, slo: f64) -> Cell {
    let Some(v) = verdict(runs, a, Step::Capacity, slo) else {
        return not_run(Step::Capacity);
    };
    let first = runs[&(a.to_string(), Step::Capacity)]
        .iter()
        .find_map(summary_of);
    let condition = format!(
        "steps of {} connections{}; SLO p99 ≤ {slo} ms, no loss, no errors",
        steps_tried(runs, a, Step::Capacity),
        first
            .map(|s| format!(
                ", ≈{} msg/s in, {}; a step past one generator process's descriptors runs on local agents",
                sig3(s.messages.sent_per_s),
                match crate::sweeps::nodes_of(s) {
                    1 => "one server process".to_string(),
                    n => format!("{n} server processes"),
                }
            ))
            .unwrap_or_default()
    );
    let Some(held) = v.held else {
        return none_held(Step::Capacity, &v, condition, base);
    };
    let s = summary_of(held.result).expect("a held point ran");
    let n = s.connections.ready;
    let display = match stop_text(Step::Capacity, &v) {
        Some(stop) if v.stopped_by_generator() => {
            format!("≥ {n} (stopped by the generator {stop})")
        }
        Some(stop) => format!("{n} (stopped {stop})"),
        None => format!(
            "≥ {n} (not stopped: the suite's largest step{})",
            match &s.provenance.rlimit_nofile {
                Some(l) if l.soft < n + 2_000 && s.generator.agents <= 1 => format!(
                    "; one generator process ({} descriptors) holds little more: more needs agents",
                    l.soft
                ),
                _ => String::new(),
            }
        ),
    };
    Cell {
        display,
        value: Some(n as f64),
        status: CellStatus::Ok,
        condition,
        source: source_of(held.result, base),
        repeats: None,
    }
}

/// `arch`'s memory-per-connection cell of `kind`: the slope over the idle ramp's steps.
fn memory_slope_cell(
    runs: &Runs,
    a: &str,
    base: &Path,
    slo: f64,
    kind: crate::sweeps::MemoryKind,
) -> Cell {
    let Some(v) = verdict(runs, a, Step::IdleRamp, slo) else {
        return not_run(Step::IdleRamp);
    };
    let points = &runs[&(a.to_string(), Step::IdleRamp)];
    let condition = format!(
        "least-squares slope of the memory the idle connections added, over the steps of {} connections that held every connection",
        steps_tried(runs, a, Step::IdleRamp)
    );
    let stop = stop_text(Step::IdleRamp, &v)
        .map(|t| format!("; ramp stopped {t}"))
        .unwrap_or_default();
    match crate::sweeps::memory_slope(points, kind, slo) {
        Some((slope, n, lo, hi)) => {
            let kib = slope / 1024.0;
            Cell {
                display: format!("{kib:.2} KiB ({n} steps, {lo}–{hi} connections{stop})"),
                value: Some(kib),
                status: CellStatus::Ok,
                condition,
                source: v.held.and_then(|p| source_of(p.result, base)),
                repeats: None,
            }
        }
        None if v.held.is_none() && v.stopped.is_some() => {
            none_held(Step::IdleRamp, &v, condition, base)
        }
        None => Cell {
            display: format!("fewer than 2 usable steps{stop}"),
            value: None,
            status: CellStatus::NotMeasured,
            condition,
            source: v.held.and_then(|p| source_of(p.result, base)),
            repeats: None,
        },
    }
}

/// `arch`'s knee cell: the highest offered load that held the SLO, and what stopped the sweep.
fn knee_cell(runs: &Runs, a: &str, base: &Path, slo: f64) -> Cell {
    let Some(v) = verdict(runs, a, Step::LoadSweep, slo) else {
        return not_run(Step::LoadSweep);
    };
    let first = runs[&(a.to_string(), Step::LoadSweep)]
        .iter()
        .find_map(summary_of);
    let condition = format!(
        "offered {} deliveries/s in steps{}",
        steps_tried(runs, a, Step::LoadSweep),
        first
            .map(|s| format!(", {} connections", s.connections.planned))
            .unwrap_or_default()
    );
    let Some(held) = v.held else {
        return none_held(Step::LoadSweep, &v, condition, base);
    };
    let s = summary_of(held.result).expect("a held point ran");
    let p99 = s
        .latency_us
        .as_ref()
        .map(|l| l.p99 as f64 / 1000.0)
        .unwrap_or(0.0);
    let display = match stop_text(Step::LoadSweep, &v) {
        Some(stop) if v.stopped_by_generator() => format!(
            "≥ {} deliveries/s (p99 {p99:.1} ms; stopped by the generator {stop})",
            sig3(s.messages.delivered_per_s)
        ),
        Some(stop) => format!(
            "{} deliveries/s (p99 {p99:.1} ms; stopped {stop})",
            sig3(s.messages.delivered_per_s)
        ),
        None => format!(
            "≥ {} deliveries/s (p99 {p99:.1} ms; not stopped: the suite's largest step)",
            sig3(s.messages.delivered_per_s)
        ),
    };
    Cell {
        display,
        value: Some(s.messages.delivered_per_s),
        status: CellStatus::Ok,
        condition,
        source: source_of(held.result, base),
        repeats: None,
    }
}

/// The room sizes the room-size step ran, in any column, ascending and once each.
fn room_sizes(runs: &Runs) -> Vec<u64> {
    let mut sizes: Vec<u64> = runs
        .iter()
        .filter(|((_, s), _)| *s == Step::RoomSize)
        .flat_map(|(_, rs)| rs.iter())
        .filter_map(|r| summary_of(r).and_then(|s| crate::sweeps::x_of(Step::RoomSize, s)))
        .map(|x| x as u64)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// `arch`'s delivery-latency p99 cell at rooms of `m` members.
fn room_size_cell(runs: &Runs, a: &str, base: &Path, m: u64) -> Cell {
    let Some(points) = runs.get(&(a.to_string(), Step::RoomSize)) else {
        return not_run(Step::RoomSize);
    };
    let found = points.iter().find_map(|r| {
        let s = summary_of(r)?;
        (crate::sweeps::x_of(Step::RoomSize, s) == Some(m as f64)).then_some((r, s))
    });
    let Some((r, s)) = found else {
        return Cell {
            display: "not measured".into(),
            value: None,
            status: CellStatus::NotMeasured,
            condition: format!("no run with rooms of {m}"),
            source: None,
            repeats: None,
        };
    };
    let condition = load_condition(s);
    let source = source_of(r, base);
    if !s.valid {
        return Cell {
            display: "invalid (generator-bound)".into(),
            value: None,
            status: CellStatus::Invalid,
            condition: s.invalid_reasons.join("; "),
            source,
            repeats: None,
        };
    }
    match &s.latency_us {
        Some(l) => {
            let v = l.p99 as f64 / 1000.0;
            let mut lost = if s.messages.lost > 0 {
                format!(" ({} of {} lost)", s.messages.lost, s.messages.expected)
            } else {
                String::new()
            };
            if busy_warning(s).is_some() {
                lost.push_str(&format!(" {BUSY_MARK}"));
            }
            Cell {
                display: format!("{v:.3} ms{lost}"),
                value: Some(v),
                status: if s.status == RunStatus::Complete {
                    CellStatus::Ok
                } else {
                    CellStatus::Partial
                },
                condition,
                source,
                repeats: None,
            }
        }
        None => Cell {
            display: "no deliveries".into(),
            value: None,
            status: CellStatus::NotMeasured,
            condition,
            source,
            repeats: None,
        },
    }
}

/// The node-loss rows (when a column ran the step): time until the killed node's clients were
/// all back, messages lost to the failover, p99 before / during / after.
fn node_loss_rows(results: &Results, archs: &[String], base: &Path) -> Vec<Row> {
    if !results.keys().any(|(_, s)| *s == Step::NodeLoss) {
        return Vec::new();
    }
    type Pick = fn(&chatbench_model::failover::FailoverOutcome) -> Result<(f64, String), String>;
    let rows: [(&str, &str, &str, Pick); 3] = [
        (
            "node_loss_all_back_ms",
            "Fault tolerance: one node SIGKILLed: time until all its clients are back",
            "ms",
            |f| {
                let restart = f
                    .restart_ms
                    .map(|r| format!("; node restarted in {r} ms"))
                    .unwrap_or_else(|| "; node not restarted".into());
                match (f.all_back, f.all_back_ms) {
                    (true, Some(ms)) => Ok((
                        ms,
                        format!(
                            "{ms:.0} ms ({} of {} clients back{restart})",
                            f.reconnects, f.clients_on_node
                        ),
                    )),
                    _ => Err(format!(
                        "not all back: {} of {} ({} gave up){restart}",
                        f.reconnects, f.clients_on_node, f.reconnect_failures
                    )),
                }
            },
        ),
        (
            "node_loss_messages_lost",
            "Fault tolerance: messages lost to one node's loss",
            "messages",
            |f| {
                Ok((
                    f.during.lost as f64,
                    format!(
                        "{} of {} during the failover (rest of the window: {} of {})",
                        f.during.lost, f.during.expected, f.outside.lost, f.outside.expected
                    ),
                ))
            },
        ),
        (
            "node_loss_p99_ms",
            "Fault tolerance: delivery latency p99 before / during / after one node's loss",
            "ms",
            |f| {
                let ms = |v: Option<u64>| {
                    v.map(|us| format!("{:.1}", us as f64 / 1000.0))
                        .unwrap_or_else(|| "—".into())
                };
                let during = f.p99_during_us.ok_or("no deliveries during the failover")?;
                let recovered = match f.p99_recovered_ms {
                    Some(r) => format!(
                        "; back within ×{} of before {r:.0} ms after the kill",
                        f.p99_recovery_factor
                    ),
                    None => format!(
                        "; not back within ×{} of before by the window's end",
                        f.p99_recovery_factor
                    ),
                };
                Ok((
                    during as f64 / 1000.0,
                    format!(
                        "{} / {} / {} ms{recovered}",
                        ms(f.p99_before_us),
                        ms(Some(during)),
                        ms(f.p99_after_us)
                    ),
                ))
            },
        ),
    ];
    rows.iter()
        .map(|(key, label, unit, pick)| Row {
            key: (*key).into(),
            label: (*label).into(),
            unit: (*unit).into(),
            cells: archs
                .iter()
                .map(|a| {
                    let c = if results.contains_key(&(a.clone(), Step::NodeLoss)) {
                        cell(
                            results,
                            base,
                            a,
                            Step::NodeLoss,
                            |s| pick(s.failover.as_ref().ok_or("no node was killed")?),
                            |s| {
                                let f = s.failover.as_ref();
                                // One URL for every node (socketio-cluster's shared port).
                                let whither = if s.target.targets.is_empty() {
                                    "the same port (the other workers, or the re-forked one)"
                                } else {
                                    "the next node"
                                };
                                format!(
                                    "{}; node {} of {} SIGKILLed {:.1} s into the window, clients reconnect to {whither} with backoff and rejoin; {}",
                                    load_condition(s),
                                    f.map_or(0, |f| f.node),
                                    crate::sweeps::nodes_of(s),
                                    f.map_or(0.0, |f| f.at_window_s),
                                    crate::sweeps::server_cpus(s)
                                )
                            },
                        )
                    } else {
                        Cell {
                            display: "not measured".into(),
                            value: None,
                            status: CellStatus::NotMeasured,
                            condition: "a single server process: losing it is a whole outage; the cluster columns measure the loss of one node".into(),
                            source: None,
                            repeats: None,
                        }
                    };
                    (a.clone(), c)
                })
                .collect(),
        })
        .collect()
}

/// How the server processes of a scaling point shared the work, for the condition.
fn scaling_condition(s: &Summary) -> String {
    let how = match s.target.settings.get("backplane") {
        Some(b) => format!("rooms span the nodes over the {b} backplane"),
        None => "independent servers, each room kept on one server (partitioned)".into(),
    };
    format!(
        "the same scenario against each node count: {}; {how}; {}",
        load_condition(s),
        crate::sweeps::server_cpus(s)
    )
}

/// The horizontal-scaling rows: deliveries/s, p99 and CPU per delivery at each node count of
/// the scaling step. One "not measured" row when no column ran it.
fn scaling_rows(runs: &Runs, archs: &[String], base: &Path) -> Vec<Row> {
    let ran = runs.keys().any(|(_, s)| *s == Step::Scaling);
    if !ran {
        return vec![Row {
            key: "horizontal_scaling".into(),
            label: "Horizontal scaling".into(),
            unit: String::new(),
            cells: archs
                .iter()
                .map(|a| {
                    (
                        a.clone(),
                        Cell {
                            display: "not measured".into(),
                            value: None,
                            status: CellStatus::NotMeasured,
                            condition: "no scaling step in this run: the suites measure it when a cluster column is in the run (`--archs cluster-mesh`), and `--suite full` for every architecture as independent servers".into(),
                            source: None,
                            repeats: None,
                        },
                    )
                })
                .collect(),
        }];
    }
    type Pick = fn(&Summary) -> Option<(f64, String)>;
    let rows: [(&str, &str, &str, Pick); 3] = [
        (
            "scaling_delivered_per_s",
            "Horizontal scaling: deliveries/s at each node count (same offered load)",
            "deliveries/s",
            |s| {
                let v = s.messages.delivered_per_s;
                Some((v, sig3(v)))
            },
        ),
        (
            "scaling_p99_ms",
            "Horizontal scaling: delivery latency p99 at each node count",
            "ms",
            |s| {
                let v = s.latency_us.as_ref()?.p99 as f64 / 1000.0;
                Some((v, format!("{v:.1} ms")))
            },
        ),
        (
            "scaling_cpu_us_per_delivery",
            "Horizontal scaling: server CPU per delivery at each node count",
            "µs",
            |s| {
                let v = s.target_resources.cpu_us_per_delivery?;
                Some((v, format!("{v:.1} µs")))
            },
        ),
    ];
    rows.iter()
        .map(|(key, label, unit, pick)| Row {
            key: (*key).into(),
            label: (*label).into(),
            unit: (*unit).into(),
            cells: archs
                .iter()
                .map(|a| (a.clone(), scaling_cell(runs, base, a, *pick)))
                .collect(),
        })
        .collect()
}

/// One scaling cell: "1 node: … · 2 nodes: … · 4 nodes: …", each point its figure or why it
/// has none; the value is the figure at the largest node count that has one.
fn scaling_cell(
    runs: &Runs,
    base: &Path,
    arch: &str,
    pick: fn(&Summary) -> Option<(f64, String)>,
) -> Cell {
    let Some(points) = runs.get(&(arch.to_string(), Step::Scaling)) else {
        return Cell {
            display: "not measured".into(),
            value: None,
            status: CellStatus::NotMeasured,
            condition: "no scaling step for this column in this run (the quick suite scales the cluster columns only; `--suite full` also scales each architecture as independent servers)".into(),
            source: None,
            repeats: None,
        };
    };
    let mut parts = Vec::new();
    let mut value = None;
    let mut all_ok = true;
    let mut condition = None;
    let mut source = None;
    let mut files = Vec::new();
    for r in points {
        match r {
            StepResult::Failed { reason } => {
                all_ok = false;
                parts.push(format!("failed ({reason})"));
            }
            StepResult::Ran { dir, summary } => {
                let n = crate::sweeps::nodes_of(summary);
                let nodes = if n == 1 {
                    "1 node".into()
                } else {
                    format!("{n} nodes")
                };
                if condition.is_none() {
                    condition = Some(scaling_condition(summary));
                }
                files.push(format!("{nodes}: {}", rel(dir, base)));
                let figure = if !summary.valid {
                    all_ok = false;
                    "invalid (generator-bound)".to_string()
                } else if summary.status == RunStatus::Failed {
                    all_ok = false;
                    "run failed".to_string()
                } else {
                    match pick(summary) {
                        Some((v, text)) => {
                            value = Some(v);
                            source = Some(rel(dir, base));
                            let m = &summary.messages;
                            let text = if busy_warning(summary).is_some() {
                                format!("{text} {BUSY_MARK}")
                            } else {
                                text
                            };
                            if m.lost > 0 {
                                all_ok = false;
                                format!("{text} ({} of {} lost)", m.lost, m.expected)
                            } else {
                                text
                            }
                        }
                        None => {
                            all_ok = false;
                            "not sampled".to_string()
                        }
                    }
                };
                parts.push(format!("{nodes}: {figure}"));
            }
        }
    }
    Cell {
        display: parts.join(" · "),
        value,
        status: if all_ok {
            CellStatus::Ok
        } else {
            CellStatus::Partial
        },
        condition: format!(
            "{} (value and link: the largest node count with a figure; every point's results: {})",
            condition.unwrap_or_else(|| "every point failed".into()),
            files.join(", ")
        ),
        source,
        repeats: None,
    }
}

fn machine_line(s: &Summary) -> String {
    let pinning = match &s.target.cpu_affinity {
        Some(server) => format!(
            "; server pinned to CPUs {server:?}, generator to {:?}",
            s.generator.cpu_affinity
        ),
        None => "; server and generator not pinned".to_string(),
    };
    format!("{}{pinning}", s.provenance.machine())
}

/// A row's conditions in a line; architectures that share a condition are listed together.
pub fn conditions(c: &Comparison, r: &Row) -> String {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for a in &c.archs {
        if let Some(cell) = r.cells.get(a) {
            match groups.iter_mut().find(|(cond, _)| *cond == cell.condition) {
                Some((_, archs)) => archs.push(a),
                None => groups.push((cell.condition.clone(), vec![a])),
            }
        }
    }
    let text: Vec<String> = if groups.len() == 1 {
        groups.into_iter().map(|(cond, _)| cond).collect()
    } else {
        groups
            .into_iter()
            .map(|(cond, archs)| format!("{}: {cond}", archs.join(", ")))
            .collect()
    };
    text.join("; ")
}

/// The Markdown form (`comparison.md`): the page's sections ([`crate::page`]) in order;
/// `columns` says what each column stands for.
pub fn render_markdown(c: &Comparison, columns: crate::page::ColumnDocs) -> String {
    crate::page::markdown(c, columns)
}

#[cfg(test)]
mod tests;
