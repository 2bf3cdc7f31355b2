//! Batch vectors on their way back to the shard that filled them.
//!
//! Cross-shard messages travel as `Vec<ShardMsg>` batches, one stream per ordered shard pair.
//! Without recycling, the sender starts every batch from an empty `Vec` and grows it by
//! doubling (a realloc and a copy each time) and the receiver frees it on the other core.
//! Under a steady flow that was ~9% of a shard's samples (`Shard::send` → `finish_grow`,
//! mostly the kernel zeroing fresh pages). Here the receiver hands each emptied batch back
//! to its sender through a small lock-free queue, so batches keep their capacity.

use crossbeam::queue::ArrayQueue;

use crate::ids::ShardId;
use crate::shard::msg::ShardMsg;

/// Spare batches kept per ordered pair of shards; more are freed.
const SPARES_PER_PAIR: usize = 4;
/// A batch that grew past this many messages (a burst) is freed, not kept.
const KEEP_CAPACITY_MAX: usize = 16 * 1024;

/// Emptied batches, one queue per ordered shard pair (sender, receiver).
#[derive(Debug)]
pub(super) struct BatchPool {
    shards: usize,
    spares: Box<[ArrayQueue<Vec<ShardMsg>>]>,
}

impl BatchPool {
    pub(super) fn new(shards: usize) -> Self {
        let spares = (0..shards * shards).map(|_| ArrayQueue::new(SPARES_PER_PAIR)).collect();
        Self { shards, spares }
    }

    fn pair(&self, from: ShardId, to: ShardId) -> &ArrayQueue<Vec<ShardMsg>> {
        &self.spares[from.index() * self.shards + to.index()]
    }

    /// An empty batch for `from` to fill for `to`: a recycled one when there is one.
    pub(super) fn take(&self, from: ShardId, to: ShardId) -> Vec<ShardMsg> {
        self.pair(from, to).pop().unwrap_or_default()
    }

    /// `batch`, emptied by its receiver `to`, goes back to its sender `from`.
    pub(super) fn give_back(&self, from: ShardId, to: ShardId, mut batch: Vec<ShardMsg>) {
        batch.clear();
        if batch.capacity() == 0 || batch.capacity() > KEEP_CAPACITY_MAX {
            return;
        }
        // A full pool frees the batch here: the sender has enough spares.
        let _ = self.pair(from, to).push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> ShardMsg {
        ShardMsg::MetaApplied { ack: 1 }
    }

    #[test]
    fn a_returned_batch_keeps_its_capacity_and_reaches_only_its_own_pair() {
        let pool = BatchPool::new(2);
        let (a, b) = (ShardId(0), ShardId(1));
        let mut batch = pool.take(a, b);
        assert_eq!(batch.capacity(), 0, "nothing recycled yet");
        batch.extend((0..100).map(|_| msg()));
        let capacity = batch.capacity();
        pool.give_back(a, b, batch);
        assert_eq!(pool.take(b, a).capacity(), 0, "the other direction has its own spares");
        let again = pool.take(a, b);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
    }

    #[test]
    fn bursts_and_surplus_are_freed() {
        let pool = BatchPool::new(2);
        let (a, b) = (ShardId(0), ShardId(1));
        pool.give_back(a, b, Vec::with_capacity(KEEP_CAPACITY_MAX + 1));
        assert_eq!(pool.take(a, b).capacity(), 0, "a burst-sized batch is not kept");
        for _ in 0..SPARES_PER_PAIR + 2 {
            pool.give_back(a, b, Vec::with_capacity(8));
        }
        let kept = std::iter::from_fn(|| Some(pool.take(a, b))).take_while(|v| v.capacity() > 0).count();
        assert_eq!(kept, SPARES_PER_PAIR);
    }
}
