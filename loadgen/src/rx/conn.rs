//! One connection on the epoll receive path: its socket, the bytes of a frame not yet complete,
//! a fragmented message being put together, and the control frames it owes the server. It
//! turns what a read brought into frames, and each complete text message into the engine's
//! judgement ([`judge_bytes`]: the very `judge` the tokio path calls, after a fast parse of
//! an ASCII `msg` frame that needs no UTF-8 check) — so every figure means the same on both
//! paths. Each read is a `recvmsg` that also brings the kernel's receive time of what it
//! read ([`super::stamp`]); one clock read per read: every frame it brought arrived by the time
//! it returned, and is timed to that moment ([`Arrival`]). The difference, what the receiving
//! thread's wake-up cost, is recorded per in-window delivery as the receive lag.
//!
//! Bounds: at most one incomplete frame is kept (`max_message_size` plus its header, refused
//! from the header as soon as it is known to be larger), one fragmented message of at most
//! `max_message_size`, and [`OUT_LIMIT`] bytes of control frames owed (a pong that does not fit
//! is not queued: tungstenite, too, keeps only the latest pong). A sender's connection owes
//! them into the out-buffer it shares with the pacer instead ([`crate::tx::Link`], its bounds).

use std::io::{ErrorKind, Write};

use tokio::sync::oneshot;

use super::frame::{self, Opcode};
use super::stamp::{self, Clock, Stamps};
use super::Ended;
use crate::engine::{judge_bytes, Receiver, Shared};
use crate::plan::ConnPlan;
use crate::stats::Tally;
use chatbench_model::scenario::ArrivalClock;

/// Most bytes of control frames (pongs, replies, the close answer) a connection may owe.
pub const OUT_LIMIT: usize = 16 * 1024;

/// Full reads of one socket in one turn before the loop serves the others (it comes back).
pub const READS_PER_TURN: usize = 8;

/// How a turn of reading left the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The socket is drained; the next readiness event brings more.
    Drained,
    /// More may be waiting: read it again next turn.
    More,
    /// The connection ended (counted in `closed_by_server`).
    Gone,
}

/// Why the connection ends.
enum End {
    /// A protocol error, a reset or end of stream: labelled `reset`, as the tokio path does.
    Reset,
    /// The server sent a close frame (already counted under its code).
    Closed,
}

/// What the frames of one `read` are handled with: the time they arrived by, for all of them
/// (they arrived together), the worker's masking keys and the worker's [`Tally`].
pub struct Arrival<'a> {
    /// When the frames had arrived, µs since the engine's epoch: every delivery the read
    /// brought is timed to it.
    pub at_us: u64,
    /// Masking keys for what the connection answers.
    pub mask: &'a mut Mask,
    /// Where the deliveries' figures gather until the worker publishes them.
    pub tally: &'a mut Tally,
}

/// A receive-only connection owned by one worker.
pub struct Conn {
    /// The socket (non-blocking, registered with the worker's poll).
    pub stream: mio::net::TcpStream,
    plan: ConnPlan,
    receiver: Receiver,
    /// Bytes of an incomplete frame, carried to the next read.
    partial: Vec<u8>,
    /// A fragmented message being assembled: its kind and its bytes so far.
    message: Option<(Opcode, Vec<u8>)>,
    /// Control frames not yet taken by the socket.
    out: Out,
    /// Where the connection goes back when it ends or the run stops.
    pub done: oneshot::Sender<Ended>,
}

impl Conn {
    /// A connection handed over after its set-up; `partial` is the start of a frame that was
    /// read before (the rest follows on the socket).
    pub fn new(
        stream: mio::net::TcpStream,
        plan: ConnPlan,
        receiver: Receiver,
        partial: Vec<u8>,
        done: oneshot::Sender<Ended>,
    ) -> Conn {
        Conn {
            stream,
            plan,
            receiver,
            partial,
            message: None,
            out: Out::Own(Vec::new()),
            done,
        }
    }

    /// Whether it is a sender's (its writes go through the pacer).
    pub fn is_sender(&self) -> bool {
        matches!(self.out, Out::Shared(_))
    }

    /// The same connection, a sender's: what it owes goes into the out-buffer it shares with
    /// the pacer, which writes its messages ([`crate::tx`]).
    pub fn with_link(mut self, link: std::sync::Arc<crate::tx::Link>) -> Conn {
        self.out = Out::Shared(link);
        self
    }

    /// Reads what the socket has (up to [`READS_PER_TURN`] full buffers) and handles every
    /// complete frame; `clock` converts kernel timestamps (read at this wake-up), `mask` draws
    /// the masking keys of what it answers, the deliveries' figures go into `tally` (the
    /// caller publishes it).
    pub fn read_turn(
        &mut self,
        shared: &Shared,
        clock: &Clock,
        scratch: &mut [u8],
        mask: &mut Mask,
        tally: &mut Tally,
    ) -> Turn {
        for _ in 0..READS_PER_TURN {
            let (n, kernel_ns) = match stamp::recv(&self.stream, scratch) {
                Ok((0, _)) => return self.gone(shared, End::Reset),
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Turn::Drained,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.gone(shared, End::Reset),
            };
            let stamps = Stamps {
                read_us: shared.now_us(),
                kernel_us: kernel_ns.map(|ns| clock.engine_us(ns)),
            };
            let before = tally.window_latencies();
            let mut read = Arrival {
                at_us: stamps.arrival_us(shared.scenario.client.arrival == ArrivalClock::Kernel),
                mask: &mut *mask,
                tally: &mut *tally,
            };
            let judged = self.received(shared, &scratch[..n], &mut read);
            let deliveries = tally.window_latencies() - before;
            tally.receive_lag(&shared.stats, stamps.lag_us(), deliveries);
            if let Err(gone) = judged {
                return gone;
            }
            // A short read drained the socket (TCP copies all it has up to the buffer's size):
            // no second read just to hear `EAGAIN`; the next arrival is a new readiness edge.
            if n < scratch.len() {
                self.flush();
                return Turn::Drained;
            }
        }
        self.flush();
        Turn::More
    }

    /// Handles what one `read` brought (everything a turn does after the `read` and its clock
    /// read; the gate's workload enters here): every complete frame now, the rest kept for the
    /// next. `Err(Turn::Gone)` when the connection ends (counted).
    pub(crate) fn received(
        &mut self,
        shared: &Shared,
        bytes: &[u8],
        read: &mut Arrival<'_>,
    ) -> Result<(), Turn> {
        self.feed(shared, bytes, read)
            .map_err(|end| self.gone(shared, end))
    }

    /// Writes what the connection owes, as far as the socket takes it.
    pub fn flush(&mut self) {
        let out = match &mut self.out {
            Out::Own(out) => out,
            Out::Shared(link) => return link.flush(),
        };
        while !out.is_empty() {
            match (&self.stream).write(out) {
                Ok(0) => return,
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock: the writable event brings us back; other errors: the next read
                // finds the connection broken.
                Err(_) => return,
            }
        }
        if out.capacity() > OUT_LIMIT {
            *out = Vec::new();
        }
    }

    fn gone(&mut self, shared: &Shared, end: End) -> Turn {
        if let End::Reset = end {
            shared.stats.closed_by_server.add("reset");
        }
        self.flush();
        Turn::Gone
    }

    /// Handles the bytes of one read: complete frames now, the rest kept for the next.
    fn feed(&mut self, shared: &Shared, bytes: &[u8], read: &mut Arrival<'_>) -> Result<(), End> {
        if self.partial.is_empty() {
            let used = self.frames(shared, bytes, read)?;
            self.partial.extend_from_slice(&bytes[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(bytes);
            let used = self.frames(shared, &buf, read)?;
            buf.drain(..used);
            self.partial = buf;
        }
        // An idle connection keeps no large buffer.
        if self.partial.is_empty() && self.partial.capacity() > 4096 {
            self.partial = Vec::new();
        }
        Ok(())
    }

    /// Handles every complete frame at the start of `buf`; returns how many bytes they took.
    fn frames(
        &mut self,
        shared: &Shared,
        buf: &[u8],
        read: &mut Arrival<'_>,
    ) -> Result<usize, End> {
        let max = shared.scenario.client.max_message_size;
        let mut at = 0;
        while let Some(h) = frame::parse(&buf[at..], max).map_err(|_| End::Reset)? {
            let payload = &buf[at + h.header_len..at + h.frame_len()];
            self.frame(shared, h.opcode, h.fin, payload, read)?;
            at += h.frame_len();
        }
        Ok(at)
    }

    fn frame(
        &mut self,
        shared: &Shared,
        opcode: Opcode,
        fin: bool,
        payload: &[u8],
        read: &mut Arrival<'_>,
    ) -> Result<(), End> {
        match opcode {
            Opcode::Text | Opcode::Binary if self.message.is_some() => Err(End::Reset),
            Opcode::Text | Opcode::Binary if fin => self.message(shared, opcode, payload, read),
            Opcode::Text | Opcode::Binary => {
                self.message = Some((opcode, payload.to_vec()));
                Ok(())
            }
            Opcode::Continuation => {
                let Some((kind, mut bytes)) = self.message.take() else {
                    return Err(End::Reset);
                };
                if bytes.len() + payload.len() > shared.scenario.client.max_message_size {
                    return Err(End::Reset);
                }
                bytes.extend_from_slice(payload);
                if fin {
                    self.message(shared, kind, &bytes, read)
                } else {
                    self.message = Some((kind, bytes));
                    Ok(())
                }
            }
            Opcode::Ping => {
                self.owe(0xA, payload, read.mask);
                Ok(())
            }
            Opcode::Pong => Ok(()),
            Opcode::Close => {
                let label = frame::close_label(payload).map_err(|_| End::Reset)?;
                shared.stats.closed_by_server.add(&label);
                // Answer with the same status, as tungstenite does.
                self.owe(0x8, payload.get(..2).unwrap_or_default(), read.mask);
                Err(End::Closed)
            }
        }
    }

    /// A complete message: text goes to the engine's judgement, binary is a bad frame.
    fn message(
        &mut self,
        shared: &Shared,
        kind: Opcode,
        bytes: &[u8],
        read: &mut Arrival<'_>,
    ) -> Result<(), End> {
        if kind == Opcode::Binary {
            shared
                .stats
                .bad_frame(&format!("<binary frame, {} bytes>", bytes.len()));
            return Ok(());
        }
        // Not UTF-8: a protocol error, as tungstenite calls it.
        if let Some(reply) = judge_bytes(
            shared,
            self.plan,
            &mut self.receiver,
            bytes,
            read.at_us,
            read.tally,
        )
        .map_err(|_| End::Reset)?
        {
            self.owe(0x1, reply.as_bytes(), read.mask);
        }
        Ok(())
    }

    /// Queues a masked control or reply frame, within [`OUT_LIMIT`].
    fn owe(&mut self, opcode: u8, payload: &[u8], mask: &mut Mask) {
        match &mut self.out {
            Out::Own(out) => {
                if out.len() + payload.len() + 14 <= OUT_LIMIT {
                    frame::write_masked(out, opcode, payload, mask.next_key());
                }
            }
            Out::Shared(link) => link.owe(opcode, payload, mask),
        }
    }
}

/// Where a connection's control frames wait for the socket.
enum Out {
    /// Its own buffer (a receive-only connection), within [`OUT_LIMIT`].
    Own(Vec<u8>),
    /// The out-buffer a sender's connection shares with the pacer.
    Shared(std::sync::Arc<crate::tx::Link>),
}

/// Masking keys for what a client sends (RFC 6455 §5.3: unpredictable to the server's
/// intermediaries; xorshift64* seeded from the clock is plenty for pongs and closes).
pub struct Mask(u64);

impl Mask {
    /// A generator seeded from `seed` (any value; 0 is replaced).
    pub fn new(seed: u64) -> Mask {
        Mask(seed | 1)
    }

    pub(crate) fn next_key(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32).to_ne_bytes()
    }
}
