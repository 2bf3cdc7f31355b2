//! `ferry-perf sweep`: one tuning knob, several values, one throughput scenario each. For every
//! value it writes a config file setting that knob (everything else default, `shards = 2`
//! unless the knob is shards), starts the given ferry binary on a fresh temporary data
//! directory listening on loopback, waits until the port accepts, runs the throughput
//! scenario against it (broker CPU and peak RSS included), stops it and removes the directory,
//! then prints one table row per value. Every wait is bounded.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::ScenarioArgs;
use crate::report::Report;
use crate::run;

/// Longest wait for a started broker to accept connections.
const START_WAIT: Duration = Duration::from_secs(20);
/// Shards of every broker in a sweep of another knob.
const SHARDS_DEFAULT: u16 = 2;

/// The knobs a sweep can turn (the engine's config keys, `engine/src/config.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Knob {
    /// `shards`: executor threads.
    Shards,
    /// `segment_size_bytes`: log segment size (accepts K, M, G suffixes).
    SegmentSize,
    /// `sync`: ack-after-sync or ack-before-sync.
    Sync,
    /// `spin_before_park_us`: microseconds an idle shard spins before parking.
    SpinBeforePark,
}

/// Options of `ferry-perf sweep`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// The ferry binary to start for each value.
    #[arg(long)]
    pub ferry_bin: PathBuf,
    /// The knob to turn.
    #[arg(long, value_enum)]
    pub knob: Knob,
    /// Comma-separated values, one broker run each.
    #[arg(long)]
    pub values: String,
    /// Protocol of the scenario: stomp or amqp.
    #[arg(long, default_value = "stomp")]
    pub proto: String,
    /// Loopback port the swept brokers listen on (one at a time).
    #[arg(long, default_value_t = 61790)]
    pub port: u16,
    #[command(flatten)]
    pub scenario: ScenarioArgs,
}

/// Checks and normalises `values` for `knob`: the TOML value text of each.
pub fn parse_values(knob: Knob, values: &str) -> Result<Vec<String>> {
    let parsed: Vec<String> = values
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| parse_value(knob, v).with_context(|| format!("--values {v:?} for {knob:?}")))
        .collect::<Result<_>>()?;
    if parsed.is_empty() {
        bail!("--values names no value");
    }
    Ok(parsed)
}

fn parse_value(knob: Knob, value: &str) -> Result<String> {
    Ok(match knob {
        Knob::Shards => {
            let n: u16 = value.parse()?;
            if n == 0 {
                bail!("shards must be at least 1");
            }
            n.to_string()
        }
        Knob::SegmentSize => {
            let (digits, scale) = match value.char_indices().last() {
                Some((i, 'K' | 'k')) => (&value[..i], 1u64 << 10),
                Some((i, 'M' | 'm')) => (&value[..i], 1 << 20),
                Some((i, 'G' | 'g')) => (&value[..i], 1 << 30),
                _ => (value, 1),
            };
            let n: u64 = digits.parse()?;
            n.checked_mul(scale).filter(|b| *b > 0).context("segment size out of range")?.to_string()
        }
        Knob::Sync => match value {
            "ack-after-sync" | "ack-before-sync" => format!("\"{value}\""),
            _ => bail!("sync is ack-after-sync or ack-before-sync"),
        },
        Knob::SpinBeforePark => value.parse::<u64>()?.to_string(),
    })
}

/// The config file for one broker of the sweep: the knob at `value` (TOML text from
/// [`parse_values`]), plus `shards` when the knob is another one.
pub fn config_toml(knob: Knob, value: &str) -> String {
    let key = match knob {
        Knob::Shards => "shards",
        Knob::SegmentSize => "segment_size_bytes",
        Knob::Sync => "sync",
        Knob::SpinBeforePark => "spin_before_park_us",
    };
    let mut out = String::from("# written by ferry-perf sweep\n");
    if knob != Knob::Shards {
        let _ = writeln!(out, "shards = {SHARDS_DEFAULT}");
    }
    let _ = writeln!(out, "{key} = {value}");
    out
}

/// A started broker: killed and its directory removed when dropped.
struct Broker {
    child: Child,
    dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_broker(args: &SweepArgs, index: usize, config: &str) -> Result<Broker> {
    let dir = std::env::temp_dir().join(format!("ferry-sweep-{}-{index}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).with_context(|| format!("create {}", dir.display()))?;
    let config_path = dir.join("sweep.toml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(dir.join("ferry.log"))?;
    let child = Command::new(&args.ferry_bin)
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--listen")
        .arg(format!("{}=127.0.0.1:{}", args.proto, args.port))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", args.ferry_bin.display()))?;
    let mut broker = Broker { child, dir };
    wait_until_up(&mut broker, args.port)?;
    Ok(broker)
}

fn wait_until_up(broker: &mut Broker, port: u16) -> Result<()> {
    let until = Instant::now() + START_WAIT;
    while Instant::now() < until {
        if let Some(status) = broker.child.try_wait()? {
            let log = std::fs::read_to_string(broker.dir.join("ferry.log")).unwrap_or_default();
            bail!("ferry exited with {status}: {}", startup_error(&log));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("ferry did not listen on port {port} within {} s", START_WAIT.as_secs())
}

/// The `Error: ...` line of a failed start's log (before any backtrace), else its last line.
fn startup_error(log: &str) -> &str {
    log.lines().find(|l| l.starts_with("Error:")).or_else(|| log.lines().last()).unwrap_or("no output")
}

/// Runs the sweep and prints the table; whether every run was clean.
pub fn sweep(args: &SweepArgs) -> Result<bool> {
    if !matches!(args.proto.as_str(), "stomp" | "amqp") {
        bail!("--proto must be stomp or amqp");
    }
    if !Path::new(&args.ferry_bin).is_file() {
        bail!("--ferry-bin {} is not a file", args.ferry_bin.display());
    }
    let values = parse_values(args.knob, &args.values)?;
    let url = format!("{}://127.0.0.1:{}", args.proto, args.port);
    let mut rows = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let config = config_toml(args.knob, value);
        eprintln!("ferry-perf sweep: {:?} = {value}", args.knob);
        let row = start_broker(args, i, &config)
            .and_then(|broker| run::measure(&url, &args.scenario, Some(broker.child.id()), false));
        if let Err(e) = &row {
            eprintln!("ferry-perf sweep: {value}: {e:#}");
        }
        rows.push((value.clone(), row));
    }
    print!("{}", table(args, &rows));
    Ok(rows.iter().all(|(_, r)| r.as_ref().is_ok_and(Report::clean)))
}

fn table(args: &SweepArgs, rows: &[(String, Result<Report>)]) -> String {
    let s = &args.scenario;
    let mut out = format!(
        "ferry-perf sweep {:?} over {} ({}): {} producers x {} msgs, {} consumers, {} queues, {} B, persistent={}, receipts={}, ack={}\n",
        args.knob,
        args.ferry_bin.display(),
        args.proto,
        s.producers,
        s.messages,
        s.consumers,
        s.queues,
        s.size,
        s.persistent,
        s.receipts,
        s.ack.header()
    );
    let _ = writeln!(
        out,
        "{:<18} {:>12} {:>12} {:>10} {:>12} {:>7}",
        "value", "sent msg/s", "recv msg/s", "CPU-s/1M", "peak RSS MiB", "result"
    );
    for (value, row) in rows {
        match row {
            Ok(r) => {
                let (cpu, rss) = r.broker.map_or((f64::NAN, f64::NAN), |b| (b.cpu_s_per_million_msgs, b.peak_rss_mib));
                let verdict = if r.clean() { "OK" } else { "FAILED" };
                let _ = writeln!(
                    out,
                    "{value:<18} {:>12.0} {:>12.0} {cpu:>10.2} {rss:>12.1} {verdict:>7}",
                    r.send.msg_per_s, r.receive.msg_per_s
                );
            }
            Err(e) => {
                let _ = writeln!(out, "{value:<18} error: {e:#}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_per_knob() {
        assert_eq!(parse_values(Knob::Shards, "1, 2,4").ok(), Some(vec!["1".into(), "2".into(), "4".into()]));
        assert!(parse_values(Knob::Shards, "0").is_err());
        assert!(parse_values(Knob::Shards, "two").is_err());
        assert_eq!(
            parse_values(Knob::SegmentSize, "1M,64m,2048").ok(),
            Some(vec!["1048576".into(), "67108864".into(), "2048".into()])
        );
        assert!(parse_values(Knob::SegmentSize, "0K").is_err());
        assert_eq!(parse_values(Knob::Sync, "ack-before-sync").ok(), Some(vec!["\"ack-before-sync\"".into()]));
        assert!(parse_values(Knob::Sync, "never").is_err());
        assert_eq!(parse_values(Knob::SpinBeforePark, "0,50").ok(), Some(vec!["0".into(), "50".into()]));
        assert!(parse_values(Knob::SpinBeforePark, ",").is_err());
    }

    #[test]
    fn startup_error_skips_the_backtrace() {
        let log = "Error: segment_size_bytes (1) must hold\n\nStack backtrace:\n   0: main\n";
        assert_eq!(startup_error(log), "Error: segment_size_bytes (1) must hold");
        assert_eq!(startup_error("a\nb\n"), "b");
        assert_eq!(startup_error(""), "no output");
    }

    #[test]
    fn config_sets_the_knob_and_shards() {
        assert_eq!(config_toml(Knob::Shards, "4"), "# written by ferry-perf sweep\nshards = 4\n");
        let sync = config_toml(Knob::Sync, "\"ack-before-sync\"");
        assert!(sync.contains("shards = 2\n") && sync.ends_with("sync = \"ack-before-sync\"\n"));
        assert!(config_toml(Knob::SegmentSize, "1048576").ends_with("segment_size_bytes = 1048576\n"));
        assert!(config_toml(Knob::SpinBeforePark, "50").ends_with("spin_before_park_us = 50\n"));
    }
}
