//! `elixir-cluster` (3 nodes of `servers/peers/elixir/` joined with distributed Erlang): every
//! message reaches every other member of a room exactly once whichever node each member is on,
//! and after one node is SIGKILLed and its clients reconnect to the others, again.
//! Needs `elixir`, `erlang-cowlib` and `erlang-jiffy` (scripts/test.sh installs them); fails
//! with that message when they are missing.

mod conformance;

use std::collections::HashMap;
use std::net::SocketAddr;

use conformance::{block_on, msg, wait_metric, Client, CLUSTER_NODES};

const PER_SENDER: u64 = 5;

/// Each client sends `PER_SENDER` messages to `room`; every client must receive exactly the
/// others' messages, each sender's in order, and nothing else.
async fn everyone_gets_everything(clients: &mut [Client], room: &str, round: u64) {
    let n = clients.len();
    for (i, c) in clients.iter_mut().enumerate() {
        for seq in 0..PER_SENDER {
            c.send(&msg(room, &format!("c{i}"), round * 100 + seq))
                .await;
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut next: HashMap<usize, u64> = HashMap::new();
        for _ in 0..(n as u64 - 1) * PER_SENDER {
            let got = c.recv().await;
            let sender = (0..n)
                .find(|&s| got.contains(&format!("\"from\":\"c{s}\"")))
                .unwrap_or_else(|| panic!("client {i}: unexpected frame {got}"));
            assert_ne!(sender, i, "client {i} got its own message back: {got}");
            let seq = next.entry(sender).or_insert(0);
            assert_eq!(
                got,
                msg(room, &format!("c{sender}"), round * 100 + *seq),
                "client {i}"
            );
            *seq += 1;
        }
        assert!(
            next.values().all(|&s| s == PER_SENDER),
            "client {i}: {next:?}"
        );
    }
}

async fn sum(addrs: &[SocketAddr], sample: &str) -> f64 {
    let mut t = 0.0;
    for &a in addrs {
        t += conformance::value(&conformance::metrics(a).await, sample);
    }
    t
}

#[test]
fn cross_node_delivery_is_exact_before_and_after_a_node_is_killed() {
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let mut cluster = chatbench_harness::peers::ElixirCluster::start(
        &peers,
        CLUSTER_NODES,
        1,
        &[],
        &["--fault-injection".to_string()],
    )
    .unwrap_or_else(|e| panic!("cannot start the elixir-cluster: {e}"));
    let addrs = cluster.addrs();
    let linked = CLUSTER_NODES as f64 - 1.0;
    // One runtime for the whole case: the clients live across the node loss.
    block_on(async {
        for &a in &addrs {
            wait_metric(a, "beam_pg_remote_scopes", |v| v == linked).await;
        }
        // Two clients per node, all in one room.
        let mut clients = Vec::new();
        for i in 0..2 * CLUSTER_NODES {
            let mut c = Client::connect(addrs[i % CLUSTER_NODES]).await;
            c.join("span").await;
            clients.push(c);
        }
        let n = clients.len() as f64;
        everyone_gets_everything(&mut clients, "span", 0).await;
        let deliveries = sum(&addrs, "chatbench_deliveries_total").await;
        assert_eq!(deliveries, n * (n - 1.0) * PER_SENDER as f64);
        let drops = sum(&addrs, r#"chatbench_drops_total{reason="queue_full"}"#).await;
        assert_eq!(drops, 0.0);

        // Node loss: SIGKILL the last node; its clients lose their connections and reconnect
        // to the survivors; the survivors' :pg drops the dead node's members.
        let dead = CLUSTER_NODES - 1;
        cluster.kill_node(dead);
        let survivors: Vec<SocketAddr> = cluster.addrs();
        assert_eq!(survivors.len(), CLUSTER_NODES - 1);
        for (i, c) in clients.iter_mut().enumerate() {
            if i % CLUSTER_NODES == dead {
                c.expect_gone().await;
            }
        }
        for &a in &survivors {
            wait_metric(a, "beam_pg_remote_scopes", |v| v == linked - 1.0).await;
        }
        for (i, c) in clients.iter_mut().enumerate() {
            if i % CLUSTER_NODES == dead {
                *c = Client::connect(survivors[i % survivors.len()]).await;
                c.join("span").await;
            }
        }
        let before = sum(&survivors, "chatbench_deliveries_total").await;
        everyone_gets_everything(&mut clients, "span", 1).await;
        let after = sum(&survivors, "chatbench_deliveries_total").await;
        assert_eq!(after - before, n * (n - 1.0) * PER_SENDER as f64);
    });
    for (how, tail) in cluster.stop(std::time::Duration::from_secs(5)) {
        assert!(
            matches!(how, chatbench_harness::launcher::StopOutcome::Terminated(_)),
            "{how}\n{tail}"
        );
    }
}
