//! Every delivery judged: `chatbench run` against servers that misbehave on purpose
//! (`common/fake_server.rs`): one that echoes each message back to its sender, one that dies
//! mid-window, one that drops a single chosen message to a member on another agent. The run's
//! counts must match what the server did, exactly.

mod common;
#[allow(dead_code)] // not every fault and figure is read by every test
#[path = "common/fake_server.rs"]
mod fake_server;

use common::*;
use fake_server::{FakeServer, Fault};

use std::process::{Output, Stdio};
use std::sync::atomic::Ordering;

fn run(args: &[&str]) -> Output {
    let _turn = serial();
    chatbench()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench")
}

fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn echoes_are_counted_apart_from_deliveries_and_latency() {
    let server = FakeServer::start(Fault::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = server.url();
    let out = run(&[
        "run",
        "--target",
        &url,
        "--scenario",
        "scenarios/smoke.toml",
        "--set",
        "connections=60",
        "--set",
        "rooms=3",
        "--set",
        "members_per_room=20",
        "--out",
        dir.path().to_str().expect("path"),
    ]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(4)),
        "{}",
        text(&out)
    );
    let s = summary(&only_run_dir(dir.path()));
    check_schema(&s);
    let m = &s["messages"];
    let sent = count(&m["sent"]);
    assert!(sent > 0, "{m:#}");
    assert_eq!(
        count(&m["echoes"]),
        sent,
        "every message echoed once: {m:#}"
    );
    assert_eq!(count(&m["expected"]), sent * 19, "{m:#}");
    assert_eq!(
        m["delivered"], m["expected"],
        "echoes are not deliveries: {m:#}"
    );
    assert_eq!(count(&m["extra"]), 0, "{m:#}");
    assert_eq!(
        s["latency_us"]["count"], m["delivered"],
        "echoes are not latency samples"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("echoes      {sent} ")),
        "the console shows the echoes: {stdout}"
    );
    assert!(server.seen.received.load(Ordering::Relaxed) >= sent);
}
