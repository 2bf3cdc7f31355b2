//! A part of a transaction that spans logs (`TxOp::Spans`) applies only once a commit for it
//! (`Record::TxCommit`) is found in one of the logs: recovery hands back what it touched
//! undecided, and `Recovered::resolve` keeps or undoes it.

mod common;

use common::{declare, enqueue, message, open, settle, sync_now};
use ferry_storage::{Record, Recovered, TxOp, Undecided, resolve_together};

const SEGMENT: u64 = 1 << 16;

/// Writes `records` to a fresh log in `dir`, syncs it, and opens it again.
fn written(dir: &std::path::Path, records: &[Record]) -> Recovered {
    let (mut log, _) = open(dir, SEGMENT);
    for record in records {
        log.append(record).expect("append");
    }
    sync_now(&mut log);
    drop(log);
    open(dir, SEGMENT).1
}

/// Each recovered queue's name with its message ids.
fn ids(recovered: &Recovered) -> Vec<(String, Vec<u64>)> {
    recovered.queues.iter().map(|q| (q.name.clone(), q.messages.iter().map(|m| m.msg_id).collect())).collect()
}

/// Queue `a` with message 1, then part 7: publishes 2 to `a` and acks 1.
fn moved() -> Vec<Record> {
    vec![
        declare("a"),
        enqueue("a", 1, b"one"),
        Record::tx_part(vec![
            TxOp::Spans { tx_id: 7 },
            TxOp::enqueue(message("a", 2, b"two")),
            TxOp::Settle { queue: "a".to_owned(), msg_id: 1 },
        ]),
    ]
}

#[test]
fn a_spanning_part_without_its_commit_comes_back_undecided_and_undoes_unless_committed_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recovered = written(dir.path(), &moved());
    assert_eq!(ids(&recovered), [("a".to_owned(), vec![2])]);
    assert!(recovered.committed.is_empty());
    assert_eq!(recovered.tx_id_max, 7);
    let expected = [
        Undecided { queue: "a".to_owned(), msg_id: 1, before: Some(message("a", 1, b"one")), ops: vec![(7, None)] },
        Undecided { queue: "a".to_owned(), msg_id: 2, before: None, ops: vec![(7, Some(message("a", 2, b"two")))] },
    ];
    assert_eq!(recovered.undecided, expected);

    let mut undone = recovered.clone();
    assert_eq!(undone.resolve(&|_| false), Vec::<u64>::new());
    assert_eq!(ids(&undone), [("a".to_owned(), vec![1])]);
    let back = &undone.queues[0].messages[0];
    assert!(back.redelivered);
    assert_eq!(&back.body[..], b"one");

    let mut kept = recovered;
    assert_eq!(kept.resolve(&|tx| tx == 7), [7]);
    assert_eq!(ids(&kept), [("a".to_owned(), vec![2])]);
    assert!(kept.undecided.is_empty());
}

#[test]
fn a_commit_in_the_same_log_decides_its_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = moved();
    records.push(Record::TxCommit { tx_id: 7 });
    let mut recovered = written(dir.path(), &records);
    assert_eq!(recovered.committed, [7]);
    assert!(recovered.undecided.is_empty());
    assert_eq!(recovered.resolve(&|_| false), Vec::<u64>::new());
    assert_eq!(ids(&recovered), [("a".to_owned(), vec![2])]);
}

#[test]
fn what_a_later_record_touched_is_not_undone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = moved();
    // A consumer acked the published message; message 1 was written again (a restart that
    // undid the part, or a compaction copy).
    records.push(settle("a", 2));
    records.push(enqueue("a", 1, b"one"));
    // Part 8 publishes to `b`, which is then deleted and declared again with a message of the
    // same id: undoing the part must not remove the new queue's message.
    records.extend([
        declare("b"),
        Record::tx_part(vec![TxOp::Spans { tx_id: 8 }, TxOp::enqueue(message("b", 1, b"old"))]),
        Record::QueueDelete { name: "b".to_owned() },
        declare("b"),
        enqueue("b", 1, b"new"),
    ]);
    let mut recovered = written(dir.path(), &records);
    assert!(recovered.undecided.is_empty(), "{:?}", recovered.undecided);
    assert_eq!(recovered.tx_id_max, 8);
    recovered.resolve(&|_| false);
    assert_eq!(ids(&recovered), [("a".to_owned(), vec![1]), ("b".to_owned(), vec![1])]);
    assert_eq!(&recovered.queues[1].messages[0].body[..], b"new");
}

#[test]
fn two_logs_resolve_a_transaction_together() {
    // Shard A acks `a`'s message 1 and shard B publishes its copy to `b`, in transaction 5.
    let a = vec![
        declare("a"),
        enqueue("a", 1, b"one"),
        Record::tx_part(vec![TxOp::Spans { tx_id: 5 }, TxOp::Settle { queue: "a".to_owned(), msg_id: 1 }]),
    ];
    let b = vec![declare("b"), Record::tx_part(vec![TxOp::Spans { tx_id: 5 }, TxOp::enqueue(message("b", 1, b"one"))])];
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));

    // No commit anywhere: neither half survives.
    let mut logs = [written(dir_a.path(), &a), written(dir_b.path(), &b)];
    assert_eq!(resolve_together(&mut logs), [Vec::<u64>::new(), Vec::new()]);
    assert_eq!(ids(&logs[0]), [("a".to_owned(), vec![1])]);
    assert_eq!(ids(&logs[1]), [("b".to_owned(), vec![])]);

    // The coordinator's commit in A's log: both halves survive, and B is told to record it.
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let mut committed = a.clone();
    committed.push(Record::TxCommit { tx_id: 5 });
    let mut logs = [written(dir_a.path(), &committed), written(dir_b.path(), &b)];
    assert_eq!(resolve_together(&mut logs), [Vec::<u64>::new(), vec![5]]);
    assert_eq!(ids(&logs[0]), [("a".to_owned(), vec![])]);
    assert_eq!(ids(&logs[1]), [("b".to_owned(), vec![1])]);
}

#[test]
fn one_fold_over_several_logs_decides_in_either_order() {
    let part = Record::tx_part(vec![TxOp::Spans { tx_id: 3 }, TxOp::enqueue(message("b", 1, b"x"))]);
    for commit_first in [false, true] {
        let mut fold = ferry_storage::Fold::new();
        fold.apply(declare("b"));
        if commit_first {
            fold.apply(Record::TxCommit { tx_id: 3 });
            fold.apply(part.clone());
        } else {
            fold.apply(part.clone());
            fold.apply(Record::TxCommit { tx_id: 3 });
        }
        let recovered = fold.finish();
        assert!(recovered.undecided.is_empty(), "commit first: {commit_first}");
        assert_eq!(ids(&recovered), [("b".to_owned(), vec![1])]);
    }
}

#[test]
fn a_message_a_part_publishes_and_settles_itself_never_comes_back() {
    // An auto-ack consumer (or a length limit) settles what the share publishes, inside it.
    let dir = tempfile::tempdir().expect("tempdir");
    let records = vec![
        declare("b"),
        Record::tx_part(vec![
            TxOp::Spans { tx_id: 4 },
            TxOp::enqueue(message("b", 1, b"x")),
            TxOp::Settle { queue: "b".to_owned(), msg_id: 1 },
        ]),
    ];
    let recovered = written(dir.path(), &records);
    for committed in [false, true] {
        let mut resolved = recovered.clone();
        resolved.resolve(&|_| committed);
        assert_eq!(ids(&resolved), [("b".to_owned(), vec![])], "committed elsewhere: {committed}");
    }
}

#[test]
fn a_part_that_acks_what_an_undecided_part_published_is_decided_with_it() {
    // Transaction 1 publishes message 5; before its commit is durable, transaction 2 (a
    // consumer's) acks it. Each combination of outcomes gives what applying only the
    // committed ones would.
    let dir = tempfile::tempdir().expect("tempdir");
    let records = vec![
        declare("q"),
        Record::tx_part(vec![TxOp::Spans { tx_id: 1 }, TxOp::enqueue(message("q", 5, b"five"))]),
        Record::tx_part(vec![TxOp::Spans { tx_id: 2 }, TxOp::Settle { queue: "q".to_owned(), msg_id: 5 }]),
    ];
    let recovered = written(dir.path(), &records);
    for (committed, expected) in [(vec![], vec![]), (vec![1], vec![5]), (vec![2], vec![]), (vec![1, 2], vec![])] {
        let mut resolved = recovered.clone();
        let kept = resolved.resolve(&|tx| committed.contains(&tx));
        assert_eq!(ids(&resolved), [("q".to_owned(), expected)], "committed: {committed:?}");
        assert_eq!(kept, committed);
    }
}

#[test]
fn a_follower_forgets_the_commits_of_deleted_segments() {
    // Offsets are record ends: the last record of a segment ends where the next one begins.
    let mut fold = ferry_storage::Fold::new();
    fold.apply_at(100, Record::TxCommit { tx_id: 1 << 16 });
    fold.apply_at(4096, Record::TxCommit { tx_id: 3 });
    fold.apply_at(5000, Record::TxCommit { tx_id: 2 << 16 });
    fold.forget_commits_below(4096);
    let recovered = fold.finish();
    assert_eq!(recovered.committed, [2 << 16]);
    assert_eq!(recovered.tx_id_max, 2 << 16);
}
