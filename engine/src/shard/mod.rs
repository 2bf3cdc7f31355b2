//! One shard's state: its copy of the routing table, the queues it owns, its connections'
//! mailboxes, its outboxes to other shards and its journal. Lives on exactly one executor
//! thread behind `Rc<RefCell<_>>`; never borrowed across an `.await` (the runtime and the
//! gateways take short borrows). Runtime-free: cross-shard traffic is queued in per-peer
//! outboxes that the runtime flushes in batches, and wake hooks are plain closures, so a
//! deterministic simulation can drive shards directly.

mod authority;
mod compaction;
pub mod dead_letter;
mod delivery;
mod flow;
pub mod mailbox;
pub mod mqtt;
pub mod msg;
pub mod recovery;
mod transaction;
pub mod wills;

use crate::fastmap::HashMap;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_wire::Limits;
use futures_channel::oneshot;

use crate::error::{EngineError, ErrorKind};
use crate::ids::{Completion, ConnectionId, RequestId, ShardId};
use crate::journal::Journal;
use crate::model::queue::Queue;
use crate::model::routing::RoutingTable;
use crate::placement::Placement;
use mailbox::{ConnHandle, Mailbox};
use msg::{Reply, Request, ShardMsg};

pub use authority::Authority;

/// The metadata authority's shard: it serialises every routing change.
pub const AUTHORITY: ShardId = ShardId(0);

type ReplySender = oneshot::Sender<Result<Reply, EngineError>>;

/// A shard's state. See the module docs.
pub struct Shard {
    id: ShardId,
    placement: Placement,
    limits: Limits,
    routing: RoutingTable,
    queues: HashMap<String, Queue>,
    conns: HashMap<u32, ConnHandle>,
    /// `conns.len()`, for the other shards' accept loops (see `runtime::spread`).
    conn_gauge: Arc<AtomicUsize>,
    next_conn: u32,
    outbox: Vec<Vec<ShardMsg>>,
    outbox_wake: Rc<dyn Fn()>,
    pending: HashMap<RequestId, ReplySender>,
    next_request: u64,
    authority: Option<Authority>,
    journal: Journal,
    name_seed: u64,
    /// A disk limit holds: connections that publish stop being read until it clears.
    disk_alarm: bool,
    /// The shard's clock in ms (injected: tests and simulations set their own).
    clock: Rc<dyn Fn() -> u64>,
    /// Wall-clock ms since the Unix epoch, for the few deadlines that must survive a restart
    /// (MQTT wills waiting for their delay). Injected like `clock`.
    wall_clock: Rc<dyn Fn() -> u64>,
    /// MQTT client ids placed here, and the retained store when its queue lives here.
    mqtt: mqtt::MqttRegistry,
    /// Owned queues whose flow control is looked at every tick (congested or stalled).
    flow_watch: Vec<String>,
    /// Kept between dispatches (`delivery.rs`), so a dispatch allocates nothing.
    dispatch_scratch: Vec<crate::model::queue::Delivery>,
    /// A transaction being committed: its enqueues and settles, per owning shard (see
    /// [`Shard::begin_transaction`]).
    transaction: Option<Vec<(ShardId, Vec<ShardMsg>)>>,
    /// Transactions spanning shards this shard coordinates, by internal token
    /// (`transaction.rs`).
    spanning: HashMap<u64, transaction::Spanning>,
    /// Sequence of the ids of the transactions spanning shards it coordinates.
    tx_seq: u64,
    /// Dead-lettered messages waiting for their copies to land, by internal token
    /// (`dead_letter.rs`).
    copies_in_flight: HashMap<u64, dead_letter::CopiesInFlight>,
    next_internal_token: u64,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("id", &self.id).field("queues", &self.queues.len()).finish_non_exhaustive()
    }
}

/// Milliseconds since the first call in this process (the runtime's default shard clock).
fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch (the runtime's default wall clock; 0 before 1970).
fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A shard shared by the tasks of its own executor.
pub type ShardRef = Rc<RefCell<Shard>>;

impl Shard {
    pub fn new(id: ShardId, placement: Placement, limits: Limits, journal: Journal, outbox_wake: Rc<dyn Fn()>) -> Self {
        let peers = usize::from(placement.shard_count());
        assert!(id.0 < placement.shard_count(), "shard id within shard count");
        Shard {
            id,
            authority: (id == AUTHORITY).then(Authority::default),
            placement,
            limits,
            routing: RoutingTable::default(),
            queues: HashMap::default(),
            conns: HashMap::default(),
            conn_gauge: Arc::default(),
            next_conn: 1,
            outbox: (0..peers).map(|_| Vec::new()).collect(),
            outbox_wake,
            pending: HashMap::default(),
            next_request: 1,
            journal,
            name_seed: u64::from(id.0) << 48,
            disk_alarm: false,
            clock: Rc::new(monotonic_ms),
            wall_clock: Rc::new(unix_ms),
            mqtt: mqtt::MqttRegistry::default(),
            flow_watch: Vec::new(),
            dispatch_scratch: Vec::new(),
            transaction: None,
            spanning: HashMap::default(),
            tx_seq: 1,
            copies_in_flight: HashMap::default(),
            next_internal_token: 1,
        }
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Bytes of log segments this shard holds on disk.
    pub fn journal_disk_bytes(&self) -> u64 {
        self.journal.disk_bytes()
    }

    pub fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// Queues this shard owns (for admin views and tests).
    pub fn owned_queue(&self, name: &str) -> Option<&Queue> {
        self.queues.get(name)
    }

    /// A fresh server-generated queue name that places on this shard.
    pub fn generate_queue_name(&mut self) -> String {
        self.name_seed += 1;
        self.placement.name_for_shard("/", self.id, self.name_seed)
    }

    /// The first owned queue at or over its message limit: publishers are then held back
    /// (checked a few times a second by the runtime), as under a disk alarm.
    pub fn queue_over_limit(&self) -> Option<(&str, usize)> {
        let limit = self.limits.queue_message_count_max;
        self.queues.values().find(|q| q.len() >= limit).map(|q| (q.spec.name.as_str(), q.len()))
    }

    /// Replaces the shard's clock (tests, deterministic simulation).
    pub fn set_clock(&mut self, clock: Rc<dyn Fn() -> u64>) {
        self.clock = clock;
    }

    /// Replaces the shard's wall clock (tests, deterministic simulation).
    pub fn set_wall_clock(&mut self, clock: Rc<dyn Fn() -> u64>) {
        self.wall_clock = clock;
    }

    /// Wall-clock ms since the Unix epoch (see `wall_clock`).
    pub(super) fn unix_ms(&self) -> u64 {
        (self.wall_clock)()
    }

    /// Whether publishers must be held back (some shard is over a disk limit).
    pub fn disk_alarm(&self) -> bool {
        self.disk_alarm
    }

    pub fn set_disk_alarm(&mut self, alarm: bool) {
        self.disk_alarm = alarm;
    }

    // ----- connections -------------------------------------------------------------------

    /// Registers a connection living on this shard; `None` at the connection limit.
    pub fn register_conn(&mut self, wake: Rc<dyn mailbox::Wake>) -> Option<(ConnectionId, Rc<RefCell<Mailbox>>)> {
        if self.conns.len() >= self.limits.connection_count_max {
            return None;
        }
        let local = self.next_conn;
        // Never 0: that is the shard itself (`ConnectionId::shard_itself`).
        self.next_conn = self.next_conn.wrapping_add(1).max(1);
        let mailbox = Rc::new(RefCell::new(Mailbox::default()));
        self.conns.insert(local, ConnHandle { mailbox: mailbox.clone(), wake });
        self.conn_gauge.store(self.conns.len(), Ordering::Relaxed);
        Some((ConnectionId { shard: self.id, local }, mailbox))
    }

    /// Forgets a connection. Deliveries still in its mailbox go back to their queues.
    pub fn unregister_conn(&mut self, conn: ConnectionId) {
        assert_eq!(conn.shard, self.id, "connection lives on this shard");
        if let Some(handle) = self.conns.remove(&conn.local) {
            self.conn_gauge.store(self.conns.len(), Ordering::Relaxed);
            let leftovers = std::mem::take(&mut handle.mailbox.borrow_mut().deliveries);
            for delivery in leftovers {
                self.return_delivery(delivery);
            }
        }
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Where this shard publishes its connection count (read by the shards' accept loops).
    pub fn set_conn_gauge(&mut self, gauge: Arc<AtomicUsize>) {
        gauge.store(self.conns.len(), Ordering::Relaxed);
        self.conn_gauge = gauge;
    }

    fn with_conn(&mut self, conn: ConnectionId, fill: impl FnOnce(&mut Mailbox)) -> bool {
        match self.conns.get(&conn.local) {
            Some(handle) => {
                fill(&mut handle.mailbox.borrow_mut());
                handle.wake.wake();
                true
            }
            None => false,
        }
    }

    // ----- cross-shard plumbing ----------------------------------------------------------

    /// Queues `msg` for shard `to` (never this shard).
    fn send(&mut self, to: ShardId, msg: ShardMsg) {
        assert_ne!(to, self.id, "local work is handled in place, not sent");
        let was_idle = self.outbox.iter().all(Vec::is_empty);
        self.outbox[to.index()].push(msg);
        if was_idle {
            (self.outbox_wake)();
        }
    }

    /// Whether nothing waits to leave for `to`.
    pub fn outbox_is_empty(&self, to: ShardId) -> bool {
        self.outbox[to.index()].is_empty()
    }

    /// Takes the batch queued for `to` (the runtime sends it), leaving `spare` (an empty,
    /// possibly recycled batch) to fill next.
    pub fn swap_outbox(&mut self, to: ShardId, spare: Vec<ShardMsg>) -> Vec<ShardMsg> {
        debug_assert!(spare.is_empty());
        std::mem::replace(&mut self.outbox[to.index()], spare)
    }

    /// Messages waiting to leave this shard: gateways stop reading peers above a bound.
    pub fn outbox_len(&self) -> usize {
        self.outbox.iter().map(Vec::len).sum()
    }

    /// Sends a request to shard `to` (possibly this one); the receiver resolves with the reply.
    pub fn request(&mut self, to: ShardId, request: Request) -> oneshot::Receiver<Result<Reply, EngineError>> {
        let (tx, rx) = oneshot::channel();
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.pending.insert(id, tx);
        if to == self.id {
            self.handle_request(self.id, id, request);
        } else {
            self.send(to, ShardMsg::Request { from: self.id, id, request });
        }
        rx
    }

    fn reply(&mut self, to: ShardId, id: RequestId, result: Result<Reply, EngineError>) {
        if to == self.id {
            if let Some(tx) = self.pending.remove(&id) {
                // The requester may have gone (connection closed): nothing to do then.
                let _ = tx.send(result);
            }
        } else {
            self.send(to, ShardMsg::Reply { id, result });
        }
    }

    /// Handles every message of a batch that arrived from another shard, leaving it empty
    /// (its capacity goes back to the sender).
    pub fn handle_batch(&mut self, from: ShardId, batch: &mut Vec<ShardMsg>) {
        for msg in batch.drain(..) {
            self.handle_msg(from, msg);
        }
    }

    fn handle_msg(&mut self, from: ShardId, msg: ShardMsg) {
        match msg {
            ShardMsg::Enqueue { queue: Some(queue), content, completion, publisher } => {
                self.enqueue_local(&queue, content, completion, publisher);
            }
            ShardMsg::Enqueue { queue: None, content, completion, publisher } => {
                let named = content.clone();
                self.enqueue_local(&named.routing_key, content, completion, publisher);
            }
            ShardMsg::TxPart { part, turn } => self.apply_transaction_part(part, turn),
            ShardMsg::TxRelease { key } => self.release_transaction_part(key),
            ShardMsg::Completed { completion, result } => self.complete(completion, result),
            ShardMsg::Deliver(delivery) => self.deliver_local(delivery),
            ShardMsg::Settle { queue, tags, requeue, completion } => {
                self.settle_local(&queue, &tags, requeue, completion)
            }
            ShardMsg::Credit { queue, consumer, count } => self.credit_local(&queue, consumer, count),
            ShardMsg::FlowHold { conn, queue } => self.flow_hold_local(conn, queue),
            ShardMsg::FlowRelease { conn, queue } => self.flow_release_local(conn, &queue),
            ShardMsg::Request { from, id, request } => self.handle_request(from, id, request),
            ShardMsg::Reply { id, result } => {
                if let Some(tx) = self.pending.remove(&id) {
                    let _ = tx.send(result);
                }
            }
            ShardMsg::MetaApply { op, ack } => {
                self.apply_meta(&op);
                self.send(from, ShardMsg::MetaApplied { ack });
            }
            ShardMsg::MetaApplied { ack } => self.meta_applied(ack),
            ShardMsg::PublishRejected { conn, queue } => {
                self.with_conn(conn, |m| m.rejected.push(queue));
            }
            ShardMsg::ConsumerCancelled { consumer, queue } => {
                self.with_conn(consumer.conn, |m| m.cancelled.push((consumer, queue)));
            }
            ShardMsg::MqttTakeover { conn } => {
                self.with_conn(conn, |m| m.taken_over = true);
            }
            ShardMsg::MqttRelease(release) => self.mqtt_release(*release),
            ShardMsg::Retain { content, completion } => self.retain_local(content, completion),
            ShardMsg::SysStats(stats) => self.mqtt_sys_stats(from, stats),
            ShardMsg::MqttRestore { client_id, expiry_ms, queue } => self.mqtt_restore(client_id, expiry_ms, queue),
            ShardMsg::MqttWillStore(will) => self.will_store_local(*will),
            ShardMsg::MqttWillDrop { client_id } => self.will_drop_local(&client_id),
            ShardMsg::MqttWillRestore(will) => self.mqtt_restore_will(*will),
        }
    }

    fn handle_request(&mut self, from: ShardId, id: RequestId, request: Request) {
        match request {
            Request::Meta(op) => self.authority_request(from, id, op),
            Request::Consume { queue, consumer } => {
                let result = self.consume_local(&queue, consumer);
                self.reply(from, id, result.map(|()| Reply::Consumed));
            }
            Request::Cancel { queue, consumer } => {
                self.cancel_local(&queue, consumer);
                self.reply(from, id, Ok(Reply::Cancelled));
            }
            Request::Stats { queue, declared } => {
                self.expire(&queue);
                let now = self.now_ms();
                let result = match self.queues.get_mut(&queue) {
                    Some(q) => {
                        if declared {
                            q.touch(now);
                        }
                        Ok(Reply::Stats { messages: q.ready_len(), consumers: q.consumer_count() })
                    }
                    None => Err(EngineError::new(ErrorKind::NotFound, format!("no queue '{queue}' in vhost '/'"))),
                };
                self.reply(from, id, result);
            }
            Request::Get { queue, consumer, no_ack } => {
                let result = self.get_local(&queue, consumer, no_ack);
                self.reply(from, id, result);
            }
            Request::MqttClaim { client_id, conn, clean } => {
                let (saved, expired) = self.mqtt_claim(client_id, conn, clean);
                self.reply(from, id, Ok(Reply::MqttClaimed { saved, expired }));
            }
            Request::MqttRetained { patterns } => {
                let messages = self.retained_matching(&patterns);
                self.reply(from, id, Ok(Reply::MqttRetained(messages)));
            }
            Request::Purge { queue } => {
                let result = match self.queues.get_mut(&queue) {
                    Some(q) => {
                        let durable = q.spec.durable;
                        let purged = q.purge();
                        // Settled in the log like an ack, so that a restart does not bring
                        // them back (the next group commit syncs it).
                        for m in purged.iter().filter(|m| durable && m.content.properties.persistent) {
                            self.journal.append_settle(&queue, m.msg_id);
                        }
                        Ok(Reply::Purged(purged.len()))
                    }
                    None => Err(EngineError::new(ErrorKind::NotFound, format!("no queue '{queue}'"))),
                };
                self.reply(from, id, result);
            }
        }
    }

    /// The address of work this shard itself waits on.
    fn internal_address(&self) -> ConnectionId {
        ConnectionId::shard_itself(self.id)
    }

    /// Reports a finished piece of work to the connection that waits on it.
    fn complete(&mut self, completion: Completion, result: Result<(), EngineError>) {
        if completion.conn == self.internal_address() {
            if self.coordinates(completion.token) {
                self.spanning_reported(completion.token);
            } else {
                self.copy_landed(completion.token, result);
            }
        } else if completion.conn.shard == self.id {
            self.with_conn(completion.conn, |m| m.completions.push((completion.token, result)));
        } else {
            self.send(completion.conn.shard, ShardMsg::Completed { completion, result });
        }
    }

    /// Puts recovered messages back into a queue this shard owns, then dispatches.
    pub fn restore_messages(&mut self, name: &str, messages: Vec<crate::model::message::QueuedMessage>) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        for message in messages {
            queue.restore(message);
        }
        self.dispatch(name);
    }

    /// Releases completions whose journal records are now durable.
    pub fn journal_synced(&mut self) {
        for completion in self.journal.take_durable_waiters() {
            self.complete(completion, Ok(()));
        }
    }
}
