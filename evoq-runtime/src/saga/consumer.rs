//! The saga as a consumer of the subscription engine: per event, load, run, save, dispatch.

use std::fmt;
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::{Commands, DispatchIds, ExecutedCommand, FailedCommand};
use super::definition::{Saga, StepKind};
use super::options::CommandSettings;
use crate::delivery::consumer::{Consumer, EventMeta, HandlerFailure, HandlerFuture};
use crate::delivery::policy::HandlerOptions;
use crate::delivery::subscribers::Registration;
use crate::dispatch::dispatcher::Dispatcher;
use crate::error::Error;
use crate::store::EventStore;
use crate::util::ids::derived_id;

/// The state of instance `instance` of the saga `S` in `store`: `None` when it has none (never
/// started, or stopped); [`Error::SagaState`] when the saved state does not decode.
pub(crate) async fn load_state<S: Saga>(
    store: &dyn EventStore,
    instance: &str,
) -> Result<Option<S>, Error> {
    let Some(bytes) = store.load_saga_state(S::NAME, instance).await? else {
        return Ok(None);
    };
    let saved: Instance<S> = serde_json::from_slice(&bytes).map_err(|error| Error::SagaState {
        saga: S::NAME,
        instance: instance.to_owned(),
        reason: error.to_string(),
    })?;
    Ok(Some(saved.state))
}

/// What the store keeps of one instance.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Instance<S: Saga> {
    state: S,
    /// The commands dispatched successfully and not marked undone by a compensation, oldest
    /// first.
    #[serde(default)]
    executed: Vec<ExecutedCommand>,
    /// The last event the instance handled: its position and the state before it, so that a
    /// re-delivery runs the method on the same state again (and dispatches the same ids).
    #[serde(default)]
    last: Option<LastEvent>,
}

#[derive(Serialize, Deserialize)]
struct LastEvent {
    position: u64,
    before: serde_json::Value,
    /// The executed commands before it.
    #[serde(default)]
    executed: Vec<ExecutedCommand>,
}

/// A saga as the subscription engine sees it: it dispatches through a weak handle on the
/// runtime's dispatcher (the runtime owns the dispatcher and the saga's task, not the reverse).
pub(crate) struct SagaConsumer<S> {
    dispatcher: Weak<Dispatcher>,
    settings: Arc<CommandSettings>,
    _saga: std::marker::PhantomData<fn() -> S>,
}

impl<S: Saga> Consumer for SagaConsumer<S> {
    /// A saga's checkpoint advances with its instance states, after every event.
    const CHECKPOINT_EVERY_EVENT: bool = true;

    fn consume<'a>(&'a mut self, event: &'a EventMeta) -> HandlerFuture<'a> {
        Box::pin(async move {
            let Some(dispatcher) = self.dispatcher.upgrade() else {
                return Err(failure(event, "the runtime is gone"));
            };
            handle::<S>(&dispatcher, &self.settings, event).await
        })
    }
}

/// The engine's registration of the saga `S`, with the builder's `options`; its commands go
/// through `dispatcher`, with `settings`.
pub(crate) fn registration<S: Saga>(
    dispatcher: Weak<Dispatcher>,
    options: HandlerOptions,
    settings: Arc<CommandSettings>,
) -> Registration {
    Registration::new(
        S::NAME,
        S::EVENT_TYPES,
        S::UPCASTERS,
        S::OPTIONS,
        options,
        SagaConsumer::<S> {
            dispatcher,
            settings,
            _saga: std::marker::PhantomData,
        },
    )
}

/// The name the saga `S` runs under with `options` (its handler name).
pub(crate) fn handler_name<S: Saga>(options: &HandlerOptions) -> String {
    match options.name.as_ref().or(S::OPTIONS.name.as_ref()) {
        Some(name) => name.to_string(),
        None => S::NAME.to_owned(),
    }
}

fn failure(event: &EventMeta, reason: impl fmt::Display) -> HandlerFailure {
    HandlerFailure::new(SagaError(format!(
        "saga could not handle event {} ({}): {reason}",
        event.event_id(),
        event.event_type()
    )))
}

#[derive(Debug)]
struct SagaError(String);

impl fmt::Display for SagaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SagaError {}

async fn handle<S: Saga>(
    dispatcher: &Arc<Dispatcher>,
    settings: &CommandSettings,
    event: &EventMeta,
) -> Result<(), HandlerFailure> {
    let Some(step) = S::route(event)? else {
        return Ok(());
    };
    let store = dispatcher.store();
    let saga = S::NAME;
    let key = step.instance;
    let loaded = store
        .load_saga_state(saga, &key)
        .await
        .map_err(|error| failure(event, error))?;
    let mut instance: Instance<S> = match loaded {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
            failure(
                event,
                format!("the state of instance `{key}` does not decode: {error}"),
            )
        })?,
        None if step.kind == StepKind::Stops => {
            tracing::debug!(
                name: "evoq.saga.stop",
                stage = "ignored",
                saga,
                instance = %key,
                event_type = event.event_type(),
            );
            return Ok(());
        }
        None => {
            tracing::debug!(
                name: "evoq.saga.start",
                saga,
                instance = %key,
                event_type = event.event_type(),
            );
            Instance {
                state: S::init(&key),
                executed: Vec::new(),
                last: None,
            }
        }
    };

    let position = event.global_position();
    if let Some(last) = &instance.last {
        if position < last.position {
            // Handled before a later event of this instance: nothing to do again.
            return Ok(());
        }
        if position == last.position {
            instance.state = serde_json::from_value(last.before.clone()).map_err(|error| {
                failure(
                    event,
                    format!("the state of instance `{key}` does not decode: {error}"),
                )
            })?;
            instance.executed = last.executed.clone();
        }
    }
    let before = serde_json::to_value(&instance.state)
        .map_err(|error| failure(event, format!("the state does not serialize: {error}")))?;
    let commands = (step.run)(&mut instance.state);
    instance.last = Some(LastEvent {
        position,
        before,
        executed: instance.executed.clone(),
    });
    let stops = step.kind == StepKind::Stops;
    if stops {
        store
            .delete_saga_state(saga, &key)
            .await
            .map_err(|error| failure(event, error))?;
        tracing::debug!(name: "evoq.saga.stop", stage = "stop", saga, instance = %key);
    } else {
        let bytes = encode(&instance, event)?;
        save(dispatcher, saga, &key, bytes, event).await?;
    }

    // An event stored without a correlation id starts a correlation of its own.
    let correlation_id = event
        .metadata()
        .correlation_id
        .unwrap_or_else(|| event.event_id());
    let base = format!("{saga}/{key}");
    let results = dispatch_all(dispatcher, settings, saga, &key, commands, |index| {
        DispatchIds {
            command_id: derived_id(&base, event.event_id(), index),
            causation_id: event.event_id(),
            correlation_id,
        }
    })
    .await
    .map_err(|error| failure(event, error))?;

    let (done, failures) = split_outcomes(results);
    let mut changed = record_executed(&mut instance.executed, done);
    for failed in failures {
        changed = true;
        let failed = FailedCommand {
            command: failed.command,
            command_id: failed.command_id,
            aggregate_id: failed.aggregate_id,
            error: failed.error,
            instance: key.clone(),
            correlation_id,
            executed: instance.executed.iter().rev().cloned().collect(),
        };
        let compensation = instance.state.compensate(&failed);
        tracing::debug!(
            name: "evoq.saga.compensate",
            saga,
            instance = %key,
            failed = failed.command,
            commands = compensation.len(),
            undone = compensation.undone.len(),
        );
        instance
            .executed
            .retain(|step| !compensation.undone.contains(&step.command_id));
        let cause = event.event_id();
        let compensation_base = format!("{base}/compensate");
        let failed_id = failed.command_id;
        dispatch_all(dispatcher, settings, saga, &key, compensation, |index| {
            DispatchIds {
                command_id: derived_id(&compensation_base, failed_id, index),
                causation_id: cause,
                correlation_id,
            }
        })
        .await
        .map_err(|error| failure(event, error))?;
    }
    if changed && !stops {
        let bytes = encode(&instance, event)?;
        save(dispatcher, saga, &key, bytes, event).await?;
    }
    Ok(())
}

async fn save(
    dispatcher: &Dispatcher,
    saga: &str,
    key: &str,
    bytes: Vec<u8>,
    event: &EventMeta,
) -> Result<(), HandlerFailure> {
    dispatcher
        .store()
        .save_saga_state(saga, key, bytes)
        .await
        .map_err(|error| failure(event, error))
}

fn encode<S: Saga>(instance: &Instance<S>, event: &EventMeta) -> Result<Vec<u8>, HandlerFailure> {
    serde_json::to_vec(instance)
        .map_err(|error| failure(event, format!("the state does not serialize: {error}")))
}

/// The outcome of one dispatched command.
enum CommandOutcome {
    Done(ExecutedCommand),
    Failed(Failure),
}

/// A command that failed, before it is handed to the compensation.
struct Failure {
    command: &'static str,
    command_id: Uuid,
    aggregate_id: String,
    error: String,
}

/// The successes and the failures of a batch, each in dispatch order.
fn split_outcomes(outcomes: Vec<CommandOutcome>) -> (Vec<ExecutedCommand>, Vec<Failure>) {
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for outcome in outcomes {
        match outcome {
            CommandOutcome::Done(executed) => done.push(executed),
            CommandOutcome::Failed(failed) => failures.push(failed),
        }
    }
    (done, failures)
}

/// Appends the successes to the instance's history (oldest first), skipping those it already
/// holds; whether it changed.
fn record_executed(history: &mut Vec<ExecutedCommand>, done: Vec<ExecutedCommand>) -> bool {
    let mut changed = false;
    for executed in done {
        if !history
            .iter()
            .any(|step| step.command_id == executed.command_id)
        {
            history.push(executed);
            changed = true;
        }
    }
    changed
}

/// Dispatches every command, in order, even after a failure; the outcomes in the same order.
/// A runtime that is stopping ends it: the event is delivered again after a restart (with the
/// same ids), and nothing is compensated for a shutdown.
async fn dispatch_all(
    dispatcher: &Arc<Dispatcher>,
    settings: &CommandSettings,
    saga: &'static str,
    instance: &str,
    commands: Commands,
    ids: impl Fn(usize) -> DispatchIds,
) -> Result<Vec<CommandOutcome>, Error> {
    let mut outcomes = Vec::with_capacity(commands.len());
    for (index, command) in commands.items.into_iter().enumerate() {
        let ids = ids(index);
        let name = command.name();
        let aggregate_id = command.aggregate_id();
        match command.dispatch(dispatcher, settings, ids).await {
            Ok(()) => {
                tracing::debug!(
                    name: "evoq.saga.command",
                    stage = "stop",
                    saga,
                    instance,
                    command = name,
                    command_id = %ids.command_id,
                );
                outcomes.push(CommandOutcome::Done(ExecutedCommand {
                    name: name.to_owned(),
                    command_id: ids.command_id,
                    aggregate_id,
                }));
            }
            Err(error @ Error::Stopped { .. }) => return Err(error),
            Err(error) => {
                tracing::warn!(
                    name: "evoq.saga.command",
                    stage = "exception",
                    saga,
                    instance,
                    command = name,
                    command_id = %ids.command_id,
                    error = %error,
                );
                outcomes.push(CommandOutcome::Failed(Failure {
                    command: name,
                    command_id: ids.command_id,
                    aggregate_id,
                    error: error.to_string(),
                }));
            }
        }
    }
    Ok(outcomes)
}
