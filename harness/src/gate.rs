//! `chatbench gate`: the CI performance-regression gate. Runs the measurements and hands them
//! to `chatbench_report::gate` for judgement; prints the table and writes it as Markdown and
//! JSON. Exit codes: 0 pass, 1 regression, 2 could not judge (including any error).
//!
//! - `gate deterministic`: the `chatbench-gate-workload` binary under
//!   `setarch -R valgrind --tool=callgrind`, one process per architecture and repeat.
//! - `gate statistical`: k interleaved short runs (`chatbench run --serve ARCH`) of a baseline
//!   and a candidate build plus a second baseline arm for the A/A check.
//! - `gate --baseline FILE --current RUN…`: existing run results against a baseline of runs
//!   (`gate/runs.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use chatbench_model::provenance::now_rfc3339;
use chatbench_report::gate::baseline::{Baseline, BaselineMetric, Fingerprint, SCHEMA};
use chatbench_report::gate::{judge_deterministic, GateReport, Row, Verdict};

mod error;
pub mod runs;
pub mod statistical;

pub use error::GateError;
pub use runs::RunsOptions;
pub use statistical::StatOptions;

/// A gate tier and what it is asked to do.
#[derive(Debug, Clone)]
pub enum Tier {
    /// Instruction and allocation counts of fixed in-process workloads under callgrind.
    Deterministic(DetOptions),
    /// Repeated short runs of a baseline and a candidate build, interleaved.
    Statistical(StatOptions),
    /// Existing run results against a baseline of runs.
    Runs(RunsOptions),
}

/// What `chatbench gate deterministic` is asked to do (the binary's flags document each field).
#[derive(Debug, Clone)]
pub struct DetOptions {
    /// Baseline file.
    pub baseline: PathBuf,
    /// Measure and write the baseline file instead of comparing.
    pub update_baseline: bool,
    /// Folder for gate-deterministic.md, gate-deterministic.json and the callgrind outputs.
    pub out: PathBuf,
    /// Architectures to measure (repeatable); default: all.
    pub archs: Vec<String>,
    /// Runs of each workload; with more than one, every run must give the same counts.
    pub repeat: usize,
    /// Messages per workload (part of the baseline: a different value cannot be compared).
    pub messages: usize,
    /// Connections opened and closed, and held idle, per workload (part of the baseline).
    pub connections: usize,
    /// Server option inject_work for the measured code (busy-loop iterations per delivery), to
    /// check that the gate catches a known extra cost.
    pub inject_work: u32,
    /// The workload binary; default: chatbench-gate-workload next to this executable.
    pub workload_bin: Option<PathBuf>,
    /// Compare against a baseline measured with another CPU model or compiler.
    pub allow_other_machine: bool,
}

/// Room size of the fan-out workload.
const MEMBERS: usize = 100;
/// Body length of each message.
const BODY: usize = 64;
/// The measured region's symbol in the workload binary.
const MEASURED_FN: &str = "chatbench_gate_measured";
/// Allowed increase, percent: instructions per delivery.
const MAX_INSTR_PCT: f64 = 2.0;
/// Allowed increase, percent: allocations and allocated bytes per delivery.
const MAX_ALLOC_PCT: f64 = 1.0;

/// Measures (or reads) and judges one tier; every error is "could not judge" (exit 2), said on
/// stderr with its causes.
pub fn gate(tier: Tier) -> ExitCode {
    // Record (and run under) the limit runs actually get: `chatbench run` raises soft to hard,
    // so a fingerprint taken with a shell's lower soft limit would differ for no reason.
    let _ = chatbench_loadgen::sys::raise_nofile();
    let result = match tier {
        Tier::Deterministic(a) => deterministic(a),
        Tier::Statistical(a) => statistical::statistical(a),
        Tier::Runs(a) => runs::runs(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", crate::error_chain(&e));
            eprintln!("verdict: could not judge (exit 2)");
            ExitCode::from(Verdict::CouldNotJudge.exit_code())
        }
    }
}

/// A program the gate needs, or a clear error naming the package.
pub(crate) fn require_tool(name: &'static str, package: &'static str) -> Result<(), GateError> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !found {
        return Err(GateError::ToolMissing { name, package });
    }
    Ok(())
}

fn workload_bin(given: Option<PathBuf>) -> Result<PathBuf, GateError> {
    let path = match given {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(GateError::Exe)?
            .with_file_name("chatbench-gate-workload"),
    };
    if !path.is_file() {
        return Err(GateError::WorkloadBinMissing(path));
    }
    Ok(path)
}

/// What one workload process reported: its JSON result line, and under callgrind the
/// instructions of the measured region and the compiler its debug info names.
#[derive(Debug, Clone, PartialEq)]
struct Counts {
    /// Which workload, for messages ("the epoll fanout workload").
    what: String,
    result: serde_json::Value,
    instructions: Option<u64>,
    rustc: Option<String>,
}

impl Counts {
    fn field(&self, k: &'static str) -> Result<u64, GateError> {
        self.result
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| self.missing(k))
    }
    fn signed(&self, k: &'static str) -> Result<i64, GateError> {
        self.result
            .get(k)
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| self.missing(k))
    }
    fn missing(&self, key: &'static str) -> GateError {
        GateError::MissingCount {
            what: self.what.clone(),
            key,
            result: self.result.to_string(),
        }
    }
}

/// The workloads of the deterministic tier and how each is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Fan-out to a room of [`MEMBERS`], under callgrind.
    Fanout,
    /// Open and close `--connections` connections, under callgrind.
    Connections,
    /// Heap per idle connection (`--connections` of them), native (it counts bytes).
    Idle,
    /// The load generator's receive path (the epoll path a run's receivers take), per
    /// delivery, under callgrind.
    GenReceive,
    /// The same on the tokio path (TLS, other profiles, `receive_path = "tokio"`).
    GenReceiveTokio,
    /// The load generator's send path, per message sent, under callgrind.
    GenSend,
}

/// The architecture label of the generator's workloads (they measure no server).
const GENERATOR: &str = "loadgen";

impl Workload {
    /// The workloads measured once per architecture.
    const PER_ARCH: [Workload; 3] = [Workload::Fanout, Workload::Connections, Workload::Idle];
    /// Every workload, in the order they run.
    const ALL: [Workload; 6] = [
        Workload::Fanout,
        Workload::Connections,
        Workload::Idle,
        Workload::GenReceive,
        Workload::GenReceiveTokio,
        Workload::GenSend,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Fanout => "fanout",
            Workload::Connections => "connections",
            Workload::Idle => "idle",
            Workload::GenReceive => "generator-receive",
            Workload::GenReceiveTokio => "generator-receive-tokio",
            Workload::GenSend => "generator-send",
        }
    }

    fn callgrind(self) -> bool {
        self != Workload::Idle
    }
}

/// The (workload, architecture label) pairs to measure: each server workload for each of
/// `archs`, then the generator's workloads once under [`GENERATOR`].
fn jobs(archs: &[String]) -> Vec<(Workload, String)> {
    let mut jobs: Vec<(Workload, String)> = archs
        .iter()
        .flat_map(|a| Workload::PER_ARCH.map(|w| (w, a.clone())))
        .collect();
    jobs.push((Workload::GenReceive, GENERATOR.to_string()));
    jobs.push((Workload::GenReceiveTokio, GENERATOR.to_string()));
    jobs.push((Workload::GenSend, GENERATOR.to_string()));
    jobs
}

fn run_workload(
    bin: &Path,
    workload: Workload,
    arch: &str,
    args: &DetOptions,
    out_file: &Path,
) -> Result<Counts, GateError> {
    let what = format!("the {arch} {} workload", workload.name());
    let mut cmd = if workload.callgrind() {
        let mut c = Command::new("setarch");
        c.arg("-R")
            .arg("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(format!("--toggle-collect={MEASURED_FN}"))
            .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.arg(workload.name());
    if arch != GENERATOR {
        cmd.args(["--arch", arch]);
    }
    cmd.arg(format!("--members={MEMBERS}"))
        .arg(format!("--messages={}", args.messages))
        .arg(format!("--body={BODY}"))
        .arg(format!("--connections={}", args.connections))
        .arg(format!("--inject-work={}", args.inject_work))
        .stdin(Stdio::null());
    let output = cmd.output().map_err(|source| GateError::Spawn {
        what: what.clone(),
        source,
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        return Err(GateError::WorkloadFailed {
            what,
            status: output.status,
            stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().rev().find(|l| l.starts_with('{')) else {
        return Err(GateError::NoResultLine { what });
    };
    let result: serde_json::Value = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(source) => {
            return Err(GateError::ResultLine {
                what,
                line: line.to_string(),
                source,
            })
        }
    };
    if !workload.callgrind() {
        return Ok(Counts {
            what,
            result,
            instructions: None,
            rustc: None,
        });
    }
    let text = std::fs::read_to_string(out_file).map_err(|source| GateError::Read {
        path: out_file.to_path_buf(),
        source,
    })?;
    let (instructions, rustc) =
        parse_callgrind(&text).ok_or_else(|| GateError::NotCallgrind(out_file.to_path_buf()))?;
    if instructions == 0 {
        return Err(GateError::NothingCounted {
            path: out_file.to_path_buf(),
            symbol: MEASURED_FN,
        });
    }
    Ok(Counts {
        what,
        result,
        instructions: Some(instructions),
        rustc,
    })
}

/// The instruction total (`summary:` line) of a callgrind output, and the rustc commit its
/// debug info names (`/rustc/<hash>/library/…`), which identifies the compiler.
fn parse_callgrind(text: &str) -> Option<(u64, Option<String>)> {
    let total = text
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let rustc = text.find("/rustc/").and_then(|i| {
        let hash: String = text[i + 7..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        (hash.len() >= 7).then_some(hash)
    });
    Some((total, rustc))
}

/// Instructions, allocations and allocated bytes per unit of work, the unit being the
/// workload's `count` field; `names` in that order.
fn cost_per(
    c: &Counts,
    count: &'static str,
    names: [&'static str; 3],
) -> Result<Vec<(&'static str, &'static str, f64)>, GateError> {
    let n = c.field(count)?.max(1) as f64;
    let ir = c.instructions.ok_or_else(|| GateError::NoInstructions {
        what: c.what.clone(),
    })? as f64;
    Ok(vec![
        (names[0], "Ir", ir / n),
        (names[1], "allocs", c.field("allocs")? as f64 / n),
        (names[2], "B", c.field("alloc_bytes")? as f64 / n),
    ])
}

/// The metrics of one workload run: (name, unit, value).
fn metrics_of(
    workload: Workload,
    c: &Counts,
) -> Result<Vec<(&'static str, &'static str, f64)>, GateError> {
    Ok(match workload {
        Workload::Fanout => cost_per(
            c,
            "deliveries",
            [
                "instructions_per_delivery",
                "allocs_per_delivery",
                "alloc_bytes_per_delivery",
            ],
        )?,
        Workload::Connections => cost_per(
            c,
            "connections",
            [
                "instructions_per_connection",
                "allocs_per_connection",
                "alloc_bytes_per_connection",
            ],
        )?,
        Workload::GenReceive | Workload::GenReceiveTokio => cost_per(
            c,
            "deliveries",
            [
                "instructions_per_delivery",
                "allocs_per_delivery",
                "alloc_bytes_per_delivery",
            ],
        )?,
        Workload::GenSend => cost_per(
            c,
            "messages_sent",
            [
                "instructions_per_message",
                "allocs_per_message",
                "alloc_bytes_per_message",
            ],
        )?,
        Workload::Idle => {
            let n = c.field("connections")?.max(1) as f64;
            vec![(
                "heap_bytes_per_connection",
                "B",
                c.signed("heap_bytes_held")? as f64 / n,
            )]
        }
    })
}

/// The allowed increase of a metric, percent.
fn limit_pct(metric: &str) -> f64 {
    if metric.contains(".instructions_") {
        MAX_INSTR_PCT
    } else {
        MAX_ALLOC_PCT
    }
}

fn deterministic(args: DetOptions) -> Result<ExitCode, GateError> {
    require_tool("valgrind", "valgrind")?;
    require_tool("setarch", "util-linux")?;
    if args.repeat == 0 || args.messages == 0 || args.connections == 0 {
        return Err(GateError::ZeroSize);
    }
    let bin = workload_bin(args.workload_bin.clone())?;
    let profile = bin
        .parent()
        .and_then(Path::file_name)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into());
    let archs: Vec<String> = if args.archs.is_empty() {
        chatbench_servers::Arch::ALL
            .iter()
            .map(|a| a.as_str().to_string())
            .collect()
    } else {
        args.archs.clone()
    };
    let cg_dir = args.out.join("callgrind");
    std::fs::create_dir_all(&cg_dir).map_err(|source| GateError::CreateDir {
        path: cg_dir.clone(),
        source,
    })?;
    let mut metrics: BTreeMap<String, BaselineMetric> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut rustc = None;
    for (workload, arch) in jobs(&archs) {
        let arch = &arch;
        let mut samples: BTreeMap<&str, (&str, Vec<f64>)> = BTreeMap::new();
        for i in 0..args.repeat {
            let file = cg_dir.join(format!("{}.{arch}.{i}.out", workload.name()));
            eprintln!(
                "gate: {arch} {} workload, run {} of {}{}",
                workload.name(),
                i + 1,
                args.repeat,
                if workload.callgrind() {
                    " (callgrind)"
                } else {
                    ""
                }
            );
            let counts = run_workload(&bin, workload, arch, &args, &file)?;
            rustc = rustc.or_else(|| counts.rustc.clone());
            for (name, unit, v) in metrics_of(workload, &counts)? {
                samples.entry(name).or_insert((unit, Vec::new())).1.push(v);
            }
        }
        for (name, (unit, samples)) in samples {
            let key = format!("{}.{arch}.{name}", workload.name());
            let (lo, hi) = samples
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            if hi > lo {
                notes.push(format!(
                    "{key}: runs differ by {:.4} % ({lo:.3} … {hi:.3})",
                    (hi - lo) / lo.abs().max(f64::MIN_POSITIVE) * 100.0
                ));
            }
            let value = chatbench_report::gate::stats::median(&samples).unwrap_or(f64::NAN);
            metrics.insert(
                key,
                BaselineMetric {
                    unit: unit.to_string(),
                    value,
                    samples: if args.repeat > 1 { samples } else { Vec::new() },
                },
            );
        }
    }
    let mut settings = BTreeMap::new();
    settings.insert(
        "workload".to_string(),
        Workload::ALL.map(Workload::name).join(","),
    );
    settings.insert("members".to_string(), MEMBERS.to_string());
    settings.insert("messages".to_string(), args.messages.to_string());
    settings.insert("body_bytes".to_string(), BODY.to_string());
    settings.insert("connections".to_string(), args.connections.to_string());
    if args.inject_work > 0 {
        notes.push(format!(
            "inject_work = {} busy-loop iterations per delivery (a deliberate extra cost)",
            args.inject_work
        ));
    }
    settings.insert("profile".to_string(), profile);
    settings.insert(
        "rustc_commit".to_string(),
        rustc.unwrap_or_else(|| "unknown".into()),
    );
    let prov = chatbench_loadgen::provenance::collect();
    let current = Baseline {
        schema: SCHEMA.to_string(),
        tier: "deterministic".to_string(),
        created_at: now_rfc3339(),
        commit: prov.git_commit.clone(),
        dirty: prov.git_dirty,
        fingerprint: Fingerprint::from_provenance(&prov),
        settings,
        metrics,
    };
    if args.update_baseline && args.inject_work > 0 {
        return Err(GateError::InjectWorkBaseline);
    }
    if args.update_baseline {
        current
            .save(&args.baseline)
            .map_err(GateError::SaveBaseline)?;
        for (k, m) in &current.metrics {
            println!("{k:<50} {:>14.3} {}", m.value, m.unit);
        }
        for n in &notes {
            println!("note: {n}");
        }
        println!("baseline written: {}", args.baseline.display());
        return Ok(ExitCode::SUCCESS);
    }
    let baseline = Baseline::load(&args.baseline).map_err(|source| GateError::Baseline {
        source,
        how: "chatbench gate deterministic --update-baseline",
    })?;
    let mut baseline = baseline;
    if !args.archs.is_empty() {
        // Only the architectures asked for, and the generator's workloads (always run).
        baseline.metrics.retain(|k, _| {
            let of = k.split('.').nth(1);
            of == Some(GENERATOR) || archs.iter().any(|a| of == Some(a.as_str()))
        });
    }
    let report = compare_deterministic(&baseline, &current, notes, args.allow_other_machine);
    write_report(&report, &args.out, "gate-deterministic")?;
    print!("{}", report.table());
    Ok(ExitCode::from(report.verdict.exit_code()))
}

/// Judges `current` against `baseline`. Settings that change what is measured (workload
/// sizes, build profile, compiler, injected work) and the CPU model must match, or nothing is
/// judged (the CPU model selects libc's string-function variants); kernel, core count and
/// limits do not change instruction counts and are only noted.
fn compare_deterministic(
    baseline: &Baseline,
    current: &Baseline,
    mut notes: Vec<String>,
    allow_other_machine: bool,
) -> GateReport {
    notes.insert(
        0,
        format!(
            "baseline: commit {} measured {} on {}",
            baseline
                .commit
                .as_deref()
                .map(|c| c.get(..10).unwrap_or(c))
                .unwrap_or("unknown"),
            baseline.created_at,
            baseline.fingerprint.describe()
        ),
    );
    let mut cannot = false;
    for (k, v) in &baseline.settings {
        let cur = current.settings.get(k);
        if cur != Some(v) {
            cannot = true;
            notes.push(format!(
                "setting {k}: baseline {v}, this run {}: the counts are not comparable (re-measure the baseline with --update-baseline if the change is intended)",
                cur.map(String::as_str).unwrap_or("unset")
            ));
        }
    }
    let diffs = baseline.fingerprint.differences(&current.fingerprint);
    let cpu_differs = baseline.fingerprint.cpu_model != current.fingerprint.cpu_model;
    for d in diffs {
        notes.push(format!("machine differs from the baseline's: {d}"));
    }
    if cpu_differs && !allow_other_machine {
        cannot = true;
        notes.push(
            "the CPU model differs: pass --allow-other-machine to compare anyway, or measure a baseline on this machine"
                .into(),
        );
    }
    let mut rows: Vec<Row> = Vec::new();
    let names: std::collections::BTreeSet<&String> = baseline
        .metrics
        .keys()
        .chain(current.metrics.keys())
        .collect();
    for name in names {
        let b = baseline.metrics.get(name);
        let c = current.metrics.get(name);
        let unit = b.or(c).map(|m| m.unit.as_str()).unwrap_or("");
        let limit = limit_pct(name);
        rows.push(judge_deterministic(
            name,
            unit,
            b.map(|m| m.value),
            c.map(|m| m.value),
            limit,
        ));
    }
    GateReport::new("deterministic", rows, notes, cannot)
}

/// Writes `<name>.md` and `<name>.json` into `out`.
pub(crate) fn write_report(report: &GateReport, out: &Path, name: &str) -> Result<(), GateError> {
    std::fs::create_dir_all(out).map_err(|source| GateError::CreateDir {
        path: out.to_path_buf(),
        source,
    })?;
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| GateError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    let md = out.join(format!("{name}.md"));
    write(&md, report.markdown().as_bytes())?;
    let json = out.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(report).map_err(GateError::Encode)?;
    write(&json, (text + "\n").as_bytes())?;
    eprintln!("gate: wrote {} and {}", md.display(), json.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(value: f64) -> Baseline {
        let mut metrics = BTreeMap::new();
        metrics.insert(
            "fanout.epoll.instructions_per_delivery".to_string(),
            BaselineMetric {
                unit: "Ir".into(),
                value,
                samples: vec![],
            },
        );
        let mut settings = BTreeMap::new();
        settings.insert("messages".to_string(), "1000".to_string());
        Baseline {
            schema: SCHEMA.into(),
            tier: "deterministic".into(),
            created_at: "t".into(),
            commit: Some("0123456789abcdef".into()),
            dirty: Some(false),
            fingerprint: Fingerprint {
                cpu_model: Some("cpu".into()),
                cpu_cores: 2,
                kernel: Some("k".into()),
                rlimit_nofile: None,
            },
            settings,
            metrics,
        }
    }

    #[test]
    fn callgrind_summary_and_compiler_are_read() {
        let text = "events: Ir\nsummary: 12345\nfl=(2) /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/x.rs\n";
        assert_eq!(
            parse_callgrind(text),
            Some((
                12345,
                Some("59807616e1fa2540724bfbac14d7976d7e4a3860".to_string())
            ))
        );
        assert_eq!(parse_callgrind("events: Ir\n"), None);
    }

    #[test]
    fn workload_results_become_per_connection_and_per_delivery_metrics() {
        let c = Counts {
            what: "the epoll connections workload".into(),
            result: serde_json::json!({"connections": 1000, "allocs": 9000, "alloc_bytes": 694000}),
            instructions: Some(42_258_000),
            rustc: None,
        };
        let m = metrics_of(Workload::Connections, &c).unwrap();
        assert_eq!(m[0], ("instructions_per_connection", "Ir", 42_258.0));
        assert_eq!(m[1], ("allocs_per_connection", "allocs", 9.0));
        assert_eq!(m[2], ("alloc_bytes_per_connection", "B", 694.0));
        let idle = Counts {
            what: "the epoll idle workload".into(),
            result: serde_json::json!({"connections": 1000, "heap_bytes_held": 121920}),
            instructions: None,
            rustc: None,
        };
        let m = metrics_of(Workload::Idle, &idle).unwrap();
        assert_eq!(m, vec![("heap_bytes_per_connection", "B", 121.92)]);
        // A result without its count is an error, not a zero.
        let broken = Counts {
            what: "the epoll connections workload".into(),
            result: serde_json::json!({"connections": 1000}),
            instructions: Some(1),
            rustc: None,
        };
        let e = metrics_of(Workload::Connections, &broken).unwrap_err();
        assert!(
            matches!(e, GateError::MissingCount { key: "allocs", .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("the epoll connections workload: the workload's result has no allocs"),
            "{e}"
        );
        assert_eq!(
            limit_pct("connections.epoll.instructions_per_connection"),
            2.0
        );
        assert_eq!(limit_pct("idle.epoll.heap_bytes_per_connection"), 1.0);
    }

    #[test]
    fn the_generator_workloads_run_once_beside_every_architectures() {
        let j = jobs(&["epoll".to_string(), "task-per-conn".to_string()]);
        assert_eq!(j.len(), 2 * Workload::PER_ARCH.len() + 3);
        let gen: Vec<_> = j.iter().filter(|(_, a)| a == GENERATOR).collect();
        assert_eq!(
            gen.iter().map(|(w, _)| w.name()).collect::<Vec<_>>(),
            [
                "generator-receive",
                "generator-receive-tokio",
                "generator-send"
            ]
        );
        let sent = Counts {
            what: "the loadgen generator-send workload".into(),
            result: serde_json::json!({"messages_sent": 2000, "allocs": 4000, "alloc_bytes": 512000}),
            instructions: Some(6_000_000),
            rustc: None,
        };
        let m = metrics_of(Workload::GenSend, &sent).unwrap();
        assert_eq!(m[0], ("instructions_per_message", "Ir", 3000.0));
        assert_eq!(m[1], ("allocs_per_message", "allocs", 2.0));
        // The receive workload counts deliveries; a send result is not one.
        assert!(metrics_of(Workload::GenReceive, &sent).is_err());
    }

    #[test]
    fn deterministic_comparison_rules() {
        let b = baseline(1000.0);
        let r = compare_deterministic(&b, &baseline(1015.0), vec![], false);
        assert_eq!(r.verdict, Verdict::Pass);
        let r = compare_deterministic(&b, &baseline(1030.0), vec![], false);
        assert_eq!(r.verdict, Verdict::Regression);
        // Another kernel is only noted.
        let mut other = baseline(1030.0);
        other.fingerprint.kernel = Some("k2".into());
        let r = compare_deterministic(&b, &other, vec![], false);
        assert_eq!(r.verdict, Verdict::Regression);
        assert!(r.notes.iter().any(|n| n.contains("kernel")));
        // Another CPU model: could not judge, unless allowed.
        other.fingerprint.cpu_model = Some("cpu2".into());
        let r = compare_deterministic(&b, &other, vec![], false);
        assert_eq!(r.verdict, Verdict::CouldNotJudge);
        let r = compare_deterministic(&b, &other, vec![], true);
        assert_eq!(r.verdict, Verdict::Regression);
        // Other workload settings: never comparable.
        let mut sized = baseline(1000.0);
        sized.settings.insert("messages".into(), "5".into());
        let r = compare_deterministic(&b, &sized, vec![], true);
        assert_eq!(r.verdict, Verdict::CouldNotJudge);
        assert!(r.notes.iter().any(|n| n.contains("setting messages")));
        // A metric missing from this run.
        let mut missing = baseline(1000.0);
        missing.metrics.clear();
        let r = compare_deterministic(&b, &missing, vec![], false);
        assert_eq!(r.verdict, Verdict::CouldNotJudge);
    }
}
