//! The CONNECT handshake: version negotiation from `accept-version`, heart-beat negotiation,
//! the Connect event, and the CONNECTED reply frame. Pure; never escapes (CONNECT and
//! CONNECTED headers are written raw in every version).

use crate::error::Rejection;
use crate::event::Event;
use crate::frame::{Command, Frame, Version};
use crate::heartbeat::{self, HeartBeat};

/// `accept-version` values Ferry lists when negotiation fails.
const SUPPORTED: &str = "1.0,1.1,1.2";

/// A CONNECT frame the session accepts (the engine still has to authenticate it).
#[derive(Debug)]
pub(crate) struct Handshake {
    pub version: Version,
    pub heartbeat: HeartBeat,
    pub event: Event,
}

/// Negotiates a CONNECT (or STOMP) frame.
pub(crate) fn handshake(frame: Frame, heartbeat_ms_min: u32) -> Result<Handshake, Rejection> {
    let receipt = frame.header("receipt");
    let Some(version) = negotiate_version(frame.header("accept-version")) else {
        let mut rejection = Rejection::new(
            format!("Supported protocol versions are {SUPPORTED}"),
            format!("Supported protocol versions are {SUPPORTED}"),
        )
        .with_receipt(receipt);
        rejection.headers.push(("version".to_owned(), SUPPORTED.to_owned()));
        return Err(rejection);
    };
    let client = match (frame.header("heart-beat").map(heartbeat::parse), version) {
        (None, _) => (0, 0),
        (Some(Some(pair)), _) => pair,
        (Some(None), Version::V1_0) => (0, 0),
        (Some(None), _) => {
            let detail = "heart-beat must be two comma-separated millisecond counts";
            return Err(Rejection::new("Invalid heart-beat header", detail).with_receipt(receipt));
        }
    };
    let heartbeat = HeartBeat::negotiate(client.0, client.1, heartbeat_ms_min);
    let event = Event::Connect {
        version,
        host: frame.header("host").map(str::to_owned),
        login: frame.header("login").map(str::to_owned),
        passcode: frame.header("passcode").map(str::to_owned),
        headers: frame.headers,
    };
    Ok(Handshake { version, heartbeat, event })
}

/// The highest version both sides speak; 1.0 when the client names none.
pub(crate) fn negotiate_version(accept_version: Option<&str>) -> Option<Version> {
    let Some(list) = accept_version else {
        return Some(Version::V1_0);
    };
    list.split(',').filter_map(|text| Version::parse(text.trim())).max()
}

/// The CONNECTED reply.
pub(crate) fn connected(version: Version, heartbeat: HeartBeat, server: &str, session_id: &str) -> Frame {
    Frame::new(Command::Connected)
        .with_header("version", version.as_str())
        .with_header("heart-beat", heartbeat.header_value())
        .with_header("server", server)
        .with_header("session", session_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(headers: &[(&str, &str)]) -> Frame {
        headers.iter().fold(Frame::new(Command::Connect), |f, (n, v)| f.with_header(*n, *v))
    }

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(negotiate_version(None), Some(Version::V1_0));
        assert_eq!(negotiate_version(Some("1.0,1.1")), Some(Version::V1_1));
        assert_eq!(negotiate_version(Some("1.2, 1.0")), Some(Version::V1_2));
        assert_eq!(negotiate_version(Some("1.1,2.0")), Some(Version::V1_1));
        assert_eq!(negotiate_version(Some("2.0,3.0")), None);
        assert_eq!(negotiate_version(Some("")), None);
    }

    #[test]
    fn no_common_version_names_the_supported_ones() {
        let Err(rejection) = handshake(connect(&[("accept-version", "2.0")]), 100) else {
            panic!("accepted 2.0");
        };
        assert_eq!(rejection.message, "Supported protocol versions are 1.0,1.1,1.2");
        assert_eq!(rejection.headers, vec![("version".to_owned(), SUPPORTED.to_owned())]);
    }

    #[test]
    fn heart_beat_parsing_depends_on_version() {
        let ok = handshake(connect(&[("heart-beat", "junk")]), 100).expect("1.0 tolerates");
        assert_eq!(ok.heartbeat, HeartBeat::default());
        let bad = handshake(connect(&[("accept-version", "1.1"), ("heart-beat", "junk")]), 100);
        assert!(matches!(bad, Err(r) if r.message == "Invalid heart-beat header"));
        let ok = handshake(connect(&[("accept-version", "1.2"), ("heart-beat", "1000,20")]), 100).expect("valid");
        assert_eq!(ok.heartbeat, HeartBeat { send_ms: 100, receive_ms: 1000 });
    }

    #[test]
    fn connect_event_carries_credentials_and_headers() {
        let frame = connect(&[("accept-version", "1.2"), ("host", "/"), ("login", "guest"), ("passcode", "pw")]);
        let ok = handshake(frame, 100).expect("valid");
        let Event::Connect { version, host, login, passcode, headers } = ok.event else {
            panic!("not a connect");
        };
        assert_eq!(version, Version::V1_2);
        assert_eq!((host.as_deref(), login.as_deref(), passcode.as_deref()), (Some("/"), Some("guest"), Some("pw")));
        assert_eq!(headers.len(), 4);
    }

    #[test]
    fn connected_frame_layout() {
        let frame = connected(Version::V1_1, HeartBeat { send_ms: 5, receive_ms: 0 }, "ferry/0.1.0", "s-1");
        let mut out = Vec::new();
        crate::codec::encode(&frame, Version::V1_1, &mut out);
        assert_eq!(out, b"CONNECTED\nversion:1.1\nheart-beat:5,0\nserver:ferry/0.1.0\nsession:s-1\n\n\0");
    }
}
