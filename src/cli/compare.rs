//! `chatbench compare`: runs a suite of scenarios against every chosen architecture (each
//! server started by `chatbench run --serve`, one process per run, so no run inherits another's
//! heap) and writes the comparison table built from the results files.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;
use clap::{Args, ValueEnum};

use chatbench_loadgen::results::write_file_atomic;
use chatbench_report::comparison::{build, render_markdown, Step, StepResult};

use super::{arch_names, UsageError};

/// The suites.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Suite {
    /// Idle memory at 5,000 connections, a 40,000 deliveries/s broadcast, one crashing
    /// handler: a few minutes for every architecture on a 2-core machine.
    Quick,
    /// Capacity to the limits, load sweeps, longer windows and repeats (not built yet).
    Full,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Architectures to compare, comma-separated (default: every one built in).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = arch_names())]
    archs: Vec<String>,
    /// Which suite to run.
    #[arg(long, value_enum, default_value_t = Suite::Quick)]
    suite: Suite,
    /// Folder that receives the comparison folder.
    #[arg(long, value_name = "DIR", default_value = "results/runs")]
    out: PathBuf,
    /// Shrink every step to a few hundred connections and 1–3 s windows: checks the harness
    /// end to end in seconds (the tests use it). The figures are not meaningful.
    #[arg(long)]
    tiny: bool,
}

/// Server flags an architecture needs for the suite to measure it at the suite's sizes: the
/// thread pool must have a worker per connection of the largest step (its default, 1,024,
/// answers the rest with 503, which is what the capacity steps of the full suite measure).
fn arch_args(arch: &str) -> &'static [&'static str] {
    match arch {
        "thread-pool" => &["--server-arg=--pool-size=5120"],
        _ => &[],
    }
}

/// `--tiny` overrides per step.
fn tiny_overrides(step: Step) -> &'static [&'static str] {
    match step {
        Step::Idle => &["connections=200", "settle=\"1s\"", "measure=\"1s\""],
        Step::Broadcast => &[
            "connections=200",
            "rooms=4",
            "members_per_room=50",
            "warmup=\"1s\"",
            "measure=\"2s\"",
            "cooldown=\"1s\"",
        ],
        Step::Poison => &[
            "connections=100",
            "rooms=5",
            "members_per_room=20",
            "measure=\"3s\"",
            "poison_after=\"1s\"",
        ],
    }
}

/// The quick suite: (step, scenario file name, scenario text, extra server flags).
const QUICK: [(Step, &str, &str, &[&str]); 3] = [
    (
        Step::Idle,
        "quick-idle.toml",
        include_str!("../../scenarios/suite/quick-idle.toml"),
        &[],
    ),
    (
        Step::Broadcast,
        "quick-broadcast.toml",
        include_str!("../../scenarios/suite/quick-broadcast.toml"),
        &[],
    ),
    (
        Step::Poison,
        "quick-poison.toml",
        include_str!("../../scenarios/suite/quick-poison.toml"),
        &["--server-arg=--fault-injection"],
    ),
];

pub fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    if let Suite::Full = args.suite {
        return Err(UsageError(
            "--suite full is not built yet (capacity, load sweep and repeats come next); use --suite quick".into(),
        )
        .into());
    }
    let archs: Vec<String> = if args.archs.is_empty() {
        chatbench_servers::Arch::ALL
            .iter()
            .map(|a| a.as_str().to_string())
            .collect()
    } else {
        args.archs.clone()
    };
    let id = format!(
        "{}-compare-quick{}",
        chrono_like_now(),
        if args.tiny { "-tiny" } else { "" }
    );
    let dir = args.out.join(&id);
    let runs = dir.join("runs");
    let scenarios = dir.join("scenarios");
    std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
    std::fs::create_dir_all(&scenarios)
        .with_context(|| format!("creating {}", scenarios.display()))?;
    for (_, name, text, _) in QUICK {
        write_file_atomic(&scenarios.join(name), text.as_bytes())?;
    }
    let exe = std::env::current_exe().context("locating the chatbench executable")?;
    let mut results = std::collections::BTreeMap::new();
    for arch in &archs {
        for (step, name, _, server_args) in QUICK {
            eprintln!("compare: {arch} / {} …", step.as_str());
            let mut extra: Vec<String> = server_args
                .iter()
                .chain(arch_args(arch))
                .map(|s| s.to_string())
                .collect();
            if args.tiny {
                for o in tiny_overrides(step) {
                    extra.push("--set".into());
                    extra.push((*o).into());
                }
            }
            let result = run_step(&exe, arch, &scenarios.join(name), &extra, &runs);
            match &result {
                StepResult::Ran { summary, .. } => eprintln!(
                    "compare: {arch} / {}: {}{}",
                    step.as_str(),
                    match summary.status {
                        chatbench_loadgen::results::RunStatus::Complete => "complete",
                        chatbench_loadgen::results::RunStatus::Interrupted => "interrupted",
                        chatbench_loadgen::results::RunStatus::Failed => "failed",
                    },
                    if summary.valid {
                        ""
                    } else {
                        " (invalid: generator-bound)"
                    }
                ),
                StepResult::Failed { reason } => {
                    eprintln!("compare: {arch} / {}: FAILED: {reason}", step.as_str())
                }
            }
            results.insert((arch.clone(), step), result);
        }
    }
    let comparison = build("quick", &archs, &results, &dir);
    draw_charts(&dir, &archs, &results);
    let page = chatbench_report::html::render(&dir, &comparison, &results);
    write_file_atomic(&dir.join("report.html"), page.as_bytes())?;
    let md = render_markdown(&comparison);
    write_file_atomic(&dir.join("comparison.md"), md.as_bytes())?;
    let json = serde_json::to_vec_pretty(&comparison).context("encoding comparison.json")?;
    write_file_atomic(&dir.join("comparison.json"), &json)?;
    println!("{md}");
    println!("comparison written to {}", dir.display());
    if comparison.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "compare: {} step(s) failed (see the Failures section)",
            comparison.failures.len()
        );
        Ok(ExitCode::from(super::EXIT_RUN_FAILED))
    }
}

/// Draws the charts; a chart that cannot be drawn is reported, not fatal (the table stands).
pub(crate) fn draw_charts(
    dir: &Path,
    archs: &[String],
    results: &chatbench_report::comparison::Results,
) {
    let inputs = chatbench_report::charts::ChartInputs { archs, results };
    match chatbench_report::charts::render_comparison_charts(dir, &inputs) {
        Ok(files) => eprintln!(
            "compare: {} chart files in {}",
            files.len(),
            dir.join("charts").display()
        ),
        Err(e) => eprintln!("compare: charts not drawn: {e}"),
    }
}

/// Runs one step as a child `chatbench run`, and finds the run folder it wrote.
fn run_step(exe: &Path, arch: &str, scenario: &Path, extra: &[String], runs: &Path) -> StepResult {
    let before: Vec<PathBuf> = list_dirs(runs);
    let output = Command::new(exe)
        .args(["run", "--serve", arch, "--progress", "quiet", "--scenario"])
        .arg(scenario)
        .arg("--out")
        .arg(runs)
        .args(extra)
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            return StepResult::Failed {
                reason: format!("cannot start chatbench run: {e}"),
            }
        }
    };
    let new: Vec<PathBuf> = list_dirs(runs)
        .into_iter()
        .filter(|d| !before.contains(d))
        .collect();
    match new.as_slice() {
        [dir] => match StepResult::load(dir) {
            Ok(r) => r,
            Err(e) => StepResult::Failed {
                reason: e.to_string(),
            },
        },
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = stderr
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or_else(|| stderr.lines().last().unwrap_or("no output"))
                .trim_start_matches("error: ")
                .to_string();
            StepResult::Failed {
                reason: format!("{reason} (exit {:?})", output.status.code()),
            }
        }
    }
}

fn list_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn chrono_like_now() -> String {
    chatbench_loadgen::results::run_id(chrono::Utc::now(), "x")
        .trim_end_matches("-x")
        .to_string()
}
