//! Transactions and dead-lettering across shards, without a runtime (`cluster`): each owner
//! applies its share of a commit together and logs it as one record; a transaction spanning
//! shards commits in two phases and survives a crash whole or not at all; a dead-lettered
//! message leaves its log only once its copy is held. Some clusters run on real logs, reopened to see what a
//! restart would bring back.

mod cluster;

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use cluster::{Cluster, bodies, consume, content, restart_would_keep};
use ferry_engine::ids::{Completion, ConnectionId, ConsumerKey, DeliveryTag, ShardId};
use ferry_engine::journal::{Journal, SyncPolicy};
use ferry_engine::model::queue::Consumer;
use ferry_engine::model::routing::{MetaOp, QueueSpec};
use ferry_engine::shard::mailbox::Mailbox;
use ferry_engine::shard::msg::Request;
use ferry_engine::shard::{AUTHORITY, Shard};
use ferry_storage::{LogConfig, Record, TxOp};

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
fn a_transaction_spanning_shards_survives_a_crash_whole_or_not_at_all() {
    // Consume from a queue on shard 0, publish the result to one on shard 1, in one
    // transaction. Each share is logged at once, marked with the transaction's id; the commit
    // (shard 0's record of it) comes only once both are durable, and the client's commit-ok
    // only once the commit is. A crash before that undoes both shares at recovery. In memory
    // the ack takes effect at once: a cancel right after the commit must not requeue it.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::on_disk(&[("src", 0), ("dst", 1)], dir.path());
    c.declare(0, "src", true);
    c.declare(0, "dst", true);
    let (conn, mailbox) = c.connect(0);
    let consumer = consume(&mut c, 0, ShardId(0), "src", conn, 1);
    c.shards[0].publish("", "src", content("work", true), None, || None).expect("routable");
    c.pump();
    let tag = mailbox.borrow_mut().deliveries.remove(0).tag;
    let before = vec![("dst".to_owned(), vec![]), ("src".to_owned(), vec![Bytes::from_static(b"work")])];
    assert_eq!(restart_would_keep(dir.path()).0, before);

    let done = Completion { conn, token: 3 };
    c.shards[0].begin_transaction();
    c.shards[0].publish("", "dst", content("result", true), None, || Some(done)).expect("routable");
    c.shards[0].settle_one(ShardId(0), "src", tag, None, Some(done));
    c.shards[0].end_transaction();
    drop(c.shards[0].request(ShardId(0), Request::Cancel { queue: "src".into(), consumer }));
    assert!(c.shards[0].owned_queue("src").expect("owned").is_empty(), "acked, not requeued by the cancel");
    sync(&mut c.shards[0]);
    let mut batch = c.shards[0].swap_outbox(ShardId(1), Vec::new());
    c.shards[1].handle_batch(ShardId(0), &mut batch);
    sync(&mut c.shards[1]);
    assert!(commits(dir.path(), 0).is_empty() && commits(dir.path(), 1).is_empty(), "no commit yet");
    assert!(mailbox.borrow().completions.is_empty(), "both shares are durable, the commit not yet");
    assert_eq!(restart_would_keep(dir.path()).0, before, "a crash now undoes both shares");

    // Shard 1 reports its share durable; shard 0 logs the commit, and releases once it is
    // durable (its own share's completion first; shard 1's after the release travels).
    let mut report = c.shards[1].swap_outbox(ShardId(0), Vec::new());
    c.shards[0].handle_batch(ShardId(1), &mut report);
    assert_eq!(commits(dir.path(), 0).len(), 1, "the coordinator logged the commit");
    assert!(mailbox.borrow().completions.is_empty(), "nothing completes before the commit is durable");
    sync(&mut c.shards[0]);
    assert_eq!(mailbox.borrow().completions.len(), 1, "shard 0's share completes once the commit is durable");
    c.pump();
    let tokens: Vec<u64> = mailbox.borrow().completions.iter().map(|(t, _)| *t).collect();
    assert_eq!(tokens, [3, 3], "the commit completes once it is durable");
    let after = vec![("dst".to_owned(), vec![Bytes::from_static(b"result")]), ("src".to_owned(), vec![])];
    assert_eq!(restart_would_keep(dir.path()), (after, vec![vec![], vec![]]));
    let tx = commits(dir.path(), 0);
    assert_eq!(tx.len(), 1);
    assert_eq!(commits(dir.path(), 1), tx, "shard 1 holds the commit too: shard 0's may be compacted");
    assert_eq!(c.shards[1].owned_queue("dst").expect("owned").len(), 1);
    assert!(mailbox.borrow().deliveries.is_empty(), "nothing redelivered");
    assert_eq!((c.shards[0].journal_mut().held_count(), c.shards[1].journal_mut().held_count()), (0, 0));
}

#[test]
fn a_share_kept_on_the_coordinators_word_survives_without_it() {
    // A crash after the coordinator's commit is durable but before shard 1 recorded it: a
    // restart keeps shard 1's share on shard 0's word, and tells shard 1 to record it.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::on_disk(&[("src", 0), ("dst", 1)], dir.path());
    c.declare(0, "src", true);
    c.declare(0, "dst", true);
    c.shards[0].begin_transaction();
    c.shards[0].publish("", "src", content("a", true), None, || None).expect("routable");
    c.shards[0].publish("", "dst", content("b", true), None, || None).expect("routable");
    c.shards[0].end_transaction();
    let mut share = c.shards[0].swap_outbox(ShardId(1), Vec::new());
    c.shards[1].handle_batch(ShardId(0), &mut share);
    // Everything but the release to shard 1 (shard 0's outbox towards it is left alone).
    for _ in 0..4 {
        for shard in &mut c.shards {
            sync(shard);
        }
        let mut report = c.shards[1].swap_outbox(ShardId(0), Vec::new());
        c.shards[0].handle_batch(ShardId(1), &mut report);
    }
    assert_eq!(commits(dir.path(), 0).len(), 1, "the coordinator committed");
    assert!(commits(dir.path(), 1).is_empty(), "shard 1 was not told yet");
    let (queues, kept) = restart_would_keep(dir.path());
    let both =
        vec![("dst".to_owned(), vec![Bytes::from_static(b"b")]), ("src".to_owned(), vec![Bytes::from_static(b"a")])];
    assert_eq!(queues, both);
    assert_eq!(kept, [vec![], commits(dir.path(), 0)]);
}

/// Runs `shard`'s syncs and releases what they cover, until nothing is left to sync.
fn sync(shard: &mut Shard) {
    while let Some(work) = shard.journal_mut().sync_work() {
        let result = work.run();
        shard.journal_mut().complete_sync(result).expect("sync");
        shard.journal_synced();
    }
}

/// The ids of the transactions spanning shards whose commit shard `i`'s log in `dir` holds.
fn commits(dir: &std::path::Path, i: u16) -> Vec<u64> {
    let records = ferry_storage::replay(&dir.join(format!("shard-{i}"))).expect("replay");
    records.iter().filter_map(|(_, r)| if let Record::TxCommit { tx_id } = r { Some(*tx_id) } else { None }).collect()
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
fn an_undecided_ack_of_a_queue_deleted_meanwhile_leaves_its_successors_messages() {
    // The settle in a spanning transaction's share names (queue, id); a queue deleted and
    // declared again before the commit starts its ids at 1 again, so neither the settle nor
    // its undoing may touch the successor's messages.
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
    let undecided = vec![("dst".to_owned(), vec![]), ("q0".to_owned(), vec![Bytes::from_static(b"new")])];
    assert_eq!(restart_would_keep(dir.path()).0, undecided, "undoing the ack leaves the successor alone");
    c.shards[1].handle_batch(ShardId(0), &mut share);
    c.pump();
    drop(c);
    let log = LogConfig { segment_size_bytes: 1 << 20, ..LogConfig::new(dir.path().join("shard-0")) };
    let (_, recovered) = Journal::open(log, SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("reopen");
    let q0 = recovered.queues.iter().find(|q| q.name == "q0").expect("q0 recovered");
    let bodies: Vec<&[u8]> = q0.messages.iter().map(|m| m.body.as_ref()).collect();
    assert_eq!(bodies, [b"new".as_slice()]);
}

#[test]
fn a_spanning_share_that_acks_nothing_logs_what_it_settles_at_once() {
    // The publish-only share of a spanning transaction settles a message itself (an auto-ack
    // consumer takes it at once): no release will come for that share, so nothing of it may
    // be held back, or the commit would never complete.
    let mut c = Cluster::new(&[("src", 0), ("dst", 1)]);
    c.declare(0, "src", true);
    c.declare(0, "dst", true);
    let (conn, mailbox) = c.connect(0);
    consume(&mut c, 0, ShardId(0), "src", conn, 1);
    let key = ConsumerKey { conn, tag: 2 };
    let auto = Consumer { key, credit_max: 10, outstanding: 0, no_ack: true, priority: 0, exclusive: false };
    c.request(0, ShardId(1), Request::Consume { queue: "dst".into(), consumer: auto });
    c.shards[0].publish("", "src", content("work", true), None, || None).expect("routable");
    c.pump();
    let tag = mailbox.borrow_mut().deliveries.remove(0).tag;
    let done = Completion { conn, token: 4 };
    c.shards[0].begin_transaction();
    c.shards[0].publish("", "dst", content("result", true), None, || Some(done)).expect("routable");
    c.shards[0].settle_one(ShardId(0), "src", tag, None, Some(done));
    c.shards[0].end_transaction();
    c.pump();
    let tokens: Vec<u64> = mailbox.borrow().completions.iter().map(|(t, _)| *t).collect();
    assert_eq!(tokens, [4, 4], "the commit completes");
    assert_eq!(c.shards[1].journal_mut().live_count(), 0, "the auto-acked message is settled in the log");
}

#[test]
fn a_share_too_large_for_one_record_is_logged_in_pieces_that_apply_only_together() {
    // 100 publishes of 1 KiB and an ack in one share, on a log of 64 KiB segments: logged as
    // several parts marked as one transaction, then its commit. Cut before the commit (a
    // crash between the pieces' sync and the commit's), none of it comes back.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || LogConfig { segment_size_bytes: 64 * 1024, ..LogConfig::new(dir.path().join("shard-0")) };
    let (mut journal, _) = Journal::open(config(), SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("open");
    let spec = QueueSpec {
        name: "q".into(),
        durable: true,
        auto_delete: false,
        exclusive: None,
        arguments: vec![],
        shard: ShardId(0),
    };
    journal.append_queue_declare(&spec);
    journal.append_enqueue("q", 1, &content("before", true));
    let body: &'static str = Box::leak("x".repeat(1024).into_boxed_str());
    journal.begin_transaction();
    for id in 2..102 {
        journal.append_enqueue("q", id, &content(body, true));
    }
    journal.append_settle("q", 1);
    journal.end_transaction(9 << 16);
    journal.sync_blocking().expect("sync");
    drop(journal);

    let records = ferry_storage::replay(&dir.path().join("shard-0")).expect("replay");
    let pieces = records
        .iter()
        .filter(|(_, r)| matches!(r, Record::TxPart { ops, .. } if matches!(ops[0], TxOp::Spans { tx_id: 0x90000 })))
        .count();
    assert!(pieces >= 2, "{pieces} pieces");
    let (commit_end, last) = records.last().expect("records");
    assert_eq!(last, &Record::TxCommit { tx_id: 9 << 16 }, "the commit comes right after the pieces");
    let (_, recovered) = Journal::open(config(), SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("reopen");
    assert_eq!(recovered.queues[0].messages.len(), 100, "all of it, the ack included");
    assert!(recovered.undecided.is_empty());

    // The commit torn away: the segment holding it zeroed from the commit's start on.
    let before_commit = records[records.len() - 2].0;
    let segments: Vec<_> =
        std::fs::read_dir(dir.path().join("shard-0")).expect("dir").map(|e| e.expect("entry").path()).collect();
    let mut cut = 0;
    for path in segments.iter().filter(|p| p.extension().is_some_and(|x| x == "seg")) {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let base: u64 = name.split('-').next().and_then(|b| b.parse().ok()).expect("base");
        let len = std::fs::metadata(path).expect("meta").len();
        if base <= before_commit.0 && before_commit.0 < base + len && commit_end.0 <= base + len {
            let mut bytes = std::fs::read(path).expect("read");
            let from = usize::try_from(before_commit.0 - base).expect("fits");
            bytes[from..].fill(0);
            std::fs::write(path, bytes).expect("write");
            cut += 1;
        }
    }
    assert_eq!(cut, 1, "one segment holds the commit");
    let (_, recovered) = Journal::open(config(), SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("reopen");
    let mut recovered = recovered;
    assert_eq!(recovered.resolve(&|_| false), Vec::<u64>::new());
    let bodies: Vec<&[u8]> = recovered.queues[0].messages.iter().map(|m| m.body.as_ref()).collect();
    assert_eq!(bodies, [b"before".as_slice()], "none of the share");
}
