//! The comparison's page: its sections in reading order, one list that both `comparison.md`
//! and `report.html` are written from, so the two never disagree.
//!
//! A decision-maker reads it top to bottom in a minute: the title (labelled when the suite
//! ran with `--tiny`), a one-paragraph verdict (which column did best on each question, with
//! the caveats), what each column stands for (the real-world systems it models, linked to
//! docs/architectures.md), the table, the claims, the charts in table order, the conditions
//! once per step (rows measured under the same conditions share one line), failures, notes,
//! the scenarios and the provenance of the whole comparison with every run it made. Texts are
//! Markdown with inline code, bold and links only; [`inline_html`] renders that subset.

use std::fmt::Write;

use chatbench_model::figures::{self, Better};

use crate::caveats::TINY_MARK;
use crate::comparison::{conditions, Cell, CellStatus, Comparison};

/// What one column of a comparison stands for on its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDoc {
    /// A sentence: the real-world systems it models.
    pub meaning: &'static str,
    /// Its section of docs/architectures.md ("" for none).
    pub anchor: &'static str,
}

/// What a column of a comparison stands for, by its name (the name is all a results file
/// carries); `None` for a column that is no built-in one. Given by the crate that defines the
/// columns — the harness's `compare::column_doc`, where each architecture, backplane and peer
/// describes itself — since this crate reads results files only and names no architecture.
pub type ColumnDocs = fn(&str) -> Option<ColumnDoc>;

/// What a column given by name (`compare --column`, or one no built-in column is called)
/// stands for.
pub const BY_NAME: ColumnDoc = ColumnDoc {
    meaning: "a server given by name (not a built-in architecture)",
    anchor: "",
};

/// What `column` stands for, through `docs` ([`BY_NAME`] when it knows no such column).
pub fn column_doc(docs: ColumnDocs, column: &str) -> ColumnDoc {
    docs(column).unwrap_or(BY_NAME)
}

/// One section of the page.
#[derive(Debug, Clone, PartialEq)]
pub enum Section {
    /// The verdict paragraph.
    Verdict(String),
    /// What each column stands for: (column, meaning, anchor in docs/architectures.md).
    Columns(Vec<(String, String, String)>),
    /// The table (rendered from the comparison's rows).
    Table,
    /// The claims judged, if any.
    Claims,
    /// The charts (embedded in the HTML; the Markdown points at them).
    Charts,
    /// Conditions: (the rows' questions, their conditions), once per group of rows.
    Conditions(Vec<(Vec<String>, String)>),
    /// Steps that failed.
    Failures(Vec<String>),
    /// Notes every reader needs.
    Notes(Vec<String>),
    /// The scenarios (their texts in the HTML; the folder's `scenarios/` in the Markdown).
    Scenarios,
    /// The provenance of the whole comparison.
    Provenance,
}

/// The page's title, labelled when the suite ran with `--tiny`.
pub fn title(c: &Comparison) -> String {
    format!(
        "chatbench comparison — suite `{}`{}",
        c.suite,
        if c.tiny {
            format!(" {TINY_MARK}")
        } else {
            String::new()
        }
    )
}

/// The sections, in reading order; `docs` says what each column stands for.
pub fn sections(c: &Comparison, docs: ColumnDocs) -> Vec<Section> {
    let mut out = vec![
        Section::Verdict(verdict(c)),
        Section::Columns(
            c.archs
                .iter()
                .map(|a| {
                    let d = column_doc(docs, a);
                    (a.clone(), d.meaning.to_string(), d.anchor.to_string())
                })
                .collect(),
        ),
        Section::Table,
        Section::Claims,
        Section::Charts,
        Section::Conditions(grouped_conditions(c)),
    ];
    if !c.failures.is_empty() {
        out.push(Section::Failures(c.failures.clone()));
    }
    out.push(Section::Notes(c.notes.clone()));
    out.push(Section::Scenarios);
    out.push(Section::Provenance);
    out
}

/// Rows that share their conditions (the rows of one step, usually) listed once together.
fn grouped_conditions(c: &Comparison) -> Vec<(Vec<String>, String)> {
    let mut out: Vec<(Vec<String>, String)> = Vec::new();
    for r in &c.rows {
        let cond = conditions(c, r);
        match out.iter_mut().find(|(_, text)| *text == cond) {
            Some((labels, _)) => labels.push(r.label.clone()),
            None => out.push((vec![r.label.clone()], cond)),
        }
    }
    out
}

/// Which way a row's figure is better, when the figure catalogue says.
fn better_of(row_key: &str) -> Option<Better> {
    figures::CATALOGUE
        .iter()
        .find(|f| figures::row_of(f).is_some_and(|(k, _)| k == row_key))
        .map(|f| f.better)
}

/// The marks a cell's text carries beyond its figure ("(machine busy)", …).
fn marks_of(cell: &Cell) -> Vec<&'static str> {
    use crate::caveats::Caveat;
    [
        Caveat::Busy,
        Caveat::GeneratorBound,
        Caveat::UnreliableKernel,
        Caveat::Tiny,
        Caveat::Rough,
    ]
    .into_iter()
    .map(Caveat::mark)
    .filter(|m| cell.display.contains(m))
    .collect()
}

/// The verdict: for each question with figures from two columns or more, the column that did
/// best (with its figure and any caveat), and what the reader must keep in mind.
pub fn verdict(c: &Comparison) -> String {
    let mut parts = Vec::new();
    let mut same = Vec::new();
    let mut caveated = false;
    let mut rough = false;
    for r in &c.rows {
        let Some(better) = better_of(&r.key) else {
            continue;
        };
        let mut figures: Vec<(&String, &Cell, f64)> = c
            .archs
            .iter()
            .filter_map(|a| {
                let cell = r.cells.get(a)?;
                let v = cell.value?;
                matches!(cell.status, CellStatus::Ok | CellStatus::Partial).then_some((a, cell, v))
            })
            .collect();
        if figures.len() < 2 {
            continue;
        }
        figures.sort_by(|x, y| match better {
            Better::Lower => x.2.total_cmp(&y.2),
            Better::Higher => y.2.total_cmp(&x.2),
        });
        let best = figures[0].2;
        if figures.iter().all(|f| f.2 == best) {
            same.push(r.label.clone());
            continue;
        }
        let tied: Vec<String> = figures
            .iter()
            .take_while(|f| f.2 == best)
            .map(|(a, cell, _)| {
                let marks = marks_of(cell);
                rough |= marks.contains(&crate::caveats::Caveat::Rough.mark());
                caveated |= marks
                    .iter()
                    .any(|m| *m != crate::caveats::Caveat::Rough.mark());
                format!("**{a}** ({})", cell.display)
            })
            .collect();
        parts.push(format!("{}: {}", r.label, tied.join(" and ")));
    }
    let mut text = String::new();
    if c.tiny {
        text.push_str("This comparison ran with `--tiny`: its sizes are too small for any figure to mean anything; it checks that the suite runs, not which column is better. ");
    }
    if parts.is_empty() && same.is_empty() {
        text.push_str("No question has figures from two columns or more: nothing to compare.");
    }
    if !parts.is_empty() {
        let _ = write!(text, "Best on each question — {}.", parts.join("; "));
    }
    if !same.is_empty() {
        let _ = write!(text, " The same in every column: {}.", same.join("; "));
    }
    if caveated {
        text.push_str(" A best figure with a mark (machine busy, generator-bound, unreliable) is not the server's alone: rerun before quoting it.");
    }
    if rough {
        text.push_str(" A best figure marked rough is the median of fewer than 5 valid repeats: its interval is only the range of those runs.");
    }
    let marked: usize = c
        .rows
        .iter()
        .flat_map(|r| r.cells.values())
        .filter(|cell| !marks_of(cell).is_empty())
        .count();
    if marked > 0 {
        let _ = write!(
            text,
            " {marked} cell(s) of the table carry a caveat mark; the charts mark the same figures."
        );
    }
    if !c.failures.is_empty() {
        let _ = write!(text, " {} step(s) failed (see Failures).", c.failures.len());
    }
    text
}

/// The Markdown subset of the page's texts (`code`, **bold**, [text](link)) as HTML, escaped.
pub fn inline_html(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(['`', '*', '[']) {
        out.push_str(&esc(&rest[..i]));
        let tail = &rest[i..];
        if let Some(body) = tail.strip_prefix('`') {
            if let Some(end) = body.find('`') {
                let _ = write!(out, "<code>{}</code>", esc(&body[..end]));
                rest = &body[end + 1..];
                continue;
            }
        } else if let Some(body) = tail.strip_prefix("**") {
            if let Some(end) = body.find("**") {
                let _ = write!(out, "<b>{}</b>", inline_html(&body[..end]));
                rest = &body[end + 2..];
                continue;
            }
        } else if let Some(body) = tail.strip_prefix('[') {
            if let Some((text, after)) = body.split_once("](") {
                if let Some(end) = after.find(')') {
                    let href = &after[..end];
                    // Links to files beside the page only: never a scheme.
                    if !href.contains(':') {
                        let _ = write!(out, "<a href=\"{}\">{}</a>", esc(href), inline_html(text));
                        rest = &after[end + 1..];
                        continue;
                    }
                }
            }
        }
        // Not markup: the character itself.
        let c = tail.chars().next().unwrap_or(' ');
        out.push_str(&esc(&c.to_string()));
        rest = &tail[c.len_utf8()..];
    }
    out.push_str(&esc(rest));
    out
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
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

/// The table in Markdown: every cell linked to its `summary.json`.
fn table_markdown(c: &Comparison, out: &mut String) {
    let _ = write!(
        out,
        "| question{} |",
        if c.tiny {
            format!(" {TINY_MARK}")
        } else {
            String::new()
        }
    );
    for a in &c.archs {
        let _ = write!(out, " {a} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in &c.archs {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for r in &c.rows {
        let _ = write!(out, "| {} |", r.label);
        for a in &c.archs {
            let text = match r.cells.get(a) {
                Some(Cell {
                    display,
                    source: Some(src),
                    repeats: None,
                    ..
                }) => format!("[{display}]({src})"),
                Some(Cell { display, .. }) => display.clone(),
                None => "—".into(),
            };
            let _ = write!(out, " {} |", text.replace('|', "\\|"));
        }
        out.push('\n');
    }
}

/// What the terminal shows at the end of `compare` and `report DIR`: the title, the verdict
/// and the table; conditions, notes and provenance stay in the files (a full suite's
/// provenance lists over a hundred runs).
pub fn terminal(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", title(c));
    let _ = writeln!(out, "{}\n", verdict(c));
    table_markdown(c, &mut out);
    if !c.failures.is_empty() {
        let _ = writeln!(out, "\nFailures:");
        for f in &c.failures {
            let _ = writeln!(out, "- {f}");
        }
    }
    let _ = writeln!(
        out,
        "\nConditions, notes, the columns' meaning and the provenance: comparison.md and report.html."
    );
    out
}

/// `comparison.md`; `docs` says what each column stands for.
pub fn markdown(c: &Comparison, docs: ColumnDocs) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", title(c));
    let _ = writeln!(out, "Machine: {}\n", c.machine);
    for s in sections(c, docs) {
        match s {
            Section::Verdict(text) => {
                let _ = writeln!(out, "## Verdict\n\n{text}\n");
            }
            Section::Columns(cols) => {
                let _ = writeln!(out, "## The columns\n");
                for (col, meaning, _) in &cols {
                    let _ = writeln!(out, "- **{col}** — {meaning}");
                }
                let _ = writeln!(
                    out,
                    "\nEach is described in docs/architectures.md of the chatbench repository.\n"
                );
            }
            Section::Table => {
                let _ = writeln!(out, "## The table\n");
                table_markdown(c, &mut out);
                out.push('\n');
            }
            Section::Claims => out.push_str(&crate::claims::render_markdown(c.claims.as_ref())),
            Section::Charts => {
                let _ = writeln!(
                    out,
                    "## Charts\n\nIn report.html (embedded, in table order) and in charts/ (PNG and SVG).\n"
                );
            }
            Section::Conditions(groups) => {
                let _ = writeln!(out, "## Conditions\n");
                for (labels, cond) in &groups {
                    let _ = writeln!(out, "- **{}** — {cond}", labels.join(" · "));
                }
                out.push('\n');
            }
            Section::Failures(f) => {
                let _ = writeln!(out, "## Failures\n");
                for f in &f {
                    let _ = writeln!(out, "- {f}");
                }
                out.push('\n');
            }
            Section::Notes(notes) => {
                let _ = writeln!(out, "## Notes\n");
                for n in &notes {
                    let _ = writeln!(out, "- {n}");
                }
                out.push('\n');
            }
            Section::Scenarios => {
                let _ = writeln!(
                    out,
                    "## Scenarios\n\nThe scenario files as run are in scenarios/; each run's summary.json holds its own text.\n"
                );
            }
            Section::Provenance => provenance_markdown(c, &mut out),
        }
    }
    out
}

fn provenance_markdown(c: &Comparison, out: &mut String) {
    let _ = writeln!(out, "## Provenance\n");
    let Some(p) = &c.provenance else {
        let _ = writeln!(out, "Not recorded.");
        return;
    };
    let command = if p.command_line.is_empty() {
        "not recorded (rebuilt by `chatbench report` from the files)".to_string()
    } else {
        format!("`{}`", p.command_line.join(" "))
    };
    let _ = writeln!(out, "- Command: {command}");
    let _ = writeln!(out, "- Build: {}", p.build);
    let _ = writeln!(out, "- Machine and pinning: {}", p.machine);
    let _ = writeln!(out, "- From {} to {}", p.started_at, p.ended_at);
    let _ = writeln!(out, "- Runs ({}):", p.runs.len());
    for r in &p.runs {
        match &r.source {
            Some(src) => {
                let _ = writeln!(
                    out,
                    "  - {} / {}: [{src}]({src}), {}",
                    r.column, r.step, r.what
                );
            }
            None => {
                let _ = writeln!(out, "  - {} / {}: {}", r.column, r.step, r.what);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markdown_becomes_html_and_text_is_escaped() {
        assert_eq!(
            inline_html("use `apt-get install redis-server` <now> **here** [x](runs/a/summary.json)"),
            "use <code>apt-get install redis-server</code> &lt;now&gt; <b>here</b> <a href=\"runs/a/summary.json\">x</a>"
        );
        // A link with a scheme is not a link; an unpaired backtick is text.
        assert_eq!(
            inline_html("[x](javascript:alert(1)) a`b"),
            "[x](javascript:alert(1)) a`b"
        );
    }

    #[test]
    fn the_verdict_names_the_best_column_per_question_with_its_caveat() {
        use crate::comparison::{build, Results, Step, StepResult};
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut r = Results::new();
        for col in ["a", "b"] {
            r.insert(
                (col.into(), Step::Broadcast),
                StepResult::load(&base.join("broadcast")).expect("fixture"),
            );
        }
        let mut c = build("quick", &["a".into(), "b".into()], &r, &base);
        let row = c
            .rows
            .iter_mut()
            .find(|r| r.key == "latency_p99_ms")
            .expect("p99 row");
        let cell = row.cells.get_mut("b").expect("b's cell");
        cell.value = Some(1.0);
        cell.display = "1.000 ms (machine busy)".into();
        let v = verdict(&c);
        assert!(
            v.contains("Delivery latency p99: **b** (1.000 ms (machine busy))"),
            "{v}"
        );
        assert!(v.contains("not the server's alone"), "{v}");
        assert!(
            v.contains("The same in every column:") && v.contains("Delivery latency p50"),
            "{v}"
        );
        assert!(!v.contains("Delivery latency p99: **a**"), "{v}");
        assert!(!v.contains("marked rough"), "{v}");
        // A rough best figure: said apart from the not-the-server's-alone marks.
        let row = c
            .rows
            .iter_mut()
            .find(|r| r.key == "latency_p99_ms")
            .expect("p99 row");
        let cell = row.cells.get_mut("b").expect("b's cell");
        cell.display = "1.000 ms (median of 3 runs; 95 % CI 0.900–1.200 (rough: fewer than 5 valid runs); CV 9.0 %)".into();
        let v = verdict(&c);
        assert!(
            v.contains("marked rough is the median of fewer than 5"),
            "{v}"
        );
        assert!(!v.contains("not the server's alone"), "{v}");
        c.tiny = true;
        assert!(verdict(&c).starts_with("This comparison ran with `--tiny`"));
    }

    #[test]
    fn a_column_its_docs_do_not_know_is_a_server_given_by_name() {
        fn known(name: &str) -> Option<ColumnDoc> {
            (name == "a").then_some(ColumnDoc {
                meaning: "the a model",
                anchor: "a",
            })
        }
        assert_eq!(column_doc(known, "a").meaning, "the a model");
        assert_eq!(column_doc(known, "b"), BY_NAME);
        assert!(BY_NAME.meaning.starts_with("a server given by name"));
        assert_eq!(BY_NAME.anchor, "");
    }
}
