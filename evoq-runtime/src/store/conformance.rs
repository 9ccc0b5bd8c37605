//! The conformance suite of the [`EventStore`] contract: one async function per property, each
//! taking a fresh store and panicking with a message that names the violated guarantee.
//!
//! Every backend runs the whole suite with one line, in a module of its own (the macro defines
//! one `#[test]` function per property, named after the property):
//!
//! ```
//! mod in_memory_store_conformance {
//!     evoq_runtime::store_conformance_tests!(|| async {
//!         std::sync::Arc::new(evoq_runtime::store::memory::InMemoryStore::new())
//!     });
//! }
//! # fn main() {}
//! ```
//!
//! Through the facade crate `evoq` (with its feature `conformance`, as a dev-dependency of the
//! backend's crate), the same line is `evoq::store_conformance_tests!(...)`, and the stores are
//! under `evoq::store`.
//!
//! The factory is called once per property, with a tokio runtime running, and must return a
//! future of a **fresh, empty** store: an `Arc<S>` for any `S: EventStore`, an
//! `Arc<dyn EventStore>`, or a `(store, guard)` pair whose guard (a temporary directory, a
//! database schema to drop, ...) lives until the property ends; `None` (of an `Option` of any
//! of these) skips the property, for a backend whose server does not answer. See
//! [`ConformanceStore`].
//!
//! Each property runs on its own multi-thread runtime with 2 workers and fails if it takes
//! longer than [`PROPERTY_TIMEOUT`] (a read or subscription waiting for an event that never
//! comes). Properties assume they have the store to themselves, from empty: their stream names
//! may repeat across properties, and [`versions_and_positions_start_at_one`] checks that the
//! first position is 1.
//!
//! Each property is also a public function, so a backend can run one alone (with [`run`]) or
//! call it from a test of its own.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::envelope::{Metadata, NewEvent, RecordedEvent, stream_id};
use crate::store::{
    AllPage, AppendNow, Appended, CommandLookup, CommandRecord, DeadLetter, Direction, EventFilter,
    EventStore, ExpectedVersion, FailureKind, HandlerRequest, NewCommand, RequestedAction,
    Snapshot, StoreError, Subscription, Timeout,
};
use crate::store::{AppendCondition, EventQuery};
use crate::store::{EventCounts, StreamInfo};

/// How long one property may run before it fails as hung.
pub const PROPERTY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a subscription may wait for an event the property knows is coming.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a conformance factory's future may produce: something that hands out the store under
/// test and is kept alive until the property ends.
pub trait ConformanceStore {
    /// The store under test; `None` skips the property (a backend whose server is not there:
    /// the factory says why).
    fn store(&self) -> Option<Arc<dyn EventStore>>;
}

impl<S: EventStore> ConformanceStore for Arc<S> {
    fn store(&self) -> Option<Arc<dyn EventStore>> {
        Some(Arc::clone(self) as Arc<dyn EventStore>)
    }
}

impl ConformanceStore for Arc<dyn EventStore> {
    fn store(&self) -> Option<Arc<dyn EventStore>> {
        Some(Arc::clone(self))
    }
}

/// A store with a guard (a temporary directory, a connection that drops a schema, ...) that
/// must outlive the property.
impl<S: ConformanceStore, G> ConformanceStore for (S, G) {
    fn store(&self) -> Option<Arc<dyn EventStore>> {
        self.0.store()
    }
}

/// No store: the property is skipped (the factory printed why).
impl<S: ConformanceStore> ConformanceStore for Option<S> {
    fn store(&self) -> Option<Arc<dyn EventStore>> {
        self.as_ref().and_then(ConformanceStore::store)
    }
}

/// Runs one property against a store made by `factory`, on a fresh multi-thread runtime with
/// 2 workers, failing if it takes longer than [`PROPERTY_TIMEOUT`]. Used by
/// [`store_conformance_tests!`](crate::store_conformance_tests); callable directly to run a
/// single property.
pub fn run<F, Fut, S, P, PFut>(property: &str, factory: F, body: P)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = S>,
    S: ConformanceStore,
    P: FnOnce(Arc<dyn EventStore>) -> PFut,
    PFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("store conformance `{property}`: cannot start tokio: {e}"));
    runtime.block_on(async {
        let made = factory().await;
        let Some(store) = made.store() else {
            return;
        };
        if tokio::time::timeout(PROPERTY_TIMEOUT, body(store))
            .await
            .is_err()
        {
            panic!(
                "store conformance `{property}` did not finish within {PROPERTY_TIMEOUT:?}: a read, \
                 append or subscription is waiting for something that never happens"
            );
        }
        drop(made);
    });
}

/// Defines one `#[test]` per property of the [`EventStore`] contract, each running against a
/// fresh store from `$factory` (a closure returning a future of a [`ConformanceStore`]). Invoke
/// it inside a module of its own; see the [`conformance`](crate::store::conformance) module.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__store_conformance_tests! {
            $factory;
            versions_and_positions_start_at_one,
            expected_version_any_always_holds,
            expected_version_no_stream_holds_only_for_an_empty_stream,
            expected_version_exact_holds_only_at_that_version,
            empty_append_checks_expected_version_and_appends_nothing,
            appends_are_atomic_and_take_consecutive_positions,
            concurrent_exact_appends_have_exactly_one_winner_per_version,
            concurrent_appenders_never_fork_a_stream,
            concurrent_appends_to_many_streams_get_dense_increasing_positions,
            read_all_during_concurrent_appends_misses_nothing,
            read_stream_pages_forward,
            read_stream_pages_backward,
            reading_an_unknown_stream_gives_nothing,
            read_all_filters_by_type_and_keeps_global_order,
            read_all_scanned_through_lets_a_reader_skip_non_matching_events,
            head_watch_follows_commits_and_is_never_ahead_of_reads,
            subscription_delivers_catch_up_then_live_without_gap_or_duplicate,
            subscription_starts_after_the_given_position,
            snapshots_save_load_and_replace,
            snapshots_are_isolated_per_stream,
            read_from_snapshot_is_the_snapshot_and_the_events_after_it,
            read_from_snapshot_now_agrees_with_read_from_snapshot,
            checkpoints_save_load_and_overwrite,
            checkpoints_are_listed_by_name,
            streams_are_listed_by_id_with_their_last_event,
            snapshots_are_listed_by_stream,
            events_are_counted_by_type_and_stream,
            dead_letters_are_counted_per_handler,
            dead_letters_save_load_list_and_delete,
            handler_requests_save_list_load_and_delete,
            handler_requests_are_counted_per_handler,
            event_data_and_metadata_round_trip_byte_exact,
            recorded_at_is_set_at_commit,
            same_id_under_different_aggregates_stays_separate,
            saga_state_save_load_list_and_delete,
            scheduling_a_timeout_twice_keeps_one_the_second,
            due_timeouts_are_the_sagas_earliest_first_within_the_limit,
            next_timeout_is_the_sagas_earliest_due_time,
            timeouts_are_deleted_once_and_cancelled_per_instance,
            timeout_payload_and_due_time_round_trip,
            timeouts_due_far_from_now_keep_their_order,
            command_log_records_a_command_with_its_events,
            a_duplicate_command_appends_nothing_and_returns_the_first_entry,
            a_command_without_events_is_recorded_when_checked,
            concurrent_runs_of_one_command_have_exactly_one_winner,
            append_command_now_agrees_with_append_command,
            expired_command_entries_are_not_found_and_are_replaced,
            sweeping_removes_old_command_entries_in_bounded_batches,
            a_lease_is_granted_and_freed,
            read_query_selects_by_types_and_tags_across_streams,
            read_query_pages_and_reports_how_far_it_scanned,
            append_if_appends_only_while_nothing_matching_appeared,
            append_if_records_its_command_and_refuses_a_duplicate_first,
            concurrent_conditional_appends_on_one_query_have_one_winner,
        }
    };
}

/// Implementation detail of [`store_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_tests {
    ($factory:expr; $($property:ident),* $(,)?) => {
        $(
            #[test]
            fn $property() {
                $crate::store::conformance::run(
                    ::core::stringify!($property),
                    $factory,
                    $crate::store::conformance::$property,
                );
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A new event of `event_type` with `data`, default metadata and schema version 1.
fn new_event(event_type: &str, data: Vec<u8>) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: Cow::Owned(event_type.to_owned()),
        schema_version: 1,
        data,
        metadata: Metadata::default(),
    }
}

/// A new event of `event_type` whose data is `{"n":n}`.
fn numbered(event_type: &str, n: u64) -> NewEvent {
    new_event(event_type, format!("{{\"n\":{n}}}").into_bytes())
}

/// `count` events of `event_type`, numbered from `from`.
fn batch(event_type: &str, from: u64, count: u64) -> Vec<NewEvent> {
    (from..from + count)
        .map(|n| numbered(event_type, n))
        .collect()
}

fn ids(events: &[NewEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

fn recorded_ids(events: &[Arc<RecordedEvent>]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

fn positions(events: &[Arc<RecordedEvent>]) -> Vec<u64> {
    events.iter().map(|e| e.global_position).collect()
}

fn versions(events: &[Arc<RecordedEvent>]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version).collect()
}

/// The value of a store call, or a panic naming the call.
#[track_caller]
fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// The current value of the store's head watch.
fn head_of(store: &dyn EventStore) -> u64 {
    *store.head().borrow()
}

/// The outcome of a spawned task, re-raising its panic.
async fn join<T>(handle: JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(e) => panic!("a conformance task was cancelled: {e}"),
        },
    }
}

/// Every event of `stream`, read forward in pages of 100.
async fn whole_stream(store: &dyn EventStore, stream: &str) -> Vec<Arc<RecordedEvent>> {
    let mut out: Vec<Arc<RecordedEvent>> = Vec::new();
    loop {
        let from = out.len() as u64 + 1;
        let page = ok(
            store
                .read_stream(stream, from, Direction::Forward, 100)
                .await,
            &format!("read_stream(`{stream}`, from {from}, Forward, 100)"),
        );
        let done = page.len() < 100;
        out.extend(page);
        if done {
            return out;
        }
    }
}

/// Every event matching `filter` with a position above `after`, up to the head at the call,
/// read in pages of 1,000; fails if a read makes no progress.
async fn read_all_events(
    store: &dyn EventStore,
    after: u64,
    filter: &EventFilter,
) -> Vec<Arc<RecordedEvent>> {
    let target = head_of(store);
    let mut out = Vec::new();
    let mut cursor = after;
    while cursor < target {
        let page = ok(
            store.read_all(cursor, 1_000, filter).await,
            &format!("read_all(after {cursor}, 1000, {filter:?})"),
        );
        assert!(
            page.scanned_through > cursor,
            "read_all(after {cursor}, 1000, {filter:?}) made no progress although the head is \
             {target}: scanned_through = {}; a reader would loop forever",
            page.scanned_through
        );
        out.extend(page.events);
        cursor = page.scanned_through;
    }
    out
}

/// Checks that `stream` holds versions 1..=n with strictly increasing positions, and
/// returns it.
async fn assert_stream_well_formed(
    store: &dyn EventStore,
    stream: &str,
) -> Vec<Arc<RecordedEvent>> {
    let events = whole_stream(store, stream).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.stream_version,
            i as u64 + 1,
            "stream `{stream}`: the event at index {i} has version {}; versions must be \
             contiguous from 1 (the stream was forked or has a gap)",
            event.stream_version
        );
        assert_eq!(
            event.stream_id(),
            stream,
            "read_stream(`{stream}`) returned an event of stream `{}`",
            event.stream_id
        );
        if i > 0 {
            assert!(
                event.global_position > events[i - 1].global_position,
                "stream `{stream}`: version {} has position {}, not above version {}'s {}; \
                 positions must increase with versions",
                event.stream_version,
                event.global_position,
                events[i - 1].stream_version,
                events[i - 1].global_position
            );
        }
    }
    let version = ok(
        store.stream_version(stream).await,
        &format!("stream_version(`{stream}`)"),
    );
    assert_eq!(
        version,
        events.len() as u64,
        "stream_version(`{stream}`) is {version} but the stream holds {} events",
        events.len()
    );
    events
}

/// What an append that fails must leave unchanged.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    head: u64,
    total: usize,
    streams: Vec<(String, u64, Vec<Uuid>)>,
}

async fn observe(store: &dyn EventStore, streams: &[&str]) -> Observed {
    let mut observed = Observed {
        head: head_of(store),
        total: read_all_events(store, 0, &EventFilter::All).await.len(),
        streams: Vec::new(),
    };
    for &stream in streams {
        let version = ok(
            store.stream_version(stream).await,
            &format!("stream_version(`{stream}`)"),
        );
        let ids = recorded_ids(&whole_stream(store, stream).await);
        observed.streams.push((stream.to_owned(), version, ids));
    }
    observed
}

#[track_caller]
fn assert_wrong_version(
    result: Result<Appended, StoreError>,
    stream: &str,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(StoreError::WrongExpectedVersion {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(
                (s.as_str(), e, a),
                (stream, expected, actual),
                "the WrongExpectedVersion error must carry the stream, the expectation and the \
                 stream's actual version"
            );
        }
        other => panic!(
            "append to `{stream}` expecting {expected} when the stream is at version {actual} \
             must fail with WrongExpectedVersion, got {other:?}"
        ),
    }
}

/// Checks one `read_all` page against the whole log of a quiet store.
fn check_page(
    log: &[Arc<RecordedEvent>],
    head: u64,
    after: u64,
    max_count: usize,
    filter: &EventFilter,
    page: &AllPage,
) {
    let call = format!("read_all(after {after}, max {max_count}, {filter:?}) with head {head}");
    let st = page.scanned_through;
    assert!(
        st >= after,
        "{call}: scanned_through {st} is below `after`; a reader would move backwards"
    );
    assert!(
        st <= head.max(after),
        "{call}: scanned_through {st} is beyond the head"
    );
    assert!(
        page.events.len() <= max_count,
        "{call}: returned {} events, more than max_count",
        page.events.len()
    );
    let expected: Vec<(u64, Uuid)> = log
        .iter()
        .filter(|e| e.global_position > after && e.global_position <= st)
        .filter(|e| filter.matches(&e.event_type))
        .map(|e| (e.global_position, e.event_id))
        .collect();
    let got: Vec<(u64, Uuid)> = page
        .events
        .iter()
        .map(|e| (e.global_position, e.event_id))
        .collect();
    assert!(
        got == expected,
        "{call}: the page (positions {:?}, scanned_through {st}) must hold exactly the matching \
         events in (after, scanned_through], in position order: positions {:?}",
        positions(&page.events),
        expected.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    if after < head && max_count > 0 {
        assert!(
            st > after,
            "{call}: scanned_through {st} did not advance; a reader would loop forever"
        );
    }
    if page.events.len() < max_count {
        assert!(
            st >= head,
            "{call}: the page is not full, so on a quiet store it must have scanned through the \
             head, but scanned_through is {st}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// A fresh store is empty at head 0; stream versions start at 1 and global positions start at
/// 1, across streams, in commit order.
pub async fn versions_and_positions_start_at_one(store: Arc<dyn EventStore>) {
    let store = &*store;
    assert_eq!(
        head_of(store),
        0,
        "a fresh store must be at head 0 (the conformance factory must return a fresh, empty \
         store)"
    );
    let a = stream_id("Account", "1");
    let b = stream_id("Account", "2");
    assert_eq!(ok(store.stream_version(&a).await, "stream_version"), 0);
    let page = ok(
        store.read_all(0, 10, &EventFilter::All).await,
        "read_all on an empty store",
    );
    assert!(page.events.is_empty(), "an empty store returned events");
    assert_eq!(
        page.scanned_through, 0,
        "read_all on an empty store must scan through 0"
    );

    let first = ok(
        store
            .append(&a, ExpectedVersion::NoStream, batch("Opened", 0, 3))
            .await,
        "first append",
    );
    assert_eq!(
        first,
        Appended {
            version: 3,
            first_position: 1,
            last_position: 3
        },
        "the first append of 3 events to an empty store must give versions 1..=3 and positions \
         1..=3"
    );
    let events = assert_stream_well_formed(store, &a).await;
    assert_eq!(versions(&events), [1, 2, 3]);
    assert_eq!(positions(&events), [1, 2, 3]);

    let second = ok(
        store
            .append(&b, ExpectedVersion::Any, batch("Opened", 3, 2))
            .await,
        "append to a second stream",
    );
    assert_eq!(
        second,
        Appended {
            version: 2,
            first_position: 4,
            last_position: 5
        },
        "a second stream starts at version 1 and continues the global positions"
    );
    let third = ok(
        store
            .append(&a, ExpectedVersion::Exact(3), batch("Deposited", 5, 1))
            .await,
        "append to the first stream again",
    );
    assert_eq!(
        third,
        Appended {
            version: 4,
            first_position: 6,
            last_position: 6
        }
    );
    let all = read_all_events(store, 0, &EventFilter::All).await;
    assert_eq!(positions(&all), [1, 2, 3, 4, 5, 6]);
    let streams: Vec<(&str, u64)> = all
        .iter()
        .map(|e| (e.stream_id(), e.stream_version))
        .collect();
    assert_eq!(
        streams,
        [
            (a.as_str(), 1),
            (a.as_str(), 2),
            (a.as_str(), 3),
            (b.as_str(), 1),
            (b.as_str(), 2),
            (a.as_str(), 4)
        ],
        "the global order must be the commit order"
    );
    assert_eq!(head_of(store), 6, "the head must be the last position");
}

/// `ExpectedVersion::Any` appends whatever the stream's version.
pub async fn expected_version_any_always_holds(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Any", "1");
    let first = ok(
        store
            .append(&s, ExpectedVersion::Any, batch("E", 0, 1))
            .await,
        "Any on an empty stream",
    );
    assert_eq!(first.version, 1);
    let second = ok(
        store
            .append(&s, ExpectedVersion::Any, batch("E", 1, 2))
            .await,
        "Any on a stream at version 1",
    );
    assert_eq!(second.version, 3);
    assert_eq!(
        second.first_position,
        first.last_position + 1,
        "consecutive appends by one writer must take consecutive positions on a quiet store"
    );
    assert_eq!(
        versions(&assert_stream_well_formed(store, &s).await),
        [1, 2, 3]
    );
}

/// `ExpectedVersion::NoStream` holds only for an empty stream (as does `Exact(0)`); a failed
/// append appends nothing anywhere and its error carries the stream, the expectation and the
/// actual version.
pub async fn expected_version_no_stream_holds_only_for_an_empty_stream(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("NoStream", "1");
    let other = stream_id("NoStream", "2");
    ok(
        store
            .append(&other, ExpectedVersion::Any, batch("E", 0, 2))
            .await,
        "append to another stream",
    );
    let created = ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("E", 0, 2))
            .await,
        "NoStream on an empty stream (another stream being non-empty)",
    );
    assert_eq!(created.version, 2);

    let before = observe(store, &[&s, &other]).await;
    let result = store
        .append(&s, ExpectedVersion::NoStream, batch("E", 2, 3))
        .await;
    assert_wrong_version(result, &s, ExpectedVersion::NoStream, 2);
    assert_eq!(
        observe(store, &[&s, &other]).await,
        before,
        "a failed NoStream append must append nothing"
    );

    let z = stream_id("NoStream", "3");
    let zero = ok(
        store
            .append(&z, ExpectedVersion::Exact(0), batch("E", 0, 1))
            .await,
        "Exact(0) on an empty stream",
    );
    assert_eq!(zero.version, 1);
    let before = observe(store, &[&s, &other, &z]).await;
    let result = store
        .append(&z, ExpectedVersion::NoStream, batch("E", 1, 1))
        .await;
    assert_wrong_version(result, &z, ExpectedVersion::NoStream, 1);
    assert_eq!(observe(store, &[&s, &other, &z]).await, before);
}

/// `ExpectedVersion::Exact(v)` holds only when the stream is at `v`: a stale or future version
/// fails with the actual version and appends nothing; a failed append never creates a stream.
pub async fn expected_version_exact_holds_only_at_that_version(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Exact", "1");
    let fresh = stream_id("Exact", "never");
    ok(
        store
            .append(&s, ExpectedVersion::Exact(0), batch("E", 0, 2))
            .await,
        "Exact(0) on an empty stream",
    );
    ok(
        store
            .append(&s, ExpectedVersion::Exact(2), batch("E", 2, 1))
            .await,
        "Exact(2) on a stream at 2",
    );
    for wrong in [0, 1, 2, 4, 100, u64::MAX] {
        let before = observe(store, &[&s]).await;
        let result = store
            .append(&s, ExpectedVersion::Exact(wrong), batch("E", 3, 2))
            .await;
        assert_wrong_version(result, &s, ExpectedVersion::Exact(wrong), 3);
        assert_eq!(
            observe(store, &[&s]).await,
            before,
            "a failed Exact({wrong}) append must append nothing"
        );
    }
    let before = observe(store, &[&s, &fresh]).await;
    let result = store
        .append(&fresh, ExpectedVersion::Exact(1), batch("E", 0, 1))
        .await;
    assert_wrong_version(result, &fresh, ExpectedVersion::Exact(1), 0);
    assert_eq!(
        observe(store, &[&s, &fresh]).await,
        before,
        "a failed append to a missing stream must not create it"
    );
    let last = ok(
        store
            .append(&s, ExpectedVersion::Exact(3), batch("E", 3, 1))
            .await,
        "Exact(3) after the failures",
    );
    assert_eq!(last.version, 4);
    assert_stream_well_formed(store, &s).await;
}

/// An append of no events checks the expected version, appends nothing, does not create the
/// stream or move the head, and returns the current version with positions 0.
pub async fn empty_append_checks_expected_version_and_appends_nothing(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Empty", "1");
    let nothing = |version| Appended {
        version,
        first_position: 0,
        last_position: 0,
    };
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
    ] {
        let before = observe(store, &[&s]).await;
        let appended = ok(
            store.append(&s, expected, Vec::new()).await,
            &format!("empty append expecting {expected} to an empty stream"),
        );
        assert_eq!(appended, nothing(0));
        assert_eq!(
            observe(store, &[&s]).await,
            before,
            "an empty append must change nothing"
        );
    }
    let result = store
        .append(&s, ExpectedVersion::Exact(1), Vec::new())
        .await;
    assert_wrong_version(result, &s, ExpectedVersion::Exact(1), 0);

    ok(
        store
            .append(&s, ExpectedVersion::Any, batch("E", 0, 2))
            .await,
        "append of 2 events",
    );
    let before = observe(store, &[&s]).await;
    for expected in [ExpectedVersion::Any, ExpectedVersion::Exact(2)] {
        let appended = ok(
            store.append(&s, expected, Vec::new()).await,
            &format!("empty append expecting {expected} to a stream at 2"),
        );
        assert_eq!(appended, nothing(2));
    }
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(3),
    ] {
        let result = store.append(&s, expected, Vec::new()).await;
        assert_wrong_version(result, &s, expected, 2);
    }
    assert_eq!(
        observe(store, &[&s]).await,
        before,
        "an empty append must change nothing"
    );
}

/// An append is all or nothing: its events take consecutive versions and consecutive global
/// positions, and a concurrent reader never sees part of one (neither in the stream nor in the
/// global order).
pub async fn appends_are_atomic_and_take_consecutive_positions(store: Arc<dyn EventStore>) {
    const BATCHES: u64 = 150;
    let a = stream_id("Atomic", "five");
    let b = stream_id("Atomic", "three");
    let h0 = head_of(&*store);
    let mut writers = Vec::new();
    for (stream, size) in [(a.clone(), 5u64), (b.clone(), 3u64)] {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for k in 0..BATCHES {
                let events = batch("Atomic", k * size, size);
                let event_ids = ids(&events);
                let appended = ok(
                    store.append(&stream, ExpectedVersion::Any, events).await,
                    &format!("append of {size} events to `{stream}`"),
                );
                assert_eq!(
                    appended.last_position - appended.first_position + 1,
                    size,
                    "an append of {size} events to `{stream}` took positions {}..={}; they \
                     must be consecutive",
                    appended.first_position,
                    appended.last_position
                );
                assert_eq!(appended.version, (k + 1) * size);
                out.push((event_ids, appended));
                tokio::task::yield_now().await;
            }
            out
        }));
    }
    let reader = {
        let store = Arc::clone(&store);
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            let mut cursor = h0;
            let mut counts: HashMap<String, u64> = HashMap::new();
            while cursor < h0 + BATCHES * 8 {
                for (stream, size) in [(&a, 5u64), (&b, 3u64)] {
                    let version = ok(store.stream_version(stream).await, "stream_version");
                    assert_eq!(
                        version % size,
                        0,
                        "stream `{stream}` was seen at version {version}, inside an append of \
                         {size} events"
                    );
                    let newest = ok(
                        store
                            .read_stream(stream, u64::MAX, Direction::Backward, 1)
                            .await,
                        "read_stream backward",
                    );
                    if let Some(event) = newest.first() {
                        assert_eq!(
                            event.stream_version % size,
                            0,
                            "the newest visible event of `{stream}` is version {}, inside an \
                             append of {size} events",
                            event.stream_version
                        );
                    }
                }
                let page = ok(
                    store.read_all(cursor, usize::MAX, &EventFilter::All).await,
                    "read_all",
                );
                for event in &page.events {
                    *counts.entry(event.stream_id().to_owned()).or_default() += 1;
                }
                for (stream, size) in [(&a, 5u64), (&b, 3u64)] {
                    let seen = counts.get(stream.as_str()).copied().unwrap_or(0);
                    assert_eq!(
                        seen % size,
                        0,
                        "read_all up to {} showed {seen} events of `{stream}`, part of an \
                         append of {size}",
                        page.scanned_through
                    );
                }
                cursor = cursor.max(page.scanned_through);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut appended = Vec::new();
    for writer in writers {
        appended.extend(join(writer).await);
    }
    join(reader).await;
    let all = read_all_events(&*store, h0, &EventFilter::All).await;
    let by_id: HashMap<Uuid, &Arc<RecordedEvent>> = all.iter().map(|e| (e.event_id, e)).collect();
    for (event_ids, result) in &appended {
        for (i, id) in (0u64..).zip(event_ids) {
            let event = by_id
                .get(id)
                .unwrap_or_else(|| panic!("an appended event ({id}) is missing from read_all"));
            assert_eq!(
                (event.global_position, event.stream_version),
                (
                    result.first_position + i,
                    result.version - event_ids.len() as u64 + 1 + i
                ),
                "an event's stored position and version must be those its append reported"
            );
        }
    }
    assert_stream_well_formed(&*store, &a).await;
    assert_stream_well_formed(&*store, &b).await;
}

/// Many tasks append with `Exact(v)` (or `NoStream` for v = 0) to one stream at the same time:
/// for each version exactly one wins, every loser gets `WrongExpectedVersion` with the new
/// version, and the stream holds exactly the winners, in order.
pub async fn concurrent_exact_appends_have_exactly_one_winner_per_version(
    store: Arc<dyn EventStore>,
) {
    const TASKS: usize = 8;
    const ROUNDS: u64 = 40;
    let s = stream_id("Race", "1");
    let mut winners = Vec::new();
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut racers = Vec::new();
        for task in 0..TASKS {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            let s = s.clone();
            racers.push(tokio::spawn(async move {
                let expected = if round == 0 && task % 2 == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(round)
                };
                let event = numbered("Raced", round * 100 + task as u64);
                let id = event.event_id;
                barrier.wait().await;
                (id, expected, store.append(&s, expected, vec![event]).await)
            }));
        }
        let mut won = Vec::new();
        for racer in racers {
            let (id, expected, result) = join(racer).await;
            match result {
                Ok(appended) => {
                    assert_eq!(
                        appended.version,
                        round + 1,
                        "an append expecting version {round} of `{s}` succeeded with version {}: \
                         the expectation was not enforced",
                        appended.version
                    );
                    won.push(id);
                }
                Err(StoreError::WrongExpectedVersion {
                    stream,
                    expected: e,
                    actual,
                }) => {
                    assert_eq!(
                        (stream.as_str(), e, actual),
                        (s.as_str(), expected, round + 1),
                        "a loser of the race for version {} must see the stream at the winner's \
                         version",
                        round + 1
                    );
                }
                Err(e) => panic!("an append racing for version {} failed: {e}", round + 1),
            }
        }
        assert_eq!(
            won.len(),
            1,
            "{TASKS} concurrent appends expecting version {round} of `{s}`: {} succeeded, \
             exactly one must",
            won.len()
        );
        winners.extend(won);
    }
    let events = assert_stream_well_formed(&*store, &s).await;
    assert_eq!(
        recorded_ids(&events),
        winners,
        "the stream must hold exactly the winning events, in the order they won"
    );
}

/// Many tasks append batches to one stream with read-version-then-`Exact` and retry on
/// conflict: every successful batch lands whole at the versions it was told, no failed
/// attempt leaves a trace, and the versions stay contiguous (no fork).
pub async fn concurrent_appenders_never_fork_a_stream(store: Arc<dyn EventStore>) {
    const TASKS: u64 = 8;
    const APPENDS: u64 = 15;
    let s = stream_id("Contended", "1");
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut lost = Vec::new();
            for k in 0..APPENDS {
                let size = (task + k) % 3 + 1;
                loop {
                    let version = ok(store.stream_version(&s).await, "stream_version");
                    let events = batch("Contended", (task * APPENDS + k) * 10, size);
                    let event_ids = ids(&events);
                    match store
                        .append(&s, ExpectedVersion::Exact(version), events)
                        .await
                    {
                        Ok(appended) => {
                            assert_eq!(
                                appended.version,
                                version + size,
                                "an append of {size} events expecting version {version} \
                                 reported version {}",
                                appended.version
                            );
                            won.push((event_ids, appended));
                            break;
                        }
                        Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                            assert!(
                                actual > version,
                                "`{s}` was at {version}, then an append expecting it reported \
                                 the stream at {actual}: a stream never goes back"
                            );
                            lost.extend(event_ids);
                            tokio::task::yield_now().await;
                        }
                        Err(e) => panic!("append to `{s}` failed: {e}"),
                    }
                }
            }
            (won, lost)
        }));
    }
    let mut won = Vec::new();
    let mut lost = HashSet::new();
    for task in tasks {
        let (w, l) = join(task).await;
        won.extend(w);
        lost.extend(l);
    }
    let events = assert_stream_well_formed(&*store, &s).await;
    let total: u64 = won.iter().map(|(ids, _)| ids.len() as u64).sum();
    assert_eq!(
        events.len() as u64,
        total,
        "`{s}` holds {} events but the successful appends wrote {total}",
        events.len()
    );
    for (event_ids, appended) in &won {
        let first_version = appended.version - event_ids.len() as u64;
        let stored: Vec<Uuid> = events[first_version as usize..appended.version as usize]
            .iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(
            &stored,
            event_ids,
            "a successful append must occupy exactly versions {}..={} of `{s}`",
            first_version + 1,
            appended.version
        );
    }
    for event in &events {
        assert!(
            !lost.contains(&event.event_id),
            "an event of a failed append (version {} of `{s}`) was stored",
            event.stream_version
        );
    }
}

/// Many tasks append to many streams at once: the global positions the appends report and
/// store are unique, dense and increasing in each writer's commit order, and the global order
/// holds exactly the appended events.
pub async fn concurrent_appends_to_many_streams_get_dense_increasing_positions(
    store: Arc<dyn EventStore>,
) {
    const TASKS: u64 = 8;
    const APPENDS: u64 = 60;
    let h0 = head_of(&*store);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut previous = 0;
            for k in 0..APPENDS {
                let stream = stream_id("Dense", &format!("{task}-{}", k % 4));
                let size = k % 3 + 1;
                let events = batch("Dense", k * 10, size);
                let event_ids = ids(&events);
                let appended = ok(
                    store.append(&stream, ExpectedVersion::Any, events).await,
                    &format!("append to `{stream}`"),
                );
                assert_eq!(
                    appended.last_position - appended.first_position + 1,
                    size,
                    "an append of {size} events must take {size} consecutive positions"
                );
                assert!(
                    appended.first_position > previous,
                    "a writer's append got position {} after its previous append got {previous}: \
                     positions must follow commit order",
                    appended.first_position
                );
                previous = appended.last_position;
                out.push((stream, event_ids, appended));
            }
            out
        }));
    }
    let mut appends = Vec::new();
    for task in tasks {
        appends.extend(join(task).await);
    }
    let total: u64 = appends.iter().map(|(_, ids, _)| ids.len() as u64).sum();
    appends.sort_by_key(|(_, _, appended)| appended.first_position);
    let mut next = h0 + 1;
    for (stream, _, appended) in &appends {
        assert_eq!(
            appended.first_position, next,
            "an append to `{stream}` got positions {}..={} where {next} was next: positions \
             must be unique and dense",
            appended.first_position, appended.last_position
        );
        next = appended.last_position + 1;
    }
    assert_eq!(
        head_of(&*store),
        h0 + total,
        "after {total} appended events the head must be {}",
        h0 + total
    );
    let all = read_all_events(&*store, h0, &EventFilter::All).await;
    assert_eq!(
        positions(&all),
        (h0 + 1..=h0 + total).collect::<Vec<_>>(),
        "read_all must return positions {}..={} with no gap or duplicate",
        h0 + 1,
        h0 + total
    );
    for (stream, event_ids, appended) in &appends {
        for (i, id) in (0u64..).zip(event_ids) {
            let event = &all[(appended.first_position + i - h0 - 1) as usize];
            assert_eq!(
                (&event.event_id, event.stream_id()),
                (id, stream.as_str()),
                "position {} must hold the event its append reported",
                appended.first_position + i
            );
        }
    }
    for task in 0..TASKS {
        for k in 0..4 {
            assert_stream_well_formed(&*store, &stream_id("Dense", &format!("{task}-{k}"))).await;
        }
    }
}

/// Readers paging through the global order while many tasks append (unfiltered with pages of
/// 7, filtered with pages of 5) see every event exactly once, in position order: a reader that
/// has seen position `p` never misses an event committed below `p`.
pub async fn read_all_during_concurrent_appends_misses_nothing(store: Arc<dyn EventStore>) {
    const TASKS: u64 = 4;
    const APPENDS: u64 = 150;
    let h0 = head_of(&*store);
    let types = ["Seen", "Other"];
    let total: u64 = TASKS * (0..APPENDS).map(|k| k % 2 + 1).sum::<u64>();
    let barrier = Arc::new(Barrier::new(TASKS as usize + 2));
    let mut writers = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        writers.push(tokio::spawn(async move {
            barrier.wait().await;
            for k in 0..APPENDS {
                let stream = stream_id("Concurrent", &task.to_string());
                let events = (0..k % 2 + 1)
                    .map(|i| numbered(types[((k + i) % 2) as usize], k))
                    .collect();
                ok(
                    store.append(&stream, ExpectedVersion::Any, events).await,
                    "append",
                );
                tokio::task::yield_now().await;
            }
        }));
    }
    let reader = |filter: EventFilter, page_size: usize| {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tokio::spawn(async move {
            barrier.wait().await;
            let mut seen: Vec<Arc<RecordedEvent>> = Vec::new();
            let mut cursor = h0;
            loop {
                let page = ok(
                    store.read_all(cursor, page_size, &filter).await,
                    "read_all during appends",
                );
                assert!(
                    page.scanned_through >= cursor,
                    "read_all(after {cursor}) scanned through {}: a reader must never move back",
                    page.scanned_through
                );
                for event in &page.events {
                    if let Some(last) = seen.last() {
                        assert!(
                            event.global_position > last.global_position,
                            "a concurrent reader got position {} after {}: read_all must never \
                             repeat or go back",
                            event.global_position,
                            last.global_position
                        );
                    }
                }
                seen.extend(page.events);
                cursor = page.scanned_through;
                if cursor >= h0 + total {
                    return (filter, seen);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let readers = [
        reader(EventFilter::All, 7),
        reader(EventFilter::types(["Seen"]), 5),
    ];
    for writer in writers {
        join(writer).await;
    }
    for reader in readers {
        let (filter, seen) = join(reader).await;
        let expected = read_all_events(&*store, h0, &filter).await;
        assert_eq!(
            positions(&seen),
            positions(&expected),
            "a reader paging with {filter:?} during concurrent appends must see exactly the \
             events a later full read returns"
        );
    }
}

/// `read_stream` forward: from a version, inclusive, in pages of 1, 7, the stream's length and
/// more (even `usize::MAX`); from the middle; from 0 (= from the first event); past the end
/// (nothing); with `max_count` 0 (nothing).
pub async fn read_stream_pages_forward(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Paged", "1");
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("E", 0, 13))
            .await,
        "append",
    );
    ok(
        store
            .append(&s, ExpectedVersion::Exact(13), batch("E", 13, 7))
            .await,
        "append",
    );
    let read = |from: u64, max: usize| {
        let s = s.clone();
        async move {
            let page = ok(
                store.read_stream(&s, from, Direction::Forward, max).await,
                &format!("read_stream(from {from}, Forward, max {max})"),
            );
            versions(&page)
        }
    };
    for size in [1usize, 7, 20, 21, 1_000, usize::MAX] {
        let mut all = Vec::new();
        let mut from = 1;
        loop {
            let page = read(from, size).await;
            let expected: Vec<u64> = (from..=20).take(size).collect();
            assert_eq!(
                page, expected,
                "forward from version {from} with pages of {size} over 20 events"
            );
            all.extend(page.iter().copied());
            match page.last() {
                Some(&newest) if page.len() == size => from = newest + 1,
                _ => break,
            }
        }
        assert_eq!(all, (1..=20).collect::<Vec<_>>(), "pages of {size}");
    }
    assert_eq!(read(8, 5).await, [8, 9, 10, 11, 12], "from the middle");
    assert_eq!(
        read(0, 3).await,
        [1, 2, 3],
        "from version 0 reads from the first"
    );
    assert_eq!(read(20, 10).await, [20], "from the last version");
    assert!(read(21, 10).await.is_empty(), "from past the end");
    assert!(read(u64::MAX, 10).await.is_empty(), "from u64::MAX forward");
    assert!(read(1, 0).await.is_empty(), "max_count 0");
    let events = assert_stream_well_formed(store, &s).await;
    assert_eq!(events.len(), 20);
}

/// `read_stream` backward: from a version, inclusive, newest first, in pages of 1, 7, the
/// stream's length and more; from `u64::MAX` or past the end (= from the newest); from the
/// middle; from 0 (nothing); with `max_count` 0 (nothing).
pub async fn read_stream_pages_backward(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Paged", "2");
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("E", 0, 20))
            .await,
        "append",
    );
    let read = |from: u64, max: usize| {
        let s = s.clone();
        async move {
            let page = ok(
                store.read_stream(&s, from, Direction::Backward, max).await,
                &format!("read_stream(from {from}, Backward, max {max})"),
            );
            versions(&page)
        }
    };
    for size in [1usize, 7, 20, 21, 1_000, usize::MAX] {
        let mut all = Vec::new();
        let mut from = u64::MAX;
        loop {
            let page = read(from, size).await;
            let top = from.min(20);
            let expected: Vec<u64> = (1..=top).rev().take(size).collect();
            assert_eq!(
                page, expected,
                "backward from {from} with pages of {size} over 20 events"
            );
            all.extend(page.iter().copied());
            match page.last() {
                Some(&oldest) if page.len() == size && oldest > 1 => from = oldest - 1,
                _ => break,
            }
        }
        assert_eq!(all, (1..=20).rev().collect::<Vec<_>>(), "pages of {size}");
    }
    assert_eq!(read(8, 5).await, [8, 7, 6, 5, 4], "from the middle");
    assert_eq!(read(3, 7).await, [3, 2, 1], "to the first event");
    assert_eq!(
        read(25, 2).await,
        [20, 19],
        "from past the end = from the newest"
    );
    assert_eq!(read(20, 1).await, [20], "from the newest version");
    assert!(read(0, 10).await.is_empty(), "backward from version 0");
    assert!(read(u64::MAX, 0).await.is_empty(), "max_count 0");
}

/// A stream that was never written is at version 0, reads empty both ways and has no
/// snapshot.
pub async fn reading_an_unknown_stream_gives_nothing(store: Arc<dyn EventStore>) {
    let store = &*store;
    ok(
        store
            .append(
                &stream_id("Known", "1"),
                ExpectedVersion::Any,
                batch("E", 0, 3),
            )
            .await,
        "append to another stream",
    );
    let s = stream_id("Unknown", "1");
    assert_eq!(ok(store.stream_version(&s).await, "stream_version"), 0);
    for (from, direction) in [
        (0, Direction::Forward),
        (1, Direction::Forward),
        (u64::MAX, Direction::Backward),
        (1, Direction::Backward),
    ] {
        let page = ok(
            store.read_stream(&s, from, direction, 100).await,
            "read_stream of an unknown stream",
        );
        assert!(
            page.is_empty(),
            "reading an unknown stream {direction:?} from {from} returned events"
        );
    }
    assert!(
        ok(store.load_snapshot(&s).await, "load_snapshot").is_none(),
        "an unknown stream has no snapshot"
    );
}

/// `read_all` with a type filter across streams returns exactly the matching events in global
/// order, for every start, page size and filter (including no type at all and `usize::MAX`);
/// a page holds every matching event in `(after, scanned_through]`; a page that is not full has
/// scanned through the head; and paging with any size yields the same sequence.
pub async fn read_all_filters_by_type_and_keeps_global_order(store: Arc<dyn EventStore>) {
    let store = &*store;
    let types = ["TypeA", "TypeB", "TypeC"];
    let h0 = head_of(store);
    for k in 0..30u64 {
        let stream = stream_id("Filtered", &(k % 3).to_string());
        let events = (0..k % 3 + 1)
            .map(|i| numbered(types[((k * 7 + i) % 3) as usize], k))
            .collect();
        ok(
            store.append(&stream, ExpectedVersion::Any, events).await,
            "append",
        );
    }
    let head = head_of(store);
    let log = read_all_events(store, 0, &EventFilter::All).await;
    assert_eq!(log.len() as u64, head, "read_all must return every event");
    let filters = [
        EventFilter::All,
        EventFilter::types(["TypeA"]),
        EventFilter::types(["TypeA", "TypeC"]),
        EventFilter::types(["NoSuchType"]),
        EventFilter::types(Vec::<String>::new()),
    ];
    let mid = h0 + (head - h0) / 2;
    for filter in &filters {
        for after in [0, h0, h0 + 1, mid, head - 1, head, head + 5] {
            for max_count in [0usize, 1, 3, 7, 1_000, usize::MAX] {
                let page = ok(
                    store.read_all(after, max_count, filter).await,
                    &format!("read_all(after {after}, max {max_count}, {filter:?})"),
                );
                check_page(&log, head, after, max_count, filter, &page);
            }
        }
        let expected: Vec<Uuid> = log
            .iter()
            .filter(|e| e.global_position > h0 && filter.matches(&e.event_type))
            .map(|e| e.event_id)
            .collect();
        for size in [1usize, 3, 7, usize::MAX] {
            let mut cursor = h0;
            let mut got = Vec::new();
            while cursor < head {
                let page = ok(store.read_all(cursor, size, filter).await, "read_all");
                assert!(page.scanned_through > cursor, "read_all made no progress");
                got.extend(page.events.iter().map(|e| e.event_id));
                cursor = page.scanned_through;
            }
            assert_eq!(
                got, expected,
                "paging read_all with {filter:?} in pages of {size} must return the matching \
                 events in global order"
            );
        }
    }
}

/// A filtered reader advances past events it does not want: `scanned_through` moves to the
/// head even when nothing (or little) matches, so it never rescans them and never waits on
/// them.
pub async fn read_all_scanned_through_lets_a_reader_skip_non_matching_events(
    store: Arc<dyn EventStore>,
) {
    let store = &*store;
    let s = stream_id("Noise", "1");
    let h0 = head_of(store);
    ok(
        store
            .append(&s, ExpectedVersion::Any, batch("Noise", 0, 50))
            .await,
        "append",
    );
    let signal = ok(
        store
            .append(&s, ExpectedVersion::Any, batch("Signal", 50, 1))
            .await,
        "append",
    );
    ok(
        store
            .append(&s, ExpectedVersion::Any, batch("Noise", 51, 50))
            .await,
        "append",
    );
    let head = head_of(store);
    let filter = EventFilter::types(["Signal"]);

    let page = ok(store.read_all(h0, 1, &filter).await, "read_all");
    assert_eq!(
        positions(&page.events),
        [signal.first_position],
        "the one matching event"
    );
    assert_eq!(
        page.scanned_through, signal.first_position,
        "a full page scans through its last event"
    );
    let page = ok(
        store.read_all(page.scanned_through, 1, &filter).await,
        "read_all",
    );
    assert!(page.events.is_empty());
    assert_eq!(
        page.scanned_through, head,
        "with nothing more matching, the reader must be moved to the head"
    );

    let nothing = EventFilter::types(["Absent"]);
    let mut cursor = h0;
    let mut calls = 0;
    while cursor < head {
        let page = ok(store.read_all(cursor, 10, &nothing).await, "read_all");
        assert!(page.events.is_empty());
        assert!(
            page.scanned_through > cursor,
            "a reader of a type with no events must advance, but read_all(after {cursor}) \
             scanned through {}",
            page.scanned_through
        );
        cursor = page.scanned_through;
        calls += 1;
    }
    assert_eq!(
        (cursor, calls),
        (head, 1),
        "on a quiet store one read must carry a reader of an absent type to the head"
    );
}

/// The head watch starts at the last position, changes after every commit (and not on a failed
/// append), and is never ahead of what `read_all` returns: whenever it shows `h`, the event at
/// `h` can be read.
pub async fn head_watch_follows_commits_and_is_never_ahead_of_reads(store: Arc<dyn EventStore>) {
    let s = stream_id("Head", "1");
    let mut rx = store.head();
    let h0 = *rx.borrow_and_update();
    let appended = ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("E", 0, 2))
            .await,
        "append",
    );
    if tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .is_err()
    {
        panic!("the head watch did not change within 5 s of a commit");
    }
    assert_eq!(
        *rx.borrow_and_update(),
        appended.last_position,
        "after a commit the head must be its last position"
    );
    assert_eq!(
        *store.head().borrow(),
        appended.last_position,
        "a new head receiver must start at the head"
    );
    assert_eq!(appended.last_position, h0 + 2);

    let failed = store
        .append(&s, ExpectedVersion::NoStream, batch("E", 2, 1))
        .await;
    assert!(failed.is_err());
    assert_eq!(
        *store.head().borrow(),
        appended.last_position,
        "a failed append must not move the head"
    );

    const APPENDS: u64 = 300;
    let start = appended.last_position;
    let target = start + APPENDS * 2;
    let watcher = {
        let store = Arc::clone(&store);
        // Taken before the appends start, so the watcher sees them however late it runs.
        let mut rx = store.head();
        let mut last = *rx.borrow_and_update();
        tokio::spawn(async move {
            let mut observed = 0u64;
            while last < target {
                if tokio::time::timeout(DELIVERY_TIMEOUT, rx.changed())
                    .await
                    .is_err()
                {
                    panic!("the head watch stopped at {last} while appends were committed");
                }
                let h = *rx.borrow_and_update();
                assert!(h >= last, "the head went back from {last} to {h}");
                if h > last {
                    let page = ok(
                        store.read_all(h - 1, 1, &EventFilter::All).await,
                        "read_all at the head",
                    );
                    assert_eq!(
                        positions(&page.events),
                        [h],
                        "the head watch showed {h} but read_all could not return the event at \
                         {h}: the head must never be ahead of reads"
                    );
                    observed += 1;
                }
                last = h;
            }
            observed
        })
    };
    let other = stream_id("Head", "2");
    for k in 0..APPENDS {
        let stream = if k % 2 == 0 { &s } else { &other };
        ok(
            store
                .append(stream, ExpectedVersion::Any, batch("E", k, 2))
                .await,
            "append",
        );
        if k % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let observed = join(watcher).await;
    assert!(observed > 0, "the watcher saw no head change");
    assert_eq!(*store.head().borrow(), target);
}

/// A [`Subscription`] filtered on 2 of 3 types delivers catch-up then live with no gap and no
/// duplicate while other tasks append during the catch-up: 2,000 stored events, 2,000
/// appended concurrently; both `next` (small pages) and `next_batch` (default pages) deliver
/// exactly the matching events in global order, and nothing more.
pub async fn subscription_delivers_catch_up_then_live_without_gap_or_duplicate(
    store: Arc<dyn EventStore>,
) {
    const PRE: u64 = 2_000;
    const LIVE_TASKS: u64 = 4;
    const LIVE_PER_TASK: u64 = 500;
    fn kind(n: u64) -> &'static str {
        ["SubA", "SubB", "SubC"][(n % 3) as usize]
    }
    let filter = EventFilter::types(["SubA", "SubB"]);
    let h0 = head_of(&*store);

    // The (position, id) of every matching event, from what the appends report.
    fn matching(events: &[NewEvent], appended: Appended) -> Vec<(u64, Uuid)> {
        (appended.first_position..)
            .zip(events)
            .filter(|(_, e)| e.event_type != "SubC")
            .map(|(p, e)| (p, e.event_id))
            .collect()
    }
    let mut expected = Vec::new();
    let mut n = 0;
    while n < PRE {
        let size = (1 + n % 4).min(PRE - n);
        let events: Vec<NewEvent> = (n..n + size).map(|i| numbered(kind(i), i)).collect();
        let stream = stream_id("SubPre", &(n % 10).to_string());
        let appended = ok(
            store
                .append(&stream, ExpectedVersion::Any, events.clone())
                .await,
            "append",
        );
        expected.extend(matching(&events, appended));
        n += size;
    }
    let count = |n: u64| (0..n).filter(|i| i % 3 != 2).count();
    let expected_count = count(PRE) + LIVE_TASKS as usize * count(LIVE_PER_TASK);

    let barrier = Arc::new(Barrier::new(LIVE_TASKS as usize + 2));
    let mut writers = Vec::new();
    for task in 0..LIVE_TASKS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        writers.push(tokio::spawn(async move {
            barrier.wait().await;
            let stream = stream_id("SubLive", &task.to_string());
            let mut out = Vec::new();
            let mut j = 0;
            while j < LIVE_PER_TASK {
                let size = (1 + (j + task) % 3).min(LIVE_PER_TASK - j);
                let events: Vec<NewEvent> = (j..j + size).map(|i| numbered(kind(i), i)).collect();
                let appended = ok(
                    store
                        .append(&stream, ExpectedVersion::Any, events.clone())
                        .await,
                    "live append",
                );
                out.extend(matching(&events, appended));
                j += size;
                tokio::task::yield_now().await;
            }
            out
        }));
    }
    // The head once every writer is done (u64::MAX until then): a subscriber that has scanned
    // through it without delivering every event skipped some.
    let final_head = Arc::new(AtomicU64::new(u64::MAX));
    let consume = |mut sub: Subscription, how: &'static str, batched: bool| {
        let barrier = Arc::clone(&barrier);
        let final_head = Arc::clone(&final_head);
        tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let mut got = Vec::with_capacity(expected_count);
            while got.len() < expected_count {
                let next = async {
                    if batched {
                        ok(sub.next_batch().await, "Subscription::next_batch")
                    } else {
                        vec![ok(sub.next().await, "Subscription::next")]
                    }
                };
                match tokio::time::timeout(Duration::from_millis(100), next).await {
                    Ok(events) => got.extend(events),
                    Err(_) => {
                        assert!(
                            sub.has_buffered()
                                || sub.scanned_through() < final_head.load(Ordering::SeqCst),
                            "the subscription ({how}) scanned through the head ({}) but delivered \
                             only {} of {expected_count} events: it skipped some",
                            sub.scanned_through(),
                            got.len()
                        );
                        assert!(
                            started.elapsed() < DELIVERY_TIMEOUT,
                            "the subscription ({how}) stalled after {} of {expected_count} events",
                            got.len()
                        );
                    }
                }
            }
            (got, sub)
        })
    };
    let by_next = consume(
        Subscription::new(Arc::clone(&store), filter.clone(), h0).with_page_size(64),
        "next, pages of 64",
        false,
    );
    let by_batch = consume(
        Subscription::new(Arc::clone(&store), filter.clone(), h0),
        "next_batch",
        true,
    );
    for writer in writers {
        expected.extend(join(writer).await);
    }
    final_head.store(head_of(&*store), Ordering::SeqCst);
    expected.sort_unstable();
    assert_eq!(expected.len(), expected_count);
    for (how, task) in [("next, pages of 64", by_next), ("next_batch", by_batch)] {
        let (got, mut sub) = join(task).await;
        if let Some(i) =
            (0..expected.len()).find(|&i| (got[i].global_position, got[i].event_id) != expected[i])
        {
            panic!(
                "the subscription ({how}) delivered position {} as its event #{i}, where \
                 position {} was due: a gap or a duplicate between catch-up and live",
                got[i].global_position, expected[i].0
            );
        }
        assert_eq!(
            got.len(),
            expected.len(),
            "the subscription ({how}) delivered too many"
        );
        for event in &got {
            assert!(
                filter.matches(&event.event_type),
                "the subscription delivered a {}",
                event.event_type
            );
        }
        assert!(
            !sub.has_buffered(),
            "the subscription ({how}) holds events beyond those appended"
        );
        if let Ok(extra) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
            panic!("the subscription ({how}) delivered an extra event: {extra:?}");
        }
    }
}

/// A [`Subscription`] from position `p` delivers only events after `p`, then new ones live;
/// from the head it delivers only new events.
pub async fn subscription_starts_after_the_given_position(store: Arc<dyn EventStore>) {
    let s = stream_id("SubFrom", "1");
    let first = ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("E", 0, 10))
            .await,
        "append",
    );
    let after = first.first_position + 3;
    let mut from_middle = Subscription::new(Arc::clone(&store), EventFilter::All, after);
    let mut from_head =
        Subscription::new(Arc::clone(&store), EventFilter::All, first.last_position);
    let mut got = Vec::new();
    for _ in 0..6 {
        let event = tokio::time::timeout(DELIVERY_TIMEOUT, from_middle.next())
            .await
            .unwrap_or_else(|_| panic!("the subscription stalled in catch-up"));
        got.push(ok(event, "Subscription::next").global_position);
    }
    assert_eq!(
        got,
        (after + 1..=first.last_position).collect::<Vec<_>>(),
        "a subscription after position {after} must start at {}",
        after + 1
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(20), from_head.next())
            .await
            .is_err(),
        "a subscription from the head must deliver nothing until a new commit"
    );
    let live = ok(
        store
            .append(&s, ExpectedVersion::Exact(10), batch("E", 10, 1))
            .await,
        "append",
    );
    for (name, sub) in [("middle", &mut from_middle), ("head", &mut from_head)] {
        let event = tokio::time::timeout(DELIVERY_TIMEOUT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("the subscription from the {name} missed a live event"));
        assert_eq!(
            ok(event, "Subscription::next").global_position,
            live.first_position,
            "the subscription from the {name} must deliver the live event next"
        );
    }
}

fn assert_snapshot_eq(got: Option<Snapshot>, want: &Snapshot, context: &str) {
    let got = got.unwrap_or_else(|| panic!("{context}: no snapshot of `{}`", want.stream_id));
    assert!(
        (&got.stream_id, got.version, &got.data) == (&want.stream_id, want.version, &want.data),
        "{context}: loaded the snapshot of `{}` at version {} ({} bytes), but the one saved is of \
         `{}` at version {} ({} bytes); it must come back byte for byte",
        got.stream_id,
        got.version,
        got.data.len(),
        want.stream_id,
        want.version,
        want.data.len()
    );
    let drift = match got.taken_at.duration_since(want.taken_at) {
        Ok(later) => later,
        Err(earlier) => earlier.duration(),
    };
    assert!(
        drift <= Duration::from_millis(1),
        "{context}: taken_at came back {drift:?} away from the saved time"
    );
}

/// A saved snapshot loads back byte-exact (any bytes, also empty); a later save replaces it;
/// an unknown stream has none.
pub async fn snapshots_save_load_and_replace(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Snap", "1");
    assert!(ok(store.load_snapshot(&s).await, "load_snapshot").is_none());
    let first = Snapshot {
        stream_id: s.clone(),
        version: 10,
        data: (0..=255u8).chain((0..=255u8).rev()).collect(),
        taken_at: SystemTime::now(),
    };
    ok(store.save_snapshot(first.clone()).await, "save_snapshot");
    assert_snapshot_eq(
        ok(store.load_snapshot(&s).await, "load_snapshot"),
        &first,
        "after one save",
    );
    let second = Snapshot {
        stream_id: s.clone(),
        version: 20,
        data: br#"{"balance": 20, "open": true}"#.to_vec(),
        taken_at: SystemTime::now(),
    };
    ok(store.save_snapshot(second.clone()).await, "save_snapshot");
    assert_snapshot_eq(
        ok(store.load_snapshot(&s).await, "load_snapshot"),
        &second,
        "a later snapshot must replace the older one",
    );
    let empty = Snapshot {
        stream_id: s.clone(),
        version: 30,
        data: Vec::new(),
        taken_at: SystemTime::now(),
    };
    ok(store.save_snapshot(empty.clone()).await, "save_snapshot");
    assert_snapshot_eq(
        ok(store.load_snapshot(&s).await, "load_snapshot"),
        &empty,
        "an empty snapshot",
    );
}

/// Snapshots of different streams (including the same id under two aggregates) are
/// independent, and saving one touches no event.
pub async fn snapshots_are_isolated_per_stream(store: Arc<dyn EventStore>) {
    let store = &*store;
    let h0 = head_of(store);
    let streams = [
        stream_id("Account", "7"),
        stream_id("Order", "7"),
        stream_id("Account", "70"),
    ];
    let snapshots: Vec<Snapshot> = (0u64..)
        .zip(&streams)
        .map(|(i, s)| Snapshot {
            stream_id: s.clone(),
            version: i + 1,
            data: format!("state of {s}").into_bytes(),
            taken_at: SystemTime::now(),
        })
        .collect();
    for snapshot in &snapshots {
        ok(store.save_snapshot(snapshot.clone()).await, "save_snapshot");
    }
    for snapshot in &snapshots {
        assert_snapshot_eq(
            ok(
                store.load_snapshot(&snapshot.stream_id).await,
                "load_snapshot",
            ),
            snapshot,
            "each stream keeps its own snapshot",
        );
    }
    assert!(
        ok(
            store.load_snapshot(&stream_id("Account", "77")).await,
            "load_snapshot"
        )
        .is_none(),
        "a stream without a snapshot must have none"
    );
    assert_eq!(head_of(store), h0, "saving snapshots must append no event");
    for s in &streams {
        assert_eq!(
            ok(store.stream_version(s).await, "stream_version"),
            0,
            "saving a snapshot must not create a stream"
        );
    }
}

/// `read_from_snapshot` is the latest snapshot and the stream's events after it, at most
/// `max_count`, as `load_snapshot` then `read_stream` give them: nothing for a stream without
/// events or snapshot, the events from version 1 without a snapshot, none past a snapshot at or
/// beyond the stream's end, and the snapshot alone for `max_count == 0`.
pub async fn read_from_snapshot_is_the_snapshot_and_the_events_after_it(
    store: Arc<dyn EventStore>,
) {
    let store = &*store;
    let s = stream_id("Rebuilt", "1");
    let call = |max_count: usize| format!("read_from_snapshot(`{s}`, {max_count})");
    let empty = ok(store.read_from_snapshot(&s, 100).await, &call(100));
    assert!(
        empty.snapshot.is_none() && empty.events.is_empty(),
        "a stream with neither events nor a snapshot must give neither: {empty:?}"
    );

    ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("E", 1, 5))
            .await,
        "append",
    );
    let all = ok(store.read_from_snapshot(&s, 100).await, &call(100));
    assert!(all.snapshot.is_none(), "no snapshot was saved: {all:?}");
    assert_eq!(
        versions(&all.events),
        [1, 2, 3, 4, 5],
        "without a snapshot, the events from version 1"
    );
    assert_eq!(
        recorded_ids(&all.events),
        recorded_ids(&whole_stream(store, &s).await),
        "the events read_stream returns"
    );
    let page = ok(store.read_from_snapshot(&s, 2).await, &call(2));
    assert_eq!(versions(&page.events), [1, 2], "at most `max_count` events");

    let snapshot = Snapshot {
        stream_id: s.clone(),
        version: 3,
        data: br#"{"balance":3}"#.to_vec(),
        taken_at: SystemTime::now(),
    };
    ok(store.save_snapshot(snapshot.clone()).await, "save_snapshot");
    let after = ok(store.read_from_snapshot(&s, 100).await, &call(100));
    assert_snapshot_eq(after.snapshot, &snapshot, "read_from_snapshot");
    assert_eq!(
        versions(&after.events),
        [4, 5],
        "the events after the snapshot's version, and only those"
    );
    let one = ok(store.read_from_snapshot(&s, 1).await, &call(1));
    assert_eq!(
        versions(&one.events),
        [4],
        "at most `max_count` after the snapshot"
    );
    let none = ok(store.read_from_snapshot(&s, 0).await, &call(0));
    assert_snapshot_eq(
        none.snapshot,
        &snapshot,
        "read_from_snapshot with max_count 0",
    );
    assert!(none.events.is_empty(), "`max_count == 0` reads no event");
    let unbounded = ok(
        store.read_from_snapshot(&s, usize::MAX).await,
        &call(usize::MAX),
    );
    assert_eq!(
        versions(&unbounded.events),
        [4, 5],
        "any `max_count` is valid"
    );

    let ahead = Snapshot {
        version: 9,
        ..snapshot.clone()
    };
    ok(store.save_snapshot(ahead.clone()).await, "save_snapshot");
    let past = ok(store.read_from_snapshot(&s, 100).await, &call(100));
    assert_snapshot_eq(past.snapshot, &ahead, "a snapshot past the stream's end");
    assert!(
        past.events.is_empty(),
        "no event follows a snapshot past the stream's end: {:?}",
        versions(&past.events)
    );

    let other = stream_id("Rebuilt", "2");
    let isolated = ok(
        store.read_from_snapshot(&other, 100).await,
        "read_from_snapshot",
    );
    assert!(
        isolated.snapshot.is_none() && isolated.events.is_empty(),
        "another stream's snapshot and events are not this one's: {isolated:?}"
    );
}

/// [`EventStore::read_from_snapshot_now`] agrees with [`EventStore::read_from_snapshot`]: a
/// store that answers during the call answers what `read_from_snapshot` does, for a stream
/// that does not exist, one without a snapshot, one with a snapshot, and any `max_count`; a
/// store that does not answers `None` every time.
pub async fn read_from_snapshot_now_agrees_with_read_from_snapshot(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Rebuilt", "now");
    let streams = [s.as_str(), "Rebuilt-other"];
    let answers = store.read_from_snapshot_now(&s, 100).is_some();
    read_now_and_later(store, streams, answers, "no stream").await;
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("E", 1, 5))
            .await,
        "append",
    );
    read_now_and_later(store, streams, answers, "no snapshot").await;
    let snapshot = Snapshot {
        stream_id: s.clone(),
        version: 3,
        data: br#"{"balance":3}"#.to_vec(),
        taken_at: SystemTime::now(),
    };
    ok(store.save_snapshot(snapshot).await, "save_snapshot");
    read_now_and_later(store, streams, answers, "a snapshot").await;
}

/// What a read from a snapshot says: the snapshot's version and data, and the events' ids and
/// versions.
type ReadShape = (Option<(u64, Vec<u8>)>, Vec<Uuid>, Vec<u64>);

fn read_shape(read: crate::store::SnapshotAndEvents) -> ReadShape {
    (
        read.snapshot
            .map(|snapshot| (snapshot.version, snapshot.data)),
        recorded_ids(&read.events),
        versions(&read.events),
    )
}

/// Reads `streams` from their snapshots at once and through the future, with several
/// `max_count`s, and checks that both ways agree (or that the store never answers at once,
/// when `answers` is false).
async fn read_now_and_later(
    store: &dyn EventStore,
    streams: [&str; 2],
    answers: bool,
    stage: &str,
) {
    for stream in streams {
        for max_count in [0, 1, 2, 100, usize::MAX] {
            let Some(now) = store.read_from_snapshot_now(stream, max_count) else {
                assert!(
                    !answers,
                    "{stage}: a store that answered at once once answers later"
                );
                continue;
            };
            assert!(
                answers,
                "{stage}: a store that answered later answers at once"
            );
            let now = ok(now, "read_from_snapshot_now");
            let later = ok(
                store.read_from_snapshot(stream, max_count).await,
                "read_from_snapshot",
            );
            assert_eq!(
                read_shape(now),
                read_shape(later),
                "{stage}: read_from_snapshot_now(`{stream}`, {max_count}) disagrees with \
                 read_from_snapshot"
            );
        }
    }
}

/// A checkpoint saved under a name loads back; saving again overwrites it (even with a lower
/// position, as a rebuild does); names are independent; an unknown name has none.
pub async fn checkpoints_save_load_and_overwrite(store: Arc<dyn EventStore>) {
    let store = &*store;
    let load = |name: &'static str| async move {
        ok(
            store.load_checkpoint(name).await,
            &format!("load_checkpoint(`{name}`)"),
        )
    };
    assert_eq!(
        load("notifier").await,
        None,
        "an unknown name has no checkpoint"
    );
    ok(
        store.save_checkpoint("notifier", 5).await,
        "save_checkpoint",
    );
    assert_eq!(load("notifier").await, Some(5));
    assert_eq!(load("other").await, None, "names are independent");
    ok(
        store.save_checkpoint("notifier", 42).await,
        "save_checkpoint",
    );
    assert_eq!(load("notifier").await, Some(42), "a save overwrites");
    ok(
        store.save_checkpoint("notifier", 3).await,
        "save_checkpoint",
    );
    assert_eq!(
        load("notifier").await,
        Some(3),
        "a lower position overwrites too (rebuilds reset checkpoints)"
    );
    ok(
        store.save_checkpoint("notifier", 0).await,
        "save_checkpoint",
    );
    assert_eq!(
        load("notifier").await,
        Some(0),
        "0 is a saved checkpoint, not none"
    );
    ok(
        store
            .save_checkpoint("projection/ü-名前 'x\"", 1 << 40)
            .await,
        "save_checkpoint with an unusual name",
    );
    assert_eq!(load("projection/ü-名前 'x\"").await, Some(1 << 40));
    assert_eq!(load("notifier").await, Some(0));
    assert_eq!(load("").await, None);
}

/// `count_requests` gives each handler that has requests waiting with how many, sorted by
/// name in byte order: a replaced request counts once, a failed or deleted one no more, and a
/// handler whose last waiting request is gone is not listed.
pub async fn handler_requests_are_counted_per_handler(store: Arc<dyn EventStore>) {
    let store = &*store;
    let counts = || async { ok(store.count_requests().await, "count_requests") };
    assert!(counts().await.is_empty(), "a fresh store has no requests");
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let request = |id: Uuid, handler: &str| HandlerRequest {
        id,
        handler: handler.to_owned(),
        action: RequestedAction::Rebuild,
        requested_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        failed: None,
    };
    for (index, handler) in [
        (0, "notifier"),
        (1, "notifier"),
        (2, "Audit"),
        (0, "notifier"),
        (3, "balanses"),
    ] {
        ok(
            store.save_request(request(ids[index], handler)).await,
            "save_request",
        );
    }
    assert_eq!(
        counts().await,
        [
            ("Audit".to_owned(), 1),
            ("balanses".to_owned(), 1),
            ("notifier".to_owned(), 2)
        ],
        "count_requests must count each handler's requests once (a save with the same id \
         replaces), sorted by name in byte order"
    );
    ok(
        store
            .save_request(HandlerRequest {
                failed: Some("not a projection".to_owned()),
                ..request(ids[2], "Audit")
            })
            .await,
        "save_request (failed)",
    );
    ok(
        store.delete_request("notifier", ids[1]).await,
        "delete_request",
    );
    assert_eq!(
        counts().await,
        [("balanses".to_owned(), 1), ("notifier".to_owned(), 1)],
        "a failed or deleted request is no longer counted, and a handler without waiting \
         requests is not listed"
    );
}

/// Requests for handlers' tasks: saved, listed oldest first (by id) per handler with a limit,
/// loaded by id, replaced by a save with the same id, deleted (a delete says whether there was
/// one); the action, its event id and a failure's reason round-trip; a failed request is no
/// longer listed but still loads until deleted; none of it appends an event.
pub async fn handler_requests_save_list_load_and_delete(store: Arc<dyn EventStore>) {
    let store = &*store;
    let h0 = head_of(store);
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs);
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let request = |id: Uuid, handler: &str, action: RequestedAction, secs: u64| HandlerRequest {
        id,
        handler: handler.to_owned(),
        action,
        requested_at: at(secs),
        failed: None,
    };
    let event_id = Uuid::now_v7();
    let retry = RequestedAction::RetryDeadLetter { event_id };
    assert!(
        ok(store.list_requests("notifier", 10).await, "list_requests").is_empty(),
        "no requests yet"
    );
    // Saved out of order: listed by id.
    for (index, handler, action) in [
        (2, "notifier", RequestedAction::Rebuild),
        (0, "notifier", retry),
        (3, "audit", retry),
        (1, "notifier", RequestedAction::Rebuild),
    ] {
        ok(
            store
                .save_request(request(ids[index], handler, action, index as u64))
                .await,
            "save_request",
        );
    }
    let listed = ok(store.list_requests("notifier", 10).await, "list_requests");
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[0], ids[1], ids[2]],
        "a handler's requests list oldest first (by id)"
    );
    assert_eq!(
        listed[0],
        request(ids[0], "notifier", retry, 0),
        "handler, action, event id and time round-trip"
    );
    assert_eq!(
        ok(store.list_requests("notifier", 2).await, "list_requests").len(),
        2
    );
    assert!(ok(store.list_requests("notifier", 0).await, "list_requests").is_empty());
    assert_eq!(
        ok(store.list_requests("audit", 10).await, "list_requests"),
        [request(ids[3], "audit", retry, 3)],
        "handlers are independent"
    );
    assert_eq!(
        ok(store.load_request("notifier", ids[2]).await, "load_request"),
        Some(request(ids[2], "notifier", RequestedAction::Rebuild, 2))
    );
    assert_eq!(
        ok(store.load_request("audit", ids[2]).await, "load_request"),
        None,
        "a request is found under its own handler only"
    );
    ok(
        store
            .save_request(request(ids[2], "notifier", retry, 9))
            .await,
        "save_request again",
    );
    assert_eq!(
        ok(store.load_request("notifier", ids[2]).await, "load_request"),
        Some(request(ids[2], "notifier", retry, 9)),
        "a save with the same id replaces the request"
    );
    assert!(ok(
        store.delete_request("notifier", ids[0]).await,
        "delete_request"
    ));
    assert!(
        !ok(
            store.delete_request("notifier", ids[0]).await,
            "delete_request again"
        ),
        "a second delete finds nothing"
    );
    assert_eq!(
        ok(store.list_requests("notifier", 10).await, "list_requests")
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [ids[1], ids[2]]
    );
    // Marked failed by the node that could not carry it out: kept for whoever asked, with
    // the reason, but no longer listed to be carried out.
    let failed = HandlerRequest {
        failed: Some("`notifier` is not a projection: 'it' cannot be rebuilt ü".to_owned()),
        ..request(ids[1], "notifier", RequestedAction::Rebuild, 1)
    };
    ok(
        store.save_request(failed.clone()).await,
        "save_request failed",
    );
    assert_eq!(
        ok(store.list_requests("notifier", 10).await, "list_requests")
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [ids[2]],
        "a failed request is not listed to be carried out"
    );
    assert_eq!(
        ok(store.load_request("notifier", ids[1]).await, "load_request"),
        Some(failed),
        "a failed request loads with its reason until it is deleted"
    );
    assert!(ok(
        store.delete_request("notifier", ids[1]).await,
        "delete_request failed"
    ));
    assert_eq!(head_of(store), h0, "requests append no event");
}

/// `list_checkpoints` lists every saved checkpoint once, with its latest position, sorted by
/// name in byte order (not a locale's order); an empty store has none.
pub async fn checkpoints_are_listed_by_name(store: Arc<dyn EventStore>) {
    let store = &*store;
    assert_eq!(
        ok(store.list_checkpoints().await, "list_checkpoints"),
        Vec::<(String, u64)>::new(),
        "a fresh store has no checkpoints"
    );
    for (name, position) in [("b", 2), ("a", 1), ("B", 3), ("ä", 4), ("a", 7), ("a b", 0)] {
        ok(
            store.save_checkpoint(name, position).await,
            "save_checkpoint",
        );
    }
    let listed = ok(store.list_checkpoints().await, "list_checkpoints");
    let expected: Vec<(String, u64)> = [("B", 3), ("a", 7), ("a b", 0), ("b", 2), ("ä", 4)]
        .into_iter()
        .map(|(name, position)| (name.to_owned(), position))
        .collect();
    assert_eq!(
        listed, expected,
        "list_checkpoints must give each name once, with its last saved position, sorted by name \
         in byte order"
    );
}

/// `list_streams` lists the streams holding events, sorted by id in byte order, each with its
/// version, its last event's position and commit time; it filters by a prefix of the id and
/// pages after an id, within the limit.
pub async fn streams_are_listed_by_id_with_their_last_event(store: Arc<dyn EventStore>) {
    let store = &*store;
    let list = |prefix: &'static str, after: Option<&'static str>, limit: usize| async move {
        ok(
            store.list_streams(prefix, after, limit).await,
            &format!("list_streams(prefix `{prefix}`, after {after:?}, limit {limit})"),
        )
    };
    let ids = |streams: &[StreamInfo]| -> Vec<String> {
        streams.iter().map(|s| s.stream_id.clone()).collect()
    };
    assert!(
        list("", None, 10).await.is_empty(),
        "a fresh store has no streams"
    );
    // Byte order: upper case before lower case, `a-10` before `a-2`, `ä` after `b`.
    let appends: [(&str, u64); 7] = [
        ("b-1", 1),
        ("a-2", 2),
        ("ä-1", 1),
        ("a-10", 3),
        ("A-1", 1),
        ("a-2", 1),
        ("a-", 1),
    ];
    for (stream, count) in appends {
        ok(
            store
                .append(stream, ExpectedVersion::Any, batch("Listed", 0, count))
                .await,
            "append",
        );
    }
    // A snapshot alone makes no stream.
    ok(
        store
            .save_snapshot(Snapshot {
                stream_id: "a-3".into(),
                version: 1,
                data: b"{}".to_vec(),
                taken_at: SystemTime::now(),
            })
            .await,
        "save_snapshot",
    );
    let all = list("", None, usize::MAX).await;
    assert_eq!(
        ids(&all),
        ["A-1", "a-", "a-10", "a-2", "b-1", "ä-1"],
        "list_streams must list every stream holding events once, sorted by id in byte order"
    );
    for info in &all {
        let last = whole_stream(store, &info.stream_id)
            .await
            .pop()
            .expect("a listed stream has events");
        assert_eq!(
            (info.version, info.last_position, info.last_recorded_at),
            (last.stream_version, last.global_position, last.recorded_at),
            "list_streams must give stream `{}` the version, position and commit time of its \
             last event",
            info.stream_id
        );
    }
    assert_eq!(
        ids(&list("a-", None, 10).await),
        ["a-", "a-10", "a-2"],
        "a prefix keeps the ids starting with it (the prefix itself included)"
    );
    assert_eq!(ids(&list("a-1", None, 10).await), ["a-10"]);
    assert_eq!(ids(&list("ä", None, 10).await), ["ä-1"]);
    assert!(
        list("c", None, 10).await.is_empty(),
        "no id starts with `c`"
    );
    assert!(
        list("a-%", None, 10).await.is_empty(),
        "a prefix is text, not a pattern"
    );
    assert_eq!(
        ids(&list("", None, 2).await),
        ["A-1", "a-"],
        "the limit keeps the first ids"
    );
    assert_eq!(
        ids(&list("", Some("a-"), 2).await),
        ["a-10", "a-2"],
        "a page starts after the given id"
    );
    assert_eq!(
        ids(&list("a-", Some("a-10"), 10).await),
        ["a-2"],
        "paging and a prefix combine"
    );
    assert_eq!(
        ids(&list("", Some("a-0"), 1).await),
        ["a-10"],
        "`after` need not be a stream's id"
    );
    assert!(list("", Some("ä-1"), 10).await.is_empty());
    assert!(list("", None, 0).await.is_empty(), "limit 0 lists nothing");
}

/// `list_snapshots` lists each stream's latest snapshot as (stream, version), sorted by
/// stream id in byte order, paged after an id, within the limit.
pub async fn snapshots_are_listed_by_stream(store: Arc<dyn EventStore>) {
    let store = &*store;
    assert!(
        ok(store.list_snapshots(None, 10).await, "list_snapshots").is_empty(),
        "a fresh store has no snapshots"
    );
    for (stream, version) in [("b-1", 4), ("a-1", 2), ("B-1", 9), ("a-1", 3)] {
        ok(
            store
                .save_snapshot(Snapshot {
                    stream_id: stream.into(),
                    version,
                    data: vec![1, 2, 3],
                    taken_at: SystemTime::now(),
                })
                .await,
            "save_snapshot",
        );
    }
    let owned = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
        pairs.iter().map(|(s, v)| ((*s).to_owned(), *v)).collect()
    };
    assert_eq!(
        ok(
            store.list_snapshots(None, usize::MAX).await,
            "list_snapshots"
        ),
        owned(&[("B-1", 9), ("a-1", 3), ("b-1", 4)]),
        "list_snapshots must give each stream's latest snapshot once, sorted by stream id in \
         byte order"
    );
    assert_eq!(
        ok(store.list_snapshots(Some("B-1"), 1).await, "list_snapshots"),
        owned(&[("a-1", 3)]),
        "a page starts after the given id, within the limit"
    );
    assert!(ok(store.list_snapshots(None, 0).await, "list_snapshots").is_empty());
}

/// `count_events` counts every event, the streams holding events and the events of each type
/// (sorted by type name in byte order), and agrees with the head of a quiet store.
pub async fn events_are_counted_by_type_and_stream(store: Arc<dyn EventStore>) {
    let store = &*store;
    assert_eq!(
        ok(store.count_events().await, "count_events"),
        EventCounts::default(),
        "a fresh store has no events"
    );
    for (stream, event_type, count) in [
        ("a-1", "Opened", 1),
        ("a-1", "deposited", 3),
        ("a-2", "Opened", 1),
        ("b-1", "Closed", 2),
    ] {
        ok(
            store
                .append(stream, ExpectedVersion::Any, batch(event_type, 0, count))
                .await,
            "append",
        );
    }
    let counts = ok(store.count_events().await, "count_events");
    assert_eq!(
        counts,
        EventCounts {
            events: 7,
            streams: 3,
            by_type: vec![
                ("Closed".into(), 2),
                ("Opened".into(), 2),
                ("deposited".into(), 3)
            ],
        },
        "count_events must count the events, the streams and each type (sorted by name in byte \
         order)"
    );
    assert_eq!(counts.events, head_of(store));
}

/// `count_dead_letters` gives each handler that has dead letters with how many, sorted by
/// name in byte order: a replaced entry counts once, a deleted one no more, and a handler
/// whose last entry is deleted is not listed.
pub async fn dead_letters_are_counted_per_handler(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Counted", "1");
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("Failing", 0, 3))
            .await,
        "append",
    );
    let stored = whole_stream(store, &s).await;
    let letter = |handler: &str, index: usize| DeadLetter {
        handler: handler.to_owned(),
        event: Arc::clone(&stored[index]),
        error: "failed".into(),
        kind: FailureKind::HandlerError,
        reason: "gave up".into(),
        raw_row: None,
        attempts: 1,
        first_failed_at: SystemTime::now(),
        last_failed_at: SystemTime::now(),
    };
    let counts = || async { ok(store.count_dead_letters().await, "count_dead_letters") };
    assert!(
        counts().await.is_empty(),
        "a fresh store has no dead letters"
    );
    for (handler, index) in [
        ("notifier", 0),
        ("notifier", 1),
        ("Audit", 2),
        ("notifier", 0),
    ] {
        ok(
            store.save_dead_letter(letter(handler, index)).await,
            "save_dead_letter",
        );
    }
    assert_eq!(
        counts().await,
        [("Audit".to_owned(), 1), ("notifier".to_owned(), 2)],
        "count_dead_letters must count each handler's entries once (a save for the same event \
         replaces), sorted by name in byte order"
    );
    ok(
        store.delete_dead_letter("Audit", stored[2].event_id).await,
        "delete_dead_letter",
    );
    ok(
        store
            .delete_dead_letter("notifier", stored[1].event_id)
            .await,
        "delete_dead_letter",
    );
    assert_eq!(
        counts().await,
        [("notifier".to_owned(), 1)],
        "a deleted entry is no longer counted, and a handler without entries is not listed"
    );
}

/// Dead letters: a saved entry loads back with its event byte-exact; a second save for the same
/// (handler, event) replaces the first; a handler's entries list oldest first (by their event's
/// global position, whatever the order of the saves), page by position, and are independent of
/// other handlers'; a delete says whether there was an entry; none of it appends an event.
pub async fn dead_letters_save_load_list_and_delete(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Dead", "1");
    let mut events = batch("Failing", 0, 5);
    events[1].metadata.correlation_id = Some(Uuid::now_v7());
    events[1].data = br#"{ "kept" : "byte for byte" }"#.to_vec();
    ok(
        store.append(&s, ExpectedVersion::NoStream, events).await,
        "append",
    );
    let stored = whole_stream(store, &s).await;
    let h0 = head_of(store);
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs);
    let letter = |handler: &str, index: usize, attempts: u32| DeadLetter {
        handler: handler.to_owned(),
        event: Arc::clone(&stored[index]),
        error: format!("failure {attempts} of `{handler}` on event {index}: ünïcode \"quoted\""),
        kind: FailureKind::ALL[index % FailureKind::ALL.len()],
        reason: format!("gave up after {attempts} attempts"),
        raw_row: (index == 1).then(|| {
            vec![
                ("position".to_owned(), "2".to_owned()),
                ("metadata".to_owned(), "{not json \"ü\"".to_owned()),
                ("event_id".to_owned(), "0xdeadbeef".to_owned()),
            ]
        }),
        attempts,
        first_failed_at: at(index as u64),
        last_failed_at: at(index as u64 + 60),
    };
    let list = |handler: &'static str, after: u64, limit: usize| async move {
        ok(
            store.list_dead_letters(handler, after, limit).await,
            &format!("list_dead_letters(`{handler}`, after {after}, limit {limit})"),
        )
    };
    let listed = |entries: &[DeadLetter]| -> Vec<u64> {
        entries.iter().map(|e| e.event.global_position).collect()
    };
    let pos = |index: usize| stored[index].global_position;

    assert!(
        list("notifier", 0, 10).await.is_empty(),
        "no dead letters yet"
    );
    assert!(
        ok(
            store.load_dead_letter("notifier", stored[0].event_id).await,
            "load_dead_letter"
        )
        .is_none()
    );
    assert!(
        !ok(
            store
                .delete_dead_letter("notifier", stored[0].event_id)
                .await,
            "delete_dead_letter"
        ),
        "deleting a missing entry must say there was none"
    );

    for (handler, index) in [
        ("notifier", 3),
        ("notifier", 1),
        ("notifier", 4),
        ("audit", 1),
    ] {
        ok(
            store.save_dead_letter(letter(handler, index, 6)).await,
            "save_dead_letter",
        );
    }
    assert_eq!(
        listed(&list("notifier", 0, 10).await),
        [pos(1), pos(3), pos(4)],
        "a handler's dead letters list oldest first (by global position), whatever the order of \
         the saves"
    );
    assert_eq!(listed(&list("notifier", 0, usize::MAX).await).len(), 3);
    assert_eq!(listed(&list("notifier", 0, 2).await), [pos(1), pos(3)]);
    assert_eq!(
        listed(&list("notifier", pos(1), 1).await),
        [pos(3)],
        "a page starts after the given position"
    );
    assert_eq!(listed(&list("notifier", pos(3), 10).await), [pos(4)]);
    assert!(list("notifier", pos(4), 10).await.is_empty());
    assert!(list("notifier", u64::MAX, 10).await.is_empty());
    assert!(
        list("notifier", 0, 0).await.is_empty(),
        "limit 0 lists nothing"
    );
    assert_eq!(
        listed(&list("audit", 0, 10).await),
        [pos(1)],
        "handlers are independent"
    );

    let loaded = ok(
        store.load_dead_letter("notifier", stored[1].event_id).await,
        "load_dead_letter",
    )
    .expect("the saved dead letter loads back");
    let want = letter("notifier", 1, 6);
    assert_eq!(
        (&loaded.handler, &loaded.error, loaded.attempts),
        (&want.handler, &want.error, want.attempts),
        "handler, error text and attempt count must round-trip"
    );
    assert_eq!(
        (loaded.kind, &loaded.reason, &loaded.raw_row),
        (want.kind, &want.reason, &want.raw_row),
        "the failure's kind, the reason and the raw row (columns in order) must round-trip"
    );
    let other = ok(
        store.load_dead_letter("notifier", stored[4].event_id).await,
        "load_dead_letter",
    )
    .expect("the saved dead letter loads back");
    assert_eq!(
        (other.kind, other.raw_row),
        (letter("notifier", 4, 6).kind, None),
        "an entry without a raw row has none"
    );
    assert!(
        *loaded.event == *stored[1],
        "the dead letter must keep the event exactly as stored (id, positions, type, data, \
         metadata, recorded_at)"
    );
    for (got, saved, what) in [
        (
            loaded.first_failed_at,
            want.first_failed_at,
            "first_failed_at",
        ),
        (loaded.last_failed_at, want.last_failed_at, "last_failed_at"),
    ] {
        let drift = match got.duration_since(saved) {
            Ok(later) => later,
            Err(earlier) => earlier.duration(),
        };
        assert!(
            drift <= Duration::from_millis(1),
            "{what} came back {drift:?} away from the saved time"
        );
    }

    ok(
        store.save_dead_letter(letter("notifier", 3, 7)).await,
        "save_dead_letter again",
    );
    let entries = list("notifier", 0, 10).await;
    assert_eq!(
        listed(&entries),
        [pos(1), pos(3), pos(4)],
        "saving the same (handler, event) again must replace the entry, not add one"
    );
    assert_eq!(
        entries[1].attempts, 7,
        "the second save of a (handler, event) must replace the first"
    );

    assert!(ok(
        store
            .delete_dead_letter("notifier", stored[3].event_id)
            .await,
        "delete_dead_letter"
    ));
    assert!(
        !ok(
            store
                .delete_dead_letter("notifier", stored[3].event_id)
                .await,
            "delete_dead_letter again"
        ),
        "a second delete finds nothing"
    );
    assert_eq!(listed(&list("notifier", 0, 10).await), [pos(1), pos(4)]);
    assert_eq!(
        listed(&list("audit", 0, 10).await),
        [pos(1)],
        "deleting one handler's entry must leave another handler's entry for the same event"
    );
    assert_eq!(
        head_of(store),
        h0,
        "dead letters must not append events or move the head"
    );
}

/// Event ids, types, schema versions, data and metadata come back exactly as appended, through
/// both `read_stream` and `read_all`: data is never re-encoded (whitespace, key order, number
/// spelling and escapes kept), including a 1 MiB payload.
pub async fn event_data_and_metadata_round_trip_byte_exact(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("RoundTrip", "1");
    let h0 = head_of(store);
    let mut user = BTreeMap::new();
    user.insert("tenant".to_owned(), "acme".to_owned());
    user.insert("empty".to_owned(), String::new());
    user.insert(
        "ünïcode key".to_owned(),
        "värde \"quoted\" \\ 名前".to_owned(),
    );
    let full = Metadata {
        command_id: Some(Uuid::now_v7()),
        causation_id: Some(Uuid::now_v7()),
        correlation_id: Some(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
        user: user.into(),
        tags: ["member:m1", "book:b7"].into_iter().collect(),
    };
    let big = {
        let mut data = b"{\"blob\":\"".to_vec();
        data.extend((0..1 << 20).map(|i: u32| b'a' + (i % 26) as u8));
        data.extend(b"\"}");
        data
    };
    let mut events = vec![
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: Cow::Borrowed("Money.Deposited-v2_x"),
            schema_version: 7,
            data: br#"{ "z":1,  "a" : [1.0, 1e2, -0.0, 12345678901234567890123456789], "s":"\u00e9\n\t", "dup":1, "dup":2 }"#.to_vec(),
            metadata: full.clone(),
        },
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: Cow::Owned("Ünïcödé".to_owned()),
            schema_version: u32::MAX,
            data: "{\"name\":\"名前 ✓\"}".as_bytes().to_vec(),
            metadata: Metadata::default(),
        },
        new_event("Big", big),
        new_event("Empty", b"{}".to_vec()),
    ];
    events[3].metadata.correlation_id = Some(Uuid::nil());
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, events.clone())
            .await,
        "append",
    );
    let by_stream = whole_stream(store, &s).await;
    let by_all = read_all_events(store, h0, &EventFilter::All).await;
    for (path, read) in [("read_stream", &by_stream), ("read_all", &by_all)] {
        assert_eq!(read.len(), events.len(), "{path} must return every event");
        for (sent, got) in events.iter().zip(read.iter()) {
            assert_eq!(
                (
                    got.event_id,
                    &got.event_type,
                    got.schema_version,
                    &got.metadata
                ),
                (
                    sent.event_id,
                    &sent.event_type,
                    sent.schema_version,
                    &sent.metadata
                ),
                "{path}: id, type, schema version and metadata must round-trip"
            );
            assert!(
                got.data == sent.data,
                "{path}: the data of a `{}` event ({} bytes) came back different ({} bytes); \
                 stored data must be kept byte for byte",
                sent.event_type,
                sent.data.len(),
                got.data.len()
            );
            assert_eq!(got.stream_id(), s);
        }
    }
    for (a, b) in by_stream.iter().zip(by_all.iter()) {
        assert_eq!(
            **a, **b,
            "read_stream and read_all must return the same recorded event"
        );
    }
}

/// Every event gets a `recorded_at` near the time of its commit (within a minute, allowing a
/// server clock), the same through every read path.
pub async fn recorded_at_is_set_at_commit(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Clock", "1");
    let h0 = head_of(store);
    let before = SystemTime::now();
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("E", 0, 3))
            .await,
        "append",
    );
    let after = SystemTime::now();
    let slack = Duration::from_secs(60);
    let events = whole_stream(store, &s).await;
    assert_eq!(events.len(), 3);
    for event in &events {
        assert!(
            event.recorded_at > UNIX_EPOCH + Duration::from_secs(1_000_000_000),
            "recorded_at of version {} is not set: {:?}",
            event.stream_version,
            event.recorded_at
        );
        assert!(
            event.recorded_at + slack >= before && event.recorded_at <= after + slack,
            "recorded_at of version {} is {:?}, not the commit time (between {before:?} and \
             {after:?})",
            event.stream_version,
            event.recorded_at
        );
    }
    let all = read_all_events(store, h0, &EventFilter::All).await;
    for (a, b) in events.iter().zip(all.iter()) {
        assert_eq!(
            a.recorded_at, b.recorded_at,
            "recorded_at must be stored, not recomputed per read"
        );
    }
}

/// Streams are keyed by their exact id: the same aggregate id under two aggregate types, ids
/// that are prefixes of one another, differ in case only, or hold SQL wildcard characters all
/// stay separate (versions, expected versions, reads).
pub async fn same_id_under_different_aggregates_stays_separate(store: Arc<dyn EventStore>) {
    let store = &*store;
    let streams = [
        stream_id("Account", "42"),
        stream_id("Order", "42"),
        stream_id("Account", "4"),
        stream_id("Account", "420"),
        stream_id("account", "42"),
        stream_id("Account", "4_"),
        stream_id("Account", "4%"),
    ];
    for (i, s) in (1u64..).zip(&streams) {
        let appended = ok(
            store
                .append(s, ExpectedVersion::NoStream, batch(&format!("E{i}"), 0, i))
                .await,
            &format!("NoStream append to `{s}`"),
        );
        assert_eq!(
            appended.version, i,
            "`{s}` must be a new stream, untouched by streams with similar ids"
        );
    }
    for (i, s) in (1u64..).zip(&streams) {
        let events = assert_stream_well_formed(store, s).await;
        assert_eq!(
            events.len() as u64,
            i,
            "`{s}` must hold only its own {i} events"
        );
        let expected_type = format!("E{i}");
        assert!(
            events.iter().all(|e| e.event_type == expected_type),
            "`{s}` returned events of another stream"
        );
        let backward = ok(
            store
                .read_stream(s, u64::MAX, Direction::Backward, 100)
                .await,
            "read_stream backward",
        );
        assert_eq!(backward.len() as u64, i, "backward read of `{s}`");
    }
    let result = store
        .append(&streams[1], ExpectedVersion::Exact(1), batch("E2", 2, 1))
        .await;
    assert_wrong_version(result, &streams[1], ExpectedVersion::Exact(1), 2);
    let ok_append = ok(
        store
            .append(&streams[0], ExpectedVersion::Exact(1), batch("E1", 1, 1))
            .await,
        "append",
    );
    assert_eq!(ok_append.version, 2);
    assert_eq!(
        ok(store.stream_version(&streams[1]).await, "stream_version"),
        2,
        "appending to `{}` must not move `{}`",
        streams[0],
        streams[1]
    );
}

/// Saga state: a saved state loads back byte for byte; a save replaces the instance's state;
/// sagas and instances are independent; instances list sorted by id and page after an id; a
/// delete says whether there was a state; none of it appends an event.
pub async fn saga_state_save_load_list_and_delete(store: Arc<dyn EventStore>) {
    let store = &*store;
    let h0 = head_of(store);
    let load = |saga: &'static str, instance: &'static str| async move {
        ok(
            store.load_saga_state(saga, instance).await,
            &format!("load_saga_state(`{saga}`, `{instance}`)"),
        )
    };
    let list = |saga: &'static str, after: Option<&'static str>, limit: usize| async move {
        ok(
            store.list_saga_instances(saga, after, limit).await,
            &format!("list_saga_instances(`{saga}`, after {after:?}, limit {limit})"),
        )
    };
    assert_eq!(load("Shipping", "order-1").await, None, "no state yet");
    assert!(list("Shipping", None, 10).await.is_empty());
    assert!(
        !ok(
            store.delete_saga_state("Shipping", "order-1").await,
            "delete_saga_state"
        ),
        "deleting a missing state must say there was none"
    );
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    for (instance, state) in [
        ("order-3", b"{\"step\":3}".to_vec()),
        ("order-1", b"{ \"step\" : 1 }".to_vec()),
        ("order-2", binary.clone()),
        ("order-10", Vec::new()),
    ] {
        ok(
            store.save_saga_state("Shipping", instance, state).await,
            "save_saga_state",
        );
    }
    ok(
        store
            .save_saga_state("Billing", "order-1", b"billing".to_vec())
            .await,
        "save_saga_state",
    );
    assert_eq!(
        load("Shipping", "order-1").await.as_deref(),
        Some(&b"{ \"step\" : 1 }"[..]),
        "a saga state must load back byte for byte"
    );
    assert_eq!(load("Shipping", "order-2").await, Some(binary));
    assert_eq!(
        load("Shipping", "order-10").await,
        Some(Vec::new()),
        "an empty state is a saved state, not none"
    );
    assert_eq!(
        load("Billing", "order-1").await.as_deref(),
        Some(&b"billing"[..]),
        "sagas are independent"
    );
    assert_eq!(
        list("Shipping", None, 10).await,
        ["order-1", "order-10", "order-2", "order-3"],
        "instances list sorted by id (byte order)"
    );
    assert_eq!(list("Shipping", None, usize::MAX).await.len(), 4);
    assert_eq!(list("Shipping", None, 2).await, ["order-1", "order-10"]);
    assert_eq!(
        list("Shipping", Some("order-10"), 10).await,
        ["order-2", "order-3"],
        "a page starts after the given id"
    );
    assert!(list("Shipping", Some("order-3"), 10).await.is_empty());
    assert!(list("Shipping", None, 0).await.is_empty());
    assert_eq!(list("Billing", None, 10).await, ["order-1"]);

    ok(
        store
            .save_saga_state("Shipping", "order-1", b"{\"step\":2}".to_vec())
            .await,
        "save_saga_state again",
    );
    assert_eq!(
        load("Shipping", "order-1").await.as_deref(),
        Some(&b"{\"step\":2}"[..]),
        "a save must replace the instance's state"
    );
    assert_eq!(
        list("Shipping", None, 10).await.len(),
        4,
        "a replace adds no instance"
    );
    assert!(ok(
        store.delete_saga_state("Shipping", "order-1").await,
        "delete_saga_state"
    ));
    assert_eq!(load("Shipping", "order-1").await, None);
    assert!(
        !ok(
            store.delete_saga_state("Shipping", "order-1").await,
            "delete_saga_state again"
        ),
        "a second delete finds nothing"
    );
    assert_eq!(
        load("Billing", "order-1").await.as_deref(),
        Some(&b"billing"[..]),
        "deleting one saga's instance must leave another saga's instance of the same id"
    );
    assert_eq!(
        head_of(store),
        h0,
        "saga state must not append events or move the head"
    );
}

/// A whole microsecond, well after the epoch, that timeout properties count from.
fn timeout_base() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000)
}

/// The timeout `id` of `saga`'s `instance`, due `secs` seconds after [`timeout_base`], whose
/// payload names it.
fn timeout(id: u128, saga: &str, instance: &str, secs: u64) -> Timeout {
    Timeout {
        id: Uuid::from_u128(id),
        saga: saga.to_owned(),
        instance: instance.to_owned(),
        due_at: timeout_base() + Duration::from_secs(secs),
        payload: format!("{{\"timeout\":{id}}}").into_bytes(),
    }
}

/// Schedules `timeout`, panicking on failure.
async fn schedule(store: &dyn EventStore, timeout: Timeout) {
    let what = format!("schedule_timeout({})", timeout.id);
    ok(store.schedule_timeout(timeout).await, &what);
}

/// The timeouts of `saga` due at `now`, at most `limit`.
async fn due(store: &dyn EventStore, saga: &str, now: SystemTime, limit: usize) -> Vec<Timeout> {
    ok(
        store.due_timeouts(saga, now, limit).await,
        &format!("due_timeouts(`{saga}`, {now:?}, limit {limit})"),
    )
}

/// The ids of `timeouts`, as the numbers they were made from.
fn timeout_ids(timeouts: &[Timeout]) -> Vec<u128> {
    timeouts.iter().map(|t| t.id.as_u128()).collect()
}

/// The earliest due time of `saga`.
async fn next_due(store: &dyn EventStore, saga: &str) -> Option<SystemTime> {
    ok(
        store.next_timeout(saga).await,
        &format!("next_timeout(`{saga}`)"),
    )
}

/// Scheduling a timeout whose id is scheduled already replaces it: one timeout stays, with the
/// second schedule's due time, instance and payload (a later or an earlier due time alike);
/// none of it appends an event.
pub async fn scheduling_a_timeout_twice_keeps_one_the_second(store: Arc<dyn EventStore>) {
    let store = &*store;
    let h0 = head_of(store);
    schedule(store, timeout(1, "Shipping", "order-1", 10)).await;
    schedule(store, timeout(2, "Shipping", "order-2", 20)).await;
    let mut again = timeout(1, "Shipping", "order-1", 30);
    again.payload = b"second".to_vec();
    schedule(store, again.clone()).await;
    let all = due(
        store,
        "Shipping",
        timeout_base() + Duration::from_secs(60),
        10,
    )
    .await;
    assert_eq!(
        timeout_ids(&all),
        [2, 1],
        "scheduling an id twice must keep one timeout, at its new due time"
    );
    assert_eq!(
        all[1], again,
        "the second schedule's due time and payload win"
    );
    assert_eq!(
        next_due(store, "Shipping").await,
        Some(timeout_base() + Duration::from_secs(20)),
        "the replaced due time is gone"
    );
    let mut earlier = timeout(1, "Shipping", "order-1", 5);
    earlier.payload = b"third".to_vec();
    schedule(store, earlier.clone()).await;
    let all = due(
        store,
        "Shipping",
        timeout_base() + Duration::from_secs(60),
        10,
    )
    .await;
    assert_eq!(
        timeout_ids(&all),
        [1, 2],
        "a replace may move a timeout earlier"
    );
    assert_eq!(all[0], earlier);
    assert_eq!(
        next_due(store, "Shipping").await,
        Some(earlier.due_at),
        "next_timeout follows the replace"
    );
    assert_eq!(
        head_of(store),
        h0,
        "timeouts must not append events or move the head"
    );
}

/// `due_timeouts` returns the saga's timeouts due at or before `now` (a timeout due exactly at
/// `now` included), the earliest first, ties by id whatever the order they were scheduled in,
/// at most `limit` (0 gives none, `usize::MAX` every due one), and never another saga's.
pub async fn due_timeouts_are_the_sagas_earliest_first_within_the_limit(
    store: Arc<dyn EventStore>,
) {
    let store = &*store;
    // Scheduled out of order; 3, 4 and 5 are due at the same time.
    for t in [
        timeout(5, "Shipping", "order-2", 20),
        timeout(1, "Shipping", "order-1", 30),
        timeout(3, "Shipping", "order-1", 20),
        timeout(2, "Shipping", "order-3", 10),
        timeout(4, "Shipping", "order-3", 20),
        timeout(6, "Shipping", "order-1", 40),
        timeout(7, "Billing", "order-1", 5),
        timeout(8, "Billing", "order-2", 20),
    ] {
        schedule(store, t).await;
    }
    let at = |secs: u64| timeout_base() + Duration::from_secs(secs);
    assert!(
        due(store, "Shipping", at(9), 10).await.is_empty(),
        "nothing is due before the earliest due time"
    );
    assert_eq!(
        timeout_ids(&due(store, "Shipping", at(10), 10).await),
        [2],
        "a timeout due exactly at `now` is due"
    );
    assert_eq!(
        timeout_ids(&due(store, "Shipping", at(30), 10).await),
        [2, 3, 4, 5, 1],
        "due timeouts come earliest first, ties by id"
    );
    assert_eq!(
        timeout_ids(&due(store, "Shipping", at(30), usize::MAX).await),
        [2, 3, 4, 5, 1],
        "a limit of usize::MAX gives every due timeout"
    );
    assert_eq!(
        timeout_ids(&due(store, "Shipping", at(30), 3).await),
        [2, 3, 4],
        "the limit takes the earliest"
    );
    assert_eq!(timeout_ids(&due(store, "Shipping", at(30), 1).await), [2]);
    assert!(due(store, "Shipping", at(30), 0).await.is_empty());
    assert_eq!(
        timeout_ids(&due(store, "Shipping", at(1_000), usize::MAX).await),
        [2, 3, 4, 5, 1, 6]
    );
    assert_eq!(
        timeout_ids(&due(store, "Billing", at(1_000), usize::MAX).await),
        [7, 8],
        "each saga sees only its own timeouts"
    );
    assert!(
        due(store, "Unknown", at(1_000), usize::MAX)
            .await
            .is_empty()
    );
    let shipping = due(store, "Shipping", at(1_000), usize::MAX).await;
    assert!(
        shipping.iter().all(|t| t.saga == "Shipping"),
        "every timeout names its saga"
    );
    assert_eq!(
        due(store, "Shipping", at(30), 10).await,
        due(store, "Shipping", at(30), 10).await,
        "reading due timeouts removes none"
    );
}

/// `next_timeout` is the earliest due time of the saga's timeouts, due or not, whatever the
/// other sagas hold; it moves when the earliest is deleted and is none once the saga has none.
pub async fn next_timeout_is_the_sagas_earliest_due_time(store: Arc<dyn EventStore>) {
    let store = &*store;
    let at = |secs: u64| timeout_base() + Duration::from_secs(secs);
    assert_eq!(next_due(store, "Shipping").await, None, "no timeout yet");
    schedule(store, timeout(1, "Shipping", "order-1", 30)).await;
    assert_eq!(next_due(store, "Shipping").await, Some(at(30)));
    schedule(store, timeout(2, "Shipping", "order-2", 10)).await;
    schedule(store, timeout(3, "Billing", "order-1", 5)).await;
    schedule(store, timeout(4, "Shipping", "order-3", 20)).await;
    assert_eq!(
        next_due(store, "Shipping").await,
        Some(at(10)),
        "the earliest of the saga's own timeouts"
    );
    assert_eq!(next_due(store, "Billing").await, Some(at(5)));
    assert_eq!(next_due(store, "Unknown").await, None);
    assert!(ok(
        store.delete_timeout("Shipping", Uuid::from_u128(2)).await,
        "delete_timeout"
    ));
    assert_eq!(
        next_due(store, "Shipping").await,
        Some(at(20)),
        "the next one once the earliest fired"
    );
    for id in [1, 4] {
        assert!(ok(
            store.delete_timeout("Shipping", Uuid::from_u128(id)).await,
            "delete_timeout"
        ));
    }
    assert_eq!(next_due(store, "Shipping").await, None, "none left");
    assert_eq!(next_due(store, "Billing").await, Some(at(5)));
}

/// `delete_timeout` removes one timeout of the saga and says whether there was one (true once,
/// then false; false for an id of another saga, which stays); `cancel_timeouts` removes every
/// timeout of the saga's instance, and only those, and says how many.
pub async fn timeouts_are_deleted_once_and_cancelled_per_instance(store: Arc<dyn EventStore>) {
    let store = &*store;
    let h0 = head_of(store);
    for t in [
        timeout(1, "Shipping", "order-1", 10),
        timeout(2, "Shipping", "order-1", 20),
        timeout(3, "Shipping", "order-1", 30),
        timeout(4, "Shipping", "order-2", 15),
        timeout(5, "Billing", "order-1", 10),
        timeout(6, "Shipping", "order-10", 25),
    ] {
        schedule(store, t).await;
    }
    let all = |saga: &'static str| async move {
        timeout_ids(
            &due(
                store,
                saga,
                timeout_base() + Duration::from_secs(1_000),
                usize::MAX,
            )
            .await,
        )
    };
    let delete = |saga: &'static str, id: u128| async move {
        ok(
            store.delete_timeout(saga, Uuid::from_u128(id)).await,
            &format!("delete_timeout(`{saga}`, {id})"),
        )
    };
    let cancel = |saga: &'static str, instance: &'static str| async move {
        ok(
            store.cancel_timeouts(saga, instance).await,
            &format!("cancel_timeouts(`{saga}`, `{instance}`)"),
        )
    };
    assert!(
        delete("Shipping", 2).await,
        "deleting a timeout says there was one"
    );
    assert!(
        !delete("Shipping", 2).await,
        "a second delete finds nothing"
    );
    assert!(!delete("Shipping", 99).await, "an unknown id finds nothing");
    assert!(
        !delete("Shipping", 5).await,
        "a delete finds no timeout of another saga"
    );
    assert_eq!(all("Shipping").await, [1, 4, 6, 3]);
    assert_eq!(all("Billing").await, [5], "the other saga's timeout stays");

    assert_eq!(
        cancel("Shipping", "order-1").await,
        2,
        "cancel counts the instance's timeouts it removed"
    );
    assert_eq!(
        all("Shipping").await,
        [4, 6],
        "cancel leaves the saga's other instances (`order-10` too)"
    );
    assert_eq!(
        all("Billing").await,
        [5],
        "cancel leaves the same instance id of another saga"
    );
    assert_eq!(
        cancel("Shipping", "order-1").await,
        0,
        "nothing left to cancel"
    );
    assert_eq!(cancel("Unknown", "order-1").await, 0);
    assert!(!delete("Shipping", 1).await, "a cancelled timeout is gone");
    assert_eq!(cancel("Shipping", "order-2").await, 1);
    assert_eq!(cancel("Shipping", "order-10").await, 1);
    assert!(all("Shipping").await.is_empty());
    assert_eq!(next_due(store, "Shipping").await, None);
    assert_eq!(
        head_of(store),
        h0,
        "timeouts must not append events or move the head"
    );
}

/// A timeout comes back as scheduled: its payload byte for byte (any bytes, also empty or
/// large), its saga and instance, and its due time to the microsecond, before the epoch too;
/// a finer due time comes back within a microsecond.
pub async fn timeout_payload_and_due_time_round_trip(store: Arc<dyn EventStore>) {
    let store = &*store;
    let binary: Vec<u8> = (0..=255u8)
        .cycle()
        .take(70_000)
        .chain([0, 0, 255])
        .collect();
    let micro = Duration::from_micros(1);
    let before_epoch = UNIX_EPOCH - Duration::new(86_400, 1_000);
    let scheduled = [
        Timeout {
            id: Uuid::now_v7(),
            saga: "Shipping".to_owned(),
            instance: "order-1".to_owned(),
            due_at: before_epoch,
            payload: binary,
        },
        Timeout {
            id: Uuid::now_v7(),
            saga: "Shipping".to_owned(),
            instance: "ordre-é 'x' %_".to_owned(),
            due_at: UNIX_EPOCH,
            payload: Vec::new(),
        },
        Timeout {
            id: Uuid::now_v7(),
            saga: "Shipping".to_owned(),
            instance: "order-3".to_owned(),
            due_at: timeout_base() + micro,
            payload: b"{ \"step\" : 1 }".to_vec(),
        },
        Timeout {
            id: Uuid::now_v7(),
            saga: "Shipping".to_owned(),
            instance: "order-4".to_owned(),
            due_at: timeout_base() + micro * 2,
            payload: b"\x00\xff\x00".to_vec(),
        },
    ];
    for t in scheduled.iter().rev() {
        schedule(store, t.clone()).await;
    }
    let back = due(store, "Shipping", timeout_base() + micro * 2, usize::MAX).await;
    assert_eq!(
        back, scheduled,
        "a timeout must come back byte for byte, its due time to the microsecond"
    );
    assert_eq!(
        next_due(store, "Shipping").await,
        Some(before_epoch),
        "a due time before the epoch is kept"
    );
    assert_eq!(
        due(store, "Shipping", timeout_base() + micro, usize::MAX)
            .await
            .len(),
        3,
        "one microsecond apart is apart"
    );

    let fine = Timeout {
        id: Uuid::now_v7(),
        saga: "Fine".to_owned(),
        instance: "order-1".to_owned(),
        due_at: timeout_base() + Duration::from_nanos(1_500),
        payload: b"fine".to_vec(),
    };
    schedule(store, fine.clone()).await;
    let got = next_due(store, "Fine")
        .await
        .expect("the fine timeout is scheduled");
    let off = got
        .duration_since(fine.due_at)
        .unwrap_or_else(|e| e.duration());
    assert!(
        off < micro,
        "a due time finer than a microsecond comes back within one: {got:?} for {:?}",
        fine.due_at
    );
}

/// A due time far beyond any real one (300,000 years from 1970, either way, where the platform's
/// clock reaches) is scheduled without failing: the far past one is due now and comes first,
/// the far future one is not due now and comes after every other.
pub async fn timeouts_due_far_from_now_keep_their_order(store: Arc<dyn EventStore>) {
    let store = &*store;
    let years = Duration::from_secs(300_000 * 366 * 86_400);
    let now = SystemTime::now();
    let mut near = timeout(2, "Shipping", "order-1", 0);
    near.due_at = now;
    schedule(store, near).await;
    let mut expect_now = vec![2];
    let mut expect_all = vec![2];
    if let Some(long_ago) = UNIX_EPOCH.checked_sub(years) {
        let mut past = timeout(1, "Shipping", "order-1", 0);
        past.due_at = long_ago;
        schedule(store, past).await;
        expect_now.insert(0, 1);
        expect_all.insert(0, 1);
        let next = next_due(store, "Shipping").await.expect("a next timeout");
        assert!(
            next < UNIX_EPOCH,
            "the far past timeout comes first: {next:?}"
        );
    }
    if let Some(far) = UNIX_EPOCH.checked_add(years) {
        let mut future = timeout(3, "Shipping", "order-1", 0);
        future.due_at = far;
        schedule(store, future).await;
        expect_all.push(3);
        assert_eq!(
            timeout_ids(&due(store, "Shipping", far, usize::MAX).await),
            expect_all,
            "at its due time, the far future timeout is due, after every other"
        );
    }
    assert_eq!(
        timeout_ids(&due(store, "Shipping", now, usize::MAX).await),
        expect_now,
        "the far future timeout is not due now"
    );
}

/// A command of type `Deposit` on aggregate `Account` (its id is the rest of the stream id it is
/// appended to), with `key`, checked against the log from the Unix epoch on (every entry counts).
fn command(_id: &str, key: Option<&str>) -> NewCommand {
    NewCommand {
        command_id: Uuid::now_v7(),
        idempotency_key: key.map(str::to_owned),
        command: Cow::Borrowed("Deposit"),
        aggregate: Cow::Borrowed("Account"),
        deduplicate_since: Some(UNIX_EPOCH),
    }
}

/// The command-log entry `lookup` finds (every entry counts).
async fn logged(store: &dyn EventStore, lookup: CommandLookup<'_>) -> Option<CommandRecord> {
    ok(store.find_command(lookup, UNIX_EPOCH).await, "find_command")
}

/// [`EventStore::append_command`] records the command with its events, in one transaction:
/// the entry names the command, its aggregate and stream, the versions and positions of its
/// events and the commit time, and is found by command id and by key. A plain `append` records
/// nothing.
pub async fn command_log_records_a_command_with_its_events(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Account", "a1");
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("Opened", 0, 1))
            .await,
        "append",
    );
    let before = SystemTime::now();
    let new = command("a1", Some("key-1"));
    let appended = ok(
        store
            .append_command(
                &s,
                ExpectedVersion::Exact(1),
                batch("Deposited", 1, 2),
                new.clone(),
            )
            .await,
        "append_command",
    );
    let after = SystemTime::now();
    assert_eq!(appended.version, 3, "append_command appends like append");
    let by_key = logged(store, CommandLookup::Key("key-1"))
        .await
        .expect("the entry must be found by its idempotency key");
    let by_id = logged(store, CommandLookup::Id(new.command_id))
        .await
        .expect("the entry must be found by its command id");
    assert_eq!(by_key, by_id, "one entry, found both ways");
    assert_eq!(
        (by_key.command_id, by_key.idempotency_key.as_deref()),
        (new.command_id, Some("key-1")),
    );
    assert_eq!(
        (
            &*by_key.command,
            &*by_key.aggregate,
            &*by_key.aggregate_id,
            &*by_key.stream_id
        ),
        ("Deposit", "Account", "a1", s.as_str()),
        "the entry names the command, the aggregate and the stream"
    );
    assert_eq!(
        (by_key.version, by_key.event_count, by_key.first_version()),
        (3, 2, 2),
        "the entry holds the versions of the command's events"
    );
    assert_eq!(
        (by_key.first_position, by_key.last_position),
        (appended.first_position, appended.last_position),
        "the entry holds the positions of the command's events"
    );
    assert!(
        by_key.recorded_at >= before - Duration::from_secs(1)
            && by_key.recorded_at <= after + Duration::from_secs(1),
        "the entry's commit time is the append's"
    );
    assert_eq!(
        logged(store, CommandLookup::Key(&new.command_id.to_string())).await,
        None,
        "a key never matches a command id"
    );
    assert_eq!(
        logged(store, CommandLookup::Key("key-2")).await,
        None,
        "an unknown key finds nothing"
    );
    let plain = whole_stream(store, &s).await;
    let first_id = plain[0].metadata.command_id;
    assert!(first_id.is_none());
    assert_eq!(
        ok(
            store
                .sweep_commands(SystemTime::now() + Duration::from_secs(3600), usize::MAX)
                .await,
            "sweep"
        ),
        1,
        "the plain append recorded nothing: only append_command's entry is there"
    );
}

/// A second run of one key, or of one command id without a key, appends nothing and fails with
/// [`StoreError::DuplicateCommand`] carrying the first entry, before the expected version is
/// checked; a failed append (wrong expected version) records nothing, so its command may run
/// again.
pub async fn a_duplicate_command_appends_nothing_and_returns_the_first_entry(
    store: Arc<dyn EventStore>,
) {
    let store = &*store;
    let s = stream_id("Account", "a1");
    let first = command("a1", Some("pay-1"));
    ok(
        store
            .append_command(
                &s,
                ExpectedVersion::NoStream,
                batch("Deposited", 0, 1),
                first.clone(),
            )
            .await,
        "append_command",
    );
    let h = head_of(store);
    let mut again = command("a1", Some("pay-1"));
    again.command = Cow::Borrowed("Withdraw");
    for expected in [
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(7),
        ExpectedVersion::Any,
    ] {
        match store
            .append_command(&s, expected, batch("Deposited", 1, 1), again.clone())
            .await
        {
            Err(StoreError::DuplicateCommand { record }) => {
                assert_eq!(record.command_id, first.command_id, "the first run's entry");
                assert_eq!(record.command, "Deposit", "the first run's entry");
                assert_eq!((record.version, record.event_count), (1, 1));
            }
            other => panic!(
                "a second run of key `pay-1` (expecting {expected}) must fail with DuplicateCommand, got {other:?}"
            ),
        }
    }
    assert_eq!(
        whole_stream(store, &s).await.len(),
        1,
        "a duplicate appends nothing"
    );
    assert_eq!(head_of(store), h, "a duplicate moves no head");

    // By command id, without a key.
    let by_id = command("a1", None);
    ok(
        store
            .append_command(
                &s,
                ExpectedVersion::Exact(1),
                batch("Deposited", 1, 1),
                by_id.clone(),
            )
            .await,
        "append_command",
    );
    match store
        .append_command(
            &s,
            ExpectedVersion::Exact(2),
            batch("Deposited", 2, 1),
            by_id.clone(),
        )
        .await
    {
        Err(StoreError::DuplicateCommand { record }) => {
            assert_eq!(record.command_id, by_id.command_id);
            assert_eq!((record.version, record.idempotency_key), (2, None));
        }
        other => {
            panic!("a second run of a command id must fail with DuplicateCommand, got {other:?}")
        }
    }

    // A failed append records nothing: the command may run again.
    let failed = command("a1", Some("pay-2"));
    match store
        .append_command(
            &s,
            ExpectedVersion::Exact(9),
            batch("Deposited", 2, 1),
            failed.clone(),
        )
        .await
    {
        Err(StoreError::WrongExpectedVersion { actual: 2, .. }) => {}
        other => panic!("expected a wrong expected version at 2, got {other:?}"),
    }
    assert_eq!(
        logged(store, CommandLookup::Key("pay-2")).await,
        None,
        "a failed append records no command"
    );
    ok(
        store
            .append_command(
                &s,
                ExpectedVersion::Exact(2),
                batch("Deposited", 2, 1),
                failed,
            )
            .await,
        "the retry of a failed command",
    );
    assert_eq!(whole_stream(store, &s).await.len(), 3);

    // Without the check (a fresh, generated id), nothing is looked up: the entry is written.
    let mut unchecked = command("a1", None);
    unchecked.deduplicate_since = None;
    ok(
        store
            .append_command(
                &s,
                ExpectedVersion::Exact(3),
                batch("Deposited", 3, 1),
                unchecked.clone(),
            )
            .await,
        "append_command without the check",
    );
    assert_eq!(
        logged(store, CommandLookup::Id(unchecked.command_id))
            .await
            .map(|r| r.version),
        Some(4),
        "an unchecked command with events is recorded too"
    );
}

/// A checked command that appends nothing is recorded at the stream's version, with positions
/// 0, without creating the stream or moving the head; an unchecked one records nothing; a
/// wrong expected version records nothing.
pub async fn a_command_without_events_is_recorded_when_checked(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Account", "a1");
    ok(
        store
            .append(&s, ExpectedVersion::NoStream, batch("Opened", 0, 2))
            .await,
        "append",
    );
    let h = head_of(store);
    let audit = command("a1", Some("audit-1"));
    let appended = ok(
        store
            .append_command(&s, ExpectedVersion::Exact(2), Vec::new(), audit.clone())
            .await,
        "append_command with no events",
    );
    assert_eq!(
        (
            appended.version,
            appended.first_position,
            appended.last_position
        ),
        (2, 0, 0)
    );
    let record = logged(store, CommandLookup::Key("audit-1"))
        .await
        .expect("a checked command with no events must be recorded");
    assert_eq!(
        (
            record.version,
            record.event_count,
            record.first_position,
            record.last_position
        ),
        (2, 0, 0, 0),
        "recorded at the stream's version, with no events"
    );
    assert_eq!(head_of(store), h, "recording a command moves no head");
    match store
        .append_command(
            &s,
            ExpectedVersion::Exact(2),
            Vec::new(),
            command("a1", Some("audit-1")),
        )
        .await
    {
        Err(StoreError::DuplicateCommand { record }) => {
            assert_eq!(record.command_id, audit.command_id)
        }
        other => panic!("a second run of `audit-1` must fail with DuplicateCommand, got {other:?}"),
    }

    let empty = stream_id("Account", "none");
    let nothing = command("none", Some("audit-2"));
    ok(
        store
            .append_command(&empty, ExpectedVersion::NoStream, Vec::new(), nothing)
            .await,
        "append_command with no events to an empty stream",
    );
    assert_eq!(
        ok(store.stream_version(&empty).await, "stream_version"),
        0,
        "recording a command creates no stream"
    );
    assert!(whole_stream(store, &empty).await.is_empty());

    let mut unchecked = command("a1", None);
    unchecked.deduplicate_since = None;
    ok(
        store
            .append_command(&s, ExpectedVersion::Exact(2), Vec::new(), unchecked.clone())
            .await,
        "append_command with no events and no check",
    );
    assert_eq!(
        logged(store, CommandLookup::Id(unchecked.command_id)).await,
        None,
        "an unchecked command with no events records nothing"
    );

    let wrong = command("a1", Some("audit-3"));
    match store
        .append_command(&s, ExpectedVersion::Exact(5), Vec::new(), wrong)
        .await
    {
        Err(StoreError::WrongExpectedVersion { actual: 2, .. }) => {}
        other => panic!("expected a wrong expected version at 2, got {other:?}"),
    }
    assert_eq!(logged(store, CommandLookup::Key("audit-3")).await, None);
}

/// Concurrent appends of one key, to one stream or to several, have exactly one winner; every
/// other one fails with [`StoreError::DuplicateCommand`] naming the winner, and nothing of
/// theirs is stored.
pub async fn concurrent_runs_of_one_command_have_exactly_one_winner(store: Arc<dyn EventStore>) {
    const RUNS: usize = 24;
    let barrier = Arc::new(Barrier::new(RUNS));
    let tasks: Vec<_> = (0..RUNS)
        .map(|i| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                // Half to one stream, half each to a stream of its own.
                let s = if i % 2 == 0 {
                    stream_id("Account", "shared")
                } else {
                    stream_id("Account", &format!("own-{i}"))
                };
                let new = command("shared", Some("once"));
                barrier.wait().await;
                let result = store
                    .append_command(
                        &s,
                        ExpectedVersion::Any,
                        batch("Deposited", 0, 2),
                        new.clone(),
                    )
                    .await;
                (new.command_id, s, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        let (id, s, result) = join(task).await;
        match result {
            Ok(appended) => winners.push((id, s, appended)),
            Err(StoreError::DuplicateCommand { record }) => losers.push(record),
            Err(other) => panic!("a concurrent run failed with {other}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one run of key `once` may succeed"
    );
    let (id, s, appended) = &winners[0];
    for record in &losers {
        assert_eq!(&record.command_id, id, "every duplicate names the winner");
        assert_eq!(&record.stream_id, s);
    }
    let total = read_all_events(&*store, 0, &EventFilter::All).await.len();
    assert_eq!(total, 2, "only the winner's events are stored");
    assert_eq!(appended.version, 2);
}

/// What an append's outcome says, without the positions (which depend on what else the store
/// holds): the version and how many positions it took, or the error's kind and what it carries.
fn outcome_shape(result: &Result<Appended, StoreError>) -> String {
    match result {
        Ok(appended) => format!(
            "appended: version {}, {} positions",
            appended.version,
            match appended.first_position {
                0 => 0,
                first => appended.last_position + 1 - first,
            }
        ),
        Err(StoreError::DuplicateCommand { record }) => format!(
            "duplicate of {:?}: version {}, {} events",
            record.idempotency_key, record.version, record.event_count
        ),
        Err(StoreError::WrongExpectedVersion {
            expected, actual, ..
        }) => format!("wrong version: expected {expected}, actual {actual}"),
        Err(other) => format!("failed: {other}"),
    }
}

/// [`EventStore::append_command_now`] agrees with [`EventStore::append_command`]: a store that
/// makes the append during the call returns what `append_command` returns for the same calls
/// (appends, a duplicate, a wrong expected version, a checked command without events), stores
/// the same events and entries and moves the head; a store that does not gives the events and
/// the command back unchanged, and writes nothing.
pub async fn append_command_now_agrees_with_append_command(store: Arc<dyn EventStore>) {
    let store = &*store;
    let probe = stream_id("Account", "probe");
    let (events, command_) = (batch("Opened", 0, 2), command("probe", Some("probe")));
    let (event_ids, command_id) = (ids(&events), command_.command_id);
    match store.append_command_now(&probe, ExpectedVersion::NoStream, events, command_) {
        AppendNow::Later { events, command } => {
            assert_eq!(
                (
                    ids(&events),
                    command.command_id,
                    command.idempotency_key.as_deref()
                ),
                (event_ids, command_id, Some("probe")),
                "a store that does not append at once gives the events and the command back as                  they were"
            );
            assert_eq!(
                ok(store.stream_version(&probe).await, "stream_version"),
                0,
                "nothing is written when the append is given back"
            );
            assert_eq!(logged(store, CommandLookup::Key("probe")).await, None);
            return;
        }
        AppendNow::Made(result) => {
            assert_eq!(ok(result, "append_command_now").version, 2);
        }
    }
    // The same calls on two streams: one at once, one through the future.
    let steps: [(ExpectedVersion, u64, Option<&str>); 6] = [
        (ExpectedVersion::NoStream, 2, Some("first")),
        (ExpectedVersion::Exact(2), 1, Some("first")),
        (ExpectedVersion::Exact(5), 1, None),
        (ExpectedVersion::Exact(2), 0, Some("empty")),
        (ExpectedVersion::Exact(2), 1, None),
        (ExpectedVersion::Any, 3, Some("last")),
    ];
    let now = stream_id("Account", "now");
    let later = stream_id("Account", "later");
    for (step, &(expected, count, key)) in steps.iter().enumerate() {
        let mut shapes = Vec::new();
        for s in [&now, &later] {
            let key = key.map(|key| format!("{s}/{key}"));
            let mut new = command(s, key.as_deref());
            if key.is_none() {
                // A fresh command id, as the runtime's: no check.
                new.deduplicate_since = None;
            }
            let events = batch("Deposited", 0, count);
            let written = ids(&events);
            let before = head_of(store);
            let result = if s == &now {
                match store.append_command_now(s, expected, events, new.clone()) {
                    AppendNow::Made(result) => result,
                    AppendNow::Later { .. } => {
                        panic!("a store that appended at once once gives an append back later")
                    }
                }
            } else {
                store.append_command(s, expected, events, new.clone()).await
            };
            if let Ok(appended) = &result
                && count > 0
            {
                let stream = whole_stream(store, s).await;
                let tail: Vec<_> = stream[stream.len() - count as usize..].to_vec();
                assert_eq!(
                    (recorded_ids(&tail), positions(&tail)),
                    (
                        written,
                        (appended.first_position..=appended.last_position).collect()
                    ),
                    "step {step} on `{s}`: the events are stored at the positions returned"
                );
                assert!(
                    head_of(store) >= appended.last_position && appended.last_position > before,
                    "step {step} on `{s}`: the head moves to the append"
                );
                if new.deduplicate_since.is_some() {
                    let record = logged(store, new.lookup())
                        .await
                        .expect("a checked command's entry is recorded with its events");
                    assert_eq!(
                        (record.command_id, record.last_position),
                        (new.command_id, appended.last_position),
                        "step {step} on `{s}`: the entry is the command's"
                    );
                }
            }
            shapes.push(outcome_shape(&result).replace(s.as_str(), "<stream>"));
        }
        assert_eq!(
            shapes[0], shapes[1],
            "step {step}: append_command_now and append_command disagree"
        );
    }
    assert_eq!(
        versions(&whole_stream(store, &now).await),
        versions(&whole_stream(store, &later).await),
        "both ways store the same events"
    );
}

/// Entries recorded before the `since` of a lookup have expired: not found, and replaced by a
/// new run of their command (the append removes them in its transaction).
pub async fn expired_command_entries_are_not_found_and_are_replaced(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Account", "a1");
    let first = command("a1", Some("old"));
    ok(
        store
            .append_command(
                &s,
                ExpectedVersion::NoStream,
                batch("Deposited", 0, 1),
                first,
            )
            .await,
        "append_command",
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = SystemTime::now();
    assert_eq!(
        ok(
            store.find_command(CommandLookup::Key("old"), cutoff).await,
            "find_command"
        ),
        None,
        "an entry recorded before `since` is not found"
    );
    let mut second = command("a1", Some("old"));
    second.deduplicate_since = Some(cutoff);
    ok(
        store
            .append_command(
                &s,
                ExpectedVersion::Exact(1),
                batch("Deposited", 1, 1),
                second.clone(),
            )
            .await,
        "a new run of an expired command",
    );
    let found = logged(store, CommandLookup::Key("old"))
        .await
        .expect("the new run is recorded");
    assert_eq!(
        found.command_id, second.command_id,
        "the new run replaced the expired entry"
    );
    assert_eq!(found.version, 2);
}

/// [`EventStore::sweep_commands`] removes the entries recorded before a time, oldest first, at
/// most `limit` per call, and nothing newer; events stay.
pub async fn sweeping_removes_old_command_entries_in_bounded_batches(store: Arc<dyn EventStore>) {
    let store = &*store;
    let s = stream_id("Account", "a1");
    let mut old = Vec::new();
    for i in 0..5u64 {
        let new = command("a1", Some(&format!("k{i}")));
        ok(
            store
                .append_command(&s, ExpectedVersion::Exact(i), batch("Deposited", i, 1), new)
                .await,
            "append_command",
        );
        old.push(format!("k{i}"));
    }
    // A command with a fresh id, recorded without a check, is swept too.
    let mut unchecked = command("a1", None);
    unchecked.deduplicate_since = None;
    ok(
        store
            .append_command(
                &s,
                ExpectedVersion::Exact(5),
                batch("Deposited", 5, 1),
                unchecked.clone(),
            )
            .await,
        "append_command",
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    ok(
        store
            .append_command(
                &s,
                ExpectedVersion::Exact(6),
                batch("Deposited", 6, 1),
                command("a1", Some("new")),
            )
            .await,
        "append_command",
    );
    assert_eq!(
        ok(store.sweep_commands(cutoff, 2).await, "sweep"),
        2,
        "at most `limit`"
    );
    assert_eq!(ok(store.sweep_commands(cutoff, 2).await, "sweep"), 2);
    assert_eq!(ok(store.sweep_commands(cutoff, 2).await, "sweep"), 2);
    assert_eq!(
        ok(store.sweep_commands(cutoff, 2).await, "sweep"),
        0,
        "nothing old is left"
    );
    for key in &old {
        assert_eq!(
            logged(store, CommandLookup::Key(key)).await,
            None,
            "{key} was swept"
        );
    }
    assert_eq!(
        logged(store, CommandLookup::Id(unchecked.command_id)).await,
        None,
        "the unchecked entry was swept"
    );
    assert!(
        logged(store, CommandLookup::Key("new")).await.is_some(),
        "an entry recorded after the cutoff stays"
    );
    assert_eq!(
        whole_stream(store, &s).await.len(),
        7,
        "sweeping removes no event"
    );
    // A swept key may run again.
    ok(
        store
            .append_command(
                &s,
                ExpectedVersion::Exact(7),
                batch("Deposited", 7, 1),
                command("a1", Some("k0")),
            )
            .await,
        "a swept command runs again",
    );
}

/// [`EventStore::try_lease`]: a lease is granted to a free name; dropping it frees the name, so
/// it is granted again; a fresh lease is not lost.
pub async fn a_lease_is_granted_and_freed(store: Arc<dyn EventStore>) {
    let lease = ok(store.try_lease("conformance-lease").await, "try_lease")
        .expect("a lease on a free name must be granted");
    assert!(!lease.is_lost(), "a fresh lease is not lost");
    let other = ok(store.try_lease("conformance-other").await, "try_lease");
    assert!(other.is_some(), "leases of different names are independent");
    drop(lease);
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        if ok(store.try_lease("conformance-lease").await, "try_lease").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a dropped lease must be freed so it is granted again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tags, queries and conditional appends
// ---------------------------------------------------------------------------------------------

/// A new event of `event_type` numbered `n`, with `tags`.
fn tagged(event_type: &str, n: u64, tags: &[&str]) -> NewEvent {
    let mut event = numbered(event_type, n);
    event.metadata.tags = tags.iter().copied().collect();
    event
}

/// Every event matching `query` after `after`, read in pages of `page`.
async fn query_all(
    store: &dyn EventStore,
    query: &EventQuery,
    after: u64,
    page: usize,
) -> Vec<Arc<RecordedEvent>> {
    let mut events = Vec::new();
    let mut from = after;
    loop {
        let read = ok(store.read_query(query, from, page).await, "read_query");
        assert!(read.scanned_through >= from, "read_query went backwards");
        let count = read.events.len() + read.undecodable.len();
        assert!(count <= page, "read_query returned more than asked");
        events.extend(read.events);
        if count < page {
            return events;
        }
        from = read.scanned_through;
    }
}

/// The positions of the stored events that `query` matches, after `after`, found by reading the
/// whole global order: what `read_query` must return.
async fn matching_positions(store: &dyn EventStore, query: &EventQuery, after: u64) -> Vec<u64> {
    read_all_events(store, after, &EventFilter::All)
        .await
        .iter()
        .filter(|e| query.matches(&e.event_type, &e.metadata.tags))
        .map(|e| e.global_position)
        .collect()
}

/// A library: lends and returns tagged by member and book, across streams, and events that
/// carry no tag or other tags.
async fn fill_library(store: &dyn EventStore) {
    let appends: Vec<(&str, Vec<NewEvent>)> = vec![
        (
            "Lending-b1",
            vec![tagged("BookLent", 1, &["member:m1", "book:b1"])],
        ),
        ("Member-m1", vec![tagged("MemberJoined", 2, &["member:m1"])]),
        (
            "Lending-b2",
            vec![tagged("BookLent", 3, &["member:m2", "book:b2"])],
        ),
        (
            "Other-1",
            vec![numbered("BookLent", 4), numbered("Noise", 5)],
        ),
        (
            "Lending-b1",
            vec![
                tagged("BookReturned", 6, &["member:m1", "book:b1"]),
                tagged("BookLent", 7, &["member:m2", "book:b1"]),
            ],
        ),
        (
            "Lending-b3",
            vec![tagged("BookLent", 8, &["member:m1", "book:b3"])],
        ),
        ("Catalog-b1", vec![tagged("BookAdded", 9, &["book:b1"])]),
    ];
    for (stream, events) in appends {
        ok(
            store.append(stream, ExpectedVersion::Any, events).await,
            "append",
        );
    }
}

/// [`EventStore::read_query`] returns, in position order and across streams, exactly the
/// events whose type is one of an item's types and that carry all of its tags, for any of the
/// query's items: tags are stored with every append, plain or conditional.
pub async fn read_query_selects_by_types_and_tags_across_streams(store: Arc<dyn EventStore>) {
    let store = &*store;
    fill_library(store).await;
    let lends = EventQuery::types(["BookLent", "BookReturned"]);
    let queries = [
        (
            "member m1's lends",
            lends.clone().and(EventQuery::tag("member:m1")),
        ),
        (
            "member m1 or book b1",
            lends
                .clone()
                .and(EventQuery::tag("member:m1").or(EventQuery::tag("book:b1"))),
        ),
        ("everything tagged book:b1", EventQuery::tag("book:b1")),
        ("both tags", EventQuery::tags(["member:m2", "book:b1"])),
        ("a type alone", EventQuery::types(["Noise"])),
        ("every event", EventQuery::all()),
        ("no event", EventQuery::none()),
        ("a tag nobody has", EventQuery::tag("member:m9")),
    ];
    for (what, query) in &queries {
        let want = matching_positions(store, query, 0).await;
        let got = positions(&query_all(store, query, 0, 1_000).await);
        assert_eq!(got, want, "read_query of {what} ({query})");
    }
    let got = positions(&query_all(store, &queries[1].1, 0, 1_000).await);
    assert_eq!(got, vec![1, 6, 7, 8], "member m1 or book b1: positions");
    let events = query_all(store, &queries[0].1, 0, 1_000).await;
    assert_eq!(
        events[0].metadata.tags[..],
        ["member:m1".to_owned(), "book:b1".to_owned()],
        "tags come back with the event, in their order"
    );
    assert_eq!(&*events[0].stream_id, "Lending-b1");
}

/// [`EventStore::read_query`] reads after a position, in pages of at most `max_count`, and its
/// `scanned_through` lets a reader continue without missing or repeating an event.
pub async fn read_query_pages_and_reports_how_far_it_scanned(store: Arc<dyn EventStore>) {
    let store = &*store;
    fill_library(store).await;
    let query = EventQuery::tag("book:b1");
    let want = matching_positions(store, &query, 0).await;
    for page in [1, 2, 3, 100] {
        let got = positions(&query_all(store, &query, 0, page).await);
        assert_eq!(got, want, "pages of {page}");
    }
    let after = want[1];
    let got = positions(&query_all(store, &query, after, 2).await);
    assert_eq!(got, want[2..].to_vec(), "after position {after}");
    let empty = ok(
        store.read_query(&query, 0, 0).await,
        "read_query of 0 events",
    );
    assert!(empty.events.is_empty(), "max_count 0 reads nothing");
    let last = ok(
        store
            .read_query(&query, *want.last().unwrap_or(&0), 10)
            .await,
        "read_query",
    );
    assert!(last.events.is_empty());
    assert!(
        last.scanned_through >= *want.last().unwrap_or(&0),
        "scanned_through never goes below `after`"
    );
    let head = head_of(store);
    let none = ok(
        store.read_query(&EventQuery::tag("member:m9"), 0, 10).await,
        "read_query",
    );
    assert!(none.events.is_empty());
    assert_eq!(
        none.scanned_through, head,
        "a page that is not full scanned to the head"
    );
}

/// [`EventStore::append_if`] appends at the end of its stream only while no event matching
/// the condition's query has a position above its `after`; otherwise nothing is appended and
/// the error names a matching position. Events the query does not match never refuse it.
pub async fn append_if_appends_only_while_nothing_matching_appeared(store: Arc<dyn EventStore>) {
    let store = &*store;
    let member = EventQuery::types(["BookLent"]).and(EventQuery::tag("member:m1"));
    let anything_of_m1 = AppendCondition {
        query: member.clone(),
        after: 0,
    };
    let first = ok(
        store
            .append_if(
                "Lending-b1",
                vec![tagged("BookLent", 1, &["member:m1", "book:b1"])],
                &anything_of_m1,
                None,
            )
            .await,
        "a condition that holds on an empty store",
    );
    assert_eq!(
        (first.version, first.first_position, first.last_position),
        (1, 1, 1)
    );
    // The same condition again: the event just appended matches it.
    let head = head_of(store);
    match store
        .append_if(
            "Lending-b2",
            vec![tagged("BookLent", 2, &["member:m1", "book:b2"])],
            &anything_of_m1,
            None,
        )
        .await
    {
        Err(StoreError::ConditionFailed {
            stream,
            after,
            position,
            ..
        }) => {
            assert_eq!(stream, "Lending-b2");
            assert_eq!(after, 0);
            assert_eq!(position, 1, "the matching event's position");
        }
        other => panic!("a violated condition must fail with ConditionFailed, got {other:?}"),
    }
    assert_eq!(head_of(store), head, "a refused append appends nothing");
    assert_eq!(ok(store.stream_version("Lending-b2").await, "version"), 0);
    // Events the query does not match (another member, another type, no tag) do not refuse it.
    for (stream, event) in [
        (
            "Lending-b3",
            tagged("BookLent", 3, &["member:m2", "book:b3"]),
        ),
        ("Member-m1", tagged("MemberJoined", 4, &["member:m1"])),
        ("Other", numbered("BookLent", 5)),
    ] {
        ok(
            store
                .append(stream, ExpectedVersion::Any, vec![event])
                .await,
            "append",
        );
    }
    let after_first = AppendCondition {
        query: member.clone(),
        after: 1,
    };
    let second = ok(
        store
            .append_if(
                "Lending-b1",
                vec![
                    tagged("BookReturned", 6, &["member:m1", "book:b1"]),
                    tagged("BookLent", 7, &["member:m1", "book:b1"]),
                ],
                &after_first,
                None,
            )
            .await,
        "a condition that holds after the position read",
    );
    assert_eq!(second.version, 3, "appended at the end of its stream");
    assert_eq!(second.last_position, second.first_position + 1);
    assert_eq!(second.last_position, head_of(store));
    // An empty append checks the condition and appends nothing.
    match store
        .append_if("Lending-b1", Vec::new(), &after_first, None)
        .await
    {
        Err(StoreError::ConditionFailed { position, .. }) => {
            assert_eq!(position, second.last_position)
        }
        other => panic!("an empty append checks the condition, got {other:?}"),
    }
    let holds = AppendCondition {
        query: member,
        after: second.last_position,
    };
    let empty = ok(
        store
            .append_if("Lending-b1", Vec::new(), &holds, None)
            .await,
        "an empty append whose condition holds",
    );
    assert_eq!(
        (empty.version, empty.first_position, empty.last_position),
        (3, 0, 0)
    );
    let found = query_all(
        store,
        &EventQuery::types(["BookLent", "BookReturned"]).and(EventQuery::tag("member:m1")),
        0,
        100,
    )
    .await;
    assert_eq!(
        positions(&found),
        vec![1, second.first_position, second.last_position],
        "conditional appends are tagged and read back"
    );
}

/// [`EventStore::append_if`] with a command records it in the command log with its events; a
/// second run of the same key is refused as a duplicate before its condition is looked at.
pub async fn append_if_records_its_command_and_refuses_a_duplicate_first(
    store: Arc<dyn EventStore>,
) {
    let store = &*store;
    let condition = AppendCondition {
        query: EventQuery::tag("book:b1"),
        after: 0,
    };
    let mut new = command("b1", Some("lend-once"));
    new.aggregate = Cow::Borrowed("Lending");
    let appended = ok(
        store
            .append_if(
                "Lending-b1",
                vec![tagged("BookLent", 1, &["book:b1"])],
                &condition,
                Some(new.clone()),
            )
            .await,
        "append_if with a command",
    );
    let record = logged(store, CommandLookup::Key("lend-once"))
        .await
        .expect("the command is in the log");
    assert_eq!(record.command_id, new.command_id);
    assert_eq!(record.stream_id, "Lending-b1");
    assert_eq!(record.version, appended.version);
    assert_eq!(record.last_position, appended.last_position);
    // The same key again, with a condition that the first run's event now violates.
    let mut again = command("b1", Some("lend-once"));
    again.aggregate = Cow::Borrowed("Lending");
    match store
        .append_if(
            "Lending-b1",
            vec![tagged("BookLent", 2, &["book:b1"])],
            &condition,
            Some(again),
        )
        .await
    {
        Err(StoreError::DuplicateCommand { record }) => {
            assert_eq!(record.command_id, new.command_id)
        }
        other => panic!("a resent command is a duplicate first, got {other:?}"),
    }
    // A command whose condition fails is not recorded.
    let mut refused = command("b1", Some("refused"));
    refused.aggregate = Cow::Borrowed("Lending");
    let result = store
        .append_if(
            "Lending-b1",
            vec![tagged("BookLent", 3, &["book:b1"])],
            &condition,
            Some(refused),
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::ConditionFailed { .. })),
        "got {result:?}"
    );
    assert!(
        logged(store, CommandLookup::Key("refused")).await.is_none(),
        "a refused append records no command"
    );
    assert_eq!(head_of(store), 1);
}

/// Of many conditional appends made after the same read, with one query, exactly one succeeds
/// and every other fails with [`StoreError::ConditionFailed`]; appends whose queries do not
/// meet all succeed.
pub async fn concurrent_conditional_appends_on_one_query_have_one_winner(
    store: Arc<dyn EventStore>,
) {
    const RUNS: usize = 16;
    ok(
        store
            .append(
                "Seed",
                ExpectedVersion::Any,
                vec![tagged("Seeded", 0, &["book:b1"])],
            )
            .await,
        "append",
    );
    let after = head_of(&*store);
    let barrier = Arc::new(Barrier::new(RUNS * 2));
    let mut tasks = Vec::new();
    for i in 0..RUNS * 2 {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            // The first half compete for book b1; each of the second half has a book of its own.
            let book = if i < RUNS {
                "book:b1".to_owned()
            } else {
                format!("book:own-{i}")
            };
            let condition = AppendCondition {
                query: EventQuery::types(["BookLent"]).and(EventQuery::tag(book.clone())),
                after,
            };
            barrier.wait().await;
            let result = store
                .append_if(
                    &format!("Lending-{i}"),
                    vec![tagged("BookLent", i as u64, &[book.as_str()])],
                    &condition,
                    None,
                )
                .await;
            (i, result)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, result) = join(task).await;
        match result {
            Ok(_) => winners.push(i),
            Err(StoreError::ConditionFailed { .. }) if i < RUNS => {}
            Err(other) => panic!("conditional append {i} failed with {other}"),
        }
    }
    let competing = winners.iter().filter(|&&i| i < RUNS).count();
    assert_eq!(
        competing, 1,
        "exactly one lend of book b1 may succeed: {winners:?}"
    );
    assert_eq!(winners.len(), RUNS + 1, "every own book is lent");
    let lent = query_all(&*store, &EventQuery::types(["BookLent"]), 0, 1_000).await;
    assert_eq!(lent.len(), RUNS + 1, "only the winners' events are stored");
}
