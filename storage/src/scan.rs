//! Reading a log back: `scan_segment` walks one segment's bytes record by record, telling a
//! proven-valid prefix from damage inside the data and from what may be a torn tail (a tail
//! can start before the last segment: a crash right after a roll leaves the previous segment
//! torn and the new one empty); `replay` reads a whole shard directory read-only. Used at
//! open (blocking, on the shard thread) and by the engine when it folds several shards' logs
//! itself. Limits: it never writes; a record that fails its checksum is only skipped when the
//! claimed length leads to a valid record.

use std::path::Path;

use crate::codec::{decode, queue_of_damaged};
use crate::error::StorageError;
use crate::format::{Parsed, SEGMENT_HEADER_SIZE, SegmentHeader, parse_record};
use crate::io::RealIo;
use crate::seals::Seals;
use crate::segment::{list_segments, open_sealed};
use crate::{Offset, Record};

/// What scanning one segment found besides its records.
#[derive(Debug, Default)]
pub(crate) struct SegmentScan {
    /// Position (bytes from the file start) just after the last valid record.
    pub valid_end: usize,
    /// Non-zero bytes after `valid_end` (a torn tail, when this is the end of the log).
    pub torn_tail_bytes: usize,
    /// Position one past the last non-zero byte after `valid_end` (for zeroing the tail).
    pub dirty_end: usize,
    /// Records that were read.
    pub records: u64,
    /// Queues named by damaged records that a valid record follows (damage, never a tail).
    pub damaged_queues: Vec<String>,
    /// The bad record the scan stopped at, if it did not stop at the end of the data: damage
    /// when a valid record follows anywhere later in the log, else part of the torn tail.
    pub stopped_at: Option<BadRecord>,
}

/// A record that failed to parse or decode and that nothing valid follows in its segment.
#[derive(Debug, Clone)]
pub(crate) struct BadRecord {
    /// Logical offset of its first byte.
    pub offset: u64,
    /// The queue its metadata names, when that part is readable.
    pub queue: Option<String>,
    pub reason: &'static str,
}

impl BadRecord {
    /// Logs this record as damage inside the durable region; returns the queue to quarantine.
    pub fn report_damage(&self) -> Option<String> {
        match &self.queue {
            Some(queue) => tracing::error!(
                offset = self.offset,
                %queue,
                reason = self.reason,
                "damaged record before the end of the log: the rest of its segment is unreadable, quarantining queue"
            ),
            None => tracing::error!(
                offset = self.offset,
                reason = self.reason,
                "damaged record before the end of the log names no readable queue: the rest of its segment is lost"
            ),
        }
        self.queue.clone()
    }
}

/// Walks the records of one segment mapped at `bytes`, whose first byte has logical offset
/// `base`, calling `sink(end_offset, record)` for each valid one. A bad record with a valid
/// one right after it is damage (`damaged_queues`); one with nothing valid after it ends the
/// scan (`stopped_at`), and the caller decides whether it is the log's torn tail.
/// Non-zero bytes after the last valid record are looked for within `tail_limit` bytes only
/// (the whole rest of the segment when the tail will be zeroed; a takeover only reports it).
/// The walk starts at byte `start` (past the header; a warm standby resumes where it stopped).
/// With `skip_damage` false the walk stops at the first bad record instead: a reader of a log
/// that is being written can see a record half-copied while the next one is already whole.
pub(crate) fn scan_segment(
    bytes: &[u8],
    base: Offset,
    start: usize,
    tail_limit: usize,
    skip_damage: bool,
    sink: &mut dyn FnMut(Offset, Record),
) -> SegmentScan {
    let mut scan = SegmentScan::default();
    let mut pos = start.max(SEGMENT_HEADER_SIZE).min(bytes.len());
    loop {
        match parse_record(bytes, pos, base.0 + pos as u64) {
            Parsed::End => break,
            Parsed::Valid { len, header, meta, body } => {
                match decode(header.kind, meta, body) {
                    Ok(record) => {
                        sink(Offset(base.0 + (pos + len) as u64), record);
                        scan.records += 1;
                    }
                    Err(reason) => note_damage(&mut scan, base, pos, Some(meta), &reason),
                }
                pos += len;
            }
            Parsed::Bad { len, meta, reason, .. } => {
                let resumes = len.filter(|&len| {
                    skip_damage
                        && matches!(parse_record(bytes, pos + len, base.0 + (pos + len) as u64), Parsed::Valid { .. })
                });
                if let Some(len) = resumes {
                    note_damage(&mut scan, base, pos, meta, reason);
                    pos += len;
                    continue;
                }
                let queue = meta.and_then(queue_of_damaged);
                scan.stopped_at = Some(BadRecord { offset: base.0 + pos as u64, queue, reason });
                break;
            }
        }
    }
    scan.valid_end = pos;
    let tail = &bytes[pos.min(bytes.len())..pos.saturating_add(tail_limit).min(bytes.len())];
    let nonzero = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    scan.torn_tail_bytes = nonzero;
    scan.dirty_end = pos + nonzero;
    scan
}

fn note_damage(scan: &mut SegmentScan, base: Offset, pos: usize, meta: Option<&[u8]>, reason: &str) {
    let offset = base.0 + pos as u64;
    match meta.and_then(queue_of_damaged) {
        Some(queue) => {
            tracing::error!(offset, %queue, reason, "damaged record inside the durable region: quarantining queue");
            scan.damaged_queues.push(queue);
        }
        None => tracing::error!(
            offset,
            reason,
            "damaged record inside the durable region names no readable queue: its contents are lost"
        ),
    }
}

/// Checks a segment's header against the base offset its file name gives. A bad header is
/// logged and the name is trusted: records carry their own offsets, so stale data still fails.
pub(crate) fn check_header(bytes: &[u8], base: Offset, path: &Path) -> Option<SegmentHeader> {
    match SegmentHeader::read_from(bytes) {
        Some(header) if header.base_offset == base.0 => Some(header),
        Some(header) => {
            tracing::error!(path = %path.display(), header_base = header.base_offset, "segment header disagrees with its file name");
            None
        }
        None => {
            if bytes.iter().take(SEGMENT_HEADER_SIZE).any(|&b| b != 0) {
                tracing::error!(path = %path.display(), "segment header is damaged");
            }
            None
        }
    }
}

/// Index of the last segment holding a valid record: bad records that end the scan of a
/// segment before it are damage; from it on they are the log's torn tail.
pub(crate) fn last_with_records<'a>(scans: impl IntoIterator<Item = &'a SegmentScan>) -> Option<usize> {
    scans.into_iter().enumerate().filter(|(_, scan)| scan.records > 0).map(|(i, _)| i).last()
}

/// Everything a shard directory holds, read-only: each valid record with its END offset (the
/// value `ShardLog::append` returned for it), in log order. A sealed epoch is read only up to
/// its seal and segments written after their epoch's seal are skipped. Damage is logged and
/// skipped; a torn tail (which may start in a segment before the last, if a crash came right
/// after a roll) is ignored. Does not modify any file.
pub fn replay(dir: &Path) -> Result<Vec<(Offset, Record)>, StorageError> {
    let seals = Seals::load(dir)?;
    let mut records = Vec::new();
    let mut scans = Vec::new();
    for file in list_segments(dir)? {
        let seal = seals.end_of(file.epoch);
        if seal.is_some_and(|end| file.base >= end) {
            continue;
        }
        let Some(map) = open_sealed(&RealIo, &file.path)? else {
            scans.push((true, SegmentScan::default()));
            continue;
        };
        // SAFETY: read-only mapping of `map.len()` bytes, alive for this loop iteration; we
        // never write it, and nobody truncates segment files.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
        check_header(bytes, file.base, &file.path);
        let limit = seal.map_or(bytes.len(), |end| usize::try_from(end.0 - file.base.0).unwrap_or(usize::MAX));
        let bytes = &bytes[..limit.min(bytes.len())];
        let scan =
            scan_segment(bytes, file.base, 0, usize::MAX, true, &mut |offset, record| records.push((offset, record)));
        scans.push((seal.is_some(), scan));
    }
    let end = last_with_records(scans.iter().map(|(_, scan)| scan)).unwrap_or(0);
    for (i, (sealed_epoch, scan)) in scans.iter().enumerate() {
        if let Some(bad) = scan.stopped_at.as_ref().filter(|_| *sealed_epoch || i < end) {
            bad.report_damage();
        }
    }
    Ok(records)
}
