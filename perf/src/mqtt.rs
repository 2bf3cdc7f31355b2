//! `ferry-perf mqtt` and `ferry-perf mqtt-idle`: MQTT scenarios over blocking TCP with std
//! threads, built on the pure `ferry_mqtt` codec, so they run against Ferry, Mosquitto or any
//! MQTT broker. `mqtt`: one publisher sends N stamped messages (QoS 0/1/2, a bounded window
//! in flight) to one topic that S subscribers receive; each subscriber checks it got every
//! message once, in order. `mqtt-idle`: opens C connections, holds them idle and reports the
//! broker's resident memory per connection. Every loop is bounded by `--timeout-s`.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use ferry_mqtt::{
    AckKind, Connect, Decoded, Packet, Properties, PubResp, Publish, QoS, ReasonCode, SubOptions, Subscribe, Version,
    decode, encode,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{FrameSource, Target, open_stream};
use crate::pace::{LatencySummary, Pace};
use crate::report::{result_word, write_json};

/// Socket timeout: how often blocked reads wake to check deadlines.
const IO_TICK: Duration = Duration::from_millis(100);
const READ_CHUNK_BYTES: usize = 256 * 1024;
const PACKET_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Options of `ferry-perf mqtt`.
#[derive(Debug, Clone, Args)]
pub struct MqttArgs {
    /// Broker address: mqtt://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub url: String,
    /// Subscriber connections (fan-out).
    #[arg(long, default_value_t = 1)]
    pub subscribers: u32,
    /// Messages published.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Payload bytes (at least 8: the sequence stamp).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// QoS of the publishes and subscriptions.
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Most unacknowledged QoS 1/2 publishes in flight.
    #[arg(long, default_value_t = 1000)]
    pub window: u32,
    /// Speak MQTT 5.0 (default 3.1.1).
    #[arg(long)]
    pub v5: bool,
    #[arg(long, default_value = "guest")]
    pub username: String,
    #[arg(long, default_value = "guest")]
    pub password: String,
    /// Hard limit on the run.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Broker process id, for CPU time and memory (same machine, Linux).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Publish at this many msg/s on a fixed schedule, one message per write, and report
    /// latency from each message's intended send time (needs --size 16 or more).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of `ferry-perf mqtt-idle`.
#[derive(Debug, Clone, Args)]
pub struct MqttIdleArgs {
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub url: String,
    /// Idle connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: u32,
    /// Broker process id (its VmRSS is read before and after).
    #[arg(long)]
    pub broker_pid: u32,
    /// Seconds to hold the connections before measuring.
    #[arg(long, default_value_t = 3)]
    pub hold_s: u64,
    #[arg(long, default_value = "guest")]
    pub username: String,
    #[arg(long, default_value = "guest")]
    pub password: String,
    #[arg(long)]
    pub v5: bool,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn addr_of(url: &str) -> Result<String> {
    let addr = url.strip_prefix("mqtt://").ok_or_else(|| anyhow!("expected mqtt://host:port, not {url:?}"))?;
    if !addr.contains(':') {
        bail!("expected mqtt://host:port, not {url:?}");
    }
    Ok(addr.trim_end_matches('/').to_owned())
}

/// A blocking MQTT connection: packets out through a buffer, packets in through the codec
/// (decoded from `input[start..]`, so a read of many small packets is not shifted once each).
pub(crate) struct Conn {
    stream: TcpStream,
    version: Version,
    input: Vec<u8>,
    start: usize,
    chunk: Vec<u8>,
    output: Vec<u8>,
}

/// Connects to `target` (MQTT 3.1.1, clean session, no keep-alive) as `client_id` with
/// `--login`/`--passcode` (else guest/guest) and waits for a successful CONNACK.
pub(crate) fn connect(target: &Target, client_id: &str, deadline: Instant) -> Result<Conn> {
    let user = target.login.as_deref().unwrap_or("guest");
    let password = target.passcode.as_deref().unwrap_or("guest");
    Conn::handshake(open_stream(target, deadline)?, client_id, false, user, password, deadline)
}

impl Conn {
    fn open(addr: &str, id: &str, v5: bool, user: &str, password: &str, deadline: Instant) -> Result<Conn> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TICK))?;
        Conn::handshake(stream, id, v5, user, password, deadline)
    }

    /// Sends CONNECT on a connected `stream` and waits for a successful CONNACK.
    fn handshake(stream: TcpStream, id: &str, v5: bool, user: &str, password: &str, deadline: Instant) -> Result<Conn> {
        let version = if v5 { Version::V5 } else { Version::V3_1_1 };
        let mut conn =
            Conn { stream, version, input: Vec::new(), start: 0, chunk: vec![0; READ_CHUNK_BYTES], output: Vec::new() };
        let connect = Connect {
            version,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id: id.to_owned(),
            will: None,
            username: Some(user.to_owned()),
            password: Some(Bytes::from(password.to_owned())),
        };
        conn.queue(&Packet::Connect(Box::new(connect)));
        conn.flush()?;
        match conn.next(deadline)? {
            Packet::ConnAck(ack) if ack.code == ReasonCode::SUCCESS => Ok(conn),
            other => bail!("CONNECT refused: {other:?}"),
        }
    }

    /// The socket, for a second handle (a [`FrameWriter`] on another thread) or to keep open.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub(crate) fn version(&self) -> Version {
        self.version
    }

    fn queue(&mut self, packet: &Packet) {
        encode(packet, self.version, &mut self.output);
    }

    fn flush(&mut self) -> Result<()> {
        self.stream.write_all(&self.output).context("write")?;
        self.output.clear();
        Ok(())
    }

    /// The next packet, waiting until `deadline`.
    pub(crate) fn next(&mut self, deadline: Instant) -> Result<Packet> {
        loop {
            if let Some(packet) = self.try_decode()? {
                return Ok(packet);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for a packet");
            }
            self.read_some()?;
        }
    }

    /// A packet already buffered, without touching the socket.
    pub(crate) fn try_decode(&mut self) -> Result<Option<Packet>> {
        let pending = &self.input[self.start..];
        match decode(pending, self.version, PACKET_BYTES_MAX).map_err(|e| anyhow!("bad packet: {e}"))? {
            Decoded::Packet { packet, consumed } => {
                self.start += consumed;
                Ok(Some(packet))
            }
            Decoded::Incomplete { .. } => Ok(None),
        }
    }

    /// Reads once from the socket (waiting at most one tick; `false` then); fails once the
    /// broker closed.
    pub(crate) fn read_some(&mut self) -> Result<bool> {
        self.input.drain(..self.start);
        self.start = 0;
        match self.stream.read(&mut self.chunk) {
            Ok(0) => bail!("the broker closed the connection"),
            Ok(n) => {
                self.input.extend_from_slice(&self.chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) => Err(e).context("read"),
        }
    }
}

impl FrameSource for Conn {
    type Frame = Packet;

    fn buffered_frame(&mut self) -> Result<Option<Packet>> {
        self.try_decode()
    }

    fn fill(&mut self) -> Result<bool> {
        self.read_some()
    }
}

fn ack(kind: AckKind, packet_id: u16) -> Packet {
    Packet::PubResp(PubResp { kind, packet_id, reason: ReasonCode::SUCCESS, properties: Properties::default() })
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Latencies of first copies in ns (paced runs).
    latency: Option<Histogram<u64>>,
}

/// Bytes 8..16 of a paced payload: the intended send time, ns after the schedule's start.
fn intended_ns_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?))
}

/// Connects and subscribes one subscriber.
fn subscribed(args: &MqttArgs, addr: &str, topic: &str, i: u32, deadline: Instant) -> Result<Conn> {
    let mut conn =
        Conn::open(addr, &format!("perf-sub-{i}-{topic}"), args.v5, &args.username, &args.password, deadline)?;
    let qos = QoS::from_u8(args.qos).ok_or_else(|| anyhow!("--qos must be 0, 1 or 2"))?;
    let options = SubOptions { qos, no_local: false, retain_as_published: false, retain_handling: 0 };
    let subscribe =
        Subscribe { packet_id: 1, properties: Properties::default(), filters: vec![(topic.to_owned(), options)] };
    conn.queue(&Packet::Subscribe(subscribe));
    conn.flush()?;
    while !matches!(conn.next(deadline)?, Packet::SubAck(_)) {}
    Ok(conn)
}

fn subscriber(
    args: &MqttArgs,
    addr: &str,
    topic: &str,
    i: u32,
    ready: &Barrier,
    base: &OnceLock<Instant>,
) -> Result<Seen> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    // Pass the barrier either way, so a failed subscriber cannot hang the publisher.
    let setup = subscribed(args, addr, topic, i, deadline);
    ready.wait();
    let mut conn = setup?;
    let mut seen = Seen { latency: args.rate.map(|_| crate::pace::histogram()), ..Seen::default() };
    let mut next_seq = 0u64;
    let mut got = vec![false; usize::try_from(args.messages).unwrap_or(usize::MAX)];
    while seen.received < args.messages && Instant::now() < deadline {
        while let Some(packet) = conn.try_decode()? {
            match packet {
                Packet::Publish(p) => {
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => conn.queue(&ack(AckKind::PubAck, id)),
                        (QoS::ExactlyOnce, Some(id)) => conn.queue(&ack(AckKind::PubRec, id)),
                        _ => {}
                    }
                    let seq =
                        p.payload.get(..8).map_or(u64::MAX, |b| u64::from_be_bytes(b.try_into().unwrap_or([0xFF; 8])));
                    match got.get_mut(usize::try_from(seq).unwrap_or(usize::MAX)) {
                        Some(slot) if *slot => seen.duplicates += 1,
                        Some(slot) => {
                            *slot = true;
                            if let (Some(hist), Some(base), Some(intended)) =
                                (&mut seen.latency, base.get(), intended_ns_of(&p.payload))
                            {
                                let at = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                                hist.saturating_record(at.saturating_sub(intended).max(1));
                            }
                            seen.received += 1;
                            seen.out_of_order += u64::from(seq != next_seq);
                            next_seq = seq + 1;
                        }
                        None => seen.duplicates += 1,
                    }
                }
                Packet::PubResp(r) if r.kind == AckKind::PubRel => conn.queue(&ack(AckKind::PubComp, r.packet_id)),
                _ => {}
            }
        }
        conn.flush()?;
        if seen.received < args.messages {
            conn.read_some()?;
        }
    }
    Ok(seen)
}

fn publisher(args: &MqttArgs, addr: &str, topic: &str, pace: Option<Pace>) -> Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut conn = Conn::open(addr, &format!("perf-pub-{topic}"), args.v5, &args.username, &args.password, deadline)?;
    let qos = QoS::from_u8(args.qos).ok_or_else(|| anyhow!("--qos must be 0, 1 or 2"))?;
    let window = u64::from(args.window.clamp(1, 65_000));
    let started = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut body = vec![0u8; args.size.max(8)];
    while acked < args.messages || (qos == QoS::AtMostOnce && sent < args.messages) {
        if Instant::now() > deadline {
            bail!("publisher timed out with {acked} of {} acknowledged", args.messages);
        }
        while sent < args.messages && (qos == QoS::AtMostOnce || sent - acked < window) {
            body[..8].copy_from_slice(&sent.to_be_bytes());
            if let Some(pace) = &pace {
                pace.wait(sent, deadline);
                body[8..16].copy_from_slice(&pace.intended_ns(sent).to_be_bytes());
            }
            let packet_id = (qos != QoS::AtMostOnce).then(|| u16::try_from(sent % 65_000 + 1).unwrap_or(1));
            let publish = Publish {
                dup: false,
                qos,
                retain: false,
                topic: topic.to_owned(),
                packet_id,
                properties: Properties::default(),
                payload: Bytes::copy_from_slice(&body),
            };
            conn.queue(&Packet::Publish(publish));
            sent += 1;
            if conn.output.len() > 64 * 1024 {
                conn.flush()?;
            }
            if pace.is_some() {
                break;
            }
        }
        conn.flush()?;
        if qos == QoS::AtMostOnce {
            acked = sent;
            continue;
        }
        match &pace {
            // Read acks only until the next message is due.
            Some(pace) if sent < args.messages => {
                let due = pace.base + Duration::from_nanos(pace.intended_ns(sent));
                let left = due.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    conn.stream.set_read_timeout(Some(left.clamp(Duration::from_micros(1), IO_TICK)))?;
                    conn.read_some()?;
                }
            }
            _ => {
                conn.read_some()?;
            }
        }
        while let Some(packet) = conn.try_decode()? {
            match packet {
                Packet::PubResp(r) if r.kind == AckKind::PubAck => acked += 1,
                Packet::PubResp(r) if r.kind == AckKind::PubRec => conn.queue(&ack(AckKind::PubRel, r.packet_id)),
                Packet::PubResp(r) if r.kind == AckKind::PubComp => acked += 1,
                _ => {}
            }
        }
    }
    Ok(started.elapsed())
}

/// Runs `ferry-perf mqtt` (table on stdout, JSON with `--json`); returns whether every
/// subscriber got every message exactly once, in order.
pub fn throughput(args: &MqttArgs) -> Result<bool> {
    let (report, _) = measure(args)?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(report.clean())
}

/// Runs the scenario and prints its table; returns the report and, for a paced (`--rate`)
/// run, the subscribers' latency histograms merged.
pub fn measure(args: &MqttArgs) -> Result<(MqttReport, Option<Histogram<u64>>)> {
    let addr = addr_of(&args.url)?;
    if args.size < 8 || (args.rate.is_some() && args.size < 16) {
        bail!("--size must be at least 8 (the sequence stamp), 16 with --rate (and the send time)");
    }
    let topic = format!("perf/{}/{}", std::process::id(), Instant::now().elapsed().as_nanos());
    let before = args.broker_pid.map(crate::broker_stats::sample).transpose()?;
    let base = Arc::new(OnceLock::new());
    let ready = Arc::new(Barrier::new(usize::try_from(args.subscribers).unwrap_or(1) + 1));
    let subs: Vec<_> = (0..args.subscribers)
        .map(|i| {
            let (args, addr, topic, ready, base) =
                (args.clone(), addr.clone(), topic.clone(), ready.clone(), base.clone());
            thread::spawn(move || subscriber(&args, &addr, &topic, i, &ready, &base))
        })
        .collect();
    ready.wait();
    let started = Instant::now();
    let _ = base.set(started);
    let publish_time = publisher(args, &addr, &topic, args.rate.map(|rate| Pace { base: started, rate }))?;
    let mut seen = Vec::new();
    for handle in subs {
        seen.push(handle.join().map_err(|_| anyhow!("subscriber panicked"))??);
    }
    let elapsed = started.elapsed();
    let after = args.broker_pid.map(crate::broker_stats::sample).transpose()?;
    let received: u64 = seen.iter().map(|s| s.received).sum();
    let mut latency = seen.iter().filter_map(|s| s.latency.clone());
    let mut merged = latency.next();
    if let Some(merged) = &mut merged {
        for hist in latency {
            merged.add(&hist).map_err(|e| anyhow!("merge histograms: {e:?}"))?;
        }
    }
    let mut report = MqttReport {
        url: args.url.clone(),
        qos: args.qos,
        size_bytes: args.size,
        subscribers: args.subscribers,
        messages: args.messages,
        publish_msg_per_s: args.messages as f64 / publish_time.as_secs_f64(),
        delivery_msg_per_s: received as f64 / elapsed.as_secs_f64(),
        per_subscriber_msg_per_s: args.messages as f64 / elapsed.as_secs_f64(),
        received,
        expected: args.messages * u64::from(args.subscribers),
        duplicates: seen.iter().map(|s| s.duplicates).sum(),
        out_of_order: seen.iter().map(|s| s.out_of_order).sum(),
        broker: args.broker_pid.zip(before.zip(after)).map(|(pid, (b, a))| MqttBroker {
            pid,
            cpu_s: a.cpu_s - b.cpu_s,
            peak_rss_kib: a.peak_rss_kib,
        }),
        latency: merged.as_ref().map(LatencySummary::of),
        result: "",
    };
    report.result = result_word(report.clean());
    print!("{}", report.table());
    Ok((report, merged))
}

/// The broker's CPU and peak memory over an `mqtt` run (with `--broker-pid`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MqttBroker {
    pub pid: u32,
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
}

/// Everything one `ferry-perf mqtt` run measured: the table on stdout and, with `--json`,
/// the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct MqttReport {
    pub url: String,
    pub qos: u8,
    pub size_bytes: usize,
    pub subscribers: u32,
    pub messages: u64,
    /// Messages over the time until the last was acknowledged (QoS 1/2) or written (QoS 0).
    pub publish_msg_per_s: f64,
    /// First copies delivered to all subscribers together, a second.
    pub delivery_msg_per_s: f64,
    pub per_subscriber_msg_per_s: f64,
    /// First copies, all subscribers together.
    pub received: u64,
    pub expected: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub broker: Option<MqttBroker>,
    /// Latency from each message's intended send time (paced runs, `--rate`).
    pub latency: Option<LatencySummary>,
    /// `OK` or `FAILED`, as the table's last line.
    pub result: &'static str,
}

impl MqttReport {
    /// Exactly once and in order: one publisher's messages on one topic keep their order.
    pub fn clean(&self) -> bool {
        self.received == self.expected && self.duplicates == 0 && self.out_of_order == 0
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mqtt {} qos {} size {} subscribers {} messages {}",
            self.url, self.qos, self.size_bytes, self.subscribers, self.messages
        );
        let _ = writeln!(out, "publish rate      {:>12.0} msg/s (acknowledged)", self.publish_msg_per_s);
        let _ = writeln!(out, "delivery rate     {:>12.0} msg/s (all subscribers)", self.delivery_msg_per_s);
        let _ = writeln!(out, "per subscriber    {:>12.0} msg/s", self.per_subscriber_msg_per_s);
        let _ = writeln!(
            out,
            "received {} of {}, duplicates {}, out of order {}",
            self.received, self.expected, self.duplicates, self.out_of_order
        );
        if let Some(b) = &self.broker {
            let _ = writeln!(out, "broker cpu        {:>12.2} s, peak rss {} KiB", b.cpu_s, b.peak_rss_kib);
        }
        if let Some(latency) = &self.latency {
            let _ = writeln!(out, "{}", latency.line());
        }
        let _ = writeln!(out, "result: {}", self.result);
        out
    }
}

/// Runs `ferry-perf mqtt-idle` (one line on stdout, JSON with `--json`).
pub fn idle(args: &MqttIdleArgs) -> Result<()> {
    let addr = addr_of(&args.url)?;
    let before = crate::broker_stats::rss_kib(args.broker_pid)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conns = Vec::with_capacity(usize::try_from(args.connections).unwrap_or(0));
    for i in 0..args.connections {
        let conn = Conn::open(&addr, &format!("perf-idle-{i}"), args.v5, &args.username, &args.password, deadline)
            .with_context(|| format!("connection {i}"))?;
        conns.push(conn);
    }
    thread::sleep(Duration::from_secs(args.hold_s));
    let after = crate::broker_stats::rss_kib(args.broker_pid)?;
    let report = IdleReport {
        url: args.url.clone(),
        connections: args.connections,
        hold_s: args.hold_s,
        broker_pid: args.broker_pid,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: after.saturating_sub(before) as f64 * 1024.0 / f64::from(args.connections.max(1)),
        result: result_word(true),
    };
    println!("{}", report.line());
    drop(conns);
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

/// What one `ferry-perf mqtt-idle` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub url: String,
    /// Connections opened and held (a connection that fails ends the run with an error).
    pub connections: u32,
    pub hold_s: u64,
    pub broker_pid: u32,
    pub rss_before_kib: u64,
    /// After holding every connection `hold_s` seconds.
    pub rss_after_kib: u64,
    pub bytes_per_connection: f64,
    /// Always `OK`: a run that could not open every connection fails before a report.
    pub result: &'static str,
}

impl IdleReport {
    /// The line on stdout.
    pub fn line(&self) -> String {
        format!(
            "idle connections {} rss before {} KiB, after {} KiB, {:.0} bytes per connection",
            self.connections, self.rss_before_kib, self.rss_after_kib, self.bytes_per_connection
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_payload_carries_the_send_time_after_the_seq() {
        let mut body = vec![0u8; 16];
        body[..8].copy_from_slice(&7u64.to_be_bytes());
        body[8..16].copy_from_slice(&123_456u64.to_be_bytes());
        assert_eq!(intended_ns_of(&body), Some(123_456));
        assert_eq!(intended_ns_of(&body[..12]), None);
        assert!(addr_of("mqtt://127.0.0.1:1883").is_ok() && addr_of("stomp://x:1").is_err());
    }

    fn report(duplicates: u64, latency: Option<LatencySummary>) -> MqttReport {
        let mut report = MqttReport {
            url: "mqtt://127.0.0.1:1883".to_owned(),
            qos: 1,
            size_bytes: 16,
            subscribers: 2,
            messages: 10,
            publish_msg_per_s: 1000.0,
            delivery_msg_per_s: 2000.0,
            per_subscriber_msg_per_s: 1000.0,
            received: 20,
            expected: 20,
            duplicates,
            out_of_order: 0,
            broker: Some(MqttBroker { pid: 7, cpu_s: 0.25, peak_rss_kib: 4096 }),
            latency,
            result: "",
        };
        report.result = result_word(report.clean());
        report
    }

    #[test]
    fn the_json_report_holds_what_the_table_shows() {
        let mut hist = crate::pace::histogram();
        hist.saturating_record(5_000);
        let clean = report(0, Some(LatencySummary::of(&hist)));
        let json = serde_json::to_value(&clean).expect("serialises");
        assert_eq!((json["received"].as_u64(), json["expected"].as_u64()), (Some(20), Some(20)));
        assert_eq!(json["delivery_msg_per_s"], 2000.0);
        assert_eq!(json["broker"]["peak_rss_kib"], 4096);
        assert_eq!(json["latency"]["count"], 1);
        assert_eq!(json["result"], "OK");
        assert!(clean.table().ends_with("result: OK\n"), "{}", clean.table());

        let duplicated = report(1, None);
        let json = serde_json::to_value(&duplicated).expect("serialises");
        assert_eq!((json["duplicates"].as_u64(), json["result"].as_str()), (Some(1), Some("FAILED")));
        assert!(json["latency"].is_null());
        assert!(!duplicated.clean());
        assert!(duplicated.table().ends_with(
            "duplicates 1, out of order 0\nbroker cpu                0.25 s, peak rss 4096 KiB\nresult: FAILED\n"
        ));
    }

    #[test]
    fn the_idle_json_report_holds_the_line() {
        let report = IdleReport {
            url: "mqtt://127.0.0.1:1883".to_owned(),
            connections: 1000,
            hold_s: 3,
            broker_pid: 7,
            rss_before_kib: 10_000,
            rss_after_kib: 20_000,
            bytes_per_connection: 10_240.0,
            result: result_word(true),
        };
        let json = serde_json::to_value(&report).expect("serialises");
        assert_eq!((json["connections"].as_u64(), json["rss_after_kib"].as_u64()), (Some(1000), Some(20_000)));
        assert_eq!(json["bytes_per_connection"], 10_240.0);
        assert_eq!(json["result"], "OK");
        assert_eq!(
            report.line(),
            "idle connections 1000 rss before 10000 KiB, after 20000 KiB, 10240 bytes per connection"
        );
    }
}
