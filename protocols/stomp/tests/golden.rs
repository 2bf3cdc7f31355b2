//! Golden wire frames under `tests/golden/`: each decodes to one frame spanning the whole
//! file and re-encodes byte-exactly (headers in stored order, escaped per version).

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use ferry_stomp::{AckMode, Command, Decoded, Event, Frame, Session, SessionConfig, Version, decode, encode};
use ferry_wire::Limits;

const GOLDEN: [(&str, Version, Command); 9] = [
    ("connect_1_1_stomppy.stomp", Version::V1_1, Command::Connect),
    ("connect_1_2_login.stomp", Version::V1_2, Command::Connect),
    ("stomp_1_2_multi_version.stomp", Version::V1_2, Command::Stomp),
    ("send_1_2_custom_headers.stomp", Version::V1_2, Command::Send),
    ("subscribe_1_2.stomp", Version::V1_2, Command::Subscribe),
    ("ack_1_2.stomp", Version::V1_2, Command::Ack),
    ("ack_1_1.stomp", Version::V1_1, Command::Ack),
    ("message_1_2_escaped.stomp", Version::V1_2, Command::Message),
    ("disconnect_1_2.stomp", Version::V1_2, Command::Disconnect),
];

fn golden(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decoded(bytes: &[u8], version: Version) -> Frame {
    match decode(bytes, version, &Limits::default()) {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert_eq!(consumed, bytes.len());
            frame
        }
        other => panic!("expected one frame, got {other:?}"),
    }
}

#[test]
fn golden_frames_round_trip_byte_exactly() {
    for (name, version, command) in GOLDEN {
        let bytes = golden(name);
        let frame = decoded(&bytes, version);
        assert_eq!(frame.command, command, "{name}");
        let mut out = Vec::new();
        encode(&frame, version, &mut out);
        assert_eq!(out, bytes, "{name} re-encodes differently");
    }
}

#[test]
fn golden_message_headers_are_unescaped() {
    let frame = decoded(&golden("message_1_2_escaped.stomp"), Version::V1_2);
    assert_eq!(frame.header("destination"), Some("/topic/a:b"));
    assert_eq!(frame.header("x-path"), Some("C:x\\dir"));
    assert_eq!(frame.header("x-multi"), Some("line1\nline2\r"));
    assert_eq!(frame.body, Bytes::from_static(b"abcd"));
}

#[test]
fn golden_send_body_keeps_its_nul() {
    let frame = decoded(&golden("send_1_2_custom_headers.stomp"), Version::V1_2);
    assert_eq!(frame.body, Bytes::from_static(b"hello\0world"));
    assert_eq!(frame.header("x-priority"), Some("5"));
}

#[test]
fn golden_client_session_flow() {
    let t0 = Instant::now();
    let config = SessionConfig { limits: Limits::default(), server: "ferry/0.1.0".to_owned() };
    let mut session = Session::new(config, t0);
    session.handle_input(&golden("connect_1_2_login.stomp"), t0);
    let Some(Event::Connect { version, login, passcode, .. }) = session.poll_event() else {
        panic!("expected Connect");
    };
    assert_eq!(version, Version::V1_2);
    assert_eq!((login.as_deref(), passcode.as_deref()), (Some("guest"), Some("guest")));
    session.accept_connect("session-4f2c");
    for name in ["subscribe_1_2.stomp", "send_1_2_custom_headers.stomp", "ack_1_2.stomp", "disconnect_1_2.stomp"] {
        session.handle_input(&golden(name), t0);
    }
    let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
    assert!(matches!(&events[0], Event::Subscribe { id, ack: AckMode::ClientIndividual, .. } if id == "1"));
    assert!(matches!(&events[1], Event::Send { receipt: Some(r), .. } if r == "message-12345"));
    assert!(matches!(&events[2], Event::Ack { id, .. } if id == "T_1@@session-4f2c@@7"));
    assert!(matches!(&events[3], Event::Disconnect { receipt: Some(r) } if r == "77"));
    assert_eq!(events.len(), 4);
}

/// Real stomp.py 8.2 frames (and Ferry's answers to them), recorded by `golden/capture.py`
/// through a loopback proxy: each decodes as one STOMP 1.2 frame and re-encodes byte-exactly.
#[test]
fn captured_stomppy_frames_round_trip_byte_exactly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/captured");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("captured/ exists")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".stomp"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "captures present: {names:?}");
    for name in names {
        let bytes = std::fs::read(dir.join(&name)).expect("readable capture");
        let frame = decoded(&bytes, Version::V1_2);
        let mut out = Vec::new();
        encode(&frame, Version::V1_2, &mut out);
        assert_eq!(out, bytes, "{name} re-encodes byte-exactly");
    }
}
