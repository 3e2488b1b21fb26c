//! Charts of a comparison and of single runs, drawn with plotters into PNG and SVG.
//!
//! This module owns:
//! - the charts of a comparison folder ([`render_comparison_charts`]): the delivery-latency
//!   percentile distribution per architecture (from each broadcast run's `latency.hgrm`), memory
//!   per idle connection (user space and kernel, from the idle runs' summaries), server CPU per
//!   delivered message (from the broadcast runs' summaries), and one timeline per run;
//! - the timeline of one run ([`run_timeline`], from its `timeseries.csv`);
//! - the parser of HdrHistogram percentile-distribution text ([`parse_hgrm`]);
//! - the font: DejaVu Sans is embedded (`assets/fonts/`, licence beside it) and registered
//!   with plotters, so PNGs have text on a machine without system fonts.
//!
//! Every chart stands on its own: title, axis labels with units, legend, and a footnote with
//! the machine and the date of the runs (from the summaries' provenance). A run that is invalid
//! (generator-bound) or failed is never drawn as a number: it is left out and named in the
//! legend or on its slot, and in the footnote, with its reason.
//!
//! Files are written atomically: each image is rendered in memory (PNG through the `image`
//! encoder, SVG as a string) and written with [`write_file_atomic`]; the SVG text stays in
//! memory too ([`Drawn`]), and that is what `report.html` embeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chatbench_model::results::{write_file_atomic, ResultsError, RunStatus, SeriesRow, Summary};
use chatbench_model::series;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use thiserror::Error;

use crate::caveats::Caveat;
pub use crate::comparison::Results;
use crate::comparison::{Runs, Step, StepResult};

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/LICENSE-DejaVu.txt`).
const FONT_TTF: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
/// The family every chart uses, registered to [`FONT_TTF`].
const FONT: &str = "sans-serif";

/// Width and height of the comparison charts, pixels.
pub(crate) const CHART_SIZE: (u32, u32) = (1200, 750);
/// Width and height of a run timeline, pixels.
const TIMELINE_SIZE: (u32, u32) = (1200, 1100);

/// One colour per architecture (by column order), and for the series of a chart.
pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];
pub(crate) const EXCLUDED_GREY: RGBColor = RGBColor(150, 150, 150);
pub(crate) const WARN_RED: RGBColor = RGBColor(170, 20, 20);

/// Errors drawing or writing charts; each names the file concerned.
#[derive(Debug, Error)]
pub enum ChartError {
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An input file is not in the expected format.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why (with the line, when known).
        reason: String,
    },
    /// plotters failed while drawing (or the PNG encoder failed).
    #[error("cannot draw {path}: {reason}")]
    Draw {
        /// The chart file being drawn.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A chart (or the charts folder) could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: ResultsError,
    },
    /// The embedded font could not be registered (a bug: the shipped TTF is broken).
    #[error("the embedded font assets/fonts/DejaVuSans.ttf could not be loaded")]
    Font,
}

/// A malformed `latency.hgrm`.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("line {line}: {reason}")]
pub struct HgrmError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses HdrHistogram percentile-distribution text (`Value Percentile TotalCount
/// 1/(1-Percentile)`, values in ms as chatbench writes them) into `(percentile, value_ms)`
/// pairs, percentile in 0..=1, in file order. Comment lines (`#[Mean …]`) and blank lines are
/// skipped; an empty histogram gives an empty list.
pub fn parse_hgrm(text: &str) -> Result<Vec<(f64, f64)>, HgrmError> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut header_seen = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |reason: String| HgrmError {
            line: i + 1,
            reason,
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !header_seen {
            if line.starts_with("Value") && line.contains("Percentile") {
                header_seen = true;
                continue;
            }
            return Err(err(
                "expected the header `Value Percentile TotalCount 1/(1-Percentile)`".into(),
            ));
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !(3..=4).contains(&fields.len()) {
            return Err(err(format!(
                "expected 3 or 4 columns (Value Percentile TotalCount [1/(1-Percentile)]), found {}",
                fields.len()
            )));
        }
        let num = |s: &str, what: &str| -> Result<f64, HgrmError> {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| err(format!("{what} `{s}` is not a number")))
        };
        let value = num(fields[0], "Value")?;
        let q = num(fields[1], "Percentile")?;
        fields[2]
            .parse::<u64>()
            .map_err(|_| err(format!("TotalCount `{}` is not a count", fields[2])))?;
        if let Some(inv) = fields.get(3) {
            num(inv, "1/(1-Percentile)")?;
        }
        if value < 0.0 {
            return Err(err(format!("Value {value} is negative")));
        }
        if !(0.0..=1.0).contains(&q) {
            return Err(err(format!("Percentile {q} is outside 0..1")));
        }
        if let Some(&(prev, _)) = out.last() {
            if q < prev {
                return Err(err(format!("Percentile {q} is below the previous {prev}")));
            }
        }
        out.push((q, value));
    }
    if !header_seen {
        return Err(HgrmError {
            line: 1,
            reason: "empty file: no header `Value Percentile TotalCount 1/(1-Percentile)`".into(),
        });
    }
    Ok(out)
}

/// What the comparison charts are drawn from: the architectures in column order and the
/// results of each step, exactly as `chatbench compare` keeps them.
#[derive(Debug, Clone, Copy)]
pub struct ChartInputs<'a> {
    /// Architectures, in column order (colours follow this order).
    pub archs: &'a [String],
    /// Each (architecture, step)'s outcome; a missing step is shown as "not run".
    pub results: &'a Results,
    /// Every run of each (architecture, step): a repeated broadcast step's CPU bar is the
    /// median over its repeats with the 95 % interval ([`crate::repeats`]), as in the table.
    pub runs: &'a Runs,
    /// The comparison ran with `--tiny`: every chart says its figures are not meaningful.
    pub tiny: bool,
}

/// Charts drawn by this process: the files written, and each chart's SVG text as drawn, kept
/// in memory for `report.html` (which embeds only these, never a file read back from a folder:
/// nothing in a results folder is trusted).
#[derive(Debug, Default, Clone)]
pub struct Drawn {
    /// Files written: a PNG and an SVG per chart.
    pub files: Vec<PathBuf>,
    /// Each chart to embed: its name and its SVG text, in drawing order.
    pub svgs: Vec<(String, String)>,
    /// Charts drawn but only linked from the page (the timelines of every sweep point and
    /// repeat, in `charts/points/`), by name.
    pub linked: Vec<String>,
    /// Charts that could not be drawn, each with why ("timeline-epoll-idle: cannot read …").
    pub skipped: Vec<String>,
}

impl Drawn {
    /// Adds `other`'s charts after these.
    pub fn add(&mut self, other: Drawn) {
        self.files.extend(other.files);
        self.svgs.extend(other.svgs);
        self.linked.extend(other.linked);
        self.skipped.extend(other.skipped);
    }

    /// Adds a chart drawn, or names it among those skipped with the error.
    pub fn add_or_skip(&mut self, name: &str, drawn: Result<Drawn, ChartError>) {
        match drawn {
            Ok(d) => self.add(d),
            Err(e) => self.skipped.push(format!("{name}: {e}")),
        }
    }
}

/// Renders the charts of a comparison into `comparison_dir/charts/`: `latency_distribution`,
/// `memory_per_connection`, `cpu_per_delivery` and `timeline-<arch>-<step>` for every run, each
/// as `.png` and `.svg`. Returns what it drew.
///
/// A broadcast run whose `latency.hgrm` cannot be read is left out of the latency chart with
/// the reason; a run whose `timeseries.csv` cannot be read has no timeline, and
/// [`Drawn::skipped`] says so (the other charts are drawn all the same).
pub fn render_comparison_charts(
    comparison_dir: &Path,
    inputs: &ChartInputs<'_>,
) -> Result<Drawn, ChartError> {
    let out = prepare_charts_dir(comparison_dir)?;
    let tiny = inputs.tiny;
    let mut written = Drawn::default();
    written.add(write_chart(
        &out,
        "memory_per_connection",
        &memory_chart(inputs),
        tiny,
    )?);
    written.add(write_chart(
        &out,
        "latency_distribution",
        &latency_chart(inputs),
        tiny,
    )?);
    written.add(write_chart(
        &out,
        "cpu_per_delivery",
        &cpu_chart(inputs),
        tiny,
    )?);
    for ((arch, step), r) in inputs.results {
        if let StepResult::Ran { dir, summary } = r {
            let name = format!("timeline-{}-{}", file_safe(arch), step.as_str());
            let drawn = timeline_of(dir, summary, &out, &name, tiny);
            written.add_or_skip(&name, drawn);
        }
    }
    Ok(written)
}

/// Registers the font and creates `comparison_dir/charts/`; returns that folder.
pub(crate) fn prepare_charts_dir(comparison_dir: &Path) -> Result<PathBuf, ChartError> {
    register_fonts()?;
    let out = comparison_dir.join("charts");
    create_dir(&out)?;
    Ok(out)
}

/// Creates `dir` (and its parents) for chart files.
pub(crate) fn create_dir(dir: &Path) -> Result<(), ChartError> {
    std::fs::create_dir_all(dir).map_err(|source| ChartError::Write {
        path: dir.to_path_buf(),
        source: ResultsError::Io {
            path: dir.to_path_buf(),
            source,
        },
    })
}

/// Renders the timeline of the run in `run_dir` (its `timeseries.csv` and `summary.json`) as
/// `out_dir/<name>.png` and `.svg`: connections open, messages per second, delivery latency
/// p50/p99 and CPU (server and generator) per second, phases shaded. Returns the files written.
pub fn run_timeline(
    run_dir: &Path,
    out_dir: &Path,
    name: &str,
) -> Result<Vec<PathBuf>, ChartError> {
    register_fonts()?;
    let spath = run_dir.join("summary.json");
    let summary = match StepResult::load(run_dir) {
        Ok(StepResult::Ran { summary, .. }) => *summary,
        Ok(StepResult::Failed { reason }) => {
            return Err(ChartError::Parse {
                path: spath,
                reason,
            })
        }
        Err(e) => {
            return Err(ChartError::Parse {
                path: spath,
                reason: e.to_string(),
            })
        }
    };
    Ok(timeline_of(run_dir, &summary, out_dir, name, false)?.files)
}

/// The timeline of the run in `run_dir`, described by `summary` (as the caller holds it).
pub(crate) fn timeline_of(
    run_dir: &Path,
    summary: &Summary,
    out_dir: &Path,
    name: &str,
    tiny: bool,
) -> Result<Drawn, ChartError> {
    let (tpath, bytes) = read_timeseries(run_dir)?;
    let rows = parse_timeseries(&bytes).map_err(|reason| ChartError::Parse {
        path: tpath.clone(),
        reason,
    })?;
    let chart = timeline_chart(summary, &rows);
    let mut written = write_chart(out_dir, name, &chart, tiny)?;
    if let Some(chart) = node_loss_chart(summary, &rows) {
        written.add(write_chart(out_dir, &node_loss_name(name), &chart, tiny)?);
    }
    Ok(written)
}

/// The run's `timeseries.csv`, or its gzipped form `timeseries.csv.gz` (a committed baseline
/// keeps that when size matters), with the path read.
pub(crate) fn read_timeseries(run_dir: &Path) -> Result<(PathBuf, Vec<u8>), ChartError> {
    let plain = run_dir.join("timeseries.csv");
    let gz = run_dir.join(TIMESERIES_GZ);
    if !plain.is_file() && gz.is_file() {
        use std::io::Read;
        let file = std::fs::File::open(&gz).map_err(|source| ChartError::Read {
            path: gz.clone(),
            source,
        })?;
        // Bounded: a timeseries of a day-long run is a few MB; more is not ours.
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(file)
            .take(MAX_TIMESERIES_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ChartError::Read {
                path: gz.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_TIMESERIES_BYTES {
            return Err(ChartError::Parse {
                path: gz,
                reason: format!("more than {MAX_TIMESERIES_BYTES} bytes uncompressed"),
            });
        }
        return Ok((gz, bytes));
    }
    let bytes = std::fs::read(&plain).map_err(|source| ChartError::Read {
        path: plain.clone(),
        source,
    })?;
    Ok((plain, bytes))
}

/// The gzipped form of a run's `timeseries.csv`.
pub const TIMESERIES_GZ: &str = "timeseries.csv.gz";

/// The most a gzipped `timeseries.csv` may expand to.
const MAX_TIMESERIES_BYTES: u64 = 256 * 1024 * 1024;

/// The name of the node-loss zoom beside timeline `name`: "<name>-node-loss", or, when the
/// timeline is already named after the node-loss step, "<name>-recovery" (never
/// "…-node-loss-node-loss").
fn node_loss_name(name: &str) -> String {
    if name.ends_with("node-loss") {
        format!("{name}-recovery")
    } else {
        format!("{name}-node-loss")
    }
}

fn parse_timeseries(bytes: &[u8]) -> Result<Vec<SeriesRow>, String> {
    let mut reader = csv::Reader::from_reader(bytes);
    let mut rows = Vec::new();
    for row in reader.deserialize::<SeriesRow>() {
        rows.push(row.map_err(|e| e.to_string())?);
    }
    Ok(rows)
}

pub(crate) fn register_fonts() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        [FontStyle::Normal, FontStyle::Bold]
            .into_iter()
            .all(|style| plotters::style::register_font(FONT, style, FONT_TTF).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(ChartError::Font)
    }
}

pub(crate) fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Rendering to files.

pub(crate) type DrawResult<DB> =
    Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A chart that can draw itself on any plotters backend.
pub(crate) trait Chart {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// A chart with the `--tiny` banner over its top-left corner.
struct Banner<'c, C>(&'c C);

impl<C: Chart> Chart for Banner<'_, C> {
    fn size(&self) -> (u32, u32) {
        self.0.size()
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        // A strip of its own over the chart, so that it covers nothing.
        let (w, _) = root.dim_in_pixel();
        let (strip, rest) = root.split_vertically(30);
        strip.fill(&RGBColor(253, 236, 236))?;
        strip.draw(&Text::new(
            format!(
                "{} — a --tiny run: sizes too small for any figure to mean anything",
                crate::caveats::TINY_MARK
            ),
            (w as i32 / 2, 15),
            (FONT, 17)
                .into_font()
                .style(FontStyle::Bold)
                .color(&WARN_RED)
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
        self.0.draw(&rest)
    }
}

/// Draws `chart` in memory, writes `dir/<name>.png` and `.svg`, and keeps the SVG text; a
/// chart of a `--tiny` comparison carries a banner saying its figures are not meaningful.
pub(crate) fn write_chart(
    dir: &Path,
    name: &str,
    chart: &impl Chart,
    tiny: bool,
) -> Result<Drawn, ChartError> {
    if tiny {
        write_chart_plain(dir, name, &Banner(chart))
    } else {
        write_chart_plain(dir, name, chart)
    }
}

fn write_chart_plain(dir: &Path, name: &str, chart: &impl Chart) -> Result<Drawn, ChartError> {
    let (w, h) = chart.size();
    let png_path = dir.join(format!("{name}.png"));
    let svg_path = dir.join(format!("{name}.svg"));
    let draw_err = |path: &Path, reason: String| ChartError::Draw {
        path: path.to_path_buf(),
        reason,
    };

    let mut pixels = vec![0u8; (w as usize) * (h as usize) * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        chart
            .draw(&root)
            .map_err(|e| draw_err(&png_path, e.to_string()))?;
        root.present()
            .map_err(|e| draw_err(&png_path, e.to_string()))?;
    }
    let mut png = Vec::new();
    {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&pixels, w, h, image::ColorType::Rgb8)
            .map_err(|e| draw_err(&png_path, e.to_string()))?;
    }
    write_file_atomic(&png_path, &png).map_err(|source| ChartError::Write {
        path: png_path.clone(),
        source,
    })?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        chart
            .draw(&root)
            .map_err(|e| draw_err(&svg_path, e.to_string()))?;
        root.present()
            .map_err(|e| draw_err(&svg_path, e.to_string()))?;
    }
    write_file_atomic(&svg_path, svg.as_bytes()).map_err(|source| ChartError::Write {
        path: svg_path.clone(),
        source,
    })?;
    Ok(Drawn {
        files: vec![png_path, svg_path],
        svgs: vec![(name.to_owned(), svg)],
        linked: Vec::new(),
        skipped: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// Shared pieces: what is plotted, what is left out, the footnote.

/// Whether (arch, step) can be plotted; `Err` carries the short and the long reason.
fn usable<'r>(
    inputs: &'r ChartInputs<'_>,
    arch: &str,
    step: Step,
) -> Result<(&'r Path, &'r Summary), (String, String)> {
    match inputs.results.get(&(arch.to_string(), step)) {
        None => Err((
            "not run".into(),
            format!("{arch}: no {} run", step.as_str()),
        )),
        Some(StepResult::Failed { reason }) => {
            Err(("failed".into(), format!("{arch}: failed ({reason})")))
        }
        Some(StepResult::Ran { dir, summary }) => {
            if !summary.valid {
                let why = if summary.invalid_reasons.is_empty() {
                    String::new()
                } else {
                    format!(": {}", summary.invalid_reasons.join("; "))
                };
                Err((
                    "invalid".into(),
                    format!("{arch}: invalid (generator-bound{why})"),
                ))
            } else if summary.status == RunStatus::Failed {
                Err((
                    "failed".into(),
                    format!("{arch}: run failed (nothing measured)"),
                ))
            } else {
                Ok((dir.as_path(), summary.as_ref()))
            }
        }
    }
}

/// The short legend form of an exclusion: "epoll: invalid (generator-bound)".
fn legend_exclusion(arch: &str, short: &str) -> String {
    match short {
        "invalid" => format!("{arch}: invalid (generator-bound)"),
        other => format!("{arch}: {other}"),
    }
}

pub(crate) fn machine_line(s: &Summary) -> String {
    format!("Machine: {}", s.provenance.machine())
}

/// "Runs of 2026-11-27 18:59–19:17 UTC" from the runs' start times.
pub(crate) fn date_line<'s>(summaries: impl IntoIterator<Item = &'s Summary>) -> String {
    let mut starts: Vec<&str> = summaries
        .into_iter()
        .map(|s| s.provenance.started_at.as_str())
        .collect();
    starts.sort_unstable();
    let (Some(first), Some(last)) = (starts.first(), starts.last()) else {
        return "Date: unknown (no run produced results)".into();
    };
    let day = |t: &str| t.get(..10).unwrap_or(t).to_string();
    let hm = |t: &str| t.get(11..16).unwrap_or("").to_string();
    if day(first) == day(last) {
        if hm(first) == hm(last) {
            // Runs within one minute read "01:26", not "01:26–01:26".
            format!(
                "{} of {} {} UTC",
                if first == last { "Run" } else { "Runs" },
                day(first),
                hm(first)
            )
        } else {
            format!("Runs of {} {}–{} UTC", day(first), hm(first), hm(last))
        }
    } else {
        format!(
            "Runs of {} {} – {} {} UTC",
            day(first),
            hm(first),
            day(last),
            hm(last)
        )
    }
}

/// Machine and date of a comparison, from every run that wrote a summary.
fn provenance_lines(inputs: &ChartInputs<'_>) -> Vec<String> {
    let summaries: Vec<&Summary> = inputs
        .results
        .values()
        .filter_map(|r| match r {
            StepResult::Ran { summary, .. } => Some(summary.as_ref()),
            StepResult::Failed { .. } => None,
        })
        .collect();
    let machine = summaries
        .first()
        .map(|s| machine_line(s))
        .unwrap_or_else(|| "Machine: unknown (no run produced results)".into());
    vec![format!("{machine}. {}.", date_line(summaries))]
}

/// A footnote line, and whether it is a warning (drawn in red).
#[derive(Debug, Clone)]
pub(crate) struct FootLine {
    text: String,
    warn: bool,
}

pub(crate) fn note(text: impl Into<String>) -> FootLine {
    FootLine {
        text: text.into(),
        warn: false,
    }
}

pub(crate) fn warn(text: impl Into<String>) -> FootLine {
    FootLine {
        text: text.into(),
        warn: true,
    }
}

/// The chart's line about caveats ([`crate::caveats::chart_note`]): a warning when a figure
/// is marked, a note that every figure is clean otherwise.
pub(crate) fn caveat_line(seen: &[(String, Vec<Caveat>)], how: &str) -> FootLine {
    let (text, is_warn) = crate::caveats::chart_note(seen, how);
    FootLine {
        text,
        warn: is_warn,
    }
}

const FOOT_FONT_PX: u32 = 14;

/// Wraps `text` to lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Fills the background, draws the footnote at the bottom and returns the area above it.
pub(crate) fn frame<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    foot: &[FootLine],
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (w, h) = root.dim_in_pixel();
    // DejaVu Sans averages about 0.5 em per character of running text.
    let width_chars = ((f64::from(w) - 30.0) / (f64::from(FOOT_FONT_PX) * 0.5)) as usize;
    let lines: Vec<(String, bool)> = foot
        .iter()
        .flat_map(|l| {
            wrap(&l.text, width_chars.max(20))
                .into_iter()
                .map(move |t| (t, l.warn))
        })
        .collect();
    let line_h = FOOT_FONT_PX + 5;
    let foot_h = (lines.len() as u32) * line_h + 14;
    let (main, foot_area) = root.split_vertically(h.saturating_sub(foot_h));
    foot_area.draw(&PathElement::new(
        vec![(15, 2), (w as i32 - 15, 2)],
        ShapeStyle::from(&RGBColor(200, 200, 200)).stroke_width(1),
    ))?;
    for (i, (text, is_warn)) in lines.iter().enumerate() {
        let color = if *is_warn {
            WARN_RED
        } else {
            RGBColor(60, 60, 60)
        };
        foot_area.draw(&Text::new(
            text.clone(),
            (15, 8 + (i as u32 * line_h) as i32),
            (FONT, FOOT_FONT_PX).into_font().color(&color),
        ))?;
    }
    Ok(main)
}

pub(crate) fn title_style() -> TextStyle<'static> {
    (FONT, 26).into_font().style(FontStyle::Bold).color(&BLACK)
}

pub(crate) fn label_style() -> TextStyle<'static> {
    (FONT, 16).into_font().color(&BLACK)
}

pub(crate) fn desc_style() -> TextStyle<'static> {
    (FONT, 18).into_font().color(&BLACK)
}

/// A centred message in an empty plot ("no valid run to plot").
pub(crate) fn draw_empty_message<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    msg: &str,
) -> DrawResult<DB> {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        msg.to_string(),
        (w as i32 / 2, h as i32 / 2),
        (FONT, 22)
            .into_font()
            .color(&WARN_RED)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))
}

// ---------------------------------------------------------------------------------------------
// 1. Latency distribution.

struct LatencySeries {
    label: String,
    color: RGBColor,
    /// The run's caveats: a marked curve is dashed, its label carries the marks.
    caveats: Vec<Caveat>,
    /// (1/(1-percentile), value in ms), percentile < 1.
    points: Vec<(f64, f64)>,
    max_ms: f64,
}

struct LatencyChart {
    title: String,
    series: Vec<LatencySeries>,
    /// Legend entries of architectures left out.
    excluded: Vec<String>,
    foot: Vec<FootLine>,
}

fn latency_chart(inputs: &ChartInputs<'_>) -> LatencyChart {
    let mut repeated = Vec::new();
    let mut series = Vec::new();
    let mut seen: Vec<(String, Vec<Caveat>)> = Vec::new();
    let mut excluded = Vec::new();
    let mut left_out = Vec::new();
    let mut conditions = Vec::new();
    for (i, arch) in inputs.archs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let (dir, summary) = match usable(inputs, arch, Step::Broadcast) {
            Ok(u) => u,
            Err((short, long)) => {
                excluded.push(legend_exclusion(arch, &short));
                left_out.push(long);
                continue;
            }
        };
        let path = dir.join("latency.hgrm");
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_hgrm(&t).map_err(|e| e.to_string()));
        let rows = match parsed {
            Ok(rows) if rows.is_empty() => {
                excluded.push(format!("{arch}: no deliveries"));
                left_out.push(format!(
                    "{arch}: {} is empty (no deliveries)",
                    path.display()
                ));
                continue;
            }
            Ok(rows) => rows,
            Err(e) => {
                excluded.push(format!("{arch}: latency.hgrm unreadable"));
                left_out.push(format!("{arch}: cannot read {}: {e}", path.display()));
                continue;
            }
        };
        let max_ms = rows.iter().map(|&(_, v)| v).fold(0.0, f64::max);
        let points = rows
            .iter()
            .filter(|&&(q, _)| q < 1.0)
            .map(|&(q, v)| (1.0 / (1.0 - q), v))
            .collect();
        let caveats = crate::caveats::of_run(summary);
        seen.push((arch.clone(), caveats.clone()));
        let mut label = crate::caveats::marked(arch, &caveats);
        if summary.status == RunStatus::Interrupted {
            label.push_str(" (interrupted run)");
        }
        conditions.push(format!(
            "{arch}: {} connections, {:.0} msg/s in, {:.0} deliveries/s, {:.0} s window",
            summary.connections.ready,
            summary.messages.sent_per_s,
            summary.messages.delivered_per_s,
            summary.phases.measure
        ));
        if let Some(rep) = inputs
            .runs
            .get(&(arch.clone(), Step::Broadcast))
            .and_then(|rs| {
                crate::repeats::of(rs, |s| s.latency_us.as_ref().map(|l| l.p99 as f64 / 1000.0))
            })
        {
            repeated.push(format!("{arch}: p99 {:.3} ms{}", rep.median, rep.note(3)));
        }
        series.push(LatencySeries {
            label,
            color,
            caveats,
            points,
            max_ms,
        });
    }
    let mut foot = vec![note(format!(
        "Latency from each message's intended send time to its delivery (open loop), HdrHistogram of the measurement window. Load: {}.",
        if conditions.is_empty() { "—".to_string() } else { conditions.join("; ") }
    ))];
    if !repeated.is_empty() {
        foot.push(note(format!(
            "A repeated step's curve is its repeat with the median p99; the p99 over the valid repeats, with the 95 % percentile-bootstrap interval of its median: {}.",
            repeated.join("; ")
        )));
    }
    foot.push(caveat_line(&seen, "dashed curves"));
    if !left_out.is_empty() {
        foot.push(warn(format!("Not plotted: {}.", left_out.join("; "))));
    }
    foot.extend(provenance_lines(inputs).into_iter().map(note));
    LatencyChart {
        title: "Delivery latency by percentile (broadcast step)".into(),
        series,
        excluded,
        foot,
    }
}

/// A latency tick label: "0.1", "2", "50", "1000".
pub(crate) fn format_ms(v: f64) -> String {
    // Whole numbers from 100 up; below, up to 2 (3 under 1) decimals, trailing zeros cut, so
    // ticks at 1.5 and 2.5 do not both read "2".
    let decimals = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// "0%", "90%", "99%", "99.9%", … for x = 1/(1-percentile) = 1, 10, 100, 1000, …
pub fn nines_label(x: f64) -> String {
    if x < 1.0 {
        return String::new();
    }
    let pct = 100.0 * (1.0 - 1.0 / x);
    let decimals = (x.log10().round() as i64 - 2).max(0) as usize;
    format!("{pct:.decimals$}%")
}

impl Chart for LatencyChart {
    fn size(&self) -> (u32, u32) {
        CHART_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let main = frame(root, &self.foot)?;
        let max_x = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(10.0, f64::max);
        let decades = max_x.log10().ceil().max(1.0) as i32;
        let x_end = 10f64.powi(decades);
        // Log y: architectures differ by orders of magnitude in the tail.
        let (y_min, y_max) = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1).chain([s.max_ms]))
            .filter(|v| *v > 0.0)
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let (y_start, y_end) = if y_max > 0.0 {
            (
                10f64.powf(y_min.log10().floor()),
                10f64.powf((y_max * 1.05).log10().ceil()),
            )
        } else {
            (0.1, 10.0)
        };
        let key_points: Vec<f64> = (0..=decades).map(|k| 10f64.powi(k)).collect();
        let mut chart = ChartBuilder::on(&main)
            .caption(&self.title, title_style())
            .margin(15)
            .margin_right(45)
            .x_label_area_size(55)
            .y_label_area_size(75)
            .build_cartesian_2d(
                (1f64..x_end).log_scale().with_key_points(key_points),
                (y_start..y_end).log_scale(),
            )?;
        chart
            .configure_mesh()
            .max_light_lines(4)
            .x_desc("Percentile (log scale of 1/(1 − percentile))")
            .y_desc("Delivery latency, ms (log scale)")
            .x_label_formatter(&|x| nines_label(*x))
            .y_label_formatter(&|y| format_ms(*y))
            .label_style(label_style())
            .axis_desc_style(desc_style())
            .draw()?;
        for s in &self.series {
            let color = s.color;
            let points = s.points.iter().map(|&(x, y)| (x, y.max(y_start)));
            if s.caveats.is_empty() {
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(3)))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                    });
            } else {
                // A curve with a caveat is dashed; its label carries the marks.
                chart
                    .draw_series(DashedLineSeries::new(points, 10, 6, color.stroke_width(3)))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 9, y)], color.stroke_width(3))
                    });
            }
        }
        for e in &self.excluded {
            chart
                .draw_series(LineSeries::new(
                    std::iter::empty::<(f64, f64)>(),
                    EXCLUDED_GREY.stroke_width(1),
                ))?
                .label(format!("{e} — not plotted"))
                .legend(|(x, y)| Cross::new((x + 12, y), 5, EXCLUDED_GREY.stroke_width(2)));
        }
        if self.series.is_empty() {
            draw_empty_message(&main, "No valid broadcast run to plot")?;
        }
        if !self.series.is_empty() || !self.excluded.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(label_style())
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. Bar charts: memory per connection, CPU per delivery.

enum Slot {
    /// One value per series (`None`: that series has no figure for this architecture), with
    /// the caveats of each (a marked bar is hollow, its marks under its value) and its 95 %
    /// interval when it is a median over repeats (drawn as a whisker; empty: none).
    Bars(Vec<Option<f64>>, Vec<Vec<Caveat>>, Vec<Option<[f64; 2]>>),
    /// Left out, with the short reason shown on the slot.
    Excluded(String),
}

/// One bar as drawn: slot index, value, caveats, the interval's whisker if any.
type DrawnBar<'a> = (f64, f64, &'a [Caveat], Option<[f64; 2]>);

struct BarChart {
    title: String,
    y_desc: String,
    x_desc: String,
    /// Series names (legend) and colours.
    series: Vec<(String, RGBColor)>,
    /// One slot per architecture, in column order.
    slots: Vec<(String, Slot)>,
    /// Decimals of the value labels.
    decimals: usize,
    foot: Vec<FootLine>,
}

fn memory_chart(inputs: &ChartInputs<'_>) -> BarChart {
    let mut slots = Vec::new();
    let mut left_out = Vec::new();
    let mut conditions = Vec::new();
    for arch in inputs.archs {
        match usable(inputs, arch, Step::Idle) {
            Err((short, long)) => {
                slots.push((arch.clone(), Slot::Excluded(short)));
                left_out.push(long);
            }
            Ok((_, s)) => match &s.target_resources.memory_per_conn {
                None => {
                    slots.push((arch.clone(), Slot::Excluded("not sampled".into())));
                    left_out.push(format!("{arch}: memory not sampled"));
                }
                Some(m) => {
                    let kernel = if crate::caveats::unreliable_kernel(s) {
                        vec![Caveat::UnreliableKernel]
                    } else {
                        Vec::new()
                    };
                    conditions.push(format!(
                        "{arch}: {} connections after {:.0} s settle",
                        m.connections, s.phases.settle
                    ));
                    slots.push((
                        arch.clone(),
                        Slot::Bars(
                            vec![
                                Some(m.user_bytes_per_conn / 1024.0),
                                Some(m.kernel_slab_bytes_per_conn / 1024.0),
                            ],
                            vec![Vec::new(), kernel],
                            Vec::new(),
                        ),
                    ));
                }
            },
        }
    }
    let mut foot = vec![note(format!(
        "What one idle connection costs the server: user space = Δ server RSS / connections; kernel = Δ host slab / connections (both loopback sockets). Idle step: {}.",
        if conditions.is_empty() { "—".to_string() } else { conditions.join("; ") }
    ))];
    foot.push(caveat_line(
        &bar_caveats(&slots, &["user", "kernel"]),
        "hollow bars",
    ));
    if !left_out.is_empty() {
        foot.push(warn(format!("Not plotted: {}.", left_out.join("; "))));
    }
    foot.extend(provenance_lines(inputs).into_iter().map(note));
    BarChart {
        title: "Memory per idle connection (idle step)".into(),
        y_desc: "Memory per connection, KiB".into(),
        x_desc: "Architecture".into(),
        series: vec![
            ("user space (server RSS)".into(), PALETTE[0]),
            ("kernel (slab)".into(), PALETTE[1]),
        ],
        slots,
        decimals: 2,
        foot,
    }
}

/// `arch`'s bar of the CPU chart: the figure `v` of its broadcast run `s`, or, for a repeated
/// step, the median over the repeats with its interval and caveats (the table's figure), named
/// in `repeated` for the footnote.
fn cpu_slot(
    inputs: &ChartInputs<'_>,
    arch: &str,
    s: &Summary,
    v: f64,
    repeated: &mut Vec<String>,
) -> Slot {
    let rep = inputs
        .runs
        .get(&(arch.to_string(), Step::Broadcast))
        .and_then(|rs| crate::repeats::of(rs, |s| s.target_resources.cpu_us_per_delivery));
    let Some(rep) = rep else {
        return Slot::Bars(vec![Some(v)], vec![crate::caveats::of_run(s)], Vec::new());
    };
    let mut caveats = rep.caveats();
    for c in crate::caveats::of_run(s) {
        if !caveats.contains(&c) {
            caveats.push(c);
        }
    }
    caveats.sort();
    repeated.push(format!("{arch}: {:.2} µs{}", rep.median, rep.note(2)));
    Slot::Bars(vec![Some(rep.median)], vec![caveats], vec![rep.ci95])
}

fn cpu_chart(inputs: &ChartInputs<'_>) -> BarChart {
    let mut repeated = Vec::new();
    let mut slots = Vec::new();
    let mut left_out = Vec::new();
    let mut conditions = Vec::new();
    for arch in inputs.archs {
        match usable(inputs, arch, Step::Broadcast) {
            Err((short, long)) => {
                slots.push((arch.clone(), Slot::Excluded(short)));
                left_out.push(long);
            }
            Ok((_, s)) => match s.target_resources.cpu_us_per_delivery {
                None => {
                    slots.push((arch.clone(), Slot::Excluded("not sampled".into())));
                    left_out.push(format!("{arch}: CPU not sampled"));
                }
                Some(v) => {
                    conditions.push(format!(
                        "{arch}: {} connections, {:.0} deliveries/s, {:.2} cores",
                        s.connections.ready,
                        s.messages.delivered_per_s,
                        s.target_resources.cpu_cores_measure.unwrap_or(f64::NAN)
                    ));
                    slots.push((arch.clone(), cpu_slot(inputs, arch, s, v, &mut repeated)));
                }
            },
        }
    }
    let mut foot = vec![note(format!(
        "Server CPU time over the measurement window divided by the messages delivered in it; on loopback it includes the client sockets' receive processing. Broadcast step: {}.",
        if conditions.is_empty() { "—".to_string() } else { conditions.join("; ") }
    ))];
    if !repeated.is_empty() {
        foot.push(note(format!(
            "A repeated step's bar is the median over its valid repeats, its whisker the 95 % percentile-bootstrap interval of that median: {}.",
            repeated.join("; ")
        )));
    }
    foot.push(caveat_line(&bar_caveats(&slots, &[""]), "hollow bars"));
    if !left_out.is_empty() {
        foot.push(warn(format!("Not plotted: {}.", left_out.join("; "))));
    }
    foot.extend(provenance_lines(inputs).into_iter().map(note));
    BarChart {
        title: "Server CPU per delivered message (broadcast step)".into(),
        y_desc: "CPU per delivered message, µs".into(),
        x_desc: "Architecture".into(),
        series: vec![("server CPU-µs per delivery".into(), PALETTE[0])],
        slots,
        decimals: 2,
        foot,
    }
}

/// Each bar's caveats, named "<arch>" or "<arch> <series>".
fn bar_caveats(slots: &[(String, Slot)], series: &[&str]) -> Vec<(String, Vec<Caveat>)> {
    let mut out = Vec::new();
    for (arch, slot) in slots {
        if let Slot::Bars(_, caveats, _) = slot {
            for (c, name) in caveats.iter().zip(series) {
                let who = if name.is_empty() {
                    arch.clone()
                } else {
                    format!("{arch} {name}")
                };
                out.push((who, c.clone()));
            }
        }
    }
    out
}

impl Chart for BarChart {
    fn size(&self) -> (u32, u32) {
        CHART_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let main = frame(root, &self.foot)?;
        let n = self.slots.len().max(1);
        let max = self
            .slots
            .iter()
            .filter_map(|(_, s)| match s {
                // The bars, and the whiskers' tops.
                Slot::Bars(v, _, w) => Some(
                    v.iter()
                        .flatten()
                        .chain(w.iter().flatten().map(|[_, hi]| hi))
                        .copied()
                        .fold(0.0, f64::max),
                ),
                Slot::Excluded(_) => None,
            })
            .fold(0.0, f64::max);
        let y_end = if max > 0.0 { max * 1.2 } else { 1.0 };
        let names: Vec<String> = self.slots.iter().map(|(a, _)| a.clone()).collect();
        let mut chart = ChartBuilder::on(&main)
            .caption(&self.title, title_style())
            .margin(15)
            .x_label_area_size(60)
            .y_label_area_size(75)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..y_end)?;
        let x_fmt = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .max_light_lines(0)
            // Enough ticks that every integer (one per architecture) is one; the formatter
            // names those and leaves the others blank.
            .x_labels(2 * n + 2)
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .x_label_formatter(&x_fmt)
            .label_style(label_style())
            .axis_desc_style(desc_style())
            .draw()?;
        let k = self.series.len().max(1) as f64;
        let group = 0.7;
        let bar_w = group / k;
        let value_font = (FONT, 15).into_font().color(&BLACK);
        for (si, (name, color)) in self.series.iter().enumerate() {
            let color = *color;
            let bars: Vec<DrawnBar<'_>> = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, (_, s))| match s {
                    Slot::Bars(v, c, w) => v.get(si).copied().flatten().map(|v| {
                        (
                            i as f64,
                            v,
                            c.get(si).map(Vec::as_slice).unwrap_or_default(),
                            w.get(si).copied().flatten(),
                        )
                    }),
                    Slot::Excluded(_) => None,
                })
                .collect();
            let left = |i: f64| i - group / 2.0 + si as f64 * bar_w;
            // A bar with a caveat is hollow: its outline only.
            chart
                .draw_series(bars.iter().map(|&(i, v, c, _)| {
                    let style = if c.is_empty() {
                        color.filled()
                    } else {
                        color.stroke_width(3)
                    };
                    Rectangle::new([(left(i), 0.0), (left(i) + bar_w, v)], style)
                }))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.filled())
                });
            // A median over repeats: its 95 % interval as a whisker with caps.
            let whiskers = bars.iter().filter_map(|&(i, _, _, w)| {
                let [lo, hi] = w?;
                let (mid, cap) = (left(i) + bar_w / 2.0, bar_w / 6.0);
                Some([
                    PathElement::new(vec![(mid, lo), (mid, hi)], BLACK.stroke_width(2)),
                    PathElement::new(
                        vec![(mid - cap, lo), (mid + cap, lo)],
                        BLACK.stroke_width(2),
                    ),
                    PathElement::new(
                        vec![(mid - cap, hi), (mid + cap, hi)],
                        BLACK.stroke_width(2),
                    ),
                ])
            });
            chart.draw_series(whiskers.flatten())?;
            chart.draw_series(bars.iter().map(|&(i, v, c, w)| {
                let text = format!("{v:.prec$}", prec = self.decimals);
                let top = w.map_or(v, |[_, hi]| hi.max(v));
                Text::new(
                    crate::caveats::marked(&text, c),
                    (left(i) + bar_w / 2.0, top.max(0.0) + y_end * 0.01),
                    value_font.pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))?;
        }
        let excluded_font = (FONT, 17)
            .into_font()
            .color(&WARN_RED)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(
            self.slots
                .iter()
                .enumerate()
                .filter_map(|(i, (_, s))| match s {
                    Slot::Excluded(why) => Some(Text::new(
                        format!("{why} — not plotted"),
                        (i as f64, y_end * 0.04),
                        excluded_font.clone(),
                    )),
                    Slot::Bars(..) => None,
                }),
        )?;
        if self.slots.is_empty() {
            draw_empty_message(&main, "No architecture to plot")?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(label_style())
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Run timeline.

/// One line of a panel: label, colour, points (t_s, value).
type Line = (String, RGBColor, Vec<(f64, f64)>);

struct Panel {
    y_desc: String,
    lines: Vec<Line>,
}

struct TimelineChart {
    title: String,
    panels: Vec<Panel>,
    /// (phase, start s, end s).
    phases: Vec<(String, f64, f64)>,
    t_end: f64,
    foot: Vec<FootLine>,
    /// Vertical markers (time s, label), e.g. the kill of a node-loss run.
    markers: Vec<(f64, String)>,
}

fn phase_color(phase: &str) -> RGBColor {
    match phase {
        "connect" => RGBColor(230, 240, 250),
        "settle" => RGBColor(240, 240, 240),
        "warmup" => RGBColor(252, 243, 225),
        "measure" => RGBColor(228, 245, 228),
        "cooldown" => RGBColor(245, 232, 245),
        _ => RGBColor(250, 250, 250),
    }
}

/// Every metric's points (t_s, value), sorted by time.
fn series_by_metric(rows: &[SeriesRow]) -> BTreeMap<&str, Vec<(f64, f64)>> {
    let mut by_metric: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        if r.t_s.is_finite() && r.value.is_finite() {
            by_metric
                .entry(r.metric.as_str())
                .or_default()
                .push((r.t_s, r.value));
        }
    }
    for pts in by_metric.values_mut() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    by_metric
}

/// Phase spans (phase, start s, end s): each sample covers the second before its time stamp.
fn phase_spans(rows: &[SeriesRow]) -> Vec<(String, f64, f64)> {
    let mut stamps: Vec<(f64, &str)> = rows
        .iter()
        .filter(|r| r.t_s.is_finite())
        .map(|r| (r.t_s, r.phase.as_str()))
        .collect();
    stamps.sort_by(|a, b| a.0.total_cmp(&b.0));
    stamps.dedup_by(|a, b| a.0 == b.0);
    let mut phases: Vec<(String, f64, f64)> = Vec::new();
    let mut prev_t = 0.0;
    for (t, phase) in stamps {
        match phases.last_mut() {
            Some(last) if last.0 == phase => last.2 = t,
            _ => phases.push((phase.to_string(), prev_t, t)),
        }
        prev_t = t;
    }
    phases
}

/// A timeline's panels, from what the run recorded: connections open and the server's memory
/// (RSS) always — the idle step exists to measure memory —; messages only when any were sent,
/// sent/s and delivered/s on their own axes when they differ by more than ten times (400/s
/// beside 40k/s would be a flat line on the floor); latency when any was recorded; CPU.
fn timeline_panels(get: &impl Fn(&str, f64) -> Vec<(f64, f64)>) -> Vec<Panel> {
    let max = |v: &[(f64, f64)]| v.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut panels = vec![
        Panel {
            y_desc: "Connections open".into(),
            lines: vec![(
                "connections open".into(),
                PALETTE[0],
                get(series::CONNECTIONS_OPEN, 1.0),
            )],
        },
        Panel {
            y_desc: "Server RSS, MiB".into(),
            lines: vec![(
                "server memory (RSS)".into(),
                PALETTE[5],
                get(series::TARGET_RSS_BYTES, 1.0 / (1024.0 * 1024.0)),
            )],
        },
    ];
    let sent = get(series::SENT_PER_S, 1.0);
    let delivered = get(series::DELIVERED_PER_S, 1.0);
    let (ms, md) = (max(&sent), max(&delivered));
    if ms > 0.0 || md > 0.0 {
        let apart = ms > 0.0 && md > 0.0 && (md / ms > 10.0 || ms / md > 10.0);
        if apart {
            panels.push(Panel {
                y_desc: "Sent/s".into(),
                lines: vec![("sent/s".into(), PALETTE[1], sent)],
            });
            panels.push(Panel {
                y_desc: "Delivered/s".into(),
                lines: vec![("delivered/s".into(), PALETTE[2], delivered)],
            });
        } else {
            panels.push(Panel {
                y_desc: "Messages/s".into(),
                lines: vec![
                    ("sent/s".into(), PALETTE[1], sent),
                    ("delivered/s".into(), PALETTE[2], delivered),
                ],
            });
        }
    }
    let p50 = get(series::LATENCY_P50_US, 1e-3);
    let p99 = get(series::LATENCY_P99_US, 1e-3);
    if !p50.is_empty() || !p99.is_empty() {
        panels.push(Panel {
            y_desc: "Latency, ms".into(),
            lines: vec![
                ("p50".into(), PALETTE[0], p50),
                ("p99".into(), PALETTE[3], p99),
            ],
        });
    }
    panels.push(Panel {
        y_desc: "CPU, cores".into(),
        lines: vec![
            (
                "server".into(),
                PALETTE[4],
                get(series::TARGET_CPU_CORES, 1.0),
            ),
            (
                "generator".into(),
                PALETTE[7],
                get(series::GENERATOR_CPU_CORES, 1.0),
            ),
        ],
    });
    panels
}

fn timeline_chart(s: &Summary, rows: &[SeriesRow]) -> TimelineChart {
    let by_metric = series_by_metric(rows);
    let get = |m: &str, scale: f64| -> Vec<(f64, f64)> {
        by_metric
            .get(m)
            .map(|v| v.iter().map(|&(t, x)| (t, x * scale)).collect())
            .unwrap_or_default()
    };
    let phases = phase_spans(rows);
    let t_end = phases.last().map(|p| p.2).unwrap_or(1.0).max(1.0);
    let panels = timeline_panels(&get);
    let arch = s.target.arch.as_deref().unwrap_or(s.target.url.as_str());
    let mut foot = Vec::new();
    let state = match s.status {
        RunStatus::Complete => "complete",
        RunStatus::Interrupted => "interrupted",
        RunStatus::Failed => "failed",
    };
    // Name only what the chart draws: an idle run has no latency.
    let latency = if by_metric.contains_key(series::LATENCY_P99_US) {
        "; latency per second of deliveries, from the intended send time"
    } else {
        ""
    };
    foot.push(note(format!(
        "Run {} (scenario {}, {} of {} connections ready), {state}. One sample per second{latency}.",
        s.run_id, s.scenario.name, s.connections.ready, s.connections.planned
    )));
    if !s.valid {
        foot.push(warn(format!(
            "INVALID run (generator-bound): {}. Its figures are not the server's.",
            if s.invalid_reasons.is_empty() {
                "no reason recorded".to_string()
            } else {
                s.invalid_reasons.join("; ")
            }
        )));
    }
    if let Some(w) = s
        .target_resources
        .other_load
        .as_ref()
        .and_then(|o| o.warning())
    {
        foot.push(warn(format!("{w}.")));
    }
    foot.push(note(format!(
        "{}. {}.",
        machine_line(s),
        date_line(std::iter::once(s))
    )));
    TimelineChart {
        title: format!(
            "Run timeline: {arch}{}, {}{}{}",
            match crate::sweeps::nodes_of(s) {
                1 => String::new(),
                n => format!(" × {n} nodes"),
            },
            s.scenario.name,
            if s.valid { "" } else { " (INVALID)" },
            if crate::caveats::busy(s) {
                format!(" {}", crate::caveats::Caveat::Busy.mark())
            } else {
                String::new()
            }
        ),
        panels,
        phases,
        t_end,
        foot,
        markers: Vec::new(),
    }
}

/// The node-loss timeline of a run whose scenario killed a node (`failover` in the summary):
/// connections open and reconnects, delivery p99 per second, deliveries per second, with a
/// marker at the kill and one where every client was back. `None` for other runs.
fn node_loss_chart(s: &Summary, rows: &[SeriesRow]) -> Option<TimelineChart> {
    let f = s.failover.as_ref()?;
    let by_metric = series_by_metric(rows);
    let get = |m: &str, scale: f64| -> Vec<(f64, f64)> {
        by_metric
            .get(m)
            .map(|v| v.iter().map(|&(t, x)| (t, x * scale)).collect())
            .unwrap_or_default()
    };
    let phases = phase_spans(rows);
    let t_end = phases.last().map(|p| p.2).unwrap_or(1.0).max(1.0);
    let panels = vec![
        Panel {
            y_desc: "Connections".into(),
            lines: vec![
                (
                    "connections open".into(),
                    PALETTE[0],
                    get(series::CONNECTIONS_OPEN, 1.0),
                ),
                (
                    "reconnects (total)".into(),
                    PALETTE[2],
                    get(series::RECONNECTS, 1.0),
                ),
            ],
        },
        Panel {
            y_desc: "Latency p99, ms".into(),
            lines: vec![(
                "p99 per second".into(),
                PALETTE[3],
                get(series::LATENCY_P99_US, 1e-3),
            )],
        },
        Panel {
            y_desc: "Deliveries/s".into(),
            lines: vec![(
                "delivered/s".into(),
                PALETTE[2],
                get(series::DELIVERED_PER_S, 1.0),
            )],
        },
    ];
    let mut markers = vec![(f.at_s, format!("node {} killed", f.node))];
    if let Some(ms) = f.all_back_ms {
        markers.push((f.at_s + ms / 1000.0, "all back".to_string()));
    }
    let arch = s.target.arch.as_deref().unwrap_or(s.target.url.as_str());
    let backplane = s
        .target
        .settings
        .get("backplane")
        .map(|b| format!(" ({b})"))
        .unwrap_or_default();
    let ms = |v: Option<u64>| {
        v.map_or("-".to_string(), |v| {
            format!("{} ms", format_ms(v as f64 / 1000.0))
        })
    };
    let mut foot = vec![note(format!(
        "Run {} (scenario {}): node {} SIGKILLed {:.1} s into the window with {} clients on it; {}; the supervisor restarted it {} time(s){}.",
        s.run_id,
        s.scenario.name,
        f.node,
        f.at_window_s,
        f.clients_on_node,
        match f.all_back_ms {
            Some(t) => format!("all {} back after {t:.0} ms", f.reconnects),
            None => format!("only {} of {} came back", f.reconnects, f.clients_on_node),
        },
        f.restarts,
        f.restart_ms.map(|v| format!(" in {v} ms")).unwrap_or_default()
    ))];
    foot.push(note(format!(
        "Lost {} of {} expected deliveries during the failover (sent from 1 s before the kill until all were back), {} of {} outside it. p99 before {}, during {}, after {}.",
        f.during.lost, f.during.expected, f.outside.lost, f.outside.expected,
        ms(f.p99_before_us), ms(f.p99_during_us), ms(f.p99_after_us)
    )));
    foot.push(note(
        "One sample per second; latency per second of deliveries, from the intended send time (messages due while a sender was away are sent on its return, late).",
    ));
    if !s.valid {
        foot.push(warn(format!(
            "INVALID run (generator-bound): {}. Its figures are not the server's.",
            s.invalid_reasons.join("; ")
        )));
    }
    foot.push(note(format!(
        "{}. {}.",
        machine_line(s),
        date_line(std::iter::once(s))
    )));
    Some(TimelineChart {
        title: format!(
            "Node loss: {arch}{backplane}, {}{}",
            s.scenario.name,
            if s.valid { "" } else { " (INVALID)" }
        ),
        panels,
        phases,
        t_end,
        foot,
        markers,
    })
}

impl Chart for TimelineChart {
    fn size(&self) -> (u32, u32) {
        TIMELINE_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let main = frame(root, &self.foot)?;
        let (w, _) = main.dim_in_pixel();
        let (title_area, main) = main.split_vertically(50);
        title_area.draw(&Text::new(
            self.title.clone(),
            (w as i32 / 2, 28),
            title_style().pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
        let panels = main.split_evenly((self.panels.len(), 1));
        let last = self.panels.len().saturating_sub(1);
        for (pi, (panel, area)) in self.panels.iter().zip(panels.iter()).enumerate() {
            let max = panel
                .lines
                .iter()
                .flat_map(|l| l.2.iter().map(|p| p.1))
                .fold(0.0, f64::max);
            // The first panel of a chart with markers keeps its top fifth clear of data for
            // the markers' labels (they would sit on the lines otherwise).
            let headroom = if pi == 0 && !self.markers.is_empty() {
                1.45
            } else {
                1.15
            };
            let y_end = if max > 0.0 { max * headroom } else { 1.0 };
            let mut chart = ChartBuilder::on(area)
                .margin_left(15)
                .margin_right(25)
                .margin_top(8)
                .x_label_area_size(if pi == last { 50 } else { 25 })
                .y_label_area_size(90)
                .build_cartesian_2d(0f64..self.t_end, 0f64..y_end)?;
            chart.draw_series(self.phases.iter().map(|(p, a, b)| {
                Rectangle::new([(*a, 0.0), (*b, y_end)], phase_color(p).filled())
            }))?;
            if pi == 0 {
                chart.draw_series(self.phases.iter().map(|(p, a, b)| {
                    Text::new(
                        p.clone(),
                        ((a + b) / 2.0, y_end * 0.03),
                        (FONT, 14)
                            .into_font()
                            .color(&RGBColor(90, 90, 90))
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )
                }))?;
            }
            let y_fmt = |y: &f64| {
                if *y == 0.0 {
                    "0".to_string()
                } else if y_end >= 20_000.0 {
                    format!("{:.0}k", y / 1000.0)
                } else if y_end >= 20.0 {
                    format!("{y:.0}")
                } else if y_end >= 2.0 {
                    format!("{y:.1}")
                } else {
                    format!("{y:.2}")
                }
            };
            let mut mesh = chart.configure_mesh();
            mesh.y_desc(panel.y_desc.as_str())
                .max_light_lines(0)
                .y_labels(6)
                .label_style(label_style())
                .axis_desc_style(desc_style())
                .y_label_formatter(&y_fmt);
            if pi == last {
                mesh.x_desc("Time since the start of the run, s");
            }
            mesh.draw()?;
            for (i, (t, label)) in self.markers.iter().enumerate() {
                let color = if i == 0 { RED } else { PALETTE[2] };
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(*t, 0.0), (*t, y_end)],
                    color.stroke_width(2),
                )))?;
                if pi == 0 {
                    // Labels one under the other: the markers can be close together.
                    chart.draw_series(std::iter::once(Text::new(
                        format!(" {label}"),
                        (*t, y_end * (0.98 - 0.09 * i as f64)),
                        (FONT, 14)
                            .into_font()
                            .color(&color)
                            .pos(Pos::new(HPos::Left, VPos::Top)),
                    )))?;
                }
            }
            let mut any = false;
            for (label, color, pts) in &panel.lines {
                let color = *color;
                any |= !pts.is_empty();
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                    .label(label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            if !any {
                draw_empty_message(area, "no data in timeseries.csv")?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 14).into_font())
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chart_names_do_not_repeat_themselves() {
        assert_eq!(super::node_loss_name("timeline"), "timeline-node-loss");
        assert_eq!(
            super::node_loss_name("timeline-cluster-mesh-node-loss"),
            "timeline-cluster-mesh-node-loss-recovery"
        );
    }

    #[test]
    fn runs_within_one_minute_read_as_one_time() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let load = |step: &str| match crate::comparison::StepResult::load(&data.join(step)) {
            Ok(crate::comparison::StepResult::Ran { summary, .. }) => *summary,
            _ => panic!("fixture"),
        };
        let (mut a, mut b) = (load("idle"), load("broadcast"));
        a.provenance.started_at = "2026-11-28T01:26:03Z".into();
        b.provenance.started_at = "2026-11-28T01:26:41Z".into();
        let line = super::date_line([&a, &b]);
        assert_eq!(line, "Runs of 2026-11-28 01:26 UTC");
        b.provenance.started_at = "2026-11-28T01:29:41Z".into();
        assert_eq!(
            super::date_line([&a, &b]),
            "Runs of 2026-11-28 01:26–01:29 UTC"
        );
    }

    #[test]
    fn axis_labels_tell_ticks_apart() {
        let labels: Vec<String> = [
            0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 12.25, 150.0, 19000.0, 0.125,
        ]
        .into_iter()
        .map(format_ms)
        .collect();
        assert_eq!(
            labels,
            ["0", "0.5", "1", "1.5", "2", "2.5", "3", "12.25", "150", "19000", "0.125"]
        );
    }

    use super::*;

    #[test]
    fn hgrm_rows_parse_and_skip_comments() {
        let text = "       Value     Percentile TotalCount 1/(1-Percentile)\n\n       0.174 0.000000000000          0           1.00\n       1.423 0.500000000000     198000           2.00\n      22.191 1.000000000000     396000\n#[Mean    =        1.700, StdDeviation   =        1.220]\n";
        let rows = parse_hgrm(text).expect("parses");
        assert_eq!(rows, vec![(0.0, 0.174), (0.5, 1.423), (1.0, 22.191)]);
    }

    #[test]
    fn malformed_hgrm_is_an_error_with_its_line() {
        let header = "Value Percentile TotalCount 1/(1-Percentile)\n";
        for (text, line) in [
            ("", 1),
            ("{\"not\": \"hgrm\"}", 1),
            (&*format!("{header}1.0 0.5"), 2),
            (&*format!("{header}abc 0.5 10 2.0"), 2),
            (&*format!("{header}1.0 1.5 10 2.0"), 2),
            (&*format!("{header}1.0 0.5 10 2.0\n0.9 0.4 12 1.6"), 3),
            (&*format!("{header}1.0 0.5 -3 2.0"), 2),
            (&*format!("{header}NaN 0.5 3 2.0"), 2),
        ] {
            let e = parse_hgrm(text).expect_err(text);
            assert_eq!(e.line, line, "{text}: {e}");
        }
    }

    #[test]
    fn empty_histogram_parses_to_no_rows() {
        let text = "Value Percentile TotalCount 1/(1-Percentile)\n\n#[Mean    =        0.000, StdDeviation   =        0.000]\n";
        assert_eq!(parse_hgrm(text), Ok(vec![]));
    }

    #[test]
    fn nines_labels() {
        assert_eq!(nines_label(1.0), "0%");
        assert_eq!(nines_label(10.0), "90%");
        assert_eq!(nines_label(100.0), "99%");
        assert_eq!(nines_label(1000.0), "99.9%");
        assert_eq!(nines_label(1e5), "99.999%");
    }

    #[test]
    fn wrap_keeps_words_whole() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(
            wrap("averyveryverylongword x", 5),
            vec!["averyveryverylongword", "x"]
        );
    }

    #[test]
    fn font_registers() {
        register_fonts().expect("embedded font");
    }
}
