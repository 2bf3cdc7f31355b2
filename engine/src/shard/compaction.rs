//! Compaction on the shard: when the journal has sealed segments, the declarations of the
//! durable queues this shard owns (and their bindings) are written again, live persistent
//! messages in old segments are copied forward (same queue and id; recovery keeps the newest
//! copy), and once those copies are durable the old segments are deleted off the event loop.
//! Disk use so follows the live backlog (ARCHITECTURE §4).

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
        let bindings: Vec<MetaOp> = owned.iter().flat_map(|name| self.routing.bindings_of(name)).collect();
        for op in bindings {
            if let MetaOp::Bind { exchange, queue, key, arguments } = op {
                self.journal.append_binding(&exchange, &queue, &key, &arguments, true);
            }
        }
        let mut copied = 0usize;
        for (queue, msg_id) in plan.copy {
            let content = self.queues.get(&queue).and_then(|q| q.find(msg_id)).map(|m| m.content.clone());
            match content {
                Some(content) => {
                    self.journal.append_enqueue(&queue, msg_id, &content);
                    copied += 1;
                }
                None => self.journal.forget(&queue, msg_id),
            }
        }
        tracing::debug!(shard = %self.id, copied, keep_from = plan.keep_from, "compaction: copied forward");
        self.journal.schedule_compaction(plan.keep_from);
    }
}
