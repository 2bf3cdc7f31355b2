//! State every worker thread of one run shares: live counters for the progress line, the
//! stop flags and the first error seen. Plain atomics plus one mutex for error text; lives
//! for one run. Limits: keeps at most `ERRORS_KEPT` error messages.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Error messages kept for the report (later ones are counted only).
const ERRORS_KEPT: usize = 16;

/// Counters and flags shared by producers, consumers and the progress thread.
#[derive(Debug, Default)]
pub struct Shared {
    /// SEND frames handed to the socket.
    pub sent: AtomicU64,
    /// RECEIPTs for SENDs received.
    pub receipted: AtomicU64,
    /// MESSAGE frames received (duplicates included).
    pub received: AtomicU64,
    /// Set when the run must end now (deadline, fatal error, everything received).
    pub stop: AtomicBool,
    /// Set when every producer has finished (so consumers may stop once idle).
    pub producers_done: AtomicBool,
    errors: Mutex<(Vec<String>, u64)>,
}

impl Shared {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records an error message (who, what).
    pub fn error(&self, who: &str, what: impl std::fmt::Display) {
        let text = format!("{who}: {what}");
        eprintln!("ferry-perf: {text}");
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.0.len() < ERRORS_KEPT {
            errors.0.push(text);
        }
        errors.1 += 1;
    }

    /// The kept error messages and the total count.
    pub fn errors(&self) -> (Vec<String>, u64) {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
