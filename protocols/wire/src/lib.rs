//! Shared protocol-level vocabulary for every `protocols/*` crate and the engine.
//!
//! Owns: [`Limits`] (every bound a peer can push against, in one place, named unit-first),
//! [`Detection`] (how one port tells protocols apart from the first bytes) and [`Protocol`].
//! Pure data: no I/O, no clock, no runtime. Lives on every shard (copied, never shared).

mod limits;

pub use limits::{Limits, LimitsError};

/// A wire protocol Ferry speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Stomp,
    Amqp091,
    Amqp10,
    Mqtt,
    OpenWire,
    WebSocket,
}

impl Protocol {
    /// The name used on the command line (`--listen stomp=127.0.0.1:61613`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Stomp => "stomp",
            Protocol::Amqp091 => "amqp",
            Protocol::Amqp10 => "amqp10",
            Protocol::Mqtt => "mqtt",
            Protocol::OpenWire => "openwire",
            Protocol::WebSocket => "ws",
        }
    }
}

/// The answer of a protocol's `detect(prefix)`: can these first bytes start this protocol?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// The prefix is this protocol's.
    Match,
    /// The prefix cannot be this protocol's.
    NoMatch,
    /// Too few bytes to tell; `need` more at least.
    Incomplete { need: usize },
}
