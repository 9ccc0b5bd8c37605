//! `Evoq::stop` (docs/semantics.md §2.5): new dispatches fail with `Error::Stopped`, commands
//! already accepted complete before `stop` returns, so the flushed store (and, on SQLite, the
//! database file once the store is closed) holds them: in a middleware, in a slow handler, keyed
//! with a caller that gave up, and under a race of dispatches with the stop.

use std::sync::Arc;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::Direction;
use evoq::store::sqlite::SqliteStore;
use evoq_tests::temp::TempDir;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Bumped {
    id: String,
}

#[derive(Command, Debug)]
struct Bump {
    #[aggregate_id]
    id: String,
    /// How long the handler blocks its thread.
    sleep_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Counter {
    bumps: u64,
}

#[aggregate]
impl Counter {
    #[handles]
    fn bump(&self, command: &Bump) -> Result<Bumped, Never> {
        if command.sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(command.sleep_ms));
        }
        Ok(Bumped {
            id: command.id.clone(),
        })
    }

    #[apply]
    fn bumped(&mut self, _: &Bumped) {
        self.bumps += 1;
    }
}

/// A middleware that waits before every dispatch.
struct Slow(Duration);

#[evoq::async_trait]
impl Middleware for Slow {
    async fn before_dispatch(&self, _: &mut Pipeline<'_>) {
        tokio::time::sleep(self.0).await;
    }
}

fn bump(id: &str, sleep_ms: u64) -> Bump {
    Bump {
        id: id.into(),
        sleep_ms,
    }
}

async fn events_of(store: &Arc<dyn EventStore>, id: &str) -> usize {
    store
        .read_stream(&format!("Counter-{id}"), 1, Direction::Forward, usize::MAX)
        .await
        .expect("the stream reads")
        .len()
}

/// Starts `dispatch` in a task of its own, waits until it is under way, stops the runtime and
/// closes the store: the command succeeded and was in the store when `stop` returned.
async fn a_command_under_way_at_stop_completes_first(
    app: Evoq,
    store: SqliteStore,
    id: &str,
    dispatch: impl Future<Output = Result<Dispatched<Counter>, evoq::Error>> + Send + 'static,
) {
    let under_way = tokio::spawn(dispatch);
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.stop().await;
    let at_stop = events_of(app.store(), id).await;
    store.close().await.expect("the store closes");
    let result = under_way.await.expect("the dispatch's task");
    assert!(
        result.is_ok(),
        "a command accepted before the stop completes: {result:?}"
    );
    assert_eq!(
        at_stop, 1,
        "the command's event is stored when `stop` returns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_its_middleware_at_stop_is_stored_before_stop_returns() {
    let dir = TempDir::new("stop-middleware");
    let store = SqliteStore::open(dir.file("events.db")).await.unwrap();
    let app = Evoq::builder()
        .store(store.clone())
        .middleware(Slow(Duration::from_millis(400)))
        .start()
        .await
        .unwrap();
    let caller = app.clone();
    a_command_under_way_at_stop_completes_first(app, store, "m", async move {
        caller.dispatch(bump("m", 0)).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_a_slow_handler_at_stop_is_stored_before_stop_returns() {
    let dir = TempDir::new("stop-handler");
    let store = SqliteStore::open(dir.file("events.db")).await.unwrap();
    let app = Evoq::builder().store(store.clone()).start().await.unwrap();
    let caller = app.clone();
    a_command_under_way_at_stop_completes_first(app, store, "h", async move {
        caller.dispatch(bump("h", 400)).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_command_whose_caller_gave_up_is_stored_before_stop_returns() {
    let dir = TempDir::new("stop-keyed");
    let path = dir.file("events.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let app = Evoq::builder().store(store.clone()).start().await.unwrap();
    // The caller's deadline passes while the handler runs: the command goes on in a task of
    // its own, and a stop waits for it.
    let error = app
        .command(bump("k", 400))
        .idempotency_key("k-1")
        .timeout(Duration::from_millis(100))
        .dispatch()
        .await
        .unwrap_err();
    assert!(matches!(error, evoq::Error::Timeout { .. }), "{error:?}");
    app.stop().await;
    assert_eq!(events_of(app.store(), "k").await, 1);
    store.close().await.expect("the store closes");
    drop(app);

    // The key answers with the first run after a restart: it ran once.
    let store = SqliteStore::open(&path).await.unwrap();
    let app = Evoq::builder().store(store.clone()).start().await.unwrap();
    let again = app
        .command(bump("k", 0))
        .idempotency_key("k-1")
        .dispatch()
        .await
        .expect("the resend answers");
    assert_eq!(again.version, 1, "the resend gets the first run's result");
    assert_eq!(events_of(app.store(), "k").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dispatch_racing_a_stop_is_either_refused_or_stored_when_stop_returns() {
    let dir = TempDir::new("stop-race");
    let store = SqliteStore::open(dir.file("events.db")).await.unwrap();
    let app = Evoq::builder().store(store.clone()).start().await.unwrap();
    let mut callers = Vec::new();
    for n in 0..200 {
        let app = app.clone();
        callers.push(tokio::spawn(async move {
            // Spread over the stop: some before, some during, some after.
            tokio::time::sleep(Duration::from_micros(n * 150)).await;
            app.dispatch(bump(&format!("r{}", n % 20), 0)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.stop().await;
    let stored = (*app.store().head().borrow()) as usize;
    let all = app
        .store()
        .read_all(0, usize::MAX, &evoq::store::EventFilter::All)
        .await
        .expect("the store reads")
        .events
        .len();
    store.close().await.expect("the store closes");
    let mut succeeded = 0;
    for caller in callers {
        match caller.await.expect("the caller's task") {
            Ok(_) => succeeded += 1,
            Err(evoq::Error::Stopped { .. }) => {}
            Err(other) => panic!("a dispatch racing a stop is refused or done, not {other:?}"),
        }
    }
    assert!(succeeded > 0, "some dispatches ran before the stop");
    assert_eq!(
        all, succeeded,
        "every successful dispatch is in the store when stop returns, and nothing else"
    );
    assert_eq!(stored, succeeded);
}
