//! A quiet session in compact form, for a connection the runtime parks while it is idle: what
//! an idle session must remember (version, keep-alive and when the client last spoke, the
//! topic aliases of both directions, the client's limits, the next packet id) without the
//! room its buffers, queues and in-flight maps take inline. Only a session with nothing
//! buffered, queued, pending or in flight parks, so parking and resuming changes nothing the
//! client can see.

use std::time::Instant;

use super::outbound::ParkedOutbound;
use super::{ConnectState, Session, SessionConfig, SessionLimits};
use crate::packet::Version;

/// See the module docs.
#[derive(Debug)]
pub struct ParkedSession {
    last_received: Instant,
    out: ParkedOutbound,
    /// Client→broker topic aliases; boxed, as most clients set none.
    #[expect(clippy::box_collection, reason = "one pointer inline instead of a Vec")]
    aliases_in: Option<Box<Vec<Option<String>>>>,
    connect_session_expiry: u32,
    keep_alive: u16,
    version: Version,
}

impl Session {
    /// True when the session holds nothing but its settings: CONNECT accepted, open, no input
    /// buffered, no event or output queued, no packet id of either direction in use.
    pub fn is_quiet(&self) -> bool {
        self.connect == ConnectState::Accepted
            && self.reading
            && !self.closed
            && self.input.is_empty()
            && self.events.is_empty()
            && self.output.is_empty()
            && self.inbound.is_empty()
            && self.out.is_quiet()
    }

    /// The compact form of a quiet session (see [`Session::is_quiet`]); `Err` gives back a
    /// session that is not.
    #[expect(clippy::result_large_err, reason = "the session goes back to its owner by value")]
    pub fn park(self) -> Result<ParkedSession, Session> {
        if !self.is_quiet() {
            return Err(self);
        }
        let out = match self.out.park() {
            Ok(out) => out,
            // Unreachable after `is_quiet`, but never lose the session over it.
            Err(out) => return Err(Session { out, ..self }),
        };
        Ok(ParkedSession {
            last_received: self.last_received,
            out,
            aliases_in: (!self.aliases_in.is_empty()).then(|| Box::new(self.aliases_in)),
            connect_session_expiry: self.connect_session_expiry,
            keep_alive: self.keep_alive,
            version: self.version,
        })
    }
}

impl ParkedSession {
    /// The session again, as it was parked; `config` gives the broker's limits (the same ones
    /// the session was made with).
    pub fn resume(self, config: &SessionConfig, now: Instant) -> Session {
        let ParkedSession { last_received, out, aliases_in, connect_session_expiry, keep_alive, version } = self;
        Session {
            limits: SessionLimits::of(&config.limits),
            connect: ConnectState::Accepted,
            version,
            keep_alive,
            last_received,
            connect_session_expiry,
            reading: true,
            closed: false,
            now,
            input: Vec::new(),
            events: Default::default(),
            output: Vec::new(),
            inbound: Default::default(),
            aliases_in: aliases_in.map(|a| *a).unwrap_or_default(),
            out: out.resume(),
        }
    }

    /// When the parked session's keep-alive runs out (as [`Session::poll_timeout`] says).
    pub fn poll_timeout(&self) -> Option<Instant> {
        super::keep_alive_deadline(self.keep_alive, self.last_received)
    }
}
