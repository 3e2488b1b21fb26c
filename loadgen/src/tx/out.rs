//! The out-buffer of a connection whose frames two threads write: the pacer's messages and the
//! receive worker's control frames (pongs, the close answer) go into one queue of whole,
//! masked frames, so that they never interleave on the wire. Whatever the socket does not take
//! at once stays here, and the next writer (the pacer at its next send, the worker at the
//! socket's writable edge) goes on from the byte where the last write stopped.
//!
//! Bounds: at most `max_frames` frames and `max_bytes` bytes queued (or one frame, whatever its
//! size, in an empty buffer). A frame that does not fit
//! is not queued; what that means is the caller's policy (a message stays due and is counted as
//! held, see [`super`]; a pong is not owed, as tungstenite keeps only the latest one). I/O-free
//! apart from the `Write` it is given.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};

/// Frames one connection may have queued.
pub const MAX_FRAMES: usize = 256;

/// Bytes one connection may have queued.
pub const MAX_BYTES: usize = 64 * 1024;

/// An idle buffer keeps no more capacity than this.
const KEEP_CAPACITY: usize = 4096;

/// The bytes of a masked client frame with a `payload`-byte payload (RFC 6455 §5.2).
pub fn masked_len(payload: usize) -> usize {
    let len = if payload < 126 {
        2
    } else if payload <= usize::from(u16::MAX) {
        4
    } else {
        10
    };
    len + 4 + payload
}

/// How a write left the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is on the socket.
    All,
    /// The socket is full: the rest waits for the next writer.
    Blocked,
}

/// Whole frames waiting for the socket, bounded by count and bytes.
#[derive(Debug)]
pub struct OutBuf {
    bytes: Vec<u8>,
    /// Bytes of `bytes` already written.
    head: usize,
    /// Where each queued frame ends in `bytes`, oldest first (those not yet wholly written).
    ends: VecDeque<usize>,
    max_frames: usize,
    max_bytes: usize,
}

impl OutBuf {
    /// An empty buffer of at most `max_frames` frames and `max_bytes` bytes.
    pub fn new(max_frames: usize, max_bytes: usize) -> OutBuf {
        OutBuf {
            bytes: Vec::new(),
            head: 0,
            ends: VecDeque::new(),
            max_frames,
            max_bytes,
        }
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.head
    }

    /// Frames queued and not yet wholly written.
    #[cfg(test)]
    pub fn frames(&self) -> usize {
        self.ends.len()
    }

    /// Whether a frame has been written in part (the wire is in the middle of it).
    pub fn mid_frame(&self) -> bool {
        self.head > 0 && self.pending() > 0
    }

    /// Whether a frame of `len` bytes fits within the bounds. An empty buffer takes one frame
    /// of any size (a message larger than `max_bytes` is sent alone, never held for ever).
    pub fn fits(&self, len: usize) -> bool {
        self.ends.is_empty()
            || (self.ends.len() < self.max_frames && self.pending() + len <= self.max_bytes)
    }

    /// Queues one whole frame, written by `write` at the end of the buffer. The caller checked
    /// [`OutBuf::fits`] with its length.
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.head > 0 && self.head * 2 >= self.bytes.len() {
            self.compact();
        }
        write(&mut self.bytes);
        self.ends.push_back(self.bytes.len());
    }

    /// Writes what is queued, as far as `w` takes it (`Interrupted` is retried); `Err` when
    /// the connection is broken (what is queued stays).
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> std::io::Result<Flushed> {
        while self.head < self.bytes.len() {
            match w.write(&self.bytes[self.head..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) => return Err(e),
            }
        }
        Ok(Flushed::All)
    }

    fn advance(&mut self, n: usize) {
        self.head += n;
        while self.ends.front().is_some_and(|&end| end <= self.head) {
            self.ends.pop_front();
        }
        if self.head == self.bytes.len() {
            self.bytes.clear();
            self.head = 0;
            if self.bytes.capacity() > KEEP_CAPACITY {
                self.bytes = Vec::new();
            }
        }
    }

    /// Drops the written bytes at the front.
    fn compact(&mut self) {
        let head = self.head;
        self.bytes.drain(..head);
        for end in self.ends.iter_mut() {
            *end -= head;
        }
        self.head = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes, then would block.
    struct Socket {
        got: Vec<u8>,
        room: usize,
        broken: bool,
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.broken {
                return Err(ErrorKind::BrokenPipe.into());
            }
            if self.room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn frame(byte: u8, len: usize) -> impl FnOnce(&mut Vec<u8>) {
        move |b: &mut Vec<u8>| b.extend(std::iter::repeat_n(byte, len))
    }

    #[test]
    fn frames_and_bytes_are_bounded() {
        let mut out = OutBuf::new(3, 100);
        assert!(out.fits(100));
        out.push(frame(1, 40));
        assert!(!out.fits(61), "over the byte bound");
        out.push(frame(2, 40));
        assert!(out.fits(20));
        assert!(!out.fits(21));
        out.push(frame(3, 10));
        assert!(!out.fits(1), "over the frame bound");
        assert_eq!((out.frames(), out.pending()), (3, 90));
        // An empty buffer takes one frame larger than the byte bound, and nothing after it.
        let mut out = OutBuf::new(3, 100);
        assert!(out.fits(500));
        out.push(frame(1, 500));
        assert!(!out.fits(1));
    }

    #[test]
    fn a_partial_write_is_kept_and_finished_by_the_next_writer() {
        let mut out = OutBuf::new(8, 1000);
        out.push(frame(1, 10));
        out.push(frame(2, 10));
        let mut s = Socket {
            got: Vec::new(),
            room: 15,
            broken: false,
        };
        assert_eq!(out.write_to(&mut s).expect("writes"), Flushed::Blocked);
        assert!(out.mid_frame());
        assert_eq!((out.frames(), out.pending()), (1, 5));
        // A frame queued meanwhile goes after the rest of the one on the wire.
        out.push(frame(3, 4));
        s.room = 100;
        assert_eq!(out.write_to(&mut s).expect("writes"), Flushed::All);
        let mut want = vec![1u8; 10];
        want.extend([2u8; 10]);
        want.extend([3u8; 4]);
        assert_eq!(s.got, want, "the frames arrive whole and in order");
        assert_eq!((out.frames(), out.pending()), (0, 0));
        assert!(!out.mid_frame());
    }

    #[test]
    fn frames_split_at_every_byte_arrive_whole() {
        for room in 1..12 {
            let mut out = OutBuf::new(64, 1 << 16);
            let mut s = Socket {
                got: Vec::new(),
                room: 0,
                broken: false,
            };
            let mut want = Vec::new();
            for i in 0..20u8 {
                out.push(frame(i, usize::from(i % 5) + 1));
                want.extend(std::iter::repeat_n(i, usize::from(i % 5) + 1));
                s.room = room;
                let _ = out.write_to(&mut s).expect("writes");
            }
            s.room = usize::MAX;
            assert_eq!(out.write_to(&mut s).expect("writes"), Flushed::All);
            assert_eq!(s.got, want, "room {room}");
        }
    }

    #[test]
    fn a_broken_socket_is_an_error_and_keeps_the_frames() {
        let mut out = OutBuf::new(8, 1000);
        out.push(frame(1, 10));
        let mut s = Socket {
            got: Vec::new(),
            room: 100,
            broken: true,
        };
        assert!(out.write_to(&mut s).is_err());
        assert_eq!(out.pending(), 10);
    }

    #[test]
    fn masked_frame_lengths_follow_the_three_length_forms() {
        assert_eq!(masked_len(0), 6);
        assert_eq!(masked_len(125), 131);
        assert_eq!(masked_len(126), 134);
        assert_eq!(masked_len(65_535), 65_543);
        assert_eq!(masked_len(65_536), 65_550);
        let mut b = Vec::new();
        for n in [0usize, 125, 126, 70_000] {
            b.clear();
            crate::rx::frame::write_masked(&mut b, 1, &vec![b'x'; n], [1, 2, 3, 4]);
            assert_eq!(b.len(), masked_len(n), "{n}");
        }
    }
}
