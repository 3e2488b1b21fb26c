//! End-to-end tests of `chatbench gate deterministic`: the real workload binary under real
//! callgrind. A fresh baseline compared with the same build passes (exit 0) with identical
//! counts; injected work per delivery is a regression (exit 1); a broken or foreign baseline
//! cannot be judged (exit 2). Needs valgrind (scripts/test.sh installs it).

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output};

fn gate(dir: &Path, extra: &[&str]) -> Output {
    let have_valgrind = Command::new("valgrind").arg("--version").output().is_ok();
    assert!(
        have_valgrind,
        "these tests need valgrind: install Debian's valgrind (apt-get install valgrind)"
    );
    Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args([
            "gate",
            "deterministic",
            "--arch",
            "epoll",
            "--messages",
            "40",
            "--connections",
            "20",
        ])
        .arg("--workload-bin")
        .arg(env!("CARGO_BIN_EXE_chatbench-gate-workload"))
        .arg("--baseline")
        .arg(dir.join("baseline.json"))
        .arg("--out")
        .arg(dir.join("out"))
        .args(extra)
        .output()
        .expect("run chatbench")
}

#[test]
fn deterministic_gate_passes_itself_and_catches_injected_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = gate(dir.path(), &["--update-baseline", "--repeat", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        !stdout.contains("runs differ"),
        "two runs of one build must count the same: {stdout}"
    );
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("baseline.json")).unwrap())
            .unwrap();
    let instr = &b["metrics"]["fanout.epoll.instructions_per_delivery"];
    assert!(instr["value"].as_f64().unwrap() > 100.0, "{b:#}");
    assert_eq!(instr["samples"][0], instr["samples"][1]);
    // The generator's own paths, measured once beside the architectures' workloads.
    for key in [
        "generator-receive.loadgen.instructions_per_delivery",
        "generator-receive-tokio.loadgen.instructions_per_delivery",
        "generator-send.loadgen.instructions_per_message",
    ] {
        let m = &b["metrics"][key];
        assert!(m["value"].as_f64().unwrap_or(0.0) > 100.0, "{key}: {b:#}");
        assert_eq!(m["samples"][0], m["samples"][1], "{key}");
    }
    // Neither receive path allocates per delivery.
    for key in ["generator-receive", "generator-receive-tokio"] {
        assert_eq!(
            b["metrics"][format!("{key}.loadgen.allocs_per_delivery")]["value"],
            0.0,
            "{b:#}"
        );
    }

    // Same build against its baseline: pass, every change exactly 0.
    let o = gate(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/gate-deterministic.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["verdict"], "pass");
    let rows = report["rows"].as_array().unwrap();
    // fanout (3), connections (3), idle (1), generator-receive and -tokio (3 each),
    // generator-send (3).
    assert_eq!(rows.len(), 16, "{report:#}");
    // Every count the same (a change of 0, up to the JSON round trip of the baseline's
    // value; none where both are 0).
    assert!(
        rows.iter().all(|r| match r["change_pct"].as_f64() {
            Some(c) => c.abs() < 1e-9,
            None => r["baseline"] == 0.0 && r["current"] == 0.0,
        }),
        "{report:#}"
    );
    assert!(dir.path().join("out/gate-deterministic.md").is_file());

    // Injected work per delivery: a regression of fan-out instructions only; opening,
    // closing and idle connections deliver nothing, and the generator runs no server code,
    // so their metrics do not move.
    let o = gate(dir.path(), &["--inject-work", "20"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("REGRESSION"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/gate-deterministic.json")).unwrap(),
    )
    .unwrap();
    for r in report["rows"].as_array().unwrap() {
        let regressed = r["verdict"] == "regression";
        let fanout_instr = r["metric"] == "fanout.epoll.instructions_per_delivery";
        assert_eq!(regressed, fanout_instr, "{r}");
    }

    // A baseline from another CPU: could not judge, unless allowed.
    let path = dir.path().join("baseline.json");
    let mut b = b;
    b["fingerprint"]["cpu_model"] = "Some Other CPU".into();
    std::fs::write(&path, b.to_string()).unwrap();
    let o = gate(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("CPU model"));
    let o = gate(dir.path(), &["--allow-other-machine"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A broken baseline file: could not judge, naming the file.
    std::fs::write(&path, "{ nope").unwrap();
    let o = gate(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("baseline.json"));
}
