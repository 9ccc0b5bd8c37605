//! Middleware: code that runs around every dispatch (docs/semantics.md §4).
//!
//! A [`Middleware`] implements any of three hooks, each given the [`Pipeline`] of one dispatch:
//!
//! - [`before_dispatch`](Middleware::before_dispatch) runs before the aggregate. It may add
//!   metadata to the command's context (copied into every event), put values in the assigns, or
//!   halt: [`Pipeline::halt`] stops the chain, the aggregate is not touched, and the caller gets
//!   [`Error::Halted`] naming the middleware ([`Pipeline::fail`] halts with an error of its
//!   choice instead).
//! - [`after_dispatch`](Middleware::after_dispatch) runs when the command succeeded. The
//!   framework has assigned `events`, `version` and `position`. It may replace the response with
//!   an error ([`Pipeline::fail`]); the events are stored either way.
//! - [`after_failure`](Middleware::after_failure) runs instead of `after_dispatch` when the
//!   command failed (rejection, conflict, store error, ...). The framework has assigned `error`.
//!   It may replace the error ([`Pipeline::fail`], [`Pipeline::map_error`]).
//!
//! Order: the runtime's middleware (registered with
//! [`EvoqBuilder::middleware`](crate::EvoqBuilder::middleware)) then the dispatch's own
//! ([`CommandBuilder::middleware`](crate::CommandBuilder::middleware)), left to right, for every
//! stage. [`Pipeline::halt`] in an after stage stops the rest of that stage's chain and keeps the
//! response as it is. A halt in `before_dispatch` runs no after stage.
//!
//! A panic in a hook is caught (the future is polled under `catch_unwind`): the chain stops and
//! the caller gets [`Error::MiddlewarePanicked`] naming the middleware and the stage.
//!
//! The whole pipeline, middleware included, runs within the dispatch's timeout.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

pub use crate::error::Stage;

use crate::aggregate::context::CommandContext;
use crate::error::Error;
use crate::util::panic::{CatchPanic, displayed, panic_message};

/// Code that runs around every dispatch: see the [module docs](self).
///
/// Implement it with `#[async_trait]` (re-exported by the facade as `evoq::async_trait`); every
/// hook has a no-op default, so implement only the ones you need.
///
/// ```
/// # use evoq_runtime as evoq;
/// use evoq::dispatch::{Middleware, Pipeline};
///
/// struct RequireUser;
///
/// #[async_trait::async_trait] // `#[evoq::async_trait]` through the facade
/// impl Middleware for RequireUser {
///     async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) {
///         if !pipeline.context().metadata.contains_key("user") {
///             pipeline.halt("every command needs a `user` metadata entry");
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// The name used in errors and telemetry (default: the type's path).
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// Runs before the aggregate; may add metadata, assign values, or halt.
    async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) {
        let _ = pipeline;
    }

    /// Runs after a successful command; may replace the response with an error.
    async fn after_dispatch(&self, pipeline: &mut Pipeline<'_>) {
        let _ = pipeline;
    }

    /// Runs after a failed command, instead of `after_dispatch`; may replace the error.
    async fn after_failure(&self, pipeline: &mut Pipeline<'_>) {
        let _ = pipeline;
    }
}

/// Values middleware pass along one dispatch, by name. The framework assigns `events` (an
/// array of `{"type": ..., "data": ...}`), `version` and `position` (when events were appended)
/// on success, and `error` (the error's text) on failure.
pub type Assigns = BTreeMap<String, serde_json::Value>;

/// The response a pipeline carries: pending before dispatch, then the command's outcome.
enum Response {
    Pending,
    Success,
    Failure(Error),
}

/// One dispatch as the middleware sees it: the command, its context, the assigns and the
/// response. See the [module docs](self).
pub struct Pipeline<'a> {
    command: &'a (dyn Any + Send + Sync),
    command_name: &'static str,
    aggregate: &'static str,
    aggregate_id: &'a str,
    context: CommandContext,
    assigns: Assigns,
    stage: Stage,
    response: Response,
    halted: bool,
    /// The middleware whose hook is running (for the errors it raises).
    current: &'a str,
}

impl<'a> Pipeline<'a> {
    pub(crate) fn new(
        command: &'a (dyn Any + Send + Sync),
        command_name: &'static str,
        aggregate: &'static str,
        aggregate_id: &'a str,
        context: CommandContext,
    ) -> Self {
        Pipeline {
            command,
            command_name,
            aggregate,
            aggregate_id,
            context,
            assigns: Assigns::new(),
            stage: Stage::BeforeDispatch,
            response: Response::Pending,
            halted: false,
            current: "",
        }
    }

    /// The command, to downcast (see [`command_as`](Self::command_as)).
    pub fn command(&self) -> &(dyn Any + Send + Sync) {
        self.command
    }

    /// The command, if it is a `T`.
    pub fn command_as<T: Any>(&self) -> Option<&T> {
        self.command.downcast_ref::<T>()
    }

    /// The command type's name.
    pub fn command_name(&self) -> &'static str {
        self.command_name
    }

    /// The target aggregate type's name.
    pub fn aggregate(&self) -> &'static str {
        self.aggregate
    }

    /// The target aggregate's id.
    pub fn aggregate_id(&self) -> &str {
        self.aggregate_id
    }

    /// The command's id.
    pub fn command_id(&self) -> Uuid {
        self.context.command_id
    }

    /// The command's ids, idempotency key and metadata.
    pub fn context(&self) -> &CommandContext {
        &self.context
    }

    /// The command's context, to change in `before_dispatch` (for example to add a metadata
    /// entry, which every event the command produces will carry). Changes made in an after stage
    /// reach no event. The idempotency key was read before the pipeline started: changing it or
    /// the command id here does not change how the dispatch is deduplicated.
    pub fn context_mut(&mut self) -> &mut CommandContext {
        &mut self.context
    }

    /// The stage running now.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Every assigned value.
    pub fn assigns(&self) -> &Assigns {
        &self.assigns
    }

    /// The value assigned to `key`, if any.
    pub fn assigned(&self, key: &str) -> Option<&serde_json::Value> {
        self.assigns.get(key)
    }

    /// Assigns `value` to `key`, for the hooks that run after this one.
    pub fn assign(&mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) {
        self.assigns.insert(key.into(), value.into());
    }

    /// Whether the response is (so far) a success: `true` in `before_dispatch` unless a hook
    /// failed it, and in `after_dispatch` unless a hook replaced the response with an error.
    pub fn is_success(&self) -> bool {
        !matches!(self.response, Response::Failure(_))
    }

    /// The error the response holds: the command's error in `after_failure`, or one a hook set.
    pub fn error(&self) -> Option<&Error> {
        match &self.response {
            Response::Failure(error) => Some(error),
            _ => None,
        }
    }

    /// Replaces the response with `error`. In `before_dispatch` this also halts: the aggregate
    /// is not touched and the caller gets `error`.
    pub fn fail(&mut self, error: Error) {
        self.response = Response::Failure(error);
        if self.stage == Stage::BeforeDispatch {
            self.halted = true;
        }
    }

    /// Replaces the error the response holds with `f(error)`; does nothing on a success.
    pub fn map_error(&mut self, f: impl FnOnce(Error) -> Error) {
        self.response = match std::mem::replace(&mut self.response, Response::Pending) {
            Response::Failure(error) => Response::Failure(f(error)),
            other => other,
        };
    }

    /// Halts the pipeline: no further middleware runs in this stage. In `before_dispatch` the
    /// aggregate is not touched and the caller gets [`Error::Halted`] with `reason`, naming this
    /// middleware; in an after stage the response stays as it is.
    pub fn halt(&mut self, reason: impl Into<String>) {
        self.halted = true;
        if self.stage == Stage::BeforeDispatch && !matches!(self.response, Response::Failure(_)) {
            self.response = Response::Failure(Error::Halted {
                middleware: self.current.to_owned(),
                command: self.command_name,
                reason: reason.into(),
            });
        }
    }

    /// Whether a hook halted the pipeline in the current stage.
    pub fn is_halted(&self) -> bool {
        self.halted
    }

    // ----- used by the pipeline runner -----

    /// The context, for the job sent to the aggregate (after `before_dispatch`).
    pub(crate) fn context_for_job(&self) -> CommandContext {
        self.context.clone()
    }

    /// The halting error of `before_dispatch`, if it halted.
    pub(crate) fn take_halt(&mut self) -> Option<Error> {
        if !self.halted {
            return None;
        }
        match std::mem::replace(&mut self.response, Response::Pending) {
            Response::Failure(error) => Some(error),
            // A halt always sets an error in `before_dispatch`; keep a sensible fallback.
            _ => Some(Error::Halted {
                middleware: self.current.to_owned(),
                command: self.command_name,
                reason: "halted".to_owned(),
            }),
        }
    }

    /// Enters an after stage with the command's outcome.
    pub(crate) fn enter_after(&mut self, outcome: Result<(), Error>) {
        self.halted = false;
        match outcome {
            Ok(()) => {
                self.stage = Stage::AfterDispatch;
                self.response = Response::Success;
            }
            Err(error) => {
                self.stage = Stage::AfterFailure;
                self.assign("error", displayed(&error));
                self.response = Response::Failure(error);
            }
        }
    }

    /// The response after the after stage: `Ok(())` for a success the middleware kept.
    pub(crate) fn into_response(self) -> Result<(), Error> {
        match self.response {
            Response::Failure(error) => Err(error),
            _ => Ok(()),
        }
    }

    /// Runs one stage of `chain` (left to right) until a hook halts or panics.
    pub(crate) async fn run_stage(&mut self, chain: Chain<'a>) {
        let stage = self.stage;
        for middleware in chain.iter() {
            let name = middleware.name();
            self.current = name;
            stage_event(stage, "start", name, false);
            let pipeline = &mut *self;
            // A hand-written (non-`async_trait`) hook may panic before returning its future.
            let outcome = match catch_unwind(AssertUnwindSafe(move || {
                let pipeline = pipeline;
                match stage {
                    Stage::BeforeDispatch => middleware.before_dispatch(pipeline),
                    Stage::AfterDispatch => middleware.after_dispatch(pipeline),
                    Stage::AfterFailure => middleware.after_failure(pipeline),
                }
            })) {
                Ok(future) => CatchPanic::new(future).await,
                Err(panic) => Err(panic),
            };
            if let Err(panic) = outcome {
                let message = panic_message(&*panic);
                tracing::error!(
                    name: "evoq.middleware.panic",
                    middleware = name,
                    hook = stage.as_str(),
                    command = self.command_name,
                    panic = %message,
                    "evoq.middleware.panic",
                );
                stage_event(stage, "exception", name, true);
                self.response = Response::Failure(Error::MiddlewarePanicked {
                    middleware: name.to_owned(),
                    stage,
                    command: self.command_name,
                    message,
                });
                self.halted = true;
                return;
            }
            stage_event(stage, "stop", name, self.halted);
            if self.halted {
                return;
            }
        }
    }
}

impl fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("command", &self.command_name)
            .field("aggregate", &self.aggregate)
            .field("aggregate_id", &self.aggregate_id)
            .field("context", &self.context)
            .field("stage", &self.stage)
            .field("assigns", &self.assigns)
            .field("error", &self.error())
            .field("halted", &self.halted)
            .finish()
    }
}

/// The middleware of one dispatch: the runtime's, then the dispatch's own.
#[derive(Clone, Copy)]
pub(crate) struct Chain<'a> {
    pub(crate) global: &'a [Arc<dyn Middleware>],
    pub(crate) local: &'a [Arc<dyn Middleware>],
}

impl<'a> Chain<'a> {
    pub(crate) fn is_empty(self) -> bool {
        self.global.is_empty() && self.local.is_empty()
    }

    fn iter(self) -> impl Iterator<Item = &'a Arc<dyn Middleware>> {
        self.global.iter().chain(self.local)
    }
}

/// One telemetry event per middleware and stage: `evoq.middleware.<hook>` with `stage` =
/// start / stop / exception.
fn stage_event(hook: Stage, stage: &'static str, middleware: &str, halted: bool) {
    match hook {
        Stage::BeforeDispatch => {
            tracing::debug!(name: "evoq.middleware.before_dispatch", stage, middleware, halted, "evoq.middleware.before_dispatch")
        }
        Stage::AfterDispatch => {
            tracing::debug!(name: "evoq.middleware.after_dispatch", stage, middleware, halted, "evoq.middleware.after_dispatch")
        }
        Stage::AfterFailure => {
            tracing::debug!(name: "evoq.middleware.after_failure", stage, middleware, halted, "evoq.middleware.after_failure")
        }
    }
}
