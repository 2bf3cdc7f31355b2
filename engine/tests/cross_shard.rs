//! Cross-shard behaviour without a runtime: two `Shard`s, memory journals, and a pump that
//! moves outbox batches between them until nothing is in flight (what the runtime's mesh
//! does, deterministically). Shows a queue owned by shard 1 serving a connection on shard 0,
//! the reverse, topic fan-out across shards, and requeue on consumer loss.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferry_engine::ids::{Completion, ConnectionId, ConsumerKey, DeliveryTag, ShardId};
use ferry_engine::journal::{Journal, SyncPolicy};
use ferry_engine::model::flow::STALL_LOOKS;
use ferry_engine::model::message::{Content, Properties};
use ferry_engine::model::queue::Consumer;
use ferry_engine::model::routing::{MetaOp, QueueSpec};
use ferry_engine::placement::Placement;
use ferry_engine::shard::mailbox::Mailbox;
use ferry_engine::shard::msg::{Reply, Request};
use ferry_engine::shard::wills::WILLS_QUEUE;
use ferry_engine::shard::{AUTHORITY, Shard};
use ferry_storage::LogConfig;
use ferry_wire::Limits;

struct Cluster {
    shards: Vec<Shard>,
}

impl Cluster {
    fn new(overrides: &[(&str, u16)]) -> Self {
        Self::with_limits(overrides, Limits::test_min())
    }

    fn with_limits(overrides: &[(&str, u16)], limits: Limits) -> Self {
        Self::with_journals(overrides, limits, |_| Journal::memory(Rc::new(|| {})))
    }

    /// Shards whose journals are real logs in `dir`/shard-N.
    fn on_disk(overrides: &[(&str, u16)], dir: &std::path::Path) -> Self {
        Self::with_journals(overrides, Limits::test_min(), |i| {
            let log = LogConfig { segment_size_bytes: 1 << 20, ..LogConfig::new(dir.join(format!("shard-{i}"))) };
            Journal::open(log, SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("open log").0
        })
    }

    fn with_journals(overrides: &[(&str, u16)], limits: Limits, journal: impl Fn(u16) -> Journal) -> Self {
        let overrides: HashMap<String, ShardId> =
            overrides.iter().map(|(q, s)| ((*q).to_owned(), ShardId(*s))).collect();
        let placement = Placement::new(2, overrides);
        let shards = (0..2)
            .map(|i| Shard::new(ShardId(i), placement.clone(), limits.clone(), journal(i), Rc::new(|| {})))
            .collect();
        Cluster { shards }
    }

    /// Delivers every queued batch (and finishes journal syncs) until the system is quiet.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for from in 0..2u16 {
                for to in 0..2u16 {
                    if from == to {
                        continue;
                    }
                    let mut batch = self.shards[usize::from(from)].swap_outbox(ShardId(to), Vec::new());
                    if !batch.is_empty() {
                        moved = true;
                        self.shards[usize::from(to)].handle_batch(ShardId(from), &mut batch);
                    }
                }
            }
            for shard in &mut self.shards {
                if let Some(work) = shard.journal_mut().sync_work() {
                    moved = true;
                    let result = work.run();
                    shard.journal_mut().complete_sync(result).expect("memory sync");
                    shard.journal_synced();
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the shards never went quiet");
    }

    fn request(&mut self, on: u16, to: ShardId, request: Request) -> Reply {
        let mut rx = self.shards[usize::from(on)].request(to, request);
        self.pump();
        rx.try_recv().expect("not cancelled").expect("answered").expect("request succeeded")
    }

    fn declare(&mut self, on: u16, name: &str, durable: bool) -> ShardId {
        let owner = self.shards[usize::from(on)].placement().place("/", name, 0);
        let spec = QueueSpec {
            name: name.into(),
            durable,
            auto_delete: false,
            exclusive: None,
            arguments: vec![],
            shard: owner,
        };
        self.request(on, AUTHORITY, Request::Meta(MetaOp::DeclareQueue { spec, passive: false, by: None }));
        owner
    }

    fn connect(&mut self, on: u16) -> (ConnectionId, Rc<RefCell<Mailbox>>) {
        self.shards[usize::from(on)].register_conn(Rc::new(|| {})).expect("under the limit")
    }
}

fn content(body: &'static str, persistent: bool) -> Arc<Content> {
    Arc::new(Content {
        exchange: String::new(),
        routing_key: String::new(),
        properties: Properties { persistent, ..Properties::default() },
        body: Bytes::from_static(body.as_bytes()),
    })
}

fn consume(cluster: &mut Cluster, on: u16, owner: ShardId, queue: &str, conn: ConnectionId, tag: u64) -> ConsumerKey {
    let key = ConsumerKey { conn, tag };
    let consumer = Consumer { key, credit_max: 10, outstanding: 0, no_ack: false, priority: 0, exclusive: false };
    let reply = cluster.request(on, owner, Request::Consume { queue: queue.into(), consumer });
    assert!(matches!(reply, Reply::Consumed), "{reply:?}");
    key
}

fn bodies(mailbox: &Rc<RefCell<Mailbox>>) -> Vec<Bytes> {
    mailbox.borrow().deliveries.iter().map(|d| d.message.content.body.clone()).collect()
}

#[test]
fn queue_on_shard_1_serves_a_connection_on_shard_0_and_the_reverse() {
    let mut c = Cluster::new(&[("on-one", 1), ("on-zero", 0)]);
    for (conn_shard, queue, owner) in [(0u16, "on-one", ShardId(1)), (1u16, "on-zero", ShardId(0))] {
        assert_eq!(c.declare(conn_shard, queue, true), owner);
        let (conn, mailbox) = c.connect(conn_shard);
        consume(&mut c, conn_shard, owner, queue, conn, 1);
        // Publish from the connection's shard: routed there, enqueued on the owner, delivered back.
        let completion = Completion { conn, token: 42 };
        let reached = c.shards[usize::from(conn_shard)]
            .publish("", queue, content("hello", true), None, || Some(completion))
            .expect("routable");
        assert_eq!(reached, 1);
        c.pump();
        assert_eq!(bodies(&mailbox), [Bytes::from_static(b"hello")]);
        let done: Vec<u64> = mailbox
            .borrow()
            .completions
            .iter()
            .map(|(t, r)| {
                assert!(r.is_ok());
                *t
            })
            .collect();
        assert_eq!(done, [42], "the persistent publish completed after the owner's sync");
        // Ack crosses back to the owner and empties the queue.
        let tag = mailbox.borrow().deliveries[0].tag;
        c.shards[usize::from(conn_shard)].settle(owner, queue, vec![tag], None, None);
        c.pump();
        assert!(c.shards[owner.index()].owned_queue(queue).expect("owned").is_empty());
        assert!(c.shards[usize::from(conn_shard)].owned_queue(queue).is_none(), "only the owner holds it");
    }
}

#[test]
fn topic_fan_out_reaches_subscribers_on_both_shards() {
    let mut c = Cluster::new(&[("sub-a", 0), ("sub-b", 1)]);
    let mut mailboxes = Vec::new();
    for (i, queue) in ["sub-a", "sub-b"].into_iter().enumerate() {
        let on = u16::try_from(i).expect("small");
        let owner = c.declare(on, queue, false);
        let bind = MetaOp::Bind {
            exchange: "amq.topic".into(),
            queue: queue.into(),
            key: "stock.#".into(),
            arguments: vec![],
        };
        c.request(on, AUTHORITY, Request::Meta(bind));
        let (conn, mailbox) = c.connect(1 - on);
        consume(&mut c, 1 - on, owner, queue, conn, 1);
        mailboxes.push(mailbox);
    }
    let msg = Arc::new(Content {
        exchange: "amq.topic".into(),
        routing_key: "stock.nyse.ibm".into(),
        ..(*content("tick", false)).clone()
    });
    assert_eq!(c.shards[0].publish("amq.topic", "stock.nyse.ibm", msg, None, || None).expect("exchange exists"), 2);
    c.pump();
    for mailbox in &mailboxes {
        assert_eq!(bodies(mailbox), [Bytes::from_static(b"tick")]);
    }
}

/// The queues holding a connection's publishes back, sorted.
fn held_by(mailbox: &Rc<RefCell<Mailbox>>) -> Vec<String> {
    let mut queues: Vec<String> = mailbox.borrow().flow_held.iter().cloned().collect();
    queues.sort();
    queues
}

/// Acks every delivery in `mailbox` (a consumer keeping up).
fn ack_all(c: &mut Cluster, on: u16, owner: ShardId, queue: &str, mailbox: &Rc<RefCell<Mailbox>>) {
    let tags = mailbox.borrow_mut().deliveries.drain(..).map(|d| d.tag).collect();
    c.shards[usize::from(on)].settle(owner, queue, tags, None, None);
    c.pump();
}

#[test]
fn a_backlog_holds_its_publisher_across_shards_until_the_consumer_catches_up() {
    let limits = Limits { queue_flow_message_count: 8, ..Limits::test_min() };
    let mut c = Cluster::with_limits(&[("flow", 1)], limits);
    let owner = c.declare(0, "flow", false);
    let (publisher, held) = c.connect(0);
    let (consumer, mailbox) = c.connect(0);
    let publish = |c: &mut Cluster, n: usize| {
        for _ in 0..n {
            c.shards[0].publish("", "flow", content("m", false), Some(publisher), || None).expect("routable");
        }
        c.pump();
    };
    // No consumer: a queue filled for later never holds its publisher.
    publish(&mut c, 40);
    assert!(held.borrow().flow_held.is_empty());
    consume(&mut c, 0, owner, "flow", consumer, 1);
    assert_eq!(bodies(&mailbox).len(), 10, "credit 10");
    // 30 ready, over the mark of 8, with a consumer: the next publish holds the publisher.
    publish(&mut c, 1);
    assert_eq!(held_by(&held), ["flow"]);
    assert!(held.borrow().is_empty(), "a hold is state, not mail");
    assert_eq!(held.borrow_mut().take().flow_held.len(), 0, "and stays when the mail is taken");
    assert_eq!(held_by(&held), ["flow"]);
    // The consumer works through the backlog; the hold ends at half the mark (4 ready).
    ack_all(&mut c, 0, owner, "flow", &mailbox); // 21 ready
    ack_all(&mut c, 0, owner, "flow", &mailbox); // 11 ready
    assert_eq!(held_by(&held), ["flow"]);
    ack_all(&mut c, 0, owner, "flow", &mailbox); // 1 ready
    assert!(held.borrow().flow_held.is_empty(), "released once drained");

    // Congested again; then the consumer stops taking messages: after STALL_LOOKS looks
    // without progress the publisher goes, and a stalled queue holds nobody until it moves.
    publish(&mut c, 20);
    assert_eq!(held_by(&held), ["flow"]);
    c.shards[1].flow_tick(); // deliveries since the last look: progress
    c.pump();
    for _ in 1..STALL_LOOKS {
        c.shards[1].flow_tick();
        c.pump();
        assert_eq!(held_by(&held), ["flow"], "a short pause keeps the hold");
    }
    c.shards[1].flow_tick(); // stalled
    c.pump();
    assert!(held.borrow().flow_held.is_empty(), "a stalled consumer does not hold publishers");
    publish(&mut c, 5);
    assert!(held.borrow().flow_held.is_empty());
    ack_all(&mut c, 0, owner, "flow", &mailbox);
    c.shards[1].flow_tick(); // moving again
    publish(&mut c, 1);
    assert_eq!(held_by(&held), ["flow"]);
    // The last consumer leaving lets the publisher fill the queue for later.
    c.shards[0].cancel_nowait(owner, "flow", ConsumerKey { conn: consumer, tag: 1 });
    c.pump();
    assert!(held.borrow().flow_held.is_empty(), "no consumer, no hold");
    // Held again, then the queue is deleted: its holds go with it.
    consume(&mut c, 0, owner, "flow", consumer, 2);
    publish(&mut c, 1);
    assert_eq!(held_by(&held), ["flow"]);
    c.request(0, AUTHORITY, Request::Meta(MetaOp::DeleteQueue { name: "flow".into() }));
    assert!(held.borrow().flow_held.is_empty(), "a deleted queue holds nobody");
}

#[test]
fn lost_consumer_requeues_across_shards_with_redelivered() {
    let mut c = Cluster::new(&[("work", 1)]);
    let owner = c.declare(0, "work", false);
    let (conn, mailbox) = c.connect(0);
    for body in ["a", "b", "c"] {
        c.shards[0].publish("", "work", content(body, false), None, || None).expect("routable");
    }
    consume(&mut c, 0, owner, "work", conn, 1);
    assert_eq!(bodies(&mailbox).len(), 3);
    // The connection goes away without acking: the owner takes everything back.
    mailbox.borrow_mut().deliveries.clear();
    c.shards[0].cancel_nowait(owner, "work", ConsumerKey { conn, tag: 1 });
    c.shards[0].unregister_conn(conn);
    c.pump();
    let (conn2, mailbox2) = c.connect(1);
    consume(&mut c, 1, owner, "work", conn2, 1);
    let got = mailbox2.borrow();
    let order: Vec<&[u8]> = got.deliveries.iter().map(|d| d.message.content.body.as_ref()).collect();
    assert_eq!(order, [b"a".as_ref(), b"b", b"c"]);
    assert!(got.deliveries.iter().all(|d| d.message.redelivered));
}

#[test]
fn declarations_are_validated_once_and_seen_everywhere() {
    let mut c = Cluster::new(&[]);
    c.declare(1, "shared", true);
    for shard in &c.shards {
        assert!(shard.routing().queue("shared").is_some(), "{:?} knows the queue", shard.id());
    }
    let spec = QueueSpec {
        name: "shared".into(),
        durable: false,
        auto_delete: false,
        exclusive: None,
        arguments: vec![],
        shard: ShardId(0),
    };
    let mut rx = c.shards[1].request(AUTHORITY, Request::Meta(MetaOp::DeclareQueue { spec, passive: false, by: None }));
    c.pump();
    let err = rx.try_recv().expect("not cancelled").expect("answered").expect_err("inequivalent durable flag");
    assert_eq!(err.kind.amqp_code(), 406);
}

#[test]
fn a_ferry_argument_change_reaches_every_table_and_the_owner_queue() {
    let mut c = Cluster::new(&[("mqtt-subscription-c", 1)]);
    c.declare(0, "mqtt-subscription-c", true);
    let set = MetaOp::SetQueueArgument {
        queue: "mqtt-subscription-c".into(),
        key: "x-ferry-mqtt-session-expiry-s".into(),
        value: Some("2".into()),
    };
    c.request(0, AUTHORITY, Request::Meta(set));
    let wanted = [("x-ferry-mqtt-session-expiry-s".to_owned(), "2".to_owned())];
    for shard in &c.shards {
        assert_eq!(shard.routing().queue("mqtt-subscription-c").expect("known").arguments, wanted);
    }
    // The owner's copy is what compaction writes again.
    assert_eq!(c.shards[1].owned_queue("mqtt-subscription-c").expect("owned").spec.arguments, wanted);
}

// ----- MQTT state kept by shards ------------------------------------------------------------

fn topic_content(key: &str, body: &'static str) -> Arc<Content> {
    Arc::new(Content {
        exchange: "amq.topic".into(),
        routing_key: key.into(),
        properties: Properties { persistent: true, ..Properties::default() },
        body: Bytes::from_static(body.as_bytes()),
    })
}

fn retained(c: &mut Cluster, owner: ShardId, pattern: &str) -> Vec<(String, Bytes)> {
    let request = Request::MqttRetained { patterns: vec![pattern.into()] };
    let Reply::MqttRetained(found) = c.request(0, owner, request) else { panic!("retained reply") };
    let mut out: Vec<(String, Bytes)> =
        found.into_iter().map(|(m, _)| (m.routing_key.clone(), m.body.clone())).collect();
    out.sort();
    out
}

#[test]
fn retained_messages_replace_clear_and_hide_dollar_topics() {
    use ferry_engine::shard::mqtt::RETAINED_QUEUE;
    let mut c = Cluster::new(&[(RETAINED_QUEUE, 1)]);
    let owner = c.declare(0, RETAINED_QUEUE, true);
    for (key, body) in [("a.b", "v1"), ("a.b", "v2"), ("a.c", "c"), ("$SYS.x", "sys")] {
        c.shards[0].retain(topic_content(key, body), None);
    }
    c.pump();
    assert_eq!(retained(&mut c, owner, "a.*"), [("a.b".into(), Bytes::from("v2")), ("a.c".into(), Bytes::from("c"))]);
    assert_eq!(retained(&mut c, owner, "#").len(), 2, "a leading wildcard does not match $ topics");
    assert_eq!(retained(&mut c, owner, "$SYS.#").len(), 1);
    let conn = c.connect(0).0;
    c.shards[0].retain(topic_content("a.b", ""), Some(Completion { conn, token: 1 }));
    c.pump();
    assert_eq!(retained(&mut c, owner, "a.*"), [("a.c".into(), Bytes::from("c"))], "an empty payload clears");
    assert_eq!(c.shards[1].owned_queue(RETAINED_QUEUE).expect("queue").len(), 2, "one message per topic");
}

#[test]
fn a_client_id_claim_takes_over_and_cancels_a_delayed_will() {
    use ferry_engine::shard::mqtt::{DelayedWill, MqttRelease, SavedSession};
    let mut c = Cluster::new(&[("will-watch", 1)]);
    let now = Rc::new(std::cell::Cell::new(0u64));
    for shard in &mut c.shards {
        let now = now.clone();
        shard.set_clock(Rc::new(move || now.get()));
    }
    let watch = c.declare(0, "will-watch", false);
    let wills = c.declare(0, WILLS_QUEUE, true);
    let recorded = |c: &Cluster| c.shards[usize::from(wills.0)].owned_queue(WILLS_QUEUE).expect("wills").len();
    let bind =
        MetaOp::Bind { exchange: "amq.topic".into(), queue: "will-watch".into(), key: "w.#".into(), arguments: vec![] };
    c.request(0, AUTHORITY, Request::Meta(bind));
    let registry = c.shards[0].placement().place("/", "mqtt-client/dev", 0);
    let (old, old_mail) = c.connect(1);
    let claim = |conn| Request::MqttClaim { client_id: "dev".into(), conn, clean: false };
    c.request(1, registry, claim(old));
    let (new, _) = c.connect(0);
    c.request(0, registry, claim(new));
    assert!(old_mail.borrow().taken_over, "the older connection is told to close");

    let release = |conn, delay_ms| MqttRelease {
        client_id: "dev".into(),
        conn,
        saved: SavedSession { inbound_received: vec![3], pending_releases: vec![] },
        will: Some(DelayedWill { delay_ms, content: topic_content("w.dev", "gone"), retain: false }),
        session_expiry_ms: None,
        session_queue: None,
    };
    // The taken-over connection's release is ignored: the newer one owns the id.
    c.shards[1].mqtt_release_to(registry, release(old, 0));
    c.shards[0].mqtt_release_to(registry, release(new, 1000));
    c.pump();
    // Moves the shards' clock to `t`, lets them tick, and counts the wills published.
    let wills_at = |c: &mut Cluster, t: u64| {
        now.set(t);
        c.shards.iter_mut().for_each(Shard::mqtt_tick);
        c.pump();
        c.shards[usize::from(watch.0)].owned_queue("will-watch").expect("q").len()
    };
    assert_eq!(wills_at(&mut c, 500), 0, "the will waits");
    assert_eq!(recorded(&c), 1, "a waiting will is in the log");
    // Reconnecting within the delay cancels the will and gets the saved QoS 2 state back.
    let (again, _) = c.connect(0);
    let Reply::MqttClaimed { saved, expired } = c.request(0, registry, claim(again)) else { panic!("claimed") };
    assert_eq!((saved.inbound_received, expired), (vec![3], false));
    assert_eq!(wills_at(&mut c, 2000), 0, "cancelled");
    assert_eq!(recorded(&c), 0, "a cancelled will is settled");
    // Released again with a delay: published once it is due.
    c.shards[0].mqtt_release_to(registry, release(again, 1000));
    c.pump();
    assert_eq!(recorded(&c), 1);
    assert_eq!(wills_at(&mut c, 3500), 1, "published once due");
    assert_eq!(recorded(&c), 0, "a published will is settled");
}

#[test]
fn a_recovered_will_waits_for_what_is_left_of_its_delay() {
    use ferry_engine::model::message::QueuedMessage;
    use ferry_engine::shard::wills::StoredWill;
    let mut c = Cluster::new(&[("will-watch", 1), (WILLS_QUEUE, 1)]);
    let now = Rc::new(std::cell::Cell::new(0u64));
    for shard in &mut c.shards {
        let now = now.clone();
        shard.set_clock(Rc::new(move || now.get()));
        shard.set_wall_clock(Rc::new(|| 10_000));
    }
    c.declare(0, "will-watch", false);
    let bind =
        MetaOp::Bind { exchange: "amq.topic".into(), queue: "will-watch".into(), key: "w.#".into(), arguments: vec![] };
    c.request(0, AUTHORITY, Request::Meta(bind));
    c.declare(0, WILLS_QUEUE, true);
    let stored = |client: &str, due_unix_ms| {
        let will =
            StoredWill { client_id: client.into(), due_unix_ms, content: topic_content("w.x", "gone"), retain: false };
        will.to_content()
    };
    let unreadable = topic_content("w.x", "not a will");
    let recovered = [stored("late", 12_000), stored("overdue", 4_000), unreadable];
    let messages = recovered
        .into_iter()
        .enumerate()
        .map(|(i, content)| QueuedMessage { msg_id: i as u64 + 1, content, redelivered: true, expires_at_ms: None })
        .collect();
    c.shards[1].restore_messages(WILLS_QUEUE, messages);
    c.shards[1].mqtt_wills_recovered();
    c.pump();
    assert_eq!(c.shards[1].owned_queue(WILLS_QUEUE).expect("wills").len(), 2, "the unreadable record is settled");
    let published = |c: &mut Cluster, t: u64| {
        now.set(t);
        c.shards.iter_mut().for_each(Shard::mqtt_tick);
        c.pump();
        c.shards[1].owned_queue("will-watch").expect("q").len()
    };
    assert_eq!(published(&mut c, 0), 1, "a will due while the broker was down goes at once");
    assert_eq!(published(&mut c, 1999), 1, "the other waits the 2 s it had left");
    assert_eq!(published(&mut c, 2000), 2);
    assert_eq!(c.shards[1].owned_queue(WILLS_QUEUE).expect("wills").len(), 0, "both settled");
}

#[test]
fn a_moved_message_is_settled_in_its_old_log_only_once_its_new_owner_synced_it() {
    use ferry_engine::shard::recovery::Moves;
    use ferry_storage::StoredMessage;
    // "moved" now places on shard 0; shard 1's log held it before the shard count changed.
    let mut c = Cluster::new(&[("moved", 0)]);
    c.declare(1, "moved", true);
    let stored = |msg_id: u64, body: &'static str| StoredMessage {
        queue: "moved".into(),
        msg_id,
        exchange: String::new(),
        routing_key: "moved".into(),
        redelivered: true,
        priority: 0,
        expiry_ms: 0,
        properties: vec![],
        body: Bytes::from_static(body.as_bytes()),
    };
    let woken = Rc::new(std::cell::Cell::new(0));
    let wake = {
        let woken = woken.clone();
        Rc::new(move || woken.set(woken.get() + 1))
    };
    let mut moves = Moves::new(&mut c.shards[1], wake);
    moves.send(&mut c.shards[1], &[stored(7, "a"), stored(9, "b")]);
    assert!(c.shards[1].journal_mut().sync_work().is_none(), "nothing settled before the new owner has it");

    // The new owner takes the messages; its sync has not run yet, so no answer comes back.
    let mut batch = c.shards[1].swap_outbox(ShardId(0), Vec::new());
    c.shards[0].handle_batch(ShardId(1), &mut batch);
    assert!(c.shards[0].outbox_is_empty(ShardId(1)), "no completion before the owner's sync");
    moves.settle_arrived(&mut c.shards[1]);
    assert!(!moves.is_done());
    assert!(c.shards[1].journal_mut().sync_work().is_none(), "still nothing settled in the old log");

    c.pump();
    assert!(woken.get() > 0, "the completions woke the mover");
    moves.settle_arrived(&mut c.shards[1]);
    assert!(moves.is_done());
    assert!(c.shards[1].journal_mut().sync_work().is_some(), "both settles appended once the owner synced");
    moves.finish(&mut c.shards[1]);
    assert_eq!(c.shards[1].connection_count(), 0, "the mover's mailbox is gone");
    assert_eq!(c.shards[0].owned_queue("moved").expect("queue").len(), 2);
}

#[test]
fn a_run_of_single_acks_crosses_as_one_settle() {
    let mut c = Cluster::new(&[("acked", 1)]);
    let owner = c.declare(0, "acked", false);
    let (conn, mailbox) = c.connect(0);
    consume(&mut c, 0, owner, "acked", conn, 1);
    for body in ["a", "b", "c"] {
        c.shards[0].publish("", "acked", content(body, false), None, || None).expect("routable");
    }
    c.pump();
    let tags: Vec<_> = mailbox.borrow().deliveries.iter().map(|d| d.tag).collect();
    assert_eq!(tags.len(), 3);
    for tag in &tags[..2] {
        c.shards[0].settle_one(owner, "acked", *tag, None, None);
    }
    // A settle of several tags (STOMP client acks, AMQP multiple) joins the run too.
    c.shards[0].settle(owner, "acked", vec![tags[2]], None, None);
    let mut batch = c.shards[0].swap_outbox(owner, Vec::new());
    assert_eq!(batch.len(), 1, "three acks, one message: {batch:?}");
    c.shards[1].handle_batch(ShardId(0), &mut batch);
    c.pump();
    assert_eq!(c.shards[1].owned_queue("acked").expect("owned").len(), 0, "all three settled");

    // A requeue does not join a run of acks, nor does a settle that waits for a completion.
    mailbox.borrow_mut().deliveries.clear();
    for body in ["d", "e", "f"] {
        c.shards[0].publish("", "acked", content(body, false), None, || None).expect("routable");
    }
    c.pump();
    let tags: Vec<_> = mailbox.borrow().deliveries.iter().map(|d| d.tag).collect();
    c.shards[0].settle_one(owner, "acked", tags[0], None, None);
    c.shards[0].settle_one(owner, "acked", tags[1], Some(true), None);
    c.shards[0].settle_one(owner, "acked", tags[2], None, Some(Completion { conn, token: 7 }));
    let mut batch = c.shards[0].swap_outbox(owner, Vec::new());
    assert_eq!(batch.len(), 3, "{batch:?}");
    c.shards[1].handle_batch(ShardId(0), &mut batch);
    c.pump();
    assert_eq!(c.shards[1].owned_queue("acked").expect("owned").len(), 1, "the requeued one is back");
    assert_eq!(mailbox.borrow().completions.len(), 1);
}

#[test]
fn a_transaction_reaches_each_owner_as_one_part_and_completes_after_its_sync() {
    let mut c = Cluster::new(&[("tx-remote", 1), ("tx-local", 0)]);
    let remote = c.declare(0, "tx-remote", true);
    c.declare(0, "tx-local", true);
    let (conn, mailbox) = c.connect(0);
    consume(&mut c, 0, remote, "tx-remote", conn, 1);
    c.shards[0].publish("", "tx-remote", content("old", true), None, || None).expect("routable");
    c.pump();
    mailbox.borrow_mut().deliveries.clear(); // "old" stays unacked: only publishes here

    let done = Completion { conn, token: 9 };
    c.shards[0].begin_transaction();
    c.shards[0].publish("", "tx-remote", content("new", true), None, || Some(done)).expect("routable");
    c.shards[0].publish("", "tx-local", content("local", true), None, || Some(done)).expect("routable");
    assert!(c.shards[0].outbox_is_empty(remote), "gathered, not sent");
    assert!(c.shards[0].owned_queue("tx-local").expect("owned").is_empty(), "gathered, not enqueued");
    c.shards[0].end_transaction();
    assert_eq!(c.shards[0].owned_queue("tx-local").expect("owned").len(), 1, "its own share applied in place");
    let mut batch = c.shards[0].swap_outbox(remote, Vec::new());
    assert_eq!(batch.len(), 1, "the owner's share travels as one message: {batch:?}");
    c.shards[1].handle_batch(ShardId(0), &mut batch);
    assert!(mailbox.borrow().completions.is_empty(), "nothing completes before the syncs");
    c.pump();
    let tokens: Vec<u64> =
        mailbox.borrow().completions.iter().map(|(t, r)| r.as_ref().map(|()| *t).expect("ok")).collect();
    assert_eq!(tokens, [9, 9]);
    assert_eq!(bodies(&mailbox), [Bytes::from_static(b"new")]);
    assert_eq!(c.shards[1].journal_mut().live_count(), 2);
    assert_eq!(c.shards[0].journal_mut().live_count(), 1);
}

/// Declares durable queue "work" on shard 0, dead-lettering to queue "dead" (declared
/// `durable`, wherever `overrides` places it), with a consumer on shard 0; publishes one
/// persistent message to "work" and returns its delivery tag.
fn dead_letter_setup(c: &mut Cluster, durable: bool) -> (ConnectionId, Rc<RefCell<Mailbox>>, DeliveryTag) {
    c.declare(0, "dead", durable);
    let spec = QueueSpec {
        name: "work".into(),
        durable: true,
        auto_delete: false,
        exclusive: None,
        arguments: vec![
            ("x-dead-letter-exchange".into(), String::new()),
            ("x-dead-letter-routing-key".into(), "dead".into()),
        ],
        shard: ShardId(0),
    };
    c.request(0, AUTHORITY, Request::Meta(MetaOp::DeclareQueue { spec, passive: false, by: None }));
    let (conn, mailbox) = c.connect(0);
    consume(c, 0, ShardId(0), "work", conn, 1);
    c.shards[0].publish("", "work", content("doomed", true), None, || None).expect("routable");
    c.pump();
    let tag = mailbox.borrow_mut().deliveries.remove(0).tag;
    (conn, mailbox, tag)
}

#[test]
fn a_rejected_message_stays_in_its_log_until_its_dead_lettered_copy_is_held() {
    let mut c = Cluster::new(&[("work", 0), ("dead", 1)]);
    let (conn, mailbox, tag) = dead_letter_setup(&mut c, true);
    assert_eq!(c.shards[0].journal_mut().live_count(), 1);

    c.shards[0].settle(ShardId(0), "work", vec![tag], Some(false), Some(Completion { conn, token: 5 }));
    assert_eq!(c.shards[0].journal_mut().live_count(), 1, "not settled while its copy is on its way");
    let mut batch = c.shards[0].swap_outbox(ShardId(1), Vec::new());
    c.shards[1].handle_batch(ShardId(0), &mut batch);
    assert_eq!(c.shards[1].owned_queue("dead").expect("owned").len(), 1, "the copy arrived");
    assert_eq!(c.shards[0].journal_mut().live_count(), 1, "nor while the copy waits for its log's sync");
    assert!(mailbox.borrow().completions.is_empty(), "the NACK has not completed");
    c.pump();
    assert_eq!(c.shards[0].journal_mut().live_count(), 0, "settled once the copy is durable");
    assert_eq!(c.shards[1].journal_mut().live_count(), 1);
    let tokens: Vec<u64> = mailbox.borrow().completions.iter().map(|(t, _)| *t).collect();
    assert_eq!(tokens, [5], "the NACK completes after both");
}

#[test]
fn a_transaction_spanning_shards_logs_its_acks_only_once_its_publishes_are_durable() {
    // Consume from a queue on shard 0, publish the result to one on shard 1, in one
    // transaction: the ack must not be logged before the publish is, or a crash between the
    // two would lose the message. In memory it takes effect at once: a cancel right after the
    // commit must not requeue the acked message.
    let mut c = Cluster::new(&[("src", 0), ("dst", 1)]);
    c.declare(0, "src", true);
    c.declare(0, "dst", true);
    let (conn, mailbox) = c.connect(0);
    let consumer = consume(&mut c, 0, ShardId(0), "src", conn, 1);
    c.shards[0].publish("", "src", content("work", true), None, || None).expect("routable");
    c.pump();
    let tag = mailbox.borrow_mut().deliveries.remove(0).tag;

    let done = Completion { conn, token: 3 };
    c.shards[0].begin_transaction();
    c.shards[0].publish("", "dst", content("result", true), None, || Some(done)).expect("routable");
    c.shards[0].settle_one(ShardId(0), "src", tag, None, Some(done));
    c.shards[0].end_transaction();
    drop(c.shards[0].request(ShardId(0), Request::Cancel { queue: "src".into(), consumer }));
    assert!(c.shards[0].owned_queue("src").expect("owned").is_empty(), "acked, not requeued by the cancel");
    let sync = |shard: &mut Shard| {
        while let Some(work) = shard.journal_mut().sync_work() {
            let result = work.run();
            shard.journal_mut().complete_sync(result).expect("memory sync");
            shard.journal_synced();
        }
    };
    sync(&mut c.shards[0]);
    assert!(mailbox.borrow().completions.is_empty(), "the ack is not logged while the publish travels");
    let mut batch = c.shards[0].swap_outbox(ShardId(1), Vec::new());
    c.shards[1].handle_batch(ShardId(0), &mut batch);
    sync(&mut c.shards[1]);
    assert!(mailbox.borrow().completions.is_empty(), "the publish is durable, the ack's record not yet");
    c.pump();
    let tokens: Vec<u64> = mailbox.borrow().completions.iter().map(|(t, _)| *t).collect();
    assert_eq!(tokens, [3, 3], "the commit completes after both");
    assert_eq!(c.shards[1].owned_queue("dst").expect("owned").len(), 1);
    assert!(mailbox.borrow().deliveries.is_empty(), "nothing redelivered");
}

#[test]
fn a_dead_lettered_copy_that_lands_at_once_settles_its_original() {
    // A transient dead-letter queue on the same shard holds the copy before `publish` returns.
    let mut c = Cluster::new(&[("work", 0), ("dead", 0)]);
    let (conn, mailbox, tag) = dead_letter_setup(&mut c, false);
    c.shards[0].settle(ShardId(0), "work", vec![tag], Some(false), Some(Completion { conn, token: 6 }));
    c.pump();
    assert_eq!(c.shards[0].journal_mut().live_count(), 0);
    assert_eq!(c.shards[0].owned_queue("dead").expect("owned").len(), 1);
    let tokens: Vec<u64> = mailbox.borrow().completions.iter().map(|(t, _)| *t).collect();
    assert_eq!(tokens, [6]);
}

#[test]
fn a_queue_deleted_while_its_dead_lettered_copy_travels_keeps_its_successors_messages() {
    // The original's late settle must not name the message of a queue declared again by the
    // same name, whose ids start again at 1.
    let mut c = Cluster::new(&[("work", 0), ("dead", 1)]);
    let (_, _, tag) = dead_letter_setup(&mut c, true);
    c.shards[0].settle(ShardId(0), "work", vec![tag], Some(false), None);
    let mut copy = c.shards[0].swap_outbox(ShardId(1), Vec::new());
    c.request(0, AUTHORITY, Request::Meta(MetaOp::DeleteQueue { name: "work".into() }));
    c.declare(0, "work", true);
    c.shards[0].publish("", "work", content("successor", true), None, || None).expect("routable");
    c.pump();
    assert_eq!(c.shards[0].journal_mut().live_count(), 1, "the successor's message is live");
    c.shards[1].handle_batch(ShardId(0), &mut copy);
    c.pump();
    assert_eq!(c.shards[1].owned_queue("dead").expect("owned").len(), 1, "the copy landed");
    assert_eq!(c.shards[0].journal_mut().live_count(), 1, "and settled nothing of the successor");
    assert_eq!(c.shards[0].owned_queue("work").expect("owned").len(), 1);
}

#[test]
fn a_dead_lettered_copy_made_in_a_spanning_transaction_is_logged_before_it_can_be_acked() {
    // A spanning transaction NACKs a message whose dead-letter queue is on the same shard: the
    // copy is in the queue at once, so its enqueue must be in the log at once too, not held
    // with the transaction's acks, or an ack of the copy logged meanwhile would come before it
    // and the copy would come back after a restart.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::on_disk(&[("work", 0), ("dead", 0), ("dst", 1)], dir.path());
    c.declare(0, "dst", true);
    let (conn, mailbox, tag) = dead_letter_setup(&mut c, true);
    consume(&mut c, 0, ShardId(0), "dead", conn, 2);
    c.shards[0].begin_transaction();
    c.shards[0].publish("", "dst", content("result", true), None, || None).expect("routable");
    c.shards[0].settle_one(ShardId(0), "work", tag, Some(false), None);
    c.shards[0].end_transaction();
    let copy = mailbox.borrow_mut().deliveries.remove(0);
    assert_eq!(copy.message.content.body, Bytes::from_static(b"doomed"), "the copy is delivered at once");
    c.shards[0].settle_one(ShardId(0), "dead", copy.tag, None, None);
    c.pump();
    drop(c);
    let log = LogConfig { segment_size_bytes: 1 << 20, ..LogConfig::new(dir.path().join("shard-0")) };
    let (_, recovered) = Journal::open(log, SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("reopen");
    let held: Vec<(String, usize)> = recovered.queues.iter().map(|q| (q.name.clone(), q.messages.len())).collect();
    assert_eq!(held, [("dead".to_owned(), 0), ("work".to_owned(), 0)], "the acked copy stays acked");
}

#[test]
fn a_held_ack_of_a_queue_deleted_meanwhile_leaves_its_successors_messages() {
    // The settle a spanning transaction holds names (queue, id); a queue deleted and declared
    // again before the release starts its ids at 1 again, so the held settle must go with it.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::on_disk(&[("q0", 0), ("dst", 1)], dir.path());
    c.declare(0, "q0", true);
    c.declare(0, "dst", true);
    let (conn, mailbox) = c.connect(0);
    consume(&mut c, 0, ShardId(0), "q0", conn, 1);
    c.shards[0].publish("", "q0", content("old", true), None, || None).expect("routable");
    c.pump();
    let tag = mailbox.borrow_mut().deliveries.remove(0).tag;
    c.shards[0].begin_transaction();
    c.shards[0].publish("", "dst", content("result", true), None, || None).expect("routable");
    c.shards[0].settle_one(ShardId(0), "q0", tag, None, None);
    c.shards[0].end_transaction();
    let mut share = c.shards[0].swap_outbox(ShardId(1), Vec::new());
    c.request(0, AUTHORITY, Request::Meta(MetaOp::DeleteQueue { name: "q0".into() }));
    c.declare(0, "q0", true);
    c.shards[0].publish("", "q0", content("new", true), None, || None).expect("routable");
    c.pump();
    c.shards[1].handle_batch(ShardId(0), &mut share);
    c.pump();
    drop(c);
    let log = LogConfig { segment_size_bytes: 1 << 20, ..LogConfig::new(dir.path().join("shard-0")) };
    let (_, recovered) = Journal::open(log, SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("reopen");
    let q0 = recovered.queues.iter().find(|q| q.name == "q0").expect("q0 recovered");
    let bodies: Vec<&[u8]> = q0.messages.iter().map(|m| m.body.as_ref()).collect();
    assert_eq!(bodies, [b"new".as_slice()]);
}
