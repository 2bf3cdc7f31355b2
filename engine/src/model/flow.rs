//! Publisher flow control for one queue: while consumers drain a queue, a backlog above
//! `Limits::queue_flow_message_count` ready messages holds the publishers feeding it back
//! until the backlog is down to half of that.
//!
//! Without it an open-loop publisher outruns its consumers: the backlog grows by hundreds of
//! thousands of messages, each on never-touched memory (the kernel zeroing pages was 14% of
//! the broker's samples), and the publisher's work starves the consumers on a shared core.
//! RabbitMQ gets the same effect from credit flow between a channel and its queue process,
//! ActiveMQ from per-destination producer flow control. Holding is TCP back-pressure: the
//! publisher's connection is not read (RabbitMQ sends no `connection.blocked` for credit
//! flow either).
//!
//! A queue nobody consumes from never holds anyone: filling a queue for later stays possible,
//! up to `queue_message_count_max`. Nor is a publisher held by a queue it also consumes from
//! on the same connection (its acks would wait behind the hold). And a queue whose consumers
//! took nothing for [`STALL_LOOKS`] looks in a row (half a second at the runtime's 100 ms
//! tick) lets its publishers go ([`Flow::on_tick`]), so a cycle of connections that each
//! publish what they consume cannot hold each other forever. Shorter pauses (a scheduler or
//! garbage-collector hiccup in a client) keep the hold.

use crate::fastmap::HashSet;
use crate::ids::ConnectionId;

/// Looks in a row without a delivery after which a congested queue's consumers count as
/// stalled.
pub const STALL_LOOKS: u8 = 5;

/// The flow-control state of one queue (on its owning shard).
#[derive(Debug, Default)]
pub struct Flow {
    /// Publishers to this queue are held back.
    congested: bool,
    /// Its consumers took nothing for `STALL_LOOKS` looks: no holding until they move again.
    stalled: bool,
    /// Looks in a row that saw no delivery.
    idle_looks: u8,
    /// Connections told to hold, each once per congestion (a set: a queue may have many
    /// publishers, and it is looked up at each of their publishes while congested).
    held: HashSet<ConnectionId>,
    /// Messages handed to consumers, ever (progress, read at each look).
    delivered: u64,
    delivered_at_look: u64,
}

/// What [`Flow::on_publish`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Tell the publisher to hold back.
    pub hold: bool,
    /// This publish made the queue congested: look at it every tick from now on.
    pub congested: bool,
}

/// What [`Flow::on_tick`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Look {
    /// Nothing to do; look again next tick.
    Watch,
    /// Nothing held and nothing stalled: stop looking at this queue.
    Done,
    /// The consumers stopped (or the backlog is gone): release these publishers.
    Release(Vec<ConnectionId>),
}

impl Flow {
    pub fn is_congested(&self) -> bool {
        self.congested
    }

    /// Counts deliveries (called by dispatch).
    pub fn delivered(&mut self, n: u64) {
        self.delivered += n;
    }

    /// After a message from `publisher` was queued. `ready`: messages waiting for a consumer;
    /// `high`: the mark (> 0); `consumers`: whether the queue has any; `consumes`: whether a
    /// connection consumes from it.
    pub fn on_publish(
        &mut self,
        publisher: ConnectionId,
        ready: usize,
        high: usize,
        consumers: bool,
        consumes: impl Fn(ConnectionId) -> bool,
    ) -> Published {
        let mut published = Published::default();
        if !self.congested {
            if ready <= high || !consumers || self.stalled {
                return published;
            }
            self.congested = true;
            published.congested = true;
        }
        if !self.held.contains(&publisher) && !consumes(publisher) {
            self.held.insert(publisher);
            published.hold = true;
        }
        published
    }

    /// After dispatch: the publishers to release once the backlog is down to `high / 2`.
    pub fn on_drain(&mut self, ready: usize, high: usize) -> Option<Vec<ConnectionId>> {
        if !self.congested || ready > high / 2 {
            return None;
        }
        self.congested = false;
        Some(self.held.drain().collect())
    }

    /// Releases everyone (the queue lost its last consumer, or is going away).
    pub fn release_all(&mut self) -> Vec<ConnectionId> {
        self.congested = false;
        self.held.drain().collect()
    }

    /// The periodic look at a congested or stalled queue.
    pub fn on_tick(&mut self, ready: usize, high: usize, consumers: bool) -> Look {
        let progressed = self.delivered != self.delivered_at_look;
        self.delivered_at_look = self.delivered;
        self.idle_looks = if progressed { 0 } else { self.idle_looks.saturating_add(1) };
        let stuck = self.idle_looks >= STALL_LOOKS;
        if self.congested && (stuck || !consumers || ready <= high / 2) {
            // Consumers that took nothing for several looks are stuck (or gone): holding
            // publishers behind them would only stop the broker's other work too.
            self.stalled = stuck;
            return Look::Release(self.release_all());
        }
        if self.stalled && progressed {
            self.stalled = false;
        }
        if self.congested || self.stalled { Look::Watch } else { Look::Done }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShardId;

    fn conn(n: u32) -> ConnectionId {
        ConnectionId { shard: ShardId(0), local: n }
    }

    const HIGH: usize = 100;
    const NOTHING: Published = Published { hold: false, congested: false };
    const HOLD: Published = Published { hold: true, congested: false };
    const HOLD_NEWLY: Published = Published { hold: true, congested: true };

    #[test]
    fn publishers_are_held_above_the_mark_and_released_at_half() {
        let mut flow = Flow::default();
        assert_eq!(flow.on_publish(conn(1), HIGH, HIGH, true, |_| false), NOTHING, "at the mark: no hold");
        assert_eq!(flow.on_publish(conn(1), HIGH + 1, HIGH, true, |_| false), HOLD_NEWLY);
        assert!(flow.is_congested());
        assert_eq!(flow.on_publish(conn(1), HIGH + 2, HIGH, true, |_| false), NOTHING, "told once");
        assert_eq!(flow.on_publish(conn(2), HIGH + 3, HIGH, true, |_| false), HOLD);
        assert_eq!(flow.on_drain(HIGH / 2 + 1, HIGH), None);
        let mut released = flow.on_drain(HIGH / 2, HIGH).expect("drained");
        released.sort_unstable_by_key(|c| c.local);
        assert_eq!(released, [conn(1), conn(2)]);
        assert!(!flow.is_congested());
        assert_eq!(flow.on_drain(0, HIGH), None, "released once");
    }

    #[test]
    fn no_hold_without_consumers_or_for_a_publisher_that_consumes() {
        let mut flow = Flow::default();
        assert_eq!(flow.on_publish(conn(1), 10 * HIGH, HIGH, false, |_| false), NOTHING);
        assert!(!flow.is_congested());
        let published = flow.on_publish(conn(1), 10 * HIGH, HIGH, true, |c| c == conn(1));
        assert_eq!(published, Published { hold: false, congested: true }, "congested, but its own consumer");
        assert_eq!(flow.on_publish(conn(2), 10 * HIGH, HIGH, true, |c| c == conn(1)), HOLD);
    }

    #[test]
    fn stalled_consumers_release_publishers_until_they_move_again() {
        let mut flow = Flow::default();
        flow.on_publish(conn(1), HIGH + 1, HIGH, true, |_| false);
        flow.delivered(5);
        assert_eq!(flow.on_tick(HIGH + 1, HIGH, true), Look::Watch, "consumers progressed");
        for _ in 1..STALL_LOOKS {
            assert_eq!(flow.on_tick(HIGH + 1, HIGH, true), Look::Watch, "a short pause keeps the hold");
        }
        assert_eq!(flow.on_tick(HIGH + 1, HIGH, true), Look::Release(vec![conn(1)]), "stalled");
        assert_eq!(flow.on_publish(conn(1), HIGH + 5, HIGH, true, |_| false), NOTHING, "stalled: no hold");
        assert_eq!(flow.on_tick(HIGH + 5, HIGH, true), Look::Watch, "still stalled");
        flow.delivered(1);
        assert_eq!(flow.on_tick(HIGH + 5, HIGH, true), Look::Done, "moving again");
        assert_eq!(flow.on_publish(conn(1), HIGH + 5, HIGH, true, |_| false), HOLD_NEWLY);
    }

    #[test]
    fn losing_the_last_consumer_releases_everyone() {
        let mut flow = Flow::default();
        flow.on_publish(conn(1), HIGH + 1, HIGH, true, |_| false);
        flow.delivered(1);
        assert_eq!(flow.on_tick(HIGH + 1, HIGH, false), Look::Release(vec![conn(1)]));
        assert_eq!(flow.release_all(), Vec::<ConnectionId>::new());
    }
}
