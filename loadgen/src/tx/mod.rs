//! The pacer's send path: the frames of a plain `ws://` sender are written by the pacer's own
//! thread at their intended times, without a tokio wake-up per message.
//!
//! On the tokio path a message costs two thread wake-ups: the pacer's (its high-resolution
//! timer), then the sender task's, through tokio's `Notify` and the worker's eventfd. Here the
//! sender's connection is handed over after its set-up, as a receive-only one is ([`crate::rx`],
//! same eligibility: `[client] receive_path` not `tokio`, the `chatbench` profile, no reconnects,
//! not the poisoner, plain `ws://`): a receive worker reads it (deliveries from the room's other
//! senders are judged as on any reader, pings answered), and its write side becomes a
//! [`Link`] the pacer writes into when the sender falls due ([`Sender::fire`]).
//!
//! The link holds one bounded out-buffer ([`out::OutBuf`]) shared by both writers under one
//! mutex (uncontended: the worker takes it only to owe a control frame or at the socket's
//! writable edge), so a pong never lands inside a message. A write the socket takes only in
//! part stays queued and is finished by the next writer. Bounds: [`out::MAX_FRAMES`] frames and
//! [`out::MAX_BYTES`] bytes. When a due message does not fit, the sender is *held*: the message
//! stays due (open loop: its latency still counts from its intended time), the hold is counted
//! (`send_held`), and the pacer tries again [`RETRY`] later — as the tokio path's sender waits
//! for tungstenite's write buffer.
//!
//! The engine's bookkeeping is the tokio path's own ([`crate::engine::sent_one`],
//! [`crate::engine::record_send_lag`]): the sent counts, the sender windows, the loss timeline and
//! `send_lag` mean the same on both paths. The sender's state lives in the link, so that when
//! the connection ends the task reads what it had sent ([`detach`]), as the loss formula needs.

pub mod out;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{new_sender, record_send_lag, sent_one, SenderState, Shared};
use crate::plan::{ConnPlan, Role};
use crate::rx::conn::Mask;
use crate::rx::frame::write_masked;
use crate::stats::Stats;
use out::{masked_len, OutBuf, MAX_BYTES, MAX_FRAMES};

/// How long a held sender waits before the pacer tries its due message again.
pub const RETRY: Duration = Duration::from_millis(1);

/// Text frame opcode.
const TEXT: u8 = 0x1;

/// Whether sender connection `plan` writes on the pacer's thread (when it is plain `ws://`:
/// a TLS connection is never handed over, and its task sends as before).
pub fn applies(shared: &Shared, plan: ConnPlan) -> bool {
    plan.role == Role::Sender && crate::rx::applies(shared, plan)
}

/// The write side of one handed-over sender connection, shared by the pacer (messages) and
/// the receive worker that reads the connection (control frames).
pub struct Link {
    inner: Mutex<Inner>,
}

struct Inner {
    /// The socket (a duplicate of the worker's descriptor); `None` once the connection left
    /// the worker.
    stream: Option<Box<dyn Write + Send>>,
    out: OutBuf,
    /// The sender's state, from its first due message on.
    sender: Option<SenderState>,
    /// A write failed: the worker's next read ends the connection; nothing more is sent.
    broken: bool,
    /// The text of the message being encoded (kept: no allocation per message).
    text: String,
    mask: Mask,
}

/// What became of a connection's write side when it left the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Messages the sender had handed to the connection.
    pub sent: u64,
    /// Whether the wire is at a frame boundary (a polite close may follow).
    pub clean: bool,
}

impl Link {
    /// The write side over `stream`, its masking keys drawn from `seed`.
    pub fn new(stream: Box<dyn Write + Send>, seed: u64) -> Link {
        Link {
            inner: Mutex::new(Inner {
                stream: Some(stream),
                out: OutBuf::new(MAX_FRAMES, MAX_BYTES),
                sender: None,
                broken: false,
                text: String::new(),
                mask: Mask::new(seed),
            }),
        }
    }

    /// Queues a masked control or reply frame for the worker, if it fits (a pong that does
    /// not is not owed, as on the worker's own connections).
    pub fn owe(&self, opcode: u8, payload: &[u8], mask: &mut Mask) {
        let Ok(mut g) = self.inner.lock() else { return };
        if g.out.fits(masked_len(payload.len())) {
            g.out
                .push(|b| write_masked(b, opcode, payload, mask.next_key()));
        }
    }

    /// Writes what is queued, as far as the socket takes it (the worker: after a read turn
    /// and at the writable edge).
    pub fn flush(&self) {
        let Ok(mut g) = self.inner.lock() else { return };
        let Inner {
            stream,
            out,
            broken,
            ..
        } = &mut *g;
        if let Some(s) = stream.as_mut() {
            if out.write_to(s).is_err() {
                *broken = true;
            }
        }
    }

    /// The connection leaves the worker: nothing more is written here (the duplicate
    /// descriptor is closed). Returns what the sender had sent and whether the wire is at a
    /// frame boundary.
    pub fn close(&self) -> Closed {
        let Ok(mut g) = self.inner.lock() else {
            return Closed {
                sent: 0,
                clean: false,
            };
        };
        g.stream = None;
        Closed {
            sent: g.sender.as_ref().map_or(0, |s| s.sent),
            clean: !g.out.mid_frame(),
        }
    }
}

/// What the pacer learns from firing a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Its connection does not write here (not handed over): wake its task.
    NotHere,
    /// Written (or held); when to fire it next, from the start of sending (`None`: never —
    /// its schedule is over or its connection is gone).
    Next(Option<Duration>),
}

/// A sender as the pacer writes it.
pub struct Sender {
    shared: Arc<Shared>,
    plan: ConnPlan,
    room: u32,
}

impl Sender {
    /// Sender connection `plan`, when the send path applies to it.
    pub fn new(shared: &Arc<Shared>, plan: ConnPlan) -> Option<Sender> {
        let room = plan.room?;
        applies(shared, plan).then(|| Sender {
            shared: shared.clone(),
            plan,
            room,
        })
    }

    /// The sender is due at `now` (on the pacer's thread): queues every message due by then
    /// that fits, writes what the socket takes, and says when to come back.
    pub fn fire(&mut self, now: Instant) -> Fired {
        let shared = &*self.shared;
        let Some(link) = shared.tx_link(self.plan.index) else {
            return Fired::NotHere;
        };
        let Ok(mut g) = link.inner.lock() else {
            return Fired::Next(None);
        };
        let Inner {
            stream,
            out,
            sender,
            broken,
            text,
            mask,
        } = &mut *g;
        let Some(stream) = stream.as_mut().filter(|_| !*broken) else {
            return Fired::Next(None);
        };
        if sender.is_none() {
            *sender = new_sender(shared, self.plan, self.room);
        }
        let Some(s) = sender.as_mut() else {
            return Fired::Next(None);
        };
        let held = queue_due(shared, self.plan, self.room, s, out, text, mask, now);
        if out.write_to(stream).is_err() {
            *broken = true;
            Stats::inc(&shared.stats.counters.send_failures);
            return Fired::Next(None);
        }
        if held {
            Stats::inc(&shared.stats.counters.send_held);
            let retry = (now + RETRY).saturating_duration_since(s.start());
            return Fired::Next(Some(retry));
        }
        Fired::Next(s.next_offset())
    }
}

/// Queues, masked, every message of `s` due by `now` while it fits in `out`; `true` when one
/// did not fit (the sender is held: it stays due).
#[allow(clippy::too_many_arguments)]
pub(crate) fn queue_due(
    shared: &Shared,
    plan: ConnPlan,
    room: u32,
    s: &mut SenderState,
    out: &mut OutBuf,
    text: &mut String,
    mask: &mut Mask,
    now: Instant,
) -> bool {
    let mut first = true;
    while let Some(intended) = s.due(now) {
        text.clear();
        let ts = s.encode(shared, intended, text);
        if !out.fits(masked_len(text.len())) {
            return true;
        }
        if first {
            record_send_lag(shared, plan, now, intended);
            first = false;
        }
        s.take();
        out.push(|b| write_masked(b, TEXT, text.as_bytes(), mask.next_key()));
        sent_one(shared, plan, room, s, intended, ts);
    }
    false
}

/// Attaches the write side of sender connection `plan` (its socket `stream`, about to go to
/// a receive worker) and gives it to the pacer; `None` for a connection that is not a sender
/// of this path, or whose descriptor cannot be duplicated (it then stays as it is).
pub(crate) fn attach(
    shared: &Shared,
    plan: ConnPlan,
    stream: &std::net::TcpStream,
) -> Option<Arc<Link>> {
    if !applies(shared, plan) {
        return None;
    }
    let dup = stream.try_clone().ok()?;
    let seed = u64::from(plan.index) ^ crate::control::unix_us() as u64;
    Some(Arc::new(Link::new(Box::new(dup), seed)))
}

/// Publishes `link` to the pacer once its connection is on a worker.
pub(crate) fn publish(shared: &Shared, plan: ConnPlan, link: &Arc<Link>) {
    if !shared.publish_tx_link(plan.index, link.clone()) {
        tracing::warn!("send path: sender {} already had a write side", plan.index);
    }
}

/// The connection of `link` left its worker (`gone`: it ended): closes the write side and,
/// when it ended, records what the sender had sent (the loss formula's owed messages).
/// Returns whether the wire is at a frame boundary (a polite close may follow).
pub(crate) fn detach(shared: &Shared, plan: ConnPlan, link: &Link, gone: bool) -> bool {
    let closed = link.close();
    if gone {
        shared.sender_gone(plan, closed.sent);
    }
    closed.clean
}

#[cfg(test)]
mod tests;
