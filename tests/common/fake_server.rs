//! A chat server for tests that misbehaves on purpose, in one way chosen by the test: it echoes
//! every message back to its sender too, drops one chosen message to one member on another
//! agent or to one receiver, or dies mid-run (every connection cut, the listener closed). It speaks just enough of
//! protocol v1 (`join` → `joined`, `msg` forwarded byte for byte to the room) for the load
//! generator; it runs on its own thread and tokio runtime, on 127.0.0.1, port chosen by the OS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// How the server misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Forwards every message to every member of its room, its sender included; and sends the
    /// first member of each room one frame that is not protocol v1 ([`GARBAGE`]) after its
    /// `joined`.
    Echo,
    /// Drops, once, the first message with `seq >= seq` to one member of its room that is on
    /// another agent than the sender (a member's agent is learnt from the `from` of what it
    /// sent, so the victim is a sender too).
    DropOne {
        /// The first sequence number that may be dropped.
        seq: u64,
    },
    /// Drops, once, the first message with `seq >= seq` to one member of its room that never
    /// sent anything (a receiver, on the sender's agent in a one-process run).
    DropToReceiver {
        /// The first sequence number that may be dropped.
        seq: u64,
    },
    /// Answers each `join` with its `joined` and, in the same TCP write, the first bytes of a
    /// [`GARBAGE`] frame, whose rest follows in a second write 50 ms later (a frame the
    /// client's WebSocket library holds only partly when its set-up is over).
    SplitAfterJoined,
    /// When a message with `seq >= seq` arrives: cuts every connection (no close frame) and
    /// stops accepting, as a killed server would.
    DieAt {
        /// The sequence number that kills the server.
        seq: u64,
    },
    /// Forwards as usual, and pings the sender of every fifth message (payload: its seq);
    /// counts the pings and the pongs that come back with a ping's payload.
    PingSenders,
}

/// What the server did, for the test to compare with the run's figures.
#[derive(Debug, Default)]
pub struct Seen {
    /// `msg` frames received.
    pub received: AtomicU64,
    /// Frames forwarded (one per recipient).
    pub forwarded: AtomicU64,
    /// Frames dropped on purpose (`DropOne`).
    pub dropped: AtomicU64,
    /// Connections cut when the server died (`DieAt`).
    pub cut: AtomicU64,
    /// Set once the server died.
    pub dead: AtomicBool,
    /// Pings sent (`PingSenders`).
    pub pings: AtomicU64,
    /// Pongs received that carried a ping's payload (`PingSenders`).
    pub pongs: AtomicU64,
    /// The dropped frame's sender, sequence number and the victim's id.
    pub dropped_what: Mutex<Option<(String, u64, String)>>,
}

type Tx = mpsc::UnboundedSender<Message>;

/// The frame `Fault::Echo` sends each room's first member once.
pub const GARBAGE: &str = "this is not a chatbench frame";

#[derive(Default)]
struct Rooms {
    /// Room → its members (connection number, outbound queue).
    members: HashMap<String, Vec<(u64, Tx)>>,
    /// Connection number → the `from` it sends as (learnt from its first message).
    ids: HashMap<u64, String>,
}

/// A running fake server; dropping it stops it.
pub struct FakeServer {
    /// Its address.
    pub addr: SocketAddr,
    /// What it did.
    pub seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    /// Starts a server with `fault` on 127.0.0.1.
    pub fn start(fault: Fault) -> FakeServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let seen2 = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(listener, fault, seen2, stopped));
        });
        FakeServer {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `ws://ADDR/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    fault: Fault,
    seen: Arc<Seen>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let rooms = Arc::new(Mutex::new(Rooms::default()));
    let (die_tx, mut die_rx) = tokio::sync::watch::channel(false);
    let die_tx = Arc::new(die_tx);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0u64;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = die_rx.changed() => {
                // Dead: every connection cut at once, nothing accepted any more.
                seen.cut.store(tasks.len() as u64, Ordering::Relaxed);
                tasks.abort_all();
                seen.dead.store(true, Ordering::Relaxed);
                drop(listener);
                let _ = stopped.await;
                return;
            }
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                next += 1;
                tasks.spawn(conn(tcp, next, fault, rooms.clone(), seen.clone(), die_tx.clone()));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.abort_all();
}

async fn conn(
    tcp: tokio::net::TcpStream,
    me: u64,
    fault: Fault,
    rooms: Arc<Mutex<Rooms>>,
    seen: Arc<Seen>,
    die: Arc<tokio::sync::watch::Sender<bool>>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    if let Fault::SplitAfterJoined = fault {
        if split_after_joined(&mut ws, me, &rooms, &seen, &tx, &mut rx)
            .await
            .is_none()
        {
            return;
        }
    }
    // One task per connection owns both halves: aborting it closes the socket.
    let (mut write, mut read) = ws.split();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(m) => if write.send(m).await.is_err() { break },
                None => break,
            },
            got = read.next() => {
                if let Some(Ok(Message::Pong(p))) = &got {
                    if std::str::from_utf8(p).is_ok_and(|s| s.parse::<u64>().is_ok()) {
                        seen.pongs.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let Some(Ok(Message::Text(text))) = got else { break };
                if !on_frame(&text, me, fault, &rooms, &seen, &tx) {
                    // Stay alive until the accept loop cuts every task at once: ending here
                    // would let it reap this task first and count one connection short.
                    let _ = die.send(true);
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    if let Ok(mut r) = rooms.lock() {
        for ms in r.members.values_mut() {
            ms.retain(|(c, _)| *c != me);
        }
    }
}

/// `Fault::SplitAfterJoined`: reads the join, answers it with `joined` plus the start of a
/// [`GARBAGE`] frame in one write, and the rest of that frame in a second write.
async fn split_after_joined(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    me: u64,
    rooms: &Mutex<Rooms>,
    seen: &Seen,
    tx: &Tx,
    rx: &mut mpsc::UnboundedReceiver<Message>,
) -> Option<()> {
    use tokio::io::AsyncWriteExt;
    let Some(Ok(Message::Text(join))) = ws.next().await else {
        return None;
    };
    on_frame(&join, me, Fault::SplitAfterJoined, rooms, seen, tx);
    let Ok(Message::Text(joined)) = rx.try_recv() else {
        return None;
    };
    let unmasked = |text: &str| {
        assert!(text.len() < 126, "a short frame");
        let mut f = vec![0x81, text.len() as u8];
        f.extend_from_slice(text.as_bytes());
        f
    };
    let garbage = unmasked(GARBAGE);
    let mut first = unmasked(joined.as_str());
    first.extend_from_slice(&garbage[..7]);
    let tcp = ws.get_mut();
    tcp.write_all(&first).await.ok()?;
    tcp.flush().await.ok()?;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    tcp.write_all(&garbage[7..]).await.ok()?;
    Some(())
}

/// Handles one frame from connection `me`; `false` when the server is to die now.
fn on_frame(text: &str, me: u64, fault: Fault, rooms: &Mutex<Rooms>, seen: &Seen, tx: &Tx) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return true;
    };
    let room = v["room"].as_str().unwrap_or_default().to_string();
    let mut r = rooms.lock().expect("rooms");
    match v["t"].as_str() {
        Some("join") => {
            r.members
                .entry(room.clone())
                .or_default()
                .push((me, tx.clone()));
            let _ = tx.send(Message::text(format!(
                r#"{{"t":"joined","room":"{room}"}}"#
            )));
            if matches!(fault, Fault::Echo) && r.members.get(&room).is_some_and(|m| m.len() == 1) {
                let _ = tx.send(Message::text(GARBAGE));
            }
        }
        Some("msg") => {
            seen.received.fetch_add(1, Ordering::Relaxed);
            let from = v["from"].as_str().unwrap_or_default().to_string();
            let seq = v["seq"].as_u64().unwrap_or(0);
            if let Fault::DieAt { seq: at } = fault {
                if seq >= at {
                    r.members.clear();
                    return false;
                }
            }
            r.ids.entry(me).or_insert_with(|| from.clone());
            if matches!(fault, Fault::PingSenders) && seq % 5 == 0 {
                let _ = tx.send(Message::Ping(seq.to_string().into_bytes().into()));
                seen.pings.fetch_add(1, Ordering::Relaxed);
            }
            let victim = match fault {
                Fault::DropOne { seq: at }
                    if seq >= at && seen.dropped.load(Ordering::Relaxed) == 0 =>
                {
                    victim_for(&r, &room, me, &from)
                }
                Fault::DropToReceiver { seq: at }
                    if seq >= at && seen.dropped.load(Ordering::Relaxed) == 0 =>
                {
                    r.members.get(&room).and_then(|ms| {
                        ms.iter()
                            .map(|(c, _)| *c)
                            .find(|c| *c != me && !r.ids.contains_key(c))
                    })
                }
                _ => None,
            };
            if let Some(v) = victim {
                seen.dropped.fetch_add(1, Ordering::Relaxed);
                let id = r.ids.get(&v).cloned().unwrap_or_default();
                *seen.dropped_what.lock().expect("what") = Some((from.clone(), seq, id));
            }
            let echo = matches!(fault, Fault::Echo);
            let frame = Message::text(text.to_string());
            for (c, out) in r.members.get(&room).into_iter().flatten() {
                if (*c == me && !echo) || Some(*c) == victim {
                    continue;
                }
                if out.send(frame.clone()).is_ok() {
                    seen.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        _ => {}
    }
    true
}

/// A member of `room` other than the sender `me`, known to be on another agent than `from`.
fn victim_for(r: &Rooms, room: &str, me: u64, from: &str) -> Option<u64> {
    let agent_of = |id: &str| id.split_once('.').map(|(a, _)| a.to_string());
    let sender_agent = agent_of(from);
    r.members
        .get(room)?
        .iter()
        .map(|(c, _)| *c)
        .find(|c| *c != me && r.ids.get(c).is_some_and(|id| agent_of(id) != sender_agent))
}
