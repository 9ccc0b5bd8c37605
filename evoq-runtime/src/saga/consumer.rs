//! The saga as a consumer of the subscription engine: per event, load the instance, run the
//! method, save the instance with its outbox, schedule its timeouts, dispatch, compensate.

use std::fmt;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use uuid::Uuid;

use super::commands::{Commands, DispatchIds, ExecutedCommand, FailedCommand, ScheduledTimeout};
use super::definition::{Saga, StepKind};
use super::instance::{Instance, PendingTimeout, Status};
use super::options::CommandSettings;
use super::stopped;
use super::timer::{self, Payload, TIMEOUT_ENTRY};
use crate::delivery::consumer::{Consumer, EventMeta, HandlerFailure, HandlerFuture};
use crate::delivery::policy::HandlerOptions;
use crate::delivery::subscribers::Registration;
use crate::dispatch::dispatcher::Dispatcher;
use crate::envelope::Metadata;
use crate::error::Error;
use crate::store::{EventStore, Timeout};
use crate::util::ids::derived_id;

/// A saga as the subscription engine sees it: it dispatches through a weak handle on the
/// runtime's dispatcher (the runtime owns the dispatcher and the saga's task, not the reverse).
pub(crate) struct SagaConsumer<S> {
    /// The name the saga runs under: it keys its instances, their commands and timeouts.
    name: Arc<str>,
    dispatcher: Weak<Dispatcher>,
    settings: Arc<CommandSettings>,
    /// Wakes the saga's timer when the saga schedules a timeout.
    wake: Arc<Notify>,
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
            handle::<S>(&dispatcher, &self.settings, &self.wake, &self.name, event).await
        })
    }
}

/// The engine's registration of the saga `S`, with the builder's `options`; its commands go
/// through `dispatcher`, with `settings`. Starts the saga's timer, for the name it runs under.
pub(crate) fn registration<S: Saga>(
    dispatcher: Weak<Dispatcher>,
    options: HandlerOptions,
    settings: Arc<CommandSettings>,
) -> Registration {
    let name: Arc<str> = Arc::from(handler_name::<S>(&options));
    let wake = Arc::new(Notify::new());
    if let Some(dispatcher) = dispatcher.upgrade() {
        timer::spawn(&dispatcher, Arc::clone(&name), Arc::clone(&wake));
    }
    Registration::new(
        S::NAME,
        S::EVENT_TYPES,
        S::UPCASTERS,
        S::OPTIONS,
        options,
        SagaConsumer::<S> {
            name,
            dispatcher,
            settings,
            wake,
            _saga: std::marker::PhantomData,
        },
    )
}

/// The name the saga `S` runs under with `options` (its handler name).
pub(crate) fn handler_name<S: Saga>(options: &HandlerOptions) -> String {
    options.name_over(&S::OPTIONS, S::NAME).to_owned()
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

/// Handles one event for the saga `S`, running under the name `saga`. The instance is saved
/// with the commands the method returned (its outbox) before any is dispatched, and again as
/// each completes; a re-delivered event (the position of the instance's last event) runs the
/// method again on the state from before it, and dispatches only what the outbox does not hold
/// as done or failed. An event of a stopped instance at or below the event that stopped it is
/// not run again.
async fn handle<S: Saga>(
    dispatcher: &Arc<Dispatcher>,
    settings: &CommandSettings,
    wake: &Notify,
    saga: &str,
    event: &EventMeta,
) -> Result<(), HandlerFailure> {
    let Some(step) = S::route(event)? else {
        return Ok(());
    };
    let store = dispatcher.store();
    let key = step.instance;
    let position = event.global_position();
    let timeout = timer::timeout_id(event.metadata(), saga);
    let loaded = store
        .load_saga_state(saga, &key)
        .await
        .map_err(|error| failure(event, error))?;
    let mut instance: Instance<S> = match loaded {
        Some(bytes) => Instance::decode(&bytes).map_err(|error| undecodable(event, &key, error))?,
        None => {
            let stopped_at = stopped::position(&**store, saga, &key)
                .await
                .map_err(|error| failure(event, error))?;
            match stopped_at {
                // A dead letter delivered again after its instance stopped: it can no longer
                // run, and doing nothing would drop it silently. The retry fails, the dead
                // letter stays, saying why.
                Some(at) if position < at && event.is_redelivery() => {
                    return Err(failure(
                        event,
                        format!(
                            "instance `{key}` stopped at a later event (at position {at}) since this one was dead-lettered, so its step can no longer run; discard the dead letter, and make up for it by hand if need be"
                        ),
                    ));
                }
                // Handled before the instance stopped (a replay): it does not come back.
                Some(at) if position <= at => {
                    ignored(saga, &key, event);
                    return Ok(());
                }
                _ if timeout.is_some() || step.kind == StepKind::Stops => {
                    ignored(saga, &key, event);
                    return Ok(());
                }
                _ => {
                    tracing::debug!(
                        name: "evoq.saga.start",
                        saga,
                        instance = %key,
                        event_type = event.event_type(),
                        "evoq.saga.start",
                    );
                    Instance::new(S::init(&key))
                }
            }
        }
    };

    let redelivered = match &instance.last {
        // A dead letter delivered again after the instance went on: its step can no longer run
        // in order, and doing nothing would drop it silently. The retry fails, the dead letter
        // stays, saying why.
        Some(last) if position < last.position && event.is_redelivery() => {
            return Err(failure(
                event,
                format!(
                    "instance `{key}` has handled a later event (at position {}) since this one was dead-lettered, so its step can no longer run in order; discard the dead letter, and make up for it by hand if need be",
                    last.position
                ),
            ));
        }
        // Handled before a later event of this instance: nothing to do again.
        Some(last) if position < last.position => return Ok(()),
        Some(last) => position == last.position,
        None => false,
    };
    if redelivered {
        instance
            .rewind()
            .map_err(|error| undecodable(event, &key, error))?;
    } else {
        instance.outbox.clear();
    }
    // Remembered before the timeout is taken, so that a re-delivery of this event rewinds to
    // an instance that still holds it.
    instance
        .begin(position)
        .map_err(|error| failure(event, format!("the state does not serialize: {error}")))?;
    if let Some(id) = timeout
        && !instance.take_timeout(id)
    {
        // Cancelled: the instance no longer waits for it.
        tracing::debug!(
            name: "evoq.saga.timeout",
            stage = "ignored",
            saga,
            instance = %key,
            timeout = %id,
            "evoq.saga.timeout",
        );
        return Ok(());
    }
    let commands = (step.run)(&mut instance.state);
    instance.stopping = step.kind == StepKind::Stops;

    let base = format!("{saga}/{key}");
    let ids: Vec<Uuid> = (0..commands.len())
        .map(|index| derived_id(&base, event.event_id(), index))
        .collect();
    instance
        .record_outbox(&commands, &ids, None)
        .map_err(|difference| nondeterministic(event, &key, &difference))?;
    let scheduled = prepare_timeouts::<S>(&commands.timeouts, event, saga, &key, &base)?;
    let of = Of { saga, key: &key };
    save_scheduling(dispatcher, wake, of, &mut instance, scheduled, event).await?;

    // An event stored without a correlation id starts a correlation of its own.
    let correlation_id = event
        .metadata()
        .correlation_id
        .unwrap_or_else(|| event.event_id());
    let cause = event.event_id();
    let failures = dispatch_outbox(
        dispatcher,
        settings,
        &mut instance,
        of,
        Batch {
            commands,
            ids: &ids,
            compensates: None,
        },
        |command_id| DispatchIds {
            command_id,
            causation_id: cause,
            correlation_id,
        },
        event,
    )
    .await?;

    for failed in failures {
        let failed = FailedCommand {
            instance: key.clone(),
            correlation_id,
            executed: instance.executed.iter().rev().cloned().collect(),
            ..failed
        };
        let compensation = instance.state.compensate(&failed);
        tracing::debug!(
            name: "evoq.saga.compensate",
            saga,
            instance = %key,
            failed = failed.command,
            commands = compensation.len(),
            undone = compensation.undone.len(),
            "evoq.saga.compensate",
        );
        instance
            .executed
            .retain(|step| !compensation.undone.contains(&step.command_id));
        let compensation_base = format!("{base}/compensate");
        let ids: Vec<Uuid> = (0..compensation.len())
            .map(|index| derived_id(&compensation_base, failed.command_id, index))
            .collect();
        instance
            .record_outbox(&compensation, &ids, Some(failed.command_id))
            .map_err(|difference| nondeterministic(event, &key, &difference))?;
        // Its timeouts are named after the failed command: each failure's are its own.
        let scheduled = prepare_timeouts::<S>(
            &compensation.timeouts,
            event,
            saga,
            &key,
            &format!("{compensation_base}/{}", failed.command_id),
        )?;
        save_scheduling(dispatcher, wake, of, &mut instance, scheduled, event).await?;
        // A compensation that fails is logged, not compensated in turn.
        dispatch_outbox(
            dispatcher,
            settings,
            &mut instance,
            of,
            Batch {
                commands: compensation,
                ids: &ids,
                compensates: Some(failed.command_id),
            },
            |command_id| DispatchIds {
                command_id,
                causation_id: cause,
                correlation_id,
            },
            event,
        )
        .await?;
    }

    if instance.stopping {
        // Its last command is done: the instance and its timeouts go, leaving the position it
        // stopped at (recorded first: a crash in between leaves the instance, and this event is
        // delivered again). (Every timeout stored for it is in its list: it is saved there
        // before it is scheduled.)
        if !instance.timeouts.is_empty() {
            store
                .cancel_timeouts(saga, &key)
                .await
                .map_err(|error| failure(event, error))?;
        }
        stopped::record(&**store, saga, &key, position)
            .await
            .map_err(|error| failure(event, error))?;
        store
            .delete_saga_state(saga, &key)
            .await
            .map_err(|error| failure(event, error))?;
        tracing::debug!(name: "evoq.saga.stop", stage = "stop", saga, instance = %key, "evoq.saga.stop");
    } else {
        save(dispatcher, saga, &key, encode(&instance, event)?, event).await?;
    }
    Ok(())
}

/// Says that `event` of instance `key`, which does not exist, is ignored: a stop or a timeout
/// of no instance, or an event of an instance that stopped after it.
fn ignored(saga: &str, key: &str, event: &EventMeta) {
    tracing::debug!(
        name: "evoq.saga.stop",
        stage = "ignored",
        saga,
        instance = key,
        event_type = event.event_type(),
        "evoq.saga.stop",
    );
}

/// The timeouts `scheduled` by the method that handled `event`, as the instance and the store
/// keep them; a timeout whose event the saga does not take is a failure (it would never be
/// handled).
/// Saves `instance` with the timeouts `scheduled` in its pending list, then schedules them in
/// the store (in that order: every timeout stored for an instance is in its list, so its stop
/// cancels them all). An instance that stops keeps and schedules none.
async fn save_scheduling<S: Saga>(
    dispatcher: &Arc<Dispatcher>,
    wake: &Notify,
    of: Of<'_>,
    instance: &mut Instance<S>,
    scheduled: Vec<(PendingTimeout, Timeout)>,
    event: &EventMeta,
) -> Result<(), HandlerFailure> {
    if !instance.stopping {
        for (pending, _) in &scheduled {
            if !instance.timeouts.iter().any(|held| held.id == pending.id) {
                instance.timeouts.push(pending.clone());
            }
        }
    }
    save(dispatcher, of.saga, of.key, encode(instance, event)?, event).await?;
    if !instance.stopping && !scheduled.is_empty() {
        for (_, timeout) in scheduled {
            dispatcher
                .store()
                .schedule_timeout(timeout)
                .await
                .map_err(|error| failure(event, error))?;
        }
        wake.notify_one();
    }
    Ok(())
}

fn prepare_timeouts<S: Saga>(
    scheduled: &[ScheduledTimeout],
    event: &EventMeta,
    saga: &str,
    key: &str,
    base: &str,
) -> Result<Vec<(PendingTimeout, Timeout)>, HandlerFailure> {
    let namespace = format!("{base}/timeout");
    let correlation_id = event
        .metadata()
        .correlation_id
        .unwrap_or_else(|| event.event_id());
    let mut prepared = Vec::with_capacity(scheduled.len());
    for (index, timeout) in scheduled.iter().enumerate() {
        let event_type = timeout.event.name();
        if !S::EVENT_TYPES.contains(&event_type) {
            return Err(failure(
                event,
                format!(
                    "saga `{saga}` scheduled a timeout with the event `{event_type}`, which none of its methods takes: add a `#[continues(by = field)]` (or `#[stops]`) method for `{event_type}`, or schedule an event it takes"
                ),
            ));
        }
        let data = timeout
            .event
            .encode()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes));
        let data = data.map_err(|error| {
            failure(
                event,
                format!("the timeout event `{event_type}` does not serialize: {error}"),
            )
        })?;
        let id = derived_id(&namespace, event.event_id(), index);
        let due_at = timeout.due.at(event.recorded_at());
        let mut metadata = Metadata {
            command_id: Some(id),
            causation_id: Some(event.event_id()),
            correlation_id: Some(correlation_id),
            ..Metadata::default()
        };
        metadata
            .user
            .as_map_mut()
            .insert(TIMEOUT_ENTRY.to_owned(), saga.to_owned());
        let payload = Payload {
            stream: timer::stream_of(saga, key),
            event_id: id,
            event_type: event_type.to_owned(),
            schema_version: timeout.event.schema_version(),
            data,
            metadata,
        };
        let payload = serde_json::to_vec(&payload)
            .map_err(|error| failure(event, format!("the timeout does not serialize: {error}")))?;
        prepared.push((
            PendingTimeout {
                id,
                event_type: event_type.to_owned(),
                due_at,
            },
            Timeout {
                id,
                saga: saga.to_owned(),
                instance: key.to_owned(),
                due_at,
                payload,
            },
        ));
    }
    Ok(prepared)
}

/// `instance`, as saved.
fn encode<S: Saga>(instance: &Instance<S>, event: &EventMeta) -> Result<Vec<u8>, HandlerFailure> {
    serde_json::to_vec(instance)
        .map_err(|error| failure(event, format!("the state does not serialize: {error}")))
}

/// Saves `bytes` (an encoded instance) as the state of instance `key` of `saga`.
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

fn undecodable(event: &EventMeta, key: &str, error: serde_json::Error) -> HandlerFailure {
    failure(
        event,
        format!("the state of instance `{key}` does not decode: {error}"),
    )
}

fn nondeterministic(event: &EventMeta, key: &str, difference: &str) -> HandlerFailure {
    failure(
        event,
        format!(
            "on the re-delivery of this event to instance `{key}`, the saga method did not return the commands of its first run ({difference}): a saga method must decide from its state and its event alone (no clock, no randomness, no outside state); nothing was dispatched again"
        ),
    )
}

/// The instance being handled: the name its saga runs under, and its id.
#[derive(Clone, Copy)]
struct Of<'a> {
    saga: &'a str,
    key: &'a str,
}

/// The commands of one method call, or of one compensation, with their ids.
struct Batch<'a> {
    commands: Commands,
    ids: &'a [Uuid],
    /// The failed command a compensation undoes; `None` for a method's commands.
    compensates: Option<Uuid>,
}

/// Dispatches the commands of the outbox that are pending, in order, every one even after a
/// failure, and saves the instance after each; returns the failures (those of an earlier run
/// included), in order, for the compensation. The method's commands that succeed go to the
/// instance's history (a compensation's do not): a command the outbox holds as done goes to
/// it again (it was rewound); one it holds as failed is not dispatched again. A runtime
/// that is stopping ends it: the event is delivered again after a restart, and nothing is
/// compensated for a shutdown.
async fn dispatch_outbox<S: Saga>(
    dispatcher: &Arc<Dispatcher>,
    settings: &CommandSettings,
    instance: &mut Instance<S>,
    of: Of<'_>,
    batch: Batch<'_>,
    dispatch_ids: impl Fn(Uuid) -> DispatchIds,
    event: &EventMeta,
) -> Result<Vec<FailedCommand>, HandlerFailure> {
    let Of { saga, key } = of;
    let Batch {
        commands,
        ids,
        compensates,
    } = batch;
    let history = compensates.is_none();
    let mut failures = Vec::new();
    for (command, &command_id) in commands.items.into_iter().zip(ids) {
        let name = command.name();
        let aggregate_id = command.aggregate_id();
        let failed = |error: String| FailedCommand {
            command: name,
            command_id,
            aggregate_id: aggregate_id.clone(),
            error,
            instance: String::new(),
            correlation_id: Uuid::nil(),
            executed: Vec::new(),
        };
        let executed = ExecutedCommand {
            name: name.to_owned(),
            command_id,
            aggregate_id: aggregate_id.clone(),
        };
        match instance.status(command_id) {
            Status::Done => {
                if history {
                    instance.record_executed(executed);
                }
                continue;
            }
            Status::Failed { error } => {
                failures.push(failed(error));
                continue;
            }
            Status::Pending => {}
        }
        let ids = dispatch_ids(command_id);
        match command.dispatch(dispatcher, settings, ids).await {
            Ok(()) => {
                tracing::debug!(
                    name: "evoq.saga.command",
                    stage = "stop",
                    saga,
                    instance = key,
                    command = name,
                    command_id = %command_id,
                    "evoq.saga.command",
                );
                instance.set_status(command_id, Status::Done);
                if history {
                    instance.record_executed(executed);
                }
            }
            Err(error @ Error::Stopped { .. }) => return Err(failure(event, error)),
            Err(error) => {
                tracing::warn!(
                    name: "evoq.saga.command",
                    stage = "exception",
                    saga,
                    instance = key,
                    command = name,
                    command_id = %command_id,
                    error = %error,
                    "evoq.saga.command",
                );
                let error = failure_text(&error);
                instance.set_status(
                    command_id,
                    Status::Failed {
                        error: error.clone(),
                    },
                );
                failures.push(failed(error));
            }
        }
        save(dispatcher, saga, key, encode(instance, event)?, event).await?;
    }
    Ok(failures)
}

/// What a compensation reads as the failure of its command ([`FailedCommand::error`]): for a
/// rejection, the domain error's own words (as a test writes them); for any other error, its
/// whole text.
fn failure_text(error: &Error) -> String {
    match error {
        Error::Rejected { source, .. } => crate::util::panic::displayed(source),
        other => other.to_string(),
    }
}
