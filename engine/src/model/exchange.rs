//! Exchanges and their bindings: the routing half of the model. Kinds follow AMQP 0-9-1:
//! direct (key equality), fanout (all), topic ([`TopicPattern`]), headers (`x-match` all/any).
//! A full copy lives on every shard (ARCHITECTURE §2); only the metadata authority changes it.

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
    pub internal: bool,
}

/// One binding from an exchange to a queue.
#[derive(Debug, Clone)]
pub struct Binding {
    pub queue: String,
    pub key: String,
    pub arguments: Vec<(String, String)>,
}

impl Binding {
    pub fn new(queue: String, key: String, arguments: Vec<(String, String)>) -> Self {
        Binding { queue, key, arguments }
    }

    fn same_as(&self, queue: &str, key: &str, arguments: &[(String, String)]) -> bool {
        self.queue == queue && self.key == key && self.arguments == arguments
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
    pub fn bind(&mut self, queue: &str, key: &str, arguments: Vec<(String, String)>) -> bool {
        if self.bindings.iter().any(|b| b.same_as(queue, key, &arguments)) {
            return false;
        }
        let binding = Binding::new(queue.to_owned(), key.to_owned(), arguments);
        self.bindings.push(binding);
        if self.spec.kind == ExchangeKind::Topic {
            self.trie.insert(key, queue);
        }
        true
    }

    /// Removes a binding; returns whether it existed.
    pub fn unbind(&mut self, queue: &str, key: &str, arguments: &[(String, String)]) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|b| !b.same_as(queue, key, arguments));
        let removed = before != self.bindings.len();
        if removed && self.spec.kind == ExchangeKind::Topic {
            self.trie.remove(key, queue);
        }
        removed
    }

    /// Drops every binding to `queue` (the queue was deleted).
    pub fn unbind_queue(&mut self, queue: &str) {
        let kind = self.spec.kind;
        let trie = &mut self.trie;
        self.bindings.retain(|b| {
            let keep = b.queue != queue;
            if !keep && kind == ExchangeKind::Topic {
                trie.remove(&b.key, &b.queue);
            }
            keep
        });
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Appends to `out` the queues a message with `key` and `headers` goes to (may repeat).
    pub fn route<'a>(&'a self, key: &str, headers: &[(String, String)], out: &mut Vec<&'a str>) {
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
                out.push(&binding.queue);
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
        Exchange::new(ExchangeSpec { name: "x".into(), kind, durable: false, auto_delete: false, internal: false })
    }

    fn routed(ex: &Exchange, key: &str, headers: &[(String, String)]) -> Vec<String> {
        let mut out = Vec::new();
        ex.route(key, headers, &mut out);
        out.into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn direct_fanout_topic() {
        let mut d = exchange(ExchangeKind::Direct);
        d.bind("q1", "k", vec![]);
        d.bind("q2", "other", vec![]);
        assert_eq!(routed(&d, "k", &[]), ["q1"]);
        let mut f = exchange(ExchangeKind::Fanout);
        f.bind("q1", "", vec![]);
        f.bind("q2", "zz", vec![]);
        assert_eq!(routed(&f, "any", &[]), ["q1", "q2"]);
        let mut t = exchange(ExchangeKind::Topic);
        t.bind("q1", "a.*", vec![]);
        t.bind("q2", "a.#", vec![]);
        assert_eq!(routed(&t, "a.b", &[]), ["q1", "q2"]);
        assert_eq!(routed(&t, "a.b.c", &[]), ["q2"]);
    }

    #[test]
    fn binding_twice_is_idempotent_and_unbind_removes() {
        let mut d = exchange(ExchangeKind::Direct);
        assert!(d.bind("q", "k", vec![]));
        assert!(!d.bind("q", "k", vec![]));
        assert!(d.unbind("q", "k", &[]));
        assert!(routed(&d, "k", &[]).is_empty());
    }

    #[test]
    fn headers_all_and_any() {
        let mut h = exchange(ExchangeKind::Headers);
        let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        h.bind("all", "", vec![kv("x-match", "all"), kv("a", "1"), kv("b", "2")]);
        h.bind("any", "", vec![kv("x-match", "any"), kv("a", "1"), kv("b", "2")]);
        assert_eq!(routed(&h, "", &[kv("a", "1")]), ["any"]);
        assert_eq!(routed(&h, "", &[kv("a", "1"), kv("b", "2")]), ["all", "any"]);
    }
}
