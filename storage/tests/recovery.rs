//! Recovery tests: a torn last record at every byte position, damage inside a sealed segment
//! (quarantine of that queue only), damage in the middle of the last segment, and folding of
//! enqueues, settles, declarations and bindings into `Recovered`.

mod common;

use std::path::Path;

use common::{declare, enqueue, message, open, segment_files, settle, sync_now};
use ferry_storage::{Epoch, LogConfig, Offset, Record, ShardLog, replay};

const SEGMENT: u64 = 4096;

/// Writes `records` into a fresh log in `dir` and returns each record's END offset.
fn write_log(dir: &Path, records: &[Record]) -> Vec<Offset> {
    let (mut log, _) = open(dir, SEGMENT);
    let ends = records.iter().map(|r| log.append(r).expect("append")).collect();
    sync_now(&mut log);
    ends
}

/// Reopens a copy of `file` damaged by `damage` and checks that exactly the records before the
/// last one come back, and that appending and replaying still work.
fn check_torn(original: &[u8], damage: impl Fn(&mut [u8]), kept: &[(Offset, Record)], torn_expected: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = original.to_vec();
    damage(&mut bytes);
    std::fs::write(dir.path().join(format!("{:020}-{:020}.seg", 0, 1)), &bytes).expect("write copy");
    let (mut log, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.records_replayed, kept.len() as u64);
    assert_eq!(recovered.torn_tail_bytes > 0, torn_expected);
    assert!(recovered.quarantined.is_empty());
    assert_eq!(log.appended_offset(), kept.last().expect("kept").0);
    let extra = enqueue("q", 1000, b"after the tear");
    let end = log.append(&extra).expect("append after recovery");
    drop(log);
    let mut expected = kept.to_vec();
    expected.push((end, extra));
    assert_eq!(replay(dir.path()).expect("replay"), expected);
}

#[test]
fn torn_last_record_at_every_byte_position() {
    let source = tempfile::tempdir().expect("tempdir");
    let records = vec![
        declare("q"),
        enqueue("q", 1, b"first"),
        enqueue("q", 2, b"second"),
        enqueue("q", 3, b"0123456789abcdefghij"),
    ];
    let ends = write_log(source.path(), &records);
    let original = std::fs::read(&segment_files(source.path())[0]).expect("read segment");
    let all: Vec<(Offset, Record)> = ends.iter().copied().zip(records).collect();
    let kept = &all[..all.len() - 1];
    let start = kept.last().expect("kept").0.0 as usize;
    let end = all.last().expect("last").0.0 as usize;
    for at in start..end {
        check_torn(&original, |b| b[at] ^= 0x5A, kept, true);
        let unchanged = original[at..].iter().all(|&b| b == 0);
        if unchanged {
            continue; // zeroing already-zero padding changes nothing: the record stays valid
        }
        check_torn(&original, |b| b[at..].fill(0), kept, at > start);
    }
}

#[test]
fn damage_in_a_sealed_segment_quarantines_only_that_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = vec![declare("a"), declare("b")];
    for id in 0..24 {
        records.push(enqueue(if id % 2 == 0 { "a" } else { "b" }, id, &[id as u8 + 1; 300]));
    }
    let ends = write_log(dir.path(), &records);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    // Record 4 (enqueue of "a", id 2) lies in the first segment (base 0): flip a body byte.
    let (start, end) = (ends[3].0 as usize, ends[4].0 as usize);
    let mut bytes = std::fs::read(&files[0]).expect("read");
    bytes[(start + end) / 2] ^= 0xFF;
    std::fs::write(&files[0], &bytes).expect("write");
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.quarantined, vec!["a".to_owned()]);
    assert_eq!(recovered.queues.len(), 1);
    assert_eq!(recovered.queues[0].name, "b");
    let ids: Vec<u64> = recovered.queues[0].messages.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, (0..24).filter(|id| id % 2 == 1).collect::<Vec<_>>());
    assert_eq!(recovered.torn_tail_bytes, 0);
}

#[test]
fn unreadable_header_in_a_sealed_segment_loses_only_the_rest_of_that_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = vec![declare("a")];
    records.extend((0..24).map(|id| enqueue("a", id, &[9; 300])));
    let ends = write_log(dir.path(), &records);
    let files = segment_files(dir.path());
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let at = ends[2].0 as usize; // header of record 3, all of it: its metadata cannot be placed
    bytes[at..at + 40].fill(0xEE);
    std::fs::write(&files[0], &bytes).expect("write");
    let (mut log, recovered) = open(dir.path(), SEGMENT);
    assert!(recovered.quarantined.is_empty(), "the queue name is unreadable: logged, skipped");
    let ids: Vec<u64> = recovered.queues[0].messages.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids[..2], [0, 1]);
    assert!(ids.len() < 24 && ids.len() > 2, "later segments still recover: {ids:?}");
    assert_eq!(ids.last(), Some(&23));
    log.append(&settle("a", 0)).expect("append");
}

#[test]
fn damage_mid_last_segment_followed_by_valid_records_is_quarantined_not_torn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records =
        vec![declare("a"), declare("b"), enqueue("a", 1, b"one"), enqueue("b", 2, b"two"), enqueue("b", 3, b"three")];
    let ends = write_log(dir.path(), &records);
    let file = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(file).expect("read");
    bytes[ends[2].0 as usize - 12] ^= 0x01;
    std::fs::write(file, &bytes).expect("write");
    let (log, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.quarantined, vec!["a".to_owned()]);
    assert_eq!(recovered.records_replayed, 4);
    assert_eq!(recovered.queues[0].messages.len(), 2);
    assert_eq!(log.appended_offset(), *ends.last().expect("end"), "nothing valid is overwritten");
}

#[test]
fn settled_messages_never_come_back_and_the_rest_are_redelivered_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = vec![declare("q"), enqueue("q", 1, b"1"), enqueue("q", 2, b"2"), enqueue("q", 3, b"3")];
    records.extend([settle("q", 2), enqueue("q", 4, b"4"), settle("q", 1), settle("q", 99)]);
    write_log(dir.path(), &records);
    let (mut log, recovered) = open(dir.path(), SEGMENT);
    let got: Vec<_> = recovered.queues[0].messages.clone();
    let expected: Vec<_> = [(3, b"3"), (4, b"4")]
        .iter()
        .map(|(id, body)| ferry_storage::StoredMessage { redelivered: true, ..message("q", *id, *body) })
        .collect();
    assert_eq!(got, expected);
    log.append(&settle("q", 3)).expect("append");
    drop(log);
    let (_, recovered) = open(dir.path(), SEGMENT);
    let ids: Vec<u64> = recovered.queues[0].messages.iter().map(|m| m.msg_id).collect();
    assert_eq!(ids, vec![4]);
}

#[test]
fn declarations_bindings_and_deletes_fold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exchange = |name: &str, durable| Record::ExchangeDeclare {
        name: name.to_owned(),
        kind: "direct".to_owned(),
        durable,
        auto_delete: false,
        internal: false,
        arguments: vec![],
    };
    let bind = |e: &str, q: &str| Record::Bind {
        exchange: e.to_owned(),
        queue: q.to_owned(),
        routing_key: "k".to_owned(),
        arguments: vec![],
    };
    let records = vec![
        exchange("x", true),
        exchange("gone", true),
        exchange("transient", false),
        declare("q"),
        declare("dead"),
        Record::QueueDeclare { name: "tmp".to_owned(), durable: false, auto_delete: true, arguments: vec![] },
        enqueue("orphan", 1, b"never declared"),
        enqueue("dead", 1, b"deleted with its queue"),
        bind("x", "q"),
        bind("x", "dead"),
        bind("gone", "q"),
        bind("x", "tmp"),
        Record::Unbind { exchange: "x".to_owned(), queue: "tmp".to_owned(), routing_key: "k".to_owned() },
        Record::QueueDelete { name: "dead".to_owned() },
        Record::ExchangeDelete { name: "gone".to_owned() },
        enqueue("late", 5, b"declared later"),
        declare("late"),
        Record::TxCommit { tx_id: 7 },
    ];
    write_log(dir.path(), &records);
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.exchanges, vec![exchange("x", true)]);
    assert_eq!(recovered.bindings, vec![bind("x", "q")]);
    let names: Vec<&str> = recovered.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, vec!["q", "late"]);
    assert_eq!(recovered.queues[1].messages.len(), 1);
    assert_eq!(recovered.records_replayed, records.len() as u64);
}

#[test]
fn kept_segments_outlive_compaction_and_are_not_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = vec![declare("a"), declare("b")];
    for id in 0..24 {
        records.push(enqueue(if id % 2 == 0 { "a" } else { "b" }, id, &[id as u8 + 1; 300]));
    }
    write_log(dir.path(), &records);
    let files = segment_files(dir.path());
    let (mut log, _) = open(dir.path(), SEGMENT);
    let kept = log.keep_segments("quarantine-1").expect("keep");
    assert_eq!(kept, dir.path().join("quarantine-1"));
    let linked = |name: &std::path::Path| kept.join(name.file_name().expect("file name"));
    assert!(files.iter().all(|f| linked(f).is_file()), "every segment linked");
    assert!(log.keep_segments("quarantine-1").is_ok(), "keeping twice is harmless");
    // Everything settled: compaction deletes the log's own names; the kept ones stay whole.
    for id in 0..24 {
        log.append(&settle(if id % 2 == 0 { "a" } else { "b" }, id)).expect("settle");
    }
    log.append(&declare("b")).expect("declare");
    sync_now(&mut log);
    assert!(log.compact(log.active_base()).expect("compact").segments_deleted >= 2);
    assert!(!files[0].exists(), "the oldest segment is gone from the log");
    assert_eq!(std::fs::read(linked(&files[0])).expect("kept").len() as u64, SEGMENT);
    drop(log);
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert!(recovered.queues.iter().all(|q| q.messages.is_empty()), "nothing read from the kept copy");
}

/// Writes each batch into a fresh log in `dir`, syncing after each (the records of a later
/// batch carry the mark that the earlier ones were synced), and returns every record's END
/// offset. Everything fits the one (last) segment.
fn write_synced_batches(dir: &Path, batches: &[&[Record]]) -> Vec<Offset> {
    let (mut log, _) = open(dir, SEGMENT);
    let mut ends = Vec::new();
    for batch in batches {
        ends.extend(batch.iter().map(|r| log.append(r).expect("append")));
        sync_now(&mut log);
    }
    assert_eq!(segment_files(dir).len(), 1, "one segment");
    ends
}

/// Garbles the magic, checksum and length of the record that starts at `at` in the one
/// segment of the log in `dir`.
fn garble_header_at(dir: &Path, at: Offset) {
    let file = &segment_files(dir)[0];
    let mut bytes = std::fs::read(file).expect("read");
    let at = at.0 as usize;
    bytes[at..at + 12].fill(0xEE);
    std::fs::write(file, &bytes).expect("write");
}

fn live_ids(recovered: &ferry_storage::Recovered, queue: &str) -> Vec<u64> {
    let q = recovered.queues.iter().find(|q| q.name == queue).expect("queue recovered");
    q.messages.iter().map(|m| m.msg_id).collect()
}

/// Two synced batches; `damage` is applied to record 2 (`enqueue("a", 1)`, in the first
/// batch) of the last segment, given its start and end. Checks that the reopened log appends
/// after all the data and that a second start reads the same; returns the first recovery.
fn reopen_after_damage_in_first_batch(damage: impl Fn(&mut [u8], usize, usize)) -> ferry_storage::Recovered {
    let dir = tempfile::tempdir().expect("tempdir");
    let first: &[Record] = &[declare("a"), declare("b"), enqueue("a", 1, b"one"), enqueue("b", 2, b"two")];
    let second: &[Record] = &[enqueue("a", 3, b"three"), enqueue("b", 4, b"four")];
    let ends = write_synced_batches(dir.path(), &[first, second]);
    let file = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(file).expect("read");
    damage(&mut bytes, ends[1].0 as usize, ends[2].0 as usize);
    std::fs::write(file, &bytes).expect("write");
    let (log, recovered) = open(dir.path(), SEGMENT);
    assert!(log.appended_offset() > *ends.last().expect("end"), "nothing after the damage is zeroed or overwritten");
    drop(log);
    let (_, again) = open(dir.path(), SEGMENT);
    // Plus the record that marks the damage synced, for later starts.
    assert_eq!(again.records_replayed, recovered.records_replayed + 1, "the next start reads the same");
    assert_eq!(again.quarantined, recovered.quarantined);
    assert_eq!(again.queues, recovered.queues);
    recovered
}

#[test]
fn a_garbled_header_inside_the_synced_region_quarantines_its_queue_and_keeps_the_rest() {
    // Magic, checksum and length unreadable: the record's extent is unknown. The records after
    // it were written after the sync that covered it, so it is damage, not a torn tail; its
    // metadata, placed by its intact metadata length, still names its queue.
    let recovered = reopen_after_damage_in_first_batch(|bytes, start, _| bytes[start..start + 12].fill(0xEE));
    assert_eq!(recovered.records_replayed, 5);
    assert_eq!(recovered.torn_tail_bytes, 0);
    assert_eq!(recovered.quarantined, vec!["a".to_owned()]);
    assert_eq!(live_ids(&recovered, "b"), vec![2, 4]);
}

#[test]
fn a_wholly_garbled_header_inside_the_synced_region_loses_only_that_record() {
    let recovered = reopen_after_damage_in_first_batch(|bytes, start, _| bytes[start..start + 40].fill(0xEE));
    assert_eq!(recovered.records_replayed, 5);
    assert!(recovered.quarantined.is_empty(), "nothing names the damaged record's queue");
    assert_eq!(live_ids(&recovered, "a"), vec![3]);
    assert_eq!(live_ids(&recovered, "b"), vec![2, 4]);
}

#[test]
fn zeros_inside_the_synced_region_are_damage_not_the_end_of_the_log() {
    let recovered = reopen_after_damage_in_first_batch(|bytes, start, end| bytes[start..end].fill(0));
    assert_eq!(recovered.records_replayed, 5);
    assert_eq!(recovered.torn_tail_bytes, 0);
    assert_eq!(live_ids(&recovered, "a"), vec![3]);
    assert_eq!(live_ids(&recovered, "b"), vec![2, 4]);
}

#[test]
fn a_garbled_header_in_the_last_synced_batch_is_still_a_torn_tail() {
    // Nothing after it says it was synced: after a power loss the kernel may have written the
    // pages of one unsynced batch out of order, so valid records after a bad one prove nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let first: &[Record] = &[declare("a"), enqueue("a", 1, b"one")];
    let second: &[Record] = &[enqueue("a", 2, b"two"), enqueue("a", 3, b"three"), enqueue("a", 4, b"four")];
    let ends = write_synced_batches(dir.path(), &[first, second]);
    garble_header_at(dir.path(), ends[1]);
    let (log, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.records_replayed, 2);
    assert!(recovered.torn_tail_bytes > 0);
    assert!(recovered.quarantined.is_empty());
    assert_eq!(log.appended_offset(), ends[1]);
}

#[test]
fn messages_come_back_in_id_order_when_compaction_copied_old_ones_forward() {
    // Compaction appends a copy of a live message after newer messages; the queue's order is
    // still the order of its ids.
    let dir = tempfile::tempdir().expect("tempdir");
    let records = [declare("a"), enqueue("a", 1, b"one"), enqueue("a", 2, b"two"), enqueue("a", 1, b"one")];
    write_synced_batches(dir.path(), &[&records]);
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(live_ids(&recovered, "a"), vec![1, 2]);
}

#[test]
fn a_long_record_that_lost_a_sector_between_two_written_ones_is_a_torn_tail() {
    // A power loss wrote the first and the last sectors of a long record, and the record after
    // it, but not a sector between: its header is whole and a valid record follows at its
    // claimed length, yet nothing says it was synced, so it is a torn tail, not damage. One
    // flipped byte in the same place, a record read back wrong, is still damage.
    let first: &[Record] = &[declare("a"), enqueue("a", 1, b"one")];
    let second: &[Record] = &[enqueue("a", 2, &[0x33; 1500]), enqueue("a", 3, b"three")];
    for lost in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let ends = write_synced_batches(dir.path(), &[first, second]);
        let file = &segment_files(dir.path())[0];
        let mut bytes = std::fs::read(file).expect("read");
        let sector = (ends[1].0 as usize).next_multiple_of(512);
        assert!(sector + 512 < ends[2].0 as usize, "a whole sector inside the long record");
        if lost {
            bytes[sector..sector + 512].fill(0);
        } else {
            bytes[sector + 100] ^= 0x5A;
        }
        std::fs::write(file, &bytes).expect("write");
        let (_, recovered) = open(dir.path(), SEGMENT);
        if lost {
            assert!(recovered.quarantined.is_empty(), "{:?}", recovered.quarantined);
            assert!(recovered.torn_tail_bytes > 0);
            assert_eq!(live_ids(&recovered, "a"), vec![1]);
        } else {
            assert_eq!(recovered.quarantined, vec!["a".to_owned()]);
        }
    }
}

#[test]
fn a_mark_appended_when_the_log_is_idle_vouches_for_the_last_synced_batch() {
    // As above, but the writer found its log idle and appended a mark: the garbled header is
    // damage inside the synced region, so its queue is quarantined and the batch's other
    // records stay, instead of all three going as a torn tail.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), SEGMENT);
    assert!(!log.wants_mark(), "a fresh log has nothing to vouch for");
    let mut ends = Vec::new();
    let first = vec![declare("a"), declare("b"), enqueue("b", 1, b"one")];
    for batch in [first, vec![enqueue("a", 2, b"two"), enqueue("b", 3, b"three"), enqueue("b", 4, b"four")]] {
        ends.extend(batch.iter().map(|r| log.append(r).expect("append")));
        assert!(!log.wants_mark(), "not while records wait for a sync");
        sync_now(&mut log);
        assert!(log.wants_mark(), "synced records no mark covers");
    }
    log.append_mark().expect("mark");
    assert!(!log.wants_mark(), "not before the mark is synced");
    sync_now(&mut log);
    assert!(!log.wants_mark(), "a mark needs no mark of its own");
    drop(log);
    garble_header_at(dir.path(), ends[2]);
    let (mut log, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.torn_tail_bytes, 0);
    assert_eq!(recovered.quarantined, vec!["a".to_owned()], "named by the damaged record's metadata");
    assert_eq!(live_ids(&recovered, "b"), vec![1, 3, 4]);
    assert!(!log.wants_mark(), "reading past the damage, the reopen appended its own mark");
    log.append(&enqueue("b", 5, b"five")).expect("append");
    log.append_mark().expect("mark");
    sync_now(&mut log);
    assert!(log.wants_mark(), "a mark cut before the sync does not vouch for what it synced");
}

#[test]
fn a_reopen_marks_the_last_batch_a_crash_left_unvouched() {
    // The writer crashed inside its idle wait, before the mark. The next start wants one for
    // what it recovered, and once it is written a garbled header in that batch is damage.
    let dir = tempfile::tempdir().expect("tempdir");
    let first: &[Record] = &[declare("a"), declare("b"), enqueue("b", 1, b"one")];
    let second: &[Record] = &[enqueue("a", 2, b"two"), enqueue("b", 3, b"three"), enqueue("b", 4, b"four")];
    let ends = write_synced_batches(dir.path(), &[first, second]);
    let (mut log, _) = open(dir.path(), SEGMENT);
    assert!(log.wants_mark());
    log.append_mark().expect("mark");
    sync_now(&mut log);
    assert!(!log.wants_mark());
    drop(log);
    garble_header_at(dir.path(), ends[2]);
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.torn_tail_bytes, 0);
    assert_eq!(recovered.quarantined, vec!["a".to_owned()]);
    assert_eq!(live_ids(&recovered, "b"), vec![1, 3, 4]);
}

#[test]
fn a_takeover_and_a_fresh_log_want_no_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = open(dir.path(), SEGMENT);
    assert!(!log.wants_mark(), "nothing recovered");
    drop(log);
    write_synced_batches(dir.path(), &[&[declare("a"), enqueue("a", 1, b"one")]]);
    let config = LogConfig { segment_size_bytes: SEGMENT, epoch: Epoch(2), ..LogConfig::new(dir.path()) };
    let (log, recovered) = ShardLog::open(config).expect("takeover");
    assert_eq!(recovered.records_replayed, 2);
    assert!(!log.wants_mark(), "the seal covers what a takeover recovered");
}

#[test]
fn damage_at_the_end_of_a_sealed_segment_is_told_from_a_torn_tail_by_the_next_segment() {
    // The damaged record and the one after it end the first segment; nothing in that segment
    // says they were synced, but the second batch, in the next segment, does.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), SEGMENT);
    let mut records = vec![declare("a"), declare("b")];
    records.extend((0..14).map(|id| enqueue(if id % 2 == 0 { "a" } else { "b" }, id, &[id as u8; 300])));
    let mut ends: Vec<Offset> = records.iter().map(|r| log.append(r).expect("append")).collect();
    sync_now(&mut log);
    let second: Vec<Record> = (14..16).map(|id| enqueue("a", id, b"second batch")).collect();
    ends.extend(second.iter().map(|r| log.append(r).expect("append")));
    records.extend(second);
    sync_now(&mut log);
    drop(log);
    let files = segment_files(dir.path());
    let next_base: u64 = files[1]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.split_once('-'))
        .expect("name")
        .0
        .parse()
        .expect("base");
    let last_in_first = ends.iter().rposition(|end| end.0 <= next_base).expect("records in the first segment");
    assert!(last_in_first < 15, "the first batch (records 0..=15) goes on into the next segment");
    let damaged = last_in_first - 1;
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let at = ends[damaged - 1].0 as usize;
    bytes[at..at + 12].fill(0xEE);
    std::fs::write(&files[0], &bytes).expect("write");
    let mut expected: Vec<(Offset, Record)> = ends.iter().copied().zip(records).collect();
    expected.remove(damaged);
    let got = replay(dir.path()).expect("replay");
    let offsets = |records: &[(Offset, Record)]| records.iter().map(|(end, _)| end.0).collect::<Vec<_>>();
    assert_eq!(offsets(&got), offsets(&expected), "all but the damaged record");
    assert!(got == expected, "the records themselves");
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.records_replayed, expected.len() as u64);
    let queue = if (damaged - 2) % 2 == 0 { "a" } else { "b" };
    assert_eq!(recovered.quarantined, vec![queue.to_owned()], "named by the damaged record's metadata");
}

#[test]
fn a_damaged_salt_in_the_last_segment_header_is_recovered_from_its_records() {
    // Every record's checksum depends on the header's salt: one flipped bit there must not
    // make the segment's records unreadable, let alone have them zeroed as a torn tail.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = vec![declare("q")];
    records.extend((0..10).map(|id| enqueue("q", id, b"confirmed")));
    let ends = write_log(dir.path(), &records);
    let file = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(file).expect("read");
    bytes[12] ^= 1;
    std::fs::write(file, &bytes).expect("write");
    let (mut log, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(live_ids(&recovered, "q"), (0..10).collect::<Vec<_>>());
    assert_eq!(recovered.torn_tail_bytes, 0);
    assert_eq!(log.appended_offset(), *ends.last().expect("end"));
    log.append(&settle("q", 0)).expect("append");
    sync_now(&mut log);
    drop(log);
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(live_ids(&recovered, "q"), (1..10).collect::<Vec<_>>(), "the header was written again, same salt");
}

#[test]
fn a_last_segment_nothing_can_be_checked_in_is_a_torn_tail() {
    // Header and first record both unreadable: no salt can be confirmed, and nothing after the
    // segment shows it was synced (a power loss can leave a fresh segment's first page
    // unwritten while later pages reached the disk). Like any such bytes, a torn tail.
    let dir = tempfile::tempdir().expect("tempdir");
    let records: Vec<Record> = (0..5).map(|id| enqueue("q", id, b"unverifiable")).collect();
    write_log(dir.path(), &records);
    let file = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(file).expect("read");
    bytes[0..60].fill(0x77);
    std::fs::write(file, &bytes).expect("write");
    let (mut log, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.records_replayed, 0);
    assert!(recovered.quarantined.is_empty());
    assert!(recovered.torn_tail_bytes > 0);
    log.append(&declare("later")).expect("append");
    sync_now(&mut log);
    drop(log);
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.records_replayed, 1, "a fresh header, and what came after");
    assert!(recovered.quarantined.is_empty());
}

#[test]
fn a_sealed_segment_nothing_can_be_checked_in_quarantines_the_queues_it_names() {
    // Later segments hold records: damage, not a tail. Its settles are lost with it, so the
    // queues its record-shaped headers name are quarantined; its bytes are left as they are.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = vec![declare("a"), declare("b")];
    records.extend((0..6).map(|id| enqueue("a", id, &[1; 300])));
    records.extend((0..6).map(|id| settle("a", id)));
    records.extend((0..12).map(|id| enqueue("b", id, &[2; 300])));
    write_log(dir.path(), &records);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let mut bytes = std::fs::read(&files[1]).expect("read");
    bytes[0..200].fill(0x77);
    std::fs::write(&files[1], &bytes).expect("write");
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert!(!recovered.quarantined.is_empty(), "named by the unchecked headers");
    assert_eq!(std::fs::read(&files[1]).expect("read"), bytes, "left as it is");
    let (_, again) = open(dir.path(), SEGMENT);
    assert_eq!(again.quarantined, recovered.quarantined, "at every start");
}

#[test]
fn records_a_start_went_on_without_never_come_back_later() {
    // One unsynced batch spans a roll, then power is lost: in the first segment record B's
    // page never reached the disk but the records after it did, and so did the start of the
    // second segment. Nothing shows B was synced, so the first start reads neither B nor what
    // follows it in that segment. The marks of what it appends afterwards cover all of it; a
    // later start must not read those records back.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), SEGMENT);
    log.append(&declare("q")).expect("declare");
    let mut ends = Vec::new();
    for id in 0..3 {
        ends.push(log.append(&enqueue("q", id, &[1; 200])).expect("enqueue"));
    }
    sync_now(&mut log);
    let mut id = 100;
    while segment_files(dir.path()).len() == 1 {
        ends.push(log.append(&enqueue("q", id, &[2; 200])).expect("enqueue"));
        id += 1;
    }
    for _ in 0..2 {
        ends.push(log.append(&enqueue("q", id, &[3; 200])).expect("enqueue"));
        id += 1;
    }
    drop(log);
    let first = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(first).expect("read");
    bytes[ends[2].0 as usize..ends[3].0 as usize].fill(0);
    std::fs::write(first, &bytes).expect("write");
    let (mut log, recovered) = open(dir.path(), SEGMENT);
    let mut kept = live_ids(&recovered, "q");
    assert!(!kept.contains(&101), "nothing shows record B (100) or what follows it was synced: {kept:?}");
    log.append(&enqueue("q", 999, b"after")).expect("enqueue");
    sync_now(&mut log);
    drop(log);
    let (_, later) = open(dir.path(), SEGMENT);
    kept.push(999);
    assert_eq!(live_ids(&later, "q"), kept);
}

#[test]
fn a_torn_first_sector_of_an_unsynced_fresh_segment_quarantines_nothing() {
    // An unsynced batch crosses a roll and power is lost: the new segment's first sector
    // (header and the head of its first record) never reached the disk, later sectors did.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), SEGMENT);
    log.append(&declare("q")).expect("declare");
    for id in 0..3 {
        log.append(&enqueue("q", id, &[1; 200])).expect("enqueue");
    }
    sync_now(&mut log);
    let mut id = 100;
    while segment_files(dir.path()).len() == 1 {
        log.append(&enqueue("q", id, &[2; 200])).expect("enqueue");
        id += 1;
    }
    for _ in 0..8 {
        log.append(&enqueue("q", id, &[3; 200])).expect("enqueue");
        id += 1;
    }
    drop(log);
    let files = segment_files(dir.path());
    let mut bytes = std::fs::read(&files[1]).expect("read");
    bytes[..512].fill(0);
    std::fs::write(&files[1], &bytes).expect("write");
    let (mut log, recovered) = open(dir.path(), SEGMENT);
    assert!(recovered.quarantined.is_empty(), "{:?}", recovered.quarantined);
    assert!(live_ids(&recovered, "q").starts_with(&[0, 1, 2]));
    log.append(&settle("q", 0)).expect("settle");
    sync_now(&mut log);
    drop(log);
    let (_, later) = open(dir.path(), SEGMENT);
    assert!(later.quarantined.is_empty(), "nor at the next start: {:?}", later.quarantined);
    assert!(live_ids(&later, "q").starts_with(&[1, 2]));
}

#[test]
fn proof_past_unmarked_records_keeps_a_reopen_from_zeroing_confirmed_ones() {
    // One sync lags while more than 128 MiB are appended: the records written meanwhile carry
    // no mark. A synced record among the first of them is damaged; the marks that prove it
    // synced lie past the unmarked ones, in later segments.
    const SEG: u64 = 1 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), SEG);
    log.append(&declare("q")).expect("declare");
    log.append(&declare("r")).expect("declare");
    sync_now(&mut log);
    let lagging_from = log.durable_offset().0;
    let x_end = log.append(&enqueue("q", 1, b"x")).expect("x");
    let x_start = x_end.0 - enqueue("q", 1, b"x").encoded_len().expect("len");
    log.append(&enqueue("r", 2, b"r")).expect("r");
    let job = log.sync_job().expect("job");
    let mut id = 1000;
    while log.appended_offset().0 < lagging_from + (130 << 20) {
        log.append(&enqueue("r", id, &[5; 256 * 1024])).expect("filler");
        id += 1;
    }
    let result = job.run();
    log.complete_sync(result).expect("sync");
    sync_now(&mut log);
    for _ in 0..3 {
        log.append(&enqueue("r", id, b"after the sync")).expect("later");
        id += 1;
    }
    sync_now(&mut log);
    drop(log);
    let file = segment_files(dir.path()).into_iter().rev().find(|f| base_of(f) <= x_start).expect("file");
    let mut bytes = std::fs::read(&file).expect("read");
    let at = (x_start - base_of(&file)) as usize;
    bytes[at..at + 12].fill(0xEE);
    std::fs::write(&file, &bytes).expect("write");
    let (_, recovered) = open(dir.path(), SEG);
    assert_eq!(recovered.quarantined, vec!["q".to_owned()]);
    let expected: Vec<u64> = std::iter::once(2).chain(1000..id).collect();
    assert_eq!(live_ids(&recovered, "r"), expected, "every confirmed message of r");
}

fn base_of(path: &Path) -> u64 {
    path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.split_once('-')).expect("name").0.parse().expect("base")
}

#[test]
fn proof_behind_a_torn_record_of_the_next_segment_still_counts() {
    // The first segment is synced whole, then bit rot garbles one of its records (Q). The only
    // record that proves it was synced (R) sits in the next segment behind a record (P) that a
    // power loss tore: both were written after that sync, in the last, unsynced batch.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), SEGMENT);
    log.append(&declare("q")).expect("declare");
    sync_now(&mut log);
    let mut ends = Vec::new();
    let mut id = 0;
    while segment_files(dir.path()).len() == 1 {
        ends.push((id, log.append(&enqueue("q", id, &[1; 200])).expect("enqueue")));
        id += 1;
    }
    ends.pop().expect("the record that rolled into the second segment");
    let r1 = log.append(&enqueue("q", 900, b"r1")).expect("r1");
    sync_now(&mut log);
    let p = log.append(&enqueue("q", 901, b"P")).expect("P");
    log.append(&enqueue("q", 902, b"R")).expect("R");
    drop(log);
    let files = segment_files(dir.path());
    // Q: the third record of the first segment, its header garbled.
    let (q_id, q_end) = ends[2];
    let q_start = q_end.0 as usize - enqueue("q", q_id, &[1; 200]).encoded_len().expect("len") as usize;
    let mut bytes = std::fs::read(&files[0]).expect("read");
    bytes[q_start..q_start + 12].fill(0xEE);
    std::fs::write(&files[0], &bytes).expect("write");
    // P: torn.
    let base = base_of(&files[1]);
    let mut bytes = std::fs::read(&files[1]).expect("read");
    let p_start = (r1.0 - base) as usize;
    let p_end = (p.0 - base) as usize;
    bytes[p_start..p_end].fill(0x33);
    std::fs::write(&files[1], &bytes).expect("write");
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.quarantined, vec!["q".to_owned()], "Q's metadata names q");
    let (_, again) = open(dir.path(), SEGMENT);
    assert_eq!(again.records_replayed, recovered.records_replayed + 1, "nothing synced was zeroed (and a mark added)");
    // The declare, the first segment's enqueues but Q, the one that rolled, and r1.
    assert_eq!(recovered.records_replayed, ends.len() as u64 + 2);
}
