//! Messages that leave a queue without being consumed — expired (`x-message-ttl`, per-message
//! expiration), dropped by `x-max-length` (drop-head), or rejected without requeue — are
//! settled in the journal and, when the queue has `x-dead-letter-exchange`, republished there
//! from the owning shard with the dead-letter routing key (or their own) and RabbitMQ's
//! `x-first-death-reason`/`-queue`/`-exchange` headers and its `x-death` array (one entry per
//! queue and reason, with a count). The expiration is removed, as RabbitMQ does, so a
//! dead-lettered message does not expire again at once.

use std::sync::Arc;

use crate::gateway::amqp091::mapping::{Death, record_death};
use crate::model::message::{Content, QueuedMessage};
use crate::shard::Shard;

/// Why a message was dead-lettered (RabbitMQ's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    Expired,
    MaxLen,
    Rejected,
}

impl DeathReason {
    fn as_str(self) -> &'static str {
        match self {
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::Rejected => "rejected",
        }
    }
}

impl Shard {
    /// Current time on the shard's clock, in ms.
    pub(super) fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Takes `queue`'s expired head messages away and dead-letters them.
    pub(super) fn expire(&mut self, queue: &str) {
        // Runs at every dispatch: read the clock only for a queue holding expiring messages.
        let clock = &self.clock;
        let expired = match self.queues.get_mut(queue) {
            Some(q) if q.has_expiring() => q.take_expired(clock()),
            _ => return,
        };
        if !expired.is_empty() {
            self.dead_letter(queue, expired, DeathReason::Expired);
        }
    }

    /// Expires what is due in every queue this shard owns (the runtime calls this a few times
    /// a second, so messages expire without a consumer looking), and deletes queues unused for
    /// their `x-expires` (through the authority, like queue.delete; their messages go with
    /// them, not to a dead-letter exchange, as in RabbitMQ).
    /// Only queues holding messages with an expiry are visited; removing expired messages
    /// never makes a delivery possible, so nothing is re-dispatched.
    pub fn expire_due(&mut self) {
        let due: Vec<String> = self.queues.values().filter(|q| q.has_expiring()).map(|q| q.spec.name.clone()).collect();
        for name in due {
            self.expire(&name);
        }
        let now = self.now_ms();
        let mut unused = Vec::new();
        for queue in self.queues.values_mut().filter(|q| q.expires_when_unused()) {
            if queue.take_idle_expiry(now) {
                unused.push(queue.spec.name.clone());
            }
        }
        for name in unused {
            tracing::debug!(queue = %name, "queue unused for its x-expires: deleting it");
            self.meta_nowait(crate::model::routing::MetaOp::DeleteQueue { name });
        }
    }

    pub(super) fn dead_letter(&mut self, queue: &str, messages: Vec<QueuedMessage>, reason: DeathReason) {
        let Some(q) = self.queues.get(queue) else { return };
        let durable = q.spec.durable;
        let target = q.args.dead_letter_exchange.clone().map(|ex| (ex, q.args.dead_letter_routing_key.clone()));
        for message in messages {
            if durable && message.content.properties.persistent {
                self.journal.append_settle(queue, message.msg_id);
            }
            let Some((exchange, key)) = &target else { continue };
            let original = &message.content;
            let mut content: Content = (**original).clone();
            content.exchange = exchange.clone();
            content.routing_key = key.clone().unwrap_or_else(|| original.routing_key.clone());
            content.properties.expiration_ms = None;
            let headers = &mut content.properties.extra_mut().headers;
            if !headers.iter().any(|(k, _)| k == "x-first-death-reason") {
                headers.push(("x-first-death-reason".to_owned(), reason.as_str().to_owned()));
                headers.push(("x-first-death-queue".to_owned(), queue.to_owned()));
                headers.push(("x-first-death-exchange".to_owned(), original.exchange.clone()));
            }
            let death = Death {
                queue,
                reason: reason.as_str(),
                exchange: &original.exchange,
                routing_key: &original.routing_key,
                time_s: self.now_ms() / 1000,
            };
            record_death(&mut content.properties, &death);
            let (exchange, key) = (content.exchange.clone(), content.routing_key.clone());
            if let Err(e) = self.publish(&exchange, &key, Arc::new(content), None, || None) {
                tracing::warn!(queue, exchange, "dead-lettering failed: {e}");
            }
        }
    }
}
