//! The in-memory store's command log.
//!
//! Two kinds of entries, to keep the common case cheap:
//! - a **checked** command (one that may be a resend: it has a key, or its caller chose its id)
//!   gets a whole entry, kept in the order it was recorded;
//! - an **unchecked** command (a fresh id the runtime generated) that appended events gets only
//!   a slot in a sharded index by id, written without any global lock: the position of its last
//!   event, its event count, and the static names of its command and aggregate. The rest of its
//!   entry (stream, version, commit time) is read off its last event in the store's log when it
//!   is looked up, and the sweep finds it by walking the log (its last event's metadata carries
//!   its id). An unchecked command that does not fit (names built at run time, events without
//!   its id) is kept whole, as a checked one.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use dashmap::DashMap;
use uuid::Uuid;

use super::log::{Log, StreamHasher};
use crate::store::command_log::{aggregate_id_in, last_position};
use crate::store::{Appended, CommandLookup, CommandRecord, NewCommand};

/// The command log. See the [module docs](self).
///
/// Lock order: the store's events lock, then `checked`, then a shard of `by_id`.
#[derive(Default)]
pub(super) struct CommandLog {
    /// The checked entries, and the sweeps' progress.
    checked: Mutex<Checked>,
    /// Every entry by command id.
    by_id: Ids,
}

/// The checked entries in the order they were recorded, and where the sweeps got to.
#[derive(Default)]
pub(super) struct Checked {
    /// `entries[i]` has sequence number `swept + i`; `None` once removed ahead of a sweep (an
    /// expired entry replaced by a new run of its command).
    entries: VecDeque<Option<Logged>>,
    /// How many entries the sweeps popped off the front.
    swept: u64,
    /// The checked entries with a key, by key.
    by_key: HashMap<Box<str>, u64, StreamHasher>,
    /// The position of the last event the sweeps have looked at for unchecked entries.
    swept_position: u64,
}

/// Where the entry of one command id is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A checked entry: its sequence number.
    Checked(u64),
    /// An unchecked entry: its last event's position (the in-memory store holds at most
    /// `u32::MAX` events), its event count, and the static names of its command and aggregate.
    Unchecked {
        last_position: u32,
        count: u32,
        command: &'static str,
        aggregate: &'static str,
    },
}

/// A checked entry, compact: the aggregate id is the end of the stream id, the stream id is
/// shared with the stream's events.
pub(super) struct Logged {
    command_id: Uuid,
    key: Option<Box<str>>,
    command: Cow<'static, str>,
    aggregate: Cow<'static, str>,
    stream: Arc<str>,
    version: u64,
    count: u64,
    first_position: u64,
    recorded_at: SystemTime,
}

impl Logged {
    /// The entry `command` leaves once appended to `stream`.
    pub(super) fn new(
        command: NewCommand,
        stream: Arc<str>,
        appended: &Appended,
        count: u64,
        recorded_at: SystemTime,
    ) -> Self {
        Logged {
            command_id: command.command_id,
            key: command.idempotency_key.map(String::into_boxed_str),
            command: command.command,
            aggregate: command.aggregate,
            stream,
            version: appended.version,
            count,
            first_position: appended.first_position,
            recorded_at,
        }
    }

    fn record(&self) -> CommandRecord {
        CommandRecord {
            command_id: self.command_id,
            idempotency_key: self.key.as_deref().map(str::to_owned),
            command: self.command.to_string(),
            aggregate: self.aggregate.to_string(),
            aggregate_id: aggregate_id_in(&self.aggregate, &self.stream).to_owned(),
            stream_id: self.stream.to_string(),
            version: self.version,
            event_count: self.count,
            first_position: self.first_position,
            last_position: last_position(self.first_position, self.count),
            recorded_at: self.recorded_at,
        }
    }
}

impl CommandLog {
    /// The checked entries, locked: a checked append holds them from its check to its entry.
    pub(super) fn checked(&self) -> MutexGuard<'_, Checked> {
        self.checked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an unchecked command that appended `count` events (at least one) to `stream`,
    /// as `appended` says; `last_event_carries_id` tells whether its last event's metadata holds
    /// its command id (the runtime's events always do), which the sweep reads. Called without
    /// the events' lock.
    pub(super) fn record_unchecked(
        &self,
        command: NewCommand,
        stream: Arc<str>,
        appended: &Appended,
        count: u64,
        recorded_at: SystemTime,
        last_event_carries_id: bool,
    ) {
        let compact = match (&command.command, &command.aggregate, last_event_carries_id) {
            (Cow::Borrowed(command), Cow::Borrowed(aggregate), true) => {
                u32::try_from(appended.last_position)
                    .ok()
                    .zip(u32::try_from(count).ok())
                    .map(|(last_position, count)| Slot::Unchecked {
                        last_position,
                        count,
                        command,
                        aggregate,
                    })
            }
            _ => None,
        };
        match compact {
            Some(slot) => {
                self.by_id.insert(command.command_id, slot);
            }
            // Anything else is kept whole, as a checked entry is.
            None => self.checked().push(
                &self.by_id,
                Logged::new(command, stream, appended, count, recorded_at),
            ),
        }
    }

    /// The entry `lookup` finds, recorded at or after `since`.
    pub(super) fn find(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
        log: &Log,
    ) -> Option<CommandRecord> {
        self.checked().find(&self.by_id, lookup, since, log)
    }

    /// Removes at most `limit` entries recorded before `before`: checked ones oldest first,
    /// then unchecked ones in the order of their events.
    pub(super) fn sweep(&self, before: SystemTime, limit: usize, log: &Log) -> usize {
        self.checked().sweep(&self.by_id, before, limit, log)
    }
}

impl Checked {
    fn logged(&self, sequence: u64) -> Option<&Logged> {
        let index = usize::try_from(sequence.checked_sub(self.swept)?).ok()?;
        self.entries.get(index)?.as_ref()
    }

    fn slot(&self, by_id: &Ids, lookup: CommandLookup<'_>) -> Option<Slot> {
        match lookup {
            CommandLookup::Id(id) => by_id.get(&id).map(|slot| *slot),
            CommandLookup::Key(key) => self.by_key.get(key).copied().map(Slot::Checked),
        }
    }

    /// The entry of `slot` (the id `id` of an unchecked one), read off `log` if need be.
    fn record(&self, id: Uuid, slot: Slot, log: &Log) -> Option<CommandRecord> {
        match slot {
            Slot::Checked(sequence) => self.logged(sequence).map(Logged::record),
            Slot::Unchecked {
                last_position,
                count,
                command,
                aggregate,
            } => {
                let last_position = u64::from(last_position);
                let event = log.at(last_position)?;
                let count = u64::from(count);
                let stream = event.stream_id();
                Some(CommandRecord {
                    command_id: id,
                    idempotency_key: None,
                    command: command.to_owned(),
                    aggregate: aggregate.to_owned(),
                    aggregate_id: aggregate_id_in(aggregate, stream).to_owned(),
                    stream_id: stream.to_owned(),
                    version: event.stream_version,
                    event_count: count,
                    first_position: last_position + 1 - count,
                    last_position,
                    recorded_at: event.recorded_at,
                })
            }
        }
    }

    fn find(
        &self,
        by_id: &Ids,
        lookup: CommandLookup<'_>,
        since: SystemTime,
        log: &Log,
    ) -> Option<CommandRecord> {
        let id = match lookup {
            CommandLookup::Id(id) => id,
            CommandLookup::Key(_) => Uuid::nil(),
        };
        let record = self.record(id, self.slot(by_id, lookup)?, log)?;
        (record.recorded_at >= since).then_some(record)
    }

    /// The entry a checked append of `command` finds; an expired one is removed.
    pub(super) fn duplicate(
        &mut self,
        log_ids: &CommandLog,
        command: &NewCommand,
        log: &Log,
    ) -> Option<CommandRecord> {
        let by_id = &log_ids.by_id;
        let since = command.deduplicate_since?;
        let slot = self.slot(by_id, command.lookup())?;
        let record = self.record(command.command_id, slot, log)?;
        if record.recorded_at >= since {
            return Some(record);
        }
        match slot {
            Slot::Checked(sequence) => self.remove(by_id, sequence),
            Slot::Unchecked { .. } => {
                by_id.remove(&command.command_id);
            }
        }
        None
    }

    /// Records a checked command (or an unchecked one kept whole).
    fn push(&mut self, by_id: &Ids, logged: Logged) {
        let sequence = self.swept + self.entries.len() as u64;
        by_id.insert(logged.command_id, Slot::Checked(sequence));
        if let Some(key) = &logged.key {
            self.by_key.insert(key.clone(), sequence);
        }
        self.entries.push_back(Some(logged));
    }

    /// Records a checked command, under the lock the caller holds.
    pub(super) fn push_checked(&mut self, log_ids: &CommandLog, logged: Logged) {
        self.push(&log_ids.by_id, logged);
    }

    /// Removes checked entry `sequence` and its index entries (those that still point at it).
    fn remove(&mut self, by_id: &Ids, sequence: u64) {
        let Some(index) = sequence
            .checked_sub(self.swept)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let Some(logged) = self.entries.get_mut(index).and_then(Option::take) else {
            return;
        };
        by_id.remove_if(&logged.command_id, |_, slot| {
            *slot == Slot::Checked(sequence)
        });
        if let Some(key) = &logged.key
            && self.by_key.get(key) == Some(&sequence)
        {
            self.by_key.remove(key);
        }
    }

    fn sweep(&mut self, by_id: &Ids, before: SystemTime, limit: usize, log: &Log) -> usize {
        let mut removed = 0;
        while removed < limit {
            match self.entries.front() {
                Some(Some(logged)) if logged.recorded_at < before => {
                    self.remove(by_id, self.swept);
                    removed += 1;
                }
                // Removed earlier (already counted then): just drop the slot.
                Some(None) => {}
                _ => break,
            }
            self.entries.pop_front();
            self.swept += 1;
        }
        // Unchecked entries: their last event carries their id.
        while removed < limit {
            let Some(event) = log.at(self.swept_position + 1) else {
                break;
            };
            if event.recorded_at >= before {
                break;
            }
            self.swept_position += 1;
            let Some(id) = event.metadata.command_id else {
                continue;
            };
            let position = event.global_position;
            let gone = by_id.remove_if(&id, |_, slot| {
                matches!(slot, Slot::Unchecked { last_position, .. } if u64::from(*last_position) == position)
            });
            if gone.is_some() {
                removed += 1;
            }
        }
        removed
    }
}

/// The index by command id: sharded, so that the unchecked entries of concurrent appends
/// rarely wait for each other.
type Ids = DashMap<Uuid, Slot, StreamHasher>;
