//! Idempotency (docs/semantics.md §3): duplicates inside the window return the first
//! successful result and run nothing; errors are not cached; concurrent duplicates run once;
//! a re-sent command id is not appended twice across a restart.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::memory::InMemoryStore;
use evoq::{Config, EventStore, Uuid};
use evoq_tests::bank::*;
use evoq_tests::faulty_store::FaultyStore;

async fn app_with(store: Arc<dyn EventStore>, config: Config) -> Evoq {
    Evoq::builder()
        .shared_store(store)
        .config(config)
        .start()
        .await
        .expect("the runtime starts")
}

#[tokio::test]
async fn two_dispatches_with_one_key_and_different_command_ids_run_the_aggregate_once_and_return_equal_results()
 {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(open("a")).await.unwrap();
    let first = app
        .command(deposit("a", 5))
        .idempotency_key("req-1")
        .dispatch()
        .await
        .unwrap();
    let second = app
        .command(deposit("a", 5))
        .idempotency_key("req-1")
        .dispatch()
        .await
        .unwrap();
    assert_same(&first, &second);
    assert_eq!(first.version, 2);
    assert_eq!(
        stored(app.store(), "a").await,
        2,
        "one deposit was appended"
    );
    // A different key runs.
    let third = app
        .command(deposit("a", 5))
        .idempotency_key("req-2")
        .dispatch()
        .await
        .unwrap();
    assert_eq!(third.version, 3);
}

#[tokio::test]
async fn a_failed_dispatch_is_not_cached_and_a_retry_with_the_same_key_runs_again() {
    let app = Evoq::builder().start().await.unwrap();
    // The account is not open: rejected.
    let error = app
        .command(deposit("a", 5))
        .idempotency_key("req-1")
        .dispatch()
        .await
        .unwrap_err();
    assert!(error.is_rejection(), "{error}");
    assert_eq!(app.idempotency_entries(), 0);
    app.dispatch(open("a")).await.unwrap();
    // The same key runs again, now successfully, and that success is remembered.
    let retried = app
        .command(deposit("a", 5))
        .idempotency_key("req-1")
        .dispatch()
        .await
        .unwrap();
    assert_eq!(retried.version, 2);
    let again = app
        .command(deposit("a", 5))
        .idempotency_key("req-1")
        .dispatch()
        .await
        .unwrap();
    assert_same(&retried, &again);
    assert_eq!(stored(app.store(), "a").await, 2);
}

#[tokio::test]
async fn after_the_cache_ttl_the_command_log_answers_and_after_the_retention_the_command_runs_again()
 {
    let faulty = FaultyStore::new();
    let app = Evoq::builder()
        .shared_store(faulty.clone())
        .idempotency_ttl(Duration::from_millis(300))
        .command_log_retention(Duration::from_millis(900))
        .start()
        .await
        .unwrap();
    app.dispatch(open("a")).await.unwrap();
    let key = "req-ttl";
    let send = || app.command(deposit("a", 1)).idempotency_key(key).dispatch();
    let first = send().await.unwrap();
    let lookups = faulty.command_lookups.load(Ordering::SeqCst);
    let inside = send().await.unwrap();
    assert_same(&first, &inside);
    assert_eq!(
        faulty.command_lookups.load(Ordering::SeqCst),
        lookups,
        "inside the cache's window the cache answers: no store lookup"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let from_log = send().await.unwrap();
    assert_same(&first, &from_log);
    assert!(
        faulty.command_lookups.load(Ordering::SeqCst) > lookups,
        "past the cache's window the command log answered"
    );
    assert_eq!(stored(app.store(), "a").await, 2, "nothing ran again");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = send().await.unwrap();
    assert_eq!(
        after.version, 3,
        "past the command log's retention the command runs again"
    );
    assert_eq!(stored(app.store(), "a").await, 3);
}

#[tokio::test]
async fn the_size_cap_evicts_the_oldest_entry_first_and_the_command_log_still_answers_it() {
    let faulty = FaultyStore::new();
    let app = Evoq::builder()
        .shared_store(faulty.clone())
        .idempotency_capacity(2)
        .start()
        .await
        .unwrap();
    app.dispatch(open("a")).await.unwrap();
    let send = |key: &'static str| {
        let app = app.clone();
        async move {
            app.command(deposit("a", 1))
                .idempotency_key(key)
                .dispatch()
                .await
                .unwrap()
                .version
        }
    };
    let lookups = || faulty.command_lookups.load(Ordering::SeqCst);
    assert_eq!(send("k1").await, 2);
    assert_eq!(send("k2").await, 3);
    assert_eq!(send("k3").await, 4); // evicts k1, the oldest
    assert_eq!(app.idempotency_entries(), 2);
    let before = lookups();
    assert_eq!(send("k3").await, 4, "k3 is remembered");
    assert_eq!(send("k2").await, 3, "k2 is remembered");
    assert_eq!(lookups(), before, "the cache answered both");
    assert_eq!(
        send("k1").await,
        2,
        "k1 was evicted from the cache: the command log answers it (and it evicts k2)"
    );
    assert_eq!(lookups(), before + 1, "k1 was looked up in the store");
    assert_eq!(app.idempotency_entries(), 2);
    assert_eq!(send("k2").await, 3, "k2 too comes back from the log");
    assert_eq!(lookups(), before + 2);
    assert_eq!(stored(app.store(), "a").await, 4, "nothing ran twice");
}

#[tokio::test]
async fn a_key_reused_for_another_command_type_is_a_typed_error_and_runs_nothing() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(open("a")).await.unwrap();
    app.command(deposit("a", 10))
        .idempotency_key("shared")
        .dispatch()
        .await
        .unwrap();
    let other_type = app
        .command(EarnPoints {
            account: "a".into(),
            points: 1,
        })
        .idempotency_key("shared")
        .dispatch()
        .await
        .unwrap_err();
    match &other_type {
        evoq::Error::IdempotencyKeyReused {
            key,
            first_command,
            command,
            ..
        } => {
            assert_eq!(key, "shared");
            assert_eq!(first_command, "Deposit");
            assert_eq!(*command, "EarnPoints");
        }
        other => panic!("expected a reused-key error, got {other:?}"),
    }
    // Another command of the same aggregate, and the same command to another aggregate.
    let same_aggregate = app
        .command(Withdraw {
            account: "a".into(),
            amount: 1,
        })
        .idempotency_key("shared")
        .dispatch()
        .await
        .unwrap_err();
    assert!(
        matches!(same_aggregate, evoq::Error::IdempotencyKeyReused { .. }),
        "{same_aggregate:?}"
    );
    let other_id = app
        .command(deposit("b", 10))
        .idempotency_key("shared")
        .dispatch()
        .await
        .unwrap_err();
    assert!(other_id.to_string().contains("aggregate `b`"), "{other_id}");
    assert_eq!(stored(app.store(), "a").await, 2);
    assert_eq!(stored(app.store(), "b").await, 0);
}

#[tokio::test]
async fn a_caller_supplied_command_id_deduplicates_like_a_key() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(open("a")).await.unwrap();
    let id = Uuid::now_v7();
    let first = app
        .command(deposit("a", 3))
        .command_id(id)
        .dispatch()
        .await
        .unwrap();
    let second = app
        .command(deposit("a", 3))
        .command_id(id)
        .dispatch()
        .await
        .unwrap();
    assert_same(&first, &second);
    assert_eq!(second.command_id, id);
    assert_eq!(stored(app.store(), "a").await, 2);
}

#[tokio::test]
async fn generated_command_ids_are_never_remembered() {
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(open("a")).await.unwrap();
    for _ in 0..20 {
        app.dispatch(deposit("a", 1)).await.unwrap();
    }
    assert_eq!(
        app.idempotency_entries(),
        0,
        "a generated id cannot repeat: nothing to remember"
    );
    assert_eq!(stored(app.store(), "a").await, 21);
}

#[tokio::test]
async fn a_resent_command_id_after_a_restart_appends_nothing_and_returns_the_original_result() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let app = app_with(Arc::clone(&store), Config::default()).await;
    app.dispatch(open("a")).await.unwrap();
    let id = Uuid::now_v7();
    let many = || DepositMany {
        account: "a".into(),
        amount: 2,
        times: 3,
    };
    let original = app.command(many()).command_id(id).dispatch().await.unwrap();
    app.dispatch(deposit("a", 1)).await.unwrap(); // the stream moved on since
    app.stop().await;

    let restarted = app_with(Arc::clone(&store), Config::default()).await;
    let resent = restarted
        .command(many())
        .command_id(id)
        .dispatch()
        .await
        .unwrap();
    assert_same(&original, &resent);
    assert_eq!(resent.version, 4);
    assert_eq!(resent.events.len(), 3);
    assert_eq!(stored(&store, "a").await, 5, "nothing was appended again");
    // Found in the store, it is now remembered too.
    assert_eq!(restarted.idempotency_entries(), 1);
    assert_eq!(
        restarted.live_aggregates::<BankAccount>(),
        0,
        "the aggregate was not even activated"
    );
}

#[tokio::test]
async fn a_retry_after_a_timeout_with_the_same_key_gets_the_first_attempts_result_instead_of_running_again()
 {
    let faulty = FaultyStore::new();
    let store: Arc<dyn EventStore> = faulty.clone();
    let app = app_with(Arc::clone(&store), Config::default()).await;
    app.dispatch(open("a")).await.unwrap();
    faulty.append_delay_ms.store(200, Ordering::SeqCst);
    let error = app
        .command(deposit("a", 7))
        .idempotency_key("slow")
        .timeout(Duration::from_millis(50))
        .dispatch()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    // The first attempt is still running: the retry waits for it and gets its result.
    let retried = app
        .command(deposit("a", 7))
        .idempotency_key("slow")
        .timeout(Duration::from_secs(5))
        .dispatch()
        .await
        .unwrap();
    assert_eq!(retried.version, 2);
    faulty.append_delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(
        stored(&store, "a").await,
        2,
        "the deposit was appended once"
    );
}

#[tokio::test]
async fn zero_idempotency_capacity_or_ttl_fail_start_with_an_error_naming_the_key() {
    let error = Evoq::builder()
        .idempotency_capacity(0)
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, evoq::Error::Config { key, .. } if key == "idempotency_capacity"),
        "{error:?}"
    );
    let error = Evoq::builder()
        .idempotency_ttl(Duration::ZERO)
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, evoq::Error::Config { key, .. } if key == "idempotency_ttl"),
        "{error:?}"
    );
}
