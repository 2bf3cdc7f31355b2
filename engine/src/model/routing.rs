//! The routing table: exchanges, bindings and queue metadata (who owns each queue). A full
//! copy lives on every shard, stamped with a revision; only the metadata authority (shard 0)
//! validates changes ([`RoutingTable::validate`]) and every shard applies the same validated
//! [`MetaOp`]s in the same order ([`RoutingTable::apply`]). Routing follows RabbitMQ: a publish
//! walks exchange-to-exchange bindings (each exchange at most once, so cycles end), and an
//! exchange that routes a message nowhere hands it to its `alternate-exchange`, if any.

use crate::error::{EngineError, ErrorKind};
use crate::fastmap::HashMap;
use crate::ids::{ConnectionId, ShardId};
use crate::model::exchange::{Destination, Exchange, ExchangeKind, ExchangeSpec};
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
    /// `if_unused`: refuse (406) while the exchange is the source of any binding.
    DeleteExchange {
        name: String,
        if_unused: bool,
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
    /// An exchange-to-exchange binding (`exchange.bind`): `source` routes into `destination`.
    BindExchange {
        source: String,
        destination: String,
        key: String,
        arguments: Vec<(String, String)>,
    },
    UnbindExchange {
        source: String,
        destination: String,
        key: String,
        arguments: Vec<(String, String)>,
    },
    /// Sets (`Some`) or removes (`None`) one of Ferry's own bookkeeping arguments
    /// ([`FERRY_ARGUMENT_PREFIX`]) of an existing queue, such as the MQTT session expiry.
    /// Nothing a queue does reads them, so the queue is not rebuilt; a durable queue's owner
    /// journals its declaration again, which recovery takes as the newest.
    SetQueueArgument {
        queue: String,
        key: String,
        value: Option<String>,
    },
}

/// Queue arguments that only Ferry writes and that [`MetaOp::SetQueueArgument`] may change.
pub const FERRY_ARGUMENT_PREFIX: &str = "x-ferry-";

/// `arguments` with `key` set to `value` (replacing any earlier value) or removed (`None`).
pub fn with_argument(arguments: &[(String, String)], key: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = arguments.iter().filter(|(k, _)| k != key).cloned().collect();
    if let Some(value) = value {
        out.push((key.to_owned(), value.to_owned()));
    }
    out
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
            let spec = ExchangeSpec {
                name: name.to_owned(),
                kind,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: Vec::new(),
            };
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
        let wanted = Destination::Queue(queue.to_owned());
        for (name, ex) in &self.exchanges {
            for b in ex.bindings().iter().filter(|b| b.destination == wanted) {
                let (exchange, key, arguments) = (name.clone(), b.key.clone(), b.arguments.clone());
                out.push(MetaOp::Bind { exchange, queue: queue.to_owned(), key, arguments });
            }
        }
        out
    }

    /// Appends to `out` the queues a publish to `exchange` with `key` reaches, deduplicated.
    /// The default exchange (`""`) routes to the queue named by the key. Exchange-to-exchange
    /// bindings are followed and each exchange routes at most once per message (RabbitMQ's
    /// rule, which ends cycles); an exchange whose own bindings match nothing passes the
    /// message to its alternate exchange (a missing alternate is ignored, as in RabbitMQ).
    pub fn route<'a>(&'a self, exchange: &str, key: &str, headers: &[(String, String)], out: &mut Vec<&'a QueueSpec>) {
        if exchange.is_empty() {
            out.extend(self.queues.get(key));
            return;
        }
        let Some(first) = self.exchanges.get(exchange) else {
            return;
        };
        let mut work = vec![first];
        let mut seen: Vec<&str> = vec![first.spec.name.as_str()];
        let mut queues: Vec<&str> = Vec::new();
        let mut dests = Vec::new();
        while let Some(ex) = work.pop() {
            dests.clear();
            ex.route(key, headers, &mut dests);
            let alternate = if dests.is_empty() { ex.spec.alternate() } else { None };
            let next = dests.iter().filter_map(|d| match d {
                Destination::Queue(q) => {
                    queues.push(q);
                    None
                }
                Destination::Exchange(x) => Some(x.as_str()),
            });
            for name in next.chain(alternate) {
                if !seen.contains(&name)
                    && let Some(ex) = self.exchanges.get(name)
                {
                    seen.push(name);
                    work.push(ex);
                }
            }
        }
        queues.sort_unstable();
        queues.dedup();
        out.extend(queues.into_iter().filter_map(|n| self.queues.get(n)));
    }

    /// Checks `op` against the table as the authority sees it. `Ok(Unchanged)` ops need not be
    /// broadcast. `queue_limit` bounds the number of queues.
    pub fn validate(&self, op: &MetaOp, queue_limit: usize) -> Result<MetaOutcome, EngineError> {
        match op {
            MetaOp::DeclareQueue { spec, passive, by } => self.validate_queue(spec, *passive, *by, queue_limit),
            MetaOp::DeleteQueue { name } => Ok(outcome(self.queues.contains_key(name))),
            MetaOp::DeclareExchange { spec, passive } => self.validate_exchange(spec, *passive),
            MetaOp::DeleteExchange { name, if_unused } => {
                if name.starts_with("amq.") || name.is_empty() {
                    return Err(EngineError::new(ErrorKind::AccessRefused, format!("cannot delete exchange '{name}'")));
                }
                match self.exchanges.get(name) {
                    Some(ex) if *if_unused && !ex.bindings().is_empty() => {
                        let msg = format!("exchange '{name}' in vhost '/' in use");
                        Err(EngineError::new(ErrorKind::PreconditionFailed, msg))
                    }
                    found => Ok(outcome(found.is_some())),
                }
            }
            MetaOp::Bind { exchange, queue, .. } | MetaOp::Unbind { exchange, queue, .. } => {
                if exchange.is_empty() {
                    return Err(EngineError::new(ErrorKind::AccessRefused, "cannot bind to the default exchange"));
                }
                self.require_exchange(exchange)?;
                self.require_queue(queue)?;
                Ok(MetaOutcome::Changed)
            }
            MetaOp::BindExchange { source, destination, .. } | MetaOp::UnbindExchange { source, destination, .. } => {
                if source.is_empty() || destination.is_empty() {
                    let msg = "operation not permitted on the default exchange";
                    return Err(EngineError::new(ErrorKind::AccessRefused, msg));
                }
                self.require_exchange(destination)?;
                self.require_exchange(source)?;
                Ok(MetaOutcome::Changed)
            }
            MetaOp::SetQueueArgument { queue, key, value } => {
                if !key.starts_with(FERRY_ARGUMENT_PREFIX) {
                    let msg = format!("argument '{key}' of queue '{queue}' cannot be changed");
                    return Err(EngineError::new(ErrorKind::PreconditionFailed, msg));
                }
                let spec = self.queues.get(queue).ok_or_else(|| not_found("queue", queue))?;
                let current = spec.arguments.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
                Ok(outcome(current != value.as_deref()))
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
            None => {
                let args = QueueArgs::parse(&spec.arguments)?;
                // RabbitMQ's rules for quorum queues, kept so applications see the same errors.
                let invalid = [
                    ("non-durable", !spec.durable),
                    ("exclusive-owner", spec.exclusive.is_some()),
                    ("auto-delete", spec.auto_delete),
                ];
                match invalid.iter().find(|(_, bad)| args.quorum && *bad) {
                    Some((property, _)) => {
                        let msg = format!("invalid property '{property}' for queue '{}' in vhost '/'", spec.name);
                        Err(EngineError::new(ErrorKind::PreconditionFailed, msg))
                    }
                    None => Ok(MetaOutcome::Changed),
                }
            }
        }
    }

    fn validate_exchange(&self, spec: &ExchangeSpec, passive: bool) -> Result<MetaOutcome, EngineError> {
        match self.exchanges.get(&spec.name) {
            Some(existing) if !passive => {
                let old = &existing.spec;
                let differs = [
                    ("type", old.kind != spec.kind),
                    ("durable", old.durable != spec.durable),
                    ("auto_delete", old.auto_delete != spec.auto_delete),
                    ("internal", old.internal != spec.internal),
                    ("arguments", old.arguments != spec.arguments),
                ];
                match differs.iter().find(|(_, d)| *d) {
                    Some((arg, _)) => {
                        let msg = format!("inequivalent arg '{arg}' for exchange '{}' in vhost '/'", spec.name);
                        Err(EngineError::new(ErrorKind::PreconditionFailed, msg))
                    }
                    None => Ok(MetaOutcome::Unchanged),
                }
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

    /// Every exchange-to-exchange binding, as the `MetaOp::BindExchange`s that would recreate it.
    pub fn exchange_bindings(&self) -> Vec<MetaOp> {
        let mut out = Vec::new();
        for (source, ex) in &self.exchanges {
            for b in ex.bindings() {
                if let Destination::Exchange(destination) = &b.destination {
                    out.push(MetaOp::BindExchange {
                        source: source.clone(),
                        destination: destination.clone(),
                        key: b.key.clone(),
                        arguments: b.arguments.clone(),
                    });
                }
            }
        }
        out
    }

    pub fn exchanges(&self) -> impl Iterator<Item = &ExchangeSpec> {
        self.exchanges.values().map(|ex| &ex.spec)
    }

    /// Applies a validated op; every shard calls this in the authority's order. Returns the
    /// auto-delete exchanges that lost their last binding and went with it (RabbitMQ deletes
    /// such an exchange when its last binding is removed, whatever removed it).
    pub fn apply(&mut self, op: &MetaOp) -> Vec<ExchangeSpec> {
        self.revision += 1;
        let mut unbound: Vec<String> = Vec::new();
        match op {
            MetaOp::DeclareQueue { spec, .. } => {
                self.queues.entry(spec.name.clone()).or_insert_with(|| spec.clone());
            }
            MetaOp::DeleteQueue { name } => {
                self.queues.remove(name);
                unbound = self.unbind_everywhere(&Destination::Queue(name.clone()));
            }
            MetaOp::DeclareExchange { spec, .. } => {
                self.exchanges.entry(spec.name.clone()).or_insert_with(|| Exchange::new(spec.clone()));
            }
            MetaOp::DeleteExchange { name, .. } => {
                self.exchanges.remove(name);
                unbound = self.unbind_everywhere(&Destination::Exchange(name.clone()));
            }
            MetaOp::Bind { exchange, queue, key, arguments } => {
                if let Some(ex) = self.exchanges.get_mut(exchange) {
                    ex.bind(&Destination::Queue(queue.clone()), key, arguments.clone());
                }
            }
            MetaOp::BindExchange { source, destination, key, arguments } => {
                if let Some(ex) = self.exchanges.get_mut(source) {
                    ex.bind(&Destination::Exchange(destination.clone()), key, arguments.clone());
                }
            }
            MetaOp::Unbind { exchange, queue, key, arguments } => {
                if let Some(ex) = self.exchanges.get_mut(exchange)
                    && ex.unbind(&Destination::Queue(queue.clone()), key, arguments)
                {
                    unbound.push(exchange.clone());
                }
            }
            MetaOp::UnbindExchange { source, destination, key, arguments } => {
                if let Some(ex) = self.exchanges.get_mut(source)
                    && ex.unbind(&Destination::Exchange(destination.clone()), key, arguments)
                {
                    unbound.push(source.clone());
                }
            }
            MetaOp::SetQueueArgument { queue, key, value } => {
                if let Some(spec) = self.queues.get_mut(queue) {
                    spec.arguments = with_argument(&spec.arguments, key, value.as_deref());
                }
            }
        }
        self.auto_delete(unbound)
    }

    /// Removes every binding to `destination`; returns the exchanges that lost one.
    fn unbind_everywhere(&mut self, destination: &Destination) -> Vec<String> {
        let mut lost = Vec::new();
        for (name, ex) in &mut self.exchanges {
            if ex.unbind_all(destination) {
                lost.push(name.clone());
            }
        }
        lost
    }

    /// Deletes the auto-delete exchanges among `candidates` left without bindings, and those
    /// that this in turn leaves without bindings.
    fn auto_delete(&mut self, mut candidates: Vec<String>) -> Vec<ExchangeSpec> {
        let mut deleted = Vec::new();
        while let Some(name) = candidates.pop() {
            let unused = self.exchanges.get(&name).is_some_and(|ex| ex.spec.auto_delete && ex.bindings().is_empty());
            if unused && let Some(ex) = self.exchanges.remove(&name) {
                candidates.extend(self.unbind_everywhere(&Destination::Exchange(name)));
                deleted.push(ex.spec);
            }
        }
        deleted
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

    #[test]
    fn only_ferry_arguments_of_an_existing_queue_can_be_set() {
        let mut t = RoutingTable::default();
        let spec = QueueSpec { arguments: vec![("x-max-length".into(), "5".into())], ..qspec("q", 0) };
        t.apply(&MetaOp::DeclareQueue { spec, passive: false, by: None });
        let set = |value: Option<&str>| MetaOp::SetQueueArgument {
            queue: "q".into(),
            key: "x-ferry-k".into(),
            value: value.map(str::to_owned),
        };
        assert_eq!(t.validate(&set(None), 10).map_err(|e| e.kind), Ok(MetaOutcome::Unchanged));
        assert_eq!(t.validate(&set(Some("1")), 10).map_err(|e| e.kind), Ok(MetaOutcome::Changed));
        t.apply(&set(Some("1")));
        assert_eq!(t.validate(&set(Some("1")), 10).map_err(|e| e.kind), Ok(MetaOutcome::Unchanged));
        t.apply(&set(Some("2")));
        let args = |t: &RoutingTable| t.queue("q").expect("declared").arguments.clone();
        assert_eq!(args(&t), [("x-max-length".into(), "5".into()), ("x-ferry-k".into(), "2".into())]);
        t.apply(&set(None));
        assert_eq!(args(&t), [("x-max-length".to_owned(), "5".to_owned())]);
        let rabbit = MetaOp::SetQueueArgument { queue: "q".into(), key: "x-max-length".into(), value: None };
        assert_eq!(t.validate(&rabbit, 10).map_err(|e| e.kind), Err(ErrorKind::PreconditionFailed));
        let missing = MetaOp::SetQueueArgument { queue: "nope".into(), key: "x-ferry-k".into(), value: None };
        assert_eq!(t.validate(&missing, 10).map_err(|e| e.kind), Err(ErrorKind::NotFound));
    }

    fn exchange(t: &mut RoutingTable, name: &str, kind: ExchangeKind, arguments: Vec<(String, String)>) {
        let spec =
            ExchangeSpec { name: name.into(), kind, durable: false, auto_delete: false, internal: false, arguments };
        let op = MetaOp::DeclareExchange { spec, passive: false };
        t.validate(&op, 10).expect("valid exchange");
        t.apply(&op);
    }

    fn routed(t: &RoutingTable, exchange: &str, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        t.route(exchange, key, &[], &mut out);
        out.into_iter().map(|q| q.name.clone()).collect()
    }

    fn e2e(source: &str, destination: &str, key: &str) -> MetaOp {
        MetaOp::BindExchange {
            source: source.into(),
            destination: destination.into(),
            key: key.into(),
            arguments: vec![],
        }
    }

    fn bind(exchange: &str, queue: &str, key: &str) -> MetaOp {
        MetaOp::Bind { exchange: exchange.into(), queue: queue.into(), key: key.into(), arguments: vec![] }
    }

    #[test]
    fn exchange_to_exchange_bindings_route_once_even_in_cycles() {
        let mut t = RoutingTable::default();
        exchange(&mut t, "a", ExchangeKind::Topic, vec![]);
        exchange(&mut t, "b", ExchangeKind::Fanout, vec![]);
        t.apply(&MetaOp::DeclareQueue { spec: qspec("q", 0), passive: false, by: None });
        for op in [e2e("a", "b", "x.*"), e2e("b", "a", ""), bind("b", "q", ""), bind("a", "q", "x.y")] {
            t.validate(&op, 10).expect("valid");
            t.apply(&op);
        }
        assert_eq!(routed(&t, "a", "x.y"), ["q"], "deduplicated, and the a <-> b cycle ends");
        assert_eq!(routed(&t, "a", "z"), Vec::<String>::new());
        assert_eq!(routed(&t, "b", "anything"), ["q"]);
        t.apply(&MetaOp::UnbindExchange {
            source: "a".into(),
            destination: "b".into(),
            key: "x.*".into(),
            arguments: vec![],
        });
        t.apply(&MetaOp::Unbind { exchange: "a".into(), queue: "q".into(), key: "x.y".into(), arguments: vec![] });
        assert!(routed(&t, "a", "x.y").is_empty());
        let missing = e2e("a", "nowhere", "");
        assert_eq!(t.validate(&missing, 10).map_err(|e| e.kind), Err(ErrorKind::NotFound));
        assert_eq!(t.validate(&e2e("", "a", ""), 10).map_err(|e| e.kind), Err(ErrorKind::AccessRefused));
    }

    #[test]
    fn alternate_exchange_takes_what_routes_nowhere() {
        let mut t = RoutingTable::default();
        let ae = vec![("alternate-exchange".to_owned(), "ae".to_owned())];
        exchange(&mut t, "main", ExchangeKind::Direct, ae.clone());
        exchange(&mut t, "ae", ExchangeKind::Fanout, vec![("alternate-exchange".to_owned(), "main".to_owned())]);
        for name in ["known", "unrouted"] {
            t.apply(&MetaOp::DeclareQueue { spec: qspec(name, 0), passive: false, by: None });
        }
        t.apply(&bind("main", "known", "k"));
        assert!(routed(&t, "main", "other").is_empty(), "empty alternate, and its alternate loops back");
        t.apply(&bind("ae", "unrouted", ""));
        assert_eq!(routed(&t, "main", "k"), ["known"]);
        assert_eq!(routed(&t, "main", "other"), ["unrouted"]);
        let redeclare = MetaOp::DeclareExchange {
            spec: ExchangeSpec {
                name: "main".into(),
                kind: ExchangeKind::Direct,
                durable: false,
                auto_delete: false,
                internal: false,
                arguments: vec![],
            },
            passive: false,
        };
        assert_eq!(t.validate(&redeclare, 10).map_err(|e| e.kind), Err(ErrorKind::PreconditionFailed));
    }

    #[test]
    fn auto_delete_exchanges_go_with_their_last_binding_and_if_unused_holds() {
        let mut t = RoutingTable::default();
        let spec = ExchangeSpec {
            name: "ad".into(),
            kind: ExchangeKind::Fanout,
            durable: false,
            auto_delete: true,
            internal: false,
            arguments: vec![],
        };
        t.apply(&MetaOp::DeclareExchange { spec, passive: false });
        exchange(&mut t, "src", ExchangeKind::Fanout, vec![]);
        t.apply(&MetaOp::DeclareQueue { spec: qspec("q", 0), passive: false, by: None });
        t.apply(&bind("ad", "q", ""));
        t.apply(&e2e("src", "ad", ""));
        let busy = MetaOp::DeleteExchange { name: "src".into(), if_unused: true };
        assert_eq!(t.validate(&busy, 10).map_err(|e| e.kind), Err(ErrorKind::PreconditionFailed));
        let gone = t.apply(&MetaOp::DeleteQueue { name: "q".into() });
        assert_eq!(gone.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["ad"]);
        assert!(t.exchange("ad").is_none());
        assert!(t.exchange("src").expect("not auto-delete").bindings().is_empty(), "bindings into 'ad' went too");
    }
}
