//! `ShardLog` benches: raw append throughput at 16 B, 1 KiB and 64 KiB bodies (records/s and
//! bytes/s, no sync), group-commit latency (append N records then one msync'd `SyncJob`, N in
//! 1, 16, 256) and recovery speed (`ShardLog::open` of a ~32 MiB log, bytes/s). Runs on the
//! bench thread; logs live in a temp dir (set `FERRY_BENCH_DIR` to pick the disk). Limits: a
//! log is thrown away and recreated (untimed) once it holds `LOG_RESET_BYTES`, so a run never
//! writes more than that per log.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_benches::{BODY_SIZES_BYTES, body, size_label};
use ferry_storage::{LogConfig, Record, ShardLog, StoredMessage};
use tempfile::TempDir;

/// Segment size used by the append benches (rolls are part of the cost).
const SEGMENT_SIZE_BYTES: u64 = 16 * 1024 * 1024;
/// A log is recreated once it holds this much, keeping disk use bounded.
const LOG_RESET_BYTES: u64 = 256 * 1024 * 1024;
/// Size of the log the recovery bench opens.
const RECOVERY_LOG_BYTES: usize = 32 * 1024 * 1024;
/// Body size of each record in the group-commit and recovery logs.
const COMMIT_BODY_BYTES: usize = 1024;

fn scratch_dir() -> TempDir {
    match std::env::var_os("FERRY_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create bench temp dir")
}

fn enqueue(msg_id: u64, len: usize) -> Record {
    Record::Enqueue(StoredMessage {
        queue: "bench-queue".to_owned(),
        msg_id,
        exchange: String::new(),
        routing_key: "bench-queue".to_owned(),
        redelivered: false,
        priority: 0,
        expiry_ms: 0,
        properties: vec![("content-type".to_owned(), "text/plain".to_owned())],
        body: body(len),
    })
}

fn config(dir: &Path) -> LogConfig {
    LogConfig { segment_size_bytes: SEGMENT_SIZE_BYTES, ..LogConfig::new(dir) }
}

/// A log in a fresh sub-directory of `root` that is replaced once it grows past
/// `LOG_RESET_BYTES`.
struct RollingLog {
    root: TempDir,
    generation: u64,
    log: Option<ShardLog>,
}

impl RollingLog {
    fn new() -> RollingLog {
        let mut rolling = RollingLog { root: scratch_dir(), generation: 0, log: None };
        rolling.reset();
        rolling
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join(format!("shard-{}", self.generation))
    }

    fn reset(&mut self) {
        if self.log.take().is_some() {
            std::fs::remove_dir_all(self.dir()).expect("remove old bench log");
        }
        self.generation += 1;
        let (log, _) = ShardLog::open(config(&self.dir())).expect("open bench log");
        self.log = Some(log);
    }

    /// The log, recreated first if it has grown past the cap.
    fn log(&mut self) -> &mut ShardLog {
        let full = self.log.as_ref().is_some_and(|l| l.appended_offset().0 >= LOG_RESET_BYTES);
        if full {
            self.reset();
        }
        self.log.as_mut().expect("log is open")
    }
}

fn sync(log: &mut ShardLog) {
    if let Some(job) = log.sync_job() {
        let result = job.run();
        log.complete_sync(result).expect("sync bench log");
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append");
    let mut rolling = RollingLog::new();
    for len in BODY_SIZES_BYTES {
        let record = enqueue(1, len);
        let bytes = u64::try_from(len).expect("len fits u64");
        group.throughput(Throughput::ElementsAndBytes { elements: 1, bytes });
        group.bench_function(BenchmarkId::new("append", size_label(len)), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let log = rolling.log();
                    let start = Instant::now();
                    let room = LOG_RESET_BYTES.saturating_sub(log.appended_offset().0);
                    let chunk = (iters - done).min(room / bytes.max(64) + 1);
                    for _ in 0..chunk {
                        black_box(log.append(&record).expect("append"));
                    }
                    elapsed += start.elapsed();
                    done += chunk;
                }
                elapsed
            });
        });
    }
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_group_commit");
    let mut rolling = RollingLog::new();
    let record = enqueue(1, COMMIT_BODY_BYTES);
    for batch in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(BenchmarkId::new("append_then_sync", batch), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let log = rolling.log();
                    let start = Instant::now();
                    for _ in 0..batch {
                        black_box(log.append(&record).expect("append"));
                    }
                    sync(log);
                    elapsed += start.elapsed();
                }
                elapsed
            });
        });
    }
    group.finish();
}

/// Writes a synced log of about `RECOVERY_LOG_BYTES` into `dir`; returns its byte length.
fn build_recovery_log(dir: &Path) -> u64 {
    let (mut log, _) = ShardLog::open(config(dir)).expect("open recovery log");
    log.append(&Record::QueueDeclare {
        name: "bench-queue".to_owned(),
        durable: true,
        auto_delete: false,
        arguments: Vec::new(),
    })
    .expect("declare");
    let count = RECOVERY_LOG_BYTES / COMMIT_BODY_BYTES;
    for msg_id in 0..count {
        let id = u64::try_from(msg_id).expect("id fits u64");
        log.append(&enqueue(id, COMMIT_BODY_BYTES)).expect("append");
    }
    sync(&mut log);
    log.appended_offset().0
}

fn recovery(c: &mut Criterion) {
    let root = scratch_dir();
    let dir = root.path().join("shard-0");
    let bytes = build_recovery_log(&dir);
    let mut group = c.benchmark_group("log_recovery");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("open", "32MiB"), |b| {
        b.iter_with_large_drop(|| {
            let (log, recovered) = ShardLog::open(config(&dir)).expect("recover");
            assert_eq!(log.appended_offset().0, bytes);
            (log, recovered)
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
    targets = append, group_commit, recovery
}
criterion_main!(benches);
