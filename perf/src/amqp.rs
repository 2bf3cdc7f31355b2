//! A blocking AMQP 0-9-1 client connection over `std::net::TcpStream`, built on the pure
//! `ferry_amqp091` codec (the same frames the broker decodes): [`connect`] sends the protocol
//! header and does start/tune/open plus channel 1's open, then the stream is split into an
//! [`AmqpReader`] and the shared [`FrameWriter`]. Heartbeats are switched off (tune-ok 0), so
//! an idle reader never has to answer. Every blocking call is bounded as in `client`: short
//! socket timeouts plus the run's deadline. Frames are capped at the negotiated frame-max.

use std::net::TcpStream;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use ferry_amqp091::frame::{self, Decoded, Frame};
use ferry_amqp091::{
    ChannelOpen, ConnectionClose, ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, FieldTable, Method,
    PROTOCOL_HEADER,
};

use crate::client::{FrameSource, FrameWriter, Target, open_stream, read_some};

/// Bytes read from the socket per `read` call.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Frame-max we ask for when the broker leaves it open (0); RabbitMQ's default.
const FRAME_MAX_DEFAULT: u32 = 131_072;
/// The channel every load connection uses.
pub const CHANNEL: u16 = 1;

/// Connects, authenticates with PLAIN (guest/guest unless given) and opens channel 1.
/// Returns the halves and the negotiated frame-max.
pub fn connect(target: &Target, deadline: Instant) -> Result<(AmqpReader, FrameWriter, u32)> {
    let stream = open_stream(target, deadline)?;
    let mut reader = AmqpReader::new(stream.try_clone()?, FRAME_MAX_DEFAULT);
    let mut writer = FrameWriter::new(stream);
    writer.pending_mut().extend_from_slice(PROTOCOL_HEADER);
    writer.flush(deadline)?;
    expect(&mut reader, deadline, "connection.start", |m| matches!(m, Method::ConnectionStart(_)))?;
    let login = target.login.as_deref().unwrap_or("guest");
    let passcode = target.passcode.as_deref().unwrap_or("guest");
    let start_ok = ConnectionStartOk {
        client_properties: FieldTable::new(),
        mechanism: "PLAIN".to_owned(),
        response: Bytes::from(format!("\0{login}\0{passcode}")),
        locale: "en_US".to_owned(),
    };
    send(&mut writer, 0, start_ok);
    writer.flush(deadline)?;
    let tune = match expect(&mut reader, deadline, "connection.tune", |m| matches!(m, Method::ConnectionTune(_)))? {
        Method::ConnectionTune(t) => t,
        _ => unreachable!("expect checked the method"),
    };
    let frame_max = if tune.frame_max == 0 { FRAME_MAX_DEFAULT } else { tune.frame_max.min(FRAME_MAX_DEFAULT) };
    reader.frame_max = frame_max;
    send(&mut writer, 0, ConnectionTuneOk { channel_max: tune.channel_max, frame_max, heartbeat: 0 });
    send(&mut writer, 0, ConnectionOpen { virtual_host: "/".to_owned(), ..Default::default() });
    writer.flush(deadline)?;
    expect(&mut reader, deadline, "connection.open-ok", |m| matches!(m, Method::ConnectionOpenOk(_)))?;
    send(&mut writer, CHANNEL, ChannelOpen::default());
    writer.flush(deadline)?;
    expect(&mut reader, deadline, "channel.open-ok", |m| matches!(m, Method::ChannelOpenOk(_)))?;
    Ok((reader, writer, frame_max))
}

/// Queues one method frame on `writer`.
pub fn send(writer: &mut FrameWriter, channel: u16, method: impl Into<Method>) {
    frame::encode_method(channel, &method.into(), writer.pending_mut());
}

/// Waits for a method `wanted` accepts; anything else (a close above all) is an error.
pub fn expect(
    reader: &mut AmqpReader,
    deadline: Instant,
    what: &str,
    wanted: impl Fn(&Method) -> bool,
) -> Result<Method> {
    match reader.next_frame(deadline)? {
        Some(Frame::Method { method, .. }) if wanted(&method) => Ok(method),
        Some(Frame::Method { method, .. }) => bail!("expected {what}, got {}", describe(&method)),
        Some(other) => bail!("expected {what}, got {other:?}"),
        None => bail!("no {what} before the deadline"),
    }
}

/// A method for reports: closes with their code and text, others by name.
pub fn describe(method: &Method) -> String {
    match method {
        Method::ConnectionClose(ConnectionClose { reply_code, reply_text, .. }) => {
            format!("connection.close {reply_code} {reply_text}")
        }
        Method::ChannelClose(c) => format!("channel.close {} {}", c.reply_code, c.reply_text),
        other => format!("method {}.{}", other.class_id(), other.method_id()),
    }
}

/// Sends connection.close and waits until `until` for close-ok; whether it came. The broker
/// answers only after everything sent before the close, so for a publisher without confirms
/// close-ok is the proof that every publish was taken.
pub fn close(reader: &mut AmqpReader, writer: &mut FrameWriter, until: Instant) -> bool {
    let close = ConnectionClose { reply_code: 200, reply_text: "bye".to_owned(), class_id: 0, method_id: 0 };
    send(writer, 0, close);
    if writer.flush(until).is_err() {
        return false;
    }
    while let Ok(Some(frame)) = reader.next_frame(until) {
        if let Frame::Method { method: Method::ConnectionCloseOk(_), .. } = frame {
            return true;
        }
    }
    false
}

/// The read half: buffers socket bytes in `buf[start..end]` and decodes frames.
#[derive(Debug)]
pub struct AmqpReader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    frame_max: u32,
}

impl AmqpReader {
    fn new(stream: TcpStream, frame_max: u32) -> AmqpReader {
        AmqpReader { stream, buf: vec![0; READ_CHUNK_BYTES], start: 0, end: 0, frame_max }
    }
}

impl FrameSource for AmqpReader {
    type Frame = Frame;

    fn buffered_frame(&mut self) -> Result<Option<Frame>> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            return Ok(None);
        }
        match frame::decode(&self.buf[self.start..self.end], self.frame_max) {
            Ok(Decoded::Frame { frame, consumed }) => {
                self.start += consumed;
                Ok(Some(frame))
            }
            Ok(Decoded::Incomplete { .. }) => Ok(None),
            Err(e) => Err(anyhow!("undecodable frame from the broker: {e}")),
        }
    }

    fn fill(&mut self) -> Result<bool> {
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
            // One frame can need more than the buffer: grow to frame-max plus a chunk at most.
            let cap = self.frame_max as usize + frame::FRAME_OVERHEAD_BYTES + READ_CHUNK_BYTES;
            if self.end == self.buf.len() && self.buf.len() < cap {
                self.buf.resize(cap, 0);
            }
        }
        let n = read_some(&mut self.stream, &mut self.buf[self.end..])?;
        self.end += n;
        Ok(n > 0)
    }
}
