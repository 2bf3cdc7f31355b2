//! `ferry-mqtt`: the MQTT 3.1.1 and 5.0 codec and sans-IO server session.
//!
//! Owns the wire format ([`decode`], [`encode`], every packet and every 5.0 property and
//! reason code), protocol detection ([`detect`]), topic rules ([`topic`]) and one
//! connection's state machine ([`Session`]): CONNECT rules, keep-alive, packet identifiers,
//! QoS 1 and the QoS 2 exactly-once handshake in both directions, receive maximum, topic
//! aliases and maximum packet size. Pure: no I/O, no async, no clock (time comes in as
//! `Instant`), no runtime; never panics on peer input; sizes are checked before buffering.

mod bytes_io;
mod codec;
mod error;
mod packet;
mod properties;
mod reason;
mod session;
pub mod topic;

pub use codec::{Decoded, decode, encode, packet_size, unsupported_level_connack};
pub use error::DecodeError;
pub use packet::{
    AckKind, ConnAck, Connect, Packet, PubResp, Publish, QoS, ReasonPacket, SubAck, SubOptions, Subscribe, UnsubAck,
    Unsubscribe, Version, Will,
};
pub use properties::{Properties, PropertyContext};
pub use reason::ReasonCode;
pub use session::{
    CloseReason, ConnectAnswer, Event, InboundState, Outbound, ParkedSession, SendError, Session, SessionConfig,
};

use ferry_wire::Detection;

/// Whether a connection's first bytes are an MQTT CONNECT: type 1 with zero flags, a
/// remaining length, then the protocol name `MQTT` or `MQIsdp`.
pub fn detect(prefix: &[u8]) -> Detection {
    let Some(&first) = prefix.first() else {
        return Detection::Incomplete { need: 2 };
    };
    if first != 0x10 {
        return Detection::NoMatch;
    }
    let Ok(header) = bytes_io::read_varint(&prefix[1..]) else {
        return Detection::NoMatch;
    };
    let Some((_, used)) = header else {
        return Detection::Incomplete { need: 1 };
    };
    let rest = &prefix[1 + used..];
    const NAMES: [&[u8]; 2] = [b"\x00\x04MQTT", b"\x00\x06MQIsdp"];
    let mut need = None;
    for name in NAMES {
        if rest.starts_with(name) {
            return Detection::Match;
        }
        if name.starts_with(rest) {
            let more = name.len() - rest.len();
            need = Some(need.map_or(more, |n: usize| n.min(more)));
        }
    }
    need.map_or(Detection::NoMatch, |need| Detection::Incomplete { need })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_connect() {
        assert_eq!(detect(b"\x10\x0c\x00\x04MQTT\x04"), Detection::Match);
        assert_eq!(detect(b"\x10\x0e\x00\x06MQIsdp"), Detection::Match);
        assert_eq!(detect(b"\x10\x0c\x00\x04MQ"), Detection::Incomplete { need: 2 });
        assert_eq!(detect(b""), Detection::Incomplete { need: 2 });
        assert_eq!(detect(b"CONNECT\n"), Detection::NoMatch);
        assert_eq!(detect(b"AMQP\x00\x00\x09\x01"), Detection::NoMatch);
        assert_eq!(detect(b"\x10\x0c\x00\x04MQXX"), Detection::NoMatch);
    }
}
