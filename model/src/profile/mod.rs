//! Protocol profiles: the seam between the engine's scenario logic (connect, join a room, send
//! on a schedule, receive, measure) and the wire protocol a target speaks.
//!
//! A [`Profile`] says how to open a session (request path, subprotocol, headers, and any
//! handshake after the WebSocket opens), how to join a room, how to frame an outgoing message
//! carrying the sender id (`from`), sequence number and intended send time, how to recognise and
//! decode a delivery, and how to keep the session alive. The scenario picks one with
//! `protocol = "…"` and its options in a `[profile]` table (see `docs/profiles.md`).
//!
//! One [`Profile`] is built per run (it lives in the scenario, shared by every connection); a
//! connection holds no profile state of its own beyond what the engine already keeps, so the
//! idle-connection memory does not depend on the profile. Profiles are an enum, not trait
//! objects: the default `chatbench` profile costs no allocation or indirection.
//!
//! Nothing here does I/O: the session set-up over a live WebSocket (`open_session`, `join`,
//! driven by [`Step`]s from here) is the load generator's (`chatbench_loadgen::session`).

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use chatbench_protocol::{encode_join, encode_leave, parse_server, MsgWriter, ServerFrame};

mod options;
pub mod phoenix;
pub mod socketio;
pub mod template;

use options::Opts;

/// The fault-injection frame of chatbench protocol v1 (`docs/protocol.md`).
const POISON: &str = r#"{"t":"panic"}"#;
pub use options::ProfileError;

/// The protocol names a scenario's `protocol` field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolKind {
    /// chatbench wire protocol v1 (`docs/protocol.md`).
    #[default]
    Chatbench,
    /// Any WebSocket echo server: latency is the round trip, no rooms.
    Echo,
    /// User JSON templates and JSON pointers.
    Template,
    /// Engine.IO v4 / Socket.IO v5 over WebSocket.
    Socketio,
    /// Phoenix Channels, v2 JSON serializer.
    Phoenix,
}

impl ProtocolKind {
    /// Every protocol, in documentation order (`docs/profiles.md` has one example of each, in
    /// this order, and `scenarios/profiles/` one scenario of each).
    pub const ALL: [ProtocolKind; 5] = [
        ProtocolKind::Chatbench,
        ProtocolKind::Echo,
        ProtocolKind::Template,
        ProtocolKind::Socketio,
        ProtocolKind::Phoenix,
    ];

    /// The name as written in a scenario.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolKind::Chatbench => "chatbench",
            ProtocolKind::Echo => "echo",
            ProtocolKind::Template => "template",
            ProtocolKind::Socketio => "socketio",
            ProtocolKind::Phoenix => "phoenix",
        }
    }
}

/// Options every profile accepts in `[profile]`: how the WebSocket session is requested.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Common {
    /// Request path (and query) that replaces the target URL's path, e.g. `/socket.io/`.
    pub path: Option<String>,
    /// `Sec-WebSocket-Protocol` to request; the server must accept it.
    pub subprotocol: Option<String>,
    /// Extra request headers, e.g. `Authorization`.
    pub headers: Vec<(String, String)>,
}

/// A protocol profile with its options, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profile {
    /// Session request options.
    pub common: Common,
    /// The protocol and its own options.
    pub kind: Kind,
}

/// The protocol-specific part of a [`Profile`].
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Kind {
    /// chatbench wire protocol v1.
    #[default]
    Chatbench,
    /// A WebSocket echo server; messages are chatbench `msg` frames, echoed back to the sender.
    Echo,
    /// User-defined JSON templates.
    Template(Box<template::Template>),
    /// Socket.IO v5 over Engine.IO v4.
    SocketIo(socketio::SocketIo),
    /// Phoenix Channels v2 JSON.
    Phoenix(phoenix::Phoenix),
}

/// How a message fans out, which sets the expected delivery count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// To every other member of the room: expected = sent × (readers − 1).
    Room,
    /// Back to the sender only: expected = sent.
    Echo,
}

/// The session request a profile asks for: what the HTTP upgrade request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    /// Request path and query.
    pub path: String,
    /// `Sec-WebSocket-Protocol`, if any.
    pub subprotocol: Option<String>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

/// A decoded delivery: a message some sender sent, as a receiver reads it.
#[derive(Debug, PartialEq)]
pub struct Delivery<'a> {
    /// The sender's id (`a{agent}.c{index}`).
    pub from: Cow<'a, str>,
    /// The sender's sequence number.
    pub seq: u64,
    /// The intended send time, µs since the sending agent's epoch.
    pub ts: u64,
    /// The room index, when the frame names the room.
    pub room: Option<u32>,
}

/// What one incoming text frame is, to the engine.
#[derive(Debug, PartialEq)]
pub enum Incoming<'a> {
    /// A message delivery.
    Delivery(Delivery<'a>),
    /// A keep-alive or control frame that must be answered with this text (e.g. Engine.IO pong).
    Reply(Cow<'static, str>),
    /// The server reported an error; counted under this label.
    ServerError(Cow<'a, str>),
    /// A control frame that needs nothing (join acknowledgements, heartbeat replies).
    Other,
    /// Not a frame of this protocol.
    Bad,
}

/// Encodes one sender's messages: everything but `seq` and `ts` is rendered once.
#[derive(Debug, Clone)]
pub enum FrameWriter {
    /// The chatbench `msg` encoder.
    Chatbench(MsgWriter),
    /// Literal text with `seq` and `ts` slots.
    Parts(Vec<Part>),
}

/// A piece of a [`FrameWriter::Parts`] frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text written as is.
    Lit(String),
    /// The sequence number, in decimal.
    Seq,
    /// The intended send time, in decimal µs.
    Ts,
}

impl FrameWriter {
    /// Appends one frame to `out`.
    pub fn write(&self, out: &mut String, seq: u64, ts: u64) {
        use std::fmt::Write;
        match self {
            FrameWriter::Chatbench(w) => w.write(out, seq, ts),
            FrameWriter::Parts(parts) => {
                for p in parts {
                    match p {
                        Part::Lit(s) => out.push_str(s),
                        Part::Seq => {
                            let _ = write!(out, "{seq}");
                        }
                        Part::Ts => {
                            let _ = write!(out, "{ts}");
                        }
                    }
                }
            }
        }
    }

    /// One frame as a new string.
    pub fn render(&self, seq: u64, ts: u64) -> String {
        let mut s = String::new();
        self.write(&mut s, seq, ts);
        s
    }
}

/// Builds [`Part`]s, merging adjacent literal text.
#[derive(Debug, Default)]
pub(crate) struct PartsBuilder(Vec<Part>);

impl PartsBuilder {
    pub(crate) fn lit(&mut self, s: &str) -> &mut Self {
        if let Some(Part::Lit(last)) = self.0.last_mut() {
            last.push_str(s);
        } else {
            self.0.push(Part::Lit(s.to_owned()));
        }
        self
    }
    pub(crate) fn seq(&mut self) -> &mut Self {
        self.0.push(Part::Seq);
        self
    }
    pub(crate) fn ts(&mut self) -> &mut Self {
        self.0.push(Part::Ts);
        self
    }
    pub(crate) fn build(self) -> FrameWriter {
        FrameWriter::Parts(self.0)
    }
}

/// `s` as a JSON string literal, quotes included.
pub(crate) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The message object the `socketio` and `phoenix` profiles send and read back:
/// `{"room":R,"from":F,"seq":S,"ts":T,"body":B}`.
pub(crate) fn payload_object(b: &mut PartsBuilder, room: &str, from: &str, body: &str) {
    b.lit("{\"room\":")
        .lit(&json_str(room))
        .lit(",\"from\":")
        .lit(&json_str(from))
        .lit(",\"seq\":")
        .seq()
        .lit(",\"ts\":")
        .ts()
        .lit(",\"body\":")
        .lit(&json_str(body))
        .lit("}");
}

/// The fields of a payload object a delivery needs, borrowed where possible.
#[derive(Debug, Deserialize)]
pub(crate) struct PayloadRef<'a> {
    #[serde(borrow)]
    pub(crate) from: Cow<'a, str>,
    pub(crate) seq: u64,
    pub(crate) ts: u64,
    #[serde(borrow, default)]
    pub(crate) room: Option<Cow<'a, str>>,
}

impl<'a> PayloadRef<'a> {
    pub(crate) fn into_delivery(self) -> Delivery<'a> {
        Delivery {
            from: self.from,
            seq: self.seq,
            ts: self.ts,
            room: self.room.as_deref().and_then(room_index),
        }
    }
}

/// The room index in a room name or topic that ends in `r{index}` (`r17`, `room:r17`).
pub fn room_index(name: &str) -> Option<u32> {
    // The trailing run of digits, right after the last `r`. Plain loops: every delivery the
    // generator judges reads its room here, and the gate counts the debug build.
    let b = name.as_bytes();
    let mut start = b.len();
    while start > 0 && b[start - 1].is_ascii_digit() {
        start -= 1;
    }
    if start == b.len() || start == 0 || b[start - 1] != b'r' {
        return None;
    }
    let mut v: u32 = 0;
    let mut i = start;
    while i < b.len() {
        v = v.checked_mul(10)?.checked_add(u32::from(b[i] - b'0'))?;
        i += 1;
    }
    Some(v)
}

impl Profile {
    /// Builds the profile `kind` from its `[profile]` options.
    pub fn from_options(kind: ProtocolKind, table: &toml::Table) -> Result<Profile, ProfileError> {
        let mut o = Opts::new(table);
        let common = Common {
            path: o.string("path")?,
            subprotocol: o.string("subprotocol")?,
            headers: o.headers("headers")?,
        };
        if let Some(p) = &common.path {
            if !p.starts_with('/') {
                return Err(ProfileError::invalid(
                    "path",
                    format!("profile.path = {p:?}: must start with '/', e.g. path = \"/ws\""),
                ));
            }
        }
        let kind = match kind {
            ProtocolKind::Chatbench => Kind::Chatbench,
            ProtocolKind::Echo => Kind::Echo,
            ProtocolKind::Template => {
                Kind::Template(Box::new(template::Template::from_opts(&mut o)?))
            }
            ProtocolKind::Socketio => Kind::SocketIo(socketio::SocketIo::from_opts(&mut o)?),
            ProtocolKind::Phoenix => Kind::Phoenix(phoenix::Phoenix::from_opts(&mut o)?),
        };
        o.finish(kind_name(&kind))?;
        Ok(Profile { common, kind })
    }

    /// The protocol's name.
    pub fn name(&self) -> &'static str {
        kind_name(&self.kind)
    }

    /// How messages fan out.
    pub fn fanout(&self) -> Fanout {
        match self.kind {
            Kind::Echo => Fanout::Echo,
            _ => Fanout::Room,
        }
    }

    /// The upgrade request for a target whose URL path is `url_path`: `[profile] path` wins,
    /// then the URL's path, then the protocol's conventional path (`/socket.io/`,
    /// `/socket/websocket`) when the URL has none; Socket.IO and Phoenix add their query.
    pub fn request(&self, url_path: &str) -> SessionRequest {
        let default_path = match &self.kind {
            Kind::SocketIo(_) => Some("/socket.io/"),
            Kind::Phoenix(_) => Some("/socket/websocket"),
            _ => None,
        };
        let mut path = match (&self.common.path, default_path) {
            (Some(p), _) => p.clone(),
            (None, Some(d)) if url_path == "/" => d.to_owned(),
            (None, _) => url_path.to_owned(),
        };
        let query = match &self.kind {
            Kind::SocketIo(_) if !path.contains("EIO=") => Some("EIO=4&transport=websocket"),
            Kind::Phoenix(_) if !path.contains("vsn=") => Some("vsn=2.0.0"),
            _ => None,
        };
        if let Some(q) = query {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(q);
        }
        SessionRequest {
            path,
            subprotocol: self.common.subprotocol.clone(),
            headers: self.common.headers.clone(),
        }
    }

    /// The encoder of one sender's messages to `room`, from `from`, with body `body`.
    pub fn writer(&self, room: &str, from: &str, body: &str) -> FrameWriter {
        match &self.kind {
            Kind::Chatbench | Kind::Echo => {
                FrameWriter::Chatbench(MsgWriter::new(room, from, body))
            }
            Kind::Template(t) => t.writer(room, from, body),
            Kind::SocketIo(s) => s.writer(room, from, body),
            Kind::Phoenix(p) => p.writer(room, from, body),
        }
    }

    /// The frame that joins `room`, if the protocol joins rooms.
    pub fn join_frame(&self, room: &str) -> Option<String> {
        match &self.kind {
            Kind::Chatbench => Some(encode_join(room)),
            Kind::Echo => None,
            Kind::Template(t) => t.join_frame(room),
            Kind::SocketIo(s) => Some(s.join_frame(room)),
            Kind::Phoenix(p) => Some(p.join_frame(room)),
        }
    }

    /// The frame that leaves `room`, if the protocol has one.
    pub fn leave_frame(&self, room: &str) -> Option<String> {
        match &self.kind {
            Kind::Chatbench => Some(encode_leave(room)),
            Kind::Echo => None,
            Kind::Template(t) => t.leave_frame(room),
            Kind::SocketIo(s) => Some(s.leave_frame(room)),
            Kind::Phoenix(p) => Some(p.leave_frame(room)),
        }
    }

    /// The fault-injection frame (`poison_after`), if the protocol has one: chatbench's
    /// `{"t":"panic"}`, or for Socket.IO that object as the payload of the message event
    /// (`42["message",{"t":"panic"}]`, what the Node.js peers throw on with `--fault-injection`).
    pub fn poison_frame(&self) -> Option<String> {
        match &self.kind {
            Kind::Chatbench => Some(POISON.to_owned()),
            Kind::SocketIo(s) => Some(s.message_frame(POISON)),
            Kind::Echo | Kind::Template(_) | Kind::Phoenix(_) => None,
        }
    }

    /// How often the client must send a heartbeat, if the protocol needs one.
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Phoenix(p) => Some(p.heartbeat),
            _ => None,
        }
    }

    /// The `n`th heartbeat frame.
    pub fn heartbeat_frame(&self, n: u64) -> Option<String> {
        match &self.kind {
            Kind::Phoenix(_) => Some(phoenix::heartbeat_frame(n)),
            _ => None,
        }
    }

    /// What an incoming text frame is.
    pub fn decode<'a>(&self, text: &'a str) -> Incoming<'a> {
        match &self.kind {
            Kind::Chatbench | Kind::Echo => decode_chatbench(text),
            Kind::Template(t) => t.decode(text),
            Kind::SocketIo(s) => s.decode(text),
            Kind::Phoenix(p) => p.decode(text),
        }
    }

    /// While opening or joining: is `text` the acknowledgement of the join of `room`?
    pub fn join_step(&self, room: &str, text: &str) -> Step {
        match &self.kind {
            Kind::Chatbench | Kind::Echo => match parse_server(text) {
                Ok(ServerFrame::Joined { room: r }) if r == room => Step::Done,
                Ok(ServerFrame::Error { code, .. }) => Step::Fail(format!("join_error_{code}")),
                Ok(_) => Step::Continue,
                Err(_) => Step::Bad,
            },
            Kind::Template(t) => t.join_step(text),
            Kind::SocketIo(s) => s.join_step(text),
            Kind::Phoenix(p) => p.join_step(room, text),
        }
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Chatbench => "chatbench",
        Kind::Echo => "echo",
        Kind::Template(_) => "template",
        Kind::SocketIo(_) => "socketio",
        Kind::Phoenix(_) => "phoenix",
    }
}

fn decode_chatbench(text: &str) -> Incoming<'_> {
    match parse_server(text) {
        Ok(ServerFrame::Msg(m)) => {
            let room = room_index(&m.room);
            Incoming::Delivery(Delivery {
                from: m.from,
                seq: m.seq,
                ts: m.ts,
                room,
            })
        }
        Ok(ServerFrame::Error { code, .. }) => Incoming::ServerError(code),
        Ok(ServerFrame::Joined { .. }) => Incoming::Other,
        Err(_) => Incoming::Bad,
    }
}

/// One step of a set-up conversation: what a frame read while waiting means.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The awaited frame: set-up is done.
    Done,
    /// Not it; keep waiting.
    Continue,
    /// Answer with this and keep waiting (keep-alives during set-up).
    Reply(String),
    /// Not a frame of this protocol (counted), keep waiting.
    Bad,
    /// The server refused; the label is counted as the connect error.
    Fail(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(kind: ProtocolKind, options: &str) -> Result<Profile, ProfileError> {
        let table: toml::Table = options.parse().expect("toml");
        Profile::from_options(kind, &table)
    }

    #[test]
    fn all_lists_every_protocol_once_in_order() {
        // A new variant does not compile here until it has its place in `ALL`.
        fn place(k: ProtocolKind) -> usize {
            match k {
                ProtocolKind::Chatbench => 0,
                ProtocolKind::Echo => 1,
                ProtocolKind::Template => 2,
                ProtocolKind::Socketio => 3,
                ProtocolKind::Phoenix => 4,
            }
        }
        for (i, k) in ProtocolKind::ALL.into_iter().enumerate() {
            assert_eq!(place(k), i, "{k:?}");
            let named: ProtocolKind =
                serde_json::from_str(&format!("\"{}\"", k.as_str())).expect("its own name");
            assert_eq!(named, k);
        }
    }

    #[test]
    fn chatbench_frames_round_trip() {
        let p = Profile::default();
        assert_eq!(p.name(), "chatbench");
        assert_eq!(p.fanout(), Fanout::Room);
        let frame = p.writer("r3", "a0.c7", "xy").render(5, 1234);
        assert_eq!(
            frame,
            r#"{"t":"msg","room":"r3","from":"a0.c7","seq":5,"ts":1234,"body":"xy"}"#
        );
        assert_eq!(
            p.decode(&frame),
            Incoming::Delivery(Delivery {
                from: "a0.c7".into(),
                seq: 5,
                ts: 1234,
                room: Some(3)
            })
        );
        assert_eq!(
            p.join_frame("r3").as_deref(),
            Some(r#"{"t":"join","room":"r3"}"#)
        );
        assert_eq!(p.decode(r#"{"t":"joined","room":"r3"}"#), Incoming::Other);
        assert_eq!(
            p.decode(r#"{"t":"error","code":"bad_frame","reason":"x"}"#),
            Incoming::ServerError("bad_frame".into())
        );
        assert_eq!(p.decode("nope"), Incoming::Bad);
        assert_eq!(
            p.join_step("r3", r#"{"t":"joined","room":"r3"}"#),
            Step::Done
        );
        assert_eq!(
            p.join_step("r3", r#"{"t":"joined","room":"r4"}"#),
            Step::Continue
        );
        assert_eq!(p.heartbeat_interval(), None);
        assert_eq!(p.request("/ws").path, "/ws");
    }

    #[test]
    fn echo_sends_chatbench_frames_and_joins_nothing() {
        let p = profile(ProtocolKind::Echo, "").expect("echo");
        assert_eq!(p.fanout(), Fanout::Echo);
        assert_eq!(p.join_frame("r0"), None);
        let frame = p.writer("r0", "a0.c1", "").render(1, 2);
        assert!(matches!(p.decode(&frame), Incoming::Delivery(d) if d.seq == 1 && d.ts == 2));
    }

    #[test]
    fn common_options_shape_the_request() {
        let p = profile(
            ProtocolKind::Chatbench,
            "path = \"/chat\"\nsubprotocol = \"chat.v1\"\n[headers]\nAuthorization = \"Bearer x\"\n",
        )
        .expect("valid");
        let r = p.request("/ws");
        assert_eq!(r.path, "/chat");
        assert_eq!(r.subprotocol.as_deref(), Some("chat.v1"));
        assert_eq!(
            r.headers,
            vec![("Authorization".to_string(), "Bearer x".to_string())]
        );
        let e = profile(ProtocolKind::Chatbench, "path = \"chat\"").expect_err("no slash");
        assert_eq!(e.key(), "path");
        let e = profile(ProtocolKind::Chatbench, "subprotocl = \"x\"").expect_err("typo");
        assert!(
            e.to_string().contains("did you mean \"subprotocol\""),
            "{e}"
        );
        let e = profile(ProtocolKind::Chatbench, "[headers]\nX = 1\n").expect_err("type");
        assert!(e.to_string().contains("headers.X"), "{e}");
    }

    #[test]
    fn room_index_reads_trailing_room_names() {
        assert_eq!(room_index("r17"), Some(17));
        assert_eq!(room_index("room:r3"), Some(3));
        assert_eq!(room_index("room:"), None);
        assert_eq!(room_index("r1x"), None);
        // Exactly what "the digits after the last `r`, parsed as a u32" gives.
        let reference = |name: &str| -> Option<u32> {
            let at = name.rfind('r')?;
            let digits = &name[at + 1..];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        };
        for name in [
            "",
            "r",
            "7",
            "17",
            "r0",
            "r007",
            "rr5",
            "r5r",
            "r1r2",
            "x12",
            "room:r3",
            "r12x3",
            "ér9",
            "r4294967295",
            "r4294967296",
            "r99999999999",
            "r+5",
            "r-5",
            "r 5",
            "R5",
        ] {
            assert_eq!(room_index(name), reference(name), "{name:?}");
        }
    }
}
