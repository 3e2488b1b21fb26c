//! Parsing frames without copying message bodies.
//!
//! Each frame is first split into its top-level fields as borrowed [`RawValue`] slices (one pass
//! over the text), then only the fields a side needs are decoded. The `body` of a `msg` is never
//! decoded by either side: it stays a slice of the input.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ParseError;
use crate::MAX_ROOM_LEN;

/// A frame sent by a client, as a server reads it.
#[derive(Debug, PartialEq)]
pub enum ClientFrame<'a> {
    /// `{"t":"join","room":R}`
    Join {
        /// The room to join.
        room: Cow<'a, str>,
    },
    /// `{"t":"leave","room":R}`
    Leave {
        /// The room to leave.
        room: Cow<'a, str>,
    },
    /// `{"t":"msg","room":R,…}`: forwarded byte-for-byte to the room's other members.
    Msg(MsgRef<'a>),
    /// `{"t":"panic"}`: the fault-injection frame. Servers treat it as an unknown type unless
    /// fault injection is switched on.
    Panic,
}

/// The parts of a `msg` frame a server needs. `from`, `seq`, `ts` and `body` are opaque to a
/// server and kept as borrowed raw JSON, if present.
#[derive(Debug, PartialEq)]
pub struct MsgRef<'a> {
    /// The room the message is for.
    pub room: Cow<'a, str>,
    /// The raw JSON text of `body` (quotes and escapes included), borrowed from the input.
    pub body: Option<&'a str>,
}

/// A frame sent by a server, as a client reads it.
#[derive(Debug, PartialEq)]
pub enum ServerFrame<'a> {
    /// A forwarded `msg`.
    Msg(ServerMsg<'a>),
    /// `{"t":"joined","room":R}`
    Joined {
        /// The room now joined.
        room: Cow<'a, str>,
    },
    /// `{"t":"error","code":C,"reason":R}`
    Error {
        /// The error code (see [`crate::ErrorCode`]); kept as text so unknown codes survive.
        code: Cow<'a, str>,
        /// Human-readable reason.
        reason: Cow<'a, str>,
    },
}

/// A `msg` as a client reads it: every field the sender set.
#[derive(Debug, PartialEq)]
pub struct ServerMsg<'a> {
    /// The room.
    pub room: Cow<'a, str>,
    /// The sender's id, e.g. `a0.c1042` (agent 0, connection 1042).
    pub from: Cow<'a, str>,
    /// The sender's sequence number.
    pub seq: u64,
    /// The sender's timestamp (chatbench: the intended send time, µs since the run's epoch).
    pub ts: u64,
    /// The raw JSON text of `body` (quotes and escapes included), borrowed from the input.
    pub body: &'a str,
}

/// The top-level fields of any frame, each a borrowed raw slice. Unknown fields are ignored so
/// that later protocol versions can add fields.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    t: Option<&'a RawValue>,
    #[serde(borrow, default)]
    room: Option<&'a RawValue>,
    #[serde(borrow, default)]
    from: Option<&'a RawValue>,
    #[serde(borrow, default)]
    seq: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
    #[serde(borrow, default)]
    code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reason: Option<&'a RawValue>,
}

fn split(text: &str) -> Result<Fields<'_>, ParseError> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Err(ParseError::BadJson("a frame must be a JSON object".into()));
    }
    serde_json::from_str(text).map_err(|e| ParseError::BadJson(e.to_string()))
}

/// Decodes a raw JSON string value, borrowing it when it holds no escapes (the common case).
fn decode_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        if !inner.contains('\\') {
            return Some(Cow::Borrowed(inner));
        }
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

fn frame_type<'a>(f: &Fields<'a>) -> Result<Cow<'a, str>, ParseError> {
    let raw = f.t.ok_or(ParseError::MissingType)?;
    decode_str(raw).ok_or(ParseError::MissingType)
}

fn string_field<'a>(
    raw: Option<&'a RawValue>,
    frame: &'static str,
    field: &'static str,
) -> Result<Cow<'a, str>, ParseError> {
    let raw = raw.ok_or(ParseError::BadField {
        frame,
        field,
        problem: "is missing",
    })?;
    decode_str(raw).ok_or(ParseError::BadField {
        frame,
        field,
        problem: "must be a string",
    })
}

fn u64_field(
    raw: Option<&RawValue>,
    frame: &'static str,
    field: &'static str,
) -> Result<u64, ParseError> {
    let raw = raw.ok_or(ParseError::BadField {
        frame,
        field,
        problem: "is missing",
    })?;
    serde_json::from_str::<u64>(raw.get()).map_err(|_| ParseError::BadField {
        frame,
        field,
        problem: "must be a non-negative integer below 2^64",
    })
}

fn room_field<'a>(
    raw: Option<&'a RawValue>,
    frame: &'static str,
) -> Result<Cow<'a, str>, ParseError> {
    let room = string_field(raw, frame, "room")?;
    validate_room(&room)?;
    Ok(room)
}

/// Checks the room naming rule: 1 to [`MAX_ROOM_LEN`] bytes of `[A-Za-z0-9._:-]`.
pub fn validate_room(room: &str) -> Result<(), ParseError> {
    if room.is_empty() {
        return Err(ParseError::BadRoom("room name is empty"));
    }
    if room.len() > MAX_ROOM_LEN {
        return Err(ParseError::BadRoom("room name is longer than 64 bytes"));
    }
    if !room
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(ParseError::BadRoom(
            "room name may use only A-Z a-z 0-9 . _ : -",
        ));
    }
    Ok(())
}

/// Parses a client frame, as a server does. Only `t` and `room` are decoded.
pub fn parse_client(text: &str) -> Result<ClientFrame<'_>, ParseError> {
    let f = split(text)?;
    let t = frame_type(&f)?;
    match t.as_ref() {
        "join" => Ok(ClientFrame::Join {
            room: room_field(f.room, "join")?,
        }),
        "leave" => Ok(ClientFrame::Leave {
            room: room_field(f.room, "leave")?,
        }),
        "msg" => Ok(ClientFrame::Msg(MsgRef {
            room: room_field(f.room, "msg")?,
            body: f.body.map(RawValue::get),
        })),
        "panic" => Ok(ClientFrame::Panic),
        _ => Err(ParseError::UnknownType(t.into_owned())),
    }
}

/// Parses a server frame, as a client does. A `msg` must carry `from`, `seq`, `ts` and `body`.
pub fn parse_server(text: &str) -> Result<ServerFrame<'_>, ParseError> {
    let f = split(text)?;
    let t = frame_type(&f)?;
    match t.as_ref() {
        "msg" => Ok(ServerFrame::Msg(ServerMsg {
            room: room_field(f.room, "msg")?,
            from: string_field(f.from, "msg", "from")?,
            seq: u64_field(f.seq, "msg", "seq")?,
            ts: u64_field(f.ts, "msg", "ts")?,
            body: f
                .body
                .ok_or(ParseError::BadField {
                    frame: "msg",
                    field: "body",
                    problem: "is missing",
                })?
                .get(),
        })),
        "joined" => Ok(ServerFrame::Joined {
            room: room_field(f.room, "joined")?,
        }),
        "error" => Ok(ServerFrame::Error {
            code: string_field(f.code, "error", "code")?,
            reason: string_field(f.reason, "error", "reason")?,
        }),
        _ => Err(ParseError::UnknownType(t.into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_error, encode_join, encode_joined, encode_leave, encode_msg, ErrorCode};
    use proptest::prelude::*;

    #[test]
    fn parses_the_design_examples() {
        assert_eq!(
            parse_client(r#"{"t":"join","room":"r17"}"#),
            Ok(ClientFrame::Join { room: "r17".into() })
        );
        assert_eq!(
            parse_client(r#"{"t":"leave","room":"r17"}"#),
            Ok(ClientFrame::Leave { room: "r17".into() })
        );
        let text =
            r#"{"t":"msg","room":"r17","from":"a3.c1042","seq":88,"ts":123456789,"body":"hello"}"#;
        match parse_client(text) {
            Ok(ClientFrame::Msg(m)) => {
                assert_eq!(m.room, "r17");
                assert_eq!(m.body, Some("\"hello\""));
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse_server(text) {
            Ok(ServerFrame::Msg(m)) => {
                assert_eq!((m.from.as_ref(), m.seq, m.ts), ("a3.c1042", 88, 123456789));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn msg_body_is_borrowed_not_copied() {
        let text = r#"{"t":"msg","room":"r1","from":"a","seq":1,"ts":2,"body":"xyz"}"#;
        let Ok(ClientFrame::Msg(m)) = parse_client(text) else {
            panic!("not a msg")
        };
        let body = m.body.expect("body");
        let range = text.as_ptr() as usize..text.as_ptr() as usize + text.len();
        assert!(
            range.contains(&(body.as_ptr() as usize)),
            "body must point into the input"
        );
        assert!(
            matches!(m.room, Cow::Borrowed(_)),
            "an unescaped room is borrowed"
        );
    }

    #[test]
    fn rejects_bad_frames_with_specific_errors() {
        let cases: &[(&str, ErrorCode)] = &[
            ("", ErrorCode::BadJson),
            ("not json", ErrorCode::BadJson),
            ("[1,2]", ErrorCode::BadJson),
            ("\"join\"", ErrorCode::BadJson),
            (r#"{"t":"join","room":"r1"} trailing"#, ErrorCode::BadJson),
            (r#"{"t":"join","room":"r1""#, ErrorCode::BadJson),
            (
                r#"{"t":"join","t":"leave","room":"r1"}"#,
                ErrorCode::BadJson,
            ),
            (r#"{"room":"r1"}"#, ErrorCode::BadField),
            (r#"{"t":7,"room":"r1"}"#, ErrorCode::BadField),
            (r#"{"t":"dance","room":"r1"}"#, ErrorCode::UnknownType),
            (r#"{"t":"join"}"#, ErrorCode::BadField),
            (r#"{"t":"join","room":17}"#, ErrorCode::BadField),
            (r#"{"t":"join","room":""}"#, ErrorCode::BadRoom),
            (r#"{"t":"join","room":"has space"}"#, ErrorCode::BadRoom),
            (r#"{"t":"msg","body":"x"}"#, ErrorCode::BadField),
        ];
        for (text, code) in cases {
            let err = parse_client(text).expect_err(text);
            assert_eq!(err.code(), *code, "{text}: {err}");
        }
        let long = format!(r#"{{"t":"join","room":"{}"}}"#, "a".repeat(65));
        assert_eq!(
            parse_client(&long).map_err(|e| e.code()),
            Err(ErrorCode::BadRoom)
        );
    }

    #[test]
    fn server_msg_requires_loadgen_fields() {
        for text in [
            r#"{"t":"msg","room":"r1","seq":1,"ts":2,"body":""}"#,
            r#"{"t":"msg","room":"r1","from":"a","ts":2,"body":""}"#,
            r#"{"t":"msg","room":"r1","from":"a","seq":-1,"ts":2,"body":""}"#,
            r#"{"t":"msg","room":"r1","from":"a","seq":1,"ts":2.5,"body":""}"#,
            r#"{"t":"msg","room":"r1","from":"a","seq":1,"ts":2}"#,
        ] {
            assert_eq!(
                parse_server(text).map_err(|e| e.code()),
                Err(ErrorCode::BadField),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            parse_client(r#"{"t":"join","room":"r1","v":2,"extra":{"a":[1]}}"#),
            Ok(ClientFrame::Join { room: "r1".into() })
        );
    }

    #[test]
    fn encoders_produce_parseable_frames() {
        assert_eq!(
            parse_client(&encode_join("a")),
            Ok(ClientFrame::Join { room: "a".into() })
        );
        assert_eq!(
            parse_client(&encode_leave("a")),
            Ok(ClientFrame::Leave { room: "a".into() })
        );
        assert_eq!(
            parse_server(&encode_joined("a")),
            Ok(ServerFrame::Joined { room: "a".into() })
        );
        let e = encode_error(ErrorCode::NotJoined, "room \"r1\" not joined");
        assert_eq!(
            parse_server(&e),
            Ok(ServerFrame::Error {
                code: "not_joined".into(),
                reason: "room \"r1\" not joined".into()
            })
        );
    }

    fn room_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._:-]{1,64}"
    }

    proptest! {
        #[test]
        fn msg_round_trips(room in room_strategy(), from in "\\PC{0,40}", seq: u64, ts: u64, body in "\\PC{0,200}") {
            let text = encode_msg(&room, &from, seq, ts, &body);
            let Ok(ServerFrame::Msg(m)) = parse_server(&text) else { panic!("not a msg: {text}") };
            prop_assert_eq!(m.room.as_ref(), room.as_str());
            prop_assert_eq!(m.from.as_ref(), from.as_str());
            prop_assert_eq!((m.seq, m.ts), (seq, ts));
            let decoded: String = serde_json::from_str(m.body).unwrap();
            prop_assert_eq!(decoded, body);
            let Ok(ClientFrame::Msg(c)) = parse_client(&text) else { panic!("server parse failed") };
            prop_assert_eq!(c.room.as_ref(), room.as_str());
        }

        #[test]
        fn join_leave_joined_round_trip(room in room_strategy()) {
            let (join, leave, joined) = (encode_join(&room), encode_leave(&room), encode_joined(&room));
            prop_assert_eq!(parse_client(&join), Ok(ClientFrame::Join { room: room.as_str().into() }));
            prop_assert_eq!(parse_client(&leave), Ok(ClientFrame::Leave { room: room.as_str().into() }));
            prop_assert_eq!(parse_server(&joined), Ok(ServerFrame::Joined { room: room.as_str().into() }));
        }

        #[test]
        fn error_round_trips(idx in 0usize..ErrorCode::ALL.len(), reason in "\\PC{0,100}") {
            let code = ErrorCode::ALL[idx];
            let text = encode_error(code, &reason);
            let Ok(ServerFrame::Error { code: c, reason: r }) = parse_server(&text) else { panic!("{text}") };
            prop_assert_eq!(ErrorCode::from_wire(&c), Some(code));
            prop_assert_eq!(r.as_ref(), reason.as_str());
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = parse_client(&text);
            let _ = parse_server(&text);
        }

        #[test]
        fn bad_rooms_are_rejected(room in "[^A-Za-z0-9._:-]{1,8}") {
            let text = format!(r#"{{"t":"join","room":{}}}"#, serde_json::to_string(&room).unwrap());
            prop_assert_eq!(parse_client(&text).map_err(|e| e.code()), Err(ErrorCode::BadRoom));
        }

        #[test]
        fn truncated_frames_are_rejected(room in room_strategy(), cut in 1usize..20) {
            let text = encode_msg(&room, "a0.c1", 1, 2, "body");
            let cut = cut.min(text.len());
            let truncated = &text[..text.len() - cut];
            prop_assert_eq!(parse_client(truncated).map_err(|e| e.code()), Err(ErrorCode::BadJson));
        }
    }
}
