//! How long the log's group commits take, for `/metrics`: a histogram of every sync's wall
//! time over all shards of the process (`ferry_log_sync_duration_seconds`). A shard's commit
//! task records one sample when its sync job comes back from the blocking pool, so a sample is
//! what the producers waiting on that sync paid for it: the hand-off to the blocking thread, the
//! `msync`, the lease fence check and the hand-back. With `ferry_log_syncs_total` and
//! `ferry_log_sync_released_total` it tells an operator whether confirms wait on the disk (a
//! sync time near the storage's own) or on the broker (syncs far apart, each short).
//!
//! Fixed buckets and relaxed atomic adds: one bucket add, one sum add and one count add per
//! sync, no allocation and no lock, from any shard's thread.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 50 µs (a fast local SSD) to 1 s (storage in
/// trouble). A sync longer than the last lands in `+Inf` only.
const BOUNDS_US: [u64; 13] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

/// Every sync of this process (`/metrics`).
pub static SYNC_TIMES: SyncTimes = SyncTimes::new();

/// A Prometheus histogram of sync durations. See the module docs.
#[derive(Debug)]
pub struct SyncTimes {
    /// Samples per bucket, not cumulative: `buckets[i]` holds those above `BOUNDS_US[i - 1]`
    /// and at most `BOUNDS_US[i]`; the last one those above every bound.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl SyncTimes {
    pub const fn new() -> Self {
        SyncTimes {
            buckets: [const { AtomicU64::new(0) }; BOUNDS_US.len() + 1],
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one sync that took `took`.
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US.partition_point(|bound| *bound < us);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The histogram in Prometheus' text format, HELP and TYPE lines included. Read without a
    /// lock while shards record: a scrape may see a sample in `_count` and not yet in its
    /// bucket, which Prometheus tolerates as it does for any client library.
    pub fn render(&self) -> String {
        const NAME: &str = "ferry_log_sync_duration_seconds";
        let mut out = format!(
            "# HELP {NAME} Wall time of each log sync (group commit), from its hand-off to the blocking \
             pool until its result is back on the shard, all shards.\n# TYPE {NAME} histogram\n"
        );
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = BOUNDS_US.get(i).map_or_else(|| "+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
            let _ = writeln!(out, "{NAME}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{NAME}_sum {sum}\n{NAME}_count {}", self.count.load(Ordering::Relaxed));
        out
    }
}

impl Default for SyncTimes {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rendered: &str, le: &str) -> u64 {
        let prefix = format!("ferry_log_sync_duration_seconds_bucket{{le=\"{le}\"}} ");
        let line = rendered.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no bucket {le}"));
        line[prefix.len()..].parse().expect("a count")
    }

    #[test]
    fn samples_land_in_cumulative_buckets_with_their_sum_and_count() {
        let times = SyncTimes::new();
        for us in [10, 50, 51, 700, 2_000_000] {
            times.record(Duration::from_micros(us));
        }
        let text = times.render();
        assert!(text.contains("# TYPE ferry_log_sync_duration_seconds histogram\n"), "{text}");
        // A bound is inclusive (Prometheus' `le`): 50 µs counts in the 50 µs bucket.
        assert_eq!(bucket(&text, "0.00005"), 2);
        assert_eq!(bucket(&text, "0.0001"), 3);
        assert_eq!(bucket(&text, "0.0005"), 3);
        assert_eq!(bucket(&text, "0.001"), 4);
        assert_eq!(bucket(&text, "1"), 4);
        assert_eq!(bucket(&text, "+Inf"), 5);
        assert!(text.contains("ferry_log_sync_duration_seconds_count 5\n"), "{text}");
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ferry_log_sync_duration_seconds_sum "))
            .and_then(|v| v.parse().ok())
            .expect("a sum");
        assert!((sum - 2.000811).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn an_empty_histogram_renders_every_bucket_at_zero() {
        let text = SyncTimes::new().render();
        assert_eq!(text.lines().filter(|l| l.contains("_bucket{")).count(), BOUNDS_US.len() + 1);
        assert!(text.lines().filter(|l| l.contains("_bucket{")).all(|l| l.ends_with(" 0")), "{text}");
        assert!(text.contains("_sum 0\n") && text.contains("_count 0\n"), "{text}");
    }

    #[test]
    fn bounds_rise() {
        assert!(BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }
}
