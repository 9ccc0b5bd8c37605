//! The PostgreSQL store: the conformance suite, gap safety under concurrent (and slow)
//! appenders, two nodes sharing one database (handlers run once across the nodes and move to
//! the surviving node; one command runs once across the nodes), corrupt rows, a schema from a
//! newer evoq, timeouts across a reconnect, the migration of version 1, 2, 5 and 6 schemas
//! (the third with its tag index filled), tags and conditions across a restart, two nodes
//! racing conditional appends on one query (one wins), conditional appends of one batch where
//! an earlier one refuses a later one, and a tagged row that does not decode.
//! Failing safe: a silent server fails the start within the connect timeout, a missing
//! database or a refused login fails it at once with the server's reason, a holder whose lease
//! connection is killed stops before another node takes over, and a dead-letter retry asked on
//! the node without the lease runs on the holder.
//! Trouble on the server: a table locked by another session fails a start with a lock timeout
//! and lets a stop return; a full pool is `PoolExhausted`; the appends of a batch that lost its
//! connection each get its error once; an append whose answer was lost after its commit is
//! found in the store, not appended twice (through `evoq_tests::pg::Proxy`).
//!
//! Each test uses a schema of its own, dropped at the end; without a server the tests skip
//! (or fail with `EVOQ_REQUIRE_PG=1`). See `evoq_tests::pg`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use evoq::prelude::*;
use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq::store::{
    AppendCondition, CommandLookup, Direction, EventFilter, EventQuery, NewCommand, Subscription,
    Timeout,
};
use evoq::{EventStore, ExpectedVersion, HandlerConfig, NewEvent, StoreError};
use evoq_tests::bank::*;
use evoq_tests::ledger::Failed;
use evoq_tests::pg::{PgSchema, Proxy, TableLock};
use tokio_postgres::NoTls;

mod postgres_store_conformance {
    evoq::store_conformance_tests!(|| async {
        let schema = evoq_tests::pg::PgSchema::new("conf").await?;
        let store = evoq::store::postgres::PostgresStore::connect_with(
            &schema.url,
            evoq::store::postgres::PostgresOptions::default()
                .schema(schema.schema.clone())
                .pool_size(6)
                .poll_interval(std::time::Duration::from_millis(200)),
        )
        .await
        .expect("connect to PostgreSQL");
        Some((std::sync::Arc::new(store), schema))
    });
}

async fn connect(schema: &PgSchema) -> PostgresStore {
    PostgresStore::connect_with(
        &schema.url,
        PostgresOptions::default()
            .schema(schema.schema.clone())
            .pool_size(8)
            .poll_interval(Duration::from_millis(200)),
    )
    .await
    .expect("connect to PostgreSQL")
}

async fn raw(schema: &PgSchema) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&schema.url, NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
}

fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: event_type.to_owned().into(),
        schema_version: 1,
        data: format!("{{\"n\":{n}}}").into_bytes(),
        metadata: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_every_event_once_in_order_despite_slow_lower_positions() {
    let Some(schema) = PgSchema::new("gaps").await else {
        return;
    };
    // Three nodes append, a fourth subscribes (woken by LISTEN/NOTIFY or the poll).
    let appenders = [
        connect(&schema).await,
        connect(&schema).await,
        connect(&schema).await,
    ];
    let reader = connect(&schema).await;
    // Make some append transactions slow AFTER they got their positions: a trigger sleeps on
    // every `Slow` row, inside the transaction that holds the positions.
    let admin = raw(&schema).await;
    let s = &schema.schema;
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION \"{s}\".slow() RETURNS trigger AS $$ BEGIN IF NEW.event_type = 'Slow' THEN PERFORM pg_sleep(0.03); END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
             CREATE TRIGGER slow BEFORE INSERT ON \"{s}\".events FOR EACH ROW EXECUTE FUNCTION \"{s}\".slow();"
        ))
        .await
        .expect("install the slow trigger");

    let tasks_per_node = 8u64;
    let appends_per_task = 25u64;
    let total = appenders.len() as u64 * tasks_per_node * appends_per_task;
    let mut subscription = Subscription::new(Arc::new(reader), EventFilter::All, 0);
    let subscriber = tokio::spawn(async move {
        let mut seen = Vec::new();
        while (seen.len() as u64) < total {
            let batch = tokio::time::timeout(Duration::from_secs(30), subscription.next_batch())
                .await
                .expect("the subscriber waited 30 s for an event")
                .expect("subscription");
            seen.extend(batch);
        }
        seen
    });
    let mut tasks = Vec::new();
    let mut sent = HashSet::new();
    for (node, store) in appenders.iter().enumerate() {
        for t in 0..tasks_per_node {
            let store = store.clone();
            let stream = format!("Gap-{node}-{t}");
            let events: Vec<NewEvent> = (0..appends_per_task)
                .map(|i| event(if i % 5 == 0 { "Slow" } else { "Fast" }, i))
                .collect();
            sent.extend(events.iter().map(|e| e.event_id));
            tasks.push(tokio::spawn(async move {
                for (i, e) in (0u64..).zip(events) {
                    store
                        .append(&stream, ExpectedVersion::Exact(i), vec![e])
                        .await
                        .expect("append");
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("appender");
    }
    let seen = subscriber.await.expect("subscriber");
    let positions: Vec<u64> = seen.iter().map(|e| e.global_position).collect();
    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(
        positions, expected,
        "the subscriber must see every position once, in order"
    );
    let ids: HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids, sent,
        "the subscriber must see exactly the appended events"
    );
    assert!(
        seen.iter().any(|e| e.event_type == "Slow"),
        "slow transactions took part"
    );
}

/// Counts, per event id, how often each node's handler took it.
#[derive(Clone)]
struct Counter {
    node: usize,
    seen: Arc<Mutex<HashMap<evoq::Uuid, Vec<usize>>>>,
}

#[event_handler(name = "deposit_counter")]
impl Counter {
    #[handles]
    async fn deposited(&mut self, _e: &MoneyDeposited, meta: &EventMeta) -> Result<(), Failed> {
        self.seen
            .lock()
            .unwrap()
            .entry(meta.event_id())
            .or_default()
            .push(self.node);
        Ok(())
    }
}

async fn node(
    schema: &PgSchema,
    n: usize,
    seen: &Arc<Mutex<HashMap<evoq::Uuid, Vec<usize>>>>,
) -> Evoq {
    Evoq::builder()
        .store(connect(schema).await)
        .conflict_retries(1_000)
        .handler_defaults(HandlerConfig {
            checkpoint_every: 10,
            ..HandlerConfig::default()
        })
        .handler(Counter {
            node: n,
            seen: Arc::clone(seen),
        })
        .start()
        .await
        .expect("start a node")
}

/// Waits until every deposit in the store was handled, or panics after `limit`.
async fn wait_handled(
    seen: &Arc<Mutex<HashMap<evoq::Uuid, Vec<usize>>>>,
    deposits: usize,
    limit: Duration,
    what: &str,
) {
    let started = Instant::now();
    loop {
        let handled = seen.lock().unwrap().len();
        if handled >= deposits {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: only {handled} of {deposits} deposits were handled within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_accounts_run_each_handler_once_and_take_over() {
    let Some(schema) = PgSchema::new("nodes").await else {
        return;
    };
    let seen: Arc<Mutex<HashMap<evoq::Uuid, Vec<usize>>>> = Arc::default();
    let nodes = [node(&schema, 0, &seen).await, node(&schema, 1, &seen).await];
    let accounts: Vec<String> = (0..100).map(|i| format!("acc-{i}")).collect();
    for (i, account) in accounts.iter().enumerate() {
        nodes[i % 2]
            .dispatch(OpenAccount {
                account: account.clone(),
                initial_balance: 0,
            })
            .await
            .expect("open");
    }
    // Both nodes deposit into every account at the same time.
    let rounds = 6u64;
    let mut model: BTreeMap<String, u64> = BTreeMap::new();
    let mut tasks = Vec::new();
    let nodes = Arc::new(nodes);
    for n in 0..2usize {
        for (a, account) in accounts.iter().enumerate() {
            let nodes = Arc::clone(&nodes);
            let account = account.clone();
            let amounts: Vec<u64> = (0..rounds)
                .map(|r| 1 + (a as u64 + r + n as u64) % 7)
                .collect();
            *model.entry(account.clone()).or_default() += amounts.iter().sum::<u64>();
            tasks.push(tokio::spawn(async move {
                for amount in amounts {
                    nodes[n]
                        .dispatch(Deposit {
                            account: account.clone(),
                            amount,
                        })
                        .await
                        .expect("deposit");
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("dispatcher");
    }
    let store = connect(&schema).await;
    for (account, want) in &model {
        let stream = format!("BankAccount-{account}");
        let events = store
            .read_stream(&stream, 0, Direction::Forward, usize::MAX)
            .await
            .expect("read");
        let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
        let contiguous: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(
            versions, contiguous,
            "`{stream}` versions must be contiguous"
        );
        let balance: u64 = events
            .iter()
            .filter(|e| e.event_type == "MoneyDeposited")
            .map(|e| {
                serde_json::from_slice::<MoneyDeposited>(&e.data)
                    .expect("deposit")
                    .amount
            })
            .sum();
        assert_eq!(
            balance, *want,
            "`{account}`: the balance must equal the sequential model"
        );
        assert_eq!(
            events.len() as u64,
            1 + 2 * rounds,
            "`{stream}`: every command appended once"
        );
    }
    let deposits = 2 * rounds as usize * accounts.len();
    wait_handled(&seen, deposits, Duration::from_secs(30), "both nodes").await;
    let owner = {
        let seen = seen.lock().unwrap();
        for (id, nodes) in seen.iter() {
            assert_eq!(
                nodes.len(),
                1,
                "event {id} was handled {} times: {nodes:?}",
                nodes.len()
            );
        }
        let owners: HashSet<usize> = seen.values().map(|n| n[0]).collect();
        assert_eq!(
            owners.len(),
            1,
            "one node at a time runs the handler: {owners:?}"
        );
        *owners.iter().next().expect("an owner")
    };

    // The node that waits for the lease follows the owner's checkpoint: `wait_for` (and so
    // strong consistency) works from either node.
    let head = store.read_head().await.expect("head");
    for n in 0..2 {
        tokio::time::timeout(
            Duration::from_secs(10),
            nodes[n]
                .wait_for_named("deposit_counter", head)
                .without_deadline(),
        )
        .await
        .unwrap_or_else(|_| panic!("node {n} did not see the handler reach {head}"))
        .expect("wait_for");
    }

    // The owner stops: the other node takes over from its checkpoint.
    let nodes = Arc::try_unwrap(nodes).unwrap_or_else(|_| panic!("nodes still shared"));
    let [a, b] = nodes;
    let (stopping, survivor) = if owner == 0 { (a, b) } else { (b, a) };
    stopping.stop().await;
    drop(stopping);
    let stopped_at = Instant::now();
    for account in accounts.iter().take(10) {
        survivor
            .dispatch(Deposit {
                account: account.clone(),
                amount: 1,
            })
            .await
            .expect("deposit after the stop");
    }
    wait_handled(
        &seen,
        deposits + 10,
        Duration::from_secs(10),
        "after the owner stopped",
    )
    .await;
    let takeover = stopped_at.elapsed();
    let after = {
        let seen = seen.lock().unwrap();
        for (id, nodes) in seen.iter() {
            assert_eq!(
                nodes.len(),
                1,
                "event {id} was handled {} times after the takeover: {nodes:?}",
                nodes.len()
            );
        }
        seen.values().filter(|n| n[0] != owner).count()
    };
    assert_eq!(
        after, 10,
        "the surviving node handled exactly the new deposits"
    );
    println!("takeover within {takeover:?}");
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_is_a_typed_error_naming_stream_and_version() {
    let Some(schema) = PgSchema::new("corrupt").await else {
        return;
    };
    let store = connect(&schema).await;
    for s in ["Good-1", "Bad-1"] {
        store
            .append(
                s,
                ExpectedVersion::NoStream,
                (1..=3).map(|n| event("E", n)).collect(),
            )
            .await
            .expect("append");
    }
    raw(&schema)
        .await
        .batch_execute(&format!(
            "UPDATE \"{}\".events SET metadata = '\\x7b6e6f74'::bytea WHERE stream_id = 'Bad-1' AND version = 2",
            schema.schema
        ))
        .await
        .expect("corrupt a row");
    let error = store
        .read_stream("Bad-1", 0, Direction::Forward, 10)
        .await
        .expect_err("a corrupt row must not decode");
    match &error {
        StoreError::Integrity { location, reason } => {
            assert!(
                location.contains("`Bad-1`") && location.contains("version 2"),
                "{location}"
            );
            assert!(reason.contains("metadata"), "{reason}");
        }
        other => panic!("expected an integrity error, got {other:?}"),
    }
    let good = store
        .read_stream("Good-1", 0, Direction::Forward, 10)
        .await
        .expect("another stream is not affected");
    assert_eq!(good.len(), 3);
    store
        .append("Good-1", ExpectedVersion::Exact(3), vec![event("E", 4)])
        .await
        .expect("appends go on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_evoq_is_refused_and_bad_urls_hide_the_password() {
    let Some(schema) = PgSchema::new("newer").await else {
        return;
    };
    drop(connect(&schema).await);
    raw(&schema)
        .await
        .batch_execute(&format!(
            "UPDATE \"{}\".evoq_schema SET version = 42",
            schema.schema
        ))
        .await
        .expect("bump");
    let error = PostgresStore::connect_with(
        &schema.url,
        PostgresOptions::default().schema(schema.schema.clone()),
    )
    .await
    .expect_err("a newer schema must be refused");
    assert!(
        matches!(
            error,
            StoreError::SchemaTooNew {
                found: 42,
                supported: 8,
                ..
            }
        ),
        "{error:?}"
    );

    let error = PostgresStore::connect_with(
        "postgres://app:hunter2@127.0.0.1:1/nothing",
        PostgresOptions::default().retries(0),
    )
    .await
    .expect_err("nothing listens on port 1");
    let text = error.to_string();
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    assert!(text.contains("app:***@127.0.0.1:1"), "{text}");
}

/// A command of type `Deposit` (its account is the stream it is appended to) with idempotency
/// key `key`, checked against every entry of the log.
fn deposit_command(key: &str) -> NewCommand {
    NewCommand {
        command_id: evoq::Uuid::now_v7(),
        idempotency_key: Some(key.to_owned()),
        command: "Deposit".into(),
        aggregate: "Account".into(),
        deduplicate_since: Some(UNIX_EPOCH),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_migrates_to_the_current_version_and_keeps_its_events() {
    let Some(schema) = PgSchema::new("migrate").await else {
        return;
    };
    let s = &schema.schema;
    let store = connect(&schema).await;
    for stream in ["Account-a", "Account-b"] {
        store
            .append(
                stream,
                ExpectedVersion::NoStream,
                (1..=3).map(|n| event("Deposited", n)).collect(),
            )
            .await
            .expect("append");
    }
    let before = store
        .read_stream("Account-a", 0, Direction::Forward, usize::MAX)
        .await
        .expect("read");
    drop(store);
    // Back to version 1: a fresh schema runs the version 1 DDL, then version 2's, which only
    // adds the command log and its append function, then version 3's, which only adds the
    // timeouts, version 4's, which only adds three columns to the dead letters, version 5's,
    // which only adds the set-based append function, version 6's, which only adds the tag
    // index and its append function, and version 7's, which only adds the conditional append
    // function; removing those leaves version 1 as that version of evoq wrote it.
    let admin = raw(&schema).await;
    let store = reopen_at_version(
        &schema,
        &admin,
        1,
        &format!(
            "DROP FUNCTION \"{s}\".evoq_append_conditional;
             DROP FUNCTION \"{s}\".evoq_append_tagged; DROP TABLE \"{s}\".evoq_event_tags;
             DROP FUNCTION \"{s}\".evoq_append_batch; DROP TABLE \"{s}\".timeouts;
             DROP FUNCTION \"{s}\".evoq_append_commands; DROP TABLE \"{s}\".commands;
             ALTER TABLE \"{s}\".dead_letters DROP COLUMN kind, DROP COLUMN reason, DROP COLUMN raw_row;
             DROP TABLE \"{s}\".requests;"
        ),
    )
    .await;
    let after = store
        .read_stream("Account-a", 0, Direction::Forward, usize::MAX)
        .await
        .expect("read after the migration");
    let ids = |events: &[Arc<evoq::RecordedEvent>]| -> Vec<(evoq::Uuid, u64, u64)> {
        events
            .iter()
            .map(|e| (e.event_id, e.stream_version, e.global_position))
            .collect()
    };
    assert_eq!(ids(&after), ids(&before), "the migration keeps the events");
    assert_eq!(store.read_head().await.expect("head"), 6, "and the head");

    // The command log works on the migrated schema.
    let command = deposit_command("pay-a");
    let appended = store
        .append_command(
            "Account-a",
            ExpectedVersion::Exact(3),
            vec![event("Deposited", 4)],
            command.clone(),
        )
        .await
        .expect("append_command on the migrated schema");
    assert_eq!((appended.version, appended.first_position), (4, 7));
    let found = store
        .find_command(CommandLookup::Key("pay-a"), UNIX_EPOCH)
        .await
        .expect("find_command")
        .expect("the command is recorded");
    assert_eq!(found.command_id, command.command_id);

    // A node still running version 1 (during a rolling upgrade) appends with the version 1
    // function, which is kept: its positions follow on, and it records no command.
    let old_node: i64 = admin
        .query_one(
            &format!(
                "SELECT first_position FROM \"{s}\".evoq_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            &[
                &vec!["Account-b"],
                &vec![3i64],
                &vec![1i32],
                &vec![evoq::Uuid::now_v7()],
                &vec!["Deposited"],
                &vec![1i64],
                &vec![b"{\"n\":4}".to_vec()],
                &vec![b"{}".to_vec()],
                &0i64,
                &"evoq_test_old_node",
            ],
        )
        .await
        .expect("an append of a version 1 node")
        .get(0);
    assert_eq!(old_node, 8, "the version 1 function appends after the head");
    let versions: Vec<u64> = store
        .read_stream("Account-b", 0, Direction::Forward, usize::MAX)
        .await
        .expect("read")
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert_eq!(
        store
            .sweep_commands(SystemTime::now() + Duration::from_secs(3600), usize::MAX)
            .await
            .expect("sweep"),
        1,
        "only append_command recorded a command"
    );
}

/// A timeout of saga `Shipping`'s instance `order-1`, due at `due_at`.
fn shipping_timeout(due_at: SystemTime, payload: &[u8]) -> Timeout {
    Timeout {
        id: evoq::Uuid::now_v7(),
        saga: "Shipping".to_owned(),
        instance: "order-1".to_owned(),
        due_at,
        payload: payload.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_timeout_survives_a_reconnect_and_is_still_due() {
    let Some(schema) = PgSchema::new("timeout_reopen").await else {
        return;
    };
    // Whole microseconds: the store keeps due times to the microsecond.
    let due_at = UNIX_EPOCH + Duration::new(1_700_000_000, 654_321_000);
    let due = shipping_timeout(due_at, b"\x00fire\xff");
    let later = shipping_timeout(due_at + Duration::from_secs(3_600), b"later");
    let store = connect(&schema).await;
    store.schedule_timeout(due.clone()).await.expect("schedule");
    store
        .schedule_timeout(later.clone())
        .await
        .expect("schedule");
    drop(store);
    let store = connect(&schema).await;
    assert_eq!(
        store
            .due_timeouts("Shipping", due_at, usize::MAX)
            .await
            .expect("due_timeouts"),
        std::slice::from_ref(&due),
        "the timeout is still there after a reconnect, still due, byte for byte"
    );
    assert_eq!(
        store.next_timeout("Shipping").await.expect("next_timeout"),
        Some(due_at)
    );
    assert!(
        store
            .delete_timeout("Shipping", due.id)
            .await
            .expect("delete"),
        "the new connection deletes it"
    );
    assert_eq!(
        store.next_timeout("Shipping").await.expect("next_timeout"),
        Some(later.due_at),
        "the other timeout survived too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_schema_migrates_to_the_current_version_with_timeouts_and_keeps_everything() {
    let Some(schema) = PgSchema::new("migrate_v2").await else {
        return;
    };
    let s = &schema.schema;
    let store = connect(&schema).await;
    let command = deposit_command("pay-v2");
    store
        .append_command(
            "Account-a",
            ExpectedVersion::NoStream,
            (1..=3).map(|n| event("Deposited", n)).collect(),
            command.clone(),
        )
        .await
        .expect("append_command");
    store.save_checkpoint("h", 3).await.expect("checkpoint");
    store
        .save_saga_state("Shipping", "order-1", vec![0x00, 0xFF, 0x01])
        .await
        .expect("saga state");
    let before = store
        .read_stream("Account-a", 0, Direction::Forward, usize::MAX)
        .await
        .expect("read");
    drop(store);
    // Back to version 2: version 3 only adds the timeouts, version 4 the dead letters' kind,
    // reason and raw row, version 5 the set-based append function, version 6 the tag index and
    // its append function, version 7 the conditional append function.
    let admin = raw(&schema).await;
    let store = reopen_at_version(
        &schema,
        &admin,
        2,
        &format!(
            "DROP FUNCTION \"{s}\".evoq_append_conditional;
             DROP FUNCTION \"{s}\".evoq_append_tagged; DROP TABLE \"{s}\".evoq_event_tags;
             DROP TABLE \"{s}\".timeouts;
             ALTER TABLE \"{s}\".dead_letters DROP COLUMN kind, DROP COLUMN reason, DROP COLUMN raw_row;
             DROP TABLE \"{s}\".requests;
             DROP FUNCTION \"{s}\".evoq_append_batch;"
        ),
    )
    .await;
    let indexes: Vec<String> = admin
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'timeouts'",
            &[s],
        )
        .await
        .expect("read the indexes of `timeouts`")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        indexes.iter().any(|def| def.contains("(saga, due_at, id)"))
            && indexes.iter().any(|def| def.contains("(saga, instance)")),
        "`timeouts` is indexed for due_timeouts and cancel_timeouts: {indexes:?}"
    );

    let after = store
        .read_stream("Account-a", 0, Direction::Forward, usize::MAX)
        .await
        .expect("read after the migration");
    let ids = |events: &[Arc<evoq::RecordedEvent>]| -> Vec<(evoq::Uuid, u64, u64)> {
        events
            .iter()
            .map(|e| (e.event_id, e.stream_version, e.global_position))
            .collect()
    };
    assert_eq!(ids(&after), ids(&before), "the migration keeps the events");
    let found = store
        .find_command(CommandLookup::Key("pay-v2"), UNIX_EPOCH)
        .await
        .expect("find_command")
        .expect("the command log is kept");
    assert_eq!(found.command_id, command.command_id);
    assert_eq!(store.load_checkpoint("h").await.expect("load"), Some(3));
    assert_eq!(
        store
            .load_saga_state("Shipping", "order-1")
            .await
            .expect("load")
            .as_deref(),
        Some(&[0x00, 0xFF, 0x01][..]),
        "the saga state is kept"
    );

    let due_at = UNIX_EPOCH + Duration::new(1_700_000_000, 1_000);
    let timeout = shipping_timeout(due_at, b"fire");
    store
        .schedule_timeout(timeout.clone())
        .await
        .expect("schedule a timeout on the migrated schema");
    assert_eq!(
        store
            .due_timeouts("Shipping", due_at, 10)
            .await
            .expect("due_timeouts"),
        [timeout]
    );
    assert_eq!(
        store
            .cancel_timeouts("Shipping", "order-1")
            .await
            .expect("cancel"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_running_one_command_at_once_have_exactly_one_winner() {
    let Some(schema) = PgSchema::new("once").await else {
        return;
    };
    const RUNS_PER_NODE: usize = 32;
    let nodes = [connect(&schema).await, connect(&schema).await];
    let barrier = Arc::new(tokio::sync::Barrier::new(nodes.len() * RUNS_PER_NODE));
    let mut tasks = Vec::new();
    for (n, store) in nodes.iter().enumerate() {
        for i in 0..RUNS_PER_NODE {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            // Each run to a stream of its own: only the key can stop it.
            let account = format!("n{n}-{i}");
            tasks.push(tokio::spawn(async move {
                let command = deposit_command("pay-once");
                let stream = format!("Account-{account}");
                barrier.wait().await;
                let result = store
                    .append_command(
                        &stream,
                        ExpectedVersion::NoStream,
                        vec![event("Deposited", 1), event("Deposited", 2)],
                        command.clone(),
                    )
                    .await;
                (command.command_id, stream, result)
            }));
        }
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        let (id, stream, result) = task.await.expect("run");
        match result {
            Ok(appended) => winners.push((id, stream, appended)),
            Err(StoreError::DuplicateCommand { record }) => losers.push(record),
            Err(other) => panic!("a run failed with {other}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one run of `pay-once` succeeds across the two nodes"
    );
    assert_eq!(losers.len(), nodes.len() * RUNS_PER_NODE - 1);
    let (id, stream, appended) = &winners[0];
    for record in &losers {
        assert_eq!(
            (&record.command_id, &record.stream_id),
            (id, stream),
            "every duplicate names the winner"
        );
        assert_eq!(record.idempotency_key.as_deref(), Some("pay-once"));
    }
    assert_eq!(
        (appended.first_position, appended.last_position),
        (1, 2),
        "the winner's events are the only ones"
    );
    for store in &nodes {
        assert_eq!(store.read_head().await.expect("head"), 2);
        let found = store
            .find_command(CommandLookup::Key("pay-once"), UNIX_EPOCH)
            .await
            .expect("find_command")
            .expect("the winner is recorded");
        assert_eq!(&found.command_id, id, "both nodes find the winner");
    }
}

// ---------------------------------------------------------------------------------------------
// Tags and conditional appends: the index across a migration, a restart and two nodes
// ---------------------------------------------------------------------------------------------

/// An event of `event_type` numbered `n`, carrying `tags`.
fn tagged(event_type: &str, n: u64, tags: &[&str]) -> NewEvent {
    let mut event = event(event_type, n);
    event.metadata.tags = tags.iter().copied().collect();
    event
}

/// The lends of member `m1`.
fn lends_of_m1() -> EventQuery {
    EventQuery::types(["BookLent"]).and(EventQuery::tag("member:m1"))
}

/// The positions of `events`.
fn positions_of(events: &[Arc<evoq::RecordedEvent>]) -> Vec<u64> {
    events.iter().map(|e| e.global_position).collect()
}

/// The rows of the tag index, by position then tag.
async fn tag_rows(admin: &tokio_postgres::Client, schema: &str) -> Vec<(i64, String)> {
    admin
        .query(
            &format!(
                "SELECT position, tag FROM \"{schema}\".evoq_event_tags ORDER BY position, tag"
            ),
            &[],
        )
        .await
        .expect("read the tag index")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_5_schema_with_tagged_events_migrates_with_its_tag_index_filled() {
    let Some(schema) = PgSchema::new("migrate_v5").await else {
        return;
    };
    let s = &schema.schema;
    let store = connect(&schema).await;
    let appends = [
        (
            "Lending-b1",
            tagged("BookLent", 1, &["member:m1", "book:b1"]),
        ),
        ("Member-m1", tagged("MemberJoined", 2, &["member:m1"])),
        ("Other-1", event("BookLent", 3)),
        (
            "Lending-b2",
            tagged("BookLent", 4, &["member:m2", "book:b2"]),
        ),
        (
            "Damaged-1",
            tagged("BookLent", 5, &["member:m1", "book:b9"]),
        ),
    ];
    for (stream, event) in appends {
        store
            .append(stream, ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
    }
    drop(store);
    // Back to version 5: version 6 only adds the tag index and its append function, version 7
    // the conditional append function. Event 5's
    // metadata is damaged (it no longer parses, tags and all): the migration must go through.
    let admin = raw(&schema).await;
    let store = reopen_at_version(
        &schema,
        &admin,
        5,
        &format!(
            "DROP FUNCTION \"{s}\".evoq_append_conditional;
             DROP FUNCTION \"{s}\".evoq_append_tagged; DROP TABLE \"{s}\".evoq_event_tags;
             ALTER TABLE \"{s}\".requests DROP COLUMN failed;
             UPDATE \"{s}\".events SET metadata = convert_to('{{\"tags\":[\"member:m1\"', 'UTF8')
             WHERE position = 5;"
        ),
    )
    .await;
    let expected: Vec<(i64, String)> = [
        (1, "book:b1"),
        (1, "member:m1"),
        (2, "member:m1"),
        (4, "book:b2"),
        (4, "member:m2"),
    ]
    .into_iter()
    .map(|(p, t)| (p, t.to_owned()))
    .collect();
    assert_eq!(
        tag_rows(&admin, s).await,
        expected,
        "the index holds every tag of the stored events, and none of the damaged row"
    );
    let page = store
        .read_query(&EventQuery::tag("member:m1"), 0, 10)
        .await
        .expect("read_query on the migrated schema");
    assert_eq!(positions_of(&page.events), [1, 2]);
    let condition = AppendCondition {
        query: lends_of_m1(),
        after: 0,
    };
    match store
        .append_if(
            "Lending-b3",
            vec![tagged("BookLent", 6, &["member:m1"])],
            &condition,
            None,
        )
        .await
    {
        Err(StoreError::ConditionFailed { position, .. }) => assert_eq!(position, 1),
        other => panic!("the migrated index must refuse the append, got {other:?}"),
    }
    // The version 5 append function stays, for a node not yet upgraded.
    assert!(
        function_exists(&admin, s, "evoq_append_batch").await,
        "evoq_append_batch is kept for a rolling upgrade"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_conditions_written_before_a_restart_hold_on_the_new_store() {
    let Some(schema) = PgSchema::new("tags_restart").await else {
        return;
    };
    let store = connect(&schema).await;
    let from_scratch = AppendCondition {
        query: lends_of_m1(),
        after: 0,
    };
    store
        .append_if(
            "Lending-b1",
            vec![tagged("BookLent", 1, &["member:m1", "book:b1"])],
            &from_scratch,
            None,
        )
        .await
        .expect("a condition that holds on an empty store");
    store
        .append(
            "Lending-b2",
            ExpectedVersion::Any,
            vec![
                tagged("BookLent", 2, &["member:m2", "book:b2"]),
                event("Noise", 3),
            ],
        )
        .await
        .expect("append");
    drop(store);

    let store = connect(&schema).await;
    let page = store
        .read_query(&lends_of_m1(), 0, 10)
        .await
        .expect("read_query after the restart");
    assert_eq!(positions_of(&page.events), [1]);
    assert_eq!(page.events[0].metadata.tags[..], ["member:m1", "book:b1"]);
    match store
        .append_if(
            "Lending-b3",
            vec![tagged("BookLent", 4, &["member:m1", "book:b3"])],
            &from_scratch,
            None,
        )
        .await
    {
        Err(StoreError::ConditionFailed {
            stream,
            after,
            position,
            ..
        }) => assert_eq!((stream.as_str(), after, position), ("Lending-b3", 0, 1)),
        other => panic!("the event stored before the restart must refuse it, got {other:?}"),
    }
    let head = store.read_head().await.expect("head");
    let read_up_to_head = AppendCondition {
        query: lends_of_m1(),
        after: head,
    };
    let appended = store
        .append_if(
            "Lending-b3",
            vec![tagged("BookLent", 4, &["member:m1", "book:b3"])],
            &read_up_to_head,
            None,
        )
        .await
        .expect("a condition that holds after the head");
    assert_eq!((appended.version, appended.first_position), (1, head + 1));
    let page = store
        .read_query(&lends_of_m1(), 0, 10)
        .await
        .expect("read_query");
    assert_eq!(positions_of(&page.events), [1, head + 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_racing_conditional_appends_on_one_query_have_one_winner() {
    let Some(schema) = PgSchema::new("dcb_nodes").await else {
        return;
    };
    const RUNS_PER_NODE: usize = 16;
    let nodes = [connect(&schema).await, connect(&schema).await];
    let barrier = Arc::new(tokio::sync::Barrier::new(nodes.len() * RUNS_PER_NODE));
    let mut tasks = Vec::new();
    for (n, store) in nodes.iter().enumerate() {
        for i in 0..RUNS_PER_NODE {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                // Each run to a stream of its own: only the condition can stop it.
                let stream = format!("Lending-n{n}-{i}");
                let condition = AppendCondition {
                    query: EventQuery::types(["BookLent"]).and(EventQuery::tag("book:b1")),
                    after: 0,
                };
                barrier.wait().await;
                let result = store
                    .append_if(
                        &stream,
                        vec![tagged(
                            "BookLent",
                            i as u64,
                            &["book:b1", &format!("member:n{n}-{i}")],
                        )],
                        &condition,
                        None,
                    )
                    .await;
                (stream, result)
            }));
        }
    }
    let mut winners = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        let (stream, result) = task.await.expect("run");
        match result {
            Ok(appended) => winners.push((stream, appended)),
            Err(StoreError::ConditionFailed { position, .. }) => refused.push(position),
            Err(other) => panic!("a conditional append failed with {other}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one lend of book b1 across the two nodes"
    );
    assert_eq!(refused.len(), nodes.len() * RUNS_PER_NODE - 1);
    let (stream, appended) = &winners[0];
    assert_eq!((appended.first_position, appended.last_position), (1, 1));
    assert!(
        refused.iter().all(|&position| position == 1),
        "every refusal names the winner's event: {refused:?}"
    );
    for store in &nodes {
        assert_eq!(
            store.read_head().await.expect("head"),
            1,
            "only the winner appended"
        );
        // Each node reads up to the head it has seen: the other node's commit reaches it by
        // notification or poll.
        tokio::time::timeout(Duration::from_secs(5), store.head().wait_for(|&h| h >= 1))
            .await
            .expect("the head reaches the winner's commit")
            .expect("head watch");
        let lent = store
            .read_query(&EventQuery::tag("book:b1"), 0, 100)
            .await
            .expect("read_query");
        assert_eq!(positions_of(&lent.events), [1]);
        assert_eq!(
            &*lent.events[0].stream_id,
            stream.as_str(),
            "both nodes read the winner"
        );
    }
}

/// 32 conditional appends from one node at once, all under one query and `after` the head:
/// the writer puts them in few batches, and within a batch a later one must see the events of
/// an earlier one. Exactly one wins, every refusal names its event, and the plain appends
/// batched with them commit around it without a gap. The same again with a query of an item
/// without tags (the events of a type).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditional_appends_of_one_batch_see_the_events_of_the_earlier_ones() {
    let Some(schema) = PgSchema::new("dcb_batch").await else {
        return;
    };
    const RUNS: usize = 32;
    let store = connect(&schema).await;
    let queries = [
        EventQuery::types(["BookLent"]).and(EventQuery::tag("book:b1")),
        EventQuery::types(["Reserved"]),
    ];
    for (round, query) in queries.into_iter().enumerate() {
        let after = store.read_head().await.expect("head");
        let barrier = Arc::new(tokio::sync::Barrier::new(RUNS * 2));
        let mut tasks = Vec::new();
        for i in 0..RUNS {
            let (node, gate, query) = (store.clone(), Arc::clone(&barrier), query.clone());
            tasks.push(tokio::spawn(async move {
                let stream = format!("Lending-{round}-{i}");
                let event = if round == 0 {
                    tagged("BookLent", i as u64, &["book:b1", &format!("member:{i}")])
                } else {
                    event("Reserved", i as u64)
                };
                gate.wait().await;
                let condition = AppendCondition { query, after };
                let result = node.append_if(&stream, vec![event], &condition, None).await;
                (Some(stream), result)
            }));
            // A plain append of another type alongside each, which no condition matches.
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let result = store
                    .append(
                        &format!("Plain-{round}-{i}"),
                        ExpectedVersion::NoStream,
                        vec![tagged("Noted", i as u64, &["book:b1"])],
                    )
                    .await;
                (None, result)
            }));
        }
        let mut winners = Vec::new();
        let mut refused = Vec::new();
        let mut plain = 0;
        for task in tasks {
            match task.await.expect("run") {
                (None, result) => {
                    result.expect("a plain append");
                    plain += 1;
                }
                (Some(stream), Ok(appended)) => winners.push((stream, appended)),
                (
                    Some(_),
                    Err(StoreError::ConditionFailed {
                        position, after: a, ..
                    }),
                ) => {
                    assert_eq!(a, after);
                    refused.push(position);
                }
                (Some(_), Err(other)) => panic!("a conditional append failed with {other}"),
            }
        }
        assert_eq!(plain, RUNS);
        assert_eq!(winners.len(), 1, "exactly one conditional append wins");
        assert_eq!(refused.len(), RUNS - 1);
        let (stream, appended) = &winners[0];
        assert!(
            refused.iter().all(|&p| p == appended.first_position),
            "every refusal names the winner's event ({}): {refused:?}",
            appended.first_position
        );
        let head = store.read_head().await.expect("head");
        assert_eq!(
            head,
            after + RUNS as u64 + 1,
            "the winner and the plain appends"
        );
        let all = store
            .read_all(after, usize::MAX, &EventFilter::All)
            .await
            .expect("read_all");
        let positions: Vec<u64> = all.events.iter().map(|e| e.global_position).collect();
        assert_eq!(
            positions,
            (after + 1..=head).collect::<Vec<_>>(),
            "positions stay gap-free"
        );
        let matching: Vec<_> = all
            .events
            .iter()
            .filter(|e| &*e.stream_id == stream.as_str())
            .collect();
        assert_eq!(matching.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_6_schema_migrates_and_keeps_its_append_function() {
    let Some(schema) = PgSchema::new("migrate_v6").await else {
        return;
    };
    let s = &schema.schema;
    let store = connect(&schema).await;
    store
        .append(
            "Lending-b1",
            ExpectedVersion::Any,
            vec![tagged("BookLent", 1, &["member:m1", "book:b1"])],
        )
        .await
        .expect("append");
    drop(store);
    // Back to version 6: version 7 only adds the conditional append function.
    let admin = raw(&schema).await;
    let store = reopen_at_version(
        &schema,
        &admin,
        6,
        &format!(
            "DROP FUNCTION \"{s}\".evoq_append_conditional;
             ALTER TABLE \"{s}\".requests DROP COLUMN failed;"
        ),
    )
    .await;
    // Version 8's column: a request marked failed keeps its reason.
    let failed = evoq::store::HandlerRequest {
        failed: Some("not a projection".to_owned()),
        ..evoq::store::HandlerRequest::new("notifier", evoq::store::RequestedAction::Rebuild)
    };
    store.save_request(failed.clone()).await.unwrap();
    assert_eq!(
        store.load_request("notifier", failed.id).await.unwrap(),
        Some(failed)
    );
    let condition = AppendCondition {
        query: lends_of_m1(),
        after: 0,
    };
    match store
        .append_if(
            "Lending-b2",
            vec![tagged("BookLent", 2, &["member:m1"])],
            &condition,
            None,
        )
        .await
    {
        Err(StoreError::ConditionFailed { position, .. }) => assert_eq!(position, 1),
        other => panic!("the migrated schema must refuse the append, got {other:?}"),
    }
    let condition = AppendCondition {
        query: lends_of_m1(),
        after: 1,
    };
    let appended = store
        .append_if(
            "Lending-b2",
            vec![tagged("BookLent", 2, &["member:m1"])],
            &condition,
            None,
        )
        .await
        .expect("append_if on the migrated schema");
    assert_eq!(appended.first_position, 2);
    // The version 6 append function stays, for a node not yet upgraded.
    assert!(
        function_exists(&admin, s, "evoq_append_tagged").await,
        "evoq_append_tagged is kept for a rolling upgrade"
    );
}

/// A tagged row that no longer decodes is reported in `undecodable` by the queries that select
/// it, among the events around it, instead of failing the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagged_row_that_does_not_decode_is_reported_by_read_query_not_failing_it() {
    let Some(schema) = PgSchema::new("tags_corrupt").await else {
        return;
    };
    let store = connect(&schema).await;
    for n in 1..=3 {
        store
            .append(
                &format!("Lending-b{n}"),
                ExpectedVersion::Any,
                vec![tagged("BookLent", n, &["member:m1"])],
            )
            .await
            .expect("append");
    }
    raw(&schema)
        .await
        .batch_execute(&format!(
            "UPDATE \"{}\".events SET metadata = '\\x7b6e6f74'::bytea WHERE position = 2",
            schema.schema
        ))
        .await
        .expect("corrupt a row");
    let page = store
        .read_query(&lends_of_m1(), 0, 10)
        .await
        .expect("a bad row fails nothing else");
    assert_eq!(positions_of(&page.events), [1, 3]);
    let bad: Vec<u64> = page.undecodable.iter().map(|r| r.global_position).collect();
    assert_eq!(bad, [2]);
    assert_eq!(page.scanned_through, 3);
    let full = store
        .read_query(&lends_of_m1(), 0, 2)
        .await
        .expect("a full page");
    assert_eq!(
        (
            positions_of(&full.events),
            full.undecodable.len(),
            full.scanned_through
        ),
        (vec![1], 1, 2),
        "the bad row counts as one of the page's rows"
    );
}

// ---------------------------------------------------------------------------------------------
// Failing safe: deadlines, permanent errors, lost leases, dead-letter retries across nodes
// ---------------------------------------------------------------------------------------------

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// `url` with its user (and password) replaced by `user`.
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_and_never_answers_fails_the_start_within_the_connect_timeout() {
    // A listener that accepts every connection and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let port = listener.local_addr().expect("its port").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in listener.incoming() {
            match connection {
                Ok(connection) => held.push(connection),
                Err(_) => return,
            }
        }
    });
    let deadline = Duration::from_secs(1);
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        PostgresStore::connect_with(
            &format!("postgres://app:hunter2@127.0.0.1:{port}/events"),
            PostgresOptions::default().connect_timeout(deadline),
        ),
    )
    .await
    .expect("connect_with must give up by itself, not hang");
    let elapsed = started.elapsed();
    let error = outcome.expect_err("a silent server must fail the start");
    println!("{error}");
    assert!(
        elapsed < deadline + Duration::from_millis(1_500),
        "the start failed after {elapsed:?}, past its deadline of {deadline:?}"
    );
    match &error {
        StoreError::ConnectTimeout {
            location, after, ..
        } => {
            assert!(
                location.contains(&format!("127.0.0.1:{port}")),
                "{location}"
            );
            assert_eq!(*after, deadline);
        }
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    let text = error.to_string();
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    assert!(text.contains("did not answer within"), "{text}");
}

/// Starts a store on `url` with many retries allowed, and returns its error and how long it
/// took: a permanent error must come back at once, not after the retries' backoff (which
/// would take over 10 s).
async fn start_error(url: &str) -> (StoreError, Duration) {
    let started = Instant::now();
    let error = PostgresStore::connect_with(url, PostgresOptions::default().retries(10))
        .await
        .expect_err("the start must fail");
    (error, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_fails_the_start_at_once_with_the_servers_reason() {
    let Some(schema) = PgSchema::new("nodb").await else {
        return;
    };
    let database = format!("evoq_missing_{}", evoq::Uuid::now_v7().simple());
    let (error, elapsed) = start_error(&with_database(&schema.url, &database)).await;
    println!("{error} (after {elapsed:?})");
    assert!(
        elapsed < Duration::from_secs(3),
        "a missing database was retried: {elapsed:?}"
    );
    match &error {
        StoreError::Refused { code, reason, .. } => {
            assert_eq!(code.as_deref(), Some("3D000"), "{error}");
            assert!(reason.contains(&database), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("3D000") && text.contains("does not exist"),
        "the server's reason is kept: {text}"
    );
    assert!(
        std::error::Error::source(&error).is_some(),
        "the driver's error is the source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_fails_the_start_at_once_with_the_servers_reason() {
    let Some(schema) = PgSchema::new("norole").await else {
        return;
    };
    let role = format!("evoq_nobody_{}", evoq::Uuid::now_v7().simple());
    let (error, elapsed) = start_error(&with_user(&schema.url, &format!("{role}:wrong"))).await;
    println!("{error} (after {elapsed:?})");
    assert!(
        elapsed < Duration::from_secs(3),
        "a refused login was retried: {elapsed:?}"
    );
    match &error {
        StoreError::Refused { code, reason, .. } => {
            // 28000 (`role ... does not exist`, trust authentication) or 28P01 (`password
            // authentication failed`), as the server is set up.
            assert!(
                matches!(code.as_deref(), Some("28000" | "28P01")),
                "{error}"
            );
            assert!(reason.contains(&role), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let text = error.to_string();
    assert!(!text.contains("wrong"), "the password leaked: {text}");
    assert!(text.contains("check the user and password"), "{text}");
}

/// FNV-1a 64, as the store hashes a lease's name into its advisory lock key.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The backend (process id) whose session holds the lease of `name` in `schema`, if any: the
/// advisory lock on the lease's key (`pg_locks` shows a 64-bit key in halves).
async fn lease_holder_pid(admin: &tokio_postgres::Client, schema: &str, name: &str) -> Option<i32> {
    let key = fnv1a(format!("evoq-lease:{schema}:{name}").as_bytes());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_connection_is_killed_stops_and_the_other_node_takes_over_exactly_once()
 {
    let Some(schema) = PgSchema::new("kill").await else {
        return;
    };
    let seen: Arc<Mutex<HashMap<evoq::Uuid, Vec<usize>>>> = Arc::default();
    let nodes = [node(&schema, 0, &seen).await, node(&schema, 1, &seen).await];
    nodes[0].dispatch(open("x")).await.expect("open");
    for i in 0..20 {
        nodes[i % 2]
            .dispatch(deposit("x", 1))
            .await
            .expect("deposit");
    }
    wait_handled(&seen, 20, Duration::from_secs(10), "before the kill").await;
    let owner = {
        let seen = seen.lock().unwrap();
        let owners: HashSet<usize> = seen.values().flatten().copied().collect();
        assert_eq!(owners.len(), 1, "one node runs the handler: {owners:?}");
        *owners.iter().next().expect("an owner")
    };
    // The holder saves its checkpoint once it has caught up: wait for it, so that nothing
    // handled is left to deliver again (a kill before that would redeliver, by design).
    let store = connect(&schema).await;
    let head = store.read_head().await.expect("head");
    let started = Instant::now();
    while store
        .load_checkpoint("deposit_counter")
        .await
        .expect("checkpoint")
        != Some(head)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the holder did not save its checkpoint at {head}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Kill the session that holds the lease, and append at once: the old holder must not
    // deliver these, the other node must, once each.
    let admin = raw(&schema).await;
    let pid = lease_holder_pid(&admin, &schema.schema, "deposit_counter")
        .await
        .expect("a session holds the lease");
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate the lease's backend")
        .get(0);
    assert!(killed, "the lease's backend was terminated");
    let killed_at = Instant::now();
    for i in 0..10 {
        nodes[i % 2]
            .dispatch(deposit("x", 2))
            .await
            .expect("deposit after the kill");
    }
    wait_handled(&seen, 30, Duration::from_secs(10), "after the kill").await;
    let takeover = killed_at.elapsed();
    assert!(
        takeover < Duration::from_secs(5),
        "the other node took over after {takeover:?}"
    );
    {
        let seen = seen.lock().unwrap();
        for (id, nodes) in seen.iter() {
            assert_eq!(nodes.len(), 1, "event {id} was handled {nodes:?}");
        }
        let by_new: usize = seen.values().filter(|n| n[0] != owner).count();
        assert_eq!(
            by_new, 10,
            "the node that lost its lease delivered nothing after the kill; the other node delivered every new event"
        );
    }
    let holder = lease_holder_pid(&admin, &schema.schema, "deposit_counter")
        .await
        .expect("the lease is held again");
    assert_ne!(holder, pid, "a new session holds the lease");
    println!("takeover within {takeover:?}");
    for node in nodes {
        node.stop().await;
    }
}

/// Fails on deposits of 13 while `healthy` is false; records which node handled which event.
#[derive(Clone)]
struct Picky {
    node: usize,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    handled: Arc<Mutex<Vec<(usize, evoq::Uuid)>>>,
}

#[event_handler(name = "picky", max_attempts = 1, on_error = dead_letter)]
impl Picky {
    #[handles]
    async fn deposited(&mut self, e: &MoneyDeposited, meta: &EventMeta) -> Result<(), Failed> {
        if e.amount == 13 && !self.healthy.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Failed("13 is unlucky".into()));
        }
        self.handled
            .lock()
            .unwrap()
            .push((self.node, meta.event_id()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_retry_asked_on_the_node_without_the_lease_runs_on_the_holder() {
    let Some(schema) = PgSchema::new("retry").await else {
        return;
    };
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handled: Arc<Mutex<Vec<(usize, evoq::Uuid)>>> = Arc::default();
    let mut nodes = Vec::new();
    for n in 0..2 {
        nodes.push(
            Evoq::builder()
                .store(connect(&schema).await)
                .handler(Picky {
                    node: n,
                    healthy: Arc::clone(&healthy),
                    handled: Arc::clone(&handled),
                })
                .start()
                .await
                .expect("start a node"),
        );
    }
    nodes[0].dispatch(open("x")).await.expect("open");
    nodes[0].dispatch(deposit("x", 1)).await.expect("deposit");
    let poisoned = nodes[1].dispatch(deposit("x", 13)).await.expect("deposit");
    let poisoned_at = poisoned.position.expect("a position");
    let last = nodes[0].dispatch(deposit("x", 2)).await.expect("deposit");
    let last_position = last.position.expect("a position");
    for node in &nodes {
        tokio::time::timeout(
            Duration::from_secs(10),
            node.wait_for_named("picky", last_position)
                .without_deadline(),
        )
        .await
        .expect("the handler reached the last deposit")
        .expect("wait_for");
    }
    let holder = {
        let handled = handled.lock().unwrap();
        assert_eq!(handled.len(), 2, "the two good deposits: {handled:?}");
        handled[0].0
    };
    let other = &nodes[1 - holder];
    let letters = other.dead_letters("picky").list(0, 10).await.expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event.global_position, poisoned_at);
    assert_eq!(letters[0].attempts, 1);
    let poisoned_id = letters[0].event.event_id;

    // Still failing: the retry runs on the holder, fails, and says why.
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        other.dead_letters("picky").retry(poisoned_id),
    )
    .await
    .expect("the retry handed to the holder returns");
    match outcome {
        Err(evoq::Error::DeadLetterRetryFailed { error, .. }) => {
            assert_eq!(error, "13 is unlucky");
        }
        other => panic!("expected the retry to fail again, got {other:?}"),
    }
    let entry = other
        .dead_letters("picky")
        .get(poisoned_id)
        .await
        .expect("get")
        .expect("the entry is kept");
    assert_eq!(entry.attempts, 2, "the failed retry counts");

    // Fixed: the retry asked on the node without the lease delivers the event on the holder.
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(10),
        other.dead_letters("picky").retry(poisoned_id),
    )
    .await
    .expect("the retry handed to the holder returns")
    .expect("the retry succeeds");
    assert!(
        handled.lock().unwrap().contains(&(holder, poisoned_id)),
        "the holder delivered the dead letter"
    );
    assert!(
        other
            .dead_letters("picky")
            .list(0, 10)
            .await
            .expect("list")
            .is_empty(),
        "the entry is removed"
    );
    assert!(matches!(
        other.dead_letters("picky").retry(poisoned_id).await,
        Err(evoq::Error::DeadLetterNotFound { .. })
    ));
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nobody_listens_on_fails_the_start_saying_the_connection_was_refused() {
    // A port that was free a moment ago: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/db");
    let error = PostgresStore::connect_with(&url, PostgresOptions::default().retries(1))
        .await
        .expect_err("nothing listens there");
    let text = error.to_string();
    println!("{text}");
    assert!(
        text.to_lowercase().contains("refused") && text.contains(&format!("127.0.0.1:{port}")),
        "the error says the connection was refused, and where: {text}"
    );
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    assert!(
        std::error::Error::source(&error).is_some(),
        "the driver's error is the source: {error:?}"
    );
}

/// Appends that arrive together share batches; those that share a stream, a key or a command id
/// with one before them are still decided one after the other, as if each came alone: every
/// `Any` append to a shared stream lands at the next version, one of 20 appends with one key
/// wins and the others are duplicates of it, one of 10 first appends to one stream wins and the
/// others conflict, and the positions stay dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_sharing_a_stream_key_or_id_in_one_batch_are_decided_one_after_the_other() {
    let Some(schema) = PgSchema::new("batch_split").await else {
        return;
    };
    let store = Arc::new(connect(&schema).await);
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let store = Arc::clone(&store);
        let stream = format!("Shared-{}", i % 4);
        tasks.push(tokio::spawn(async move {
            let mut command = deposit_command("unused");
            command.idempotency_key = None;
            command.deduplicate_since = None;
            (
                "any",
                store
                    .append_command(&stream, ExpectedVersion::Any, vec![event("E", i)], command)
                    .await,
            )
        }));
    }
    for i in 0..20u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            (
                "key",
                store
                    .append_command(
                        &format!("Keyed-{i}"),
                        ExpectedVersion::NoStream,
                        vec![event("E", i)],
                        deposit_command("one-key"),
                    )
                    .await,
            )
        }));
    }
    let shared_id = evoq::Uuid::now_v7();
    for i in 0..10u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut command = deposit_command("unused");
            command.idempotency_key = None;
            command.command_id = shared_id;
            (
                "first",
                store
                    .append_command(
                        "First-1",
                        ExpectedVersion::NoStream,
                        vec![event("E", i)],
                        command,
                    )
                    .await,
            )
        }));
    }
    let mut outcomes: HashMap<(&str, &str), usize> = HashMap::new();
    for task in tasks {
        let (kind, result) = task.await.expect("an appender panicked");
        let outcome = match result {
            Ok(_) => "ok",
            Err(StoreError::DuplicateCommand { .. }) => "duplicate",
            Err(StoreError::WrongExpectedVersion { .. }) => "conflict",
            Err(other) => panic!("{kind}: unexpected error {other}"),
        };
        *outcomes.entry((kind, outcome)).or_default() += 1;
    }
    assert_eq!(outcomes.get(&("any", "ok")), Some(&100), "{outcomes:?}");
    assert_eq!(outcomes.get(&("key", "ok")), Some(&1), "{outcomes:?}");
    assert_eq!(
        outcomes.get(&("key", "duplicate")),
        Some(&19),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.get(&("first", "ok")), Some(&1), "{outcomes:?}");
    assert_eq!(
        outcomes.get(&("first", "duplicate")).copied().unwrap_or(0)
            + outcomes.get(&("first", "conflict")).copied().unwrap_or(0),
        9,
        "{outcomes:?}"
    );
    for s in 0..4 {
        let events = store
            .read_stream(&format!("Shared-{s}"), 0, Direction::Forward, usize::MAX)
            .await
            .expect("read a shared stream");
        let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, (1..=25).collect::<Vec<_>>(), "Shared-{s}");
    }
    let page = store
        .read_all(0, 1_000, &EventFilter::All)
        .await
        .expect("read everything");
    let positions: Vec<u64> = page.events.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, (1..=102).collect::<Vec<_>>(), "dense positions");
}

/// Turns the schema back into version `version` by `undo` (SQL undoing the later versions),
/// opens the store on it, and checks that the open migrated it to the current version.
async fn reopen_at_version(
    schema: &PgSchema,
    admin: &tokio_postgres::Client,
    version: i64,
    undo: &str,
) -> PostgresStore {
    let s = &schema.schema;
    admin
        .batch_execute(&format!(
            "{undo}
             UPDATE \"{s}\".evoq_schema SET version = {version};"
        ))
        .await
        .unwrap_or_else(|e| panic!("turn the schema back into version {version}: {e}"));
    let store = connect(schema).await;
    let migrated: i64 = admin
        .query_one(&format!("SELECT version FROM \"{s}\".evoq_schema"), &[])
        .await
        .expect("schema version")
        .get(0);
    assert_eq!(
        migrated, 8,
        "the schema is migrated to the current version, 8"
    );
    store
}

/// Whether schema `schema` has a function named `name`.
async fn function_exists(admin: &tokio_postgres::Client, schema: &str, name: &str) -> bool {
    let count: i64 = admin
        .query_one(
            "SELECT COUNT(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname = $2",
            &[&schema, &name],
        )
        .await
        .expect("look the function up")
        .get(0);
    count == 1
}

// ---------------------------------------------------------------------------------------------
// Locks held by another session
// ---------------------------------------------------------------------------------------------

/// A store with a short lock timeout and one retry: a lock wait fails an operation within
/// about two lock timeouts plus a backoff.
async fn connect_impatient(schema: &PgSchema, lock_timeout: Duration) -> PostgresStore {
    PostgresStore::connect_with(
        &schema.url,
        PostgresOptions::default()
            .schema(schema.schema.clone())
            .pool_size(4)
            .retries(1)
            .lock_timeout(lock_timeout)
            .poll_interval(Duration::from_millis(200)),
    )
    .await
    .expect("connect to PostgreSQL")
}

/// A runtime on `store` with the deposit counter, checkpointing after every event.
async fn counting_node(
    store: PostgresStore,
    seen: &Arc<Mutex<HashMap<evoq::Uuid, Vec<usize>>>>,
) -> Result<Evoq, evoq::Error> {
    Evoq::builder()
        .store(store)
        .handler_defaults(HandlerConfig {
            checkpoint_every: 1,
            ..HandlerConfig::default()
        })
        .handler(Counter {
            node: 0,
            seen: Arc::clone(seen),
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_on_a_locked_checkpoints_table_fails_with_a_lock_timeout_and_works_once_released() {
    let Some(schema) = PgSchema::new("lockstart").await else {
        return;
    };
    let lock_timeout = Duration::from_millis(300);
    let store = connect_impatient(&schema, lock_timeout).await;
    let seen: Arc<Mutex<HashMap<evoq::Uuid, Vec<usize>>>> = Arc::default();
    let lock = TableLock::hold(&schema, "checkpoints", "ACCESS EXCLUSIVE").await;
    let started = Instant::now();
    let outcome =
        tokio::time::timeout(Duration::from_secs(30), counting_node(store.clone(), &seen))
            .await
            .expect("the start must give up by itself, not hang on the lock");
    let elapsed = started.elapsed();
    let error = outcome.expect_err("a start that cannot read its checkpoints fails");
    println!("{error}");
    assert!(
        elapsed < Duration::from_secs(5),
        "the start failed after {elapsed:?}, long past two lock timeouts of {lock_timeout:?}"
    );
    match &error {
        evoq::Error::Store(StoreError::LockTimeout { after, retries, .. }) => {
            assert_eq!(*after, lock_timeout);
            assert_eq!(*retries, 1);
        }
        other => panic!("expected a lock timeout, got {other:?}"),
    }
    assert_eq!(error.kind(), evoq::ErrorKind::Unavailable);
    let text = error.to_string();
    for words in ["lock timeout of 300ms", "checkpoint", "pg_locks", "raise"] {
        assert!(text.contains(words), "`{words}` missing from: {text}");
    }

    lock.release().await;
    let app = counting_node(store, &seen)
        .await
        .expect("the start works once the lock is released");
    app.dispatch(open("acc-1")).await.expect("open");
    let done = app.dispatch(deposit("acc-1", 5)).await.expect("deposit");
    app.wait_for::<Counter>(done.token)
        .await
        .expect("the handler runs");
    assert_eq!(seen.lock().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_on_a_locked_checkpoints_table_returns_and_nothing_is_lost_once_released() {
    let Some(schema) = PgSchema::new("lockstop").await else {
        return;
    };
    let store = connect_impatient(&schema, Duration::from_millis(300)).await;
    let seen: Arc<Mutex<HashMap<evoq::Uuid, Vec<usize>>>> = Arc::default();
    let app = counting_node(store.clone(), &seen).await.expect("start");
    app.dispatch(open("acc-1")).await.expect("open");
    let mut last = 0;
    for amount in 1..=3 {
        last = app
            .dispatch(deposit("acc-1", amount))
            .await
            .expect("deposit")
            .token;
    }
    app.wait_for::<Counter>(last).await.expect("handled");

    // The lock comes while the handler has events left to save: its last checkpoint waits.
    let lock = TableLock::hold(&schema, "checkpoints", "ACCESS EXCLUSIVE").await;
    let late = app
        .dispatch(deposit("acc-1", 4))
        .await
        .expect("appending does not need the checkpoints");
    // The handler took it; its checkpoint cannot be saved while the lock is held.
    let started = Instant::now();
    while seen.lock().unwrap().len() < 4 {
        assert!(started.elapsed() < Duration::from_secs(10), "never handled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), app.stop())
        .await
        .expect("stop must return while the table is locked");
    println!("stopped in {:?}", started.elapsed());
    lock.release().await;
    assert!(
        store
            .load_checkpoint("deposit_counter")
            .await
            .expect("load")
            < Some(late.token),
        "the last checkpoint could not be saved under the lock"
    );

    // Nothing lost: every deposit is stored, and the handler takes the ones it has not saved.
    let app = counting_node(store.clone(), &seen).await.expect("restart");
    app.wait_for::<Counter>(late.token)
        .await
        .expect("the handler catches up");
    app.stop().await;
    assert_eq!(seen.lock().unwrap().len(), 4, "every deposit handled");
    let events = store
        .read_stream(&account_stream("acc-1"), 1, Direction::Forward, 100)
        .await
        .expect("read the stream");
    assert_eq!(events.len(), 5, "the account's events are all there");
    assert_eq!(
        store
            .load_checkpoint("deposit_counter")
            .await
            .expect("load"),
        Some(late.token)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_is_reported_as_pool_exhausted_not_as_a_silent_server() {
    let Some(schema) = PgSchema::new("poolfull").await else {
        return;
    };
    let wait = Duration::from_millis(500);
    let store = PostgresStore::connect_with(
        &schema.url,
        PostgresOptions::default()
            .schema(schema.schema.clone())
            .pool_size(2)
            .retries(0)
            .connect_timeout(wait)
            // The two reads below wait for the lock as long as the test holds it.
            .lock_timeout(Duration::from_secs(30))
            .poll_interval(Duration::from_secs(60)),
    )
    .await
    .expect("connect to PostgreSQL");
    store
        .save_checkpoint("held", 1)
        .await
        .expect("a checkpoint");
    // Two reads of the checkpoints wait for the lock, each on one of the pool's 2 connections.
    let lock = TableLock::hold(&schema, "checkpoints", "ACCESS EXCLUSIVE").await;
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.load_checkpoint("held").await })
        })
        .collect();
    let admin = raw(&schema).await;
    let started = Instant::now();
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%checkpoints%'",
                &[],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0);
        if waiting >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the readers never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let error = store
        .stream_version("any")
        .await
        .expect_err("no connection is free");
    let elapsed = started.elapsed();
    println!("{error}");
    match &error {
        StoreError::PoolExhausted {
            size,
            waited,
            retries,
            ..
        } => {
            assert_eq!(*size, 2);
            assert_eq!(*waited, wait);
            assert_eq!(*retries, 0);
        }
        other => panic!("expected an exhausted pool, got {other:?}"),
    }
    assert!(elapsed < wait * 4, "it failed after {elapsed:?}");
    let text = error.to_string();
    for words in ["2 pooled connections", "pool size", "pg_stat_activity"] {
        assert!(text.contains(words), "`{words}` missing from: {text}");
    }
    assert!(!text.contains("did not answer"), "{text}");

    lock.release().await;
    for reader in readers {
        assert_eq!(reader.await.expect("a reader").expect("its read"), Some(1));
    }
    assert_eq!(store.stream_version("any").await.expect("a free pool"), 0);
}

// ---------------------------------------------------------------------------------------------
// The writer's errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_of_a_batch_that_lost_its_connection_each_get_the_error_with_one_prefix() {
    let Some(schema) = PgSchema::new("onemsg").await else {
        return;
    };
    let store = PostgresStore::connect_with(
        &schema.url,
        PostgresOptions::default()
            .schema(schema.schema.clone())
            .retries(0)
            .lock_timeout(Duration::from_secs(30)),
    )
    .await
    .expect("connect to PostgreSQL");
    // The head's row locked: the writer's statements wait for it, and the test ends them.
    let admin = raw(&schema).await;
    admin
        .batch_execute(&format!(
            "BEGIN; SELECT * FROM \"{}\".evoq_head FOR UPDATE",
            schema.schema
        ))
        .await
        .expect("lock the head");
    let appends: Vec<_> = (0..3)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(&format!("s-{i}"), ExpectedVersion::Any, vec![event("E", i)])
                    .await
            })
        })
        .collect();
    let killer = raw(&schema).await;
    let started = Instant::now();
    while !appends.iter().all(|append| append.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the appends never failed"
        );
        killer
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' \
                 AND (query LIKE '%evoq_append_conditional%' OR query LIKE '%evoq_head%')",
            )
            .await
            .expect("end the writer's session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.batch_execute("ROLLBACK").await.expect("unlock");
    for append in appends {
        let error = append
            .await
            .expect("an append")
            .expect_err("its session was ended");
        let text = error.to_string();
        println!("{text}");
        assert_eq!(
            text.matches("event store backend").count(),
            1,
            "one prefix: {text}"
        );
        // The server's reason, or (when the connection closed before the driver read it) the
        // outcome the writer could not settle while the head stayed locked.
        assert!(
            text.contains("57P01") || text.contains("outcome is unknown"),
            "the reason: {text}"
        );
    }
    // The store goes on.
    store
        .append("s-9", ExpectedVersion::NoStream, vec![event("E", 9)])
        .await
        .expect("a later append");
}

// ---------------------------------------------------------------------------------------------
// An append whose reply was lost after its commit
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_reply_is_lost_after_the_commit_is_answered_from_the_store_not_appended_twice()
 {
    let Some(schema) = PgSchema::new("lostreply").await else {
        return;
    };
    let proxy = Proxy::start(&schema.url).await;
    let store = PostgresStore::connect_with(
        &proxy.url,
        PostgresOptions::default()
            .schema(schema.schema.clone())
            .pool_size(4)
            .retries(3)
            .poll_interval(Duration::from_secs(60)),
    )
    .await
    .expect("connect through the proxy");
    store
        .append("warm-up", ExpectedVersion::NoStream, vec![event("E", 0)])
        .await
        .expect("an append through the proxy");

    // Any: a retry would append the events a second time.
    proxy.cut_reply_after(b"lost-any");
    let events = vec![event("E", 1), event("E", 2)];
    let ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
    let appended = store
        .append("lost-any", ExpectedVersion::Any, events)
        .await
        .expect("the append committed: it succeeds");
    assert_eq!(proxy.cuts(), 1, "the reply was lost");
    let stored = store
        .read_stream("lost-any", 1, Direction::Forward, 10)
        .await
        .expect("read");
    assert_eq!(
        stored.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        ids,
        "the events are stored once"
    );
    assert_eq!(appended.version, 2);
    assert_eq!(appended.first_position, stored[0].global_position);
    assert_eq!(appended.last_position, stored[1].global_position);

    // An expected version: a retry would report a conflict with the append itself.
    proxy.cut_reply_after(b"lost-exact");
    let appended = store
        .append("lost-exact", ExpectedVersion::NoStream, vec![event("E", 3)])
        .await
        .expect("the append committed: no conflict with itself");
    assert_eq!(proxy.cuts(), 2, "the reply was lost");
    assert_eq!(appended.version, 1);
    assert_eq!(
        store.stream_version("lost-exact").await.expect("version"),
        1
    );
    assert_eq!(
        appended.last_position,
        store.read_head().await.expect("head")
    );

    // A command's entry is found too: no duplicate of itself.
    proxy.cut_reply_after(b"lost-command");
    let appended = store
        .append_command(
            "lost-command",
            ExpectedVersion::NoStream,
            vec![event("E", 4)],
            deposit_command("lost-key"),
        )
        .await
        .expect("the command committed: no duplicate of itself");
    assert_eq!(proxy.cuts(), 3, "the reply was lost");
    assert_eq!(appended.version, 1);
    assert_eq!(
        store.stream_version("lost-command").await.expect("version"),
        1
    );
}
