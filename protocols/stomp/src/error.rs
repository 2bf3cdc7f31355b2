//! Peer errors of the STOMP codec and session: [`FrameError`] (bytes that are not a valid
//! frame) and the crate-internal [`Rejection`] (a valid frame the session refuses), both of
//! which become an ERROR frame and a close. Never used for bugs or I/O; pure data, no limits.

/// Why bytes from a peer are not a valid STOMP frame. Every variant ends the connection
/// with an ERROR frame whose `message` header is the variant's display text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The command line names no STOMP command (the name, truncated, is kept for the detail).
    #[error("Unknown STOMP command")]
    UnknownCommand(String),
    /// The body (or its declared `content-length`) exceeds `frame_size_bytes_max`.
    #[error("frame too large")]
    FrameTooLarge,
    /// The header section exceeds `frame_header_bytes_max`.
    #[error("frame header section too large")]
    HeadersTooLarge,
    /// The frame has more than `frame_header_count_max` headers.
    #[error("too many headers")]
    TooManyHeaders,
    /// A header line without `:`.
    #[error("malformed header line")]
    MalformedHeader,
    /// An escape sequence the negotiated version does not define (e.g. `\t`).
    #[error("undefined escape sequence in header")]
    InvalidEscape,
    /// A header name or value that is not UTF-8.
    #[error("header is not valid UTF-8")]
    InvalidUtf8,
    /// A `content-length` that is not a decimal byte count.
    #[error("malformed content-length header")]
    BadContentLength,
    /// The byte after `content-length` bytes of body is not NUL.
    #[error("frame body not terminated by NUL")]
    MissingNul,
    /// A NUL inside the header section, or a CR not followed by LF between frames.
    #[error("malformed frame")]
    Malformed,
}

impl FrameError {
    /// The ERROR frame body explaining this error.
    pub fn detail(&self) -> String {
        match self {
            FrameError::UnknownCommand(name) => format!("Could not interpret command {name:?}"),
            FrameError::FrameTooLarge => "The frame body exceeds the broker's limit".to_owned(),
            FrameError::HeadersTooLarge => "The frame headers exceed the broker's limit".to_owned(),
            FrameError::TooManyHeaders => "The frame has more headers than allowed".to_owned(),
            FrameError::MalformedHeader => "A header line has no ':' separator".to_owned(),
            FrameError::InvalidEscape => "Header contains an undefined escape sequence".to_owned(),
            FrameError::InvalidUtf8 => "Header names and values must be UTF-8".to_owned(),
            FrameError::BadContentLength => "content-length must be a byte count".to_owned(),
            FrameError::MissingNul => "Expected NUL after content-length bytes of body".to_owned(),
            FrameError::Malformed => "The bytes do not form a STOMP frame".to_owned(),
        }
    }
}

/// A well-formed frame the session refuses; becomes an ERROR frame and a close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The ERROR frame's `message` header.
    pub message: String,
    /// The ERROR frame's body.
    pub detail: String,
    /// The refused frame's `receipt`, echoed as `receipt-id`.
    pub receipt: Option<String>,
    /// Extra headers of the ERROR frame (e.g. `version` on a failed negotiation).
    pub headers: Vec<(String, String)>,
}

impl Rejection {
    pub fn new(message: impl Into<String>, detail: impl Into<String>) -> Rejection {
        Rejection { message: message.into(), detail: detail.into(), receipt: None, headers: Vec::new() }
    }

    pub fn with_receipt(mut self, receipt: Option<&str>) -> Rejection {
        self.receipt = receipt.map(str::to_owned);
        self
    }
}

impl From<FrameError> for Rejection {
    fn from(error: FrameError) -> Rejection {
        Rejection::new(error.to_string(), error.detail())
    }
}
