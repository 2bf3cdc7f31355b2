//! `Fold`: turns a replayed stream of records into `Recovered` — live durable queues with
//! their unsettled messages, live exchanges and bindings, quarantined queues. Pure, in
//! memory; used once at open on the shard thread, or by the engine across several shards'
//! `replay`s. Limits: holds every live message of the folded logs in memory (recovery needs
//! them anyway); enqueues for a queue never declared in the folded records are dropped.
//!
//! A part of a transaction that spans logs ([`TxOp::Spans`]) is applied at its place like any
//! other, and also remembered until the fold meets its commit (`Record::TxCommit`); see
//! `tentative.rs`. The broker folds each log alone and decides across logs afterwards
//! (`Recovered::resolve`); one fold over several logs (`replay`s, for inspection) takes a
//! commit in any of them as deciding, and so reports no transaction kept on another's word.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::record::{Record, StoredMessage, TxOp};
use crate::tentative::{Tentative, Undecided};

/// What recovery hands the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Valid records read.
    pub records_replayed: u64,
    /// Bytes ignored after the last valid record of the last segment.
    pub torn_tail_bytes: u64,
    /// Durable queues with their live (enqueued, not settled) messages, in id order,
    /// `redelivered = true` on each. Quarantined queues are not here.
    pub queues: Vec<RecoveredQueue>,
    /// Live (not deleted) durable `Record::ExchangeDeclare`s, in declaration order.
    pub exchanges: Vec<Record>,
    /// Live (not unbound, neither end deleted) `Record::Bind`s, in bind order.
    pub bindings: Vec<Record>,
    /// Queues whose records were damaged inside the proven-valid region (sorted, unique).
    pub quarantined: Vec<String>,
    /// Transactions marked `TxOp::Spans` (spanning logs, or logged in pieces) whose commit these
    /// records hold (sorted).
    pub committed: Vec<u64>,
    /// Messages that parts of transactions spanning logs touched and whose commit these
    /// records do not hold, by queue and id: [`Recovered::resolve`] decides them.
    pub undecided: Vec<Undecided>,
    /// The highest transaction id any part or commit here names (0: none).
    pub tx_id_max: u64,
}

/// One recovered durable queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredQueue {
    /// Queue name.
    pub name: String,
    /// Always true (non-durable queues do not survive a restart).
    pub durable: bool,
    /// As declared.
    pub auto_delete: bool,
    /// As declared.
    pub arguments: Vec<(String, String)>,
    /// Live messages in the order they were first enqueued (by id, which a queue hands out
    /// in that order).
    pub messages: Vec<StoredMessage>,
}

#[derive(Debug, Clone)]
struct Declaration {
    seq: u64,
    durable: bool,
    auto_delete: bool,
    arguments: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct QueueState {
    declared: Option<Declaration>,
    /// Enqueue sequence -> message.
    messages: BTreeMap<u64, StoredMessage>,
    /// msg_id -> enqueue sequence.
    by_id: HashMap<u64, u64>,
}

/// Folds records, in log order, into the live state they describe.
#[derive(Debug, Default)]
pub struct Fold {
    seq: u64,
    records: u64,
    queues: HashMap<String, QueueState>,
    exchanges: HashMap<String, (u64, Record)>,
    bindings: HashMap<(String, String, String), (u64, Record)>,
    quarantined: BTreeSet<String>,
    /// Operations of parts of transactions spanning logs not decided yet, and the commits met.
    tentative: Tentative,
}

impl Fold {
    /// An empty fold.
    pub fn new() -> Fold {
        Fold::default()
    }

    /// Applies one record.
    pub fn apply(&mut self, record: Record) {
        self.apply_at(0, record);
    }

    /// Applies one record whose end is at log offset `at` (see [`Fold::forget_commits_below`]).
    pub fn apply_at(&mut self, at: u64, record: Record) {
        self.seq += 1;
        self.records += 1;
        let seq = self.seq;
        match record {
            Record::Enqueue(message) => self.enqueue_decided(seq, message),
            Record::Settle { queue, msg_id } => self.settle_decided(&queue, msg_id),
            Record::QueueDeclare { name, durable, auto_delete, arguments } => {
                let state = self.queues.entry(name).or_default();
                let seq = state.declared.as_ref().map_or(seq, |d| d.seq);
                state.declared = Some(Declaration { seq, durable, auto_delete, arguments });
            }
            Record::QueueDelete { name } => {
                self.bindings.retain(|(_, queue, _), _| *queue != name);
                self.tentative.queue_deleted(&name);
                self.queues.remove(&name);
            }
            Record::ExchangeDeclare { ref name, .. } => {
                let seq = self.exchanges.get(name).map_or(seq, |(s, _)| *s);
                self.exchanges.insert(name.clone(), (seq, record));
            }
            Record::ExchangeDelete { name } => {
                self.bindings.retain(|(exchange, _, _), _| *exchange != name);
                self.exchanges.remove(&name);
            }
            Record::Bind { ref exchange, ref queue, ref routing_key, .. } => {
                let key = (exchange.clone(), queue.clone(), routing_key.clone());
                self.bindings.entry(key).or_insert((seq, record));
            }
            Record::Unbind { exchange, queue, routing_key } => {
                self.bindings.remove(&(exchange, queue, routing_key));
            }
            Record::TxCommit { tx_id: 0 } => {}
            Record::TxCommit { tx_id } => self.tentative.commit(at, tx_id),
            // One record: it is here whole (checksum) or not at all, so all of its operations
            // apply, in their order, at its place in the log.
            Record::TxPart { ops, .. } => {
                let undecided = match ops.first() {
                    Some(TxOp::Spans { tx_id }) => self.tentative.part(*tx_id).then_some(*tx_id),
                    _ => None,
                };
                for op in ops {
                    self.seq += 1;
                    match (op, undecided) {
                        (TxOp::Enqueue { message, .. }, Some(tx)) => {
                            let before = self.current(&message.queue, message.msg_id);
                            self.tentative.op(tx, &message.queue, message.msg_id, before, Some(message.clone()));
                            self.enqueue(self.seq, message);
                        }
                        (TxOp::Settle { queue, msg_id }, Some(tx)) => {
                            let before = self.settle(&queue, msg_id);
                            self.tentative.op(tx, &queue, msg_id, before, None);
                        }
                        (TxOp::Enqueue { message, .. }, None) => self.enqueue_decided(self.seq, message),
                        (TxOp::Settle { queue, msg_id }, None) => self.settle_decided(&queue, msg_id),
                        (TxOp::Spans { .. }, _) => {}
                    }
                }
            }
        }
    }

    /// The message the fold holds under (queue, id), if any.
    fn current(&self, queue: &str, msg_id: u64) -> Option<StoredMessage> {
        let state = self.queues.get(queue)?;
        state.messages.get(state.by_id.get(&msg_id)?).cloned()
    }

    /// An enqueue outside any undecided part.
    fn enqueue_decided(&mut self, seq: u64, message: StoredMessage) {
        self.tentative.touched(&message.queue, message.msg_id);
        self.enqueue(seq, message);
    }

    /// A settle outside any undecided part.
    fn settle_decided(&mut self, queue: &str, msg_id: u64) {
        self.tentative.touched(queue, msg_id);
        drop(self.settle(queue, msg_id));
    }

    /// Forgets the commits of transactions whose records end at or below log offset `base` (a
    /// follower of a log whose writer deleted the segments below it).
    pub fn forget_commits_below(&mut self, base: u64) {
        self.tentative.forget_commits_below(base);
    }

    /// Removes a message from its queue, returning it.
    fn settle(&mut self, queue: &str, msg_id: u64) -> Option<StoredMessage> {
        let state = self.queues.get_mut(queue)?;
        let at = state.by_id.remove(&msg_id)?;
        state.messages.remove(&at)
    }

    fn enqueue(&mut self, seq: u64, message: StoredMessage) {
        let state = self.queues.entry(message.queue.clone()).or_default();
        if let Some(old) = state.by_id.insert(message.msg_id, seq) {
            tracing::warn!(queue = %message.queue, msg_id = message.msg_id, "duplicate enqueue: the later one wins");
            state.messages.remove(&old);
        }
        state.messages.insert(seq, message);
    }

    /// Marks a queue as quarantined: it is reported, and left out of `Recovered::queues`.
    pub fn quarantine(&mut self, queue: String) {
        self.quarantined.insert(queue);
    }

    /// Records applied so far.
    pub fn records_applied(&self) -> u64 {
        self.records
    }

    /// The live state. `torn_tail_bytes` is left at 0 for the caller to fill in.
    pub fn finish(self) -> Recovered {
        let (committed, undecided, tx_id_max) = self.tentative.finish();
        let mut queues: Vec<(u64, RecoveredQueue)> = Vec::new();
        for (name, state) in self.queues {
            if self.quarantined.contains(&name) {
                continue;
            }
            let Some(declared) = state.declared else {
                if !state.messages.is_empty() {
                    tracing::warn!(queue = %name, count = state.messages.len(), "dropping messages of a queue never declared in this log");
                }
                continue;
            };
            if !declared.durable {
                continue;
            }
            // By id, the order they were first published in: compaction copies live messages
            // forward past newer ones, so log order is not queue order.
            let mut messages: Vec<StoredMessage> =
                state.messages.into_values().map(|m| StoredMessage { redelivered: true, ..m }).collect();
            messages.sort_by_key(|m| m.msg_id);
            let queue = RecoveredQueue {
                name,
                durable: true,
                auto_delete: declared.auto_delete,
                arguments: declared.arguments,
                messages,
            };
            queues.push((declared.seq, queue));
        }
        queues.sort_by_key(|(seq, _)| *seq);
        let mut exchanges: Vec<(u64, Record)> = self
            .exchanges
            .into_values()
            .filter(|(_, r)| matches!(r, Record::ExchangeDeclare { durable: true, .. }))
            .collect();
        exchanges.sort_by_key(|(seq, _)| *seq);
        let mut bindings: Vec<(u64, Record)> = self.bindings.into_values().collect();
        bindings.sort_by_key(|(seq, _)| *seq);
        Recovered {
            records_replayed: self.records,
            torn_tail_bytes: 0,
            queues: queues.into_iter().map(|(_, q)| q).collect(),
            exchanges: exchanges.into_iter().map(|(_, r)| r).collect(),
            bindings: bindings.into_iter().map(|(_, r)| r).collect(),
            quarantined: self.quarantined.into_iter().collect(),
            committed,
            undecided,
            tx_id_max,
        }
    }
}
