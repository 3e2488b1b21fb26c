//! Two results side by side (`chatbench report A B`): two comparison folders (every row and
//! architecture, A → B with the change), or two run folders (the headline figures of each
//! summary: every figure of the catalogue, `chatbench_model::figures`). Figures from invalid or
//! failed runs show as such, never as a change; a figure with a caveat ([`crate::caveats`]:
//! machine busy, unreliable kernel figure) carries the same mark as in the table and charts;
//! a negative figure (a cost cannot be negative) shows no change.

use std::fmt::Write;

use chatbench_model::figures::CATALOGUE;
use chatbench_model::results::Summary;

use crate::caveats::Caveat;
use crate::comparison::{Cell, Comparison};

/// The change from `a` to `b`: "=" when they are equal (or read the same to 0.1 %), else the
/// percentage; none when either is negative (a cost that cannot be: the reading was disturbed).
fn change(a: f64, b: f64) -> String {
    if a < 0.0 || b < 0.0 {
        return "— (a negative figure: unreliable)".into();
    }
    if a == b {
        return "=".into();
    }
    if a == 0.0 {
        return "new".into();
    }
    let pct = (b - a) / a * 100.0;
    if pct.abs() < 0.05 {
        "=".into()
    } else {
        format!("{pct:+.1} %")
    }
}

/// The caveats of figure `key` of run `s`: machine busy for its latency and CPU figures,
/// unreliable for a kernel memory figure whose reading was disturbed.
fn caveats_of(key: &str, s: &Summary) -> Vec<Caveat> {
    let mut out = Vec::new();
    let timed = key.contains("latency") || key.contains("cpu") || key.starts_with("reconnect");
    if timed && crate::caveats::busy(s) {
        out.push(Caveat::Busy);
    }
    if key.contains("kernel") && crate::caveats::unreliable_kernel(s) {
        out.push(Caveat::UnreliableKernel);
    }
    out
}

fn cell_text(c: Option<&Cell>) -> String {
    match c {
        Some(c) if c.value.is_some() => c.display.clone(),
        Some(c) => c.display.clone(),
        None => "—".into(),
    }
}

/// The Markdown table of two comparisons: one line per (question, architecture).
pub fn diff_comparisons(a: &Comparison, b: &Comparison, a_name: &str, b_name: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# chatbench: {a_name} → {b_name}\n");
    let _ = writeln!(
        out,
        "A: {a_name} — {}\n\nB: {b_name} — {}\n",
        a.machine, b.machine
    );
    if a.machine != b.machine {
        let _ = writeln!(
            out,
            "**The machines differ: compare ratios within each run, not figures across them.**\n"
        );
    }
    let _ = writeln!(
        out,
        "| question | architecture | A | B | change |\n|---|---|---|---|---|"
    );
    let mut archs: Vec<&String> = a.archs.iter().collect();
    for x in &b.archs {
        if !archs.contains(&x) {
            archs.push(x);
        }
    }
    for row in &a.rows {
        let other = b.rows.iter().find(|r| r.key == row.key);
        for arch in &archs {
            let ca = row.cells.get(*arch);
            let cb = other.and_then(|r| r.cells.get(*arch));
            let delta = match (ca.and_then(|c| c.value), cb.and_then(|c| c.value)) {
                // A scaling cell's value is its largest node count's: say so.
                (Some(x), Some(y)) if row.key.starts_with("scaling_") => {
                    format!("{} (at the largest node count)", change(x, y))
                }
                (Some(x), Some(y)) => change(x, y),
                _ => "—".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {arch} | {} | {} | {delta} |",
                row.label,
                cell_text(ca),
                cell_text(cb)
            );
        }
    }
    out
}

/// The Markdown table of two runs' headline figures.
pub fn diff_runs(a: &Summary, b: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# chatbench: run {} → run {}\n", a.run_id, b.run_id);
    for (name, s) in [("A", a), ("B", b)] {
        let _ = writeln!(
            out,
            "{name}: scenario `{}`, target {}{}, commit {}{}\n",
            s.scenario.name,
            s.target.url,
            s.target
                .arch
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default(),
            s.provenance
                .git_commit
                .as_deref()
                .map(|c| &c[..c.len().min(10)])
                .unwrap_or("?"),
            if s.valid {
                String::new()
            } else {
                format!(" — INVALID: {}", s.invalid_reasons.join("; "))
            },
        );
    }
    if a.scenario.text != b.scenario.text {
        let _ = writeln!(
            out,
            "**The scenarios differ: the figures below are not like for like.**\n"
        );
    }
    let _ = writeln!(out, "| figure | A | B | change |\n|---|---|---|---|");
    for f in CATALOGUE {
        let name = f.label;
        let text = |s: &Summary| {
            if s.valid {
                crate::caveats::marked(&f.text(s), &caveats_of(f.key, s))
            } else {
                "invalid".into()
            }
        };
        let (ta, tb) = (text(a), text(b));
        let delta = match (f.shown(a), f.shown(b)) {
            (Some(x), Some(y)) if a.valid && b.valid => change(x, y),
            _ => "—".into(),
        };
        let _ = writeln!(out, "| {name} | {ta} | {tb} | {delta} |");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::comparison::{build, Results, Step, StepResult};

    fn fixture(step: &str) -> Summary {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(step);
        match StepResult::load(&dir).expect("fixture") {
            StepResult::Ran { summary, .. } => *summary,
            StepResult::Failed { .. } => panic!("fixture failed"),
        }
    }

    #[test]
    fn runs_side_by_side_show_the_change() {
        let a = fixture("broadcast");
        let mut b = a.clone();
        if let Some(l) = b.latency_us.as_mut() {
            l.p99 *= 2;
        }
        let md = diff_runs(&a, &b);
        let line = md
            .lines()
            .find(|l| l.starts_with("| latency p99 |"))
            .expect("p99 row");
        assert!(line.ends_with("| +100.0 % |"), "{line}");
        assert!(!md.contains("not like for like"));
        b.valid = false;
        b.invalid_reasons = vec!["generator CPU-bound".into()];
        let md = diff_runs(&a, &b);
        let line = md
            .lines()
            .find(|l| l.starts_with("| latency p99 |"))
            .expect("p99 row");
        assert!(
            line.contains("| invalid |") && line.ends_with("| — |"),
            "{line}"
        );
    }

    #[test]
    fn comparisons_side_by_side_cover_every_row_and_architecture() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut r = Results::new();
        for (step, name) in [(Step::Idle, "idle"), (Step::Broadcast, "broadcast")] {
            r.insert(
                ("x".into(), step),
                StepResult::load(&base.join(name)).expect("fixture"),
            );
        }
        let a = build("quick", &["x".into()], &r, &base);
        let md = diff_comparisons(&a, &a, "one", "two");
        let lines = md
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| question"))
            .count();
        assert_eq!(lines, a.rows.len());
        assert!(
            md.contains("| Memory per connection, user space | x |") && md.contains("| = |"),
            "{md}"
        );
        assert!(!md.contains("+0.0 %"), "unchanged reads =: {md}");
    }

    #[test]
    fn a_busy_run_keeps_its_mark_side_by_side_and_a_negative_figure_shows_no_change() {
        let a = fixture("broadcast");
        let mut b = a.clone();
        b.target_resources.other_load = Some(chatbench_model::results::OtherLoad {
            cpus: vec![0],
            busy_cores: 0.9,
            other_cores: 0.5,
            steal_cores: 0.0,
        });
        let md = diff_runs(&a, &b);
        let line = md
            .lines()
            .find(|l| l.starts_with("| latency p99 |"))
            .expect("p99 row");
        let cells: Vec<&str> = line.split(" | ").collect();
        assert!(!cells[1].contains("(machine busy)"), "A was quiet: {line}");
        assert!(cells[2].contains("(machine busy)"), "B was busy: {line}");
        // The same figure, unchanged, reads "=".
        assert!(line.ends_with("| = |"), "{line}");
        assert_eq!(change(-2.49, 3.0), "— (a negative figure: unreliable)");
        assert_eq!(change(3.0, 3.0), "=");
        assert_eq!(change(0.0, 0.0), "=");
        assert_eq!(change(2.0, 3.0), "+50.0 %");
    }
}
