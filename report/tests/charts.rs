//! Tests of the charts, on the recorded fixtures (`tests/data/<step>/`: summary.json, a trimmed
//! timeseries.csv, and the broadcast run's latency.hgrm).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chatbench_report::charts::{
    parse_hgrm, render_comparison_charts, run_timeline, ChartInputs, Results,
};
use chatbench_report::comparison::{Step, StepResult};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn fixture(step: &str) -> StepResult {
    StepResult::load(&data().join(step)).expect("fixture summary")
}

fn invalid(step: &str) -> StepResult {
    let mut r = fixture(step);
    if let StepResult::Ran { summary, .. } = &mut r {
        summary.valid = false;
        summary.invalid_reasons = vec!["generator CPU-bound: test".into()];
    }
    r
}

/// "a": every step valid; "b": idle invalid, broadcast failed; "c": broadcast invalid.
fn results() -> Results {
    let mut r = BTreeMap::new();
    r.insert(("a".into(), Step::Idle), fixture("idle"));
    r.insert(("a".into(), Step::Broadcast), fixture("broadcast"));
    r.insert(("a".into(), Step::Poison), fixture("poison"));
    r.insert(("b".into(), Step::Idle), invalid("idle"));
    r.insert(
        ("b".into(), Step::Broadcast),
        StepResult::Failed {
            reason: "server did not start".into(),
        },
    );
    r.insert(("c".into(), Step::Broadcast), invalid("broadcast"));
    r
}

fn archs() -> Vec<String> {
    vec!["a".into(), "b".into(), "c".into()]
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The PNG decodes to `size` and is more than a blank canvas.
fn check_png(path: &Path, size: (u32, u32)) {
    let bytes = std::fs::read(path).expect("png");
    assert!(bytes.starts_with(PNG_SIGNATURE), "{}", path.display());
    let img = image::load_from_memory(&bytes).expect("decodes").to_rgb8();
    assert_eq!(img.dimensions(), size, "{}", path.display());
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    // Text is anti-aliased, so a chart with text and coloured series has many shades.
    assert!(
        colours.len() > 50,
        "{}: only {} colours",
        path.display(),
        colours.len()
    );
}

/// The SVG is an `<svg>` document containing each of `texts`.
fn check_svg(path: &Path, texts: &[&str]) -> String {
    let svg = std::fs::read_to_string(path).expect("svg");
    let t = svg.trim();
    assert!(t.starts_with("<svg"), "{}", path.display());
    assert!(t.ends_with("</svg>"), "{}", path.display());
    assert_eq!(
        svg.matches("<text").count(),
        svg.matches("</text>").count(),
        "{}",
        path.display()
    );
    for text in texts {
        assert!(svg.contains(text), "{} lacks {text:?}", path.display());
    }
    svg
}

#[test]
fn parse_hgrm_reads_a_real_file() {
    let text = std::fs::read_to_string(data().join("broadcast/latency.hgrm")).expect("fixture");
    let rows = parse_hgrm(&text).expect("parses");
    assert!(rows.len() > 50, "{} rows", rows.len());
    assert_eq!(rows.first().map(|r| r.0), Some(0.0));
    assert_eq!(rows.last().map(|r| r.0), Some(1.0));
    assert!(rows
        .windows(2)
        .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    // The last row is the max of the `#[Max = …]` footer.
    let max_line = text
        .lines()
        .find(|l| l.starts_with("#[Max"))
        .expect("max line");
    let max: f64 = max_line
        .split(['=', ','])
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .expect("max value");
    assert_eq!(rows.last().map(|r| r.1), Some(max));
}

#[test]
fn parse_hgrm_rejects_malformed_input_without_panicking() {
    for text in [
        "",
        "garbage",
        "Value Percentile TotalCount 1/(1-Percentile)\n1.0 banana 3 2.0\n",
        "Value Percentile TotalCount 1/(1-Percentile)\n1.0 0.5\n",
        "\u{0}\u{1}\u{2}",
    ] {
        assert!(parse_hgrm(text).is_err(), "{text:?}");
    }
    // Truncated real file: cut in the middle of a row.
    let text = std::fs::read_to_string(data().join("broadcast/latency.hgrm")).expect("fixture");
    let cut = &text[..text.len() / 2];
    let cut = cut.rsplit_once(' ').map(|(a, _)| a).unwrap_or(cut);
    let _ = parse_hgrm(cut); // may parse or not, must not panic
}

#[test]
fn comparison_charts_render_as_png_and_svg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (archs, results) = (archs(), results());
    let drawn = render_comparison_charts(
        dir.path(),
        &ChartInputs {
            archs: &archs,
            results: &results,
            runs: &chatbench_report::comparison::runs_of(&results),
            tiny: false,
        },
    )
    .expect("charts");
    // Every chart drawn is kept in memory as the SVG written beside it.
    assert_eq!(drawn.svgs.len(), 8);
    for (name, svg) in &drawn.svgs {
        let file = std::fs::read_to_string(dir.path().join("charts").join(format!("{name}.svg")))
            .expect("svg");
        assert_eq!(&file, svg, "{name}");
    }
    let written = drawn.files;
    let charts = dir.path().join("charts");
    for name in [
        "latency_distribution",
        "memory_per_connection",
        "cpu_per_delivery",
        "timeline-a-idle",
        "timeline-a-broadcast",
        "timeline-a-poison",
        "timeline-b-idle",
        "timeline-c-broadcast",
    ] {
        for ext in ["png", "svg"] {
            let p = charts.join(format!("{name}.{ext}"));
            assert!(written.contains(&p), "{} not reported", p.display());
        }
    }
    assert_eq!(written.len(), 16, "{written:?}");
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&charts)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    for name in [
        "latency_distribution",
        "memory_per_connection",
        "cpu_per_delivery",
    ] {
        check_png(&charts.join(format!("{name}.png")), (1200, 750));
    }
    check_png(&charts.join("timeline-a-broadcast.png"), (1200, 1100));

    // Title, axis labels with units, legend, footnote with machine and date.
    let provenance = ["Machine: vm", "Runs of 2026-11-27"];
    let lat = check_svg(
        &charts.join("latency_distribution.svg"),
        &[
            "Delivery latency by percentile",
            "Delivery latency, ms",
            "Percentile (log scale",
            "99.9%",
            "a\n",
        ],
    );
    check_svg(&charts.join("latency_distribution.svg"), &provenance);
    check_svg(
        &charts.join("memory_per_connection.svg"),
        &[
            "Memory per idle connection",
            "Memory per connection, KiB",
            "user space (server RSS)",
            "kernel (slab)",
            "Machine: vm",
        ],
    );
    check_svg(
        &charts.join("cpu_per_delivery.svg"),
        &[
            "Server CPU per delivered message",
            "CPU per delivered message, µs",
            "Machine: vm",
        ],
    );
    check_svg(
        &charts.join("timeline-a-broadcast.svg"),
        &[
            "Run timeline: task-per-conn",
            "Connections open",
            "Server RSS, MiB",
            // 400 sent/s beside 40k delivered/s: each on its own axis.
            "Sent/s",
            "Delivered/s",
            "Latency, ms",
            "CPU, cores",
            "Time since the start of the run, s",
            "delivered/s",
            "measure",
            "Machine: vm",
        ],
    );
    // The idle run's timeline shows what the idle step measures (memory, connections) and no
    // empty message panels.
    let idle = check_svg(
        &charts.join("timeline-a-idle.svg"),
        &["Connections open", "Server RSS, MiB", "CPU, cores"],
    );
    assert!(
        !idle.contains("Messages/s") && !idle.contains("Sent/s"),
        "idle"
    );
    assert!(!idle.contains("no data in timeseries.csv"), "idle");
    assert!(
        !idle.contains("latency per second"),
        "a footnote about latency it lacks"
    );
    // The invalid broadcast run of "c" and the failed one of "b" are named, not plotted: the
    // latency chart has exactly one polyline with points (a's).
    assert!(lat.contains("c: invalid (generator-bound)"), "legend");
    assert!(lat.contains("b: failed"), "legend");
    assert!(lat.contains("generator CPU-bound: test"), "footnote reason");
}

#[test]
fn invalid_and_failed_runs_are_named_not_plotted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (archs, results) = (archs(), results());
    render_comparison_charts(
        dir.path(),
        &ChartInputs {
            archs: &archs,
            results: &results,
            runs: &chatbench_report::comparison::runs_of(&results),
            tiny: false,
        },
    )
    .expect("charts");
    let charts = dir.path().join("charts");
    let read = |n: &str| std::fs::read_to_string(charts.join(n)).expect("svg");

    // Memory: only "a" has bars (2 series × 1 arch); "b" is invalid, "c" has no idle run.
    let mem = read("memory_per_connection.svg");
    assert!(mem.contains("invalid — not plotted"), "slot of b");
    assert!(mem.contains("not run — not plotted"), "slot of c");
    assert!(mem.contains("b: invalid (generator-bound: generator CPU-bound: test)"));
    // Value labels: a's two figures, nothing else formatted as a value for b.
    let idle = match &results[&("a".to_string(), Step::Idle)] {
        StepResult::Ran { summary, .. } => summary.clone(),
        StepResult::Failed { .. } => panic!("fixture"),
    };
    let m = idle
        .target_resources
        .memory_per_conn
        .as_ref()
        .expect("memory sampled");
    assert!(mem.contains(&format!("{:.2}", m.user_bytes_per_conn / 1024.0)));
    assert!(mem.contains(&format!("{:.2}", m.kernel_slab_bytes_per_conn / 1024.0)));

    // CPU: "b" failed, "c" invalid; a's figure present.
    let cpu = read("cpu_per_delivery.svg");
    assert!(cpu.contains("failed — not plotted"));
    assert!(cpu.contains("invalid — not plotted"));
    assert!(cpu.contains("b: failed (server did not start)"));
    assert!(cpu.contains("c: invalid (generator-bound"));

    // Latency: one drawn line only (a); the legend names b and c as not plotted.
    let lat = read("latency_distribution.svg");
    let lines_with_points = lat
        .split("<polyline")
        .skip(1)
        .filter(|p| {
            p.split("points=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .is_some_and(|pts| pts.split_whitespace().count() > 10)
        })
        .count();
    assert_eq!(lines_with_points, 1, "only a's distribution is drawn");
    assert!(lat.contains("c: invalid (generator-bound) — not plotted"));

    // The timeline of an invalid run says so.
    let tl = read("timeline-c-broadcast.svg");
    assert!(tl.contains("(INVALID)"));
    assert!(tl.contains("INVALID run (generator-bound): generator CPU-bound: test"));
}

#[test]
fn nothing_valid_still_renders_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archs = vec!["x".to_string()];
    let mut results = BTreeMap::new();
    results.insert(
        ("x".to_string(), Step::Broadcast),
        StepResult::Failed {
            reason: "server did not start".into(),
        },
    );
    render_comparison_charts(
        dir.path(),
        &ChartInputs {
            archs: &archs,
            results: &results,
            runs: &chatbench_report::comparison::runs_of(&results),
            tiny: false,
        },
    )
    .expect("charts");
    let lat =
        std::fs::read_to_string(dir.path().join("charts/latency_distribution.svg")).expect("svg");
    assert!(lat.contains("No valid broadcast run to plot"));
    assert!(lat.contains("Machine: unknown"));
}

#[test]
fn run_timeline_renders_one_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = run_timeline(&data().join("poison"), dir.path(), "poison").expect("timeline");
    assert_eq!(
        written,
        vec![dir.path().join("poison.png"), dir.path().join("poison.svg")]
    );
    check_png(&written[0], (1200, 1100));
    check_svg(
        &written[1],
        &["Run timeline: task-per-conn", "quick-poison"],
    );
}

#[test]
fn a_run_with_a_failover_section_gets_a_node_loss_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).expect("mkdir");
    std::fs::copy(
        data().join("poison/timeseries.csv"),
        run.join("timeseries.csv"),
    )
    .expect("copy");
    let mut summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data().join("poison/summary.json")).expect("summary"),
    )
    .expect("json");
    summary["failover"] = serde_json::json!({
        "node": 2, "pid": 4242, "at_s": 9.5, "at_window_s": 2.0, "clients_on_node": 100,
        "reconnects": 100, "reconnect_attempts": 130, "reconnect_failures": 0, "all_back": true,
        "all_back_ms": 480.0, "reconnect_time_us": null,
        "during": {"expected": 5000, "lost": 321}, "outside": {"expected": 20000, "lost": 0},
        "steady_loss_ratio": 0.0, "p99_before_us": 2000, "p99_during_us": 350000,
        "p99_after_us": 2500, "p99_recovery_factor": 2.0, "p99_recovered_ms": 1000.0,
        "restarts": 1, "restart_ms": 57
    });
    std::fs::write(
        run.join("summary.json"),
        serde_json::to_vec(&summary).expect("encode"),
    )
    .expect("write");
    let written = run_timeline(&run, dir.path(), "t").expect("charts");
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["t.png", "t.svg", "t-node-loss.png", "t-node-loss.svg"]
    );
    check_png(&written[2], (1200, 1100));
    check_svg(
        &written[3],
        &[
            "Node loss: task-per-conn",
            "node 2 killed",
            "all back",
            "Lost 321 of 5000",
        ],
    );
    // Without the section: the run timeline only.
    let plain = run_timeline(&data().join("poison"), dir.path(), "p").expect("timeline");
    assert_eq!(plain.len(), 2);
}

#[test]
fn run_timeline_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).expect("mkdir");
    std::fs::copy(data().join("idle/summary.json"), run.join("summary.json")).expect("copy");
    let e = run_timeline(&run, dir.path(), "t").expect_err("no timeseries");
    assert!(e.to_string().contains("timeseries.csv"), "{e}");
    std::fs::write(run.join("timeseries.csv"), "t_s,phase,metric,value\nx,y\n").expect("write");
    let e = run_timeline(&run, dir.path(), "t").expect_err("bad timeseries");
    assert!(e.to_string().contains("timeseries.csv"), "{e}");
}

#[test]
fn missing_latency_file_is_left_out_with_its_reason() {
    // A valid broadcast run whose folder has no latency.hgrm (the poison fixture has none).
    let dir = tempfile::tempdir().expect("tempdir");
    let archs = vec!["a".to_string()];
    let mut results = BTreeMap::new();
    let mut r = fixture("poison");
    if let StepResult::Ran { dir: d, .. } = &mut r {
        *d = data().join("idle");
    }
    results.insert(("a".to_string(), Step::Broadcast), r);
    render_comparison_charts(
        dir.path(),
        &ChartInputs {
            archs: &archs,
            results: &results,
            runs: &chatbench_report::comparison::runs_of(&results),
            tiny: false,
        },
    )
    .expect("charts");
    let lat =
        std::fs::read_to_string(dir.path().join("charts/latency_distribution.svg")).expect("svg");
    assert!(lat.contains("a: latency.hgrm unreadable"), "legend");
    assert!(lat.contains("latency.hgrm"), "footnote");
}

/// A run whose window other work shared (`target_resources.other_load` over the limit).
fn busy(step: &str) -> StepResult {
    let mut r = fixture(step);
    if let StepResult::Ran { summary, .. } = &mut r {
        summary.target_resources.other_load = Some(chatbench_model::results::OtherLoad {
            cpus: vec![0],
            busy_cores: 0.9,
            other_cores: 0.5,
            steal_cores: 0.0,
        });
    }
    r
}

/// The scaling runs of `arch` at 1, 2 and 4 nodes from the broadcast fixture, the 2-node one
/// `busy` when asked.
fn scaling_runs(runs: &mut chatbench_report::comparison::Runs, arch: &str, busy_at_2: bool) {
    let mut points = Vec::new();
    for n in [1u32, 2, 4] {
        let mut r = if busy_at_2 && n == 2 {
            busy("broadcast")
        } else {
            fixture("broadcast")
        };
        if let StepResult::Ran { summary, .. } = &mut r {
            summary
                .target
                .settings
                .insert("nodes".into(), n.to_string());
            summary.scenario.name = "quick-scaling".into();
        }
        points.push(r);
    }
    runs.insert((arch.to_string(), Step::Scaling), points);
}

/// Every chart drawn for `archs`/`results` plus the scaling charts of `runs`, by name.
fn draw_all(
    dir: &Path,
    archs: &[String],
    results: &Results,
    runs: &chatbench_report::comparison::Runs,
    tiny: bool,
) -> Vec<(String, String)> {
    let drawn = chatbench_report::outputs::draw_charts(dir, archs, results, runs, 100.0, tiny);
    assert!(drawn.skipped.is_empty(), "{:?}", drawn.skipped);
    drawn.svgs
}

/// Tick labels that read the same on one axis. plotters draws an axis's labels one after
/// the other: a run of consecutive numeric `<text>` elements at one x (a y axis) or one y (an
/// x axis) is one axis; two equal labels in a run are a duplicate tick.
fn duplicate_ticks(svg: &str) -> Vec<String> {
    let mut texts: Vec<(String, String, String)> = Vec::new();
    for part in svg.split("<text").skip(1) {
        let Some((attrs, rest)) = part.split_once('>') else {
            continue;
        };
        let text = rest
            .split("</text>")
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let attr = |name: &str| {
            attrs
                .split(&format!(" {name}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        texts.push((attr("x"), attr("y"), text));
    }
    let numeric = |t: &str| t.trim_end_matches(['%', 'k']).parse::<f64>().is_ok();
    let mut dups = Vec::new();
    let mut run: Vec<&(String, String, String)> = Vec::new();
    // An axis has three ticks or more; two value labels over bars of equal height are not one.
    let check = |run: &[&(String, String, String)], dups: &mut Vec<String>| {
        if run.len() < 3 {
            return;
        }
        let mut labels: Vec<&str> = run.iter().map(|t| t.2.as_str()).collect();
        labels.sort_unstable();
        for w in labels.windows(2) {
            if w[0] == w[1] {
                dups.push(format!("{} (axis at {}, {})", w[0], run[0].0, run[0].1));
            }
        }
    };
    for t in &texts {
        let same_axis = run.last().is_some_and(|p| {
            numeric(&t.2)
                && (p.0 == t.0 && run.iter().all(|q| q.0 == t.0)
                    || p.1 == t.1 && run.iter().all(|q| q.1 == t.1))
        });
        if !same_axis {
            check(&run, &mut dups);
            run.clear();
        }
        if numeric(&t.2) {
            run.push(t);
        }
    }
    check(&run, &mut dups);
    dups
}

#[test]
fn a_busy_run_is_marked_in_every_chart_that_plots_it_and_clean_charts_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archs: Vec<String> = vec!["a".into(), "t".into()];
    let mut results: Results = BTreeMap::new();
    results.insert(("a".into(), Step::Idle), fixture("idle"));
    results.insert(("a".into(), Step::Broadcast), fixture("broadcast"));
    results.insert(("t".into(), Step::Idle), fixture("idle"));
    results.insert(("t".into(), Step::Broadcast), busy("broadcast"));
    let mut runs = chatbench_report::comparison::runs_of(&results);
    scaling_runs(&mut runs, "a", false);
    scaling_runs(&mut runs, "t", true);
    // One point of each sweep, so that every kind of chart is checked below.
    for (step, fixture_step) in [
        (Step::IdleRamp, "idle"),
        (Step::LoadSweep, "broadcast"),
        (Step::RoomSize, "broadcast"),
    ] {
        runs.insert(("a".into(), step), vec![fixture(fixture_step)]);
        runs.insert(("t".into(), step), vec![busy(fixture_step)]);
    }
    let svgs = draw_all(dir.path(), &archs, &results, &runs, false);
    for name in ["memory_vs_connections", "p99_vs_load", "p99_vs_room_size"] {
        assert!(svgs.iter().any(|(n, _)| n == name), "{name} not drawn");
    }
    let svg = |name: &str| {
        svgs.iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("{name} not drawn"))
    };
    for name in [
        "latency_distribution",
        "cpu_per_delivery",
        "scaling_p99",
        "scaling_cpu_per_delivery",
        "p99_vs_load",
        "p99_vs_room_size",
        "timeline-t-broadcast",
    ] {
        let s = svg(name);
        assert!(
            s.contains("(machine busy)"),
            "{name} does not mark the busy run"
        );
    }
    // Where it is marked: the busy bar is hollow, its point hollow, its curve dashed.
    assert!(svg("cpu_per_delivery").contains("t (machine busy)"));
    assert!(svg("scaling_p99").contains("t at 2 nodes (machine busy)"));
    assert!(svg("latency_distribution").contains("t (machine busy)"));
    for (name, s) in &svgs {
        assert!(
            !s.contains("(machine busy) (machine busy)"),
            "{name} repeats the mark"
        );
    }
    // The memory chart plots the idle runs, which were quiet: it says every figure is clean.
    let memory = svg("memory_per_connection");
    assert!(!memory.contains("(machine busy)"));
    assert!(
        memory.contains("Every figure drawn here is clean"),
        "memory footnote"
    );
    // Footnotes name only what the run had: no redis-server, no independent servers.
    let cpu = svg("scaling_cpu_per_delivery");
    assert!(
        !cpu.contains("redis"),
        "a redis-server that was not in the run"
    );
    assert!(
        !cpu.contains("cluster columns"),
        "columns that were not in the run"
    );
    // No axis reads the same tick twice, in any chart.
    for (name, s) in &svgs {
        let d = duplicate_ticks(s);
        assert!(d.is_empty(), "{name}: duplicate tick labels {d:?}");
    }
}

#[test]
fn every_chart_of_a_tiny_comparison_says_it_is_not_meaningful() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (archs, results) = (archs(), results());
    let mut runs = chatbench_report::comparison::runs_of(&results);
    scaling_runs(&mut runs, "a", false);
    let svgs = draw_all(dir.path(), &archs, &results, &runs, true);
    assert!(svgs.len() > 8, "{}", svgs.len());
    for (name, s) in &svgs {
        assert!(
            s.contains("(tiny: not meaningful)"),
            "{name} is not labelled"
        );
    }
    let plain = tempfile::tempdir().expect("tempdir");
    for (name, s) in draw_all(plain.path(), &archs, &results, &runs, false) {
        assert!(
            !s.contains("(tiny: not meaningful)"),
            "{name} labelled tiny"
        );
    }
}

#[test]
fn the_duplicate_tick_check_finds_a_repeated_label() {
    let svg = "<svg><text x=\"10\" y=\"5\">100</text><text x=\"10\" y=\"50\">100</text><text x=\"10\" y=\"90\">10</text></svg>";
    assert_eq!(duplicate_ticks(svg).len(), 1, "{:?}", duplicate_ticks(svg));
    let ok = "<svg><text x=\"10\" y=\"5\">100</text><text x=\"10\" y=\"50\">50</text><text x=\"10\" y=\"90\">10</text></svg>";
    assert!(duplicate_ticks(ok).is_empty());
}

#[test]
fn a_gzipped_timeseries_draws_the_same_timeline() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).expect("mkdir");
    std::fs::copy(data().join("idle/summary.json"), run.join("summary.json")).expect("copy");
    let csv = std::fs::read(data().join("idle/timeseries.csv")).expect("csv");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&csv).expect("gzip");
    std::fs::write(run.join("timeseries.csv.gz"), gz.finish().expect("gzip")).expect("write");
    let from_gz = run_timeline(&run, dir.path(), "gz").expect("timeline from the .gz");
    std::fs::write(run.join("timeseries.csv"), &csv).expect("write");
    let from_csv = run_timeline(&run, dir.path(), "csv").expect("timeline from the .csv");
    let svg = |files: &[PathBuf]| {
        std::fs::read_to_string(
            files
                .iter()
                .find(|p| p.extension().is_some_and(|x| x == "svg"))
                .expect("svg"),
        )
        .expect("read")
    };
    assert_eq!(svg(&from_gz), svg(&from_csv));
    // A truncated .gz is an error naming the file, not a panic.
    std::fs::remove_file(run.join("timeseries.csv")).expect("rm");
    std::fs::write(run.join("timeseries.csv.gz"), b"\x1f\x8b\x08\x00garbage").expect("write");
    let e = run_timeline(&run, dir.path(), "bad").expect_err("a broken .gz");
    assert!(e.to_string().contains("timeseries.csv.gz"), "{e}");
}

/// A repeated broadcast step: the CPU bar is the table's figure, the median over the repeats,
/// with its interval as a whisker and the rough mark under 5 valid repeats; the latency chart
/// says which repeat its curve is and gives the p99 over the repeats.
#[test]
fn a_repeated_step_draws_its_median_with_the_interval_and_its_caveat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archs = vec!["a".to_string()];
    let with_cpu = |cpu: f64, p99: u64| {
        let mut r = fixture("broadcast");
        if let StepResult::Ran { summary, .. } = &mut r {
            summary.target_resources.cpu_us_per_delivery = Some(cpu);
            summary.latency_us.as_mut().expect("latency").p99 = p99;
        }
        r
    };
    let mut runs = BTreeMap::new();
    runs.insert(
        ("a".to_string(), Step::Broadcast),
        vec![
            with_cpu(6.0, 1100),
            with_cpu(7.5, 1400),
            with_cpu(6.5, 1200),
        ],
    );
    let results = chatbench_report::sweeps::headline(&runs);
    let inputs = ChartInputs {
        archs: &archs,
        results: &results,
        runs: &runs,
        tiny: false,
    };
    render_comparison_charts(dir.path(), &inputs).expect("charts");
    let read = |n: &str| std::fs::read_to_string(dir.path().join("charts").join(n)).expect("svg");
    let cpu = read("cpu_per_delivery.svg");
    // The median (6.50), not the median-p99 run's own figure (also 6.50 here: 1200 µs) —
    // so check the whisker's ends in the footnote, and the mark on the bar.
    assert!(
        cpu.contains("6.50 (rough: fewer than 5 valid runs)"),
        "{cpu}"
    );
    // The footnote (wrapped over lines): the median, its interval, the mark.
    assert!(
        cpu.contains("6.50 µs (median of 3 runs") && cpu.contains("6.00–7.50"),
        "footnote: {cpu}"
    );
    assert!(cpu.contains("Read with care"), "the rough bar is named");
    let lat = read("latency_distribution.svg");
    assert!(lat.contains("repeat with the median p99"), "{lat}");
    assert!(lat.contains("1.100–1.400"), "{lat}");
}
