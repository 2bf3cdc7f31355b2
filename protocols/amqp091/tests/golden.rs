//! Golden frames, built by hand from the AMQP 0-9-1 spec (frame layout §4.2.3, field
//! encodings §4.2.5, bit packing, content header §4.2.6): each decodes to the expected typed
//! frame and re-encodes byte-exactly.

use bytes::Bytes;
use ferry_amqp091::frame::{self, Decoded, Frame};
use ferry_amqp091::{
    BasicDeliver, BasicProperties, BasicPublish, ConnectionOpen, ConnectionStart, ConnectionStartOk, ConnectionTune,
    ContentHeader, FieldTable, FieldValue, Method,
};

/// Frame header + payload + FRAME_END around a hand-written payload.
fn frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![frame_type];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(0xCE);
    out
}

fn decode_one(bytes: &[u8]) -> Frame {
    match frame::decode(bytes, 131_072) {
        Ok(Decoded::Frame { frame, consumed }) => {
            assert_eq!(consumed, bytes.len(), "one frame spans the whole vector");
            frame
        }
        other => panic!("{other:?}"),
    }
}

fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    match frame {
        Frame::Method { channel, method } => frame::encode_method(*channel, method, &mut out),
        Frame::Header { channel, header } => frame::encode_content_header(*channel, header, &mut out),
        Frame::Body { channel, body } => frame::encode_body(*channel, body, &mut out),
        Frame::Heartbeat { .. } => frame::encode_heartbeat(&mut out),
    }
    out
}

fn check(bytes: &[u8], expected: Frame) {
    assert_eq!(decode_one(bytes), expected);
    assert_eq!(encode(&expected), bytes);
}

fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
    entries.iter().cloned().collect()
}

#[test]
fn connection_start() {
    let payload = [
        &b"\x00\x0a\x00\x0a"[..],                             // class 10, method 10
        b"\x00\x09",                                          // version 0-9
        b"\x00\x00\x00\x12\x07productS\x00\x00\x00\x05Ferry", // server-properties (18 bytes)
        b"\x00\x00\x00\x0ePLAIN AMQPLAIN",                    // mechanisms
        b"\x00\x00\x00\x05en_US",                             // locales
    ]
    .concat();
    let start = ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: table(&[("product", FieldValue::string("Ferry"))]),
        mechanisms: Bytes::from_static(b"PLAIN AMQPLAIN"),
        locales: Bytes::from_static(b"en_US"),
    };
    check(&frame(1, 0, &payload), Frame::Method { channel: 0, method: start.into() });
}

#[test]
fn connection_start_ok() {
    let payload = [
        &b"\x00\x0a\x00\x0b"[..],
        b"\x00\x00\x00\x11\x07productS\x00\x00\x00\x04pika", // client-properties (17 bytes)
        b"\x05PLAIN",
        b"\x00\x00\x00\x0c\x00guest\x00guest",
        b"\x05en_US",
    ]
    .concat();
    let start_ok = ConnectionStartOk {
        client_properties: table(&[("product", FieldValue::string("pika"))]),
        mechanism: "PLAIN".into(),
        response: Bytes::from_static(b"\0guest\0guest"),
        locale: "en_US".into(),
    };
    check(&frame(1, 0, &payload), Frame::Method { channel: 0, method: start_ok.into() });
}

#[test]
fn connection_tune_and_open() {
    let tune = b"\x01\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x1e\x07\xff\x00\x02\x00\x00\x00\x3c\xce";
    let method = ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 };
    check(tune, Frame::Method { channel: 0, method: method.into() });

    let open = b"\x01\x00\x00\x00\x00\x00\x08\x00\x0a\x00\x28\x01/\x00\x00\xce";
    let method = ConnectionOpen { virtual_host: "/".into(), capabilities: String::new(), insist: false };
    check(open, Frame::Method { channel: 0, method: method.into() });
}

#[test]
fn basic_publish_header_and_body() {
    let publish = b"\x01\x00\x01\x00\x00\x00\x0e\x00\x3c\x00\x28\x00\x00\x00\x05hello\x02\xce";
    let method = BasicPublish {
        ticket: 0,
        exchange: String::new(),
        routing_key: "hello".into(),
        mandatory: false,
        immediate: true,
    };
    check(publish, Frame::Method { channel: 1, method: method.into() });

    let header = [
        &b"\x02\x00\x01\x00\x00\x00\x1a"[..],
        b"\x00\x3c\x00\x00",                 // class 60, weight 0
        b"\x00\x00\x00\x00\x00\x00\x00\x05", // body size 5
        b"\x90\x00",                         // content-type, delivery-mode
        b"\x0atext/plain\x02\xce",
    ]
    .concat();
    let properties =
        BasicProperties { content_type: Some("text/plain".into()), delivery_mode: Some(2), ..Default::default() };
    check(&header, Frame::Header { channel: 1, header: Box::new(ContentHeader::basic(5, properties)) });

    let body = b"\x03\x00\x01\x00\x00\x00\x05hello\xce";
    check(body, Frame::Body { channel: 1, body: Bytes::from_static(b"hello") });
}

#[test]
fn basic_deliver() {
    let deliver = [
        &b"\x01\x00\x01\x00\x00\x00\x17\x00\x3c\x00\x3c"[..],
        b"\x02c1",                           // consumer-tag
        b"\x00\x00\x00\x00\x00\x00\x00\x2a", // delivery-tag 42
        b"\x01",                             // redelivered
        b"\x00",                             // exchange ""
        b"\x05hello\xce",                    // routing-key
    ]
    .concat();
    let method = BasicDeliver {
        consumer_tag: "c1".into(),
        delivery_tag: 42,
        redelivered: true,
        exchange: String::new(),
        routing_key: "hello".into(),
    };
    check(&deliver, Frame::Method { channel: 1, method: method.into() });
}

#[test]
fn heartbeat() {
    check(b"\x08\x00\x00\x00\x00\x00\x00\xce", Frame::Heartbeat { channel: 0 });
}

#[test]
fn method_metadata() {
    let method: Method = BasicPublish::default().into();
    assert_eq!((method.class_id(), method.method_id(), method.name()), (60, 40, "basic.publish"));
    assert!(method.has_content() && !method.is_synchronous());
    assert_eq!(ferry_amqp091::method_name(40, 51), Some("exchange.unbind-ok"));
    assert_eq!(ferry_amqp091::reply_code_name(ferry_amqp091::NOT_ALLOWED), Some("NOT_ALLOWED"));
    assert!(ferry_amqp091::is_hard_error(ferry_amqp091::FRAME_ERROR));
    assert!(!ferry_amqp091::is_hard_error(ferry_amqp091::NOT_FOUND));
    assert_eq!(ferry_amqp091::PROTOCOL_HEADER, b"AMQP\x00\x00\x09\x01");
}
