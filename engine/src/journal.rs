//! The shard's durability seam (ARCHITECTURE §4): every persistent enqueue to a durable queue,
//! every settlement of one, and every durable declaration goes through here. It separates
//! *appended* from *durable*: a completion (receipt, confirm) waiting on a record is released
//! only once a sync covers that record. The runtime's committer task runs syncs off the
//! shard's event loop and then calls `Shard::journal_synced`.
//!
//! Backends: `Memory` (no files; appended counts as durable once the committer runs — for
//! `--data-dir none` style tests) and the storage crate's mmap log (added with the durable-log
//! issue).

use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;

use crate::ids::Completion;
use crate::model::message::Content;
use crate::model::routing::QueueSpec;

/// Where records go.
#[derive(Debug)]
enum Backend {
    Memory { appended: u64 },
}

/// A shard's journal plus the completions waiting for durability.
pub struct Journal {
    backend: Backend,
    durable: u64,
    waiters: VecDeque<(u64, Completion)>,
    sync_wake: Rc<dyn Fn()>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("backend", &self.backend)
            .field("durable", &self.durable)
            .finish()
    }
}

/// A sync to run off the event loop; `None` work means nothing was pending.
#[derive(Debug)]
pub struct SyncWork {
    target: u64,
}

impl SyncWork {
    /// Runs the sync (blocking). Returns the offset now durable.
    pub fn run(self) -> std::io::Result<u64> {
        Ok(self.target)
    }
}

impl Journal {
    /// A journal that keeps nothing on disk.
    pub fn memory(sync_wake: Rc<dyn Fn()>) -> Self {
        Journal {
            backend: Backend::Memory { appended: 0 },
            durable: 0,
            waiters: VecDeque::new(),
            sync_wake,
        }
    }

    fn append(&mut self, len: u64) -> u64 {
        let Backend::Memory { appended } = &mut self.backend;
        *appended += len.max(1);
        (self.sync_wake)();
        *appended
    }

    fn appended(&self) -> u64 {
        let Backend::Memory { appended } = &self.backend;
        *appended
    }

    /// Records a persistent message; `completion` is released once it is durable.
    pub fn append_enqueue(
        &mut self,
        _queue: &str,
        _msg_id: u64,
        content: &Content,
        completion: Option<Completion>,
    ) {
        let offset = self.append(content.size_bytes() as u64 + 64);
        if let Some(c) = completion {
            self.waiters.push_back((offset, c));
        }
    }

    /// Records that a persistent message was settled (acked or dropped).
    pub fn append_settle(&mut self, _queue: &str, _msg_id: u64) {
        self.append(32);
    }

    /// Records a durable queue's declaration (no-op for transient queues).
    pub fn append_queue_declare(&mut self, spec: &QueueSpec) {
        if spec.durable {
            self.append(64);
        }
    }

    /// Records a durable queue's deletion.
    pub fn append_queue_delete(&mut self, spec: &QueueSpec) {
        if spec.durable {
            self.append(64);
        }
    }

    /// The sync to run now, if anything appended is not yet durable.
    pub fn sync_work(&mut self) -> Option<SyncWork> {
        (self.appended() > self.durable).then(|| SyncWork {
            target: self.appended(),
        })
    }

    /// Records a finished sync. An error is fatal to the broker: the caller must stop.
    pub fn complete_sync(&mut self, result: std::io::Result<u64>) -> std::io::Result<()> {
        let durable = result?;
        assert!(durable >= self.durable, "durable offset never goes back");
        self.durable = durable;
        Ok(())
    }

    /// Completions now covered by the durable offset.
    pub fn take_durable_waiters(&mut self) -> Vec<Completion> {
        let mut done = Vec::new();
        while let Some((offset, _)) = self.waiters.front() {
            if *offset > self.durable {
                break;
            }
            if let Some((_, c)) = self.waiters.pop_front() {
                done.push(c);
            }
        }
        done
    }
}
