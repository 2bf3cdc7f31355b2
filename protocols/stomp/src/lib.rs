//! `ferry-stomp`: the STOMP 1.0/1.1/1.2 codec and sans-IO server session.
//!
//! Owns the wire format ([`decode`], [`Decoder`], [`encode`]), protocol detection
//! ([`detect`]) and one connection's state machine ([`Session`]), which turns bytes into
//! [`Event`]s for the engine and the engine's answers into bytes. Pure: no I/O, no async, no
//! clock (time comes in as `Instant`), no runtime; never panics on peer input. Every size is
//! capped by `ferry_wire::Limits` before anything is allocated.

mod codec;
mod connect;
mod error;
mod escape;
mod event;
mod frame;
mod heartbeat;
mod session;
mod text;

pub use codec::{Decoded, Decoder, decode, encode};
pub use error::FrameError;
pub use event::{AckMode, CloseReason, Event};
pub use frame::{Command, Frame, Version};
pub use heartbeat::HeartBeat;
pub use session::{Session, SessionConfig};
pub use text::HeaderText;

/// A decoded header: name and value.
pub type Header = (HeaderText, HeaderText);

use ferry_wire::Detection;

/// Leading EOL bytes `detect` skips before giving up.
const DETECT_EOL_BYTES_MAX: usize = 64;

/// Whether a connection's first bytes are STOMP: optional EOLs, then `CONNECT` or `STOMP`
/// followed by LF or CRLF.
pub fn detect(prefix: &[u8]) -> Detection {
    let skipped = prefix.iter().take_while(|&&b| b == b'\n' || b == b'\r').count();
    if skipped > DETECT_EOL_BYTES_MAX {
        return Detection::NoMatch;
    }
    let rest = &prefix[skipped..];
    const STARTS: [&[u8]; 4] = [b"CONNECT\n", b"CONNECT\r\n", b"STOMP\n", b"STOMP\r\n"];
    let mut need = None;
    for start in STARTS {
        if rest.starts_with(start) {
            return Detection::Match;
        }
        if start.starts_with(rest) {
            let more = start.len() - rest.len();
            need = Some(need.map_or(more, |n: usize| n.min(more)));
        }
    }
    match need {
        Some(need) => Detection::Incomplete { need },
        None => Detection::NoMatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_connect_and_stomp() {
        for bytes in [&b"CONNECT\n"[..], b"STOMP\r\n", b"\n\r\nCONNECT\r\nhost:x", b"STOMP\naccept"] {
            assert_eq!(detect(bytes), Detection::Match, "{bytes:?}");
        }
    }

    #[test]
    fn partial_prefixes_are_incomplete() {
        assert_eq!(detect(b""), Detection::Incomplete { need: 6 });
        assert_eq!(detect(b"CONN"), Detection::Incomplete { need: 4 });
        assert_eq!(detect(b"STOMP"), Detection::Incomplete { need: 1 });
        assert_eq!(detect(b"CONNECT\r"), Detection::Incomplete { need: 1 });
        assert_eq!(detect(b"\n\n"), Detection::Incomplete { need: 6 });
    }

    #[test]
    fn other_protocols_do_not_match() {
        for bytes in [
            &b"AMQP\x00\x00\x09\x01"[..],
            b"\x10\x0c\x00\x04MQTT",
            b"GET / HTTP/1.1",
            b"CONNECTED\n",
            b"SEND\n",
            b"connect\n",
        ] {
            assert_eq!(detect(bytes), Detection::NoMatch, "{bytes:?}");
        }
        assert_eq!(detect(&[b'\n'; 65]), Detection::NoMatch);
    }
}
