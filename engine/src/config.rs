//! Broker configuration: embedded defaults, overridden by a TOML file (`--config`), overridden
//! by command-line flags. Validated once at start-up; then read-only, shared by every shard.
//!
//! ```toml
//! data_dir = "./ferry-data"
//! shards = 2
//! producers_follow_queue = true
//! listen = ["stomp=127.0.0.1:61613"]
//! [limits]
//! frame_size_bytes_max = 65536
//! [[users]]
//! name = "alice"
//! password = "secret"
//! [[placement]]
//! queue = "orders"
//! shard = 1
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_wire::Limits;
use serde::Deserialize;

use crate::auth::User;
use crate::ids::ShardId;
use crate::journal::SyncPolicy;
use crate::lease::LeaseTiming;
use crate::placement::Placement;

/// A protocol a listener serves. Only protocols that are built are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProto {
    Stomp,
    Amqp,
    Mqtt,
    /// The admin HTTP endpoint (served by its own thread, not the shards).
    Admin,
}

impl ListenerProto {
    pub fn name(self) -> &'static str {
        match self {
            ListenerProto::Stomp => "stomp",
            ListenerProto::Amqp => "amqp",
            ListenerProto::Mqtt => "mqtt",
            ListenerProto::Admin => "admin",
        }
    }

    /// Default port (ARCHITECTURE §6).
    pub fn default_port(self) -> u16 {
        match self {
            ListenerProto::Stomp => 61613,
            ListenerProto::Amqp => 5672,
            ListenerProto::Mqtt => 1883,
            ListenerProto::Admin => 8161,
        }
    }
}

/// Protocols named in ARCHITECTURE §6 that this build does not serve yet.
const NOT_YET_BUILT: [&str; 2] = ["openwire", "ws"];

/// One `--listen PROTO=HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub proto: ListenerProto,
    pub addr: SocketAddr,
}

impl ListenerSpec {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (proto, addr) = text.split_once('=').context("expected PROTO=HOST:PORT, e.g. stomp=127.0.0.1:61613")?;
        let proto = match proto {
            "stomp" => ListenerProto::Stomp,
            "amqp" => ListenerProto::Amqp,
            "mqtt" => ListenerProto::Mqtt,
            "admin" => ListenerProto::Admin,
            p if NOT_YET_BUILT.contains(&p) => {
                bail!("protocol '{p}' is not built yet in this version of ferry (available: stomp, amqp, mqtt, admin)")
            }
            p => bail!("unknown protocol '{p}' (known: stomp, amqp, mqtt, openwire, ws, admin)"),
        };
        let addr = addr.parse().with_context(|| format!("bad listen address '{addr}'"))?;
        Ok(ListenerSpec { proto, addr })
    }
}

/// `[[placement]]` override.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementOverride {
    pub queue: String,
    pub shard: u16,
}

/// The config file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub shards: Option<u16>,
    pub listen: Vec<String>,
    pub limits: Limits,
    pub users: Vec<User>,
    pub placement: Vec<PlacementOverride>,
    pub spin_before_park_us: Option<u64>,
    pub producers_follow_queue: Option<bool>,
    pub segment_size_bytes: Option<u64>,
    pub sync: SyncPolicy,
    pub group_commit_wait_us: Option<u64>,
    pub disk_budget_bytes: Option<u64>,
    pub disk_free_bytes_min: Option<u64>,
    pub lease_duration_ms: Option<u64>,
    pub lease_margin_ms: Option<u64>,
}

/// Flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub shards: Option<u16>,
    pub listen: Vec<String>,
    pub lease_duration_ms: Option<u64>,
}

/// The validated configuration every shard reads.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub shards: u16,
    pub listeners: Vec<ListenerSpec>,
    pub limits: Limits,
    pub users: Vec<User>,
    pub placement_overrides: HashMap<String, ShardId>,
    pub spin_before_park: Option<Duration>,
    /// Whether a producer confirming a run of persistent sends to one queue moves to that
    /// queue's shard (default on).
    pub producers_follow_queue: bool,
    /// Size of each log segment file; must hold the largest frame.
    pub segment_size_bytes: u64,
    /// When persistent messages are confirmed (default: after the sync).
    pub sync: SyncPolicy,
    /// Longest a sync waits for the producers the last one released to send again (the
    /// wait is also capped by the recent sync time; zero: never wait). See `crate::gather`.
    pub group_commit_wait: Duration,
    /// Most bytes of log segments all shards together may hold (0 = no budget).
    pub disk_budget_bytes: u64,
    /// Publishers are held back while the data dir's file system has less free space.
    pub disk_free_bytes_min: u64,
    /// Active/standby lease timing (ARCHITECTURE §5).
    pub lease: LeaseTiming,
}

/// Default free-space floor: RabbitMQ's `disk_free_limit` is 50 MB; one segment more.
pub const DISK_FREE_BYTES_MIN_DEFAULT: u64 = 128 * 1024 * 1024;

/// Default cap on a group commit's wait for its siblings (the recent sync time caps it too).
pub const GROUP_COMMIT_WAIT_US_DEFAULT: u64 = 1000;
/// Largest `group_commit_wait_us` accepted: every confirm may wait this long.
pub const GROUP_COMMIT_WAIT_US_MAX: u64 = 100_000;

/// Most shards a broker runs (placement uses `u16`; this bounds memory per shard mesh).
pub const SHARD_COUNT_MAX: u16 = 256;

impl BrokerConfig {
    /// Builds the config from an optional file's text and the flags.
    pub fn build(file: Option<&str>, flags: Overrides, online_cpus: usize) -> anyhow::Result<Self> {
        let file: FileConfig = match file {
            Some(text) => toml::from_str(text).context("parsing the config file")?,
            None => FileConfig::default(),
        };
        let default_shards = u16::try_from(online_cpus.max(1)).unwrap_or(SHARD_COUNT_MAX);
        let shards = flags.shards.or(file.shards).unwrap_or(default_shards);
        if shards == 0 || shards > SHARD_COUNT_MAX {
            bail!("shards must be between 1 and {SHARD_COUNT_MAX}, got {shards}");
        }
        let listen = if flags.listen.is_empty() { file.listen } else { flags.listen };
        let listeners = if listen.is_empty() {
            [ListenerProto::Stomp, ListenerProto::Amqp, ListenerProto::Mqtt, ListenerProto::Admin]
                .into_iter()
                .map(|proto| {
                    // The admin endpoint has no authentication yet: loopback unless configured.
                    let ip = if proto == ListenerProto::Admin { [127, 0, 0, 1] } else { [0, 0, 0, 0] };
                    ListenerSpec { proto, addr: SocketAddr::from((ip, proto.default_port())) }
                })
                .collect()
        } else {
            listen.iter().map(|l| ListenerSpec::parse(l)).collect::<anyhow::Result<_>>()?
        };
        file.limits.validate()?;
        let mut placement_overrides = HashMap::new();
        for p in file.placement {
            if p.shard >= shards {
                bail!("placement of queue '{}' names shard {} but only {shards} shards run", p.queue, p.shard);
            }
            placement_overrides.insert(p.queue, ShardId(p.shard));
        }
        let segment_size_bytes = file.segment_size_bytes.unwrap_or(ferry_storage::SEGMENT_SIZE_BYTES_DEFAULT);
        let largest_record = file.limits.frame_size_bytes_max as u64 + file.limits.frame_header_bytes_max as u64 + 4096;
        if segment_size_bytes < largest_record {
            bail!(
                "segment_size_bytes ({segment_size_bytes}) must hold the largest frame ({largest_record} bytes with overhead)"
            );
        }
        let group_commit_wait_us = file.group_commit_wait_us.unwrap_or(GROUP_COMMIT_WAIT_US_DEFAULT);
        if group_commit_wait_us > GROUP_COMMIT_WAIT_US_MAX {
            bail!("group_commit_wait_us must be at most {GROUP_COMMIT_WAIT_US_MAX}, got {group_commit_wait_us}");
        }
        let lease_duration_ms = flags.lease_duration_ms.or(file.lease_duration_ms).unwrap_or(2000);
        if !(300..=600_000).contains(&lease_duration_ms) {
            bail!("lease_duration_ms must be between 300 and 600000, got {lease_duration_ms}");
        }
        let lease = LeaseTiming {
            duration: Duration::from_millis(lease_duration_ms),
            margin: Duration::from_millis(file.lease_margin_ms.unwrap_or(lease_duration_ms / 10)),
        };
        Ok(BrokerConfig {
            data_dir: flags.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./ferry-data")),
            shards,
            listeners,
            limits: file.limits,
            users: file.users,
            placement_overrides,
            spin_before_park: file.spin_before_park_us.map(Duration::from_micros),
            producers_follow_queue: file.producers_follow_queue.unwrap_or(true),
            segment_size_bytes,
            sync: file.sync,
            group_commit_wait: Duration::from_micros(group_commit_wait_us),
            disk_budget_bytes: file.disk_budget_bytes.unwrap_or(0),
            disk_free_bytes_min: file.disk_free_bytes_min.unwrap_or(DISK_FREE_BYTES_MIN_DEFAULT),
            lease,
        })
    }

    /// The log directory of shard `index`.
    pub fn shard_dir(&self, index: u16) -> PathBuf {
        self.data_dir.join(format!("shard-{index}"))
    }

    pub fn placement(&self) -> Placement {
        Placement::new(self.shards, self.placement_overrides.clone())
            .with_producers_following_queue(self.producers_follow_queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_open_the_stomp_port_on_all_cpus() {
        let c = BrokerConfig::build(None, Overrides::default(), 4).expect("valid");
        assert_eq!(c.shards, 4);
        assert_eq!(c.listeners[0].addr.port(), 61613);
        assert_eq!(c.data_dir, PathBuf::from("./ferry-data"));
        let admin = c.listeners.iter().find(|l| l.proto == ListenerProto::Admin).expect("admin by default");
        assert_eq!(
            admin.addr,
            "127.0.0.1:8161".parse::<SocketAddr>().expect("addr"),
            "admin is loopback-only by default"
        );
    }

    #[test]
    fn flags_override_the_file() {
        let file = "shards = 3\nlisten = [\"stomp=127.0.0.1:1\"]\n[limits]\nframe_size_bytes_max = 1000\n";
        let flags = Overrides { shards: Some(2), listen: vec!["stomp=127.0.0.1:2".into()], ..Overrides::default() };
        let c = BrokerConfig::build(Some(file), flags, 8).expect("valid");
        assert_eq!(c.shards, 2);
        assert_eq!(c.listeners[0].addr.port(), 2);
        assert_eq!(c.limits.frame_size_bytes_max, 1000);
    }

    #[test]
    fn sync_policy_defaults_to_ack_after_sync() {
        let c = BrokerConfig::build(None, Overrides::default(), 1).expect("valid");
        assert_eq!(c.sync, SyncPolicy::AckAfterSync);
        let c = BrokerConfig::build(Some("sync = \"ack-before-sync\""), Overrides::default(), 1).expect("valid");
        assert_eq!(c.sync, SyncPolicy::AckBeforeSync);
        assert!(BrokerConfig::build(Some("sync = \"sometimes\""), Overrides::default(), 1).is_err());
    }

    #[test]
    fn group_commit_wait_defaults_to_a_millisecond_and_is_bounded() {
        let c = BrokerConfig::build(None, Overrides::default(), 1).expect("valid");
        assert_eq!(c.group_commit_wait, Duration::from_micros(GROUP_COMMIT_WAIT_US_DEFAULT));
        let c = BrokerConfig::build(Some("group_commit_wait_us = 0"), Overrides::default(), 1).expect("valid");
        assert!(c.group_commit_wait.is_zero());
        let too_long = format!("group_commit_wait_us = {}", GROUP_COMMIT_WAIT_US_MAX + 1);
        assert!(BrokerConfig::build(Some(&too_long), Overrides::default(), 1).is_err());
    }

    #[test]
    fn producers_follow_their_queue_unless_the_file_says_not() {
        let c = BrokerConfig::build(None, Overrides::default(), 2).expect("valid");
        assert!(c.placement().producers_follow_queue());
        let c = BrokerConfig::build(Some("producers_follow_queue = false"), Overrides::default(), 2).expect("valid");
        assert!(!c.placement().producers_follow_queue());
    }

    #[test]
    fn rejects_unbuilt_protocols_unknown_keys_and_bad_placement() {
        let err = ListenerSpec::parse("openwire=127.0.0.1:61616").expect_err("not built");
        assert!(err.to_string().contains("not built yet"));
        let mqtt = ListenerSpec::parse("mqtt=127.0.0.1:1883").expect("mqtt is built");
        assert_eq!((mqtt.proto, mqtt.addr.port()), (ListenerProto::Mqtt, 1883));
        assert!(BrokerConfig::build(Some("bogus = 1"), Overrides::default(), 1).is_err());
        assert!(BrokerConfig::build(Some("[limits]\nbogus_max = 1"), Overrides::default(), 1).is_err());
        let file = "shards = 2\n[[placement]]\nqueue = \"q\"\nshard = 5\n";
        assert!(BrokerConfig::build(Some(file), Overrides::default(), 1).is_err());
        assert!(BrokerConfig::build(None, Overrides { shards: Some(0), ..Overrides::default() }, 1).is_err());
    }
}
