//! Committing a transaction (AMQP `tx.commit`, STOMP `COMMIT`): the enqueues and settles its
//! publishes and acks cause are gathered per owning shard, and each owner applies its share in
//! order and logs it as one record, so that a crash keeps a shard's share whole or not at all.
//!
//! A transaction whose queues live on one shard is done then. One that spans shards commits
//! in two phases, with the connection's shard as coordinator:
//!
//! 1. each owner applies its share at once, in order with what the connection sends next (a
//!    cancel must not requeue what the commit acked), logs it as one record marked with the
//!    transaction's id (`TxOp::Spans`), and reports when that is durable;
//! 2. once every share is durable, the coordinator logs the commit (`Record::TxCommit`) and,
//!    once that is durable, releases the shares: their completions complete (the client's
//!    commit-ok), and each owner other than the coordinator logs the commit in its own log;
//! 3. once those are durable, the coordinator's record of the commit may be compacted.
//!
//! Recovery applies a marked share only if some shard's log holds its commit (every shard's
//! commits are exchanged at start-up, `runtime/evidence.rs`), so a crash before the
//! coordinator's commit is durable undoes every share: the transaction vanishes. Compaction
//! keeps an owner's share record, and those of the messages it settles, until the owner holds
//! the commit itself, and the coordinator's commit until every owner does (`Journal::keep`).
//!
//! What the transaction did in memory before the commit was durable stays visible meanwhile:
//! a consumer may receive a message it published before a crash undoes it. A NACK that
//! dead-letters is logged when its copy is held (`dead_letter.rs`), not with the share.

use crate::ids::{Completion, ShardId};
use crate::shard::Shard;
use crate::shard::msg::{PartTurn, ShardMsg};

/// A transaction spanning shards that this shard coordinates.
#[derive(Debug)]
pub(super) struct Spanning {
    tx_id: u64,
    /// Where this log's record of the commit begins, once it is appended: kept from
    /// compaction until the other owners hold the commit.
    floor: u64,
    /// The shards given a share.
    owners: Vec<ShardId>,
    phase: Phase,
    /// Reports this phase still waits for (plus one while its messages are being sent).
    due: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for every share to be durable.
    Prepared,
    /// Waiting for the commit in this log to be durable.
    Committed,
    /// Waiting for the other owners' logs to hold the commit.
    Recorded,
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
    /// once when one shard owns every queue, else in two phases.
    pub fn end_transaction(&mut self) {
        let parts = self.transaction.take().unwrap_or_default();
        if parts.len() < 2 {
            for (owner, part) in parts {
                self.hand_part(owner, part, PartTurn::Now);
            }
            return;
        }
        let token = self.next_internal_token;
        self.next_internal_token += 1;
        let key = Completion { conn: self.internal_address(), token };
        let tx_id = self.next_tx_id();
        let owners = parts.iter().map(|(owner, _)| *owner).collect();
        let spanning = Spanning { tx_id, floor: 0, owners, phase: Phase::Prepared, due: parts.len() + 1 };
        self.spanning.insert(token, spanning);
        for (owner, part) in parts {
            self.hand_part(owner, part, PartTurn::Spanning { key, tx_id });
        }
        self.spanning_reported(token);
    }

    /// A fresh transaction id (for one spanning shards, or for the pieces of a share too large
    /// for one record): unique among this shard's (the low 16
    /// bits are its id) and above every id any log held at start-up
    /// ([`Shard::seed_transaction_ids`]), so no share left undecided in a log is ever taken
    /// for one of a new transaction. Never 0.
    fn next_tx_id(&mut self) -> u64 {
        let id = (self.tx_seq << 16) | u64::from(self.id.0);
        self.tx_seq += 1;
        id
    }

    /// Makes every id [`Shard::next_tx_id`] hands out greater than `max_seen`.
    pub fn seed_transaction_ids(&mut self, max_seen: u64) {
        self.tx_seq = self.tx_seq.max((max_seen >> 16) + 1);
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
    /// record (or marked pieces).
    pub(super) fn apply_transaction_part(&mut self, part: Vec<ShardMsg>, turn: PartTurn) {
        self.journal.begin_transaction();
        for msg in part {
            self.handle_msg(self.id, msg);
        }
        let done = match turn {
            PartTurn::Now => {
                let tx_id = self.next_tx_id();
                self.journal.end_transaction(tx_id)
            }
            PartTurn::Spanning { key, tx_id } => self.journal.end_transaction_spanning(key, tx_id),
        };
        for completion in done {
            self.complete(completion, Ok(()));
        }
    }

    /// The transaction of the share held under `key` committed ([`PartTurn::Spanning`]).
    pub(super) fn release_transaction_part(&mut self, key: Completion) {
        let mark = key.conn.shard != self.id;
        for completion in self.journal.release_transaction(key, mark) {
            self.complete(completion, Ok(()));
        }
    }

    /// Whether `token` is a spanning transaction this shard coordinates.
    pub(super) fn coordinates(&self, token: u64) -> bool {
        self.spanning.contains_key(&token)
    }

    /// One report of the phase a spanning transaction is in; the last one moves it on.
    pub(super) fn spanning_reported(&mut self, token: u64) {
        let (key, me) = (Completion { conn: self.internal_address(), token }, self.id);
        let Some(spanning) = self.spanning.get_mut(&token) else { return };
        spanning.due -= 1;
        if spanning.due > 0 {
            return;
        }
        match spanning.phase {
            Phase::Prepared => {
                spanning.phase = Phase::Committed;
                spanning.due = 1;
                let tx_id = spanning.tx_id;
                spanning.floor = self.journal.keep_from_here();
                let floor = spanning.floor;
                self.journal.keep(floor);
                self.journal.append_tx_commit(tx_id);
                if let Some(done) = self.journal.after_durable(key) {
                    self.complete(done, Ok(()));
                }
            }
            Phase::Committed => {
                spanning.phase = Phase::Recorded;
                // The last phase needs only the floor.
                let owners = std::mem::take(&mut spanning.owners);
                spanning.due = 1 + owners.iter().filter(|owner| **owner != me).count();
                for owner in owners {
                    if owner == me {
                        self.release_transaction_part(key);
                    } else {
                        self.send(owner, ShardMsg::TxRelease { key });
                    }
                }
                self.spanning_reported(token);
            }
            Phase::Recorded => {
                let floor = spanning.floor;
                self.spanning.remove(&token);
                self.journal.unkeep(floor);
            }
        }
    }
}
