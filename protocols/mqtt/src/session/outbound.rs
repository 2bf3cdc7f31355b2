//! The broker→client direction of a session: packet-identifier allocation, the in-flight
//! window bounded by the client's Receive Maximum, QoS 1 (PUBACK) and QoS 2
//! (PUBREC → PUBREL → PUBCOMP) tracking, topic aliases up to the client's Topic Alias
//! Maximum, and the client's Maximum Packet Size (too-large messages are not sent).

use std::collections::HashMap;

use bytes::Bytes;

use super::Session;
use crate::codec::encode;
use crate::packet::{AckKind, Packet, PubResp, Publish, QoS};
use crate::properties::Properties;
use crate::reason::ReasonCode;

/// A small map keyed by packet identifier.
pub type IdMap<T> = PacketIds<T>;

/// Packet identifier → state. Touched twice per QoS 1/2 message: foldhash, not SipHash.
#[derive(Debug)]
pub struct PacketIds<T> {
    map: HashMap<u16, T, foldhash::fast::RandomState>,
}

impl<T> Default for PacketIds<T> {
    fn default() -> Self {
        PacketIds { map: HashMap::default() }
    }
}

impl<T: Copy> PacketIds<T> {
    pub fn get(&self, id: u16) -> Option<T> {
        self.map.get(&id).copied()
    }
    pub fn insert(&mut self, id: u16, value: T) {
        self.map.insert(id, value);
    }
    pub fn remove(&mut self, id: u16) -> Option<T> {
        self.map.remove(&id)
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.map.values()
    }
    pub fn iter(&self) -> impl Iterator<Item = (u16, &T)> {
        self.map.iter().map(|(k, v)| (*k, v))
    }
}

/// A message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    /// A redelivery (sets DUP on QoS 1/2).
    pub dup: bool,
    /// QoS 1/2: the packet identifier to use when it is free (a redelivery keeps the one it
    /// was first sent with, §4.4); otherwise, or when `None`, the next free one.
    pub packet_id: Option<u16>,
    pub properties: Properties,
    pub payload: Bytes,
}

/// Why a message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client's Receive Maximum is reached: send later.
    WindowFull,
    /// Larger than the client's Maximum Packet Size: discarded (§3.1.2.25), settle it.
    TooLarge,
    /// The session is closed.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    Qos1Sent,
    Qos2Sent,
    Qos2Released,
}

/// The outbound half of a session.
#[derive(Debug)]
pub(super) struct OutboundState {
    receive_max: u16,
    packet_bytes_max: usize,
    alias_max: u16,
    aliases: HashMap<String, u16>,
    next_id: u16,
    inflight: PacketIds<OutState>,
    /// Server Keep Alive to announce (5.0), when the broker overrides the client's value.
    pub server_keep_alive: Option<u16>,
}

impl Default for OutboundState {
    fn default() -> Self {
        OutboundState {
            receive_max: u16::MAX,
            packet_bytes_max: usize::MAX,
            alias_max: 0,
            aliases: HashMap::new(),
            next_id: 1,
            inflight: PacketIds::default(),
            server_keep_alive: None,
        }
    }
}

/// The outbound half of a parked session (nothing in flight): the client's limits, the topic
/// aliases it was told, the next packet id.
#[derive(Debug)]
pub(super) struct ParkedOutbound {
    /// `u32::MAX`: no limit (a client's Maximum Packet Size is a u32).
    packet_bytes_max: u32,
    /// Boxed: most clients use no aliases, and an empty map is 48 bytes inline.
    #[expect(clippy::box_collection, reason = "one pointer inline instead of a whole map")]
    aliases: Option<Box<HashMap<String, u16>>>,
    receive_max: u16,
    alias_max: u16,
    next_id: u16,
    server_keep_alive: Option<u16>,
}

impl ParkedOutbound {
    pub(super) fn resume(self) -> OutboundState {
        let ParkedOutbound { packet_bytes_max, aliases, receive_max, alias_max, next_id, server_keep_alive } = self;
        OutboundState {
            receive_max,
            packet_bytes_max: if packet_bytes_max == u32::MAX { usize::MAX } else { packet_bytes_max as usize },
            alias_max,
            aliases: aliases.map(|a| *a).unwrap_or_default(),
            next_id,
            inflight: PacketIds::default(),
            server_keep_alive,
        }
    }
}

impl OutboundState {
    /// Nothing is in flight to the client.
    pub(super) fn is_quiet(&self) -> bool {
        self.inflight.is_empty()
    }

    /// The compact form; `Err` while a packet is in flight.
    pub(super) fn park(self) -> Result<ParkedOutbound, Self> {
        if !self.is_quiet() {
            return Err(self);
        }
        let OutboundState {
            receive_max,
            packet_bytes_max,
            alias_max,
            aliases,
            next_id,
            inflight: _,
            server_keep_alive,
        } = self;
        Ok(ParkedOutbound {
            packet_bytes_max: u32::try_from(packet_bytes_max).unwrap_or(u32::MAX),
            aliases: (!aliases.is_empty()).then(|| Box::new(aliases)),
            receive_max,
            alias_max,
            next_id,
            server_keep_alive,
        })
    }

    /// Takes the client's limits from its CONNECT properties.
    pub fn configure(&mut self, props: &Properties, alias_count_max: u16) {
        self.receive_max = props.receive_maximum.unwrap_or(u16::MAX);
        self.packet_bytes_max = props.maximum_packet_size.map_or(usize::MAX, |m| m as usize);
        self.alias_max = props.topic_alias_maximum.unwrap_or(0).min(alias_count_max);
    }

    fn allocate_preferring(&mut self, preferred: Option<u16>) -> u16 {
        match preferred {
            Some(id) if id != 0 && self.inflight.get(id).is_none() => id,
            _ => self.allocate(),
        }
    }

    fn allocate(&mut self) -> u16 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if self.inflight.get(id).is_none() {
                return id;
            }
        }
    }

    /// Handles PUBACK/PUBREC/PUBCOMP for `id`; returns the id when a delivery is now
    /// settled by the client and pushes any packet to answer with.
    pub fn on_resp(
        &mut self,
        kind: AckKind,
        id: u16,
        reason: ReasonCode,
        v5: bool,
        reply: &mut Vec<Packet>,
    ) -> Option<u16> {
        let state = self.inflight.get(id);
        match (kind, state) {
            (AckKind::PubAck, Some(OutState::Qos1Sent)) => {
                self.inflight.remove(id);
                Some(id)
            }
            (AckKind::PubRec, Some(OutState::Qos2Sent)) => {
                if reason.is_error() {
                    self.inflight.remove(id);
                } else {
                    self.inflight.insert(id, OutState::Qos2Released);
                    reply.push(pubrel(id, ReasonCode::SUCCESS));
                }
                Some(id)
            }
            (AckKind::PubRec, Some(OutState::Qos2Released)) => {
                reply.push(pubrel(id, ReasonCode::SUCCESS));
                None
            }
            (AckKind::PubRec, None) => {
                let reason = if v5 { ReasonCode::PACKET_IDENTIFIER_NOT_FOUND } else { ReasonCode::SUCCESS };
                reply.push(pubrel(id, reason));
                None
            }
            (AckKind::PubComp, Some(OutState::Qos2Released)) => {
                self.inflight.remove(id);
                Some(id)
            }
            _ => None,
        }
    }
}

fn pubrel(packet_id: u16, reason: ReasonCode) -> Packet {
    Packet::PubResp(PubResp { kind: AckKind::PubRel, packet_id, reason, properties: Properties::default() })
}

impl Session {
    /// Sends a message to the client. QoS 1/2 take a packet identifier (returned) and a slot
    /// of the client's Receive Maximum until acknowledged ([`super::Event::Acked`]).
    pub fn send_publish(&mut self, message: Outbound) -> Result<Option<u16>, SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        let v5 = self.version.is_v5();
        let out = &mut self.out;
        if message.qos != QoS::AtMostOnce && out.inflight.len() >= usize::from(out.receive_max) {
            return Err(SendError::WindowFull);
        }
        let Outbound { topic, qos, retain, dup, packet_id, mut properties, payload } = message;
        let mut topic = topic;
        if v5 && out.alias_max > 0 {
            if let Some(alias) = out.aliases.get(&topic) {
                properties.topic_alias = Some(*alias);
                topic = String::new();
            } else if out.aliases.len() < usize::from(out.alias_max) {
                let alias = u16::try_from(out.aliases.len() + 1).unwrap_or(u16::MAX);
                out.aliases.insert(topic.clone(), alias);
                properties.topic_alias = Some(alias);
            }
        }
        if !v5 {
            properties = Properties::default();
        }
        let packet_id = (qos != QoS::AtMostOnce).then(|| out.allocate_preferring(packet_id));
        let publish = Publish { dup: dup && packet_id.is_some(), qos, retain, topic, packet_id, properties, payload };
        let start = self.output.len();
        encode(&Packet::Publish(publish), self.version, &mut self.output);
        if self.output.len() - start > self.out.packet_bytes_max {
            self.output.truncate(start);
            return Err(SendError::TooLarge);
        }
        if let Some(id) = packet_id {
            let state = if qos == QoS::ExactlyOnce { OutState::Qos2Sent } else { OutState::Qos1Sent };
            self.out.inflight.insert(id, state);
        }
        Ok(packet_id)
    }

    /// Free slots in the client's Receive Maximum window.
    pub fn send_window(&self) -> usize {
        usize::from(self.out.receive_max).saturating_sub(self.out.inflight.len())
    }

    /// QoS 2 deliveries whose PUBREL is sent and PUBCOMP not yet received (kept by the
    /// engine across reconnects, §4.4).
    pub fn pending_releases(&self) -> Vec<u16> {
        self.out.inflight.iter().filter(|(_, s)| **s == OutState::Qos2Released).map(|(id, _)| id).collect()
    }

    /// Re-sends PUBREL for releases an earlier connection of the session left open.
    pub fn restore_releases(&mut self, ids: &[u16]) {
        for id in ids {
            self.restore_release(*id);
        }
    }

    /// Re-sends PUBREL for one release an earlier connection left open, unless `id` is in
    /// flight already (restored, or taken by a PUBLISH). Returns whether `id` now waits for
    /// its PUBCOMP ([`super::Event::Completed`]).
    pub fn restore_release(&mut self, id: u16) -> bool {
        match self.out.inflight.get(id) {
            Some(state) => state == OutState::Qos2Released,
            None if id == 0 => false,
            None => {
                self.out.inflight.insert(id, OutState::Qos2Released);
                encode(&pubrel(id, ReasonCode::SUCCESS), self.version, &mut self.output);
                true
            }
        }
    }

    /// Whether QoS 2 delivery `id` is released (PUBREC received) and waits for its PUBCOMP.
    pub fn is_releasing(&self, id: u16) -> bool {
        self.out.inflight.get(id) == Some(OutState::Qos2Released)
    }
}
