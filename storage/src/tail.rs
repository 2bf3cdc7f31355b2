//! A warm standby's view of a shard log another process writes (ARCHITECTURE §5): [`Tail`]
//! reads the directory read-only, record by record, and keeps the fold of everything valid it
//! has seen, so that a takeover ([`crate::ShardLog::open_warm`]) only reads what came after.
//! It never writes, syncs or locks anything. Segments the writer deletes (compaction) leave the
//! listing; when this tail had read them to their end their records stay folded, which folds to
//! the same live state (what compaction deletes is settled or copied forward); when it had not,
//! a settle it never saw could leave a ghost message, so the fold starts over. A change of the
//! seals (another process took over) starts the fold over too. The fold stays in log order: a
//! segment not yet read up to where the next one starts (a record still on its way to shared
//! storage) holds the tail there; damage that will not go away stops it (see `catch_up`). Limits: one mapping at a time; a record is folded only once it
//! is whole and its checksum holds, so a record being written is simply read on a later call.

use std::path::{Path, PathBuf};

use memmap2::MmapRaw;

use crate::error::StorageError;
use crate::fold::Fold;
use crate::scan::{Later, OnDamage, later_mark_above, scan_segment};
use crate::seals::Seals;
use crate::segment::{SegmentFile, list_segments, map_read_only, readable};

/// How far a segment has been read.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub file: SegmentFile,
    /// Bytes from the file start up to the end of the last valid record read.
    pub pos: usize,
    /// Valid records read from it.
    pub records: u64,
    /// Read up to where the next segment starts, or to a final end (see `catch_up`): it cannot
    /// grow.
    pub complete: bool,
}

/// Follows one shard directory read-only. `Send`: a standby's own thread drives it, then hands
/// it to the shard that takes over.
#[derive(Debug)]
pub struct Tail {
    pub(crate) dir: PathBuf,
    pub(crate) seals: Seals,
    pub(crate) seen: Vec<Seen>,
    pub(crate) fold: Fold,
    /// A segment with damage this tail cannot read past in order: until compaction deletes
    /// it, or it reads whole after all (a stale view of shared storage), the tail folds
    /// nothing, and a takeover reads the whole log itself.
    blocked: Option<Blocked>,
}

/// Where a tail stopped following, and how often it has looked again.
#[derive(Debug)]
struct Blocked {
    file: SegmentFile,
    /// Read up to here (bytes from the file start).
    pos: usize,
    /// Where the next segment starts: reading up to it would end the block.
    next_base: u64,
    polls: u32,
}

/// How many calls of a blocked tail pass between two looks at whether the segment now reads
/// whole (a poll is 50 ms: every 5 s).
const BLOCKED_RECHECK_POLLS: u32 = 100;

impl Tail {
    /// A follower of `dir` that has read nothing yet.
    pub fn new(dir: impl Into<PathBuf>) -> Tail {
        Tail { dir: dir.into(), seals: Seals::default(), seen: Vec::new(), fold: Fold::new(), blocked: None }
    }

    /// The directory followed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Valid records folded so far.
    pub fn records(&self) -> u64 {
        self.fold.records_applied()
    }

    /// Reads whatever was appended since the last call; returns the records read.
    pub fn catch_up(&mut self) -> Result<u64, StorageError> {
        if !self.dir.is_dir() {
            return Ok(0);
        }
        let seals = Seals::load(&self.dir)?;
        if seals != self.seals {
            *self = Tail { seals, ..Tail::new(self.dir.clone()) };
        }
        let files: Vec<SegmentFile> = list_segments(&self.dir)?
            .into_iter()
            .filter(|f| self.seals.end_of(f.epoch).is_none_or(|end| f.base < end))
            .collect();
        if let Some(blocked) = &mut self.blocked {
            blocked.polls += 1;
            let gone = !files.contains(&blocked.file);
            let reads_whole = blocked.polls.is_multiple_of(BLOCKED_RECHECK_POLLS) && reads_up_to(blocked, &self.seals)?;
            if !gone && !reads_whole {
                return Ok(0);
            }
            tracing::info!(dir = %self.dir.display(), gone, "the damaged segment is gone or reads whole now; following the log again");
            self.blocked = None;
        }
        if self.seen.iter().any(|s| !s.complete && !files.contains(&s.file)) {
            // Deleted before this tail read all of it: a settle it never saw would leave a
            // message live in the fold that no reader of the log would find. Read again.
            tracing::debug!(dir = %self.dir.display(), "a segment was deleted before it was read to its end");
            *self = Tail { seals: self.seals.clone(), ..Tail::new(self.dir.clone()) };
        }
        self.seen.retain(|s| files.contains(&s.file));
        // The commits in deleted segments are no longer needed by any log (see `Tentative`):
        // forgetting them keeps a long-following standby's memory bounded by the log.
        if let Some(first) = files.first() {
            self.fold.forget_commits_below(first.base.0);
        }
        let before = self.fold.records_applied();
        for (i, file) in files.iter().enumerate() {
            let index = match self.seen.iter().position(|s| s.file == *file) {
                Some(index) => index,
                None if self.seen.last().is_none_or(|last| last.file < *file) => {
                    self.seen.push(Seen { file: file.clone(), pos: 0, records: 0, complete: false });
                    self.seen.len() - 1
                }
                None => {
                    // A segment appeared before one already read: not a log being appended to.
                    tracing::warn!(path = %file.path.display(), "unexpected segment order; reading the log again");
                    *self = Tail::new(self.dir.clone());
                    return self.catch_up();
                }
            };
            if self.seen[index].complete {
                continue;
            }
            if !self.read(index)? {
                break; // Deleted since the listing: the next call reads the log again.
            }
            let Some(next) = files.get(i + 1) else { break };
            let seen = &self.seen[index];
            if file.base.0 + seen.pos as u64 == next.base.0 {
                self.seen[index].complete = true;
                continue;
            }
            // A later segment starts where this one ends, and this one was not read that far: a
            // gap. Folding later segments first would apply their settles before the enqueues
            // in the gap, so wait here, unless the gap is final: its epoch is sealed, or a later
            // record of its epoch says all of it was synced. A final gap with nothing after it
            // (a torn tail a restart zeroed) just ends the segment; one with data after it is
            // damage, which the tail does not judge: it stops following until compaction
            // deletes the segment, and a takeover reads the whole log itself.
            let later =
                Later { map: &map_unsynced, seals: &self.seals, files: files[i + 1..].iter(), epoch: file.epoch };
            let sealed = self.seals.end_of(file.epoch).is_some();
            if !sealed && later_mark_above(&later, next.base.0.saturating_sub(1))?.is_none() {
                break;
            }
            if self.data_after(index)? {
                tracing::warn!(path = %file.path.display(), at = self.seen[index].pos, "damage in a segment the writer has finished: the standby stops following this log until compaction deletes it; a takeover reads all of it");
                let pos = self.seen[index].pos;
                let blocked = Blocked { file: file.clone(), pos, next_base: next.base.0, polls: 0 };
                *self = Tail { seals: self.seals.clone(), blocked: Some(blocked), ..Tail::new(self.dir.clone()) };
                return Ok(0);
            }
            self.seen[index].complete = true;
        }
        Ok(self.fold.records_applied() - before)
    }

    /// Reads one segment from where the last call stopped, up to the first record that does not
    /// check out (it may be half-copied by the writer right now, or still on its way to shared
    /// storage). A record whose checksum holds but which does not decode is damage for good: its
    /// queue is quarantined, as a cold scan would. False when the file was gone or empty.
    fn read(&mut self, index: usize) -> Result<bool, StorageError> {
        let seen = &mut self.seen[index];
        let Some(map) = map_unsynced(&seen.file)? else {
            return Ok(false);
        };
        let bytes = readable(&map, &seen.file, &self.seals);
        let fold = &mut self.fold;
        let scan = scan_segment(bytes, seen.file.base, seen.pos, 0, OnDamage::Stop, &mut |at, record| {
            fold.apply_at(at.0, record)
        });
        seen.pos = scan.valid_end;
        seen.records += scan.records;
        for queue in scan.damaged_queues {
            self.fold.quarantine(queue);
        }
        Ok(true)
    }

    /// Whether non-zero bytes follow where the reading of a segment stopped (up to its seal).
    fn data_after(&self, index: usize) -> Result<bool, StorageError> {
        let seen = &self.seen[index];
        let Some(map) = map_unsynced(&seen.file)? else {
            return Ok(false);
        };
        let bytes = readable(&map, &seen.file, &self.seals);
        Ok(bytes.get(seen.pos..).is_some_and(|rest| rest.iter().any(|&b| b != 0)))
    }
}

/// Whether the blocked segment now reads without a gap from where the tail stopped up to where
/// the next segment starts.
fn reads_up_to(blocked: &Blocked, seals: &Seals) -> Result<bool, StorageError> {
    let Some(map) = map_unsynced(&blocked.file)? else {
        return Ok(false);
    };
    let bytes = readable(&map, &blocked.file, seals);
    let scan = scan_segment(bytes, blocked.file.base, blocked.pos, 0, OnDamage::Stop, &mut |_, _| {});
    Ok(blocked.file.base.0 + scan.valid_end as u64 == blocked.next_base)
}

/// Maps a segment read-only, without syncing anything (a standby never writes or syncs the
/// writer's files); `None` when it is empty or was deleted by the writer's compaction.
fn map_unsynced(file: &SegmentFile) -> Result<Option<MmapRaw>, StorageError> {
    let path = &file.path;
    match std::fs::File::open(path) {
        Ok(handle) => map_read_only(&handle, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("open segment", path, e)),
    }
}

const _: () = {
    const fn send_static<T: Send + 'static>() {}
    send_static::<Tail>();
};
