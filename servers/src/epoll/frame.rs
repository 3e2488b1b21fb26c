//! A small RFC 6455 frame codec for the server side, free of I/O and of per-connection buffers.
//!
//! The readiness loop reads every socket into one shared buffer and calls [`decode`] on it:
//! complete frames are unmasked in place and handed out as borrowed slices, so a connection
//! keeps nothing between reads except an incomplete tail (copied out by the caller) and, while
//! a fragmented text message is being received, its payload so far ([`Fragments`]). That is what
//! lets an idle connection cost a few hundred bytes instead of a read buffer.
//!
//! Server rules enforced here (RFC 6455 §5): client frames must be masked; reserved bits must be
//! clear; reserved opcodes are refused; control frames are final and at most 125 bytes; a
//! continuation needs a started message and a new data message must not interrupt one; a frame
//! or a reassembled message over `max` bytes is refused; a complete text message must be UTF-8;
//! a close payload is empty or a code plus a UTF-8 reason. Each failure maps to the protocol's
//! error code and close code ([`FrameError::code`]).
//!
//! Server frames are written unmasked and final ([`encode_frame`]).

use std::borrow::Cow;

use chatbench_protocol::ErrorCode;

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// Why a client's frames are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// RSV1–3 set without a negotiated extension.
    #[error("reserved bits set in frame header")]
    ReservedBits,
    /// Opcode 3–7 or 11–15.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A client frame without a mask.
    #[error("client frames must be masked")]
    Unmasked,
    /// A control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A continuation frame with no message started.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is incomplete.
    #[error("new data frame while a fragmented message is incomplete")]
    ExpectedContinuation,
    /// A frame, or a reassembled message, over the limit.
    #[error("message of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The announced or accumulated length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A complete text message (or a close reason) that is not UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A close frame with a one-byte payload.
    #[error("close frame payload of 1 byte")]
    BadClosePayload,
}

impl FrameError {
    /// The protocol error code this failure is reported with (its close code follows).
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::InvalidUtf8 => ErrorCode::InvalidUtf8,
            _ => ErrorCode::ProtocolError,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN bit.
    pub fin: bool,
    /// Opcode (0–15, never reserved: those are refused).
    pub opcode: u8,
    /// Masking key (always present on accepted client frames).
    pub mask: [u8; 4],
    /// Payload length.
    pub payload_len: usize,
    /// Header length in bytes (2–14).
    pub header_len: usize,
}

fn is_control(opcode: u8) -> bool {
    opcode & 0x8 != 0
}

/// Parses the header of a client frame at the start of `buf`. `Ok(None)`: not all of the header
/// is there yet. Data frames longer than `max` are refused from the header alone, before any
/// payload is buffered.
pub fn parse_header(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = b0 & 0x0f;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        other => return Err(FrameError::ReservedOpcode(other)),
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let len7 = b1 & 0x7f;
    if is_control(opcode) {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::ControlTooLong);
        }
    }
    let (len, ext) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 8)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    if len > max as u64 {
        return Err(FrameError::TooLarge { len, max });
    }
    let Some(m) = buf.get(2 + ext..6 + ext) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        // `len <= max`, a usize.
        payload_len: len as usize,
        header_len: 6 + ext,
    }))
}

/// XORs `buf` with the masking key (masking and unmasking are the same operation).
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(a) ^ word).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// The payload so far of a fragmented text message (`None` between messages: no allocation).
pub type Fragments = Option<Box<Vec<u8>>>;

/// A complete message (or control frame) decoded from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A complete, valid UTF-8 text message: borrowed from the input when it came in one
    /// frame, owned when it was reassembled from fragments.
    Text(Cow<'a, str>),
    /// A binary message (reported at its first frame: the protocol refuses it anyway).
    Binary,
    /// A ping with its payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close frame: its status code, if any, and its reason.
    Close(Option<u16>, &'a str),
}

/// What [`decode`] found at the start of its input.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// The next frame is incomplete: keep the input and read more.
    NeedMore,
    /// A non-final fragment of `n` bytes was consumed into the [`Fragments`].
    Fragment(usize),
    /// A frame of `n` bytes completed a message.
    Message(usize, Message<'a>),
}

/// Decodes the next frame at the start of `buf`, unmasking it in place. `frag` carries a
/// fragmented text message across calls; `max` bounds frames and reassembled messages.
pub fn decode<'a>(
    buf: &'a mut [u8],
    frag: &mut Fragments,
    max: usize,
) -> Result<Step<'a>, FrameError> {
    let Some(h) = parse_header(buf, max)? else {
        return Ok(Step::NeedMore);
    };
    let total = h.header_len + h.payload_len;
    let Some(payload) = buf.get_mut(h.header_len..total) else {
        return Ok(Step::NeedMore);
    };
    apply_mask(payload, h.mask);
    let payload: &'a [u8] = payload;
    let msg = match h.opcode {
        OP_PING => Message::Ping(payload),
        OP_PONG => Message::Pong,
        OP_CLOSE => match payload {
            [] => Message::Close(None, ""),
            [_] => return Err(FrameError::BadClosePayload),
            [a, b, reason @ ..] => Message::Close(
                Some(u16::from_be_bytes([*a, *b])),
                std::str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?,
            ),
        },
        OP_TEXT | OP_BINARY if frag.is_some() => return Err(FrameError::ExpectedContinuation),
        OP_BINARY => Message::Binary,
        OP_TEXT if !h.fin => {
            *frag = Some(Box::new(payload.to_vec()));
            return Ok(Step::Fragment(total));
        }
        OP_TEXT => Message::Text(Cow::Borrowed(
            std::str::from_utf8(payload).map_err(|_| FrameError::InvalidUtf8)?,
        )),
        _ => {
            // Continuation (every other opcode was refused by `parse_header`).
            let Some(so_far) = frag.as_mut() else {
                return Err(FrameError::UnexpectedContinuation);
            };
            let len = so_far.len() + payload.len();
            if len > max {
                *frag = None;
                return Err(FrameError::TooLarge {
                    len: len as u64,
                    max,
                });
            }
            so_far.extend_from_slice(payload);
            if !h.fin {
                return Ok(Step::Fragment(total));
            }
            let whole = frag.take().map(|b| *b).unwrap_or_default();
            Message::Text(Cow::Owned(
                String::from_utf8(whole).map_err(|_| FrameError::InvalidUtf8)?,
            ))
        }
    };
    Ok(Step::Message(total, msg))
}

/// Appends a final, unmasked server frame with `opcode` and `payload` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.reserve(10 + payload.len());
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// A close frame with `code` and `reason` (truncated to fit a control frame).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode_frame(out, OP_CLOSE, &payload);
}

/// Whether a close code received from a peer may be echoed (RFC 6455 §7.4): codes the
/// protocol defines for use on the wire, and the registered/private ranges 3000–4999.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Encodes a masked client frame (the other side of [`decode`], for tests and tools).
pub fn encode_client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn one(bytes: &[u8], max: usize) -> Result<(usize, String), FrameError> {
        let mut buf = bytes.to_vec();
        let mut frag = None;
        match decode(&mut buf, &mut frag, max)? {
            Step::Message(n, Message::Text(t)) => Ok((n, t.into_owned())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 §5.7: a masked "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(one(&bytes, 1024), Ok((11, "Hello".to_string())));
        assert_eq!(encode_client_frame(true, OP_TEXT, b"Hello", MASK), bytes);
    }

    #[test]
    fn length_encodings_at_their_boundaries() {
        for (len, header_len) in [
            (0, 6),
            (125, 6),
            (126, 8),
            (65_535, 8),
            (65_536, 14),
            (70_000, 14),
        ] {
            let payload = "a".repeat(len);
            let bytes = encode_client_frame(true, OP_TEXT, payload.as_bytes(), MASK);
            assert_eq!(bytes.len(), header_len + len, "{len}");
            let h = parse_header(&bytes, 1 << 20).unwrap().unwrap();
            assert_eq!((h.payload_len, h.header_len), (len, header_len));
            assert_eq!(one(&bytes, 1 << 20), Ok((bytes.len(), payload.clone())));
            let mut server = Vec::new();
            encode_frame(&mut server, OP_TEXT, payload.as_bytes());
            assert_eq!(server.len(), header_len - 4 + len, "{len}");
            assert_eq!(server[0], 0x81);
        }
    }

    #[test]
    fn every_prefix_needs_more() {
        let bytes = encode_client_frame(true, OP_TEXT, &[b'x'; 300], MASK);
        for cut in 0..bytes.len() {
            let mut buf = bytes[..cut].to_vec();
            let mut frag = None;
            assert_eq!(
                decode(&mut buf, &mut frag, 1024),
                Ok(Step::NeedMore),
                "{cut}"
            );
        }
    }

    #[test]
    fn refuses_bad_headers() {
        let ok = encode_client_frame(true, OP_TEXT, b"hi", MASK);
        let mut rsv = ok.clone();
        rsv[0] |= 0x40;
        assert_eq!(parse_header(&rsv, 64), Err(FrameError::ReservedBits));
        for op in [3u8, 7, 0xB, 0xF] {
            let f = encode_client_frame(true, op, b"x", MASK);
            assert_eq!(parse_header(&f, 64), Err(FrameError::ReservedOpcode(op)));
            assert_eq!(
                FrameError::ReservedOpcode(op).code(),
                ErrorCode::ProtocolError
            );
        }
        let mut unmasked = ok.clone();
        unmasked[1] &= 0x7f;
        assert_eq!(parse_header(&unmasked, 64), Err(FrameError::Unmasked));
        let frag_ping = encode_client_frame(false, OP_PING, b"", MASK);
        assert_eq!(
            parse_header(&frag_ping, 64),
            Err(FrameError::FragmentedControl)
        );
        let long_ping = encode_client_frame(true, OP_PING, &[0; 126], MASK);
        assert_eq!(
            parse_header(&long_ping, 1024),
            Err(FrameError::ControlTooLong)
        );
    }

    #[test]
    fn too_large_is_refused_from_the_header() {
        let big = encode_client_frame(true, OP_TEXT, &[b'a'; 1025], MASK);
        // Only the header is needed to refuse it.
        let err = parse_header(&big[..4], 1024).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: 1025,
                max: 1024
            }
        );
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
        assert_eq!(err.code().close_code(), Some(1009));
        // A 64-bit length with the top bit set is simply too large.
        let mut huge = vec![0x81, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&MASK);
        assert!(matches!(
            parse_header(&huge, 1024),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(
            one(
                &encode_client_frame(true, OP_TEXT, &[b'a'; 1024], MASK),
                1024
            )
            .map(|r| r.0),
            Ok(1032)
        );
    }

    #[test]
    fn fragmented_text_is_reassembled_with_control_frames_between() {
        let mut stream = Vec::new();
        stream.extend(encode_client_frame(false, OP_TEXT, "héll".as_bytes(), MASK));
        stream.extend(encode_client_frame(true, OP_PING, b"p", MASK));
        // A fragment boundary inside a multi-byte character is fine.
        let o = "o ✓".as_bytes();
        stream.extend(encode_client_frame(false, OP_CONTINUATION, &o[..3], MASK));
        stream.extend(encode_client_frame(true, OP_CONTINUATION, &o[3..], MASK));
        let mut frag = None;
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < stream.len() {
            match decode(&mut stream[pos..], &mut frag, 1024).unwrap() {
                Step::NeedMore => panic!("complete input"),
                Step::Fragment(n) => pos += n,
                Step::Message(n, m) => {
                    got.push(format!("{m:?}"));
                    pos += n;
                }
            }
        }
        assert_eq!(got, ["Ping([112])", "Text(\"héllo ✓\")"]);
        assert!(frag.is_none());
    }

    #[test]
    fn fragmentation_errors() {
        let mut frag = None;
        let mut cont = encode_client_frame(true, OP_CONTINUATION, b"x", MASK);
        assert_eq!(
            decode(&mut cont, &mut frag, 64),
            Err(FrameError::UnexpectedContinuation)
        );
        let mut first = encode_client_frame(false, OP_TEXT, b"ab", MASK);
        assert_eq!(decode(&mut first, &mut frag, 64), Ok(Step::Fragment(8)));
        let mut text = encode_client_frame(true, OP_TEXT, b"x", MASK);
        assert_eq!(
            decode(&mut text, &mut frag, 64),
            Err(FrameError::ExpectedContinuation)
        );
        // Reassembly is bounded by the same limit as single frames.
        let mut more = encode_client_frame(false, OP_CONTINUATION, &[b'c'; 60], MASK);
        assert_eq!(decode(&mut more, &mut frag, 64), Ok(Step::Fragment(66)));
        let mut last = encode_client_frame(true, OP_CONTINUATION, &[b'd'; 3], MASK);
        assert_eq!(
            decode(&mut last, &mut frag, 64),
            Err(FrameError::TooLarge { len: 65, max: 64 })
        );
        assert!(frag.is_none(), "the partial message is freed");
    }

    #[test]
    fn utf8_binary_and_close_payloads() {
        let mut frag = None;
        let mut bad = encode_client_frame(true, OP_TEXT, b"{\"t\xff", MASK);
        assert_eq!(
            decode(&mut bad, &mut frag, 64),
            Err(FrameError::InvalidUtf8)
        );
        assert_eq!(FrameError::InvalidUtf8.code().close_code(), Some(1007));
        let mut bin = encode_client_frame(false, OP_BINARY, b"\x00", MASK);
        assert_eq!(
            decode(&mut bin, &mut frag, 64),
            Ok(Step::Message(7, Message::Binary))
        );
        let mut close = encode_client_frame(true, OP_CLOSE, b"\x03\xe8bye", MASK);
        assert_eq!(
            decode(&mut close, &mut frag, 64),
            Ok(Step::Message(11, Message::Close(Some(1000), "bye")))
        );
        let mut empty = encode_client_frame(true, OP_CLOSE, b"", MASK);
        assert_eq!(
            decode(&mut empty, &mut frag, 64),
            Ok(Step::Message(6, Message::Close(None, "")))
        );
        let mut one_byte = encode_client_frame(true, OP_CLOSE, b"\x03", MASK);
        assert_eq!(
            decode(&mut one_byte, &mut frag, 64),
            Err(FrameError::BadClosePayload)
        );
        assert!(is_valid_close_code(1000) && is_valid_close_code(4000));
        assert!(!is_valid_close_code(1005) && !is_valid_close_code(999));
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let mut out = Vec::new();
        encode_close(&mut out, 1008, &"é".repeat(100));
        assert_eq!(out[0], 0x88);
        let len = usize::from(out[1]);
        assert!(len <= MAX_CONTROL_PAYLOAD);
        assert_eq!(&out[2..4], &1008u16.to_be_bytes());
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    /// Decodes a whole stream fed in chunks of `cut` bytes, as the loop does with its leftover.
    fn decode_chunked(stream: &[u8], cut: usize, max: usize) -> Result<Vec<String>, FrameError> {
        let mut pending: Vec<u8> = Vec::new();
        let mut frag = None;
        let mut out = Vec::new();
        for chunk in stream.chunks(cut.max(1)) {
            pending.extend_from_slice(chunk);
            let mut pos = 0;
            loop {
                match decode(&mut pending[pos..], &mut frag, max)? {
                    Step::NeedMore => break,
                    Step::Fragment(n) => pos += n,
                    Step::Message(n, m) => {
                        if let Message::Text(t) = m {
                            out.push(t.into_owned());
                        }
                        pos += n;
                    }
                }
            }
            pending.drain(..pos);
        }
        assert!(pending.is_empty());
        Ok(out)
    }

    proptest! {
        #[test]
        fn round_trips_any_text_in_any_fragmentation_and_chunking(
            msgs in proptest::collection::vec(("\\PC{0,300}", 1usize..5, any::<[u8; 4]>()), 1..6),
            cut in 1usize..200,
        ) {
            let mut stream = Vec::new();
            for (text, parts, mask) in &msgs {
                let b = text.as_bytes();
                let step = b.len().div_ceil(*parts).max(1);
                let pieces: Vec<&[u8]> = if b.is_empty() { vec![b] } else { b.chunks(step).collect() };
                for (i, p) in pieces.iter().enumerate() {
                    let op = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
                    stream.extend(encode_client_frame(i + 1 == pieces.len(), op, p, *mask));
                    if i == 0 {
                        stream.extend(encode_client_frame(true, OP_PONG, b"", *mask));
                    }
                }
            }
            let want: Vec<String> = msgs.iter().map(|m| m.0.clone()).collect();
            prop_assert_eq!(decode_chunked(&stream, cut, 4096), Ok(want));
        }

        #[test]
        fn header_round_trips_any_length(len in 0usize..200_000, mask in any::<[u8; 4]>()) {
            let payload = vec![b'q'; len];
            let f = encode_client_frame(true, OP_TEXT, &payload, mask);
            let h = parse_header(&f, usize::MAX).unwrap().unwrap();
            prop_assert_eq!(h.payload_len, len);
            prop_assert_eq!(h.header_len + len, f.len());
            prop_assert_eq!(h.mask, mask);
            let mut s = Vec::new();
            encode_frame(&mut s, OP_TEXT, &payload);
            // Server frames are the client frame without mask bit and key.
            prop_assert_eq!(s.len(), f.len() - 4);
        }

        #[test]
        fn masking_is_an_involution(data in proptest::collection::vec(any::<u8>(), 0..100), mask in any::<[u8; 4]>()) {
            let mut d = data.clone();
            apply_mask(&mut d, mask);
            for (i, (a, b)) in d.iter().zip(&data).enumerate() {
                prop_assert_eq!(*a, b ^ mask[i % 4]);
            }
            apply_mask(&mut d, mask);
            prop_assert_eq!(d, data);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_overrun(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 0usize..200) {
            let mut buf = bytes.clone();
            let mut frag = None;
            match decode(&mut buf, &mut frag, max) {
                Ok(Step::Fragment(n)) | Ok(Step::Message(n, _)) => prop_assert!(n <= bytes.len()),
                Ok(Step::NeedMore) | Err(_) => {}
            }
        }
    }
}
