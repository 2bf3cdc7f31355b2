//! Exchanges and their bindings: the routing half of the model. Kinds follow AMQP 0-9-1:
//! direct (key equality), fanout (all), topic ([`TopicPattern`]), headers (`x-match` all/any).
//! A binding leads to a queue or, as RabbitMQ's exchange-to-exchange bindings do, to another
//! exchange ([`Destination`]); an exchange may name an `alternate-exchange` for what it routes
//! nowhere. A full copy lives on every shard (ARCHITECTURE §2); only the metadata authority
//! changes it.

use crate::model::topic_trie::TopicTrie;

/// The routing behaviour of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// Declared properties of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    /// Clients cannot publish to it (403); it is reached through bindings or as an alternate.
    pub internal: bool,
    /// Declaration arguments; `alternate-exchange` names where unroutable messages go.
    pub arguments: Vec<(String, String)>,
}

impl ExchangeSpec {
    /// The `alternate-exchange` argument, if any (an empty name means none).
    pub fn alternate(&self) -> Option<&str> {
        self.arguments.iter().find(|(k, v)| k == "alternate-exchange" && !v.is_empty()).map(|(_, v)| v.as_str())
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    Queue(String),
    /// An exchange-to-exchange binding: matching messages are routed again by this exchange.
    Exchange(String),
}

impl Destination {
    pub fn queue(&self) -> Option<&str> {
        match self {
            Destination::Queue(q) => Some(q),
            Destination::Exchange(_) => None,
        }
    }
}

/// One binding from an exchange to a queue or exchange.
#[derive(Debug, Clone)]
pub struct Binding {
    pub destination: Destination,
    pub key: String,
    pub arguments: Vec<(String, String)>,
}

impl Binding {
    fn same_as(&self, destination: &Destination, key: &str, arguments: &[(String, String)]) -> bool {
        self.destination == *destination && self.key == key && self.arguments == arguments
    }
}

/// An exchange with its bindings (topic exchanges also index them in a trie).
#[derive(Debug, Clone)]
pub struct Exchange {
    pub spec: ExchangeSpec,
    bindings: Vec<Binding>,
    trie: TopicTrie,
}

impl Exchange {
    pub fn new(spec: ExchangeSpec) -> Self {
        Exchange { spec, bindings: Vec::new(), trie: TopicTrie::default() }
    }

    /// Adds a binding; binding twice is a no-op, as in AMQP. Returns whether it was new.
    pub fn bind(&mut self, destination: &Destination, key: &str, arguments: Vec<(String, String)>) -> bool {
        if self.bindings.iter().any(|b| b.same_as(destination, key, &arguments)) {
            return false;
        }
        self.bindings.push(Binding { destination: destination.clone(), key: key.to_owned(), arguments });
        if self.spec.kind == ExchangeKind::Topic {
            self.trie.insert(key, destination);
        }
        true
    }

    /// Removes a binding; returns whether it existed.
    pub fn unbind(&mut self, destination: &Destination, key: &str, arguments: &[(String, String)]) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|b| !b.same_as(destination, key, arguments));
        let removed = before != self.bindings.len();
        if removed && self.spec.kind == ExchangeKind::Topic {
            self.trie.remove(key, destination);
        }
        removed
    }

    /// Drops every binding to `destination` (it was deleted); returns whether any existed.
    pub fn unbind_all(&mut self, destination: &Destination) -> bool {
        let kind = self.spec.kind;
        let trie = &mut self.trie;
        let before = self.bindings.len();
        self.bindings.retain(|b| {
            let keep = b.destination != *destination;
            if !keep && kind == ExchangeKind::Topic {
                trie.remove(&b.key, &b.destination);
            }
            keep
        });
        before != self.bindings.len()
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Appends to `out` where a message with `key` and `headers` goes (may repeat).
    pub fn route<'a>(&'a self, key: &str, headers: &[(String, String)], out: &mut Vec<&'a Destination>) {
        if self.spec.kind == ExchangeKind::Topic {
            self.trie.route(key, out);
            return;
        }
        for binding in &self.bindings {
            let hit = match self.spec.kind {
                ExchangeKind::Fanout => true,
                ExchangeKind::Direct => binding.key == key,
                ExchangeKind::Topic => false, // routed by the trie above
                ExchangeKind::Headers => headers_match(&binding.arguments, headers),
            };
            if hit {
                out.push(&binding.destination);
            }
        }
    }
}

/// AMQP headers-exchange matching: `x-match` = `all` (default) or `any`; other `x-` keys ignored.
fn headers_match(arguments: &[(String, String)], headers: &[(String, String)]) -> bool {
    let any = arguments.iter().any(|(k, v)| k == "x-match" && (v == "any" || v == "any-with-x"));
    let mut wanted = arguments.iter().filter(|(k, _)| !k.starts_with("x-"));
    let has = |(k, v): &(String, String)| headers.iter().any(|(hk, hv)| hk == k && (v.is_empty() || hv == v));
    if any { wanted.any(has) } else { wanted.all(has) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(kind: ExchangeKind) -> Exchange {
        let spec = ExchangeSpec {
            name: "x".into(),
            kind,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: vec![],
        };
        Exchange::new(spec)
    }

    fn routed(ex: &Exchange, key: &str, headers: &[(String, String)]) -> Vec<String> {
        let mut out = Vec::new();
        ex.route(key, headers, &mut out);
        out.into_iter().filter_map(|d| d.queue()).map(str::to_owned).collect()
    }

    fn q(name: &str) -> Destination {
        Destination::Queue(name.to_owned())
    }

    #[test]
    fn direct_fanout_topic() {
        let mut d = exchange(ExchangeKind::Direct);
        d.bind(&q("q1"), "k", vec![]);
        d.bind(&q("q2"), "other", vec![]);
        assert_eq!(routed(&d, "k", &[]), ["q1"]);
        let mut f = exchange(ExchangeKind::Fanout);
        f.bind(&q("q1"), "", vec![]);
        f.bind(&q("q2"), "zz", vec![]);
        assert_eq!(routed(&f, "any", &[]), ["q1", "q2"]);
        let mut t = exchange(ExchangeKind::Topic);
        t.bind(&q("q1"), "a.*", vec![]);
        t.bind(&q("q2"), "a.#", vec![]);
        assert_eq!(routed(&t, "a.b", &[]), ["q1", "q2"]);
        assert_eq!(routed(&t, "a.b.c", &[]), ["q2"]);
    }

    #[test]
    fn binding_twice_is_idempotent_and_unbind_removes() {
        let mut d = exchange(ExchangeKind::Direct);
        assert!(d.bind(&q("q"), "k", vec![]));
        assert!(!d.bind(&q("q"), "k", vec![]));
        assert!(d.unbind(&q("q"), "k", &[]));
        assert!(routed(&d, "k", &[]).is_empty());
    }

    #[test]
    fn headers_all_and_any() {
        let mut h = exchange(ExchangeKind::Headers);
        let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        h.bind(&q("all"), "", vec![kv("x-match", "all"), kv("a", "1"), kv("b", "2")]);
        h.bind(&q("any"), "", vec![kv("x-match", "any"), kv("a", "1"), kv("b", "2")]);
        assert_eq!(routed(&h, "", &[kv("a", "1")]), ["any"]);
        assert_eq!(routed(&h, "", &[kv("a", "1"), kv("b", "2")]), ["all", "any"]);
    }
}
