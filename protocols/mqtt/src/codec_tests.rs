//! Codec tests: golden bytes from the specs' examples and from real clients, round trips of
//! every packet in both versions, and the malformed cases the session must refuse.

use bytes::Bytes;

use super::*;

const MAX: usize = 1 << 20;

fn one(buf: &[u8], version: Version) -> Result<Packet, DecodeError> {
    match decode(buf, version, MAX)? {
        Decoded::Packet { packet, consumed } => {
            assert_eq!(consumed, buf.len(), "whole buffer consumed");
            Ok(packet)
        }
        Decoded::Incomplete { need } => panic!("incomplete, need {need}"),
    }
}

fn round_trip(packet: Packet, version: Version) {
    let mut out = Vec::new();
    encode(&packet, version, &mut out);
    assert_eq!(one(&out, version), Ok(packet));
}

#[test]
fn paho_v311_connect_decodes() {
    // paho-mqtt 2.x: CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id "p1".
    let bytes = b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02p1";
    let Packet::Connect(c) = one(bytes, Version::V3_1_1).expect("valid") else { panic!("connect") };
    assert_eq!((c.version, c.clean_start, c.keep_alive, c.client_id.as_str()), (Version::V3_1_1, true, 60, "p1"));
    let mut out = Vec::new();
    encode(&Packet::Connect(c), Version::V3_1_1, &mut out);
    assert_eq!(out, bytes, "re-encodes byte-exact");
}

#[test]
fn every_packet_round_trips_in_both_versions() {
    for version in [Version::V3_1_1, Version::V5] {
        let v5 = version.is_v5();
        let props = |p: Properties| if v5 { p } else { Properties::default() };
        let will = Will {
            topic: "w/t".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: props(Properties { will_delay_interval: Some(5), ..Properties::default() }),
        };
        round_trip(
            Packet::Connect(Box::new(Connect {
                version,
                clean_start: false,
                keep_alive: 30,
                properties: props(Properties { session_expiry_interval: Some(60), ..Properties::default() }),
                client_id: "c".into(),
                will: Some(will),
                username: Some("u".into()),
                password: Some(Bytes::from_static(b"p")),
            })),
            version,
        );
        round_trip(
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: ReasonCode::SUCCESS,
                properties: props(Properties { receive_maximum: Some(10), ..Properties::default() }),
            }),
            version,
        );
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            round_trip(
                Packet::Publish(Publish {
                    dup: qos != QoS::AtMostOnce,
                    qos,
                    retain: true,
                    topic: "a/b".into(),
                    packet_id: (qos != QoS::AtMostOnce).then_some(7),
                    properties: props(Properties { message_expiry_interval: Some(9), ..Properties::default() }),
                    payload: Bytes::from_static(b"hello"),
                }),
                version,
            );
        }
        for kind in [AckKind::PubAck, AckKind::PubRec, AckKind::PubRel, AckKind::PubComp] {
            let reason = if v5 { ReasonCode::NO_MATCHING_SUBSCRIBERS } else { ReasonCode::SUCCESS };
            let properties = props(Properties { reason_string: Some("r".into()), ..Properties::default() });
            round_trip(Packet::PubResp(PubResp { kind, packet_id: 9, reason, properties }), version);
            let plain = PubResp { kind, packet_id: 9, reason: ReasonCode::SUCCESS, properties: Properties::default() };
            round_trip(Packet::PubResp(plain), version);
        }
        let options = SubOptions { qos: QoS::ExactlyOnce, no_local: v5, retain_as_published: v5, retain_handling: 0 };
        round_trip(
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                properties: props(Properties { subscription_identifiers: vec![42], ..Properties::default() }),
                filters: vec![("a/+".into(), options), ("b/#".into(), SubOptions { qos: QoS::AtMostOnce, ..options })],
            }),
            version,
        );
        let codes = vec![ReasonCode::GRANTED_QOS_2, ReasonCode::UNSPECIFIED_ERROR];
        round_trip(Packet::SubAck(SubAck { packet_id: 1, properties: Properties::default(), codes }), version);
        let unsub = Unsubscribe { packet_id: 2, properties: Properties::default(), filters: vec!["a/+".into()] };
        round_trip(Packet::Unsubscribe(unsub), version);
        let codes = if v5 { vec![ReasonCode::NO_SUBSCRIPTION_EXISTED] } else { vec![] };
        round_trip(Packet::UnsubAck(UnsubAck { packet_id: 2, properties: Properties::default(), codes }), version);
        round_trip(Packet::PingReq, version);
        round_trip(Packet::PingResp, version);
        let reason = if v5 { ReasonCode::DISCONNECT_WITH_WILL } else { ReasonCode::SUCCESS };
        round_trip(Packet::Disconnect(ReasonPacket { reason, properties: Properties::default() }), version);
    }
    let auth = ReasonPacket {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: Properties { authentication_method: Some("SCRAM".into()), ..Properties::default() },
    };
    round_trip(Packet::Auth(auth), Version::V5);
}

#[test]
fn partial_input_asks_for_more() {
    let mut out = Vec::new();
    encode(&Packet::PingReq, Version::V3_1_1, &mut out);
    assert_eq!(decode(&[], Version::V3_1_1, MAX), Ok(Decoded::Incomplete { need: 2 }));
    assert_eq!(decode(&out[..1], Version::V3_1_1, MAX), Ok(Decoded::Incomplete { need: 1 }));
    assert_eq!(decode(&[0x30, 0x05, 0x00], Version::V3_1_1, MAX), Ok(Decoded::Incomplete { need: 4 }));
}

#[test]
fn size_is_checked_before_the_body_arrives() {
    // A PUBLISH announcing 268 MB: refused from its 5 header bytes.
    let header = [0x30, 0xFF, 0xFF, 0xFF, 0x7F];
    assert!(matches!(decode(&header, Version::V5, MAX), Err(DecodeError::PacketTooLarge { .. })));
    assert_eq!(decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], Version::V5, MAX), Err(DecodeError::BadRemainingLength));
}

#[test]
fn malformed_packets_are_refused() {
    let v4 = Version::V3_1_1;
    let cases: [(&[u8], Version); 9] = [
        (b"\x00\x00", v4),                                     // packet type 0
        (b"\xF0\x00", v4),                                     // AUTH on 3.1.1
        (b"\x82\x05\x00\x01\x00\x01a", v4),                    // SUBSCRIBE with flags 0
        (b"\x36\x05\x00\x01a\x00\x01", v4),                    // PUBLISH QoS 3
        (b"\x38\x03\x00\x01a", v4),                            // DUP on QoS 0
        (b"\x82\x02\x00\x01", v4),                             // SUBSCRIBE with no filter
        (b"\x30\x04\x00\x02\xC3\x28", v4),                     // topic not UTF-8
        (b"\xC0\x01\x00", v4),                                 // PINGREQ with a body
        (b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", v4), // reserved CONNECT flag
    ];
    for (bytes, version) in cases {
        assert!(decode(bytes, version, MAX).is_err(), "{bytes:?}");
    }
    let bad_level = b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x3c\x00\x00";
    assert_eq!(decode(bad_level, v4, MAX), Err(DecodeError::UnsupportedProtocol(7)));
}
