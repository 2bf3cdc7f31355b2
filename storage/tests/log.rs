//! ShardLog behaviour tests: round trip of every record kind, monotonic offsets across segment
//! rolls, the durability contract (durable lags appended until a SyncJob completes), poisoning
//! on a failed sync, oversized records and compaction. Each test uses its own temp directory.

mod common;

use common::{declare, enqueue, every_kind, open, settle, sync_now};
use ferry_storage::{Offset, Record, ShardLog, StorageError, replay};

#[test]
fn every_record_kind_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, recovered) = open(dir.path(), 64 * 1024);
    assert_eq!(recovered.records_replayed, 0);
    let records = every_kind();
    let mut offsets = Vec::new();
    for record in &records {
        offsets.push(log.append(record).expect("append"));
        assert_eq!(log.appended_offset(), *offsets.last().expect("offset"));
    }
    sync_now(&mut log);
    drop(log);
    let replayed = replay(dir.path()).expect("replay");
    let expected: Vec<(Offset, Record)> = offsets.into_iter().zip(records).collect();
    assert_eq!(replayed, expected);
    let (log, recovered) = open(dir.path(), 64 * 1024);
    assert_eq!(recovered.records_replayed, expected.len() as u64);
    assert_eq!(recovered.torn_tail_bytes, 0);
    assert_eq!(log.appended_offset(), expected.last().expect("last").0);
    assert_eq!(log.durable_offset(), log.appended_offset());
}

#[test]
fn offsets_are_monotonic_across_segment_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), 4096);
    log.append(&declare("q")).expect("declare");
    let mut last = log.appended_offset();
    let mut appended = Vec::new();
    for id in 0..100u64 {
        let record = enqueue("q", id, &vec![id as u8; 200 + (id as usize * 7) % 300]);
        let end = log.append(&record).expect("append");
        assert!(end > last, "offsets must grow");
        let len = record.encoded_len().expect("len");
        assert!(end.0 - last.0 == len || end.0 - last.0 == len + 48, "contiguous, or a segment header between");
        last = end;
        appended.push((end, record));
    }
    assert!(log.segment_count() >= 5, "expected several rolls, got {}", log.segment_count());
    drop(log);
    let replayed = replay(dir.path()).expect("replay");
    assert_eq!(replayed[1..], appended[..]);
    let (mut log, recovered) = open(dir.path(), 4096);
    assert_eq!(recovered.queues[0].messages.len(), 100);
    assert!(recovered.queues[0].messages.iter().all(|m| m.redelivered));
    assert_eq!(log.appended_offset(), last);
    let end = log.append(&settle("q", 0)).expect("append after reopen");
    assert!(end > last);
}

#[test]
fn durable_offset_lags_until_a_sync_job_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), 4096);
    let start = log.durable_offset();
    for id in 0..30 {
        log.append(&enqueue("q", id, &[7; 250])).expect("append");
    }
    assert!(log.segment_count() > 1, "the job must span a roll");
    assert_eq!(log.durable_offset(), start);
    let job = log.sync_job().expect("job");
    assert_eq!(job.target(), log.appended_offset());
    assert!(log.sync_job().is_none(), "one job in flight at a time");
    let target = job.target();
    let handle = std::thread::spawn(move || job.run());
    let after = log.append(&enqueue("q", 99, b"late")).expect("append while syncing");
    assert_eq!(log.durable_offset(), start, "not durable before the job completes");
    let result = handle.join().expect("join");
    assert_eq!(log.complete_sync(result).expect("sync ok"), target);
    assert_eq!(log.durable_offset(), target);
    assert!(log.durable_offset() < after);
    let job = log.sync_job().expect("second job covers the late append");
    let result = std::thread::spawn(move || job.run()).join().expect("join");
    log.complete_sync(result).expect("sync ok");
    assert_eq!(log.durable_offset(), after);
    assert!(log.sync_job().is_none(), "nothing left to sync");
}

#[test]
fn failed_sync_poisons_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), 4096);
    log.append(&declare("q")).expect("append");
    let job = log.sync_job().expect("job");
    drop(job);
    let failure = Err(StorageError::from(std::io::Error::other("disk on fire")));
    assert!(matches!(log.complete_sync(failure), Err(StorageError::Io { .. })));
    assert!(log.is_poisoned());
    assert_eq!(log.durable_offset(), Offset(48));
    assert!(matches!(log.append(&declare("r")), Err(StorageError::Poisoned)));
    assert!(log.sync_job().is_none());
    assert!(matches!(log.compact(Offset(u64::MAX)), Err(StorageError::Poisoned)));
}

#[test]
fn record_larger_than_a_segment_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), 4096);
    let before = log.appended_offset();
    let err = log.append(&enqueue("q", 1, &[1; 5000])).expect_err("too large");
    assert!(matches!(err, StorageError::RecordTooLarge { segment_size_bytes: 4096, .. }));
    assert_eq!(log.appended_offset(), before);
    log.append(&enqueue("q", 2, &[1; 3000])).expect("fits");
}

#[test]
fn bad_config_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = ShardLog::open(common::config(dir.path(), 100)).expect_err("too small");
    assert!(matches!(err, StorageError::Config(_)));
}

#[test]
fn compact_deletes_sealed_segments_below_keep_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), 4096);
    let mut ends = Vec::new();
    for id in 0..40 {
        ends.push(log.append(&enqueue("q", id, &[3; 400])).expect("append"));
    }
    let segments = log.segment_count();
    assert!(segments >= 4);
    let keep_from = ends[30];
    assert_eq!(log.compact(keep_from).expect("compact").segments_deleted, 0, "nothing is durable yet");
    sync_now(&mut log);
    let report = log.compact(keep_from).expect("compact");
    assert!(report.segments_deleted >= 2);
    assert_eq!(log.segment_count(), segments - report.segments_deleted as usize);
    drop(log);
    let replayed = replay(dir.path()).expect("replay");
    let first_kept = replayed.first().expect("some records survive").0;
    assert!(first_kept <= keep_from, "the record ending at keep_from survives");
    assert_eq!(replayed.last().expect("last").0, *ends.last().expect("end"));
    let (mut log, recovered) = open(dir.path(), 4096);
    assert_eq!(recovered.records_replayed as usize, replayed.len());
    assert!(log.append(&declare("q")).expect("append") > *ends.last().expect("end"));
}
