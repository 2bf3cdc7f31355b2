//! Reading and writing MQTT's primitive types (§1.5): big-endian integers, Variable Byte
//! Integers, UTF-8 strings (well-formed, no U+0000) and binary data. The reader never reads
//! past its slice and never allocates more than the slice holds; every length is checked first.

use bytes::Bytes;

use crate::error::DecodeError;

/// The largest value a Variable Byte Integer holds (four bytes).
pub const VARINT_MAX: u32 = 268_435_455;

/// A cursor over one packet's bytes (already known to be complete).
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Malformed("field runs past the end of the packet"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(&self.buf[self.pos..])? {
            Some((value, used)) => {
                self.pos += used;
                Ok(value)
            }
            None => Err(DecodeError::Malformed("variable byte integer runs past the end of the packet")),
        }
    }

    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        utf8(raw).map(str::to_owned)
    }
}

/// Checks an MQTT UTF-8 string: well-formed and free of U+0000 (§1.5.4).
pub fn utf8(raw: &[u8]) -> Result<&str, DecodeError> {
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::BadUtf8)?;
    if text.contains('\0') {
        return Err(DecodeError::BadUtf8);
    }
    Ok(text)
}

/// Decodes a Variable Byte Integer: `Ok(None)` when `buf` ends inside it, an error when it
/// would take a fifth byte.
pub fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::BadRemainingLength)
}

/// Bytes a Variable Byte Integer of `value` takes.
pub fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    debug_assert!(value <= VARINT_MAX, "varint fits four bytes");
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

pub fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Writes length-prefixed bytes; longer than 65,535 bytes is a caller bug (checked by the
/// session before it encodes peer-supplied text).
pub fn put_binary(out: &mut Vec<u8>, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    put_u16(out, len);
    out.extend_from_slice(&value[..usize::from(len)]);
}

pub fn put_str(out: &mut Vec<u8>, value: &str) {
    put_binary(out, value.as_bytes());
}

/// A copy of `raw` as `Bytes` (payloads outlive the input buffer).
pub fn to_bytes(raw: &[u8]) -> Bytes {
    Bytes::copy_from_slice(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_at_every_boundary() {
        for value in [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value));
            assert_eq!(read_varint(&out), Ok(Some((value, out.len()))));
        }
    }

    #[test]
    fn fifth_varint_byte_is_malformed() {
        assert_eq!(read_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]), Err(DecodeError::BadRemainingLength));
        assert_eq!(read_varint(&[0xFF, 0xFF]), Ok(None));
    }

    #[test]
    fn strings_reject_nul_and_bad_utf8() {
        assert!(utf8(b"a\0b").is_err());
        assert!(utf8(&[0xC0, 0x80]).is_err());
        assert!(utf8(&[0xED, 0xA0, 0x80]).is_err(), "surrogates are not UTF-8");
        assert_eq!(utf8("häh".as_bytes()), Ok("häh"));
    }
}
