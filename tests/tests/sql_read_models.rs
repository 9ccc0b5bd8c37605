//! SQL read models on SQLite and PostgreSQL (docs/semantics.md §7.7): a projection's tables
//! change in the transaction that saves its checkpoint, so each event changes them exactly once,
//! across `kill -9`, restarts, retries, dead letters and rebuilds; migrations run once per
//! version; bad input is a typed error.
//!
//! Every scenario runs on both databases (PostgreSQL is skipped, with a printed reason, when no
//! server answers and `EVOQ_REQUIRE_PG` is not `1`).

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use evoq::store::{EventFilter, HandlerRequest, RequestedAction};
use evoq::{Error, EventMeta, Evoq, HandlerOptions, OnError, RetryStrategy, StartFrom};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::crash::{KillClock, run_and_kill, runtime};
use evoq_tests::ledger::{Emit, Kind};
use evoq_tests::sql_models::*;

/// Where the crash child finds its store: `sqlite:<path>` or `postgres:<schema>@<url>`.
const CHILD_ADDRESS: &str = "EVOQ_SQL_READ_MODEL_ADDRESS";

/// The events of the crash test's catch-up.
const CATCH_UP: u64 = 10_000;

/// Runs `scenario` on a fresh place of `backend`; PostgreSQL may be skipped (see the module
/// docs).
fn on(backend: Backend, label: &str, scenario: impl AsyncFnOnce(&Place)) {
    let runtime = runtime();
    let Some(place) = runtime.block_on(Place::new(backend, label)) else {
        return;
    };
    runtime.block_on(scenario(&place));
    drop(runtime);
}

fn address(place: &Place) -> String {
    place.address().expect("a SQL store")
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Starts the model on `db` with `behavior` once more, lets it reach event `to`, stops it, and
/// checks the tables: every event up to `to` applied exactly once, the tallies, the checkpoint.
async fn finish_and_check(db: &Db, behavior: Behavior, to: u64) {
    let app = db
        .builder(behavior, HandlerOptions::new())
        .start()
        .await
        .expect("start");
    wait(&app, to).await;
    app.stop().await;
    assert_each_applied_once(db, taken(to)).await;
    assert_eq!(db.tallies().await, expected_tallies(to));
    assert_eq!(checkpoint(db).await, Some(to));
}

/// Every event the projection takes among planned events `1..=to` applied exactly once, and
/// nothing else.
async fn assert_each_applied_once(db: &Db, expected: usize) {
    let applied = db.applied().await;
    let twice: Vec<_> = applied.iter().filter(|(_, times)| **times != 1).collect();
    assert!(twice.is_empty(), "events applied more than once: {twice:?}");
    assert_eq!(applied.len(), expected, "events applied");
}

async fn checkpoint(db: &Db) -> Option<u64> {
    db.store()
        .load_checkpoint(NAME)
        .await
        .expect("read the checkpoint")
}

fn fast_retries(attempts: u32, on_error: OnError) -> HandlerOptions {
    HandlerOptions::new()
        .retry(RetryStrategy::immediate())
        .max_attempts(attempts)
        .on_error(on_error)
}

// ---------------------------------------------------------------------------------------------
// kill -9 during a catch-up
// ---------------------------------------------------------------------------------------------

/// A crash child's start: prints `start <checkpoint>` (ending the harness's `test ... ` line
/// first), then starts the projection with 1 ms inside each event's transaction.
async fn start_slowly(db: &Db) -> Evoq {
    say("");
    say(&format!("start {}", checkpoint(db).await.unwrap_or(0)));
    let behavior = Behavior {
        pause_every: 1,
        ..Behavior::default()
    };
    db.builder(behavior, HandlerOptions::new())
        .start()
        .await
        .expect("start")
}

/// The child: catches up with the read model, slowly (1 ms inside each event's transaction),
/// until it is killed. Prints `start <checkpoint>` first.
#[test]
#[ignore = "run by the crash tests in a child process"]
fn sql_read_model_crash_child_catches_up() {
    let Ok(address) = std::env::var(CHILD_ADDRESS) else {
        return;
    };
    runtime().block_on(async move {
        let db = Db::open(&address).await;
        let app = start_slowly(&db).await;
        wait(&app, CATCH_UP).await;
        say("caught up");
        std::future::pending::<()>().await;
    });
}

/// Ten children killed with SIGKILL at random moments of the catch-up, then one that finishes
/// it: every event applied exactly once, and the tables equal to the events applied in order.
fn kill_ten_children_during_the_catch_up(place: &Place) {
    let address = address(place);
    runtime().block_on(async {
        let db = Db::open(&address).await;
        append_planned(&*db.store(), 1, CATCH_UP).await;
    });
    let mut clock = KillClock::new();
    let mut starts = Vec::new();
    for round in 0..10 {
        let after = clock.between(Duration::from_millis(250), Duration::from_millis(500));
        let lines = run_and_kill(
            "sql_read_model_crash_child_catches_up",
            &[(CHILD_ADDRESS, &address)],
            after,
        );
        assert!(
            !lines.iter().any(|line| line == "caught up"),
            "round {round}: the child caught up before it was killed"
        );
        let start: u64 = lines
            .iter()
            .find_map(|line| line.strip_prefix("start "))
            .unwrap_or_else(|| panic!("round {round}: the child never started: {lines:?}"))
            .parse()
            .expect("a position");
        println!("round {round}: killed after {after:?}, it had started after {start}");
        starts.push(start);
    }
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "the checkpoint never goes back: {starts:?}"
    );
    assert!(
        starts
            .last()
            .is_some_and(|last| *last > 0 && *last < CATCH_UP),
        "the children made progress and were all killed during the catch-up: {starts:?}"
    );
    runtime().block_on(async {
        let db = Db::open(&address).await;
        finish_and_check(&db, Behavior::default(), CATCH_UP).await;
    });
}

#[test]
fn each_event_is_applied_exactly_once_across_ten_sigkills_during_a_catch_up_on_sqlite() {
    Place::run(
        Backend::Sqlite,
        "sqlrm-crash",
        kill_ten_children_during_the_catch_up,
    );
}

#[test]
fn each_event_is_applied_exactly_once_across_ten_sigkills_during_a_catch_up_on_postgres() {
    Place::run(
        Backend::Postgres,
        "sqlrm_crash",
        kill_ten_children_during_the_catch_up,
    );
}

// ---------------------------------------------------------------------------------------------
// Restarts and consistency tokens
// ---------------------------------------------------------------------------------------------

/// A restart resumes after the read model's checkpoint: no event twice, none skipped; a token
/// from before the restart is reached only once the restarted model holds it.
async fn restart_resumes_from_the_models_checkpoint(place: &Place) {
    let address = address(place);
    let db = Db::open(&address).await;
    append_planned(&*db.store(), 1, 300).await;
    let first = Behavior::default();
    let app = db
        .builder(first.clone(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    wait(&app, 300).await;
    // Held shut: the next dispatch's event is stored but not projected before the stop.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    app.stop().await;
    assert_eq!(checkpoint(&db).await, Some(300));
    let taken_positions: Vec<u64> = (1..=300).filter(|i| planned(*i).0 != Kind::B).collect();
    assert_eq!(first.seen(), taken_positions);

    let shut = Behavior {
        gate: Some(Arc::clone(&gate)),
        ..Behavior::default()
    };
    let app = db
        .builder(shut.clone(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    let done = app
        .dispatch(Emit::new("token", &[Kind::A, Kind::C], 1_000_000))
        .await
        .expect("dispatch");
    assert_eq!(done.token, 302);
    app.stop().await;
    assert_eq!(checkpoint(&db).await, Some(300), "not projected yet");

    // The restart, as a new process: new handles on the same data.
    let db = Db::open(&address).await;
    append_planned(&*db.store(), 303, 400).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let second = Behavior {
        gate: Some(Arc::clone(&gate)),
        ..Behavior::default()
    };
    let app = db
        .builder(second.clone(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    let token = done.token;
    let waiting = {
        let (app, db) = (app.clone(), db.clone());
        tokio::spawn(async move { db.wait_for_token(&app, token).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the token is not reached before the model holds its events"
    );
    assert!(!db.tallies().await.contains_key("token"));
    gate.add_permits(1_000);
    waiting
        .await
        .expect("the waiter")
        .expect("the token is reached");
    // Reached means committed: a query right after sees the token's events.
    let tally = db.tallies().await["token"];
    assert_eq!(tally, [1, 1, 2_000_001, 302]);
    wait(&app, 400).await;
    app.stop().await;

    let mut resumed = vec![301, 302];
    resumed.extend((303..=400).filter(|i| planned(*i).0 != Kind::B));
    assert_eq!(second.seen(), resumed, "resumed right after the checkpoint");
    assert_each_applied_once(&db, taken(400) - taken(302) + taken(300) + 2).await;
    let mut expected = expected_tallies_of((1..=300).chain(303..=400));
    expected.insert("token".into(), [1, 1, 2_000_001, 302]);
    assert_eq!(db.tallies().await, expected);
    assert_eq!(checkpoint(&db).await, Some(400));
}

#[test]
fn a_restart_resumes_after_the_models_checkpoint_and_a_token_waits_for_the_model_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-restart",
        restart_resumes_from_the_models_checkpoint,
    );
}

#[test]
fn a_restart_resumes_after_the_models_checkpoint_and_a_token_waits_for_the_model_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_restart",
        restart_resumes_from_the_models_checkpoint,
    );
}

/// Two nodes deliver the same events (a lease lost during a delivery, a node that resumed
/// from an old checkpoint): each event's changes are committed once, by whichever commits
/// first; the other's are rolled back.
async fn a_second_delivery_of_a_committed_event_changes_nothing(place: &Place) {
    let address = address(place);
    let first = Db::open(&address).await;
    let second = Db::open(&address).await;
    append_planned(&*first.store(), 1, 3).await;
    for db in [&first, &second] {
        assert_eq!(db.read_model().checkpoint(NAME).await.expect("read"), None);
    }
    let page = first
        .store()
        .read_all(0, 10, &EventFilter::All)
        .await
        .expect("read the events");
    let [one, two]: [EventMeta; 2] = [
        EventMeta::new(Arc::clone(&page.events[0])),
        EventMeta::new(Arc::clone(&page.events[1])),
    ];
    // The second node's delivery of event 1 comes after the first committed it: its
    // checkpoint says so when the transaction finishes.
    first
        .apply_and_commit(&one)
        .await
        .expect("first node, event 1");
    second
        .apply_and_commit(&one)
        .await
        .expect("second node, event 1");
    // The first node's delivery of event 2 comes after the second committed it: the checkpoint
    // does not move when it commits.
    second
        .apply_and_commit(&two)
        .await
        .expect("second node, event 2");
    first
        .apply_and_commit(&two)
        .await
        .expect("first node, event 2");
    assert_each_applied_once(&first, 2).await;
    assert_eq!(checkpoint(&first).await, Some(2));

    // A projection started from the origin over a model that holds every event: nothing twice.
    append_planned(&*first.store(), 4, 100).await;
    let db = Db::open(&address).await;
    let app = db
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    wait(&app, 100).await;
    app.stop().await;
    let db = Db::open(&address).await;
    let replay = Behavior::default();
    let app = db
        .builder(
            replay.clone(),
            HandlerOptions::new().start_from(StartFrom::Origin),
        )
        .start()
        .await
        .expect("start from the origin");
    append_planned(&*db.store(), 101, 110).await;
    wait(&app, 110).await;
    app.stop().await;
    // Every event is delivered again, on PostgreSQL too (its shared lease keeps the start the
    // handler was told).
    assert_eq!(replay.seen().len(), taken(110));
    // Event 1 (a `Beta`) has the row the first node wrote by hand.
    assert_each_applied_once(&db, taken(110) + 1).await;
    assert_eq!(checkpoint(&db).await, Some(110));
}

#[test]
fn a_second_delivery_of_a_committed_event_changes_nothing_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-twice",
        a_second_delivery_of_a_committed_event_changes_nothing,
    );
}

#[test]
fn a_second_delivery_of_a_committed_event_changes_nothing_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_twice",
        a_second_delivery_of_a_committed_event_changes_nothing,
    );
}

// ---------------------------------------------------------------------------------------------
// One read model per projection, across restarts
// ---------------------------------------------------------------------------------------------

/// The projection's name after a rename that did not keep the old one.
const RENAMED: &str = "tallies_renamed";

/// The projection that the read model of `db` records as its owner, if any (the table may not
/// exist yet in a database of an earlier evoq).
async fn owner(db: &Db) -> Option<String> {
    match db {
        Db::Sqlite(_, model) => model
            .read(|conn| {
                use evoq::projection::sqlite::rusqlite::OptionalExtension;
                conn.query_row(
                    "SELECT projection FROM evoq_read_model_owners WHERE model = 'tallies'",
                    [],
                    |row| row.get(0),
                )
                .optional()
            })
            .await
            .expect("read the owner"),
        Db::Postgres(_, model) => model
            .query_opt(
                "SELECT projection FROM evoq_read_model_owners WHERE model = 'tallies'",
                &[],
            )
            .await
            .expect("read the owner")
            .map(|row| row.get(0)),
    }
}

/// Starts the projection under `name` on `db`, a read model that belongs to projection
/// `owner`: the start is refused, naming both projections and what to do, and nothing runs.
/// The message.
async fn assert_start_refused(db: &Db, name: &str, owner: &str) -> String {
    let saved = db.store().load_checkpoint(name).await.expect("read");
    let started = db
        .builder(
            Behavior::default(),
            HandlerOptions::new().name(name.to_owned()),
        )
        .start()
        .await;
    let error = match started {
        Ok(app) => {
            app.stop().await;
            panic!(
                "projection `{name}` started on the read model of projection `{owner}`, which holds its rows"
            );
        }
        Err(error) => error,
    };
    assert!(
        matches!(&error, Error::Config { key, .. } if key == "projection"),
        "a configuration error: {error:?}"
    );
    assert_eq!(error.kind(), evoq::ErrorKind::Config);
    let message = error.to_string();
    for needed in [
        format!("`{name}`"),
        format!("`{owner}`"),
        format!("HandlerOptions::new().name(\"{owner}\")"),
        format!("#[projection(name = \"{owner}\""),
        "a read model of its own".to_owned(),
        format!("evoq checkpoint reset {owner}"),
        "evoq_read_model_owners".to_owned(),
    ] {
        assert!(message.contains(&needed), "`{needed}` in: {message}");
    }
    assert_eq!(
        db.store().load_checkpoint(name).await.expect("read"),
        saved,
        "the checkpoint of `{name}` did not move"
    );
    message
}

/// Runs the projection under its own name on `db` up to `to`, then stops it.
async fn run_to(db: &Db, to: u64) {
    let app = db
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    wait(&app, to).await;
    app.stop().await;
}

/// A projection renamed without keeping its name, on the read model the old name filled: a new
/// runtime (a restart, as a new process) is refused at start and the rows stay as they are;
/// registered under its old name it goes on, each event applied once.
async fn a_renamed_projection_is_refused_then_goes_on_under_its_old_name(place: &Place) {
    let address = address(place);
    let db = Db::open(&address).await;
    append_planned(&*db.store(), 1, 40).await;
    run_to(&db, 40).await;
    assert_eq!(db.tallies().await, expected_tallies(40));

    // Version 2, a new process: the projection renamed, the same read model.
    let db = Db::open(&address).await;
    assert_start_refused(&db, RENAMED, NAME).await;
    assert_eq!(db.tallies().await, expected_tallies(40), "rows unchanged");
    assert_each_applied_once(&db, taken(40)).await;
    assert_eq!(checkpoint(&db).await, Some(40));

    // Registered under its old name (another process again): it goes on after its checkpoint.
    let db = Db::open(&address).await;
    append_planned(&*db.store(), 41, 60).await;
    let behavior = Behavior::default();
    let app = db
        .builder(behavior.clone(), HandlerOptions::new().name(NAME))
        .start()
        .await
        .expect("start under the old name");
    wait(&app, 60).await;
    app.stop().await;
    let resumed: Vec<u64> = (41..=60).filter(|i| planned(*i).0 != Kind::B).collect();
    assert_eq!(
        behavior.seen(),
        resumed,
        "only the events after the checkpoint"
    );
    assert_each_applied_once(&db, taken(60)).await;
    assert_eq!(db.tallies().await, expected_tallies(60));
    assert_eq!(checkpoint(&db).await, Some(60));
    assert_eq!(owner(&db).await.as_deref(), Some(NAME));
}

#[test]
fn a_renamed_projection_is_refused_at_start_and_goes_on_once_under_its_old_name_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-rename",
        a_renamed_projection_is_refused_then_goes_on_under_its_old_name,
    );
}

#[test]
fn a_renamed_projection_is_refused_at_start_and_goes_on_once_under_its_old_name_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_rename",
        a_renamed_projection_is_refused_then_goes_on_under_its_old_name,
    );
}

/// After a restart the owner's rebuild clears and replays its model, which stays its own (the
/// renamed projection is still refused); a model handed over by hand (its tables emptied, its
/// owner's record deleted, as the docs say) is the renamed projection's, which applies each
/// event once, and the old name is refused in turn.
async fn the_owner_rebuilds_and_a_handed_over_model_is_the_new_names(place: &Place) {
    let address = address(place);
    let db = Db::open(&address).await;
    append_planned(&*db.store(), 1, 30).await;
    run_to(&db, 30).await;

    let db = Db::open(&address).await;
    let app = db
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    wait(&app, 30).await;
    assert_eq!(app.rebuild(NAME).await.expect("the owner rebuilds"), 30);
    app.stop().await;
    assert_each_applied_once(&db, taken(30)).await;
    assert_eq!(db.tallies().await, expected_tallies(30));

    let db = Db::open(&address).await;
    assert_start_refused(&db, RENAMED, NAME).await;
    assert_eq!(db.tallies().await, expected_tallies(30));
    assert_eq!(
        owner(&db).await.as_deref(),
        Some(NAME),
        "a rebuild keeps the owner"
    );

    // The hand-over, with no runtime running `tallies`: its tables emptied, its checkpoint
    // reset (as `evoq checkpoint reset tallies` does), its owner's record deleted.
    place
        .execute(
            "DELETE FROM applied; DELETE FROM tallies;
             DELETE FROM evoq_read_model_owners WHERE model = 'tallies';",
            "DELETE FROM {s}.applied; DELETE FROM {s}.tallies;
             DELETE FROM {s}.evoq_read_model_owners WHERE model = 'tallies';",
        )
        .await;
    db.store()
        .save_checkpoint(NAME, 0)
        .await
        .expect("reset the checkpoint");
    let db = Db::open(&address).await;
    let app = db
        .builder(Behavior::default(), HandlerOptions::new().name(RENAMED))
        .start()
        .await
        .expect("the renamed projection takes the emptied model");
    tokio::time::timeout(
        Duration::from_secs(60),
        app.wait_for_named(RENAMED, 30).without_deadline(),
    )
    .await
    .expect("in time")
    .expect("the renamed projection runs");
    app.stop().await;
    assert_each_applied_once(&db, taken(30)).await;
    assert_eq!(db.tallies().await, expected_tallies(30));
    assert_eq!(owner(&db).await.as_deref(), Some(RENAMED));

    let db = Db::open(&address).await;
    assert_start_refused(&db, NAME, RENAMED).await;
    assert_each_applied_once(&db, taken(30)).await;
    assert_eq!(checkpoint(&db).await, Some(0));
}

#[test]
fn the_owners_rebuild_keeps_its_model_and_a_model_handed_over_replays_once_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-handover",
        the_owner_rebuilds_and_a_handed_over_model_is_the_new_names,
    );
}

#[test]
fn the_owners_rebuild_keeps_its_model_and_a_model_handed_over_replays_once_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_handover",
        the_owner_rebuilds_and_a_handed_over_model_is_the_new_names,
    );
}

/// A database whose read model an earlier evoq filled, which recorded no owner (no table
/// `evoq_read_model_owners`): a projection of another name is refused, since the rows are not
/// its own; the projection whose checkpoint is there keeps the model, is recorded as its owner,
/// and goes on, each event applied once.
async fn a_model_of_an_earlier_evoq_stays_its_projections(place: &Place) {
    let address = address(place);
    let db = Db::open(&address).await;
    append_planned(&*db.store(), 1, 40).await;
    run_to(&db, 40).await;
    // The shape an earlier evoq left: the same tables, migrations and checkpoint, no owners.
    place
        .execute(
            "DROP TABLE IF EXISTS evoq_read_model_owners",
            "DROP TABLE IF EXISTS {s}.evoq_read_model_owners",
        )
        .await;

    let db = Db::open(&address).await;
    let started = db
        .builder(Behavior::default(), HandlerOptions::new().name(RENAMED))
        .start()
        .await;
    let error = match started {
        Ok(app) => {
            app.stop().await;
            panic!("the renamed projection started on rows it did not write");
        }
        Err(error) => error,
    };
    assert!(
        matches!(&error, Error::Config { key, .. } if key == "projection"),
        "{error:?}"
    );
    let message = error.to_string();
    for needed in [
        format!("`{RENAMED}`"),
        "table `applied`".to_owned(),
        "evoq checkpoints".to_owned(),
        "HandlerOptions::new().name(".to_owned(),
    ] {
        assert!(message.contains(&needed), "`{needed}` in: {message}");
    }
    assert_eq!(db.tallies().await, expected_tallies(40), "rows unchanged");
    assert_each_applied_once(&db, taken(40)).await;
    assert_eq!(
        owner(&db).await,
        None,
        "no owner recorded for the refused name"
    );

    let db = Db::open(&address).await;
    append_planned(&*db.store(), 41, 50).await;
    run_to(&db, 50).await;
    assert_eq!(owner(&db).await.as_deref(), Some(NAME), "recorded now");
    assert_each_applied_once(&db, taken(50)).await;
    assert_eq!(db.tallies().await, expected_tallies(50));

    let db = Db::open(&address).await;
    assert_start_refused(&db, RENAMED, NAME).await;
}

#[test]
fn a_read_model_of_an_earlier_evoq_is_kept_by_its_projection_and_refused_to_another_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-oldowner",
        a_model_of_an_earlier_evoq_stays_its_projections,
    );
}

#[test]
fn a_read_model_of_an_earlier_evoq_is_kept_by_its_projection_and_refused_to_another_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_oldowner",
        a_model_of_an_earlier_evoq_stays_its_projections,
    );
}

/// One read model given to two projections of one runtime: the start is refused, naming both,
/// and nothing is delivered.
async fn one_model_for_two_projections_fails_the_start(place: &Place) {
    let db = Db::open(&address(place)).await;
    append_planned(&*db.store(), 1, 10).await;
    let (first, second) = (Behavior::default(), Behavior::default());
    let builder = Evoq::builder().shared_store(db.store());
    let builder = match &db {
        Db::Sqlite(_, model) => builder
            .projection(SqliteTallies {
                model: model.clone(),
                behavior: first.clone(),
            })
            .projection_with(
                SqliteTallies {
                    model: model.clone(),
                    behavior: second.clone(),
                },
                HandlerOptions::new().name(RENAMED),
            ),
        Db::Postgres(_, model) => builder
            .projection(PostgresTallies {
                model: model.clone(),
                behavior: first.clone(),
            })
            .projection_with(
                PostgresTallies {
                    model: model.clone(),
                    behavior: second.clone(),
                },
                HandlerOptions::new().name(RENAMED),
            ),
    };
    let error = match builder.start().await {
        Ok(app) => {
            app.stop().await;
            panic!("two projections started on one read model");
        }
        Err(error) => error,
    };
    assert!(
        matches!(&error, Error::Config { key, .. } if key == "projection"),
        "{error:?}"
    );
    let message = error.to_string();
    for needed in [
        format!("projection `{NAME}`"),
        format!("projection `{RENAMED}`"),
        "a read model of its own".to_owned(),
    ] {
        assert!(message.contains(&needed), "`{needed}` in: {message}");
    }
    assert!(first.seen().is_empty() && second.seen().is_empty());
    assert!(db.tallies().await.is_empty());
}

#[test]
fn one_read_model_given_to_two_projections_of_a_runtime_fails_its_start_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-twice",
        one_model_for_two_projections_fails_the_start,
    );
}

#[test]
fn one_read_model_given_to_two_projections_of_a_runtime_fails_its_start_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_twice",
        one_model_for_two_projections_fails_the_start,
    );
}

/// A rolling upgrade on two nodes: while node A runs the projection, node B starts with the
/// projection renamed on the same read model and is refused; A goes on, each event once.
async fn a_renamed_projection_on_a_second_node_is_refused(place: &Place) {
    let address = address(place);
    let (db_a, db_b) = (Db::open(&address).await, Db::open(&address).await);
    append_planned(&*db_a.store(), 1, 20).await;
    let a = db_a
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start a");
    wait(&a, 20).await;
    assert_start_refused(&db_b, RENAMED, NAME).await;
    append_planned(&*db_a.store(), 21, 40).await;
    wait(&a, 40).await;
    a.stop().await;
    assert_each_applied_once(&db_a, taken(40)).await;
    assert_eq!(db_a.tallies().await, expected_tallies(40));
}

#[test]
fn a_renamed_projection_starting_on_a_second_node_is_refused_while_the_first_runs_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_rename_nodes",
        a_renamed_projection_on_a_second_node_is_refused,
    );
}

// ---------------------------------------------------------------------------------------------
// Rebuilds
// ---------------------------------------------------------------------------------------------

async fn a_rebuild_replays_and_ends_equal_to_the_live_tables(place: &Place) {
    let db = Db::open(&address(place)).await;
    append_planned(&*db.store(), 1, 1_500).await;
    let behavior = Behavior::default();
    let app = db
        .builder(behavior.clone(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    wait(&app, 1_500).await;
    let live = db.tallies().await;
    assert_eq!(live, expected_tallies(1_500));
    assert_each_applied_once(&db, taken(1_500)).await;

    let reached = app.rebuild(NAME).await.expect("rebuild");
    assert_eq!(reached, 1_500);
    assert_eq!(
        db.tallies().await,
        live,
        "the rebuilt tables equal the live ones"
    );
    assert_each_applied_once(&db, taken(1_500)).await;
    assert_eq!(checkpoint(&db).await, Some(1_500));
    assert_eq!(
        behavior.seen().len(),
        2 * taken(1_500),
        "every event replayed"
    );

    // And it goes on live.
    append_planned(&*db.store(), 1_501, 1_510).await;
    wait(&app, 1_510).await;
    assert_eq!(db.tallies().await, expected_tallies(1_510));
    app.stop().await;
}

#[test]
fn a_rebuild_over_1500_events_leaves_the_tables_equal_to_the_live_ones_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-rebuild",
        a_rebuild_replays_and_ends_equal_to_the_live_tables,
    );
}

#[test]
fn a_rebuild_over_1500_events_leaves_the_tables_equal_to_the_live_ones_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_rebuild",
        a_rebuild_replays_and_ends_equal_to_the_live_tables,
    );
}

// ---------------------------------------------------------------------------------------------
// A requested rebuild across kill -9
// ---------------------------------------------------------------------------------------------

/// The events of the requested-rebuild crash test.
const REBUILT: u64 = 5_000;

/// Where the request-carrying child learns which request to report on.
const CHILD_REQUEST: &str = "EVOQ_SQL_READ_MODEL_REQUEST";

/// The child: starts the application (slowly: 1 ms inside each event's transaction) on a store
/// that may hold a rebuild request for the model; prints `start <checkpoint>`, then
/// `carried out` once the request is gone, then `caught up`, until it is killed.
#[test]
#[ignore = "run by the crash tests in a child process"]
fn sql_read_model_crash_child_carries_out_a_rebuild_request() {
    let (Ok(address), Ok(request)) = (std::env::var(CHILD_ADDRESS), std::env::var(CHILD_REQUEST))
    else {
        return;
    };
    let request: evoq::Uuid = request.parse().expect("a request id");
    runtime().block_on(async move {
        let db = Db::open(&address).await;
        let app = start_slowly(&db).await;
        while db
            .store()
            .load_request(NAME, request)
            .await
            .expect("read")
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        say("carried out");
        wait(&app, REBUILT).await;
        say("caught up");
        std::future::pending::<()>().await;
    });
}

/// A rebuild requested through the store (as the inspector CLI saves one) for a model that is
/// up to date, then children killed with SIGKILL at random moments while they carry it out and
/// replay: the rebuild runs once (no start after it finds the model back at the beginning), the
/// replay resumes where each kill left it, and the tables end equal to every event applied
/// exactly once.
fn a_requested_rebuild_survives_kill_9(place: &Place) {
    let address = address(place);
    let request = runtime().block_on(async {
        let db = Db::open(&address).await;
        append_planned(&*db.store(), 1, REBUILT).await;
        let app = db
            .builder(Behavior::default(), HandlerOptions::new())
            .start()
            .await
            .expect("start");
        wait(&app, REBUILT).await;
        app.stop().await;
        let request = HandlerRequest::new(NAME, RequestedAction::Rebuild);
        db.store()
            .save_request(request.clone())
            .await
            .expect("save the request");
        request.id
    });
    let mut clock = KillClock::new();
    // The checkpoints the children started at, after the first that saw the request done.
    let mut after_rebuild = Vec::new();
    let mut rebuilt = false;
    for round in 0..4 {
        let after = clock.between(Duration::from_millis(300), Duration::from_millis(500));
        let lines = run_and_kill(
            "sql_read_model_crash_child_carries_out_a_rebuild_request",
            &[
                (CHILD_ADDRESS, &address),
                (CHILD_REQUEST, &request.to_string()),
            ],
            after,
        );
        let start: u64 = lines
            .iter()
            .find_map(|line| line.strip_prefix("start "))
            .unwrap_or_else(|| panic!("round {round}: the child never started: {lines:?}"))
            .parse()
            .expect("a position");
        assert!(
            !lines.iter().any(|line| line == "caught up"),
            "round {round}: the replay of {REBUILT} events at 1 ms each ended before the kill"
        );
        if rebuilt {
            after_rebuild.push(start);
        }
        rebuilt |= lines.iter().any(|line| line == "carried out");
        println!("round {round}: started at {start}, killed after {after:?}; rebuilt: {rebuilt}");
    }
    assert!(rebuilt, "a child carried the request out");
    assert!(
        after_rebuild.windows(2).all(|w| w[0] <= w[1]),
        "once carried out, the rebuild never runs again: {after_rebuild:?}"
    );
    runtime().block_on(async {
        let db = Db::open(&address).await;
        assert_eq!(
            db.store().load_request(NAME, request).await.expect("read"),
            None,
            "a request carried out is gone"
        );
        let resumed = checkpoint(&db).await.unwrap_or(0);
        assert!(
            resumed < REBUILT,
            "the kills came during the replay: {resumed}"
        );
        let behavior = Behavior::default();
        finish_and_check(&db, behavior.clone(), REBUILT).await;
        assert!(
            behavior.seen().iter().all(|position| *position > resumed),
            "the last start resumed after the model's checkpoint {resumed}"
        );
    });
}

#[test]
fn a_requested_rebuild_killed_four_times_runs_once_and_applies_each_event_once_on_sqlite() {
    Place::run(
        Backend::Sqlite,
        "sqlrm-request-crash",
        a_requested_rebuild_survives_kill_9,
    );
}

#[test]
fn a_requested_rebuild_killed_four_times_runs_once_and_applies_each_event_once_on_postgres() {
    Place::run(
        Backend::Postgres,
        "sqlrm_request_crash",
        a_requested_rebuild_survives_kill_9,
    );
}

// ---------------------------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------------------------

const CREATE_SEEDS: (&str, &str) = ("create seeds", "CREATE TABLE seeds (id BIGINT PRIMARY KEY)");
const SEED_ONE: (&str, &str) = ("seed one", "INSERT INTO seeds (id) VALUES (1)");
const SEED_THREE: (&str, &str) = ("seed three", "INSERT INTO seeds (id) VALUES (3)");
const SEEDS_APPLIED: &str = "SELECT COUNT(*) FROM evoq_read_model_migrations WHERE model = 'seeds'";

async fn open_seeds(place: &Place, migrations: &[(&str, &str)]) -> Result<Db, OpenError> {
    Db::open_with(&address(place), "seeds", migrations, &["seeds"]).await
}

async fn migrations_run_once_per_version(place: &Place) {
    let db = open_seeds(place, &[CREATE_SEEDS, SEED_ONE])
        .await
        .expect("open");
    assert_eq!(db.count("SELECT COUNT(*) FROM seeds").await, 1);
    assert_eq!(db.count(SEEDS_APPLIED).await, 2);
    // A restart: nothing runs again.
    let db = open_seeds(place, &[CREATE_SEEDS, SEED_ONE])
        .await
        .expect("reopen");
    assert_eq!(db.count("SELECT COUNT(*) FROM seeds").await, 1);
    // A migration added later runs once.
    let db = open_seeds(place, &[CREATE_SEEDS, SEED_ONE, SEED_THREE])
        .await
        .expect("open with a third migration");
    assert_eq!(db.count("SELECT COUNT(*) FROM seeds").await, 2);
    let db = open_seeds(place, &[CREATE_SEEDS, SEED_ONE, SEED_THREE])
        .await
        .expect("reopen");
    assert_eq!(db.count("SELECT COUNT(*) FROM seeds").await, 2);
    assert_eq!(db.count(SEEDS_APPLIED).await, 3);
    // Another read model in the same database keeps its own versions.
    let other = Db::open_with(&address(place), "tallies", &MIGRATIONS, &TABLES)
        .await
        .expect("a second read model");
    assert_eq!(
        other
            .count("SELECT COUNT(*) FROM evoq_read_model_migrations WHERE model = 'tallies'")
            .await,
        2
    );
}

#[test]
fn migrations_run_once_per_version_across_restarts_and_a_new_one_runs_once_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-migrate",
        migrations_run_once_per_version,
    );
}

#[test]
fn migrations_run_once_per_version_across_restarts_and_a_new_one_runs_once_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_migrate",
        migrations_run_once_per_version,
    );
}

async fn a_failing_migration_is_rolled_back_whole(place: &Place) {
    let broken = (
        "create half, then fail",
        "CREATE TABLE half (x BIGINT); INSERT INTO nowhere (x) VALUES (1)",
    );
    let error = open_seeds(place, &[CREATE_SEEDS, broken])
        .await
        .err()
        .expect("the migration fails");
    assert_eq!(
        error.failed_migration(),
        Some((2, "create half, then fail".to_owned())),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("migration 2 `create half, then fail`") && message.contains("rolled back"),
        "{message}"
    );
    // Migration 1 stays applied; nothing of migration 2 is.
    let fixed = ("create half, then fail", "CREATE TABLE half (x BIGINT)");
    let db = open_seeds(place, &[CREATE_SEEDS]).await.expect("open");
    assert!(db.has_table("seeds").await);
    assert!(
        !db.has_table("half").await,
        "nothing of the failed migration"
    );
    assert_eq!(db.count(SEEDS_APPLIED).await, 1);
    // Fixed, it runs.
    let db = open_seeds(place, &[CREATE_SEEDS, fixed])
        .await
        .expect("open");
    assert!(db.has_table("half").await);
    assert_eq!(db.count(SEEDS_APPLIED).await, 2);
}

#[test]
fn a_failing_migration_is_a_typed_error_naming_it_and_nothing_of_it_is_applied_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-migfail",
        a_failing_migration_is_rolled_back_whole,
    );
}

#[test]
fn a_failing_migration_is_a_typed_error_naming_it_and_nothing_of_it_is_applied_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_migfail",
        a_failing_migration_is_rolled_back_whole,
    );
}

async fn changed_migrations_and_bad_names_are_refused(place: &Place) {
    open_seeds(place, &[CREATE_SEEDS, SEED_ONE])
        .await
        .expect("open");
    let renamed = ("make seeds", CREATE_SEEDS.1);
    let error = open_seeds(place, &[renamed, SEED_ONE])
        .await
        .err()
        .expect("refused");
    assert_eq!(error.changed_migration(), Some(1), "{error}");
    assert!(error.to_string().contains("`make seeds`"), "{error}");
    let edited = (SEED_ONE.0, "INSERT INTO seeds (id) VALUES (2)");
    let error = open_seeds(place, &[CREATE_SEEDS, edited])
        .await
        .err()
        .expect("refused");
    assert_eq!(error.changed_migration(), Some(2), "{error}");
    let error = open_seeds(place, &[CREATE_SEEDS])
        .await
        .err()
        .expect("refused");
    assert_eq!(error.too_new(), Some((2, 1)), "{error}");
    let db = open_seeds(place, &[CREATE_SEEDS, SEED_ONE])
        .await
        .expect("open");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM seeds").await,
        1,
        "nothing ran"
    );

    let error = Db::open_with(&address(place), "bad name", &[], &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(
        error.invalid_name(),
        Some(("read model name", "bad name".to_owned()))
    );
    let error = Db::open_with(
        &address(place),
        "seeds",
        &[CREATE_SEEDS, SEED_ONE],
        &["seeds;"],
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(
        error.invalid_name(),
        Some(("table name", "seeds;".to_owned()))
    );
    let error = Db::open_with(
        &address(place),
        "seeds",
        &[CREATE_SEEDS, SEED_ONE],
        &["sedes"],
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(error.unknown_table(), Some("sedes".to_owned()), "{error}");
    let error = Db::open_with(&address(place), "seeds", &[("", "SELECT 1")], &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(
        error.invalid_name(),
        Some(("migration name", String::new()))
    );
}

#[test]
fn a_changed_migration_a_newer_database_and_bad_names_are_typed_errors_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-refused",
        changed_migrations_and_bad_names_are_refused,
    );
}

#[test]
fn a_changed_migration_a_newer_database_and_bad_names_are_typed_errors_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_refused",
        changed_migrations_and_bad_names_are_refused,
    );
}

async fn a_model_without_tables_cannot_be_rebuilt(place: &Place) {
    let db = Db::open_with(&address(place), "tallies", &MIGRATIONS, &[])
        .await
        .expect("open");
    let app = db
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    let error = app.rebuild(NAME).await.expect_err("nothing to clear");
    assert!(
        matches!(&error, Error::Rebuild { reason, .. } if reason.contains("names no table to clear")),
        "{error}"
    );
    app.stop().await;
}

#[test]
fn a_rebuild_of_a_model_that_names_no_table_is_an_error_saying_so_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-notables",
        a_model_without_tables_cannot_be_rebuilt,
    );
}

#[test]
fn a_rebuild_of_a_model_that_names_no_table_is_an_error_saying_so_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_notables",
        a_model_without_tables_cannot_be_rebuilt,
    );
}

// ---------------------------------------------------------------------------------------------
// Errors in projection methods
// ---------------------------------------------------------------------------------------------

/// Planned event 7 is a `Gamma` the projection takes; 8 an `Alpha`.
const FAILING: u64 = 7;

async fn a_sql_error_is_retried_then_dead_lettered_without_a_trace(place: &Place) {
    let db = Db::open(&address(place)).await;
    append_planned(&*db.store(), 1, 20).await;
    let behavior = Behavior {
        sql_error_on: Arc::new(std::sync::Mutex::new(BTreeSet::from([FAILING]))),
        ..Behavior::default()
    };
    let app = db
        .builder(behavior.clone(), fast_retries(3, OnError::DeadLetter))
        .start()
        .await
        .expect("start");
    wait(&app, 20).await;
    let dead = app.dead_letters(NAME).list(0, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.global_position, FAILING);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].error.contains("INSERT INTO nowhere"),
        "the error names the statement: {}",
        dead[0].error
    );
    let seen = behavior.seen();
    assert_eq!(seen.iter().filter(|p| **p == FAILING).count(), 3);
    // Its writes (made before the failing statement) were rolled back, every attempt.
    let failed_id = dead[0].event.event_id.to_string();
    let applied = db.applied().await;
    assert!(
        !applied.contains_key(&failed_id),
        "no row of the failed event"
    );
    assert_each_applied_once(&db, taken(20) - 1).await;
    assert_eq!(
        db.tallies().await,
        expected_tallies_of((1..=20).filter(|i| *i != FAILING))
    );
    assert_eq!(
        checkpoint(&db).await,
        Some(20),
        "past it once dead-lettered"
    );

    // Delivered again from the dead letters once fixed: applied once, checkpoint unchanged.
    behavior.sql_error_on.lock().unwrap().clear();
    app.dead_letters(NAME)
        .retry(dead[0].event.event_id)
        .await
        .expect("the retry succeeds");
    assert_each_applied_once(&db, taken(20)).await;
    // Applied late, its tally holds it (its `last_position` is its own: it came last).
    let mut expected = expected_tallies(20);
    expected.get_mut("id-7").expect("id-7")[3] = FAILING as i64;
    assert_eq!(db.tallies().await, expected);
    assert_eq!(checkpoint(&db).await, Some(20));
    app.stop().await;
}

/// A method that fails after `finish`: each retry rolls its changes back; once the policy
/// gives the event up (skips it or dead-letters it), the last attempt's changes are committed,
/// once, with no dead letter (a retry of it would apply them again), and the store and the
/// projection go on.
async fn a_method_failing_after_finish_commits_its_changes_once(place: &Place, on_error: OnError) {
    let db = Db::open(&address(place)).await;
    append_planned(&*db.store(), 1, 20).await;
    let behavior = Behavior {
        fail_after_finish_on: Arc::new(std::sync::Mutex::new(BTreeSet::from([FAILING]))),
        ..Behavior::default()
    };
    let app = db
        .builder(behavior.clone(), fast_retries(3, on_error))
        .start()
        .await
        .expect("start");
    wait(&app, 20).await;
    let seen = behavior.seen();
    assert_eq!(seen.iter().filter(|p| **p == FAILING).count(), 3);
    assert_each_applied_once(&db, taken(20)).await;
    assert_eq!(db.tallies().await, expected_tallies(20));
    assert_eq!(checkpoint(&db).await, Some(20));
    assert!(
        app.dead_letters(NAME)
            .list(0, 10)
            .await
            .expect("list")
            .is_empty(),
        "no dead letter of an event whose changes are committed"
    );
    // Appends go on (nothing holds the database), and so does the projection.
    append_planned(&*db.store(), 21, 25).await;
    wait(&app, 25).await;
    assert_each_applied_once(&db, taken(25)).await;
    app.stop().await;
}

#[test]
fn a_method_failing_after_finish_is_dead_lettered_with_its_changes_committed_once_on_sqlite() {
    on(Backend::Sqlite, "sqlrm-late-dead", async |place| {
        a_method_failing_after_finish_commits_its_changes_once(place, OnError::DeadLetter).await;
    });
}

#[test]
fn a_method_failing_after_finish_is_dead_lettered_with_its_changes_committed_once_on_postgres() {
    on(Backend::Postgres, "sqlrm_late_dead", async |place| {
        a_method_failing_after_finish_commits_its_changes_once(place, OnError::DeadLetter).await;
    });
}

#[test]
fn a_method_failing_after_finish_is_skipped_with_its_changes_committed_once_on_sqlite() {
    on(Backend::Sqlite, "sqlrm-late-skip", async |place| {
        a_method_failing_after_finish_commits_its_changes_once(place, OnError::Skip).await;
    });
}

/// A dead letter delivered again whose method fails after `finish`: its changes are committed
/// with the end of the dead letter, so the retry fails and leaves no dead letter, and a later
/// retry finds none and applies nothing again.
async fn a_retry_failing_after_finish_commits_once_and_keeps_no_dead_letter(place: &Place) {
    let db = Db::open(&address(place)).await;
    append_planned(&*db.store(), 1, 20).await;
    let behavior = Behavior {
        sql_error_on: Arc::new(std::sync::Mutex::new(BTreeSet::from([FAILING]))),
        ..Behavior::default()
    };
    let app = db
        .builder(behavior.clone(), fast_retries(2, OnError::DeadLetter))
        .start()
        .await
        .expect("start");
    wait(&app, 20).await;
    let dead = app.dead_letters(NAME).list(0, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    let event_id = dead[0].event.event_id;
    behavior.sql_error_on.lock().unwrap().clear();
    behavior
        .fail_after_finish_on
        .lock()
        .unwrap()
        .insert(FAILING);
    let error = app
        .dead_letters(NAME)
        .retry(event_id)
        .await
        .expect_err("the method failed");
    assert!(
        matches!(error, Error::DeadLetterRetryFailed { .. }),
        "{error:?}"
    );
    assert_each_applied_once(&db, taken(20)).await;
    assert!(
        app.dead_letters(NAME)
            .list(0, 10)
            .await
            .expect("list")
            .is_empty(),
        "its changes are committed: no dead letter to apply them again"
    );
    behavior.fail_after_finish_on.lock().unwrap().clear();
    let again = app.dead_letters(NAME).retry(event_id).await;
    assert!(
        matches!(again, Err(Error::DeadLetterNotFound { .. })),
        "{again:?}"
    );
    assert_each_applied_once(&db, taken(20)).await;
    assert_eq!(db.tallies().await, {
        let mut expected = expected_tallies(20);
        expected.get_mut("id-7").expect("id-7")[3] = FAILING as i64;
        expected
    });
    app.stop().await;
}

#[test]
fn a_retry_failing_after_finish_applies_the_event_once_and_keeps_no_dead_letter_on_sqlite() {
    on(Backend::Sqlite, "sqlrm-late-retry", async |place| {
        a_retry_failing_after_finish_commits_once_and_keeps_no_dead_letter(place).await;
    });
}

#[test]
fn a_retry_failing_after_finish_applies_the_event_once_and_keeps_no_dead_letter_on_postgres() {
    on(Backend::Postgres, "sqlrm_late_retry", async |place| {
        a_retry_failing_after_finish_commits_once_and_keeps_no_dead_letter(place).await;
    });
}

/// The model's checkpoint is beyond the store's head (the store was restored from an older
/// backup than the model): the projection resumes at the head, the checkpoint moves back there,
/// and every event appended from then on is applied once, also after a restart.
async fn a_checkpoint_beyond_the_head_is_moved_back_and_new_events_are_applied(place: &Place) {
    let db = Db::open(&address(place)).await;
    append_planned(&*db.store(), 1, 20).await;
    db.store()
        .save_checkpoint(NAME, 1_000)
        .await
        .expect("save the checkpoint");
    let app = db
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    append_planned(&*db.store(), 21, 25).await;
    wait(&app, 25).await;
    app.stop().await;
    assert_each_applied_once(&db, taken(25) - taken(20)).await;
    assert_eq!(db.tallies().await, expected_tallies_of(21..=25));
    assert_eq!(checkpoint(&db).await, Some(25));

    let app = db
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("restart");
    append_planned(&*db.store(), 26, 28).await;
    wait(&app, 28).await;
    app.stop().await;
    assert_each_applied_once(&db, taken(28) - taken(20)).await;
    assert_eq!(db.tallies().await, expected_tallies_of(21..=28));
    assert_eq!(checkpoint(&db).await, Some(28));
}

#[test]
fn a_model_checkpoint_beyond_the_head_moves_back_and_each_new_event_is_applied_once_on_sqlite() {
    on(Backend::Sqlite, "sqlrm-beyond", async |place| {
        a_checkpoint_beyond_the_head_is_moved_back_and_new_events_are_applied(place).await;
    });
}

#[test]
fn a_model_checkpoint_beyond_the_head_moves_back_and_each_new_event_is_applied_once_on_postgres() {
    on(Backend::Postgres, "sqlrm_beyond", async |place| {
        a_checkpoint_beyond_the_head_is_moved_back_and_new_events_are_applied(place).await;
    });
}

/// A dead-lettered event whose failure went away is applied by a replay from the origin: its
/// dead letter ends in the same transaction, so a retry of it finds none and applies nothing
/// again.
async fn a_dead_letter_applied_by_a_replay_is_gone_and_never_applied_again(place: &Place) {
    let db = Db::open(&address(place)).await;
    append_planned(&*db.store(), 1, 20).await;
    let behavior = Behavior {
        sql_error_on: Arc::new(std::sync::Mutex::new(BTreeSet::from([FAILING]))),
        ..Behavior::default()
    };
    let app = db
        .builder(behavior.clone(), fast_retries(2, OnError::DeadLetter))
        .start()
        .await
        .expect("start");
    wait(&app, 20).await;
    let dead = app.dead_letters(NAME).list(0, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    let failed = dead[0].event.event_id;
    app.stop().await;
    drop(app);

    // Fixed, and replayed from the origin.
    let db = Db::open(&address(place)).await;
    let app = db
        .builder(
            Behavior::default(),
            fast_retries(2, OnError::DeadLetter).start_from(StartFrom::Origin),
        )
        .start()
        .await
        .expect("start from the origin");
    wait(&app, 20).await;
    assert_each_applied_once(&db, taken(20)).await;
    assert!(
        app.dead_letters(NAME)
            .list(0, 10)
            .await
            .expect("list")
            .is_empty(),
        "the dead letter ended with the changes the replay committed"
    );
    let again = app.dead_letters(NAME).retry(failed).await;
    assert!(
        matches!(again, Err(Error::DeadLetterNotFound { .. })),
        "{again:?}"
    );
    assert_each_applied_once(&db, taken(20)).await;
    assert_eq!(checkpoint(&db).await, Some(20));
    app.stop().await;
}

#[test]
fn a_dead_letter_applied_by_a_replay_from_the_origin_is_gone_and_never_applied_again_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-dlq-origin",
        a_dead_letter_applied_by_a_replay_is_gone_and_never_applied_again,
    );
}

#[test]
fn a_dead_letter_applied_by_a_replay_from_the_origin_is_gone_and_never_applied_again_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_dlq_origin",
        a_dead_letter_applied_by_a_replay_is_gone_and_never_applied_again,
    );
}

#[test]
fn a_sql_error_is_retried_then_dead_lettered_leaving_no_rows_of_the_event_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-sqlerr",
        a_sql_error_is_retried_then_dead_lettered_without_a_trace,
    );
}

#[test]
fn a_sql_error_is_retried_then_dead_lettered_leaving_no_rows_of_the_event_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_sqlerr",
        a_sql_error_is_retried_then_dead_lettered_without_a_trace,
    );
}

async fn a_stopped_projection_keeps_the_checkpoint_before_the_failed_event(place: &Place) {
    let address = address(place);
    let db = Db::open(&address).await;
    append_planned(&*db.store(), 1, 20).await;
    let behavior = Behavior {
        sql_error_on: Arc::new(std::sync::Mutex::new(BTreeSet::from([FAILING]))),
        ..Behavior::default()
    };
    let app = db
        .builder(behavior, fast_retries(2, OnError::Stop))
        .start()
        .await
        .expect("start");
    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        app.wait_for_named(NAME, 20).without_deadline(),
    )
    .await
    .expect("in time");
    assert!(
        stopped.is_err(),
        "the projection stopped on the failed event"
    );
    app.stop().await;
    assert_eq!(checkpoint(&db).await, Some(FAILING - 1));
    assert_each_applied_once(&db, taken(FAILING - 1)).await;
    assert_eq!(db.tallies().await, expected_tallies(FAILING - 1));

    // Restarted without the fault: resumes at the failed event.
    let db = Db::open(&address).await;
    let app = db
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    wait(&app, 20).await;
    app.stop().await;
    assert_each_applied_once(&db, taken(20)).await;
    assert_eq!(db.tallies().await, expected_tallies(20));
}

#[test]
fn a_sql_error_with_on_error_stop_leaves_the_checkpoint_before_the_event_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-stop",
        a_stopped_projection_keeps_the_checkpoint_before_the_failed_event,
    );
}

#[test]
fn a_sql_error_with_on_error_stop_leaves_the_checkpoint_before_the_event_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_stop",
        a_stopped_projection_keeps_the_checkpoint_before_the_failed_event,
    );
}

async fn a_failed_attempt_rolls_back_so_the_retry_applies_once(place: &Place) {
    let db = Db::open(&address(place)).await;
    append_planned(&*db.store(), 1, 20).await;
    let behavior = Behavior {
        fail_once_on: Arc::new(std::sync::Mutex::new(BTreeSet::from([FAILING]))),
        panic_once_on: Arc::new(std::sync::Mutex::new(BTreeSet::from([FAILING + 1]))),
        ..Behavior::default()
    };
    let app = db
        .builder(behavior.clone(), fast_retries(3, OnError::DeadLetter))
        .start()
        .await
        .expect("start");
    wait(&app, 20).await;
    app.stop().await;
    let seen = behavior.seen();
    assert_eq!(seen.iter().filter(|p| **p == FAILING).count(), 2);
    assert_eq!(seen.iter().filter(|p| **p == FAILING + 1).count(), 2);
    assert!(
        app.dead_letters(NAME)
            .list(0, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert_each_applied_once(&db, taken(20)).await;
    assert_eq!(db.tallies().await, expected_tallies(20));
}

#[test]
fn a_failed_or_panicking_attempt_rolls_back_its_writes_so_the_retry_applies_once_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-retry",
        a_failed_attempt_rolls_back_so_the_retry_applies_once,
    );
}

#[test]
fn a_failed_or_panicking_attempt_rolls_back_its_writes_so_the_retry_applies_once_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_retry",
        a_failed_attempt_rolls_back_so_the_retry_applies_once,
    );
}

/// Waits (20 s at most) until the projection's method has seen the event at `position`
/// `times` times.
async fn wait_seen_times(behavior: &Behavior, position: u64, times: usize) {
    let started = std::time::Instant::now();
    while behavior.seen().iter().filter(|p| **p == position).count() < times {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "event {position} not seen {times} times: {:?}",
            behavior.seen()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The commit of event 7's changes fails (the checkpoint's save fails) until the test lets it
/// through: the runtime reads the read model's checkpoint again and delivers the event again,
/// with its back-off, until the commit goes through; no dead letter for the healthy events
/// after it, each event applied once. A stop while the commit keeps failing returns, and the
/// next start applies the event once.
async fn a_failed_commit_is_delivered_again_until_it_goes_through(place: &Place) {
    let address = address(place);
    let db = Db::open(&address).await;
    append_planned(&*db.store(), 1, 20).await;
    fail_checkpoint_at(&address, Some(FAILING)).await;
    let behavior = Behavior::default();
    let app = db
        .builder(behavior.clone(), fast_retries(2, OnError::DeadLetter))
        .start()
        .await
        .expect("start");
    // Delivered, its commit failed, delivered again, failed again.
    wait_seen_times(&behavior, FAILING, 3).await;
    assert_eq!(checkpoint(&db).await, Some(FAILING - 2), "event 5's commit");
    fail_checkpoint_at(&address, None).await;
    wait(&app, 20).await;
    assert!(
        app.dead_letters(NAME)
            .list(0, 10)
            .await
            .expect("list")
            .is_empty(),
        "no event was dead-lettered"
    );
    app.stop().await;
    assert_each_applied_once(&db, taken(20)).await;
    assert_eq!(db.tallies().await, expected_tallies(20));
    assert_eq!(checkpoint(&db).await, Some(20));

    // A stop while the commit of event 27 keeps failing returns, and delivers no later event
    // to the read model meanwhile (one attempt would dead-letter it); the next start applies
    // it.
    append_planned(&*db.store(), 21, 30).await;
    fail_checkpoint_at(&address, Some(FAILING + 20)).await;
    let behavior = Behavior::default();
    let app = db
        .builder(behavior.clone(), fast_retries(1, OnError::DeadLetter))
        .start()
        .await
        .expect("start");
    wait_seen_times(&behavior, FAILING + 20, 2).await;
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("stop returns while the last commit fails");
    fail_checkpoint_at(&address, None).await;
    let app = db
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    wait(&app, 30).await;
    assert!(
        app.dead_letters(NAME)
            .list(0, 10)
            .await
            .expect("list")
            .is_empty()
    );
    app.stop().await;
    assert_each_applied_once(&db, taken(30)).await;
    assert_eq!(db.tallies().await, expected_tallies(30));
}

#[test]
fn a_failed_commit_is_delivered_again_until_it_goes_through_and_applied_once_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-commitfail",
        a_failed_commit_is_delivered_again_until_it_goes_through,
    );
}

#[test]
fn a_failed_commit_is_delivered_again_until_it_goes_through_and_applied_once_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_commitfail",
        a_failed_commit_is_delivered_again_until_it_goes_through,
    );
}

/// The read model's session ends while event 7's transaction waits for its commit (after the
/// method's `finish`): `COMMIT` is never sent, the server rolled the changes back, and the
/// event is delivered again on a new connection; no dead letter, each event applied once.
async fn a_connection_lost_before_the_commit_is_delivered_again(place: &Place) {
    let address = address(place);
    let (_, url) = schema_and_url(&address);
    let db = Db::open(&address).await;
    append_planned(&*db.store(), 1, 20).await;
    let behavior = Behavior {
        end_session_once_on: Arc::new(std::sync::Mutex::new(BTreeSet::from([FAILING]))),
        admin_url: Some(url.to_owned()),
        ..Behavior::default()
    };
    let app = db
        .builder(behavior.clone(), fast_retries(2, OnError::DeadLetter))
        .start()
        .await
        .expect("start");
    wait(&app, 20).await;
    assert!(
        app.dead_letters(NAME)
            .list(0, 10)
            .await
            .expect("list")
            .is_empty(),
        "no event was dead-lettered"
    );
    app.stop().await;
    assert_eq!(
        behavior.seen().iter().filter(|p| **p == FAILING).count(),
        2,
        "event {FAILING} delivered again once"
    );
    assert_each_applied_once(&db, taken(20)).await;
    assert_eq!(db.tallies().await, expected_tallies(20));
    assert_eq!(checkpoint(&db).await, Some(20));
}

/// The answer to the commit of event 7's changes is lost with its connection (a proxy between
/// the read model and the server drops it): the runtime reads the checkpoint again on a new
/// connection, finds the event committed, and goes on; the event is neither delivered again
/// nor dead-lettered, and each event is applied once.
async fn a_commit_whose_answer_is_lost_is_found_committed(place: &Place) {
    let address = address(place);
    let (schema, url) = schema_and_url(&address);
    let proxy = Arc::new(evoq_tests::pg::Proxy::start(url).await);
    let db = Db::open(&format!("postgres:{schema}@{}", proxy.url)).await;
    append_planned(&*db.store(), 1, 20).await;
    let behavior = Behavior {
        lose_commit_answer_once_on: Arc::new(std::sync::Mutex::new(BTreeSet::from([FAILING]))),
        proxy: Some(Arc::clone(&proxy)),
        ..Behavior::default()
    };
    let app = db
        .builder(behavior.clone(), fast_retries(2, OnError::DeadLetter))
        .start()
        .await
        .expect("start");
    wait(&app, 20).await;
    assert_eq!(proxy.cuts(), 1, "the commit's answer was lost");
    assert!(
        app.dead_letters(NAME)
            .list(0, 10)
            .await
            .expect("list")
            .is_empty(),
        "no event was dead-lettered"
    );
    app.stop().await;
    assert_eq!(
        behavior.seen().iter().filter(|p| **p == FAILING).count(),
        1,
        "event {FAILING} committed once, not delivered again"
    );
    assert_each_applied_once(&db, taken(20)).await;
    assert_eq!(db.tallies().await, expected_tallies(20));
    assert_eq!(checkpoint(&db).await, Some(20));
}

#[test]
fn a_commit_whose_answer_is_lost_is_found_committed_and_not_delivered_again_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_lostanswer",
        a_commit_whose_answer_is_lost_is_found_committed,
    );
}

#[test]
fn a_connection_lost_while_the_transaction_waits_for_its_commit_is_delivered_again_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_lostconn",
        a_connection_lost_before_the_commit_is_delivered_again,
    );
}

// ---------------------------------------------------------------------------------------------
// Appends while the projection commits
// ---------------------------------------------------------------------------------------------

async fn appends_during_a_catch_up_all_succeed(place: &Place) {
    let db = Db::open(&address(place)).await;
    append_planned(&*db.store(), 1, 5_000).await;
    let app = db
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start");
    // Four writers dispatch while the projection catches up, on the same database.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for k in 0..100u64 {
                    let done = app
                        .dispatch(Emit::new(&format!("live-{w}"), &[Kind::A], 100_000 + k))
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}, command {k}: {e}"));
                    last = done.token;
                }
                last
            })
        })
        .collect();
    let mut head = 0;
    for writer in writers {
        head = head.max(writer.await.expect("a writer"));
    }
    assert_eq!(head, 5_400);
    wait(&app, head).await;
    app.stop().await;
    assert_each_applied_once(&db, taken(5_000) + 400).await;
    let tallies = db.tallies().await;
    for w in 0..4 {
        let live = tallies[&format!("live-{w}")];
        assert_eq!(live[..3], [100, 0, (100_000..100_100).sum::<i64>()]);
    }
}

#[test]
fn appends_while_the_projection_catches_up_all_succeed_and_each_event_is_applied_once_on_sqlite() {
    on(
        Backend::Sqlite,
        "sqlrm-contend",
        appends_during_a_catch_up_all_succeed,
    );
}

#[test]
fn appends_while_the_projection_catches_up_all_succeed_and_each_event_is_applied_once_on_postgres()
{
    on(
        Backend::Postgres,
        "sqlrm_contend",
        appends_during_a_catch_up_all_succeed,
    );
}

// ---------------------------------------------------------------------------------------------
// Two nodes on one PostgreSQL schema
// ---------------------------------------------------------------------------------------------

/// How long a test waits for what must happen on the other node.
const TAKE_OVER: Duration = Duration::from_secs(20);

/// The schema and the server's URL of a PostgreSQL address (`postgres:<schema>@<url>`).
fn schema_and_url(address: &str) -> (&str, &str) {
    address
        .strip_prefix("postgres:")
        .and_then(|rest| rest.split_once('@'))
        .expect("a PostgreSQL address")
}

/// The backend (process id) whose session holds the projection's lease in the schema at
/// `address`: the advisory lock on the lease's key (64 bits, in halves in `pg_locks`).
async fn lease_holder_pid(admin: &tokio_postgres::Client, address: &str) -> Option<i32> {
    let (schema, _) = schema_and_url(address);
    let mut key: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("evoq-lease:{schema}:{NAME}").bytes() {
        key ^= u64::from(byte);
        key = key.wrapping_mul(0x0100_0000_01b3);
    }
    let (high, low) = ((key >> 32) as u32, key as u32);
    admin
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2 AND objsubid = 1",
            &[&high, &low],
        )
        .await
        .expect("read pg_locks")
        .map(|row| row.get(0))
}

/// A session of its own on the server of `address`, as an operator's.
async fn admin(address: &str) -> tokio_postgres::Client {
    let (_, url) = schema_and_url(address);
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Waits until `behavior` has seen `count` deliveries.
async fn wait_seen(behavior: &Behavior, count: usize) {
    let started = std::time::Instant::now();
    while behavior.seen().len() < count {
        assert!(
            started.elapsed() < TAKE_OVER,
            "{count} deliveries not seen: {:?}",
            behavior.seen()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Node A holds the projection's lease and is inside the transaction of the event after the
/// first three it took (its method waits at `gate`) when the session holding its lease is
/// killed: the transaction it finishes then is rolled back, not left open with its row locks,
/// and node B takes over and applies every event once.
async fn a_lost_lease_rolls_back_the_event_under_way(place: &Place) {
    let address = address(place);
    let (db_a, db_b) = (Db::open(&address).await, Db::open(&address).await);
    append_planned(&*db_a.store(), 1, 30).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(3));
    let behavior = Behavior {
        gate: Some(Arc::clone(&gate)),
        ..Behavior::default()
    };
    let a = db_a
        .builder(behavior.clone(), HandlerOptions::new())
        .start()
        .await
        .expect("start a");
    wait_seen(&behavior, 3).await;
    let b = db_b
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start b");

    let admin = admin(&address).await;
    let pid = lease_holder_pid(&admin, &address)
        .await
        .expect("a session holds the lease");
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate the lease's session")
        .get(0);
    assert!(killed, "the lease's session was terminated");
    gate.add_permits(1_000);

    let waited = tokio::time::timeout(TAKE_OVER, b.wait_for_named(NAME, 30).without_deadline())
        .await
        .expect("the node taking over is not held up by the other node's transaction");
    waited.expect("the projection runs on b");
    assert_each_applied_once(&db_b, taken(30)).await;
    assert_eq!(db_b.tallies().await, expected_tallies(30));
    a.stop().await;
    b.stop().await;
}

#[test]
fn a_sql_projection_whose_lease_connection_is_killed_mid_event_goes_on_on_the_other_node_on_postgres()
 {
    on(
        Backend::Postgres,
        "sqlrm_leasekill",
        a_lost_lease_rolls_back_the_event_under_way,
    );
}

/// Nodes A and B on one schema, the model built to event 100 by A (B started after it); A
/// then rebuilds, and is held (at `gate`) after replaying ten events. B's handle on the model
/// is returned with the two nodes.
async fn a_rebuild_under_way_on_a(address: &str) -> (Evoq, Evoq, Db, Arc<tokio::sync::Semaphore>) {
    let (db_a, db_b) = (Db::open(address).await, Db::open(address).await);
    append_planned(&*db_a.store(), 1, 100).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(taken(100)));
    let behavior = Behavior {
        gate: Some(Arc::clone(&gate)),
        ..Behavior::default()
    };
    let a = db_a
        .builder(behavior.clone(), HandlerOptions::new())
        .start()
        .await
        .expect("start a");
    wait(&a, 100).await;
    let b = db_b
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start b");
    wait(&b, 100).await;

    gate.add_permits(10);
    let rebuilding = a.clone();
    tokio::spawn(async move { rebuilding.rebuild(NAME).await });
    wait_seen(&behavior, taken(100) + 10).await;
    (a, b, db_b, gate)
}

/// A wait on node B during A's rebuild does not return before the rows are back: B's position
/// follows the checkpoint back to where the replay is.
async fn a_wait_on_the_other_node_waits_for_the_rebuild(place: &Place) {
    let address = address(place);
    let (a, b, db_b, gate) = a_rebuild_under_way_on_a(&address).await;
    // B follows the checkpoint by polling the store: it sees the rebuild within a poll.
    let position = || {
        b.handler_stats()
            .into_iter()
            .find(|stats| stats.name == NAME)
            .expect("b runs the projection")
            .position
    };
    let started = std::time::Instant::now();
    while position() >= 100 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "b's position stays at {} during the rebuild",
            position()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let early = tokio::time::timeout(
        Duration::from_secs(2),
        b.wait_for_named(NAME, 100).without_deadline(),
    )
    .await;
    assert!(
        early.is_err(),
        "b's wait returned while the rebuild had replayed 10 events: {early:?}"
    );
    assert!(
        position() < 100,
        "b says the projection is at {}",
        position()
    );

    gate.add_permits(1_000);
    wait(&b, 100).await;
    assert_each_applied_once(&db_b, taken(100)).await;
    assert_eq!(db_b.tallies().await, expected_tallies(100));
    a.stop().await;
    b.stop().await;
}

#[test]
fn a_wait_on_the_node_without_the_lease_waits_for_the_rows_of_a_rebuild_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_rb_wait",
        a_wait_on_the_other_node_waits_for_the_rebuild,
    );
}

/// A stops in the middle of its rebuild: B, taking the lease, finishes the replay from the
/// checkpoint the rebuild moved back, not from where the model was when B started.
async fn a_rebuild_cut_by_a_stop_is_finished_by_the_other_node(place: &Place) {
    let address = address(place);
    let (a, b, db_b, _gate) = a_rebuild_under_way_on_a(&address).await;
    a.stop().await;
    append_planned(&*db_b.store(), 101, 101).await;
    wait(&b, 101).await;
    assert_each_applied_once(&db_b, taken(101)).await;
    assert_eq!(db_b.tallies().await, expected_tallies(101));
    b.stop().await;
}

#[test]
fn a_rebuild_interrupted_by_a_stop_is_finished_by_the_node_taking_over_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_rb_stop",
        a_rebuild_cut_by_a_stop_is_finished_by_the_other_node,
    );
}

/// A rebuild asked on node B, which does not hold the lease, is handed to A, which holds it:
/// the call returns once the replay reached the head, with every event applied once.
async fn a_rebuild_asked_on_the_other_node_is_carried_out_by_the_holder(place: &Place) {
    let address = address(place);
    let (db_a, db_b) = (Db::open(&address).await, Db::open(&address).await);
    append_planned(&*db_a.store(), 1, 40).await;
    let behavior = Behavior::default();
    let a = db_a
        .builder(behavior.clone(), HandlerOptions::new())
        .start()
        .await
        .expect("start a");
    wait(&a, 40).await;
    let b = db_b
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start b");
    let reached = tokio::time::timeout(TAKE_OVER, b.rebuild(NAME))
        .await
        .expect("the rebuild asked on b returns")
        .expect("the rebuild succeeds");
    assert_eq!(reached, 40);
    assert_eq!(
        behavior.seen().len(),
        2 * taken(40),
        "a replayed every event"
    );
    assert_each_applied_once(&db_b, taken(40)).await;
    assert_eq!(db_b.tallies().await, expected_tallies(40));
    let requests = db_b.store().list_requests(NAME, 10).await.expect("list");
    assert!(requests.is_empty(), "no request is left: {requests:?}");
    a.stop().await;
    b.stop().await;
}

#[test]
fn a_rebuild_asked_on_the_node_without_the_lease_is_carried_out_by_the_holder_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_rb_other",
        a_rebuild_asked_on_the_other_node_is_carried_out_by_the_holder,
    );
}

/// A rebuild asked on node B while A, the holder, is busy, and given up by its caller, is
/// withdrawn: neither A nor B (once it takes the lease) carries it out.
async fn a_rebuild_given_up_on_the_other_node_is_withdrawn(place: &Place) {
    let address = address(place);
    let (db_a, db_b) = (Db::open(&address).await, Db::open(&address).await);
    append_planned(&*db_a.store(), 1, 30).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(taken(30)));
    let behavior_a = Behavior {
        gate: Some(Arc::clone(&gate)),
        ..Behavior::default()
    };
    let a = db_a
        .builder(behavior_a.clone(), HandlerOptions::new())
        .start()
        .await
        .expect("start a");
    wait(&a, 30).await;
    let behavior_b = Behavior::default();
    let b = db_b
        .builder(behavior_b.clone(), HandlerOptions::new())
        .start()
        .await
        .expect("start b");
    // A is held in the middle of event 32 (31 it does not take): it takes no request
    // meanwhile.
    append_planned(&*db_a.store(), 31, 32).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let gave_up = tokio::time::timeout(Duration::from_secs(1), b.rebuild(NAME)).await;
    assert!(
        gave_up.is_err(),
        "the rebuild cannot be done yet: {gave_up:?}"
    );
    let started = std::time::Instant::now();
    loop {
        let requests = db_b.store().list_requests(NAME, 10).await.expect("list");
        if requests.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the request given up is still there: {requests:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    gate.add_permits(1_000);
    wait(&a, 32).await;
    a.stop().await;
    append_planned(&*db_b.store(), 33, 33).await;
    wait(&b, 33).await;
    assert_eq!(
        behavior_a.seen().len(),
        taken(32),
        "a replayed nothing: {:?}",
        behavior_a.seen()
    );
    assert_eq!(behavior_b.seen(), vec![33], "b delivered event 33 only");
    assert_each_applied_once(&db_b, taken(33)).await;
    b.stop().await;
}

#[test]
fn a_rebuild_given_up_on_the_node_without_the_lease_is_withdrawn_and_never_runs_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_rb_gaveup",
        a_rebuild_given_up_on_the_other_node_is_withdrawn,
    );
}

/// A rebuild asked on node B while A, the holder, is busy, and B's runtime stops before A
/// carries it out: the call fails with `HandlerStopped`, the request is withdrawn (none is left
/// in the store), and A never rebuilds.
async fn a_rebuild_handed_over_by_a_node_that_stops_is_withdrawn(place: &Place) {
    let address = address(place);
    let (db_a, db_b) = (Db::open(&address).await, Db::open(&address).await);
    append_planned(&*db_a.store(), 1, 30).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(taken(30)));
    let behavior_a = Behavior {
        gate: Some(Arc::clone(&gate)),
        ..Behavior::default()
    };
    let a = db_a
        .builder(behavior_a.clone(), HandlerOptions::new())
        .start()
        .await
        .expect("start a");
    wait(&a, 30).await;
    let b = db_b
        .builder(Behavior::default(), HandlerOptions::new())
        .start()
        .await
        .expect("start b");
    // A is held in the middle of event 32 (31 it does not take): it takes no request
    // meanwhile.
    append_planned(&*db_a.store(), 31, 32).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let asking = b.clone();
    let rebuild = tokio::spawn(async move { asking.rebuild(NAME).await });
    // B hands the rebuild to A: the request waits in the store.
    let started = std::time::Instant::now();
    while db_b
        .store()
        .list_requests(NAME, 10)
        .await
        .expect("list")
        .is_empty()
    {
        assert!(
            started.elapsed() < TAKE_OVER,
            "b never handed the rebuild over"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.stop().await;
    let outcome = tokio::time::timeout(TAKE_OVER, rebuild)
        .await
        .expect("the call ends when its runtime stops")
        .expect("the call does not panic");
    match &outcome {
        Err(Error::HandlerStopped { handler, reason }) => {
            assert_eq!(handler, NAME);
            assert!(reason.contains("withdrawn"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let requests = db_a.store().list_requests(NAME, 10).await.expect("list");
    assert!(
        requests.is_empty(),
        "the request is withdrawn: {requests:?}"
    );

    // A, free again, looks for requests every 200 ms while it delivers 32 and 33.
    gate.add_permits(1_000);
    wait(&a, 32).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    append_planned(&*db_a.store(), 33, 33).await;
    wait(&a, 33).await;
    assert_eq!(
        behavior_a.seen().len(),
        taken(33),
        "a replayed nothing: {:?}",
        behavior_a.seen()
    );
    assert_each_applied_once(&db_a, taken(33)).await;
    assert_eq!(db_a.tallies().await, expected_tallies(33));
    a.stop().await;
}

#[test]
fn a_rebuild_handed_over_by_a_node_that_stops_is_withdrawn_and_never_runs_on_postgres() {
    on(
        Backend::Postgres,
        "sqlrm_rb_stopped",
        a_rebuild_handed_over_by_a_node_that_stops_is_withdrawn,
    );
}

/// `ProjectionTest` drives a SQL read model without a runtime: each given event commits its
/// rows with the checkpoint, as the runtime does, and a second test on the same file resumes
/// after that checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_test_drives_a_sqlite_read_model_and_commits_each_event_with_its_checkpoint() {
    use evoq::ProjectionTest;
    use evoq_tests::ledger::{Alpha, Gamma};
    let place = Place::new(Backend::Sqlite, "sqlrm-kit")
        .await
        .expect("a temporary directory");
    let db = Db::open(&address(&place)).await;
    let Db::Sqlite(_, model) = &db else {
        unreachable!("a SQLite place")
    };
    let tallies = SqliteTallies {
        model: model.clone(),
        behavior: Behavior::default(),
    };
    let outcome = ProjectionTest::new(tallies)
        .given(Alpha {
            id: "x".into(),
            n: 1,
        })
        .given(Gamma {
            id: "x".into(),
            n: 2,
        })
        .given(Alpha {
            id: "y".into(),
            n: 3,
        })
        .await
        .then_handled()
        .then_checkpoint(3);
    let expected: Tallies = [
        ("x".to_owned(), [1, 1, 3, 2]),
        ("y".to_owned(), [1, 0, 3, 3]),
    ]
    .into_iter()
    .collect();
    assert_eq!(db.tallies().await, expected);
    assert_each_applied_once(&db, 3).await;
    assert_eq!(checkpoint(&db).await, Some(3));

    // The same model again: it keeps its checkpoint, so the next event is at position 4.
    let next = outcome
        .and_given(Gamma {
            id: "y".into(),
            n: 4,
        })
        .await
        .then_handled()
        .then_checkpoint(4);
    assert_eq!(next.position(), 4);
    assert_eq!(db.tallies().await["y"], [1, 1, 7, 4]);
}
