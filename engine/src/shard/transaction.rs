//! Committing a transaction (AMQP `tx.commit`, STOMP `COMMIT`): the enqueues and settles its
//! publishes and acks cause are gathered per owning shard, and each owner applies its share in
//! order and logs it as one record, so that a crash keeps a shard's share whole or not at all.
//! A transaction whose queues live on one shard is therefore atomic on disk.
//!
//! One that spans shards is not (that would take a commit decision every shard's recovery can
//! read): its shares may come back in part. What it does promise is the order that loses
//! nothing: the records of its acks are logged only once every one of its publishes is held
//! durably by its queue's owner. A crash in between keeps a published copy and its unacked
//! original (a duplicate, as at-least-once delivery allows), never an ack without its publish.
//! The acks still take effect in memory at once, in order with what the connection sends
//! next (a cancel must not requeue what the commit acked). A NACK that dead-letters is logged
//! when its copy is held (`dead_letter.rs`), not held back with the acks: the message then
//! lives on as that copy.

use crate::ids::{Completion, ShardId};
use crate::shard::Shard;
use crate::shard::msg::{PartTurn, ShardMsg};

/// A transaction spanning shards whose acks' records wait for its publishes to land.
#[derive(Debug)]
pub(super) struct AcksWaiting {
    /// Owners whose publishes are not yet durable, plus one while the shares are handed out.
    publishes: usize,
    /// The owners holding settles under this transaction's key.
    holders: Vec<ShardId>,
}

impl Shard {
    /// From now until [`Shard::end_transaction`], the enqueues and settles that
    /// [`Shard::publish`] and [`Shard::settle`] would do or send are gathered per owning shard
    /// instead. Call both in one borrow: nothing else may publish in between.
    pub fn begin_transaction(&mut self) {
        debug_assert!(self.transaction.is_none(), "transactions do not nest");
        self.transaction = Some(Vec::new());
    }

    /// Hands each owning shard its share of the transaction (see the module docs): logged at
    /// once when one shard owns every queue or nothing is acked; else each owner applies its
    /// share at once and in order, logs its enqueues (reporting when they are durable) and
    /// holds the record of its settles until every owner's enqueues are durable.
    pub fn end_transaction(&mut self) {
        let parts = self.transaction.take().unwrap_or_default();
        let spans = parts.len() > 1;
        let acks = parts.iter().any(|(_, part)| part.iter().any(|m| matches!(m, ShardMsg::Settle { .. })));
        if !spans || !acks {
            for (owner, part) in parts {
                self.hand_part(owner, part, PartTurn::Now);
            }
            return;
        }
        let token = self.next_internal_token;
        self.next_internal_token += 1;
        let key = Completion { conn: self.internal_address(), token };
        let mut waiting = AcksWaiting { publishes: 1, holders: Vec::new() };
        let mut shares = Vec::with_capacity(parts.len());
        for (owner, part) in parts {
            let report = part.iter().any(|m| matches!(m, ShardMsg::Enqueue { .. }));
            waiting.publishes += usize::from(report);
            // Only a share that acks holds anything back: the release goes to those alone.
            let hold = part.iter().any(|m| matches!(m, ShardMsg::Settle { .. }));
            if hold {
                waiting.holders.push(owner);
            }
            shares.push((owner, part, PartTurn::Spanning { key, report, hold }));
        }
        self.acks_waiting.insert(token, waiting);
        for (owner, part, turn) in shares {
            self.hand_part(owner, part, turn);
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

    fn hand_part(&mut self, owner: ShardId, part: Vec<ShardMsg>, turn: PartTurn) {
        if owner == self.id {
            self.apply_transaction_part(part, turn);
        } else {
            self.send(owner, ShardMsg::TxPart { part, turn });
        }
    }

    /// Applies a share of a transaction whose queues this shard owns, and logs it as one
    /// record when `turn` says.
    pub(super) fn apply_transaction_part(&mut self, part: Vec<ShardMsg>, turn: PartTurn) {
        self.journal.begin_transaction();
        for msg in part {
            self.handle_msg(self.id, msg);
        }
        let done = match turn {
            PartTurn::Now => self.journal.end_transaction(),
            PartTurn::Spanning { key, report, hold } => {
                let mut done = if hold {
                    self.journal.end_transaction_holding_settles(key)
                } else {
                    self.journal.end_transaction()
                };
                if report {
                    done.extend(self.journal.after_durable(key));
                }
                done
            }
        };
        for completion in done {
            self.complete(completion, Ok(()));
        }
    }

    /// Logs the settles held under `key` ([`PartTurn::Spanning`]).
    pub(super) fn release_transaction_part(&mut self, key: Completion) {
        for completion in self.journal.release_transaction(key) {
            self.complete(completion, Ok(()));
        }
    }

    /// One share of a spanning transaction's publishes is durable; once all are, the records
    /// of its acks may be logged.
    pub(super) fn publishes_landed(&mut self, token: u64) {
        let Some(waiting) = self.acks_waiting.get_mut(&token) else { return };
        waiting.publishes -= 1;
        if waiting.publishes > 0 {
            return;
        }
        let Some(waiting) = self.acks_waiting.remove(&token) else { return };
        let key = Completion { conn: self.internal_address(), token };
        for owner in waiting.holders {
            if owner == self.id {
                self.release_transaction_part(key);
            } else {
                self.send(owner, ShardMsg::TxRelease { key });
            }
        }
    }
}
