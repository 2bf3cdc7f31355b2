//! The on-disk byte layout: `SegmentHeader` (first bytes of every segment file) and
//! `RecordHeader` (before every record), plus the functions that write a record into a byte
//! slice and parse one back. Pure functions over slices, no I/O; used on the shard thread and
//! by recovery. Limits: a record's total length fits a `u32`; records start 8-byte aligned.
//! All integers are little-endian.

/// `"FRec"`: first four bytes of every record. Zero means "no record here" (fresh space).
pub(crate) const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"FRec");
/// `"FERRYSEG"`: first eight bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"FERRYSEG");
/// Bumped on any incompatible layout change.
pub(crate) const SEGMENT_VERSION: u32 = 1;
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
/// rest of this header, the metadata, the body and the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct RecordHeader {
    pub magic: u32,
    pub crc: u32,
    /// Whole record, header and padding included; a multiple of `RECORD_ALIGN`.
    pub len: u32,
    pub kind: u8,
    pub reserved: [u8; 3],
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
        out[13..16].copy_from_slice(&self.reserved);
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
            reserved: [bytes[13], bytes[14], bytes[15]],
            meta_len: le_u32(bytes, 16),
            body_len: le_u32(bytes, 20),
            epoch: le_u64(bytes, 24),
            offset: le_u64(bytes, 32),
        }
    }
}

/// First bytes of every segment file. `crc` is CRC32C of bytes `[0, 44)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct SegmentHeader {
    pub magic: u64,
    pub version: u32,
    pub reserved: u32,
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
    pub fn new(epoch: u64, base_offset: u64, segment_id: u64, size_bytes: u32) -> Self {
        SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: SEGMENT_VERSION,
            reserved: 0,
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
        out[12..16].copy_from_slice(&self.reserved.to_le_bytes());
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
            reserved: le_u32(bytes, 12),
            epoch: le_u64(bytes, 16),
            base_offset: le_u64(bytes, 24),
            segment_id: le_u64(bytes, 32),
            size_bytes: le_u32(bytes, 40),
            crc: le_u32(bytes, 44),
        };
        let valid = header.magic == SEGMENT_MAGIC
            && header.version == SEGMENT_VERSION
            && header.crc == crc32c::crc32c(&bytes[0..44]);
        valid.then_some(header)
    }
}

/// Writes one record into `out`, which must be exactly `record_len(meta.len(), body.len())`
/// bytes. Padding is written as zeros; the checksum is computed over the bytes in place.
pub(crate) fn write_record(out: &mut [u8], kind: u8, epoch: u64, offset: u64, meta: &[u8], body: &[u8]) {
    let len = record_len(meta.len(), body.len());
    assert_eq!(out.len(), len, "record buffer has the wrong length");
    let mut header = RecordHeader {
        magic: RECORD_MAGIC,
        crc: 0,
        len: u32::try_from(len).expect("record length checked against the segment size"),
        kind,
        reserved: [0; 3],
        meta_len: u32::try_from(meta.len()).expect("metadata length fits u32"),
        body_len: u32::try_from(body.len()).expect("body length fits u32"),
        epoch,
        offset,
    };
    let meta_start = RECORD_HEADER_SIZE;
    let body_start = meta_start + align_up(meta.len());
    out[meta_start..meta_start + meta.len()].copy_from_slice(meta);
    out[meta_start + meta.len()..body_start].fill(0);
    out[body_start..body_start + body.len()].copy_from_slice(body);
    out[body_start + body.len()..].fill(0);
    header.write_to(&mut out[..RECORD_HEADER_SIZE]);
    header.crc = crc32c::crc32c(&out[8..]);
    header.write_to(&mut out[..RECORD_HEADER_SIZE]);
    debug_assert!(
        matches!(parse_record(out, 0, offset), Parsed::Valid { len: l, .. } if l == len),
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

/// Parses the record at `pos` of `segment`; `expected_offset` is its logical offset.
pub(crate) fn parse_record<'a>(segment: &'a [u8], pos: usize, expected_offset: u64) -> Parsed<'a> {
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
    if crc32c::crc32c(&record[8..]) != header.crc {
        return bad(Some(len), Some(meta), "record checksum mismatch");
    }
    if header.offset != expected_offset {
        return bad(Some(len), Some(meta), "record offset does not match its position");
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
        write_record(&mut out, 7, 2, 4096, b"meta!", b"abc");
        assert_eq!(&out[0..4], b"FRec");
        assert_eq!(out.len(), 40 + 8 + 8);
        let header = RecordHeader::read_from(&out);
        assert_eq!((header.len, header.kind, header.meta_len, header.body_len), (56, 7, 5, 3));
        assert_eq!((header.epoch, header.offset), (2, 4096));
        assert!(matches!(parse_record(&out, 0, 4096), Parsed::Valid { len: 56, .. }));
        assert!(matches!(parse_record(&out, 0, 4104), Parsed::Bad { len: Some(56), .. }), "wrong offset is stale data");
        out[55] ^= 1;
        assert!(matches!(parse_record(&out, 0, 4096), Parsed::Bad { len: Some(56), .. }), "padding is checksummed");
    }

    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let mut out = [0u8; SEGMENT_HEADER_SIZE];
        SegmentHeader::new(3, 1 << 20, 9, 65536).write_to(&mut out);
        let header = SegmentHeader::read_from(&out).expect("valid");
        assert_eq!((header.epoch, header.base_offset, header.segment_id, header.size_bytes), (3, 1 << 20, 9, 65536));
        out[30] ^= 0x10;
        assert!(SegmentHeader::read_from(&out).is_none());
        assert!(SegmentHeader::read_from(&[0u8; SEGMENT_HEADER_SIZE]).is_none());
    }
}
