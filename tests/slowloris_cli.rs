//! The slowloris step (issue 19 item 5): a run with `silent_connections` holds that many TCP
//! sockets that never send a handshake while its normal clients connect, and its summary shows
//! whether the server let them in. Thread-pool, its pool taken by the silent sockets, answers
//! 503; epoll stays available. `compare`'s slowloris step is this run in every column.

mod common;
use common::*;

use std::process::{Output, Stdio};

/// A run of the suite's slowloris scenario, shrunk: 100 silent sockets, 20 normal clients.
fn slowloris_run(server: &[&str], out: &std::path::Path) -> (Output, serde_json::Value) {
    let _turn = serial();
    let o = chatbench()
        .arg("run")
        .args(server)
        .args(["--scenario", "scenarios/suite/quick-slowloris.toml"])
        .args(["--set", "silent_connections=100", "--set", "connections=20"])
        .args(["--set", "rooms=2", "--set", "members_per_room=10"])
        .args(["--set", "settle=\"1s\"", "--set", "measure=\"1s\""])
        .args(["--set", "warmup=\"1s\"", "--set", "cooldown=\"1s\""])
        .arg("--out")
        .arg(out)
        .args(["--progress", "quiet"])
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench");
    let dirs: Vec<_> = std::fs::read_dir(out).expect("out").collect();
    assert_eq!(dirs.len(), 1, "no run folder: {}", text(&o));
    let s = summary(&only_run_dir(out));
    check_schema(&s);
    (o, s)
}

#[test]
fn silent_sockets_take_thread_pools_workers_and_the_run_counts_the_503s() {
    let out = tempfile::tempdir().expect("tempdir");
    let (o, s) = slowloris_run(
        &["--serve", "thread-pool", "--server-arg=--pool-size=32"],
        out.path(),
    );
    // 3 when every client was refused (nothing measured), else 0 or 4: never a crash.
    assert!(
        matches!(o.status.code(), Some(0) | Some(3) | Some(4)),
        "{}",
        text(&o)
    );
    let c = &s["connections"];
    assert_eq!(c["silent"], 100, "{}", text(&o));
    let refused = c["errors"]["handshake_status_503"].as_u64().unwrap_or(0);
    assert!(
        refused > 0,
        "no 503 with the pool taken: {c:#}\n{}",
        text(&o)
    );
    assert!(
        c["ready"].as_u64().expect("ready") < 20,
        "every client got in: {c:#}"
    );
}

#[test]
fn epoll_stays_available_under_silent_sockets() {
    let out = tempfile::tempdir().expect("tempdir");
    let (o, _) = slowloris_run(&["--serve", "epoll"], out.path());
    // Exit 4 (the generator missed its schedule on a busy machine) is accepted: availability
    // is judged by the counts below, not by timing.
    let s = assert_finished(&o, out.path());
    let c = &s["connections"];
    assert_eq!(c["silent"], 100, "{}", text(&o));
    assert_eq!(c["ready"], 20, "{c:#}\n{}", text(&o));
    assert!(c["errors"].get("handshake_status_503").is_none(), "{c:#}");
    let m = &s["messages"];
    assert_eq!(m["lost"], 0, "{m:#}");
    assert_eq!(m["delivered"], m["expected"], "{m:#}");
}

#[test]
fn silent_connections_are_refused_with_agents() {
    let out = tempfile::tempdir().expect("tempdir");
    let o = chatbench()
        .args(["run", "--serve", "epoll", "--agents", "local:2"])
        .args(["--scenario", "scenarios/suite/quick-slowloris.toml"])
        .arg("--out")
        .arg(out.path())
        .args(["--progress", "quiet"])
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench");
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("silent_connections = 1500"),
        "{}",
        text(&o)
    );
}
