//! The floor's plainest client sender ([`client_send_step`]): the generator's own sends without
//! the generator. One connection per room; one thread on the receiver's CPU (where the
//! generator's pacer runs) sleeps on the high-resolution timer under the pacer's own settings
//! ([`chatbench_loadgen::pacer::tune_timer_thread`]) until each message's time, open loop, and
//! writes one pre-encoded masked `msg` frame per `write(2)`, rooms in turn, at the generator
//! step's message rate (deliveries per second ÷ (members − 1)); the floor's plain receiver
//! reads them on the sender's CPU (the server's). The sending thread's own CPU per message is
//! the client send floor.
//!
//! Why a floor of its own: the generator must send what it measures, and each send to an idle
//! peer on another CPU pays for the timer wake-up before it and the peer's wake-up in the
//! write. The receive floor has neither (its writer is the server's side). Per delivery the send
//! is small at high fan-out rates and grows as the rate falls (docs/methodology.md).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plain::{pairs, recv_loop, thread_cpu};
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
    /// Why the run cannot be used (empty: valid).
    pub invalid: Vec<String>,
}

/// A `msg` frame as the generator sends it: the encoder's text in a masked WebSocket text frame.
fn client_frame(payload: usize) -> Vec<u8> {
    let text = chatbench_protocol::encode_msg(
        "r0",
        "a0.c0",
        1_000_000,
        1_000_000_000,
        &"x".repeat(payload),
    );
    let mut out = Vec::new();
    chatbench_loadgen::write_masked(&mut out, 0x1, text.as_bytes(), [0x5a, 0xc3, 0x0f, 0x96]);
    out
}

/// The sending thread: message `k` due `k / per_s` after the start, written on room
/// `k mod rooms`'s connection. Returns (messages, elapsed, CPU, real-time).
fn send_loop(
    senders: &mut [std::net::TcpStream],
    frame: &[u8],
    per_s: f64,
    seconds: u64,
    cpu: Option<usize>,
) -> std::io::Result<(u64, Duration, Duration, bool)> {
    use std::io::Write;
    if let Some(c) = cpu {
        chatbench_loadgen::sys::set_cpu_affinity(&[c])?;
    }
    let realtime = chatbench_loadgen::pacer::tune_timer_thread();
    let interval = Duration::from_secs_f64(1.0 / per_s);
    let total = (per_s * seconds as f64).ceil() as u64;
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let mut sent = 0u64;
    for k in 0..total {
        let due = start + interval.mul_f64(k as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let n = senders.len();
        senders[(k as usize) % n].write_all(frame)?;
        sent += 1;
    }
    Ok((
        sent,
        start.elapsed(),
        thread_cpu().saturating_sub(cpu0),
        realtime,
    ))
}

/// The plainest client sender at the generator step's message rate for `rate` deliveries per
/// second: `send_cpu` is the sending side's CPU of the plain step (the reader here, as the
/// server), `recv_cpu` the receiver's (the writer here, as the pacer).
pub fn client_send_step(
    o: &FloorOptions,
    rate: f64,
    send_cpu: Option<usize>,
    recv_cpu: Option<usize>,
) -> Result<ClientSendRun, FloorError> {
    let rooms = o.connections / o.members;
    let fan_out = (o.members - 1) as f64;
    let per_s = rate / fan_out;
    // (the written side of the plain step, read here; the read side, written here)
    let (readers, mut senders) = pairs(rooms)?;
    for s in &senders {
        // The plain step's read side is non-blocking; this thread writes it and may block. No
        // Nagle delay, as the generator's connections.
        s.set_nonblocking(false).map_err(FloorError::Socket)?;
        s.set_nodelay(true).map_err(FloorError::Socket)?;
    }
    let frame = client_frame(o.payload);
    let len = frame.len() as u64;
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(o.seconds + 10);
    let (e2, s2) = (expected.clone(), stop.clone());
    let reader = std::thread::spawn(move || recv_loop(&readers, &e2, &s2, deadline, send_cpu));
    let seconds = o.seconds;
    let (sent, senders) = std::thread::spawn(move || {
        let sent = send_loop(&mut senders, &frame, per_s, seconds, recv_cpu);
        (sent, senders)
    })
    .join()
    .map_err(|_| FloorError::Panicked("client sender"))?;
    if let Ok(s) = &sent {
        expected.store(s.0 * len, Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    let got = reader
        .join()
        .map_err(|_| FloorError::Panicked("client sender's reader"))?
        .map_err(FloorError::Receive)?;
    drop(senders);
    let (messages, elapsed, cpu, realtime) = sent.map_err(FloorError::Send)?;
    let achieved = messages as f64 / elapsed.as_secs_f64().max(1e-9);
    let per_message = cpu.as_secs_f64() * 1e6 / messages.max(1) as f64;
    Ok(ClientSendRun {
        messages_per_s: per_s,
        achieved,
        messages,
        send_us_per_message: per_message,
        send_us_per_delivery: per_message / fan_out,
        realtime,
        invalid: judge(per_s, achieved, got.0, messages * len),
    })
}

/// Why a client-send run cannot be used: the sender fell behind its rate, or the reader did
/// not get every byte written (empty: valid).
fn judge(per_s: f64, achieved: f64, got: u64, written: u64) -> Vec<String> {
    let mut invalid = Vec::new();
    if achieved < RATE_KEPT * per_s {
        invalid.push(format!(
            "the client sender wrote {achieved:.1} messages/s of the {per_s:.1} asked"
        ));
    }
    if got != written {
        invalid.push(format!(
            "the client sender's reader received {got} bytes of the {written} written"
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
        assert!(r.send_us_per_message > 0.0, "{r:?}");
        assert!(
            (r.send_us_per_delivery * 9.0 - r.send_us_per_message).abs() < 1e-9,
            "{r:?}"
        );
    }

    #[test]
    fn a_sender_behind_its_rate_or_a_short_read_is_invalid() {
        assert!(judge(100.0, 99.0, 10, 10).is_empty());
        assert_eq!(judge(100.0, 90.0, 10, 10).len(), 1);
        assert!(judge(100.0, 100.0, 9, 10)[0].contains("9 bytes of the 10"));
    }
}
