//! End-to-end tests of node loss: `chatbench run --serve cluster --nodes 3` with a scenario that
//! SIGKILLs one node in the measurement window (mesh, and redis with a private redis-server):
//! every client of the killed node reconnects, the failover section adds up, the supervisor
//! restarts the node once, and nothing is lost outside the failover. Also: a kill fault without
//! `--serve cluster` is a usage error, and a SIGKILLed `cluster up` leaves no node or
//! redis-server behind (PR_SET_PDEATHSIG).

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A small node-loss scenario: 300 clients in 6 rooms of 50, one sender per room at 20 msg/s,
/// node `kill` SIGKILLed 2 s into a 6 s window.
fn scenario(dir: &std::path::Path, kill: u32) -> std::path::PathBuf {
    let text = format!(
        r#"name = "node-loss-test"
connections = 300
rooms = 6
members_per_room = 50
senders_per_room = 1
rate_per_sender = 20.0
settle = "500ms"
warmup = "1s"
measure = "6s"
cooldown = "2s"

[reconnect]
initial_backoff = "50ms"
max_backoff = "500ms"
jitter = 0.5
max_attempts = 20
deadline = "10s"

[[fault]]
kill_node = {kill}
at = "2s"
"#
    );
    let path = dir.join("node-loss.toml");
    std::fs::write(&path, text).expect("write scenario");
    path
}

fn run_with_kill(backplane: &str) -> (serde_json::Value, std::path::PathBuf, tempfile::TempDir) {
    let out = tempfile::tempdir().expect("out");
    let path = scenario(out.path(), 2);
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args(["run", "--scenario", path.to_str().expect("path")])
        .args([
            "--serve",
            "cluster",
            "--nodes",
            "3",
            "--backplane",
            backplane,
        ])
        .args(["--progress", "quiet", "--out"])
        .arg(out.path().join("runs"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    // 0, or 4 when the shared machine made the generator late (an invalid run still counts).
    assert!(matches!(o.status.code(), Some(0 | 4)), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("failover    node 2 killed"), "{}", text(&o));
    let dir = common::only_run_dir(&out.path().join("runs"));
    (common::summary(&dir), dir, out)
}

fn assert_failover_adds_up(s: &serde_json::Value, dir: &std::path::Path) {
    common::check_schema(s);
    assert_eq!(s["status"], "complete", "{s}");
    let f = &s["failover"];
    assert_eq!(f["node"], 2, "{f}");
    let on_node = f["clients_on_node"].as_u64().expect("clients_on_node");
    // 300 clients spread over 3 nodes (about a third each).
    assert!((50..=150).contains(&on_node), "{f}");
    // Every client of the killed node came back, and no one else had to.
    assert_eq!(f["reconnects"].as_u64(), Some(on_node), "{f}");
    assert_eq!(f["reconnect_failures"], 0, "{f}");
    assert_eq!(f["all_back"], true, "{f}");
    assert!(f["all_back_ms"].as_f64().is_some(), "{f}");
    let r = &s["connections"]["reconnect"];
    assert_eq!(r["lost"].as_u64(), Some(on_node), "{r}");
    assert_eq!(r["reconnected"].as_u64(), Some(on_node), "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["attempts"].as_u64().expect("attempts") >= on_node, "{r}");
    assert_eq!(r["time_us"]["count"].as_u64(), Some(on_node), "{r}");
    // The supervisor restarted it, once.
    assert_eq!(f["restarts"], 1, "{f}");
    assert!(f["restart_ms"].as_u64().is_some(), "{f}");
    // Loss: none outside the failover; inside, whatever it is, it is part of the total.
    assert_eq!(f["outside"]["lost"], 0, "{f}");
    assert!(
        f["outside"]["expected"].as_u64().expect("expected") > 0,
        "{f}"
    );
    let m = &s["messages"];
    let during = f["during"]["lost"].as_u64().expect("lost");
    assert_eq!(m["lost"].as_u64(), Some(during), "{m} {f}");
    assert_eq!(
        m["expected"].as_u64(),
        Some(
            f["during"]["expected"].as_u64().expect("e")
                + f["outside"]["expected"].as_u64().expect("e")
        ),
        "{m} {f}"
    );
    assert_eq!(m["duplicated"], 0, "{m}");
    assert!(f["p99_before_us"].as_u64().is_some(), "{f}");
    assert!(f["p99_after_us"].as_u64().is_some(), "{f}");
    // The nodes' state: node 2 restarted once, the others never.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).expect("cluster.json"))
            .expect("json");
    let restarts: Vec<u64> = state["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["restarts"].as_u64().expect("restarts"))
        .collect();
    assert_eq!(restarts, vec![0, 1, 0], "{state}");
    // The time series has the reconnect columns.
    let series = std::fs::read_to_string(dir.join("timeseries.csv")).expect("timeseries");
    assert!(series.contains(",reconnects,"), "no reconnects column");
    assert!(
        series.contains(",connections_lost,"),
        "no connections_lost column"
    );
}

#[test]
fn a_killed_mesh_node_s_clients_all_come_back() {
    let (s, dir, _out) = run_with_kill("mesh");
    assert_failover_adds_up(&s, &dir);
}

#[test]
fn a_killed_redis_node_s_clients_all_come_back() {
    let (s, dir, _out) = run_with_kill("redis");
    assert_failover_adds_up(&s, &dir);
}

#[test]
fn a_kill_fault_needs_serve_cluster() {
    let dir = tempfile::tempdir().expect("dir");
    let path = scenario(dir.path(), 3);
    for extra in [
        &["--target", "ws://127.0.0.1:9/ws"][..],
        &["--serve", "epoll", "--nodes", "3"][..],
        &["--serve", "cluster", "--nodes", "2"][..],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
            .args(["run", "--scenario", path.to_str().expect("path")])
            .args(extra)
            .args(["--out"])
            .arg(dir.path().join("runs"))
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let want = if extra.contains(&"cluster") {
            "--nodes"
        } else {
            "needs --serve cluster"
        };
        assert!(
            err.contains(want) && err.contains("node-loss.toml"),
            "{extra:?}: {err}"
        );
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A zombie is gone for our purpose (it holds no socket); `kill(pid, 0)` still sees it.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            alive(pid) && state != Some("Z")
        }
        Err(_) => false,
    }
}

#[test]
fn a_sigkilled_cluster_up_leaves_no_node_or_redis_behind() {
    let dir = tempfile::tempdir().expect("dir");
    let state_file = dir.path().join("cluster.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args(["cluster", "up", "--nodes", "2", "--backplane", "redis"])
        .arg("--state-file")
        .arg(&state_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cluster up");
    let out = child.stdout.take().expect("stdout");
    let mut pids = Vec::new();
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(pid) = line
            .strip_prefix("node ")
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("pid=")))
            .and_then(|p| p.parse::<i32>().ok())
        {
            pids.push(pid);
        }
        if line.starts_with("targets ") {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "node lines with pids");
    // The state file is written right after the `targets` line.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !state_file.exists() {
        assert!(Instant::now() < deadline, "no state file within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).expect("state")).expect("json");
    // `redis://:***@HOST:PORT`: the private Redis has a password, not stored.
    let redis = state["redis_url"]
        .as_str()
        .and_then(|u| u.rsplit_once('@'))
        .map(|(_, host)| host.to_string())
        .expect("a private redis");
    assert!(TcpStream::connect(&redis).is_ok(), "redis-server is up");
    for &pid in &pids {
        assert!(running(pid), "node pid {pid} is running");
    }
    // SIGKILL the supervisor itself: it gets no chance to stop anything.
    child.kill().expect("SIGKILL cluster up");
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| running(p)) || TcpStream::connect(&redis).is_ok() {
        assert!(
            Instant::now() < deadline,
            "10 s after SIGKILL of cluster up: nodes still running {:?}, redis at {redis} answering {}",
            pids.iter().filter(|&&p| running(p)).collect::<Vec<_>>(),
            TcpStream::connect(&redis).is_ok()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
