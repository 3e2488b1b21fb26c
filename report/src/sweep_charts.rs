//! Charts of the full suite's sweeps, drawn with the same frame, font and footnotes as
//! [`crate::charts`]: memory per connection against the connection count (idle ramp), p99
//! against offered load with the SLO line (the knee), and p99 against room size. One line per
//! architecture; a run that is invalid (generator-bound) or failed is never drawn as a point: it
//! is named in the footnote with its reason. Points that missed the SLO or lost messages *are*
//! drawn — they are where the knee is — and the footnote says which lost messages. Also the
//! timeline of every sweep point and repeat ([`render_point_timelines`]).

use std::path::Path;

use chatbench_model::results::{RunStatus, Summary};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::caveats::Caveat;
use crate::charts::{
    create_dir, date_line, desc_style, draw_empty_message, file_safe, format_ms, frame,
    label_style, machine_line, note, prepare_charts_dir, timeline_of, title_style, warn,
    write_chart, Chart, ChartError, DrawResult, Drawn, FootLine, CHART_SIZE, PALETTE, WARN_RED,
};
use crate::comparison::{Runs, Step, StepResult};
use crate::sweeps::x_of;

/// One line of an XY chart.
struct Line {
    label: String,
    color: RGBColor,
    /// Filled circles when true, hollow triangles when false (a second figure of the same arch).
    solid: bool,
    points: Vec<(f64, f64)>,
    /// Per point: its caveats ([`crate::caveats`]); a marked point is drawn hollow.
    caveats: Vec<Vec<Caveat>>,
}

impl Line {
    /// Each point with a caveat, named "<arch> at <x><unit>", for the chart's note.
    fn seen(&self, unit: &str) -> Vec<(String, Vec<Caveat>)> {
        self.points
            .iter()
            .zip(&self.caveats)
            .map(|(&(x, _), c)| (format!("{} at {x:.0}{unit}", self.label), c.clone()))
            .collect()
    }
}

/// The note on caveats of every line of a chart (hollow points).
fn caveat_note(lines: &[Line], unit: &str) -> FootLine {
    let seen: Vec<(String, Vec<Caveat>)> = lines.iter().flat_map(|l| l.seen(unit)).collect();
    let (text, is_warn) = crate::caveats::chart_note(&seen, "hollow points");
    if is_warn {
        warn(text)
    } else {
        note(text)
    }
}

/// A line chart of sweep points.
struct XyChart {
    title: String,
    x_desc: String,
    y_desc: String,
    log_x: bool,
    log_y: bool,
    /// Label only whole-number x ticks (a count of nodes has no 1.5).
    whole_x: bool,
    /// A horizontal reference line (value, label), e.g. the SLO.
    reference: Option<(f64, String)>,
    lines: Vec<Line>,
    empty_message: String,
    foot: Vec<FootLine>,
}

/// Renders the sweep charts that the runs allow into `comparison_dir/charts/`:
/// `memory_vs_connections` (idle ramp), `p99_vs_load` (load sweep) and `p99_vs_room_size`
/// (room size), each as `.png` and `.svg`. A suite without sweeps draws none.
pub fn render_sweep_charts(
    comparison_dir: &Path,
    archs: &[String],
    runs: &Runs,
    slo_p99_ms: f64,
    tiny: bool,
) -> Result<Drawn, ChartError> {
    let has = |step: Step| runs.keys().any(|(_, s)| *s == step);
    if !(has(Step::IdleRamp) || has(Step::LoadSweep) || has(Step::RoomSize) || has(Step::Scaling)) {
        return Ok(Drawn::default());
    }
    let out = prepare_charts_dir(comparison_dir)?;
    let mut written = Drawn::default();
    if has(Step::IdleRamp) {
        written.add(write_chart(
            &out,
            "memory_vs_connections",
            &memory_chart(archs, runs),
            tiny,
        )?);
    }
    if has(Step::LoadSweep) {
        written.add(write_chart(
            &out,
            "p99_vs_load",
            &load_chart(archs, runs, slo_p99_ms),
            tiny,
        )?);
    }
    if has(Step::RoomSize) {
        written.add(write_chart(
            &out,
            "p99_vs_room_size",
            &room_chart(archs, runs),
            tiny,
        )?);
    }
    if has(Step::Scaling) {
        written.add(write_chart(
            &out,
            "scaling_p99",
            &scaling_p99_chart(archs, runs),
            tiny,
        )?);
        written.add(write_chart(
            &out,
            "scaling_cpu_per_delivery",
            &scaling_cpu_chart(archs, runs),
            tiny,
        )?);
    }
    Ok(written)
}

/// The folder, under a comparison's `charts/`, of the timelines of every sweep point and repeat.
pub const POINTS_DIR: &str = "points";

/// Renders a timeline for every run of a step that has several (sweep points, repeats) into
/// `comparison_dir/charts/points/`, named `timeline-<arch>-<step>-<NN>-<x>` (`NN` the run's
/// place in the step, `x` its point: `5000conns`, `39600dps`, `100members`, `2nodes`). The
/// comparison's own `timeline-<arch>-<step>` shows only the run its table cells come from. A
/// failed point has no run to draw. Returns what it drew (nothing without such steps), as
/// charts to link, not to embed.
pub fn render_point_timelines(
    comparison_dir: &Path,
    runs: &Runs,
    tiny: bool,
) -> Result<Drawn, ChartError> {
    let mut written = Drawn::default();
    for ((arch, step), points) in runs {
        if points.len() < 2 {
            continue;
        }
        let out = prepare_charts_dir(comparison_dir)?.join(POINTS_DIR);
        create_dir(&out)?;
        for (i, r) in points.iter().enumerate() {
            let StepResult::Ran { dir, summary } = r else {
                continue;
            };
            let unit = match step {
                Step::IdleRamp | Step::Capacity | Step::Idle => "conns",
                Step::LoadSweep => "dps",
                Step::RoomSize => "members",
                Step::Scaling => "nodes",
                Step::Broadcast | Step::Poison | Step::NodeLoss | Step::Slowloris => "",
            };
            let at = match x_of(*step, summary) {
                Some(x) if !unit.is_empty() => format!("-{x:.0}{unit}"),
                _ => String::new(),
            };
            let name = format!(
                "timeline-{}-{}-{:02}{at}",
                file_safe(arch),
                step.as_str(),
                i + 1
            );
            // Linked from the page, not embedded (a full suite has over a hundred).
            match timeline_of(dir, summary, &out, &name, tiny) {
                Ok(drawn) => {
                    written.files.extend(drawn.files);
                    written
                        .linked
                        .extend(drawn.svgs.into_iter().map(|(n, _)| n));
                }
                Err(e) => written.skipped.push(format!("{POINTS_DIR}/{name}: {e}")),
            }
        }
    }
    Ok(written)
}

/// The usable runs of (arch, step) with their x, and the reasons the others are left out.
fn usable_points<'r>(
    runs: &'r Runs,
    arch: &str,
    step: Step,
    left_out: &mut Vec<String>,
) -> Vec<(f64, &'r Summary)> {
    let mut out = Vec::new();
    for r in runs.get(&(arch.to_string(), step)).into_iter().flatten() {
        match r {
            StepResult::Failed { reason } => left_out.push(format!("{arch}: failed ({reason})")),
            StepResult::Ran { summary, .. } => {
                let x = x_of(step, summary);
                let at = x.map(|x| format!(" at {x:.0}")).unwrap_or_default();
                if !summary.valid {
                    left_out.push(format!(
                        "{arch}{at}: invalid (generator-bound: {})",
                        summary.invalid_reasons.join("; ")
                    ));
                } else if summary.status == RunStatus::Failed {
                    left_out.push(format!("{arch}{at}: run failed (nothing measured)"));
                } else if let Some(x) = x {
                    out.push((x, summary.as_ref()));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

fn provenance<'s>(summaries: impl IntoIterator<Item = &'s Summary>) -> FootLine {
    let all: Vec<&Summary> = summaries.into_iter().collect();
    let machine = all
        .first()
        .map(|s| machine_line(s))
        .unwrap_or_else(|| "Machine: unknown (no run produced results)".into());
    note(format!("{machine}. {}.", date_line(all)))
}

fn all_summaries(runs: &Runs, step: Step) -> impl Iterator<Item = &Summary> {
    runs.iter()
        .filter(move |((_, s), _)| *s == step)
        .flat_map(|(_, rs)| rs.iter())
        .filter_map(|r| match r {
            StepResult::Ran { summary, .. } => Some(summary.as_ref()),
            StepResult::Failed { .. } => None,
        })
}

fn memory_chart(archs: &[String], runs: &Runs) -> XyChart {
    let mut lines = Vec::new();
    let mut left_out = Vec::new();
    let mut unreliable = Vec::new();
    for (i, arch) in archs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points = usable_points(runs, arch, Step::IdleRamp, &mut left_out);
        let mut user = Vec::new();
        let mut kernel = Vec::new();
        let mut user_caveats = Vec::new();
        for (x, s) in points {
            let Some(m) = s.target_resources.memory_per_conn.as_ref() else {
                left_out.push(format!("{arch} at {x:.0}: memory not sampled"));
                continue;
            };
            if s.connections.ready < s.connections.planned {
                left_out.push(format!(
                    "{arch} at {x:.0}: only {} of {} connections ready",
                    s.connections.ready, s.connections.planned
                ));
                continue;
            }
            user.push((x, m.user_bytes_per_conn / 1024.0));
            user_caveats.push(Vec::new());
            if m.sockets_as_expected {
                kernel.push((x, m.kernel_slab_bytes_per_conn / 1024.0));
            } else {
                unreliable.push(format!("{arch} at {x:.0}"));
            }
        }
        if !user.is_empty() {
            lines.push(Line {
                label: format!("{arch}: user space (RSS)"),
                color,
                solid: true,
                points: user,
                caveats: user_caveats,
            });
        }
        if !kernel.is_empty() {
            lines.push(Line {
                label: format!("{arch}: kernel slab"),
                color,
                solid: false,
                caveats: vec![Vec::new(); kernel.len()],
                points: kernel,
            });
        }
    }
    let mut foot = vec![note(
        "Memory per idle connection = (reading with N connections − reading before the first) / N, after the count settled; user space from the server's RSS, kernel from the host's Slab (both loopback sockets). Each point is a fresh server.",
    )];
    foot.push(caveat_note(&lines, " connections"));
    if !unreliable.is_empty() {
        foot.push(warn(format!(
            "Kernel figure not plotted (socket count did not grow as expected, other activity on the host): {}.",
            unreliable.join("; ")
        )));
    }
    if !left_out.is_empty() {
        foot.push(warn(format!("Not plotted: {}.", left_out.join("; "))));
    }
    foot.push(provenance(all_summaries(runs, Step::IdleRamp)));
    XyChart {
        title: "Memory per idle connection against connection count (idle ramp)".into(),
        x_desc: "Idle connections".into(),
        y_desc: "Memory per connection, KiB".into(),
        log_x: false,
        log_y: false,
        whole_x: false,
        reference: None,
        lines,
        empty_message: "No usable idle-ramp run to plot".into(),
        foot,
    }
}

/// One p99 line per architecture over a sweep's points, with what was left out and where
/// messages were lost; `at(x)` names a point in the footnotes (" at 990/s").
struct P99Lines<'r> {
    lines: Vec<Line>,
    left_out: Vec<String>,
    lossy: Vec<String>,
    /// The points of the first architecture with any, for the load conditions.
    first: Vec<(f64, &'r Summary)>,
}

fn p99_lines<'r>(
    archs: &[String],
    runs: &'r Runs,
    step: Step,
    at: impl Fn(f64) -> String,
) -> P99Lines<'r> {
    let mut out = P99Lines {
        lines: Vec::new(),
        left_out: Vec::new(),
        lossy: Vec::new(),
        first: Vec::new(),
    };
    for (i, arch) in archs.iter().enumerate() {
        let mut points = Vec::new();
        let mut caveats = Vec::new();
        let usable = usable_points(runs, arch, step, &mut out.left_out);
        if out.first.is_empty() {
            out.first = usable.clone();
        }
        for (x, s) in usable {
            if s.messages.lost > 0 {
                out.lossy.push(format!(
                    "{arch}{}: {} of {} lost",
                    at(x),
                    s.messages.lost,
                    s.messages.expected
                ));
            }
            match &s.latency_us {
                Some(l) => {
                    points.push((x, l.p99 as f64 / 1000.0));
                    caveats.push(crate::caveats::of_run(s));
                }
                None => out.left_out.push(format!("{arch}{}: no deliveries", at(x))),
            }
        }
        if !points.is_empty() {
            out.lines.push(Line {
                label: arch.clone(),
                color: PALETTE[i % PALETTE.len()],
                solid: true,
                points,
                caveats,
            });
        }
    }
    out
}

impl P99Lines<'_> {
    /// The footnote: what the chart shows, then losses, exclusions and provenance.
    fn foot(&self, what: String, runs: &Runs, step: Step, unit: &str) -> Vec<FootLine> {
        let mut foot = vec![note(what), caveat_note(&self.lines, unit)];
        if !self.lossy.is_empty() {
            foot.push(warn(format!("Lost messages: {}.", self.lossy.join("; "))));
        }
        if !self.left_out.is_empty() {
            foot.push(warn(format!("Not plotted: {}.", self.left_out.join("; "))));
        }
        foot.push(provenance(all_summaries(runs, step)));
        foot
    }
}

fn load_chart(archs: &[String], runs: &Runs, slo_p99_ms: f64) -> XyChart {
    let p = p99_lines(archs, runs, Step::LoadSweep, |x| format!(" at {x:.0}/s"));
    let connections = p
        .first
        .first()
        .map(|(_, s)| s.connections.planned.to_string())
        .unwrap_or_else(|| "—".into());
    let foot = p.foot(
        format!(
            "p99 delivery latency (open loop, from the intended send time) at each offered load; {connections} connections in rooms of 100, each point a fresh server. The knee is the last point under the SLO line ({slo_p99_ms} ms). The sweep stops at the first point over the SLO, with loss, or generator-bound (a generator-bound point is run once more first)."
        ),
        runs,
        Step::LoadSweep,
        "/s",
    );
    XyChart {
        title: "p99 delivery latency against offered load (load sweep)".into(),
        x_desc: "Offered load, deliveries per second".into(),
        y_desc: "Delivery latency p99, ms (log scale)".into(),
        log_x: false,
        log_y: true,
        whole_x: false,
        reference: Some((slo_p99_ms, format!("SLO p99 {slo_p99_ms} ms"))),
        lines: p.lines,
        empty_message: "No usable load-sweep run to plot".into(),
        foot,
    }
}

fn room_chart(archs: &[String], runs: &Runs) -> XyChart {
    let p = p99_lines(archs, runs, Step::RoomSize, |x| {
        format!(", rooms of {x:.0}")
    });
    let loads: Vec<String> = p
        .first
        .iter()
        .map(|(x, s)| {
            format!(
                "rooms of {x:.0}: {} connections, ≈{:.0} deliveries/s",
                s.connections.ready, s.messages.delivered_per_s
            )
        })
        .collect();
    let foot = p.foot(
        format!(
            "p99 delivery latency (open loop) with the same delivery rate through rooms of different sizes; each point a fresh server. Load: {}.",
            if loads.is_empty() { "—".to_string() } else { loads.join("; ") }
        ),
        runs,
        Step::RoomSize,
        " members",
    );
    XyChart {
        title: "p99 delivery latency against room size".into(),
        x_desc: "Members per room (log scale)".into(),
        y_desc: "Delivery latency p99, ms (log scale)".into(),
        log_x: true,
        log_y: true,
        whole_x: false,
        reference: None,
        lines: p.lines,
        empty_message: "No usable room-size run to plot".into(),
        foot,
    }
}

/// What the scaling charts say about their load and CPUs, from the first usable point.
fn scaling_what(first: &[(f64, &Summary)], archs: &[String], runs: &Runs) -> String {
    let Some((_, s)) = first.first() else {
        return "—".into();
    };
    let cpus = crate::sweeps::server_cpus(s);
    // Name only the kinds of column the run had.
    let scaled: Vec<&String> = archs
        .iter()
        .filter(|a| runs.contains_key(&((*a).clone(), Step::Scaling)))
        .collect();
    let is_cluster = |a: &str| a.starts_with("cluster") || a.ends_with("-cluster");
    let kinds = match (
        scaled.iter().any(|a| is_cluster(a)),
        scaled.iter().any(|a| !is_cluster(a)),
    ) {
        (true, true) => "cluster columns span each room over the nodes, the others are independent servers with rooms partitioned",
        (true, false) => "each room spans the nodes",
        (false, true) => "independent servers with rooms partitioned",
        (false, false) => "no column",
    };
    format!(
        "the same load at each node count: {} connections{}, ≈{:.0} deliveries/s; {kinds}; {cpus}",
        s.connections.planned,
        x_of(Step::RoomSize, s)
            .map(|m| format!(" in rooms of {m:.0}"))
            .unwrap_or_default(),
        s.messages.delivered_per_s
    )
}

fn scaling_p99_chart(archs: &[String], runs: &Runs) -> XyChart {
    let p = p99_lines(archs, runs, Step::Scaling, |x| format!(" at {x:.0} nodes"));
    let foot = p.foot(
        format!(
            "p99 delivery latency (open loop) against the number of server processes; {}. Each point a fresh set of servers.",
            scaling_what(&p.first, archs, runs)
        ),
        runs,
        Step::Scaling,
        " nodes",
    );
    XyChart {
        title: "Horizontal scaling: p99 delivery latency against node count".into(),
        x_desc: "Server processes (nodes)".into(),
        y_desc: "Delivery latency p99, ms (log scale)".into(),
        log_x: false,
        log_y: true,
        whole_x: true,
        reference: None,
        lines: p.lines,
        empty_message: "No usable scaling run to plot".into(),
        foot,
    }
}

fn scaling_cpu_chart(archs: &[String], runs: &Runs) -> XyChart {
    let mut lines = Vec::new();
    let mut left_out = Vec::new();
    let mut first = Vec::new();
    for (i, arch) in archs.iter().enumerate() {
        let usable = usable_points(runs, arch, Step::Scaling, &mut left_out);
        if first.is_empty() {
            first = usable.clone();
        }
        let mut points = Vec::new();
        let mut caveats = Vec::new();
        for (x, s) in usable {
            match s.target_resources.cpu_us_per_delivery {
                Some(v) => {
                    points.push((x, v));
                    caveats.push(crate::caveats::of_run(s));
                }
                None => left_out.push(format!("{arch} at {x:.0} nodes: CPU not sampled")),
            }
        }
        if !points.is_empty() {
            lines.push(Line {
                label: arch.clone(),
                color: PALETTE[i % PALETTE.len()],
                solid: true,
                points,
                caveats,
            });
        }
    }
    let redis = runs
        .keys()
        .any(|(a, s)| *s == Step::Scaling && a.contains("redis"));
    let mut foot = vec![
        note(format!(
            "Server CPU (user + system, summed over the server processes{}) per delivered message, during the measurement window; {}.",
            if redis { " and the private redis-server" } else { "" },
            scaling_what(&first, archs, runs)
        )),
        caveat_note(&lines, " nodes"),
    ];
    if !left_out.is_empty() {
        foot.push(warn(format!("Not plotted: {}.", left_out.join("; "))));
    }
    foot.push(provenance(all_summaries(runs, Step::Scaling)));
    XyChart {
        title: "Horizontal scaling: server CPU per delivery against node count".into(),
        x_desc: "Server processes (nodes)".into(),
        y_desc: "Server CPU per delivery, µs".into(),
        log_x: false,
        log_y: false,
        whole_x: true,
        reference: None,
        lines,
        empty_message: "No usable scaling run to plot".into(),
        foot,
    }
}

/// Axis range of `values` with a margin; for a log axis, whole decades.
fn range(values: impl Iterator<Item = f64>, log: bool, from_zero: bool) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        (
            10f64.powf(lo.log10().floor()),
            10f64
                .powf((hi * 1.05).log10().ceil())
                .max(10f64.powf(lo.log10().floor() + 1.0)),
        )
    } else {
        let lo = if from_zero { 0.0 } else { lo };
        let hi = if hi > lo { hi } else { lo + 1.0 };
        (lo, hi + (hi - lo) * 0.08)
    }
}

/// The ticks of a log axis from `lo` to `hi`: 1, 2 and 5 times each power of ten in range
/// (plotters' own log ticks can land a hair either side of a round number, and two of them
/// then read the same, e.g. "100" twice).
fn log_keys(lo: f64, hi: f64) -> Vec<f64> {
    let mut keys = Vec::new();
    if !(lo > 0.0 && hi > lo) {
        return keys;
    }
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    for k in first..=last {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(k);
            if v >= lo * 0.999_999 && v <= hi * 1.000_001 {
                keys.push(v);
            }
        }
    }
    keys
}

impl XyChart {
    fn draw_on<'a, DB: DrawingBackend + 'a, X, Y>(
        &self,
        chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
        y_floor: f64,
        x_span: (f64, f64),
    ) -> DrawResult<DB>
    where
        X: Ranged<ValueType = f64>,
        Y: Ranged<ValueType = f64>,
    {
        if let Some((v, label)) = &self.reference {
            chart
                .draw_series(LineSeries::new(
                    [(x_span.0, *v), (x_span.1, *v)],
                    WARN_RED.stroke_width(2),
                ))?
                .label(label.clone())
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], WARN_RED.stroke_width(2))
                });
        }
        for l in &self.lines {
            let color = l.color;
            let width = if l.solid { 3 } else { 2 };
            chart
                .draw_series(LineSeries::new(
                    l.points.iter().map(|&(x, y)| (x, y.max(y_floor))),
                    color.stroke_width(width),
                ))?
                .label(l.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(width))
                });
            if l.solid {
                // A point with a caveat is hollow (the note under the chart says why).
                chart.draw_series(l.points.iter().zip(&l.caveats).map(|(&(x, y), c)| {
                    let style = if c.is_empty() {
                        color.filled()
                    } else {
                        color.stroke_width(2)
                    };
                    Circle::new((x, y.max(y_floor)), if c.is_empty() { 5 } else { 7 }, style)
                }))?;
            } else {
                chart.draw_series(l.points.iter().map(|&(x, y)| {
                    TriangleMarker::new((x, y.max(y_floor)), 6, color.stroke_width(2))
                }))?;
            }
        }
        if !self.lines.is_empty() || self.reference.is_some() {
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

impl Chart for XyChart {
    fn size(&self) -> (u32, u32) {
        CHART_SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let main = frame(root, &self.foot)?;
        let xs = self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
        let (x0, x1) = range(xs, self.log_x, !self.log_x);
        let ys = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .chain(self.reference.as_ref().map(|r| r.0));
        let (y0, y1) = range(ys, self.log_y, !self.log_y);
        let mut builder = ChartBuilder::on(&main);
        builder
            .caption(&self.title, title_style())
            .margin(15)
            .margin_right(45)
            .x_label_area_size(55)
            .y_label_area_size(85);
        macro_rules! finish {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .max_light_lines(4)
                    .x_desc(self.x_desc.as_str())
                    .y_desc(self.y_desc.as_str())
                    .x_label_formatter(&|x| {
                        if self.whole_x && x.fract().abs() > 1e-9 {
                            String::new()
                        } else {
                            format_ms(*x)
                        }
                    })
                    .y_label_formatter(&|y| format_ms(*y))
                    .label_style(label_style())
                    .axis_desc_style(desc_style())
                    .draw()?;
                self.draw_on(&mut chart, y0, (x0, x1))?;
            }};
        }
        match (self.log_x, self.log_y) {
            (false, false) => finish!(builder.build_cartesian_2d(x0..x1, y0..y1)?),
            (false, true) => finish!(builder.build_cartesian_2d(
                x0..x1,
                (y0..y1).log_scale().with_key_points(log_keys(y0, y1))
            )?),
            (true, false) => finish!(builder.build_cartesian_2d(
                (x0..x1).log_scale().with_key_points(log_keys(x0, x1)),
                y0..y1
            )?),
            (true, true) => {
                finish!(builder.build_cartesian_2d(
                    (x0..x1).log_scale().with_key_points(log_keys(x0, x1)),
                    (y0..y1).log_scale().with_key_points(log_keys(y0, y1))
                )?)
            }
        }
        if self.lines.is_empty() {
            draw_empty_message(&main, &self.empty_message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_values() {
        assert_eq!(range([0.5, 40.0].into_iter(), true, false), (0.1, 100.0));
        let (lo, hi) = range([1000.0, 19000.0].into_iter(), false, true);
        assert_eq!(lo, 0.0);
        assert!(hi > 19000.0);
        assert_eq!(range(std::iter::empty(), true, false), (0.1, 10.0));
    }
}
