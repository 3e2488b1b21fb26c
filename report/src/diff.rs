//! Two results side by side (`chatbench report A B`): two comparison folders (every row and
//! architecture, A → B with the change), or two run folders (the headline figures of each
//! summary: every figure of the catalogue, `chatbench_model::figures`). Figures from invalid or
//! failed runs show as such, never as a change.

use std::fmt::Write;

use chatbench_model::figures::CATALOGUE;
use chatbench_model::results::Summary;

use crate::comparison::{Cell, Comparison};

fn change(a: f64, b: f64) -> String {
    if a == 0.0 {
        if b == 0.0 {
            "=".into()
        } else {
            "new".into()
        }
    } else {
        format!("{:+.1} %", (b - a) / a * 100.0)
    }
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
        let (ta, tb) = (
            if a.valid { f.text(a) } else { "invalid".into() },
            if b.valid { f.text(b) } else { "invalid".into() },
        );
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
            md.contains("| Memory per connection, user space | x |") && md.contains("| +0.0 % |"),
            "{md}"
        );
    }
}
