use std::time::SystemTime;

use uuid::Uuid;

/// A request for the task of a handler (an event handler, projection or saga), kept in the
/// event store until the node running that handler has carried it out.
///
/// It is how work that needs the handler's code is asked for from where that code does not run:
/// another node of a shared store (a dead-letter retry asked on a node that does not hold the
/// handler's lease), or an operator's tool working on the store. The node holding the handler's
/// lease looks for its requests a few times a second, carries each out between two events, and
/// deletes it: a request gone from the store is done (what it did shows in the store: a dead
/// letter removed or updated, a checkpoint moved). A request the task could not carry out (a
/// rebuild asked of an event handler that is not a projection, a read model that could not be
/// cleared, a dead letter that failed again) stays, with [`failed`](Self::failed) saying why,
/// and is not carried out again: whoever asked reads it and removes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerRequest {
    /// The request's id, time-ordered (requests of one handler are carried out oldest first).
    pub id: Uuid,
    /// The name of the handler it is for.
    pub handler: String,
    /// What to do.
    pub action: RequestedAction,
    /// When it was asked for.
    pub requested_at: SystemTime,
    /// Why the handler's task could not carry the request out; `None` while it waits (and
    /// [`EventStore::list_requests`](super::EventStore::list_requests) lists only those).
    pub failed: Option<String>,
}

impl HandlerRequest {
    /// A new request for `handler` to do `action`, asked now (a time-ordered id, not failed).
    ///
    /// ```
    /// use evoq::store::{HandlerRequest, RequestedAction};
    ///
    /// let request = HandlerRequest::new("balances", RequestedAction::Rebuild);
    /// assert_eq!(request.handler, "balances");
    /// assert_eq!(request.failed, None);
    /// ```
    pub fn new(handler: impl Into<String>, action: RequestedAction) -> Self {
        HandlerRequest {
            id: crate::util::ids::new_v7(),
            handler: handler.into(),
            action,
            requested_at: SystemTime::now(),
            failed: None,
        }
    }
}

/// What a [`HandlerRequest`] asks the handler's task to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestedAction {
    /// Deliver the handler's dead letter of this event once more (as
    /// `DeadLetterQueue::retry` does).
    RetryDeadLetter {
        /// The dead-lettered event's id.
        event_id: Uuid,
    },
    /// Clear the projection's read model and replay every event into it (as `Evoq::rebuild`
    /// does).
    Rebuild,
}

impl RequestedAction {
    /// The action's stable name, as stores keep it: `retry_dead_letter` or `rebuild`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestedAction::RetryDeadLetter { .. } => "retry_dead_letter",
            RequestedAction::Rebuild => "rebuild",
        }
    }

    /// The event id the action names, if any.
    pub const fn event_id(self) -> Option<Uuid> {
        match self {
            RequestedAction::RetryDeadLetter { event_id } => Some(event_id),
            RequestedAction::Rebuild => None,
        }
    }

    /// The action stored as `name` with `event_id`; `None` when the pair names none.
    pub fn from_stored(name: &str, event_id: Option<Uuid>) -> Option<Self> {
        match (name, event_id) {
            ("retry_dead_letter", Some(event_id)) => {
                Some(RequestedAction::RetryDeadLetter { event_id })
            }
            ("rebuild", None) => Some(RequestedAction::Rebuild),
            _ => None,
        }
    }
}
