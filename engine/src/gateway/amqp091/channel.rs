//! One AMQP channel's state inside a connection: its consumers, the deliveries it still owes
//! acks for (channel delivery tags, increasing from 1, as the spec requires), prefetch,
//! publisher-confirm sequence numbers and outstanding confirms, and the transaction buffer.
//! Bounded by prefetch per consumer, the publisher's unconfirmed window and
//! `Limits::transaction_op_count_max`.

use bytes::Bytes;
use ferry_amqp091::{BasicProperties, BasicPublish};

use super::confirms::Confirms;
use crate::error::{EngineError, ErrorKind};
use crate::fastmap::HashMap;
use crate::ids::{ConsumerKey, DeliveryTag, ShardId};
use crate::model::tags::TagMap;

/// A delivery awaiting basic.ack/nack/reject.
#[derive(Debug, Clone)]
pub struct Unacked {
    pub owner: ShardId,
    pub queue: String,
    pub tag: DeliveryTag,
}

/// A basic.consume on this channel.
#[derive(Debug, Clone)]
pub struct ChannelConsumer {
    pub key: ConsumerKey,
    pub queue: String,
    pub owner: ShardId,
    /// Auto-ack deliveries handed to the session whose credit is not yet returned.
    pub credit_due: u32,
}

/// Work buffered by tx.select until tx.commit.
#[derive(Debug)]
pub enum TxOp {
    Publish { method: BasicPublish, properties: Box<BasicProperties>, body: Bytes },
    Settle { tag: u64, multiple: bool, requeue: Option<bool> },
}

/// See the module docs.
#[derive(Debug)]
pub struct Channel {
    pub prefetch: u16,
    pub confirm: bool,
    pub next_publish_seq: u64,
    /// Confirms owed in confirm mode, coalesced per flush.
    pub confirms: Confirms,
    pub tx: Option<Vec<TxOp>>,
    next_delivery_tag: u64,
    unacked: TagMap<Unacked>,
    pub consumers: HashMap<String, ChannelConsumer>,
    /// The key basic.get deliveries are held under, and the queues it took from.
    pub getter: ConsumerKey,
    pub got_from: Vec<(String, ShardId)>,
}

impl Channel {
    pub fn new(getter: ConsumerKey) -> Self {
        Channel {
            prefetch: 0,
            confirm: false,
            next_publish_seq: 1,
            confirms: Confirms::default(),
            tx: None,
            next_delivery_tag: 1,
            unacked: TagMap::new(),
            consumers: HashMap::default(),
            getter,
            got_from: Vec::new(),
        }
    }

    /// The next channel delivery tag; remembered unless the delivery is auto-acked.
    pub fn record(&mut self, pending: Option<Unacked>) -> u64 {
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        if let Some(p) = pending {
            self.unacked.insert(tag, p);
        }
        tag
    }

    /// The delivery an ack/nack/reject without `multiple` names; `None` when `tag` names
    /// nothing unacked.
    pub fn take_one(&mut self, tag: u64) -> Option<Unacked> {
        self.unacked.remove(tag)
    }

    /// The deliveries an ack/nack/reject with `multiple` names: every one up to `tag` (tag 0
    /// = all). `None` when `tag` names nothing unacked.
    pub fn take_upto(&mut self, tag: u64) -> Option<Vec<Unacked>> {
        let upto = if tag == 0 { u64::MAX } else { tag };
        if tag != 0 && !self.unacked.contains(tag) && self.unacked.first_tag().is_none_or(|first| first > upto) {
            return None;
        }
        Some(self.unacked.take_upto(upto).into_iter().map(|(_, u)| u).collect())
    }

    /// Buffers `op` when the channel is transactional (`Ok(None)`), else hands it back.
    /// At most `limit` operations wait for one tx.commit.
    pub fn buffer(&mut self, op: TxOp, limit: usize) -> Result<Option<TxOp>, EngineError> {
        match self.tx.as_mut() {
            None => Ok(Some(op)),
            Some(ops) if ops.len() >= limit => Err(EngineError::new(
                ErrorKind::PreconditionFailed,
                format!("transaction exceeds {limit} operations; commit or roll back"),
            )),
            Some(ops) => {
                ops.push(op);
                Ok(None)
            }
        }
    }

    /// Everything unacked (channel close, basic.recover).
    pub fn take_all(&mut self) -> Vec<Unacked> {
        self.unacked.take_all()
    }

    /// What the channel is when nothing is in progress on it (no consumer, nothing unacked,
    /// no get, no transaction, no confirm owed): its settings and counters, which a moving
    /// connection carries to its new shard. `None` otherwise.
    pub fn portable(&self) -> Option<PortableChannel> {
        let idle = self.consumers.is_empty()
            && self.unacked.is_empty()
            && self.got_from.is_empty()
            && self.tx.is_none()
            && self.confirms.is_idle();
        idle.then_some(PortableChannel {
            prefetch: self.prefetch,
            confirm: self.confirm,
            next_publish_seq: self.next_publish_seq,
            next_delivery_tag: self.next_delivery_tag,
        })
    }

    /// The channel `portable` described, on the connection's new shard.
    pub fn resume(getter: ConsumerKey, portable: &PortableChannel) -> Self {
        Channel {
            prefetch: portable.prefetch,
            confirm: portable.confirm,
            next_publish_seq: portable.next_publish_seq,
            next_delivery_tag: portable.next_delivery_tag,
            ..Channel::new(getter)
        }
    }
}

/// An idle channel's state: settings, and the counters the client sees continue (publish
/// sequence numbers for confirms, delivery tags).
#[derive(Debug, Clone)]
pub struct PortableChannel {
    prefetch: u16,
    confirm: bool,
    next_publish_seq: u64,
    next_delivery_tag: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConnectionId;

    fn channel() -> Channel {
        Channel::new(ConsumerKey { conn: ConnectionId { shard: ShardId(0), local: 1 }, tag: 0 })
    }

    fn pending(n: u64) -> Option<Unacked> {
        Some(Unacked { owner: ShardId(0), queue: "q".into(), tag: DeliveryTag(n) })
    }

    #[test]
    fn tags_count_from_one_and_multiple_takes_a_prefix() {
        let mut c = channel();
        let tags: Vec<u64> = (0..4).map(|n| c.record(pending(n))).collect();
        assert_eq!(tags, [1, 2, 3, 4]);
        assert_eq!(c.take_upto(2).expect("known").len(), 2);
        assert!(c.take_one(2).is_none(), "already acked");
        assert_eq!(c.take_upto(0).expect("all").len(), 2);
    }
}
