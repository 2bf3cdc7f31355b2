//! The metadata authority (shard 0 only): validates every routing change against its table,
//! applies it, broadcasts it to every other shard, and answers the requester once all shards
//! have applied it — so after a declare or bind returns, every shard routes by it. Other
//! shards only ever apply ops in the authority's order (FIFO channels from shard 0).

use crate::fastmap::HashMap;
use crate::ids::{RequestId, ShardId};
use crate::model::queue::Queue;
use crate::model::routing::{MetaOp, MetaOutcome};
use crate::shard::msg::{Reply, Request, ShardMsg};
use crate::shard::{AUTHORITY, Shard};

/// Pending broadcasts of the authority.
#[derive(Debug, Default)]
pub struct Authority {
    pending: HashMap<u64, Waiting>,
    next_ack: u64,
}

#[derive(Debug)]
struct Waiting {
    remaining: usize,
    from: ShardId,
    id: RequestId,
}

impl Shard {
    pub(super) fn authority_request(&mut self, from: ShardId, id: RequestId, op: MetaOp) {
        assert_eq!(self.id, AUTHORITY, "meta requests go to the authority");
        let outcome = self.routing.validate(&op, self.limits.queue_count_max);
        let Ok(MetaOutcome::Changed) = outcome else {
            self.reply(from, id, outcome.map(Reply::Meta));
            return;
        };
        self.apply_meta(&op);
        let peers: Vec<ShardId> = (0..self.placement.shard_count()).map(ShardId).filter(|s| *s != self.id).collect();
        if peers.is_empty() {
            self.reply(from, id, Ok(Reply::Meta(MetaOutcome::Changed)));
            return;
        }
        let authority = self.authority.as_mut().expect("shard 0 holds the authority");
        let ack = authority.next_ack;
        authority.next_ack += 1;
        authority.pending.insert(ack, Waiting { remaining: peers.len(), from, id });
        for peer in peers {
            self.send(peer, ShardMsg::MetaApply { op: op.clone(), ack });
        }
    }

    pub(super) fn meta_applied(&mut self, ack: u64) {
        let authority = self.authority.as_mut().expect("only the authority receives MetaApplied");
        let Some(waiting) = authority.pending.get_mut(&ack) else {
            return;
        };
        waiting.remaining -= 1;
        if waiting.remaining == 0
            && let Some(done) = authority.pending.remove(&ack)
        {
            self.reply(done.from, done.id, Ok(Reply::Meta(MetaOutcome::Changed)));
        }
    }

    /// Applies a validated op to this shard's table and, for queues it owns, to the queue set.
    /// Durable exchanges are journaled on every shard; exchange-to-exchange bindings between
    /// durable exchanges on the authority's.
    pub(super) fn apply_meta(&mut self, op: &MetaOp) {
        let deleted = match op {
            MetaOp::DeleteExchange { name, .. } => self.routing.exchange(name).map(|ex| ex.spec.clone()),
            _ => None,
        };
        if let Some(spec) = deleted.as_ref().filter(|s| s.durable && self.id == AUTHORITY) {
            // Bindings into the exchange go with it (those out of it go with its delete record).
            for op in self.routing.exchange_bindings() {
                if let MetaOp::BindExchange { source, destination, key, arguments } = op
                    && destination == spec.name
                {
                    let to = format!("{}{destination}", crate::journal::EXCHANGE_DESTINATION_MARK);
                    self.journal.append_binding(&source, &to, &key, &arguments, false);
                }
            }
        }
        let auto_deleted = self.routing.apply(op);
        for spec in deleted.iter().chain(&auto_deleted) {
            self.journal.append_exchange_delete(spec);
        }
        match op {
            MetaOp::DeclareExchange { spec, .. } => self.journal.append_exchange_declare(spec),
            MetaOp::BindExchange { source, destination, key, arguments }
            | MetaOp::UnbindExchange { source, destination, key, arguments } => {
                let durable = |name: &str| self.routing.exchange(name).is_some_and(|ex| ex.spec.durable);
                if self.id == AUTHORITY && durable(source) && durable(destination) {
                    let bound = matches!(op, MetaOp::BindExchange { .. });
                    let to = format!("{}{destination}", crate::journal::EXCHANGE_DESTINATION_MARK);
                    self.journal.append_binding(source, &to, key, arguments, bound);
                }
            }
            _ => {}
        }
        match op {
            MetaOp::DeclareQueue { spec, .. } if spec.shard == self.id && !self.queues.contains_key(&spec.name) => {
                self.journal.append_queue_declare(spec);
                let mut queue = Queue::new(spec.clone());
                queue.touch(self.now_ms());
                self.queues.insert(spec.name.clone(), queue);
            }
            MetaOp::DeleteQueue { name } => {
                if let Some(mut queue) = self.queues.remove(name) {
                    self.journal.append_queue_delete(&queue.spec);
                    self.forget_dead_lettered(name);
                    let held = queue.flow.release_all();
                    self.flow_release(name, held);
                    for consumer in queue.consumer_keys() {
                        let msg = ShardMsg::ConsumerCancelled { consumer, queue: name.clone() };
                        if consumer.conn.shard == self.id {
                            self.handle_msg(self.id, msg);
                        } else {
                            self.send(consumer.conn.shard, msg);
                        }
                    }
                }
            }
            MetaOp::Bind { exchange, queue, key, arguments } | MetaOp::Unbind { exchange, queue, key, arguments } => {
                let owned_durable = self.queues.get(queue).is_some_and(|q| q.spec.durable);
                if owned_durable {
                    let bound = matches!(op, MetaOp::Bind { .. });
                    self.journal.append_binding(exchange, queue, key, arguments, bound);
                }
            }
            MetaOp::SetQueueArgument { queue, key, value } => {
                if let Some(owned) = self.queues.get_mut(queue) {
                    owned.spec.arguments =
                        crate::model::routing::with_argument(&owned.spec.arguments, key, value.as_deref());
                    self.journal.append_queue_declare(&owned.spec);
                }
            }
            _ => {}
        }
    }

    /// Asks the authority for a change nobody waits on (auto-delete, connection cleanup).
    pub fn meta_nowait(&mut self, op: MetaOp) {
        drop(self.request(AUTHORITY, Request::Meta(op)));
    }
}
