//! Many producers on one thread (`--producer-threads K`): each of the K threads connects its
//! share of the producers, switches their sockets to non-blocking, and drives them all from
//! one `poll(2)` loop. Every producer is still its own connection with its own window of
//! unreceipted SENDs (unconfirmed publishes); what changes is the load tool's cost. The
//! default (one writer and one reader thread per producer) wakes two threads per message at
//! window 1, and on a small host those wake-ups take the cores the broker is measured on.
//! Bounded by the run's deadline: the loop polls with a short tick and checks it every turn.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::checker::queue_for;
use crate::client::{FrameWriter, Protocol, Target};
use crate::producer::{ProducerConfig, ProducerOutcome};
use crate::shared::Shared;

/// Pending bytes per producer that trigger a socket write (as the threaded producer).
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Longest `poll` wait: how often an idle loop looks at the deadline and the stop flag.
const POLL_TICK: Duration = Duration::from_millis(100);
/// Longest wait for one producer's goodbye (DISCONNECT receipt or close-ok).
const BYE_WAIT: Duration = Duration::from_secs(20);

/// One producer's connection as the loop drives it, whatever the protocol.
pub(crate) trait Pipe {
    /// The write half; its descriptor is the socket the loop polls.
    fn writer(&mut self) -> &mut FrameWriter;
    /// Queues message `seq` for queue index `queue` on the write half.
    fn encode(&mut self, queue: u32, seq: u64);
    /// Reads once from the socket and handles every whole frame; the number of messages
    /// receipted (confirmed) so far. An error (the broker refused something, or closed) ends
    /// this producer.
    fn read(&mut self) -> Result<u64>;
    /// Says goodbye on the blocking socket before `until` (STOMP DISCONNECT with a receipt,
    /// AMQP connection.close); an error if the broker did not answer.
    fn close(&mut self, until: Instant) -> Result<()>;
}

/// Starts `threads` threads that share `producers` between them, each running [`drive`].
pub(crate) fn spawn(
    producers: Vec<ProducerConfig>,
    threads: u32,
    target: &Target,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Result<Vec<JoinHandle<Result<Vec<ProducerOutcome>>>>> {
    let threads = threads.clamp(1, producers.len().max(1) as u32) as usize;
    let mut groups: Vec<Vec<ProducerConfig>> = vec![Vec::new(); threads];
    for (i, config) in producers.into_iter().enumerate() {
        groups[i % threads].push(config);
    }
    let mut handles = Vec::new();
    for (i, group) in groups.into_iter().enumerate() {
        let (target, shared) = (target.clone(), Arc::clone(shared));
        let handle = std::thread::Builder::new()
            .name(format!("producers {i}"))
            .spawn(move || Ok(run_group(group, &target, &shared, deadline)))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Connects every producer of the group (one that fails is reported and left out), then
/// drives the rest.
fn run_group(group: Vec<ProducerConfig>, target: &Target, shared: &Shared, deadline: Instant) -> Vec<ProducerOutcome> {
    match target.protocol {
        Protocol::Stomp => {
            drive(open_all(group, shared, |c| crate::producer::StompPipe::open(c, target, deadline)), shared, deadline)
        }
        Protocol::Amqp => {
            drive(open_all(group, shared, |c| crate::amqp_load::AmqpPipe::open(c, target, deadline)), shared, deadline)
        }
        Protocol::Mqtt => {
            shared.error("producers", "--producer-threads speaks STOMP and AMQP");
            Vec::new()
        }
    }
}

fn open_all<P: Pipe>(
    group: Vec<ProducerConfig>,
    shared: &Shared,
    open: impl Fn(&ProducerConfig) -> Result<P>,
) -> Vec<Slot<P>> {
    let mut slots = Vec::new();
    for config in group {
        let who = format!("producer {}", config.id);
        let opened = open(&config).and_then(|mut pipe| {
            pipe.writer().set_nonblocking(true)?;
            Ok(pipe)
        });
        match opened {
            Ok(pipe) => slots.push(Slot { config, pipe, who, sent: 0, confirmed: 0, finished_at: None, failed: false }),
            Err(e) => {
                shared.error(&who, format!("{e:#}"));
                shared.request_stop();
            }
        }
    }
    slots
}

/// One producer in the loop.
struct Slot<P> {
    config: ProducerConfig,
    pipe: P,
    who: String,
    /// Messages `0..sent` are queued or written.
    sent: u64,
    /// Receipts (confirms) counted so far.
    confirmed: u64,
    /// Set once everything is written and receipted (or the producer failed).
    finished_at: Option<Instant>,
    failed: bool,
}

impl<P: Pipe> Slot<P> {
    /// Queues messages while the window and the write batch allow, then writes what the
    /// socket takes. Marks the slot finished once nothing is left to send or wait for.
    fn advance(&mut self, shared: &Shared) -> Result<()> {
        let config = &self.config;
        let window_open = |sent: u64, confirmed: u64| !config.receipts || sent - confirmed < config.window;
        while self.sent < config.messages
            && window_open(self.sent, self.confirmed)
            && self.pipe.writer().pending_bytes() < WRITE_BATCH_BYTES
        {
            self.pipe.encode(queue_for(config.id, self.sent, config.queues), self.sent);
            self.sent += 1;
            Shared::add(&shared.sent, 1);
        }
        let flushed = self.pipe.writer().write_some()?;
        let answered = !config.receipts || self.confirmed >= self.sent;
        if flushed && answered && self.sent == config.messages {
            self.finished_at = Some(Instant::now());
        }
        Ok(())
    }

    fn read(&mut self, shared: &Shared) -> Result<()> {
        let confirmed = self.pipe.read()?;
        Shared::add(&shared.receipted, confirmed.saturating_sub(self.confirmed));
        self.confirmed = self.confirmed.max(confirmed);
        Ok(())
    }

    fn fail(&mut self, shared: &Shared, e: &anyhow::Error) {
        shared.error(&self.who, format!("{e:#}"));
        shared.request_stop();
        self.failed = true;
        self.finished_at = Some(Instant::now());
    }
}

/// The loop: send what each window allows, poll every unfinished socket (for reading, and for
/// writing where bytes wait), read what arrived; until every producer finished, one failed
/// (the run stops), or the deadline. Then each healthy producer says goodbye.
fn drive<P: Pipe>(mut slots: Vec<Slot<P>>, shared: &Shared, deadline: Instant) -> Vec<ProducerOutcome> {
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(slots.len());
    let mut polled: Vec<usize> = Vec::with_capacity(slots.len());
    while !shared.stopped() && Instant::now() < deadline {
        fds.clear();
        polled.clear();
        for (i, slot) in slots.iter_mut().enumerate().filter(|(_, s)| s.finished_at.is_none()) {
            if let Err(e) = slot.advance(shared) {
                slot.fail(shared, &e);
                continue;
            }
            if slot.finished_at.is_none() {
                let writer = slot.pipe.writer();
                let out = if writer.pending_bytes() > 0 { libc::POLLOUT } else { 0 };
                fds.push(libc::pollfd { fd: writer.raw_fd(), events: libc::POLLIN | out, revents: 0 });
                polled.push(i);
            }
        }
        if fds.is_empty() {
            break;
        }
        let tick = deadline.saturating_duration_since(Instant::now()).min(POLL_TICK);
        // SAFETY: `fds` is a live, initialised array of `fds.len()` pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, tick.as_millis() as i32) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                shared.error("producers", format!("poll: {e}"));
                shared.request_stop();
            }
            continue;
        }
        for (fd, &i) in fds.iter().zip(&polled) {
            if fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                let slot = &mut slots[i];
                if let Err(e) = slot.read(shared) {
                    slot.fail(shared, &e);
                }
            }
        }
    }
    let mut outcomes = Vec::with_capacity(slots.len());
    for mut slot in slots {
        let finished_at = slot.finished_at.unwrap_or_else(Instant::now);
        if !slot.failed
            && let Err(e) = goodbye(&mut slot.pipe, deadline)
        {
            shared.error(&slot.who, format!("{e:#}"));
        }
        let receipted = if slot.config.receipts { slot.confirmed } else { 0 };
        outcomes.push(ProducerOutcome { id: slot.config.id, sent: slot.sent, receipted, finished_at });
    }
    outcomes
}

/// Back to blocking mode, everything pending written, then the protocol's goodbye.
fn goodbye<P: Pipe>(pipe: &mut P, deadline: Instant) -> Result<()> {
    let until = deadline.min(Instant::now() + BYE_WAIT);
    pipe.writer().set_nonblocking(false)?;
    pipe.writer().flush(until).context("writing the last messages")?;
    pipe.close(until)
}
