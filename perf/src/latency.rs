//! `ferry-perf latency`: one producer paced at `--rate` msg/s for `--seconds`, one consumer,
//! over STOMP or AMQP 0-9-1 through the throughput scenario's producer and consumer. Each
//! payload carries its intended send time; latency = receive time - intended send time (no
//! coordinated omission), collected in an HDR histogram and printed as p50 .. p99.99 and max,
//! next to the usual exactly-once / in-order check. `--plot FILE.svg` draws the percentile
//! curve. Bounded by `--timeout-s`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::BrokerArgs;

use crate::consumer::AckMode;
use crate::pace::{LatencySummary, TIMED_PAYLOAD_BYTES};
use crate::{ScenarioArgs, plot, run};

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
    let scenario = ScenarioArgs {
        producers: 1,
        consumers: 1,
        queues: 1,
        messages: args.rate.saturating_mul(args.seconds),
        size: args.size,
        persistent: args.persistent,
        receipts: args.receipts,
        receipt_window: 1 << 20,
        ack: args.ack,
        prefetch: None,
        login: args.broker.login.clone(),
        passcode: args.broker.passcode.clone(),
        timeout_s: args.broker.timeout_s,
        drain_idle_s: 5,
    };
    let (report, hist) =
        run::measure_paced(&args.broker.url, &scenario, args.broker.broker_pid, true, Some(args.rate))?;
    let summary = hist.as_ref().map(LatencySummary::of);
    println!("ferry-perf latency {}: {} msg/s for {} s, {} B", args.broker.url, args.rate, args.seconds, args.size);
    print!("{}", report.table());
    match &summary {
        Some(s) => println!("{}", s.line()),
        None => println!("latency: no message arrived"),
    }
    if let (Some(path), Some(hist)) = (&args.plot, &hist) {
        let title = format!("{} at {} msg/s, {} B", args.broker.url, args.rate, args.size);
        std::fs::write(path, plot::percentile_svg(hist, &title))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let value = serde_json::json!({ "report": report, "latency": summary });
        std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(report.clean() && summary.is_some())
}
