//! `chatbench gate statistical`: k short runs each of the baseline build (A), the candidate
//! (B) and the baseline again (A′, for the A/A check), interleaved in a balanced order
//! (the six orders of A, B, A′ in turn), each a fresh `chatbench run --serve ARCH` process
//! (or, for a user's own server, `run --serve-cmd` with the baseline's and the candidate's
//! start commands) giving one observation per metric from its summary.json. Judged by
//! `chatbench_report::gate::judge_statistical`; a failed A/A check makes the verdict
//! "could not judge".

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use chatbench_model::figures;
use chatbench_model::provenance::now_rfc3339;
use chatbench_model::results::{OtherLoad, RunStatus, Summary};
use chatbench_report::gate::baseline::{Baseline, BaselineMetric, Fingerprint, SCHEMA};
use chatbench_report::gate::{judge_statistical, GateReport, Row, Samples, StatRule, Verdict};

use super::GateError;

/// What `chatbench gate statistical` is asked to do (the binary's flags document each field).
#[derive(Debug, Clone)]
pub struct StatOptions {
    /// Architecture to run (`chatbench run --serve ARCH`).
    pub arch: String,
    /// The fixed open-loop scenario.
    pub scenario: PathBuf,
    /// Runs per arm (baseline, candidate, baseline again).
    pub runs: usize,
    /// chatbench executable of the baseline build; default: this executable.
    pub baseline_bin: Option<PathBuf>,
    /// chatbench executable of the candidate build; default: this executable.
    pub candidate_bin: Option<PathBuf>,
    /// A user's own server: the baseline build's start command (as `run --serve-cmd`: split on
    /// spaces, it prints its HOST:PORT first on stdout), e.g. "./old/my-server --port 0".
    /// Needs `candidate_cmd` and `label`; replaces `arch`.
    pub baseline_cmd: Option<String>,
    /// The candidate build's start command (see `baseline_cmd`).
    pub candidate_cmd: Option<String>,
    /// With `baseline_cmd`: the request path on those servers (`run --serve-path`).
    pub serve_path: String,
    /// With `baseline_cmd`: the target's name, recorded in the runs (`run --label`) and
    /// naming the metrics and the default baseline file (statistical-LABEL.json).
    pub label: Option<String>,
    /// Extra server flag for the baseline's server (repeatable).
    pub baseline_server_args: Vec<String>,
    /// Extra server flag for the candidate's server (repeatable), e.g.
    /// --candidate-server-arg=--inject-work=400 to measure the gate's power.
    pub candidate_server_args: Vec<String>,
    /// Baseline file: the machine fingerprint runs must match, and the baseline build's runs.
    pub baseline: Option<PathBuf>,
    /// Run the baseline build k times and write the baseline file instead of comparing.
    pub update_baseline: bool,
    /// Judge even though this machine's fingerprint differs from the baseline file's.
    pub allow_other_machine: bool,
    /// Family-wise significance level (Holm over the three metrics).
    pub alpha: f64,
    /// Smallest change that counts, percent: of the median round ratio (8 rounds or more, paired
    /// test), else of the medians.
    pub min_effect: f64,
    /// Folder for the runs, gate-statistical.md and gate-statistical.json.
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    A,
    B,
    A2,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::A => "baseline",
            Arm::B => "candidate",
            Arm::A2 => "baseline-again",
        }
    }
}

/// The order of the arms in round `i`: the six permutations in turn, so each arm runs first,
/// second and third equally often over six rounds (drift affects every arm alike).
fn round_order(i: usize) -> [Arm; 3] {
    use Arm::*;
    const ORDERS: [[Arm; 3]; 6] = [
        [A, B, A2],
        [B, A2, A],
        [A2, A, B],
        [A, A2, B],
        [B, A, A2],
        [A2, B, A],
    ];
    ORDERS[i % 6]
}

/// A run's summary.json, typed.
fn read_summary(summary: &Path) -> Result<Summary, GateError> {
    let text = std::fs::read_to_string(summary).map_err(|source| GateError::Read {
        path: summary.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| GateError::ParseSummary {
        path: summary.to_path_buf(),
        source,
    })
}

/// One observation per gated figure (`chatbench_model::figures::gated`, in its order) from a
/// run's summary; `None` for a figure the summary lacks. Errors when the run is invalid.
fn observe(s: &Summary, path: &Path) -> Result<Vec<Option<f64>>, GateError> {
    if !s.valid {
        return Err(GateError::InvalidRun {
            path: path.to_path_buf(),
            why: serde_json::to_string(&s.invalid_reasons).unwrap_or_default(),
        });
    }
    Ok(figures::gated().map(|f| (f.read)(s)).collect())
}

/// One metric's observations paired by round: per round in which `y` ran and at least one of
/// the `base` arms did, (the geometric mean of those base values, `y`'s value).
fn paired_rounds(
    obs: &[(usize, Arm, Vec<Option<f64>>)],
    base: &[Arm],
    y: Arm,
    m: usize,
) -> Vec<(f64, f64)> {
    let value = |round: usize, arm: Arm| -> Option<f64> {
        obs.iter()
            .find(|(r, a, _)| *r == round && *a == arm)
            .and_then(|(_, _, o)| o[m])
    };
    let mut rounds: Vec<usize> = obs.iter().map(|(r, _, _)| *r).collect();
    rounds.dedup();
    rounds
        .into_iter()
        .filter_map(|i| {
            let cur = value(i, y)?;
            let vals: Vec<f64> = base
                .iter()
                .filter_map(|&a| value(i, a))
                .filter(|v| *v > 0.0)
                .collect();
            let b = match vals.as_slice() {
                [] => return None,
                [one] => *one,
                more => (more.iter().map(|v| v.ln()).sum::<f64>() / more.len() as f64).exp(),
            };
            Some((b, cur))
        })
        .collect()
}

/// The other work on the server's CPUs during a run (`target_resources.other_load.other_cores`),
/// when the summary has it.
fn other_cores(s: &Summary) -> Option<f64> {
    s.target_resources
        .other_load
        .as_ref()
        .map(|o| o.other_cores)
}

/// What the gate measures: a reference architecture, or a user's server by its two builds'
/// start commands.
impl StatOptions {
    /// The name of the target in metric names and the default baseline file.
    fn target_name(&self) -> &str {
        match (&self.baseline_cmd, &self.label) {
            (Some(_), Some(l)) => l,
            _ => &self.arch,
        }
    }

    /// The `chatbench run` flags that start the target of `arm`.
    fn serve_flags(&self, arm: Arm) -> Vec<String> {
        let cmd = match arm {
            Arm::B => self.candidate_cmd.as_ref(),
            _ => self.baseline_cmd.as_ref(),
        };
        match (cmd, &self.label) {
            (Some(cmd), Some(label)) => vec![
                "--serve-cmd".into(),
                cmd.clone(),
                "--serve-path".into(),
                self.serve_path.clone(),
                "--label".into(),
                label.clone(),
            ],
            _ => vec!["--serve".into(), self.arch.clone()],
        }
    }
}

/// Runs one `chatbench run` of `arm`'s target and returns its summary.json path.
fn one_run(
    bin: &Path,
    args: &StatOptions,
    arm: Arm,
    server_args: &[String],
    out: &Path,
) -> Result<PathBuf, GateError> {
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .args(args.serve_flags(arm))
        .args(["--progress", "quiet", "--scenario"])
        .arg(&args.scenario)
        .arg("--out")
        .arg(out);
    for a in server_args {
        cmd.arg(format!("--server-arg={a}"));
    }
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| GateError::StartRun {
            bin: bin.to_path_buf(),
            source,
        })?;
    let found = std::fs::read_dir(out)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("summary.json"))
        .find(|p| p.is_file());
    match found {
        Some(p) => Ok(p),
        None => Err(GateError::RunFailed {
            bin: bin.to_path_buf(),
            status: output.status,
            last: crate::run_failure_cause(&String::from_utf8_lossy(&output.stderr)),
        }),
    }
}

/// Measures the baseline and candidate builds interleaved and judges them: checks the
/// request, checks this machine against the baseline file's, measures the rounds, then writes
/// the baseline (`update_baseline`) or judges the candidate.
pub fn statistical(args: StatOptions) -> Result<ExitCode, GateError> {
    let (a_bin, b_bin) = check(&args)?;
    let baseline_path = args.baseline.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "results/baselines/gate/statistical-{}.json",
            args.target_name()
        ))
    });
    let prov = chatbench_loadgen::provenance::collect();
    let here = Fingerprint::from_provenance(&prov);
    let mut notes = Vec::new();
    if cfg!(debug_assertions) && (args.baseline_bin.is_none() || args.candidate_bin.is_none()) {
        notes.push(
            "this chatbench is a debug build: timing figures of debug builds say little; use `cargo build --release`"
                .into(),
        );
    }
    if !args.update_baseline {
        if let Some(code) = check_machine(&args, &baseline_path, &here, &mut notes)? {
            return Ok(code);
        }
    }
    let runs_dir = args
        .out
        .join(format!("statistical-{}", now_rfc3339().replace(':', "")));
    let m = measure(&args, &a_bin, &b_bin, &runs_dir, &mut notes);
    if let Some(note) = busy_note(&m.other) {
        notes.push(note);
    }
    if args.update_baseline {
        let b = new_baseline(&args, &m, &prov, here)?;
        b.save(&baseline_path).map_err(GateError::SaveBaseline)?;
        print_baseline(&b, &notes, &baseline_path);
        return Ok(ExitCode::SUCCESS);
    }
    let (rows, cannot) = judge(&args, m, &mut notes);
    notes.push(format!("runs in {}", runs_dir.display()));
    let report = GateReport::new("statistical", rows, notes, cannot);
    super::write_report(&report, &args.out, "gate-statistical")?;
    print!("{}", report.table());
    Ok(ExitCode::from(report.verdict.exit_code()))
}

/// The request's own checks (enough runs to reach α, the path, the scenario, the two
/// executables): a usage error for the first that fails. Returns the baseline's and the
/// candidate's executables.
fn check(args: &StatOptions) -> Result<(PathBuf, PathBuf), GateError> {
    // Fewer runs per arm than can reach α (Mann–Whitney, Holm over the gated figures) could
    // never flag anything: refuse them, saying how many are needed.
    let gated = figures::gated().count();
    let need = chatbench_report::gate::stats::min_runs_each(args.alpha, gated);
    if args.runs < need && !args.update_baseline {
        return Err(GateError::TooFewRuns {
            k: args.runs,
            need,
            alpha: args.alpha,
            figures: gated,
        });
    }
    if args.runs < 3 {
        return Err(GateError::KBelowThree);
    }
    if !(args.serve_path.starts_with('/')) {
        return Err(GateError::ServePath(args.serve_path.clone()));
    }
    if !args.scenario.is_file() {
        return Err(GateError::ScenarioMissing(args.scenario.clone()));
    }
    let this = std::env::current_exe().map_err(GateError::Exe)?;
    let a_bin = args.baseline_bin.clone().unwrap_or_else(|| this.clone());
    let b_bin = args.candidate_bin.clone().unwrap_or(this);
    for b in [&a_bin, &b_bin] {
        if !b.is_file() {
            return Err(GateError::ExeMissing(b.clone()));
        }
    }
    Ok((a_bin, b_bin))
}

/// Reads the baseline file and notes where it was measured; on another machine (without
/// `allow_other_machine`) prints the "could not judge" report and returns its exit code.
fn check_machine(
    args: &StatOptions,
    baseline_path: &Path,
    here: &Fingerprint,
    notes: &mut Vec<String>,
) -> Result<Option<ExitCode>, GateError> {
    let b = Baseline::load(baseline_path).map_err(|source| GateError::Baseline {
        source,
        how: "chatbench gate statistical --update-baseline",
    })?;
    let diffs = b.fingerprint.differences(here);
    notes.push(format!(
        "baseline file: commit {} on {}",
        b.commit
            .as_deref()
            .map(|c| c.get(..10).unwrap_or(c))
            .unwrap_or("unknown"),
        b.fingerprint.describe()
    ));
    if diffs.is_empty() {
        return Ok(None);
    }
    notes.push(format!(
        "machine differs from the baseline's: {}",
        diffs.join("; ")
    ));
    if args.allow_other_machine {
        return Ok(None);
    }
    let report = GateReport::new("statistical", Vec::new(), std::mem::take(notes), true);
    print!("{}", report.table());
    eprintln!("pass --allow-other-machine to judge anyway, or measure a baseline here with --update-baseline");
    Ok(Some(ExitCode::from(Verdict::CouldNotJudge.exit_code())))
}

/// What the rounds measured.
struct Measured {
    /// (round, arm, one observation per gated figure).
    obs: Vec<(usize, Arm, Vec<Option<f64>>)>,
    /// The other work on the server's CPUs, per run that recorded it.
    other: Vec<f64>,
    /// Candidate runs that failed (measured nothing meaningful): each a regression row.
    failed_candidate: Vec<Row>,
}

impl Measured {
    /// Figure `m`'s observations of `arm`, in round order.
    fn samples(&self, arm: Arm, m: usize) -> Vec<f64> {
        self.obs
            .iter()
            .filter(|(_, a, _)| *a == arm)
            .filter_map(|(_, _, o)| o[m])
            .collect()
    }
}

/// Runs the rounds (only the baseline's arm with `update_baseline`), each arm in its round's
/// order; a run that fails or is invalid is left out with a note.
fn measure(
    args: &StatOptions,
    a_bin: &Path,
    b_bin: &Path,
    runs_dir: &Path,
    notes: &mut Vec<String>,
) -> Measured {
    let arms: &[Arm] = if args.update_baseline {
        &[Arm::A]
    } else {
        &[Arm::A, Arm::B, Arm::A2]
    };
    let mut m = Measured {
        obs: Vec::new(),
        other: Vec::new(),
        failed_candidate: Vec::new(),
    };
    for i in 0..args.runs {
        for arm in round_order(i).into_iter().filter(|a| arms.contains(a)) {
            let (bin, sargs) = match arm {
                Arm::B => (b_bin, &args.candidate_server_args),
                _ => (a_bin, &args.baseline_server_args),
            };
            let dir = runs_dir.join(format!("{i:02}-{}", arm.name()));
            eprintln!("gate: round {} of {}: {}", i + 1, args.runs, arm.name());
            let ran = one_run(bin, args, arm, sargs, &dir);
            if arm == Arm::B {
                if let Err(e) = &ran {
                    // The candidate's run gave no results at all (its server did not start,
                    // or died before the run could write them): as much a failed run as one
                    // that measured nothing.
                    m.failed_candidate
                        .push(failed_run_row(args, i, &format!("{e:#}")));
                    continue;
                }
            }
            let observed = ran.and_then(|p| {
                let s = read_summary(&p)?;
                if arm == Arm::B && s.status == RunStatus::Failed {
                    let why = s.invalid_reasons.join("; ");
                    m.failed_candidate.push(failed_run_row(args, i, &why));
                }
                Ok((observe(&s, &p)?, other_cores(&s)))
            });
            match observed {
                Ok((o, busy)) => {
                    m.obs.push((i, arm, o));
                    m.other.extend(busy);
                }
                Err(e) => notes.push(format!(
                    "{} run {} left out: {}",
                    arm.name(),
                    i + 1,
                    crate::error_chain(&e)
                )),
            }
        }
    }
    m
}

/// The regression row of candidate run `i` (0-based) that failed, and `why`.
fn failed_run_row(args: &StatOptions, i: usize, why: &str) -> Row {
    Row::failed_run(
        format!("{}.run", args.target_name()),
        format!("candidate run {} failed: {why}", i + 1),
    )
}

/// The baseline file of the baseline build's runs: each gated figure's median and samples.
fn new_baseline(
    args: &StatOptions,
    m: &Measured,
    prov: &chatbench_model::provenance::Provenance,
    here: Fingerprint,
) -> Result<Baseline, GateError> {
    let mut metrics = std::collections::BTreeMap::new();
    for (i, f) in figures::gated().enumerate() {
        let (name, unit) = (f.key, f.unit);
        let s = m.samples(Arm::A, i);
        let Some(med) = chatbench_report::gate::stats::median(&s) else {
            return Err(GateError::NoObservation(name));
        };
        metrics.insert(
            format!("{}.{name}", args.target_name()),
            BaselineMetric {
                unit: unit.to_string(),
                value: med,
                samples: s,
            },
        );
    }
    let mut settings = std::collections::BTreeMap::new();
    settings.insert("arch".to_string(), args.target_name().to_string());
    settings.insert("scenario".to_string(), args.scenario.display().to_string());
    settings.insert("runs".to_string(), args.runs.to_string());
    Ok(Baseline {
        schema: SCHEMA.to_string(),
        tier: "statistical".to_string(),
        created_at: now_rfc3339(),
        commit: prov.git_commit.clone(),
        dirty: prov.git_dirty,
        fingerprint: here,
        settings,
        metrics,
    })
}

/// Prints the baseline just written: each figure's median and run-to-run cv, the notes.
fn print_baseline(b: &Baseline, notes: &[String], path: &Path) {
    for (k, m) in &b.metrics {
        let cv = chatbench_report::gate::stats::cv(&m.samples).map(|c| c * 100.0);
        println!(
            "{k:<40} median {:>10.2} {}  cv {}",
            m.value,
            m.unit,
            cv.map(|c| format!("{c:.1} %"))
                .unwrap_or_else(|| "—".into())
        );
    }
    for n in notes {
        println!("note: {n}");
    }
    println!("baseline written: {}", path.display());
}

/// Judges the candidate against its rounds' baseline runs and the baseline against itself
/// (the A/A check); notes the A/A check and, per figure, the runs a change needs. Returns the
/// rows and whether the verdict is "could not judge" (a failed A/A check).
fn judge(args: &StatOptions, m: Measured, notes: &mut Vec<String>) -> (Vec<Row>, bool) {
    let rule = StatRule {
        alpha: args.alpha,
        min_effect_pct: args.min_effect,
        min_samples: 3,
    };
    let set = |x: Arm, y: Arm, base: &[Arm]| -> Vec<Samples> {
        figures::gated()
            .enumerate()
            .map(|(i, f)| Samples {
                metric: format!("{}.{}", args.target_name(), f.key),
                unit: f.unit.to_string(),
                better: f.better,
                baseline: m.samples(x, i),
                current: m.samples(y, i),
                rounds: paired_rounds(&m.obs, base, y, i),
            })
            .collect()
    };
    // The candidate against its rounds' two baseline runs; the A/A check: A′ against A.
    let mut rows = judge_statistical(&set(Arm::A, Arm::B, &[Arm::A, Arm::A2]), rule);
    let aa = judge_statistical(&set(Arm::A, Arm::A2, &[Arm::A]), rule);
    let cannot = !aa_note(&aa, notes);
    notes.extend(runs_needed_notes(args, &m));
    rows.extend(m.failed_candidate);
    (rows, cannot)
}

/// Notes the A/A check's outcome; `true` when it passed.
fn aa_note(aa: &[Row], notes: &mut Vec<String>) -> bool {
    let aa_failed: Vec<String> = aa
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
        .map(|r| {
            format!(
                "{} {} ({})",
                r.metric,
                r.verdict.as_str(),
                r.change_pct
                    .map(|c| format!("{c:+.1} %"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if aa_failed.is_empty() {
        notes.push(format!(
            "A/A check (baseline against itself) passed: {}",
            aa.iter()
                .map(|r| format!("{} {}", r.metric, r.detail))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        true
    } else {
        notes.push(format!(
            "A/A check failed: the baseline differs from itself ({}): this machine is too noisy to judge now",
            aa_failed.join(", ")
        ));
        false
    }
}

/// Per gated figure, its baseline run-to-run cv and the runs per arm a `min_effect` change
/// needs.
fn runs_needed_notes(args: &StatOptions, m: &Measured) -> Vec<String> {
    let gated = figures::gated().count();
    let mut notes = Vec::new();
    for (i, name) in figures::gated().map(|f| f.key).enumerate() {
        if let Some(cv) = chatbench_report::gate::stats::cv(
            &[m.samples(Arm::A, i), m.samples(Arm::A2, i)].concat(),
        ) {
            let need = chatbench_report::gate::stats::runs_needed(
                cv,
                args.min_effect / 100.0,
                args.alpha,
                gated,
                0.95,
            );
            notes.push(format!(
                "{name}: baseline run-to-run cv {:.1} %: the normal formula gives {need} runs per arm for a {} % change at 95 % power; it is optimistic at small k (resampling measured runs needed about twice as many, docs/gate.md): use -k {}",
                cv * 100.0,
                args.min_effect,
                (2 * need).max(8)
            ));
        }
    }
    notes
}

/// A note when other work shared the server's CPUs during the runs (median above
/// [`OtherLoad::LIMIT_CORES`]): the interleaving and the A/A check keep the verdict fair, but
/// the figures are those of a busy machine.
fn busy_note(other_cores: &[f64]) -> Option<String> {
    let med = chatbench_report::gate::stats::median(other_cores)?;
    (med > OtherLoad::LIMIT_CORES).then(|| {
        let max = other_cores.iter().copied().fold(f64::MIN, f64::max);
        format!(
            "machine busy: other work used a median {med:.2} core (at most {max:.2}) of the server's CPUs during the runs (over {} runs; quiet is below {:.2}): both arms shared it, so the verdict stands, but these are a busy machine's figures and its noise",
            other_cores.len(),
            OtherLoad::LIMIT_CORES
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_balanced_over_six() {
        let mut first = [0usize; 3];
        for i in 0..6 {
            let o = round_order(i);
            assert!(o.contains(&Arm::A) && o.contains(&Arm::B) && o.contains(&Arm::A2));
            first[o[0] as usize] += 1;
        }
        assert_eq!(first, [2, 2, 2]);
    }

    #[test]
    fn rounds_pair_the_candidate_with_its_own_rounds_baselines() {
        let o = |r: usize, a: Arm, v: f64| (r, a, vec![Some(v), None, Some(v)]);
        let obs = vec![
            o(0, Arm::A, 4.0),
            o(0, Arm::B, 5.0),
            o(0, Arm::A2, 9.0),
            o(1, Arm::B, 7.0),
            o(1, Arm::A2, 2.0),
            // Round 2: the candidate's run was left out (invalid).
            o(2, Arm::A, 3.0),
            o(2, Arm::A2, 3.0),
        ];
        let r = paired_rounds(&obs, &[Arm::A, Arm::A2], Arm::B, 0);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(
            (r[0].0 - 6.0).abs() < 1e-9 && r[0].1 == 5.0,
            "geometric mean of 4 and 9"
        );
        assert_eq!(r[1], (2.0, 7.0));
        // A metric the runs lack pairs nothing; the A/A check pairs A′ with A.
        assert!(paired_rounds(&obs, &[Arm::A, Arm::A2], Arm::B, 1).is_empty());
        assert_eq!(
            paired_rounds(&obs, &[Arm::A], Arm::A2, 2),
            vec![(4.0, 9.0), (3.0, 3.0)]
        );
    }

    #[test]
    fn other_load_is_read_and_a_busy_machine_is_noted() {
        let mut s = fixture();
        s.target_resources.other_load = serde_json::from_str(
            r#"{"cpus":[0],"busy_cores":0.9,"other_cores":0.4,"steal_cores":0.0}"#,
        )
        .unwrap();
        assert_eq!(other_cores(&s), Some(0.4));
        s.target_resources.other_load = None;
        assert_eq!(other_cores(&s), None);
        assert!(busy_note(&[0.01, 0.05, 0.2]).is_none());
        let n = busy_note(&[0.3, 0.5, 0.6]).unwrap();
        assert!(
            n.contains("median 0.50") && n.contains("at most 0.60"),
            "{n}"
        );
        assert!(busy_note(&[]).is_none());
    }

    /// A real run's summary (the report's broadcast fixture).
    fn fixture() -> Summary {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../report/tests/data/broadcast/summary.json");
        read_summary(&p).unwrap()
    }

    #[test]
    fn observations_come_from_the_summary_and_invalid_runs_are_refused() {
        let p = Path::new("summary.json");
        let mut s = fixture();
        s.valid = true;
        s.latency_us.as_mut().unwrap().p99 = 812;
        s.messages.delivered_per_s = 39600.5;
        s.target_resources.cpu_us_per_delivery = None;
        // By key: the gated figures are the catalogue's (more may join them).
        let o = observe(&s, p).unwrap();
        let by_key = |key: &str| {
            figures::gated()
                .position(|f| f.key == key)
                .and_then(|i| o[i])
        };
        assert_eq!(
            ["p99_latency", "deliveries_per_s", "cpu_us_per_delivery"].map(by_key),
            [Some(812.0), Some(39600.5), None]
        );
        s.valid = false;
        s.invalid_reasons = vec!["generator-bound".into()];
        let e = observe(&s, p).unwrap_err().to_string();
        assert!(
            e.contains("invalid") && e.contains("generator-bound"),
            "{e}"
        );
    }
}
