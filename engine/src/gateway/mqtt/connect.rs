//! CONNECT and close: credentials, client ids (assigned when empty), the client-id claim at
//! its registry shard (an older connection is taken over), clean start and session expiry,
//! resuming a persistent session (its queue's bindings carry each subscription's filter and
//! options), and on close the will (at once, or after the 5.0 will delay via the registry),
//! the session queue's fate and the packet-id state the next connection resumes.

use std::sync::Arc;

use ferry_mqtt::{Connect, ConnectAnswer, ReasonCode, Version};

use super::mapping::properties_from_publish;
use super::topic_map::topic_to_key;
use super::{MqttConn, SessionQueue, expiry_from};
use crate::error::EngineError;
use crate::model::message::Content;
use crate::model::routing::{MetaOp, QueueSpec};
use crate::shard::mqtt::{DelayedWill, MqttRelease, RETAINED_QUEUE, SavedSession};
use crate::shard::msg::{Reply, Request};
use crate::shard::wills::WILLS_QUEUE;

/// Prefix of the durable queue of a session that outlives its connection (RabbitMQ's name).
pub(crate) const SESSION_QUEUE_PREFIX: &str = "mqtt-subscription-";
/// A durable session queue's argument recording the session's 5.0 Session Expiry Interval
/// (seconds; absent: never expires), so that after a restart the session still ends (see
/// `Shard::mqtt_restore`). Written at declaration, and changed (a journaled re-declaration,
/// see [`MqttConn::record_session_expiry`]) when a resuming CONNECT or a DISCONNECT sets
/// another interval. Ferry's own: other arguments' readers ignore it.
pub(crate) const SESSION_EXPIRY_ARGUMENT: &str = "x-ferry-mqtt-session-expiry-s";

/// The registry shard of a client id: where its live connection and what a closed one left
/// are recorded.
pub(crate) fn registry_of(placement: &crate::placement::Placement, client_id: &str) -> crate::ids::ShardId {
    placement.place("/", &format!("mqtt-client/{client_id}"), 0)
}

impl MqttConn {
    pub(super) async fn connect(&mut self, connect: Connect) {
        let password = connect.password.as_ref().map(|p| String::from_utf8_lossy(p).into_owned());
        if let Err(e) = self.users.check(connect.username.as_deref(), password.as_deref(), self.peer.ip()) {
            tracing::info!(conn = %self.id, peer = %self.peer, "mqtt login refused: {}", e.0);
            self.session.refuse_connect(ReasonCode::BAD_USER_NAME_OR_PASSWORD, Some(e.0));
            return;
        }
        let v5 = connect.version == Version::V5;
        let assigned = connect.client_id.is_empty();
        let client_id = if assigned { format!("ferry-{}", self.id) } else { connect.client_id.clone() };
        self.session_expiry = match (v5, connect.clean_start) {
            (true, _) => expiry_from(connect.properties.session_expiry_interval.unwrap_or(0)),
            (false, true) => Some(0),
            (false, false) => None,
        };
        self.credit = u32::from(connect.properties.receive_maximum.unwrap_or(u16::MAX))
            .min(u32::from(self.shard.borrow().limits().inflight_count_max));
        self.will = connect.will.map(Box::new);
        let will_delay = self.will.as_ref().and_then(|w| w.properties.will_delay_interval).unwrap_or(0);
        if will_delay > 0 && self.session_expiry != Some(0) {
            // Where the will is recorded if the connection drops (see `shard::wills`).
            if let Err(e) = self.declare(WILLS_QUEUE, true, false, Vec::new()).await {
                tracing::warn!(conn = %self.id, "a delayed will will not survive a restart: {e}");
            }
        }
        match self.resume(&client_id, connect.clean_start).await {
            Ok((present, saved)) => {
                let answer = ConnectAnswer {
                    session_present: present,
                    assigned_client_id: (assigned && v5).then(|| client_id.clone()),
                    session_expiry: None,
                };
                tracing::debug!(conn = %self.id, client = %client_id, present, "mqtt connected");
                self.client_id = Some(client_id);
                self.session.accept_connect(answer);
                self.session.restore_inbound_received(&saved.inbound_received);
                self.session.restore_releases(&saved.pending_releases);
            }
            Err(e) => {
                tracing::warn!(conn = %self.id, client = %client_id, "mqtt session could not start: {e}");
                self.session.refuse_connect(ReasonCode::SERVER_UNAVAILABLE, Some(e.message));
            }
        }
    }

    /// Claims the client id and sets up (or resumes) its session queue. Returns whether a
    /// session was present and the packet-id state it left.
    async fn resume(&mut self, client_id: &str, clean: bool) -> Result<(bool, SavedSession), EngineError> {
        self.registry = registry_of(self.shard.borrow().placement(), client_id);
        let claim = Request::MqttClaim { client_id: client_id.to_owned(), conn: self.id, clean };
        let (saved, expired) = match crate::gateway::request(&self.shard, self.registry, claim).await? {
            Reply::MqttClaimed { saved, expired } => (saved, expired),
            _ => (SavedSession::default(), false),
        };
        let name = format!("{SESSION_QUEUE_PREFIX}{client_id}");
        let existing = self.shard.borrow().routing().queue(&name).map(|q| q.shard);
        let Some(owner) = existing else {
            return Ok((false, saved));
        };
        if clean || expired {
            crate::gateway::meta(&self.shard, MetaOp::DeleteQueue { name }).await?;
            return Ok((false, SavedSession::default()));
        }
        let bindings = self.shard.borrow().routing().bindings_of(&name);
        for op in bindings {
            if let MetaOp::Bind { exchange, key, arguments, .. } = op
                && exchange == "amq.topic"
            {
                self.restore_sub(key, &arguments);
            }
        }
        let consumer = self.consume(&name, owner).await?;
        self.queue = Some(SessionQueue { name, owner, consumer, durable_name: true });
        self.record_session_expiry().await?;
        Ok((true, saved))
    }

    /// Makes the durable session queue's recorded expiry (see [`SESSION_EXPIRY_ARGUMENT`])
    /// the session's current one, when they differ. Nothing is acknowledged on it: the record
    /// is synced with the log's next group commit, as every declaration is.
    pub(super) async fn record_session_expiry(&self) -> Result<(), EngineError> {
        let Some(queue) = self.queue.as_ref().filter(|q| q.durable_name) else {
            return Ok(());
        };
        let value = self.session_expiry.map(|seconds| seconds.to_string());
        let recorded = self
            .shard
            .borrow()
            .routing()
            .queue(&queue.name)
            .map(|spec| spec.arguments.iter().find(|(k, _)| k == SESSION_EXPIRY_ARGUMENT).map(|(_, v)| v.clone()));
        if recorded.is_none_or(|recorded| recorded == value) {
            return Ok(()); // gone (it cannot be recorded), or already so
        }
        let op = MetaOp::SetQueueArgument { queue: queue.name.clone(), key: SESSION_EXPIRY_ARGUMENT.to_owned(), value };
        crate::gateway::meta(&self.shard, op).await
    }

    /// Makes sure the session queue exists (declared on first subscription).
    pub(super) async fn session_queue(&mut self) -> Result<SessionQueue, EngineError> {
        if let Some(queue) = &self.queue {
            return Ok(queue.clone());
        }
        let client_id = self.client_id.clone().unwrap_or_default();
        let durable = self.session_expiry != Some(0);
        let (name, durable_name) = if durable {
            (format!("{SESSION_QUEUE_PREFIX}{client_id}"), true)
        } else {
            (self.shard.borrow_mut().generate_queue_name(), false)
        };
        let arguments = match self.session_expiry {
            Some(seconds) if durable => vec![(SESSION_EXPIRY_ARGUMENT.to_owned(), seconds.to_string())],
            _ => Vec::new(),
        };
        let owner = self.declare(&name, durable, !durable, arguments).await?;
        let consumer = self.consume(&name, owner).await?;
        let queue = SessionQueue { name, owner, consumer, durable_name };
        self.queue = Some(queue.clone());
        Ok(queue)
    }

    /// Declares a queue (no-op when it exists); `exclusive` ties it to this connection.
    pub(super) async fn declare(
        &self,
        name: &str,
        durable: bool,
        exclusive: bool,
        arguments: Vec<(String, String)>,
    ) -> Result<crate::ids::ShardId, EngineError> {
        if let Some(q) = self.shard.borrow().routing().queue(name) {
            return Ok(q.shard);
        }
        let shard = self.shard.borrow().placement().place("/", name, 0);
        let spec = QueueSpec {
            name: name.to_owned(),
            durable,
            auto_delete: !durable && !exclusive,
            exclusive: exclusive.then_some(self.id),
            arguments,
            shard,
        };
        crate::gateway::meta(&self.shard, MetaOp::DeclareQueue { spec, passive: false, by: Some(self.id) }).await?;
        Ok(shard)
    }

    /// The durable queue of retained messages, declared on first use.
    pub(super) async fn retained_queue(&self) -> Result<crate::ids::ShardId, EngineError> {
        self.declare(RETAINED_QUEUE, true, false, Vec::new()).await
    }

    /// Releases everything the connection held; publishes or hands over the will.
    pub fn close(mut self) {
        let will_delay = self.will.as_ref().and_then(|w| w.properties.will_delay_interval).unwrap_or(0);
        let will = self.will.take().map(|will| {
            let client_id = self.client_id.clone().unwrap_or_default();
            let will = *will;
            let props = properties_from_publish(will.qos, will.retain, &client_id, will.properties);
            let content = Arc::new(Content {
                exchange: "amq.topic".to_owned(),
                routing_key: topic_to_key(&will.topic),
                properties: props,
                body: will.payload,
            });
            (content, will.retain)
        });
        // The will waits no longer than the session lives (§3.1.3.2.2).
        let delay_s = match self.session_expiry {
            Some(expiry) => will_delay.min(expiry),
            None => will_delay,
        };
        let mut delayed = None;
        {
            let mut shard = self.shard.borrow_mut();
            if let Some((content, retain)) = will {
                if delay_s == 0 || self.client_id.is_none() {
                    shard.publish_will(content, retain);
                } else {
                    delayed = Some(DelayedWill { delay_ms: u64::from(delay_s) * 1000, content, retain });
                }
            }
            for sub in self.subs.drain(..) {
                if let Some((queue, owner, consumer)) = sub.shared {
                    shard.cancel_nowait(owner, &queue, consumer);
                }
            }
            if let Some(queue) = &self.queue {
                shard.cancel_nowait(queue.owner, &queue.name, queue.consumer);
                let ends = self.session_expiry == Some(0);
                if !queue.durable_name || (ends && !self.taken_over) {
                    shard.meta_nowait(MetaOp::DeleteQueue { name: queue.name.clone() });
                }
            }
        }
        if let Some(client_id) = self.client_id.take() {
            let saved = SavedSession {
                inbound_received: self.session.inbound_received(),
                pending_releases: self.session.pending_releases(),
            };
            let release = MqttRelease {
                client_id,
                conn: self.id,
                saved,
                will: delayed,
                session_expiry_ms: self.session_expiry.map(|s| u64::from(s) * 1000),
                session_queue: self.queue.as_ref().filter(|q| q.durable_name).map(|q| q.name.clone()),
            };
            self.shard.borrow_mut().mqtt_release_to(self.registry, release);
        }
        self.shard.borrow_mut().unregister_conn(self.id);
        tracing::debug!(conn = %self.id, clean = self.disconnected, "mqtt connection closed");
    }
}
