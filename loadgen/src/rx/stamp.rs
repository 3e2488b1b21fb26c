//! Kernel receive timestamps on the epoll receive path: what turns "the read returned" into
//! "the bytes were in the kernel by". A connection's socket gets `SO_TIMESTAMPNS` when it is
//! handed to the epoll path ([`enable`]); each read is a `recvmsg` ([`recv`]) whose control
//! message carries the `CLOCK_REALTIME` time at which the kernel received the *last* segment
//! the call consumed (TCP reports one timestamp per call: that of the newest skb read), so every
//! frame of the read was in the kernel by then.
//!
//! The engine's clock is `Instant` (`CLOCK_MONOTONIC`) since its epoch; [`Clock`] converts a
//! wall-clock timestamp to it with an offset read once per wake-up of the worker (two vDSO
//! clock reads), so an NTP slew between wake-ups cannot build up. A read that brings no
//! timestamp (the segment arrived before the option took effect, or a kernel that gives none)
//! is timed to the read's return, and counted.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Control-message space for one `struct timespec` (`CMSG_SPACE(16)` is 32 on 64-bit Linux),
/// with room to spare; 8-byte aligned as `cmsghdr` needs.
const CMSG_WORDS: usize = 8;

/// Asks the kernel to timestamp what arrives on `sock` (`SO_TIMESTAMPNS`).
pub fn enable(sock: &impl AsRawFd) -> io::Result<()> {
    crate::sys::set_socket_flag(sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, true)
}

/// One `recvmsg` into `buf`: the bytes read, and the kernel's receive time of the last segment
/// they came in (ns since the Unix epoch, `CLOCK_REALTIME`) when the kernel gave one.
pub fn recv(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(usize, Option<i64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut space = [0u64; CMSG_WORDS];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space) as _;
    // SAFETY: `msg` points at `buf` (through `iov`) and `space`, both alive and writable for
    // the call's duration, with their true lengths.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, stamp_of(&msg)))
}

/// The `SCM_TIMESTAMPNS` control message of a received `msg`, as ns since the Unix epoch.
fn stamp_of(msg: &libc::msghdr) -> Option<i64> {
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return None;
    }
    // SAFETY: the CMSG_* walk stays within `msg_control`/`msg_controllen`, which the kernel
    // filled; the timespec is read unaligned from the control message's data.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::SOL_SOCKET
                && h.cmsg_type == libc::SCM_TIMESTAMPNS
                && h.cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as u32) as usize
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                // i64 ns since the Unix epoch last until 2262 (an i128 division per read cost
                // a library call); a value beyond them is no timestamp.
                let ns = ts
                    .tv_sec
                    .checked_mul(1_000_000_000)?
                    .checked_add(ts.tv_nsec)?;
                // The kernel gives zero when the segment was not stamped.
                return (ns > 0).then_some(ns);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// The wall clock's offset from the engine's clock, read once per wake-up: converts a kernel
/// timestamp (`CLOCK_REALTIME`) to µs since the engine's epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock ns since the Unix epoch minus engine ns since its epoch, read back to back.
    real_minus_engine_ns: i64,
}

impl Clock {
    /// Reads both clocks now (one `Instant` and one `SystemTime` read).
    pub fn read(epoch: Instant) -> Clock {
        let engine = i64::try_from(epoch.elapsed().as_nanos()).unwrap_or(i64::MAX);
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .unwrap_or(0);
        Clock {
            real_minus_engine_ns: real.saturating_sub(engine),
        }
    }

    /// Kernel timestamp `real_ns` (ns since the Unix epoch) in µs since the engine's epoch
    /// (0 if it falls before the epoch).
    pub fn engine_us(&self, real_ns: i64) -> u64 {
        let ns = real_ns.saturating_sub(self.real_minus_engine_ns);
        u64::try_from(ns / 1000).unwrap_or(0)
    }
}

/// When the frames of one read arrived: the read's return (`read_us`) and the kernel's
/// receive time (`kernel_us`), both µs since the engine's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamps {
    /// When the read returned.
    pub read_us: u64,
    /// When the kernel had the last segment the read consumed (`None`: no timestamp came).
    pub kernel_us: Option<u64>,
}

impl Stamps {
    /// The receiving thread's delay: read return minus kernel arrival, µs (never negative: a
    /// timestamp after the read, from a clock step between the two reads, counts as 0).
    pub fn lag_us(&self) -> Option<u64> {
        self.kernel_us.map(|k| self.read_us.saturating_sub(k))
    }

    /// The time the read's deliveries are timed to: the kernel's arrival when `kernel` and a
    /// timestamp came (never after the read's return), else the read's return.
    pub fn arrival_us(&self, kernel: bool) -> u64 {
        match self.kernel_us {
            Some(k) if kernel => k.min(self.read_us),
            _ => self.read_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn recvmsg_on_a_loopback_socket_returns_a_kernel_timestamp_not_after_the_read() {
        let epoch = Instant::now();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        enable(&client).expect("SO_TIMESTAMPNS");
        // The kernel turns receive timestamping on a moment after the first socket asks for
        // it (a deferred static-key switch): what arrives before comes unstamped, as the epoll
        // path counts. Write until a read brings a timestamp (bounded).
        let mut buf = [0u8; 64];
        let mut tries = 0;
        let (clock, read_us, kernel_ns) = loop {
            server.write_all(b"hello").expect("write");
            std::thread::sleep(std::time::Duration::from_millis(20));
            let clock = Clock::read(epoch);
            let (n, stamp) = recv(&client, &mut buf).expect("recvmsg");
            let read_us = epoch.elapsed().as_micros() as u64;
            assert_eq!(&buf[..n], b"hello");
            if let Some(ns) = stamp {
                break (clock, read_us, ns);
            }
            tries += 1;
            assert!(tries < 100, "no kernel timestamp in {tries} reads");
        };
        let stamps = Stamps {
            read_us,
            kernel_us: Some(clock.engine_us(kernel_ns)),
        };
        let kernel_us = stamps.kernel_us.expect("converted");
        assert!(
            kernel_us <= read_us,
            "kernel {kernel_us} µs, read {read_us} µs"
        );
        // The segment waited ≥ 20 ms in the socket before it was read.
        assert!(stamps.lag_us().expect("lag") >= 15_000, "{stamps:?}");
        assert_eq!(stamps.arrival_us(true), kernel_us);
        assert_eq!(stamps.arrival_us(false), read_us);
    }

    #[test]
    fn without_the_option_no_timestamp_comes_and_the_read_time_is_used() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        server.write_all(b"x").expect("write");
        let mut buf = [0u8; 8];
        let (n, stamp) = recv(&client, &mut buf).expect("recvmsg");
        assert_eq!((n, stamp), (1, None));
        let s = Stamps {
            read_us: 7,
            kernel_us: None,
        };
        assert_eq!((s.arrival_us(true), s.lag_us()), (7, None));
        let late = Stamps {
            read_us: 7,
            kernel_us: Some(9),
        };
        assert_eq!((late.arrival_us(true), late.lag_us()), (7, Some(0)));
    }
}
