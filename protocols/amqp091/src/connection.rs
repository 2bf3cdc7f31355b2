//! The sans-IO AMQP 0-9-1 server connection: bytes and time in (`handle_input`,
//! `handle_timeout`), [`Event`]s and bytes out (`poll_event`, `poll_transmit`), the engine's
//! answers in (`accept_login`, `send_method`, `send_content`, ...). Owns the protocol header
//! check, the handshake (start / start-ok / tune / tune-ok / open), heartbeats, the channel
//! table with per-channel content reassembly, and the close handshakes. Lives on the shard that
//! owns the connection. Bounds: input by `connection_input_bytes_max` (which must hold one
//! frame of the negotiated frame-max, so frame-max is capped by it), one message body by
//! `frame_size_bytes_max`, partial bodies of all channels together by
//! `connection_input_bytes_max`; the output buffer is bounded by the engine through
//! `pending_output_bytes` (the connection itself adds only small replies per input frame).
//! Never panics on peer input: every peer error becomes connection.close with RabbitMQ's
//! reply code and the offending class/method ids.

mod channel;
mod handshake;

pub(crate) use handshake::PROTOCOL_HEADER_0_9;
pub use handshake::{CAPABILITIES, MECHANISMS};

use std::collections::{HashMap, VecDeque};

/// Channel state by number, looked up for every frame: foldhash, not SipHash (its cost showed
/// in profiles at several lookups per published message).
type ChannelMap = HashMap<u16, ChannelState, foldhash::fast::RandomState>;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use ferry_wire::Limits;

use crate::content::Assembly;
use crate::error::FrameError;
use crate::event::Event;
use crate::frame::{self, Decoded, FRAME_HEADER_BYTES, FRAME_OVERHEAD_BYTES, FrameHeader};
use crate::generated::{
    BasicProperties, ChannelClose, ConnectionClose, FRAME_BODY, FRAME_ERROR, FRAME_HEADER, FRAME_HEARTBEAT,
    FRAME_METHOD, FRAME_MIN_SIZE, Method, UNEXPECTED_FRAME, reply_code_name,
};
use crate::wire::{SHORTSTR_BYTES_MAX, truncate};

/// How long we wait for connection.close-ok after sending connection.close.
pub const CLOSE_OK_WAIT: Duration = Duration::from_secs(3);

/// What a connection needs to know about the broker.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub limits: Limits,
    /// Largest frame (payload + 8) offered in connection.tune; 0 = no limit. Capped by
    /// `limits.connection_input_bytes_max - 8` and raised to FRAME_MIN_SIZE.
    pub frame_max: u32,
    /// Highest channel number offered in connection.tune; 0 = no limit.
    pub channel_max: u16,
    /// Heartbeat interval offered in connection.tune, in seconds; 0 = off.
    pub heartbeat_s: u16,
    /// server-properties `product` and `version`.
    pub product: String,
    pub version: String,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            limits: Limits::default(),
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_s: 60,
            product: "Ferry".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// A frame's payload: borrowed from the connection's input buffer, or (a large body) a shared
/// slice of it, kept as the message body without a copy.
enum Payload<'a> {
    Borrowed(&'a [u8]),
    Shared(Bytes),
}

impl Payload<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Borrowed(bytes) => bytes,
            Payload::Shared(bytes) => bytes,
        }
    }

    /// The payload as a body part: a copy of a borrowed one, a shared one as it is.
    fn into_bytes(self) -> Bytes {
        match self {
            Payload::Borrowed(bytes) => Bytes::copy_from_slice(bytes),
            Payload::Shared(bytes) => bytes,
        }
    }
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 8-byte protocol header.
    Header,
    /// connection.start sent; waiting for start-ok.
    Start,
    /// Event::Login emitted; waiting for the engine. Input is buffered, not parsed.
    LoginPending,
    /// connection.tune sent; waiting for tune-ok.
    Tune,
    /// Tuned; waiting for connection.open.
    Open,
    /// Event::Open emitted; waiting for the engine. Input is buffered, not parsed.
    OpenPending,
    Running,
    /// connection.close sent; only close / close-ok are read until CLOSE_OK_WAIT passes.
    Closing,
    Closed,
}

impl Phase {
    fn in_handshake(self) -> bool {
        matches!(self, Phase::Header | Phase::Start | Phase::Tune | Phase::Open)
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Header => "header",
            Phase::Start => "starting",
            Phase::LoginPending => "securing",
            Phase::Tune => "tuning",
            Phase::Open => "opening",
            Phase::OpenPending => "opening",
            Phase::Running => "running",
            Phase::Closing => "closing",
            Phase::Closed => "closed",
        }
    }
}

/// A connection-level peer error: becomes connection.close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl Fault {
    pub fn new(code: u16, text: impl Into<String>, class_id: u16, method_id: u16) -> Fault {
        Fault { code, text: text.into(), class_id, method_id }
    }

    pub fn on(code: u16, text: impl Into<String>, method: &Method) -> Fault {
        Fault::new(code, text, method.class_id(), method.method_id())
    }
}

/// What tune / tune-ok settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tuning {
    channel_max: u16,
    frame_max: u32,
    heartbeat_s: u16,
}

/// Heartbeat clocks, from tune-ok on.
#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    interval: Duration,
    last_sent: Instant,
    last_received: Instant,
}

impl Heartbeat {
    fn send_due(&self) -> Option<Instant> {
        self.last_sent.checked_add(self.interval / 2)
    }

    fn receive_deadline(&self) -> Option<Instant> {
        self.last_received.checked_add(self.interval * 2)
    }
}

/// One channel's state.
#[derive(Debug)]
enum ChannelState {
    Open(Assembly),
    /// We sent channel.close; everything but close / close-ok is discarded.
    Closing,
}

/// One AMQP 0-9-1 connection, server side.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    /// The frame-max we offer (config, capped by the input buffer).
    frame_max_offered: u32,
    phase: Phase,
    now: Instant,
    handshake_deadline: Option<Instant>,
    close_deadline: Option<Instant>,
    tuning: Tuning,
    heartbeat: Option<Heartbeat>,
    input: BytesMut,
    output: Vec<u8>,
    events: VecDeque<Event>,
    channels: ChannelMap,
    /// Body bytes held by unfinished publishes on all channels.
    partial_body_bytes: usize,
    closed_reported: bool,
    /// The client sent connection.close (we answered close-ok).
    closed_by_peer: bool,
}

impl Connection {
    /// A connection for a socket that opened at `now`.
    ///
    /// Panics (a configuration bug) if `connection_input_bytes_max` cannot hold a frame of
    /// FRAME_MIN_SIZE.
    pub fn new(config: ConnectionConfig, now: Instant) -> Connection {
        let input_max = config.limits.connection_input_bytes_max;
        assert!(
            input_max >= FRAME_MIN_SIZE as usize + FRAME_OVERHEAD_BYTES,
            "connection_input_bytes_max must hold a frame of FRAME_MIN_SIZE"
        );
        let cap = u32::try_from(input_max - FRAME_OVERHEAD_BYTES).unwrap_or(u32::MAX);
        let frame_max_offered = match config.frame_max {
            0 => cap,
            max => max.min(cap),
        }
        .max(FRAME_MIN_SIZE);
        let handshake_deadline = match config.limits.connect_timeout_ms {
            0 => None,
            ms => now.checked_add(Duration::from_millis(u64::from(ms))),
        };
        let tuning = Tuning { channel_max: config.channel_max, frame_max: FRAME_MIN_SIZE, heartbeat_s: 0 };
        Connection {
            config,
            frame_max_offered,
            phase: Phase::Header,
            now,
            handshake_deadline,
            close_deadline: None,
            tuning,
            heartbeat: None,
            input: BytesMut::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            channels: ChannelMap::default(),
            partial_body_bytes: 0,
            closed_reported: false,
            closed_by_peer: false,
        }
    }

    /// Buffers `bytes`, parses every complete frame and queues the resulting events.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.observe(now);
        if self.phase == Phase::Closed || bytes.is_empty() {
            return;
        }
        if let Some(heartbeat) = &mut self.heartbeat {
            heartbeat.last_received = heartbeat.last_received.max(now);
        }
        let mut rest = bytes;
        while !rest.is_empty() && self.phase != Phase::Closed {
            let room = self.config.limits.connection_input_bytes_max.saturating_sub(self.input.len());
            if room == 0 {
                // Only reachable while the engine holds a login or open: the client
                // pipelined more than a whole input buffer.
                let text = "too much input before the handshake completed";
                self.fatal(Fault::new(FRAME_ERROR, text, 0, 0));
                break;
            }
            let (part, later) = rest.split_at(room.min(rest.len()));
            self.input.extend_from_slice(part);
            rest = later;
            self.parse_buffered();
        }
        if self.phase == Phase::Closed {
            self.input = BytesMut::new();
        }
    }

    /// The next event for the engine, in the order the client caused them.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Puts back an event [`Connection::poll_event`] returned: it is the next one polled.
    pub fn unpoll_event(&mut self, event: Event) {
        self.events.push_front(event);
    }

    /// Appends every pending output byte to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.output);
        } else {
            out.append(&mut self.output);
        }
    }

    /// Bytes waiting for `poll_transmit`.
    pub fn pending_output_bytes(&self) -> usize {
        self.output.len()
    }

    /// The earliest instant `handle_timeout` has work to do, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            Phase::Closing => self.close_deadline,
            phase => {
                let handshake = if phase.in_handshake() { self.handshake_deadline } else { None };
                let (send, receive) = match &self.heartbeat {
                    Some(beat) => (beat.send_due(), beat.receive_deadline()),
                    None => (None, None),
                };
                [handshake, send, receive].into_iter().flatten().min()
            }
        }
    }

    /// Sends a heartbeat, or ends the connection on a silent peer, a handshake that took too
    /// long, or a close-ok that never came.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        match self.phase {
            Phase::Closed => {}
            Phase::Closing => {
                if self.close_deadline.is_some_and(|at| now >= at) {
                    self.finish("no connection.close-ok in time");
                }
            }
            phase => {
                if phase.in_handshake() && self.handshake_deadline.is_some_and(|at| now >= at) {
                    return self.finish("handshake timeout");
                }
                let Some(beat) = self.heartbeat else {
                    return;
                };
                if beat.receive_deadline().is_some_and(|at| now >= at) {
                    return self.finish("missed heartbeats from client");
                }
                if beat.send_due().is_some_and(|at| now >= at) {
                    frame::encode_heartbeat(&mut self.output);
                    self.on_sent();
                }
            }
        }
    }

    /// True once the runtime should flush the output and close the socket.
    /// True when the client closed the connection (sent connection.close): AMQP then leaves
    /// closing the socket to it, once our close-ok arrives.
    pub fn closed_by_peer(&self) -> bool {
        self.closed_by_peer
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// After `Event::Login`: sends connection.tune.
    pub fn accept_login(&mut self) {
        if self.phase != Phase::LoginPending {
            return;
        }
        self.phase = Phase::Tune;
        self.send_tune();
        self.parse_buffered();
    }

    /// After `Event::Login`: connection.close 403 ACCESS_REFUSED (RabbitMQ's
    /// authentication_failure_close), then closed without waiting for close-ok.
    pub fn refuse_login(&mut self, text: &str) {
        if self.phase != Phase::LoginPending {
            return;
        }
        let fault = Fault::new(crate::ACCESS_REFUSED, text, 10, 11);
        self.fatal(fault);
    }

    /// After `Event::Open`: connection.open-ok; the connection is running.
    pub fn accept_open(&mut self) {
        if self.phase != Phase::OpenPending {
            return;
        }
        self.phase = Phase::Running;
        self.write_method(0, &Method::ConnectionOpenOk(Default::default()));
        self.parse_buffered();
    }

    /// Writes `method` on `channel` (0 for connection-class methods). Dropped unless the
    /// connection is running and the channel open (a reply racing the client's channel.close).
    pub fn send_method(&mut self, channel: u16, method: &Method) {
        if self.can_send(channel) {
            self.write_method(channel, method);
        }
    }

    /// Writes a content method (basic.deliver / get-ok / return), its header and its body in
    /// frames of the negotiated frame-max. Dropped like `send_method`.
    pub fn send_content(&mut self, channel: u16, method: &Method, properties: &BasicProperties, body: &Bytes) {
        if self.can_send(channel) && channel != 0 {
            frame::encode_content(channel, method, properties, body, self.tuning.frame_max, &mut self.output);
            self.on_sent();
        }
    }

    /// Sends a basic.deliver with its content, the method given by reference (the engine's
    /// per-message path: no copies of tags and names).
    pub fn send_deliver(
        &mut self,
        channel: u16,
        deliver: &frame::DeliverRef<'_>,
        properties: &BasicProperties,
        body: &Bytes,
    ) {
        if self.can_send(channel) && channel != 0 {
            frame::encode_deliver(channel, deliver, properties, body, self.tuning.frame_max, &mut self.output);
            self.on_sent();
        }
    }

    /// Sends channel.close (reply text prefixed with the code's name, as RabbitMQ does) and
    /// discards the channel's input until close-ok, which emits `ChannelClosed`.
    pub fn close_channel(&mut self, channel: u16, code: u16, text: &str, class_id: u16, method_id: u16) {
        if channel == 0 || !self.can_send(channel) {
            return;
        }
        self.begin_channel_close(channel, Fault::new(code, text, class_id, method_id));
    }

    /// Sends connection.close and waits (at most CLOSE_OK_WAIT) for close-ok. Emits `Closed`.
    pub fn close_connection(&mut self, code: u16, text: &str, class_id: u16, method_id: u16) {
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        self.begin_close(Fault::new(code, text, class_id, method_id));
    }

    /// The settled channel-max, frame-max and heartbeat (the offer until tune-ok arrives).
    pub fn tuning(&self) -> (u16, u32, u16) {
        (self.tuning.channel_max, self.tuning.frame_max, self.tuning.heartbeat_s)
    }

    fn observe(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn can_send(&self, channel: u16) -> bool {
        self.phase == Phase::Running
            && (channel == 0 || matches!(self.channels.get(&channel), Some(ChannelState::Open(_))))
    }

    /// The largest frame payload accepted now: FRAME_MIN_SIZE until tune-ok, then the
    /// negotiated frame-max. Like RabbitMQ, a payload of the whole frame-max is tolerated
    /// (clients commonly forget the 8 bytes of overhead).
    fn payload_bytes_max(&self) -> u32 {
        self.tuning.frame_max
    }

    fn parse_buffered(&mut self) {
        loop {
            match self.phase {
                Phase::Closed | Phase::LoginPending | Phase::OpenPending => return,
                Phase::Header => {
                    if !self.parse_protocol_header() {
                        return;
                    }
                }
                _ => match frame::decode_header(&self.input, self.payload_bytes_max()) {
                    Ok(Decoded::Incomplete { .. }) => return,
                    Ok(Decoded::Frame { frame, consumed }) => {
                        let within = FRAME_HEADER_BYTES..consumed - 1;
                        if frame.frame_type == FRAME_BODY && within.len() >= channel::BODY_COPY_BYTES_MAX {
                            // A large body is kept, not copied: a slice of the input buffer.
                            let bytes = self.input.split_to(consumed).freeze();
                            self.on_frame(frame, Payload::Shared(bytes.slice(within)));
                        } else {
                            // Everything else is decoded (or copied) from the buffer in place:
                            // no shared handle, and its reference counting, per frame.
                            let mut input = std::mem::take(&mut self.input);
                            self.on_frame(frame, Payload::Borrowed(&input[within]));
                            if self.phase != Phase::Closed {
                                input.advance(consumed);
                                self.input = input;
                            }
                        }
                    }
                    Err(error) => return self.on_frame_error(error),
                },
            }
        }
    }

    /// Framing is lost: send connection.close and stop reading (no close-ok can be parsed).
    fn on_frame_error(&mut self, error: FrameError) {
        if self.phase == Phase::Closing {
            return self.finish("frame error while closing");
        }
        self.fatal(Fault::new(FRAME_ERROR, error.to_string(), 0, 0));
    }

    fn on_frame(&mut self, header: FrameHeader, payload: Payload<'_>) {
        let channel = header.channel;
        if self.phase == Phase::Closing {
            return self.on_frame_while_closing(header, payload.bytes());
        }
        match header.frame_type {
            FRAME_HEARTBEAT if channel == 0 => {}
            FRAME_METHOD => match Method::decode(payload.bytes()) {
                Ok(method) if channel == 0 => self.on_connection_method(method),
                Ok(method) => self.on_channel_method(channel, method),
                Err(error) => self.fault(handshake::decode_fault(payload.bytes(), &error)),
            },
            FRAME_HEADER | FRAME_BODY if channel != 0 && self.phase == Phase::Running => {
                self.on_content(channel, header.frame_type, payload);
            }
            frame_type => {
                let text = format!("unexpected frame of type {frame_type} on channel {channel}");
                self.fault(Fault::new(UNEXPECTED_FRAME, text, 0, 0));
            }
        }
    }

    fn on_frame_while_closing(&mut self, header: FrameHeader, payload: &[u8]) {
        if header.channel != 0 || header.frame_type != FRAME_METHOD {
            return;
        }
        match Method::decode(payload) {
            Ok(Method::ConnectionCloseOk(_)) => self.finish("closed"),
            Ok(Method::ConnectionClose(_)) => {
                // Both sides sent close: the client, too, closes the socket after close-ok.
                self.closed_by_peer = true;
                self.write_method(0, &Method::ConnectionCloseOk(Default::default()));
                self.finish("closed");
            }
            _ => {}
        }
    }

    /// A peer error: connection.close, then wait for close-ok.
    fn fault(&mut self, fault: Fault) {
        self.begin_close(fault);
    }

    /// A peer error after which nothing more is read: connection.close, then closed.
    fn fatal(&mut self, fault: Fault) {
        self.begin_close(fault);
        self.finish("closed");
    }

    fn begin_close(&mut self, fault: Fault) {
        let text = reply_text(fault.code, &fault.text);
        let close = ConnectionClose {
            reply_code: fault.code,
            reply_text: text.clone(),
            class_id: fault.class_id,
            method_id: fault.method_id,
        };
        self.write_method(0, &Method::ConnectionClose(close));
        self.phase = Phase::Closing;
        self.close_deadline = self.now.checked_add(CLOSE_OK_WAIT);
        self.drop_channels();
        self.report_closed(format!("{} {text}", fault.code));
    }

    fn begin_channel_close(&mut self, channel: u16, fault: Fault) {
        if let Some(ChannelState::Open(assembly)) = self.channels.insert(channel, ChannelState::Closing) {
            self.forget_assembly(&assembly);
        }
        let close = ChannelClose {
            reply_code: fault.code,
            reply_text: reply_text(fault.code, &fault.text),
            class_id: fault.class_id,
            method_id: fault.method_id,
        };
        self.write_method(channel, &Method::ChannelClose(close));
    }

    /// The connection is over: no more input is read and `is_closed` turns true.
    fn finish(&mut self, reason: &str) {
        self.phase = Phase::Closed;
        self.heartbeat = None;
        self.input = BytesMut::new();
        self.drop_channels();
        self.report_closed(reason.to_owned());
    }

    fn report_closed(&mut self, reason: String) {
        if !self.closed_reported {
            self.closed_reported = true;
            self.events.push_back(Event::Closed { reason });
        }
    }

    fn drop_channels(&mut self) {
        self.channels.clear();
        self.partial_body_bytes = 0;
    }

    fn forget_assembly(&mut self, assembly: &Assembly) {
        if let Assembly::Body { body, .. } = assembly {
            self.partial_body_bytes = self.partial_body_bytes.saturating_sub(body.len());
        }
    }

    fn write_method(&mut self, channel: u16, method: &Method) {
        frame::encode_method(channel, method, &mut self.output);
        self.on_sent();
    }

    fn on_sent(&mut self) {
        if let Some(heartbeat) = &mut self.heartbeat {
            heartbeat.last_sent = heartbeat.last_sent.max(self.now);
        }
    }
}

/// `CODE_NAME - text` as RabbitMQ writes reply texts (unless already prefixed), cut to fit a
/// short string.
fn reply_text(code: u16, text: &str) -> String {
    let full = match reply_code_name(code) {
        Some(name) if !text.starts_with(name) => format!("{name} - {text}"),
        _ => text.to_owned(),
    };
    truncate(&full, SHORTSTR_BYTES_MAX).to_owned()
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
