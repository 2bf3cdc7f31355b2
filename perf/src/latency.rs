//! `ferry-perf latency`: one producer paced at `--rate` msg/s for `--seconds`, one consumer,
//! over STOMP or AMQP 0-9-1 through the throughput scenario's producer and consumer (MQTT:
//! through `ferry-perf mqtt --rate`, QoS 1 with `--receipts` or `--persistent`, else QoS 0). Each
//! payload carries its intended send time; latency = receive time - intended send time (no
//! coordinated omission), collected in an HDR histogram and printed as p50 .. p99.99 and max,
//! next to the usual exactly-once / in-order check. `--plot FILE.svg` draws the percentile
//! curve. Bounded by `--timeout-s`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use hdrhistogram::Histogram;

use crate::BrokerArgs;

use crate::consumer::AckMode;
use crate::mqtt::{self, MqttArgs};
use crate::pace::{LatencySummary, TIMED_PAYLOAD_BYTES};
use crate::{ScenarioArgs, plot, report, run};

/// Options of `ferry-perf latency`.
#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Messages a second the producer sends, on a fixed schedule.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// How long the producer sends.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Payload bytes (at least 32: the stamp and the send time).
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Send with `persistent:true` (AMQP: delivery-mode 2).
    #[arg(long)]
    pub persistent: bool,
    /// Ask for a receipt (AMQP: a publisher confirm) on every message.
    #[arg(long)]
    pub receipts: bool,
    /// Consumer acknowledgement mode.
    #[arg(long, value_enum, default_value_t = AckMode::ClientIndividual)]
    pub ack: AckMode,
    /// Write the latency-percentile curve here as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the report and latency summary as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `ferry-perf latency`; whether the run was clean.
pub fn latency(args: &LatencyArgs) -> Result<bool> {
    if args.size < TIMED_PAYLOAD_BYTES {
        bail!("--size must be at least {TIMED_PAYLOAD_BYTES} (the stamp and the send time)");
    }
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let b = &args.broker;
    let messages = args.rate.saturating_mul(args.seconds);
    println!("ferry-perf latency {}: {} msg/s for {} s, {} B", b.url, args.rate, args.seconds, args.size);
    if b.url.starts_with("mqtt://") {
        // QoS 1 when the publisher wants receipts or persistence, else QoS 0.
        let mqtt = MqttArgs {
            url: b.url.clone(),
            subscribers: 1,
            messages,
            size: args.size,
            qos: u8::from(args.receipts || args.persistent),
            window: 1000,
            v5: false,
            username: b.login.clone().unwrap_or_else(|| "guest".to_owned()),
            password: b.passcode.clone().unwrap_or_else(|| "guest".to_owned()),
            timeout_s: b.timeout_s,
            broker_pid: b.broker_pid,
            rate: Some(args.rate),
            json: None,
        };
        let (report, hist) = mqtt::measure(&mqtt)?;
        return finish(args, report.clean(), hist, serde_json::to_value(&report)?);
    }
    let scenario = ScenarioArgs {
        producers: 1,
        consumers: 1,
        queues: 1,
        messages,
        size: args.size,
        persistent: args.persistent,
        receipts: args.receipts,
        receipt_window: 1 << 20,
        producer_threads: None,
        ack: args.ack,
        prefetch: None,
        login: b.login.clone(),
        passcode: b.passcode.clone(),
        timeout_s: b.timeout_s,
        drain_idle_s: 5,
    };
    let (report, hist) = run::measure_paced(&b.url, &scenario, b.broker_pid, true, Some(args.rate))?;
    print!("{}", report.table());
    let summary = hist.as_ref().map(LatencySummary::of);
    if let Some(s) = &summary {
        println!("{}", s.line());
    }
    finish(args, report.clean(), hist, serde_json::to_value(&report)?)
}

/// Writes the plot and JSON of a finished run; whether it was clean and measured anything.
fn finish(args: &LatencyArgs, clean: bool, hist: Option<Histogram<u64>>, report: serde_json::Value) -> Result<bool> {
    let summary = hist.as_ref().map(LatencySummary::of);
    if summary.is_none() {
        println!("latency: no message arrived");
    }
    if let (Some(path), Some(hist)) = (&args.plot, &hist) {
        let title = format!("{} at {} msg/s, {} B", args.broker.url, args.rate, args.size);
        std::fs::write(path, plot::percentile_svg(hist, &title))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        report::write_json(path, &serde_json::json!({ "report": report, "latency": summary }))?;
    }
    Ok(clean && summary.is_some())
}
