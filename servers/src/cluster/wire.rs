//! The mesh backplane's wire format between cluster nodes: I/O-free encoding, and a decoder
//! that validates every frame (a peer's bytes are untrusted until proven otherwise).
//!
//! Every frame is `[u32 big-endian length of what follows][u8 type][payload]`; the length is
//! checked against a maximum before anything is allocated. On an authenticated link every
//! frame after the handshake is followed by a 16-byte tag (see [`super::auth`]), not counted in
//! the length. Types (cluster protocol version 2):
//!
//! | type | name | payload |
//! |---|---|---|
//! | 1 | `Hello` | `b"CBCL"`, `u16` cluster protocol version, `u64` node id |
//! | 2 | `Refuse` | UTF-8 reason (the sender then closes the link) |
//! | 3 | `Reset` | none: forget every room the sender declared |
//! | 4 | `Add` | room name: the sender has local members in it |
//! | 5 | `Remove` | room name: the sender has none any more |
//! | 6 | `Sync` | `u64` token: answer with `SyncAck` once everything before it is applied |
//! | 7 | `SyncAck` | `u64` token |
//! | 8 | `Ping` | none (heartbeat) |
//! | 9 | `Msg` | `u16` room length, room, then the client's `msg` frame bytes unchanged |
//! | 10 | `Challenge` | `u64` incarnation, 32-byte nonce, `u8` flags (bit 0: the sender has a secret) |
//! | 11 | `Auth` | 32-byte proof |
//!
//! A link opens with `Hello` and `Challenge` each way, then `Auth` each way; the `Hello` keeps
//! version 1's layout so that nodes of different versions still refuse each other by name.
//! Validation: room names follow the client protocol's rule (1–64 bytes of
//! `[A-Za-z0-9._:-]`); a `Msg`'s frame must be a client `msg` frame (JSON text) for the same
//! room, at most the node's `max_frame_bytes`; a `Refuse` reason is kept without control
//! characters. Anything else is a [`WireError`], and the node closes the link.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use chatbench_protocol::{parse_client, validate_room, ClientFrame, MAX_ROOM_LEN};
use tungstenite::Utf8Bytes;

use super::auth::{NONCE_LEN, PROOF_LEN};

/// The cluster (mesh) protocol version sent in `Hello`; a peer with another one is refused.
/// Version 2: authenticated links (`Challenge`, `Auth`, frame tags) and validated frames.
pub const CLUSTER_PROTOCOL_VERSION: u16 = 2;
const MAGIC: &[u8; 4] = b"CBCL";
/// Bytes of a frame header: the length prefix and the type.
pub const HEADER: usize = 5;
/// Longest `Refuse` reason kept.
const MAX_REASON: usize = 512;
/// The largest frame (after the length prefix) read before a link is authenticated: the
/// handshake's frames and a `Refuse`, so a stranger cannot make a node allocate more.
pub const MAX_HANDSHAKE_FRAME: usize = 1 + MAX_REASON;
/// `Challenge` flag: the sender has a cluster secret.
pub const FLAG_SECRET: u8 = 1;

/// One frame between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame each way on a link.
    Hello {
        /// [`CLUSTER_PROTOCOL_VERSION`] of the sender.
        version: u16,
        /// The sender's node id.
        node_id: u64,
    },
    /// Second frame each way: the sender's half of the challenge.
    Challenge {
        /// Random per process (a restarted node has a new one).
        incarnation: u64,
        /// Fresh random bytes for this link.
        nonce: [u8; NONCE_LEN],
        /// [`FLAG_SECRET`] or 0.
        flags: u8,
    },
    /// Third frame each way: the sender's proof that it holds the secret.
    Auth([u8; PROOF_LEN]),
    /// The link is refused; why.
    Refuse(String),
    /// The sender's interest is empty (the full set follows as `Add`s).
    Reset,
    /// The sender has local members in this room.
    Add(Box<str>),
    /// The sender has no local members in this room any more.
    Remove(Box<str>),
    /// Barrier: answer with `SyncAck` of the same token.
    Sync(u64),
    /// Answer to `Sync`.
    SyncAck(u64),
    /// Heartbeat.
    Ping,
    /// A client's `msg` for `room`, byte-for-byte.
    Msg {
        /// The room.
        room: Box<str>,
        /// The client's frame, unchanged (a slice of the received buffer: no copy), checked
        /// to be a `msg` for `room`.
        frame: Utf8Bytes,
    },
}

/// A frame the peer sent that breaks the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix exceeds what this node accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// This node's limit.
        max: usize,
    },
    /// Unknown frame type byte.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// The payload does not fit its type.
    #[error("malformed {what} frame")]
    Malformed {
        /// The frame type.
        what: &'static str,
    },
    /// A room name the client protocol does not allow.
    #[error("{what} frame: invalid room name: {why}")]
    BadRoom {
        /// The frame type.
        what: &'static str,
        /// Which rule it breaks.
        why: String,
    },
    /// A `Msg` whose frame is not a client `msg` for its room.
    #[error("msg frame does not carry a client msg for its room: {0}")]
    BadMsg(String),
    /// A `Hello` without the magic bytes: not a chatbench node.
    #[error("not a chatbench cluster peer (bad hello magic)")]
    BadMagic,
}

/// The largest frame (after the length prefix) a node accepts, for a `max_frame_bytes`.
pub fn max_frame_len(max_frame_bytes: usize) -> usize {
    1 + 2 + MAX_ROOM_LEN + max_frame_bytes
}

fn header(out: &mut BytesMut, ty: u8, payload: usize) {
    // Payloads are bounded far below u32::MAX by the caller's limits.
    out.put_u32(u32::try_from(payload + 1).unwrap_or(u32::MAX));
    out.put_u8(ty);
}

/// Encodes a control frame.
pub fn encode(frame: &Frame) -> Bytes {
    let mut out = BytesMut::with_capacity(48);
    match frame {
        Frame::Hello { version, node_id } => {
            header(&mut out, 1, 4 + 2 + 8);
            out.put_slice(MAGIC);
            out.put_u16(*version);
            out.put_u64(*node_id);
        }
        Frame::Challenge {
            incarnation,
            nonce,
            flags,
        } => {
            header(&mut out, 10, 8 + NONCE_LEN + 1);
            out.put_u64(*incarnation);
            out.put_slice(nonce);
            out.put_u8(*flags);
        }
        Frame::Auth(proof) => {
            header(&mut out, 11, PROOF_LEN);
            out.put_slice(proof);
        }
        Frame::Refuse(reason) => {
            let mut end = reason.len().min(MAX_REASON);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            header(&mut out, 2, end);
            out.put_slice(&reason.as_bytes()[..end]);
        }
        Frame::Reset => header(&mut out, 3, 0),
        Frame::Add(room) => {
            header(&mut out, 4, room.len());
            out.put_slice(room.as_bytes());
        }
        Frame::Remove(room) => {
            header(&mut out, 5, room.len());
            out.put_slice(room.as_bytes());
        }
        Frame::Sync(t) => {
            header(&mut out, 6, 8);
            out.put_u64(*t);
        }
        Frame::SyncAck(t) => {
            header(&mut out, 7, 8);
            out.put_u64(*t);
        }
        Frame::Ping => header(&mut out, 8, 0),
        Frame::Msg { room, frame } => return encode_msg(room, frame.as_bytes()),
    }
    out.freeze()
}

/// Encodes a `Msg` (once per published message, then shared by every link).
pub fn encode_msg(room: &str, frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER + 2 + room.len() + frame.len());
    header(&mut out, 9, 2 + room.len() + frame.len());
    out.put_u16(u16::try_from(room.len()).unwrap_or(u16::MAX));
    out.put_slice(room.as_bytes());
    out.put_slice(frame);
    out.freeze()
}

/// Reads the length prefix; `Err` when it exceeds `max`.
pub fn frame_len(prefix: [u8; 4], max: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(WireError::Malformed { what: "empty" });
    }
    Ok(len)
}

fn room(b: &[u8], what: &'static str) -> Result<Box<str>, WireError> {
    let s = std::str::from_utf8(b).map_err(|_| WireError::BadRoom {
        what,
        why: "not UTF-8".into(),
    })?;
    validate_room(s).map_err(|e| WireError::BadRoom {
        what,
        why: e.to_string(),
    })?;
    Ok(s.into())
}

fn u64_of(mut b: Bytes, what: &'static str) -> Result<u64, WireError> {
    if b.len() != 8 {
        return Err(WireError::Malformed { what });
    }
    Ok(b.get_u64())
}

/// A refusal's reason as kept: at most [`MAX_REASON`] bytes, invalid UTF-8 and control
/// characters replaced (it is logged).
fn reason(b: &[u8]) -> String {
    // Cut again after the replacement: each invalid byte becomes U+FFFD, three bytes (found by
    // the fuzz target `wire`: a reason of 512 invalid bytes was kept as 1,536).
    let mut kept = String::new();
    for c in String::from_utf8_lossy(&b[..b.len().min(MAX_REASON)]).chars() {
        let c = if c.is_control() { '?' } else { c };
        if kept.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        kept.push(c);
    }
    kept
}

fn msg(mut body: Bytes) -> Result<Frame, WireError> {
    if body.len() < 2 {
        return Err(WireError::Malformed { what: "msg" });
    }
    let n = body.get_u16() as usize;
    if body.len() < n {
        return Err(WireError::Malformed { what: "msg" });
    }
    let r = room(&body.split_to(n), "msg")?;
    let frame =
        Utf8Bytes::try_from(body).map_err(|_| WireError::BadMsg("frame is not UTF-8".into()))?;
    match parse_client(&frame) {
        Ok(ClientFrame::Msg(m)) if *m.room == *r => {}
        Ok(ClientFrame::Msg(m)) => {
            return Err(WireError::BadMsg(format!(
                "its frame is for room {:?}, not {r:?}",
                m.room
            )))
        }
        Ok(_) => return Err(WireError::BadMsg("its frame is not a msg".into())),
        Err(e) => return Err(WireError::BadMsg(e.to_string())),
    }
    Ok(Frame::Msg { room: r, frame })
}

/// Decodes a frame body (what follows the length prefix: type and payload), validating it.
pub fn decode(mut body: Bytes) -> Result<Frame, WireError> {
    if body.is_empty() {
        return Err(WireError::Malformed { what: "empty" });
    }
    let ty = body.get_u8();
    Ok(match ty {
        1 => {
            if body.len() != 14 {
                return Err(WireError::Malformed { what: "hello" });
            }
            if &body[..4] != MAGIC {
                return Err(WireError::BadMagic);
            }
            body.advance(4);
            Frame::Hello {
                version: body.get_u16(),
                node_id: body.get_u64(),
            }
        }
        2 => Frame::Refuse(reason(&body)),
        3 if body.is_empty() => Frame::Reset,
        3 => return Err(WireError::Malformed { what: "reset" }),
        4 => Frame::Add(room(&body, "add")?),
        5 => Frame::Remove(room(&body, "remove")?),
        6 => Frame::Sync(u64_of(body, "sync")?),
        7 => Frame::SyncAck(u64_of(body, "sync-ack")?),
        8 if body.is_empty() => Frame::Ping,
        8 => return Err(WireError::Malformed { what: "ping" }),
        9 => msg(body)?,
        10 => {
            if body.len() != 8 + NONCE_LEN + 1 {
                return Err(WireError::Malformed { what: "challenge" });
            }
            let incarnation = body.get_u64();
            let mut nonce = [0u8; NONCE_LEN];
            body.copy_to_slice(&mut nonce);
            Frame::Challenge {
                incarnation,
                nonce,
                flags: body.get_u8(),
            }
        }
        11 => {
            if body.len() != PROOF_LEN {
                return Err(WireError::Malformed { what: "auth" });
            }
            let mut proof = [0u8; PROOF_LEN];
            body.copy_to_slice(&mut proof);
            Frame::Auth(proof)
        }
        other => return Err(WireError::UnknownType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_refusal_reason_of_invalid_bytes_is_kept_within_the_bound() {
        let mut body = vec![2u8];
        body.extend(std::iter::repeat_n(0xff, MAX_REASON));
        let Ok(Frame::Refuse(r)) = decode(Bytes::from(body)) else {
            panic!("a refuse frame");
        };
        assert!(r.len() <= MAX_REASON, "{} bytes kept", r.len());
        assert_eq!(
            decode(encode(&Frame::Refuse(r.clone())).slice(4..)),
            Ok(Frame::Refuse(r))
        );
    }

    fn round_trip(f: Frame) {
        let bytes = encode(&f);
        let len = frame_len(bytes[..4].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(decode(bytes.slice(4..)), Ok(f));
    }

    const MSG: &str = r#"{"t":"msg","room":"r1","from":"a","seq":1,"ts":2,"body":"x"}"#;

    #[test]
    fn every_frame_round_trips() {
        round_trip(Frame::Hello {
            version: CLUSTER_PROTOCOL_VERSION,
            node_id: 42,
        });
        round_trip(Frame::Challenge {
            incarnation: 7,
            nonce: [9; NONCE_LEN],
            flags: FLAG_SECRET,
        });
        round_trip(Frame::Auth([3; PROOF_LEN]));
        round_trip(Frame::Refuse("version 2 != 1".into()));
        round_trip(Frame::Reset);
        round_trip(Frame::Add("r1".into()));
        round_trip(Frame::Remove("r1".into()));
        round_trip(Frame::Sync(7));
        round_trip(Frame::SyncAck(7));
        round_trip(Frame::Ping);
        round_trip(Frame::Msg {
            room: "r1".into(),
            frame: Utf8Bytes::from_static(MSG),
        });
    }

    #[test]
    fn the_hello_keeps_version_1s_layout() {
        // A version-1 node reads this hello and refuses it by version, not as garbage.
        let h = encode(&Frame::Hello {
            version: CLUSTER_PROTOCOL_VERSION,
            node_id: 5,
        });
        assert_eq!(
            &h[..],
            b"\x00\x00\x00\x0f\x01CBCL\x00\x02\x00\x00\x00\x00\x00\x00\x00\x05"
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            frame_len(u32::MAX.to_be_bytes(), 1000),
            Err(WireError::TooLarge { .. })
        ));
        assert!(frame_len([0; 4], 1000).is_err());
        assert_eq!(
            decode(Bytes::from_static(&[99])),
            Err(WireError::UnknownType(99))
        );
        assert_eq!(
            decode(Bytes::from_static(
                b"\x01XXXX\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01"
            )),
            Err(WireError::BadMagic)
        );
        assert!(decode(Bytes::from_static(b"\x09\x00\x05ab")).is_err());
        assert!(decode(Bytes::from_static(b"\x04")).is_err());
        assert!(decode(Bytes::from_static(b"\x04\xff\xfe")).is_err());
        assert!(decode(Bytes::from_static(b"\x06\x00")).is_err());
        assert!(decode(Bytes::from_static(b"\x08x")).is_err());
        assert!(decode(Bytes::from_static(b"\x0a\x00")).is_err());
        assert!(decode(Bytes::from_static(b"\x0b\x00")).is_err());
        let long = vec![b'a'; MAX_ROOM_LEN + 1];
        assert!(decode(Bytes::from([&[4u8][..], &long].concat())).is_err());
    }

    #[test]
    fn rooms_and_msg_bodies_are_validated() {
        // Room names as the client protocol allows them.
        assert!(matches!(
            decode(Bytes::from_static(b"\x04a b")),
            Err(WireError::BadRoom { what: "add", .. })
        ));
        assert!(matches!(
            decode(Bytes::from_static(b"\x05<script>")),
            Err(WireError::BadRoom { what: "remove", .. })
        ));
        let m = |room: &str, frame: &str| decode(encode_msg(room, frame.as_bytes()).slice(4..));
        assert!(m("r1", MSG).is_ok());
        // Not JSON, not a msg, another room, not UTF-8.
        assert!(matches!(m("r1", "hello"), Err(WireError::BadMsg(_))));
        assert!(matches!(
            m("r1", r#"{"t":"join","room":"r1"}"#),
            Err(WireError::BadMsg(_))
        ));
        assert!(matches!(
            m("r2", MSG),
            Err(WireError::BadMsg(e)) if e.contains("r1")
        ));
        assert!(matches!(
            decode(Bytes::from_static(b"\x09\x00\x02r1\xff")),
            Err(WireError::BadMsg(_))
        ));
        // A refusal's control characters do not reach the log.
        assert_eq!(
            decode(Bytes::from_static(b"\x02bad\nline\x1b[31m")),
            Ok(Frame::Refuse("bad?line?[31m".into()))
        );
    }

    /// Decodes `bytes` as a stream of frames, the way a link reads them: a prefix, the length
    /// check, then the body.
    fn decode_stream(bytes: &[u8], max: usize) -> usize {
        let mut rest = bytes;
        let mut frames = 0;
        while rest.len() >= 4 {
            let Ok(len) = frame_len(rest[..4].try_into().unwrap(), max) else {
                break;
            };
            // The allocation a link makes for this frame is bounded by `max`.
            assert!(len <= max);
            if rest.len() < 4 + len {
                break;
            }
            if decode(Bytes::copy_from_slice(&rest[4..4 + len])).is_err() {
                break;
            }
            frames += 1;
            rest = &rest[4 + len..];
        }
        frames
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Arbitrary bytes never panic the decoder, and what it allocates is bounded by the
        /// announced length, itself bounded by the limit.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_stream(&bytes, max_frame_len(64));
            let _ = decode(Bytes::from(bytes.clone()));
            if bytes.len() >= 4 {
                let p: [u8; 4] = bytes[..4].try_into().unwrap();
                if let Ok(n) = frame_len(p, MAX_HANDSHAKE_FRAME) {
                    prop_assert!(n <= MAX_HANDSHAKE_FRAME);
                }
            }
        }

        /// Frames built from arbitrary fields with a valid type byte: decoded or refused,
        /// never a panic, and what decodes re-encodes to the same bytes (except a refusal's
        /// cleaned reason).
        #[test]
        fn typed_frames_decode_or_fail_cleanly(
            ty in 0u8..14,
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut body = vec![ty];
            body.extend_from_slice(&payload);
            if let Ok(f) = decode(Bytes::from(body.clone())) {
                if !matches!(f, Frame::Refuse(_)) {
                    prop_assert_eq!(&encode(&f)[4..], &body[..]);
                }
            }
        }

        /// Valid frames survive being embedded in a stream with arbitrary trailing bytes.
        #[test]
        fn a_valid_msg_decodes_whatever_follows(
            room in "[A-Za-z0-9._:-]{1,64}",
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let frame = format!(r#"{{"t":"msg","room":"{room}","body":1}}"#);
            let mut stream = encode_msg(&room, frame.as_bytes()).to_vec();
            stream.extend_from_slice(&tail);
            prop_assert!(decode_stream(&stream, max_frame_len(1024)) >= 1);
        }
    }
}
