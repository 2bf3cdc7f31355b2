//! A queue's live state on its owning shard: ready messages, consumers with credit, and
//! deliveries awaiting settlement. Never touched by any other shard; every operation is a
//! plain method. Bounded by `Limits::queue_message_count_max` (ready + unacked) and each
//! consumer's credit (prefetch).

use std::sync::Arc;

use crate::ids::{ConnectionId, ConsumerKey, DeliveryTag};
use crate::model::flow::{Flow, Published};
use crate::model::message::{Content, QueuedMessage};
use crate::model::queue_args::{Overflow, QueueArgs};
use crate::model::ready::Ready;
use crate::model::routing::QueueSpec;
use crate::model::tags::TagMap;

/// A consumer attached to this queue.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub key: ConsumerKey,
    /// Most deliveries outstanding at once (unacked, or for auto-ack not yet written out).
    pub credit_max: u32,
    pub outstanding: u32,
    /// Auto-ack: settled when sent; credit comes back when the connection has written it.
    pub no_ack: bool,
    /// AMQP `x-priority`: consumers of higher priority get messages while they have credit.
    pub priority: i32,
    /// AMQP basic.consume `exclusive`: the only consumer of its queue while it lasts.
    pub exclusive: bool,
}

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub consumer: ConsumerKey,
    pub queue: String,
    pub tag: DeliveryTag,
    pub message: QueuedMessage,
    /// Handed to an auto-ack consumer: the message left the queue on dispatch.
    pub settled: bool,
}

#[derive(Debug)]
struct Unacked {
    message: QueuedMessage,
    consumer: ConsumerKey,
}

/// What settling a delivery did, so the shard can log persistent settlements.
#[derive(Debug, Clone)]
pub enum Settled {
    /// Acked: the message is gone. Carries its id and persistence.
    Removed {
        msg_id: u64,
        persistent: bool,
    },
    /// Rejected without requeue (nack/reject requeue=false): gone, to be dead-lettered.
    Dropped(QueuedMessage),
    Requeued,
    Unknown,
}

/// The result of [`Queue::admit`].
#[derive(Debug)]
pub enum Admit {
    /// Queued; `dropped` made room for it (drop-head), oldest first.
    Accepted { msg_id: u64, dropped: Vec<QueuedMessage> },
    /// At its limit with `x-overflow: reject-publish`.
    Rejected,
}

/// A queue's contents and consumers.
#[derive(Debug)]
pub struct Queue {
    pub spec: QueueSpec,
    pub args: QueueArgs,
    ready: Ready,
    unacked: TagMap<Unacked>,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    next_tag: u64,
    next_msg_id: u64,
    had_consumer: bool,
    /// Shard time of the last use that counts for `x-expires` (consume, get, redeclare, the
    /// last consumer leaving).
    last_used_ms: u64,
    /// Deletion for `x-expires` was asked for (not asked again while it is in flight).
    expiry_requested: bool,
    /// Publisher flow control (see [`Flow`]).
    pub flow: Flow,
}

impl Queue {
    pub fn new(spec: QueueSpec) -> Self {
        // Validated by the metadata authority at declaration.
        let args = QueueArgs::parse(&spec.arguments).unwrap_or_default();
        let ready = Ready::new(args.max_priority);
        Queue {
            args,
            spec,
            ready,
            unacked: TagMap::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            next_tag: 1,
            next_msg_id: 1,
            had_consumer: false,
            last_used_ms: 0,
            expiry_requested: false,
            flow: Flow::default(),
        }
    }

    /// Records a use that restarts the `x-expires` clock.
    pub fn touch(&mut self, now_ms: u64) {
        self.last_used_ms = now_ms;
    }

    /// True once, when the queue has been unused for its `x-expires` (RabbitMQ: no consumers,
    /// and no basic.get or redeclaration for that long); the caller deletes it.
    pub fn take_idle_expiry(&mut self, now_ms: u64) -> bool {
        let due = self.args.expires_ms.is_some_and(|ms| now_ms.saturating_sub(self.last_used_ms) >= ms);
        if due && self.consumers.is_empty() && !self.expiry_requested {
            self.expiry_requested = true;
            return true;
        }
        false
    }

    /// Whether the queue can expire for being unused (`x-expires`).
    pub fn expires_when_unused(&self) -> bool {
        self.args.expires_ms.is_some() && !self.expiry_requested
    }

    /// Messages held: ready plus unacknowledged.
    pub fn len(&self) -> usize {
        self.ready.len() + self.unacked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// True once an auto-delete queue has had a consumer and lost its last one.
    pub fn should_auto_delete(&self) -> bool {
        self.spec.auto_delete && self.had_consumer && self.consumers.is_empty()
    }

    /// Adds a message at the tail; returns its queue-local id. Capacity is the caller's check.
    /// Adds a message under the queue's arguments at shard time `now_ms`: stamps its expiry
    /// and applies `x-max-length`/`-bytes` per `x-overflow`.
    /// `now_ms` is read only when the message gets an expiry (a clock read per message
    /// showed in profiles).
    pub fn admit(&mut self, content: Arc<Content>, now_ms: &dyn Fn() -> u64) -> Admit {
        let max_len = self.args.max_length;
        let max_bytes = self.args.max_length_bytes;
        let over = |q: &Queue, extra: usize| {
            max_len.is_some_and(|m| q.ready.len() + 1 > m) || max_bytes.is_some_and(|m| q.ready.bytes() + extra > m)
        };
        let size = content.size_bytes();
        let mut dropped = Vec::new();
        if over(self, size) {
            if self.args.overflow == Overflow::RejectPublish {
                return Admit::Rejected;
            }
            while over(self, size) {
                let Some(head) = self.ready.pop_oldest_lowest() else { break };
                dropped.push(head);
            }
        }
        let ttl = [self.args.message_ttl_ms, content.properties.expiration_ms].into_iter().flatten().min();
        let msg_id = self.next_msg_id;
        self.next_msg_id += 1;
        let expires_at_ms = ttl.map(|t| now_ms().saturating_add(t));
        self.ready.push_back(QueuedMessage { msg_id, content, redelivered: false, expires_at_ms });
        Admit::Accepted { msg_id, dropped }
    }

    /// Removes ready messages at the head whose expiry has passed (RabbitMQ expires at the
    /// head; the shard's sweep calls this a few times a second).
    pub fn has_expiring(&self) -> bool {
        self.ready.has_expiring()
    }

    pub fn take_expired(&mut self, now_ms: u64) -> Vec<QueuedMessage> {
        self.ready.take_expired(now_ms)
    }

    /// Puts back a recovered message (keeps its id; marks it redelivered).
    pub fn restore(&mut self, mut message: QueuedMessage) {
        message.redelivered = true;
        self.next_msg_id = self.next_msg_id.max(message.msg_id + 1);
        self.ready.push_back(message);
    }

    /// Whether `consumer` may attach: an exclusive consumer wants the queue to itself, and
    /// nobody joins a queue that has one (RabbitMQ answers both with 403).
    pub fn admits(&self, consumer: &Consumer) -> bool {
        let taken = self.consumers.iter().any(|c| c.exclusive);
        !taken && (!consumer.exclusive || self.consumers.is_empty())
    }

    pub fn add_consumer(&mut self, consumer: Consumer) {
        self.had_consumer = true;
        self.consumers.push(consumer);
    }

    /// Removes a consumer and requeues everything it had not settled, marked redelivered,
    /// ahead of the ready messages in their original order. Returns whether it existed.
    pub fn remove_consumer(&mut self, key: ConsumerKey) -> bool {
        let before = self.consumers.len();
        self.consumers.retain(|c| c.key != key);
        let existed = before != self.consumers.len();
        let back = self.unacked.take_where(|u| u.consumer == key).into_iter().map(|(_, u)| u.message).collect();
        self.requeue(back);
        existed
    }

    fn requeue(&mut self, mut back: Vec<QueuedMessage>) {
        back.sort_unstable_by_key(|m| std::cmp::Reverse(m.msg_id));
        for mut message in back {
            message.redelivered = true;
            self.ready.push_front(message);
        }
    }

    /// Hands ready messages to consumers with credit, round-robin, appending to `out`.
    pub fn dispatch(&mut self, out: &mut Vec<Delivery>) {
        while !self.ready.is_empty() {
            let Some(index) = self.next_with_credit() else {
                return;
            };
            let Some(message) = self.ready.pop_front() else {
                return;
            };
            let consumer = &mut self.consumers[index];
            consumer.outstanding += 1;
            let key = consumer.key;
            let tag = DeliveryTag(self.next_tag);
            self.next_tag += 1;
            if !consumer.no_ack {
                self.unacked.insert(tag.0, Unacked { message: message.clone(), consumer: key });
            }
            let settled = consumer.no_ack;
            out.push(Delivery { consumer: key, queue: self.spec.name.clone(), tag, message, settled });
            self.flow.delivered(1);
        }
    }

    /// Flow control after a publish from `publisher` was queued (`high`: the backlog mark).
    pub fn flow_on_publish(&mut self, publisher: ConnectionId, high: usize) -> Published {
        let consumers = &self.consumers;
        self.flow.on_publish(publisher, self.ready.len(), high, !consumers.is_empty(), |conn| {
            consumers.iter().any(|c| c.key.conn == conn)
        })
    }

    /// Flow control after dispatch: the publishers to release, if the backlog drained.
    pub fn flow_on_drain(&mut self, high: usize) -> Option<Vec<ConnectionId>> {
        if !self.flow.is_congested() {
            return None;
        }
        self.flow.on_drain(self.ready.len(), high)
    }

    /// The periodic flow-control look (see [`Flow::on_tick`]).
    pub fn flow_on_tick(&mut self, high: usize) -> crate::model::flow::Look {
        self.flow.on_tick(self.ready.len(), high, !self.consumers.is_empty())
    }

    /// The consumer to deliver to next: round-robin among those with credit at the highest
    /// priority that has any; with `x-single-active-consumer`, only the first attached.
    fn next_with_credit(&mut self) -> Option<usize> {
        let n = if self.args.single_active_consumer { self.consumers.len().min(1) } else { self.consumers.len() };
        let has_credit = |c: &Consumer| c.outstanding < c.credit_max;
        let top = self.consumers[..n].iter().filter(|c| has_credit(c)).map(|c| c.priority).max()?;
        for step in 0..n {
            let index = (self.next_consumer + step) % n;
            let c = &self.consumers[index];
            if has_credit(c) && c.priority == top {
                self.next_consumer = (index + 1) % n;
                return Some(index);
            }
        }
        None
    }

    /// Takes the next ready message for a pull (AMQP basic.get). Unless `no_ack`, it stays
    /// unacked under `key` until settled, or requeued when `key` is removed.
    pub fn get(&mut self, key: ConsumerKey, no_ack: bool) -> Option<Delivery> {
        let message = self.ready.pop_front()?;
        let tag = DeliveryTag(self.next_tag);
        self.next_tag += 1;
        if !no_ack {
            self.unacked.insert(tag.0, Unacked { message: message.clone(), consumer: key });
        }
        Some(Delivery { consumer: key, queue: self.spec.name.clone(), tag, message, settled: no_ack })
    }

    /// Acks (`requeue == None`), requeues (`Some(true)`) or drops (`Some(false)`) one delivery.
    pub fn settle(&mut self, tag: DeliveryTag, requeue: Option<bool>) -> Settled {
        let Some(unacked) = self.unacked.remove(tag.0) else {
            return Settled::Unknown;
        };
        self.release_credit(unacked.consumer, 1);
        match requeue {
            Some(true) => {
                self.requeue(vec![unacked.message]);
                Settled::Requeued
            }
            Some(false) => Settled::Dropped(unacked.message),
            None => Settled::Removed {
                msg_id: unacked.message.msg_id,
                persistent: unacked.message.content.properties.persistent,
            },
        }
    }

    /// Returns `n` credits to an auto-ack consumer once its connection wrote the deliveries.
    pub fn release_credit(&mut self, key: ConsumerKey, n: u32) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.key == key) {
            c.outstanding = c.outstanding.saturating_sub(n);
        }
    }

    /// Takes all ready messages out and returns them (unacked ones stay, as in AMQP purge).
    pub fn purge(&mut self) -> Vec<QueuedMessage> {
        self.ready.take_all()
    }

    /// Every message the queue holds, ready (highest priority first, oldest first) then unacked.
    pub fn held(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.ready.iter().chain(self.unacked.values().map(|u| &u.message))
    }

    /// The ready messages, highest priority first, oldest first.
    pub fn ready_messages(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.ready.iter()
    }

    /// Takes a ready message out by id (MQTT's retained store replaces messages by topic).
    pub fn take_ready(&mut self, msg_id: u64) -> Option<QueuedMessage> {
        self.ready.remove(msg_id)
    }

    /// Consumers currently attached (for cancellation when the queue is deleted).
    pub fn consumer_keys(&self) -> Vec<ConsumerKey> {
        self.consumers.iter().map(|c| c.key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ConnectionId, ShardId};
    use crate::model::message::Properties;

    fn queue() -> Queue {
        Queue::new(QueueSpec {
            name: "q".into(),
            durable: false,
            auto_delete: true,
            exclusive: None,
            arguments: vec![],
            shard: ShardId(0),
        })
    }

    fn content(body: &'static str) -> Arc<Content> {
        Arc::new(Content {
            exchange: String::new(),
            routing_key: "q".into(),
            properties: Properties::default(),
            body: bytes::Bytes::from_static(body.as_bytes()),
        })
    }

    fn consumer(local: u32, credit: u32) -> Consumer {
        let key = ConsumerKey { conn: ConnectionId { shard: ShardId(0), local }, tag: 1 };
        Consumer { key, credit_max: credit, outstanding: 0, no_ack: false, priority: 0, exclusive: false }
    }

    fn bodies(out: &[Delivery]) -> Vec<&[u8]> {
        out.iter().map(|d| d.message.content.body.as_ref()).collect()
    }

    #[test]
    fn round_robin_with_credit() {
        let mut q = queue();
        for b in ["a", "b", "c", "d", "e"] {
            q.admit(content(b), &|| 0);
        }
        q.add_consumer(consumer(1, 2));
        q.add_consumer(consumer(2, 1));
        let mut out = Vec::new();
        q.dispatch(&mut out);
        assert_eq!(bodies(&out), [b"a".as_ref(), b"b", b"c"]);
        assert_eq!(q.ready_len(), 2);
        let first = out[0].tag;
        assert!(matches!(q.settle(first, None), Settled::Removed { .. }));
        out.clear();
        q.dispatch(&mut out);
        assert_eq!(bodies(&out), [b"d".as_ref()]);
    }

    #[test]
    fn cancel_requeues_in_order_marked_redelivered() {
        let mut q = queue();
        for b in ["a", "b", "c"] {
            q.admit(content(b), &|| 0);
        }
        let c = consumer(1, 10);
        q.add_consumer(c.clone());
        let mut out = Vec::new();
        q.dispatch(&mut out);
        assert_eq!(out.len(), 3);
        q.settle(out[1].tag, None);
        assert!(q.remove_consumer(c.key));
        assert!(q.should_auto_delete());
        q.add_consumer(consumer(2, 10));
        out.clear();
        q.dispatch(&mut out);
        assert_eq!(bodies(&out), [b"a".as_ref(), b"c"]);
        assert!(out.iter().all(|d| d.message.redelivered));
    }

    #[test]
    fn nack_requeue_goes_to_front_and_drop_removes() {
        let mut q = queue();
        q.admit(content("a"), &|| 0);
        q.admit(content("b"), &|| 0);
        q.add_consumer(consumer(1, 1));
        let mut out = Vec::new();
        q.dispatch(&mut out);
        assert!(matches!(q.settle(out[0].tag, Some(true)), Settled::Requeued));
        out.clear();
        q.dispatch(&mut out);
        assert_eq!(bodies(&out), [b"a".as_ref()]);
        assert!(out[0].message.redelivered);
        assert!(matches!(q.settle(out[0].tag, Some(false)), Settled::Dropped(_)));
        assert!(matches!(q.settle(out[0].tag, None), Settled::Unknown));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn x_expires_counts_from_the_last_use_and_waits_for_consumers_to_leave() {
        let mut spec = queue().spec;
        spec.arguments = vec![("x-expires".into(), "100".into())];
        let mut q = Queue::new(spec);
        q.touch(1_000);
        assert!(!q.take_idle_expiry(1_099));
        q.add_consumer(consumer(1, 1));
        assert!(!q.take_idle_expiry(5_000), "a consumer keeps it in use");
        q.remove_consumer(consumer(1, 1).key);
        q.touch(5_000);
        assert!(!q.take_idle_expiry(5_050));
        assert!(q.take_idle_expiry(5_100));
        assert!(!q.take_idle_expiry(9_000), "asked for once");
    }
}
