//! Tests specific to the `thread-pool` architecture: what the bounded pool does when it is
//! full, that a worker killed by a panic is replaced, and that the deepest code paths fit the
//! smallest stack the server accepts.

mod conformance;

use std::time::{Duration, Instant};

use chatbench_protocol::encode_msg;
use chatbench_servers::thread_pool::MIN_STACK_BYTES;
use chatbench_servers::{Arch, ServerConfig};
use conformance::{
    http_get, metrics, msg, test_config, value, wait_metric, with_server, Client, WAIT,
};
use futures_util::SinkExt;
use tungstenite::Message;

const REJECTIONS: &str = "chatbench_pool_rejections_total";

#[test]
fn a_full_pool_parks_new_connections_then_answers_503() {
    let pool_wait = Duration::from_millis(400);
    let config = ServerConfig {
        pool_size: 2,
        pool_wait,
        ..test_config()
    };
    with_server(Arch::ThreadPool, config, |t| async move {
        let addr = t.addr();
        let mut a = Client::connect(addr).await;
        let b = Client::connect(addr).await;
        a.join("r1").await;
        // Both workers are held by a and b: the next connection waits, then gets 503.
        let started = Instant::now();
        let (status, body) = http_get(addr, "/healthz").await;
        let waited = started.elapsed();
        assert_eq!(status, 503, "{body}");
        assert!(
            waited >= pool_wait - Duration::from_millis(20),
            "{waited:?}"
        );
        assert!(waited < WAIT, "{waited:?}");
        // A connection that is waiting when a worker frees up is served by it.
        let started = Instant::now();
        let ((status, _), ()) = tokio::join!(http_get(addr, "/healthz"), async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(b);
        });
        assert_eq!(status, 200);
        assert!(started.elapsed() < pool_wait, "{:?}", started.elapsed());
        // One worker is free again, so /metrics can be served: the refusal was counted.
        let m = metrics(addr).await;
        assert_eq!(value(&m, REJECTIONS), 1.0);
        assert_eq!(value(&m, "chatbench_connections"), 1.0);
        a.join("r2").await; // the connection holding a worker is unaffected
    });
}

#[test]
fn a_worker_killed_by_a_panic_is_replaced() {
    let pool_size = 3;
    let config = ServerConfig {
        pool_size,
        pool_wait: Duration::from_millis(200),
        fault_injection: true,
        ..test_config()
    };
    with_server(Arch::ThreadPool, config, |t| async move {
        let addr = t.addr();
        let mut bystander = Client::connect(addr).await;
        bystander.join("r1").await;
        // Kill more workers than the pool has: each must have been replaced.
        for i in 1..=pool_size + 1 {
            let mut victim = Client::connect(addr).await;
            victim.join("r1").await;
            victim.send(r#"{"t":"panic"}"#).await;
            victim.expect_gone().await;
            let sample = r#"chatbench_disconnects_total{reason="panic"}"#;
            wait_metric(addr, sample, |v| v == i as f64).await;
        }
        // The pool still holds `pool_size` connections at once: the bystander and two more.
        let mut c1 = Client::connect(addr).await;
        let mut c2 = Client::connect(addr).await;
        c1.join("r1").await;
        c2.join("r1").await;
        bystander.send(&msg("r1", "by", 1)).await;
        assert_eq!(c1.recv().await, msg("r1", "by", 1));
        assert_eq!(c2.recv().await, msg("r1", "by", 1));
        // ... and not more: the pool did not grow past its size either.
        assert_eq!(http_get(addr, "/healthz").await.0, 503);
        drop(c2);
        let m = conformance::metrics(addr).await;
        assert_eq!(value(&m, "chatbench_connections"), 2.0);
        assert_eq!(value(&m, "chatbench_rooms"), 1.0);
        assert_eq!(value(&m, REJECTIONS), 1.0);
    });
}

/// Every deep path a peer can drive a worker into, on the smallest stack the server accepts:
/// nesting in forwarded and in skipped fields (up to what the frame limit allows), the largest
/// frame, an oversized frame, a metrics render, and a
/// panic unwinding the worker. A stack overflow aborts the whole test process.
#[test]
fn the_deepest_paths_fit_the_minimum_stack() {
    let config = ServerConfig {
        pool_size: 8,
        thread_stack_bytes: MIN_STACK_BYTES,
        fault_injection: true,
        ..test_config()
    };
    with_server(Arch::ThreadPool, config, |t| async move {
        let addr = t.addr();
        let mut a = Client::connect(addr).await;
        let mut b = Client::connect(addr).await;
        a.join("deep").await;
        b.join("deep").await;
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let deep = format!(
            r#"{{"t":"msg","room":"deep","x":{},"body":{}}}"#,
            nested(127),
            nested(127)
        );
        a.send(&deep).await;
        assert_eq!(b.recv().await, deep);
        let max = encode_msg("deep", "a", 1, 1, "");
        let max = encode_msg("deep", "a", 1, 1, &"m".repeat(64 * 1024 - max.len()));
        a.send(&max).await;
        assert_eq!(b.recv().await, max);
        let mut c = Client::connect(addr).await;
        // Nesting as deep as the frame limit allows, in a field the parser skips.
        c.send(&format!(
            r#"{{"t":"msg","room":"deep","x":{}}}"#,
            nested(32_000)
        ))
        .await;
        c.expect_error("not_joined").await;
        let mut d = Client::connect(addr).await;
        d.ws.send(Message::text("x".repeat(64 * 1024 + 1)))
            .await
            .expect("send");
        d.expect_fatal("frame_too_large", 1009).await;
        let m = metrics(addr).await;
        assert!(value(&m, "process_threads") >= 2.0);
        b.send(r#"{"t":"panic"}"#).await;
        b.expect_gone().await;
        let sample = r#"chatbench_disconnects_total{reason="panic"}"#;
        wait_metric(addr, sample, |v| v == 1.0).await;
        a.join("still-alive").await;
    });
}
