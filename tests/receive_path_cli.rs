//! The epoll receive path (`[client] receive_path`) end to end: the same run against the real
//! epoll server (`--serve epoll`, 127.0.0.1, port chosen by the OS) on both receive paths gives
//! the same counts, a server that drops one message to one receiver is caught on it, and a
//! frame the server sends unasked right after `joined`, split across TCP writes, is judged
//! exactly once after the hand-over.

mod common;
#[allow(dead_code)] // not every fault and figure is read by every test
#[path = "common/fake_server.rs"]
mod fake_server;

use common::*;
use fake_server::{FakeServer, Fault};

/// 60 connections in 3 rooms of 20, one sender each (57 receivers), uniform arrival: the
/// schedule, and so what falls in the window, is the same on every run.
const SHAPE: [&str; 10] = [
    "--set",
    "connections=60",
    "--set",
    "rooms=3",
    "--set",
    "members_per_room=20",
    "--set",
    "arrival=\"uniform\"",
    "--progress",
    "quiet",
];

/// Runs smoke with `SHAPE` and `extra`, returning the summary.
fn smoke(target: &[&str], extra: &[&str]) -> serde_json::Value {
    smoke_out(target, extra).0
}

/// Runs smoke with `SHAPE` and `extra`, returning the summary and the console summary.
fn smoke_out(target: &[&str], extra: &[&str]) -> (serde_json::Value, String) {
    run_smoke(target, &SHAPE, extra)
}

#[test]
fn both_receive_paths_count_the_same_run_against_the_epoll_server() {
    let serve = ["--serve", "epoll"];
    let (tokio, tokio_out) = smoke_out(&serve, &["--set", "client.receive_path=\"tokio\""]);
    let (epoll, epoll_out) = smoke_out(&serve, &["--set", "client.receive_path=\"epoll\""]);
    // The console summary names the epoll path only when it was used.
    assert!(
        epoll_out.contains("receiving   57 of 60 ready connections on the epoll receive path"),
        "{epoll_out}"
    );
    assert!(!tokio_out.contains("epoll receive path"), "{tokio_out}");
    assert!(
        tokio["connections"].get("epoll_receivers").is_none(),
        "receive_path = tokio: {:#}",
        tokio["connections"]
    );
    assert_eq!(
        count(&epoll["connections"]["epoll_receivers"]),
        57,
        "every receiver, and no sender, on the epoll path: {:#}",
        epoll["connections"]
    );
    for s in [&tokio, &epoll] {
        let m = &s["messages"];
        assert!(count(&m["sent"]) > 0, "{m:#}");
        assert_eq!(count(&m["expected"]), count(&m["sent"]) * 19, "{m:#}");
        assert_eq!(m["delivered"], m["expected"], "{m:#}");
        assert_eq!(count(&m["lost"]), 0, "{m:#}");
        assert_eq!(count(&m["duplicated"]), 0, "{m:#}");
        assert_eq!(count(&m["bad_frames"]), 0, "{m:#}");
        assert_eq!(s["latency_us"]["count"], m["delivered"], "{s:#}");
        assert_eq!(count(&s["connections"]["ready"]), 60, "{s:#}");
    }
    assert_eq!(
        tokio["messages"]["sent"], epoll["messages"]["sent"],
        "the same schedule on both paths"
    );
    // The receive lag: one sample per in-window delivery judged on the epoll path (every
    // delivery here: all 57 receivers ride it), none on the tokio path.
    let g = &epoll["generator"];
    assert_eq!(
        g["receive_lag_us"]["count"], epoll["latency_us"]["count"],
        "{g:#}"
    );
    assert!(g["unstamped_reads"].is_u64(), "{g:#}");
    assert_eq!(g["arrival"], "read", "the default is recorded: {g:#}");
    assert!(tokio["generator"]["receive_lag_us"].is_null(), "{tokio:#}");
    assert!(epoll_out.contains("receive lag"), "{epoll_out}");
    // The generator's CPU split by thread role: the epoll path's receive threads are there
    // (counted, and their share present) only when it ran; the console shows the split.
    let threads =
        |s: &serde_json::Value, role: &str| count(&s["generator"]["threads_by_role"][role]);
    assert!(threads(&epoll, "receive") >= 1, "{:#}", epoll["generator"]);
    assert_eq!(threads(&tokio, "receive"), 0, "{:#}", tokio["generator"]);
    for s in [&tokio, &epoll] {
        let c = &s["generator"]["cpu_cores_by_role"];
        for role in ["receive", "pacer", "tokio", "other"] {
            assert!(c[role].as_f64().is_some_and(|v| v >= 0.0), "{role}: {c:#}");
        }
        assert!(threads(s, "tokio") >= 1, "{:#}", s["generator"]);
    }
    assert!(epoll_out.contains("  gen threads "), "{epoll_out}");
}

#[test]
fn kernel_arrival_times_every_epoll_delivery_and_says_so() {
    let (s, out) = smoke_out(
        &["--serve", "epoll"],
        &["--set", "client.arrival=\"kernel\""],
    );
    let m = &s["messages"];
    assert_eq!(count(&m["lost"]), 0, "{m:#}");
    assert_eq!(m["delivered"], m["expected"], "{m:#}");
    assert_eq!(s["latency_us"]["count"], m["delivered"], "{s:#}");
    let g = &s["generator"];
    assert_eq!(g["arrival"], "kernel", "{g:#}");
    assert_eq!(g["receive_lag_us"]["count"], m["delivered"], "{g:#}");
    assert!(out.contains("timed to the kernel's receive time"), "{out}");
}

#[test]
fn a_message_dropped_to_one_receiver_is_caught_on_the_epoll_path() {
    // `receive_path` left at its default, `auto`: the receivers read on the epoll path.
    let server = FakeServer::start(Fault::DropToReceiver { seq: 30 });
    let url = server.url();
    let s = smoke(&["--target", &url], &[]);
    let what = server.seen.dropped_what.lock().expect("what").clone();
    let (from, seq, _) = what.unwrap_or_else(|| panic!("nothing dropped: {s:#}"));
    assert_eq!(
        count(&s["connections"]["epoll_receivers"]),
        57,
        "{:#}",
        s["connections"]
    );
    let m = &s["messages"];
    assert_eq!(count(&m["expected"]), count(&m["sent"]) * 19, "{m:#}");
    assert_eq!(
        count(&m["lost"]),
        1,
        "{from} seq {seq}, dropped by the server to one receiver, and nothing else: {m:#}"
    );
    assert_eq!(count(&m["duplicated"]), 0, "{m:#}");
}

#[test]
fn a_frame_split_across_the_hand_over_is_judged_exactly_once() {
    // Every member gets `joined` and the first 7 bytes of a GARBAGE frame in one TCP write
    // (so tungstenite holds them when the set-up ends), the rest 50 ms later: the receivers
    // read the rest on the epoll path, which must start from the bytes tungstenite held.
    let server = FakeServer::start(Fault::SplitAfterJoined);
    let url = server.url();
    let s = smoke(&["--target", &url], &[]);
    let c = &s["connections"];
    assert_eq!(count(&c["epoll_receivers"]), 57, "{c:#}");
    assert_eq!(count(&c["ready"]), 60, "{c:#}");
    let m = &s["messages"];
    assert_eq!(
        count(&m["bad_frames"]),
        60,
        "the split GARBAGE frame, once per connection (57 on the epoll path): {m:#}"
    );
    assert_eq!(count(&m["lost"]), 0, "{m:#}");
    assert_eq!(count(&m["duplicated"]), 0, "{m:#}");
    assert_eq!(m["delivered"], m["expected"], "{m:#}");
    assert!(count(&m["sent"]) > 0, "{m:#}");
}
