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
    /// Transaction marker; for now it only round-trips.
    TxCommit {
        /// Transaction id.
        tx_id: u64,
    },
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
        }
    }

    /// The raw body stored after the metadata (empty for everything but `Enqueue`).
    pub fn body(&self) -> &[u8] {
        match self {
            Record::Enqueue(message) => &message.body,
            _ => &[],
        }
    }

    /// The queue this record belongs to, if it is a per-queue record.
    pub fn queue_name(&self) -> Option<&str> {
        match self {
            Record::Enqueue(message) => Some(&message.queue),
            Record::Settle { queue, .. } => Some(queue),
            Record::QueueDeclare { name, .. } | Record::QueueDelete { name } => Some(name),
            _ => None,
        }
    }
}

impl ArchivedRecord {
    /// The queue an archived (possibly checksum-failed but structurally valid) record names.
    pub(crate) fn queue_name(&self) -> Option<String> {
        match self {
            ArchivedRecord::Enqueue(message) => Some(message.queue.as_str().to_owned()),
            ArchivedRecord::Settle { queue, .. } => Some(queue.as_str().to_owned()),
            ArchivedRecord::QueueDeclare { name, .. } | ArchivedRecord::QueueDelete { name } => {
                Some(name.as_str().to_owned())
            }
            _ => None,
        }
    }
}
