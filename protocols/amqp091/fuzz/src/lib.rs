//! The bodies of the AMQP 0-9-1 fuzz targets, kept free of libFuzzer so the crate's stable test
//! (`protocols/amqp091/tests/fuzz_targets.rs`) runs the very same code. Each panics only when a
//! property fails: a decoder that panics, consumes nothing, claims more than it was given, or a
//! connection whose output outgrows what its input can justify.

use std::time::{Duration, Instant};

use ferry_amqp091::frame::{self, Decoded};
use ferry_amqp091::{Connection, ConnectionConfig, Event, QueueDeclareOk};
use ferry_wire::Limits;

/// Largest payload the frame target accepts (RabbitMQ's default frame-max).
const PAYLOAD_BYTES_MAX: u32 = 131_072;
/// What a connection writes on its own: start, tune, close, heartbeats.
const OWN_OUTPUT_BYTES_MAX: usize = 2048;

/// Answers what the connection asks of the engine — logins and opens accepted, every method
/// answered — and lets its timers run up to a second past `now`.
pub fn play_engine(conn: &mut Connection, now: Instant) {
    while let Some(event) = conn.poll_event() {
        match event {
            Event::Login { .. } => conn.accept_login(),
            Event::Open { .. } => conn.accept_open(),
            Event::Method { channel, .. } => conn.send_method(channel, &QueueDeclareOk::default().into()),
            _ => {}
        }
    }
    if let Some(at) = conn.poll_timeout() {
        conn.handle_timeout(at.min(now + Duration::from_secs(1)));
    }
}

/// Decodes frames back to back from `data` until it runs out or is malformed.
pub fn frame_decode(data: &[u8]) {
    let mut rest = data;
    while let Ok(Decoded::Frame { consumed, .. }) = frame::decode(rest, PAYLOAD_BYTES_MAX) {
        assert!(consumed >= frame::FRAME_OVERHEAD_BYTES && consumed <= rest.len(), "frame bounds");
        rest = &rest[consumed..];
    }
}

/// Feeds `data` to a server connection in chunks whose sizes the first byte picks, answering
/// logins, opens and methods as an engine would; output must stay proportional to input.
pub fn connection(data: &[u8]) {
    let Some((&seed, bytes)) = data.split_first() else { return };
    let t0 = Instant::now();
    let config = ConnectionConfig { limits: Limits::test_min(), ..ConnectionConfig::default() };
    let mut conn = Connection::new(config, t0);
    let chunk = usize::from(seed % 64) + 1;
    let mut written = 0;
    for (step, part) in bytes.chunks(chunk).enumerate() {
        let now = t0 + Duration::from_millis(step as u64 * 100);
        conn.handle_input(part, now);
        play_engine(&mut conn, now);
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        written += out.len();
        assert!(written <= OWN_OUTPUT_BYTES_MAX + 4 * bytes.len() + 64 * (step + 1), "output bounded by input");
    }
}
