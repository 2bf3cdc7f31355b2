//! A transaction's part (`Record::TxPart`): its operations come back together, torn it brings
//! back none of them, and damaged inside the synced region it quarantines every queue it names.

mod common;

use common::{declare, enqueue, message, open, segment_files, sync_now};
use ferry_storage::{Record, TxOp, replay};

const SEGMENT: u64 = 4096;

/// A recovered queue's name with each message's id and body.
type QueueContents = (String, Vec<(u64, Vec<u8>)>);

/// Ids and bodies of each recovered queue, by name.
fn contents(recovered: &ferry_storage::Recovered) -> Vec<QueueContents> {
    let each = |q: &ferry_storage::RecoveredQueue| q.messages.iter().map(|m| (m.msg_id, m.body.to_vec())).collect();
    recovered.queues.iter().map(|q| (q.name.clone(), each(q))).collect()
}

/// Two queues, one message before the transaction, and a part that enqueues to both and
/// settles the message before it.
fn records() -> Vec<Record> {
    vec![
        declare("a"),
        declare("b"),
        enqueue("a", 1, b"before"),
        Record::tx_part(vec![
            TxOp::enqueue(message("a", 2, b"two")),
            TxOp::enqueue(message("b", 3, b"")),
            TxOp::Settle { queue: "a".to_owned(), msg_id: 1 },
            TxOp::enqueue(message("a", 4, &[4; 200])),
        ]),
    ]
}

#[test]
fn a_transaction_part_comes_back_whole_with_its_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), SEGMENT);
    let ends: Vec<_> = records().iter().map(|r| log.append(r).expect("append")).collect();
    sync_now(&mut log);
    drop(log);
    let replayed = replay(dir.path()).expect("replay");
    assert_eq!(replayed, ends.into_iter().zip(records()).collect::<Vec<_>>());
    let (_, recovered) = open(dir.path(), SEGMENT);
    let expected =
        vec![("a".to_owned(), vec![(2, b"two".to_vec()), (4, vec![4; 200])]), ("b".to_owned(), vec![(3, Vec::new())])];
    assert_eq!(contents(&recovered), expected);
}

#[test]
fn a_torn_transaction_part_brings_back_none_of_its_operations() {
    let source = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(source.path(), SEGMENT);
    let ends: Vec<_> = records().iter().map(|r| log.append(r).expect("append")).collect();
    sync_now(&mut log);
    drop(log);
    let original = std::fs::read(&segment_files(source.path())[0]).expect("read segment");
    let (start, end) = (ends[2].0 as usize, ends[3].0 as usize);
    let before = vec![("a".to_owned(), vec![(1, b"before".to_vec())]), ("b".to_owned(), Vec::new())];
    let mut torn = 0;
    for at in start..end {
        for zero in [false, true] {
            let mut bytes = original.clone();
            if zero {
                if bytes[at..].iter().all(|&b| b == 0) {
                    continue; // zeroing zero padding changes nothing
                }
                bytes[at..].fill(0);
            } else {
                bytes[at] ^= 0x5A;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join(format!("{:020}-{:020}.seg", 0, 1)), &bytes).expect("write copy");
            let (_, recovered) = open(dir.path(), SEGMENT);
            assert_eq!(contents(&recovered), before, "damage at byte {at} (zeroed from there: {zero})");
            assert!(recovered.quarantined.is_empty());
            torn += 1;
        }
    }
    assert!(torn > 200, "every byte of the part was tried: {torn}");
}

#[test]
fn damage_inside_a_synced_transaction_part_quarantines_every_queue_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), SEGMENT);
    let mut all = records();
    all.insert(0, declare("c"));
    // Later records (other queues, then enough to roll) prove the part was synced.
    all.extend((10..30).map(|id| enqueue("c", id, &[1; 300])));
    let ends: Vec<_> = all.iter().map(|r| log.append(r).expect("append")).collect();
    sync_now(&mut log);
    drop(log);
    let files = segment_files(dir.path());
    assert!(files.len() >= 2);
    let (start, end) = (ends[3].0 as usize, ends[4].0 as usize);
    let mut bytes = std::fs::read(&files[0]).expect("read");
    bytes[end - 30] ^= 0xFF; // inside the last body
    std::fs::write(&files[0], &bytes).expect("write");
    assert!(start < end - 30);
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.quarantined, vec!["a".to_owned(), "b".to_owned()]);
    let names: Vec<&str> = recovered.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["c"]);
    assert_eq!(recovered.queues[0].messages.len(), 20);
}
