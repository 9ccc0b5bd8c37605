//! A saga never loses nor repeats a command (docs/semantics.md §6.3 and §6.5): the commands a method
//! returns are saved with the instance (its outbox) before any is dispatched, a stopped
//! instance goes only once its last command is done, and a re-delivered event runs only what
//! is not done yet. Each test runs on the in-memory store, SQLite and PostgreSQL, across a real
//! restart (a new runtime on the same data).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use evoq::prelude::*;
use evoq::{EventStore, HandlerOptions, Middleware, OnError, Pipeline as Pipe};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::steps::*;

const SETTLE: Duration = Duration::from_secs(20);

/// Holds the e-mail notice of a closing order for a while, and says when it started to.
#[derive(Clone, Default)]
struct SlowEmail {
    started: Arc<AtomicBool>,
}

#[evoq::async_trait]
impl Middleware for SlowEmail {
    async fn before_dispatch(&self, pipeline: &mut Pipe<'_>) {
        if pipeline
            .command_as::<Notify>()
            .is_some_and(|notify| notify.channel == "email")
        {
            self.started.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    }
}

async fn start(store: Arc<dyn EventStore>, middleware: Option<SlowEmail>) -> Evoq {
    let mut builder = Evoq::builder().shared_store(store).saga::<Checkout>();
    if let Some(middleware) = middleware {
        builder = builder.middleware(middleware);
    }
    builder.start().await.expect("the runtime starts")
}

async fn place(app: &Evoq, order: &str, fail_at: Option<u8>) {
    app.dispatch(PlaceOrder {
        order: order.to_owned(),
        fail_at,
    })
    .await
    .expect("the order is placed");
}

async fn stop_during_the_first_of_two_stopping_commands(backend: Backend) {
    let Some(place_) = Place::new(backend, "ob_stop").await else {
        return;
    };
    let slow = SlowEmail::default();
    let app = start(place_.open().await, Some(slow.clone())).await;
    place(&app, "o1", None).await;
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !slow.started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{backend:?}: the e-mail notice never started"
    );
    // The first of the two commands of the `#[stops]` method is being handled: stop now.
    app.stop().await;
    let store = store_of(&app);
    drop(app);
    assert!(
        events_of(&*store, "Notice", "o1.sms").await.is_empty(),
        "{backend:?}: the second command ran before the stop"
    );
    assert!(
        store
            .load_saga_state("checkout", "o1")
            .await
            .unwrap()
            .is_some(),
        "{backend:?}: the stopping instance was removed before its commands were done"
    );
    // Let the held e-mail notice of the stopped runtime complete (or not) on its own.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let app = start(place_.open().await, None).await;
    settle(&app, "checkout", SETTLE).await;
    let store = store_of(&app);
    assert_eq!(
        events_of(&*store, "Notice", "o1.email").await,
        ["Notified"],
        "{backend:?}: the e-mail notice ran exactly once"
    );
    assert_eq!(
        events_of(&*store, "Notice", "o1.sms").await,
        ["Notified"],
        "{backend:?}: the SMS notice ran exactly once"
    );
    assert!(
        store
            .load_saga_state("checkout", "o1")
            .await
            .unwrap()
            .is_none(),
        "{backend:?}: the instance is removed once its last command is done"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_the_first_of_two_stopping_commands_runs_both_once_after_a_restart() {
    for backend in Backend::ALL {
        stop_during_the_first_of_two_stopping_commands(backend).await;
    }
}

async fn redelivery_after_growth(backend: Backend) {
    let Some(place_) = Place::new(backend, "ob_grow").await else {
        return;
    };
    let app = start(place_.open().await, None).await;
    place(&app, "o2", None).await;
    settle(&app, "checkout", SETTLE).await;
    // The streams the saga's commands went to grow by 1,000 events each.
    for _ in 0..1_000 {
        app.dispatch(UndoStep {
            id: "o2.1".into(),
            order: "o2".into(),
            step: 1,
        })
        .await
        .unwrap();
    }
    settle(&app, "checkout", SETTLE).await;
    app.stop().await;
    drop(app);

    // Every event again, from the first: nothing runs a second time.
    let store = place_.open().await;
    store.save_checkpoint("checkout", 0).await.unwrap();
    let app = start(store, None).await;
    settle(&app, "checkout", SETTLE).await;
    let store = store_of(&app);
    for step in 1..=3 {
        let done = events_of(&*store, "Step", &format!("o2.{step}"))
            .await
            .iter()
            .filter(|t| *t == "StepDone")
            .count();
        assert_eq!(done, 1, "{backend:?}: step {step} ran once");
    }
    assert_eq!(
        events_of(&*store, "Order", "o2").await,
        ["OrderPlaced", "OrderClosed"]
    );
    assert_eq!(events_of(&*store, "Notice", "o2.email").await.len(), 1);
    assert_eq!(events_of(&*store, "Notice", "o2.sms").await.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_runs_nothing_again_after_its_targets_grew_by_1000_events() {
    for backend in Backend::ALL {
        redelivery_after_growth(backend).await;
    }
}

async fn compensation_once(backend: Backend) {
    let Some(place_) = Place::new(backend, "ob_comp").await else {
        return;
    };
    let app = start(place_.open().await, None).await;
    place(&app, "o3", Some(3)).await;
    settle(&app, "checkout", SETTLE).await;
    let check = |store: Arc<dyn EventStore>| async move {
        assert_eq!(
            events_of(&*store, "Step", "o3.1").await,
            ["StepDone", "StepUndone"],
            "{backend:?}"
        );
        assert_eq!(
            events_of(&*store, "Step", "o3.2").await,
            ["StepDone", "StepUndone"],
            "{backend:?}"
        );
        assert!(events_of(&*store, "Step", "o3.3").await.is_empty());
        assert_eq!(events_of(&*store, "Order", "o3").await, ["OrderPlaced"]);
    };
    check(store_of(&app)).await;
    app.stop().await;
    drop(app);

    let store = place_.open().await;
    store.save_checkpoint("checkout", 0).await.unwrap();
    let app = start(store, None).await;
    settle(&app, "checkout", SETTLE).await;
    check(store_of(&app)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_is_compensated_once_and_a_redelivery_compensates_nothing_again() {
    for backend in Backend::ALL {
        compensation_once(backend).await;
    }
}

/// Sends its notice on channel `a` or `b`, depending on a switch outside its state.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Fickle;

static FLIPPED: AtomicBool = AtomicBool::new(false);

#[saga(name = "fickle")]
impl Fickle {
    #[starts(by = order)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        let channel = if FLIPPED.load(Ordering::SeqCst) {
            "a"
        } else {
            "b"
        };
        commands![notify(&e.order, channel)]
    }
}

#[tokio::test]
async fn a_method_that_returns_other_commands_on_redelivery_is_refused_and_runs_nothing() {
    let place_ = Place::new(Backend::Memory, "fickle").await.unwrap();
    let options = HandlerOptions::new()
        .max_attempts(1)
        .on_error(OnError::DeadLetter);
    let start = |store| {
        Evoq::builder()
            .shared_store(store)
            .saga_with::<Fickle>(options.clone())
            .start()
    };
    let app = start(place_.open().await).await.unwrap();
    place(&app, "o4", None).await;
    settle(&app, "fickle", SETTLE).await;
    app.stop().await;
    drop(app);

    FLIPPED.store(true, Ordering::SeqCst);
    let store = place_.open().await;
    store.save_checkpoint("fickle", 0).await.unwrap();
    let app = start(store).await.unwrap();
    settle(&app, "fickle", SETTLE).await;
    let store = store_of(&app);
    assert_eq!(events_of(&*store, "Notice", "o4.b").await.len(), 1);
    assert!(
        events_of(&*store, "Notice", "o4.a").await.is_empty(),
        "a command the first run did not return was dispatched"
    );
    let letters = store.list_dead_letters("fickle", 0, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]
            .error
            .contains("did not return the commands of its first run"),
        "{}",
        letters[0].error
    );
    assert!(
        letters[0].error.contains("`Notify` for `o4.a`"),
        "{}",
        letters[0].error
    );
    app.stop().await;
}

/// A dead letter of an instance that has handled a later event since: its step can no longer
/// run in order, so the retry fails saying so and the dead letter stays (rather than being
/// removed with nothing done).
#[tokio::test]
async fn a_retried_dead_letter_the_instance_has_moved_past_fails_and_stays() {
    let place_ = Place::new(Backend::Memory, "moved_past").await.unwrap();
    let app = start(place_.open().await, None).await;
    // Step 2 fails: the steps are compensated and the instance stays, past its first event.
    place(&app, "o5", Some(2)).await;
    settle(&app, "checkout", SETTLE).await;
    let store = store_of(&app);
    let placed = store
        .read_stream("Order-o5", 1, evoq::store::Direction::Forward, usize::MAX)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(placed.event_type, "OrderPlaced");
    // As if its first delivery had failed for good.
    let now = std::time::SystemTime::now();
    store
        .save_dead_letter(evoq::DeadLetter {
            handler: "checkout".into(),
            event: Arc::clone(&placed),
            error: "the payment service was down".into(),
            kind: evoq::FailureKind::HandlerError,
            reason: "1 attempt".into(),
            raw_row: None,
            attempts: 1,
            first_failed_at: now,
            last_failed_at: now,
        })
        .await
        .unwrap();
    let retried = app.dead_letters("checkout").retry(placed.event_id).await;
    let Err(evoq::Error::DeadLetterRetryFailed { error, .. }) = &retried else {
        panic!("{retried:?}");
    };
    assert!(error.contains("has handled a later event"), "{error}");
    let kept = app
        .dead_letters("checkout")
        .get(placed.event_id)
        .await
        .unwrap()
        .expect("the dead letter stays");
    assert_eq!(kept.attempts, 2);
    assert_eq!(
        events_of(&*store, "Step", "o5.1").await,
        ["StepDone", "StepUndone"],
        "nothing ran again"
    );
    app.stop().await;
}
