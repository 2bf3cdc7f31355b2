//! `ferry-perf storm`: opens `--connections` N connections (STOMP CONNECT/CONNECTED, the
//! AMQP 0-9-1 handshake up to channel.open-ok, or MQTT CONNECT/CONNACK) from `--threads` threads, as fast as they go or
//! paced at `--rate` connections a second (connection i is due at start + i/rate and its
//! latency counts from then), holds them `--hold-s`, then closes them all. Reports how many
//! succeeded, connect-latency percentiles, and with `--broker-pid` the broker's resident
//! memory growth per held connection, with a progress line a second on stderr while it opens
//! and holds. Only the write half of each connection is kept (one descriptor each). Bounded
//! by `--timeout-s`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::BrokerArgs;
use crate::broker_stats::rss_kib;
use crate::client::{FrameWriter, Protocol, Target};
use crate::pace::{self, LatencySummary, Pace};
use crate::progress::{self, PerSecond};
use crate::report::{result_word, write_json};
use crate::shared::Shared;

/// Longest a single connection's handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections one storm opens.
const CONNECTION_COUNT_MAX: u64 = 1_000_000;

/// Options of `ferry-perf storm`.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Connections to open (each completes the protocol handshake).
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Connections a second, on a fixed schedule (default: as fast as the threads go).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Threads opening connections.
    #[arg(long, default_value_t = 8)]
    pub threads: u32,
    /// Seconds to hold every connection open before closing them.
    #[arg(long, default_value_t = 2)]
    pub hold_s: u64,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What one opening thread did.
struct Opened {
    writers: Vec<FrameWriter>,
    latency: Histogram<u64>,
}

/// Runs `ferry-perf storm`; whether every connection was opened.
pub fn storm(args: &StormArgs) -> Result<bool> {
    if args.connections == 0 || args.connections > CONNECTION_COUNT_MAX || args.threads == 0 {
        bail!("--connections must be in 1..={CONNECTION_COUNT_MAX} and --threads at least 1");
    }
    let b = &args.broker;
    let target = Target::parse(&b.url, b.login.clone(), b.passcode.clone())?;
    let deadline = Instant::now() + Duration::from_secs(b.timeout_s);
    let rss_before = b.broker_pid.map(rss_kib).transpose()?;
    let shared = Arc::new(Shared::default());
    let next = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = Some(start_progress(&shared, &opened, args.connections, started));
    let pace = args.rate.map(|rate| Pace { base: started, rate });
    let workers: Vec<_> = (0..args.threads)
        .map(|i| {
            let (target, shared, next, opened, total) =
                (target.clone(), Arc::clone(&shared), Arc::clone(&next), Arc::clone(&opened), args.connections);
            thread::Builder::new()
                .name(format!("storm {i}"))
                .spawn(move || open_many(&target, &shared, (&next, &opened), total, pace, deadline))
        })
        .collect::<std::io::Result<_>>()?;
    let mut writers = Vec::new();
    let mut latency = pace::histogram();
    for worker in workers {
        let opened = worker.join().map_err(|_| anyhow!("storm thread panicked"))?;
        writers.extend(opened.writers);
        latency.add(&opened.latency).map_err(|e| anyhow!("merge histograms: {e:?}"))?;
    }
    let open_s = started.elapsed().as_secs_f64();
    let succeeded = writers.len() as u64;
    thread::sleep(Duration::from_secs(args.hold_s).min(deadline.saturating_duration_since(Instant::now())));
    let rss_held = b.broker_pid.map(rss_kib).transpose()?;
    let closing = Instant::now();
    drop(writers);
    let close_s = closing.elapsed().as_secs_f64();
    shared.request_stop();
    progress::join(progress, &shared);
    let (errors, error_count) = shared.errors();

    let broker = b.broker_pid.zip(rss_before.zip(rss_held)).map(|(pid, (before, held))| StormBroker {
        pid,
        rss_before_kib: before,
        rss_held_kib: held,
        bytes_per_connection: growth_per_connection(before, held, succeeded),
    });
    let clean = succeeded == args.connections;
    let report = StormReport {
        url: b.url.clone(),
        connections: args.connections,
        threads: args.threads,
        rate: args.rate,
        opened: succeeded,
        open_s,
        open_per_s: succeeded as f64 / open_s.max(1e-9),
        failed: error_count,
        connect_latency: LatencySummary::of(&latency),
        broker,
        closed: succeeded,
        close_s,
        errors,
        result: result_word(clean),
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(clean)
}

/// The broker's resident memory around a storm (with `--broker-pid`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StormBroker {
    pub pid: u32,
    pub rss_before_kib: u64,
    /// While every opened connection was held.
    pub rss_held_kib: u64,
    pub bytes_per_connection: f64,
}

/// Everything one storm measured: the table on stdout and, with `--json`, the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub url: String,
    /// Connections asked for.
    pub connections: u64,
    pub threads: u32,
    /// Connections a second (`null`: unpaced).
    pub rate: Option<u64>,
    pub opened: u64,
    pub open_s: f64,
    pub open_per_s: f64,
    /// Errors (failed connections) counted.
    pub failed: u64,
    pub connect_latency: LatencySummary,
    pub broker: Option<StormBroker>,
    pub closed: u64,
    pub close_s: f64,
    pub errors: Vec<String>,
    /// `OK` or `FAILED`, as the table's last line.
    pub result: &'static str,
}

impl StormReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ferry-perf storm {}: {} connections from {} threads, rate {}",
            self.url,
            self.connections,
            self.threads,
            self.rate.map_or_else(|| "unpaced".to_owned(), |r| format!("{r}/s"))
        );
        let _ = writeln!(
            out,
            "opened {} of {} in {:.3} s ({:.0}/s), failed {}",
            self.opened, self.connections, self.open_s, self.open_per_s, self.failed
        );
        let _ = writeln!(out, "{}", self.connect_latency.labelled("connect latency"));
        if let Some(b) = &self.broker {
            let _ = writeln!(
                out,
                "broker rss before {} KiB, holding {} KiB: {:.0} bytes per connection",
                b.rss_before_kib, b.rss_held_kib, b.bytes_per_connection
            );
        }
        let _ = writeln!(out, "closed {} connections in {:.3} s", self.closed, self.close_s);
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        let _ = writeln!(out, "result: {}", self.result);
        out
    }
}

/// Broker memory growth per connection in bytes (0 for no connections; negative if it shrank).
pub fn growth_per_connection(before_kib: u64, after_kib: u64, connections: u64) -> f64 {
    if connections == 0 {
        return 0.0;
    }
    (after_kib as f64 - before_kib as f64) * 1024.0 / connections as f64
}

/// The storm's progress line: connections opened so far, their rate, and failures; it goes
/// on through the hold and stops once the connections are closed.
fn start_progress(shared: &Arc<Shared>, opened: &Arc<AtomicU64>, total: u64, since: Instant) -> JoinHandle<()> {
    let (counters, opened) = (Arc::clone(shared), Arc::clone(opened));
    let mut opened_rate = PerSecond::default();
    progress::every_second(shared, since, move |secs| {
        let now = Shared::get(&opened);
        format!("[{secs:>4.0}s] opened {now} ({}/s) of {total}, failed {}", opened_rate.step(now), counters.errors().1)
    })
}

/// Takes connection indices from `next` until `total`, opening each (paced when `pace` is
/// set) and counting it in `opened`.
fn open_many(
    target: &Target,
    shared: &Shared,
    (next, opened_count): (&AtomicU64, &AtomicU64),
    total: u64,
    pace: Option<Pace>,
    deadline: Instant,
) -> Opened {
    let mut opened = Opened { writers: Vec::new(), latency: pace::histogram() };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total || Instant::now() >= deadline {
            return opened;
        }
        let from = match &pace {
            Some(pace) => {
                pace.wait(i, deadline);
                pace.base + Duration::from_nanos(pace.intended_ns(i))
            }
            None => Instant::now(),
        };
        match open_one(target, i, deadline.min(Instant::now() + CONNECT_TIMEOUT)) {
            Ok(writer) => {
                let ns = u64::try_from(from.elapsed().as_nanos()).unwrap_or(u64::MAX);
                opened.latency.saturating_record(ns.max(1));
                opened.writers.push(writer);
                Shared::add(opened_count, 1);
            }
            Err(e) => shared.error(&format!("connection {i}"), format!("{e:#}")),
        }
    }
}

/// Opens connection `i` through the protocol handshake; keeps only its write half.
fn open_one(target: &Target, i: u64, deadline: Instant) -> Result<FrameWriter> {
    Ok(match target.protocol {
        Protocol::Stomp => crate::client::connect(target, deadline)?.1,
        Protocol::Amqp => crate::amqp::connect(target, deadline)?.1,
        Protocol::Mqtt => {
            // Client ids must differ: a second CONNECT with the same id takes the session over.
            let client_id = format!("perf-storm-{}-{i}", std::process::id());
            FrameWriter::new(crate::mqtt::connect(target, &client_id, deadline)?.stream().try_clone()?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_per_connection_in_bytes() {
        assert_eq!(growth_per_connection(1000, 2000, 1024), 1000.0);
        assert_eq!(growth_per_connection(1000, 2000, 0), 0.0);
        assert_eq!(growth_per_connection(2000, 1000, 1024), -1000.0);
    }

    #[test]
    fn the_json_report_holds_what_the_table_shows() {
        let mut latency = pace::histogram();
        for us in 1..=100u64 {
            latency.saturating_record(us * 1000);
        }
        let report = StormReport {
            url: "mqtt://127.0.0.1:1883".to_owned(),
            connections: 100,
            threads: 8,
            rate: None,
            opened: 100,
            open_s: 0.25,
            open_per_s: 400.0,
            failed: 0,
            connect_latency: LatencySummary::of(&latency),
            broker: Some(StormBroker {
                pid: 7,
                rss_before_kib: 1000,
                rss_held_kib: 1100,
                bytes_per_connection: 1024.0,
            }),
            closed: 100,
            close_s: 0.01,
            errors: Vec::new(),
            result: result_word(true),
        };
        let json = serde_json::to_value(&report).expect("serialises");
        assert_eq!((json["opened"].as_u64(), json["failed"].as_u64()), (Some(100), Some(0)));
        assert_eq!(json["open_per_s"], 400.0);
        assert!(json["rate"].is_null());
        assert_eq!(json["connect_latency"]["count"], 100);
        assert_eq!(json["connect_latency"]["percentiles_us"][0][0], "p50");
        assert_eq!(json["broker"]["bytes_per_connection"], 1024.0);
        assert_eq!(json["result"], "OK");
        let table = report.table();
        assert!(table.contains("opened 100 of 100 in 0.250 s (400/s), failed 0"), "{table}");
        assert!(table.ends_with("result: OK\n"), "{table}");
    }
}
