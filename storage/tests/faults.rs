//! Fault-injection tests through `FaultyIo`: EIO on sync (poison, never ack), ENOSPC when a
//! roll needs a segment, torn tails from a simulated power loss at a seeded byte (and at every
//! byte of a region spanning a roll), and a seeded model loop mixing appends, syncs, faults,
//! crashes and reopens. Each test loops over a fixed range of seeds; every assertion names its
//! seed. Replay one failing case with `FERRY_FAULT_SEED=<seed> cargo test -p ferry-storage
//! --test faults <test name>` (add `RUST_LOG`-style tracing if wanted: injected faults are
//! logged with their seed and operation index). Single-threaded, temp directories.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{declare, enqueue, settle};
use ferry_storage::fault::{FaultOp, FaultPlan, FaultRng, FaultyIo};
use ferry_storage::{Epoch, Fold, LogConfig, Offset, Record, Recovered, ShardLog, StorageError, replay};

const SEGMENT: u64 = 4096;
const QUEUES: [&str; 3] = ["q0", "q1", "q2"];

/// The seeds to run: `0..count`, or only `FERRY_FAULT_SEED` when it is set.
fn seeds(count: u64) -> Vec<u64> {
    match std::env::var("FERRY_FAULT_SEED") {
        Ok(seed) => vec![seed.trim().parse().expect("FERRY_FAULT_SEED must be a u64")],
        Err(_) => (0..count).collect(),
    }
}

/// A temp directory, on tmpfs when there is one: the faults are injected, so real syncs only
/// cost time here.
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir")
}

/// Opens the log. Odd seeds open as a new epoch each time, as every start of a broker holding
/// a new lease does (the previous epoch is sealed, a new segment starts; ARCHITECTURE §5);
/// even seeds reopen as the same writer (appends continue in place).
fn open(dir: &Path, io: &Arc<FaultyIo>) -> Result<(ShardLog, Recovered), StorageError> {
    let epoch = if io.seed() % 2 == 1 { newest_epoch(dir) + 1 } else { 1 };
    ShardLog::open(LogConfig {
        segment_size_bytes: SEGMENT,
        io: io.clone(),
        epoch: Epoch(epoch),
        ..LogConfig::new(dir)
    })
}

/// The highest epoch in the segment file names (`<base>-<epoch>.seg`), 0 for none.
fn newest_epoch(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".seg")?.split_once('-')?.1.parse().ok())
            .max()
            .unwrap_or(0)
    })
}

/// Every record appended to one directory, with the END offset `append` returned.
#[derive(Debug, Default)]
struct History {
    records: Vec<(Offset, Record)>,
}

impl History {
    fn append(&mut self, log: &mut ShardLog, record: Record) -> Result<Offset, StorageError> {
        let end = log.append(&record)?;
        self.records.push((end, record));
        Ok(end)
    }

    /// Checks that the directory holds a prefix of the history covering everything below
    /// `durable` (all of it when `complete`), and that `recovered` folds exactly that prefix.
    /// Forgets the lost suffix.
    fn check_recovered(&mut self, seed: u64, dir: &Path, durable: Offset, complete: bool, recovered: &Recovered) {
        let got = replay(dir).expect("replay");
        let kept = got.len();
        assert!(kept <= self.records.len(), "seed {seed}: {kept} records recovered, {} appended", self.records.len());
        assert!(
            got[..] == self.records[..kept],
            "seed {seed}: recovered records are not a prefix of the appended ones"
        );
        let durable_count = self.records.iter().take_while(|(end, _)| *end <= durable).count();
        assert!(kept >= durable_count, "seed {seed}: {kept} records recovered, {durable_count} were durable");
        if complete {
            assert_eq!(kept, self.records.len(), "seed {seed}: a restart without a crash must lose nothing");
        }
        assert!(recovered.quarantined.is_empty(), "seed {seed}: a crash is not damage: {:?}", recovered.quarantined);
        let mut fold = Fold::new();
        got.into_iter().for_each(|(_, record)| fold.apply(record));
        let expected = Recovered { torn_tail_bytes: recovered.torn_tail_bytes, ..fold.finish() };
        assert_eq!(*recovered, expected, "seed {seed}: recovery does not fold the recovered records");
        self.records.truncate(kept);
    }
}

/// Cuts, runs and completes one sync job; returns its outcome.
fn sync(log: &mut ShardLog) -> Option<Result<Offset, StorageError>> {
    let job = log.sync_job()?;
    let result = job.run();
    Some(log.complete_sync(result))
}

fn random_record(rng: &mut FaultRng, next_id: &mut u64) -> Record {
    let queue = QUEUES[rng.below(3) as usize];
    match rng.below(10) {
        0 => declare(queue),
        1 => Record::QueueDelete { name: queue.to_owned() },
        2 | 3 => settle(queue, rng.below(*next_id + 1)),
        _ => {
            *next_id += 1;
            let body = vec![(*next_id % 251) as u8; rng.below(700) as usize];
            enqueue(queue, *next_id, &body)
        }
    }
}

/// Opens a fresh log in `dir` with the three queues declared and durable.
fn start(seed: u64, dir: &Path, io: &Arc<FaultyIo>, history: &mut History) -> ShardLog {
    let (mut log, _) = open(dir, io).unwrap_or_else(|e| panic!("seed {seed}: open: {e}"));
    for queue in QUEUES {
        history.append(&mut log, declare(queue)).unwrap_or_else(|e| panic!("seed {seed}: declare: {e}"));
    }
    sync(&mut log).expect("a job").unwrap_or_else(|e| panic!("seed {seed}: first sync: {e}"));
    log
}

fn is_injected(error: &StorageError) -> bool {
    error.to_string().contains("FERRY_FAULT_SEED=")
}

#[test]
fn eio_on_sync_poisons_and_recovery_keeps_the_durable_prefix() {
    for seed in seeds(200) {
        let dir = tempdir();
        let mut rng = FaultRng::new(seed);
        let io = Arc::new(FaultyIo::new(seed, FaultPlan::default()));
        let mut history = History::default();
        let mut log = start(seed, dir.path(), &io, &mut history);
        let fail_at = io.count(FaultOp::Sync) + rng.below(12);
        io.set_plan(FaultPlan { sync_eio_at: Some(fail_at), ..FaultPlan::default() });
        let mut next_id = 0;
        let durable_before = loop {
            for _ in 0..=rng.below(6) {
                let record = random_record(&mut rng, &mut next_id);
                history.append(&mut log, record).unwrap_or_else(|e| panic!("seed {seed}: append: {e}"));
            }
            let durable = log.durable_offset();
            match sync(&mut log).expect("something to sync") {
                Ok(offset) => assert_eq!(offset, log.appended_offset(), "seed {seed}"),
                Err(error) => {
                    assert!(is_injected(&error), "seed {seed}: unexpected error {error}");
                    break durable;
                }
            }
        };
        assert!(log.is_poisoned(), "seed {seed}");
        assert_eq!(log.durable_offset(), durable_before, "seed {seed}: a failed sync advanced durability");
        assert!(matches!(log.append(&declare("late")), Err(StorageError::Poisoned)), "seed {seed}");
        assert!(log.sync_job().is_none(), "seed {seed}: a poisoned log cut a sync job");
        assert_eq!(io.events().len(), 1, "seed {seed}: {:?}", io.events());
        drop(log);
        let power_loss = rng.chance(1, 2);
        if power_loss {
            io.crash().unwrap_or_else(|e| panic!("seed {seed}: crash: {e}"));
        }
        io.set_plan(FaultPlan::default());
        let (mut log, recovered) = open(dir.path(), &io).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
        history.check_recovered(seed, dir.path(), durable_before, !power_loss, &recovered);
        history.append(&mut log, enqueue("q0", 10_000, b"after")).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        sync(&mut log).expect("job").unwrap_or_else(|e| panic!("seed {seed}: sync after reopen: {e}"));
        let durable = log.durable_offset();
        drop(log);
        let (_, recovered) = open(dir.path(), &io).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
        history.check_recovered(seed, dir.path(), durable, true, &recovered);
    }
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg")))
        .count()
}

/// Appends until a roll hits ENOSPC, with a sync job sometimes held across the failure. When
/// `cleanup_fails`, removing the half-created segment fails too and the file stays (unmapped).
fn append_until_enospc(seed: u64, rng: &mut FaultRng, log: &mut ShardLog, history: &mut History, cleanup_fails: bool) {
    let mut next_id = 0;
    let mut held = None;
    loop {
        if held.is_none() && rng.chance(1, 3) {
            held = log.sync_job();
        }
        let record = random_record(rng, &mut next_id);
        let (appended, segments) = (log.appended_offset(), log.segment_count());
        match history.append(log, record) {
            Ok(_) => {}
            Err(StorageError::Io { op, source, .. }) => {
                assert_eq!((op, source.kind()), ("fallocate", std::io::ErrorKind::StorageFull), "seed {seed}");
                assert!(!log.is_poisoned(), "seed {seed}: ENOSPC on a roll is not a failed sync");
                assert_eq!((log.appended_offset(), log.segment_count()), (appended, segments), "seed {seed}");
                let left = usize::from(cleanup_fails);
                assert_eq!(segment_files(log.dir()), segments + left, "seed {seed}: half-created segments left");
                break;
            }
            Err(other) => panic!("seed {seed}: unexpected append error {other}"),
        }
        if let Some(job) = held.take_if(|_| rng.chance(1, 2)) {
            let result = job.run();
            log.complete_sync(result).unwrap_or_else(|e| panic!("seed {seed}: sync: {e}"));
        }
    }
    if let Some(job) = held {
        let result = job.run();
        log.complete_sync(result).unwrap_or_else(|e| panic!("seed {seed}: sync across ENOSPC: {e}"));
    }
}

#[test]
fn enospc_on_roll_fails_the_append_and_keeps_the_log_usable() {
    for seed in seeds(200) {
        let dir = tempdir();
        let mut rng = FaultRng::new(seed);
        let io = Arc::new(FaultyIo::new(seed, FaultPlan::default()));
        let mut history = History::default();
        let mut log = start(seed, dir.path(), &io, &mut history);
        let from = io.count(FaultOp::Allocate) + rng.below(4);
        let cleanup_fails = rng.chance(1, 3);
        let remove_eio_at = cleanup_fails.then(|| io.count(FaultOp::Remove));
        io.set_plan(FaultPlan { allocate_enospc_from: Some(from), remove_eio_at, ..FaultPlan::default() });
        append_until_enospc(seed, &mut rng, &mut log, &mut history, cleanup_fails);
        let big = enqueue("q1", 20_000, &[5; 3000]);
        if !cleanup_fails {
            assert!(log.append(&big).is_err(), "seed {seed}: the disk is still full");
        }
        sync(&mut log).transpose().unwrap_or_else(|e| panic!("seed {seed}: sync on a full disk: {e}"));
        assert_eq!(log.durable_offset(), log.appended_offset(), "seed {seed}");
        if cleanup_fails || rng.chance(1, 2) {
            io.set_plan(FaultPlan::default()); // space freed: the next roll succeeds, even over a leftover
            history.append(&mut log, big).unwrap_or_else(|e| panic!("seed {seed}: append after space freed: {e}"));
            assert_eq!(segment_files(log.dir()), log.segment_count(), "seed {seed}");
        }
        let durable = log.durable_offset();
        drop(log);
        let power_loss = rng.chance(1, 2);
        if power_loss {
            io.crash().unwrap_or_else(|e| panic!("seed {seed}: crash: {e}"));
        }
        io.set_plan(FaultPlan::default());
        let (_, recovered) = open(dir.path(), &io).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
        history.check_recovered(seed, dir.path(), durable, !power_loss, &recovered);
    }
}

/// Appends `count` random records, syncing now and then; returns the durable offset. A job
/// may be run without being completed (the crash came before the ack).
fn append_some(seed: u64, rng: &mut FaultRng, log: &mut ShardLog, history: &mut History, count: u64) -> Offset {
    let mut next_id = history.records.len() as u64;
    for _ in 0..count {
        let record = random_record(rng, &mut next_id);
        history.append(log, record).unwrap_or_else(|e| panic!("seed {seed}: append: {e}"));
        if rng.chance(1, 5) {
            sync(log).transpose().unwrap_or_else(|e| panic!("seed {seed}: sync: {e}"));
        }
    }
    if rng.chance(1, 4)
        && let Some(job) = log.sync_job()
    {
        job.run().unwrap_or_else(|e| panic!("seed {seed}: sync run: {e}"));
    }
    log.durable_offset()
}

#[test]
fn torn_tail_from_a_crash_recovers_a_prefix_and_appends_continue() {
    for seed in seeds(200) {
        let dir = tempdir();
        let mut rng = FaultRng::new(seed);
        let io = Arc::new(FaultyIo::new(seed, FaultPlan::default()));
        let mut history = History::default();
        let mut log = start(seed, dir.path(), &io, &mut history);
        for round in 0..3 {
            let count = rng.below(40);
            let durable = append_some(seed, &mut rng, &mut log, &mut history, count);
            drop(log);
            let report = io.crash().unwrap_or_else(|e| panic!("seed {seed}: crash: {e}"));
            let (reopened, recovered) =
                open(dir.path(), &io).unwrap_or_else(|e| panic!("seed {seed} round {round}: reopen: {e}"));
            let what = format!("{seed} (round {round}, {report:?})");
            history.check_recovered(seed, dir.path(), durable, false, &recovered);
            let last_end = history.records.last().expect("declares").0;
            let appended = reopened.appended_offset();
            assert!(appended >= last_end, "seed {what}: writer at {appended:?}");
            log = reopened;
        }
        history.append(&mut log, enqueue("q2", 30_000, b"last")).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        drop(log);
        let (_, recovered) = open(dir.path(), &io).unwrap_or_else(|e| panic!("seed {seed}: final reopen: {e}"));
        history.check_recovered(seed, dir.path(), Offset(0), true, &recovered);
    }
}

/// A fixed workload whose unsynced region spans a segment roll, torn at every one of its
/// bytes (the seed of each case is the byte position).
#[test]
fn torn_at_every_byte_of_an_unsynced_region_across_a_roll() {
    let cuts = match std::env::var("FERRY_FAULT_SEED") {
        Ok(_) => seeds(0),
        Err(_) => {
            let (_dir, io, _) = unsynced_workload(0);
            (0..=io.unsynced_bytes() as u64).collect()
        }
    };
    for cut in cuts {
        let seed = cut;
        let (dir, io, mut history) = unsynced_workload(seed);
        io.crash_at(cut as usize).unwrap_or_else(|e| panic!("seed {seed}: crash: {e}"));
        let (mut log, recovered) = open(dir.path(), &io).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
        history.check_recovered(seed, dir.path(), Offset(48), false, &recovered);
        history.append(&mut log, settle("q0", 1)).unwrap_or_else(|e| panic!("seed {seed}: append: {e}"));
        sync(&mut log).expect("job").unwrap_or_else(|e| panic!("seed {seed}: sync: {e}"));
        drop(log);
        let (_, recovered) = open(dir.path(), &io).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
        history.check_recovered(seed, dir.path(), Offset(0), true, &recovered);
    }
}

/// Durable declarations and messages filling most of the first segment, then unsynced
/// records: some at the end of the first segment, one in a second. The log is dropped.
fn unsynced_workload(seed: u64) -> (tempfile::TempDir, Arc<FaultyIo>, History) {
    let dir = tempdir();
    let io = Arc::new(FaultyIo::new(seed, FaultPlan::default()));
    let mut history = History::default();
    let mut log = start(seed, dir.path(), &io, &mut history);
    let mut id = 0;
    while log.appended_offset().0 < SEGMENT - 900 {
        id += 1;
        history.append(&mut log, enqueue("q0", id, &[id as u8; 300])).expect("append");
    }
    sync(&mut log).expect("job").expect("sync");
    let first_unsynced = history.records.len();
    while log.segment_count() == 1 {
        id += 1;
        history.append(&mut log, enqueue("q1", id, &[id as u8; 120])).expect("append");
    }
    history.append(&mut log, settle("q0", 1)).expect("append");
    assert!(history.records[first_unsynced].0.0 < SEGMENT, "an unsynced record must end the first segment");
    drop(log);
    (dir, io, history)
}

/// One step of the model loop. Returns false when the log must restart (poisoned).
fn model_step(seed: u64, rng: &mut FaultRng, io: &FaultyIo, log: &mut ShardLog, history: &mut History) -> bool {
    match rng.below(12) {
        0..=6 => {
            let mut next_id = history.records.len() as u64;
            match history.append(log, random_record(rng, &mut next_id)) {
                Ok(_) => true,
                Err(StorageError::Poisoned) => false,
                Err(error) => {
                    assert!(is_injected(&error), "seed {seed}: append failed with a real error {error}");
                    true
                }
            }
        }
        7..=9 => match sync(log) {
            Some(Err(error)) => {
                assert!(is_injected(&error), "seed {seed}: sync failed with a real error {error}");
                assert!(log.is_poisoned(), "seed {seed}");
                false
            }
            _ => true,
        },
        10 => {
            io.set_plan(FaultPlan::default());
            true
        }
        _ => false,
    }
}

fn random_plan(rng: &mut FaultRng, io: &FaultyIo) -> FaultPlan {
    let maybe = |rng: &mut FaultRng, op, spread| rng.chance(1, 3).then(|| io.count(op) + rng.below(spread));
    FaultPlan {
        sync_eio_at: maybe(rng, FaultOp::Sync, 30),
        allocate_enospc_from: maybe(rng, FaultOp::Allocate, 6),
        map_enomem_at: maybe(rng, FaultOp::Map, 6),
        remove_eio_at: None,
    }
}

/// Restarts the process (drop, maybe crash, reopen — after freeing space if the open itself
/// hit an injected fault) and checks what came back.
fn restart(
    seed: u64,
    rng: &mut FaultRng,
    io: &Arc<FaultyIo>,
    dir: &Path,
    log: ShardLog,
    history: &mut History,
) -> ShardLog {
    let durable = log.durable_offset();
    drop(log);
    let power_loss = rng.chance(1, 2);
    if power_loss {
        io.crash().unwrap_or_else(|e| panic!("seed {seed}: crash: {e}"));
    }
    let (log, recovered) = match open(dir, io) {
        Ok(opened) => opened,
        Err(error) => {
            assert!(is_injected(&error), "seed {seed}: open failed with a real error {error}");
            io.set_plan(FaultPlan::default());
            open(dir, io).unwrap_or_else(|e| panic!("seed {seed}: reopen after healing: {e}"))
        }
    };
    history.check_recovered(seed, dir, durable, !power_loss, &recovered);
    log
}

#[test]
fn model_of_appends_syncs_faults_and_crashes() {
    for seed in seeds(100) {
        let dir = tempdir();
        let mut rng = FaultRng::new(seed);
        let io = Arc::new(FaultyIo::new(seed, FaultPlan::default()));
        let mut history = History::default();
        let mut log = start(seed, dir.path(), &io, &mut history);
        io.set_plan(random_plan(&mut rng, &io));
        for _ in 0..120 {
            if !model_step(seed, &mut rng, &io, &mut log, &mut history) {
                log = restart(seed, &mut rng, &io, dir.path(), log, &mut history);
                io.set_plan(random_plan(&mut rng, &io));
            }
        }
        restart(seed, &mut rng, &io, dir.path(), log, &mut history);
    }
}

/// Message 1's first enqueue sits in the oldest segment; a compaction copied it forward, then
/// failed to delete an old segment (EIO). Those segments stay in the log's bookkeeping, so
/// the next round deletes them before the later segments that hold the copy and, once the
/// message is acked, its settle: a restart never finds the old enqueue without its settle.
#[test]
fn a_segment_whose_delete_failed_goes_before_any_later_one() {
    let dir = tempdir();
    let io = Arc::new(FaultyIo::new(0, FaultPlan::default()));
    let (mut log, _) = open(dir.path(), &io).expect("open");
    log.append(&declare("q")).expect("declare");
    log.append(&enqueue("q", 1, &[1; 100])).expect("message 1");
    for id in 2..60 {
        log.append(&enqueue("q", id, &[7; 200])).expect("enqueue");
        log.append(&settle("q", id)).expect("settle");
    }
    log.append(&declare("q")).expect("declare again");
    let copied = log.append(&enqueue("q", 1, &[1; 100])).expect("copy of message 1");
    sync(&mut log).expect("a sync").expect("synced");
    let keep_from = Offset(copied.0 - 1);
    let before = segment_files(dir.path());
    assert!(log.sealed_below(keep_from) >= 3, "segments to delete");
    io.set_plan(FaultPlan { remove_eio_at: Some(io.count(FaultOp::Remove) + 1), ..FaultPlan::default() });
    let failed = log.compact(keep_from).expect_err("the second delete fails");
    assert!(is_injected(&failed), "{failed}");
    assert_eq!(segment_files(dir.path()), before - 1, "one segment deleted");
    assert_eq!(log.segment_count(), before - 1, "the rest are still the log's");
    io.set_plan(FaultPlan::default());
    // Message 1 is acked; more traffic rolls on.
    log.append(&settle("q", 1)).expect("ack of message 1");
    for id in 60..90 {
        log.append(&enqueue("q", id, &[7; 200])).expect("enqueue");
        log.append(&settle("q", id)).expect("settle");
    }
    log.append(&declare("q")).expect("declare again");
    sync(&mut log).expect("a sync").expect("synced");
    let report = log.compact(log.active_base()).expect("second round");
    assert!(report.segments_deleted >= 3, "{report:?}");
    drop(log);
    let (_, recovered) = open(dir.path(), &io).expect("reopen");
    let q = recovered.queues.iter().find(|q| q.name == "q").expect("queue q");
    assert!(
        q.messages.is_empty(),
        "acked messages came back: {:?}",
        q.messages.iter().map(|m| m.msg_id).collect::<Vec<_>>()
    );
}
