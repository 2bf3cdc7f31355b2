//! The routing table: exchanges, bindings and queue metadata (who owns each queue). A full
//! copy lives on every shard, stamped with a revision; only the metadata authority (shard 0)
//! validates changes ([`RoutingTable::validate`]) and every shard applies the same validated
//! [`MetaOp`]s in the same order ([`RoutingTable::apply`]).

use crate::error::{EngineError, ErrorKind};
use crate::fastmap::HashMap;
use crate::ids::{ConnectionId, ShardId};
use crate::model::exchange::{Exchange, ExchangeKind, ExchangeSpec};
use crate::model::queue_args::QueueArgs;

/// Declared properties of a queue, as every shard knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive: Option<ConnectionId>,
    pub arguments: Vec<(String, String)>,
    /// Owning shard, fixed at declaration by the placement function.
    pub shard: ShardId,
}

/// A change to routing metadata. Validated by the authority, then applied everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOp {
    /// `by`: the declaring connection (an exclusive queue admits only its owner).
    DeclareQueue {
        spec: QueueSpec,
        passive: bool,
        by: Option<ConnectionId>,
    },
    DeleteQueue {
        name: String,
    },
    DeclareExchange {
        spec: ExchangeSpec,
        passive: bool,
    },
    DeleteExchange {
        name: String,
    },
    Bind {
        exchange: String,
        queue: String,
        key: String,
        arguments: Vec<(String, String)>,
    },
    Unbind {
        exchange: String,
        queue: String,
        key: String,
        arguments: Vec<(String, String)>,
    },
}

/// What a validated op did (so apply can skip no-ops and callers learn queue owners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOutcome {
    /// Nothing changed (redeclaration, passive check, binding already present).
    Unchanged,
    Changed,
}

/// Exchanges, bindings and queue metadata for one vhost.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    revision: u64,
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, QueueSpec>,
}

/// The exchanges every vhost starts with.
const STANDARD_EXCHANGES: [(&str, ExchangeKind); 5] = [
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

impl Default for RoutingTable {
    fn default() -> Self {
        let mut exchanges = HashMap::default();
        for (name, kind) in STANDARD_EXCHANGES {
            let spec = ExchangeSpec { name: name.to_owned(), kind, durable: true, auto_delete: false, internal: false };
            exchanges.insert(name.to_owned(), Exchange::new(spec));
        }
        RoutingTable { revision: 0, exchanges, queues: HashMap::default() }
    }
}

impl RoutingTable {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn queue(&self, name: &str) -> Option<&QueueSpec> {
        self.queues.get(name)
    }

    pub fn queues(&self) -> impl Iterator<Item = &QueueSpec> {
        self.queues.values()
    }

    pub fn exchange(&self, name: &str) -> Option<&Exchange> {
        self.exchanges.get(name)
    }

    /// Every binding to `queue`, as the `MetaOp::Bind`s that would recreate it.
    pub fn bindings_of(&self, queue: &str) -> Vec<MetaOp> {
        let mut out = Vec::new();
        for (name, ex) in &self.exchanges {
            for b in ex.bindings().iter().filter(|b| b.queue == queue) {
                let (exchange, key, arguments) = (name.clone(), b.key.clone(), b.arguments.clone());
                out.push(MetaOp::Bind { exchange, queue: queue.to_owned(), key, arguments });
            }
        }
        out
    }

    /// Appends to `out` the queues a publish to `exchange` with `key` reaches, deduplicated.
    /// The default exchange (`""`) routes to the queue named by the key.
    pub fn route<'a>(&'a self, exchange: &str, key: &str, headers: &[(String, String)], out: &mut Vec<&'a QueueSpec>) {
        if exchange.is_empty() {
            out.extend(self.queues.get(key));
            return;
        }
        let Some(ex) = self.exchanges.get(exchange) else {
            return;
        };
        let mut names = Vec::new();
        ex.route(key, headers, &mut names);
        names.sort_unstable();
        names.dedup();
        out.extend(names.into_iter().filter_map(|n| self.queues.get(n)));
    }

    /// Checks `op` against the table as the authority sees it. `Ok(Unchanged)` ops need not be
    /// broadcast. `queue_limit` bounds the number of queues.
    pub fn validate(&self, op: &MetaOp, queue_limit: usize) -> Result<MetaOutcome, EngineError> {
        match op {
            MetaOp::DeclareQueue { spec, passive, by } => self.validate_queue(spec, *passive, *by, queue_limit),
            MetaOp::DeleteQueue { name } => Ok(outcome(self.queues.contains_key(name))),
            MetaOp::DeclareExchange { spec, passive } => self.validate_exchange(spec, *passive),
            MetaOp::DeleteExchange { name } => {
                if name.starts_with("amq.") || name.is_empty() {
                    return Err(EngineError::new(ErrorKind::AccessRefused, format!("cannot delete exchange '{name}'")));
                }
                Ok(outcome(self.exchanges.contains_key(name)))
            }
            MetaOp::Bind { exchange, queue, .. } | MetaOp::Unbind { exchange, queue, .. } => {
                if exchange.is_empty() {
                    return Err(EngineError::new(ErrorKind::AccessRefused, "cannot bind to the default exchange"));
                }
                self.require_exchange(exchange)?;
                self.require_queue(queue)?;
                Ok(MetaOutcome::Changed)
            }
        }
    }

    fn validate_queue(
        &self,
        spec: &QueueSpec,
        passive: bool,
        by: Option<ConnectionId>,
        queue_limit: usize,
    ) -> Result<MetaOutcome, EngineError> {
        match self.queues.get(&spec.name) {
            Some(existing) => {
                if let Some(owner) = existing.exclusive
                    && Some(owner) != by
                {
                    let msg = format!("cannot obtain exclusive access to locked queue '{}'", spec.name);
                    return Err(EngineError::new(ErrorKind::ResourceLocked, msg));
                }
                if !passive && existing.arguments != spec.arguments {
                    let msg = format!("inequivalent arg 'arguments' for queue '{}' in vhost '/'", spec.name);
                    return Err(EngineError::new(ErrorKind::PreconditionFailed, msg));
                }
                if !passive && (existing.durable != spec.durable || existing.auto_delete != spec.auto_delete) {
                    let msg = format!("inequivalent arg 'durable'/'auto_delete' for queue '{}'", spec.name);
                    return Err(EngineError::new(ErrorKind::PreconditionFailed, msg));
                }
                Ok(MetaOutcome::Unchanged)
            }
            None if passive => Err(not_found("queue", &spec.name)),
            None if self.queues.len() >= queue_limit => {
                Err(EngineError::new(ErrorKind::ResourceError, "queue count limit reached"))
            }
            None => QueueArgs::parse(&spec.arguments).map(|_| MetaOutcome::Changed),
        }
    }

    fn validate_exchange(&self, spec: &ExchangeSpec, passive: bool) -> Result<MetaOutcome, EngineError> {
        match self.exchanges.get(&spec.name) {
            Some(existing) if !passive && existing.spec.kind != spec.kind => {
                let msg = format!("inequivalent arg 'type' for exchange '{}'", spec.name);
                Err(EngineError::new(ErrorKind::PreconditionFailed, msg))
            }
            Some(_) => Ok(MetaOutcome::Unchanged),
            None if passive => Err(not_found("exchange", &spec.name)),
            None if spec.name.starts_with("amq.") => {
                let msg = format!("exchange name '{}' contains reserved prefix 'amq.'", spec.name);
                Err(EngineError::new(ErrorKind::AccessRefused, msg))
            }
            None => Ok(MetaOutcome::Changed),
        }
    }

    fn require_exchange(&self, name: &str) -> Result<(), EngineError> {
        self.exchanges.get(name).map(|_| ()).ok_or_else(|| not_found("exchange", name))
    }

    fn require_queue(&self, name: &str) -> Result<(), EngineError> {
        self.queues.get(name).map(|_| ()).ok_or_else(|| not_found("queue", name))
    }

    /// Applies a validated op; every shard calls this in the authority's order.
    pub fn apply(&mut self, op: &MetaOp) {
        self.revision += 1;
        match op {
            MetaOp::DeclareQueue { spec, .. } => {
                self.queues.entry(spec.name.clone()).or_insert_with(|| spec.clone());
            }
            MetaOp::DeleteQueue { name } => {
                self.queues.remove(name);
                for ex in self.exchanges.values_mut() {
                    ex.unbind_queue(name);
                }
            }
            MetaOp::DeclareExchange { spec, .. } => {
                self.exchanges.entry(spec.name.clone()).or_insert_with(|| Exchange::new(spec.clone()));
            }
            MetaOp::DeleteExchange { name } => {
                self.exchanges.remove(name);
            }
            MetaOp::Bind { exchange, queue, key, arguments } => {
                if let Some(ex) = self.exchanges.get_mut(exchange) {
                    ex.bind(queue, key, arguments.clone());
                }
            }
            MetaOp::Unbind { exchange, queue, key, arguments } => {
                if let Some(ex) = self.exchanges.get_mut(exchange) {
                    ex.unbind(queue, key, arguments);
                }
            }
        }
    }
}

fn outcome(changed: bool) -> MetaOutcome {
    if changed { MetaOutcome::Changed } else { MetaOutcome::Unchanged }
}

fn not_found(what: &str, name: &str) -> EngineError {
    EngineError::new(ErrorKind::NotFound, format!("no {what} '{name}' in vhost '/'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qspec(name: &str, shard: u16) -> QueueSpec {
        QueueSpec {
            name: name.into(),
            durable: true,
            auto_delete: false,
            exclusive: None,
            arguments: vec![],
            shard: ShardId(shard),
        }
    }

    #[test]
    fn declare_bind_route() {
        let mut t = RoutingTable::default();
        let op = MetaOp::DeclareQueue { spec: qspec("q", 1), passive: false, by: None };
        assert_eq!(t.validate(&op, 10).expect("valid"), MetaOutcome::Changed);
        t.apply(&op);
        let bind =
            MetaOp::Bind { exchange: "amq.topic".into(), queue: "q".into(), key: "a.#".into(), arguments: vec![] };
        t.validate(&bind, 10).expect("valid bind");
        t.apply(&bind);
        let mut out = Vec::new();
        t.route("amq.topic", "a.b", &[], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].shard, ShardId(1));
        out.clear();
        t.route("", "q", &[], &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn errors_match_amqp_codes() {
        let mut t = RoutingTable::default();
        let passive = MetaOp::DeclareQueue { spec: qspec("missing", 0), passive: true, by: None };
        assert_eq!(t.validate(&passive, 10).map_err(|e| e.kind), Err(ErrorKind::NotFound));
        let owner = ConnectionId { shard: ShardId(0), local: 1 };
        let excl = QueueSpec { exclusive: Some(owner), ..qspec("ex", 0) };
        t.apply(&MetaOp::DeclareQueue { spec: excl.clone(), passive: false, by: None });
        let intruder = ConnectionId { shard: ShardId(0), local: 2 };
        let other = QueueSpec { exclusive: Some(intruder), ..excl.clone() };
        let op = MetaOp::DeclareQueue { spec: other, passive: false, by: Some(intruder) };
        assert_eq!(t.validate(&op, 10).map_err(|e| e.kind), Err(ErrorKind::ResourceLocked));
        let owner_passive = MetaOp::DeclareQueue { spec: excl, passive: true, by: Some(owner) };
        assert_eq!(t.validate(&owner_passive, 10).map_err(|e| e.kind), Ok(MetaOutcome::Unchanged));
        let full = MetaOp::DeclareQueue { spec: qspec("one-too-many", 0), passive: false, by: None };
        assert_eq!(t.validate(&full, 1).map_err(|e| e.kind), Err(ErrorKind::ResourceError));
    }

    #[test]
    fn delete_queue_drops_bindings() {
        let mut t = RoutingTable::default();
        t.apply(&MetaOp::DeclareQueue { spec: qspec("q", 0), passive: false, by: None });
        t.apply(&MetaOp::Bind {
            exchange: "amq.fanout".into(),
            queue: "q".into(),
            key: String::new(),
            arguments: vec![],
        });
        t.apply(&MetaOp::DeleteQueue { name: "q".into() });
        assert!(t.exchange("amq.fanout").expect("exists").bindings().is_empty());
    }
}
