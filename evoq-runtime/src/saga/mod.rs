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
//! 2. the instance's state is loaded from the store's saga state slots, under the name the saga
//!    runs under (its attribute's, or `HandlerOptions::name`): a start on an existing instance
//!    routes to it, a continue on a missing instance starts one, a stop on a missing instance
//!    is ignored, and so is an event of a stopped instance at or below the event that stopped
//!    it;
//! 3. the method runs; the instance is saved with the commands it returned (its *outbox*),
//!    the position of the event, and the instance as it was before the event; its timeouts
//!    are stored ([`Commands::timeout_after`]);
//! 4. the commands are dispatched, every one even if an earlier one fails, with the event as
//!    causation, the event's correlation id, and a deterministic command id made from the
//!    saga, the instance, the event id and the command's index; each outcome is marked in the
//!    outbox and saved as it completes; each with the saga's command options
//!    ([`SagaOptions`]: timeout, conflict retries, consistency; the runtime's defaults when
//!    unset);
//! 5. a command that fails (after its conflict retries) goes to the `#[compensates]` method as
//!    a [`FailedCommand`], once every command of its batch has been dispatched; its
//!    [`executed()`](FailedCommand::executed) lists every command of the instance that
//!    succeeded (those of the same batch included, before and after the failed one), newest
//!    first, less those an earlier compensation marked undone
//!    ([`Commands::mark_undone`]); the compensating commands it returns go through the outbox
//!    the same way (ids from the failed command's id), in the order returned, and the steps
//!    they mark undone leave the list;
//! 6. a `#[stops]` method's instance is removed, with its timeouts, only once its last command
//!    is done; it leaves the position of the event that stopped it, so that the events it
//!    handled never bring it back (a dead letter retried, a replay from the origin).
//!
//! A re-delivered event (after a stop or a crash before the checkpoint moved, or a reset
//! checkpoint) runs the method again on the instance from before it, checks that it returns
//! the commands of its outbox, and dispatches only those not done yet, with their original
//! ids; the command log returns the first result of one that ran before the crash. So every
//! command takes effect once, whatever the moment of a stop or a crash.
//!
//! A timeout fires its event once, when due, through the saga's timer: appended to the stream
//! `saga.<name>-<instance>` (the name the saga runs under) with a command-log entry of the
//! timeout's id (a second firing, on another node say, is a duplicate), and handled by the
//! method for its type while the instance still waits for it.
//!
//! Test a saga without a runtime with [`SagaTest`]: events go through [`Saga::route`] as
//! above, and a command's failure through the `#[compensates]` method.
//!
//! Telemetry: `evoq.saga.start` (an instance is created), `stop` (removed, or a stop or an event
//! of a stopped instance ignored), `command` (a dispatch and its outcome), `compensate` and
//! `timeout` (fired, or ignored), at DEBUG (a failed command at WARN).

mod commands;
mod consumer;
mod definition;
mod instance;
mod options;
mod stopped;
mod testing;
mod timer;

pub use commands::{Commands, Due, ExecutedCommand, FailedCommand, SagaCommand};
pub use definition::{
    Correlate, CorrelationKey, KeyCorrelation, OptionCorrelation, OptionKey, PlainKey, Saga, Step,
    StepKind,
};
pub use options::SagaOptions;
pub use testing::{SagaOutcome, SagaTest};

pub(crate) use consumer::{handler_name, registration};
pub(crate) use instance::load_state;
pub(crate) use options::CommandSettings;
pub(crate) use stopped::check_name;
