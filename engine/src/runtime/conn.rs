//! One connection's task, the whole connection: a short read/handle/poll/write loop — wait for
//! input, a mailbox wake-up or the session's next timer, let the gateway handle it, then write
//! whatever output it produced. The socket is read only when it is readable, into a buffer the
//! shard's connections share: the session takes the bytes at once (keeping only an incomplete
//! frame), so an idle connection holds no read buffer, no reader task and no channel. Input
//! is read only between handlings, so a busy gateway leaves bytes in the socket (TCP
//! back-pressure). The connection lives on this shard, unless its gateway asks to move once
//! (`super::spread`, "Moves").

use std::cell::RefCell;
use std::future::Future;
use std::future::poll_fn;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::notify::Notify;
use super::park;
use super::reactor_turn;
use crate::auth::Users;
use crate::gateway::Gateway;
use crate::gateway::amqp091::AmqpConn;
use crate::gateway::mqtt::MqttConn;
use crate::gateway::stomp::StompConn;
use crate::shard::ShardRef;
use crate::shard::mailbox::Wake as WakeHook;

/// Bytes read from the socket per read call (the shard's shared read buffer).
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Reads a lingering close discards per poll before letting other tasks run.
const LINGER_READS_PER_POLL: usize = 16;
/// Pause while this shard's outboxes are over their bound.
const OUTBOX_BACKOFF: Duration = Duration::from_micros(200);

thread_local! {
    /// The shard's read buffer, shared by its connections (each hands what it read to its
    /// session before it waits again; see the module docs).
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK_BYTES].into_boxed_slice());
}

enum Wake {
    /// Bytes went to the gateway; `full`: the read filled the buffer (more is waiting).
    Input {
        full: bool,
    },
    /// End of input (or a socket error).
    Eof,
    Mail,
    Timer,
    Recheck,
    /// Idle for [`park::PARK_AFTER`] with nothing in progress.
    Park,
}

/// Longest wait for the peer's FIN after ours.
const LINGER: Duration = Duration::from_secs(1);

/// How often a held-back publisher looks whether the disk alarm cleared.
const HELD_RECHECK: Duration = Duration::from_millis(50);

/// Builds a protocol's gateway for a new connection; `None` at the connection limit.
pub(super) type MakeGateway<G> = fn(ShardRef, std::net::SocketAddr, Rc<Users>, Rc<dyn WakeHook>, Instant) -> Option<G>;

pub(super) async fn serve_stomp(stream: TcpStream, shard: ShardRef, users: Rc<Users>) {
    serve::<StompConn>(stream, shard, users, StompConn::new).await;
}

pub(super) async fn serve_amqp(stream: TcpStream, shard: ShardRef, users: Rc<Users>) {
    serve::<AmqpConn>(stream, shard, users, AmqpConn::new).await;
}

pub(super) async fn serve_mqtt(stream: TcpStream, shard: ShardRef, users: Rc<Users>) {
    serve::<MqttConn>(stream, shard, users, MqttConn::new).await;
}

async fn serve<G: Gateway + 'static>(stream: TcpStream, shard: ShardRef, users: Rc<Users>, make: MakeGateway<G>) {
    let Ok(peer) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let notify = Rc::new(Notify::default());
    let wake: Rc<dyn WakeHook> = notify.clone();
    let Some(conn) = make(shard.clone(), peer, users, wake, Instant::now()) else {
        let mut stream = stream;
        let _ = stream.write_all(G::refusal()).await;
        return;
    };
    drive(stream, shard, conn, notify).await;
}

/// The connection's loop, from its first byte or from a resume out of the parked state (see
/// [`super::park`]): it ends when the connection closes or parks.
pub(super) async fn drive<G: Gateway + 'static>(
    mut stream: TcpStream,
    shard: ShardRef,
    mut conn: G,
    notify: Rc<Notify>,
) {
    let outbox_max = shard.borrow().limits().shard_channel_count_max * 16;
    let mut out = Vec::new();
    // The last activity, kept once the connection can park.
    let mut active = Instant::now();
    // Armed once the connection is first parkable and then at most once per PARK_AFTER:
    // a busy connection does not re-arm a timer at every wake-up.
    let mut park_timer: Option<ParkTimer> = None;
    loop {
        conn.poll_transmit(&mut out);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
            conn.on_written();
        }
        if conn.is_closed() {
            break;
        }
        if let Some(to) = conn.take_move() {
            // Its output is written; what the session still holds moves with it.
            match super::spread::move_connection(stream, conn, to).await {
                Ok(()) => return,
                Err((back, stays)) => {
                    (stream, conn) = (back, stays);
                    // The frames that waited for the move are performed here after all.
                    Box::pin(conn.handle_events()).await;
                    continue;
                }
            }
        }
        if park_timer.is_none() && conn.parkable() {
            active = Instant::now();
            park_timer = Some(ParkTimer::new(active + park::PARK_AFTER));
        }
        let wake = next_wake(&mut stream, &mut conn, &notify, park_timer.as_mut()).await;
        // Only a connection that parks needs the time of its last activity (a clock read).
        if park_timer.is_some() && !matches!(wake, Wake::Park) {
            active = Instant::now();
        }
        match wake {
            Wake::Input { full } => {
                while shard.borrow().outbox_len() > outbox_max {
                    glommio::timer::sleep(OUTBOX_BACKOFF).await;
                }
                // Boxed: the handlers' states are large and live only while frames are
                // handled, so an idle connection's task does not carry them.
                Box::pin(conn.handle_events()).await;
                // A full read came without the reactor and so will the next one: let the
                // shard's other sockets be polled first (see `reactor_turn`).
                if full {
                    reactor_turn::now().await;
                }
            }
            Wake::Eof => break,
            Wake::Mail => conn.drain_mailbox(),
            Wake::Timer => conn.handle_timeout(Instant::now()),
            Wake::Recheck => {}
            Wake::Park => {
                let now = Instant::now();
                let idle_enough = active + park::PARK_AFTER;
                // The next look, should this one not park.
                let next = if now >= idle_enough { now + park::PARK_AFTER } else { idle_enough };
                park_timer = Some(ParkTimer::new(next));
                // Idle long enough, with nothing in progress: park, unless the keep-alive
                // deadline is near (the parked watcher looks at deadlines only every few
                // hundred milliseconds).
                if now < idle_enough
                    || !conn.parkable()
                    || conn.poll_timeout().is_some_and(|at| at < now + park::HORIZON)
                {
                    continue;
                }
                let Some(reservation) = park::reserve(stream.as_raw_fd()) else { continue };
                match conn.park() {
                    Ok(parked) => {
                        reservation.fill::<G>(notify, parked);
                        return;
                    }
                    Err(back) => {
                        reservation.cancel();
                        conn = back;
                    }
                }
            }
        }
    }
    // Lingering close: read (and discard) until the peer closes too, for a bounded time, so
    // unread input cannot turn our close into a reset that destroys the final frames
    // (close-ok, ERROR). Our FIN goes first unless the protocol leaves closing to the peer.
    let peer_first = conn.peer_closes_first();
    if !peer_first {
        let _ = stream.close().await;
    }
    future::or(poll_fn(|cx| poll_discard(&mut stream, cx)), glommio::timer::sleep(LINGER)).await;
    if peer_first {
        let _ = stream.close().await;
    }
    conn.close();
}

/// Waits for what the connection must act on next: input (already fed to `conn`), mail, its
/// session's timer, or (while its input is held) the next look at the hold. One flat future:
/// it is the state every idle connection's task holds.
fn next_wake<'a, G: Gateway>(
    stream: &'a mut TcpStream,
    conn: &'a mut G,
    notify: &'a Notify,
    mut park: Option<&'a mut ParkTimer>,
) -> impl Future<Output = Wake> + 'a {
    let held = conn.input_held();
    let recheck = held.then(|| Instant::now() + HELD_RECHECK);
    let (deadline, on_deadline) = [conn.poll_timeout().map(|t| (t, Wake::Timer)), recheck.map(|r| (r, Wake::Recheck))]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at)
        .map_or((None, Wake::Timer), |(at, wake)| (Some(at), wake));
    let mut timer = deadline.map(|at| Timer::new(at.saturating_duration_since(Instant::now())));
    let mut on_deadline = Some(on_deadline);
    poll_fn(move |cx| {
        if !held && let Poll::Ready(wake) = poll_input(stream, conn, cx) {
            return Poll::Ready(wake);
        }
        if notify.poll_wait(cx).is_ready() {
            return Poll::Ready(Wake::Mail);
        }
        if park.as_mut().is_some_and(|park| park.poll(cx).is_ready()) {
            return Poll::Ready(Wake::Park);
        }
        match timer.as_mut().map(|timer| Pin::new(timer).poll(cx)) {
            Some(Poll::Ready(_)) => Poll::Ready(on_deadline.take().unwrap_or(Wake::Timer)),
            _ => Poll::Pending,
        }
    })
}

/// When an idle connection looks whether it can park. The glommio timer is polled once per
/// arming (that registers the task's waker with the reactor); after that a look at the clock
/// is enough, so a busy connection's wake-ups cost no timer-wheel updates.
struct ParkTimer {
    at: Instant,
    timer: Timer,
    polled: bool,
}

impl ParkTimer {
    fn new(at: Instant) -> ParkTimer {
        ParkTimer { at, timer: Timer::new(at.saturating_duration_since(Instant::now())), polled: false }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.polled {
            self.polled = true;
            return Pin::new(&mut self.timer).poll(cx).map(|_| ());
        }
        if Instant::now() >= self.at { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// Reads what the socket has into the shard's buffer and hands it to `conn`.
fn poll_input<G: Gateway>(stream: &mut TcpStream, conn: &mut G, cx: &mut Context<'_>) -> Poll<Wake> {
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        match Pin::new(stream).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(Wake::Eof),
            Poll::Ready(Ok(n)) => {
                conn.handle_input(&buf[..n], Instant::now());
                Poll::Ready(Wake::Input { full: n == buf.len() })
            }
        }
    })
}

/// Reads and drops input until the peer's FIN (or a socket error).
fn poll_discard(stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<()> {
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        for _ in 0..LINGER_READS_PER_POLL {
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
            }
        }
        // A peer that keeps sending: let the shard's other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}
