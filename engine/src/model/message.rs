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

/// The neutral header view (ARCHITECTURE §3). What most messages carry (persistence,
/// priority, expiration) is inline; the rest ([`Extra`]: the string properties and user
/// headers) sits behind one box that exists only when one of them is set. A deep queue of
/// small messages is mostly `Content`s: this keeps a bare message's at 112 bytes instead of
/// 280. Reads go through `Deref` (`props.content_type` reads `Extra`'s field, empty when there
/// is no box); writes through [`Properties::extra_mut`] or [`Properties::with_extra`], so a
/// box is only ever made on purpose.
#[derive(Clone, Default)]
pub struct Properties {
    pub persistent: bool,
    pub priority: u8,
    pub expiration_ms: Option<u64>,
    /// Public for `..Properties::default()` in literals; set it through
    /// [`Properties::with_extra`] or [`Properties::extra_mut`].
    pub extra: Option<Box<Extra>>,
}

/// The properties most messages do not carry. See [`Properties`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub message_id: Option<String>,
    /// User headers in arrival order.
    pub headers: Vec<(String, String)>,
    /// The publisher's own encoding of `headers`, kept when their text view loses types.
    pub native_headers: Option<NativeHeaders>,
}

/// Headers under this prefix are the broker's own records (MQTT release markers, waiting
/// wills, session arguments): a publisher's headers under it are dropped on the way in, so no
/// client can forge one.
pub const RESERVED_HEADER_PREFIX: &str = "x-ferry-";

/// True for a header name only the broker may set (see [`RESERVED_HEADER_PREFIX`]).
pub fn is_reserved_header(name: &str) -> bool {
    name.get(..RESERVED_HEADER_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_HEADER_PREFIX))
}

/// What a message without a box reads.
static NO_EXTRA: Extra = Extra {
    content_type: None,
    content_encoding: None,
    correlation_id: None,
    reply_to: None,
    message_id: None,
    headers: Vec::new(),
    native_headers: None,
};

impl Properties {
    /// These properties with `extra` (boxed only when it holds anything).
    pub fn with_extra(mut self, extra: Extra) -> Properties {
        self.extra = (extra != NO_EXTRA).then(|| Box::new(extra));
        self
    }

    /// The rarely set properties, for writing (makes the box).
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }
}

impl std::ops::Deref for Properties {
    type Target = Extra;
    fn deref(&self) -> &Extra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        self.persistent == other.persistent
            && self.priority == other.priority
            && self.expiration_ms == other.expiration_ms
            && **self == **other
    }
}

impl Eq for Properties {}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Properties")
            .field("persistent", &self.persistent)
            .field("priority", &self.priority)
            .field("expiration_ms", &self.expiration_ms)
            .field("extra", &**self)
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A deep queue of small messages is mostly `Content`s: keep a bare one in mimalloc's
    /// 128-byte class with the `Arc` counts (it was 280 bytes with every property inline).
    #[test]
    fn a_bare_content_stays_small() {
        assert!(std::mem::size_of::<Content>() + 16 <= 128, "{}", std::mem::size_of::<Content>());
    }

    #[test]
    fn extra_properties_box_only_when_set_and_compare_by_value() {
        let bare = Properties { persistent: true, ..Properties::default() };
        assert!(bare.extra.is_none() && bare.content_type.is_none() && bare.headers.is_empty());
        let empty = bare.clone().with_extra(Extra::default());
        assert!(empty.extra.is_none(), "an empty Extra is not boxed");
        let mut written = bare.clone();
        written.extra_mut().headers.clear();
        assert!(written.extra.is_some());
        assert_eq!(written, bare, "an empty box equals no box");
        let typed = bare.clone().with_extra(Extra { reply_to: Some("r".into()), ..Extra::default() });
        assert_eq!(typed.reply_to.as_deref(), Some("r"));
        assert_ne!(typed, bare);
    }
}
