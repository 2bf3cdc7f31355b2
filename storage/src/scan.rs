//! Reading a log back: `scan_segment` walks one segment's bytes record by record, telling a
//! proven-valid prefix from a torn tail and from damage inside the data; `replay` reads a
//! whole shard directory read-only. Used at open (blocking, on the shard thread) and by the
//! engine when it folds several shards' logs itself. Limits: it never writes; a record that
//! fails its checksum is only skipped when the claimed length leads to a valid record.

use std::path::Path;

use crate::codec::{decode, queue_of_damaged};
use crate::error::StorageError;
use crate::format::{Parsed, SEGMENT_HEADER_SIZE, SegmentHeader, parse_record};
use crate::segment::{list_segments, open_sealed};
use crate::{Offset, Record};

/// What scanning one segment found besides its records.
#[derive(Debug, Default)]
pub(crate) struct SegmentScan {
    /// Position (bytes from the file start) just after the last valid record.
    pub valid_end: usize,
    /// Non-zero bytes after `valid_end` in the last segment (a torn tail).
    pub torn_tail_bytes: usize,
    /// Position one past the last non-zero byte after `valid_end` (for zeroing the tail).
    pub dirty_end: usize,
    /// Records that were read.
    pub records: u64,
    /// Queues named by damaged records inside the proven-valid region.
    pub damaged_queues: Vec<String>,
}

/// Walks the records of one segment mapped at `bytes`, whose first byte has logical offset
/// `base`, calling `sink(end_offset, record)` for each valid one. In the last segment a bad
/// record with nothing valid after it is the torn tail; anywhere else it is damage.
pub(crate) fn scan_segment(
    bytes: &[u8],
    base: Offset,
    is_last: bool,
    sink: &mut dyn FnMut(Offset, Record),
) -> SegmentScan {
    let mut scan = SegmentScan::default();
    let mut pos = SEGMENT_HEADER_SIZE.min(bytes.len());
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
                    matches!(parse_record(bytes, pos + len, base.0 + (pos + len) as u64), Parsed::Valid { .. })
                });
                if let Some(len) = resumes {
                    note_damage(&mut scan, base, pos, meta, reason);
                    pos += len;
                    continue;
                }
                if !is_last {
                    note_damage(&mut scan, base, pos, meta, reason);
                    tracing::error!(
                        offset = base.0 + pos as u64,
                        "damaged record in a sealed segment: the rest of that segment is unreadable"
                    );
                }
                break;
            }
        }
    }
    scan.valid_end = pos;
    if is_last {
        let tail = &bytes[pos.min(bytes.len())..];
        let nonzero = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        scan.torn_tail_bytes = nonzero;
        scan.dirty_end = pos + nonzero;
    }
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

/// Everything a shard directory holds, read-only: each valid record with its END offset (the
/// value `ShardLog::append` returned for it), in log order. Damage is logged and skipped; a
/// torn tail is ignored. Does not modify any file.
pub fn replay(dir: &Path) -> Result<Vec<(Offset, Record)>, StorageError> {
    let segments = list_segments(dir)?;
    let mut records = Vec::new();
    for (i, (base, path)) in segments.iter().enumerate() {
        let Some(map) = open_sealed(path)? else {
            continue;
        };
        // SAFETY: read-only mapping of `map.len()` bytes, alive for this loop iteration; we
        // never write it, and nobody truncates segment files.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
        check_header(bytes, *base, path);
        let is_last = i + 1 == segments.len();
        scan_segment(bytes, *base, is_last, &mut |offset, record| records.push((offset, record)));
    }
    Ok(records)
}
