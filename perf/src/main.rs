//! `ferry-perf`: a black-box load tool that speaks real STOMP, AMQP 0-9-1 and MQTT (through the
//! pure `ferry_stomp`, `ferry_amqp091` and `ferry_mqtt` codecs) over blocking TCP with std
//! threads, so the same scenario runs against Ferry or any other broker of those protocols. One
//! thread per producer (plus a receipt or confirm reader), one per consumer, one progress
//! printer. Every loop is bounded by `--timeout-s`.
//! Exit status: 0 clean, 1 setup error, 2 the run lost/duplicated/reordered or hit errors.

mod amqp;
mod amqp_load;
mod broker_stats;
mod checker;
mod client;
mod compare;
mod consumer;
mod fanout;
mod latency;
mod mqtt;
mod mqtt_load;
mod mux;
mod pace;
mod plot;
mod producer;
mod progress;
mod raw_sync;
mod report;
mod run;
mod shared;
mod storm;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::consumer::AckMode;

#[derive(Debug, Parser)]
#[command(name = "ferry-perf", about = "Black-box load tool for Ferry and peer brokers")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Producers SEND to /queue/perf-<i>, consumers receive; checks exactly-once, in-order.
    Throughput(ThroughputArgs),
    /// The same throughput scenario against several brokers, interleaved, with medians and ratios.
    Compare(compare::CompareArgs),
    /// One producer paced at a fixed rate, one consumer: latency percentiles (HDR histogram).
    Latency(latency::LatencyArgs),
    /// One publisher to a topic, K subscribers that must each get every message once, in order
    /// (STOMP, AMQP 0-9-1 or MQTT).
    Fanout(fanout::FanoutArgs),
    /// Open N connections (full handshake: STOMP, AMQP 0-9-1 or MQTT), hold them, close them:
    /// connect latency, broker RSS.
    Storm(storm::StormArgs),
    /// Start a ferry binary once per value of one tuning knob and run one throughput scenario each.
    Sweep(sweep::SweepArgs),
    /// Baseline for durable throughput: pwrite a batch + fdatasync in a loop, no broker.
    RawSync(raw_sync::RawSyncArgs),
    /// MQTT: one publisher to S subscribers on one topic; checks every message arrives once.
    Mqtt(mqtt::MqttArgs),
    /// MQTT: hold C idle connections and report the broker's memory per connection.
    MqttIdle(mqtt::MqttIdleArgs),
}

/// Options of `ferry-perf throughput`.
#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Broker address: stomp://host:port or amqp://host:port (MQTT has `ferry-perf mqtt`).
    #[arg(long, default_value = "stomp://127.0.0.1:61613")]
    pub url: String,
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Broker process id, for CPU-per-message and peak RSS (same machine, Linux).
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

/// Where the broker is, as whom to connect, how long a run may take, and the broker's pid:
/// shared by `latency`, `fanout` and `storm`.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Broker address: stomp://host:port, amqp://host:port or mqtt://host:port.
    #[arg(long, default_value = "stomp://127.0.0.1:61613")]
    pub url: String,
    /// Login (MQTT: the username; guest when absent).
    #[arg(long)]
    pub login: Option<String>,
    /// Passcode (MQTT: the password; guest when absent).
    #[arg(long)]
    pub passcode: Option<String>,
    /// Hard limit on the whole run.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Broker process id, for the broker's CPU and memory (same machine, Linux).
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

/// The scenario of one throughput run: everything but the broker's address and pid.
#[derive(Debug, Clone, Args)]
pub struct ScenarioArgs {
    /// Producer connections.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Consumer connections (0: produce only, nothing checked).
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Queues /queue/perf-0 .. perf-(Q-1); producers round-robin over them.
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Messages per producer.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Payload bytes per message (at least 16: the producer/sequence stamp).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Send with `persistent:true`.
    #[arg(long)]
    pub persistent: bool,
    /// Ask for a RECEIPT on every SEND, with a bounded window in flight.
    #[arg(long)]
    pub receipts: bool,
    /// Most unreceipted SENDs in flight per producer (with --receipts).
    #[arg(long, default_value_t = 256)]
    pub receipt_window: u64,
    /// Drive the producers from this many threads, each polling its share of the
    /// connections (STOMP and AMQP). Default: a writer and a reader thread per producer.
    /// Fewer threads leave more of a small host's CPU to the broker being measured.
    #[arg(long)]
    pub producer_threads: Option<u32>,
    /// Consumer acknowledgement mode.
    #[arg(long, value_enum, default_value_t = AckMode::Auto)]
    pub ack: AckMode,
    /// Prefetch on SUBSCRIBE, sent as `prefetch-count` (Ferry, RabbitMQ) and
    /// `activemq.prefetchSize` (ActiveMQ); broker default when absent.
    #[arg(long)]
    pub prefetch: Option<u32>,
    #[arg(long)]
    pub login: Option<String>,
    #[arg(long)]
    pub passcode: Option<String>,
    /// Hard limit on the whole run; whatever has not arrived by then is reported lost.
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
    /// After the producers finish, consumers give up once nothing arrived for this long.
    #[arg(long, default_value_t = 5)]
    pub drain_idle_s: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit(match cli.command {
        Cmd::Throughput(args) => run::throughput(&args).map(|report| report.clean()),
        Cmd::Compare(args) => compare::compare(&args).map(|summary| summary.clean()),
        Cmd::Latency(args) => latency::latency(&args),
        Cmd::Fanout(args) => fanout::fanout(&args),
        Cmd::Storm(args) => storm::storm(&args),
        Cmd::Sweep(args) => sweep::sweep(&args),
        Cmd::Mqtt(args) => mqtt::throughput(&args),
        Cmd::MqttIdle(args) => mqtt::idle(&args).map(|()| true),
        Cmd::RawSync(args) => raw_sync::raw_sync(&args).map(|_| true),
    })
}

/// Exit status 0 for a clean run, 2 for a run that found problems, 1 for a setup error.
fn exit(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("ferry-perf: {e:#}");
            ExitCode::from(1)
        }
    }
}
