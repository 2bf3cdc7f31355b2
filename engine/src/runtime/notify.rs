//! A single-threaded wake-up flag: `notify()` sets it and wakes the waiter; `wait()` resolves
//! once it is set and clears it. Many notifies before a wait collapse into one wake-up, which
//! is what batching wants. Lives on one executor; not `Send`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Notify {
    state: RefCell<(bool, Option<Waker>)>,
}

impl Notify {
    pub fn notify(&self) {
        let mut state = self.state.borrow_mut();
        state.0 = true;
        if let Some(waker) = state.1.take() {
            waker.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| self.poll_wait(cx)).await;
    }

    /// Ready (and cleared) once set; otherwise `cx` is woken by the next `notify()`.
    pub fn poll_wait(&self, cx: &Context<'_>) -> Poll<()> {
        let mut state = self.state.borrow_mut();
        if state.0 {
            state.0 = false;
            Poll::Ready(())
        } else {
            if !state.1.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                state.1 = Some(cx.waker().clone());
            }
            Poll::Pending
        }
    }
}
