//! End-to-end test of `chatbench floor`: the plain receiver and sender over loopback, then the
//! generator (`chatbench run --serve epoll`) at the same small load; the table and its JSON
//! hold both figures and their ratio. Bad options are usage errors (exit 2).

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output};

/// `chatbench floor ARGS --out OUT`.
fn floor(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .arg("floor")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run chatbench floor")
}

#[test]
fn floor_measures_the_plain_pair_and_the_generator_at_one_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("floor");
    let o = floor(
        &[
            "--connections",
            "60",
            "--members",
            "10",
            "--rate",
            "1500",
            "--seconds",
            "2",
        ],
        &out,
    );
    // 4 would mean the sending side could not keep 1,500 frames/s: not on loopback.
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| 1500 |"), "{stdout}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("floor.json")).expect("floor.json"))
            .expect("json");
    let row = &j["rows"][0];
    let plain = &row["plain"][0];
    // 1,500 frames/s for 2 s, every one received.
    assert_eq!(plain["frames"], 3000, "{j:#}");
    let recv = row["recv_floor_us"].as_f64().expect("a receive floor");
    let gen = row["generator_us"].as_f64().expect("a generator figure");
    assert!(recv > 0.0 && gen > 0.0, "{j:#}");
    let ratio = row["ratio"].as_f64().expect("a ratio");
    assert!((ratio - gen / recv).abs() < 1e-9, "{j:#}");
    // The generator delivered the asked load with no loss (else the row would be invalid).
    let g = &row["generator"][0];
    assert_eq!(g["loss_ratio"], 0.0, "{j:#}");
    assert!(g["delivered_per_s"].as_f64().unwrap() > 1400.0, "{j:#}");
    // The generator's receive threads and pacer, per delivery: parts of its figure (present;
    // their size is the machine's).
    let part = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k}: {j:#}"));
    assert!(
        part("receive_us") >= 0.0 && part("pacer_us") >= 0.0,
        "{j:#}"
    );
    assert!(g["receive_us"].is_f64() && g["pacer_us"].is_f64(), "{j:#}");
    let md = std::fs::read_to_string(out.join("floor.md")).expect("floor.md");
    assert!(
        md.contains("| its receive threads (÷ floor) | its pacer (÷ floor) |"),
        "{md}"
    );
}

#[test]
fn floor_rejects_a_room_size_that_does_not_divide_the_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = floor(&["--connections", "45", "--members", "10"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--members"));
}

#[test]
fn generator_settings_reach_the_generators_run_and_the_table_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("floor");
    let o = floor(
        &[
            "--connections",
            "20",
            "--members",
            "10",
            "--rate",
            "1000",
            "--seconds",
            "1",
            "--generator-set",
            "client.receive_path=\"tokio\"",
        ],
        &out,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let md = std::fs::read_to_string(out.join("floor.md")).expect("floor.md");
    assert!(
        md.contains("The generator ran with `--set client.receive_path=\"tokio\"`"),
        "{md}"
    );
    // The run took the setting: no receiver rode the epoll path (18 would have by default).
    let runs = out.join("generator-1000-0").join("runs");
    let run = std::fs::read_dir(&runs)
        .expect("the generator's runs")
        .next()
        .expect("one run")
        .expect("entry")
        .path();
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("summary.json")).expect("summary.json"),
    )
    .expect("json");
    assert!(s["connections"]["epoll_receivers"].is_null(), "{s:#}");
}

#[test]
fn floor_refuses_a_generator_setting_outside_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = floor(&["--generator-set", "connections=5"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--generator-set \"connections=5\""), "{err}");
    assert!(err.contains("client.KEY=VALUE"), "{err}");
}
