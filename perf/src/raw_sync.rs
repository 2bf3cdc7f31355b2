//! `ferry-perf raw-sync`: the durability baseline a broker is measured against — one thread
//! doing what an ideal group commit does with no broker around it: `pwrite` a batch of
//! records to a preallocated file, `fdatasync`, repeat. Reports records/s, the sync
//! latency distribution and the loop's CPU per sync. Bounded by `--seconds` and by the file
//! size (it wraps around).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

/// Options of `ferry-perf raw-sync`.
#[derive(Debug, Clone, Args)]
pub struct RawSyncArgs {
    /// Directory for the scratch file (use the broker's data disk).
    #[arg(long)]
    pub dir: PathBuf,
    /// Records per sync (the group-commit batch).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Bytes per record (payload; a 64-byte header is added, as a broker record has one).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// How long to run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

const FILE_BYTES: u64 = 256 * 1024 * 1024;
const RECORD_OVERHEAD_BYTES: usize = 64;

/// Runs the loop and prints one summary line (and returns records/s).
pub fn raw_sync(args: &RawSyncArgs) -> anyhow::Result<f64> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let path = args.dir.join(format!("ferry-perf-raw-sync-{}.dat", std::process::id()));
    let file =
        OpenOptions::new().read(true).write(true).create_new(true).open(&path).context("creating scratch file")?;
    let result = run(&file, args);
    drop(file);
    let _ = std::fs::remove_file(&path);
    result
}

fn run(file: &std::fs::File, args: &RawSyncArgs) -> anyhow::Result<f64> {
    file.set_len(FILE_BYTES)?;
    file.sync_all()?;
    let batch_bytes = vec![0xabu8; args.batch * (args.size + RECORD_OVERHEAD_BYTES)];
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let (mut offset, mut syncs, mut latencies) = (0u64, 0u64, Vec::new());
    // This process runs only the loop: its CPU is the loop's.
    let cpu_before = crate::broker_stats::sample(std::process::id()).ok();
    let start = Instant::now();
    while Instant::now() < deadline {
        let t = Instant::now();
        if offset + batch_bytes.len() as u64 > FILE_BYTES {
            offset = 0;
        }
        file.write_all_at(&batch_bytes, offset)?;
        file.sync_data()?;
        offset += batch_bytes.len() as u64;
        syncs += 1;
        latencies.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_after = crate::broker_stats::sample(std::process::id()).ok();
    let cpu = match cpu_before.zip(cpu_after) {
        Some((before, after)) if syncs > 0 => {
            format!(", cpu {:.0}µs/sync", (after.cpu_s - before.cpu_s) * 1e6 / syncs as f64)
        }
        _ => String::new(),
    };
    let records = syncs as f64 * args.batch as f64;
    latencies.sort_unstable();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    println!(
        "raw-sync batch={} size={}B: {:.0} records/s, {:.0} syncs/s, sync p50={:?} p99={:?}{cpu}",
        args.batch,
        args.size,
        records / secs,
        syncs as f64 / secs,
        pct(0.5).copied().unwrap_or_default(),
        pct(0.99).copied().unwrap_or_default()
    );
    Ok(records / secs)
}
