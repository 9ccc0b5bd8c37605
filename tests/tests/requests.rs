//! Requests kept in the store for a handler's task (`HandlerRequest`): what an operator's tool
//! (or another node) saves is carried out by the running application, between two events, and
//! removed once done, or kept marked failed with the reason when it could not be. Runs on the
//! in-memory store, on SQLite and (the refusal) on PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// Waits until the request is gone from the store (carried out: `None`) or marked failed (its
/// reason); panics after 10 s.
async fn carried_out(store: &Arc<dyn EventStore>, handler: &str, id: evoq::Uuid) -> Option<String> {
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match store.load_request(handler, id).await.unwrap() {
                None => return None,
                Some(HandlerRequest {
                    failed: Some(reason),
                    ..
                }) => return Some(reason),
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    outcome.expect("the request was never carried out")
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

    // Still failing: the request is carried out and kept marked failed, with the handler's
    // error; the entry stays with one more attempt.
    let first = HandlerRequest::new(
        "picky",
        RequestedAction::RetryDeadLetter {
            event_id: letter.event.event_id,
        },
    );
    store.save_request(first.clone()).await.unwrap();
    let failed = carried_out(&store, "picky", first.id).await;
    assert!(
        failed
            .as_deref()
            .is_some_and(|reason| reason.contains("not now: 1")),
        "{backend:?}: {failed:?}"
    );
    assert!(
        store.list_requests("picky", 10).await.unwrap().is_empty(),
        "{backend:?}: a failed request is not carried out again"
    );
    let kept = app
        .dead_letters("picky")
        .get(letter.event.event_id)
        .await
        .unwrap();
    assert_eq!(kept.map(|e| e.attempts), Some(2), "{backend:?}");

    healthy.store(true, Ordering::SeqCst);
    let second = HandlerRequest::new(
        "picky",
        RequestedAction::RetryDeadLetter {
            event_id: letter.event.event_id,
        },
    );
    store.save_request(second.clone()).await.unwrap();
    assert_eq!(carried_out(&store, "picky", second.id).await, None);
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

    let rebuild = HandlerRequest::new("counter", RequestedAction::Rebuild);
    store.save_request(rebuild.clone()).await.unwrap();
    assert_eq!(carried_out(&store, "counter", rebuild.id).await, None);
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

async fn a_rebuild_requested_of_an_event_handler_is_kept_failed_with_the_reason(backend: Backend) {
    let Some(place) = Place::new(backend, "request_refused").await else {
        return;
    };
    let store = place.open().await;
    let picky = Picky::default();
    picky.healthy.store(true, Ordering::SeqCst);
    let log = picky.log.clone();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .handler(picky)
        .start()
        .await
        .unwrap();
    let done = app.dispatch(Emit::new("r", &[Kind::A], 1)).await.unwrap();
    app.wait_for::<Picky>(done.token).await.unwrap();

    let rebuild = HandlerRequest::new("picky", RequestedAction::Rebuild);
    store.save_request(rebuild.clone()).await.unwrap();
    let failed = carried_out(&store, "picky", rebuild.id).await;
    assert!(
        failed
            .as_deref()
            .is_some_and(|reason| reason.contains("picky") && reason.contains("projection")),
        "{backend:?}: the reason names the handler and says it is no projection: {failed:?}"
    );
    // Not carried out again: the handler goes on, and the request waits to be read.
    let later = app.dispatch(Emit::new("r", &[Kind::A], 1)).await.unwrap();
    app.wait_for::<Picky>(later.token).await.unwrap();
    assert_eq!(log.positions(), [done.token, later.token], "{backend:?}");
    assert!(store.list_requests("picky", 10).await.unwrap().is_empty());
    assert_eq!(
        store
            .load_request("picky", rebuild.id)
            .await
            .unwrap()
            .and_then(|kept| kept.failed),
        failed,
        "{backend:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rebuild_requested_of_an_event_handler_is_kept_failed_with_the_reason_in_memory() {
    a_rebuild_requested_of_an_event_handler_is_kept_failed_with_the_reason(Backend::Memory).await;
}

#[tokio::test]
async fn a_rebuild_requested_of_an_event_handler_is_kept_failed_with_the_reason_on_sqlite() {
    a_rebuild_requested_of_an_event_handler_is_kept_failed_with_the_reason(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_rebuild_requested_of_an_event_handler_is_kept_failed_with_the_reason_on_postgres() {
    a_rebuild_requested_of_an_event_handler_is_kept_failed_with_the_reason(Backend::Postgres).await;
}

/// Fails every `Alpha` while `healthy` is false; once healthy, takes each slowly, saying when
/// it began one.
#[derive(Clone, Default)]
struct Slow {
    healthy: Arc<AtomicBool>,
    began: Arc<AtomicBool>,
    log: Log,
}

#[event_handler(name = "slow")]
impl Slow {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        if !self.healthy.load(Ordering::SeqCst) {
            return Err(Failed(format!("not now: {}", e.n)));
        }
        self.began.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

/// A request withdrawn (deleted from the store, as `evoq requests withdraw` does) while the
/// task carries out an earlier one of the same batch is never carried out: the task looks for
/// each request before it begins it.
#[tokio::test]
async fn a_request_withdrawn_while_an_earlier_one_runs_is_never_carried_out() {
    let store: Arc<dyn EventStore> = Arc::new(evoq::store::memory::InMemoryStore::new());
    let slow = Slow::default();
    let (healthy, began, log) = (
        Arc::clone(&slow.healthy),
        Arc::clone(&slow.began),
        slow.log.clone(),
    );
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .handler_with(
            slow,
            HandlerOptions::new()
                .max_attempts(1)
                .retry(RetryStrategy::immediate()),
        )
        .start()
        .await
        .unwrap();
    let done = app
        .dispatch(Emit::new("w", &[Kind::A, Kind::A], 1))
        .await
        .unwrap();
    app.wait_for::<Slow>(done.token).await.unwrap();
    let letters = app.dead_letters("slow").list(0, 10).await.unwrap();
    assert_eq!(letters.len(), 2);
    healthy.store(true, Ordering::SeqCst);
    let retry = |at: usize| {
        HandlerRequest::new(
            "slow",
            RequestedAction::RetryDeadLetter {
                event_id: letters[at].event.event_id,
            },
        )
    };
    let (first, second) = (retry(0), retry(1));
    store.save_request(first.clone()).await.unwrap();
    store.save_request(second.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !began.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first retry began");
    assert!(
        store.delete_request("slow", second.id).await.unwrap(),
        "withdrawn"
    );
    assert_eq!(carried_out(&store, "slow", first.id).await, None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        log.positions(),
        [letters[0].event.global_position],
        "only the first retry ran"
    );
    let left = app.dead_letters("slow").list(0, 10).await.unwrap();
    assert_eq!(
        left.iter()
            .map(|letter| letter.event.event_id)
            .collect::<Vec<_>>(),
        [letters[1].event.event_id],
        "the withdrawn retry's dead letter stays"
    );
    assert!(store.list_requests("slow", 10).await.unwrap().is_empty());
    app.stop().await;
}
