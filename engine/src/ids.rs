//! Newtypes for every id the engine passes around (STYLE §5): shards, connections, consumers,
//! completion tokens. No `Deref`, no tuples as domain types. Plain data, used on every shard.

use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// A number that differs between broker processes (pid and start time mixed), for ids a client
/// may carry from one connection to another: an ack id handed out by a broker that has since
/// been restarted or failed over must never name a delivery of its successor.
pub fn instance_tag() -> u32 {
    static TAG: OnceLock<u32> = OnceLock::new();
    *TAG.get_or_init(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
        // One round of a 64-bit finaliser (splitmix64) so that close start times differ in
        // every bit.
        let mut z = mixed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u32
    })
}

/// One shard: one pinned executor thread owning its queues and connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// A client connection on its shard. A connection that moves to another shard once (see
/// `runtime::spread`) is registered there under a new id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    pub shard: ShardId,
    pub local: u32,
}

impl ConnectionId {
    /// The shard itself, for work it waits on (connections are numbered from 1).
    pub fn shard_itself(shard: ShardId) -> ConnectionId {
        ConnectionId { shard, local: 0 }
    }

    /// Whether this is a shard itself rather than a client connection.
    pub fn is_shard_itself(&self) -> bool {
        self.local == 0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-conn-{}", self.shard.0, self.local)
    }
}

/// A consumer: a connection plus the connection-local consumer number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsumerKey {
    pub conn: ConnectionId,
    pub tag: u64,
}

/// Names the piece of work a connection waits on (a receipt, a confirm): when every queue a
/// publish reached has taken it (durably, for persistent messages), the owning shard reports
/// the token back to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Completion {
    pub conn: ConnectionId,
    pub token: u64,
}

/// A queue's per-delivery tag, unique within that queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryTag(pub u64);

/// A request awaiting a reply from another shard (or from this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);
