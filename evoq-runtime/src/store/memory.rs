//! The in-memory event store: the embedded default, for tests, examples and the benchmark.
//!
//! Everything lives in the process and is lost when the last handle is dropped. It keeps the
//! whole [`EventStore`] contract (see the [module docs](crate::store)), which the shared
//! conformance suite checks, and it is built for throughput: an append builds its records
//! first and then takes one short write lock (a version check, a few pointer pushes, no await),
//! reads take a read lock, and long scans of the global order release the lock between chunks
//! so appenders are never held up for long. An append costs O(1) amortized whatever the size
//! of the store; `read_stream` and `read_all` index straight to their first event.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use dashmap::DashMap;
use hashbrown::hash_map::EntryRef;
use tokio::sync::watch;
use uuid::Uuid;

use self::commands::{CommandLog, Fresh, Logged, Marks};
use self::log::Log;
use self::tags::TagIndex;
use self::timeouts::Timeouts;
use crate::envelope::{NewEvent, RecordedEvent};
use crate::store::{
    AllPage, AppendCondition, AppendNow, Appended, CommandLookup, CommandRecord, DeadLetter,
    Direction, EventFilter, EventQuery, EventStore, ExpectedVersion, HandlerRequest, NewCommand,
    Snapshot, SnapshotAndEvents, StoreError, Timeout,
};
use crate::store::{EventCounts, StreamInfo};
use crate::util::hash::StreamHasher;

/// Positions `read_all` scans under one hold of the read lock before it
/// releases the lock and takes it again, so a long filtered scan never blocks appenders for
/// more than a few microseconds at a time.
const SCAN_CHUNK: u64 = 4_096;

/// How many events a new stream's index holds before it grows: six 4-byte indexes fill the
/// smallest block the system allocator hands out anyway (24 usable bytes in glibc's), so a
/// stream's first six events cost one allocation, not three (one, then at the second and the
/// fifth event).
const NEW_STREAM_CAPACITY: usize = 6;

/// An event store that keeps everything in memory.
///
/// `InMemoryStore` is a handle: [`Clone`] is cheap and every clone shares the same events,
/// snapshots and checkpoints. Keep one clone for inspection (e.g.
/// [`event_count`](Self::event_count)) and give another to the runtime, or wrap it in an
/// `Arc<dyn EventStore>`.
///
/// Beyond the [`EventStore`] contract:
/// - global positions are dense from 1, and an append's events take consecutive positions;
/// - an append with no events checks the expected version, appends nothing, leaves the head
///   alone, and returns the stream's current version with positions 0;
/// - [`read_all`](EventStore::read_all) returns, when its page is not full, the head at the
///   time of the read as `scanned_through` (or `after`, if that is higher);
/// - the latest [`save_snapshot`](EventStore::save_snapshot) of a stream replaces the one
///   before it, whatever their versions.
///
/// ```
/// use std::sync::Arc;
/// use evoq_runtime::store::memory::InMemoryStore;
/// use evoq_runtime::store::EventStore;
///
/// let store = InMemoryStore::new();
/// let shared: Arc<dyn EventStore> = Arc::new(store.clone());
/// assert_eq!(store.event_count(), 0);
/// assert_eq!(*shared.head().borrow(), 0);
/// ```
#[derive(Clone, Default)]
pub struct InMemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// Events: the global log and the streams. Never held across an await.
    state: RwLock<State>,
    /// The highest committed position; updated after the commit, so never ahead of the log.
    head: watch::Sender<u64>,
    /// By stream id (hashed like the streams: every activation looks its stream up here).
    snapshots: DashMap<String, Snapshot, StreamHasher>,
    /// By consumer name.
    checkpoints: DashMap<String, u64>,
    dead_letters: Mutex<HashMap<String, DeadLetters>>,
    /// Saga name -> instance id -> state.
    sagas: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
    /// The sagas' scheduled timeouts.
    timeouts: Mutex<Timeouts>,
    /// Handler name -> request id -> request.
    requests: Mutex<HashMap<String, BTreeMap<Uuid, HandlerRequest>>>,
    /// Appends rejected for a wrong expected version.
    conflicts: AtomicU64,
    /// The command log's whole entries. A checked command's entry is checked and written while
    /// the events' lock is held too (lock order: `state`, then `commands`), so that no
    /// duplicate slips in between. A fresh command (a generated UUID v7 nobody can look up
    /// before its dispatch returns) has no entry: its events are marked in `State::marks`
    /// (see `memory/commands.rs`); one that cannot be marked is written whole just after the
    /// events' lock is released.
    commands: CommandLog,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            state: RwLock::default(),
            head: watch::Sender::new(0),
            snapshots: DashMap::default(),
            checkpoints: DashMap::default(),
            dead_letters: Mutex::default(),
            sagas: Mutex::default(),
            timeouts: Mutex::default(),
            requests: Mutex::default(),
            conflicts: AtomicU64::new(0),
            commands: CommandLog::default(),
        }
    }
}

/// The dead letters of one handler: in position order, and by event id.
#[derive(Default)]
struct DeadLetters {
    by_position: BTreeMap<(u64, Uuid), DeadLetter>,
    positions: HashMap<Uuid, u64>,
}

#[derive(Default)]
struct State {
    /// Every event in position order: position `p` is at index `p - 1`.
    log: Log,
    /// Each stream's events in version order, as indexes into the log (version `v` is at
    /// index `v - 1`; 4 bytes each, where a pointer takes 8). The key is the one copy of the
    /// stream's id, which its records share.
    streams: hashbrown::HashMap<Arc<str>, Vec<u32>, StreamHasher>,
    /// The marks of the commands recorded without an entry of their own (fresh ids): the
    /// command log's part that lives with the events.
    marks: Marks,
    /// The events of every tag (only tagged events cost anything here).
    tags: TagIndex,
}

impl State {
    fn stream_version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |s| s.len() as u64)
    }

    /// At most `max_count` events of `stream` from version `from` in `direction`: see
    /// [`EventStore::read_stream`]. Nothing is allocated for an empty page.
    fn page(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> Vec<Arc<RecordedEvent>> {
        let Some(events) = self.streams.get(stream) else {
            return Vec::new();
        };
        let len = events.len();
        match direction {
            Direction::Forward => {
                // Version `from` is at index `from - 1`; version 0 reads from the first event.
                let start = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
                if start >= len {
                    return Vec::new();
                }
                let end = start + max_count.min(len - start);
                events[start..end]
                    .iter()
                    .map(|&index| Arc::clone(self.log.get(index)))
                    .collect()
            }
            Direction::Backward => {
                let end = usize::try_from(from).unwrap_or(usize::MAX).min(len);
                let start = end.saturating_sub(max_count);
                events[start..end]
                    .iter()
                    .rev()
                    .map(|&index| Arc::clone(self.log.get(index)))
                    .collect()
            }
        }
    }
}

/// A record built before the write lock, whose stream and places the lock gives it.
struct Unplaced(Arc<RecordedEvent>);

thread_local! {
    /// The stream id an [`Unplaced`] record holds until it is placed: one per thread, so that
    /// two appenders never count references on one cache line.
    static NO_STREAM_YET: Arc<str> = Arc::from("");
}

impl Unplaced {
    /// The record of `event`, committed at `recorded_at`, its stream and places unknown.
    fn record(event: NewEvent, recorded_at: SystemTime) -> Self {
        let unplaced = NO_STREAM_YET.with(Arc::clone);
        Unplaced(Arc::new(RecordedEvent::from_new(
            event,
            unplaced,
            0,
            0,
            recorded_at,
        )))
    }

    /// The record in stream `id` at `version` and global `position`, and the placeholder it
    /// held (to drop once the lock is released).
    fn place(
        mut self,
        id: &Arc<str>,
        version: u64,
        position: u64,
    ) -> (Arc<RecordedEvent>, Arc<str>) {
        let Some(record) = Arc::get_mut(&mut self.0) else {
            unreachable!("a record is not shared before it is stored")
        };
        let placeholder = std::mem::replace(&mut record.stream_id, Arc::clone(id));
        record.stream_version = version;
        record.global_position = position;
        (self.0, placeholder)
    }
}

/// A new stream's key (the one copy of its id, which its records share) and its index.
struct NewStream {
    id: Arc<str>,
    index: Vec<u32>,
}

impl NewStream {
    /// The key and index of stream `stream`, for its first `events`.
    fn for_events(stream: &str, events: usize) -> Self {
        NewStream {
            id: Arc::from(stream),
            index: Vec::with_capacity(events.max(NEW_STREAM_CAPACITY)),
        }
    }
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many events the store holds (equal to the head position: positions are dense).
    pub fn event_count(&self) -> u64 {
        self.read_state().log.len()
    }

    /// How many streams hold at least one event.
    pub fn stream_count(&self) -> usize {
        self.read_state().streams.len()
    }

    /// The ids of every stream holding at least one event, sorted.
    pub fn stream_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .read_state()
            .streams
            .keys()
            .map(|id| id.to_string())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every stored event, in global order. Meant for tests; it copies the whole log of
    /// pointers, so prefer [`read_all`](EventStore::read_all) on large stores.
    pub fn events(&self) -> Vec<Arc<RecordedEvent>> {
        self.read_state().log.iter_from(0).cloned().collect()
    }

    /// How many appends were rejected with [`StoreError::WrongExpectedVersion`] since the store
    /// was created: lets a test see that a writer really hit (and retried) a conflict.
    pub fn conflict_count(&self) -> u64 {
        self.shared.conflicts.load(Ordering::Relaxed)
    }

    // The locks are only poisoned by a panic while held, and every critical section checks
    // before it mutates, so the data behind a poisoned lock is still consistent.
    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn dead_letters(&self) -> MutexGuard<'_, HashMap<String, DeadLetters>> {
        self.shared
            .dead_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn requests(&self) -> MutexGuard<'_, HashMap<String, BTreeMap<Uuid, HandlerRequest>>> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sagas(&self) -> MutexGuard<'_, HashMap<String, BTreeMap<String, Vec<u8>>>> {
        self.shared
            .sagas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn timeouts(&self) -> MutexGuard<'_, Timeouts> {
        self.shared
            .timeouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One append under one short write lock, with its command-log entry when `command` is
    /// set (see [`EventStore::append_command`]), if `condition` holds when it is set (see
    /// [`EventStore::append_if`]).
    fn commit(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
        command: Option<NewCommand>,
        condition: Option<&AppendCondition>,
    ) -> Result<Appended, StoreError> {
        let recorded_at = SystemTime::now();
        let count = events.len() as u64;
        // A fresh command whose events can carry its entry is marked in the log instead.
        let fresh = command
            .as_ref()
            .and_then(|command| Fresh::of(command, events.last()));
        // What can be allocated before the write lock is: its hold is then a few pointer
        // writes, with no allocation (nor the page faults of fresh heap) in it, so the other
        // appenders spin on it for a moment instead of sleeping. A one-event append (every
        // command's, nearly) brings its record; an append that expects a new stream brings
        // the stream's key and index.
        let mut single = match events.len() {
            1 => events
                .pop()
                .map(|event| Unplaced::record(event, recorded_at)),
            _ => None,
        };
        let mut new_stream = matches!(
            expected,
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0)
        )
        .then(|| NewStream::for_events(stream, count as usize));
        // Dropped once the lock is released, like every count it touches.
        let mut placeholder = None;
        let appended = {
            let mut guard = self.write_state();
            let State {
                log,
                streams,
                marks,
                tags,
            } = &mut *guard;
            // A checked command holds the log from its check to its entry.
            let mut checked = command
                .as_ref()
                .filter(|c| c.deduplicate_since.is_some())
                .map(|_| self.shared.commands.checked());
            if let (Some(commands), Some(command)) = (checked.as_mut(), command.as_ref())
                && let Some(record) = commands.duplicate(command, log, marks)
            {
                return Err(StoreError::DuplicateCommand {
                    record: Box::new(record),
                });
            }
            if let Some(condition) = condition
                && let Some(position) = tags.first_match(log, &condition.query, condition.after)
            {
                return Err(StoreError::ConditionFailed {
                    stream: stream.to_owned(),
                    query: condition.query.to_string(),
                    after: condition.after,
                    position,
                });
            }
            if events.is_empty() && single.is_none() {
                let (id, actual) = match streams.get_key_value(stream) {
                    Some((id, records)) => (Some(id), records.len() as u64),
                    None => (None, 0),
                };
                if !expected.holds_for(actual) {
                    drop(guard);
                    return Err(self.conflict(stream, expected, actual));
                }
                let appended = Appended {
                    version: actual,
                    first_position: 0,
                    last_position: 0,
                };
                if let (Some(commands), Some(command)) = (checked.as_mut(), command) {
                    let stream = id.map_or_else(|| Arc::from(stream), Arc::clone);
                    commands.push(Logged::new(command, stream, &appended, 0, recorded_at));
                }
                return Ok(appended);
            }
            // One hash of the id: the entry is the stream's, or where it goes.
            let (id, records, actual) = match streams.entry_ref(stream) {
                EntryRef::Occupied(entry) => {
                    let id = Arc::clone(entry.key());
                    let records = entry.into_mut();
                    let actual = records.len() as u64;
                    (id, records, actual)
                }
                EntryRef::Vacant(entry) => {
                    if !expected.holds_for(0) {
                        drop(guard);
                        return Err(self.conflict(stream, expected, 0));
                    }
                    let NewStream { id, index } = new_stream
                        .take()
                        .unwrap_or_else(|| NewStream::for_events(stream, count as usize));
                    let records = entry.insert_with_key(Arc::clone(&id), index);
                    (id, records, 0)
                }
            };
            if !expected.holds_for(actual) {
                drop(guard);
                return Err(self.conflict(stream, expected, actual));
            }
            let first_position = log.len() + 1;
            if log.len() + count > u64::from(u32::MAX) {
                return Err(StoreError::Backend {
                    backend: "memory",
                    message: format!(
                        "the in-memory store holds at most {} events; use a durable store (SQLite, PostgreSQL) for more",
                        u32::MAX
                    ),
                });
            }
            if let Some(record) = single.take() {
                let (record, unplaced) = record.place(&id, actual + 1, first_position);
                records.push((first_position - 1) as u32);
                if !record.metadata.tags.is_empty() {
                    tags.insert((first_position - 1) as u32, &record);
                }
                log.push(record);
                placeholder = Some(unplaced);
            }
            let numbered = (actual + 1..).zip(first_position..);
            for ((version, position), event) in numbered.zip(events.drain(..)) {
                let record = Arc::new(RecordedEvent::from_new(
                    event,
                    Arc::clone(&id),
                    version,
                    position,
                    recorded_at,
                ));
                // Below `u32::MAX`: checked above.
                records.push((position - 1) as u32);
                if !record.metadata.tags.is_empty() {
                    tags.insert((position - 1) as u32, &record);
                }
                log.push(record);
            }
            // The caller's next batch reuses the vector.
            NewEvent::recycle(events);
            let appended = Appended {
                version: actual + count,
                first_position,
                last_position: first_position + count - 1,
            };
            if let Some(fresh) = fresh
                && marks.mark(first_position, appended.last_position, fresh)
            {
                drop(guard);
                return Ok(self.publish(appended));
            }
            match (checked, command) {
                (Some(mut commands), Some(command)) => {
                    commands.push(Logged::new(command, id, &appended, count, recorded_at));
                }
                (None, Some(command)) => {
                    // A fresh command that could not be marked.
                    drop(guard);
                    self.shared
                        .commands
                        .record_whole(command, id, &appended, count, recorded_at);
                }
                _ => {}
            }
            appended
        };
        drop(placeholder);
        Ok(self.publish(appended))
    }

    /// The latest snapshot of `stream` and at most `max_count` of its events after it (see
    /// [`EventStore::read_from_snapshot`]).
    fn snapshot_and_events(&self, stream: &str, max_count: usize) -> SnapshotAndEvents {
        let snapshot = self
            .shared
            .snapshots
            .get(stream)
            .map(|snapshot| snapshot.value().clone());
        let from = snapshot.as_ref().map_or(1, |snapshot| snapshot.version + 1);
        let events = self
            .read_state()
            .page(stream, from, Direction::Forward, max_count);
        SnapshotAndEvents { snapshot, events }
    }

    /// Publishes the head after a commit (the events' lock released), and returns `appended`.
    ///
    /// Monotonic even when two appenders publish out of order. Waking the receivers (eight
    /// locks in tokio's watch) is skipped when there is none: `head()` subscribes under the
    /// watch's lock, so a receiver is either counted here or created after this update, with
    /// the new value as seen.
    fn publish(&self, appended: Appended) -> Appended {
        let last = appended.last_position;
        let head = &self.shared.head;
        head.send_if_modified(|published| {
            if last <= *published {
                return false;
            }
            *published = last;
            head.receiver_count() > 0
        });
        appended
    }

    fn conflict(&self, stream: &str, expected: ExpectedVersion, actual: u64) -> StoreError {
        self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
        StoreError::WrongExpectedVersion {
            stream: stream.to_owned(),
            expected,
            actual,
        }
    }
}

impl std::fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read_state();
        f.debug_struct("InMemoryStore")
            .field("events", &state.log.len())
            .field("streams", &state.streams.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventStore for InMemoryStore {
    /// Appends under one short write lock. An empty `events` checks `expected`, appends
    /// nothing and returns the current version with positions 0.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        self.commit(stream, expected, events, None, None)
    }

    /// Commits when called, not when first polled: the commit has no await, so the future only
    /// hands its outcome over, and the events and the command are not moved into it first.
    /// (The runtime's commands come through
    /// [`append_command_now`](EventStore::append_command_now), with no future at all.)
    fn append_command<'life0, 'life1, 'async_trait>(
        &'life0 self,
        stream: &'life1 str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> Pin<Box<dyn Future<Output = Result<Appended, StoreError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(std::future::ready(self.commit(
            stream,
            expected,
            events,
            Some(command),
            None,
        )))
    }

    /// Always made: the commit has no await (one short write lock).
    fn append_command_now(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> AppendNow {
        AppendNow::Made(self.commit(stream, expected, events, Some(command), None))
    }

    async fn find_command(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let state = self.read_state();
        Ok(self
            .shared
            .commands
            .find(lookup, since, &state.log, &state.marks))
    }

    async fn sweep_commands(&self, before: SystemTime, limit: usize) -> Result<usize, StoreError> {
        let state = self.read_state();
        Ok(self
            .shared
            .commands
            .sweep(before, limit, &state.log, &state.marks))
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        Ok(self.read_state().page(stream, from, direction, max_count))
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        Ok(self.read_state().stream_version(stream))
    }

    /// Scans from `after` up to the head at the time of the call, in chunks, releasing the
    /// read lock between chunks. `max_count == 0` scans nothing (`scanned_through == after`).
    async fn read_all(
        &self,
        after: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<AllPage, StoreError> {
        let mut events = Vec::new();
        if max_count == 0 {
            return Ok(AllPage {
                events,
                scanned_through: after,
                undecodable: Vec::new(),
            });
        }
        // `scanned` is the last position scanned; the log index of position `scanned + 1`
        // is `scanned`.
        let mut scanned = after;
        let mut target = None;
        loop {
            let state = self.read_state();
            let target = *target.get_or_insert(state.log.len());
            if scanned >= target {
                break;
            }
            let chunk_end = target.min(scanned + SCAN_CHUNK);
            let start = usize::try_from(scanned).unwrap_or(usize::MAX);
            let take = usize::try_from(chunk_end - scanned).unwrap_or(usize::MAX);
            for event in state.log.iter_from(start).take(take) {
                if filter.matches(&event.event_type) {
                    events.push(Arc::clone(event));
                    if events.len() == max_count {
                        return Ok(AllPage {
                            scanned_through: event.global_position,
                            events,
                            undecodable: Vec::new(),
                        });
                    }
                }
            }
            scanned = chunk_end;
        }
        Ok(AllPage {
            events,
            scanned_through: scanned,
            undecodable: Vec::new(),
        })
    }

    /// Reads the tag index under the read lock (an item without tags scans the log from
    /// `after`).
    async fn read_query(
        &self,
        query: &EventQuery,
        after: u64,
        max_count: usize,
    ) -> Result<AllPage, StoreError> {
        let state = self.read_state();
        let positions = state.tags.read(&state.log, query, after, max_count);
        let full = max_count > 0 && positions.len() == max_count;
        let scanned_through = match positions.last() {
            Some(&last) if full => last,
            _ if max_count == 0 => after,
            _ => after.max(state.log.len()),
        };
        let events = positions
            .iter()
            .filter_map(|&position| state.log.at(position).map(Arc::clone))
            .collect();
        Ok(AllPage {
            events,
            scanned_through,
            undecodable: Vec::new(),
        })
    }

    /// Checks the condition and appends under one hold of the write lock.
    async fn append_if(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
        command: Option<NewCommand>,
    ) -> Result<Appended, StoreError> {
        self.commit(
            stream,
            ExpectedVersion::Any,
            events,
            command,
            Some(condition),
        )
    }

    /// Subscribes under the watch's lock (see `append`).
    fn head(&self) -> watch::Receiver<u64> {
        let head = &self.shared.head;
        let mut receiver = None;
        head.send_if_modified(|_| {
            receiver = Some(head.subscribe());
            false
        });
        receiver.unwrap_or_else(|| head.subscribe())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let snapshots = &self.shared.snapshots;
        // The key is copied only for a stream's first snapshot.
        if let Some(mut slot) = snapshots.get_mut(snapshot.stream_id.as_str()) {
            *slot = snapshot;
            return Ok(());
        }
        snapshots.insert(snapshot.stream_id.clone(), snapshot);
        Ok(())
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(self
            .shared
            .snapshots
            .get(stream)
            .map(|snapshot| snapshot.value().clone()))
    }

    /// The snapshot, then the page under one read lock: a stream that does not exist is one
    /// lookup in each map, and nothing read or allocated.
    async fn read_from_snapshot(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Result<SnapshotAndEvents, StoreError> {
        Ok(self.snapshot_and_events(stream, max_count))
    }

    /// Always answered: the read has no await.
    fn read_from_snapshot_now(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Option<Result<SnapshotAndEvents, StoreError>> {
        Some(Ok(self.snapshot_and_events(stream, max_count)))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        let checkpoints = &self.shared.checkpoints;
        // The key is copied only for a consumer's first checkpoint.
        if let Some(mut slot) = checkpoints.get_mut(name) {
            *slot = position;
            return Ok(());
        }
        checkpoints.insert(name.to_owned(), position);
        Ok(())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .shared
            .checkpoints
            .get(name)
            .map(|position| *position.value()))
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut all: Vec<(String, u64)> = self
            .shared
            .checkpoints
            .iter()
            .map(|entry| (entry.key().clone(), *entry.value()))
            .collect();
        all.sort_unstable();
        Ok(all)
    }

    /// Sorts the matching ids of the page's range: O(streams) per page, for a store that lives
    /// in a test or a benchmark.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let state = self.read_state();
        let mut ids: Vec<&Arc<str>> = state
            .streams
            .keys()
            .filter(|id| id.starts_with(prefix) && after.is_none_or(|after| &***id > after))
            .collect();
        if ids.len() > limit {
            ids.select_nth_unstable(limit);
            ids.truncate(limit);
        }
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .filter_map(|id| {
                let last = state.log.get(*state.streams.get(id)?.last()?);
                Some(StreamInfo {
                    stream_id: id.to_string(),
                    version: last.stream_version,
                    last_position: last.global_position,
                    last_recorded_at: last.recorded_at,
                })
            })
            .collect())
    }

    async fn list_snapshots(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut all: Vec<(String, u64)> = self
            .shared
            .snapshots
            .iter()
            .filter(|entry| after.is_none_or(|after| entry.key().as_str() > after))
            .map(|entry| (entry.key().clone(), entry.value().version))
            .collect();
        all.sort_unstable();
        all.truncate(limit);
        Ok(all)
    }

    async fn count_events(&self) -> Result<EventCounts, StoreError> {
        let state = self.read_state();
        let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
        for event in state.log.iter_from(0) {
            *by_type.entry(&event.event_type).or_default() += 1;
        }
        Ok(EventCounts {
            events: state.log.len(),
            streams: state.streams.len() as u64,
            by_type: by_type
                .into_iter()
                .map(|(name, count)| (name.to_owned(), count))
                .collect(),
        })
    }

    async fn count_dead_letters(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut all: Vec<(String, u64)> = self
            .dead_letters()
            .iter()
            .filter(|(_, letters)| !letters.positions.is_empty())
            .map(|(handler, letters)| (handler.clone(), letters.positions.len() as u64))
            .collect();
        all.sort_unstable();
        Ok(all)
    }

    async fn save_dead_letter(&self, entry: DeadLetter) -> Result<(), StoreError> {
        let mut all = self.dead_letters();
        let letters = all.entry(entry.handler.clone()).or_default();
        let id = entry.event.event_id;
        if let Some(old) = letters.positions.insert(id, entry.event.global_position) {
            letters.by_position.remove(&(old, id));
        }
        letters
            .by_position
            .insert((entry.event.global_position, id), entry);
        Ok(())
    }

    async fn list_dead_letters(
        &self,
        handler: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let all = self.dead_letters();
        let Some(letters) = all.get(handler) else {
            return Ok(Vec::new());
        };
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        Ok(letters
            .by_position
            .range((from, Uuid::nil())..)
            .take(limit)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    async fn load_dead_letter(
        &self,
        handler: &str,
        event_id: Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let all = self.dead_letters();
        Ok(all.get(handler).and_then(|letters| {
            let position = letters.positions.get(&event_id)?;
            letters.by_position.get(&(*position, event_id)).cloned()
        }))
    }

    async fn delete_dead_letter(&self, handler: &str, event_id: Uuid) -> Result<bool, StoreError> {
        let mut all = self.dead_letters();
        let Some(letters) = all.get_mut(handler) else {
            return Ok(false);
        };
        let Some(position) = letters.positions.remove(&event_id) else {
            return Ok(false);
        };
        letters.by_position.remove(&(position, event_id));
        if letters.positions.is_empty() {
            all.remove(handler);
        }
        Ok(true)
    }

    async fn save_request(&self, request: HandlerRequest) -> Result<(), StoreError> {
        self.requests()
            .entry(request.handler.clone())
            .or_default()
            .insert(request.id, request);
        Ok(())
    }

    async fn list_requests(
        &self,
        handler: &str,
        limit: usize,
    ) -> Result<Vec<HandlerRequest>, StoreError> {
        Ok(self
            .requests()
            .get(handler)
            .map_or_else(Vec::new, |requests| {
                requests
                    .values()
                    .filter(|request| request.failed.is_none())
                    .take(limit)
                    .cloned()
                    .collect()
            }))
    }

    async fn count_requests(&self) -> Result<Vec<(String, u64)>, StoreError> {
        // Handlers whose requests are all failed are left out, as the stores' queries do.
        let mut all: Vec<(String, u64)> = self
            .requests()
            .iter()
            .map(|(handler, requests)| {
                let waiting = requests.values().filter(|r| r.failed.is_none()).count();
                (handler.clone(), waiting as u64)
            })
            .filter(|(_, waiting)| *waiting > 0)
            .collect();
        all.sort_unstable();
        Ok(all)
    }

    async fn load_request(
        &self,
        handler: &str,
        id: Uuid,
    ) -> Result<Option<HandlerRequest>, StoreError> {
        Ok(self
            .requests()
            .get(handler)
            .and_then(|requests| requests.get(&id).cloned()))
    }

    async fn delete_request(&self, handler: &str, id: Uuid) -> Result<bool, StoreError> {
        let mut all = self.requests();
        let Some(requests) = all.get_mut(handler) else {
            return Ok(false);
        };
        let removed = requests.remove(&id).is_some();
        if requests.is_empty() {
            all.remove(handler);
        }
        Ok(removed)
    }

    async fn save_saga_state(
        &self,
        saga: &str,
        instance: &str,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.sagas()
            .entry(saga.to_owned())
            .or_default()
            .insert(instance.to_owned(), state);
        Ok(())
    }

    async fn load_saga_state(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .sagas()
            .get(saga)
            .and_then(|instances| instances.get(instance).cloned()))
    }

    async fn delete_saga_state(&self, saga: &str, instance: &str) -> Result<bool, StoreError> {
        let mut sagas = self.sagas();
        let Some(instances) = sagas.get_mut(saga) else {
            return Ok(false);
        };
        let removed = instances.remove(instance).is_some();
        if instances.is_empty() {
            sagas.remove(saga);
        }
        Ok(removed)
    }

    async fn list_saga_instances(
        &self,
        saga: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        use std::ops::Bound;
        let sagas = self.sagas();
        let Some(instances) = sagas.get(saga) else {
            return Ok(Vec::new());
        };
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        Ok(instances
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn schedule_timeout(&self, timeout: Timeout) -> Result<(), StoreError> {
        self.timeouts().schedule(timeout);
        Ok(())
    }

    async fn due_timeouts(
        &self,
        saga: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Timeout>, StoreError> {
        Ok(self.timeouts().due(saga, now, limit))
    }

    async fn next_timeout(&self, saga: &str) -> Result<Option<SystemTime>, StoreError> {
        Ok(self.timeouts().next(saga))
    }

    async fn delete_timeout(&self, saga: &str, id: Uuid) -> Result<bool, StoreError> {
        Ok(self.timeouts().delete(saga, id))
    }

    async fn cancel_timeouts(&self, saga: &str, instance: &str) -> Result<usize, StoreError> {
        Ok(self.timeouts().cancel(saga, instance))
    }
}

mod commands;
mod log;
mod tags;
#[cfg(test)]
mod tests;
mod timeouts;
