//! How repeatable a repeated step's figures are: for each figure the table shows of a step
//! that ran more than once (the broadcast step under `--repeats`), the median over the valid
//! repeats, the 95 % percentile-bootstrap interval of that median, the coefficient of
//! variation, and which repeats were left out and why — computed here once, for the table's
//! cells, `comparison.json` and the charts.
//!
//! Only valid, not failed repeats that have the figure count. With fewer than
//! [`ROUGH_BELOW`] of them the interval is rough (a median's bootstrap over so few values has
//! few atoms: up to 5 values its 95 % interval is their range) and every cell or chart that
//! shows it says so ([`crate::caveats::Caveat::Rough`]).

use chatbench_model::results::{RunStatus, Summary};
use serde::{Deserialize, Serialize};

use crate::caveats::Caveat;
use crate::comparison::StepResult;
use crate::gate::stats;

/// Fewer valid repeats than this, and the interval is marked rough.
pub const ROUGH_BELOW: usize = 5;

/// The confidence level of the interval.
pub const LEVEL: f64 = 0.95;

/// A figure over a step's repeats (`repeats` of a cell in `comparison.json`), in the unit the
/// cell's value is in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Repeats {
    /// Repeats the step ran, every one (failed and invalid included).
    pub runs: usize,
    /// Repeats the median is of: valid, not failed, with the figure.
    pub used: usize,
    /// Repeats left out as invalid (generator-bound).
    pub invalid: usize,
    /// Repeats left out because the run or the step failed.
    pub failed: usize,
    /// Valid repeats left out because they lack this figure (not sampled, no deliveries).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub without: usize,
    /// Used repeats during which other work shared the server's CPUs ("machine busy").
    #[serde(default, skip_serializing_if = "is_zero")]
    pub busy: usize,
    /// The median of the used repeats' figures (the mean of the two middle ones of an even
    /// count).
    pub median: f64,
    /// The 95 % percentile-bootstrap interval of the median, [low, high]; none with one used
    /// repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<[f64; 2]>,
    /// Coefficient of variation of the used repeats' figures (sample standard deviation /
    /// mean); none with one used repeat or a zero mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<f64>,
    /// Fewer than [`ROUGH_BELOW`] used repeats: the interval is rough.
    pub rough: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The figure `pick` reads, over the repeats `runs` of one step: `None` when the step ran
/// once, or no repeat is usable (the cell then says invalid or failed on its own).
pub fn of(runs: &[StepResult], pick: impl Fn(&Summary) -> Option<f64>) -> Option<Repeats> {
    if runs.len() < 2 {
        return None;
    }
    let (mut invalid, mut failed, mut without, mut busy) = (0, 0, 0, 0);
    let mut values = Vec::new();
    for r in runs {
        match r {
            StepResult::Failed { .. } => failed += 1,
            StepResult::Ran { summary, .. } if summary.status == RunStatus::Failed => failed += 1,
            StepResult::Ran { summary, .. } if !summary.valid => invalid += 1,
            StepResult::Ran { summary, .. } => match pick(summary) {
                Some(v) if v.is_finite() => {
                    values.push(v);
                    busy += usize::from(crate::caveats::busy(summary));
                }
                _ => without += 1,
            },
        }
    }
    // In ascending order: the interval then does not depend on the order the runs are read
    // in (a compare lists them as they ran, a rebuild by folder name).
    values.sort_by(f64::total_cmp);
    let median = stats::median(&values)?;
    let used = values.len();
    let ci95 = (used >= 2)
        .then(|| {
            stats::bootstrap_median(
                &values,
                LEVEL,
                stats::BOOTSTRAP_RESAMPLES,
                stats::BOOTSTRAP_SEED,
            )
        })
        .flatten()
        .map(|(lo, hi)| [lo, hi]);
    Some(Repeats {
        runs: runs.len(),
        used,
        invalid,
        failed,
        without,
        busy,
        median,
        ci95,
        cv: stats::cv(&values),
        rough: used < ROUGH_BELOW,
    })
}

impl Repeats {
    /// The caveats of the figure over its repeats: rough with too few, busy when a used
    /// repeat was.
    pub fn caveats(&self) -> Vec<Caveat> {
        let mut out = Vec::new();
        if self.busy > 0 {
            out.push(Caveat::Busy);
        }
        if self.rough && self.ci95.is_some() {
            out.push(Caveat::Rough);
        }
        out
    }

    /// What the cell says after its figure, with `digits` decimals for the interval:
    /// " (median of 4 of 5 runs; 1 invalid; 95 % CI 1.10–1.40 (rough: fewer than 5 valid
    /// runs); CV 8.1 %)", or " (1 of 3 runs; 2 failed; no spread)".
    pub fn note(&self, digits: usize) -> String {
        let d = digits;
        let mut parts = vec![match (self.used, self.used == self.runs) {
            (1, _) => format!("1 of {} runs", self.runs),
            (n, true) => format!("median of {n} runs"),
            (n, false) => format!("median of {n} of {} runs", self.runs),
        }];
        let left: Vec<String> = [
            (self.invalid, "invalid"),
            (self.failed, "failed"),
            (self.without, "without this figure"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !left.is_empty() {
            parts.push(left.join(", "));
        }
        match self.ci95 {
            Some([lo, hi]) => {
                let rough = if self.rough {
                    format!(" {}", Caveat::Rough.mark())
                } else {
                    String::new()
                };
                parts.push(format!("95 % CI {lo:.d$}–{hi:.d$}{rough}"));
            }
            None => parts.push("no spread".into()),
        }
        if let Some(cv) = self.cv {
            parts.push(format!("CV {:.1} %", cv * 100.0));
        }
        format!(" ({})", parts.join("; "))
    }

    /// What the cell's condition adds: how the figure was made from the repeats.
    pub fn condition(&self) -> String {
        let mut text = format!(
            "repeated step: the median of its {} usable repeat(s) of {}, the {:.0} % percentile-bootstrap interval of that median ({} resamples, fixed seed) and the coefficient of variation; the linked results are the repeat with the median p99",
            self.used,
            self.runs,
            LEVEL * 100.0,
            stats::BOOTSTRAP_RESAMPLES
        );
        if self.busy > 0 {
            text.push_str(&format!(
                "; {} of them shared the server's CPUs with other work (machine busy)",
                self.busy
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The recorded broadcast summary with p99 `p99_us`, changed by `f`.
    fn run(p99_us: u64, f: impl FnOnce(&mut Summary)) -> StepResult {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/broadcast");
        let mut r = StepResult::load(&dir).expect("fixture");
        if let StepResult::Ran { summary, .. } = &mut r {
            if let Some(l) = summary.latency_us.as_mut() {
                l.p99 = p99_us;
            }
            f(summary);
        }
        r
    }

    fn p99_ms(s: &Summary) -> Option<f64> {
        s.latency_us.as_ref().map(|l| l.p99 as f64 / 1000.0)
    }

    fn runs(p99s: &[u64]) -> Vec<StepResult> {
        p99s.iter().map(|&p| run(p, |_| {})).collect()
    }

    #[test]
    fn one_run_has_no_spread() {
        assert_eq!(of(&runs(&[1200]), p99_ms), None);
        // Two runs, one of them invalid: the figure of one run, and what was left out.
        let r = vec![run(1200, |_| {}), run(900, |s| s.valid = false)];
        let rep = of(&r, p99_ms).expect("repeats");
        assert_eq!((rep.used, rep.invalid, rep.median), (1, 1, 1.2));
        assert_eq!((rep.ci95, rep.cv), (None, None));
        assert_eq!(rep.note(3), " (1 of 2 runs; 1 invalid; no spread)");
        assert!(rep.caveats().is_empty(), "no interval, nothing rough");
    }

    #[test]
    fn three_runs_give_a_rough_interval() {
        let rep = of(&runs(&[1100, 1400, 1200]), p99_ms).expect("repeats");
        assert_eq!((rep.runs, rep.used, rep.median), (3, 3, 1.2));
        assert_eq!(rep.ci95, Some([1.1, 1.4]));
        assert!(rep.rough);
        assert_eq!(
            rep.note(3),
            " (median of 3 runs; 95 % CI 1.100–1.400 (rough: fewer than 5 valid runs); CV 12.4 %)"
        );
        assert_eq!(rep.caveats(), vec![Caveat::Rough]);
    }

    #[test]
    fn five_runs_are_not_rough() {
        let rep = of(&runs(&[1100, 1320, 1250, 1180, 1400]), p99_ms).expect("repeats");
        assert_eq!((rep.used, rep.median, rep.rough), (5, 1.25, false));
        assert_eq!(rep.ci95, Some([1.1, 1.4]));
        assert_eq!(
            rep.note(3),
            " (median of 5 runs; 95 % CI 1.100–1.400; CV 9.4 %)"
        );
        assert!(rep.caveats().is_empty());
    }

    #[test]
    fn a_failed_repeat_is_left_out_and_counted() {
        let mut r = runs(&[1100, 1320, 1250, 1180]);
        r.insert(
            2,
            StepResult::Failed {
                reason: "server did not start".into(),
            },
        );
        let rep = of(&r, p99_ms).expect("repeats");
        assert_eq!((rep.runs, rep.used, rep.failed), (5, 4, 1));
        assert_eq!(rep.median, (1.18 + 1.25) / 2.0);
        assert!(rep.rough, "4 valid runs are fewer than 5");
        let note = rep.note(3);
        assert!(
            note.starts_with(" (median of 4 of 5 runs; 1 failed; 95 % CI 1.100–1.320 (rough"),
            "{note}"
        );
        // An invalid one and a busy one: counted apart, the busy one kept and marked.
        let mut r = runs(&[1100, 1320, 1250, 1180, 1400]);
        r.push(run(5000, |s| s.valid = false));
        if let StepResult::Ran { summary, .. } = &mut r[0] {
            summary.target_resources.other_load = serde_json::from_value(serde_json::json!({
                "cpus": [0], "busy_cores": 0.9, "other_cores": 0.5, "steal_cores": 0.0
            }))
            .expect("other load");
        }
        let rep = of(&r, p99_ms).expect("repeats");
        assert_eq!((rep.used, rep.invalid, rep.busy), (5, 1, 1));
        assert!(rep
            .note(3)
            .starts_with(" (median of 5 of 6 runs; 1 invalid; 95 % CI"));
        assert_eq!(rep.caveats(), vec![Caveat::Busy]);
        assert!(rep
            .condition()
            .contains("1 of them shared the server's CPUs"));
    }

    #[test]
    fn the_order_of_the_runs_does_not_change_the_figures() {
        let p99s = [1100, 1320, 1250, 1180, 1400, 1290, 1600];
        let mut reversed = p99s;
        reversed.reverse();
        assert_eq!(of(&runs(&p99s), p99_ms), of(&runs(&reversed), p99_ms));
    }

    #[test]
    fn every_repeat_unusable_gives_none() {
        let r = vec![run(1, |s| s.valid = false), run(2, |s| s.valid = false)];
        assert_eq!(of(&r, p99_ms), None);
    }
}
