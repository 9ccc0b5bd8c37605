//! The first result of a command that already ran, rebuilt from its command-log entry: the
//! answer to a resent command id or idempotency key, whichever runtime ran it first.

use super::context::Dispatched;
use super::definition::Aggregate;
use super::replay::decode;
use crate::error::{Decider, Error};
use std::time::SystemTime;

use super::context::CommandContext;
use crate::store::{CommandLookup, CommandRecord, Direction, EventStore, StoreError};

/// The result `record` stands for, as a dispatch of `command` to aggregate `aggregate_id` of
/// `A` (an aggregate or a decision: `decider`) returns it: its events read back from the stream
/// (through their upcasters), the version and position of the last one, and the first run's
/// command id.
///
/// Fails with [`Error::IdempotencyKeyReused`] when the entry is of another command or another
/// aggregate (the key was reused), and with an integrity error when the stream no longer holds
/// the entry's events.
pub(crate) async fn first_result<A: Aggregate>(
    store: &dyn EventStore,
    record: &CommandRecord,
    command: &'static str,
    aggregate_id: &str,
    decider: Decider,
) -> Result<Dispatched<A>, Error> {
    if record.command != command
        || record.aggregate != A::NAME
        || record.aggregate_id != aggregate_id
    {
        return Err(Error::IdempotencyKeyReused {
            key: match &record.idempotency_key {
                Some(key) => key.clone(),
                None => format!("command id {}", record.command_id),
            },
            first_command: record.command.clone(),
            first_aggregate: record.aggregate.clone(),
            first_aggregate_id: record.aggregate_id.clone(),
            command,
            aggregate: A::NAME,
            aggregate_id: aggregate_id.to_owned(),
        });
    }
    let count = usize::try_from(record.event_count).unwrap_or(usize::MAX);
    let stored = if count == 0 {
        Vec::new()
    } else {
        store
            .read_stream(
                &record.stream_id,
                record.first_version(),
                Direction::Forward,
                count,
            )
            .await?
    };
    let whole = stored.len() == count
        && stored
            .iter()
            .zip(record.first_version()..)
            .all(|(event, version)| event.stream_version == version);
    if !whole {
        let error: Error = StoreError::Integrity {
            location: format!("stream `{}`", record.stream_id),
            reason: format!(
                "the command log says command {} appended versions {} to {}, but the stream holds {} of them; the log or the stream was changed outside evoq",
                record.command_id,
                record.first_version(),
                record.version,
                stored.len()
            ),
        }
        .into();
        error.alarm("lookup", &record.stream_id);
        return Err(error);
    }
    let events = stored
        .iter()
        .map(|recorded| decode::<A>(recorded, decider))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Dispatched {
        version: record.version,
        events,
        position: (record.event_count > 0).then_some(record.last_position),
        // A command that appended nothing: what the store holds now is at least what it saw.
        token: if record.event_count > 0 {
            record.last_position
        } else {
            *store.head().borrow()
        },
        command_id: record.command_id,
    })
}

/// The first result of the command of `context` when the command log holds an entry of it
/// recorded at or after `since` (another node ran it since it was looked up), else `None`.
pub(crate) async fn ran_before<A: Aggregate>(
    store: &dyn EventStore,
    context: &CommandContext,
    since: SystemTime,
    command: &'static str,
    aggregate_id: &str,
    decider: Decider,
) -> Result<Option<Dispatched<A>>, Error> {
    let lookup = match &context.idempotency_key {
        Some(key) => CommandLookup::Key(key),
        None => CommandLookup::Id(context.command_id),
    };
    match store.find_command(lookup, since).await? {
        Some(record) => first_result::<A>(store, &record, command, aggregate_id, decider)
            .await
            .map(Some),
        None => Ok(None),
    }
}
