//! Reading a log back: `scan_segment` walks one segment's bytes record by record, telling a
//! proven-valid prefix from damage inside the data and from what may be a torn tail (a tail
//! can start before the last segment: a crash right after a roll leaves the previous segment
//! torn and the new one empty); `replay` reads a whole shard directory read-only. Used at
//! open (blocking, on the shard thread) and by the engine when it folds several shards' logs
//! itself. Limits: it never writes; bad bytes are only skipped when the claimed length leads
//! to a valid record, or when a later valid record's synced mark shows they were synced (then
//! every aligned position up to the end of the data may be tried, once per damaged region).

use std::path::Path;

use memmap2::MmapRaw;

use crate::codec::{decode, queues_of_damaged};
use crate::error::StorageError;
use crate::format::{
    Parsed, RECORD_ALIGN, RecordHeader, SEGMENT_HEADER_SIZE, SegmentHeader, meta_by_its_length, parse_record,
    record_shaped, segment_salt,
};
use crate::io::RealIo;
use crate::seals::Seals;
use crate::segment::{SegmentFile, data_end_of, list_segments, open_sealed, readable};
use crate::{Epoch, Offset, Record};

/// What scanning one segment found besides its records.
#[derive(Debug, Default)]
pub(crate) struct SegmentScan {
    /// Position (bytes from the file start) just after the last valid record.
    pub valid_end: usize,
    /// Non-zero bytes after `valid_end` (a torn tail, when this is the end of the log).
    pub torn_tail_bytes: usize,
    /// Position one past the last non-zero byte after `valid_end` within the tail probe (for
    /// zeroing the tail).
    pub dirty_end: usize,
    /// Position one past the last non-zero byte after `valid_end` in the whole segment, when
    /// the scan read on after damage (else as far as the probe).
    pub data_end: usize,
    /// Records that were read.
    pub records: u64,
    /// Queues named by damaged records that a valid record follows (damage, never a tail).
    pub damaged_queues: Vec<String>,
    /// The bad record the scan stopped at, if it did not stop at the end of the data: damage
    /// when a valid record follows anywhere later in the log, else part of the torn tail.
    pub stopped_at: Option<BadRecord>,
    /// The queues that record-shaped headers name in a segment nothing could be checked in
    /// (its header unreadable, and no record to confirm a salt). Before the last segment with
    /// records such a segment is damage (kept, these quarantined); from there on, like any
    /// bytes nothing shows were synced, a torn tail (a power loss can leave a fresh segment's
    /// first page unwritten).
    pub unchecked_queues: Vec<String>,
    /// The scan read on past damage that only a synced mark showed to be synced.
    pub proved_damage: bool,
    /// Where the first valid record after the bad bytes the scan stopped at lies, when nothing
    /// showed those bytes were synced and so it was not read. A reopen zeroes from there if it
    /// keeps the bad bytes as damage: the writer's next marks would otherwise make a later
    /// start read records this one went on without.
    pub unread_from: Option<usize>,
}

/// A record that failed to parse or decode and that nothing valid follows in its segment.
#[derive(Debug, Clone)]
pub(crate) struct BadRecord {
    /// Logical offset of its first byte.
    pub offset: u64,
    /// The queues its metadata names, when that part is readable.
    pub queues: Vec<String>,
    pub reason: &'static str,
}

impl BadRecord {
    /// Logs this record as damage inside the durable region; returns the queues to quarantine.
    pub fn report_damage(&self) -> Vec<String> {
        for queue in &self.queues {
            tracing::error!(
                offset = self.offset,
                %queue,
                reason = self.reason,
                "damaged record before the end of the log: the rest of its segment is unreadable, quarantining queue"
            );
        }
        if self.queues.is_empty() {
            tracing::error!(
                offset = self.offset,
                reason = self.reason,
                "damaged record before the end of the log names no readable queue: the rest of its segment is lost"
            );
        }
        self.queues.clone()
    }
}

/// What a scan does at bad bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDamage {
    /// Stops: a reader of a log that is being written can see a record half-copied while the
    /// next one is already whole.
    Stop,
    /// Reads on after bytes shown to be damage (see [`Search::resume_after`]). `synced` is a log offset
    /// the caller knows was synced (from a later segment's records; 0 when it knows none): bad
    /// bytes below it are damage without further proof.
    Skip { synced: u64 },
}

/// Walks the records of one segment mapped at `bytes`, whose first byte has logical offset
/// `base`, calling `sink(end_offset, record)` for each valid one. Bad bytes that what follows
/// them shows to be damage (see [`Search::resume_after`]) are logged, the queues their metadata (and
/// that of any record-shaped header among them) names are counted in `damaged_queues`, and the
/// walk goes on after them. Other bad bytes end the scan (`stopped_at`, unless they are zeros),
/// and the caller decides whether they are the log's torn tail. Non-zero bytes after the last
/// valid record are looked for within `tail_limit` bytes only (the whole rest of the segment
/// when the tail will be zeroed; a takeover only reports it); the next valid record after bad
/// bytes or zeros is looked for up to the end of `bytes`. The walk starts at byte `start` (past the header; a warm standby
/// resumes where it stopped). With [`OnDamage::Stop`] it stops at the first bad record.
pub(crate) fn scan_segment(
    bytes: &[u8],
    base: Offset,
    start: usize,
    tail_limit: usize,
    on_damage: OnDamage,
    sink: &mut dyn FnMut(Offset, Record),
) -> SegmentScan {
    let mut scan = SegmentScan::default();
    let mut pos = start.max(SEGMENT_HEADER_SIZE).min(bytes.len());
    let Some(salt) = segment_salt(bytes, base.0) else {
        // Header unreadable and no record to learn the salt from: nothing here can be checked.
        scan.dirty_end = pos + nonzero_len(&bytes[pos..pos.saturating_add(tail_limit).min(bytes.len())]);
        scan.torn_tail_bytes = scan.dirty_end - pos;
        scan.valid_end = pos;
        scan.data_end = pos + nonzero_len(&bytes[pos..]);
        if scan.data_end > pos && on_damage != OnDamage::Stop {
            let reason = "segment header and first records unreadable";
            tracing::error!(offset = base.0 + pos as u64, reason, "no record of this segment can be verified");
            scan.stopped_at = Some(BadRecord { offset: base.0 + pos as u64, queues: Vec::new(), reason });
            // Should it be damage, its settles are lost with the rest: the queues it names must
            // not be served short. Whether it is, or a torn tail, is the caller's to decide.
            name_queues_among(bytes, base, pos..bytes.len(), &mut scan.unchecked_queues);
        }
        return scan;
    };
    let mut search = Search::new(bytes, base, salt, if let OnDamage::Skip { synced } = on_damage { synced } else { 0 });
    loop {
        let (len, meta, reason) = match parse_record(bytes, pos, base.0 + pos as u64, salt) {
            Parsed::Valid { len, header, meta, body } => {
                search.saw(&header);
                match decode(header.kind, meta, body) {
                    Ok(record) => {
                        sink(Offset(base.0 + (pos + len) as u64), record);
                        scan.records += 1;
                    }
                    Err(reason) => note_damage(&mut scan, base, pos, Some(meta), &reason),
                }
                pos += len;
                continue;
            }
            Parsed::End => (None, None, ZEROED),
            Parsed::Bad { len, meta, reason } => (len, meta, reason),
        };
        // Where the non-zero bytes after `pos` end: all of the rest when reading on after damage
        // (the next record may be anywhere), only the probe otherwise. One pass, when needed.
        let data_end = std::cell::OnceCell::new();
        let end = || {
            let limit =
                if on_damage == OnDamage::Stop { pos.saturating_add(tail_limit).min(bytes.len()) } else { bytes.len() };
            *data_end.get_or_init(|| pos + nonzero_len(&bytes[pos..limit]))
        };
        let after = match on_damage {
            OnDamage::Stop => After::Nothing,
            OnDamage::Skip { .. } => search.resume_after(pos, len, &end),
        };
        if let After::Unproven(first) = after {
            scan.unread_from = Some(first);
        }
        if let After::Resume(next) = after {
            let meta = meta.or_else(|| meta_by_its_length(bytes, pos, next));
            note_damage(&mut scan, base, pos, meta, reason);
            if next != pos + len.unwrap_or(0) {
                tracing::error!(
                    offset = base.0 + pos as u64,
                    bytes = next - pos,
                    reason,
                    "unreadable bytes inside the synced region (a later record says they were synced): reading on after them"
                );
                name_queues_among(bytes, base, pos + RECORD_ALIGN..next, &mut scan.damaged_queues);
                scan.proved_damage = true;
            }
            pos = next;
            continue;
        }
        if reason != ZEROED {
            let queues = meta.or_else(|| meta_by_its_length(bytes, pos, end())).map(queues_of_damaged);
            scan.stopped_at =
                Some(BadRecord { offset: base.0 + pos as u64, queues: queues.unwrap_or_default(), reason });
        }
        scan.valid_end = pos;
        scan.data_end = end();
        scan.dirty_end = pos + nonzero_len(&bytes[pos..pos.saturating_add(tail_limit).min(scan.data_end)]);
        scan.torn_tail_bytes = scan.dirty_end - pos;
        return scan;
    }
}

/// `parse_record`'s "no record here" as a damage reason: zeros where a record should be.
const ZEROED: &str = "zeroed bytes where a record should be";

/// Bytes up to and including the last non-zero one of `bytes`. Compares 64 bytes at a time
/// from the end: a takeover runs it over the preallocated rest of the old writer's segment.
fn nonzero_len(bytes: &[u8]) -> usize {
    const BLOCK: usize = 64;
    let whole = bytes.len() - bytes.len() % BLOCK;
    if let Some(i) = bytes[whole..].iter().rposition(|&b| b != 0) {
        return whole + i + 1;
    }
    let last = bytes[..whole].chunks_exact(BLOCK).rposition(|block| block != [0u8; BLOCK]);
    last.map_or(0, |block| {
        let start = block * BLOCK;
        start + bytes[start..start + BLOCK].iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
    })
}

/// Adds to `queues` every queue named by a record-shaped header in `range` of
/// skipped bytes (its checksum is not checked: the bytes are damaged anyway), so that the
/// queues that lost records there are quarantined rather than served short. Each name is
/// counted once, and the metadata looked at is bounded by twice the range (plus 1 MiB):
/// headers crafted to share one huge archived name cannot make it cost their product.
fn name_queues_among(bytes: &[u8], base: Offset, range: std::ops::Range<usize>, queues: &mut Vec<String>) {
    let mut budget = 2 * range.len() + (1 << 20);
    let mut named: std::collections::HashSet<String> = queues.iter().cloned().collect();
    for at in range.step_by(RECORD_ALIGN) {
        let Some((_, meta)) = record_shaped(bytes, at, base.0 + at as u64) else { continue };
        let Some(left) = budget.checked_sub(meta.len()) else {
            tracing::warn!(
                offset = base.0 + at as u64,
                "stopped naming the queues of unreadable records: too many record-shaped bytes"
            );
            return;
        };
        budget = left;
        for queue in queues_of_damaged(meta).into_iter().filter(|queue| named.insert(queue.clone())) {
            tracing::error!(offset = base.0 + at as u64, %queue, "a record among the unreadable bytes names this queue: quarantining it");
            queues.push(queue);
        }
    }
}

/// Looking past damage in one segment: the evidence gathered so far and the work left.
/// Every checksum computed while hunting for records among unknown bytes is charged to one
/// budget per segment scan (twice the segment, plus 1 MiB), so that bytes shaped like record
/// headers (a message body can hold them) cannot make opening quadratic; spent, the search
/// finds nothing more and damage is taken for a torn tail, as it would be without it. The
/// highest synced mark seen (`proven`) is kept, so that scattered damage under one mark is
/// proven once, not walked to that mark again for each region.
struct Search<'a> {
    bytes: &'a [u8],
    base: Offset,
    salt: u32,
    /// Checksum bytes left; `None` once spent.
    budget: Option<usize>,
    /// Everything below this log offset is known synced (from marks, or from the caller).
    proven: u64,
    /// How far walks for proof have read: the marks of the records before it are all in
    /// `proven` already, so a later walk starts here rather than reading them again.
    walked_to: usize,
}

impl<'a> Search<'a> {
    fn new(bytes: &'a [u8], base: Offset, salt: u32, synced: u64) -> Search<'a> {
        Search { bytes, base, salt, budget: Some(2 * bytes.len() + (1 << 20)), proven: synced, walked_to: 0 }
    }

    /// Takes note of a valid record's mark.
    fn saw(&mut self, header: &RecordHeader) {
        if let Some(durable) = header.synced.durable_before(header.offset) {
            self.proven = self.proven.max(durable);
        }
    }

    /// The length and header of the valid record at `at`, if there is one and budget is left.
    fn valid_at(&mut self, at: usize) -> Option<(usize, RecordHeader)> {
        let offset = self.base.0 + at as u64;
        let (claimed, _) = record_shaped(self.bytes, at, offset)?;
        self.budget = self.budget?.checked_sub(claimed);
        if self.budget.is_none() {
            tracing::warn!(offset, "gave up looking for a valid record after damage: too many record-shaped bytes");
            return None;
        }
        match parse_record(self.bytes, at, offset, self.salt) {
            Parsed::Valid { len, header, .. } => Some((len, header)),
            _ => None,
        }
    }

    /// The first valid record at an aligned position in `from..end`.
    fn next_valid(&mut self, from: usize, end: usize) -> Option<(usize, usize, RecordHeader)> {
        for at in (from..end).step_by(RECORD_ALIGN) {
            if let Some((len, header)) = self.valid_at(at) {
                return Some((at, len, header));
            }
            self.budget?;
        }
        None
    }

    /// Where a scan that met bad bytes at `pos` (with claimed length `len`) goes on, when
    /// they are damage rather than a torn tail:
    /// - At the claimed length, when a valid record starts there (the bad record's body or
    ///   checksum damaged, its header whole). This needs no proof that it was synced: taking
    ///   damage in the last synced batch for a torn tail would zero confirmed records, and a
    ///   torn tail taken for damage only quarantines a queue. Unless a whole disk sector
    ///   inside the bad record reads as zeros in a salted segment: that is what a power loss
    ///   leaves of a long record whose first and last sectors reached the disk but not one
    ///   between, so then the claimed record needs the proof below like any other.
    /// - Else (a garbled header, or zeros where a record should be, with data after them) at
    ///   the first valid record before `end()` (the end of the non-zero bytes), but only if
    ///   what is known (`proven`) or some valid record from there on carries a
    ///   [`crate::format::SyncedMark`] covering the bad bytes. A torn tail is never covered:
    ///   the record carrying the mark was written after a sync that covered them completed.
    ///   Every aligned position is tried; the segment's salt keeps a message body shaped like
    ///   a record from passing, so an unsalted (version 1) segment is never searched.
    fn resume_after(&mut self, pos: usize, len: Option<usize>, end: &dyn Fn() -> usize) -> After {
        let (bytes, base, salt) = (self.bytes, self.base, self.salt);
        let bad_at = base.0 + pos as u64;
        let claimed = len.map(|len| pos + len);
        let valid = |&at: &usize| matches!(parse_record(bytes, at, base.0 + at as u64, salt), Parsed::Valid { .. });
        if let Some(at) = claimed.filter(valid)
            && (salt == 0 || self.proven > bad_at || !holds_lost_sector(&bytes[pos..at], pos))
        {
            return After::Resume(at);
        }
        if salt == 0 {
            return After::Nothing;
        }
        let end = end();
        let Some((first, len, header)) = self.next_valid(pos + RECORD_ALIGN, end) else {
            return After::Nothing;
        };
        self.saw(&header);
        let mut at = (first + len).max(self.walked_to);
        while self.proven <= bad_at {
            let next = match self.valid_at(at) {
                Some((len, header)) => Some((at, len, header)),
                None => self.next_valid(at + RECORD_ALIGN, end),
            };
            let Some((found, len, header)) = next else {
                self.walked_to = self.walked_to.max(end);
                return After::Unproven(first);
            };
            self.saw(&header);
            at = found + len;
            self.walked_to = self.walked_to.max(at);
        }
        After::Resume(first)
    }
}

/// Bytes of a disk sector: the smallest unit a power loss can leave unwritten.
const SECTOR_BYTES: usize = 512;

/// Whether `range`, which starts at byte `at` of its segment file, holds a whole sector of
/// zeros: one that never reached the disk (segments are preallocated, so unwritten sectors
/// read as zeros).
fn holds_lost_sector(range: &[u8], at: usize) -> bool {
    let first = at.next_multiple_of(SECTOR_BYTES) - at;
    range.get(first..).is_some_and(|rest| rest.chunks_exact(SECTOR_BYTES).any(|s| s.iter().all(|&b| b == 0)))
}

/// What [`Search::resume_after`] found after bad bytes.
enum After {
    /// Damage: read on at this position.
    Resume(usize),
    /// A valid record at this position, but nothing shows the bad bytes before it were synced.
    Unproven(usize),
    /// No valid record.
    Nothing,
}

fn note_damage(scan: &mut SegmentScan, base: Offset, pos: usize, meta: Option<&[u8]>, reason: &str) {
    let offset = base.0 + pos as u64;
    let queues = meta.map(queues_of_damaged).unwrap_or_default();
    if queues.is_empty() {
        tracing::error!(
            offset,
            reason,
            "damaged record inside the durable region names no readable queue: its contents are lost"
        );
    }
    for queue in queues {
        tracing::error!(offset, %queue, reason, "damaged record inside the durable region: quarantining queue");
        scan.damaged_queues.push(queue);
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

/// Maps a segment file read-only; `None` when it is empty (or, for a standby, gone).
pub(crate) type MapSegment<'a> = &'a dyn Fn(&SegmentFile) -> Result<Option<MmapRaw>, StorageError>;

/// The segments after the one being scanned, for [`scan_reading_on`] to look ahead into.
pub(crate) struct Later<'a, I> {
    pub map: MapSegment<'a>,
    pub seals: &'a Seals,
    pub files: I,
    /// The epoch of the segment whose bad bytes are in question: only its own writer's marks
    /// say anything about them. A newer epoch's writer starts out durable at the seal, which
    /// covers whatever the takeover left in the old segments, proven or not.
    pub epoch: Epoch,
}

/// [`scan_segment`], reading on after damage, over a segment followed by the `later` ones.
/// When the scan stops before non-zero bytes with nothing in this segment to show they were
/// synced (the damage is at its end), the first records of the later segments may show it: then
/// the scan reads on past them, still in log order, since nothing of `later` is folded yet.
pub(crate) fn scan_reading_on<'a>(
    bytes: &[u8],
    base: Offset,
    start: usize,
    tail_limit: usize,
    later: Later<'a, impl Iterator<Item = &'a SegmentFile> + Clone>,
    sink: &mut dyn FnMut(Offset, Record),
) -> Result<SegmentScan, StorageError> {
    // What an epoch's seal covers was synced: the writer that sealed it had synced every file
    // of that epoch it read, so bad bytes below the seal are damage wherever they lie.
    let sealed = later.seals.end_of(later.epoch).map_or(0, |end| end.0);
    let mut scan = scan_segment(bytes, base, start, tail_limit, OnDamage::Skip { synced: sealed }, sink);
    while scan.data_end > scan.valid_end {
        let bad_at = base.0 + scan.valid_end as u64;
        let Some(synced) = later_mark_above(&later, bad_at)? else { break };
        let mut more = scan_segment(bytes, base, scan.valid_end, tail_limit, OnDamage::Skip { synced }, sink);
        if more.valid_end == scan.valid_end {
            break;
        }
        let damaged_queues =
            [std::mem::take(&mut scan.damaged_queues), std::mem::take(&mut more.damaged_queues)].concat();
        let proved_damage = scan.proved_damage || more.proved_damage;
        scan = SegmentScan { records: scan.records + more.records, damaged_queues, proved_damage, ..more };
    }
    Ok(scan)
}

/// The highest synced mark of the first segment of `later` (same epoch only) whose records
/// carry one above `bad_at`, read in order. It stops at an unsalted (version 1) segment, whose
/// records carry no marks, and at the first segment of another epoch. Marks only grow along
/// the log, and without a mark above `bad_at` nothing after `bad_at` was synced, so what it
/// reads is one unsynced batch at most (plus, when syncs lagged more than 128 MiB behind, the
/// unmarked records written meanwhile), and the segment holding the proof.
pub(crate) fn later_mark_above<'a>(
    later: &Later<'a, impl Iterator<Item = &'a SegmentFile> + Clone>,
    bad_at: u64,
) -> Result<Option<u64>, StorageError> {
    for file in later.files.clone().take_while(|file| file.epoch == later.epoch) {
        let Some(map) = (later.map)(file)? else { continue };
        let bytes = readable(&map, file, later.seals);
        let Some(salt) = segment_salt(bytes, file.base.0) else { continue };
        if salt == 0 {
            return Ok(None); // Version 1: no marks.
        }
        // Every valid record of the segment, read on past bad ones (a torn record of the same
        // batch can sit before the one that carries the proof). Once a mark proves `bad_at`,
        // the rest of this segment is read for a higher one: a caller that meets more damage
        // further on then needs no second look.
        let mut search = Search::new(bytes, file.base, salt, 0);
        let mut pos = SEGMENT_HEADER_SIZE;
        loop {
            let found = match parse_record(bytes, pos, file.base.0 + pos as u64, salt) {
                Parsed::Valid { len, header, .. } => Some((pos, len, header)),
                _ => search.next_valid(pos + RECORD_ALIGN, bytes.len()),
            };
            let Some((at, len, header)) = found else { break };
            search.saw(&header);
            pos = at + len;
        }
        if search.proven > bad_at {
            return Ok(Some(search.proven));
        }
    }
    Ok(None)
}

/// Index of the last segment holding a valid record: bad records that end the scan of a
/// segment before it are damage; from it on they are the log's torn tail.
pub(crate) fn last_with_records<'a>(scans: impl IntoIterator<Item = &'a SegmentScan>) -> Option<usize> {
    scans.into_iter().enumerate().filter(|(_, scan)| scan.records > 0).map(|(i, _)| i).last()
}

/// Reports what stopped a segment's scan as damage; returns the queues to quarantine: those
/// the bad record names, and, for a segment nothing could be checked in, all its headers name.
pub(crate) fn damage_of(scan: &SegmentScan) -> Vec<String> {
    let named = scan.stopped_at.as_ref().map(BadRecord::report_damage).unwrap_or_default();
    named.into_iter().chain(scan.unchecked_queues.iter().cloned()).collect()
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
    let files: Vec<SegmentFile> = list_segments(dir)?
        .into_iter()
        .filter(|file| seals.end_of(file.epoch).is_none_or(|end| file.base < end))
        .collect();
    for (i, file) in files.iter().enumerate() {
        let seal = seals.end_of(file.epoch);
        let Some(map) = open_sealed(&RealIo, &file.path)? else {
            scans.push((true, SegmentScan::default()));
            continue;
        };
        let bytes = readable(&map, file, &seals);
        check_header(bytes, file.base, &file.path);
        let bytes = &bytes[..data_end_of(&file.path).min(bytes.len())];
        let map = |file: &SegmentFile| open_sealed(&RealIo, &file.path);
        let later = Later { map: &map, seals: &seals, files: files[i + 1..].iter(), epoch: file.epoch };
        let scan = scan_reading_on(bytes, file.base, 0, usize::MAX, later, &mut |offset, record| {
            records.push((offset, record));
        })?;
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

#[cfg(test)]
mod tests {
    use rkyv::util::AlignedVec;

    use super::*;
    use crate::codec::encode_meta;
    use crate::format::{Stamp, record_len, write_record};

    /// Writes `record` at `pos` of a segment based at 0, as if the log had been durable up to
    /// `durable`, checksummed with `salt`; returns its length.
    fn put(segment: &mut [u8], pos: usize, record: &Record, durable: u64, salt: u32) -> usize {
        let meta = encode_meta(record, AlignedVec::new()).expect("encode");
        let len = record_len(meta.len(), record.body().len());
        let stamp = Stamp { kind: record.kind() as u8, epoch: 1, offset: pos as u64, durable, salt };
        write_record(&mut segment[pos..pos + len], stamp, &meta, record.body());
        len
    }

    #[test]
    fn only_a_record_checksummed_with_the_segment_salt_shows_bad_bytes_were_synced() {
        const SALT: u32 = 0x5EED_0001;
        let declare = Record::QueueDeclare { name: "q".into(), durable: true, auto_delete: false, arguments: vec![] };
        let scan_with = |later_salt: u32| {
            let mut segment = vec![0u8; 4096];
            SegmentHeader::new(1, 0, 0, 4096, SALT).write_to(&mut segment);
            let bad_at = SEGMENT_HEADER_SIZE + put(&mut segment, SEGMENT_HEADER_SIZE, &declare, 48, SALT);
            segment[bad_at..bad_at + 16].fill(0xEE);
            // Shaped like a record written after a sync that covered the garbled one: what a
            // message body could hold, but for the salt.
            let later = bad_at + 64;
            put(&mut segment, later, &declare, later as u64, later_salt);
            let mut records = 0;
            let skip = OnDamage::Skip { synced: 0 };
            let scan = scan_segment(&segment, Offset(0), 0, usize::MAX, skip, &mut |_, _| records += 1);
            (records, scan.valid_end == bad_at && scan.stopped_at.is_some())
        };
        assert_eq!(scan_with(SALT), (2, false), "the segment's own record: damage, read on after it");
        assert_eq!(scan_with(0), (1, true), "an unsalted look-alike: a torn tail");
        assert_eq!(scan_with(SALT ^ 1), (1, true), "another salt: a torn tail");
    }

    /// A segment based at 0 and salted with `salt`: a declare, then 16 garbled bytes at the
    /// returned position `bad_at`.
    fn segment_with_garbled_record(size: usize, salt: u32) -> (Vec<u8>, usize) {
        let declare = Record::QueueDeclare { name: "q".into(), durable: true, auto_delete: false, arguments: vec![] };
        let mut segment = vec![0u8; size];
        SegmentHeader::new(1, 0, 0, size as u32, salt).write_to(&mut segment);
        let bad_at = SEGMENT_HEADER_SIZE + put(&mut segment, SEGMENT_HEADER_SIZE, &declare, 48, salt);
        segment[bad_at..bad_at + 16].fill(0xEE);
        (segment, bad_at)
    }

    fn records_read(segment: &[u8]) -> u64 {
        scan_segment(segment, Offset(0), 0, usize::MAX, OnDamage::Skip { synced: 0 }, &mut |_, _| {}).records
    }

    #[test]
    fn nonzero_len_finds_the_last_non_zero_byte() {
        for len in [0, 1, 63, 64, 65, 200] {
            assert_eq!(nonzero_len(&vec![0; len]), 0);
            for at in 0..len {
                let mut bytes = vec![0; len];
                bytes[at] = 1;
                assert_eq!(nonzero_len(&bytes), at + 1, "len {len}, byte {at}");
                bytes[0] = 9;
                assert_eq!(nonzero_len(&bytes), at + 1, "len {len}, byte {at} and 0");
            }
        }
    }

    #[test]
    fn an_unsalted_segment_is_never_searched_past_a_garbled_record() {
        // Version 1 (salt 0): any message body could pass for a record, marks or not.
        let declare = Record::QueueDeclare { name: "q".into(), durable: true, auto_delete: false, arguments: vec![] };
        let (mut segment, bad_at) = segment_with_garbled_record(4096, 0);
        put(&mut segment, bad_at + 64, &declare, (bad_at + 64) as u64, 0);
        assert_eq!(records_read(&segment), 1);
    }

    #[test]
    fn a_search_through_record_shaped_bytes_gives_up_within_its_budget() {
        // Headers with the right magic and offset, claiming nearly the whole rest of the
        // segment, one after another: each would cost a checksum over megabytes. The search stops
        // once it has spent twice the bytes it searches (plus 1 MiB), before the valid record
        // (with a mark covering the garbled one) that it would otherwise reach.
        const SALT: u32 = 7;
        let size = 4 << 20;
        let declare = Record::QueueDeclare { name: "q".into(), durable: true, auto_delete: false, arguments: vec![] };
        let (mut segment, bad_at) = segment_with_garbled_record(size, SALT);
        let valid_at = size - 4096;
        for at in (bad_at + 16..bad_at + 16 + 64 * 40).step_by(40) {
            let len = (valid_at - at) as u32 & !7;
            segment[at..at + 4].copy_from_slice(b"FRec");
            segment[at + 8..at + 12].copy_from_slice(&len.to_le_bytes());
            segment[at + 20..at + 24].copy_from_slice(&(len - 40).to_le_bytes());
            segment[at + 32..at + 40].copy_from_slice(&(at as u64).to_le_bytes());
        }
        put(&mut segment, valid_at, &declare, valid_at as u64, SALT);
        assert_eq!(records_read(&segment), 1, "gave up: taken for a torn tail");
        let (mut few, bad_at) = segment_with_garbled_record(size, SALT);
        put(&mut few, valid_at, &declare, valid_at as u64, SALT);
        assert_eq!(records_read(&few), 2, "without the look-alikes the search finds it");
        assert!(bad_at < valid_at);
    }
}
