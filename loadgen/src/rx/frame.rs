//! The WebSocket frame codec of the epoll receive path, client side (RFC 6455 §5): reads the
//! header of a server → client frame (never masked, no extensions), and writes the masked
//! control frames a client answers with (pong, close). I/O-free; the rules follow tungstenite's,
//! so that the tokio path and this one refuse the same frames.

use thiserror::Error;

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// The rest of a fragmented message.
    Continuation,
    /// A text message (or its first fragment).
    Text,
    /// A binary message (or its first fragment).
    Binary,
    /// The peer closes.
    Close,
    /// A keep-alive the client answers with a pong.
    Ping,
    /// An answer to a ping (or unsolicited); ignored.
    Pong,
}

impl Opcode {
    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A complete frame's header: where its payload is in the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Whether this is the last frame of its message.
    pub fin: bool,
    /// What it is.
    pub opcode: Opcode,
    /// Header length: the payload starts here.
    pub header_len: usize,
    /// Payload length.
    pub payload_len: usize,
}

impl Header {
    /// Header and payload together.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Why a server's frame is refused (the connection ends; the tokio path counts it as a reset).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// RSV1–3 set: no extension was negotiated.
    #[error("reserved bits set ({0:#x}) without a negotiated extension")]
    ReservedBits(u8),
    /// A server must not mask its frames.
    #[error("masked frame from the server")]
    Masked,
    /// Opcodes 3–7 and 11–15 are reserved.
    #[error("reserved opcode {0}")]
    ReservedOpcode(u8),
    /// Control frames carry at most 125 bytes and are never fragmented.
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControl,
    /// A 64-bit length with its top bit set.
    #[error("frame length out of range")]
    BadLength,
    /// Larger than `[client] max_message_size`.
    #[error("frame of {len} bytes over the {max}-byte limit")]
    TooLarge {
        /// Its announced payload length.
        len: u64,
        /// The limit.
        max: usize,
    },
}

/// Reads the header at the start of `buf`: `Ok(None)` until the header and its payload are all
/// there. A frame larger than `max` is refused as soon as its length is known, so a connection
/// never buffers more than one frame of at most `max` bytes.
pub fn parse(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let rsv = b0 & 0x70;
    if rsv != 0 {
        return Err(FrameError::ReservedBits(rsv));
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let opcode = match b0 & 0x0f {
        0 => Opcode::Continuation,
        1 => Opcode::Text,
        2 => Opcode::Binary,
        8 => Opcode::Close,
        9 => Opcode::Ping,
        10 => Opcode::Pong,
        other => return Err(FrameError::ReservedOpcode(other)),
    };
    let fin = b0 & 0x80 != 0;
    let (len, header_len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(FrameError::BadControl);
    }
    if len >> 63 != 0 {
        return Err(FrameError::BadLength);
    }
    if len > max as u64 {
        return Err(FrameError::TooLarge { len, max });
    }
    let header = Header {
        fin,
        opcode,
        header_len,
        payload_len: len as usize,
    };
    Ok((buf.len() >= header.frame_len()).then_some(header))
}

/// Appends a masked client frame (FIN set) with `opcode` (`0x1` text, `0x8` close, `0xA` pong)
/// and `payload` to `out`, masked with `mask`.
pub fn write_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | (opcode & 0x0f));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `bytes` with the repeated 4-byte `mask` (RFC 6455 §5.3), eight bytes at a time: the
/// send path masks every message it writes.
fn apply_mask(bytes: &mut [u8], mask: [u8; 4]) {
    let m4 = u32::from_ne_bytes(mask);
    let m8 = u64::from(m4) | (u64::from(m4) << 32);
    let mut chunks = bytes.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(word) ^ m8).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// A close frame's status as the results label it (tungstenite's rules): its code, `1002` for
/// a code a peer may not send, `none` without a payload. `Err` for a 1-byte payload or a reason
/// that is not UTF-8 (a protocol error).
pub fn close_label(payload: &[u8]) -> Result<String, FrameError> {
    match payload {
        [] => Ok("none".into()),
        [_] => Err(FrameError::BadControl),
        [hi, lo, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::BadControl);
            }
            let code = u16::from_be_bytes([*hi, *lo]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999);
            Ok(if allowed { code } else { 1002 }.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_eight_bytes_at_a_time_is_the_bytewise_xor() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let payload: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let mut out = Vec::new();
            write_masked(&mut out, 0x1, &payload, mask);
            let body = &out[out.len() - len..];
            let want: Vec<u8> = payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(body, &want[..], "{len}");
        }
    }

    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![b0];
        let len = payload.len();
        if len < 126 {
            v.push(len as u8);
        } else if len <= 65535 {
            v.push(126);
            v.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            v.push(127);
            v.extend_from_slice(&(len as u64).to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn every_length_form_is_read_and_incomplete_frames_wait() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let f = frame(0x81, &vec![b'a'; len]);
            let h = parse(&f, 1 << 20).expect("valid").expect("complete");
            assert_eq!(h.payload_len, len);
            assert_eq!(h.frame_len(), f.len());
            assert!(h.fin);
            assert_eq!(h.opcode, Opcode::Text);
            for cut in [0, 1, h.header_len - 1, f.len() - 1] {
                if cut < f.len() {
                    assert_eq!(parse(&f[..cut], 1 << 20), Ok(None), "len {len} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn protocol_violations_are_refused() {
        assert_eq!(parse(&[0xC1, 0], 100), Err(FrameError::ReservedBits(0x40)));
        assert_eq!(parse(&[0x81, 0x80], 100), Err(FrameError::Masked));
        assert_eq!(parse(&[0x83, 0], 100), Err(FrameError::ReservedOpcode(3)));
        assert_eq!(parse(&[0x8B, 0], 100), Err(FrameError::ReservedOpcode(11)));
        // A fragmented ping, and a 126-byte ping.
        assert_eq!(parse(&[0x09, 0], 100), Err(FrameError::BadControl));
        assert_eq!(
            parse(&frame(0x89, &[0; 126]), 1000),
            Err(FrameError::BadControl)
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse(&huge, 100), Err(FrameError::BadLength));
    }

    #[test]
    fn an_oversize_frame_is_refused_from_its_header_alone() {
        let f = frame(0x81, &[b'x'; 1000]);
        assert_eq!(
            parse(&f[..4], 999),
            Err(FrameError::TooLarge {
                len: 1000,
                max: 999
            })
        );
        assert!(parse(&f, 1000).expect("at the limit").is_some());
    }

    #[test]
    fn masked_frames_unmask_to_their_payload() {
        for len in [0usize, 5, 125, 126, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_masked(&mut out, 0xA, &payload, [1, 2, 3, 4]);
            assert_eq!(out[0], 0x8A);
            assert_ne!(out[1] & 0x80, 0, "masked");
            let (hl, plen) = match out[1] & 0x7f {
                126 => (4, u16::from_be_bytes([out[2], out[3]]) as usize),
                127 => (10, len),
                n => (2, n as usize),
            };
            assert_eq!(plen, len);
            let mask = &out[hl..hl + 4];
            let back: Vec<u8> = out[hl + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(back, payload);
        }
    }

    #[test]
    fn close_labels_follow_tungstenite() {
        assert_eq!(close_label(&[]).as_deref(), Ok("none"));
        assert_eq!(close_label(&[0x03, 0xE8]).as_deref(), Ok("1000"));
        assert_eq!(close_label(b"\x03\xf0bye").as_deref(), Ok("1008"));
        assert_eq!(close_label(&[0x0F, 0xA0]).as_deref(), Ok("4000"));
        // 1005 and 999 may not be sent by a peer: a protocol violation, labelled 1002.
        assert_eq!(close_label(&[0x03, 0xED]).as_deref(), Ok("1002"));
        assert_eq!(close_label(&[0x03, 0xE7]).as_deref(), Ok("1002"));
        assert!(close_label(&[0x03]).is_err());
        assert!(close_label(&[0x03, 0xE8, 0xff]).is_err());
    }
}
