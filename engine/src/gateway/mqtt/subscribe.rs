//! PUBLISH from the client (routed on `amq.topic`, retained messages stored, PUBACK/PUBREC
//! after every target holds it durably), SUBSCRIBE (a binding per filter whose arguments keep
//! the filter and its options, so a persistent session's subscriptions come back with its
//! queue; `$share/G/F` consumes the group's queue; retained messages per retain handling) and
//! UNSUBSCRIBE.

use std::sync::Arc;

use ferry_mqtt::topic::{SharedFilter, validate_filter};
use ferry_mqtt::{Publish, QoS, ReasonCode, SubOptions, Subscribe, Unsubscribe};

use super::deliver::Pending;
use super::mapping::properties_from_publish;
use super::topic_map::{filter_to_pattern, topic_to_key};
use super::{MqttConn, PendingAck, Sub};
use crate::error::EngineError;
use crate::ids::{Completion, ConsumerKey, ShardId};
use crate::model::message::Content;
use crate::model::queue::Consumer;
use crate::model::routing::MetaOp;
use crate::model::topic::TopicPattern;
use crate::shard::msg::{Reply, Request};

const ARG_FILTER: &str = "x-mqtt-filter";
const ARG_OPTIONS: &str = "x-mqtt-options";

impl MqttConn {
    pub(super) async fn publish(&mut self, publish: Publish) {
        if publish.retain
            && let Err(e) = self.retained_queue().await
        {
            tracing::warn!(conn = %self.id, "retained store unavailable: {e}");
        }
        let client_id = self.client_id.clone().unwrap_or_default();
        let Publish { qos, retain, topic, packet_id, properties, payload, .. } = publish;
        let key = topic_to_key(&topic);
        let props = properties_from_publish(qos, retain, &client_id, properties);
        let content = Arc::new(Content {
            exchange: "amq.topic".to_owned(),
            routing_key: key.clone(),
            properties: props,
            body: payload,
        });
        let token = packet_id.map(|packet_id| {
            let token = self.next_token;
            self.next_token += 1;
            self.acks.insert(token, PendingAck { packet_id, remaining: 0, routed: 0, failed: false });
            token
        });
        let conn = self.id;
        let completion = || token.map(|token| Completion { conn, token });
        if retain {
            // Kept in the log whatever its QoS: retained messages outlive restarts.
            let mut stored = (*content).clone();
            stored.properties.persistent = true;
            self.shard.borrow_mut().retain(Arc::new(stored), completion());
            self.expect(token, 1, 0);
        }
        let routed = self.shard.borrow_mut().publish("amq.topic", &key, content, Some(conn), completion);
        match routed {
            Ok(count) => self.expect(token, count, count),
            Err(e) => {
                tracing::warn!(conn = %self.id, "mqtt publish failed: {e}");
                self.expect(token, 0, 0);
                if let Some(token) = token {
                    self.complete_failed(token);
                }
            }
        }
        if let Some(token) = token {
            self.try_finish(token);
        }
    }

    fn expect(&mut self, token: Option<u64>, remaining: usize, routed: usize) {
        if let Some(pending) = token.and_then(|t| self.acks.get_mut(&t)) {
            pending.remaining += remaining;
            pending.routed += routed;
        }
    }

    fn complete_failed(&mut self, token: u64) {
        if let Some(pending) = self.acks.get_mut(&token) {
            pending.failed = true;
        }
    }

    /// One queue (or the retained store) reported on a publish.
    pub(super) fn complete(&mut self, token: u64, ok: bool) {
        if let Some(pending) = self.acks.get_mut(&token) {
            pending.remaining = pending.remaining.saturating_sub(1);
            pending.failed |= !ok;
        }
        self.try_finish(token);
    }

    fn try_finish(&mut self, token: u64) {
        if self.acks.get(&token).is_none_or(|p| p.remaining > 0) {
            return;
        }
        let Some(pending) = self.acks.remove(&token) else { return };
        let reason = if pending.failed {
            if !self.session.version().is_v5() {
                // 3.1.1 cannot refuse a publish: close, as RabbitMQ does.
                self.session.disconnect(ReasonCode::QUOTA_EXCEEDED, None);
                return;
            }
            ReasonCode::QUOTA_EXCEEDED
        } else if pending.routed == 0 {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        };
        self.session.complete_publish(pending.packet_id, reason);
    }

    pub(super) async fn subscribe(&mut self, subscribe: Subscribe) {
        let Subscribe { packet_id, properties, filters } = subscribe;
        let id = properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for (filter, options) in filters {
            match self.subscribe_one(&filter, options, id).await {
                Ok(new) => {
                    codes.push(ReasonCode(options.qos as u8));
                    let wanted = match options.retain_handling {
                        0 => true,
                        1 => new,
                        _ => false,
                    };
                    if wanted && !filter.starts_with("$share/") {
                        retained.push((filter_to_pattern(&filter), options.qos, id));
                    }
                }
                Err(code) => codes.push(code),
            }
        }
        self.session.send_suback(packet_id, codes);
        for (pattern, qos, id) in retained {
            self.send_retained(pattern, qos, id).await;
        }
    }

    /// Returns whether the subscription is new, or the SUBACK failure code.
    async fn subscribe_one(&mut self, filter: &str, options: SubOptions, id: Option<u32>) -> Result<bool, ReasonCode> {
        let (limits_bytes, limits_levels, subs_max) = {
            let s = self.shard.borrow();
            let l = s.limits();
            (l.topic_bytes_max, l.topic_level_count_max, l.subscription_count_max)
        };
        if validate_filter(filter, limits_bytes, limits_levels).is_err() {
            return Err(ReasonCode::TOPIC_FILTER_INVALID);
        }
        let existing = self.subs.iter().position(|s| s.filter == filter);
        if existing.is_none() && self.subs.len() >= subs_max {
            return Err(ReasonCode::QUOTA_EXCEEDED);
        }
        let result = match SharedFilter::parse(filter).ok().flatten() {
            Some(shared) if existing.is_none() => {
                let pattern = filter_to_pattern(shared.filter);
                self.subscribe_shared(filter, shared.group, pattern, options, id).await
            }
            Some(_) => Ok(()),
            None => self.subscribe_plain(filter, options, id, existing).await,
        };
        result.map(|()| existing.is_none()).map_err(|e| {
            tracing::warn!(conn = %self.id, filter, "mqtt subscribe failed: {e}");
            ReasonCode::UNSPECIFIED_ERROR
        })
    }

    async fn subscribe_plain(
        &mut self,
        filter: &str,
        options: SubOptions,
        id: Option<u32>,
        existing: Option<usize>,
    ) -> Result<(), EngineError> {
        let queue = self.session_queue().await?;
        let pattern = filter_to_pattern(filter);
        if let Some(at) = existing {
            let old = self.subs.remove(at);
            let arguments = binding_arguments(&old.filter, old.options, old.id);
            let op =
                MetaOp::Unbind { exchange: "amq.topic".into(), queue: queue.name.clone(), key: old.pattern, arguments };
            crate::gateway::meta(&self.shard, op).await?;
        }
        let arguments = binding_arguments(filter, options, id);
        let op = MetaOp::Bind { exchange: "amq.topic".into(), queue: queue.name, key: pattern.clone(), arguments };
        crate::gateway::meta(&self.shard, op).await?;
        let compiled = TopicPattern::new(&pattern);
        self.subs.push(Sub { filter: filter.to_owned(), pattern, compiled, options, id, shared: None });
        Ok(())
    }

    async fn subscribe_shared(
        &mut self,
        filter: &str,
        group: &str,
        pattern: String,
        options: SubOptions,
        id: Option<u32>,
    ) -> Result<(), EngineError> {
        let name = format!("mqtt-shared-{group}-{pattern}");
        let owner = self.declare(&name, false, false, Vec::new()).await?;
        let op = MetaOp::Bind {
            exchange: "amq.topic".into(),
            queue: name.clone(),
            key: pattern.clone(),
            arguments: Vec::new(),
        };
        crate::gateway::meta(&self.shard, op).await?;
        let consumer = self.consume(&name, owner).await?;
        let compiled = TopicPattern::new(&pattern);
        let shared = Some((name, owner, consumer));
        self.subs.push(Sub { filter: filter.to_owned(), pattern, compiled, options, id, shared });
        Ok(())
    }

    /// Attaches a consumer to `queue`, with the client's receive maximum as credit.
    pub(super) async fn consume(&mut self, queue: &str, owner: ShardId) -> Result<ConsumerKey, EngineError> {
        let key = ConsumerKey { conn: self.id, tag: self.next_consumer };
        self.next_consumer += 1;
        let consumer =
            Consumer { key, credit_max: self.credit, outstanding: 0, no_ack: false, priority: 0, exclusive: false };
        let request = Request::Consume { queue: queue.to_owned(), consumer };
        crate::gateway::request(&self.shard, owner, request).await?;
        Ok(key)
    }

    /// A subscription of a resumed session, from its binding.
    pub(super) fn restore_sub(&mut self, pattern: String, arguments: &[(String, String)]) {
        let arg = |name: &str| arguments.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let Some(filter) = arg(ARG_FILTER) else { return };
        let (options, id) = parse_options(arg(ARG_OPTIONS).unwrap_or(""));
        let compiled = TopicPattern::new(&pattern);
        self.subs.push(Sub { filter: filter.to_owned(), pattern, compiled, options, id, shared: None });
    }

    async fn send_retained(&mut self, pattern: String, qos: QoS, id: Option<u32>) {
        let owner = match self.retained_queue().await {
            Ok(owner) => owner,
            Err(e) => return tracing::warn!(conn = %self.id, "retained store unavailable: {e}"),
        };
        let request = Request::MqttRetained { patterns: vec![pattern] };
        let Ok(Reply::MqttRetained(messages)) = crate::gateway::request(&self.shard, owner, request).await else {
            return;
        };
        for (content, left_ms) in messages {
            let expiry_left = left_ms.map(|ms| u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX));
            self.backlog.push_back(Pending::Retained { content, qos, id, expiry_left });
        }
        self.flush_backlog();
    }

    pub(super) async fn unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in unsubscribe.filters {
            let Some(at) = self.subs.iter().position(|s| s.filter == filter) else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
                continue;
            };
            let sub = self.subs.remove(at);
            let result = match (sub.shared, &self.queue) {
                (Some((queue, owner, consumer)), _) => {
                    crate::gateway::request(&self.shard, owner, Request::Cancel { queue, consumer }).await.map(|_| ())
                }
                (None, Some(queue)) => {
                    let arguments = binding_arguments(&sub.filter, sub.options, sub.id);
                    let op = MetaOp::Unbind {
                        exchange: "amq.topic".into(),
                        queue: queue.name.clone(),
                        key: sub.pattern,
                        arguments,
                    };
                    crate::gateway::meta(&self.shard, op).await
                }
                (None, None) => Ok(()),
            };
            codes.push(if result.is_ok() { ReasonCode::SUCCESS } else { ReasonCode::UNSPECIFIED_ERROR });
        }
        self.session.send_unsuback(unsubscribe.packet_id, codes);
    }
}

/// Binding arguments that keep a subscription's filter and options with its binding.
fn binding_arguments(filter: &str, options: SubOptions, id: Option<u32>) -> Vec<(String, String)> {
    let mut text = format!("qos={};rh={}", options.qos as u8, options.retain_handling);
    if options.no_local {
        text.push_str(";nl");
    }
    if options.retain_as_published {
        text.push_str(";rap");
    }
    if let Some(id) = id {
        text.push_str(&format!(";id={id}"));
    }
    vec![(ARG_FILTER.to_owned(), filter.to_owned()), (ARG_OPTIONS.to_owned(), text)]
}

fn parse_options(text: &str) -> (SubOptions, Option<u32>) {
    let mut options =
        SubOptions { qos: QoS::AtMostOnce, no_local: false, retain_as_published: false, retain_handling: 0 };
    let mut id = None;
    for part in text.split(';') {
        match part.split_once('=') {
            Some(("qos", v)) => options.qos = v.parse().ok().and_then(QoS::from_u8).unwrap_or(QoS::AtMostOnce),
            Some(("rh", v)) => options.retain_handling = v.parse().unwrap_or(0).min(2),
            Some(("id", v)) => id = v.parse().ok(),
            _ if part == "nl" => options.no_local = true,
            _ if part == "rap" => options.retain_as_published = true,
            _ => {}
        }
    }
    (options, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_binding_arguments() {
        let options =
            SubOptions { qos: QoS::ExactlyOnce, no_local: true, retain_as_published: true, retain_handling: 2 };
        let args = binding_arguments("a/+", options, Some(7));
        assert_eq!(args[0], (ARG_FILTER.to_owned(), "a/+".to_owned()));
        assert_eq!(parse_options(&args[1].1), (options, Some(7)));
        let plain =
            SubOptions { qos: QoS::AtLeastOnce, no_local: false, retain_as_published: false, retain_handling: 0 };
        assert_eq!(parse_options(&binding_arguments("#", plain, None)[1].1), (plain, None));
    }
}
