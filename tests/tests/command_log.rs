//! The command log (docs/semantics.md §3.6): a command never runs twice, across restarts, nodes
//! and any stream length, on every backend; `expected_version` is checked against the stream;
//! an empty aggregate id is refused; the log's retention and sweep.

use std::time::{Duration, UNIX_EPOCH};

use evoq::Uuid;
use evoq::prelude::*;
use evoq::store::{CommandLookup, ExpectedVersion};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::bank::*;
use evoq_tests::faulty_store::raw_deposit;

/// One test per backend for each body: `name::memory`, `name::sqlite`, `name::postgres`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                run(Backend::Memory, stringify!($name), super::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run(Backend::Sqlite, stringify!($name), super::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run(Backend::Postgres, stringify!($name), super::$name).await;
            }
        }
    )*};
}

on_every_backend!(
    a_key_that_succeeded_returns_its_first_result_from_a_restarted_runtime,
    a_command_without_events_resent_with_its_key_after_a_restart_does_not_run_again,
    a_resent_command_id_is_found_however_far_its_stream_grew,
    a_key_reused_for_another_command_after_a_restart_is_a_typed_error,
    a_key_reused_for_a_command_of_the_same_name_on_another_aggregate_names_both_aggregates,
    expected_version_is_checked_against_the_stream_not_the_cached_instance,
    an_expected_version_is_checked_against_the_stream_when_the_command_appends_nothing,
    a_conflict_counts_the_runs_of_the_command_not_the_reads_of_the_stream,
    an_empty_aggregate_id_is_refused_before_any_instance_starts,
    entries_past_the_retention_answer_no_more_and_are_swept,
);

async fn run<F, Fut>(backend: Backend, test: &str, body: F)
where
    F: FnOnce(Place) -> Fut,
    Fut: Future<Output = ()>,
{
    println!("{test} on {backend:?}");
    if let Some(place) = Place::new(backend, "cmdlog").await {
        body(place).await;
    }
}

async fn start(place: &Place) -> Evoq {
    Evoq::builder()
        .shared_store(place.open().await)
        .start()
        .await
        .expect("the runtime starts")
}

/// Stops `app` and lets its store go, as a process that ends would.
async fn shut_down(app: Evoq) {
    app.stop().await;
    drop(app);
}

async fn a_key_that_succeeded_returns_its_first_result_from_a_restarted_runtime(place: Place) {
    let app = start(&place).await;
    app.dispatch(open("a")).await.unwrap();
    let first = app
        .command(deposit("a", 7))
        .idempotency_key("req-1")
        .dispatch()
        .await
        .unwrap();
    shut_down(app).await;

    let restarted = start(&place).await;
    let again = restarted
        .command(deposit("a", 7))
        .idempotency_key("req-1")
        .dispatch()
        .await
        .unwrap();
    assert_same(&first, &again);
    assert_eq!(stored(restarted.store(), "a").await, 2, "nothing appended");
    assert_eq!(
        restarted.aggregate_stats::<BankAccount>().activations,
        0,
        "the answer came from the command log: the aggregate was not even activated"
    );
    // Remembered now: the cache answers the next one.
    assert_eq!(restarted.idempotency_entries(), 1);
    let third = restarted
        .command(deposit("a", 7))
        .idempotency_key("req-1")
        .dispatch()
        .await
        .unwrap();
    assert_same(&first, &third);
    shut_down(restarted).await;
}

async fn a_command_without_events_resent_with_its_key_after_a_restart_does_not_run_again(
    place: Place,
) {
    let app = start(&place).await;
    // Closing an account that is not open emits nothing.
    let first = app
        .command(CloseAccount {
            account: "a".into(),
        })
        .idempotency_key("close-1")
        .dispatch()
        .await
        .unwrap();
    assert!(first.events.is_empty());
    assert_eq!((first.version, first.position), (0, None));
    app.dispatch(open("a")).await.unwrap();
    shut_down(app).await;

    let restarted = start(&place).await;
    let again = restarted
        .command(CloseAccount {
            account: "a".into(),
        })
        .idempotency_key("close-1")
        .dispatch()
        .await
        .unwrap();
    assert_same(&first, &again);
    assert_eq!(
        stored(restarted.store(), "a").await,
        1,
        "had it run again, it would have closed the open account"
    );
    let record = restarted
        .store()
        .find_command(CommandLookup::Key("close-1"), UNIX_EPOCH)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!((record.version, record.event_count), (0, 0));
    shut_down(restarted).await;
}

async fn a_resent_command_id_is_found_however_far_its_stream_grew(place: Place) {
    let app = start(&place).await;
    app.dispatch(open("a")).await.unwrap();
    let id = Uuid::now_v7();
    let first = app
        .command(DepositMany {
            account: "a".into(),
            amount: 2,
            times: 3,
        })
        .command_id(id)
        .dispatch()
        .await
        .unwrap();
    // The stream grows by 1,000 events since.
    app.dispatch(DepositMany {
        account: "a".into(),
        amount: 1,
        times: 1_000,
    })
    .await
    .unwrap();
    shut_down(app).await;

    let restarted = start(&place).await;
    let again = restarted
        .command(DepositMany {
            account: "a".into(),
            amount: 2,
            times: 3,
        })
        .command_id(id)
        .dispatch()
        .await
        .unwrap();
    assert_same(&first, &again);
    assert_eq!((again.version, again.events.len()), (4, 3));
    assert_eq!(
        stored(restarted.store(), "a").await,
        1_004,
        "nothing appended"
    );
    shut_down(restarted).await;
}

async fn a_key_reused_for_another_command_after_a_restart_is_a_typed_error(place: Place) {
    let app = start(&place).await;
    app.dispatch(open("a")).await.unwrap();
    app.dispatch(open("b")).await.unwrap();
    app.command(deposit("a", 5))
        .idempotency_key("k")
        .dispatch()
        .await
        .unwrap();
    shut_down(app).await;

    let restarted = start(&place).await;
    let other_command = restarted
        .command(Withdraw {
            account: "a".into(),
            amount: 1,
        })
        .idempotency_key("k")
        .dispatch()
        .await
        .unwrap_err();
    match &other_command {
        evoq::Error::IdempotencyKeyReused {
            key,
            first_command,
            first_aggregate_id,
            command,
            ..
        } => {
            assert_eq!(key, "k");
            assert_eq!(first_command, "Deposit");
            assert_eq!(first_aggregate_id, "a");
            assert_eq!(*command, "Withdraw");
        }
        other => panic!("expected a reused-key error, got {other:?}"),
    }
    let other_aggregate = restarted
        .command(deposit("b", 5))
        .idempotency_key("k")
        .dispatch()
        .await
        .unwrap_err();
    assert!(
        matches!(&other_aggregate, evoq::Error::IdempotencyKeyReused { aggregate_id, .. } if aggregate_id == "b"),
        "{other_aggregate:?}"
    );
    assert_eq!(stored(restarted.store(), "a").await, 2);
    assert_eq!(stored(restarted.store(), "b").await, 1);
    shut_down(restarted).await;
}

async fn expected_version_is_checked_against_the_stream_not_the_cached_instance(place: Place) {
    let app = start(&place).await;
    app.dispatch(open("a")).await.unwrap();
    assert_eq!(app.live_aggregates::<BankAccount>(), 1, "live at version 1");
    // Another writer takes the stream to version 6 behind the live instance.
    app.store()
        .append(
            &account_stream("a"),
            ExpectedVersion::Exact(1),
            (0..5).map(|_| raw_deposit("a", 10)).collect(),
        )
        .await
        .unwrap();

    let wrong = app
        .command(deposit("a", 1))
        .expected_version(4)
        .dispatch()
        .await
        .unwrap_err();
    match &wrong {
        evoq::Error::Conflict {
            expected, actual, ..
        } => assert_eq!((*expected, *actual), (4, 6), "the stream's real version"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let right = app
        .command(deposit("a", 1))
        .expected_version(6)
        .dispatch()
        .await
        .unwrap();
    assert_eq!(right.version, 7);
    // The instance caught up: it decides on the whole stream.
    let error = app
        .dispatch(Withdraw {
            account: "a".into(),
            amount: 52,
        })
        .await
        .unwrap_err();
    let Some(BankError::InsufficientFunds { balance, .. }) = error.rejection::<BankError>() else {
        panic!("expected insufficient funds, got {error:?}");
    };
    assert_eq!(*balance, 51);
    shut_down(app).await;
}

/// The version conflict of `dispatched`, as `(expected, actual)`.
fn conflict_of(dispatched: Result<Dispatched<BankAccount>, evoq::Error>) -> (u64, u64) {
    match dispatched {
        Err(evoq::Error::Conflict {
            expected, actual, ..
        }) => (expected, actual),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Appends a deposit to account `a` at `version`, behind the back of its live instance.
async fn append_behind_the_instance(app: &Evoq, version: u64) {
    app.store()
        .append(
            &account_stream("a"),
            ExpectedVersion::Exact(version),
            vec![raw_deposit("a", 10)],
        )
        .await
        .unwrap();
}

async fn an_expected_version_is_checked_against_the_stream_when_the_command_appends_nothing(
    place: Place,
) {
    let app = start(&place).await;
    app.dispatch(open("a")).await.unwrap();
    // A command whose handler decides nothing, on an instance live at version 1, the stream at 2.
    append_behind_the_instance(&app, 1).await;
    let audit = || Audit {
        account: "a".into(),
    };
    let nothing = app.command(audit()).expected_version(1).dispatch().await;
    assert_eq!(conflict_of(nothing), (1, 2), "the stream's version");
    // A command its handler rejects on the instance's state, the stream moved past it again.
    append_behind_the_instance(&app, 2).await;
    let too_much = || Withdraw {
        account: "a".into(),
        amount: 1_000,
    };
    let rejected = app.command(too_much()).expected_version(2).dispatch().await;
    assert_eq!(conflict_of(rejected), (2, 3));
    // At the stream's version, each is answered on the whole stream.
    let done = app
        .command(audit())
        .expected_version(3)
        .dispatch()
        .await
        .unwrap();
    assert_eq!((done.version, done.position), (3, None));
    let error = app
        .command(too_much())
        .expected_version(3)
        .dispatch()
        .await
        .unwrap_err();
    let Some(BankError::InsufficientFunds { balance, .. }) = error.rejection::<BankError>() else {
        panic!("expected insufficient funds, got {error:?}");
    };
    assert_eq!(*balance, 20);
    assert_eq!(stored(app.store(), "a").await, 3, "nothing appended");
    shut_down(app).await;
}

async fn a_conflict_counts_the_runs_of_the_command_not_the_reads_of_the_stream(place: Place) {
    let app = start(&place).await;
    app.dispatch(open("a")).await.unwrap();
    let attempts = |dispatched: Result<Dispatched<BankAccount>, evoq::Error>| match dispatched {
        Err(error @ evoq::Error::Conflict { .. }) => {
            let evoq::Error::Conflict { attempts, .. } = &error else {
                unreachable!()
            };
            (*attempts, error.to_string())
        }
        other => panic!("expected a conflict, got {other:?}"),
    };
    // Run once on the instance's state, then found behind the stream: one run.
    append_behind_the_instance(&app, 1).await;
    let audit = app
        .command(Audit {
            account: "a".into(),
        })
        .expected_version(1)
        .dispatch()
        .await;
    let (runs, message) = attempts(audit);
    assert_eq!(runs, 1, "{message}");
    assert!(message.contains("after 1 attempt(s)"), "{message}");
    append_behind_the_instance(&app, 2).await;
    let rejected = app
        .command(Withdraw {
            account: "a".into(),
            amount: 1_000,
        })
        .expected_version(2)
        .dispatch()
        .await;
    assert_eq!(attempts(rejected).0, 1);
    // A version the stream is not at, known before the command runs: not run at all.
    append_behind_the_instance(&app, 3).await;
    let never = app
        .command(deposit("a", 1))
        .expected_version(9)
        .dispatch()
        .await;
    let (runs, message) = attempts(never);
    assert_eq!(runs, 0, "{message}");
    assert!(message.contains("the command was not run"), "{message}");
    assert!(!message.contains("attempt(s)"), "{message}");
    assert_eq!(stored(app.store(), "a").await, 4, "nothing appended");
    shut_down(app).await;
}

async fn an_empty_aggregate_id_is_refused_before_any_instance_starts(place: Place) {
    let app = start(&place).await;
    for keyed in [false, true] {
        let mut command = app.command(deposit("", 1));
        if keyed {
            command = command.idempotency_key("empty");
        }
        let error = command.dispatch().await.unwrap_err();
        match &error {
            evoq::Error::InvalidAggregateId {
                aggregate,
                command,
                id,
                ..
            } => {
                assert_eq!(
                    (*aggregate, *command, id.as_str()),
                    ("BankAccount", "Deposit", "")
                );
            }
            other => panic!("expected an invalid aggregate id, got {other:?}"),
        }
        assert!(error.to_string().contains("empty"), "{error}");
    }
    let page = app
        .store()
        .read_all(0, 10, &evoq::store::EventFilter::All)
        .await
        .unwrap();
    assert!(page.events.is_empty(), "nothing appended");
    assert_eq!(app.live_aggregates::<BankAccount>(), 0);
    assert_eq!(app.aggregate_stats::<BankAccount>().activations, 0);
    shut_down(app).await;
}

async fn entries_past_the_retention_answer_no_more_and_are_swept(place: Place) {
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .idempotency_ttl(Duration::from_millis(100))
        .command_log_retention(Duration::from_millis(400))
        .start()
        .await
        .unwrap();
    app.dispatch(open("a")).await.unwrap();
    let send = || {
        app.command(deposit("a", 1))
            .idempotency_key("old")
            .dispatch()
    };
    let first = send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_same(&first, &send().await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.sweep_command_log().await.unwrap() >= 2,
        "the open and the keyed deposit are past the retention"
    );
    assert_eq!(
        app.store()
            .find_command(CommandLookup::Key("old"), UNIX_EPOCH)
            .await
            .unwrap(),
        None,
        "swept"
    );
    let again = send().await.unwrap();
    assert_eq!(again.version, 3, "past the retention the key runs again");
    shut_down(app).await;

    // The runtime sweeps by itself.
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .command_log_retention(Duration::from_millis(100))
        .command_log_sweep_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    app.command(deposit("a", 1))
        .idempotency_key("swept-by-itself")
        .dispatch()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = app
            .store()
            .find_command(CommandLookup::Key("swept-by-itself"), UNIX_EPOCH)
            .await
            .unwrap();
        if found.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweeper never removed the expired entry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shut_down(app).await;
}

/// The same command name on two aggregate types (an aggregate renamed between deployments
/// without `#[aggregate(name)]`): a key of one, reused for the other, names both aggregates.
mod first_deployment {
    use evoq::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub(crate) struct FundsAdded {
        pub(crate) amount: u64,
    }

    #[derive(Command, Debug)]
    pub(crate) struct AddFunds {
        #[aggregate_id]
        pub(crate) id: String,
        pub(crate) amount: u64,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    pub(crate) struct Never;

    #[derive(Default)]
    pub(crate) struct Account;

    #[aggregate]
    impl Account {
        #[handles]
        fn add(&self, command: &AddFunds) -> Result<FundsAdded, Never> {
            Ok(FundsAdded {
                amount: command.amount,
            })
        }

        #[apply]
        fn added(&mut self, _: &FundsAdded) {}
    }
}

mod second_deployment {
    use evoq::prelude::*;

    pub(crate) use super::first_deployment::{FundsAdded, Never};

    #[derive(Command, Debug)]
    pub(crate) struct AddFunds {
        #[aggregate_id]
        pub(crate) id: String,
        pub(crate) amount: u64,
    }

    #[derive(Default)]
    pub(crate) struct Wallet;

    #[aggregate]
    impl Wallet {
        #[handles]
        fn add(&self, command: &AddFunds) -> Result<FundsAdded, Never> {
            Ok(FundsAdded {
                amount: command.amount,
            })
        }

        #[apply]
        fn added(&mut self, _: &FundsAdded) {}
    }
}

fn assert_names_both_aggregates(error: &evoq::Error) {
    match error {
        evoq::Error::IdempotencyKeyReused {
            first_command,
            first_aggregate,
            command,
            aggregate,
            ..
        } => {
            assert_eq!((first_command.as_str(), *command), ("AddFunds", "AddFunds"));
            assert_eq!(
                (first_aggregate.as_str(), *aggregate),
                ("Account", "Wallet")
            );
        }
        other => panic!("expected a reused-key error, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("`Account`") && message.contains("`Wallet`"),
        "the message names what differs: {message}"
    );
}

async fn a_key_reused_for_a_command_of_the_same_name_on_another_aggregate_names_both_aggregates(
    place: Place,
) {
    let app = start(&place).await;
    app.command(first_deployment::AddFunds {
        id: "a1".into(),
        amount: 5,
    })
    .idempotency_key("k")
    .dispatch()
    .await
    .unwrap();
    // Remembered by this runtime.
    let error = app
        .command(second_deployment::AddFunds {
            id: "a1".into(),
            amount: 5,
        })
        .idempotency_key("k")
        .dispatch()
        .await
        .unwrap_err();
    assert_names_both_aggregates(&error);
    shut_down(app).await;

    // Found in the command log by the next deployment.
    let restarted = start(&place).await;
    let error = restarted
        .command(second_deployment::AddFunds {
            id: "a1".into(),
            amount: 5,
        })
        .idempotency_key("k")
        .dispatch()
        .await
        .unwrap_err();
    assert_names_both_aggregates(&error);
    shut_down(restarted).await;
}
