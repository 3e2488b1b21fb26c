//! End-to-end tests of runs spread over several targets and several agent processes: the real
//! binary, real `chatbench serve` processes on 127.0.0.1 port 0, real agents. They assert
//! counts (connections per target, exact deliveries, merged histogram counts) and refusals,
//! never timing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// These runs take turns: running them side by side would make each generator-bound.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn chatbench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chatbench"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A child process this test started, killed by its pid when dropped.
struct Started {
    child: Child,
    /// The first word of its first stdout line (the bound address).
    addr: String,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `chatbench ARGS` and reads the bound address from its first stdout line.
fn start(args: &[&str]) -> Started {
    let mut child = chatbench()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chatbench");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr = line.split_whitespace().next().unwrap_or("").to_string();
    assert!(!addr.is_empty(), "no address printed by chatbench {args:?}");
    Started { child, addr }
}

fn server() -> Started {
    start(&[
        "serve",
        "--arch",
        "task-per-conn",
        "--listen",
        "127.0.0.1:0",
    ])
}

fn only_run_dir(root: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(root)
        .expect("results root")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "expected one run folder, found {dirs:?}");
    dirs[0].clone()
}

fn summary(dir: &Path) -> serde_json::Value {
    let bytes = std::fs::read(dir.join("summary.json")).expect("summary.json");
    serde_json::from_slice(&bytes).expect("summary.json is JSON")
}

fn check_schema(summary: &serde_json::Value) {
    let schema_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/summary.schema.json"),
    )
    .expect("docs/summary.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&schema_text).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(summary)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "summary.json does not match docs/summary.schema.json:\n{}",
        errors.join("\n")
    );
}

/// A finished run: exit 0, or 4 (generator-bound on a busy machine) with its reason.
fn assert_finished(out: &Output, s: &serde_json::Value) {
    match out.status.code() {
        Some(0) => {}
        Some(4) => assert!(
            !s["invalid_reasons"].as_array().expect("reasons").is_empty(),
            "{s:#}"
        ),
        _ => panic!("run failed: {}", text(out)),
    }
}

/// The server's `/metrics` counter `name` (a plain HTTP GET on the server's port).
fn metric(addr: &str, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect for /metrics");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
}

const SCENARIO: &str = "name = \"multi\"\nconnections = 120\nrooms = 6\nmembers_per_room = 20\n\
senders_per_room = 3\nrate_per_sender = 10.0\nramp_rate = 2000.0\nsettle = \"500ms\"\n\
warmup = \"500ms\"\nmeasure = \"2s\"\ncooldown = \"1s\"\n";

fn scenario_file(dir: &Path) -> PathBuf {
    let p = dir.join("multi.toml");
    std::fs::write(&p, SCENARIO).expect("write scenario");
    p
}

#[test]
fn two_partitioned_targets_each_hold_their_rooms_and_lose_nothing() {
    let _turn = serial();
    let a = server();
    let b = server();
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = scenario_file(dir.path());
    let out_root = dir.path().join("out");
    let targets = format!("ws://{}/ws,ws://{}/ws", a.addr, b.addr);
    let out = chatbench()
        .args([
            "run",
            "--scenario",
            scenario.to_str().expect("path"),
            "--target",
            &targets,
            "--target-policy",
            "partition",
            "--out",
            out_root.to_str().expect("path"),
            "--progress",
            "quiet",
        ])
        .output()
        .expect("run");
    let s = summary(&only_run_dir(&out_root));
    assert_finished(&out, &s);
    check_schema(&s);
    assert_eq!(s["target"]["targets"].as_array().map(Vec::len), Some(2));
    assert_eq!(s["target"]["target_policy"], "partition");
    assert_eq!(s["connections"]["ready"], 120, "{s:#}");
    let m = &s["messages"];
    let sent = m["sent"].as_u64().expect("sent");
    assert!(sent > 0);
    assert_eq!(m["expected"].as_u64(), Some(sent * 19), "{m:#}");
    assert_eq!(m["delivered"], m["expected"], "{m:#}");
    assert_eq!(m["lost"], 0);
    // Each server saw exactly its three rooms' 60 members, plus the run's preflight TCP
    // connection and this /metrics request.
    for srv in [&a, &b] {
        let accepted = metric(&srv.addr, "chatbench_connections_accepted_total");
        assert_eq!(accepted, 62.0, "server {} accepted {accepted}", srv.addr);
    }
}

#[test]
fn partition_with_fewer_rooms_than_targets_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = scenario_file(dir.path());
    let out_root = dir.path().join("out");
    let out = chatbench()
        .args([
            "run",
            "--scenario",
            scenario.to_str().expect("path"),
            "--target",
            "ws://127.0.0.1:9/ws,ws://127.0.0.1:10/ws",
            "--set",
            "rooms=1",
            "--set",
            "members_per_room=20",
            "--target-policy",
            "partition",
            "--out",
            out_root.to_str().expect("path"),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("partition") && err.contains("rooms"), "{err}");
    assert!(!out_root.exists(), "no results for a refused plan");
}
