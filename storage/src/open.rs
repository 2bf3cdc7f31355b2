//! Opening a shard directory: scans every segment in order, folds the valid records into
//! `Recovered`, quarantines queues with damaged records, and positions the writer after the
//! last valid record of the last segment (zeroing and syncing the torn tail in place — in the
//! last segment and in any sealed one after the last valid record — so stale bytes can never
//! be mistaken for records, or for damage, later). File calls go through the `Io` seam.
//! Blocking; runs once at start-up on the shard thread. Limits: never truncates or shrinks a
//! file; grows a short last segment.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::error::StorageError;
use crate::fold::{Fold, Recovered};
use crate::format::{SEGMENT_HEADER_SIZE, SegmentHeader};
use crate::io::Io;
use crate::scan::{SegmentScan, check_header, last_with_records, scan_segment};
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
pub(crate) fn open_dir(io: &dyn Io, dir: &Path, size_bytes: u32, epoch: Epoch) -> Result<Opened, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create dir", dir, e))?;
    crate::spare::remove_leftover_spares(io, dir)?;
    let segments = list_segments(dir)?;
    let Some(((last_base, last_path), older)) = segments.split_last() else {
        let active = create_segment(io, dir, Offset(0), SegmentId(0), epoch, size_bytes)?;
        io.sync_range(&active.map, &active.path, 0, active.size())
            .map_err(|e| StorageError::io("msync", &active.path, e))?;
        fsync_dir(io, dir)?;
        return Ok(Opened { active, sealed: Vec::new(), recovered: Recovered::default() });
    };
    let mut fold = Fold::new();
    let mut sealed = Vec::with_capacity(older.len());
    let mut scans = Vec::with_capacity(segments.len());
    let mut next_id = SegmentId(0);
    for (i, (base, path)) in older.iter().enumerate() {
        let end = segments[i + 1].0;
        let (id, scan) = scan_sealed(io, *base, end, path, &mut fold)?;
        let id = id.unwrap_or(next_id);
        sealed.push(SealedSegment { id, base: *base, end, path: path.clone() });
        scans.push(scan);
        next_id = SegmentId(id.0 + 1);
    }
    let last = LastSegment { base: *last_base, path: last_path, id: next_id, size_bytes, epoch };
    let (active, last_scan) = recover_last(io, &last, &mut fold)?;
    scans.push(last_scan);
    let torn_tail_bytes = settle_sealed_tails(io, &sealed, &scans, &mut fold)? + scans[sealed.len()].torn_tail_bytes;
    fsync_dir(io, dir)?;
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
fn scan_sealed(
    io: &dyn Io,
    base: Offset,
    end: Offset,
    path: &Path,
    fold: &mut Fold,
) -> Result<(Option<SegmentId>, SegmentScan), StorageError> {
    let Some(map) = open_sealed(io, path)? else {
        tracing::error!(path = %path.display(), "empty sealed segment file");
        return Ok((None, SegmentScan::default()));
    };
    // SAFETY: read-only mapping of `map.len()` bytes that lives until the end of this
    // function; nobody writes sealed segments or truncates segment files.
    let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
    let header = check_header(bytes, base, path);
    let mut scan = scan_segment(bytes, base, &mut |_, record| fold.apply(record));
    for queue in std::mem::take(&mut scan.damaged_queues) {
        fold.quarantine(queue);
    }
    if base.0 + scan.valid_end as u64 > end.0 {
        tracing::error!(path = %path.display(), "segment data overlaps the next segment's base offset");
    }
    Ok((header.map(|h| SegmentId(h.segment_id)), scan))
}

/// Decides what stopped the scan of each sealed segment. Before the last segment that holds a
/// record, a bad record is damage (its queue is quarantined). From that segment on it is the
/// log's torn tail, which spans segments when a crash came right after a roll (the new segment
/// file exists, the old one's unsynced end is torn): it is zeroed and synced in place, as in
/// the last segment, so that it is not taken for damage once later records follow it.
/// `scans` holds one entry per sealed segment, then the last segment's. Returns the bytes
/// zeroed.
fn settle_sealed_tails(
    io: &dyn Io,
    sealed: &[SealedSegment],
    scans: &[SegmentScan],
    fold: &mut Fold,
) -> Result<usize, StorageError> {
    let tail_from = last_with_records(scans).unwrap_or(0);
    let mut zeroed = 0;
    for (i, (segment, scan)) in sealed.iter().zip(scans).enumerate() {
        if i < tail_from {
            if let Some(queue) = scan.stopped_at.as_ref().and_then(|bad| bad.report_damage()) {
                fold.quarantine(queue);
            }
        } else if scan.torn_tail_bytes > 0 {
            zero_range(io, &segment.path, scan.valid_end, scan.dirty_end)?;
            zeroed += scan.torn_tail_bytes;
        }
    }
    Ok(zeroed)
}

/// Writes zeros over bytes `[start, end)` of a sealed segment file and syncs it.
fn zero_range(io: &dyn Io, path: &Path, start: usize, end: usize) -> Result<(), StorageError> {
    tracing::warn!(path = %path.display(), at = start, bytes = end - start, "zeroing a torn tail in a sealed segment");
    let file =
        std::fs::OpenOptions::new().write(true).open(path).map_err(|e| StorageError::io("open segment", path, e))?;
    let zeros = vec![0u8; end - start];
    file.write_all_at(&zeros, start as u64).map_err(|e| StorageError::io("zero torn tail", path, e))?;
    io.sync_file(&file, path).map_err(|e| StorageError::io("fdatasync segment", path, e))
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
/// positioned segment and its scan.
fn recover_last(
    io: &dyn Io,
    last: &LastSegment<'_>,
    fold: &mut Fold,
) -> Result<(ActiveSegment, SegmentScan), StorageError> {
    let header = read_header(last.path)?;
    let size = header.map_or(last.size_bytes, |h| h.size_bytes);
    let map = open_writable(io, last.path, u64::from(size))?;
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
    let mut scan = scan_segment(active.bytes(), last.base, &mut |_, record| fold.apply(record));
    for queue in std::mem::take(&mut scan.damaged_queues) {
        fold.quarantine(queue);
    }
    if scan.torn_tail_bytes > 0 {
        tracing::warn!(path = %last.path.display(), at = scan.valid_end, bytes = scan.torn_tail_bytes, "zeroing torn tail");
        active.bytes_mut(scan.valid_end, scan.dirty_end - scan.valid_end).fill(0);
    }
    active.write_pos = scan.valid_end;
    io.sync_range(&active.map, last.path, 0, active.size()).map_err(|e| StorageError::io("msync", last.path, e))?;
    Ok((active, scan))
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
