//! `ferry`: the broker binary. Parses flags, loads the optional config file, sets up logging
//! (`RUST_LOG`, default `info`), waits as a standby until it holds the data directory's lease
//! (ARCHITECTURE §5), then hands over to the runtime until SIGINT/SIGTERM (or a handover
//! request) and releases the lease after the final sync. `ferry ctl status|handover` reads or
//! asks the lease of a data directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ferry_engine::admin::{self, Role};
use ferry_engine::config::{BrokerConfig, ListenerProto, Overrides};
use ferry_engine::lease::{self, Activation, LeaseDir, Waited, WarmLogs};
use ferry_engine::standby::Redirector;
use ferry_storage::Tail;

// Every message allocates a few small buffers on some shard and frees them on another;
// glibc malloc spent ~30% of broker CPU on that under load (perf, 1 -> 1 STOMP).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ferry: one broker for STOMP, AMQP, MQTT and OpenWire clients.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file; flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Directory for the log segments (default ./ferry-data).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Shards (executor threads); default: all online CPUs. More than the CPUs is allowed.
    #[arg(long)]
    shards: Option<u16>,
    /// PROTO=HOST:PORT, repeatable; when given, only these listeners open.
    /// PROTO: stomp (amqp, mqtt, openwire, ws, admin are not built yet).
    #[arg(long = "listen", value_name = "PROTO=HOST:PORT")]
    listen: Vec<String>,
    /// Lease duration D in milliseconds (default 2000): a silent active is trusted this long.
    #[arg(long)]
    lease_duration_ms: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operate on a running pair through the data directory's lease.
    Ctl {
        #[command(subcommand)]
        action: Ctl,
    },
}

#[derive(Debug, Subcommand)]
enum Ctl {
    /// Prints the lease: epoch, owner, whether released, heartbeat counter.
    Status,
    /// Asks the active to stop cleanly and release its lease to a standby; waits until a
    /// newer epoch is claimed (or the timeout passes).
    Handover {
        /// Seconds to wait for a standby to take over.
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
        /// Hand over even when no live standby is seen (the broker then stops serving).
        #[arg(long)]
        force: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Idle connections park in bursts and free their tasks: a shard hands those pages back to
    // the system then (see `runtime::park`), which mimalloc otherwise does only on later use.
    ferry_engine::runtime::set_release_hook(|| {
        // SAFETY: plain call into the global allocator; it walks the calling thread's heap.
        unsafe { libmimalloc_sys::mi_collect(false) }
    });
    let signals = ferry_engine::runtime::block_shutdown_signals()?;
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let overrides = Overrides {
        data_dir: cli.data_dir,
        shards: cli.shards,
        listen: cli.listen,
        lease_duration_ms: cli.lease_duration_ms,
    };
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let config = BrokerConfig::build(file.as_deref(), overrides, cpus)?;
    if let Some(Command::Ctl { action }) = cli.command {
        return ctl(&config.data_dir, action);
    }
    let dir = LeaseDir::new(&config.data_dir)?;
    let listeners: Vec<String> = config.listeners.iter().map(|l| format!("{:?}={}", l.proto, l.addr)).collect();
    let owner = lease::Owner::this(&listeners.join(","));
    // A warm standby: its shards are started ahead, and between looks at the lease it reads
    // what the active appended to each log.
    let mut tails: Vec<Tail> = (0..config.shards).map(|i| Tail::new(config.shard_dir(i))).collect();
    let timing = config.lease;
    let status = admin::Status::new(dir.clone(), config.shards, listeners.join(","));
    if let Some(spec) = config.listeners.iter().find(|l| l.proto == ListenerProto::Admin) {
        admin::start(spec.addr, status.clone())?;
    }
    let prepared = ferry_engine::runtime::prepare(config)?;
    // Called every few milliseconds while the lease directory is watched: the logs are read
    // once per lease poll.
    let mut last_read: Option<Instant> = None;
    // Once this process is standby (it looked and did not claim), MQTT clients are told where
    // the active is; stopped before the shards bind the port.
    let mqtt = prepared.listener(ListenerProto::Mqtt);
    let mut redirector: Option<Redirector> = None;
    let mut redirect_tried = false;
    let stop = |timeout| {
        if !redirect_tried {
            redirect_tried = true;
            status.set(Role::Standby, None);
            redirector = mqtt.and_then(|addr| Redirector::start(addr, dir.clone()));
        }
        let started = Instant::now();
        if last_read.is_some_and(|at| started.duration_since(at) < lease::POLL) {
            return ferry_engine::runtime::shutdown_signal_within(&signals, timeout);
        }
        last_read = Some(started);
        for tail in &mut tails {
            if let Err(e) = tail.catch_up() {
                tracing::warn!(dir = %tail.dir().display(), error = %e, "warm standby could not read the log");
            }
        }
        if started.elapsed() > lease::POLL * 4 {
            tracing::warn!(
                ms = started.elapsed().as_millis(),
                "warm standby: reading the logs delayed the look at the lease"
            );
        }
        ferry_engine::runtime::shutdown_signal_within(&signals, timeout)
    };
    let waited = lease::acquire(dir.clone(), timing, &owner, stop);
    if let Some(redirector) = redirector.take() {
        redirector.stop();
    }
    let lease = match waited? {
        Waited::Active(lease) => {
            status.set(Role::Active, Some(lease.epoch().0));
            lease
        }
        Waited::Stopped => {
            tracing::info!("stopped while standby");
            return prepared.stop();
        }
    };
    let activation = Activation { epoch: lease.epoch(), fence: Some(lease.fence()), warm: WarmLogs::new(tails) };
    let result = prepared.run(activation);
    status.set(Role::Stopping, None);
    // After the final sync (or a failed start): a standby may take over at once.
    lease.release()?;
    result
}

fn ctl(data_dir: &Path, action: Ctl) -> anyhow::Result<()> {
    let dir = LeaseDir::new(data_dir)?;
    match action {
        Ctl::Status => println!("{}", dir.describe()?),
        Ctl::Handover { timeout_s, force } => {
            let Some(epoch) = dir.highest_epoch()? else { bail!("no active broker: no epoch was ever claimed") };
            if !force && !dir.live_standby(Duration::from_secs(2))? {
                bail!(
                    "no live standby on {}: nothing would take over (use --force to stop the active anyway)",
                    data_dir.display()
                );
            }
            let asked = Instant::now();
            dir.mark("handover", epoch)?;
            let deadline = asked + Duration::from_secs(timeout_s);
            while dir.highest_epoch()?.unwrap_or(0) <= epoch {
                if Instant::now() > deadline {
                    bail!("epoch {epoch} did not hand over within {timeout_s} s (is a standby running?)");
                }
                std::thread::sleep(lease::POLL / 5);
            }
            println!("handed over from epoch {epoch} in {} ms: {}", asked.elapsed().as_millis(), dir.describe()?);
        }
    }
    Ok(())
}
