//! Topic patterns as AMQP's `amq.topic` matches them: words split on `.`, `*` matches exactly
//! one word, `#` matches zero or more. ActiveMQ's `>` is accepted as `#` by the gateways,
//! MQTT's `+`/`#` map here too. A pattern is split once at bind time; matching allocates nothing.

/// A binding key split into words, ready for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    words: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Literal(String),
    One,
    Many,
}

impl TopicPattern {
    pub fn new(pattern: &str) -> Self {
        let words = pattern
            .split('.')
            .map(|w| match w {
                "*" => Word::One,
                "#" => Word::Many,
                other => Word::Literal(other.to_owned()),
            })
            .collect();
        TopicPattern { words }
    }

    /// Does routing key `key` match this pattern?
    pub fn matches(&self, key: &str) -> bool {
        let mut key_words = key.split('.');
        // Iterative matcher with a single backtrack point for the last `#` seen: classic
        // wildcard matching, linear in practice, never recursive on peer input.
        let words = &self.words;
        let keys: smallvec_free::Words<'_> = smallvec_free::Words::new(&mut key_words);
        match_words(words, &keys)
    }
}

fn match_words(words: &[Word], keys: &smallvec_free::Words<'_>) -> bool {
    let (mut w, mut k) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while k < keys.len() {
        match words.get(w) {
            Some(Word::Many) => {
                star = Some((w, k));
                w += 1;
            }
            Some(Word::One) => {
                w += 1;
                k += 1;
            }
            Some(Word::Literal(lit)) if keys.get(k) == Some(lit.as_str()) => {
                w += 1;
                k += 1;
            }
            _ => match star {
                Some((sw, sk)) => {
                    w = sw + 1;
                    k = sk + 1;
                    star = Some((sw, sk + 1));
                }
                None => return false,
            },
        }
    }
    words[w.min(words.len())..].iter().all(|word| *word == Word::Many)
}

mod smallvec_free {
    //! The routing key's words, collected once into a stack buffer when short.
    pub struct Words<'a> {
        inline: [&'a str; 16],
        len: usize,
        spill: Vec<&'a str>,
    }

    impl<'a> Words<'a> {
        pub fn new(iter: &mut dyn Iterator<Item = &'a str>) -> Self {
            let mut words = Words { inline: [""; 16], len: 0, spill: Vec::new() };
            for word in iter {
                if words.len < 16 {
                    words.inline[words.len] = word;
                } else {
                    if words.spill.is_empty() {
                        words.spill.extend_from_slice(&words.inline);
                    }
                    words.spill.push(word);
                }
                words.len += 1;
            }
            words
        }
        pub fn len(&self) -> usize {
            self.len
        }
        pub fn get(&self, i: usize) -> Option<&'a str> {
            if i >= self.len {
                None
            } else if self.spill.is_empty() {
                Some(self.inline[i])
            } else {
                Some(self.spill[i])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        TopicPattern::new(p).matches(k)
    }

    #[test]
    fn literal_and_star() {
        assert!(m("a.b.c", "a.b.c"));
        assert!(!m("a.b.c", "a.b"));
        assert!(m("a.*.c", "a.x.c"));
        assert!(!m("a.*.c", "a.c"));
        assert!(!m("a.*", "a.b.c"));
    }

    #[test]
    fn hash_matches_zero_or_more() {
        assert!(m("#", "a"));
        assert!(m("#", "a.b.c"));
        assert!(m("a.#", "a"));
        assert!(m("a.#", "a.b.c"));
        assert!(m("a.#.c", "a.c"));
        assert!(m("a.#.c", "a.b.b.c"));
        assert!(!m("a.#.c", "a.b.d"));
        assert!(m("#.c", "a.b.c"));
        assert!(m("*.#", "a"));
        assert!(m("a.#.#.d", "a.b.c.d"));
    }

    #[test]
    fn long_keys_spill() {
        let key = (0..40).map(|i| i.to_string()).collect::<Vec<_>>().join(".");
        assert!(m("0.#.39", &key));
        assert!(!m("0.#.38", &key));
    }
}
