//! The two system calls the thread-pool model needs beyond `std::net`: an `eventfd(2)` per
//! worker (its mailbox doorbell) and `poll(2)` over one socket plus that doorbell.
//!
//! A worker sleeps in [`wait`] on exactly two descriptors: its connection's socket and its own
//! [`Waker`]. Other threads never touch the socket; they queue frames or set flags and ring the
//! waker. This is what lets a blocked worker also notice outbound frames, a slow-consumer kick
//! or shutdown, without a read timeout that would wake 5,000 idle threads 100 times a second.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// A doorbell: an `eventfd` in non-blocking mode. Ringing it makes the owner's [`wait`] return.
#[derive(Debug)]
pub(super) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub(super) fn new() -> io::Result<Waker> {
        // SAFETY: eventfd has no memory preconditions; we own the returned descriptor.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Rings the bell. Never blocks: the counter would have to reach 2^64 − 1 first.
    pub(super) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Silences the bell (consumes every pending ring).
    pub(super) fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN when not rung is fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// What [`wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ready {
    /// `revents` of the socket (`POLLIN`, `POLLOUT`, `POLLHUP`, `POLLERR`…); 0 if none.
    pub(super) socket: i16,
    /// The waker rang (and has been cleared).
    pub(super) woken: bool,
    /// The deadline passed with nothing ready.
    pub(super) timed_out: bool,
}

/// Sleeps until `fd` is ready for `events`, `waker` rings, or `deadline` passes (`None`:
/// forever). A signal interrupting the call reports nothing ready; callers loop anyway.
pub(super) fn wait(
    fd: RawFd,
    events: i16,
    waker: Option<&Waker>,
    deadline: Option<Instant>,
) -> io::Result<Ready> {
    let timeout_ms = match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                0
            } else {
                // Round up so that we never wake just before the deadline and spin.
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            }
        }
    };
    let mut fds = [
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: waker.map_or(-1, |w| w.fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a live array of two pollfd; a negative fd is ignored by poll(2).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Ready {
                socket: 0,
                woken: false,
                timed_out: false,
            });
        }
        return Err(e);
    }
    let woken = fds[1].revents != 0;
    if woken {
        if let Some(w) = waker {
            w.clear();
        }
    }
    Ok(Ready {
        socket: fds[0].revents,
        woken,
        timed_out: n == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_rung_waker_wakes_once_and_timeouts_time_out() {
        let w = Waker::new().unwrap();
        let soon = Some(Instant::now() + Duration::from_millis(20));
        let r = wait(-1, 0, Some(&w), soon).unwrap();
        assert!(r.timed_out && !r.woken);
        w.wake();
        w.wake();
        let r = wait(-1, 0, Some(&w), None).unwrap();
        assert!(r.woken && !r.timed_out);
        let soon = Some(Instant::now() + Duration::from_millis(5));
        assert!(wait(-1, 0, Some(&w), soon).unwrap().timed_out, "cleared");
    }
}
