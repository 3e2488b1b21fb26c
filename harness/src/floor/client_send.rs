//! The floor's plainest client sender ([`client_send_step`]): the generator's own sends without
//! the generator, into a peer that does what the server does, plainly.
//!
//! Three threads over loopback, placed as `run --serve` places the generator and the server:
//! - the client sender, on the receiver's CPU (where the generator's pacer runs), under the
//!   pacer's own timer slack and real-time priority
//!   ([`chatbench_loadgen::pacer::tune_timer_thread`]): one sender per room on the generator's
//!   own open-loop schedule, at the generator step's message rate (deliveries per second ÷
//!   (members − 1)); it sleeps until the earliest due time and writes each message due, one
//!   pre-encoded masked `msg` frame per `write(2)` on its room's connection;
//! - the plainest server, on the sender's CPU: `epoll_wait` over the senders' connections, and
//!   for each message read, one `write(2)` of a pre-encoded frame to each of the room's
//!   `members − 1` other members, back to back;
//! - the plain receiver ([`super::plain`]) reading those frames on the receiver's CPU.
//!
//! The client sender's own CPU per message, and per delivery, is the client send floor. Its
//! peer sleeps between fan-outs and is sometimes still writing one when the next message comes,
//! as the server is, so a write pays for waking it only some of the time. How often depends on
//! how busy the peer is: a slower server is awake more, and its client's sends cost less (at
//! 80,000 deliveries/s the generator's pacer measured 0.9× this floor against the epoll server;
//! docs/notes/2026-12-07-client-send-floor.md).
//!
//! Why a floor of its own: the generator must send what it measures, and on a VM each send to
//! an idle peer on another CPU pays for the timer wake-up before it and the peer's wake-up in
//! the write. The receive floor has neither (its writer is the server's side). Per delivery the
//! send is small at high rates and grows as the rate falls (docs/methodology.md).

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use chatbench_loadgen::schedule::Schedule;
use chatbench_model::scenario::Arrival;

use super::plain::{epoll_over, msg_text, pairs, recv_loop, thread_cpu, wait, wire_frame};
use super::{FloorError, FloorOptions, RATE_KEPT};

/// One run of the plain client sender.
#[derive(Debug, Clone, Serialize)]
pub struct ClientSendRun {
    /// Messages per second asked.
    pub messages_per_s: f64,
    /// Messages per second written (over the sender's own elapsed time).
    pub achieved: f64,
    /// Messages written.
    pub messages: u64,
    /// Sending thread CPU per message, µs.
    pub send_us_per_message: f64,
    /// The same per delivery the messages make in the generator step (÷ (members − 1)), µs.
    pub send_us_per_delivery: f64,
    /// Whether the sending thread ran at real-time priority, as the pacer does when allowed.
    pub realtime: bool,
    /// The plain receiver's CPU per frame in this loop, µs: the receive floor fed by the
    /// plainest server at the client's pace, beside the client sender on its CPU.
    pub recv_us: f64,
    /// Why the run cannot be used (empty: valid).
    pub invalid: Vec<String>,
}

/// A `msg` frame as the generator sends it: the encoder's text in a masked WebSocket text frame.
fn client_frame(payload: usize) -> Vec<u8> {
    let text = msg_text("a0.c0", payload);
    let mut out = Vec::new();
    chatbench_loadgen::write_masked(&mut out, 0x1, text.as_bytes(), [0x5a, 0xc3, 0x0f, 0x96]);
    out
}

/// The sending thread: one sender per room, each on the generator's own schedule
/// ([`Schedule`]: uniform arrival at `per_s / rooms` messages per second, a random phase, a
/// seed per room); it sleeps until the earliest due time and writes every message due by then,
/// one `write` each (`frames[room]`), as the pacer does; it stops 10 s after the schedules end
/// if still behind. Returns (messages, elapsed, CPU, real-time).
pub(super) fn send_loop(
    senders: &mut [TcpStream],
    frames: &[Vec<u8>],
    per_s: f64,
    seconds: u64,
    cpu: Option<usize>,
) -> std::io::Result<(u64, Duration, Duration, bool)> {
    use std::cmp::Reverse;
    use std::io::Write;
    if let Some(c) = cpu {
        chatbench_loadgen::sys::set_cpu_affinity(&[c])?;
    }
    let realtime = chatbench_loadgen::pacer::tune_timer_thread();
    let per_sender = per_s / senders.len().max(1) as f64;
    let end = Duration::from_secs(seconds);
    let mut schedules: Vec<Schedule> = (0..senders.len())
        .map(|room| Schedule::new(Arrival::Uniform, per_sender, end, room as u64))
        .collect();
    let mut heap: std::collections::BinaryHeap<_> = schedules
        .iter_mut()
        .enumerate()
        .filter_map(|(room, s)| s.next().map(|at| Reverse((at, room))))
        .collect();
    let cpu0 = thread_cpu();
    let start = Instant::now();
    // A sender far behind (a rate the plain server cannot serve) stops where the other
    // threads give up, so the run ends and is judged invalid.
    let give_up = start + end + Duration::from_secs(10);
    let mut sent = 0u64;
    while let Some(&Reverse((at, _))) = heap.peek() {
        let now = Instant::now();
        if now > give_up {
            break;
        }
        if start + at > now {
            std::thread::sleep(start + at - now);
            continue;
        }
        while let Some(&Reverse((at, room))) = heap.peek() {
            if start + at > now {
                break;
            }
            heap.pop();
            senders[room].write_all(&frames[room])?;
            sent += 1;
            if let Some(next) = schedules[room].next() {
                heap.push(Reverse((next, room)));
            }
        }
    }
    Ok((
        sent,
        start.elapsed(),
        thread_cpu().saturating_sub(cpu0),
        realtime,
    ))
}

/// The plainest server: for each whole client frame read on room `r`'s connection `ins[r]`, one
/// `write` of `frame` to each of the room's `fan_out` members (`outs[r × fan_out ..]`), back to
/// back.
struct PlainServer {
    ins: Vec<TcpStream>,
    outs: Vec<TcpStream>,
    fan_out: usize,
    /// Bytes of one client frame.
    in_len: usize,
    frame: Vec<u8>,
}

impl PlainServer {
    /// Serves until `expected` messages were served (set when the client sender ends), or
    /// `stop` with nothing ready, or `deadline`. Returns the messages served.
    fn run(
        &mut self,
        expected: &AtomicU64,
        stop: &AtomicBool,
        deadline: Instant,
        cpu: Option<usize>,
    ) -> std::io::Result<u64> {
        use std::io::{Read, Write};
        if let Some(c) = cpu {
            chatbench_loadgen::sys::set_cpu_affinity(&[c])?;
        }
        let ep = epoll_over(&self.ins)?;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; self.ins.len().max(1)];
        let mut buf = vec![0u8; 64 * 1024];
        // Bytes read on each room's connection and not yet served (a frame may arrive split).
        let mut pending = vec![0usize; self.ins.len()];
        let mut served = 0u64;
        while served < expected.load(Ordering::Acquire) && Instant::now() < deadline {
            let n = wait(&ep, &mut events, 20)?;
            if n == 0 && stop.load(Ordering::Acquire) {
                break;
            }
            for ev in &events[..n] {
                let room = ev.u64 as usize;
                let k = match (&self.ins[room]).read(&mut buf) {
                    Ok(0) => return Ok(served),
                    Ok(k) => k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                };
                pending[room] += k;
                while pending[room] >= self.in_len {
                    pending[room] -= self.in_len;
                    for out in &mut self.outs[room * self.fan_out..(room + 1) * self.fan_out] {
                        out.write_all(&self.frame)?;
                    }
                    served += 1;
                }
            }
        }
        Ok(served)
    }
}

/// The plainest client sender at the generator step's message rate for `rate` deliveries per
/// second, into the plainest server and receiver: `send_cpu` is the sending side's CPU of the
/// plain step (the server's), `recv_cpu` the receiver's (the receiver's and the client
/// sender's, as the pacer).
pub fn client_send_step(
    o: &FloorOptions,
    rate: f64,
    send_cpu: Option<usize>,
    recv_cpu: Option<usize>,
) -> Result<ClientSendRun, FloorError> {
    let rooms = o.connections / o.members;
    let fan_out = o.members - 1;
    let per_s = rate / fan_out as f64;
    // `pairs` gives (a blocking no-delay writer, a non-blocking reader) per connection.
    let (mut client_out, server_in) = pairs(rooms)?;
    let (server_out, members_in) = pairs(rooms * fan_out)?;
    let frame = wire_frame(o.payload);
    let out_len = frame.len() as u64;
    let client = client_frame(o.payload);
    let mut server = PlainServer {
        ins: server_in,
        outs: server_out,
        fan_out,
        in_len: client.len(),
        frame,
    };
    let expected_bytes = Arc::new(AtomicU64::new(u64::MAX));
    let expected_messages = Arc::new(AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(o.seconds + 10);
    let (e2, s2) = (expected_bytes.clone(), stop.clone());
    let receiver = std::thread::spawn(move || recv_loop(&members_in, &e2, &s2, deadline, recv_cpu));
    let (e3, s3) = (expected_messages.clone(), stop.clone());
    // The server comes back with its sockets open: closed early, they would wake the receiver
    // with end-of-file (as in the plain step).
    let serving = std::thread::spawn(move || {
        let served = server.run(&e3, &s3, deadline, send_cpu);
        (served, server)
    });
    let seconds = o.seconds;
    let (sent, client_out) = std::thread::spawn(move || {
        let frames = vec![client; rooms];
        let sent = send_loop(&mut client_out, &frames, per_s, seconds, recv_cpu);
        (sent, client_out)
    })
    .join()
    .map_err(|_| FloorError::Panicked("client sender"))?;
    if let Ok(s) = &sent {
        expected_messages.store(s.0, Ordering::Release);
        expected_bytes.store(s.0 * fan_out as u64 * out_len, Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    let (served, server) = serving
        .join()
        .map_err(|_| FloorError::Panicked("plain server"))?;
    let got = receiver
        .join()
        .map_err(|_| FloorError::Panicked("receiver"))?
        .map_err(FloorError::Receive)?;
    drop((client_out, server));
    let served = served.map_err(FloorError::Send)?;
    let (messages, elapsed, cpu, realtime) = sent.map_err(FloorError::Send)?;
    let achieved = messages as f64 / elapsed.as_secs_f64().max(1e-9);
    let per_message = cpu.as_secs_f64() * 1e6 / messages.max(1) as f64;
    let written = messages * fan_out as u64 * out_len;
    let (got_bytes, _, recv_cpu_t) = got;
    let frames = got_bytes / out_len;
    let mut invalid = judge(per_s, achieved, got_bytes, written, "the plain server");
    if served != messages {
        invalid.push(format!(
            "the plain server served {served} of the {messages} messages sent"
        ));
    }
    Ok(ClientSendRun {
        messages_per_s: per_s,
        achieved,
        messages,
        send_us_per_message: per_message,
        send_us_per_delivery: per_message / fan_out as f64,
        realtime,
        recv_us: recv_cpu_t.as_secs_f64() * 1e6 / frames.max(1) as f64,
        invalid,
    })
}

/// Why a client-send run cannot be used: the sender fell behind its rate, or the reader did
/// not get every byte that `server` (as the message names it) owed (empty: valid).
pub(super) fn judge(
    per_s: f64,
    achieved: f64,
    got: u64,
    written: u64,
    server: &str,
) -> Vec<String> {
    let mut invalid = Vec::new();
    if achieved < RATE_KEPT * per_s {
        invalid.push(format!(
            "the client sender wrote {achieved:.1} messages/s of the {per_s:.1} asked"
        ));
    }
    if got != written {
        invalid.push(format!(
            "the receiver got {got} bytes of the {written} {server} owed"
        ));
    }
    invalid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_frame_is_a_masked_text_frame_of_a_msg() {
        for body in [0, 64, 300] {
            let f = client_frame(body);
            assert_eq!(f[0], 0x81);
            assert_eq!(f[1] & 0x80, 0x80, "masked");
            let (head, len) = match f[1] & 0x7f {
                126 => (4, usize::from(u16::from_be_bytes([f[2], f[3]]))),
                n => (2, usize::from(n)),
            };
            assert_eq!(f.len(), head + 4 + len);
            let key = &f[head..head + 4];
            let text: Vec<u8> = f[head + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            let text = std::str::from_utf8(&text).expect("utf-8");
            assert!(chatbench_loadgen::fast_msg::parse(text).is_some(), "{text}");
        }
    }

    #[test]
    fn a_client_send_step_writes_every_message_at_its_rate() {
        // 40 connections in rooms of 10: 4 senders; 900 deliveries/s = 100 messages/s for 1 s.
        let o = super::super::tests::opts();
        let r = client_send_step(&o, 900.0, None, None).expect("client send step");
        assert_eq!(r.messages, 100, "{r:?}");
        assert!(r.invalid.is_empty(), "{r:?}");
        assert!(r.send_us_per_message > 0.0 && r.recv_us > 0.0, "{r:?}");
        assert!(
            (r.send_us_per_delivery * 9.0 - r.send_us_per_message).abs() < 1e-9,
            "{r:?}"
        );
    }

    #[test]
    fn a_sender_behind_its_rate_or_a_short_read_is_invalid() {
        let plain = "the plain server";
        assert!(judge(100.0, 99.0, 10, 10, plain).is_empty());
        assert_eq!(judge(100.0, 90.0, 10, 10, plain).len(), 1);
        assert!(judge(100.0, 100.0, 9, 10, plain)[0].contains("9 bytes of the 10 the plain"));
    }
}
