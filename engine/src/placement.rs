//! Where a queue lives: a pure function of (vhost, name, partition, shard count), overridable
//! per queue in config (`[[placement]] queue = "orders" shard = 1`). Every shard computes the
//! same answer, so routing never asks anyone. Server-named queues pick a name that places them
//! on the declaring connection's shard (see [`Placement::name_for_shard`]).
//! It also carries the one connection-placement policy operators set: whether confirming
//! producers follow their queue (`producers_follow_queue`).

use std::collections::HashMap;

use crate::ids::ShardId;

/// The placement function plus operator overrides. Cheap to clone; one copy per shard.
#[derive(Debug, Clone)]
pub struct Placement {
    shard_count: u16,
    overrides: HashMap<String, ShardId>,
    producers_follow_queue: bool,
}

impl Placement {
    /// `overrides` name shards that must exist; checked by the config loader.
    pub fn new(shard_count: u16, overrides: HashMap<String, ShardId>) -> Self {
        assert!(shard_count > 0, "at least one shard");
        for shard in overrides.values() {
            assert!(shard.0 < shard_count, "override names a shard that does not exist");
        }
        Placement { shard_count, overrides, producers_follow_queue: true }
    }

    /// Whether a confirming producer moves to its queue's shard (config
    /// `producers_follow_queue`, default on; see `gateway::ConfirmedRun`).
    pub fn with_producers_following_queue(mut self, on: bool) -> Self {
        self.producers_follow_queue = on;
        self
    }

    pub fn producers_follow_queue(&self) -> bool {
        self.producers_follow_queue
    }

    pub fn shard_count(&self) -> u16 {
        self.shard_count
    }

    /// The owning shard of partition `partition` of queue `name` in `vhost`.
    pub fn place(&self, vhost: &str, name: &str, partition: u32) -> ShardId {
        if let Some(shard) = self.overrides.get(name) {
            return *shard;
        }
        let mut hash = Fnv1a::new();
        hash.write(vhost.as_bytes());
        hash.write(&[0]);
        hash.write(name.as_bytes());
        hash.write(&partition.to_le_bytes());
        let index = hash.finish() % u64::from(self.shard_count);
        ShardId(u16::try_from(index).expect("index < shard_count fits u16"))
    }

    /// A server-generated queue name (`amq.gen-…`) that places on `shard`, so private queues
    /// (topic subscriptions, temp queues) live beside their connection. `seed` must differ per
    /// call; with N shards this takes about N tries.
    pub fn name_for_shard(&self, vhost: &str, shard: ShardId, seed: u64) -> String {
        let mut attempt = seed;
        loop {
            let name = format!("amq.gen-{:016x}", mix(attempt));
            if !self.overrides.contains_key(&name) && self.place(vhost, &name, 0) == shard {
                return name;
            }
            attempt = attempt.wrapping_add(0x9E37_79B9_7F4A_7C15);
        }
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, which placement needs.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// splitmix64 finaliser: spreads sequential seeds over the name space.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_in_range() {
        let p = Placement::new(4, HashMap::new());
        for i in 0..1000 {
            let name = format!("q{i}");
            let shard = p.place("/", &name, 0);
            assert!(shard.0 < 4);
            assert_eq!(shard, p.place("/", &name, 0));
        }
    }

    #[test]
    fn placement_spreads_queues() {
        let p = Placement::new(4, HashMap::new());
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[p.place("/", &format!("queue-{i}"), 0).index()] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
    }

    #[test]
    fn override_wins() {
        let p = Placement::new(2, HashMap::from([("orders".to_owned(), ShardId(1))]));
        assert_eq!(p.place("/", "orders", 0), ShardId(1));
    }

    #[test]
    fn generated_names_land_on_the_asked_shard() {
        let p = Placement::new(3, HashMap::new());
        for seed in 0..50 {
            let shard = ShardId((seed % 3) as u16);
            let name = p.name_for_shard("/", shard, seed);
            assert_eq!(p.place("/", &name, 0), shard);
        }
    }
}
