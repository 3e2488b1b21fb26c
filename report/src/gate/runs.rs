//! Run metrics for `chatbench gate --baseline FILE --current RUN…`: reading the `summary.json`
//! of `chatbench run` results (the catalogue's gated figures, `chatbench_model::figures`: p99
//! latency, deliveries/s, CPU-µs per delivery; with the machine
//! fingerprint, scenario and target each was measured with), baseline files made of them
//! (tier `runs`), and their judgement.
//!
//! Judgement: with at least [`StatRule::min_samples`] runs on each side, the statistical tier's
//! rule ([`judge_statistical`]: Mann–Whitney U, Holm over the metrics, a minimum effect); with
//! fewer, "could not judge: too few samples", unless a fixed threshold is asked for, which
//! compares medians without any significance test and says so on every row. The runs must
//! come from the baseline's machine (fingerprint) unless that is explicitly allowed, and from
//! the same scenario and target, or nothing is judged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chatbench_model::figures;
use chatbench_model::results::Summary;
use serde_json::Value;

use super::baseline::{Baseline, BaselineMetric, Fingerprint, SCHEMA};
use super::{change_pct, judge_statistical, Better, GateReport, Row, Samples, StatRule, Verdict};

/// The tier name of run-metric baselines and reports.
pub const TIER: &str = "runs";

/// Why a run could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    /// Reading a file or folder failed.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not JSON.
    #[error("{path}: not a chatbench summary.json: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// JSON, but not a run summary.
    #[error("{path}: not a chatbench run summary (no {what}): pass a run folder written by `chatbench run`")]
    NotASummary {
        /// The file.
        path: PathBuf,
        /// What is missing.
        what: &'static str,
    },
    /// No summary.json at or under the path.
    #[error("{path}: no summary.json in it or in its sub-folders: pass a run folder (results/runs/<id>/) or its summary.json")]
    NoRuns {
        /// The path given.
        path: PathBuf,
    },
    /// The run's own self-check marked it invalid.
    #[error("{path}: the run is marked invalid ({reasons}): its figures are not used")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The run's reasons.
        reasons: String,
    },
    /// A threshold recorded with the run does not read (a key no longer in the catalogue).
    #[error("{path}: its recorded thresholds cannot be judged: {source}")]
    Thresholds {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: chatbench_model::thresholds::ThresholdError,
    },
    /// The runs for a baseline disagree on what was measured.
    #[error("the runs are not alike: {0}")]
    Mixed(String),
}

/// One run's metrics and the conditions they were measured under.
#[derive(Debug, Clone, PartialEq)]
pub struct RunObservation {
    /// The summary.json read.
    pub path: PathBuf,
    /// The machine (from the summary's provenance).
    pub fingerprint: Fingerprint,
    /// The commit measured, when recorded.
    pub commit: Option<String>,
    /// Whether that tree had uncommitted changes.
    pub dirty: Option<bool>,
    /// Scenario name.
    pub scenario: String,
    /// Scenario text with its `--set` overrides: what was run.
    pub scenario_text: String,
    /// The target: the architecture started (`--serve`), or the URL.
    pub target: String,
    /// One value per gated figure ([`figures::gated`], in its order); `None` when the summary
    /// lacks it (or it is not finite), and for a failed run.
    pub values: Vec<Option<f64>>,
    /// Why the run failed (`status: failed`: it measured nothing meaningful, or could not
    /// connect), when it did: a failed current run is a regression.
    pub failed: Option<String>,
    /// Its thresholds judged (the scenario's `[thresholds]` and `run --threshold`, recorded
    /// with it, and any the gate adds: [`read_run_with`]).
    pub thresholds: Vec<chatbench_model::thresholds::Judged>,
}

/// The summary.json files a `--current`/`--baseline` argument names: the file itself, a run
/// folder holding one, or a folder of run folders (every direct sub-folder with one, sorted).
pub fn find_summaries(path: &Path) -> Result<Vec<PathBuf>, RunsError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let own = path.join("summary.json");
    if own.is_file() {
        return Ok(vec![own]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| RunsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path().join("summary.json"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(RunsError::NoRuns {
            path: path.to_path_buf(),
        });
    }
    Ok(found)
}

/// Reads one run's summary.json. A run its own self-check marked invalid is an error
/// ([`RunsError::Invalid`]): its figures say more about the generator than the server. A
/// failed run is read, with [`RunObservation::failed`] set and no figures.
pub fn read_run(path: &Path) -> Result<RunObservation, RunsError> {
    read_run_with(path, &[])
}

/// [`read_run`], judging `extra` thresholds (the gate's own) beside the run's recorded ones.
pub fn read_run_with(
    path: &Path,
    extra: &[chatbench_model::thresholds::Threshold],
) -> Result<RunObservation, RunsError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|source| RunsError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let not = |what| RunsError::NotASummary {
        path: path.to_path_buf(),
        what,
    };
    let schema = v.get("schema").and_then(Value::as_str).unwrap_or("");
    if !schema.starts_with("chatbench.summary/") {
        return Err(not("\"schema\": \"chatbench.summary/…\""));
    }
    let valid = v
        .get("valid")
        .and_then(Value::as_bool)
        .ok_or(not("valid"))?;
    let failed = v.get("status").and_then(Value::as_str) == Some("failed");
    let reasons_of = |v: &Value| {
        v.get("invalid_reasons")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .map(|x| x.as_str().map(str::to_string).unwrap_or(x.to_string()))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "no reason given".into())
    };
    if !valid && !failed {
        let reasons = v
            .get("invalid_reasons")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .map(|x| x.as_str().map(str::to_string).unwrap_or(x.to_string()))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "no reason given".into());
        return Err(RunsError::Invalid {
            path: path.to_path_buf(),
            reasons,
        });
    }
    let prov = v.get("provenance").ok_or(not("provenance"))?;
    let s = |x: Option<&Value>| x.and_then(Value::as_str).map(str::to_string);
    let fingerprint = Fingerprint {
        cpu_model: s(prov.get("cpu_model")),
        cpu_cores: prov
            .get("cpu_cores")
            .and_then(Value::as_u64)
            .ok_or(not("provenance.cpu_cores"))? as usize,
        kernel: s(prov.get("kernel")),
        rlimit_nofile: prov.get("rlimit_nofile").and_then(|l| {
            Some((
                l.get("soft").and_then(Value::as_u64)?,
                l.get("hard").and_then(Value::as_u64)?,
            ))
        }),
    };
    let scenario = v.get("scenario").ok_or(not("scenario"))?;
    let overrides = scenario
        .get("overrides")
        .and_then(Value::as_array)
        .map(|o| {
            o.iter()
                .map(|x| x.as_str().map(str::to_string).unwrap_or(x.to_string()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    // Thresholds are no condition of the measurement: runs that differ only in them compare.
    let mut scenario_text = chatbench_model::thresholds::without_thresholds(
        &s(scenario.get("text")).ok_or(not("scenario.text"))?,
    );
    for o in overrides
        .iter()
        .filter(|o| !chatbench_model::thresholds::is_threshold_override(o))
    {
        scenario_text.push_str("\n# --set ");
        scenario_text.push_str(o);
    }
    // The figures, typed (the checks above name what a file that is no summary lacks).
    let summary: Summary =
        serde_json::from_value(v.clone()).map_err(|source| RunsError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    let failed = failed.then(|| reasons_of(&v));
    let mut limits = chatbench_model::thresholds::of_summary(&summary).map_err(|source| {
        RunsError::Thresholds {
            path: path.to_path_buf(),
            source,
        }
    })?;
    limits.extend_from_slice(extra);
    let thresholds = chatbench_model::thresholds::judge(&summary, &limits);
    let target = target_name(v.get("target"));
    Ok(RunObservation {
        path: path.to_path_buf(),
        fingerprint,
        commit: s(prov.get("git_commit")),
        dirty: prov.get("git_dirty").and_then(Value::as_bool),
        scenario: s(scenario.get("name")).unwrap_or_default(),
        scenario_text,
        target,
        values: figures::gated()
            .map(|f| {
                (f.read)(&summary)
                    .filter(|x| x.is_finite())
                    .filter(|_| failed.is_none())
            })
            .collect(),
        failed,
        thresholds,
    })
}

/// What a run's target is matched by: its label (`run --label`, `target.settings.label`),
/// else the architecture started (`--serve`), else the URL — a URL's port changes from run to
/// run on CI, a label does not.
fn target_name(target: Option<&Value>) -> String {
    let s = |x: Option<&Value>| x.and_then(Value::as_str).map(str::to_string);
    let label = s(target.and_then(|t| {
        t.get("settings")?
            .get(chatbench_model::results::TARGET_LABEL_SETTING)
    }))
    .map(|l| format!("label {l}"));
    label
        .or_else(|| s(target.and_then(|t| t.get("arch"))))
        .or_else(|| s(target.and_then(|t| t.get("url"))))
        .unwrap_or_else(|| "unknown".into())
}

/// The settings a run-metric baseline records; a comparison needs them equal.
fn settings_of(o: &RunObservation) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    s.insert("scenario".to_string(), o.scenario.clone());
    s.insert("scenario_text".to_string(), o.scenario_text.clone());
    s.insert("target".to_string(), o.target.clone());
    s
}

/// A baseline of run metrics (tier [`TIER`]) from the runs given: every run must come from the
/// same machine, scenario and target. The commit is the runs' own (`provenance.git_commit`)
/// when they agree; `created_at` is given by the caller.
pub fn runs_baseline(runs: &[RunObservation], created_at: String) -> Result<Baseline, RunsError> {
    let Some(first) = runs.first() else {
        return Err(RunsError::Mixed(
            "no valid run to make a baseline of".into(),
        ));
    };
    if let Some(r) = runs.iter().find(|r| r.failed.is_some()) {
        return Err(RunsError::Mixed(format!(
            "{} failed ({}): a baseline is made of runs that measured something",
            r.path.display(),
            r.failed.as_deref().unwrap_or("")
        )));
    }
    for r in &runs[1..] {
        let d = first.fingerprint.differences(&r.fingerprint);
        if !d.is_empty() {
            return Err(RunsError::Mixed(format!(
                "{} and {} come from different machines ({})",
                first.path.display(),
                r.path.display(),
                d.join("; ")
            )));
        }
        if settings_of(r) != settings_of(first) {
            return Err(RunsError::Mixed(format!(
                "{} and {} ran different scenarios or targets ({} on {}, {} on {})",
                first.path.display(),
                r.path.display(),
                first.scenario,
                first.target,
                r.scenario,
                r.target
            )));
        }
    }
    let commit = runs
        .iter()
        .all(|r| r.commit == first.commit)
        .then(|| first.commit.clone())
        .flatten();
    let mut metrics = BTreeMap::new();
    for (i, m) in figures::gated().enumerate() {
        let samples: Vec<f64> = runs.iter().filter_map(|r| r.values[i]).collect();
        if let Some(value) = super::stats::median(&samples) {
            metrics.insert(
                m.key.to_string(),
                BaselineMetric {
                    unit: m.unit.to_string(),
                    value,
                    samples,
                },
            );
        }
    }
    let mut settings = settings_of(first);
    settings.insert("runs".to_string(), runs.len().to_string());
    Ok(Baseline {
        schema: SCHEMA.to_string(),
        tier: TIER.to_string(),
        created_at,
        commit,
        dirty: Some(runs.iter().any(|r| r.dirty == Some(true))),
        fingerprint: first.fingerprint.clone(),
        settings,
        metrics,
    })
}

/// How run metrics are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunsRule {
    /// The significance rule, used when both sides have enough runs.
    pub stat: StatRule,
    /// When set: compare medians against this many percent without a significance test
    /// (labelled as such); for single runs, knowingly.
    pub fixed_threshold_pct: Option<f64>,
    /// Judge runs from a machine other than the baseline's.
    pub allow_other_machine: bool,
}

/// Judges `current` runs against a run-metric `baseline`. `notes` (e.g. runs left out) are
/// kept. Fingerprint, scenario or target mismatches give "could not judge" for every metric
/// (a fingerprint mismatch not when `allow_other_machine`).
pub fn judge_runs(
    baseline: &Baseline,
    current: &[RunObservation],
    rule: RunsRule,
    mut notes: Vec<String>,
) -> GateReport {
    notes.insert(0, baseline_line(baseline));
    let cannot = refusals(baseline, current, rule, &mut notes);
    let samples = samples_of(baseline, current);
    let mut rows = judge_samples(&samples, rule, &mut notes);
    if rule.fixed_threshold_pct.is_none()
        && rows
            .iter()
            .any(|r| r.verdict == Verdict::CouldNotJudge && r.detail.starts_with("too few"))
    {
        notes.push(too_few_runs_note(&samples, rule.stat, current.len()));
    }
    rows.extend(failed_and_threshold_rows(current));
    notes.push(
        "no A/A check in this mode: the baseline runs were made at another time; `chatbench gate statistical` interleaves both builds and checks the baseline against itself".into(),
    );
    GateReport::new(TIER, rows, notes, cannot)
}

/// The report's first note: how many runs of what the baseline holds, on which commit and
/// machine.
fn baseline_line(baseline: &Baseline) -> String {
    let setting = |k: &str| baseline.settings.get(k).map(String::as_str).unwrap_or("?");
    format!(
        "baseline: {} run(s) of {} on {}, commit {}, {}",
        setting("runs"),
        setting("scenario"),
        setting("target"),
        baseline
            .commit
            .as_deref()
            .map(|c| c.get(..10).unwrap_or(c))
            .unwrap_or("unknown"),
        baseline.fingerprint.describe()
    )
}

/// Adds to `notes` every reason `current` cannot be judged against `baseline` (another tier,
/// no run, other settings, another machine unless allowed) and every machine warning; true
/// when one of them refuses the judgement.
fn refusals(
    baseline: &Baseline,
    current: &[RunObservation],
    rule: RunsRule,
    notes: &mut Vec<String>,
) -> bool {
    let mut cannot = false;
    if baseline.tier != TIER {
        cannot = true;
        notes.push(format!(
            "the baseline file is of the {} tier, not run metrics: write one with `chatbench gate --update-baseline --baseline FILE --current RUN…`",
            baseline.tier
        ));
    }
    if current.is_empty() {
        cannot = true;
        notes.push("no valid current run".into());
    }
    let mut machines_differ = false;
    for r in current {
        machines_differ |= machine_notes(baseline, r, notes);
        cannot |= settings_notes(baseline, r, notes);
    }
    if machines_differ {
        if rule.allow_other_machine {
            notes.push(
                "judged anyway (--allow-other-machine): timing figures from different machines differ for reasons other than the code".into(),
            );
        } else {
            cannot = true;
            notes.push(
                "timing figures are only comparable on the baseline's machine: measure a baseline here, or pass --allow-other-machine".into(),
            );
        }
    }
    cannot
}

/// Adds run `r`'s machine warnings and differences from the baseline's machine to `notes`;
/// true when the machines differ.
fn machine_notes(baseline: &Baseline, r: &RunObservation, notes: &mut Vec<String>) -> bool {
    for w in baseline.fingerprint.warnings(&r.fingerprint) {
        notes.push(format!("{}: {w}", r.path.display()));
    }
    let d = baseline.fingerprint.differences(&r.fingerprint);
    if d.is_empty() {
        return false;
    }
    notes.push(format!(
        "{}: machine differs from the baseline's: {}",
        r.path.display(),
        d.join("; ")
    ));
    true
}

/// Adds a note for each setting of run `r` (scenario, target …) that differs from the
/// baseline's; true when one does (the runs are not comparable).
fn settings_notes(baseline: &Baseline, r: &RunObservation, notes: &mut Vec<String>) -> bool {
    let mut differ = false;
    for (k, v) in settings_of(r) {
        if let Some(b) = baseline.settings.get(&k).filter(|b| **b != v) {
            differ = true;
            let show = |s: &str| {
                if k == "scenario_text" {
                    "(text differs)".to_string()
                } else {
                    s.to_string()
                }
            };
            notes.push(format!(
                "{}: {k} {} differs from the baseline's {}: the runs are not comparable",
                r.path.display(),
                show(&v),
                show(b)
            ));
        }
    }
    differ
}

/// Each gated figure's samples: the baseline's (its value when it kept no samples) and one per
/// current run that has it.
fn samples_of(baseline: &Baseline, current: &[RunObservation]) -> Vec<Samples> {
    figures::gated()
        .enumerate()
        .map(|(i, m)| Samples {
            rounds: Vec::new(),
            metric: m.key.to_string(),
            unit: m.unit.to_string(),
            better: m.better,
            baseline: baseline
                .metrics
                .get(m.key)
                .map(|b| {
                    if b.samples.is_empty() {
                        vec![b.value]
                    } else {
                        b.samples.clone()
                    }
                })
                .unwrap_or_default(),
            current: current.iter().filter_map(|r| r.values[i]).collect(),
        })
        .collect()
}

/// One row per figure: judged by the fixed threshold (noted in `notes`) or the significance
/// test, "could not judge" when a side has no sample.
fn judge_samples(samples: &[Samples], rule: RunsRule, notes: &mut Vec<String>) -> Vec<Row> {
    let mut rows = match rule.fixed_threshold_pct {
        Some(pct) => {
            notes.push(format!(
                "fixed-threshold mode: medians compared with a fixed ±{pct} % rule and NO significance test: run-to-run noise alone can cross it (docs/gate.md)"
            ));
            samples.iter().map(|s| judge_fixed(s, pct)).collect()
        }
        None => judge_statistical(samples, rule.stat),
    };
    for (row, s) in rows.iter_mut().zip(samples) {
        if s.baseline.is_empty() {
            row.verdict = Verdict::CouldNotJudge;
            row.detail = "not in the baseline".into();
        } else if s.current.is_empty() {
            let m = figures::by_key(&s.metric);
            row.verdict = Verdict::CouldNotJudge;
            row.detail = format!(
                "missing from every current run's summary.json{}",
                m.map(|m| format!(" ({})", m.source)).unwrap_or_default()
            );
        }
    }
    rows
}

/// The refusal when `current_runs` runs are too few for significance: how many would do.
fn too_few_runs_note(samples: &[Samples], stat: StatRule, current_runs: usize) -> String {
    let nb = samples.iter().map(|s| s.baseline.len()).max().unwrap_or(0);
    let metrics = samples.len();
    let each = super::stats::min_runs_each(stat.alpha, metrics).max(stat.min_samples);
    let against = super::stats::min_runs_against(nb, stat.alpha, metrics)
        .map(|n| {
            format!(
                "{} current runs against this {nb}-run baseline, or ",
                n.max(stat.min_samples)
            )
        })
        .unwrap_or_default();
    format!(
        "refused: {} current run(s) cannot reach significance (Mann–Whitney, two-sided, Holm over {metrics} figures at α = {}): give {against}{each} runs on each side (a baseline of {each}: `--update-baseline`), or --fixed-threshold PCT to compare without a test",
        current_runs,
        stat.alpha
    )
}

/// A regression row for each failed current run, and a row for each run's each threshold
/// (absolute limits: crossed is a regression, whatever the baseline).
fn failed_and_threshold_rows(current: &[RunObservation]) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in current {
        let run = r
            .path
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| r.path.display().to_string());
        if let Some(why) = &r.failed {
            rows.push(Row::failed_run(
                format!("run {run}"),
                format!("the run failed: {why}"),
            ));
        }
        for j in &r.thresholds {
            let t = &j.threshold;
            rows.push(Row {
                metric: format!("threshold {} ({run})", t.key()),
                unit: t.figure.show.unit.to_string(),
                baseline: None,
                current: j.value,
                change_pct: None,
                rule: format!("{} {}", t.op.as_str(), t.figure.show.format(t.limit)),
                verdict: if j.passed {
                    Verdict::Pass
                } else {
                    Verdict::Regression
                },
                detail: j.line(),
                failed_run: false,
            });
        }
    }
    rows
}

/// Median against median with a fixed threshold in the worse direction, no significance test.
fn judge_fixed(s: &Samples, pct: f64) -> Row {
    let (b, c) = (
        super::stats::median(&s.baseline),
        super::stats::median(&s.current),
    );
    let change = b.zip(c).and_then(|(b, c)| change_pct(b, c));
    let worse = match (change, s.better) {
        (Some(ch), Better::Lower) => Some(ch),
        (Some(ch), Better::Higher) => Some(-ch),
        (None, _) => None,
    };
    let verdict = match worse {
        _ if super::collapsed(b, c) => Verdict::Regression,
        None => Verdict::CouldNotJudge,
        Some(w) if w > pct => Verdict::Regression,
        Some(w) if -w > pct => Verdict::Improved,
        Some(_) => Verdict::Pass,
    };
    Row {
        metric: s.metric.clone(),
        unit: s.unit.clone(),
        baseline: b,
        current: c,
        change_pct: change,
        rule: format!("fixed threshold {pct} %, no significance test"),
        verdict,
        detail: if super::collapsed(b, c) {
            super::COLLAPSED.to_string()
        } else {
            format!(
                "medians of {} + {} run(s)",
                s.baseline.len(),
                s.current.len()
            )
        },
        failed_run: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::stats;

    /// A real summary (the report's broadcast fixture) with these figures and conditions.
    fn summary(p99: Option<f64>, cpu: f64, valid: bool) -> Value {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/broadcast/summary.json");
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
        let patch = serde_json::json!({
            "valid": valid,
            "invalid_reasons": if valid { vec![] } else { vec!["generator-bound"] },
            "scenario": {"name": "gate", "path": null, "text": "connections = 10\n", "overrides": []},
            "target": {"arch": "epoll", "url": "ws://127.0.0.1:1/ws"},
            "provenance": {"cpu_model": "AMD EPYC", "cpu_cores": 2, "kernel": "6.1",
                "rlimit_nofile": {"soft": 20000, "hard": 20000, "raised_from": 20000}, "git_commit": "abc", "git_dirty": false},
            "messages": {"delivered_per_s": 39600.0},
            "target_resources": {"cpu_us_per_delivery": cpu},
        });
        fn merge(into: &mut Value, from: &Value) {
            match (into, from) {
                (Value::Object(a), Value::Object(b)) => {
                    for (k, x) in b {
                        merge(a.entry(k.clone()).or_insert(Value::Null), x);
                    }
                }
                (a, b) => *a = b.clone(),
            }
        }
        merge(&mut v, &patch);
        match p99 {
            Some(p) => v["latency_us"]["p99"] = p.into(),
            None => v["latency_us"] = Value::Null,
        }
        v
    }

    fn obs(dir: &Path, name: &str, v: &Value) -> RunObservation {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("summary.json"), v.to_string()).unwrap();
        read_run(&d.join("summary.json")).unwrap()
    }

    fn rule() -> RunsRule {
        RunsRule {
            stat: StatRule::default(),
            fixed_threshold_pct: None,
            allow_other_machine: false,
        }
    }

    #[test]
    fn summaries_are_found_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let o = obs(dir.path(), "r1", &summary(Some(900.0), 10.0, true));
        // By key: the gated figures are the catalogue's (more may join them).
        let by_key = |o: &RunObservation, key: &str| {
            figures::gated()
                .position(|f| f.key == key)
                .and_then(|i| o.values[i])
        };
        assert_eq!(
            ["p99_latency", "deliveries_per_s", "cpu_us_per_delivery"].map(|k| by_key(&o, k)),
            [Some(900.0), Some(39600.0), Some(10.0)]
        );
        assert_eq!(o.target, "epoll");
        assert_eq!(o.fingerprint.rlimit_nofile, Some((20000, 20000)));
        let o2 = obs(dir.path(), "r2", &summary(None, 11.0, true));
        assert_eq!(by_key(&o2, "p99_latency"), None);
        // A folder of run folders, a run folder, a file.
        assert_eq!(find_summaries(dir.path()).unwrap().len(), 2);
        assert_eq!(find_summaries(&dir.path().join("r1")).unwrap().len(), 1);
        assert!(matches!(
            find_summaries(&dir.path().join("r1/nothing")),
            Err(RunsError::Read { .. })
        ));
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(
            find_summaries(&empty),
            Err(RunsError::NoRuns { .. })
        ));
        // Invalid runs, other JSON, not JSON.
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, summary(Some(1.0), 1.0, false).to_string()).unwrap();
        let e = read_run(&bad).unwrap_err();
        assert!(e.to_string().contains("generator-bound"), "{e}");
        std::fs::write(&bad, r#"{"schema":"chatbench-gate-baseline/1"}"#).unwrap();
        assert!(matches!(read_run(&bad), Err(RunsError::NotASummary { .. })));
        std::fs::write(&bad, "{").unwrap();
        assert!(matches!(read_run(&bad), Err(RunsError::Parse { .. })));
    }

    fn runs(dir: &Path, tag: &str, cpus: &[f64]) -> Vec<RunObservation> {
        cpus.iter()
            .enumerate()
            .map(|(i, &c)| {
                obs(
                    dir,
                    &format!("{tag}{i}"),
                    &summary(Some(900.0 + i as f64), c, true),
                )
            })
            .collect()
    }

    #[test]
    fn significance_when_enough_runs_and_too_few_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let base = runs(dir.path(), "b", &[10.0, 10.2, 9.9, 10.1, 10.05]);
        let b = runs_baseline(&base, "t".into()).unwrap();
        assert_eq!(b.tier, TIER);
        assert_eq!(b.metrics["cpu_us_per_delivery"].samples.len(), 5);
        assert_eq!(b.commit.as_deref(), Some("abc"));
        // Same figures: pass.
        let r = judge_runs(&b, &base, rule(), vec![]);
        assert_eq!(r.verdict, Verdict::Pass, "{}", r.table());
        // +30 % CPU per delivery, every run: regression (exit 1).
        let worse = runs(dir.path(), "w", &[13.0, 13.2, 12.9, 13.1, 13.05]);
        let r = judge_runs(&b, &worse, rule(), vec![]);
        assert_eq!(r.verdict, Verdict::Regression, "{}", r.table());
        assert_eq!(r.verdict.exit_code(), 1);
        // One current run: too few samples for a test.
        let r = judge_runs(&b, &worse[..1], rule(), vec![]);
        assert_eq!(r.verdict, Verdict::CouldNotJudge, "{}", r.table());
        assert!(r.rows.iter().all(|x| x.detail.contains("too few samples")));
        assert!(r.notes.iter().any(|n| n.contains("--fixed-threshold")));
        // … unless a fixed threshold is asked for, and labelled.
        let fixed = RunsRule {
            fixed_threshold_pct: Some(10.0),
            ..rule()
        };
        let r = judge_runs(&b, &worse[..1], fixed, vec![]);
        assert_eq!(r.verdict, Verdict::Regression, "{}", r.table());
        let cpu = r.rows.iter().find(|x| x.metric == "cpu_us_per_delivery");
        assert!(cpu.is_some_and(|x| x.rule.contains("no significance test")));
        assert!(r.notes.iter().any(|n| n.contains("NO significance test")));
    }

    #[test]
    fn a_doubling_is_flagged_with_the_fewest_runs_accepted_and_fewer_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = runs(dir.path(), "b", &[10.0, 10.2, 9.9, 10.1, 10.05]);
        let b = runs_baseline(&base, "t".into()).unwrap();
        // Against 5 baseline runs, 4 current ones are the fewest that can reach α = 0.05
        // with Holm over 3 figures (2 / C(9, 4) × 3 = 0.048).
        assert_eq!(stats::min_runs_against(5, 0.05, 3), Some(4));
        let doubled = runs(dir.path(), "d", &[20.0, 20.4, 19.8, 20.2]);
        let r = judge_runs(&b, &doubled, rule(), vec![]);
        assert_eq!(r.verdict, Verdict::Regression, "{}", r.table());
        let cpu = r.rows.iter().find(|x| x.metric == "cpu_us_per_delivery");
        assert!(
            cpu.is_some_and(|x| x.verdict == Verdict::Regression),
            "{}",
            r.table()
        );
        // Three cannot: refused (could not judge, exit 2), saying how many are needed.
        let r = judge_runs(&b, &doubled[..3], rule(), vec![]);
        assert_eq!(r.verdict, Verdict::CouldNotJudge, "{}", r.table());
        assert_eq!(r.verdict.exit_code(), 2);
        assert!(
            r.notes.iter().any(|n| n.contains("refused")
                && n.contains("4 current runs against this 5-run baseline")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn deliveries_down_100_percent_fail_whatever_the_run_count() {
        let dir = tempfile::tempdir().unwrap();
        let base = runs(dir.path(), "b", &[10.0, 10.2, 9.9, 10.1, 10.05]);
        let b = runs_baseline(&base, "t".into()).unwrap();
        let mut broken = summary(Some(900.0), 10.0, true);
        broken["messages"]["delivered_per_s"] = 0.0.into();
        let one = vec![obs(dir.path(), "x", &broken)];
        for rule in [
            rule(),
            RunsRule {
                fixed_threshold_pct: Some(10.0),
                ..rule()
            },
        ] {
            let r = judge_runs(&b, &one, rule, vec![]);
            assert_eq!(r.verdict, Verdict::Regression, "{}", r.table());
            let d = r.rows.iter().find(|x| x.metric == "deliveries_per_s");
            assert!(
                d.is_some_and(|x| x.verdict == Verdict::Regression && x.detail.contains("−100 %")),
                "{}",
                r.table()
            );
        }
    }

    #[test]
    fn a_failed_run_and_a_crossed_threshold_are_regressions() {
        let dir = tempfile::tempdir().unwrap();
        let base = runs(dir.path(), "b", &[10.0, 10.2, 9.9, 10.1, 10.05]);
        let b = runs_baseline(&base, "t".into()).unwrap();
        let mut failed = summary(Some(900.0), 10.0, false);
        failed["status"] = "failed".into();
        failed["invalid_reasons"] =
            serde_json::json!(["measured nothing meaningful: nothing was delivered"]);
        let f = obs(dir.path(), "f", &failed);
        assert!(
            f.values.iter().all(Option::is_none),
            "no figures from a failed run"
        );
        let r = judge_runs(&b, std::slice::from_ref(&f), rule(), vec![]);
        assert_eq!(r.verdict, Verdict::Regression, "{}", r.table());
        assert!(r
            .rows
            .iter()
            .any(|x| x.detail.contains("nothing was delivered")));
        // A recorded threshold that no longer reads is said, not skipped.
        let mut odd = summary(Some(900.0), 10.0, true);
        odd["scenario"]["text"] = "[thresholds]\nnot_a_figure = \"<= 1\"\n".into();
        let d = dir.path().join("odd");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("summary.json"), odd.to_string()).unwrap();
        let e = read_run(&d.join("summary.json")).unwrap_err();
        assert!(e.to_string().contains("not_a_figure"), "{e}");
        // A failed run is no baseline.
        assert!(matches!(
            runs_baseline(&[f], "t".into()),
            Err(RunsError::Mixed(_))
        ));
        // Absolute thresholds judged on every current run, beside the comparison.
        let d = dir.path().join("b0/summary.json");
        let limit = chatbench_model::thresholds::parse("p99_latency", "<= 0.5 ms").unwrap();
        let mut current = vec![read_run_with(&d, &[limit]).unwrap()];
        current.extend(base[1..].iter().cloned());
        let r = judge_runs(&b, &current, rule(), vec![]);
        assert_eq!(r.verdict, Verdict::Regression, "{}", r.table());
        let row = r
            .rows
            .iter()
            .find(|x| x.metric.starts_with("threshold p99_latency"));
        assert!(
            row.is_some_and(|x| x.verdict == Verdict::Regression && x.detail.contains("0.900 ms")),
            "{}",
            r.table()
        );
    }

    #[test]
    fn targets_match_by_label_then_arch_then_url() {
        let t = |v: Value| target_name(Some(&v));
        let url = |port: u16| format!("ws://127.0.0.1:{port}/ws");
        let labelled = |port| serde_json::json!({"url": url(port), "arch": null, "settings": {"label": "my-server"}});
        assert_eq!(
            t(labelled(8080)),
            t(labelled(9090)),
            "another port, same label"
        );
        assert_eq!(t(labelled(8080)), "label my-server");
        let bare = |port| serde_json::json!({"url": url(port), "arch": null, "settings": {}});
        assert_ne!(t(bare(8080)), t(bare(9090)), "no label: the URL decides");
        let served = serde_json::json!({"url": url(1), "arch": "epoll", "settings": {}});
        assert_eq!(t(served), "epoll");
    }

    #[test]
    fn missing_metric_machine_and_scenario_mismatch_cannot_be_judged() {
        let dir = tempfile::tempdir().unwrap();
        let base = runs(dir.path(), "b", &[10.0, 10.2, 9.9, 10.1, 10.05]);
        let b = runs_baseline(&base, "t".into()).unwrap();
        // p99 missing from every current run.
        let nop99: Vec<RunObservation> = (0..5)
            .map(|i| obs(dir.path(), &format!("n{i}"), &summary(None, 10.0, true)))
            .collect();
        let r = judge_runs(&b, &nop99, rule(), vec![]);
        assert_eq!(r.verdict, Verdict::CouldNotJudge, "{}", r.table());
        let p99 = r.rows.iter().find(|x| x.metric == "p99_latency");
        assert!(p99.is_some_and(|x| x.detail.contains("latency_us.p99")));
        // Another machine: could not judge unless allowed.
        let mut other = base.clone();
        for o in &mut other {
            o.fingerprint.cpu_model = Some("Other".into());
        }
        let r = judge_runs(&b, &other, rule(), vec![]);
        assert_eq!(r.verdict, Verdict::CouldNotJudge);
        assert!(r.notes.iter().any(|n| n.contains("CPU model")));
        let allow = RunsRule {
            allow_other_machine: true,
            ..rule()
        };
        assert_eq!(judge_runs(&b, &other, allow, vec![]).verdict, Verdict::Pass);
        // Another scenario: never comparable.
        let mut scen = base.clone();
        scen[0].scenario_text.push_str("rooms = 3\n");
        let r = judge_runs(&b, &scen, allow, vec![]);
        assert_eq!(r.verdict, Verdict::CouldNotJudge);
        // A baseline of runs from two machines is refused.
        assert!(matches!(
            runs_baseline(&[base[0].clone(), other[0].clone()], "t".into()),
            Err(RunsError::Mixed(_))
        ));
        // A deterministic baseline is not a run baseline.
        let mut det = b.clone();
        det.tier = "deterministic".into();
        assert_eq!(
            judge_runs(&det, &base, rule(), vec![]).verdict,
            Verdict::CouldNotJudge
        );
    }
}
