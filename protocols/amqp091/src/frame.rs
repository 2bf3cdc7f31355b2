//! Frames: the 7-byte header (type, channel, payload size), the payload and the FRAME_END
//! octet. [`decode_header`] checks the declared size against the negotiated maximum before
//! anything is buffered (STYLE §3); [`decode`] also decodes the payload (for tests, `perf` and
//! client-side use). Encoders append to the caller's buffer; [`encode_content`] splits a body
//! into frames that respect a frame-max. Pure; no limits of its own beyond the sizes passed in.

use bytes::Bytes;

use crate::content::ContentHeader;
use crate::error::FrameError;
use crate::generated::{
    BasicDeliver, BasicProperties, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Method,
};
use crate::wire::{put_long, put_longlong, put_octet, put_short, put_shortstr};

/// Bytes before the payload: type (1), channel (2), size (4).
pub const FRAME_HEADER_BYTES: usize = 7;
/// Header plus FRAME_END: a frame's size beyond its payload.
pub const FRAME_OVERHEAD_BYTES: usize = 8;

/// The header of one complete, well-terminated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FRAME_METHOD, FRAME_HEADER, FRAME_BODY or FRAME_HEARTBEAT.
    pub frame_type: u8,
    pub channel: u16,
    /// Payload bytes; the whole frame is `size + FRAME_OVERHEAD_BYTES`.
    pub size: u32,
}

impl FrameHeader {
    /// Bytes the whole frame occupies.
    pub fn frame_bytes(&self) -> usize {
        self.size as usize + FRAME_OVERHEAD_BYTES
    }
}

/// Outcome of a decode: a frame, or how many more bytes are needed at least.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<T> {
    Frame { frame: T, consumed: usize },
    Incomplete { need: usize },
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Method {
        channel: u16,
        method: Method,
    },
    /// Boxed: a `ContentHeader` is ~300 bytes and made every `Frame` that large, copied at
    /// each move (memmove, mostly of frames, was a fifth of the load tool's samples).
    Header {
        channel: u16,
        header: Box<ContentHeader>,
    },
    Body {
        channel: u16,
        body: Bytes,
    },
    Heartbeat {
        channel: u16,
    },
}

/// Reads a frame header from the start of `buf`. Fails at once when the type is unknown or
/// the payload would exceed `payload_bytes_max`; otherwise waits until the whole frame is
/// buffered and checks its FRAME_END.
pub fn decode_header(buf: &[u8], payload_bytes_max: u32) -> Result<Decoded<FrameHeader>, FrameError> {
    let Some(head) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(Decoded::Incomplete { need: FRAME_HEADER_BYTES - buf.len() });
    };
    let frame_type = head[0];
    let channel = u16::from_be_bytes([head[1], head[2]]);
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
    if !matches!(frame_type, FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT) {
        return Err(FrameError::UnknownType(frame_type));
    }
    if size > payload_bytes_max {
        return Err(FrameError::TooLarge { size, max: payload_bytes_max });
    }
    let header = FrameHeader { frame_type, channel, size };
    let total = header.frame_bytes();
    match buf.get(total - 1) {
        None => Ok(Decoded::Incomplete { need: total - buf.len() }),
        Some(&FRAME_END) => Ok(Decoded::Frame { frame: header, consumed: total }),
        Some(&other) => Err(FrameError::BadFrameEnd(other)),
    }
}

/// Decodes one whole frame from the start of `buf`.
pub fn decode(buf: &[u8], payload_bytes_max: u32) -> Result<Decoded<Frame>, FrameError> {
    let (header, consumed) = match decode_header(buf, payload_bytes_max)? {
        Decoded::Frame { frame, consumed } => (frame, consumed),
        Decoded::Incomplete { need } => return Ok(Decoded::Incomplete { need }),
    };
    let payload = &buf[FRAME_HEADER_BYTES..consumed - 1];
    let channel = header.channel;
    let frame = match header.frame_type {
        FRAME_METHOD => Frame::Method { channel, method: Method::decode(payload)? },
        FRAME_HEADER => Frame::Header { channel, header: Box::new(ContentHeader::decode(payload)?) },
        FRAME_BODY => Frame::Body { channel, body: Bytes::copy_from_slice(payload) },
        _ => Frame::Heartbeat { channel },
    };
    Ok(Decoded::Frame { frame, consumed })
}

/// Appends one frame whose payload `payload` writes.
fn encode_frame(frame_type: u8, channel: u16, out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    out.push(frame_type);
    put_short(out, channel);
    let at = out.len();
    put_long(out, 0);
    payload(out);
    let size = u32::try_from(out.len() - at - 4).expect("frame payload over 4 GiB");
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

pub fn encode_method(channel: u16, method: &Method, out: &mut Vec<u8>) {
    encode_frame(FRAME_METHOD, channel, out, |out| method.encode(out));
}

pub fn encode_content_header(channel: u16, header: &ContentHeader, out: &mut Vec<u8>) {
    encode_frame(FRAME_HEADER, channel, out, |out| header.encode(out));
}

pub fn encode_body(channel: u16, body: &[u8], out: &mut Vec<u8>) {
    encode_frame(FRAME_BODY, channel, out, |out| out.extend_from_slice(body));
}

pub fn encode_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Appends a content-carrying method, its content header and its body split into frames of
/// at most `frame_max` bytes (0: no limit). No body frame is written for an empty body.
pub fn encode_content(
    channel: u16,
    method: &Method,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
    out: &mut Vec<u8>,
) {
    encode_method(channel, method, out);
    encode_header_and_body(channel, properties, body, frame_max, out);
}

/// basic.deliver's fields, borrowed: a broker sends one per message, and building a
/// [`BasicDeliver`] would copy the consumer tag, exchange and routing key each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverRef<'a> {
    pub consumer_tag: &'a str,
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

/// [`encode_content`] for a basic.deliver given by reference; the same bytes.
pub fn encode_deliver(
    channel: u16,
    deliver: &DeliverRef<'_>,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
    out: &mut Vec<u8>,
) {
    encode_frame(FRAME_METHOD, channel, out, |out| {
        put_short(out, BasicDeliver::CLASS_ID);
        put_short(out, BasicDeliver::METHOD_ID);
        put_shortstr(out, deliver.consumer_tag);
        put_longlong(out, deliver.delivery_tag);
        put_octet(out, u8::from(deliver.redelivered));
        put_shortstr(out, deliver.exchange);
        put_shortstr(out, deliver.routing_key);
    });
    encode_header_and_body(channel, properties, body, frame_max, out);
}

fn encode_header_and_body(channel: u16, properties: &BasicProperties, body: &[u8], frame_max: u32, out: &mut Vec<u8>) {
    encode_frame(FRAME_HEADER, channel, out, |out| {
        ContentHeader::encode_parts(BasicProperties::CLASS_ID, body.len() as u64, properties, out);
    });
    let chunk = match frame_max {
        0 => body.len().max(1),
        max => (max as usize).saturating_sub(FRAME_OVERHEAD_BYTES).max(1),
    };
    for part in body.chunks(chunk) {
        encode_body(channel, part, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::BasicQos;

    #[test]
    fn size_is_checked_before_the_payload_arrives() {
        let head = [FRAME_BODY, 0, 1, 0, 1, 0, 0];
        assert_eq!(decode_header(&head, 4096), Err(FrameError::TooLarge { size: 65_536, max: 4096 }));
        assert_eq!(decode_header(&head[..3], 4096), Ok(Decoded::Incomplete { need: 4 }));
        assert_eq!(decode_header(&[9, 0, 0, 0, 0, 0, 0], 4096), Err(FrameError::UnknownType(9)));
    }

    #[test]
    fn frame_end_is_checked() {
        let frame = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, 0xCD];
        assert_eq!(decode_header(&frame, 4096), Err(FrameError::BadFrameEnd(0xCD)));
        let frame = [FRAME_BODY, 0, 1, 0, 0, 0, 2, b'h'];
        assert_eq!(decode_header(&frame, 4096), Ok(Decoded::Incomplete { need: 2 }));
    }

    #[test]
    fn a_borrowed_deliver_encodes_as_the_generated_one() {
        let owned = BasicDeliver {
            consumer_tag: "ctag-1".into(),
            delivery_tag: 77,
            redelivered: true,
            exchange: "amq.topic".into(),
            routing_key: "a.b".into(),
        };
        let borrowed = DeliverRef {
            consumer_tag: "ctag-1",
            delivery_tag: 77,
            redelivered: true,
            exchange: "amq.topic",
            routing_key: "a.b",
        };
        let props = BasicProperties { delivery_mode: Some(2), ..BasicProperties::default() };
        let body = vec![7u8; 300];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_content(5, &Method::BasicDeliver(owned), &props, &body, 128, &mut a);
        encode_deliver(5, &borrowed, &props, &body, 128, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn method_frames_round_trip() {
        let method = Method::BasicQos(BasicQos { prefetch_size: 0, prefetch_count: 10, global: true });
        let mut out = Vec::new();
        encode_method(3, &method, &mut out);
        assert_eq!(out, b"\x01\x00\x03\x00\x00\x00\x0b\x00\x3c\x00\x0a\x00\x00\x00\x00\x00\x0a\x01\xce");
        let decoded = decode(&out, 4096).expect("decodes");
        assert_eq!(decoded, Decoded::Frame { frame: Frame::Method { channel: 3, method }, consumed: out.len() });
    }

    #[test]
    fn content_is_split_by_frame_max() {
        let mut out = Vec::new();
        let method = Method::BasicPublish(Default::default());
        encode_content(1, &method, &BasicProperties::default(), &[7; 20], 8 + 8, &mut out);
        let mut bodies = Vec::new();
        let mut rest = &out[..];
        while let Ok(Decoded::Frame { frame, consumed }) = decode(rest, 4096) {
            if let Frame::Body { body, .. } = frame {
                bodies.push(body.len());
            }
            rest = &rest[consumed..];
        }
        assert!(rest.is_empty());
        assert_eq!(bodies, [8, 8, 4]);
    }
}
