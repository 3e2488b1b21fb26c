//! Cluster behaviour beyond the conformance suite, for each backplane: exact cross-node
//! delivery counts, counted loss while a peer link is cut (mesh) or Redis is down (redis) and
//! full delivery after, a stopped node's clients moving to another node, the mesh hello's
//! refusals, and Redis unreachable at start. Real nodes on 127.0.0.1, real clients, a real
//! private `redis-server`.

mod conformance;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;

use chatbench_protocol::{parse_server, ServerFrame};
use chatbench_servers::cluster::ClusterNode;
use conformance::{
    block_on, metrics, msg, start_mesh_node, start_mesh_node_at, start_redis_node, test_config,
    value, wait_metric, Backplane, Client, RedisServer,
};

/// Starts `n` mesh nodes (each dials the ones before it) and waits until all are linked.
fn mesh(n: usize, fault_injection: bool) -> Vec<ClusterNode> {
    let config = chatbench_servers::ServerConfig {
        fault_injection,
        ..test_config()
    };
    let mut nodes: Vec<ClusterNode> = Vec::new();
    for id in 1..=n as u64 {
        let peers = nodes.iter().filter_map(|n| n.cluster_addr).collect();
        nodes.push(start_mesh_node(&config, id, peers));
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.server.addr).collect();
    block_on(async {
        for a in addrs {
            wait_metric(a, "chatbench_backplane_peers_up", |v| v == (n - 1) as f64).await;
        }
    });
    nodes
}

/// Starts `n` nodes over `kind` (a private Redis for `redis`) and waits until all are linked.
fn cluster(kind: Backplane, n: usize) -> (Vec<ClusterNode>, Option<RedisServer>) {
    match kind {
        Backplane::Mesh => (mesh(n, false), None),
        Backplane::Redis => {
            let redis = RedisServer::start();
            let nodes: Vec<ClusterNode> = (1..=n as u64)
                .map(|id| start_redis_node(&test_config(), id, &redis.url()))
                .collect();
            wait_up(&nodes, 2.0);
            (nodes, Some(redis))
        }
    }
}

fn wait_up(nodes: &[ClusterNode], up: f64) {
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.server.addr).collect();
    block_on(async {
        for a in addrs {
            wait_metric(a, "chatbench_backplane_peers_up", |v| v == up).await;
        }
    });
}

async fn m(addr: SocketAddr, sample: &str) -> f64 {
    value(&metrics(addr).await, sample)
}

/// Polls until `sample` added up over `addrs` equals `want` (fails if it never does).
async fn wait_total(addrs: &[SocketAddr], sample: &str, want: f64) {
    let start = std::time::Instant::now();
    loop {
        let mut total = 0.0;
        for &a in addrs {
            total += m(a, sample).await;
        }
        if total == want {
            return;
        }
        assert!(
            start.elapsed() < conformance::WAIT,
            "{sample}: {total} over the nodes, want {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads frames until `want` of them have arrived; returns (from, seq) → times seen.
async fn collect(c: &mut Client, want: usize) -> HashMap<(String, u64), u32> {
    let mut seen = HashMap::new();
    for _ in 0..want {
        let text = c.recv().await;
        match parse_server(&text) {
            Ok(ServerFrame::Msg(msg)) => {
                *seen.entry((msg.from.to_string(), msg.seq)).or_default() += 1;
            }
            other => panic!("expected a msg, got {other:?}"),
        }
    }
    seen
}

#[test]
fn mesh_delivers_every_message_once_per_member_and_once_per_node() {
    exact_counts(Backplane::Mesh);
}

#[test]
fn redis_delivers_every_message_once_per_member_and_once_per_node() {
    exact_counts(Backplane::Redis);
}

fn exact_counts(kind: Backplane) {
    const K: u64 = 40;
    let (nodes, _redis) = cluster(kind, 3);
    let addr: Vec<SocketAddr> = nodes.iter().map(|n| n.server.addr).collect();
    block_on(async {
        // Room "all": two members on each node. Room "pair": one member on nodes 0 and 1 only.
        let mut all = Vec::new();
        for i in 0..6 {
            let mut c = Client::connect(addr[i % 3]).await;
            c.join("all").await;
            all.push(c);
        }
        let mut pair = vec![
            Client::connect(addr[0]).await,
            Client::connect(addr[1]).await,
        ];
        for c in &mut pair {
            c.join("pair").await;
        }
        for seq in 0..K {
            for (i, c) in all.iter_mut().enumerate() {
                c.send(&msg("all", &format!("a{i}"), seq)).await;
            }
            for (i, c) in pair.iter_mut().enumerate() {
                c.send(&msg("pair", &format!("p{i}"), seq)).await;
            }
        }
        for (i, c) in all.iter_mut().enumerate() {
            let seen = collect(c, 5 * K as usize).await;
            for j in (0..6).filter(|&j| j != i) {
                for seq in 0..K {
                    assert_eq!(seen.get(&(format!("a{j}"), seq)), Some(&1), "member {i}");
                }
            }
        }
        for (i, c) in pair.iter_mut().enumerate() {
            let seen = collect(c, K as usize).await;
            assert_eq!(seen.len(), K as usize, "pair member {i}: {seen:?}");
            assert!(seen.values().all(|&n| n == 1));
        }
        // Nothing more is on its way: a last message per room arrives next, everywhere.
        all[0].send(&msg("all", "last", 0)).await;
        pair[0].send(&msg("pair", "last", 0)).await;
        for c in &mut all[1..] {
            assert_eq!(c.recv().await, msg("all", "last", 0));
        }
        assert_eq!(pair[1].recv().await, msg("pair", "last", 0));
        // Mesh: each "all" message crossed to each of the 2 other nodes once, each "pair"
        // message to the one other node that has a member. Redis: each was published once.
        // Either way node 2 never saw "pair", and each node received each message once.
        let all_msgs = 6.0 * K as f64 + 1.0;
        let pair_msgs = 2.0 * K as f64 + 1.0;
        // Redis counts a publish when Redis has answered it, which may be just after delivery.
        let want = match kind {
            Backplane::Mesh => all_msgs * 2.0 + pair_msgs,
            Backplane::Redis => all_msgs + pair_msgs,
        };
        wait_total(&addr, "chatbench_backplane_forwarded_total", want).await;
        for &a in &addr {
            assert_eq!(m(a, "chatbench_backplane_lost_total").await, 0.0);
            assert_eq!(m(a, "chatbench_backplane_dropped_total").await, 0.0);
        }
        wait_metric(addr[2], "chatbench_backplane_received_total", |v| {
            v == 4.0 * K as f64 + 1.0
        })
        .await;
        assert_eq!(m(addr[0], "chatbench_backplane_interest_rooms").await, 2.0);
        assert_eq!(m(addr[2], "chatbench_backplane_interest_rooms").await, 1.0);
    });
}

#[test]
fn mesh_link_cut_counts_the_loss_and_delivers_fully_after() {
    let nodes = mesh(2, true);
    let (n0, n1) = (nodes[0].server.addr, nodes[1].server.addr);
    block_on(async {
        let mut a = Client::connect(n0).await;
        let mut b = Client::connect(n1).await;
        a.join("r").await;
        b.join("r").await;
        for seq in 0..20 {
            a.send(&msg("r", "a", seq)).await;
        }
        for seq in 0..20 {
            assert_eq!(b.recv().await, msg("r", "a", seq));
        }
        // Cut node 1 off: node 0 sees its link go and counts what it cannot forward.
        nodes[1].partition(true).unwrap();
        wait_metric(n0, "chatbench_backplane_peers_up", |v| v == 0.0).await;
        for seq in 100..130 {
            a.send(&msg("r", "a", seq)).await;
        }
        wait_metric(n0, "chatbench_backplane_lost_total", |v| v == 30.0).await;
        // Local delivery goes on meanwhile.
        let mut a2 = Client::connect(n0).await;
        a2.join("r").await;
        a.send(&msg("r", "a", 200)).await;
        assert_eq!(a2.recv().await, msg("r", "a", 200));
        wait_metric(n0, "chatbench_backplane_lost_total", |v| v == 31.0).await;
        // Restore: the link comes back and interest is re-synced (a join waits for that).
        nodes[1].partition(false).unwrap();
        wait_metric(n0, "chatbench_backplane_peers_up", |v| v == 1.0).await;
        wait_metric(n1, "chatbench_backplane_peers_up", |v| v == 1.0).await;
        b.join("r").await;
        for seq in 300..320 {
            a.send(&msg("r", "a", seq)).await;
        }
        // b gets every message after the gap, and none from it.
        for seq in 300..320 {
            assert_eq!(b.recv().await, msg("r", "a", seq));
        }
        assert!(m(n0, "chatbench_backplane_reconnects_total").await >= 1.0);
        assert_eq!(m(n0, "chatbench_backplane_lost_total").await, 31.0);
        assert_eq!(m(n0, "chatbench_backplane_dropped_total").await, 0.0);
    });
}

#[test]
fn mesh_stopped_nodes_clients_rejoin_on_another_node() {
    stopped_node(Backplane::Mesh);
}

#[test]
fn redis_stopped_nodes_clients_rejoin_on_another_node() {
    stopped_node(Backplane::Redis);
}

fn stopped_node(kind: Backplane) {
    let (mut nodes, _redis) = cluster(kind, 3);
    let linked = match kind {
        Backplane::Mesh => 1.0,
        Backplane::Redis => 2.0,
    };
    let addr: Vec<SocketAddr> = nodes.iter().map(|n| n.server.addr).collect();
    let gone = nodes.pop().unwrap();
    block_on(async {
        let mut a = Client::connect(addr[0]).await;
        let mut b = Client::connect(addr[1]).await;
        let mut c = Client::connect(addr[2]).await;
        for cl in [&mut a, &mut b, &mut c] {
            cl.join("r").await;
        }
        a.send(&msg("r", "a", 1)).await;
        assert_eq!(b.recv().await, msg("r", "a", 1));
        assert_eq!(c.recv().await, msg("r", "a", 1));
        // Node 3 stops: its client is closed with 1001 and comes back on node 1.
        gone.server.shutdown.trigger();
        c.expect_close(1001).await;
        tokio::task::spawn_blocking(move || gone.server.join())
            .await
            .unwrap()
            .unwrap();
        wait_metric(addr[0], "chatbench_backplane_peers_up", |v| v == linked).await;
        wait_metric(addr[1], "chatbench_backplane_peers_up", |v| v == linked).await;
        let mut c = Client::connect(addr[0]).await;
        c.join("r").await;
        b.send(&msg("r", "b", 2)).await;
        assert_eq!(a.recv().await, msg("r", "b", 2));
        assert_eq!(c.recv().await, msg("r", "b", 2));
        // The stopped node withdrew its interest as its clients left: nothing counts as lost.
        for &n in &addr[..2] {
            assert_eq!(m(n, "chatbench_backplane_lost_total").await, 0.0);
        }
    });
}

/// Writes a raw mesh hello (and a challenge claiming the test secret) to `cluster` and
/// returns the refusal reason.
fn raw_hello(cluster: SocketAddr, version: u16, node_id: u64) -> String {
    use chatbench_servers::cluster::wire::{encode, Frame, FLAG_SECRET};
    let mut s = std::net::TcpStream::connect(cluster).unwrap();
    s.set_read_timeout(Some(conformance::WAIT)).unwrap();
    s.write_all(&encode(&Frame::Hello { version, node_id }))
        .unwrap();
    s.write_all(&encode(&Frame::Challenge {
        incarnation: 1,
        nonce: [7; 32],
        flags: FLAG_SECRET,
    }))
    .unwrap();
    // The node's own hello and challenge come first, then its refusal.
    let mut frames = Vec::new();
    for _ in 0..3 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        frames.push(body);
    }
    assert_eq!(frames[0][0], 1, "hello first");
    assert_eq!(frames[1][0], 10, "then a challenge");
    assert_eq!(frames[2][0], 2, "then a refusal");
    String::from_utf8_lossy(&frames[2][1..]).into_owned()
}

#[test]
fn mesh_hello_refuses_another_version_and_a_clashing_node_id() {
    let nodes = mesh(1, false);
    let cluster = nodes[0].cluster_addr.unwrap();
    let why = raw_hello(cluster, 99, 5);
    assert!(why.contains("version 99"), "{why}");
    let why = raw_hello(
        cluster,
        chatbench_servers::cluster::wire::CLUSTER_PROTOCOL_VERSION,
        1,
    );
    assert!(why.contains("distinct --node-id"), "{why}");
    block_on(async {
        let a = nodes[0].server.addr;
        assert_eq!(m(a, "chatbench_backplane_refused_total").await, 2.0);
        assert_eq!(m(a, "chatbench_backplane_peers_up").await, 0.0);
    });
}

#[test]
fn partition_needs_fault_injection() {
    let nodes = mesh(1, false);
    assert!(nodes[0].partition(true).is_err());
}

#[test]
fn redis_restart_counts_the_loss_and_recovers_fully() {
    let (nodes, redis) = cluster(Backplane::Redis, 2);
    let mut redis = redis.expect("a redis server");
    let (n0, n1) = (nodes[0].server.addr, nodes[1].server.addr);
    block_on(async {
        let mut a = Client::connect(n0).await;
        let mut b = Client::connect(n1).await;
        a.join("r").await;
        b.join("r").await;
        for seq in 0..20 {
            a.send(&msg("r", "a", seq)).await;
        }
        for seq in 0..20 {
            assert_eq!(b.recv().await, msg("r", "a", seq));
        }
        // Redis dies: both nodes notice (the subscriber at once, the publisher by its ping).
        redis.kill();
        for n in [n0, n1] {
            wait_metric(n, "chatbench_backplane_peers_up", |v| v == 0.0).await;
        }
        for seq in 100..130 {
            a.send(&msg("r", "a", seq)).await;
        }
        wait_metric(n0, "chatbench_backplane_lost_total", |v| v == 30.0).await;
        // Local delivery goes on meanwhile.
        let mut a2 = Client::connect(n0).await;
        a2.join("r").await;
        a.send(&msg("r", "a", 200)).await;
        assert_eq!(a2.recv().await, msg("r", "a", 200));
        // Redis comes back on the same port: both nodes reconnect and re-subscribe before
        // they report up again.
        redis.restart();
        for n in [n0, n1] {
            wait_metric(n, "chatbench_backplane_peers_up", |v| v == 2.0).await;
        }
        for seq in 300..320 {
            a.send(&msg("r", "a", seq)).await;
        }
        for seq in 300..320 {
            assert_eq!(b.recv().await, msg("r", "a", seq));
            assert_eq!(a2.recv().await, msg("r", "a", seq));
        }
        assert!(m(n0, "chatbench_backplane_reconnects_total").await >= 2.0);
        assert_eq!(m(n0, "chatbench_backplane_lost_total").await, 31.0);
        assert_eq!(m(n0, "chatbench_backplane_dropped_total").await, 0.0);
        assert_eq!(m(n1, "chatbench_backplane_interest_rooms").await, 1.0);
    });
}

#[test]
fn redis_unreachable_at_start_is_an_error_naming_the_url() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let node = start_redis_node(&test_config(), 1, &url);
    let err = node.server.join().expect_err("the node must not start");
    let text = err.to_string();
    assert!(
        text.contains(&url) && text.contains("cannot reach Redis"),
        "{text}"
    );
    let preflight =
        chatbench_servers::cluster::redis::ping(&url, std::time::Duration::from_secs(2));
    assert!(preflight.is_err_and(|e| e.to_string().contains(&url)));
}

#[test]
fn mesh_nodes_that_all_dial_each_other_keep_one_link_per_pair() {
    // Every node lists every other as a seed, so each pair dials both ways at once.
    let ports: Vec<SocketAddr> = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
        })
        .collect();
    let nodes: Vec<ClusterNode> = (0..3)
        .map(|i| {
            let peers = ports.iter().copied().filter(|p| *p != ports[i]).collect();
            start_mesh_node_at(&test_config(), i as u64 + 1, ports[i], peers)
        })
        .collect();
    wait_up(&nodes, 2.0);
    let addr: Vec<SocketAddr> = nodes.iter().map(|n| n.server.addr).collect();
    block_on(async {
        let mut c = Vec::new();
        for &a in &addr {
            let mut cl = Client::connect(a).await;
            cl.join("r").await;
            c.push(cl);
        }
        for seq in 0..10 {
            c[0].send(&msg("r", "c0", seq)).await;
        }
        c[0].send(&msg("r", "c0", 99)).await;
        for cl in &mut c[1..] {
            for seq in (0..10).chain([99]) {
                assert_eq!(cl.recv().await, msg("r", "c0", seq));
            }
        }
        // One link per pair, and the losing duplicates were not refusals. (The reconnect
        // counter is not checked: a duplicate that one end closes before the other end has
        // seen the preferred link can count as one.)
        for &a in &addr {
            assert_eq!(m(a, "chatbench_backplane_peers_up").await, 2.0);
            assert_eq!(m(a, "chatbench_backplane_refused_total").await, 0.0);
        }
        let mut forwarded = 0.0;
        for &a in &addr {
            forwarded += m(a, "chatbench_backplane_forwarded_total").await;
        }
        assert_eq!(forwarded, 11.0 * 2.0);
    });
}

#[test]
fn redis_nodes_sharing_an_id_still_deliver_to_each_other() {
    let redis = RedisServer::start();
    let nodes: Vec<ClusterNode> = (0..2)
        .map(|_| start_redis_node(&test_config(), 7, &redis.url()))
        .collect();
    wait_up(&nodes, 2.0);
    block_on(async {
        let mut a = Client::connect(nodes[0].server.addr).await;
        let mut b = Client::connect(nodes[1].server.addr).await;
        a.join("r").await;
        b.join("r").await;
        a.send(&msg("r", "a", 1)).await;
        assert_eq!(b.recv().await, msg("r", "a", 1));
        b.send(&msg("r", "b", 2)).await;
        assert_eq!(a.recv().await, msg("r", "b", 2));
        // Each node still ignores its own messages: nothing else arrives.
        a.send(&msg("r", "a", 3)).await;
        assert_eq!(b.recv().await, msg("r", "a", 3));
    });
    drop(nodes);
}

#[test]
fn mesh_declares_a_silent_peer_dead_and_sends_heartbeats() {
    use chatbench_servers::cluster::auth::{self, FrameTags, Party, TAG_LEN};
    use chatbench_servers::cluster::wire::{self, Frame, CLUSTER_PROTOCOL_VERSION, FLAG_SECRET};
    let mut cluster = chatbench_servers::ClusterConfig::new(
        1,
        chatbench_servers::BackplaneConfig::Mesh {
            listen: "127.0.0.1:0".parse().unwrap(),
            peers: Vec::new(),
        },
    );
    cluster.heartbeat = std::time::Duration::from_millis(50);
    cluster.dead_after = std::time::Duration::from_millis(400);
    cluster.secret = Some(conformance::test_secret());
    let secret = conformance::test_secret().as_bytes().to_vec();
    let config = chatbench_servers::ServerConfig {
        cluster: Some(cluster),
        ..test_config()
    };
    let node = chatbench_servers::cluster::spawn_node(config, "127.0.0.1:0".parse().unwrap())
        .expect("node starts");
    let mut s = std::net::TcpStream::connect(node.cluster_addr.unwrap()).unwrap();
    s.set_read_timeout(Some(conformance::WAIT)).unwrap();
    let read = |s: &mut std::net::TcpStream, tags: Option<&mut FrameTags>| {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).ok()?;
        if let Some(t) = tags {
            let mut tag = [0u8; TAG_LEN];
            s.read_exact(&mut tag).ok()?;
            assert!(t.verify(&[&len, &body], &tag));
        }
        Some(body)
    };
    // A peer that authenticates and then never sends another frame.
    let mine = Party {
        node_id: 9,
        incarnation: 1,
        nonce: auth::nonce(),
    };
    let hello = Frame::Hello {
        version: CLUSTER_PROTOCOL_VERSION,
        node_id: 9,
    };
    s.write_all(&wire::encode(&hello)).unwrap();
    let challenge = Frame::Challenge {
        incarnation: 1,
        nonce: mine.nonce,
        flags: FLAG_SECRET,
    };
    s.write_all(&wire::encode(&challenge)).unwrap();
    assert_eq!(read(&mut s, None).unwrap()[0], 1);
    let theirs = match wire::decode(read(&mut s, None).unwrap().into()) {
        Ok(Frame::Challenge {
            incarnation, nonce, ..
        }) => Party {
            node_id: 1,
            incarnation,
            nonce,
        },
        other => panic!("expected a challenge, got {other:?}"),
    };
    s.write_all(&wire::encode(&Frame::Auth(auth::proof(
        &secret, &mine, &theirs,
    ))))
    .unwrap();
    assert_eq!(read(&mut s, None).unwrap()[0], 11, "the node's proof");
    let mut tags = FrameTags::new(&secret, &theirs, &mine);
    let mut types = Vec::new();
    while let Some(body) = read(&mut s, Some(&mut tags)) {
        types.push(body[0]);
    }
    // The (empty) interest set and its Sync, then heartbeats until it gave up on us.
    assert_eq!(&types[..2], &[3, 6], "{types:?}");
    assert!(types[2..].iter().all(|&t| t == 8), "{types:?}");
    assert!(
        types.len() > 2,
        "no heartbeat before the link was closed: {types:?}"
    );
    block_on(async {
        let a = node.server.addr;
        wait_metric(a, "chatbench_backplane_peers_up", |v| v == 0.0).await;
    });
}
