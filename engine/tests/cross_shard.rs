//! Cross-shard behaviour without a runtime (`cluster`: two shards and a pump). Shows a queue
//! owned by shard 1 serving a connection on shard 0, the reverse, topic fan-out across shards,
//! and requeue on consumer loss.

mod cluster;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use cluster::{Cluster, bodies, consume, content};
use ferry_engine::ids::{Completion, ConsumerKey, ShardId};
use ferry_engine::model::flow::STALL_LOOKS;
use ferry_engine::model::message::{Content, Properties};
use ferry_engine::model::routing::{MetaOp, QueueSpec};
use ferry_engine::shard::mailbox::Mailbox;
use ferry_engine::shard::msg::{Reply, Request};
use ferry_engine::shard::wills::WILLS_QUEUE;
use ferry_engine::shard::{AUTHORITY, Shard};
use ferry_wire::Limits;

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
