//! Values PostgreSQL cannot hold (a NUL character, an indexed value past its B-tree limit, data
//! a constraint refuses) fail their own command or append alone, with a typed error naming the
//! value, while the appends committed in the same group commit go through (docs/semantics.md
//! §1 and §10).

use std::sync::Arc;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq::{ErrorKind, EventStore, ExpectedVersion, NewEvent, StoreError};
use evoq_tests::bank::*;
use evoq_tests::pg::PgSchema;

async fn store(schema: &PgSchema) -> Arc<dyn EventStore> {
    Arc::new(
        PostgresStore::connect_with(
            &schema.url,
            PostgresOptions::default()
                .schema(schema.schema.clone())
                .poll_interval(Duration::from_millis(200)),
        )
        .await
        .expect("connect to PostgreSQL"),
    )
}

async fn app(store: &Arc<dyn EventStore>) -> Evoq {
    Evoq::builder()
        .shared_store(Arc::clone(store))
        .start()
        .await
        .expect("the runtime starts")
}

/// Text that does not compress: past the index limit even compressed.
fn incompressible(bytes: usize) -> String {
    let mut text = String::new();
    while text.len() < bytes {
        text.push_str(
            &evoq::Uuid::now_v7()
                .simple()
                .to_string()
                .chars()
                .rev()
                .collect::<String>(),
        );
    }
    text
}

/// Runs `bad` alongside 30 deposits to fresh accounts, five rounds, so that it shares group
/// commits with them; returns the bad dispatches' errors. Every other deposit succeeds.
async fn beside_others<F, Fut>(app: &Evoq, label: &str, bad: F) -> Vec<Error>
where
    F: Fn(Evoq, usize) -> Fut,
    Fut: Future<Output = Result<Dispatched<BankAccount>, Error>> + Send + 'static,
{
    let mut errors = Vec::new();
    for round in 0..5 {
        let others: Vec<_> = (0..30)
            .map(|n| {
                let app = app.clone();
                let account = format!("{label}-{round}-{n}");
                tokio::spawn(async move { app.dispatch(open(&account)).await })
            })
            .collect();
        let bad = tokio::spawn(bad(app.clone(), round));
        for other in others {
            let done = other.await.expect("no panic");
            assert!(
                done.is_ok(),
                "a command beside the bad one failed: {:?}",
                done.err()
            );
        }
        match bad.await.expect("no panic") {
            Ok(done) => panic!("the bad command succeeded: {done:?}"),
            Err(error) => errors.push(error),
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_past_the_index_limit_fails_its_command_alone_naming_the_key() {
    let Some(schema) = PgSchema::new("long_key").await else {
        return;
    };
    let store = store(&schema).await;
    let app = app(&store).await;
    let key = incompressible(6_000);
    let errors = beside_others(&app, "key", |app, round| {
        let key = format!("{key}-{round}");
        async move {
            app.command(open(&format!("keyed-{round}")))
                .idempotency_key(key)
                .dispatch()
                .await
        }
    })
    .await;
    for error in &errors {
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
        assert!(
            matches!(
                error,
                Error::Store(StoreError::Unstorable {
                    what: "idempotency key",
                    ..
                })
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("2048"), "{message}");
        assert!(message.len() < 600, "the key is cut: {message}");
    }
    // Nothing of the keyed commands was stored; a key within the limit works.
    for round in 0..5 {
        assert_eq!(stored(&store, &format!("keyed-{round}")).await, 0);
    }
    app.command(open("keyed-ok"))
        .idempotency_key(incompressible(2_000)[..2_000].to_owned())
        .dispatch()
        .await
        .expect("a key of 2,000 bytes is held");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_id_postgres_cannot_hold_is_an_invalid_aggregate_id_of_its_command_alone() {
    let Some(schema) = PgSchema::new("bad_ids").await else {
        return;
    };
    let store = store(&schema).await;
    let app = app(&store).await;
    let long = incompressible(6_000);
    for (label, id) in [("nul", "a\0b".to_owned()), ("long", long.clone())] {
        let errors = beside_others(&app, label, |app, _| {
            let id = id.clone();
            async move { app.dispatch(open(&id)).await }
        })
        .await;
        for error in &errors {
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{label}: {error}");
            let Error::InvalidAggregateId {
                aggregate,
                command,
                id: given,
                reason,
                ..
            } = error
            else {
                panic!("{label}: {error:?}");
            };
            assert_eq!((*aggregate, *command), ("BankAccount", "OpenAccount"));
            assert_eq!(given, &id);
            assert!(reason.contains("postgres"), "{reason}");
        }
    }
    assert!(
        app.dispatch(open("a\0b"))
            .await
            .unwrap_err()
            .to_string()
            .contains("NUL"),
    );
    // Nothing was stored under either id: the 300 accounts opened beside them, no more.
    assert_eq!(store.count_events().await.unwrap().events, 2 * 5 * 30);
    app.stop().await;
}

/// Runs `sql` (with `{schema}` replaced by the store's schema) on a connection of its own, as
/// an operator would.
async fn as_an_operator(schema: &PgSchema, sql: &str) {
    let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
        .batch_execute(&sql.replace("{schema}", &format!("\"{}\"", schema.schema)))
        .await
        .expect("the operator's change is made");
}

/// The data of each event [`one_poisoned_append_in_each_group`] appends: a value that must not
/// reach an error's text, as it is or in hex.
const SECRET: &str = "hunter2";

/// Appends one event to each of 40 fresh streams at once, five rounds, the event of one of
/// each round of type `Poison`, so that it shares group commits with the others; every other
/// append commits. Returns the poisoned appends' errors.
async fn one_poisoned_append_in_each_group(store: &Arc<dyn EventStore>) -> Vec<StoreError> {
    let event = |event_type: &str| NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: event_type.to_owned().into(),
        schema_version: 1,
        data: format!("{{\"password\":\"{SECRET}\"}}").into_bytes(),
        metadata: Default::default(),
    };
    let mut errors = Vec::new();
    for round in 0..5 {
        let appends: Vec<_> = (0..40)
            .map(|n| {
                let store = Arc::clone(store);
                let poison = n == 17;
                let stream = format!("s-{round}-{n}");
                let events = vec![event(if poison { "Poison" } else { "Fine" })];
                tokio::spawn(async move {
                    (
                        poison,
                        store
                            .append(&stream, ExpectedVersion::NoStream, events)
                            .await,
                    )
                })
            })
            .collect();
        for append in appends {
            let (poison, result) = append.await.expect("no panic");
            if poison {
                errors.push(result.expect_err("the poisoned append fails"));
            } else {
                result.expect("every other append commits");
            }
        }
    }
    let counts = store.count_events().await.unwrap();
    assert_eq!(counts.events, 5 * 39);
    errors
}

/// Whether `error` says what the database refused and names nothing else.
fn assert_refused_data(error: &StoreError) {
    assert!(
        matches!(
            error,
            StoreError::Unstorable {
                what: "events of the stream",
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(!message.contains("127.0.0.1"), "names no server: {message}");
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        !message.contains(SECRET) && !message.contains(&hex),
        "shows none of the event's data: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_the_database_refuses_fails_its_append_alone_and_the_batch_commits() {
    let Some(schema) = PgSchema::new("refused_data").await else {
        return;
    };
    let store = store(&schema).await;
    // An operator's constraint the store knows nothing of.
    as_an_operator(
        &schema,
        "ALTER TABLE {schema}.events ADD CONSTRAINT no_poison CHECK (event_type <> 'Poison')",
    )
    .await;
    for error in one_poisoned_append_in_each_group(&store).await {
        assert!(
            matches!(
                &error,
                StoreError::Unstorable {
                    what: "events of the stream",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("no_poison"), "{error}");
        assert!(
            !error.to_string().contains("127.0.0.1"),
            "names no server: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reason_of_a_refused_append_shows_the_database_s_words_not_the_row_s_values() {
    let Some(schema) = PgSchema::new("refused_row").await else {
        return;
    };
    let store = store(&schema).await;
    as_an_operator(
        &schema,
        "ALTER TABLE {schema}.events ADD CONSTRAINT no_poison CHECK (event_type <> 'Poison')",
    )
    .await;
    for error in one_poisoned_append_in_each_group(&store).await {
        assert_refused_data(&error);
        let message = error.to_string();
        assert!(message.contains("check constraint"), "{message}");
        assert!(message.contains("no_poison"), "{message}");
        assert!(!message.contains("Failing row"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_a_trigger_refuses_fails_alone_in_the_trigger_s_words() {
    let Some(schema) = PgSchema::new("refused_trigger").await else {
        return;
    };
    let store = store(&schema).await;
    // An operator's trigger: RAISE EXCEPTION is SQLSTATE P0001.
    as_an_operator(
        &schema,
        "CREATE FUNCTION {schema}.refuse_poison() RETURNS trigger AS $$ BEGIN \
         IF NEW.event_type = 'Poison' OR NEW.stream_id = 'BankAccount-poison' THEN \
         RAISE EXCEPTION 'operator says no'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse_poison BEFORE INSERT ON {schema}.events \
         FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_poison();",
    )
    .await;
    for error in one_poisoned_append_in_each_group(&store).await {
        assert_refused_data(&error);
        let message = error.to_string();
        assert!(message.contains("operator says no"), "{message}");
        assert!(
            message.contains("refuse_poison"),
            "names the trigger's function: {message}"
        );
        assert_eq!(Error::Store(error).kind(), ErrorKind::InvalidInput);
    }
    // A keyed command to the refused stream fails alone too, and leaves its key free.
    let app = app(&store).await;
    let errors = beside_others(&app, "trigger", |app, round| async move {
        app.command(open("poison"))
            .idempotency_key(format!("poison-{round}"))
            .dispatch()
            .await
    })
    .await;
    for error in &errors {
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
        assert!(
            matches!(
                error,
                Error::Store(StoreError::Unstorable {
                    what: "events of the stream",
                    ..
                })
            ),
            "{error:?}"
        );
    }
    assert_eq!(stored(&store, "poison").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_stream_id_with_a_nul_are_a_typed_error_not_a_database_failure() {
    let Some(schema) = PgSchema::new("nul_reads").await else {
        return;
    };
    let store = store(&schema).await;
    let error = store
        .read_stream("s-\0", 1, evoq::store::Direction::Forward, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Unstorable {
                what: "stream id",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(matches!(
        store.stream_version("s-\0").await,
        Err(StoreError::Unstorable { .. })
    ));
    assert!(matches!(
        store.load_snapshot("s-\0").await,
        Err(StoreError::Unstorable { .. })
    ));
}
