//! The inspector on a PostgreSQL schema: the same tables as on SQLite (the same golden files),
//! the JSON of `stats`, a wrong schema refused and not created, `--follow` while a node runs,
//! a checkpoint moved only when no node holds the handler's lease, `verify` on damaged
//! rows, and requests queued for a handler no node runs, listed and withdrawn.
//!
//! Each test uses a schema of its own, dropped at the end; without a server the tests skip
//! (or fail with `EVOQ_REQUIRE_PG=1`). See `evoq_tests::pg`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use evoq::EventStore;
use evoq::store::Snapshot;
use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq_tests::bank::{Deposit, OpenAccount};
use evoq_tests::pg::PgSchema;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_postgres::NoTls;

use common::{HEAD, Run, evoq, fill, golden, normalize, start, verify_while_writing};

async fn connect(schema: &PgSchema) -> PostgresStore {
    PostgresStore::connect_with(
        &schema.url,
        PostgresOptions::default()
            .schema(schema.schema.clone())
            .pool_size(4)
            .poll_interval(Duration::from_millis(200)),
    )
    .await
    .expect("connect to PostgreSQL")
}

/// A schema that the application filled, its nodes stopped.
async fn filled(label: &str) -> Option<PgSchema> {
    let schema = PgSchema::new(label).await?;
    fill(Arc::new(connect(&schema).await)).await;
    Some(schema)
}

/// `evoq --store <url> --schema <schema> <args>`.
fn run(schema: &PgSchema, args: &[&str]) -> Run {
    let mut all = vec!["--store", &schema.url, "--schema", &schema.schema];
    all.extend_from_slice(args);
    evoq(&all)
}

async fn raw(schema: &PgSchema) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&schema.url, NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_are_those_of_sqlite_and_stats_names_the_schema() {
    let Some(schema) = filled("cli_tables").await else {
        return;
    };
    let id =
        run(&schema, &["--json", "dead-letters", "list"]).json()["dead_letters"][0]["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let cases: [(&str, Vec<&str>); 10] = [
        ("streams", vec!["streams"]),
        ("stream", vec!["stream", "BankAccount-acc-2"]),
        ("events", vec!["events"]),
        (
            "events_of_a_stream",
            vec!["events", "--stream", "BankAccount-acc-1"],
        ),
        ("checkpoints", vec!["checkpoints"]),
        ("dead_letters", vec!["dead-letters", "list"]),
        ("dead_letter", vec!["dead-letters", "show", "notifier", &id]),
        ("verify_clean", vec!["verify"]),
        (
            "no_dead_letters",
            vec!["dead-letters", "list", "--handler", "audit"],
        ),
        ("no_requests", vec!["requests"]),
    ];
    for (name, args) in cases {
        let out = run(&schema, &args);
        out.expect_code(0);
        golden(name, &normalize(&out.stdout, None));
    }

    let stats = run(&schema, &["--json", "stats"]);
    stats.expect_code(0);
    let stats = stats.json();
    assert_eq!(stats["store"], "postgres");
    assert!(
        stats["location"]
            .as_str()
            .unwrap()
            .ends_with(&format!("(schema `{}`)", schema.schema)),
        "{stats}"
    );
    assert_eq!(stats["head"], HEAD);
    assert_eq!(stats["streams"], 2);
    assert_eq!(stats["events_by_type"]["MoneyDeposited"], 3);
    assert_eq!(stats["dead_letters"], 1);
    assert_eq!(stats["requests"], 0);
    let text = run(&schema, &["stats"]);
    assert!(
        text.stdout
            .starts_with("store:         postgres postgres://"),
        "{text:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_that_holds_no_store_is_refused_and_not_created() {
    let Some(schema) = PgSchema::new("cli_missing").await else {
        return;
    };
    let out = run(&schema, &["streams"]);
    out.expect_code(4);
    assert!(
        out.stderr.contains("is not an evoq event store") && out.stderr.contains(&schema.schema),
        "{out:#?}"
    );
    let client = raw(&schema).await;
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema.schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "the inspector creates no schema");
    // No server there: the error says so, within the connect timeout.
    let out = evoq(&[
        "--store",
        "postgres://postgres@127.0.0.1:1/test?connect_timeout=2",
        "streams",
    ]);
    out.expect_code(4);
    assert!(
        out.stderr.starts_with("evoq: cannot open the store"),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_what_a_running_node_commits() {
    let Some(schema) = filled("cli_follow").await else {
        return;
    };
    let app = start(Arc::new(connect(&schema).await)).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_evoq"))
        .args(["--store", &schema.url, "--schema", &schema.schema])
        .args(["--json", "tail", "--stream", "BankAccount-acc-1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut notes = BufReader::new(child.stderr.take().unwrap()).lines();
    let note = tokio::time::timeout(Duration::from_secs(20), notes.next_line())
        .await
        .expect("`tail` starts")
        .unwrap()
        .unwrap();
    assert_eq!(
        note,
        format!("(following: the events after position {HEAD}, until Ctrl-C)")
    );
    // Another stream's event is left out; this stream's is shown.
    app.dispatch(OpenAccount {
        account: "acc-3".into(),
        initial_balance: 1,
    })
    .await
    .unwrap();
    app.dispatch(Deposit {
        account: "acc-1".into(),
        amount: 3,
    })
    .await
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the new event is printed")
        .unwrap()
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["position"], HEAD + 2);
    assert_eq!(event["stream_id"], "BankAccount-acc-1");
    child.kill().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_moves_only_when_no_node_holds_the_handler() {
    let Some(schema) = filled("cli_rewind").await else {
        return;
    };
    let node = connect(&schema).await;
    let app = start(Arc::new(node.clone())).await;
    // The node holds `notifier`'s lease once its handler runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let out = run(&schema, &["checkpoint", "rewind", "notifier", "2"]);
        if out.code == 5 || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    refused.expect_code(5);
    assert!(
        refused
            .stderr
            .contains("handler `notifier` runs on a node of this store"),
        "{refused:#?}"
    );
    assert_eq!(node.load_checkpoint("notifier").await.unwrap(), Some(HEAD));

    // A dead letter is discarded while nodes run, as any node may.
    let id =
        run(&schema, &["--json", "dead-letters", "list"]).json()["dead_letters"][0]["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
    run(&schema, &["dead-letters", "discard", "notifier", &id]).expect_code(0);
    assert_eq!(node.count_dead_letters().await.unwrap(), []);

    app.stop().await;
    drop(app);
    // The stopped node's lease goes with its connection.
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let out = run(
            &schema,
            &["--json", "checkpoint", "rewind", "notifier", "2"],
        );
        if out.code != 5 || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    done.expect_code(0);
    assert_eq!(
        done.json(),
        serde_json::json!({"name": "notifier", "from": HEAD, "to": 2, "head": HEAD})
    );
    assert_eq!(node.load_checkpoint("notifier").await.unwrap(), Some(2));
    run(&schema, &["checkpoint", "reset", "audit"]).expect_code(0);
    assert_eq!(node.load_checkpoint("audit").await.unwrap(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_the_damaged_rows_of_a_schema() {
    let Some(schema) = filled("cli_verify").await else {
        return;
    };
    let client = raw(&schema).await;
    client
        .batch_execute(&format!(
            "UPDATE \"{s}\".events SET metadata = '\\x7b6e6f' WHERE position = 2;
             DELETE FROM \"{s}\".events WHERE position = 5;",
            s = schema.schema
        ))
        .await
        .unwrap_or_else(|e| panic!("damage the rows: {e}"));
    let store = connect(&schema).await;
    store
        .save_snapshot(Snapshot {
            stream_id: "BankAccount-acc-1".into(),
            version: 9,
            data: b"{}".to_vec(),
            taken_at: std::time::SystemTime::now(),
        })
        .await
        .unwrap();
    store.save_checkpoint("ghost", 99).await.unwrap();

    let out = run(&schema, &["verify", "--page-size", "3"]);
    out.expect_code(1);
    golden("verify_damaged", &normalize(&out.stdout, None));
}

/// The notifier once its mail server is back: handles everything.
#[derive(Default)]
struct Healed;

#[evoq::event_handler(name = "notifier")]
impl Healed {
    #[handles]
    async fn opened(
        &mut self,
        _: &evoq_tests::bank::AccountOpened,
        _: &evoq::EventMeta,
    ) -> Result<(), evoq_tests::ledger::Failed> {
        Ok(())
    }

    #[handles]
    async fn withdrawn(
        &mut self,
        _: &evoq_tests::bank::MoneyWithdrawn,
        _: &evoq::EventMeta,
    ) -> Result<(), evoq_tests::ledger::Failed> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_asked_of_a_schema_is_carried_out_by_the_node_running_the_handler() {
    let Some(schema) = filled("cli_retry").await else {
        return;
    };
    let id =
        run(&schema, &["--json", "dead-letters", "list"]).json()["dead_letters"][0]["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let app = evoq::Evoq::builder()
        .shared_store(Arc::new(connect(&schema).await))
        .handler(Healed)
        .start()
        .await
        .unwrap();
    let (url, name) = (schema.url.clone(), schema.schema.clone());
    let retried = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            evoq(&[
                "--store",
                &url,
                "--schema",
                &name,
                "--json",
                "dead-letters",
                "retry",
                "notifier",
                &id,
            ])
        })
        .await
        .unwrap()
    };
    retried.expect_code(0);
    assert_eq!(retried.json()["outcome"], "delivered", "{retried:#?}");
    assert!(
        app.dead_letters("notifier")
            .list(0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_nothing_wrong_with_a_schema_the_application_is_writing() {
    let Some(schema) = filled("cli_verify_live").await else {
        return;
    };
    let args = vec![
        "--store".to_owned(),
        schema.url.clone(),
        "--schema".to_owned(),
        schema.schema.clone(),
    ];
    let failed = verify_while_writing(Arc::new(connect(&schema).await), args, 60).await;
    assert!(
        failed.is_empty(),
        "verify reported a problem on a healthy schema being written: {failed:#?}"
    );
    run(&schema, &["verify"]).expect_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_the_checkpoint_dead_letter_and_request_rows_of_a_schema_that_do_not_decode()
{
    let Some(schema) = filled("cli_verify_rows").await else {
        return;
    };
    raw(&schema)
        .await
        .batch_execute(&format!(
            "UPDATE \"{s}\".checkpoints SET position = -5 WHERE name = 'notifier';
             UPDATE \"{s}\".dead_letters SET kind = 'weird';
             INSERT INTO \"{s}\".requests (id, handler, action, event_id, requested_at) \
             VALUES ('0190a5e4-0000-7000-8000-000000000000', 'balanses', 'weird', NULL, 0);",
            s = schema.schema
        ))
        .await
        .unwrap_or_else(|e| panic!("damage the rows: {e}"));

    let out = run(&schema, &["--json", "verify"]);
    out.expect_code(1);
    let report = out.json();
    let unreadable: Vec<&serde_json::Value> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "undecodable_record")
        .collect();
    let tables: Vec<&str> = unreadable
        .iter()
        .map(|p| p["table"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        ["checkpoints", "dead_letters", "requests"],
        "{out:#?}"
    );
    assert_eq!(unreadable[1]["handler"], "notifier", "{out:#?}");
    assert_eq!(unreadable[2]["handler"], "balanses", "{out:#?}");
    assert_eq!(report["events"], HEAD, "{out:#?}");
}

/// A TCP proxy to the PostgreSQL server of the tests: forwards both ways until a client sends
/// a message holding `marker` (the text of a query), then forwards nothing more on any of its
/// connections, keeping them open (a server that stops answering). Its port.
async fn stalling_proxy(marker: &'static str) -> u16 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stalled = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let stalled = Arc::clone(&stalled);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up_stalled = Arc::clone(&stalled);
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if text.contains(marker) {
                            up_stalled.store(true, Ordering::SeqCst);
                        }
                        if !up_stalled.load(Ordering::SeqCst)
                            && server_write.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                });
                let down = tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        if !stalled.load(Ordering::SeqCst)
                            && client_write.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                });
                let _ = tokio::join!(up, down);
            });
        }
    });
    port
}

/// Runs `evoq --store <proxy> --schema <schema> <args>` in the background; the run and how
/// long it took, or `None` when it still ran after `limit` (then it is killed).
async fn run_bounded(
    schema: &PgSchema,
    port: u16,
    args: &[&str],
    limit: Duration,
) -> Option<(Run, Duration)> {
    let url = schema
        .url
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{port}"), 1);
    assert_ne!(url, schema.url, "the tests' server is at 127.0.0.1:5432");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_evoq"));
    command
        .args(["--store", &url, "--schema", &schema.schema])
        .args(args)
        .env_remove("EVOQ_STORE")
        .env_remove("EVOQ_SCHEMA")
        .env_remove("EVOQ_CONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let output = tokio::time::timeout(limit, command.output()).await.ok()?;
    let output = output.expect("run evoq");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    Some((run, started.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_mid_command_ends_it_with_4_naming_what_it_did() {
    let Some(schema) = filled("cli_no_answer").await else {
        return;
    };
    let port = stalling_proxy("DISTINCT ON (stream_id").await;
    let (run, took) = run_bounded(&schema, port, &["streams"], Duration::from_secs(60))
        .await
        .expect("`evoq streams` ends when the server stops answering");
    run.expect_code(4);
    assert!(
        run.stderr.contains("did not answer within 30 s")
            && run.stderr.contains("listing streams")
            && run.stderr.contains(&format!("schema `{}`", schema.schema)),
        "{run:#?}"
    );
    assert!(took < Duration::from_secs(45), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_whose_server_stops_answering_is_pending_after_its_wait() {
    let Some(schema) = filled("cli_rebuild_stall").await else {
        return;
    };
    let port = stalling_proxy("requests WHERE handler").await;
    let (run, took) = run_bounded(
        &schema,
        port,
        &["--json", "rebuild", "audit", "--wait", "3"],
        Duration::from_secs(25),
    )
    .await
    .expect("`evoq rebuild --wait 3` ends soon after its wait");
    run.expect_code(7);
    assert_eq!(run.json()["outcome"], "pending", "{run:#?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// Counts the accounts opened into an in-memory read model; counts its deliveries (a rebuild
/// delivers every event once more).
struct Accounts {
    model: evoq::prelude::InMemoryReadModel,
    deliveries: Arc<AtomicU64>,
}

#[evoq::projection(name = "accounts", read_model = model)]
impl Accounts {
    #[handles]
    async fn opened(
        &mut self,
        e: &evoq_tests::bank::AccountOpened,
        _: &evoq::EventMeta,
    ) -> Result<(), evoq::prelude::ProjectionError> {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        self.model.put(&e.account, &true)?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_of_a_schema_are_listed_and_a_withdrawn_one_is_never_carried_out() {
    let Some(schema) = filled("cli_requests").await else {
        return;
    };
    let dead_letter =
        run(&schema, &["--json", "dead-letters", "list"]).json()["dead_letters"][0]["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
    // `accounts` ran and saw every event (into `model`, which keeps its checkpoint): run
    // again on the same model, it is given no event unless it is rebuilt.
    let store = connect(&schema).await;
    let model = evoq::prelude::InMemoryReadModel::new();
    assert_eq!(
        run_accounts(&store, &model).await,
        2,
        "two accounts were opened"
    );

    // No node runs `accounts`: the rebuild stays queued, named with how to withdraw it.
    let pending = run(&schema, &["rebuild", "accounts", "--wait", "1"]);
    pending.expect_code(7);
    let retried = run(
        &schema,
        &[
            "--json",
            "dead-letters",
            "retry",
            "notifier",
            &dead_letter,
            "--wait",
            "1",
        ],
    );
    retried.expect_code(7);
    let retry = retried.json()["request"].as_str().unwrap().to_owned();
    let listed = run(&schema, &["--json", "requests"]);
    listed.expect_code(0);
    let listed = listed.json()["requests"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let rebuild = listed[0]["request"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["handler"], "accounts");
    assert_eq!(listed[0]["action"], "rebuild");
    assert_eq!(listed[1]["handler"], "notifier");
    assert_eq!(listed[1]["request"], retry.as_str());
    assert_eq!(listed[1]["event_id"], dead_letter.as_str());
    assert!(
        pending.stdout.contains(&format!(
            "`evoq requests withdraw accounts {rebuild}` withdraws it"
        )),
        "{pending:#?}"
    );
    // The same table as on SQLite.
    let table = run(&schema, &["requests"]);
    table.expect_code(0);
    golden("requests", &normalize(&table.stdout, None));
    let stats = run(&schema, &["--json", "stats"]).json();
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["requests_by_handler"]["accounts"], 1);

    // Withdrawn while a node runs (other handlers): exit 0; a second time, 3; bad id, 2.
    let node = evoq::Evoq::builder()
        .shared_store(Arc::new(store.clone()))
        .handler(common::Audit)
        .start()
        .await
        .unwrap();
    run(&schema, &["requests", "withdraw", "accounts", "0190"]).expect_code(2);
    let withdrawn = run(&schema, &["requests", "withdraw", "accounts", &rebuild]);
    withdrawn.expect_code(0);
    assert!(withdrawn.stdout.starts_with("withdrawn:"), "{withdrawn:#?}");
    let again = run(&schema, &["requests", "withdraw", "accounts", &rebuild]);
    again.expect_code(3);
    assert!(
        again.stderr.contains(&format!(
            "handler `accounts` has no queued request {rebuild}"
        )),
        "{again:#?}"
    );
    run(
        &schema,
        &["--json", "requests", "withdraw", "notifier", &retry],
    )
    .expect_code(0);
    node.stop().await;
    assert_eq!(run(&schema, &["requests"]).stdout, "no queued requests\n");
    assert_eq!(store.count_requests().await.unwrap(), []);

    // A node that runs `accounts` and a mended `notifier` from now on carries out neither.
    assert_eq!(
        run_accounts(&store, &model).await,
        0,
        "no rebuild: no event replayed"
    );
}

/// Runs a node with `accounts` (into `model`) and a mended `notifier` until `accounts` has
/// seen every event, and a while longer; how many events `accounts` was given. Checks that the
/// dead letter of `notifier` was not retried.
async fn run_accounts(store: &PostgresStore, model: &evoq::prelude::InMemoryReadModel) -> u64 {
    let deliveries = Arc::new(AtomicU64::new(0));
    let node = evoq::Evoq::builder()
        .shared_store(Arc::new(store.clone()))
        .projection(Accounts {
            model: model.clone(),
            deliveries: Arc::clone(&deliveries),
        })
        .handler(Healed)
        .start()
        .await
        .unwrap();
    node.wait_for::<Accounts>(HEAD).await.unwrap();
    // Requests are taken a few times a second: a queued one would have run by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        node.dead_letters("notifier")
            .list(0, 10)
            .await
            .unwrap()
            .len(),
        1,
        "the dead letter was not retried"
    );
    node.stop().await;
    deliveries.load(Ordering::SeqCst)
}
