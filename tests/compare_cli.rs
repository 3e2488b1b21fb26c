//! End-to-end test of `chatbench compare`: the quick suite at `--tiny` sizes on two
//! architectures, asserting the table's shape and that every number in it traces to a results
//! file.

use std::path::Path;
use std::process::{Command, Stdio};

fn only_dir(root: &Path) -> std::path::PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(root)
        .expect("out")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

#[test]
fn quick_suite_table_traces_every_number_to_a_results_file() {
    let out = tempfile::tempdir().expect("tempdir");
    let archs = "task-per-conn,thread-pool,epoll,cluster-mesh";
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "compare",
            "--tiny",
            "--archs",
            archs,
            "--out",
            out.path().to_str().expect("path"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run compare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let dir = only_dir(out.path());
    let md = std::fs::read_to_string(dir.join("comparison.md")).expect("comparison.md");
    assert!(
        md.contains(
            "| question (tiny: not meaningful) | task-per-conn | thread-pool | epoll | cluster-mesh |"
        ),
        "{md}"
    );
    // The --tiny run says so in its title, and compare ends naming the page to open.
    assert!(
        md.starts_with("# chatbench comparison — suite `quick` (tiny: not meaningful)"),
        "{md}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some(format!("report: {}", dir.join("report.html").display()).as_str()),
        "compare ends with the page's path"
    );
    // Run folders are named with their column.
    for arch in archs.split(',') {
        assert!(
            std::fs::read_dir(dir.join("runs")).expect("runs").any(|e| e
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .contains(&format!("-{arch}-quick-idle"))),
            "no run folder named with {arch}"
        );
    }
    let c: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("comparison.json")).expect("comparison.json"),
    )
    .expect("json");
    assert_eq!(c["schema"], "chatbench.comparison/v1");
    let rows = c["rows"].as_array().expect("rows");
    let keys: Vec<&str> = rows
        .iter()
        .map(|r| r["key"].as_str().expect("key"))
        .collect();
    for k in [
        "connections_held",
        "memory_user_kib",
        "memory_kernel_kib",
        "latency_p50_ms",
        "latency_p99_ms",
        "latency_p999_ms",
        "loss",
        "cpu_cores",
        "cpu_us_per_delivery",
        "fault_blast_radius",
        "slowloris_available",
        "scaling_delivered_per_s",
        "scaling_p99_ms",
        "scaling_cpu_us_per_delivery",
        "node_loss_all_back_ms",
        "node_loss_messages_lost",
        "node_loss_p99_ms",
    ] {
        assert!(keys.contains(&k), "row {k} missing: {keys:?}");
    }
    // The slowloris row: 1,500 silent sockets take thread-pool's default pool of 1,024 workers
    // (every normal client refused with 503); epoll lets every client in.
    let slowloris = rows
        .iter()
        .find(|r| r["key"] == "slowloris_available")
        .expect("slowloris row");
    let shown = |arch: &str| {
        slowloris["cells"][arch]["display"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        shown("thread-pool").starts_with("no: 0 of 50 ready, 50 × 503"),
        "{slowloris}"
    );
    assert!(
        shown("epoll").starts_with("yes: 50 of 50 ready"),
        "{slowloris}"
    );
    // Rows that only the cluster column measures.
    let scaling = |key: &str| key.starts_with("scaling_") || key.starts_with("node_loss_");
    // The cluster column ran the scaling step at 1, 2 and 4 nodes, each its own run.
    let scaling_runs = std::fs::read_dir(dir.join("runs"))
        .expect("runs")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with("quick-scaling"))
        })
        .count();
    assert_eq!(scaling_runs, 3, "scaling runs of cluster-mesh");
    let (mut traced, mut invalid) = (0, 0);
    for r in rows {
        for arch in archs.split(',') {
            let cell = &r["cells"][arch];
            assert!(cell.is_object(), "row {} has no {arch} cell", r["key"]);
            let Some(value) = cell["value"].as_f64() else {
                // No number: an invalid run (generator-bound on a busy machine) says why; the
                // only question the quick suite does not measure is horizontal scaling of the
                // single-process architectures.
                let key = r["key"].as_str().expect("key");
                match cell["status"].as_str() {
                    Some("partial") if scaling(key) => {
                        assert!(
                            cell["display"]
                                .as_str()
                                .is_some_and(|d| d.contains("invalid") || d.contains("failed")),
                            "{cell}"
                        );
                        invalid += 1;
                    }
                    Some("invalid") => {
                        assert!(
                            cell["condition"].as_str().is_some_and(|c| !c.is_empty()),
                            "{cell}"
                        );
                        assert!(
                            cell["display"]
                                .as_str()
                                .is_some_and(|d| d.contains("invalid")),
                            "{cell}"
                        );
                        invalid += 1;
                    }
                    Some("not_measured") => {
                        assert!(
                            scaling(key) && arch != "cluster-mesh",
                            "{key} / {arch}: {cell}"
                        )
                    }
                    other => panic!("row {} / {arch}: no number and status {other:?}", r["key"]),
                }
                continue;
            };
            let src = dir.join(cell["source"].as_str().expect("a number without a source"));
            let s: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&src).expect("source file"))
                    .expect("summary");
            let from_file = match r["key"].as_str().expect("key") {
                "connections_held" => s["connections"]["ready"].as_f64(),
                "memory_user_kib" => s["target_resources"]["memory_per_conn"]
                    ["user_bytes_per_conn"]
                    .as_f64()
                    .map(|b| b / 1024.0),
                "memory_kernel_kib" => s["target_resources"]["memory_per_conn"]
                    ["kernel_slab_bytes_per_conn"]
                    .as_f64()
                    .map(|b| b / 1024.0),
                "latency_p50_ms" => s["latency_us"]["p50"].as_f64().map(|v| v / 1000.0),
                "latency_p99_ms" => s["latency_us"]["p99"].as_f64().map(|v| v / 1000.0),
                "latency_p999_ms" => s["latency_us"]["p999"].as_f64().map(|v| v / 1000.0),
                "loss" => s["messages"]["lost"].as_f64(),
                "cpu_cores" => s["target_resources"]["cpu_cores_measure"].as_f64(),
                "cpu_us_per_delivery" => s["target_resources"]["cpu_us_per_delivery"].as_f64(),
                "fault_blast_radius" => s["fault"]["others_lost"].as_f64(),
                "slowloris_available" => s["connections"]["ready"].as_f64(),
                "scaling_delivered_per_s" => s["messages"]["delivered_per_s"].as_f64(),
                "scaling_p99_ms" => s["latency_us"]["p99"].as_f64().map(|v| v / 1000.0),
                "scaling_cpu_us_per_delivery" => {
                    s["target_resources"]["cpu_us_per_delivery"].as_f64()
                }
                "node_loss_all_back_ms" => s["failover"]["all_back_ms"].as_f64(),
                "node_loss_messages_lost" => s["failover"]["during"]["lost"].as_f64(),
                "node_loss_p99_ms" => s["failover"]["p99_during_us"].as_f64().map(|v| v / 1000.0),
                // Any other single-figure row: as the figure catalogue reads the file.
                other => {
                    let (fig, _) = chatbench_model::figures::table()
                        .find(|(_, t)| t.key == other)
                        .unwrap_or_else(|| panic!("unexpected numeric row {other}"));
                    let typed: chatbench_model::results::Summary =
                        serde_json::from_value(s.clone()).expect("a typed summary");
                    fig.shown(&typed)
                }
            };
            assert_eq!(
                from_file,
                Some(value),
                "row {} / {arch} vs {}",
                r["key"],
                src.display()
            );
            traced += 1;
        }
    }
    // The charts: every one a real PNG and an SVG.
    for name in [
        "latency_distribution",
        "memory_per_connection",
        "cpu_per_delivery",
        "scaling_p99",
        "scaling_cpu_per_delivery",
    ] {
        let png = std::fs::read(dir.join("charts").join(format!("{name}.png"))).expect("png");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{name}.png"
        );
        let svg =
            std::fs::read_to_string(dir.join("charts").join(format!("{name}.svg"))).expect("svg");
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{name}.svg");
    }
    // Every scaling point has its own timeline (the table's cells come from one of them), and
    // the page links each.
    let page = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    for (i, n) in [1, 2, 4].into_iter().enumerate() {
        let name = format!("timeline-cluster-mesh-scaling-{:02}-{n}nodes", i + 1);
        let points = dir.join("charts").join("points");
        let png = std::fs::read(points.join(format!("{name}.png"))).expect("point png");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}.png");
        let svg = std::fs::read_to_string(points.join(format!("{name}.svg"))).expect("point svg");
        assert!(svg.contains("</svg>"), "{name}.svg");
        assert!(
            page.contains(&format!("href=\"charts/points/{name}.svg\"")),
            "report.html does not link {name}"
        );
    }
    // report.html: self-contained, and it renders in a real browser with every chart and no
    // console output.
    for fetch in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(
            !page.contains(fetch),
            "report.html fetches from the network: {fetch}"
        );
    }
    let svgs = std::fs::read_dir(dir.join("charts"))
        .expect("charts")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "svg"))
        })
        .count();
    let (dom, console) = browser_dump(&dir.join("report.html"));
    assert!(
        dom.contains("</body>"),
        "the page did not finish rendering: {dom}"
    );
    // Every chart drawn is in the rendered page (plotters' SVGs do not nest <svg>).
    assert_eq!(
        dom.matches("<svg").count(),
        svgs,
        "charts missing from the page"
    );
    assert!(console.is_empty(), "browser console output: {console:?}");
    // The rendered page opens with the verdict, says what each column stands for, and lists
    // every run of the comparison in its provenance.
    assert!(
        dom.contains("<p class=\"verdict\">") && dom.contains("Best on each question"),
        "no verdict paragraph"
    );
    assert!(
        dom.contains("<dl class=\"columns\">")
            && dom.contains("BEAM")
            && dom.contains("Node.js")
            && dom.contains("Tomcat"),
        "no column legend"
    );
    let run_folders = std::fs::read_dir(dir.join("runs"))
        .expect("runs")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().join("summary.json").is_file())
        })
        .count();
    let failures = c["failures"].as_array().map_or(0, Vec::len);
    assert_eq!(
        dom.matches("<li class=\"subrun\">").count(),
        run_folders + failures,
        "one provenance entry per run"
    );
    // `chatbench report` rebuilds comparison.md/json/html from the files alone, byte for byte.
    let files = ["comparison.md", "comparison.json", "report.html"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("file"))
        .collect();
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args(["report", dir.to_str().expect("path")])
        .stdin(Stdio::null())
        .output()
        .expect("run report");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (f, b) in files.iter().zip(&before) {
        let a = std::fs::read(dir.join(f)).expect("file");
        assert!(&a == b, "report rebuilt a different {f}");
    }
    // The measured questions per architecture (the figure catalogue's table rows, the fault
    // row and the slowloris row), each a traced number or an explained invalid, and the three
    // scaling and three node-loss rows of the cluster column.
    let questions = chatbench_model::figures::table().count() + 2;
    assert_eq!(
        traced + invalid,
        questions * archs.split(',').count() + 6,
        "{md}"
    );
}

/// Loads `page` in headless Chromium; returns its DOM as rendered and the console lines it
/// logged (a Content-Security-Policy violation is one).
fn browser_dump(page: &Path) -> (String, Vec<String>) {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("headless Chromium is needed for the report.html check: install Debian's `chromium` (scripts/test.sh does)");
    let profile = tempfile::tempdir().expect("profile dir");
    let o = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        o.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dom = String::from_utf8_lossy(&o.stdout).into_owned();
    let console = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect();
    (dom, console)
}

/// Every run folder of `dir` whose scenario is `name` and whose server was `arch`.
fn summaries_of(dir: &Path, name: &str, arch: &str) -> Vec<serde_json::Value> {
    let mut dirs: Vec<_> = std::fs::read_dir(dir.join("runs"))
        .expect("runs")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .filter_map(|d| {
            let s: serde_json::Value =
                serde_json::from_slice(&std::fs::read(d.join("summary.json")).ok()?).ok()?;
            (s["scenario"]["name"] == name && s["target"]["arch"] == arch).then_some(s)
        })
        .collect()
}

#[test]
fn full_suite_sweeps_trace_to_their_results_files() {
    let out = tempfile::tempdir().expect("tempdir");
    let archs = ["task-per-conn", "epoll"];
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "compare",
            "--suite",
            "full",
            "--tiny",
            "--repeats",
            "2",
            "--archs",
            &archs.join(","),
            "--out",
            out.path().to_str().expect("path"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run compare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let dir = only_dir(out.path());
    let c: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("comparison.json")).expect("comparison.json"),
    )
    .expect("json");
    assert_eq!(c["suite"], "full");
    assert_eq!(c["slo_p99_ms"], 100.0);
    let rows = c["rows"].as_array().expect("rows");
    let row = |key: &str| {
        rows.iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("row {key} missing"))
    };
    for arch in archs {
        // Capacity: the number is the ready count of the step it links to, a capacity step.
        let cell = &row("max_connections")["cells"][arch];
        check_traced(&dir, cell, "full-capacity", |s| {
            s["connections"]["ready"].as_f64()
        });
        // The knee: delivered/s of a load-sweep step.
        let cell = &row("knee_deliveries_per_s")["cells"][arch];
        check_traced(&dir, cell, "full-load-sweep", |s| {
            s["messages"]["delivered_per_s"].as_f64()
        });
        // Room sizes: p99 of the run with that room size.
        for m in [10, 100] {
            let cell = &row(&format!("latency_p99_room_{m}_ms"))["cells"][arch];
            check_traced(&dir, cell, "full-room-size", |s| {
                let toml: toml::Table = toml::from_str(s["scenario"]["text"].as_str()?).ok()?;
                assert_eq!(toml["members_per_room"].as_integer(), Some(m), "{cell}");
                s["latency_us"]["p99"].as_f64().map(|v| v / 1000.0)
            });
        }
        // Scaling: independent servers at 1, 2 and 4 nodes; the number is the p99 of the
        // largest node count with one, and it links to that run.
        let scaling = summaries_of(&dir, "full-scaling", arch);
        let nodes: Vec<&str> = scaling
            .iter()
            .map(|s| s["target"]["settings"]["nodes"].as_str().unwrap_or("1"))
            .collect();
        assert_eq!(nodes, ["1", "2", "4"], "scaling points of {arch}");
        let cell = &row("scaling_p99_ms")["cells"][arch];
        check_traced(&dir, cell, "full-scaling", |s| {
            s["latency_us"]["p99"].as_f64().map(|v| v / 1000.0)
        });
        // The memory slope, recomputed here from every idle-ramp summary of the arch.
        let ramp = summaries_of(&dir, "full-idle-ramp", arch);
        assert_eq!(ramp.len(), 2, "two idle-ramp steps for {arch}");
        let cell = &row("memory_slope_user_kib")["cells"][arch];
        let pts: Vec<(f64, f64)> = ramp
            .iter()
            .filter(|s| {
                s["valid"] == true && s["connections"]["ready"] == s["connections"]["planned"]
            })
            .map(|s| {
                let m = &s["target_resources"]["memory_per_conn"];
                let n = m["connections"].as_f64().expect("n");
                (n, m["user_bytes_per_conn"].as_f64().expect("user") * n)
            })
            .collect();
        if pts.len() == 2 {
            let slope = (pts[1].1 - pts[0].1) / (pts[1].0 - pts[0].0) / 1024.0;
            let v = cell["value"]
                .as_f64()
                .expect("a slope from two usable steps");
            assert!(
                (v - slope).abs() < 1e-6 * slope.abs().max(1.0),
                "{v} vs {slope}"
            );
        } else {
            assert!(cell["value"].is_null(), "{cell}");
        }
        // The broadcast step ran twice; the table shows the median p99 of the valid repeats
        // (the mean of two), with its interval and CV, marked rough (fewer than 5 runs).
        let bcast = summaries_of(&dir, "full-broadcast", arch);
        assert_eq!(bcast.len(), 2, "two broadcast repeats for {arch}");
        let mut p99s: Vec<f64> = bcast
            .iter()
            .filter(|s| s["valid"] == true)
            .filter_map(|s| s["latency_us"]["p99"].as_f64())
            .collect();
        p99s.sort_by(f64::total_cmp);
        let cell = &row("latency_p99_ms")["cells"][arch];
        match p99s.first() {
            Some(lowest) => {
                let median = p99s.iter().sum::<f64>() / p99s.len() as f64 / 1000.0;
                let value = cell["value"].as_f64().expect("value");
                assert!((value - median).abs() < 1e-9, "{cell}");
                assert!(*lowest / 1000.0 <= value, "{cell}");
                let display = cell["display"].as_str().expect("display");
                if p99s.len() == 2 {
                    assert!(
                        display.contains("median of 2 runs; 95 % CI")
                            && display.contains("(rough: fewer than 5 valid runs)")
                            && cell["repeats"]["used"] == 2,
                        "{cell}"
                    );
                } else {
                    assert!(display.contains("no spread"), "{cell}");
                }
            }
            None => assert_eq!(cell["status"], "invalid", "{cell}"),
        }
    }
    for name in [
        "memory_vs_connections",
        "p99_vs_load",
        "p99_vs_room_size",
        "scaling_p99",
        "scaling_cpu_per_delivery",
    ] {
        let png = std::fs::read(dir.join("charts").join(format!("{name}.png"))).expect("png");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{name}.png"
        );
        let svg =
            std::fs::read_to_string(dir.join("charts").join(format!("{name}.svg"))).expect("svg");
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{name}.svg");
    }
    // `chatbench report` rebuilds the same files, sweeps and repeats included, byte for byte.
    let files = ["comparison.md", "comparison.json", "report.html"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("file"))
        .collect();
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args(["report", dir.to_str().expect("path")])
        .stdin(Stdio::null())
        .output()
        .expect("run report");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (f, b) in files.iter().zip(&before) {
        let a = std::fs::read(dir.join(f)).expect("file");
        assert!(&a == b, "report rebuilt a different {f}");
    }
}

/// A sweep cell: either a number equal to `pick` of the summary it links to (a run of
/// `scenario`), or no number with a status that says why and, when a run stopped it, a link.
fn check_traced(
    dir: &Path,
    cell: &serde_json::Value,
    scenario: &str,
    pick: impl Fn(&serde_json::Value) -> Option<f64>,
) {
    let src = cell["source"].as_str();
    match cell["value"].as_f64() {
        Some(v) => {
            let src = dir.join(src.expect("a number without a source"));
            let s: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&src).expect("source")).expect("summary");
            assert_eq!(s["scenario"]["name"], scenario, "{cell}");
            assert_eq!(pick(&s), Some(v), "{cell} vs {}", src.display());
        }
        None => {
            let status = cell["status"].as_str().expect("status");
            assert!(
                ["invalid", "stopped", "failed", "partial"].contains(&status),
                "{cell}"
            );
            // It says why: the stop reason in the display, or the invalid run's reasons.
            assert!(
                cell["display"].as_str().is_some_and(|d| d.contains(':'))
                    || cell["condition"].as_str().is_some_and(|c| !c.is_empty()),
                "{cell}"
            );
        }
    }
}

#[test]
fn peers_get_columns_measured_like_the_architectures() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "compare",
            "--tiny",
            "--archs",
            "epoll",
            "--peer",
            "node-ws,socketio",
        ])
        .args(["--out", out.path().to_str().expect("path")])
        .stdin(Stdio::null())
        .output()
        .expect("run compare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let dir = only_dir(out.path());
    let md = std::fs::read_to_string(dir.join("comparison.md")).expect("comparison.md");
    assert!(md.contains("| epoll | node-ws | socketio |"), "{md}");
    let c: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("comparison.json")).expect("comparison.json"),
    )
    .expect("json");
    let rows = c["rows"].as_array().expect("rows");
    for peer in ["node-ws", "socketio"] {
        for r in rows {
            let cell = &r["cells"][peer];
            match r["key"].as_str().expect("key") {
                // A single process: no scaling step, and said so.
                "horizontal_scaling" => {
                    assert_eq!(cell["status"], "not_measured", "{cell}")
                }
                // The poison frame throws, uncaught: the whole Node process dies, with every
                // other connection on it.
                "fault_blast_radius" => {
                    let src =
                        dir.join(cell["source"].as_str().unwrap_or_else(|| {
                            panic!("{peer}: the poison step was measured: {cell}")
                        }));
                    let s: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(&src).expect("source"))
                            .expect("summary");
                    assert_eq!(s["target"]["arch"], peer, "{}", src.display());
                    let f = &s["fault"];
                    let open_before = f["open_before"].as_u64().expect("open_before");
                    assert!(open_before > 1, "{f}");
                    assert_eq!(f["poisoner_lost"], true, "{f}");
                    assert_eq!(f["open_after"], 0, "{f}");
                    assert_eq!(
                        cell["value"].as_f64(),
                        Some((open_before - 1) as f64),
                        "{cell}"
                    );
                    assert_eq!(
                        cell["display"],
                        format!("{} of {}", open_before - 1, open_before - 1),
                        "{cell}"
                    );
                }
                key => {
                    if cell["status"] == "invalid" {
                        continue;
                    }
                    let src = dir.join(
                        cell["source"]
                            .as_str()
                            .unwrap_or_else(|| panic!("{key}: {cell}")),
                    );
                    let s: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(&src).expect("source"))
                            .expect("summary");
                    // The number comes from a run against that peer, started by chatbench.
                    assert_eq!(s["target"]["arch"], peer, "{key}: {}", src.display());
                    assert!(cell["value"].is_number(), "{key}: {cell}");
                    // At this light load a peer loses nothing — unless other work held the
                    // server's CPU (the run says "machine busy"), when a Node server can
                    // still have messages queued at the end of the tiny cooldown.
                    let busy = cell["display"]
                        .as_str()
                        .is_some_and(|d| d.contains("(machine busy)"));
                    if key == "loss" && !busy {
                        assert_eq!(cell["value"], 0.0, "{cell}");
                    }
                }
            }
        }
    }
}

/// A comparison folder from the report crate's run fixtures, with hostile text in one summary.
fn hostile_comparison(root: &Path) -> std::path::PathBuf {
    let dir = root.join("cmp");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("report/tests/data");
    for run in ["idle", "broadcast", "poison"] {
        let to = dir.join("runs").join(run);
        std::fs::create_dir_all(&to).expect("mkdir");
        for f in ["summary.json", "timeseries.csv", "latency.hgrm"] {
            let from = data.join(run).join(f);
            if from.exists() {
                std::fs::copy(&from, to.join(f)).expect("copy");
            }
        }
    }
    for run in ["idle", "broadcast", "poison"] {
        let path = dir.join("runs").join(run).join("summary.json");
        let mut s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("summary")).expect("json");
        s["scenario"]["text"] = serde_json::json!("name = \"x\" # <script>alert('text')</script>");
        s["provenance"]["cpu_model"] = serde_json::json!("<img src=x onerror=alert('cpu')>");
        s["provenance"]["hostname"] = serde_json::json!("<img src=x onerror=alert('host')>");
        std::fs::write(&path, serde_json::to_vec(&s).expect("encode")).expect("write");
    }
    dir
}

#[test]
fn report_embeds_only_the_charts_it_drew_and_escapes_summary_text() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = hostile_comparison(root.path());
    // Hostile SVGs in the folder before `report DIR`: a new name, one of the names it draws
    // (made read-only cannot stop an atomic rename, so it is replaced), and a point timeline.
    let hostile = "<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert('onload')\">\
                   <script>alert('svg')</script></svg>";
    let charts = dir.join("charts");
    std::fs::create_dir_all(charts.join("points")).expect("mkdir");
    for f in [
        "evil.svg",
        "timeline-zzz.svg",
        "points/timeline-evil-01.svg",
    ] {
        std::fs::write(charts.join(f), hostile).expect("write");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args(["report", dir.to_str().expect("path")])
        .stdin(Stdio::null())
        .output()
        .expect("run report");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    let lower = page.to_lowercase();
    assert!(!lower.contains("<script"), "a script in the page");
    assert!(!lower.contains("onload="), "an onload handler in the page");
    assert!(!lower.contains("<img"), "markup from a summary in the page");
    assert!(
        !page.contains("evil") && !page.contains("timeline-zzz"),
        "a chart the report did not draw is in the page"
    );
    // What it drew is there, and the summary's text is shown escaped.
    assert!(page.contains("<figure class=\"chart\" id=\"latency_distribution\">"));
    assert!(
        page.contains("&lt;script&gt;alert(&#39;text&#39;)&lt;/script&gt;"),
        "escaped scenario text"
    );
    assert!(
        page.contains("&lt;img src=x onerror=alert("),
        "escaped provenance"
    );
    assert!(
        page.contains("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'none';"),
        "no CSP"
    );
}

#[test]
fn a_socketio_cluster_column_gets_the_cluster_steps() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "compare",
            "--tiny",
            "--archs",
            "epoll",
            "--peer",
            "socketio-cluster",
        ])
        .args(["--out", out.path().to_str().expect("path")])
        .stdin(Stdio::null())
        .output()
        .expect("run compare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let dir = only_dir(out.path());
    let c: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("comparison.json")).expect("comparison.json"),
    )
    .expect("json");
    let rows = c["rows"].as_array().expect("rows");
    let cell = |key: &str| -> serde_json::Value {
        rows.iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("no row {key}: {c}"))["cells"]["socketio-cluster"]
            .clone()
    };
    // The scaling step ran at 1, 2 and 4 workers, each a socketio-cluster run of that size.
    let scaling = summaries_of(&dir, "quick-scaling", "socketio-cluster");
    let mut nodes: Vec<String> = scaling
        .iter()
        .map(|s| {
            s["target"]["settings"]["nodes"]
                .as_str()
                .expect("nodes")
                .to_string()
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["1", "2", "4"], "scaling points");
    let s = cell("scaling_delivered_per_s");
    assert_ne!(s["status"], "not_measured", "{s}");
    // Node loss: a worker SIGKILLed, its clients back (the re-fork and the loss outside the
    // failover are checked in tests/socketio_cluster_cli.rs, with the time a busy machine needs).
    let lost = summaries_of(&dir, "quick-node-loss", "socketio-cluster");
    assert_eq!(lost.len(), 1);
    let f = &lost[0]["failover"];
    assert_eq!(f["node"], 1, "{f}");
    assert_eq!(f["all_back"], true, "{f}");
    let back = cell("node_loss_all_back_ms");
    assert!(
        back["value"].is_number() || back["status"] == "invalid",
        "{back}"
    );
    // Its clients come back through the one shared port, and the condition says so (an
    // invalid cell, on a machine too busy for the pacer, says why it is invalid instead).
    assert!(
        back["status"] == "invalid"
            || back["condition"]
                .as_str()
                .is_some_and(|c| c.contains("reconnect to the same port")),
        "{back}"
    );
    // Poison: the throw kills one worker, not the cluster: it takes its own clients only.
    let poison = summaries_of(&dir, "quick-poison", "socketio-cluster");
    assert_eq!(poison.len(), 1);
    let f = &poison[0]["fault"];
    let open_before = f["open_before"].as_u64().expect("open_before");
    let others = f["others_lost"].as_u64().expect("others_lost");
    assert_eq!(f["poisoner_lost"], true, "{f}");
    assert!(others > 0 && others < open_before - 1, "{f}");
    let blast = cell("fault_blast_radius");
    // The cell is that count, or (a machine too busy for the pacer) invalid and says why.
    assert!(
        blast["value"].as_f64() == Some(others as f64) || blast["status"] == "invalid",
        "{blast}"
    );
}

/// The Elixir peer and `elixir-cluster` (3 nodes) get columns like the Node peers, and, having a
/// fault-injection frame, their poison rows measured: one crashing connection process takes no
/// other connection with it. elixir-cluster gets the cluster columns' scaling and node-loss
/// steps, and the shipped claims are judged.
#[test]
fn the_elixir_peer_gets_a_column_with_its_poison_row() {
    let elixir = Command::new("elixir")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        elixir,
        "this test needs Elixir with cowlib and jiffy: apt-get install elixir erlang-cowlib \
         erlang-jiffy (scripts/test.sh does it)"
    );
    let out = tempfile::tempdir().expect("tempdir");
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "compare",
            "--tiny",
            "--archs",
            "epoll",
            "--peer",
            "elixir,elixir-cluster",
        ])
        .args(["--out", out.path().to_str().expect("path")])
        .stdin(Stdio::null())
        .output()
        .expect("run compare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let dir = only_dir(out.path());
    let md = std::fs::read_to_string(dir.join("comparison.md")).expect("comparison.md");
    assert!(md.contains("| epoll | elixir | elixir-cluster |"), "{md}");
    let c: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("comparison.json")).expect("comparison.json"),
    )
    .expect("json");
    let rows = c["rows"].as_array().expect("rows");
    for peer in ["elixir", "elixir-cluster"] {
        let mut measured = Vec::new();
        for r in rows {
            let key = r["key"].as_str().expect("key");
            let cell = &r["cells"][peer];
            if key == "horizontal_scaling"
                || key.starts_with("scaling_")
                || key.starts_with("node_loss_")
            {
                // Checked below for the cluster column.
                continue;
            }
            // An invalid cell (a machine too busy for the pacer) still names its run, whose
            // figures are checked; only a cell with no run is skipped.
            let invalid = cell["status"] == "invalid";
            if cell["status"] == "not_measured" || (invalid && cell["source"].is_null()) {
                assert_ne!(key, "fault_blast_radius", "the poison step ran: {cell}");
                continue;
            }
            let src = dir.join(
                cell["source"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{key}: {cell}")),
            );
            let s: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&src).expect("source")).expect("summary");
            assert_eq!(s["target"]["arch"], peer, "{key}: {}", src.display());
            assert!(cell["value"].is_number() || invalid, "{key}: {cell}");
            if key == "fault_blast_radius" {
                // The victim's process crashed (its own connection is not counted); nobody else.
                assert_eq!(s["fault"]["others_lost"], 0, "{s:#}");
                if !invalid {
                    assert_eq!(cell["value"], 0.0, "{cell}");
                }
                assert!(
                    s["fault"]["open_before"].as_u64().is_some_and(|n| n > 1),
                    "{s:#}"
                );
            }
            measured.push(key.to_string());
        }
        assert!(
            measured.iter().any(|k| k == "fault_blast_radius"),
            "{peer}: the poison row was measured: {measured:?}"
        );
    }
    // elixir-cluster is a cluster column: scaling over 1, 2 and 4 nodes, and one node
    // SIGKILLed with every one of its clients back on the others.
    let cell = |key: &str| {
        rows.iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("row {key}"))["cells"]["elixir-cluster"]
            .clone()
    };
    let scaling = cell("scaling_delivered_per_s");
    let display = scaling["display"].as_str().expect("display");
    for n in ["1 node:", "2 nodes:", "4 nodes:"] {
        assert!(display.contains(n), "{scaling}");
    }
    assert!(!display.contains("failed"), "{scaling}");
    // A number, or (a machine too busy for the pacer) an invalid cell that says why; either
    // way its run's failover figures are checked below.
    let back = cell("node_loss_all_back_ms");
    assert!(
        back["value"].is_number() || back["status"] == "invalid",
        "{back}"
    );
    let src = dir.join(back["source"].as_str().expect("source"));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&src).expect("source")).expect("summary");
    let f = &s["failover"];
    assert_eq!(f["all_back"], true, "{f}");
    assert_eq!(f["reconnects"], f["clients_on_node"], "{f}");
    assert_eq!(
        f["restarts"], 0,
        "a killed Elixir node is not restarted: {f}"
    );
    // The shipped claims are judged: the comparison has their Elixir columns.
    assert_eq!(
        c["claims"]["file"], "claims/elixir-vs-node.toml",
        "{}",
        c["claims"]
    );
    let judged = c["claims"]["judged"].as_array().expect("judged");
    let crash = judged
        .iter()
        .find(|j| j["id"] == "elixir-crash-isolated" && j["column"] == "elixir")
        .expect("the crash claim");
    assert!(
        matches!(crash["verdict"].as_str(), Some("holds" | "not_judgeable")),
        "{crash}"
    );
    assert!(md.contains("## Claims"), "{md}");
}

/// `report DIR --claims FILE` judges a user's claims against the folder's comparison: the
/// section heads comparison.md and goes into comparison.json; a malformed file is an input
/// error (exit 2) naming the claim and the fix, before anything is written.
#[test]
fn report_judges_a_users_claims_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = hostile_comparison(root.path());
    let claims = root.path().join("design-doc.toml");
    std::fs::write(
        &claims,
        "[[claim]]\nid = \"p99\"\ntext = \"p99 under 100 ms at 2,000 users\"\nsource = \"our design doc\"\n\
         columns = [\"task-per-conn\"]\nfigure = \"p99_latency\"\nop = \"<\"\nvalue = 100.0\nunit = \"ms\"\n\n\
         [[claim]]\nid = \"kib\"\ntext = \"under 1 KiB per connection\"\nsource = \"our design doc\"\n\
         columns = [\"task-per-conn\"]\nfigure = \"memory_user_per_conn\"\nop = \"<\"\nvalue = 1.0\nunit = \"KiB\"\n",
    )
    .expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args(["report", dir.to_str().expect("path"), "--claims"])
        .arg(&claims)
        .stdin(Stdio::null())
        .output()
        .expect("run report");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(dir.join("comparison.md")).expect("comparison.md");
    let at = md.find("## Claims").expect("a Claims section");
    assert!(at > md.find("| question |").expect("table"), "{md}");
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("comparison.json")).expect("json"))
            .expect("json");
    let judged = c["claims"]["judged"].as_array().expect("judged");
    assert_eq!(judged.len(), 2, "{judged:?}");
    assert_eq!(judged[0]["verdict"], "holds", "{}", judged[0]);
    assert_eq!(judged[1]["verdict"], "refuted", "{}", judged[1]);
    assert!(
        judged[1]["ratio"].as_f64().is_some_and(|r| r > 1.0),
        "{}",
        judged[1]
    );

    std::fs::write(
        &claims,
        "[[claim]]\nid = \"bad\"\ntext = \"t\"\nsource = \"s\"\ncolumns = [\"task-per-conn\"]\n\
         figure = \"p99_latency\"\nop = \"<\"\nvalue = 100.0\nunit = \"µs\"\n",
    )
    .expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args(["report", dir.to_str().expect("path"), "--claims"])
        .arg(&claims)
        .stdin(Stdio::null())
        .output()
        .expect("run report");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("claim 1 (bad)") && err.contains("cells are in ms"),
        "{err}"
    );
}

/// `compare --column`: a user's own servers as the only columns — one already running (a URL),
/// one started for every run (a command) — and no built-in column added. A bad `--column` is
/// refused before anything runs.
#[test]
fn user_columns_compare_a_running_server_and_a_start_command() {
    use std::io::BufRead;
    let exe = env!("CARGO_BIN_EXE_chatbench");
    let out = tempfile::tempdir().expect("tempdir");
    let bad = Command::new(exe)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["compare", "--tiny", "--column", "epoll=./my-server"])
        .args(["--out", out.path().to_str().expect("path")])
        .output()
        .expect("run compare");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is a built-in column"),
        "{bad:?}"
    );
    assert_eq!(std::fs::read_dir(out.path()).expect("out").count(), 0);
    // The running server of the URL column.
    let mut server = Command::new(exe)
        .args(["serve", "--arch", "epoll", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let url = line
        .split_whitespace()
        .nth(1)
        .expect("ws:// URL on the first line")
        .to_string();
    // A claims file about them, which moves after the compare (below).
    let claims_dir = tempfile::tempdir().expect("tempdir");
    let claims = claims_dir.path().join("ours.toml");
    let claims_text = "[[claim]]\nid = \"p99\"\ntext = \"p99 under 10 s\"\nsource = \"us\"\n\
        columns = [\"main\", \"next\"]\nfigure = \"p99_latency\"\nop = \"<\"\nvalue = 10000.0\nunit = \"ms\"\n";
    std::fs::write(&claims, claims_text).expect("write claims");
    let o = Command::new(exe)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["compare", "--tiny"])
        .args(["--column", &format!("main={url}")])
        .args([
            "--column",
            &format!("next={exe} serve --arch task-per-conn --listen 127.0.0.1:0"),
        ])
        .args(["--out", out.path().to_str().expect("path"), "--claims"])
        .arg(&claims)
        .stdin(Stdio::null())
        .output()
        .expect("run compare");
    let _ = server.kill();
    let _ = server.wait();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let dir = only_dir(out.path());
    let c: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("comparison.json")).expect("comparison.json"),
    )
    .expect("json");
    assert_eq!(c["archs"], serde_json::json!(["main", "next"]), "{c:#}");
    let notes = c["notes"].to_string();
    assert!(
        notes.contains(&format!("Column main: the running server at {url}")),
        "{notes}"
    );
    assert!(notes.contains("Column next:"), "{notes}");
    let p99 = c["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["key"] == "latency_p99_ms")
        .expect("p99 row");
    for col in ["main", "next"] {
        let cell = &p99["cells"][col];
        // "invalid" when the shared machine made the generator the bottleneck: still a run.
        assert!(
            matches!(cell["status"].as_str(), Some("ok" | "invalid")),
            "{col}: {cell:#}"
        );
        let src = cell["source"].as_str().expect("source");
        assert!(dir.join(src).is_file(), "{col}: {src} not in the folder");
    }
    // Only the command column is sampled: its memory per connection is measured.
    let mem = c["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["key"] == "memory_user_kib")
        .expect("memory row");
    assert_eq!(mem["cells"]["main"]["status"], "not_measured", "{mem:#}");
    assert_ne!(mem["cells"]["next"]["status"], "not_measured", "{mem:#}");
    claims_kept_with_the_comparison(&dir, &claims, claims_text, &c);
}

/// `compare --column NAME=COMMAND` whose command exits at once: each step fails at once with
/// the server's exit status and last output in its Failures line (not a 15 s wait, then only
/// the first line of the error), and compare exits 3.
#[test]
fn a_user_column_whose_command_exits_at_once_fails_its_steps_with_the_servers_last_words() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = tmp.path().join("server.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'cannot open /nope.conf' >&2\nexit 3\n",
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = tmp.path().join("out");
    let started = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["compare", "--tiny"])
        .arg("--column")
        .arg(format!("broken={}", script.display()))
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("run compare");
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
    let c: serde_json::Value = serde_json::from_slice(
        &std::fs::read(only_dir(&out).join("comparison.json")).expect("comparison.json"),
    )
    .expect("json");
    let failures = c["failures"].as_array().expect("failures");
    assert!(!failures.is_empty(), "{c:#}");
    for f in failures {
        let f = f.as_str().expect("text");
        assert!(
            f.contains("exited before announcing its address (exit status: 3;")
                && f.contains("its last output: cannot open /nope.conf"),
            "{f}"
        );
    }
}

/// The comparison folder `dir` (judged with `--claims claims`, whose text was `text`) keeps the
/// file's text as claims.toml: once the file has changed, then gone, `report DIR --out OTHER`
/// rebuilds the same Claims section from the copy, and says so.
fn claims_kept_with_the_comparison(dir: &Path, claims: &Path, text: &str, c: &serde_json::Value) {
    assert_eq!(
        std::fs::read_to_string(dir.join("claims.toml")).expect("claims.toml"),
        text
    );
    assert_eq!(c["claims"]["file"], claims.display().to_string(), "{c:#}");
    assert_eq!(c["claims"]["judged"].as_array().map(Vec::len), Some(2));
    std::fs::write(claims, text.replace("10000.0", "0.0001")).expect("alter");
    std::fs::remove_file(claims).expect("delete");
    let other = dir.with_file_name("rebuilt");
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args(["report", dir.to_str().expect("path"), "--out"])
        .arg(&other)
        .stdin(Stdio::null())
        .output()
        .expect("run report");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("claims judged from") && err.contains("claims.toml, the copy of"),
        "{err}"
    );
    let section = |p: &Path| {
        let md = std::fs::read_to_string(p.join("comparison.md")).expect("comparison.md");
        let at = md.find("## Claims").expect("a Claims section");
        let rest = md[at..].to_string();
        match rest[3..].find("\n## ") {
            Some(end) => rest[..end + 3].to_string(),
            None => rest,
        }
    };
    // The same section, its links to the runs going through the rebuild's path to `dir`.
    let up = format!("../{}/", dir.file_name().expect("name").to_string_lossy());
    assert_eq!(
        section(&other).replace(&format!("]({up}"), "]("),
        section(dir)
    );
    let rebuilt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(other.join("comparison.json")).expect("json"))
            .expect("json");
    assert_eq!(
        rebuilt["claims"]
            .to_string()
            .replace(&format!("\"{up}"), "\""),
        c["claims"].to_string()
    );
    // The rebuilt table has every column's cells (the runs' labels name their columns).
    let p99 = |v: &serde_json::Value| {
        v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["key"] == "latency_p99_ms")
            .map(|r| r["cells"].clone())
            .expect("p99 row")
    };
    for col in ["main", "next"] {
        assert_eq!(
            p99(&rebuilt)[col]["status"],
            p99(c)[col]["status"],
            "{col}: {:#}",
            p99(&rebuilt)
        );
    }
}
