//! A queue's ready messages: one FIFO per priority level (one level unless the queue has
//! `x-max-priority`, as in RabbitMQ; a message above the maximum counts as the maximum), with
//! the count and body bytes kept here so no caller can forget them. Highest level first.

use std::collections::VecDeque;

use crate::model::message::QueuedMessage;

/// See the module docs.
#[derive(Debug)]
pub struct Ready {
    levels: Vec<VecDeque<QueuedMessage>>,
    len: usize,
    bytes: usize,
    /// Messages with an expiry: the shard's sweep skips queues with none.
    expiring: usize,
}

impl Ready {
    /// `max_priority`: the queue's `x-max-priority` (levels 0..=max), or one level.
    pub fn new(max_priority: Option<u8>) -> Self {
        let levels = max_priority.map_or(1, |m| usize::from(m) + 1);
        Ready { levels: (0..levels).map(|_| VecDeque::new()).collect(), len: 0, bytes: 0, expiring: 0 }
    }

    fn level(&self, m: &QueuedMessage) -> usize {
        usize::from(m.content.properties.priority).min(self.levels.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Body bytes of the ready messages.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether any ready message carries an expiry.
    pub fn has_expiring(&self) -> bool {
        self.expiring > 0
    }

    fn count_in(&mut self, m: &QueuedMessage) {
        self.len += 1;
        self.bytes += m.content.size_bytes();
        self.expiring += usize::from(m.expires_at_ms.is_some());
    }

    fn count_out(&mut self, m: &QueuedMessage) {
        self.len -= 1;
        self.bytes = self.bytes.saturating_sub(m.content.size_bytes());
        self.expiring -= usize::from(m.expires_at_ms.is_some());
    }

    pub fn push_back(&mut self, m: QueuedMessage) {
        let level = self.level(&m);
        self.count_in(&m);
        self.levels[level].push_back(m);
    }

    /// Back at the head of its level (requeue).
    pub fn push_front(&mut self, m: QueuedMessage) {
        let level = self.level(&m);
        self.count_in(&m);
        self.levels[level].push_front(m);
    }

    /// The next message to deliver: the oldest of the highest non-empty level.
    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let m = self.levels.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.count_out(&m);
        Some(m)
    }

    /// The oldest message of the lowest non-empty level (what drop-head removes first).
    pub fn pop_oldest_lowest(&mut self) -> Option<QueuedMessage> {
        let m = self.levels.iter_mut().find_map(VecDeque::pop_front)?;
        self.count_out(&m);
        Some(m)
    }

    /// Removes expired messages at the head of every level.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<QueuedMessage> {
        let mut out = Vec::new();
        for level in &mut self.levels {
            while level.front().is_some_and(|m| m.expires_at_ms.is_some_and(|at| at <= now_ms)) {
                out.extend(level.pop_front());
            }
        }
        for m in &out {
            self.count_out(m);
        }
        out
    }

    /// Takes every ready message out, highest level first (purge).
    pub fn take_all(&mut self) -> Vec<QueuedMessage> {
        let out: Vec<QueuedMessage> = self.levels.iter_mut().rev().flat_map(|level| level.drain(..)).collect();
        self.len = 0;
        self.bytes = 0;
        self.expiring = 0;
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.levels.iter().flat_map(|l| l.iter())
    }

    /// Takes one message out by id, wherever it sits (linear; for MQTT's retained store).
    pub fn remove(&mut self, msg_id: u64) -> Option<QueuedMessage> {
        let m = self.levels.iter_mut().find_map(|level| {
            let at = level.iter().position(|m| m.msg_id == msg_id)?;
            level.remove(at)
        })?;
        self.count_out(&m);
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::message::{Content, Properties};

    fn m(id: u64, priority: u8, body: &'static str) -> QueuedMessage {
        let properties = Properties { priority, ..Properties::default() };
        let content = Arc::new(Content {
            exchange: String::new(),
            routing_key: String::new(),
            properties,
            body: bytes::Bytes::from_static(body.as_bytes()),
        });
        QueuedMessage { msg_id: id, content, redelivered: false, expires_at_ms: None }
    }

    #[test]
    fn highest_priority_first_fifo_within_a_level_and_counts_kept() {
        let mut r = Ready::new(Some(5));
        for (id, p) in [(1, 1), (2, 9), (3, 3), (4, 9), (5, 0)] {
            r.push_back(m(id, p, "xy"));
        }
        assert_eq!((r.len(), r.bytes()), (5, 10));
        let order: Vec<u64> = std::iter::from_fn(|| r.pop_front()).map(|m| m.msg_id).collect();
        assert_eq!(order, [2, 4, 3, 1, 5], "9 counts as the maximum 5");
        assert_eq!((r.len(), r.bytes()), (0, 0));
    }

    #[test]
    fn expiring_messages_are_counted_through_every_exit() {
        let mut r = Ready::new(Some(2));
        let mut a = m(1, 0, "a");
        a.expires_at_ms = Some(10);
        let mut b = m(2, 2, "b");
        b.expires_at_ms = Some(50);
        r.push_back(a);
        r.push_back(b);
        r.push_back(m(3, 1, "c"));
        assert!(r.has_expiring());
        assert_eq!(r.take_expired(20).len(), 1);
        assert!(r.has_expiring());
        assert_eq!(r.pop_front().map(|m| m.msg_id), Some(2));
        assert!(!r.has_expiring(), "the last expiring message left through pop_front");
    }

    #[test]
    fn one_level_without_max_priority() {
        let mut r = Ready::new(None);
        r.push_back(m(1, 9, "a"));
        r.push_back(m(2, 0, "b"));
        assert_eq!(r.pop_front().map(|m| m.msg_id), Some(1));
    }
}
