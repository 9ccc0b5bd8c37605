//! The in-memory store's own tests: the conformance suite, and a deliberately broken store
//! for each property to show that the suite catches it.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;

use uuid::Uuid;

use super::*;
use crate::envelope::{Metadata, stream_id};
use crate::store::conformance;
use crate::store::memory::log::LOG_CHUNK;

mod conformance_suite {
    crate::store_conformance_tests!(|| async {
        std::sync::Arc::new(crate::store::memory::InMemoryStore::new())
    });
}

fn event(event_type: &'static str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: Cow::Borrowed(event_type),
        schema_version: 1,
        data: b"{}".to_vec(),
        metadata: Metadata::default(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn clones_share_one_store_and_introspection_counts_it() {
    runtime().block_on(async {
        let store = InMemoryStore::new();
        let handle = store.clone();
        let a = stream_id("Account", "1");
        let b = stream_id("Order", "1");
        store
            .append(&b, ExpectedVersion::NoStream, vec![event("X"), event("Y")])
            .await
            .expect("append");
        handle
            .append(&a, ExpectedVersion::Any, vec![event("Z")])
            .await
            .expect("append");
        let conflict = store
            .append(&a, ExpectedVersion::NoStream, vec![event("Z")])
            .await;
        assert!(conflict.is_err());
        assert_eq!(handle.event_count(), 3);
        assert_eq!(handle.stream_count(), 2);
        assert_eq!(handle.stream_ids(), [a.clone(), b.clone()]);
        assert_eq!(handle.conflict_count(), 1);
        let events = handle.events();
        assert_eq!(
            events
                .iter()
                .map(|e| (e.stream_id(), e.global_position))
                .collect::<Vec<_>>(),
            [(b.as_str(), 1), (b.as_str(), 2), (a.as_str(), 3)]
        );
        assert_eq!(*handle.head().borrow(), 3);
        assert_eq!(
            format!("{store:?}"),
            "InMemoryStore { events: 3, streams: 2, .. }"
        );
    });
}

#[test]
fn head_wakes_nobody_without_receivers_yet_no_receiver_misses_a_commit() {
    runtime().block_on(async {
        let store = InMemoryStore::new();
        // No receiver: the head moves without a wake-up.
        store
            .append("S-1", ExpectedVersion::Any, vec![event("E")])
            .await
            .expect("append");
        let mut head = store.head();
        assert_eq!(*head.borrow_and_update(), 1, "a new receiver sees the head");
        let waiter = tokio::spawn(async move {
            head.changed().await.expect("open");
            let seen = *head.borrow_and_update();
            (head, seen)
        });
        tokio::task::yield_now().await;
        store
            .append("S-1", ExpectedVersion::Any, vec![event("E")])
            .await
            .expect("append");
        let (head, seen) = waiter.await.expect("waiter");
        assert_eq!(seen, 2, "a waiting receiver is woken by the next commit");
        drop(head);
        store
            .append("S-2", ExpectedVersion::Any, vec![event("E"), event("E")])
            .await
            .expect("append");
        assert_eq!(*store.head().borrow(), 4);
    });
}

#[test]
fn read_all_is_exact_across_log_and_scan_chunk_boundaries() {
    runtime().block_on(async {
        let store = InMemoryStore::new();
        let types = ["A", "B", "C"];
        let mut n = 0usize;
        while n < 3 * LOG_CHUNK + 11 {
            let events = (0..7).map(|i| event(types[(n + i) % 3])).collect();
            let stream = stream_id("Chunked", &(n % 5).to_string());
            store
                .append(&stream, ExpectedVersion::Any, events)
                .await
                .expect("append");
            n += 7;
        }
        let log = store.events();
        let head = log.len() as u64;
        assert_eq!(head, store.event_count());
        for (i, event) in log.iter().enumerate() {
            assert_eq!(event.global_position, i as u64 + 1);
        }
        let chunk = LOG_CHUNK as u64;
        let filters = [
            EventFilter::All,
            EventFilter::types(["B"]),
            EventFilter::types(["Absent"]),
        ];
        for filter in &filters {
            for after in [0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk, head - 3, head] {
                for max_count in [1, 5, 4_097, usize::MAX] {
                    let page = store
                        .read_all(after, max_count, filter)
                        .await
                        .expect("read_all");
                    let expected: Vec<u64> = log
                        .iter()
                        .filter(|e| e.global_position > after)
                        .filter(|e| filter.matches(&e.event_type))
                        .take(max_count)
                        .map(|e| e.global_position)
                        .collect();
                    let got: Vec<u64> = page.events.iter().map(|e| e.global_position).collect();
                    assert_eq!(got, expected, "after {after}, max {max_count}, {filter:?}");
                    let through = if got.len() == max_count {
                        got.last().copied().unwrap_or(after)
                    } else {
                        head
                    };
                    assert_eq!(page.scanned_through, through);
                }
            }
        }
        let beyond = store
            .read_all(head + 10, 10, &EventFilter::All)
            .await
            .expect("read_all");
        assert!(beyond.events.is_empty());
        assert_eq!(
            beyond.scanned_through,
            head + 10,
            "a read from beyond the head never moves the reader back"
        );
    });
}

#[test]
fn poisoned_locks_do_not_break_the_store() {
    let store = InMemoryStore::new();
    let poisoner = store.clone();
    let _ = std::thread::spawn(move || {
        let _guard = poisoner.write_state();
        panic!("poison the lock");
    })
    .join();
    runtime().block_on(async {
        store
            .append("S-1", ExpectedVersion::NoStream, vec![event("E")])
            .await
            .expect("append after a poisoned lock");
        assert_eq!(store.event_count(), 1);
    });
}

/// A deliberately broken store, to show that the conformance suite catches each bug.
struct Broken {
    inner: InMemoryStore,
    bug: Bug,
}

#[derive(Clone, Copy, Debug)]
enum Bug {
    IgnoresExpectedVersion,
    ScansThroughHeadOnFullPages,
    BackwardIgnoresFrom,
    ReencodesData,
    KeepsFirstSnapshot,
    EventsFromTheFirstDespiteTheSnapshot,
    HeadAheadOfReads,
    DeadLettersNeverReplaced,
    DeadLettersNewestFirst,
    SagaInstancesUnsorted,
}

#[async_trait]
impl EventStore for Broken {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let expected = match self.bug {
            Bug::IgnoresExpectedVersion => ExpectedVersion::Any,
            _ => expected,
        };
        if let Bug::ReencodesData = self.bug {
            for e in &mut events {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.data) {
                    e.data = serde_json::to_vec(&v).expect("json");
                }
            }
        }
        self.inner.append(stream, expected, events).await
    }

    async fn append_command(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> Result<Appended, StoreError> {
        self.inner
            .append_command(stream, expected, events, command)
            .await
    }

    async fn find_command(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.inner.find_command(lookup, since).await
    }

    async fn sweep_commands(&self, before: SystemTime, limit: usize) -> Result<usize, StoreError> {
        self.inner.sweep_commands(before, limit).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        let from = match (self.bug, direction) {
            (Bug::BackwardIgnoresFrom, Direction::Backward) => u64::MAX,
            _ => from,
        };
        self.inner
            .read_stream(stream, from, direction, max_count)
            .await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        self.inner.stream_version(stream).await
    }

    async fn read_all(
        &self,
        after: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<AllPage, StoreError> {
        let mut page = self.inner.read_all(after, max_count, filter).await?;
        if let Bug::ScansThroughHeadOnFullPages = self.bug {
            page.scanned_through = page.scanned_through.max(self.inner.event_count());
        }
        Ok(page)
    }

    fn head(&self) -> watch::Receiver<u64> {
        match self.bug {
            Bug::HeadAheadOfReads => {
                // Publishes one position past the real head.
                let (tx, rx) = watch::channel(self.inner.event_count() + 1);
                let mut real = self.inner.head();
                tokio::spawn(async move {
                    while real.changed().await.is_ok() {
                        let h = *real.borrow_and_update();
                        if tx.send(h + 1).is_err() {
                            break;
                        }
                    }
                });
                rx
            }
            _ => self.inner.head(),
        }
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        if let Bug::KeepsFirstSnapshot = self.bug
            && self
                .inner
                .load_snapshot(&snapshot.stream_id)
                .await?
                .is_some()
        {
            return Ok(());
        }
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream).await
    }

    async fn read_from_snapshot(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Result<SnapshotAndEvents, StoreError> {
        let mut start = self.inner.read_from_snapshot(stream, max_count).await?;
        if let Bug::EventsFromTheFirstDespiteTheSnapshot = self.bug {
            start.events = self
                .inner
                .read_stream(stream, 1, Direction::Forward, max_count)
                .await?;
        }
        Ok(start)
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        self.inner.save_checkpoint(name, position).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_dead_letter(&self, entry: DeadLetter) -> Result<(), StoreError> {
        if let Bug::DeadLettersNeverReplaced = self.bug
            && self
                .inner
                .load_dead_letter(&entry.handler, entry.event.event_id)
                .await?
                .is_some()
        {
            return Ok(());
        }
        self.inner.save_dead_letter(entry).await
    }

    async fn list_dead_letters(
        &self,
        handler: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut page = self.inner.list_dead_letters(handler, after, limit).await?;
        if let Bug::DeadLettersNewestFirst = self.bug {
            page.reverse();
        }
        Ok(page)
    }

    async fn load_dead_letter(
        &self,
        handler: &str,
        event_id: Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        self.inner.load_dead_letter(handler, event_id).await
    }

    async fn delete_dead_letter(&self, handler: &str, event_id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_dead_letter(handler, event_id).await
    }

    async fn save_request(&self, request: HandlerRequest) -> Result<(), StoreError> {
        self.inner.save_request(request).await
    }

    async fn list_requests(
        &self,
        handler: &str,
        limit: usize,
    ) -> Result<Vec<HandlerRequest>, StoreError> {
        self.inner.list_requests(handler, limit).await
    }

    async fn load_request(
        &self,
        handler: &str,
        id: Uuid,
    ) -> Result<Option<HandlerRequest>, StoreError> {
        self.inner.load_request(handler, id).await
    }

    async fn delete_request(&self, handler: &str, id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_request(handler, id).await
    }

    async fn save_saga_state(
        &self,
        saga: &str,
        instance: &str,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.inner.save_saga_state(saga, instance, state).await
    }

    async fn load_saga_state(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.load_saga_state(saga, instance).await
    }

    async fn delete_saga_state(&self, saga: &str, instance: &str) -> Result<bool, StoreError> {
        self.inner.delete_saga_state(saga, instance).await
    }

    async fn list_saga_instances(
        &self,
        saga: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut page = self.inner.list_saga_instances(saga, after, limit).await?;
        if let Bug::SagaInstancesUnsorted = self.bug {
            page.reverse();
        }
        Ok(page)
    }

    async fn schedule_timeout(&self, timeout: Timeout) -> Result<(), StoreError> {
        self.inner.schedule_timeout(timeout).await
    }

    async fn due_timeouts(
        &self,
        saga: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Timeout>, StoreError> {
        self.inner.due_timeouts(saga, now, limit).await
    }

    async fn next_timeout(&self, saga: &str) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_timeout(saga).await
    }

    async fn delete_timeout(&self, saga: &str, id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_timeout(saga, id).await
    }

    async fn cancel_timeouts(&self, saga: &str, instance: &str) -> Result<usize, StoreError> {
        self.inner.cancel_timeouts(saga, instance).await
    }
}

/// Runs `property` against a store with `bug` and checks that it fails.
fn catches<P, F>(bug: Bug, name: &str, property: P)
where
    P: FnOnce(Arc<dyn EventStore>) -> F,
    F: std::future::Future<Output = ()>,
{
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        conformance::run(
            name,
            || async move {
                Arc::new(Broken {
                    inner: InMemoryStore::new(),
                    bug,
                })
            },
            property,
        );
    }));
    assert!(
        outcome.is_err(),
        "the conformance property `{name}` passed a store with bug {bug:?}"
    );
}

#[test]
fn the_conformance_suite_catches_broken_stores() {
    use Bug::*;
    catches(
        IgnoresExpectedVersion,
        "expected_version_exact_holds_only_at_that_version",
        conformance::expected_version_exact_holds_only_at_that_version,
    );
    catches(
        IgnoresExpectedVersion,
        "concurrent_exact_appends_have_exactly_one_winner_per_version",
        conformance::concurrent_exact_appends_have_exactly_one_winner_per_version,
    );
    catches(
        ScansThroughHeadOnFullPages,
        "read_all_filters_by_type_and_keeps_global_order",
        conformance::read_all_filters_by_type_and_keeps_global_order,
    );
    catches(
        ScansThroughHeadOnFullPages,
        "subscription_delivers_catch_up_then_live_without_gap_or_duplicate",
        conformance::subscription_delivers_catch_up_then_live_without_gap_or_duplicate,
    );
    catches(
        BackwardIgnoresFrom,
        "read_stream_pages_backward",
        conformance::read_stream_pages_backward,
    );
    catches(
        ReencodesData,
        "event_data_and_metadata_round_trip_byte_exact",
        conformance::event_data_and_metadata_round_trip_byte_exact,
    );
    catches(
        KeepsFirstSnapshot,
        "snapshots_save_load_and_replace",
        conformance::snapshots_save_load_and_replace,
    );
    catches(
        EventsFromTheFirstDespiteTheSnapshot,
        "read_from_snapshot_is_the_snapshot_and_the_events_after_it",
        conformance::read_from_snapshot_is_the_snapshot_and_the_events_after_it,
    );
    catches(
        HeadAheadOfReads,
        "head_watch_follows_commits_and_is_never_ahead_of_reads",
        conformance::head_watch_follows_commits_and_is_never_ahead_of_reads,
    );
    catches(
        DeadLettersNeverReplaced,
        "dead_letters_save_load_list_and_delete",
        conformance::dead_letters_save_load_list_and_delete,
    );
    catches(
        DeadLettersNewestFirst,
        "dead_letters_save_load_list_and_delete",
        conformance::dead_letters_save_load_list_and_delete,
    );
    catches(
        SagaInstancesUnsorted,
        "saga_state_save_load_list_and_delete",
        conformance::saga_state_save_load_list_and_delete,
    );
}

#[test]
fn an_unchecked_command_marked_in_the_log_is_found_whole_and_swept() {
    use std::time::{Duration, UNIX_EPOCH};

    use crate::store::{CommandLookup, NewCommand};

    runtime().block_on(async {
        let store = InMemoryStore::new();
        let stream = stream_id("Account", "a-1");
        let command_id = Uuid::now_v7();
        // As the runtime writes them: the events name their command.
        let events: Vec<NewEvent> = (0..3)
            .map(|_| {
                let mut e = event("Deposited");
                e.metadata.command_id = Some(command_id);
                e
            })
            .collect();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event("Opened")])
            .await
            .unwrap();
        let command = NewCommand {
            command_id,
            idempotency_key: None,
            command: Cow::Borrowed("Deposit"),
            aggregate: Cow::Borrowed("Account"),
            deduplicate_since: None,
        };
        let appended = store
            .append_command(&stream, ExpectedVersion::Exact(1), events, command)
            .await
            .unwrap();
        let record = store
            .find_command(CommandLookup::Id(command_id), UNIX_EPOCH)
            .await
            .unwrap()
            .expect("found by its id");
        assert_eq!(
            (
                &*record.command,
                &*record.aggregate,
                &*record.aggregate_id,
                &*record.stream_id
            ),
            ("Deposit", "Account", "a-1", stream.as_str())
        );
        assert_eq!(
            (
                record.version,
                record.event_count,
                record.first_position,
                record.last_position
            ),
            (4, 3, appended.first_position, appended.last_position)
        );
        // A checked resend of it is a duplicate.
        let mut again = NewCommand {
            command_id,
            idempotency_key: None,
            command: Cow::Borrowed("Deposit"),
            aggregate: Cow::Borrowed("Account"),
            deduplicate_since: Some(UNIX_EPOCH),
        };
        let duplicate = store
            .append_command(
                &stream,
                ExpectedVersion::Any,
                vec![event("Deposited")],
                again.clone(),
            )
            .await;
        assert!(
            matches!(duplicate, Err(StoreError::DuplicateCommand { .. })),
            "{duplicate:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
        let swept = store
            .sweep_commands(SystemTime::now(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(swept, 1, "the mark is swept through its last event");
        assert_eq!(
            store
                .find_command(CommandLookup::Id(command_id), UNIX_EPOCH)
                .await
                .unwrap(),
            None
        );
        again.deduplicate_since = Some(UNIX_EPOCH);
        store
            .append_command(
                &stream,
                ExpectedVersion::Exact(4),
                vec![event("Deposited")],
                again,
            )
            .await
            .expect("swept: it runs again");
    });
}

/// `count` events that name command `id`, as the runtime writes them.
fn events_of(id: Uuid, count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|_| {
            let mut e = event("Deposited");
            e.metadata.command_id = Some(id);
            e
        })
        .collect()
}

/// A fresh command (no check) of type `Deposit` on `Account` with id `id`.
fn fresh(id: Uuid) -> crate::store::NewCommand {
    crate::store::NewCommand {
        command_id: id,
        idempotency_key: None,
        command: Cow::Borrowed("Deposit"),
        aggregate: Cow::Borrowed("Account"),
        deduplicate_since: None,
    }
}

/// A UUID v7 made at `millis` (Unix milliseconds), with `tail` in its random bits.
fn v7_at(millis: u64, tail: u64) -> Uuid {
    Uuid::from_u64_pair(
        (millis << 16) | (0x7 << 12) | (tail & 0xfff),
        (0b10 << 62) | (tail & 0x3fff_ffff_ffff_ffff),
    )
}

/// Fresh commands are found by their id wherever their events fall (across blocks and chunks
/// of the log, a command's events across a chunk boundary), whatever time their id carries
/// (an id made long before, or after, its commit), and only they: an unknown id of the same
/// millisecond, or events appended without a command, find nothing.
#[test]
fn fresh_commands_are_found_by_their_id_anywhere_in_the_log_whatever_their_ids_time() {
    use std::time::{Duration, UNIX_EPOCH};

    use crate::store::CommandLookup;

    runtime().block_on(async {
        let store = InMemoryStore::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut commands = Vec::new();
        let mut version = 0;
        // Enough commands to fill two chunks; every 7th has 3 events, so that some cross a
        // block or chunk boundary.
        for i in 0..(2 * LOG_CHUNK as u64 / 2 + 50) {
            let stream = stream_id("Account", &format!("a-{}", i % 13));
            let id = match i % 5 {
                // Made a day before (a context kept long before its dispatch)...
                0 => v7_at(now - 86_400_000, i),
                // ... or a second "ahead" (a clock that stepped back).
                1 => v7_at(now + 1_000, i),
                _ => crate::util::ids::new_v7(),
            };
            let count = if i % 7 == 0 { 3 } else { 1 };
            let appended = store
                .append_command(
                    &stream,
                    ExpectedVersion::Any,
                    events_of(id, count),
                    fresh(id),
                )
                .await
                .unwrap();
            version += count as u64;
            commands.push((id, stream, count as u64, appended));
        }
        assert_eq!(store.event_count(), version);
        // A plain append of events that name a command records no command.
        let plain = crate::util::ids::new_v7();
        store
            .append("Account-plain", ExpectedVersion::Any, events_of(plain, 2))
            .await
            .unwrap();
        for (id, stream, count, appended) in &commands {
            let record = store
                .find_command(CommandLookup::Id(*id), UNIX_EPOCH)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{id} must be found"));
            assert_eq!(
                (
                    record.command_id,
                    &*record.command,
                    &*record.aggregate,
                    &*record.stream_id,
                    record.version,
                    record.event_count,
                    record.first_position,
                    record.last_position,
                ),
                (
                    *id,
                    "Deposit",
                    "Account",
                    stream.as_str(),
                    appended.version,
                    *count,
                    appended.first_position,
                    appended.last_position,
                ),
            );
            assert_eq!(record.aggregate_id, &stream["Account-".len()..]);
        }
        for unknown in [
            v7_at(now - 86_400_000, 1 << 40),
            v7_at(now + 1_000, 1 << 40),
            crate::util::ids::new_v7(),
            plain,
            Uuid::from_u128(42),
        ] {
            assert_eq!(
                store
                    .find_command(CommandLookup::Id(unknown), UNIX_EPOCH)
                    .await
                    .unwrap(),
                None,
                "{unknown} was never recorded"
            );
        }
        // `since` still applies.
        let (id, ..) = &commands[2];
        assert_eq!(
            store
                .find_command(
                    CommandLookup::Id(*id),
                    SystemTime::now() + Duration::from_secs(1)
                )
                .await
                .unwrap(),
            None
        );
    });
}

/// Fresh commands the log cannot mark (names built at run time, an id that is not a UUID v7,
/// a last event that does not name the command) are kept whole: found, and swept.
#[test]
fn fresh_commands_that_cannot_be_marked_are_kept_whole() {
    use std::time::UNIX_EPOCH;

    use crate::store::CommandLookup;

    runtime().block_on(async {
        let store = InMemoryStore::new();
        let stream = stream_id("Account", "a-1");
        let v4 = Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef);
        let named = crate::util::ids::new_v7();
        let silent = crate::util::ids::new_v7();
        let mut built = fresh(named);
        built.command = Cow::Owned("Deposit".to_owned());
        for (command, events) in [
            (fresh(v4), events_of(v4, 1)),
            (built, events_of(named, 2)),
            (fresh(silent), vec![event("Deposited")]),
        ] {
            store
                .append_command(&stream, ExpectedVersion::Any, events, command)
                .await
                .unwrap();
        }
        for (id, version, count) in [(v4, 1, 1), (named, 3, 2), (silent, 4, 1)] {
            let record = store
                .find_command(CommandLookup::Id(id), UNIX_EPOCH)
                .await
                .unwrap()
                .expect("kept whole");
            assert_eq!(
                (&*record.command, record.version, record.event_count),
                ("Deposit", version, count)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(
            store
                .sweep_commands(SystemTime::now(), usize::MAX)
                .await
                .unwrap(),
            3
        );
        for id in [v4, named, silent] {
            assert_eq!(
                store
                    .find_command(CommandLookup::Id(id), UNIX_EPOCH)
                    .await
                    .unwrap(),
                None
            );
        }
    });
}

/// The sweep takes marked commands in log order, at most `limit` per call, counts each once
/// (not one replaced by a new run of its id after it expired), and leaves the newer ones
/// findable.
#[test]
fn marked_commands_are_swept_in_order_in_bounded_batches() {
    use std::time::{Duration, UNIX_EPOCH};

    use crate::store::CommandLookup;

    runtime().block_on(async {
        let store = InMemoryStore::new();
        let stream = stream_id("Account", "a-1");
        let mut old = Vec::new();
        for i in 0..(LOG_CHUNK + 10) {
            let id = crate::util::ids::new_v7();
            store
                .append_command(
                    &stream,
                    ExpectedVersion::Any,
                    events_of(id, 1 + i % 2),
                    fresh(id),
                )
                .await
                .unwrap();
            old.push(id);
        }
        // A resend of an expired one, checked: it replaces the marked entry.
        std::thread::sleep(Duration::from_millis(5));
        let cutoff = SystemTime::now();
        std::thread::sleep(Duration::from_millis(5));
        let mut resend = fresh(old[3]);
        resend.deduplicate_since = Some(cutoff);
        store
            .append_command(&stream, ExpectedVersion::Any, events_of(old[3], 1), resend)
            .await
            .expect("expired: it runs again");
        let new = crate::util::ids::new_v7();
        store
            .append_command(&stream, ExpectedVersion::Any, events_of(new, 1), fresh(new))
            .await
            .unwrap();
        // All but the replaced one, in batches of 1,000.
        let mut swept = Vec::new();
        loop {
            let n = store.sweep_commands(cutoff, 1_000).await.unwrap();
            swept.push(n);
            if n < 1_000 {
                break;
            }
            // Half way: the later ones are still there.
            let last = *old.last().unwrap();
            assert!(
                store
                    .find_command(CommandLookup::Id(last), UNIX_EPOCH)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        assert_eq!(swept.iter().sum::<usize>(), old.len() - 1, "{swept:?}");
        for id in old.iter().filter(|&&id| id != old[3]) {
            assert_eq!(
                store
                    .find_command(CommandLookup::Id(*id), UNIX_EPOCH)
                    .await
                    .unwrap(),
                None,
                "{id} was swept"
            );
        }
        let again = store
            .find_command(CommandLookup::Id(old[3]), UNIX_EPOCH)
            .await
            .unwrap()
            .expect("the resend's entry stays");
        assert!(again.recorded_at >= cutoff);
        assert!(
            store
                .find_command(CommandLookup::Id(new), UNIX_EPOCH)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.sweep_commands(cutoff, 1_000).await.unwrap(), 0);
        assert_eq!(
            store
                .sweep_commands(SystemTime::now() + Duration::from_secs(1), 1_000)
                .await
                .unwrap(),
            2,
            "the resend and the new one"
        );
    });
}

/// Ids of one millisecond whose 16 bits the marks keep are the same are told apart by the id
/// their last event carries; an id shared by a whole entry and a later marked command finds the
/// later one (the newest, as `find_command` promises).
#[test]
fn marked_lookups_tell_ids_apart_and_find_the_newest() {
    use std::time::UNIX_EPOCH;

    use crate::store::CommandLookup;

    runtime().block_on(async {
        let store = InMemoryStore::new();
        let stream = stream_id("Account", "a-1");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // Same millisecond, same low 64 bits, different `rand_a`.
        let low = (0b10 << 62) | 0x1234_5678_9abc;
        let twins = [1u64, 2].map(|a| Uuid::from_u64_pair((now << 16) | (0x7 << 12) | a, low));
        for (i, id) in twins.iter().enumerate() {
            store
                .append_command(
                    &stream,
                    ExpectedVersion::Any,
                    events_of(*id, i + 1),
                    fresh(*id),
                )
                .await
                .unwrap();
        }
        for (i, id) in twins.iter().enumerate() {
            let record = store
                .find_command(CommandLookup::Id(*id), UNIX_EPOCH)
                .await
                .unwrap()
                .expect("found");
            assert_eq!((record.command_id, record.event_count), (*id, i as u64 + 1));
        }

        // A whole entry with events, then a marked command of the same id.
        let shared = crate::util::ids::new_v7();
        let mut checked = fresh(shared);
        checked.deduplicate_since = Some(UNIX_EPOCH);
        store
            .append_command(&stream, ExpectedVersion::Any, events_of(shared, 1), checked)
            .await
            .unwrap();
        let later = store
            .append_command(
                &stream,
                ExpectedVersion::Any,
                events_of(shared, 2),
                fresh(shared),
            )
            .await
            .unwrap();
        let record = store
            .find_command(CommandLookup::Id(shared), UNIX_EPOCH)
            .await
            .unwrap()
            .expect("found");
        assert_eq!(
            (record.version, record.event_count, record.last_position),
            (later.version, 2, later.last_position),
            "the newest entry of the id"
        );

        // A whole entry without events, then a marked command of the same id.
        let shared = crate::util::ids::new_v7();
        let mut checked = fresh(shared);
        checked.deduplicate_since = Some(UNIX_EPOCH);
        store
            .append_command(&stream, ExpectedVersion::Any, Vec::new(), checked)
            .await
            .unwrap();
        let later = store
            .append_command(
                &stream,
                ExpectedVersion::Any,
                events_of(shared, 1),
                fresh(shared),
            )
            .await
            .unwrap();
        let record = store
            .find_command(CommandLookup::Id(shared), UNIX_EPOCH)
            .await
            .unwrap()
            .expect("found");
        assert_eq!(
            (record.version, record.event_count),
            (later.version, 1),
            "the newest entry of the id"
        );
    });
}
