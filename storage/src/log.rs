//! `ShardLog`: the one append log of one shard. Lives on that shard's thread (it need not be
//! `Send`): appends are memory copies into the mapped active segment, a full segment rolls to
//! a fresh preallocated one, and durability advances only through a `SyncJob` that ran on a
//! blocking thread and was reported back with `complete_sync`. A failed sync poisons the log
//! for good. Limits: one sync job in flight at a time; records no larger than a segment; a
//! roll (create + fallocate + populate) blocks the caller for the time it takes.

use std::path::PathBuf;
use std::sync::Arc;

use rkyv::util::AlignedVec;

use crate::error::StorageError;
use crate::fold::Recovered;
use crate::format::{SEGMENT_HEADER_SIZE, Stamp, record_len, write_record};
use crate::io::{Io, RealIo};
use memmap2::MmapRaw;

use crate::open::open_dir;
use crate::record::Record;
use crate::segment::{ActiveSegment, SealedSegment, create_segment, fsync_dir};
use crate::spare::{Spare, SpareJob};
use crate::sync::{DirtyRange, SyncJob, mark_dirty};
use crate::tail::Tail;
use crate::{Epoch, Offset, SegmentId};

/// Default size of a segment file.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest segment size accepted (tests use small segments to hit rolls).
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 4 * 1024;
/// Largest segment size accepted (record lengths are `u32` on disk).
pub const SEGMENT_SIZE_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Where and how a shard writes its log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The shard's directory (e.g. `<data-dir>/shard-0`); created if missing.
    pub dir: PathBuf,
    /// Size of each new segment file; a multiple of 8.
    pub segment_size_bytes: u64,
    /// Stamped in every record header.
    pub epoch: Epoch,
    /// The system calls that can fail ([`RealIo`] unless a test injects faults).
    pub io: Arc<dyn Io>,
    /// Asked after every sync and before every segment deletion whether this writer still
    /// holds the lease (ARCHITECTURE §5); `None` when no lease is in use.
    pub fence: Option<Arc<dyn Fence>>,
}

/// The writer's right to acknowledge: a lease check that runs on the blocking thread of a
/// `SyncJob` after its sync succeeded, and before a `CompactJob` deletes anything. It may
/// block (waiting for a late lease renewal). An `Err` means another process took over: the
/// sync's data may lie beyond the new epoch's seal, so nothing may be acknowledged.
pub trait Fence: Send + Sync + std::fmt::Debug + 'static {
    /// `Ok` while this writer's epoch is the newest and its lease is renewed.
    fn check(&self) -> Result<(), String>;
}

/// Runs `fence`'s check, if any, as a storage result.
pub(crate) fn check_fence(fence: Option<&Arc<dyn Fence>>) -> Result<(), StorageError> {
    match fence {
        Some(fence) => fence.check().map_err(StorageError::LeaseLost),
        None => Ok(()),
    }
}

/// Two configs are equal when their fields are and they share the same `Io` instance.
impl PartialEq for LogConfig {
    fn eq(&self, other: &LogConfig) -> bool {
        self.dir == other.dir
            && self.segment_size_bytes == other.segment_size_bytes
            && self.epoch == other.epoch
            && Arc::ptr_eq(&self.io, &other.io)
            && match (&self.fence, &other.fence) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for LogConfig {}

impl LogConfig {
    /// Defaults (64 MiB segments, epoch 1, real I/O) for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            epoch: Epoch(1),
            io: Arc::new(RealIo),
            fence: None,
        }
    }

    fn segment_size_u32(&self) -> Result<u32, StorageError> {
        let size = self.segment_size_bytes;
        if !(SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&size) || !size.is_multiple_of(8) {
            return Err(StorageError::Config(format!(
                "segment_size_bytes {size} must be a multiple of 8 in {SEGMENT_SIZE_BYTES_MIN}..={SEGMENT_SIZE_BYTES_MAX}"
            )));
        }
        u32::try_from(size).map_err(|_| StorageError::Config(format!("segment_size_bytes {size} exceeds u32")))
    }
}

/// What `ShardLog::compact` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Segment files deleted.
    pub segments_deleted: u64,
    /// Their total size.
    pub bytes_freed: u64,
}

/// Sealed segments to delete, cut by [`ShardLog::compact_job`]; `Send`, run off the shard.
#[derive(Debug)]
pub struct CompactJob {
    segments: Vec<SealedSegment>,
    dir: PathBuf,
    io: Arc<dyn Io>,
    fence: Option<Arc<dyn Fence>>,
}

/// A [`CompactJob`] that stopped part-way: why, and the segments it left on disk. Hand it to
/// [`ShardLog::compact_failed`]: those segments go back to the log, to be deleted by a later
/// round, and no segment after them (where the settles of their messages may lie) is deleted
/// first. Dropping it instead would let a restart read them with those settles gone.
#[derive(Debug)]
pub struct CompactFailed {
    pub error: StorageError,
    left: Vec<SealedSegment>,
}

impl CompactJob {
    /// Unlinks the segments oldest first (stopping at the first failure; one already gone
    /// counts as deleted), then fsyncs the directory. A writer that lost its lease deletes
    /// nothing: its settles may lie beyond the new epoch's seal, where they do not count.
    pub fn run(self) -> Result<CompactReport, CompactFailed> {
        let mut segments = self.segments.into_iter();
        let fail = |error, left: Vec<SealedSegment>| Err(CompactFailed { error, left });
        if let Err(error) = check_fence(self.fence.as_ref()) {
            return fail(error, segments.collect());
        }
        let mut report = CompactReport::default();
        while let Some(segment) = segments.next() {
            let len = std::fs::metadata(&segment.path).map_or(0, |m| m.len());
            match self.io.remove(&segment.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let error = StorageError::io("remove segment", &segment.path, e);
                    return fail(error, std::iter::once(segment).chain(segments).collect());
                }
            }
            tracing::info!(segment = segment.id.0, base = segment.base.0, end = segment.end.0, path = %segment.path.display(), "deleted settled segment");
            report.segments_deleted += 1;
            report.bytes_freed += len;
        }
        // The unlinks happened; a later round's directory sync makes them durable too.
        fsync_dir(&*self.io, &self.dir).map_err(|error| CompactFailed { error, left: Vec::new() })?;
        Ok(report)
    }
}

/// A shard's append log. See the module docs for the threading and durability contract.
#[derive(Debug)]
pub struct ShardLog {
    dir: PathBuf,
    epoch: Epoch,
    segment_size_bytes: u32,
    active: ActiveSegment,
    sealed: Vec<SealedSegment>,
    appended: Offset,
    durable: Offset,
    dirty: Vec<DirtyRange>,
    dir_dirty: bool,
    in_flight: Option<Offset>,
    poisoned: bool,
    scratch: AlignedVec,
    io: Arc<dyn Io>,
    fence: Option<Arc<dyn Fence>>,
    /// The next segment's file, prepared off the shard thread (see `spare`).
    spare: Option<Spare>,
    spare_pending: bool,
    /// Mappings of segments sealed since the last SyncJob, unmapped by that job.
    retired: Vec<Arc<MmapRaw>>,
    /// The last record appended is not a mark that vouches for everything before it (see
    /// [`ShardLog::wants_mark`]): a record's own mark never covers the record itself.
    unvouched: bool,
}

impl ShardLog {
    /// Scans existing segments, validates them, and positions the writer after the last valid
    /// record. Blocking: call at start-up. Everything recovered is durable on return.
    pub fn open(config: LogConfig) -> Result<(ShardLog, Recovered), StorageError> {
        ShardLog::open_warm(config, None)
    }

    /// Like [`ShardLog::open`]; a takeover continues `warm` (a standby's [`Tail`] of this
    /// directory) instead of reading the whole log again, when it still fits the log.
    pub fn open_warm(config: LogConfig, warm: Option<Tail>) -> Result<(ShardLog, Recovered), StorageError> {
        let segment_size_bytes = config.segment_size_u32()?;
        let opened = open_dir(&*config.io, &config.dir, segment_size_bytes, config.epoch, warm)?;
        let end = Offset(opened.active.base.0 + opened.active.write_pos as u64);
        let log = ShardLog {
            dir: config.dir,
            epoch: config.epoch,
            segment_size_bytes,
            active: opened.active,
            sealed: opened.sealed,
            appended: end,
            durable: end,
            dirty: Vec::new(),
            dir_dirty: false,
            in_flight: None,
            poisoned: false,
            scratch: AlignedVec::new(),
            spare: None,
            spare_pending: false,
            retired: Vec::new(),
            io: config.io,
            fence: config.fence,
            // Recovery synced what it kept. After a reopen nothing may vouch for the last batch
            // (a crash inside the idle wait before its mark): the first idle spell marks it.
            unvouched: opened.reopened,
        };
        let mut log = log;
        if opened.mark_synced {
            // Recovery read on past damage because a later record's mark showed it synced;
            // that record may be gone now (a torn tail zeroed). One synced record whose mark
            // covers everything recovered keeps showing it to every later start.
            log.append_mark()?;
            if let Some(job) = log.sync_job() {
                let result = job.run();
                log.complete_sync(result)?;
            }
            tracing::info!(dir = %log.dir.display(), "recorded that the damage read past at start was synced");
        }
        Ok((log, opened.recovered))
    }

    /// Copies `record` into the log and returns its END offset (the new `appended_offset`).
    /// Not durable until a `SyncJob` cut after this call has completed.
    pub fn append(&mut self, record: &Record) -> Result<Offset, StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        let meta = crate::codec::encode_meta(record, std::mem::take(&mut self.scratch))?;
        let result = self.append_encoded(record, &meta);
        self.scratch = meta;
        self.unvouched |= result.is_ok();
        result
    }

    /// True when records are synced that no record's synced mark vouches for yet: the log is
    /// idle (everything appended is durable, no sync in flight) and the last records appended
    /// are the last synced batch. Only a later record's mark tells recovery that a damaged
    /// header among them lies inside the synced region (quarantine its queue, keep the rest)
    /// rather than in a torn tail (drop it and everything after). A writer that finds its log
    /// idle for a while appends [`ShardLog::append_mark`] and syncs it.
    pub fn wants_mark(&self) -> bool {
        !self.poisoned && self.in_flight.is_none() && self.durable == self.appended && self.unvouched
    }

    /// Appends a record that changes nothing (a commit of no transaction) for its synced mark:
    /// see [`ShardLog::wants_mark`]. Not durable until a later sync, like any append. It
    /// vouches for everything before it only when all of that is durable already.
    pub fn append_mark(&mut self) -> Result<Offset, StorageError> {
        let idle = self.durable == self.appended && self.in_flight.is_none();
        let was = self.unvouched;
        let result = self.append(&Record::TxCommit { tx_id: 0 });
        self.unvouched = if result.is_ok() { !idle } else { was };
        result
    }

    fn append_encoded(&mut self, record: &Record, meta: &[u8]) -> Result<Offset, StorageError> {
        let body = record.body();
        let len = record_len(meta.len(), body.len());
        let capacity = self.segment_size_bytes as usize - SEGMENT_HEADER_SIZE;
        if len > capacity {
            return Err(StorageError::RecordTooLarge {
                len_bytes: len as u64,
                segment_size_bytes: u64::from(self.segment_size_bytes),
            });
        }
        if self.active.write_pos + len > self.active.size() {
            self.roll()?;
        }
        let pos = self.active.write_pos;
        let offset = self.active.base.0 + pos as u64;
        let stamp = Stamp {
            kind: record.kind() as u8,
            epoch: self.epoch.0,
            offset,
            durable: self.durable.0,
            salt: self.active.salt,
        };
        write_record(self.active.bytes_mut(pos, len), stamp, meta, body);
        self.active.write_pos = pos + len;
        mark_dirty(&mut self.dirty, &self.active.map, &self.active.path, pos, pos + len);
        self.appended = Offset(offset + len as u64);
        Ok(self.appended)
    }

    /// Seals the active segment and starts a new one at `appended_offset`: the prepared spare
    /// renamed into place when there is one, else a segment created here.
    fn roll(&mut self) -> Result<(), StorageError> {
        let base = self.appended;
        let id = SegmentId(self.active.id.0 + 1);
        let promoted = self.spare.take().map(|spare| self.promote_spare(spare, base, id));
        let fresh = match promoted {
            Some(Ok(segment)) => segment,
            Some(Err(error)) => {
                tracing::warn!(%error, "promoting the prepared segment failed; creating it in place");
                create_segment(&*self.io, &self.dir, base, id, self.epoch, self.segment_size_bytes)?
            }
            None => create_segment(&*self.io, &self.dir, base, id, self.epoch, self.segment_size_bytes)?,
        };
        mark_dirty(&mut self.dirty, &fresh.map, &fresh.path, 0, SEGMENT_HEADER_SIZE);
        self.dir_dirty = true;
        let old = std::mem::replace(&mut self.active, fresh);
        tracing::debug!(segment = old.id.0, next = id.0, base = base.0, "segment rolled");
        self.retired.push(old.map);
        self.sealed.push(SealedSegment { id: old.id, base: old.base, end: base, path: old.path });
        self.appended = Offset(base.0 + SEGMENT_HEADER_SIZE as u64);
        Ok(())
    }

    fn promote_spare(&self, spare: Spare, base: Offset, id: SegmentId) -> Result<ActiveSegment, StorageError> {
        let path = crate::segment::segment_path(&self.dir, base, self.epoch);
        self.io.rename(&spare.path, &path).map_err(|e| StorageError::io("rename spare", &spare.path, e))?;
        Ok(ActiveSegment::stamped(id, base, path, spare.map, self.epoch, self.segment_size_bytes))
    }

    /// A job preparing the next segment's file, when none is ready or being prepared. Run it
    /// on a blocking thread and pass the result to [`ShardLog::install_spare`].
    pub fn spare_job(&mut self) -> Option<SpareJob> {
        if self.poisoned || self.spare.is_some() || self.spare_pending {
            return None;
        }
        self.spare_pending = true;
        let path = crate::spare::spare_path(&self.dir, self.epoch, self.active.id.0 + 1);
        Some(SpareJob { io: Arc::clone(&self.io), path, size_bytes: u64::from(self.segment_size_bytes) })
    }

    /// Takes a prepared spare; a failure only means the next roll creates its segment itself.
    pub fn install_spare(&mut self, result: Result<Spare, StorageError>) {
        self.spare_pending = false;
        match result {
            Ok(spare) => self.spare = Some(spare),
            Err(error) => tracing::warn!(%error, "preparing the next segment failed; the roll will create it"),
        }
    }

    /// End offset of the last appended record.
    pub fn appended_offset(&self) -> Offset {
        self.appended
    }

    /// Everything up to here is on stable storage.
    pub fn durable_offset(&self) -> Offset {
        self.durable
    }

    /// True after a failed sync: the log accepts nothing more.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// A job covering everything appended so far, or `None` if there is nothing to sync, a
    /// job is already in flight, or the log is poisoned (check `is_poisoned`).
    pub fn sync_job(&mut self) -> Option<SyncJob> {
        if self.poisoned || self.in_flight.is_some() || self.durable == self.appended {
            return None;
        }
        self.in_flight = Some(self.appended);
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        let ranges = std::mem::take(&mut self.dirty);
        let retired = std::mem::take(&mut self.retired);
        Some(SyncJob {
            ranges,
            dir,
            target: self.appended,
            io: Arc::clone(&self.io),
            retired,
            fence: self.fence.clone(),
        })
    }

    /// Reports a job's outcome. `Ok` advances `durable_offset`; `Err` poisons the log and is
    /// returned: a failed sync is fatal, never retried.
    pub fn complete_sync(&mut self, result: Result<Offset, StorageError>) -> Result<Offset, StorageError> {
        let target = self.in_flight.take();
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        match result {
            Ok(offset) => {
                let target = target.expect("complete_sync(Ok) without a SyncJob in flight");
                assert!(offset <= target && offset >= self.durable, "sync reported an offset it did not cover");
                self.durable = offset;
                Ok(offset)
            }
            Err(error) => {
                tracing::error!(%error, "log sync failed: the shard log is poisoned");
                self.poisoned = true;
                Err(error)
            }
        }
    }

    /// Deletes sealed segments that lie wholly below `keep_from` and below `durable_offset`,
    /// oldest first. The caller guarantees that every record below `keep_from` is settled,
    /// deleted, or copied forward (re-appended) and durable — declarations included.
    /// Blocking (unlink + directory fsync); the engine uses [`ShardLog::compact_job`] instead.
    pub fn compact(&mut self, keep_from: Offset) -> Result<CompactReport, StorageError> {
        match self.compact_job(keep_from)? {
            Some(job) => job.run().map_err(|failed| self.compact_failed(failed)),
            None => Ok(CompactReport::default()),
        }
    }

    /// Takes back the segments a failed [`CompactJob`] left on disk (oldest of all, so the next
    /// round tries them first) and returns why it failed.
    pub fn compact_failed(&mut self, failed: CompactFailed) -> StorageError {
        let CompactFailed { error, left } = failed;
        self.sealed.splice(0..0, left);
        error
    }

    /// Like [`ShardLog::compact`], but returns the file work as a `Send` job to run on a
    /// blocking thread. The segments leave the log's bookkeeping at once.
    pub fn compact_job(&mut self, keep_from: Offset) -> Result<Option<CompactJob>, StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        let bound = keep_from.min(self.durable);
        let count = self.sealed.iter().take_while(|s| s.end < bound).count();
        if count == 0 {
            return Ok(None);
        }
        let segments = self.sealed.drain(..count).collect();
        Ok(Some(CompactJob { segments, dir: self.dir.clone(), io: Arc::clone(&self.io), fence: self.fence.clone() }))
    }

    /// Hard-links every segment file of this log into the sub-directory `name` (created), then
    /// syncs both directories: the records as they are now stay on disk whatever compaction
    /// deletes later, at no cost in space until the log's own names go. Recovery never reads
    /// sub-directories. Blocking. For a queue that recovery could not bring back (quarantined,
    /// or refused): its records are kept for inspection while the log compacts on.
    pub fn keep_segments(&self, name: &str) -> Result<PathBuf, StorageError> {
        let into = self.dir.join(name);
        std::fs::create_dir_all(&into).map_err(|e| StorageError::io("create dir", &into, e))?;
        for segment in crate::segment::list_segments(&self.dir)? {
            let Some(file) = segment.path.file_name() else { continue };
            let link = into.join(file);
            match std::fs::hard_link(&segment.path, &link) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(StorageError::io("link segment", &link, e));
                }
                _ => {}
            }
        }
        fsync_dir(&*self.io, &into)?;
        fsync_dir(&*self.io, &self.dir)?;
        Ok(into)
    }

    /// How many sealed segments lie wholly below `keep_from`: what a compaction to it deletes
    /// once everything appended is durable.
    pub fn sealed_below(&self, keep_from: Offset) -> usize {
        self.sealed.iter().take_while(|s| s.end < keep_from).count()
    }

    /// Base offset of the segment being appended to: everything below it is sealed.
    pub fn active_base(&self) -> Offset {
        self.active.base
    }

    /// Number of segment files (sealed plus active).
    pub fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    /// The shard directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}
