//! A warm standby's view of a shard log another process writes (ARCHITECTURE §5): [`Tail`]
//! reads the directory read-only, record by record, and keeps the fold of everything valid it
//! has seen, so that a takeover ([`crate::ShardLog::open_warm`]) only reads what came after.
//! It never writes, syncs or locks anything. Segments the writer deletes (compaction) leave the
//! listing; when this tail had read them to their end their records stay folded, which folds to
//! the same live state (what compaction deletes is settled or copied forward); when it had not,
//! a settle it never saw could leave a ghost message, so the fold starts over. A change of the
//! seals (another process took over) starts the fold over too. The fold stays in log order: a
//! segment not yet read up to where the next one starts (a record still on its way to shared
//! storage) holds the tail there. Limits: one mapping at a time; a record is folded only once it
//! is whole and its checksum holds, so a record being written is simply read on a later call.

use std::path::{Path, PathBuf};

use memmap2::MmapOptions;

use crate::error::StorageError;
use crate::fold::Fold;
use crate::scan::{OnDamage, scan_segment};
use crate::seals::Seals;
use crate::segment::{SegmentFile, list_segments};

/// How far a segment has been read.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub file: SegmentFile,
    /// Bytes from the file start up to the end of the last valid record read.
    pub pos: usize,
    /// Valid records read from it.
    pub records: u64,
    /// Read up to where the next segment starts: it cannot grow.
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
}

impl Tail {
    /// A follower of `dir` that has read nothing yet.
    pub fn new(dir: impl Into<PathBuf>) -> Tail {
        Tail { dir: dir.into(), seals: Seals::default(), seen: Vec::new(), fold: Fold::new() }
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
        if self.seen.iter().any(|s| !s.complete && !files.contains(&s.file)) {
            // Deleted before this tail read all of it: a settle it never saw would leave a
            // message live in the fold that no reader of the log would find. Read again.
            tracing::debug!(dir = %self.dir.display(), "a segment was deleted before it was read to its end");
            *self = Tail { seals: self.seals.clone(), ..Tail::new(self.dir.clone()) };
        }
        self.seen.retain(|s| files.contains(&s.file));
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
            let limit =
                self.seals.end_of(file.epoch).map(|end| usize::try_from(end.0 - file.base.0).unwrap_or(usize::MAX));
            self.read(index, limit)?;
            let Some(next) = files.get(i + 1) else { break };
            let seen = &mut self.seen[index];
            seen.complete = file.base.0 + seen.pos as u64 == next.base.0;
            if !seen.complete {
                // A later segment starts where this one ends, and this one was not read that
                // far: a gap (a record still in flight to shared storage, or damage). Folding
                // later segments first would apply their settles before the enqueues in the
                // gap, so wait here; a takeover reads on from here in order.
                break;
            }
        }
        Ok(self.fold.records_applied() - before)
    }

    /// Reads one segment from where the last call stopped.
    fn read(&mut self, index: usize, limit: Option<usize>) -> Result<(), StorageError> {
        let seen = &mut self.seen[index];
        let path = &seen.file.path;
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            // Deleted by the writer's compaction since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io("open segment", path, e)),
        };
        let len = file.metadata().map_err(|e| StorageError::io("stat segment", path, e))?.len();
        if len == 0 {
            return Ok(());
        }
        let map = MmapOptions::new().map_raw_read_only(&file).map_err(|e| StorageError::io("mmap segment", path, e))?;
        // SAFETY: read-only mapping of `map.len()` bytes alive for this function; the writer
        // only appends to segment files and never truncates them.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
        let bytes = &bytes[..limit.map_or(bytes.len(), |limit| limit.min(bytes.len()))];
        let fold = &mut self.fold;
        // Stop at the first record that does not check out: it may be half-copied by the writer
        // right now. Real damage stays where it is, for the takeover's own scan to judge.
        let scan =
            scan_segment(bytes, seen.file.base, seen.pos, 0, OnDamage::Stop, &mut |_, record| fold.apply(record));
        seen.pos = scan.valid_end;
        seen.records += scan.records;
        Ok(())
    }
}

const _: () = {
    const fn send_static<T: Send + 'static>() {}
    send_static::<Tail>();
};
