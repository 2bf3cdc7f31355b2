//! Parked connections: an idle connection whose gateway says it has nothing in progress gives
//! up its task. What is left of it is its socket, its wake-up flag and its gateway's compact
//! parked form, in one box in this shard's slot table; the socket waits in the shard's epoll
//! set instead of a glommio readiness poll. That is how an idle connection costs a few hundred
//! bytes instead of a task, a future and a poll (issue 6's idle-memory bar; the figures are in
//! docs/PERFORMANCE.md, "Idle connections").
//!
//! A parked connection resumes — its gateway rebuilt, a new task spawned on this shard — when
//! - its socket is readable or closed: a helper thread per shard sleeps in `epoll_wait` on the
//!   parked sockets (one-shot registrations) and writes each ready slot's token into a socket
//!   pair whose other end this shard's watcher task reads (glommio has no way to wait on an
//!   arbitrary fd; the helper does nothing else, so the shard stays the only thread that
//!   touches connection state);
//! - the engine has mail for it: its [`Notify`] names its slot;
//! - its keep-alive deadline passes: the watcher looks every [`TICK`]; a connection whose
//!   deadline is nearer than [`HORIZON`] does not park.
//!
//! Tokens carry a generation number, so a readiness report that arrives after its slot was
//! reused is ignored. The slot table is released once nothing is parked (after a spike of
//! connections it would otherwise keep its size for ever). At shutdown the parked connections are dropped with the shard, as
//! running connection tasks are.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::io::AsyncRead;
use glommio::net::{TcpStream, UnixStream};
use glommio::spawn_local;
use glommio::timer::Timer;

use super::notify::Notify;
use crate::gateway::Gateway;
use crate::shard::ShardRef;

/// How long a connection stays idle, with nothing in progress, before it parks.
pub(super) const PARK_AFTER: Duration = Duration::from_secs(1);
/// A connection whose keep-alive deadline is nearer than this keeps its task.
pub(super) const HORIZON: Duration = Duration::from_secs(3);
/// How often the watcher looks for parked connections whose deadline passed.
const TICK: Duration = Duration::from_millis(500);
/// The helper thread's token for "the shard closed its end: stop".
const STOP: u64 = u64::MAX;
/// A slot table longer than this is released once nothing is parked.
const SLOTS_KEPT_MAX: usize = 1024;
/// Ready events the helper takes per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// A parked connection, whatever its protocol.
trait Resume {
    fn timeout(&self) -> Option<Instant>;
    fn fd(&self) -> RawFd;
    /// Rebuilds the gateway and spawns the connection's task again.
    fn resume(self: Box<Self>, shard: &ShardRef);
}

struct Parked<G: Gateway> {
    fd: OwnedFd,
    notify: Rc<Notify>,
    gateway: G::Parked,
}

impl<G: Gateway + 'static> Resume for Parked<G> {
    fn timeout(&self) -> Option<Instant> {
        G::parked_timeout(&self.gateway)
    }

    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn resume(self: Box<Self>, shard: &ShardRef) {
        let Parked { fd, notify, gateway } = *self;
        notify.unpark();
        // SAFETY: `fd` is the connection's TCP socket, owned here and handed over whole.
        let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
        // A socket reset while parked has no peer address any more; the connection's task
        // finds it closed at its first read.
        let peer = stream.peer_addr().unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let conn = G::resume(gateway, peer, Instant::now());
        spawn_local(super::conn::drive(stream, shard.clone(), conn, notify)).detach();
    }
}

#[derive(Default)]
struct Slot {
    generation: u32,
    conn: Option<Box<dyn Resume>>,
}

/// This shard's parked connections. See the module docs.
struct Parking {
    epoll: OwnedFd,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots whose connection got mail.
    mail: Vec<u32>,
    /// The watcher task, when it waits.
    watcher: Option<Waker>,
    parked: usize,
    /// Connections parked since the release hook last ran.
    parks_since_release: usize,
    /// The generation the next reservation gets (31 bits: a token is never [`STOP`]).
    next_generation: u32,
}

/// Parked connections of every shard (the admin endpoint's `ferry_connections_parked`).
static PARKED_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// Called on a shard's thread once a burst of parking is over (see [`set_release_hook`]).
static RELEASE_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();
/// Least time between two calls of the release hook on one shard.
const RELEASE_EVERY: Duration = Duration::from_secs(2);

/// Sets what a shard calls after a burst of connections parked: the binary's allocator hands
/// the freed task memory back to the system there (mimalloc purges freed pages only when its
/// heap is used again, and a shard whose connections all parked may not use it for a long
/// time). Set once, before the shards start.
pub fn set_release_hook(hook: fn()) {
    let _ = RELEASE_HOOK.set(hook);
}

/// How many connections are parked now, over all shards.
pub fn parked_total() -> usize {
    PARKED_TOTAL.load(Ordering::Relaxed)
}

thread_local! {
    static PARKING: RefCell<Option<Parking>> = const { RefCell::new(None) };
}

/// Starts parking on this shard: the epoll set, its helper thread and the watcher task. Without
/// them (an error is logged) connections simply never park.
pub(super) fn start(shard: &ShardRef) -> Option<glommio::Task<()>> {
    match open() {
        Ok((parking, ready)) => {
            PARKING.with(|p| *p.borrow_mut() = Some(parking));
            Some(spawn_local(watch(shard.clone(), ready)))
        }
        Err(e) => {
            tracing::warn!("idle connections will not be parked: {e}");
            None
        }
    }
}

/// Drops every parked connection (the shard is stopping); the helper thread sees its socket
/// pair close and exits.
pub(super) fn stop() {
    let parking = PARKING.with(|p| p.borrow_mut().take());
    if let Some(parking) = &parking {
        PARKED_TOTAL.fetch_sub(parking.parked, Ordering::Relaxed);
    }
    drop(parking);
}

fn open() -> std::io::Result<(Parking, UnixStream)> {
    // SAFETY: plain syscall; the result is checked before use.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nothing else.
    let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
    let (shard_end, helper_end) = StdUnixStream::pair()?;
    epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, helper_end.as_raw_fd(), (libc::EPOLLIN | libc::EPOLLRDHUP) as u32, STOP)?;
    let helper_epoll = epoll.try_clone()?;
    std::thread::Builder::new().name("ferry-parked".to_owned()).spawn(move || helper(helper_epoll, helper_end))?;
    // SAFETY: `shard_end` is a connected Unix stream socket, handed over whole.
    let ready = unsafe { UnixStream::from_raw_fd(shard_end.into_raw_fd()) };
    let parking = Parking {
        epoll,
        slots: Vec::new(),
        free: Vec::new(),
        mail: Vec::new(),
        watcher: None,
        parked: 0,
        parks_since_release: 0,
        next_generation: 1,
    };
    Ok((parking, ready))
}

fn epoll_ctl(epoll: &OwnedFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> std::io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: `event` is valid for the call; the kernel copies it.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The helper thread: reports each ready parked socket's token to the shard, until the
/// shard's end of the pair closes.
fn helper(epoll: OwnedFd, mut report: StdUnixStream) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
    let mut tokens = Vec::with_capacity(EVENTS_PER_WAIT * 8);
    loop {
        // SAFETY: `events` holds EVENTS_PER_WAIT entries for the kernel to fill.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), EVENTS_PER_WAIT as libc::c_int, -1) };
        let Ok(n) = usize::try_from(n) else {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("epoll_wait on parked connections failed: {}", std::io::Error::last_os_error());
            return;
        };
        tokens.clear();
        for event in &events[..n] {
            let token = event.u64;
            if token == STOP {
                return;
            }
            tokens.extend_from_slice(&token.to_le_bytes());
        }
        if report.write_all(&tokens).is_err() {
            return;
        }
    }
}

/// A slot taken and its socket registered, for [`Reservation::fill`] or [`Reservation::cancel`].
pub(super) struct Reservation {
    slot: u32,
    fd: OwnedFd,
}

/// Takes a slot for the connection on `socket` and registers (a duplicate of) the socket in
/// the epoll set; `None` when parking is off here or the kernel refuses.
pub(super) fn reserve(socket: RawFd) -> Option<Reservation> {
    PARKING.with(|p| {
        let mut guard = p.borrow_mut();
        let parking = guard.as_mut()?;
        // SAFETY: `socket` is the caller's open socket; the duplicate is ours.
        let fd = unsafe { libc::fcntl(socket, libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh fd owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let slot = match parking.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(parking.slots.len()).ok()?;
                parking.slots.push(Slot::default());
                slot
            }
        };
        let generation = parking.next_generation;
        parking.next_generation = generation.wrapping_add(1) & 0x7fff_ffff;
        parking.slots[slot as usize].generation = generation;
        let token = (u64::from(generation) << 32) | u64::from(slot);
        let interest = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;
        if let Err(e) = epoll_ctl(&parking.epoll, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), interest, token) {
            tracing::debug!("parking a connection failed: {e}");
            parking.free.push(slot);
            return None;
        }
        Some(Reservation { slot, fd })
    })
}

impl Reservation {
    /// Parks the connection in the reserved slot. The caller drops its own socket handle.
    pub(super) fn fill<G: Gateway + 'static>(self, notify: Rc<Notify>, gateway: G::Parked) {
        let Reservation { slot, fd } = self;
        notify.park(slot);
        let parked: Box<dyn Resume> = Box::new(Parked::<G> { fd, notify, gateway });
        PARKING.with(|p| {
            if let Some(parking) = p.borrow_mut().as_mut() {
                parking.slots[slot as usize].conn = Some(parked);
                parking.parked += 1;
                parking.parks_since_release += 1;
                PARKED_TOTAL.fetch_add(1, Ordering::Relaxed);
                // The watcher ticks only while something is parked: start it ticking.
                if parking.parked == 1
                    && let Some(waker) = parking.watcher.take()
                {
                    waker.wake();
                }
            }
        });
    }

    /// Gives the slot back (the connection keeps its task).
    pub(super) fn cancel(self) {
        PARKING.with(|p| {
            if let Some(parking) = p.borrow_mut().as_mut() {
                let _ = epoll_ctl(&parking.epoll, libc::EPOLL_CTL_DEL, self.fd.as_raw_fd(), 0, 0);
                parking.free.push(self.slot);
            }
        });
    }
}

/// The engine has mail for the connection parked in `slot` (called by its [`Notify`]).
pub(super) fn mail_for(slot: u32) {
    PARKING.with(|p| {
        if let Some(parking) = p.borrow_mut().as_mut() {
            parking.mail.push(slot);
            if let Some(waker) = parking.watcher.take() {
                waker.wake();
            }
        }
    });
}

/// Takes the connection out of `slot` (if `generation` matches, when given) and unregisters
/// its socket.
fn take(slot: u32, generation: Option<u32>) -> Option<Box<dyn Resume>> {
    PARKING.with(|p| {
        let mut guard = p.borrow_mut();
        let parking = guard.as_mut()?;
        let entry = parking.slots.get_mut(slot as usize)?;
        if generation.is_some_and(|g| g != entry.generation) {
            return None;
        }
        let conn = entry.conn.take()?;
        let _ = epoll_ctl(&parking.epoll, libc::EPOLL_CTL_DEL, conn.fd(), 0, 0);
        parking.free.push(slot);
        parking.parked -= 1;
        PARKED_TOTAL.fetch_sub(1, Ordering::Relaxed);
        // (No reservation is outstanding here: reserve and fill run in one synchronous step.)
        if parking.parked == 0 && parking.slots.len() > SLOTS_KEPT_MAX {
            parking.slots = Vec::new();
            parking.free = Vec::new();
        }
        Some(conn)
    })
}

enum Wake {
    /// Bytes of ready tokens arrived (0: the helper is gone).
    Ready(std::io::Result<usize>),
    Mail,
    Tick,
}

/// The shard's watcher task: resumes parked connections that became readable, got mail or
/// reached their deadline.
async fn watch(shard: ShardRef, mut ready: UnixStream) {
    let mut buf = vec![0u8; EVENTS_PER_WAIT * 8];
    let mut have = 0;
    let mut released = Instant::now();
    let mut parks_at_last_tick = 0;
    loop {
        let mut tick: Option<Timer> = None;
        let wake = poll_fn(|cx| {
            if let Poll::Ready(read) = Pin::new(&mut ready).poll_read(cx, &mut buf[have..]) {
                return Poll::Ready(Wake::Ready(read));
            }
            let (mail, any_parked) = PARKING.with(|p| {
                let mut guard = p.borrow_mut();
                let Some(parking) = guard.as_mut() else { return (false, false) };
                if parking.mail.is_empty() {
                    parking.watcher = Some(cx.waker().clone());
                }
                (!parking.mail.is_empty(), parking.parked > 0)
            });
            if mail {
                return Poll::Ready(Wake::Mail);
            }
            // Ticks only while something is parked (a first park wakes this task).
            if any_parked && tick.is_none() {
                tick = Some(Timer::new(TICK));
            }
            match tick.as_mut().map(|t| Pin::new(t).poll(cx)) {
                Some(Poll::Ready(_)) => Poll::Ready(Wake::Tick),
                _ => Poll::Pending,
            }
        })
        .await;
        match wake {
            Wake::Ready(Ok(n)) if n > 0 => {
                have += n;
                let whole = have - have % 8;
                for token in buf[..whole].chunks_exact(8) {
                    let token = u64::from_le_bytes(token.try_into().expect("8 bytes"));
                    let (slot, generation) = ((token & 0xffff_ffff) as u32, (token >> 32) as u32);
                    if let Some(conn) = take(slot, Some(generation)) {
                        conn.resume(&shard);
                    }
                }
                buf.copy_within(whole..have, 0);
                have -= whole;
            }
            Wake::Ready(result) => {
                tracing::error!(?result, "the parked-connection helper stopped; resuming every parked connection");
                resume_all(&shard, |_| true);
                stop();
                return;
            }
            Wake::Mail => {
                let mail = PARKING.with(|p| p.borrow_mut().as_mut().map(|p| std::mem::take(&mut p.mail)));
                for slot in mail.unwrap_or_default() {
                    if let Some(conn) = take(slot, None) {
                        conn.resume(&shard);
                    }
                }
            }
            Wake::Tick => {
                let now = Instant::now();
                resume_all(&shard, |conn| conn.timeout().is_some_and(|at| at <= now));
                // A burst of parking is over when a whole tick parked nothing more.
                let parks = PARKING.with(|p| p.borrow().as_ref().map_or(0, |p| p.parks_since_release));
                if parks > 0 && parks == parks_at_last_tick && now.duration_since(released) >= RELEASE_EVERY {
                    if let Some(hook) = RELEASE_HOOK.get() {
                        hook();
                    }
                    PARKING.with(|p| p.borrow_mut().as_mut().map(|p| p.parks_since_release = 0));
                    released = now;
                }
                parks_at_last_tick = PARKING.with(|p| p.borrow().as_ref().map_or(0, |p| p.parks_since_release));
            }
        }
    }
}

/// Resumes every parked connection `due` picks.
fn resume_all(shard: &ShardRef, due: impl Fn(&dyn Resume) -> bool) {
    let slots: Vec<u32> = PARKING.with(|p| {
        let guard = p.borrow();
        let Some(parking) = guard.as_ref() else { return Vec::new() };
        (0..parking.slots.len() as u32)
            .filter(|s| parking.slots[*s as usize].conn.as_deref().is_some_and(&due))
            .collect()
    });
    for slot in slots {
        if let Some(conn) = take(slot, None) {
            conn.resume(shard);
        }
    }
}
