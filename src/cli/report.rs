//! `chatbench report DIR`: rebuilds a comparison's table and charts from its results files
//! alone; on a run folder, draws that run's timeline charts and its report.html
//! (`chatbench_report::run_page`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use chatbench_model::results::write_file_atomic;
use std::path::Path;

use chatbench_report::comparison::{build_suite, load, render_markdown, StepResult};
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
    /// A claims file (docs/claims.md) to judge against the comparison; without it, the shipped
    /// claims/elixir-vs-node.toml when the comparison has one of its columns.
    #[arg(long, value_name = "FILE", conflicts_with = "other")]
    claims: Option<PathBuf>,
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
    let loaded = load(&args.dir)
        .with_context(|| format!("reading the comparison in {}", args.dir.display()))?;
    let slo = loaded
        .slo_p99_ms
        .unwrap_or(chatbench_report::sweeps::DEFAULT_SLO_P99_MS);
    let claims = read_claims(args.claims.as_deref())?;
    let mut c = build_suite(
        &loaded.suite,
        &loaded.archs,
        &loaded.runs,
        &args.dir,
        loaded.slo_p99_ms,
    );
    chatbench_report::claims::attach(
        &mut c,
        claims.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
        &loaded.results,
    )?;
    // The page embeds the charts drawn now, from memory: never a file of the folder's charts/.
    let drawn = chatbench_harness::compare::draw_charts(
        &args.dir,
        &loaded.archs,
        &loaded.results,
        &loaded.runs,
        slo,
    );
    let md = render_markdown(&c);
    let page = chatbench_report::html::render(&c, &loaded.results, &drawn);
    write_file_atomic(&args.dir.join("report.html"), page.as_bytes())?;
    write_file_atomic(&args.dir.join("comparison.md"), md.as_bytes())?;
    write_file_atomic(
        &args.dir.join("comparison.json"),
        &serde_json::to_vec_pretty(&c)?,
    )?;
    print!("{md}");
    Ok(ExitCode::SUCCESS)
}

/// `report RUN`: the run's charts and page.
fn run_page(dir: &Path) -> anyhow::Result<ExitCode> {
    use chatbench_report::charts::ChartError;
    use chatbench_report::run_page::{draw, RunPageError};
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
                Ok(StepResult::Failed { reason }) => Err(anyhow::anyhow!(reason)),
                Err(e) => Err(e.into()),
            };
            diff_runs(&load(a)?, &load(b)?)
        }
        (false, false) => {
            let c = |p: &Path| -> anyhow::Result<_> {
                let l = load(p).with_context(|| format!("reading the comparison in {}", p.display()))?;
                Ok(build_suite(&l.suite, &l.archs, &l.runs, p, l.slo_p99_ms))
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
