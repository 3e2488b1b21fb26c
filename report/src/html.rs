//! `report.html`: one self-contained page for sharing — the comparison table, the charts
//! (inline SVG), the conditions, the scenario texts and the provenance. Nothing is fetched: no
//! scripts, styles, fonts or images from the network; links point at the results files beside
//! the page.
//!
//! Results folders get shared and committed, so nothing read from one is trusted: the page
//! embeds only the charts this process drew ([`Drawn`], in memory), never an SVG read back from
//! `charts/`; every text from a summary is escaped; and a Content-Security-Policy forbids
//! scripts (the page has none) and every fetch.

use std::fmt::Write;

use crate::charts::Drawn;
use crate::comparison::{Comparison, Results, Step, StepResult};

/// The page's Content-Security-Policy: no scripts, no plugins, nothing fetched; its own inline
/// style and images beside it only.
pub const CSP: &str = "default-src 'none'; script-src 'none'; object-src 'none'; \
                       style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'";

use crate::page::{esc, inline_html, ColumnDocs, Section};

/// The order of the embedded charts: the table's (memory, latency, CPU, the sweeps, scaling),
/// then the timelines in the table's column order.
const CHART_ORDER: &[&str] = &[
    "memory_per_connection",
    "memory_vs_connections",
    "latency_distribution",
    "p99_vs_load",
    "p99_vs_room_size",
    "cpu_per_delivery",
    "scaling_p99",
    "scaling_cpu_per_delivery",
];

/// The steps in the table's order, for the order of the timelines.
const TABLE_STEPS: [Step; 10] = [
    Step::Idle,
    Step::IdleRamp,
    Step::Capacity,
    Step::Broadcast,
    Step::LoadSweep,
    Step::RoomSize,
    Step::Poison,
    Step::Slowloris,
    Step::Scaling,
    Step::NodeLoss,
];

/// Where a chart goes on the page: its place in [`CHART_ORDER`], then the timelines by column
/// and, within a column, by step in table order.
fn chart_rank(name: &str, archs: &[String]) -> (usize, usize, usize, String) {
    if let Some(i) = CHART_ORDER.iter().position(|n| *n == name) {
        return (i, 0, 0, String::new());
    }
    let rest = name.strip_prefix("timeline-").unwrap_or(name);
    // The longest column name that prefixes it (cluster-mesh before cluster).
    let column = archs
        .iter()
        .enumerate()
        .filter(|(_, a)| rest.starts_with(&format!("{}-", crate::charts::file_safe(a))))
        .max_by_key(|(_, a)| a.len());
    let (ci, step_part) = match column {
        Some((i, a)) => (i, &rest[crate::charts::file_safe(a).len() + 1..]),
        None => (archs.len(), rest),
    };
    let step = TABLE_STEPS
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            step_part == s.as_str() || step_part.starts_with(&format!("{}-", s.as_str()))
        })
        .max_by_key(|(_, s)| s.as_str().len())
        .map_or(TABLE_STEPS.len(), |(i, _)| i);
    (CHART_ORDER.len(), ci, step, name.to_string())
}

/// Renders the page for comparison `c`, embedding the charts this process drew (`drawn`);
/// `docs` is the path of docs/architectures.md relative to the page, when the folder is in a
/// chatbench checkout; `columns` says what each column stands for.
pub fn render(
    c: &Comparison,
    results: &Results,
    drawn: &Drawn,
    docs: Option<&str>,
    columns: ColumnDocs,
) -> String {
    let mut o = String::new();
    let title = crate::page::title(c);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>\
         body{{font-family:sans-serif;margin:2em auto;max-width:1250px;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
         th{{background:#f3f3f3}}td.invalid,td.failed{{color:#a00}}td.not_measured{{color:#888}}\
         .tiny{{color:#a00;font-weight:bold}}p.verdict{{font-size:1.1em;background:#f6f9ff;padding:.8em;border-left:4px solid #36c}}\
         pre{{background:#f7f7f7;padding:1em;overflow:auto}}figure{{margin:1.5em 0}}\
         .chart svg{{max-width:100%;height:auto}}</style></head><body>\n",
        esc(&title.replace('`', ""))
    );
    let _ = writeln!(o, "<h1>{}</h1>", inline_html(&title));
    let _ = writeln!(o, "<p>Machine: {}</p>", esc(&c.machine));
    for section in crate::page::sections(c, columns) {
        match section {
            Section::Verdict(text) => {
                let _ = writeln!(
                    o,
                    "<h2 id=\"verdict\">Verdict</h2>\n<p class=\"verdict\">{}</p>",
                    inline_html(&text)
                );
            }
            Section::Columns(cols) => {
                let _ = writeln!(
                    o,
                    "<h2 id=\"columns\">The columns</h2>\n<dl class=\"columns\">"
                );
                for (col, meaning, anchor) in &cols {
                    let more = match docs {
                        Some(d) if !anchor.is_empty() => format!(
                            " (<a href=\"{}#{}\">docs/architectures.md</a>)",
                            esc(d),
                            esc(anchor)
                        ),
                        _ => String::new(),
                    };
                    let _ = writeln!(
                        o,
                        "<dt>{}</dt><dd>{}{more}</dd>",
                        esc(col),
                        inline_html(meaning)
                    );
                }
                let _ = writeln!(o, "</dl>");
                match docs {
                    Some(d) => {
                        let _ = writeln!(
                            o,
                            "<p>How each is built and what it models: <a href=\"{}\">docs/architectures.md</a>.</p>",
                            esc(d)
                        );
                    }
                    None => {
                        let _ = writeln!(
                            o,
                            "<p>How each is built and what it models: <code>docs/architectures.md</code> in the chatbench repository.</p>"
                        );
                    }
                }
            }
            Section::Table => table(c, &mut o),
            Section::Claims => o.push_str(&crate::claims::render_html(c.claims.as_ref(), esc)),
            Section::Charts => charts(c, drawn, &mut o),
            Section::Conditions(groups) => {
                let _ = writeln!(o, "<h2 id=\"conditions\">Conditions</h2><ul>");
                for (labels, cond) in &groups {
                    let _ = writeln!(
                        o,
                        "<li><b>{}</b> — {}</li>",
                        esc(&labels.join(" · ")),
                        inline_html(cond)
                    );
                }
                let _ = writeln!(o, "</ul>");
            }
            Section::Failures(f) => list(&mut o, "failures", "Failures", &f),
            Section::Notes(n) => list(&mut o, "notes", "Notes", &n),
            Section::Scenarios => scenarios(results, &mut o),
            Section::Provenance => provenance(c, &mut o),
        }
    }
    let _ = writeln!(o, "</body></html>");
    o
}

fn list(o: &mut String, id: &str, heading: &str, items: &[String]) {
    let _ = writeln!(o, "<h2 id=\"{id}\">{heading}</h2><ul>");
    for i in items {
        let _ = writeln!(o, "<li>{}</li>", inline_html(i));
    }
    let _ = writeln!(o, "</ul>");
}

fn table(c: &Comparison, o: &mut String) {
    let _ = write!(o, "<table id=\"table\"><thead><tr><th>question");
    if c.tiny {
        let _ = write!(
            o,
            " <span class=\"tiny\">{}</span>",
            esc(crate::caveats::TINY_MARK)
        );
    }
    let _ = write!(o, "</th>");
    for a in &c.archs {
        let _ = write!(o, "<th>{}</th>", esc(a));
    }
    let _ = writeln!(o, "</tr></thead><tbody>");
    for r in &c.rows {
        let _ = write!(o, "<tr><th>{}</th>", esc(&r.label));
        for a in &c.archs {
            match r.cells.get(a) {
                Some(cell) => {
                    let text = match &cell.source {
                        Some(src) => format!("<a href=\"{}\">{}</a>", esc(src), esc(&cell.display)),
                        None => esc(&cell.display),
                    };
                    let _ = write!(
                        o,
                        "<td class=\"{}\" title=\"{}\">{text}</td>",
                        cell.status.as_str(),
                        esc(&cell.condition)
                    );
                }
                None => o.push_str("<td>—</td>"),
            }
        }
        let _ = writeln!(o, "</tr>");
    }
    let _ = writeln!(o, "</tbody></table>");
}

fn charts(c: &Comparison, drawn: &Drawn, o: &mut String) {
    let mut charts: Vec<&(String, String)> = drawn.svgs.iter().collect();
    charts.sort_by_key(|(name, _)| chart_rank(name, &c.archs));
    let _ = writeln!(o, "<h2 id=\"charts\">Charts</h2>");
    for (name, svg) in charts {
        // The SVG's XML prolog, if any, is not allowed inside HTML.
        let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
        let _ = writeln!(
            o,
            "<figure class=\"chart\" id=\"{n}\">{body}<figcaption>{n} (<a href=\"charts/{n}.png\">PNG</a>, <a href=\"charts/{n}.svg\">SVG</a>)</figcaption></figure>",
            n = esc(name)
        );
    }
    if !drawn.skipped.is_empty() {
        let _ = writeln!(o, "<h3>Charts not drawn</h3><ul>");
        for s in &drawn.skipped {
            let _ = writeln!(o, "<li>{}</li>", esc(s));
        }
        let _ = writeln!(o, "</ul>");
    }
    let mut points: Vec<&String> = drawn.linked.iter().collect();
    points.sort();
    if !points.is_empty() {
        let _ = writeln!(
            o,
            "<h3>Timelines of every sweep point and repeat</h3><p>{} charts in <code>charts/{}/</code> beside this page (not embedded: a full suite has over a hundred).</p><ul>",
            points.len(),
            crate::sweep_charts::POINTS_DIR
        );
        for name in &points {
            let _ = writeln!(
                o,
                "<li>{n} (<a href=\"charts/{d}/{n}.svg\">SVG</a>, <a href=\"charts/{d}/{n}.png\">PNG</a>)</li>",
                n = esc(name),
                d = crate::sweep_charts::POINTS_DIR
            );
        }
        let _ = writeln!(o, "</ul>");
    }
}

/// Scenario texts, once per scenario.
fn scenarios(results: &Results, o: &mut String) {
    let mut seen: Vec<&str> = Vec::new();
    let _ = writeln!(o, "<h2 id=\"scenarios\">Scenarios</h2>");
    for r in results.values() {
        if let StepResult::Ran { summary, .. } = r {
            if !seen.contains(&summary.scenario.name.as_str()) {
                seen.push(&summary.scenario.name);
                let _ = writeln!(
                    o,
                    "<h3>{}</h3><pre>{}</pre>",
                    esc(&summary.scenario.name),
                    esc(&summary.scenario.text)
                );
            }
        }
    }
}

/// The provenance of the whole comparison: one list item per run (class `subrun`).
fn provenance(c: &Comparison, o: &mut String) {
    let _ = writeln!(o, "<h2 id=\"provenance\">Provenance</h2>");
    let Some(p) = &c.provenance else {
        let _ = writeln!(o, "<p>Not recorded.</p>");
        return;
    };
    let command = if p.command_line.is_empty() {
        "not recorded (rebuilt by <code>chatbench report</code> from the files)".to_string()
    } else {
        format!("<code>{}</code>", esc(&p.command_line.join(" ")))
    };
    let _ = writeln!(
        o,
        "<ul><li>Command: {command}</li><li>Build: {}</li><li>Machine and pinning: {}</li><li>From {} to {}</li></ul>",
        esc(&p.build),
        esc(&p.machine),
        esc(&p.started_at),
        esc(&p.ended_at)
    );
    let _ = writeln!(o, "<h3>Runs ({})</h3><ol class=\"subruns\">", p.runs.len());
    for r in &p.runs {
        let link = match &r.source {
            Some(src) => format!("<a href=\"{}\">{}</a>, ", esc(src), esc(src)),
            None => String::new(),
        };
        let _ = writeln!(
            o,
            "<li class=\"subrun\">{} / {}: {link}{}</li>",
            esc(&r.column),
            esc(&r.step),
            esc(&r.what)
        );
    }
    let _ = writeln!(o, "</ol>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_come_in_table_order() {
        let archs: Vec<String> = vec!["task-per-conn".into(), "cluster-mesh".into()];
        let mut names = vec![
            "timeline-cluster-mesh-node-loss-recovery",
            "timeline-cluster-mesh-node-loss",
            "timeline-cluster-mesh-idle",
            "timeline-task-per-conn-poison",
            "timeline-task-per-conn-broadcast",
            "timeline-task-per-conn-idle",
            "scaling_p99",
            "cpu_per_delivery",
            "latency_distribution",
            "memory_per_connection",
        ];
        names.sort_by_key(|n| chart_rank(n, &archs));
        assert_eq!(
            names,
            [
                "memory_per_connection",
                "latency_distribution",
                "cpu_per_delivery",
                "scaling_p99",
                "timeline-task-per-conn-idle",
                "timeline-task-per-conn-broadcast",
                "timeline-task-per-conn-poison",
                "timeline-cluster-mesh-idle",
                "timeline-cluster-mesh-node-loss",
                "timeline-cluster-mesh-node-loss-recovery",
            ]
        );
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_page_without_charts_still_renders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = crate::comparison::build("quick", &["a".into()], &Results::new(), dir.path());
        let page = render(&c, &Results::new(), &Drawn::default(), None, |_| None);
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
        assert!(page.contains("<th>a</th>") && page.contains("not measured"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "self-contained"
        );
    }

    #[test]
    fn text_from_summaries_is_escaped_and_the_page_runs_no_script() {
        let dir = tempfile::tempdir().expect("tempdir");
        let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
        let mut c = crate::comparison::build("quick", &[evil.into()], &Results::new(), dir.path());
        c.machine = evil.into();
        c.notes.push(evil.into());
        c.failures.push(evil.into());
        let drawn = Drawn {
            files: Vec::new(),
            svgs: vec![("chart".into(), "<svg><text>drawn</text></svg>".into())],
            linked: vec![format!("p{evil}")],
            skipped: vec![evil.into()],
        };
        let page = render(&c, &Results::new(), &drawn, None, |_| None);
        let lower = page.to_lowercase();
        assert!(
            !lower.contains("<script") && !lower.contains("<img"),
            "{page}"
        );
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            page.contains("<svg><text>drawn</text></svg>"),
            "the drawn chart is embedded"
        );
        assert!(page.contains(&format!(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
        )));
        assert!(CSP.contains("script-src 'none'") && CSP.contains("default-src 'none'"));
    }
}
