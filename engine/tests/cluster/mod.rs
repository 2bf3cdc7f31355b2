//! What the runtime-free engine tests share: two `Shard`s with memory journals (or real logs
//! in a directory) and a pump that moves outbox batches between them until nothing is in
//! flight (what the runtime's mesh does, deterministically).

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferry_engine::ids::{ConnectionId, ConsumerKey, ShardId};
use ferry_engine::journal::{Journal, SyncPolicy};
use ferry_engine::model::message::{Content, Properties};
use ferry_engine::model::queue::Consumer;
use ferry_engine::model::routing::{MetaOp, QueueSpec};
use ferry_engine::placement::Placement;
use ferry_engine::shard::mailbox::Mailbox;
use ferry_engine::shard::msg::{Reply, Request};
use ferry_engine::shard::{AUTHORITY, Shard};
use ferry_storage::LogConfig;
use ferry_wire::Limits;

pub struct Cluster {
    pub shards: Vec<Shard>,
}

impl Cluster {
    pub fn new(overrides: &[(&str, u16)]) -> Self {
        Self::with_limits(overrides, Limits::test_min())
    }

    pub fn with_limits(overrides: &[(&str, u16)], limits: Limits) -> Self {
        Self::with_journals(overrides, limits, |_| Journal::memory(Rc::new(|| {})))
    }

    /// Shards whose journals are real logs in `dir`/shard-N.
    pub fn on_disk(overrides: &[(&str, u16)], dir: &std::path::Path) -> Self {
        Self::with_journals(overrides, Limits::test_min(), |i| {
            let log = LogConfig { segment_size_bytes: 1 << 20, ..LogConfig::new(dir.join(format!("shard-{i}"))) };
            Journal::open(log, SyncPolicy::AckAfterSync, Rc::new(|| {})).expect("open log").0
        })
    }

    pub fn with_journals(overrides: &[(&str, u16)], limits: Limits, journal: impl Fn(u16) -> Journal) -> Self {
        let overrides: HashMap<String, ShardId> =
            overrides.iter().map(|(q, s)| ((*q).to_owned(), ShardId(*s))).collect();
        let placement = Placement::new(2, overrides);
        let shards = (0..2)
            .map(|i| Shard::new(ShardId(i), placement.clone(), limits.clone(), journal(i), Rc::new(|| {})))
            .collect();
        Cluster { shards }
    }

    /// Delivers every queued batch (and finishes journal syncs) until the system is quiet.
    pub fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for from in 0..2u16 {
                for to in 0..2u16 {
                    if from == to {
                        continue;
                    }
                    let mut batch = self.shards[usize::from(from)].swap_outbox(ShardId(to), Vec::new());
                    if !batch.is_empty() {
                        moved = true;
                        self.shards[usize::from(to)].handle_batch(ShardId(from), &mut batch);
                    }
                }
            }
            for shard in &mut self.shards {
                if let Some(work) = shard.journal_mut().sync_work() {
                    moved = true;
                    let result = work.run();
                    shard.journal_mut().complete_sync(result).expect("memory sync");
                    shard.journal_synced();
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the shards never went quiet");
    }

    pub fn request(&mut self, on: u16, to: ShardId, request: Request) -> Reply {
        let mut rx = self.shards[usize::from(on)].request(to, request);
        self.pump();
        rx.try_recv().expect("not cancelled").expect("answered").expect("request succeeded")
    }

    pub fn declare(&mut self, on: u16, name: &str, durable: bool) -> ShardId {
        let owner = self.shards[usize::from(on)].placement().place("/", name, 0);
        let spec = QueueSpec {
            name: name.into(),
            durable,
            auto_delete: false,
            exclusive: None,
            arguments: vec![],
            shard: owner,
        };
        self.request(on, AUTHORITY, Request::Meta(MetaOp::DeclareQueue { spec, passive: false, by: None }));
        owner
    }

    pub fn connect(&mut self, on: u16) -> (ConnectionId, Rc<RefCell<Mailbox>>) {
        self.shards[usize::from(on)].register_conn(Rc::new(|| {})).expect("under the limit")
    }
}

pub fn content(body: &'static str, persistent: bool) -> Arc<Content> {
    Arc::new(Content {
        exchange: String::new(),
        routing_key: String::new(),
        properties: Properties { persistent, ..Properties::default() },
        body: Bytes::from_static(body.as_bytes()),
    })
}

pub fn consume(
    cluster: &mut Cluster,
    on: u16,
    owner: ShardId,
    queue: &str,
    conn: ConnectionId,
    tag: u64,
) -> ConsumerKey {
    let key = ConsumerKey { conn, tag };
    let consumer = Consumer { key, credit_max: 10, outstanding: 0, no_ack: false, priority: 0, exclusive: false };
    let reply = cluster.request(on, owner, Request::Consume { queue: queue.into(), consumer });
    assert!(matches!(reply, Reply::Consumed), "{reply:?}");
    key
}

pub fn bodies(mailbox: &Rc<RefCell<Mailbox>>) -> Vec<Bytes> {
    mailbox.borrow().deliveries.iter().map(|d| d.message.content.body.clone()).collect()
}

/// A queue's name and its messages' bodies, in order.
pub type QueueBodies = (String, Vec<Bytes>);

/// What a restart would bring back now from the two shards' logs in `dir` (copied as they
/// are, recovered, their undecided transaction shares resolved together as the runtime does):
/// each queue's bodies, by name, and each log's ids of transactions it kept on the other's
/// word.
pub fn restart_would_keep(dir: &std::path::Path) -> (Vec<QueueBodies>, Vec<Vec<u64>>) {
    let copy = tempfile::tempdir().expect("tempdir");
    let mut logs = Vec::new();
    for i in 0..2 {
        let (from, to) = (dir.join(format!("shard-{i}")), copy.path().join(format!("shard-{i}")));
        std::fs::create_dir_all(&to).expect("mkdir");
        for entry in std::fs::read_dir(&from).expect("read shard dir") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
            }
        }
        let log = LogConfig { segment_size_bytes: 1 << 20, ..LogConfig::new(to) };
        logs.push(ferry_storage::ShardLog::open(log).expect("reopen copy").1);
    }
    let kept = ferry_storage::resolve_together(&mut logs);
    let mut queues: Vec<QueueBodies> = logs
        .iter()
        .flat_map(|r| r.queues.iter().map(|q| (q.name.clone(), q.messages.iter().map(|m| m.body.clone()).collect())))
        .collect();
    queues.sort();
    (queues, kept)
}
