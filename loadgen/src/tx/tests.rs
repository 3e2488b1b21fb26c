//! The send path over real loopback sockets: a test plays the server on one end of a TCP
//! connection; the pacer writes the sender's messages into the other, which a receive worker
//! reads. What reached the server, frame by frame, is checked against what the engine counted.

use super::*;
use crate::engine::{Phase, Receiver};
use crate::pacer::{self, PacedSender};
use crate::plan::Plan;
use crate::rx::conn::Conn;
use crate::target::Target;
use chatbench_model::scenario::Scenario;
use std::io::Read;
use std::sync::atomic::AtomicBool;
use tokio::sync::{oneshot, watch};

/// An engine of one room of three with one sender, sending from now on; `extra` scenario lines.
fn engine(extra: &str) -> (Arc<Shared>, ConnPlan, watch::Sender<Phase>) {
    let scenario = Arc::new(
        Scenario::parse(
            &format!(
                "name='t'\nconnections=3\nrooms=1\nmembers_per_room=3\nsenders_per_room=1\n\
                 arrival='uniform'\nwarmup='0s'\n{extra}"
            ),
            "t",
        )
        .expect("valid"),
    );
    let plan = Plan::new(&scenario, 0);
    let sender = *plan
        .conns
        .iter()
        .find(|c| c.role == Role::Sender)
        .expect("a sender");
    let target = Target::parse("ws://127.0.0.1:9/ws").expect("url");
    let (shared, phase) = Shared::new(scenario, plan, vec![target], Vec::new());
    shared.set_timeline(Instant::now());
    (shared, sender, phase)
}

/// A connected pair with the client end handed over as the hand-over does for a sender: a
/// worker reads it, the pacer writes into its link. `small` shrinks both socket buffers (the
/// socket fills fast). Returns the server end and the connection's ticket.
fn hand_over(
    shared: &Arc<Shared>,
    plan: ConnPlan,
    small: bool,
) -> (std::net::TcpStream, oneshot::Receiver<crate::rx::Ended>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    if small {
        socket2::SockRef::from(&listener)
            .set_recv_buffer_size(4096)
            .expect("rcvbuf");
    }
    let client =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    if small {
        socket2::SockRef::from(&client)
            .set_send_buffer_size(4096)
            .expect("sndbuf");
    }
    client.set_nonblocking(true).expect("non-blocking");
    let link = attach(shared, plan, &client).expect("a sender of the send path");
    let (done, ticket) = oneshot::channel();
    let conn = Conn::new(
        mio::net::TcpStream::from_std(client),
        plan,
        Receiver::new(shared),
        Vec::new(),
        done,
    )
    .with_link(link.clone());
    assert!(shared.rx.add(shared.clone(), Box::new(conn)).is_ok());
    publish(shared, plan, &link);
    (server, ticket)
}

/// Reads one masked client frame from the server end: (first byte, unmasked payload).
fn read_frame(server: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    server.read_exact(&mut head).expect("a frame header");
    assert_ne!(head[1] & 0x80, 0, "client frames are masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            server.read_exact(&mut l).expect("length");
            usize::from(u16::from_be_bytes(l))
        }
        127 => panic!("no frame here is that long"),
        n => usize::from(n),
    };
    let mut mask = [0u8; 4];
    server.read_exact(&mut mask).expect("mask");
    let mut payload = vec![0u8; len];
    server.read_exact(&mut payload).expect("payload");
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    (head[0], payload)
}

/// The seq of a `msg` frame's text.
fn seq_of(text: &[u8]) -> u64 {
    let m = crate::fast_msg::parse(std::str::from_utf8(text).expect("utf-8")).expect("a msg");
    m.seq
}

/// Runs the pacer over the engine's senders on its own thread.
fn pace(shared: &Arc<Shared>) -> std::thread::JoinHandle<pacer::PacerReport> {
    let start = *shared.send_start.get().expect("timeline set");
    let senders: Vec<PacedSender> = shared.paced_senders();
    assert!(senders.iter().all(|s| s.direct.is_some()));
    std::thread::spawn(move || pacer::run(start, senders, Arc::new(AtomicBool::new(false))))
}

#[test]
fn the_pacer_writes_every_message_in_order_and_a_ping_is_answered_between_them() {
    let (shared, plan, _phase) = engine("rate_per_sender=100.0\nmeasure='500ms'\n");
    let scheduled = shared.schedule_of(plan.index).count() as u64;
    let (mut server, _ticket) = hand_over(&shared, plan, false);
    let pacer = pace(&shared);
    let mut seqs = Vec::new();
    let mut pongs = 0;
    // A ping after the fifth message: its pong comes back whole, between messages.
    while seqs.len() < scheduled as usize || pongs == 0 {
        let (b0, payload) = read_frame(&mut server);
        match b0 {
            0x81 => {
                seqs.push(seq_of(&payload));
                if seqs.len() == 5 {
                    server
                        .write_all(&[0x89, 3, b'a', b'b', b'c'])
                        .expect("ping");
                }
            }
            0x8a => {
                assert_eq!(payload, b"abc", "the pong carries the ping's payload");
                pongs += 1;
            }
            other => panic!("unexpected frame {other:#x}"),
        }
    }
    pacer.join().expect("the pacer ends");
    assert_eq!(pongs, 1);
    assert_eq!(
        seqs,
        (1..=scheduled).collect::<Vec<_>>(),
        "every message, once, in order"
    );
    let c = &shared.stats.counters;
    assert_eq!(Stats::get(&c.sent), scheduled);
    assert_eq!(Stats::get(&c.sent_window), scheduled);
    assert_eq!(Stats::get(&c.send_held), 0);
    assert_eq!(shared.pacer_senders(), 1);
    assert_eq!(
        shared.epoll_receivers(),
        0,
        "a sender is not a receive-only connection"
    );
    let w = shared.sender_windows();
    assert_eq!(
        (w[0].lo, w[0].hi),
        (1, scheduled),
        "the sender's window seqs"
    );
}

#[test]
fn a_full_socket_holds_the_sender_and_every_frame_arrives_whole_afterwards() {
    // 400 messages of ~4 KiB in 200 ms into 4 KiB socket buffers that nobody reads for a
    // while: the out-buffer fills (64 KiB), the sender is held, partial writes are kept.
    let (shared, plan, _phase) =
        engine("rate_per_sender=2000.0\nmeasure='200ms'\npayload_bytes=4000\n");
    let scheduled = shared.schedule_of(plan.index).count() as u64;
    let (mut server, _ticket) = hand_over(&shared, plan, true);
    let pacer = pace(&shared);
    let c = &shared.stats.counters;
    let t0 = Instant::now();
    while Stats::get(&c.send_held) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "never held");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut seqs = Vec::new();
    while seqs.len() < scheduled as usize {
        let (b0, payload) = read_frame(&mut server);
        assert_eq!(b0, 0x81, "only whole text frames");
        seqs.push(seq_of(&payload));
    }
    pacer.join().expect("the pacer ends");
    assert_eq!(seqs, (1..=scheduled).collect::<Vec<_>>());
    assert_eq!(Stats::get(&c.sent), scheduled);
    assert!(Stats::get(&c.send_held) > 0);
}

#[test]
fn a_sender_whose_connection_ended_reports_what_it_sent() {
    let (shared, plan, _phase) = engine("rate_per_sender=100.0\nmeasure='300ms'\n");
    let (mut server, mut ticket) = hand_over(&shared, plan, false);
    let pacer = pace(&shared);
    for _ in 0..3 {
        read_frame(&mut server);
    }
    drop(server);
    let t0 = Instant::now();
    let ended = loop {
        match ticket.try_recv() {
            Ok(e) => break e,
            Err(_) => {
                assert!(t0.elapsed() < Duration::from_secs(10), "never handed back");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    };
    assert_eq!(ended.exit, crate::rx::Exit::Gone);
    let link = shared.tx_link(plan.index).expect("published").clone();
    assert!(detach(&shared, plan, &link, true));
    pacer.join().expect("the pacer ends");
    // What it sent is what the engine counted; nothing goes out after the close.
    let sent = Stats::get(&shared.stats.counters.sent);
    assert!(sent >= 3, "{sent}");
    assert_eq!(link.close().sent, sent);
    // The loss formula owes the receivers what fell due after: sent + unsent = scheduled.
    let scheduled = shared.schedule_of(plan.index).count() as u64;
    assert_eq!(sent + shared.unsent_in_window()[0], scheduled);
}
