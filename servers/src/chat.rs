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
//! A fan-out asks [`FanOut::offer`] about every recipient: the slow-consumer rule (queue bound
//! and policy) and the delivery counters are here, so the architectures only push, drop or
//! kick as told. Nothing in this module allocates on the `msg` path: the action borrows the
//! room name from the received text, and the frame itself is shared by the caller.

use std::borrow::Cow;

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

/// One fan-out's slow-consumer rule and its counters; [`FanOut::finish`] records them.
#[derive(Debug)]
pub struct FanOut {
    policy: SlowConsumerPolicy,
    cap: usize,
    inject_work: u32,
    delivered: u64,
    dropped: u64,
}

impl FanOut {
    /// A fan-out under `config`'s queue bound (`outbound_queue`) and policy.
    pub fn new(config: &ServerConfig) -> FanOut {
        FanOut {
            policy: config.slow_consumer,
            cap: config.outbound_queue,
            inject_work: config.inject_work,
            delivered: 0,
            dropped: 0,
        }
    }

    /// A recipient has `queued` frames waiting: what to do with the frame for it.
    #[inline]
    pub fn offer(&mut self, queued: usize) -> Offer {
        if queued < self.cap {
            self.delivered += 1;
            return Offer::Queue;
        }
        match self.policy {
            SlowConsumerPolicy::Drop => {
                self.dropped += 1;
                Offer::Drop
            }
            SlowConsumerPolicy::Disconnect => Offer::Kick,
        }
    }

    /// Frames queued so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Counts the deliveries and drops in `metrics` and runs the injected per-delivery work
    /// ([`crate::work::inject`]).
    pub fn finish(self, metrics: &Metrics) {
        metrics.deliveries(self.delivered);
        crate::work::inject(self.inject_work, self.delivered);
        if self.dropped > 0 {
            metrics.dropped_queue_full(self.dropped);
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

    #[test]
    fn fan_out_applies_the_queue_bound_and_the_policy() {
        let config = ServerConfig {
            outbound_queue: 2,
            ..ServerConfig::default()
        };
        let metrics = Metrics::new("test");
        let mut f = FanOut::new(&config);
        assert_eq!(f.offer(0), Offer::Queue);
        assert_eq!(f.offer(1), Offer::Queue);
        assert_eq!(f.offer(2), Offer::Drop);
        assert_eq!(f.offer(9), Offer::Drop);
        assert_eq!(f.delivered(), 2);
        f.finish(&metrics);
        let text = metrics.render();
        assert_eq!(
            crate::metrics::sample_value(&text, "chatbench_deliveries_total"),
            Some(2.0)
        );
        assert_eq!(
            crate::metrics::sample_value(&text, "chatbench_drops_total{reason=\"queue_full\"}"),
            Some(2.0)
        );
        let kick = ServerConfig {
            slow_consumer: SlowConsumerPolicy::Disconnect,
            ..config
        };
        let mut f = FanOut::new(&kick);
        assert_eq!(f.offer(1), Offer::Queue);
        assert_eq!(f.offer(2), Offer::Kick);
        assert_eq!(f.delivered(), 1);
    }
}
