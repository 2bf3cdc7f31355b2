//! `ferry-amqp091`: the AMQP 0-9-1 codec and sans-IO server connection.
//!
//! Owns the wire format — methods, constants and content properties generated from
//! RabbitMQ's spec JSON ([`generated`], committed; `tests/generated.rs` fails when
//! regeneration would change it), field tables ([`FieldTable`]), frames ([`frame`]) and content
//! headers ([`ContentHeader`]) — protocol detection ([`detect`]) and one connection's state
//! machine ([`Connection`]), which turns bytes into [`Event`]s for the engine and the engine's
//! answers into bytes. Pure: no I/O, no async, no clock (time comes in as `Instant`), no
//! runtime; never panics on peer input. Frame sizes are checked against the negotiated
//! frame-max before anything is buffered; every other bound comes from `ferry_wire::Limits`.

mod connection;
mod content;
mod error;
mod event;
pub mod frame;
#[rustfmt::skip]
pub mod generated;
mod table;
mod wire;

pub use connection::{CAPABILITIES, CLOSE_OK_WAIT, Connection, ConnectionConfig, MECHANISMS};
pub use content::ContentHeader;
pub use error::{DecodeError, FrameError};
pub use event::Event;
pub use frame::{Decoded, Frame, FrameHeader};
pub use generated::*;
pub use table::{FieldTable, FieldValue};
pub use wire::SHORTSTR_BYTES_MAX;

use ferry_wire::Detection;

/// Deepest nesting of field tables and arrays accepted in a peer's table.
pub const TABLE_DEPTH_MAX: usize = 32;

/// Whether a connection's first bytes are AMQP 0-9-1: `AMQP\0\0\x09\x01` (or 0-9's
/// `AMQP\x01\x01\x00\x09`, which RabbitMQ also serves as 0-9-1). AMQP 1.0's headers
/// (`AMQP\0\x01\0\0`, `AMQP\x02..`, `AMQP\x03..`) are `NoMatch`.
pub fn detect(prefix: &[u8]) -> Detection {
    const HEADERS: [&[u8; 8]; 2] = [PROTOCOL_HEADER, connection::PROTOCOL_HEADER_0_9];
    let got = &prefix[..prefix.len().min(8)];
    if HEADERS.iter().any(|h| h.starts_with(got)) {
        match 8 - got.len() {
            0 => Detection::Match,
            need => Detection::Incomplete { need },
        }
    } else {
        Detection::NoMatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_0_9_1() {
        assert_eq!(detect(b"AMQP\x00\x00\x09\x01"), Detection::Match);
        assert_eq!(detect(b"AMQP\x00\x00\x09\x01\x01\x00"), Detection::Match);
        assert_eq!(detect(b"AMQP\x01\x01\x00\x09"), Detection::Match);
        assert_eq!(detect(b""), Detection::Incomplete { need: 8 });
        assert_eq!(detect(b"AMQ"), Detection::Incomplete { need: 5 });
        assert_eq!(detect(b"AMQP\x00\x00"), Detection::Incomplete { need: 2 });
    }

    #[test]
    fn amqp_1_0_and_others_do_not_match() {
        for bytes in [
            &b"AMQP\x00\x01\x00\x00"[..],
            b"AMQP\x03\x01\x00\x00",
            b"AMQP\x02\x01\x00\x00",
            b"AMQP\x00\x01",
            b"CONNECT\n",
            b"\x10\x0c\x00\x04MQTT",
            b"GET / HTTP/1.1",
        ] {
            assert_eq!(detect(bytes), Detection::NoMatch, "{bytes:?}");
        }
    }
}
