//! Publisher confirms of one AMQP channel in confirm mode: the sequence numbers still
//! outstanding and the outcomes completed since the last flush, which [`Confirms::flush`] turns
//! into as few basic.ack/basic.nack frames as RabbitMQ sends. Lives in its `Channel`, on the
//! connection's shard; the connection flushes once per turn (after its input and mailbox),
//! never per message. Memory is one entry per publish not yet confirmed (bounded by the
//! client's unconfirmed window and the broker's limits) plus the outcomes of one turn.
//!
//! The rule is RabbitMQ's (`rabbit_channel`, `coalesce_and_send`). A `multiple` frame for tag
//! N settles, at the client, every tag ≤ N it still waits for. At a flush, let the cutoff for
//! acks be the lowest tag still outstanding or nacked in this turn (whichever is lower): the
//! acks below it go out as ONE basic.ack with `multiple` naming the highest of them (a plain
//! ack when there is only one); acks above it go out one by one (`multiple=false`) at once,
//! not held back until they become coverable, so a slow confirm never delays a fast one and
//! nothing is kept for tags already complete. Nacks follow the same rule with the cutoff at
//! the lowest tag outstanding or acked in this turn, so neither kind of frame ever covers an
//! outcome of the other kind that has not been sent: every tag below a multiple frame was
//! either sent earlier or belongs to this frame's run. Tags start at 1, so no frame names
//! tag 0 (which would mean "all").

use std::collections::BTreeSet;

/// One basic.ack (`ack`) or basic.nack to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmFrame {
    pub tag: u64,
    pub multiple: bool,
    pub ack: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Confirms {
    outstanding: BTreeSet<u64>,
    acked: Vec<u64>,
    nacked: Vec<u64>,
}

impl Confirms {
    /// A publish with sequence number `seq` awaits its confirm.
    pub fn expect(&mut self, seq: u64) {
        assert!(seq > 0, "publish sequence numbers start at 1");
        let fresh = self.outstanding.insert(seq);
        assert!(fresh, "publish sequence number {seq} used twice");
    }

    /// The outcome of `seq` is known; it goes out at the next flush. Returns whether this is
    /// the first outcome since the last flush (the caller then remembers to flush this channel).
    pub fn complete(&mut self, seq: u64, ok: bool) -> bool {
        let first = self.acked.is_empty() && self.nacked.is_empty();
        if !self.outstanding.remove(&seq) {
            // Not expected (already completed): nothing to send, and never twice.
            return false;
        }
        if ok {
            self.acked.push(seq)
        } else {
            self.nacked.push(seq)
        }
        first
    }

    /// Appends the frames for every outcome completed since the last flush (acks first).
    pub fn flush(&mut self, out: &mut Vec<ConfirmFrame>) {
        if self.acked.is_empty() && self.nacked.is_empty() {
            return;
        }
        self.acked.sort_unstable();
        self.nacked.sort_unstable();
        let lowest_outstanding = self.outstanding.first().copied().unwrap_or(u64::MAX);
        let ack_cutoff = lowest_outstanding.min(self.nacked.first().copied().unwrap_or(u64::MAX));
        let nack_cutoff = lowest_outstanding.min(self.acked.first().copied().unwrap_or(u64::MAX));
        runs(&self.acked, ack_cutoff, true, out);
        runs(&self.nacked, nack_cutoff, false, out);
        self.acked.clear();
        self.nacked.clear();
    }

    /// No publish awaits its confirm and no outcome awaits its flush.
    pub fn is_idle(&self) -> bool {
        self.outstanding.is_empty() && self.acked.is_empty() && self.nacked.is_empty()
    }

    /// Publishes still waiting for their confirm.
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }
}

/// `sorted` tags below `cutoff` as one frame (multiple when more than one), the rest singly.
fn runs(sorted: &[u64], cutoff: u64, ack: bool, out: &mut Vec<ConfirmFrame>) {
    let split = sorted.partition_point(|&tag| tag < cutoff);
    let (covered, single) = sorted.split_at(split);
    if let Some(&tag) = covered.last() {
        out.push(ConfirmFrame { tag, multiple: covered.len() > 1, ack });
    }
    out.extend(single.iter().map(|&tag| ConfirmFrame { tag, multiple: false, ack }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(tag: u64, multiple: bool) -> ConfirmFrame {
        ConfirmFrame { tag, multiple, ack: true }
    }

    fn nack(tag: u64, multiple: bool) -> ConfirmFrame {
        ConfirmFrame { tag, multiple, ack: false }
    }

    fn confirms(upto: u64) -> Confirms {
        let mut c = Confirms::default();
        (1..=upto).for_each(|seq| c.expect(seq));
        c
    }

    fn flush(c: &mut Confirms) -> Vec<ConfirmFrame> {
        let mut out = Vec::new();
        c.flush(&mut out);
        out
    }

    /// What a client that applies each frame to its own set of unconfirmed tags ends up with:
    /// tag -> ack/nack, failing on a frame that settles nothing or a tag settled twice.
    fn client_view(upto: u64, frames: &[ConfirmFrame]) -> Vec<Option<bool>> {
        let mut seen = vec![None; upto as usize + 1];
        for f in frames {
            assert!(f.tag > 0, "tag 0 would mean every tag");
            let tags: Vec<u64> = if f.multiple { (1..=f.tag).collect() } else { vec![f.tag] };
            let fresh: Vec<u64> = tags.into_iter().filter(|&t| seen[t as usize].is_none()).collect();
            assert!(!fresh.is_empty(), "{f:?} settles nothing new");
            assert!(f.multiple || fresh == [f.tag], "{f:?} names a tag settled before");
            fresh.iter().for_each(|&t| seen[t as usize] = Some(f.ack));
        }
        seen
    }

    #[test]
    fn a_run_in_order_is_one_multiple_ack() {
        let mut c = confirms(5);
        for seq in 1..=5 {
            c.complete(seq, true);
        }
        assert_eq!(flush(&mut c), [ack(5, true)]);
        assert_eq!(c.outstanding(), 0);
        assert!(flush(&mut c).is_empty(), "nothing twice");
    }

    #[test]
    fn a_lone_confirm_is_a_plain_ack() {
        let mut c = confirms(2);
        assert!(c.complete(1, true), "first outcome since the flush");
        assert_eq!(flush(&mut c), [ack(1, false)]);
        assert!(c.complete(2, true));
        assert_eq!(flush(&mut c), [ack(2, false)]);
    }

    #[test]
    fn out_of_order_acks_above_an_outstanding_tag_go_singly_and_are_not_held() {
        let mut c = confirms(6);
        for seq in [5, 2, 1, 4] {
            c.complete(seq, true);
        }
        // 3 is outstanding: 1 and 2 are one run; 4 and 5 cannot be covered yet.
        assert_eq!(flush(&mut c), [ack(2, true), ack(4, false), ack(5, false)]);
        c.complete(3, true);
        c.complete(6, true);
        // Nothing outstanding: one frame for 3 and 6 (4 and 5 are settled at the client).
        assert_eq!(flush(&mut c), [ack(6, true)]);
        let view = client_view(6, &[ack(2, true), ack(4, false), ack(5, false), ack(6, true)]);
        assert!(view[1..].iter().all(|v| *v == Some(true)));
    }

    #[test]
    fn a_nack_breaks_the_run_and_is_never_covered_by_an_ack() {
        let mut c = confirms(6);
        for seq in 1..=6 {
            c.complete(seq, seq != 3);
        }
        let frames = flush(&mut c);
        assert_eq!(frames, [ack(2, true), ack(4, false), ack(5, false), ack(6, false), nack(3, false)]);
        let view = client_view(6, &frames);
        assert_eq!(view[3], Some(false), "3 is nacked, exactly");
        assert!(view.iter().enumerate().skip(1).all(|(t, v)| t == 3 || *v == Some(true)));
    }

    #[test]
    fn nacks_below_every_ack_are_one_multiple_nack() {
        let mut c = confirms(5);
        for seq in [3, 1, 2] {
            c.complete(seq, false);
        }
        c.complete(5, true);
        // 4 outstanding: nacks 1..=3 are one run, the ack of 5 goes alone.
        assert_eq!(flush(&mut c), [ack(5, false), nack(3, true)]);
        c.complete(4, true);
        assert_eq!(flush(&mut c), [ack(4, false)]);
    }

    #[test]
    fn a_multiple_nack_never_covers_an_ack_of_the_same_turn() {
        let mut c = confirms(4);
        c.complete(1, false);
        c.complete(2, true);
        c.complete(3, false);
        c.complete(4, false);
        let frames = flush(&mut c);
        assert_eq!(frames, [ack(2, false), nack(1, false), nack(3, false), nack(4, false)]);
        assert_eq!(client_view(4, &frames)[1..], [Some(false), Some(true), Some(false), Some(false)]);
    }

    #[test]
    fn tag_one_outstanding_covers_nothing_and_no_frame_names_tag_zero() {
        let mut c = confirms(3);
        c.complete(2, true);
        c.complete(3, true);
        assert_eq!(flush(&mut c), [ack(2, false), ack(3, false)]);
        c.complete(1, true);
        assert_eq!(flush(&mut c), [ack(1, false)]);
    }

    #[test]
    fn unknown_or_repeated_outcomes_send_nothing() {
        let mut c = confirms(1);
        assert!(!c.complete(7, true));
        assert!(c.complete(1, true));
        assert!(!c.complete(1, false), "already complete");
        assert_eq!(flush(&mut c), [ack(1, false)]);
    }

    #[test]
    fn scrambled_completions_settle_every_tag_exactly_once() {
        // Deterministic shuffle of 1..=200 over turns of 1 to 11 outcomes, every 7th a nack.
        let upto = 200;
        let mut c = confirms(upto);
        let mut order: Vec<u64> = (1..=upto).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for i in (1..order.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut frames = Vec::new();
        let mut rest = &order[..];
        let mut turn = 0;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(rest.len().min(turn % 11 + 1));
            for &seq in now {
                c.complete(seq, seq % 7 != 0);
            }
            c.flush(&mut frames);
            (rest, turn) = (later, turn + 1);
        }
        assert_eq!(c.outstanding(), 0);
        let view = client_view(upto, &frames);
        for seq in 1..=upto {
            assert_eq!(view[seq as usize], Some(seq % 7 != 0), "tag {seq}");
        }
        assert!(frames.iter().any(|f| f.multiple), "some turns coalesce");
        assert!(frames.len() < upto as usize, "fewer frames than publishes");
    }
}
