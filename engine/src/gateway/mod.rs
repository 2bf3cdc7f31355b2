//! Protocol gateways: where a protocol's session events become engine operations and engine
//! output becomes protocol frames (ARCHITECTURE §1: mapping happens only here). One module per
//! protocol; each connection's gateway lives on the connection's shard, owned by its task.
//! [`Gateway`] is the one shape the runtime's connection loop drives.

pub mod amqp091;
pub mod stomp;

use std::future::Future;
use std::time::Instant;

/// One connection's protocol state, as the runtime's read/handle/poll/write loop sees it.
pub trait Gateway {
    /// Bytes a refused connection gets before the socket closes (connection limit reached).
    fn refusal() -> &'static [u8];
    /// Feeds socket bytes and performs every complete frame, in order.
    fn handle_input(&mut self, bytes: &[u8], now: Instant) -> impl Future<Output = ()>;
    /// Moves what the engine has for this connection (deliveries, completions) into output.
    fn drain_mailbox(&mut self);
    /// Appends pending output bytes to `out`.
    fn poll_transmit(&mut self, out: &mut Vec<u8>);
    /// The output was written (flow-control credit may go back).
    fn on_written(&mut self);
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    /// The socket should be flushed and closed.
    fn is_closed(&self) -> bool;
    /// Input must wait (a resource alarm holds publishers back).
    fn input_held(&self) -> bool;
    /// The protocol leaves closing the socket to the peer (AMQP: whoever sent
    /// connection.close closes the socket once close-ok arrives), so the broker waits for the
    /// peer's FIN before sending its own.
    fn peer_closes_first(&self) -> bool {
        false
    }
    /// Releases everything the connection held.
    fn close(self);
}
