//! The message path through a shard: publish (route on the publisher's shard), enqueue on the
//! owner, dispatch to consumers, delivery to the consumer's connection, settlement and credit
//! back to the owner. Each step is local when the other party is on this shard and one
//! `ShardMsg` otherwise; the receiving side asserts it owns what it was sent.

use std::sync::Arc;

use crate::error::{EngineError, ErrorKind};
use crate::ids::{Completion, ConnectionId, ConsumerKey, DeliveryTag, ShardId};

/// A queue refuses publishes at this multiple of `queue_message_count_max`; between the two,
/// publishers are held back by flow control.
const QUEUE_HARD_LIMIT_FACTOR: usize = 2;
use crate::model::message::Content;
use crate::model::queue::{Admit, Consumer, Delivery, Settled};
use crate::shard::Shard;
use crate::shard::dead_letter::DeathReason;
use crate::shard::msg::{Reply, ShardMsg};

impl Shard {
    /// Routes a publish and hands it to each target queue's owner. Returns how many queues it
    /// reached; each reports `completion` (if any) once it holds the message (durably, when
    /// persistent and the queue is durable).
    pub fn publish(
        &mut self,
        exchange: &str,
        key: &str,
        content: Arc<Content>,
        publisher: Option<ConnectionId>,
        completion: impl Fn() -> Option<Completion>,
    ) -> Result<usize, EngineError> {
        if !exchange.is_empty() && self.routing.exchange(exchange).is_none() {
            return Err(EngineError::new(ErrorKind::NotFound, format!("no exchange '{exchange}' in vhost '/'")));
        }
        if exchange.is_empty() {
            // The default exchange routes to the queue named by the key: no target list, and
            // a local queue needs no copy of its name.
            let Some(owner) = self.routing.queue(key).map(|q| q.shard) else { return Ok(0) };
            if owner == self.id && self.transaction.is_none() {
                self.enqueue_local(key, content, completion(), publisher);
            } else {
                // The owner finds the queue by the routing key, if the message carries it.
                let queue = (content.routing_key != key).then(|| key.to_owned());
                self.hand_over(owner, ShardMsg::Enqueue { queue, content, completion: completion(), publisher });
            }
            return Ok(1);
        }
        let mut targets = Vec::new();
        self.routing.route(exchange, key, &content.properties.headers, &mut targets);
        let targets: Vec<(String, ShardId)> = targets.into_iter().map(|q| (q.name.clone(), q.shard)).collect();
        let count = targets.len();
        for (queue, owner) in targets {
            let content = content.clone();
            if owner == self.id && self.transaction.is_none() {
                self.enqueue_local(&queue, content, completion(), publisher);
            } else {
                let msg = ShardMsg::Enqueue { queue: Some(queue), content, completion: completion(), publisher };
                self.hand_over(owner, msg);
            }
        }
        Ok(count)
    }

    /// Sends `msg` to `owner`, or gathers it into the transaction being committed.
    fn hand_over(&mut self, owner: ShardId, msg: ShardMsg) {
        if let Some(msg) = self.gather(owner, msg) {
            self.send(owner, msg);
        }
    }

    /// Enqueues on the owner. Past the soft limit (`queue_message_count_max`) publishers are
    /// held back by the runtime's resource alarm; a message that still arrives past twice the
    /// limit is refused — reported to its completion or, without one, to its publisher's
    /// connection — never dropped silently. Returns the message's id in the queue, if admitted.
    pub(super) fn enqueue_local(
        &mut self,
        name: &str,
        content: Arc<Content>,
        completion: Option<Completion>,
        publisher: Option<ConnectionId>,
    ) -> Option<u64> {
        let limit = self.limits.queue_message_count_max.saturating_mul(QUEUE_HARD_LIMIT_FACTOR);
        let Some(queue) = self.queues.get_mut(name) else {
            // Deleted while the publish was in flight: dropped, as if unroutable.
            if let Some(c) = completion {
                self.complete(c, Ok(()));
            }
            return None;
        };
        assert_eq!(queue.spec.shard, self.id, "enqueue reached the queue's owner");
        if queue.len() >= limit {
            tracing::warn!(queue = name, limit, "queue at its hard limit: refusing a publish");
            match (completion, publisher) {
                (Some(c), _) => {
                    let msg = format!("queue '{name}' is full ({limit} messages)");
                    self.complete(c, Err(EngineError::new(ErrorKind::ResourceError, msg)));
                }
                (None, Some(conn)) if conn.shard == self.id => {
                    self.with_conn(conn, |m| m.rejected.push(name.to_owned()));
                }
                (None, Some(conn)) => self.send(conn.shard, ShardMsg::PublishRejected { conn, queue: name.to_owned() }),
                (None, None) => {}
            }
            return None;
        }
        let durable = queue.spec.durable && content.properties.persistent;
        let flow_high = self.limits.queue_flow_message_count;
        let msg_id = match queue.admit(content.clone(), &*self.clock) {
            Admit::Accepted { msg_id, dropped } => {
                let published = match publisher {
                    Some(p) if flow_high > 0 => Some((queue.flow_on_publish(p, flow_high), p)),
                    _ => None,
                };
                if let Some((published, publisher)) = published {
                    self.flow_after_publish(name, published, publisher);
                }
                if !dropped.is_empty() {
                    self.dead_letter(name, dropped, DeathReason::MaxLen, None);
                }
                msg_id
            }
            Admit::Rejected => {
                // x-overflow: reject-publish — a confirm becomes a nack; without one, dropped
                // as RabbitMQ does for this policy.
                if let Some(c) = completion {
                    let msg = format!("queue '{name}' is at its x-max-length (reject-publish)");
                    self.complete(c, Err(EngineError::new(ErrorKind::ResourceError, msg)));
                }
                return None;
            }
        };
        match (durable, completion) {
            (true, completion) => {
                self.journal.append_enqueue(name, msg_id, &content);
                if let Some(c) = completion.and_then(|c| self.journal.after_durable(c)) {
                    self.complete(c, Ok(()));
                }
            }
            (false, Some(c)) => self.complete(c, Ok(())),
            (false, None) => {}
        }
        self.dispatch(name);
        Some(msg_id)
    }

    /// Hands ready messages of queue `name` to its consumers; expired ones are taken out
    /// first and dead-lettered. Runs after every publish and settle: one lookup of the
    /// queue, and the deliveries go through a vector the shard keeps.
    pub(super) fn dispatch(&mut self, name: &str) {
        let mut out = std::mem::take(&mut self.dispatch_scratch);
        let (mut durable, mut drained, mut expired) = (false, None, Vec::new());
        let clock = &self.clock;
        if let Some(queue) = self.queues.get_mut(name) {
            if queue.has_expiring() {
                expired = queue.take_expired(clock());
            }
            queue.dispatch(&mut out);
            durable = queue.spec.durable;
            drained = queue.flow_on_drain(self.limits.queue_flow_message_count);
        }
        if !expired.is_empty() {
            self.dead_letter(name, expired, DeathReason::Expired, None);
        }
        if let Some(conns) = drained {
            self.flow_release(name, conns);
        }
        for delivery in out.drain(..) {
            // Auto-ack: the message is gone from the queue, so it must not come back on recovery.
            if delivery.settled && durable && delivery.message.content.properties.persistent {
                self.journal.append_settle(name, delivery.message.msg_id);
            }
            let conn = delivery.consumer.conn;
            if conn.shard == self.id {
                self.deliver_local(delivery);
            } else {
                self.send(conn.shard, ShardMsg::Deliver(delivery));
            }
        }
        // A dispatch nested in this one (dead-lettering back into a queue) may have put its
        // own vector back meanwhile; either will do.
        self.dispatch_scratch = out;
    }

    pub(super) fn deliver_local(&mut self, delivery: Delivery) {
        let conn = delivery.consumer.conn;
        assert_eq!(conn.shard, self.id, "delivery reached the consumer's shard");
        let mut slot = Some(delivery);
        let delivered = self.with_conn(conn, |m| m.deliveries.extend(slot.take()));
        if !delivered && let Some(delivery) = slot {
            self.return_delivery(delivery);
        }
    }

    /// A delivery whose connection is gone: requeue it at its owner.
    pub fn return_delivery(&mut self, delivery: Delivery) {
        let owner = self.routing.queue(&delivery.queue).map(|q| q.shard);
        if let Some(owner) = owner {
            self.settle_one(owner, &delivery.queue, delivery.tag, Some(true), None);
        }
    }

    /// Acks (`None`), requeues (`Some(true)`) or drops (`Some(false)`) deliveries of `queue`.
    /// `completion` (if any) is reported once the settlement is durable. Settled in place
    /// when this shard owns the queue; else joined to a settle of the same queue already
    /// waiting in the outbox when there is one to join, so a run of acks crosses as one
    /// message.
    pub fn settle(
        &mut self,
        owner: ShardId,
        queue: &str,
        tags: Vec<DeliveryTag>,
        requeue: Option<bool>,
        completion: Option<Completion>,
    ) {
        if self.transaction.is_some() {
            self.hand_over(owner, ShardMsg::Settle { queue: queue.to_owned(), tags, requeue, completion });
            return;
        }
        if owner == self.id {
            self.settle_local(queue, &tags, requeue, completion);
            return;
        }
        match self.waiting_settle(owner, queue, requeue, completion.is_none()) {
            Some(waiting) => waiting.extend(tags),
            None => self.send(owner, ShardMsg::Settle { queue: queue.to_owned(), tags, requeue, completion }),
        }
    }

    /// [`Shard::settle`] of one delivery (the per-ack case), without a `Vec` unless one
    /// must cross.
    pub fn settle_one(
        &mut self,
        owner: ShardId,
        queue: &str,
        tag: DeliveryTag,
        requeue: Option<bool>,
        completion: Option<Completion>,
    ) {
        if self.transaction.is_some() {
            self.settle(owner, queue, vec![tag], requeue, completion);
            return;
        }
        if owner == self.id {
            self.settle_local(queue, &[tag], requeue, completion);
            return;
        }
        match self.waiting_settle(owner, queue, requeue, completion.is_none()) {
            Some(waiting) => waiting.push(tag),
            None => {
                self.send(owner, ShardMsg::Settle { queue: queue.to_owned(), tags: vec![tag], requeue, completion })
            }
        }
    }

    /// The tags of the last message waiting for `owner`, when it is a settle of `queue` with
    /// the same `requeue` and no completion, and the new one has none either (`joinable`).
    fn waiting_settle(
        &mut self,
        owner: ShardId,
        queue: &str,
        requeue: Option<bool>,
        joinable: bool,
    ) -> Option<&mut Vec<DeliveryTag>> {
        match self.outbox[owner.index()].last_mut() {
            Some(ShardMsg::Settle { queue: waiting, tags, requeue: r, completion: None })
                if joinable && *r == requeue && waiting == queue =>
            {
                Some(tags)
            }
            _ => None,
        }
    }

    pub(super) fn settle_local(
        &mut self,
        name: &str,
        tags: &[DeliveryTag],
        requeue: Option<bool>,
        completion: Option<Completion>,
    ) {
        let mut settled = Vec::new();
        let mut rejected = Vec::new();
        if let Some(queue) = self.queues.get_mut(name) {
            let durable = queue.spec.durable;
            for tag in tags {
                match queue.settle(*tag, requeue) {
                    Settled::Removed { msg_id, persistent: true } if durable => settled.push(msg_id),
                    Settled::Dropped(message) => rejected.push(message),
                    _ => {}
                }
            }
        }
        let dropped_persistent = rejected.iter().any(|m| m.content.properties.persistent);
        let mut completion = completion;
        if !rejected.is_empty() {
            completion = self.dead_letter(name, rejected, DeathReason::Rejected, completion);
        }
        for msg_id in &settled {
            self.journal.append_settle(name, *msg_id);
        }
        if let Some(c) = completion {
            if settled.is_empty() && !dropped_persistent {
                self.complete(c, Ok(()));
            } else if let Some(c) = self.journal.after_durable(c) {
                self.complete(c, Ok(()));
            }
        }
        self.dispatch(name);
    }

    /// Returns credit for auto-ack deliveries the connection has written out.
    pub fn credit(&mut self, owner: ShardId, queue: &str, consumer: ConsumerKey, count: u32) {
        if owner == self.id {
            self.credit_local(queue, consumer, count);
        } else {
            self.send(owner, ShardMsg::Credit { queue: queue.to_owned(), consumer, count });
        }
    }

    pub(super) fn credit_local(&mut self, name: &str, consumer: ConsumerKey, count: u32) {
        if let Some(queue) = self.queues.get_mut(name) {
            queue.release_credit(consumer, count);
            self.dispatch(name);
        }
    }

    pub(super) fn consume_local(&mut self, name: &str, consumer: Consumer) -> Result<(), EngineError> {
        let Some(queue) = self.queues.get_mut(name) else {
            return Err(EngineError::new(ErrorKind::NotFound, format!("no queue '{name}' in vhost '/'")));
        };
        if let Some(owner) = queue.spec.exclusive
            && owner != consumer.key.conn
        {
            let msg = format!("cannot obtain exclusive access to locked queue '{name}'");
            return Err(EngineError::new(ErrorKind::ResourceLocked, msg));
        }
        if !queue.admits(&consumer) {
            let msg = format!("queue '{name}' in vhost '/' in exclusive use");
            return Err(EngineError::new(ErrorKind::AccessRefused, msg));
        }
        queue.add_consumer(consumer);
        queue.touch((self.clock)());
        self.dispatch(name);
        Ok(())
    }

    pub(super) fn get_local(&mut self, name: &str, consumer: ConsumerKey, no_ack: bool) -> Result<Reply, EngineError> {
        self.expire(name);
        let now = self.now_ms();
        let Some(queue) = self.queues.get_mut(name) else {
            return Err(EngineError::new(ErrorKind::NotFound, format!("no queue '{name}' in vhost '/'")));
        };
        queue.touch(now);
        let durable = queue.spec.durable;
        let delivery = queue.get(consumer, no_ack);
        let remaining = queue.ready_len();
        if let Some(d) = &delivery
            && d.settled
            && durable
            && d.message.content.properties.persistent
        {
            self.journal.append_settle(name, d.message.msg_id);
        }
        Ok(Reply::Got { delivery, remaining })
    }

    pub(super) fn cancel_local(&mut self, name: &str, consumer: ConsumerKey) {
        let now = self.now_ms();
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        // The x-expires clock runs from when the last consumer left.
        queue.remove_consumer(consumer);
        queue.touch(now);
        let auto_delete = queue.should_auto_delete();
        if queue.consumer_count() == 0 {
            // Nobody drains it any more: its publishers may fill it for later.
            let held = queue.flow.release_all();
            self.flow_release(name, held);
        }
        self.dispatch(name);
        if auto_delete {
            self.meta_nowait(crate::model::routing::MetaOp::DeleteQueue { name: name.to_owned() });
        }
    }

    /// Removes a consumer without waiting (its connection is closing).
    pub fn cancel_nowait(&mut self, owner: ShardId, queue: &str, consumer: ConsumerKey) {
        let request = crate::shard::msg::Request::Cancel { queue: queue.to_owned(), consumer };
        // Nobody awaits the reply; the receiver is dropped.
        drop(self.request(owner, request));
    }
}
