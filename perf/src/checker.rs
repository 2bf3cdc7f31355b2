//! Delivery checking: the payload stamp (producer id + sequence number, hex, padded to the
//! message size) and the exactly-once / in-order checker. [`SeqChecker`] is shared by every
//! consumer thread (one atomic counter per expected message); each consumer keeps its own
//! [`OrderTracker`], since order is only defined per (producer, queue) stream as one
//! consumer sees it. Limits: `producers * messages_per_producer` bytes of counters; at most
//! 2^16 producers and 2^48 messages per producer (the stamp's width).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Bytes of the stamp at the start of every payload: 4 hex digits of producer id, 12 of seq.
pub const STAMP_BYTES: usize = 16;
/// Most producers a stamp can name.
pub const PRODUCER_COUNT_MAX: u32 = 0xffff;
/// Largest sequence number a stamp can carry.
pub const SEQ_MAX: u64 = 0xffff_ffff_ffff;

/// Where producer `producer` sends its message number `seq`: round-robin over the queues,
/// starting at a different queue per producer.
pub fn queue_for(producer: u32, seq: u64, queues: u32) -> u32 {
    let index = (u64::from(producer) + seq) % u64::from(queues);
    u32::try_from(index).expect("index < queues fits u32")
}

/// A payload of `size` bytes (at least `STAMP_BYTES`) starting with the stamp.
pub fn payload(producer: u32, seq: u64, size: usize) -> Vec<u8> {
    assert!(producer <= PRODUCER_COUNT_MAX && seq <= SEQ_MAX);
    assert!(size >= STAMP_BYTES);
    // The stamp is `{producer:04x}{seq:012x}`, written by hand: `format!` per message was a
    // tenth of the load tool's own CPU.
    let mut out = Vec::with_capacity(size);
    push_hex(&mut out, u64::from(producer), 4);
    push_hex(&mut out, seq, 12);
    out.resize(size, b'.');
    out
}

/// Appends `value` as `digits` lower-case hex digits, zero-padded.
fn push_hex(out: &mut Vec<u8>, value: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..digits).rev().map(|d| d * 4) {
        out.push(HEX[((value >> shift) & 0xf) as usize]);
    }
}

/// Reads the stamp back; `None` for a body that does not start with one.
pub fn parse_stamp(body: &[u8]) -> Option<(u32, u64)> {
    let stamp = std::str::from_utf8(body.get(..STAMP_BYTES)?).ok()?;
    let producer = u32::from_str_radix(stamp.get(..4)?, 16).ok()?;
    let seq = u64::from_str_radix(stamp.get(4..)?, 16).ok()?;
    Some((producer, seq))
}

/// What happened to one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First copy of an expected message.
    First,
    /// A further copy of a message already seen.
    Duplicate,
    /// Not a message this run sent (bad stamp, out of range, or on the wrong queue).
    Unexpected,
}

/// Final counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Messages the producers were asked to send.
    pub expected: u64,
    /// Messages the producers did not send (stopped early by the deadline or an error).
    pub not_sent: u64,
    pub received_unique: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub unexpected: u64,
}

/// Exactly-once bookkeeping for every message of a run, shared by all consumers.
#[derive(Debug)]
pub struct SeqChecker {
    producers: u32,
    messages_per_producer: u64,
    queues: u32,
    /// Copies received of message `producer * messages_per_producer + seq` (saturating).
    counts: Vec<AtomicU8>,
    unique: AtomicU64,
    duplicated: AtomicU64,
    unexpected: AtomicU64,
}

impl SeqChecker {
    pub fn new(producers: u32, messages_per_producer: u64, queues: u32) -> SeqChecker {
        assert!(producers <= PRODUCER_COUNT_MAX && messages_per_producer <= SEQ_MAX + 1);
        assert!(queues > 0);
        let total = u64::from(producers) * messages_per_producer;
        let total = usize::try_from(total).expect("message count fits in memory");
        SeqChecker {
            producers,
            messages_per_producer,
            queues,
            counts: (0..total).map(|_| AtomicU8::new(0)).collect(),
            unique: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
        }
    }

    /// Messages the run expects in all.
    pub fn expected(&self) -> u64 {
        u64::from(self.producers) * self.messages_per_producer
    }

    /// Distinct expected messages received so far.
    pub fn unique(&self) -> u64 {
        self.unique.load(Ordering::Relaxed)
    }

    /// Records one received message that arrived from queue index `queue`.
    pub fn record(&self, producer: u32, seq: u64, queue: u32) -> Seen {
        if producer >= self.producers
            || seq >= self.messages_per_producer
            || queue_for(producer, seq, self.queues) != queue
        {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return Seen::Unexpected;
        }
        let index = u64::from(producer) * self.messages_per_producer + seq;
        let index = usize::try_from(index).expect("index fits usize");
        let before = self.counts[index]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c.saturating_add(1)))
            .expect("closure always returns Some");
        if before == 0 {
            self.unique.fetch_add(1, Ordering::Relaxed);
            Seen::First
        } else {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
            Seen::Duplicate
        }
    }

    /// Records a received message that carries no valid stamp or subscription.
    pub fn record_unexpected(&self) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts now, with `reordered` from the trackers. `sent[p]` is how many messages
    /// producer `p` sent (always its seqs `0..sent[p]`); only those can be lost.
    pub fn verdict(&self, reordered: u64, sent: &[u64]) -> Verdict {
        assert_eq!(sent.len(), self.producers as usize);
        let mut lost = 0;
        for (producer, &count) in sent.iter().enumerate() {
            assert!(count <= self.messages_per_producer);
            let first = producer as u64 * self.messages_per_producer;
            let range = usize::try_from(first).expect("index fits usize")
                ..usize::try_from(first + count).expect("index fits usize");
            lost += self.counts[range].iter().filter(|c| c.load(Ordering::Relaxed) == 0).count() as u64;
        }
        Verdict {
            expected: self.expected(),
            not_sent: self.expected() - sent.iter().sum::<u64>(),
            received_unique: self.unique(),
            lost,
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered,
            unexpected: self.unexpected.load(Ordering::Relaxed),
        }
    }
}

/// One consumer's view of ordering: the highest seq it has seen per (producer, queue).
#[derive(Debug)]
pub struct OrderTracker {
    queues: u32,
    last: Vec<Option<u64>>,
    reordered: u64,
}

impl OrderTracker {
    pub fn new(producers: u32, queues: u32) -> OrderTracker {
        let streams = usize::try_from(u64::from(producers) * u64::from(queues)).expect("stream count fits usize");
        OrderTracker { queues, last: vec![None; streams], reordered: 0 }
    }

    /// Notes `seq` from `producer` on `queue` (an expected message, first copy or not).
    /// Counts it as reordered when an equal or later seq of the same stream came first
    /// (a redelivered duplicate is counted by the checker, not here).
    pub fn observe(&mut self, producer: u32, seq: u64, queue: u32, seen: Seen) {
        let stream = u64::from(producer) * u64::from(self.queues) + u64::from(queue);
        let Some(last) = usize::try_from(stream).ok().and_then(|i| self.last.get_mut(i)) else {
            return;
        };
        match *last {
            Some(prev) if seq < prev && seen == Seen::First => self.reordered += 1,
            Some(prev) if seq <= prev => {}
            _ => *last = Some(seq),
        }
    }

    pub fn reordered(&self) -> u64 {
        self.reordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_is_the_formatted_producer_and_sequence() {
        for (producer, seq) in [(0, 0), (7, 0x1234), (PRODUCER_COUNT_MAX, SEQ_MAX), (0xab, 0x0f0f_0f0f)] {
            let expected = format!("{producer:04x}{seq:012x}...");
            assert_eq!(payload(producer, seq, STAMP_BYTES + 3), expected.as_bytes());
            assert_eq!(parse_stamp(&payload(producer, seq, STAMP_BYTES)), Some((producer, seq)));
        }
    }

    fn deliver(checker: &SeqChecker, order: &mut OrderTracker, producer: u32, seq: u64) {
        let queue = queue_for(producer, seq, checker.queues);
        let seen = checker.record(producer, seq, queue);
        order.observe(producer, seq, queue, seen);
    }

    #[test]
    fn stamp_round_trips_and_pads() {
        let body = payload(7, 123_456, 64);
        assert_eq!(body.len(), 64);
        assert_eq!(parse_stamp(&body), Some((7, 123_456)));
        assert_eq!(parse_stamp(&payload(PRODUCER_COUNT_MAX, SEQ_MAX, 16)), Some((0xffff, SEQ_MAX)));
        assert_eq!(parse_stamp(b"short"), None);
        assert_eq!(parse_stamp(b"zzzz000000000000"), None);
    }

    #[test]
    fn queues_round_robin_per_producer() {
        assert_eq!(queue_for(0, 0, 3), 0);
        assert_eq!(queue_for(0, 4, 3), 1);
        assert_eq!(queue_for(1, 0, 3), 1);
        assert_eq!(queue_for(5, 9, 1), 0);
    }

    #[test]
    fn complete_in_order_run_is_clean() {
        let checker = SeqChecker::new(2, 10, 3);
        let mut order = OrderTracker::new(2, 3);
        for seq in 0..10 {
            deliver(&checker, &mut order, 0, seq);
            deliver(&checker, &mut order, 1, seq);
        }
        let verdict = checker.verdict(order.reordered(), &[10, 10]);
        assert_eq!(verdict, Verdict { expected: 20, received_unique: 20, ..Verdict::default() });
    }

    #[test]
    fn counts_lost_messages() {
        let checker = SeqChecker::new(1, 10, 2);
        let mut order = OrderTracker::new(1, 2);
        for seq in [0, 1, 2, 5, 9] {
            deliver(&checker, &mut order, 0, seq);
        }
        let verdict = checker.verdict(order.reordered(), &[10]);
        assert_eq!(verdict.lost, 5);
        assert_eq!(verdict.received_unique, 5);
        assert_eq!(verdict.reordered, 0, "gaps are losses, not reorders");
    }

    #[test]
    fn counts_duplicates_without_calling_them_reordered() {
        let checker = SeqChecker::new(1, 4, 1);
        let mut order = OrderTracker::new(1, 1);
        for seq in [0, 1, 1, 2, 1, 3, 3] {
            deliver(&checker, &mut order, 0, seq);
        }
        let verdict = checker.verdict(order.reordered(), &[4]);
        assert_eq!(verdict.duplicated, 3);
        assert_eq!(verdict.lost, 0);
        assert_eq!(verdict.reordered, 0);
    }

    #[test]
    fn counts_reordered_within_a_stream_only() {
        let checker = SeqChecker::new(1, 6, 2);
        let mut order = OrderTracker::new(1, 2);
        // Queue 0 carries 0, 2, 4; queue 1 carries 1, 3, 5. Interleaving across queues is
        // fine; 0 after 4 on queue 0 is a reorder.
        for seq in [1, 2, 4, 0, 5, 3] {
            deliver(&checker, &mut order, 0, seq);
        }
        let verdict = checker.verdict(order.reordered(), &[6]);
        assert_eq!(verdict.reordered, 2, "0 after 4 and 3 after 5");
        assert_eq!(verdict.lost, 0);
        assert_eq!(verdict.duplicated, 0);
    }

    #[test]
    fn unsent_messages_are_not_lost() {
        let checker = SeqChecker::new(2, 10, 1);
        let mut order = OrderTracker::new(2, 1);
        for seq in 0..4 {
            deliver(&checker, &mut order, 0, seq);
        }
        deliver(&checker, &mut order, 1, 0);
        let verdict = checker.verdict(order.reordered(), &[5, 1]);
        assert_eq!(verdict.not_sent, 14);
        assert_eq!(verdict.lost, 1, "producer 0's seq 4 was sent and never arrived");
        assert_eq!(verdict.received_unique, 5);
    }

    #[test]
    fn rejects_unexpected_messages() {
        let checker = SeqChecker::new(1, 4, 2);
        assert_eq!(checker.record(1, 0, 1), Seen::Unexpected, "unknown producer");
        assert_eq!(checker.record(0, 4, 0), Seen::Unexpected, "seq out of range");
        assert_eq!(checker.record(0, 1, 0), Seen::Unexpected, "wrong queue");
        assert_eq!(checker.record(0, 1, 1), Seen::First);
        let verdict = checker.verdict(0, &[4]);
        assert_eq!(verdict.unexpected, 3);
        assert_eq!(verdict.lost, 3);
    }

    #[test]
    fn separate_trackers_share_one_checker() {
        let checker = SeqChecker::new(1, 4, 1);
        let mut a = OrderTracker::new(1, 1);
        let mut b = OrderTracker::new(1, 1);
        deliver(&checker, &mut a, 0, 0);
        deliver(&checker, &mut b, 0, 1);
        deliver(&checker, &mut a, 0, 2);
        deliver(&checker, &mut b, 0, 1);
        let verdict = checker.verdict(a.reordered() + b.reordered(), &[4]);
        assert_eq!(verdict.duplicated, 1);
        assert_eq!(verdict.lost, 1);
        assert_eq!(verdict.reordered, 0);
    }
}
