//! Lets the executor poll I/O while a task that never waits for I/O keeps it busy (a flooding
//! publisher's reader, a mesh receiver fed by a busy peer shard).
//!
//! Why it is needed (glommio 0.9): the executor polls I/O — submits the readiness polls that
//! sockets queued, reaps completions, fires timers — only when its task queues run dry or
//! when `need_preempt` turns true, which is when a completion lands on the latency ring, in
//! practice the preemption timer (100 ms by default). A socket read first tries an
//! optimistic `recv`; only after a short read does it queue a readiness poll, on the main
//! ring, not submitted until the next I/O poll. So while one connection's reads come back
//! full, its reader and handler keep the queue runnable and every other socket of the shard
//! (a consumer's acks) waits for the 100 ms timer. `yield_now`/`yield_task_queue_now` do not
//! help: the scheduler returns to the same queue without polling I/O. Waiting on a timer
//! does: the task is parked until the reactor runs, so once the other tasks have had their
//! turn the queue drains and the executor polls I/O.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Longest a busy task runs on without letting the executor poll I/O.
const BUDGET: Duration = Duration::from_micros(500);
/// The timer a turn waits on: any non-zero value fires only in the reactor.
const TURN: Duration = Duration::from_micros(1);

thread_local! {
    static LAST_TURN: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Waits for the executor's next I/O poll.
pub(super) async fn now() {
    glommio::timer::sleep(TURN).await;
    LAST_TURN.with(|last| last.set(Some(Instant::now())));
}

/// Waits for the executor's next I/O poll if no task of this shard did for [`BUDGET`].
pub(super) async fn if_due() {
    let due = LAST_TURN.with(|last| last.get().is_none_or(|at| at.elapsed() >= BUDGET));
    if due {
        now().await;
    }
}
