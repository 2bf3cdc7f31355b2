//! Start-up recovery of one shard: what its log held (durable exchanges — every shard's log
//! has them all, so its bindings find them —, queues with their unsettled persistent
//! messages, bindings, exchange-to-exchange bindings) is declared again through the authority,
//! so every shard's routing table learns it the normal way, and the messages are put back
//! into their queues marked redelivered. A queue that now places on another shard (the shard
//! count changed) has its messages re-published there and settled here once the new owner
//! holds them durably ([`Moves`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use ferry_storage::{Record, Recovered, StoredMessage};
use futures_lite::StreamExt;

use crate::error::EngineError;
use crate::ids::{Completion, ConnectionId};
use crate::journal::recovered_content;
use crate::model::exchange::{ExchangeKind, ExchangeSpec};
use crate::model::message::{Content, QueuedMessage};
use crate::model::routing::{MetaOp, QueueSpec};
use crate::shard::mailbox::{Mailbox, Wake};
use crate::shard::msg::Request;
use crate::shard::{AUTHORITY, Shard, ShardRef};

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
    let (wake, mut woken) = futures_channel::mpsc::unbounded::<()>();
    let mut moves = Moves::new(&mut shard.borrow_mut(), Rc::new(move || drop(wake.unbounded_send(()))));
    for name in &recovered.quarantined {
        tracing::error!(shard = %me, queue = %name, "queue quarantined: its log records are damaged inside the durable region");
    }
    // Queues whose records this start does not take up: compaction would delete them, so
    // none runs before they are kept aside (the requests below yield to the commit task).
    let mut lost = recovered.quarantined.clone();
    shard.borrow_mut().journal_mut().hold_compaction();
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
            tracing::error!(shard = %me, queue = %queue.name, "recovering a queue failed: {e}");
            lost.push(queue.name.clone());
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
            tracing::warn!(queue = %queue.name, to = %owner, count = queue.messages.len(),
                "queue now places on another shard; moving its messages");
            moves.send(&mut s, &queue.messages);
        }
    }
    while !moves.is_done() {
        if woken.next().await.is_none() {
            break;
        }
        moves.settle_arrived(&mut shard.borrow_mut());
    }
    moves.finish(&mut shard.borrow_mut());
    if !lost.is_empty() {
        keep_lost_records(&mut shard.borrow_mut(), &lost);
    }
    shard.borrow_mut().journal_mut().release_compaction();
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

/// Keeps the records of queues this start could not bring back (`lost`): the log's segments,
/// as they are now, are hard-linked into `quarantine-<unix seconds>/` of the shard directory,
/// so compaction, which knows nothing of those records, deletes only the log's own names. If
/// that fails, this shard's log is not compacted until the next start.
fn keep_lost_records(shard: &mut crate::shard::Shard, lost: &[String]) {
    let me = shard.id();
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match shard.journal_mut().keep_segments(&format!("quarantine-{seconds}")) {
        Some(Ok(dir)) => tracing::error!(shard = %me, queues = ?lost, dir = %dir.display(),
            "the log's segments with these queues' records are kept there (hard links) for inspection; \
             the broker serves the rest; delete the directory to free the space"),
        Some(Err(e)) => {
            shard.journal_mut().hold_compaction();
            tracing::error!(shard = %me, queues = ?lost,
                "could not keep these queues' records aside ({e}): this shard's log is not compacted until restart");
        }
        None => {}
    }
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

/// Messages of recovered queues that now place on another shard (the shard count changed),
/// on their way to it. Each goes out as a publish whose completion comes back to a mailbox
/// registered for the purpose, and is settled in this shard's log only when the new owner
/// reports it held: for a persistent message to a durable queue, after the new owner's log
/// sync. Settling at once would let this log's sync overtake the new owner's, and a crash
/// between the two lose the message; settling late at worst moves it twice (a duplicate,
/// marked redelivered). This log keeps every segment while moves are in flight (its live
/// index does not know the moved records), and for good if a move failed (the new owner
/// refused it): the next start tries again.
#[derive(Debug)]
pub struct Moves {
    /// `None` when no connection could be registered (a connection limit of 0): nothing moves.
    conn: Option<(ConnectionId, Rc<RefCell<Mailbox>>)>,
    /// Completion token → the message it moves.
    pending: HashMap<u64, (String, u64)>,
    next_token: u64,
    failed: usize,
}

impl Moves {
    /// Registers the mailbox the completions come back to; `wake` runs when one arrives.
    pub fn new(shard: &mut Shard, wake: Rc<dyn Wake>) -> Moves {
        let conn = shard.register_conn(wake);
        if conn.is_none() {
            tracing::error!("no connection slot for moving recovered messages; they stay where they are");
        }
        shard.journal_mut().hold_compaction();
        Moves { conn, pending: HashMap::new(), next_token: 0, failed: 0 }
    }

    /// Publishes `messages` (of one recovered queue) to the queue's new owner.
    pub fn send(&mut self, shard: &mut Shard, messages: &[StoredMessage]) {
        let Some((conn, _)) = &self.conn else {
            self.failed += messages.len();
            return;
        };
        for m in messages {
            let content: Arc<Content> = recovered_content(m);
            let completion = Completion { conn: *conn, token: self.next_token };
            match shard.publish("", &m.queue, content, None, || Some(completion)) {
                Ok(0) => {
                    tracing::warn!(queue = %m.queue, "moving a recovered message failed: no such queue");
                    self.failed += 1;
                }
                Err(e) => {
                    tracing::warn!(queue = %m.queue, "moving a recovered message failed: {e}");
                    self.failed += 1;
                }
                Ok(_) => {
                    self.pending.insert(self.next_token, (m.queue.clone(), m.msg_id));
                    self.next_token += 1;
                }
            }
        }
    }

    /// Settles, in this shard's log, the moved messages their new owner reported held.
    pub fn settle_arrived(&mut self, shard: &mut Shard) {
        let Some((_, mailbox)) = &self.conn else { return };
        let completions = std::mem::take(&mut mailbox.borrow_mut().completions);
        for (token, result) in completions {
            let Some((queue, msg_id)) = self.pending.remove(&token) else { continue };
            match result {
                Ok(()) => shard.journal_mut().append_settle(&queue, msg_id),
                Err(e) => {
                    tracing::warn!(queue, "the new owner refused a moved message: {e}");
                    self.failed += 1;
                }
            }
        }
    }

    /// Whether every message sent has been answered for.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Unregisters the mailbox; lets compaction go on unless a move failed.
    pub fn finish(self, shard: &mut Shard) {
        if let Some((conn, _)) = self.conn {
            shard.unregister_conn(conn);
        }
        if self.failed == 0 {
            shard.journal_mut().release_compaction();
        } else {
            tracing::warn!(
                count = self.failed,
                "recovered messages could not move to their queue's new shard; \
                they stay in this shard's log, which keeps its segments until a restart moves them"
            );
        }
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
