//! `ferry-perf compare`: one throughput scenario against several brokers, interleaved
//! (round 1: A B C, round 2: A B C, ...) so that drift of the machine hits every broker alike.
//! Each run is a plain [`run::measure`]; this module only schedules runs and summarises them
//! per broker: median received msg/s over the clean runs, min-max spread, ratio to the first
//! broker (the baseline) and, with a pid, broker CPU-seconds per million messages. Prints a
//! table on stdout, one line per run on stderr, and optionally JSON with every run's report.
//! Limits: at most `BROKER_COUNT_MAX` brokers and `REPEAT_MAX` rounds.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use crate::ScenarioArgs;
use crate::report::{self, Report};
use crate::run;

/// Most brokers one comparison runs against.
const BROKER_COUNT_MAX: usize = 16;
/// Most interleaved rounds.
const REPEAT_MAX: u32 = 100;
/// Fewest rounds: a median of fewer says nothing about spread.
const REPEAT_MIN: u32 = 3;

/// Options of `ferry-perf compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// A broker: `NAME=stomp://HOST:PORT[,pid=PID][,login=USER][,passcode=PASS][,messages=N]`
    /// (or `amqp://HOST:PORT`).
    /// Repeatable; the first is the baseline the ratios are relative to. `messages` overrides
    /// --messages for that broker (so a slow broker's run does not take minutes).
    #[arg(long = "broker", required = true, value_parser = BrokerSpec::parse)]
    pub brokers: Vec<BrokerSpec>,
    /// Interleaved rounds (each round runs every broker once, in the order given).
    #[arg(long, default_value_t = REPEAT_MIN)]
    pub repeat: u32,
    /// Unmeasured rounds first (JIT warm-up for the JVM brokers, queue creation everywhere).
    #[arg(long, default_value_t = 1)]
    pub warmup: u32,
    /// Pause between runs, so one broker's after-work (GC, log sync) does not hit the next.
    #[arg(long, default_value_t = 1000)]
    pub pause_ms: u64,
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Write the summary and every run's report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One `--broker` argument.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerSpec {
    pub name: String,
    pub url: String,
    pub pid: Option<u32>,
    #[serde(skip)]
    pub login: Option<String>,
    #[serde(skip)]
    pub passcode: Option<String>,
    pub messages: Option<u64>,
}

impl BrokerSpec {
    pub fn parse(text: &str) -> Result<BrokerSpec> {
        let (name, rest) = text.split_once('=').context("expected NAME=stomp://HOST:PORT[,pid=PID]... (or amqp://)")?;
        if name.is_empty() || name.contains(',') {
            bail!("broker name must be non-empty and without commas: {text:?}");
        }
        let mut parts = rest.split(',');
        let url = parts.next().unwrap_or_default().to_owned();
        crate::run::queue_target(&url, None, None)?;
        let mut spec =
            BrokerSpec { name: name.to_owned(), url, pid: None, login: None, passcode: None, messages: None };
        for part in parts {
            let (key, value) = part.split_once('=').with_context(|| format!("expected KEY=VALUE, got {part:?}"))?;
            match key {
                "pid" => spec.pid = Some(value.parse().with_context(|| format!("bad pid {value:?}"))?),
                "login" => spec.login = Some(value.to_owned()),
                "passcode" => spec.passcode = Some(value.to_owned()),
                "messages" => spec.messages = Some(value.parse().with_context(|| format!("bad messages {value:?}"))?),
                _ => bail!("unknown broker option {key:?} (known: pid, login, passcode, messages)"),
            }
        }
        Ok(spec)
    }

    /// The scenario as this broker runs it.
    fn scenario(&self, base: &ScenarioArgs) -> ScenarioArgs {
        let mut s = base.clone();
        if let Some(login) = &self.login {
            s.login = Some(login.clone());
        }
        if let Some(passcode) = &self.passcode {
            s.passcode = Some(passcode.clone());
        }
        if let Some(messages) = self.messages {
            s.messages = messages;
        }
        s
    }
}

/// One run of one broker: its report, or why it produced none.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub round: u32,
    pub report: Option<Report>,
    pub setup_error: Option<String>,
}

impl RunResult {
    fn clean(&self) -> bool {
        self.report.as_ref().is_some_and(Report::clean)
    }
}

/// Median, min and max of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// `None` for no samples. The median of an even count is the mean of the middle two.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Stats { median, min: v[0], max: v[n - 1] })
    }

    /// (max - min) / median, as a fraction.
    pub fn spread(&self) -> f64 {
        if self.median > 0.0 { (self.max - self.min) / self.median } else { 0.0 }
    }
}

/// Everything measured for one broker.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerSummary {
    pub broker: BrokerSpec,
    pub runs: usize,
    pub clean_runs: usize,
    /// Received msg/s over the clean runs.
    pub receive_msg_per_s: Option<Stats>,
    /// Median received msg/s divided by the baseline's.
    pub ratio_to_baseline: Option<f64>,
    /// Broker CPU-seconds per million messages over the clean runs (with a pid).
    pub cpu_s_per_million: Option<Stats>,
    /// Median CPU per million divided by the baseline's.
    pub cpu_ratio_to_baseline: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub results: Vec<RunResult>,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub warmup: u32,
    pub repeat: u32,
    pub brokers: Vec<BrokerSummary>,
}

impl Summary {
    /// True when every run of every broker was clean.
    pub fn clean(&self) -> bool {
        self.brokers.iter().all(|b| b.clean_runs == b.runs)
    }

    /// The human-readable table.
    pub fn table(&self, scenario: &ScenarioArgs) -> String {
        let s = scenario;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ferry-perf compare: {} producers -> {} queues -> {} consumers, {} B, persistent={}, receipts={}, ack={}, prefetch={}, {} rounds interleaved after {} warm-up",
            s.producers,
            s.queues,
            s.consumers,
            s.size,
            s.persistent,
            s.receipts,
            s.ack.header(),
            s.prefetch.map_or_else(|| "default".to_owned(), |p| p.to_string()),
            self.repeat,
            self.warmup,
        );
        let _ = writeln!(
            out,
            "{:<12} {:>5} {:>9} {:>12} {:>23} {:>7} {:>8} {:>9} {:>8} {:>8}",
            "broker", "ok", "msgs/run", "median msg/s", "min - max", "spread", "x base", "cpu-s/1M", "cpu x", "rss MiB"
        );
        let fmt_opt = |v: Option<f64>, prec: usize| v.map_or_else(|| "-".to_owned(), |x| format!("{x:.prec$}"));
        for b in &self.brokers {
            let msgs = b.results.iter().filter_map(|r| r.report.as_ref()).map(|r| r.verdict.expected).max();
            let (median, range, spread) = match &b.receive_msg_per_s {
                Some(st) => (
                    format!("{:.0}", st.median),
                    format!("{:.0} - {:.0}", st.min, st.max),
                    format!("{:.0}%", st.spread() * 100.0),
                ),
                None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            };
            let _ = writeln!(
                out,
                "{:<12} {:>5} {:>9} {:>12} {:>23} {:>7} {:>8} {:>9} {:>8} {:>8}",
                b.broker.name,
                format!("{}/{}", b.clean_runs, b.runs),
                msgs.map_or_else(|| "-".to_owned(), |m| m.to_string()),
                median,
                range,
                spread,
                fmt_opt(b.ratio_to_baseline, 2),
                fmt_opt(b.cpu_s_per_million.map(|c| c.median), 2),
                fmt_opt(b.cpu_ratio_to_baseline, 2),
                fmt_opt(b.peak_rss_mib, 0),
            );
        }
        let _ = writeln!(
            out,
            "ratios: median msg/s and median cpu-s/1M divided by the first broker's ({}); medians over clean runs only",
            self.brokers.first().map_or("", |b| b.broker.name.as_str())
        );
        for b in &self.brokers {
            for r in &b.results {
                if let Some(e) = &r.setup_error {
                    let _ = writeln!(out, "{} round {}: setup error: {e}", b.broker.name, r.round);
                } else if let Some(report) = r.report.as_ref().filter(|rep| !rep.clean()) {
                    let v = &report.verdict;
                    let _ = writeln!(
                        out,
                        "{} round {}: FAILED: lost {} duplicated {} reordered {} unexpected {} errors {}{} {}",
                        b.broker.name,
                        r.round,
                        v.lost,
                        v.duplicated,
                        v.reordered,
                        v.unexpected,
                        report.error_count,
                        if report.timed_out { " (timed out)" } else { "" },
                        report.errors.first().map_or("", String::as_str),
                    );
                }
            }
        }
        let _ = writeln!(out, "result: {}", report::result_word(self.clean()));
        out
    }
}

fn validate(args: &CompareArgs) -> Result<()> {
    if args.brokers.len() > BROKER_COUNT_MAX {
        bail!("at most {BROKER_COUNT_MAX} --broker");
    }
    if !(REPEAT_MIN..=REPEAT_MAX).contains(&args.repeat) {
        bail!("--repeat must be in {REPEAT_MIN}..={REPEAT_MAX}");
    }
    if args.warmup > REPEAT_MAX {
        bail!("--warmup must be at most {REPEAT_MAX}");
    }
    for (i, b) in args.brokers.iter().enumerate() {
        if args.brokers[..i].iter().any(|other| other.name == b.name) {
            bail!("broker name {:?} given twice", b.name);
        }
    }
    Ok(())
}

/// Runs the comparison and prints the summary (stdout, and JSON with `--json`).
pub fn compare(args: &CompareArgs) -> Result<Summary> {
    validate(args)?;
    for round in 1..=args.warmup {
        for broker in &args.brokers {
            let scenario = broker.scenario(&args.scenario);
            let outcome = run::measure(&broker.url, &scenario, broker.pid, false);
            let line = match &outcome {
                Ok(r) => format!("{:.0} msg/s, {}", r.receive.msg_per_s, if r.clean() { "OK" } else { "FAILED" }),
                Err(e) => format!("setup error: {e:#}"),
            };
            eprintln!("[warm-up {round}/{}] {:<12} {line} (not counted)", args.warmup, broker.name);
            std::thread::sleep(Duration::from_millis(args.pause_ms));
        }
    }
    let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); args.brokers.len()];
    for round in 1..=args.repeat {
        for (i, broker) in args.brokers.iter().enumerate() {
            let scenario = broker.scenario(&args.scenario);
            let result = match run::measure(&broker.url, &scenario, broker.pid, false) {
                Ok(report) => RunResult { round, report: Some(report), setup_error: None },
                Err(e) => RunResult { round, report: None, setup_error: Some(format!("{e:#}")) },
            };
            eprintln!("{}", run_line(&broker.name, &result, args.repeat));
            results[i].push(result);
            std::thread::sleep(Duration::from_millis(args.pause_ms));
        }
    }
    let summary = summarise(args, results);
    print!("{}", summary.table(&args.scenario));
    if let Some(path) = &args.json {
        report::write_json(path, &summary)?;
    }
    Ok(summary)
}

/// One stderr line per finished run.
fn run_line(name: &str, result: &RunResult, repeat: u32) -> String {
    let head = format!("[round {}/{repeat}] {name:<12}", result.round);
    match (&result.report, &result.setup_error) {
        (Some(r), _) => {
            let cpu =
                r.broker.map_or_else(String::new, |b| format!(", broker cpu {:.2} s/1M", b.cpu_s_per_million_msgs));
            let verdict = if r.clean() { "OK" } else { "FAILED" };
            format!(
                "{head} received {:.0} msg/s ({} in {:.2} s){cpu} {verdict}",
                r.receive.msg_per_s, r.receive.messages, r.receive.seconds
            )
        }
        (None, Some(e)) => format!("{head} setup error: {e}"),
        (None, None) => format!("{head} no result"),
    }
}

fn summarise(args: &CompareArgs, results: Vec<Vec<RunResult>>) -> Summary {
    let mut brokers: Vec<BrokerSummary> = args
        .brokers
        .iter()
        .zip(results)
        .map(|(broker, results)| {
            let clean: Vec<&Report> = results.iter().filter(|r| r.clean()).filter_map(|r| r.report.as_ref()).collect();
            let rates: Vec<f64> = clean.iter().map(|r| r.receive.msg_per_s).collect();
            let cpu: Vec<f64> = clean.iter().filter_map(|r| r.broker).map(|b| b.cpu_s_per_million_msgs).collect();
            let rss = results.iter().filter_map(|r| r.report.as_ref()?.broker).map(|b| b.peak_rss_mib).reduce(f64::max);
            BrokerSummary {
                broker: broker.clone(),
                runs: results.len(),
                clean_runs: clean.len(),
                receive_msg_per_s: Stats::of(&rates),
                ratio_to_baseline: None,
                cpu_s_per_million: Stats::of(&cpu),
                cpu_ratio_to_baseline: None,
                peak_rss_mib: rss,
                results,
            }
        })
        .collect();
    let base_rate = brokers.first().and_then(|b| b.receive_msg_per_s).map(|s| s.median);
    let base_cpu = brokers.first().and_then(|b| b.cpu_s_per_million).map(|s| s.median);
    let ratio = |x: Option<f64>, base: Option<f64>| match (x, base) {
        (Some(x), Some(base)) if base > 0.0 => Some(x / base),
        _ => None,
    };
    for b in &mut brokers {
        b.ratio_to_baseline = ratio(b.receive_msg_per_s.map(|s| s.median), base_rate);
        b.cpu_ratio_to_baseline = ratio(b.cpu_s_per_million.map(|s| s.median), base_cpu);
    }
    Summary { warmup: args.warmup, repeat: args.repeat, brokers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_specs() {
        let b = BrokerSpec::parse("rabbit=stomp://127.0.0.1:61623,pid=42,login=guest,passcode=guest,messages=7")
            .expect("valid");
        assert_eq!(b.name, "rabbit");
        assert_eq!(b.url, "stomp://127.0.0.1:61623");
        assert_eq!((b.pid, b.messages), (Some(42), Some(7)));
        assert_eq!(b.login.as_deref(), Some("guest"));
        let plain = BrokerSpec::parse("ferry=127.0.0.1:61613").expect("valid");
        assert_eq!((plain.pid, plain.messages), (None, None));
        assert!(BrokerSpec::parse("stomp://127.0.0.1:61613").is_err());
        assert!(BrokerSpec::parse("=stomp://127.0.0.1:1").is_err());
        assert!(BrokerSpec::parse("x=stomp://127.0.0.1:1,pid=abc").is_err());
        assert!(BrokerSpec::parse("x=stomp://127.0.0.1:1,colour=red").is_err());
        let amqp = BrokerSpec::parse("rabbit=amqp://127.0.0.1:5672").expect("amqp is built");
        assert_eq!(amqp.url, "amqp://127.0.0.1:5672");
        let mqtt = BrokerSpec::parse("mosquitto=mqtt://127.0.0.1:1883");
        assert!(mqtt.is_err_and(|e| e.to_string().contains("ferry-perf mqtt")), "MQTT has its own scenarios");
    }

    #[test]
    fn stats_take_the_median_and_spread() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).expect("samples");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert!((s.spread() - 1.0).abs() < 1e-9);
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median), Some(2.5));
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[f64::NAN]), None);
    }
}
