//! The engine's hash map: std's `HashMap` with foldhash's randomly seeded fast hasher.
//! SipHash cost ~7% of broker CPU under load (queue names, tags and ids are hashed per
//! message); foldhash is several times faster and, being seeded per process, still resists
//! collisions crafted from client-chosen names.

/// `std::collections::HashMap` with foldhash; build with `HashMap::default()`.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// `std::collections::HashSet` with foldhash; build with `HashSet::default()`.
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
