//! Error codes carried by the server's `error` frame and the parse errors that produce them.
//!
//! Each code says whether it ends the connection and with which close code, so every server
//! architecture applies the same policy from one table.

use thiserror::Error;

use crate::close_code;

/// The `code` of a server `error` frame. The string forms are part of the wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The text is not a JSON object. Fatal: close 1008.
    BadJson,
    /// `t` names a frame type this server does not know. Not fatal (forward compatibility).
    UnknownType,
    /// A required field is missing or has the wrong JSON type. Fatal: close 1008.
    BadField,
    /// A room name is empty, too long or uses characters outside `[A-Za-z0-9._:-]`. Fatal: 1008.
    BadRoom,
    /// `msg` or `leave` for a room the connection has not joined. Not fatal.
    NotJoined,
    /// `join` beyond the per-connection room limit. Not fatal.
    TooManyRooms,
    /// A message over the server's max frame size. Fatal: close 1009.
    FrameTooLarge,
    /// A text message that is not valid UTF-8. Fatal: close 1007.
    InvalidUtf8,
    /// A binary message: v1 is text only. Fatal: close 1003.
    BinaryFrame,
    /// The connection's outbound queue overflowed under the `disconnect` policy. Fatal: 1008.
    SlowConsumer,
    /// WebSocket framing error (bad opcode, unmasked client frame, …). Fatal: close 1002.
    ProtocolError,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadField,
        ErrorCode::BadRoom,
        ErrorCode::NotJoined,
        ErrorCode::TooManyRooms,
        ErrorCode::FrameTooLarge,
        ErrorCode::InvalidUtf8,
        ErrorCode::BinaryFrame,
        ErrorCode::SlowConsumer,
        ErrorCode::ProtocolError,
    ];

    /// The wire form of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadField => "bad_field",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::ProtocolError => "protocol_error",
        }
    }

    /// Parses the wire form.
    pub fn from_wire(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The close code that follows the error frame, or `None` when the connection stays open.
    pub fn close_code(self) -> Option<u16> {
        match self {
            ErrorCode::UnknownType | ErrorCode::NotJoined | ErrorCode::TooManyRooms => None,
            ErrorCode::BadJson
            | ErrorCode::BadField
            | ErrorCode::BadRoom
            | ErrorCode::SlowConsumer => Some(close_code::POLICY_VIOLATION),
            ErrorCode::FrameTooLarge => Some(close_code::MESSAGE_TOO_BIG),
            ErrorCode::InvalidUtf8 => Some(close_code::INVALID_PAYLOAD),
            ErrorCode::BinaryFrame => Some(close_code::UNSUPPORTED_DATA),
            ErrorCode::ProtocolError => Some(close_code::PROTOCOL_ERROR),
        }
    }

    /// Whether the server closes the connection after sending this error.
    pub fn is_fatal(self) -> bool {
        self.close_code().is_some()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame could not be parsed. Each variant maps to one [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Not a JSON object (syntax error, trailing data, or another JSON type).
    #[error("not a JSON object: {0}")]
    BadJson(String),
    /// The object has no string field `t`.
    #[error("missing string field \"t\" (the frame type)")]
    MissingType,
    /// `t` is a string this side does not know.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// A required field is absent or of the wrong JSON type.
    #[error("frame {frame:?}: field {field:?} {problem}")]
    BadField {
        /// The frame type.
        frame: &'static str,
        /// The field name.
        field: &'static str,
        /// What is wrong, e.g. "is missing" or "must be a non-negative integer".
        problem: &'static str,
    },
    /// The room name breaks the naming rule.
    #[error("bad room name: {0}")]
    BadRoom(&'static str),
}

impl ParseError {
    /// The error code a server reports for this parse error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ParseError::BadJson(_) => ErrorCode::BadJson,
            ParseError::MissingType | ParseError::BadField { .. } => ErrorCode::BadField,
            ParseError::UnknownType(_) => ErrorCode::UnknownType,
            ParseError::BadRoom(_) => ErrorCode::BadRoom,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_are_unique() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(c.as_str()), Some(c));
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn fatal_codes_use_the_documented_close_codes() {
        assert_eq!(ErrorCode::FrameTooLarge.close_code(), Some(1009));
        assert_eq!(ErrorCode::InvalidUtf8.close_code(), Some(1007));
        assert_eq!(ErrorCode::BinaryFrame.close_code(), Some(1003));
        assert_eq!(ErrorCode::BadJson.close_code(), Some(1008));
        assert_eq!(ErrorCode::ProtocolError.close_code(), Some(1002));
        assert!(!ErrorCode::NotJoined.is_fatal());
        assert!(!ErrorCode::UnknownType.is_fatal());
        assert!(!ErrorCode::TooManyRooms.is_fatal());
    }
}
