//! Disk use follows the live backlog: many persistent messages through a durable queue whose
//! consumer keeps up (except for a few it never acks) leave only a few small segments, and
//! reopening the log brings back exactly the unacked messages. Real mmap log, no runtime.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferry_engine::ids::{Completion, ConnectionId, ConsumerKey, ShardId};
use ferry_engine::journal::{Journal, SyncPolicy};
use ferry_engine::model::message::{Content, Extra, Properties};
use ferry_engine::model::queue::Consumer;
use ferry_engine::model::routing::{MetaOp, QueueSpec};
use ferry_engine::placement::Placement;
use ferry_engine::shard::mailbox::Mailbox;
use ferry_engine::shard::msg::Request;
use ferry_engine::shard::{AUTHORITY, Shard};
use ferry_storage::{Epoch, LogConfig};
use ferry_wire::Limits;

const SEGMENT_BYTES: u64 = 64 * 1024;

/// Opens the log as the holder of lease `epoch` (every broker start claims a new one).
fn open(dir: &std::path::Path, epoch: u64) -> (Shard, ferry_storage::Recovered) {
    let log =
        LogConfig { segment_size_bytes: SEGMENT_BYTES, epoch: Epoch(epoch), ..LogConfig::new(dir.join("shard-0")) };
    let (journal, recovered) = Journal::open(log, SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("open log");
    let placement = Placement::new(1, HashMap::new());
    (Shard::new(ShardId(0), placement, Limits::default(), journal, Rc::new(|| {})), recovered)
}

/// The committer's syncs: sync, release, plan compaction, until nothing is left to sync.
fn sync_all(shard: &mut Shard) {
    while let Some(work) = shard.journal_mut().sync_work() {
        let result = work.run();
        shard.journal_mut().complete_sync(result).expect("sync");
        shard.journal_synced();
        shard.maybe_compact();
    }
}

/// What the runtime's committer does after appends: sync, release, compact, delete.
fn commit(shard: &mut Shard) {
    sync_all(shard);
    if let Some(job) = shard.journal_mut().compact_job() {
        job.run().expect("delete segments");
    }
}

/// Declares the durable queue `name` on shard 0.
fn declare(shard: &mut Shard, name: &str) {
    let spec = QueueSpec {
        name: name.into(),
        durable: true,
        auto_delete: false,
        exclusive: None,
        arguments: vec![],
        shard: ShardId(0),
    };
    drop(shard.request(AUTHORITY, Request::Meta(MetaOp::DeclareQueue { spec, passive: false, by: None })));
}

/// Attaches a consumer (auto-ack when `no_ack`) to `queue`; returns its mailbox.
fn consume(shard: &mut Shard, queue: &str, no_ack: bool) -> Rc<RefCell<Mailbox>> {
    let (conn, mailbox) = shard.register_conn(Rc::new(|| {})).expect("conn");
    let consumer = Consumer {
        key: ConsumerKey { conn, tag: 1 },
        credit_max: 100_000,
        outstanding: 0,
        no_ack,
        priority: 0,
        exclusive: false,
    };
    drop(shard.request(ShardId(0), Request::Consume { queue: queue.into(), consumer }));
    mailbox
}

#[test]
fn settled_segments_are_deleted_and_long_lived_messages_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut shard, _) = open(dir.path(), 1);
    declare(&mut shard, "q");
    let mailbox = consume(&mut shard, "q", false);

    let body = Bytes::from(vec![7u8; 1024]);
    let mut kept = Vec::new();
    let mut max_segments = 0;
    for i in 0..3000u32 {
        let mut headers = vec![("n".to_owned(), i.to_string())];
        headers.truncate(1);
        let content = Arc::new(Content {
            exchange: String::new(),
            routing_key: "q".into(),
            properties: Properties { persistent: true, ..Properties::default() }
                .with_extra(Extra { headers, ..Extra::default() }),
            body: body.clone(),
        });
        shard.publish("", "q", content, None, || None).expect("routable");
        let deliveries = std::mem::take(&mut mailbox.borrow_mut().deliveries);
        for d in deliveries {
            let n = d.message.content.properties.headers[0].1.clone();
            if n.parse::<u32>().expect("number") % 1000 == 0 {
                kept.push(n); // never acked: long-lived
            } else {
                shard.settle(ShardId(0), "q", vec![d.tag], None, None);
            }
        }
        commit(&mut shard);
        max_segments = max_segments.max(shard.journal_mut().segment_count());
    }
    let written = 3000 * 1100 / SEGMENT_BYTES;
    let on_disk = std::fs::read_dir(dir.path().join("shard-0")).expect("dir").count();
    assert!(written > 40, "enough traffic to need {written} segments");
    assert!(max_segments <= 5 && on_disk <= 5, "segments on disk {on_disk}, at most {max_segments} at once");
    assert_eq!(shard.journal_mut().live_count(), 3);
    drop(shard);

    let (_, recovered) = open(dir.path(), 2);
    let q = recovered.queues.iter().find(|q| q.name == "q").expect("queue recovered");
    let mut back: Vec<String> = q.messages.iter().map(|m| m.properties.last().expect("header").1.clone()).collect();
    back.sort();
    kept.sort();
    assert_eq!(back, kept, "exactly the unacked messages come back");
    assert!(q.messages.iter().all(|m| m.body.len() == 1024));
}

/// A persistent message of `len` body bytes to the default exchange, routed to `queue`.
fn persistent(queue: &str, len: usize) -> Arc<Content> {
    Arc::new(Content {
        exchange: String::new(),
        routing_key: queue.into(),
        properties: Properties { persistent: true, ..Properties::default() },
        body: Bytes::from(vec![7u8; len]),
    })
}

#[test]
fn a_backlog_in_the_oldest_segment_starts_no_compaction_rounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut shard, _) = open(dir.path(), 1);
    for i in 0..50 {
        declare(&mut shard, &format!("q{i}"));
    }
    // No consumer: a backlog of several segments, its oldest message in the oldest segment.
    for _ in 0..300 {
        shard.publish("", "q0", persistent("q0", 1024), None, || None).expect("routable");
        commit(&mut shard);
    }
    assert!(shard.journal_mut().segment_count() >= 4, "a backlog over several segments");
    // Each further message costs its own record, not a round that writes all 50 queues'
    // declarations again and deletes nothing.
    let record = {
        let before = shard.journal_mut().appended_offset();
        shard.publish("", "q0", persistent("q0", 1024), None, || None).expect("routable");
        shard.journal_mut().appended_offset() - before
    };
    commit(&mut shard);
    let before = shard.journal_mut().appended_offset();
    for _ in 0..20 {
        shard.publish("", "q0", persistent("q0", 1024), None, || None).expect("routable");
        commit(&mut shard);
    }
    let grown = shard.journal_mut().appended_offset() - before;
    assert!(grown <= 20 * record + 2 * SEGMENT_BYTES / 64, "20 messages of {record} B grew the log by {grown} B");
}

#[test]
fn a_backlog_of_small_messages_is_not_copied_forward_over_and_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut shard, _) = open(dir.path(), 1);
    declare(&mut shard, "q");
    // No consumer: every message stays. Their bodies are tiny, their records are not: a
    // round that counted bodies would copy the whole backlog forward again and again.
    let start = shard.journal_mut().appended_offset();
    let mut record = 0;
    for _ in 0..2000 {
        let before = shard.journal_mut().appended_offset();
        shard.publish("", "q", persistent("q", 1), None, || None).expect("routable");
        record = record.max(shard.journal_mut().appended_offset() - before);
        commit(&mut shard);
    }
    let written = shard.journal_mut().appended_offset() - start;
    assert!(written <= 2000 * record * 3 / 2, "2000 records of at most {record} B wrote {written} B");
    assert_eq!(shard.journal_mut().live_count(), 2000);
}

#[test]
fn after_a_failed_delete_compaction_waits_instead_of_rewriting_declarations_every_sync() {
    use ferry_storage::fault::{FaultOp, FaultPlan, FaultyIo};
    let dir = tempfile::tempdir().expect("tempdir");
    let io = Arc::new(FaultyIo::new(0, FaultPlan::default()));
    let log =
        LogConfig { segment_size_bytes: SEGMENT_BYTES, io: io.clone(), ..LogConfig::new(dir.path().join("shard-0")) };
    let (journal, _) = Journal::open(log, SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("open log");
    let mut shard =
        Shard::new(ShardId(0), Placement::new(1, HashMap::new()), Limits::default(), journal, Rc::new(|| {}));
    for i in 0..50 {
        declare(&mut shard, &format!("q{i}"));
    }
    // Every unlink from now on fails, as on a disk that refuses them.
    let failing = |io: &FaultyIo| FaultPlan { remove_eio_at: Some(io.count(FaultOp::Remove)), ..FaultPlan::default() };
    let failures = std::cell::Cell::new(0);
    let commit_failing = |shard: &mut Shard| {
        sync_all(shard);
        if let Some(job) = shard.journal_mut().compact_job() {
            io.set_plan(failing(&io));
            if let Err(failed) = job.run() {
                shard.journal_mut().compact_failed(failed);
                failures.set(failures.get() + 1);
            }
        }
    };
    // Messages published and consumed at once (a settle follows each): old segments hold
    // nothing live, so every round could delete them all, but the deletes fail.
    let mailbox = consume(&mut shard, "q0", true);
    let settle_all = |shard: &mut Shard| {
        shard.publish("", "q0", persistent("q0", 1024), None, || None).expect("routable");
        mailbox.borrow_mut().deliveries.clear(); // auto-ack: settled in the log at delivery
    };
    let mut record = 0;
    for _ in 0..200 {
        let before = shard.journal_mut().appended_offset();
        settle_all(&mut shard);
        record = record.max(shard.journal_mut().appended_offset() - before);
        commit_failing(&mut shard);
    }
    assert_eq!(failures.get(), 1, "one failed round, then a pause");
    let before = shard.journal_mut().appended_offset();
    for _ in 0..20 {
        settle_all(&mut shard);
        commit_failing(&mut shard);
    }
    let grown = shard.journal_mut().appended_offset() - before;
    assert!(grown <= 20 * record + 2 * SEGMENT_BYTES / 64, "20 messages of {record} B grew the log by {grown} B");
}

#[test]
fn messages_a_transaction_logged_as_one_record_are_compacted_like_any_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut shard, _) = open(dir.path(), 1);
    declare(&mut shard, "q");
    let mailbox = consume(&mut shard, "q", false);
    let mut kept = Vec::new();
    let mut max_segments = 0;
    let mut unacked = Vec::new();
    for round in 0..800u32 {
        // One transaction: four publishes, and the acks of what the last one delivered.
        shard.begin_transaction();
        for i in 0..4 {
            let n = round * 4 + i;
            let mut content = (*persistent("q", 1024)).clone();
            content.properties.extra_mut().headers.push(("n".to_owned(), n.to_string()));
            shard.publish("", "q", Arc::new(content), None, || None).expect("routable");
        }
        for tag in unacked.drain(..) {
            shard.settle(ShardId(0), "q", vec![tag], None, None);
        }
        shard.end_transaction();
        for d in std::mem::take(&mut mailbox.borrow_mut().deliveries) {
            let n = d.message.content.properties.headers[0].1.clone();
            if n.parse::<u32>().expect("number") % 700 < 2 {
                kept.push(n); // never acked: long-lived, two of one transaction each time
            } else {
                unacked.push(d.tag);
            }
        }
        commit(&mut shard);
        max_segments = max_segments.max(shard.journal_mut().segment_count());
    }
    let on_disk = std::fs::read_dir(dir.path().join("shard-0")).expect("dir").count();
    const { assert!(800 * 4 * 1100 / SEGMENT_BYTES > 40, "enough traffic to need many segments") };
    assert!(max_segments <= 5 && on_disk <= 5, "segments on disk {on_disk}, at most {max_segments} at once");
    assert_eq!(shard.journal_mut().live_count(), kept.len() + unacked.len());
    drop(shard);

    let (_, recovered) = open(dir.path(), 2);
    let q = recovered.queues.iter().find(|q| q.name == "q").expect("queue recovered");
    let back: Vec<String> = q.messages.iter().map(|m| m.properties.last().expect("header").1.clone()).collect();
    let mut expected: Vec<String> = kept.clone();
    expected.extend((800 * 4 - 4..800 * 4).map(|n| n.to_string()).filter(|n| !kept.contains(n)));
    assert_eq!(back, expected, "exactly the unacked messages come back, in the order they were published");
    assert!(q.messages.iter().all(|m| m.body.len() == 1024));
}

#[test]
fn an_undecided_share_keeps_its_record_and_what_it_settles_from_compaction_until_its_commit() {
    // A share of a transaction spanning shards acks message 1 and publishes message 2. Until
    // its commit is in this log, compaction must keep message 1's record (an undoing recovery
    // puts it back) and must not copy message 2 forward unmarked; it still deletes the
    // settled segments below them.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = LogConfig { segment_size_bytes: SEGMENT_BYTES, epoch: Epoch(1), ..LogConfig::new(dir.path().join("q")) };
    let (mut journal, _) = Journal::open(log, SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("open log");
    let content = persistent("q", 1024);
    let mut next_id = 100;
    let mut fill = |journal: &mut Journal, segments: usize| {
        let until = journal.segment_count() + segments;
        while journal.segment_count() < until {
            journal.append_enqueue("q", next_id, &content);
            journal.append_settle("q", next_id);
            next_id += 1;
        }
    };
    let sync = |journal: &mut Journal| {
        while let Some(work) = journal.sync_work() {
            let result = work.run();
            journal.complete_sync(result).expect("sync");
        }
    };
    fill(&mut journal, 2);
    journal.append_enqueue("q", 1, &content);
    let original = journal.appended_offset();
    fill(&mut journal, 2);
    let key = Completion { conn: ConnectionId::shard_itself(ShardId(1)), token: 1 };
    journal.begin_transaction();
    journal.append_settle("q", 1);
    journal.append_enqueue("q", 2, &content);
    assert!(journal.end_transaction_spanning(key, 7 << 16).is_empty(), "its report waits for the sync");
    fill(&mut journal, 3);
    sync(&mut journal);

    let plan = journal.compaction_plan().expect("the settled segments below can go");
    assert!(plan.keep_from <= original, "message 1's record is kept: {} > {original}", plan.keep_from);
    assert!(!plan.copy.contains(&("q".to_owned(), 2)), "the share's publish is not copied forward unmarked");

    let released = journal.release_transaction(key, true);
    assert_eq!(released, Vec::<Completion>::new(), "its report waits for the commit's sync");
    sync(&mut journal);
    let plan = journal.compaction_plan().expect("a round");
    assert!(plan.keep_from > original, "once the commit is logged, everything below the active segment may go");
    assert_eq!(plan.copy, [("q".to_owned(), 2)]);
}
