//! Deliveries to the client: which of the session's subscriptions a message matches (MQTT
//! rules, so `#` does not match `$SYS/`), no-local, the granted QoS (the lower of publish and
//! subscription), retain-as-published, subscription identifiers and the remaining message
//! expiry; then PUBLISH within the client's receive maximum. What does not fit waits in a
//! backlog bounded by the consumers' credit. QoS 0 deliveries are settled once written into
//! the output; QoS 1/2 when the client acknowledges (PUBACK/PUBREC).
//!
//! A kept session's outbound QoS 1/2 state survives a broker restart (§4.4) without a record
//! per PUBLISH: a delivery from the durable session queue takes the packet id its message id
//! maps to ([`packet_id_of`]; another when that one is in flight), so a redelivery after a
//! reconnect or restart goes with DUP=1 and its original id. A PUBREC of such a delivery
//! puts a small persistent release marker (header [`HEADER_RELEASE`]) into the session queue
//! before the message is settled; the marker comes back to the session like a message and is
//! settled at PUBCOMP. A marker delivered again (after a reconnect or restart) re-sends its
//! PUBREL instead of a PUBLISH; one whose PUBCOMP came before it is settled at once.

use std::sync::Arc;

use ferry_mqtt::{Outbound, QoS, SendError};

use super::mapping::delivered;
use super::topic_map::key_to_topic;
use super::{MqttConn, Target};
use crate::model::message::Content;
use crate::model::message::{Extra, Properties};
use crate::model::queue::Delivery;
use crate::shard::mqtt::mqtt_pattern_matches;

/// The session-queue header of a release marker: the packet id whose PUBCOMP is awaited.
pub(super) const HEADER_RELEASE: &str = "x-ferry-mqtt-pubrel";

/// The packet id of a session-queue delivery: a pure function of its message id, so the
/// same message gets the same id again after a reconnect or restart.
pub(super) fn packet_id_of(msg_id: u64) -> u16 {
    u16::try_from(msg_id % u64::from(u16::MAX)).map_or(1, |id| id + 1)
}

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
                    // Markers live only in the kept session queue (and no publisher can set
                    // their header: `x-ferry-` headers are dropped on the way in).
                    if self.is_kept_session_queue(&delivery.queue)
                        && let Some(release) = release_marker(delivery)
                    {
                        self.marker_delivered(release, delivery.message.redelivered, target);
                        continue;
                    }
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
        let mut outbound = self.outbound(content, qos, retain, ids, d.properties, delivery.message.redelivered);
        if self.is_kept_session_queue(&delivery.queue) {
            outbound.packet_id = Some(packet_id_of(delivery.message.msg_id));
        }
        Some(outbound)
    }

    fn is_kept_session_queue(&self, queue: &str) -> bool {
        self.queue.as_ref().is_some_and(|q| q.durable_name && q.name == queue)
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
            packet_id: None,
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
        self.shard.borrow_mut().settle_one(target.owner, &target.queue, target.tag, None, None);
    }

    /// The client acknowledged packet `packet_id` (PUBACK, or PUBREC for QoS 2).
    pub(super) fn acked(&mut self, packet_id: u16) {
        if let Some(Some(target)) = self.inflight.remove(&packet_id) {
            if self.session.is_releasing(packet_id) && self.is_kept_session_queue(&target.queue) {
                // Recorded before the settle (same queue, same log, in order): a crash
                // between the two re-sends the PUBLISH rather than losing the PUBREL.
                let marker = release_marker_content(packet_id);
                if let Err(e) = self.shard.borrow_mut().publish("", &target.queue, marker, None, || None) {
                    tracing::warn!(conn = %self.id, "recording a QoS 2 release failed: {e}");
                }
            }
            self.settle(&target);
        }
        self.flush_backlog();
    }

    /// The client completed released QoS 2 delivery `packet_id` (PUBCOMP).
    pub(super) fn completed(&mut self, packet_id: u16) {
        if let Some(Some(target)) = self.inflight.remove(&packet_id) {
            self.settle(&target); // its release marker
        }
        self.flush_backlog();
    }

    /// A release marker reached the session: waits for the PUBCOMP of the release it records
    /// (re-sending the PUBREL when the marker comes from an earlier connection or a restart),
    /// or is settled when that PUBCOMP came already or its id is taken.
    fn marker_delivered(&mut self, packet_id: Option<u16>, redelivered: bool, target: Target) {
        let waiting = match packet_id {
            Some(id) if redelivered => self.session.restore_release(id),
            Some(id) => self.session.is_releasing(id),
            None => false,
        };
        match packet_id.filter(|id| waiting && !self.inflight.contains_key(id)) {
            Some(id) => {
                self.inflight.insert(id, Some(target));
            }
            None => self.settle(&target),
        }
    }
}

/// A release marker's persistent message.
fn release_marker_content(packet_id: u16) -> Arc<Content> {
    let properties = Properties { persistent: true, ..Properties::default() }
        .with_extra(Extra { headers: vec![(HEADER_RELEASE.to_owned(), packet_id.to_string())], ..Extra::default() });
    Arc::new(Content { exchange: String::new(), routing_key: String::new(), properties, body: bytes::Bytes::new() })
}

/// `Some` for a release marker: the packet id it records (`None` inside when unreadable).
fn release_marker(delivery: &Delivery) -> Option<Option<u16>> {
    let headers = &delivery.message.content.properties.headers;
    let (_, value) = headers.iter().find(|(k, _)| k == HEADER_RELEASE)?;
    Some(value.parse().ok().filter(|id| *id != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_map_onto_every_packet_id_but_0() {
        assert_eq!(packet_id_of(0), 1);
        assert_eq!(packet_id_of(1), 2);
        assert_eq!(packet_id_of(65_534), u16::MAX);
        assert_eq!(packet_id_of(65_535), 1, "wraps past 65,535");
        assert_eq!(packet_id_of(u64::MAX), packet_id_of(u64::MAX % 65_535));
    }
}
