//! Content headers (class id, weight, body size, property flags and properties) and the
//! per-channel reassembly of basic.publish + header + body frames. Reassembly keeps a
//! single-frame body as a zero-copy slice of the input and appends multi-frame bodies into a
//! buffer that grows with the bytes received, never with the size a peer declares; the
//! connection bounds the declared size by `frame_size_bytes_max` before accepting a header.

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::generated::{BasicProperties, BasicPublish};
use crate::wire::{Reader, put_longlong, put_short};

/// The payload of a content header frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContentHeader {
    pub class_id: u16,
    /// Unused by 0-9-1; must be 0.
    pub weight: u16,
    pub body_size: u64,
    pub properties: BasicProperties,
}

impl ContentHeader {
    /// A basic-class header.
    pub fn basic(body_size: u64, properties: BasicProperties) -> ContentHeader {
        ContentHeader { class_id: BasicProperties::CLASS_ID, weight: 0, body_size, properties }
    }

    /// The class id of a header payload, if it has one (read before the rest, so a header
    /// of the wrong class is told apart from a malformed one).
    pub fn peek_class_id(payload: &[u8]) -> Option<u16> {
        Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]))
    }

    /// Decodes a content header payload. Only the basic class has properties; any other
    /// class, property flag bits the class does not define, or trailing bytes are errors.
    pub fn decode(payload: &[u8]) -> Result<ContentHeader, DecodeError> {
        let mut properties = BasicProperties::default();
        let (class_id, weight, body_size) = Self::decode_into(payload, &mut properties)?;
        Ok(ContentHeader { class_id, weight, body_size, properties })
    }

    /// [`ContentHeader::decode`] of a basic-class header, its properties decoded straight into
    /// a box (`BasicProperties` is a few hundred bytes; a publish carries it boxed, and
    /// decoding then boxing copied it three times): the body size and the properties.
    pub fn decode_boxed(payload: &[u8]) -> Result<(u64, Box<BasicProperties>), DecodeError> {
        let mut properties = Box::<BasicProperties>::default();
        let (_, _, body_size) = Self::decode_into(payload, &mut properties)?;
        Ok((body_size, properties))
    }

    /// Reads a header into `properties`: (class id, weight, body size).
    fn decode_into(payload: &[u8], properties: &mut BasicProperties) -> Result<(u16, u16, u64), DecodeError> {
        let mut r = Reader::new(payload);
        let class_id = r.short()?;
        let weight = r.short()?;
        let body_size = r.longlong()?;
        if class_id != BasicProperties::CLASS_ID {
            return Err(DecodeError::BadContentHeader("content class without properties"));
        }
        let flags = r.short()?;
        if flags & BasicProperties::UNUSED_FLAGS != 0 {
            return Err(DecodeError::BadContentHeader("unknown property flags"));
        }
        let mut more = flags & 1 != 0;
        while more {
            let next = r.short()?;
            if next & !1 != 0 {
                return Err(DecodeError::BadContentHeader("unknown property flags"));
            }
            more = next & 1 != 0;
        }
        BasicProperties::decode_into(flags, &mut r, properties)?;
        r.finish()?;
        Ok((class_id, weight, body_size))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_short(out, self.class_id);
        put_short(out, self.weight);
        put_longlong(out, self.body_size);
        self.properties.encode(out);
    }

    /// Encodes a header (weight 0) without building a `ContentHeader`.
    pub(crate) fn encode_parts(class_id: u16, body_size: u64, properties: &BasicProperties, out: &mut Vec<u8>) {
        put_short(out, class_id);
        put_short(out, 0);
        put_longlong(out, body_size);
        properties.encode(out);
    }
}

/// Where one channel is in receiving a published message.
#[derive(Debug, Default)]
pub(crate) enum Assembly {
    /// Expecting a method frame.
    #[default]
    Idle,
    /// basic.publish received; expecting its content header.
    Header { method: BasicPublish },
    /// Header received; expecting `size` body bytes in total.
    Body { method: BasicPublish, properties: Box<BasicProperties>, size: u64, body: Body },
}

/// Body bytes received so far.
#[derive(Debug, Default)]
pub(crate) enum Body {
    #[default]
    Empty,
    /// One frame's payload, not copied.
    Single(Bytes),
    /// Several frames' payloads, copied into one buffer.
    Many(BytesMut),
}

impl Body {
    pub fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Single(bytes) => bytes.len(),
            Body::Many(bytes) => bytes.len(),
        }
    }

    pub fn push(&mut self, part: Bytes) {
        *self = match std::mem::take(self) {
            Body::Empty => Body::Single(part),
            Body::Single(first) => {
                let mut many = BytesMut::with_capacity(first.len() + part.len());
                many.extend_from_slice(&first);
                many.extend_from_slice(&part);
                Body::Many(many)
            }
            Body::Many(mut many) => {
                many.extend_from_slice(&part);
                Body::Many(many)
            }
        };
    }

    pub fn freeze(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::Single(bytes) => bytes,
            Body::Many(bytes) => bytes.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{FieldTable, FieldValue};

    #[test]
    fn header_golden_bytes() {
        let properties = BasicProperties {
            content_type: Some("text/plain".to_owned()),
            delivery_mode: Some(2),
            ..Default::default()
        };
        let header = ContentHeader::basic(5, properties);
        let mut out = Vec::new();
        header.encode(&mut out);
        let expected = b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x90\x00\x0atext/plain\x02";
        assert_eq!(out, expected);
        assert_eq!(ContentHeader::decode(&out), Ok(header));
    }

    #[test]
    fn all_properties_round_trip() {
        let headers: FieldTable = [("x", FieldValue::I32(1))].into_iter().collect();
        let text = || Some("t".to_owned());
        let properties = BasicProperties {
            content_type: text(),
            content_encoding: text(),
            headers: Some(headers),
            delivery_mode: Some(1),
            priority: Some(9),
            correlation_id: text(),
            reply_to: text(),
            expiration: Some("60000".to_owned()),
            message_id: text(),
            timestamp: Some(1_700_000_000),
            kind: text(),
            user_id: text(),
            app_id: text(),
            cluster_id: text(),
        };
        assert_eq!(properties.flags(), 0xfffc);
        let header = ContentHeader::basic(u64::MAX, properties);
        let mut out = Vec::new();
        header.encode(&mut out);
        assert_eq!(ContentHeader::decode(&out), Ok(header));
    }

    #[test]
    fn bad_headers_are_errors() {
        let unknown_flag = b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x02";
        assert!(ContentHeader::decode(unknown_flag).is_err());
        let truncated = b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x80\x00";
        assert_eq!(ContentHeader::decode(truncated), Err(DecodeError::Truncated));
        let other_class = b"\x00\x32\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00";
        assert!(ContentHeader::decode(other_class).is_err());
        let continued = b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x01\x00\x00";
        assert!(ContentHeader::decode(continued).is_ok());
    }

    #[test]
    fn body_keeps_single_frames_uncopied() {
        let mut body = Body::default();
        let part = Bytes::from_static(b"abc");
        body.push(part.clone());
        assert!(matches!(&body, Body::Single(b) if b.as_ptr() == part.as_ptr()));
        body.push(Bytes::from_static(b"de"));
        assert_eq!(body.len(), 5);
        assert_eq!(body.freeze(), Bytes::from_static(b"abcde"));
    }
}
