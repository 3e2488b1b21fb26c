//! The chat rules of protocol v1, once, free of I/O: what a received text frame means for a
//! connection, and what a fan-out does with each recipient's queue.
//!
//! Every architecture (and the cluster, through task-per-conn) hands a received text frame and
//! the connection's rooms to [`on_text`] and carries out the [`Action`] it returns: register a
//! membership and answer `joined`, drop one, fan the received frame out unchanged, answer an
//! error (closing the connection when the code is fatal, with the close code [`Refusal`]
//! names), or panic on purpose ([`injected_panic`], fault injection). Room limits and every
//! error text live here; the architectures own only their sockets, queues and room registries.
//!
//! A fan-out asks [`FanOut::offer`] about every recipient: the slow-consumer rule and the
//! delivery counters are here, so the architectures only push, drop or kick as told. The rule:
//! a recipient's queue is bounded in frames (`outbound_queue`) and in bytes
//! (`outbound_queue_bytes`, kept in the recipient's [`Backlog`]); a frame past either bound
//! is dropped (`drop`, counted by bound) or gets the recipient disconnected (`disconnect`);
//! under `drop`, a recipient that has had frames refused and nothing written for
//! `slow_consumer_grace` is disconnected too, as NATS disconnects a slow consumer, so that
//! dropping cannot pin a stalled consumer's memory forever. Every queued byte is counted in
//! `chatbench_outbound_queued_bytes` until its writer reports it written ([`Backlog::written`])
//! or its connection ends ([`Backlog::release`]).
//!
//! Nothing in this module allocates on the `msg` path: the action borrows the room name from
//! the received text, and the frame itself is shared by the caller. The clock is read only when
//! a frame is refused.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chatbench_protocol::{close_code, encode_error, parse_client, ClientFrame, ErrorCode};

use crate::config::{ServerConfig, SlowConsumerPolicy};
use crate::metrics::{DisconnectReason, Metrics};

/// The limits a connection's frames are judged against (from [`ServerConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most rooms one connection may be in at once (`max_rooms_per_conn`).
    pub max_rooms: usize,
    /// Whether `{"t":"panic"}` panics the handler (`fault_injection`).
    pub fault_injection: bool,
}

impl From<&ServerConfig> for Limits {
    fn from(config: &ServerConfig) -> Limits {
        Limits {
            max_rooms: config.max_rooms_per_conn,
            fault_injection: config.fault_injection,
        }
    }
}

/// The rooms a connection is in, as the core needs to see them: each architecture keeps them
/// its own way ([`JoinedRooms`] for task-per-conn and thread-pool; room ids for epoll).
pub trait Membership {
    /// The index of `room` among the connection's rooms, if it is in it.
    fn position(&self, room: &str) -> Option<usize>;
    /// How many rooms the connection is in.
    fn count(&self) -> usize;
}

/// A connection's rooms by name: at most `max_rooms_per_conn`, so a linear scan is cheap.
#[derive(Debug, Default)]
pub struct JoinedRooms(Vec<Box<str>>);

impl JoinedRooms {
    /// No rooms (allocates nothing).
    pub const fn new() -> JoinedRooms {
        JoinedRooms(Vec::new())
    }

    /// Records a new membership (after [`Action::Join`] with `new`).
    pub fn add(&mut self, room: &str) {
        self.0.push(room.into());
    }

    /// Forgets the membership at `index` (from [`Action::Leave`]); returns the room's name.
    pub fn remove(&mut self, index: usize) -> Box<str> {
        self.0.swap_remove(index)
    }

    /// Forgets every membership, handing back the rooms' names (to leave each registry room).
    pub fn drain(&mut self) -> std::vec::Drain<'_, Box<str>> {
        self.0.drain(..)
    }
}

impl Membership for JoinedRooms {
    fn position(&self, room: &str) -> Option<usize> {
        self.0.iter().position(|r| **r == *room)
    }

    fn count(&self) -> usize {
        self.0.len()
    }
}

/// What a received text frame asks of the connection.
#[derive(Debug, PartialEq)]
pub enum Action<'a> {
    /// Answer `joined` for `room` (encode it with [`joined_frame`]). `new`: the connection was
    /// not in it yet: add the membership first (a re-join only answers again).
    Join {
        /// The room, borrowed from the frame where it had no escapes.
        room: Cow<'a, str>,
        /// Whether the membership is new.
        new: bool,
    },
    /// Leave `room`, the connection's room number `index` ([`Membership::position`]). No answer.
    Leave {
        /// The room.
        room: Cow<'a, str>,
        /// Its index among the connection's rooms.
        index: usize,
    },
    /// Queue the received frame, byte for byte and shared, to every *other* member of `room`
    /// (the connection's room number `index`). No answer to the sender.
    Publish {
        /// The room.
        room: Cow<'a, str>,
        /// Its index among the connection's rooms.
        index: usize,
    },
    /// Answer an `error` frame, and close the connection if the code is fatal.
    Refuse(Refusal),
    /// Fault injection is on and the client asked for a panic: call [`injected_panic`].
    Panic,
}

/// An `error` frame the server answers, and whether (and how) the connection then closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error code.
    pub code: ErrorCode,
    /// The human-readable reason in the `error` frame.
    pub reason: Cow<'static, str>,
}

impl Refusal {
    /// An `error` frame with `code` and `reason`.
    pub fn new(code: ErrorCode, reason: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
        }
    }

    /// A binary message (protocol v1 is text only): fatal, 1003.
    pub fn binary_frame() -> Refusal {
        Refusal::new(
            ErrorCode::BinaryFrame,
            "binary messages are not part of protocol v1",
        )
    }

    /// A recipient whose outbound queue stayed full under the `disconnect` policy: fatal, 1008.
    pub fn slow_consumer() -> Refusal {
        Refusal::new(
            ErrorCode::SlowConsumer,
            "outbound queue full: the client reads too slowly",
        )
    }

    /// Whether the connection closes after the `error` frame.
    pub fn is_fatal(&self) -> bool {
        self.code.is_fatal()
    }

    /// The close code sent after the `error` frame of a fatal refusal (1008 for a code that
    /// names none, which a non-fatal code never reaches).
    pub fn close_code(&self) -> u16 {
        self.code
            .close_code()
            .unwrap_or(close_code::POLICY_VIOLATION)
    }

    /// The close frame's reason text: the error code's name.
    pub fn close_reason(&self) -> &'static str {
        self.code.as_str()
    }

    /// How the disconnect after a fatal refusal is counted.
    pub fn disconnect_reason(&self) -> DisconnectReason {
        DisconnectReason::for_error(self.code).unwrap_or(DisconnectReason::ProtocolError)
    }

    /// The `error` frame's text.
    pub fn frame(&self) -> String {
        encode_error(self.code, &self.reason)
    }
}

/// The `joined` answer for `room`.
pub fn joined_frame(room: &str) -> String {
    chatbench_protocol::encode_joined(room)
}

/// Judges one received text frame against the connection's rooms and the limits.
pub fn on_text<'a>(text: &'a str, rooms: &impl Membership, limits: Limits) -> Action<'a> {
    let frame = match parse_client(text) {
        Ok(frame) => frame,
        Err(e) => return Action::Refuse(Refusal::new(e.code(), e.to_string())),
    };
    match frame {
        ClientFrame::Join { room } => {
            if rooms.position(&room).is_some() {
                return Action::Join { room, new: false };
            }
            if rooms.count() >= limits.max_rooms {
                let why = format!("already in {} rooms (the limit)", limits.max_rooms);
                return Action::Refuse(Refusal::new(ErrorCode::TooManyRooms, why));
            }
            Action::Join { room, new: true }
        }
        ClientFrame::Leave { room } => match rooms.position(&room) {
            Some(index) => Action::Leave { room, index },
            None => Action::Refuse(not_joined(&room)),
        },
        ClientFrame::Msg(msg) => match rooms.position(&msg.room) {
            Some(index) => Action::Publish {
                room: msg.room,
                index,
            },
            None => Action::Refuse(not_joined(&msg.room)),
        },
        ClientFrame::Panic if limits.fault_injection => Action::Panic,
        ClientFrame::Panic => Action::Refuse(Refusal::new(
            ErrorCode::UnknownType,
            "unknown frame type \"panic\" (fault injection is off)",
        )),
    }
}

fn not_joined(room: &str) -> Refusal {
    Refusal::new(ErrorCode::NotJoined, format!("not in room {room:?}"))
}

/// The fault-injection panic ([`Action::Panic`]) of connection `conn`. Where it unwinds to is
/// the architecture's fault model (its task, its worker thread, or the whole loop).
pub fn injected_panic(conn: impl std::fmt::Display) -> ! {
    panic!("fault injection: connection {conn} received {{\"t\":\"panic\"}}")
}

/// What a fan-out does for one recipient ([`FanOut::offer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Push the shared frame onto its queue.
    Queue,
    /// Its queue is full under the `drop` policy: skip it (counted).
    Drop,
    /// Its queue is full under the `disconnect` policy: close it as a slow consumer
    /// ([`Refusal::slow_consumer`]), once.
    Kick,
}

/// A recipient's outbound bytes as the slow-consumer rule sees them: bytes queued and not yet
/// written, and since when frames for it have been refused with nothing written. Kept beside
/// the recipient's queue, under the same lock. Eight bytes: it is on every connection
/// (`outbound_queue_bytes` is at most [`MAX_QUEUE_BYTES`]; the refusal time is in
/// milliseconds of [`clock_ms`]).
#[derive(Debug, Default)]
pub struct Backlog {
    bytes: u32,
    /// [`clock_ms`] at the first refusal since the last write; 0: none.
    refused_since: u32,
}

/// The largest `outbound_queue_bytes` (a [`Backlog`] counts in 32 bits, with room for replies).
pub const MAX_QUEUE_BYTES: usize = 1 << 31;

impl Backlog {
    /// Bytes queued and not yet written.
    pub fn bytes(&self) -> usize {
        self.bytes as usize
    }

    /// Counts `n` bytes queued outside a fan-out (a reply), which the byte bound does not
    /// refuse: replies answer the client's own frames, and a client that does not read them
    /// stops being read. The caller adds them to `chatbench_outbound_queued_bytes`.
    pub fn queued(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u32);
    }

    /// The owner took `n` queued bytes to write them: they leave the backlog, and the
    /// consumer is being written to, so its grace starts again. The caller subtracts them from
    /// `chatbench_outbound_queued_bytes` ([`Metrics::outbound_released`]) once written.
    pub fn written(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_sub(n as u32);
        if n > 0 {
            self.refused_since = 0;
        }
    }

    /// The connection ended: every byte still queued is released; returns how many, for
    /// [`Metrics::outbound_released`].
    pub fn release(&mut self) -> usize {
        self.refused_since = 0;
        std::mem::take(&mut self.bytes) as usize
    }
}

/// Milliseconds since this process first asked, never 0 (0 marks "no refusal"); wraps after
/// 49 days, which `wrapping_sub` makes harmless for any refusal shorter than that.
pub fn clock_ms() -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u32;
    ms.max(1)
}

/// One fan-out of one frame: the slow-consumer rule for each recipient and the counters;
/// [`FanOut::finish`] records them.
#[derive(Debug)]
pub struct FanOut {
    /// The frame's length as it is queued (epoll: with its header).
    len: usize,
    policy: SlowConsumerPolicy,
    cap: usize,
    cap_bytes: usize,
    grace: Duration,
    inject_work: u32,
    delivered: u64,
    queued_bytes: usize,
    dropped_frames: u64,
    dropped_bytes: u64,
    /// [`clock_ms`], read once per fan-out at the first refusal.
    now: Option<u32>,
}

impl FanOut {
    /// A fan-out of a frame of `len` bytes under `config`'s queue bounds (`outbound_queue`,
    /// `outbound_queue_bytes`), policy and grace.
    pub fn new(config: &ServerConfig, len: usize) -> FanOut {
        FanOut {
            len,
            policy: config.slow_consumer,
            cap: config.outbound_queue,
            cap_bytes: config.outbound_queue_bytes,
            grace: config.slow_consumer_grace,
            inject_work: config.inject_work,
            delivered: 0,
            queued_bytes: 0,
            dropped_frames: 0,
            dropped_bytes: 0,
            now: None,
        }
    }

    /// A recipient has `queued` frames and `backlog` waiting: what to do with the frame for
    /// it. [`Offer::Queue`] counts the bytes in `backlog`: the caller must queue the frame.
    #[inline]
    pub fn offer(&mut self, queued: usize, backlog: &mut Backlog) -> Offer {
        let len = self.len;
        let fits = backlog.bytes() + len <= self.cap_bytes;
        if queued < self.cap && fits {
            backlog.bytes += len as u32;
            self.queued_bytes += len;
            self.delivered += 1;
            return Offer::Queue;
        }
        self.refuse(backlog, fits)
    }

    #[cold]
    fn refuse(&mut self, backlog: &mut Backlog, fits: bool) -> Offer {
        if self.policy == SlowConsumerPolicy::Disconnect {
            return Offer::Kick;
        }
        let now = *self.now.get_or_insert_with(clock_ms);
        if backlog.refused_since == 0 {
            backlog.refused_since = now;
        }
        let stalled = Duration::from_millis(u64::from(now.wrapping_sub(backlog.refused_since)));
        if stalled >= self.grace {
            return Offer::Kick;
        }
        if fits {
            self.dropped_frames += 1;
        } else {
            self.dropped_bytes += 1;
        }
        Offer::Drop
    }

    /// Frames queued so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Counts the deliveries, queued bytes and drops in `metrics` and runs the injected
    /// per-delivery work ([`crate::work::inject`]).
    pub fn finish(self, metrics: &Metrics) {
        metrics.deliveries(self.delivered);
        metrics.outbound_queued(self.queued_bytes);
        crate::work::inject(self.inject_work, self.delivered);
        if self.dropped_frames > 0 {
            metrics.dropped_queue_full(self.dropped_frames);
        }
        if self.dropped_bytes > 0 {
            metrics.dropped_queue_bytes(self.dropped_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_rooms: 2,
        fault_injection: false,
    };

    fn refusal(a: Action<'_>) -> Refusal {
        match a {
            Action::Refuse(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn join_is_new_once_then_answers_again() {
        let mut rooms = JoinedRooms::new();
        let a = on_text(r#"{"t":"join","room":"r1"}"#, &rooms, LIMITS);
        assert_eq!(
            a,
            Action::Join {
                room: "r1".into(),
                new: true
            }
        );
        rooms.add("r1");
        let a = on_text(r#"{"t":"join","room":"r1"}"#, &rooms, LIMITS);
        assert_eq!(
            a,
            Action::Join {
                room: "r1".into(),
                new: false
            }
        );
        assert_eq!(joined_frame("r1"), r#"{"t":"joined","room":"r1"}"#);
    }

    #[test]
    fn the_room_limit_refuses_a_new_room_but_not_a_rejoin() {
        let mut rooms = JoinedRooms::new();
        rooms.add("a");
        rooms.add("b");
        let r = refusal(on_text(r#"{"t":"join","room":"c"}"#, &rooms, LIMITS));
        assert_eq!(r.code, ErrorCode::TooManyRooms);
        assert_eq!(r.reason, "already in 2 rooms (the limit)");
        assert!(!r.is_fatal());
        assert!(matches!(
            on_text(r#"{"t":"join","room":"b"}"#, &rooms, LIMITS),
            Action::Join { new: false, .. }
        ));
    }

    #[test]
    fn leave_and_msg_need_membership() {
        let mut rooms = JoinedRooms::new();
        rooms.add("a");
        rooms.add("b");
        assert_eq!(
            on_text(r#"{"t":"leave","room":"b"}"#, &rooms, LIMITS),
            Action::Leave {
                room: "b".into(),
                index: 1
            }
        );
        let msg = r#"{"t":"msg","room":"a","from":"x","seq":1,"ts":2,"body":"hi"}"#;
        assert_eq!(
            on_text(msg, &rooms, LIMITS),
            Action::Publish {
                room: "a".into(),
                index: 0
            }
        );
        assert_eq!(&*rooms.remove(0), "a");
        for (text, room) in [(msg, "a"), (r#"{"t":"leave","room":"zz"}"#, "zz")] {
            let r = refusal(on_text(text, &rooms, LIMITS));
            assert_eq!(r.code, ErrorCode::NotJoined);
            assert_eq!(r.reason, format!("not in room {room:?}"));
            assert!(!r.is_fatal());
        }
        assert_eq!(rooms.drain().count(), 1);
        assert_eq!(rooms.count(), 0);
    }

    #[test]
    fn a_published_room_is_borrowed_from_the_frame() {
        let text = r#"{"t":"msg","room":"a","body":"x"}"#;
        let mut rooms = JoinedRooms::new();
        rooms.add("a");
        match on_text(text, &rooms, LIMITS) {
            Action::Publish { room, .. } => assert!(matches!(room, Cow::Borrowed(_))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn panic_only_with_fault_injection() {
        let rooms = JoinedRooms::new();
        let on = Limits {
            fault_injection: true,
            ..LIMITS
        };
        assert_eq!(on_text(r#"{"t":"panic"}"#, &rooms, on), Action::Panic);
        let r = refusal(on_text(r#"{"t":"panic"}"#, &rooms, LIMITS));
        assert_eq!(r.code, ErrorCode::UnknownType);
        assert!(r.reason.contains("fault injection is off"));
        assert!(!r.is_fatal());
        let caught = std::panic::catch_unwind(|| injected_panic(7));
        let payload = caught.expect_err("injected_panic must panic");
        let text = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("connection 7"), "{text}");
    }

    #[test]
    fn every_parse_error_is_answered_with_its_code_and_close_code() {
        let rooms = JoinedRooms::new();
        let cases = [
            ("not json", ErrorCode::BadJson, Some(1008)),
            (r#"{"t":"nope"}"#, ErrorCode::UnknownType, None),
            (r#"{"t":"join"}"#, ErrorCode::BadField, Some(1008)),
            (
                r#"{"t":"join","room":"no spaces"}"#,
                ErrorCode::BadRoom,
                Some(1008),
            ),
        ];
        for (text, code, close) in cases {
            let r = refusal(on_text(text, &rooms, LIMITS));
            assert_eq!(r.code, code, "{text}");
            assert_eq!(r.is_fatal(), close.is_some(), "{text}");
            if let Some(cc) = close {
                assert_eq!(r.close_code(), cc, "{text}");
                assert_eq!(r.close_reason(), code.as_str());
                assert_eq!(
                    DisconnectReason::for_error(code),
                    Some(r.disconnect_reason())
                );
            }
            assert!(r.frame().contains(code.as_str()), "{}", r.frame());
        }
    }

    #[test]
    fn every_error_code_closes_as_the_protocol_table_says() {
        let table = [
            (ErrorCode::BadJson, Some(1008)),
            (ErrorCode::UnknownType, None),
            (ErrorCode::BadField, Some(1008)),
            (ErrorCode::BadRoom, Some(1008)),
            (ErrorCode::NotJoined, None),
            (ErrorCode::TooManyRooms, None),
            (ErrorCode::FrameTooLarge, Some(1009)),
            (ErrorCode::InvalidUtf8, Some(1007)),
            (ErrorCode::BinaryFrame, Some(1003)),
            (ErrorCode::SlowConsumer, Some(1008)),
            (ErrorCode::ProtocolError, Some(1002)),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len(), "a code is missing here");
        for (code, close) in table {
            let r = Refusal::new(code, "why");
            assert_eq!(r.is_fatal(), close.is_some(), "{code}");
            if let Some(cc) = close {
                assert_eq!(r.close_code(), cc, "{code}");
                assert_eq!(
                    Some(r.disconnect_reason()),
                    DisconnectReason::for_error(code)
                );
            }
            assert_eq!(r.close_reason(), code.as_str());
            assert_eq!(r.frame(), encode_error(code, "why"));
        }
    }

    #[test]
    fn fixed_refusals_name_their_codes() {
        let b = Refusal::binary_frame();
        assert_eq!((b.code, b.close_code()), (ErrorCode::BinaryFrame, 1003));
        assert_eq!(b.disconnect_reason(), DisconnectReason::BinaryFrame);
        let s = Refusal::slow_consumer();
        assert_eq!((s.code, s.close_code()), (ErrorCode::SlowConsumer, 1008));
        assert_eq!(s.disconnect_reason(), DisconnectReason::SlowConsumer);
        // A code without a close code of its own closes as a protocol error if ever closed.
        let n = Refusal::new(ErrorCode::NotJoined, "x");
        assert_eq!(n.close_code(), 1008);
        assert_eq!(n.disconnect_reason(), DisconnectReason::ProtocolError);
    }

    fn metric(m: &Metrics, name: &str) -> f64 {
        crate::metrics::sample_value(&m.render(), name).unwrap_or(f64::NAN)
    }

    const FULL: &str = "chatbench_drops_total{reason=\"queue_full\"}";
    const BYTES: &str = "chatbench_drops_total{reason=\"queue_bytes\"}";
    const QUEUED: &str = "chatbench_outbound_queued_bytes";

    #[test]
    fn fan_out_applies_the_frame_bound_and_the_policy() {
        let config = ServerConfig {
            outbound_queue: 2,
            ..ServerConfig::default()
        };
        let metrics = Metrics::new("test");
        let mut b = Backlog::default();
        let mut f = FanOut::new(&config, 10);
        assert_eq!(f.offer(0, &mut b), Offer::Queue);
        assert_eq!(f.offer(1, &mut b), Offer::Queue);
        assert_eq!(f.offer(2, &mut b), Offer::Drop);
        assert_eq!(f.offer(9, &mut b), Offer::Drop);
        assert_eq!((f.delivered(), b.bytes()), (2, 20));
        f.finish(&metrics);
        assert_eq!(metric(&metrics, "chatbench_deliveries_total"), 2.0);
        assert_eq!(metric(&metrics, FULL), 2.0);
        assert_eq!(metric(&metrics, BYTES), 0.0);
        assert_eq!(metric(&metrics, QUEUED), 20.0);
        let kick = ServerConfig {
            slow_consumer: SlowConsumerPolicy::Disconnect,
            ..config
        };
        let mut f = FanOut::new(&kick, 10);
        assert_eq!(f.offer(1, &mut Backlog::default()), Offer::Queue);
        assert_eq!(f.offer(2, &mut Backlog::default()), Offer::Kick);
        assert_eq!(f.delivered(), 1);
    }

    #[test]
    fn fan_out_applies_the_byte_bound_and_the_policy() {
        let config = ServerConfig {
            outbound_queue_bytes: 100,
            max_frame_bytes: 64,
            ..ServerConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        let metrics = Metrics::new("test");
        let mut b = Backlog::default();
        let mut f = FanOut::new(&config, 60);
        assert_eq!(f.offer(0, &mut b), Offer::Queue);
        f.finish(&metrics);
        let mut f = FanOut::new(&config, 41);
        assert_eq!(f.offer(1, &mut b), Offer::Drop, "60 + 41 > 100");
        f.finish(&metrics);
        let mut f = FanOut::new(&config, 40);
        assert_eq!(f.offer(1, &mut b), Offer::Queue, "exactly the bound");
        assert_eq!(b.bytes(), 100);
        f.finish(&metrics);
        assert_eq!(metric(&metrics, BYTES), 1.0);
        assert_eq!(metric(&metrics, FULL), 0.0);
        assert_eq!(metric(&metrics, QUEUED), 100.0);
        // Written bytes leave the backlog; the rest is released with the connection.
        b.written(60);
        metrics.outbound_released(60);
        assert_eq!(b.bytes(), 40);
        assert_eq!(b.release(), 40);
        metrics.outbound_released(40);
        assert_eq!((b.bytes(), metric(&metrics, QUEUED)), (0, 0.0));
        let kick = ServerConfig {
            slow_consumer: SlowConsumerPolicy::Disconnect,
            ..config
        };
        let mut b = Backlog::default();
        b.queued(90);
        assert_eq!(FanOut::new(&kick, 20).offer(0, &mut b), Offer::Kick);
    }

    #[test]
    fn drop_disconnects_a_consumer_refused_for_longer_than_the_grace() {
        let config = ServerConfig {
            outbound_queue: 1,
            slow_consumer_grace: Duration::from_millis(30),
            ..ServerConfig::default()
        };
        let mut b = Backlog::default();
        assert_eq!(FanOut::new(&config, 1).offer(0, &mut b), Offer::Queue);
        assert_eq!(FanOut::new(&config, 1).offer(1, &mut b), Offer::Drop);
        std::thread::sleep(Duration::from_millis(40));
        // Still stalled after the grace: kicked.
        assert_eq!(FanOut::new(&config, 1).offer(1, &mut b), Offer::Kick);
        // A consumer that reads starts its grace again.
        b.written(1);
        assert_eq!(FanOut::new(&config, 1).offer(1, &mut b), Offer::Drop);
        // A zero grace disconnects at the first refusal.
        let zero = ServerConfig {
            slow_consumer_grace: Duration::ZERO,
            ..config
        };
        assert_eq!(
            FanOut::new(&zero, 1).offer(1, &mut Backlog::default()),
            Offer::Kick
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Any text a peer sends gets an action, never a panic; a refusal's close code is a valid
        /// WebSocket close code (1002/1003/1007/1008/1009), and a joined room is never past the
        /// limit. The strategy mixes frames of the protocol's shape with arbitrary text.
        #[test]
        fn any_text_gets_an_action(
            text in proptest::prop_oneof![
                "\\PC{0,200}",
                "\\{\"t\":\"(join|leave|msg|panic|x)\",\"room\":\"[ -~]{0,70}\"(,\"body\":\"[ -~]{0,20}\")?\\}",
            ],
            joined in 0usize..3,
        ) {
            let mut rooms = JoinedRooms::new();
            for i in 0..joined {
                rooms.add(&format!("r{i}"));
            }
            match on_text(&text, &rooms, LIMITS) {
                Action::Refuse(r) if r.is_fatal() => {
                    proptest::prop_assert!([1002, 1003, 1007, 1008, 1009].contains(&r.close_code()));
                }
                Action::Join { new: true, .. } => proptest::prop_assert!(joined < LIMITS.max_rooms),
                _ => {}
            }
        }
    }
}
