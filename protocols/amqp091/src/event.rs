//! What a [`crate::Connection`] tells the engine: one [`Event`] per thing the client did that
//! the engine must act on, in the order the client did it. Pure data.

use bytes::Bytes;

use crate::generated::{BasicProperties, BasicPublish, Method};

/// An event for the engine.
// `Publish` carries its properties boxed: the box is the one the content header was decoded
// into, and an inline `BasicProperties` (288 bytes) made every event 384 bytes, copied at
// each move (queue in, queue out, into the gateway): memcpy was a fifth of a shard's samples.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// connection.start-ok with a supported mechanism: PLAIN (`\0user\0pass`) or AMQPLAIN
    /// (table with LOGIN and PASSWORD). Answer with `accept_login` or `refuse_login`.
    Login { mechanism: String, username: String, password: String },
    /// connection.open. Answer with `accept_open` (or `close_connection`, e.g. 530 for an
    /// unknown vhost).
    Open { vhost: String },
    /// channel.open was answered with open-ok; for bookkeeping.
    ChannelOpened { channel: u16 },
    /// The client closed the channel (close-ok already sent), or our channel.close completed.
    ChannelClosed { channel: u16 },
    /// Any other method on an open channel (queue.*, exchange.*, basic.* except publish,
    /// confirm.*, tx.*, channel.flow / flow-ok); the engine replies with `send_method`.
    Method { channel: u16, method: Method },
    /// basic.publish with its complete content.
    Publish { channel: u16, method: BasicPublish, properties: Box<BasicProperties>, body: Bytes },
    /// The connection is over: the client closed it (close-ok sent), a protocol error closed
    /// it (connection.close sent), the engine closed it, the heartbeat or handshake timed out,
    /// or the protocol header was refused. Emitted exactly once; nothing follows it.
    Closed { reason: String },
}
