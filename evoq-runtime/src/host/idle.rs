//! The idle timers of one aggregate type's live instances: one queue of deadlines per registry
//! and one task that fires them, instead of a timer per instance.
//!
//! A command moves its instance's deadline in the instance's [`Cell`] (an atomic store). The
//! queue is touched only when the new deadline comes earlier than the queued one: a deadline
//! that moves later (every command of a busy instance pushes it back) is found when the queued
//! entry fires, and queued again then. Each live instance has at most one entry, removed when
//! it leaves.
//!
//! An entry that comes due while a command (or another timeout) holds its cell is dropped by
//! the task: the holder may not be done with it. The last holder to let go ([`Taken`]) queues
//! the cell's deadline again when it finds no entry, so no timer is lost however the two
//! interleave.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::cell::{Cell, NEVER};
use crate::aggregate::Aggregate;

/// What the timer task needs of the registry whose instances it times out.
pub(crate) trait Expiry<A: Aggregate>: Send + Sync + Sized + 'static {
    /// The registry's timers.
    fn timers(&self) -> &IdleTimers<A>;
    /// The origin of the registry's millisecond clock.
    fn epoch(&self) -> Instant;
    /// Milliseconds since the epoch.
    fn now_millis(&self) -> u64;
    /// Takes `cell` for its idle timeout: `false` when it left, or a command holds it.
    fn take_idle(&self, cell: &Arc<Cell<A>>) -> bool;
    /// Runs the idle timeout of `cell`, taken by [`take_idle`](Self::take_idle).
    fn time_out(self: Arc<Self>, cell: Arc<Cell<A>>) -> impl Future<Output = ()> + Send;
}

/// The cells due at each deadline (in milliseconds since the registry's epoch). Instances
/// created together share a millisecond: a bucket of pointers takes a few bytes per instance,
/// where an entry of its own in the map would take about forty.
type Queue<A> = BTreeMap<u64, Vec<Arc<Cell<A>>>>;

/// The queue of one registry and the wake-up of its task.
pub(crate) struct IdleTimers<A: Aggregate> {
    queue: Mutex<Queue<A>>,
    /// Wakes the task when an entry comes before the one it sleeps until.
    wake: Notify,
    /// Whether the task runs (it starts with the first timer).
    started: AtomicBool,
    /// Set when the runtime stops: the task ends.
    closed: AtomicBool,
}

impl<A: Aggregate> Default for IdleTimers<A> {
    fn default() -> Self {
        IdleTimers {
            queue: Mutex::default(),
            wake: Notify::new(),
            started: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }
}

/// Takes `cell` out of the bucket of `deadline`.
fn remove<A: Aggregate>(queue: &mut Queue<A>, deadline: u64, cell: &Arc<Cell<A>>) {
    if let Some(bucket) = queue.get_mut(&deadline) {
        if let Some(at) = bucket.iter().position(|queued| Arc::ptr_eq(queued, cell)) {
            bucket.swap_remove(at);
        }
        if bucket.is_empty() {
            queue.remove(&deadline);
        }
    }
}

impl<A: Aggregate> IdleTimers<A> {
    fn queue(&self) -> MutexGuard<'_, Queue<A>> {
        // The map holds no invariant a panic could break halfway.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes sure `cell` has an entry no later than `deadline`.
    pub(crate) fn schedule<R: Expiry<A>>(
        &self,
        registry: &Arc<R>,
        cell: &Arc<Cell<A>>,
        deadline: u64,
    ) {
        // The common case: an entry at or before the deadline is queued already.
        if deadline >= cell.scheduled.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire)
        {
            return;
        }
        let first = {
            let mut queue = self.queue();
            let queued = cell.scheduled.load(Ordering::Acquire);
            if deadline >= queued {
                return;
            }
            if queued != NEVER {
                remove(&mut queue, queued, cell);
            }
            queue.entry(deadline).or_default().push(Arc::clone(cell));
            cell.scheduled.store(deadline, Ordering::SeqCst);
            queue.first_key_value().map(|(at, _)| *at) == Some(deadline)
        };
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(fire(Arc::clone(registry)));
        } else if first {
            self.wake.notify_one();
        }
    }

    /// Queues the deadline of `cell` again when it has none queued: its entry came due while
    /// the cell was held, and the task dropped it. Called by the cell's last user as it lets go.
    fn requeue<R: Expiry<A>>(&self, registry: &Arc<R>, cell: &Arc<Cell<A>>) {
        // Sequentially consistent with the task's `scheduled` store and its take of the cell
        // (`Expiry::take_idle`): either the task saw this user gone and took the cell, or this
        // load sees the entry gone.
        let deadline = cell.deadline.load(Ordering::SeqCst);
        if deadline != NEVER && cell.scheduled.load(Ordering::SeqCst) == NEVER {
            self.schedule(registry, cell, deadline);
        }
    }

    /// Removes the entry of `cell` (it left the registry).
    pub(crate) fn unschedule(&self, cell: &Arc<Cell<A>>) {
        let mut queue = self.queue();
        let queued = cell.scheduled.swap(NEVER, Ordering::AcqRel);
        if queued != NEVER {
            remove(&mut queue, queued, cell);
        }
    }

    /// Drops every entry and ends the task (the runtime stops).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        {
            let mut queue = self.queue();
            for cell in queue.values().flatten() {
                cell.scheduled.store(NEVER, Ordering::Release);
            }
            queue.clear();
        }
        self.wake.notify_one();
    }

    /// Takes the entries due at `now` out of the queue.
    fn take_due(&self, now: u64, due: &mut Vec<Arc<Cell<A>>>) {
        let mut queue = self.queue();
        while let Some(entry) = queue.first_entry() {
            if *entry.key() > now {
                return;
            }
            for cell in entry.remove() {
                // Before the take of the cell (`Expiry::take_idle`): see `requeue`.
                cell.scheduled.store(NEVER, Ordering::SeqCst);
                due.push(cell);
            }
        }
    }
}

/// The task of one registry's timers: fires the due entries, then sleeps until the next one
/// (or until an earlier one is queued). It ends when the runtime stops.
async fn fire<A: Aggregate, R: Expiry<A>>(registry: Arc<R>) {
    let timers = registry.timers();
    let mut due = Vec::new();
    while !timers.closed.load(Ordering::Acquire) {
        let now = registry.now_millis();
        timers.take_due(now, &mut due);
        for cell in due.drain(..) {
            let deadline = cell.deadline.load(Ordering::Acquire);
            if deadline == NEVER {
                // A command said "no timeout" since: the next command arms it again.
            } else if deadline > now {
                // Pushed back by commands since it was queued.
                timers.schedule(&registry, &cell, deadline);
            } else if registry.take_idle(&cell) {
                // In this task, one after another: a task per timeout would cost more than
                // the timeouts themselves (most hibernate or passivate in memory at once), and
                // its memory would stay behind in the allocator when thousands time out
                // together.
                Arc::clone(&registry).time_out(cell).await;
            }
            // Else it left, or a user holds it: the last user to let go queues its deadline
            // again (`Taken`), whether or not it moved the deadline before.
        }
        // Queued again above, or by commands meanwhile.
        let next = timers.queue().first_key_value().map(|(at, _)| *at);
        // `notify_one` keeps a permit when nobody waits: a wake-up between the look above and
        // this wait is not lost.
        let wake = timers.wake.notified();
        match next {
            Some(at) => {
                let at = registry.epoch() + Duration::from_millis(at);
                tokio::select! {
                    () = wake => {}
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                }
            }
            None => wake.await,
        }
    }
}

/// A cell taken from its registry (counted among its users) by a command or an idle timeout;
/// given back when the user is done or gives up (the future that held it was dropped).
///
/// The last user to let go queues the cell's deadline again when the timer task dropped its
/// entry meanwhile (it came due while the cell was held).
pub(crate) struct Taken<'a, A: Aggregate, R: Expiry<A>> {
    registry: &'a Arc<R>,
    cell: &'a Arc<Cell<A>>,
    held: bool,
}

impl<'a, A: Aggregate, R: Expiry<A>> Taken<'a, A, R> {
    /// `cell` of `registry`, taken (counted as used) by the caller.
    pub(crate) fn new(registry: &'a Arc<R>, cell: &'a Arc<Cell<A>>) -> Self {
        Taken {
            registry,
            cell,
            held: true,
        }
    }

    pub(crate) fn give_back(&mut self) {
        if !std::mem::take(&mut self.held) {
            return;
        }
        // Sequentially consistent: see `IdleTimers::requeue`.
        if self.cell.users.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.registry.timers().requeue(self.registry, self.cell);
        }
    }
}

impl<A: Aggregate, R: Expiry<A>> Drop for Taken<'_, A, R> {
    fn drop(&mut self) {
        self.give_back();
    }
}
