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

use std::sync::atomic::Ordering;

#[test]
fn echoes_are_counted_apart_from_deliveries_and_latency() {
    let server = FakeServer::start(Fault::Echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = server.url();
    let out = run_chatbench(&[
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
    // One garbage frame per room: counted, shown, and kept in the run folder.
    assert_eq!(count(&m["bad_frames"]), 3, "{m:#}");
    assert!(stdout.contains("frames      bad 3"), "{stdout}");
    assert!(
        stdout.contains(&format!("              {:?}\n", fake_server::GARBAGE)),
        "the first bad frames on the console: {stdout}"
    );
    let kept = std::fs::read_to_string(only_run_dir(dir.path()).join("unexpected_frames.txt"))
        .expect("unexpected_frames.txt");
    assert_eq!(
        kept.lines().filter(|l| *l == fake_server::GARBAGE).count(),
        3,
        "{kept}"
    );
}

#[test]
fn a_server_killed_mid_window_loses_every_message_that_fell_due() {
    // smoke at 20 msg/s per sender, uniform: 1 s warmup, 3 s window. The server dies on the
    // first message with seq 40 (about 2 s into sending: mid-window), cutting everything.
    let server = FakeServer::start(Fault::DieAt { seq: 40 });
    let dir = tempfile::tempdir().expect("tempdir");
    let url = server.url();
    let out = run_chatbench(&[
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
        "--set",
        "arrival=\"uniform\"",
        "--out",
        dir.path().to_str().expect("path"),
    ]);
    assert!(server.seen.dead.load(Ordering::Relaxed), "{}", text(&out));
    let s = summary(&only_run_dir(dir.path()));
    check_schema(&s);
    let m = &s["messages"];
    let (sent, unsent) = (count(&m["sent"]), count(&m["unsent_down"]));
    // Every sender's window holds 3 s × 20/s = 60 points (±1 at each edge): all of them are
    // owed, sent or not.
    let due = sent + unsent;
    assert!((3 * 58..=3 * 62).contains(&due), "due {due}: {m:#}");
    assert!(sent > 0 && unsent > 0, "the server died mid-window: {m:#}");
    assert_eq!(count(&m["expected"]), due * 19, "{m:#}");
    assert_eq!(
        count(&m["lost"]),
        count(&m["expected"]) - count(&m["delivered"]),
        "{m:#}"
    );
    assert!(
        count(&m["lost"]) >= unsent * 19,
        "every unsent message is lost to its 19 readers: {m:#}"
    );
    let cut = server.seen.cut.load(Ordering::Relaxed);
    assert_eq!(cut, 60, "the server had every connection");
    assert_eq!(
        count(&s["connections"]["dropped_in_window"]),
        60,
        "every connection was dropped mid-window: {s:#}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("dropped by the server mid-window 60") && stdout.contains("unsent"),
        "{stdout}"
    );
}

#[test]
fn one_message_dropped_to_one_member_on_another_agent_is_caught_exactly() {
    // Two local agents; every room has a sender on each (member slot s of room r is on agent
    // (s + r) % 2), so the server can pick, for a message of one agent's sender, a member it
    // knows to be on the other agent: the other sender. It drops that one delivery.
    let server = FakeServer::start(Fault::DropOne { seq: 40 });
    let dir = tempfile::tempdir().expect("tempdir");
    let url = server.url();
    let out = run_chatbench(&[
        "run",
        "--target",
        &url,
        "--agents",
        "local:2",
        "--scenario",
        "scenarios/smoke.toml",
        "--set",
        "connections=40",
        "--set",
        "rooms=2",
        "--set",
        "members_per_room=20",
        "--set",
        "senders_per_room=2",
        "--out",
        dir.path().to_str().expect("path"),
        "--progress",
        "quiet",
    ]);
    let what = server.seen.dropped_what.lock().expect("what").clone();
    let (from, seq, victim) = what.unwrap_or_else(|| panic!("nothing dropped: {}", text(&out)));
    assert_ne!(
        from.split_once('.').map(|(a, _)| a.to_string()),
        victim.split_once('.').map(|(a, _)| a.to_string()),
        "the victim is on another agent than the sender"
    );
    let s = summary(&only_run_dir(dir.path()));
    check_schema(&s);
    let m = &s["messages"];
    let sent = count(&m["sent"]);
    assert_eq!(
        count(&m["expected"]),
        sent * 19,
        "every reader on every agent: {m:#}"
    );
    assert_eq!(
        count(&m["lost"]),
        1,
        "{from} seq {seq} to {victim}, dropped by the server, and nothing else: {m:#}"
    );
    assert_eq!(count(&m["duplicated"]), 0, "{m:#}");
    let cross = count(&s["distributed"]["delivered_cross_agent"]);
    assert!(
        cross > 0 && cross < count(&m["delivered"]),
        "deliveries within and across agents: {s:#}"
    );
}

#[test]
fn room_affine_placement_keeps_every_delivery_within_one_agent() {
    // Exit 0 or 4 and the summary checked against the schema: `run_smoke`'s own assertions.
    let (s, _) = run_smoke(
        &["--serve", "task-per-conn", "--agents", "local:2"],
        &[
            "--set",
            "connections=80",
            "--set",
            "rooms=4",
            "--set",
            "members_per_room=20",
            "--set",
            "placement=\"room\"",
        ],
        &["--progress", "quiet"],
    );
    let m = &s["messages"];
    let sent = count(&m["sent"]);
    assert!(sent > 0, "{m:#}");
    assert_eq!(count(&m["expected"]), sent * 19, "{m:#}");
    assert_eq!(m["delivered"], m["expected"], "{m:#}");
    let d = &s["distributed"];
    assert_eq!(count(&d["delivered_cross_agent"]), 0, "{d:#}");
    for a in d["agents"].as_array().expect("agents") {
        assert_eq!(count(&a["planned"]), 40, "two rooms of 20 each: {a:#}");
        assert_eq!(a["delivered"], a["expected"], "{a:#}");
    }
}
