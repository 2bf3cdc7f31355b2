//! Resource alarms. A queue at `Limits::queue_message_count_max` holds publishers back the
//! same way (RabbitMQ's memory alarm), so a fast producer never makes the broker drop
//! messages; past twice the limit a publish is refused explicitly.
//!
//! Disk limits (ARCHITECTURE §4): every shard checks, a few times a second, its log's size
//! against its share of `disk_budget_bytes` and the data directory's free space against
//! `disk_free_bytes_min`. While any shard is over a limit, every shard raises its disk alarm:
//! gateways stop reading from connections that publish (the protocol's own flow control —
//! for STOMP, TCP back-pressure, as RabbitMQ does), consumers keep draining, and compaction
//! brings usage back down. Transitions are logged.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::BrokerConfig;
use crate::shard::ShardRef;

/// Bit `n` set: shard `n` is over a disk limit (shards beyond 64 share bit 63).
static OVER_LIMIT: AtomicU64 = AtomicU64::new(0);
/// Bit `n` set: shard `n` owns a queue at its message limit.
static QUEUE_FULL: AtomicU64 = AtomicU64::new(0);

const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Free bytes for unprivileged writers on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `path` is a valid NUL-terminated string; statvfs fills the struct we own.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail.saturating_mul(stat.f_frsize))
}

pub(super) async fn watch_disk(shard: ShardRef, config: std::sync::Arc<BrokerConfig>) {
    let id = shard.borrow().id();
    let bit = 1u64 << id.0.min(63);
    let budget = config.disk_budget_bytes / u64::from(config.shards);
    let mut over = false;
    let mut queue_full = false;
    loop {
        let used = shard.borrow().journal_disk_bytes();
        let free = free_bytes(&config.data_dir).unwrap_or(u64::MAX);
        let now_over = (budget > 0 && used > budget) || free < config.disk_free_bytes_min;
        if now_over != over {
            over = now_over;
            if over {
                OVER_LIMIT.fetch_or(bit, Ordering::SeqCst);
                tracing::warn!(shard = %id, used, budget, free, floor = config.disk_free_bytes_min,
                    "disk limit reached: publishers are held back until it clears");
            } else {
                OVER_LIMIT.fetch_and(!bit, Ordering::SeqCst);
                tracing::info!(shard = %id, used, free, "disk usage back under its limits: publishers resume");
            }
        }
        let full = shard.borrow().queue_over_limit().map(|(name, len)| (name.to_owned(), len));
        if full.is_some() != queue_full {
            queue_full = full.is_some();
            match &full {
                Some((name, len)) => {
                    QUEUE_FULL.fetch_or(bit, Ordering::SeqCst);
                    tracing::warn!(shard = %id, queue = %name, messages = len,
                        "queue at its message limit: publishers are held back until it drains");
                }
                None => {
                    QUEUE_FULL.fetch_and(!bit, Ordering::SeqCst);
                    tracing::info!(shard = %id, "queues back under their message limit: publishers resume");
                }
            }
        }
        let alarm = OVER_LIMIT.load(Ordering::SeqCst) | QUEUE_FULL.load(Ordering::SeqCst) != 0;
        shard.borrow_mut().set_disk_alarm(alarm);
        // Messages expire (and dead-letter) even when no consumer looks at their queue.
        shard.borrow_mut().expire_due();
        shard.borrow_mut().mqtt_tick();
        shard.borrow_mut().flow_tick();
        glommio::timer::sleep(CHECK_EVERY).await;
    }
}
