//! Group-commit gathering: after a sync releases confirms, the next sync waits a little for
//! the producers it released to send again, so that one sync carries them all.
//!
//! Without it, producers that wait for each confirm (window 1) split into two cohorts: those
//! released by one sync send while the next is already running, and each sync carries half
//! of them. On storage whose sync is slow next to a client's round trip (a network file
//! system: the active/standby deployment) that halves throughput.
//!
//! The rule. A connection *returns promptly* when its next durable completion (a persistent
//! SEND with a receipt, a confirmed publish) arrives within `group_commit_wait_us` of the
//! release of its last one. Gathering is on while such returns take less than half a sync:
//! the running average of the slowest return per sync, against the lower of the last sync and
//! the running average of syncs (one stall of the disk does not count as slow storage), each
//! cut to completion. Then a sync that waits for its siblings carries twice the producers for
//! at most one and a half times the time. On a fast local disk, where a sync is about as quick
//! as the clients' round trip, it stays off: there the next sync overlapping the clients' work
//! wins (a version that gathered whenever returns beat a whole sync lost up to a quarter of
//! its rate there). While on, when a sync releases completions of promptly returning
//! connections, the next sync waits until each of them has a completion pending again, or at
//! most that sync time (and never more than the limit). A lone producer is never held (it is
//! the one the sync waits for), and a connection that publishes now and then is never waited
//! for.
//!
//! Limits: a promptly returning producer that stops costs the next sync one wait, once.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::fastmap::{HashMap, HashSet};
use crate::ids::ConnectionId;

/// Syncs that waited for a released producer, over every shard of the process (`/metrics`).
pub static WAITS_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Weight of the newest sample in a running average, as 1/N.
const SMOOTHING: u32 = 8;
/// Gathering is on while a return takes less than 1/N of a sync.
const RETURN_SHARE_OF_SYNC_MAX: u32 = 2;
/// Every this many syncs, connections last released longer than the limit ago are forgotten.
const PRUNE_EVERY_SYNCS: u32 = 256;

#[derive(Debug)]
pub struct Gather {
    /// Cap on a wait, and on how late a return counts as prompt; zero turns gathering off.
    limit: Duration,
    /// Running average of how long a sync takes (cut to completion).
    sync_time: Option<Duration>,
    /// Running average, over syncs, of the slowest prompt return seen while each ran.
    return_time: Option<Duration>,
    /// The slowest prompt return since the last sync finished.
    slowest_return: Option<Duration>,
    /// When a completion of each connection was last released.
    released_at: HashMap<ConnectionId, Instant>,
    /// Promptly returning connections the next sync waits for.
    expected: HashSet<ConnectionId>,
    /// When the next sync goes regardless.
    until: Option<Instant>,
    syncs: u32,
}

fn smooth(average: Option<Duration>, sample: Duration) -> Duration {
    match average {
        None => sample,
        Some(average) => (average * (SMOOTHING - 1) + sample) / SMOOTHING,
    }
}

impl Gather {
    pub fn new(limit: Duration) -> Self {
        Gather {
            limit,
            sync_time: None,
            return_time: None,
            slowest_return: None,
            released_at: HashMap::default(),
            expected: HashSet::default(),
            until: None,
            syncs: 0,
        }
    }

    /// A completion of `conn` now waits for a sync. Returns whether `conn` returned promptly
    /// (pass it back to [`Gather::released`]).
    pub fn added(&mut self, conn: ConnectionId, now: Instant) -> bool {
        if self.limit.is_zero() {
            return false;
        }
        self.expected.remove(&conn);
        let Some(at) = self.released_at.get(&conn) else { return false };
        let took = now.saturating_duration_since(*at);
        if took > self.limit {
            return false;
        }
        self.slowest_return = Some(self.slowest_return.map_or(took, |s| s.max(took)));
        true
    }

    /// A sync released a completion of `conn` that was added with `prompt`.
    pub fn released(&mut self, conn: ConnectionId, prompt: bool, now: Instant) {
        if self.limit.is_zero() {
            return;
        }
        self.released_at.insert(conn, now);
        if prompt {
            self.expected.insert(conn);
        }
    }

    /// A sync that took `took` finished, and its completions were released.
    pub fn synced(&mut self, took: Duration, now: Instant) {
        if self.limit.is_zero() {
            return;
        }
        let average = smooth(self.sync_time, took);
        self.sync_time = Some(average);
        // The lower of the running average and the last sync: one stall of the disk does not
        // make the next (quick) sync wait as if syncs were slow.
        let sync_time = average.min(took);
        if let Some(slowest) = self.slowest_return.take() {
            self.return_time = Some(smooth(self.return_time, slowest));
        }
        let worth_it = self.return_time.is_some_and(|r| r < sync_time / RETURN_SHARE_OF_SYNC_MAX);
        self.until = (worth_it && !self.expected.is_empty()).then(|| now + sync_time.min(self.limit));
        if self.until.is_none() {
            self.expected.clear();
        }
        self.syncs = self.syncs.wrapping_add(1);
        if self.syncs.is_multiple_of(PRUNE_EVERY_SYNCS) {
            let limit = self.limit;
            self.released_at.retain(|_, at| now.saturating_duration_since(*at) <= limit);
        }
    }

    /// `Some(deadline)` while the next sync should wait for an expected connection.
    pub fn hold(&self, now: Instant) -> Option<Instant> {
        let until = self.until?;
        (!self.expected.is_empty() && now < until).then_some(until)
    }

    /// The next sync was cut: whoever did not return is no longer waited for.
    pub fn cut(&mut self) {
        self.expected.clear();
        self.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShardId;

    const MS: Duration = Duration::from_millis(1);

    fn conn(n: u32) -> ConnectionId {
        ConnectionId { shard: ShardId(0), local: n }
    }

    /// Connections `conns` add a completion at `added`; a sync that took `took` releases them at
    /// `done`.
    fn cycle(g: &mut Gather, conns: &[u32], added: Instant, took: Duration, done: Instant) {
        let prompt: Vec<bool> = conns.iter().map(|c| g.added(conn(*c), added)).collect();
        for (c, prompt) in conns.iter().zip(prompt) {
            g.released(conn(*c), prompt, done);
        }
        g.synced(took, done);
    }

    #[test]
    fn when_producers_return_faster_than_a_sync_the_next_sync_waits_for_each_of_them() {
        let t0 = Instant::now();
        let mut g = Gather::new(10 * MS);
        cycle(&mut g, &[1, 2], t0, 2 * MS, t0 + 2 * MS);
        assert_eq!(g.hold(t0 + 2 * MS), None, "never released before: not known to return");
        let t1 = t0 + 3 * MS;
        cycle(&mut g, &[1, 2], t0 + 2 * MS + MS / 2, 2 * MS, t1);
        assert_eq!(g.hold(t1), Some(t1 + 2 * MS), "both return in 0.5 ms, syncs take 2: wait one sync");
        assert!(g.added(conn(1), t1 + MS / 4));
        assert_eq!(g.hold(t1 + MS / 4), Some(t1 + 2 * MS), "conn 2 is still out");
        assert!(g.added(conn(2), t1 + MS / 2));
        assert_eq!(g.hold(t1 + MS / 2), None, "everyone is back");
        g.cut();
        // A released producer that does not come back holds the next sync until the deadline.
        g.released(conn(1), true, t1 + 3 * MS);
        g.released(conn(2), true, t1 + 3 * MS);
        g.synced(2 * MS, t1 + 3 * MS);
        assert!(g.added(conn(1), t1 + 3 * MS + MS / 4));
        assert!(g.hold(t1 + 4 * MS).is_some());
        assert_eq!(g.hold(t1 + 5 * MS), None, "one sync time passed");
        g.cut();
        assert_eq!(g.hold(t1 + 3 * MS), None, "a cut forgets who was expected");
    }

    #[test]
    fn when_producers_take_half_a_sync_or_more_to_return_it_never_waits() {
        for (back, sync) in [(3 * MS / 10, MS / 10), (MS / 2, MS)] {
            let mut g = Gather::new(10 * MS);
            let mut t = Instant::now();
            for _ in 0..20 {
                cycle(&mut g, &[1, 2, 3], t + back, sync, t + back + sync);
                t += back + sync;
                assert_eq!(g.hold(t), None, "back in {back:?}, a sync takes {sync:?}");
            }
        }
    }

    #[test]
    fn a_connection_that_returns_later_than_the_limit_is_not_waited_for() {
        let t0 = Instant::now();
        let mut g = Gather::new(2 * MS);
        cycle(&mut g, &[7], t0, 5 * MS, t0 + 5 * MS);
        assert!(!g.added(conn(7), t0 + 8 * MS), "3 ms after its release; the limit is 2");
        g.released(conn(7), false, t0 + 9 * MS);
        g.synced(5 * MS, t0 + 9 * MS);
        assert_eq!(g.hold(t0 + 9 * MS), None);
    }

    #[test]
    fn the_wait_is_the_lower_of_the_last_sync_and_the_running_average_capped_by_the_limit() {
        let t0 = Instant::now();
        let mut g = Gather::new(2 * MS);
        cycle(&mut g, &[1], t0, 8 * MS, t0 + 8 * MS);
        cycle(&mut g, &[1], t0 + 9 * MS, 8 * MS, t0 + 16 * MS);
        assert_eq!(g.hold(t0 + 16 * MS), Some(t0 + 18 * MS), "capped at the limit");
        let mut g = Gather::new(20 * MS);
        cycle(&mut g, &[1], t0, 8 * MS, t0 + 8 * MS);
        cycle(&mut g, &[1], t0 + 9 * MS, 16 * MS, t0 + 25 * MS);
        assert_eq!(g.hold(t0 + 25 * MS), Some(t0 + 34 * MS), "the average, 7/8 of 8 ms + 1/8 of 16");
        g.cut();
        cycle(&mut g, &[1], t0 + 26 * MS, 4 * MS, t0 + 30 * MS);
        assert_eq!(g.hold(t0 + 30 * MS), Some(t0 + 34 * MS), "the last sync, 4 ms, below the average");
    }

    #[test]
    fn one_slow_sync_among_quick_ones_does_not_turn_it_on() {
        let mut g = Gather::new(10 * MS);
        let mut t = Instant::now();
        let (back, quick) = (MS / 10, MS / 10);
        for took in [quick, quick, 50 * quick, quick] {
            cycle(&mut g, &[1, 2], t + back, took, t + back + took);
            t += back + took;
            if took == quick {
                assert_eq!(g.hold(t), None, "returns as long as a quick sync");
            }
        }
        let (mut g, mut t) = (Gather::new(10 * MS), Instant::now());
        for _ in 0..3 {
            cycle(&mut g, &[1, 2], t + back, 50 * quick, t + back + 50 * quick);
            t += back + 50 * quick;
        }
        assert!(g.hold(t).is_some(), "slow syncs, quick returns: on");
    }

    #[test]
    fn a_zero_limit_turns_it_off() {
        let t0 = Instant::now();
        let mut g = Gather::new(Duration::ZERO);
        cycle(&mut g, &[1], t0, MS, t0 + MS);
        assert!(!g.added(conn(1), t0 + MS));
        g.released(conn(1), true, t0 + 2 * MS);
        g.synced(MS, t0 + 2 * MS);
        assert_eq!(g.hold(t0 + 2 * MS), None);
    }

    #[test]
    fn connections_not_released_for_longer_than_the_limit_are_forgotten() {
        let t0 = Instant::now();
        let mut g = Gather::new(10 * MS);
        cycle(&mut g, &[1], t0, MS, t0 + MS);
        let later = t0 + Duration::from_secs(1);
        for _ in 0..PRUNE_EVERY_SYNCS {
            g.synced(MS, later);
        }
        assert!(g.released_at.is_empty());
    }
}
