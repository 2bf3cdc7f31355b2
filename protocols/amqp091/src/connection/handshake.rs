//! The connection-class half of [`Connection`]: protocol header, connection.start with
//! RabbitMQ's server properties and capabilities, start-ok (PLAIN and AMQPLAIN responses
//! decoded here), tune / tune-ok negotiation, open, and client-initiated close. Also maps
//! method decode errors to reply codes. Same shard and bounds as the connection.

use std::time::Duration;

use bytes::Bytes;

use super::{Connection, Fault, Heartbeat, Phase, Tuning};
use crate::error::DecodeError;
use crate::event::Event;
use crate::generated::{
    CHANNEL_ERROR, COMMAND_INVALID, ConnectionStart, ConnectionStartOk, ConnectionTune, ConnectionTuneOk,
    FRAME_MIN_SIZE, Method, NOT_ALLOWED, NOT_IMPLEMENTED, PROTOCOL_HEADER, SYNTAX_ERROR, VERSION_MAJOR, VERSION_MINOR,
};
use crate::table::{FieldTable, FieldValue};

/// AMQP 0-9's header, which RabbitMQ also serves as 0-9-1.
pub(crate) const PROTOCOL_HEADER_0_9: &[u8; 8] = b"AMQP\x01\x01\x00\x09";

/// The capabilities RabbitMQ advertises in server-properties, all true.
pub const CAPABILITIES: [&str; 9] = [
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "consumer_priorities",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
];

/// SASL mechanisms offered in connection.start.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

/// The reply to a method payload that does not decode: 540 for an unknown class/method,
/// 502 for malformed arguments (naming the method when its ids were readable).
pub(crate) fn decode_fault(payload: &[u8], error: &DecodeError) -> Fault {
    let id = |at: usize| payload.get(at..at + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    match *error {
        DecodeError::UnknownMethod { class_id, method_id } => {
            Fault::new(NOT_IMPLEMENTED, format!("unknown method {class_id}/{method_id}"), class_id, method_id)
        }
        ref other => {
            let (class_id, method_id) = (id(0), id(2));
            let name = crate::generated::method_name(class_id, method_id).unwrap_or("method");
            Fault::new(SYNTAX_ERROR, format!("malformed {name}: {other}"), class_id, method_id)
        }
    }
}

impl Connection {
    /// Checks the buffered protocol header; true once it was accepted (connection.start sent).
    /// A header that cannot be 0-9-1 gets ours back and the connection closes (spec §4.2.2).
    pub(super) fn parse_protocol_header(&mut self) -> bool {
        let got = &self.input[..self.input.len().min(PROTOCOL_HEADER.len())];
        if !PROTOCOL_HEADER.starts_with(got) && !PROTOCOL_HEADER_0_9.starts_with(got) {
            self.output.extend_from_slice(PROTOCOL_HEADER);
            self.finish("unsupported protocol header");
            return false;
        }
        if got.len() < PROTOCOL_HEADER.len() {
            return false;
        }
        let _ = self.input.split_to(PROTOCOL_HEADER.len());
        self.phase = Phase::Start;
        let start = self.start_method();
        self.write_method(0, &Method::ConnectionStart(start));
        true
    }

    fn start_method(&self) -> ConnectionStart {
        let capabilities: FieldTable = CAPABILITIES.iter().map(|&name| (name, FieldValue::Bool(true))).collect();
        let server_properties: FieldTable = [
            ("capabilities", FieldValue::Table(capabilities)),
            ("product", FieldValue::string(&self.config.product)),
            ("version", FieldValue::string(&self.config.version)),
            ("platform", FieldValue::string("Rust")),
            ("information", FieldValue::string("Ferry message broker")),
        ]
        .into_iter()
        .collect();
        ConnectionStart {
            version_major: VERSION_MAJOR,
            version_minor: VERSION_MINOR,
            server_properties,
            mechanisms: Bytes::from_static(MECHANISMS.as_bytes()),
            locales: Bytes::from_static(b"en_US"),
        }
    }

    pub(super) fn send_tune(&mut self) {
        let tune = ConnectionTune {
            channel_max: self.config.channel_max,
            frame_max: self.frame_max_offered,
            heartbeat: self.config.heartbeat_s,
        };
        self.write_method(0, &Method::ConnectionTune(tune));
    }

    pub(super) fn on_connection_method(&mut self, method: Method) {
        match (self.phase, method) {
            (_, Method::ConnectionClose(close)) => {
                self.closed_by_peer = true;
                self.write_method(0, &Method::ConnectionCloseOk(Default::default()));
                let reason = format!("client closed the connection: {} {}", close.reply_code, close.reply_text);
                self.finish(&reason);
            }
            (Phase::Start, Method::ConnectionStartOk(start_ok)) => self.on_start_ok(start_ok),
            (Phase::Tune, Method::ConnectionTuneOk(tune_ok)) => self.on_tune_ok(tune_ok),
            (Phase::Open, Method::ConnectionOpen(open)) => {
                self.phase = Phase::OpenPending;
                self.events.push_back(Event::Open { vhost: open.virtual_host });
            }
            (Phase::Running, method @ Method::ConnectionUpdateSecret(_)) => {
                self.fault(Fault::on(NOT_IMPLEMENTED, "connection.update-secret is not supported", &method));
            }
            (phase, method) => {
                let text = format!("unexpected method {} in connection state {}", method.name(), phase.name());
                self.fault(Fault::on(CHANNEL_ERROR, text, &method));
            }
        }
    }

    fn on_start_ok(&mut self, start_ok: ConnectionStartOk) {
        let method = Method::ConnectionStartOk(Default::default());
        let credentials = match start_ok.mechanism.as_str() {
            "PLAIN" => plain(&start_ok.response),
            "AMQPLAIN" => amqplain(&start_ok.response),
            other => {
                let text = format!("unknown authentication mechanism '{other}'");
                return self.fault(Fault::on(COMMAND_INVALID, text, &method));
            }
        };
        let Some((username, password)) = credentials else {
            let text = format!("{} response is invalid", start_ok.mechanism);
            return self.fault(Fault::on(SYNTAX_ERROR, text, &method));
        };
        self.phase = Phase::LoginPending;
        self.events.push_back(Event::Login { mechanism: start_ok.mechanism, username, password });
    }

    /// Settles tuning like RabbitMQ: a client value above ours (or below FRAME_MIN_SIZE for
    /// frame-max) is 530 NOT_ALLOWED naming connection.tune; 0 from the client means "no
    /// limit of mine", so ours applies.
    fn on_tune_ok(&mut self, tune_ok: ConnectionTuneOk) {
        let refuse = |what: &str, value: u32, rel: &str, bound: u32| {
            let text = format!("negotiated {what} = {value} is {rel} than the allowed value ({bound})");
            Fault::new(NOT_ALLOWED, text, 10, 30)
        };
        let offered_frame = self.frame_max_offered;
        let frame_max = match tune_ok.frame_max {
            0 => offered_frame,
            n if n < FRAME_MIN_SIZE => return self.fault(refuse("frame_max", n, "lower", FRAME_MIN_SIZE)),
            n if n > offered_frame => return self.fault(refuse("frame_max", n, "higher", offered_frame)),
            n => n,
        };
        let offered_channels = self.config.channel_max;
        let channel_max = match tune_ok.channel_max {
            0 => offered_channels,
            n if offered_channels != 0 && n > offered_channels => {
                return self.fault(refuse("channel_max", n.into(), "higher", offered_channels.into()));
            }
            n => n,
        };
        let heartbeat_s = tune_ok.heartbeat;
        self.tuning = Tuning { channel_max, frame_max, heartbeat_s };
        self.heartbeat = (heartbeat_s > 0).then(|| Heartbeat {
            interval: Duration::from_secs(heartbeat_s.into()),
            last_sent: self.now,
            last_received: self.now,
        });
        self.phase = Phase::Open;
    }
}

/// SASL PLAIN: `[authzid] \0 username \0 password`, both UTF-8.
fn plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|&b| b == 0);
    let (_authzid, user, pass) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((String::from_utf8(user.to_vec()).ok()?, String::from_utf8(pass.to_vec()).ok()?))
}

/// AMQPLAIN: a field table without its size prefix, with LOGIN and PASSWORD long strings.
fn amqplain(response: &[u8]) -> Option<(String, String)> {
    let table = FieldTable::decode_entries(response).ok()?;
    let text = |name: &str| table.get(name).and_then(FieldValue::as_str).map(str::to_owned);
    Some((text("LOGIN")?, text("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_responses() {
        assert_eq!(plain(b"\0guest\0secret"), Some(("guest".into(), "secret".into())));
        assert_eq!(plain(b"admin\0guest\0secret"), Some(("guest".into(), "secret".into())));
        assert_eq!(plain(b"\0guest"), None);
        assert_eq!(plain(b"\0a\0b\0c"), None);
        assert_eq!(plain(b"\0\xff\0b"), None);
    }

    #[test]
    fn amqplain_responses() {
        let table: FieldTable =
            [("LOGIN", FieldValue::string("u")), ("PASSWORD", FieldValue::string("p"))].into_iter().collect();
        let mut body = Vec::new();
        table.encode_entries(&mut body);
        assert_eq!(amqplain(&body), Some(("u".into(), "p".into())));
        assert_eq!(amqplain(&body[..body.len() - 1]), None);
        let mut missing = Vec::new();
        [("LOGIN", FieldValue::string("u"))].into_iter().collect::<FieldTable>().encode_entries(&mut missing);
        assert_eq!(amqplain(&missing), None);
    }
}
