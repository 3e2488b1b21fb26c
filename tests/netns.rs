//! Several hosts on one machine: network namespaces (`ip netns`, veth, a bridge) that this test
//! creates itself — one for the target server, three for agents, one for the coordinator —
//! each with its own 10.77.0.x address on a private bridge. A distributed run across them must
//! deliver exactly. Agents listen off loopback, so they need the shared token, and allow only
//! the target's address. The namespaces are removed even when the test fails (a drop guard).
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and `ip` from iproute2; without them it fails,
//! naming what is missing (`scripts/test.sh` installs iproute2).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn sh(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `ip` ({e}): install iproute2 (apt-get install iproute2)")
    })
}

fn ip(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces of one test, deleted on drop (which also removes their interfaces).
struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = sh(&["netns", "del", n]);
        }
    }
}

/// A process started inside a namespace, killed by pid when dropped.
struct InNs {
    child: Child,
    addr: String,
}

impl Drop for InNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_in(ns: &str, args: &[&str]) -> InNs {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_chatbench")])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chatbench in a namespace");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line.split_whitespace().next().unwrap_or("").to_string();
    assert!(
        !addr.is_empty(),
        "chatbench {args:?} in {ns} printed no address"
    );
    InNs { child, addr }
}

fn preconditions() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the network-namespace test needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN to create namespaces and veth pairs); run the tests as root (scripts/test.sh)"
    );
    let v = sh(&["-V"]);
    assert!(v.status.success(), "`ip -V` failed: install iproute2");
}

#[test]
fn three_agent_hosts_and_a_target_host_deliver_exactly() {
    preconditions();
    let tag = format!("cb{}", std::process::id() % 10_000_000);
    let t = format!("{tag}t");
    let c = format!("{tag}c");
    let agents: Vec<String> = (0..3).map(|i| format!("{tag}a{i}")).collect();
    let mut all = vec![t.clone()];
    all.extend(agents.iter().cloned());
    all.push(c.clone());
    let mut guard = Namespaces { names: Vec::new() };
    for n in &all {
        ip(&["netns", "add", n]);
        guard.names.push(n.clone());
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    // The target host holds the bridge; every other host hangs off it with a veth pair.
    ip(&["-n", &t, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &t, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
    ip(&["-n", &t, "link", "set", "br0", "up"]);
    let hosts: Vec<(&String, String)> = agents
        .iter()
        .enumerate()
        .map(|(i, n)| (n, format!("10.77.0.{}", 11 + i)))
        .chain(std::iter::once((&c, "10.77.0.2".to_string())))
        .collect();
    for (i, (n, addr)) in hosts.iter().enumerate() {
        let host_end = format!("{tag}v{i}");
        let peer = format!("{tag}p{i}");
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &host_end, "netns", n]);
        ip(&["link", "set", &peer, "netns", &t]);
        ip(&["-n", &t, "link", "set", &peer, "master", "br0"]);
        ip(&["-n", &t, "link", "set", &peer, "up"]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &host_end,
        ]);
        ip(&["-n", n, "link", "set", &host_end, "up"]);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "netns-secret\n").expect("token");
    let token = token.to_str().expect("path").to_string();
    let server = start_in(
        &t,
        &[
            "serve",
            "--arch",
            "task-per-conn",
            "--listen",
            "10.77.0.1:0",
        ],
    );
    let agent_procs: Vec<InNs> = hosts
        .iter()
        .take(3)
        .map(|(n, addr)| {
            start_in(
                n,
                &[
                    "agent",
                    "--listen",
                    &format!("{addr}:7000"),
                    "--token-file",
                    &token,
                    "--allow-target",
                    "10.77.0.1",
                ],
            )
        })
        .collect();
    let list = agent_procs
        .iter()
        .map(|a| a.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let scenario = dir.path().join("netns.toml");
    std::fs::write(
        &scenario,
        "name = \"netns\"\nconnections = 150\nrooms = 5\nmembers_per_room = 30\n\
         senders_per_room = 3\nrate_per_sender = 10.0\nramp_rate = 2000.0\nsettle = \"500ms\"\n\
         warmup = \"500ms\"\nmeasure = \"2s\"\ncooldown = \"1s\"\n",
    )
    .expect("scenario");
    let out_root = dir.path().join("out");
    let out = Command::new("ip")
        .args(["netns", "exec", &c, env!("CARGO_BIN_EXE_chatbench")])
        .args([
            "run",
            "--scenario",
            scenario.to_str().expect("path"),
            "--target",
            &format!("ws://{}/ws", server.addr),
            "--agents",
            &list,
            "--agent-token-file",
            &token,
            "--out",
            out_root.to_str().expect("path"),
            "--progress",
            "quiet",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("coordinator");
    let text = format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(matches!(out.status.code(), Some(0) | Some(4)), "{text}");
    let run_dir = std::fs::read_dir(&out_root)
        .expect("results")
        .map(|e| e.expect("entry").path())
        .find(|p| p.is_dir())
        .expect("a run folder");
    let s: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(&run_dir).join("summary.json")).expect("summary"),
    )
    .expect("json");
    assert_eq!(s["status"], "complete", "{s:#}");
    assert_eq!(s["connections"]["ready"], 150);
    assert!(
        s["generator"]["source_addrs"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "no loopback source addresses off loopback"
    );
    let m = &s["messages"];
    assert!(m["sent"].as_u64().expect("sent") > 0);
    assert_eq!(m["lost"], 0, "{m:#}");
    assert_eq!(m["delivered"], m["expected"], "{m:#}");
    let agents = s["distributed"]["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 3);
    let sent_all: u64 = agents
        .iter()
        .map(|a| a["sent_all"].as_u64().expect("n"))
        .sum();
    let delivered_all: u64 = agents
        .iter()
        .map(|a| a["delivered_all"].as_u64().expect("n"))
        .sum();
    assert_eq!(
        delivered_all,
        sent_all * 29,
        "every delivery across the hosts"
    );
    for (a, (_, addr)) in agents.iter().zip(&hosts) {
        assert_eq!(a["ready"], a["planned"], "{a:#}");
        assert!(a["address"]
            .as_str()
            .expect("address")
            .starts_with(addr.as_str()));
    }
    drop(agent_procs);
    drop(server);
    drop(guard);
    let left = sh(&["netns", "list"]);
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&tag),
        "namespaces left behind"
    );
}
