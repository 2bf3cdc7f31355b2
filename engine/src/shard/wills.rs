//! The durable copy of MQTT wills that wait for their 5.0 Will Delay Interval, so a broker
//! restart does not lose them. The timer stays with the client id's registry shard
//! (`shard::mqtt`); this is the log's side: each waiting will is one persistent message of the
//! durable queue `amq.mqtt.wills` (declared by the gateway when a CONNECT carries a will
//! delay), on the shard that owns that queue, with four `x-ferry-mqtt-will-` headers naming
//! its client id, when it is due (wall-clock ms since the epoch, so time spent down counts),
//! its retain flag and its persistence. A newer will of one client settles the older; a will
//! published, or cancelled by its client coming back, is settled. After a restart the owner
//! hands each recovered will to its registry shard, which publishes it when due (at once if
//! the delay passed while the broker was down) unless the client connects first.
//!
//! Nothing is acknowledged on these records: a will is recorded as its connection closes and
//! is durable with the log's next group commit (milliseconds later), so a `kill -9` after
//! that behaves as a clean stop; a machine crash before that sync loses it. A crash between
//! publishing a will and its settle record's sync publishes it again after the restart.
//! Bounded by the clients with a waiting will (one message each) and the queue limits.

use std::sync::Arc;

use crate::model::message::Content;
use crate::shard::Shard;
use crate::shard::msg::ShardMsg;

/// The durable queue of wills waiting for their delay (its `amq.` name keeps AMQP clients
/// from declaring it).
pub const WILLS_QUEUE: &str = "amq.mqtt.wills";

const HEADER_CLIENT: &str = "x-ferry-mqtt-will-client";
const HEADER_DUE: &str = "x-ferry-mqtt-will-due-unix-ms";
const HEADER_RETAIN: &str = "x-ferry-mqtt-will-retain";
const HEADER_PERSISTENT: &str = "x-ferry-mqtt-will-persistent";

/// A will as the log keeps it, and as recovery reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWill {
    pub client_id: String,
    /// Wall-clock ms since the Unix epoch.
    pub due_unix_ms: u64,
    pub content: Arc<Content>,
    pub retain: bool,
}

impl StoredWill {
    /// The persistent message that records this will.
    pub fn to_content(&self) -> Arc<Content> {
        let mut content = (*self.content).clone();
        let persistent = content.properties.persistent;
        let headers = &mut content.properties.extra_mut().headers;
        headers.push((HEADER_CLIENT.to_owned(), self.client_id.clone()));
        headers.push((HEADER_DUE.to_owned(), self.due_unix_ms.to_string()));
        headers.push((HEADER_RETAIN.to_owned(), u8::from(self.retain).to_string()));
        headers.push((HEADER_PERSISTENT.to_owned(), u8::from(persistent).to_string()));
        content.properties.persistent = true;
        Arc::new(content)
    }

    /// The will a recorded message holds; `None` when any of its headers is missing or
    /// malformed (the log came from elsewhere, or a client wrote to the queue).
    pub fn from_content(stored: &Content) -> Option<StoredWill> {
        let mut content = stored.clone();
        let mut take = |name: &str| {
            let at = content.properties.headers.iter().position(|(k, _)| k == name)?;
            Some(content.properties.extra_mut().headers.remove(at).1)
        };
        let client_id = take(HEADER_CLIENT)?;
        let due_unix_ms = take(HEADER_DUE)?.parse().ok()?;
        let flag = |value: String| match value.as_str() {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        let retain = flag(take(HEADER_RETAIN)?)?;
        let persistent = flag(take(HEADER_PERSISTENT)?)?;
        content.properties.persistent = persistent;
        Some(StoredWill { client_id, due_unix_ms, content: Arc::new(content), retain })
    }
}

impl Shard {
    fn wills_owner(&self) -> Option<crate::ids::ShardId> {
        self.routing.queue(WILLS_QUEUE).map(|q| q.shard)
    }

    /// On a registry shard: records a will that now waits for its delay.
    pub(super) fn will_record(&mut self, will: StoredWill) {
        match self.wills_owner() {
            Some(owner) if owner == self.id => self.will_store_local(will),
            Some(owner) => self.send(owner, ShardMsg::MqttWillStore(Box::new(will))),
            None => {} // never declared (the declaration failed): kept in memory only
        }
    }

    /// On a registry shard: the client's waiting will was published or cancelled.
    pub(super) fn will_forget(&mut self, client_id: String) {
        match self.wills_owner() {
            Some(owner) if owner == self.id => self.will_drop_local(&client_id),
            Some(owner) => self.send(owner, ShardMsg::MqttWillDrop { client_id }),
            None => {}
        }
    }

    pub(super) fn will_store_local(&mut self, will: StoredWill) {
        self.will_drop_local(&will.client_id);
        if let Some(id) = self.enqueue_local(WILLS_QUEUE, will.to_content(), None, None) {
            self.mqtt.wills.insert(will.client_id, id);
        }
    }

    pub(super) fn will_drop_local(&mut self, client_id: &str) {
        let Some(id) = self.mqtt.wills.remove(client_id) else { return };
        self.will_settle(id);
    }

    /// Takes record `id` out of the wills queue and logs its settle.
    fn will_settle(&mut self, id: u64) {
        if self.queues.get_mut(WILLS_QUEUE).and_then(|q| q.take_ready(id)).is_some() {
            self.journal.append_settle(WILLS_QUEUE, id);
        }
    }

    /// After recovery, on the queue's owner: indexes the recovered wills and hands each to its
    /// client id's registry shard. Unreadable ones are settled.
    pub fn mqtt_wills_recovered(&mut self) {
        let Some(queue) = self.queues.get(WILLS_QUEUE) else { return };
        let recovered: Vec<(u64, Option<StoredWill>)> =
            queue.ready_messages().map(|m| (m.msg_id, StoredWill::from_content(&m.content))).collect();
        for (id, will) in recovered {
            let Some(will) = will else {
                tracing::warn!(msg_id = id, "dropping an unreadable record of {WILLS_QUEUE}");
                self.will_settle(id);
                continue;
            };
            if let Some(older) = self.mqtt.wills.insert(will.client_id.clone(), id) {
                // Left by a crash between a newer will's record and the older's settle.
                self.will_settle(older);
            }
            let registry = crate::gateway::mqtt::connect::registry_of(&self.placement, &will.client_id);
            if registry == self.id {
                self.mqtt_restore_will(will);
            } else {
                self.send(registry, ShardMsg::MqttWillRestore(Box::new(will)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::message::{Extra, Properties};

    fn will(persistent: bool) -> Arc<Content> {
        let properties = Properties { persistent, ..Properties::default() }.with_extra(Extra {
            headers: vec![("x-mqtt-publish-qos".into(), "1".into()), ("user".into(), "v".into())],
            ..Extra::default()
        });
        Arc::new(Content {
            exchange: "amq.topic".into(),
            routing_key: "w.t".into(),
            properties,
            body: bytes::Bytes::from_static(b"gone"),
        })
    }

    #[test]
    fn a_stored_will_reads_back_as_it_was() {
        for (persistent, retain) in [(false, true), (true, false)] {
            let stored = StoredWill {
                client_id: "c/1".into(),
                due_unix_ms: 1_700_000_000_123,
                content: will(persistent),
                retain,
            };
            let content = stored.to_content();
            assert!(content.properties.persistent, "journaled as persistent");
            assert_eq!(StoredWill::from_content(&content), Some(stored));
        }
    }

    #[test]
    fn a_message_without_the_will_headers_is_not_a_will() {
        assert_eq!(StoredWill::from_content(&will(true)), None);
        let stored = StoredWill { client_id: "c".into(), due_unix_ms: 5, content: will(true), retain: false };
        let mut content = (*stored.to_content()).clone();
        for (k, v) in &mut content.properties.extra_mut().headers {
            if k == HEADER_DUE {
                *v = "soon".into();
            }
        }
        assert_eq!(StoredWill::from_content(&content), None);
    }
}
