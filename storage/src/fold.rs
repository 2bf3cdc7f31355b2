//! `Fold`: turns a replayed stream of records into `Recovered` — live durable queues with
//! their unsettled messages, live exchanges and bindings, quarantined queues. Pure, in
//! memory; used once at open on the shard thread, or by the engine across several shards'
//! `replay`s. Limits: holds every live message of the folded logs in memory (recovery needs
//! them anyway); enqueues for a queue never declared in the folded records are dropped.
//!
//! A part of a transaction that spans logs ([`TxOp::Spans`]) is applied at its place like any
//! other, and also remembered until the fold meets its commit (`Record::TxCommit`). What is
//! still remembered at the end comes back in `Recovered::undecided`, for the caller to keep
//! or undo once every log's commits are known ([`Recovered::resolve`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::record::{Record, StoredMessage, TxOp};

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
    /// Transactions spanning logs whose commit these records hold (sorted).
    pub committed: Vec<u64>,
    /// Parts of transactions spanning logs whose commit these records do not hold: what
    /// undoing each would change (see [`Recovered::resolve`]), by transaction id.
    pub undecided: Vec<Undecided>,
    /// The highest transaction id any part or commit here names (0: none).
    pub tx_id_max: u64,
}

/// What undoing a part of a transaction whose commit was not found changes: only what no
/// later record touched (a consumer's ack of a message it published, a copy written again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undecided {
    /// The transaction.
    pub tx_id: u64,
    /// Messages it enqueued, as (queue, id): removed when undone.
    pub enqueued: Vec<(String, u64)>,
    /// Messages it settled: put back (redelivered) when undone.
    pub settled: Vec<StoredMessage>,
}

impl Recovered {
    /// Keeps the undecided parts whose transaction `committed` says committed (in another
    /// log) and undoes the others: a transaction whose commit no log holds never happened.
    /// Returns the ids kept, for the caller to record their commit in this log too before its
    /// evidence elsewhere may be compacted away.
    pub fn resolve(&mut self, committed: &dyn Fn(u64) -> bool) -> Vec<u64> {
        let mut kept = Vec::new();
        for part in std::mem::take(&mut self.undecided) {
            if committed(part.tx_id) {
                kept.push(part.tx_id);
                continue;
            }
            for (queue, msg_id) in part.enqueued {
                if let Some(q) = self.queues.iter_mut().find(|q| q.name == queue) {
                    q.messages.retain(|m| m.msg_id != msg_id);
                }
            }
            for message in part.settled {
                let Some(q) = self.queues.iter_mut().find(|q| q.name == message.queue) else { continue };
                if let Err(at) = q.messages.binary_search_by_key(&message.msg_id, |m| m.msg_id) {
                    q.messages.insert(at, StoredMessage { redelivered: true, ..message });
                }
            }
        }
        kept.sort_unstable();
        kept.dedup();
        kept
    }
}

/// Resolves several logs' undecided parts against the commits all of them hold (what the
/// broker does across its shards at start-up); returns each log's ids kept.
pub fn resolve_together(logs: &mut [Recovered]) -> Vec<Vec<u64>> {
    let committed: BTreeSet<u64> = logs.iter().flat_map(|r| r.committed.iter().copied()).collect();
    logs.iter_mut().map(|r| r.resolve(&|tx| committed.contains(&tx))).collect()
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
    /// Transactions spanning logs whose commit was folded.
    committed: BTreeSet<u64>,
    /// queue -> msg_id -> (transaction, what undoing it restores) for the operations of
    /// parts whose commit was not folded yet and that no later record touched.
    tentative: HashMap<String, HashMap<u64, (u64, Option<StoredMessage>)>>,
    tx_id_max: u64,
}

impl Fold {
    /// An empty fold.
    pub fn new() -> Fold {
        Fold::default()
    }

    /// Applies one record.
    pub fn apply(&mut self, record: Record) {
        self.seq += 1;
        self.records += 1;
        let seq = self.seq;
        match record {
            Record::Enqueue(message) => self.enqueue(seq, message),
            Record::Settle { queue, msg_id } => drop(self.settle(&queue, msg_id)),
            Record::QueueDeclare { name, durable, auto_delete, arguments } => {
                let state = self.queues.entry(name).or_default();
                let seq = state.declared.as_ref().map_or(seq, |d| d.seq);
                state.declared = Some(Declaration { seq, durable, auto_delete, arguments });
            }
            Record::QueueDelete { name } => {
                self.bindings.retain(|(_, queue, _), _| *queue != name);
                self.tentative.remove(&name);
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
            Record::TxCommit { tx_id } => {
                self.tx_id_max = self.tx_id_max.max(tx_id);
                self.committed.insert(tx_id);
                self.tentative.retain(|_, ops| {
                    ops.retain(|_, (tx, _)| *tx != tx_id);
                    !ops.is_empty()
                });
            }
            // One record: it is here whole (checksum) or not at all, so all of its operations
            // apply, in their order, at its place in the log.
            Record::TxPart { ops, .. } => {
                let spans = match ops.first() {
                    Some(TxOp::Spans { tx_id }) => Some(*tx_id),
                    _ => None,
                };
                self.tx_id_max = self.tx_id_max.max(spans.unwrap_or(0));
                let tentative = spans.filter(|tx| !self.committed.contains(tx));
                for op in ops {
                    self.seq += 1;
                    match op {
                        TxOp::Enqueue { message, .. } => {
                            let key = tentative.map(|tx| (message.queue.clone(), message.msg_id, tx));
                            self.enqueue(self.seq, message);
                            if let Some((queue, msg_id, tx)) = key {
                                self.tentative.entry(queue).or_default().insert(msg_id, (tx, None));
                            }
                        }
                        TxOp::Settle { queue, msg_id } => {
                            let settled = self.settle(&queue, msg_id);
                            if let (Some(tx), Some(message)) = (tentative, settled) {
                                self.tentative.entry(queue).or_default().insert(msg_id, (tx, Some(message)));
                            }
                        }
                        TxOp::Spans { .. } => {}
                    }
                }
            }
        }
    }

    /// A later record touched this message: undoing an earlier undecided part no longer may.
    fn untentative(&mut self, queue: &str, msg_id: u64) {
        if self.tentative.is_empty() {
            return;
        }
        if let Some(ops) = self.tentative.get_mut(queue) {
            ops.remove(&msg_id);
            if ops.is_empty() {
                self.tentative.remove(queue);
            }
        }
    }

    /// Removes a message from its queue, returning it.
    fn settle(&mut self, queue: &str, msg_id: u64) -> Option<StoredMessage> {
        self.untentative(queue, msg_id);
        let state = self.queues.get_mut(queue)?;
        let at = state.by_id.remove(&msg_id)?;
        state.messages.remove(&at)
    }

    fn enqueue(&mut self, seq: u64, message: StoredMessage) {
        self.untentative(&message.queue, message.msg_id);
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
        let mut undecided: BTreeMap<u64, Undecided> = BTreeMap::new();
        for (queue, ops) in self.tentative {
            for (msg_id, (tx_id, settled)) in ops {
                let part = undecided.entry(tx_id).or_insert_with(|| Undecided { tx_id, ..Undecided::default() });
                match settled {
                    Some(message) => part.settled.push(message),
                    None => part.enqueued.push((queue.clone(), msg_id)),
                }
            }
        }
        for part in undecided.values_mut() {
            part.enqueued.sort_unstable();
            part.settled.sort_by(|a, b| (&a.queue, a.msg_id).cmp(&(&b.queue, b.msg_id)));
        }
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
            committed: self.committed.into_iter().collect(),
            undecided: undecided.into_values().collect(),
            tx_id_max: self.tx_id_max,
        }
    }
}
