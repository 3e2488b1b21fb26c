//! How a tungstenite read error ends a connection: the peer left (a disconnect reason, nothing
//! to send) or the peer broke the protocol (an error code and reason to send before the close
//! frame, as a [`Refusal`]). Shared by the architectures built on tungstenite so that they
//! classify alike.

use chatbench_protocol::ErrorCode;
use tungstenite::error::ProtocolError;
use tungstenite::Error as WsError;

use crate::chat::Refusal;
use crate::metrics::DisconnectReason;

/// The outcome of a read error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFailure {
    /// The peer closed or the connection broke: count it, send nothing.
    Gone(DisconnectReason),
    /// The peer broke the protocol: send this error and the close code it implies.
    Fatal(Refusal),
}

/// Classifies an error returned by a tungstenite read.
pub fn classify_read_error(e: WsError) -> ReadFailure {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            ReadFailure::Gone(DisconnectReason::ClientClose)
        }
        WsError::Io(_) | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ReadFailure::Gone(DisconnectReason::IoError)
        }
        WsError::Capacity(c) => {
            ReadFailure::Fatal(Refusal::new(ErrorCode::FrameTooLarge, c.to_string()))
        }
        WsError::Utf8(_) => ReadFailure::Fatal(Refusal::new(
            ErrorCode::InvalidUtf8,
            "text message is not valid UTF-8",
        )),
        other => ReadFailure::Fatal(Refusal::new(ErrorCode::ProtocolError, other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_protocol_table() {
        assert_eq!(
            classify_read_error(WsError::ConnectionClosed),
            ReadFailure::Gone(DisconnectReason::ClientClose)
        );
        let io = WsError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(
            classify_read_error(io),
            ReadFailure::Gone(DisconnectReason::IoError)
        );
        let cap = WsError::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size: 10,
            max_size: 5,
        });
        assert!(matches!(
            classify_read_error(cap),
            ReadFailure::Fatal(Refusal {
                code: ErrorCode::FrameTooLarge,
                ..
            })
        ));
        let proto = WsError::Protocol(ProtocolError::UnmaskedFrameFromClient);
        assert!(matches!(
            classify_read_error(proto),
            ReadFailure::Fatal(Refusal {
                code: ErrorCode::ProtocolError,
                ..
            })
        ));
    }
}
