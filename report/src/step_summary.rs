//! The Markdown summary of one run for a CI job's page (`$GITHUB_STEP_SUMMARY`, or `run
//! --step-summary FILE`): the verdict with its exit code, the headline figures from the figure
//! catalogue, each threshold with its value against its limit, why a run failed or is invalid,
//! and where the run folder is. Pure: the caller appends it to the file.
//!
//! Text from the summary (notes, reasons, names) is put in table cells and list items with
//! Markdown's table separator and HTML escaped, so a hostile reason cannot break the page.

use std::fmt::Write as _;
use std::path::Path;

use chatbench_model::figures;
use chatbench_model::results::Summary;
use chatbench_model::thresholds::Judged;

/// The headline figures shown, by catalogue key, when the run has them.
const HEADLINE: &[&str] = &[
    "p50_latency",
    "p99_latency",
    "p999_latency",
    "loss_ratio",
    "deliveries_per_s",
    "connection_errors",
    "closed_by_server",
    "memory_user_per_conn",
    "memory_kernel_per_conn",
    "server_cpu_cores",
    "cpu_us_per_delivery",
];

/// The run's verdict in words, from its exit code.
pub fn verdict_words(code: u8) -> &'static str {
    match code {
        0 => "pass",
        1 => "FAIL: a threshold was crossed",
        3 => "FAIL: the run failed or measured nothing",
        4 => "INVALID: the generator was the bottleneck",
        130 | 143 => "interrupted",
        _ => "FAIL",
    }
}

/// The Markdown for run `s` (folder `dir`) that ended with exit `code`, its thresholds
/// `judged` and the nothing-measured reasons `floor`.
pub fn markdown(s: &Summary, dir: &Path, code: u8, judged: &[Judged], floor: &[String]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "### chatbench run `{}`: {} (exit {code})\n",
        cell(&s.scenario.name),
        verdict_words(code)
    );
    let _ = writeln!(
        o,
        "Target `{}` · {} connections ready of {} · {:.0} s window\n",
        cell(&s.target.url),
        s.connections.ready,
        s.connections.planned,
        s.phases.measure
    );
    o.push_str("| figure | value |\n|---|---|\n");
    let m = &s.messages;
    let _ = writeln!(
        o,
        "| messages sent / delivered / lost | {} / {} / {} |",
        m.sent, m.delivered, m.lost
    );
    for f in HEADLINE.iter().filter_map(|k| figures::by_key(k)) {
        if f.shown(s).is_some() {
            let _ = writeln!(o, "| {} | {} |", cell(f.label), cell(&f.text(s)));
        }
    }
    if !judged.is_empty() {
        o.push_str("\n| threshold | value | limit | verdict |\n|---|---|---|---|\n");
        for j in judged {
            let t = &j.threshold;
            let _ = writeln!(
                o,
                "| `{}` | {} | {} {} | {} |",
                t.figure.key,
                j.value
                    .map(|v| t.figure.show.format(v))
                    .unwrap_or_else(|| "no value".into()),
                t.op.as_str(),
                t.figure.show.format(t.limit),
                if j.passed { "ok" } else { "**crossed**" }
            );
        }
    }
    let reasons: Vec<String> = floor
        .iter()
        .map(|w| format!("measured nothing meaningful: {w}"))
        .chain(s.invalid_reasons.iter().cloned())
        .collect();
    if !reasons.is_empty() {
        o.push_str("\n**Why:**\n");
        for r in &reasons {
            let _ = writeln!(o, "- {}", cell(r));
        }
    }
    let _ = writeln!(o, "\nResults: `{}`\n", cell(&dir.display().to_string()));
    o
}

/// Text made safe for a Markdown table cell or list item: `|`, backticks, `<`, `>` and `&`
/// escaped, newlines as spaces.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '`' => out.push('\''),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatbench_model::thresholds;

    fn fixture() -> Summary {
        serde_json::from_str(include_str!("../tests/data/broadcast/summary.json")).expect("summary")
    }

    #[test]
    fn a_crossed_threshold_is_shown_with_its_value_and_limit() {
        let s = fixture();
        let limits = [
            thresholds::parse_flag("p99_latency<=0.001ms").expect("threshold"),
            thresholds::parse_flag("loss_ratio<=1").expect("threshold"),
        ];
        let judged = thresholds::judge(&s, &limits);
        let md = markdown(&s, Path::new("results/runs/x"), 1, &judged, &[]);
        assert!(md.starts_with("### chatbench run"), "{md}");
        assert!(
            md.contains("FAIL: a threshold was crossed (exit 1)"),
            "{md}"
        );
        assert!(
            md.contains("| `p99_latency` |") && md.contains("**crossed**"),
            "{md}"
        );
        assert!(
            md.contains("| `loss_ratio` |") && md.contains("| ok |"),
            "{md}"
        );
        assert!(md.contains("Results: `results/runs/x`"), "{md}");
    }

    #[test]
    fn every_headline_key_is_in_the_catalogue() {
        for k in HEADLINE {
            assert!(figures::by_key(k).is_some(), "{k} is not a figure key");
        }
    }

    #[test]
    fn hostile_text_cannot_break_the_table() {
        let mut s = fixture();
        s.scenario.name = "a|b`<img>".into();
        s.invalid_reasons = vec!["x | y\n## injected".into()];
        let md = markdown(&s, Path::new("d"), 4, &[], &[]);
        assert!(md.contains("a\\|b'&lt;img&gt;"), "{md}");
        assert!(md.contains("- x \\| y ## injected"), "{md}");
        assert!(!md.contains("\n## injected"), "{md}");
    }
}
