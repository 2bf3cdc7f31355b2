//! A blocking STOMP 1.2 client connection over `std::net::TcpStream`, built on the pure
//! `ferry_stomp` codec: [`connect`] does the CONNECT/CONNECTED handshake, then the stream is
//! split into a [`FrameReader`] and a [`FrameWriter`] (one thread each, or one thread for
//! both). Every blocking call is bounded: sockets carry short read/write timeouts and every
//! loop checks a deadline, so a hung broker can stall a run for at most `--timeout-s`.
//! Limits: frames are capped by `ferry_wire::Limits::default()`.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ferry_mqtt::QoS;
use ferry_stomp::{Command, Decoded, Decoder, Frame, Version, encode};
use ferry_wire::Limits;

/// Socket read/write timeout: how often blocked calls wake up to check deadlines.
const IO_TICK: Duration = Duration::from_millis(100);
/// Bytes read from the socket per `read` call.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// The protocol a run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Stomp,
    /// AMQP 0-9-1 (`amqp://`), through [`crate::amqp`].
    Amqp,
    /// MQTT 3.1.1 (`mqtt://`), through [`crate::mqtt`]: fan-out (a topic) and storm only.
    Mqtt,
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub protocol: Protocol,
    pub addr: String,
    pub login: Option<String>,
    pub passcode: Option<String>,
    /// QoS of MQTT publishes and subscriptions (0 or 1; `parse` sets 1).
    pub mqtt_qos: QoS,
}

impl Target {
    /// Parses `stomp://host:port`, `amqp://host:port`, `mqtt://host:port` (or bare
    /// `host:port`, STOMP). Other protocols' schemes are recognised and refused until
    /// ferry-perf speaks them.
    pub fn parse(url: &str, login: Option<String>, passcode: Option<String>) -> Result<Target> {
        let (protocol, addr) = match url.split_once("://") {
            None => (Protocol::Stomp, url),
            Some(("stomp", rest)) => (Protocol::Stomp, rest),
            Some(("amqp", rest)) => (Protocol::Amqp, rest),
            Some(("mqtt", rest)) => (Protocol::Mqtt, rest),
            Some((scheme, _)) if NOT_YET_BUILT.contains(&scheme) => {
                bail!("{scheme}:// is not built into ferry-perf yet (stomp://, amqp:// and mqtt:// are): {url:?}")
            }
            Some((scheme, _)) => {
                bail!("unknown scheme {scheme}:// in {url:?} (ferry-perf speaks stomp://, amqp://, mqtt://)")
            }
        };
        let addr = addr.trim_end_matches('/');
        if addr.is_empty() || !addr.contains(':') {
            bail!("broker address must look like stomp://host:port, amqp://host:port or mqtt://host:port, not {url:?}");
        }
        Ok(Target { protocol, addr: addr.to_owned(), login, passcode, mqtt_qos: QoS::AtLeastOnce })
    }
}

/// URL schemes of protocols the broker family speaks that ferry-perf has no client for yet.
const NOT_YET_BUILT: [&str; 5] = ["amqps", "mqtts", "stomp+ssl", "openwire", "ws"];

/// A connected socket with nodelay and the short I/O tick set.
pub fn open_stream(target: &Target, deadline: Instant) -> Result<TcpStream> {
    let addr = target
        .addr
        .to_socket_addrs()
        .with_context(|| format!("resolve {}", target.addr))?
        .next()
        .ok_or_else(|| anyhow!("{} resolves to nothing", target.addr))?;
    let wait = deadline.saturating_duration_since(Instant::now()).max(IO_TICK);
    let stream = TcpStream::connect_timeout(&addr, wait).with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TICK))?;
    stream.set_write_timeout(Some(IO_TICK))?;
    Ok(stream)
}

/// Connects and completes the STOMP handshake before `deadline`.
pub fn connect(target: &Target, deadline: Instant) -> Result<(FrameReader, FrameWriter)> {
    let stream = open_stream(target, deadline)?;
    let mut reader = FrameReader::new(stream.try_clone()?);
    let mut writer = FrameWriter::new(stream);

    let mut frame = Frame::new(Command::Connect)
        .with_header("accept-version", "1.2")
        .with_header("host", "/")
        .with_header("heart-beat", "0,0");
    if let Some(login) = &target.login {
        frame = frame.with_header("login", login.as_str());
    }
    if let Some(passcode) = &target.passcode {
        frame = frame.with_header("passcode", passcode.as_str());
    }
    writer.queue(&frame);
    writer.flush(deadline)?;
    match reader.next_frame(deadline)? {
        Some(f) if f.command == Command::Connected => Ok((reader, writer)),
        Some(f) if f.command == Command::Error => bail!("CONNECT refused: {}", describe(&f)),
        Some(f) => bail!("expected CONNECTED, got {}", f.command.as_str()),
        None => bail!("no CONNECTED from {} before the deadline", target.addr),
    }
}

/// `message` header plus body of an ERROR frame, for reports.
pub fn describe(frame: &Frame) -> String {
    let message = frame.header("message").unwrap_or("");
    let body = String::from_utf8_lossy(&frame.body);
    format!("{message}: {}", body.trim())
}

/// A read half of some protocol: frames decoded from what was buffered, and one bounded read.
pub trait FrameSource {
    type Frame;

    /// A frame already buffered, without touching the socket.
    fn buffered_frame(&mut self) -> Result<Option<Self::Frame>>;

    /// Reads once from the socket (waiting at most one tick). `Ok(false)` on a timeout tick.
    fn fill(&mut self) -> Result<bool>;

    /// The next frame, or `None` if none arrived before `deadline`.
    fn next_frame(&mut self, deadline: Instant) -> Result<Option<Self::Frame>> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(Some(frame));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.fill()?;
        }
    }
}

/// One read into `buf`: the byte count, 0 on a timeout tick; an error once the broker closed.
pub fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize> {
    match stream.read(buf) {
        Ok(0) => bail!("the broker closed the connection"),
        Ok(n) => Ok(n),
        Err(e) if is_tick(&e) || e.kind() == ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e).context("read from broker"),
    }
}

/// The read half: buffers socket bytes in `buf[start..end]` and decodes server frames.
#[derive(Debug)]
pub struct FrameReader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    decoder: Decoder,
    limits: Limits,
}

impl FrameSource for FrameReader {
    type Frame = Frame;

    fn buffered_frame(&mut self) -> Result<Option<Frame>> {
        FrameReader::buffered(self)
    }

    fn fill(&mut self) -> Result<bool> {
        self.make_room();
        let n = read_some(&mut self.stream, &mut self.buf[self.end..])?;
        self.end += n;
        Ok(n > 0)
    }
}

impl FrameReader {
    fn new(stream: TcpStream) -> FrameReader {
        FrameReader {
            stream,
            buf: vec![0; READ_CHUNK_BYTES],
            start: 0,
            end: 0,
            decoder: Decoder::new(),
            limits: Limits::default(),
        }
    }

    fn buffered(&mut self) -> Result<Option<Frame>> {
        while self.start < self.end {
            let decoded = self
                .decoder
                .decode(&self.buf[self.start..self.end], Version::V1_2, &self.limits)
                .map_err(|e| anyhow!("undecodable frame from the broker: {e}"))?;
            match decoded {
                Decoded::Frame { frame, consumed } => {
                    self.start += consumed;
                    return Ok(Some(frame));
                }
                Decoded::Heartbeat { consumed } => self.start += consumed,
                Decoded::Incomplete { .. } => return Ok(None),
            }
        }
        self.start = 0;
        self.end = 0;
        Ok(None)
    }

    /// Makes room after `end`: moves the pending bytes to the front, growing the buffer only
    /// when one frame needs more than it holds (bounded by the frame limits).
    fn make_room(&mut self) {
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            // The decoder resumes only on the same buffer start; restart its scan.
            self.decoder = Decoder::new();
        }
        if self.end == self.buf.len() {
            let frame_max = self.limits.frame_size_bytes_max + self.limits.frame_header_bytes_max;
            let grown = (self.buf.len() * 2).min(frame_max + READ_CHUNK_BYTES);
            self.buf.resize(grown.max(self.buf.len()), 0);
        }
    }
}

/// The write half: frames are encoded into a buffer and written in batches.
#[derive(Debug)]
pub struct FrameWriter {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl FrameWriter {
    pub fn new(stream: TcpStream) -> FrameWriter {
        FrameWriter { stream, buf: Vec::with_capacity(READ_CHUNK_BYTES) }
    }

    /// Encodes `frame` into the pending buffer (nothing is written yet).
    pub fn queue(&mut self, frame: &Frame) {
        encode(frame, Version::V1_2, &mut self.buf);
    }

    /// The pending buffer, for other protocols' encoders to append to.
    pub fn pending_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes waiting in the buffer.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The socket's descriptor (shared with the read half), for `poll`.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.stream)
    }

    /// Switches the socket (both halves: they share one open file) to non-blocking reads and
    /// writes, or back to the blocking ones with the I/O tick.
    pub fn set_nonblocking(&self, on: bool) -> Result<()> {
        self.stream.set_nonblocking(on).context("switch the socket's blocking mode")
    }

    /// Writes as much of the pending buffer as the socket takes now, without waiting; whether
    /// all of it went out. Only for a non-blocking socket.
    pub fn write_some(&mut self) -> Result<bool> {
        let mut done = 0;
        while done < self.buf.len() {
            match self.stream.write(&self.buf[done..]) {
                Ok(0) => bail!("the broker stopped accepting bytes"),
                Ok(n) => done += n,
                Err(e) if is_tick(&e) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("write to broker"),
            }
        }
        self.buf.drain(..done);
        Ok(self.buf.is_empty())
    }

    /// Writes everything pending; fails if the broker does not take it before `deadline`.
    pub fn flush(&mut self, deadline: Instant) -> Result<()> {
        let mut done = 0;
        while done < self.buf.len() {
            match self.stream.write(&self.buf[done..]) {
                Ok(0) => bail!("the broker stopped accepting bytes"),
                Ok(n) => done += n,
                Err(e) if is_tick(&e) || e.kind() == ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        self.buf.drain(..done);
                        bail!("write to broker stalled until the deadline");
                    }
                }
                Err(e) => return Err(e).context("write to broker"),
            }
        }
        self.buf.clear();
        Ok(())
    }
}

pub fn is_tick(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            Target::parse("stomp://127.0.0.1:61613", None, None).map(|t| t.addr).ok(),
            Some("127.0.0.1:61613".to_owned())
        );
        assert_eq!(Target::parse("localhost:1/", None, None).map(|t| t.addr).ok(), Some("localhost:1".to_owned()));
        assert!(Target::parse("stomp://", None, None).is_err());
        assert!(Target::parse("nohost", None, None).is_err());
        let amqp = Target::parse("amqp://127.0.0.1:5672", None, None).expect("amqp");
        assert_eq!((amqp.protocol, amqp.addr.as_str()), (Protocol::Amqp, "127.0.0.1:5672"));
        let amqps = Target::parse("amqps://127.0.0.1:5671", None, None).map(|t| t.addr);
        assert!(amqps.is_err_and(|e| e.to_string().contains("not built into ferry-perf yet")));
        let mqtt = Target::parse("mqtt://127.0.0.1:1883", None, None).expect("mqtt");
        assert_eq!(
            (mqtt.protocol, mqtt.addr.as_str(), mqtt.mqtt_qos),
            (Protocol::Mqtt, "127.0.0.1:1883", QoS::AtLeastOnce)
        );
        assert!(Target::parse("mqtts://127.0.0.1:8883", None, None).is_err());
        assert!(Target::parse("http://127.0.0.1:80", None, None).is_err_and(|e| e.to_string().contains("unknown")));
    }
}
