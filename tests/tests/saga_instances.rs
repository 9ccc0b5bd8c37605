//! Saga instances (docs/semantics.md §6.1, §6.2, §6.5, §6.7, §6.8): they are kept under the
//! name the saga runs under (a saga renamed with `HandlerOptions::name` keeps its instances and
//! timeouts, a saga type run twice has instances of its own under each name), and an instance
//! that stopped leaves a record of where it stopped, so that no event it handled brings it
//! back: not a dead letter delivered again, not a replay from the origin (its failed commands
//! stay failed, its timeouts never fire). The durable cases run on the in-memory store, SQLite
//! and PostgreSQL, restarting on the same data.

use std::sync::Mutex;
use std::time::Duration;

use evoq::prelude::*;
use evoq::{EventStore, HandlerOptions, OnError, StartFrom};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::steps::{events_of, settle, store_of};
use serde::{Deserialize, Serialize};

const SETTLE: Duration = Duration::from_secs(20);

/// Long enough for a due timeout to have fired: past the timer's poll.
const WELL_AFTER: Duration = Duration::from_millis(2_000);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TripOpened {
    trip: String,
    /// The delay of the trip's expiry timeout.
    expires_ms: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TripPoked {
    trip: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TripClosed {
    trip: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TripExpired {
    trip: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BarrierLifted {
    barrier: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BarrierCrossed {
    barrier: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Jotted {
    page: String,
}

#[derive(Command, Debug)]
struct OpenTrip {
    #[aggregate_id]
    trip: String,
    expires_ms: u64,
}

#[derive(Command, Debug)]
struct PokeTrip {
    #[aggregate_id]
    trip: String,
}

#[derive(Command, Debug)]
struct CloseTrip {
    #[aggregate_id]
    trip: String,
}

#[derive(Command, Debug)]
struct LiftBarrier {
    #[aggregate_id]
    barrier: String,
}

#[derive(Command, Debug)]
struct CrossBarrier {
    #[aggregate_id]
    barrier: String,
}

#[derive(Command, Debug)]
struct Jot {
    #[aggregate_id]
    page: String,
}

#[derive(Debug, thiserror::Error)]
#[error("barrier `{0}` is down")]
struct Down(String);

#[derive(Default)]
struct Trip;

#[aggregate]
impl Trip {
    #[handles]
    fn open(&self, c: &OpenTrip) -> Result<TripOpened, Down> {
        Ok(TripOpened {
            trip: c.trip.clone(),
            expires_ms: c.expires_ms,
        })
    }

    #[handles]
    fn poke(&self, c: &PokeTrip) -> Result<TripPoked, Down> {
        Ok(TripPoked {
            trip: c.trip.clone(),
        })
    }

    #[handles]
    fn close(&self, c: &CloseTrip) -> Result<TripClosed, Down> {
        Ok(TripClosed {
            trip: c.trip.clone(),
        })
    }

    #[apply]
    fn opened(&mut self, _: &TripOpened) {}

    #[apply]
    fn poked(&mut self, _: &TripPoked) {}

    #[apply]
    fn closed(&mut self, _: &TripClosed) {}
}

/// Refuses to be crossed until it is lifted.
#[derive(Default)]
struct Barrier {
    lifted: bool,
}

#[aggregate]
impl Barrier {
    #[handles]
    fn lift(&self, c: &LiftBarrier) -> Result<BarrierLifted, Down> {
        Ok(BarrierLifted {
            barrier: c.barrier.clone(),
        })
    }

    #[handles]
    fn cross(&self, c: &CrossBarrier) -> Result<BarrierCrossed, Down> {
        if !self.lifted {
            return Err(Down(c.barrier.clone()));
        }
        Ok(BarrierCrossed {
            barrier: c.barrier.clone(),
        })
    }

    #[apply]
    fn lifted(&mut self, _: &BarrierLifted) {
        self.lifted = true;
    }

    #[apply]
    fn crossed(&mut self, _: &BarrierCrossed) {}
}

#[derive(Default)]
struct Notebook;

#[aggregate]
impl Notebook {
    #[handles]
    fn jot(&self, c: &Jot) -> Result<Jotted, Down> {
        Ok(Jotted {
            page: c.page.clone(),
        })
    }

    #[apply]
    fn jotted(&mut self, _: &Jotted) {}
}

fn jot(trip: &str, what: &str) -> Jot {
    Jot {
        page: format!("{trip}.{what}"),
    }
}

/// The trips whose pokes panic (a bug in the saga, fixed later).
static BROKEN_POKES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn pokes_panic(trip: &str, panic: bool) {
    let mut broken = BROKEN_POKES.lock().unwrap();
    broken.retain(|held| held != trip);
    if panic {
        broken.push(trip.to_owned());
    }
}

/// What the trip sagas do, whatever their name: cross the trip's barrier when the trip opens
/// (a failure is compensated by a note), schedule the trip's expiry, note each poke and the
/// expiry; a close stops the instance.
#[derive(Default, Debug, Serialize, Deserialize)]
struct Seen {
    seen: Vec<String>,
}

impl Seen {
    fn opened(&mut self, e: &TripOpened) -> Commands {
        self.seen.push("opened".into());
        Commands::none()
            .push(CrossBarrier {
                barrier: e.trip.clone(),
            })
            .timeout_after(
                Duration::from_millis(e.expires_ms),
                TripExpired {
                    trip: e.trip.clone(),
                },
            )
    }

    fn poked(&mut self, e: &TripPoked) -> Commands {
        if BROKEN_POKES.lock().unwrap().contains(&e.trip) {
            panic!("poke of `{}` breaks the saga", e.trip);
        }
        self.seen.push("poked".into());
        commands![jot(&e.trip, "poked")]
    }

    fn expired(&mut self, e: &TripExpired) -> Commands {
        self.seen.push("expired".into());
        commands![jot(&e.trip, "expired")]
    }
}

/// The trip saga.
#[derive(Default, Debug, Serialize, Deserialize)]
struct Trips(Seen);

#[saga(name = "trips")]
impl Trips {
    #[starts(by = trip)]
    fn opened(&mut self, e: &TripOpened) -> Commands {
        self.0.opened(e)
    }

    #[continues(by = trip)]
    fn poked(&mut self, e: &TripPoked) -> Commands {
        self.0.poked(e)
    }

    #[continues(by = trip)]
    fn expired(&mut self, e: &TripExpired) -> Commands {
        self.0.expired(e)
    }

    #[stops(by = trip)]
    fn closed(&mut self, _: &TripClosed) -> Commands {
        Commands::none()
    }

    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        commands![jot(failed.instance(), "compensated")]
    }
}

/// The trip saga before a rename.
#[derive(Default, Debug, Serialize, Deserialize)]
struct TripsBefore(Seen);

#[saga(name = "trips_before")]
impl TripsBefore {
    #[starts(by = trip)]
    fn opened(&mut self, e: &TripOpened) -> Commands {
        self.0.opened(e)
    }

    #[continues(by = trip)]
    fn poked(&mut self, e: &TripPoked) -> Commands {
        self.0.poked(e)
    }

    #[continues(by = trip)]
    fn expired(&mut self, e: &TripExpired) -> Commands {
        self.0.expired(e)
    }
}

/// The trip saga after the rename.
#[derive(Default, Debug, Serialize, Deserialize)]
struct TripsAfter(Seen);

#[saga(name = "trips_after")]
impl TripsAfter {
    #[starts(by = trip)]
    fn opened(&mut self, e: &TripOpened) -> Commands {
        self.0.opened(e)
    }

    #[continues(by = trip)]
    fn poked(&mut self, e: &TripPoked) -> Commands {
        self.0.poked(e)
    }

    #[continues(by = trip)]
    fn expired(&mut self, e: &TripExpired) -> Commands {
        self.0.expired(e)
    }
}

/// Another saga type that has the name `trips` in its attribute.
#[derive(Default, Debug, Serialize, Deserialize)]
struct TripsTwin {
    seen: Vec<String>,
}

#[saga(name = "trips")]
impl TripsTwin {
    #[starts(by = trip)]
    fn opened(&mut self, _: &TripOpened) -> Commands {
        self.seen.push("opened".into());
        Commands::none()
    }
}

/// One attempt, then a dead letter.
fn dead_letter_at_once() -> HandlerOptions {
    HandlerOptions::new()
        .max_attempts(1)
        .on_error(OnError::DeadLetter)
}

async fn open(app: &Evoq, trip: &str, expires: Duration) {
    app.dispatch(OpenTrip {
        trip: trip.to_owned(),
        expires_ms: expires.as_millis() as u64,
    })
    .await
    .expect("the trip opens");
}

async fn poke(app: &Evoq, trip: &str) {
    app.dispatch(PokeTrip {
        trip: trip.to_owned(),
    })
    .await
    .expect("the trip is poked");
}

async fn close(app: &Evoq, trip: &str) {
    app.dispatch(CloseTrip {
        trip: trip.to_owned(),
    })
    .await
    .expect("the trip closes");
}

async fn instances(store: &dyn EventStore, saga: &str) -> Vec<String> {
    store
        .list_saga_instances(saga, None, usize::MAX)
        .await
        .expect("list the instances")
}

/// Waits until `page` of the notebook has a note; panics after 10 s.
async fn noted(store: &dyn EventStore, page: &str) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while events_of(store, "Notebook", page).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "nothing was noted on `{page}`");
}

// --- A saga run under another name -----------------------------------------------------------

/// The saga `trips_before`, renamed `trips_after` in code and registered under its old name,
/// goes on with the instance it started (and the timeout it scheduled) before the rename.
async fn renamed_keeps_instances_and_timeouts(backend: Backend) {
    let Some(place) = Place::new(backend, "saga_renamed").await else {
        return;
    };
    let before = Evoq::builder()
        .shared_store(place.open().await)
        .saga::<TripsBefore>()
        .start()
        .await
        .unwrap();
    open(&before, "r1", Duration::from_millis(1_500)).await;
    settle(&before, "trips_before", SETTLE).await;
    before.stop().await;
    drop(before);

    let after = Evoq::builder()
        .shared_store(place.open().await)
        .saga_with::<TripsAfter>(HandlerOptions::new().name("trips_before"))
        .start()
        .await
        .unwrap();
    poke(&after, "r1").await;
    let store = store_of(&after);
    noted(&*store, "r1.expired").await;
    settle(&after, "trips_before", SETTLE).await;
    let state = after.saga_state::<TripsAfter>("r1").await.unwrap();
    assert_eq!(
        state.expect("the instance goes on").0.seen,
        ["opened", "poked", "expired"],
        "{backend:?}"
    );
    assert_eq!(
        instances(&*store, "trips_before").await,
        ["r1"],
        "{backend:?}"
    );
    assert!(
        instances(&*store, "trips_after").await.is_empty(),
        "{backend:?}"
    );
    assert_eq!(
        events_of(&*store, "saga.trips_before", "r1").await,
        ["TripExpired"],
        "{backend:?}: the timeout stream is that of the name the saga runs under"
    );
    after.stop().await;
}

/// One saga type registered twice, under two names: each registration has its own instances,
/// commands and timeouts.
async fn run_twice_keeps_instances_apart(backend: Backend) {
    let Some(place) = Place::new(backend, "saga_twice").await else {
        return;
    };
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .saga::<Trips>()
        .saga_with::<Trips>(HandlerOptions::new().name("trips_copy"))
        .start()
        .await
        .unwrap();
    // Not due during the test: both stay scheduled.
    open(&app, "w1", Duration::from_secs(600)).await;
    settle(&app, "trips", SETTLE).await;
    settle(&app, "trips_copy", SETTLE).await;
    let store = store_of(&app);
    assert_eq!(instances(&*store, "trips").await, ["w1"], "{backend:?}");
    assert_eq!(
        instances(&*store, "trips_copy").await,
        ["w1"],
        "{backend:?}"
    );
    assert!(
        store.next_timeout("trips").await.unwrap().is_some(),
        "{backend:?}"
    );
    assert!(
        store.next_timeout("trips_copy").await.unwrap().is_some(),
        "{backend:?}: the copy schedules its own timeout"
    );
    // Each registration crossed the barrier with its own command (and compensated it).
    assert_eq!(
        events_of(&*store, "Notebook", "w1.compensated").await.len(),
        2,
        "{backend:?}"
    );
    let error = app.saga_state::<Trips>("w1").await.unwrap_err();
    assert!(
        matches!(&error, evoq::Error::AmbiguousHandler { names, .. }
            if names == "`trips`, `trips_copy`"),
        "{backend:?}: {error}"
    );
    app.stop().await;
}

#[tokio::test]
async fn saga_state_of_a_type_not_registered_is_an_error_even_when_another_has_its_name() {
    let app = Evoq::builder().saga::<Trips>().start().await.unwrap();
    open(&app, "n1", Duration::from_secs(600)).await;
    settle(&app, "trips", SETTLE).await;
    let error = app.saga_state::<TripsTwin>("n1").await.unwrap_err();
    assert!(
        matches!(&error, evoq::Error::UnknownSaga { saga: "trips", .. }),
        "{error}"
    );
    assert!(app.saga_state::<Trips>("n1").await.unwrap().is_some());
    app.stop().await;
}

// --- What a stopped instance leaves ----------------------------------------------------------

/// A dead letter of an instance that stopped since fails when delivered again: no command, no
/// instance back, the dead letter kept.
async fn retry_after_the_stop_fails(backend: Backend) {
    let Some(place) = Place::new(backend, "saga_retry_stopped").await else {
        return;
    };
    let start = || async {
        Evoq::builder()
            .shared_store(place.open().await)
            .saga_with::<Trips>(dead_letter_at_once())
            .start()
            .await
            .unwrap()
    };
    let app = start().await;
    let trip = format!("d-{backend:?}");
    pokes_panic(&trip, true);
    open(&app, &trip, Duration::from_secs(600)).await;
    poke(&app, &trip).await;
    close(&app, &trip).await;
    settle(&app, "trips", SETTLE).await;
    pokes_panic(&trip, false);
    let store = store_of(&app);
    assert!(instances(&*store, "trips").await.is_empty(), "{backend:?}");
    let letters = app.dead_letters("trips").list(0, 10).await.unwrap();
    assert_eq!(letters.len(), 1, "{backend:?}");
    let poked = letters[0].event.event_id;

    // After a restart too: what the stop left is durable.
    app.stop().await;
    drop(app);
    let app = start().await;
    let error = app.dead_letters("trips").retry(poked).await.unwrap_err();
    assert!(
        matches!(&error, evoq::Error::DeadLetterRetryFailed { error, .. }
            if error.contains("stopped at a later event")),
        "{backend:?}: {error}"
    );
    settle(&app, "trips", SETTLE).await;
    let store = store_of(&app);
    assert!(
        app.dead_letters("trips")
            .get(poked)
            .await
            .unwrap()
            .is_some(),
        "{backend:?}: the dead letter stays"
    );
    assert!(
        events_of(&*store, "Notebook", &format!("{trip}.poked"))
            .await
            .is_empty(),
        "{backend:?}: its command is not dispatched"
    );
    assert!(instances(&*store, "trips").await.is_empty(), "{backend:?}");
    assert!(
        app.saga_state::<Trips>(&trip).await.unwrap().is_none(),
        "{backend:?}"
    );
    app.stop().await;
}

/// A replay from the origin over an instance that stopped runs none of its events again: the
/// command that failed (and was compensated) is not dispatched again, though it would succeed
/// now, and the timeout the stop cancelled never fires.
async fn replay_leaves_a_stopped_instance_stopped(backend: Backend) {
    let Some(place) = Place::new(backend, "saga_replay_stopped").await else {
        return;
    };
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .saga::<Trips>()
        .start()
        .await
        .unwrap();
    open(&app, "p1", Duration::from_millis(300)).await;
    close(&app, "p1").await;
    settle(&app, "trips", SETTLE).await;
    app.dispatch(LiftBarrier {
        barrier: "p1".into(),
    })
    .await
    .unwrap();
    let store = store_of(&app);
    assert_eq!(
        events_of(&*store, "Notebook", "p1.compensated").await.len(),
        1,
        "{backend:?}: the crossing failed and was compensated"
    );
    app.stop().await;
    drop(app);

    let app = Evoq::builder()
        .shared_store(place.open().await)
        .saga_with::<Trips>(HandlerOptions::new().start_from(StartFrom::Origin))
        .start()
        .await
        .unwrap();
    settle(&app, "trips", SETTLE).await;
    tokio::time::sleep(WELL_AFTER).await;
    settle(&app, "trips", SETTLE).await;
    let store = store_of(&app);
    assert_eq!(
        events_of(&*store, "Barrier", "p1").await,
        ["BarrierLifted"],
        "{backend:?}: the failed command stays failed"
    );
    assert_eq!(
        events_of(&*store, "Notebook", "p1.compensated").await.len(),
        1,
        "{backend:?}"
    );
    assert!(
        events_of(&*store, "saga.trips", "p1").await.is_empty(),
        "{backend:?}: the stopped instance's timeout never fires"
    );
    assert_eq!(
        store.next_timeout("trips").await.unwrap(),
        None,
        "{backend:?}"
    );
    assert!(instances(&*store, "trips").await.is_empty(), "{backend:?}");
    assert!(
        app.saga_state::<Trips>("p1").await.unwrap().is_none(),
        "{backend:?}"
    );
    app.stop().await;
}

/// An event after the stop starts a new instance, which a replay from the origin finds as it
/// was (the events of the first instance are not run on it).
async fn a_later_event_starts_a_new_instance(backend: Backend) {
    let Some(place) = Place::new(backend, "saga_restarted").await else {
        return;
    };
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .saga::<Trips>()
        .start()
        .await
        .unwrap();
    open(&app, "s1", Duration::from_secs(600)).await;
    poke(&app, "s1").await;
    close(&app, "s1").await;
    open(&app, "s1", Duration::from_secs(600)).await;
    settle(&app, "trips", SETTLE).await;
    let state = app.saga_state::<Trips>("s1").await.unwrap();
    assert_eq!(
        state.expect("a new instance").0.seen,
        ["opened"],
        "{backend:?}"
    );
    app.stop().await;
    drop(app);

    let app = Evoq::builder()
        .shared_store(place.open().await)
        .saga_with::<Trips>(HandlerOptions::new().start_from(StartFrom::Origin))
        .start()
        .await
        .unwrap();
    settle(&app, "trips", SETTLE).await;
    let state = app.saga_state::<Trips>("s1").await.unwrap();
    assert_eq!(
        state.expect("the new instance").0.seen,
        ["opened"],
        "{backend:?}"
    );
    let store = store_of(&app);
    assert_eq!(instances(&*store, "trips").await, ["s1"], "{backend:?}");
    assert_eq!(
        events_of(&*store, "Notebook", "s1.poked").await.len(),
        1,
        "{backend:?}"
    );
    app.stop().await;
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
    a_saga_renamed_under_its_old_name_keeps_its_instances_and_timeouts
        => renamed_keeps_instances_and_timeouts;
    a_saga_type_run_under_two_names_keeps_the_instances_of_each_apart
        => run_twice_keeps_instances_apart;
    a_dead_letter_retried_after_its_instance_stopped_fails_and_stays
        => retry_after_the_stop_fails;
    a_replay_from_the_origin_leaves_a_stopped_instance_stopped
        => replay_leaves_a_stopped_instance_stopped;
    an_event_after_the_stop_starts_a_new_instance_that_a_replay_keeps
        => a_later_event_starts_a_new_instance;
}
