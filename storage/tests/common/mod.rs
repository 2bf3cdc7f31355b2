//! Helpers shared by the storage integration tests: small-segment configs, sample records of
//! every kind, and a synchronous "sync everything" helper. Test-only, single thread.

#![allow(dead_code)]

use std::path::Path;

use ferry_storage::{Epoch, LogConfig, Offset, Record, ShardLog, StoredMessage, TxOp};

/// A config with small segments so tests roll often.
pub fn config(dir: &Path, segment_size_bytes: u64) -> LogConfig {
    LogConfig { segment_size_bytes, epoch: Epoch(1), ..LogConfig::new(dir) }
}

pub fn open(dir: &Path, segment_size_bytes: u64) -> (ShardLog, ferry_storage::Recovered) {
    ShardLog::open(config(dir, segment_size_bytes)).expect("open log")
}

pub fn message(queue: &str, msg_id: u64, body: &[u8]) -> StoredMessage {
    StoredMessage {
        queue: queue.to_owned(),
        msg_id,
        exchange: "amq.direct".to_owned(),
        routing_key: format!("key.{queue}"),
        redelivered: false,
        priority: (msg_id % 10) as u8,
        expiry_ms: 0,
        properties: vec![("content-type".to_owned(), "text/plain".to_owned())],
        body: bytes::Bytes::copy_from_slice(body),
    }
}

pub fn enqueue(queue: &str, msg_id: u64, body: &[u8]) -> Record {
    Record::Enqueue(message(queue, msg_id, body))
}

pub fn declare(queue: &str) -> Record {
    Record::QueueDeclare { name: queue.to_owned(), durable: true, auto_delete: false, arguments: vec![] }
}

pub fn settle(queue: &str, msg_id: u64) -> Record {
    Record::Settle { queue: queue.to_owned(), msg_id }
}

/// One record of every kind.
pub fn every_kind() -> Vec<Record> {
    let args = vec![("x-max-length".to_owned(), "10".to_owned())];
    vec![
        Record::ExchangeDeclare {
            name: "orders".to_owned(),
            kind: "topic".to_owned(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: args.clone(),
        },
        Record::QueueDeclare { name: "q".to_owned(), durable: true, auto_delete: true, arguments: args.clone() },
        Record::Bind {
            exchange: "orders".to_owned(),
            queue: "q".to_owned(),
            routing_key: "a.*".to_owned(),
            arguments: args,
        },
        enqueue("q", 1, b"hello"),
        enqueue("q", 2, &[0xAB; 300]),
        enqueue("q", 3, b""),
        settle("q", 1),
        Record::TxCommit { tx_id: 42 },
        Record::tx_part(vec![
            TxOp::enqueue(message("q", 4, b"in a transaction")),
            TxOp::Settle { queue: "q".to_owned(), msg_id: 2 },
            TxOp::enqueue(message("q", 5, b"")),
            TxOp::enqueue(message("q", 6, &[7; 100])),
        ]),
        Record::Unbind { exchange: "orders".to_owned(), queue: "q".to_owned(), routing_key: "a.*".to_owned() },
        Record::ExchangeDelete { name: "orders".to_owned() },
        Record::QueueDelete { name: "q".to_owned() },
    ]
}

/// The segment files of the log in `dir`, in log order.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Cuts and runs sync jobs until everything appended is durable.
pub fn sync_now(log: &mut ShardLog) -> Offset {
    if let Some(job) = log.sync_job() {
        let result = job.run();
        log.complete_sync(result).expect("sync");
    }
    assert_eq!(log.durable_offset(), log.appended_offset());
    log.durable_offset()
}
