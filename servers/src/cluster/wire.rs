//! The mesh backplane's wire format between cluster nodes: I/O-free encoding and decoding.
//!
//! Every frame is `[u32 big-endian length of what follows][u8 type][payload]`; the length is
//! checked against a maximum before anything is allocated. Types:
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
//!
//! Room names are bounded by the client protocol's room limit; a `Msg`'s frame by the node's
//! `max_frame_bytes`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use chatbench_protocol::MAX_ROOM_LEN;

/// The cluster (mesh) protocol version sent in `Hello`; a peer with another one is refused.
pub const CLUSTER_PROTOCOL_VERSION: u16 = 1;
const MAGIC: &[u8; 4] = b"CBCL";
/// Bytes of a frame header: the length prefix and the type.
pub const HEADER: usize = 5;
/// Longest `Refuse` reason kept.
const MAX_REASON: usize = 512;

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
        /// The client's frame, unchanged (a slice of the received buffer: no copy).
        frame: Bytes,
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
    let mut out = BytesMut::with_capacity(32);
    match frame {
        Frame::Hello { version, node_id } => {
            header(&mut out, 1, 4 + 2 + 8);
            out.put_slice(MAGIC);
            out.put_u16(*version);
            out.put_u64(*node_id);
        }
        Frame::Refuse(reason) => {
            let r = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
            header(&mut out, 2, r.len());
            out.put_slice(r);
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
        Frame::Msg { room, frame } => return encode_msg(room, frame),
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

fn room(b: Bytes, what: &'static str) -> Result<Box<str>, WireError> {
    if b.is_empty() || b.len() > MAX_ROOM_LEN {
        return Err(WireError::Malformed { what });
    }
    std::str::from_utf8(&b)
        .map(Into::into)
        .map_err(|_| WireError::Malformed { what })
}

fn u64_of(mut b: Bytes, what: &'static str) -> Result<u64, WireError> {
    if b.len() != 8 {
        return Err(WireError::Malformed { what });
    }
    Ok(b.get_u64())
}

/// Decodes a frame body (what follows the length prefix: type and payload).
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
        2 => Frame::Refuse(String::from_utf8_lossy(&body[..body.len().min(MAX_REASON)]).into()),
        3 => Frame::Reset,
        4 => Frame::Add(room(body, "add")?),
        5 => Frame::Remove(room(body, "remove")?),
        6 => Frame::Sync(u64_of(body, "sync")?),
        7 => Frame::SyncAck(u64_of(body, "sync-ack")?),
        8 => Frame::Ping,
        9 => {
            if body.len() < 2 {
                return Err(WireError::Malformed { what: "msg" });
            }
            let n = body.get_u16() as usize;
            if body.len() < n {
                return Err(WireError::Malformed { what: "msg" });
            }
            let r = room(body.split_to(n), "msg")?;
            Frame::Msg {
                room: r,
                frame: body,
            }
        }
        other => return Err(WireError::UnknownType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let bytes = encode(&f);
        let len = frame_len(bytes[..4].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(decode(bytes.slice(4..)), Ok(f));
    }

    #[test]
    fn every_frame_round_trips() {
        round_trip(Frame::Hello {
            version: CLUSTER_PROTOCOL_VERSION,
            node_id: 42,
        });
        round_trip(Frame::Refuse("version 2 != 1".into()));
        round_trip(Frame::Reset);
        round_trip(Frame::Add("r1".into()));
        round_trip(Frame::Remove("r1".into()));
        round_trip(Frame::Sync(7));
        round_trip(Frame::SyncAck(7));
        round_trip(Frame::Ping);
        round_trip(Frame::Msg {
            room: "r1".into(),
            frame: Bytes::from_static(br#"{"t":"msg","room":"r1"}"#),
        });
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
        let long = vec![b'a'; MAX_ROOM_LEN + 1];
        assert!(decode(Bytes::from([&[4u8][..], &long].concat())).is_err());
    }
}
