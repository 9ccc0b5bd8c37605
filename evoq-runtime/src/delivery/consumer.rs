//! What the engine delivers and to whom: the [`Consumer`] trait every kind of subscriber
//! implements, the event as delivered ([`EventMeta`]: everything but its decoded data), and
//! why a delivery failed ([`HandlerFailure`]).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use uuid::Uuid;

use crate::envelope::{Metadata, RecordedEvent};
use crate::error::Error;
use crate::event::upcast::{DecodeError, UpcastError};
use crate::store::{FailureKind, UndecodableRow};
use crate::util::panic::displayed;

/// The future of one delivery: what [`EventHandler::handle`](crate::EventHandler::handle) returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerFailure>> + Send + 'a>>;

/// The future of a [`Consumer`] hook other than delivery: its output, or why it failed.
pub(crate) type HookFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The future of [`Consumer::bind`]: an error fails the runtime's start.
pub(crate) type BindFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// What the engine delivers events to. The engine knows no kind of consumer: event handlers,
/// projections and sagas each implement it in their own module.
pub(crate) trait Consumer: Send + 'static {
    /// Whether the checkpoint is saved after every event (projections: the read model and the
    /// checkpoint advance together), not in batches.
    const CHECKPOINT_EVERY_EVENT: bool = false;

    /// Delivers one event: the future of its handling.
    fn consume<'a>(&'a mut self, event: &'a EventMeta) -> HandlerFuture<'a>;

    /// Binds the consumer to the name it runs under, at the runtime's start, before any task
    /// runs: an error fails the start (a projection whose read model belongs to another one).
    fn bind<'a>(&'a mut self, name: &'a str) -> BindFuture<'a> {
        let _ = name;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Commits the consumer's own state with the checkpoint `position`; `true` when it kept
    /// the checkpoint itself (no save in the event store then).
    fn commit<'a>(&'a mut self, name: &'a str, position: u64) -> HookFuture<'a, bool> {
        let _ = (name, position);
        Box::pin(std::future::ready(Ok(false)))
    }

    /// The checkpoint the consumer keeps itself, if it does.
    fn checkpoint<'a>(&'a mut self, name: &'a str) -> HookFuture<'a, Option<u64>> {
        let _ = name;
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Moves the checkpoint the consumer keeps itself back to `position` (it was beyond the
    /// store's head).
    fn rewind<'a>(&'a mut self, name: &'a str, position: u64) -> HookFuture<'a, ()> {
        let _ = (name, position);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Whether the consumer holds finished changes of the event being delivered, committed by
    /// [`commit`](Self::commit) even when the event is given up.
    fn has_finished_changes(&self) -> bool {
        false
    }

    /// Drops the consumer's changes that are not committed (those of the event being
    /// delivered): the event is given up without a commit, because the lease was lost.
    fn roll_back(&mut self) -> HookFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Clears the consumer's state before a rebuild.
    fn reset(&mut self) -> HookFuture<'_, ()> {
        Box::pin(std::future::ready(Err(
            "it is an event handler, not a projection: only projections can be rebuilt".to_owned(),
        )))
    }
}

/// Everything about a stored event but its decoded data: ids, position, type, metadata, time.
///
/// Cheap to clone (it shares the stored record). [`event_id`](Self::event_id) is unique and
/// stable: delivery is at least once, so use it to make effects idempotent.
#[derive(Clone, PartialEq, Eq)]
pub struct EventMeta {
    record: Arc<RecordedEvent>,
    /// The wire name of the type it is decoded as, when not the stored one (a rename).
    current_type: Option<&'static str>,
    /// Delivered again from the handler's dead letters (`DeadLetterQueue::retry`).
    redelivery: bool,
}

impl EventMeta {
    /// The metadata of a stored event (also handy to call a handler method in a unit test).
    pub fn new(record: Arc<RecordedEvent>) -> Self {
        EventMeta {
            record,
            current_type: None,
            redelivery: false,
        }
    }

    /// This event as delivered again from the handler's dead letters.
    pub(crate) fn redelivered(mut self) -> Self {
        self.redelivery = true;
        self
    }

    /// Whether this delivery is a dead letter delivered again.
    pub(crate) fn is_redelivery(&self) -> bool {
        self.redelivery
    }

    /// This event as decoded into the type named `current_type`: what a `#[handles]` method
    /// gets for an event stored under a name its type was renamed from (an upcaster's
    /// `renamed_from`). Only [`current_type`](Self::current_type) changes.
    pub fn decoded_as(mut self, current_type: &'static str) -> Self {
        self.current_type = (current_type != &*self.record.event_type).then_some(current_type);
        self
    }

    /// The event's unique id.
    pub fn event_id(&self) -> Uuid {
        self.record.event_id
    }

    /// The stream it belongs to: `"<aggregate name>-<aggregate id>"`.
    pub fn stream_id(&self) -> &str {
        &self.record.stream_id
    }

    /// Its version within the stream, from 1.
    pub fn stream_version(&self) -> u64 {
        self.record.stream_version
    }

    /// Its position in the global order of the store, from 1.
    pub fn global_position(&self) -> u64 {
        self.record.global_position
    }

    /// The wire name it was stored under.
    ///
    /// For an event stored before an upcaster renamed its type (`#[upcaster(New, from = 1,
    /// renamed_from = "Old")]`), the old name: see [`current_type`](Self::current_type).
    pub fn event_type(&self) -> &str {
        &self.record.event_type
    }

    /// The wire name of the type the event is decoded as: for a `#[handles]` method, the name
    /// of the type it takes. It differs from [`event_type`](Self::event_type) for an event
    /// stored under a name its type was renamed from (the upcaster's `renamed_from`), and is
    /// the stored name otherwise.
    pub fn current_type(&self) -> &str {
        self.current_type.unwrap_or(&self.record.event_type)
    }

    /// The schema version its data was written with.
    pub fn schema_version(&self) -> u32 {
        self.record.schema_version
    }

    /// The command id, causation id, correlation id and user entries it was stored with.
    pub fn metadata(&self) -> &Metadata {
        &self.record.metadata
    }

    /// When the store committed it.
    pub fn recorded_at(&self) -> SystemTime {
        self.record.recorded_at
    }

    /// The stored event itself, data included.
    pub fn record(&self) -> &Arc<RecordedEvent> {
        &self.record
    }
}

impl fmt::Debug for EventMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventMeta")
            .field("event_id", &self.event_id())
            .field("stream_id", &self.stream_id())
            .field("stream_version", &self.stream_version())
            .field("global_position", &self.global_position())
            .field("event_type", &self.event_type())
            .field("current_type", &self.current_type())
            .field("schema_version", &self.schema_version())
            .field("metadata", self.metadata())
            .field("recorded_at", &self.recorded_at())
            .finish()
    }
}

/// Why one delivery of an event to a handler failed. Whatever the reason, the handler's error
/// policy decides what happens next (retry, then dead-letter, skip or stop).
pub struct HandlerFailure {
    cause: Cause,
}

enum Cause {
    /// The handler's error, and its text (taken once: a `Display` that panics becomes a text
    /// saying so, not a panic wherever the failure is shown).
    Error(Box<dyn StdError + Send + Sync + 'static>, String),
    Decode {
        event_type: String,
        schema_version: u32,
        position: u64,
        reason: String,
    },
    Unhandled {
        event_type: String,
    },
    Upcast {
        position: u64,
        error: UpcastError,
    },
    Panicked(String),
    /// The stored row could not be read back as an event.
    Storage(String),
}

impl HandlerFailure {
    /// The handler's own error.
    pub fn new<E: StdError + Send + Sync + 'static>(error: E) -> Self {
        let text = displayed(&error);
        HandlerFailure {
            cause: Cause::Error(Box::new(error), text),
        }
    }

    /// The stored data of `event` does not decode as the type the handler takes.
    pub fn decode(event: &EventMeta, error: &serde_json::Error) -> Self {
        HandlerFailure {
            cause: Cause::Decode {
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                position: event.global_position(),
                reason: error.to_string(),
            },
        }
    }

    /// The stored data of `event` could not be brought to the current version of its type.
    pub fn upcast(event: &EventMeta, error: UpcastError) -> Self {
        HandlerFailure {
            cause: Cause::Upcast {
                position: event.global_position(),
                error,
            },
        }
    }

    /// The stored data of `event` did not decode, or could not be upcast.
    pub fn from_decode(event: &EventMeta, error: DecodeError) -> Self {
        match error {
            DecodeError::Upcast(error) => HandlerFailure::upcast(event, error),
            DecodeError::Data(error) => HandlerFailure::decode(event, &error),
        }
    }

    /// The handler has no method for the type of `event`.
    pub fn unhandled(event: &EventMeta) -> Self {
        HandlerFailure {
            cause: Cause::Unhandled {
                event_type: event.event_type().to_owned(),
            },
        }
    }

    /// The handler panicked with `message`.
    pub fn panicked(message: String) -> Self {
        HandlerFailure {
            cause: Cause::Panicked(message),
        }
    }

    /// The stored row of an event could not be read back as one (see [`UndecodableRow`]): the
    /// handler was never called.
    pub fn storage(row: &UndecodableRow) -> Self {
        HandlerFailure {
            cause: Cause::Storage(row.describe()),
        }
    }

    /// What kind of failure this is, as a dead letter records it.
    pub fn kind(&self) -> FailureKind {
        match &self.cause {
            Cause::Error(..) | Cause::Unhandled { .. } => FailureKind::HandlerError,
            Cause::Decode { .. } => FailureKind::Decode,
            Cause::Upcast { .. } => FailureKind::Upcast,
            Cause::Panicked(_) => FailureKind::Panic,
            Cause::Storage(_) => FailureKind::Storage,
        }
    }

    /// The handler's own error, when it is of type `E`.
    pub fn error<E: StdError + 'static>(&self) -> Option<&E> {
        match &self.cause {
            Cause::Error(error, _) => error.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// Whether the event's stored data did not decode.
    pub fn is_decode(&self) -> bool {
        matches!(self.cause, Cause::Decode { .. })
    }

    /// The upcasting failure, when the event could not be brought to its current version.
    pub fn upcast_error(&self) -> Option<&UpcastError> {
        match &self.cause {
            Cause::Upcast { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the handler panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.cause, Cause::Panicked(_))
    }
}

impl fmt::Display for HandlerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Error(_, text) => f.write_str(text),
            Cause::Decode {
                event_type,
                schema_version,
                position,
                reason,
            } => write!(
                f,
                "cannot decode event `{event_type}` (schema version {schema_version}) at position {position}: {reason}; the stored data was not changed: fix the event type or add an upcaster"
            ),
            Cause::Unhandled { event_type } => write!(
                f,
                "the handler has no `#[handles]` method for event type `{event_type}`"
            ),
            Cause::Panicked(message) => write!(f, "the handler panicked: {message}"),
            Cause::Storage(description) => f.write_str(description),
            Cause::Upcast { position, error } => {
                write!(f, "event at position {position}: {error}")
            }
        }
    }
}

impl fmt::Debug for HandlerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Error(error, _) => f.debug_tuple("HandlerFailure").field(error).finish(),
            _ => f
                .debug_tuple("HandlerFailure")
                .field(&self.to_string())
                .finish(),
        }
    }
}

impl StdError for HandlerFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.cause {
            // Display already forwards to the handler's error: continue the chain below it.
            Cause::Error(error, _) => error.source(),
            Cause::Upcast { error, .. } => Some(error),
            _ => None,
        }
    }
}
