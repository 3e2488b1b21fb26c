//! End-to-end tests of runs spread over several targets and several agent processes: the real
//! binary, real `chatbench serve` processes on 127.0.0.1 port 0, real agents. They assert
//! counts (connections per target, exact deliveries, merged histogram counts) and refusals,
//! never timing.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

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
    let s = assert_finished(&out, &out_root);
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

fn hgrm_total(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("latency.hgrm")).expect("latency.hgrm");
    text.lines()
        .find_map(|l| l.split("Total count").nth(1))
        .and_then(|rest| rest.trim_matches([' ', '=', ']']).parse().ok())
        .unwrap_or_else(|| panic!("no total count in latency.hgrm:\n{text}"))
}

fn sum(agents: &[serde_json::Value], key: &str) -> u64 {
    agents
        .iter()
        .map(|a| a[key].as_u64().unwrap_or_else(|| panic!("{key} in {a}")))
        .sum()
}

#[test]
fn three_local_agents_deliver_exactly_and_merge_histograms_exactly() {
    let _turn = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = scenario_file(dir.path());
    let out_root = dir.path().join("out");
    let out = chatbench()
        .args([
            "run",
            "--serve",
            "task-per-conn",
            "--scenario",
            scenario.to_str().expect("path"),
            "--agents",
            "local:3",
            "--out",
            out_root.to_str().expect("path"),
            "--progress",
            "quiet",
        ])
        .output()
        .expect("run");
    let s = assert_finished(&out, &out_root);
    let run_dir = only_run_dir(&out_root);
    assert_eq!(s["status"], "complete", "{s:#}");
    assert_eq!(s["generator"]["agents"], 3);
    let d = &s["distributed"];
    assert_eq!(d["partial"], false, "{d:#}");
    let agents = d["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 3);
    assert!(agents.iter().all(|a| a["complete"] == true), "{d:#}");
    assert_eq!(sum(agents, "planned"), 120);
    assert_eq!(s["connections"]["ready"], 120, "{s:#}");
    // The agents' receivers (6 rooms × 17) read on the epoll path; the senders do not.
    assert_eq!(
        s["connections"]["epoll_receivers"],
        6 * 17,
        "{:#}",
        s["connections"]
    );
    // Their senders (6 rooms × 3) are on the pacer's send path: each agent's count, summed,
    // and on the console's `sending` line as in a one-process run.
    assert_eq!(
        s["connections"]["pacer_senders"],
        6 * 3,
        "{:#}",
        s["connections"]
    );
    assert!(
        s["connections"]["pacer_send_held"].is_u64(),
        "{:#}",
        s["connections"]
    );
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("\n  sending     18 senders' frames written by the pacer's thread"),
        "{console}"
    );
    // Each agent splits its own CPU by thread role (its own threads, the one-process rule); the
    // fleet's split is their sum over the agents that reported one: all three here.
    let g = &s["generator"];
    assert_eq!(g["by_role_agents"], 3, "{g:#}");
    for role in ["receive", "pacer", "tokio", "other"] {
        let mut cores = 0.0;
        let mut threads = 0;
        for a in agents {
            let c = a["cpu_cores_by_role"][role]
                .as_f64()
                .unwrap_or_else(|| panic!("{role} cores in {a:#}"));
            assert!(c.is_finite() && c >= 0.0, "{role}: {a:#}");
            cores += c;
            threads += a["threads_by_role"][role]
                .as_u64()
                .unwrap_or_else(|| panic!("{role} threads in {a:#}"));
        }
        let fleet = g["cpu_cores_by_role"][role].as_f64().expect("fleet cores");
        assert!(
            (fleet - cores).abs() <= 1e-9 * cores.max(1.0),
            "{role}: fleet {fleet}, agents' sum {cores}"
        );
        assert_eq!(g["threads_by_role"][role].as_u64(), Some(threads), "{role}");
    }
    // Every agent read on the epoll path and sent from its pacer's thread.
    for a in agents {
        let t = &a["threads_by_role"];
        assert!(t["receive"].as_u64() >= Some(1), "{a:#}");
        assert_eq!(t["pacer"], 1, "{a:#}");
    }
    assert!(
        console.contains(" cores (3 of 3 agents): receive "),
        "the gen threads line shows the fleet's split: {console}"
    );
    // The coordinator reads the started server's threads' run-queue wait at the window's edges.
    let wait = &s["target_resources"]["run_queue_wait"];
    assert!(
        wait["seconds"].as_f64().is_some_and(|v| v >= 0.0),
        "{wait:#}"
    );
    assert!(console.contains("waited for a CPU"), "{console}");
    // Every delivery judged, within and across agents: exact, every room's 19 other members on
    // whichever agent; each agent's own pairs (`agents[].expected`) are part of it.
    let m = &s["messages"];
    assert_eq!(m["lost"], 0, "{m:#}");
    assert_eq!(m["delivered"], m["expected"], "{m:#}");
    assert_eq!(m["sent"].as_u64(), Some(sum(agents, "sent")));
    let sent = m["sent"].as_u64().expect("sent");
    assert!(sent > 0);
    assert_eq!(m["expected"].as_u64(), Some(sent * 19), "{m:#}");
    let cross = d["delivered_cross_agent"].as_u64().expect("cross");
    assert_eq!(
        m["delivered"].as_u64(),
        Some(sum(agents, "delivered") + cross),
        "{d:#}"
    );
    // Senders spread over the agents (3 per room, rooms rotate).
    assert!(agents.iter().all(|a| a["sent"].as_u64() > Some(0)), "{d:#}");
    // The merged histogram holds exactly the agents' samples, one per judged delivery.
    let merged = s["latency_us"]["count"].as_u64().expect("merged count");
    let per_agent: u64 = agents
        .iter()
        .map(|a| a["latency_us"]["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(merged, per_agent);
    // Deliveries across agents are timed too, on this host's one clock (`clock_error_us` 0):
    // one sample per judged delivery, but for a message whose intended time falls within the
    // few µs by which two agents' window edges can differ.
    assert_eq!(d["clock_error_us"], 0, "{d:#}");
    let delivered = m["delivered"].as_u64().expect("delivered");
    assert!(
        merged.abs_diff(delivered) <= 2,
        "{merged} samples for {delivered} deliveries"
    );
    assert!(
        merged > sum(agents, "delivered"),
        "cross-agent deliveries timed"
    );
    assert_eq!(hgrm_total(&run_dir), merged);
    // The fleet's latency.hlog: the merged seconds; their `window` intervals (with each
    // agent's tail after its last tick) add up to the merged window histogram.
    let log = std::fs::read(run_dir.join("latency.hlog")).expect("latency.hlog");
    let intervals = chatbench_model::hlog::read("latency.hlog", &log).expect("an interval log");
    let window = chatbench_model::hlog::sum(&intervals, true);
    assert_eq!(
        window.len(),
        merged,
        "window intervals re-add to the merged histogram"
    );
    assert_eq!(
        Some(window.value_at_quantile(0.99)),
        s["latency_us"]["p99"].as_u64(),
        "p99 re-percentiled from latency.hlog"
    );
    assert!(chatbench_model::hlog::sum(&intervals, false).len() >= merged);
    // Every delivery across agents: all-phase sends × 19 other members, which is also what the
    // server says it forwarded.
    let sent_all = sum(agents, "sent_all");
    let delivered_all = sum(agents, "delivered_all");
    assert_eq!(delivered_all, sent_all * 19, "{d:#}");
    let forwarded = s["target_resources"]["server_metrics"]["chatbench_deliveries_total"]
        .as_f64()
        .expect("server deliveries");
    assert_eq!(forwarded as u64, delivered_all);
    let csv = std::fs::read_to_string(run_dir.join("timeseries.csv")).expect("timeseries.csv");
    assert!(csv.contains("agents_live") && csv.contains("delivered_per_s"));
    // The window's deliveries from every agent: the agents' own counts, summed; server CPU
    // per delivery divides by them, for a fleet as for one process.
    let window_all = d["delivered_window_all"]
        .as_u64()
        .expect("window deliveries");
    assert_eq!(window_all, sum(agents, "delivered_window_all"), "{d:#}");
    assert!(window_all > 0, "{d:#}");
    let r = &s["target_resources"];
    let per = r["cpu_us_per_delivery"]
        .as_f64()
        .unwrap_or_else(|| panic!("CPU per delivery for a fleet: {r:#}"));
    assert!(per.is_finite() && per > 0.0, "{r:#}");
    let cores = r["cpu_cores_measure"].as_f64().expect("server cores");
    assert!(cores.is_finite() && cores > 0.0, "{r:#}");
    // A server pinned apart from the agents (they inherit the coordinator's CPUs): other work
    // on its CPUs is read, as in a one-process run.
    if s["target"]["cpu_affinity"].is_array() {
        let other = &r["other_load"];
        assert!(other["busy_cores"].as_f64().is_some(), "{r:#}");
        assert_eq!(other["cpus"], s["target"]["cpu_affinity"], "{r:#}");
    }
}

/// Starts a `chatbench agent` on 127.0.0.1 port 0 with extra flags; without `--token-file`,
/// with `--allow-unauthenticated-loopback` (an agent needs a token on loopback too).
fn agent(extra: &[&str]) -> Started {
    let mut args = vec!["agent", "--listen", "127.0.0.1:0"];
    if !extra.contains(&"--token-file") {
        args.push("--allow-unauthenticated-loopback");
    }
    args.extend_from_slice(extra);
    start(&args)
}

/// A raw control connection to an agent at `addr` (reads time out after `secs`).
fn control_conn(addr: &str, secs: u64) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).expect("connect to the agent");
    s.set_read_timeout(Some(std::time::Duration::from_secs(secs)))
        .expect("timeout");
    s
}

/// Sends `line` on `s` and reads one reply line.
fn exchange(s: &mut std::net::TcpStream, line: &str) -> String {
    use std::io::Write;
    s.write_all(line.as_bytes()).expect("send");
    s.write_all(b"\n").expect("send");
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    use std::io::Read;
    while s.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
        reply.push(byte[0]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

const HELLO: &str = r#"{"t":"hello","version":2,"token":null}"#;

#[test]
fn an_agent_needs_a_token_on_loopback_unless_told_otherwise() {
    let out = chatbench()
        .args(["agent", "--listen", "127.0.0.1:0", "--once"])
        .env_remove("CHATBENCH_AGENT_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("agent");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--allow-unauthenticated-loopback") && err.contains("--token-file"),
        "{err}"
    );
    // A token from the environment (how `run --agents local:N` starts its agents) is required.
    let a = start_with_env(&["agent", "--listen", "127.0.0.1:0"], "per-run-secret");
    let mut c = control_conn(&a.addr, 30);
    let reply = exchange(&mut c, HELLO);
    assert!(
        reply.contains("refused") && reply.contains("token"),
        "{reply}"
    );
    let mut c = control_conn(&a.addr, 30);
    let reply = exchange(
        &mut c,
        r#"{"t":"hello","version":2,"token":"per-run-secret"}"#,
    );
    assert!(reply.contains(r#""t":"hello""#), "{reply}");
}

/// Starts `chatbench ARGS` with `CHATBENCH_AGENT_TOKEN=token`.
fn start_with_env(args: &[&str], token: &str) -> Started {
    let mut child = chatbench()
        .args(args)
        .env("CHATBENCH_AGENT_TOKEN", token)
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

#[test]
fn a_huge_plan_is_refused_with_a_message_and_the_agent_stays_alive() {
    let mut a = agent(&[]);
    let setup = |scenario: &str, agents: u64| {
        serde_json::json!({
            "t": "setup", "agent": 0, "agents": agents, "scenario": scenario,
            "targets": ["ws://127.0.0.1:9/ws"], "source_first": 0,
        })
        .to_string()
    };
    for (scenario, agents, expect) in [
        // Once: "memory allocation of 137438953440 bytes failed", SIGABRT.
        (
            "name = \"x\"\nconnections = 4294967295\n",
            1,
            "at most 16777216",
        ),
        // Valid for the scenario, far beyond one process's descriptors: refused before the
        // plan is built.
        ("name = \"x\"\nconnections = 16777216\n", 1, "descriptor"),
        (
            "name = \"x\"\nconnections = 16777216\n",
            4294967295,
            "at most 1024",
        ),
        (
            "name = \"x\"\nconnections = 2\nmeasure = \"500000000000years\"\n",
            1,
            "measure",
        ),
    ] {
        let mut c = control_conn(&a.addr, 60);
        let hello = exchange(&mut c, HELLO);
        assert!(hello.contains(r#""t":"hello""#), "{hello}");
        let reply = exchange(&mut c, &setup(scenario, agents));
        assert!(
            reply.contains("refused") && reply.contains(expect),
            "{scenario} over {agents} agents: {reply}"
        );
        // The agent closes the refused session, and is then free for the next coordinator.
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c, &mut rest);
        assert!(
            a.child.try_wait().expect("wait").is_none(),
            "the agent died on {scenario}"
        );
    }
    // Still serving.
    let mut c = control_conn(&a.addr, 60);
    assert!(exchange(&mut c, HELLO).contains(r#""t":"hello""#));
}

#[test]
fn a_silent_connection_does_not_delay_a_second_coordinator() {
    let a = agent(&[]);
    // Connects and says nothing (the agent gives it a few seconds to send its hello).
    let silent = control_conn(&a.addr, 60);
    let mut second = control_conn(&a.addr, 60);
    let reply = exchange(&mut second, HELLO);
    assert!(reply.contains(r#""t":"hello""#), "{reply}");
    // The second coordinator was answered while the silent one is still held: the agent did not
    // first wait it out (before, it served one connection at a time, hello included).
    silent.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 1];
    let still_open =
        matches!(silent.peek(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        still_open,
        "the silent connection was closed before the second coordinator was answered"
    );
    // A third coordinator while the second's session runs is told the agent is busy.
    let mut third = control_conn(&a.addr, 60);
    let reply = exchange(&mut third, HELLO);
    assert!(
        reply.contains("refused") && reply.contains("busy"),
        "{reply}"
    );
}

#[test]
fn an_agent_killed_mid_run_gives_partial_results_and_no_hang() {
    let _turn = serial();
    let srv = server();
    let mut agents: Vec<Started> = (0..3).map(|_| agent(&[])).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = scenario_file(dir.path());
    let out_root = dir.path().join("out");
    let list = agents
        .iter()
        .map(|a| a.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let target = format!("ws://{}/ws", srv.addr);
    let mut coord = chatbench()
        .args([
            "run",
            "--scenario",
            scenario.to_str().expect("path"),
            "--set",
            "measure=\"4s\"",
            "--target",
            &target,
            "--agents",
            &list,
            "--out",
            out_root.to_str().expect("path"),
            "--progress",
            "lines",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the coordinator");
    let stderr = coord.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.expect("stderr line");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("[measure") {
            break;
        }
    }
    assert!(
        seen.contains("[measure"),
        "the run never reached measure:\n{seen}"
    );
    // Kill agent 1 by its pid (SIGKILL: no goodbye).
    agents[1].child.kill().expect("kill agent 1");
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    // Nothing hangs: the coordinator ends on its own well within a minute.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = coord.try_wait().expect("wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = coord.kill();
            panic!("the coordinator hung after an agent died");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let rest = rest.join().expect("stderr reader").join("\n");
    assert_eq!(status.code(), Some(130), "partial run: {seen}{rest}");
    assert!(rest.contains("agent 1"), "the agent is named: {rest}");
    let s = summary(&only_run_dir(&out_root));
    check_schema(&s);
    assert_eq!(s["status"], "interrupted");
    assert_eq!(s["valid"], false);
    let d = &s["distributed"];
    assert_eq!(d["partial"], true, "{d:#}");
    let faults = d["faults"].as_array().expect("faults");
    assert_eq!(faults.len(), 1, "{d:#}");
    assert_eq!(faults[0]["agent"], 1);
    let reasons = s["invalid_reasons"].to_string();
    assert!(
        reasons.contains("agent 1") && reasons.contains("partial"),
        "{reasons}"
    );
    let a = d["agents"].as_array().expect("agents");
    assert_eq!(a[0]["complete"], true);
    assert_eq!(a[1]["complete"], false);
    assert_eq!(a[2]["complete"], true);
    // The lost agent sent no split by thread role: the fleet's sums the survivors'.
    assert!(a[1].get("cpu_cores_by_role").is_none(), "{:#}", a[1]);
    assert!(a[0]["cpu_cores_by_role"].is_object() && a[2]["threads_by_role"].is_object());
    assert_eq!(s["generator"]["by_role_agents"], 2, "{:#}", s["generator"]);
    // The survivors' own figures are still exact.
    assert_eq!(s["messages"]["lost"], 0, "{s:#}");
}

fn run_with_agents(agents: &str, target: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = scenario_file(dir.path());
    let mut args = vec![
        "run",
        "--scenario",
        scenario.to_str().expect("path"),
        "--target",
        target,
        "--agents",
        agents,
        "--out",
    ];
    let out_root = dir.path().join("out");
    args.push(out_root.to_str().expect("path"));
    args.extend_from_slice(extra);
    let out = chatbench().args(&args).output().expect("run");
    assert!(!out_root.exists(), "no results for a refused run");
    out
}

#[test]
fn agents_refuse_a_bad_token_a_target_off_their_allow_list_and_a_bad_listen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess\n").expect("token");
    let token_s = token.to_str().expect("path");

    // A coordinator without the token, and one with the wrong token.
    let a = agent(&["--token-file", token_s]);
    let out = run_with_agents(&a.addr, "ws://127.0.0.1:9/ws", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused") && err.contains("token"), "{err}");
    drop(a);
    let a = agent(&["--token-file", token_s]);
    let out = run_with_agents(
        &a.addr,
        "ws://127.0.0.1:9/ws",
        &["--agent-token-file", wrong.to_str().expect("path")],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    drop(a);

    // A target outside the allow-list.
    let a = agent(&["--allow-target", "10.0.0.0/8"]);
    let out = run_with_agents(&a.addr, "ws://127.0.0.1:9/ws", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("allow-list") && err.contains("10.0.0.0/8") && err.contains("127.0.0.1"),
        "{err}"
    );
    drop(a);

    // Off loopback without a token: refused before listening.
    let out = chatbench()
        .args(["agent", "--listen", "0.0.0.0:0"])
        .output()
        .expect("agent");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file"));
}

#[test]
fn a_control_version_mismatch_is_a_clear_error_on_both_sides() {
    use std::io::{Read, Write};
    // Agent side: a coordinator speaking v999.
    let mut child = chatbench()
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--once",
            "--allow-unauthenticated-loopback",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("address line");
    let addr = first
        .split_whitespace()
        .next()
        .expect("address")
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect to agent");
    s.write_all(b"{\"t\":\"hello\",\"version\":999,\"token\":null}\n")
        .expect("hello");
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).expect("reply");
    assert!(
        reply.contains("refused") && reply.contains("version mismatch") && reply.contains("v999"),
        "{reply}"
    );
    drop(s);
    // A refused hello is no session: a `--once` agent keeps waiting for its coordinator (so a
    // stranger who connects first cannot end it). Stop it to read what it said.
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the agent ended on a refused hello"
    );
    child.kill().expect("stop the agent");
    let _ = child.wait();
    let mut agent_err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut agent_err)
        .expect("agent stderr");
    assert!(agent_err.contains("version mismatch"), "{agent_err}");

    // Coordinator side: an "agent" that answers with v999.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake_addr = fake.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || {
        if let Ok((mut c, _)) = fake.accept() {
            let mut line = String::new();
            let _ = BufReader::new(&c).read_line(&mut line);
            let _ = c.write_all(b"{\"t\":\"hello\",\"version\":999,\"pid\":1,\"nofile\":1024}\n");
            line
        } else {
            String::new()
        }
    });
    let out = run_with_agents(&fake_addr, "ws://127.0.0.1:9/ws", &[]);
    let hello = server.join().expect("fake agent");
    assert!(hello.contains("\"hello\""), "{hello}");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("version mismatch") && err.contains("v999"),
        "{err}"
    );
}

/// Starts a coordinator over `agents` against `target` with lines progress on stderr, and
/// waits until it reports the measurement phase. Returns the child and its stderr so far.
fn coordinator_in_measure(
    agents: &str,
    target: &str,
    out_root: &Path,
    scenario: &Path,
) -> (Child, std::io::Lines<BufReader<std::process::ChildStderr>>) {
    let mut coord = chatbench()
        .args([
            "run",
            "--scenario",
            scenario.to_str().expect("path"),
            "--set",
            "measure=\"4s\"",
            "--target",
            target,
            "--agents",
            agents,
            "--out",
            out_root.to_str().expect("path"),
            "--progress",
            "lines",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the coordinator");
    let stderr = coord.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.expect("stderr line");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("[measure") {
            return (coord, lines);
        }
    }
    let _ = coord.kill();
    let _ = coord.wait();
    panic!("the run never reached measure:\n{seen}");
}

/// Waits (bounded) for a child to exit; a hang fails the test.
fn wait_bounded(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn agents_stop_their_load_when_the_coordinator_dies() {
    let _turn = serial();
    let srv = server();
    let a = agent(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = scenario_file(dir.path());
    let target = format!("ws://{}/ws", srv.addr);
    let (mut coord, _lines) =
        coordinator_in_measure(&a.addr, &target, &dir.path().join("out"), &scenario);
    assert_eq!(metric(&srv.addr, "chatbench_connections"), 120.0);
    coord.kill().expect("kill the coordinator");
    let _ = coord.wait();
    // The agent notices at once (end of stream) and closes its connections; the silence limit
    // (10 s) bounds it even without a FIN. Allow well beyond that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let open = metric(&srv.addr, "chatbench_connections");
        if open == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent still holds {open} connections after losing its coordinator"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // And it keeps serving: the next coordinator is welcome.
    let probe = std::net::TcpStream::connect(&a.addr);
    assert!(
        probe.is_ok(),
        "the agent went away instead of waiting for the next coordinator"
    );
}

#[test]
fn a_stalled_agent_is_named_and_the_run_ends() {
    let _turn = serial();
    let srv = server();
    let agents: Vec<Started> = (0..2).map(|_| agent(&[])).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = scenario_file(dir.path());
    let out_root = dir.path().join("out");
    let list = format!("{},{}", agents[0].addr, agents[1].addr);
    let target = format!("ws://{}/ws", srv.addr);
    let (mut coord, lines) = coordinator_in_measure(&list, &target, &out_root, &scenario);
    let pid = agents[1].child.id() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let status = wait_bounded(&mut coord, "the coordinator, after an agent stalled");
    // SAFETY: as above; let it run again so that dropping it can end it.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let rest = rest.join().expect("stderr").join("\n");
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains("agent 1") && rest.contains("stalled"),
        "{rest}"
    );
    let s = summary(&only_run_dir(&out_root));
    check_schema(&s);
    let faults = s["distributed"]["faults"].as_array().expect("faults");
    assert_eq!(faults.len(), 1, "{s:#}");
    assert_eq!(faults[0]["agent"], 1);
    assert!(faults[0]["what"]
        .as_str()
        .expect("what")
        .contains("stalled"));
    assert_eq!(s["distributed"]["agents"][0]["complete"], true);
}

#[test]
fn a_target_refusing_connections_counts_errors_per_agent_and_fails_clearly() {
    let _turn = serial();
    // Accepts and closes at once: every WebSocket handshake fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = scenario_file(dir.path());
    let out_root = dir.path().join("out");
    let target = format!("ws://{addr}/ws");
    let out = chatbench()
        .args([
            "run",
            "--scenario",
            scenario.to_str().expect("path"),
            "--target",
            &target,
            "--agents",
            "local:2",
            "--out",
            out_root.to_str().expect("path"),
            "--progress",
            "quiet",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED"), "{stdout}");
    let s = summary(&only_run_dir(&out_root));
    check_schema(&s);
    assert_eq!(s["status"], "failed");
    assert_eq!(s["connections"]["ready"], 0);
    let agents = s["distributed"]["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 2);
    for a in agents {
        let errors: u64 = a["connect_errors"]
            .as_object()
            .expect("errors")
            .values()
            .map(|v| v.as_u64().expect("count"))
            .sum();
        assert_eq!(Some(errors), a["planned"].as_u64(), "{a:#}");
    }
}

#[test]
fn auto_sizes_a_small_plan_to_one_local_agent() {
    let _turn = serial();
    let srv = server();
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = scenario_file(dir.path());
    let out_root = dir.path().join("out");
    let target = format!("ws://{}/ws", srv.addr);
    let out = chatbench()
        .args([
            "run",
            "--scenario",
            scenario.to_str().expect("path"),
            "--target",
            &target,
            "--agents",
            "auto",
            "--out",
            out_root.to_str().expect("path"),
            "--progress",
            "quiet",
        ])
        .output()
        .expect("run");
    let s = assert_finished(&out, &out_root);
    // 120 connections fit one process under any descriptor limit this test runs with.
    assert_eq!(s["generator"]["agents"], 1);
    assert_eq!(s["distributed"]["agents"].as_array().map(Vec::len), Some(1));
    assert_eq!(s["connections"]["ready"], 120);
    assert_eq!(s["messages"]["lost"], 0);
    assert_eq!(s["messages"]["delivered"], s["messages"]["expected"]);
}

/// Runs the coordinator in this process (for its test seams) over `agents` against `srv`,
/// with the server's pid sampled. Returns the summary.
fn coordinate_in_process(
    srv: &Started,
    agents: &[Started],
    out_root: &Path,
    measure: std::time::Duration,
    sample_delay: std::time::Duration,
) -> serde_json::Value {
    use chatbench_loadgen::coordinator::{run, AgentsSpec, CoordinatorOptions};
    use chatbench_loadgen::run::RunOptions;
    let mut scenario =
        chatbench_model::scenario::Scenario::parse(SCENARIO, "multi").expect("scenario");
    scenario.measure = measure;
    let target_url = format!("ws://{}/ws", srv.addr);
    let (_interrupt, rx) = tokio::sync::watch::channel(false);
    let opts = CoordinatorOptions {
        run: RunOptions {
            scenario,
            overrides: Vec::new(),
            target_url: target_url.clone(),
            target_info: chatbench_model::results::TargetInfo {
                url: target_url,
                arch: Some("task-per-conn".into()),
                pid: Some(srv.child.id()),
                pids: Vec::new(),
                settings: Default::default(),
                cpu_affinity: None,
                targets: Vec::new(),
                target_policy: None,
            },
            out_root: out_root.to_path_buf(),
            progress: chatbench_loadgen::progress::ProgressMode::Quiet,
            interrupt: rx,
            cluster: None,
            live: None,
        },
        agents: AgentsSpec::Remote(agents.iter().map(|a| a.addr.clone()).collect()),
        token: None,
        exe: PathBuf::new(),
        sample_delay,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime
        .block_on(run(opts))
        .expect("the run ends with results");
    summary(&report.dir)
}

#[test]
fn a_slow_reading_of_the_servers_neither_silences_heartbeats_nor_stops_agents() {
    let _turn = serial();
    let srv = server();
    let agents: Vec<Started> = (0..2).map(|_| agent(&[])).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    // Every reading of the server's /proc after the first takes 11 s: longer than an agent
    // waits for a heartbeat (10 s). On the control loop, that silenced the heartbeats once. The
    // agents' warmup + window + cooldown (11.5 s) outlasts their patience.
    let s = coordinate_in_process(
        &srv,
        &agents,
        dir.path(),
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(11),
    );
    check_schema(&s);
    let d = &s["distributed"];
    assert_eq!(d["partial"], false, "no agent stopped: {d:#}");
    assert_eq!(d["faults"].as_array().map(Vec::len), Some(0), "{d:#}");
    let a = d["agents"].as_array().expect("agents");
    assert!(a.iter().all(|a| a["complete"] == true), "{d:#}");
    assert_eq!(s["status"], "complete", "{s:#}");
    assert_eq!(s["connections"]["ready"], 120);
    assert_eq!(s["messages"]["lost"], 0);
    assert_eq!(s["messages"]["delivered"], s["messages"]["expected"]);
    // The readings that came too late are left out, and a note says so.
    assert!(
        s["target_resources"]["cpu_cores_measure"].is_null(),
        "{s:#}"
    );
    let notes = s["notes"].to_string();
    assert!(notes.contains("reading /proc was slow"), "{notes}");
}

#[test]
fn agents_report_their_reconnects_and_the_coordinator_adds_them() {
    let _turn = serial();
    // A server at a port chosen here, so that it can come back at the same address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let serve = |what: &str| {
        let s = start(&["serve", "--arch", "task-per-conn", "--listen", &listen]);
        assert_eq!(s.addr, listen, "{what}");
        s
    };
    let first = serve("first server");
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("reconnect.toml");
    std::fs::write(
        &scenario,
        format!("{SCENARIO}\n[reconnect]\nenabled = true\ninitial_backoff = \"50ms\"\nmax_backoff = \"200ms\"\nmax_attempts = 40\ndeadline = \"10s\"\n"),
    )
    .expect("write scenario");
    let out_root = dir.path().join("out");
    let target = format!("ws://{listen}/ws");
    let (mut coord, lines) = coordinator_in_measure("local:2", &target, &out_root, &scenario);
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    // The server goes away (SIGKILL by its pid) and comes back at the same address: every one
    // of the 120 connections is lost and reconnects.
    drop(first);
    let _second = serve("the server again");
    let status = wait_bounded(&mut coord, "the coordinator");
    let rest = rest.join().expect("stderr reader").join("\n");
    let s = summary(&only_run_dir(&out_root));
    check_schema(&s);
    assert!(
        status.code().is_some_and(|c| c != 3),
        "the run finished: {status:?}\n{rest}"
    );
    assert_eq!(s["distributed"]["partial"], false, "{s:#}");
    let r = &s["connections"]["reconnect"];
    assert_eq!(r["lost"], 120, "every connection was lost: {r:#}");
    assert_eq!(r["reconnected"], 120, "and came back: {r:#}");
    assert_eq!(r["failed"], 0, "{r:#}");
    assert!(r["attempts"].as_u64() >= Some(120), "{r:#}");
    assert_eq!(r["time_us"]["count"], 120, "one reconnect time each: {r:#}");
    let csv = std::fs::read_to_string(only_run_dir(&out_root).join("timeseries.csv"))
        .expect("timeseries.csv");
    assert!(csv.contains("reconnects") && csv.contains("reconnect_failures"));
}

/// One `GET /metrics` of the run's live endpoint; `None` once it is gone (the run ended).
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200 OK").then_some(out)
}

/// The value of the sample line `name` (with its labels, if any) in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `--metrics-listen` with `--agents`: the coordinator's endpoint exposes the fleet's counters
/// (every agent's, summed), not its own (it sends nothing). The endpoint ends with the run, so
/// the last scrape is compared with summary.json: a long cooldown (senders stopped) lets that
/// scrape see every agent's final send count exactly.
#[test]
fn metrics_listen_exposes_the_fleets_counters_during_an_agents_run() {
    let _turn = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = scenario_file(dir.path());
    let out_root = dir.path().join("out");
    let mut child = chatbench()
        .args(["run", "--serve", "task-per-conn", "--scenario"])
        .arg(&scenario)
        .args(["--set", "cooldown=\"3s\"", "--agents", "local:2", "--out"])
        .arg(&out_root)
        .args(["--progress", "quiet", "--metrics-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the coordinator");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first line");
    let addr = first
        .trim()
        .strip_prefix("metrics: http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics URL first: {first:?}"))
        .to_string();
    // Scrape until the run has ended; keep the last scrape of a second that counted sends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut last: Option<String> = None;
    let mut measure_seen = false;
    while child.try_wait().expect("try_wait").is_none() {
        assert!(std::time::Instant::now() < deadline, "the run hung");
        if let Some(t) = scrape(&addr) {
            measure_seen |= t.contains("{phase=\"measure\"}");
            if sample(&t, "chatbench_run_messages_sent_total").is_some_and(|v| v > 0.0) {
                last = Some(t);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("wait");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
    let s = assert_finished(&out, &out_root);
    assert!(measure_seen, "no scrape during the measurement window");
    let last = last.expect("no scrape counted a send");
    let agents = s["distributed"]["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 2);
    let live = last.lines().find_map(|l| {
        l.strip_prefix("chatbench_run_agents_live{")?
            .split(' ')
            .nth(1)
    });
    assert_eq!(
        live,
        Some("2"),
        "both agents live in the last scrape:\n{last}"
    );
    // Every agent sends (3 senders a room, rooms spread over the agents): the counters are the
    // fleet's only if they exceed what any one agent sent.
    let sent_all: Vec<u64> = agents
        .iter()
        .map(|a| a["sent_all"].as_u64().expect("sent_all"))
        .collect();
    assert!(sent_all.iter().all(|&n| n > 0), "{agents:?}");
    let sent = sample(&last, "chatbench_run_messages_sent_total").expect("sent_total") as u64;
    assert_eq!(
        sent,
        sent_all.iter().sum::<u64>(),
        "senders stopped seconds before the last scrape: its count is the fleet's final one\n{last}"
    );
    // Deliveries: every agent's receivers, up to the final count (the endpoint ends with the
    // run, before the agents' last deliveries can be published).
    let delivered =
        sample(&last, "chatbench_run_messages_delivered_total").expect("delivered_total") as u64;
    let delivered_all = sum(agents, "delivered_all");
    assert!(
        delivered > 0 && delivered <= delivered_all,
        "{delivered} of {delivered_all}:\n{last}"
    );
    let max_one = agents
        .iter()
        .map(|a| a["delivered_all"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    assert!(
        delivered > max_one,
        "only one agent's deliveries: {delivered} <= {max_one}\n{last}"
    );
}
