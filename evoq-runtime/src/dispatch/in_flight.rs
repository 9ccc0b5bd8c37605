//! The dispatches under way, so that a stop waits for them: a command accepted before the
//! stop completes, and its events are in the store when `Evoq::stop` flushes it.
//!
//! A dispatch enters before it checks whether the runtime stopped, and the stop marks the
//! runtime stopped before it counts: so either the dispatch sees the stop and is refused, or
//! the stop sees the dispatch and waits for it. Two atomic operations per dispatch; nobody is
//! woken unless a stop waits.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The count of dispatches under way, and the stop's wait for it to reach zero.
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    stopped: AtomicBool,
    drained: Notify,
}

impl InFlight {
    /// Counts a dispatch under way until the returned guard is dropped.
    pub(crate) fn enter(&self) -> Entered<&InFlight> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Entered(self)
    }

    /// Counts work of a dispatch that goes on in a task of its own (a keyed command, which
    /// completes when its caller stops waiting) until the returned guard is dropped. Taken
    /// while the dispatch's own guard is held, so the count never drops to zero in between.
    pub(crate) fn enter_owned(self: &Arc<Self>) -> Entered<Arc<InFlight>> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Entered(Arc::clone(self))
    }

    /// Whether [`stop`](Self::stop) was called: checked after [`enter`](Self::enter).
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Refuses what enters from now on ([`is_stopped`](Self::is_stopped)).
    pub(crate) fn refuse(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Waits until every dispatch that entered before [`refuse`](Self::refuse) is done.
    pub(crate) async fn drained(&self) {
        loop {
            // Registered before the count is read: a guard dropped in between wakes it.
            let drained = self.drained.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            drained.await;
        }
    }

    fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.is_stopped() {
            self.drained.notify_waiters();
        }
    }
}

/// A dispatch under way (see [`InFlight::enter`]): counted until dropped.
pub(crate) struct Entered<P: Deref<Target = InFlight>>(P);

impl<P: Deref<Target = InFlight>> Drop for Entered<P> {
    fn drop(&mut self) {
        self.0.leave();
    }
}
