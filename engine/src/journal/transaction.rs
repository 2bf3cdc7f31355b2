//! A transaction's share of the journal: what `Shard::begin_transaction` makes an owner apply
//! is gathered here and appended as one `Record::TxPart` (several marked as one transaction,
//! when too large for a segment: `append_part`). A share of a transaction spanning
//! shards is marked with the transaction's id (`TxOp::Spans`): recovery applies it only if a
//! commit for that id (`Record::TxCommit`) is in some shard's log, so its completions wait for
//! the coordinator's decision, and compaction keeps the share's record, and those of the
//! messages it settles, until this log holds the commit itself. Used on the shard thread.

use ferry_storage::{Record, StorageError, TxOp};

use super::{Backend, Journal, fatal};
use crate::ids::Completion;

/// What a transaction's share appended while it was being gathered: one record's operations,
/// and the completions that wait for that record.
#[derive(Debug)]
pub(super) struct Gathered {
    pub(super) ops: Vec<TxOp>,
    pub(super) waiters: Vec<Completion>,
    /// The lowest live-index key of the messages it settles (`u64::MAX`: none).
    pub(super) floor: u64,
}

impl Default for Gathered {
    fn default() -> Self {
        Gathered { ops: Vec::new(), waiters: Vec::new(), floor: u64::MAX }
    }
}

/// A logged share of a transaction spanning shards, waiting for its commit.
#[derive(Debug)]
pub(super) struct Held {
    tx_id: u64,
    /// The share's completions.
    waiters: Vec<Completion>,
    /// Compaction keeps everything from here on ([`Journal::keep_from_here`]); `None` when
    /// no record was appended (a share of only transient messages).
    floor: Option<u64>,
}

impl Journal {
    /// From now until [`Journal::end_transaction`], enqueues and settles are gathered into
    /// one record rather than appended, and completions wait for that record: recovery
    /// applies all of a transaction's share of this shard or, should a crash tear it, none.
    /// Other records (declarations) are appended at once.
    pub fn begin_transaction(&mut self) {
        debug_assert!(self.transaction.is_none(), "transactions on one shard do not nest");
        self.transaction = Some(Gathered::default());
    }

    /// Appends what [`Journal::begin_transaction`] gathered, as one record (or, too large for
    /// one, as several marked as transaction `tx_id` and its commit); returns the completions
    /// to release now (nothing was logged, or the policy does not wait).
    pub fn end_transaction(&mut self, tx_id: u64) -> Vec<Completion> {
        let gathered = self.transaction.take().unwrap_or_default();
        self.log_gathered(gathered, tx_id)
    }

    /// Ends a share of transaction `tx_id`, which spans shards: what
    /// [`Journal::begin_transaction`] gathered is appended now as one record (or pieces) marked
    /// with the id, and `key` completes once it is durable (the coordinator's report). The share's
    /// completions are held until [`Journal::release_transaction`] with the same `key` (the
    /// commit is then durable). Meanwhile compaction keeps the share's record, which it would
    /// otherwise copy forward unmarked, and those of the messages it settles, which an undoing
    /// recovery puts back. Returns the completions to release now.
    pub fn end_transaction_spanning(&mut self, key: Completion, tx_id: u64) -> Vec<Completion> {
        let Gathered { ops, waiters, floor } = self.transaction.take().unwrap_or_default();
        // A share with nothing to log (transient messages only) has nothing to keep either.
        let floor = (!ops.is_empty()).then(|| floor.min(self.keep_from_here()));
        if let Some(floor) = floor {
            self.append_part(ops, Mark::Spans(tx_id));
            self.keep(floor);
        }
        self.held.insert(key, Held { tx_id, waiters, floor });
        self.after_durable(key).into_iter().collect()
    }

    /// The transaction of the share held under `key` committed. With `mark` (this shard is
    /// not the coordinator, whose log holds the commit), its commit is appended to this log
    /// too, and `key` completes once that is durable: the coordinator keeps its own record of
    /// the commit until then. Returns the completions to release now.
    pub fn release_transaction(&mut self, key: Completion, mark: bool) -> Vec<Completion> {
        let mut done = Vec::new();
        if let Some(held) = self.held.remove(&key) {
            if let Some(floor) = held.floor {
                if mark {
                    self.append_tx_commit(held.tx_id);
                }
                self.unkeep(floor);
            }
            done = held.waiters;
        }
        if mark {
            done.extend(self.after_durable(key));
        }
        done
    }

    /// The offset from which on the next record lies: compaction deletes nothing from there
    /// on while it is kept ([`Journal::keep`]).
    pub fn keep_from_here(&self) -> u64 {
        self.appended_offset() + 1
    }

    /// Compaction deletes nothing from `floor` on until [`Journal::unkeep`] with it.
    pub fn keep(&mut self, floor: u64) {
        *self.keeps.entry(floor).or_default() += 1;
    }

    /// Undoes one [`Journal::keep`] of `floor`.
    pub fn unkeep(&mut self, floor: u64) {
        if let Some(count) = self.keeps.get_mut(&floor) {
            *count -= 1;
            if *count == 0 {
                self.keeps.remove(&floor);
            }
        }
    }

    /// Appends the commit of transaction `tx_id`, which spans shards.
    pub fn append_tx_commit(&mut self, tx_id: u64) {
        debug_assert!(tx_id != 0, "id 0 is the synced mark's");
        self.append(&Record::TxCommit { tx_id });
    }

    /// Held shares, by key: every one was logged (or had nothing to log) and waits for its
    /// transaction's commit.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Makes what is appended durable now, blocking the calling thread (start-up only).
    pub fn sync_blocking(&mut self) -> Result<(), StorageError> {
        match self.sync_work() {
            Some(work) => {
                let result = work.run();
                self.complete_sync(result)
            }
            None => Ok(()),
        }
    }

    /// Appends `gathered`'s operations as one record (if any; several marked with `split_id`
    /// and then committed, if one is too large) and hands its completions to
    /// [`Journal::after_durable`]; returns those to release now.
    fn log_gathered(&mut self, gathered: Gathered, split_id: u64) -> Vec<Completion> {
        if !gathered.ops.is_empty() {
            self.append_part(gathered.ops, Mark::Alone(split_id));
        }
        gathered.waiters.into_iter().filter_map(|c| self.after_durable(c)).collect()
    }

    /// Appends a transaction's share as one `Record::TxPart` (marked as `mark` says) and
    /// indexes its live messages. A share too large for a segment is split into several
    /// records, each marked with the transaction's id; one that applies on its own then gets
    /// its commit right after them. Recovery applies the pieces all together or none.
    fn append_part(&mut self, ops: Vec<TxOp>, mark: Mark) {
        let (spans, id) = match mark {
            Mark::Alone(id) => (None, id),
            Mark::Spans(id) => (Some(id), id),
        };
        let Err(ops) = self.append_record(ops, spans) else { return };
        tracing::warn!(
            ops = ops.len(),
            "a transaction's share of this shard is too large for one log record: logging it as several, committed together"
        );
        self.append_halves(ops, id);
        if spans.is_none() {
            self.append_tx_commit(id);
        }
    }

    /// Appends `ops`, too large for one record, as records marked with `tx_id`: each half as
    /// one, or halved again. An operation too large on its own is appended unmarked, with a
    /// warning.
    fn append_halves(&mut self, mut ops: Vec<TxOp>, tx_id: u64) {
        if ops.len() < 2 {
            tracing::warn!(
                "a transaction's operation is too large for one log record: logging it on its own (a crash may keep it alone)"
            );
            self.append_one_by_one(ops);
            return;
        }
        let second = ops.split_off(ops.len() / 2);
        for half in [ops, second] {
            if let Err(half) = self.append_record(half, Some(tx_id)) {
                self.append_halves(half, tx_id);
            }
        }
    }

    /// Appends `ops` as one `Record::TxPart`, first marked `TxOp::Spans` with `spans` if
    /// given, and indexes its live messages; hands the operations back (unmarked) if the
    /// record is too large for a segment.
    fn append_record(&mut self, mut ops: Vec<TxOp>, spans: Option<u64>) -> Result<(), Vec<TxOp>> {
        if let Some(tx_id) = spans {
            ops.insert(0, TxOp::Spans { tx_id });
        }
        let record = Record::tx_part(ops);
        let Record::TxPart { ops, .. } = &record else { return Ok(()) };
        let start = self.appended_offset();
        let end = match &mut self.backend {
            Backend::Memory { appended } => {
                // Room below its end for its enqueues' keys (see `LiveIndex`).
                *appended += ops.len() as u64 + 1;
                *appended
            }
            Backend::Log(log) => match log.append(&record) {
                Ok(end) => end.0,
                Err(StorageError::RecordTooLarge { .. }) => {
                    let Record::TxPart { mut ops, .. } = record else { return Ok(()) };
                    if spans.is_some() {
                        ops.remove(0);
                    }
                    return Err(ops);
                }
                Err(e) => fatal(&e),
            },
        };
        (self.sync_wake)();
        let enqueues = ops.iter().filter(|op| matches!(op, TxOp::Enqueue { .. })).count() as u64;
        let size = usize::try_from((end - start) / enqueues.max(1)).unwrap_or(usize::MAX);
        // Rising in op order, so that compaction copies them forward in the order they came.
        let mut key = end - enqueues;
        for op in ops {
            match op {
                TxOp::Enqueue { message, .. } => {
                    self.live.insert(&message.queue, message.msg_id, key, size);
                    key += 1;
                }
                TxOp::Settle { queue, msg_id } => {
                    self.live.remove(queue, *msg_id);
                }
                TxOp::Spans { .. } => {}
            }
        }
        Ok(())
    }

    /// Operations appended one record each (each too large to share one).
    fn append_one_by_one(&mut self, ops: Vec<TxOp>) {
        for op in ops {
            match op {
                TxOp::Enqueue { message, .. } => self.append_stored(message),
                TxOp::Settle { queue, msg_id } => self.append_settle(&queue, msg_id),
                TxOp::Spans { .. } => {}
            }
        }
    }
}

/// How a share's record is marked.
#[derive(Debug, Clone, Copy)]
enum Mark {
    /// It applies on its own; the id marks its pieces should it need several records.
    Alone(u64),
    /// A share of this transaction, which spans shards.
    Spans(u64),
}
