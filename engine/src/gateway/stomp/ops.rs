//! The operations behind STOMP client frames: SEND (publish, with destination declaration
//! and `reply-to` temp queues), SUBSCRIBE/UNSUBSCRIBE, ACK/NACK and transactions.

use std::sync::Arc;

use bytes::Bytes;
use ferry_stomp::AckMode;

use super::destination::{Destination, binding_pattern};
use super::mapping::properties_from_send;
use super::subscription::Subscription;
use super::{StompConn, TxOp};
use crate::error::{EngineError, ErrorKind};
use crate::ids::{Completion, ShardId};
use crate::model::message::Content;
use crate::model::queue::Consumer;
use crate::model::routing::{MetaOp, QueueSpec};
use crate::shard::msg::{Reply, Request};

/// A transaction's operation, ready to take effect without waiting.
enum Prepared {
    Send(Arc<Content>),
    Settle { id: String, nack: Option<bool> },
}

/// How a queue should be declared.
struct QueueDecl {
    name: String,
    durable: bool,
    auto_delete: bool,
    exclusive: bool,
}

impl StompConn {
    async fn request(&self, to: ShardId, request: Request) -> Result<Reply, EngineError> {
        crate::gateway::request(&self.shard, to, request).await
    }

    async fn meta(&self, op: MetaOp) -> Result<(), EngineError> {
        crate::gateway::meta(&self.shard, op).await
    }

    async fn declare(&mut self, decl: QueueDecl) -> Result<ShardId, EngineError> {
        if let Some(q) = self.shard.borrow().routing().queue(&decl.name) {
            return Ok(q.shard);
        }
        let shard = self.shard.borrow().placement().place("/", &decl.name, 0);
        let exclusive = decl.exclusive.then_some(self.id);
        let spec = QueueSpec {
            name: decl.name.clone(),
            durable: decl.durable,
            auto_delete: decl.auto_delete,
            exclusive,
            arguments: Vec::new(),
            shard,
        };
        self.meta(MetaOp::DeclareQueue { spec, passive: false, by: Some(self.id) }).await?;
        if decl.exclusive {
            self.exclusive_queues.push(decl.name);
        }
        Ok(shard)
    }

    fn existing(&self, name: &str) -> Result<ShardId, EngineError> {
        let shard = self.shard.borrow();
        shard
            .routing()
            .queue(name)
            .map(|q| q.shard)
            .ok_or_else(|| EngineError::new(ErrorKind::NotFound, format!("NOT_FOUND - no queue '{name}' in vhost '/'")))
    }

    /// The generated queue behind `/temp-queue/NAME` for this connection, created on first use.
    async fn temp_queue(&mut self, name: &str) -> Result<String, EngineError> {
        if let Some((queue, _)) = self.temp_queues.get(name) {
            return Ok(queue.clone());
        }
        // Each temp queue is a queue plus an implicit subscription: same bound as subscriptions.
        let limit = self.shard.borrow().limits().subscription_count_max;
        if self.temp_queues.len() >= limit {
            let msg = format!("too many temp queues on this connection (max {limit})");
            return Err(EngineError::new(ErrorKind::ResourceError, msg));
        }
        let queue = self.shard.borrow_mut().generate_queue_name();
        let decl = QueueDecl { name: queue.clone(), durable: false, auto_delete: false, exclusive: true };
        self.declare(decl).await?;
        self.temp_queues.insert(name.to_owned(), (queue.clone(), false));
        Ok(queue)
    }

    pub(super) async fn send(
        &mut self,
        destination: String,
        transaction: Option<String>,
        receipt: Option<String>,
        headers: Vec<ferry_stomp::Header>,
        body: Bytes,
    ) {
        if let Some(tx) = transaction {
            let op = TxOp::Send { destination, headers, body };
            self.buffer(&tx, op, receipt);
            return;
        }
        let token = receipt.clone().map(|r| self.receipts.open(0, Some(r)));
        if let Err(e) = self.publish(&destination, headers, body, token).await {
            self.fail("Message not sent", &e.message, receipt.as_deref());
        }
    }

    /// Publishes one SEND; its completions count against `token`.
    async fn publish(
        &mut self,
        destination: &str,
        headers: Vec<ferry_stomp::Header>,
        body: Bytes,
        token: Option<u64>,
    ) -> Result<(), EngineError> {
        let content = self.prepare_send(destination, headers, body).await?;
        self.publish_prepared(content, token)
    }

    /// What a SEND publishes, once the queues its destination and `reply-to` need exist
    /// (the part of a publish that waits on other shards).
    async fn prepare_send(
        &mut self,
        destination: &str,
        headers: Vec<ferry_stomp::Header>,
        body: Bytes,
    ) -> Result<Arc<Content>, EngineError> {
        let parsed = Destination::parse(destination).map_err(|e| EngineError::new(ErrorKind::NotFound, e.0))?;
        let (exchange, key) = match parsed {
            Destination::Queue(name) => {
                let decl = QueueDecl { name: name.clone(), durable: true, auto_delete: false, exclusive: false };
                self.declare(decl).await?;
                (String::new(), name)
            }
            Destination::AmqQueue(name) | Destination::ReplyQueue(name) => (String::new(), name),
            Destination::Topic(key) => ("amq.topic".to_owned(), key),
            Destination::Exchange { exchange, key } => (exchange, key),
            Destination::TempQueue(name) => (String::new(), self.temp_queue(&name).await?),
        };
        let mut properties = properties_from_send(&headers);
        if let Some(reply_to) = properties.reply_to.clone()
            && let Some(name) = reply_to.strip_prefix("/temp-queue/")
        {
            let queue = self.temp_queue(name).await?;
            self.ensure_temp_subscription(name, &queue).await?;
            properties.extra_mut().reply_to = Some(format!("/reply-queue/{queue}"));
        }
        Ok(Arc::new(Content { exchange, routing_key: key, properties, body }))
    }

    /// Publishes what [`StompConn::prepare_send`] made; its completions count against `token`.
    fn publish_prepared(&mut self, content: Arc<Content>, token: Option<u64>) -> Result<(), EngineError> {
        let conn = self.id;
        let completion = || token.map(|token| Completion { conn, token });
        let (exchange, key) = (&content.exchange, &content.routing_key);
        let count = self.shard.borrow_mut().publish(exchange, key, Arc::clone(&content), Some(conn), completion)?;
        if let Some(token) = token {
            self.receipts.expect(token, count);
        }
        Ok(())
    }

    /// The implicit auto-ack subscription that receives replies sent to a temp queue.
    async fn ensure_temp_subscription(&mut self, name: &str, queue: &str) -> Result<(), EngineError> {
        if self.temp_queues.get(name).is_some_and(|(_, subscribed)| *subscribed) {
            return Ok(());
        }
        let id = format!("/temp-queue/{name}");
        if !self.subs.contains(&id) {
            self.start_consumer(id, queue.to_owned(), AckMode::Auto, None, false).await?;
        }
        if let Some(entry) = self.temp_queues.get_mut(name) {
            entry.1 = true;
        }
        Ok(())
    }

    pub(super) async fn subscribe(
        &mut self,
        id: String,
        destination: &str,
        ack: AckMode,
        receipt: Option<String>,
        headers: &[ferry_stomp::Header],
    ) {
        let result = self.try_subscribe(id, destination, ack, headers).await;
        match result {
            Ok(()) => {
                self.receipts.open(0, receipt);
            }
            Err(e) => self.fail("Subscription failed", &e.message, receipt.as_deref()),
        }
    }

    async fn try_subscribe(
        &mut self,
        id: String,
        destination: &str,
        ack: AckMode,
        headers: &[ferry_stomp::Header],
    ) -> Result<(), EngineError> {
        let limit = self.shard.borrow().limits().subscription_count_max;
        if self.subs.len() >= limit {
            return Err(EngineError::new(ErrorKind::ResourceError, format!("too many subscriptions (max {limit})")));
        }
        if self.subs.contains(&id) {
            let msg = format!("Duplicated subscription identifier '{id}'");
            return Err(EngineError::new(ErrorKind::PreconditionFailed, msg));
        }
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let parsed = Destination::parse(destination).map_err(|e| EngineError::new(ErrorKind::NotFound, e.0))?;
        let (queue, private) = match parsed {
            Destination::Queue(name) => {
                let decl = QueueDecl { name: name.clone(), durable: true, auto_delete: false, exclusive: false };
                self.declare(decl).await?;
                (name, false)
            }
            Destination::AmqQueue(name) | Destination::ReplyQueue(name) => {
                self.existing(&name)?;
                (name, false)
            }
            Destination::Topic(pattern) => self.bind_private("amq.topic", &pattern, &id, header("durable")).await?,
            Destination::Exchange { exchange, key } => {
                self.bind_private(&exchange, &key, &id, header("durable")).await?
            }
            Destination::TempQueue(name) => {
                let queue = self.temp_queue(&name).await?;
                if let Some(entry) = self.temp_queues.get_mut(&name) {
                    entry.1 = true;
                }
                (queue, false)
            }
        };
        let prefetch = header("prefetch-count").or_else(|| header("activemq.prefetchSize"));
        self.start_consumer(id, queue, ack, prefetch, private).await
    }

    /// A private queue bound to `exchange` with `key` (a durable named one for `durable:true`).
    async fn bind_private(
        &mut self,
        exchange: &str,
        key: &str,
        id: &str,
        durable: Option<&str>,
    ) -> Result<(String, bool), EngineError> {
        if self.shard.borrow().routing().exchange(exchange).is_none() {
            return Err(EngineError::new(
                ErrorKind::NotFound,
                format!("NOT_FOUND - no exchange '{exchange}' in vhost '/'"),
            ));
        }
        let durable = durable.is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let (name, private) = if durable {
            (format!("stomp-subscription-{id}"), false)
        } else {
            (self.shard.borrow_mut().generate_queue_name(), true)
        };
        let decl = QueueDecl { name: name.clone(), durable, auto_delete: private, exclusive: private };
        self.declare(decl).await?;
        let op = MetaOp::Bind {
            exchange: exchange.to_owned(),
            queue: name.clone(),
            key: binding_pattern(key),
            arguments: Vec::new(),
        };
        self.meta(op).await?;
        Ok((name, private))
    }

    async fn start_consumer(
        &mut self,
        id: String,
        queue: String,
        ack: AckMode,
        prefetch: Option<&str>,
        private: bool,
    ) -> Result<(), EngineError> {
        let owner = self.existing(&queue)?;
        let (default, max) = {
            let shard = self.shard.borrow();
            (shard.limits().prefetch_count_default, shard.limits().prefetch_count_max)
        };
        let credit_max = match prefetch.map(str::parse::<i64>) {
            None => default,
            Some(Ok(n)) if n <= 0 => max,
            Some(Ok(n)) => u32::try_from(n).unwrap_or(max).min(max),
            Some(Err(_)) => {
                return Err(EngineError::new(ErrorKind::PreconditionFailed, "prefetch-count must be a number"));
            }
        };
        let key = self.subs.next_consumer();
        let mut sub = Subscription::new(id.clone(), queue.clone(), owner, key, ack);
        sub.private_queue = private;
        self.subs.insert(sub);
        let consumer =
            Consumer { key, credit_max, outstanding: 0, no_ack: ack == AckMode::Auto, priority: 0, exclusive: false };
        if let Err(e) = self.request(owner, Request::Consume { queue, consumer }).await {
            self.subs.remove(&id);
            return Err(e);
        }
        Ok(())
    }

    pub(super) async fn unsubscribe(&mut self, id: &str, receipt: Option<String>) {
        let Some(sub) = self.subs.remove(id) else {
            self.fail("Bad UNSUBSCRIBE", &format!("no subscription '{id}'"), receipt.as_deref());
            return;
        };
        let cancel = Request::Cancel { queue: sub.queue.clone(), consumer: sub.consumer };
        // Errors here mean the queue is already gone, which is what unsubscribing wants.
        let _ = self.request(sub.owner, cancel).await;
        if sub.private_queue {
            self.exclusive_queues.retain(|q| *q != sub.queue);
            let _ = self.meta(MetaOp::DeleteQueue { name: sub.queue }).await;
        }
        self.receipts.open(0, receipt);
    }

    pub(super) fn ack(&mut self, id: String, transaction: Option<String>, receipt: Option<String>, nack: Option<bool>) {
        if let Some(tx) = transaction {
            let op = match nack {
                None => TxOp::Ack { id },
                Some(requeue) => TxOp::Nack { id, requeue },
            };
            self.buffer(&tx, op, receipt);
            return;
        }
        if !self.subs.knows_ack(&id) {
            let frame = if nack.is_some() { "NACK" } else { "ACK" };
            let detail = format!("{frame} names '{id}', which is no unacknowledged delivery of this connection");
            self.fail("Invalid header", &detail, receipt.as_deref());
            return;
        }
        let token = receipt.map(|r| self.receipts.open(0, Some(r)));
        if let Err(detail) = self.settle(&id, nack, token) {
            self.fail("Invalid header", &detail, None);
        }
    }

    /// Settles what `id` names; `token` (a receipt) completes once the settlement is durable.
    /// An id that names no unacked delivery of this connection is an error, as in RabbitMQ.
    fn settle(&mut self, id: &str, nack: Option<bool>, token: Option<u64>) -> Result<(), String> {
        let Some(target) = self.subs.take_acks(id) else {
            let frame = if nack.is_some() { "NACK" } else { "ACK" };
            return Err(format!("{frame} names '{id}', which is no unacknowledged delivery of this connection"));
        };
        let completion = token.map(|token| Completion { conn: self.id, token });
        if let Some(token) = token {
            self.receipts.expect(token, 1);
        }
        self.shard.borrow_mut().settle(target.owner, target.queue, target.tags, nack, completion);
        Ok(())
    }

    fn buffer(&mut self, tx: &str, op: TxOp, receipt: Option<String>) {
        let limit = self.shard.borrow().limits().transaction_op_count_max;
        match self.transactions.get_mut(tx) {
            None => self.fail("Bad transaction", &format!("transaction '{tx}' is not active"), receipt.as_deref()),
            Some(ops) if ops.len() >= limit => {
                self.fail(
                    "Bad transaction",
                    &format!("transaction '{tx}' exceeds {limit} operations"),
                    receipt.as_deref(),
                );
            }
            Some(ops) => {
                ops.push(op);
                self.receipts.open(0, receipt);
            }
        }
    }

    pub(super) fn begin(&mut self, tx: String, receipt: Option<String>) {
        let limit = self.shard.borrow().limits().transaction_count_max;
        if self.transactions.contains_key(&tx) {
            self.fail("Bad transaction", &format!("transaction '{tx}' is already active"), receipt.as_deref());
        } else if self.transactions.len() >= limit {
            self.fail("Bad transaction", &format!("too many open transactions (max {limit})"), receipt.as_deref());
        } else {
            self.transactions.insert(tx, Vec::new());
            self.receipts.open(0, receipt);
        }
    }

    pub(super) async fn commit(&mut self, tx: &str, receipt: Option<String>) {
        let Some(ops) = self.transactions.remove(tx) else {
            self.fail("Bad transaction", &format!("transaction '{tx}' is not active"), receipt.as_deref());
            return;
        };
        let token = self.receipts.open(0, receipt.clone());
        // What waits on other shards (declaring destinations) comes first, so that nothing
        // else runs while the transaction takes effect: each queue owner then applies and
        // logs its share as one record.
        let mut prepared = Vec::with_capacity(ops.len());
        for op in ops {
            let ready = match op {
                TxOp::Send { destination, headers, body } => match self.prepare_send(&destination, headers, body).await
                {
                    Ok(content) => Prepared::Send(content),
                    Err(e) => {
                        self.fail("Transaction failed", &e.message, receipt.as_deref());
                        return;
                    }
                },
                TxOp::Ack { id } => Prepared::Settle { id, nack: None },
                TxOp::Nack { id, requeue } => Prepared::Settle { id, nack: Some(requeue) },
            };
            prepared.push(ready);
        }
        self.shard.borrow_mut().begin_transaction();
        let mut result = Ok(());
        for op in prepared {
            result = match op {
                Prepared::Send(content) => self.publish_prepared(content, Some(token)).map_err(|e| e.message),
                Prepared::Settle { id, nack } => self.settle(&id, nack, Some(token)),
            };
            if result.is_err() {
                break;
            }
        }
        self.shard.borrow_mut().end_transaction();
        if let Err(detail) = result {
            self.fail("Transaction failed", &detail, receipt.as_deref());
        }
    }

    pub(super) fn abort(&mut self, tx: &str, receipt: Option<String>) {
        if self.transactions.remove(tx).is_none() {
            self.fail("Bad transaction", &format!("transaction '{tx}' is not active"), receipt.as_deref());
        } else {
            self.receipts.open(0, receipt);
        }
    }
}
