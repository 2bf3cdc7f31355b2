//! The runtime: the only module that names glommio (STYLE §11). It starts one pinned executor
//! per shard, joins them in a full mesh of bounded channels carrying `Vec<ShardMsg>` batches,
//! runs each shard's housekeeping tasks (mesh receivers, the outbox flusher, the journal
//! committer), binds every listener on every shard with SO_REUSEPORT, spreads the accepted
//! connections evenly over the shards ([`spread`]), and drives each connection's gateway from
//! a short read/handle/poll/write loop ([`conn`]).

mod batches;
mod conn;
mod evidence;
mod listeners;
mod memlock;
mod notify;
mod park;
mod reactor_turn;
mod resources;
mod shard_tasks;
mod spread;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use anyhow::bail;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement as CpuPlacement};

use crate::config::BrokerConfig;
use crate::lease::Activation;
use crate::shard::msg::ShardMsg;

pub use memlock::{has_ipc_lock, io_memory_for, memlock_limit_bytes};
pub use park::{parked_total, set_release_hook};

/// The connection counts of the shards started last (see [`connections_per_shard`]).
static SPREAD: std::sync::Mutex<Option<Arc<spread::Spread>>> = std::sync::Mutex::new(None);

/// How many connections each shard serves (empty before the shards start).
pub fn connections_per_shard() -> Vec<usize> {
    let spread = SPREAD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    spread.as_ref().map(|spread| spread.counts()).unwrap_or_default()
}

/// Set once SIGINT/SIGTERM arrives; every shard polls it and winds down.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// A shard that has not opened its log and listeners after this long is reported and the
/// process stops (rather than hold the lease without serving).
const START_TIMEOUT: Duration = Duration::from_secs(600);

/// How often idle shards look at the shutdown flag (a clean stop or handover waits for it).
const SHUTDOWN_POLL: Duration = Duration::from_millis(10);

/// Executors started ahead of the lease: each has joined the mesh and waits, logs unopened
/// and listeners closed, for [`Prepared::run`] (or [`Prepared::stop`]).
pub struct Prepared {
    config: Arc<BrokerConfig>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    ready: mpsc::Receiver<Result<(), String>>,
    activation: Arc<OnceLock<Activation>>,
    shards: u16,
    io_memory: usize,
}

/// Starts one pinned executor per shard. They wait for [`Prepared::run`]: a standby calls
/// this before it waits for the lease, so that taking over only opens logs and listeners.
pub fn prepare(config: BrokerConfig) -> anyhow::Result<Prepared> {
    block_shutdown_signals()?;
    if let Some(index) = log_beyond_shard_count(&config.data_dir, config.shards) {
        // Only shards below the count open their logs: started like this, the queues and
        // messages in that log would silently disappear (and come back, stale, at the next
        // start with more shards).
        bail!(
            "{} holds the log of shard {index}, but this process runs {} shards: its queues and              messages would be ignored. Start with --shards {} or more (queues then re-place on              recovery), or remove that directory if nothing in it is needed",
            config.shard_dir(index).display(),
            config.shards,
            index + 1,
        );
    }
    let config = Arc::new(config);
    let shards = config.shards;
    let memlock = memlock_limit_bytes();
    if memlock < memlock::GLOMMIO_MEMLOCK_MIN_BYTES && !has_ipc_lock() {
        bail!("RLIMIT_MEMLOCK is {memlock} bytes; glommio needs at least 512 KiB (raise it with `ulimit -l`)");
    }
    let (io_memory, warning) = io_memory_for(shards, memlock, has_ipc_lock());
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let cpus = online_cpus();
    let mesh: MeshBuilder<Vec<ShardMsg>, _> =
        MeshBuilder::full(usize::from(shards), config.limits.shard_channel_count_max);
    let batches = Arc::new(batches::BatchPool::new(usize::from(shards)));
    let handoffs: MeshBuilder<spread::Handoff, _> =
        MeshBuilder::full(usize::from(shards), spread::HANDOFF_CHANNEL_CAPACITY);
    let spread = Arc::new(spread::Spread::new(usize::from(shards)));
    *SPREAD.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(spread.clone());
    let (ready_tx, ready) = mpsc::channel::<Result<(), String>>();
    let activation = Arc::new(OnceLock::new());
    let evidence = Arc::new(evidence::Evidence::new(usize::from(shards)));
    let mut handles = Vec::new();
    for index in 0..usize::from(shards) {
        let cpu = cpus[index % cpus.len()];
        let (config, mesh, ready, activation) = (config.clone(), mesh.clone(), ready_tx.clone(), activation.clone());
        let (batches, handoffs, spread, evidence) =
            (batches.clone(), handoffs.clone(), spread.clone(), evidence.clone());
        let mut builder = LocalExecutorBuilder::new(CpuPlacement::Fixed(cpu))
            .name(&format!("ferry-shard-{index}"))
            .io_memory(io_memory)
            // The blocking thread runs the shard's syncs (msync + fence check). Pinned to the
            // shard's own core (glommio's default) it waits for that busy core after every
            // disk completion: msync measured 0.89 ms there against 0.47-0.52 ms unbound
            // (docs/PERFORMANCE.md, "Durable confirms with 16 producers").
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(1));
        if let Some(spin) = config.spin_before_park {
            builder = builder.spin_before_park(spin);
        }
        let handle = builder
            .spawn(move || {
                shard_tasks::shard_main(config, activation, mesh, batches, (handoffs, spread), evidence, ready)
            })
            .map_err(|e| anyhow::anyhow!("starting executor for shard {index} on cpu {cpu}: {e}"))?;
        handles.push(handle);
    }
    Ok(Prepared { config, handles, ready, activation, shards, io_memory })
}

/// The highest-numbered shard directory at or beyond `shards` that holds log segments.
fn log_beyond_shard_count(data_dir: &std::path::Path, shards: u16) -> Option<u16> {
    let entries = std::fs::read_dir(data_dir).ok()?;
    let indexes = entries.filter_map(|e| {
        let entry = e.ok()?;
        let index: u16 = entry.file_name().to_str()?.strip_prefix("shard-")?.parse().ok()?;
        let has_segments = std::fs::read_dir(entry.path())
            .ok()?
            .filter_map(Result::ok)
            .any(|f| f.path().extension().is_some_and(|x| x == "seg"));
        (index >= shards && has_segments).then_some(index)
    });
    indexes.max()
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("shards", &self.shards).field("io_memory", &self.io_memory).finish()
    }
}

impl Prepared {
    /// The address this process will listen on for `proto`, if configured.
    pub fn listener(&self, proto: crate::config::ListenerProto) -> Option<std::net::SocketAddr> {
        self.config.listeners.iter().find(|l| l.proto == proto).map(|l| l.addr)
    }

    /// Opens the logs with `activation`'s epoch and fence, serves until SIGINT or SIGTERM, and
    /// returns after every shard stopped (final syncs done).
    pub fn run(self, activation: Activation) -> anyhow::Result<()> {
        let signals = block_shutdown_signals()?;
        // The admin endpoint is this process's own (bound since start-up).
        for listener in self.config.listeners.iter().filter(|l| l.proto != crate::config::ListenerProto::Admin) {
            if let Err(e) = listeners::ensure_unused(listener.addr) {
                self.stop()?;
                return Err(e);
            }
        }
        let _ = self.activation.set(activation);
        for started in 0..self.shards {
            match self.ready.recv_timeout(START_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => bail!("{e}"),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("only {started} of {} shards started within {START_TIMEOUT:?}", self.shards)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("a shard exited during start-up"),
            }
        }
        tracing::info!(shards = self.shards, io_memory = self.io_memory, "ferry is ready");
        let signal = wait_for_signal(&signals);
        tracing::info!(signal, "shutting down");
        self.stop()?;
        tracing::info!("stopped");
        Ok(())
    }

    /// Stops the executors (waiting ones included) and joins them.
    pub fn stop(self) -> anyhow::Result<()> {
        SHUTDOWN.store(true, Ordering::SeqCst);
        for handle in self.handles {
            handle.join().map_err(|e| anyhow::anyhow!("shard failed: {e}"))?;
        }
        Ok(())
    }
}

pub(crate) fn shutting_down() -> bool {
    SHUTDOWN.load(Ordering::Relaxed)
}

fn online_cpus() -> Vec<usize> {
    match glommio::CpuSet::online() {
        Ok(set) => {
            let cpus: Vec<usize> = set.into_iter().map(|l| l.cpu).collect();
            if cpus.is_empty() { vec![0] } else { cpus }
        }
        Err(_) => vec![0],
    }
}

/// Blocks SIGINT/SIGTERM in this thread (and so in every thread spawned after) so that only
/// `wait_for_signal` (or [`shutdown_signal_within`]) receives them. Call it before starting
/// any thread; calling it again is harmless.
pub fn block_shutdown_signals() -> anyhow::Result<libc::sigset_t> {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("pthread_sigmask failed: {rc}");
        }
        Ok(set)
    }
}

/// Waits up to `timeout` for SIGINT/SIGTERM (blocked by [`block_shutdown_signals`]); true
/// when one arrived. A standby sleeps in this between looks at the lease.
pub fn shutdown_signal_within(set: &libc::sigset_t, timeout: Duration) -> bool {
    let timeout = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(i32::try_from(timeout.subsec_nanos()).unwrap_or(0)),
    };
    // SAFETY: `set` is a valid, initialised signal set; a null info pointer is allowed.
    let rc = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
    rc == libc::SIGINT || rc == libc::SIGTERM
}

fn wait_for_signal(set: &libc::sigset_t) -> &'static str {
    loop {
        let mut signal: libc::c_int = 0;
        // SAFETY: `set` is a valid, initialised signal set; sigwait writes the signal number.
        let rc = unsafe { libc::sigwait(set, &mut signal) };
        if rc == 0 {
            return if signal == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
        }
    }
}
