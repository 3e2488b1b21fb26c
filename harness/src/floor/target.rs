//! The floor's plainest client of the real server ([`target_step`]): the generator step's load,
//! sent and received by the plainest possible client, against the very server the generator
//! step measures (`chatbench serve --arch ARCH`, on the sender's CPU as `run --serve` pins it).
//!
//! The other floors' peer is a plain writer or the plainest server, which touch almost no
//! memory and never sleep in the middle of a fan-out the way a real server does. A real
//! server's own work changes what the same `read` costs its client: on loopback the client's
//! ACK is processed on the server's socket inside the client's `recvmsg`, in caches the server
//! has just used. So the generator's receive threads can cost more than the receive floor for
//! reasons no client could avoid. This step measures what the plainest client pays against
//! the same server at the same load; the generator's CPU over it is the instrument's own share.
//!
//! Two threads of this process and the server:
//! - the connections are set up plainly first (blocking): a WebSocket upgrade and one `join`
//!   per connection, `members` per room; one member of each room sends;
//! - the client sender ([`super::client_send::send_loop`]), on the receiver's CPU as the pacer:
//!   one sender per room on the generator's own schedule, one masked `msg` frame per `write`;
//! - the plain receiver ([`super::plain::recv_loop`]): `epoll_wait` and one `read` per ready
//!   socket, counting bytes.
//!
//! A run is invalid when the sender fell behind, a byte the server owed did not arrive, or the
//! server used ≥ 90 % of its core.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client_send::send_loop;
use super::plain::{msg_text_in, recv_loop, text_frame};
use super::{FloorError, FloorOptions, SATURATED};
use crate::launcher::ServerChild;

/// One run of the plainest client against the real server.
#[derive(Debug, Clone, Serialize)]
pub struct TargetRun {
    /// Messages per second asked.
    pub messages_per_s: f64,
    /// Messages per second written (over the sender's own elapsed time).
    pub achieved: f64,
    /// Messages written.
    pub messages: u64,
    /// The client sender's CPU per message, µs.
    pub send_us_per_message: f64,
    /// The same per delivery (÷ (members − 1)), µs.
    pub send_us_per_delivery: f64,
    /// The plain receiver's CPU per frame, µs: the receive floor against this server.
    pub recv_us: f64,
    /// Frames per `epoll_wait` return of the plain receiver.
    pub frames_per_wake: f64,
    /// The server's CPU while the sender sent, cores.
    pub server_cores: Option<f64>,
    /// Why the run cannot be used (empty: valid).
    pub invalid: Vec<String>,
}

/// A room's name: fixed width, so every room's frames have one length.
fn room_name(room: usize) -> String {
    format!("r{room:05}")
}

/// The fixed masking key of the set-up frames and the messages (a plain client may use any).
const MASK: [u8; 4] = [0x5a, 0xc3, 0x0f, 0x96];

/// Largest handshake reply or `joined` frame read at set-up.
const SETUP_REPLY_MAX: usize = 4096;

/// How long one connection's set-up may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens connection `conn` to `addr`: the WebSocket upgrade, then `join` of `room` and its
/// `joined` reply. Returns the socket, blocking, no-delay.
fn join(addr: SocketAddr, conn: usize, room: &str) -> Result<TcpStream, FloorError> {
    let io = |source| FloorError::TargetSetup { conn, source };
    let mut s = TcpStream::connect_timeout(&addr, SETUP_TIMEOUT).map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    s.set_read_timeout(Some(SETUP_TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(SETUP_TIMEOUT)).map_err(io)?;
    s.write_all(chatbench_servers::bench::UPGRADE_REQUEST)
        .map_err(io)?;
    let reply = read_until(&mut s, conn, |b| {
        b.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
    })?;
    if !reply.starts_with(b"HTTP/1.1 101") {
        return Err(refused(conn, &reply));
    }
    let mut frame = Vec::new();
    let text = format!(r#"{{"t":"join","room":"{room}"}}"#);
    chatbench_loadgen::write_masked(&mut frame, 0x1, text.as_bytes(), MASK);
    s.write_all(&frame).map_err(io)?;
    // One short unmasked text frame: `{"t":"joined",…}`.
    let reply = read_until(&mut s, conn, |b| match b {
        [_, len, ..] if len & 0x7f < 126 => {
            let end = 2 + usize::from(len & 0x7f);
            (b.len() >= end).then_some(end)
        }
        [_, _, ..] => Some(b.len()),
        _ => None,
    })?;
    if reply.first() != Some(&0x81) || !reply.windows(8).any(|w| w == br#""joined""#) {
        return Err(refused(conn, &reply));
    }
    Ok(s)
}

/// Reads from `s` until `whole` says how many bytes make the answer, and checks nothing
/// followed it; at most [`SETUP_REPLY_MAX`] bytes.
fn read_until(
    s: &mut TcpStream,
    conn: usize,
    whole: impl Fn(&[u8]) -> Option<usize>,
) -> Result<Vec<u8>, FloorError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = whole(&buf) {
            if end != buf.len() {
                return Err(refused(conn, &buf));
            }
            return Ok(buf);
        }
        if buf.len() > SETUP_REPLY_MAX {
            return Err(refused(conn, &buf));
        }
        let k = s
            .read(&mut chunk)
            .map_err(|source| FloorError::TargetSetup { conn, source })?;
        if k == 0 {
            return Err(refused(conn, &buf));
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// The server's unexpected answer to connection `conn`, its first line quoted.
fn refused(conn: usize, reply: &[u8]) -> FloorError {
    let text = String::from_utf8_lossy(reply);
    let first: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(120)
        .collect();
    FloorError::TargetRefused {
        conn,
        reply: if first.is_empty() {
            "nothing (the connection closed)".into()
        } else {
            first
        },
    }
}

/// The plainest client of `arch` at the generator step's load for `rate` deliveries per
/// second: the server on `send_cpu` (as `run --serve` pins it), the client's sender and
/// receiver on `recv_cpu`.
pub fn target_step(
    o: &FloorOptions,
    arch: &str,
    rate: f64,
    send_cpu: Option<usize>,
    recv_cpu: Option<usize>,
) -> Result<TargetRun, FloorError> {
    let bin = match &o.generator_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(FloorError::Exe)?,
    };
    let extra: Vec<String> = send_cpu
        .map(|c| vec!["--cpus".into(), c.to_string()])
        .unwrap_or_default();
    let server = ServerChild::start(&bin, arch, &extra).map_err(FloorError::Launch)?;
    let run = with_server(o, rate, &server, recv_cpu);
    let (_, tail) = server.stop(Duration::from_secs(5));
    // What went wrong may be the server's doing (a refusal, a crash): its last words go with
    // the error.
    run.map_err(|e| {
        if tail.is_empty() {
            e
        } else {
            FloorError::TargetSaid {
                source: Box::new(e),
                tail,
            }
        }
    })
}

/// The step against a running `server`.
fn with_server(
    o: &FloorOptions,
    rate: f64,
    server: &ServerChild,
    recv_cpu: Option<usize>,
) -> Result<TargetRun, FloorError> {
    let rooms = o.connections / o.members;
    let fan_out = o.members - 1;
    let per_s = rate / fan_out as f64;
    let mut senders = Vec::with_capacity(rooms);
    let mut members = Vec::with_capacity(rooms * fan_out);
    for room in 0..rooms {
        let name = room_name(room);
        for m in 0..o.members {
            let s = join(server.addr, room * o.members + m, &name)?;
            if m == 0 {
                senders.push(s);
            } else {
                s.set_nonblocking(true).map_err(FloorError::Socket)?;
                members.push(s);
            }
        }
    }
    // Every room's name has one width, so every frame has one length.
    let texts: Vec<String> = (0..rooms)
        .map(|r| msg_text_in(&room_name(r), "a0.c0", o.payload))
        .collect();
    let frames: Vec<Vec<u8>> = texts
        .iter()
        .map(|t| {
            let mut f = Vec::new();
            chatbench_loadgen::write_masked(&mut f, 0x1, t.as_bytes(), MASK);
            f
        })
        .collect();
    let out_len = texts.first().map_or(0, |t| text_frame(t).len()) as u64;
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(o.seconds + 10);
    let (e2, s2) = (expected.clone(), stop.clone());
    let receiver = std::thread::spawn(move || {
        let got = recv_loop(&members, &e2, &s2, deadline, recv_cpu);
        (got, members)
    });
    let cpu0 = server_cpu(server.pid);
    let seconds = o.seconds;
    let (sent, senders) = std::thread::spawn(move || {
        let sent = send_loop(&mut senders, &frames, per_s, seconds, recv_cpu);
        (sent, senders)
    })
    .join()
    .map_err(|_| FloorError::Panicked("client sender"))?;
    let cpu1 = server_cpu(server.pid);
    if let Ok(s) = &sent {
        expected.store(s.0 * fan_out as u64 * out_len, Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    let (got, members) = receiver
        .join()
        .map_err(|_| FloorError::Panicked("receiver"))?;
    drop((senders, members));
    let (got_bytes, wakes, recv_cpu_t) = got.map_err(FloorError::Receive)?;
    let (messages, elapsed, cpu, _) = sent.map_err(FloorError::Send)?;
    let achieved = messages as f64 / elapsed.as_secs_f64().max(1e-9);
    let per_message = cpu.as_secs_f64() * 1e6 / messages.max(1) as f64;
    let frames = got_bytes / out_len.max(1);
    let server_cores = cpu0
        .zip(cpu1)
        .map(|(a, b)| (b - a) / elapsed.as_secs_f64().max(1e-9));
    Ok(TargetRun {
        messages_per_s: per_s,
        achieved,
        messages,
        send_us_per_message: per_message,
        send_us_per_delivery: per_message / fan_out as f64,
        recv_us: recv_cpu_t.as_secs_f64() * 1e6 / frames.max(1) as f64,
        frames_per_wake: frames as f64 / wakes.max(1) as f64,
        server_cores,
        invalid: judge(
            per_s,
            achieved,
            got_bytes,
            messages * fan_out as u64 * out_len,
            server_cores,
        ),
    })
}

/// The server process's CPU so far, seconds (`None` when it cannot be read).
fn server_cpu(pid: u32) -> Option<f64> {
    chatbench_loadgen::sampler::sample_process(pid)
        .ok()
        .map(|s| s.cpu_seconds)
}

/// Why a run against the server cannot be used (empty: valid).
fn judge(
    per_s: f64,
    achieved: f64,
    got: u64,
    written: u64,
    server_cores: Option<f64>,
) -> Vec<String> {
    let mut invalid = super::client_send::judge(per_s, achieved, got, written, "the server");
    if let Some(c) = server_cores.filter(|&c| c >= SATURATED) {
        invalid.push(format!(
            "the server used {c:.2} cores: it, not the client, was the bottleneck"
        ));
    }
    invalid
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection server on 127.0.0.1 that reads the upgrade, answers `upgrade`, then
    /// (if given) reads the `join` and answers `joined`.
    fn fake(upgrade: &'static [u8], joined: Option<&'static [u8]>) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(upgrade);
            if let Some(j) = joined {
                let _ = s.read(&mut buf);
                let _ = s.write_all(j);
            }
            std::thread::sleep(Duration::from_millis(200));
        });
        addr
    }

    const UPGRADED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

    #[test]
    fn a_joined_connection_is_set_up() {
        let joined = b"\x81\x1e{\"t\":\"joined\",\"room\":\"r00000\"}";
        let addr = fake(UPGRADED, Some(joined));
        join(addr, 0, "r00000").expect("set up");
    }

    #[test]
    fn a_refused_upgrade_or_join_names_the_connection_and_the_answer() {
        let addr = fake(b"HTTP/1.1 404 Not Found\r\n\r\n", None);
        let e = join(addr, 7, "r00000").expect_err("refused");
        assert!(
            e.to_string().contains("connection 7") && e.to_string().contains("404 Not Found"),
            "{e}"
        );
        let error = b"\x81\x1f{\"t\":\"error\",\"code\":\"bad_room\"}";
        let addr = fake(UPGRADED, Some(error));
        let e = join(addr, 3, "r00000").expect_err("refused");
        assert!(
            matches!(e, FloorError::TargetRefused { conn: 3, .. }),
            "{e}"
        );
        // A peer that closes says so.
        let addr = fake(b"", None);
        let e = join(addr, 1, "r00000").expect_err("closed");
        assert!(
            e.to_string().contains("nothing (the connection closed)"),
            "{e}"
        );
    }

    #[test]
    fn a_server_that_fails_is_named_with_its_last_words() {
        // A "server" that announces an address nothing listens on, says why on stderr, and
        // waits: the first connection is refused, and the error carries what it said.
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("fake-server");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho 'boom: no such arch' >&2\n\
             echo \"127.0.0.1:1 ws://127.0.0.1:1/ws arch=x pid=$$\"\nexec sleep 30\n",
        )
        .expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut o = super::super::tests::opts();
        o.generator_bin = Some(bin);
        let e = target_step(&o, "epoll", 900.0, None, None).expect_err("refused");
        let text = format!(
            "{e}: {}",
            std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
        );
        assert!(matches!(e, FloorError::TargetSaid { .. }), "{text}");
        assert!(
            text.contains("boom: no such arch") && text.contains("connection 0"),
            "{text}"
        );
    }

    #[test]
    fn room_names_have_one_width() {
        assert_eq!(room_name(0).len(), room_name(99_999).len());
        assert_eq!(room_name(7), "r00007");
    }

    #[test]
    fn a_slow_sender_a_short_read_or_a_busy_server_is_invalid() {
        assert!(judge(100.0, 99.0, 10, 10, Some(0.5)).is_empty());
        assert!(judge(100.0, 99.0, 10, 10, None).is_empty());
        assert!(judge(100.0, 90.0, 10, 10, None)[0].contains("90.0 messages/s"));
        assert!(judge(100.0, 100.0, 9, 10, None)[0].contains("9 bytes of the 10"));
        assert!(judge(100.0, 100.0, 10, 10, Some(0.95))[0].contains("0.95 cores"));
    }
}
