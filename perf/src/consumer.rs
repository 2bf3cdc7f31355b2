//! One consumer: its own connection, one thread. It SUBSCRIBEs (with receipts, waited for) to
//! its queues before any producer starts, then reads MESSAGEs, checks each against the shared
//! [`SeqChecker`] and its own [`OrderTracker`], and ACKs each one (`client-individual`,
//! pipelined: ACKs are written in batches after each read) or relies on `auto`. It stops when
//! every expected message has arrived, when the producers are done and nothing arrived for
//! `drain_idle`, on `stop`, or at the deadline.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ferry_stomp::{Command, Frame};
use hdrhistogram::Histogram;

use crate::checker::{OrderTracker, Seen, SeqChecker, parse_stamp};
use crate::client::{FrameReader, FrameSource, FrameWriter, Protocol, Target, connect, describe};
use crate::pace;
use crate::shared::Shared;

/// Pending acknowledgement bytes that trigger a socket write in the middle of a read batch.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Longest wait for the DISCONNECT receipt.
const BYE_WAIT: Duration = Duration::from_secs(2);

/// How a consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckMode {
    Auto,
    ClientIndividual,
}

impl AckMode {
    pub fn header(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::ClientIndividual => "client-individual",
        }
    }
}

/// What one consumer subscribes to and how.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub id: u32,
    pub queues: Vec<u32>,
    pub producers: u32,
    pub queue_count: u32,
    pub ack: AckMode,
    pub prefetch: Option<u32>,
    pub drain_idle: Duration,
    /// The paced producers' schedule start (set once they start): record each message's
    /// latency against it.
    pub latency_base: Option<Arc<OnceLock<Instant>>>,
    /// Subscribe to `amq.topic` with this binding key (STOMP: `/topic/KEY`) instead of the
    /// queues; deliveries count as queue 0.
    pub topic: Option<String>,
}

/// What one consumer saw.
#[derive(Debug, Clone)]
pub struct ConsumerOutcome {
    pub reordered: u64,
    /// When this consumer received its last first-copy message.
    pub last_new_at: Option<Instant>,
    /// Latencies of first copies, in ns (with `latency_base`).
    pub latency: Option<Histogram<u64>>,
}

/// Per-consumer bookkeeping while consuming.
#[derive(Debug)]
pub(crate) struct Progress {
    order: OrderTracker,
    last_new_at: Option<Instant>,
    latency: Option<(Arc<OnceLock<Instant>>, Histogram<u64>)>,
}

impl Progress {
    pub fn new(config: &ConsumerConfig) -> Progress {
        Progress {
            order: OrderTracker::new(config.producers, config.queue_count),
            last_new_at: None,
            latency: config.latency_base.clone().map(|base| (base, pace::histogram())),
        }
    }

    /// Checks one received message: from queue index `queue` (if known), with `body`.
    pub fn record(&mut self, checker: &SeqChecker, queue: Option<u32>, body: &[u8]) {
        let (Some(queue), Some((producer, seq))) = (queue, parse_stamp(body)) else {
            checker.record_unexpected();
            return;
        };
        let seen = checker.record(producer, seq, queue);
        if seen == Seen::First {
            let now = Instant::now();
            self.last_new_at = Some(now);
            if let Some((Some(base), hist)) = self.latency.as_mut().map(|(b, h)| (b.get(), h)) {
                pace::record(hist, *base, now, body);
            }
        }
        if seen != Seen::Unexpected {
            self.order.observe(producer, seq, queue, seen);
        }
    }

    pub fn outcome(&self) -> ConsumerOutcome {
        ConsumerOutcome {
            reordered: self.order.reordered(),
            last_new_at: self.last_new_at,
            latency: self.latency.as_ref().map(|(_, hist)| hist.clone()),
        }
    }
}

/// Connects, subscribes, reports readiness on `ready`, then consumes until done.
pub fn run(
    config: &ConsumerConfig,
    target: &Target,
    checker: &SeqChecker,
    shared: &Arc<Shared>,
    ready: &Sender<Result<(), String>>,
    deadline: Instant,
) -> Result<ConsumerOutcome> {
    match target.protocol {
        Protocol::Stomp => {}
        Protocol::Amqp => return crate::amqp_load::consume(config, target, checker, shared, ready, deadline),
        Protocol::Mqtt => return crate::mqtt_load::consume(config, target, checker, shared, ready, deadline),
    }
    let who = format!("consumer {}", config.id);
    let (mut reader, mut writer) = announce(ready, &who, subscribe_all(config, target, deadline))?;
    let mut progress = Progress::new(config);
    let connection = (&mut reader, &mut writer);
    let clean = receive_until_done(config, checker, (shared, &who), connection, deadline, |frame, writer| {
        on_frame(config, frame, writer, checker, &mut progress, shared)
    });
    if clean {
        disconnect(&mut reader, &mut writer, deadline);
    }
    Ok(progress.outcome())
}

/// Tells the run whether this consumer is subscribed (it starts producers once all are).
pub(crate) fn announce<T>(ready: &Sender<Result<(), String>>, who: &str, subscribed: Result<T>) -> Result<T> {
    let _ = ready.send(subscribed.as_ref().map(|_| ()).map_err(|e| format!("{who}: {e:#}")));
    subscribed
}

/// Subscription ids are `perf-<queue index>`, so a MESSAGE names the queue it came from.
const SUB_PREFIX: &str = "perf-";

/// A consumer is done once every expected message arrived, the run stopped or reached its
/// deadline, or the producers finished and nothing arrived for `drain_idle`.
pub(crate) fn consumer_done(
    shared: &Shared,
    checker: &SeqChecker,
    last_any_at: Instant,
    drain_idle: Duration,
    deadline: Instant,
) -> bool {
    let idle = shared.producers_done.load(Ordering::Relaxed) && last_any_at.elapsed() >= drain_idle;
    checker.unique() >= checker.expected() || shared.stopped() || Instant::now() >= deadline || idle
}

fn subscribe_all(config: &ConsumerConfig, target: &Target, deadline: Instant) -> Result<(FrameReader, FrameWriter)> {
    let (mut reader, mut writer) = connect(target, deadline)?;
    for &queue in &config.queues {
        let destination = match &config.topic {
            Some(key) => format!("/topic/{key}"),
            None => format!("/queue/perf-{queue}"),
        };
        let mut frame = Frame::new(Command::Subscribe)
            .with_header("id", format!("{SUB_PREFIX}{queue}"))
            .with_header("destination", destination)
            .with_header("ack", config.ack.header())
            .with_header("receipt", format!("sub-{queue}"));
        if let Some(prefetch) = config.prefetch {
            // Ferry and RabbitMQ read `prefetch-count`; ActiveMQ reads `activemq.prefetchSize`.
            frame = frame
                .with_header("prefetch-count", prefetch.to_string())
                .with_header("activemq.prefetchSize", prefetch.to_string());
        }
        writer.queue(&frame);
    }
    writer.flush(deadline)?;
    let mut waiting = config.queues.len();
    while waiting > 0 {
        match reader.next_frame(deadline)? {
            Some(f) if f.command == Command::Receipt => waiting -= 1,
            Some(f) if f.command == Command::Error => {
                bail!("SUBSCRIBE refused: {}", describe(&f))
            }
            Some(f) => bail!("expected RECEIPT for SUBSCRIBE, got {}", f.command.as_str()),
            None => bail!("no RECEIPT for SUBSCRIBE before the deadline"),
        }
    }
    Ok((reader, writer))
}

/// The receive loop every protocol's consumer shares: hands each buffered frame to
/// `on_frame` (which checks it, queues any acknowledgement on the writer and says whether it
/// was a delivery), writes in batches, and reads again until [`consumer_done`]. Returns
/// whether it ended cleanly (then the caller says goodbye); an error is recorded as `who`'s
/// and stops the run.
pub(crate) fn receive_until_done<R: FrameSource>(
    config: &ConsumerConfig,
    checker: &SeqChecker,
    (shared, who): (&Shared, &str),
    connection: (&mut R, &mut FrameWriter),
    deadline: Instant,
    on_frame: impl FnMut(R::Frame, &mut FrameWriter) -> Result<bool>,
) -> bool {
    let result = receive(config, checker, shared, connection, deadline, on_frame);
    if let Err(e) = &result {
        shared.error(who, format!("{e:#}"));
        shared.request_stop();
    }
    result.is_ok()
}

fn receive<R: FrameSource>(
    config: &ConsumerConfig,
    checker: &SeqChecker,
    shared: &Shared,
    (reader, writer): (&mut R, &mut FrameWriter),
    deadline: Instant,
    mut on_frame: impl FnMut(R::Frame, &mut FrameWriter) -> Result<bool>,
) -> Result<()> {
    let mut last_any_at = Instant::now();
    loop {
        let mut delivered = false;
        while let Some(frame) = reader.buffered_frame()? {
            delivered |= on_frame(frame, writer)?;
            if writer.pending_bytes() >= WRITE_BATCH_BYTES {
                writer.flush(deadline)?;
            }
        }
        writer.flush(deadline)?;
        if delivered {
            last_any_at = Instant::now();
        }
        if consumer_done(shared, checker, last_any_at, config.drain_idle, deadline) {
            return Ok(());
        }
        reader.fill()?;
    }
}

/// Checks one STOMP frame (a MESSAGE, else an error) and queues its ACK if the mode wants one.
fn on_frame(
    config: &ConsumerConfig,
    frame: Frame,
    writer: &mut FrameWriter,
    checker: &SeqChecker,
    progress: &mut Progress,
    shared: &Shared,
) -> Result<bool> {
    match frame.command {
        Command::Message => {}
        Command::Error => bail!("ERROR from broker: {}", describe(&frame)),
        other => bail!("unexpected {} frame", other.as_str()),
    }
    Shared::add(&shared.received, 1);
    on_message(&frame, checker, progress);
    if config.ack == AckMode::ClientIndividual {
        match frame.header("ack").filter(|id| !needs_escape(id)) {
            Some(id) => write_ack(id, writer.pending_mut()),
            None => writer.queue(&ack_for(&frame)?),
        }
    }
    Ok(true)
}

/// The common ACK written directly (the bytes the codec writes for it): `ACK`, `id:<ack>`,
/// a blank line, NUL. `id` needs no escaping.
fn write_ack(id: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"ACK\nid:");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\n\n\0");
}

/// Whether a header value needs STOMP 1.2 escaping (then the codec writes the frame).
fn needs_escape(value: &str) -> bool {
    value.bytes().any(|b| matches!(b, b'\n' | b'\r' | b':' | b'\\'))
}

/// The ACK for `message`: STOMP 1.2 names it by the MESSAGE's `ack` header; a broker that
/// answered as STOMP 1.1 sends none, and is acked by `message-id` plus `subscription`.
fn ack_for(message: &Frame) -> Result<Frame> {
    if let Some(id) = message.header("ack") {
        return Ok(Frame::new(Command::Ack).with_header("id", id));
    }
    match (message.header("message-id"), message.header("subscription")) {
        (Some(id), Some(sub)) => {
            Ok(Frame::new(Command::Ack).with_header("message-id", id).with_header("subscription", sub))
        }
        _ => bail!("MESSAGE with neither an ack header nor message-id + subscription under client-individual"),
    }
}

fn on_message(frame: &Frame, checker: &SeqChecker, progress: &mut Progress) {
    let queue =
        frame.header("subscription").and_then(|id| id.strip_prefix(SUB_PREFIX)).and_then(|q| q.parse::<u32>().ok());
    progress.record(checker, queue, &frame.body);
}

/// Flushes, sends DISCONNECT with a receipt and waits briefly for it (best effort).
fn disconnect(reader: &mut FrameReader, writer: &mut FrameWriter, deadline: Instant) {
    writer.queue(&Frame::new(Command::Disconnect).with_header("receipt", "bye"));
    if writer.flush(deadline).is_err() {
        return;
    }
    let until = deadline.min(Instant::now() + BYE_WAIT);
    while let Ok(Some(frame)) = reader.next_frame(until) {
        if frame.command == Command::Receipt {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_ack_is_the_encoded_frame() {
        let id = "ferry-0000abcd-1-7-12345";
        assert!(!needs_escape(id) && needs_escape("a:b"));
        let mut expected = Vec::new();
        ferry_stomp::encode(&Frame::new(Command::Ack).with_header("id", id), ferry_stomp::Version::V1_2, &mut expected);
        let mut written = Vec::new();
        write_ack(id, &mut written);
        assert_eq!(written, expected);
    }
}
