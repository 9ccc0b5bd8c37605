//! Dispatch through the facade to aggregate actors (docs/semantics.md §1 and §2).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::Direction;
use evoq::store::memory::InMemoryStore;
use evoq::{EventStore, ExpectedVersion};
use evoq_tests::bank::*;
use evoq_tests::faulty_store::{FaultyStore, raw_deposit};

async fn app_on(store: Arc<dyn EventStore>) -> Evoq {
    Evoq::builder()
        .shared_store(store)
        .start()
        .await
        .expect("the runtime starts")
}

fn open(account: &str, initial_balance: u64) -> OpenAccount {
    OpenAccount {
        account: account.into(),
        initial_balance,
    }
}

fn deposit(account: &str, amount: u64) -> Deposit {
    Deposit {
        account: account.into(),
        amount,
    }
}

async fn stored(store: &Arc<dyn EventStore>, account: &str) -> Vec<Arc<evoq::RecordedEvent>> {
    store
        .read_stream(&account_stream(account), 1, Direction::Forward, usize::MAX)
        .await
        .expect("the stream reads")
}

#[tokio::test]
async fn dispatch_returns_versions_1_2_3_and_the_typed_events() {
    let app = Evoq::builder().start().await.unwrap();
    let first = app.dispatch(open("a", 10)).await.unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.position, Some(1));
    assert!(matches!(
        first.events.as_slice(),
        [BankAccountEvent::AccountOpened(AccountOpened {
            initial_balance: 10,
            ..
        })]
    ));
    let second = app.dispatch(deposit("a", 5)).await.unwrap();
    assert_eq!(second.version, 2);
    let third = app.dispatch(deposit("a", 5)).await.unwrap();
    assert_eq!(third.version, 3);
    assert_eq!(third.position, Some(3));
}

#[tokio::test]
async fn rejected_command_appends_nothing_and_keeps_the_version() {
    let app = Evoq::builder().start().await.unwrap();
    // Not open yet: a rejected deposit.
    let error = app.dispatch(deposit("a", 5)).await.unwrap_err();
    assert_eq!(
        error.rejection::<BankError>(),
        Some(&BankError::NotOpen("a".into()))
    );
    assert!(stored(app.store(), "a").await.is_empty());

    app.dispatch(open("a", 10)).await.unwrap();
    let error = app
        .dispatch(Withdraw {
            account: "a".into(),
            amount: 11,
        })
        .await
        .unwrap_err();
    assert!(error.is_rejection());
    assert!(error.to_string().contains("insufficient funds"), "{error}");
    assert_eq!(stored(app.store(), "a").await.len(), 1);
    // The state did not change either: the next deposit lands at version 2.
    assert_eq!(app.dispatch(deposit("a", 1)).await.unwrap().version, 2);
}

#[tokio::test]
async fn a_handler_returning_no_events_succeeds_with_the_current_version_and_stays_alive() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(open("a", 10)).await.unwrap();
    let audited = app
        .dispatch(Audit {
            account: "a".into(),
        })
        .await
        .unwrap();
    assert_eq!(audited.version, 1);
    assert!(audited.events.is_empty());
    assert_eq!(audited.position, None);
    // A closed Option return on a closed account: no event, no error.
    app.dispatch(CloseAccount {
        account: "a".into(),
    })
    .await
    .unwrap();
    let again = app
        .dispatch(CloseAccount {
            account: "a".into(),
        })
        .await
        .unwrap();
    assert_eq!(again.version, 2);
    assert!(again.events.is_empty());
    assert_eq!(app.live_aggregates::<BankAccount>(), 1);
    assert_eq!(stored(app.store(), "a").await.len(), 2);
}

#[tokio::test]
async fn one_command_may_produce_several_events_in_order() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(open("a", 0)).await.unwrap();
    let done = app
        .dispatch(DepositMany {
            account: "a".into(),
            amount: 3,
            times: 4,
        })
        .await
        .unwrap();
    assert_eq!(done.version, 5);
    assert_eq!(done.events.len(), 4);
    assert_eq!(done.position, Some(5));
    let versions: Vec<u64> = stored(app.store(), "a")
        .await
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_first_dispatches_to_one_new_id_get_versions_1_to_10_on_one_instance() {
    let app = Evoq::builder().start().await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                app.dispatch(EarnPoints {
                    account: "new".into(),
                    points: 1,
                })
                .await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap().unwrap().version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=10).collect::<Vec<u64>>());
    assert_eq!(app.live_aggregates::<LoyaltyCard>(), 1);
}

#[tokio::test]
async fn two_aggregate_types_with_the_same_id_keep_separate_streams() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(open("shared-id", 10)).await.unwrap();
    let points = app
        .dispatch(EarnPoints {
            account: "shared-id".into(),
            points: 7,
        })
        .await
        .unwrap();
    assert_eq!(points.version, 1, "the loyalty card stream starts at 1 too");
    let accounts = stored(app.store(), "shared-id").await;
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].event_type, "AccountOpened");
    let cards = app
        .store()
        .read_stream("LoyaltyCard-shared-id", 1, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].event_type, "PointsEarned");
}

#[tokio::test]
async fn a_stream_of_2500_events_rebuilds_fully_in_a_new_runtime() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let app = app_on(Arc::clone(&store)).await;
    app.dispatch(open("big", 0)).await.unwrap();
    for _ in 0..2_499 / 100 {
        app.dispatch(DepositMany {
            account: "big".into(),
            amount: 1,
            times: 100,
        })
        .await
        .unwrap();
    }
    app.dispatch(DepositMany {
        account: "big".into(),
        amount: 1,
        times: 99,
    })
    .await
    .unwrap();
    app.stop().await;

    let restarted = app_on(Arc::clone(&store)).await;
    // Withdrawing everything succeeds only if all 2,499 deposits were replayed.
    let done = restarted
        .dispatch(Withdraw {
            account: "big".into(),
            amount: 2_499,
        })
        .await
        .unwrap();
    assert_eq!(done.version, 2_501);
    let overdraw = restarted
        .dispatch(Withdraw {
            account: "big".into(),
            amount: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(
        overdraw.rejection::<BankError>(),
        Some(&BankError::InsufficientFunds {
            balance: 0,
            requested: 1
        })
    );
}

#[tokio::test]
async fn a_conflict_from_an_append_behind_the_actors_back_is_retried_and_succeeds() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let app = app_on(Arc::clone(&store)).await;
    app.dispatch(open("a", 0)).await.unwrap();
    // A foreign writer appends a deposit of 100 the actor does not know about.
    store
        .append(
            &account_stream("a"),
            ExpectedVersion::Exact(1),
            vec![raw_deposit("a", 100)],
        )
        .await
        .unwrap();
    // The actor still believes it is at version 1: its append conflicts, it rebuilds from the
    // store and re-runs the deposit against the fresh state.
    let done = app.dispatch(deposit("a", 5)).await.unwrap();
    assert_eq!(done.version, 3);
    // The rebuilt state includes the foreign deposit: withdrawing 105 passes, 106 would not.
    let withdrawn = app
        .dispatch(Withdraw {
            account: "a".into(),
            amount: 105,
        })
        .await
        .unwrap();
    assert_eq!(withdrawn.version, 4);
    let types: Vec<String> = stored(&store, "a")
        .await
        .iter()
        .map(|e| e.event_type.to_string())
        .collect();
    assert_eq!(
        types,
        [
            "AccountOpened",
            "MoneyDeposited",
            "MoneyDeposited",
            "MoneyWithdrawn"
        ]
    );
}

#[tokio::test]
async fn conflicts_beyond_the_retry_limit_return_a_conflict_error() {
    let faulty = FaultyStore::new();
    let app = app_on(faulty.clone()).await;
    app.dispatch(open("a", 0)).await.unwrap();
    faulty.interfere.store(100, Ordering::SeqCst);
    let error = app
        .command(deposit("a", 1))
        .retry_limit(2)
        .dispatch()
        .await
        .unwrap_err();
    match &error {
        evoq::Error::Conflict {
            stream, attempts, ..
        } => {
            assert_eq!(stream, "BankAccount-a");
            assert_eq!(*attempts, 3, "one run plus two retries");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Only the interfering deposits were stored: 1 open + 3 foreign.
    assert_eq!(stored(app.store(), "a").await.len(), 4);
}

#[tokio::test]
async fn a_mismatched_expected_version_returns_a_conflict_and_appends_nothing() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(open("a", 0)).await.unwrap();
    let error = app
        .command(deposit("a", 1))
        .expected_version(5)
        .dispatch()
        .await
        .unwrap_err();
    assert!(error.is_conflict(), "{error}");
    assert_eq!(stored(app.store(), "a").await.len(), 1);
    let ok = app
        .command(deposit("a", 1))
        .expected_version(1)
        .dispatch()
        .await
        .unwrap();
    assert_eq!(ok.version, 2);
}

#[tokio::test]
async fn a_panicking_handler_returns_an_error_and_the_next_command_works() {
    let faulty = FaultyStore::new();
    let app = app_on(faulty.clone()).await;
    app.dispatch(open("a", 10)).await.unwrap();
    let reads_before = faulty.stream_reads.load(Ordering::SeqCst);
    let error = app
        .dispatch(Explode {
            account: "a".into(),
        })
        .await
        .unwrap_err();
    match &error {
        evoq::Error::Panicked {
            aggregate,
            command,
            message,
            events_stored,
            ..
        } => {
            assert_eq!(*aggregate, "BankAccount");
            assert_eq!(*command, "Explode");
            assert!(
                message.contains("boom in the handler of account a"),
                "{message}"
            );
            assert!(!events_stored);
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    let next = app.dispatch(deposit("a", 5)).await.unwrap();
    assert_eq!(next.version, 2);
    assert!(
        faulty.stream_reads.load(Ordering::SeqCst) > reads_before,
        "the instance was rebuilt from the store after the panic"
    );
}

#[tokio::test]
async fn command_ids_and_metadata_are_stored_on_every_event() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(open("a", 0)).await.unwrap();
    let command_id = uuid::Uuid::now_v7();
    let correlation_id = uuid::Uuid::now_v7();
    let done = app
        .command(DepositMany {
            account: "a".into(),
            amount: 1,
            times: 3,
        })
        .command_id(command_id)
        .correlation_id(correlation_id)
        .metadata("user", "alice")
        .dispatch()
        .await
        .unwrap();
    assert_eq!(done.command_id, command_id);
    let events = stored(app.store(), "a").await;
    for event in &events[1..] {
        assert_eq!(event.metadata.command_id, Some(command_id));
        assert_eq!(event.metadata.causation_id, Some(command_id));
        assert_eq!(event.metadata.correlation_id, Some(correlation_id));
        assert_eq!(
            event.metadata.user.get("user").map(String::as_str),
            Some("alice")
        );
    }
    // Without explicit ids every command still gets a command id, and the correlation id
    // defaults to it.
    let first = &events[0];
    assert!(first.metadata.command_id.is_some());
    assert_eq!(first.metadata.correlation_id, first.metadata.command_id);
    assert_eq!(first.metadata.causation_id, first.metadata.command_id);
    assert_ne!(first.event_id, events[1].event_id);
}

#[tokio::test]
async fn an_undecodable_event_fails_activation_with_a_typed_error_naming_stream_and_version() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let stream = account_stream("a");
    let mut corrupt = raw_deposit("a", 1);
    corrupt.data = b"{ not json".to_vec();
    let app = app_on(Arc::clone(&store)).await;
    app.dispatch(open("a", 0)).await.unwrap();
    app.stop().await;
    store
        .append(&stream, ExpectedVersion::Exact(1), vec![corrupt])
        .await
        .unwrap();

    let app = app_on(Arc::clone(&store)).await;
    let error = app.dispatch(deposit("a", 1)).await.unwrap_err();
    match &error {
        evoq::Error::Decode {
            stream: s,
            version,
            event_type,
            ..
        } => {
            assert_eq!(s, &stream);
            assert_eq!(*version, 2);
            assert_eq!(event_type, "MoneyDeposited");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains("version 2 of stream `BankAccount-a`"),
        "{error}"
    );
    // It fails the same way again (no empty state was started), and nothing was changed.
    assert!(matches!(
        app.dispatch(deposit("a", 1)).await,
        Err(evoq::Error::Decode { .. })
    ));
    assert_eq!(stored(&store, "a").await.len(), 2);
    // No instance was started, and none stays in memory.
    let stats = app.aggregate_stats::<BankAccount>();
    assert_eq!(
        (stats.live, stats.activations, stats.passivations),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn an_unknown_event_type_in_a_stream_fails_activation_with_a_typed_error() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let mut unknown = raw_deposit("a", 1);
    unknown.event_type = "MoneyTeleported".into();
    store
        .append(
            &account_stream("a"),
            ExpectedVersion::NoStream,
            vec![unknown],
        )
        .await
        .unwrap();
    let app = app_on(Arc::clone(&store)).await;
    let error = app.dispatch(deposit("a", 1)).await.unwrap_err();
    assert!(
        matches!(&error, evoq::Error::UnknownEventType { event_type, version: 1, .. } if event_type == "MoneyTeleported"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_read_error_during_activation_fails_the_dispatch_and_never_starts_an_empty_aggregate() {
    let faulty = FaultyStore::new();
    let app = app_on(faulty.clone()).await;
    app.dispatch(open("a", 10)).await.unwrap();
    app.stop().await;

    let app = app_on(faulty.clone()).await;
    faulty.fail_reads.store(true, Ordering::SeqCst);
    let error = app.dispatch(deposit("a", 1)).await.unwrap_err();
    assert!(matches!(error, evoq::Error::Store(_)), "{error:?}");
    assert!(
        error.to_string().contains("injected read failure"),
        "{error}"
    );
    // An empty aggregate would accept a second OpenAccount; the rebuilt one rejects it.
    faulty.fail_reads.store(false, Ordering::SeqCst);
    let again = app.dispatch(open("a", 10)).await.unwrap_err();
    assert_eq!(
        again.rejection::<BankError>(),
        Some(&BankError::AlreadyOpen("a".into()))
    );
    assert_eq!(app.dispatch(deposit("a", 1)).await.unwrap().version, 2);
}

#[tokio::test]
async fn a_dispatch_slowed_past_its_timeout_returns_a_timeout_error() {
    let faulty = FaultyStore::new();
    let app = app_on(faulty.clone()).await;
    app.dispatch(open("a", 10)).await.unwrap();
    faulty.append_delay_ms.store(300, Ordering::SeqCst);
    let error = app
        .command(deposit("a", 1))
        .timeout(Duration::from_millis(50))
        .dispatch()
        .await
        .unwrap_err();
    assert!(matches!(error, evoq::Error::Timeout { .. }), "{error:?}");
    assert!(error.to_string().contains("BankAccount-a"), "{error}");
}

#[tokio::test]
async fn a_stopped_runtime_rejects_commands_with_a_typed_error() {
    let app = Evoq::builder().start().await.unwrap();
    app.stop().await;
    let error = app.dispatch(open("a", 1)).await.unwrap_err();
    assert!(
        matches!(
            error,
            evoq::Error::Stopped {
                command: "OpenAccount"
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn zero_or_too_many_partitions_fail_start_with_an_error_naming_the_key() {
    for partitions in [0, evoq::config::MAX_PARTITIONS + 1, 100_000_000] {
        let error = Evoq::builder()
            .partitions(partitions)
            .start()
            .await
            .unwrap_err();
        assert!(
            matches!(&error, evoq::Error::Config { key, .. } if key == "partitions"),
            "{partitions}: {error:?}"
        );
    }
    let app = Evoq::builder()
        .partitions(evoq::config::MAX_PARTITIONS)
        .start()
        .await
        .expect("the most partitions allowed start");
    app.dispatch(OpenAccount {
        account: "a".into(),
        initial_balance: 1,
    })
    .await
    .unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_spread_over_partitions_by_a_stable_hash() {
    let app = Evoq::builder().partitions(8).start().await.unwrap();
    let partitions: std::collections::HashSet<usize> = (0..64)
        .map(|i| app.partition_of::<BankAccount>(&format!("acc-{i}")))
        .collect();
    assert!(
        partitions.len() > 4,
        "64 ids use most of 8 partitions: {partitions:?}"
    );
    assert_eq!(
        app.partition_of::<BankAccount>("acc-1"),
        app.partition_of::<BankAccount>("acc-1")
    );
    // Many aggregates in parallel: each keeps its own contiguous stream.
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let id = format!("acc-{i}");
                app.dispatch(open(&id, 0)).await.unwrap();
                for _ in 0..20 {
                    app.dispatch(deposit(&id, 1)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(app.live_aggregates::<BankAccount>(), 32);
    for i in 0..32 {
        let versions: Vec<u64> = stored(app.store(), &format!("acc-{i}"))
            .await
            .iter()
            .map(|e| e.stream_version)
            .collect();
        assert_eq!(versions, (1..=21).collect::<Vec<u64>>());
    }
}

#[tokio::test]
async fn a_caller_that_times_out_mid_append_leaves_an_instance_that_rebuilds_consistently() {
    let faulty = FaultyStore::new();
    let app = app_on(faulty.clone()).await;
    app.dispatch(open("a", 10)).await.unwrap();
    faulty.append_delay_ms.store(300, Ordering::SeqCst);
    let error = app
        .command(deposit("a", 1))
        .timeout(Duration::from_millis(50))
        .dispatch()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    faulty.append_delay_ms.store(0, Ordering::SeqCst);
    let reads_before = faulty.stream_reads.load(Ordering::SeqCst);
    // The instance gave up its state when its append's outcome became unknown: the next
    // command rebuilds from the store and gets the next version, with no conflict.
    let done = app.dispatch(deposit("a", 5)).await.unwrap();
    assert_eq!(faulty.stream_reads.load(Ordering::SeqCst), reads_before + 1);
    let store: Arc<dyn EventStore> = faulty.clone();
    let events = stored(&store, "a").await;
    assert_eq!(done.version, events.len() as u64);
    assert_eq!(events.last().unwrap().event_type, "MoneyDeposited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_that_times_out_while_waiting_for_its_turn_never_runs() {
    let faulty = FaultyStore::new();
    let app = app_on(faulty.clone()).await;
    app.dispatch(open("a", 10)).await.unwrap();
    faulty.append_delay_ms.store(300, Ordering::SeqCst);
    let first = tokio::spawn({
        let app = app.clone();
        async move { app.dispatch(deposit("a", 1)).await }
    });
    // Let the first command take the instance (it then waits in its slow append).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = app
        .command(deposit("a", 100))
        .timeout(Duration::from_millis(50))
        .dispatch()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(first.await.unwrap().unwrap().version, 2);
    faulty.append_delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(app.dispatch(deposit("a", 7)).await.unwrap().version, 3);
    let store: Arc<dyn EventStore> = faulty.clone();
    let amounts: Vec<String> = stored(&store, "a")
        .await
        .iter()
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect();
    assert_eq!(amounts.len(), 3, "{amounts:?}");
    assert!(
        amounts.iter().all(|data| !data.contains("100")),
        "{amounts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_aggregates_run_in_the_callers_tasks_not_in_a_task_each() {
    let app = app_on(Arc::new(InMemoryStore::new())).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    app.dispatch(open("warm-up", 1)).await.unwrap();
    let before = metrics.num_alive_tasks();
    for i in 0..500 {
        app.dispatch(open(&format!("acct-{i}"), 1)).await.unwrap();
    }
    assert_eq!(app.live_aggregates::<BankAccount>(), 501);
    let after = metrics.num_alive_tasks();
    assert!(
        after <= before + 2,
        "500 live aggregates should not add a task each: {before} tasks before, {after} after"
    );
}

#[tokio::test]
async fn a_store_that_panics_in_append_fails_the_dispatch_without_panicking_the_caller() {
    let faulty = FaultyStore::new();
    let app = app_on(faulty.clone()).await;
    app.dispatch(open("a", 10)).await.unwrap();
    faulty.panic_appends.store(true, Ordering::SeqCst);
    let error = app.dispatch(deposit("a", 1)).await.unwrap_err();
    assert!(
        matches!(error, evoq::Error::Store(evoq::StoreError::Backend { .. })),
        "{error:?}"
    );
    assert!(error.to_string().contains("panicked"), "{error}");
    faulty.panic_appends.store(false, Ordering::SeqCst);
    // The instance is rebuilt from the store: the next command gets the next stored version.
    assert_eq!(app.dispatch(deposit("a", 2)).await.unwrap().version, 2);
}

#[tokio::test]
async fn a_store_that_panics_reading_a_resent_commands_result_fails_only_that_dispatch() {
    let faulty = FaultyStore::new();
    let app = app_on(faulty.clone()).await;
    app.dispatch(open("r", 10)).await.unwrap();
    let id = uuid::Uuid::now_v7();
    let first = app
        .command(deposit("r", 5))
        .command_id(id)
        .dispatch()
        .await
        .unwrap();
    app.stop().await;

    // A new runtime (no cache): the resend is answered from the command log, whose first
    // result is read back from the stream, which panics.
    let app = app_on(faulty.clone()).await;
    faulty.panic_reads.store(true, Ordering::SeqCst);
    let caller = tokio::spawn({
        let app = app.clone();
        async move { app.command(deposit("r", 5)).command_id(id).dispatch().await }
    });
    let error = caller
        .await
        .expect("the caller's task did not unwind")
        .unwrap_err();
    assert!(error.to_string().contains("panicked"), "{error}");
    faulty.panic_reads.store(false, Ordering::SeqCst);
    let again = app
        .command(deposit("r", 5))
        .command_id(id)
        .dispatch()
        .await
        .unwrap();
    assert_eq!(
        again.version, first.version,
        "the first result, not a second run"
    );
    app.stop().await;
}
