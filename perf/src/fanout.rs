//! `ferry-perf fanout`: one publisher to a topic (`amq.topic` with routing key
//! `perf.fanout.<pid>`; STOMP `/topic/perf.fanout.<pid>`; MQTT `perf/fanout/<pid>` at `--qos`),
//! K subscribers each with its own subscription (AMQP: an exclusive queue bound to it). Every subscriber must get every
//! message exactly once, in order: each has its own [`SeqChecker`]. Prints a progress line a
//! second on stderr; reports the publish rate and the delivery rate (deliveries to all
//! subscribers a second). Bounded by `--timeout-s`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::Args;
use ferry_mqtt::QoS;
use serde::Serialize;

use crate::BrokerArgs;

use crate::broker_stats;
use crate::checker::{STAMP_BYTES, SeqChecker, Verdict};
use crate::client::{Protocol, Target};
use crate::consumer::{AckMode, ConsumerConfig};
use crate::producer::ProducerConfig;
use crate::progress::{self, PerSecond};
use crate::report::{BrokerUse, Rate, result_word, write_json};
use crate::run::{join_all, spawn_consumers, spawn_producers};
use crate::shared::Shared;

/// Most subscribers one run opens.
const SUBSCRIBER_COUNT_MAX: u32 = 1024;

/// Options of `ferry-perf fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Subscriber connections, each receiving every message.
    #[arg(long, default_value_t = 8)]
    pub subscribers: u32,
    /// Messages published.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Payload bytes (at least 16: the stamp).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Ask for a receipt (AMQP: a publisher confirm) on every publish. MQTT: QoS 1 publishes
    /// are always acknowledged (PUBACK), QoS 0 ones never.
    #[arg(long)]
    pub receipts: bool,
    /// Subscriber acknowledgement mode. MQTT: QoS 1 deliveries are always acknowledged.
    #[arg(long, value_enum, default_value_t = AckMode::Auto)]
    pub ack: AckMode,
    /// MQTT only: QoS of the publishes and subscriptions (0 or 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Refuses options that mean nothing to the protocol: over MQTT the acknowledgements
/// follow from `--qos`, not from `--receipts` and `--ack`.
fn check_protocol_options(args: &FanoutArgs, protocol: Protocol) -> Result<()> {
    if protocol == Protocol::Mqtt && (args.receipts || args.ack != AckMode::Auto) {
        bail!("over MQTT, --qos 1 acknowledges every publish and delivery: leave out --receipts and --ack");
    }
    Ok(())
}

/// The scenario line's tail: how messages are acknowledged.
fn acks_of(args: &FanoutArgs, protocol: Protocol) -> String {
    match protocol {
        Protocol::Mqtt => format!("qos={}", args.qos),
        Protocol::Stomp | Protocol::Amqp => format!("receipts={}, ack={}", args.receipts, args.ack.header()),
    }
}

/// Runs `ferry-perf fanout`; whether every subscriber got every message once, in order.
pub fn fanout(args: &FanoutArgs) -> Result<bool> {
    if args.subscribers == 0 || args.subscribers > SUBSCRIBER_COUNT_MAX {
        bail!("--subscribers must be in 1..={SUBSCRIBER_COUNT_MAX}");
    }
    if args.size < STAMP_BYTES || args.messages == 0 || args.broker.timeout_s == 0 {
        bail!("--size must be at least {STAMP_BYTES}, --messages and --timeout-s at least 1");
    }
    let mut target = Target::parse(&args.broker.url, args.broker.login.clone(), args.broker.passcode.clone())?;
    check_protocol_options(args, target.protocol)?;
    target.mqtt_qos = QoS::from_u8(args.qos).ok_or_else(|| anyhow!("--qos must be 0 or 1"))?;
    let key = format!("perf.fanout.{}", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(args.broker.timeout_s);
    let shared = Arc::new(Shared::default());
    let checkers: Vec<Arc<SeqChecker>> =
        (0..args.subscribers).map(|_| Arc::new(SeqChecker::new(1, args.messages, 1))).collect();
    let before = args.broker.broker_pid.map(broker_stats::sample).transpose()?;
    let subscribers = checkers.iter().enumerate().map(|(id, checker)| {
        let config = ConsumerConfig {
            id: u32::try_from(id).expect("at most SUBSCRIBER_COUNT_MAX"),
            queues: vec![0],
            producers: 1,
            queue_count: 1,
            ack: args.ack,
            prefetch: None,
            drain_idle: Duration::from_secs(5),
            latency_base: None,
            topic: Some(key.clone()),
        };
        (config, Arc::clone(checker))
    });
    let consumers = spawn_consumers(subscribers.collect(), &target, &shared, deadline)?;
    let started = Instant::now();
    let progress = Some(start_progress(&shared, &checkers, started));
    let publisher = ProducerConfig {
        id: 0,
        messages: args.messages,
        queues: 1,
        size: args.size,
        persistent: false,
        receipts: args.receipts,
        window: 256,
        pace: None,
        topic: Some(key),
    };
    let produced = join_all(spawn_producers(vec![publisher], &target, &shared, deadline)?, &shared, "publisher");
    shared.producers_done.store(true, Ordering::Relaxed);
    let consumed = join_all(consumers, &shared, "subscriber");
    let timed_out = Instant::now() >= deadline;
    shared.request_stop();
    progress::join(progress, &shared);
    let after = args.broker.broker_pid.map(broker_stats::sample).transpose()?;

    let secs = |at: Option<Instant>| at.map_or(0.0, |t| t.duration_since(started).as_secs_f64());
    let sent = produced.first().map_or(0, |p| p.sent);
    let publish = Rate::new(sent, secs(produced.first().map(|p| p.finished_at)), args.size);
    let verdicts: Vec<Verdict> =
        checkers.iter().zip(&consumed).map(|(checker, c)| checker.verdict(c.reordered, &[sent])).collect();
    let check = sum_verdicts(&verdicts);
    let deliver =
        Rate::new(check.received_unique, secs(consumed.iter().filter_map(|c| c.last_new_at).max()), args.size);
    let (errors, error_count) = shared.errors();
    let broker = args.broker.broker_pid.zip(before.zip(after)).map(|(pid, (b, a))| {
        let cpu_s = a.cpu_s - b.cpu_s;
        BrokerUse {
            pid,
            cpu_s,
            cpu_s_per_million_msgs: cpu_s * 1e6 / check.received_unique.max(1) as f64,
            peak_rss_mib: a.peak_rss_kib as f64 / 1024.0,
        }
    });
    let clean = error_count == 0
        && !timed_out
        && consumed.len() == verdicts.len()
        && sent == args.messages
        && check.lost + check.duplicated + check.reordered + check.unexpected == 0;
    let report = FanoutReport {
        url: args.broker.url.clone(),
        messages: args.messages,
        subscribers: args.subscribers,
        size_bytes: args.size,
        acks: acks_of(args, target.protocol),
        publish,
        deliver,
        check,
        subscribers_complete: verdicts.iter().filter(|v| v.lost == 0 && v.received_unique == sent).count() as u64,
        broker,
        timed_out,
        error_count,
        errors,
        result: result_word(clean),
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(clean)
}

/// Everything one fan-out run measured: the table on stdout and, with `--json`, the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub url: String,
    /// Messages the publisher was asked to send.
    pub messages: u64,
    pub subscribers: u32,
    pub size_bytes: usize,
    /// How messages were acknowledged: `qos=N` (MQTT) or `receipts=B, ack=MODE`.
    pub acks: String,
    pub publish: Rate,
    /// Deliveries to all subscribers together (first copies).
    pub deliver: Rate,
    /// The subscribers' verdicts added up.
    pub check: Verdict,
    /// Subscribers that got every published message.
    pub subscribers_complete: u64,
    /// The broker's CPU (per million deliveries) and peak RSS, with `--broker-pid`.
    pub broker: Option<BrokerUse>,
    pub timed_out: bool,
    pub error_count: u64,
    pub errors: Vec<String>,
    /// `OK` or `FAILED`, as the table's last line.
    pub result: &'static str,
}

impl FanoutReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ferry-perf fanout {}: 1 publisher x {} msgs -> {} subscribers, {} B, {}",
            self.url, self.messages, self.subscribers, self.size_bytes, self.acks
        );
        let _ = writeln!(out, "{:<10} {:>12} {:>9} {:>12} {:>9}", "", "messages", "seconds", "msg/s", "MB/s");
        for (name, r) in [("published", &self.publish), ("delivered", &self.deliver)] {
            let _ = writeln!(
                out,
                "{name:<10} {:>12} {:>9.3} {:>12.0} {:>9.2}",
                r.messages, r.seconds, r.msg_per_s, r.mb_per_s
            );
        }
        let c = &self.check;
        let _ = writeln!(
            out,
            "check (all subscribers): expected {} unique {} lost {} duplicated {} reordered {} unexpected {}; subscribers complete {}/{}",
            c.expected,
            c.received_unique,
            c.lost,
            c.duplicated,
            c.reordered,
            c.unexpected,
            self.subscribers_complete,
            self.subscribers
        );
        if let Some(b) = &self.broker {
            let _ = writeln!(
                out,
                "broker: cpu {:.2} s ({:.2} s per 1M deliveries), peak rss {:.1} MiB",
                b.cpu_s, b.cpu_s_per_million_msgs, b.peak_rss_mib
            );
        }
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        let _ = writeln!(out, "result: {}", self.result);
        out
    }
}

/// The fan-out's progress line: messages published and first copies delivered (all
/// subscribers together) so far, each with its rate.
fn start_progress(shared: &Arc<Shared>, checkers: &[Arc<SeqChecker>], since: Instant) -> JoinHandle<()> {
    let (counters, checkers) = (Arc::clone(shared), checkers.to_vec());
    let expected: u64 = checkers.iter().map(|c| c.expected()).sum();
    let (mut published_rate, mut delivered_rate) = (PerSecond::default(), PerSecond::default());
    progress::every_second(shared, since, move |secs| {
        let published = Shared::get(&counters.sent);
        let delivered: u64 = checkers.iter().map(|c| c.unique()).sum();
        format!(
            "[{secs:>4.0}s] published {published} ({}/s) delivered {delivered} ({}/s) of {expected}",
            published_rate.step(published),
            delivered_rate.step(delivered),
        )
    })
}

/// The subscribers' verdicts added up.
fn sum_verdicts(verdicts: &[Verdict]) -> Verdict {
    verdicts.iter().fold(Verdict::default(), |t, v| Verdict {
        expected: t.expected + v.expected,
        not_sent: t.not_sent + v.not_sent,
        received_unique: t.received_unique + v.received_unique,
        lost: t.lost + v.lost,
        duplicated: t.duplicated + v.duplicated,
        reordered: t.reordered + v.reordered,
        unexpected: t.unexpected + v.unexpected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<FanoutArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            fanout: FanoutArgs,
        }
        let argv = std::iter::once("fanout").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|cli| cli.fanout)
    }

    #[test]
    fn mqtt_qos_defaults_to_1_and_takes_0_or_1() {
        let args = parse(&["--url", "mqtt://127.0.0.1:1883"]).expect("defaults");
        assert_eq!(args.qos, 1);
        assert_eq!(acks_of(&args, Protocol::Mqtt), "qos=1");
        assert_eq!(acks_of(&args, Protocol::Stomp), "receipts=false, ack=auto");
        assert_eq!(parse(&["--qos", "0"]).map(|a| a.qos).ok(), Some(0));
        assert!(parse(&["--qos", "2"]).is_err(), "QoS 2 is refused, not silently lowered");
    }

    #[test]
    fn mqtt_refuses_stomp_and_amqp_acknowledgement_flags() {
        let plain = parse(&[]).expect("defaults");
        assert!(check_protocol_options(&plain, Protocol::Mqtt).is_ok());
        let receipts = parse(&["--receipts"]).expect("receipts");
        assert!(check_protocol_options(&receipts, Protocol::Mqtt).is_err());
        assert!(check_protocol_options(&receipts, Protocol::Amqp).is_ok());
        let acks = parse(&["--ack", "client-individual"]).expect("ack");
        assert!(check_protocol_options(&acks, Protocol::Mqtt).is_err());
        assert!(check_protocol_options(&acks, Protocol::Stomp).is_ok());
    }

    #[test]
    fn verdicts_add_up() {
        let one = Verdict { expected: 10, received_unique: 9, lost: 1, ..Verdict::default() };
        let two = Verdict { expected: 10, received_unique: 10, duplicated: 2, ..Verdict::default() };
        let sum = sum_verdicts(&[one, two]);
        assert_eq!((sum.expected, sum.received_unique, sum.lost, sum.duplicated), (20, 19, 1, 2));
        assert_eq!(sum_verdicts(&[]), Verdict::default());
    }

    #[test]
    fn the_json_report_holds_what_the_table_shows() {
        let check = Verdict { expected: 40, received_unique: 39, lost: 1, ..Verdict::default() };
        let report = FanoutReport {
            url: "stomp://127.0.0.1:61613".to_owned(),
            messages: 10,
            subscribers: 4,
            size_bytes: 16,
            acks: "receipts=false, ack=auto".to_owned(),
            publish: Rate::new(10, 0.5, 16),
            deliver: Rate::new(39, 1.0, 16),
            check,
            subscribers_complete: 3,
            broker: Some(BrokerUse { pid: 7, cpu_s: 0.5, cpu_s_per_million_msgs: 12_820.5, peak_rss_mib: 30.0 }),
            timed_out: false,
            error_count: 0,
            errors: Vec::new(),
            result: result_word(false),
        };
        let json = serde_json::to_value(&report).expect("serialises");
        assert_eq!(json["publish"]["msg_per_s"], 20.0);
        assert_eq!(json["deliver"]["messages"], 39);
        assert_eq!((json["check"]["lost"].as_u64(), json["check"]["expected"].as_u64()), (Some(1), Some(40)));
        assert_eq!(json["subscribers_complete"], 3);
        assert_eq!(json["broker"]["peak_rss_mib"], 30.0);
        assert_eq!(json["result"], "FAILED");
        let table = report.table();
        assert!(table.contains("subscribers complete 3/4"), "{table}");
        assert!(table.ends_with("result: FAILED\n"), "{table}");
    }
}
