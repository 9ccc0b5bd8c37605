//! Saga timeouts (docs/semantics.md §6.8): a method schedules an event for later; it is kept
//! in the store, fires once (after a restart in between, with two runtimes on one store),
//! reaches the saga's method for its type, and never fires once its instance stopped. Every
//! test runs on the in-memory store, SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use evoq::prelude::*;
use evoq::{EventStore, HandlerOptions, OnError};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::steps::*;
use serde::{Deserialize, Serialize};

const SETTLE: Duration = Duration::from_secs(20);

async fn start(store: Arc<dyn EventStore>) -> Evoq {
    Evoq::builder()
        .shared_store(store)
        .saga::<Reminder>()
        .start()
        .await
        .expect("the runtime starts")
}

async fn place(app: &Evoq, order: &str) {
    app.dispatch(PlaceOrder {
        order: order.to_owned(),
        fail_at: None,
    })
    .await
    .expect("the order is placed");
}

/// Waits until the overdue notice of `order` exists; panics after 10 s.
async fn overdue_notice(store: &dyn EventStore, order: &str) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while events_of(store, "Notice", &format!("{order}.overdue"))
            .await
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "the timeout of `{order}` never fired");
}

/// Long enough for a timeout to fire twice if it could: past its delay and two timer polls.
const WELL_AFTER: Duration = Duration::from_millis(2_500);

async fn fires_and_reaches_its_method(backend: Backend) {
    let Some(place_) = Place::new(backend, "to_fire").await else {
        return;
    };
    let app = start(place_.open().await).await;
    place(&app, "t1").await;
    let store = store_of(&app);
    overdue_notice(&*store, "t1").await;
    settle(&app, "reminder", SETTLE).await;
    let state = app.saga_state::<Reminder>("t1").await.unwrap();
    assert!(state.expect("the instance").reminded, "{backend:?}");
    assert_eq!(count_of(&*store, "PaymentOverdue").await, 1, "{backend:?}");
    assert_eq!(
        store.next_timeout("reminder").await.unwrap(),
        None,
        "{backend:?}: a fired timeout leaves the store"
    );
    app.stop().await;
}

async fn fires_once_after_a_restart(backend: Backend) {
    let Some(place_) = Place::new(backend, "to_restart").await else {
        return;
    };
    let app = start(place_.open().await).await;
    place(&app, "t2").await;
    settle(&app, "reminder", SETTLE).await;
    // Scheduled, not due yet: stop, and stay down past its due time.
    assert!(
        store_of(&app)
            .next_timeout("reminder")
            .await
            .unwrap()
            .is_some(),
        "{backend:?}: the timeout is stored"
    );
    app.stop().await;
    drop(app);
    tokio::time::sleep(REMINDER_DELAY + Duration::from_millis(200)).await;

    let app = start(place_.open().await).await;
    let store = store_of(&app);
    overdue_notice(&*store, "t2").await;
    tokio::time::sleep(WELL_AFTER).await;
    settle(&app, "reminder", SETTLE).await;
    assert_eq!(count_of(&*store, "PaymentOverdue").await, 1, "{backend:?}");
    assert_eq!(
        events_of(&*store, "Notice", "t2.overdue").await.len(),
        1,
        "{backend:?}"
    );
    app.stop().await;
}

async fn never_fires_after_the_stop(backend: Backend) {
    let Some(place_) = Place::new(backend, "to_stop").await else {
        return;
    };
    let app = start(place_.open().await).await;
    place(&app, "t3").await;
    app.dispatch(CloseOrder { order: "t3".into() })
        .await
        .unwrap();
    settle(&app, "reminder", SETTLE).await;
    tokio::time::sleep(REMINDER_DELAY + WELL_AFTER).await;
    settle(&app, "reminder", SETTLE).await;
    let store = store_of(&app);
    assert_eq!(count_of(&*store, "PaymentOverdue").await, 0, "{backend:?}");
    assert!(
        events_of(&*store, "Notice", "t3.overdue").await.is_empty(),
        "{backend:?}"
    );
    assert_eq!(store.next_timeout("reminder").await.unwrap(), None);
    assert!(app.saga_state::<Reminder>("t3").await.unwrap().is_none());
    app.stop().await;
}

/// Two runtimes on one store (two nodes), both running the saga's timer: each timeout once.
async fn fires_once_on_two_nodes(backend: Backend) {
    let Some(place_) = Place::new(backend, "to_nodes").await else {
        return;
    };
    let one = start(place_.open().await).await;
    let two = start(place_.open().await).await;
    place(&one, "t4").await;
    place(&two, "t5").await;
    let store = store_of(&one);
    overdue_notice(&*store, "t4").await;
    overdue_notice(&*store, "t5").await;
    tokio::time::sleep(WELL_AFTER).await;
    assert_eq!(count_of(&*store, "PaymentOverdue").await, 2, "{backend:?}");
    for order in ["t4", "t5"] {
        assert_eq!(
            events_of(&*store, "Notice", &format!("{order}.overdue"))
                .await
                .len(),
            1,
            "{backend:?}: {order}"
        );
    }
    one.stop().await;
    two.stop().await;
}

macro_rules! on_every_backend {
    ($($name:ident => $body:ident;)+) => {
        mod memory {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { $body(Backend::Memory).await }) +
        }
        mod sqlite {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { $body(Backend::Sqlite).await }) +
        }
        mod postgres {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { $body(Backend::Postgres).await }) +
        }
    };
}

on_every_backend! {
    a_timeout_fires_and_reaches_the_method_for_its_event => fires_and_reaches_its_method;
    a_timeout_fires_once_after_a_restart_in_between => fires_once_after_a_restart;
    a_timeout_never_fires_once_its_instance_stopped => never_fires_after_the_stop;
}

// Two runtimes on one store: two nodes on PostgreSQL (and two runtimes sharing one in-memory
// store); a SQLite file has one writer process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_on_one_memory_store_fire_each_timeout_once() {
    fires_once_on_two_nodes(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_nodes_fire_each_timeout_once() {
    fires_once_on_two_nodes(Backend::Postgres).await;
}

/// Schedules a timeout with an event none of its methods takes.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Forgetful;

#[saga(name = "forgetful")]
impl Forgetful {
    #[starts(by = order)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        Commands::none().timeout_after(
            Duration::from_millis(10),
            Notified {
                order: e.order.clone(),
                channel: "never".into(),
            },
        )
    }
}

#[tokio::test]
async fn a_timeout_with_an_event_the_saga_does_not_take_is_a_failure_naming_both() {
    let app = Evoq::builder()
        .saga_with::<Forgetful>(
            HandlerOptions::new()
                .max_attempts(1)
                .on_error(OnError::DeadLetter),
        )
        .start()
        .await
        .unwrap();
    place(&app, "t6").await;
    settle(&app, "forgetful", SETTLE).await;
    let store = store_of(&app);
    let letters = store.list_dead_letters("forgetful", 0, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let error = &letters[0].error;
    assert!(
        error.contains("`forgetful` scheduled a timeout with the event `Notified`"),
        "{error}"
    );
    assert!(error.contains("none of its methods takes"), "{error}");
    assert_eq!(store.next_timeout("forgetful").await.unwrap(), None);
    app.stop().await;
}

#[tokio::test]
async fn a_timeout_delivered_again_after_a_failed_first_delivery_still_dispatches_its_commands() {
    let store = evoq_tests::faulty_store::FaultyStore::new();
    let app = start(store.clone()).await;
    place(&app, "again").await;
    let scheduled = tokio::time::timeout(Duration::from_secs(10), async {
        while store.next_timeout("reminder").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(scheduled.is_ok(), "the reminder is scheduled");
    // The first save while the timeout's event is handled stores the state, then fails: the
    // event is delivered again, and must still find its timeout in the instance.
    store
        .ambiguous_saga_saves
        .store(1, std::sync::atomic::Ordering::SeqCst);
    overdue_notice(&*store, "again").await;
    settle(&app, "reminder", SETTLE).await;
    assert_eq!(
        store
            .ambiguous_saga_saves
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the failure was injected"
    );
    assert_eq!(
        events_of(&*store, "Notice", "again.overdue").await.len(),
        1,
        "the notice is sent once"
    );
    app.stop().await;
}

/// Compensates a failed step by scheduling a reminder: "try again later" from a compensation.
#[derive(Default, Serialize, Deserialize)]
struct LaterRetry {
    reminded: bool,
}

#[saga(name = "later_retry")]
impl LaterRetry {
    #[starts(by = order)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        commands![run_step(&e.order, 1, true)]
    }

    #[continues(by = order)]
    fn overdue(&mut self, e: &PaymentOverdue) -> Commands {
        self.reminded = true;
        commands![notify(&e.order, "overdue")]
    }

    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        Commands::none().timeout_after(
            Duration::from_millis(100),
            PaymentOverdue {
                order: failed.instance().to_owned(),
            },
        )
    }
}

/// §6.6, §6.8: a timeout a `#[compensates]` method schedules is kept and fires like one of an
/// event's method (it was dropped: the compensation's commands went out, its timeouts never).
#[tokio::test]
async fn a_timeout_scheduled_by_a_compensation_fires() {
    let app = Evoq::builder()
        .saga::<LaterRetry>()
        .start()
        .await
        .expect("the runtime starts");
    place(&app, "c1").await;
    let store = store_of(&app);
    overdue_notice(&*store, "c1").await;
    settle(&app, "later_retry", SETTLE).await;
    let state = app.saga_state::<LaterRetry>("c1").await.unwrap();
    assert!(state.expect("the instance").reminded);
    assert_eq!(count_of(&*store, "PaymentOverdue").await, 1);
    app.stop().await;
}
