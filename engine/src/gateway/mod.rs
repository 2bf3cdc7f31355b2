//! Protocol gateways: where a protocol's session events become engine operations and engine
//! output becomes protocol frames (ARCHITECTURE §1: mapping happens only here). One module per
//! protocol; each connection's gateway lives on the connection's shard, owned by its task.

pub mod stomp;
