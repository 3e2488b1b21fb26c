//! The pacer's send path (`loadgen/src/tx/`) end to end: plain `ws://` senders whose frames
//! the pacer's thread writes deliver every message, counted as on the tokio path, against the
//! real epoll server (`--serve epoll`, 127.0.0.1, port chosen by the OS); and a server that
//! pings its senders gets every pong back while they send.

mod common;
#[allow(dead_code)] // not every fault and figure is read by every test
#[path = "common/fake_server.rs"]
mod fake_server;

use common::*;
use fake_server::{FakeServer, Fault};

use std::sync::atomic::Ordering;

/// 60 connections in 3 rooms of 20, two senders each (so a sender also reads the other's
/// messages), uniform arrival: the schedule, and so what falls in the window, is the same on
/// every run.
const SHAPE: [&str; 12] = [
    "--set",
    "connections=60",
    "--set",
    "rooms=3",
    "--set",
    "members_per_room=20",
    "--set",
    "senders_per_room=2",
    "--set",
    "arrival=\"uniform\"",
    "--progress",
    "quiet",
];

/// Runs smoke with `SHAPE` and `extra` against `target`; the summary and the console.
fn smoke(target: &[&str], extra: &[&str]) -> (serde_json::Value, String) {
    run_smoke(target, &SHAPE, extra)
}

/// Zero loss, every delivery counted once, the whole room's readers owed each message.
fn assert_whole(s: &serde_json::Value) {
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

#[test]
fn senders_on_the_pacer_path_deliver_every_message_as_the_tokio_path_does() {
    let serve = ["--serve", "epoll"];
    let (pacer, pacer_out) = smoke(&serve, &[]);
    let (tokio, tokio_out) = smoke(&serve, &["--set", "client.send_path=\"tokio\""]);
    assert_eq!(
        count(&pacer["connections"]["pacer_senders"]),
        6,
        "every sender's frames written by the pacer: {:#}",
        pacer["connections"]
    );
    assert_eq!(
        count(&pacer["connections"]["epoll_receivers"]),
        54,
        "the senders are not counted as receive-only: {:#}",
        pacer["connections"]
    );
    assert!(
        pacer_out.contains("sending     6 senders' frames written by the pacer's thread"),
        "{pacer_out}"
    );
    // The bounded out-buffer's policy is counted with the path (how often it held a sender).
    count(&pacer["connections"]["pacer_send_held"]);
    assert!(tokio["connections"].get("pacer_senders").is_none());
    assert!(tokio["connections"].get("pacer_send_held").is_none());
    assert_eq!(
        count(&tokio["connections"]["epoll_receivers"]),
        54,
        "send_path = tokio leaves the receivers on the epoll path"
    );
    assert!(!tokio_out.contains("pacer's thread"), "{tokio_out}");
    assert_whole(&pacer);
    assert_whole(&tokio);
    assert_eq!(
        pacer["messages"]["sent"], tokio["messages"]["sent"],
        "the same schedule on both send paths"
    );
    // One send-lag sample per pacer wake-up that sent, as on the tokio path per task wake-up.
    assert!(count(&pacer["generator"]["send_lag_us"]["count"]) > 0);
    // The pacer's thread is its own group in the generator's CPU by thread role.
    let g = &pacer["generator"];
    assert_eq!(count(&g["threads_by_role"]["pacer"]), 1, "{g:#}");
    assert!(g["cpu_cores_by_role"]["pacer"].is_f64(), "{g:#}");
}

#[test]
fn a_server_that_pings_its_senders_gets_every_pong_on_the_pacer_path() {
    let server = FakeServer::start(Fault::PingSenders);
    let url = server.url();
    let (s, _) = smoke(&["--target", &url], &[]);
    assert_eq!(count(&s["connections"]["pacer_senders"]), 6, "{s:#}");
    assert_whole(&s);
    let pings = server.seen.pings.load(Ordering::Relaxed);
    assert!(pings > 0, "the server pinged");
    assert_eq!(
        server.seen.pongs.load(Ordering::Relaxed),
        pings,
        "every ping answered, between the sender's messages"
    );
    let closed = &s["connections"]["closed_by_server"];
    assert_eq!(closed, &serde_json::json!({}), "{closed:#}");
}
