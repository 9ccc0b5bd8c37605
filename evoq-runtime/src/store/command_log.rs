//! The command log: the identity of every successful command, kept beside the events.
//!
//! An append made with [`EventStore::append_command`](super::EventStore::append_command)
//! writes one [`CommandRecord`] in the same transaction as the command's events: either both
//! are stored or neither. The runtime looks a resent command up by its id or its idempotency
//! key ([`CommandLookup`]) and returns the first result instead of running it again, across
//! restarts and across the nodes that share the store. Entries are kept for a retention period
//! (the runtime's `command_log_retention`) and swept in bounded batches
//! ([`EventStore::sweep_commands`](super::EventStore::sweep_commands)).

use std::borrow::Cow;
use std::time::SystemTime;

use uuid::Uuid;

/// How a command is looked up in the log.
///
/// Idempotency keys and command ids are two separate sets: a key never matches a command id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandLookup<'a> {
    /// The entries with this command id.
    Id(Uuid),
    /// The entry with this idempotency key.
    Key(&'a str),
}

impl std::fmt::Display for CommandLookup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandLookup::Id(id) => write!(f, "command id {id}"),
            CommandLookup::Key(key) => write!(f, "idempotency key `{key}`"),
        }
    }
}

/// A command to record with its events, given to
/// [`EventStore::append_command`](super::EventStore::append_command).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCommand {
    /// The command's id.
    pub command_id: Uuid,
    /// The command's idempotency key, if it has one.
    pub idempotency_key: Option<String>,
    /// The command type's name.
    pub command: Cow<'static, str>,
    /// The aggregate type's name. The aggregate id is the rest of the stream id (see
    /// [`aggregate_id`](Self::aggregate_id)).
    pub aggregate: Cow<'static, str>,
    /// Whether the append first checks the log for an earlier run of this command, and from
    /// when on an entry counts.
    ///
    /// `Some(since)`: an entry with the same [lookup](Self::lookup) recorded at or after `since`
    /// makes the append a duplicate (nothing is written, the append fails with
    /// [`StoreError::DuplicateCommand`](super::StoreError::DuplicateCommand) carrying that
    /// entry); such entries recorded before `since` have expired and are removed in the same
    /// transaction. The check comes before the expected version's. `None`: the command id is
    /// fresh (the runtime generated it and nobody else can hold it), so there is nothing to check;
    /// an append with no events and no check records nothing either.
    pub deduplicate_since: Option<SystemTime>,
}

impl NewCommand {
    /// What deduplicates this command: its idempotency key when it has one, else its id.
    pub fn lookup(&self) -> CommandLookup<'_> {
        match &self.idempotency_key {
            Some(key) => CommandLookup::Key(key),
            None => CommandLookup::Id(self.command_id),
        }
    }

    /// The aggregate id of this command appended to `stream`: what follows `<aggregate>-` in
    /// the stream id (aggregate names never contain `-`), or the whole stream id when it does
    /// not start so.
    pub fn aggregate_id<'s>(&self, stream: &'s str) -> &'s str {
        aggregate_id_in(&self.aggregate, stream)
    }
}

/// One entry of the command log: a command that succeeded, and where its events are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    /// The command's id.
    pub command_id: Uuid,
    /// The command's idempotency key, if it had one.
    pub idempotency_key: Option<String>,
    /// The command type's name.
    pub command: String,
    /// The aggregate type's name.
    pub aggregate: String,
    /// The aggregate id.
    pub aggregate_id: String,
    /// The stream its events went to.
    pub stream_id: String,
    /// The stream's version after the command (the version of its last event; the version it
    /// was decided at when it appended nothing).
    pub version: u64,
    /// How many events it appended (0 for a command that appended nothing).
    pub event_count: u64,
    /// The global position of its first event (0 when it appended nothing).
    pub first_position: u64,
    /// The global position of its last event (0 when it appended nothing).
    pub last_position: u64,
    /// When the store committed it.
    pub recorded_at: SystemTime,
}

impl CommandRecord {
    /// The stream version of its first event (`version + 1` when it appended nothing).
    pub fn first_version(&self) -> u64 {
        self.version + 1 - self.event_count
    }
}

/// The aggregate id in `stream`, a stream of aggregate type `aggregate`: what follows
/// `<aggregate>-` (aggregate names never contain `-`), or the whole stream id when it does not
/// start so.
pub(crate) fn aggregate_id_in<'s>(aggregate: &str, stream: &'s str) -> &'s str {
    stream
        .strip_prefix(aggregate)
        .and_then(|rest| rest.strip_prefix('-'))
        .unwrap_or(stream)
}

/// The position of the last of `count` events from `first` (0 when there are none).
pub(crate) fn last_position(first: u64, count: u64) -> u64 {
    if count == 0 { 0 } else { first + count - 1 }
}
