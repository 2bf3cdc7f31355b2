//! An idle MQTT connection's state in compact form, while the runtime keeps the connection
//! parked (no task, no buffers: see `runtime::park`). Only a connection with nothing in
//! progress parks — its session quiet, no delivery or publish in flight, nothing queued, no
//! mail — so a resumed connection is the one that was parked.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use ferry_mqtt::{ParkedSession, SessionConfig, Will};

use super::{MqttConn, SessionQueue, Sub};
use crate::auth::Users;
use crate::fastmap::HashMap;
use crate::ids::{ConnectionId, ShardId};
use crate::shard::ShardRef;
use crate::shard::mailbox::Mailbox;

/// See the module docs.
pub struct ParkedMqtt {
    id: ConnectionId,
    shard: ShardRef,
    mailbox: Rc<RefCell<Mailbox>>,
    session: ParkedSession,
    users: Rc<Users>,
    /// Boxed to its length (no spare capacity).
    client_id: Option<Box<str>>,
    registry: ShardId,
    will: Option<Box<Will>>,
    session_expiry: Option<u32>,
    /// Boxed: only subscribers have one.
    queue: Option<Box<SessionQueue>>,
    subs: Vec<Sub>,
    next_consumer: u64,
    next_token: u64,
    credit: u32,
    publisher: bool,
}

impl std::fmt::Debug for ParkedMqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedMqtt").field("id", &self.id).field("client", &self.client_id).finish_non_exhaustive()
    }
}

impl MqttConn {
    /// Nothing in progress: see the module docs.
    pub fn parkable(&self) -> bool {
        self.session.is_quiet()
            && self.inflight.is_empty()
            && self.backlog.is_empty()
            && self.acks.is_empty()
            && !self.taken_over
            && !self.disconnected
            && !self.input_held()
            && self.mailbox.borrow().is_empty()
    }

    /// The compact form; `Err` gives back a connection that is not parkable.
    #[expect(clippy::result_large_err, reason = "the connection goes back to its task by value")]
    pub fn park(self) -> Result<ParkedMqtt, MqttConn> {
        if !self.parkable() {
            return Err(self);
        }
        let session = match self.session.park() {
            Ok(session) => session,
            Err(session) => return Err(MqttConn { session, ..self }),
        };
        let MqttConn {
            id,
            shard,
            mailbox,
            session: _,
            users,
            peer: _,
            client_id,
            registry,
            will,
            session_expiry,
            queue,
            subs,
            next_consumer,
            credit,
            inflight: _,
            backlog: _,
            acks: _,
            next_token,
            taken_over: _,
            disconnected: _,
            publisher,
        } = self;
        Ok(ParkedMqtt {
            id,
            shard,
            mailbox,
            session,
            users,
            client_id: client_id.map(String::into_boxed_str),
            registry,
            will,
            session_expiry,
            queue: queue.map(Box::new),
            subs,
            next_consumer,
            next_token,
            credit,
            publisher,
        })
    }
}

impl ParkedMqtt {
    /// The connection again, as it was parked; `peer` is the socket's address (not kept
    /// while parked: only CONNECT needs it).
    pub fn resume(self, peer: SocketAddr, now: Instant) -> MqttConn {
        let ParkedMqtt {
            id,
            shard,
            mailbox,
            session,
            users,
            client_id,
            registry,
            will,
            session_expiry,
            queue,
            subs,
            next_consumer,
            next_token,
            credit,
            publisher,
        } = self;
        let config = SessionConfig { limits: shard.borrow().limits().clone() };
        MqttConn {
            id,
            shard,
            mailbox,
            session: session.resume(&config, now),
            users,
            peer,
            client_id: client_id.map(String::from),
            registry,
            will,
            session_expiry,
            queue: queue.map(|q| *q),
            subs,
            next_consumer,
            credit,
            inflight: HashMap::default(),
            backlog: Default::default(),
            acks: HashMap::default(),
            next_token,
            taken_over: false,
            disconnected: false,
            publisher,
        }
    }

    /// When the parked connection's keep-alive runs out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }
}

#[cfg(test)]
mod tests {
    /// The parked form is what an idle connection costs: keep it in mimalloc's 192-byte class
    /// with the runtime's socket and flag beside it (docs/PERFORMANCE.md, "Idle connections").
    #[test]
    fn the_parked_form_stays_small() {
        let parked = std::mem::size_of::<super::ParkedMqtt>();
        assert!(parked + 12 <= 192, "ParkedMqtt is {parked} bytes");
    }
}
