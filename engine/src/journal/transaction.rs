//! A transaction's share of the journal: what `Shard::begin_transaction` makes an owner apply
//! is gathered here and appended as one `Record::TxPart`, at once or, for the settles of a
//! transaction spanning shards, once the coordinator releases them. Used on the shard thread.

use ferry_storage::{Record, StorageError, TxOp};

use super::{Backend, Journal, fatal};
use crate::ids::Completion;

/// What a transaction's share appended while it was being gathered: one record's operations,
/// and the completions that wait for that record.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    pub(super) ops: Vec<TxOp>,
    pub(super) waiters: Vec<Completion>,
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

    /// Appends what [`Journal::begin_transaction`] gathered, as one record; returns the
    /// completions to release now (nothing was logged, or the policy does not wait).
    pub fn end_transaction(&mut self) -> Vec<Completion> {
        let gathered = self.transaction.take().unwrap_or_default();
        self.log_gathered(gathered)
    }

    /// Ends a transaction's share whose settles must wait: what [`Journal::begin_transaction`]
    /// gathered is split, its enqueues appended now as one record, its settles kept unlogged
    /// until [`Journal::release_transaction`] with the same `key`. The share's completions wait
    /// for that release too, and no compaction runs meanwhile (the messages it settles are gone
    /// from their queues but must stay on disk until the settle is logged). Returns the
    /// completions to release now (none when settles are held).
    pub fn end_transaction_holding_settles(&mut self, key: Completion) -> Vec<Completion> {
        let gathered = self.transaction.take().unwrap_or_default();
        let (enqueues, settles): (Vec<TxOp>, Vec<TxOp>) =
            gathered.ops.into_iter().partition(|op| matches!(op, TxOp::Enqueue { .. }));
        if settles.is_empty() {
            return self.log_gathered(Gathered { ops: enqueues, waiters: gathered.waiters });
        }
        self.log_gathered(Gathered { ops: enqueues, waiters: Vec::new() });
        self.held.insert(key, Gathered { ops: settles, waiters: gathered.waiters });
        self.hold_compaction();
        Vec::new()
    }

    /// Logs the share held under `key` as one record; returns the completions to release now.
    pub fn release_transaction(&mut self, key: Completion) -> Vec<Completion> {
        let Some(gathered) = self.held.remove(&key) else { return Vec::new() };
        self.release_compaction();
        self.log_gathered(gathered)
    }

    /// Appends `gathered`'s operations as one record (if any) and hands its completions to
    /// [`Journal::after_durable`]; returns those to release now.
    fn log_gathered(&mut self, gathered: Gathered) -> Vec<Completion> {
        if !gathered.ops.is_empty() {
            self.append_part(gathered.ops);
        }
        gathered.waiters.into_iter().filter_map(|c| self.after_durable(c)).collect()
    }

    /// Appends a transaction's share as one `Record::TxPart` and indexes its live messages.
    /// One too large for a segment is appended as separate records (not atomic), with a
    /// warning: a transaction cannot be refused once its operations took effect.
    fn append_part(&mut self, ops: Vec<TxOp>) {
        let record = Record::tx_part(ops);
        let Record::TxPart { ops, .. } = &record else { return };
        let start = self.appended_offset();
        let end = match &mut self.backend {
            Backend::Memory { appended } => {
                // Room below its end for its enqueues' keys (see `LiveIndex`).
                *appended += ops.len() as u64 + 1;
                *appended
            }
            Backend::Log(log) => match log.append(&record) {
                Ok(end) => end.0,
                Err(StorageError::RecordTooLarge { len_bytes, .. }) => {
                    tracing::warn!(
                        len_bytes,
                        "a transaction's share of this shard is too large for one log record: logging its operations one by one (a crash may keep part of it)"
                    );
                    self.append_one_by_one(record);
                    return;
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
                TxOp::Settle { queue, msg_id } => self.live.remove(queue, *msg_id),
            }
        }
    }

    /// A transaction's part that does not fit one record, appended op by op.
    fn append_one_by_one(&mut self, part: Record) {
        if let Record::TxPart { ops, .. } = part {
            for op in ops {
                match op {
                    TxOp::Enqueue { message, .. } => self.append_stored(message),
                    TxOp::Settle { queue, msg_id } => self.append_settle(&queue, msg_id),
                }
            }
        }
    }
}
