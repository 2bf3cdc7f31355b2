//! The next segment prepared off the shard thread: a roll renames the spare into place, the
//! data reads back across it, and spares never survive a reopen.

mod common;

use common::{declare, enqueue, open, sync_now};

const SEGMENT: u64 = 4096;

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_prepared_spare_becomes_the_next_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), SEGMENT);
    log.append(&declare("q")).expect("append");
    let job = log.spare_job().expect("no spare yet");
    assert!(log.spare_job().is_none(), "one spare at a time");
    log.install_spare(std::thread::spawn(move || job.run()).join().expect("thread"));
    assert!(files(dir.path()).iter().any(|n| n.starts_with("spare-")), "{:?}", files(dir.path()));
    for id in 0..40 {
        log.append(&enqueue("q", id, &[7u8; 200])).expect("append");
    }
    assert!(log.segment_count() >= 3, "rolled");
    sync_now(&mut log);
    drop(log);
    let names = files(dir.path());
    assert!(names.iter().all(|n| n.ends_with(".seg")), "spare was renamed into place: {names:?}");
    let (_, recovered) = open(dir.path(), SEGMENT);
    let q = recovered.queues.iter().find(|q| q.name == "q").expect("queue");
    assert_eq!(q.messages.len(), 40);
    assert!(q.messages.iter().enumerate().all(|(i, m)| m.msg_id == i as u64));
}

#[test]
fn leftover_spares_are_removed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), SEGMENT);
    let job = log.spare_job().expect("spare job");
    log.install_spare(job.run());
    drop(log); // a crash before any roll leaves the spare behind
    assert!(files(dir.path()).iter().any(|n| n.starts_with("spare-")));
    let (_, recovered) = open(dir.path(), SEGMENT);
    assert_eq!(recovered.records_replayed, 0);
    assert!(files(dir.path()).iter().all(|n| !n.starts_with("spare-")), "{:?}", files(dir.path()));
}
