//! A single-threaded wake-up flag: `notify()` sets it and wakes the waiter; `wait()` resolves
//! once it is set and clears it. Many notifies before a wait collapse into one wake-up, which
//! is what batching wants. Lives on one executor; not `Send`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

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
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.0 {
                state.0 = false;
                Poll::Ready(())
            } else {
                state.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}
