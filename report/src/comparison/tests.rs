//! Tests of the comparison table, on real summaries recorded by a quick suite run
//! (`report/tests/data/<step>/summary.json`; they also pin the summary schema: a change that
//! breaks reading them breaks these tests).

use super::*;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn fixture(step: &str) -> StepResult {
    StepResult::load(&data().join(step)).expect("fixture summary")
}

fn summary_of(r: &StepResult) -> &Summary {
    match r {
        StepResult::Ran { summary, .. } => summary,
        StepResult::Failed { .. } => panic!("fixture failed"),
    }
}

fn results() -> Results {
    let mut r = Results::new();
    r.insert(("a".into(), Step::Idle), fixture("idle"));
    r.insert(("a".into(), Step::Broadcast), fixture("broadcast"));
    r.insert(("a".into(), Step::Poison), fixture("poison"));
    let mut invalid = fixture("idle");
    if let StepResult::Ran { summary, .. } = &mut invalid {
        summary.valid = false;
        summary.invalid_reasons = vec!["generator CPU-bound: test".into()];
    }
    r.insert(("b".into(), Step::Idle), invalid);
    r.insert(
        ("b".into(), Step::Broadcast),
        StepResult::Failed {
            reason: "server did not start".into(),
        },
    );
    r
}

fn row<'a>(c: &'a Comparison, key: &str) -> &'a Row {
    c.rows
        .iter()
        .find(|r| r.key == key)
        .unwrap_or_else(|| panic!("row {key}"))
}

#[test]
fn every_number_traces_to_its_results_file() {
    let r = results();
    let c = build("quick", &["a".into(), "b".into()], &r, &data());
    let idle = summary_of(&r[&("a".to_string(), Step::Idle)]);
    let bcast = summary_of(&r[&("a".to_string(), Step::Broadcast)]);
    let poison = summary_of(&r[&("a".to_string(), Step::Poison)]);

    let mem = &row(&c, "memory_user_kib").cells["a"];
    let expected = idle
        .target_resources
        .memory_per_conn
        .as_ref()
        .expect("memory")
        .user_bytes_per_conn
        / 1024.0;
    assert_eq!(mem.value, Some(expected));
    assert_eq!(mem.source.as_deref(), Some("idle/summary.json"));
    assert_eq!(mem.status, "ok");

    let p99 = &row(&c, "latency_p99_ms").cells["a"];
    assert_eq!(
        p99.value,
        Some(bcast.latency_us.as_ref().expect("latency").p99 as f64 / 1000.0)
    );
    assert_eq!(p99.source.as_deref(), Some("broadcast/summary.json"));
    assert_eq!(
        row(&c, "loss").cells["a"].value,
        Some(bcast.messages.lost as f64)
    );
    assert_eq!(
        row(&c, "cpu_us_per_delivery").cells["a"].value,
        bcast.target_resources.cpu_us_per_delivery
    );
    let fault = &row(&c, "fault_blast_radius").cells["a"];
    assert_eq!(
        fault.value,
        Some(poison.fault.as_ref().expect("fault").others_lost as f64)
    );
    assert_eq!(
        row(&c, "connections_held").cells["a"].value,
        Some(idle.connections.ready as f64)
    );
}

#[test]
fn invalid_failed_and_missing_steps_never_show_a_number() {
    let c = build("quick", &["a".into(), "b".into()], &results(), &data());
    for key in ["connections_held", "memory_user_kib", "memory_kernel_kib"] {
        let cell = &row(&c, key).cells["b"];
        assert_eq!(
            (cell.status.as_str(), cell.value),
            ("invalid", None),
            "{key}"
        );
        assert!(
            cell.display.contains("invalid") && cell.condition.contains("CPU-bound"),
            "{cell:?}"
        );
    }
    for key in [
        "latency_p50_ms",
        "latency_p99_ms",
        "latency_p999_ms",
        "deliveries_per_s",
        "loss",
        "cpu_cores",
        "cpu_us_per_delivery",
    ] {
        let cell = &row(&c, key).cells["b"];
        assert_eq!(
            (cell.status.as_str(), cell.value),
            ("failed", None),
            "{key}"
        );
    }
    assert_eq!(
        row(&c, "fault_blast_radius").cells["b"].status,
        "not_measured"
    );
    assert_eq!(
        c.failures,
        vec!["b / broadcast: server did not start".to_string()]
    );
    assert!(row(&c, "horizontal_scaling")
        .cells
        .values()
        .all(|c| c.value.is_none()));
}

#[test]
fn markdown_has_a_column_per_architecture_and_links_to_the_files() {
    let c = build("quick", &["a".into(), "b".into()], &results(), &data());
    let md = render_markdown(&c, |_| None);
    assert!(md.contains("| question | a | b |"), "{md}");
    assert!(md.contains("](idle/summary.json)"), "{md}");
    assert!(
        md.contains("## Failures") && md.contains("server did not start"),
        "{md}"
    );
    let table_rows = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| question"))
        .count();
    assert_eq!(table_rows, c.rows.len());
    // The JSON form round-trips.
    let json = serde_json::to_string(&c).expect("encode");
    let back: Comparison = serde_json::from_str(&json).expect("decode");
    assert_eq!(back, c);
}

#[test]
fn conditions_round_to_three_significant_digits() {
    assert_eq!(sig3(39651.2), "39700");
    assert_eq!(sig3(401.3), "401");
    assert_eq!(sig3(0.0), "0");
    assert_eq!(sig3(99215.0), "99200");
}

#[test]
fn a_comparison_is_rebuilt_from_its_files_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    for (i, step) in ["idle", "broadcast", "poison"].iter().enumerate() {
        let d = runs.join(format!("run{i}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::copy(
            data().join(step).join("summary.json"),
            d.join("summary.json"),
        )
        .expect("copy");
    }
    let c = rebuild(dir.path()).expect("rebuild");
    let arch = summary_of(&fixture("idle"))
        .target
        .arch
        .clone()
        .expect("arch");
    assert_eq!(c.archs, vec![arch.clone()]);
    // The recorded fixtures have no scaling or slowloris run (the slowloris row is tested on
    // its own, below).
    for r in &c.rows {
        let cell = &r.cells[&arch];
        if !["horizontal_scaling", "slowloris_available"].contains(&r.key.as_str()) {
            assert!(
                cell.value.is_some() || cell.status == "invalid",
                "{}: {cell:?}",
                r.key
            );
        }
    }
    assert_eq!(step_of_scenario("quick-broadcast"), Some(Step::Broadcast));
    assert_eq!(step_of_scenario("demo"), None);
}

/// The slowloris row: ready of planned and the 503s, from the run's own summary; "yes" only
/// when every normal client got in; a run without silent sockets shows no number.
#[test]
fn the_slowloris_row_says_whether_the_server_stayed_available() {
    let with = |ready: u64, refused: Option<u64>, silent: Option<u64>| {
        let mut r = fixture("broadcast");
        if let StepResult::Ran { summary, .. } = &mut r {
            let c = &mut summary.connections;
            c.planned = 100;
            c.ready = ready;
            c.silent = silent;
            c.errors.clear();
            if ready == 0 {
                summary.status = RunStatus::Failed;
                summary.valid = false;
            }
            if let Some(n) = refused {
                c.errors.insert("handshake_status_503".into(), n);
            }
        }
        r
    };
    let mut r = Results::new();
    r.insert(("up".into(), Step::Slowloris), with(100, None, Some(1500)));
    r.insert(
        ("down".into(), Step::Slowloris),
        with(0, Some(100), Some(1500)),
    );
    r.insert(("none".into(), Step::Slowloris), with(100, None, None));
    let archs = ["up".into(), "down".into(), "none".into(), "missing".into()];
    let c = build("quick", &archs, &r, &data());
    let row = row(&c, "slowloris_available");
    let up = &row.cells["up"];
    assert_eq!(
        (up.display.as_str(), up.value),
        ("yes: 100 of 100 ready, 0 × 503", Some(100.0))
    );
    assert!(up.condition.contains("1500 silent"), "{up:?}");
    let down = &row.cells["down"];
    assert_eq!(
        (down.display.as_str(), down.value),
        ("no: 0 of 100 ready, 100 × 503", Some(0.0))
    );
    assert_eq!(row.cells["none"].value, None);
    assert_eq!(row.cells["missing"].status, "not_measured");
}

#[test]
fn a_run_without_an_architecture_belongs_to_its_label_column() {
    let mut s = summary_of(&fixture("idle")).clone();
    s.target.arch = Some("epoll".into());
    assert_eq!(column_of(&s).as_deref(), Some("epoll"));
    s.target.arch = None;
    assert_eq!(column_of(&s), None, "no architecture, no label: no column");
    s.target.settings.insert(
        chatbench_model::results::TARGET_LABEL_SETTING.into(),
        "main".into(),
    );
    assert_eq!(column_of(&s).as_deref(), Some("main"));
}

/// The broadcast fixture with p99 `p99_us` and CPU per delivery `cpu_us`.
fn broadcast_with(p99_us: u64, cpu_us: f64) -> StepResult {
    let mut r = fixture("broadcast");
    if let StepResult::Ran { summary, .. } = &mut r {
        summary.latency_us.as_mut().expect("latency").p99 = p99_us;
        summary.target_resources.cpu_us_per_delivery = Some(cpu_us);
    }
    r
}

/// A repeated broadcast step: each figure the table shows over its repeats is that figure's
/// median with its 95 % interval and CV, marked rough under 5 valid repeats, the left-out
/// repeats counted; a step that ran once shows its run alone; the other rows keep the run
/// with the median p99, which every repeated cell links to.
#[test]
fn a_repeated_step_shows_median_interval_and_cv_per_figure() {
    let mut runs = Runs::new();
    let one = vec![broadcast_with(1200, 6.0)];
    let three = vec![
        broadcast_with(1100, 6.3),
        broadcast_with(1400, 6.0),
        broadcast_with(1200, 6.1),
    ];
    let five: Vec<StepResult> = [
        (1100, 6.0),
        (1320, 6.1),
        (1250, 6.2),
        (1180, 6.3),
        (1400, 6.4),
    ]
    .into_iter()
    .map(|(p, c)| broadcast_with(p, c))
    .collect();
    let mut failed_one = five.clone();
    failed_one[4] = StepResult::Failed {
        reason: "server did not start".into(),
    };
    runs.insert(("one".into(), Step::Broadcast), one);
    runs.insert(("three".into(), Step::Broadcast), three);
    runs.insert(("five".into(), Step::Broadcast), five);
    runs.insert(("failed-one".into(), Step::Broadcast), failed_one);
    let archs: Vec<String> = ["one", "three", "five", "failed-one"]
        .map(String::from)
        .to_vec();
    let c = build_suite("quick", &archs, &runs, Path::new(""), None);
    let p99 = row(&c, "latency_p99_ms");
    let cell = |a: &str| &p99.cells[a];

    assert_eq!(cell("one").display, "1.200 ms");
    assert_eq!(cell("one").repeats, None);
    assert!(!cell("one").condition.contains("repeated step"));

    assert_eq!(
        cell("three").display,
        "1.200 ms (median of 3 runs; 95 % CI 1.100–1.400 (rough: fewer than 5 valid runs); CV 12.4 %)"
    );
    assert_eq!(cell("three").value, Some(1.2));
    let rep = cell("three").repeats.as_ref().expect("repeats");
    assert_eq!((rep.used, rep.rough, rep.ci95), (3, true, Some([1.1, 1.4])));

    assert_eq!(
        cell("five").display,
        "1.250 ms (median of 5 runs; 95 % CI 1.100–1.400; CV 9.4 %)"
    );
    assert!(cell("five").condition.contains("percentile-bootstrap"));

    let f = cell("failed-one");
    assert!(
        f.display
            .starts_with("1.215 ms (median of 4 of 5 runs; 1 failed; 95 % CI 1.100–1.320 (rough"),
        "{f:?}"
    );
    assert_eq!(f.status, "ok", "a failed repeat does not fail the step");
    assert_eq!(c.failures.len(), 1, "{:?}", c.failures);

    // CPU per delivery: its own median, not the median-p99 run's figure (6.1 µs here).
    let cpu = &row(&c, "cpu_us_per_delivery").cells["five"];
    assert_eq!(cpu.value, Some(6.2));
    assert!(
        cpu.display
            .starts_with("6.20 µs (median of 5 runs; 95 % CI 6.00–6.40; CV"),
        "{cpu:?}"
    );
    // Every figure that matters carries its spread; loss shows the linked run's.
    for key in ["latency_p50_ms", "deliveries_per_s", "cpu_cores"] {
        assert!(row(&c, key).cells["five"].repeats.is_some(), "{key}");
    }
    assert_eq!(row(&c, "loss").cells["five"].repeats, None);
    // The link: the repeat with the median p99 (1250 µs), the same for every row.
    assert_eq!(cpu.source, p99.cells["five"].source);
    // A rebuilt comparison is the same, byte for byte: the interval is deterministic.
    let again = build_suite("quick", &archs, &runs, Path::new(""), None);
    assert_eq!(
        serde_json::to_vec(&c).expect("json"),
        serde_json::to_vec(&again).expect("json")
    );
    // comparison.json carries the spread (a float may come back an ulp apart: compared
    // in the unit shown).
    let back: Comparison =
        serde_json::from_str(&serde_json::to_string(&c).expect("encode")).expect("decode");
    let rep = row(&back, "latency_p99_ms").cells["five"]
        .repeats
        .clone()
        .expect("repeats in the JSON");
    assert_eq!((rep.runs, rep.used, rep.ci95), (5, 5, Some([1.1, 1.4])));
    assert!((rep.cv.expect("cv") - 0.0936).abs() < 1e-4);
}

/// A capacity point retried because its first run was generator-bound: the first run stays in
/// `runs/` but counts nowhere — not in the table (the sweep goes on past it), not in a rebuild
/// from the files (`load` leaves out what `comparison.json` records as superseded) — while the
/// notes and the provenance name it. Without that record it would stop the sweep.
#[test]
fn a_superseded_run_is_kept_but_counted_nowhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    let capacity = |name: &str, valid: bool| -> StepResult {
        let mut r = fixture("broadcast");
        let StepResult::Ran { summary, .. } = &mut r else {
            panic!("fixture failed");
        };
        summary.scenario.name = "full-capacity".into();
        summary.connections.planned = summary.connections.ready;
        summary.connections.closed_by_server.clear();
        summary.messages.lost = 0;
        summary.valid = valid;
        if !valid {
            summary.invalid_reasons = vec![
                "generator missed its schedule: pacer wake-up lateness p99 2197 µs (limit 2000 µs)"
                    .into(),
            ];
        }
        let d = base.join("runs").join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        let json = serde_json::to_vec(&**summary).expect("encode");
        std::fs::write(d.join("summary.json"), json).expect("write");
        StepResult::load(&d).expect("load")
    };
    // Folder-name order is run order: the first run, its retry, the next point.
    let (first, retry, next) = (
        capacity("run0", false),
        capacity("run1", true),
        capacity("run2", true),
    );
    let arch = summary_of(&first).target.arch.clone().expect("arch");
    let archs = vec![arch.clone()];
    let why = crate::sweeps::check(Step::Capacity, summary_of(&first), 1e9).expect("invalid");
    let superseded = Superseded::of(
        &arch,
        Step::Capacity,
        "connections=2500 (1/8)".into(),
        why,
        &first,
        (&retry, true),
        base,
    )
    .expect("the first run left a folder");
    assert_eq!(superseded.source, "runs/run0/summary.json");
    assert_eq!(superseded.retry.as_deref(), Some("runs/run1/summary.json"));
    let note = superseded.note();
    for part in [
        &arch,
        "capacity",
        "connections=2500 (1/8)",
        "generator-bound: generator missed its schedule",
        "runs/run0/summary.json",
        "the retry passed",
    ] {
        assert!(note.contains(part), "{part}: {note}");
    }

    // What compare writes: the runs that stand for the points, the record, its note.
    let mut runs = Runs::new();
    runs.insert((arch.clone(), Step::Capacity), vec![retry, next]);
    let mut c = build_suite("full", &archs, &runs, base, Some(1e9));
    c.notes.push(note.clone());
    c.superseded = vec![superseded];
    c.provenance = Some(ComparisonProvenance::of(
        (&runs, &c.superseded),
        &archs,
        base,
        vec!["chatbench".into(), "compare".into()],
        "start".into(),
        "end".into(),
    ));
    let cell = &row(&c, "max_connections").cells[&arch];
    assert_eq!(cell.status, CellStatus::Ok, "{cell:?}");
    assert_eq!(cell.source.as_deref(), Some("runs/run2/summary.json"));
    assert!(!cell.display.contains("generator"), "{}", cell.display);
    let listed: Vec<(Option<&str>, &str)> = c
        .provenance
        .as_ref()
        .expect("provenance")
        .runs
        .iter()
        .map(|r| (r.source.as_deref(), r.what.as_str()))
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[2].0, Some("runs/run0/summary.json"));
    assert!(
        listed[2].1.starts_with("superseded by its retry"),
        "{listed:?}"
    );
    let json = serde_json::to_vec_pretty(&c).expect("encode");
    std::fs::write(base.join("comparison.json"), &json).expect("write");

    // Rebuilt from the files: the same comparison, the first run left out.
    let l = load(base).expect("load");
    let points = &l.runs[&(arch.clone(), Step::Capacity)];
    let dirs: Vec<String> = points.iter().filter_map(|r| source_of(r, base)).collect();
    assert_eq!(dirs, ["runs/run1/summary.json", "runs/run2/summary.json"]);
    assert_eq!(l.comparison(base), c);

    // Without the record, the first run counts again and stops the sweep at once.
    let mut bare = c.clone();
    bare.superseded.clear();
    std::fs::write(
        base.join("comparison.json"),
        serde_json::to_vec(&bare).expect("encode"),
    )
    .expect("write");
    let c = rebuild(base).expect("rebuild");
    let cell = &row(&c, "max_connections").cells[&arch];
    assert_ne!(cell.status, CellStatus::Ok, "{cell:?}");
    assert!(cell.display.contains("generator"), "{}", cell.display);
}
