//! The [`EventStore`] trait every backend implements, and what its operations take and return.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use super::command_log::{CommandLookup, CommandRecord, NewCommand};
use super::dead_letter::DeadLetter;
use super::error::StoreError;
use super::expected_version::ExpectedVersion;
use super::lease::Lease;
use super::query::{AppendCondition, EventQuery};
use super::request::HandlerRequest;
use super::timeout::Timeout;
use super::undecodable::{StoredRow, UndecodableRow};
use crate::envelope::{NewEvent, RecordedEvent};

/// The result of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The stream's version after the append (the version of its last event).
    pub version: u64,
    /// The global position of the first appended event (0 when nothing was appended).
    pub first_position: u64,
    /// The global position of the last appended event (0 when nothing was appended).
    pub last_position: u64,
}

/// The outcome of [`EventStore::append_command_now`]:
/// the append made during the call, or the append handed back unwritten.
#[derive(Debug)]
pub enum AppendNow {
    /// The store made the append (or refused it) during the call: what
    /// [`append_command`](EventStore::append_command) would have returned.
    Made(Result<Appended, StoreError>),
    /// The store does not append without waiting (the default): nothing was written, and the
    /// events and the command are given back, for
    /// [`append_command`](EventStore::append_command).
    Later {
        /// The events, as they were given.
        events: Vec<NewEvent>,
        /// The command, as it was given.
        command: NewCommand,
    },
}

/// Which way to read a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first, from the given version upwards.
    Forward,
    /// Newest first, from the given version downwards.
    Backward,
}

/// Which event types a read of the global order returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventFilter {
    /// Every event.
    All,
    /// Only events whose type is one of these names.
    Types(Arc<[String]>),
}

impl EventFilter {
    /// A filter on these event type names.
    pub fn types<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EventFilter::Types(names.into_iter().map(Into::into).collect())
    }

    /// Whether an event of type `event_type` passes.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Types(names) => names.iter().any(|n| n == event_type),
        }
    }
}

/// One page of the global order.
#[derive(Clone, Debug, Default)]
pub struct AllPage {
    /// The matching events, in position order.
    pub events: Vec<Arc<RecordedEvent>>,
    /// The position the read scanned through: every matching event with a position in
    /// `(after, scanned_through]` is in `events` or in `undecodable`. A reader continues
    /// after it.
    pub scanned_through: u64,
    /// The matching rows of the range that could not be read back as events, in position
    /// order (a store that cannot hold such rows, like the in-memory one, never has any). A
    /// bad row fails nothing else: the events around it are in `events`, and a full page
    /// counts it as one of its `max_count` rows.
    pub undecodable: Vec<UndecodableRow>,
}

impl AllPage {
    /// The page's rows in position order: its events and the rows that do not decode, merged.
    pub fn into_rows(self) -> Vec<StoredRow> {
        let mut rows = Vec::with_capacity(self.events.len() + self.undecodable.len());
        let mut undecodable = self.undecodable.into_iter().peekable();
        for event in self.events {
            while let Some(row) =
                undecodable.next_if(|row| row.global_position < event.global_position)
            {
                rows.push(StoredRow::Undecodable(row));
            }
            rows.push(StoredRow::Event(event));
        }
        rows.extend(undecodable.map(StoredRow::Undecodable));
        rows
    }
}

/// A saved state of one aggregate instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream_id: String,
    /// The stream version the state includes (the snapshot's last event).
    pub version: u64,
    /// The serialized state.
    pub data: Vec<u8>,
    /// When it was taken.
    pub taken_at: SystemTime,
}

/// Where rebuilding a stream's state starts, as [`EventStore::read_from_snapshot`] reads it:
/// the stream's latest snapshot and the first events after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotAndEvents {
    /// The stream's latest snapshot, if it has one.
    pub snapshot: Option<Snapshot>,
    /// The stream's events after the snapshot's version (all of them from version 1 without a
    /// snapshot), oldest first, at most the `max_count` asked for: fewer means the stream ends
    /// there.
    pub events: Vec<Arc<RecordedEvent>>,
}

/// One stream, as [`EventStore::list_streams`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's id.
    pub stream_id: String,
    /// Its version: the version of its last event.
    pub version: u64,
    /// The global position of its last event.
    pub last_position: u64,
    /// When its last event was committed.
    pub last_recorded_at: SystemTime,
}

/// How many events a store holds, in how many streams, of which types, as
/// [`EventStore::count_events`] counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Every stored event.
    pub events: u64,
    /// The streams holding at least one event.
    pub streams: u64,
    /// The events of each type, by type name (byte order).
    pub by_type: Vec<(String, u64)>,
}

/// The error of an inspection call that a backend does not implement (the default of
/// [`EventStore::list_streams`] and the calls after it).
fn not_implemented(call: &str) -> StoreError {
    StoreError::Refused {
        backend: "store",
        location: "this event store".to_owned(),
        code: None,
        reason: format!(
            "`{call}`: the backend does not implement this call (the in-memory, SQLite and PostgreSQL stores do)"
        ),
        source: None,
    }
}

/// The event store contract. See the [module docs](crate::store) for the guarantees.
///
/// Backends implement it with [`async_trait`](https://docs.rs/async-trait), re-exported by the
/// facade, so that the runtime can hold any backend as `Arc<dyn EventStore>`.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if `expected` holds, atomically: all or nothing.
    ///
    /// The events take consecutive versions and consecutive global positions. When `expected`
    /// does not hold, nothing is appended and the error is
    /// [`StoreError::WrongExpectedVersion`] with the stream's actual version. An empty `events`
    /// checks `expected`, appends nothing (the stream is not created, the head does not move)
    /// and returns the stream's current version with positions 0.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError>;

    /// Appends `events` to `stream` like [`append`](Self::append), and records `command` in the
    /// command log in the same transaction: both are stored or neither.
    ///
    /// With [`NewCommand::deduplicate_since`] set, the log is checked first: when it holds an
    /// entry of the command's [lookup](NewCommand::lookup) recorded at or after that time, nothing
    /// is written and the error is [`StoreError::DuplicateCommand`] with that entry (whatever the
    /// expected version); entries of the lookup recorded before it are removed. Then `expected`
    /// is checked as by `append`. An empty `events` with the check set records the command (at
    /// the stream's current version, positions 0) without appending; with no check it records
    /// nothing.
    ///
    /// Two appends with one lookup never both succeed, on any number of nodes.
    async fn append_command(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> Result<Appended, StoreError>;

    /// [`append_command`](Self::append_command) made during the call, with no future: for a
    /// store that commits without waiting (the in-memory one), which would otherwise pay a
    /// boxed future for every command the runtime appends. The runtime asks it first, and
    /// awaits `append_command` with what it gives back.
    ///
    /// [`AppendNow::Made`] holds exactly what `append_command` with the same arguments returns,
    /// with the same effects; [`AppendNow::Later`] gives the events and the command back
    /// unwritten. The default gives them back: a store that waits for anything (a database, a
    /// blocking pool) keeps it, and must not block the caller's thread here instead. The
    /// conformance suite checks that a store which makes the append agrees with its
    /// `append_command`.
    fn append_command_now(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> AppendNow {
        let _ = (stream, expected);
        AppendNow::Later { events, command }
    }

    /// The command-log entry `lookup` finds among those recorded at or after `since` (the
    /// newest, when several commands share an id), if any.
    async fn find_command(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
    ) -> Result<Option<CommandRecord>, StoreError>;

    /// Removes at most `limit` command-log entries recorded before `before`, the oldest first as
    /// far as the backend keeps their order; returns how many it removed. The runtime calls it in a loop of bounded batches, so no
    /// call holds the store for long. Any `limit` is valid, `usize::MAX` included.
    async fn sweep_commands(&self, before: SystemTime, limit: usize) -> Result<usize, StoreError>;

    /// Whether several runtimes (nodes) may write this store at once. The runtime then
    /// confirms a decision that appends nothing (a rejection, a success without events) against
    /// the stream's version, since another node may have written it. `false` (the default) for
    /// a store that one process owns.
    fn is_shared(&self) -> bool {
        false
    }

    /// Reads at most `max_count` events of `stream` starting at version `from` (inclusive) in
    /// `direction`. Backward from `u64::MAX` reads from the newest event.
    ///
    /// Forward from 0 reads from the first event; forward from past the end, backward from 0,
    /// `max_count == 0` and a stream that does not exist give no events. Backward from past the
    /// end reads from the newest event. Any `max_count` is valid, `usize::MAX` included.
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError>;

    /// The current version of `stream` (0 when it does not exist).
    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError>;

    /// Reads at most `max_count` events matching `filter` with a position above `after`.
    ///
    /// [`AllPage::scanned_through`] is never below `after` and advances whenever `after` is
    /// below the head and `max_count > 0` (so a reader always makes progress): it is the last
    /// returned row's position when the page is full, else the head at the time of the read.
    /// A matching row that does not decode is returned in [`AllPage::undecodable`], not as an
    /// error of the page.
    /// `max_count == 0` scans nothing. Any `max_count` is valid, `usize::MAX` included.
    async fn read_all(
        &self,
        after: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<AllPage, StoreError>;

    /// Reads at most `max_count` events matching `query` (by type and [tags](crate::envelope::Tags),
    /// across streams) with a position above `after`, in position order, as
    /// [`read_all`](Self::read_all) reads the global order: [`AllPage::scanned_through`] says
    /// how far the read got (a reader continues after it), rows that do not decode are in
    /// [`AllPage::undecodable`]. Any `max_count` is valid, `usize::MAX` included.
    ///
    /// The default scans the global order with `read_all` (filtered by the query's types when
    /// every item names some) and keeps the matching events; the stores of evoq read their tag
    /// index instead.
    async fn read_query(
        &self,
        query: &EventQuery,
        after: u64,
        max_count: usize,
    ) -> Result<AllPage, StoreError> {
        let filter = match query.type_names() {
            Some(names) => EventFilter::Types(names.into()),
            None => EventFilter::All,
        };
        let mut page = AllPage {
            scanned_through: after,
            ..AllPage::default()
        };
        if query.is_none() || max_count == 0 {
            page.scanned_through = after.max(*self.head().borrow());
            return Ok(page);
        }
        let chunk = max_count.clamp(1, 1_024);
        loop {
            let read = self.read_all(page.scanned_through, chunk, &filter).await?;
            let full = read.events.len() + read.undecodable.len() >= chunk;
            page.scanned_through = read.scanned_through;
            for row in read.into_rows() {
                match row {
                    StoredRow::Event(event) => {
                        if query.matches(&event.event_type, &event.metadata.tags) {
                            page.events.push(event);
                        }
                    }
                    StoredRow::Undecodable(row) => {
                        // The filter holds the query's types, computed once.
                        if filter.matches(&row.event_type) {
                            page.undecodable.push(row);
                        }
                    }
                }
                if page.events.len() + page.undecodable.len() == max_count {
                    page.scanned_through = page
                        .events
                        .last()
                        .map(|e| e.global_position)
                        .into_iter()
                        .chain(page.undecodable.last().map(|r| r.global_position))
                        .max()
                        .unwrap_or(page.scanned_through);
                    return Ok(page);
                }
            }
            if !full {
                return Ok(page);
            }
        }
    }

    /// Appends `events` to the end of `stream` (whatever its version) if `condition` holds: no
    /// event matching its query has a position above its `after`. The check and the append are
    /// one atomic step, on any number of nodes: of two appends whose conditions each match the
    /// other's events, made after the same read, one fails.
    ///
    /// When the condition does not hold, nothing is appended (nor recorded) and the error is
    /// [`StoreError::ConditionFailed`]. `command`, when given, is recorded in the command log
    /// as by [`append_command`](Self::append_command) (its duplicate check comes first). An
    /// empty `events` checks the condition (and records a checked command) without appending.
    ///
    /// The default refuses ([`StoreError::Refused`]): a backend that cannot check a condition
    /// atomically does not implement it. The in-memory, SQLite and PostgreSQL stores do.
    async fn append_if(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
        command: Option<NewCommand>,
    ) -> Result<Appended, StoreError> {
        let _ = (stream, events, condition, command);
        Err(not_implemented("append_if"))
    }

    /// A watch on the highest committed global position (0 for an empty store). It changes
    /// after every commit; [`Subscription`](crate::store::Subscription) waits on it to go live. It is never ahead of the
    /// reads: once it shows `p`, [`read_all`](Self::read_all) returns the event at `p`.
    fn head(&self) -> watch::Receiver<u64>;

    /// Stores `snapshot` as the latest snapshot of its stream (replacing any older one).
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// The latest snapshot of `stream`, if any.
    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError>;

    /// The latest snapshot of `stream`, if any, and at most `max_count` of its events after the
    /// snapshot's version (from version 1 without a snapshot), forward: what rebuilding an
    /// aggregate starts from, in one call. A stream with neither events nor a snapshot gives
    /// neither; `max_count == 0` gives the snapshot alone. Any `max_count` is valid,
    /// `usize::MAX` included.
    ///
    /// The events are what [`read_stream`](Self::read_stream) from the snapshot's version + 1
    /// returns once the snapshot is loaded, which is what the default does: `load_snapshot`,
    /// then `read_stream`. A backend that can answer both at once overrides it: the in-memory
    /// store looks the stream up once under its read lock, and answers a stream that does not
    /// exist without reading anything (every new aggregate's first command asks); PostgreSQL
    /// reads both in one statement; SQLite on one reader connection in one blocking step.
    async fn read_from_snapshot(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Result<SnapshotAndEvents, StoreError> {
        let snapshot = self.load_snapshot(stream).await?;
        let from = snapshot.as_ref().map_or(1, |snapshot| snapshot.version + 1);
        let events = self
            .read_stream(stream, from, Direction::Forward, max_count)
            .await?;
        Ok(SnapshotAndEvents { snapshot, events })
    }

    /// [`read_from_snapshot`](Self::read_from_snapshot) answered during the call, with no
    /// future: for a store that reads without waiting (the in-memory one), which would
    /// otherwise pay a boxed future for every activation. The runtime asks it first, and awaits
    /// `read_from_snapshot` when it gets `None`.
    ///
    /// `Some` holds exactly what `read_from_snapshot` with the same arguments returns. The
    /// default answers `None`: a store that waits for anything (a database, a blocking pool)
    /// must not block the caller's thread here instead. The conformance suite checks that a
    /// store which answers agrees with its `read_from_snapshot`.
    fn read_from_snapshot_now(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Option<Result<SnapshotAndEvents, StoreError>> {
        let _ = (stream, max_count);
        None
    }

    /// Saves the position a named subscriber (handler, projection, saga) has processed.
    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError>;

    /// The saved position of a named subscriber, if it ever saved one.
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError>;

    /// Every saved checkpoint: each named subscriber's position, sorted by name (byte order).
    /// For operators' tools: the runtime never calls it. The default fails with
    /// [`StoreError::Refused`] (a backend that does not implement it); every backend of evoq
    /// does.
    async fn list_checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Err(not_implemented("list_checkpoints"))
    }

    /// At most `limit` streams holding at least one event whose id starts with `prefix` (`""`:
    /// every stream), sorted by id (byte order), starting after `after` (`None`: from the
    /// first). Page with the last id of a page. Any `limit` is valid, `usize::MAX` included.
    /// For operators' tools (it may scan the events); the default fails as
    /// [`list_checkpoints`](Self::list_checkpoints)' does.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let _ = (prefix, after, limit);
        Err(not_implemented("list_streams"))
    }

    /// At most `limit` snapshots as `(stream id, version)`, sorted by stream id (byte order),
    /// starting after `after` (`None`: from the first). Page with the last id of a page. Any
    /// `limit` is valid, `usize::MAX` included. For operators' tools; the default fails as
    /// [`list_checkpoints`](Self::list_checkpoints)' does.
    async fn list_snapshots(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let _ = (after, limit);
        Err(not_implemented("list_snapshots"))
    }

    /// How many events the store holds, in how many streams, of which types. For operators'
    /// tools (it scans the events); the default fails as
    /// [`list_checkpoints`](Self::list_checkpoints)' does.
    async fn count_events(&self) -> Result<EventCounts, StoreError> {
        Err(not_implemented("count_events"))
    }

    /// Every handler that has dead letters, with how many, sorted by handler name (byte
    /// order). For operators' tools; the default fails as
    /// [`list_checkpoints`](Self::list_checkpoints)' does.
    async fn count_dead_letters(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Err(not_implemented("count_dead_letters"))
    }

    /// Saves a dead letter, replacing the entry of the same handler for the same event
    /// (`entry.event.event_id`), if any. Appends no event.
    async fn save_dead_letter(&self, entry: DeadLetter) -> Result<(), StoreError>;

    /// At most `limit` dead letters of `handler` whose event's global position is above
    /// `after`, oldest first (in global position order). Page with the position of the last
    /// entry of a page. Any `limit` is valid, `usize::MAX` included.
    async fn list_dead_letters(
        &self,
        handler: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// The dead letter of `handler` for the event `event_id`, if any.
    async fn load_dead_letter(
        &self,
        handler: &str,
        event_id: Uuid,
    ) -> Result<Option<DeadLetter>, StoreError>;

    /// Removes the dead letter of `handler` for the event `event_id`; whether there was one.
    async fn delete_dead_letter(&self, handler: &str, event_id: Uuid) -> Result<bool, StoreError>;

    /// Stores `request` for the node running its handler (replacing one with its id, which is
    /// how the node marks one it could not carry out: [`HandlerRequest::failed`]).
    async fn save_request(&self, request: HandlerRequest) -> Result<(), StoreError>;

    /// At most `limit` requests for `handler` that wait to be carried out (not
    /// [`failed`](HandlerRequest::failed)), oldest first (by id).
    async fn list_requests(
        &self,
        handler: &str,
        limit: usize,
    ) -> Result<Vec<HandlerRequest>, StoreError>;

    /// Every handler that has requests waiting to be carried out (not
    /// [`failed`](HandlerRequest::failed)), with how many, sorted by handler name (byte order):
    /// with [`list_requests`](Self::list_requests), how an operator's tool finds the requests
    /// of every handler, those asked for a handler no application runs included. The default
    /// fails as [`list_checkpoints`](Self::list_checkpoints)' does.
    async fn count_requests(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Err(not_implemented("count_requests"))
    }

    /// The request of `handler` with id `id`, while it is there (not carried out yet, or
    /// failed and not removed yet).
    async fn load_request(
        &self,
        handler: &str,
        id: Uuid,
    ) -> Result<Option<HandlerRequest>, StoreError>;

    /// Removes the request of `handler` with id `id` (carried out, withdrawn, or failed and
    /// read); whether there was one.
    async fn delete_request(&self, handler: &str, id: Uuid) -> Result<bool, StoreError>;

    /// Saves the state of instance `instance` of the saga `saga`, replacing
    /// the instance's earlier state. The state is opaque bytes (the saga's serialized state);
    /// sagas and instances are independent of one another. Appends no event.
    async fn save_saga_state(
        &self,
        saga: &str,
        instance: &str,
        state: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// The saved state of instance `instance` of saga `saga`, byte for byte, if any.
    async fn load_saga_state(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes the state of instance `instance` of saga `saga` (the instance stopped); whether
    /// there was one.
    async fn delete_saga_state(&self, saga: &str, instance: &str) -> Result<bool, StoreError>;

    /// At most `limit` instance ids of saga `saga` that have a saved state, sorted by id (byte
    /// order), starting after `after` (`None`: from the first). Page with the last id of a page.
    /// Any `limit` is valid, `usize::MAX` included.
    async fn list_saga_instances(
        &self,
        saga: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Stores `timeout` until it is deleted: a timeout of the same id is replaced (so
    /// scheduling one timeout twice keeps one). Appends no event.
    async fn schedule_timeout(&self, timeout: Timeout) -> Result<(), StoreError>;

    /// At most `limit` timeouts of saga `saga` due at or before `now`, the earliest due first
    /// (ties by id). Any `limit` is valid, `usize::MAX` included.
    async fn due_timeouts(
        &self,
        saga: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Timeout>, StoreError>;

    /// When the earliest timeout of saga `saga` is due, if it has any.
    async fn next_timeout(&self, saga: &str) -> Result<Option<SystemTime>, StoreError>;

    /// Removes the timeout `id` of saga `saga` (it fired); whether there was one.
    async fn delete_timeout(&self, saga: &str, id: Uuid) -> Result<bool, StoreError>;

    /// Removes every timeout of instance `instance` of saga `saga` (the instance stopped); how
    /// many there were.
    async fn cancel_timeouts(&self, saga: &str, instance: &str) -> Result<usize, StoreError>;

    /// Makes every committed write durable in the store's own files, so that a copy of them
    /// alone holds everything (SQLite: checkpoints the WAL into the database file and empties
    /// it). The runtime calls it when it stops. The default does nothing: right for a store
    /// with nothing to move (in memory, a database server).
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Asks for the right to run the named subscriber `name` (a handler, projection or saga) on
    /// this node: `Ok(None)` while another node holds it. The subscription engine asks before it
    /// delivers anything, polls while refused, and holds the [`Lease`] while it delivers.
    ///
    /// The default grants every lease at once ([`Lease::local`]): right for a store used by one
    /// process. A store shared by several nodes (PostgreSQL) overrides it.
    async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let _ = name;
        Ok(Some(Lease::local()))
    }
}
