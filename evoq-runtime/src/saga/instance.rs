//! What the store keeps of one saga instance: its state, the history of its successful
//! commands, the outbox of the event it handled last, and its pending timeouts.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::{Commands, ExecutedCommand};
use super::definition::Saga;
use crate::error::Error;
use crate::store::EventStore;
use crate::util::panic::{Serde, serde_guarded};

/// One instance, as saved (JSON). Every field but `state` has a default, so that states
/// saved by an earlier version still load.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(super) struct Instance<S: Saga> {
    pub(super) state: S,
    /// The commands dispatched successfully and not marked undone by a compensation, oldest
    /// first.
    #[serde(default)]
    pub(super) executed: Vec<ExecutedCommand>,
    /// The last event the instance handled: its position and what the instance was before
    /// it, so that a re-delivery runs the method on the same state again (and finds the same
    /// commands, with the same ids).
    #[serde(default)]
    pub(super) last: Option<LastEvent>,
    /// The commands of the last event and of its compensations, with their outcomes: saved
    /// before the first is dispatched, and after each one completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) outbox: Vec<OutboxEntry>,
    /// The last event stopped the instance: it is removed once its outbox is done.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(super) stopping: bool,
    /// The timeouts scheduled and not yet handled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) timeouts: Vec<PendingTimeout>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The instance before the last event it handled.
#[derive(Serialize, Deserialize)]
pub(super) struct LastEvent {
    /// The event's global position.
    pub(super) position: u64,
    /// The state before it.
    pub(super) before: serde_json::Value,
    /// The executed commands before it.
    #[serde(default)]
    pub(super) executed: Vec<ExecutedCommand>,
    /// The pending timeouts before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) timeouts: Vec<PendingTimeout>,
}

/// One command of the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct OutboxEntry {
    pub(super) command_id: Uuid,
    /// The command's name.
    pub(super) command: String,
    pub(super) aggregate_id: String,
    /// The failed command this one compensates; `None` for the method's own commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) compensates: Option<Uuid>,
    pub(super) status: Status,
}

/// Where a command of the outbox is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(super) enum Status {
    /// Not dispatched yet, or its dispatch did not complete.
    Pending,
    /// It succeeded.
    Done,
    /// It failed with this error (and is not dispatched again).
    Failed { error: String },
}

/// A timeout the instance scheduled and has not handled yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PendingTimeout {
    pub(super) id: Uuid,
    /// The event it appends.
    pub(super) event_type: String,
    pub(super) due_at: SystemTime,
}

impl<S: Saga> Instance<S> {
    /// A new instance with `state`.
    pub(super) fn new(state: S) -> Self {
        Instance {
            state,
            executed: Vec::new(),
            last: None,
            outbox: Vec::new(),
            stopping: false,
            timeouts: Vec::new(),
        }
    }

    /// Decodes a saved instance; the error says why it does not (the saga's `Deserialize`
    /// panicking included: see [`serde_guarded`]).
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_guarded::<S, _>(Serde::Deserialize, || serde_json::from_slice(bytes))
    }

    /// Puts the instance back as it was before its last event (its re-delivery), keeping the
    /// outbox: what was done is not done again.
    pub(super) fn rewind(&mut self) -> Result<(), serde_json::Error> {
        if let Some(last) = &self.last {
            self.state = serde_guarded::<S, _>(Serde::Deserialize, || {
                serde_json::from_value(last.before.clone())
            })?;
            self.executed = last.executed.clone();
            self.timeouts = last.timeouts.clone();
        }
        Ok(())
    }

    /// Starts the handling of a new event: remembers the instance as it is, empties the
    /// outbox.
    pub(super) fn begin(&mut self, position: u64) -> Result<(), serde_json::Error> {
        self.last = Some(LastEvent {
            position,
            before: serde_json::to_value(&self.state)?,
            executed: self.executed.clone(),
            timeouts: self.timeouts.clone(),
        });
        Ok(())
    }

    /// Removes the pending timeout `id`; whether the instance held it.
    pub(super) fn take_timeout(&mut self, id: Uuid) -> bool {
        let before = self.timeouts.len();
        self.timeouts.retain(|timeout| timeout.id != id);
        self.timeouts.len() != before
    }

    /// Adds `commands` (with their `ids`, compensating `compensates`) to the outbox, or checks
    /// them against the entries already there (a re-delivery): the same names and aggregates,
    /// in the same number. The error says what differs.
    pub(super) fn record_outbox(
        &mut self,
        commands: &Commands,
        ids: &[Uuid],
        compensates: Option<Uuid>,
    ) -> Result<(), String> {
        let recorded = self
            .outbox
            .iter()
            .filter(|entry| entry.compensates == compensates)
            .count();
        if recorded != 0 && recorded != commands.len() {
            return Err(format!(
                "it returned {} command(s), where the first run returned {recorded}",
                commands.len()
            ));
        }
        for (item, &command_id) in commands.items.iter().zip(ids) {
            let (command, aggregate_id) = (item.name(), item.aggregate_id());
            match self
                .outbox
                .iter()
                .find(|entry| entry.command_id == command_id)
            {
                Some(entry) if entry.command == command && entry.aggregate_id == aggregate_id => {}
                Some(entry) => {
                    return Err(format!(
                        "it returned `{command}` for `{aggregate_id}` where the first run returned `{}` for `{}`",
                        entry.command, entry.aggregate_id
                    ));
                }
                None => self.outbox.push(OutboxEntry {
                    command_id,
                    command: command.to_owned(),
                    aggregate_id,
                    compensates,
                    status: Status::Pending,
                }),
            }
        }
        Ok(())
    }

    /// The status of the outbox's command `id`.
    pub(super) fn status(&self, id: Uuid) -> Status {
        self.outbox
            .iter()
            .find(|entry| entry.command_id == id)
            .map_or(Status::Pending, |entry| entry.status.clone())
    }

    /// Sets the status of the outbox's command `id`.
    pub(super) fn set_status(&mut self, id: Uuid, status: Status) {
        if let Some(entry) = self.outbox.iter_mut().find(|entry| entry.command_id == id) {
            entry.status = status;
        }
    }

    /// Appends `done` to the history (oldest first) unless it holds it already.
    pub(super) fn record_executed(&mut self, done: ExecutedCommand) {
        if !self
            .executed
            .iter()
            .any(|step| step.command_id == done.command_id)
        {
            self.executed.push(done);
        }
    }
}

/// The state of instance `instance` of the saga `S`, running under the name `saga`, in
/// `store`: `None` when it has none (never started, or stopped); [`Error::SagaState`] when the
/// saved state does not decode.
pub(crate) async fn load_state<S: Saga>(
    store: &dyn EventStore,
    saga: &str,
    instance: &str,
) -> Result<Option<S>, Error> {
    let Some(bytes) = store.load_saga_state(saga, instance).await? else {
        return Ok(None);
    };
    let saved = Instance::<S>::decode(&bytes).map_err(|error| Error::SagaState {
        saga: S::NAME,
        instance: instance.to_owned(),
        reason: error.to_string(),
    })?;
    Ok(Some(saved.state))
}
