//! End-to-end tests of `chatbench gate statistical` against a user's own server: the baseline's
//! and the candidate's start commands (`--baseline-cmd`, `--candidate-cmd`, as `run
//! --serve-cmd`) and a `--label`, and the refusal of run counts that cannot reach significance.
//! The "user's server" here is `chatbench serve --arch epoll` started by its command line.

mod common;
use common::*;

use std::path::Path;
use std::process::{Output, Stdio};

fn tiny_scenario(dir: &Path) -> String {
    let path = dir.join("tiny.toml");
    std::fs::write(
        &path,
        "name = \"tiny\"\nconnections = 40\nrooms = 2\nmembers_per_room = 20\nrate_per_sender = 50.0\nsettle = \"300ms\"\nwarmup = \"300ms\"\nmeasure = \"1s\"\ncooldown = \"300ms\"\n",
    )
    .expect("write scenario");
    path.display().to_string()
}

fn gate(dir: &Path, extra: &[&str]) -> Output {
    let server = format!(
        "{} serve --arch epoll --listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_chatbench")
    );
    let _turn = serial();
    chatbench()
        .args([
            "gate",
            "statistical",
            "--baseline-cmd",
            &server,
            "--candidate-cmd",
            &server,
        ])
        .args(["--serve-path", "/ws", "--label", "mine", "--scenario"])
        .arg(tiny_scenario(dir))
        .arg("--baseline")
        .arg(dir.join("baseline.json"))
        .arg("--out")
        .arg(dir.join("out"))
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench")
}

#[test]
fn run_counts_that_cannot_reach_significance_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = gate(tmp.path(), &["-k", "4"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("-k 4") && e.contains("use -k 5"), "{}", text(&o));
}

#[test]
fn a_users_own_server_is_measured_by_its_start_command_and_label() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = gate(tmp.path(), &["--update-baseline", "-k", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let b: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("baseline.json")).expect("baseline written"),
    )
    .expect("json");
    assert_eq!(b["settings"]["arch"], "mine", "{b:#}");
    assert!(b["metrics"]["mine.p99_latency"].is_object(), "{b:#}");
    // Each run started the command and recorded the label.
    let runs: Vec<_> = std::fs::read_dir(tmp.path().join("out"))
        .expect("out")
        .filter_map(Result::ok)
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
        .filter_map(Result::ok)
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
        .filter_map(Result::ok)
        .map(|d| d.path().join("summary.json"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    for r in runs {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&r).expect("summary")).expect("json");
        assert_eq!(s["target"]["settings"]["label"], "mine", "{s:#}");
        assert!(
            s["target"]["settings"]["command"]
                .as_str()
                .is_some_and(|c| c.contains("serve --arch epoll")),
            "{s:#}"
        );
    }
}

/// A candidate whose server does not start (here a flag it does not know: it exits at once)
/// is a regression: one failed row per candidate run, saying why, and exit 1 (docs/gate.md),
/// even when the baseline's own noise fails the A/A check (a busy machine: that only makes the
/// measured rows "could not judge"). Tiny settings: 3 rounds, which α = 0.35 allows; the
/// baseline file is written by hand (only its machine is read, and `--allow-other-machine`).
#[test]
fn a_candidate_whose_server_cannot_start_is_a_failed_row_with_its_cause() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("baseline.json"),
        r#"{"schema":"chatbench-gate-baseline/1","tier":"statistical","created_at":"2026-12-06T00:00:00Z",
            "commit":null,"dirty":null,"fingerprint":{"cpu_model":null,"cpu_cores":1,"kernel":null,
            "rlimit_nofile":null},"settings":{},"metrics":{}}"#,
    )
    .expect("write baseline");
    let bin = env!("CARGO_BIN_EXE_chatbench");
    let server = format!("{bin} serve --arch epoll --listen 127.0.0.1:0");
    let broken = format!("{server} --no-such-flag");
    let _turn = serial();
    let o = chatbench()
        .args(["gate", "statistical", "--baseline-cmd", &server])
        .args(["--candidate-cmd", &broken])
        .args(["--serve-path", "/ws", "--label", "mine", "--scenario"])
        .arg(tiny_scenario(dir))
        .arg("--baseline")
        .arg(dir.join("baseline.json"))
        .arg("--out")
        .arg(dir.join("out"))
        .args(["-k", "3", "--alpha", "0.35", "--min-effect", "1000"])
        .arg("--allow-other-machine")
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("out/gate-statistical.json")).expect("report written"),
    )
    .expect("json");
    assert_eq!(report["verdict"], "regression", "{report:#}");
    let failed: Vec<&serde_json::Value> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["metric"] == "mine.run")
        .collect();
    assert_eq!(failed.len(), 3, "one row per candidate run: {report:#}");
    for (i, r) in failed.iter().enumerate() {
        assert_eq!(r["verdict"], "regression", "{r:#}");
        let detail = r["detail"].as_str().expect("detail");
        assert!(
            detail.starts_with(&format!("candidate run {} failed: ", i + 1)),
            "{detail}"
        );
        assert!(
            detail.contains("exited before announcing its address (exit status: 2;")
                && detail.contains("unexpected argument '--no-such-flag'"),
            "the cause, with the server's status and last words: {detail}"
        );
    }
    // The table printed says it too, and the baseline's runs were judged against themselves
    // (passed on a quiet machine, failed on a busy one: the verdict above holds either way).
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("mine.run") && l.ends_with("REGRESSION")),
        "{out}"
    );
    assert!(
        out.contains("A/A check (baseline against itself) passed")
            || out.contains("A/A check failed: the baseline differs from itself"),
        "{out}"
    );
}
