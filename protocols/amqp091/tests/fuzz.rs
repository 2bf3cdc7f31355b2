//! Property tests ("fuzz"): arbitrary bytes in arbitrary chunks never panic a connection and
//! keep its output bounded; arbitrary payloads never panic the decoders; every decoded method
//! re-encodes to a payload that decodes to the same method.

use std::time::{Duration, Instant};

use ferry_amqp091::frame::{self, Decoded};
use ferry_amqp091::*;
use ferry_wire::Limits;
use proptest::prelude::*;

/// The fuzz targets' engine stand-in (their bodies run in `fuzz_targets.rs`).
#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

/// What the connection writes on its own: connection.start, a tune, a close, heartbeats.
const OWN_OUTPUT_BYTES_MAX: usize = 2048;

fn method(channel: u16, method: impl Into<Method>) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_method(channel, &method.into(), &mut out);
    out
}

/// Valid pieces a fuzzed stream is built from, so it gets past the handshake often.
fn tokens() -> Vec<Vec<u8>> {
    let mut header = Vec::new();
    let properties = BasicProperties { content_type: Some("t".into()), ..Default::default() };
    frame::encode_content_header(1, &ContentHeader::basic(3, properties), &mut header);
    let mut body = Vec::new();
    frame::encode_body(1, b"abc", &mut body);
    let start_ok = ConnectionStartOk {
        mechanism: "PLAIN".into(),
        response: bytes::Bytes::from_static(b"\0u\0p"),
        ..Default::default()
    };
    vec![
        PROTOCOL_HEADER.to_vec(),
        method(0, start_ok),
        method(0, ConnectionTuneOk { channel_max: 0, frame_max: 0, heartbeat: 1 }),
        method(0, ConnectionOpen::default()),
        method(1, ChannelOpen::default()),
        method(2, ChannelOpen::default()),
        method(1, BasicPublish::default()),
        header,
        body,
        method(1, QueueDeclare::default()),
        method(1, ChannelClose::default()),
        method(1, ChannelCloseOk::default()),
        method(0, ConnectionCloseOk::default()),
        vec![8, 0, 0, 0, 0, 0, 0, 0xCE],
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => (0..14usize).prop_map(|i| tokens()[i].clone()),
        1 => proptest::collection::vec(any::<u8>(), 0..24),
    ];
    // Most streams start with a valid handshake so the fuzzing reaches the running state.
    (any::<u8>(), proptest::collection::vec(piece, 0..40)).prop_map(|(prefix, pieces)| {
        let handshake = tokens()[..5].concat();
        let keep = if prefix < 192 { handshake.len() } else { usize::from(prefix) % handshake.len() };
        [handshake[..keep].to_vec(), pieces.concat()].concat()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn connection_never_panics_and_output_stays_bounded(
        bytes in stream(),
        cuts in proptest::collection::vec(1..64usize, 1..16),
    ) {
        let t0 = Instant::now();
        let config = ConnectionConfig { limits: Limits::test_min(), ..ConnectionConfig::default() };
        let mut conn = Connection::new(config, t0);
        let mut rest = &bytes[..];
        let mut written = 0;
        let mut step = 0;
        while !rest.is_empty() {
            let cut = cuts[step % cuts.len()].min(rest.len());
            let now = t0 + Duration::from_millis(step as u64 * 100);
            conn.handle_input(&rest[..cut], now);
            rest = &rest[cut..];
            step += 1;
            targets::play_engine(&mut conn, now);
            prop_assert!(conn.pending_output_bytes() <= OWN_OUTPUT_BYTES_MAX + 4 * (bytes.len() - rest.len()));
            let mut out = Vec::new();
            conn.poll_transmit(&mut out);
            written += out.len();
        }
        prop_assert!(written <= OWN_OUTPUT_BYTES_MAX + 4 * bytes.len() + 64 * step);
        conn.handle_timeout(t0 + Duration::from_secs(3600));
        conn.handle_timeout(t0 + Duration::from_secs(7200));
        prop_assert!(conn.is_closed(), "an idle connection ends (handshake, heartbeat or close timeout)");
    }

    #[test]
    fn decoders_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = frame::decode(&payload, 4096);
        let _ = ContentHeader::decode(&payload);
        let _ = FieldTable::decode(&payload);
        if let Ok(method) = Method::decode(&payload) {
            let mut again = Vec::new();
            method.encode(&mut again);
            prop_assert_eq!(Method::decode(&again), Ok(method));
        }
    }

    #[test]
    fn methods_with_valid_ids_round_trip(
        class_method in prop::sample::select(vec![(10u16, 10u16), (10, 11), (20, 40), (40, 10), (50, 10), (60, 20), (60, 40), (60, 60), (60, 120)]),
        args in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut payload = class_method.0.to_be_bytes().to_vec();
        payload.extend_from_slice(&class_method.1.to_be_bytes());
        payload.extend_from_slice(&args);
        if let Ok(method) = Method::decode(&payload) {
            let mut again = Vec::new();
            method.encode(&mut again);
            prop_assert_eq!(Method::decode(&again), Ok(method));
        }
        let mut framed = Vec::new();
        frame::encode_body(1, &payload, &mut framed);
        let decoded = frame::decode(&framed, 4096);
        let complete = matches!(decoded, Ok(Decoded::Frame { .. }));
        prop_assert!(complete);
    }
}
