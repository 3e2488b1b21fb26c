//! `chatbench report DIR`: rebuilds a comparison's table and charts from its results files
//! alone; on a run folder, draws that run's timeline charts and its report.html
//! (`chatbench_report::run_page`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use std::path::Path;

use chatbench_report::comparison::{load, StepResult};
use chatbench_report::diff::{diff_comparisons, diff_runs};

use super::UsageError;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A comparison folder written by `chatbench compare` (it holds runs/ and comparison.json),
    /// or a run folder (it holds summary.json): its timeline charts (charts/) and report.html.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// A second folder of the same kind: print the two side by side (A → B, with the change),
    /// e.g. the same suite on two commits. Nothing is written.
    #[arg(value_name = "OTHER")]
    other: Option<PathBuf>,
    /// A claims file (docs/claims.md) to judge against the comparison; without it, the
    /// folder's claims.toml (the copy of the file it was judged from), else the shipped
    /// claims/elixir-vs-node.toml when the comparison has one of its columns.
    #[arg(long, value_name = "FILE", conflicts_with = "other")]
    claims: Option<PathBuf>,
    /// Write the rebuilt comparison.md/json, report.html and charts/ into this new folder
    /// instead of DIR (it must not exist, or be empty). Without it, `report` rewrites DIR only
    /// when git tracks none of its files and every run has its timeseries.csv.
    #[arg(long, value_name = "NEW", conflicts_with = "other")]
    out: Option<PathBuf>,
}

pub fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    for dir in std::iter::once(&args.dir).chain(args.other.as_ref()) {
        if !dir.is_dir() {
            return Err(UsageError(format!(
                "{}: no such folder; give a comparison folder written by `chatbench compare` (or two run folders to compare)",
                dir.display()
            ))
            .into());
        }
    }
    if let Some(other) = &args.other {
        return side_by_side(&args.dir, other);
    }
    if args.dir.join("summary.json").is_file() && !args.dir.join("runs").is_dir() {
        if args.claims.is_some() {
            return Err(UsageError(format!(
                "--claims judges a comparison, and {} is a run folder: give the comparison folder written by `chatbench compare`",
                args.dir.display()
            ))
            .into());
        }
        return run_page(&args.dir);
    }
    let claims = read_claims(args.claims.as_deref())?;
    let out = target_of(&args.dir, args.out.as_deref())?;
    let prefix = match &args.out {
        Some(_) => Some(
            chatbench_report::outputs::relative(&out, &args.dir)
                .map_err(|e| UsageError(format!("{}: {e}", args.dir.display())))?,
        ),
        None => None,
    };
    let rebuilt = chatbench_report::outputs::rebuild(
        &args.dir,
        &out,
        prefix.as_deref(),
        claims.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
        chatbench_harness::compare::column_doc,
    )
    .map_err(|e| {
        if args.out.is_some() {
            // Nothing was drawn yet (the runs are read first): leave no empty folder behind.
            let _ = std::fs::remove_dir(&out);
        }
        UsageError(format!("{}: {e}", args.dir.display()))
    })?;
    chatbench_report::outputs::write(&out, &rebuilt.outputs)?;
    print!("{}", chatbench_report::page::terminal(&rebuilt.comparison));
    if let Some(used) = &rebuilt.claims_used {
        eprintln!("report: {used}");
    }
    for w in &rebuilt.warnings {
        eprintln!("report: {w}");
    }
    for s in &rebuilt.drawn.skipped {
        eprintln!("report: chart not drawn: {s}");
    }
    println!(
        "{} chart files in {}; report: {}",
        rebuilt.drawn.files.len(),
        out.join("charts").display(),
        out.join("report.html").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Where `report DIR` writes: the new folder `--out` names (created; it must not exist or be
/// empty), or DIR itself when nothing there would be lost — git tracks none of its files (a
/// committed baseline is never rewritten) and every run has the timeseries.csv its timeline
/// needs. Otherwise a usage error that says why and names `--out`.
fn target_of(dir: &Path, out: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(out) = out {
        let empty = std::fs::read_dir(out).map(|mut d| d.next().is_none());
        match empty {
            Ok(false) => {
                return Err(UsageError(format!(
                    "--out {}: the folder exists and is not empty; give a new folder",
                    out.display()
                ))
                .into())
            }
            Ok(true) => {}
            Err(_) => std::fs::create_dir_all(out).map_err(|e| {
                UsageError(format!("--out {}: cannot create it: {e}", out.display()))
            })?,
        }
        return Ok(out.to_path_buf());
    }
    let tracked = tracked_files(dir);
    if !tracked.is_empty() {
        return Err(UsageError(format!(
            "{} is committed (git tracks {} of its files, e.g. {}): `report` does not rewrite it; write the rebuilt report to a new folder: chatbench report {} --out NEW",
            dir.display(),
            tracked.len(),
            tracked[0],
            dir.display()
        ))
        .into());
    }
    let missing = chatbench_report::outputs::runs_without_timeseries(dir);
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .take(3)
            .map(|p| p.display().to_string())
            .collect();
        return Err(UsageError(format!(
            "{} is incomplete: {} run(s) have no timeseries.csv ({}{}), so their timelines cannot be drawn and rewriting its report.html would drop them; write the rebuilt report to a new folder: chatbench report {} --out NEW",
            dir.display(),
            missing.len(),
            names.join(", "),
            if missing.len() > 3 { ", …" } else { "" },
            dir.display()
        ))
        .into());
    }
    Ok(dir.to_path_buf())
}

/// The files under `dir` that git tracks (none outside a repository or without git).
fn tracked_files(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "--", "."])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// `report RUN`: the run's charts and page.
fn run_page(dir: &Path) -> anyhow::Result<ExitCode> {
    use chatbench_report::charts::ChartError;
    use chatbench_report::run_page::{draw, RunPageError};
    // A committed run is never rewritten (its charts/ and report.html would change).
    let tracked = tracked_files(dir);
    if !tracked.is_empty() {
        return Err(UsageError(format!(
            "{} is committed (git tracks {} of its files, e.g. {}): `report RUN` writes charts/ and report.html into the run folder, so copy the run elsewhere first",
            dir.display(),
            tracked.len(),
            tracked[0]
        ))
        .into());
    }
    let drawn = match draw(dir) {
        Ok(d) => d,
        // What the folder holds is the user's input: unreadable or malformed, exit 2.
        Err(
            e @ (RunPageError::Summary(_)
            | RunPageError::NotARun { .. }
            | RunPageError::Chart(ChartError::Read { .. } | ChartError::Parse { .. })),
        ) => {
            return Err(UsageError(format!(
                "{e} (`report RUN` needs the run folder as `chatbench run` wrote it: summary.json and timeseries.csv)"
            ))
            .into())
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("drawing the page of the run in {}", dir.display())))
        }
    };
    let s = &drawn.summary;
    println!(
        "run {} ({}, {}): {} charts in {}, page {}",
        s.run_id,
        s.scenario.name,
        if s.valid { "valid" } else { "INVALID" },
        drawn.charts.len(),
        dir.join("charts").display(),
        drawn.page.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads and checks a claims file given with `--claims` (before anything is measured): its
/// name as given and its text. An unreadable or malformed file is a usage error.
pub(crate) fn read_claims(path: Option<&Path>) -> anyhow::Result<Option<(String, String)>> {
    let Some(path) = path else { return Ok(None) };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "--claims {name}: cannot read it: {e} (a claims file: docs/claims.md)"
        ))
    })?;
    chatbench_report::claims::parse(&name, &text).map_err(|e| UsageError(e.to_string()))?;
    Ok(Some((name, text)))
}

fn side_by_side(a: &Path, b: &Path) -> anyhow::Result<ExitCode> {
    let is_run = |p: &Path| p.join("summary.json").is_file();
    let md = match (is_run(a), is_run(b)) {
        (true, true) => {
            let load = |p: &Path| match StepResult::load(p) {
                Ok(StepResult::Ran { summary, .. }) => Ok(*summary),
                Ok(StepResult::Failed { reason }) => Err(UsageError(reason)),
                Err(e) => Err(UsageError(e.to_string())),
            };
            diff_runs(&load(a)?, &load(b)?)
        }
        (false, false) => {
            let c = |p: &Path| -> anyhow::Result<_> {
                let l = load(p).map_err(|e| {
                    UsageError(format!("reading the comparison in {}: {e}", p.display()))
                })?;
                Ok(l.comparison(p))
            };
            diff_comparisons(&c(a)?, &c(b)?, &a.display().to_string(), &b.display().to_string())
        }
        _ => {
            return Err(UsageError(format!(
                "{} and {} are not of the same kind: give two run folders (with summary.json) or two comparison folders (with runs/)",
                a.display(),
                b.display()
            ))
            .into())
        }
    };
    print!("{md}");
    Ok(ExitCode::SUCCESS)
}
