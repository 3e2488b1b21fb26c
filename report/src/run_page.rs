//! The page of one run (`chatbench report RUN`): its timeline charts drawn into `RUN/charts/`
//! (the comparison's [`crate::charts`] timeline, and the node-loss chart when the run killed a
//! node) and `RUN/report.html`, a self-contained page with the run's verdict, headline figures
//! (from the figure catalogue), latency percentiles, the charts inline, links to the run's
//! files, the scenario text and the provenance.
//!
//! Like the comparison page ([`crate::html`]), nothing read from the folder is trusted: every
//! text is escaped, the page embeds only the SVG this process drew, and the same
//! Content-Security-Policy forbids scripts and fetches. Every file is written atomically.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chatbench_model::figures;
use chatbench_model::results::{write_file_atomic, ResultsError, Summary};
use thiserror::Error;

use crate::charts::{self, ChartError, Drawn};
use crate::comparison::{ReportError, StepResult};
use crate::html::CSP;
use crate::page::esc;

/// The page's file name in the run folder.
pub const RUN_PAGE: &str = "report.html";

/// The run's files the page links to when they are there, with what each holds.
const FILES: &[(&str, &str)] = &[
    (
        "summary.json",
        "every figure, the scenario and the provenance",
    ),
    ("timeseries.csv", "one row per second per metric"),
    (
        "latency.hgrm",
        "the window's latency percentile distribution",
    ),
    (
        "latency.hlog",
        "per-second latency histograms (HdrHistogram interval log)",
    ),
    (
        "unexpected_frames.txt",
        "the first frames that made no sense",
    ),
];

/// Errors drawing a run's page.
#[derive(Debug, Error)]
pub enum RunPageError {
    /// The summary could not be read.
    #[error(transparent)]
    Summary(#[from] ReportError),
    /// The folder's summary records a failed step, not a run.
    #[error("{path}: {reason}")]
    NotARun {
        /// The summary.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A chart could not be drawn or written.
    #[error(transparent)]
    Chart(#[from] ChartError),
    /// The page could not be written.
    #[error(transparent)]
    Write(#[from] ResultsError),
}

/// What `draw` wrote.
#[derive(Debug)]
pub struct RunPage {
    /// The page.
    pub page: PathBuf,
    /// The chart files (PNG and SVG).
    pub charts: Vec<PathBuf>,
    /// The run's summary, as read.
    pub summary: Box<Summary>,
}

/// Draws the charts of the run in `run_dir` and writes its `report.html`.
pub fn draw(run_dir: &Path) -> Result<RunPage, RunPageError> {
    let summary = match StepResult::load(run_dir)? {
        StepResult::Ran { summary, .. } => summary,
        StepResult::Failed { reason } => {
            return Err(RunPageError::NotARun {
                path: run_dir.join("summary.json"),
                reason,
            })
        }
    };
    let out = charts::prepare_charts_dir(run_dir)?;
    let drawn = charts::timeline_of(run_dir, &summary, &out, "timeline", false)?;
    let present: Vec<&(&str, &str)> = FILES
        .iter()
        .filter(|(name, _)| run_dir.join(name).is_file())
        .collect();
    let html = render(&summary, &drawn, &present);
    let page = run_dir.join(RUN_PAGE);
    write_file_atomic(&page, html.as_bytes())?;
    Ok(RunPage {
        page,
        charts: drawn.files,
        summary,
    })
}

/// The page's HTML for `s`, embedding `drawn`'s charts and linking the `files` present.
fn render(s: &Summary, drawn: &Drawn, files: &[&(&str, &str)]) -> String {
    let mut o = String::new();
    let title = format!("chatbench run — {} — {}", s.scenario.name, s.run_id);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>\
         body{{font-family:sans-serif;margin:2em auto;max-width:1250px;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
         th{{background:#f3f3f3}}.bad{{color:#a00}}\
         pre{{background:#f7f7f7;padding:1em;overflow:auto}}figure{{margin:1.5em 0}}\
         .chart svg{{max-width:100%;height:auto}}</style></head><body>\n<h1>{t}</h1>\n",
        t = esc(&title)
    );
    verdict(&mut o, s);
    headline(&mut o, s);
    for (name, svg) in &drawn.svgs {
        let n = esc(name);
        let _ = writeln!(
            o,
            "<figure class=\"chart\" id=\"{n}\">{svg}<figcaption>{n} (<a href=\"charts/{n}.png\">PNG</a>, <a href=\"charts/{n}.svg\">SVG</a>)</figcaption></figure>"
        );
    }
    o.push_str("<h2>Files</h2>\n<ul>\n");
    for (name, what) in files {
        let _ = writeln!(
            o,
            "<li><a href=\"{n}\">{n}</a> — {}</li>",
            esc(what),
            n = esc(name)
        );
    }
    o.push_str("</ul>\n");
    let _ = writeln!(
        o,
        "<h2>Scenario <code>{}</code></h2>\n<pre>{}</pre>",
        esc(&s.scenario.name),
        esc(&s.scenario.text)
    );
    if !s.scenario.overrides.is_empty() {
        let _ = writeln!(
            o,
            "<p>Overrides: <code>{}</code></p>",
            esc(&s.scenario.overrides.join(" "))
        );
    }
    let _ = writeln!(
        o,
        "<h2>Provenance</h2>\n<p>Machine: {}<br>Started {} · chatbench {}{}</p>\n</body></html>",
        esc(&s.provenance.machine()),
        esc(&s.provenance.started_at),
        esc(&s.provenance.tool_version),
        s.provenance
            .git_commit
            .as_deref()
            .map(|c| format!(" · commit {}", esc(c)))
            .unwrap_or_default()
    );
    o
}

/// Status, validity and notes.
fn verdict(o: &mut String, s: &Summary) {
    let _ = writeln!(
        o,
        "<p>Target <code>{}</code>{} · status <b>{}</b> · {}</p>",
        esc(&s.target.url),
        s.target
            .arch
            .as_deref()
            .map(|a| format!(" ({})", esc(a)))
            .unwrap_or_default(),
        esc(&format!("{:?}", s.status).to_lowercase()),
        if s.valid {
            "valid".to_string()
        } else {
            "<span class=\"bad\">invalid: its figures are not to be used</span>".to_string()
        }
    );
    let lists = [
        ("bad", "Invalid because", &s.invalid_reasons),
        ("", "Notes", &s.notes),
    ];
    for (class, heading, items) in lists {
        if items.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "<p class=\"{class}\">{heading}:</p><ul class=\"{class}\">"
        );
        for i in items.iter() {
            let _ = writeln!(o, "<li>{}</li>", esc(i));
        }
        o.push_str("</ul>\n");
    }
}

/// The catalogue's figures this run has, and the latency percentiles.
fn headline(o: &mut String, s: &Summary) {
    o.push_str("<h2>Figures</h2>\n<table><thead><tr><th>figure</th><th>value</th><th>key</th></tr></thead><tbody>\n");
    for (f, _) in figures::table() {
        if f.shown(s).is_none() {
            continue;
        }
        let _ = writeln!(
            o,
            "<tr><th>{}</th><td>{}</td><td><code>{}</code></td></tr>",
            esc(f.label),
            esc(&f.text(s)),
            esc(f.key)
        );
    }
    let m = &s.messages;
    let _ = writeln!(
        o,
        "<tr><th>messages sent / expected / delivered / lost</th><td>{} / {} / {} / {}</td><td></td></tr>",
        m.sent, m.expected, m.delivered, m.lost
    );
    o.push_str("</tbody></table>\n");
    if let Some(l) = &s.latency_us {
        let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
        let _ = writeln!(
            o,
            "<table><thead><tr><th>latency (ms, from the intended send time)</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>n</th></tr></thead>\
             <tbody><tr><th>measurement window</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></tbody></table>",
            ms(l.p50), ms(l.p90), ms(l.p99), ms(l.p999), ms(l.max), l.count
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_folder_is_escaped_and_no_script_gets_in() {
        let mut s: Summary =
            serde_json::from_str(include_str!("../tests/data/broadcast/summary.json"))
                .expect("summary");
        s.notes.push("<script>alert(1)</script>".into());
        s.scenario.text = "name = \"</pre><script>x()</script>\"".into();
        let drawn = Drawn {
            svgs: vec![("timeline".into(), "<svg><text>drawn</text></svg>".into())],
            ..Drawn::default()
        };
        let page = render(&s, &drawn, &[&FILES[0]]);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)"));
        assert!(page.contains(CSP));
        assert!(
            page.contains("<svg><text>drawn</text></svg>"),
            "the drawn chart"
        );
        assert!(page.contains("href=\"summary.json\""));
        assert!(!page.contains("latency.hlog"), "only the files present");
    }
}
