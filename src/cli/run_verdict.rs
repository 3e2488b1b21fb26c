//! The verdict of `chatbench run` beyond the run's own status: `--threshold` and the scenario's
//! `[thresholds]` (exit 1 when one is crossed), `--junit`, the nothing-measured floor (exit 3)
//! `--label`, and the Markdown step summary (`--step-summary`, `$GITHUB_STEP_SUMMARY`). `run`
//! calls these around the harness's target start-up.

use std::path::Path;

use anyhow::Context;

use chatbench_loadgen::run::RunReport;
use chatbench_model::results::{RunStatus, Summary, TargetInfo};
use chatbench_model::thresholds;

use super::{UsageError, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_RUN_FAILED, EXIT_THRESHOLD};

/// `--threshold` flags as the `--set thresholds.KEY=…` overrides they stand for (so that they
/// are recorded with the overrides and judged with the scenario's `[thresholds]`).
pub(super) fn threshold_overrides(
    flags: &[String],
    overrides: &mut Vec<String>,
) -> anyhow::Result<()> {
    for t in flags {
        let o = thresholds::flag_as_override(t).map_err(|e| UsageError(e.to_string()))?;
        overrides.push(o);
    }
    Ok(())
}

/// Where the Markdown summary goes: `--step-summary FILE`, else `$GITHUB_STEP_SUMMARY` when set
/// and not empty (GitHub Actions sets it for every step).
pub(super) fn step_summary_path(flag: Option<&Path>) -> Option<std::path::PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("GITHUB_STEP_SUMMARY")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    })
}

/// Appends the run's Markdown summary to `path` in one write (the file is shared by a job's
/// steps: appended to, never replaced).
fn append_step_summary(path: &Path, md: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(md.as_bytes()))
        .with_context(|| format!("appending the step summary to {}", path.display()))
}

/// `--junit FILE` (and `--step-summary FILE`): its folder must exist and be writable before any
/// load is run.
pub(super) fn preflight_file(flag: &str, path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let probe = dir.join(format!(".chatbench-junit-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            UsageError(format!(
                "{flag} {}: cannot write in {}: {e} (create the folder or pick another path)",
                path.display(),
                dir.display()
            ))
        })?;
    Ok(())
}

/// `--label NAME`: 1–64 of letters, digits, `.`, `_`, `-`.
pub(super) fn parse_label(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: a label is 1–64 letters, digits, '.', '_' or '-', e.g. my-chat-staging"
        ))
    }
}

/// The target with its `--label` recorded (the gate matches runs by it).
pub(super) fn with_label(mut info: TargetInfo, label: Option<&str>) -> TargetInfo {
    if let Some(l) = label {
        info.settings.insert(
            chatbench_model::results::TARGET_LABEL_SETTING.to_string(),
            l.to_string(),
        );
    }
    info
}

/// A run that measured nothing meaningful (nothing sent or delivered, every connection closed,
/// the target died: `model::thresholds::nothing_measured`) fails, with or without thresholds:
/// its summary.json is rewritten as failed with the reasons. Returns them.
pub(super) fn fail_if_nothing_measured(report: &mut RunReport) -> anyhow::Result<Vec<String>> {
    let why = thresholds::nothing_measured(&report.summary);
    if why.is_empty() {
        return Ok(why);
    }
    let s = &mut report.summary;
    s.status = RunStatus::Failed;
    s.valid = false;
    s.invalid_reasons.extend(
        why.iter()
            .map(|w| format!("measured nothing meaningful: {w}")),
    );
    let json = serde_json::to_vec_pretty(s).context("encoding summary.json")?;
    chatbench_model::results::write_file_atomic(&report.dir.join("summary.json"), &json)
        .context("rewriting summary.json as failed")?;
    Ok(why)
}

/// Where a run's verdict is written besides the console.
pub(super) struct VerdictOutputs<'a> {
    /// `--junit FILE`.
    pub junit: Option<&'a Path>,
    /// The Markdown summary's file ([`step_summary_path`]).
    pub step_summary: Option<&'a Path>,
}

/// Judges the thresholds (printing them, writing `junit` and the step summary when asked) and
/// returns the exit code of the run: failed 3, interrupted by the signal's code (`signal`, 0:
/// none), invalid 4, a threshold crossed 1, else 0.
pub(super) fn exit_code(
    report: &RunReport,
    floor: &[String],
    out: &VerdictOutputs<'_>,
    signal: u8,
) -> anyhow::Result<u8> {
    let s = &report.summary;
    let judged = judge_thresholds(s, floor, out.junit)?;
    let crossed = judged.iter().any(|j| !j.passed);
    let code = match (s.status, s.valid) {
        (RunStatus::Failed, _) => EXIT_RUN_FAILED,
        (RunStatus::Interrupted, _) => match signal {
            0 => EXIT_INTERRUPTED,
            code => code,
        },
        (_, false) => EXIT_INVALID,
        _ if crossed => EXIT_THRESHOLD,
        _ => 0,
    };
    if let Some(path) = out.step_summary {
        let md = chatbench_report::step_summary::markdown(s, &report.dir, code, &judged, floor);
        append_step_summary(path, &md)?;
    }
    Ok(code)
}

/// Judges the run's thresholds (the scenario's `[thresholds]`, `--threshold` included), prints
/// each with its value against its limit, writes the JUnit file when asked; true when one
/// was crossed.
fn judge_thresholds(
    s: &Summary,
    floor: &[String],
    junit: Option<&Path>,
) -> anyhow::Result<Vec<thresholds::Judged>> {
    let limits = thresholds::of_summary(s).context("reading the run's thresholds")?;
    let judged = thresholds::judge(s, &limits);
    if !judged.is_empty() {
        println!("thresholds");
        for j in &judged {
            println!("  {}", j.line());
        }
    }
    for w in floor {
        eprintln!("FAILED: measured nothing meaningful: {w}");
    }
    if let Some(path) = junit {
        let failed_run = match (s.status, floor.first()) {
            (_, Some(w)) => Some(format!("measured nothing meaningful: {w}")),
            (RunStatus::Failed, None) => Some(
                s.invalid_reasons
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "the run failed".into()),
            ),
            _ => None,
        };
        let xml = thresholds::junit(&s.scenario.name, &judged, failed_run.as_deref());
        chatbench_model::results::write_file_atomic(path, xml.as_bytes())
            .with_context(|| format!("writing the JUnit report {}", path.display()))?;
    }
    Ok(judged)
}
