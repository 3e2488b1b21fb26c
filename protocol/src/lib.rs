//! chatbench wire protocol v1: the frames that clients and servers exchange as WebSocket text
//! messages, how to parse them and how to encode them. No I/O lives here.
//!
//! Parsing borrows from the input: a `msg` frame is read into [`MsgRef`], whose `body` is a
//! borrowed slice of the original text, so a server can validate and route a
//! message without copying its body, and then forward the *original bytes* to every member.
//! `docs/protocol.md` is the normative description; this crate is its reference implementation.

mod encode;
mod error;
mod parse;

pub use encode::{encode_error, encode_join, encode_joined, encode_leave, encode_msg, MsgWriter};
pub use error::{ErrorCode, ParseError};
pub use parse::{
    parse_client, parse_server, validate_room, ClientFrame, MsgRef, ServerFrame, ServerMsg,
};
pub use serde_json::value::RawValue;

/// The protocol version this crate implements (announced nowhere on the wire in v1; recorded in
/// results so a v2 can be told apart).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 64;

/// WebSocket close codes used by chatbench servers (RFC 6455 §7.4.1).
pub mod close_code {
    /// Server going away: graceful shutdown.
    pub const GOING_AWAY: u16 = 1001;
    /// WebSocket protocol error (bad framing, bad masking, bad opcode).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Unsupported data: a binary message.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Invalid frame payload data: a text message that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation: malformed protocol frame, or a slow consumer being disconnected.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// Message too big: over the server's max frame size.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}
