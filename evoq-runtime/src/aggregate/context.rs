//! What every command carries through a dispatch and what a dispatch returns: its ids and
//! metadata ([`CommandContext`]), its options ([`DispatchOptions`]) and its result
//! ([`Dispatched`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use uuid::Uuid;

use super::definition::Aggregate;
use crate::envelope::Metadata;

/// The ids, idempotency key and user entries of a command; the ids and entries go into the
/// metadata of every event it produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandContext {
    /// The command's id (a fresh UUID v7 unless the caller sets one).
    pub command_id: Uuid,
    /// The business conversation the command belongs to (inherited, or a fresh UUID v7).
    pub correlation_id: Uuid,
    /// What caused the command (an event id, another command id), if known.
    pub causation_id: Option<Uuid>,
    /// The key that deduplicates the command (default: none, then a caller-supplied command id
    /// is the key). See [`idempotency`](crate::dispatch::idempotency).
    pub idempotency_key: Option<String>,
    /// The caller's own entries, copied into every event's metadata.
    pub metadata: BTreeMap<String, String>,
}

impl CommandContext {
    /// A context with fresh ids and no user entries.
    pub fn new() -> Self {
        let command_id = crate::util::ids::new_v7();
        CommandContext {
            command_id,
            correlation_id: command_id,
            causation_id: None,
            idempotency_key: None,
            metadata: BTreeMap::new(),
        }
    }

    /// The metadata of every event the command produces: the command id, the command id again
    /// as causation, the correlation id and the user entries.
    pub fn event_metadata(&self) -> Metadata {
        Metadata {
            command_id: Some(self.command_id),
            causation_id: Some(self.command_id),
            correlation_id: Some(self.correlation_id),
            user: self.metadata.clone().into(),
        }
    }
}

impl Default for CommandContext {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-dispatch options; defaults come from the runtime's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchOptions {
    /// How long the caller waits for the command to complete.
    pub timeout: Duration,
    /// The version the stream must be at; the dispatch fails with a conflict otherwise (and is
    /// not retried).
    pub expected_version: Option<u64>,
    /// How many times a command is re-run after a version conflict.
    pub retry_limit: u32,
}

/// The result of a successful dispatch.
pub struct Dispatched<A: Aggregate> {
    /// The stream's version after the command (unchanged when it produced no events).
    pub version: u64,
    /// The events the command produced, as the aggregate's event enum.
    pub events: Vec<A::Event>,
    /// The global position of the last event produced: a consistency token to wait on.
    /// `None` when the command produced no events.
    pub position: Option<u64>,
    /// The id of the command.
    pub command_id: Uuid,
}

impl<A: Aggregate> Clone for Dispatched<A> {
    fn clone(&self) -> Self {
        Dispatched {
            version: self.version,
            events: self.events.clone(),
            position: self.position,
            command_id: self.command_id,
        }
    }
}

impl<A: Aggregate> fmt::Debug for Dispatched<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatched")
            .field("aggregate", &A::NAME)
            .field("version", &self.version)
            .field("events", &self.events)
            .field("position", &self.position)
            .field("command_id", &self.command_id)
            .finish()
    }
}
