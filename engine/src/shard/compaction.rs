//! Compaction on the shard: when the journal has sealed segments, the declarations of the
//! durable queues this shard owns (and their bindings), of every durable exchange and (on the
//! authority) of exchange-to-exchange bindings between durable exchanges are written again, live persistent
//! messages in old segments are copied forward (same queue and id; recovery keeps the newest
//! copy), and once those copies are durable the old segments are deleted off the event loop.
//! Disk use so follows the live backlog (ARCHITECTURE §4).

use std::sync::Arc;

use crate::fastmap::{HashMap, HashSet};
use crate::model::message::Content;
use crate::model::routing::MetaOp;
use crate::shard::Shard;

impl Shard {
    /// Starts a compaction round if the journal wants one. Cheap when it does not.
    pub fn maybe_compact(&mut self) {
        let Some(plan) = self.journal.compaction_plan() else { return };
        let owned: Vec<String> = self.queues.values().filter(|q| q.spec.durable).map(|q| q.spec.name.clone()).collect();
        for name in &owned {
            if let Some(queue) = self.queues.get(name) {
                let spec = queue.spec.clone();
                self.journal.append_queue_declare(&spec);
            }
        }
        let exchanges: Vec<_> = self.routing.exchanges().filter(|x| x.durable).cloned().collect();
        for spec in &exchanges {
            self.journal.append_exchange_declare(spec);
        }
        let mut bindings: Vec<MetaOp> = owned.iter().flat_map(|name| self.routing.bindings_of(name)).collect();
        if self.id == crate::shard::AUTHORITY {
            let durable = |name: &str| exchanges.iter().any(|x| x.name == name);
            let e2e = self.routing.exchange_bindings().into_iter();
            bindings.extend(e2e.filter(|op| {
                matches!(op, MetaOp::BindExchange { source, destination, .. } if durable(source) && durable(destination))
            }));
        }
        for op in bindings {
            match op {
                MetaOp::Bind { exchange, queue, key, arguments } => {
                    self.journal.append_binding(&exchange, &queue, &key, &arguments, true);
                }
                MetaOp::BindExchange { source, destination, key, arguments } => {
                    let to = format!("{}{destination}", crate::journal::EXCHANGE_DESTINATION_MARK);
                    self.journal.append_binding(&source, &to, &key, &arguments, true);
                }
                _ => {}
            }
        }
        // One pass over each queue concerned, not a search of it per message copied.
        let mut wanted: HashMap<&str, HashSet<u64>> = HashMap::default();
        for (queue, msg_id) in &plan.copy {
            wanted.entry(queue.as_str()).or_default().insert(*msg_id);
        }
        let mut found: HashMap<(&str, u64), Arc<Content>> = HashMap::default();
        for (queue, ids) in &wanted {
            let held = self.queues.get(*queue).into_iter().flat_map(|q| q.held());
            found.extend(held.filter(|m| ids.contains(&m.msg_id)).map(|m| ((*queue, m.msg_id), m.content.clone())));
        }
        // Dead-lettered originals whose copies have not landed yet are still live.
        for (queue, msg_id, content) in self.originals_in_flight() {
            if let Some((queue, _)) = wanted.get_key_value(queue).filter(|(_, ids)| ids.contains(&msg_id)) {
                found.insert((*queue, msg_id), content.clone());
            }
        }
        let mut copied = 0usize;
        for (queue, msg_id) in &plan.copy {
            let (queue, msg_id) = (queue.as_str(), *msg_id);
            match found.remove(&(queue, msg_id)) {
                Some(content) => {
                    self.journal.append_enqueue(queue, msg_id, &content);
                    copied += 1;
                }
                None => self.journal.forget(queue, msg_id),
            }
        }
        tracing::debug!(shard = %self.id, copied, keep_from = plan.keep_from, "compaction: copied forward");
        self.journal.schedule_compaction(plan.keep_from);
    }
}
