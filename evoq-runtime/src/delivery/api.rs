//! What the engine offers about its consumers: waiting on a position, the dead-letter
//! store, counters.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::consistency::wait_one;
use super::state::{Control, Doing, HandlerState};
use super::subscribers::Subscribers;
use crate::error::Error;
use crate::store::{DeadLetter, RequestedAction};

impl Subscribers {
    /// See `Evoq::wait_for`: waits until `handler` has reached `position`, for at most
    /// `deadline` (`None`: no limit).
    pub(crate) async fn wait_for(
        &self,
        handler: &str,
        position: u64,
        deadline: Option<Duration>,
    ) -> Result<(), Error> {
        let state = self.named(handler)?;
        let Some(after) = deadline else {
            return wait_one(state, position).await;
        };
        match tokio::time::timeout(after, wait_one(state, position)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let progress = state.progress.borrow();
                Err(Error::WaitTimeout {
                    handler: handler.to_owned(),
                    position,
                    reached: progress.position,
                    after,
                    retrying: progress.retrying().map(str::to_owned),
                })
            }
        }
    }

    /// See `Evoq::rebuild`.
    pub(crate) async fn rebuild(&self, projection: &str) -> Result<u64, Error> {
        let state = self.named(projection)?;
        let head = *self.store().head().borrow();
        request(state, RequestedAction::Rebuild).await?;
        wait_one(state, head).await?;
        Ok(head)
    }

    /// See `Evoq::dead_letters`.
    pub(crate) fn dead_letters(&self, handler: &str) -> DeadLetterQueue<'_> {
        DeadLetterQueue {
            registry: self,
            handler: handler.to_owned(),
        }
    }

    /// See `Evoq::handler_stats`.
    pub(crate) fn handler_stats(&self) -> Vec<HandlerStats> {
        let head = *self.store().head().borrow();
        self.all()
            .iter()
            .map(|handler| HandlerStats::of(handler, head))
            .collect()
    }
}

/// Asks `handler`'s task to carry out `action`, and waits for its answer; a task that has ended
/// answers that the handler stopped, and why. Dropped before the task began the action (the
/// caller gave up), the request is withdrawn: the task never begins it.
async fn request(handler: &HandlerState, action: RequestedAction) -> Result<(), Error> {
    let stopped = || Error::HandlerStopped {
        handler: handler.name.to_string(),
        reason: handler
            .progress
            .borrow()
            .stopped
            .as_deref()
            .unwrap_or("the runtime stopped")
            .to_owned(),
    };
    let (reply, outcome) = oneshot::channel();
    handler
        .control
        .send(Control { action, reply })
        .await
        .map_err(|_| stopped())?;
    outcome.await.map_err(|_| stopped())?
}

/// Counters and gauges of one event handler, read from a running runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandlerStats {
    /// The handler's name.
    pub name: String,
    /// The event types it takes.
    pub event_types: &'static [&'static str],
    /// Whether `Consistency::Strong` waits for it.
    pub strong: bool,
    /// The global position it has processed through.
    pub position: u64,
    /// How far it is behind the store's head, in positions.
    pub lag: u64,
    /// Events handled with success (first delivery, a retry or a dead-letter re-delivery).
    pub handled: u64,
    /// Retries after a failed delivery.
    pub retries: u64,
    /// Events sent to the dead-letter store.
    pub dead_letters: u64,
    /// Events skipped after their last attempt failed (`OnError::Skip`).
    pub skipped: u64,
    /// Why it stopped, if it did (`OnError::Stop`).
    pub stopped: Option<String>,
    /// Whether it is running, retrying (a failed event, or after a failure outside its code),
    /// or stopped.
    pub status: HandlerStatus,
    /// Failures outside the handler's code so far (store calls that failed or panicked,
    /// panics of its task), each followed by a retry.
    pub faults: u64,
}

/// What a handler's task is doing, in [`HandlerStats::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerStatus {
    /// Delivering events, or waiting for new ones.
    Running,
    /// Kept from going on by a failure it retries: an event that failed (its method returned
    /// an error or panicked, or the event does not decode), tried again under the handler's
    /// retry policy (each retry logged at INFO), or a failure outside the handler's code (the
    /// event store failing or panicking, or its task panicking), retried with back-off and
    /// logged at ERROR. Waits for its progress wait meanwhile. It goes back to `Running` once
    /// the event is handled or given up (dead-lettered or skipped), or once a retry of the
    /// failing store call works.
    Retrying {
        /// What it retries, beginning with which: `a failed event (...)`, with the event, the
        /// attempt and the number allowed, the error, and when the next attempt comes; or
        /// `after a failure outside its code (...)`, with the last failure and when the next
        /// retry comes. [`Error::WaitTimeout`] carries the same text (`retrying`).
        reason: String,
    },
    /// Stopped for good: by its error policy (`OnError::Stop`), or because the runtime
    /// stopped. Waits on it fail at once with [`Error::HandlerStopped`].
    Stopped {
        /// Why.
        reason: String,
    },
}

impl HandlerStats {
    fn of(handler: &HandlerState, head: u64) -> Self {
        let progress = handler.progress.borrow().clone();
        let counters = &handler.counters;
        HandlerStats {
            name: handler.name.to_string(),
            event_types: handler.event_types,
            strong: handler.strong,
            position: progress.position,
            lag: head.saturating_sub(progress.position),
            handled: counters.handled.load(Ordering::Relaxed),
            retries: counters.retries.load(Ordering::Relaxed),
            dead_letters: counters.dead_letters.load(Ordering::Relaxed),
            skipped: counters.skipped.load(Ordering::Relaxed),
            stopped: progress.stopped.as_deref().map(str::to_owned),
            status: match progress.doing() {
                Doing::Running => HandlerStatus::Running,
                Doing::Retrying(reason) => HandlerStatus::Retrying {
                    reason: reason.to_owned(),
                },
                Doing::Stopped(reason) => HandlerStatus::Stopped {
                    reason: reason.to_owned(),
                },
            },
            faults: counters.faults.load(Ordering::Relaxed),
        }
    }
}

/// The dead letters of one handler: [`Evoq::dead_letters`](crate::Evoq::dead_letters).
///
/// Entries are keyed by the event's id and list oldest first (in global position order).
#[derive(Debug)]
pub struct DeadLetterQueue<'a> {
    registry: &'a Subscribers,
    handler: String,
}

impl DeadLetterQueue<'_> {
    /// The handler's name.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// At most `limit` entries whose event's position is above `after`, oldest first. Start
    /// with `after = 0`; continue after the position of the last entry of a page
    /// (`entry.event.global_position`).
    pub async fn list(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        Ok(self
            .registry
            .store()
            .list_dead_letters(&self.handler, after, limit)
            .await?)
    }

    /// The entry of the event `event_id`, if any.
    pub async fn get(&self, event_id: Uuid) -> Result<Option<DeadLetter>, Error> {
        Ok(self
            .registry
            .store()
            .load_dead_letter(&self.handler, event_id)
            .await?)
    }

    /// Delivers the event to the handler again, now, once: on success the entry is removed;
    /// on failure it is kept with one more attempt, the new error and failure time, and the
    /// error is [`Error::DeadLetterRetryFailed`].
    ///
    /// The re-delivery runs in the handler's task, between two events (the handler sees one
    /// event at a time), so it waits while the handler is busy with an event. A call given up
    /// before the delivery began (its future dropped: a `tokio::time::timeout` around it, say)
    /// withdraws it: the event is not delivered and the entry stays as it was; a delivery that
    /// began goes on, and its outcome is kept in the entry.
    ///
    /// On a store shared by several nodes (PostgreSQL) it runs on the node that holds the
    /// handler's lease, whichever node it is asked on: another node hands the request to the
    /// holder through the store (the holder looks for such requests every 200 ms), and
    /// `retry` returns once the holder carried it out, with its outcome. If the runtime stops
    /// first, the request is withdrawn and the error is [`Error::HandlerStopped`].
    pub async fn retry(&self, event_id: Uuid) -> Result<(), Error> {
        let handler = self.registry.named(&self.handler)?;
        request(handler, RequestedAction::RetryDeadLetter { event_id }).await
    }

    /// Removes the entry of the event `event_id` without delivering it; whether there was one.
    pub async fn discard(&self, event_id: Uuid) -> Result<bool, Error> {
        let removed = self
            .registry
            .store()
            .delete_dead_letter(&self.handler, event_id)
            .await?;
        if removed {
            tracing::info!(
                name: "evoq.handler.dead_letter",
                stage = "discarded",
                handler = %self.handler,
                event_id = %event_id,
                "evoq.handler.dead_letter",
            );
        }
        Ok(removed)
    }
}
