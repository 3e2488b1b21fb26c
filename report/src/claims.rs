//! Claims, judged: a claims file (TOML, `docs/claims.md`) quotes what people say of an
//! architecture — "~2KB per connection", "sub-millisecond delivery" — and names, for each, the
//! column(s), a figure of the catalogue (`chatbench_model::figures`) and a comparison against a
//! value or against another column. [`judge`] decides each claim for each of its columns from
//! the comparison's cells alone: **holds** or **refuted** (with the measured value and its ratio
//! to the claimed one), **not measured** (saying why: the suite has no such cell, or the machine
//! cannot run what the claim is about) or **not judgeable** (the cell is invalid, failed, or was
//! measured on a busy machine).
//!
//! Pure: no files but the claims text given to [`parse`], no measuring. The "Claims" section of
//! `comparison.md`, `report.html` and `comparison.json` is rendered here too
//! ([`render_markdown`], [`render_html`]).

use std::fmt::Write;

use chatbench_model::figures;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::comparison::{Cell, CellStatus, Comparison, Results, StepResult, BUSY_MARK};

/// The claims file shipped with chatbench: the Elixir vs Node.js write-up's claims.
pub const ELIXIR_VS_NODE: &str = include_str!("../../claims/elixir-vs-node.toml");
/// Its path in the repository, as the Claims section names it.
pub const ELIXIR_VS_NODE_PATH: &str = "claims/elixir-vs-node.toml";

/// A claims file that cannot be used.
#[derive(Debug, Error)]
pub enum ClaimsError {
    /// Not TOML of the claims format.
    #[error("{file}: not a claims file: {reason} (format: docs/claims.md)")]
    Parse {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A claim is not complete or names what does not exist.
    #[error("{file}: claim {index} ({id}): {reason} (format: docs/claims.md)")]
    Claim {
        /// The file.
        file: String,
        /// 1-based position in the file.
        index: usize,
        /// The claim's id.
        id: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// A claims file: `[[claim]]` tables.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClaimsFile {
    /// The claims, in the order they are reported.
    #[serde(default)]
    pub claim: Vec<Claim>,
}

/// How a measured value is compared with the claimed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Op {
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// At most.
    #[serde(rename = "<=")]
    Le,
    /// More than.
    #[serde(rename = ">")]
    Gt,
    /// At least.
    #[serde(rename = ">=")]
    Ge,
    /// About: within a factor (`within`, default 2) either way.
    #[serde(rename = "~")]
    About,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "≤",
            Op::Gt => ">",
            Op::Ge => "≥",
            Op::About => "≈",
        }
    }
}

/// What the machine or the run must offer before a claim can be measured at all.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Needs {
    /// CPU cores (e.g. "uses all cores" needs ≥ 4 to mean anything).
    pub cores: Option<u64>,
    /// Open descriptors per process (a million connections need a million).
    pub descriptors: Option<u64>,
    /// Connections the column held in the comparison (`connections_held`).
    pub connections: Option<u64>,
}

/// One claim.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// Short stable name, e.g. `elixir-2kb-per-connection`.
    pub id: String,
    /// The claim, quoted.
    pub text: String,
    /// Where it was said.
    pub source: String,
    /// The column(s) it is about; each is judged on its own.
    pub columns: Vec<String>,
    /// The figure's catalogue key (docs/figures.md).
    #[serde(default)]
    pub figure: Option<String>,
    /// How the measured value compares with the claimed one.
    #[serde(default)]
    pub op: Option<Op>,
    /// The claimed value, in `unit`.
    #[serde(default)]
    pub value: Option<f64>,
    /// The unit of `value`: the unit of the figure's cells (KiB, ms, …).
    #[serde(default)]
    pub unit: Option<String>,
    /// Instead of a value: another column, whose figure (× `factor`) is the claimed value.
    #[serde(default)]
    pub against: Option<String>,
    /// With `against`: the factor (default 1).
    #[serde(default)]
    pub factor: Option<f64>,
    /// With `op = "~"`: the factor either way that still counts as "about" (default 2).
    #[serde(default)]
    pub within: Option<f64>,
    /// What the machine or the run must offer first.
    #[serde(default)]
    pub needs: Needs,
    /// How the claim's words were read as a comparison.
    #[serde(default)]
    pub reading: Option<String>,
    /// Set when no figure of the comparison can decide the claim: why (reported as is).
    #[serde(default)]
    pub not_measured: Option<String>,
}

/// Parses and checks a claims file (`file` names it in errors and in the Claims section).
pub fn parse(file: &str, text: &str) -> Result<ClaimsFile, ClaimsError> {
    let f: ClaimsFile = toml::from_str(text).map_err(|e| ClaimsError::Parse {
        file: file.into(),
        reason: e.to_string(),
    })?;
    for (i, c) in f.claim.iter().enumerate() {
        check(c).map_err(|reason| ClaimsError::Claim {
            file: file.into(),
            index: i + 1,
            id: c.id.clone(),
            reason,
        })?;
    }
    Ok(f)
}

fn check(c: &Claim) -> Result<(), String> {
    if c.columns.is_empty() {
        return Err("`columns` is empty: name the column(s) the claim is about".into());
    }
    if c.not_measured.is_some() {
        return Ok(());
    }
    let key = c
        .figure
        .as_deref()
        .ok_or("no `figure` (a catalogue key, docs/figures.md), and no `not_measured` reason")?;
    let fig = figures::by_key(key)
        .ok_or_else(|| format!("`figure = \"{key}\"` is not a catalogue key (docs/figures.md)"))?;
    let (_, unit) = figures::row_of(fig).ok_or_else(|| {
        format!("figure `{key}` has no cells in the comparison table: claims can name only figures the table shows (docs/figures.md)")
    })?;
    let op = c.op.ok_or("no `op` (one of <, <=, >, >=, ~)")?;
    match (c.value, &c.against) {
        (Some(_), None) => match c.unit.as_deref() {
            Some(u) if u == unit => {}
            Some(u) => {
                return Err(format!(
                    "`unit = \"{u}\"`, but figure `{key}`'s cells are in {unit}: give the value in {unit}"
                ))
            }
            None => return Err(format!("no `unit`: figure `{key}`'s cells are in {unit}")),
        },
        (None, Some(_)) => {
            if c.factor.is_some_and(|f| !(f.is_finite() && f > 0.0)) {
                return Err("`factor` must be a positive number".into());
            }
        }
        _ => {
            return Err(
                "give exactly one of `value` (with `unit`) and `against` (another column)".into(),
            )
        }
    }
    if op == Op::About && c.within.is_some_and(|w| !(w.is_finite() && w > 1.0)) {
        return Err("`within` must be a factor above 1, e.g. 2".into());
    }
    Ok(())
}

/// Facts of the machine the comparison ran on, read from its summaries' provenance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    /// CPU cores.
    pub cores: Option<u64>,
    /// Open descriptors a process may have (RLIMIT_NOFILE, hard).
    pub descriptors: Option<u64>,
}

impl Facts {
    /// From the first run that produced a summary.
    pub fn of(results: &Results) -> Facts {
        results
            .values()
            .find_map(|r| match r {
                StepResult::Ran { summary, .. } => Some(Facts {
                    cores: Some(summary.provenance.cpu_cores as u64),
                    descriptors: summary.provenance.rlimit_nofile.as_ref().map(|l| l.hard),
                }),
                StepResult::Failed { .. } => None,
            })
            .unwrap_or_default()
    }
}

/// A claim's verdict for one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The measured value satisfies the claim.
    Holds,
    /// It does not.
    Refuted,
    /// The comparison has no cell that can decide it (the reason says why).
    NotMeasured,
    /// The cell exists but is not a figure of the server (invalid, failed, machine busy).
    NotJudgeable,
}

impl Verdict {
    /// As the section shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Refuted => "refuted",
            Verdict::NotMeasured => "not measured",
            Verdict::NotJudgeable => "not judgeable",
        }
    }
}

/// One claim judged for one column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Judged {
    /// The claim's id.
    pub id: String,
    /// The claim, quoted.
    pub text: String,
    /// Where it was said.
    pub source: String,
    /// How the claim's words were read as a comparison (the file's `reading`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<String>,
    /// The column judged.
    pub column: String,
    /// The figure's key, if the claim names one.
    pub figure: Option<String>,
    /// The claim as a comparison, e.g. "≤ 2 KiB", "≤ 1 × node-ws".
    pub claimed: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The measured value, in the figure's cell unit, when there is one.
    pub measured: Option<f64>,
    /// The measured cell as the table shows it.
    pub measured_text: Option<String>,
    /// Measured ÷ claimed (the claimed value, or the other column's × factor), when both are
    /// non-zero numbers.
    pub ratio: Option<f64>,
    /// Why: the comparison made, or why it could not be.
    pub why: String,
    /// The `summary.json` the measured cell came from.
    pub cell_source: Option<String>,
}

/// The Claims section: which file, the machine facts used, every verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClaimsSection {
    /// The claims file, as given.
    pub file: String,
    /// The machine facts the `needs` were checked against.
    pub facts: Facts,
    /// One entry per (claim, column), in file order.
    pub judged: Vec<Judged>,
}

/// Whether the default claims file applies to a comparison of `columns`: it names one of them.
pub fn default_applies(file: &ClaimsFile, columns: &[String]) -> bool {
    file.claim
        .iter()
        .flat_map(|c| c.columns.iter().chain(&c.against))
        .any(|c| columns.contains(c))
}

/// Judges a claims file against `c` and puts the section into it: `given` (a file's name and
/// text, e.g. `--claims FILE`), or, without one, the shipped [`ELIXIR_VS_NODE`] when the
/// comparison has one of the columns it names (otherwise no section). Returns the text judged
/// (what the comparison folder keeps as `claims.toml`), `None` when there is no section.
pub fn attach<'a>(
    c: &mut Comparison,
    given: Option<(&str, &'a str)>,
    results: &Results,
) -> Result<Option<&'a str>, ClaimsError> {
    let (name, text, file) = match given {
        Some((name, text)) => (name, text, parse(name, text)?),
        None => {
            let file = parse(ELIXIR_VS_NODE_PATH, ELIXIR_VS_NODE)?;
            if !default_applies(&file, &c.archs) {
                return Ok(None);
            }
            (ELIXIR_VS_NODE_PATH, ELIXIR_VS_NODE, file)
        }
    };
    c.claims = Some(judge(name, &file, c, &Facts::of(results)));
    Ok(Some(text))
}

/// Judges every claim of `file` for each of its columns from `c`'s cells alone (and the
/// machine facts, for `needs`).
pub fn judge(name: &str, file: &ClaimsFile, c: &Comparison, facts: &Facts) -> ClaimsSection {
    let judged = file
        .claim
        .iter()
        .flat_map(|claim| {
            claim
                .columns
                .iter()
                .map(move |col| judge_one(claim, col, c, facts))
        })
        .collect();
    ClaimsSection {
        file: name.into(),
        facts: facts.clone(),
        judged,
    }
}

fn claimed_text(claim: &Claim) -> String {
    let Some(op) = claim.op else {
        return "—".into();
    };
    let within = match op {
        Op::About => format!(" (within ×{})", claim.within.unwrap_or(2.0)),
        _ => String::new(),
    };
    match (&claim.against, claim.value) {
        (Some(other), _) => format!(
            "{} {} × {other}{within}",
            op.as_str(),
            claim.factor.unwrap_or(1.0)
        ),
        (None, Some(v)) => format!(
            "{} {} {}{within}",
            op.as_str(),
            v,
            claim.unit.as_deref().unwrap_or("")
        )
        .trim_end()
        .to_string(),
        (None, None) => "—".into(),
    }
}

/// A usable cell's value, or the verdict and reason that stop the judgement.
fn usable(cell: &Cell, column: &str) -> Result<f64, (Verdict, String)> {
    match cell.status {
        CellStatus::Invalid | CellStatus::Failed => {
            return Err((
                Verdict::NotJudgeable,
                format!("{column}'s cell is {}: {}", cell.display, cell.condition),
            ))
        }
        CellStatus::NotMeasured | CellStatus::Stopped => {
            return Err((
                Verdict::NotMeasured,
                format!("{column}'s cell: {} ({})", cell.display, cell.condition),
            ))
        }
        CellStatus::Ok | CellStatus::Partial => {}
    }
    if cell.display.contains(BUSY_MARK) {
        return Err((
            Verdict::NotJudgeable,
            format!(
                "{column}'s cell was measured on a busy machine (other work on the server's CPUs): {}",
                cell.condition
            ),
        ));
    }
    cell.value.ok_or_else(|| {
        (
            Verdict::NotMeasured,
            format!("{column}'s cell has no figure: {}", cell.display),
        )
    })
}

fn cell_of<'c>(c: &'c Comparison, row: &str, column: &str) -> Result<&'c Cell, String> {
    let r = c.rows.iter().find(|r| r.key == row).ok_or_else(|| {
        format!("this comparison has no `{row}` row (its suite did not run the step)")
    })?;
    r.cells
        .get(column)
        .ok_or_else(|| format!("no {column} column in this comparison"))
}

/// Whether `needs` can be met here, or why not.
fn needs_met(claim: &Claim, column: &str, c: &Comparison, facts: &Facts) -> Result<(), String> {
    let n = &claim.needs;
    if let (Some(want), Some(have)) = (n.cores, facts.cores) {
        if have < want {
            return Err(format!("needs ≥ {want} cores; this machine has {have}"));
        }
    }
    if let (Some(want), Some(have)) = (n.descriptors, facts.descriptors) {
        if have < want {
            return Err(format!(
                "this machine caps a process at {have} descriptors; the claim is about {want}"
            ));
        }
    }
    if let Some(want) = n.connections {
        let held = cell_of(c, "connections_held", column)
            .ok()
            .and_then(|cell| cell.value);
        match held {
            Some(h) if h >= want as f64 => {}
            Some(h) => {
                return Err(format!(
                    "this comparison held {h:.0} connections for {column}; the claim is about {want} (a suite with more connections, e.g. `--suite full`, measures it)"
                ))
            }
            None => {
                return Err(format!(
                    "the claim is about {want} connections; this comparison has no count of {column}'s connections"
                ))
            }
        }
    }
    Ok(())
}

fn judge_one(claim: &Claim, column: &str, c: &Comparison, facts: &Facts) -> Judged {
    let mut j = Judged {
        id: claim.id.clone(),
        text: claim.text.clone(),
        source: claim.source.clone(),
        reading: claim.reading.clone(),
        column: column.into(),
        figure: claim.figure.clone(),
        claimed: claimed_text(claim),
        verdict: Verdict::NotMeasured,
        measured: None,
        measured_text: None,
        ratio: None,
        why: String::new(),
        cell_source: None,
    };
    if let Err((verdict, why)) = decide(claim, column, c, facts, &mut j) {
        j.verdict = verdict;
        j.why = why;
    }
    j
}

/// Fills `j`'s measured value and verdict, or returns the verdict that stopped it and why.
fn decide(
    claim: &Claim,
    column: &str,
    c: &Comparison,
    facts: &Facts,
    j: &mut Judged,
) -> Result<(), (Verdict, String)> {
    let not_measured = |why: String| (Verdict::NotMeasured, why);
    if let Some(why) = &claim.not_measured {
        return Err(not_measured(why.clone()));
    }
    if !c.archs.iter().any(|a| a == column) {
        return Err(not_measured(format!(
            "no {column} column in this comparison"
        )));
    }
    needs_met(claim, column, c, facts).map_err(not_measured)?;
    let (Some(key), Some(op)) = (claim.figure.as_deref(), claim.op) else {
        return Err(not_measured("the claim names no figure".into()));
    };
    let Some((row, _)) = figures::by_key(key).and_then(figures::row_of) else {
        return Err(not_measured(format!(
            "figure `{key}` has no row in the table"
        )));
    };
    let cell = cell_of(c, row, column).map_err(not_measured)?;
    j.measured_text = Some(cell.display.clone());
    j.cell_source = cell.source.clone();
    let measured = usable(cell, column)?;
    j.measured = Some(measured);
    let claimed = match (&claim.against, claim.value) {
        (Some(other), _) => {
            if !c.archs.iter().any(|a| a == other) {
                return Err(not_measured(format!(
                    "no {other} column in this comparison to compare with"
                )));
            }
            let other_cell = cell_of(c, row, other).map_err(not_measured)?;
            let v = usable(other_cell, other)?;
            j.claimed = format!("{} ({other}: {})", j.claimed, other_cell.display);
            v * claim.factor.unwrap_or(1.0)
        }
        (None, Some(v)) => v,
        (None, None) => return Err(not_measured("the claim names no value".into())),
    };
    let ratio = (claimed != 0.0 && measured.is_finite()).then(|| measured / claimed);
    j.ratio = ratio;
    let holds = match op {
        Op::Lt => measured < claimed,
        Op::Le => measured <= claimed,
        Op::Gt => measured > claimed,
        Op::Ge => measured >= claimed,
        Op::About => {
            let w = claim.within.unwrap_or(2.0);
            ratio.is_some_and(|r| r >= 1.0 / w && r <= w) || (measured == 0.0 && claimed == 0.0)
        }
    };
    j.verdict = if holds {
        Verdict::Holds
    } else {
        Verdict::Refuted
    };
    let partial = if cell.status == CellStatus::Partial {
        " (from a run that did not complete)"
    } else {
        ""
    };
    j.measured_text = Some(format!("{}{partial}", cell.display));
    j.why = format!(
        "measured {}{partial}, claimed {}{}",
        cell.display,
        j.claimed,
        ratio
            .map(|r| format!(": ×{} the claimed value", sig(r)))
            .unwrap_or_default()
    );
    Ok(())
}

/// Three significant digits, at least two decimals below 1.
fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{x:.digits$}")
}

/// Whether the claim was decided (holds or refuted): the row shows the figures, not a reason.
fn decided(j: &Judged) -> bool {
    matches!(j.verdict, Verdict::Holds | Verdict::Refuted)
}

/// The Markdown section (empty when there is no section).
pub fn render_markdown(section: Option<&ClaimsSection>) -> String {
    let Some(s) = section else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(out, "## Claims\n");
    let _ = writeln!(
        out,
        "Each claim of `{}` judged from this comparison's cells alone (docs/claims.md): **holds** or **refuted** with the measured value and its ratio to the claimed one, **not measured** (and why), **not judgeable** (the cell is invalid, failed or was measured on a busy machine).\n",
        s.file
    );
    let _ = writeln!(out, "| claim | column | claimed | measured | verdict |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    let md = |t: &str| t.replace('|', "\\|").replace('\n', " ");
    for j in &s.judged {
        let measured = match (&j.measured_text, &j.cell_source) {
            (Some(t), Some(src)) => format!("[{}]({src})", md(t)),
            (Some(t), None) => md(t),
            _ => "—".into(),
        };
        let reading = j
            .reading
            .as_deref()
            .map(|r| format!("; read as: {}", md(r)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| “{}” ({}{reading}) | {} | {} | {} | **{}**{}{} |",
            md(&j.text),
            md(&j.source),
            md(&j.column),
            md(&j.claimed),
            measured,
            j.verdict.as_str(),
            j.ratio
                .filter(|_| decided(j))
                .map(|r| format!(" (×{} the claimed value)", sig(r)))
                .unwrap_or_default(),
            if decided(j) {
                String::new()
            } else {
                format!(" — {}", md(&j.why))
            }
        );
    }
    out.push('\n');
    out
}

/// The HTML section (empty when there is no section); `esc` escapes text for HTML.
pub fn render_html(section: Option<&ClaimsSection>, esc: fn(&str) -> String) -> String {
    let Some(s) = section else {
        return String::new();
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<h2>Claims</h2>\n<p>Each claim of <code>{}</code> judged from this comparison's cells alone: holds or refuted with the measured value and its ratio to the claimed one, not measured (and why), not judgeable (the cell is invalid, failed or was measured on a busy machine).</p>",
        esc(&s.file)
    );
    let _ = writeln!(
        o,
        "<table><thead><tr><th>claim</th><th>column</th><th>claimed</th><th>measured</th><th>verdict</th></tr></thead><tbody>"
    );
    for j in &s.judged {
        let measured = match (&j.measured_text, &j.cell_source) {
            (Some(t), Some(src)) => format!("<a href=\"{}\">{}</a>", esc(src), esc(t)),
            (Some(t), None) => esc(t),
            _ => "—".into(),
        };
        let class = match j.verdict {
            Verdict::Holds => "ok",
            Verdict::Refuted => "failed",
            Verdict::NotMeasured => "not_measured",
            Verdict::NotJudgeable => "invalid",
        };
        let _ = writeln!(
            o,
            "<tr><td>“{}” <small>({}{})</small></td><td>{}</td><td>{}</td><td>{measured}</td><td class=\"{class}\"><b>{}</b>{}</td></tr>",
            esc(&j.text),
            esc(&j.source),
            j.reading
                .as_deref()
                .map(|r| format!("; read as: {}", esc(r)))
                .unwrap_or_default(),
            esc(&j.column),
            esc(&j.claimed),
            esc(j.verdict.as_str()),
            match (decided(j), j.ratio) {
                (true, Some(r)) => format!(" (×{} the claimed value)", sig(r)),
                (true, None) => String::new(),
                (false, _) => format!(" — {}", esc(&j.why)),
            }
        );
    }
    o.push_str("</tbody></table>\n");
    o
}

#[cfg(test)]
mod tests;
