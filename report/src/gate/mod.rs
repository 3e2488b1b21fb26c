//! The regression gate's judgement, free of I/O beyond reading and writing files: per-metric
//! rules, verdicts, the report (plain table, Markdown, JSON) and the baseline files.
//!
//! - [`judge_deterministic`]: a deterministic metric (instruction or allocation count) against
//!   its baseline with a relative threshold.
//! - [`judge_statistical`]: several metrics of repeated runs, baseline against candidate, with
//!   the Mann–Whitney U test, Holm's correction over the metrics and a minimum effect size; an
//!   A/A comparison of the baseline with itself that fails turns every verdict into
//!   "could not judge".
//! - [`runs`]: metrics of `chatbench run` results (summary.json) against a baseline of runs.
//! - [`stats`]: the statistics; [`baseline`]: the baseline files and machine fingerprint.
//!
//! Exit codes (see [`Verdict::exit_code`]): 0 pass, 1 regression, 2 could not judge.

pub mod baseline;
pub mod runs;
pub mod stats;

use std::fmt::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Why a gate file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("{path}: not a gate baseline file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The file has another schema.
    #[error("{path}: schema {found:?}, expected {expected:?}: regenerate it with --update-baseline", expected = baseline::SCHEMA)]
    Schema {
        /// The file.
        path: PathBuf,
        /// The schema found.
        found: String,
    },
    /// The file could not be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The verdict on one metric, or on a whole gate run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the rule.
    Pass,
    /// Better than the baseline by more than the threshold (passes; consider updating the
    /// baseline so the gain is kept).
    Improved,
    /// Worse than the rule allows.
    Regression,
    /// Missing metric, unfair comparison (other machine), too few samples, or a failed A/A
    /// check.
    CouldNotJudge,
}

impl Verdict {
    /// How it is shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Improved => "improved",
            Verdict::Regression => "REGRESSION",
            Verdict::CouldNotJudge => "could not judge",
        }
    }

    /// 0 pass (or improved), 1 regression, 2 could not judge.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass | Verdict::Improved => 0,
            Verdict::Regression => 1,
            Verdict::CouldNotJudge => 2,
        }
    }

    /// The verdict of several: any regression is a regression (a missing metric elsewhere does
    /// not make a measured regression less real); otherwise any "could not judge" wins.
    pub fn combine(vs: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut out = Verdict::Pass;
        for v in vs {
            out = match (out, v) {
                (Verdict::Regression, _) | (_, Verdict::Regression) => Verdict::Regression,
                (Verdict::CouldNotJudge, _) | (_, Verdict::CouldNotJudge) => Verdict::CouldNotJudge,
                (Verdict::Improved, _) | (_, Verdict::Improved) => Verdict::Improved,
                _ => Verdict::Pass,
            };
        }
        out
    }
}

/// Whether smaller or larger values are better: the figure catalogue's own.
pub use chatbench_model::figures::Better;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Metric name, e.g. `fanout.epoll.instructions_per_delivery`.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Baseline value (median for the statistical tier).
    pub baseline: Option<f64>,
    /// Current value (median for the statistical tier).
    pub current: Option<f64>,
    /// (current − baseline) / baseline × 100.
    pub change_pct: Option<f64>,
    /// The rule applied, in words.
    pub rule: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why (p-values, what is missing …).
    pub detail: String,
    /// A run that failed ([`Row::failed_run`]): a regression no machine noise or mismatch can
    /// explain away, so "could not judge" never overrides it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_run: bool,
}

impl Row {
    /// The regression row of a run that failed (measured nothing meaningful): `metric` names
    /// the run, `detail` says why it failed. Every tier that takes runs judges one this way.
    pub fn failed_run(metric: String, detail: String) -> Row {
        Row {
            metric,
            unit: String::new(),
            baseline: None,
            current: None,
            change_pct: None,
            rule: "the run measured something".into(),
            verdict: Verdict::Regression,
            detail,
            failed_run: true,
        }
    }
}

/// A gate run's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// `deterministic` or `statistical`.
    pub tier: String,
    /// The combined verdict ([`Verdict::combine`]), after `notes` that force "could not
    /// judge" (a fingerprint mismatch, a failed A/A check).
    pub verdict: Verdict,
    /// One row per metric.
    pub rows: Vec<Row>,
    /// Facts the reader needs: baseline commit and machine, mismatches, the A/A outcome.
    pub notes: Vec<String>,
}

impl GateReport {
    /// A report whose verdict combines the rows' verdicts, or is "could not judge" when
    /// `cannot_judge` is set (then every row says so too), unless a run failed: a failed run
    /// is a regression whatever the machine's noise, so its row and the verdict stay one.
    pub fn new(tier: &str, mut rows: Vec<Row>, notes: Vec<String>, cannot_judge: bool) -> Self {
        let failed = rows.iter().any(|r| r.failed_run);
        if cannot_judge {
            for r in rows.iter_mut().filter(|r| !r.failed_run) {
                if r.verdict != Verdict::CouldNotJudge {
                    r.detail = format!("{} (measured {}; see notes)", r.detail, r.verdict.as_str())
                        .trim_start()
                        .to_string();
                    r.verdict = Verdict::CouldNotJudge;
                }
            }
        }
        let verdict = if failed {
            Verdict::Regression
        } else if cannot_judge || rows.is_empty() {
            Verdict::CouldNotJudge
        } else {
            Verdict::combine(rows.iter().map(|r| r.verdict))
        };
        GateReport {
            tier: tier.to_string(),
            verdict,
            rows,
            notes,
        }
    }

    fn cells(r: &Row) -> [String; 6] {
        [
            r.metric.clone(),
            fmt_value(r.baseline, &r.unit),
            fmt_value(r.current, &r.unit),
            r.change_pct
                .map(|c| format!("{c:+.2} %"))
                .unwrap_or_else(|| "—".into()),
            r.rule.clone(),
            r.verdict.as_str().to_string(),
        ]
    }

    /// The plain-text table for a terminal, then details and notes.
    pub fn table(&self) -> String {
        let head = ["metric", "baseline", "current", "change", "rule", "verdict"];
        let rows: Vec<[String; 6]> = self.rows.iter().map(Self::cells).collect();
        let mut w = head.map(|h| h.chars().count());
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = w[i] - c.chars().count();
                if i == 0 || i == 4 || i == 5 {
                    let _ = write!(s, "{c}{}  ", " ".repeat(pad));
                } else {
                    let _ = write!(s, "{}{c}  ", " ".repeat(pad));
                }
            }
            s.trim_end().to_string()
        };
        let _ = writeln!(out, "{}", line(&head.map(String::from)));
        for r in &rows {
            let _ = writeln!(out, "{}", line(r));
        }
        for r in self.rows.iter().filter(|r| !r.detail.is_empty()) {
            let _ = writeln!(out, "  {}: {}", r.metric, r.detail);
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(
            out,
            "verdict ({} tier): {} (exit {})",
            self.tier,
            self.verdict.as_str(),
            self.verdict.exit_code()
        );
        out
    }

    /// The Markdown form, for a CI comment.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## chatbench gate ({} tier): {}\n",
            self.tier,
            self.verdict.as_str()
        );
        let _ = writeln!(
            out,
            "| metric | baseline | current | change | rule | verdict |\n|---|---:|---:|---:|---|---|"
        );
        for r in &self.rows {
            let c = Self::cells(r);
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                c[0],
                c[1],
                c[2],
                c[3],
                c[4].replace('|', "\\|"),
                c[5]
            );
        }
        let details: Vec<&Row> = self.rows.iter().filter(|r| !r.detail.is_empty()).collect();
        if !details.is_empty() {
            out.push('\n');
            for r in details {
                let _ = writeln!(out, "- `{}`: {}", r.metric, r.detail);
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

fn fmt_value(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "missing".into(),
        Some(v) if v.abs() >= 100.0 || v == v.trunc() => format!("{v:.0} {unit}"),
        Some(v) => format!("{v:.3} {unit}"),
    }
}

fn change_pct(base: f64, cur: f64) -> Option<f64> {
    (base != 0.0).then(|| (cur - base) / base * 100.0)
}

/// Judges one deterministic metric (lower is better): a regression when `current` exceeds
/// `baseline` by more than `max_increase_pct` percent, "improved" when it is lower by more
/// than that, "could not judge" when either is missing. A baseline of 0 allows nothing.
pub fn judge_deterministic(
    metric: &str,
    unit: &str,
    baseline: Option<f64>,
    current: Option<f64>,
    max_increase_pct: f64,
) -> Row {
    let rule = format!("≤ {max_increase_pct:+} %");
    let (verdict, detail) = match (baseline, current) {
        (None, _) => (
            Verdict::CouldNotJudge,
            "not in the baseline: run with --update-baseline".to_string(),
        ),
        (_, None) => (
            Verdict::CouldNotJudge,
            "not measured by this run".to_string(),
        ),
        (Some(b), Some(c)) => {
            let limit = b * (1.0 + max_increase_pct / 100.0);
            let floor = b * (1.0 - max_increase_pct / 100.0);
            if c > limit {
                (Verdict::Regression, String::new())
            } else if c < floor {
                (Verdict::Improved, String::new())
            } else {
                (Verdict::Pass, String::new())
            }
        }
    };
    Row {
        metric: metric.to_string(),
        unit: unit.to_string(),
        baseline,
        current,
        change_pct: baseline.zip(current).and_then(|(b, c)| change_pct(b, c)),
        rule,
        verdict,
        detail,
        failed_run: false,
    }
}

/// Why a row whose current value fell to 0 is a regression.
const COLLAPSED: &str =
    "fell to 0 (−100 %): nothing was measured; a broken build is a regression whatever the test";

/// A figure the baseline has (non-zero) and the current runs have at 0: −100 %, never "pass".
fn collapsed(baseline: Option<f64>, current: Option<f64>) -> bool {
    matches!((baseline, current), (Some(b), Some(c)) if b != 0.0 && c == 0.0)
}

/// Why `nb` + `nc` observations cannot be judged, and how many would do.
pub fn too_few(nb: usize, nc: usize, rule: StatRule, metrics: usize) -> String {
    let min_p = stats::mann_whitney_min_p(nb, nc);
    let each = stats::min_runs_each(rule.alpha, metrics).max(rule.min_samples);
    let against = stats::min_runs_against(nb, rule.alpha, metrics)
        .map(|n| n.max(rule.min_samples))
        .map(|n| format!("at least {n} current runs against these {nb} baseline runs, or "))
        .unwrap_or_default();
    format!(
        "too few samples: {nb} baseline + {nc} current runs cannot reach significance (the smallest possible p is {min_p:.4}, × {metrics} figures for Holm, against α = {}): give {against}{each} on each side",
        rule.alpha
    )
}

/// The statistical tier's rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatRule {
    /// Family-wise significance level over all metrics (Holm).
    pub alpha: f64,
    /// Smallest change of the median, percent, that counts.
    pub min_effect_pct: f64,
    /// Fewest observations per side.
    pub min_samples: usize,
}

impl Default for StatRule {
    fn default() -> Self {
        StatRule {
            alpha: 0.05,
            min_effect_pct: 10.0,
            min_samples: 3,
        }
    }
}

/// One metric's observations for the statistical tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// Baseline observations (one per run).
    pub baseline: Vec<f64>,
    /// Candidate observations (one per run).
    pub current: Vec<f64>,
    /// The same observations paired by round, (baseline, candidate), when the runs were
    /// interleaved in rounds (the baseline's value of a round: the geometric mean of its
    /// baseline runs). Empty when the two sides did not run side by side.
    pub rounds: Vec<(f64, f64)>,
}

/// Fewest complete rounds for the paired test: with fewer, the signed-rank test's smallest
/// two-sided p (2/2ⁿ; 2/256 = 0.0078 at 8) leaves too little room under Holm over three
/// metrics (× 3 = 0.023 < 0.05), and Mann–Whitney over the unpaired runs is used instead.
pub const PAIRED_MIN_ROUNDS: usize = 8;

/// Which test judged a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Test {
    /// Wilcoxon signed-rank over the per-round log ratios.
    Paired { p: f64, rounds: usize },
    /// Mann–Whitney U over the two sides' runs.
    Unpaired { p: f64 },
}

impl Test {
    fn p(self) -> f64 {
        match self {
            Test::Paired { p, .. } | Test::Unpaired { p } => p,
        }
    }
}

/// The paired estimate of the change, percent: the median over rounds of candidate/baseline.
fn paired_change_pct(rounds: &[(f64, f64)]) -> Option<f64> {
    let logs: Vec<f64> = rounds
        .iter()
        .filter(|(b, c)| *b > 0.0 && *c > 0.0)
        .map(|(b, c)| (c / b).ln())
        .collect();
    stats::median(&logs).map(|m| (m.exp() - 1.0) * 100.0)
}

/// Judges several metrics of repeated runs. Each metric gets a two-sided p-value: with at
/// least [`PAIRED_MIN_ROUNDS`] rounds, the Wilcoxon signed-rank test of the per-round log
/// ratios candidate/baseline (each round's machine state cancels out) and the change is the
/// median of those ratios; otherwise the Mann–Whitney U test of the two sides' runs and the
/// change of the medians. The p-values are adjusted with Holm over the metrics; a regression
/// only when the adjusted p is below `alpha` *and* the change is the wrong way by more than
/// `min_effect_pct`. A metric with fewer than `min_samples` observations on a side cannot be
/// judged.
pub fn judge_statistical(metrics: &[Samples], rule: StatRule) -> Vec<Row> {
    let tests: Vec<Option<Test>> = metrics
        .iter()
        .map(|m| {
            if m.rounds.len() >= PAIRED_MIN_ROUNDS {
                let logs: Vec<f64> = m
                    .rounds
                    .iter()
                    .filter(|(b, c)| *b > 0.0 && *c > 0.0)
                    .map(|(b, c)| (c / b).ln())
                    .collect();
                if logs.len() >= PAIRED_MIN_ROUNDS {
                    // All rounds equal: nothing moved.
                    return Some(stats::signed_rank(&logs).map_or(
                        Test::Paired {
                            p: 1.0,
                            rounds: logs.len(),
                        },
                        |t| Test::Paired {
                            p: t.p,
                            rounds: logs.len(),
                        },
                    ));
                }
            }
            let (nb, nc) = (m.baseline.len(), m.current.len());
            if nb < rule.min_samples
                || nc < rule.min_samples
                || !stats::can_reach(nb, nc, rule.alpha, metrics.len())
            {
                None
            } else {
                stats::mann_whitney(&m.baseline, &m.current).map(|t| Test::Unpaired { p: t.p })
            }
        })
        .collect();
    let judged: Vec<usize> = (0..metrics.len()).filter(|&i| tests[i].is_some()).collect();
    let raw: Vec<f64> = judged
        .iter()
        .filter_map(|&i| tests[i].map(Test::p))
        .collect();
    let adjusted = stats::holm(&raw);
    let rule_text = format!(
        "Holm p < {} and |Δ median| > {} %",
        rule.alpha, rule.min_effect_pct
    );
    metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (b, c) = (stats::median(&m.baseline), stats::median(&m.current));
            let change = match tests[i] {
                Some(Test::Paired { .. }) => paired_change_pct(&m.rounds),
                _ => b.zip(c).and_then(|(b, c)| change_pct(b, c)),
            };
            let (verdict, detail) = match judged.iter().position(|&j| j == i) {
                _ if collapsed(b, c) => (Verdict::Regression, COLLAPSED.to_string()),
                None => (
                    Verdict::CouldNotJudge,
                    too_few(m.baseline.len(), m.current.len(), rule, metrics.len()),
                ),
                Some(k) => {
                    let p = adjusted[k];
                    let worse = match (change, m.better) {
                        (Some(ch), Better::Lower) => ch,
                        (Some(ch), Better::Higher) => -ch,
                        (None, _) => 0.0,
                    };
                    let v = if p < rule.alpha && worse > rule.min_effect_pct {
                        Verdict::Regression
                    } else if p < rule.alpha && -worse > rule.min_effect_pct {
                        Verdict::Improved
                    } else {
                        Verdict::Pass
                    };
                    let how = match tests[i] {
                        Some(Test::Paired { rounds, .. }) => {
                            format!("signed-rank over {rounds} rounds (change: median round ratio)")
                        }
                        _ => "Mann–Whitney (change: of the medians)".to_string(),
                    };
                    (
                        v,
                        format!(
                            "p = {:.4} (Holm {:.4}), n = {} + {}, {how}",
                            raw[k],
                            p,
                            m.baseline.len(),
                            m.current.len()
                        ),
                    )
                }
            };
            Row {
                metric: m.metric.clone(),
                unit: m.unit.clone(),
                baseline: b,
                current: c,
                change_pct: change,
                rule: rule_text.clone(),
                verdict,
                detail,
                failed_run: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_row_is_a_regression_without_figures_and_outweighs_passes() {
        let failed = Row::failed_run("run r1".into(), "the run failed: no deliveries".into());
        assert_eq!(failed.verdict, Verdict::Regression);
        assert_eq!((failed.baseline, failed.current), (None, None));
        assert_eq!(failed.detail, "the run failed: no deliveries");
        let pass = judge_deterministic("m", "Ir", Some(1000.0), Some(1000.0), 2.0);
        assert_eq!(pass.verdict, Verdict::Pass);
        let report = GateReport::new("runs", vec![pass, failed], vec![], false);
        assert_eq!(report.verdict, Verdict::Regression, "{}", report.table());
    }

    #[test]
    fn deterministic_thresholds() {
        let r = judge_deterministic("m", "Ir", Some(1000.0), Some(1019.0), 2.0);
        assert_eq!(r.verdict, Verdict::Pass);
        assert!((r.change_pct.unwrap() - 1.9).abs() < 1e-9);
        let r = judge_deterministic("m", "Ir", Some(1000.0), Some(1021.0), 2.0);
        assert_eq!(r.verdict, Verdict::Regression);
        let r = judge_deterministic("m", "Ir", Some(1000.0), Some(970.0), 2.0);
        assert_eq!(r.verdict, Verdict::Improved);
        let r = judge_deterministic("m", "allocs", Some(0.0), Some(0.5), 1.0);
        assert_eq!(r.verdict, Verdict::Regression);
        assert_eq!(r.change_pct, None);
        let r = judge_deterministic("m", "Ir", None, Some(1.0), 2.0);
        assert_eq!(r.verdict, Verdict::CouldNotJudge);
        assert!(r.detail.contains("--update-baseline"));
        let r = judge_deterministic("m", "Ir", Some(1.0), None, 2.0);
        assert_eq!(r.verdict, Verdict::CouldNotJudge);
    }

    /// A failed run is a regression even when the machine could not be judged (a failed A/A
    /// check, another machine): the other rows say "could not judge", the failed one does not.
    #[test]
    fn a_failed_run_stays_a_regression_when_the_rest_cannot_be_judged() {
        let rows = vec![
            judge_deterministic("m", "Ir", Some(1.0), Some(1.0), 2.0),
            Row::failed_run("x.run".into(), "the server exited".into()),
        ];
        let r = GateReport::new("statistical", rows, vec!["A/A check failed".into()], true);
        assert_eq!(r.verdict, Verdict::Regression);
        assert_eq!(r.rows[0].verdict, Verdict::CouldNotJudge);
        assert_eq!(r.rows[1].verdict, Verdict::Regression);
        assert_eq!(r.rows[1].detail, "the server exited");
        let json = serde_json::to_string(&r.rows[1]).expect("serialises");
        let back: Row = serde_json::from_str(&json).expect("parses");
        assert!(back.failed_run);
    }

    #[test]
    fn verdicts_combine_and_map_to_exit_codes() {
        use Verdict::*;
        assert_eq!(Verdict::combine([Pass, Improved]), Improved);
        assert_eq!(
            Verdict::combine([Pass, CouldNotJudge, Improved]),
            CouldNotJudge
        );
        assert_eq!(Verdict::combine([CouldNotJudge, Regression]), Regression);
        assert_eq!(Regression.exit_code(), 1);
        assert_eq!(CouldNotJudge.exit_code(), 2);
        assert_eq!(Improved.exit_code(), 0);
        let rows = vec![judge_deterministic("m", "Ir", Some(1.0), Some(2.0), 2.0)];
        let r = GateReport::new(
            "deterministic",
            rows.clone(),
            vec!["other machine".into()],
            true,
        );
        assert_eq!(r.verdict, CouldNotJudge);
        assert_eq!(r.rows[0].verdict, CouldNotJudge);
        assert!(r.rows[0].detail.contains("measured REGRESSION"));
        assert_eq!(
            GateReport::new("d", rows, vec![], false).verdict,
            Regression
        );
        assert_eq!(
            GateReport::new("d", vec![], vec![], false).verdict,
            CouldNotJudge
        );
    }

    fn samples(base: &[f64], cur: &[f64], better: Better) -> Samples {
        Samples {
            rounds: Vec::new(),
            metric: "x".into(),
            unit: "µs".into(),
            better,
            baseline: base.to_vec(),
            current: cur.to_vec(),
        }
    }

    #[test]
    fn paired_rounds_cancel_the_machine_state_of_each_round() {
        // The machine's state moves each round's level by up to ×2; the candidate costs +20 %
        // in every round (with a little noise). Unpaired, the runs overlap: no verdict.
        let levels = [10.0, 14.0, 11.0, 19.0, 12.0, 16.0, 10.5, 18.0, 13.0, 15.0];
        let noise = [1.01, 0.99, 1.02, 0.98, 1.0, 1.03, 0.97, 1.01, 0.99, 1.02];
        let base: Vec<f64> = levels.to_vec();
        let cur: Vec<f64> = levels.iter().zip(noise).map(|(l, n)| l * 1.2 * n).collect();
        let mut m = samples(&base, &cur, Better::Lower);
        let rows = judge_statistical(std::slice::from_ref(&m), StatRule::default());
        assert_eq!(rows[0].verdict, Verdict::Pass, "unpaired: {rows:?}");
        assert!(rows[0].detail.contains("Mann–Whitney"), "{rows:?}");
        m.rounds = base.iter().copied().zip(cur.iter().copied()).collect();
        let rows = judge_statistical(&[m.clone(), m.clone(), m.clone()], StatRule::default());
        for r in &rows {
            assert_eq!(r.verdict, Verdict::Regression, "paired: {r:?}");
            assert!(r.detail.contains("signed-rank over 10 rounds"), "{r:?}");
            let ch = r.change_pct.expect("change");
            assert!((ch - 20.0).abs() < 1.5, "median round ratio {ch}");
        }
        // The same rounds with no real change (ratios scattered around 1): pass.
        m.rounds = base
            .iter()
            .zip(noise)
            .map(|(b, n)| (*b, b * (2.0 - n)))
            .collect();
        let rows = judge_statistical(&[m.clone()], StatRule::default());
        assert_eq!(rows[0].verdict, Verdict::Pass, "{rows:?}");
        // Fewer rounds than the paired test needs: back to Mann–Whitney.
        m.rounds.truncate(PAIRED_MIN_ROUNDS - 1);
        let rows = judge_statistical(&[m], StatRule::default());
        assert!(rows[0].detail.contains("Mann–Whitney"), "{rows:?}");
    }

    #[test]
    fn statistical_needs_significance_and_effect() {
        let base = [100.0, 101.0, 99.0, 100.5, 99.5];
        // +30 %, completely separated: p = 2/252 → regression.
        let worse = [130.0, 131.0, 129.0, 130.5, 129.5];
        let rows = judge_statistical(
            &[samples(&base, &worse, Better::Lower)],
            StatRule::default(),
        );
        assert_eq!(rows[0].verdict, Verdict::Regression, "{rows:?}");
        // Same data where higher is better: an improvement.
        let rows = judge_statistical(
            &[samples(&base, &worse, Better::Higher)],
            StatRule::default(),
        );
        assert_eq!(rows[0].verdict, Verdict::Improved);
        // +3 %, separated (significant) but below the minimum effect: pass.
        let small = [103.0, 104.0, 102.0, 103.5, 102.5];
        let rows = judge_statistical(
            &[samples(&base, &small, Better::Lower)],
            StatRule::default(),
        );
        assert_eq!(rows[0].verdict, Verdict::Pass);
        // +30 % in the median but overlapping: not significant, pass.
        let noisy = [60.0, 200.0, 95.0, 130.0, 140.0];
        let rows = judge_statistical(
            &[samples(&base, &noisy, Better::Lower)],
            StatRule::default(),
        );
        assert_eq!(rows[0].verdict, Verdict::Pass, "{rows:?}");
        // Too few runs.
        let rows = judge_statistical(
            &[samples(&base[..2], &worse, Better::Lower)],
            StatRule::default(),
        );
        assert_eq!(rows[0].verdict, Verdict::CouldNotJudge);
    }

    #[test]
    fn holm_correction_applies_across_metrics() {
        // 4 v 4 fully separated: exact p = 2/70 = 0.0286 < 0.05 alone, but with three metrics
        // Holm multiplies the smallest by 3: 0.086, not significant.
        let base = [100.0, 101.0, 99.0, 100.5];
        let worse = [130.0, 131.0, 129.0, 130.5];
        let one = judge_statistical(
            &[samples(&base, &worse, Better::Lower)],
            StatRule::default(),
        );
        assert_eq!(one[0].verdict, Verdict::Regression);
        let three: Vec<Samples> = (0..3)
            .map(|_| samples(&base, &worse, Better::Lower))
            .collect();
        let rows = judge_statistical(&three, StatRule::default());
        // … so 4 + 4 cannot reach significance at all: refused, saying how many would.
        assert!(
            rows.iter().all(|r| r.verdict == Verdict::CouldNotJudge
                && r.detail.contains("cannot reach significance")
                && r.detail.contains("5 on each side")),
            "{rows:?}"
        );
    }

    #[test]
    fn table_and_markdown_show_every_row() {
        let rows = vec![
            judge_deterministic("a.instr", "Ir", Some(1000.0), Some(1100.0), 2.0),
            judge_deterministic("b.allocs", "allocs", Some(1.0), None, 1.0),
        ];
        let r = GateReport::new("deterministic", rows, vec!["baseline abc".into()], false);
        let t = r.table();
        assert!(t.contains("a.instr") && t.contains("+10.00 %") && t.contains("REGRESSION"));
        assert!(t.contains("missing") && t.contains("exit 1"), "{t}");
        let md = r.markdown();
        assert!(md.contains("| `a.instr` |") && md.contains("- baseline abc"));
        let json = serde_json::to_string(&r).unwrap();
        let back: GateReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
