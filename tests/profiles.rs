//! End-to-end tests of the protocol profiles: the real `chatbench run` binary drives real
//! third-party servers with the matching profile and the tests check exact delivery counts and
//! zero loss in the results.
//!
//! - the Node.js `ws` peer (`servers/peers/ws-room.js`) with the `chatbench` profile (its `/ws`
//!   path), the `echo` profile (`/echo`) and the `template` profile (its home-grown `/chat`
//!   protocol);
//! - the Socket.IO peer (`servers/peers/socketio-room.js`) with the `socketio` profile;
//! - any server command (`--serve-cmd`), here the `ws` peer's echo path;
//! - the `phoenix` profile against a scripted fake Phoenix server in this file that answers with
//!   the frames of a conversation recorded from the published Phoenix Channels v2 protocol (no
//!   Phoenix server can be installed here; `docs/profiles.md` says so);
//! - the Elixir peer (`servers/peers/elixir/`, an OTP application speaking Phoenix Channels v2
//!   on `/socket/websocket`) with the `phoenix` profile, and with `chatbench` on `/ws`.
//!
//! The Node peers need Node.js and `npm ci --prefix servers/peers` (scripts/test.sh does both);
//! the Elixir peer needs `elixir`, `erlang-cowlib` and `erlang-jiffy` (scripts/test.sh installs
//! them). Without them these tests fail and say what to install.

mod common;
use common::*;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn chatbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .current_dir(root())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chatbench")
}

/// Fails (never skips) when the Node peers cannot run, naming what to install.
fn require_node_peers() {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        node,
        "these tests need Node.js: install it (Debian: apt-get install nodejs npm), then run \
         npm ci --prefix servers/peers (scripts/test.sh does both)"
    );
    let modules = root().join("servers/peers/node_modules");
    assert!(
        modules.join("ws").is_dir() && modules.join("socket.io").is_dir(),
        "{} lacks ws or socket.io: run npm ci --prefix servers/peers (scripts/test.sh does it)",
        modules.display()
    );
}

/// Fails (never skips) when the Elixir peer cannot run, naming what to install.
fn require_elixir() {
    let elixir = Command::new("elixir")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        elixir,
        "these tests need Elixir with cowlib and jiffy: apt-get install elixir erlang-cowlib \
         erlang-jiffy (scripts/test.sh does it)"
    );
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

/// Runs a scenario and returns its summary; exit code 4 (generator-bound on a busy machine)
/// is accepted because the tests assert counts, not timing.
fn run(extra: &[&str], scenario: &str) -> serde_json::Value {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out_path = out_dir.path().to_str().expect("utf-8 path").to_owned();
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--scenario", scenario, "--out", &out_path]);
    args.extend_from_slice(&["--progress", "quiet"]);
    let out = {
        let _turn = serial();
        chatbench(&args)
    };
    assert!(
        matches!(out.status.code(), Some(0 | 4)),
        "run failed: {}",
        text(&out)
    );
    let dir = only_run_dir(out_dir.path());
    let bytes = std::fs::read(dir.join("summary.json")).expect("summary.json");
    serde_json::from_slice(&bytes).expect("summary.json is JSON")
}

/// Every connection ready, every expected delivery made, nothing lost, repeated or unparsed.
fn assert_exact(s: &serde_json::Value, fanout: u64) {
    assert_eq!(s["status"], "complete", "{s:#}");
    let c = &s["connections"];
    assert_eq!(c["ready"], c["planned"], "every connection ready: {c:#}");
    let m = &s["messages"];
    let sent = m["sent"].as_u64().expect("sent");
    assert!(sent > 0, "messages were sent: {m:#}");
    let expected = m["expected"].as_u64().expect("expected");
    assert!(expected > 0, "{m:#}");
    // Window sends × fan-out: the window's sent count is not in the summary, so check the
    // ratio holds for the expected figure and that all of it arrived.
    assert_eq!(
        expected % fanout,
        0,
        "expected is a multiple of {fanout}: {m:#}"
    );
    assert_eq!(m["delivered"], m["expected"], "{m:#}");
    assert_eq!(m["lost"], 0, "{m:#}");
    assert_eq!(m["extra"], 0, "{m:#}");
    assert_eq!(m["duplicated"], 0, "{m:#}");
    assert_eq!(m["bad_frames"], 0, "{m:#}");
    assert_eq!(m["server_errors"], serde_json::json!({}), "{m:#}");
    assert_eq!(
        s["latency_us"]["count"], m["delivered"],
        "one latency sample per delivery"
    );
}

fn assert_peer_sampled(s: &serde_json::Value, peer: &str) {
    assert_eq!(s["target"]["arch"], peer, "{:#}", s["target"]);
    assert!(s["target"]["pid"].is_u64(), "{:#}", s["target"]);
    assert!(
        s["target_resources"]["memory_per_conn"].is_object(),
        "the peer's memory was sampled: {:#}",
        s["target_resources"]
    );
}

#[test]
fn node_ws_peer_with_the_chatbench_profile() {
    require_node_peers();
    let s = run(
        &["--serve-peer", "node-ws"],
        "scenarios/profiles/node-ws.toml",
    );
    assert_exact(&s, 19);
    assert_peer_sampled(&s, "node-ws");
    assert!(s["target"]["url"]
        .as_str()
        .is_some_and(|u| u.ends_with("/ws")));
}

#[test]
fn node_ws_echo_with_the_echo_profile() {
    require_node_peers();
    let s = run(&["--serve-peer", "node-ws"], "scenarios/profiles/echo.toml");
    assert_exact(&s, 1);
    // Every message comes back once: expected = sent in the window.
    assert!(s["target"]["url"]
        .as_str()
        .is_some_and(|u| u.ends_with("/echo")));
}

#[test]
fn node_ws_home_grown_protocol_with_the_template_profile() {
    require_node_peers();
    let s = run(
        &["--serve-peer", "node-ws"],
        "scenarios/profiles/template.toml",
    );
    assert_exact(&s, 19);
    assert!(s["target"]["url"]
        .as_str()
        .is_some_and(|u| u.ends_with("/chat")));
}

#[test]
fn socketio_peer_with_the_socketio_profile() {
    require_node_peers();
    let s = run(
        &["--serve-peer", "socketio"],
        "scenarios/profiles/socketio.toml",
    );
    assert_exact(&s, 19);
    assert_peer_sampled(&s, "socketio");
}

#[test]
fn any_server_command_with_serve_cmd() {
    require_node_peers();
    let s = run(
        &[
            "--serve-cmd",
            "node servers/peers/ws-room.js --listen 127.0.0.1:0",
            "--serve-path",
            "/echo",
        ],
        "scenarios/profiles/echo.toml",
    );
    assert_exact(&s, 1);
    assert_eq!(s["target"]["arch"], serde_json::Value::Null);
    assert!(s["target"]["settings"]["command"]
        .as_str()
        .is_some_and(|c| c.contains("ws-room.js")));
    assert!(s["target_resources"]["memory_per_conn"].is_object());
}

#[test]
fn a_peer_that_does_not_speak_the_protocol_is_a_usage_error() {
    let out = chatbench(&[
        "run",
        "--serve-peer",
        "socketio",
        "--scenario",
        "scenarios/profiles/node-ws.toml",
        "--out",
        "/nonexistent/never-written",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("socketio does not speak protocol = \"chatbench\""),
        "{err}"
    );
}

#[test]
fn a_bad_profile_option_is_a_usage_error_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\nconnections = 4\nprotocol = \"socketio\"\n[profile]\nmesage_event = \"x\"\n",
    )
    .expect("write");
    let out = chatbench(&[
        "run",
        "--target",
        "ws://127.0.0.1:9/",
        "--scenario",
        path.to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5") && err.contains("did you mean \"message_event\""),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Phoenix: a scripted fake server speaking the recorded conversation.

/// A Phoenix Channels v2 conversation, as the published protocol has it (phoenix.js with
/// `vsn=2.0.0` and a channel whose `handle_in("new_msg", …)` calls `broadcast_from!` and
/// answers `{:noreply, socket}`), ending with the join of a topic no channel matches: `>` client
/// to server, `<` server to the client, `*` server to the topic's other members.
const RECORDED: &[(&str, &str)] = &[
    (">", r#"["3","3","room:lobby","phx_join",{}]"#),
    (
        "<",
        r#"["3","3","room:lobby","phx_reply",{"response":{},"status":"ok"}]"#,
    ),
    (">", r#"[null,"4","phoenix","heartbeat",{}]"#),
    (
        "<",
        r#"[null,"4","phoenix","phx_reply",{"response":{},"status":"ok"}]"#,
    ),
    (">", r#"["3","5","room:lobby","new_msg",{"body":"hi"}]"#),
    ("*", r#"[null,null,"room:lobby","new_msg",{"body":"hi"}]"#),
    (">", r#"["6","6","nope:x","phx_join",{}]"#),
    (
        "<",
        r#"["6","6","nope:x","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#,
    ),
];

/// The members of each topic: connection id and its outbound queue.
type Topics = HashMap<String, Vec<(u64, tokio::sync::mpsc::Sender<String>)>>;

/// What the fake server saw.
#[derive(Default)]
struct Hub {
    topics: Mutex<Topics>,
    joins: AtomicU64,
    refused: AtomicU64,
    heartbeats: AtomicU64,
    pushes: AtomicU64,
    unexpected: AtomicU64,
    dropped: AtomicU64,
    paths: Mutex<Vec<String>>,
}

/// The server's answer to one client frame, built from the recorded frames' shapes: the reply
/// (to the sender) and the broadcast (to the topic's other members).
fn phoenix_answer(hub: &Hub, frame: &str) -> (Option<String>, Option<(String, String)>) {
    let Ok(serde_json::Value::Array(v)) = serde_json::from_str::<serde_json::Value>(frame) else {
        hub.unexpected.fetch_add(1, Ordering::Relaxed);
        return (None, None);
    };
    if v.len() != 5 {
        hub.unexpected.fetch_add(1, Ordering::Relaxed);
        return (None, None);
    }
    let (join_ref, reference, topic, event, payload) = (&v[0], &v[1], &v[2], &v[3], &v[4]);
    let ok_reply = || {
        format!(
            "[{join_ref},{reference},{topic},\"phx_reply\",{{\"response\":{{}},\"status\":\"ok\"}}]"
        )
    };
    match (topic.as_str(), event.as_str()) {
        (Some("phoenix"), Some("heartbeat")) => {
            hub.heartbeats.fetch_add(1, Ordering::Relaxed);
            (Some(ok_reply()), None)
        }
        (Some(t), Some("phx_join")) if t.starts_with("room:") => {
            hub.joins.fetch_add(1, Ordering::Relaxed);
            (Some(ok_reply()), None)
        }
        // What Phoenix answers a join of a topic no channel matches.
        (Some(_), Some("phx_join")) => {
            hub.refused.fetch_add(1, Ordering::Relaxed);
            let reply = format!(
                "[{join_ref},{reference},{topic},\"phx_reply\",{{\"response\":{{\"reason\":\"unmatched topic\"}},\"status\":\"error\"}}]"
            );
            (Some(reply), None)
        }
        (Some(t), Some("new_msg")) if t.starts_with("room:") => {
            hub.pushes.fetch_add(1, Ordering::Relaxed);
            let out = format!("[null,null,{topic},\"new_msg\",{payload}]");
            (None, Some((t.to_owned(), out)))
        }
        _ => {
            hub.unexpected.fetch_add(1, Ordering::Relaxed);
            (None, None)
        }
    }
}

// The handshake callback's error type is tungstenite's HTTP response, as its API requires.
#[allow(clippy::result_large_err)]
async fn phoenix_conn(hub: Arc<Hub>, id: u64, stream: tokio::net::TcpStream) {
    let paths = hub.clone();
    let callback = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
        if let Ok(mut p) = paths.paths.lock() {
            if p.len() < 4 {
                p.push(req.uri().to_string());
            }
        }
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    // Bounded outbound queue; a full queue drops and counts (the test asserts none).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4096);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(Message::text(frame)).await.is_err() {
                break;
            }
        }
    });
    let mut joined: Vec<String> = Vec::new();
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else { continue };
        let (reply, broadcast) = phoenix_answer(&hub, &t);
        if let Some(r) = reply {
            if t.contains("\"phx_join\"") && r.contains("\"status\":\"ok\"") {
                if let Some(topic) = serde_json::from_str::<serde_json::Value>(&t)
                    .ok()
                    .and_then(|v| v.get(2).and_then(|t| t.as_str()).map(str::to_owned))
                {
                    if let Ok(mut topics) = hub.topics.lock() {
                        topics
                            .entry(topic.clone())
                            .or_default()
                            .push((id, tx.clone()));
                    }
                    joined.push(topic);
                }
            }
            if tx.try_send(r).is_err() {
                hub.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some((topic, frame)) = broadcast {
            let members: Vec<_> = hub
                .topics
                .lock()
                .map(|t| t.get(&topic).cloned().unwrap_or_default())
                .unwrap_or_default();
            for (other, q) in members {
                if other != id && q.try_send(frame.clone()).is_err() {
                    hub.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if let Ok(mut topics) = hub.topics.lock() {
        for t in joined {
            if let Some(m) = topics.get_mut(&t) {
                m.retain(|(i, _)| *i != id);
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Starts the fake Phoenix server on 127.0.0.1 port 0 in its own runtime thread.
fn start_fake_phoenix() -> (std::net::SocketAddr, Arc<Hub>) {
    let hub = Arc::new(Hub::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let h = hub.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let mut id = 0;
            while let Ok((s, _)) = listener.accept().await {
                id += 1;
                tokio::spawn(phoenix_conn(h.clone(), id, s));
            }
        });
    });
    (addr, hub)
}

#[test]
fn fake_phoenix_server_answers_the_recorded_conversation() {
    let (addr, _hub) = start_fake_phoenix();
    play_recorded(addr);
}

/// The Elixir peer answers the recorded Phoenix conversation frame for frame, byte for byte.
#[test]
fn elixir_peer_answers_the_recorded_phoenix_conversation() {
    require_elixir();
    let peers = root().join("servers/peers");
    let (program, args) = chatbench_harness::peers::Peer::Elixir
        .command_with(&peers, &[], &[])
        .unwrap_or_else(|e| panic!("cannot start the elixir peer: {e}"));
    let server = chatbench_harness::launcher::ServerChild::start_command(&program, &args, &[])
        .unwrap_or_else(|e| panic!("the elixir peer did not start: {e}"));
    play_recorded(server.addr);
    let (how, tail) = server.stop(std::time::Duration::from_secs(5));
    assert!(
        matches!(how, chatbench_harness::launcher::StopOutcome::Terminated(_)),
        "{how}\n{tail}"
    );
}

/// Plays [`RECORDED`] against the server at `addr`: client `a` sends the `>` frames and must
/// receive the `<` frames exactly; client `b`, joined first, must receive the `*` frames.
fn play_recorded(addr: std::net::SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let conversation = async {
        let url = format!("ws://{addr}/socket/websocket?vsn=2.0.0");
        let (mut a, _) = tokio_tungstenite::connect_async(&url).await.expect("a");
        let (mut b, _) = tokio_tungstenite::connect_async(&url).await.expect("b");
        // b joins the lobby too, so that it is the "other member" of the broadcast.
        b.send(Message::text(RECORDED[0].1)).await.expect("b join");
        let _ = b.next().await;
        for (dir, frame) in RECORDED {
            match *dir {
                ">" => a.send(Message::text(*frame)).await.expect("send"),
                "<" => {
                    let got = a.next().await.expect("frame").expect("ok");
                    assert_eq!(got.to_text().expect("text"), *frame);
                }
                _ => {
                    let got = b.next().await.expect("frame").expect("ok");
                    assert_eq!(got.to_text().expect("text"), *frame);
                }
            }
        }
    };
    // A server that does not answer fails the test instead of hanging it.
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(30), conversation)
            .await
            .expect("the recorded conversation finished within 30 s")
    });
}

#[test]
fn phoenix_profile_against_the_recorded_protocol() {
    let (addr, hub) = start_fake_phoenix();
    let url = format!("ws://{addr}");
    let s = run(&["--target", &url], "scenarios/profiles/phoenix.toml");
    assert_exact(&s, 19);
    let paths = hub.paths.lock().expect("paths").clone();
    assert!(
        paths.iter().all(|p| p == "/socket/websocket?vsn=2.0.0"),
        "{paths:?}"
    );
    assert_eq!(hub.joins.load(Ordering::Relaxed), 200);
    assert_eq!(hub.unexpected.load(Ordering::Relaxed), 0);
    assert_eq!(hub.dropped.load(Ordering::Relaxed), 0);
    // heartbeat_interval = "1s" and the run lasts several seconds: every connection beat.
    assert!(
        hub.heartbeats.load(Ordering::Relaxed) >= 200,
        "heartbeats: {}",
        hub.heartbeats.load(Ordering::Relaxed)
    );
    assert!(hub.pushes.load(Ordering::Relaxed) > 0);
}

/// The `phoenix` profile against a real BEAM server: joins, heartbeats and `broadcast_from`
/// semantics answered by the Elixir peer, every message delivered exactly once to the 19 other
/// members, none back to its sender (that would be `extra`), no `phx_reply` error.
#[test]
fn elixir_peer_with_the_phoenix_profile() {
    require_elixir();
    let s = run(
        &["--serve-peer", "elixir"],
        "scenarios/profiles/phoenix.toml",
    );
    assert_exact(&s, 19);
    assert_peer_sampled(&s, "elixir");
    assert!(
        s["target"]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/socket/websocket")),
        "{:#}",
        s["target"]
    );
}

/// The same over `elixir-cluster`: 3 nodes, the clients spread over them (policy `span`), so
/// most deliveries cross nodes; still every message exactly once to the 19 others.
#[test]
fn elixir_cluster_with_the_phoenix_profile() {
    require_elixir();
    let s = run(
        &["--serve-peer", "elixir-cluster", "--nodes", "3"],
        "scenarios/profiles/phoenix.toml",
    );
    assert_exact(&s, 19);
    assert_peer_sampled(&s, "elixir-cluster");
    let url = s["target"]["url"].as_str().expect("url");
    assert_eq!(url.split(',').count(), 3, "{url}");
    assert_eq!(
        s["target"]["pids"].as_array().map(Vec::len),
        Some(3),
        "{:#}",
        s["target"]
    );
}

#[test]
fn elixir_peer_with_the_chatbench_profile() {
    require_elixir();
    let s = run(
        &["--serve-peer", "elixir"],
        "scenarios/profiles/node-ws.toml",
    );
    assert_exact(&s, 19);
    assert_peer_sampled(&s, "elixir");
}

#[test]
fn a_refused_phoenix_join_on_the_elixir_peer_is_a_counted_connect_error() {
    require_elixir();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = refusal_scenario(
        dir.path(),
        "protocol = \"phoenix\"\n[profile]\ntopic_prefix = \"nope:\"\n",
    );
    assert_all_refused(&["--serve-peer", "elixir"], &path, "phx_join_error");
}

/// A short scenario for the refusal tests: `extra` is appended (protocol and `[profile]`).
fn refusal_scenario(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("refused.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"refused\"\nconnections = 20\nrooms = 2\nmembers_per_room = 10\n\
             settle = \"1s\"\nwarmup = \"1s\"\nmeasure = \"1s\"\ncooldown = \"0s\"\n\
             connect_timeout = \"5s\"\n{extra}"
        ),
    )
    .expect("write scenario");
    path
}

/// Runs a scenario whose every connection the server refuses: exit 3, and the connect errors
/// carry the profile's label.
fn assert_all_refused(extra: &[&str], scenario: &Path, label: &str) {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    let scenario = scenario.to_str().expect("utf-8 path");
    let out_path = out_dir.path().to_str().expect("utf-8 path");
    args.extend_from_slice(&[
        "--scenario",
        scenario,
        "--out",
        out_path,
        "--progress",
        "quiet",
    ]);
    let out = {
        let _turn = serial();
        chatbench(&args)
    };
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let dir = only_run_dir(out_dir.path());
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary"))
            .expect("json");
    assert_eq!(s["connections"]["ready"], 0, "{:#}", s["connections"]);
    assert_eq!(
        s["connections"]["errors"][label], 20,
        "{:#}",
        s["connections"]
    );
}

#[test]
fn a_refused_socketio_namespace_is_a_counted_connect_error() {
    require_node_peers();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = refusal_scenario(
        dir.path(),
        "protocol = \"socketio\"\n[profile]\nnamespace = \"/nope\"\n",
    );
    assert_all_refused(
        &["--serve-peer", "socketio"],
        &path,
        "socketio_connect_error",
    );
}

#[test]
fn a_refused_phoenix_join_is_a_counted_connect_error() {
    let (addr, hub) = start_fake_phoenix();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = refusal_scenario(
        dir.path(),
        "protocol = \"phoenix\"\n[profile]\ntopic_prefix = \"nope:\"\n",
    );
    let url = format!("ws://{addr}");
    assert_all_refused(&["--target", &url], &path, "phx_join_error");
    assert_eq!(hub.refused.load(Ordering::Relaxed), 20);
}

/// `/metrics` of a peer at `addr` (one plain HTTP/1.1 request).
fn peer_metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request /metrics");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read /metrics");
    out
}

/// The value of the sample named exactly `name` in a metrics text (0 when absent).
fn peer_sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The Node `ws` peer's slow-consumer rule, as chatbench's own servers have it (issue 19 item 3):
/// a member that joins a room and never reads while 60 KB messages flow holds at most
/// `--outbound-queue-bytes` in the peer, the refused frames are counted, and after
/// `--slow-consumer-grace` with nothing written to it it is disconnected (counted) and its
/// bytes released; the member that reads gets every message.
#[test]
fn node_ws_peer_bounds_a_slow_consumer_by_bytes_and_disconnects_it_after_the_grace() {
    use std::io::BufRead;
    require_node_peers();
    const CAP: f64 = 256.0 * 1024.0;
    const GRACE: std::time::Duration = std::time::Duration::from_secs(1);
    let mut child = Command::new("node")
        .arg(root().join("servers/peers/ws-room.js"))
        .args(["--listen", "127.0.0.1:0", "--outbound-queue-bytes"])
        .arg((CAP as u64).to_string())
        .args(["--slow-consumer-grace", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node ws-room.js");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ws-room.js address line");
    let addr = line
        .split_whitespace()
        .next()
        .expect("an address")
        .to_owned();
    let drops = r#"chatbench_drops_total{reason="queue_bytes"}"#;
    let kicks = r#"chatbench_disconnects_total{reason="slow_consumer"}"#;
    let queued = "chatbench_outbound_queued_bytes";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let url = format!("ws://{addr}/ws");
        let join = Message::text(r#"{"t":"join","room":"flood"}"#);
        let mut members = Vec::new();
        for _ in 0..3 {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url)
                .await
                .expect("connect");
            ws.send(join.clone()).await.expect("join");
            let ack = ws.next().await.expect("joined").expect("joined");
            assert_eq!(
                ack.to_text().expect("text"),
                r#"{"t":"joined","room":"flood"}"#
            );
            members.push(ws);
        }
        let (mut sender, mut reader, _slow) = {
            let mut m = members.into_iter();
            (m.next(), m.next(), m.next())
        };
        let (sender, reader) = (
            sender.as_mut().expect("sender"),
            reader.as_mut().expect("reader"),
        );
        let body = "y".repeat(60 * 1000);
        let mut first_drop: Option<std::time::Instant> = None;
        let mut peak = 0.0f64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for seq in 0u64.. {
            assert!(
                std::time::Instant::now() < deadline,
                "no disconnect within 60 s"
            );
            let text = format!(
                r#"{{"t":"msg","room":"flood","from":"s","seq":{seq},"ts":{seq},"body":"{body}"}}"#
            );
            sender
                .send(Message::text(text.clone()))
                .await
                .expect("send");
            let got = reader.next().await.expect("a message").expect("a message");
            assert_eq!(
                got.to_text().expect("text"),
                text,
                "the reading member lost seq {seq}"
            );
            let m = peer_metrics(&addr);
            peak = peak.max(peer_sample(&m, queued));
            // The slow member's bytes within the cap, plus a frame or two on its way to the reader.
            assert!(
                peak <= CAP + 2.0 * 64.0 * 1024.0,
                "{peak} bytes queued after {seq} messages"
            );
            if peer_sample(&m, kicks) >= 1.0 {
                let since = first_drop.expect("a disconnect before any drop");
                assert!(
                    since.elapsed() >= GRACE.mul_f64(0.9),
                    "disconnected {:?} after the first drop, before the grace",
                    since.elapsed()
                );
                break;
            }
            if first_drop.is_none() && peer_sample(&m, drops) >= 1.0 {
                first_drop = Some(std::time::Instant::now());
            }
            if first_drop.is_some() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        // The kicked member's socket is destroyed (it never reads its close frame): its bytes go.
        let released = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let m = peer_metrics(&addr);
            if peer_sample(&m, "chatbench_connections") == 2.0
                && peer_sample(&m, queued) < 64.0 * 1024.0
            {
                assert_eq!(peer_sample(&m, kicks), 1.0, "{m}");
                break;
            }
            assert!(
                std::time::Instant::now() < released,
                "the slow member was not released:\n{m}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    child.kill().expect("stop node");
    let _ = child.wait();
}
