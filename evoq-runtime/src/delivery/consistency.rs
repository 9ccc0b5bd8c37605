//! Waiting for handlers: strong consistency of a dispatch and `Evoq::wait_for`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::state::{Doing, HandlerState, Progress};
use crate::aggregate::command::Route;
use crate::aggregate::context::Dispatched;
use crate::error::{Error, handler_doing};
use crate::event::EventSet;
use crate::util::time::within;

/// Which event handlers a dispatch waits for before it returns.
///
/// With anything but [`Eventual`](Self::Eventual), the dispatch returns once every required
/// handler's position has reached the global position of the command's last event. A handler
/// that takes none of the command's event types is satisfied at once. The whole wait shares the
/// dispatch's one deadline (its timeout, counted from the start of the dispatch); when it runs
/// out the dispatch fails with [`Error::ConsistencyTimeout`], which says that the events WERE
/// stored. A handler stopped by its error policy fails the wait at once, with the same error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Return as soon as the events are stored (default).
    #[default]
    Eventual,
    /// Wait for every handler marked strong (`#[event_handler(strong)]` or
    /// `HandlerOptions::strong(true)`).
    Strong,
    /// Wait for these handlers, by name (an unknown name fails the dispatch before the command
    /// runs).
    Handlers(Vec<String>),
}

impl Consistency {
    /// [`Consistency::Handlers`] from names.
    pub fn handlers<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Consistency::Handlers(names.into_iter().map(Into::into).collect())
    }
}

/// Waits until every handler of `required` that takes one of `event_types` has reached
/// `position`, or `deadline`. On failure: the handlers that had not reached it, described.
pub(crate) async fn wait_all(
    required: &[Arc<HandlerState>],
    event_types: &[&str],
    position: u64,
    deadline: Instant,
) -> Result<(), String> {
    let interested: Vec<&Arc<HandlerState>> = required
        .iter()
        .filter(|handler| handler.takes_any(event_types))
        .collect();
    for handler in &interested {
        let mut progress = handler.progress.subscribe();
        let waited = within(
            deadline,
            progress.wait_for(|p| p.position >= position || p.stopped.is_some()),
        )
        .await;
        let reached = matches!(&waited, Some(Ok(p)) if p.position >= position);
        drop(waited);
        if !reached {
            return Err(pending(&interested, position));
        }
    }
    Ok(())
}

/// "`a` (at position 3), `b` (stopped: ...)".
fn pending(handlers: &[&Arc<HandlerState>], position: u64) -> String {
    let mut out = String::new();
    for handler in handlers {
        let progress: Progress = handler.progress.borrow().clone();
        if progress.position >= position {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = match progress.doing() {
            Doing::Stopped(reason) => write!(
                out,
                "`{}` (stopped at position {}: {reason})",
                handler.name, progress.position
            ),
            Doing::Retrying(reason) => write!(
                out,
                "`{}` (at position {}, {})",
                handler.name,
                progress.position,
                handler_doing(Some(reason))
            ),
            Doing::Running => write!(
                out,
                "`{}` (at position {})",
                handler.name, progress.position
            ),
        };
    }
    out
}

/// Waits until `handler` has reached `position` (no deadline: wrap it in a timeout).
pub(crate) async fn wait_one(handler: &HandlerState, position: u64) -> Result<(), Error> {
    let mut progress = handler.progress.subscribe();
    let stopped = match progress
        .wait_for(|p| p.position >= position || p.stopped.is_some())
        .await
    {
        Ok(p) if p.position >= position => return Ok(()),
        Ok(p) => p.stopped.clone(),
        Err(_) => None,
    };
    Err(Error::HandlerStopped {
        handler: handler.name.to_string(),
        reason: stopped.map_or_else(|| "the runtime stopped".to_owned(), |r| r.to_string()),
    })
}

/// The end of a dispatch of `C` with a consistency: waits for `required` (until `deadline`)
/// on the position of the command's last event.
pub(crate) async fn settle<C: Route>(
    required: &[Arc<HandlerState>],
    done: Dispatched<C::Aggregate>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Dispatched<C::Aggregate>, Error> {
    let Some(position) = done.position else {
        return Ok(done);
    };
    if required.is_empty() {
        return Ok(done);
    }
    let event_types: Vec<&str> = done.events.iter().map(EventSet::event_type).collect();
    match wait_all(required, &event_types, position, deadline).await {
        Ok(()) => Ok(done),
        Err(pending) => Err(Error::ConsistencyTimeout {
            command: C::NAME,
            position,
            after: timeout,
            pending,
        }),
    }
}
