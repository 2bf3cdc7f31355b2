//! Primitive AMQP 0-9-1 field encodings (octet, short, long, longlong, shortstr, longstr,
//! table) in network byte order: a bounds-checked [`Reader`] over one frame payload and
//! `put_*` writers into the caller's buffer. Every read checks the remaining bytes first, so a
//! length prefix can never make it allocate beyond the frame. Used by the generated code.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::table::FieldTable;

/// Longest short string, in bytes.
pub const SHORTSTR_BYTES_MAX: usize = 255;

/// A cursor over one frame payload (or a nested table inside it).
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, depth: 0 }
    }

    /// A reader over a nested table or array, one level deeper.
    pub fn nested(bytes: &'a [u8], depth: usize) -> Result<Reader<'a>, DecodeError> {
        if depth > crate::TABLE_DEPTH_MAX {
            return Err(DecodeError::TooDeep);
        }
        Ok(Reader { bytes, depth })
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn octet(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn short(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    pub fn long(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    pub fn longlong(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    pub fn shortstr(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.octet()?);
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// A long string's bytes, without copying them out of the payload yet.
    pub fn longstr_slice(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        self.take(len)
    }

    pub fn longstr(&mut self) -> Result<Bytes, DecodeError> {
        self.longstr_slice().map(Bytes::copy_from_slice)
    }

    pub fn table(&mut self) -> Result<FieldTable, DecodeError> {
        let depth = self.depth;
        let body = self.longstr_slice()?;
        FieldTable::decode_body(Reader::nested(body, depth + 1)?)
    }
}

pub(crate) fn put_octet(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

pub(crate) fn put_short(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub(crate) fn put_long(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub(crate) fn put_longlong(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Writes a short string; text over 255 bytes is cut at the last UTF-8 boundary that fits
/// (the wire cannot carry more; names from peers are never that long, only server texts).
pub(crate) fn put_shortstr(out: &mut Vec<u8>, value: &str) {
    let text = truncate(value, SHORTSTR_BYTES_MAX);
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

/// Writes a long string. Panics (a bug, not peer input) past 4 GiB.
pub(crate) fn put_longstr(out: &mut Vec<u8>, value: &[u8]) {
    let len = u32::try_from(value.len()).expect("long string over 4 GiB");
    put_long(out, len);
    out.extend_from_slice(value);
}

pub(crate) fn put_table(out: &mut Vec<u8>, table: &FieldTable) {
    table.encode(out);
}

/// Reserves a 4-byte length, runs `body`, then fills the length in.
pub(crate) fn put_sized(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = u32::try_from(out.len() - at - 4).expect("sized field over 4 GiB");
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
