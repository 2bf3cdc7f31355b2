//! What can be wrong with a peer's bytes, as data (STYLE §4): each [`DecodeError`] maps to the
//! MQTT 5.0 reason code the session answers with before it closes. Pure.

use crate::reason::ReasonCode;

/// A packet that cannot be accepted. The session answers with [`DecodeError::reason`]
/// (CONNACK before CONNECT completes, DISCONNECT after; 3.1.1 just closes) and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed remaining length")]
    BadRemainingLength,
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge { size: usize, max: usize },
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    #[error("invalid fixed-header flags {flags:#06b} for packet type {packet}")]
    BadFlags { packet: u8, flags: u8 },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("invalid UTF-8 string")]
    BadUtf8,
    #[error("invalid topic name")]
    BadTopicName,
    #[error("invalid topic filter")]
    BadTopicFilter,
    #[error("unsupported protocol name or level {0}")]
    UnsupportedProtocol(u8),
}

impl DecodeError {
    /// The reason code a 5.0 peer gets for this error.
    pub fn reason(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::Protocol(_) | DecodeError::UnknownPacketType(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::BadTopicName => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::BadTopicFilter => ReasonCode::TOPIC_FILTER_INVALID,
            DecodeError::UnsupportedProtocol(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }
}
