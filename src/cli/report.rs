//! `chatbench report DIR`: rebuilds a comparison's table and charts from its results files
//! alone.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use chatbench_loadgen::results::write_file_atomic;
use chatbench_report::comparison::{build, load, render_markdown};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A comparison folder written by `chatbench compare` (it holds runs/ and comparison.json).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

pub fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.dir)
        .with_context(|| format!("reading the comparison in {}", args.dir.display()))?;
    let c = build(&loaded.suite, &loaded.archs, &loaded.results, &args.dir);
    super::compare::draw_charts(&args.dir, &loaded.archs, &loaded.results);
    let md = render_markdown(&c);
    write_file_atomic(&args.dir.join("comparison.md"), md.as_bytes())?;
    write_file_atomic(
        &args.dir.join("comparison.json"),
        &serde_json::to_vec_pretty(&c)?,
    )?;
    print!("{md}");
    Ok(ExitCode::SUCCESS)
}
