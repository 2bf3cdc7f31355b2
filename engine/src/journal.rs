//! The shard's durability seam (ARCHITECTURE §4): every persistent enqueue to a durable queue,
//! every settlement of one, and every durable declaration goes through here. It separates
//! *appended* from *durable*: a completion (receipt, confirm) waiting on a record is released
//! only once a sync covers that record. The runtime's committer task runs [`SyncWork`] on a
//! blocking thread, never on the shard's event loop, then calls `Shard::journal_synced`.
//!
//! Backends: the storage crate's mmap log (what the broker runs), and `Memory` (no files;
//! appended counts as durable once the committer runs) for runtime-free tests. An append or
//! sync failure is fatal: the caller stops acknowledging and the broker exits.

use crate::fastmap::HashMap;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_storage::{
    CompactJob, LogConfig, Offset, Record, Recovered, ShardLog, StorageError, StoredMessage, SyncJob, Tail, TxOp,
};

use crate::gather::Gather;
use crate::ids::Completion;
use crate::model::exchange::ExchangeSpec;
use crate::model::message::{Content, NativeHeaders, Properties};
use crate::model::routing::QueueSpec;

mod transaction;

use transaction::{Gathered, Held};

enum Backend {
    Memory { appended: u64 },
    Log(Box<ShardLog>),
}

/// Where each live persistent message's newest enqueue record sits, so compaction knows
/// which segments still matter and what to copy forward. One entry per live message, keyed by
/// an offset inside the record's segment: the record's end offset, or for the i-th of the n
/// enqueues of a transaction's part, `end - n + i` (inside the part, so no other record's end,
/// and in op order).
#[derive(Debug, Default)]
struct LiveIndex {
    by_message: HashMap<(String, u64), (u64, usize)>,
    by_offset: BTreeMap<u64, (String, u64)>,
}

impl LiveIndex {
    fn insert(&mut self, queue: &str, msg_id: u64, offset: u64, size: usize) {
        if let Some((old, _)) = self.by_message.insert((queue.to_owned(), msg_id), (offset, size)) {
            self.by_offset.remove(&old);
        }
        self.by_offset.insert(offset, (queue.to_owned(), msg_id));
    }

    /// Removes a message's entry, returning its key.
    fn remove(&mut self, queue: &str, msg_id: u64) -> Option<u64> {
        let (offset, _) = self.by_message.remove(&(queue.to_owned(), msg_id))?;
        self.by_offset.remove(&offset);
        Some(offset)
    }

    fn remove_queue(&mut self, queue: &str) {
        let gone: Vec<(String, u64)> = self.by_message.keys().filter(|(q, _)| q == queue).cloned().collect();
        for (q, id) in gone {
            self.remove(&q, id);
        }
    }
}

/// Group commits completed, over every shard of the process (`/metrics`).
pub static SYNCS_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Completions (receipts, confirms, ...) those syncs released: divided by
/// [`SYNCS_TOTAL`], the mean group-commit batch a raw sync loop is compared at.
pub static SYNC_RELEASED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// When confirmations (receipts, publisher confirms) for persistent messages go out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncPolicy {
    /// Only once a sync covers the record (the default; nothing confirmed is ever lost).
    #[default]
    AckAfterSync,
    /// As soon as the record is in the mapped log, before the sync. Survives the broker
    /// process being killed (the page cache keeps the bytes) but LOSES confirmed messages when
    /// the machine crashes or loses power before the next sync.
    AckBeforeSync,
}

/// What a compaction round will do: copy `copy` forward, then drop segments below `keep_from`.
#[derive(Debug, PartialEq, Eq)]
pub struct CompactionPlan {
    pub copy: Vec<(String, u64)>,
    pub keep_from: u64,
}

/// Copy live messages forward only when those below the active segment are at most this
/// share of a segment (else only the fully-settled prefix of segments is deleted).
const COPY_FORWARD_SEGMENT_FRACTION: u64 = 4;
/// After segment deletions failed, the next compaction round waits this long: each round
/// writes the declarations again, so one per sync against a disk that refuses unlinks would
/// fill it.
const COMPACTION_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A shard's journal plus the completions waiting for durability.
pub struct Journal {
    backend: Backend,
    durable: u64,
    /// Completions waiting for the offset, and whether their connection returned promptly.
    waiters: VecDeque<(u64, Completion, bool)>,
    gather: Gather,
    sync_wake: Rc<dyn Fn()>,
    live: LiveIndex,
    /// Segments below `.0` may go once the log is durable up to `.1` (the copies).
    pending_compaction: Option<(u64, u64)>,
    /// No compaction round before this (segment deletions failed).
    compaction_retry_at: Option<Instant>,
    segment_size_bytes: u64,
    policy: SyncPolicy,
    /// A transaction's share of this shard being gathered (see [`Journal::begin_transaction`]).
    transaction: Option<Gathered>,
    /// Logged shares of transactions spanning shards, waiting for their commit, by the key
    /// that releases them ([`Journal::end_transaction_spanning`]).
    held: HashMap<Completion, Held>,
    /// Offsets from which on compaction deletes nothing, with their counts: records that
    /// transactions spanning shards still need ([`Journal::keep_from_here`]), and 0 while
    /// nothing may go ([`Journal::hold_compaction`]: records the live index does not know
    /// about, such as recovery's moves in flight, `shard::recovery::Moves`).
    keeps: BTreeMap<u64, usize>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.backend {
            Backend::Memory { .. } => "memory",
            Backend::Log(_) => "log",
        };
        f.debug_struct("Journal").field("backend", &kind).field("durable", &self.durable).finish()
    }
}

/// A sync to run off the event loop.
#[derive(Debug)]
pub enum SyncWork {
    Memory(u64),
    Log(SyncJob),
}

impl SyncWork {
    /// Runs the sync (blocking). Returns the offset now durable.
    pub fn run(self) -> Result<u64, StorageError> {
        match self {
            SyncWork::Memory(target) => Ok(target),
            SyncWork::Log(job) => job.run().map(|o| o.0),
        }
    }
}

impl Journal {
    /// A journal that keeps nothing on disk.
    pub fn memory(sync_wake: Rc<dyn Fn()>) -> Self {
        Journal {
            backend: Backend::Memory { appended: 0 },
            durable: 0,
            waiters: VecDeque::new(),
            gather: Gather::new(Duration::ZERO),
            sync_wake,
            live: LiveIndex::default(),
            pending_compaction: None,
            compaction_retry_at: None,
            segment_size_bytes: 0,
            policy: SyncPolicy::AckAfterSync,
            transaction: None,
            held: HashMap::default(),
            keeps: BTreeMap::new(),
        }
    }

    /// Opens (or creates) the shard's log as `config` says, returning what it recovered.
    pub fn open(
        config: LogConfig,
        policy: SyncPolicy,
        sync_wake: Rc<dyn Fn()>,
    ) -> Result<(Self, Recovered), StorageError> {
        Journal::open_warm(config, None, policy, sync_wake)
    }

    /// Like [`Journal::open`], continuing a warm standby's fold of the log when there is one.
    pub fn open_warm(
        config: LogConfig,
        warm: Option<Tail>,
        policy: SyncPolicy,
        sync_wake: Rc<dyn Fn()>,
    ) -> Result<(Self, Recovered), StorageError> {
        let segment_size_bytes = config.segment_size_bytes;
        let (log, recovered) = ShardLog::open_warm(config, warm)?;
        let durable = log.durable_offset().0;
        let journal = Journal {
            backend: Backend::Log(Box::new(log)),
            durable,
            waiters: VecDeque::new(),
            gather: Gather::new(Duration::ZERO),
            sync_wake,
            live: LiveIndex::default(),
            pending_compaction: None,
            compaction_retry_at: None,
            segment_size_bytes,
            policy,
            transaction: None,
            held: HashMap::default(),
            keeps: BTreeMap::new(),
        };
        Ok((journal, recovered))
    }

    fn append(&mut self, record: &Record) -> u64 {
        let offset = match &mut self.backend {
            Backend::Memory { appended } => {
                *appended += 1;
                *appended
            }
            Backend::Log(log) => match log.append(record) {
                Ok(offset) => offset.0,
                Err(e) => fatal(&e),
            },
        };
        (self.sync_wake)();
        offset
    }

    /// Where the next record goes.
    pub fn appended_offset(&self) -> u64 {
        match &self.backend {
            Backend::Memory { appended } => *appended,
            Backend::Log(log) => log.appended_offset().0,
        }
    }

    /// Records a persistent message; `completion` is released once it is durable.
    pub fn append_enqueue(&mut self, queue: &str, msg_id: u64, content: &Content) {
        if let Some(gathered) = &mut self.transaction {
            gathered.ops.push(TxOp::enqueue(stored_message(queue, msg_id, content)));
            return;
        }
        self.append_stored(stored_message(queue, msg_id, content));
    }

    fn append_stored(&mut self, message: StoredMessage) {
        let start = self.appended_offset();
        let record = Record::Enqueue(message);
        let offset = self.append(&record);
        // The record's size, not the body's: what copying it forward appends again.
        let size = usize::try_from(offset - start).unwrap_or(usize::MAX);
        if let Record::Enqueue(message) = &record {
            self.live.insert(&message.queue, message.msg_id, offset, size);
        }
    }

    /// Holds `completion` until everything appended so far is durable, or hands it straight
    /// back (to complete now) when it already is (no sync would come to release it: a receipt
    /// for a dropped message nothing logged) or, for a client's, under
    /// [`SyncPolicy::AckBeforeSync`].
    pub fn after_durable(&mut self, completion: Completion) -> Option<Completion> {
        if let Some(gathered) = &mut self.transaction {
            gathered.waiters.push(completion);
            return None;
        }
        // The shard's own waits (a transaction's phases, a dead-lettered copy) order records
        // across logs: they wait for the sync under every policy.
        match self.policy {
            SyncPolicy::AckBeforeSync if !completion.conn.is_shard_itself() => Some(completion),
            _ if self.is_synced() && self.waiters.is_empty() => Some(completion),
            _ => {
                let offset = self.appended_offset();
                // A shard's own waits are no client whose return to time.
                let prompt = !completion.conn.is_shard_itself() && self.gather.added(completion.conn, Instant::now());
                self.waiters.push_back((offset, completion, prompt));
                (self.sync_wake)();
                None
            }
        }
    }

    /// Records that a persistent message was settled (acked or dropped).
    pub fn append_settle(&mut self, queue: &str, msg_id: u64) {
        let at = self.live.remove(queue, msg_id);
        match &mut self.transaction {
            Some(gathered) => {
                gathered.floor = gathered.floor.min(at.unwrap_or(u64::MAX));
                gathered.ops.push(TxOp::Settle { queue: queue.to_owned(), msg_id });
            }
            None => drop(self.append(&Record::Settle { queue: queue.to_owned(), msg_id })),
        }
    }

    /// Records a durable queue's declaration (no-op for transient queues).
    pub fn append_queue_declare(&mut self, spec: &QueueSpec) {
        if spec.durable {
            let record = Record::QueueDeclare {
                name: spec.name.clone(),
                durable: true,
                auto_delete: spec.auto_delete,
                arguments: spec.arguments.clone(),
            };
            self.append(&record);
        }
    }

    /// Records a durable queue's deletion.
    pub fn append_queue_delete(&mut self, spec: &QueueSpec) {
        if spec.durable {
            self.live.remove_queue(&spec.name);
            self.append(&Record::QueueDelete { name: spec.name.clone() });
        }
    }

    /// Records a durable exchange's declaration (no-op for transient ones). Every shard keeps
    /// its own copy, so its recovery can declare the exchanges its bindings need first.
    pub fn append_exchange_declare(&mut self, spec: &ExchangeSpec) {
        if spec.durable {
            self.append(&Record::ExchangeDeclare {
                name: spec.name.clone(),
                kind: spec.kind.as_str().to_owned(),
                durable: true,
                auto_delete: spec.auto_delete,
                internal: spec.internal,
                arguments: spec.arguments.clone(),
            });
        }
    }

    /// Records a durable exchange's deletion (its bindings as source go with it on recovery).
    pub fn append_exchange_delete(&mut self, spec: &ExchangeSpec) {
        if spec.durable {
            self.append(&Record::ExchangeDelete { name: spec.name.clone() });
        }
    }

    /// Records a binding of a durable queue (or its removal).
    pub fn append_binding(
        &mut self,
        exchange: &str,
        queue: &str,
        key: &str,
        arguments: &[(String, String)],
        bound: bool,
    ) {
        let (exchange, queue, routing_key) = (exchange.to_owned(), queue.to_owned(), key.to_owned());
        let record = if bound {
            Record::Bind { exchange, queue, routing_key, arguments: arguments.to_vec() }
        } else {
            Record::Unbind { exchange, queue, routing_key }
        };
        self.append(&record);
    }

    /// The sync to run now, if anything appended is not yet durable.
    pub fn sync_work(&mut self) -> Option<SyncWork> {
        match &mut self.backend {
            Backend::Memory { appended } => (*appended > self.durable).then_some(SyncWork::Memory(*appended)),
            Backend::Log(log) => {
                if log.is_poisoned() {
                    fatal(&StorageError::Poisoned);
                }
                log.sync_job().map(SyncWork::Log)
            }
        }
    }

    /// True when synced records wait for a later record's synced mark (see
    /// [`ShardLog::wants_mark`]); never for the memory backend.
    pub fn wants_mark(&self) -> bool {
        match &self.backend {
            Backend::Memory { .. } => false,
            Backend::Log(log) => log.wants_mark(),
        }
    }

    /// Appends the record that carries the mark [`Journal::wants_mark`] asks for; the next
    /// sync makes it durable. Nothing waits for it, and a failure (no room for a new segment)
    /// only leaves the batch without its mark.
    pub fn append_mark(&mut self) {
        if let Backend::Log(log) = &mut self.backend {
            match log.append_mark() {
                Ok(_) => (self.sync_wake)(),
                Err(e) => tracing::warn!("appending a synced mark failed: {e}"),
            }
        }
    }

    /// Records a finished sync. An error is returned for the caller to stop the broker.
    pub fn complete_sync(&mut self, result: Result<u64, StorageError>) -> Result<(), StorageError> {
        let durable = match &mut self.backend {
            Backend::Memory { .. } => result?,
            Backend::Log(log) => log.complete_sync(result.map(ferry_storage::Offset))?.0,
        };
        assert!(durable >= self.durable, "durable offset never goes back");
        self.durable = durable;
        SYNCS_TOTAL.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Lets syncs wait up to `limit` for the producers the last one released (`gather`).
    pub fn set_group_commit_wait(&mut self, limit: Duration) {
        self.gather = Gather::new(limit);
    }

    /// When the next sync is cut: see [`Gather`].
    pub fn gather_mut(&mut self) -> &mut Gather {
        &mut self.gather
    }

    /// True when nothing appended waits for a sync.
    pub fn is_synced(&self) -> bool {
        self.appended_offset() <= self.durable
    }

    /// Completions now covered by the durable offset.
    pub fn take_durable_waiters(&mut self) -> Vec<Completion> {
        let mut done = Vec::new();
        let now = Instant::now();
        while let Some((offset, _, _)) = self.waiters.front() {
            if *offset > self.durable {
                break;
            }
            if let Some((_, c, prompt)) = self.waiters.pop_front() {
                if !c.conn.is_shard_itself() {
                    self.gather.released(c.conn, prompt, now);
                }
                done.push(c);
            }
        }
        SYNC_RELEASED_TOTAL.fetch_add(done.len() as u64, Ordering::Relaxed);
        done
    }
}

impl Journal {
    /// A compaction round, when at least two sealed segments exist. Live messages below the
    /// active segment are copied forward when they are few; otherwise only the prefix of
    /// segments below the oldest live message can go, and there is no round while the oldest
    /// segment holds one (it would write the declarations again, and sync, for nothing).
    pub fn compaction_plan(&self) -> Option<CompactionPlan> {
        let Backend::Log(log) = &self.backend else { return None };
        if log.segment_count() < 3 || self.pending_compaction.is_some() {
            return None;
        }
        if self.compaction_retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        // Nothing from the oldest record a transaction spanning shards still needs on.
        let active = log.active_base().0;
        let limit = self.keeps.keys().next().map_or(active, |floor| active.min(*floor));
        if log.sealed_below(Offset(limit)) == 0 {
            return None;
        }
        let below: Vec<(&u64, &(String, u64))> = self.live.by_offset.range(..limit).collect();
        let bytes: u64 =
            below.iter().filter_map(|(_, k)| self.live.by_message.get(*k)).map(|(_, size)| *size as u64).sum();
        if bytes <= self.segment_size_bytes / COPY_FORWARD_SEGMENT_FRACTION {
            let copy = below.into_iter().map(|(_, k)| k.clone()).collect();
            return Some(CompactionPlan { copy, keep_from: limit });
        }
        let oldest = below.first().map_or(limit, |(offset, _)| **offset);
        (log.sealed_below(Offset(oldest)) > 0).then(|| CompactionPlan { copy: Vec::new(), keep_from: oldest })
    }

    /// Keeps every segment until [`Journal::release_compaction`] (a [`Journal::keep`] from
    /// the start).
    pub fn hold_compaction(&mut self) {
        self.keep(0);
    }

    pub fn release_compaction(&mut self) {
        self.unkeep(0);
    }

    /// After copying forward: segments below `keep_from` go once everything now appended is
    /// durable.
    pub fn schedule_compaction(&mut self, keep_from: u64) {
        self.pending_compaction = Some((keep_from, self.appended_offset()));
        (self.sync_wake)();
    }

    /// The file deletions that are now safe, if any (run it on a blocking thread).
    pub fn compact_job(&mut self) -> Option<CompactJob> {
        let (keep_from, needs_durable) = self.pending_compaction?;
        if self.durable < needs_durable {
            return None;
        }
        self.pending_compaction = None;
        let Backend::Log(log) = &mut self.backend else { return None };
        match log.compact_job(Offset(keep_from)) {
            Ok(job) => job,
            Err(e) => fatal(&e),
        }
    }

    /// Hard-links the log's segment files into its sub-directory `name` (see
    /// `ShardLog::keep_segments`); `None` without a log.
    pub fn keep_segments(&self, name: &str) -> Option<Result<std::path::PathBuf, StorageError>> {
        match &self.backend {
            Backend::Log(log) => Some(log.keep_segments(name)),
            Backend::Memory { .. } => None,
        }
    }

    /// A compaction job stopped part-way: the segments it left go back to the log, to be
    /// deleted by a later round (not before `COMPACTION_RETRY_AFTER`) before any after them.
    /// Returns why it stopped.
    pub fn compact_failed(&mut self, failed: ferry_storage::CompactFailed) -> StorageError {
        self.compaction_retry_at = Some(Instant::now() + COMPACTION_RETRY_AFTER);
        match &mut self.backend {
            Backend::Log(log) => log.compact_failed(failed),
            Backend::Memory { .. } => failed.error,
        }
    }

    /// Drops a message from the live index (it is no longer in its queue).
    pub fn forget(&mut self, queue: &str, msg_id: u64) {
        self.live.remove(queue, msg_id);
    }

    /// A job preparing the next log segment off the event loop, when one is due.
    pub fn spare_job(&mut self) -> Option<ferry_storage::SpareJob> {
        match &mut self.backend {
            Backend::Log(log) => log.spare_job(),
            Backend::Memory { .. } => None,
        }
    }

    /// Hands the prepared segment to the log.
    pub fn install_spare(&mut self, result: Result<ferry_storage::Spare, StorageError>) {
        if let Backend::Log(log) = &mut self.backend {
            log.install_spare(result);
        }
    }

    /// Live persistent messages the journal tracks (for tests and metrics).
    pub fn live_count(&self) -> usize {
        self.live.by_message.len()
    }

    /// Bytes of segment files on disk (0 for the memory backend).
    pub fn disk_bytes(&self) -> u64 {
        self.segment_count() as u64 * self.segment_size_bytes
    }

    /// Segment files on disk (0 for the memory backend).
    pub fn segment_count(&self) -> usize {
        match &self.backend {
            Backend::Memory { .. } => 0,
            Backend::Log(log) => log.segment_count(),
        }
    }
}

/// An append that fails leaves the log in an unknown state: stop rather than ack anything.
fn fatal(error: &StorageError) -> ! {
    tracing::error!("journal append failed, stopping the broker: {error}");
    std::process::exit(70)
}

/// Prefixes the destination of an exchange-to-exchange binding in a `Record::Bind`'s queue
/// field (the record names queues; no queue name starts with a control character).
pub const EXCHANGE_DESTINATION_MARK: &str = "\u{1}exchange:";

/// Marks where neutral properties end and user headers begin in a stored property list.
const USER_HEADERS_MARK: &str = "\u{1}headers";

/// The stored name of a message's AMQP 0-9-1 header table ([`NativeHeaders`]), as hex text.
const NATIVE_AMQP091: &str = "native-amqp091-headers";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of `hex`'s output; `None` for anything else (a damaged record loses only types).
fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    digits.chunks(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

fn stored_message(queue: &str, msg_id: u64, content: &Content) -> StoredMessage {
    let p = &content.properties;
    let mut properties = Vec::with_capacity(p.headers.len() + 8);
    let optional = [
        ("content-type", &p.content_type),
        ("content-encoding", &p.content_encoding),
        ("correlation-id", &p.correlation_id),
        ("reply-to", &p.reply_to),
        ("message-id", &p.message_id),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            properties.push((name.to_owned(), v.clone()));
        }
    }
    if let Some(ms) = p.expiration_ms {
        properties.push(("expiration".to_owned(), ms.to_string()));
    }
    if let Some(NativeHeaders::Amqp091(table)) = &p.native_headers {
        properties.push((NATIVE_AMQP091.to_owned(), hex(table)));
    }
    properties.push((USER_HEADERS_MARK.to_owned(), String::new()));
    properties.extend(p.headers.iter().cloned());
    StoredMessage {
        queue: queue.to_owned(),
        msg_id,
        exchange: content.exchange.clone(),
        routing_key: content.routing_key.clone(),
        redelivered: false,
        priority: p.priority,
        expiry_ms: 0,
        properties,
        body: content.body.clone(),
    }
}

/// The content of a recovered message (always persistent: only those are journaled).
pub fn recovered_content(stored: &StoredMessage) -> Arc<Content> {
    let mut props = Properties { persistent: true, priority: stored.priority, ..Properties::default() };
    let mut user = false;
    for (name, value) in &stored.properties {
        if user {
            props.extra_mut().headers.push((name.clone(), value.clone()));
            continue;
        }
        match name.as_str() {
            USER_HEADERS_MARK => user = true,
            "content-type" => props.extra_mut().content_type = Some(value.clone()),
            "content-encoding" => props.extra_mut().content_encoding = Some(value.clone()),
            "correlation-id" => props.extra_mut().correlation_id = Some(value.clone()),
            "reply-to" => props.extra_mut().reply_to = Some(value.clone()),
            "message-id" => props.extra_mut().message_id = Some(value.clone()),
            "expiration" => props.expiration_ms = value.parse().ok(),
            NATIVE_AMQP091 => props.extra_mut().native_headers = unhex(value).map(|b| NativeHeaders::Amqp091(b.into())),
            _ => {}
        }
    }
    Arc::new(Content {
        exchange: stored.exchange.clone(),
        routing_key: stored.routing_key.clone(),
        properties: props,
        body: stored.body.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::message::Extra;

    #[test]
    fn properties_survive_the_journal() {
        let content = Content {
            exchange: "amq.topic".into(),
            routing_key: "a.b".into(),
            properties: Properties { persistent: true, priority: 3, expiration_ms: Some(500), ..Properties::default() }
                .with_extra(Extra {
                    content_type: Some("text/plain".into()),
                    reply_to: Some("/queue/r".into()),
                    headers: vec![
                        ("content-type".into(), "user-header-with-a-reserved-name".into()),
                        ("k".into(), "v".into()),
                    ],
                    native_headers: Some(NativeHeaders::Amqp091(bytes::Bytes::from_static(
                        b"\0\0\0\x05\x01kt\x01\xff",
                    ))),
                    ..Extra::default()
                }),
            body: bytes::Bytes::from_static(b"\0body"),
        };
        let back = recovered_content(&stored_message("q", 7, &content));
        assert_eq!(*back, content);
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn log_backend_releases_waiters_only_after_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, recovered) = Journal::open(
            LogConfig { segment_size_bytes: 64 * 1024, ..LogConfig::new(dir.path().join("s0")) },
            SyncPolicy::AckAfterSync,
            Rc::new(|| {}),
        )
        .expect("open");
        assert!(recovered.queues.is_empty());
        let conn = crate::ids::ConnectionId { shard: crate::ids::ShardId(0), local: 1 };
        let content = Content {
            exchange: String::new(),
            routing_key: "q".into(),
            properties: Properties { persistent: true, ..Properties::default() },
            body: bytes::Bytes::from_static(b"x"),
        };
        journal.append_enqueue("q", 1, &content);
        assert_eq!(journal.after_durable(Completion { conn, token: 9 }), None);
        assert!(journal.take_durable_waiters().is_empty(), "not durable before the sync");
        let work = journal.sync_work().expect("work pending");
        let synced = std::thread::spawn(move || work.run()).join().expect("thread");
        journal.complete_sync(synced).expect("sync ok");
        assert_eq!(journal.take_durable_waiters(), [Completion { conn, token: 9 }]);
        assert!(journal.is_synced());
        // Nothing new appended: no sync will come, so it completes now.
        let now = Completion { conn, token: 10 };
        assert_eq!(journal.after_durable(now), Some(now));
    }

    #[test]
    fn the_shards_own_waits_wait_for_the_sync_even_when_clients_do_not() {
        // Under ack-before-sync a client's confirm goes at once, but a transaction's phases
        // order records across logs: a commit logged before the shares it commits are synced
        // could survive a power loss without them.
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig { segment_size_bytes: 64 * 1024, ..LogConfig::new(dir.path().join("s0")) };
        let (mut journal, _) = Journal::open(config, SyncPolicy::AckBeforeSync, Rc::new(|| {})).expect("open");
        journal.append_tx_commit(1 << 16);
        let client =
            Completion { conn: crate::ids::ConnectionId { shard: crate::ids::ShardId(0), local: 1 }, token: 1 };
        let own = Completion { conn: crate::ids::ConnectionId::shard_itself(crate::ids::ShardId(0)), token: 2 };
        assert_eq!(journal.after_durable(client), Some(client));
        assert_eq!(journal.after_durable(own), None);
        let work = journal.sync_work().expect("work pending");
        let synced = work.run();
        journal.complete_sync(synced).expect("sync ok");
        assert_eq!(journal.take_durable_waiters(), [own]);
    }
}
