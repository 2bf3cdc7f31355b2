//! The progress line every scenario prints while it runs: one stderr line a second, built by
//! the scenario from its live counters, on a thread of its own that ends once the run's
//! [`Shared`] stop flag is set (every run sets it when its workers are joined, which the
//! deadline bounds). Limits: one thread and one line a second per run.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::shared::Shared;

/// How often the thread wakes to check the stop flag between lines.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Prints `line(seconds since since)` to stderr once a second until `shared` is stopped.
pub fn every_second(
    shared: &Arc<Shared>,
    since: Instant,
    mut line: impl FnMut(f64) -> String + Send + 'static,
) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    std::thread::spawn(move || {
        let mut next = since + Duration::from_secs(1);
        while !shared.stopped() {
            std::thread::sleep(STOP_CHECK);
            if Instant::now() < next {
                continue;
            }
            next += Duration::from_secs(1);
            eprintln!("{}", line(since.elapsed().as_secs_f64()));
        }
    })
}

/// Joins a progress thread (after the run was stopped); a panic is recorded as an error.
pub fn join(progress: Option<JoinHandle<()>>, shared: &Shared) {
    if progress.is_some_and(|p| p.join().is_err()) {
        shared.error("progress", "thread panicked");
    }
}

/// A counter's growth since the previous line: its rate, at one line a second.
#[derive(Debug, Default)]
pub struct PerSecond {
    last: u64,
}

impl PerSecond {
    /// How much `now` grew since the last call (0 if it shrank).
    pub fn step(&mut self, now: u64) -> u64 {
        let grown = now.saturating_sub(self.last);
        self.last = now;
        grown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_is_the_growth_since_the_last_line() {
        let mut rate = PerSecond::default();
        assert_eq!(rate.step(10), 10);
        assert_eq!(rate.step(25), 15);
        assert_eq!(rate.step(25), 0);
        assert_eq!(rate.step(5), 0, "a counter that went down reports no growth");
    }

    #[test]
    fn stops_with_the_run() {
        let shared = Arc::new(Shared::default());
        let handle = every_second(&shared, Instant::now(), |secs| format!("[{secs:.0}s]"));
        shared.request_stop();
        join(Some(handle), &shared);
        assert_eq!(shared.errors().1, 0);
    }
}
