//! Opening a shard directory: scans every segment in order, folds the valid records into
//! `Recovered`, quarantines queues with damaged records, and positions the writer after the
//! last valid record of the last segment (zeroing and syncing its torn tail in place, so stale
//! bytes can never be mistaken for records later). Blocking; runs once at start-up on the
//! shard thread. Limits: never truncates or shrinks a file; grows a short last segment.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::error::StorageError;
use crate::fold::{Fold, Recovered};
use crate::format::{SEGMENT_HEADER_SIZE, SegmentHeader};
use crate::scan::{check_header, scan_segment};
use crate::segment::{
    ActiveSegment, SealedSegment, create_segment, fsync_dir, list_segments, open_sealed, open_writable,
};
use crate::{Epoch, Offset, SegmentId};

/// A recovered shard directory, ready to append to.
#[derive(Debug)]
pub(crate) struct Opened {
    pub active: ActiveSegment,
    pub sealed: Vec<SealedSegment>,
    pub recovered: Recovered,
}

/// Recovers (or creates) the log in `dir`. `size_bytes` applies to new segments.
pub(crate) fn open_dir(dir: &Path, size_bytes: u32, epoch: Epoch) -> Result<Opened, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create dir", dir, e))?;
    let segments = list_segments(dir)?;
    let Some(((last_base, last_path), older)) = segments.split_last() else {
        let active = create_segment(dir, Offset(0), SegmentId(0), epoch, size_bytes)?;
        active.map.flush().map_err(|e| StorageError::io("msync", &active.path, e))?;
        fsync_dir(dir)?;
        return Ok(Opened { active, sealed: Vec::new(), recovered: Recovered::default() });
    };
    let mut fold = Fold::new();
    let mut sealed = Vec::with_capacity(older.len());
    let mut next_id = SegmentId(0);
    for (i, (base, path)) in older.iter().enumerate() {
        let end = segments[i + 1].0;
        let id = scan_sealed(*base, end, path, &mut fold)?.unwrap_or(next_id);
        sealed.push(SealedSegment { id, base: *base, end, path: path.clone() });
        next_id = SegmentId(id.0 + 1);
    }
    let last = LastSegment { base: *last_base, path: last_path, id: next_id, size_bytes, epoch };
    let (active, torn_tail_bytes) = recover_last(&last, &mut fold)?;
    fsync_dir(dir)?;
    let mut recovered = fold.finish();
    recovered.torn_tail_bytes = torn_tail_bytes as u64;
    tracing::info!(
        dir = %dir.display(),
        records = recovered.records_replayed,
        torn_tail_bytes,
        quarantined = recovered.quarantined.len(),
        "shard log recovered"
    );
    Ok(Opened { active, sealed, recovered })
}

/// Scans one sealed segment into `fold`; returns its id when the header is readable.
fn scan_sealed(base: Offset, end: Offset, path: &Path, fold: &mut Fold) -> Result<Option<SegmentId>, StorageError> {
    let Some(map) = open_sealed(path)? else {
        tracing::error!(path = %path.display(), "empty sealed segment file");
        return Ok(None);
    };
    // SAFETY: read-only mapping of `map.len()` bytes that lives until the end of this
    // function; nobody writes sealed segments or truncates segment files.
    let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
    let header = check_header(bytes, base, path);
    let scan = scan_segment(bytes, base, false, &mut |_, record| fold.apply(record));
    for queue in scan.damaged_queues {
        fold.quarantine(queue);
    }
    if base.0 + scan.valid_end as u64 > end.0 {
        tracing::error!(path = %path.display(), "segment data overlaps the next segment's base offset");
    }
    Ok(header.map(|h| SegmentId(h.segment_id)))
}

struct LastSegment<'a> {
    base: Offset,
    path: &'a Path,
    /// Used when the header is unreadable.
    id: SegmentId,
    size_bytes: u32,
    epoch: Epoch,
}

/// Maps the last segment writable, scans it, zeroes its torn tail and syncs it. Returns the
/// positioned segment and the torn tail's length.
fn recover_last(last: &LastSegment<'_>, fold: &mut Fold) -> Result<(ActiveSegment, usize), StorageError> {
    let header = read_header(last.path)?;
    let size = header.map_or(last.size_bytes, |h| h.size_bytes);
    let map = open_writable(last.path, u64::from(size))?;
    let mut active = ActiveSegment {
        id: header.map_or(last.id, |h| SegmentId(h.segment_id)),
        base: last.base,
        path: last.path.to_path_buf(),
        map: Arc::new(map),
        write_pos: SEGMENT_HEADER_SIZE,
    };
    if check_header(active.bytes(), last.base, last.path).is_none() {
        tracing::warn!(path = %last.path.display(), "rewriting the last segment's header");
        let size_bytes = u32::try_from(active.size()).unwrap_or(u32::MAX);
        let fresh = SegmentHeader::new(last.epoch.0, last.base.0, active.id.0, size_bytes);
        fresh.write_to(active.bytes_mut(0, SEGMENT_HEADER_SIZE));
    }
    let scan = scan_segment(active.bytes(), last.base, true, &mut |_, record| fold.apply(record));
    for queue in scan.damaged_queues {
        fold.quarantine(queue);
    }
    if scan.torn_tail_bytes > 0 {
        tracing::warn!(path = %last.path.display(), at = scan.valid_end, bytes = scan.torn_tail_bytes, "zeroing torn tail");
        active.bytes_mut(scan.valid_end, scan.dirty_end - scan.valid_end).fill(0);
    }
    active.write_pos = scan.valid_end;
    active.map.flush().map_err(|e| StorageError::io("msync", last.path, e))?;
    Ok((active, scan.torn_tail_bytes))
}

/// Reads and validates the first bytes of a segment file without mapping it.
fn read_header(path: &Path) -> Result<Option<SegmentHeader>, StorageError> {
    let mut file = std::fs::File::open(path).map_err(|e| StorageError::io("open segment", path, e))?;
    let mut bytes = Vec::with_capacity(SEGMENT_HEADER_SIZE);
    (&mut file)
        .take(SEGMENT_HEADER_SIZE as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| StorageError::io("read segment header", path, e))?;
    Ok(SegmentHeader::read_from(&bytes))
}
