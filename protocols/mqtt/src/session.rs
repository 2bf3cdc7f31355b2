//! The sans-IO MQTT server session of one connection: bytes and time in (`handle_input`,
//! `handle_timeout`), events and bytes out (`poll_event`, `poll_transmit`). Owns the input
//! buffer (bounded by the maximum packet size), CONNECT rules, keep-alive (close after 1.5×),
//! the packet-identifier state of both directions (QoS 1, and QoS 2's PUBREC/PUBREL/PUBCOMP),
//! the receive maximum both ways, topic aliases both ways and the client's maximum packet
//! size. Lives on the shard that owns the connection. Peer errors become the protocol's own
//! answer (CONNACK or DISCONNECT reason code on 5.0, a plain close on 3.1.1) and a close.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ferry_wire::Limits;

use crate::codec::{Decoded, decode, encode, unsupported_level_connack};
use crate::error::DecodeError;
use crate::packet::{
    AckKind, ConnAck, Connect, Packet, PubResp, Publish, QoS, ReasonPacket, SubAck, Subscribe, UnsubAck, Unsubscribe,
    Version,
};
use crate::properties::Properties;
use crate::reason::ReasonCode;
use crate::topic;

mod outbound;
mod parked;

pub use outbound::{Outbound, SendError};
pub use parked::ParkedSession;

/// An empty input buffer larger than this is released rather than kept.
const INPUT_BYTES_KEPT_MAX: usize = 64 * 1024;
/// Bytes a fixed header takes at most (type byte + 4-byte remaining length).
const FIXED_HEADER_BYTES_MAX: usize = 5;

/// What a session needs to know about the broker (`limits.keep_alive_s_max` caps 5.0
/// clients' keep-alive through Server Keep Alive).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub limits: Limits,
}

/// When a session whose client last spoke at `last_received` has missed its keep-alive:
/// 1.5 × keep-alive (§3.1.2.10); never for a keep-alive of 0.
fn keep_alive_deadline(keep_alive_s: u16, last_received: Instant) -> Option<Instant> {
    if keep_alive_s == 0 {
        return None;
    }
    last_received.checked_add(Duration::from_millis(u64::from(keep_alive_s) * 1500))
}

/// Why a session closed itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer broke the protocol; the reason code sent (5.0) or that would have been.
    ProtocolError(ReasonCode, String),
    /// Nothing arrived for 1.5 × the keep-alive.
    KeepAliveTimeout,
    /// No CONNECT within `connect_timeout_ms`.
    ConnectTimeout,
}

/// What the engine must act on, in the order the client caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Answer with [`Session::accept_connect`] or [`Session::refuse_connect`].
    Connect(Box<Connect>),
    /// Topic resolved from any alias. QoS 1/2: answer with [`Session::complete_publish`]
    /// once the message is safe (PUBACK/PUBREC go out then).
    Publish(Publish),
    /// The client acknowledged a QoS 1 (PUBACK) or QoS 2 (PUBREC) delivery: settle it.
    Acked { packet_id: u16 },
    /// The client completed a released QoS 2 delivery (PUBCOMP after our PUBREL): the
    /// packet id is free again.
    Completed { packet_id: u16 },
    /// Answer with [`Session::send_suback`].
    Subscribe(Subscribe),
    /// Answer with [`Session::send_unsuback`].
    Unsubscribe(Unsubscribe),
    /// A DISCONNECT: the will is discarded unless `reason` is 0x04; 5.0 may change the
    /// session expiry.
    Disconnect { reason: ReasonCode, session_expiry: Option<u32> },
    /// The session closed itself (emitted once): the will is published.
    Closed { reason: CloseReason },
}

/// The accepted CONNECT's outcome, for the CONNACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectAnswer {
    pub session_present: bool,
    /// Set when the client sent an empty client id (5.0 tells it back).
    pub assigned_client_id: Option<String>,
    /// 5.0 only: the session expiry the broker grants, if it differs from the request.
    pub session_expiry: Option<u32>,
}

/// A client→broker QoS 1/2 packet id's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundState {
    /// Reported to the engine; PUBACK/PUBREC not yet sent.
    Pending(QoS),
    /// QoS 2: PUBREC sent; waiting for PUBREL.
    Received,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectState {
    Awaiting { deadline: Option<Instant> },
    Pending,
    Accepted,
}

/// The limits a session consults once it runs: a copy of the few it needs, as every idle
/// connection holds one (the whole `Limits` is 136 bytes).
#[derive(Debug, Clone, Copy)]
struct SessionLimits {
    frame_size_bytes_max: usize,
    topic_bytes_max: usize,
    topic_level_count_max: usize,
    inflight_count_max: u16,
    topic_alias_count_max: u16,
    keep_alive_s_max: u16,
}

impl SessionLimits {
    fn of(limits: &Limits) -> SessionLimits {
        SessionLimits {
            frame_size_bytes_max: limits.frame_size_bytes_max,
            topic_bytes_max: limits.topic_bytes_max,
            topic_level_count_max: limits.topic_level_count_max,
            inflight_count_max: limits.inflight_count_max,
            topic_alias_count_max: limits.topic_alias_count_max,
            keep_alive_s_max: limits.keep_alive_s_max,
        }
    }
}

/// One MQTT connection, server side.
#[derive(Debug)]
pub struct Session {
    limits: SessionLimits,
    connect: ConnectState,
    version: Version,
    /// Effective keep-alive in seconds (0 = none).
    keep_alive: u16,
    last_received: Instant,
    /// CONNECT's session expiry (5.0): a DISCONNECT may not raise it from 0.
    connect_session_expiry: u32,
    reading: bool,
    closed: bool,
    now: Instant,
    input: Vec<u8>,
    events: VecDeque<Event>,
    output: Vec<u8>,
    inbound: crate::session::outbound::IdMap<InboundState>,
    /// Client→broker topic aliases (alias → topic), bounded by `topic_alias_count_max`.
    aliases_in: Vec<Option<String>>,
    out: outbound::OutboundState,
}

impl Session {
    /// A session for a socket that opened at `now`.
    pub fn new(config: SessionConfig, now: Instant) -> Session {
        let deadline = match config.limits.connect_timeout_ms {
            0 => None,
            ms => now.checked_add(Duration::from_millis(u64::from(ms))),
        };
        Session {
            limits: SessionLimits::of(&config.limits),
            connect: ConnectState::Awaiting { deadline },
            version: Version::V3_1_1,
            keep_alive: 0,
            last_received: now,
            connect_session_expiry: 0,
            reading: true,
            closed: false,
            now,
            input: Vec::new(),
            events: VecDeque::new(),
            output: Vec::new(),
            inbound: Default::default(),
            aliases_in: Vec::new(),
            out: outbound::OutboundState::default(),
        }
    }

    /// The largest packet accepted from the client (announced as Maximum Packet Size).
    pub fn max_packet_bytes(&self) -> usize {
        self.limits.frame_size_bytes_max
    }

    /// Buffers `bytes`, decodes every complete packet and queues the resulting events.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.observe(now);
        if !self.reading || bytes.is_empty() {
            return;
        }
        self.last_received = self.now;
        if self.input.is_empty() {
            let left = self.parse(bytes);
            if self.reading {
                self.input.extend_from_slice(left);
            }
        } else {
            self.input.extend_from_slice(bytes);
            let input = std::mem::take(&mut self.input);
            let used = input.len() - self.parse(&input).len();
            self.input = input;
            self.input.drain(..used);
        }
        if !self.reading || (self.input.is_empty() && self.input.capacity() > INPUT_BYTES_KEPT_MAX) {
            self.input = Vec::new();
        }
    }

    /// Decodes whole packets from `buf`; returns what is left (an incomplete packet). The
    /// packet size is known (and capped) from the fixed header, so at most one packet of at
    /// most the maximum size is ever buffered.
    fn parse<'a>(&mut self, mut buf: &'a [u8]) -> &'a [u8] {
        while self.reading && self.connect != ConnectState::Pending && !buf.is_empty() {
            if matches!(self.connect, ConnectState::Awaiting { .. }) && buf[0] != 0x10 {
                // Not a CONNECT: no need to wait for the rest of it (§3.1.0-1).
                let why = "first packet is not CONNECT".to_owned();
                self.close_with(CloseReason::ProtocolError(ReasonCode::PROTOCOL_ERROR, why));
                return &[];
            }
            match decode(buf, self.version, self.max_packet_bytes()) {
                Ok(Decoded::Incomplete { need }) => {
                    let wanted = buf.len() + need;
                    if wanted > FIXED_HEADER_BYTES_MAX {
                        self.input.reserve(wanted.min(self.max_packet_bytes()));
                    }
                    return buf;
                }
                Ok(Decoded::Packet { packet, consumed }) => {
                    buf = &buf[consumed..];
                    self.on_packet(packet);
                }
                Err(error) => {
                    self.decode_error(error);
                    return &[];
                }
            }
        }
        buf
    }

    /// The next event for the engine. Once drained, the event queue's memory is released
    /// (an event holds a whole packet; idle connections should not keep room for several).
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        if event.is_none() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        event
    }

    /// Appends every pending output byte to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.output);
        } else {
            out.append(&mut self.output);
        }
    }

    pub fn pending_output_bytes(&self) -> usize {
        self.output.len()
    }

    /// The earliest instant `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        match self.connect {
            ConnectState::Awaiting { deadline } => deadline,
            ConnectState::Pending => None,
            ConnectState::Accepted => self.keep_alive_deadline(),
        }
    }

    fn keep_alive_deadline(&self) -> Option<Instant> {
        keep_alive_deadline(self.keep_alive, self.last_received)
    }

    /// Closes on a missed keep-alive or connect timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        if self.closed {
            return;
        }
        match self.connect {
            ConnectState::Awaiting { deadline: Some(deadline) } if now >= deadline => {
                self.close_with(CloseReason::ConnectTimeout);
            }
            ConnectState::Accepted if self.keep_alive_deadline().is_some_and(|at| now >= at) => {
                self.send_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT, Properties::default());
                self.close_with(CloseReason::KeepAliveTimeout);
            }
            _ => {}
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The effective keep-alive in seconds (0 = none).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Client publishes reported to the engine and not yet acknowledged: the runtime stops
    /// reading while this reaches the receive maximum (3.1.1 clients have no such limit).
    pub fn inbound_held(&self) -> bool {
        let pending = self.inbound.values().filter(|s| matches!(s, InboundState::Pending(_))).count();
        pending >= usize::from(self.limits.inflight_count_max)
    }

    /// QoS 2 packet ids awaiting PUBREL (kept by the engine across reconnects).
    pub fn inbound_received(&self) -> Vec<u16> {
        self.inbound.iter().filter(|(_, s)| **s == InboundState::Received).map(|(id, _)| id).collect()
    }

    /// Restores QoS 2 ids awaiting PUBREL from an earlier connection of the same session, so
    /// a re-sent PUBLISH is not delivered twice.
    pub fn restore_inbound_received(&mut self, ids: &[u16]) {
        for id in ids {
            self.inbound.insert(*id, InboundState::Received);
        }
    }

    /// Accepts the pending CONNECT: writes CONNACK and starts the keep-alive timer.
    pub fn accept_connect(&mut self, answer: ConnectAnswer) {
        if self.closed || self.connect != ConnectState::Pending {
            return;
        }
        self.connect = ConnectState::Accepted;
        self.last_received = self.now;
        let mut properties = Properties::default();
        if self.version.is_v5() {
            let limits = &self.limits;
            properties = Properties {
                assigned_client_identifier: answer.assigned_client_id,
                session_expiry_interval: answer.session_expiry,
                receive_maximum: Some(limits.inflight_count_max),
                topic_alias_maximum: Some(limits.topic_alias_count_max),
                maximum_packet_size: u32::try_from(limits.frame_size_bytes_max).ok(),
                retain_available: Some(1),
                wildcard_subscription_available: Some(1),
                subscription_identifier_available: Some(1),
                shared_subscription_available: Some(1),
                server_keep_alive: self.out.server_keep_alive,
                ..Properties::default()
            };
        }
        let connack = ConnAck { session_present: answer.session_present, code: ReasonCode::SUCCESS, properties };
        self.write(&Packet::ConnAck(connack));
        self.resume();
    }

    /// Parses what arrived behind the CONNECT while it waited for the engine, so nothing is
    /// answered before the CONNACK.
    fn resume(&mut self) {
        if self.input.is_empty() {
            return;
        }
        let input = std::mem::take(&mut self.input);
        let used = input.len() - self.parse(&input).len();
        self.input = input;
        self.input.drain(..used.min(self.input.len()));
    }

    /// Refuses the pending CONNECT with `code` (3.1.1 gets the nearest return code) and closes.
    pub fn refuse_connect(&mut self, code: ReasonCode, reason: Option<String>) {
        if self.closed {
            return;
        }
        self.write_connack_error(code, reason);
        self.close();
    }

    /// Sends PUBACK (QoS 1) or PUBREC (QoS 2) for a client publish the engine has made safe.
    pub fn complete_publish(&mut self, packet_id: u16, reason: ReasonCode) {
        let Some(InboundState::Pending(qos)) = self.inbound.get(packet_id) else {
            return;
        };
        let kind = if qos == QoS::ExactlyOnce { AckKind::PubRec } else { AckKind::PubAck };
        if kind == AckKind::PubRec && !reason.is_error() {
            self.inbound.insert(packet_id, InboundState::Received);
        } else {
            self.inbound.remove(packet_id);
        }
        self.send_resp(kind, packet_id, reason);
    }

    pub fn send_suback(&mut self, packet_id: u16, codes: Vec<ReasonCode>) {
        let codes = if self.version.is_v5() {
            codes
        } else {
            codes.into_iter().map(|c| if c.is_error() { ReasonCode::UNSPECIFIED_ERROR } else { c }).collect()
        };
        self.write(&Packet::SubAck(SubAck { packet_id, properties: Properties::default(), codes }));
    }

    pub fn send_unsuback(&mut self, packet_id: u16, codes: Vec<ReasonCode>) {
        let codes = if self.version.is_v5() { codes } else { Vec::new() };
        self.write(&Packet::UnsubAck(UnsubAck { packet_id, properties: Properties::default(), codes }));
    }

    /// Ends the connection from the broker's side: 5.0 gets DISCONNECT with `reason` (and a
    /// Server Reference for "use another server"/"server moved"); 3.1.1 is just closed.
    pub fn disconnect(&mut self, reason: ReasonCode, server_reference: Option<String>) {
        if self.closed {
            return;
        }
        let properties = Properties { server_reference, ..Properties::default() };
        self.send_disconnect(reason, properties);
        self.close();
    }

    /// Stops reading and marks the session closed; queued output is still flushed.
    pub fn close(&mut self) {
        self.closed = true;
        self.reading = false;
    }

    fn observe(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn on_packet(&mut self, packet: Packet) {
        match (self.connect, packet) {
            (ConnectState::Awaiting { .. }, Packet::Connect(connect)) => self.on_connect(*connect),
            (ConnectState::Awaiting { .. }, _) => {
                // §3.1.0-1: the first packet must be CONNECT; close without an answer.
                self.close_with(CloseReason::ProtocolError(ReasonCode::PROTOCOL_ERROR, "packet before CONNECT".into()));
            }
            (_, Packet::Connect(_)) => self.protocol_error(ReasonCode::PROTOCOL_ERROR, "second CONNECT"),
            (_, Packet::Publish(publish)) => self.on_publish(publish),
            (_, Packet::PubResp(resp)) => self.on_resp(resp),
            (_, Packet::Subscribe(subscribe)) => self.on_subscribe(subscribe),
            (_, Packet::Unsubscribe(unsubscribe)) => self.on_unsubscribe(unsubscribe),
            (_, Packet::PingReq) => self.write(&Packet::PingResp),
            (_, Packet::Disconnect(d)) => self.on_disconnect(d),
            (_, Packet::Auth(_)) => {
                self.protocol_error(ReasonCode::PROTOCOL_ERROR, "AUTH without an authentication method")
            }
            (_, Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp) => {
                self.protocol_error(ReasonCode::PROTOCOL_ERROR, "a server-to-client packet from the client")
            }
        }
    }

    fn on_connect(&mut self, connect: Connect) {
        self.version = connect.version;
        let v5 = connect.version.is_v5();
        let limits = &self.limits;
        if connect.client_id.is_empty() && !connect.clean_start && !v5 {
            // §3.1.3-8: 3.1.1 refuses an empty id without clean session (return code 2).
            return self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, "empty client id needs clean session");
        }
        if connect.client_id.len() > limits.topic_bytes_max {
            return self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, "client id too long");
        }
        if let Some(will) = &connect.will
            && topic::validate_name(&will.topic, limits.topic_bytes_max, limits.topic_level_count_max).is_err()
        {
            return self.refuse(ReasonCode::TOPIC_NAME_INVALID, "invalid will topic");
        }
        if connect.properties.authentication_method.is_some() {
            // No enhanced authentication method is supported (§4.12): a clean refusal.
            return self.refuse(ReasonCode::BAD_AUTHENTICATION_METHOD, "no authentication methods are supported");
        }
        let props = &connect.properties;
        self.connect_session_expiry = props.session_expiry_interval.unwrap_or(0);
        self.out.configure(props, self.limits.topic_alias_count_max);
        let max = self.limits.keep_alive_s_max;
        self.keep_alive = connect.keep_alive;
        if max > 0 && (connect.keep_alive == 0 || connect.keep_alive > max) && v5 {
            self.keep_alive = max;
            self.out.server_keep_alive = Some(max);
        }
        self.connect = ConnectState::Pending;
        self.events.push_back(Event::Connect(Box::new(connect)));
    }

    fn refuse(&mut self, code: ReasonCode, why: &str) {
        self.write_connack_error(code, None);
        self.close_with(CloseReason::ProtocolError(code, why.to_owned()));
    }

    fn write_connack_error(&mut self, code: ReasonCode, reason_string: Option<String>) {
        let properties = Properties { reason_string, ..Properties::default() };
        let properties = if self.version.is_v5() { properties } else { Properties::default() };
        self.write(&Packet::ConnAck(ConnAck { session_present: false, code, properties }));
    }

    fn on_publish(&mut self, mut publish: Publish) {
        let limits = &self.limits;
        if let Some(alias) = publish.properties.topic_alias.take() {
            if alias > limits.topic_alias_count_max {
                return self.protocol_error(ReasonCode::TOPIC_ALIAS_INVALID, "topic alias above the maximum");
            }
            let slot = usize::from(alias - 1);
            if publish.topic.is_empty() {
                match self.aliases_in.get(slot).cloned().flatten() {
                    Some(topic) => publish.topic = topic,
                    None => return self.protocol_error(ReasonCode::PROTOCOL_ERROR, "unknown topic alias"),
                }
            } else {
                if self.aliases_in.len() <= slot {
                    self.aliases_in.resize(slot + 1, None);
                }
                self.aliases_in[slot] = Some(publish.topic.clone());
            }
        }
        if topic::validate_name(&publish.topic, limits.topic_bytes_max, limits.topic_level_count_max).is_err() {
            return self.protocol_error(ReasonCode::TOPIC_NAME_INVALID, "invalid topic name");
        }
        let Some(packet_id) = publish.packet_id else {
            self.events.push_back(Event::Publish(publish));
            return;
        };
        match (publish.qos, self.inbound.get(packet_id)) {
            (QoS::ExactlyOnce, Some(InboundState::Received)) => {
                // A re-sent PUBLISH whose PUBREC was lost: acknowledge again, deliver once.
                self.send_resp(AckKind::PubRec, packet_id, ReasonCode::SUCCESS);
                return;
            }
            (QoS::ExactlyOnce, Some(InboundState::Pending(_))) => return,
            _ => {}
        }
        if self.version.is_v5() && self.inbound.len() >= usize::from(self.limits.inflight_count_max) {
            return self.protocol_error(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded");
        }
        self.inbound.insert(packet_id, InboundState::Pending(publish.qos));
        self.events.push_back(Event::Publish(publish));
    }

    fn on_resp(&mut self, resp: PubResp) {
        let id = resp.packet_id;
        match resp.kind {
            AckKind::PubRel => {
                let reason = match self.inbound.get(id) {
                    Some(InboundState::Received) => {
                        self.inbound.remove(id);
                        ReasonCode::SUCCESS
                    }
                    Some(InboundState::Pending(_)) => {
                        // PUBREL before our PUBREC: the message is already with the engine.
                        self.inbound.remove(id);
                        ReasonCode::SUCCESS
                    }
                    None => ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                };
                self.send_resp(AckKind::PubComp, id, reason);
            }
            AckKind::PubAck | AckKind::PubRec | AckKind::PubComp => {
                let v5 = self.version.is_v5();
                let mut reply = Vec::new();
                if let Some(packet_id) = self.out.on_resp(resp.kind, id, resp.reason, v5, &mut reply) {
                    let event = if resp.kind == AckKind::PubComp {
                        Event::Completed { packet_id }
                    } else {
                        Event::Acked { packet_id }
                    };
                    self.events.push_back(event);
                }
                for packet in reply {
                    self.write(&packet);
                }
            }
        }
    }

    fn on_subscribe(&mut self, subscribe: Subscribe) {
        self.events.push_back(Event::Subscribe(subscribe));
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        self.events.push_back(Event::Unsubscribe(unsubscribe));
    }

    fn on_disconnect(&mut self, d: ReasonPacket) {
        let session_expiry = d.properties.session_expiry_interval;
        if self.connect_session_expiry == 0 && session_expiry.is_some_and(|e| e > 0) {
            // §3.14.2.2.2: a session expiry set at DISCONNECT may not turn 0 into non-0.
            return self.protocol_error(ReasonCode::PROTOCOL_ERROR, "session expiry raised from 0 at DISCONNECT");
        }
        self.reading = false;
        self.closed = true;
        self.events.push_back(Event::Disconnect { reason: d.reason, session_expiry });
    }

    fn decode_error(&mut self, error: DecodeError) {
        let why = error.to_string();
        match (self.connect, error) {
            (ConnectState::Awaiting { .. }, DecodeError::UnsupportedProtocol(_)) => {
                unsupported_level_connack(&mut self.output);
                self.close_with(CloseReason::ProtocolError(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, why));
            }
            (ConnectState::Awaiting { .. }, error) => {
                // A 5.0 CONNECT that fails to parse still tells us its level only if the
                // fixed part parsed; answer 5.0 peers we know of, close the rest.
                if self.version.is_v5() {
                    self.write_connack_error(error.reason(), None);
                }
                self.close_with(CloseReason::ProtocolError(error.reason(), why));
            }
            (_, error) => self.protocol_error(error.reason(), &why),
        }
    }

    /// A broken rule after CONNECT: 5.0 gets DISCONNECT with the reason; then close.
    fn protocol_error(&mut self, reason: ReasonCode, why: &str) {
        if self.closed {
            return;
        }
        self.send_disconnect(reason, Properties { reason_string: Some(why.to_owned()), ..Properties::default() });
        self.close_with(CloseReason::ProtocolError(reason, why.to_owned()));
    }

    fn send_disconnect(&mut self, reason: ReasonCode, properties: Properties) {
        if self.version.is_v5() && self.connect == ConnectState::Accepted {
            self.write(&Packet::Disconnect(ReasonPacket { reason, properties }));
        }
    }

    fn close_with(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.close();
        self.events.push_back(Event::Closed { reason });
    }

    fn send_resp(&mut self, kind: AckKind, packet_id: u16, reason: ReasonCode) {
        let reason = if self.version.is_v5() { reason } else { ReasonCode::SUCCESS };
        self.write(&Packet::PubResp(PubResp { kind, packet_id, reason, properties: Properties::default() }));
    }

    fn write(&mut self, packet: &Packet) {
        encode(packet, self.version, &mut self.output);
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
