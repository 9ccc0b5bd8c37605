//! One handler's task: subscription, delivery with retries, dead letters, checkpoints.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use uuid::Uuid;

use super::consumer::{Consumer, EventMeta, HandlerFailure, HandlerFuture};
use super::policy::{HandlerConfig, OnError, Resolved, RetryStrategy, StartFrom};
use super::state::{Control, DeliveryCounters, HandlerState};
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::store::{DeadLetter, EventFilter, EventStore, Lease, StoreError, Subscription};
use crate::util::panic::{CatchPanic, panic_message};

/// How the task backs off when the store fails (reads, dead-letter saves).
const STORE_RETRY: RetryStrategy =
    RetryStrategy::exponential(Duration::from_millis(50), Duration::from_secs(5));

/// How often a handler whose lease another node holds asks for it again.
const LEASE_POLL: Duration = Duration::from_millis(200);

/// The state of one handler's task.
pub(crate) struct Task {
    state: Arc<HandlerState>,
    store: Arc<dyn EventStore>,
    options: Resolved,
    checkpoint_every: u64,
    page_size: usize,
    start_after: u64,
    /// The position last saved, or the start position: nothing up to it needs saving (a
    /// runtime that stops before its handler moved leaves the stored checkpoint alone).
    saved: u64,
    requests: mpsc::Receiver<Control>,
    shutdown: watch::Receiver<bool>,
    /// The position processed through but not published yet (0: none): published, and the
    /// waiters woken, by [`announce`](Self::announce).
    unannounced: u64,
}

/// What became of one event.
enum Delivered {
    /// Handled, dead-lettered or skipped: go on.
    Next,
    /// The runtime is stopping.
    Shutdown,
    /// `OnError::Stop`: the handler stops before this event.
    Stop(String),
}

enum Next {
    Shutdown,
    Control(Control),
    Events(Result<Vec<Arc<RecordedEvent>>, StoreError>),
}

impl Task {
    pub(crate) fn new(
        state: Arc<HandlerState>,
        store: Arc<dyn EventStore>,
        options: Resolved,
        defaults: &HandlerConfig,
        start_after: u64,
        requests: mpsc::Receiver<Control>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Task {
            state,
            store,
            options,
            checkpoint_every: defaults.checkpoint_every,
            page_size: defaults.page_size,
            start_after,
            saved: start_after,
            requests,
            shutdown,
            unannounced: 0,
        }
    }

    /// Delivers events to `consumer` until the runtime stops (or the handler does), holding the
    /// store's [`Lease`] on the handler's name while it delivers: on a store shared by several
    /// nodes it waits (polling every [`LEASE_POLL`]) until no other node runs the handler, then
    /// resumes from the checkpoint that node saved.
    pub(crate) async fn run<C: Consumer>(mut self, mut consumer: C) {
        if C::CHECKPOINT_EVERY_EVENT {
            self.checkpoint_every = 1;
            self.kept_checkpoint(&mut consumer).await;
        }
        loop {
            let Some(lease) = self.acquire().await else {
                let start = self.start_after;
                self.finish(&mut consumer, start).await;
                return;
            };
            if !self.serve(&mut consumer, &lease).await {
                return;
            }
            tracing::warn!(
                name: "evoq.handler.lease",
                stage = "lost",
                handler = &*self.state.name,
            );
        }
    }

    /// Waits for the lease on the handler's name; `None` if the runtime stops first. While
    /// another node holds it, the published position follows the checkpoint that node saves.
    /// With a shared lease, starts after the checkpoint if another node moved it further.
    async fn acquire(&mut self) -> Option<Lease> {
        let mut failures = 0u32;
        loop {
            if self.stopping() {
                return None;
            }
            let delay = match self.store.try_lease(&self.state.name).await {
                Ok(Some(lease)) => {
                    if lease.is_shared() {
                        match self.store.load_checkpoint(&self.state.name).await {
                            Ok(saved) => {
                                if let Some(saved) = saved.filter(|s| *s > self.start_after) {
                                    self.start_after = saved;
                                    self.saved = saved;
                                    self.publish(saved);
                                    self.announce();
                                }
                            }
                            Err(error) => {
                                drop(lease);
                                failures = failures.saturating_add(1);
                                tracing::warn!(
                                    name: "evoq.handler.checkpoint",
                                    stage = "exception",
                                    handler = &*self.state.name,
                                    error = %error,
                                );
                                if !self.sleep(STORE_RETRY.delay(failures)).await {
                                    return None;
                                }
                                continue;
                            }
                        }
                        tracing::info!(
                            name: "evoq.handler.lease",
                            stage = "acquired",
                            handler = &*self.state.name,
                            position = self.start_after,
                        );
                    }
                    return Some(lease);
                }
                Ok(None) => {
                    // Another node runs the handler: follow its checkpoint, so waits on this
                    // node (strong consistency, `wait_for`) see the handler's progress.
                    if let Ok(Some(saved)) = self.store.load_checkpoint(&self.state.name).await {
                        self.publish(saved);
                        self.announce();
                    }
                    LEASE_POLL
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = STORE_RETRY.delay(failures);
                    tracing::warn!(
                        name: "evoq.handler.lease",
                        stage = "exception",
                        handler = &*self.state.name,
                        error = %error,
                        retry_in_ms = delay.as_millis() as u64,
                    );
                    delay
                }
            };
            if !self.sleep(delay).await {
                return None;
            }
        }
    }

    /// Delivers while `lease` holds; `true` when the lease was lost (ask again), `false` when
    /// the task is done.
    async fn serve<C: Consumer>(&mut self, consumer: &mut C, lease: &Lease) -> bool {
        let filter = EventFilter::types(
            self.state
                .event_types
                .iter()
                .copied()
                .chain(self.state.renamed_from.iter().copied()),
        );
        let mut subscription =
            Subscription::new(Arc::clone(&self.store), filter.clone(), self.start_after)
                .with_page_size(self.page_size);
        let head = self.store.head();
        let mut processed = self.start_after;
        let mut read_failures = 0u32;
        tracing::debug!(
            name: "evoq.handler.start",
            handler = &*self.state.name,
            position = processed,
        );
        loop {
            if self.stopping() {
                break;
            }
            if lease.is_lost() {
                return true;
            }
            let next = tokio::select! {
                biased;
                _ = self.shutdown.changed() => Next::Shutdown,
                Some(control) = self.requests.recv() => Next::Control(control),
                events = subscription.next_progress() => Next::Events(events),
            };
            let events = match next {
                Next::Shutdown => break,
                Next::Control(Control::Redeliver { event_id, reply }) => {
                    let result = self.redeliver(consumer, event_id).await;
                    let _ = reply.send(result);
                    continue;
                }
                Next::Control(Control::Rebuild { reply }) => {
                    let result = self.rebuild(consumer).await;
                    if result.is_ok() {
                        subscription =
                            Subscription::new(Arc::clone(&self.store), filter.clone(), 0)
                                .with_page_size(self.page_size);
                        processed = 0;
                    }
                    let _ = reply.send(result);
                    continue;
                }
                Next::Events(Ok(events)) => {
                    read_failures = 0;
                    events
                }
                Next::Events(Err(error)) => {
                    read_failures = read_failures.saturating_add(1);
                    let delay = STORE_RETRY.delay(read_failures);
                    tracing::warn!(
                        name: "evoq.handler.subscription",
                        stage = "exception",
                        handler = &*self.state.name,
                        error = %error,
                        retry_in_ms = delay.as_millis() as u64,
                    );
                    if !self.sleep(delay).await {
                        break;
                    }
                    continue;
                }
            };
            for record in events {
                let position = record.global_position;
                // The page holds every matching event of the range it scanned: nothing the
                // handler takes lies between the last one and this one.
                if position.saturating_sub(1) > processed {
                    processed = position - 1;
                    self.publish(processed);
                }
                let event = EventMeta::new(record);
                match self.deliver(consumer, &event).await {
                    Delivered::Next => {}
                    Delivered::Shutdown => {
                        self.finish(consumer, processed).await;
                        return false;
                    }
                    Delivered::Stop(reason) => {
                        self.publish(processed);
                        self.announce();
                        self.state.progress.send_modify(|progress| {
                            progress.stopped = Some(Arc::from(reason.as_str()));
                        });
                        self.finish(consumer, processed).await;
                        return false;
                    }
                }
                processed = position;
                if C::CHECKPOINT_EVERY_EVENT {
                    // The read model and the checkpoint advance together, and a waiter on the
                    // position finds both there.
                    self.save(consumer, processed).await;
                    self.publish(processed);
                } else {
                    self.publish(processed);
                    let since = processed.saturating_sub(self.saved);
                    if since >= self.checkpoint_every {
                        self.save(consumer, processed).await;
                    }
                }
                // Share the thread during a long catch-up of handlers that never wait (and
                // let the waiters know how far it got before it yields).
                let mut budget = pin!(tokio::task::consume_budget());
                if poll_once(budget.as_mut()).await.is_pending() {
                    self.announce();
                    budget.await;
                }
            }
            // Every matching event up to the scanned position has been processed.
            let through = subscription.scanned_through();
            if through > processed {
                processed = through;
                if !C::CHECKPOINT_EVERY_EVENT {
                    self.publish(processed);
                }
            }
            self.announce();
            if self.saved != processed && (processed >= *head.borrow() || C::CHECKPOINT_EVERY_EVENT)
            {
                self.save(consumer, processed).await;
            }
            if C::CHECKPOINT_EVERY_EVENT {
                self.publish(processed);
                self.announce();
            }
        }
        self.finish(consumer, processed).await;
        false
    }

    /// A consumer that keeps its checkpoint (a read model committing it with its changes)
    /// starts after it, unless told to start elsewhere.
    async fn kept_checkpoint<C: Consumer>(&mut self, consumer: &mut C) {
        if self.options.start_from != StartFrom::Checkpoint {
            return;
        }
        match consumer.checkpoint(&self.state.name).await {
            Ok(Some(position)) => {
                self.start_after = position;
                self.saved = position;
                self.state.progress.send_modify(|progress| {
                    progress.position = position;
                });
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(
                name: "evoq.projection.checkpoint",
                stage = "exception",
                projection = &*self.state.name,
                error = %error,
                "the read model's checkpoint could not be read; starting from the event store's",
            ),
        }
    }

    /// Clears the consumer's state and resets its checkpoint and position to 0; the caller
    /// then reads from the first event again.
    async fn rebuild<C: Consumer>(&mut self, consumer: &mut C) -> Result<(), Error> {
        let name = Arc::clone(&self.state.name);
        let rebuild_error = |reason: String| Error::Rebuild {
            projection: name.to_string(),
            reason,
        };
        consumer.reset().await.map_err(rebuild_error)?;
        match consumer.commit(&name, 0).await {
            Ok(true) => {}
            Ok(false) => self
                .store
                .save_checkpoint(&name, 0)
                .await
                .map_err(|error| rebuild_error(error.to_string()))?,
            Err(reason) => return Err(rebuild_error(reason)),
        }
        self.saved = 0;
        self.unannounced = 0;
        self.state
            .progress
            .send_modify(|progress| progress.position = 0);
        tracing::info!(
            name: "evoq.projection.rebuild",
            stage = "start",
            projection = &*name,
        );
        Ok(())
    }

    /// Whether the runtime is stopping (asked to, or dropped).
    fn stopping(&self) -> bool {
        *self.shutdown.borrow() || self.shutdown.has_changed().is_err()
    }

    /// Sleeps `delay` unless the runtime stops first; `false` when it does.
    async fn sleep(&mut self, delay: Duration) -> bool {
        self.announce();
        if delay.is_zero() {
            return !self.stopping();
        }
        tokio::select! {
            _ = self.shutdown.changed() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Records the handler's position, to be published by [`announce`](Self::announce), which
    /// the task calls at the end of every page and before anything that may wait (a handler
    /// that does not complete at once, a yield to the scheduler, a retry delay, a store call,
    /// the wait for new events). Publishing takes the watch's lock and wakes the waiters; this
    /// way a burst of events handled without waiting costs one of each, and no waiter sleeps
    /// while the handler does.
    fn publish(&mut self, position: u64) {
        self.unannounced = self.unannounced.max(position);
    }

    /// Publishes the position recorded since the last call, if it moved, and wakes the waiters.
    /// The rest of an attempt that did not complete at once: waiters learn the position
    /// first; `None` when the runtime stops meanwhile.
    async fn complete<F: Future + Unpin>(&mut self, delivery: F) -> Option<F::Output> {
        self.announce();
        tokio::select! {
            biased;
            result = delivery => Some(result),
            _ = self.shutdown.changed() => None,
        }
    }

    fn announce(&mut self) {
        let position = std::mem::take(&mut self.unannounced);
        if position != 0 {
            self.state.progress.send_if_modified(|progress| {
                let moved = progress.position < position;
                if moved {
                    progress.position = position;
                }
                moved
            });
        }
    }

    /// Saves the checkpoint (with the consumer's state when it keeps it); a failure is logged
    /// and the next save tries again.
    async fn save<C: Consumer>(&mut self, consumer: &mut C, position: u64) {
        self.announce();
        match consumer.commit(&self.state.name, position).await {
            Ok(true) => {
                self.saved = position;
                return;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(
                    name: "evoq.projection.checkpoint",
                    stage = "exception",
                    projection = &*self.state.name,
                    position,
                    error = %error,
                );
                return;
            }
        }
        match self.store.save_checkpoint(&self.state.name, position).await {
            Ok(()) => self.saved = position,
            Err(error) => tracing::warn!(
                name: "evoq.handler.checkpoint",
                stage = "exception",
                handler = &*self.state.name,
                position,
                error = %error,
            ),
        }
    }

    /// The last checkpoint, as the task ends; waiters on the handler learn that it stopped.
    async fn finish<C: Consumer>(&mut self, consumer: &mut C, processed: u64) {
        self.publish(processed);
        self.announce();
        if self.saved != processed {
            self.save(consumer, processed).await;
        }
        self.state.progress.send_modify(|progress| {
            if progress.stopped.is_none() {
                progress.stopped = Some(Arc::from("the runtime stopped"));
            }
        });
        tracing::debug!(
            name: "evoq.handler.shutdown",
            handler = &*self.state.name,
            position = processed,
        );
    }

    /// Delivers one event with the handler's retries and error policy.
    async fn deliver<C: Consumer>(&mut self, consumer: &mut C, event: &EventMeta) -> Delivered {
        let mut first_failed_at = None;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let result = if tracing::level_enabled!(tracing::Level::DEBUG) {
                // The `evoq.handler.event` span may be enabled: the full attempt.
                let name = Arc::clone(&self.state.name);
                let mut delivery = pin!(attempt_once(&name, consumer, event, attempt));
                match poll_once(delivery.as_mut()).await {
                    Poll::Ready(result) => result,
                    Poll::Pending => match self.complete(&mut delivery).await {
                        Some(result) => result,
                        None => return Delivered::Shutdown,
                    },
                }
            } else {
                // The span is disabled (`debug_span!` checks this level first): the same
                // attempt without it, in this future's own state.
                match start_attempt(consumer, event) {
                    Err(failure) => Err(failure),
                    Ok(mut delivery) => match poll_once(&mut delivery).await {
                        Poll::Ready(result) => result,
                        // Most handlers complete at once: they never poll the shutdown nor
                        // wake waiters.
                        Poll::Pending => match self.complete(&mut delivery).await {
                            Some(result) => result,
                            None => return Delivered::Shutdown,
                        },
                    },
                }
            };
            let failure = match result {
                Ok(()) => {
                    DeliveryCounters::add(&self.state.counters.handled);
                    return Delivered::Next;
                }
                Err(failure) => failure,
            };
            let failed_at = SystemTime::now();
            let first_failed_at = *first_failed_at.get_or_insert(failed_at);
            if attempt < self.options.max_attempts {
                let delay = self.options.retry.delay(attempt);
                DeliveryCounters::add(&self.state.counters.retries);
                tracing::info!(
                    name: "evoq.handler.retry",
                    handler = &*self.state.name,
                    event_type = event.event_type(),
                    position = event.global_position(),
                    event_id = %event.event_id(),
                    attempt,
                    max_attempts = self.options.max_attempts,
                    delay_ms = delay.as_millis() as u64,
                    error = %failure,
                );
                if !self.sleep(delay).await {
                    return Delivered::Shutdown;
                }
                continue;
            }
            return match self.options.on_error {
                OnError::DeadLetter => {
                    let stored = self
                        .dead_letter(event, &failure, attempt, first_failed_at, failed_at)
                        .await;
                    if stored {
                        Delivered::Next
                    } else {
                        Delivered::Shutdown
                    }
                }
                OnError::Skip => {
                    DeliveryCounters::add(&self.state.counters.skipped);
                    tracing::warn!(
                        name: "evoq.handler.skip",
                        handler = &*self.state.name,
                        event_type = event.event_type(),
                        position = event.global_position(),
                        event_id = %event.event_id(),
                        attempts = attempt,
                        error = %failure,
                    );
                    Delivered::Next
                }
                OnError::Stop => {
                    tracing::error!(
                        name: "evoq.handler.stop",
                        handler = &*self.state.name,
                        event_type = event.event_type(),
                        position = event.global_position(),
                        event_id = %event.event_id(),
                        attempts = attempt,
                        error = %failure,
                    );
                    Delivered::Stop(format!(
                        "event `{}` at position {} failed {attempt} time(s): {failure}",
                        event.event_type(),
                        event.global_position()
                    ))
                }
            };
        }
    }

    /// Stores the event as a dead letter (merged with an entry left by an earlier run), trying
    /// until the store accepts it: an event is never dropped. `false` if the runtime stopped.
    async fn dead_letter(
        &mut self,
        event: &EventMeta,
        failure: &HandlerFailure,
        attempts: u32,
        first_failed_at: SystemTime,
        last_failed_at: SystemTime,
    ) -> bool {
        self.announce();
        let mut failures = 0u32;
        loop {
            match self
                .store_dead_letter(event, failure, attempts, first_failed_at, last_failed_at)
                .await
            {
                Ok(entry) => {
                    DeliveryCounters::add(&self.state.counters.dead_letters);
                    tracing::warn!(
                        name: "evoq.handler.dead_letter",
                        handler = &*self.state.name,
                        event_type = event.event_type(),
                        position = event.global_position(),
                        event_id = %event.event_id(),
                        attempts = entry.attempts,
                        error = %failure,
                    );
                    return true;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = STORE_RETRY.delay(failures);
                    tracing::warn!(
                        name: "evoq.handler.dead_letter",
                        stage = "exception",
                        handler = &*self.state.name,
                        position = event.global_position(),
                        error = %error,
                        retry_in_ms = delay.as_millis() as u64,
                    );
                    if !self.sleep(delay).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn store_dead_letter(
        &self,
        event: &EventMeta,
        failure: &HandlerFailure,
        attempts: u32,
        first_failed_at: SystemTime,
        last_failed_at: SystemTime,
    ) -> Result<DeadLetter, StoreError> {
        let name = &*self.state.name;
        let earlier = self.store.load_dead_letter(name, event.event_id()).await?;
        let entry = DeadLetter {
            handler: name.to_owned(),
            event: Arc::clone(event.record()),
            error: failure.to_string(),
            attempts: earlier
                .as_ref()
                .map_or(attempts, |e| e.attempts.saturating_add(attempts)),
            first_failed_at: earlier
                .as_ref()
                .map_or(first_failed_at, |e| e.first_failed_at.min(first_failed_at)),
            last_failed_at,
        };
        self.store.save_dead_letter(entry.clone()).await?;
        Ok(entry)
    }

    /// Delivers a dead letter once more: removed on success, updated on failure.
    async fn redeliver<C: Consumer>(
        &mut self,
        consumer: &mut C,
        event_id: Uuid,
    ) -> Result<(), Error> {
        let name = Arc::clone(&self.state.name);
        let Some(mut entry) = self.store.load_dead_letter(&name, event_id).await? else {
            return Err(Error::DeadLetterNotFound {
                handler: name.to_string(),
                event_id,
            });
        };
        let event = EventMeta::new(Arc::clone(&entry.event));
        let attempt = entry.attempts.saturating_add(1);
        let result = tokio::select! {
            biased;
            result = attempt_once(&name, consumer, &event, attempt) => result,
            _ = self.shutdown.changed() => {
                return Err(Error::HandlerStopped {
                    handler: name.to_string(),
                    reason: "the runtime is stopping".into(),
                });
            }
        };
        match result {
            Ok(()) => {
                self.store.delete_dead_letter(&name, event_id).await?;
                DeliveryCounters::add(&self.state.counters.handled);
                tracing::info!(
                    name: "evoq.handler.dead_letter",
                    stage = "redelivered",
                    handler = &*name,
                    event_type = event.event_type(),
                    position = event.global_position(),
                    event_id = %event_id,
                    attempts = attempt,
                );
                Ok(())
            }
            Err(failure) => {
                entry.attempts = attempt;
                entry.error = failure.to_string();
                entry.last_failed_at = SystemTime::now();
                self.store.save_dead_letter(entry).await?;
                Err(Error::DeadLetterRetryFailed {
                    handler: name.to_string(),
                    event_id,
                    error: failure.to_string(),
                })
            }
        }
    }
}

/// Polls `future` once: its output, or `Pending` (the task's waker is registered).
fn poll_once<F: Future + Unpin>(mut future: F) -> impl Future<Output = Poll<F::Output>> {
    poll_fn(move |cx| Poll::Ready(Pin::new(&mut future).poll(cx)))
}

/// Calls the handler (not polled yet), a panic turned into a failure.
fn start_attempt<'a, C: Consumer>(
    consumer: &'a mut C,
    event: &'a EventMeta,
) -> Result<Attempt<'a>, HandlerFailure> {
    let consumer = AssertUnwindSafe(consumer);
    let event = AssertUnwindSafe(event);
    match catch_unwind(move || {
        // The whole wrappers move in (a closure would capture only their fields).
        let (AssertUnwindSafe(consumer), AssertUnwindSafe(event)) = (consumer, event);
        consumer.consume(event)
    }) {
        Ok(future) => Ok(Attempt(CatchPanic::new(future))),
        Err(panic) => Err(HandlerFailure::panicked(panic_message(&*panic))),
    }
}

/// One call of the handler, in the `evoq.handler.event` span, a panic turned into a failure.
async fn attempt_once<C: Consumer>(
    handler: &str,
    consumer: &mut C,
    event: &EventMeta,
    attempt: u32,
) -> Result<(), HandlerFailure> {
    let span = tracing::debug_span!(
        "evoq.handler.event",
        handler,
        event_type = event.event_type(),
        position = event.global_position(),
        event_id = %event.event_id(),
        attempt,
    );
    let future = start_attempt(consumer, event)?;
    if span.is_disabled() {
        return future.await;
    }
    let started = Instant::now();
    span.in_scope(|| tracing::debug!(name: "evoq.handler.event", stage = "start"));
    let result = future.instrument(span.clone()).await;
    let duration_us = started.elapsed().as_micros() as u64;
    span.in_scope(|| match &result {
        Ok(()) => tracing::debug!(name: "evoq.handler.event", stage = "stop", duration_us),
        Err(failure) => tracing::debug!(
            name: "evoq.handler.event",
            stage = "exception",
            error = %failure,
            duration_us,
        ),
    });
    result
}

/// A delivery under way: the handler's future, whose panic becomes a [`HandlerFailure`].
struct Attempt<'a>(CatchPanic<HandlerFuture<'a>>);

impl Future for Attempt<'_> {
    type Output = Result<(), HandlerFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|outcome| {
            outcome.unwrap_or_else(|panic| Err(HandlerFailure::panicked(panic_message(&*panic))))
        })
    }
}
