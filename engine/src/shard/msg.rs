//! `ShardMsg`: the only type that crosses cores (ARCHITECTURE §2). Everything in it is owned
//! and `Send`; message bodies travel as `Arc<Content>` so fan-out shares one copy. Messages
//! travel in batches (`Vec<ShardMsg>`) over bounded channels, one per ordered shard pair, so
//! FIFO holds between any two shards.

use std::sync::Arc;

use crate::error::EngineError;
use crate::ids::{Completion, ConnectionId, ConsumerKey, DeliveryTag, RequestId, ShardId};
use crate::model::message::Content;
use crate::model::queue::{Consumer, Delivery};
use crate::model::routing::{MetaOp, MetaOutcome};
use crate::shard::mqtt::{MqttRelease, SavedSession, SysStats};
use crate::shard::wills::StoredWill;

/// A request that wants a reply (control operations; rare, so they may wait).
#[derive(Debug, Clone)]
pub enum Request {
    /// To the metadata authority (shard 0).
    Meta(MetaOp),
    /// To the queue's owner.
    Consume { queue: String, consumer: Consumer },
    /// To the queue's owner: remove the consumer, requeue what it held.
    Cancel { queue: String, consumer: ConsumerKey },
    /// To the queue's owner: drop ready messages.
    Purge { queue: String },
    /// To the queue's owner: message and consumer counts. `declared`: this answers a
    /// queue.declare, which counts as a use for `x-expires`.
    Stats { queue: String, declared: bool },
    /// To the queue's owner: take one ready message (AMQP basic.get). Unless `no_ack`, it stays
    /// unacked under `consumer` (which need not be attached) until settled or cancelled.
    Get { queue: String, consumer: ConsumerKey, no_ack: bool },
    /// To a client id's registry shard: `conn` is now that MQTT client (older one taken over).
    MqttClaim { client_id: String, conn: ConnectionId, clean: bool },
    /// To the retained store's owner: retained messages matching these topic patterns.
    MqttRetained { patterns: Vec<String> },
}

/// A successful reply.
#[derive(Debug, Clone)]
pub enum Reply {
    Meta(MetaOutcome),
    Consumed,
    Cancelled,
    Purged(usize),
    Stats {
        messages: usize,
        consumers: usize,
    },
    /// The message taken (if any) and how many stay ready.
    Got {
        delivery: Option<Delivery>,
        remaining: usize,
    },
    /// The session's saved packet-id state; `expired`: its session had expired.
    MqttClaimed {
        saved: SavedSession,
        expired: bool,
    },
    /// Retained messages, each with the ms it has left to live (if it expires).
    MqttRetained(Vec<(Arc<Content>, Option<u64>)>),
}

/// When a share of a transaction is logged.
#[derive(Debug, Clone, Copy)]
pub enum PartTurn {
    /// At once, as one record.
    Now,
    /// A share of transaction `tx_id`, which spans shards: applied at once, in order, and
    /// logged at once as one record marked with the id; `key` completes once it is durable.
    /// Its completions wait for `ShardMsg::TxRelease` with `key` (the commit is durable).
    Spanning { key: Completion, tx_id: u64 },
}

/// One cross-shard message.
#[derive(Debug)]
pub enum ShardMsg {
    /// Publish routed on the sender's shard, for a queue the receiver owns.
    Enqueue {
        /// `None`: the queue named by the message's routing key (a default-exchange publish,
        /// sent without a copy of the name).
        queue: Option<String>,
        content: Arc<Content>,
        completion: Option<Completion>,
        publisher: Option<ConnectionId>,
    },
    /// A transaction's enqueues and settles for queues the receiver owns: applied together,
    /// in order, and logged as one record (`Journal::begin_transaction`), when `turn` says.
    TxPart {
        part: Vec<ShardMsg>,
        turn: PartTurn,
    },
    /// The transaction of the share held under this key committed (`PartTurn::Spanning`):
    /// its completions complete; an owner other than the coordinator (`key.conn.shard`)
    /// records the commit in its own log and completes `key` once that is durable.
    TxRelease {
        key: Completion,
    },
    /// The receiver's connection waited on this.
    Completed {
        completion: Completion,
        result: Result<(), EngineError>,
    },
    /// A message for a consumer on a connection the receiver owns.
    Deliver(Delivery),
    /// Ack (`requeue: None`), requeue or drop deliveries of a queue the receiver owns.
    Settle {
        queue: String,
        tags: Vec<DeliveryTag>,
        requeue: Option<bool>,
        completion: Option<Completion>,
    },
    /// Auto-ack deliveries written out: credit back to the consumer.
    Credit {
        queue: String,
        consumer: ConsumerKey,
        count: u32,
    },
    Request {
        from: ShardId,
        id: RequestId,
        request: Request,
    },
    Reply {
        id: RequestId,
        result: Result<Reply, EngineError>,
    },
    /// From the authority: apply this validated op, then answer `MetaApplied { ack }`.
    MetaApply {
        op: MetaOp,
        ack: u64,
    },
    MetaApplied {
        ack: u64,
    },
    /// Flow control: the receiver's connection `conn` must stop reading publishes until the
    /// owner of `queue` sends `FlowRelease` (on the same FIFO channel, so never before this).
    FlowHold {
        conn: ConnectionId,
        queue: String,
    },
    /// Flow control: `queue`'s backlog drained (or its consumers stopped); `conn` may go on.
    FlowRelease {
        conn: ConnectionId,
        queue: String,
    },
    /// A publish from the receiver's connection was refused (queue at its hard limit).
    PublishRejected {
        conn: ConnectionId,
        queue: String,
    },
    /// The queue behind a consumer went away (deleted): the server cancels it.
    ConsumerCancelled {
        consumer: ConsumerKey,
        queue: String,
    },
    /// Another connection claimed this MQTT connection's client id: it must close.
    MqttTakeover {
        conn: ConnectionId,
    },
    /// An MQTT connection closed: what its client id's registry shard keeps.
    MqttRelease(Box<MqttRelease>),
    /// A recovered durable MQTT session with an expiry, for its client id's registry shard.
    MqttRestore {
        client_id: String,
        expiry_ms: u64,
        queue: String,
    },
    /// To the owner of `amq.mqtt.wills`: record a will waiting for its delay (replacing the
    /// client's older one).
    MqttWillStore(Box<StoredWill>),
    /// To the owner of `amq.mqtt.wills`: the client's waiting will was published or cancelled.
    MqttWillDrop {
        client_id: String,
    },
    /// A recovered waiting will, for its client id's registry shard.
    MqttWillRestore(Box<StoredWill>),
    /// A shard's `$SYS` figures, for the authority's broker-wide totals.
    SysStats(SysStats),
    /// Store (or clear, with an empty body) a retained message on the store's owner.
    Retain {
        content: Arc<Content>,
        completion: Option<Completion>,
    },
}
