//! `SyncJob`: one group commit. Cut on the shard thread by `ShardLog::sync_job`, it is `Send`
//! and runs on a blocking thread while the shard keeps appending; it holds `Arc`s of the
//! mappings it covers, so a segment roll (or compaction) meanwhile cannot unmap them.
//! Limits: it makes durable exactly the ranges it was cut with and nothing appended later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapRaw;

use crate::Offset;
use crate::error::StorageError;
use crate::io::Io;

/// Bytes `[start, end)` of one mapped segment written since the last cut job.
#[derive(Debug)]
pub(crate) struct DirtyRange {
    pub map: Arc<MmapRaw>,
    pub path: PathBuf,
    pub start: usize,
    pub end: usize,
}

/// Adds `[start, end)` of `map` to `ranges`, merging with the last range when contiguous.
pub(crate) fn mark_dirty(ranges: &mut Vec<DirtyRange>, map: &Arc<MmapRaw>, path: &Path, start: usize, end: usize) {
    if let Some(last) = ranges.last_mut()
        && Arc::ptr_eq(&last.map, map)
        && last.end == start
    {
        last.end = end;
        return;
    }
    ranges.push(DirtyRange { map: Arc::clone(map), path: path.to_path_buf(), start, end });
}

/// A group commit covering everything appended before it was cut.
#[derive(Debug)]
pub struct SyncJob {
    pub(crate) ranges: Vec<DirtyRange>,
    /// Set when segment files were created since the last job: the directory is fsynced too.
    pub(crate) dir: Option<PathBuf>,
    pub(crate) target: Offset,
    /// The log's I/O seam.
    pub(crate) io: Arc<dyn Io>,
    /// Mappings of sealed segments: unmapped when the job is dropped, on its thread.
    pub(crate) retired: Vec<Arc<MmapRaw>>,
    /// Checked after the sync, before the offset is reported durable.
    pub(crate) fence: Option<Arc<dyn crate::log::Fence>>,
}

impl SyncJob {
    /// The offset that will be durable once `run` succeeds.
    pub fn target(&self) -> Offset {
        self.target
    }

    /// msync(MS_SYNC)s every dirty range (across segment rolls), then fsyncs the directory if
    /// segments were created, then asks the lease fence (if any). Blocking: run it off the shard's hot loop. Returns the offset
    /// now durable; an error is fatal for the log (`ShardLog::complete_sync` poisons it).
    pub fn run(self) -> Result<Offset, StorageError> {
        for range in &self.ranges {
            self.io
                .sync_range(&range.map, &range.path, range.start, range.end - range.start)
                .map_err(|e| StorageError::io("msync", &range.path, e))?;
        }
        if let Some(dir) = &self.dir {
            crate::segment::fsync_dir(&*self.io, dir)?;
        }
        // Unmap sealed segments here, off the shard thread.
        drop(self.retired);
        // After the sync and before anything is acknowledged: is this still the active?
        crate::log::check_fence(self.fence.as_ref())?;
        Ok(self.target)
    }
}

const _: () = {
    const fn send_static<T: Send + 'static>() {}
    send_static::<SyncJob>();
};
