//! MQTT state a shard keeps for the whole broker, split by pure placement like queues are:
//! the client-id registry for the ids that place on this shard (takeover of an older
//! connection, QoS 2 packet-id state kept across reconnects, delayed wills — with a durable
//! copy in the log, see `shard::wills` —, session expiry)
//! and, on the owner of `amq.mqtt.retained`, the retained-message store. Retained messages
//! are ordinary persistent messages of that durable queue (one per topic, replaced by
//! settling the older one), so the log keeps them and recovery brings them back with no new
//! record kind. Bounded by the clients that hold state (one entry each) and the queue limits.

use std::sync::Arc;

use crate::fastmap::HashMap;
use crate::ids::{Completion, ConnectionId, ShardId};
use crate::model::message::{Content, Properties};
use crate::model::routing::MetaOp;
use crate::model::topic::TopicPattern;
use crate::shard::Shard;
use crate::shard::msg::ShardMsg;
use crate::shard::wills::StoredWill;

/// The durable queue that holds retained messages (its `amq.` name keeps AMQP clients from
/// declaring it).
pub const RETAINED_QUEUE: &str = "amq.mqtt.retained";

/// How often `$SYS/` statistics are published, in ms.
const SYS_EVERY_MS: u64 = 10_000;

/// Packet-id state of a session that outlives its connection (§4.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedSession {
    /// QoS 2 publishes from the client whose PUBREL has not arrived.
    pub inbound_received: Vec<u16>,
    /// QoS 2 deliveries whose PUBCOMP has not arrived.
    pub pending_releases: Vec<u16>,
}

/// A will to publish later unless the client connects again first (5.0 will delay).
#[derive(Debug, Clone)]
pub struct DelayedWill {
    pub delay_ms: u64,
    pub content: Arc<Content>,
    pub retain: bool,
}

/// What a closing MQTT connection leaves with its client id's registry shard.
#[derive(Debug, Clone)]
pub struct MqttRelease {
    pub client_id: String,
    pub conn: ConnectionId,
    pub saved: SavedSession,
    pub will: Option<DelayedWill>,
    /// When the session ends after this close: `None` never, `Some(ms)` after `ms`.
    pub session_expiry_ms: Option<u64>,
    /// The durable session queue to delete when the session expires.
    pub session_queue: Option<String>,
}

#[derive(Debug, Default)]
struct Client {
    conn: Option<ConnectionId>,
    /// Boxed: only a client whose connection closed has any, and every connected client has
    /// an entry (idle connections at 10,000 pay for the map's empty buckets too).
    left: Option<Box<Left>>,
}

/// What a closed connection left with its client id's registry.
#[derive(Debug, Default)]
struct Left {
    saved: SavedSession,
    will: Option<(u64, Arc<Content>, bool)>,
    expires: Option<(u64, Option<String>)>,
    /// Rebuilt from the log after a restart (not left by a connection since): the session's
    /// expiry and its waiting will arrive separately and are merged.
    restored: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct MqttRegistry {
    clients: HashMap<String, Client>,
    /// Routing key → message id in `amq.mqtt.retained`; rebuilt from the queue after a restart.
    retained: Option<HashMap<String, u64>>,
    sys_next_ms: u64,
    started_ms: Option<u64>,
    /// On the authority: the latest `$SYS` figures of every shard (its own included).
    sys_shards: HashMap<u16, SysStats>,
    /// On the owner of `amq.mqtt.wills`: client id → the message recording its waiting will.
    pub(super) wills: HashMap<String, u64>,
}

/// One shard's `$SYS` figures. Each client id has one registry shard, so summing shards
/// counts every client once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SysStats {
    pub connections: u64,
    pub clients_connected: u64,
    /// Connected clients and disconnected sessions still kept.
    pub clients_total: u64,
    pub queues: u64,
    /// Retained messages (only the retained store's owner has any).
    pub retained: u64,
}

/// Whether an AMQP topic pattern matches `key` the MQTT way: as the topic exchange does, but
/// a pattern starting with a wildcard does not match a key starting with `$` (§4.7.2).
pub fn mqtt_pattern_matches(pattern: &TopicPattern, raw_pattern: &str, key: &str) -> bool {
    if key.starts_with('$') && (raw_pattern.starts_with('*') || raw_pattern.starts_with('#')) {
        return false;
    }
    pattern.matches(key)
}

impl Shard {
    /// The shard's clock in ms (message expiry of deliveries).
    pub fn clock_ms(&self) -> u64 {
        self.now_ms()
    }

    /// Registers `conn` as the live connection of `client_id`, taking over any older one.
    /// Returns the saved packet-id state (unless `clean`) and whether the session had expired.
    pub(super) fn mqtt_claim(&mut self, client_id: String, conn: ConnectionId, clean: bool) -> (SavedSession, bool) {
        let now = self.now_ms();
        let client = self.mqtt.clients.entry(client_id.clone()).or_default();
        let old = client.conn.replace(conn);
        let left = client.left.take().map(|left| *left).unwrap_or_default();
        let expired = left.expires.is_some_and(|(at, _)| at <= now);
        let saved = left.saved;
        if let Some(old) = old.filter(|old| *old != conn) {
            self.mqtt_take_over(old);
        }
        if left.will.is_some() {
            self.will_forget(client_id); // the client came back first
        }
        if clean || expired { (SavedSession::default(), expired) } else { (saved, false) }
    }

    fn mqtt_take_over(&mut self, old: ConnectionId) {
        if old.shard == self.id {
            self.with_conn(old, |m| m.taken_over = true);
        } else {
            self.send(old.shard, ShardMsg::MqttTakeover { conn: old });
        }
    }

    /// After a restart: a durable session queue that recorded a Session Expiry Interval is a
    /// disconnected session again, ending `expiry_ms` from now unless its client comes back
    /// (the clock restarts with the broker, as RabbitMQ's queue expiry does). Sent to the
    /// client id's registry shard.
    pub fn mqtt_restore_to(&mut self, registry: ShardId, client_id: String, expiry_ms: u64, queue: String) {
        if registry == self.id {
            self.mqtt_restore(client_id, expiry_ms, queue);
        } else {
            self.send(registry, ShardMsg::MqttRestore { client_id, expiry_ms, queue });
        }
    }

    pub(super) fn mqtt_restore(&mut self, client_id: String, expiry_ms: u64, queue: String) {
        let now = self.now_ms();
        let client = self.mqtt.clients.entry(client_id).or_default();
        let expires = Some((now.saturating_add(expiry_ms), Some(queue)));
        match (&client.conn, &mut client.left) {
            (None, None) => client.left = Some(Box::new(Left { expires, restored: true, ..Left::default() })),
            (None, Some(left)) if left.restored => left.expires = expires,
            _ => {} // a connection since the restart knows better
        }
    }

    /// After a restart, from the owner of `amq.mqtt.wills`: a will that was waiting for its
    /// delay waits again for what is left of it (nothing, if it passed while the broker was
    /// down), unless its client has connected since.
    pub(super) fn mqtt_restore_will(&mut self, will: StoredWill) {
        let now = self.now_ms();
        let at = now.saturating_add(will.due_unix_ms.saturating_sub(self.unix_ms()));
        let client = self.mqtt.clients.entry(will.client_id.clone()).or_default();
        let waiting = Some((at, will.content, will.retain));
        match (&client.conn, &mut client.left) {
            (None, None) => client.left = Some(Box::new(Left { will: waiting, restored: true, ..Left::default() })),
            (None, Some(left)) if left.restored => left.will = waiting,
            // A connection since the restart: it cancelled this will, or left a newer one
            // whose record replaces this one.
            (None, Some(left)) if left.will.is_some() => {}
            _ => self.will_forget(will.client_id),
        }
    }

    /// Hands what a closed connection left to its client id's registry shard.
    pub fn mqtt_release_to(&mut self, registry: ShardId, release: MqttRelease) {
        if registry == self.id {
            self.mqtt_release(release);
        } else {
            self.send(registry, ShardMsg::MqttRelease(Box::new(release)));
        }
    }

    /// Records what a closed connection left (if it still owned its client id).
    pub(super) fn mqtt_release(&mut self, release: MqttRelease) {
        let now = self.now_ms();
        let Some(client) = self.mqtt.clients.get_mut(&release.client_id) else {
            return;
        };
        if client.conn != Some(release.conn) {
            return; // taken over: the newer connection owns the session now
        }
        client.conn = None;
        let left = Left {
            saved: release.saved,
            will: release.will.as_ref().map(|w| (now.saturating_add(w.delay_ms), w.content.clone(), w.retain)),
            expires: release.session_expiry_ms.map(|ms| (now.saturating_add(ms), release.session_queue)),
            restored: false,
        };
        let ended = left.expires.as_ref().is_some_and(|(at, _)| *at <= now);
        if left.will.is_none() && (ended || left.saved == SavedSession::default() && left.expires.is_none()) {
            self.mqtt.clients.remove(&release.client_id);
        } else {
            client.left = Some(Box::new(left));
        }
        if let Some(will) = release.will {
            let due_unix_ms = self.unix_ms().saturating_add(will.delay_ms);
            let client_id = release.client_id;
            self.will_record(StoredWill { client_id, due_unix_ms, content: will.content, retain: will.retain });
        }
    }

    /// Publishes due wills, ends expired sessions and refreshes `$SYS/` (called by the
    /// runtime a few times a second).
    pub fn mqtt_tick(&mut self) {
        let now = self.now_ms();
        let mut wills = Vec::new();
        let mut expired = Vec::new();
        for (id, client) in &mut self.mqtt.clients {
            let Some(left) = &mut client.left else { continue };
            if let Some((_, content, retain)) = left.will.take_if(|(at, _, _)| *at <= now) {
                wills.push((id.clone(), content, retain));
            }
            if client.conn.is_none() && left.expires.as_ref().is_some_and(|(at, _)| *at <= now) {
                expired.push(id.clone());
            }
        }
        for (id, content, retain) in wills {
            self.publish_will(content, retain);
            if let Some(client) = self.mqtt.clients.get(&id)
                && client.conn.is_none()
                && client.left.as_ref().is_some_and(|l| l.expires.is_none() && l.saved == SavedSession::default())
            {
                self.mqtt.clients.remove(&id); // nothing else was kept
            }
            self.will_forget(id);
        }
        for id in expired {
            let left = self.mqtt.clients.remove(&id).and_then(|client| client.left);
            if let Some(Left { expires: Some((_, Some(queue))), .. }) = left.map(|left| *left) {
                tracing::debug!(client = %id, %queue, "mqtt session expired");
                self.meta_nowait(MetaOp::DeleteQueue { name: queue });
            }
        }
        self.publish_sys(now);
    }

    /// Publishes a will (and stores it when retained). Errors are logged: nobody waits.
    pub fn publish_will(&mut self, content: Arc<Content>, retain: bool) {
        if retain {
            self.retain(content.clone(), None);
        }
        if let Err(e) = self.publish(&content.exchange, &content.routing_key, content.clone(), None, || None) {
            tracing::warn!("publishing an MQTT will failed: {e}");
        }
    }

    fn publish_sys(&mut self, now: u64) {
        let started = *self.mqtt.started_ms.get_or_insert(now);
        if now < self.mqtt.sys_next_ms {
            return;
        }
        self.mqtt.sys_next_ms = now + SYS_EVERY_MS;
        let shard = self.id.0;
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let own = SysStats {
            connections: count(self.connection_count()),
            clients_connected: count(self.mqtt.clients.values().filter(|c| c.conn.is_some()).count()),
            clients_total: count(self.mqtt.clients.len()),
            queues: count(self.queues.len()),
            retained: count(self.mqtt.retained.as_ref().map_or(0, HashMap::len)),
        };
        let mut stats = vec![
            (format!("$SYS.broker.shard.{shard}.connections"), own.connections.to_string()),
            (format!("$SYS.broker.shard.{shard}.clients.connected"), own.clients_connected.to_string()),
            (format!("$SYS.broker.shard.{shard}.queues"), own.queues.to_string()),
        ];
        if self.id == crate::shard::AUTHORITY {
            self.mqtt.sys_shards.insert(shard, own);
            // Mosquitto's names, summed over the latest figures of every shard (each at most
            // one period old).
            let total = self.mqtt.sys_shards.values().fold(SysStats::default(), |sum, s| SysStats {
                connections: sum.connections + s.connections,
                clients_connected: sum.clients_connected + s.clients_connected,
                clients_total: sum.clients_total + s.clients_total,
                queues: sum.queues + s.queues,
                retained: sum.retained + s.retained,
            });
            stats.push(("$SYS.broker.version".to_owned(), format!("ferry {}", env!("CARGO_PKG_VERSION"))));
            stats.push(("$SYS.broker.uptime".to_owned(), format!("{} seconds", (now - started) / 1000)));
            stats.push(("$SYS.broker.clients.connected".to_owned(), total.clients_connected.to_string()));
            stats.push(("$SYS.broker.clients.total".to_owned(), total.clients_total.to_string()));
            stats.push(("$SYS.broker.connections".to_owned(), total.connections.to_string()));
            stats.push(("$SYS.broker.queues".to_owned(), total.queues.to_string()));
            stats.push(("$SYS.broker.retained messages.count".to_owned(), total.retained.to_string()));
        } else {
            self.send(crate::shard::AUTHORITY, ShardMsg::SysStats(own));
        }
        for (key, value) in stats {
            let content = Arc::new(Content {
                exchange: "amq.topic".to_owned(),
                routing_key: key,
                properties: Properties::default(),
                body: value.into(),
            });
            self.retain(content.clone(), None);
            let _ = self.publish("amq.topic", &content.routing_key.clone(), content, None, || None);
        }
    }

    /// On the authority: another shard's latest `$SYS` figures.
    pub(super) fn mqtt_sys_stats(&mut self, from: ShardId, stats: SysStats) {
        self.mqtt.sys_shards.insert(from.0, stats);
    }

    /// Stores (or, with an empty body, clears) the retained message of its routing key on
    /// the retained queue's owner; `completion` is reported once that is durable.
    pub fn retain(&mut self, content: Arc<Content>, completion: Option<Completion>) {
        let Some(owner) = self.routing.queue(RETAINED_QUEUE).map(|q| q.shard) else {
            if let Some(c) = completion {
                self.complete(c, Ok(()));
            }
            return;
        };
        if owner == self.id {
            self.retain_local(content, completion);
        } else {
            self.send(owner, ShardMsg::Retain { content, completion });
        }
    }

    pub(super) fn retain_local(&mut self, content: Arc<Content>, completion: Option<Completion>) {
        self.retained_index();
        let key = content.routing_key.clone();
        let old = self.mqtt.retained.as_mut().and_then(|index| index.remove(&key));
        let mut settled = false;
        let replaced = old.and_then(|old| self.queues.get_mut(RETAINED_QUEUE)?.take_ready(old));
        if let Some(m) = replaced
            && m.content.properties.persistent
        {
            self.journal.append_settle(RETAINED_QUEUE, m.msg_id);
            settled = true;
        }
        if content.body.is_empty() {
            // Clearing waits for the settle record's sync, as a publish waits for its enqueue.
            let ready = if settled { completion.and_then(|c| self.journal.after_durable(c)) } else { completion };
            if let Some(c) = ready {
                self.complete(c, Ok(()));
            }
            return;
        }
        if let Some(id) = self.enqueue_local(RETAINED_QUEUE, content, completion, None)
            && let Some(index) = self.mqtt.retained.as_mut()
        {
            index.insert(key, id);
        }
    }

    /// Builds the topic → message index from the queue (after a restart it starts empty);
    /// older copies of one topic (left by a crash between store and settle) are settled.
    fn retained_index(&mut self) {
        if self.mqtt.retained.is_some() {
            return;
        }
        let mut index: HashMap<String, u64> = HashMap::default();
        let mut stale = Vec::new();
        if let Some(queue) = self.queues.get(RETAINED_QUEUE) {
            for m in queue.ready_messages() {
                if let Some(older) = index.insert(m.content.routing_key.clone(), m.msg_id) {
                    stale.push(older.min(m.msg_id));
                    if older > m.msg_id {
                        index.insert(m.content.routing_key.clone(), older);
                    }
                }
            }
        }
        if let Some(queue) = self.queues.get_mut(RETAINED_QUEUE) {
            for id in &stale {
                queue.take_ready(*id);
            }
        }
        for id in stale {
            self.journal.append_settle(RETAINED_QUEUE, id);
        }
        self.mqtt.retained = Some(index);
    }

    /// The retained messages whose topics match any of the AMQP `patterns` (unexpired), with
    /// the milliseconds each has left to live, if it expires.
    pub(super) fn retained_matching(&mut self, patterns: &[String]) -> Vec<(Arc<Content>, Option<u64>)> {
        self.retained_index();
        let now = self.now_ms();
        let compiled: Vec<(TopicPattern, &str)> = patterns.iter().map(|p| (TopicPattern::new(p), p.as_str())).collect();
        let Some(queue) = self.queues.get(RETAINED_QUEUE) else {
            return Vec::new();
        };
        queue
            .ready_messages()
            .filter(|m| m.expires_at_ms.is_none_or(|at| at > now))
            .filter(|m| compiled.iter().any(|(p, raw)| mqtt_pattern_matches(p, raw, &m.content.routing_key)))
            .map(|m| (m.content.clone(), m.expires_at_ms.map(|at| at - now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        let hash = TopicPattern::new("#");
        assert!(!mqtt_pattern_matches(&hash, "#", "$SYS.broker.version"));
        assert!(mqtt_pattern_matches(&hash, "#", "a.b"));
        let sys = TopicPattern::new("$SYS.#");
        assert!(mqtt_pattern_matches(&sys, "$SYS.#", "$SYS.broker.version"));
        let star = TopicPattern::new("*.broker.version");
        assert!(!mqtt_pattern_matches(&star, "*.broker.version", "$SYS.broker.version"));
    }
}
