//! Deterministic in-process workloads over the generator's own hot paths, for the regression
//! gate (`chatbench gate deterministic`, run under callgrind; the servers' counterpart is
//! `chatbench_servers::bench`). Hidden from the docs: not a stable API.
//!
//! - [`receive`]: one receiving member of a room takes `msg` frames and judges each (the
//!   engine's `on_text`: parse, loss and duplicate check, latency histograms, counters) on
//!   either receive path ([`Path`]): the epoll path's connection as after each `read`, or a
//!   tokio-tungstenite stream as a connection task after `ws.next()`.
//! - [`send`]: one sender writes every message of its open-loop schedule as the pacer's send
//!   path does ([`crate::tx`]: encode, masked WebSocket frame into the connection's bounded
//!   out-buffer, bookkeeping, the buffer written out), into a sink. Before the pacer wrote
//!   frames itself this measured the tokio task's `send_due`, which now serves only the
//!   connections the send path does not apply to (TLS, other profiles, reconnects).
//!
//! The tokio path's WebSocket stream runs over an in-memory pipe (`tokio::io::duplex`) on a
//! current-thread runtime: every frame is in the pipe before the measured region starts (or
//! the pipe holds every frame written); the epoll path's connection is given each frame as
//! a read's bytes from memory. So nothing waits and the same build executes the same instructions
//! every time. The only clock read is the engine's own (a latency's value, never a branch:
//! `late_after` is set beyond any latency the workload can see).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use chatbench_model::scenario::Scenario;
use chatbench_protocol::MsgWriter;

use crate::engine::{self, Shared};
use crate::plan::{room_name, ConnPlan, Plan, Role};
use crate::rx::conn::{Arrival, Conn, Mask};
use crate::stats::{Stats, Tally};
use crate::target::Target;
use crate::tx::out::{OutBuf, MAX_BYTES, MAX_FRAMES};

/// Why a workload could not be built or did not behave.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Building the runtime or the pipe failed.
    #[error("workload setup failed: {0}")]
    Setup(#[from] std::io::Error),
    /// The engine did something the workload does not expect.
    #[error("workload went wrong: {0}")]
    Unexpected(String),
}

/// How long the workload's schedule spans (its measurement window).
const SPAN: Duration = Duration::from_secs(3600);

/// The engine's shared state for one room of `members` with `senders` senders at `rate`
/// messages per second each, its epoch moved `SPAN` into the past so that every point of the
/// schedule is due and inside the window.
fn shared_for(
    members: u32,
    senders: u32,
    rate: f64,
    body: usize,
) -> Result<Arc<Shared>, BenchError> {
    let text = format!(
        "name='gate'\nconnections={members}\nrooms=1\nmembers_per_room={members}\n\
         senders_per_room={senders}\nrate_per_sender={rate}\npayload_bytes={body}\n\
         warmup='0s'\nmeasure='{}s'\nlate_after='{}s'\n",
        SPAN.as_secs(),
        SPAN.as_secs() * 2
    );
    let scenario =
        Scenario::parse(&text, "gate").map_err(|e| BenchError::Unexpected(e.to_string()))?;
    let plan = Plan::new(&scenario, 0);
    let target =
        Target::parse("ws://127.0.0.1:9/ws").map_err(|e| BenchError::Unexpected(e.to_string()))?;
    let (mut shared, _phase) = Shared::new(Arc::new(scenario), plan, vec![target], Vec::new());
    let now = Instant::now();
    let epoch = now
        .checked_sub(SPAN + Duration::from_secs(1) + Duration::from_nanos(subsec_nanos(now)))
        .ok_or_else(|| BenchError::Unexpected("the monotonic clock is too young".into()))?;
    Arc::get_mut(&mut shared)
        .ok_or_else(|| BenchError::Unexpected("the engine state is shared already".into()))?
        .epoch = epoch;
    shared.set_timeline(epoch);
    Ok(shared)
}

/// A current-thread runtime with no I/O or time driver: nothing here waits on either, and a
/// time driver's work depends on how much wall time passed (its wheel), which would make the
/// instruction count vary run to run.
/// The nanoseconds part of `t` on the monotonic clock, read from its `Debug` form (std has no
/// accessor): an epoch on a whole second makes `Instant + Duration`'s carry, a branch in the
/// engine's every `intended` time, the same in every run. 0 if the form is not recognised
/// (then the counts may vary by a few hundred instructions).
fn subsec_nanos(t: Instant) -> u64 {
    let text = format!("{t:?}");
    text.split("tv_nsec:")
        .nth(1)
        .map(|r| {
            r.trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_current_thread().build()?)
}

/// Appends `payload` as an unmasked server text frame.
fn server_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Which receive path a receive workload drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The epoll receive path ([`crate::rx`]): what a run's receive-only `ws://` connections
    /// take after their set-up (`[client] receive_path`'s default). Each frame is handed to
    /// the connection as what one `read` brought (a fan-out puts one frame on each member's
    /// socket), minus the `read(2)` itself and the `epoll_wait`.
    Epoll,
    /// The tokio path: a tokio-tungstenite stream and `ws.next()` per frame (TLS, the other
    /// profiles, senders, and `receive_path = "tokio"`).
    Tokio,
}

/// The receiving member's side of a receive workload: the engine, the receiver's plan, and
/// every frame as the server sends it (the warm-up's first).
struct Inbox {
    shared: Arc<Shared>,
    me: ConnPlan,
    frames: Vec<Vec<u8>>,
    warm: usize,
}

/// `warm` + `messages` `msg` frames from the room's senders (round robin, each with its next
/// seq, intended times a millisecond apart inside the window, `body` bytes of body), for one
/// receiving member of a room of `members`.
fn inbox(members: u32, messages: u64, body: usize) -> Result<Inbox, BenchError> {
    if members < 2 {
        return Err(BenchError::Unexpected(
            "a receive workload needs at least 2 members".into(),
        ));
    }
    let senders = members.clamp(2, 4) - 1;
    let shared = shared_for(members, senders, 1.0, body)?;
    let plan = shared.plan.clone();
    let me = plan
        .conns
        .iter()
        .find(|c| c.role == Role::Receiver)
        .copied()
        .ok_or_else(|| BenchError::Unexpected("the plan has no receiver".into()))?;
    let writers: Vec<MsgWriter> = plan
        .conns
        .iter()
        .filter(|c| c.role == Role::Sender)
        .map(|c| MsgWriter::new(&room_name(0), &plan.conn_id(c.index), &"x".repeat(body)))
        .collect();
    let warm = writers.len() as u64;
    let mut text = String::new();
    let frames = (0..warm + messages)
        .map(|i| {
            let w = &writers[(i % warm) as usize];
            text.clear();
            w.write(&mut text, i / warm + 1, 1 + i * 1000);
            let mut frame = Vec::new();
            server_frame(&mut frame, text.as_bytes());
            frame
        })
        .collect();
    Ok(Inbox {
        shared,
        me,
        frames,
        warm: warm as usize,
    })
}

/// The receive workload: `messages` `msg` frames read and judged by one receiving member of
/// a room of `members` on receive path `path`. Setup and a warm-up of one frame per sender
/// run outside `measure`; the reading runs inside it. Returns the deliveries judged (every
/// frame is a unique in-window delivery; anything else is an error).
pub fn receive(
    path: Path,
    members: u32,
    messages: u64,
    body: usize,
    measure: &mut dyn FnMut(&mut dyn FnMut()),
) -> Result<u64, BenchError> {
    let inbox = inbox(members, messages, body)?;
    match path {
        Path::Epoll => receive_epoll(&inbox, measure)?,
        Path::Tokio => receive_tokio(&inbox, measure)?,
    }
    let c = &inbox.shared.stats.counters;
    let total = inbox.frames.len() as u64;
    let (delivered, in_window) = (Stats::get(&c.delivered), Stats::get(&c.delivered_window));
    let odd = Stats::get(&c.bad_frames) + Stats::get(&c.duplicated) + Stats::get(&c.late);
    if delivered != total || in_window != total || odd != 0 {
        return Err(BenchError::Unexpected(format!(
            "{delivered} delivered ({in_window} in the window, {odd} bad, duplicated or late), expected {total}"
        )));
    }
    Ok(messages)
}

/// Frames per wake-up of the epoll path's worker in the workload: what the plainest receiver
/// read per `epoll_wait` at 20,000–80,000 frames/s here (2.6–4.7, docs/methodology.md), one
/// frame per socket. The worker publishes its tally once per wake-up.
const FRAMES_PER_WAKE: usize = 4;

/// The epoll path's connection over a real loopback socket that is never read (the frames
/// are handed to it as reads would bring them: one frame per read, [`FRAMES_PER_WAKE`] reads
/// per wake-up, the clock read once per read as the worker does).
fn receive_epoll(
    inbox: &Inbox,
    measure: &mut dyn FnMut(&mut dyn FnMut()),
) -> Result<(), BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (_server, _) = listener.accept()?;
    client.set_nonblocking(true)?;
    let (done, _ticket) = tokio::sync::oneshot::channel();
    let shared = &*inbox.shared;
    let mut conn = Conn::new(
        mio::net::TcpStream::from_std(client),
        inbox.me,
        engine::Receiver::new(shared),
        Vec::new(),
        done,
    );
    let (mut mask, mut tally) = (Mask::new(1), Tally::new(0));
    let mut read = |frames: &[Vec<u8>]| -> Result<(), BenchError> {
        for wake in frames.chunks(FRAMES_PER_WAKE) {
            for f in wake {
                let mut read = Arrival {
                    at_us: shared.now_us(),
                    mask: &mut mask,
                    tally: &mut tally,
                };
                if conn.received(shared, f, &mut read).is_err() {
                    return Err(BenchError::Unexpected("the connection ended".into()));
                }
            }
            tally.publish(&shared.stats);
        }
        Ok(())
    };
    let (warm, rest) = inbox.frames.split_at(inbox.warm);
    read(warm)?;
    let mut outcome = Ok(());
    measure(&mut || outcome = read(rest));
    outcome
}

/// A tokio-tungstenite client stream over an in-memory pipe that holds every frame.
fn receive_tokio(
    inbox: &Inbox,
    measure: &mut dyn FnMut(&mut dyn FnMut()),
) -> Result<(), BenchError> {
    let wire = inbox.frames.concat();
    let rt = runtime()?;
    let (client, mut server) = tokio::io::duplex(wire.len() + 4096);
    let mut ws = rt.block_on(async {
        server.write_all(&wire).await?;
        Ok::<_, std::io::Error>(
            WebSocketStream::from_raw_socket(client, WsRole::Client, None).await,
        )
    })?;
    let (shared, me) = (&*inbox.shared, inbox.me);
    let mut receiver = engine::Receiver::new(shared);
    let mut read = |n: usize, ws: &mut WebSocketStream<DuplexStream>| -> Result<(), BenchError> {
        rt.block_on(async {
            for _ in 0..n {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        if engine::on_text(shared, me, &mut receiver, &t).is_some() {
                            return Err(BenchError::Unexpected("a reply to a msg".into()));
                        }
                    }
                    other => {
                        return Err(BenchError::Unexpected(format!(
                            "expected a text frame, read {other:?}"
                        )))
                    }
                }
            }
            Ok(())
        })
    };
    read(inbox.warm, &mut ws)?;
    let mut outcome = Ok(());
    let rest = inbox.frames.len() - inbox.warm;
    measure(&mut || outcome = read(rest, &mut ws));
    outcome
}

/// The send workload: one sender of a room of `members` writes every message of its
/// schedule (about `messages`, at 1 per second of the window) as the pacer's send path does
/// (`tx::queue_due` into the connection's out-buffer, written out whenever it fills and at
/// the end), with a `body`-byte body, into a sink. Only the sending runs inside `measure`.
/// Returns the messages sent.
pub fn send(
    members: u32,
    messages: u64,
    body: usize,
    measure: &mut dyn FnMut(&mut dyn FnMut()),
) -> Result<u64, BenchError> {
    if members < 2 || messages == 0 {
        return Err(BenchError::Unexpected(
            "a send workload needs at least 2 members and 1 message".into(),
        ));
    }
    let rate = messages as f64 / SPAN.as_secs_f64();
    let shared = shared_for(members, 1, rate, body)?;
    let me = shared
        .plan
        .conns
        .iter()
        .find(|c| c.role == Role::Sender)
        .copied()
        .ok_or_else(|| BenchError::Unexpected("the plan has no sender".into()))?;
    let mut sender = engine::new_sender(&shared, me, 0)
        .ok_or_else(|| BenchError::Unexpected("no sender state (timeline unset)".into()))?;
    let mut out = OutBuf::new(MAX_FRAMES, MAX_BYTES);
    let mut text = String::new();
    let mut mask = Mask::new(0x5eed);
    let mut sink = std::io::sink();
    let now = Instant::now();
    let mut outcome = Ok(());
    measure(&mut || loop {
        let held = crate::tx::queue_due(
            &shared,
            me,
            0,
            &mut sender,
            &mut out,
            &mut text,
            &mut mask,
            now,
        );
        if let Err(e) = out.write_to(&mut sink) {
            outcome = Err(e);
            return;
        }
        if !held {
            return;
        }
    });
    outcome.map_err(|e| BenchError::Unexpected(format!("sending: {e}")))?;
    let sent = Stats::get(&shared.stats.counters.sent);
    let in_window = Stats::get(&shared.stats.counters.sent_window);
    if sent == 0 || in_window != sent || sent.abs_diff(messages) > 1 {
        return Err(BenchError::Unexpected(format!(
            "{sent} sent ({in_window} in the window), expected about {messages}"
        )));
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(f: &mut dyn FnMut()) {
        f();
    }

    #[test]
    fn receive_judges_every_frame() {
        for path in [Path::Epoll, Path::Tokio] {
            assert_eq!(receive(path, 10, 50, 64, &mut plain).expect("workload"), 50);
            // Large bodies take the 16-bit length form.
            assert_eq!(receive(path, 3, 5, 300, &mut plain).expect("workload"), 5);
            assert!(receive(path, 1, 5, 64, &mut plain).is_err());
        }
    }

    #[test]
    fn send_writes_the_whole_schedule() {
        let sent = send(10, 200, 64, &mut plain).expect("workload");
        assert!(sent.abs_diff(200) <= 1, "{sent}");
        assert!(send(10, 0, 64, &mut plain).is_err());
    }

    #[test]
    fn the_epoch_can_be_put_on_a_whole_second() {
        let now = Instant::now();
        let ns = subsec_nanos(now);
        assert!(ns < 1_000_000_000);
        let whole = now - Duration::from_nanos(ns);
        assert_eq!(subsec_nanos(whole), 0, "{whole:?}");
    }

    #[test]
    fn the_measured_region_runs_once() {
        for path in [Path::Epoll, Path::Tokio] {
            let mut calls = 0;
            receive(path, 4, 10, 16, &mut |f| {
                calls += 1;
                f();
            })
            .expect("workload");
            assert_eq!(calls, 1);
        }
    }
}
