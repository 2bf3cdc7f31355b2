//! Unit tests of the session state machine: handshake, frames before CONNECT, protocol
//! errors with receipts, heart-beats and timeouts on synthetic instants, input bounds.
//! Test-only; limits come from `Limits::test_min()`.

use super::*;

const CONNECT_12: &[u8] = b"CONNECT\naccept-version:1.2\nhost:/\n\n\0";

fn config() -> SessionConfig {
    SessionConfig { limits: Limits::test_min(), server: "ferry/0.1.0".to_owned() }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn events(session: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

fn output(session: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    session.poll_transmit(&mut out);
    out
}

fn connected(connect: &[u8], t0: Instant) -> Session {
    let mut session = Session::new(config(), t0);
    session.handle_input(connect, t0);
    assert!(matches!(session.poll_event(), Some(Event::Connect { .. })));
    session.accept_connect("s-1");
    let _ = output(&mut session);
    session
}

fn closed_reason(events: &[Event]) -> Option<&CloseReason> {
    match events.last() {
        Some(Event::Closed { reason }) => Some(reason),
        _ => None,
    }
}

#[test]
fn handshake_writes_connected() {
    let t0 = Instant::now();
    let mut session = Session::new(config(), t0);
    session.handle_input(b"CONNECT\naccept-version:1.0,1.1\nheart-beat:0,500\n\n\0", t0);
    let got = events(&mut session);
    assert!(matches!(&got[..], [Event::Connect { version: Version::V1_1, .. }]));
    assert_eq!(session.version(), Version::V1_1);
    assert!(output(&mut session).is_empty());
    session.accept_connect("s-1");
    assert_eq!(
        output(&mut session),
        b"CONNECTED\nversion:1.1\nheart-beat:500,0\nserver:ferry/0.1.0\nsession:s-1\n\n\0"
    );
    assert!(!session.is_closed());
}

#[test]
fn stomp_command_is_a_connect() {
    let mut session = Session::new(config(), Instant::now());
    session.handle_input(b"STOMP\r\naccept-version:1.2\r\n\r\n\0", Instant::now());
    assert!(matches!(session.poll_event(), Some(Event::Connect { version: Version::V1_2, .. })));
}

#[test]
fn no_common_version_errors_and_closes() {
    let mut session = Session::new(config(), Instant::now());
    session.handle_input(b"CONNECT\naccept-version:3.0\n\n\0", Instant::now());
    let got = events(&mut session);
    assert_eq!(
        closed_reason(&got),
        Some(&CloseReason::ProtocolError("Supported protocol versions are 1.0,1.1,1.2".into()))
    );
    let out = output(&mut session);
    assert!(out.starts_with(b"ERROR\nmessage:Supported protocol versions are 1.0,1.1,1.2\nversion:1.0,1.1,1.2\n"));
    assert!(session.is_closed());
}

#[test]
fn frames_before_connect_are_refused_with_receipt_id() {
    let mut session = Session::new(config(), Instant::now());
    session.handle_input(b"SEND\ndestination:/q\nreceipt:77\n\nx\0", Instant::now());
    let got = events(&mut session);
    assert_eq!(got.len(), 1);
    assert_eq!(closed_reason(&got), Some(&CloseReason::ProtocolError("Received SEND before CONNECT".into())));
    let out = String::from_utf8(output(&mut session)).expect("utf8");
    assert!(out.starts_with(
        "ERROR\nmessage:Received SEND before CONNECT\nreceipt-id:77\ncontent-type:text/plain\ncontent-length:"
    ));
    session.handle_input(CONNECT_12, Instant::now());
    assert!(session.poll_event().is_none());
    assert_eq!(session.pending_output_bytes(), 0);
}

#[test]
fn unknown_command_errors() {
    let mut session = connected(CONNECT_12, Instant::now());
    session.handle_input(b"FROB\n\n\0", Instant::now());
    let got = events(&mut session);
    assert_eq!(closed_reason(&got), Some(&CloseReason::ProtocolError("Unknown STOMP command".into())));
    assert!(output(&mut session).starts_with(b"ERROR\nmessage:Unknown STOMP command\n"));
}

#[test]
fn second_connect_errors() {
    let mut session = connected(CONNECT_12, Instant::now());
    session.handle_input(CONNECT_12, Instant::now());
    let got = events(&mut session);
    assert_eq!(closed_reason(&got), Some(&CloseReason::ProtocolError("Already connected".into())));
}

#[test]
fn frames_after_a_pending_connect_queue_in_order() {
    let t0 = Instant::now();
    let mut session = Session::new(config(), t0);
    let mut bytes = CONNECT_12.to_vec();
    bytes.extend_from_slice(b"\nSUBSCRIBE\nid:0\ndestination:/q\n\n\0\r\nSEND\ndestination:/q\n\nhi\0");
    session.handle_input(&bytes, t0);
    let got = events(&mut session);
    assert!(matches!(&got[..], [Event::Connect { .. }, Event::Subscribe { .. }, Event::Send { .. }]));
}

#[test]
fn missing_header_error_echoes_receipt() {
    let mut session = connected(CONNECT_12, Instant::now());
    session.handle_input(b"SUBSCRIBE\ndestination:/q\nreceipt:r-9\n\n\0", Instant::now());
    let got = events(&mut session);
    assert_eq!(closed_reason(&got), Some(&CloseReason::ProtocolError("Missing 'id' header".into())));
    let out = String::from_utf8(output(&mut session)).expect("utf8");
    assert!(out.contains("\nreceipt-id:r-9\n"), "{out}");
}

#[test]
fn undefined_escape_closes_on_1_1() {
    let mut session = connected(b"CONNECT\naccept-version:1.1\n\n\0", Instant::now());
    session.handle_input(b"SEND\ndestination:/q\\t\n\n\0", Instant::now());
    let got = events(&mut session);
    assert_eq!(closed_reason(&got), Some(&CloseReason::ProtocolError("undefined escape sequence in header".into())));
}

#[test]
fn message_is_escaped_per_version_with_content_length() {
    let body = Bytes::from_static(b"a\0b");
    let headers = [("destination", "/q:1"), ("content-length", "99"), ("k", "x\ny")];
    let expect: [(&[u8], &[u8]); 3] = [
        (b"CONNECT\n\n\0", b"MESSAGE\ndestination:/q:1\nk:x y\ncontent-length:3\n\na\0b\0"),
        (b"CONNECT\naccept-version:1.1\n\n\0", b"MESSAGE\ndestination:/q\\c1\nk:x\\ny\ncontent-length:3\n\na\0b\0"),
        (CONNECT_12, b"MESSAGE\ndestination:/q\\c1\nk:x\\ny\ncontent-length:3\n\na\0b\0"),
    ];
    for (connect, message) in expect {
        let mut session = connected(connect, Instant::now());
        session.send_message(&headers, &body);
        assert_eq!(session.pending_output_bytes(), message.len());
        assert_eq!(output(&mut session), message);
    }
}

#[test]
fn receipt_and_engine_error() {
    let mut session = connected(CONNECT_12, Instant::now());
    session.send_receipt("r:1");
    assert_eq!(output(&mut session), b"RECEIPT\nreceipt-id:r\\c1\n\n\0");
    session.send_error("Access refused", "no", Some("7"));
    assert_eq!(
        output(&mut session),
        b"ERROR\nmessage:Access refused\nreceipt-id:7\ncontent-type:text/plain\ncontent-length:2\n\nno\0"
    );
    assert!(session.is_closed());
    assert!(session.poll_event().is_none(), "engine-initiated close emits no event");
    session.send_receipt("late");
    assert_eq!(session.pending_output_bytes(), 0);
}

#[test]
fn disconnect_stops_reading() {
    let mut session = connected(CONNECT_12, Instant::now());
    session.handle_input(b"DISCONNECT\nreceipt:1\n\n\0SEND\ndestination:/q\n\n\0", Instant::now());
    let got = events(&mut session);
    assert_eq!(got, vec![Event::Disconnect { receipt: Some("1".into()) }]);
    session.send_receipt("1");
    session.close();
    assert!(session.is_closed());
    assert!(!output(&mut session).is_empty());
}

#[test]
fn connect_timeout() {
    let t0 = Instant::now();
    let mut session = Session::new(config(), t0);
    let deadline = t0 + ms(1_000);
    assert_eq!(session.poll_timeout(), Some(deadline));
    session.handle_timeout(t0 + ms(999));
    assert!(session.poll_event().is_none());
    session.handle_timeout(deadline);
    assert_eq!(events(&mut session), vec![Event::Closed { reason: CloseReason::ConnectTimeout }]);
    assert!(output(&mut session).starts_with(b"ERROR\nmessage:connect timeout\n"));
    assert_eq!(session.poll_timeout(), None);
}

#[test]
fn connect_clears_the_connect_deadline() {
    let t0 = Instant::now();
    let mut session = Session::new(config(), t0);
    session.handle_input(CONNECT_12, t0);
    assert_eq!(session.poll_timeout(), None);
    session.handle_timeout(t0 + ms(5_000));
    assert!(!session.is_closed());
}

#[test]
fn heartbeat_send_and_receive() {
    let t0 = Instant::now();
    let mut session = connected(b"CONNECT\naccept-version:1.2\nheart-beat:300,200\n\n\0", t0);
    assert_eq!(session.heartbeat(), HeartBeat { send_ms: 200, receive_ms: 300 });
    assert_eq!(session.poll_timeout(), Some(t0 + ms(200)));
    session.handle_timeout(t0 + ms(200));
    assert_eq!(output(&mut session), b"\n");
    assert_eq!(session.poll_timeout(), Some(t0 + ms(400)));
    session.handle_input(b"\n", t0 + ms(350));
    session.handle_timeout(t0 + ms(400));
    assert_eq!(output(&mut session), b"\n");
    assert_eq!(session.poll_timeout(), Some(t0 + ms(600)));
    session.handle_timeout(t0 + ms(600));
    let _ = output(&mut session);
    assert_eq!(session.poll_timeout(), Some(t0 + ms(800)));
    session.handle_timeout(t0 + ms(950));
    assert_eq!(events(&mut session), vec![Event::Closed { reason: CloseReason::HeartbeatTimeout }]);
    assert!(session.is_closed());
}

#[test]
fn sending_defers_the_heartbeat() {
    let t0 = Instant::now();
    let mut session = connected(b"CONNECT\naccept-version:1.2\nheart-beat:0,100\n\n\0", t0);
    session.handle_input(b"\n", t0 + ms(50));
    session.send_receipt("x");
    assert_eq!(session.poll_timeout(), Some(t0 + ms(150)));
}

#[test]
fn small_heartbeats_are_raised_to_the_minimum() {
    let t0 = Instant::now();
    let mut session = Session::new(config(), t0);
    session.handle_input(b"CONNECT\naccept-version:1.2\nheart-beat:1,2\n\n\0", t0);
    session.accept_connect("s");
    let out = String::from_utf8(output(&mut session)).expect("utf8");
    assert!(out.contains("\nheart-beat:10,10\n"), "{out}");
}

#[test]
fn malformed_heartbeat_depends_on_version() {
    let mut v10 = Session::new(config(), Instant::now());
    v10.handle_input(b"CONNECT\nheart-beat:x\n\n\0", Instant::now());
    assert!(matches!(v10.poll_event(), Some(Event::Connect { .. })));
    let mut v12 = Session::new(config(), Instant::now());
    v12.handle_input(b"CONNECT\naccept-version:1.2\nheart-beat:x\n\n\0", Instant::now());
    assert!(matches!(v12.poll_event(), Some(Event::Closed { .. })));
}

#[test]
fn oversize_frame_errors_before_buffering_it() {
    let mut session = connected(CONNECT_12, Instant::now());
    session.handle_input(b"SEND\ndestination:/q\ncontent-length:999999999\n\n", Instant::now());
    let got = events(&mut session);
    assert_eq!(closed_reason(&got), Some(&CloseReason::ProtocolError("frame too large".into())));
}

#[test]
fn large_body_in_small_chunks() {
    let mut session = connected(CONNECT_12, Instant::now());
    let body = vec![b'x'; 60_000];
    let mut bytes = b"SEND\ndestination:/q\n\n".to_vec();
    bytes.extend_from_slice(&body);
    bytes.push(0);
    for chunk in bytes.chunks(7) {
        session.handle_input(chunk, Instant::now());
    }
    let got = events(&mut session);
    assert!(matches!(&got[..], [Event::Send { body: b, .. }] if b.len() == 60_000));
}

#[test]
fn accept_after_close_writes_nothing() {
    let mut session = Session::new(config(), Instant::now());
    session.handle_input(CONNECT_12, Instant::now());
    session.handle_input(b"BOGUS\n\n\0", Instant::now());
    let _ = output(&mut session);
    session.accept_connect("s");
    assert_eq!(session.pending_output_bytes(), 0);
}

#[test]
fn decimal_writes_every_width() {
    let mut buf = [0u8; 20];
    for n in [0usize, 7, 10, 99, 100, 123_456, usize::MAX] {
        assert_eq!(super::decimal(n, &mut buf), n.to_string());
    }
}
