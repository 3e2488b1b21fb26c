//! The `socketio` profile: Socket.IO protocol v5 over Engine.IO protocol v4, WebSocket
//! transport only (no HTTP long-polling first).
//!
//! Engine.IO packets are one text frame each: a type digit and its data (`0` open, `1` close,
//! `2` ping, `3` pong, `4` message, `6` noop). In v4 the server pings and the client answers
//! `3`. A Socket.IO packet rides in an Engine.IO message: a type digit (`0` connect,
//! `1` disconnect, `2` event, `3` ack, `4` connect error), then `/namespace,` unless the
//! namespace is `/`, then an optional acknowledgement id, then JSON.
//!
//! The conversation: server `0{"sid":…,"pingInterval":…}`; client `40` (or `40/ns,`); server
//! `40{"sid":…}`; client joins with an acknowledged event `421["join","r3"]`, the server calls
//! the acknowledgement (`431[…]`); messages are events `42["message",{room,from,seq,ts,body}]`,
//! which the server broadcasts to the room's other members as the same event.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::options::Opts;
use super::{payload_object, FrameWriter, Incoming, PartsBuilder, PayloadRef, ProfileError, Step};

/// The acknowledgement id of the join event (one join per connection).
const JOIN_ACK_ID: &str = "1";

/// Socket.IO options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketIo {
    /// Namespace, `/` by default.
    pub namespace: String,
    /// Event that joins a room: `emit(join_event, room, ack)`.
    pub join_event: String,
    /// Event that leaves a room.
    pub leave_event: String,
    /// Event carrying a message, both ways.
    pub message_event: String,
    /// Whether the join is emitted with an acknowledgement and awaited.
    pub join_ack: bool,
}

impl SocketIo {
    pub(crate) fn from_opts(o: &mut Opts<'_>) -> Result<SocketIo, ProfileError> {
        let namespace = o.string("namespace")?.unwrap_or_else(|| "/".into());
        if !namespace.starts_with('/') || namespace.contains(',') {
            return Err(ProfileError::invalid(
                "namespace",
                format!(
                    "profile.namespace = {namespace:?}: a namespace starts with '/' and has no ',' (e.g. \"/chat\")"
                ),
            ));
        }
        let event = |o: &mut Opts<'_>, key: &'static str, default: &str| {
            let e = o.string(key)?.unwrap_or_else(|| default.into());
            if e.is_empty() {
                return Err(ProfileError::invalid(
                    key,
                    format!("profile.{key} = \"\": an event name cannot be empty"),
                ));
            }
            Ok(e)
        };
        Ok(SocketIo {
            join_event: event(o, "join_event", "join")?,
            leave_event: event(o, "leave_event", "leave")?,
            message_event: event(o, "message_event", "message")?,
            join_ack: o.boolean("join_ack")?.unwrap_or(true),
            namespace,
        })
    }

    /// `/ns,` or nothing for the main namespace.
    fn ns_prefix(&self) -> String {
        if self.namespace == "/" {
            String::new()
        } else {
            format!("{},", self.namespace)
        }
    }

    /// The namespace connect packet (`40`, `40/ns,`).
    pub fn connect_frame(&self) -> String {
        format!("40{}", self.ns_prefix())
    }

    fn event(&self, ack: Option<&str>, event: &str, arg: &str) -> String {
        format!(
            "42{}{}[{},{}]",
            self.ns_prefix(),
            ack.unwrap_or(""),
            super::json_str(event),
            arg
        )
    }

    /// `42["join","r3"]`, with the acknowledgement id when `join_ack`.
    pub fn join_frame(&self, room: &str) -> String {
        let ack = self.join_ack.then_some(JOIN_ACK_ID);
        self.event(ack, &self.join_event, &super::json_str(room))
    }

    /// `42["leave","r3"]`.
    pub fn leave_frame(&self, room: &str) -> String {
        self.event(None, &self.leave_event, &super::json_str(room))
    }

    /// `42["message",ARG]`: the message event with `arg` (JSON) as its payload.
    pub fn message_frame(&self, arg: &str) -> String {
        self.event(None, &self.message_event, arg)
    }

    /// `42["message",{"room":…,"from":…,"seq":…,"ts":…,"body":…}]`.
    pub fn writer(&self, room: &str, from: &str, body: &str) -> FrameWriter {
        let mut b = PartsBuilder::default();
        b.lit("42")
            .lit(&self.ns_prefix())
            .lit("[")
            .lit(&super::json_str(&self.message_event))
            .lit(",");
        payload_object(&mut b, room, from, body);
        b.lit("]");
        b.build()
    }

    /// Splits a Socket.IO packet (the Engine.IO message's data) into type, namespace, ack id
    /// and JSON data.
    fn split<'a>(&self, packet: &'a str) -> Option<(u8, &'a str, &'a str, &'a str)> {
        let ty = *packet.as_bytes().first()?;
        let mut rest = &packet[1..];
        let mut ns = "/";
        if rest.starts_with('/') {
            let comma = rest.find(',')?;
            ns = &rest[..comma];
            rest = &rest[comma + 1..];
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (ack, data) = rest.split_at(digits);
        Some((ty, ns, ack, data))
    }

    /// While waiting for the namespace connect acknowledgement.
    pub fn connect_step(&self, text: &str) -> Step {
        if let Some(r) = ping(text) {
            return Step::Reply(r.into_owned());
        }
        let Some(packet) = text.strip_prefix('4') else {
            return Step::Continue;
        };
        match self.split(packet) {
            Some((b'0', ns, _, _)) if ns == self.namespace => Step::Done,
            Some((b'4', ns, _, _)) if ns == self.namespace => {
                Step::Fail("socketio_connect_error".into())
            }
            Some(_) => Step::Continue,
            None => Step::Bad,
        }
    }

    /// While waiting for the join acknowledgement.
    pub(crate) fn join_step(&self, text: &str) -> Step {
        if let Some(r) = ping(text) {
            return Step::Reply(r.into_owned());
        }
        let Some(packet) = text.strip_prefix('4') else {
            return Step::Continue;
        };
        match self.split(packet) {
            Some((b'3', ns, JOIN_ACK_ID, _)) if ns == self.namespace => Step::Done,
            Some((b'1', ns, _, _)) if ns == self.namespace => {
                Step::Fail("socketio_disconnect".into())
            }
            Some(_) => Step::Continue,
            None => Step::Bad,
        }
    }

    /// What an incoming frame is.
    pub fn decode<'a>(&self, text: &'a str) -> Incoming<'a> {
        if let Some(r) = ping(text) {
            return Incoming::Reply(r);
        }
        match text.as_bytes().first() {
            Some(b'4') => {}
            Some(b'0' | b'3' | b'6') => return Incoming::Other,
            Some(b'1') => return Incoming::ServerError("engineio_close".into()),
            _ => return Incoming::Bad,
        }
        let Some((ty, ns, _ack, data)) = self.split(&text[1..]) else {
            return Incoming::Bad;
        };
        if ns != self.namespace {
            return Incoming::Other;
        }
        match ty {
            b'2' => {}
            b'1' => return Incoming::ServerError("socketio_disconnect".into()),
            b'4' => return Incoming::ServerError("socketio_connect_error".into()),
            b'0' | b'3' => return Incoming::Other,
            _ => return Incoming::Bad,
        }
        let Ok(args) = serde_json::from_str::<Vec<&RawValue>>(data) else {
            return Incoming::Bad;
        };
        let Some(name) = args
            .first()
            .and_then(|r| serde_json::from_str::<Cow<'_, str>>(r.get()).ok())
        else {
            return Incoming::Bad;
        };
        if name != self.message_event {
            return Incoming::Other;
        }
        match args
            .get(1)
            .and_then(|p| serde_json::from_str::<PayloadRef<'a>>(p.get()).ok())
        {
            Some(p) => Incoming::Delivery(p.into_delivery()),
            None => Incoming::Bad,
        }
    }
}

/// An Engine.IO ping (`2`, `2probe`) and its pong.
fn ping(text: &str) -> Option<Cow<'static, str>> {
    let data = text.strip_prefix('2')?;
    Some(if data.is_empty() {
        Cow::Borrowed("3")
    } else {
        Cow::Owned(format!("3{data}"))
    })
}

/// While waiting for the Engine.IO open packet.
pub fn open_step(text: &str) -> Step {
    match text.strip_prefix('0') {
        Some(data) => match serde_json::from_str::<serde_json::Value>(data) {
            Ok(v) if v.get("sid").is_some() => Step::Done,
            _ => Step::Fail("engineio_bad_open".into()),
        },
        None => Step::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Delivery, Profile, ProtocolKind};
    use super::*;

    fn sio(options: &str) -> SocketIo {
        let table: toml::Table = options.parse().expect("toml");
        match Profile::from_options(ProtocolKind::Socketio, &table)
            .expect("valid")
            .kind
        {
            super::super::Kind::SocketIo(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_follow_the_v5_encoding() {
        let s = sio("");
        assert_eq!(s.connect_frame(), "40");
        assert_eq!(s.join_frame("r3"), r#"421["join","r3"]"#);
        assert_eq!(s.leave_frame("r3"), r#"42["leave","r3"]"#);
        assert_eq!(
            s.writer("r3", "a0.c1", "hi").render(7, 99),
            r#"42["message",{"room":"r3","from":"a0.c1","seq":7,"ts":99,"body":"hi"}]"#
        );
        let s = sio("namespace = \"/chat\"\nmessage_event = \"say\"\njoin_ack = false\n");
        assert_eq!(s.connect_frame(), "40/chat,");
        assert_eq!(s.join_frame("r0"), r#"42/chat,["join","r0"]"#);
        assert!(s
            .writer("r0", "a0.c1", "")
            .render(1, 2)
            .starts_with(r#"42/chat,["say",{"#));
    }

    #[test]
    fn decodes_broadcasts_pings_and_errors() {
        let s = sio("");
        assert_eq!(
            s.decode(r#"42["message",{"room":"r3","from":"a0.c1","seq":7,"ts":99,"body":"hi"}]"#),
            Incoming::Delivery(Delivery {
                from: "a0.c1".into(),
                seq: 7,
                ts: 99,
                room: Some(3)
            })
        );
        assert_eq!(s.decode("2"), Incoming::Reply("3".into()));
        assert_eq!(s.decode("2probe"), Incoming::Reply("3probe".into()));
        assert_eq!(s.decode(r#"42["other",1]"#), Incoming::Other);
        assert_eq!(s.decode(r#"431["ok"]"#), Incoming::Other);
        assert_eq!(
            s.decode("41"),
            Incoming::ServerError("socketio_disconnect".into())
        );
        assert_eq!(s.decode(r#"42["message",{"from":"a0.c1"}]"#), Incoming::Bad);
        assert_eq!(s.decode("hello"), Incoming::Bad);
        // Another namespace's traffic is not ours.
        assert_eq!(s.decode(r#"42/admin,["message",{}]"#), Incoming::Other);
    }

    #[test]
    fn handshake_steps() {
        let s = sio("");
        assert_eq!(
            open_step(
                r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
            ),
            Step::Done
        );
        assert_eq!(open_step("0{}"), Step::Fail("engineio_bad_open".into()));
        assert_eq!(s.connect_step(r#"40{"sid":"xyz"}"#), Step::Done);
        assert_eq!(s.connect_step("2"), Step::Reply("3".into()));
        assert_eq!(
            s.connect_step(r#"44{"message":"Not authorized"}"#),
            Step::Fail("socketio_connect_error".into())
        );
        assert_eq!(s.join_step(r#"431["ok"]"#), Step::Done);
        assert_eq!(s.join_step(r#"432["ok"]"#), Step::Continue);
        let ns = sio("namespace = \"/chat\"");
        assert_eq!(ns.connect_step(r#"40{"sid":"xyz"}"#), Step::Continue);
        assert_eq!(ns.connect_step(r#"40/chat,{"sid":"xyz"}"#), Step::Done);
        assert_eq!(ns.join_step(r#"43/chat,1["ok"]"#), Step::Done);
    }

    #[test]
    fn bad_options() {
        let table: toml::Table = "namespace = \"chat\"".parse().expect("toml");
        let e = Profile::from_options(ProtocolKind::Socketio, &table).expect_err("bad ns");
        assert_eq!(e.key(), "namespace");
        let table: toml::Table = "message_event = \"\"".parse().expect("toml");
        let e = Profile::from_options(ProtocolKind::Socketio, &table).expect_err("empty");
        assert_eq!(e.key(), "message_event");
    }
}
