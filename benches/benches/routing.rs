//! Routing benches: `RoutingTable::route` on `amq.topic` with `BINDING_COUNT` bindings (one
//! queue each, patterns mixing literals, `*` and `#`), `TopicPattern::matches` alone, and
//! `Placement::place`. Single bench thread; the table is built once (untimed).
//! Limits: `BINDING_COUNT` queues and bindings, all in memory.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_engine::ids::ShardId;
use ferry_engine::model::routing::{MetaOp, QueueSpec, RoutingTable};
use ferry_engine::model::topic::TopicPattern;
use ferry_engine::placement::Placement;

const BINDING_COUNT: usize = 10_000;
const SECTOR_COUNT: usize = 50;
const SHARD_COUNT: u16 = 4;
const PLACEMENT_NAME_COUNT: usize = 1024;

/// The binding key of queue `i`: a quarter literal, a quarter `*`, a quarter trailing `#`,
/// a quarter leading `#` (the backtracking case).
fn pattern(i: usize) -> String {
    let sector = i % SECTOR_COUNT;
    match i % 4 {
        0 => format!("stocks.s{sector}.q{i}"),
        1 => format!("stocks.*.q{i}"),
        2 => format!("stocks.s{sector}.#"),
        _ => format!("#.s{sector}.events"),
    }
}

fn table() -> RoutingTable {
    let placement = Placement::new(SHARD_COUNT, HashMap::new());
    let mut table = RoutingTable::default();
    for i in 0..BINDING_COUNT {
        let name = format!("queue-{i}");
        let shard = placement.place("/", &name, 0);
        table.apply(&MetaOp::DeclareQueue {
            spec: QueueSpec {
                name: name.clone(),
                durable: true,
                auto_delete: false,
                exclusive: None,
                arguments: Vec::new(),
                shard,
            },
            passive: false,
            by: None,
        });
        table.apply(&MetaOp::Bind {
            exchange: "amq.topic".to_owned(),
            queue: name,
            key: pattern(i),
            arguments: Vec::new(),
        });
    }
    table
}

/// Routing keys with different fan-outs: (label, key).
const ROUTE_KEYS: [(&str, &str); 4] = [
    ("literal_hit", "stocks.s4.q4"),
    ("sector_fanout", "stocks.s6.trade"),
    ("hash_backtrack", "app.eu.west.s7.events"),
    ("miss", "weather.today.rain"),
];

fn route(c: &mut Criterion) {
    let table = table();
    let mut group = c.benchmark_group("route_amq_topic_10k");
    group.throughput(Throughput::Elements(1));
    for (label, key) in ROUTE_KEYS {
        let mut out = Vec::new();
        table.route("amq.topic", key, &[], &mut out);
        let hits = out.len();
        group.bench_function(BenchmarkId::new(label, format!("{hits}_queues")), |b| {
            let mut out = Vec::with_capacity(hits);
            b.iter(|| {
                out.clear();
                table.route("amq.topic", black_box(key), &[], &mut out);
                black_box(out.len())
            });
        });
    }
    group.finish();
}

/// (label, pattern, key) pairs for the matcher alone.
const MATCH_CASES: [(&str, &str, &str); 5] = [
    ("literal", "stocks.nyse.ibm", "stocks.nyse.ibm"),
    ("star", "stocks.*.ibm", "stocks.nyse.ibm"),
    ("hash_tail", "stocks.#", "stocks.nyse.ibm.trade.fill"),
    ("hash_backtrack", "#.a.#.b", "x.a.y.a.z.q.a.w.b"),
    ("miss_first_word", "logs.#", "stocks.nyse.ibm"),
];

fn topic_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_pattern_matches");
    group.throughput(Throughput::Elements(1));
    for (label, pattern, key) in MATCH_CASES {
        let compiled = TopicPattern::new(pattern);
        group.bench_function(label, |b| {
            b.iter(|| black_box(compiled.matches(black_box(key))));
        });
    }
    group.finish();
}

fn place(c: &mut Criterion) {
    let placement = Placement::new(SHARD_COUNT, HashMap::new());
    let names: Vec<String> = (0..PLACEMENT_NAME_COUNT).map(|i| format!("orders.region-{}.queue-{i}", i % 7)).collect();
    let mut group = c.benchmark_group("placement");
    let count = u64::try_from(names.len()).expect("count fits u64");
    group.throughput(Throughput::Elements(count));
    group.bench_function(BenchmarkId::new("place", PLACEMENT_NAME_COUNT), |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for name in &names {
                let shard: ShardId = placement.place("/", black_box(name), 0);
                acc += shard.index();
            }
            black_box(acc)
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = route, topic_match, place
}
criterion_main!(benches);
