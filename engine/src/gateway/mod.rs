//! Protocol gateways: where a protocol's session events become engine operations and engine
//! output becomes protocol frames (ARCHITECTURE §1: mapping happens only here). One module per
//! protocol; each connection's gateway lives on the connection's shard, owned by its task.
//! [`Gateway`] is the one shape the runtime's connection loop drives.

pub mod amqp091;
pub mod mqtt;
pub mod stomp;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use ferry_wire::Limits;

use crate::auth::Users;
use crate::error::{EngineError, ErrorKind};
use crate::ids::{ConnectionId, ShardId};
use crate::model::routing::MetaOp;
use crate::shard::mailbox::{Mailbox, Wake};
use crate::shard::msg::{Reply, Request};
use crate::shard::{AUTHORITY, ShardRef};

/// One connection's protocol state, as the runtime's read/handle/poll/write loop sees it.
pub trait Gateway: Sized {
    /// The connection's state while the runtime keeps it parked (idle, with no task; see
    /// `runtime::park`); `Infallible` for a protocol whose connections never park.
    type Parked: 'static;
    /// Bytes a refused connection gets before the socket closes (connection limit reached).
    fn refusal() -> &'static [u8];
    /// Feeds socket bytes to the session, which parses them (keeping only an incomplete
    /// frame): synchronous, so the runtime can read into a buffer the shard's connections share.
    fn handle_input(&mut self, bytes: &[u8], now: Instant);
    /// Performs every frame [`Gateway::handle_input`] parsed, in order, then drains the mailbox.
    fn handle_events(&mut self) -> impl Future<Output = ()>;
    /// Moves what the engine has for this connection (deliveries, completions) into output.
    fn drain_mailbox(&mut self);
    /// Appends pending output bytes to `out`.
    fn poll_transmit(&mut self, out: &mut Vec<u8>);
    /// The output was written (flow-control credit may go back).
    fn on_written(&mut self);
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    /// The socket should be flushed and closed.
    fn is_closed(&self) -> bool;
    /// Input must wait (a resource alarm holds publishers back).
    fn input_held(&self) -> bool;
    /// The protocol leaves closing the socket to the peer (AMQP: whoever sent
    /// connection.close closes the socket once close-ok arrives), so the broker waits for the
    /// peer's FIN before sending its own.
    fn peer_closes_first(&self) -> bool {
        false
    }
    /// Releases everything the connection held.
    fn close(self);
    /// Nothing is in progress (no input, output, mail or work in flight): the connection may
    /// be parked.
    fn parkable(&self) -> bool {
        false
    }
    /// The parked form of a parkable connection; `Err` gives back one that is not.
    fn park(self) -> Result<Self::Parked, Self> {
        Err(self)
    }
    /// The connection again, from its parked form; `peer` is the socket's peer address (a
    /// parked form need not keep it).
    fn resume(parked: Self::Parked, peer: std::net::SocketAddr, now: Instant) -> Self;
    /// When a parked connection must be resumed to handle its timer (keep-alive).
    fn parked_timeout(parked: &Self::Parked) -> Option<Instant>;

    /// The shard this connection asks to move to (see `runtime::spread`, "Moves"), taken
    /// once: it asks only between frames, and performs none after the one that made it ask
    /// until it has moved (or stayed).
    fn take_move(&mut self) -> Option<ShardId> {
        None
    }
    /// The connection's registration on this shard released, what rebuilds it on the shard it
    /// moves to; `Err` gives back a connection that can no longer move.
    fn start_move(self) -> Result<Arrival<Self>, Self> {
        Err(self)
    }
}

/// Persistent publishes in a row, each awaiting its receipt or confirm, that make a producer
/// move to its queue's shard (STOMP `StompConn::move_candidate`, AMQP
/// `AmqpConn::move_candidate`). Sixteen: a producer spreading over queues shows it within a
/// few publishes, and one that stays has paid 16 round trips across cores.
pub(crate) const CONFIRMED_RUN_TO_MOVE: u32 = 16;

/// The run a producer is on: confirmed publishes in a row on one channel (STOMP: 0) to one
/// queue. Any other publish ends the count for good, as does [`ConfirmedRun::end`] (the
/// producer moved, or its queue is on its own shard): a connection is counted only until it
/// is known never to move.
#[derive(Debug, Default)]
pub(crate) struct ConfirmedRun {
    current: Option<(u16, String, u32)>,
    over: bool,
}

impl ConfirmedRun {
    /// A run counter for a connection on `shard`; one that never counts where producers do
    /// not follow their queue (config `producers_follow_queue = false`).
    pub(crate) fn for_shard(shard: &ShardRef) -> Self {
        ConfirmedRun { current: None, over: !shard.borrow().placement().producers_follow_queue() }
    }

    /// Counts one publish on `channel` to `queue`; `confirmed`: persistent, awaiting its
    /// receipt or confirm, outside a transaction.
    pub(crate) fn note(&mut self, channel: u16, queue: &str, confirmed: bool) {
        if self.over {
            return;
        }
        match &mut self.current {
            _ if !confirmed => self.end(),
            Some((c, q, n)) if *c == channel && q == queue => *n = n.saturating_add(1),
            run => *run = Some((channel, queue.to_owned(), 1)),
        }
    }

    /// Whether the run on `channel` to `queue` is long enough to move for.
    pub(crate) fn reached(&self, channel: u16, queue: &str) -> bool {
        self.current.as_ref().is_some_and(|(c, q, n)| *c == channel && q == queue && *n >= CONFIRMED_RUN_TO_MOVE)
    }

    /// Stops counting for good.
    pub(crate) fn end(&mut self) {
        self.current = None;
        self.over = true;
    }
}

/// The shard that owns queue `name` (or would own it, once declared), when that is not
/// `here`: where a connection working with that one queue should move. `None` with one shard.
pub(crate) fn queue_home_elsewhere(shard: &ShardRef, here: ShardId, name: &str) -> Option<ShardId> {
    let shard = shard.borrow();
    if shard.placement().shard_count() < 2 {
        return None;
    }
    let home = shard.routing().queue(name).map_or_else(|| shard.placement().place("/", name, 0), |q| q.shard);
    (home != here).then_some(home)
}

/// Rebuilds a moved connection on its new shard (registered there; `None` at its connection
/// limit). Carries the connection's portable state across cores.
pub type Arrival<G> = Box<dyn FnOnce(ShardRef, Rc<Users>, Rc<dyn Wake>) -> Option<G> + Send>;

/// Registers a new connection on `shard`: its id, mailbox and a copy of the limits; `None` at
/// the shard's connection limit.
pub(crate) fn register(shard: &ShardRef, wake: Rc<dyn Wake>) -> Option<(ConnectionId, Rc<RefCell<Mailbox>>, Limits)> {
    let mut s = shard.borrow_mut();
    let limits = s.limits().clone();
    let (id, mailbox) = s.register_conn(wake)?;
    Some((id, mailbox, limits))
}

/// Everything in a connection's mailbox, leaving it empty.
pub(crate) fn take_mail(mailbox: &RefCell<Mailbox>) -> Mailbox {
    mailbox.borrow_mut().take()
}

/// Whether a publishing connection's input must wait: a disk or queue-limit alarm, or a
/// queue it publishes to holds it back (flow control).
pub(crate) fn publisher_held(shard: &ShardRef, mailbox: &RefCell<Mailbox>) -> bool {
    shard.borrow().disk_alarm() || !mailbox.borrow().flow_held.is_empty()
}

/// Sends `request` to shard `to` and waits for its reply (a control operation).
pub(crate) async fn request(shard: &ShardRef, to: ShardId, request: Request) -> Result<Reply, EngineError> {
    let rx = shard.borrow_mut().request(to, request);
    rx.await.unwrap_or_else(|_| Err(EngineError::new(ErrorKind::InternalError, "shard went away")))
}

/// Asks the metadata authority for a routing change and waits until every shard applied it.
pub(crate) async fn meta(shard: &ShardRef, op: MetaOp) -> Result<(), EngineError> {
    request(shard, AUTHORITY, Request::Meta(op)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::{CONFIRMED_RUN_TO_MOVE, ConfirmedRun};

    #[test]
    fn a_run_counts_confirmed_publishes_to_one_queue_and_any_other_publish_ends_it() {
        let mut run = ConfirmedRun::default();
        for _ in 1..CONFIRMED_RUN_TO_MOVE {
            run.note(1, "q", true);
        }
        assert!(!run.reached(1, "q"), "one short");
        run.note(1, "q", true);
        assert!(run.reached(1, "q") && !run.reached(2, "q") && !run.reached(1, "r"));
        // Another queue (or channel) starts a new run.
        run.note(1, "r", true);
        assert!(!run.reached(1, "q") && !run.reached(1, "r"));
        // A publish that is not confirmed ends counting for good.
        run.note(1, "r", false);
        for _ in 0..2 * CONFIRMED_RUN_TO_MOVE {
            run.note(1, "r", true);
        }
        assert!(!run.reached(1, "r"));
        let mut ended = ConfirmedRun::default();
        ended.end();
        for _ in 0..CONFIRMED_RUN_TO_MOVE {
            ended.note(0, "q", true);
        }
        assert!(!ended.reached(0, "q"));
    }
}
