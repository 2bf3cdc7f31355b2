//! The channel methods of AMQP 0-9-1 mapped onto the engine: exchange and queue declaration,
//! binding, purge and deletion through the metadata authority or the queue's owner; basic.qos,
//! consume, cancel, get, ack/nack/reject and recover; confirm.select; tx.select/commit/rollback;
//! basic.publish (mandatory -> basic.return 312 NO_ROUTE, confirms once every target queue
//! holds the message, durably when persistent).

use std::sync::Arc;

use bytes::Bytes;
use ferry_amqp091 as amqp;
use ferry_amqp091::{BasicProperties, BasicPublish, Method};

use super::AmqpConn;
use super::PendingConfirm;
use super::channel::{ChannelConsumer, TxOp};
use super::mapping::{pairs, properties_from_amqp};
use crate::error::{EngineError, ErrorKind};
use crate::ids::{Completion, ShardId};
use crate::model::exchange::{ExchangeKind, ExchangeSpec};
use crate::model::message::Content;
use crate::model::queue::Consumer;
use crate::model::routing::{MetaOp, QueueSpec};
use crate::shard::msg::{Reply, Request};

fn error(kind: ErrorKind, message: impl Into<String>) -> EngineError {
    EngineError::new(kind, message)
}

impl AmqpConn {
    async fn request(&self, to: ShardId, request: Request) -> Result<Reply, EngineError> {
        crate::gateway::request(&self.shard, to, request).await
    }

    async fn meta(&self, op: MetaOp) -> Result<(), EngineError> {
        crate::gateway::meta(&self.shard, op).await
    }

    fn owner_of(&self, queue: &str) -> Result<ShardId, EngineError> {
        let shard = self.shard.borrow();
        let q = shard
            .routing()
            .queue(queue)
            .ok_or_else(|| error(ErrorKind::NotFound, format!("no queue '{queue}' in vhost '/'")))?;
        if let Some(owner) = q.exclusive
            && owner != self.id
        {
            return Err(error(
                ErrorKind::ResourceLocked,
                format!("cannot obtain exclusive access to locked queue '{queue}' in vhost '/'"),
            ));
        }
        Ok(q.shard)
    }

    pub(super) async fn method(&mut self, channel: u16, method: Method) {
        if !self.channels.contains_key(&channel) {
            return;
        }
        let reply = self.perform(channel, &method).await;
        match reply {
            Ok(Some(reply)) => self.conn.send_method(channel, &reply),
            Ok(None) => {}
            Err(e) => self.channel_error(channel, &e, &method),
        }
    }

    async fn perform(&mut self, channel: u16, method: &Method) -> Result<Option<Method>, EngineError> {
        match method {
            Method::ExchangeDeclare(m) => self.exchange_declare(m).await,
            Method::ExchangeDelete(m) => {
                self.meta(MetaOp::DeleteExchange { name: m.exchange.clone(), if_unused: m.if_unused }).await?;
                Ok((!m.nowait).then(|| Method::ExchangeDeleteOk(amqp::ExchangeDeleteOk {})))
            }
            Method::ExchangeBind(m) => {
                let op = MetaOp::BindExchange {
                    source: m.source.clone(),
                    destination: m.destination.clone(),
                    key: m.routing_key.clone(),
                    arguments: pairs(&m.arguments),
                };
                self.meta(op).await?;
                Ok((!m.nowait).then(|| Method::ExchangeBindOk(amqp::ExchangeBindOk {})))
            }
            Method::ExchangeUnbind(m) => {
                let op = MetaOp::UnbindExchange {
                    source: m.source.clone(),
                    destination: m.destination.clone(),
                    key: m.routing_key.clone(),
                    arguments: pairs(&m.arguments),
                };
                self.meta(op).await?;
                Ok((!m.nowait).then(|| Method::ExchangeUnbindOk(amqp::ExchangeUnbindOk {})))
            }
            Method::QueueDeclare(m) => self.queue_declare(m).await,
            Method::QueueBind(m) => {
                let op = MetaOp::Bind {
                    exchange: m.exchange.clone(),
                    queue: m.queue.clone(),
                    key: m.routing_key.clone(),
                    arguments: pairs(&m.arguments),
                };
                self.meta(op).await?;
                Ok((!m.nowait).then(|| Method::QueueBindOk(amqp::QueueBindOk {})))
            }
            Method::QueueUnbind(m) => {
                let op = MetaOp::Unbind {
                    exchange: m.exchange.clone(),
                    queue: m.queue.clone(),
                    key: m.routing_key.clone(),
                    arguments: pairs(&m.arguments),
                };
                self.meta(op).await?;
                Ok(Some(Method::QueueUnbindOk(amqp::QueueUnbindOk {})))
            }
            Method::QueuePurge(m) => {
                let owner = self.owner_of(&m.queue)?;
                let Reply::Purged(n) = self.request(owner, Request::Purge { queue: m.queue.clone() }).await? else {
                    return Err(error(ErrorKind::InternalError, "unexpected reply to purge"));
                };
                Ok((!m.nowait).then(|| Method::QueuePurgeOk(amqp::QueuePurgeOk { message_count: n as u32 })))
            }
            Method::QueueDelete(m) => self.queue_delete(m).await,
            Method::BasicQos(m) if m.prefetch_size != 0 => self.not_implemented("prefetch_size!=0", method),
            Method::BasicQos(m) => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.prefetch = m.prefetch_count;
                }
                Ok(Some(Method::BasicQosOk(amqp::BasicQosOk {})))
            }
            Method::BasicConsume(m) => self.consume(channel, m).await,
            Method::BasicCancel(m) => self.cancel(channel, m).await,
            Method::BasicGet(m) => self.get(channel, m).await.map(|()| None),
            Method::BasicAck(m) => self.settle_or_buffer(channel, m.delivery_tag, m.multiple, None),
            Method::BasicNack(m) => self.settle_or_buffer(channel, m.delivery_tag, m.multiple, Some(m.requeue)),
            Method::BasicReject(m) => self.settle_or_buffer(channel, m.delivery_tag, false, Some(m.requeue)),
            Method::BasicRecover(amqp::BasicRecover { requeue: false })
            | Method::BasicRecoverAsync(amqp::BasicRecoverAsync { requeue: false }) => {
                self.not_implemented("requeue=false", method)
            }
            Method::BasicRecover(_) | Method::BasicRecoverAsync(_) => {
                self.recover(channel);
                Ok(matches!(method, Method::BasicRecover(_)).then(|| Method::BasicRecoverOk(amqp::BasicRecoverOk {})))
            }
            Method::ConfirmSelect(m) => self.confirm_select(channel, m.nowait),
            Method::TxSelect(_) => self.tx_select(channel),
            Method::TxCommit(_) => self.tx_commit(channel).await,
            Method::TxRollback(_) => {
                let ch = self.channels.get_mut(&channel).ok_or_else(|| error(ErrorKind::InternalError, "channel"))?;
                match ch.tx.as_mut() {
                    Some(ops) => ops.clear(),
                    None => return Err(error(ErrorKind::PreconditionFailed, "channel is not transactional")),
                }
                Ok(Some(Method::TxRollbackOk(amqp::TxRollbackOk {})))
            }
            Method::ChannelFlow(amqp::ChannelFlow { active: false }) => self.not_implemented("active=false", method),
            Method::ChannelFlow(m) => Ok(Some(Method::ChannelFlowOk(amqp::ChannelFlowOk { active: m.active }))),
            other => Err(error(
                ErrorKind::PreconditionFailed,
                format!("method {}.{} is not supported on a channel", other.class_id(), other.method_id()),
            )),
        }
    }

    /// What RabbitMQ does with the parts of AMQP it leaves out: a connection error 540.
    fn not_implemented(&mut self, what: &str, method: &Method) -> Result<Option<Method>, EngineError> {
        let text = format!("NOT_IMPLEMENTED - {what}");
        self.conn.close_connection(amqp::NOT_IMPLEMENTED, &text, method.class_id(), method.method_id());
        Ok(None)
    }

    async fn exchange_declare(&mut self, m: &amqp::ExchangeDeclare) -> Result<Option<Method>, EngineError> {
        let Some(kind) = ExchangeKind::parse(&m.kind) else {
            // RabbitMQ: an unknown exchange type is a connection error 503 COMMAND_INVALID.
            let text = format!("COMMAND_INVALID - unknown exchange type '{}'", m.kind);
            self.conn.close_connection(amqp::COMMAND_INVALID, &text, 40, 10);
            return Ok(None);
        };
        let spec = ExchangeSpec {
            name: m.exchange.clone(),
            kind,
            durable: m.durable,
            auto_delete: m.auto_delete,
            internal: m.internal,
            arguments: pairs(&m.arguments),
        };
        if !m.exchange.is_empty() {
            self.meta(MetaOp::DeclareExchange { spec, passive: m.passive }).await?;
        }
        Ok((!m.nowait).then(|| Method::ExchangeDeclareOk(amqp::ExchangeDeclareOk {})))
    }

    async fn queue_declare(&mut self, m: &amqp::QueueDeclare) -> Result<Option<Method>, EngineError> {
        let name = if m.queue.is_empty() { self.shard.borrow_mut().generate_queue_name() } else { m.queue.clone() };
        if name.starts_with("amq.") && !m.queue.is_empty() && !m.passive {
            return Err(error(
                ErrorKind::AccessRefused,
                format!("queue name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        let shard = self.shard.borrow().placement().place("/", &name, 0);
        let exclusive = m.exclusive.then_some(self.id);
        let spec = QueueSpec {
            name: name.clone(),
            durable: m.durable,
            auto_delete: m.auto_delete,
            exclusive,
            arguments: pairs(&m.arguments),
            shard,
        };
        self.meta(MetaOp::DeclareQueue { spec, passive: m.passive, by: Some(self.id) }).await?;
        if m.exclusive && !self.exclusive_queues.contains(&name) {
            self.exclusive_queues.push(name.clone());
        }
        // Asked even with nowait: a declaration is a use that restarts the x-expires clock.
        let owner = self.owner_of(&name)?;
        let stats = Request::Stats { queue: name.clone(), declared: true };
        let (messages, consumers) = match self.request(owner, stats).await? {
            Reply::Stats { messages, consumers } => (messages, consumers),
            _ => (0, 0),
        };
        if m.nowait {
            return Ok(None);
        }
        let ok = amqp::QueueDeclareOk { queue: name, message_count: messages as u32, consumer_count: consumers as u32 };
        Ok(Some(Method::QueueDeclareOk(ok)))
    }

    async fn queue_delete(&mut self, m: &amqp::QueueDelete) -> Result<Option<Method>, EngineError> {
        let owner = self.owner_of(&m.queue)?;
        let (messages, consumers) =
            match self.request(owner, Request::Stats { queue: m.queue.clone(), declared: false }).await? {
                Reply::Stats { messages, consumers } => (messages, consumers),
                _ => (0, 0),
            };
        if m.if_unused && consumers > 0 {
            return Err(error(ErrorKind::PreconditionFailed, format!("queue '{}' in vhost '/' in use", m.queue)));
        }
        if m.if_empty && messages > 0 {
            return Err(error(ErrorKind::PreconditionFailed, format!("queue '{}' in vhost '/' is not empty", m.queue)));
        }
        self.meta(MetaOp::DeleteQueue { name: m.queue.clone() }).await?;
        self.exclusive_queues.retain(|q| *q != m.queue);
        Ok((!m.nowait).then(|| Method::QueueDeleteOk(amqp::QueueDeleteOk { message_count: messages as u32 })))
    }

    async fn consume(&mut self, channel: u16, m: &amqp::BasicConsume) -> Result<Option<Method>, EngineError> {
        let limit = self.shard.borrow().limits().subscription_count_max;
        if self.consumers.len() >= limit {
            return Err(error(
                ErrorKind::ResourceError,
                format!("too many consumers on this connection (max {limit})"),
            ));
        }
        let owner = self.owner_of(&m.queue)?;
        let key = self.next_key();
        let ctag = if m.consumer_tag.is_empty() {
            format!("amq.ctag-ferry-{}-{}", self.id, key.tag)
        } else {
            m.consumer_tag.clone()
        };
        let (max, prefetch) = {
            let limits_max = self.shard.borrow().limits().prefetch_count_max;
            let p = self.channels.get(&channel).map_or(0, |c| c.prefetch);
            (limits_max, p)
        };
        let ch = self.channels.get_mut(&channel).ok_or_else(|| error(ErrorKind::InternalError, "channel"))?;
        if ch.consumers.contains_key(&ctag) {
            return Err(error(
                ErrorKind::PreconditionFailed,
                format!("NOT_ALLOWED - attempt to reuse consumer tag '{ctag}'"),
            ));
        }
        let credit_max = if prefetch == 0 { max } else { u32::from(prefetch).min(max) };
        ch.consumers.insert(ctag.clone(), ChannelConsumer { key, queue: m.queue.clone(), owner, credit_due: 0 });
        let route = super::ConsumerRoute { channel, ctag: ctag.clone(), owner, no_ack: m.no_ack };
        self.consumers.insert(key.tag, route);
        let priority = pairs(&m.arguments)
            .iter()
            .find(|(k, _)| k == "x-priority")
            .map(|(_, v)| {
                v.parse::<i32>().map_err(|_| error(ErrorKind::PreconditionFailed, format!("invalid x-priority '{v}'")))
            })
            .transpose()?
            .unwrap_or(0);
        let consumer = Consumer { key, credit_max, outstanding: 0, no_ack: m.no_ack, priority, exclusive: m.exclusive };
        if let Err(e) = self.request(owner, Request::Consume { queue: m.queue.clone(), consumer }).await {
            self.consumers.remove(&key.tag);
            if let Some(ch) = self.channels.get_mut(&channel) {
                ch.consumers.remove(&ctag);
            }
            return Err(e);
        }
        Ok((!m.nowait).then(|| Method::BasicConsumeOk(amqp::BasicConsumeOk { consumer_tag: ctag })))
    }

    async fn cancel(&mut self, channel: u16, m: &amqp::BasicCancel) -> Result<Option<Method>, EngineError> {
        let removed = self.channels.get_mut(&channel).and_then(|ch| ch.consumers.remove(&m.consumer_tag));
        if let Some(c) = removed {
            self.consumers.remove(&c.key.tag);
            let _ = self.request(c.owner, Request::Cancel { queue: c.queue, consumer: c.key }).await;
        }
        Ok((!m.nowait).then(|| Method::BasicCancelOk(amqp::BasicCancelOk { consumer_tag: m.consumer_tag.clone() })))
    }

    async fn get(&mut self, channel: u16, m: &amqp::BasicGet) -> Result<(), EngineError> {
        let owner = self.owner_of(&m.queue)?;
        let getter =
            self.channels.get(&channel).map(|c| c.getter).ok_or_else(|| error(ErrorKind::InternalError, "channel"))?;
        let reply =
            self.request(owner, Request::Get { queue: m.queue.clone(), consumer: getter, no_ack: m.no_ack }).await?;
        let Reply::Got { delivery, remaining } = reply else {
            return Err(error(ErrorKind::InternalError, "unexpected reply to get"));
        };
        let ch = self.channels.get_mut(&channel).ok_or_else(|| error(ErrorKind::InternalError, "channel"))?;
        let Some(d) = delivery else {
            self.conn.send_method(channel, &Method::BasicGetEmpty(amqp::BasicGetEmpty { cluster_id: String::new() }));
            return Ok(());
        };
        if !ch.got_from.iter().any(|(q, _)| *q == m.queue) {
            ch.got_from.push((m.queue.clone(), owner));
        }
        let pending = (!m.no_ack).then(|| super::channel::Unacked { owner, queue: d.queue.clone(), tag: d.tag });
        let delivery_tag = ch.record(pending);
        let content = &d.message.content;
        let ok = Method::BasicGetOk(amqp::BasicGetOk {
            delivery_tag,
            redelivered: d.message.redelivered,
            exchange: content.exchange.clone(),
            routing_key: content.routing_key.clone(),
            message_count: remaining as u32,
        });
        let properties = super::mapping::amqp_properties(&content.properties);
        self.conn.send_content(channel, &ok, &properties, &content.body);
        Ok(())
    }

    fn settle_or_buffer(
        &mut self,
        channel: u16,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
    ) -> Result<Option<Method>, EngineError> {
        let limit = self.shard.borrow().limits().transaction_op_count_max;
        let ch = self.channels.get_mut(&channel).ok_or_else(|| error(ErrorKind::InternalError, "channel"))?;
        if ch.buffer(TxOp::Settle { tag, multiple, requeue }, limit)?.is_some() {
            self.settle(channel, tag, multiple, requeue, None)?;
        }
        Ok(None)
    }

    /// Settles channel delivery `tag` (and all before it with `multiple`). An unknown tag is
    /// a channel error 406 PRECONDITION_FAILED, as in RabbitMQ.
    fn settle(
        &mut self,
        channel: u16,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
        token: Option<u64>,
    ) -> Result<(), EngineError> {
        let ch = self.channels.get_mut(&channel).ok_or_else(|| error(ErrorKind::InternalError, "channel"))?;
        let unknown = || error(ErrorKind::PreconditionFailed, format!("unknown delivery tag {tag}"));
        let mut shard = self.shard.borrow_mut();
        let mut settle_one = |u: super::channel::Unacked| {
            let completion = token.map(|token| Completion { conn: self.id, token });
            if let Some(token) = token
                && let Some(p) = self.confirms.get_mut(&token)
            {
                p.remaining += 1;
            }
            shard.settle_one(u.owner, &u.queue, u.tag, requeue, completion);
        };
        if multiple {
            ch.take_upto(tag).ok_or_else(unknown)?.into_iter().for_each(settle_one);
        } else {
            settle_one(ch.take_one(tag).ok_or_else(unknown)?);
        }
        Ok(())
    }

    fn recover(&mut self, channel: u16) {
        let Some(ch) = self.channels.get_mut(&channel) else { return };
        let all = ch.take_all();
        let mut shard = self.shard.borrow_mut();
        for u in all {
            shard.settle_one(u.owner, &u.queue, u.tag, Some(true), None);
        }
    }

    fn confirm_select(&mut self, channel: u16, nowait: bool) -> Result<Option<Method>, EngineError> {
        let ch = self.channels.get_mut(&channel).ok_or_else(|| error(ErrorKind::InternalError, "channel"))?;
        if ch.tx.is_some() {
            return Err(error(ErrorKind::PreconditionFailed, "cannot switch from tx to confirm mode"));
        }
        ch.confirm = true;
        Ok((!nowait).then(|| Method::ConfirmSelectOk(amqp::ConfirmSelectOk {})))
    }

    fn tx_select(&mut self, channel: u16) -> Result<Option<Method>, EngineError> {
        let ch = self.channels.get_mut(&channel).ok_or_else(|| error(ErrorKind::InternalError, "channel"))?;
        if ch.confirm {
            return Err(error(ErrorKind::PreconditionFailed, "cannot switch from confirm to tx mode"));
        }
        ch.tx.get_or_insert_with(Vec::new);
        Ok(Some(Method::TxSelectOk(amqp::TxSelectOk {})))
    }

    async fn tx_commit(&mut self, channel: u16) -> Result<Option<Method>, EngineError> {
        let ops = {
            let ch = self.channels.get_mut(&channel).ok_or_else(|| error(ErrorKind::InternalError, "channel"))?;
            let ops =
                ch.tx.as_mut().ok_or_else(|| error(ErrorKind::PreconditionFailed, "channel is not transactional"))?;
            std::mem::take(ops)
        };
        // commit-ok goes out once every publish is held and every ack settled, durably where
        // persistent (one held count keeps it from finishing while the ops are handed out).
        let token = self.next_token;
        self.next_token += 1;
        self.confirms.insert(token, PendingConfirm { channel, seq: None, remaining: 1, failed: false });
        // No await until `end_transaction`: each queue owner applies and logs its share of the
        // transaction as one record.
        self.shard.borrow_mut().begin_transaction();
        let mut result = Ok(());
        for op in ops {
            result = match op {
                TxOp::Publish { method, properties, body } => {
                    self.route(channel, method, &properties, body, Some(token))
                }
                TxOp::Settle { tag, multiple, requeue } => self.settle(channel, tag, multiple, requeue, Some(token)),
            };
            if result.is_err() {
                break;
            }
        }
        self.shard.borrow_mut().end_transaction();
        if let Err(e) = result {
            self.confirms.remove(&token);
            return Err(e);
        }
        self.confirm(token, Ok(()));
        Ok(None)
    }

    pub(super) async fn publish(
        &mut self,
        channel: u16,
        method: BasicPublish,
        properties: Box<BasicProperties>,
        body: Bytes,
    ) {
        let limit = self.shard.borrow().limits().transaction_op_count_max;
        let Some(ch) = self.channels.get_mut(&channel) else { return };
        if ch.tx.is_some() {
            let op = TxOp::Publish { method, properties, body };
            if let Err(e) = ch.buffer(op, limit) {
                self.publish_error(channel, &e);
            }
            return;
        }
        let token = ch.confirm.then(|| {
            let seq = ch.next_publish_seq;
            ch.next_publish_seq += 1;
            ch.confirms.expect(seq);
            seq
        });
        let token = token.map(|seq| {
            let token = self.next_token;
            self.next_token += 1;
            self.confirms.insert(token, PendingConfirm { channel, seq: Some(seq), remaining: 0, failed: false });
            token
        });
        if let Err(e) = self.route(channel, method, &properties, body, token) {
            if let Some(token) = token {
                self.confirms.remove(&token);
            }
            self.publish_error(channel, &e);
        }
    }

    /// A channel exception for a basic.publish.
    fn publish_error(&mut self, channel: u16, error: &EngineError) {
        self.channel_error_at(channel, error, BasicPublish::CLASS_ID, BasicPublish::METHOD_ID);
    }

    /// Routes one publish; with `token`, the confirm goes out once every queue holds it.
    fn route(
        &mut self,
        channel: u16,
        method: BasicPublish,
        properties: &BasicProperties,
        body: Bytes,
        token: Option<u64>,
    ) -> Result<(), EngineError> {
        if let Some(ex) = self.shard.borrow().routing().exchange(&method.exchange)
            && ex.spec.internal
        {
            return Err(error(
                ErrorKind::AccessRefused,
                format!("cannot publish to internal exchange '{}'", method.exchange),
            ));
        }
        let BasicPublish { exchange, routing_key, mandatory, .. } = method;
        // The names move into the message; routing reads them from there.
        let content = Arc::new(Content { exchange, routing_key, properties: properties_from_amqp(properties), body });
        let conn = self.id;
        let count = self.shard.borrow_mut().publish(
            &content.exchange,
            &content.routing_key,
            content.clone(),
            Some(conn),
            || token.map(|token| Completion { conn, token }),
        )?;
        if count == 0 && mandatory {
            let ret = Method::BasicReturn(amqp::BasicReturn {
                reply_code: amqp::NO_ROUTE,
                reply_text: "NO_ROUTE".to_owned(),
                exchange: content.exchange.clone(),
                routing_key: content.routing_key.clone(),
            });
            self.conn.send_content(channel, &ret, properties, &content.body);
        }
        if let Some(token) = token
            && let Some(p) = self.confirms.get_mut(&token)
        {
            p.remaining += count;
            self.finish_if_done(token);
        }
        Ok(())
    }
}
