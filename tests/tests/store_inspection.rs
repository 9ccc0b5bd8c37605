//! Opening a store to look at it without changing it (what the `evoq` inspector does): a SQLite
//! file opened for inspection while its application runs (no lock, nothing written, the head
//! followed from the file), the files it refuses, and a PostgreSQL schema connected without
//! migrating (a missing schema is refused and not created).

use std::time::Duration;

use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq::store::sqlite::SqliteStore;
use evoq::store::{EventFilter, Snapshot};
use evoq::{EventStore, ExpectedVersion, NewEvent, StoreError};
use evoq_tests::pg::PgSchema;
use evoq_tests::temp::TempDir;

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: "Counted".into(),
        schema_version: 1,
        data: format!("{{\"n\":{n}}}").into_bytes(),
        metadata: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspection_reads_a_file_its_application_holds_and_follows_its_commits() {
    let dir = TempDir::new("inspect-live");
    let path = dir.file("events.db");
    let app = SqliteStore::open(&path)
        .await
        .expect("the application opens");
    app.append("a-1", ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    app.save_checkpoint("notifier", 1).await.unwrap();

    let inspector = SqliteStore::open_for_inspection(&path)
        .await
        .expect("an inspection opens a file whose application runs (no lock)");
    assert_eq!(*inspector.head().borrow(), 2);
    let page = inspector.read_all(0, 10, &EventFilter::All).await.unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(
        inspector.list_checkpoints().await.unwrap(),
        [("notifier".to_owned(), 1)]
    );

    // A commit of the application: the inspection's reads see it at once, its head watch
    // within a poll.
    let mut head = inspector.head();
    app.append("a-2", ExpectedVersion::NoStream, vec![event(3)])
        .await
        .unwrap();
    let page = inspector.read_all(2, 10, &EventFilter::All).await.unwrap();
    assert_eq!(page.events.len(), 1, "a read sees the application's commit");
    assert_eq!(page.scanned_through, 3);
    tokio::time::timeout(Duration::from_secs(5), head.wait_for(|h| *h >= 3))
        .await
        .expect("the head watch follows the file")
        .unwrap();

    // It writes nothing.
    let refused = inspector
        .append("a-3", ExpectedVersion::Any, vec![event(4)])
        .await
        .expect_err("an inspection does not write");
    assert!(
        refused.to_string().contains("opened for inspection"),
        "{refused}"
    );
    assert!(
        inspector
            .save_snapshot(Snapshot {
                stream_id: "a-1".into(),
                version: 2,
                data: vec![],
                taken_at: std::time::SystemTime::now(),
            })
            .await
            .is_err()
    );
    assert!(inspector.save_checkpoint("notifier", 0).await.is_err());
    assert_eq!(app.load_checkpoint("notifier").await.unwrap(), Some(1));
    assert_eq!(app.stream_version("a-3").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspection_takes_no_lock() {
    let dir = TempDir::new("inspect-lock");
    let path = dir.file("events.db");
    let app = SqliteStore::open(&path).await.unwrap();
    app.append("a-1", ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    app.close().await.unwrap();

    let inspector = SqliteStore::open_for_inspection(&path).await.unwrap();
    let app = SqliteStore::open(&path)
        .await
        .expect("the application opens while an inspection is open");
    app.append("a-1", ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .unwrap();
    assert_eq!(inspector.stream_version("a-1").await.unwrap(), 2);
    drop(inspector);
    app.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspection_refuses_what_is_not_an_evoq_store_and_creates_nothing() {
    let dir = TempDir::new("inspect-refused");
    let missing = dir.file("missing.db");
    let refusal = |error: StoreError| match error {
        StoreError::NotAnEventStore { found, .. } => found,
        other => panic!("expected NotAnEventStore, got {other:?}"),
    };
    let found = refusal(
        SqliteStore::open_for_inspection(&missing)
            .await
            .expect_err("a missing file is refused"),
    );
    assert!(found.contains("no such file"), "{found}");
    assert!(!missing.exists(), "an inspection creates no file");

    let empty = dir.file("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let found = refusal(SqliteStore::open_for_inspection(&empty).await.unwrap_err());
    assert!(found.contains("empty"), "{found}");

    let text = dir.file("notes.txt");
    std::fs::write(
        &text,
        "not a database at all, but long enough to be looked at",
    )
    .unwrap();
    let found = refusal(SqliteStore::open_for_inspection(&text).await.unwrap_err());
    assert!(found.contains("not an SQLite database"), "{found}");

    let foreign = dir.file("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
            .unwrap();
    }
    let before = std::fs::read(&foreign).unwrap();
    let found = refusal(
        SqliteStore::open_for_inspection(&foreign)
            .await
            .unwrap_err(),
    );
    assert!(found.contains("`invoices`"), "{found}");
    assert_eq!(std::fs::read(&foreign).unwrap(), before, "left untouched");

    let found = refusal(
        SqliteStore::open_for_inspection(dir.path())
            .await
            .unwrap_err(),
    );
    assert!(found.contains("directory"), "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_connected_without_migrating_refuses_a_missing_schema_and_creates_nothing()
{
    let Some(schema) = PgSchema::new("nomigrate").await else {
        return;
    };
    let options = || {
        PostgresOptions::default()
            .schema(schema.schema.clone())
            .migrate(false)
    };
    match PostgresStore::connect_with(&schema.url, options()).await {
        Err(StoreError::NotAnEventStore { found, .. }) => {
            assert!(found.contains("does not exist"), "{found}")
        }
        other => panic!("a missing schema must be refused, got {other:?}"),
    }
    let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema.schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "connecting without migrating creates no schema");

    let app = PostgresStore::connect_with(
        &schema.url,
        PostgresOptions::default().schema(schema.schema.clone()),
    )
    .await
    .unwrap();
    app.append("a-1", ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let inspector = PostgresStore::connect_with(&schema.url, options())
        .await
        .expect("an existing schema connects without migrating");
    assert_eq!(inspector.read_head().await.unwrap(), 1);
    assert_eq!(inspector.count_events().await.unwrap().events, 1);
}
