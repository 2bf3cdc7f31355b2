//! Start-up recovery of one shard: what its log held (durable exchanges — every shard's log
//! has them all, so its bindings find them —, queues with their unsettled persistent
//! messages, bindings, exchange-to-exchange bindings) is declared again through the authority,
//! so every shard's routing table learns it the normal way, and the messages are put back
//! into their queues marked redelivered. A queue that now places on another shard (the shard
//! count changed) has its messages re-published there and settled here.

use std::sync::Arc;

use ferry_storage::{Record, Recovered};

use crate::error::EngineError;
use crate::ids::ShardId;
use crate::journal::recovered_content;
use crate::model::exchange::{ExchangeKind, ExchangeSpec};
use crate::model::message::QueuedMessage;
use crate::model::routing::{MetaOp, QueueSpec};
use crate::shard::msg::Request;
use crate::shard::{AUTHORITY, ShardRef};

/// Counts of what came back, for the start-up log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    pub queues: usize,
    pub messages: usize,
    pub bindings: usize,
}

async fn meta(shard: &ShardRef, op: MetaOp) -> Result<(), EngineError> {
    let rx = shard.borrow_mut().request(AUTHORITY, Request::Meta(op));
    match rx.await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(EngineError::new(crate::error::ErrorKind::InternalError, "authority went away")),
    }
}

/// Re-declares and refills everything `recovered` holds. Errors are logged, not fatal: a
/// queue that cannot come back must not keep the rest of the broker down.
pub async fn recover(shard: &ShardRef, recovered: Recovered) -> RecoveryReport {
    let mut report = RecoveryReport::default();
    let me = shard.borrow().id();
    for name in &recovered.quarantined {
        tracing::error!(shard = %me, queue = %name, "queue quarantined: its log records are damaged inside the durable region");
    }
    for record in recovered.exchanges {
        if let Record::ExchangeDeclare { name, kind, durable, auto_delete, internal, arguments } = record {
            let Some(kind) = ExchangeKind::parse(&kind) else {
                continue;
            };
            let spec = ExchangeSpec { name, kind, durable, auto_delete, internal, arguments };
            if let Err(e) = meta(shard, MetaOp::DeclareExchange { spec, passive: false }).await {
                tracing::warn!(shard = %me, "recovering an exchange failed: {e}");
            }
        }
    }
    for queue in recovered.queues {
        let owner = shard.borrow().placement().place("/", &queue.name, 0);
        let mqtt_session = mqtt_session_expiry(&queue.name, &queue.arguments);
        let spec = QueueSpec {
            name: queue.name.clone(),
            durable: true,
            auto_delete: queue.auto_delete,
            exclusive: None,
            arguments: queue.arguments,
            shard: owner,
        };
        if let Err(e) = meta(shard, MetaOp::DeclareQueue { spec, passive: false, by: None }).await {
            tracing::warn!(shard = %me, queue = %queue.name, "recovering a queue failed: {e}");
            continue;
        }
        report.queues += 1;
        report.messages += queue.messages.len();
        let mut s = shard.borrow_mut();
        if let Some((client_id, expiry_ms)) = mqtt_session {
            let registry = crate::gateway::mqtt::connect::registry_of(s.placement(), &client_id);
            s.mqtt_restore_to(registry, client_id, expiry_ms, queue.name.clone());
        }
        if owner == me {
            // Written again so the journal knows where every live message sits (compaction
            // needs it); recovery keeps the newest copy of a (queue, id).
            let messages: Vec<QueuedMessage> = queue
                .messages
                .iter()
                .map(|m| QueuedMessage {
                    msg_id: m.msg_id,
                    content: recovered_content(m),
                    redelivered: true,
                    expires_at_ms: None,
                })
                .collect();
            for m in &messages {
                s.journal_mut().append_enqueue(&queue.name, m.msg_id, &m.content);
            }
            s.restore_messages(&queue.name, messages);
            if queue.name == crate::shard::wills::WILLS_QUEUE {
                s.mqtt_wills_recovered();
            }
        } else {
            moved(&mut s, &queue.name, owner, &queue.messages);
        }
    }
    for record in recovered.bindings {
        if let Record::Bind { exchange, queue, routing_key, arguments } = record {
            let op = match queue.strip_prefix(crate::journal::EXCHANGE_DESTINATION_MARK) {
                Some(destination) => {
                    let destination = destination.to_owned();
                    MetaOp::BindExchange { source: exchange, destination, key: routing_key, arguments }
                }
                None => MetaOp::Bind { exchange, queue, key: routing_key, arguments },
            };
            match meta(shard, op).await {
                Ok(()) => report.bindings += 1,
                Err(e) => tracing::warn!(shard = %me, "recovering a binding failed: {e}"),
            }
        }
    }
    report
}

/// A durable MQTT session queue that recorded its Session Expiry Interval: the client id and
/// the interval in ms. The argument is only written by the MQTT gateway (a 5.0 interval is a
/// u32), but an AMQP client can declare a queue of that name with any value: anything that is
/// not a u32 is ignored rather than trusted.
fn mqtt_session_expiry(name: &str, arguments: &[(String, String)]) -> Option<(String, u64)> {
    use crate::gateway::mqtt::connect::{SESSION_EXPIRY_ARGUMENT, SESSION_QUEUE_PREFIX};
    let client_id = name.strip_prefix(SESSION_QUEUE_PREFIX)?;
    let seconds: u32 = arguments.iter().find(|(k, _)| k == SESSION_EXPIRY_ARGUMENT)?.1.parse().ok()?;
    Some((client_id.to_owned(), u64::from(seconds) * 1000))
}

/// Hands a recovered queue's messages to its new owner and settles them in this log.
fn moved(shard: &mut crate::shard::Shard, queue: &str, owner: ShardId, messages: &[ferry_storage::StoredMessage]) {
    tracing::warn!(queue, to = %owner, count = messages.len(), "queue now places on another shard; moving its messages");
    for m in messages {
        let content: Arc<_> = recovered_content(m);
        if let Err(e) = shard.publish("", queue, content, None, || None) {
            tracing::warn!(queue, "moving a recovered message failed: {e}");
            continue;
        }
        shard.journal_mut().append_settle(queue, m.msg_id);
    }
}

#[cfg(test)]
mod tests {
    use super::mqtt_session_expiry;

    #[test]
    fn only_a_session_queue_with_a_u32_interval_is_restored() {
        let arg = |v: &str| vec![("x-ferry-mqtt-session-expiry-s".to_owned(), v.to_owned())];
        assert_eq!(mqtt_session_expiry("mqtt-subscription-c1", &arg("60")), Some(("c1".to_owned(), 60_000)));
        let most = u64::from(u32::MAX) * 1000;
        assert_eq!(mqtt_session_expiry("mqtt-subscription-c1", &arg("4294967295")), Some(("c1".to_owned(), most)));
        // Declared by hand over AMQP: too large, negative or not a number, or another queue.
        for bad in ["18446744073709551615", "-1", "soon", ""] {
            assert_eq!(mqtt_session_expiry("mqtt-subscription-c1", &arg(bad)), None, "{bad}");
        }
        assert_eq!(mqtt_session_expiry("orders", &arg("60")), None);
        assert_eq!(mqtt_session_expiry("mqtt-subscription-c1", &[]), None);
    }
}
