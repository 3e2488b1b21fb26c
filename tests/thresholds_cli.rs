//! End-to-end tests of `chatbench run`'s verdicts: thresholds (`[thresholds]`, `--threshold`,
//! exit 1, the JUnit file) and the nothing-measured floor (exit 3 with the cause), one test per
//! "a broken server passes" case of issue 16: a template with a wrong `from_pointer`, the echo
//! profile against a room server, every socket closed by the server, the server killed mid-window.
//! The JUnit file is checked with python3's XML parser (install python3 if it is missing).

mod common;
use common::*;

use std::io::BufRead;
use std::path::Path;
use std::process::{Output, Stdio};

/// A small room scenario (40 connections, 2 rooms, 1 sender each at 50 msg/s) plus `extra`.
fn scenario(dir: &Path, extra: &str) -> String {
    let text = format!(
        "name = \"thr\"\nconnections = 40\nrooms = 2\nmembers_per_room = 20\nsenders_per_room = 1\nrate_per_sender = 50.0\nsettle = \"500ms\"\nwarmup = \"500ms\"\nmeasure = \"2s\"\ncooldown = \"500ms\"\n{extra}"
    );
    let path = dir.join("s.toml");
    std::fs::write(&path, text).expect("write scenario");
    path.display().to_string()
}

fn run(args: &[&str]) -> Output {
    run_chatbench(args)
}

/// As [`run_chatbench`], with `env` set for the child.
fn run_with_env(env: &[(&str, &Path)], args: &[&str]) -> Output {
    let _turn = serial();
    let mut c = chatbench();
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Counts `<testcase>` and `<failure>` elements with python3's XML parser (the file must be
/// well-formed XML).
fn junit_counts(path: &Path) -> (usize, usize) {
    let script = "import sys, xml.etree.ElementTree as E\nr = E.parse(sys.argv[1]).getroot()\nprint(len(list(r.iter('testcase'))), len(list(r.iter('failure'))))";
    let o = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 is needed to check the JUnit XML: install python3");
    assert!(o.status.success(), "not valid XML: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let mut n = out
        .split_whitespace()
        .map(|w| w.parse::<usize>().expect("count"));
    (n.next().expect("testcases"), n.next().expect("failures"))
}

#[test]
fn crossed_thresholds_exit_1_with_value_against_limit_and_a_junit_failure_each() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // From the scenario: one that passes and one that cannot (1 µs p99 on loopback).
    let s = scenario(
        tmp.path(),
        "[thresholds]\ndeliveries_per_s = \">= 1 /s\"\np99_latency = \"<= 0.001 ms\"\n",
    );
    let junit = tmp.path().join("junit.xml");
    let out_dir = tmp.path().join("runs");
    // A GitHub Actions job's summary file, with an earlier step's text: appended to.
    let step_summary = tmp.path().join("step_summary.md");
    std::fs::write(&step_summary, "earlier step\n").expect("write");
    let o = run_with_env(
        &[("GITHUB_STEP_SUMMARY", step_summary.as_path())],
        &[
            "run",
            "--serve",
            "task-per-conn",
            "--scenario",
            &s,
            "--out",
            out_dir.to_str().expect("utf-8"),
            "--progress",
            "quiet",
            // From the command line: one more crossed (more connections than planned).
            "--threshold",
            "connections_ready>=1000",
            "--threshold",
            "loss_ratio<=0.5",
            // One kind of a figure split by kind: no connection was refused.
            "--threshold",
            "connection_errors.refused<=0",
            "--junit",
            junit.to_str().expect("utf-8"),
            "--label",
            "thr-target",
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    match o.status.code() {
        Some(1) => {}
        // Generator-limited on a busy machine: invalid wins over thresholds, but they are
        // still judged and written.
        Some(4) => assert_eq!(summary(&only_run_dir(&out_dir))["valid"], false),
        _ => panic!("expected exit 1: {}", text(&o)),
    }
    assert!(
        stdout.contains("p99_latency: ") && stdout.contains("(limit <= 0.001 ms): CROSSED"),
        "{}",
        text(&o)
    );
    assert!(
        stdout.contains("connections_ready: 40 (limit >= 1000): CROSSED"),
        "{}",
        text(&o)
    );
    assert!(stdout.contains("(limit >= 1 /s): ok"), "{}", text(&o));
    assert!(stdout.contains("(limit <= 0.5000): ok"), "{}", text(&o));
    assert!(
        stdout.contains("connection_errors.refused: 0 (limit <= 0): ok"),
        "{}",
        text(&o)
    );
    assert_eq!(junit_counts(&junit), (5, 2));
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert!(
        xml.contains("name=\"connections_ready &gt;= 1000\""),
        "{xml}"
    );
    let md = std::fs::read_to_string(&step_summary).expect("step summary");
    assert!(
        md.starts_with("earlier step\n### chatbench run `thr`"),
        "{md}"
    );
    assert!(
        md.contains("| `connections_ready` | 40 | >= 1000 | **crossed** |"),
        "{md}"
    );
    assert!(
        md.contains("| `loss_ratio` |") && md.contains("| ok |"),
        "{md}"
    );
    assert!(
        md.contains(&format!("(exit {})", o.status.code().unwrap_or(-1))),
        "{md}"
    );
    // The command-line thresholds are recorded with the run, as overrides.
    let s = summary(&only_run_dir(&out_dir));
    assert_eq!(
        s["target"]["settings"]["label"], "thr-target",
        "--label recorded"
    );
    let overrides = s["scenario"]["overrides"].to_string();
    assert!(
        overrides.contains("thresholds.connections_ready"),
        "{overrides}"
    );
}

#[test]
fn an_unwritable_step_summary_is_refused_before_any_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = scenario(tmp.path(), "");
    let out_dir = tmp.path().join("runs");
    let o = run(&[
        "run",
        "--target",
        "ws://127.0.0.1:9/ws",
        "--scenario",
        &s,
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--step-summary",
        "/nonexistent-folder/summary.md",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("--step-summary /nonexistent-folder/summary.md: cannot write"),
        "{}",
        text(&o)
    );
    assert!(!out_dir.exists(), "nothing measured, nothing written");
}

#[test]
fn unknown_threshold_keys_are_usage_errors_listing_the_valid_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = scenario(tmp.path(), "");
    let o = run(&[
        "run",
        "--target",
        "ws://127.0.0.1:9/ws",
        "--scenario",
        &s,
        "--threshold",
        "p99<=5",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("valid keys: connections_ready"),
        "{}",
        text(&o)
    );
    let s = scenario(tmp.path(), "[thresholds]\nlatency_p99 = \"<= 5 ms\"\n");
    let o = run(&["run", "--target", "ws://127.0.0.1:9/ws", "--scenario", &s]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = stderr(&o);
    assert!(e.contains("s.toml:12"), "file:line: {e}");
    assert!(
        e.contains("thresholds.latency_p99") && e.contains("p99_latency"),
        "{e}"
    );
    // A kind no run can record, in the scenario's table of kinds: its line, and the kinds.
    let s = scenario(
        tmp.path(),
        "[thresholds]\nconnection_errors = { refusd = \"<= 0\" }\n",
    );
    let o = run(&["run", "--target", "ws://127.0.0.1:9/ws", "--scenario", &s]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = stderr(&o);
    assert!(e.contains("s.toml:12"), "file:line: {e}");
    assert!(
        e.contains("did you mean \"refused\"") && e.contains("handshake_status_NNN"),
        "{e}"
    );
}

/// Asserts exit 3, a failed summary, and a stderr naming `cause`.
fn assert_measured_nothing(o: &Output, out_dir: &Path, cause: &str) {
    assert_eq!(o.status.code(), Some(3), "{}", text(o));
    let e = stderr(o);
    assert!(
        e.contains("FAILED: measured nothing meaningful") && e.contains(cause),
        "expected {cause:?}: {}",
        text(o)
    );
    let s = summary(&only_run_dir(out_dir));
    assert_eq!(s["status"], "failed", "{s:#}");
    assert!(s["invalid_reasons"].to_string().contains(cause), "{s:#}");
}

#[test]
fn a_template_with_a_wrong_from_pointer_loses_everything_and_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The reference protocol described as a template, except where the sender is.
    let s = scenario(
        tmp.path(),
        "protocol = \"template\"\n[profile]\njoin = '{\"t\":\"join\",\"room\":\"{room}\"}'\njoined_pointer = \"/t\"\njoined_value = \"joined\"\nmessage = '{\"t\":\"msg\",\"room\":\"{room}\",\"from\":\"{from}\",\"seq\":{seq},\"ts\":{ts},\"body\":\"{body}\"}'\nfrom_pointer = \"/sender\"\nseq_pointer = \"/seq\"\nts_pointer = \"/ts\"\nroom_pointer = \"/room\"\n",
    );
    let out_dir = tmp.path().join("runs");
    let o = run(&[
        "run",
        "--serve",
        "task-per-conn",
        "--scenario",
        &s,
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--progress",
        "quiet",
    ]);
    assert_measured_nothing(&o, &out_dir, "nothing was delivered");
    assert!(stderr(&o).contains("from_pointer"), "{}", text(&o));
}

#[test]
fn the_echo_profile_against_a_room_server_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = "scenarios/profiles/echo.toml";
    let out_dir = tmp.path().join("runs");
    let o = run(&[
        "run",
        "--serve",
        "task-per-conn",
        "--scenario",
        s,
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--progress",
        "quiet",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let e = stderr(&o);
    assert!(
        e.contains("nothing was delivered") || e.contains("closed every connection"),
        "{}",
        text(&o)
    );
}

/// A server that answers every join, then closes the socket with 4401 (an auth failure).
fn closing_server() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            // Bounded: the test's 40 connections, then stop.
            for _ in 0..40 {
                let Ok(Ok((stream, _))) =
                    tokio::time::timeout(std::time::Duration::from_secs(30), listener.accept())
                        .await
                else {
                    return;
                };
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        let Message::Text(t) = msg else { continue };
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else {
                            continue;
                        };
                        if v["t"] == "join" {
                            let joined = format!("{{\"t\":\"joined\",\"room\":{}}}", v["room"]);
                            let _ = ws.send(Message::text(joined)).await;
                            let _ = ws
                                .close(Some(CloseFrame {
                                    code: CloseCode::from(4401),
                                    reason: "unauthorized".into(),
                                }))
                                .await;
                        }
                    }
                });
            }
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        });
    });
    (addr, handle)
}

#[test]
fn every_socket_closed_by_the_server_fails_naming_the_close_code() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = scenario(tmp.path(), "");
    let (addr, _server) = closing_server();
    let out_dir = tmp.path().join("runs");
    let url = format!("ws://{addr}/ws");
    let o = run(&[
        "run",
        "--target",
        &url,
        "--scenario",
        &s,
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--progress",
        "quiet",
    ]);
    assert_measured_nothing(&o, &out_dir, "closed every connection");
    let e = stderr(&o);
    assert!(e.contains("4401"), "{e}");
    // The closes came before the window: nothing was sent either, and that is said.
    assert!(e.contains("nothing was sent"), "{e}");
}

#[test]
fn a_server_killed_mid_window_fails_the_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = scenario(tmp.path(), "");
    let _turn = serial();
    let mut server = chatbench()
        .args([
            "serve",
            "--arch",
            "task-per-conn",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut lines = std::io::BufReader::new(server.stderr.take().expect("stderr")).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split(" listening on ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned)
        })
        .expect("the server's address");
    let pid = server.id().to_string();
    let url = format!("ws://{addr}/ws");
    let out_dir = tmp.path().join("runs");
    let mut runner = chatbench()
        .args([
            "run",
            "--target",
            &url,
            "--server-pid",
            &pid,
            "--scenario",
            &s,
            "--out",
            out_dir.to_str().expect("utf-8"),
            "--progress",
            "lines",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the run");
    // Kill the server at the run's first progress line inside the measurement window (and
    // read stderr to its end, so the run never writes to a closed pipe).
    let mut seen = Vec::new();
    let mut killed = false;
    for line in std::io::BufReader::new(runner.stderr.take().expect("stderr"))
        .lines()
        .map_while(Result::ok)
    {
        if !killed && line.starts_with("[measure") {
            server.kill().expect("kill the server");
            killed = true;
        }
        seen.push(line);
    }
    assert!(
        killed,
        "no progress line in the window:\n{}",
        seen.join("\n")
    );
    let _ = server.wait();
    let o = runner.wait_with_output().expect("run ends");
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}\nprogress:\n{}",
        text(&o),
        seen.join("\n")
    );
    let s = summary(&only_run_dir(&out_dir));
    assert_eq!(s["status"], "failed", "{s:#}");
    let reasons = s["invalid_reasons"].to_string();
    assert!(reasons.contains("died"), "{reasons}");
}
