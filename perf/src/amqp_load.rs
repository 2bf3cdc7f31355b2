//! The throughput scenario over AMQP 0-9-1, the same shape as the STOMP producer and consumer:
//! queues `perf-amqp-<i>` (durable, declared by both sides, so either may start first) on the
//! default exchange. A producer publishes round-robin, writing pre-encoded method and header
//! frames plus the stamped body; with `--receipts` it selects publisher confirms and keeps at
//! most `window` unconfirmed, counting `basic.ack` (single or `multiple`) on a reader thread
//! (a `basic.nack` is an error). A consumer sets `basic.qos` to `--prefetch` (if given), consumes
//! each of its queues with consumer tag `perf-<i>` (`no-ack` under `--ack auto`, else one
//! `basic.ack` per delivery, pipelined) and checks every body. Bounded by the run's deadline.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ferry_amqp091::frame::{self, Frame};
use ferry_amqp091::{
    BasicAck, BasicConsume, BasicProperties, BasicPublish, BasicQos, ConfirmSelect, ContentHeader, FieldTable, Method,
    QueueBind, QueueDeclare,
};

use crate::amqp::{AmqpReader, CHANNEL, close, connect, describe, expect, send};
use crate::checker::SeqChecker;
use crate::client::{FrameSource, FrameWriter, Target};
use crate::consumer::{AckMode, ConsumerConfig, ConsumerOutcome, Progress, announce, receive_until_done};
use crate::producer::{ProducerConfig, ProducerOutcome, ReceiptBoard, send_all};
use crate::shared::Shared;

/// Longest wait for a consumer's connection.close-ok at the end.
const BYE_WAIT: Duration = Duration::from_secs(2);
/// Longest wait for a producer's close-ok: a busy broker may still be reading its publishes.
const PRODUCER_BYE_WAIT: Duration = Duration::from_secs(20);
/// Consumer tags are `perf-<queue index>`, so a delivery names the queue it came from.
const TAG_PREFIX: &str = "perf-";

fn queue_name(queue: u32) -> String {
    format!("perf-amqp-{queue}")
}

/// The exchange fan-out runs publish to.
const TOPIC_EXCHANGE: &str = "amq.topic";

/// Fan-out subscriber `id`'s own queue (exclusive, auto-delete).
fn fanout_queue(id: u32) -> String {
    format!("perf-fanout-{}-{id}", std::process::id())
}

/// Declares subscriber `id`'s exclusive queue and binds it to `amq.topic` with `key`.
fn bind_fanout_queue(
    reader: &mut AmqpReader,
    writer: &mut FrameWriter,
    id: u32,
    key: &str,
    deadline: Instant,
) -> Result<()> {
    let queue = fanout_queue(id);
    send(
        writer,
        CHANNEL,
        QueueDeclare { queue: queue.clone(), exclusive: true, auto_delete: true, ..Default::default() },
    );
    let bind =
        QueueBind { queue, exchange: TOPIC_EXCHANGE.to_owned(), routing_key: key.to_owned(), ..Default::default() };
    send(writer, CHANNEL, bind);
    writer.flush(deadline)?;
    expect(reader, deadline, "queue.declare-ok", |m| matches!(m, Method::QueueDeclareOk(_)))?;
    expect(reader, deadline, "queue.bind-ok", |m| matches!(m, Method::QueueBindOk(_)))?;
    Ok(())
}

/// Declares `queues` (durable, not exclusive) and waits for each declare-ok.
fn declare(reader: &mut AmqpReader, writer: &mut FrameWriter, queues: &[u32], deadline: Instant) -> Result<()> {
    for &q in queues {
        let declare = QueueDeclare { queue: queue_name(q), durable: true, ..Default::default() };
        send(writer, CHANNEL, declare);
    }
    writer.flush(deadline)?;
    for _ in queues {
        expect(reader, deadline, "queue.declare-ok", |m| matches!(m, Method::QueueDeclareOk(_)))?;
    }
    Ok(())
}

/// Publisher confirms seen so far: everything up to `upto`, plus single acks beyond it.
#[derive(Debug, Default)]
struct Confirms {
    upto: u64,
    beyond: BTreeSet<u64>,
}

impl Confirms {
    fn ack(&mut self, tag: u64, multiple: bool) -> u64 {
        if multiple {
            self.upto = self.upto.max(tag);
        } else if tag > self.upto {
            self.beyond.insert(tag);
        }
        self.beyond.retain(|t| *t > self.upto);
        while self.beyond.remove(&(self.upto + 1)) {
            self.upto += 1;
        }
        self.upto + self.beyond.len() as u64
    }
}

/// Runs one AMQP producer to completion (or the deadline).
pub fn produce(
    config: &ProducerConfig,
    target: &Target,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Result<ProducerOutcome> {
    let who = format!("producer {}", config.id);
    let Publisher { reader, mut writer, prefixes, chunk } = Publisher::open(config, target, deadline)?;
    let board = Arc::new(ReceiptBoard::default());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = Arc::new(Mutex::new(reader));
    let reader_thread = {
        let (board, shared, stop, who, reader) =
            (Arc::clone(&board), Arc::clone(shared), Arc::clone(&stop), who.clone(), Arc::clone(&reader));
        std::thread::Builder::new().name(format!("{who} confirms")).spawn(move || {
            let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
            read_confirms(&mut reader, &board, &shared, &stop, &who, deadline);
        })?
    };
    let (sent, mut result) = send_all(config, &mut writer, &board, shared, deadline, |writer, queue, seq| {
        encode_publish(&prefixes[queue as usize], &config.body(seq), chunk, writer.pending_mut());
    });
    let receipted = if config.receipts { board.wait(deadline, |s| s.count >= sent) } else { 0 };
    let finished_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    if reader_thread.join().is_err() {
        shared.error(&who, "confirm reader panicked");
    }
    if result.is_ok() {
        let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
        if !close(&mut reader, &mut writer, deadline.min(Instant::now() + PRODUCER_BYE_WAIT)) {
            result = Err(anyhow::anyhow!("no connection.close-ok: the broker may not have taken every publish"));
        }
    }
    if let Err(e) = &result {
        shared.error(&who, format!("{e:#}"));
    }
    Ok(ProducerOutcome { id: config.id, sent, receipted, finished_at })
}

/// A producer's connection once set up: queues declared, confirms selected (with receipts),
/// and the pre-encoded publish heads by queue index.
struct Publisher {
    reader: AmqpReader,
    writer: FrameWriter,
    prefixes: Vec<Vec<u8>>,
    /// Most body bytes per body frame (frame-max less the frame overhead).
    chunk: usize,
}

impl Publisher {
    fn open(config: &ProducerConfig, target: &Target, deadline: Instant) -> Result<Publisher> {
        let (mut reader, mut writer, frame_max) = connect(target, deadline)?;
        let queues: Vec<u32> = (0..config.queues).collect();
        if config.topic.is_none() {
            declare(&mut reader, &mut writer, &queues, deadline)?;
        }
        if config.receipts {
            send(&mut writer, CHANNEL, ConfirmSelect { nowait: false });
            writer.flush(deadline)?;
            expect(&mut reader, deadline, "confirm.select-ok", |m| matches!(m, Method::ConfirmSelectOk(_)))?;
        }
        let prefixes = queues.iter().map(|&q| publish_prefix(q, config)).collect();
        let chunk = (frame_max as usize).saturating_sub(frame::FRAME_OVERHEAD_BYTES).max(1);
        Ok(Publisher { reader, writer, prefixes, chunk })
    }
}

/// Appends one publish: the method and header frames (`prefix`), then `body` in frames of at
/// most `chunk` bytes.
fn encode_publish(prefix: &[u8], body: &[u8], chunk: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(prefix);
    for part in body.chunks(chunk) {
        frame::encode_body(CHANNEL, part, out);
    }
}

/// What a publisher makes of a frame from the broker: the confirmed count after a
/// `basic.ack`, nothing for flow notices, an error for anything else that is a method.
fn on_publisher_frame(frame: Frame, confirms: &mut Confirms) -> Result<Option<u64>> {
    match frame {
        Frame::Method { method: Method::BasicAck(ack), .. } => Ok(Some(confirms.ack(ack.delivery_tag, ack.multiple))),
        // The broker holds publishers back (a resource alarm); the socket tells the rest.
        Frame::Method { method: Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_), .. } => Ok(None),
        Frame::Method { method, .. } => bail!("unexpected {} from broker", describe(&method)),
        _ => Ok(None),
    }
}

/// An AMQP producer for the one-thread loop ([`crate::mux`]).
pub(crate) struct AmqpPipe {
    config: ProducerConfig,
    publisher: Publisher,
    confirms: Confirms,
    confirmed: u64,
}

impl AmqpPipe {
    /// Connects and sets up (blocking, bounded by `deadline`).
    pub(crate) fn open(config: &ProducerConfig, target: &Target, deadline: Instant) -> Result<AmqpPipe> {
        let publisher = Publisher::open(config, target, deadline)?;
        Ok(AmqpPipe { config: config.clone(), publisher, confirms: Confirms::default(), confirmed: 0 })
    }
}

impl crate::mux::Pipe for AmqpPipe {
    fn writer(&mut self) -> &mut FrameWriter {
        &mut self.publisher.writer
    }

    fn encode(&mut self, queue: u32, seq: u64) {
        let p = &mut self.publisher;
        encode_publish(&p.prefixes[queue as usize], &self.config.body(seq), p.chunk, p.writer.pending_mut());
    }

    fn read(&mut self) -> Result<u64> {
        self.publisher.reader.fill()?;
        while let Some(frame) = self.publisher.reader.buffered_frame()? {
            if let Some(count) = on_publisher_frame(frame, &mut self.confirms)? {
                self.confirmed = count;
            }
        }
        Ok(self.confirmed)
    }

    fn close(&mut self, until: Instant) -> Result<()> {
        let p = &mut self.publisher;
        if !close(&mut p.reader, &mut p.writer, until) {
            bail!("no connection.close-ok: the broker may not have taken every publish");
        }
        Ok(())
    }
}

/// The method and content-header frames of a publish to `queue` (the body is per message).
fn publish_prefix(queue: u32, config: &ProducerConfig) -> Vec<u8> {
    let publish = match &config.topic {
        Some(key) => {
            BasicPublish { exchange: TOPIC_EXCHANGE.to_owned(), routing_key: key.clone(), ..Default::default() }
        }
        None => BasicPublish { routing_key: queue_name(queue), ..Default::default() },
    };
    let properties = BasicProperties { delivery_mode: config.persistent.then_some(2), ..Default::default() };
    let mut out = Vec::new();
    frame::encode_method(CHANNEL, &Method::BasicPublish(publish), &mut out);
    frame::encode_content_header(CHANNEL, &ContentHeader::basic(config.size as u64, properties), &mut out);
    out
}

fn read_confirms(
    reader: &mut AmqpReader,
    board: &ReceiptBoard,
    shared: &Shared,
    stop: &AtomicBool,
    who: &str,
    deadline: Instant,
) {
    let mut confirms = Confirms::default();
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let frame = match reader.next_frame(Instant::now() + Duration::from_millis(100)) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(e) => {
                if !stop.load(Ordering::Relaxed) {
                    shared.error(who, format!("{e:#}"));
                    shared.request_stop();
                }
                break;
            }
        };
        match on_publisher_frame(frame, &mut confirms) {
            Ok(Some(count)) => board.update(|s| {
                Shared::add(&shared.receipted, count - s.count);
                s.count = count;
            }),
            Ok(None) => {}
            Err(e) => {
                shared.error(who, format!("{e:#}"));
                shared.request_stop();
                break;
            }
        }
    }
    board.update(|s| s.closed = true);
}

/// A delivery whose content is still arriving.
#[derive(Debug)]
struct Incoming {
    queue: Option<u32>,
    tag: u64,
    size: Option<u64>,
    body: Vec<u8>,
}

/// Connects, consumes, reports readiness on `ready`, then checks deliveries until done.
pub fn consume(
    config: &ConsumerConfig,
    target: &Target,
    checker: &SeqChecker,
    shared: &Arc<Shared>,
    ready: &Sender<Result<(), String>>,
    deadline: Instant,
) -> Result<ConsumerOutcome> {
    let who = format!("consumer {}", config.id);
    let (mut reader, mut writer) = announce(ready, &who, subscribe(config, target, deadline))?;
    let mut progress = Progress::new(config);
    let mut incoming: Option<Incoming> = None;
    let connection = (&mut reader, &mut writer);
    let clean = receive_until_done(config, checker, (shared, &who), connection, deadline, |frame, writer| {
        let Some(done) = on_frame(frame, &mut incoming)? else { return Ok(false) };
        Shared::add(&shared.received, 1);
        progress.record(checker, done.queue, &done.body);
        if config.ack == AckMode::ClientIndividual {
            send(writer, CHANNEL, BasicAck { delivery_tag: done.tag, multiple: false });
        }
        Ok(true)
    });
    if clean {
        close(&mut reader, &mut writer, deadline.min(Instant::now() + BYE_WAIT));
    }
    Ok(progress.outcome())
}

fn subscribe(config: &ConsumerConfig, target: &Target, deadline: Instant) -> Result<(AmqpReader, FrameWriter)> {
    let (mut reader, mut writer, _) = connect(target, deadline)?;
    let consumed_queue = |q: u32| match &config.topic {
        Some(_) => fanout_queue(config.id),
        None => queue_name(q),
    };
    match &config.topic {
        Some(key) => bind_fanout_queue(&mut reader, &mut writer, config.id, key, deadline)?,
        None => declare(&mut reader, &mut writer, &config.queues, deadline)?,
    }
    if let Some(prefetch) = config.prefetch {
        let prefetch_count = u16::try_from(prefetch).unwrap_or(u16::MAX);
        send(&mut writer, CHANNEL, BasicQos { prefetch_count, ..Default::default() });
        writer.flush(deadline)?;
        expect(&mut reader, deadline, "basic.qos-ok", |m| matches!(m, Method::BasicQosOk(_)))?;
    }
    for &q in &config.queues {
        let consume = BasicConsume {
            queue: consumed_queue(q),
            consumer_tag: format!("{TAG_PREFIX}{q}"),
            no_ack: config.ack == AckMode::Auto,
            arguments: FieldTable::new(),
            ..Default::default()
        };
        send(&mut writer, CHANNEL, consume);
    }
    writer.flush(deadline)?;
    for _ in &config.queues {
        expect(&mut reader, deadline, "basic.consume-ok", |m| matches!(m, Method::BasicConsumeOk(_)))?;
    }
    Ok((reader, writer))
}

/// Advances the delivery being assembled; returns it once its body is complete.
fn on_frame(frame: Frame, incoming: &mut Option<Incoming>) -> Result<Option<Incoming>> {
    match frame {
        Frame::Method { method: Method::BasicDeliver(d), .. } => {
            let queue = d.consumer_tag.strip_prefix(TAG_PREFIX).and_then(|q| q.parse::<u32>().ok());
            *incoming = Some(Incoming { queue, tag: d.delivery_tag, size: None, body: Vec::new() });
            Ok(None)
        }
        Frame::Header { header, .. } => {
            let Some(current) = incoming.as_mut() else { bail!("content header without a delivery") };
            current.size = Some(header.body_size);
            Ok(if header.body_size == 0 { incoming.take() } else { None })
        }
        Frame::Body { body, .. } => {
            let Some(current) = incoming.as_mut() else { bail!("content body without a delivery") };
            current.body.extend_from_slice(&body);
            let complete = current.size.is_some_and(|size| current.body.len() as u64 >= size);
            Ok(if complete { incoming.take() } else { None })
        }
        Frame::Heartbeat { .. } => Ok(None),
        Frame::Method { method, .. } => bail!("unexpected {} from broker", describe(&method)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_count_single_and_multiple_acks() {
        let mut c = Confirms::default();
        assert_eq!(c.ack(2, false), 1);
        assert_eq!(c.ack(1, false), 2);
        assert_eq!(c.ack(5, false), 3);
        assert_eq!(c.ack(4, true), 5, "multiple covers 3 and 4; 5 was already in");
        assert_eq!(c.ack(6, true), 6);
    }
}
