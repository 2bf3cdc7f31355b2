//! The start-up exchange of transaction commits between shards. A share of a transaction that
//! spans shards is kept by recovery only if some shard's log holds its commit
//! (`shard/transaction.rs`), so every shard, once it has read its log and before it rebuilds
//! anything from it, publishes the commits its log holds and waits for everyone else's
//! ([`Evidence::exchange`]). A shard that keeps a share on another shard's word then records
//! the commit in its own log and syncs it, and no shard goes on (and so none compacts, which
//! could delete the commit it was kept for) until every shard did ([`Evidence::recorded`]).
//! Runs on the shards' threads, blocking them: nothing else runs on them yet.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::shutting_down;

/// How often a waiting shard looks whether the process is stopping.
const POLL: Duration = Duration::from_millis(10);

/// What every shard's log said, gathered.
#[derive(Debug)]
pub(super) struct Evidence {
    shards: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    committed: HashSet<u64>,
    tx_id_max: u64,
    published: usize,
    recorded: usize,
    /// A shard could not open its log: the start fails, nobody waits any more.
    failed: bool,
}

impl Evidence {
    pub(super) fn new(shards: usize) -> Self {
        Evidence { shards, state: Mutex::new(State::default()), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `done` holds; `None` if the start failed or the process is stopping.
    fn wait<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        done: impl Fn(&State) -> bool,
    ) -> Option<MutexGuard<'a, State>> {
        while !done(&state) {
            if state.failed || shutting_down() {
                return None;
            }
            state = self.changed.wait_timeout(state, POLL).unwrap_or_else(PoisonError::into_inner).0;
        }
        Some(state)
    }

    /// Adds one shard's commits and highest id, waits for every shard's, then runs `decide`
    /// with a test of whether some log holds a transaction's commit, and returns what it
    /// returned with the highest id any log names; `None` if the start failed meanwhile.
    pub(super) fn exchange<R>(
        &self,
        committed: &[u64],
        tx_id_max: u64,
        decide: impl FnOnce(&dyn Fn(u64) -> bool) -> R,
    ) -> Option<(R, u64)> {
        let mut state = self.lock();
        state.committed.extend(committed);
        state.tx_id_max = state.tx_id_max.max(tx_id_max);
        state.published += 1;
        self.changed.notify_all();
        let state = self.wait(state, |s| s.published >= self.shards)?;
        Some((decide(&|tx| state.committed.contains(&tx)), state.tx_id_max))
    }

    /// This shard's log holds, durably, every commit it kept a share for; waits until every
    /// shard's does. False if the start failed meanwhile.
    pub(super) fn recorded(&self) -> bool {
        let mut state = self.lock();
        state.recorded += 1;
        self.changed.notify_all();
        self.wait(state, |s| s.recorded >= self.shards).is_some()
    }

    /// This shard cannot start: nobody waits for it.
    pub(super) fn fail(&self) {
        self.lock().failed = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_shard_gets_every_commit_and_waits_for_the_records() {
        let evidence = Arc::new(Evidence::new(3));
        let threads: Vec<_> = (0..3u64)
            .map(|i| {
                let evidence = evidence.clone();
                std::thread::spawn(move || {
                    let seen =
                        |committed: &dyn Fn(u64) -> bool| (0..20).filter(|tx| committed(*tx)).collect::<Vec<_>>();
                    let commits = evidence.exchange(&[i + 10], i << 20, seen).expect("exchange");
                    assert!(evidence.recorded());
                    commits
                })
            })
            .collect();
        for thread in threads {
            let (committed, tx_id_max) = thread.join().expect("join");
            assert_eq!(committed, [10, 11, 12]);
            assert_eq!(tx_id_max, 2 << 20);
        }
    }

    #[test]
    fn a_failed_shard_releases_the_others() {
        let evidence = Arc::new(Evidence::new(2));
        let waiting = {
            let evidence = evidence.clone();
            std::thread::spawn(move || evidence.exchange(&[], 0, |_| ()).is_none())
        };
        evidence.fail();
        assert!(waiting.join().expect("join"));
    }
}
