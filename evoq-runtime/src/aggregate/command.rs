//! Commands: the [`Command`] trait that `#[derive(Command)]` implements, and the [`Route`]
//! trait that `#[aggregate]` implements for every command it handles.

use std::any::Any;
use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use super::definition::Aggregate;
use crate::error::Decider;
use crate::store::EventQuery;

/// A request to change one aggregate. The field marked `#[aggregate_id]` names the target.
///
/// A command is plain data shared across threads (`Send + Sync`): middleware sees it by
/// reference before and after the aggregate runs it.
///
/// Implemented by `#[derive(Command)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an evoq command",
    label = "not a `Command`",
    note = "add `#[derive(Command)]` to the definition of `{Self}` and mark the field that names the target aggregate with `#[aggregate_id]`"
)]
pub trait Command: Send + Sync + 'static {
    /// The command's name, used in errors, telemetry and metadata.
    const NAME: &'static str;

    /// The id of the aggregate this command targets.
    fn aggregate_id(&self) -> String;

    /// The same id as [`aggregate_id`](Self::aggregate_id), borrowed from the command when it
    /// holds it as a string: what the runtime routes every dispatch by, so that a dispatch
    /// copies no id. The default formats it with `aggregate_id`; `#[derive(Command)]` borrows
    /// an `#[aggregate_id]` field of type `String`, `&'static str`, `Box<str>`, `Arc<str>` or
    /// `Cow<'static, str>`.
    fn aggregate_id_str(&self) -> Cow<'_, str> {
        Cow::Owned(self.aggregate_id())
    }
}

/// The compile-time route of a command: the one aggregate that handles it.
///
/// `#[aggregate]` implements it for the command of every `#[handles]` method, so a command
/// without a handler does not implement it (dispatching it is a compile error), and a command
/// handled by two aggregates has two conflicting implementations (also a compile error).
#[diagnostic::on_unimplemented(
    message = "no aggregate handles the command `{Self}`",
    label = "`{Self}` has no route to an aggregate",
    note = "add `#[handles] fn name(&self, command: &{Self}) -> Result<SomeEvent, SomeError>` to the `#[aggregate]` block of the aggregate that owns `{Self}`"
)]
pub trait Route: Command + Sized {
    /// The aggregate that handles this command.
    type Aggregate: Aggregate;

    /// How many times a [decision](crate::decision) decides this command before it gives up
    /// with [`Error::DecisionConflict`](crate::Error::DecisionConflict)
    /// (`#[decision(attempts = N)]`); `None`: the dispatch's retry limit plus one.
    const DECISION_ATTEMPTS: Option<u32> = None;

    /// Whether the [decision](crate::decision) keeps its model per boundary between commands
    /// (`#[decision(cached)]`).
    const DECISION_CACHED: bool = false;

    /// Whether the command's [decision](crate::decision) handler takes the context's events
    /// as well as the model (a third parameter, `context: &[DecisionEvent]`).
    const DECISION_CONTEXT: bool = false;

    /// Runs the command against the current state: the events to append, or a rejection.
    ///
    /// For a [decision](crate::decision) handler that takes the context's events, this runs it
    /// on an empty context; the runtime calls [`decide_on`](Self::decide_on).
    fn handle(
        state: &Self::Aggregate,
        command: &Self,
    ) -> Result<Vec<<Self::Aggregate as Aggregate>::Event>, Rejection>;

    /// Runs the command against the current state and `context`, the events its
    /// [decision](crate::decision)'s query selected that the model applies, oldest first: what
    /// the runtime calls for a decision. The default (every aggregate, and a decision handler
    /// that takes the model alone) is [`handle`](Self::handle), ignoring `context`.
    fn decide_on(
        state: &Self::Aggregate,
        command: &Self,
        context: &[<Self::Aggregate as Aggregate>::Event],
    ) -> Result<Vec<<Self::Aggregate as Aggregate>::Event>, Rejection> {
        let _ = context;
        Self::handle(state, command)
    }

    /// The events a [decision](crate::decision) decides this command on: `Some` for a command
    /// of a `#[decision]` block (its `#[query]`), which the runtime decides on those events,
    /// read across streams, and appends under the condition that none matching was appended
    /// since; `None` (the default) for an aggregate's command, which its live instance decides.
    fn decision_query(&self) -> Option<EventQuery> {
        None
    }
}

/// A domain error returned by a command handler: the command was refused, nothing changed.
pub struct Rejection(Box<dyn StdError + Send + Sync + 'static>);

impl Rejection {
    /// Wraps the handler's own error.
    pub fn new<E: StdError + Send + Sync + 'static>(error: E) -> Self {
        Rejection(Box::new(error))
    }

    /// The handler's error, if it is of type `E`.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }

    /// The boxed error.
    pub fn into_inner(self) -> Box<dyn StdError + Send + Sync + 'static> {
        self.0
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The error type a command handler may return: any `std::error::Error + Send + Sync + 'static`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of a command handler",
    label = "this error type does not implement `std::error::Error + Send + Sync + 'static`",
    note = "derive `thiserror::Error` (or implement `std::error::Error` and `Display`) for `{Self}`"
)]
pub trait DomainError: StdError + Send + Sync + 'static {}

impl<E: StdError + Send + Sync + 'static> DomainError for E {}

/// A command as its actor runs it: by value, or shared with the dispatch's middleware.
///
/// The actor borrows it shared (every command is `Send + Sync`), so the dispatch can route by
/// an id borrowed from the command ([`Command::aggregate_id_str`]) while the actor runs it.
pub(crate) trait Decide<A: Aggregate>: Send + Sync {
    /// The command's name.
    fn name(&self) -> &'static str;
    /// Runs the routed `#[handles]` function against a state and, for a decision, the
    /// context's events ([`Route::decide_on`]; an aggregate's command ignores them).
    fn decide(&self, state: &A, context: &[A::Event]) -> Result<Vec<A::Event>, Rejection>;
    /// The command itself (for the lifespan's `after_command`).
    fn command(&self) -> &dyn Any;
    /// [`Route::decision_query`].
    fn decision_query(&self) -> Option<EventQuery>;
    /// [`Route::DECISION_ATTEMPTS`].
    fn decision_attempts(&self) -> Option<u32>;
    /// [`Route::DECISION_CACHED`].
    fn decision_cached(&self) -> bool;
    /// [`Route::DECISION_CONTEXT`].
    fn decision_context(&self) -> bool;
    /// What decides the command, as its errors name it: a decision when it has a query (which
    /// this builds: for the paths that fail, not for every command).
    fn decider(&self) -> Decider {
        match self.decision_query() {
            Some(_) => Decider::Decision,
            None => Decider::Aggregate,
        }
    }
}

impl<C: Route> Decide<C::Aggregate> for C {
    fn name(&self) -> &'static str {
        C::NAME
    }

    fn decide(
        &self,
        state: &C::Aggregate,
        context: &[<C::Aggregate as Aggregate>::Event],
    ) -> Result<Vec<<C::Aggregate as Aggregate>::Event>, Rejection> {
        C::decide_on(state, self, context)
    }

    fn command(&self) -> &dyn Any {
        self
    }

    fn decision_query(&self) -> Option<EventQuery> {
        C::decision_query(self)
    }

    fn decision_attempts(&self) -> Option<u32> {
        C::DECISION_ATTEMPTS
    }

    fn decision_cached(&self) -> bool {
        C::DECISION_CACHED
    }

    fn decision_context(&self) -> bool {
        C::DECISION_CONTEXT
    }
}

impl<C: Route> Decide<C::Aggregate> for Arc<C> {
    fn name(&self) -> &'static str {
        C::NAME
    }

    fn decide(
        &self,
        state: &C::Aggregate,
        context: &[<C::Aggregate as Aggregate>::Event],
    ) -> Result<Vec<<C::Aggregate as Aggregate>::Event>, Rejection> {
        C::decide_on(state, self, context)
    }

    fn command(&self) -> &dyn Any {
        &**self
    }

    fn decision_query(&self) -> Option<EventQuery> {
        C::decision_query(self)
    }

    fn decision_attempts(&self) -> Option<u32> {
        C::DECISION_ATTEMPTS
    }

    fn decision_cached(&self) -> bool {
        C::DECISION_CACHED
    }

    fn decision_context(&self) -> bool {
        C::DECISION_CONTEXT
    }
}
