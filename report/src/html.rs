//! `report.html`: one self-contained page for sharing — the comparison table, the charts
//! (inline SVG), the conditions, the scenario texts and the provenance. Nothing is fetched: no
//! scripts, styles, fonts or images from the network; links point at the results files beside
//! the page.

use std::fmt::Write;
use std::path::Path;

use crate::comparison::{Comparison, Results, StepResult};

/// Escapes text for HTML.
fn esc(s: &str) -> String {
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

/// The charts in `dir/charts/*.svg`, in name order, as (name, SVG text). Unreadable files are
/// skipped (the page says how many charts it has).
fn charts(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir.join("charts"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "svg"))
                .filter_map(|p| {
                    let name = p.file_stem()?.to_string_lossy().to_string();
                    let text = std::fs::read_to_string(&p).ok()?;
                    text.contains("<svg").then_some((name, text))
                })
                .collect()
        })
        .unwrap_or_default();
    // The three comparison charts first, then the per-run timelines.
    v.sort_by_key(|(name, _)| (name.starts_with("timeline-"), name.clone()));
    v
}

/// The names of the per-point timelines in `dir/charts/points/` (SVG files), in name order.
fn point_timelines(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir.join("charts").join(crate::sweep_charts::POINTS_DIR))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "svg"))
                    .filter_map(|p| Some(p.file_stem()?.to_string_lossy().to_string()))
                    .collect()
            })
            .unwrap_or_default();
    v.sort();
    v
}

/// Renders the page for the comparison in `dir`.
pub fn render(dir: &Path, c: &Comparison, results: &Results) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
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
    let charts = charts(dir);
    let _ = writeln!(o, "<h2>Charts</h2>");
    for (name, svg) in &charts {
        // The SVG's XML prolog, if any, is not allowed inside HTML.
        let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
        let _ = writeln!(
            o,
            "<figure class=\"chart\" id=\"{n}\">{body}<figcaption>{n} (<a href=\"charts/{n}.png\">PNG</a>, <a href=\"charts/{n}.svg\">SVG</a>)</figcaption></figure>",
            n = esc(name)
        );
    }
    let points = point_timelines(dir);
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
    // A marker a browser check can read: the page rendered and how many charts it shows.
    let _ = writeln!(
        o,
        "<script>document.body.dataset.charts = String(document.querySelectorAll('figure.chart svg').length);\
         document.body.dataset.ready = 'yes';</script>"
    );
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
        let page = render(dir.path(), &c, &Results::new());
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
        assert!(page.contains("<th>a</th>") && page.contains("not measured"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "self-contained"
        );
    }
}
