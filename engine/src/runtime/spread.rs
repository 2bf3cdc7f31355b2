//! Which shard serves a new connection. Every shard accepts on every listener (SO_REUSEPORT),
//! and the kernel picks the accepting shard by a hash of the connection's addresses: with few
//! connections, two of them share a shard half of the time while another shard has none. A
//! producer and its consumer then both sit on one shard — when that is not their queue's
//! shard, every message crosses cores twice and one core does all their protocol work while
//! the other only queues (docs/PERFORMANCE.md, "placement").
//!
//! So the shard that accepts a connection keeps it only if no other shard serves fewer
//! connections; otherwise it hands the socket, before reading a byte of it, to the shard that
//! serves the fewest (Seastar's `connection_distribution` does the same). The hand-off is the
//! accepted file descriptor over a channel of its own; the connection then lives its whole
//! life on the shard it was handed to.
//!
//! The counts are each shard's registered connections (all protocols), published by the shard
//! itself, plus the connections handed to it that it has not registered yet: a connection
//! counts for its new shard from the moment it is placed, so a burst of connects spreads too.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use glommio::net::AcceptedTcpStream;

use crate::config::ListenerProto;

/// A connection accepted by one shard for another to serve.
pub(super) struct Handoff {
    pub(super) stream: AcceptedTcpStream,
    pub(super) proto: ListenerProto,
}

/// Capacity of each shard-to-shard hand-off channel. A full one holds the accepting shard's
/// accept loop (its backlog, then the kernel's, holds the connects) until the target catches up.
pub(super) const HANDOFF_CHANNEL_CAPACITY: usize = 256;

/// Every shard's connection count, shared by the shards' accept loops.
pub(crate) struct Spread {
    gauges: Box<[Arc<AtomicUsize>]>,
}

impl Spread {
    pub(crate) fn new(shards: usize) -> Self {
        Spread { gauges: (0..shards).map(|_| Arc::default()).collect() }
    }

    /// The gauge `shard` publishes its connection count in (`Shard::set_conn_gauge`).
    pub(crate) fn gauge(&self, shard: usize) -> Arc<AtomicUsize> {
        self.gauges[shard].clone()
    }

    /// The shard to serve a connection that shard `me` accepted: `me` unless another serves
    /// fewer connections (the lowest index among those with the fewest). Counts the connection
    /// there at once; the shard's next registration or release sets the exact count again.
    pub(crate) fn place(&self, me: usize) -> usize {
        let count = |shard: usize| self.gauges[shard].load(Ordering::Relaxed);
        let mine = count(me);
        let (fewest, least) =
            (0..self.gauges.len()).map(|shard| (shard, count(shard))).min_by_key(|&(_, n)| n).unwrap_or((me, mine));
        let target = if least < mine { fewest } else { me };
        self.gauges[target].fetch_add(1, Ordering::Relaxed);
        target
    }

    /// Each shard's count.
    pub(crate) fn counts(&self) -> Vec<usize> {
        self.gauges.iter().map(|gauge| gauge.load(Ordering::Relaxed)).collect()
    }

    /// A connection placed on `shard` that will not be registered there (its hand-off failed).
    pub(crate) fn unplace(&self, shard: usize) {
        let _ = self.gauges[shard].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connects that all arrive at one shard (the kernel's hash is not even for a few
    /// connections) end up spread over the shards, each within one of the others.
    #[test]
    fn connections_accepted_by_one_shard_spread_over_all() {
        let spread = Spread::new(3);
        let placed: Vec<usize> = (0..7).map(|_| spread.place(0)).collect();
        assert_eq!(placed, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(spread.counts(), [3, 2, 2]);
    }

    /// A shard keeps what it accepts while no other serves fewer, and a shard whose
    /// connections closed (its gauge set by the shard) gets the next one.
    #[test]
    fn a_shard_keeps_a_connection_unless_another_serves_fewer() {
        let spread = Spread::new(2);
        assert_eq!(spread.place(1), 1, "equal counts: kept");
        assert_eq!(spread.place(1), 0, "the other serves fewer");
        assert_eq!(spread.place(0), 0, "equal again: kept");
        spread.gauge(0).store(0, Ordering::Relaxed); // shard 0's connections closed
        assert_eq!(spread.place(1), 0);
        spread.unplace(0);
        spread.unplace(0);
        assert_eq!(spread.gauge(0).load(Ordering::Relaxed), 0, "never below zero");
    }
}
