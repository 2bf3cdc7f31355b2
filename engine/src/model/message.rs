//! A message as the engine carries it: immutable content shared by every queue it was routed
//! to (`Arc`, so it may cross shards), plus the per-queue copy state (`QueuedMessage`).
//! The neutral header view is what every protocol maps to and from.

use std::sync::Arc;

use bytes::Bytes;

/// What a publisher sent. Shared, never mutated after publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub exchange: String,
    pub routing_key: String,
    pub properties: Properties,
    pub body: Bytes,
}

/// The neutral header view (ARCHITECTURE §3). `headers` are user headers in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub persistent: bool,
    pub priority: u8,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub message_id: Option<String>,
    pub expiration_ms: Option<u64>,
    pub headers: Vec<(String, String)>,
    /// The publisher's own encoding of `headers`, kept when their text view loses types.
    pub native_headers: Option<NativeHeaders>,
}

/// A header table as its publisher's protocol encoded it, carried beside the text view so a
/// consumer of the same protocol gets each header back with its type (an AMQP long-int stays
/// a long-int); consumers of other protocols read the text. Only kept when types would be
/// lost (a table of plain strings is not stored twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeHeaders {
    /// An AMQP 0-9-1 field table, encoded with its 4-byte size prefix.
    Amqp091(Bytes),
}

impl Content {
    /// Bytes this message counts against queue byte limits.
    pub fn size_bytes(&self) -> usize {
        self.body.len()
    }
}

/// A message inside one queue.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub msg_id: u64,
    pub content: Arc<Content>,
    pub redelivered: bool,
    /// When it expires (shard clock, ms): queue `x-message-ttl` or the message's expiration.
    pub expires_at_ms: Option<u64>,
}
