//! The mesh backplane against a hostile peer (issue 19): a hand-driven peer speaks the wire
//! format itself, with no secret, a wrong one or the right one, and tries what an attacker
//! would — join without the secret, take over a live node's id, flood rooms, send frames that
//! break the format or a tag, stay silent — against real nodes on 127.0.0.1. And the Redis
//! backplane with a password and with an ACL user.

mod conformance;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatbench_servers::cluster::auth::{self, FrameTags, Party, TAG_LEN};
use chatbench_servers::cluster::wire::{self, Frame, CLUSTER_PROTOCOL_VERSION, FLAG_SECRET};
use chatbench_servers::cluster::{spawn_node, ClusterNode};
use chatbench_servers::{BackplaneConfig, ClusterConfig, ClusterSecret, ServerConfig};
use conformance::{
    block_on, metrics, msg, start_mesh_node, test_config, test_secret, value, wait_metric, Client,
    RedisServer,
};

/// A mesh peer driven by hand: frames as the wire module encodes them, tags once
/// authenticated.
struct RawPeer {
    s: TcpStream,
    out: Option<FrameTags>,
    inn: Option<FrameTags>,
}

impl RawPeer {
    fn connect(cluster: SocketAddr) -> RawPeer {
        let s = TcpStream::connect(cluster).expect("connect to the mesh port");
        s.set_read_timeout(Some(conformance::WAIT)).unwrap();
        RawPeer {
            s,
            out: None,
            inn: None,
        }
    }

    fn send_bytes(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.s.write_all(frame)?;
        if let Some(t) = &mut self.out {
            self.s.write_all(&t.sign(&[frame]))?;
        }
        Ok(())
    }

    fn send(&mut self, f: &Frame) -> std::io::Result<()> {
        self.send_bytes(&wire::encode(f))
    }

    /// The node's next frame; `None` once it closed the link. A refusal is returned even when
    /// its tag is missing (a node refuses a failed handshake before tags start).
    fn recv(&mut self) -> Option<Frame> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).ok()?;
        let frame = wire::decode(Bytes::from(body.clone())).expect("the node sends valid frames");
        if let Some(t) = &mut self.inn {
            let mut tag = [0u8; TAG_LEN];
            if self.s.read_exact(&mut tag).is_err() {
                return matches!(frame, Frame::Refuse(_)).then_some(frame);
            }
            assert!(t.verify(&[&len, &body], &tag), "the node's tag checks");
        }
        Some(frame)
    }

    /// Frames until the node closes the link.
    fn drain(&mut self) -> Vec<Frame> {
        std::iter::from_fn(|| self.recv()).collect()
    }

    /// Leaves as a node does: withdraws its interest (`Reset`), waits until the node applied it
    /// (a `Sync` answered), then closes its side and reads to the end.
    fn leave(mut self) {
        self.send(&Frame::Reset).unwrap();
        self.send(&Frame::Sync(77)).unwrap();
        while let Some(f) = self.recv() {
            if f == Frame::SyncAck(77) {
                break;
            }
        }
        self.s.shutdown(std::net::Shutdown::Write).unwrap();
        self.drain();
    }

    /// Says hello as node `id` of process `incarnation`, proving `secret` (`None`: claims to
    /// have none). `Err` with the node's reason when it refuses.
    fn handshake(
        &mut self,
        id: u64,
        incarnation: u64,
        secret: Option<&[u8]>,
    ) -> Result<(), String> {
        self.handshake_then(id, incarnation, secret, &[])
    }

    /// [`RawPeer::handshake`], sending `early` frames right behind its proof, before the node's
    /// proof has arrived (as a fast peer may).
    fn handshake_then(
        &mut self,
        id: u64,
        incarnation: u64,
        secret: Option<&[u8]>,
        early: &[Frame],
    ) -> Result<(), String> {
        let mine = Party {
            node_id: id,
            incarnation,
            nonce: auth::nonce(),
        };
        let flags = if secret.is_some() { FLAG_SECRET } else { 0 };
        self.send(&Frame::Hello {
            version: CLUSTER_PROTOCOL_VERSION,
            node_id: id,
        })
        .unwrap();
        self.send(&Frame::Challenge {
            incarnation,
            nonce: mine.nonce,
            flags,
        })
        .unwrap();
        let node_id = match self.recv() {
            Some(Frame::Hello { node_id, .. }) => node_id,
            other => panic!("expected the node's hello, got {other:?}"),
        };
        let theirs = match self.recv() {
            Some(Frame::Challenge {
                incarnation, nonce, ..
            }) => Party {
                node_id,
                incarnation,
                nonce,
            },
            other => panic!("expected the node's challenge, got {other:?}"),
        };
        let key = secret.unwrap_or_default();
        // The node may have refused already; a failed write then shows in what it sent.
        let mut out = wire::encode(&Frame::Auth(auth::proof(key, &mine, &theirs))).to_vec();
        if let Some(k) = secret {
            let mut tags = FrameTags::new(k, &mine, &theirs);
            for f in early {
                let frame = wire::encode(f);
                out.extend_from_slice(&frame);
                out.extend_from_slice(&tags.sign(&[&frame]));
            }
            self.out = Some(tags);
        }
        let _ = self.s.write_all(&out);
        match self.recv() {
            // With a wrong secret its proof does not check here either; its refusal follows.
            Some(Frame::Auth(p)) if !auth::check_proof(key, &theirs, &mine, &p) => {
                return match self.recv() {
                    Some(Frame::Refuse(why)) => Err(why),
                    other => panic!("expected a refusal after a wrong proof, got {other:?}"),
                };
            }
            Some(Frame::Auth(_)) => {}
            Some(Frame::Refuse(why)) => return Err(why),
            other => panic!("expected the node's proof, got {other:?}"),
        }
        if let Some(k) = secret {
            self.inn = Some(FrameTags::new(k, &theirs, &mine));
        }
        // Linked, or refused after the proofs (a live id claimed again).
        match self.recv() {
            Some(Frame::Refuse(why)) => Err(why),
            Some(Frame::Reset) => Ok(()),
            other => panic!("expected the node's interest set, got {other:?}"),
        }
    }
}

fn secret() -> Vec<u8> {
    test_secret().as_bytes().to_vec()
}

/// A mesh node with `tweak` applied to its cluster settings (test secret, loopback ports).
fn node_with(
    id: u64,
    peers: Vec<SocketAddr>,
    tweak: impl FnOnce(&mut ClusterConfig),
) -> ClusterNode {
    let mut cluster = ClusterConfig::new(
        id,
        BackplaneConfig::Mesh {
            listen: "127.0.0.1:0".parse().unwrap(),
            peers,
        },
    );
    cluster.reconnect_max = Duration::from_millis(300);
    cluster.secret = Some(test_secret());
    tweak(&mut cluster);
    let config = ServerConfig {
        cluster: Some(cluster),
        ..test_config()
    };
    spawn_node(config, "127.0.0.1:0".parse().unwrap()).expect("node starts")
}

async fn m(addr: SocketAddr, sample: &str) -> f64 {
    value(&metrics(addr).await, sample)
}

#[test]
fn a_hello_without_the_secret_is_refused_and_reads_nothing() {
    let node = node_with(1, Vec::new(), |_| {});
    let cluster = node.cluster_addr.unwrap();
    // No secret at all.
    let why = RawPeer::connect(cluster).handshake(9, 1, None).unwrap_err();
    assert!(
        why.contains("uses a cluster secret and node 9 has none"),
        "{why}"
    );
    // Today's attack: hello, then interest in a private room, with no challenge or proof.
    let mut spy = RawPeer::connect(cluster);
    spy.send(&Frame::Hello {
        version: CLUSTER_PROTOCOL_VERSION,
        node_id: 9,
    })
    .unwrap();
    let _ = spy.send(&Frame::Add("private".into()));
    let _ = spy.send(&Frame::Sync(1));
    block_on(async {
        let a = node.server.addr;
        let mut alice = Client::connect(a).await;
        alice.join("private").await;
        let mut bob = Client::connect(a).await;
        bob.join("private").await;
        alice.send(&msg("private", "alice", 1)).await;
        assert_eq!(bob.recv().await, msg("private", "alice", 1));
        wait_metric(a, "chatbench_backplane_refused_total", |v| v == 2.0).await;
        assert_eq!(m(a, "chatbench_backplane_peers_up").await, 0.0);
        assert_eq!(m(a, "chatbench_backplane_forwarded_total").await, 0.0);
        assert_eq!(m(a, "chatbench_backplane_peer_rooms").await, 0.0);
    });
    let frames = spy.drain();
    assert!(
        matches!(frames.last(), Some(Frame::Refuse(why)) if why.contains("expected a challenge, got add")),
        "{frames:?}"
    );
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Msg { .. })),
        "{frames:?}"
    );
}

#[test]
fn frames_sent_right_behind_the_proof_are_not_lost() {
    let node = node_with(1, Vec::new(), |_| {});
    let mut p = RawPeer::connect(node.cluster_addr.unwrap());
    let early = [Frame::Reset, Frame::Add("early".into()), Frame::Sync(5)];
    p.handshake_then(7, 1, Some(&secret()), &early).unwrap();
    let frames: Vec<Frame> = std::iter::from_fn(|| p.recv())
        .take_while(|f| *f != Frame::SyncAck(5))
        .collect();
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Refuse(_))),
        "{frames:?}"
    );
    block_on(async {
        let a = node.server.addr;
        assert_eq!(m(a, "chatbench_backplane_peer_rooms").await, 1.0);
        assert_eq!(m(a, "chatbench_backplane_invalid_total").await, 0.0);
    });
}

#[test]
fn a_wrong_secret_is_refused_by_nodes_and_by_strangers() {
    let a = node_with(1, Vec::new(), |_| {});
    let other = ClusterSecret::from_text("another-cluster-entirely").unwrap();
    let b = node_with(2, vec![a.cluster_addr.unwrap()], |c| c.secret = Some(other));
    let why = RawPeer::connect(a.cluster_addr.unwrap())
        .handshake(9, 1, Some(b"a-guess-at-the-secret"))
        .unwrap_err();
    assert!(why.contains("authentication failed"), "{why}");
    block_on(async {
        // b keeps dialling a and is refused each time, both ways.
        for n in [a.server.addr, b.server.addr] {
            wait_metric(n, "chatbench_backplane_refused_total", |v| v >= 2.0).await;
            assert_eq!(m(n, "chatbench_backplane_peers_up").await, 0.0);
        }
    });
}

#[test]
fn a_live_nodes_id_cannot_be_claimed_again() {
    let n1 = start_mesh_node(&test_config(), 1, Vec::new());
    let n2 = start_mesh_node(&test_config(), 2, vec![n1.cluster_addr.unwrap()]);
    let (a1, a2) = (n1.server.addr, n2.server.addr);
    block_on(async {
        for a in [a1, a2] {
            wait_metric(a, "chatbench_backplane_peers_up", |v| v == 1.0).await;
        }
    });
    // Even a holder of the secret cannot take over node 2's live link.
    let why = RawPeer::connect(n1.cluster_addr.unwrap())
        .handshake(2, 0xdead, Some(&secret()))
        .unwrap_err();
    assert!(why.contains("node id 2 is already linked"), "{why}");
    block_on(async {
        assert_eq!(m(a1, "chatbench_backplane_refused_total").await, 1.0);
        assert_eq!(m(a1, "chatbench_backplane_peers_up").await, 1.0);
        let mut x = Client::connect(a1).await;
        x.join("r").await;
        let mut y = Client::connect(a2).await;
        y.join("r").await;
        for seq in 0..50 {
            x.send(&msg("r", "x", seq)).await;
        }
        for seq in 0..50 {
            assert_eq!(y.recv().await, msg("r", "x", seq));
        }
        assert_eq!(m(a1, "chatbench_backplane_lost_total").await, 0.0);
    });
}

#[test]
fn a_peers_rooms_are_bounded_and_freed_when_it_leaves_or_misbehaves() {
    let node = node_with(1, Vec::new(), |c| c.max_remote_rooms = 100);
    let (cluster, a) = (node.cluster_addr.unwrap(), node.server.addr);
    let rooms = |p: &mut RawPeer, n: usize| {
        for i in 0..n {
            // Past the bound the node closes the link: later writes may fail.
            let _ = p.send(&Frame::Add(format!("room-{i}").into()));
        }
    };
    // Within the bound: kept; a leave (Reset, then close) frees it.
    let mut p = RawPeer::connect(cluster);
    p.handshake(7, 1, Some(&secret())).unwrap();
    rooms(&mut p, 100);
    block_on(wait_metric(a, "chatbench_backplane_peer_rooms", |v| {
        v == 100.0
    }));
    p.leave();
    block_on(async {
        wait_metric(a, "chatbench_backplane_peer_rooms", |v| v == 0.0).await;
        wait_metric(a, "chatbench_backplane_peers_up", |v| v == 0.0).await;
    });
    // Past it: the link is closed, counted, and what it declared is freed.
    let mut p = RawPeer::connect(cluster);
    p.handshake(7, 2, Some(&secret())).unwrap();
    rooms(&mut p, 150);
    p.drain();
    block_on(async {
        wait_metric(a, "chatbench_backplane_invalid_total", |v| v == 1.0).await;
        wait_metric(a, "chatbench_backplane_peer_rooms", |v| v == 0.0).await;
        wait_metric(a, "chatbench_backplane_peers_up", |v| v == 0.0).await;
    });
    // Room names the protocol does not allow, and a Msg that is not a client msg.
    let bad: Vec<Vec<u8>> = vec![
        b"\x00\x00\x00\x04\x04a b".to_vec(),
        wire::encode_msg("r", b"<script>alert(1)</script>").to_vec(),
        wire::encode_msg("r", br#"{"t":"msg","room":"other"}"#).to_vec(),
    ];
    block_on(async {
        let mut member = Client::connect(a).await;
        member.join("r").await;
        for (i, frame) in bad.iter().enumerate() {
            let mut p = RawPeer::connect(cluster);
            p.handshake(7, 10 + i as u64, Some(&secret())).unwrap();
            p.send_bytes(frame).unwrap();
            p.drain();
            wait_metric(a, "chatbench_backplane_invalid_total", |v| {
                v == 2.0 + i as f64
            })
            .await;
        }
        // A frame whose tag does not match (as if altered in transit).
        let mut p = RawPeer::connect(cluster);
        p.handshake(7, 20, Some(&secret())).unwrap();
        p.out = None;
        let mut forged = wire::encode(&Frame::Ping).to_vec();
        forged.extend_from_slice(&[0u8; TAG_LEN]);
        p.send_bytes(&forged).unwrap();
        p.drain();
        wait_metric(a, "chatbench_backplane_invalid_total", |v| v == 5.0).await;
        // A valid msg still arrives, and it is the only one the member got.
        let mut p = RawPeer::connect(cluster);
        p.handshake(7, 30, Some(&secret())).unwrap();
        let ok = msg("r", "peer", 1);
        p.send_bytes(&wire::encode_msg("r", ok.as_bytes())).unwrap();
        assert_eq!(member.recv().await, ok);
        assert_eq!(m(a, "chatbench_backplane_received_total").await, 1.0);
    });
}

#[test]
fn silent_and_unauthenticated_peers_hold_nothing_and_do_not_delay_joins() {
    let node = node_with(1, Vec::new(), |c| {
        c.join_sync_timeout = Duration::from_secs(30);
        c.handshake_timeout = Duration::from_millis(500);
        c.max_pending = 4;
    });
    let (cluster, a) = (node.cluster_addr.unwrap(), node.server.addr);
    // Ten connections that never say anything, and one that says hello and then only pings
    // (which, before authentication existed, held a live link whose missing `SyncAck` every
    // join of a new room waited for).
    let silent: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(cluster).unwrap())
        .collect();
    let mut talker = TcpStream::connect(cluster).unwrap();
    let hello = wire::encode(&Frame::Hello {
        version: CLUSTER_PROTOCOL_VERSION,
        node_id: 9,
    });
    let _ = talker.write_all(&hello);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let ping = wire::encode(&Frame::Ping);
            for _ in 0..400 {
                if stop.load(std::sync::atomic::Ordering::SeqCst)
                    || talker.write_all(&ping).is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    block_on(async {
        let start = Instant::now();
        let mut c = Client::connect(a).await;
        c.join("fresh-room").await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a join waited {:?} for a peer that never authenticated",
            start.elapsed()
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Beyond the 4 pending slots closed at once, the rest dropped after the timeout.
        wait_metric(a, "chatbench_backplane_refused_total", |v| v == 11.0).await;
        assert_eq!(m(a, "chatbench_backplane_peers_up").await, 0.0);
    });
    pinger.join().unwrap();
    for mut s in silent {
        s.set_read_timeout(Some(conformance::WAIT)).unwrap();
        let mut buf = Vec::new();
        // The node's hello and challenge, then the end of the connection.
        assert!(
            s.read_to_end(&mut buf).is_ok(),
            "the node closes a silent link"
        );
    }
    // Slots are free again: a real node links.
    let b = node_with(2, vec![cluster], |_| {});
    block_on(async {
        wait_metric(a, "chatbench_backplane_peers_up", |v| v == 1.0).await;
        wait_metric(b.server.addr, "chatbench_backplane_peers_up", |v| v == 1.0).await;
    });
}

/// A private redis-server with extra configuration arguments.
fn redis_with(args: &[&str]) -> RedisServer {
    RedisServer::start_with(args.iter().map(|s| s.to_string()).collect())
}

fn redis_node(id: u64, url: &str) -> ClusterNode {
    conformance::start_redis_node(&test_config(), id, url)
}

fn crosses(a: &ClusterNode, b: &ClusterNode) {
    let (a, b) = (a.server.addr, b.server.addr);
    block_on(async {
        for n in [a, b] {
            wait_metric(n, "chatbench_backplane_peers_up", |v| v == 2.0).await;
        }
        let mut x = Client::connect(a).await;
        x.join("r").await;
        let mut y = Client::connect(b).await;
        y.join("r").await;
        x.send(&msg("r", "x", 1)).await;
        assert_eq!(y.recv().await, msg("r", "x", 1));
    });
}

fn preflight(url: &str) -> Result<(), String> {
    let config = ServerConfig {
        cluster: Some(ClusterConfig::new(
            1,
            BackplaneConfig::Redis { url: url.into() },
        )),
        ..test_config()
    };
    chatbench_servers::cluster::preflight(&config).map_err(|e| e.to_string())
}

#[test]
fn redis_backplane_authenticates_with_a_password() {
    let redis = redis_with(&["--requirepass", "s3cret-pw"]);
    let port = redis.port;
    // Without the password, or with a wrong one: an error that names the URL, not the password.
    let e = preflight(&format!("redis://127.0.0.1:{port}")).unwrap_err();
    assert!(e.contains("password"), "{e}");
    let e = preflight(&format!("redis://:wrong-pw@127.0.0.1:{port}")).unwrap_err();
    assert!(
        e.contains(":***@127.0.0.1") && !e.contains("wrong-pw"),
        "{e}"
    );
    let url = format!("redis://:s3cret-pw@127.0.0.1:{port}");
    assert_eq!(preflight(&url), Ok(()));
    let (a, b) = (redis_node(1, &url), redis_node(2, &url));
    crosses(&a, &b);
}

#[test]
fn redis_backplane_authenticates_with_an_acl_user() {
    // The default user is off; "chatbench" may only publish and subscribe to room channels.
    let redis = redis_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "chatbench",
        "on",
        ">acl-pw",
        "resetchannels",
        "&chatbench:room:*",
        "-@all",
        "+ping",
        "+publish",
        "+subscribe",
        "+unsubscribe",
    ]);
    let port = redis.port;
    let e = preflight(&format!("redis://127.0.0.1:{port}")).unwrap_err();
    assert!(e.contains("Redis"), "{e}");
    let e = preflight(&format!("redis://chatbench:nope@127.0.0.1:{port}")).unwrap_err();
    assert!(e.contains("chatbench:***@") && !e.contains("nope"), "{e}");
    let url = format!("redis://chatbench:acl-pw@127.0.0.1:{port}");
    assert_eq!(preflight(&url), Ok(()));
    let (a, b) = (redis_node(1, &url), redis_node(2, &url));
    crosses(&a, &b);
}

#[test]
fn redis_messages_that_are_not_client_msgs_are_dropped_and_counted() {
    let redis = RedisServer::start();
    let a = redis_node(1, &redis.url());
    block_on(async {
        let addr = a.server.addr;
        wait_metric(addr, "chatbench_backplane_peers_up", |v| v == 2.0).await;
        let mut member = Client::connect(addr).await;
        member.join("r").await;
        let client = redis_client(redis.port);
        // Someone with access to Redis publishes garbage, then a spoofed room, then a valid msg.
        let mut payload = vec![0u8; 16];
        payload.extend_from_slice(b"<img src=x onerror=alert(1)>");
        client.publish("chatbench:room:r", &payload);
        let mut spoof = vec![0u8; 16];
        spoof.extend_from_slice(msg("other", "x", 1).as_bytes());
        client.publish("chatbench:room:r", &spoof);
        let mut ok = vec![0u8; 16];
        ok.extend_from_slice(msg("r", "x", 2).as_bytes());
        client.publish("chatbench:room:r", &ok);
        assert_eq!(member.recv().await, msg("r", "x", 2));
        assert_eq!(m(addr, "chatbench_backplane_invalid_total").await, 2.0);
    });
}

/// A minimal RESP client for `PUBLISH` (the test must not share the node's code).
struct RespClient(std::cell::RefCell<TcpStream>);

fn redis_client(port: u16) -> RespClient {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(conformance::WAIT)).unwrap();
    RespClient(std::cell::RefCell::new(s))
}

impl RespClient {
    fn publish(&self, channel: &str, payload: &[u8]) {
        let mut cmd = format!(
            "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n",
            channel.len(),
            payload.len()
        )
        .into_bytes();
        cmd.extend_from_slice(payload);
        cmd.extend_from_slice(b"\r\n");
        let mut s = self.0.borrow_mut();
        s.write_all(&cmd).unwrap();
        let mut reply = [0u8; 64];
        let n = s.read(&mut reply).unwrap();
        assert!(
            reply[..n].starts_with(b":1"),
            "{:?}",
            String::from_utf8_lossy(&reply[..n])
        );
    }
}

#[test]
fn random_bytes_at_the_mesh_port_never_link_nor_stop_the_node() {
    use rand::{Rng, RngCore, SeedableRng};
    let node = node_with(1, Vec::new(), |c| {
        c.handshake_timeout = Duration::from_millis(300)
    });
    let (cluster, a) = (node.cluster_addr.unwrap(), node.server.addr);
    // Fixed seed: a failure reproduces.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(19);
    let hello = wire::encode(&Frame::Hello {
        version: CLUSTER_PROTOCOL_VERSION,
        node_id: 9,
    });
    for i in 0..200 {
        let mut bytes = vec![0u8; rng.random_range(0..2048)];
        rng.fill_bytes(&mut bytes);
        if i % 2 == 0 {
            // Half of them get past the hello first.
            bytes.splice(0..0, hello.iter().copied());
        }
        let mut s = TcpStream::connect(cluster).unwrap();
        let _ = s.write_all(&bytes);
    }
    // Still serving, nobody linked, and a real node links.
    let b = node_with(2, vec![cluster], |_| {});
    block_on(async {
        wait_metric(a, "chatbench_backplane_peers_up", |v| v == 1.0).await;
        wait_metric(b.server.addr, "chatbench_backplane_peers_up", |v| v == 1.0).await;
        let refused = m(a, "chatbench_backplane_refused_total").await;
        assert!(refused >= 1.0, "{refused}");
        let mut c = Client::connect(a).await;
        c.join("r").await;
    });
}
