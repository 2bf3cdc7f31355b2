//! Messages that leave a queue without being consumed — expired (`x-message-ttl`, per-message
//! expiration), dropped by `x-max-length` (drop-head), or rejected without requeue — are
//! settled in the journal and, when the queue has `x-dead-letter-exchange`, republished there
//! from the owning shard with the dead-letter routing key (or their own) and RabbitMQ's
//! `x-first-death-reason`/`-queue`/`-exchange` headers and its `x-death` array (one entry per
//! queue and reason, with a count). The expiration is removed, as RabbitMQ does, so a
//! dead-lettered message does not expire again at once.
//!
//! At least once, like RabbitMQ's `at-least-once` dead-letter strategy rather than its
//! default: a persistent message's settle in its own queue is logged only once every queue its
//! copy reached holds the copy (durably, where it is logged), so a crash between the two
//! leaves the message in its queue (and perhaps its copy too), never in neither. The receipt of
//! a NACK that dead-letters waits for the same.

use std::sync::Arc;

use crate::error::EngineError;
use crate::gateway::amqp091::mapping::{Death, record_death};
use crate::ids::Completion;
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
            self.dead_letter(queue, expired, DeathReason::Expired, None);
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

    /// Takes `messages` (gone from `queue`) out of the log and republishes them to the queue's
    /// dead-letter exchange, if any. `completion` (a NACK's receipt) is given back when
    /// nothing waits for a copy; else it is released once the settles are durable.
    pub(super) fn dead_letter(
        &mut self,
        queue: &str,
        messages: Vec<QueuedMessage>,
        reason: DeathReason,
        completion: Option<Completion>,
    ) -> Option<Completion> {
        let Some(q) = self.queues.get(queue) else { return completion };
        let durable = q.spec.durable;
        let Some(exchange) = q.args.dead_letter_exchange.clone() else {
            for message in messages.iter().filter(|m| durable && m.content.properties.persistent) {
                self.journal.append_settle(queue, message.msg_id);
            }
            return completion;
        };
        let target = (exchange, q.args.dead_letter_routing_key.clone());
        // Open until every copy is handed out: a copy can land before `publish` returns (a
        // transient target, a queue gone or full, ack-before-sync).
        let token = self.next_internal_token;
        self.next_internal_token += 1;
        let wait =
            CopiesInFlight { queue: queue.to_owned(), settles: Vec::new(), sent: 0, landed: 0, open: true, completion };
        self.copies_in_flight.insert(token, wait);
        let me = Completion { conn: self.internal_address(), token };
        for message in messages {
            let logged = durable && message.content.properties.persistent;
            let content = self.dead_lettered_copy(queue, &message, &target, reason);
            let (exchange, key) = (content.exchange.clone(), content.routing_key.clone());
            let reached = self.publish(&exchange, &key, Arc::new(content), None, || logged.then_some(me));
            let reached = reached.unwrap_or_else(|e| {
                tracing::warn!(queue, exchange, "dead-lettering failed: {e}");
                0
            });
            match self.copies_in_flight.get_mut(&token) {
                Some(wait) if logged && reached > 0 => {
                    wait.sent += reached;
                    wait.settles.push((message.msg_id, message.content.clone()));
                }
                // Routed nowhere: dropped, as in RabbitMQ.
                _ if logged => self.journal.append_settle(queue, message.msg_id),
                _ => {}
            }
        }
        let wait = self.copies_in_flight.get_mut(&token)?;
        wait.open = false;
        if wait.settles.is_empty() {
            return self.copies_in_flight.remove(&token).and_then(|w| w.completion);
        }
        self.settle_if_all_landed(token);
        None
    }

    /// The copy of `message` that goes to `queue`'s dead-letter exchange `target`.
    fn dead_lettered_copy(
        &self,
        queue: &str,
        message: &QueuedMessage,
        (exchange, key): &(String, Option<String>),
        reason: DeathReason,
    ) -> Content {
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
        content
    }

    /// One dead-lettered copy is held by a queue it reached (or refused: it is then dropped,
    /// as a copy that reached no queue is).
    pub(super) fn copy_landed(&mut self, token: u64, result: Result<(), EngineError>) {
        let Some(wait) = self.copies_in_flight.get_mut(&token) else { return };
        if let Err(e) = result {
            tracing::warn!(queue = %wait.queue, "a dead-lettered copy was refused: {e}");
        }
        wait.landed += 1;
        self.settle_if_all_landed(token);
    }

    /// Once every copy of a batch is handed out and held, its originals' settles are logged,
    /// and the NACK that dead-lettered them completes when those are durable.
    fn settle_if_all_landed(&mut self, token: u64) {
        let Some(wait) = self.copies_in_flight.get(&token) else { return };
        if wait.open || wait.landed < wait.sent {
            return;
        }
        let Some(wait) = self.copies_in_flight.remove(&token) else { return };
        for (msg_id, _) in wait.settles {
            self.journal.append_settle(&wait.queue, msg_id);
        }
        if let Some(c) = wait.completion.and_then(|c| self.journal.after_durable(c)) {
            self.complete(c, Ok(()));
        }
    }

    /// `queue` was deleted: its log no longer holds the originals waiting for their copies,
    /// and a settle logged later would name a message of a queue declared again by that name.
    pub(super) fn forget_dead_lettered(&mut self, queue: &str) {
        for wait in self.copies_in_flight.values_mut().filter(|w| w.queue == queue) {
            wait.settles.clear();
        }
    }

    /// Dead-lettered messages whose settles wait for their copies: still live in the log.
    pub(super) fn originals_in_flight(&self) -> impl Iterator<Item = (&str, u64, &Arc<Content>)> {
        self.copies_in_flight
            .values()
            .flat_map(|w| w.settles.iter().map(move |(id, content)| (w.queue.as_str(), *id, content)))
    }
}

/// Dead-lettered persistent messages whose settles wait for their copies to land.
#[derive(Debug)]
pub(super) struct CopiesInFlight {
    queue: String,
    /// The originals to settle in `queue` once every copy landed (their content, for
    /// compaction to copy forward meanwhile: they are still live in the log).
    settles: Vec<(u64, Arc<Content>)>,
    /// Copies handed out (one per queue reached) and held so far.
    sent: usize,
    landed: usize,
    /// Still handing copies out.
    open: bool,
    /// A NACK's receipt, released once the settles are durable.
    completion: Option<Completion>,
}
