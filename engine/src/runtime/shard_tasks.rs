//! One shard's executor: joins the mesh (its peer index is its `ShardId`), builds the `Shard`,
//! and runs its housekeeping tasks — one receiver per peer, the outbox flusher (sends whole
//! batches, awaiting channel space: that is the back-pressure), the journal committer (runs
//! syncs on glommio's blocking pool, never on the event loop; a failed sync stops the broker),
//! one accept loop per listener, and one receiver per peer of the connections it hands over
//! ([`super::spread`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, mpsc};

use ferry_storage::LogConfig;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::net::{AcceptedTcpStream, TcpListener};
use glommio::{executor, spawn_local};

use super::batches::BatchPool;
use super::conn::{serve_amqp, serve_mqtt, serve_stomp};
use super::evidence::Evidence;
use super::notify::Notify;
use super::reactor_turn;
use super::spread::{HandOver, Handoff, Spread};
use super::{SHUTDOWN_POLL, shutting_down};
use crate::auth::Users;
use crate::config::{BrokerConfig, ListenerProto};
use crate::ids::ShardId;
use crate::journal::Journal;
use crate::lease::Activation;
use crate::shard::msg::ShardMsg;
use crate::shard::recovery::recover;
use crate::shard::{Shard, ShardRef};

type Mesh = MeshBuilder<Vec<ShardMsg>, Full>;
/// The channels accepted connections are handed over on, and the counts that decide it.
pub(super) type Handoffs = (MeshBuilder<Handoff, Full>, Arc<Spread>);

/// Shards that finished recovering their logs.
static RECOVERED: AtomicUsize = AtomicUsize::new(0);

/// How often a shard started by a standby looks whether its process took the lease.
const ACTIVATION_POLL: std::time::Duration = std::time::Duration::from_millis(5);
/// How long a stopping shard waits for its outstanding blocking jobs (a sync of a large batch
/// on a slow disk); past it, the process stops regardless and recovery handles the rest.
const STOP_JOBS_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) async fn shard_main(
    config: Arc<BrokerConfig>,
    activation: Arc<OnceLock<Activation>>,
    mesh: Mesh,
    batches: Arc<BatchPool>,
    (handoffs, spread): Handoffs,
    evidence: Arc<Evidence>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let (Ok((senders, mut receivers)), Ok((handoff_senders, mut handoff_receivers))) =
        (mesh.join().await, handoffs.join().await)
    else {
        let _ = ready.send(Err("joining the shard mesh failed".to_owned()));
        return;
    };
    let id = ShardId(u16::try_from(senders.peer_id()).expect("shard count fits u16"));
    SHARD_INDEX.with(|index| index.set(Some(id.0)));
    // A standby starts its shards ahead (executor, io_uring, mesh: slow on a busy machine) and
    // they wait here, logs unopened and listeners closed, until the process holds the lease.
    if activation.get().is_none() {
        tracing::debug!(shard = %id, "shard started, waiting for the lease");
    }
    let activation = loop {
        if let Some(activation) = activation.get() {
            break activation;
        }
        if shutting_down() {
            return;
        }
        glommio::timer::sleep(ACTIVATION_POLL).await;
    };
    let outbox_notify = Rc::new(Notify::default());
    let sync_notify = Rc::new(Notify::default());
    let dir = config.shard_dir(id.0);
    let log = LogConfig {
        segment_size_bytes: config.segment_size_bytes,
        epoch: activation.epoch,
        fence: activation.fence.clone(),
        ..LogConfig::new(dir.clone())
    };
    let opened = Journal::open_warm(log, activation.warm.take(id.0), config.sync, wake_hook(&sync_notify));
    let (mut journal, mut recovered) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            evidence.fail();
            let _ = ready.send(Err(format!("opening the log in {}: {e}", dir.display())));
            return;
        }
    };
    let tx_id_max = match decide_transactions(id, &evidence, &mut journal, &mut recovered) {
        Ok(tx_id_max) => tx_id_max,
        Err(e) => {
            evidence.fail();
            let _ = ready.send(Err(format!("recovering the log in {}: {e}", dir.display())));
            return;
        }
    };
    journal.set_group_commit_wait(config.group_commit_wait);
    let mut shard = Shard::new(id, config.placement(), config.limits.clone(), journal, wake_hook(&outbox_notify));
    shard.seed_transaction_ids(tx_id_max);
    let shard: ShardRef = Rc::new(RefCell::new(shard));
    shard.borrow_mut().set_conn_gauge(spread.gauge(usize::from(id.0)));

    let mut tasks = Vec::new();
    for (peer, receiver) in receivers.streams() {
        let shard = shard.clone();
        let batches = batches.clone();
        let from = ShardId(u16::try_from(peer).expect("peer index fits u16"));
        tasks.push(spawn_local(async move {
            while let Some(mut batch) = receiver.recv().await {
                shard.borrow_mut().handle_batch(from, &mut batch);
                batches.give_back(from, id, batch);
                // A busy peer keeps this channel non-empty: let this shard's sockets be polled.
                reactor_turn::if_due().await;
            }
        }));
    }
    tasks.push(spawn_local(flush_outboxes(shard.clone(), senders, batches, outbox_notify)));
    tasks.push(spawn_local(commit_journal(shard.clone(), sync_notify)));
    tasks.push(spawn_local(super::resources::watch_disk(shard.clone(), config.clone())));

    let replayed = (recovered.records_replayed, recovered.torn_tail_bytes);
    let report = recover(&shard, recovered).await;
    tracing::info!(shard = %id, records = replayed.0, torn_tail_bytes = replayed.1, queues = report.queues,
        messages = report.messages, bindings = report.bindings, "log recovered");
    // Listeners open only once every shard has recovered, so no client sees a half-built broker.
    RECOVERED.fetch_add(1, Ordering::SeqCst);
    while RECOVERED.load(Ordering::SeqCst) < usize::from(config.shards) {
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }

    let users = Rc::new(Users::new(&config.users));
    tasks.extend(super::park::start(&shard));
    let mut accepting = Vec::new();
    for (_, receiver) in handoff_receivers.streams() {
        let (shard, users) = (shard.clone(), users.clone());
        accepting.push(spawn_local(async move {
            while let Some(handoff) = receiver.recv().await {
                match handoff {
                    Handoff::Accepted { stream, proto } => serve(stream, proto, &shard, &users),
                    Handoff::Moved(resume) => resume(&shard, &users),
                }
            }
        }));
    }
    let handoff = Rc::new(HandOver {
        senders: handoff_senders,
        spread,
        connection_count_max: config.limits.connection_count_max,
    });
    super::spread::install(handoff.clone());
    for listener in config.listeners.iter().filter(|l| l.proto != ListenerProto::Admin) {
        let bound = match TcpListener::bind(listener.addr) {
            Ok(bound) => bound,
            Err(e) => {
                let _ =
                    ready.send(Err(format!("cannot listen on {} for {}: {e}", listener.addr, listener.proto.name())));
                return;
            }
        };
        if id.0 == 0 {
            tracing::info!(proto = listener.proto.name(), addr = %listener.addr, "listening");
        }
        let proto = listener.proto;
        accepting.push(spawn_local(accept_loop(bound, proto, shard.clone(), users.clone(), handoff.clone())));
    }
    let _ = ready.send(Ok(()));
    // The spare segment is made after the listeners open: a takeover serves without waiting
    // for a 64 MiB preallocation (a roll before it is ready creates its segment itself).
    let spare_for = shard.clone();
    tasks.push(spawn_local(async move { prepare_next_segment(&spare_for).await }));
    while !shutting_down() {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
    // Close the listening sockets first: a client connecting now is refused and moves on to
    // the standby, instead of being accepted by the kernel into a backlog nobody serves any
    // more (its CONNECT would wait for a timeout).
    drop(accepting);
    final_sync(&shard).await;
    super::park::stop();
    drop(tasks);
}

/// Decides what transactions spanning shards whose commit this log lacks did to `recovered`,
/// by the commits every shard's log holds ([`Evidence`]); records in this log, and syncs, the
/// commits of those it keeps. Returns the highest transaction id any log names.
fn decide_transactions(
    id: ShardId,
    evidence: &Evidence,
    journal: &mut Journal,
    recovered: &mut ferry_storage::Recovered,
) -> Result<u64, String> {
    let (committed, undecided) = (std::mem::take(&mut recovered.committed), recovered.undecided.len());
    let (kept, tx_id_max) = evidence
        .exchange(&committed, recovered.tx_id_max, |committed| recovered.resolve(committed))
        .ok_or("another shard could not open its log")?;
    if undecided > 0 {
        tracing::info!(shard = %id, messages = undecided, kept_transactions = kept.len(),
            "messages touched by transactions (spanning shards, or logged in pieces) whose commit this log lacks: kept what another shard's log commits, undid the rest");
    }
    // Ids are (sequence << 16 | shard): leave room for billions more.
    if tx_id_max >> 16 > (1 << 48) - (1 << 32) {
        return Err(format!("transaction id {tx_id_max} read from the logs leaves no room for new ones"));
    }
    for tx_id in &kept {
        journal.append_tx_commit(*tx_id);
    }
    journal.sync_blocking().map_err(|e| format!("recording transaction commits: {e}"))?;
    if !evidence.recorded() {
        return Err("another shard could not record its transaction commits".to_owned());
    }
    Ok(tx_id_max)
}

thread_local! {
    /// Blocking-pool jobs of this shard not yet returned to it.
    static BLOCKING_IN_FLIGHT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// This executor's shard, once it joined the mesh: names its blocking thread.
    static SHARD_INDEX: std::cell::Cell<Option<u16>> = const { std::cell::Cell::new(None) };
    /// Set on a blocking-pool thread once it carries its shard's name.
    static LOG_THREAD_NAMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `job` on the blocking pool, counted so that a stopping shard can wait for it.
async fn run_blocking<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> R {
    struct Counted;
    impl Drop for Counted {
        fn drop(&mut self) {
            BLOCKING_IN_FLIGHT.with(|n| n.set(n.get() - 1));
        }
    }
    BLOCKING_IN_FLIGHT.with(|n| n.set(n.get() + 1));
    let _counted = Counted;
    let shard = SHARD_INDEX.with(std::cell::Cell::get);
    executor()
        .spawn_blocking(move || {
            name_log_thread(shard);
            job()
        })
        .await
}

/// Names the blocking thread that runs a shard's log jobs (syncs, compaction, spare segments)
/// `ferry-log-<shard>`, the first time it runs one. It would otherwise carry its executor's
/// name, so `top -H`, `perf` and `ferry-perf --broker-pid` could not tell the sync's CPU from
/// the event loop's. Cosmetic: if `/proc` refuses, the thread keeps the inherited name.
fn name_log_thread(shard: Option<u16>) {
    let Some(shard) = shard else { return };
    if LOG_THREAD_NAMED.with(|named| named.replace(true)) {
        return;
    }
    let _ = std::fs::write("/proc/thread-self/comm", format!("ferry-log-{shard}"));
}

/// Waits (up to `limit`) until no blocking job of this shard is outstanding.
async fn blocking_jobs_done(limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while BLOCKING_IN_FLIGHT.with(std::cell::Cell::get) > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

fn wake_hook(notify: &Rc<Notify>) -> Rc<dyn Fn()> {
    let notify = notify.clone();
    Rc::new(move || notify.notify())
}

async fn accept_loop(
    listener: TcpListener,
    proto: ListenerProto,
    shard: ShardRef,
    users: Rc<Users>,
    handoff: Rc<HandOver>,
) {
    let me = handoff.senders.peer_id();
    loop {
        let stream = match listener.shared_accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let target = handoff.spread.place(me);
        if target == me {
            serve(stream, proto, &shard, &users);
            continue;
        }
        tracing::trace!(proto = proto.name(), to = target, "handing a new connection to a shard with fewer");
        if let Err(back) = super::spread::send(&handoff, target, Handoff::Accepted { stream, proto }).await {
            // Only while stopping: the other shard's channel is gone.
            handoff.spread.unplace(target);
            if let Some(Handoff::Accepted { stream, proto }) = back {
                serve(stream, proto, &shard, &users);
            }
        }
    }
}

/// Serves an accepted connection on this shard, for the rest of its life.
fn serve(stream: AcceptedTcpStream, proto: ListenerProto, shard: &ShardRef, users: &Rc<Users>) {
    let stream = stream.bind_to_executor();
    let task = match proto {
        ListenerProto::Stomp => spawn_local(serve_stomp(stream, shard.clone(), users.clone())),
        ListenerProto::Amqp => spawn_local(serve_amqp(stream, shard.clone(), users.clone())),
        ListenerProto::Mqtt => spawn_local(serve_mqtt(stream, shard.clone(), users.clone())),
        // Served by its own thread (`admin`); never bound by a shard.
        ListenerProto::Admin => return,
    };
    task.detach();
}

async fn flush_outboxes(shard: ShardRef, senders: Senders<Vec<ShardMsg>>, batches: Arc<BatchPool>, notify: Rc<Notify>) {
    let me = senders.peer_id();
    let from = ShardId(u16::try_from(me).expect("peer index fits u16"));
    loop {
        notify.wait().await;
        loop {
            let mut sent = false;
            for peer in (0..senders.nr_consumers()).filter(|p| *p != me) {
                let to = ShardId(u16::try_from(peer).expect("peer index fits u16"));
                if shard.borrow().outbox_is_empty(to) {
                    continue;
                }
                let batch = shard.borrow_mut().swap_outbox(to, batches.take(from, to));
                sent = true;
                if senders.send_to(peer, batch).await.is_err() {
                    tracing::error!(peer, "shard channel closed");
                    return;
                }
            }
            if !sent {
                break;
            }
        }
    }
}

/// Syncs what was appended, compacts, prepares the next segment; once the shard is stopping,
/// starts nothing new ([`final_sync`] makes the last sync).
async fn commit_journal(shard: ShardRef, notify: Rc<Notify>) {
    while !shutting_down() {
        // First, too: a reopened log's last batch may be unvouched.
        mark_when_idle(&shard, &notify).await;
        notify.wait().await;
        sync_pending(&shard, false, Some(&notify)).await;
    }
}

/// How long a shard's log stays idle after a sync before it appends a synced mark.
const MARK_WHEN_IDLE_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// Once the log has been idle for [`MARK_WHEN_IDLE_AFTER`] after a sync, appends one record
/// whose synced mark vouches for the last batch (`ShardLog::wants_mark`); the commit task's
/// next round syncs it. Under load the next batch's records carry that mark anyway, so this
/// costs one small sync per idle spell, never one per batch. Returns at once when a record is
/// appended meanwhile (leaving the wake-up set for the commit task); other wake-ups do not
/// restart the wait.
async fn mark_when_idle(shard: &ShardRef, notify: &Notify) {
    let appended = |shard: &ShardRef| shard.borrow_mut().journal_mut().appended_offset();
    if !shard.borrow_mut().journal_mut().wants_mark() {
        return;
    }
    let idle_since = appended(shard);
    let mut deadline = glommio::timer::Timer::new(MARK_WHEN_IDLE_AFTER);
    loop {
        let idle = passed_unless_woken(&mut deadline, notify).await;
        if idle {
            break;
        }
        if appended(shard) != idle_since || !shard.borrow_mut().journal_mut().wants_mark() {
            notify.notify();
            return;
        }
    }
    let mut s = shard.borrow_mut();
    if !shutting_down() && s.journal_mut().wants_mark() {
        s.journal_mut().append_mark();
    }
}

/// Runs syncs until nothing appended waits; with `gathering` (the commit task's wake-up) each
/// sync first waits for the producers the last one released ([`crate::gather`]).
async fn sync_pending(shard: &ShardRef, last: bool, gathering: Option<&Notify>) {
    loop {
        if shutting_down() && !last {
            return;
        }
        if let Some(notify) = gathering {
            wait_for_siblings(shard, notify).await;
        }
        let Some(work) = shard.borrow_mut().journal_mut().sync_work() else { break };
        let started = std::time::Instant::now();
        let result = run_blocking(move || work.run()).await;
        crate::sync_time::SYNC_TIMES.record(started.elapsed());
        let mut s = shard.borrow_mut();
        if let Err(e) = s.journal_mut().complete_sync(result) {
            // A failed sync is fatal: never retry and acknowledge (ARCHITECTURE §4). So is a
            // lost lease: another process owns the log now (§5).
            if let ferry_storage::StorageError::LeaseLost(why) = &e {
                tracing::error!(shard = %s.id(), "lease lost, acknowledging nothing more: {why}");
                std::process::exit(crate::lease::EXIT_LEASE_LOST);
            }
            tracing::error!(shard = %s.id(), "journal sync failed, stopping the broker: {e}");
            std::process::exit(70);
        }
        s.journal_synced();
        let now = std::time::Instant::now();
        s.journal_mut().gather_mut().synced(now - started, now);
        s.maybe_compact();
        if last {
            // Covers everything appended before it was cut; clients still sending while the
            // shard stops would keep a loop going forever, and get no receipt anyway.
            return;
        }
    }
    if last || shutting_down() {
        return;
    }
    prepare_next_segment(shard).await;
    let job = shard.borrow_mut().journal_mut().compact_job();
    if let Some(job) = job {
        match run_blocking(move || job.run()).await {
            Ok(report) => {
                tracing::debug!(deleted = report.segments_deleted, bytes = report.bytes_freed, "compaction done")
            }
            // The segments left behind go back to the log: a later round deletes them, and
            // none after them goes first (their messages' settles may lie there).
            Err(failed) => {
                let e = shard.borrow_mut().journal_mut().compact_failed(failed);
                tracing::warn!("deleting settled segments failed, retried in a few seconds: {e}");
            }
        }
    }
}

/// Waits for `deadline` or for `notify`, whichever comes first: true when the deadline passed.
async fn passed_unless_woken(deadline: &mut glommio::timer::Timer, notify: &Notify) -> bool {
    futures_lite::future::or(
        async {
            deadline.await;
            true
        },
        async {
            notify.wait().await;
            false
        },
    )
    .await
}

/// Holds the next sync while [`crate::gather::Gather`] waits for a released producer, waking at
/// each completion added (they notify the commit task) and at the deadline.
async fn wait_for_siblings(shard: &ShardRef, notify: &Notify) {
    let hold = |shard: &ShardRef| shard.borrow_mut().journal_mut().gather_mut().hold(std::time::Instant::now());
    if let Some(until) = hold(shard) {
        crate::gather::WAITS_TOTAL.fetch_add(1, Ordering::Relaxed);
        let mut deadline = glommio::timer::Timer::new(until.saturating_duration_since(std::time::Instant::now()));
        loop {
            let passed = passed_unless_woken(&mut deadline, notify).await;
            if passed || hold(shard).is_none() {
                break;
            }
        }
    }
    shard.borrow_mut().journal_mut().gather_mut().cut();
}

/// Creating, preallocating and mapping a segment file takes milliseconds: do it on the
/// blocking pool before the log needs it, so a roll is only a rename.
async fn prepare_next_segment(shard: &ShardRef) {
    let job = shard.borrow_mut().journal_mut().spare_job();
    if let Some(job) = job {
        let result = run_blocking(move || job.run()).await;
        shard.borrow_mut().journal_mut().install_spare(result);
    }
}

/// The last sync of a clean stop. A sync, compaction or spare started by another task may
/// still be running: wait for those first (a sync in flight means the next one has more to
/// cover), and again after, so that the lease is released, and the executor dropped, only once
/// no job of this shard runs any more.
async fn final_sync(shard: &ShardRef) {
    blocking_jobs_done(STOP_JOBS_WAIT).await;
    sync_pending(shard, true, None).await;
    // The last batch's mark (see `mark_when_idle`), so a clean stop leaves no batch unvouched.
    if shard.borrow_mut().journal_mut().wants_mark() {
        shard.borrow_mut().journal_mut().append_mark();
        sync_pending(shard, true, None).await;
    }
    blocking_jobs_done(STOP_JOBS_WAIT).await;
}
