//! Sagas: long-running coordinators that react to events with commands.
//!
//! A saga is a state struct (`Serialize + Deserialize`) whose `#[saga(name = "...")]`
//! impl block has methods marked `#[starts(by = field)]`, `#[continues(by = field)]` and
//! `#[stops(by = field)]`, each taking one event and returning the [`Commands`] to dispatch,
//! optionally one `#[compensates]` method taking a [`FailedCommand`], and optionally one
//! `#[init]` method that makes a new instance from its id ([`Saga::init`]; without one, the
//! state's `Default`).
//!
//! It runs on the subscription engine like an event handler (one task, global order, retries,
//! dead letters, leases on a shared store, upcasting). For each event of its types:
//!
//! 1. the `by` field of the event gives the *instance* (its correlation value); an empty value
//!    (`""`, `None`) correlates to nothing and the event is ignored;
//! 2. the instance's state is loaded from the store's saga state slots: a start on an existing
//!    instance routes to it, a continue on a missing instance starts one, a stop on a missing
//!    instance is ignored;
//! 3. the method runs; the state, with the position of the event (the instance's checkpoint),
//!    is saved (a stop removes it);
//! 4. the commands are dispatched, every one even if an earlier one fails, with the event as
//!    causation, the event's correlation id, and a deterministic command id made from the
//!    saga, the event id and the command's index: a re-delivered event (after a crash, a
//!    restart, a reset checkpoint) produces the same ids, and the pipeline's idempotency on
//!    caller-supplied command ids returns the first result instead of running them again;
//!    each with the saga's command options ([`SagaOptions`]: timeout, conflict retries,
//!    consistency; the runtime's defaults when unset);
//! 5. a command that fails (after its conflict retries) goes to the `#[compensates]` method as
//!    a [`FailedCommand`], once every command of its batch has been dispatched; its
//!    [`executed()`](FailedCommand::executed) lists every command of the instance that
//!    succeeded (those of the same batch included, before and after the failed one), newest
//!    first, less those an earlier compensation marked undone
//!    ([`Commands::mark_undone`]); the compensating commands it returns are dispatched the same
//!    way (ids from the failed command's id), in the order returned, and the steps they mark
//!    undone leave the list.
//!
//! Test a saga without a runtime with [`SagaTest`]: events go through [`Saga::route`] as
//! above, and a command's failure through the `#[compensates]` method.
//!
//! Telemetry: `evoq.saga.start` (an instance is created), `stop` (removed, or a stop ignored),
//! `command` (a dispatch and its outcome) and `compensate`, at DEBUG (a failed command at WARN).

mod commands;
mod consumer;
mod definition;
mod options;
mod testing;

pub use commands::{Commands, Due, ExecutedCommand, FailedCommand};
pub use definition::{
    Correlate, CorrelationKey, KeyCorrelation, OptionCorrelation, OptionKey, PlainKey, Saga, Step,
    StepKind,
};
pub use options::SagaOptions;
pub use testing::{SagaOutcome, SagaTest};

pub(crate) use consumer::{handler_name, load_state, registration};
pub(crate) use options::CommandSettings;
