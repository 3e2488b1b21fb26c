//! The epoll path over real loopback sockets: a test plays the server on one end of a TCP
//! connection, a worker reads the other; what the worker counted and answered is checked.

use super::*;
use crate::plan::{room_name, Plan};
use crate::stats::Stats;
use crate::target::Target;
use chatbench_model::scenario::Scenario;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// An engine's shared state for one room of three (one sender), with `extra` scenario lines.
fn engine(extra: &str) -> (Arc<Shared>, ConnPlan, String) {
    let (shared, plan, from, _phase) = engine_with_phase(extra);
    (shared, plan, from)
}

/// As [`engine`], with the sender of the run's phase (dropping it stops the run).
fn engine_with_phase(
    extra: &str,
) -> (
    Arc<Shared>,
    ConnPlan,
    String,
    tokio::sync::watch::Sender<Phase>,
) {
    let scenario = Arc::new(
        Scenario::parse(
            &format!(
                "name='t'\nconnections=3\nrooms=1\nmembers_per_room=3\nsenders_per_room=1\n{extra}"
            ),
            "t",
        )
        .expect("valid"),
    );
    let plan = Plan::new(&scenario, 0);
    let receiver = *plan
        .conns
        .iter()
        .find(|c| c.role == Role::Receiver)
        .expect("a receiver");
    let sender = plan
        .conns
        .iter()
        .find(|c| c.role == Role::Sender)
        .expect("a sender")
        .index;
    let from = plan.conn_id(sender);
    let target = Target::parse("ws://127.0.0.1:9/ws").expect("url");
    let (shared, phase) = Shared::new(scenario, plan, vec![target], Vec::new());
    (shared, receiver, from, phase)
}

/// A connected pair: the test's server end (blocking, with a read timeout) and a worker
/// reading the client end. Returns the server end and the connection's ticket.
fn attach(shared: &Arc<Shared>, plan: ConnPlan) -> (std::net::TcpStream, oneshot::Receiver<Ended>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    client.set_nonblocking(true).expect("non-blocking");
    let (done, ticket) = oneshot::channel();
    let conn = Conn::new(
        mio::net::TcpStream::from_std(client),
        plan,
        Receiver::new(shared),
        Vec::new(),
        done,
    );
    assert!(shared.rx.add(shared.clone(), Box::new(conn)).is_ok());
    (server, ticket)
}

/// A server frame (never masked).
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![b0];
    let len = payload.len();
    if len < 126 {
        v.push(len as u8);
    } else {
        v.push(126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn msg(from: &str, seq: u64) -> String {
    format!(
        r#"{{"t":"msg","room":"{}","from":"{from}","seq":{seq},"ts":1,"body":"xx"}}"#,
        room_name(0)
    )
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (bounded) for the connection to come back from its worker.
fn ended(mut ticket: oneshot::Receiver<Ended>) -> Ended {
    let t0 = Instant::now();
    loop {
        match ticket.try_recv() {
            Ok(e) => return e,
            Err(oneshot::error::TryRecvError::Empty) => {
                assert!(t0.elapsed() < Duration::from_secs(10), "never handed back");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("the worker dropped the connection: {e}"),
        }
    }
}

/// Reads one masked client frame from the server end: (first byte, unmasked payload).
fn read_client_frame(server: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    server.read_exact(&mut head).expect("a frame header");
    assert_ne!(head[1] & 0x80, 0, "client frames are masked");
    let len = (head[1] & 0x7f) as usize;
    assert!(len < 126, "short control frames only here");
    let mut mask = [0u8; 4];
    server.read_exact(&mut mask).expect("mask");
    let mut payload = vec![0u8; len];
    server.read_exact(&mut payload).expect("payload");
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    (head[0], payload)
}

fn counters(shared: &Shared) -> (u64, u64) {
    let c = &shared.stats.counters;
    (Stats::get(&c.delivered), Stats::get(&c.duplicated))
}

#[test]
fn deliveries_duplicates_and_fragments_are_judged_as_on_the_tokio_path() {
    let (shared, plan, from) = engine("");
    let (mut server, ticket) = attach(&shared, plan);
    let mut bytes = Vec::new();
    for seq in [1u64, 2, 2, 3] {
        bytes.extend(frame(0x81, msg(&from, seq).as_bytes()));
    }
    // seq 4 in three fragments, written in pieces that split headers too.
    let m4 = msg(&from, 4);
    let (a, rest) = m4.as_bytes().split_at(10);
    let (b, c) = rest.split_at(20);
    bytes.extend(frame(0x01, a));
    bytes.extend(frame(0x00, b));
    bytes.extend(frame(0x80, c));
    for piece in bytes.chunks(7) {
        server.write_all(piece).expect("write");
    }
    eventually("4 deliveries and 1 duplicate", || {
        counters(&shared) == (5, 1)
    });
    shared.rx.stop_all();
    let e = ended(ticket);
    assert_eq!(e.exit, Exit::Stop);
    assert_eq!(shared.stats.closed_by_server.total(), 0);
    assert!(shared.stats.unexpected_frames().is_empty());
}

#[test]
fn a_pong_behind_a_full_send_buffer_goes_out_once_the_socket_takes_it() {
    // What a receive-only connection owes waits for its socket's room, and goes out then.
    let (shared, plan, _) = engine("");
    // Small fixed buffers (no autotuning), so a full send buffer stays full until the server
    // reads.
    let small = |s: &socket2::Socket| {
        s.set_send_buffer_size(16 * 1024).expect("SO_SNDBUF");
        s.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    };
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    small(&listener);
    listener
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    listener.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let client =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    small(&client);
    client.connect(&addr).expect("connect");
    let client: std::net::TcpStream = client.into();
    let (server, _) = listener.accept().expect("accept");
    let mut server: std::net::TcpStream = server.into();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    client.set_nonblocking(true).expect("non-blocking");
    // A second handle on the client's socket, to fill its send buffer while the worker has it.
    let mut filler = client.try_clone().expect("clone");
    let (done, _ticket) = oneshot::channel();
    let conn = Conn::new(
        mio::net::TcpStream::from_std(client),
        plan,
        Receiver::new(&shared),
        Vec::new(),
        done,
    );
    assert!(shared.rx.add(shared.clone(), Box::new(conn)).is_ok());
    // Big writes, then single bytes (a small write may still go into the last segment's room
    // after a big one is refused): the bytes written.
    let mut fill = || {
        let mut junk = 0usize;
        for size in [64 * 1024, 1] {
            let chunk = vec![0u8; size];
            loop {
                match filler.write(&chunk) {
                    Ok(n) => junk += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("filling: {e}"),
                }
                assert!(junk < 1 << 30, "the send buffer never filled");
            }
        }
        junk
    };
    // What the server has received, it acknowledges (at the latest by its delayed ACK), which
    // frees that much of the client's send buffer, and any segment of the server's carries
    // that acknowledgement. So: fill, wait for the acknowledgement, fill again with the
    // server's window closed (nothing more can be acknowledged), then ping: the pong cannot
    // be written.
    let mut junk = fill();
    std::thread::sleep(Duration::from_millis(300));
    junk += fill();
    server.write_all(&frame(0x89, b"hello")).expect("ping");
    std::thread::sleep(Duration::from_millis(100));
    // The server reads: the client's socket takes the pong, and only a writable event brings
    // the worker back to write it (no more reads come).
    let mut rest = vec![0u8; junk];
    server.read_exact(&mut rest).expect("the junk");
    assert_eq!(read_client_frame(&mut server), (0x8A, b"hello".to_vec()));
}

#[test]
fn a_ping_is_answered_with_its_pong_and_a_close_is_counted_under_its_code() {
    let (shared, plan, _) = engine("");
    let (mut server, ticket) = attach(&shared, plan);
    server.write_all(&frame(0x89, b"hello")).expect("ping");
    assert_eq!(read_client_frame(&mut server), (0x8A, b"hello".to_vec()));
    server
        .write_all(&frame(0x88, b"\x03\xe8bye"))
        .expect("close");
    let e = ended(ticket);
    assert_eq!(e.exit, Exit::Gone);
    assert_eq!(read_client_frame(&mut server), (0x88, vec![0x03, 0xe8]));
    assert_eq!(
        shared
            .stats
            .closed_by_server
            .snapshot()
            .get("1000")
            .copied(),
        Some(1)
    );
}

#[test]
fn oversize_masked_and_binary_frames_are_handled_as_on_the_tokio_path() {
    // An oversize frame ends the connection as a reset, from its header alone.
    let (shared, plan, _) = engine("[client]\nmax_message_size = 1024\n");
    let (mut server, ticket) = attach(&shared, plan);
    server
        .write_all(&[0x81, 126, 0x13, 0x88])
        .expect("a 5,000-byte header");
    assert_eq!(ended(ticket).exit, Exit::Gone);
    assert_eq!(
        shared
            .stats
            .closed_by_server
            .snapshot()
            .get("reset")
            .copied(),
        Some(1)
    );
    // A message over the limit in fragments that are each within it: a reset too.
    let (shared, plan, _) = engine("[client]\nmax_message_size = 1024\n");
    let (mut server, ticket) = attach(&shared, plan);
    server.write_all(&frame(0x01, &[b'a'; 600])).expect("first");
    server.write_all(&frame(0x80, &[b'a'; 600])).expect("last");
    assert_eq!(ended(ticket).exit, Exit::Gone);
    assert_eq!(shared.stats.closed_by_server.total(), 1);
    // A masked frame from the server is a protocol error.
    let (shared, plan, _) = engine("");
    let (mut server, ticket) = attach(&shared, plan);
    server
        .write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
        .expect("masked");
    assert_eq!(ended(ticket).exit, Exit::Gone);
    assert_eq!(
        shared
            .stats
            .closed_by_server
            .snapshot()
            .get("reset")
            .copied(),
        Some(1)
    );
    // A binary frame is a bad frame, and the connection goes on; then the peer hangs up.
    let (shared, plan, _) = engine("");
    let (mut server, ticket) = attach(&shared, plan);
    server.write_all(&frame(0x82, &[0; 5])).expect("binary");
    eventually("the bad frame counted", || {
        Stats::get(&shared.stats.counters.bad_frames) == 1
    });
    drop(server);
    assert_eq!(ended(ticket).exit, Exit::Gone);
    assert_eq!(
        shared
            .stats
            .closed_by_server
            .snapshot()
            .get("reset")
            .copied(),
        Some(1)
    );
}

#[test]
fn only_plain_receive_only_chatbench_connections_ride_the_epoll_path() {
    let (shared, plan, _) = engine("");
    assert!(applies(&shared, plan));
    let sender = shared
        .plan
        .conns
        .iter()
        .find(|c| c.role == Role::Sender)
        .copied()
        .expect("sender");
    // A sender reads here too; its writes go through the pacer (`tx`).
    assert!(applies(&shared, sender));
    assert!(crate::tx::applies(&shared, sender) && !crate::tx::applies(&shared, plan));
    let (shared, plan, _) = engine("[client]\nsend_path = \"tokio\"\n");
    assert!(
        applies(&shared, plan),
        "send_path = tokio: receivers still ride"
    );
    assert!(
        !applies(&shared, sender),
        "send_path = tokio: senders stay on tokio"
    );
    let (shared, plan, _) = engine("[client]\nreceive_path = \"tokio\"\n");
    assert!(!applies(&shared, plan), "receive_path = tokio");
    let (shared, plan, _) = engine("[reconnect]\nenabled = true\n");
    assert!(
        !applies(&shared, plan),
        "reconnecting connections stay on tokio"
    );
    let (shared, plan, _) = engine("protocol = \"socketio\"\n");
    assert!(!applies(&shared, plan), "other profiles stay on tokio");
}

#[test]
fn a_connection_handed_over_after_the_stop_comes_straight_back() {
    let (shared, plan, _) = engine("");
    let (_server, first) = attach(&shared, plan);
    shared.rx.stop_all();
    assert_eq!(ended(first).exit, Exit::Stop);
    let (_server, late) = attach(&shared, plan);
    assert_eq!(
        ended(late).exit,
        Exit::Stop,
        "not held until the teardown gives up"
    );
}

/// A client WebSocket on the tapped transport with its handshake done (as `target::connect`
/// leaves it), and the test's server end (blocking, with a read timeout).
async fn tapped_pair(shared: &Shared) -> (WebSocketStream<Tapped>, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut tapped = Tapped::plain(client);
    let config = shared.ws_config();
    tapped.handshaken(&[], config.max_frame_size.unwrap_or(usize::MAX));
    let ws = WebSocketStream::from_raw_socket(tapped, WsRole::Client, Some(config)).await;
    (ws, server)
}

/// Waits (bounded) until `n` bytes wait on the client's socket, so that the hand-over's drain
/// reads them all into tungstenite.
async fn arrived(ws: &WebSocketStream<Tapped>, n: usize) {
    let t0 = Instant::now();
    let mut buf = vec![0u8; n + 1];
    loop {
        let got = ws.get_ref().tcp().peek(&mut buf).await.expect("peek");
        if got >= n {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "only {got} of {n} bytes came"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bytes_of_a_partly_read_frame_go_along_with_the_hand_over() {
    // The run goes on while the connection rides (its phase's sender kept).
    let (shared, plan, from, _phase) = engine_with_phase("");
    let (ws, mut server) = tapped_pair(&shared).await;
    let whole = frame(0x81, msg(&from, 1).as_bytes());
    let split = frame(0x81, msg(&from, 2).as_bytes());
    let mut first = whole.clone();
    first.extend_from_slice(&split[..9]);
    server.write_all(&first).expect("write");
    arrived(&ws, first.len()).await;
    let s2 = shared.clone();
    let handed = tokio::spawn(async move { hand_over(&s2, plan, ws).await });
    eventually("seq 1 judged, on the epoll path", || {
        shared.epoll_receivers() == 1 && counters(&shared) == (1, 0)
    });
    server.write_all(&split[9..]).expect("write");
    eventually("seq 2 judged once", || counters(&shared).0 == 2);
    server
        .write_all(&frame(0x88, &[0x03, 0xe8]))
        .expect("close");
    let hand = tokio::time::timeout(Duration::from_secs(10), handed)
        .await
        .expect("the connection comes back")
        .expect("no panic");
    assert!(matches!(hand, Hand::Gone), "closed by the server");
    assert_eq!(counters(&shared), (2, 0));
    assert_eq!(
        shared.stats.closed_by_server.snapshot().get("1000"),
        Some(&1)
    );
    assert_eq!(shared.stats.closed_by_server.total(), 1, "no reset");
    assert!(shared.stats.unexpected_frames().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_way_fragmented_message_keeps_the_connection_on_tokio() {
    let (shared, plan, from) = engine("");
    let (ws, mut server) = tapped_pair(&shared).await;
    let m = msg(&from, 1);
    let (a, b) = m.as_bytes().split_at(10);
    let first = frame(0x01, a);
    server.write_all(&first).expect("write");
    arrived(&ws, first.len()).await;
    let mut ws = match hand_over(&shared, plan, ws).await {
        Hand::Kept(ws) => ws,
        Hand::Stopped(_) | Hand::Gone => panic!("the first fragment is only in tungstenite"),
    };
    assert_eq!(shared.epoll_receivers(), 0);
    server.write_all(&frame(0x80, b)).expect("write");
    let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the message's end comes");
    match next {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), m, "the whole message, on tokio"),
        other => panic!("expected the message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_do_not_watch_the_phase_and_all_come_back_at_stop() {
    let (shared, plan, _from, phase) = engine_with_phase("");
    let before = phase.receiver_count();
    let mut servers = Vec::new();
    let mut handed = Vec::new();
    for _ in 0..8 {
        let (ws, server) = tapped_pair(&shared).await;
        servers.push(server);
        let s2 = shared.clone();
        handed.push(tokio::spawn(async move { hand_over(&s2, plan, ws).await }));
    }
    eventually("all 8 on the epoll path", || shared.epoll_receivers() == 8);
    // One watcher for the pool, not one receiver per parked connection: a phase change wakes
    // one task, whatever the number of connections.
    assert_eq!(phase.receiver_count(), before + 1);
    for p in [
        Phase::Settle,
        Phase::Warmup,
        Phase::Measure,
        Phase::Cooldown,
    ] {
        phase.send(p).expect("the engine holds a receiver");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        handed.iter().all(|h| !h.is_finished()),
        "the phases before stop leave them riding"
    );
    phase
        .send(Phase::Stop)
        .expect("the engine holds a receiver");
    for h in handed {
        let hand = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("every connection comes back at stop")
            .expect("no panic");
        assert!(
            matches!(hand, Hand::Stopped(_)),
            "back to be closed politely"
        );
    }
    assert_eq!(shared.stats.closed_by_server.total(), 0);
}

#[test]
fn many_ready_connections_are_each_judged_and_a_freed_slot_is_reused() {
    // Every connection ready at once (the worker prefetches each one's state before reading
    // them), one of them ending, and its slot taken by the next one handed over.
    let (shared, plan, from) = engine("");
    let mut conns: Vec<_> = (0..24).map(|_| attach(&shared, plan)).collect();
    let mut wire = Vec::new();
    for seq in [1u64, 2, 2] {
        wire.extend(frame(0x81, msg(&from, seq).as_bytes()));
    }
    for (server, _) in &mut conns {
        server.write_all(&wire).expect("write");
    }
    eventually("3 deliveries and 1 duplicate on each", || {
        counters(&shared) == (24 * 3, 24)
    });
    // One ends (end of stream: a reset); the next one handed over reads in its place.
    let (gone, ticket) = conns.pop().expect("one");
    drop(gone);
    assert_eq!(ended(ticket).exit, Exit::Gone);
    let (mut server, ticket) = attach(&shared, plan);
    server.write_all(&wire).expect("write");
    eventually("the new connection's frames", || {
        counters(&shared) == (25 * 3, 25)
    });
    shared.rx.stop_all();
    for (_, ticket) in conns.into_iter().chain([(server, ticket)]) {
        assert_eq!(ended(ticket).exit, Exit::Stop);
    }
    assert_eq!(
        shared.stats.closed_by_server.snapshot().get("reset"),
        Some(&1)
    );
    assert!(shared.stats.unexpected_frames().is_empty());
}

#[test]
fn a_non_ascii_message_is_judged_and_one_not_utf8_ends_the_connection() {
    let (shared, plan, from) = engine("");
    let (mut server, ticket) = attach(&shared, plan);
    // Not ASCII: the fast parse of raw bytes declines it; checked as UTF-8, it is judged.
    let text = format!(
        r#"{{"t":"msg","room":"{}","from":"{from}","seq":1,"ts":1,"body":"{}"}}"#,
        room_name(0),
        "h\u{e9}llo"
    );
    server
        .write_all(&frame(0x81, text.as_bytes()))
        .expect("write");
    eventually("the delivery", || counters(&shared) == (1, 0));
    // Not UTF-8 at all: a protocol error, the connection ends as a reset.
    let mut bad = msg(&from, 2).into_bytes();
    let at = bad.len() - 3;
    bad[at] = 0xff;
    server.write_all(&frame(0x81, &bad)).expect("write");
    assert_eq!(ended(ticket).exit, Exit::Gone);
    assert_eq!(counters(&shared), (1, 0));
    assert_eq!(
        shared.stats.closed_by_server.snapshot().get("reset"),
        Some(&1)
    );
}
