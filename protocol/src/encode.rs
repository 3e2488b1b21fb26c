//! Encoding frames. Room names and error reasons are escaped as JSON strings; servers never
//! re-encode a `msg`, so the only `msg` encoder is the client's ([`MsgWriter`]).

use crate::error::ErrorCode;

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn simple(t: &str, room: &str) -> String {
    let mut out = String::with_capacity(24 + room.len());
    out.push_str("{\"t\":\"");
    out.push_str(t);
    out.push_str("\",\"room\":");
    push_json_str(&mut out, room);
    out.push('}');
    out
}

/// `{"t":"join","room":R}`
pub fn encode_join(room: &str) -> String {
    simple("join", room)
}

/// `{"t":"leave","room":R}`
pub fn encode_leave(room: &str) -> String {
    simple("leave", room)
}

/// `{"t":"joined","room":R}`
pub fn encode_joined(room: &str) -> String {
    simple("joined", room)
}

/// `{"t":"error","code":C,"reason":R}`
pub fn encode_error(code: ErrorCode, reason: &str) -> String {
    let mut out = String::with_capacity(40 + reason.len());
    out.push_str("{\"t\":\"error\",\"code\":\"");
    out.push_str(code.as_str());
    out.push_str("\",\"reason\":");
    push_json_str(&mut out, reason);
    out.push('}');
    out
}

/// `{"t":"msg","room":R,"from":F,"seq":S,"ts":T,"body":B}` with `body` a JSON string.
pub fn encode_msg(room: &str, from: &str, seq: u64, ts: u64, body: &str) -> String {
    let mut out = String::new();
    MsgWriter::new(room, from, body).write(&mut out, seq, ts);
    out
}

/// Encodes many `msg` frames of one sender cheaply: the room, sender and body are escaped once,
/// and each frame only writes its `seq` and `ts`.
#[derive(Debug, Clone)]
pub struct MsgWriter {
    prefix: String,
    suffix: String,
}

impl MsgWriter {
    /// A writer for messages from `from` to `room` with the given body text.
    pub fn new(room: &str, from: &str, body: &str) -> MsgWriter {
        let mut prefix = String::from("{\"t\":\"msg\",\"room\":");
        push_json_str(&mut prefix, room);
        prefix.push_str(",\"from\":");
        push_json_str(&mut prefix, from);
        prefix.push_str(",\"seq\":");
        let mut suffix = String::from(",\"body\":");
        push_json_str(&mut suffix, body);
        suffix.push('}');
        MsgWriter { prefix, suffix }
    }

    /// The encoded length for the given `seq` and `ts`.
    pub fn len(&self, seq: u64, ts: u64) -> usize {
        self.prefix.len() + digits(seq) + 6 + digits(ts) + self.suffix.len()
    }

    /// Appends one frame to `out` (which is not cleared).
    pub fn write(&self, out: &mut String, seq: u64, ts: u64) {
        use std::fmt::Write;
        out.reserve(self.len(seq, ts));
        out.push_str(&self.prefix);
        let _ = write!(out, "{seq},\"ts\":{ts}");
        out.push_str(&self.suffix);
    }
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_has_the_design_shape() {
        assert_eq!(
            encode_msg("r17", "a3.c1042", 88, 123456789, "hi"),
            r#"{"t":"msg","room":"r17","from":"a3.c1042","seq":88,"ts":123456789,"body":"hi"}"#
        );
    }

    #[test]
    fn writer_len_is_exact() {
        let w = MsgWriter::new("r1", "a0.c7", "xxxx");
        for (seq, ts) in [(0, 0), (9, 10), (u64::MAX, 12345)] {
            let mut s = String::new();
            w.write(&mut s, seq, ts);
            assert_eq!(s.len(), w.len(seq, ts));
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        let e = encode_error(ErrorCode::BadJson, "a\u{1}b\"c\\");
        assert_eq!(
            e,
            r#"{"t":"error","code":"bad_json","reason":"a\u0001b\"c\\"}"#
        );
    }
}
