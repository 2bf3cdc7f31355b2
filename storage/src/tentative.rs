//! What a fold cannot decide alone: operations of parts of transactions that span logs
//! ([`TxOp::Spans`](crate::TxOp::Spans)) whose commit the folded records do not hold. The fold
//! applies them like any other, and [`Tentative`] remembers, per message they touched, the
//! message as it was before the first of them and what each did, until a commit decides them
//! or a record outside any undecided part touches the message (which then fixes its state from
//! there on). What is left comes back as [`Undecided`] entries of `Recovered`, for
//! [`Recovered::resolve`] once every log's commits are known. Pure, in memory.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::fold::Recovered;
use crate::record::StoredMessage;

/// One message touched by parts of transactions whose commit these records do not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    /// Its queue.
    pub queue: String,
    /// Its id.
    pub msg_id: u64,
    /// The message as it was before the first of those operations (`None`: not in its queue).
    pub before: Option<StoredMessage>,
    /// Each operation, in log order: its transaction (0: one whose commit these records hold)
    /// and the message it enqueued (`None`: a settle).
    pub ops: Vec<(u64, Option<StoredMessage>)>,
}

/// The fold's record of undecided operations and of the commits it met.
#[derive(Debug, Default)]
pub(crate) struct Tentative {
    /// queue -> msg_id -> what undecided parts did to it.
    chains: HashMap<String, HashMap<u64, Undecided>>,
    committed: HashSet<u64>,
    /// Each commit met, with the log offset its record ends at, in log order (see
    /// [`Tentative::forget_commits_below`]).
    committed_at: VecDeque<(u64, u64)>,
    tx_id_max: u64,
}

impl Tentative {
    /// A part of transaction `tx` is folded: whether its operations are undecided.
    pub(crate) fn part(&mut self, tx: u64) -> bool {
        self.tx_id_max = self.tx_id_max.max(tx);
        !self.committed.contains(&tx)
    }

    /// An undecided operation of `tx` on a message: `before` is the message as the fold held
    /// it before the operation, `enqueued` what it enqueued (`None`: a settle).
    pub(crate) fn op(
        &mut self,
        tx: u64,
        queue: &str,
        msg_id: u64,
        before: Option<StoredMessage>,
        enqueued: Option<StoredMessage>,
    ) {
        let chains = self.chains.entry(queue.to_owned()).or_default();
        let chain = chains.entry(msg_id).or_insert_with(|| Undecided {
            queue: queue.to_owned(),
            msg_id,
            before,
            ops: Vec::new(),
        });
        chain.ops.push((tx, enqueued));
    }

    /// A record outside any undecided part touched a message: its state no longer depends on
    /// the undecided operations before.
    pub(crate) fn touched(&mut self, queue: &str, msg_id: u64) {
        if self.chains.is_empty() {
            return;
        }
        if let Some(chains) = self.chains.get_mut(queue) {
            chains.remove(&msg_id);
            if chains.is_empty() {
                self.chains.remove(queue);
            }
        }
    }

    /// The queue is gone: what it held is decided.
    pub(crate) fn queue_deleted(&mut self, queue: &str) {
        self.chains.remove(queue);
    }

    /// The commit of `tx`, read at log offset `at`.
    pub(crate) fn commit(&mut self, at: u64, tx: u64) {
        self.tx_id_max = self.tx_id_max.max(tx);
        if !self.committed.insert(tx) {
            return;
        }
        self.committed_at.push_back((at, tx));
        self.chains.retain(|_, chains| {
            chains.retain(|_, chain| {
                for (op_tx, _) in &mut chain.ops {
                    if *op_tx == tx {
                        *op_tx = 0;
                    }
                }
                chain.ops.iter().any(|(op_tx, _)| *op_tx != 0)
            });
            !chains.is_empty()
        });
    }

    /// Forgets the commits of records that end at or below log offset `base` (a follower whose
    /// writer deleted the segments below it; a segment's last record ends where the next begins): no log needs them any more, since a commit is compacted away only once every
    /// shard's log holds its own.
    pub(crate) fn forget_commits_below(&mut self, base: u64) {
        while let Some(&(at, tx)) = self.committed_at.front() {
            if at > base {
                break;
            }
            self.committed_at.pop_front();
            self.committed.remove(&tx);
        }
    }

    /// The commits met (sorted), the undecided messages (by queue and id), the highest id.
    pub(crate) fn finish(self) -> (Vec<u64>, Vec<Undecided>, u64) {
        let mut committed: Vec<u64> = self.committed.into_iter().collect();
        committed.sort_unstable();
        let mut undecided: Vec<Undecided> = self.chains.into_values().flat_map(HashMap::into_values).collect();
        undecided.sort_by(|a, b| (&a.queue, a.msg_id).cmp(&(&b.queue, b.msg_id)));
        (committed, undecided, self.tx_id_max)
    }
}

impl Recovered {
    /// Decides the undecided messages: each is rebuilt from its state before the undecided
    /// operations, applying those of transactions `committed` says committed (in another log)
    /// and skipping the others: a transaction whose commit no log holds never happened.
    /// Returns the ids of the transactions applied, for the caller to record their commit in
    /// this log too before its evidence elsewhere may be compacted away.
    pub fn resolve(&mut self, committed: &dyn Fn(u64) -> bool) -> Vec<u64> {
        let mut kept = BTreeSet::new();
        for chain in std::mem::take(&mut self.undecided) {
            let mut state = chain.before;
            for (tx, enqueued) in chain.ops {
                if tx != 0 {
                    if !committed(tx) {
                        continue;
                    }
                    kept.insert(tx);
                }
                state = enqueued;
            }
            let Some(queue) = self.queues.iter_mut().find(|q| q.name == chain.queue) else { continue };
            let state = state.map(|m| StoredMessage { redelivered: true, ..m });
            match (queue.messages.binary_search_by_key(&chain.msg_id, |m| m.msg_id), state) {
                (Ok(at), Some(message)) => queue.messages[at] = message,
                (Ok(at), None) => drop(queue.messages.remove(at)),
                (Err(at), Some(message)) => queue.messages.insert(at, message),
                (Err(_), None) => {}
            }
        }
        kept.into_iter().collect()
    }
}

/// Resolves several logs' undecided messages against the commits all of them hold (what the
/// broker does across its shards at start-up); returns each log's ids applied.
pub fn resolve_together(logs: &mut [Recovered]) -> Vec<Vec<u64>> {
    let committed: BTreeSet<u64> = logs.iter().flat_map(|r| r.committed.iter().copied()).collect();
    logs.iter_mut().map(|r| r.resolve(&|tx| committed.contains(&tx))).collect()
}
