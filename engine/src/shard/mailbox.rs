//! A connection's inbox on its own shard: what the engine has for it (deliveries, completed
//! work, server-side cancels). The shard fills it and calls the connection's wake hook; the
//! connection's task drains it. Single-threaded (`Rc`); bounded by consumer credit (deliveries)
//! and by the connection's own outstanding work (completions).

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use crate::error::EngineError;
use crate::fastmap::HashSet;
use crate::ids::ConsumerKey;
use crate::model::queue::Delivery;

/// Items waiting for one connection.
#[derive(Debug, Default)]
pub struct Mailbox {
    pub deliveries: Vec<Delivery>,
    pub completions: Vec<(u64, Result<(), EngineError>)>,
    pub cancelled: Vec<(ConsumerKey, String)>,
    /// Queues that refused a publish of this connection (at their hard limit).
    pub rejected: Vec<String>,
    /// MQTT: another connection took this one's client id over.
    pub taken_over: bool,
    /// Not mail but state, kept across drains: queues whose owners hold this connection's
    /// publishes back (flow control, `model::flow`); its input waits while any does. A set:
    /// one publish can reach many queues (a fanout), each of which may hold it.
    pub flow_held: HashSet<String>,
}

impl Mailbox {
    /// No mail, and no queue holds the connection back.
    pub fn is_idle(&self) -> bool {
        self.is_empty() && self.flow_held.is_empty()
    }

    /// Takes the mail, leaving the flow-control state in place.
    pub fn take(&mut self) -> Mailbox {
        let flow_held = std::mem::take(&mut self.flow_held);
        let mail = std::mem::take(self);
        self.flow_held = flow_held;
        mail
    }

    /// No mail (flow-control state aside).
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
            && self.completions.is_empty()
            && self.cancelled.is_empty()
            && self.rejected.is_empty()
            && !self.taken_over
    }
}

/// How the shard wakes a connection's task: the runtime's wake-up flag itself (one
/// allocation per connection, no closure around it), or any closure (tests).
pub trait Wake {
    fn wake(&self);
}

impl<F: Fn()> Wake for F {
    fn wake(&self) {
        self();
    }
}

/// The shard's handle on a connection: its mailbox and how to wake its task.
#[derive(Clone)]
pub struct ConnHandle {
    pub mailbox: Rc<RefCell<Mailbox>>,
    pub wake: Rc<dyn Wake>,
}

impl fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnHandle").finish_non_exhaustive()
    }
}
