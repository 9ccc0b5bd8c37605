//! The error type of dispatch and of the runtime.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use uuid::Uuid;

use crate::event::upcast::UpcastError;
use crate::store::StoreError;

/// An error of the evoq runtime: every failure a dispatch or a start can return.
///
/// Each variant names what failed and says what to do; [`Error::rejection`] gives back a command
/// handler's own error.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let error = evoq::Evoq::builder().partitions(0).start().await.unwrap_err();
/// assert!(matches!(&error, evoq::Error::Config { key, .. } if key == "partitions"));
/// assert_eq!(
///     error.to_string(),
///     "invalid configuration `partitions`: must be at least 1 (the default is 4)"
/// );
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command handler refused the command (a domain error): nothing was appended.
    ///
    /// The message names what decided the command as what it is (`decider`): "command
    /// `LendBook` was rejected by decision `Lending` `b1`: ...", "... by aggregate
    /// `BankAccount` `acc-1`: ...".
    #[error("command `{command}` was rejected by {decider} `{aggregate}` `{id}`: {source}")]
    Rejected {
        /// Whether an aggregate or a decision refused the command.
        decider: Decider,
        /// The aggregate type's name, or the decision's name (see `decider`).
        aggregate: &'static str,
        /// The aggregate id.
        id: String,
        /// The command type.
        command: &'static str,
        /// The handler's own error; see [`Error::rejection`].
        source: Box<dyn StdError + Send + Sync + 'static>,
    },

    /// The stream was not at the expected version: either the dispatch asked for an
    /// `expected_version` that did not hold, or concurrent writers kept winning until the retry
    /// limit was reached. Nothing was appended.
    #[error(
        "version conflict on stream `{stream}` for command `{command}`: expected version {expected}, the stream is at {actual} ({}); nothing was appended: for a dispatch with an `expected_version` (never run again), read the stream and decide anew; else other writers kept winning: retry the command, or raise the retry limit",
        runs(*.attempts)
    )]
    Conflict {
        /// The stream.
        stream: String,
        /// The command type.
        command: &'static str,
        /// The version the append expected.
        expected: u64,
        /// The version the stream was at.
        actual: u64,
        /// How many times the command was run: 0 when the stream was found at another version
        /// than the expected one before the command ran.
        attempts: u32,
    },

    /// A [decision](crate::decision)'s retry budget was spent: every attempt read its events,
    /// decided, and found that an event matching its query had been appended since the read
    /// (another command decided on the same events first). Nothing was appended.
    #[error(
        "decision `{decision}` could not append the events of command `{command}` to stream `{stream}`: after each of its {attempts} attempt(s), an event matching its query ({query}) had been appended since it read; nothing was appended, retry the command or raise the decision's `attempts`"
    )]
    DecisionConflict {
        /// The decision (its name).
        decision: &'static str,
        /// The command type.
        command: &'static str,
        /// The stream the events were for.
        stream: String,
        /// The decision's query, as text.
        query: String,
        /// How many times the command was decided (the budget).
        attempts: u32,
    },

    /// The dispatch set an option its command's target cannot honour (an expected version for a
    /// decision's command, whose events are appended under a condition, not at a version).
    /// Nothing ran.
    #[error("command `{command}` cannot be dispatched with `{option}`: {reason}")]
    UnsupportedOption {
        /// The command type.
        command: &'static str,
        /// The option.
        option: &'static str,
        /// Why not, and what to do instead.
        reason: &'static str,
    },

    /// A command handler or an `#[apply]` method panicked. An aggregate's instance was
    /// dropped, and the next command rebuilds it from the store; a decision's model was
    /// dropped (a cached one is read again by the next command). The message names which
    /// (`decider`): "decision `Lending` `b1` panicked while handling command `LendBook`: ...".
    #[error(
        "{decider} `{aggregate}` `{id}` panicked while handling command `{command}`: {message}; {}{}",
        match .decider {
            Decider::Aggregate => "the instance was dropped and will be rebuilt from the store on the next command",
            Decider::Decision => "its model was dropped and the next command reads its events again",
        },
        if *.events_stored { " (its events WERE stored)" } else { " (nothing was appended)" }
    )]
    Panicked {
        /// Whether an aggregate or a decision panicked.
        decider: Decider,
        /// The aggregate type's name, or the decision's name (see `decider`).
        aggregate: &'static str,
        /// The aggregate id.
        id: String,
        /// The command type.
        command: &'static str,
        /// The panic message.
        message: String,
        /// Whether the command's events had been stored before the panic (in `#[apply]`).
        events_stored: bool,
    },

    /// A stored event could not be decoded into the aggregate's events.
    #[error(
        "cannot decode event at version {version} of stream `{stream}` (type `{event_type}`, schema version {schema_version}): {reason}; the stored data was not changed: fix the event type or add an upcaster"
    )]
    Decode {
        /// The stream.
        stream: String,
        /// The event's version in the stream.
        version: u64,
        /// The stored event type.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
        /// Why it does not decode.
        reason: String,
    },

    /// A stored event could not be brought to the current schema version of its type: a
    /// missing upcaster step, data stored by newer code, or an upcaster's error. Nothing
    /// stored was changed.
    #[error("cannot read event at version {version} of stream `{stream}`: {source}")]
    Upcast {
        /// The stream.
        stream: String,
        /// The event's version in the stream.
        version: u64,
        /// What went wrong, naming the event type, the stored version and the missing step.
        source: UpcastError,
    },

    /// A projection could not be rebuilt (or the name is not a projection's).
    #[error("cannot rebuild projection `{projection}`: {reason}")]
    Rebuild {
        /// The projection's name.
        projection: String,
        /// Why.
        reason: String,
    },

    /// A stream holds an event type the aggregate (or the decision, reading back the events
    /// of a resent command) does not apply.
    #[error(
        "unknown event type `{event_type}` at version {version} of stream `{stream}`: {decider} `{aggregate}` has no `#[apply]` method for it; add one, or an upcaster that renames it (or, if newer code of this application wrote it, run that code)"
    )]
    UnknownEventType {
        /// Whether the stream is an aggregate's or a decision's.
        decider: Decider,
        /// The aggregate type's name, or the decision's name (see `decider`).
        aggregate: &'static str,
        /// The stream.
        stream: String,
        /// The event's version in the stream.
        version: u64,
        /// The stored event type.
        event_type: String,
    },

    /// An event could not be serialized; nothing was appended.
    #[error(
        "cannot serialize event `{event_type}` of command `{command}`: {reason}; nothing was appended"
    )]
    Encode {
        /// The command type.
        command: &'static str,
        /// The event type.
        event_type: &'static str,
        /// Why.
        reason: String,
    },

    /// The dispatch did not finish in time. The command may still complete.
    #[error(
        "command `{command}` to `{stream}` timed out after {after:?}; it may still complete: read the stream to know, or dispatch again with an idempotency key"
    )]
    Timeout {
        /// The command type.
        command: &'static str,
        /// The target stream.
        stream: String,
        /// The deadline.
        after: Duration,
    },

    /// The runtime was stopped; it accepts no more commands.
    #[error("the evoq runtime is stopped and cannot accept command `{command}`; start a new one")]
    Stopped {
        /// The command type.
        command: &'static str,
    },

    /// A configuration value is invalid.
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        /// The configuration key (a dotted path for nested keys).
        key: String,
        /// What is wrong and what to set instead.
        reason: String,
    },

    /// The stored events of one name would reach two event types: an upcaster renamed them
    /// (`renamed_from`) to one type, and a consumer of the runtime takes a type that still has
    /// their name, or another upcaster renamed them to a third type. A rename is a fact about
    /// the stored events, so each stored name is read as one type only. Nothing started.
    #[error("{}", rename_conflict(.stored_as, .renamed_to, .readers, .other_type, .other_readers))]
    RenameConflict {
        /// The wire name the events are stored under (the upcaster's `renamed_from`).
        stored_as: String,
        /// The wire name of the type an upcaster renamed them to.
        renamed_to: String,
        /// The handlers, projections and sagas that read them as `renamed_to`.
        readers: Vec<String>,
        /// The wire name of the other type they would reach: `stored_as` itself (a type that
        /// still has that name), or a type another upcaster renamed them to.
        other_type: String,
        /// The handlers, projections and sagas that read them as `other_type`.
        other_readers: Vec<String>,
    },

    /// A middleware halted the command in `before_dispatch`: the aggregate was not touched and
    /// nothing was appended.
    #[error("middleware `{middleware}` halted command `{command}` before dispatch: {reason}")]
    Halted {
        /// The name of the middleware that halted ([`Middleware::name`](crate::Middleware::name)).
        middleware: String,
        /// The command type.
        command: &'static str,
        /// Why, in the middleware's words.
        reason: String,
    },

    /// A middleware panicked. The panic was caught; the runtime keeps running.
    #[error(
        "middleware `{middleware}` panicked in `{stage}` of command `{command}`: {message}{}",
        if matches!(.stage, Stage::AfterDispatch) { " (the command's events WERE stored)" } else { "" }
    )]
    MiddlewarePanicked {
        /// The name of the middleware.
        middleware: String,
        /// The stage it panicked in.
        stage: Stage,
        /// The command type.
        command: &'static str,
        /// The panic message.
        message: String,
    },

    /// An idempotency key (or a caller-supplied command id) was reused for a different command:
    /// the first result cannot answer it. Nothing was run.
    #[error(
        "idempotency key `{key}` was first used for command `{first_command}` to aggregate `{first_aggregate_id}` of `{first_aggregate}` and cannot be reused for command `{command}` to aggregate `{aggregate_id}` of `{aggregate}`; use one key per request"
    )]
    IdempotencyKeyReused {
        /// The key (the idempotency key, or the command id).
        key: String,
        /// The command type the key was first used for.
        first_command: String,
        /// The aggregate type (or decision) the key was first used for.
        first_aggregate: String,
        /// The aggregate id the key was first used for.
        first_aggregate_id: String,
        /// The command type of this dispatch.
        command: &'static str,
        /// The aggregate type (or decision) of this dispatch.
        aggregate: &'static str,
        /// The aggregate id of this dispatch.
        aggregate_id: String,
    },

    /// The command's aggregate id cannot name an instance (it is empty, or the store cannot
    /// hold its stream id: on PostgreSQL, one with a NUL character or longer than 2,048
    /// bytes): nothing was appended, and no other command failed with it.
    #[error(
        "command `{command}` cannot be dispatched: its aggregate id for {decider} `{aggregate}` {reason}; nothing was run"
    )]
    InvalidAggregateId {
        /// Whether the command is routed to an aggregate or to a decision.
        decider: Decider,
        /// The aggregate type's name, or the decision's name (see `decider`).
        aggregate: &'static str,
        /// The command type.
        command: &'static str,
        /// The id as given.
        id: String,
        /// What is wrong with it and what to do.
        reason: String,
    },

    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The command succeeded and its events WERE stored, but the handlers its consistency
    /// required had not processed them when the dispatch's deadline ran out (or one of them
    /// had stopped). Do not dispatch the command again.
    #[error(
        "command `{command}` succeeded and its events WERE stored (through global position {position}), but the consistency wait ended before {pending} processed them (dispatch timeout {after:?}); do not dispatch it again: wait with `Evoq::wait_for` or read the store"
    )]
    ConsistencyTimeout {
        /// The command type.
        command: &'static str,
        /// The global position of the command's last event.
        position: u64,
        /// The dispatch's timeout.
        after: Duration,
        /// The handlers that had not reached the position, and where they were.
        pending: String,
    },

    /// No event handler of this runtime has this name.
    #[error(
        "no event handler named `{handler}` runs in this runtime (handlers: {known}); register it with `Evoq::builder().handler(...)` (a projection with `.projection(...)`, a saga with `.saga::<S>()`)"
    )]
    UnknownHandler {
        /// The name asked for.
        handler: String,
        /// The names of the runtime's handlers.
        known: String,
    },

    /// A handler type registered more than once, under several names, was asked for by its
    /// type: which one is meant is ambiguous.
    #[error(
        "the handler type `{handler_type}` runs under several names in this runtime ({names}): wait on one of them by name, with `Evoq::wait_for_named` (`Evoq::saga_state` reads a saga type that runs under one name only)"
    )]
    AmbiguousHandler {
        /// The handler's type.
        handler_type: &'static str,
        /// The names it runs under.
        names: String,
    },

    /// A wait for a handler to reach a position ended at its deadline. The wait failed, not
    /// the handler: it is behind, or retrying (`retrying` says which, and what); wait again,
    /// or read what it has processed so far.
    #[error(
        "event handler `{handler}` had not reached position {position} after {after:?} (it was at {reached}); it is {}, so wait longer or read it as it is",
        handler_doing(.retrying.as_deref())
    )]
    WaitTimeout {
        /// The handler's name.
        handler: String,
        /// The position waited for.
        position: u64,
        /// Where the handler was at the deadline.
        reached: u64,
        /// How long the wait lasted.
        after: Duration,
        /// What the handler was retrying at the deadline, as the reason of
        /// [`HandlerStatus::Retrying`](crate::HandlerStatus::Retrying): `a failed event (...)`
        /// (its method failed on an event, retried under its retry policy: the error, the
        /// attempt, when the next comes) or `after a failure outside its code (...)` (the
        /// store's). `None` when it was running, only behind.
        retrying: Option<String>,
    },

    /// No saga of this type is registered in this runtime.
    #[error(
        "no saga `{saga}` is registered in this runtime (sagas: {known}); register it with `Evoq::builder().saga::<S>()`"
    )]
    UnknownSaga {
        /// The saga's name (`Saga::NAME`).
        saga: &'static str,
        /// The names of the runtime's sagas.
        known: String,
    },

    /// The saved state of a saga instance does not decode into the saga's state type: it was
    /// saved by code whose state had other fields or types. Nothing stored was changed.
    #[error(
        "the state of instance `{instance}` of saga `{saga}` does not decode: {reason}; the stored state was not changed: keep the state type compatible (serde defaults for new fields)"
    )]
    SagaState {
        /// The saga's name (`Saga::NAME`).
        saga: &'static str,
        /// The instance (its correlation value).
        instance: String,
        /// Why it does not decode.
        reason: String,
    },

    /// The event handler has stopped: its error policy stopped it, or the runtime stopped.
    #[error(
        "event handler `{handler}` has stopped: {reason}; restart the runtime to resume it from its checkpoint"
    )]
    HandlerStopped {
        /// The handler.
        handler: String,
        /// Why.
        reason: String,
    },

    /// The handler has no dead letter for this event.
    #[error("event handler `{handler}` has no dead letter for event {event_id}")]
    DeadLetterNotFound {
        /// The handler.
        handler: String,
        /// The event id asked for.
        event_id: Uuid,
    },

    /// A dead letter was delivered again and the handler failed again: the entry is kept, with
    /// one more attempt and this error.
    #[error(
        "event handler `{handler}` failed again on dead-lettered event {event_id}: {error}; the dead letter is kept"
    )]
    DeadLetterRetryFailed {
        /// The handler.
        handler: String,
        /// The event.
        event_id: Uuid,
        /// The handler's error.
        error: String,
    },
}

/// What kind of failure an [`Error`] is: a small, stable classification for code that maps
/// errors to responses (an HTTP status, a retry decision) without matching every variant.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let error = evoq::Evoq::builder().partitions(0).start().await.unwrap_err();
/// assert_eq!(error.kind(), evoq::ErrorKind::Config);
/// assert_eq!(error.kind().as_str(), "config");
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The command handler refused the command (a domain error): [`Error::Rejected`].
    Rejected,
    /// The command met another writer: a version conflict past its retries, or an idempotency
    /// key reused for another command ([`Error::Conflict`], [`Error::IdempotencyKeyReused`]).
    Conflict,
    /// The caller's input is not valid: an aggregate id that is empty or that the store cannot
    /// hold ([`Error::InvalidAggregateId`]), an option the command does not take
    /// ([`Error::UnsupportedOption`]), another value the store cannot hold (an idempotency key
    /// or a tag too long for PostgreSQL's indexes: [`StoreError::Unstorable`]).
    InvalidInput,
    /// What the call names does not exist: a handler, a saga, a dead letter.
    NotFound,
    /// A middleware halted the command before it ran ([`Error::Halted`]).
    Halted,
    /// A deadline passed: the dispatch's, a consistency wait's, a handler wait's. For a
    /// consistency wait the events **are** stored.
    Timeout,
    /// The runtime, a handler or the event store cannot serve now (stopped, stopping, or the
    /// store failing): trying again later may work.
    Unavailable,
    /// Stored data cannot be read: an event that does not decode or upcast, an unknown event
    /// type, a saga state that does not decode, data the store found inconsistent.
    StoredData,
    /// A handler failed: a dead-letter retry failed again, a projection could not be rebuilt.
    Handler,
    /// The runtime's configuration or wiring is wrong (found at start).
    Config,
    /// A bug in user code or the runtime: a panic (caught), a state that does not encode.
    Internal,
}

impl ErrorKind {
    /// The kind's stable name: `rejected`, `conflict`, `invalid_input`, `not_found`, `halted`,
    /// `timeout`, `unavailable`, `stored_data`, `handler`, `config` or `internal`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Rejected => "rejected",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Halted => "halted",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::StoredData => "stored_data",
            ErrorKind::Handler => "handler",
            ErrorKind::Config => "config",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Rejected { .. } => ErrorKind::Rejected,
            Error::Conflict { .. }
            | Error::DecisionConflict { .. }
            | Error::IdempotencyKeyReused { .. } => ErrorKind::Conflict,
            Error::InvalidAggregateId { .. }
            | Error::UnsupportedOption { .. }
            | Error::Store(StoreError::Unstorable { .. }) => ErrorKind::InvalidInput,
            Error::UnknownHandler { .. }
            | Error::UnknownSaga { .. }
            | Error::DeadLetterNotFound { .. } => ErrorKind::NotFound,
            Error::Halted { .. } => ErrorKind::Halted,
            Error::Timeout { .. }
            | Error::ConsistencyTimeout { .. }
            | Error::WaitTimeout { .. } => ErrorKind::Timeout,
            Error::Stopped { .. } | Error::HandlerStopped { .. } => ErrorKind::Unavailable,
            Error::Store(StoreError::Integrity { .. }) => ErrorKind::StoredData,
            Error::Store(StoreError::WrongExpectedVersion { .. })
            | Error::Store(StoreError::DuplicateCommand { .. })
            | Error::Store(StoreError::ConditionFailed { .. }) => ErrorKind::Conflict,
            Error::Store(StoreError::InvalidLocation { .. }) => ErrorKind::Config,
            Error::Store(_) => ErrorKind::Unavailable,
            Error::Decode { .. }
            | Error::Upcast { .. }
            | Error::UnknownEventType { .. }
            | Error::SagaState { .. } => ErrorKind::StoredData,
            Error::DeadLetterRetryFailed { .. } | Error::Rebuild { .. } => ErrorKind::Handler,
            Error::Config { .. }
            | Error::RenameConflict { .. }
            | Error::AmbiguousHandler { .. } => ErrorKind::Config,
            Error::Panicked { .. } | Error::MiddlewarePanicked { .. } | Error::Encode { .. } => {
                ErrorKind::Internal
            }
        }
    }

    /// The error of a store call made for `command` of aggregate (or decision, `decider`)
    /// `aggregate` `id`: a stream id the store cannot hold is the id's fault, named as such
    /// (`InvalidAggregateId`); any other store error as it is.
    pub(crate) fn of_store(
        decider: Decider,
        aggregate: &'static str,
        command: &'static str,
        id: &str,
        error: StoreError,
    ) -> Error {
        match error {
            StoreError::Unstorable {
                what: StoreError::STREAM_ID,
                backend,
                value,
                reason,
            } => Error::InvalidAggregateId {
                decider,
                aggregate,
                command,
                id: id.to_owned(),
                reason: format!(
                    "cannot be held by the `{backend}` store in the stream id {value}: {reason}"
                ),
            },
            error => Error::from(error),
        }
    }

    /// Raises the `evoq.integrity` alarm, at ERROR, when this is an integrity error of the
    /// store (corrupt or inconsistent stored data): `stage` says where it was met (`append`,
    /// `rebuild`, `lookup`), `stream` which stream was concerned. Any other error passes
    /// silently.
    pub(crate) fn alarm(&self, stage: &'static str, stream: &str) {
        if let Error::Store(StoreError::Integrity { location, reason }) = self {
            tracing::error!(
                name: "evoq.integrity",
                stage,
                stream,
                location = %location,
                reason = %reason,
                "the event store holds inconsistent data; nothing was changed",
            );
        }
    }

    /// The command handler's own error, when this is a rejection with an error of type `E`.
    pub fn rejection<E: StdError + 'static>(&self) -> Option<&E> {
        match self {
            Error::Rejected { source, .. } => source.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// Whether a stored event could not be brought to the current version of its type.
    pub fn is_upcast(&self) -> bool {
        matches!(self, Error::Upcast { .. })
    }

    /// The upcasting failure, when a stored event could not be brought to its current version.
    pub fn upcast_error(&self) -> Option<&UpcastError> {
        match self {
            Error::Upcast { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether the command was refused by its handler (a domain error).
    pub fn is_rejection(&self) -> bool {
        matches!(self, Error::Rejected { .. })
    }

    /// Whether the command's events were stored but the consistency wait did not complete.
    pub fn is_consistency_timeout(&self) -> bool {
        matches!(self, Error::ConsistencyTimeout { .. })
    }

    /// Whether this is a conflict with concurrent writers: a version conflict, or a decision
    /// whose events kept changing until its retry budget was spent.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. } | Error::DecisionConflict { .. }
        )
    }

    /// Whether the dispatch did not finish in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// Whether a wait for a handler ended at its deadline ([`Error::WaitTimeout`]).
    pub fn is_wait_timeout(&self) -> bool {
        matches!(self, Error::WaitTimeout { .. })
    }

    /// Whether a middleware halted the command before dispatch.
    pub fn is_halted(&self) -> bool {
        matches!(self, Error::Halted { .. })
    }
}

/// What a handler that a wait ended on was doing, in the one wording of the waits' errors
/// ([`Error::WaitTimeout`], and each pending handler of [`Error::ConsistencyTimeout`] that was
/// retrying): `retrying ` and what it retries, `HandlerStatus::Retrying`'s reason (`a failed
/// event (...)`, `after a failure outside its code (...)`), or `behind`.
pub(crate) fn handler_doing(retrying: Option<&str>) -> String {
    match retrying {
        Some(reason) => format!("retrying {reason}"),
        None => "behind".to_owned(),
    }
}

/// How many times the command of an [`Error::Conflict`] ran, in its message.
fn runs(attempts: u32) -> String {
    match attempts {
        0 => "the command was not run".to_owned(),
        n => format!("after {n} attempt(s)"),
    }
}

/// The message of [`Error::RenameConflict`]: both types, who reads each, and what to change.
fn rename_conflict(
    stored_as: &str,
    renamed_to: &str,
    readers: &[String],
    other_type: &str,
    other_readers: &[String],
) -> String {
    let list = |names: &[String]| {
        names
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (readers, other_readers) = (list(readers), list(other_readers));
    let first = format!(
        "events stored as `{stored_as}` would reach two event types: `{renamed_to}`, which an upcaster renamed them to (`renamed_from = \"{stored_as}\"`), read by {readers}"
    );
    if other_type == stored_as {
        format!(
            "{first}; and the type still named `{stored_as}`, taken by {other_readers}. A stored event is read as one type: handle `{renamed_to}` in place of `{stored_as}` in {other_readers} (the upcaster brings the old events to it), or, if the events named `{stored_as}` are not `{renamed_to}`s, remove `renamed_from = \"{stored_as}\"` from the upcaster of `{renamed_to}`"
        )
    } else {
        format!(
            "{first}; and `{other_type}`, which another upcaster renamed them to, read by {other_readers}. A stored event is read as one type: keep `renamed_from = \"{stored_as}\"` in the upcasters of one of `{renamed_to}` and `{other_type}` only"
        )
    }
}

/// What decides a command: an aggregate (its live instance, on its own stream) or a
/// [decision](crate::decision) (on the events its query selects across streams). The errors
/// of a command ([`Error::Rejected`], [`Error::Panicked`], [`Error::UnknownEventType`],
/// [`Error::InvalidAggregateId`]) carry it, and their messages name the one that failed by its
/// word: "rejected by decision `Lending` `b1`", "aggregate `BankAccount` `acc-1` panicked".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decider {
    /// An `#[aggregate]`.
    Aggregate,
    /// A `#[decision]`.
    Decision,
}

impl Decider {
    /// The word messages name it by: `aggregate` or `decision`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decider::Aggregate => "aggregate",
            Decider::Decision => "decision",
        }
    }
}

impl fmt::Display for Decider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stage of the pipeline a middleware hook runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// [`Middleware::before_dispatch`](crate::Middleware::before_dispatch).
    BeforeDispatch,
    /// [`Middleware::after_dispatch`](crate::Middleware::after_dispatch).
    AfterDispatch,
    /// [`Middleware::after_failure`](crate::Middleware::after_failure).
    AfterFailure,
}

impl Stage {
    /// The hook's name: `before_dispatch`, `after_dispatch` or `after_failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::BeforeDispatch => "before_dispatch",
            Stage::AfterDispatch => "after_dispatch",
            Stage::AfterFailure => "after_failure",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
