//! Orchestrates one `throughput` run on the main thread: validates the options, starts the
//! consumers and waits until all are subscribed, starts the producers and a progress thread
//! (one stderr line a second), joins everything (all bounded by the deadline), then builds
//! the [`Report`]. Limits: threads = producers * 2 + consumers + 1.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use hdrhistogram::Histogram;

use crate::broker_stats::{self, BrokerSample};
use crate::checker::{PRODUCER_COUNT_MAX, SEQ_MAX, STAMP_BYTES, SeqChecker};
use crate::client::{Protocol, Target};
use crate::consumer::{self, ConsumerConfig, ConsumerOutcome};
use crate::pace::Pace;
use crate::producer::{self, ProducerConfig, ProducerOutcome};
use crate::progress::{self, PerSecond};
use crate::report::{self, BrokerUse, Rate, Report, Scenario, ThreadUse, ToolUse};
use crate::shared::Shared;
use crate::{ScenarioArgs, ThroughputArgs};

/// Most connections of each kind one run opens.
const CONNECTION_COUNT_MAX: u32 = 1024;
/// Most queues one run spreads over.
const QUEUE_COUNT_MAX: u32 = 100_000;
/// Most messages one run checks (one counter byte each).
const MESSAGE_COUNT_MAX: u64 = 1 << 32;

fn validate(args: &ScenarioArgs) -> Result<()> {
    if args.size < STAMP_BYTES {
        bail!("--size must be at least {STAMP_BYTES} (the producer/sequence stamp)");
    }
    if args.producers == 0 || args.producers > CONNECTION_COUNT_MAX.min(PRODUCER_COUNT_MAX) {
        bail!("--producers must be in 1..={CONNECTION_COUNT_MAX}");
    }
    if args.consumers > CONNECTION_COUNT_MAX {
        bail!("--consumers must be at most {CONNECTION_COUNT_MAX}");
    }
    if args.queues == 0 || args.queues > QUEUE_COUNT_MAX {
        bail!("--queues must be in 1..={QUEUE_COUNT_MAX}");
    }
    if args.messages > SEQ_MAX || u64::from(args.producers) * args.messages > MESSAGE_COUNT_MAX {
        bail!("--producers x --messages must be at most {MESSAGE_COUNT_MAX}");
    }
    if args.receipt_window == 0 {
        bail!("--receipt-window must be at least 1");
    }
    if args.timeout_s == 0 {
        bail!("--timeout-s must be at least 1");
    }
    if args.producer_threads == Some(0) {
        bail!("--producer-threads must be at least 1");
    }
    Ok(())
}

/// The queues consumer `id` subscribes to: its share when there are at least as many queues
/// as consumers, otherwise one queue shared with other consumers.
fn queues_of(id: u32, consumers: u32, queues: u32) -> Vec<u32> {
    if consumers <= queues { (id..queues).step_by(consumers as usize).collect() } else { vec![id % queues] }
}

/// The broker at `url` for the queue scenario: STOMP or AMQP; MQTT (no queues) is refused
/// with a pointer to `ferry-perf mqtt`.
pub(crate) fn queue_target(url: &str, login: Option<String>, passcode: Option<String>) -> Result<Target> {
    let target = Target::parse(url, login, passcode)?;
    if target.protocol == Protocol::Mqtt {
        bail!("the throughput scenario speaks STOMP and AMQP (MQTT has no queues): use `ferry-perf mqtt --url {url}`");
    }
    Ok(target)
}

/// Runs the scenario and prints the report (stdout, and JSON with `--json`).
pub fn throughput(args: &ThroughputArgs) -> Result<Report> {
    let report = measure(&args.url, &args.scenario, args.broker_pid, true)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
    }
    Ok(report)
}

/// Runs `scenario` once against the broker at `url` and returns the report, printing nothing
/// on stdout (a progress line a second on stderr when `progress`). `broker_pid` adds the
/// broker's CPU and RSS. Errors only for setup failures; delivery problems are in the report.
pub fn measure(url: &str, scenario: &ScenarioArgs, broker_pid: Option<u32>, progress: bool) -> Result<Report> {
    Ok(measure_paced(url, scenario, broker_pid, progress, None)?.0)
}

/// [`measure`], with every producer paced at `rate` msg/s when given; then the consumers'
/// latency histograms come back merged.
pub fn measure_paced(
    url: &str,
    scenario: &ScenarioArgs,
    broker_pid: Option<u32>,
    progress: bool,
    rate: Option<u64>,
) -> Result<(Report, Option<Histogram<u64>>)> {
    let args = scenario;
    validate(args)?;
    if rate.is_some() && args.producer_threads.is_some() {
        bail!("--producer-threads does not pace: leave it out of latency runs");
    }
    let target = queue_target(url, args.login.clone(), args.passcode.clone())?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_s);
    let checker = Arc::new(SeqChecker::new(args.producers, args.messages, args.queues));
    let shared = Arc::new(Shared::default());
    let before = broker_pid.map(broker_stats::sample).transpose()?;
    let roles_before = broker_pid.and_then(|pid| broker_stats::thread_roles(pid).ok());
    let tool_before = broker_stats::sample(std::process::id()).ok();

    let base = rate.map(|_| Arc::new(OnceLock::new()));
    let consumers = start_consumers(args, &target, &checker, &shared, base.clone(), deadline)?;
    let send_start = Instant::now();
    let pace = rate.map(|rate| Pace { base: send_start, rate });
    if let Some(base) = &base {
        let _ = base.set(send_start);
    }
    let producers = start_producers(args, &target, &shared, pace, deadline)?;
    let progress = progress.then(|| start_progress(&shared, &checker, send_start));

    let produced: Vec<ProducerOutcome> = match producers {
        Producers::Threaded(handles) => join_all(handles, &shared, "producer"),
        Producers::Polled(handles) => join_all(handles, &shared, "producer thread").into_iter().flatten().collect(),
    };
    shared.producers_done.store(true, Ordering::Relaxed);
    let consumed: Vec<ConsumerOutcome> = join_all(consumers, &shared, "consumer");
    let timed_out = Instant::now() >= deadline;
    shared.request_stop();
    progress::join(progress, &shared);
    let after = broker_pid.map(broker_stats::sample).transpose()?;
    let roles_after = broker_pid.and_then(|pid| broker_stats::thread_roles(pid).ok());
    let tool_after = broker_stats::sample(std::process::id()).ok();
    let roles = roles_before.zip(roles_after).map(|(b, a)| broker_stats::role_deltas(&b, &a)).unwrap_or_default();
    let run = RunFacts { url, broker_pid, send_start, timed_out, tool: tool_before.zip(tool_after), roles };
    let latency = merge_latency(&consumed);
    Ok((build_report(args, &run, &checker, &shared, &produced, &consumed, before.zip(after)), latency))
}

/// The consumers' latency histograms added together (`None` when none kept one).
fn merge_latency(consumed: &[ConsumerOutcome]) -> Option<Histogram<u64>> {
    let mut merged: Option<Histogram<u64>> = None;
    for hist in consumed.iter().filter_map(|c| c.latency.as_ref()) {
        match &mut merged {
            Some(m) => m.add(hist).ok()?,
            None => merged = Some(hist.clone()),
        }
    }
    merged
}

/// What `build_report` needs to know about the run besides the scenario and the outcomes.
struct RunFacts<'a> {
    url: &'a str,
    broker_pid: Option<u32>,
    send_start: Instant,
    timed_out: bool,
    /// This process's own CPU before and after (it shares the machine with the broker).
    tool: Option<(BrokerSample, BrokerSample)>,
    /// The broker's CPU seconds per thread role over the run (`broker_stats::role_deltas`).
    roles: Vec<(String, f64)>,
}

fn start_consumers(
    args: &ScenarioArgs,
    target: &Target,
    checker: &Arc<SeqChecker>,
    shared: &Arc<Shared>,
    latency_base: Option<Arc<OnceLock<Instant>>>,
    deadline: Instant,
) -> Result<Vec<JoinHandle<Result<ConsumerOutcome>>>> {
    let consumers = (0..args.consumers).map(|id| {
        let config = ConsumerConfig {
            id,
            queues: queues_of(id, args.consumers, args.queues),
            producers: args.producers,
            queue_count: args.queues,
            ack: args.ack,
            prefetch: args.prefetch,
            drain_idle: Duration::from_secs(args.drain_idle_s),
            latency_base: latency_base.clone(),
            topic: None,
        };
        (config, Arc::clone(checker))
    });
    spawn_consumers(consumers.collect(), target, shared, deadline)
}

/// Starts one thread per consumer (each checking against its own `SeqChecker` handle) and
/// waits until every one has subscribed; on a failure stops and joins them all.
pub(crate) fn spawn_consumers(
    consumers: Vec<(ConsumerConfig, Arc<SeqChecker>)>,
    target: &Target,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Result<Vec<JoinHandle<Result<ConsumerOutcome>>>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (config, checker) in consumers {
        let (target, shared, ready) = (target.clone(), Arc::clone(shared), ready_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("consumer {}", config.id))
            .spawn(move || consumer::run(&config, &target, &checker, &shared, &ready, deadline))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..handles.len() {
        let wait = deadline.saturating_duration_since(Instant::now());
        let outcome =
            ready_rx.recv_timeout(wait).map_err(|_| anyhow!("consumers were not subscribed before the deadline"));
        if let Err(e) = outcome.and_then(|r| r.map_err(|e| anyhow!(e))) {
            shared.request_stop();
            for handle in handles {
                let _ = handle.join();
            }
            return Err(e.context("subscribing consumers"));
        }
    }
    Ok(handles)
}

/// The producers' threads: one per producer, or `--producer-threads` each driving several.
enum Producers {
    Threaded(Vec<JoinHandle<Result<ProducerOutcome>>>),
    Polled(Vec<JoinHandle<Result<Vec<ProducerOutcome>>>>),
}

fn start_producers(
    args: &ScenarioArgs,
    target: &Target,
    shared: &Arc<Shared>,
    pace: Option<Pace>,
    deadline: Instant,
) -> Result<Producers> {
    let producers = (0..args.producers).map(|id| ProducerConfig {
        id,
        messages: args.messages,
        queues: args.queues,
        size: args.size,
        persistent: args.persistent,
        receipts: args.receipts,
        window: args.receipt_window,
        pace,
        topic: None,
    });
    Ok(match args.producer_threads {
        Some(threads) => Producers::Polled(crate::mux::spawn(producers.collect(), threads, target, shared, deadline)?),
        None => Producers::Threaded(spawn_producers(producers.collect(), target, shared, deadline)?),
    })
}

/// Starts one thread per producer.
pub(crate) fn spawn_producers(
    producers: Vec<ProducerConfig>,
    target: &Target,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Result<Vec<JoinHandle<Result<ProducerOutcome>>>> {
    let mut handles = Vec::new();
    for config in producers {
        let (target, shared) = (target.clone(), Arc::clone(shared));
        let handle = std::thread::Builder::new()
            .name(format!("producer {}", config.id))
            .spawn(move || producer::run(&config, &target, &shared, deadline))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Joins every worker; failures are recorded in `shared` and left out of the result.
pub(crate) fn join_all<T>(handles: Vec<JoinHandle<Result<T>>>, shared: &Shared, kind: &str) -> Vec<T> {
    let mut out = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(outcome)) => out.push(outcome),
            Ok(Err(e)) => shared.error(&format!("{kind} {i}"), format!("{e:#}")),
            Err(_) => shared.error(&format!("{kind} {i}"), "thread panicked"),
        }
    }
    out
}

/// The throughput scenario's progress line (see [`progress::every_second`]).
fn start_progress(shared: &Arc<Shared>, checker: &Arc<SeqChecker>, since: Instant) -> JoinHandle<()> {
    let (counters, checker) = (Arc::clone(shared), Arc::clone(checker));
    let (mut sent_rate, mut received_rate) = (PerSecond::default(), PerSecond::default());
    progress::every_second(shared, since, move |secs| {
        let sent = Shared::get(&counters.sent);
        let received = Shared::get(&counters.received);
        format!(
            "[{secs:>4.0}s] sent {sent} ({}/s) receipted {} received {received} ({}/s) unique {}/{}",
            sent_rate.step(sent),
            Shared::get(&counters.receipted),
            received_rate.step(received),
            checker.unique(),
            checker.expected(),
        )
    })
}

fn build_report(
    args: &ScenarioArgs,
    run: &RunFacts<'_>,
    checker: &SeqChecker,
    shared: &Shared,
    produced: &[ProducerOutcome],
    consumed: &[ConsumerOutcome],
    broker: Option<(BrokerSample, BrokerSample)>,
) -> Report {
    let send_start = run.send_start;
    let secs_since = |at: Option<Instant>| at.map_or(0.0, |t| t.duration_since(send_start).as_secs_f64());
    let sent: u64 = produced.iter().map(|p| p.sent).sum();
    let send_end = produced.iter().map(|p| p.finished_at).max();
    let receive_end = consumed.iter().filter_map(|c| c.last_new_at).max();
    let reordered = consumed.iter().map(|c| c.reordered).sum();
    let mut sent_by = vec![0; args.producers as usize];
    for p in produced {
        sent_by[p.id as usize] = p.sent;
    }
    let verdict = checker.verdict(reordered, &sent_by);
    let (errors, error_count) = shared.errors();
    let moved = verdict.received_unique.max(sent).max(1);
    let tool = run.tool.map(|(before, after)| {
        let cpu_s = after.cpu_s - before.cpu_s;
        ToolUse { cpu_s, cpu_s_per_million_msgs: cpu_s * 1e6 / moved as f64 }
    });
    let broker = run.broker_pid.zip(broker).map(|(pid, (before, after))| {
        let cpu_s = after.cpu_s - before.cpu_s;
        BrokerUse {
            pid,
            cpu_s,
            cpu_s_per_million_msgs: cpu_s * 1e6 / moved as f64,
            peak_rss_mib: after.peak_rss_kib as f64 / 1024.0,
        }
    });
    Report {
        scenario: Scenario {
            url: run.url.to_owned(),
            producers: args.producers,
            consumers: args.consumers,
            queues: args.queues,
            messages_per_producer: args.messages,
            size_bytes: args.size,
            persistent: args.persistent,
            receipts: args.receipts,
            receipt_window: args.receipt_window,
            ack: args.ack,
            prefetch: args.prefetch,
            timeout_s: args.timeout_s,
        },
        send: Rate::new(sent, secs_since(send_end), args.size),
        receipted: produced.iter().map(|p| p.receipted).sum(),
        receive: Rate::new(verdict.received_unique, secs_since(receive_end), args.size),
        verdict,
        checked: args.consumers > 0,
        timed_out: run.timed_out,
        broker,
        broker_threads: run
            .roles
            .iter()
            .map(|(role, cpu_s)| ThreadUse {
                role: role.clone(),
                cpu_s: *cpu_s,
                cpu_s_per_million_msgs: cpu_s * 1e6 / moved as f64,
            })
            .collect(),
        tool,
        error_count,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_split_queues_or_share_them() {
        assert_eq!(queues_of(0, 2, 5), vec![0, 2, 4]);
        assert_eq!(queues_of(1, 2, 5), vec![1, 3]);
        assert_eq!(queues_of(3, 4, 2), vec![1]);
        assert_eq!(queues_of(0, 1, 1), vec![0]);
    }

    #[test]
    fn the_queue_scenario_refuses_mqtt() {
        assert!(queue_target("amqp://127.0.0.1:5672", None, None).is_ok());
        let mqtt = queue_target("mqtt://127.0.0.1:1883", None, None);
        assert!(mqtt.is_err_and(|e| e.to_string().contains("ferry-perf mqtt")));
    }
}
