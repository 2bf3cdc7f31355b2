//! Epoch fencing at the storage level (ARCHITECTURE §5): a writer of a newer epoch seals the
//! previous epoch at its last valid record and starts its own segment; whatever the fenced
//! writer appends afterwards — in its old segment or in segments it rolls to — is never read
//! back; a torn tail at takeover is ignored without writing the old writer's files; a writer
//! that finds a newer epoch in the log refuses to open. Both writers run in this one process,
//! as a paused active and its successor would over shared storage.

mod common;

use std::path::Path;

use common::{declare, enqueue, message, settle, sync_now};
use ferry_storage::{Epoch, LogConfig, Record, Recovered, ShardLog, StorageError, replay};

fn open_at(dir: &Path, epoch: u64, segment_size_bytes: u64) -> (ShardLog, Recovered) {
    ShardLog::open(LogConfig { segment_size_bytes, epoch: Epoch(epoch), ..LogConfig::new(dir) }).expect("open")
}

fn live_ids(recovered: &Recovered, queue: &str) -> Vec<u64> {
    let q = recovered.queues.iter().find(|q| q.name == queue).expect("queue recovered");
    q.messages.iter().map(|m| m.msg_id).collect()
}

fn segment_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_epoch_seals_the_old_one_and_starts_its_own_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut old, _) = open_at(dir.path(), 1, 64 * 1024);
    old.append(&declare("q")).expect("declare");
    for id in 0..10 {
        old.append(&enqueue("q", id, b"payload")).expect("enqueue");
    }
    old.append(&settle("q", 3)).expect("settle");
    let sealed_at = sync_now(&mut old);
    drop(old);

    let (mut new, recovered) = open_at(dir.path(), 2, 64 * 1024);
    assert_eq!(live_ids(&recovered, "q"), vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(new.active_base(), sealed_at, "the new epoch starts exactly at the seal");
    assert_eq!(segment_names(dir.path()).len(), 2, "one segment per epoch: {:?}", segment_names(dir.path()));
    let seals = std::fs::read_to_string(dir.path().join("seals")).expect("seals written");
    assert_eq!(seals.trim(), format!("1 {}", sealed_at.0));
    new.append(&settle("q", 0)).expect("append at epoch 2");
    sync_now(&mut new);
    drop(new);

    // Reopening at the same epoch continues in place; the next epoch seals epoch 2 too.
    let (_, recovered) = open_at(dir.path(), 2, 64 * 1024);
    assert_eq!(live_ids(&recovered, "q"), vec![1, 2, 4, 5, 6, 7, 8, 9]);
    let (_, recovered) = open_at(dir.path(), 3, 64 * 1024);
    assert_eq!(live_ids(&recovered, "q"), vec![1, 2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(segment_names(dir.path()).len(), 3);
}

#[test]
fn what_a_fenced_writer_appends_after_the_seal_is_never_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small segments so the fenced writer rolls into new files after the takeover.
    let (mut zombie, _) = open_at(dir.path(), 1, 4096);
    zombie.append(&declare("q")).expect("declare");
    for id in 0..5 {
        zombie.append(&enqueue("q", id, &[1; 100])).expect("enqueue");
    }
    sync_now(&mut zombie);

    let (mut active, recovered) = open_at(dir.path(), 2, 4096);
    assert_eq!(live_ids(&recovered, "q"), vec![0, 1, 2, 3, 4]);

    // The paused old active wakes up and keeps writing: settles (acks) and new messages,
    // across several segment rolls, all synced.
    for id in 0..5 {
        zombie.append(&settle("q", id)).expect("zombie settle");
    }
    for id in 100..160 {
        zombie.append(&enqueue("q", id, &[2; 200])).expect("zombie enqueue");
    }
    sync_now(&mut zombie);
    assert!(zombie.segment_count() > 2, "the zombie rolled");

    active.append(&enqueue("q", 5, b"from epoch 2")).expect("append");
    sync_now(&mut active);
    drop(active);
    drop(zombie);

    let replayed = replay(dir.path()).expect("replay");
    assert!(
        replayed.iter().all(|(_, r)| !matches!(r, ferry_storage::Record::Enqueue(m) if m.msg_id >= 100)),
        "replay must not return the fenced writer's records"
    );
    let (_, recovered) = open_at(dir.path(), 2, 4096);
    assert_eq!(live_ids(&recovered, "q"), vec![0, 1, 2, 3, 4, 5], "the zombie's acks and messages are ignored");
    let (_, recovered) = open_at(dir.path(), 3, 4096);
    assert_eq!(live_ids(&recovered, "q"), vec![0, 1, 2, 3, 4, 5]);
    let seals = std::fs::read_to_string(dir.path().join("seals")).expect("seals");
    let epoch1_end: u64 = seals.lines().next().and_then(|l| l.split(' ').nth(1)).expect("epoch 1").parse().expect("n");
    for name in segment_names(dir.path()) {
        let (base, epoch) = name.trim_end_matches(".seg").split_once('-').expect("base-epoch");
        let (base, epoch): (u64, u64) = (base.parse().expect("base"), epoch.parse().expect("epoch"));
        assert!(epoch != 1 || base < epoch1_end, "the fenced writer's rolled segments are removed: {name}");
    }
}

#[test]
fn a_torn_tail_at_takeover_is_ignored_and_the_old_file_is_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut old, _) = open_at(dir.path(), 1, 64 * 1024);
    old.append(&declare("q")).expect("declare");
    old.append(&enqueue("q", 1, b"kept")).expect("enqueue");
    let end = sync_now(&mut old);
    drop(old);
    // A crash mid-record: half a record's worth of bytes after the last valid record.
    let old_path = dir.path().join(&segment_names(dir.path())[0]);
    let mut bytes = std::fs::read(&old_path).expect("read");
    let torn_at = usize::try_from(end.0).expect("fits");
    bytes[torn_at..torn_at + 30].copy_from_slice(&[0x46; 30]);
    std::fs::write(&old_path, &bytes).expect("tear");

    let (mut new, recovered) = open_at(dir.path(), 2, 64 * 1024);
    assert_eq!(live_ids(&recovered, "q"), vec![1]);
    assert_eq!(recovered.torn_tail_bytes, 30);
    assert!(recovered.quarantined.is_empty());
    assert_eq!(std::fs::read(&old_path).expect("read"), bytes, "the old epoch's file is untouched");
    new.append(&enqueue("q", 2, b"after")).expect("append");
    sync_now(&mut new);
    drop(new);
    let (_, recovered) = open_at(dir.path(), 3, 64 * 1024);
    assert_eq!(live_ids(&recovered, "q"), vec![1, 2]);
    assert!(recovered.quarantined.is_empty(), "bytes past a seal are not damage");
}

#[test]
fn a_writer_that_was_taken_over_cannot_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open_at(dir.path(), 5, 64 * 1024));
    let err = ShardLog::open(LogConfig { epoch: Epoch(4), ..LogConfig::new(dir.path()) }).expect_err("fenced");
    assert!(matches!(err, StorageError::Fenced { epoch: 4, newer: 5 }), "{err}");
}

#[derive(Debug, Default)]
struct Switch(std::sync::atomic::AtomicBool);

impl ferry_storage::Fence for Switch {
    fn check(&self) -> Result<(), String> {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) { Err("epoch 2 exists".into()) } else { Ok(()) }
    }
}

#[test]
fn a_refusing_fence_stops_acknowledgements_and_deletions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fence = std::sync::Arc::new(Switch::default());
    let config = LogConfig { segment_size_bytes: 4096, fence: Some(fence.clone()), ..LogConfig::new(dir.path()) };
    let (mut log, _) = ShardLog::open(config).expect("open");
    log.append(&declare("q")).expect("declare");
    for id in 0..40 {
        log.append(&enqueue("q", id, &[7; 200])).expect("enqueue");
        log.append(&settle("q", id)).expect("settle");
    }
    sync_now(&mut log);
    fence.0.store(true, std::sync::atomic::Ordering::SeqCst);
    let job = log.compact_job(log.active_base()).expect("cut").expect("segments to delete");
    assert!(matches!(job.run(), Err(ferry_storage::CompactFailed { error: StorageError::LeaseLost(_), .. })));
    let before = segment_names(dir.path()).len();
    assert!(before > 2);
    log.append(&enqueue("q", 99, b"late")).expect("append");
    let job = log.sync_job().expect("job");
    let durable = log.durable_offset();
    let result = job.run();
    assert!(matches!(result, Err(StorageError::LeaseLost(_))), "{result:?}");
    assert!(log.complete_sync(result).is_err());
    assert!(log.is_poisoned());
    assert_eq!(log.durable_offset(), durable, "nothing became acknowledgeable");
    assert_eq!(segment_names(dir.path()).len(), before, "nothing was deleted");
}

/// Copies a shard directory (its files are plain files; the copy is what a cold standby reads).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// The live state, independent of the order queues were first declared in.
fn live_state(recovered: &Recovered) -> Vec<(String, Vec<u64>)> {
    let mut queues: Vec<(String, Vec<u64>)> =
        recovered.queues.iter().map(|q| (q.name.clone(), q.messages.iter().map(|m| m.msg_id).collect())).collect();
    queues.sort();
    queues
}

#[test]
fn a_warm_takeover_folds_exactly_what_a_cold_one_does() {
    use ferry_storage::Tail;
    use ferry_storage::fault::FaultRng;
    for seed in 0..40u64 {
        let mut rng = FaultRng::new(seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = open_at(dir.path(), 1, 4096);
        let mut tail = Tail::new(dir.path());
        let queues = ["a", "b"];
        let mut live: Vec<(usize, u64)> = Vec::new();
        for q in queues {
            log.append(&declare(q)).expect("declare");
        }
        let mut next = 0u64;
        // Transactions spanning logs: parts (one enqueue each) and, for some, their commit.
        let (mut tx, mut pending) = (0u64, Vec::new());
        for step in 0..400 {
            match rng.below(10) {
                0..=4 => {
                    next += 1;
                    let q = rng.below(2) as usize;
                    let body = vec![1; rng.below(300) as usize];
                    if rng.below(3) == 0 {
                        tx += 1 << 16;
                        let op = ferry_storage::TxOp::enqueue(message(queues[q], next, &body));
                        let part = Record::tx_part(vec![ferry_storage::TxOp::Spans { tx_id: tx }, op]);
                        log.append(&part).expect("part");
                        pending.push(tx);
                    } else {
                        log.append(&enqueue(queues[q], next, &body)).expect("enqueue");
                    }
                    live.push((q, next));
                }
                5..=7 if !live.is_empty() => {
                    let (q, id) = live.remove(rng.below(live.len() as u64) as usize);
                    log.append(&settle(queues[q], id)).expect("settle");
                }
                8 => {
                    // Compaction as the engine does it: copy the live state forward, then delete
                    // the segments wholly below the copies.
                    sync_now(&mut log);
                    let keep_from = log.appended_offset();
                    for q in queues {
                        log.append(&declare(q)).expect("redeclare");
                    }
                    for &(q, id) in &live {
                        log.append(&enqueue(queues[q], id, b"copied")).expect("copy forward");
                    }
                    sync_now(&mut log);
                    log.compact(keep_from).expect("compact");
                }
                _ => {
                    if !pending.is_empty() && rng.below(2) == 0 {
                        let tx_id = pending.remove(rng.below(pending.len() as u64) as usize);
                        log.append(&Record::TxCommit { tx_id }).expect("commit");
                    }
                    sync_now(&mut log);
                }
            }
            if step % 37 == 0 || rng.below(20) == 0 {
                tail.catch_up().expect("catch up");
            }
        }
        sync_now(&mut log);
        if seed % 2 == 0 {
            // A standby that kept up (the others lag behind compactions: some fall back to a
            // full read, which must fold the same).
            tail.catch_up().expect("catch up");
        }
        drop(log);
        let cold_dir = tempfile::tempdir().expect("tempdir");
        copy_dir(dir.path(), cold_dir.path());
        let (_, cold) = open_at(cold_dir.path(), 2, 4096);
        let warm_records = tail.records();
        let (_, warm) = ShardLog::open_warm(
            LogConfig { segment_size_bytes: 4096, epoch: Epoch(2), ..LogConfig::new(dir.path()) },
            Some(tail),
        )
        .expect("warm open");
        assert!(warm_records > 0, "seed {seed}: the tail read something");
        let mut expected: Vec<(String, Vec<u64>)> = queues
            .iter()
            .enumerate()
            .map(|(i, q)| (q.to_string(), live.iter().filter(|(qi, _)| *qi == i).map(|(_, id)| *id).collect()))
            .collect();
        for (_, ids) in &mut expected {
            ids.sort_unstable();
        }
        let mut got = live_state(&warm);
        for (_, ids) in &mut got {
            ids.sort_unstable();
        }
        let mut cold_sorted = live_state(&cold);
        for (_, ids) in &mut cold_sorted {
            ids.sort_unstable();
        }
        assert_eq!(cold_sorted, expected, "seed {seed}: the live messages, cold");
        assert_eq!(got, expected, "seed {seed}: the live messages, warm");
        assert_eq!(live_state(&warm), live_state(&cold), "seed {seed}: the same order");
        assert!(warm.quarantined.is_empty() && cold.quarantined.is_empty(), "seed {seed}");
        // The follower forgot the commits of the segments compaction deleted, and no more.
        assert_eq!(warm.committed, cold.committed, "seed {seed}: the commits");
        assert_eq!(warm.undecided, cold.undecided, "seed {seed}: the undecided");
    }
}

#[test]
fn a_tail_waits_at_a_half_written_record_instead_of_calling_it_damage() {
    use ferry_storage::Tail;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open_at(dir.path(), 1, 64 * 1024);
    log.append(&declare("q")).expect("declare");
    let mut ends = vec![log.appended_offset()];
    for id in 0..6 {
        ends.push(log.append(&enqueue("q", id, &[9; 100])).expect("enqueue"));
    }
    sync_now(&mut log);
    drop(log);
    // Record 3 as a reader sees it while the writer is still copying its body (record 4 and 5
    // are whole already).
    let path = dir.path().join(&segment_names(dir.path())[0]);
    let whole = std::fs::read(&path).expect("read");
    let mut half = whole.clone();
    let in_body = usize::try_from(ends[4].0).expect("fits") - 8;
    half[in_body] ^= 0xFF;
    std::fs::write(&path, &half).expect("write");
    let mut tail = Tail::new(dir.path());
    tail.catch_up().expect("catch up");
    assert_eq!(tail.records(), 4, "the declare and records 0..=2, then it waits");
    std::fs::write(&path, &whole).expect("the copy finished");
    tail.catch_up().expect("catch up");
    assert_eq!(tail.records(), 7);
    let (_, recovered) = ShardLog::open_warm(
        LogConfig { segment_size_bytes: 64 * 1024, epoch: Epoch(2), ..LogConfig::new(dir.path()) },
        Some(tail),
    )
    .expect("warm open");
    assert!(recovered.quarantined.is_empty(), "nothing was damaged");
    assert_eq!(live_ids(&recovered, "q"), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_tail_does_not_read_past_a_gap_into_the_next_segment() {
    // On shared storage a standby can see a later segment while a record of an earlier one is
    // still in flight. Folding the later segment first would apply a settle before its enqueue
    // and bring the message back at takeover.
    use ferry_storage::Tail;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open_at(dir.path(), 1, 4096);
    log.append(&declare("q")).expect("declare");
    let mut ends = Vec::new();
    for id in 0..12 {
        ends.push(log.append(&enqueue("q", id, &[7; 300])).expect("enqueue"));
    }
    // The last enqueue that lies wholly in the first segment; its settle goes to a later one.
    let first_end = segment_names(dir.path())[1].split_once('-').expect("base").0.parse::<u64>().expect("base");
    let gap = (0..12).rev().find(|&id| ends[id].0 <= first_end).expect("an enqueue in the first segment");
    for id in (0..12).filter(|id| id % 2 == 0 || *id == gap) {
        log.append(&settle("q", id as u64)).expect("settle");
    }
    sync_now(&mut log);
    drop(log);
    let path = dir.path().join(&segment_names(dir.path())[0]);
    let whole = std::fs::read(&path).expect("read");
    let mut in_flight = whole.clone();
    let start = usize::try_from(ends[gap - 1].0).expect("fits");
    in_flight[start..start + 16].fill(0);
    std::fs::write(&path, &in_flight).expect("write");
    let mut tail = Tail::new(dir.path());
    tail.catch_up().expect("catch up");
    assert_eq!(tail.records(), 1 + gap as u64, "the declare and the enqueues before the gap, then it waits");
    std::fs::write(&path, &whole).expect("the record arrived");
    tail.catch_up().expect("catch up");
    let (_, recovered) = ShardLog::open_warm(
        LogConfig { segment_size_bytes: 4096, epoch: Epoch(2), ..LogConfig::new(dir.path()) },
        Some(tail),
    )
    .expect("warm open");
    let expected: Vec<u64> = (0..12).filter(|id| id % 2 == 1 && *id != gap as u64).collect();
    assert_eq!(live_ids(&recovered, "q"), expected);
}

#[test]
fn a_tail_reads_on_past_a_gap_that_a_later_record_says_is_final() {
    // A restart zeroed a torn tail at the end of the first segment, so it now ends before the
    // second one starts, for good. The records written after the restart say it was synced:
    // the tail must not wait there for ever.
    use ferry_storage::Tail;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open_at(dir.path(), 1, 4096);
    log.append(&declare("q")).expect("declare");
    let mut ends = Vec::new();
    let mut id = 0;
    while segment_names(dir.path()).len() == 1 {
        ends.push(log.append(&enqueue("q", id, &[7; 200])).expect("enqueue"));
        id += 1;
    }
    sync_now(&mut log);
    drop(log);
    let names = segment_names(dir.path());
    let n = ends.len();
    // As a power loss could leave it: the end of the first segment and the start of the
    // second never reached the disk.
    let first = dir.path().join(&names[0]);
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[usize::try_from(ends[n - 3].0).expect("fits")..usize::try_from(ends[n - 2].0).expect("fits")].fill(0);
    std::fs::write(&first, &bytes).expect("write");
    let second = dir.path().join(&names[1]);
    let mut bytes = std::fs::read(&second).expect("read");
    bytes[48..1024].fill(0);
    std::fs::write(&second, &bytes).expect("write");
    let (mut log, recovered) = open_at(dir.path(), 1, 4096);
    let kept = live_ids(&recovered, "q");
    for id in 100..105 {
        log.append(&enqueue("q", id, b"after")).expect("enqueue");
        sync_now(&mut log);
    }
    drop(log);
    let mut tail = Tail::new(dir.path());
    tail.catch_up().expect("catch up");
    assert_eq!(tail.records(), 1 + kept.len() as u64 + 5, "the declare, what the restart kept, and the later records");
    let (_, warm) = ShardLog::open_warm(
        LogConfig { segment_size_bytes: 4096, epoch: Epoch(2), ..LogConfig::new(dir.path()) },
        Some(tail),
    )
    .expect("warm open");
    let expected: Vec<u64> = kept.iter().copied().chain(100..105).collect();
    assert_eq!(live_ids(&warm, "q"), expected);
}

#[test]
fn a_takeover_reads_on_past_damage_as_far_as_a_reopen_does() {
    // The record after the damaged one is more than the takeover's 1 MiB tail probe away; the
    // search for it must not stop there, or the seal would cut off the synced records after it.
    for zeroed in [false, true] {
        takeover_and_reopen_agree_past_a_damaged_big_record(zeroed);
    }
}

/// Message 2 (2 MiB) has its header garbled, or is zeroed whole (a lost extent).
fn takeover_and_reopen_agree_past_a_damaged_big_record(zeroed: bool) {
    let records = |dir: &Path| {
        let (mut log, _) = open_at(dir, 1, 8 << 20);
        log.append(&declare("q")).expect("declare");
        log.append(&enqueue("q", 1, b"one")).expect("enqueue");
        let garbled_at = sync_now(&mut log);
        let big_end = log.append(&enqueue("q", 2, &vec![2; 2 << 20])).expect("enqueue");
        sync_now(&mut log);
        for id in 3..6 {
            log.append(&enqueue("q", id, b"after")).expect("enqueue");
            sync_now(&mut log);
        }
        drop(log);
        let path = dir.join(&segment_names(dir)[0]);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = usize::try_from(garbled_at.0).expect("fits");
        let end = if zeroed { usize::try_from(big_end.0).expect("fits") } else { at + 12 };
        bytes[at..end].fill(if zeroed { 0 } else { 0xEE });
        std::fs::write(&path, &bytes).expect("write");
    };
    let (reopened, taken_over) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    records(reopened.path());
    records(taken_over.path());
    let (_, reopen) = open_at(reopened.path(), 1, 8 << 20);
    let (_, takeover) = open_at(taken_over.path(), 2, 8 << 20);
    let named: Vec<String> = if zeroed { vec![] } else { vec!["q".to_owned()] };
    assert_eq!(reopen.quarantined, named, "the garbled record's metadata names its queue; zeros name none");
    assert_eq!(takeover.quarantined, reopen.quarantined);
    assert_eq!(takeover.records_replayed, reopen.records_replayed);
    assert_eq!(takeover.records_replayed, 5, "the declare and messages 1, 3, 4 and 5: all but the garbled record");
}

/// The record of `record`, ending at `end`, starts here.
fn start_of(end: ferry_storage::Offset, record: &ferry_storage::Record) -> usize {
    usize::try_from(end.0 - record.encoded_len().expect("length")).expect("fits")
}

#[test]
fn a_warm_takeover_reads_what_a_stale_view_hid_inside_a_finished_segment() {
    // The standby sees a stale copy of the first segment (the page holding a synced settle not
    // yet visible on shared storage: zeros) while the next segment's records already say all
    // of it was synced. It must not fold past the hole; the takeover folds what a cold one does.
    use ferry_storage::Tail;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open_at(dir.path(), 1, 4096);
    log.append(&declare("q")).expect("declare");
    for id in 0..6 {
        log.append(&enqueue("q", id, &[1; 200])).expect("enqueue");
    }
    let settle_start = start_of(log.append(&settle("q", 1)).expect("settle"), &settle("q", 1));
    let settle_end = settle_start + usize::try_from(settle("q", 1).encoded_len().expect("length")).expect("fits");
    let mut id = 10;
    loop {
        sync_now(&mut log);
        let before = segment_names(dir.path()).len();
        log.append(&enqueue("q", id, &[2; 200])).expect("enqueue");
        id += 1;
        if segment_names(dir.path()).len() > before {
            break;
        }
    }
    sync_now(&mut log);
    drop(log);
    let first = dir.path().join(&segment_names(dir.path())[0]);
    let original = std::fs::read(&first).expect("read");
    let mut stale = original.clone();
    stale[settle_start..settle_end].fill(0);
    std::fs::write(&first, &stale).expect("write the stale view");
    let mut tail = Tail::new(dir.path());
    tail.catch_up().expect("catch up");
    assert_eq!(tail.records(), 0, "stopped following at the hole");
    std::fs::write(&first, &original).expect("the page arrives");
    // It looks again every 100 polls (5 s), and follows the log again once the hole is gone.
    for _ in 0..100 {
        tail.catch_up().expect("catch up");
    }
    assert!(tail.records() > 7, "following again: {}", tail.records());
    let cold_dir = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), cold_dir.path());
    let (_, cold) = open_at(cold_dir.path(), 2, 4096);
    let (_, warm) = ShardLog::open_warm(
        LogConfig { segment_size_bytes: 4096, epoch: Epoch(2), ..LogConfig::new(dir.path()) },
        Some(tail),
    )
    .expect("warm open");
    assert!(!live_ids(&cold, "q").contains(&1), "message 1 was acked");
    assert_eq!(live_ids(&warm, "q"), live_ids(&cold, "q"));
}

/// A log whose first segment holds what `build` appends (it returns where the record to damage
/// starts) and fillers, all synced and sealed by a takeover (epoch 2); then that record's magic,
/// checksum and length are garbled, epoch 2 opens again and appends `after` records.
fn sealed_with_garbled(dir: &Path, build: impl FnOnce(&mut ShardLog) -> usize, after: u64) -> Recovered {
    let (mut log, _) = open_at(dir, 1, 4096);
    let at = build(&mut log);
    let mut id = 100;
    while segment_names(dir).len() == 1 {
        log.append(&enqueue("f", id, &[1; 200])).expect("filler");
        id += 1;
    }
    sync_now(&mut log);
    drop(log);
    let (log, _) = open_at(dir, 2, 4096);
    drop(log);
    let path = dir.join(&segment_names(dir)[0]);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[at..at + 12].fill(0xEE);
    std::fs::write(&path, &bytes).expect("write");
    let (mut log, recovered) = open_at(dir, 2, 4096);
    for n in 0..after {
        log.append(&enqueue("f", 5000 + n, &[3; 100])).expect("epoch 2");
    }
    sync_now(&mut log);
    recovered
}

#[test]
fn a_garbled_settle_in_a_sealed_epoch_still_quarantines_its_queue() {
    // Nothing of its epoch after it proves it synced, but it lies below the seal: damage. Its
    // metadata, placed by its intact length field, names q, so the acked message 1 is not
    // served again. The seal, which the takeover synced, also proves the records after it in
    // its segment synced: they are read, not lost.
    let dir = tempfile::tempdir().expect("tempdir");
    let recovered = sealed_with_garbled(
        dir.path(),
        |log| {
            log.append(&declare("q")).expect("declare");
            log.append(&declare("f")).expect("declare");
            log.append(&enqueue("q", 1, b"one")).expect("enqueue");
            sync_now(log);
            start_of(log.append(&settle("q", 1)).expect("settle"), &settle("q", 1))
        },
        0,
    );
    assert_eq!(recovered.quarantined, vec!["q".to_owned()]);
    let fillers = live_ids(&recovered, "f");
    assert_eq!(fillers, (100..100 + fillers.len() as u64).collect::<Vec<_>>(), "none of the segment's fillers lost");
    assert!(fillers.len() > 10);
}

#[test]
fn a_standby_stops_at_damage_in_a_sealed_epoch_and_its_takeover_reads_cold() {
    // The standby cannot judge damage it cannot read past in order: it stops following (no
    // re-reading at every poll) until compaction deletes the segment, and a takeover from it
    // folds what a cold one does.
    use ferry_storage::Tail;
    let dir = tempfile::tempdir().expect("tempdir");
    sealed_with_garbled(
        dir.path(),
        |log| {
            log.append(&declare("q")).expect("declare");
            log.append(&declare("f")).expect("declare");
            sync_now(log);
            start_of(log.append(&enqueue("q", 1, b"x")).expect("x"), &enqueue("q", 1, b"x"))
        },
        20,
    );
    let mut tail = Tail::new(dir.path());
    for _ in 0..3 {
        tail.catch_up().expect("catch up");
    }
    assert_eq!(tail.records(), 0, "stopped following");
    let cold_dir = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), cold_dir.path());
    let (_, cold) = open_at(cold_dir.path(), 3, 4096);
    let (_, warm) = ShardLog::open_warm(
        LogConfig { segment_size_bytes: 4096, epoch: Epoch(3), ..LogConfig::new(dir.path()) },
        Some(tail),
    )
    .expect("warm open");
    assert_eq!(live_ids(&warm, "f"), live_ids(&cold, "f"));
    assert_eq!(warm.quarantined, cold.quarantined);
    assert_eq!(warm.records_replayed, cold.records_replayed);
}
