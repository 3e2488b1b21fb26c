//! The `template` profile: for home-grown JSON chat servers. The user writes the join, leave and
//! message frames as JSON templates with placeholders (`{room}`, `{from}`, `{seq}`, `{ts}`,
//! `{body}`) and says with JSON pointers (RFC 6901) where those fields are in what the server
//! sends back.
//!
//! Placeholders inside JSON strings are replaced by the JSON-escaped text (so `"{body}"` stays a
//! valid string); `{seq}` and `{ts}` are decimal numbers, written bare (`{seq}`) or quoted
//! (`"{seq}"`, then read back from a numeric string). Every template must be valid JSON once
//! filled in; this is checked when the scenario is read.

use serde_json::Value;

use super::options::Opts;
use super::{Delivery, FrameWriter, Incoming, PartsBuilder, ProfileError, Step};

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Room,
    From,
    Body,
    Seq,
    Ts,
}

const PLACEHOLDERS: [(&str, Piece); 5] = [
    ("{room}", Piece::Room),
    ("{from}", Piece::From),
    ("{body}", Piece::Body),
    ("{seq}", Piece::Seq),
    ("{ts}", Piece::Ts),
];

fn compile(text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    'scan: while let Some(c) = rest.chars().next() {
        if c == '{' {
            for (name, piece) in &PLACEHOLDERS {
                if rest.starts_with(name) {
                    if !lit.is_empty() {
                        out.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    out.push(piece.clone());
                    rest = &rest[name.len()..];
                    continue 'scan;
                }
            }
        }
        lit.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    out
}

/// `s` JSON-escaped, without the quotes.
fn escaped(s: &str) -> String {
    let q = super::json_str(s);
    q[1..q.len() - 1].to_owned()
}

fn fill(pieces: &[Piece], room: &str, from: &str, body: &str) -> FrameWriter {
    let mut b = PartsBuilder::default();
    for p in pieces {
        match p {
            Piece::Lit(s) => b.lit(s),
            Piece::Room => b.lit(&escaped(room)),
            Piece::From => b.lit(&escaped(from)),
            Piece::Body => b.lit(&escaped(body)),
            Piece::Seq => b.seq(),
            Piece::Ts => b.ts(),
        };
    }
    b.build()
}

/// Template options, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    join: Option<Vec<Piece>>,
    leave: Option<Vec<Piece>>,
    message: Vec<Piece>,
    joined: Option<(String, Value)>,
    from: String,
    seq: String,
    ts: String,
    room: Option<String>,
}

impl Template {
    pub(crate) fn from_opts(o: &mut Opts<'_>) -> Result<Template, ProfileError> {
        let template = |o: &mut Opts<'_>, key: &'static str, needs: &[&str]| {
            let Some(text) = o.string(key)? else {
                return Ok(None);
            };
            for n in needs {
                if !text.contains(n) {
                    return Err(ProfileError::invalid(
                        key,
                        format!("profile.{key} = {text:?}: the template needs the placeholder {n}"),
                    ));
                }
            }
            let pieces = compile(&text);
            let sample = fill(&pieces, "r0", "a0.c0", "x\"y").render(1, 2);
            if let Err(e) = serde_json::from_str::<Value>(&sample) {
                return Err(ProfileError::invalid(
                    key,
                    format!(
                        "profile.{key}: not valid JSON once filled in ({e}): {sample} \
                         (put {{room}}, {{from}} and {{body}} inside quotes; {{seq}} and {{ts}} are numbers)"
                    ),
                ));
            }
            Ok(Some(pieces))
        };
        let message = template(o, "message", &["{from}", "{seq}", "{ts}"])?.ok_or_else(|| {
            ProfileError::invalid(
                "message",
                "protocol \"template\" needs profile.message, e.g. message = '{\"type\":\"say\",\"room\":\"{room}\",\"from\":\"{from}\",\"seq\":{seq},\"ts\":{ts},\"text\":\"{body}\"}'".into(),
            )
        })?;
        let join = template(o, "join", &["{room}"])?;
        let leave = template(o, "leave", &["{room}"])?;
        let pointer = |o: &mut Opts<'_>, key: &'static str, default: &str| {
            Ok::<_, ProfileError>(o.pointer(key)?.unwrap_or_else(|| default.into()))
        };
        let from = pointer(o, "from_pointer", "/from")?;
        let seq = pointer(o, "seq_pointer", "/seq")?;
        let ts = pointer(o, "ts_pointer", "/ts")?;
        let room = o.pointer("room_pointer")?;
        let joined_pointer = o.pointer("joined_pointer")?;
        let joined_value = o.string("joined_value")?;
        let joined = match (joined_pointer, joined_value) {
            (Some(p), Some(v)) => Some((p, Value::String(v))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ProfileError::invalid(
                    "joined_pointer",
                    "profile.joined_pointer needs profile.joined_value: the text found there in the server's join acknowledgement (e.g. joined_pointer = \"/type\", joined_value = \"joined\")".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(ProfileError::invalid(
                    "joined_value",
                    "profile.joined_value needs profile.joined_pointer: where to find it in the server's join acknowledgement".into(),
                ))
            }
        };
        if joined.is_some() && join.is_none() {
            return Err(ProfileError::invalid(
                "joined_pointer",
                "profile.joined_pointer waits for a join acknowledgement, but there is no profile.join template".into(),
            ));
        }
        Ok(Template {
            join,
            leave,
            message,
            joined,
            from,
            seq,
            ts,
            room,
        })
    }

    /// The message encoder.
    pub fn writer(&self, room: &str, from: &str, body: &str) -> FrameWriter {
        fill(&self.message, room, from, body)
    }

    /// The join frame, if a join template is set.
    pub fn join_frame(&self, room: &str) -> Option<String> {
        self.join
            .as_ref()
            .map(|p| fill(p, room, "", "").render(0, 0))
    }

    /// The leave frame, if a leave template is set.
    pub fn leave_frame(&self, room: &str) -> Option<String> {
        self.leave
            .as_ref()
            .map(|p| fill(p, room, "", "").render(0, 0))
    }

    /// Whether a join waits for an acknowledgement.
    pub fn waits_for_join(&self) -> bool {
        self.joined.is_some()
    }

    pub(crate) fn join_step(&self, text: &str) -> Step {
        let Some((pointer, value)) = &self.joined else {
            return Step::Done;
        };
        match serde_json::from_str::<Value>(text) {
            Ok(v) if v.pointer(pointer) == Some(value) => Step::Done,
            Ok(_) => Step::Continue,
            Err(_) => Step::Bad,
        }
    }

    /// What an incoming frame is: a delivery when it has a string at `from_pointer`.
    pub fn decode<'a>(&self, text: &'a str) -> Incoming<'a> {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return Incoming::Bad;
        };
        let Some(from) = v.pointer(&self.from).and_then(Value::as_str) else {
            return Incoming::Other;
        };
        let number = |p: &str| match v.pointer(p) {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        let (Some(seq), Some(ts)) = (number(&self.seq), number(&self.ts)) else {
            return Incoming::Bad;
        };
        let room = self
            .room
            .as_ref()
            .and_then(|p| v.pointer(p))
            .and_then(Value::as_str)
            .and_then(super::room_index);
        Incoming::Delivery(Delivery {
            from: from.to_owned().into(),
            seq,
            ts,
            room,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, Profile, ProtocolKind};
    use super::*;

    fn tpl(options: &str) -> Result<Profile, ProfileError> {
        let table: toml::Table = options.parse().expect("toml");
        Profile::from_options(ProtocolKind::Template, &table)
    }

    const HOMEGROWN: &str = r#"
join = '{"action":"subscribe","topic":"{room}"}'
joined_pointer = "/event"
joined_value = "subscribed"
message = '{"action":"publish","topic":"{room}","data":{"from":"{from}","seq":"{seq}","ts":{ts},"text":"{body}"}}'
from_pointer = "/data/from"
seq_pointer = "/data/seq"
ts_pointer = "/data/ts"
room_pointer = "/topic"
"#;

    #[test]
    fn renders_templates_with_escaped_values() {
        let p = tpl(HOMEGROWN).expect("valid");
        assert_eq!(
            p.join_frame("r2").as_deref(),
            Some(r#"{"action":"subscribe","topic":"r2"}"#)
        );
        assert_eq!(
            p.writer("r2", "a0.c1", "say \"hi\"").render(5, 77),
            r#"{"action":"publish","topic":"r2","data":{"from":"a0.c1","seq":"5","ts":77,"text":"say \"hi\""}}"#
        );
        assert_eq!(p.leave_frame("r2"), None);
    }

    #[test]
    fn decodes_through_pointers() {
        let p = tpl(HOMEGROWN).expect("valid");
        let Kind::Template(t) = &p.kind else {
            panic!("template")
        };
        assert_eq!(
            p.decode(
                r#"{"event":"message","topic":"r2","data":{"from":"a0.c1","seq":"5","ts":77}}"#
            ),
            Incoming::Delivery(Delivery {
                from: "a0.c1".into(),
                seq: 5,
                ts: 77,
                room: Some(2)
            })
        );
        assert_eq!(
            p.decode(r#"{"event":"subscribed","topic":"r2"}"#),
            Incoming::Other
        );
        assert_eq!(
            p.decode(r#"{"event":"message","data":{"from":"a0.c1","seq":"x","ts":77}}"#),
            Incoming::Bad
        );
        assert_eq!(p.decode("not json"), Incoming::Bad);
        assert!(t.waits_for_join());
        assert_eq!(
            t.join_step(r#"{"event":"subscribed","topic":"r2"}"#),
            Step::Done
        );
        assert_eq!(t.join_step(r#"{"event":"hello"}"#), Step::Continue);
    }

    #[test]
    fn rejects_bad_templates() {
        let e = tpl("").expect_err("no message");
        assert_eq!(e.key(), "message");
        let e = tpl("message = '{\"from\":\"{from}\",\"seq\":{seq}}'").expect_err("no ts");
        assert!(e.to_string().contains("{ts}"), "{e}");
        let e =
            tpl("message = '{\"from\":{from},\"seq\":{seq},\"ts\":{ts}}'").expect_err("unquoted");
        assert!(
            e.to_string().contains("not valid JSON once filled in"),
            "{e}"
        );
        let e = tpl(
            "message = '{\"from\":\"{from}\",\"seq\":{seq},\"ts\":{ts}}'\nfrom_pointer = \"from\"",
        )
        .expect_err("pointer");
        assert_eq!(e.key(), "from_pointer");
        let e = tpl("message = '{\"from\":\"{from}\",\"seq\":{seq},\"ts\":{ts}}'\njoined_pointer = \"/t\"\njoined_value = \"ok\"")
            .expect_err("ack without join");
        assert_eq!(e.key(), "joined_pointer");
    }

    #[test]
    fn braces_that_are_not_placeholders_stay() {
        assert_eq!(
            compile("{\"a\":{seq},\"b\":{}}"),
            vec![
                Piece::Lit("{\"a\":".into()),
                Piece::Seq,
                Piece::Lit(",\"b\":{}}".into())
            ]
        );
    }
}
