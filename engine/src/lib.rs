//! Ferry's broker engine: thread-per-core shards owning queues, a routing table copied to
//! every shard, protocol gateways, and the glommio runtime that drives them (ARCHITECTURE §2).
//! Everything but `runtime` is runtime-free and can be driven directly by tests.

pub mod admin;
pub mod auth;
pub mod config;
pub mod error;
pub mod fastmap;
pub mod gateway;
pub mod gather;
pub mod ids;
pub mod journal;
pub mod lease;
pub mod model;
pub mod placement;
pub mod runtime;
pub mod shard;
pub mod standby;
pub mod sync_time;
