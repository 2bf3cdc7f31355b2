//! Every bound a peer can push against, in one struct (STYLE §8: "put a limit on everything").
//!
//! Units come first in the names (`frame_size_bytes_max`). Relations between limits are
//! checked once, at start-up, by [`Limits::validate`]. [`Limits::test_min`] makes tests hit
//! the bounds fast. Lives on every shard as a plain copy.

use serde::Deserialize;

/// All per-connection, per-queue and per-shard bounds. Deserialised from the `[limits]` table
/// of the config file; missing fields keep their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame body (message payload) accepted from a peer.
    pub frame_size_bytes_max: usize,
    /// Largest header section (command line + all header lines) of one frame.
    pub frame_header_bytes_max: usize,
    /// Most headers in one frame.
    pub frame_header_count_max: usize,
    /// Most bytes buffered from a peer before a complete frame must have been parsed.
    /// Must hold one maximal frame.
    pub connection_input_bytes_max: usize,
    /// Most encoded bytes waiting to be written to one peer before deliveries to it pause.
    pub connection_output_bytes_max: usize,
    /// Most open connections per shard.
    pub connection_count_max: usize,
    /// Most subscriptions (consumers) one connection may hold.
    pub subscription_count_max: usize,
    /// Most open transactions one connection may hold.
    pub transaction_count_max: usize,
    /// Most operations buffered in one transaction.
    pub transaction_op_count_max: usize,
    /// Most messages a queue holds (ready + unacknowledged) before publishers are refused.
    pub queue_message_count_max: usize,
    /// Flow control: while a queue has consumers, more ready messages than this hold the
    /// publishers feeding it back (their input is not read) until the backlog is down to
    /// half. A queue without consumers never holds anyone. 0 turns flow control off; at or
    /// above `queue_message_count_max` the queue's message limit holds publishers first.
    pub queue_flow_message_count: usize,
    /// Most queues in the broker.
    pub queue_count_max: usize,
    /// Most unacknowledged deliveries a consumer may hold (cap on any prefetch it asks for).
    pub prefetch_count_max: u32,
    /// Prefetch used when a consumer asks for none (and for auto-ack flow control).
    pub prefetch_count_default: u32,
    /// Shortest heart-beat period the broker agrees to, in milliseconds.
    pub heartbeat_ms_min: u32,
    /// Time a peer gets to complete its CONNECT after the socket opens, in milliseconds.
    pub connect_timeout_ms: u32,
    /// Capacity of each cross-shard channel, in messages.
    pub shard_channel_count_max: usize,
    /// Most QoS 1/2 publishes a client may have unacknowledged towards the broker (the MQTT
    /// receive maximum the broker announces).
    pub inflight_count_max: u16,
    /// Longest topic name or filter (MQTT), in bytes.
    pub topic_bytes_max: usize,
    /// Most `/`-separated levels in a topic name or filter (MQTT).
    pub topic_level_count_max: usize,
    /// Most topic aliases a client may set per connection (MQTT 5 topic alias maximum).
    pub topic_alias_count_max: u16,
    /// Longest MQTT keep-alive the broker accepts, in seconds: a 5.0 client asking for more
    /// (or for none) is told this as Server Keep Alive. 0: whatever the client asks.
    pub keep_alive_s_max: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_size_bytes_max: 16 * 1024 * 1024,
            frame_header_bytes_max: 64 * 1024,
            frame_header_count_max: 256,
            connection_input_bytes_max: 16 * 1024 * 1024 + 64 * 1024,
            connection_output_bytes_max: 4 * 1024 * 1024,
            connection_count_max: 65_536,
            subscription_count_max: 1024,
            transaction_count_max: 16,
            transaction_op_count_max: 65_536,
            queue_message_count_max: 1_000_000,
            queue_flow_message_count: 16_384,
            queue_count_max: 100_000,
            prefetch_count_max: 65_535,
            prefetch_count_default: 256,
            heartbeat_ms_min: 100,
            connect_timeout_ms: 10_000,
            shard_channel_count_max: 4096,
            inflight_count_max: 1024,
            topic_bytes_max: 65_535,
            topic_level_count_max: 128,
            topic_alias_count_max: 64,
            keep_alive_s_max: 0,
        }
    }
}

/// A relation between limits that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsError(pub String);

impl std::error::Error for LimitsError {}

impl std::fmt::Display for LimitsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid limits: {}", self.0)
    }
}

impl Limits {
    /// Small limits so tests reach every bound with little traffic.
    pub fn test_min() -> Self {
        Limits {
            frame_size_bytes_max: 64 * 1024,
            frame_header_bytes_max: 4 * 1024,
            frame_header_count_max: 16,
            connection_input_bytes_max: 64 * 1024 + 4 * 1024,
            connection_output_bytes_max: 64 * 1024,
            connection_count_max: 64,
            subscription_count_max: 8,
            transaction_count_max: 2,
            transaction_op_count_max: 16,
            queue_message_count_max: 64,
            queue_flow_message_count: 0,
            queue_count_max: 64,
            prefetch_count_max: 16,
            prefetch_count_default: 4,
            heartbeat_ms_min: 10,
            connect_timeout_ms: 1_000,
            shard_channel_count_max: 16,
            inflight_count_max: 4,
            topic_bytes_max: 256,
            topic_level_count_max: 8,
            topic_alias_count_max: 4,
            keep_alive_s_max: 0,
        }
    }

    /// Checks the relations between limits; called once at start-up.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let check = |ok: bool, what: &str| {
            if ok { Ok(()) } else { Err(LimitsError(what.to_owned())) }
        };
        check(self.frame_size_bytes_max > 0, "frame_size_bytes_max must be > 0")?;
        check(
            self.connection_input_bytes_max >= self.frame_size_bytes_max + self.frame_header_bytes_max,
            "connection_input_bytes_max must hold one maximal frame (body + headers)",
        )?;
        check(self.frame_header_count_max > 0, "frame_header_count_max must be > 0")?;
        check(self.prefetch_count_default > 0, "prefetch_count_default must be > 0")?;
        check(
            self.prefetch_count_default <= self.prefetch_count_max,
            "prefetch_count_default must be <= prefetch_count_max",
        )?;
        check(self.shard_channel_count_max > 0, "shard_channel_count_max must be > 0")?;
        check(self.connection_output_bytes_max > 0, "connection_output_bytes_max must be > 0")?;
        check(self.inflight_count_max > 0, "inflight_count_max must be > 0")?;
        check(self.topic_bytes_max > 0 && self.topic_bytes_max <= 65_535, "topic_bytes_max must be 1..=65535")?;
        check(self.topic_level_count_max > 0, "topic_level_count_max must be > 0")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        Limits::default().validate().expect("default limits");
        Limits::test_min().validate().expect("test limits");
    }

    #[test]
    fn input_buffer_must_hold_a_frame() {
        let limits = Limits { connection_input_bytes_max: 10, ..Limits::default() };
        assert!(limits.validate().is_err());
    }
}
