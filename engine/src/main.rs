//! `ferry`: the broker binary. Parses flags, loads the optional config file, sets up logging
//! (`RUST_LOG`, default `info`) and hands over to the runtime until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ferry_engine::config::{BrokerConfig, Overrides};

// Every message allocates a few small buffers on some shard and frees them on another;
// glibc malloc spent ~30% of broker CPU on that under load (perf, 1 -> 1 STOMP).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ferry: one broker for STOMP, AMQP, MQTT and OpenWire clients.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the log segments (default ./ferry-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shards (executor threads); default: all online CPUs. More than the CPUs is allowed.
    #[arg(long)]
    shards: Option<u16>,
    /// PROTO=HOST:PORT, repeatable; when given, only these listeners open.
    /// PROTO: stomp (amqp, mqtt, openwire, ws, admin are not built yet).
    #[arg(long = "listen", value_name = "PROTO=HOST:PORT")]
    listen: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let overrides = Overrides { data_dir: cli.data_dir, shards: cli.shards, listen: cli.listen };
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let config = BrokerConfig::build(file.as_deref(), overrides, cpus)?;
    let _lock = ferry_engine::datadir::lock(&config.data_dir)?;
    ferry_engine::runtime::run(config)
}
