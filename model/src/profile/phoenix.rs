//! The `phoenix` profile: Phoenix Channels over WebSocket with the v2 JSON serializer
//! (`/socket/websocket?vsn=2.0.0`).
//!
//! Every frame is a JSON array `[join_ref, ref, topic, event, payload]`. The client joins a
//! topic with `phx_join` and the server answers `phx_reply` with the same refs and
//! `{"status":"ok"|"error","response":…}`; pushes carry the join ref and a fresh ref;
//! broadcasts arrive as `[null, null, topic, event, payload]` (or with the join ref when the
//! channel pushes to one socket). The client must send a heartbeat,
//! `[null, ref, "phoenix", "heartbeat", {}]`, more often than the server's timeout (60 s by
//! default; phoenix.js sends one every 30 s); the server answers with a `phx_reply`.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::value::RawValue;

use super::options::Opts;
use super::{payload_object, FrameWriter, Incoming, PartsBuilder, PayloadRef, ProfileError, Step};

/// The join ref (and the join's ref) of the one channel each connection joins.
const JOIN_REF: &str = "1";

/// Phoenix options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phoenix {
    /// Topic of room `r3` is `{topic_prefix}r3`.
    pub topic_prefix: String,
    /// Event carrying a message, both ways.
    pub message_event: String,
    /// The `phx_join` payload, JSON text.
    pub join_payload: String,
    /// Heartbeat period.
    pub heartbeat: Duration,
}

impl Phoenix {
    pub(crate) fn from_opts(o: &mut Opts<'_>) -> Result<Phoenix, ProfileError> {
        let message_event = o
            .string("message_event")?
            .unwrap_or_else(|| "new_msg".into());
        if message_event.is_empty() || message_event.starts_with("phx_") {
            return Err(ProfileError::invalid(
                "message_event",
                format!(
                    "profile.message_event = {message_event:?}: must be a non-empty event name not starting with \"phx_\" (reserved), e.g. \"new_msg\""
                ),
            ));
        }
        let join_payload = o.string("join_payload")?.unwrap_or_else(|| "{}".into());
        if !matches!(
            serde_json::from_str::<serde_json::Value>(&join_payload),
            Ok(serde_json::Value::Object(_))
        ) {
            return Err(ProfileError::invalid(
                "join_payload",
                format!(
                    "profile.join_payload = {join_payload:?}: must be a JSON object, e.g. '{{\"token\":\"…\"}}'"
                ),
            ));
        }
        Ok(Phoenix {
            topic_prefix: o.string("topic_prefix")?.unwrap_or_else(|| "room:".into()),
            message_event,
            join_payload,
            heartbeat: o
                .duration("heartbeat_interval", Duration::from_millis(100))?
                .unwrap_or(Duration::from_secs(30)),
        })
    }

    fn topic(&self, room: &str) -> String {
        super::json_str(&format!("{}{room}", self.topic_prefix))
    }

    /// `["1","1","room:r3","phx_join",{}]`.
    pub fn join_frame(&self, room: &str) -> String {
        format!(
            "[\"{JOIN_REF}\",\"{JOIN_REF}\",{},\"phx_join\",{}]",
            self.topic(room),
            self.join_payload
        )
    }

    /// `["1","l","room:r3","phx_leave",{}]`.
    pub fn leave_frame(&self, room: &str) -> String {
        format!(
            "[\"{JOIN_REF}\",\"l\",{},\"phx_leave\",{{}}]",
            self.topic(room)
        )
    }

    /// `["1","m{seq}","room:r3","new_msg",{"room":…,"from":…,"seq":…,"ts":…,"body":…}]`.
    pub fn writer(&self, room: &str, from: &str, body: &str) -> FrameWriter {
        let mut b = PartsBuilder::default();
        b.lit("[\"")
            .lit(JOIN_REF)
            .lit("\",\"m")
            .seq()
            .lit("\",")
            .lit(&self.topic(room))
            .lit(",")
            .lit(&super::json_str(&self.message_event))
            .lit(",");
        payload_object(&mut b, room, from, body);
        b.lit("]");
        b.build()
    }

    /// Splits a v2 frame into its five parts.
    fn split(text: &str) -> Option<Frame<'_>> {
        let v: [&RawValue; 5] = serde_json::from_str(text).ok()?;
        let opt_str = |r: &RawValue| serde_json::from_str::<Option<Cow<'_, str>>>(r.get()).ok();
        // The join ref must be a string or null; the client never needs its value.
        opt_str(v[0])?;
        Some(Frame {
            reference: opt_str(v[1])?,
            topic: serde_json::from_str(v[2].get()).ok()?,
            event: serde_json::from_str(v[3].get()).ok()?,
            payload: v[4],
        })
    }

    /// While waiting for the join's `phx_reply`.
    pub(crate) fn join_step(&self, room: &str, text: &str) -> Step {
        let Some(f) = Phoenix::split(text) else {
            return Step::Bad;
        };
        let topic = format!("{}{room}", self.topic_prefix);
        if f.event != "phx_reply" || f.topic != topic || f.reference.as_deref() != Some(JOIN_REF) {
            return Step::Continue;
        }
        match reply_status(f.payload).as_deref() {
            Some("ok") => Step::Done,
            _ => Step::Fail("phx_join_error".into()),
        }
    }

    /// What an incoming frame is.
    pub fn decode<'a>(&self, text: &'a str) -> Incoming<'a> {
        let Some(f) = Phoenix::split(text) else {
            return Incoming::Bad;
        };
        match f.event.as_ref() {
            e if e == self.message_event => {
                match serde_json::from_str::<PayloadRef<'a>>(f.payload.get()) {
                    Ok(p) => {
                        let mut d = p.into_delivery();
                        if d.room.is_none() {
                            d.room = f
                                .topic
                                .strip_prefix(self.topic_prefix.as_str())
                                .and_then(super::room_index);
                        }
                        Incoming::Delivery(d)
                    }
                    Err(_) => Incoming::Bad,
                }
            }
            "phx_reply" => match reply_status(f.payload).as_deref() {
                Some("ok") => Incoming::Other,
                _ => Incoming::ServerError("phx_reply_error".into()),
            },
            "phx_error" => Incoming::ServerError("phx_error".into()),
            "phx_close" => Incoming::ServerError("phx_close".into()),
            _ => Incoming::Other,
        }
    }
}

struct Frame<'a> {
    reference: Option<Cow<'a, str>>,
    topic: Cow<'a, str>,
    event: Cow<'a, str>,
    payload: &'a RawValue,
}

fn reply_status(payload: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Reply {
        status: String,
    }
    serde_json::from_str::<Reply>(payload.get())
        .ok()
        .map(|r| r.status)
}

/// `[null,"h{n}","phoenix","heartbeat",{}]`.
pub fn heartbeat_frame(n: u64) -> String {
    format!("[null,\"h{n}\",\"phoenix\",\"heartbeat\",{{}}]")
}

#[cfg(test)]
mod tests {
    use super::super::{Delivery, Kind, Profile, ProtocolKind};
    use super::*;

    fn phx(options: &str) -> Profile {
        let table: toml::Table = options.parse().expect("toml");
        Profile::from_options(ProtocolKind::Phoenix, &table).expect("valid")
    }

    fn inner(p: &Profile) -> &Phoenix {
        match &p.kind {
            Kind::Phoenix(x) => x,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_follow_the_v2_serializer() {
        let p = phx("");
        assert_eq!(p.request("/").path, "/socket/websocket?vsn=2.0.0");
        assert_eq!(
            p.join_frame("r3").as_deref(),
            Some(r#"["1","1","room:r3","phx_join",{}]"#)
        );
        assert_eq!(
            p.leave_frame("r3").as_deref(),
            Some(r#"["1","l","room:r3","phx_leave",{}]"#)
        );
        assert_eq!(
            p.writer("r3", "a0.c1", "hi").render(7, 99),
            r#"["1","m7","room:r3","new_msg",{"room":"r3","from":"a0.c1","seq":7,"ts":99,"body":"hi"}]"#
        );
        assert_eq!(p.heartbeat_interval(), Some(Duration::from_secs(30)));
        assert_eq!(
            p.heartbeat_frame(4).as_deref(),
            Some(r#"[null,"h4","phoenix","heartbeat",{}]"#)
        );
    }

    #[test]
    fn decodes_broadcasts_and_replies() {
        let p = phx("topic_prefix = \"chat:\"\nmessage_event = \"shout\"\n");
        assert_eq!(
            p.decode(
                r#"[null,null,"chat:r5","shout",{"from":"a0.c2","seq":3,"ts":40,"body":"x"}]"#
            ),
            Incoming::Delivery(Delivery {
                from: "a0.c2".into(),
                seq: 3,
                ts: 40,
                room: Some(5)
            })
        );
        assert_eq!(
            p.decode(r#"[null,"h1","phoenix","phx_reply",{"status":"ok","response":{}}]"#),
            Incoming::Other
        );
        assert_eq!(
            p.decode(r#"["1","m3","chat:r5","phx_reply",{"status":"error","response":{}}]"#),
            Incoming::ServerError("phx_reply_error".into())
        );
        assert_eq!(
            p.decode(r#"["1","1","chat:r5","phx_error",{}]"#),
            Incoming::ServerError("phx_error".into())
        );
        assert_eq!(p.decode(r#"{"event":"x"}"#), Incoming::Bad);
        assert_eq!(
            p.decode(r#"[null,null,"chat:r5","shout",{"from":1}]"#),
            Incoming::Bad
        );
    }

    #[test]
    fn join_waits_for_its_own_reply() {
        let p = phx("");
        let x = inner(&p);
        assert_eq!(
            x.join_step(
                "r3",
                r#"["1","1","room:r3","phx_reply",{"status":"ok","response":{}}]"#
            ),
            Step::Done
        );
        assert_eq!(
            x.join_step("r3", r#"["1","1","room:r3","phx_reply",{"status":"error","response":{"reason":"unauthorized"}}]"#),
            Step::Fail("phx_join_error".into())
        );
        assert_eq!(
            x.join_step(
                "r3",
                r#"[null,"h1","phoenix","phx_reply",{"status":"ok","response":{}}]"#
            ),
            Step::Continue
        );
        assert_eq!(x.join_step("r3", "garbage"), Step::Bad);
    }

    #[test]
    fn bad_options() {
        for (text, key) in [
            ("message_event = \"phx_join\"", "message_event"),
            ("join_payload = \"[1]\"", "join_payload"),
            ("heartbeat_interval = \"1ms\"", "heartbeat_interval"),
            ("heartbeat_interval = \"soon\"", "heartbeat_interval"),
        ] {
            let table: toml::Table = text.parse().expect("toml");
            let e = Profile::from_options(ProtocolKind::Phoenix, &table).expect_err(text);
            assert_eq!(e.key(), key, "{text}");
        }
    }
}
