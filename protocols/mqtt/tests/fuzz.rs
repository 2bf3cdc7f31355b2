//! Property tests, the decoder's fuzz target among them: arbitrary bytes never panic the
//! decoder or a session (before and after CONNECT, 3.1.1 and 5.0), and a valid packet stream
//! split into arbitrary chunks yields the same events as one write.

use std::time::Instant;

use bytes::Bytes;
use ferry_mqtt::{
    ConnectAnswer, Event, Packet, Properties, Publish, QoS, Session, SessionConfig, SubOptions, Subscribe, Version,
    decode, encode,
};
use ferry_wire::Limits;
use proptest::prelude::*;

fn config() -> SessionConfig {
    SessionConfig { limits: Limits::test_min() }
}

fn connect_bytes(version: Version) -> Vec<u8> {
    let level = match version {
        Version::V5 => 5,
        _ => 4,
    };
    let mut out = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 30];
    if version == Version::V5 {
        out.push(0);
    }
    out.extend_from_slice(&[0, 1, b'c']);
    out[1] = u8::try_from(out.len() - 2).expect("short");
    out
}

fn stream(version: Version, topics: &[String]) -> Vec<u8> {
    let mut out = connect_bytes(version);
    for (i, topic) in topics.iter().enumerate() {
        let id = u16::try_from(i + 1).expect("few");
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i % 3];
        let publish = Publish {
            dup: false,
            qos,
            retain: i % 2 == 0,
            topic: topic.clone(),
            packet_id: (qos != QoS::AtMostOnce).then_some(id),
            properties: Properties::default(),
            payload: Bytes::from(vec![u8::try_from(i % 256).expect("byte"); i * 7]),
        };
        encode(&Packet::Publish(publish), version, &mut out);
        let options = SubOptions { qos, no_local: false, retain_as_published: false, retain_handling: 0 };
        let subscribe =
            Subscribe { packet_id: id, properties: Properties::default(), filters: vec![(topic.clone(), options)] };
        encode(&Packet::Subscribe(subscribe), version, &mut out);
        encode(&Packet::PingReq, version, &mut out);
    }
    out
}

/// Events, then the packets written apart from PINGRESP (answered at once, so its place
/// among deferred acknowledgements depends on chunking), then the PINGRESP count.
fn run(chunks: &[&[u8]]) -> (Vec<Event>, Vec<Packet>, usize) {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    let mut events = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        s.handle_input(chunk, t0);
        while let Some(event) = s.poll_event() {
            if matches!(event, Event::Connect(_)) {
                s.accept_connect(ConnectAnswer::default());
            }
            if let Event::Publish(p) = &event
                && let Some(id) = p.packet_id
            {
                s.complete_publish(id, ferry_mqtt::ReasonCode::SUCCESS);
            }
            events.push(event);
        }
        s.poll_transmit(&mut out);
    }
    let version = s.version();
    let mut packets = Vec::new();
    let mut rest = &out[..];
    while let Ok(ferry_mqtt::Decoded::Packet { packet, consumed }) = decode(rest, version, usize::MAX) {
        packets.push(packet);
        rest = &rest[consumed..];
    }
    let pings = packets.iter().filter(|p| **p == Packet::PingResp).count();
    packets.retain(|p| *p != Packet::PingResp);
    (events, packets, pings)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), v5 in any::<bool>()) {
        let version = if v5 { Version::V5 } else { Version::V3_1_1 };
        let _ = decode(&bytes, version, 1 << 16);
    }

    #[test]
    fn session_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512), v5 in any::<bool>()) {
        let version = if v5 { Version::V5 } else { Version::V3_1_1 };
        let connect = connect_bytes(version);
        let _ = run(&[&bytes]);
        let _ = run(&[&connect, &bytes]);
    }

    #[test]
    fn chunking_does_not_change_the_outcome(
        topics in proptest::collection::vec("[a-z]{1,5}(/[a-z]{1,5}){0,3}", 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        v5 in any::<bool>(),
    ) {
        let version = if v5 { Version::V5 } else { Version::V3_1_1 };
        let bytes = stream(version, &topics);
        let whole = run(&[&bytes]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&bytes[start..cut]);
            start = cut;
        }
        chunks.push(&bytes[start..]);
        let split = run(&chunks);
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(whole.0.len(), 1 + 2 * topics.len());
    }
}
