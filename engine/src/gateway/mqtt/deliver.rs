//! Deliveries to the client: which of the session's subscriptions a message matches (MQTT
//! rules, so `#` does not match `$SYS/`), no-local, the granted QoS (the lower of publish and
//! subscription), retain-as-published, subscription identifiers and the remaining message
//! expiry; then PUBLISH within the client's receive maximum. What does not fit waits in a
//! backlog bounded by the consumers' credit. QoS 0 deliveries are settled once written into
//! the output; QoS 1/2 when the client acknowledges (PUBACK/PUBREC).

use std::sync::Arc;

use ferry_mqtt::{Outbound, QoS, SendError};

use super::mapping::delivered;
use super::topic_map::key_to_topic;
use super::{MqttConn, Target};
use crate::model::message::Content;
use crate::model::queue::Delivery;
use crate::shard::mqtt::mqtt_pattern_matches;

/// A message waiting for room in the client's receive maximum.
#[derive(Debug)]
pub(super) enum Pending {
    Delivery(Delivery),
    /// A retained message sent on subscribe (not from a queue: nothing to settle).
    Retained {
        content: Arc<Content>,
        qos: QoS,
        id: Option<u32>,
        /// Seconds the message has left to live, if it expires.
        expiry_left: Option<u32>,
    },
}

impl MqttConn {
    pub(super) fn deliver(&mut self, delivery: Delivery) {
        self.backlog.push_back(Pending::Delivery(delivery));
    }

    /// Sends what the client's receive maximum allows, in arrival order.
    pub(super) fn flush_backlog(&mut self) {
        while let Some(pending) = self.backlog.pop_front() {
            if self.session.is_closed() {
                // Unsent deliveries go back to their queues when the consumer is cancelled.
                return;
            }
            let (outbound, target) = match &pending {
                Pending::Retained { content, qos, id, expiry_left } => {
                    let d = delivered(&content.properties, *expiry_left);
                    let ids = id.iter().copied().collect();
                    (self.outbound(content, (*qos).min(d.qos), true, ids, d.properties, false), None)
                }
                Pending::Delivery(delivery) => {
                    let target = self.target_of(delivery);
                    match self.prepare(delivery) {
                        Some(outbound) => (outbound, Some(target)),
                        None => {
                            self.settle(&target);
                            continue;
                        }
                    }
                }
            };
            match self.session.send_publish(outbound) {
                Ok(Some(packet_id)) => {
                    self.inflight.insert(packet_id, target);
                }
                Ok(None) | Err(SendError::TooLarge) => {
                    if let Some(target) = target {
                        self.settle(&target);
                    }
                }
                Err(SendError::WindowFull) => {
                    self.backlog.push_front(pending);
                    return;
                }
                Err(SendError::Closed) => return,
            }
        }
    }

    /// The PUBLISH for a queue delivery, or `None` when no subscription of this session
    /// wants it (a `$` topic under a leading wildcard, or no-local).
    fn prepare(&self, delivery: &Delivery) -> Option<Outbound> {
        let content = &delivery.message.content;
        let key = &content.routing_key;
        let now = self.shard.borrow().clock_ms();
        let expiry_left = delivery.message.expires_at_ms.map(|at| {
            let left_ms = at.saturating_sub(now);
            u32::try_from(left_ms.div_ceil(1000)).unwrap_or(u32::MAX)
        });
        let d = delivered(&content.properties, expiry_left);
        let own = d.publisher.is_some() && d.publisher == self.client_id;
        let shared = self.subs.iter().find(|s| s.shared.as_ref().is_some_and(|(_, _, c)| *c == delivery.consumer));
        let matched: Vec<&super::Sub> = match shared {
            Some(sub) => vec![sub],
            None => self
                .subs
                .iter()
                .filter(|s| s.shared.is_none())
                .filter(|s| mqtt_pattern_matches(&s.compiled, &s.pattern, key))
                .filter(|s| !(own && s.options.no_local))
                .collect(),
        };
        let granted = matched.iter().map(|s| s.options.qos).max()?;
        let retain = d.retained && matched.iter().any(|s| s.options.retain_as_published);
        let ids: Vec<u32> = matched.iter().filter_map(|s| s.id).collect();
        let qos = granted.min(d.qos);
        Some(self.outbound(content, qos, retain, ids, d.properties, delivery.message.redelivered))
    }

    fn outbound(
        &self,
        content: &Content,
        qos: QoS,
        retain: bool,
        ids: Vec<u32>,
        mut properties: ferry_mqtt::Properties,
        dup: bool,
    ) -> Outbound {
        properties.subscription_identifiers = ids;
        Outbound {
            topic: key_to_topic(&content.routing_key),
            qos,
            retain,
            dup,
            properties,
            payload: content.body.clone(),
        }
    }

    fn owner_of(&self, queue: &str) -> crate::ids::ShardId {
        let shard = self.shard.borrow();
        shard.routing().queue(queue).map_or(shard.id(), |q| q.shard)
    }

    fn target_of(&self, delivery: &Delivery) -> Target {
        Target { owner: self.owner_of(&delivery.queue), queue: delivery.queue.clone(), tag: delivery.tag }
    }

    fn settle(&self, target: &Target) {
        self.shard.borrow_mut().settle(target.owner, &target.queue, vec![target.tag], None, None);
    }

    /// The client acknowledged packet `packet_id` (PUBACK, or PUBREC for QoS 2).
    pub(super) fn acked(&mut self, packet_id: u16) {
        if let Some(Some(target)) = self.inflight.remove(&packet_id) {
            self.settle(&target);
        }
        self.flush_backlog();
    }
}
