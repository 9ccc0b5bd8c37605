//! Requests kept in the store for a handler's task (`HandlerRequest`): what an operator's tool
//! (or another node) saves is carried out by the running application, between two events, and
//! removed once done. Runs on the in-memory store and on SQLite.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use evoq::prelude::*;
use evoq::store::{HandlerRequest, RequestedAction};
use evoq::{HandlerOptions, RetryStrategy};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::ledger::*;

/// Fails every `Alpha` while `healthy` is false.
#[derive(Clone, Default)]
struct Picky {
    healthy: Arc<AtomicBool>,
    log: Log,
}

#[event_handler(name = "picky")]
impl Picky {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        if !self.healthy.load(Ordering::SeqCst) {
            return Err(Failed(format!("not now: {}", e.n)));
        }
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

/// Counts `Alpha` events into an in-memory read model.
struct Counter {
    model: InMemoryReadModel,
    log: Log,
}

#[projection(name = "counter", read_model = model)]
impl Counter {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.log.push(Seen::of(meta, e.n));
        let seen: u64 = self.model.get("alphas")?.unwrap_or(0);
        self.model.put("alphas", &(seen + 1))?;
        Ok(())
    }
}

fn request(handler: &str, action: RequestedAction) -> HandlerRequest {
    HandlerRequest {
        id: evoq::Uuid::now_v7(),
        handler: handler.to_owned(),
        action,
        requested_at: SystemTime::now(),
    }
}

/// Waits until the request is gone from the store (carried out); panics after 10 s.
async fn carried_out(store: &Arc<dyn EventStore>, handler: &str, id: evoq::Uuid) {
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        while store.load_request(handler, id).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "the request was never carried out");
}

async fn a_retry_requested_through_the_store_is_carried_out_by_the_running_handler(
    backend: Backend,
) {
    let Some(place) = Place::new(backend, "request_retry").await else {
        return;
    };
    let store = place.open().await;
    let picky = Picky::default();
    let healthy = Arc::clone(&picky.healthy);
    let log = picky.log.clone();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .handler_with(
            picky,
            HandlerOptions::new()
                .max_attempts(1)
                .retry(RetryStrategy::immediate()),
        )
        .start()
        .await
        .unwrap();
    let done = app.dispatch(Emit::new("r", &[Kind::A], 1)).await.unwrap();
    app.wait_for::<Picky>(done.token).await.unwrap();
    let letter = app
        .dead_letters("picky")
        .list(0, 10)
        .await
        .unwrap()
        .remove(0);

    // Still failing: the request is carried out, the entry stays with one more attempt.
    let first = request(
        "picky",
        RequestedAction::RetryDeadLetter {
            event_id: letter.event.event_id,
        },
    );
    store.save_request(first.clone()).await.unwrap();
    carried_out(&store, "picky", first.id).await;
    let kept = app
        .dead_letters("picky")
        .get(letter.event.event_id)
        .await
        .unwrap();
    assert_eq!(kept.map(|e| e.attempts), Some(2), "{backend:?}");

    healthy.store(true, Ordering::SeqCst);
    let second = request(
        "picky",
        RequestedAction::RetryDeadLetter {
            event_id: letter.event.event_id,
        },
    );
    store.save_request(second.clone()).await.unwrap();
    carried_out(&store, "picky", second.id).await;
    assert!(
        app.dead_letters("picky")
            .list(0, 10)
            .await
            .unwrap()
            .is_empty(),
        "{backend:?}: the delivered event leaves the dead letters"
    );
    assert_eq!(log.positions(), [done.token], "{backend:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_retry_requested_through_the_store_is_carried_out_by_the_running_handler_in_memory() {
    a_retry_requested_through_the_store_is_carried_out_by_the_running_handler(Backend::Memory)
        .await;
}

#[tokio::test]
async fn a_retry_requested_through_the_store_is_carried_out_by_the_running_handler_on_sqlite() {
    a_retry_requested_through_the_store_is_carried_out_by_the_running_handler(Backend::Sqlite)
        .await;
}

async fn a_rebuild_requested_through_the_store_replays_the_projection(backend: Backend) {
    let Some(place) = Place::new(backend, "request_rebuild").await else {
        return;
    };
    let store = place.open().await;
    let model = InMemoryReadModel::new();
    let log = Log::default();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .projection(Counter {
            model: model.clone(),
            log: log.clone(),
        })
        .start()
        .await
        .unwrap();
    let done = app
        .dispatch(Emit::new("c", &[Kind::A, Kind::B, Kind::A], 1))
        .await
        .unwrap();
    app.wait_for::<Counter>(done.token).await.unwrap();
    assert_eq!(model.get::<u64>("alphas").unwrap(), Some(2));

    let rebuild = request("counter", RequestedAction::Rebuild);
    store.save_request(rebuild.clone()).await.unwrap();
    carried_out(&store, "counter", rebuild.id).await;
    app.wait_for::<Counter>(done.token).await.unwrap();
    assert_eq!(
        model.get::<u64>("alphas").unwrap(),
        Some(2),
        "{backend:?}: cleared, then every event replayed once"
    );
    assert_eq!(log.positions(), [1, 3, 1, 3], "{backend:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_rebuild_requested_through_the_store_replays_the_projection_in_memory() {
    a_rebuild_requested_through_the_store_replays_the_projection(Backend::Memory).await;
}

#[tokio::test]
async fn a_rebuild_requested_through_the_store_replays_the_projection_on_sqlite() {
    a_rebuild_requested_through_the_store_replays_the_projection(Backend::Sqlite).await;
}
