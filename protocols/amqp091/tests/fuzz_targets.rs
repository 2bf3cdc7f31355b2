//! The cargo-fuzz targets' bodies (`protocols/amqp091/fuzz/src/lib.rs`, not built by the
//! workspace because libFuzzer needs nightly) run here on stable under proptest, so the code a
//! fuzzing run executes is compiled and exercised by `cargo test`. This is property testing with
//! random inputs, not coverage-guided fuzzing; run `cargo +nightly fuzz run` for that.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use ferry_amqp091::frame;
use ferry_amqp091::{BasicPublish, ChannelOpen, ConnectionStartOk, ConnectionTuneOk, Method, PROTOCOL_HEADER};
use proptest::prelude::*;

/// A valid opening, so random tails reach the running connection.
fn handshake() -> Vec<u8> {
    let mut out = PROTOCOL_HEADER.to_vec();
    let start_ok = ConnectionStartOk {
        mechanism: "PLAIN".into(),
        response: bytes::Bytes::from_static(b"\0u\0p"),
        ..Default::default()
    };
    let methods: [Method; 4] = [
        start_ok.into(),
        ConnectionTuneOk { channel_max: 0, frame_max: 0, heartbeat: 0 }.into(),
        ferry_amqp091::ConnectionOpen::default().into(),
        ChannelOpen::default().into(),
    ];
    for (i, m) in methods.iter().enumerate() {
        frame::encode_method(u16::from(i == 3), m, &mut out);
    }
    frame::encode_method(1, &BasicPublish::default().into(), &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn frame_decode_target(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        targets::frame_decode(&data);
        let mut framed = Vec::new();
        frame::encode_body(1, &data, &mut framed);
        framed.extend_from_slice(&data);
        targets::frame_decode(&framed);
    }

    #[test]
    fn connection_target(seed in any::<u8>(), tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        targets::connection(&[&[seed][..], &tail].concat());
        targets::connection(&[&[seed][..], &handshake(), &tail].concat());
    }
}
