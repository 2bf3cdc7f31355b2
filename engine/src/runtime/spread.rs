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
//!
//! **Moves.** A connection whose protocol knows better where it belongs moves there later,
//! once: a STOMP connection that subscribes to a queue owned by another shard, before it has
//! done anything else, moves to that shard (its deliveries and acks then never cross cores;
//! see `gateway::stomp`). The gateway asks between frames; the connection's task writes what
//! output it has, takes what rebuilds the gateway elsewhere (`Gateway::start_move`) and a duplicate
//! of the socket's descriptor, and sends both over the same channel; the new shard rebuilds
//! the gateway, performs the frames that waited, and drives it from there. The socket is only
//! read by readiness (glommio's non-buffered stream: no read is in flight in the kernel), so
//! no byte is lost in between.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_lite::io::AsyncWriteExt;
use glommio::channels::channel_mesh::Senders;
use glommio::net::{AcceptedTcpStream, TcpStream};
use glommio::{GlommioError, ResourceType, spawn_local};

use super::notify::Notify;
use crate::auth::Users;
use crate::config::ListenerProto;
use crate::gateway::Gateway;
use crate::ids::ShardId;
use crate::shard::ShardRef;

/// What one shard sends another over their hand-off channel.
pub(super) enum Handoff {
    /// A connection accepted by the sender, not read yet.
    Accepted { stream: AcceptedTcpStream, proto: ListenerProto },
    /// A connection moving to the receiver: run there, it rebuilds the gateway and spawns the
    /// connection's task.
    Moved(Resume),
}

/// Run on the shard a connection moved to: rebuilds its gateway and spawns its task.
pub(super) type Resume = Box<dyn FnOnce(&ShardRef, &Rc<Users>) + Send>;

/// This shard's ends of the hand-off channels and the shared counts.
pub(super) struct HandOver {
    pub(super) senders: Senders<Handoff>,
    pub(super) spread: Arc<Spread>,
    /// A shard's connection limit: a connection does not move to a shard at it.
    pub(super) connection_count_max: usize,
}

thread_local! {
    static HAND_OVER: RefCell<Option<Rc<HandOver>>> = const { RefCell::new(None) };
}

/// Makes this shard's hand-off ends reachable from its connections' tasks.
pub(super) fn install(hand_over: Rc<HandOver>) {
    HAND_OVER.with(|slot| *slot.borrow_mut() = Some(hand_over));
}

fn hand_over() -> Option<Rc<HandOver>> {
    HAND_OVER.with(|slot| slot.borrow().clone())
}

/// Sends `handoff` to shard `to`; gives it back when that shard's channel is gone (stopping).
pub(super) async fn send(hand_over: &HandOver, to: usize, handoff: Handoff) -> Result<(), Option<Handoff>> {
    match hand_over.senders.send_to(to, handoff).await {
        Ok(()) => Ok(()),
        Err(GlommioError::Closed(ResourceType::Channel(handoff))) => Err(Some(handoff)),
        Err(e) => {
            tracing::warn!(to, "hand-off to another shard failed: {e}");
            Err(None)
        }
    }
}

/// A duplicate of the socket's descriptor, so that the stream can be dropped here while the
/// connection lives on elsewhere.
fn duplicate(stream: &TcpStream) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the stream owns; the result is a fresh one.
    let fd = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves a connection whose gateway asked for shard `to` (see the module docs). `Err` gives
/// the gateway back when it cannot move (one shard, stopping, no descriptor to spare); it then
/// stays here, with its waiting frames still to perform. (One that the target refuses at its
/// connection limit all the same, having filled up meanwhile, gets the protocol's refusal.)
pub(super) async fn move_connection<G: Gateway + 'static>(
    stream: TcpStream,
    conn: G,
    to: ShardId,
) -> Result<(), (TcpStream, G)> {
    let Some(hand_over) = hand_over() else { return Err((stream, conn)) };
    if hand_over.spread.count(usize::from(to.0)) >= hand_over.connection_count_max {
        tracing::debug!("not moving a connection to shard {to}: it is at its connection limit");
        return Err((stream, conn));
    }
    let fd = match duplicate(&stream) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("cannot move a connection to shard {to}: {e}");
            return Err((stream, conn));
        }
    };
    let arrival = match conn.start_move() {
        Ok(arrival) => arrival,
        Err(conn) => return Err((stream, conn)),
    };
    drop(stream);
    let resume = move |shard: &ShardRef, users: &Rc<Users>| {
        // SAFETY: the descriptor is a connected TCP socket this closure owns.
        let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
        let notify = Rc::new(Notify::default());
        let Some(mut conn) = arrival(shard.clone(), users.clone(), notify.clone()) else {
            tracing::warn!("a moved connection was refused at the connection limit");
            let mut stream = stream;
            spawn_local(async move {
                let _ = stream.write_all(G::refusal()).await;
            })
            .detach();
            return;
        };
        let shard = shard.clone();
        spawn_local(async move {
            Box::pin(conn.handle_events()).await;
            super::conn::drive(stream, shard, conn, notify).await;
        })
        .detach();
    };
    if send(&hand_over, usize::from(to.0), Handoff::Moved(Box::new(resume))).await.is_err() {
        tracing::warn!("shard {to} is gone: a moving connection closes");
    }
    Ok(())
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

    /// Shard `shard`'s count.
    pub(crate) fn count(&self, shard: usize) -> usize {
        self.gauges[shard].load(Ordering::Relaxed)
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
