//! Committing a transaction (AMQP `tx.commit`, STOMP `COMMIT`): the enqueues and settles its
//! publishes and acks cause are gathered per owning shard, and each owner applies its share in
//! order and logs it as one record, so that a crash keeps a shard's share whole or not at all.
//! A transaction whose queues live on one shard is therefore atomic on disk.
//!
//! One that spans shards is not (that would take a commit decision every shard's recovery can
//! read): its shares may come back in part. What it does promise is the order that loses
//! nothing: its acks are applied only once every one of its publishes is held durably by its
//! queue's owner. A crash in between keeps a published copy and its unacked original (a
//! duplicate, as at-least-once delivery allows), never an ack without its publish.

use crate::ids::{Completion, ShardId};
use crate::shard::Shard;
use crate::shard::msg::ShardMsg;

/// The acks (settles) of a transaction spanning shards, waiting for its publishes to land.
#[derive(Debug)]
pub(super) struct AcksWaiting {
    /// Shares of publishes not yet durable on their owners, plus one while they are handed out.
    publishes: usize,
    /// Each owner's settles, to hand out then.
    settles: Vec<(ShardId, Vec<ShardMsg>)>,
}

impl Shard {
    /// From now until [`Shard::end_transaction`], the enqueues and settles that
    /// [`Shard::publish`] and [`Shard::settle`] would do or send are gathered per owning shard
    /// instead. Call both in one borrow: nothing else may publish in between.
    pub fn begin_transaction(&mut self) {
        debug_assert!(self.transaction.is_none(), "transactions do not nest");
        self.transaction = Some(Vec::new());
    }

    /// Hands each owning shard its share of the transaction (see the module docs): all of it
    /// at once when one shard owns every queue or nothing is acked; else the publishes first,
    /// and the acks once those are durable.
    pub fn end_transaction(&mut self) {
        let parts = self.transaction.take().unwrap_or_default();
        let spans = parts.len() > 1;
        let acks = parts.iter().any(|(_, part)| part.iter().any(|m| matches!(m, ShardMsg::Settle { .. })));
        if !spans || !acks {
            for (owner, part) in parts {
                self.hand_part(owner, part, None);
            }
            return;
        }
        let (mut publishes, mut settles) = (Vec::new(), Vec::new());
        for (owner, part) in parts {
            let (enqueues, rest): (Vec<ShardMsg>, Vec<ShardMsg>) =
                part.into_iter().partition(|m| matches!(m, ShardMsg::Enqueue { .. }));
            if !enqueues.is_empty() {
                publishes.push((owner, enqueues));
            }
            if !rest.is_empty() {
                settles.push((owner, rest));
            }
        }
        let token = self.next_internal_token;
        self.next_internal_token += 1;
        self.acks_waiting.insert(token, AcksWaiting { publishes: publishes.len() + 1, settles });
        let landed = Completion { conn: self.internal_address(), token };
        for (owner, part) in publishes {
            self.hand_part(owner, part, Some(landed));
        }
        self.publishes_landed(token);
    }

    /// Gathers `msg` for `owner` when a transaction is being committed; otherwise gives it back.
    pub(super) fn gather(&mut self, owner: ShardId, msg: ShardMsg) -> Option<ShardMsg> {
        let Some(parts) = &mut self.transaction else { return Some(msg) };
        match parts.iter_mut().find(|(shard, _)| *shard == owner) {
            Some((_, part)) => part.push(msg),
            None => parts.push((owner, vec![msg])),
        }
        None
    }

    fn hand_part(&mut self, owner: ShardId, part: Vec<ShardMsg>, landed: Option<Completion>) {
        if owner == self.id {
            self.apply_transaction_part(part, landed);
        } else {
            self.send(owner, ShardMsg::TxPart { part, landed });
        }
    }

    /// Applies a share of a transaction this shard owns the queues of, logged as one record;
    /// `landed` completes once that record is durable.
    pub(super) fn apply_transaction_part(&mut self, part: Vec<ShardMsg>, landed: Option<Completion>) {
        self.journal.begin_transaction();
        for msg in part {
            self.handle_msg(self.id, msg);
        }
        let mut done = self.journal.end_transaction();
        done.extend(landed.and_then(|c| self.journal.after_durable(c)));
        for completion in done {
            self.complete(completion, Ok(()));
        }
    }

    /// One share of a spanning transaction's publishes is durable; once all are, its acks go.
    pub(super) fn publishes_landed(&mut self, token: u64) {
        let Some(waiting) = self.acks_waiting.get_mut(&token) else { return };
        waiting.publishes -= 1;
        if waiting.publishes > 0 {
            return;
        }
        let Some(waiting) = self.acks_waiting.remove(&token) else { return };
        for (owner, part) in waiting.settles {
            self.hand_part(owner, part, None);
        }
    }
}
