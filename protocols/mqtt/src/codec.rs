//! Framing and the encoding of every packet, both directions. [`decode`] checks the fixed
//! header and the size cap before anything of the body is read or buffered
//! (`Incomplete { need }` is the only "wait" signal); it never panics and never allocates more
//! than the packet's own bytes. [`encode`] writes into the caller's buffer.

use crate::bytes_io::{Reader, put_binary, put_str, put_u16, put_varint, read_varint, to_bytes};
use crate::error::DecodeError;
use crate::packet::{
    AckKind, ConnAck, Connect, Packet, PubResp, Publish, QoS, ReasonPacket, SubAck, SubOptions, Subscribe, UnsubAck,
    Unsubscribe, Version, Will,
};
use crate::properties::{Properties, PropertyContext as Ctx};
use crate::reason::ReasonCode;

/// What [`decode`] found at the start of the buffer. Not boxed: it is moved once, straight
/// into the session's handler.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Packet {
        packet: Packet,
        consumed: usize,
    },
    /// At least `need` more bytes are required.
    Incomplete {
        need: usize,
    },
}

/// The size of the packet at the start of `buf` (fixed header included), once its fixed
/// header is complete; checked against `max_bytes`.
pub fn packet_size(buf: &[u8], max_bytes: usize) -> Result<Option<usize>, DecodeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let Some((remaining, used)) = read_varint(&buf[1..])? else {
        return Ok(None);
    };
    let size = 1 + used + remaining as usize;
    if size > max_bytes {
        return Err(DecodeError::PacketTooLarge { size, max: max_bytes });
    }
    Ok(Some(size))
}

/// Decodes the packet at the start of `buf`. `version` is the connection's (CONNECT carries
/// its own); `max_bytes` is the largest packet accepted.
pub fn decode(buf: &[u8], version: Version, max_bytes: usize) -> Result<Decoded, DecodeError> {
    let Some(size) = packet_size(buf, max_bytes)? else {
        let need = if buf.is_empty() { 2 } else { 1 };
        return Ok(Decoded::Incomplete { need });
    };
    if buf.len() < size {
        return Ok(Decoded::Incomplete { need: size - buf.len() });
    }
    let header = buf[0];
    let body_start = 1 + varint_bytes(&buf[1..]);
    let mut r = Reader::new(&buf[body_start..size]);
    let packet = decode_body(header, &mut r, version)?;
    if !r.is_empty() {
        return Err(DecodeError::Malformed("bytes left over after the packet"));
    }
    Ok(Decoded::Packet { packet, consumed: size })
}

fn varint_bytes(buf: &[u8]) -> usize {
    buf.iter().take(4).position(|b| b & 0x80 == 0).map_or(4, |p| p + 1)
}

fn decode_body(header: u8, r: &mut Reader<'_>, version: Version) -> Result<Packet, DecodeError> {
    let (kind, flags) = (header >> 4, header & 0x0F);
    let expected_flags = match kind {
        3 => flags,
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if flags != expected_flags {
        return Err(DecodeError::BadFlags { packet: kind, flags });
    }
    let v5 = version.is_v5();
    Ok(match kind {
        1 => Packet::Connect(Box::new(decode_connect(r)?)),
        2 => decode_connack(r, v5)?,
        3 => Packet::Publish(decode_publish(flags, r, v5)?),
        4 => Packet::PubResp(decode_resp(AckKind::PubAck, r, v5)?),
        5 => Packet::PubResp(decode_resp(AckKind::PubRec, r, v5)?),
        6 => Packet::PubResp(decode_resp(AckKind::PubRel, r, v5)?),
        7 => Packet::PubResp(decode_resp(AckKind::PubComp, r, v5)?),
        8 => Packet::Subscribe(decode_subscribe(r, v5)?),
        9 => Packet::SubAck(decode_suback(r, v5)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(r, v5)?),
        11 => decode_unsuback(r, v5)?,
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(decode_reason(r, v5, Ctx::Disconnect)?),
        15 if v5 => Packet::Auth(decode_reason(r, v5, Ctx::Auth)?),
        other => return Err(DecodeError::UnknownPacketType(other)),
    })
}

fn props(r: &mut Reader<'_>, v5: bool, ctx: Ctx) -> Result<Properties, DecodeError> {
    if v5 { Properties::decode(r, ctx) } else { Ok(Properties::default()) }
}

fn packet_id(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Malformed("packet identifier 0")),
        id => Ok(id),
    }
}

fn decode_connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let version = match (name, level) {
        (b"MQTT", 4) => Version::V3_1_1,
        (b"MQTT", 5) => Version::V5,
        (b"MQIsdp", 3) => Version::V3_1,
        _ => return Err(DecodeError::UnsupportedProtocol(level)),
    };
    let v5 = version.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("reserved CONNECT flag set"));
    }
    let (has_will, will_qos, will_retain) = (flags & 0x04 != 0, (flags >> 3) & 0x03, flags & 0x20 != 0);
    let (has_password, has_username) = (flags & 0x40 != 0, flags & 0x80 != 0);
    if !has_will && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed("will QoS or retain without a will"));
    }
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = props(r, v5, Ctx::Connect)?;
    let client_id = r.string()?;
    let will = if has_will {
        let qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
        let properties = props(r, v5, Ctx::Will)?;
        let topic = r.string()?;
        let payload = to_bytes(r.binary()?);
        Some(Will { topic, payload, qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if has_username { Some(r.string()?) } else { None };
    let password = if has_password { Some(to_bytes(r.binary()?)) } else { None };
    let clean_start = flags & 0x02 != 0;
    Ok(Connect { version, clean_start, keep_alive, properties, client_id, will, username, password })
}

fn decode_connack(r: &mut Reader<'_>, v5: bool) -> Result<Packet, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("reserved CONNACK flags set"));
    }
    let code = ReasonCode(r.u8()?);
    let properties = if v5 && !r.is_empty() { Properties::decode(r, Ctx::ConnAck)? } else { Properties::default() };
    Ok(Packet::ConnAck(ConnAck { session_present: flags & 1 == 1, code, properties }))
}

fn decode_publish(flags: u8, r: &mut Reader<'_>, v5: bool) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH QoS 3"))?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce { None } else { Some(packet_id(r)?) };
    let properties = props(r, v5, Ctx::Publish)?;
    let payload = to_bytes(r.rest());
    Ok(Publish { dup, qos, retain: flags & 0x01 != 0, topic, packet_id, properties, payload })
}

fn decode_resp(kind: AckKind, r: &mut Reader<'_>, v5: bool) -> Result<PubResp, DecodeError> {
    let packet_id = packet_id(r)?;
    let reason = if v5 && !r.is_empty() { ReasonCode(r.u8()?) } else { ReasonCode::SUCCESS };
    let properties = if v5 && !r.is_empty() { Properties::decode(r, Ctx::Ack)? } else { Properties::default() };
    Ok(PubResp { kind, packet_id, reason, properties })
}

fn decode_subscribe(r: &mut Reader<'_>, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, v5, Ctx::Subscribe)?;
    if properties.subscription_identifiers.len() > 1 {
        return Err(DecodeError::Protocol("more than one subscription identifier"));
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = r.u8()?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if options & reserved != 0 {
            return Err(DecodeError::Malformed("reserved subscription option bits set"));
        }
        let qos = QoS::from_u8(options & 0x03).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
        let retain_handling = (options >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(DecodeError::Protocol("retain handling 3"));
        }
        let no_local = options & 0x04 != 0;
        if no_local && crate::topic::SharedFilter::parse(&filter).ok().flatten().is_some() {
            return Err(DecodeError::Protocol("no local on a shared subscription"));
        }
        filters.push((filter, SubOptions { qos, no_local, retain_as_published: options & 0x08 != 0, retain_handling }));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe { packet_id, properties, filters })
}

fn decode_suback(r: &mut Reader<'_>, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, v5, Ctx::SubAck)?;
    let codes = r.rest().iter().map(|c| ReasonCode(*c)).collect();
    Ok(SubAck { packet_id, properties, codes })
}

fn decode_unsubscribe(r: &mut Reader<'_>, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, v5, Ctx::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe { packet_id, properties, filters })
}

fn decode_unsuback(r: &mut Reader<'_>, v5: bool) -> Result<Packet, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = props(r, v5, Ctx::UnsubAck)?;
    let codes = r.rest().iter().map(|c| ReasonCode(*c)).collect();
    Ok(Packet::UnsubAck(UnsubAck { packet_id, properties, codes }))
}

fn decode_reason(r: &mut Reader<'_>, v5: bool, ctx: Ctx) -> Result<ReasonPacket, DecodeError> {
    let reason = if v5 && !r.is_empty() { ReasonCode(r.u8()?) } else { ReasonCode::SUCCESS };
    let properties = if v5 && !r.is_empty() { Properties::decode(r, ctx)? } else { Properties::default() };
    Ok(ReasonPacket { reason, properties })
}

/// Appends `packet`, encoded for `version`, to `out`.
pub fn encode(packet: &Packet, version: Version, out: &mut Vec<u8>) {
    let v5 = version.is_v5();
    let mut body = Vec::new();
    let mut tail: &[u8] = &[];
    let mut flags = 0u8;
    match packet {
        Packet::Connect(c) => encode_connect(c, &mut body),
        Packet::ConnAck(c) => {
            body.push(u8::from(c.session_present));
            body.push(if v5 { c.code.0 } else { c.code.to_v3_connack() });
            if v5 {
                c.properties.encode(&mut body);
            }
        }
        Packet::Publish(p) => {
            flags = (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain);
            put_str(&mut body, &p.topic);
            if let Some(id) = p.packet_id {
                put_u16(&mut body, id);
            }
            if v5 {
                p.properties.encode(&mut body);
            }
            tail = &p.payload;
        }
        Packet::PubResp(p) => {
            if p.kind == AckKind::PubRel {
                flags = 0b0010;
            }
            put_u16(&mut body, p.packet_id);
            let has_props = p.properties != Properties::default();
            if v5 && (p.reason != ReasonCode::SUCCESS || has_props) {
                body.push(p.reason.0);
                if has_props {
                    p.properties.encode(&mut body);
                }
            }
        }
        Packet::Subscribe(s) => {
            flags = 0b0010;
            put_u16(&mut body, s.packet_id);
            if v5 {
                s.properties.encode(&mut body);
            }
            for (filter, o) in &s.filters {
                put_str(&mut body, filter);
                let options = (o.qos as u8)
                    | (u8::from(o.no_local) << 2)
                    | (u8::from(o.retain_as_published) << 3)
                    | (o.retain_handling << 4);
                body.push(options);
            }
        }
        Packet::SubAck(s) => {
            put_u16(&mut body, s.packet_id);
            if v5 {
                s.properties.encode(&mut body);
            }
            body.extend(s.codes.iter().map(|c| c.0));
        }
        Packet::Unsubscribe(u) => {
            flags = 0b0010;
            put_u16(&mut body, u.packet_id);
            if v5 {
                u.properties.encode(&mut body);
            }
            for filter in &u.filters {
                put_str(&mut body, filter);
            }
        }
        Packet::UnsubAck(u) => {
            put_u16(&mut body, u.packet_id);
            if v5 {
                u.properties.encode(&mut body);
                body.extend(u.codes.iter().map(|c| c.0));
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) | Packet::Auth(d) => {
            let has_props = d.properties != Properties::default();
            if v5 && (d.reason != ReasonCode::SUCCESS || has_props) {
                body.push(d.reason.0);
                if has_props {
                    d.properties.encode(&mut body);
                }
            }
        }
    }
    out.push((packet.type_number() << 4) | flags);
    put_varint(out, u32::try_from(body.len() + tail.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&body);
    out.extend_from_slice(tail);
}

fn encode_connect(c: &Connect, out: &mut Vec<u8>) {
    let (name, level): (&str, u8) = match c.version {
        Version::V3_1 => ("MQIsdp", 3),
        Version::V3_1_1 => ("MQTT", 4),
        Version::V5 => ("MQTT", 5),
    };
    put_str(out, name);
    out.push(level);
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    flags |= u8::from(c.password.is_some()) << 6;
    flags |= u8::from(c.username.is_some()) << 7;
    out.push(flags);
    put_u16(out, c.keep_alive);
    if c.version.is_v5() {
        c.properties.encode(out);
    }
    put_str(out, &c.client_id);
    if let Some(w) = &c.will {
        if c.version.is_v5() {
            w.properties.encode(out);
        }
        put_str(out, &w.topic);
        put_binary(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(out, u);
    }
    if let Some(p) = &c.password {
        put_binary(out, p);
    }
}

/// The 3.1.1-format CONNACK a server sends to a CONNECT whose level it does not support
/// (§3.1.2.2: return code 0x01, then close).
pub fn unsupported_level_connack(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x20, 0x02, 0x00, 0x01]);
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
