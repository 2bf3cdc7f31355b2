//! Fixed-rate pacing and the send-time stamp for latency runs. A paced producer sends message
//! `seq` at `base + seq / rate` (its intended time) and writes that intended time into the
//! payload; the consumer measures receive time minus intended time, so a stall of the broker
//! or of the producer is charged to every message it delayed (no coordinated omission). The
//! latencies go into an HDR histogram (1 ns .. 1 h, 3 significant digits). Pure except for
//! [`Pace::wait`], which sleeps.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::checker::STAMP_BYTES;

/// Payload bytes a latency run needs: the producer/sequence stamp plus 16 hex digits of time.
pub const TIMED_PAYLOAD_BYTES: usize = STAMP_BYTES + 16;
/// Largest latency the histogram holds (larger ones are clamped to it).
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;
/// Left to a spin after sleeping, so a send leaves close to its intended time.
const SPIN_NS: u64 = 50_000;

/// A send schedule: `rate` messages a second from `base`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub base: Instant,
    pub rate: u64,
}

impl Pace {
    /// Nanoseconds after `base` at which message `seq` is due.
    pub fn intended_ns(&self, seq: u64) -> u64 {
        intended_ns(seq, self.rate)
    }

    /// Sleeps (then spins the last few microseconds) until message `seq` is due; returns at
    /// once when it is already late.
    pub fn wait(&self, seq: u64, deadline: Instant) {
        let due = (self.base + Duration::from_nanos(self.intended_ns(seq))).min(deadline);
        loop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let spin = Duration::from_nanos(SPIN_NS);
            if left > spin {
                std::thread::sleep(left - spin);
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Nanoseconds after the start at which message `seq` of a `rate`/s schedule is due.
pub fn intended_ns(seq: u64, rate: u64) -> u64 {
    let ns = u128::from(seq) * 1_000_000_000 / u128::from(rate.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Writes the intended send time (ns after the base) after the stamp of `body`.
pub fn stamp_time(body: &mut [u8], ns: u64) {
    let text = format!("{ns:016x}");
    body[STAMP_BYTES..TIMED_PAYLOAD_BYTES].copy_from_slice(text.as_bytes());
}

/// The intended send time written by [`stamp_time`], if `body` carries one.
pub fn parse_time(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body.get(STAMP_BYTES..TIMED_PAYLOAD_BYTES)?).ok()?;
    u64::from_str_radix(text, 16).ok()
}

/// An empty latency histogram in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static histogram bounds are valid")
}

/// Records one message received at `now` whose body carries its intended send time.
pub fn record(hist: &mut Histogram<u64>, base: Instant, now: Instant, body: &[u8]) {
    if let Some(intended) = parse_time(body) {
        let received = u64::try_from(now.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX);
        hist.saturating_record(received.saturating_sub(intended).max(1));
    }
}

/// The percentiles a latency report prints: (label, quantile).
pub const PERCENTILES: [(&str, f64); 5] =
    [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999)];

/// Latency summary in microseconds: count, mean, the [`PERCENTILES`], max.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub percentiles_us: Vec<(String, f64)>,
    pub max_us: f64,
}

impl LatencySummary {
    pub fn of(hist: &Histogram<u64>) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            count: hist.len(),
            mean_us: hist.mean() / 1000.0,
            percentiles_us: PERCENTILES
                .iter()
                .map(|(label, q)| ((*label).to_owned(), us(hist.value_at_quantile(*q))))
                .collect(),
            max_us: us(hist.max()),
        }
    }

    /// One line: `latency (us): count N mean X p50 X ... max X`.
    pub fn line(&self) -> String {
        self.labelled("latency")
    }

    /// [`LatencySummary::line`] naming what was measured.
    pub fn labelled(&self, what: &str) -> String {
        let mut out = format!("{what} (us): count {} mean {:.1}", self.count, self.mean_us);
        for (label, value) in &self.percentiles_us {
            let _ = write!(out, " {label} {value:.1}");
        }
        let _ = write!(out, " max {:.1}", self.max_us);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spaces_sends_evenly() {
        assert_eq!(intended_ns(0, 1000), 0);
        assert_eq!(intended_ns(1, 1000), 1_000_000);
        assert_eq!(intended_ns(2500, 1000), 2_500_000_000);
        assert_eq!(intended_ns(3, 3), 1_000_000_000);
        assert_eq!(intended_ns(u64::MAX, 1), u64::MAX);
        assert_eq!(intended_ns(5, 0), 5_000_000_000);
    }

    #[test]
    fn time_stamp_round_trips() {
        let mut body = crate::checker::payload(3, 9, TIMED_PAYLOAD_BYTES + 4);
        stamp_time(&mut body, 123_456_789);
        assert_eq!(parse_time(&body), Some(123_456_789));
        assert_eq!(crate::checker::parse_stamp(&body), Some((3, 9)));
        assert_eq!(parse_time(&body[..20]), None);
    }

    #[test]
    fn summary_reports_percentiles_and_max() {
        let mut hist = histogram();
        for us in 1..=1000u64 {
            hist.record(us * 1000).expect("in range");
        }
        let s = LatencySummary::of(&hist);
        assert_eq!(s.count, 1000);
        let p = |label: &str| s.percentiles_us.iter().find(|(l, _)| l == label).map(|(_, v)| *v);
        let near = |a: f64, b: f64| (a - b).abs() <= b * 0.002;
        assert!(near(p("p50").unwrap_or(0.0), 500.0));
        assert!(near(p("p99").unwrap_or(0.0), 990.0));
        assert!(near(p("p99.9").unwrap_or(0.0), 999.0));
        assert!(near(s.max_us, 1000.0));
        assert!(s.line().starts_with("latency (us): count 1000 mean 500."));
        assert!(s.line().contains(" p99.9 999.") && s.line().contains(" max 1000."));
    }

    #[test]
    fn record_measures_from_the_intended_time() {
        let base = Instant::now();
        let mut body = crate::checker::payload(0, 0, TIMED_PAYLOAD_BYTES);
        stamp_time(&mut body, 1_000_000);
        let mut hist = histogram();
        record(&mut hist, base, base + Duration::from_millis(3), &body);
        record(&mut hist, base, base, b"no time here");
        assert_eq!(hist.len(), 1);
        assert!(hist.equivalent(hist.max(), 2_000_000));
    }
}
