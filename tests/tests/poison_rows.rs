//! Faults on the read side: a stored row that does not decode is a failure of that event alone
//! (dead-lettered with its raw row, skipped, or stopping the handler, as its policy says), for
//! a handler, a projection and a saga alike, and a store that fails or panics inside a
//! handler's task makes the handler retry, visibly, until it finishes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::{EventFilter, StoredRow, Subscription};
use evoq::{
    Config, ExpectedVersion, FailureKind, HandlerConfig, HandlerOptions, HandlerStatus, OnError,
    RetryStrategy,
};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::faulty_store::FaultyStore;
use evoq_tests::ledger::*;

/// Records every `Alpha`.
#[derive(Clone, Default)]
struct Recorder {
    log: Log,
}

#[event_handler(name = "recorder")]
impl Recorder {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

/// Two attempts, no delay, then `on_error`.
fn policy(on_error: OnError) -> HandlerOptions {
    HandlerOptions::new()
        .max_attempts(2)
        .retry(RetryStrategy::immediate())
        .on_error(on_error)
}

/// Tiny store back-offs are not configurable; tiny handler delays are.
fn quick() -> Config {
    Config {
        handlers: HandlerConfig {
            retry: RetryStrategy::fixed(Duration::from_millis(5)),
            ..HandlerConfig::default()
        },
        ..Config::default()
    }
}

/// Eight `Alpha` events (n = 1..=8) on one ledger, appended straight to the store: positions
/// 1..=8.
async fn eight_events(store: &Arc<dyn EventStore>) {
    let events = (1..=8).map(|n| raw(Kind::A, "l1", n)).collect();
    store
        .append(&ledger_stream("l1"), ExpectedVersion::NoStream, events)
        .await
        .expect("append");
}

/// Breaks the metadata of the row at `position` (it no longer decodes as JSON).
async fn damage_metadata(place: &Place, position: u64) {
    place
        .execute(
            &format!("UPDATE events SET metadata = CAST('{{not json' AS BLOB) WHERE position = {position}"),
            &format!(
                "UPDATE {{s}}.events SET metadata = convert_to('{{not json', 'UTF8') WHERE position = {position}"
            ),
        )
        .await;
}

/// Repairs the metadata of the row at `position`.
async fn repair_metadata(place: &Place, position: u64) {
    place
        .execute(
            &format!("UPDATE events SET metadata = CAST('{{}}' AS BLOB) WHERE position = {position}"),
            &format!(
                "UPDATE {{s}}.events SET metadata = convert_to('{{}}', 'UTF8') WHERE position = {position}"
            ),
        )
        .await;
}

/// A fresh place on `backend` holding eight events, the fourth with broken metadata.
async fn poisoned(backend: Backend, label: &str) -> Option<(Place, Arc<dyn EventStore>)> {
    let place = Place::new(backend, label).await?;
    let store = place.open().await;
    eight_events(&store).await;
    damage_metadata(&place, 4).await;
    Some((place, store))
}

async fn one_bad_row_among_seven_good_events_is_dead_lettered_with_its_raw_row(backend: Backend) {
    let Some((_place, store)) = poisoned(backend, "poison_dead_letter").await else {
        return;
    };
    let recorder = Recorder::default();
    let log = recorder.log.clone();
    let app = Evoq::builder()
        .config(quick())
        .shared_store(Arc::clone(&store))
        .handler_with(recorder, policy(OnError::DeadLetter))
        .start()
        .await
        .unwrap();
    app.wait_for_named("recorder", 8)
        .await
        .expect("the handler reaches the head");

    assert_eq!(
        log.positions(),
        [1, 2, 3, 5, 6, 7, 8],
        "every good event is handled, the ones after the bad row too, each once"
    );
    let letters = app.dead_letters("recorder").list(0, 10).await.unwrap();
    assert_eq!(letters.len(), 1, "the bad row alone is dead-lettered");
    let letter = &letters[0];
    assert_eq!(letter.kind, FailureKind::Storage);
    assert_eq!(letter.event.global_position, 4);
    assert_eq!(letter.event.stream_id(), ledger_stream("l1"));
    assert_eq!(letter.event.stream_version, 4);
    assert_eq!(letter.event.event_type, "Alpha");
    assert_eq!(letter.attempts, 2, "{letter:?}");
    assert!(
        letter.error.contains("position 4") && letter.error.contains("metadata"),
        "the error names the row and the column: {}",
        letter.error
    );
    assert!(!letter.reason.is_empty());
    let raw = letter.raw_row.as_ref().expect("the raw row is kept");
    let column = |name: &str| {
        raw.iter()
            .find(|(column, _)| column == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("column `{name}` in {raw:?}"))
    };
    assert_eq!(column("metadata"), "{not json");
    assert_eq!(column("position"), "4");
    assert_eq!(column("stream_id"), ledger_stream("l1"));
    let stats = &app.handler_stats()[0];
    assert_eq!(stats.dead_letters, 1);
    assert_eq!(stats.status, HandlerStatus::Running);
    app.stop().await;
}

#[tokio::test]
async fn one_bad_row_among_seven_good_events_is_dead_lettered_with_its_raw_row_on_sqlite() {
    one_bad_row_among_seven_good_events_is_dead_lettered_with_its_raw_row(Backend::Sqlite).await;
}

#[tokio::test]
async fn one_bad_row_among_seven_good_events_is_dead_lettered_with_its_raw_row_on_postgres() {
    one_bad_row_among_seven_good_events_is_dead_lettered_with_its_raw_row(Backend::Postgres).await;
}

async fn a_bad_row_under_skip_is_skipped_and_under_stop_stops_the_handler(backend: Backend) {
    let Some((_place, store)) = poisoned(backend, "poison_policies").await else {
        return;
    };
    let skipper = Recorder::default();
    let skipped_log = skipper.log.clone();
    let stopper = Recorder::default();
    let stopped_log = stopper.log.clone();
    let app = Evoq::builder()
        .config(quick())
        .shared_store(Arc::clone(&store))
        .handler_with(skipper, policy(OnError::Skip).name("skipper"))
        .handler_with(stopper, policy(OnError::Stop).name("stopper"))
        .start()
        .await
        .unwrap();
    app.wait_for_named("skipper", 8)
        .await
        .expect("the skipper reaches the head");
    assert_eq!(skipped_log.positions(), [1, 2, 3, 5, 6, 7, 8]);
    assert!(
        app.dead_letters("skipper")
            .list(0, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let waited = tokio::time::timeout(Duration::from_secs(5), app.wait_for_named("stopper", 8))
        .await
        .expect("a wait on a stopped handler fails at once, it does not hang");
    assert!(
        matches!(&waited, Err(evoq::Error::HandlerStopped { handler, reason })
            if handler == "stopper" && reason.contains("position 4")),
        "{waited:?}"
    );
    assert_eq!(
        stopped_log.positions(),
        [1, 2, 3],
        "the stopper handles what comes before the bad row, nothing after it"
    );
    let stats = app.handler_stats();
    let stopper = stats.iter().find(|s| s.name == "stopper").unwrap();
    assert!(
        matches!(&stopper.status, HandlerStatus::Stopped { reason } if reason.contains("cannot be read")),
        "{:?}",
        stopper.status
    );
    assert_eq!(stopper.position, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_row_under_skip_is_skipped_and_under_stop_stops_the_handler_on_sqlite() {
    a_bad_row_under_skip_is_skipped_and_under_stop_stops_the_handler(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_bad_row_under_skip_is_skipped_and_under_stop_stops_the_handler_on_postgres() {
    a_bad_row_under_skip_is_skipped_and_under_stop_stops_the_handler(Backend::Postgres).await;
}

#[tokio::test]
async fn a_repaired_row_is_delivered_by_the_retry_of_its_dead_letter() {
    let Some((place, store)) = poisoned(Backend::Sqlite, "poison_repair").await else {
        return;
    };
    let recorder = Recorder::default();
    let log = recorder.log.clone();
    let app = Evoq::builder()
        .config(quick())
        .shared_store(Arc::clone(&store))
        .handler_with(recorder, policy(OnError::DeadLetter))
        .start()
        .await
        .unwrap();
    app.wait_for_named("recorder", 8).await.unwrap();
    let queue = app.dead_letters("recorder");
    let letter = queue.list(0, 10).await.unwrap().remove(0);

    let again = queue.retry(letter.event.event_id).await;
    assert!(
        matches!(&again, Err(evoq::Error::DeadLetterRetryFailed { error, .. }) if error.contains("still cannot be read")),
        "a retry of a row still broken fails and keeps the entry: {again:?}"
    );
    assert_eq!(queue.list(0, 10).await.unwrap()[0].attempts, 3);

    repair_metadata(&place, 4).await;
    queue
        .retry(letter.event.event_id)
        .await
        .expect("the repaired row is delivered");
    assert!(queue.list(0, 10).await.unwrap().is_empty());
    let mut positions = log.positions();
    positions.sort_unstable();
    assert_eq!(positions, [1, 2, 3, 4, 5, 6, 7, 8]);
    app.stop().await;
}

#[tokio::test]
async fn a_page_read_returns_a_bad_row_beside_the_events_around_it() {
    let Some((_place, store)) = poisoned(Backend::Sqlite, "poison_page").await else {
        return;
    };
    let page = store.read_all(0, 100, &EventFilter::All).await.unwrap();
    let positions: Vec<u64> = page.events.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, [1, 2, 3, 5, 6, 7, 8]);
    assert_eq!(page.scanned_through, 8);
    assert_eq!(page.undecodable.len(), 1);
    assert_eq!(page.undecodable[0].global_position, 4);
    assert!(
        page.undecodable[0].event_id.is_some(),
        "the id still decodes"
    );

    let full = store.read_all(0, 4, &EventFilter::All).await.unwrap();
    assert_eq!(
        (
            full.events.len(),
            full.undecodable.len(),
            full.scanned_through
        ),
        (3, 1, 4),
        "a bad row counts as one row of a full page"
    );

    // A subscription yields the row in its place; its event readers meet it as one error.
    let mut rows = Subscription::new(Arc::clone(&store), EventFilter::All, 0);
    let got: Vec<(u64, bool)> = rows
        .next_rows()
        .await
        .unwrap()
        .iter()
        .map(|row| (row.global_position(), matches!(row, StoredRow::Event(_))))
        .collect();
    assert_eq!(
        got,
        [
            (1, true),
            (2, true),
            (3, true),
            (4, false),
            (5, true),
            (6, true),
            (7, true),
            (8, true)
        ]
    );
    let mut events = Subscription::new(Arc::clone(&store), EventFilter::All, 0);
    let mut seen = Vec::new();
    let mut errors = 0;
    while seen.len() < 7 {
        match events.next().await {
            Ok(event) => seen.push(event.global_position),
            Err(evoq::StoreError::Integrity { location, .. }) => {
                assert!(location.contains("position 4"), "{location}");
                errors += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((seen, errors), (vec![1, 2, 3, 5, 6, 7, 8], 1));
}

#[tokio::test]
async fn a_store_panicking_in_read_all_and_save_checkpoint_is_retried_until_the_handler_finishes() {
    let store = FaultyStore::new();
    let recorder = Recorder::default();
    let log = recorder.log.clone();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler(recorder)
        .start()
        .await
        .unwrap();
    store.panic_read_all.store(3, Ordering::SeqCst);
    store.panic_checkpoints.store(2, Ordering::SeqCst);
    let dispatched = app
        .command(Emit::new("l1", &[Kind::A, Kind::A, Kind::A], 1))
        .dispatch()
        .await
        .unwrap();
    app.wait_for::<Recorder>(dispatched.token)
        .await
        .expect("the handler recovers from the panics and reaches the events");
    assert_eq!(log.positions(), [1, 2, 3], "each event handled once");
    let more = app
        .command(Emit::new("l1", &[Kind::A], 4))
        .dispatch()
        .await
        .unwrap();
    app.wait_for::<Recorder>(more.token).await.unwrap();
    assert_eq!(log.positions(), [1, 2, 3, 4]);
    assert_eq!(
        store.panic_read_all.load(Ordering::SeqCst),
        0,
        "the panics happened"
    );
    // The checkpoint is saved once the store stops panicking.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.panic_checkpoints.load(Ordering::SeqCst) > 0
        || store.checkpoint_saves.load(Ordering::SeqCst) == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the checkpoint is never saved"
        );
        let n = 10 + store.checkpoint_saves.load(Ordering::SeqCst) as u64;
        let next = app
            .command(Emit::new("l1", &[Kind::A], n))
            .dispatch()
            .await
            .unwrap();
        app.wait_for::<Recorder>(next.token).await.unwrap();
    }
    let stats = &app.handler_stats()[0];
    assert!(stats.faults >= 3, "the faults are counted: {stats:?}");
    assert_eq!(stats.status, HandlerStatus::Running, "{stats:?}");
    app.stop().await;
    assert_eq!(
        store.inner.load_checkpoint("recorder").await.unwrap(),
        Some(*store.inner.head().borrow()),
        "the last checkpoint is saved at the stop"
    );
}

#[tokio::test]
async fn a_failing_store_shows_the_handler_retrying_with_the_reason_then_running_again() {
    let store = FaultyStore::new();
    let recorder = Recorder::default();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler(recorder)
        .start()
        .await
        .unwrap();
    store.fail_read_all.store(true, Ordering::SeqCst);
    let dispatched = app
        .command(Emit::new("l1", &[Kind::A], 1))
        .dispatch()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reason = loop {
        if let HandlerStatus::Retrying { reason } = &app.handler_stats()[0].status {
            break reason.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never shown as retrying"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        reason.contains("injected read_all failure"),
        "the reason is the store's error: {reason}"
    );
    store.fail_read_all.store(false, Ordering::SeqCst);
    app.wait_for::<Recorder>(dispatched.token).await.unwrap();
    assert_eq!(app.handler_stats()[0].status, HandlerStatus::Running);
    app.stop().await;
    let stats = &app.handler_stats()[0];
    assert!(
        matches!(&stats.status, HandlerStatus::Stopped { reason } if reason.contains("runtime stopped")),
        "{stats:?}"
    );
}

/// Every `Alpha`'s `n`, by event position, in an in-memory read model.
struct AlphaTally {
    model: InMemoryReadModel,
}

#[projection(name = "alpha_tally", read_model = model)]
impl AlphaTally {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.model.put(meta.global_position().to_string(), &e.n)?;
        Ok(())
    }
}

/// One instance per ledger, keeping every `n` it was given in order.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct AlphaSaga {
    seen: Vec<u64>,
}

#[saga(name = "alpha_saga")]
impl AlphaSaga {
    #[starts(by = id)]
    fn alpha(&mut self, e: &Alpha) -> Commands {
        self.seen.push(e.n);
        Commands::none()
    }
}

/// The positions a read model holds, in order.
fn positions_in(model: &InMemoryReadModel) -> Vec<u64> {
    let mut positions: Vec<u64> = model
        .to_map()
        .keys()
        .map(|key| key.parse().expect("a position"))
        .collect();
    positions.sort_unstable();
    positions
}

async fn a_bad_row_met_by_a_projection_or_a_saga_fails_that_event_alone(backend: Backend) {
    let Some((_place, store)) = poisoned(backend, "poison_consumers").await else {
        return;
    };
    let model = InMemoryReadModel::new();
    let app = Evoq::builder()
        .config(quick())
        .shared_store(Arc::clone(&store))
        .projection_with(
            AlphaTally {
                model: model.clone(),
            },
            policy(OnError::DeadLetter),
        )
        .saga_with::<AlphaSaga>(policy(OnError::DeadLetter))
        .start()
        .await
        .unwrap();
    for name in ["alpha_tally", "alpha_saga"] {
        app.wait_for_named(name, 8)
            .await
            .unwrap_or_else(|e| panic!("{name} reaches the head past the bad row: {e}"));
    }

    assert_eq!(
        positions_in(&model),
        [1, 2, 3, 5, 6, 7, 8],
        "the projection applies every good event, those after the bad row too"
    );
    let saga = app
        .saga_state::<AlphaSaga>("l1")
        .await
        .unwrap()
        .expect("the instance lives");
    assert_eq!(
        saga.seen,
        [1, 2, 3, 5, 6, 7, 8],
        "the saga is given every good event once, in order"
    );
    for name in ["alpha_tally", "alpha_saga"] {
        let letters = app.dead_letters(name).list(0, 10).await.unwrap();
        assert_eq!(
            letters.len(),
            1,
            "{name}: the bad row alone is dead-lettered"
        );
        assert_eq!(letters[0].kind, FailureKind::Storage, "{name}");
        assert_eq!(letters[0].event.global_position, 4, "{name}");
        assert!(letters[0].raw_row.is_some(), "{name}: the raw row is kept");
        let stats = app
            .handler_stats()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap();
        assert_eq!(stats.status, HandlerStatus::Running, "{name}");
        assert_eq!(stats.position, 8, "{name}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_bad_row_met_by_a_projection_or_a_saga_fails_that_event_alone_on_sqlite() {
    a_bad_row_met_by_a_projection_or_a_saga_fails_that_event_alone(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_bad_row_met_by_a_projection_or_a_saga_fails_that_event_alone_on_postgres() {
    a_bad_row_met_by_a_projection_or_a_saga_fails_that_event_alone(Backend::Postgres).await;
}
