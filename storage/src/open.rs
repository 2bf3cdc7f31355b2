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
use crate::format::{SEGMENT_HEADER_SIZE, SegmentHeader, fresh_salt, segment_salt};
use crate::io::Io;
use crate::scan::{
    Later, OnDamage, SegmentScan, check_header, damage_of, last_with_records, scan_reading_on, scan_segment,
};
use crate::seals::Seals;
use crate::segment::{
    ActiveSegment, OPEN_SEALED_OP, SealedSegment, SegmentFile, create_segment, data_end_of, fsync_dir, list_segments,
    open_sealed, open_writable, readable,
};
use crate::tail::{Seen, Tail};
use crate::{Epoch, Offset, SegmentId};

/// How far past the last valid record a takeover counts torn bytes (only to report them: it
/// never zeroes the old writer's files). Telling synced damage from a torn tail still reads
/// the rest of the old writer's last segment: the next valid record may be anywhere in it.
const TAKEOVER_TAIL_PROBE_BYTES: usize = 1024 * 1024;

/// A recovered shard directory, ready to append to.
#[derive(Debug)]
pub(crate) struct Opened {
    pub active: ActiveSegment,
    pub sealed: Vec<SealedSegment>,
    pub recovered: Recovered,
    /// The same writer reopened its log and recovered records of its own: nothing may vouch
    /// for its last batch (a crash inside the idle wait before the mark), so the writer wants a
    /// mark once it is idle (`ShardLog::wants_mark`). A takeover needs none: its seal covers
    /// what it recovered.
    pub reopened: bool,
    /// A reopen read on past damage that only marks showed were synced, and the records that
    /// carried them may be gone (a torn tail it zeroed): the writer must append and sync one
    /// record now, whose mark keeps showing it to later starts.
    pub mark_synced: bool,
}

/// Recovers (or creates) the log in `dir` for a writer of `epoch`. `size_bytes` applies to
/// new segments. When the log's newest records are of an older epoch this is a takeover: that
/// epoch is sealed at its last valid record (nothing of the old writer's files is written, it
/// may still have them mapped) and appends start in a new segment of `epoch`. When they are of
/// `epoch` itself (a reopen by the same writer) appends continue after the last valid record.
/// A warm standby's `Tail` of this directory, when given, saves re-reading what it has read.
pub(crate) fn open_dir(
    io: &dyn Io,
    dir: &Path,
    size_bytes: u32,
    epoch: Epoch,
    warm: Option<Tail>,
) -> Result<Opened, StorageError> {
    let mut warm = warm;
    relist_if_vanished(|| open_listed(io, dir, size_bytes, epoch, warm.take()))
}

/// How often an open lists the directory again after a listed segment vanished.
const VANISHED_RELISTS_MAX: u32 = 5;

/// Runs `open` again (up to [`VANISHED_RELISTS_MAX`] times) when it failed because a segment
/// it listed was gone before it could open it: the previous owner's last compaction, racing a
/// takeover (it asked its lease just before the claim). Compaction deletes oldest first, so a
/// fresh listing and fold read a consistent log; skipping only the vanished file would keep
/// enqueues from earlier segments whose settles went with it. Nothing is written before the
/// scan, so starting over is safe; a retry reads cold (the warm fold went with the first try).
fn relist_if_vanished<T>(mut open: impl FnMut() -> Result<T, StorageError>) -> Result<T, StorageError> {
    let mut relists = 0;
    loop {
        match open() {
            Err(StorageError::Io { op, path, source })
                if op == OPEN_SEALED_OP
                    && source.kind() == std::io::ErrorKind::NotFound
                    && relists < VANISHED_RELISTS_MAX =>
            {
                relists += 1;
                tracing::info!(path = %path.display(), "a listed segment was deleted while opening the log (a compaction); listing again");
            }
            result => return result,
        }
    }
}

/// [`open_dir`] on one listing of the directory.
fn open_listed(
    io: &dyn Io,
    dir: &Path,
    size_bytes: u32,
    epoch: Epoch,
    warm: Option<Tail>,
) -> Result<Opened, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create dir", dir, e))?;
    crate::spare::remove_leftover_spares(io, dir)?;
    let mut seals = Seals::load(dir)?;
    let segments = keep_unfenced(io, list_segments(dir)?, &seals, epoch)?;
    let Some(last) = segments.last() else {
        let base = seals.max_end().unwrap_or(Offset(0));
        let active = create_segment(io, dir, base, SegmentId(0), epoch, size_bytes)?;
        io.sync_range(&active.map, &active.path, 0, active.size())
            .map_err(|e| StorageError::io("msync", &active.path, e))?;
        fsync_dir(io, dir)?;
        return Ok(Opened {
            active,
            sealed: Vec::new(),
            recovered: Recovered::default(),
            reopened: false,
            mark_synced: false,
        });
    };
    if last.epoch == epoch {
        reopen(io, dir, size_bytes, &seals, segments)
    } else {
        take_over(io, dir, size_bytes, &mut seals, segments, epoch, warm)
    }
}

/// Drops the segments nothing may read: those of a sealed epoch that start at or after its
/// seal (what a fenced writer rolled to after the takeover), deleting their files — unlinking
/// is safe under a writer that still maps them. A segment of a newer epoch than `epoch` means
/// another process has taken over from this one: an error, nothing is touched.
fn keep_unfenced(
    io: &dyn Io,
    segments: Vec<SegmentFile>,
    seals: &Seals,
    epoch: Epoch,
) -> Result<Vec<SegmentFile>, StorageError> {
    if let Some(newer) = segments.iter().find(|s| s.epoch > epoch) {
        return Err(StorageError::Fenced { epoch: epoch.0, newer: newer.epoch.0 });
    }
    let mut kept = Vec::with_capacity(segments.len());
    for segment in segments {
        match seals.end_of(segment.epoch) {
            Some(end) if segment.base >= end => {
                tracing::warn!(path = %segment.path.display(), epoch = segment.epoch.0, seal = end.0, "removing a segment written after its epoch was sealed (a fenced writer's)");
                io.remove(&segment.path).map_err(|e| StorageError::io("remove segment", &segment.path, e))?;
            }
            _ => kept.push(segment),
        }
    }
    Ok(kept)
}

/// One scanned segment and whether its epoch is sealed (its data ends at the seal: a bad
/// record inside is damage, never a torn tail).
struct Scanned {
    file: SegmentFile,
    id: SegmentId,
    scan: SegmentScan,
    sealed_epoch: bool,
}

/// Scans `segments` read-only into `fold`, each sealed epoch's only up to its seal, each from
/// where `seen` (a warm standby's progress, already in `fold`) stopped; `after` are the
/// segments that follow them (read ahead only, to tell damage from a torn tail). Ids come from
/// the headers, or follow the previous segment's when a header is unreadable.
fn scan_read_only(
    io: &dyn Io,
    segments: Vec<SegmentFile>,
    after: &[SegmentFile],
    seals: &Seals,
    tail_limit: usize,
    seen: &[Seen],
    fold: &mut Fold,
) -> Result<Vec<Scanned>, StorageError> {
    let mut scanned: Vec<Scanned> = Vec::with_capacity(segments.len());
    for (i, file) in segments.iter().enumerate() {
        let (start, before) = seen.iter().find(|s| s.file == *file).map_or((0, 0), |s| (s.pos, s.records));
        let map = |file: &SegmentFile| open_sealed(io, &file.path);
        let later = Later { map: &map, seals, files: segments[i + 1..].iter().chain(after), epoch: file.epoch };
        let (id, mut scan) = scan_sealed(io, file, start, tail_limit, later, fold)?;
        scan.records += before;
        let id = id.unwrap_or_else(|| scanned.last().map_or(SegmentId(0), |s| SegmentId(s.id.0 + 1)));
        let sealed_epoch = seals.end_of(file.epoch).is_some();
        scanned.push(Scanned { file: file.clone(), id, scan, sealed_epoch });
    }
    Ok(scanned)
}

/// Sealed segments in log order; each ends where the next starts, the last at `end`.
fn sealed_list(scanned: &[Scanned], end: Offset) -> Vec<SealedSegment> {
    let ends = scanned.iter().skip(1).map(|s| s.file.base).chain(std::iter::once(end));
    scanned
        .iter()
        .zip(ends)
        .map(|(s, end)| SealedSegment { id: s.id, base: s.file.base, end, path: s.file.path.clone() })
        .collect()
}

/// The same writer reopening its log: continue after the last valid record of the last segment
/// (its torn tail zeroed in place).
fn reopen(
    io: &dyn Io,
    dir: &Path,
    size_bytes: u32,
    seals: &Seals,
    mut segments: Vec<SegmentFile>,
) -> Result<Opened, StorageError> {
    let last_file = segments.pop().expect("reopen needs a segment");
    let mut fold = Fold::new();
    let mut scanned =
        scan_read_only(io, segments, std::slice::from_ref(&last_file), seals, usize::MAX, &[], &mut fold)?;
    let next_id = scanned.last().map_or(SegmentId(0), |s| SegmentId(s.id.0 + 1));
    let last =
        LastSegment { base: last_file.base, path: &last_file.path, id: next_id, size_bytes, epoch: last_file.epoch };
    let (active, last_scan) = recover_last(io, &last, &mut fold)?;
    let sealed = sealed_list(&scanned, active.base);
    let last_torn = last_scan.torn_tail_bytes;
    scanned.push(Scanned { file: last_file.clone(), id: active.id, scan: last_scan, sealed_epoch: false });
    let torn_tail_bytes = settle_sealed_tails(io, &scanned, &mut fold)? + last_torn;
    fsync_dir(io, dir)?;
    let mark_synced = scanned.iter().any(|s| s.scan.proved_damage);
    let recovered = finish(dir, fold, torn_tail_bytes);
    Ok(Opened { active, sealed, reopened: recovered.records_replayed > 0, recovered, mark_synced })
}

/// A new epoch taking over: everything is scanned read-only, the previous epoch is sealed at
/// its last valid record (the torn tail after it is ignored, not zeroed), the seal is made
/// durable, and a new segment of `epoch` starts at the seal.
fn take_over(
    io: &dyn Io,
    dir: &Path,
    size_bytes: u32,
    seals: &mut Seals,
    segments: Vec<SegmentFile>,
    epoch: Epoch,
    warm: Option<Tail>,
) -> Result<Opened, StorageError> {
    let previous = segments.last().expect("take_over needs a segment").epoch;
    let (mut fold, seen) = match warm {
        Some(tail) if warm_fits(&tail, dir, seals, &segments) => {
            tracing::info!(dir = %dir.display(), records = tail.records(), "taking over from a warm fold: reading only the unseen tail");
            let mut fold = tail.fold;
            // Segments deleted since the tail last looked: their commits are not needed.
            fold.forget_commits_below(segments.first().map_or(0, |s| s.base.0));
            (fold, tail.seen)
        }
        Some(_) => {
            tracing::warn!(dir = %dir.display(), "the warm fold does not match the log; reading all of it");
            (Fold::new(), Vec::new())
        }
        None => (Fold::new(), Vec::new()),
    };
    let listed = segments.clone();
    let mut scanned = scan_read_only(io, segments, &[], seals, TAKEOVER_TAIL_PROBE_BYTES, &seen, &mut fold)?;
    let late =
        scanned.iter().any(|s| seen.iter().any(|t| t.complete && t.file == s.file && s.scan.records > t.records));
    if late {
        // A segment the standby had finished held more (it read a stale copy of shared
        // storage): folded after the later segments, those records would be out of order.
        tracing::warn!(dir = %dir.display(), "the warm fold missed records of a segment it had finished; reading all of the log");
        fold = Fold::new();
        scanned = scan_read_only(io, listed, &[], seals, TAKEOVER_TAIL_PROBE_BYTES, &[], &mut fold)?;
    }
    let tail_from = last_with_records(scanned.iter().map(|s| &s.scan)).unwrap_or(0);
    let mut torn_tail_bytes = 0;
    for (i, s) in scanned.iter().enumerate() {
        if s.sealed_epoch || i < tail_from {
            for queue in damage_of(&s.scan) {
                fold.quarantine(queue);
            }
        } else {
            torn_tail_bytes += s.scan.torn_tail_bytes;
        }
    }
    let end = match seals.end_of(previous) {
        Some(end) => end,
        None => {
            let at = &scanned[tail_from.max(scanned.iter().position(|s| s.file.epoch == previous).unwrap_or(0))];
            let end = Offset(at.file.base.0 + at.scan.valid_end.max(SEGMENT_HEADER_SIZE) as u64);
            seals.seal(io, dir, previous, end)?;
            tracing::info!(dir = %dir.display(), sealed_epoch = previous.0, end = end.0, new_epoch = epoch.0, torn_tail_bytes, "sealed the previous epoch's log");
            end
        }
    };
    // Segments of the sealed epoch from the seal on hold nothing (a roll the crash interrupted).
    while scanned.last().is_some_and(|s| s.file.base >= end) {
        let dropped = scanned.pop().expect("checked");
        io.remove(&dropped.file.path).map_err(|e| StorageError::io("remove segment", &dropped.file.path, e))?;
    }
    let id = scanned.last().map_or(SegmentId(0), |s| SegmentId(s.id.0 + 1));
    let active = create_segment(io, dir, end, id, epoch, size_bytes)?;
    // The header (and, through fdatasync semantics, the file's allocation) is durable before
    // the first record is acknowledged; the rest of the fresh file is zeros either way.
    io.sync_range(&active.map, &active.path, 0, SEGMENT_HEADER_SIZE)
        .map_err(|e| StorageError::io("msync", &active.path, e))?;
    fsync_dir(io, dir)?;
    let sealed = sealed_list(&scanned, end);
    // A new epoch's marks say nothing of the sealed one's damage (see `scan::Later`).
    Ok(Opened { active, sealed, recovered: finish(dir, fold, torn_tail_bytes), reopened: false, mark_synced: false })
}

/// A warm fold can be continued when it followed this directory under the same seals, every
/// segment deleted since was read to its end, and every segment now listed is one it read or
/// comes after all of them.
fn warm_fits(tail: &Tail, dir: &Path, seals: &Seals, segments: &[SegmentFile]) -> bool {
    let newest_seen = tail.seen.last().map(|s| &s.file);
    tail.dir == dir
        && tail.seals == *seals
        && tail.seen.iter().all(|s| s.complete || segments.contains(&s.file))
        && segments.iter().all(|f| tail.seen.iter().any(|s| s.file == *f) || newest_seen.is_none_or(|n| f > n))
}

fn finish(dir: &Path, fold: Fold, torn_tail_bytes: usize) -> Recovered {
    let mut recovered = fold.finish();
    recovered.torn_tail_bytes = torn_tail_bytes as u64;
    tracing::info!(
        dir = %dir.display(),
        records = recovered.records_replayed,
        torn_tail_bytes,
        quarantined = recovered.quarantined.len(),
        "shard log recovered"
    );
    recovered
}

/// Scans one segment read-only into `fold`, only up to its epoch's seal, from byte `start`,
/// looking for a torn tail within `tail_limit` bytes (and into the `later` segments when
/// damage needs telling from a torn tail); returns its id when the header is readable.
fn scan_sealed<'a>(
    io: &dyn Io,
    file: &SegmentFile,
    start: usize,
    tail_limit: usize,
    later: Later<'a, impl Iterator<Item = &'a SegmentFile> + Clone>,
    fold: &mut Fold,
) -> Result<(Option<SegmentId>, SegmentScan), StorageError> {
    let path = &file.path;
    let Some(map) = open_sealed(io, path)? else {
        tracing::error!(path = %path.display(), "empty sealed segment file");
        return Ok((None, SegmentScan::default()));
    };
    let bytes = readable(&map, file, later.seals);
    let header = check_header(bytes, file.base, path);
    // `open_sealed` synced the file, so its data end counts everything written to it.
    let bytes = &bytes[..data_end_of(path).max(start).min(bytes.len())];
    let mut scan =
        scan_reading_on(bytes, file.base, start, tail_limit, later, &mut |at, record| fold.apply_at(at.0, record))?;
    for queue in std::mem::take(&mut scan.damaged_queues) {
        fold.quarantine(queue);
    }
    Ok((header.map(|h| SegmentId(h.segment_id)), scan))
}

/// Decides what stopped the scan of each segment of a reopened log (`scanned` ends with the
/// last, active one). Before the last segment that holds a record, and anywhere in a sealed
/// epoch, a bad record is damage (its queue is quarantined). From that segment on it is the
/// log's torn tail, which spans segments when a crash came right after a roll (the new segment
/// file exists, the old one's unsynced end is torn): it is zeroed and synced in place, as in
/// the last segment, so that it is not taken for damage once later records follow it. Valid
/// records after damage that nothing showed were synced (`unread_from`) are zeroed too: the
/// marks of what this writer appends from now on would cover them, and a later start would
/// read back records this one went on without. The last segment's own tail is handled by
/// `recover_last`. Returns the torn bytes zeroed.
fn settle_sealed_tails(io: &dyn Io, scanned: &[Scanned], fold: &mut Fold) -> Result<usize, StorageError> {
    let tail_from = last_with_records(scanned.iter().map(|s| &s.scan)).unwrap_or(0);
    let mut zeroed = 0;
    for (i, s) in scanned.iter().enumerate().take(scanned.len().saturating_sub(1)) {
        if s.sealed_epoch || i < tail_from {
            for queue in damage_of(&s.scan) {
                fold.quarantine(queue);
            }
            // The damaged bytes stay (a later start quarantines the same queue); the valid
            // records after them that nothing showed were synced go.
            if let Some(from) = s.scan.unread_from.filter(|_| !s.sealed_epoch) {
                zero_range(io, &s.file.path, from, s.scan.dirty_end.max(from))?;
            }
        } else if s.scan.torn_tail_bytes > 0 {
            zero_range(io, &s.file.path, s.scan.valid_end, s.scan.dirty_end)?;
            zeroed += s.scan.torn_tail_bytes;
        }
    }
    Ok(zeroed)
}

/// Writes zeros over bytes `[start, end)` of a sealed segment file and syncs it.
fn zero_range(io: &dyn Io, path: &Path, start: usize, end: usize) -> Result<(), StorageError> {
    tracing::warn!(path = %path.display(), at = start, bytes = end - start, "zeroing unread bytes after the last valid record of a sealed segment");
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
/// positioned segment and its scan. A damaged header is written again with the salt the
/// records were written with; when nothing confirms one (header and first record both
/// unreadable: a fresh segment whose first page a power loss never wrote, as nothing after it
/// shows it was synced), the whole segment is the torn tail and gets a fresh salt.
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
        salt: 0,
    };
    let skip = OnDamage::Skip { synced: 0 };
    // All of it: on the same host the writer's prefaulted pages are all cached (so the file
    // system would call all of it data anyway), and elsewhere a file system that answers
    // SEEK_DATA without flushing (FUSE) could cut off records the crashed writer left dirty.
    let mut scan =
        scan_segment(active.bytes(), last.base, 0, usize::MAX, skip, &mut |at, record| fold.apply_at(at.0, record));
    for queue in std::mem::take(&mut scan.damaged_queues) {
        fold.quarantine(queue);
    }
    active.salt = segment_salt(active.bytes(), last.base.0).unwrap_or_else(fresh_salt);
    if check_header(active.bytes(), last.base, last.path).is_none() {
        tracing::warn!(path = %last.path.display(), salt = active.salt, "rewriting the last segment's header");
        let size_bytes = u32::try_from(active.size()).unwrap_or(u32::MAX);
        let fresh = SegmentHeader::new(last.epoch.0, last.base.0, active.id.0, size_bytes, active.salt);
        fresh.write_to(active.bytes_mut(0, SEGMENT_HEADER_SIZE));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vanished() -> StorageError {
        StorageError::io(OPEN_SEALED_OP, "/x/1.seg", std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    #[test]
    fn an_open_whose_listed_segment_vanished_lists_again() {
        let mut tries = 0;
        let result = relist_if_vanished(|| {
            tries += 1;
            if tries < 3 { Err(vanished()) } else { Ok(tries) }
        });
        assert_eq!(result.ok(), Some(3));
    }

    #[test]
    fn other_errors_and_endless_vanishing_still_fail() {
        let mut tries = 0;
        let result: Result<(), _> = relist_if_vanished(|| {
            tries += 1;
            Err(vanished())
        });
        assert!(result.is_err());
        assert_eq!(tries, VANISHED_RELISTS_MAX + 1);
        let mut tries = 0;
        let result: Result<(), _> = relist_if_vanished(|| {
            tries += 1;
            Err(StorageError::io(OPEN_SEALED_OP, "/x", std::io::Error::from(std::io::ErrorKind::PermissionDenied)))
        });
        assert!(result.is_err());
        assert_eq!(tries, 1, "only a vanished segment is retried");
        // A segment opened for writing (the reopened last one, a tail being zeroed) is not.
        let mut tries = 0;
        let result: Result<(), _> = relist_if_vanished(|| {
            tries += 1;
            Err(StorageError::io("open segment", "/x", std::io::Error::from(std::io::ErrorKind::NotFound)))
        });
        assert!(result.is_err());
        assert_eq!(tries, 1, "only a sealed segment's open is retried");
    }
}
