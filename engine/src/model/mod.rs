//! The broker's one message model (ARCHITECTURE §3): exchanges -> bindings -> queues.
//! Protocol-neutral; the gateways map their protocols onto it. Plain data and logic, no I/O.

pub mod exchange;
pub mod flow;
pub mod message;
pub mod queue;
pub mod queue_args;
pub mod ready;
pub mod routing;
pub mod tags;
pub mod topic;
pub mod topic_trie;
