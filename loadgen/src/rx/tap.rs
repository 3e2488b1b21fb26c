//! The plain `ws://` transport of a run that may use the epoll receive path: a `TcpStream`
//! that, during a connection's set-up, follows the bytes tungstenite reads so that the
//! hand-over knows what tungstenite still holds and cannot give back.
//!
//! Tungstenite keeps the bytes of an incomplete frame in a private buffer that `into_inner`
//! drops. The tap sees the same bytes go by: armed right after the (our own) HTTP handshake
//! with the bytes that came after the response, it walks the frame boundaries, keeping only
//! the bytes after the last complete frame (at most one frame, `max_frame_size` plus its
//! header). Once tungstenite has given out every complete frame it holds, its buffer is
//! exactly that tail, which the epoll path then reads first. The tap also knows when a
//! fragmented message is half-way (tungstenite holds its first fragments: that connection
//! stays on the tokio path) and when it lost track (a bad or oversize frame: stays too).
//! After the hand-over decision it is disarmed: reads pass through with one branch.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::frame::{self, Opcode};
use crate::target::{ConnectError, Target, Transport};
use crate::tls::TlsClient;

/// Where the tap is in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Track {
    /// In the frames: the bytes after the last complete frame, and whether a fragmented
    /// message is half-way.
    Frames { tail: Vec<u8>, in_message: bool },
    /// Lost track (or disarmed): nothing can be handed over.
    Off,
}

/// Follows a server's byte stream after the HTTP handshake: its WebSocket frame boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    max: usize,
    track: Track,
}

impl Tracker {
    /// A tracker right after the handshake, for frames up to `max` bytes of payload.
    pub fn new(max: usize) -> Tracker {
        Tracker {
            max,
            track: Track::Frames {
                tail: Vec::new(),
                in_message: false,
            },
        }
    }

    /// Where it is.
    #[cfg(test)]
    pub fn track(&self) -> &Track {
        &self.track
    }

    /// Stops following (the hand-over was decided); returns the tail of an incomplete frame
    /// when the stream is at a message boundary, `None` when nothing can be handed over.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        match std::mem::replace(&mut self.track, Track::Off) {
            Track::Frames {
                tail,
                in_message: false,
            } => Some(tail),
            _ => None,
        }
    }

    /// Follows `bytes`, the next bytes the server sent.
    pub fn feed(&mut self, bytes: &[u8]) {
        let max = self.max;
        let Track::Frames { tail, in_message } = &mut self.track else {
            return;
        };
        tail.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            match frame::parse(&tail[at..], max) {
                Ok(Some(h)) => {
                    match h.opcode {
                        Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                            *in_message = !h.fin
                        }
                        Opcode::Ping | Opcode::Pong | Opcode::Close => {}
                    }
                    at += h.frame_len();
                }
                Ok(None) => break,
                Err(_) => {
                    self.track = Track::Off;
                    return;
                }
            }
        }
        tail.drain(..at);
        if tail.is_empty() && tail.capacity() > 4096 {
            *tail = Vec::new();
        }
    }
}

/// A plain TCP connection whose set-up bytes are followed by a [`Tracker`].
pub struct Tapped {
    tcp: TcpStream,
    tracker: Option<Box<Tracker>>,
}

impl Tapped {
    /// `tcp`, not followed (yet: [`Transport::handshaken`] arms it).
    pub fn plain(tcp: TcpStream) -> Tapped {
        Tapped { tcp, tracker: None }
    }

    /// Stops following; see [`Tracker::finish`].
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.tracker.take().and_then(|mut t| t.finish())
    }

    /// The TCP stream.
    pub fn into_inner(self) -> TcpStream {
        self.tcp
    }
}

impl Transport for Tapped {
    const TLS: bool = false;

    fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    async fn open(
        tcp: TcpStream,
        _target: &Target,
        _tls: Option<&TlsClient>,
    ) -> Result<Self, ConnectError> {
        Ok(Tapped::plain(tcp))
    }

    fn handshaken(&mut self, leftover: &[u8], max_frame: usize) {
        let mut t = Box::new(Tracker::new(max_frame));
        t.feed(leftover);
        self.tracker = Some(t);
    }
}

impl AsyncRead for Tapped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(t)) = (&polled, this.tracker.as_mut()) {
            t.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Tapped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x81 } else { 0x01 }, payload.len() as u8];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_tail_after_complete_frames_is_kept_whatever_the_splits() {
        let mut stream = text(true, b"joined");
        stream.extend([0x89, 0]); // a ping between messages
        let incomplete = text(true, b"hello there");
        stream.extend(&incomplete[..5]);
        for split in 1..stream.len() {
            let mut t = Tracker::new(1024);
            for chunk in stream.chunks(split) {
                t.feed(chunk);
            }
            assert_eq!(t.finish(), Some(incomplete[..5].to_vec()), "split {split}");
        }
    }

    #[test]
    fn a_half_way_message_or_a_bad_or_oversize_frame_hands_nothing_over() {
        let half = text(false, b"part");
        let mut t = Tracker::new(1024);
        t.feed(&half);
        assert_eq!(t.finish(), None);
        // ... and once its last fragment came, the boundary is back.
        let mut t = Tracker::new(1024);
        t.feed(&half);
        t.feed(&[0x80, 1, b'x']);
        assert_eq!(t.finish(), Some(Vec::new()));
        let mut t = Tracker::new(1024);
        t.feed(&[0xc1, 0]);
        assert_eq!(t.track(), &Track::Off);
        assert_eq!(t.finish(), None);
        let mut t = Tracker::new(1024);
        t.feed(&[0x81, 126, 0x10, 0x00]);
        assert_eq!(t.finish(), None);
    }
}
