//! `TagMap`: outstanding deliveries by tag, where tags are handed out in increasing order (a
//! queue's delivery tags, an AMQP channel's). It is a deque of `(tag, slot)` kept sorted by
//! tag:
//! - recording a delivery is a push at the back;
//! - settling in order is a pop at the front;
//! - settling out of order is a binary search and a tombstone.
//!
//! Tombstones at either end are popped at once. Inside, they are swept out when they
//! outnumber the live entries, so memory stays proportional to what is outstanding, even
//! behind one delivery that is never settled. A tag older than the newest one is still put
//! in order (a slow path), so correctness never depends on the order tags arrive in.
//!
//! It replaces a `BTreeMap` (AMQP channel) and a `HashMap` (queue): their node and hash work
//! on every delivery and every ack showed in profiles of the 1 → 1 path.

use std::collections::VecDeque;

/// Sweep tombstones once there are more than this many beyond the live entries.
const SLACK: usize = 32;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct TagMap<T> {
    slots: VecDeque<(u64, Option<T>)>,
    live: usize,
}

impl<T> Default for TagMap<T> {
    fn default() -> Self {
        TagMap { slots: VecDeque::new(), live: 0 }
    }
}

impl<T> TagMap<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The slot of `tag` (`Ok`), or where it would go (`Err`).
    fn index(&self, tag: u64) -> Result<usize, usize> {
        match (self.slots.front(), self.slots.back()) {
            (Some((first, _)), _) if *first == tag => Ok(0),
            (_, Some((last, _))) if *last < tag => Err(self.slots.len()),
            (None, _) => Err(0),
            _ => self.slots.binary_search_by_key(&tag, |(t, _)| *t),
        }
    }

    /// Records `value` under `tag`, returning what was there.
    pub fn insert(&mut self, tag: u64, value: T) -> Option<T> {
        match self.index(tag) {
            Ok(i) => {
                let old = self.slots[i].1.replace(value);
                if old.is_none() {
                    self.live += 1;
                }
                old
            }
            Err(i) => {
                self.slots.insert(i, (tag, Some(value)));
                self.live += 1;
                None
            }
        }
    }

    pub fn get(&self, tag: u64) -> Option<&T> {
        self.index(tag).ok().and_then(|i| self.slots[i].1.as_ref())
    }

    pub fn contains(&self, tag: u64) -> bool {
        self.get(tag).is_some()
    }

    pub fn remove(&mut self, tag: u64) -> Option<T> {
        let i = self.index(tag).ok()?;
        let value = self.slots[i].1.take()?;
        self.live -= 1;
        self.trim();
        Some(value)
    }

    /// The oldest tag held.
    pub fn first_tag(&self) -> Option<u64> {
        self.slots.front().map(|(tag, _)| *tag)
    }

    /// Every entry, in tag order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.slots.iter().filter_map(|(tag, slot)| slot.as_ref().map(|v| (*tag, v)))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|(_, slot)| slot.as_ref())
    }

    /// Every tag, in order.
    pub fn tags(&self) -> impl Iterator<Item = u64> {
        self.iter().map(|(tag, _)| tag)
    }

    /// Removes every entry with a tag up to `upto`, returning them in tag order.
    pub fn take_upto(&mut self, upto: u64) -> Vec<(u64, T)> {
        let end = self.slots.partition_point(|(tag, _)| *tag <= upto);
        let taken: Vec<(u64, T)> = self.slots.drain(..end).filter_map(|(tag, slot)| slot.map(|v| (tag, v))).collect();
        self.live -= taken.len();
        self.trim();
        taken
    }

    /// Removes everything, in tag order.
    pub fn take_all(&mut self) -> Vec<T> {
        self.live = 0;
        std::mem::take(&mut self.slots).into_iter().filter_map(|(_, slot)| slot).collect()
    }

    /// Removes the entries `pick` chooses, returning them in tag order.
    pub fn take_where(&mut self, mut pick: impl FnMut(&T) -> bool) -> Vec<(u64, T)> {
        let mut taken = Vec::new();
        for (tag, slot) in &mut self.slots {
            if slot.as_ref().is_some_and(&mut pick) {
                taken.extend(slot.take().map(|v| (*tag, v)));
            }
        }
        self.live -= taken.len();
        self.trim();
        taken
    }

    /// Pops tombstones at both ends; sweeps the inside once they outnumber the live entries.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|(_, slot)| slot.is_none()) {
            self.slots.pop_front();
        }
        while self.slots.back().is_some_and(|(_, slot)| slot.is_none()) {
            self.slots.pop_back();
        }
        if self.slots.len() > 2 * self.live + SLACK {
            self.slots.retain(|(_, slot)| slot.is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn in_order_use_is_a_queue() {
        let mut m = TagMap::new();
        for tag in 1..=5 {
            assert_eq!(m.insert(tag, tag * 10), None);
        }
        assert_eq!(m.len(), 5);
        assert_eq!(m.remove(1), Some(10));
        assert_eq!(m.remove(1), None);
        assert_eq!(m.first_tag(), Some(2));
        assert_eq!(m.take_upto(3), vec![(2, 20), (3, 30)]);
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(4, &40), (5, &50)]);
        assert_eq!(m.take_all(), vec![40, 50]);
        assert!(m.is_empty());
    }

    #[test]
    fn one_stuck_entry_does_not_keep_the_settled_ones_behind_it() {
        let mut m = TagMap::new();
        m.insert(1, ());
        for tag in 2..10_000 {
            m.insert(tag, ());
            m.remove(tag);
        }
        assert_eq!(m.len(), 1);
        assert!(m.slots.len() <= 1 + SLACK, "tombstones swept: {}", m.slots.len());
        // Out-of-order removals inside a long run sweep too.
        for tag in 10_000..10_100 {
            m.insert(tag, ());
        }
        for tag in (10_000..10_100).step_by(2) {
            m.remove(tag);
        }
        assert_eq!(m.len(), 51);
        assert!(m.slots.len() <= 2 * 51 + SLACK);
    }

    /// Random operations against a `BTreeMap`, including tags inserted out of order.
    #[test]
    fn behaves_like_an_ordered_map() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut m, mut model) = (TagMap::new(), BTreeMap::new());
        let mut tag = 0u64;
        for _ in 0..20_000 {
            match next() % 10 {
                0..=3 => {
                    tag += 1 + next() % 3;
                    assert_eq!(m.insert(tag, tag), model.insert(tag, tag));
                }
                4 => {
                    let old = next() % (tag + 1);
                    assert_eq!(m.insert(old, old), model.insert(old, old));
                }
                5..=7 => {
                    let t = next() % (tag + 1);
                    assert_eq!(m.remove(t), model.remove(&t));
                }
                8 => {
                    let upto = next() % (tag + 1);
                    let rest = model.split_off(&(upto + 1));
                    let expected: Vec<(u64, u64)> = std::mem::replace(&mut model, rest).into_iter().collect();
                    assert_eq!(m.take_upto(upto), expected);
                }
                _ => {
                    let taken: Vec<(u64, u64)> = m.take_where(|v| v % 7 == 0);
                    let expected: Vec<(u64, u64)> =
                        model.iter().filter(|(_, v)| *v % 7 == 0).map(|(k, v)| (*k, *v)).collect();
                    model.retain(|_, v| *v % 7 != 0);
                    assert_eq!(taken, expected);
                }
            }
            assert_eq!(m.len(), model.len());
            let t = next() % (tag + 1);
            assert_eq!(m.get(t), model.get(&t));
        }
        assert_eq!(m.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
    }
}
