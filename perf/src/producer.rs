//! One producer: its own connection and two threads. The sending thread SENDs
//! `messages` frames round-robin over the queues, batching writes; with receipts it puts a
//! `receipt` on every SEND and keeps at most `window` unreceipted SENDs in flight. A reader
//! thread counts RECEIPTs and catches ERRORs. Bounded by the run's deadline everywhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use ferry_stomp::{Command, Frame};

use crate::checker::{payload, queue_for};
use crate::client::{FrameReader, FrameSource, FrameWriter, Protocol, Target, connect, describe};
use crate::pace::{Pace, stamp_time};
use crate::shared::Shared;

/// Pending SEND bytes that trigger a socket write.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// The receipt id of the final DISCONNECT.
const BYE: &str = "bye";
/// Longest wait for the DISCONNECT receipt.
const BYE_WAIT: Duration = Duration::from_secs(5);

/// What one producer sends.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub id: u32,
    pub messages: u64,
    pub queues: u32,
    pub size: usize,
    pub persistent: bool,
    pub receipts: bool,
    pub window: u64,
    /// Send at a fixed rate, stamping each payload with its intended send time (latency runs).
    pub pace: Option<Pace>,
    /// Publish to `amq.topic` with this routing key (STOMP: `/topic/KEY`) instead of queues.
    pub topic: Option<String>,
}

impl ProducerConfig {
    /// The payload of message `seq`: the stamp, plus the intended send time when paced.
    pub fn body(&self, seq: u64) -> Vec<u8> {
        let mut body = payload(self.id, seq, self.size);
        if let Some(pace) = &self.pace {
            stamp_time(&mut body, pace.intended_ns(seq));
        }
        body
    }
}

/// What one producer did.
#[derive(Debug, Clone, Copy)]
pub struct ProducerOutcome {
    pub id: u32,
    /// SENDs handed to the socket (seqs `0..sent`).
    pub sent: u64,
    pub receipted: u64,
    /// When the last SEND was written (and, with receipts, receipted).
    pub finished_at: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Receipts {
    pub count: u64,
    pub bye: bool,
    pub closed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ReceiptBoard {
    state: Mutex<Receipts>,
    changed: Condvar,
}

impl ReceiptBoard {
    /// The current count of receipts (or confirms).
    pub fn count(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).count
    }

    pub fn update(&self, f: impl FnOnce(&mut Receipts)) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state);
        self.changed.notify_all();
    }

    /// Waits until `done(state)` holds, the reader closed, or `deadline`; returns the count.
    pub fn wait(&self, deadline: Instant, done: impl Fn(&Receipts) -> bool) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !done(&state) && !state.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let tick = left.min(Duration::from_millis(100));
            state = self.changed.wait_timeout(state, tick).unwrap_or_else(|p| p.into_inner()).0;
        }
        state.count
    }
}

/// Runs one producer to completion (or the deadline). Errors are also recorded in `shared`.
pub fn run(
    config: &ProducerConfig,
    target: &Target,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Result<ProducerOutcome> {
    match target.protocol {
        Protocol::Stomp => {}
        Protocol::Amqp => return crate::amqp_load::produce(config, target, shared, deadline),
        Protocol::Mqtt => return crate::mqtt_load::produce(config, target, shared, deadline),
    }
    let who = format!("producer {}", config.id);
    let (reader, mut writer) = connect(target, deadline)?;
    let board = Arc::new(ReceiptBoard::default());
    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader_thread = {
        let (board, shared, stop, who) =
            (Arc::clone(&board), Arc::clone(shared), Arc::clone(&reader_stop), who.clone());
        std::thread::Builder::new()
            .name(format!("{who} receipts"))
            .spawn(move || read_receipts(reader, &board, &shared, &stop, &who, deadline))?
    };

    let prefixes = send_prefixes(config);
    let (sent, mut result) = send_all(config, &mut writer, &board, shared, deadline, |writer, queue, seq| {
        encode_send(&prefixes[queue as usize], config.receipts.then_some(seq), &config.body(seq), writer.pending_mut());
    });
    let receipted = if config.receipts { board.wait(deadline, |s| s.count >= sent) } else { 0 };
    let finished_at = Instant::now();
    if result.is_ok() {
        writer.queue(&Frame::new(Command::Disconnect).with_header("receipt", BYE));
        result = writer.flush(deadline);
        board.wait(deadline.min(Instant::now() + BYE_WAIT), |s| s.bye);
    }
    reader_stop.store(true, Ordering::Relaxed);
    if reader_thread.join().is_err() {
        shared.error(&who, "receipt reader panicked");
    }
    if let Err(e) = &result {
        shared.error(&who, format!("{e:#}"));
    }
    Ok(ProducerOutcome { id: config.id, sent, receipted, finished_at })
}

/// The SEND heads of `config`'s destinations, by queue index.
fn send_prefixes(config: &ProducerConfig) -> Vec<Vec<u8>> {
    let destinations: Vec<String> = match &config.topic {
        Some(key) => vec![format!("/topic/{key}")],
        None => (0..config.queues).map(|q| format!("/queue/perf-{q}")).collect(),
    };
    destinations.iter().map(|d| send_prefix(d, config)).collect()
}

/// A STOMP producer for the one-thread loop ([`crate::mux`]): SENDs written from their
/// prefixes, RECEIPTs counted as they are read.
pub(crate) struct StompPipe {
    config: ProducerConfig,
    reader: FrameReader,
    writer: FrameWriter,
    prefixes: Vec<Vec<u8>>,
    receipts: u64,
}

impl StompPipe {
    /// Connects (blocking, bounded by `deadline`).
    pub(crate) fn open(config: &ProducerConfig, target: &Target, deadline: Instant) -> Result<StompPipe> {
        let (reader, writer) = connect(target, deadline)?;
        Ok(StompPipe { config: config.clone(), reader, writer, prefixes: send_prefixes(config), receipts: 0 })
    }
}

impl crate::mux::Pipe for StompPipe {
    fn writer(&mut self) -> &mut FrameWriter {
        &mut self.writer
    }

    fn encode(&mut self, queue: u32, seq: u64) {
        let receipt = self.config.receipts.then_some(seq);
        encode_send(&self.prefixes[queue as usize], receipt, &self.config.body(seq), self.writer.pending_mut());
    }

    fn read(&mut self) -> Result<u64> {
        self.reader.fill()?;
        while let Some(frame) = self.reader.buffered_frame()? {
            match frame.command {
                Command::Receipt => self.receipts += 1,
                Command::Error => anyhow::bail!("ERROR from broker: {}", describe(&frame)),
                other => anyhow::bail!("unexpected {} frame", other.as_str()),
            }
        }
        Ok(self.receipts)
    }

    fn close(&mut self, until: Instant) -> Result<()> {
        self.writer.queue(&Frame::new(Command::Disconnect).with_header("receipt", BYE));
        self.writer.flush(until)?;
        while let Some(frame) = self.reader.next_frame(until)? {
            match frame.command {
                Command::Receipt if frame.header("receipt-id") == Some(BYE) => return Ok(()),
                Command::Receipt => self.receipts += 1,
                _ => anyhow::bail!("{} frame while disconnecting: {}", frame.command.as_str(), describe(&frame)),
            }
        }
        anyhow::bail!("no RECEIPT for DISCONNECT before the deadline")
    }
}

/// The fixed head of every SEND to `destination`: the command and the headers that do not
/// change per message (the load tool writes frames without building them: it shares the
/// machine with the broker it measures).
fn send_prefix(destination: &str, config: &ProducerConfig) -> Vec<u8> {
    let mut frame = Frame::new(Command::Send)
        .with_header("destination", destination)
        .with_header("content-length", config.size.to_string());
    if config.persistent {
        frame = frame.with_header("persistent", "true");
    }
    let mut out = Vec::new();
    ferry_stomp::encode(&frame, ferry_stomp::Version::V1_2, &mut out);
    // Drop the blank line, the (empty) body and the NUL: headers follow per message.
    out.truncate(out.len() - 2);
    out
}

/// Appends one SEND: `prefix`, a `receipt` header when asked for, the blank line, the body
/// and the NUL (the bytes `ferry_stomp::encode` writes for the same frame).
fn encode_send(prefix: &[u8], receipt: Option<u64>, body: &[u8], out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.extend_from_slice(prefix);
    if let Some(seq) = receipt {
        let _ = writeln!(out, "receipt:{seq}");
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
}

/// The send loop every protocol shares: `encode` queues message `seq` for queue index `queue`
/// on `writer`; writes go out in batches, and with receipts (or confirms) at most
/// `config.window` wait unanswered on `board`; a paced producer waits for each message's
/// intended time and writes it at once. Returns how many were sent and whether every
/// write (including the final flush) succeeded.
pub(crate) fn send_all(
    config: &ProducerConfig,
    writer: &mut FrameWriter,
    board: &ReceiptBoard,
    shared: &Shared,
    deadline: Instant,
    mut encode: impl FnMut(&mut FrameWriter, u32, u64),
) -> (u64, Result<()>) {
    let mut sent = 0u64;
    for seq in 0..config.messages {
        // The deadline is a safety bound: a clock read every 64 messages is enough.
        if shared.stopped() || (seq % 64 == 0 && Instant::now() >= deadline) {
            break;
        }
        if let Some(pace) = &config.pace {
            pace.wait(seq, deadline);
        }
        encode(writer, queue_for(config.id, seq, config.queues), seq);
        sent += 1;
        Shared::add(&shared.sent, 1);
        let window_full = config.receipts && sent - board.count() >= config.window;
        if (writer.pending_bytes() >= WRITE_BATCH_BYTES || window_full || config.pace.is_some())
            && let Err(e) = writer.flush(deadline)
        {
            return (sent, Err(e));
        }
        if window_full {
            board.wait(deadline, |s| sent - s.count < config.window);
        }
    }
    (sent, writer.flush(deadline))
}

fn read_receipts(
    mut reader: FrameReader,
    board: &ReceiptBoard,
    shared: &Shared,
    stop: &AtomicBool,
    who: &str,
    deadline: Instant,
) {
    loop {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let frame = match reader.next_frame(Instant::now() + Duration::from_millis(100)) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(e) => {
                let bye = board.state.lock().map(|s| s.bye).unwrap_or(true);
                if !bye && !stop.load(Ordering::Relaxed) {
                    shared.error(who, format!("{e:#}"));
                    shared.request_stop();
                }
                break;
            }
        };
        match frame.command {
            Command::Receipt if frame.header("receipt-id") == Some(BYE) => {
                board.update(|s| s.bye = true);
            }
            Command::Receipt => {
                board.update(|s| s.count += 1);
                Shared::add(&shared.receipted, 1);
            }
            Command::Error => {
                shared.error(who, format!("ERROR from broker: {}", describe(&frame)));
                shared.request_stop();
                break;
            }
            other => shared.error(who, format!("unexpected {} frame", other.as_str())),
        }
    }
    board.update(|s| s.closed = true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_written_from_its_prefix_is_the_encoded_frame() {
        for (persistent, receipt) in [(false, None), (true, Some(42u64)), (false, Some(0))] {
            let config = ProducerConfig {
                id: 3,
                messages: 1,
                queues: 1,
                size: 16,
                persistent,
                receipts: receipt.is_some(),
                window: 1,
                pace: None,
                topic: None,
            };
            let body = config.body(7);
            let mut frame = Frame::new(Command::Send)
                .with_header("destination", "/queue/perf-0")
                .with_header("content-length", "16")
                .with_body(body.clone());
            if persistent {
                frame = frame.with_header("persistent", "true");
            }
            if let Some(seq) = receipt {
                frame = frame.with_header("receipt", seq.to_string());
            }
            let mut expected = Vec::new();
            ferry_stomp::encode(&frame, ferry_stomp::Version::V1_2, &mut expected);
            let mut written = Vec::new();
            encode_send(&send_prefix("/queue/perf-0", &config), receipt, &body, &mut written);
            assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&expected));
        }
    }
}
