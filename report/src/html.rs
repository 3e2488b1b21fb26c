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
use crate::comparison::{Comparison, Results, StepResult};

/// The page's Content-Security-Policy: no scripts, no plugins, nothing fetched; its own inline
/// style and images beside it only.
pub const CSP: &str = "default-src 'none'; script-src 'none'; object-src 'none'; \
                       style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'";

/// Escapes text for HTML.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the page for comparison `c`, embedding the charts this process drew (`drawn`).
pub fn render(c: &Comparison, results: &Results, drawn: &Drawn) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>chatbench comparison — {suite}</title><style>\
         body{{font-family:sans-serif;margin:2em auto;max-width:1250px;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
         th{{background:#f3f3f3}}td.invalid,td.failed{{color:#a00}}td.not_measured{{color:#888}}\
         pre{{background:#f7f7f7;padding:1em;overflow:auto}}figure{{margin:1.5em 0}}\
         .chart svg{{max-width:100%;height:auto}}</style></head><body>\n",
        suite = esc(&c.suite)
    );
    let _ = writeln!(
        o,
        "<h1>chatbench comparison — suite <code>{}</code></h1>",
        esc(&c.suite)
    );
    let _ = writeln!(o, "<p>Machine: {}</p>", esc(&c.machine));
    o.push_str(&crate::claims::render_html(c.claims.as_ref(), esc));
    let _ = write!(o, "<table><thead><tr><th>question</th>");
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
    let _ = writeln!(o, "<h2>Conditions</h2><ul>");
    for r in &c.rows {
        let _ = writeln!(
            o,
            "<li><b>{}</b> — {}</li>",
            esc(&r.label),
            esc(&crate::comparison::conditions(c, r))
        );
    }
    let _ = writeln!(o, "</ul>");
    if !c.failures.is_empty() {
        let _ = writeln!(o, "<h2>Failures</h2><ul>");
        for f in &c.failures {
            let _ = writeln!(o, "<li>{}</li>", esc(f));
        }
        let _ = writeln!(o, "</ul>");
    }
    // The three comparison charts first, then the per-run timelines.
    let mut charts: Vec<&(String, String)> = drawn.svgs.iter().collect();
    charts.sort_by_key(|(name, _)| (name.starts_with("timeline-"), name.clone()));
    let _ = writeln!(o, "<h2>Charts</h2>");
    for (name, svg) in charts {
        // The SVG's XML prolog, if any, is not allowed inside HTML.
        let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
        let _ = writeln!(
            o,
            "<figure class=\"chart\" id=\"{n}\">{body}<figcaption>{n} (<a href=\"charts/{n}.png\">PNG</a>, <a href=\"charts/{n}.svg\">SVG</a>)</figcaption></figure>",
            n = esc(name)
        );
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
    let _ = writeln!(o, "<h2>Notes</h2><ul>");
    for n in &c.notes {
        let _ = writeln!(o, "<li>{}</li>", esc(n));
    }
    let _ = writeln!(o, "</ul>");
    // Scenario texts (once per scenario) and the provenance of the first run.
    let mut seen: Vec<&str> = Vec::new();
    let _ = writeln!(o, "<h2>Scenarios</h2>");
    let mut provenance = None;
    for r in results.values() {
        if let StepResult::Ran { summary, .. } = r {
            provenance.get_or_insert(&summary.provenance);
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
    if let Some(p) = provenance {
        let json = serde_json::to_string_pretty(p).unwrap_or_default();
        let _ = writeln!(o, "<h2>Provenance</h2><pre>{}</pre>", esc(&json));
    }
    let _ = writeln!(o, "</body></html>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let page = render(&c, &Results::new(), &Drawn::default());
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
        };
        let page = render(&c, &Results::new(), &drawn);
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
