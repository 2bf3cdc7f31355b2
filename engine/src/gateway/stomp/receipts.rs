//! Receipts in frame order. Every frame that asked for a receipt gets a token; publishes also
//! count how many queue owners must report back. A RECEIPT goes out when its token and every
//! earlier one are done, so a receipt means "this frame and all before it took effect".
//! Bounded by the frames a client has in flight (one entry per receipt-bearing frame).

use crate::fastmap::HashMap;
use std::collections::VecDeque;

use crate::error::EngineError;

#[derive(Debug)]
struct Pending {
    remaining: usize,
    receipt: Option<String>,
    error: Option<EngineError>,
}

/// The connection's outstanding work, in arrival order.
#[derive(Debug, Default)]
pub struct Receipts {
    order: VecDeque<u64>,
    pending: HashMap<u64, Pending>,
    next_token: u64,
}

/// What became ready to send.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    Receipt(String),
    /// The work failed: an ERROR (with the receipt id, if any), then close.
    Failed {
        receipt: Option<String>,
        error: EngineError,
    },
}

impl Receipts {
    /// A token for work that reports `remaining` completions (0 = already done).
    pub fn open(&mut self, remaining: usize, receipt: Option<String>) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        self.order.push_back(token);
        self.pending.insert(token, Pending { remaining, receipt, error: None });
        token
    }

    /// Sets how many completions a token waits for, once the publish knows.
    pub fn expect(&mut self, token: u64, remaining: usize) {
        if let Some(p) = self.pending.get_mut(&token) {
            p.remaining = p.remaining.saturating_add(remaining);
        }
    }

    /// One completion for `token` arrived.
    pub fn complete(&mut self, token: u64, result: Result<(), EngineError>) {
        if let Some(p) = self.pending.get_mut(&token) {
            p.remaining = p.remaining.saturating_sub(1);
            if let Err(e) = result {
                p.error.get_or_insert(e);
            }
        }
    }

    /// Pops what is ready, in order.
    pub fn drain_ready(&mut self, out: &mut Vec<Ready>) {
        while let Some(token) = self.order.front() {
            let done = self.pending.get(token).is_none_or(|p| p.remaining == 0 || p.error.is_some());
            if !done {
                return;
            }
            let token = *token;
            self.order.pop_front();
            if let Some(p) = self.pending.remove(&token) {
                match (p.error, p.receipt) {
                    (Some(error), receipt) => out.push(Ready::Failed { receipt, error }),
                    (None, Some(receipt)) => out.push(Ready::Receipt(receipt)),
                    (None, None) => {}
                }
            }
        }
    }

    /// Nothing outstanding.
    pub fn is_idle(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn receipts_leave_in_order() {
        let mut r = Receipts::default();
        let a = r.open(1, Some("a".into()));
        let _b = r.open(0, Some("b".into()));
        let mut out = Vec::new();
        r.drain_ready(&mut out);
        assert!(out.is_empty(), "b waits for a");
        r.complete(a, Ok(()));
        r.drain_ready(&mut out);
        assert_eq!(out, [Ready::Receipt("a".into()), Ready::Receipt("b".into())]);
        assert!(r.is_idle());
    }

    #[test]
    fn failure_is_reported_once() {
        let mut r = Receipts::default();
        let a = r.open(2, None);
        r.complete(a, Err(EngineError::new(ErrorKind::ResourceError, "full")));
        let mut out = Vec::new();
        r.drain_ready(&mut out);
        assert!(matches!(&out[..], [Ready::Failed { receipt: None, .. }]));
        r.complete(a, Ok(()));
        out.clear();
        r.drain_ready(&mut out);
        assert!(out.is_empty());
    }
}
