//! Peer errors of the AMQP 0-9-1 codec: [`DecodeError`] (a frame payload that is not a valid
//! method, content header or field table) and [`FrameError`] (bytes that are not a valid
//! frame). Both are data: the connection maps them to a reply code and a connection.close.
//! Never used for bugs or I/O.

/// Why a frame payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A field runs past the end of the payload (or of its enclosing table).
    #[error("field runs past the end of the frame")]
    Truncated,
    /// Bytes remain after the last field.
    #[error("{0} bytes after the last field")]
    TrailingBytes(usize),
    /// A short string (or table key) that is not UTF-8.
    #[error("short string is not UTF-8")]
    InvalidUtf8,
    /// The class/method id pair names no method of the spec.
    #[error("unknown method: class {class_id}, method {method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
    /// A field value type tag this codec does not know.
    #[error("unknown field value type {0:#04x}")]
    UnknownFieldType(u8),
    /// Tables/arrays nested deeper than [`crate::TABLE_DEPTH_MAX`].
    #[error("field tables nested too deeply")]
    TooDeep,
    /// A content header for a class without properties, or with unknown property flags.
    #[error("malformed content header: {0}")]
    BadContentHeader(&'static str),
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared payload size exceeds the negotiated frame-max (checked before buffering).
    #[error("frame payload of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: u32, max: u32 },
    /// The octet after the payload is not FRAME_END (0xCE).
    #[error("frame end octet {0:#04x}, expected 0xce")]
    BadFrameEnd(u8),
    /// A frame type other than method, header, body or heartbeat.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// The payload of a well-delimited frame does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}
