//! The MQTT gateway: one [`MqttConn`] per connection, on the connection's shard, owned by the
//! connection's task. It feeds socket bytes to the sans-IO `ferry_mqtt::Session`, turns its
//! events into engine operations and the mailbox into PUBLISH packets. A session's
//! subscriptions are bindings from `amq.topic` to one session queue (durable and named
//! `mqtt-subscription-<client id>` for sessions that outlive the connection, a private queue
//! otherwise), so STOMP and AMQP publishers reach MQTT subscribers and back; a shared
//! subscription `$share/G/F` is one queue per group whose members compete. QoS ≥ 1 publishes
//! are acknowledged (PUBACK/PUBREC) only once every queue holds them, after the log sync for
//! durable queues. Control operations are awaited in packet order. Where the specs leave
//! room the behaviour is Mosquitto's or RabbitMQ's MQTT plugin's (see README).

pub(crate) mod connect;
mod deliver;
mod mapping;
mod park;
mod subscribe;
pub mod topic_map;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use ferry_mqtt::{Event, ReasonCode, Session, SessionConfig, SubOptions, Will};

use crate::auth::Users;
use crate::fastmap::HashMap;
use crate::ids::{ConnectionId, ConsumerKey, DeliveryTag, ShardId};
use crate::model::topic::TopicPattern;
use crate::shard::ShardRef;
use crate::shard::mailbox::Mailbox;
use crate::shard::mailbox::Wake;
use deliver::Pending;
pub use park::ParkedMqtt;

/// The queue behind a session's (non-shared) subscriptions.
#[derive(Debug, Clone)]
struct SessionQueue {
    name: String,
    owner: ShardId,
    consumer: ConsumerKey,
    /// The durable `mqtt-subscription-<id>` queue (else a private one, deleted on close).
    durable_name: bool,
}

/// One subscription of the session.
#[derive(Debug)]
struct Sub {
    filter: String,
    pattern: String,
    compiled: TopicPattern,
    options: SubOptions,
    id: Option<u32>,
    /// Shared subscription: its group queue and the consumer on it.
    shared: Option<(String, ShardId, ConsumerKey)>,
}

/// A QoS ≥ 1 publish waiting for the queues it reached (and the retained store).
#[derive(Debug)]
struct PendingAck {
    packet_id: u16,
    remaining: usize,
    routed: usize,
    failed: bool,
}

/// What an unacknowledged outbound packet id settles.
#[derive(Debug, Clone)]
struct Target {
    owner: ShardId,
    queue: String,
    tag: DeliveryTag,
}

/// One MQTT connection's gateway state. See the module docs.
pub struct MqttConn {
    id: ConnectionId,
    shard: ShardRef,
    mailbox: Rc<RefCell<Mailbox>>,
    session: Session,
    users: Rc<Users>,
    peer: SocketAddr,
    /// Set once CONNECT is accepted.
    client_id: Option<String>,
    /// The shard that registers this client id.
    registry: ShardId,
    /// Boxed: a will carries a whole property set; most connections have none.
    will: Option<Box<Will>>,
    /// Seconds the session outlives the connection: `None` forever, `Some(0)` not at all.
    session_expiry: Option<u32>,
    queue: Option<SessionQueue>,
    subs: Vec<Sub>,
    next_consumer: u64,
    /// Client receive maximum, as consumer credit.
    credit: u32,
    inflight: HashMap<u16, Option<Target>>,
    backlog: VecDeque<Pending>,
    acks: HashMap<u64, PendingAck>,
    next_token: u64,
    taken_over: bool,
    /// A DISCONNECT arrived (the will is discarded unless it asked otherwise).
    disconnected: bool,
    publisher: bool,
}

impl std::fmt::Debug for MqttConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConn").field("id", &self.id).field("client", &self.client_id).finish_non_exhaustive()
    }
}

impl MqttConn {
    /// Registers a connection on `shard`; `None` when the shard is at its connection limit.
    pub fn new(shard: ShardRef, peer: SocketAddr, users: Rc<Users>, wake: Rc<dyn Wake>, now: Instant) -> Option<Self> {
        let (id, mailbox, limits) = crate::gateway::register(&shard, wake)?;
        let config = SessionConfig { limits };
        let registry = id.shard;
        Some(MqttConn {
            id,
            registry,
            shard,
            mailbox,
            session: Session::new(config, now),
            users,
            peer,
            client_id: None,
            will: None,
            session_expiry: Some(0),
            queue: None,
            subs: Vec::new(),
            next_consumer: 1,
            credit: 1,
            inflight: HashMap::default(),
            backlog: VecDeque::new(),
            acks: HashMap::default(),
            next_token: 1,
            taken_over: false,
            disconnected: false,
            publisher: false,
        })
    }

    /// Feeds bytes from the socket; the session parses every complete packet into events.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.session.handle_input(bytes, now);
    }

    /// Performs the parsed packets, in order (the runtime boxes this future: the handlers'
    /// states are large and live only while packets are handled).
    pub async fn handle_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            self.handle_event(event).await;
        }
        self.drain_mailbox();
    }

    async fn handle_event(&mut self, event: Event) {
        match event {
            // Packets behind the CONNECT are parsed once it is answered (they follow as events).
            Event::Connect(connect) => self.connect(*connect).await,
            Event::Publish(publish) => {
                self.publisher = true;
                self.publish(publish).await;
            }
            Event::Acked { packet_id } => self.acked(packet_id),
            Event::Completed { packet_id } => self.completed(packet_id),
            Event::Subscribe(subscribe) => self.subscribe(subscribe).await,
            Event::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe).await,
            Event::Disconnect { reason, session_expiry } => {
                self.disconnected = true;
                if reason != ReasonCode::DISCONNECT_WITH_WILL {
                    self.will = None;
                }
                if let Some(expiry) = session_expiry.map(expiry_from)
                    && expiry != self.session_expiry
                {
                    self.session_expiry = expiry;
                    // Zero ends the session at close (its queue is deleted then).
                    if expiry != Some(0)
                        && let Err(e) = self.record_session_expiry().await
                    {
                        tracing::warn!(conn = %self.id, "recording the session expiry failed: {e}");
                    }
                }
            }
            Event::Closed { reason } => tracing::debug!(conn = %self.id, ?reason, "mqtt session closed"),
        }
    }

    /// Moves what the engine has for this connection into the session's output.
    pub fn drain_mailbox(&mut self) {
        // `flow_held` stays behind: MQTT publishers are not held by queue flow control (a
        // subscriber's session queue behind would slow every publisher to its topics).
        let Mailbox { deliveries, completions, cancelled, rejected, taken_over, .. } =
            crate::gateway::take_mail(&self.mailbox);
        if taken_over && !self.taken_over {
            self.taken_over = true;
            tracing::debug!(conn = %self.id, client = ?self.client_id, "mqtt session taken over");
            self.session.disconnect(ReasonCode::SESSION_TAKEN_OVER, None);
        }
        if !rejected.is_empty() {
            // A QoS 0 publish a full queue refused: the client learns it by the disconnect.
            self.session.disconnect(ReasonCode::QUOTA_EXCEEDED, None);
        }
        for (token, result) in completions {
            self.complete(token, result.is_ok());
        }
        for (consumer, queue) in cancelled {
            tracing::debug!(conn = %self.id, %queue, tag = consumer.tag, "mqtt consumer cancelled by the broker");
            if self.queue.as_ref().is_some_and(|q| q.consumer == consumer) {
                self.queue = None;
            }
            self.subs.retain(|s| s.shared.as_ref().is_none_or(|(_, _, c)| *c != consumer));
        }
        for delivery in deliveries {
            self.deliver(delivery);
        }
        self.flush_backlog();
    }

    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        self.session.poll_transmit(out);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        while let Some(event) = self.session.poll_event() {
            if let Event::Closed { reason } = event {
                tracing::debug!(conn = %self.id, ?reason, "mqtt session timed out");
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// Input waits while a disk limit holds (for publishers) or while the client has the
    /// broker's receive maximum of publishes unacknowledged.
    pub fn input_held(&self) -> bool {
        self.session.inbound_held() || (self.publisher && self.shard.borrow().disk_alarm())
    }
}

/// A 5.0 Session Expiry Interval as the gateway keeps it (`None`: never expires).
fn expiry_from(seconds: u32) -> Option<u32> {
    (seconds != u32::MAX).then_some(seconds)
}

impl crate::gateway::Gateway for MqttConn {
    type Parked = ParkedMqtt;
    fn refusal() -> &'static [u8] {
        // CONNACK, return code 3: server unavailable (3.1.1 format, understood by 5.0 clients
        // as a malformed answer to close on).
        &[0x20, 0x02, 0x00, 0x03]
    }
    fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        MqttConn::handle_input(self, bytes, now);
    }
    async fn handle_events(&mut self) {
        MqttConn::handle_events(self).await;
    }
    fn drain_mailbox(&mut self) {
        MqttConn::drain_mailbox(self);
    }
    fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        MqttConn::poll_transmit(self, out);
    }
    fn on_written(&mut self) {}
    fn poll_timeout(&self) -> Option<Instant> {
        MqttConn::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        MqttConn::handle_timeout(self, now);
    }
    fn is_closed(&self) -> bool {
        MqttConn::is_closed(self)
    }
    fn input_held(&self) -> bool {
        MqttConn::input_held(self)
    }
    fn close(self) {
        MqttConn::close(self);
    }
    fn parkable(&self) -> bool {
        MqttConn::parkable(self)
    }
    fn park(self) -> Result<ParkedMqtt, Self> {
        MqttConn::park(self)
    }
    fn resume(parked: ParkedMqtt, peer: SocketAddr, now: Instant) -> Self {
        parked.resume(peer, now)
    }
    fn parked_timeout(parked: &ParkedMqtt) -> Option<Instant> {
        parked.poll_timeout()
    }
}
