//! The receive hot path's parser of a chatbench `msg` frame: reads only what a receiver judges
//! (`room`, `from`, `seq`, `ts`) from a frame laid out exactly as the client's own encoder
//! writes it (`chatbench_protocol::MsgWriter`; servers forward it byte for byte).
//!
//! [`parse`] either returns the same [`Delivery`] that the full parser would
//! (`Profile::decode` of the `chatbench` and `echo` profiles), or `None`, and the caller falls
//! back to the full parser. It never answers differently: anything it is not sure of (another
//! field order, whitespace, escapes, a leading zero, a number that overflows, a body that is not
//! a plain string) is `None`. The property tests below hold it to that against the full parser.
//! It allocates nothing and reads each byte once.
//!
//! [`parse_ascii`] does the same on a message's raw bytes, before anyone checked that they are
//! UTF-8: it declines any byte above 0x7F, so what it takes is ASCII, hence UTF-8, and the
//! receive path need not validate a frame it takes (the validation was 5 % of the release
//! build's instructions per delivery). A frame with any other byte goes to `from_utf8` and
//! [`parse`] as before.

use std::borrow::Cow;

use chatbench_model::profile::{room_index, Delivery};

/// The frame's fixed start, up to the room's opening quote.
const HEAD: &[u8] = br#"{"t":"msg","room":""#;
/// Room names the protocol accepts are at most this long (`chatbench_protocol::MAX_ROOM_LEN`).
const MAX_ROOM: usize = chatbench_protocol::MAX_ROOM_LEN;

/// A cursor over the frame's bytes.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
    /// Whether a byte above 0x7F makes a string not plain ([`parse_ascii`]).
    ascii: bool,
}

impl<'a> Cur<'a> {
    /// Consumes `lit` if the frame continues with it.
    fn lit(&mut self, lit: &[u8]) -> Option<()> {
        let end = self.at.checked_add(lit.len())?;
        (self.b.get(self.at..end)? == lit).then(|| self.at = end)
    }

    /// A JSON string's content up to its closing quote (consumed), if it has no escape and
    /// no control character (the full parser would decode those; the fast path declines).
    fn plain_str(&mut self) -> Option<&'a [u8]> {
        // Plain loops: the gate measures the debug build, where iterator adaptors cost
        // several times more per byte.
        let start = self.at;
        let mut i = start;
        // Eight bytes at a time while none of them can end or complicate the string (a body is
        // most of a frame); the byte loop below decides on the word that may.
        let b = self.b;
        let high = if self.ascii { HIGH } else { 0 };
        while let Some(w) = word(b, i) {
            if maybe_special(w) || w & high != 0 {
                break;
            }
            i += 8;
        }
        let top = if self.ascii { 0x80 } else { 0x100 };
        while i < b.len() {
            let c = b[i];
            if c == b'"' {
                self.at = i + 1;
                return Some(&b[start..i]);
            }
            if c == b'\\' || c < 0x20 || u16::from(c) >= top {
                return None;
            }
            i += 1;
        }
        None
    }

    /// A JSON non-negative integer as serde reads it into a `u64`: no sign, no leading zero,
    /// no fraction or exponent, no overflow.
    fn uint(&mut self) -> Option<u64> {
        let start = self.at;
        let b = self.b;
        let mut i = start;
        let mut v: u64 = 0;
        // Up to 19 digits cannot overflow a u64 (10¹⁹ − 1 < 2⁶⁴): no checks until then.
        while i < b.len() && i - start < 19 && b[i] >= b'0' && b[i] <= b'9' {
            v = v * 10 + u64::from(b[i] - b'0');
            i += 1;
        }
        while i < b.len() && b[i].is_ascii_digit() {
            v = v.checked_mul(10)?.checked_add(u64::from(b[i] - b'0'))?;
            i += 1;
        }
        if i == start || (i - start > 1 && self.b[start] == b'0') {
            return None;
        }
        self.at = i;
        Some(v)
    }
}

/// The eight bytes of `b` from `i` as one little-endian word (one load in an optimised
/// build), or `None` past the end.
fn word(b: &[u8], i: usize) -> Option<u64> {
    match b.get(i..i.checked_add(8)?) {
        Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) => {
            Some(u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]))
        }
        _ => None,
    }
}

/// The top bit of each byte of a word.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `w` is a quote, a backslash or a control character
/// (below 0x20): never `false` when one is (the classic "has zero byte" and "has byte less
/// than" tests, exact for "any"), so a `false` word can be skipped.
fn maybe_special(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const SPACES: u64 = ONES * 0x20;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let (q, bs) = (w ^ QUOTES, w ^ BACKSLASHES);
    let below_space = w.wrapping_sub(SPACES) & !w;
    let quote = q.wrapping_sub(ONES) & !q;
    let backslash = bs.wrapping_sub(ONES) & !bs;
    (below_space | quote | backslash) & HIGH != 0
}

/// Whether every byte of a room name is one the protocol accepts (a plain loop: see
/// [`Cur::plain_str`]).
fn room_chars(room: &[u8]) -> bool {
    let mut i = 0;
    while i < room.len() {
        let b = room[i];
        if !(b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b':' || b == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

/// The delivery in a `msg` frame written by chatbench's encoder, or `None`: then ask the full
/// parser (which may still accept it, or call it bad).
pub fn parse(text: &str) -> Option<Delivery<'_>> {
    parse_bytes(text.as_bytes(), false)
}

/// [`parse`] of a text message's raw bytes, not yet known to be UTF-8: `None` also for any
/// byte above 0x7F, so a frame it takes is ASCII (valid UTF-8) and is read exactly as
/// [`parse`] reads it.
pub fn parse_ascii(bytes: &[u8]) -> Option<Delivery<'_>> {
    parse_bytes(bytes, true)
}

fn parse_bytes(bytes: &[u8], ascii: bool) -> Option<Delivery<'_>> {
    let mut c = Cur {
        b: bytes,
        at: 0,
        ascii,
    };
    c.lit(HEAD)?;
    let room = c.plain_str()?;
    if room.is_empty() || room.len() > MAX_ROOM || !room_chars(room) {
        return None;
    }
    c.lit(br#","from":""#)?;
    let from = c.plain_str()?;
    c.lit(br#","seq":"#)?;
    let seq = c.uint()?;
    c.lit(br#","ts":"#)?;
    let ts = c.uint()?;
    c.lit(br#","body":""#)?;
    c.plain_str()?;
    if c.at + 1 != bytes.len() || bytes[c.at] != b'}' {
        return None;
    }
    // Each slice starts after an ASCII quote and ends at one: on char boundaries of a UTF-8
    // text; in ASCII mode every byte is below 0x80. Either way these do not fail.
    let from = std::str::from_utf8(from).ok()?;
    let room = std::str::from_utf8(room).ok()?;
    Some(Delivery {
        from: Cow::Borrowed(from),
        seq,
        ts,
        room: room_index(room),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatbench_model::profile::{Incoming, Profile, ProtocolKind};
    use chatbench_protocol::encode_msg;
    use proptest::prelude::*;

    fn full(text: &str) -> Incoming<'_> {
        Profile::from_options(ProtocolKind::Chatbench, &toml::Table::new())
            .expect("the default profile")
            .decode(text)
    }

    /// The fast path's answer is the full parser's whenever it gives one; on raw bytes it is
    /// the same answer for an ASCII frame and none for any other.
    fn agrees(text: &str) -> Result<(), TestCaseError> {
        if let Some(d) = parse(text) {
            prop_assert_eq!(full(text), Incoming::Delivery(d), "frame {:?}", text);
        }
        let ascii = parse_ascii(text.as_bytes());
        if text.is_ascii() {
            prop_assert_eq!(ascii, parse(text), "frame {:?}", text);
        } else {
            prop_assert_eq!(ascii, None, "frame {:?}", text);
        }
        Ok(())
    }

    #[test]
    fn raw_bytes_are_taken_only_when_ascii() {
        let text = encode_msg("r17", "a3.c1042", 88, 123_456_789, "hello, a plain body");
        assert_eq!(parse_ascii(text.as_bytes()), parse(&text));
        assert!(parse_ascii(text.as_bytes()).is_some());
        // A non-ASCII byte anywhere in a string: declined raw, still taken as text.
        for (from, body) in [
            ("a3.c1042", "h\u{e9}llo, world, in UTF-8"),
            ("a\u{e9}.c1", "x"),
        ] {
            let t = encode_msg("r1", from, 1, 2, body);
            assert_eq!(parse_ascii(t.as_bytes()), None, "{t}");
            assert!(parse(&t).is_some(), "{t}");
        }
        // Bytes that are not UTF-8 at all, in the body or the sender: declined.
        let mut bad = text.clone().into_bytes();
        let at = bad.len() - 4;
        bad[at] = 0xff;
        assert_eq!(parse_ascii(&bad), None);
        let mut bad = text.into_bytes();
        bad[HEAD.len() + 13] = 0xc3;
        assert_eq!(parse_ascii(&bad), None);
    }

    #[test]
    fn a_word_is_plain_only_when_no_byte_is_special() {
        for special in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
            for at in 0..8 {
                let mut w = *b"abcdefgh";
                w[at] = special;
                assert!(maybe_special(u64::from_le_bytes(w)), "{w:?}");
            }
        }
        assert!(!maybe_special(u64::from_le_bytes(*b"hello wo")));
        assert!(!maybe_special(u64::from_le_bytes([
            0xc3, 0xa9, b' ', b'~', 0xff, 0x80, b'!', b'#'
        ])));
    }

    proptest! {
        #[test]
        fn a_word_with_a_special_byte_is_never_skipped(w in any::<[u8; 8]>()) {
            let special = w.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert!(!special || maybe_special(u64::from_le_bytes(w)), "{:?}", w);
        }
    }

    #[test]
    fn reads_what_the_encoder_writes() {
        let text = encode_msg("r17", "a3.c1042", 88, 123_456_789, "hello");
        let d = parse(&text).expect("the fast path takes an encoder's frame");
        assert_eq!(d.from, "a3.c1042");
        assert!(matches!(d.from, Cow::Borrowed(_)));
        assert_eq!((d.seq, d.ts, d.room), (88, 123_456_789, Some(17)));
        assert_eq!(full(&text), Incoming::Delivery(d));
        let max = encode_msg("r0", "a0.c0", u64::MAX, 0, "");
        assert_eq!(parse(&max).map(|d| (d.seq, d.ts)), Some((u64::MAX, 0)));
        // 19 digits (read unchecked), 20 (checked): both as the full parser reads them.
        let nines = encode_msg(
            "r0",
            "a0.c0",
            9_999_999_999_999_999_999,
            10_000_000_000_000_000_000,
            "",
        );
        let d = parse(&nines).expect("in range");
        assert_eq!(
            (d.seq, d.ts),
            (9_999_999_999_999_999_999, 10_000_000_000_000_000_000)
        );
        assert_eq!(full(&nines), Incoming::Delivery(d));
    }

    #[test]
    fn declines_what_it_is_not_sure_of() {
        for text in [
            // Whitespace, another order, escapes, leading zeros, overflow, a non-string body,
            // trailing bytes, a bad room, a truncated frame: the full parser decides.
            r#"{"t":"msg", "room":"r1","from":"a0.c1","seq":1,"ts":2,"body":"x"}"#,
            r#"{"t":"msg","from":"a0.c1","room":"r1","seq":1,"ts":2,"body":"x"}"#,
            r#"{"t":"msg","room":"r1","from":"a0.c\u0031","seq":1,"ts":2,"body":"x"}"#,
            r#"{"t":"msg","room":"r1","from":"a0.c1","seq":01,"ts":2,"body":"x"}"#,
            r#"{"t":"msg","room":"r1","from":"a0.c1","seq":18446744073709551616,"ts":2,"body":"x"}"#,
            r#"{"t":"msg","room":"r1","from":"a0.c1","seq":1,"ts":2,"body":{"a":1}}"#,
            r#"{"t":"msg","room":"r1","from":"a0.c1","seq":1,"ts":2,"body":"x"} "#,
            r#"{"t":"msg","room":"r1","from":"a0.c1","seq":1,"ts":2,"body":"x"},"#,
            r#"{"t":"msg","room":"r 1","from":"a0.c1","seq":1,"ts":2,"body":"x"}"#,
            r#"{"t":"msg","room":"","from":"a0.c1","seq":1,"ts":2,"body":"x"}"#,
            r#"{"t":"msg","room":"r1","from":"a0.c1","seq":1,"ts":2,"body":"x"#,
            r#"{"t":"msg","room":"r1","from":"a0.c1","seq":-1,"ts":2,"body":"x"}"#,
            r#"{"t":"msg","room":"r1","from":"a0.c1","seq":1.0,"ts":2,"body":"x"}"#,
            "",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
        // Declined but still a delivery: the fallback keeps it.
        let spaced = r#"{"t":"msg", "room":"r1","from":"a0.c1","seq":1,"ts":2,"body":"x"}"#;
        assert!(matches!(full(spaced), Incoming::Delivery(_)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every frame the encoder can write is taken by the fast path, with the full parser's
        /// answer.
        #[test]
        fn encoder_frames_agree(room in "[A-Za-z0-9._:-]{1,64}", from in "\\PC{0,24}",
                                seq in any::<u64>(), ts in any::<u64>(), body in "\\PC{0,80}") {
            let text = encode_msg(&room, &from, seq, ts, &body);
            agrees(&text)?;
            let plain = |s: &str| !s.chars().any(|c| c == '"' || c == '\\' || (c as u32) < 0x20);
            if plain(&from) && plain(&body) {
                prop_assert!(parse(&text).is_some(), "declined {:?}", text);
            }
        }

        /// Damaged frames (a byte changed, cut, or inserted): never a different answer.
        #[test]
        fn damaged_frames_agree(seq in any::<u64>(), ts in any::<u64>(), at in any::<prop::sample::Index>(),
                                byte in prop::sample::select(b"0123456789\"\\{}:, -.r\x01x".to_vec()),
                                how in 0u8..3) {
            let text = encode_msg("r5", "a1.c7", seq, ts, "hello");
            let mut bytes = text.into_bytes();
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
            match String::from_utf8(bytes) {
                Ok(t) => agrees(&t)?,
                Err(e) => prop_assert_eq!(parse_ascii(e.as_bytes()), None),
            }
        }

        /// Arbitrary text: never a different answer.
        #[test]
        fn any_text_agrees(text in "\\PC{0,120}") {
            agrees(&text)?;
        }
    }
}
