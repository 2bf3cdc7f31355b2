//! STOMP codec throughput: decode and encode of one SEND frame (realistic headers) with 16 B,
//! 1 KiB and 64 KiB bodies, reported in bytes/s of whole frames. Single bench thread; the
//! frame is built once per size, the encode buffer is reused (cleared) between iterations.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_benches::{BODY_SIZES_BYTES, body, size_label};
use ferry_stomp::{Command, Decoded, Frame, Version, decode, encode};
use ferry_wire::Limits;

fn send_frame(len: usize) -> Frame {
    Frame::new(Command::Send)
        .with_header("destination", "/queue/perf-0")
        .with_header("content-type", "application/octet-stream")
        .with_header("content-length", len.to_string())
        .with_header("persistent", "true")
        .with_header("receipt", "r-123456")
        .with_body(body(len))
}

fn codec(c: &mut Criterion) {
    let limits = Limits::default();
    let version = Version::V1_2;
    let mut group = c.benchmark_group("stomp_codec");
    for len in BODY_SIZES_BYTES {
        let frame = send_frame(len);
        let mut wire = Vec::new();
        encode(&frame, version, &mut wire);
        let bytes = u64::try_from(wire.len()).expect("frame length fits u64");
        group.throughput(Throughput::Bytes(bytes));
        let label = size_label(len);

        group.bench_with_input(BenchmarkId::new("decode_send", &label), &wire, |b, wire| {
            b.iter(|| match decode(black_box(wire), version, &limits) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    assert_eq!(consumed, wire.len());
                    black_box(frame)
                }
                other => panic!("expected a whole frame, got {other:?}"),
            });
        });

        let mut out = Vec::with_capacity(wire.len());
        group.bench_with_input(BenchmarkId::new("encode_send", &label), &frame, |b, frame| {
            b.iter(|| {
                out.clear();
                encode(black_box(frame), version, &mut out);
                black_box(out.len())
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
