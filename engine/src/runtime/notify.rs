//! A single-threaded wake-up flag: `notify()` sets it and wakes the waiter; `wait()` resolves
//! once it is set and clears it. Many notifies before a wait collapse into one wake-up, which
//! is what batching wants. Lives on one executor; not `Send`. A parked connection's flag has
//! no waiter: its `notify()` resumes the connection instead (see [`super::park`]).

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Notify {
    state: RefCell<State>,
}

#[derive(Debug, Default)]
struct State {
    set: bool,
    /// 1 + the parking slot of the parked connection this flag belongs to; 0 when not parked.
    parked: u32,
    waker: Option<Waker>,
}

impl crate::shard::mailbox::Wake for Notify {
    fn wake(&self) {
        self.notify();
    }
}

impl Notify {
    pub fn notify(&self) {
        let parked = {
            let mut state = self.state.borrow_mut();
            state.set = true;
            if let Some(waker) = state.waker.take() {
                waker.wake();
                return;
            }
            std::mem::take(&mut state.parked)
        };
        if let Some(slot) = parked.checked_sub(1) {
            super::park::mail_for(slot);
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| self.poll_wait(cx)).await;
    }

    /// Ready (and cleared) once set; otherwise `cx` is woken by the next `notify()`.
    pub fn poll_wait(&self, cx: &Context<'_>) -> Poll<()> {
        let mut state = self.state.borrow_mut();
        if state.set {
            state.set = false;
            Poll::Ready(())
        } else {
            if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                state.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        }
    }

    /// The flag's connection is parked in `slot` (no task waits on it): a `notify()` now
    /// resumes it. A set flag is cleared: the connection parked with an empty mailbox.
    pub(super) fn park(&self, slot: u32) {
        let mut state = self.state.borrow_mut();
        state.set = false;
        state.waker = None;
        state.parked = slot.saturating_add(1);
    }

    /// The connection is running again (a set flag stays set: mail that came meanwhile).
    pub(super) fn unpark(&self) {
        self.state.borrow_mut().parked = 0;
    }
}
