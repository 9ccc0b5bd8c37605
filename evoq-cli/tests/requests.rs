//! `dead-letters retry` and `rebuild` on a SQLite file while the application runs: the
//! inspector saves a request, the application carries it out, the inspector reports the
//! outcome; with no application running, the request waits in the store, where `requests`
//! lists it and `requests withdraw` removes it for good.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use evoq::prelude::*;
use evoq::store::sqlite::SqliteStore;
use evoq::store::{HandlerRequest, RequestedAction};
use evoq_tests::bank::*;
use evoq_tests::ledger::Failed;
use evoq_tests::temp::TempDir;

use common::{Notifier, Run, evoq, fill, golden, normalize};

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

/// The id of the request a pending `rebuild` or `dead-letters retry` printed in its JSON.
fn request_of(run: &Run) -> String {
    run.json()["request"]
        .as_str()
        .unwrap_or_else(|| panic!("no request in the report: {run:#?}"))
        .to_owned()
}

/// Runs `accounts` on the file, into `model`, until it has seen every event, and a mended
/// `notifier`; how many events `accounts` was given. The in-memory model keeps the
/// projection's checkpoint: with the same model, a second run is given no event unless the
/// projection is rebuilt.
async fn run_accounts(path: &std::path::Path, model: &InMemoryReadModel) -> u64 {
    let store = SqliteStore::open(path).await.unwrap();
    let deliveries = Arc::new(AtomicU64::new(0));
    let app = Evoq::builder()
        .shared_store(Arc::new(store.clone()))
        .projection(Accounts {
            model: model.clone(),
            deliveries: Arc::clone(&deliveries),
        })
        .handler(Healed)
        .start()
        .await
        .unwrap();
    app.wait_for::<Accounts>(common::HEAD).await.unwrap();
    // Requests are taken a few times a second: a queued one would have run by now.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let dead_letters = app
        .dead_letters("notifier")
        .list(0, 10)
        .await
        .unwrap()
        .len();
    assert_eq!(dead_letters, 1, "the dead letter of `notifier` was retried");
    app.stop().await;
    store.close().await.unwrap();
    deliveries.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_are_listed_and_a_withdrawn_one_is_never_carried_out() {
    let (dir, path, s) = filled("cli-requests").await;
    let s = s.as_str();
    let none = cli(&["--store", s, "requests"]).await;
    none.expect_code(0);
    assert_eq!(none.stdout, "no queued requests\n", "{none:#?}");
    assert_eq!(
        cli(&["--store", s, "--json", "requests"]).await.json(),
        serde_json::json!({ "requests": [] })
    );
    let dead_letter = cli(&["--store", s, "--json", "dead-letters", "list"])
        .await
        .json()["dead_letters"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // `accounts` has run and seen every event: a rebuild from now on would replay them.
    let model = InMemoryReadModel::new();
    assert_eq!(
        run_accounts(&path, &model).await,
        2,
        "two accounts were opened"
    );

    // A mistyped name: pending, and the message hints at the name (the store has no checkpoint
    // of that name), names the request and how to withdraw it.
    let typo = cli(&["--store", s, "rebuild", "acounts", "--wait", "0"]).await;
    typo.expect_code(7);
    let queued = cli(&["--store", s, "--json", "requests", "acounts"])
        .await
        .json();
    let typo_id = queued["requests"][0]["request"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        typo.stdout.starts_with("pending:")
            && typo
                .stdout
                .contains("(the store has no checkpoint `acounts`: is the name right? `evoq checkpoints` lists the handlers it knows)")
            && typo.stdout.contains(&format!(
                "request {typo_id} stays in the store and is carried out when an application runs `acounts`; `evoq requests withdraw acounts {typo_id}` withdraws it"
            )),
        "{typo:#?}"
    );
    // Withdrawn under the name it was asked for only; the message of a wrong name gives it.
    let elsewhere = cli(&["--store", s, "requests", "withdraw", "accounts", &typo_id]).await;
    elsewhere.expect_code(3);
    assert!(
        elsewhere.stderr.contains(&format!(
            "handler `accounts` has no queued request {typo_id}: it is queued for `acounts` (`evoq requests withdraw acounts {typo_id}` withdraws it)"
        )),
        "{elsewhere:#?}"
    );
    cli(&["--store", s, "requests", "withdraw", "acounts", &typo_id])
        .await
        .expect_code(0);

    // `accounts` is not running now: its rebuild and a retry stay queued.
    let pending = cli(&["--store", s, "rebuild", "accounts", "--wait", "1"]).await;
    pending.expect_code(7);
    let listed = cli(&["--store", s, "--json", "requests"]).await.json();
    let rebuild = listed["requests"][0]["request"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        pending.stdout.starts_with("pending:")
            && pending.stdout.contains(&format!(
                "`evoq requests withdraw accounts {rebuild}` withdraws it"
            )),
        "{pending:#?}"
    );
    let retried = cli(&[
        "--store",
        s,
        "--json",
        "dead-letters",
        "retry",
        "notifier",
        &dead_letter,
        "--wait",
        "1",
    ])
    .await;
    retried.expect_code(7);
    let retry = request_of(&retried);

    // Listed oldest first, in a table and in JSON; per handler too.
    let table = cli(&["--store", s, "requests"]).await;
    table.expect_code(0);
    golden("requests", &normalize(&table.stdout, Some(dir.path())));
    let listed = cli(&["--store", s, "--json", "requests"]).await.json();
    let listed = listed["requests"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert_eq!(listed[0]["handler"], "accounts");
    assert_eq!(listed[0]["request"], rebuild.as_str());
    assert_eq!(listed[0]["action"], "rebuild");
    assert_eq!(listed[0]["event_id"], serde_json::Value::Null);
    assert_eq!(listed[1]["handler"], "notifier");
    assert_eq!(listed[1]["request"], retry.as_str());
    assert_eq!(listed[1]["action"], "retry_dead_letter");
    assert_eq!(listed[1]["event_id"], dead_letter.as_str());
    assert!(
        listed[0]["requested_at"].as_str().unwrap() <= listed[1]["requested_at"].as_str().unwrap()
    );
    let one = cli(&["--store", s, "--json", "requests", "notifier"])
        .await
        .json();
    assert_eq!(one["requests"].as_array().unwrap().len(), 1, "{one:#}");
    assert_eq!(one["requests"][0]["request"], retry.as_str());
    let limited = cli(&["--store", s, "--json", "requests", "--limit", "1"]).await;
    assert_eq!(
        limited.json()["requests"].as_array().unwrap().len(),
        2,
        "one per handler"
    );
    let nobody = cli(&["--store", s, "requests", "nobody"]).await;
    nobody.expect_code(0);
    assert_eq!(nobody.stdout, "no queued requests for `nobody`\n");
    let stats = cli(&["--store", s, "--json", "stats"]).await.json();
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["requests_by_handler"]["accounts"], 1);
    assert_eq!(stats["requests_by_handler"]["notifier"], 1);
    let stats = cli(&["--store", s, "stats"]).await;
    assert!(
        stats.stdout.contains("requests:      2\n")
            && stats.stdout.contains(
                "HANDLER   QUEUED REQUESTS\naccounts                1\nnotifier                1"
            ),
        "{stats:#?}"
    );

    // Bad input: not a UUID, or no id (2).
    let bad = cli(&["--store", s, "requests", "withdraw", "accounts", "nope"]).await;
    bad.expect_code(2);
    assert!(
        bad.stderr.contains("`nope` is not a request id"),
        "{bad:#?}"
    );
    cli(&["--store", s, "requests", "withdraw", "accounts"])
        .await
        .expect_code(2);

    // Withdrawn while an application runs (not these handlers): a write it allows.
    let store = SqliteStore::open(&path).await.unwrap();
    let app = Evoq::builder()
        .shared_store(Arc::new(store.clone()))
        .handler(common::Audit)
        .start()
        .await
        .unwrap();
    let withdrawn = cli(&["--store", s, "requests", "withdraw", "accounts", &rebuild]).await;
    withdrawn.expect_code(0);
    assert!(
        withdrawn.stdout.starts_with(&format!(
            "withdrawn: request {rebuild} for `accounts` (rebuild, asked at "
        )),
        "{withdrawn:#?}"
    );
    let again = cli(&["--store", s, "requests", "withdraw", "accounts", &rebuild]).await;
    again.expect_code(3);
    assert!(
        again.stderr.contains(&format!(
            "handler `accounts` has no queued request {rebuild}: it is not in the store"
        )) && again
            .stderr
            .contains("`evoq requests` lists the queued requests"),
        "{again:#?}"
    );
    app.stop().await;
    store.close().await.unwrap();
    let withdrawn = cli(&[
        "--store", s, "--json", "requests", "withdraw", "notifier", &retry,
    ])
    .await;
    withdrawn.expect_code(0);
    let report = withdrawn.json();
    assert_eq!(report["outcome"], "withdrawn", "{withdrawn:#?}");
    assert_eq!(report["action"], "retry_dead_letter");
    assert_eq!(report["event_id"], dead_letter.as_str());
    let none = cli(&["--store", s, "requests"]).await;
    assert_eq!(none.stdout, "no queued requests\n", "{none:#?}");
    assert_eq!(
        cli(&["--store", s, "--json", "stats"]).await.json()["requests"],
        0
    );

    // An application that runs `accounts` and a mended `notifier` from now on carries out
    // neither: no replay (its checkpoint was at the head already), and the dead letter stays.
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(
        store
            .list_requests("accounts", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_requests("notifier", 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await.unwrap();
    assert_eq!(
        run_accounts(&path, &model).await,
        0,
        "no rebuild: no event replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawing_a_request_the_application_could_not_carry_out_removes_it_with_its_reason() {
    let (_dir, path, s) = filled("cli-requests-failed").await;
    let s = s.as_str();
    let store = SqliteStore::open(&path).await.unwrap();
    let request = HandlerRequest {
        failed: Some("`notifier` is not a projection".to_owned()),
        ..HandlerRequest::new("notifier", RequestedAction::Rebuild)
    };
    let id = request.id.to_string();
    store.save_request(request).await.unwrap();
    store.close().await.unwrap();

    // Failed: not queued any more, so not listed; withdrawn, it is removed with its reason.
    assert_eq!(
        cli(&["--store", s, "requests"]).await.stdout,
        "no queued requests\n"
    );
    let run = cli(&[
        "--store", s, "--json", "requests", "withdraw", "notifier", &id,
    ])
    .await;
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["outcome"], "failed", "{run:#?}");
    assert_eq!(report["error"], "`notifier` is not a projection");
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        store
            .load_request("notifier", id.parse().unwrap())
            .await
            .unwrap(),
        None
    );
    store.close().await.unwrap();
    cli(&["--store", s, "requests", "withdraw", "notifier", &id])
        .await
        .expect_code(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_list_oldest_first_within_the_limit_per_handler() {
    let (_dir, path, s) = filled("cli-requests-limit").await;
    let s = s.as_str();
    let store = SqliteStore::open(&path).await.unwrap();
    let asked: Vec<HandlerRequest> = (0..3)
        .map(|_| HandlerRequest::new("balanses", RequestedAction::Rebuild))
        .collect();
    // Saved newest first: listed oldest first all the same.
    for request in asked.iter().rev() {
        store.save_request(request.clone()).await.unwrap();
    }
    store.close().await.unwrap();
    let ids = |run: &Run| -> Vec<String> {
        run.json()["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = cli(&["--store", s, "--json", "requests"]).await;
    all.expect_code(0);
    let expected: Vec<String> = asked.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids(&all), expected, "{all:#?}");
    let cut = cli(&[
        "--store", s, "--json", "requests", "balanses", "--limit", "2",
    ])
    .await;
    cut.expect_code(0);
    assert_eq!(ids(&cut), expected[..2], "{cut:#?}");
    assert!(
        cut.stderr
            .contains("only the oldest 2 requests of `balanses` are listed"),
        "{cut:#?}"
    );
    cli(&["--store", s, "requests", "--limit", "0"])
        .await
        .expect_code(2);
}
