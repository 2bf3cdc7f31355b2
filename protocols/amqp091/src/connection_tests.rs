//! Unit tests of the connection state machine: protocol header, handshake and tuning, channel
//! rules, content reassembly, every peer error with its reply code and class/method ids,
//! close handshakes, heartbeats and timeouts on synthetic instants. Test-only; limits come
//! from `Limits::test_min()` (64 KiB bodies, 68 KiB input, 1 s handshake timeout).

use super::*;
use crate::content::ContentHeader;
use crate::frame::{Decoded, Frame};
use crate::generated::*;
use crate::table::{FieldTable, FieldValue};

fn config() -> ConnectionConfig {
    ConnectionConfig {
        limits: Limits::test_min(),
        frame_max: 8192,
        channel_max: 16,
        heartbeat_s: 10,
        product: "Ferry".to_owned(),
        version: "test".to_owned(),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn method(channel: u16, method: impl Into<Method>) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_method(channel, &method.into(), &mut out);
    out
}

fn raw_frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![frame_type];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

fn header_frame(channel: u16, body_size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let properties = BasicProperties { content_type: Some("text/plain".into()), ..Default::default() };
    frame::encode_content_header(channel, &ContentHeader::basic(body_size, properties), &mut out);
    out
}

fn body_frame(channel: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_body(channel, body, &mut out);
    out
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

/// Every frame the connection wrote since the last call.
fn sent(conn: &mut Connection) -> Vec<Frame> {
    let mut out = Vec::new();
    conn.poll_transmit(&mut out);
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while !rest.is_empty() {
        match frame::decode(rest, 1 << 20) {
            Ok(Decoded::Frame { frame, consumed }) => {
                frames.push(frame);
                rest = &rest[consumed..];
            }
            other => panic!("server wrote a bad frame: {other:?}"),
        }
    }
    frames
}

fn sent_methods(conn: &mut Connection) -> Vec<Method> {
    sent(conn)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Method { method, .. } => Some(method),
            _ => None,
        })
        .collect()
}

/// The connection.close the server sent last: (code, class id, method id).
fn close_sent(conn: &mut Connection) -> (u16, u16, u16) {
    match sent_methods(conn).pop() {
        Some(Method::ConnectionClose(c)) => (c.reply_code, c.class_id, c.method_id),
        other => panic!("expected connection.close, got {other:?}"),
    }
}

fn start_ok(mechanism: &str, response: &[u8]) -> Vec<u8> {
    let start_ok = ConnectionStartOk {
        client_properties: FieldTable::new(),
        mechanism: mechanism.to_owned(),
        response: Bytes::copy_from_slice(response),
        locale: "en_US".to_owned(),
    };
    method(0, start_ok)
}

fn tune_ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> Vec<u8> {
    method(0, ConnectionTuneOk { channel_max, frame_max, heartbeat })
}

/// A connection through the whole handshake, output drained.
fn running(t0: Instant) -> Connection {
    let mut conn = Connection::new(config(), t0);
    conn.handle_input(PROTOCOL_HEADER, t0);
    conn.handle_input(&start_ok("PLAIN", b"\0guest\0guest"), t0);
    conn.accept_login();
    conn.handle_input(&tune_ok(16, 8192, 0), t0);
    conn.handle_input(&method(0, ConnectionOpen { virtual_host: "/".into(), ..Default::default() }), t0);
    conn.accept_open();
    let _ = events(&mut conn);
    let _ = sent(&mut conn);
    conn
}

fn with_channel(t0: Instant, channel: u16) -> Connection {
    let mut conn = running(t0);
    conn.handle_input(&method(channel, ChannelOpen::default()), t0);
    assert_eq!(events(&mut conn), [Event::ChannelOpened { channel }]);
    assert_eq!(sent_methods(&mut conn), [Method::ChannelOpenOk(ChannelOpenOk::default())]);
    conn
}

fn publish(channel: u16) -> Vec<u8> {
    method(channel, BasicPublish { routing_key: "q".into(), ..Default::default() })
}

#[test]
fn handshake_reaches_running() {
    let t0 = Instant::now();
    let mut conn = Connection::new(config(), t0);
    conn.handle_input(&PROTOCOL_HEADER[..3], t0);
    assert!(sent(&mut conn).is_empty());
    conn.handle_input(&PROTOCOL_HEADER[3..], t0);
    let Some(Method::ConnectionStart(start)) = sent_methods(&mut conn).pop() else { panic!("no start") };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    assert_eq!(&start.mechanisms[..], b"PLAIN AMQPLAIN");
    assert_eq!(&start.locales[..], b"en_US");
    let Some(FieldValue::Table(caps)) = start.server_properties.get("capabilities") else { panic!("caps") };
    for name in CAPABILITIES {
        assert_eq!(caps.get(name), Some(&FieldValue::Bool(true)), "{name}");
    }

    conn.handle_input(&start_ok("PLAIN", b"\0guest\0secret"), t0);
    let login = Event::Login { mechanism: "PLAIN".into(), username: "guest".into(), password: "secret".into() };
    assert_eq!(events(&mut conn), [login]);
    assert!(sent(&mut conn).is_empty());
    conn.accept_login();
    let tune = ConnectionTune { channel_max: 16, frame_max: 8192, heartbeat: 10 };
    assert_eq!(sent_methods(&mut conn), [Method::ConnectionTune(tune)]);

    conn.handle_input(&tune_ok(0, 0, 5), t0);
    assert_eq!(conn.tuning(), (16, 8192, 5));
    conn.handle_input(&method(0, ConnectionOpen { virtual_host: "vh".into(), ..Default::default() }), t0);
    assert_eq!(events(&mut conn), [Event::Open { vhost: "vh".into() }]);
    conn.accept_open();
    assert_eq!(sent_methods(&mut conn), [Method::ConnectionOpenOk(Default::default())]);
    assert!(!conn.is_closed());
}

#[test]
fn input_while_the_engine_decides_is_held_back() {
    let t0 = Instant::now();
    let mut conn = Connection::new(config(), t0);
    let mut bytes = PROTOCOL_HEADER.to_vec();
    bytes.extend(start_ok("PLAIN", b"\0u\0p"));
    bytes.extend(tune_ok(16, 8192, 0));
    conn.handle_input(&bytes, t0);
    assert!(matches!(&events(&mut conn)[..], [Event::Login { .. }]));
    conn.accept_login();
    assert_eq!(conn.tuning(), (16, 8192, 0));
}

#[test]
fn amqplain_login() {
    let t0 = Instant::now();
    let mut conn = Connection::new(config(), t0);
    conn.handle_input(PROTOCOL_HEADER, t0);
    let table: FieldTable =
        [("LOGIN", FieldValue::string("u")), ("PASSWORD", FieldValue::string("p"))].into_iter().collect();
    let mut response = Vec::new();
    table.encode_entries(&mut response);
    conn.handle_input(&start_ok("AMQPLAIN", &response), t0);
    let login = Event::Login { mechanism: "AMQPLAIN".into(), username: "u".into(), password: "p".into() };
    assert_eq!(events(&mut conn), [login]);
}

#[test]
fn wrong_protocol_header_gets_ours_and_closes() {
    for header in [&b"AMQP\x00\x01\x00\x00"[..], b"AMQP\x03\x01\x00\x00", b"GET / HTTP/1.1\r\n"] {
        let mut conn = Connection::new(config(), Instant::now());
        conn.handle_input(header, Instant::now());
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        assert_eq!(out, PROTOCOL_HEADER, "{header:?}");
        assert!(conn.is_closed());
        assert!(matches!(&events(&mut conn)[..], [Event::Closed { .. }]));
    }
}

#[test]
fn login_errors() {
    let t0 = Instant::now();
    let cases: [(&str, &[u8], u16); 3] =
        [("EXTERNAL", b"", COMMAND_INVALID), ("PLAIN", b"guest", SYNTAX_ERROR), ("AMQPLAIN", b"\x01", SYNTAX_ERROR)];
    for (mechanism, response, code) in cases {
        let mut conn = Connection::new(config(), t0);
        conn.handle_input(PROTOCOL_HEADER, t0);
        let _ = sent(&mut conn);
        conn.handle_input(&start_ok(mechanism, response), t0);
        assert_eq!(close_sent(&mut conn), (code, 10, 11), "{mechanism}");
    }
}

#[test]
fn refused_login_closes_with_403() {
    let t0 = Instant::now();
    let mut conn = Connection::new(config(), t0);
    conn.handle_input(PROTOCOL_HEADER, t0);
    conn.handle_input(&start_ok("PLAIN", b"\0u\0bad"), t0);
    let _ = (events(&mut conn), sent(&mut conn));
    conn.refuse_login("Login was refused using authentication mechanism PLAIN");
    let Some(Method::ConnectionClose(close)) = sent_methods(&mut conn).pop() else { panic!("close") };
    assert_eq!((close.reply_code, close.class_id, close.method_id), (ACCESS_REFUSED, 10, 11));
    assert!(close.reply_text.starts_with("ACCESS_REFUSED - Login was refused"));
    assert!(conn.is_closed());
    assert!(matches!(&events(&mut conn)[..], [Event::Closed { .. }]));
}

#[test]
fn tune_ok_outside_our_offer_is_not_allowed() {
    let t0 = Instant::now();
    for (channel_max, frame_max) in [(16, 8193), (17, 8192), (16, 4095)] {
        let mut conn = Connection::new(config(), t0);
        conn.handle_input(PROTOCOL_HEADER, t0);
        conn.handle_input(&start_ok("PLAIN", b"\0u\0p"), t0);
        conn.accept_login();
        let _ = sent(&mut conn);
        conn.handle_input(&tune_ok(channel_max, frame_max, 0), t0);
        assert_eq!(close_sent(&mut conn), (NOT_ALLOWED, 10, 30), "{channel_max} {frame_max}");
    }
}

#[test]
fn frame_max_is_capped_by_the_input_buffer() {
    let config = ConnectionConfig { frame_max: 0, ..config() };
    let input_max = config.limits.connection_input_bytes_max;
    let conn = Connection::new(config, Instant::now());
    assert_eq!(conn.frame_max_offered as usize, input_max - FRAME_OVERHEAD_BYTES);
}

#[test]
fn unexpected_connection_method_is_a_channel_error() {
    let t0 = Instant::now();
    let mut conn = Connection::new(config(), t0);
    conn.handle_input(PROTOCOL_HEADER, t0);
    let _ = sent(&mut conn);
    conn.handle_input(&method(0, ConnectionOpen::default()), t0);
    assert_eq!(close_sent(&mut conn), (CHANNEL_ERROR, 10, 40));
}

#[test]
fn channel_open_and_client_close() {
    let t0 = Instant::now();
    let mut conn = with_channel(t0, 1);
    conn.handle_input(&method(1, ChannelClose { reply_code: 200, ..Default::default() }), t0);
    assert_eq!(events(&mut conn), [Event::ChannelClosed { channel: 1 }]);
    assert_eq!(sent_methods(&mut conn), [Method::ChannelCloseOk(Default::default())]);
    conn.handle_input(&method(1, ChannelOpen::default()), t0);
    assert_eq!(events(&mut conn), [Event::ChannelOpened { channel: 1 }]);
}

#[test]
fn channel_rules() {
    let t0 = Instant::now();
    let mut conn = running(t0);
    conn.handle_input(&method(2, QueueDeclare::default()), t0);
    assert_eq!(close_sent(&mut conn), (CHANNEL_ERROR, 50, 10));

    let mut conn = running(t0);
    conn.handle_input(&method(17, ChannelOpen::default()), t0);
    assert_eq!(close_sent(&mut conn), (NOT_ALLOWED, 20, 10));

    let mut conn = with_channel(t0, 1);
    conn.handle_input(&method(1, ChannelOpen::default()), t0);
    assert_eq!(close_sent(&mut conn), (CHANNEL_ERROR, 20, 10));

    let mut conn = with_channel(t0, 1);
    conn.handle_input(&method(1, BasicDeliver::default()), t0);
    assert_eq!(close_sent(&mut conn), (COMMAND_INVALID, 60, 60));

    let mut conn = running(t0);
    conn.handle_input(&method(0, QueueDeclare::default()), t0);
    assert_eq!(close_sent(&mut conn), (CHANNEL_ERROR, 50, 10));
}

#[test]
fn channel_methods_reach_the_engine() {
    let t0 = Instant::now();
    let mut conn = with_channel(t0, 3);
    let mut arguments = FieldTable::new();
    arguments.insert("x-max-length", FieldValue::I32(10));
    let methods: Vec<Method> = vec![
        QueueDeclare { queue: "q".into(), durable: true, arguments, ..Default::default() }.into(),
        QueueBind { queue: "q".into(), exchange: "amq.direct".into(), routing_key: "k".into(), ..Default::default() }
            .into(),
        BasicQos { prefetch_count: 10, ..Default::default() }.into(),
        BasicConsume { queue: "q".into(), consumer_tag: "c".into(), ..Default::default() }.into(),
        BasicAck { delivery_tag: 7, multiple: true }.into(),
        BasicNack { delivery_tag: 8, multiple: false, requeue: true }.into(),
        ConfirmSelect::default().into(),
        TxSelect::default().into(),
        ChannelFlow { active: false }.into(),
    ];
    for m in &methods {
        conn.handle_input(&method(3, m.clone()), t0);
    }
    let expected: Vec<Event> = methods.into_iter().map(|method| Event::Method { channel: 3, method }).collect();
    assert_eq!(events(&mut conn), expected);
    assert!(sent(&mut conn).is_empty());
}

#[test]
fn publish_is_reassembled() {
    let t0 = Instant::now();
    let mut conn = with_channel(t0, 1);
    let mut bytes = publish(1);
    bytes.extend(header_frame(1, 11));
    bytes.extend(body_frame(1, b"hello "));
    bytes.extend(body_frame(1, b"world"));
    for chunk in bytes.chunks(5) {
        conn.handle_input(chunk, t0);
    }
    let got = events(&mut conn);
    let [Event::Publish { channel: 1, method, properties, body }] = &got[..] else { panic!("{got:?}") };
    assert_eq!(method.routing_key, "q");
    assert_eq!(properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(&body[..], b"hello world");
    assert_eq!(conn.partial_body_bytes, 0);

    conn.handle_input(&[publish(1), header_frame(1, 0)].concat(), t0);
    let got = events(&mut conn);
    assert!(matches!(&got[..], [Event::Publish { body, .. }] if body.is_empty()));
}

#[test]
fn content_out_of_sequence_is_unexpected_frame() {
    let t0 = Instant::now();
    let cases: [(Vec<u8>, (u16, u16, u16)); 5] = [
        (header_frame(1, 1), (UNEXPECTED_FRAME, 0, 0)),
        (body_frame(1, b"x"), (UNEXPECTED_FRAME, 0, 0)),
        ([publish(1), body_frame(1, b"x")].concat(), (UNEXPECTED_FRAME, 60, 40)),
        ([publish(1), publish(1)].concat(), (UNEXPECTED_FRAME, 60, 40)),
        ([publish(1), header_frame(1, 1), body_frame(1, b"xy")].concat(), (UNEXPECTED_FRAME, 60, 40)),
    ];
    for (bytes, expected) in cases {
        let mut conn = with_channel(t0, 1);
        conn.handle_input(&bytes, t0);
        assert_eq!(close_sent(&mut conn), expected);
    }
    let mut conn = running(t0);
    conn.handle_input(&header_frame(0, 1), t0);
    assert_eq!(close_sent(&mut conn), (UNEXPECTED_FRAME, 0, 0));
}

#[test]
fn content_header_of_another_class_or_malformed() {
    let t0 = Instant::now();
    let mut conn = with_channel(t0, 1);
    let payload = b"\x00\x32\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00";
    conn.handle_input(&[publish(1), raw_frame(FRAME_HEADER, 1, payload)].concat(), t0);
    assert_eq!(close_sent(&mut conn), (UNEXPECTED_FRAME, 60, 40));

    let mut conn = with_channel(t0, 1);
    let payload = b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x80\x00\x09";
    conn.handle_input(&[publish(1), raw_frame(FRAME_HEADER, 1, payload)].concat(), t0);
    assert_eq!(close_sent(&mut conn), (SYNTAX_ERROR, 60, 40));
}

#[test]
fn oversized_body_closes_the_channel_with_406() {
    let t0 = Instant::now();
    let mut conn = with_channel(t0, 1);
    let too_big = Limits::test_min().frame_size_bytes_max as u64 + 1;
    conn.handle_input(&[publish(1), header_frame(1, too_big), body_frame(1, b"x")].concat(), t0);
    let Some(Method::ChannelClose(close)) = sent_methods(&mut conn).pop() else { panic!("channel.close") };
    assert_eq!((close.reply_code, close.class_id, close.method_id), (PRECONDITION_FAILED, 60, 40));
    conn.handle_input(&method(1, QueueDeclare::default()), t0);
    assert!(events(&mut conn).is_empty());
    conn.handle_input(&method(1, ChannelCloseOk::default()), t0);
    assert_eq!(events(&mut conn), [Event::ChannelClosed { channel: 1 }]);
    assert!(!conn.is_closed());
}

#[test]
fn engine_closes_a_channel() {
    let t0 = Instant::now();
    let mut conn = with_channel(t0, 1);
    conn.close_channel(1, NOT_FOUND, "no queue 'q' in vhost '/'", 50, 10);
    let Some(Method::ChannelClose(close)) = sent_methods(&mut conn).pop() else { panic!("channel.close") };
    assert_eq!(close.reply_text, "NOT_FOUND - no queue 'q' in vhost '/'");
    conn.send_method(1, &Method::BasicQosOk(Default::default()));
    assert!(sent(&mut conn).is_empty(), "nothing goes out on a closing channel");
    conn.handle_input(&method(1, ChannelClose::default()), t0);
    assert_eq!(sent_methods(&mut conn), [Method::ChannelCloseOk(Default::default())]);
    conn.handle_input(&method(1, ChannelCloseOk::default()), t0);
    assert_eq!(events(&mut conn), [Event::ChannelClosed { channel: 1 }]);
}

#[test]
fn frame_errors_close_at_once() {
    let t0 = Instant::now();
    let cases = [
        raw_frame(FRAME_BODY, 1, &[0; 8193]),
        [&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0][..], &[0xCD]].concat(),
        raw_frame(7, 0, b""),
    ];
    for bytes in cases {
        let mut conn = running(t0);
        conn.handle_input(&bytes[..20.min(bytes.len())], t0);
        conn.handle_input(&bytes[20.min(bytes.len())..], t0);
        assert_eq!(close_sent(&mut conn), (FRAME_ERROR, 0, 0));
        assert!(conn.is_closed());
        assert!(matches!(&events(&mut conn)[..], [Event::Closed { .. }]));
    }
}

#[test]
fn frame_max_is_enforced_before_tuning() {
    let t0 = Instant::now();
    let mut conn = Connection::new(config(), t0);
    conn.handle_input(PROTOCOL_HEADER, t0);
    let _ = sent(&mut conn);
    conn.handle_input(&[FRAME_METHOD, 0, 0, 0, 0, 0x10, 0x01], t0);
    assert_eq!(close_sent(&mut conn), (FRAME_ERROR, 0, 0));
}

#[test]
fn bad_methods() {
    let t0 = Instant::now();
    let mut conn = with_channel(t0, 1);
    conn.handle_input(&raw_frame(FRAME_METHOD, 1, b"\x00\x3c\x00\x63"), t0);
    assert_eq!(close_sent(&mut conn), (NOT_IMPLEMENTED, 60, 99));

    let mut conn = with_channel(t0, 1);
    conn.handle_input(&raw_frame(FRAME_METHOD, 1, b"\x00\x3c\x00\x28\x00\x00\x05ab"), t0);
    assert_eq!(close_sent(&mut conn), (SYNTAX_ERROR, 60, 40));

    let mut conn = with_channel(t0, 1);
    conn.handle_input(&raw_frame(FRAME_METHOD, 1, b"\x00"), t0);
    assert_eq!(close_sent(&mut conn), (SYNTAX_ERROR, 0, 0));

    let mut conn = running(t0);
    conn.handle_input(&raw_frame(FRAME_HEARTBEAT, 1, b""), t0);
    assert_eq!(close_sent(&mut conn), (UNEXPECTED_FRAME, 0, 0));
}

#[test]
fn server_close_waits_for_close_ok() {
    let t0 = Instant::now();
    let mut conn = with_channel(t0, 1);
    conn.handle_input(&header_frame(1, 1), t0);
    assert_eq!(close_sent(&mut conn), (UNEXPECTED_FRAME, 0, 0));
    assert!(matches!(&events(&mut conn)[..], [Event::Closed { .. }]));
    assert!(!conn.is_closed());
    assert_eq!(conn.poll_timeout(), Some(t0 + CLOSE_OK_WAIT));
    conn.handle_input(&[publish(1), method(0, ConnectionOpen::default())].concat(), t0);
    assert!(sent(&mut conn).is_empty() && events(&mut conn).is_empty());
    conn.handle_input(&method(0, ConnectionCloseOk::default()), t0);
    assert!(conn.is_closed());
    assert!(events(&mut conn).is_empty(), "Closed is reported once");

    let mut conn = running(t0);
    conn.close_connection(CONNECTION_FORCED, "broker shutdown", 0, 0);
    assert_eq!(close_sent(&mut conn), (CONNECTION_FORCED, 0, 0));
    conn.handle_timeout(t0 + CLOSE_OK_WAIT - Duration::from_millis(1));
    assert!(!conn.is_closed());
    conn.handle_timeout(t0 + CLOSE_OK_WAIT);
    assert!(conn.is_closed());
}

#[test]
fn client_close_is_answered() {
    let t0 = Instant::now();
    let mut conn = with_channel(t0, 1);
    conn.handle_input(
        &method(0, ConnectionClose { reply_code: 200, reply_text: "bye".into(), ..Default::default() }),
        t0,
    );
    assert_eq!(sent_methods(&mut conn), [Method::ConnectionCloseOk(Default::default())]);
    assert!(conn.is_closed());
    assert_eq!(events(&mut conn), [Event::Closed { reason: "client closed the connection: 200 bye".into() }]);
    conn.handle_input(&method(1, QueueDeclare::default()), t0);
    assert!(events(&mut conn).is_empty());
}

#[test]
fn heartbeats_both_ways() {
    let t0 = Instant::now();
    let mut conn = Connection::new(config(), t0);
    conn.handle_input(PROTOCOL_HEADER, t0);
    conn.handle_input(&start_ok("PLAIN", b"\0u\0p"), t0);
    conn.accept_login();
    conn.handle_input(&tune_ok(0, 0, 4), t0);
    let _ = (sent(&mut conn), events(&mut conn));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(1)), "handshake deadline first");
    conn.handle_input(&method(0, ConnectionOpen::default()), t0);
    conn.accept_open();
    let _ = (sent(&mut conn), events(&mut conn));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(2)));
    conn.handle_timeout(t0 + secs(2));
    assert_eq!(sent(&mut conn), [Frame::Heartbeat { channel: 0 }]);
    conn.handle_input(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END], t0 + secs(3));
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(4)));
    conn.handle_timeout(t0 + secs(4));
    conn.handle_timeout(t0 + secs(6));
    assert_eq!(sent(&mut conn).len(), 2);
    assert!(events(&mut conn).is_empty());
    conn.handle_timeout(t0 + secs(11));
    assert!(conn.is_closed());
    assert_eq!(events(&mut conn), [Event::Closed { reason: "missed heartbeats from client".into() }]);
}

#[test]
fn handshake_times_out() {
    let t0 = Instant::now();
    let mut conn = Connection::new(config(), t0);
    conn.handle_input(&PROTOCOL_HEADER[..4], t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + secs(1)));
    conn.handle_timeout(t0 + secs(1));
    assert!(conn.is_closed());
    assert_eq!(events(&mut conn), [Event::Closed { reason: "handshake timeout".into() }]);
}

#[test]
fn send_content_splits_by_frame_max() {
    let t0 = Instant::now();
    let mut conn = with_channel(t0, 1);
    let deliver = BasicDeliver { consumer_tag: "c".into(), delivery_tag: 1, ..Default::default() };
    let body = Bytes::from(vec![5; 20_000]);
    conn.send_content(1, &deliver.clone().into(), &BasicProperties::default(), &body);
    let frames = sent(&mut conn);
    assert_eq!(frames[0], Frame::Method { channel: 1, method: deliver.into() });
    assert!(matches!(&frames[1], Frame::Header { header, .. } if header.body_size == 20_000));
    let sizes: Vec<usize> = frames[2..]
        .iter()
        .map(|f| match f {
            Frame::Body { body, .. } => body.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, [8184, 8184, 3632]);

    conn.send_content(2, &BasicDeliver::default().into(), &BasicProperties::default(), &body);
    assert!(sent(&mut conn).is_empty(), "channel 2 is not open");
}

#[test]
fn partial_bodies_are_bounded_across_channels() {
    let t0 = Instant::now();
    let config = ConnectionConfig { frame_max: 65_536, ..config() };
    let mut conn = Connection::new(config, t0);
    conn.handle_input(PROTOCOL_HEADER, t0);
    conn.handle_input(&start_ok("PLAIN", b"\0u\0p"), t0);
    conn.accept_login();
    conn.handle_input(&tune_ok(0, 0, 0), t0);
    conn.handle_input(&method(0, ConnectionOpen::default()), t0);
    conn.accept_open();
    let size = Limits::test_min().frame_size_bytes_max as u64;
    let chunk = vec![0; 40_000];
    for channel in 1..=2 {
        conn.handle_input(&method(channel, ChannelOpen::default()), t0);
        conn.handle_input(&[publish(channel), header_frame(channel, size), body_frame(channel, &chunk)].concat(), t0);
    }
    let _ = events(&mut conn);
    assert_eq!(close_sent(&mut conn), (RESOURCE_ERROR, 60, 40));
}
