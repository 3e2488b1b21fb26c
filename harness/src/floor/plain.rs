//! The floor's plainest receiver and sender ([`plain_step`]): `N` loopback TCP connections;
//! one sender thread writes one pre-encoded `msg` WebSocket frame per `write(2)`, in bursts of
//! a room's size (a fan-out), open-loop at a fixed rate of frames per second; one receiver
//! thread does `epoll_wait` and one `read(2)` per ready socket. Each thread's own CPU
//! (`CLOCK_THREAD_CPUTIME_ID`) per frame is the receive floor and the send floor.
//!
//! The sender writes a burst back to back, or at a given pace (one frame every `pace`, a
//! spin-wait between writes on the sender's own CPU): a receiver fed more slowly catches up
//! with its writer more often and sleeps more per frame, so the receive floor depends on how
//! fast the other end writes (docs/methodology.md, "Why a second floor").
//!
//! Its pieces (the loopback pairs, the epoll set and wait, the receiver, the server's frame)
//! also make the client send step's loop ([`super::client_send`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{FloorError, FloorOptions, RATE_KEPT, SATURATED};

/// Most events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// One run of the plain receiver and sender.
#[derive(Debug, Clone, Serialize)]
pub struct PlainRun {
    /// Frames per second asked.
    pub rate: f64,
    /// Frames per second the sender wrote (over its own elapsed time).
    pub achieved: f64,
    /// Frames received.
    pub frames: u64,
    /// Receiver thread CPU per frame, µs.
    pub recv_us: f64,
    /// Sender thread CPU per frame, µs (with a pace, its spin-waits too).
    pub send_us: f64,
    /// The writer's pace within a burst, µs per frame; absent: back to back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pace_us: Option<f64>,
    /// Frames per `epoll_wait` return.
    pub frames_per_wake: f64,
    /// Sender thread CPU, cores.
    pub send_cores: f64,
    /// Why the sending side was the bottleneck (empty: valid).
    pub invalid: Vec<String>,
}

/// This thread's CPU time.
pub(super) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The text of the floor's `msg` from `from`, a `payload`-byte body: the encoder's, with a
/// sequence number and a timestamp of the sizes a run's have.
pub(super) fn msg_text(from: &str, payload: usize) -> String {
    msg_text_in("r0", from, payload)
}

/// [`msg_text`] to room `room`.
pub(super) fn msg_text_in(room: &str, from: &str, payload: usize) -> String {
    chatbench_protocol::encode_msg(room, from, 1_000_000, 1_000_000_000, &"x".repeat(payload))
}

/// A `msg` frame as a server sends it: the encoder's text in an unmasked WebSocket text frame.
pub(super) fn wire_frame(payload: usize) -> Vec<u8> {
    text_frame(&msg_text("a0.c1", payload))
}

/// `text` in an unmasked WebSocket text frame, as a server sends it.
pub(super) fn text_frame(text: &str) -> Vec<u8> {
    let mut out = vec![0x81];
    match text.len() {
        n @ 0..=125 => out.push(n as u8),
        n => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(text.as_bytes());
    out
}

/// `connections` loopback pairs: (the server side, written to; the client side, read).
pub(super) fn pairs(connections: usize) -> Result<(Vec<TcpStream>, Vec<TcpStream>), FloorError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(FloorError::Bind)?;
    let addr = listener.local_addr().map_err(FloorError::Socket)?;
    let mut servers = Vec::with_capacity(connections);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let c = TcpStream::connect(addr).map_err(|source| FloorError::Connect {
            pair: clients.len(),
            source,
        })?;
        let (s, _) = listener.accept().map_err(FloorError::Accept)?;
        s.set_nodelay(true).map_err(FloorError::Socket)?;
        // A receiver that stopped reading must not block the sender for ever.
        s.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(FloorError::Socket)?;
        c.set_nonblocking(true).map_err(FloorError::Socket)?;
        servers.push(s);
        clients.push(c);
    }
    Ok((servers, clients))
}

/// The sender: bursts of `members` frames, one `write` each, open loop at `rate` frames/s
/// for `seconds`; within a burst back to back, or frame `k` no earlier than `k × pace` after
/// the burst's first write. A pace too slow for the rate makes it fall behind; it stops
/// writing when the receiver does (`seconds` + 10 s), so the run ends and is judged invalid.
/// Returns (frames, elapsed, CPU).
fn send_loop(
    servers: &mut [TcpStream],
    frame: &[u8],
    members: usize,
    rate: f64,
    seconds: u64,
    pace: Option<Duration>,
    cpu: Option<usize>,
) -> std::io::Result<(u64, Duration, Duration)> {
    if let Some(c) = cpu {
        chatbench_loadgen::sys::set_cpu_affinity(&[c])?;
    }
    let rooms = servers.len() / members;
    let interval = Duration::from_secs_f64(members as f64 / rate);
    let bursts = ((rate * seconds as f64) / members as f64).ceil() as u64;
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let give_up = start + Duration::from_secs(seconds + 10);
    let mut frames = 0u64;
    for b in 0..bursts {
        let due = start + interval.mul_f64(b as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let room = (b as usize) % rooms;
        let burst = Instant::now();
        for (k, s) in servers[room * members..(room + 1) * members]
            .iter_mut()
            .enumerate()
        {
            if let Some(p) = pace {
                spin_until(burst + p.mul_f64(k as f64));
                if Instant::now() > give_up {
                    return Ok((frames, start.elapsed(), thread_cpu().saturating_sub(cpu0)));
                }
            }
            s.write_all(frame)?;
            frames += 1;
        }
    }
    Ok((frames, start.elapsed(), thread_cpu().saturating_sub(cpu0)))
}

/// Spin-waits until `t` (a pace of a few µs is below what a sleep can keep).
fn spin_until(t: Instant) {
    while Instant::now() < t {
        std::hint::spin_loop();
    }
}

/// A level-triggered `EPOLLIN` epoll set over `socks`, each event carrying its index.
pub(super) fn epoll_over(socks: &[TcpStream]) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `ep` is ours from here on and closed when the `OwnedFd` drops.
    let ep = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ep) };
    for (i, c) in socks.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: both descriptors are open; `ev` is valid for the call.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, c.as_raw_fd(), &mut ev) }
            != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(ep)
}

/// One `epoll_wait` of at most `timeout_ms` into `events`: the number ready (0 when
/// interrupted by a signal).
pub(super) fn wait(
    ep: &OwnedFd,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> std::io::Result<usize> {
    let max = events.len().min(i32::MAX as usize) as i32;
    // SAFETY: `events` has `max` writable entries.
    let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(n as usize)
}

/// The receiver: `epoll_wait`, one `read` per ready socket, until `expected` bytes arrived,
/// `stop` is set, or `deadline`. Returns (bytes, wake-ups, CPU).
pub(super) fn recv_loop(
    clients: &[TcpStream],
    expected: &std::sync::atomic::AtomicU64,
    stop: &AtomicBool,
    deadline: Instant,
    cpu: Option<usize>,
) -> std::io::Result<(u64, u64, Duration)> {
    if let Some(c) = cpu {
        chatbench_loadgen::sys::set_cpu_affinity(&[c])?;
    }
    let ep = epoll_over(clients)?;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut wakes) = (0u64, 0u64);
    let cpu0 = thread_cpu();
    loop {
        if bytes >= expected.load(Ordering::Acquire) || Instant::now() >= deadline {
            break;
        }
        let n = wait(&ep, &mut events, 20)?;
        if n == 0 {
            if stop.load(Ordering::Acquire) {
                break;
            }
            continue;
        }
        wakes += 1;
        for ev in &events[..n] {
            let mut c = &clients[ev.u64 as usize];
            match c.read(&mut buf) {
                // End of file: the peer is gone; stop watching it (it would be ready forever).
                Ok(0) => {
                    // SAFETY: both descriptors are open; a null event is allowed for DEL.
                    unsafe {
                        libc::epoll_ctl(
                            ep.as_raw_fd(),
                            libc::EPOLL_CTL_DEL,
                            c.as_raw_fd(),
                            std::ptr::null_mut(),
                        )
                    };
                }
                Ok(k) => bytes += k as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok((bytes, wakes, thread_cpu().saturating_sub(cpu0)))
}

/// The plainest receiver and sender at `rate` frames per second, the sender's bursts back to
/// back or at `pace` per frame.
pub fn plain_step(
    o: &FloorOptions,
    rate: f64,
    pace: Option<Duration>,
    send_cpu: Option<usize>,
    recv_cpu: Option<usize>,
) -> Result<PlainRun, FloorError> {
    let (mut servers, clients) = pairs(o.connections)?;
    let frame = wire_frame(o.payload);
    let expected = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(o.seconds + 10);
    let (e2, s2) = (expected.clone(), stop.clone());
    let receiver = std::thread::spawn(move || recv_loop(&clients, &e2, &s2, deadline, recv_cpu));
    let (members, seconds, len) = (o.members, o.seconds, frame.len() as u64);
    // The sending sockets come back open: closed before the receiver is told how much to
    // expect, they would wake it with end-of-file on every socket (counted as wake-ups and CPU).
    let (sent, servers) = std::thread::spawn(move || {
        let sent = send_loop(&mut servers, &frame, members, rate, seconds, pace, send_cpu);
        (sent, servers)
    })
    .join()
    .map_err(|_| FloorError::Panicked("sender"))?;
    let sent = match sent {
        Ok(s) => {
            expected.store(s.0 * len, Ordering::Release);
            Ok(s)
        }
        Err(e) => {
            stop.store(true, Ordering::Release);
            Err(e)
        }
    };
    stop.store(true, Ordering::Release);
    let got = receiver
        .join()
        .map_err(|_| FloorError::Panicked("receiver"))?
        .map_err(FloorError::Receive)?;
    drop(servers);
    let (frames, elapsed, send_cpu_t) = sent.map_err(FloorError::Send)?;
    let (bytes, wakes, recv_cpu_t) = got;
    let received = bytes / len;
    let achieved = frames as f64 / elapsed.as_secs_f64().max(1e-9);
    let send_cores = send_cpu_t.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
    let invalid = judge_plain(rate, achieved, send_cores, bytes, frames * len);
    let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    Ok(PlainRun {
        rate,
        achieved,
        frames: received,
        recv_us: per(recv_cpu_t, received),
        send_us: per(send_cpu_t, frames),
        pace_us: pace.map(|p| p.as_secs_f64() * 1e6),
        frames_per_wake: received as f64 / wakes.max(1) as f64,
        send_cores,
        invalid,
    })
}

/// Why the plain sender was the bottleneck: it fell behind `rate`, saturated its core, or
/// the receiver did not get every byte written (empty: valid).
fn judge_plain(rate: f64, achieved: f64, send_cores: f64, got: u64, written: u64) -> Vec<String> {
    let mut invalid = Vec::new();
    if achieved < RATE_KEPT * rate {
        invalid.push(format!(
            "the sender wrote {achieved:.0} frames/s of the {rate:.0} asked: it, not the receiver, was the bottleneck"
        ));
    }
    if send_cores >= SATURATED {
        invalid.push(format!(
            "the sender used {:.0} % of its core",
            send_cores * 100.0
        ));
    }
    if got != written {
        invalid.push(format!("received {got} bytes of the {written} written"));
    }
    invalid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_frame_is_a_server_text_frame_of_a_msg() {
        // (header length, payload length) of an unmasked server frame.
        let head = |f: &[u8]| match f[1] {
            126 => (4, u16::from_be_bytes([f[2], f[3]]) as usize),
            n => (2, n as usize),
        };
        for body in [0, 64, 300] {
            let f = wire_frame(body);
            assert_eq!(f[0], 0x81);
            let (h, len) = head(&f);
            assert_eq!(f.len(), h + len);
            let text = std::str::from_utf8(&f[h..]).expect("utf-8");
            assert!(chatbench_loadgen::fast_msg::parse(text).is_some(), "{text}");
        }
        assert_eq!(head(&wire_frame(0)).0, 2);
        assert_eq!(head(&wire_frame(300)).0, 4);
    }

    #[test]
    fn a_plain_step_moves_every_frame_and_measures_both_sides() {
        let o = super::super::tests::opts();
        let r = plain_step(&o, 2000.0, None, None, None).expect("plain step");
        assert_eq!(r.frames, 2000, "{r:?}");
        assert!(r.recv_us > 0.0 && r.send_us > 0.0, "{r:?}");
        // At least one wake-up read data; how many frames each read is the machine's (a
        // frame can span reads), so only its sign is behaviour.
        assert!(r.frames_per_wake > 0.0, "{r:?}");
    }

    #[test]
    fn a_paced_writer_records_its_pace_and_one_too_slow_for_the_rate_is_invalid() {
        let o = super::super::tests::opts();
        // 10 members, 2,000 frames/s: a burst every 5 ms.
        let r = plain_step(&o, 2000.0, Some(Duration::from_micros(50)), None, None)
            .expect("paced step");
        assert_eq!(r.frames, 2000, "{r:?}");
        assert_eq!(r.pace_us, Some(50.0), "{r:?}");
        // 1 ms per frame makes each burst at least 9 ms: at most 1,111 frames/s.
        let slow =
            plain_step(&o, 2000.0, Some(Duration::from_millis(1)), None, None).expect("paced step");
        assert!(
            slow.invalid.iter().any(|i| i.contains("bottleneck")),
            "{slow:?}"
        );
    }

    #[test]
    fn a_sender_that_falls_behind_or_saturates_makes_the_row_invalid() {
        assert!(judge_plain(20_000.0, 19_900.0, 0.3, 100, 100).is_empty());
        let behind = judge_plain(80_000.0, 60_000.0, 0.5, 100, 100);
        assert!(behind[0].contains("bottleneck"), "{behind:?}");
        assert_eq!(judge_plain(20_000.0, 20_000.0, 0.95, 100, 100).len(), 1);
        assert_eq!(judge_plain(20_000.0, 20_000.0, 0.5, 90, 100).len(), 1);
    }
}
