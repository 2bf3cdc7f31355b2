//! The STOMP gateway: one [`StompConn`] per connection, on the connection's shard, owned by
//! the connection's task. It feeds socket bytes to the sans-IO `ferry_stomp::Session`, turns
//! its events into engine operations (publish, consume, settle, declare), and turns the
//! connection's mailbox (deliveries, completions) into MESSAGE and RECEIPT frames. Control
//! operations (declare, subscribe, unsubscribe) are awaited in frame order, as RabbitMQ's
//! channel methods are; publishes and acks never wait. Where the STOMP specs leave room, the
//! behaviour is RabbitMQ's STOMP plugin's (see README).

mod destination;
mod mapping;
mod ops;
mod receipts;
mod subscription;

use crate::fastmap::HashMap;
use crate::gateway::ConfirmedRun;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use ferry_stomp::{Event, Session, SessionConfig};

use crate::auth::Users;
use crate::ids::{ConnectionId, ShardId};
use crate::model::queue::Delivery;
use crate::shard::ShardRef;
use crate::shard::mailbox::Mailbox;
use crate::shard::mailbox::Wake;
use receipts::{Ready, Receipts};
use subscription::Subscriptions;

pub use destination::{Destination, binding_pattern};

/// An operation buffered in a STOMP transaction until COMMIT.
#[derive(Debug)]
enum TxOp {
    Send { destination: String, headers: Vec<ferry_stomp::Header>, body: bytes::Bytes },
    Ack { id: String },
    Nack { id: String, requeue: bool },
}

/// One STOMP connection's gateway state. See the module docs.
pub struct StompConn {
    id: ConnectionId,
    shard: ShardRef,
    mailbox: Rc<RefCell<Mailbox>>,
    session: Session,
    users: Rc<Users>,
    peer: SocketAddr,
    subs: Subscriptions,
    receipts: Receipts,
    transactions: HashMap<String, Vec<TxOp>>,
    /// Client name of a temp queue -> (generated queue name, has a subscription).
    temp_queues: HashMap<String, (String, bool)>,
    /// Exclusive queues this connection declared: deleted when it closes.
    exclusive_queues: Vec<String>,
    /// DISCONNECT seen: its receipt goes out once everything before it is done.
    disconnecting: Option<Option<String>>,
    closed_cleanly: bool,
    /// The broker sent an ERROR: later frames are not performed.
    failed: bool,
    /// The connection has sent a SEND: it is held back by resource alarms and flow control.
    publisher: bool,
    /// Buffers for each MESSAGE's ack id and destination, reused.
    ack_id_text: String,
    destination_text: String,
    /// The shard this connection asked to move to (its first SUBSCRIBE waits for the move).
    move_to: Option<ShardId>,
    /// It asked once: it never asks again.
    asked_to_move: bool,
    /// Persistent, receipted SENDs in a row to one destination (see `move_candidate`).
    confirmed_run: ConfirmedRun,
}

/// A STOMP connection on its way to another shard: its session (negotiated version and
/// heart-beats, input not yet parsed, the SUBSCRIBE or SEND that made it move, output not yet
/// written) and its peer. Nothing else: only a connection with nothing in progress moves.
#[derive(Debug)]
pub struct MovingStomp {
    session: Session,
    peer: SocketAddr,
}

impl std::fmt::Debug for StompConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StompConn").field("id", &self.id).field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl StompConn {
    /// Registers a connection on `shard`; `None` when the shard is at its connection limit.
    pub fn new(shard: ShardRef, peer: SocketAddr, users: Rc<Users>, wake: Rc<dyn Wake>, now: Instant) -> Option<Self> {
        let (id, mailbox, limits) = crate::gateway::register(&shard, wake)?;
        let confirmed_run = ConfirmedRun::for_shard(&shard);
        let config = SessionConfig { limits, server: format!("ferry/{}", env!("CARGO_PKG_VERSION")) };
        Some(StompConn {
            id,
            shard,
            mailbox,
            session: Session::new(config, now),
            users,
            peer,
            subs: Subscriptions::new(id),
            receipts: Receipts::default(),
            transactions: HashMap::default(),
            temp_queues: HashMap::default(),
            exclusive_queues: Vec::new(),
            disconnecting: None,
            closed_cleanly: false,
            failed: false,
            publisher: false,
            ack_id_text: String::new(),
            destination_text: String::new(),
            move_to: None,
            asked_to_move: false,
            confirmed_run,
        })
    }

    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// Whether input must wait: this connection publishes and a disk limit holds (RabbitMQ
    /// likewise stops reading from publishing connections during a resource alarm), or a
    /// queue it feeds holds it back until its consumers catch up (flow control).
    pub fn input_held(&self) -> bool {
        self.publisher && crate::gateway::publisher_held(&self.shard, &self.mailbox)
    }

    /// Feeds bytes from the socket; the session parses every complete frame into events.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.session.handle_input(bytes, now);
    }

    /// Performs the parsed frames, in order.
    pub async fn handle_events(&mut self) {
        // Frames that arrived before a malformed one still take effect (the session queued
        // them before its Closed event); nothing runs after the broker itself sent an ERROR.
        while !self.failed && self.disconnecting.is_none() && self.move_to.is_none() {
            let Some(event) = self.session.poll_event() else {
                break;
            };
            if let Some(destination) = self.move_candidate(&event) {
                if let Some(home) = self.queue_home(destination) {
                    // The frame is performed on the queue's shard, after the move.
                    self.session.unpoll_event(event);
                    self.move_to = Some(home);
                    self.asked_to_move = true;
                    self.confirmed_run.end();
                    break;
                }
                // Its queue is here (or it is no queue): stop counting this producer's run.
                self.confirmed_run.end();
            }
            self.handle_event(event).await;
        }
        self.drain_mailbox();
    }

    /// The destination of `event` if this connection should move to that queue's shard
    /// ([`Self::queue_home`]) before performing it:
    ///
    /// - A consumer: the first act is a SUBSCRIBE to a queue. On another shard each delivery
    ///   crosses cores and each ack crosses back; on a 2-core host 1 -> 1 STOMP ran at ~0.6M
    ///   msg/s with the consumer on the queue's shard and ~0.37M with it on the other.
    /// - A confirming producer: [`CONFIRMED_RUN_TO_MOVE`](crate::gateway::CONFIRMED_RUN_TO_MOVE) persistent, receipted SENDs in a row to
    ///   one queue, and this is the next. Each of its messages crosses to the queue's shard
    ///   and its receipt crosses back after that shard's log sync. 16 such producers to one
    ///   queue at window 1 ran at 23.2k msg/s with the move against 19.1k without, on 2
    ///   shards (docs/PERFORMANCE.md, session 8). A run, not the first SEND, because a
    ///   producer that spreads over queues gains nothing from any one shard: moving on the
    ///   first SEND cost 4 producers sending round-robin over 4 queues 11%.
    ///
    /// Only a connection with nothing in progress moves (its whole state is then its
    /// session), and only once.
    fn move_candidate<'e>(&self, event: &'e Event) -> Option<&'e str> {
        if self.asked_to_move {
            return None;
        }
        let destination = match event {
            Event::Subscribe { destination, .. } if !self.publisher => destination,
            Event::Send { destination, transaction: None, receipt: Some(_), headers, .. }
                if mapping::is_persistent(headers) && self.confirmed_run.reached(0, destination) =>
            {
                destination
            }
            _ => return None,
        };
        if self.subs.len() > 0
            || !self.receipts.is_idle()
            || !self.transactions.is_empty()
            || !self.temp_queues.is_empty()
            || !self.exclusive_queues.is_empty()
            || !self.mailbox.borrow().is_idle()
        {
            return None;
        }
        Some(destination)
    }

    /// The shard owning (or that would own) the queue `destination` names, when that is not
    /// this connection's shard.
    fn queue_home(&self, destination: &str) -> Option<ShardId> {
        let name = match Destination::parse(destination).ok()? {
            Destination::Queue(name) | Destination::AmqQueue(name) => name,
            _ => return None,
        };
        crate::gateway::queue_home_elsewhere(&self.shard, self.id.shard, &name)
    }

    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::Connect { login, passcode, .. } => self.connect(login.as_deref(), passcode.as_deref()),
            Event::Send { destination, transaction, receipt, headers, body } => {
                let confirmed = transaction.is_none() && receipt.is_some() && mapping::is_persistent(&headers);
                self.confirmed_run.note(0, &destination, confirmed);
                self.publisher = true;
                self.send(destination, transaction, receipt, headers, body).await;
            }
            Event::Subscribe { id, destination, ack, receipt, headers } => {
                self.subscribe(id, &destination, ack, receipt, &headers).await;
            }
            Event::Unsubscribe { id, receipt } => self.unsubscribe(&id, receipt).await,
            Event::Ack { id, transaction, receipt } => self.ack(id, transaction, receipt, None),
            Event::Nack { id, transaction, receipt, headers } => {
                let requeue = !headers.iter().any(|(k, v)| k == "requeue" && v.eq_ignore_ascii_case("false"));
                self.ack(id, transaction, receipt, Some(requeue));
            }
            Event::Begin { transaction, receipt } => self.begin(transaction, receipt),
            Event::Commit { transaction, receipt } => self.commit(&transaction, receipt).await,
            Event::Abort { transaction, receipt } => self.abort(&transaction, receipt),
            Event::Disconnect { receipt } => self.disconnecting = Some(receipt),
            Event::Closed { reason } => {
                tracing::debug!(conn = %self.id, ?reason, "stomp session closed")
            }
        }
    }

    fn connect(&mut self, login: Option<&str>, passcode: Option<&str>) {
        match self.users.check(login, passcode, self.peer.ip()) {
            Ok(user) => {
                tracing::debug!(conn = %self.id, %user, peer = %self.peer, "stomp connected");
                self.session.accept_connect(&format!("session-{}", self.id));
            }
            Err(e) => {
                tracing::info!(conn = %self.id, peer = %self.peer, "stomp login refused: {}", e.0);
                self.fail("Bad CONNECT", &e.0, None);
            }
        }
    }

    /// Sends an ERROR frame and closes (the STOMP answer to anything the broker can't do).
    fn fail(&mut self, message: &str, detail: &str, receipt: Option<&str>) {
        tracing::debug!(conn = %self.id, message, detail, "stomp error");
        self.failed = true;
        self.session.send_error(message, detail, receipt);
    }

    /// Moves what the engine has for this connection into the session's output.
    pub fn drain_mailbox(&mut self) {
        let Mailbox { deliveries, completions, cancelled, rejected, .. } = crate::gateway::take_mail(&self.mailbox);
        if let Some(queue) = rejected.first() {
            // STOMP: a SEND the broker cannot take gets an ERROR and the connection closes.
            let detail = format!("queue '{queue}' is full: a message was not accepted");
            self.fail("Message not accepted", &detail, None);
        }
        for delivery in deliveries {
            self.deliver(delivery);
        }
        for (token, result) in completions {
            self.receipts.complete(token, result);
        }
        for (consumer, queue) in cancelled {
            if let Some(sub) = self.subs.by_consumer(consumer.tag).map(|s| s.id.clone()) {
                self.subs.remove(&sub);
                let detail = format!("subscription '{sub}': queue '{queue}' was deleted");
                self.fail("Subscription cancelled", &detail, None);
            }
        }
        self.flush_receipts();
    }

    fn flush_receipts(&mut self) {
        let mut ready = Vec::new();
        self.receipts.drain_ready(&mut ready);
        for item in ready {
            match item {
                Ready::Receipt(id) => self.session.send_receipt(&id),
                Ready::Failed { receipt, error } => {
                    self.fail("Message not accepted", &error.message, receipt.as_deref());
                    return;
                }
            }
        }
        if self.receipts.is_idle()
            && let Some(receipt) = self.disconnecting.take()
        {
            if let Some(id) = receipt {
                self.session.send_receipt(&id);
            }
            self.closed_cleanly = true;
            self.session.close();
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        // Once per message: the ack id and destination go into buffers kept across calls.
        let (ack_id, destination) = (&mut self.ack_id_text, &mut self.destination_text);
        let Some(sub) = self.subs.record_delivery(delivery.consumer.tag, delivery.tag, ack_id) else {
            // Unsubscribed meanwhile: give it back to its queue.
            self.shard.borrow_mut().return_delivery(delivery);
            return;
        };
        let content = &delivery.message.content;
        Destination::write_for_message(&content.exchange, &content.routing_key, destination);
        let redelivered = if delivery.message.redelivered { "true" } else { "false" };
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(8 + content.properties.headers.len());
        headers.extend([
            ("subscription", sub.id.as_str()),
            ("destination", destination.as_str()),
            ("message-id", ack_id.as_str()),
            ("redelivered", redelivered),
        ]);
        if self.session.version() == ferry_stomp::Version::V1_2 {
            headers.push(("ack", ack_id.as_str()));
        }
        let mut numbers = mapping::NumberText::default();
        mapping::message_headers(&content.properties, &mut numbers, &mut headers);
        self.session.send_message(&headers, &content.body);
    }

    /// Appends pending output bytes to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        self.session.poll_transmit(out);
    }

    /// After the output was written: return credit for auto-ack deliveries.
    pub fn on_written(&mut self) {
        let mut shard = self.shard.borrow_mut();
        for sub in self.subs.iter_mut() {
            if sub.credit_due > 0 {
                shard.credit(sub.owner, &sub.queue, sub.consumer, sub.credit_due);
                sub.credit_due = 0;
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        while let Some(event) = self.session.poll_event() {
            if let Event::Closed { reason } = event {
                tracing::debug!(conn = %self.id, ?reason, "stomp session timed out");
            }
        }
    }

    /// True once the socket should be flushed and closed.
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// Releases everything the connection held: consumers (their unacked messages are
    /// requeued by their queues), exclusive queues, the mailbox.
    pub fn close(mut self) {
        let mut shard = self.shard.borrow_mut();
        for sub in self.subs.drain() {
            shard.cancel_nowait(sub.owner, &sub.queue, sub.consumer);
        }
        for queue in self.exclusive_queues.drain(..) {
            shard.meta_nowait(crate::model::routing::MetaOp::DeleteQueue { name: queue });
        }
        shard.unregister_conn(self.id);
        tracing::debug!(conn = %self.id, clean = self.closed_cleanly, "stomp connection closed");
    }
}

impl crate::gateway::Gateway for StompConn {
    fn take_move(&mut self) -> Option<ShardId> {
        self.move_to.take()
    }
    fn start_move(self) -> Result<crate::gateway::Arrival<Self>, Self> {
        // Nothing but the registration to release (see `move_candidate`).
        self.shard.borrow_mut().unregister_conn(self.id);
        tracing::debug!(conn = %self.id, "stomp connection moving to its queue's shard");
        let moving = MovingStomp { session: self.session, peer: self.peer };
        Ok(Box::new(move |shard, users, wake| {
            let mut conn = StompConn::new(shard, moving.peer, users, wake, Instant::now())?;
            conn.session = moving.session;
            conn.asked_to_move = true;
            conn.confirmed_run.end();
            tracing::debug!(conn = %conn.id, "stomp connection moved");
            Some(conn)
        }))
    }
    /// Not parked (only MQTT connections are, see `runtime::park`).
    type Parked = std::convert::Infallible;
    fn resume(parked: Self::Parked, _peer: std::net::SocketAddr, _now: Instant) -> Self {
        match parked {}
    }
    fn parked_timeout(parked: &Self::Parked) -> Option<Instant> {
        match *parked {}
    }
    fn refusal() -> &'static [u8] {
        b"ERROR\nmessage:connection limit reached\n\n\0"
    }
    fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        StompConn::handle_input(self, bytes, now);
    }
    async fn handle_events(&mut self) {
        StompConn::handle_events(self).await;
    }
    fn drain_mailbox(&mut self) {
        StompConn::drain_mailbox(self);
    }
    fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        StompConn::poll_transmit(self, out);
    }
    fn on_written(&mut self) {
        StompConn::on_written(self);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        StompConn::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        StompConn::handle_timeout(self, now);
    }
    fn is_closed(&self) -> bool {
        StompConn::is_closed(self)
    }
    fn input_held(&self) -> bool {
        StompConn::input_held(self)
    }
    fn close(self) {
        StompConn::close(self);
    }
}
