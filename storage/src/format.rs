//! The on-disk byte layout: `SegmentHeader` (first bytes of every segment file) and
//! `RecordHeader` (before every record), plus the functions that write a record into a byte
//! slice and parse one back. Pure functions over slices, no I/O; used on the shard thread and
//! by recovery. Limits: a record's total length fits a `u32`; records start 8-byte aligned.
//! All integers are little-endian.

/// `"FRec"`: first four bytes of every record. Zero means "no record here" (fresh space).
pub(crate) const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"FRec");
/// `"FERRYSEG"`: first eight bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"FERRYSEG");
/// Bumped on any incompatible layout change. Version 2 salts record checksums (see
/// [`SegmentHeader::salt`]); version 1 segments (salt 0) are still read.
pub(crate) const SEGMENT_VERSION: u32 = 2;
/// The oldest segment version this code reads.
const SEGMENT_VERSION_MIN: u32 = 1;
/// Records (and so the rkyv metadata after each header) start at multiples of this.
pub(crate) const RECORD_ALIGN: usize = 8;
/// Size of `RecordHeader` on disk.
pub(crate) const RECORD_HEADER_SIZE: usize = 40;
/// Size of `SegmentHeader` on disk; the first record starts right after it.
pub(crate) const SEGMENT_HEADER_SIZE: usize = 48;

/// Rounds `len` up to `RECORD_ALIGN`.
pub(crate) const fn align_up(len: usize) -> usize {
    (len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Total bytes a record with these metadata and body lengths takes, padding included.
pub(crate) const fn record_len(meta_len: usize, body_len: usize) -> usize {
    RECORD_HEADER_SIZE + align_up(meta_len) + align_up(body_len)
}

/// Fixed header before every record. `crc` is CRC32C of the record's bytes `[8, len)`: the
/// rest of this header, the metadata, the body and the padding, seeded with the segment's
/// salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct RecordHeader {
    pub magic: u32,
    pub crc: u32,
    /// Whole record, header and padding included; a multiple of `RECORD_ALIGN`.
    pub len: u32,
    pub kind: u8,
    /// How far back the log was durable when this record was written: see [`SyncedMark`].
    pub synced: SyncedMark,
    pub meta_len: u32,
    pub body_len: u32,
    pub epoch: u64,
    /// Logical log offset of the record's first byte.
    pub offset: u64,
}
const _: () = assert!(size_of::<RecordHeader>() == RECORD_HEADER_SIZE);
const _: () = assert!(RECORD_HEADER_SIZE.is_multiple_of(RECORD_ALIGN));

impl RecordHeader {
    fn write_to(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.magic.to_le_bytes());
        out[4..8].copy_from_slice(&self.crc.to_le_bytes());
        out[8..12].copy_from_slice(&self.len.to_le_bytes());
        out[12] = self.kind;
        out[13..16].copy_from_slice(&self.synced.0);
        out[16..20].copy_from_slice(&self.meta_len.to_le_bytes());
        out[20..24].copy_from_slice(&self.body_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        out[32..40].copy_from_slice(&self.offset.to_le_bytes());
    }

    fn read_from(bytes: &[u8]) -> RecordHeader {
        RecordHeader {
            magic: le_u32(bytes, 0),
            crc: le_u32(bytes, 4),
            len: le_u32(bytes, 8),
            kind: bytes[12],
            synced: SyncedMark([bytes[13], bytes[14], bytes[15]]),
            meta_len: le_u32(bytes, 16),
            body_len: le_u32(bytes, 20),
            epoch: le_u64(bytes, 24),
            offset: le_u64(bytes, 32),
        }
    }
}

/// A record's note of the log's durable offset when it was written, in the 24 bits the header
/// has for it: zero when unknown (version 1 records, or more than 128 MiB behind), else one
/// more than the distance back from the record's own offset in `RECORD_ALIGN` units.
/// Recovery reads it as evidence: a bad record that a later valid record's mark covers lies
/// inside the synced region, so it is damage, never a torn tail, and what follows it is kept.
/// It costs no write and no sync: the next record carries it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SyncedMark(pub [u8; 3]);

impl SyncedMark {
    const UNITS_MAX: u64 = (1 << 24) - 1;

    /// The mark of a record at `offset` written while the log was durable up to `durable`.
    /// Rounds the durable offset down, so the mark never claims more than was synced.
    pub fn new(offset: u64, durable: u64) -> SyncedMark {
        let units = offset.saturating_sub(durable).div_ceil(RECORD_ALIGN as u64) + 1;
        if units > Self::UNITS_MAX {
            return SyncedMark::default();
        }
        let bytes = (units as u32).to_le_bytes();
        SyncedMark([bytes[0], bytes[1], bytes[2]])
    }

    /// The log offset below which everything was synced before the record at `offset` was
    /// written, when the mark says.
    pub fn durable_before(self, offset: u64) -> Option<u64> {
        let units = u64::from(u32::from_le_bytes([self.0[0], self.0[1], self.0[2], 0]));
        let back = units.checked_sub(1)? * RECORD_ALIGN as u64;
        offset.checked_sub(back)
    }
}

/// First bytes of every segment file. `crc` is CRC32C of bytes `[0, 44)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct SegmentHeader {
    pub magic: u64,
    pub version: u32,
    /// Seeds the checksum of every record in the segment; random for each new segment, zero in
    /// version 1. A message body that holds bytes shaped like a record cannot match it, so
    /// recovery may look past damage for the next record without being fooled by one.
    pub salt: u32,
    pub epoch: u64,
    pub base_offset: u64,
    pub segment_id: u64,
    pub size_bytes: u32,
    pub crc: u32,
}
const _: () = assert!(size_of::<SegmentHeader>() == SEGMENT_HEADER_SIZE);
const _: () = assert!(SEGMENT_HEADER_SIZE.is_multiple_of(RECORD_ALIGN));

impl SegmentHeader {
    /// A header for a fresh segment (crc filled in by `write_to`).
    pub fn new(epoch: u64, base_offset: u64, segment_id: u64, size_bytes: u32, salt: u32) -> Self {
        SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: SEGMENT_VERSION,
            salt,
            epoch,
            base_offset,
            segment_id,
            size_bytes,
            crc: 0,
        }
    }

    /// Writes the header with its checksum into `out[..SEGMENT_HEADER_SIZE]`.
    pub fn write_to(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.magic.to_le_bytes());
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&self.salt.to_le_bytes());
        out[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        out[24..32].copy_from_slice(&self.base_offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.segment_id.to_le_bytes());
        out[40..44].copy_from_slice(&self.size_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..44]);
        out[44..48].copy_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(SegmentHeader::read_from(out).map(|h| h.crc), Some(crc));
    }

    /// Parses and validates (magic, version, checksum) a segment header.
    pub fn read_from(bytes: &[u8]) -> Option<SegmentHeader> {
        if bytes.len() < SEGMENT_HEADER_SIZE {
            return None;
        }
        let header = SegmentHeader {
            magic: le_u64(bytes, 0),
            version: le_u32(bytes, 8),
            salt: le_u32(bytes, 12),
            epoch: le_u64(bytes, 16),
            base_offset: le_u64(bytes, 24),
            segment_id: le_u64(bytes, 32),
            size_bytes: le_u32(bytes, 40),
            crc: le_u32(bytes, 44),
        };
        let valid = header.magic == SEGMENT_MAGIC
            && (SEGMENT_VERSION_MIN..=SEGMENT_VERSION).contains(&header.version)
            && (header.version > 1 || header.salt == 0)
            && header.crc == crc32c::crc32c(&bytes[0..44]);
        valid.then_some(header)
    }
}

/// A fresh random salt for a new segment (never zero, the version 1 value).
pub(crate) fn fresh_salt() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let random = RandomState::new().hash_one((nanos, std::process::id()));
    ((random >> 32) as u32 ^ random as u32).max(1)
}

/// The checksum salt of the segment whose bytes start at `bytes[0]` and whose first byte has
/// logical offset `base`: its header's when the header is readable; else the one its first
/// record was written with, when a second record confirms it (see [`recover_salt`]); else
/// `None` (nothing in the segment can be verified).
pub(crate) fn segment_salt(bytes: &[u8], base: u64) -> Option<u32> {
    match SegmentHeader::read_from(bytes) {
        Some(header) => Some(header.salt),
        None => recover_salt(bytes, base),
    }
}

/// The salt of a segment whose header is unreadable, found from its first two records (the
/// only ones known to start where they seem to: a message body can hold bytes shaped like a
/// record, but not at the segment's first position). The raw salt field (one damaged byte
/// elsewhere in the header) and zero (version 1) are tried first; then the salt is solved from
/// the first record's checksum, which is affine in the salt, and kept only if the second
/// record holds under it too.
fn recover_salt(bytes: &[u8], base: u64) -> Option<u32> {
    let first = SEGMENT_HEADER_SIZE;
    let valid_at = |pos: usize, salt| matches!(parse_record(bytes, pos, base + pos as u64, salt), Parsed::Valid { .. });
    let raw = bytes.get(12..16).map_or(0, |_| le_u32(bytes, 12));
    if let Some(salt) = [raw, 0].into_iter().find(|&salt| valid_at(first, salt)) {
        return Some(salt);
    }
    let Parsed::Bad { len: Some(len), .. } = parse_record(bytes, first, base + first as u64, 0) else {
        return None;
    };
    let record = &bytes[first..first + len];
    let salt = solve_seed(crc32c::crc32c(&record[8..]), le_u32(record, 4), len - 8)?;
    (valid_at(first, salt) && valid_at(first + len, salt)).then_some(salt)
}

/// The seed `s` for which `crc32c_append(s, data) == crc`, where `data` is `len` bytes whose
/// unseeded checksum is `plain`. Seeding shifts the seed through `len` bytes of zeros and adds
/// it: `crc = plain ^ shift(s)`, with `shift` linear over GF(2) (and invertible), so `s` is
/// found by elimination over the images of the 32 one-bit seeds.
fn solve_seed(plain: u32, crc: u32, len: usize) -> Option<u32> {
    let shift = |seed: u32| crc32c::crc32c_combine(seed, 0, len);
    // basis[b]: an image whose highest set bit is b, and the seed bits that produce it.
    let mut basis: [Option<(u32, u32)>; 32] = [None; 32];
    for bit in 0..32 {
        let (mut image, mut seed) = (shift(1 << bit), 1u32 << bit);
        while image != 0 {
            let top = 31 - image.leading_zeros() as usize;
            match basis[top] {
                Some((other, other_seed)) => (image, seed) = (image ^ other, seed ^ other_seed),
                None => {
                    basis[top] = Some((image, seed));
                    break;
                }
            }
        }
    }
    let (mut target, mut seed) = (crc ^ plain, 0u32);
    while target != 0 {
        let (image, image_seed) = basis[31 - target.leading_zeros() as usize]?;
        (target, seed) = (target ^ image, seed ^ image_seed);
    }
    Some(seed)
}

/// Where and by whom a record is written: the header fields that are not its contents.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    pub kind: u8,
    pub epoch: u64,
    /// Logical offset of the record's first byte.
    pub offset: u64,
    /// The log's durable offset at the time of writing.
    pub durable: u64,
    /// The segment's checksum salt.
    pub salt: u32,
}

/// Writes one record into `out`, which must be exactly `record_len(meta.len(), body.len())`
/// bytes. Padding is written as zeros; the checksum is computed over the bytes in place.
pub(crate) fn write_record(out: &mut [u8], stamp: Stamp, meta: &[u8], body: &[u8]) {
    let len = record_len(meta.len(), body.len());
    assert_eq!(out.len(), len, "record buffer has the wrong length");
    let offset = stamp.offset;
    let mut header = RecordHeader {
        magic: RECORD_MAGIC,
        crc: 0,
        len: u32::try_from(len).expect("record length checked against the segment size"),
        kind: stamp.kind,
        synced: SyncedMark::new(offset, stamp.durable),
        meta_len: u32::try_from(meta.len()).expect("metadata length fits u32"),
        body_len: u32::try_from(body.len()).expect("body length fits u32"),
        epoch: stamp.epoch,
        offset,
    };
    let meta_start = RECORD_HEADER_SIZE;
    let body_start = meta_start + align_up(meta.len());
    out[meta_start..meta_start + meta.len()].copy_from_slice(meta);
    out[meta_start + meta.len()..body_start].fill(0);
    out[body_start..body_start + body.len()].copy_from_slice(body);
    out[body_start + body.len()..].fill(0);
    header.write_to(&mut out[..RECORD_HEADER_SIZE]);
    header.crc = crc32c::crc32c_append(stamp.salt, &out[8..]);
    header.write_to(&mut out[..RECORD_HEADER_SIZE]);
    debug_assert!(
        matches!(parse_record(out, 0, offset, stamp.salt), Parsed::Valid { len: l, .. } if l == len),
        "record does not read back after encoding"
    );
}

/// The result of looking for a record at one position of a segment.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// Zero magic or no room for a header: end of data in this segment.
    End,
    /// A record whose checksum, length and offset all check out.
    Valid { len: usize, header: RecordHeader, meta: &'a [u8], body: &'a [u8] },
    /// Something non-zero that is not a valid record. `len` is the claimed length when it is
    /// plausible (so the next record may be found); `meta` the claimed metadata bytes then.
    Bad { len: Option<usize>, meta: Option<&'a [u8]>, reason: &'static str },
}

/// The claimed length and metadata of what looks like a record header at `pos` of `segment`
/// whose logical offset is `offset` (magic, offset field and lengths check out), without
/// computing its checksum: a cheap first look when hunting for records among unknown bytes.
pub(crate) fn record_shaped(segment: &[u8], pos: usize, offset: u64) -> Option<(usize, &[u8])> {
    let bytes = segment.get(pos..pos.checked_add(RECORD_HEADER_SIZE)?)?;
    if bytes[0..4] != RECORD_MAGIC.to_le_bytes() {
        return None;
    }
    let header = RecordHeader::read_from(bytes);
    let (len, meta_len) = (header.len as usize, header.meta_len as usize);
    let plausible = header.magic == RECORD_MAGIC
        && header.offset == offset
        && len.is_multiple_of(RECORD_ALIGN)
        && pos.checked_add(len).is_some_and(|end| end <= segment.len())
        && record_len(meta_len, header.body_len as usize) == len;
    plausible.then(|| (len, &segment[pos + RECORD_HEADER_SIZE..pos + RECORD_HEADER_SIZE + meta_len]))
}

/// The metadata of the record at `pos` as its `meta_len` field alone places it, when it ends
/// before `before`: what is left to read of a record whose magic, checksum or length is
/// garbled. It still has to validate as metadata to name anything.
pub(crate) fn meta_by_its_length(segment: &[u8], pos: usize, before: usize) -> Option<&[u8]> {
    let field = segment.get(pos.checked_add(16)?..pos.checked_add(20)?)?;
    let meta_len = u32::from_le_bytes([field[0], field[1], field[2], field[3]]) as usize;
    let start = pos.checked_add(RECORD_HEADER_SIZE)?;
    let end = start.checked_add(meta_len)?;
    if end > before.min(segment.len()) {
        return None;
    }
    Some(&segment[start..end])
}

/// Why `parse_record` rejects a record that is whole but sits at the wrong offset.
pub(crate) const OFFSET_MISMATCH: &str = "record offset does not match its position";

/// Parses the record at `pos` of `segment`; `expected_offset` is its logical offset, `salt`
/// the segment's checksum salt.
pub(crate) fn parse_record<'a>(segment: &'a [u8], pos: usize, expected_offset: u64, salt: u32) -> Parsed<'a> {
    let Some(header_bytes) = segment.get(pos..pos + RECORD_HEADER_SIZE) else {
        return Parsed::End;
    };
    let header = RecordHeader::read_from(header_bytes);
    if header.magic == 0 {
        return Parsed::End;
    }
    let bad = |len: Option<usize>, meta: Option<&'a [u8]>, reason| Parsed::Bad { len, meta, reason };
    if header.magic != RECORD_MAGIC {
        return bad(None, None, "bad record magic");
    }
    let len = header.len as usize;
    let meta_len = header.meta_len as usize;
    let body_len = header.body_len as usize;
    let plausible = len.is_multiple_of(RECORD_ALIGN)
        && pos.checked_add(len).is_some_and(|end| end <= segment.len())
        && record_len(meta_len, body_len) == len;
    if !plausible {
        return bad(None, None, "implausible record length");
    }
    let record = &segment[pos..pos + len];
    let meta_start = RECORD_HEADER_SIZE;
    let body_start = meta_start + align_up(meta_len);
    let meta = &record[meta_start..meta_start + meta_len];
    let body = &record[body_start..body_start + body_len];
    if crc32c::crc32c_append(salt, &record[8..]) != header.crc {
        return bad(Some(len), Some(meta), "record checksum mismatch");
    }
    if header.offset != expected_offset {
        return bad(Some(len), Some(meta), OFFSET_MISMATCH);
    }
    Parsed::Valid { len, header, meta, body }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_header_layout_is_pinned() {
        let mut out = vec![0u8; record_len(5, 3)];
        let stamp = Stamp { kind: 7, epoch: 2, offset: 4096, durable: 4000, salt: 0x1234_5678 };
        write_record(&mut out, stamp, b"meta!", b"abc");
        assert_eq!(&out[0..4], b"FRec");
        assert_eq!(out.len(), 40 + 8 + 8);
        let header = RecordHeader::read_from(&out);
        assert_eq!((header.len, header.kind, header.meta_len, header.body_len), (56, 7, 5, 3));
        assert_eq!((header.epoch, header.offset), (2, 4096));
        assert_eq!(header.synced.durable_before(4096), Some(4000));
        assert!(matches!(parse_record(&out, 0, 4096, 0x1234_5678), Parsed::Valid { len: 56, .. }));
        assert!(matches!(parse_record(&out, 0, 4096, 0), Parsed::Bad { len: Some(56), .. }), "the salt is checked");
        assert!(
            matches!(parse_record(&out, 0, 4104, 0x1234_5678), Parsed::Bad { len: Some(56), .. }),
            "wrong offset is stale data"
        );
        out[55] ^= 1;
        assert!(
            matches!(parse_record(&out, 0, 4096, 0x1234_5678), Parsed::Bad { len: Some(56), .. }),
            "padding is checksummed"
        );
    }

    #[test]
    fn a_segment_salt_is_recovered_from_its_first_two_records_when_the_header_is_damaged() {
        const SALT: u32 = 0x9E37_79B9;
        let mut segment = vec![0u8; 4096];
        SegmentHeader::new(1, 8192, 0, 4096, SALT).write_to(&mut segment);
        let mut pos = SEGMENT_HEADER_SIZE;
        for (i, body) in [&b"first"[..], b"second", b"third"].into_iter().enumerate() {
            let len = record_len(3, body.len());
            let stamp = Stamp { kind: 1, epoch: 1, offset: 8192 + pos as u64, durable: 0, salt: SALT };
            write_record(&mut segment[pos..pos + len], stamp, &[i as u8; 3], body);
            pos += len;
        }
        assert_eq!(segment_salt(&segment, 8192), Some(SALT));
        for byte in 12..16 {
            let mut damaged = segment.clone();
            damaged[byte] ^= 0x40;
            assert_eq!(segment_salt(&damaged, 8192), Some(SALT), "salt byte {byte} damaged");
        }
        let mut zeroed = segment.clone();
        zeroed[..SEGMENT_HEADER_SIZE].fill(0);
        assert_eq!(segment_salt(&zeroed, 8192), Some(SALT), "header lost");
        let second = SEGMENT_HEADER_SIZE + record_len(3, 5);
        zeroed[second + 50] ^= 1;
        assert_eq!(segment_salt(&zeroed, 8192), None, "no second record to confirm it");
        assert_eq!(segment_salt(&[0u8; 20], 0), None, "a short file");
    }

    #[test]
    fn a_seed_is_solved_from_a_checksum() {
        for (seed, data) in
            [(0u32, &b""[..]), (1, b"x"), (0xDEAD_BEEF, b"a longer run of record bytes"), (u32::MAX, &[0u8; 999][..])]
        {
            let crc = crc32c::crc32c_append(seed, data);
            assert_eq!(solve_seed(crc32c::crc32c(data), crc, data.len()), Some(seed), "{seed:#x}");
        }
    }

    #[test]
    fn a_synced_mark_never_claims_more_than_was_durable() {
        assert_eq!(SyncedMark::default().durable_before(4096), None, "zero: unknown (version 1)");
        assert_eq!(SyncedMark::new(4096, 4096).durable_before(4096), Some(4096));
        assert_eq!(SyncedMark::new(4096, 0).durable_before(4096), Some(0));
        assert_eq!(SyncedMark::new(4096, 4093).durable_before(4096), Some(4088), "rounded down");
        let far = 200 << 20;
        assert_eq!(SyncedMark::new(far, 0).durable_before(far), None, "too far back to say");
        assert_eq!(SyncedMark::new(far, far - (100 << 20)).durable_before(far), Some(far - (100 << 20)));
    }

    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let mut out = [0u8; SEGMENT_HEADER_SIZE];
        SegmentHeader::new(3, 1 << 20, 9, 65536, 77).write_to(&mut out);
        let header = SegmentHeader::read_from(&out).expect("valid");
        assert_eq!((header.epoch, header.base_offset, header.segment_id, header.size_bytes), (3, 1 << 20, 9, 65536));
        assert_eq!((header.version, header.salt), (2, 77));
        out[30] ^= 0x10;
        assert!(SegmentHeader::read_from(&out).is_none());
        assert!(SegmentHeader::read_from(&[0u8; SEGMENT_HEADER_SIZE]).is_none());
        let mut v1 = SegmentHeader::new(3, 0, 0, 65536, 0);
        v1.version = 1;
        v1.write_to(&mut out);
        assert_eq!(SegmentHeader::read_from(&out).map(|h| h.salt), Some(0), "version 1 is read, unsalted");
        out[12] = 5;
        let crc = crc32c::crc32c(&out[0..44]);
        out[44..48].copy_from_slice(&crc.to_le_bytes());
        assert!(SegmentHeader::read_from(&out).is_none(), "version 1 had no salt");
    }
}
