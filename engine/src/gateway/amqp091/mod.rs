//! The AMQP 0-9-1 gateway: one [`AmqpConn`] per connection, on its shard, owned by its task.
//! It feeds socket bytes to the sans-IO `ferry_amqp091::Connection`, maps channel methods onto
//! the engine (declarations through the metadata authority, consume/cancel/get at the queue's
//! owner, publishes routed on this shard) and turns the mailbox into basic.deliver frames and
//! publisher confirms (coalesced once per turn into `multiple` acks as RabbitMQ does; see
//! `confirms`). Engine errors become the channel exceptions RabbitMQ sends (403, 404,
//! 405, 406) with the failing method's class and method ids. Control methods are awaited in
//! order, as RabbitMQ's channels are synchronous; publishes and acks never wait.

mod channel;
mod confirms;
pub(crate) mod mapping;
mod methods;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use ferry_amqp091::frame::DeliverRef;
use ferry_amqp091::{BasicAck, BasicNack, BasicProperties, BasicPublish, Connection, ConnectionConfig, Event, Method};

use crate::auth::Users;
use crate::error::{EngineError, ErrorKind};
use crate::fastmap::HashMap;
use crate::gateway::ConfirmedRun;
use crate::ids::{ConnectionId, ConsumerKey, ShardId};
use crate::model::queue::Delivery;
use crate::shard::ShardRef;
use crate::shard::mailbox::Mailbox;
use crate::shard::mailbox::Wake;
use channel::{Channel, PortableChannel, Unacked};
use confirms::ConfirmFrame;

/// Work the connection answers once the engine has done it: a publisher confirm waiting for
/// the queues a message reached, or a tx.commit waiting for its publishes and acks (durably
/// for persistent messages on durable queues, so commit-ok means what a confirm means).
#[derive(Debug)]
struct PendingConfirm {
    channel: u16,
    /// The publish sequence number, or `None` for a tx.commit.
    seq: Option<u64>,
    remaining: usize,
    failed: bool,
}

/// One AMQP connection's gateway state. See the module docs.
pub struct AmqpConn {
    id: ConnectionId,
    shard: ShardRef,
    mailbox: Rc<RefCell<Mailbox>>,
    conn: Connection,
    users: Rc<Users>,
    peer: SocketAddr,
    channels: HashMap<u16, Channel>,
    /// Engine consumer tag -> where its deliveries go.
    consumers: HashMap<u64, ConsumerRoute>,
    next_consumer: u64,
    confirms: HashMap<u64, PendingConfirm>,
    next_token: u64,
    /// Channels with confirm outcomes not yet sent (each listed once per flush).
    confirms_due: Vec<u16>,
    /// Scratch for the frames of one flush, kept to reuse its allocation.
    confirm_frames: Vec<ConfirmFrame>,
    exclusive_queues: Vec<String>,
    publisher: bool,
    /// connection.blocked was sent and not yet lifted.
    blocked: bool,
    /// The shard this connection asked to move to (its next publish waits for the move).
    move_to: Option<ShardId>,
    /// It asked once: it never asks again.
    asked_to_move: bool,
    /// Persistent, confirmed publishes in a row on one channel to one queue (see
    /// `move_candidate`).
    confirmed_run: ConfirmedRun,
}

/// An AMQP connection on its way to another shard: its protocol state (negotiated tuning,
/// heart-beats, input not yet parsed, the publish that made it move, output not yet written),
/// its peer and its idle channels. Only a connection with nothing in progress moves.
struct MovingAmqp {
    conn: Connection,
    peer: SocketAddr,
    channels: Vec<(u16, PortableChannel)>,
}

/// A consumer of this connection, by engine consumer tag: its channel, its AMQP consumer tag,
/// and what each delivery needs (kept here so that an acked delivery costs one lookup).
#[derive(Debug)]
struct ConsumerRoute {
    channel: u16,
    ctag: String,
    owner: crate::ids::ShardId,
    no_ack: bool,
}

impl std::fmt::Debug for AmqpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConn").field("id", &self.id).field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl AmqpConn {
    /// Registers a connection on `shard`; `None` when the shard is at its connection limit.
    pub fn new(shard: ShardRef, peer: SocketAddr, users: Rc<Users>, wake: Rc<dyn Wake>, now: Instant) -> Option<Self> {
        let (id, mailbox, limits) = crate::gateway::register(&shard, wake)?;
        let confirmed_run = ConfirmedRun::for_shard(&shard);
        let config = ConnectionConfig {
            limits,
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_s: 60,
            product: "Ferry".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        Some(AmqpConn {
            id,
            shard,
            mailbox,
            conn: Connection::new(config, now),
            users,
            peer,
            channels: HashMap::default(),
            consumers: HashMap::default(),
            next_consumer: 1,
            confirms: HashMap::default(),
            next_token: 1,
            confirms_due: Vec::new(),
            confirm_frames: Vec::new(),
            exclusive_queues: Vec::new(),
            publisher: false,
            blocked: false,
            move_to: None,
            asked_to_move: false,
            confirmed_run,
        })
    }

    fn next_key(&mut self) -> ConsumerKey {
        let tag = self.next_consumer;
        self.next_consumer += 1;
        ConsumerKey { conn: self.id, tag }
    }

    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::Login { username, password, .. } => {
                match self.users.check(Some(&username), Some(&password), self.peer.ip()) {
                    Ok(_) => self.conn.accept_login(),
                    Err(e) => {
                        tracing::info!(conn = %self.id, peer = %self.peer, "amqp login refused: {}", e.0);
                        self.conn.refuse_login(&format!("ACCESS_REFUSED - {}", e.0));
                    }
                }
            }
            Event::Open { vhost } if vhost == "/" || vhost.is_empty() => self.conn.accept_open(),
            Event::Open { vhost } => {
                let text = format!("NOT_ALLOWED - vhost '{vhost}' not found");
                self.conn.close_connection(ferry_amqp091::NOT_ALLOWED, &text, 10, 40);
            }
            Event::ChannelOpened { channel } => {
                let getter = self.next_key();
                self.channels.insert(channel, Channel::new(getter));
            }
            Event::ChannelClosed { channel } => self.release_channel(channel),
            Event::Method { channel, method } => self.method(channel, method).await,
            Event::Publish { channel, method, properties, body } => {
                let confirmed = self.confirmed_publish(channel, &method, &properties);
                self.confirmed_run.note(channel, &method.routing_key, confirmed);
                self.publisher = true;
                self.publish(channel, method, properties, body).await;
            }
            Event::Closed { reason } => tracing::debug!(conn = %self.id, reason, "amqp connection closed by protocol"),
        }
    }

    /// Whether a publish waits to be durable: persistent, to the default exchange (so its
    /// routing key names its queue), on a channel in confirm mode outside a transaction.
    fn confirmed_publish(&self, channel: u16, method: &BasicPublish, properties: &BasicProperties) -> bool {
        method.exchange.is_empty()
            && properties.delivery_mode == Some(2)
            && self.channels.get(&channel).is_some_and(|ch| ch.confirm && ch.tx.is_none())
    }

    /// The queue of `event` if this connection should move to that queue's shard before
    /// performing it: a publisher that made [`CONFIRMED_RUN_TO_MOVE`](crate::gateway::CONFIRMED_RUN_TO_MOVE) confirmed publishes in a
    /// row to that queue, with nothing in progress now (no consumer, nothing unacked, no
    /// confirm owed, no transaction, no exclusive queue). Each of its messages would cross to
    /// the queue's shard and each confirm back, after that shard's log sync.
    fn move_candidate<'e>(&self, event: &'e Event) -> Option<&'e str> {
        let Event::Publish { channel, method, properties, .. } = event else { return None };
        if self.asked_to_move
            || !self.confirmed_run.reached(*channel, &method.routing_key)
            || !self.confirmed_publish(*channel, method, properties)
            || !self.consumers.is_empty()
            || !self.confirms.is_empty()
            || !self.confirms_due.is_empty()
            || !self.exclusive_queues.is_empty()
            || self.blocked
            || !self.mailbox.borrow().is_idle()
            || self.channels.values().any(|ch| ch.portable().is_none())
        {
            return None;
        }
        Some(&method.routing_key)
    }

    /// Sends a channel exception for `error`, naming the method that failed.
    fn channel_error(&mut self, channel: u16, error: &EngineError, method: &Method) {
        self.channel_error_at(channel, error, method.class_id(), method.method_id());
    }

    /// Sends a channel exception for `error`, naming the failed method by its ids.
    fn channel_error_at(&mut self, channel: u16, error: &EngineError, class_id: u16, method_id: u16) {
        let code = error.kind.amqp_code();
        let name = match error.kind {
            ErrorKind::AccessRefused => "ACCESS_REFUSED",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::ResourceLocked => "RESOURCE_LOCKED",
            ErrorKind::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorKind::ResourceError => "RESOURCE_ERROR",
            ErrorKind::InternalError => "INTERNAL_ERROR",
        };
        let text = format!("{name} - {}", error.message);
        self.release_channel(channel);
        self.conn.close_channel(channel, code, &text, class_id, method_id);
    }

    /// Gives back everything a channel held: its consumers' and gets' unacked messages.
    fn release_channel(&mut self, channel: u16) {
        // Outcomes already known still go out (before a channel.close of ours; dropped by the
        // protocol when the peer closed the channel first).
        self.flush_channel_confirms(channel);
        self.confirms_due.retain(|c| *c != channel);
        let Some(mut ch) = self.channels.remove(&channel) else { return };
        // Confirms and commit-oks still owed belong to this channel, not to a later one that
        // reuses its number.
        self.confirms.retain(|_, p| p.channel != channel);
        let mut shard = self.shard.borrow_mut();
        for c in ch.consumers.values() {
            self.consumers.remove(&c.key.tag);
            shard.cancel_nowait(c.owner, &c.queue, c.key);
        }
        for (queue, owner) in &ch.got_from {
            shard.cancel_nowait(*owner, queue, ch.getter);
        }
        for u in ch.take_all() {
            shard.settle_one(u.owner, &u.queue, u.tag, Some(true), None);
        }
    }

    fn drain_mailbox_inner(&mut self) {
        let Mailbox { deliveries, completions, cancelled, rejected, .. } = crate::gateway::take_mail(&self.mailbox);
        if let Some(queue) = rejected.first() {
            // Without confirms there is no per-message refusal in AMQP: close with 506.
            let text = format!("RESOURCE_ERROR - queue '{queue}' is full: a message was not accepted");
            self.conn.close_connection(ferry_amqp091::RESOURCE_ERROR, &text, 60, 40);
        }
        for delivery in deliveries {
            self.deliver(delivery);
        }
        for (token, result) in completions {
            self.confirm(token, result);
        }
        for (consumer, _queue) in cancelled {
            if let Some(ConsumerRoute { channel, ctag, .. }) = self.consumers.remove(&consumer.tag) {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.consumers.remove(&ctag);
                }
                // consumer_cancel_notify: the queue went away under the consumer.
                let cancel = ferry_amqp091::BasicCancel { consumer_tag: ctag, nowait: true };
                self.conn.send_method(channel, &Method::BasicCancel(cancel));
            }
        }
        self.flush_confirms();
    }

    /// Sends the confirms of every channel with outcomes since the last flush: once per turn
    /// (after the input and the mailbox), so outcomes that complete together coalesce.
    fn flush_confirms(&mut self) {
        let due = std::mem::take(&mut self.confirms_due);
        for &channel in &due {
            self.flush_channel_confirms(channel);
        }
        self.confirms_due = due;
        self.confirms_due.clear();
    }

    fn flush_channel_confirms(&mut self, channel: u16) {
        let Some(ch) = self.channels.get_mut(&channel) else { return };
        ch.confirms.flush(&mut self.confirm_frames);
        for f in self.confirm_frames.drain(..) {
            let method = if f.ack {
                Method::BasicAck(BasicAck { delivery_tag: f.tag, multiple: f.multiple })
            } else {
                Method::BasicNack(BasicNack { delivery_tag: f.tag, multiple: f.multiple, requeue: false })
            };
            self.conn.send_method(channel, &method);
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        // Borrowed, not copied: this runs once per message.
        let Some(ConsumerRoute { channel, ctag, owner, no_ack }) = self.consumers.get(&delivery.consumer.tag) else {
            self.shard.borrow_mut().return_delivery(delivery);
            return;
        };
        let (owner, no_ack) = (*owner, *no_ack);
        let Some(ch) = self.channels.get_mut(channel) else { return };
        if no_ack {
            // Only auto-ack deliveries touch the channel's consumer (their credit goes back
            // once written); acked ones need nothing from it.
            let Some(consumer) = ch.consumers.get_mut(ctag) else { return };
            consumer.credit_due += 1;
        }
        let Delivery { queue, tag, message, .. } = delivery;
        let delivery_tag = ch.record((!no_ack).then_some(Unacked { owner, queue, tag }));
        let content = &message.content;
        let deliver = DeliverRef {
            consumer_tag: ctag,
            delivery_tag,
            redelivered: message.redelivered,
            exchange: &content.exchange,
            routing_key: &content.routing_key,
        };
        let properties = mapping::amqp_properties(&content.properties);
        self.conn.send_deliver(*channel, &deliver, &properties, &content.body);
    }

    fn confirm(&mut self, token: u64, result: Result<(), EngineError>) {
        let Some(p) = self.confirms.get_mut(&token) else { return };
        p.remaining = p.remaining.saturating_sub(1);
        p.failed |= result.is_err();
        self.finish_if_done(token);
    }

    /// Records the confirm (ack, or nack when any queue refused) for the next flush, or sends
    /// the commit-ok, for `token` once nothing it waits on is outstanding.
    fn finish_if_done(&mut self, token: u64) {
        if self.confirms.get(&token).is_none_or(|p| p.remaining > 0) {
            return;
        }
        let Some(done) = self.confirms.remove(&token) else { return };
        match done.seq {
            Some(seq) => {
                let Some(ch) = self.channels.get_mut(&done.channel) else { return };
                if ch.confirms.complete(seq, !done.failed) {
                    self.confirms_due.push(done.channel);
                }
            }
            None => {
                if done.failed {
                    // AMQP 0-9-1 has no partial commit; the refusal was logged where it happened.
                    tracing::warn!(conn = %self.id, "tx.commit: a queue refused a publish (at its limit)");
                }
                self.conn.send_method(done.channel, &Method::TxCommitOk(ferry_amqp091::TxCommitOk {}));
            }
        }
    }
}

impl crate::gateway::Gateway for AmqpConn {
    /// Not parked (only MQTT connections are, see `runtime::park`).
    type Parked = std::convert::Infallible;
    fn resume(parked: Self::Parked, _peer: std::net::SocketAddr, _now: Instant) -> Self {
        match parked {}
    }
    fn parked_timeout(parked: &Self::Parked) -> Option<Instant> {
        match *parked {}
    }
    fn refusal() -> &'static [u8] {
        ferry_amqp091::PROTOCOL_HEADER
    }

    fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.conn.handle_input(bytes, now);
    }

    async fn handle_events(&mut self) {
        while self.move_to.is_none()
            && let Some(event) = self.conn.poll_event()
        {
            if let Some(queue) = self.move_candidate(&event) {
                if let Some(home) = crate::gateway::queue_home_elsewhere(&self.shard, self.id.shard, queue) {
                    // The publish is performed on the queue's shard, after the move.
                    self.conn.unpoll_event(event);
                    self.move_to = Some(home);
                    self.asked_to_move = true;
                    self.confirmed_run.end();
                    break;
                }
                // Its queue is here: stop counting this publisher's run.
                self.confirmed_run.end();
            }
            self.handle_event(event).await;
        }
        self.drain_mailbox_inner();
    }

    fn take_move(&mut self) -> Option<ShardId> {
        self.move_to.take()
    }

    fn start_move(self) -> Result<crate::gateway::Arrival<Self>, Self> {
        // Idle channels only (`move_candidate`): nothing to release but the registration.
        let Some(channels) =
            self.channels.iter().map(|(n, ch)| ch.portable().map(|p| (*n, p))).collect::<Option<Vec<_>>>()
        else {
            return Err(self);
        };
        self.shard.borrow_mut().unregister_conn(self.id);
        tracing::debug!(conn = %self.id, "amqp connection moving to its queue's shard");
        let moving = MovingAmqp { conn: self.conn, peer: self.peer, channels };
        Ok(Box::new(move |shard, users, wake| {
            let mut conn = AmqpConn::new(shard, moving.peer, users, wake, Instant::now())?;
            conn.conn = moving.conn;
            for (number, portable) in &moving.channels {
                let getter = conn.next_key();
                conn.channels.insert(*number, Channel::resume(getter, portable));
            }
            conn.asked_to_move = true;
            conn.confirmed_run.end();
            tracing::debug!(conn = %conn.id, "amqp connection moved");
            Some(conn)
        }))
    }

    fn drain_mailbox(&mut self) {
        self.drain_mailbox_inner();
    }

    fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        // connection.blocked / unblocked (RabbitMQ's extension, advertised in capabilities)
        // tell a publishing client why its input is no longer read, and when that ends.
        let held = self.publisher && self.shard.borrow().disk_alarm();
        if held != self.blocked && !self.conn.is_closed() {
            self.blocked = held;
            let method = if held {
                Method::ConnectionBlocked(ferry_amqp091::ConnectionBlocked { reason: "low on resources".to_owned() })
            } else {
                Method::ConnectionUnblocked(ferry_amqp091::ConnectionUnblocked {})
            };
            self.conn.send_method(0, &method);
        }
        self.conn.poll_transmit(out);
    }

    fn on_written(&mut self) {
        let mut shard = self.shard.borrow_mut();
        for ch in self.channels.values_mut() {
            for c in ch.consumers.values_mut() {
                if c.credit_due > 0 {
                    shard.credit(c.owner, &c.queue, c.key, c.credit_due);
                    c.credit_due = 0;
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        while let Some(event) = self.conn.poll_event() {
            if let Event::Closed { reason } = event {
                tracing::debug!(conn = %self.id, reason, "amqp connection timed out");
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// A resource alarm (announced with connection.blocked), or flow control: a queue this
    /// connection feeds holds it back until its consumers catch up (silent TCP back-pressure,
    /// as RabbitMQ's credit flow).
    fn input_held(&self) -> bool {
        self.publisher && crate::gateway::publisher_held(&self.shard, &self.mailbox)
    }

    fn peer_closes_first(&self) -> bool {
        self.conn.closed_by_peer()
    }

    fn close(mut self) {
        let channels: Vec<u16> = self.channels.keys().copied().collect();
        for channel in channels {
            self.release_channel(channel);
        }
        let mut shard = self.shard.borrow_mut();
        for queue in self.exclusive_queues.drain(..) {
            shard.meta_nowait(crate::model::routing::MetaOp::DeleteQueue { name: queue });
        }
        shard.unregister_conn(self.id);
        tracing::debug!(conn = %self.id, "amqp connection closed");
    }
}
