//! End-to-end tests of `chatbench cluster up`: nodes start on the addresses it prints, a node
//! killed with SIGKILL is restarted at the same address (counted, timestamped), a node that
//! keeps dying is given up on, and Ctrl-C stops every node; `run --serve … --nodes N` measures
//! a mesh cluster, a Redis cluster and independent servers it started, with exact counts; a
//! mesh cluster's nodes authenticate with a per-run secret that is on no command line, and a
//! stranger without it is refused.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A running `cluster up`, its stdout lines arriving on a channel.
struct Up {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(extra: &[&str]) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatbench"))
            .args(["cluster", "up"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cluster up");
        let (tx, lines) = channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Up {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(l.clone());
                if l.contains(needle) {
                    return l;
                }
            }
        }
        panic!("no line with {needle:?} within 30 s; saw {:?}", self.seen);
    }

    /// Ctrl-C; waits for exit; returns its stderr and status.
    fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (status, err);
            }
            assert!(
                Instant::now() < deadline,
                "cluster up did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `node 2 ws://127.0.0.1:PORT/ws … pid=N` → (url host:port, pid).
fn node_line(l: &str) -> (String, i32) {
    let url = l.split_whitespace().nth(2).expect("url");
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_string();
    let pid = l
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("pid");
    (addr, pid)
}

fn healthy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_node_is_restarted_at_its_address_and_ctrl_c_stops_all() {
    let state = tempfile::tempdir().expect("dir");
    let state_file = state.path().join("cluster.json");
    let mut up = Up::start(&[
        "--nodes",
        "3",
        "--arch",
        "task-per-conn",
        "--state-file",
        state_file.to_str().expect("path"),
    ]);
    let nodes: Vec<(String, i32)> = (1..=3)
        .map(|i| node_line(&up.wait_for(&format!("node {i} ws://"))))
        .collect();
    let targets = up.wait_for("targets ");
    for (addr, _) in &nodes {
        assert!(targets.contains(addr.as_str()), "{targets}");
        assert!(healthy(addr), "node at {addr} not healthy");
    }
    // Kill node 2 (a process this test's child started) and watch it come back.
    let (addr2, pid2) = nodes[1].clone();
    // SAFETY: kill(2) on a node process our `cluster up` child started.
    unsafe {
        libc::kill(pid2, libc::SIGKILL);
    }
    up.wait_for("node 2 exited (signal: 9");
    let restarted = up.wait_for("node 2 restarted");
    assert!(restarted.contains("restart=1"), "{restarted}");
    let new_pid: i32 = restarted
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("new pid");
    assert_ne!(new_pid, pid2);
    assert!(healthy(&addr2), "restarted node not serving at {addr2}");
    // The state file says the same.
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).expect("state")).expect("json");
    assert_eq!(st["nodes"][1]["restarts"], 1, "{st}");
    assert_eq!(st["nodes"][1]["pid"], new_pid, "{st}");
    assert!(
        st["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["event"] == "restarted" && e["node"] == 2 && e["restart_ms"].is_u64()),
        "{st}"
    );
    let (status, stderr) = up.interrupt();
    assert!(status.success(), "{stderr}");
    for pid in [nodes[0].1, new_pid, nodes[2].1] {
        wait_gone(pid);
    }
}

/// `name` in a node's `/metrics`.
fn metric(addr: &str, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    chatbench_servers::metrics::sample_value(&reply, name)
}

fn wait_metric(addr: &str, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(addr, name) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{name} at {addr} stayed at {:?}, want {want}",
            metric(addr, name)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A variable of process `pid`'s environment.
fn environ(pid: i32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&format!("{name}=")).map(str::to_string)
    })
}

#[test]
fn a_mesh_cluster_authenticates_its_nodes_with_a_secret_on_no_command_line() {
    let mut up = Up::start(&["--nodes", "2"]);
    let lines: Vec<String> = (1..=2)
        .map(|i| up.wait_for(&format!("node {i} ws://")))
        .collect();
    let mut secrets = Vec::new();
    let mut nodes = Vec::new();
    for l in &lines {
        let (addr, pid) = node_line(l);
        let cluster = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("cluster="))
            .expect("cluster=")
            .to_string();
        let secret = environ(pid, "CHATBENCH_CLUSTER_SECRET").expect("the node has a secret");
        assert_eq!(secret.len(), 64, "32 random bytes, hex");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&secret),
            "the secret is on node {pid}'s command line"
        );
        secrets.push(secret);
        nodes.push((addr, cluster));
    }
    assert_eq!(secrets[0], secrets[1], "one secret per cluster");
    // The nodes link (authenticated: a node with a secret accepts no other kind of link).
    for (addr, _) in &nodes {
        wait_metric(addr, "chatbench_backplane_peers_up", 1.0);
    }
    // A message crosses.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let mut clients = Vec::new();
        for (addr, _) in &nodes {
            let (mut c, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                .await
                .expect("client");
            c.send(Message::text(r#"{"t":"join","room":"r"}"#))
                .await
                .unwrap();
            let joined = c.next().await.unwrap().unwrap();
            assert_eq!(joined.to_text().unwrap(), r#"{"t":"joined","room":"r"}"#);
            clients.push(c);
        }
        let m = r#"{"t":"msg","room":"r","from":"a","seq":1,"ts":2,"body":"hi"}"#;
        clients[0].send(Message::text(m)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), clients[1].next())
            .await
            .expect("the message crossed within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(got.to_text().unwrap(), m);
    });
    // A stranger that says hello without the secret is refused.
    use chatbench_servers::cluster::wire::{encode, Frame, CLUSTER_PROTOCOL_VERSION};
    let mut s = TcpStream::connect(&nodes[0].1).expect("mesh port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&encode(&Frame::Hello {
        version: CLUSTER_PROTOCOL_VERSION,
        node_id: 99,
    }))
    .unwrap();
    s.write_all(&encode(&Frame::Challenge {
        incarnation: 1,
        nonce: [0; 32],
        flags: 0,
    }))
    .unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("uses a cluster secret and node 99 has none"),
        "{text}"
    );
    wait_metric(&nodes[0].0, "chatbench_backplane_refused_total", 1.0);
    assert_eq!(
        metric(&nodes[0].0, "chatbench_backplane_peers_up"),
        Some(1.0)
    );
    let (status, stderr) = up.interrupt();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_node_that_keeps_dying_is_given_up_on() {
    let mut up = Up::start(&[
        "--nodes",
        "1",
        "--arch",
        "epoll",
        "--max-restarts",
        "1",
        "--restart-period",
        "60s",
    ]);
    let (_, pid) = node_line(&up.wait_for("node 1 ws://"));
    // SAFETY: kill(2) on a node process our `cluster up` child started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let restarted = up.wait_for("node 1 restarted");
    let pid: i32 = restarted
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("pid");
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    up.wait_for("node 1 restarted 1 times within the restart period: given up");
    let (status, stderr) = up.interrupt();
    assert!(status.success(), "{stderr}");
}

#[test]
fn bad_requests_are_usage_errors() {
    for (args, needle) in [
        (
            vec!["--arch", "no-such-arch"],
            "not an architecture of this build",
        ),
        (
            vec!["--redis-url", "redis://127.0.0.1:1"],
            "--redis-url needs --backplane redis",
        ),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
            .args(["cluster", "up"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `chatbench run --serve … --nodes N` on the smoke scenario shrunk: returns the summary and
/// the run folder.
fn run_nodes(extra: &[&str]) -> (serde_json::Value, std::path::PathBuf, tempfile::TempDir) {
    let out = tempfile::tempdir().expect("out");
    let o = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "--scenario",
            "scenarios/smoke.toml",
            "--progress",
            "quiet",
        ])
        .args([
            "--set",
            "connections=120",
            "--set",
            "rooms=6",
            "--set",
            "members_per_room=20",
        ])
        .args([
            "--set",
            "measure=\"2s\"",
            "--out",
            out.path().to_str().expect("path"),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    // 0, or 4 when the shared machine made the generator late (an invalid run still counts).
    assert!(
        matches!(o.status.code(), Some(0 | 4)),
        "{extra:?}: {stderr}"
    );
    let dir = std::fs::read_dir(out.path())
        .expect("out")
        .map(|e| e.expect("entry").path())
        .next()
        .expect("a run folder");
    let s = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary"))
        .expect("json");
    (s, dir, out)
}

/// `processes`: the nodes, plus a private redis-server when there is one.
fn assert_every_message_delivered(
    s: &serde_json::Value,
    nodes: usize,
    processes: usize,
    policy: &str,
) {
    common::check_schema(s);
    assert_eq!(s["status"], "complete", "{s}");
    let m = &s["messages"];
    assert_eq!(m["lost"], 0, "{m}");
    assert_eq!(m["duplicated"], 0, "{m}");
    let sent = m["sent"].as_u64().expect("sent");
    assert!(sent > 0, "{m}");
    assert_eq!(m["expected"].as_u64(), Some(sent * 19), "{m}");
    assert_eq!(m["delivered"], m["expected"], "{m}");
    assert_eq!(
        s["target"]["targets"].as_array().map(Vec::len),
        Some(nodes),
        "{s}"
    );
    assert_eq!(
        s["target"]["pids"].as_array().map(Vec::len),
        Some(processes),
        "{s}"
    );
    assert_eq!(s["target"]["target_policy"], policy, "{s}");
    // The servers' own counters are every node's, summed.
    let sm = s["target_resources"]["server_metrics"]
        .as_object()
        .expect("server metrics");
    let info: f64 = sm
        .iter()
        .filter(|(k, _)| k.starts_with("chatbench_info{"))
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    assert_eq!(info, nodes as f64, "one chatbench_info per node: {sm:?}");
    let accepted = sm["chatbench_connections_accepted_total"]
        .as_f64()
        .expect("accepted");
    let ready = s["connections"]["ready"].as_f64().expect("ready");
    assert!(accepted >= ready, "{accepted} accepted < {ready} ready");
}

#[test]
fn a_run_spans_rooms_over_a_mesh_cluster_it_started() {
    let (s, dir, _out) = run_nodes(&["--serve", "cluster", "--nodes", "3", "--backplane", "mesh"]);
    // Rooms of 20 spread over 3 nodes: no loss means every message crossed the mesh.
    assert_every_message_delivered(&s, 3, 3, "span");
    assert_eq!(s["target"]["settings"]["backplane"], "mesh", "{s}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).expect("cluster.json"))
            .expect("json");
    assert_eq!(state["nodes"].as_array().map(Vec::len), Some(3), "{state}");
    for n in state["nodes"].as_array().expect("nodes") {
        assert_eq!(n["restarts"], 0, "{state}");
    }
}

#[test]
fn a_run_spans_rooms_over_a_redis_cluster_with_a_private_redis() {
    let (s, dir, _out) = run_nodes(&["--serve", "cluster", "--nodes", "2", "--backplane", "redis"]);
    assert_every_message_delivered(&s, 2, 3, "span");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).expect("cluster.json"))
            .expect("json");
    // The private Redis has a random password, stored only as `***`.
    let url = state["redis_url"].as_str().expect("a private redis url");
    assert!(url.starts_with("redis://:***@127.0.0.1:"), "{url}");
}

#[test]
fn independent_servers_keep_each_room_on_one() {
    let (s, _dir, _out) = run_nodes(&["--serve", "epoll", "--nodes", "2"]);
    assert_every_message_delivered(&s, 2, 2, "partition");
}
