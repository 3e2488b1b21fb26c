//! End-to-end tests of the `socketio-cluster` peer (`chatbench run --serve-peer socketio-cluster`):
//! Socket.IO workers under Node's `cluster` module sharing one port, rooms spanning them over
//! `@socket.io/redis-adapter` and a private redis-server the run starts and stops.
//!
//! - cross-worker delivery with exact counts: every room has members on every worker (each
//!   worker's own report says so) and every message reached every other member of its room;
//! - the loss of one worker (SIGKILL by its PID, `[[fault]] kill_node`): its clients reconnect
//!   to the same port, the primary re-forks the worker, and nothing is lost outside the failover;
//! - nothing is left running after a run (primary, workers, redis-server), nor after a run that
//!   is itself SIGKILLed;
//! - `--nodes` and kill faults with a single-process peer are usage errors.
//!
//! They need Node.js, `npm ci --prefix servers/peers` and redis-server (scripts/test.sh installs
//! all three); without them they fail, saying what to install.

mod common;
use common::*;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Fails (never skips) when the cluster peer cannot run, naming what to install.
fn require_cluster_peer() {
    let works = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(
        works("node"),
        "these tests need Node.js: install it (Debian: apt-get install nodejs npm), then run \
         npm ci --prefix servers/peers (scripts/test.sh does both)"
    );
    assert!(
        works("redis-server"),
        "these tests need redis-server (Debian: apt-get install redis-server; scripts/test.sh \
         installs it)"
    );
    let modules = root().join("servers/peers/node_modules");
    for package in ["socket.io", "@socket.io/redis-adapter", "redis"] {
        assert!(
            modules.join(package).is_dir(),
            "{} lacks {package}: run npm ci --prefix servers/peers (scripts/test.sh does it)",
            modules.display()
        );
    }
}

/// 300 Socket.IO clients in 5 rooms of 60 (5 and 3 workers share no factor, so round-robin
/// accepts put every room on every worker), one sender per room at 20 msg/s; `extra` is
/// appended (a reconnect policy and a kill fault).
fn scenario(dir: &Path, name: &str, measure: &str, cooldown: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
protocol = "socketio"
connections = 300
rooms = 5
members_per_room = 60
senders_per_room = 1
rate_per_sender = 20.0
settle = "500ms"
warmup = "1s"
measure = "{measure}"
cooldown = "{cooldown}"
{extra}"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write scenario");
    path
}

/// Runs `scenario` against a 3-worker socketio-cluster; returns the summary, cluster.json and
/// the run's stdout.
fn run(scenario: &Path, out: &Path) -> (serde_json::Value, serde_json::Value, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .current_dir(root())
        .args(["run", "--scenario", scenario.to_str().expect("path")])
        .args(["--serve-peer", "socketio-cluster", "--nodes", "3"])
        .args(["--progress", "quiet", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    // 0, or 4 when the shared machine made the generator late (an invalid run still counts).
    assert!(matches!(o.status.code(), Some(0 | 4)), "{}", text(&o));
    let dir = common::only_run_dir(out);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).expect("cluster.json"))
            .expect("json");
    (
        common::summary(&dir),
        state,
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn running(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// After the run: no worker, primary or redis-server of it is left.
fn assert_all_stopped(state: &serde_json::Value, s: &serde_json::Value) {
    let redis = state["redis_url"]
        .as_str()
        .and_then(|u| u.strip_prefix("redis://"))
        .expect("a private redis-server")
        .to_string();
    let pids: Vec<u64> = s["target"]["pids"]
        .as_array()
        .expect("sampled pids")
        .iter()
        .filter_map(|p| p.as_u64())
        .collect();
    // The primary, three workers and redis-server were sampled.
    assert_eq!(pids.len(), 5, "{:#}", s["target"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| running(p)) || TcpStream::connect(&redis).is_ok() {
        assert!(
            Instant::now() < deadline,
            "5 s after the run: still running {:?}, redis at {redis} answering {}",
            pids.iter().filter(|&&p| running(p)).collect::<Vec<_>>(),
            TcpStream::connect(&redis).is_ok()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reports(state: &serde_json::Value) -> Vec<serde_json::Value> {
    state["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["report"].clone())
        .collect()
}

#[test]
fn socketio_cluster_delivers_across_workers_with_exact_counts() {
    require_cluster_peer();
    let _g = serial();
    let out = tempfile::tempdir().expect("out");
    let path = scenario(out.path(), "cross-worker", "3s", "2s", "");
    let (s, state, _) = run(&path, &out.path().join("runs"));
    common::check_schema(&s);
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(s["target"]["arch"], "socketio-cluster", "{:#}", s["target"]);
    assert_eq!(s["connections"]["ready"], 300, "{:#}", s["connections"]);
    let m = &s["messages"];
    let sent = m["sent"].as_u64().expect("sent");
    assert!(sent > 0, "{m}");
    // Exact: every message reached the 59 other members of its room, once.
    assert_eq!(m["expected"].as_u64(), Some(sent * 59), "{m}");
    assert_eq!(m["delivered"].as_u64(), Some(sent * 59), "{m}");
    assert_eq!(m["lost"], 0, "{m}");
    assert_eq!(m["duplicated"], 0, "{m}");
    // The workers' own reports: the 300 clients were spread over the three processes, and every
    // room had members on every one of them. A room's one sender is on one worker: its messages
    // reached the members on the two others through Redis.
    assert_eq!(state["arch"], "socketio-cluster", "{state}");
    assert_eq!(state["backplane"], "redis", "{state}");
    let reports = reports(&state);
    assert_eq!(reports.len(), 3, "{state}");
    let mut peaks = 0;
    for r in &reports {
        let peak = r["peak"].as_u64().expect("peak");
        assert!(peak >= 1, "every worker had clients: {state}");
        peaks += peak;
        assert_eq!(r["peak_rooms"], 5, "every room on every worker: {state}");
    }
    assert_eq!(peaks, 300, "{state}");
    let published: u64 = reports
        .iter()
        .map(|r| r["published"].as_u64().expect("published"))
        .sum();
    assert!(
        published >= sent,
        "{published} published, {sent} sent in the window"
    );
    let pids: Vec<u64> = state["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["pid"].as_u64())
        .collect();
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three worker processes: {state}");
    assert_all_stopped(&state, &s);
}

#[test]
fn a_killed_socketio_worker_is_reforked_and_its_clients_come_back() {
    require_cluster_peer();
    let _g = serial();
    let out = tempfile::tempdir().expect("out");
    let kill = r#"
[reconnect]
initial_backoff = "50ms"
max_backoff = "500ms"
jitter = 0.5
max_attempts = 20
deadline = "10s"

[[fault]]
kill_node = 2
at = "2s"
"#;
    // A re-fork loads Socket.IO and connects to Redis: seconds on a busy 2-core machine. The
    // run follows the primary's word until its end, 8 s after the kill here.
    let path = scenario(out.path(), "worker-loss", "6s", "4s", kill);
    let (s, state, stdout) = run(&path, &out.path().join("runs"));
    assert!(stdout.contains("failover    node 2 killed"), "{stdout}");
    common::check_schema(&s);
    assert_eq!(s["status"], "complete", "{s}");
    let f = &s["failover"];
    assert_eq!(f["node"], 2, "{f}");
    // The worker's clients are the connections the kill took: about a third of 300.
    let on_node = f["clients_on_node"].as_u64().expect("clients_on_node");
    assert!((50..=150).contains(&on_node), "{f}");
    // Every one came back (to the same port: the other workers, or the re-forked one).
    assert_eq!(f["reconnects"].as_u64(), Some(on_node), "{f}");
    assert_eq!(f["reconnect_failures"], 0, "{f}");
    assert_eq!(f["all_back"], true, "{f}");
    let r = &s["connections"]["reconnect"];
    assert_eq!(r["lost"].as_u64(), Some(on_node), "{r}");
    assert_eq!(r["reconnected"].as_u64(), Some(on_node), "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    // The primary re-forked it, once, and said when.
    assert_eq!(f["restarts"], 1, "{f}");
    assert!(f["restart_ms"].as_u64().is_some(), "{f}");
    let restarts: Vec<u64> = state["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["restarts"].as_u64().expect("restarts"))
        .collect();
    assert_eq!(restarts, vec![0, 1, 0], "{state}");
    let killed = f["pid"].as_u64().expect("killed pid");
    let events = state["events"].as_array().expect("events");
    let kinds: Vec<(u64, &str)> = events
        .iter()
        .map(|e| {
            (
                e["node"].as_u64().expect("node"),
                e["event"].as_str().expect("event"),
            )
        })
        .filter(|(n, _)| *n == 2)
        .collect();
    assert_eq!(
        kinds,
        vec![
            (2, "started"),
            (2, "killed"),
            (2, "exited"),
            (2, "restarted")
        ],
        "{state}"
    );
    let exited = events
        .iter()
        .find(|e| e["event"] == "exited")
        .expect("exited");
    assert_eq!(exited["status"], "SIGKILL", "{exited}");
    let reforked = events
        .iter()
        .find(|e| e["event"] == "restarted")
        .expect("restarted");
    assert_ne!(reforked["pid"].as_u64(), Some(killed), "{reforked}");
    // Full delivery again: nothing lost outside the failover; what was lost is inside it.
    assert_eq!(f["outside"]["lost"], 0, "{f}");
    assert!(
        f["outside"]["expected"].as_u64().expect("expected") > 0,
        "{f}"
    );
    let m = &s["messages"];
    assert_eq!(m["lost"], f["during"]["lost"], "{m} {f}");
    assert_eq!(m["duplicated"], 0, "{m}");
    assert_all_stopped(&state, &s);
}

#[test]
fn nodes_and_kill_faults_need_a_cluster_peer() {
    let dir = tempfile::tempdir().expect("dir");
    let kill = "[[fault]]\nkill_node = 2\nat = \"1s\"\n";
    let path = scenario(dir.path(), "usage", "3s", "2s", kill);
    let plain = scenario(dir.path(), "plain", "3s", "2s", "");
    for (scenario, extra, want) in [
        (
            &plain,
            &["--serve-peer", "socketio", "--nodes", "3"][..],
            "--nodes needs --serve ARCH, or --serve-peer socketio-cluster",
        ),
        (
            &path,
            &["--serve-peer", "socketio"][..],
            "needs --serve cluster",
        ),
        (
            &path,
            &["--serve-peer", "socketio-cluster", "--nodes", "1"][..],
            "--nodes 1 starts nodes 1..=1",
        ),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
            .current_dir(root())
            .args(["run", "--scenario", scenario.to_str().expect("path")])
            .args(extra)
            .arg("--out")
            .arg(dir.path().join("runs"))
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{extra:?}: {err}");
    }
}

/// The pids whose parent is `parent` (from /proc/*/stat), zombies left out.
fn children_of(parent: u64) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let mut rest = stat.rsplit(')').next()?.split_whitespace();
                    let state = rest.next()?;
                    let ppid: u64 = rest.next()?.parse().ok()?;
                    Some(state != "Z" && ppid == parent)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_sigkilled_run_leaves_no_worker_primary_or_redis_behind() {
    require_cluster_peer();
    let _g = serial();
    let out = tempfile::tempdir().expect("out");
    let path = scenario(out.path(), "killed-run", "60s", "2s", "");
    let mut run = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .current_dir(root())
        .args(["run", "--scenario", path.to_str().expect("path")])
        .args(["--serve-peer", "socketio-cluster", "--nodes", "3"])
        .args(["--progress", "quiet", "--out"])
        .arg(out.path().join("runs"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start run");
    let me = u64::from(run.id());
    // Wait until the run has started redis-server and the primary, and the primary its three
    // workers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (servers, workers) = loop {
        let servers = children_of(me);
        let workers: Vec<u64> = servers.iter().flat_map(|&p| children_of(p)).collect();
        if servers.len() == 2 && workers.len() == 3 {
            break (servers, workers);
        }
        if Instant::now() >= deadline {
            let _ = run.kill();
            let _ = run.wait();
            panic!("within 30 s: run's children {servers:?}, their children {workers:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SIGKILL the run itself: it gets no chance to stop anything.
    run.kill().expect("SIGKILL the run");
    let _ = run.wait();
    let all: Vec<u64> = servers.iter().chain(&workers).copied().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while all.iter().any(|&p| running(p)) {
        assert!(
            Instant::now() < deadline,
            "10 s after SIGKILL of the run: still running {:?} (of redis-server + primary {servers:?}, workers {workers:?})",
            all.iter().filter(|&&p| running(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
