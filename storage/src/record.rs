//! The owned record types the engine appends and recovery replays: `Record`, `StoredMessage`
//! and `RecordKind` (the on-disk kind byte). Pure data, no I/O; used on the shard thread.
//! Metadata is archived with rkyv; an enqueue's body is skipped by rkyv and stored raw after
//! the metadata so it can later be read without copying.

use rkyv::{Archive, Deserialize, Serialize};

/// One message header view plus routing info, as stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Owning queue.
    pub queue: String,
    /// Unique per queue.
    pub msg_id: u64,
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Set on every message handed back by recovery.
    pub redelivered: bool,
    /// 0..=255, higher first.
    pub priority: u8,
    /// Absolute unix milliseconds; 0 = none.
    pub expiry_ms: u64,
    /// Neutral header view plus user headers.
    pub properties: Vec<(String, String)>,
    /// Payload; stored raw after the metadata, not archived.
    #[rkyv(with = rkyv::with::Skip)]
    pub body: bytes::Bytes,
}

/// What the engine appends and recovery replays (owned form).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message enters a queue.
    Enqueue(StoredMessage),
    /// A message leaves a queue for good (acked, expired, dead-lettered, purged).
    Settle {
        /// Queue holding the message.
        queue: String,
        /// The settled message.
        msg_id: u64,
    },
    /// A queue is declared (or re-declared with new properties).
    QueueDeclare {
        /// Queue name.
        name: String,
        /// Survives restart.
        durable: bool,
        /// Deleted when its last consumer goes.
        auto_delete: bool,
        /// `x-` arguments.
        arguments: Vec<(String, String)>,
    },
    /// A queue and all of its messages and bindings are gone.
    QueueDelete {
        /// Queue name.
        name: String,
    },
    /// An exchange is declared.
    ExchangeDeclare {
        /// Exchange name.
        name: String,
        /// `direct`, `topic`, `fanout`, `headers`.
        kind: String,
        /// Survives restart.
        durable: bool,
        /// Deleted when its last binding goes.
        auto_delete: bool,
        /// Not publishable by clients.
        internal: bool,
        /// `x-` arguments.
        arguments: Vec<(String, String)>,
    },
    /// An exchange and its bindings are gone.
    ExchangeDelete {
        /// Exchange name.
        name: String,
    },
    /// A binding from an exchange to a queue.
    Bind {
        /// Source exchange.
        exchange: String,
        /// Destination queue.
        queue: String,
        /// Binding key.
        routing_key: String,
        /// Binding arguments (headers exchange).
        arguments: Vec<(String, String)>,
    },
    /// A binding is removed.
    Unbind {
        /// Source exchange.
        exchange: String,
        /// Destination queue.
        queue: String,
        /// Binding key.
        routing_key: String,
    },
    /// The commit of a transaction that spans logs: every part marked [`TxOp::Spans`] with
    /// this id, in any shard's log, applies (see `Fold`). Id 0 is no transaction: a record
    /// that changes nothing, appended for the synced mark it carries (`ShardLog::append_mark`).
    TxCommit {
        /// Transaction id; 0 for none.
        tx_id: u64,
    },
    /// One transaction's enqueues and settles on this log, in the order they took effect.
    /// One record, so one checksum: recovery applies all of them or, if the record is torn,
    /// none. Build it with [`Record::tx_part`]; the enqueues' bodies are stored raw after the
    /// metadata, one after another.
    TxPart {
        /// The operations, in order.
        ops: Vec<TxOp>,
        /// Every enqueue's body, in op order (not archived; see [`Record::tx_part`]).
        #[rkyv(with = rkyv::with::Skip)]
        bodies: bytes::Bytes,
    },
}

/// One operation of a [`Record::TxPart`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum TxOp {
    /// As [`Record::Enqueue`]; the body lies in the part's `bodies`.
    Enqueue {
        /// The message (its `body` is not archived).
        message: StoredMessage,
        /// Length of its body within the part's `bodies`.
        body_len: u64,
    },
    /// As [`Record::Settle`].
    Settle {
        /// Queue holding the message.
        queue: String,
        /// The settled message.
        msg_id: u64,
    },
    /// First of the operations of a part of a transaction that spans logs: the part applies
    /// only once a `Record::TxCommit` with this id is found in one of the logs; until then
    /// recovery undoes it. Ids are never 0.
    Spans {
        /// The transaction.
        tx_id: u64,
    },
}

impl TxOp {
    /// An enqueue of `message` (with its body).
    pub fn enqueue(message: StoredMessage) -> TxOp {
        TxOp::Enqueue { body_len: message.body.len() as u64, message }
    }
}

/// The kind byte in a record header. Values are on-disk format: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// `Record::Enqueue`.
    Enqueue = 1,
    /// `Record::Settle`.
    Settle = 2,
    /// `Record::QueueDeclare`.
    QueueDeclare = 3,
    /// `Record::QueueDelete`.
    QueueDelete = 4,
    /// `Record::ExchangeDeclare`.
    ExchangeDeclare = 5,
    /// `Record::ExchangeDelete`.
    ExchangeDelete = 6,
    /// `Record::Bind`.
    Bind = 7,
    /// `Record::Unbind`.
    Unbind = 8,
    /// `Record::TxCommit`.
    TxCommit = 9,
    /// `Record::TxPart`.
    TxPart = 10,
}

impl RecordKind {
    /// Parses the on-disk byte; `None` for unknown kinds.
    pub fn from_u8(byte: u8) -> Option<RecordKind> {
        Some(match byte {
            1 => RecordKind::Enqueue,
            2 => RecordKind::Settle,
            3 => RecordKind::QueueDeclare,
            4 => RecordKind::QueueDelete,
            5 => RecordKind::ExchangeDeclare,
            6 => RecordKind::ExchangeDelete,
            7 => RecordKind::Bind,
            8 => RecordKind::Unbind,
            9 => RecordKind::TxCommit,
            10 => RecordKind::TxPart,
            _ => return None,
        })
    }
}

impl Record {
    /// The header kind byte for this record.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Enqueue(_) => RecordKind::Enqueue,
            Record::Settle { .. } => RecordKind::Settle,
            Record::QueueDeclare { .. } => RecordKind::QueueDeclare,
            Record::QueueDelete { .. } => RecordKind::QueueDelete,
            Record::ExchangeDeclare { .. } => RecordKind::ExchangeDeclare,
            Record::ExchangeDelete { .. } => RecordKind::ExchangeDelete,
            Record::Bind { .. } => RecordKind::Bind,
            Record::Unbind { .. } => RecordKind::Unbind,
            Record::TxCommit { .. } => RecordKind::TxCommit,
            Record::TxPart { .. } => RecordKind::TxPart,
        }
    }

    /// A transaction's part: `ops` with their bodies joined into the part's `bodies` (each
    /// enqueue's `body_len` set to its own, and its `body` then a slice of `bodies`, so the
    /// part holds each body once, as a decoded one does).
    pub fn tx_part(mut ops: Vec<TxOp>) -> Record {
        let total: usize =
            ops.iter().map(|op| if let TxOp::Enqueue { message, .. } = op { message.body.len() } else { 0 }).sum();
        let mut bodies = bytes::BytesMut::with_capacity(total);
        for op in &mut ops {
            if let TxOp::Enqueue { message, body_len } = op {
                bodies.extend_from_slice(&message.body);
                *body_len = message.body.len() as u64;
            }
        }
        let bodies = bodies.freeze();
        let split = split_bodies(&mut ops, &bodies);
        debug_assert!(split.is_ok(), "lengths taken from the bodies joined");
        Record::TxPart { ops, bodies }
    }

    /// The raw body stored after the metadata (empty for everything but `Enqueue`).
    pub fn body(&self) -> &[u8] {
        match self {
            Record::Enqueue(message) => &message.body,
            Record::TxPart { bodies, .. } => bodies,
            _ => &[],
        }
    }

    /// The queue this record belongs to, if it is a per-queue record (a transaction's part
    /// may touch several: see [`TxOp::queue`]).
    pub fn queue_name(&self) -> Option<&str> {
        match self {
            Record::Enqueue(message) => Some(&message.queue),
            Record::Settle { queue, .. } => Some(queue),
            Record::QueueDeclare { name, .. } | Record::QueueDelete { name } => Some(name),
            _ => None,
        }
    }
}

/// Hands each enqueue of a transaction's part its slice of `bodies` (no copy). Fails unless
/// the lengths the metadata gives add up to exactly `bodies`.
pub(crate) fn split_bodies(ops: &mut [TxOp], bodies: &bytes::Bytes) -> Result<(), String> {
    let mut at = 0usize;
    for op in ops {
        if let TxOp::Enqueue { message, body_len } = op {
            let end =
                usize::try_from(*body_len).ok().and_then(|len| at.checked_add(len)).filter(|end| *end <= bodies.len());
            let Some(end) = end else {
                return Err("a transaction's body lengths run past its bodies".to_owned());
            };
            message.body = bodies.slice(at..end);
            at = end;
        }
    }
    if at != bodies.len() {
        return Err("a transaction's bodies hold bytes no enqueue claims".to_owned());
    }
    Ok(())
}

impl ArchivedRecord {
    /// The queues an archived (possibly checksum-failed but structurally valid) record names,
    /// each once.
    pub(crate) fn queue_names(&self) -> Vec<String> {
        match self {
            ArchivedRecord::Enqueue(message) => vec![message.queue.as_str().to_owned()],
            ArchivedRecord::Settle { queue, .. } => vec![queue.as_str().to_owned()],
            ArchivedRecord::QueueDeclare { name, .. } | ArchivedRecord::QueueDelete { name } => {
                vec![name.as_str().to_owned()]
            }
            ArchivedRecord::TxPart { ops, .. } => {
                let mut seen = std::collections::HashSet::new();
                let queues = ops.iter().filter_map(|op| match op {
                    ArchivedTxOp::Enqueue { message, .. } => Some(message.queue.as_str()),
                    ArchivedTxOp::Settle { queue, .. } => Some(queue.as_str()),
                    ArchivedTxOp::Spans { .. } => None,
                });
                queues.filter(|queue| seen.insert(*queue)).map(str::to_owned).collect()
            }
            _ => Vec::new(),
        }
    }
}
