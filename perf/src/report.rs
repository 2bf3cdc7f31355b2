//! The result of one `throughput` run: a serialisable [`Report`], printed as a table on
//! stdout and optionally written as JSON. Pure formatting; built on the main thread at the
//! end of a run. Also the helpers every subcommand's report shares: [`write_json`] and
//! [`result_word`].

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::checker::Verdict;
use crate::consumer::AckMode;

/// Writes `report` to `path` as pretty JSON with a final newline (`--json PATH`).
pub fn write_json(path: &Path, report: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

/// The word of a report's last line, `result: OK|FAILED`, and of its JSON `result` field.
pub fn result_word(clean: bool) -> &'static str {
    if clean { "OK" } else { "FAILED" }
}

/// The scenario as it was run.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub url: String,
    pub producers: u32,
    pub consumers: u32,
    pub queues: u32,
    pub messages_per_producer: u64,
    pub size_bytes: usize,
    pub persistent: bool,
    pub receipts: bool,
    pub receipt_window: u64,
    pub ack: AckMode,
    pub prefetch: Option<u32>,
    pub timeout_s: u64,
}

/// One direction's rate.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rate {
    pub messages: u64,
    pub seconds: f64,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
}

impl Rate {
    pub fn new(messages: u64, seconds: f64, size_bytes: usize) -> Rate {
        let (msg_per_s, mb_per_s) = if seconds > 0.0 {
            let per_s = messages as f64 / seconds;
            (per_s, per_s * size_bytes as f64 / 1e6)
        } else {
            (0.0, 0.0)
        };
        Rate { messages, seconds, msg_per_s, mb_per_s }
    }
}

/// The broker's resource use over the run (with `--broker-pid`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BrokerUse {
    pub pid: u32,
    pub cpu_s: f64,
    pub cpu_s_per_million_msgs: f64,
    pub peak_rss_mib: f64,
}

/// The broker's CPU over the run for one thread role (`broker_stats::thread_roles`).
#[derive(Debug, Clone, Serialize)]
pub struct ThreadUse {
    pub role: String,
    pub cpu_s: f64,
    pub cpu_s_per_million_msgs: f64,
}

/// The load tool's own CPU over the run: on a shared machine it is taken from the broker.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ToolUse {
    pub cpu_s: f64,
    pub cpu_s_per_million_msgs: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub send: Rate,
    pub receipted: u64,
    pub receive: Rate,
    pub verdict: Verdict,
    /// False when the run had no consumers (nothing to check).
    pub checked: bool,
    pub timed_out: bool,
    pub broker: Option<BrokerUse>,
    /// The broker's CPU split by thread role, largest first (with `--broker-pid`).
    pub broker_threads: Vec<ThreadUse>,
    pub tool: Option<ToolUse>,
    pub error_count: u64,
    pub errors: Vec<String>,
}

impl Report {
    /// True when every message arrived exactly once, in order, with no errors.
    pub fn clean(&self) -> bool {
        let v = &self.verdict;
        self.error_count == 0
            && !self.timed_out
            && v.not_sent == 0
            && (!self.checked || (v.lost == 0 && v.duplicated == 0 && v.reordered == 0 && v.unexpected == 0))
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let s = &self.scenario;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ferry-perf throughput {}: {} producers x {} msgs, {} consumers, {} queues, {} B, persistent={}, receipts={}, ack={}, prefetch={}",
            s.url,
            s.producers,
            s.messages_per_producer,
            s.consumers,
            s.queues,
            s.size_bytes,
            s.persistent,
            s.receipts,
            s.ack.header(),
            s.prefetch.map_or_else(|| "default".to_owned(), |p| p.to_string()),
        );
        let _ = writeln!(out, "{:<10} {:>12} {:>9} {:>12} {:>9}", "", "messages", "seconds", "msg/s", "MB/s");
        for (name, rate) in [("sent", &self.send), ("received", &self.receive)] {
            let _ = writeln!(
                out,
                "{:<10} {:>12} {:>9.3} {:>12.0} {:>9.2}",
                name, rate.messages, rate.seconds, rate.msg_per_s, rate.mb_per_s
            );
        }
        if s.receipts {
            let _ = writeln!(out, "{:<10} {:>12}", "receipted", self.receipted);
        }
        let v = &self.verdict;
        if self.checked {
            let _ = writeln!(
                out,
                "check: expected {} not-sent {} unique {} lost {} duplicated {} reordered {} unexpected {}",
                v.expected, v.not_sent, v.received_unique, v.lost, v.duplicated, v.reordered, v.unexpected
            );
        } else {
            let _ = writeln!(out, "check: skipped (no consumers)");
        }
        if let Some(b) = &self.broker {
            let _ = writeln!(
                out,
                "broker pid {}: cpu {:.2} s ({:.2} s per 1M msgs), peak rss {:.1} MiB",
                b.pid, b.cpu_s, b.cpu_s_per_million_msgs, b.peak_rss_mib
            );
        }
        if !self.broker_threads.is_empty() {
            let roles: Vec<String> =
                self.broker_threads.iter().map(|t| format!("{} {:.2}", t.role, t.cpu_s_per_million_msgs)).collect();
            let _ = writeln!(out, "broker cpu by thread (s per 1M msgs): {}", roles.join(", "));
        }
        if let Some(t) = &self.tool {
            let _ = writeln!(
                out,
                "ferry-perf itself: cpu {:.2} s ({:.2} s per 1M msgs)",
                t.cpu_s, t.cpu_s_per_million_msgs
            );
        }
        if self.timed_out {
            let _ = writeln!(out, "TIMED OUT after {} s", s.timeout_s);
        }
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        if self.error_count > self.errors.len() as u64 {
            let _ = writeln!(out, "... {} errors in all", self.error_count);
        }
        let _ = writeln!(out, "result: {}", result_word(self.clean()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_json_writes_a_parseable_file() {
        let path = std::env::temp_dir().join(format!("ferry-perf-write-json-{}.json", std::process::id()));
        let rate = Rate::new(10, 2.0, 100);
        write_json(&path, &rate).expect("written");
        let text = std::fs::read_to_string(&path).expect("read back");
        let _ = std::fs::remove_file(&path);
        assert!(text.ends_with("}\n"));
        let json: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!((json["messages"].as_u64(), json["msg_per_s"].as_f64()), (Some(10), Some(5.0)));
        assert_eq!(json["mb_per_s"], 0.0005);
        assert!(write_json(Path::new("/nonexistent-dir/x.json"), &rate).is_err());
        assert_eq!((result_word(true), result_word(false)), ("OK", "FAILED"));
    }
}
