//! Field tables and field values: AMQP 0-9-1 as RabbitMQ speaks it (its errata: `s` is a
//! signed 16-bit int, `l` a signed 64-bit int, `x` a byte array, no short-string type), plus
//! `L` (64-bit unsigned, from the original grammar) so such tables still decode. A table keeps
//! its entries in wire order, so decode + encode is byte-exact. Nesting is capped at
//! [`crate::TABLE_DEPTH_MAX`]; every length is checked against the enclosing payload first.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::wire::{Reader, put_long, put_longlong, put_longstr, put_octet, put_short, put_shortstr, put_sized};

/// One value of a field table or field array, tagged as on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `t`
    Bool(bool),
    /// `b`
    I8(i8),
    /// `B`
    U8(u8),
    /// `s` (RabbitMQ: signed 16-bit)
    I16(i16),
    /// `u`
    U16(u16),
    /// `I`
    I32(i32),
    /// `i`
    U32(u32),
    /// `l` (RabbitMQ: signed 64-bit)
    I64(i64),
    /// `L` (decoded for tolerance; RabbitMQ never sends it)
    U64(u64),
    /// `f`
    F32(f32),
    /// `d`
    F64(f64),
    /// `D`: `value / 10^scale`
    Decimal { scale: u8, value: u32 },
    /// `S`
    LongString(Bytes),
    /// `x`
    ByteArray(Bytes),
    /// `A`
    Array(Vec<FieldValue>),
    /// `T`: seconds since the epoch
    Timestamp(u64),
    /// `F`
    Table(FieldTable),
    /// `V`
    Void,
}

/// A field table: `(name, value)` entries in wire order. Names are short strings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldTable {
    entries: Vec<(String, FieldValue)>,
}

impl FieldTable {
    pub fn new() -> FieldTable {
        FieldTable::default()
    }

    /// Sets `name` (replacing an earlier value of that name in place).
    pub fn insert(&mut self, name: impl Into<String>, value: FieldValue) {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name, value)),
        }
    }

    /// The first value named `name`.
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decodes a table from its encoded bytes including the 4-byte size prefix.
    pub fn decode(bytes: &[u8]) -> Result<FieldTable, DecodeError> {
        let mut reader = Reader::new(bytes);
        let table = reader.table()?;
        reader.finish()?;
        Ok(table)
    }

    /// Decodes the entries of a table whose size prefix has been read (also AMQPLAIN's
    /// response, which is a table body without the prefix).
    pub fn decode_entries(bytes: &[u8]) -> Result<FieldTable, DecodeError> {
        FieldTable::decode_body(Reader::nested(bytes, 1)?)
    }

    pub(crate) fn decode_body(mut reader: Reader<'_>) -> Result<FieldTable, DecodeError> {
        let mut entries = Vec::new();
        while !reader.is_empty() {
            let name = reader.shortstr()?;
            let value = FieldValue::decode(&mut reader)?;
            entries.push((name, value));
        }
        Ok(FieldTable { entries })
    }

    /// Appends the table with its 4-byte size prefix.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_sized(out, |out| self.encode_entries(out));
    }

    /// Appends the entries without the size prefix.
    pub fn encode_entries(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.entries {
            put_shortstr(out, name);
            value.encode(out);
        }
    }
}

impl<S: Into<String>> FromIterator<(S, FieldValue)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (S, FieldValue)>>(iter: I) -> FieldTable {
        let mut table = FieldTable::new();
        for (name, value) in iter {
            table.insert(name, value);
        }
        table
    }
}

impl FieldValue {
    /// A long string value from text.
    pub fn string(text: &str) -> FieldValue {
        FieldValue::LongString(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// The text of a long string value, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongString(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, for any integer tag.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            FieldValue::I8(v) => Some(v.into()),
            FieldValue::U8(v) => Some(v.into()),
            FieldValue::I16(v) => Some(v.into()),
            FieldValue::U16(v) => Some(v.into()),
            FieldValue::I32(v) => Some(v.into()),
            FieldValue::U32(v) => Some(v.into()),
            FieldValue::I64(v) => Some(v),
            FieldValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The wire tag of this value.
    pub fn tag(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::U64(_) => b'L',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal { .. } => b'D',
            FieldValue::LongString(_) => b'S',
            FieldValue::ByteArray(_) => b'x',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<FieldValue, DecodeError> {
        let tag = r.octet()?;
        Ok(match tag {
            b't' => FieldValue::Bool(r.octet()? != 0),
            b'b' => FieldValue::I8(r.octet()? as i8),
            b'B' => FieldValue::U8(r.octet()?),
            b's' => FieldValue::I16(r.short()? as i16),
            b'u' => FieldValue::U16(r.short()?),
            b'I' => FieldValue::I32(r.long()? as i32),
            b'i' => FieldValue::U32(r.long()?),
            b'l' => FieldValue::I64(r.longlong()? as i64),
            b'L' => FieldValue::U64(r.longlong()?),
            b'f' => FieldValue::F32(f32::from_bits(r.long()?)),
            b'd' => FieldValue::F64(f64::from_bits(r.longlong()?)),
            b'D' => FieldValue::Decimal { scale: r.octet()?, value: r.long()? },
            b'S' => FieldValue::LongString(r.longstr()?),
            b'x' => FieldValue::ByteArray(r.longstr()?),
            b'A' => {
                let depth = r.depth();
                let mut items = Reader::nested(r.longstr_slice()?, depth + 1)?;
                let mut values = Vec::new();
                while !items.is_empty() {
                    values.push(FieldValue::decode(&mut items)?);
                }
                FieldValue::Array(values)
            }
            b'T' => FieldValue::Timestamp(r.longlong()?),
            b'F' => FieldValue::Table(r.table()?),
            b'V' => FieldValue::Void,
            other => return Err(DecodeError::UnknownFieldType(other)),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_octet(out, self.tag());
        match self {
            FieldValue::Bool(v) => put_octet(out, u8::from(*v)),
            FieldValue::I8(v) => put_octet(out, *v as u8),
            FieldValue::U8(v) => put_octet(out, *v),
            FieldValue::I16(v) => put_short(out, *v as u16),
            FieldValue::U16(v) => put_short(out, *v),
            FieldValue::I32(v) => put_long(out, *v as u32),
            FieldValue::U32(v) => put_long(out, *v),
            FieldValue::I64(v) => put_longlong(out, *v as u64),
            FieldValue::U64(v) | FieldValue::Timestamp(v) => put_longlong(out, *v),
            FieldValue::F32(v) => put_long(out, v.to_bits()),
            FieldValue::F64(v) => put_longlong(out, v.to_bits()),
            FieldValue::Decimal { scale, value } => {
                put_octet(out, *scale);
                put_long(out, *value);
            }
            FieldValue::LongString(v) | FieldValue::ByteArray(v) => put_longstr(out, v),
            FieldValue::Array(values) => put_sized(out, |out| values.iter().for_each(|v| v.encode(out))),
            FieldValue::Table(table) => table.encode(out),
            FieldValue::Void => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_type() -> FieldTable {
        let inner: FieldTable = [("k", FieldValue::string("v"))].into_iter().collect();
        [
            ("t", FieldValue::Bool(true)),
            ("b", FieldValue::I8(-2)),
            ("B", FieldValue::U8(250)),
            ("s", FieldValue::I16(-300)),
            ("u", FieldValue::U16(60_000)),
            ("I", FieldValue::I32(-70_000)),
            ("i", FieldValue::U32(4_000_000_000)),
            ("l", FieldValue::I64(-5_000_000_000)),
            ("L", FieldValue::U64(u64::MAX)),
            ("f", FieldValue::F32(1.5)),
            ("d", FieldValue::F64(-2.25)),
            ("D", FieldValue::Decimal { scale: 2, value: 12_345 }),
            ("S", FieldValue::string("héllo")),
            ("x", FieldValue::ByteArray(Bytes::from_static(&[0, 255]))),
            ("A", FieldValue::Array(vec![FieldValue::I32(1), FieldValue::Void, FieldValue::string("a")])),
            ("T", FieldValue::Timestamp(1_700_000_000)),
            ("F", FieldValue::Table(inner)),
            ("V", FieldValue::Void),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn every_type_round_trips() {
        let table = every_type();
        let mut bytes = Vec::new();
        table.encode(&mut bytes);
        let decoded = FieldTable::decode(&bytes).expect("decodes");
        assert_eq!(decoded, table);
        let mut again = Vec::new();
        decoded.encode(&mut again);
        assert_eq!(again, bytes);
    }

    #[test]
    fn golden_bytes_of_small_table() {
        let table: FieldTable = [("a", FieldValue::Bool(true)), ("n", FieldValue::I64(-1))].into_iter().collect();
        let mut bytes = Vec::new();
        table.encode(&mut bytes);
        let expected = b"\x00\x00\x00\x0f\x01at\x01\x01nl\xff\xff\xff\xff\xff\xff\xff\xff";
        assert_eq!(bytes, expected);
    }

    #[test]
    fn lengths_are_checked_against_the_payload() {
        assert_eq!(FieldTable::decode(b"\x00\x00\x00\x05\x01a"), Err(DecodeError::Truncated));
        assert_eq!(FieldTable::decode(b"\x00\x00\x00\x07\x01aS\xff\xff"), Err(DecodeError::Truncated));
        assert_eq!(FieldTable::decode(b"\xff\xff\xff\xff"), Err(DecodeError::Truncated));
        assert_eq!(FieldTable::decode(b"\x00\x00\x00\x03\x01aZ"), Err(DecodeError::UnknownFieldType(b'Z')));
        assert_eq!(FieldTable::decode(b"\x00\x00\x00\x00\x00"), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut table = FieldTable::new();
        for _ in 0..crate::TABLE_DEPTH_MAX + 2 {
            let mut outer = FieldTable::new();
            outer.insert("n", FieldValue::Table(table));
            table = outer;
        }
        let mut bytes = Vec::new();
        table.encode(&mut bytes);
        assert_eq!(FieldTable::decode(&bytes), Err(DecodeError::TooDeep));
    }
}
