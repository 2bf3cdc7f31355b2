//! MQTT 5.0 properties (§2.2.2): every property identifier, decoded into one struct with a
//! field per property, checked against the packet it arrived in (a property a packet may not
//! carry is malformed; a repeated single-valued property is a protocol error). 3.1.1 packets
//! have no property section. Bounded by the packet's size; nothing is read past it.

use bytes::Bytes;

use crate::bytes_io::{Reader, put_binary, put_str, put_u16, put_u32, put_varint, varint_len};
use crate::error::DecodeError;

/// Where a property section sits; decides which properties are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Every MQTT 5.0 property. `None`/empty = absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// Repeated in PUBLISH (one per matching subscription); at most one in SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Whether property `pid` may appear in `ctx` (§2.2.2.2 table).
fn allowed(pid: u8, ctx: PropertyContext) -> bool {
    use PropertyContext as C;
    use id::*;
    match pid {
        PAYLOAD_FORMAT_INDICATOR | MESSAGE_EXPIRY_INTERVAL | CONTENT_TYPE | RESPONSE_TOPIC | CORRELATION_DATA => {
            matches!(ctx, C::Publish | C::Will)
        }
        SUBSCRIPTION_IDENTIFIER => matches!(ctx, C::Publish | C::Subscribe),
        SESSION_EXPIRY_INTERVAL => matches!(ctx, C::Connect | C::ConnAck | C::Disconnect),
        ASSIGNED_CLIENT_IDENTIFIER
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => ctx == C::ConnAck,
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => matches!(ctx, C::Connect | C::ConnAck | C::Auth),
        REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION => ctx == C::Connect,
        WILL_DELAY_INTERVAL => ctx == C::Will,
        SERVER_REFERENCE => matches!(ctx, C::ConnAck | C::Disconnect),
        REASON_STRING => !matches!(ctx, C::Connect | C::Will | C::Publish | C::Subscribe | C::Unsubscribe),
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => matches!(ctx, C::Connect | C::ConnAck),
        TOPIC_ALIAS => ctx == C::Publish,
        USER_PROPERTY => true,
        _ => false,
    }
}

fn set<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("a property appears twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn flag(value: u8) -> Result<u8, DecodeError> {
    if value > 1 {
        return Err(DecodeError::Protocol("a 0/1 property has another value"));
    }
    Ok(value)
}

impl Properties {
    /// Reads a property section (length, then properties) for `ctx`.
    pub fn decode(r: &mut Reader<'_>, ctx: PropertyContext) -> Result<Properties, DecodeError> {
        let len = r.varint()? as usize;
        let mut section = Reader::new(r.take(len)?);
        let mut p = Properties::default();
        while !section.is_empty() {
            let pid = section.u8()?;
            if !allowed(pid, ctx) {
                return Err(DecodeError::Malformed("a property this packet may not carry"));
            }
            p.read_one(pid, &mut section)?;
        }
        Ok(p)
    }

    fn read_one(&mut self, pid: u8, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        use id::*;
        match pid {
            PAYLOAD_FORMAT_INDICATOR => set(&mut self.payload_format_indicator, flag(r.u8()?)?),
            MESSAGE_EXPIRY_INTERVAL => set(&mut self.message_expiry_interval, r.u32()?),
            CONTENT_TYPE => set(&mut self.content_type, r.string()?),
            RESPONSE_TOPIC => {
                let topic = r.string()?;
                crate::topic::validate_name(&topic, usize::from(u16::MAX), usize::MAX)?;
                set(&mut self.response_topic, topic)
            }
            CORRELATION_DATA => set(&mut self.correlation_data, Bytes::copy_from_slice(r.binary()?)),
            SUBSCRIPTION_IDENTIFIER => {
                let value = r.varint()?;
                if value == 0 {
                    return Err(DecodeError::Protocol("subscription identifier 0"));
                }
                self.subscription_identifiers.push(value);
                Ok(())
            }
            SESSION_EXPIRY_INTERVAL => set(&mut self.session_expiry_interval, r.u32()?),
            ASSIGNED_CLIENT_IDENTIFIER => set(&mut self.assigned_client_identifier, r.string()?),
            SERVER_KEEP_ALIVE => set(&mut self.server_keep_alive, r.u16()?),
            AUTHENTICATION_METHOD => set(&mut self.authentication_method, r.string()?),
            AUTHENTICATION_DATA => set(&mut self.authentication_data, Bytes::copy_from_slice(r.binary()?)),
            REQUEST_PROBLEM_INFORMATION => set(&mut self.request_problem_information, flag(r.u8()?)?),
            WILL_DELAY_INTERVAL => set(&mut self.will_delay_interval, r.u32()?),
            REQUEST_RESPONSE_INFORMATION => set(&mut self.request_response_information, flag(r.u8()?)?),
            RESPONSE_INFORMATION => set(&mut self.response_information, r.string()?),
            SERVER_REFERENCE => set(&mut self.server_reference, r.string()?),
            REASON_STRING => set(&mut self.reason_string, r.string()?),
            RECEIVE_MAXIMUM => match r.u16()? {
                0 => Err(DecodeError::Protocol("receive maximum 0")),
                v => set(&mut self.receive_maximum, v),
            },
            TOPIC_ALIAS_MAXIMUM => set(&mut self.topic_alias_maximum, r.u16()?),
            TOPIC_ALIAS => match r.u16()? {
                0 => Err(DecodeError::Protocol("topic alias 0")),
                v => set(&mut self.topic_alias, v),
            },
            MAXIMUM_QOS => set(&mut self.maximum_qos, flag(r.u8()?)?),
            RETAIN_AVAILABLE => set(&mut self.retain_available, flag(r.u8()?)?),
            USER_PROPERTY => {
                let pair = (r.string()?, r.string()?);
                self.user_properties.push(pair);
                Ok(())
            }
            MAXIMUM_PACKET_SIZE => match r.u32()? {
                0 => Err(DecodeError::Protocol("maximum packet size 0")),
                v => set(&mut self.maximum_packet_size, v),
            },
            WILDCARD_SUBSCRIPTION_AVAILABLE => set(&mut self.wildcard_subscription_available, flag(r.u8()?)?),
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => set(&mut self.subscription_identifier_available, flag(r.u8()?)?),
            SHARED_SUBSCRIPTION_AVAILABLE => set(&mut self.shared_subscription_available, flag(r.u8()?)?),
            _ => Err(DecodeError::Malformed("unknown property identifier")),
        }
    }

    /// Writes the property section (length first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        self.encode_body(&mut body);
        put_varint(out, u32::try_from(body.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&body);
    }

    /// Bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        let mut body = Vec::new();
        self.encode_body(&mut body);
        varint_len(u32::try_from(body.len()).unwrap_or(u32::MAX)) + body.len()
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        use id::*;
        let byte = |out: &mut Vec<u8>, pid: u8, v: Option<u8>| {
            if let Some(v) = v {
                out.extend_from_slice(&[pid, v]);
            }
        };
        let short = |out: &mut Vec<u8>, pid: u8, v: Option<u16>| {
            if let Some(v) = v {
                out.push(pid);
                put_u16(out, v);
            }
        };
        let long = |out: &mut Vec<u8>, pid: u8, v: Option<u32>| {
            if let Some(v) = v {
                out.push(pid);
                put_u32(out, v);
            }
        };
        let text = |out: &mut Vec<u8>, pid: u8, v: &Option<String>| {
            if let Some(v) = v {
                out.push(pid);
                put_str(out, v);
            }
        };
        let bin = |out: &mut Vec<u8>, pid: u8, v: &Option<Bytes>| {
            if let Some(v) = v {
                out.push(pid);
                put_binary(out, v);
            }
        };
        byte(out, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        long(out, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        text(out, CONTENT_TYPE, &self.content_type);
        text(out, RESPONSE_TOPIC, &self.response_topic);
        bin(out, CORRELATION_DATA, &self.correlation_data);
        for v in &self.subscription_identifiers {
            out.push(SUBSCRIPTION_IDENTIFIER);
            put_varint(out, *v);
        }
        long(out, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        text(out, ASSIGNED_CLIENT_IDENTIFIER, &self.assigned_client_identifier);
        short(out, SERVER_KEEP_ALIVE, self.server_keep_alive);
        text(out, AUTHENTICATION_METHOD, &self.authentication_method);
        bin(out, AUTHENTICATION_DATA, &self.authentication_data);
        byte(out, REQUEST_PROBLEM_INFORMATION, self.request_problem_information);
        long(out, WILL_DELAY_INTERVAL, self.will_delay_interval);
        byte(out, REQUEST_RESPONSE_INFORMATION, self.request_response_information);
        text(out, RESPONSE_INFORMATION, &self.response_information);
        text(out, SERVER_REFERENCE, &self.server_reference);
        text(out, REASON_STRING, &self.reason_string);
        short(out, RECEIVE_MAXIMUM, self.receive_maximum);
        short(out, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        short(out, TOPIC_ALIAS, self.topic_alias);
        byte(out, MAXIMUM_QOS, self.maximum_qos);
        byte(out, RETAIN_AVAILABLE, self.retain_available);
        for (k, v) in &self.user_properties {
            out.push(USER_PROPERTY);
            put_str(out, k);
            put_str(out, v);
        }
        long(out, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        byte(out, WILDCARD_SUBSCRIPTION_AVAILABLE, self.wildcard_subscription_available);
        byte(out, SUBSCRIPTION_IDENTIFIER_AVAILABLE, self.subscription_identifier_available);
        byte(out, SHARED_SUBSCRIPTION_AVAILABLE, self.shared_subscription_available);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(p: &Properties, ctx: PropertyContext) -> Result<Properties, DecodeError> {
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out.len(), p.encoded_len());
        Properties::decode(&mut Reader::new(&out), ctx)
    }

    #[test]
    fn publish_properties_round_trip() {
        let p = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            subscription_identifiers: vec![1, 268_435_455],
            topic_alias: Some(3),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            ..Properties::default()
        };
        assert_eq!(round_trip(&p, PropertyContext::Publish), Ok(p));
    }

    #[test]
    fn connack_properties_round_trip() {
        let p = Properties {
            session_expiry_interval: Some(10),
            assigned_client_identifier: Some("auto-1".into()),
            server_keep_alive: Some(30),
            receive_maximum: Some(100),
            topic_alias_maximum: Some(10),
            maximum_qos: Some(1),
            retain_available: Some(1),
            maximum_packet_size: Some(1 << 20),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            shared_subscription_available: Some(1),
            server_reference: Some("other:1883".into()),
            reason_string: Some("ok".into()),
            response_information: Some("resp/".into()),
            authentication_method: Some("m".into()),
            authentication_data: Some(Bytes::from_static(b"d")),
            ..Properties::default()
        };
        assert_eq!(round_trip(&p, PropertyContext::ConnAck), Ok(p));
    }

    #[test]
    fn wrong_context_and_duplicates_are_refused() {
        let p = Properties { topic_alias: Some(1), ..Properties::default() };
        assert!(matches!(round_trip(&p, PropertyContext::Connect), Err(DecodeError::Malformed(_))));
        // Two session-expiry properties in one CONNECT.
        let bytes = [10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
        assert!(matches!(
            Properties::decode(&mut Reader::new(&bytes), PropertyContext::Connect),
            Err(DecodeError::Protocol(_))
        ));
        let zero_receive_max = [3, 0x21, 0, 0];
        assert!(Properties::decode(&mut Reader::new(&zero_receive_max), PropertyContext::Connect).is_err());
    }
}
