//! Topic routing for many bindings: a trie over binding-key words (`amq.topic` with 10,000
//! subscriptions took ~1 ms per publish as a linear scan). Literal words index children by
//! hash; `*` and `#` are child slots. Matching walks the routing key once per reachable node;
//! a `#` tries every suffix, so consecutive `#`s are collapsed at insertion and each
//! (node, position) is visited at most once per match: work is bounded by nodes × words,
//! whatever patterns clients subscribe with. Lives inside an `Exchange`; one copy per shard.

use crate::fastmap::HashMap;
use crate::model::exchange::Destination;

#[derive(Debug, Default, Clone)]
struct Node {
    literal: HashMap<String, Node>,
    star: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    /// Destinations whose binding key ends here, with how many bindings (keys can repeat via
    /// arguments).
    queues: Vec<(Destination, usize)>,
}

/// See the module docs.
#[derive(Debug, Default, Clone)]
pub struct TopicTrie {
    root: Node,
}

/// The words of a binding key with runs of `#` collapsed (`a.#.#.b` == `a.#.b`).
fn pattern_words(key: &str) -> Vec<&str> {
    let mut words: Vec<&str> = Vec::new();
    for w in key.split('.') {
        if w == "#" && words.last() == Some(&"#") {
            continue;
        }
        words.push(w);
    }
    words
}

impl TopicTrie {
    pub fn insert(&mut self, key: &str, queue: &Destination) {
        let mut node = &mut self.root;
        for word in pattern_words(key) {
            node = match word {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                w => node.literal.entry(w.to_owned()).or_default(),
            };
        }
        match node.queues.iter_mut().find(|(q, _)| q == queue) {
            Some((_, n)) => *n += 1,
            None => node.queues.push((queue.clone(), 1)),
        }
    }

    /// Removes one binding of `queue` with `key` (empty branches are left; they cost nothing
    /// to walk past and are reused by later bindings).
    pub fn remove(&mut self, key: &str, queue: &Destination) {
        let mut node = &mut self.root;
        for word in pattern_words(key) {
            let next = match word {
                "*" => node.star.as_deref_mut(),
                "#" => node.hash.as_deref_mut(),
                w => node.literal.get_mut(w),
            };
            match next {
                Some(n) => node = n,
                None => return,
            }
        }
        if let Some(i) = node.queues.iter().position(|(q, _)| q == queue) {
            node.queues[i].1 -= 1;
            if node.queues[i].1 == 0 {
                node.queues.swap_remove(i);
            }
        }
    }

    /// Appends the destinations bound to keys matching `routing_key` (may repeat).
    pub fn route<'a>(&'a self, routing_key: &str, out: &mut Vec<&'a Destination>) {
        let words: Vec<&str> = routing_key.split('.').collect();
        let mut visited: Vec<(*const Node, usize)> = Vec::new();
        walk(&self.root, &words, 0, &mut visited, out);
    }
}

/// Visits `node` at word position `at`, once per match (a `#` can reach the same node at the
/// same position along several paths).
fn walk<'a>(
    node: &'a Node,
    words: &[&str],
    at: usize,
    visited: &mut Vec<(*const Node, usize)>,
    out: &mut Vec<&'a Destination>,
) {
    let mark = (node as *const Node, at);
    if visited.contains(&mark) {
        return;
    }
    visited.push(mark);
    if at == words.len() {
        out.extend(node.queues.iter().map(|(q, _)| q));
    } else {
        if let Some(child) = node.literal.get(words[at]) {
            walk(child, words, at + 1, visited, out);
        }
        if let Some(child) = &node.star {
            walk(child, words, at + 1, visited, out);
        }
    }
    if let Some(child) = &node.hash {
        for next in at..=words.len() {
            walk(child, words, next, visited, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::topic::TopicPattern;
    use proptest::prelude::*;

    fn q(name: &str) -> Destination {
        Destination::Queue(name.to_owned())
    }

    fn routed(trie: &TopicTrie, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        trie.route(key, &mut out);
        let mut v: Vec<String> = out.into_iter().filter_map(|d| d.queue()).map(str::to_owned).collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn literal_star_hash() {
        let mut t = TopicTrie::default();
        t.insert("stock.*.ibm", &q("a"));
        t.insert("stock.#", &q("b"));
        t.insert("#", &q("c"));
        t.insert("#.ibm", &q("d"));
        assert_eq!(routed(&t, "stock.nyse.ibm"), ["a", "b", "c", "d"]);
        assert_eq!(routed(&t, "stock"), ["b", "c"]);
        assert_eq!(routed(&t, "bond.x"), ["c"]);
        t.remove("#", &q("c"));
        assert_eq!(routed(&t, "bond.x"), Vec::<String>::new());
    }

    #[test]
    fn many_hashes_stay_cheap() {
        let mut t = TopicTrie::default();
        t.insert(&["#"; 40].join("."), &q("q"));
        t.insert(&["#", "x"].repeat(20).join("."), &q("r"));
        let key = ["y"; 64].join(".");
        assert_eq!(routed(&t, &key), ["q"]);
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".to_owned()), Just("b".to_owned()), Just("c".to_owned())]
    }

    fn pattern_word() -> impl Strategy<Value = String> {
        prop_oneof![word(), Just("*".to_owned()), Just("#".to_owned())]
    }

    proptest! {
        /// The trie routes exactly as the reference matcher (`TopicPattern`) does.
        #[test]
        fn agrees_with_the_reference_matcher(
            patterns in proptest::collection::vec(proptest::collection::vec(pattern_word(), 1..5), 1..8),
            keys in proptest::collection::vec(proptest::collection::vec(word(), 1..6), 1..8),
        ) {
            let mut trie = TopicTrie::default();
            let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
            for (i, p) in patterns.iter().enumerate() {
                trie.insert(p, &q(&format!("q{i}")));
            }
            for key in keys.iter().map(|k| k.join(".")) {
                let mut expected: Vec<String> = patterns
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| TopicPattern::new(p).matches(&key))
                    .map(|(i, _)| format!("q{i}"))
                    .collect();
                expected.sort();
                prop_assert_eq!(routed(&trie, &key), expected, "key {}", key);
            }
        }
    }
}
