//! The sans-IO STOMP server session of one connection: bytes and time in
//! (`handle_input`, `handle_timeout`), events and bytes out (`poll_event`, `poll_transmit`).
//! Owns the input buffer (bounded by `connection_input_bytes_max`), the CONNECT handshake
//! state, heart-beat and connect timers, and the output buffer. Lives on the shard that owns
//! the connection. The output buffer is bounded by the engine (via `pending_output_bytes`);
//! the session itself only adds one ERROR frame or one heart-beat EOL per timeout.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_wire::Limits;

use crate::codec::{Decoded, Decoder, encode_parts};
use crate::connect::{connected, handshake};
use crate::error::{FrameError, Rejection};
use crate::event::{CloseReason, Event, interpret};
use crate::frame::{Command, Frame, Version};
use crate::heartbeat::{HeartBeat, Timers};

/// An empty input buffer larger than this is released rather than kept for reuse.
const INPUT_BYTES_KEPT_MAX: usize = 64 * 1024;

/// What a session needs to know about the broker.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub limits: Limits,
    /// The CONNECTED `server` header, e.g. `ferry/0.1.0`.
    pub server: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectState {
    /// No CONNECT yet; `None` deadline when `connect_timeout_ms` is 0 (off).
    Awaiting { deadline: Option<Instant> },
    /// CONNECT parsed and reported; the engine has not accepted it yet.
    Pending,
    /// CONNECTED written.
    Accepted,
}

/// One STOMP connection, server side.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    connect: ConnectState,
    version: Version,
    heartbeat: HeartBeat,
    timers: Option<Timers>,
    /// False after DISCONNECT or close: further input is dropped.
    reading: bool,
    closed: bool,
    now: Instant,
    input: Vec<u8>,
    decoder: Decoder,
    events: VecDeque<Event>,
    output: Vec<u8>,
}

impl Session {
    /// A session for a socket that opened at `now`.
    pub fn new(config: SessionConfig, now: Instant) -> Session {
        let deadline = match config.limits.connect_timeout_ms {
            0 => None,
            ms => now.checked_add(Duration::from_millis(u64::from(ms))),
        };
        Session {
            config,
            connect: ConnectState::Awaiting { deadline },
            version: Version::V1_0,
            heartbeat: HeartBeat::default(),
            timers: None,
            reading: true,
            closed: false,
            now,
            input: Vec::new(),
            decoder: Decoder::new(),
            events: VecDeque::new(),
            output: Vec::new(),
        }
    }

    /// Buffers `bytes`, parses every complete frame and queues the resulting events.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.observe(now);
        if !self.reading || bytes.is_empty() {
            return;
        }
        if let Some(timers) = &mut self.timers {
            timers.on_received(now);
        }
        let mut rest = bytes;
        while !rest.is_empty() && self.reading {
            let room = self.input_room();
            if room == 0 {
                self.protocol_error(FrameError::FrameTooLarge.into());
                break;
            }
            let (part, later) = rest.split_at(room.min(rest.len()));
            self.buffer(part);
            rest = later;
            self.parse_buffered();
        }
        if !self.reading || (self.input.is_empty() && self.input.capacity() > INPUT_BYTES_KEPT_MAX) {
            self.input = Vec::new();
        }
    }

    /// The next event for the engine, in the order the client caused them.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Puts an event taken with [`Session::poll_event`] back in front: the engine will act
    /// on it later (after moving the connection to another core).
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
        if self.closed {
            return None;
        }
        let connect = match self.connect {
            ConnectState::Awaiting { deadline } => deadline,
            _ => None,
        };
        let (send, receive) = match &self.timers {
            Some(timers) => (timers.send_due(), timers.receive_deadline()),
            None => (None, None),
        };
        [connect, send, receive].into_iter().flatten().min()
    }

    /// Sends a heart-beat EOL, or closes on a missed client heart-beat or connect timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        if self.closed {
            return;
        }
        if let ConnectState::Awaiting { deadline: Some(deadline) } = self.connect {
            if now >= deadline {
                let detail = "No CONNECT frame arrived within the connect timeout";
                self.write_error("connect timeout", detail, None, &[]);
                self.close_with(CloseReason::ConnectTimeout);
            }
            return;
        }
        let Some(timers) = &mut self.timers else {
            return;
        };
        if timers.receive_deadline().is_some_and(|at| now >= at) {
            self.close_with(CloseReason::HeartbeatTimeout);
            return;
        }
        if timers.send_due().is_some_and(|at| now >= at) {
            self.output.push(b'\n');
            timers.on_sent(now);
        }
    }

    /// The negotiated version (1.0 before CONNECT).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The negotiated heart-beat (0,0 before CONNECT).
    pub fn heartbeat(&self) -> HeartBeat {
        self.heartbeat
    }

    /// True once the runtime should flush the output and close the socket.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Accepts the pending CONNECT: writes CONNECTED and starts heart-beating. Does nothing
    /// unless a Connect event is pending and the session is open.
    pub fn accept_connect(&mut self, session_id: &str) {
        if self.closed || self.connect != ConnectState::Pending {
            return;
        }
        self.connect = ConnectState::Accepted;
        self.timers = Some(Timers::new(self.heartbeat, self.now));
        let frame = connected(self.version, self.heartbeat, &self.config.server, session_id);
        self.write(&frame);
    }

    /// Writes a MESSAGE with `headers` (escaped per version) and a `content-length` of its own
    /// (any `content-length` in `headers` is dropped).
    pub fn send_message(&mut self, headers: &[(&str, &str)], body: &Bytes) {
        if self.closed {
            return;
        }
        let mut digits = [0u8; 20];
        let length = decimal(body.len(), &mut digits);
        let headers =
            headers.iter().copied().filter(|(name, _)| *name != "content-length").chain([("content-length", length)]);
        encode_parts(Command::Message, headers, body, self.version, &mut self.output);
        self.on_sent();
    }

    /// Writes a RECEIPT.
    pub fn send_receipt(&mut self, receipt_id: &str) {
        if self.closed {
            return;
        }
        let headers = [("receipt-id", receipt_id)];
        encode_parts(Command::Receipt, headers, &[], self.version, &mut self.output);
        self.on_sent();
    }

    /// Writes an ERROR and closes. Emits no `Closed` event: the engine asked for it.
    pub fn send_error(&mut self, message: &str, detail: &str, receipt_id: Option<&str>) {
        if self.closed {
            return;
        }
        self.write_error(message, detail, receipt_id, &[]);
        self.close();
    }

    /// Closes the session (e.g. after DISCONNECT's receipt was queued); output already queued
    /// is still flushed by the runtime. Emits no `Closed` event.
    pub fn close(&mut self) {
        self.closed = true;
        self.reading = false;
    }

    fn observe(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn input_room(&self) -> usize {
        self.config.limits.connection_input_bytes_max.saturating_sub(self.input.len())
    }

    /// Appends to the input buffer, growing it at most to `connection_input_bytes_max`.
    fn buffer(&mut self, part: &[u8]) {
        let needed = self.input.len() + part.len();
        if needed > self.input.capacity() {
            let cap = self.config.limits.connection_input_bytes_max;
            let target = needed.max(self.input.capacity() * 2).min(cap).max(needed);
            self.input.reserve_exact(target - self.input.len());
        }
        self.input.extend_from_slice(part);
    }

    fn parse_buffered(&mut self) {
        let mut start = 0;
        while self.reading {
            let rest = self.input.get(start..).unwrap_or_default();
            match self.decoder.decode(rest, self.version, &self.config.limits) {
                Ok(Decoded::Incomplete { .. }) => break,
                Ok(Decoded::Heartbeat { consumed }) => start += consumed,
                Ok(Decoded::Frame { frame, consumed }) => {
                    start += consumed;
                    self.on_frame(frame);
                }
                Err(error) => self.protocol_error(error.into()),
            }
        }
        self.input.drain(..start.min(self.input.len()));
    }

    fn on_frame(&mut self, frame: Frame) {
        let result = match (self.connect, frame.command) {
            (ConnectState::Awaiting { .. }, Command::Connect | Command::Stomp) => {
                return self.on_connect(frame);
            }
            (ConnectState::Awaiting { .. }, command) => {
                let message = format!("Received {} before CONNECT", command.as_str());
                let detail = "The first frame on a connection must be CONNECT or STOMP";
                Err(Rejection::new(message, detail).with_receipt(frame.header("receipt")))
            }
            _ => interpret(frame, self.version),
        };
        match result {
            Ok(event) => {
                if let Event::Disconnect { .. } = event {
                    self.reading = false;
                }
                self.events.push_back(event);
            }
            Err(rejection) => self.protocol_error(rejection),
        }
    }

    fn on_connect(&mut self, frame: Frame) {
        match handshake(frame, self.config.limits.heartbeat_ms_min) {
            Ok(handshake) => {
                self.version = handshake.version;
                self.heartbeat = handshake.heartbeat;
                self.connect = ConnectState::Pending;
                self.events.push_back(handshake.event);
            }
            Err(rejection) => self.protocol_error(rejection),
        }
    }

    fn protocol_error(&mut self, rejection: Rejection) {
        if self.closed {
            return;
        }
        let extra: Vec<(&str, &str)> = rejection.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let receipt = rejection.receipt.as_deref();
        self.write_error(&rejection.message, &rejection.detail, receipt, &extra);
        self.close_with(CloseReason::ProtocolError(rejection.message));
    }

    fn close_with(&mut self, reason: CloseReason) {
        self.close();
        self.events.push_back(Event::Closed { reason });
    }

    fn write_error(&mut self, message: &str, detail: &str, receipt_id: Option<&str>, extra: &[(&str, &str)]) {
        let length = detail.len().to_string();
        let headers = [("message", message)]
            .into_iter()
            .chain(receipt_id.map(|id| ("receipt-id", id)))
            .chain(extra.iter().copied())
            .chain([("content-type", "text/plain"), ("content-length", length.as_str())]);
        let body = detail.as_bytes();
        encode_parts(Command::Error, headers, body, self.version, &mut self.output);
        self.on_sent();
    }

    fn write(&mut self, frame: &Frame) {
        crate::codec::encode(frame, self.version, &mut self.output);
        self.on_sent();
    }

    fn on_sent(&mut self) {
        if let Some(timers) = &mut self.timers {
            timers.on_sent(self.now);
        }
    }
}

/// `n` in decimal, written into `buf` (a MESSAGE's content-length, without a `String` per
/// message).
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
