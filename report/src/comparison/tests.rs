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
    let md = render_markdown(&c);
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
