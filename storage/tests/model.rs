//! Model-based property test: random sequences of declares, enqueues, settles, queue
//! deletes, syncs and reopens (a process crash: unsynced data is still in the page cache)
//! must recover exactly what a simple in-memory model says is live.

mod common;

use std::collections::BTreeMap;

use common::{declare, enqueue, open, settle};
use ferry_storage::{Record, ShardLog};
use proptest::prelude::*;

const SEGMENT: u64 = 4096;
const QUEUES: [&str; 3] = ["q0", "q1", "q2"];

#[derive(Debug, Clone)]
enum Op {
    Declare(usize),
    Enqueue { queue: usize, body_len: usize },
    Settle { queue: usize, pick: usize },
    Delete(usize),
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..3usize).prop_map(Op::Declare),
        6 => (0..3usize, 0..600usize).prop_map(|(queue, body_len)| Op::Enqueue { queue, body_len }),
        3 => (0..3usize, any::<usize>()).prop_map(|(queue, pick)| Op::Settle { queue, pick }),
        1 => (0..3usize).prop_map(Op::Delete),
        2 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

/// Live state: declared queues -> live (msg_id, body) in enqueue order.
#[derive(Debug, Default)]
struct Model {
    queues: BTreeMap<String, Vec<(u64, Vec<u8>)>>,
    next_id: u64,
}

fn check(model: &Model, recovered: &ferry_storage::Recovered) {
    let got: BTreeMap<String, Vec<(u64, Vec<u8>)>> = recovered
        .queues
        .iter()
        .map(|q| (q.name.clone(), q.messages.iter().map(|m| (m.msg_id, m.body.to_vec())).collect()))
        .collect();
    assert_eq!(got, model.queues);
    assert!(recovered.queues.iter().flat_map(|q| &q.messages).all(|m| m.redelivered));
    assert_eq!(recovered.torn_tail_bytes, 0);
    assert!(recovered.quarantined.is_empty());
}

fn apply(log: &mut ShardLog, model: &mut Model, op: &Op) -> Option<Record> {
    match *op {
        Op::Declare(q) => {
            model.queues.entry(QUEUES[q].to_owned()).or_default();
            Some(declare(QUEUES[q]))
        }
        Op::Enqueue { queue, body_len } => {
            let live = model.queues.get_mut(QUEUES[queue])?;
            model.next_id += 1;
            let body = vec![(model.next_id % 251) as u8; body_len];
            live.push((model.next_id, body.clone()));
            Some(enqueue(QUEUES[queue], model.next_id, &body))
        }
        Op::Settle { queue, pick } => {
            let live = model.queues.get_mut(QUEUES[queue]).filter(|l| !l.is_empty())?;
            let (id, _) = live.remove(pick % live.len());
            Some(settle(QUEUES[queue], id))
        }
        Op::Delete(q) => {
            model.queues.remove(QUEUES[q]);
            Some(Record::QueueDelete { name: QUEUES[q].to_owned() })
        }
        Op::Sync => {
            common::sync_now(log);
            None
        }
        Op::Reopen => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn recovery_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = open(dir.path(), SEGMENT);
        let mut model = Model::default();
        for op in &ops {
            if let Op::Reopen = op {
                drop(log);
                let (reopened, recovered) = open(dir.path(), SEGMENT);
                check(&model, &recovered);
                log = reopened;
                continue;
            }
            if let Some(record) = apply(&mut log, &mut model, op) {
                let before = log.appended_offset();
                let end = log.append(&record).expect("append");
                prop_assert!(end > before);
                prop_assert!(log.durable_offset() <= log.appended_offset());
            }
        }
        drop(log);
        let (_, recovered) = open(dir.path(), SEGMENT);
        check(&model, &recovered);
    }
}
