//! Engine errors that reach a client. Each kind maps to the protocols' own codes (AMQP reply
//! codes; STOMP ERROR messages), so a gateway never invents its own taxonomy.

use thiserror::Error;

/// The class of an engine error, named after the AMQP 0-9-1 reply it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 403
    AccessRefused,
    /// 404
    NotFound,
    /// 405
    ResourceLocked,
    /// 406
    PreconditionFailed,
    /// 506 / limits hit
    ResourceError,
    /// 541: the broker is shutting down or a shard is gone
    InternalError,
}

impl ErrorKind {
    pub fn amqp_code(self) -> u16 {
        match self {
            ErrorKind::AccessRefused => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::ResourceLocked => 405,
            ErrorKind::PreconditionFailed => 406,
            ErrorKind::ResourceError => 506,
            ErrorKind::InternalError => 541,
        }
    }
}

/// An error with a human-readable message, as sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct EngineError {
    pub kind: ErrorKind,
    pub message: String,
}

impl EngineError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EngineError { kind, message: message.into() }
    }
}
