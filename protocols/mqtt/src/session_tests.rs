//! Unit tests of the session state machine on synthetic instants: CONNECT rules and
//! refusals, packets before CONNECT, keep-alive, QoS 1 and QoS 2 in both directions, receive
//! maximum, topic aliases both ways, maximum packet size. Limits are `Limits::test_min()`.

use bytes::Bytes;

use super::*;

fn config() -> SessionConfig {
    SessionConfig { limits: Limits::test_min() }
}

fn events(session: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

fn packets(session: &mut Session) -> Vec<Packet> {
    let mut out = Vec::new();
    session.poll_transmit(&mut out);
    let mut rest = &out[..];
    let mut got = Vec::new();
    while !rest.is_empty() {
        match decode(rest, session.version(), usize::MAX).expect("session writes valid packets") {
            Decoded::Packet { packet, consumed } => {
                got.push(packet);
                rest = &rest[consumed..];
            }
            Decoded::Incomplete { .. } => panic!("partial packet in output"),
        }
    }
    got
}

fn connect_packet(version: Version, client_id: &str, clean: bool, keep_alive: u16, props: Properties) -> Vec<u8> {
    let connect = Connect {
        version,
        clean_start: clean,
        keep_alive,
        properties: props,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
    };
    bytes(&Packet::Connect(Box::new(connect)), version)
}

fn bytes(packet: &Packet, version: Version) -> Vec<u8> {
    let mut out = Vec::new();
    encode(packet, version, &mut out);
    out
}

fn connected(version: Version, props: Properties, t0: Instant) -> Session {
    let mut s = Session::new(config(), t0);
    s.handle_input(&connect_packet(version, "c1", true, 10, props), t0);
    assert!(matches!(s.poll_event(), Some(Event::Connect(_))));
    s.accept_connect(ConnectAnswer::default());
    let got = packets(&mut s);
    assert!(matches!(&got[..], [Packet::ConnAck(ConnAck { code: ReasonCode::SUCCESS, .. })]));
    s
}

fn publish(qos: QoS, id: Option<u16>, topic: &str, props: Properties) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: id,
        properties: props,
        payload: Bytes::from_static(b"x"),
    })
}

fn resp(kind: AckKind, id: u16) -> Packet {
    Packet::PubResp(PubResp { kind, packet_id: id, reason: ReasonCode::SUCCESS, properties: Properties::default() })
}

fn closed(events: &[Event]) -> Option<&CloseReason> {
    events.iter().find_map(|e| match e {
        Event::Closed { reason } => Some(reason),
        _ => None,
    })
}

#[test]
fn v5_connack_announces_limits() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.handle_input(&connect_packet(Version::V5, "", true, 10, Properties::default()), t0);
    assert!(matches!(s.poll_event(), Some(Event::Connect(_))));
    s.accept_connect(ConnectAnswer { assigned_client_id: Some("auto-1".into()), ..ConnectAnswer::default() });
    let Packet::ConnAck(ack) = packets(&mut s).remove(0) else { panic!("connack") };
    assert_eq!(ack.properties.assigned_client_identifier.as_deref(), Some("auto-1"));
    assert_eq!(ack.properties.receive_maximum, Some(4));
    assert_eq!(ack.properties.topic_alias_maximum, Some(4));
    assert_eq!(ack.properties.maximum_packet_size, Some(64 * 1024));
}

#[test]
fn connect_refusals() {
    let t0 = Instant::now();
    // 3.1.1: empty client id without clean session → return code 2.
    let mut s = Session::new(config(), t0);
    s.handle_input(&connect_packet(Version::V3_1_1, "", false, 0, Properties::default()), t0);
    assert_eq!(
        packets(&mut s),
        [Packet::ConnAck(ConnAck { session_present: false, code: ReasonCode(2), properties: Properties::default() })]
    );
    assert!(s.is_closed());
    // Unknown protocol level → 3.1.1-format CONNACK 0x01.
    let mut s = Session::new(config(), t0);
    s.handle_input(b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x3c\x00\x00", t0);
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    assert_eq!(out, [0x20, 0x02, 0x00, 0x01]);
    assert!(s.is_closed());
    // 5.0 with an authentication method → 0x8C.
    let mut s = Session::new(config(), t0);
    let props = Properties { authentication_method: Some("SCRAM-SHA-1".into()), ..Properties::default() };
    s.handle_input(&connect_packet(Version::V5, "a", true, 0, props), t0);
    let Packet::ConnAck(ack) = packets(&mut s).remove(0) else { panic!("connack") };
    assert_eq!(ack.code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    // The engine refuses bad credentials.
    let mut s = Session::new(config(), t0);
    s.handle_input(&connect_packet(Version::V3_1_1, "a", true, 0, Properties::default()), t0);
    s.refuse_connect(ReasonCode::BAD_USER_NAME_OR_PASSWORD, None);
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    assert_eq!(out, [0x20, 0x02, 0x00, 0x04]);
}

#[test]
fn packet_before_connect_closes_silently() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.handle_input(&bytes(&Packet::PingReq, Version::V3_1_1), t0);
    assert!(s.is_closed());
    assert!(packets(&mut s).is_empty());
    assert!(matches!(closed(&events(&mut s)), Some(CloseReason::ProtocolError(..))));
    // Another protocol's greeting is refused from its first byte, without waiting for more.
    let mut s = Session::new(config(), t0);
    s.handle_input(b"GET / HTTP/1.1\r\n", t0);
    assert!(s.is_closed());
}

#[test]
fn second_connect_and_wildcard_topic_are_protocol_errors() {
    let t0 = Instant::now();
    let mut s = connected(Version::V5, Properties::default(), t0);
    s.handle_input(&connect_packet(Version::V5, "c1", true, 10, Properties::default()), t0);
    let Packet::Disconnect(d) = packets(&mut s).remove(0) else { panic!("disconnect") };
    assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
    assert!(s.is_closed());

    let mut s = connected(Version::V5, Properties::default(), t0);
    s.handle_input(&bytes(&publish(QoS::AtMostOnce, None, "a/+", Properties::default()), Version::V5), t0);
    let Packet::Disconnect(d) = packets(&mut s).remove(0) else { panic!("disconnect") };
    assert_eq!(d.reason, ReasonCode::TOPIC_NAME_INVALID);

    let mut s = connected(Version::V3_1_1, Properties::default(), t0);
    s.handle_input(&bytes(&publish(QoS::AtMostOnce, None, "a/#", Properties::default()), Version::V3_1_1), t0);
    assert!(s.is_closed());
    assert!(packets(&mut s).is_empty(), "3.1.1 just closes");
}

#[test]
fn oversize_packet_is_refused_from_its_header() {
    let t0 = Instant::now();
    let mut s = connected(Version::V5, Properties::default(), t0);
    s.handle_input(&[0x30, 0xFF, 0xFF, 0x7F], t0);
    let Packet::Disconnect(d) = packets(&mut s).remove(0) else { panic!("disconnect") };
    assert_eq!(d.reason, ReasonCode::PACKET_TOO_LARGE);
    assert!(s.input.capacity() <= INPUT_BYTES_KEPT_MAX);
}

#[test]
fn keep_alive_closes_after_one_and_a_half_periods() {
    let t0 = Instant::now();
    let mut s = connected(Version::V5, Properties::default(), t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(15_000)));
    s.handle_input(&bytes(&Packet::PingReq, Version::V5), t0 + Duration::from_secs(5));
    assert_eq!(packets(&mut s), [Packet::PingResp]);
    s.handle_timeout(t0 + Duration::from_millis(19_999));
    assert!(!s.is_closed());
    s.handle_timeout(t0 + Duration::from_millis(20_000));
    assert!(s.is_closed());
    let Packet::Disconnect(d) = packets(&mut s).remove(0) else { panic!("disconnect") };
    assert_eq!(d.reason, ReasonCode::KEEP_ALIVE_TIMEOUT);
    assert_eq!(closed(&events(&mut s)), Some(&CloseReason::KeepAliveTimeout));
}

#[test]
fn inbound_qos2_delivers_once() {
    let t0 = Instant::now();
    let mut s = connected(Version::V3_1_1, Properties::default(), t0);
    let p = bytes(&publish(QoS::ExactlyOnce, Some(5), "a/b", Properties::default()), Version::V3_1_1);
    s.handle_input(&p, t0);
    assert!(matches!(&events(&mut s)[..], [Event::Publish(_)]));
    assert!(packets(&mut s).is_empty(), "PUBREC waits for the engine");
    s.handle_input(&p, t0);
    assert!(events(&mut s).is_empty(), "re-sent before PUBREC: not delivered again");
    s.complete_publish(5, ReasonCode::SUCCESS);
    assert_eq!(packets(&mut s), [resp(AckKind::PubRec, 5)]);
    s.handle_input(&p, t0);
    assert!(events(&mut s).is_empty(), "re-sent after PUBREC: not delivered again");
    assert_eq!(packets(&mut s), [resp(AckKind::PubRec, 5)]);
    assert_eq!(s.inbound_received(), [5]);
    s.handle_input(&bytes(&resp(AckKind::PubRel, 5), Version::V3_1_1), t0);
    assert_eq!(packets(&mut s), [resp(AckKind::PubComp, 5)]);
    s.handle_input(&p, t0);
    assert_eq!(events(&mut s).len(), 1, "after PUBCOMP the id is free again");
}

#[test]
fn qos2_state_survives_a_reconnect() {
    let t0 = Instant::now();
    let mut s = connected(Version::V5, Properties::default(), t0);
    s.restore_inbound_received(&[9]);
    s.handle_input(&bytes(&publish(QoS::ExactlyOnce, Some(9), "t", Properties::default()), Version::V5), t0);
    assert!(events(&mut s).is_empty());
    s.restore_releases(&[3]);
    assert_eq!(packets(&mut s), [resp(AckKind::PubRec, 9), resp(AckKind::PubRel, 3)]);
    s.handle_input(&bytes(&resp(AckKind::PubComp, 3), Version::V5), t0);
    assert!(s.pending_releases().is_empty());
}

#[test]
fn qos1_puback_waits_for_the_engine() {
    let t0 = Instant::now();
    let mut s = connected(Version::V5, Properties::default(), t0);
    s.handle_input(&bytes(&publish(QoS::AtLeastOnce, Some(1), "a", Properties::default()), Version::V5), t0);
    assert!(packets(&mut s).is_empty());
    s.complete_publish(1, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    let got = packets(&mut s);
    let Packet::PubResp(r) = &got[0] else { panic!("puback") };
    assert_eq!((r.kind, r.reason), (AckKind::PubAck, ReasonCode::NO_MATCHING_SUBSCRIBERS));
}

#[test]
fn receive_maximum_is_enforced_on_v5() {
    let t0 = Instant::now();
    let mut s = connected(Version::V5, Properties::default(), t0);
    for id in 1..=4 {
        s.handle_input(&bytes(&publish(QoS::AtLeastOnce, Some(id), "a", Properties::default()), Version::V5), t0);
    }
    assert!(s.inbound_held());
    s.handle_input(&bytes(&publish(QoS::AtLeastOnce, Some(5), "a", Properties::default()), Version::V5), t0);
    let got = packets(&mut s);
    let Some(Packet::Disconnect(d)) = got.last() else { panic!("disconnect") };
    assert_eq!(d.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
}

#[test]
fn inbound_topic_aliases() {
    let t0 = Instant::now();
    let mut s = connected(Version::V5, Properties::default(), t0);
    let set = Properties { topic_alias: Some(2), ..Properties::default() };
    s.handle_input(&bytes(&publish(QoS::AtMostOnce, None, "long/topic", set.clone()), Version::V5), t0);
    s.handle_input(&bytes(&publish(QoS::AtMostOnce, None, "", set), Version::V5), t0);
    let topics: Vec<String> = events(&mut s)
        .into_iter()
        .filter_map(|e| if let Event::Publish(p) = e { Some(p.topic) } else { None })
        .collect();
    assert_eq!(topics, ["long/topic", "long/topic"]);
    let bad = Properties { topic_alias: Some(5), ..Properties::default() };
    s.handle_input(&bytes(&publish(QoS::AtMostOnce, None, "x", bad), Version::V5), t0);
    let Some(Packet::Disconnect(d)) = packets(&mut s).pop() else { panic!("disconnect") };
    assert_eq!(d.reason, ReasonCode::TOPIC_ALIAS_INVALID);
}

fn outbound(topic: &str, qos: QoS) -> Outbound {
    Outbound {
        topic: topic.into(),
        qos,
        retain: false,
        dup: false,
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::from_static(b"payload"),
    }
}

#[test]
fn outbound_qos2_and_window() {
    let t0 = Instant::now();
    let props = Properties { receive_maximum: Some(2), ..Properties::default() };
    let mut s = connected(Version::V5, props, t0);
    let a = s.send_publish(outbound("t", QoS::ExactlyOnce)).expect("sent").expect("id");
    let b = s.send_publish(outbound("t", QoS::AtLeastOnce)).expect("sent").expect("id");
    assert_ne!(a, b);
    assert_eq!(s.send_publish(outbound("t", QoS::AtLeastOnce)), Err(SendError::WindowFull));
    assert_eq!(s.send_publish(outbound("t", QoS::AtMostOnce)), Ok(None), "QoS 0 needs no slot");
    let _ = packets(&mut s);
    s.handle_input(&bytes(&resp(AckKind::PubRec, a), Version::V5), t0);
    assert_eq!(events(&mut s), [Event::Acked { packet_id: a }]);
    assert_eq!(packets(&mut s), [resp(AckKind::PubRel, a)]);
    assert_eq!(s.send_window(), 0, "a QoS 2 slot is held until PUBCOMP");
    assert!(s.is_releasing(a));
    s.handle_input(&bytes(&resp(AckKind::PubComp, a), Version::V5), t0);
    s.handle_input(&bytes(&resp(AckKind::PubAck, b), Version::V5), t0);
    assert_eq!(events(&mut s), [Event::Completed { packet_id: a }, Event::Acked { packet_id: b }]);
    assert_eq!(s.send_window(), 2);
}

#[test]
fn a_redelivery_keeps_its_packet_id_and_a_release_is_restored_once() {
    let t0 = Instant::now();
    let mut s = connected(Version::V5, Properties::default(), t0);
    let first = Outbound { packet_id: Some(7), dup: true, ..outbound("t", QoS::ExactlyOnce) };
    assert_eq!(s.send_publish(first.clone()), Ok(Some(7)), "the preferred id when free");
    assert_ne!(s.send_publish(first).expect("sent"), Some(7), "another one when taken");
    assert!(!s.restore_release(7), "in flight as a PUBLISH: not a release");
    let _ = packets(&mut s);
    assert!(s.restore_release(9));
    assert!(s.restore_release(9), "already restored");
    assert!(!s.restore_release(0), "0 is no packet id");
    assert_eq!(packets(&mut s), [resp(AckKind::PubRel, 9)], "one PUBREL");
    s.handle_input(&bytes(&resp(AckKind::PubComp, 9), Version::V5), t0);
    assert_eq!(events(&mut s), [Event::Completed { packet_id: 9 }]);
    assert!(!s.is_releasing(9));
}

#[test]
fn outbound_topic_aliases_and_packet_size() {
    let t0 = Instant::now();
    let props = Properties { topic_alias_maximum: Some(1), maximum_packet_size: Some(40), ..Properties::default() };
    let mut s = connected(Version::V5, props, t0);
    s.send_publish(outbound("a/long/topic", QoS::AtMostOnce)).expect("sent");
    s.send_publish(outbound("a/long/topic", QoS::AtMostOnce)).expect("sent");
    s.send_publish(outbound("other", QoS::AtMostOnce)).expect("sent");
    let got: Vec<(String, Option<u16>)> = packets(&mut s)
        .into_iter()
        .filter_map(|p| if let Packet::Publish(p) = p { Some((p.topic, p.properties.topic_alias)) } else { None })
        .collect();
    assert_eq!(got, [("a/long/topic".into(), Some(1)), (String::new(), Some(1)), ("other".into(), None)]);
    let mut big = outbound("t", QoS::AtLeastOnce);
    big.payload = Bytes::from(vec![0u8; 64]);
    assert_eq!(s.send_publish(big), Err(SendError::TooLarge));
    assert!(packets(&mut s).is_empty());
}

#[test]
fn disconnect_with_will_and_session_expiry_rules() {
    let t0 = Instant::now();
    let mut s = connected(Version::V5, Properties::default(), t0);
    let d = ReasonPacket {
        reason: ReasonCode::DISCONNECT_WITH_WILL,
        properties: Properties { session_expiry_interval: Some(10), ..Properties::default() },
    };
    s.handle_input(&bytes(&Packet::Disconnect(d), Version::V5), t0);
    let Some(Packet::Disconnect(answer)) = packets(&mut s).pop() else { panic!("disconnect") };
    assert_eq!(answer.reason, ReasonCode::PROTOCOL_ERROR, "expiry may not rise from 0");

    let props = Properties { session_expiry_interval: Some(60), ..Properties::default() };
    let mut s = connected(Version::V5, props, t0);
    let d = ReasonPacket { reason: ReasonCode::DISCONNECT_WITH_WILL, properties: Properties::default() };
    s.handle_input(&bytes(&Packet::Disconnect(d), Version::V5), t0);
    assert_eq!(events(&mut s), [Event::Disconnect { reason: ReasonCode::DISCONNECT_WITH_WILL, session_expiry: None }]);
    assert!(s.is_closed());
}

#[test]
fn broker_disconnect_names_another_server() {
    let t0 = Instant::now();
    let mut s = connected(Version::V5, Properties::default(), t0);
    s.disconnect(ReasonCode::USE_ANOTHER_SERVER, Some("standby:1883".into()));
    let Some(Packet::Disconnect(d)) = packets(&mut s).pop() else { panic!("disconnect") };
    assert_eq!(d.reason, ReasonCode::USE_ANOTHER_SERVER);
    assert_eq!(d.properties.server_reference.as_deref(), Some("standby:1883"));
}

#[test]
fn server_keep_alive_caps_v5_clients() {
    let t0 = Instant::now();
    let limits = Limits { keep_alive_s_max: 20, ..Limits::test_min() };
    let mut s = Session::new(SessionConfig { limits }, t0);
    s.handle_input(&connect_packet(Version::V5, "c", true, 0, Properties::default()), t0);
    assert!(matches!(s.poll_event(), Some(Event::Connect(_))));
    s.accept_connect(ConnectAnswer::default());
    let Packet::ConnAck(ack) = packets(&mut s).remove(0) else { panic!("connack") };
    assert_eq!(ack.properties.server_keep_alive, Some(20));
    assert_eq!(s.keep_alive(), 20);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
}

#[test]
fn a_quiet_session_parks_and_resumes_unchanged() {
    let t0 = Instant::now();
    let props = Properties { receive_maximum: Some(2), topic_alias_maximum: Some(4), ..Properties::default() };
    let mut s = connected(Version::V5, props, t0);
    // Aliases both ways and a used packet id must survive the park.
    let set = Properties { topic_alias: Some(1), ..Properties::default() };
    s.handle_input(&bytes(&publish(QoS::AtMostOnce, None, "in/topic", set), Version::V5), t0);
    assert_eq!(events(&mut s).len(), 1);
    let first = s.send_publish(outbound("out/topic", QoS::AtLeastOnce)).expect("sent").expect("id");
    let _ = packets(&mut s);
    assert!(!s.is_quiet(), "a packet id in flight");
    let Err(mut s) = s.park() else { panic!("parked with a packet in flight") };
    s.handle_input(&bytes(&resp(AckKind::PubAck, first), Version::V5), t0);
    assert_eq!(events(&mut s), [Event::Acked { packet_id: first }]);
    assert!(s.is_quiet());

    let parked = s.park().expect("quiet");
    assert!(size_of::<ParkedSession>() < size_of::<Session>() / 4, "{}", size_of::<ParkedSession>());
    assert_eq!(parked.poll_timeout(), Some(t0 + Duration::from_millis(15_000)));
    let t1 = t0 + Duration::from_secs(3);
    let mut s = parked.resume(&config(), t1);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(15_000)), "last_received kept");
    let alias_only = Properties { topic_alias: Some(1), ..Properties::default() };
    s.handle_input(&bytes(&publish(QoS::AtMostOnce, None, "", alias_only), Version::V5), t1);
    let Some(Event::Publish(p)) = s.poll_event() else { panic!("publish") };
    assert_eq!(p.topic, "in/topic", "inbound alias kept");
    let second = s.send_publish(outbound("out/topic", QoS::AtLeastOnce)).expect("sent").expect("id");
    assert_ne!(second, first, "packet ids go on");
    let Packet::Publish(out) = packets(&mut s).remove(0) else { panic!("publish") };
    assert_eq!((out.topic.as_str(), out.properties.topic_alias), ("", Some(1)), "outbound alias kept");
}

#[test]
fn sessions_with_work_do_not_park() {
    let t0 = Instant::now();
    let fresh = Session::new(config(), t0);
    assert!(fresh.park().is_err(), "CONNECT not yet accepted");
    let mut s = connected(Version::V3_1_1, Properties::default(), t0);
    s.handle_input(&bytes(&Packet::PingReq, Version::V3_1_1)[..1], t0);
    assert!(!s.is_quiet(), "half a packet buffered");
    s.handle_input(&bytes(&Packet::PingReq, Version::V3_1_1)[1..], t0);
    assert!(!s.is_quiet(), "PINGRESP not yet written");
    let _ = packets(&mut s);
    s.handle_input(&bytes(&publish(QoS::ExactlyOnce, Some(9), "t", Properties::default()), Version::V3_1_1), t0);
    assert!(!s.is_quiet(), "a publish event queued");
    let _ = events(&mut s);
    assert!(!s.is_quiet(), "QoS 2 id pending");
}
