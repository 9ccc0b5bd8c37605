//! `dead-letters retry` and `rebuild` on a SQLite file while the application runs: the
//! inspector saves a request, the application carries it out, the inspector reports the
//! outcome; with no application running, the request waits in the store.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use evoq::prelude::*;
use evoq::store::sqlite::SqliteStore;
use evoq_tests::bank::*;
use evoq_tests::ledger::Failed;
use evoq_tests::temp::TempDir;

use common::{Notifier, Run, evoq, fill};

/// The notifier once its mail server is back: handles everything.
#[derive(Default)]
struct Healed;

#[event_handler(name = "notifier")]
impl Healed {
    #[handles]
    async fn opened(&mut self, _: &AccountOpened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }

    #[handles]
    async fn withdrawn(&mut self, _: &MoneyWithdrawn, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

/// Counts the accounts opened into an in-memory read model; counts its deliveries.
struct Accounts {
    model: InMemoryReadModel,
    deliveries: Arc<AtomicU64>,
}

#[projection(name = "accounts", read_model = model)]
impl Accounts {
    #[handles]
    async fn opened(&mut self, e: &AccountOpened, _: &EventMeta) -> Result<(), ProjectionError> {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        self.model.put(&e.account, &true)?;
        Ok(())
    }
}

/// `evoq` with `args`, off the test's runtime threads (the application runs on them).
async fn cli(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        evoq(&args)
    })
    .await
    .unwrap()
}

/// A file the application filled (one dead letter of `notifier`), closed.
async fn filled(label: &str) -> (TempDir, std::path::PathBuf, String) {
    let dir = TempDir::new(label);
    let path = dir.file("events.db");
    let store = SqliteStore::open(&path).await.unwrap();
    fill(Arc::new(store.clone())).await;
    store.close().await.unwrap();
    let arg = format!("sqlite:{}", path.display());
    (dir, path, arg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_carried_out_by_the_running_application_and_its_outcome_reported() {
    let (_dir, path, s) = filled("cli-retry").await;
    let s = s.as_str();
    let id = cli(&["--store", s, "--json", "dead-letters", "list"])
        .await
        .json()["dead_letters"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The handler still fails: the retry runs, and fails again.
    let store = SqliteStore::open(&path).await.unwrap();
    let app = Evoq::builder()
        .shared_store(Arc::new(store.clone()))
        .handler(Notifier)
        .start()
        .await
        .unwrap();
    let run = cli(&[
        "--store",
        s,
        "--json",
        "dead-letters",
        "retry",
        "notifier",
        &id,
    ])
    .await;
    run.expect_code(8);
    let report = run.json();
    assert_eq!(report["outcome"], "failed", "{run:#?}");
    assert!(
        report["error"].as_str().unwrap().contains("no mail server"),
        "{run:#?}"
    );
    let entry = app
        .dead_letters("notifier")
        .get(id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        entry.map(|e| e.attempts),
        Some(2),
        "one more delivery, counted"
    );
    app.stop().await;
    store.close().await.unwrap();

    // Mended: the retry delivers it, the dead letter is gone.
    let store = SqliteStore::open(&path).await.unwrap();
    let app = Evoq::builder()
        .shared_store(Arc::new(store.clone()))
        .handler(Healed)
        .start()
        .await
        .unwrap();
    let run = cli(&["--store", s, "dead-letters", "retry", "notifier", &id]).await;
    run.expect_code(0);
    assert!(run.stdout.starts_with("delivered:"), "{run:#?}");
    assert!(
        app.dead_letters("notifier")
            .list(0, 10)
            .await
            .unwrap()
            .is_empty(),
        "the delivered event leaves the dead letters"
    );
    // Asking again: there is nothing to retry.
    cli(&["--store", s, "dead-letters", "retry", "notifier", &id])
        .await
        .expect_code(3);
    app.stop().await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_no_application_carries_out_waits_in_the_store_until_one_runs() {
    let (_dir, path, s) = filled("cli-retry-later").await;
    let s = s.as_str();
    let id = cli(&["--store", s, "--json", "dead-letters", "list"])
        .await
        .json()["dead_letters"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = cli(&[
        "--store",
        s,
        "--json",
        "dead-letters",
        "retry",
        "notifier",
        &id,
        "--wait",
        "1",
    ])
    .await;
    run.expect_code(7);
    assert_eq!(run.json()["outcome"], "pending");

    let store = SqliteStore::open(&path).await.unwrap();
    let app = Evoq::builder()
        .shared_store(Arc::new(store.clone()))
        .handler(Healed)
        .start()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app
        .dead_letters("notifier")
        .list(0, 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waiting request is never carried out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_is_carried_out_by_the_running_application() {
    let (_dir, path, s) = filled("cli-rebuild").await;
    let s = s.as_str();
    let store = SqliteStore::open(&path).await.unwrap();
    let model = InMemoryReadModel::new();
    let deliveries = Arc::new(AtomicU64::new(0));
    let app = Evoq::builder()
        .shared_store(Arc::new(store.clone()))
        .projection(Accounts {
            model: model.clone(),
            deliveries: Arc::clone(&deliveries),
        })
        .start()
        .await
        .unwrap();
    app.wait_for::<Accounts>(common::HEAD).await.unwrap();
    assert_eq!(
        deliveries.load(Ordering::SeqCst),
        2,
        "two accounts were opened"
    );

    let run = cli(&["--store", s, "--json", "rebuild", "accounts"]).await;
    run.expect_code(0);
    assert_eq!(run.json()["outcome"], "rebuilt", "{run:#?}");
    app.wait_for::<Accounts>(common::HEAD).await.unwrap();
    assert_eq!(
        deliveries.load(Ordering::SeqCst),
        4,
        "every event replayed once more"
    );
    assert_eq!(model.get::<bool>("acc-1").unwrap(), Some(true));
    app.stop().await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_asked_of_an_event_handler_fails_with_the_applications_reason() {
    let (_dir, path, s) = filled("cli-rebuild-refused").await;
    let s = s.as_str();
    let store = SqliteStore::open(&path).await.unwrap();
    let app = Evoq::builder()
        .shared_store(Arc::new(store.clone()))
        .handler(Healed)
        .start()
        .await
        .unwrap();

    // `notifier` is an event handler, not a projection: the application refuses, and the
    // inspector says so with its reason and exit code 8 (not "rebuilt").
    let run = cli(&["--store", s, "--json", "rebuild", "notifier"]).await;
    run.expect_code(8);
    let report = run.json();
    assert_eq!(report["outcome"], "failed", "{run:#?}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("notifier") && error.contains("projection"),
        "{run:#?}"
    );
    // Read and reported: the failed request is removed.
    let request: evoq::Uuid = report["request"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        store.load_request("notifier", request).await.unwrap(),
        None,
        "{run:#?}"
    );

    let human = cli(&["--store", s, "rebuild", "notifier"]).await;
    human.expect_code(8);
    assert!(
        human
            .stdout
            .starts_with("failed: the application could not rebuild `notifier`"),
        "{human:#?}"
    );
    app.stop().await;
    store.close().await.unwrap();
}
