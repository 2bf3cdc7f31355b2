//! The active/standby lease on a shared data directory (ARCHITECTURE §5). Files in
//! `<data-dir>/lease/`:
//! - `epoch-<N>`: the claim of epoch N, made atomic by `link(2)` of a synced temp file (fails
//!   with EEXIST when another process claimed N first; works on NFS, unlike a rename).
//!   The highest N is the owner; N is the fencing token the logs carry.
//! - `heartbeat-<N>`: a counter the owner of N rewrites and fdatasyncs every D/3.
//! - `released-<N>`: the owner of N stopped cleanly (after its final sync); a standby may
//!   claim N+1 at once.
//! - `handover-<N>`: asks the owner of N to stop cleanly and release (`ferry ctl handover`).
//!
//! A standby polls every [`POLL`]: it claims N+1 when N is released, or when N's heartbeat has
//! not changed for D + margin on its own monotonic clock (no clocks are compared across hosts).
//! The owner checks after every log sync, before acknowledging, that no newer epoch exists
//! (the successor claims before it seals, so whatever was synced before that check lies inside
//! the seal), and stops acknowledging while its own renew deadline (start of the last
//! successful renewal + D) has passed; it exits as soon as it sees a newer epoch. A late
//! renewal is made only after a full listing of the lease directory shows no successor.
//! On NFS the lease directory must not cache lookups of names that do not exist
//! (`lookupcache=positive`, or `none`). Plain std threads, no runtime.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_storage::{Epoch, Fence, Tail};

mod owner;
pub use owner::Owner;

/// How often a standby looks at the lease, and the owner at handover requests, when nothing
/// wakes it sooner: where the file system reports changes (inotify; not NFS, where the poll is
/// what notices), a new marker or claim is seen at once.
pub const POLL: Duration = Duration::from_millis(50);
/// While waiting on directory changes, how often a standby checks for a shutdown signal.
const SIGNAL_CHECK: Duration = Duration::from_millis(10);
/// A standby rewrites its `standby-<host>-<pid>` presence file every this many looks.
const STANDBY_BEAT_EVERY: u64 = 4;

/// Exit status of an owner that lost its lease (another process holds a newer epoch).
pub const EXIT_LEASE_LOST: i32 = 75;

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// D: how long a silent owner is still trusted.
    pub duration: Duration,
    /// Extra silence a standby waits beyond D before it claims. Safety does not rest on it
    /// (the owner stops acknowledging D after the start of its last renewal, which the standby
    /// saw later); it absorbs clock-rate differences and scheduling delays.
    pub margin: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming { duration: Duration::from_secs(2), margin: Duration::from_millis(200) }
    }
}

/// The lease directory of a data directory.
#[derive(Debug, Clone)]
pub struct LeaseDir {
    dir: PathBuf,
}

impl LeaseDir {
    pub fn new(data_dir: &Path) -> anyhow::Result<LeaseDir> {
        let dir = data_dir.join("lease");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(LeaseDir { dir })
    }

    fn path(&self, what: &str, epoch: u64) -> PathBuf {
        self.dir.join(format!("{what}-{epoch:020}"))
    }

    /// The highest claimed epoch, if any.
    pub fn highest_epoch(&self) -> anyhow::Result<Option<u64>> {
        let mut highest = None;
        for entry in std::fs::read_dir(&self.dir).with_context(|| format!("reading {}", self.dir.display()))? {
            let name = entry?.file_name();
            let epoch = name.to_str().and_then(|n| n.strip_prefix("epoch-")).and_then(|n| n.parse::<u64>().ok());
            highest = highest.max(epoch);
        }
        Ok(highest)
    }

    /// Whether `<what>-<epoch>` exists; a lookup that fails reads as "no". Right for markers a
    /// false "no" only delays (released, handover); never for the fence, which must tell a
    /// failed lookup from an absent claim (`Held::check`).
    fn exists(&self, what: &str, epoch: u64) -> bool {
        self.path(what, epoch).exists()
    }

    /// The heartbeat counter of `epoch` (`None` before the owner wrote its first).
    fn heartbeat(&self, epoch: u64) -> Option<u64> {
        let text = std::fs::read_to_string(self.path("heartbeat", epoch)).ok()?;
        text.trim().parse().ok()
    }

    /// Tries to claim `epoch`; `Ok(false)` when another process claimed it first.
    fn claim(&self, epoch: u64, owner: &str) -> anyhow::Result<bool> {
        let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_digit(), "");
        let temp = self.dir.join(format!(".claim-{}-{thread}-{epoch}", std::process::id()));
        let mut file = File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
        file.write_all(owner.as_bytes())?;
        file.sync_all()?;
        drop(file);
        let won = match std::fs::hard_link(&temp, self.path("epoch", epoch)) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e).with_context(|| format!("claiming epoch {epoch}")),
        };
        let _ = std::fs::remove_file(&temp);
        self.sync()?;
        Ok(won)
    }

    /// The address the current owner listens on for `proto` (as `Owner` records it: `Mqtt`,
    /// `Stomp`, `Amqp`), with its host name in place of a wildcard address.
    pub fn active_listener(&self, proto: &str) -> Option<String> {
        let owner = self.owner(self.highest_epoch().ok()??)?;
        let addr: std::net::SocketAddr =
            owner.listen.split(',').find_map(|entry| entry.strip_prefix(proto)?.strip_prefix('=')?.parse().ok())?;
        Some(if addr.ip().is_unspecified() { format!("{}:{}", owner.host, addr.port()) } else { addr.to_string() })
    }

    #[cfg(test)]
    pub(crate) fn claim_for_test(&self, epoch: u64, owner: &str) {
        assert!(self.claim(epoch, owner).expect("claim"), "epoch {epoch} already claimed");
    }

    /// Deletes the files of epochs below `keep` (claims, heartbeats, markers), so the
    /// directory stays small across many takeovers. Safe: a writer of such an old epoch has
    /// been silent for longer than D twice over, so it waits at its renew deadline, and a late
    /// renewal looks for any higher epoch with a full listing, which still finds the newer
    /// claims. Failures only leave files behind.
    fn prune_before(&self, keep: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let old = ["epoch-", "heartbeat-", "released-", "handover-"]
                .iter()
                .any(|prefix| name.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok()).is_some_and(|e| e < keep));
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Who claimed `epoch`, when its claim file is readable.
    fn owner(&self, epoch: u64) -> Option<Owner> {
        Owner::parse(&std::fs::read_to_string(self.path("epoch", epoch)).ok()?)
    }

    /// Creates a marker file (`released`, `handover`) for `epoch`, durably.
    pub fn mark(&self, what: &str, epoch: u64) -> anyhow::Result<()> {
        let path = self.path(what, epoch);
        File::create(&path).and_then(|f| f.sync_all()).with_context(|| format!("creating {}", path.display()))?;
        self.sync()
    }

    fn sync(&self) -> anyhow::Result<()> {
        File::open(&self.dir).and_then(|d| d.sync_all()).with_context(|| format!("fsync {}", self.dir.display()))
    }

    /// True when some standby rewrote its presence file within `window`: one would take over
    /// after a handover. Compares file contents across two reads, never clocks across hosts.
    pub fn live_standby(&self, window: Duration) -> anyhow::Result<bool> {
        let read = || -> anyhow::Result<Vec<(std::ffi::OsString, String)>> {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(&self.dir)? {
                let entry = entry?;
                if entry.file_name().to_str().is_some_and(|n| n.starts_with("standby-")) {
                    found.push((entry.file_name(), std::fs::read_to_string(entry.path()).unwrap_or_default()));
                }
            }
            Ok(found)
        };
        let before = read()?;
        let deadline = Instant::now() + window;
        while Instant::now() < deadline {
            std::thread::sleep(POLL);
            if read()?.iter().any(|now| before.iter().any(|b| b.0 == now.0 && b.1 != now.1)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One line describing the lease, for `ferry ctl status` and logs.
    pub fn describe(&self) -> anyhow::Result<String> {
        let Some(epoch) = self.highest_epoch()? else {
            return Ok("no epoch claimed yet".to_owned());
        };
        let owner = std::fs::read_to_string(self.path("epoch", epoch)).unwrap_or_default();
        let state = if self.exists("released", epoch) { "released" } else { "held" };
        let heartbeat = self.heartbeat(epoch).map_or("none".to_owned(), |h| h.to_string());
        Ok(format!("epoch {epoch} {state} by {} heartbeat {heartbeat}", owner.trim()))
    }
}

/// What the shards need once this process holds the lease: the epoch to stamp, the fence to
/// ask after every sync, and the folds the warm standby kept.
#[derive(Debug, Clone, Default)]
pub struct Activation {
    pub epoch: Epoch,
    pub fence: Option<Arc<dyn Fence>>,
    pub warm: WarmLogs,
}

/// The shard-log folds a warm standby kept up while it waited ([`ferry_storage::Tail`]), handed
/// to the shards when it takes over so they read only the unseen tail of each log.
#[derive(Debug, Clone, Default)]
pub struct WarmLogs(Arc<Mutex<Vec<Option<Tail>>>>);

impl WarmLogs {
    pub fn new(tails: Vec<Tail>) -> WarmLogs {
        WarmLogs(Arc::new(Mutex::new(tails.into_iter().map(Some).collect())))
    }

    /// Shard `index`'s fold, once.
    pub fn take(&self, index: u16) -> Option<Tail> {
        let mut tails = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tails.get_mut(usize::from(index)).and_then(Option::take)
    }
}

/// How waiting as a standby ended.
#[derive(Debug)]
pub enum Waited {
    /// This process claimed an epoch and is now the active.
    Active(ActiveLease),
    /// A shutdown signal arrived first.
    Stopped,
}

/// Wakes a waiter when a name is created in the lease directory (a claim, `released-N`,
/// `handover-N`). Local file systems only: NFS clients are not told of another host's changes,
/// so every waiter still looks at least every [`POLL`].
#[derive(Debug)]
struct DirWatch {
    fd: std::os::fd::OwnedFd,
}

impl DirWatch {
    fn new(dir: &Path) -> Option<DirWatch> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: plain syscalls; the fd is owned (and closed) by `OwnedFd` from here on.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            if fd < 0 {
                return None;
            }
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mask = libc::IN_CREATE | libc::IN_MOVED_TO;
            if libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&fd), path.as_ptr(), mask) < 0 {
                return None;
            }
            Some(DirWatch { fd })
        }
    }

    /// Waits up to `timeout` for a change; true when one came (its events are consumed).
    fn wait(&self, timeout: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let fd = self.fd.as_raw_fd();
        let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, ms) } <= 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a local buffer of the given length; the fd is non-blocking.
        while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        true
    }
}

/// Waits until the next look at the lease: [`POLL`], or less when the lease directory changes.
/// True when `stop` says the process should exit.
fn wait_for_next_look(watch: Option<&DirWatch>, stop: &mut impl FnMut(Duration) -> bool) -> bool {
    let Some(watch) = watch else { return stop(POLL) };
    let deadline = Instant::now() + POLL;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let changed = watch.wait(left.min(SIGNAL_CHECK));
        if stop(Duration::ZERO) {
            return true;
        }
        if changed {
            return false;
        }
    }
}

/// Waits as a standby until this process claims an epoch. `stop` is called between looks,
/// at least every [`SIGNAL_CHECK`] (it returns true when the process should exit instead).
pub fn acquire(
    dir: LeaseDir,
    timing: LeaseTiming,
    owner: &Owner,
    mut stop: impl FnMut(Duration) -> bool,
) -> anyhow::Result<Waited> {
    let claim = owner.to_string();
    let watch = DirWatch::new(&dir.dir);
    let mut watched: Option<(u64, Option<u64>, Instant)> = None;
    let mut announced = false;
    let presence = dir.dir.join(format!("standby-{}-{}", owner.host, owner.pid));
    // Rewritten in place at a fixed width (no truncation: ext4 flushes a truncated-and-rewritten
    // file on close, which stalled the standby for seconds behind the active's syncs).
    let presence_file = OpenOptions::new().create(true).truncate(false).write(true).open(&presence).ok();
    let mut looks = 0u64;
    let mut last_look = Instant::now();
    let result = loop {
        let now = Instant::now();
        if now.duration_since(last_look) > POLL * 10 {
            tracing::warn!(ms = now.duration_since(last_look).as_millis(), "standby looked at the lease late");
        }
        last_look = now;
        if looks.is_multiple_of(STANDBY_BEAT_EVERY) {
            // Proof of life for `ferry ctl handover`, which refuses when no standby would take
            // over. Not synced: only another reader's view of a changing counter matters.
            if let Some(file) = &presence_file {
                let _ = file.write_all_at(format!("{:020}\n", looks / STANDBY_BEAT_EVERY).as_bytes(), 0);
            }
        }
        looks += 1;
        let next = match dir.highest_epoch()? {
            None => Some(1),
            Some(epoch) if dir.exists("released", epoch) => Some(epoch + 1),
            Some(epoch) if dir.owner(epoch).is_some_and(|o| o.is_dead_restart_of(owner)) => {
                tracing::info!(
                    epoch,
                    "the owner was this broker before a crash (same host, boot and listeners, process gone)"
                );
                Some(epoch + 1)
            }
            Some(epoch) => {
                let beat = dir.heartbeat(epoch);
                match watched {
                    Some((e, b, since)) if e == epoch && b == beat => {
                        (now.duration_since(since) > timing.duration + timing.margin).then_some(epoch + 1)
                    }
                    _ => {
                        watched = Some((epoch, beat, now));
                        None
                    }
                }
            }
        };
        if let Some(epoch) = next {
            if dir.claim(epoch, &claim)? {
                tracing::info!(role = "active", epoch, "claimed the lease");
                break ActiveLease::start(dir.clone(), epoch, timing).map(Waited::Active);
            }
            tracing::info!(epoch, "another process claimed the lease first");
            watched = None;
        } else if !announced {
            tracing::info!(role = "standby", lease = %dir.describe()?, "waiting as standby: clients are refused until this process takes over");
            announced = true;
        }
        if wait_for_next_look(watch.as_ref(), &mut stop) {
            break Ok(Waited::Stopped);
        }
    };
    let _ = std::fs::remove_file(&presence);
    result
}

/// Shared between the renew thread and every fence check.
#[derive(Debug)]
struct Held {
    dir: LeaseDir,
    epoch: u64,
    /// `epoch-<epoch + 1>`: the name every fence check looks up, built once.
    successor: PathBuf,
    duration: Duration,
    anchor: Instant,
    /// Start of the last successful renewal, in nanoseconds since `anchor`.
    renewed_ns: AtomicU64,
    lost: AtomicBool,
    stopping: AtomicBool,
}

impl Held {
    fn new(dir: LeaseDir, epoch: u64, duration: Duration) -> Held {
        Held {
            successor: dir.path("epoch", epoch + 1),
            dir,
            epoch,
            duration,
            anchor: Instant::now(),
            renewed_ns: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    fn since_anchor(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.anchor).as_nanos()).unwrap_or(u64::MAX)
    }

    fn renew_deadline_passed(&self, now: Instant) -> bool {
        let renewed = self.renewed_ns.load(Ordering::Acquire);
        self.since_anchor(now) > renewed.saturating_add(u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Steps down for good: nothing more is acknowledged and the process exits.
    fn lose(&self, why: &str) -> ! {
        self.lost.store(true, Ordering::SeqCst);
        tracing::error!(epoch = self.epoch, "lease lost ({why}): stopping without acknowledging anything more");
        std::process::exit(EXIT_LEASE_LOST)
    }
}

impl Fence for Held {
    /// Passes only on a lookup that answered "no such file" for the successor's claim, within
    /// the renew deadline. A lookup that fails otherwise (EIO, ESTALE, a timeout of a soft NFS
    /// mount, ...) proves nothing: it is retried, as a late renewal is waited for, and after a
    /// lease duration of failures the check fails (the log is poisoned and the broker exits).
    fn check(&self) -> Result<(), String> {
        let mut failing_since: Option<Instant> = None;
        loop {
            if self.lost.load(Ordering::SeqCst) {
                return Err(format!("epoch {} lost its lease", self.epoch));
            }
            match std::fs::symlink_metadata(&self.successor) {
                Ok(_) => {
                    self.lost.store(true, Ordering::SeqCst);
                    return Err(format!(
                        "epoch {} exists: this process (epoch {}) was taken over",
                        self.epoch + 1,
                        self.epoch
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !self.renew_deadline_passed(Instant::now()) {
                        return Ok(());
                    }
                    // A late renewal: wait for the renew thread to renew or to give the lease up.
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(|| {
                        tracing::warn!(path = %self.successor.display(), error = %e, "cannot look for a successor; acknowledgements wait");
                        Instant::now()
                    });
                    if since.elapsed() > self.duration {
                        return Err(format!("cannot look for {}: {e}", self.successor.display()));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// This process's epoch, renewed by a background thread until released or lost.
#[derive(Debug)]
pub struct ActiveLease {
    held: Arc<Held>,
}

impl ActiveLease {
    /// Claiming was the first renewal; the heartbeat file is created and old epochs pruned
    /// on the lease thread, so that a takeover does not wait for that file system work (under
    /// heavy fsync traffic on the same disk it took hundreds of milliseconds).
    fn start(dir: LeaseDir, epoch: u64, timing: LeaseTiming) -> anyhow::Result<ActiveLease> {
        let held = Arc::new(Held::new(dir, epoch, timing.duration));
        let renewer = held.clone();
        std::thread::Builder::new()
            .name("ferry-lease".to_owned())
            .spawn(move || {
                let path = renewer.dir.path("heartbeat", renewer.epoch);
                let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path);
                let file = match file.and_then(|f| write_beat(&f, 0).map(|()| f)) {
                    Ok(file) => file,
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "cannot write the heartbeat");
                        // Without a heartbeat a standby takes over after D: stop now.
                        renewer.lose("the heartbeat file cannot be written");
                    }
                };
                renewer.dir.prune_before(renewer.epoch.saturating_sub(1));
                renew_loop(&renewer, &file);
            })
            .context("starting the lease thread")?;
        Ok(ActiveLease { held })
    }

    pub fn epoch(&self) -> Epoch {
        Epoch(self.held.epoch)
    }

    /// The fence every shard log asks before acknowledging.
    pub fn fence(&self) -> Arc<dyn Fence> {
        self.held.clone()
    }

    /// After the final sync of a clean stop: lets a standby take over at once.
    pub fn release(self) -> anyhow::Result<()> {
        self.held.stopping.store(true, Ordering::SeqCst);
        if self.held.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.held.dir.mark("released", self.held.epoch)?;
        tracing::info!(epoch = self.held.epoch, "lease released");
        Ok(())
    }
}

fn write_beat(file: &File, counter: u64) -> std::io::Result<()> {
    file.write_all_at(format!("{counter:020}\n").as_bytes(), 0)?;
    file.sync_data()
}

/// Renews every D/3; watches for a newer epoch and for a handover request (which it turns
/// into the same clean stop as SIGTERM).
fn renew_loop(held: &Held, file: &File) {
    let every = held.duration / 3;
    let mut counter = 0u64;
    let mut handover_asked = false;
    let mut next_renew = Instant::now();
    let watch = DirWatch::new(&held.dir.dir);
    loop {
        match &watch {
            // Woken early by a new claim or a handover request; renewals keep their schedule.
            Some(watch) => {
                watch.wait(POLL.min(every));
            }
            None => std::thread::sleep(POLL.min(every)),
        }
        if held.stopping.load(Ordering::SeqCst) {
            return;
        }
        // Only to notice a takeover early; a failed lookup reading as "no" is safe here.
        if held.successor.exists() {
            held.lose("a newer epoch was claimed");
        }
        if !handover_asked && held.dir.exists("handover", held.epoch) {
            handover_asked = true;
            tracing::info!(epoch = held.epoch, "handover requested: stopping cleanly to release the lease");
            // SAFETY: sending a signal to our own process; the main thread waits for it.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        }
        let now = Instant::now();
        if now < next_renew {
            continue;
        }
        if held.renew_deadline_passed(now) {
            // Acknowledgements wait meanwhile (the fence blocks past the deadline). A standby
            // may have claimed: look with a full directory listing, not a cached lookup.
            tracing::warn!(epoch = held.epoch, "lease renewal is late; checking for a successor");
            match held.dir.highest_epoch() {
                Ok(Some(highest)) if highest > held.epoch => {
                    held.lose("a newer epoch was claimed while renewal was late")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(epoch = held.epoch, error = %e, "cannot read the lease directory");
                    continue;
                }
            }
        }
        counter += 1;
        match write_beat(file, counter) {
            Ok(()) => {
                held.renewed_ns.store(held.since_anchor(now), Ordering::Release);
                next_renew = now + every;
            }
            Err(e) => tracing::error!(epoch = held.epoch, error = %e, "lease renewal failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(dir: &LeaseDir, epoch: u64, duration: Duration) -> Held {
        Held::new(dir.clone(), epoch, duration)
    }

    #[test]
    fn exactly_one_of_many_concurrent_claims_wins() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = LeaseDir::new(data.path()).expect("lease dir");
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let dir = &dir;
                    s.spawn(move || dir.claim(7, &format!("claimant {i}")).expect("claim"))
                })
                .collect();
            handles.into_iter().map(|h| usize::from(h.join().expect("join"))).sum()
        });
        assert_eq!(winners, 1);
        assert_eq!(dir.highest_epoch().expect("read"), Some(7));
        let leftovers = std::fs::read_dir(data.path().join("lease")).expect("ls").count();
        assert_eq!(leftovers, 1, "temp claim files are removed");
    }

    #[test]
    fn a_standby_claims_the_next_epoch_at_once_when_the_owner_released() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = LeaseDir::new(data.path()).expect("lease dir");
        assert!(dir.claim(1, "first").expect("claim"));
        dir.mark("released", 1).expect("release");
        let started = Instant::now();
        let timing = LeaseTiming { duration: Duration::from_secs(60), margin: Duration::from_secs(60) };
        let Waited::Active(lease) = acquire(dir.clone(), timing, &Owner::this("second"), |_| false).expect("acquire")
        else {
            panic!("expected to become active");
        };
        assert_eq!(lease.epoch(), Epoch(2));
        assert!(started.elapsed() < Duration::from_secs(5), "no waiting for expiry after a release");
        lease.release().expect("release");
        assert!(dir.describe().expect("describe").contains("epoch 2 released"));
    }

    #[test]
    fn a_new_owner_keeps_only_the_previous_epoch_s_files() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = LeaseDir::new(data.path()).expect("lease dir");
        for epoch in 1..=4 {
            assert!(dir.claim(epoch, "owner").expect("claim"));
            dir.mark("released", epoch).expect("release");
        }
        let timing = LeaseTiming { duration: Duration::from_secs(60), margin: Duration::from_secs(60) };
        let Waited::Active(lease) = acquire(dir.clone(), timing, &Owner::this("next"), |_| false).expect("acquire")
        else {
            panic!("expected to become active");
        };
        assert_eq!(lease.epoch(), Epoch(5));
        let expected = ["epoch-4", "epoch-5", "heartbeat-5", "released-4"].map(|n| {
            let (what, epoch) = n.split_once('-').expect("dash");
            format!("{what}-{:020}", epoch.parse::<u64>().expect("number"))
        });
        // The lease thread writes the heartbeat and prunes after the claim.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut names: Vec<String> = std::fs::read_dir(&dir.dir)
                .expect("list")
                .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
                .filter(|n| !n.starts_with("standby-"))
                .collect();
            names.sort();
            if names == expected {
                break;
            }
            assert!(Instant::now() < deadline, "lease directory holds {names:?}, expected {expected:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        lease.release().expect("release");
    }

    #[test]
    fn a_standby_waits_out_a_silent_owner_and_can_be_stopped() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = LeaseDir::new(data.path()).expect("lease dir");
        assert!(dir.claim(1, "silent").expect("claim"));
        let timing = LeaseTiming { duration: Duration::from_millis(300), margin: Duration::from_millis(100) };
        let mut polls = 0;
        let stopped = acquire(dir.clone(), timing, &Owner::this("standby"), |_| {
            polls += 1;
            polls > 3
        })
        .expect("acquire");
        assert!(matches!(stopped, Waited::Stopped), "a stop before the lease expires wins");
        let started = Instant::now();
        let Waited::Active(lease) = acquire(dir.clone(), timing, &Owner::this("standby"), |d| {
            std::thread::sleep(d);
            false
        })
        .expect("acquire") else {
            panic!("expected to take over");
        };
        assert!(started.elapsed() >= timing.duration + timing.margin, "took over before D + margin of silence");
        assert_eq!(lease.epoch(), Epoch(2));
        lease.release().expect("release");
    }

    #[test]
    fn the_fence_refuses_once_a_newer_epoch_exists_and_passes_while_renewed() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = LeaseDir::new(data.path()).expect("lease dir");
        assert!(dir.claim(3, "me").expect("claim"));
        let me = held(&dir, 3, Duration::from_secs(60));
        assert_eq!(me.check(), Ok(()));
        assert!(dir.claim(4, "successor").expect("claim"));
        assert!(me.check().is_err());
        assert!(me.check().is_err(), "once lost, always lost");
    }

    #[test]
    fn the_fence_never_passes_on_a_lookup_that_failed() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = LeaseDir::new(data.path()).expect("lease dir");
        assert!(dir.claim(3, "me").expect("claim"));
        let lease = data.path().join("lease");
        let aside = data.path().join("lease-aside");
        // `lease` a plain file: the lookup of `lease/epoch-…4` fails with ENOTDIR, not ENOENT.
        std::fs::rename(&lease, &aside).expect("move the lease dir aside");
        std::fs::write(&lease, b"").expect("a file in its place");
        // Failing for longer than the lease duration: the check fails, it does not pass.
        let short = held(&dir, 3, Duration::from_millis(30));
        let refused = short.check().expect_err("a failed lookup must not pass the fence");
        assert!(refused.contains("cannot look for"), "{refused}");
        // Failing for a moment: the check waits, and passes once the lookup answers again.
        let me = held(&dir, 3, Duration::from_secs(60));
        std::thread::scope(|s| {
            let checking = s.spawn(|| me.check());
            std::thread::sleep(Duration::from_millis(50));
            assert!(!checking.is_finished(), "the fence passed while its lookup failed");
            std::fs::remove_file(&lease).expect("remove the file");
            std::fs::rename(&aside, &lease).expect("restore the lease dir");
            assert_eq!(checking.join().expect("check thread"), Ok(()));
        });
    }

    #[test]
    fn a_crashed_broker_restarting_in_place_takes_its_lease_back_at_once() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = LeaseDir::new(data.path()).expect("lease dir");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        child.wait().expect("reaped");
        let dead = Owner { pid: i32::try_from(child.id()).expect("pid"), ..Owner::this("stomp=127.0.0.1:1") };
        assert!(dir.claim(1, &dead.to_string()).expect("claim"));
        let slow = LeaseTiming { duration: Duration::from_secs(60), margin: Duration::from_secs(60) };
        // Another listener set (a standby beside it) must wait for expiry ...
        let mut looks = 0;
        let waited = acquire(dir.clone(), slow, &Owner::this("stomp=127.0.0.1:2"), |_| {
            looks += 1;
            looks > 3
        })
        .expect("acquire");
        assert!(matches!(waited, Waited::Stopped));
        // ... the same broker restarted does not.
        let Waited::Active(lease) =
            acquire(dir.clone(), slow, &Owner::this("stomp=127.0.0.1:1"), |_| true).expect("acquire")
        else {
            panic!("the restarted broker should take its lease back at once");
        };
        assert_eq!(lease.epoch(), Epoch(2));
        lease.release().expect("release");
        assert_eq!(Owner::parse(&Owner::this("x").to_string()), Some(Owner::this("x")));
    }
}
