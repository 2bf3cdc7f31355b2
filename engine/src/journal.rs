//! The shard's durability seam (ARCHITECTURE §4): every persistent enqueue to a durable queue,
//! every settlement of one, and every durable declaration goes through here. It separates
//! *appended* from *durable*: a completion (receipt, confirm) waiting on a record is released
//! only once a sync covers that record. The runtime's committer task runs [`SyncWork`] on a
//! blocking thread, never on the shard's event loop, then calls `Shard::journal_synced`.
//!
//! Backends: the storage crate's mmap log (what the broker runs), and `Memory` (no files;
//! appended counts as durable once the committer runs) for runtime-free tests. An append or
//! sync failure is fatal: the caller stops acknowledging and the broker exits.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use ferry_storage::{LogConfig, Record, Recovered, ShardLog, StorageError, StoredMessage, SyncJob};

use crate::ids::Completion;
use crate::model::message::{Content, Properties};
use crate::model::routing::QueueSpec;

enum Backend {
    Memory { appended: u64 },
    Log(Box<ShardLog>),
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
        let kind = match self.backend {
            Backend::Memory { .. } => "memory",
            Backend::Log(_) => "log",
        };
        f.debug_struct("Journal")
            .field("backend", &kind)
            .field("durable", &self.durable)
            .finish()
    }
}

/// A sync to run off the event loop.
#[derive(Debug)]
pub enum SyncWork {
    Memory(u64),
    Log(SyncJob),
}

impl SyncWork {
    /// Runs the sync (blocking). Returns the offset now durable.
    pub fn run(self) -> Result<u64, StorageError> {
        match self {
            SyncWork::Memory(target) => Ok(target),
            SyncWork::Log(job) => job.run().map(|o| o.0),
        }
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

    /// Opens (or creates) the shard's log in `dir`, returning what it recovered.
    pub fn open(
        dir: PathBuf,
        segment_size_bytes: u64,
        sync_wake: Rc<dyn Fn()>,
    ) -> Result<(Self, Recovered), StorageError> {
        let config = LogConfig {
            segment_size_bytes,
            ..LogConfig::new(dir)
        };
        let (log, recovered) = ShardLog::open(config)?;
        let durable = log.durable_offset().0;
        let journal = Journal {
            backend: Backend::Log(Box::new(log)),
            durable,
            waiters: VecDeque::new(),
            sync_wake,
        };
        Ok((journal, recovered))
    }

    fn append(&mut self, record: &Record) -> u64 {
        let offset = match &mut self.backend {
            Backend::Memory { appended } => {
                *appended += 1;
                *appended
            }
            Backend::Log(log) => match log.append(record) {
                Ok(offset) => offset.0,
                Err(e) => fatal(&e),
            },
        };
        (self.sync_wake)();
        offset
    }

    fn appended(&self) -> u64 {
        match &self.backend {
            Backend::Memory { appended } => *appended,
            Backend::Log(log) => log.appended_offset().0,
        }
    }

    /// Records a persistent message; `completion` is released once it is durable.
    pub fn append_enqueue(
        &mut self,
        queue: &str,
        msg_id: u64,
        content: &Content,
        completion: Option<Completion>,
    ) {
        let offset = self.append(&Record::Enqueue(stored_message(queue, msg_id, content)));
        if let Some(c) = completion {
            self.waiters.push_back((offset, c));
        }
    }

    /// Records that a persistent message was settled (acked or dropped).
    pub fn append_settle(&mut self, queue: &str, msg_id: u64) {
        self.append(&Record::Settle {
            queue: queue.to_owned(),
            msg_id,
        });
    }

    /// Records a durable queue's declaration (no-op for transient queues).
    pub fn append_queue_declare(&mut self, spec: &QueueSpec) {
        if spec.durable {
            let record = Record::QueueDeclare {
                name: spec.name.clone(),
                durable: true,
                auto_delete: spec.auto_delete,
                arguments: spec.arguments.clone(),
            };
            self.append(&record);
        }
    }

    /// Records a durable queue's deletion.
    pub fn append_queue_delete(&mut self, spec: &QueueSpec) {
        if spec.durable {
            self.append(&Record::QueueDelete {
                name: spec.name.clone(),
            });
        }
    }

    /// Records a binding of a durable queue (or its removal).
    pub fn append_binding(
        &mut self,
        exchange: &str,
        queue: &str,
        key: &str,
        arguments: &[(String, String)],
        bound: bool,
    ) {
        let (exchange, queue, routing_key) =
            (exchange.to_owned(), queue.to_owned(), key.to_owned());
        let record = if bound {
            Record::Bind {
                exchange,
                queue,
                routing_key,
                arguments: arguments.to_vec(),
            }
        } else {
            Record::Unbind {
                exchange,
                queue,
                routing_key,
            }
        };
        self.append(&record);
    }

    /// The sync to run now, if anything appended is not yet durable.
    pub fn sync_work(&mut self) -> Option<SyncWork> {
        match &mut self.backend {
            Backend::Memory { appended } => {
                (*appended > self.durable).then_some(SyncWork::Memory(*appended))
            }
            Backend::Log(log) => {
                if log.is_poisoned() {
                    fatal(&StorageError::Poisoned);
                }
                log.sync_job().map(SyncWork::Log)
            }
        }
    }

    /// Records a finished sync. An error is returned for the caller to stop the broker.
    pub fn complete_sync(&mut self, result: Result<u64, StorageError>) -> Result<(), StorageError> {
        let durable = match &mut self.backend {
            Backend::Memory { .. } => result?,
            Backend::Log(log) => log.complete_sync(result.map(ferry_storage::Offset))?.0,
        };
        assert!(durable >= self.durable, "durable offset never goes back");
        self.durable = durable;
        Ok(())
    }

    /// True when nothing appended waits for a sync.
    pub fn is_synced(&self) -> bool {
        self.appended() <= self.durable
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

/// An append that fails leaves the log in an unknown state: stop rather than ack anything.
fn fatal(error: &StorageError) -> ! {
    tracing::error!("journal append failed, stopping the broker: {error}");
    std::process::exit(70)
}

/// Marks where neutral properties end and user headers begin in a stored property list.
const USER_HEADERS_MARK: &str = "\u{1}headers";

fn stored_message(queue: &str, msg_id: u64, content: &Content) -> StoredMessage {
    let p = &content.properties;
    let mut properties = Vec::with_capacity(p.headers.len() + 8);
    let optional = [
        ("content-type", &p.content_type),
        ("content-encoding", &p.content_encoding),
        ("correlation-id", &p.correlation_id),
        ("reply-to", &p.reply_to),
        ("message-id", &p.message_id),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            properties.push((name.to_owned(), v.clone()));
        }
    }
    if let Some(ms) = p.expiration_ms {
        properties.push(("expiration".to_owned(), ms.to_string()));
    }
    properties.push((USER_HEADERS_MARK.to_owned(), String::new()));
    properties.extend(p.headers.iter().cloned());
    StoredMessage {
        queue: queue.to_owned(),
        msg_id,
        exchange: content.exchange.clone(),
        routing_key: content.routing_key.clone(),
        redelivered: false,
        priority: p.priority,
        expiry_ms: 0,
        properties,
        body: content.body.clone(),
    }
}

/// The content of a recovered message (always persistent: only those are journaled).
pub fn recovered_content(stored: &StoredMessage) -> Arc<Content> {
    let mut props = Properties {
        persistent: true,
        priority: stored.priority,
        ..Properties::default()
    };
    let mut user = false;
    for (name, value) in &stored.properties {
        if user {
            props.headers.push((name.clone(), value.clone()));
            continue;
        }
        match name.as_str() {
            USER_HEADERS_MARK => user = true,
            "content-type" => props.content_type = Some(value.clone()),
            "content-encoding" => props.content_encoding = Some(value.clone()),
            "correlation-id" => props.correlation_id = Some(value.clone()),
            "reply-to" => props.reply_to = Some(value.clone()),
            "message-id" => props.message_id = Some(value.clone()),
            "expiration" => props.expiration_ms = value.parse().ok(),
            _ => {}
        }
    }
    Arc::new(Content {
        exchange: stored.exchange.clone(),
        routing_key: stored.routing_key.clone(),
        properties: props,
        body: stored.body.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_survive_the_journal() {
        let content = Content {
            exchange: "amq.topic".into(),
            routing_key: "a.b".into(),
            properties: Properties {
                persistent: true,
                priority: 3,
                content_type: Some("text/plain".into()),
                reply_to: Some("/queue/r".into()),
                expiration_ms: Some(500),
                headers: vec![
                    (
                        "content-type".into(),
                        "user-header-with-a-reserved-name".into(),
                    ),
                    ("k".into(), "v".into()),
                ],
                ..Properties::default()
            },
            body: bytes::Bytes::from_static(b"\0body"),
        };
        let back = recovered_content(&stored_message("q", 7, &content));
        assert_eq!(*back, content);
    }

    #[test]
    fn log_backend_releases_waiters_only_after_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, recovered) =
            Journal::open(dir.path().join("s0"), 64 * 1024, Rc::new(|| {})).expect("open");
        assert!(recovered.queues.is_empty());
        let conn = crate::ids::ConnectionId {
            shard: crate::ids::ShardId(0),
            local: 1,
        };
        let content = Content {
            exchange: String::new(),
            routing_key: "q".into(),
            properties: Properties {
                persistent: true,
                ..Properties::default()
            },
            body: bytes::Bytes::from_static(b"x"),
        };
        journal.append_enqueue("q", 1, &content, Some(Completion { conn, token: 9 }));
        assert!(
            journal.take_durable_waiters().is_empty(),
            "not durable before the sync"
        );
        let work = journal.sync_work().expect("work pending");
        let synced = std::thread::spawn(move || work.run())
            .join()
            .expect("thread");
        journal.complete_sync(synced).expect("sync ok");
        assert_eq!(
            journal.take_durable_waiters(),
            [Completion { conn, token: 9 }]
        );
        assert!(journal.is_synced());
    }
}
