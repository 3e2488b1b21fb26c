//! `chatbench gate --baseline FILE --current RUN…`: judges existing `chatbench run` results
//! (their summary.json) against a baseline of run metrics, or with `--update-baseline` writes
//! that baseline from runs. The judgement is `chatbench_report::gate::runs`; this module reads
//! the arguments, leaves out runs that cannot be used (named in the notes), prints the table
//! and writes `gate-runs.md` and `gate-runs.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use chatbench_model::provenance::now_rfc3339;
use chatbench_model::thresholds::{parse_flag, Threshold};
use chatbench_report::gate::baseline::Baseline;
use chatbench_report::gate::runs::{
    find_summaries, judge_runs, read_run_with, runs_baseline, RunObservation, RunsError, RunsRule,
};
use chatbench_report::gate::StatRule;

use super::GateError;

/// What `chatbench gate --baseline … --current …` is asked to do (the binary's flags document
/// each field).
#[derive(Debug, Clone)]
pub struct RunsOptions {
    /// Baseline file of run metrics (p99 latency, deliveries/s, CPU-µs per delivery, the
    /// machine fingerprint): compared against, or written with --update-baseline.
    pub baseline: Option<PathBuf>,
    /// Current runs: run folders (results/runs/<id>/), their summary.json, or folders of run
    /// folders. Several give the significance test its samples.
    pub current: Vec<PathBuf>,
    /// Write --baseline from the --current runs instead of comparing.
    pub update_baseline: bool,
    /// Judge runs from a machine whose fingerprint differs from the baseline's.
    pub allow_other_machine: bool,
    /// Family-wise significance level (Holm over the metrics).
    pub alpha: f64,
    /// Smallest change of a median that counts, percent.
    pub min_effect: f64,
    /// Absolute limits every current run must meet, as `run --threshold` (KEY<=VALUE on a
    /// figure of docs/figures.md); judged as a row per run beside the runs' own recorded
    /// thresholds; crossed is a regression.
    pub thresholds: Vec<String>,
    /// Compare medians against a fixed threshold (percent) WITHOUT a significance test, e.g. for
    /// single runs; every row says so. Default: a significance test, refused ("could not
    /// judge", naming how many runs are needed) with fewer runs than can reach significance.
    pub fixed_threshold: Option<f64>,
    /// Folder for gate-runs.md and gate-runs.json.
    pub out: PathBuf,
}

/// Every usable run the arguments name; the ones left out are described in `notes`.
fn read_runs(
    paths: &[PathBuf],
    extra: &[Threshold],
    notes: &mut Vec<String>,
) -> Result<Vec<RunObservation>, GateError> {
    let mut runs = Vec::new();
    for p in paths {
        for f in find_summaries(p)? {
            match read_run_with(&f, extra) {
                Ok(o) => runs.push(o),
                Err(e @ RunsError::Invalid { .. }) => notes.push(format!("left out: {e}")),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(runs)
}

/// Judges existing runs against a baseline of runs (or writes it).
pub fn runs(args: RunsOptions) -> Result<ExitCode, GateError> {
    let Some(baseline_path) = args.baseline.clone() else {
        return Err(GateError::NoBaseline);
    };
    if args.current.is_empty() {
        return Err(GateError::NoCurrent);
    }
    if let Some(t) = args.fixed_threshold {
        if !(t.is_finite() && t >= 0.0) {
            return Err(GateError::FixedThreshold(t));
        }
    }
    let alpha_ok = args.alpha > 0.0 && args.alpha < 1.0;
    let effect_ok = args.min_effect.is_finite() && args.min_effect >= 0.0;
    if !alpha_ok || !effect_ok {
        return Err(GateError::AlphaOrEffect);
    }
    let extra = args
        .thresholds
        .iter()
        .map(|t| parse_flag(t))
        .collect::<Result<Vec<Threshold>, _>>()?;
    let mut notes = Vec::new();
    let current = read_runs(&args.current, &extra, &mut notes)?;
    if args.update_baseline {
        let b = runs_baseline(&current, now_rfc3339())?;
        b.save(&baseline_path).map_err(GateError::SaveBaseline)?;
        for (k, m) in &b.metrics {
            let cv = chatbench_report::gate::stats::cv(&m.samples).map(|c| c * 100.0);
            println!(
                "{k:<24} median {:>12.2} {}  ({} runs, cv {})",
                m.value,
                m.unit,
                m.samples.len(),
                cv.map(|c| format!("{c:.1} %"))
                    .unwrap_or_else(|| "—".into())
            );
        }
        for n in &notes {
            println!("note: {n}");
        }
        println!(
            "baseline written: {} ({} runs on {})",
            baseline_path.display(),
            current.len(),
            b.fingerprint.describe()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let baseline = Baseline::load(&baseline_path).map_err(|source| GateError::Baseline {
        source,
        how: "chatbench gate --update-baseline --baseline FILE --current RUN…",
    })?;
    let rule = RunsRule {
        stat: StatRule {
            alpha: args.alpha,
            min_effect_pct: args.min_effect,
            min_samples: 3,
        },
        fixed_threshold_pct: args.fixed_threshold,
        allow_other_machine: args.allow_other_machine,
    };
    let report = judge_runs(&baseline, &current, rule, notes);
    super::write_report(&report, &args.out, "gate-runs")?;
    print!("{}", report.table());
    Ok(ExitCode::from(report.verdict.exit_code()))
}
