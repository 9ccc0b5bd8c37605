//! The SQLite store: the conformance suite, durability across reopen (tags and conditions
//! included), crash safety under SIGKILL, corrupt rows, a schema from a newer evoq, the
//! migration of version-1, version-2 and version-4 files (the tag index filled from the
//! stored events), and failing safe: one process per file (real child processes, a holder killed with
//! SIGKILL), a close that leaves the database file alone complete, foreign and read-only files
//! refused untouched, a hot journal a killed writer left rolled back at open, the writer's
//! bounded stream cache, and one error prefix.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use evoq::store::sqlite::{Durability, SqliteOptions, SqliteStore};
use evoq::store::{AppendCondition, CommandLookup, Direction, EventQuery, NewCommand, Timeout};
use evoq::{EventStore, ExpectedVersion, NewEvent, StoreError};
use evoq_tests::crash::{KillClock, run_and_kill, runtime};
use evoq_tests::temp::TempDir;

mod sqlite_store_conformance {
    evoq::store_conformance_tests!(|| async {
        let dir = evoq_tests::temp::TempDir::new("sqlite-conformance");
        let store = evoq::store::sqlite::SqliteStore::open(dir.file("events.db"))
            .await
            .expect("open the SQLite store");
        (std::sync::Arc::new(store), dir)
    });
}

fn event(stream: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: "Counted".into(),
        schema_version: 1,
        data: format!("{{\"stream\":\"{stream}\",\"n\":{n}}}").into_bytes(),
        metadata: Default::default(),
    }
}

#[test]
fn events_checkpoints_and_saga_state_survive_a_reopen() {
    let dir = TempDir::new("sqlite-reopen");
    let path = dir.file("events.db");
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .append(
                "A-1",
                ExpectedVersion::NoStream,
                vec![event("A-1", 1), event("A-1", 2)],
            )
            .await
            .expect("append");
        store.save_checkpoint("h", 2).await.expect("checkpoint");
        store
            .save_saga_state("S", "i", b"state".to_vec())
            .await
            .expect("saga");
        drop(store);
        let store = SqliteStore::open_with(
            &path,
            SqliteOptions::default().durability(Durability::Normal),
        )
        .await
        .expect("reopen");
        assert_eq!(*store.head().borrow(), 2, "the head is restored on open");
        assert_eq!(store.stream_version("A-1").await.expect("version"), 2);
        assert_eq!(store.load_checkpoint("h").await.expect("load"), Some(2));
        assert_eq!(
            store
                .load_saga_state("S", "i")
                .await
                .expect("load")
                .as_deref(),
            Some(&b"state"[..])
        );
        let appended = store
            .append("A-1", ExpectedVersion::Exact(2), vec![event("A-1", 3)])
            .await
            .expect("append after reopen");
        assert_eq!((appended.version, appended.last_position), (3, 3));
    });
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

#[test]
fn a_scheduled_timeout_survives_a_reopen_and_is_still_due() {
    let dir = TempDir::new("sqlite-timeout-reopen");
    let path = dir.file("events.db");
    // Whole microseconds: the store keeps due times to the microsecond.
    let due_at = UNIX_EPOCH + Duration::new(1_700_000_000, 654_321_000);
    let due = shipping_timeout(due_at, b"\x00fire\xff");
    let later = shipping_timeout(due_at + Duration::from_secs(3_600), b"later");
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        store.schedule_timeout(due.clone()).await.expect("schedule");
        store
            .schedule_timeout(later.clone())
            .await
            .expect("schedule");
        drop(store);
        let store = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(
            store
                .due_timeouts("Shipping", due_at, usize::MAX)
                .await
                .expect("due_timeouts"),
            std::slice::from_ref(&due),
            "the timeout is still there after a reopen, still due, byte for byte"
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
            "the reopened store deletes it"
        );
        assert_eq!(
            store.next_timeout("Shipping").await.expect("next_timeout"),
            Some(later.due_at),
            "the other timeout survived too"
        );
    });
}

#[test]
fn a_schema_from_a_newer_evoq_is_refused_and_left_alone() {
    let dir = TempDir::new("sqlite-schema");
    let path = dir.file("events.db");
    runtime().block_on(async {
        drop(SqliteStore::open(&path).await.expect("open"));
    });
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute("UPDATE evoq_schema SET version = 99", [])
        .expect("bump the schema version");
    drop(conn);
    runtime().block_on(async {
        let error = SqliteStore::open(&path)
            .await
            .expect_err("a newer schema must be refused");
        assert!(
            matches!(
                error,
                StoreError::SchemaTooNew {
                    found: 99,
                    supported: 6,
                    ..
                }
            ),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.contains("events.db") && text.contains("upgrade evoq"),
            "{text}"
        );
    });
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let version: i64 = conn
        .query_row("SELECT version FROM evoq_schema", [], |r| r.get(0))
        .expect("read");
    assert_eq!(version, 99, "a refused database is not changed");
}

/// The schema of the first SQLite files (version 1, without the command log), as they are on
/// disk: a fixture that stays as it is whatever the current schema becomes.
const SCHEMA_V1: &str = "
CREATE TABLE evoq_schema (version INTEGER NOT NULL);
INSERT INTO evoq_schema (version) VALUES (1);
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_id       BLOB    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    metadata       BLOB    NOT NULL,
    recorded_at    INTEGER NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE snapshots (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    taken_at  INTEGER NOT NULL
);
CREATE TABLE checkpoints (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE dead_letters (
    handler         TEXT    NOT NULL,
    event_id        BLOB    NOT NULL,
    position        INTEGER NOT NULL,
    stream_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    data            BLOB    NOT NULL,
    metadata        BLOB    NOT NULL,
    recorded_at     INTEGER NOT NULL,
    error           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    first_failed_at INTEGER NOT NULL,
    last_failed_at  INTEGER NOT NULL,
    PRIMARY KEY (handler, event_id)
);
CREATE INDEX dead_letters_by_position ON dead_letters (handler, position);
CREATE TABLE saga_state (
    saga     TEXT NOT NULL,
    instance TEXT NOT NULL,
    state    BLOB NOT NULL,
    PRIMARY KEY (saga, instance)
);
";

/// Writes a version-1 file at `path` holding `A-1` versions 1 and 2 and `B-1` version 1, at
/// positions 1 to 3; returns their event ids in position order.
fn write_version_1_file(path: &std::path::Path) -> Vec<evoq::Uuid> {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.execute_batch(SCHEMA_V1)
        .expect("create the version 1 schema");
    let rows = [("A-1", 1), ("A-1", 2), ("B-1", 1)];
    let mut ids = Vec::new();
    for (position, (stream, version)) in (1i64..).zip(rows) {
        let id = evoq::Uuid::now_v7();
        conn.execute(
            "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at) VALUES (?1, ?2, ?3, ?4, 'Counted', 1, ?5, X'7B7D', 1700000000000000000)",
            rusqlite::params![
                position,
                stream,
                version,
                id.as_bytes().as_slice(),
                format!("{{\"stream\":\"{stream}\",\"n\":{version}}}").into_bytes()
            ],
        )
        .expect("insert a version 1 event");
        ids.push(id);
    }
    ids
}

/// A command of type `Deposit` on `Account` `a1` with idempotency key `key`, checked against
/// every entry of the log.
fn deposit(key: &str) -> NewCommand {
    NewCommand {
        command_id: evoq::Uuid::now_v7(),
        idempotency_key: Some(key.to_owned()),
        command: "Deposit".into(),
        aggregate: "Account".into(),
        deduplicate_since: Some(UNIX_EPOCH),
    }
}

#[test]
fn a_version_1_file_is_migrated_in_place_keeps_its_events_and_records_commands() {
    let dir = TempDir::new("sqlite-v1");
    let path = dir.file("events.db");
    let ids = write_version_1_file(&path);
    runtime().block_on(async {
        let store = SqliteStore::open(&path)
            .await
            .expect("a version 1 file opens");
        assert_eq!(*store.head().borrow(), 3, "the head is the old file's");
        let page = store
            .read_all(0, 10, &evoq::store::EventFilter::All)
            .await
            .expect("read_all");
        let read: Vec<_> = page.events.iter().map(|e| e.event_id).collect();
        assert_eq!(read, ids, "every event of the old file is kept, in order");
        assert_eq!(
            page.events[1].data,
            br#"{"stream":"A-1","n":2}"#.to_vec(),
            "the events keep their data"
        );
        assert_eq!(store.stream_version("A-1").await.expect("version"), 2);

        let command = deposit("after-migration");
        let appended = store
            .append_command(
                "A-1",
                ExpectedVersion::Exact(2),
                vec![event("A-1", 3)],
                command.clone(),
            )
            .await
            .expect("append_command on the migrated file");
        assert_eq!(
            (appended.version, appended.first_position),
            (3, 4),
            "appends go on after the old events"
        );
        let again = store
            .append_command(
                "A-1",
                ExpectedVersion::Exact(3),
                vec![event("A-1", 4)],
                deposit("after-migration"),
            )
            .await;
        assert!(
            matches!(again, Err(StoreError::DuplicateCommand { .. })),
            "the migrated file checks the command log: {again:?}"
        );
    });
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("reopen");
        let record = store
            .find_command(CommandLookup::Key("after-migration"), UNIX_EPOCH)
            .await
            .expect("find_command")
            .expect("the entry survives a reopen");
        assert_eq!(
            (record.version, record.first_position, record.last_position),
            (3, 4, 4)
        );
        assert_eq!(*store.head().borrow(), 4);
    });
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM evoq_schema")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .expect("read the schema version");
    assert_eq!(
        versions,
        [6],
        "the file is at the current schema version, 6"
    );
}

/// The step from schema version 1 to 2 as the first files of version 2 hold it (the command
/// log): a fixture that stays as it is whatever the current schema becomes.
const SCHEMA_V2_STEP: &str = "
CREATE TABLE commands (
    command_id      BLOB    NOT NULL,
    idempotency_key TEXT,
    command         TEXT    NOT NULL,
    aggregate       TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    stream_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    event_count     INTEGER NOT NULL,
    first_position  INTEGER NOT NULL,
    last_position   INTEGER NOT NULL,
    recorded_at     INTEGER NOT NULL
);
CREATE INDEX commands_by_id ON commands (command_id);
CREATE UNIQUE INDEX commands_by_key ON commands (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
UPDATE evoq_schema SET version = 2;
";

/// Writes a version-2 file at `path`: the events of [`write_version_1_file`], the command-log
/// entry of key `v2-key` (the append of `A-1` versions 1 and 2), a checkpoint `h` at 3, a
/// snapshot of `A-1` and the state of saga `Shipping`'s `order-1`; returns the event ids.
fn write_version_2_file(path: &std::path::Path) -> (Vec<evoq::Uuid>, evoq::Uuid) {
    let ids = write_version_1_file(path);
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.execute_batch(SCHEMA_V2_STEP)
        .expect("migrate the fixture to version 2");
    let command_id = evoq::Uuid::now_v7();
    conn.execute(
        "INSERT INTO commands (command_id, idempotency_key, command, aggregate, aggregate_id, stream_id, version, event_count, first_position, last_position, recorded_at) VALUES (?1, 'v2-key', 'Deposit', 'Account', '1', 'A-1', 2, 2, 1, 2, 1700000000000000000)",
        [command_id.as_bytes().as_slice()],
    )
    .expect("insert a version 2 command entry");
    conn.execute_batch(
        "INSERT INTO checkpoints (name, position) VALUES ('h', 3);
         INSERT INTO snapshots (stream_id, version, data, taken_at) VALUES ('A-1', 2, X'7B7D', 1700000000000000000);
         INSERT INTO saga_state (saga, instance, state) VALUES ('Shipping', 'order-1', X'00FF01');",
    )
    .expect("insert version 2 rows");
    conn.execute(
        "INSERT INTO dead_letters (handler, event_id, position, stream_id, version, event_type, schema_version, data, metadata, recorded_at, error, attempts, first_failed_at, last_failed_at) SELECT 'h', event_id, position, stream_id, version, event_type, schema_version, data, metadata, recorded_at, 'boom', 6, 1700000000000000000, 1700000001000000000 FROM events WHERE position = 1",
        [],
    )
    .expect("insert a version 2 dead letter");
    (ids, command_id)
}

#[test]
fn a_version_2_file_is_migrated_to_the_current_version_with_timeouts_and_keeps_everything() {
    let dir = TempDir::new("sqlite-v2");
    let path = dir.file("events.db");
    let (ids, command_id) = write_version_2_file(&path);
    let due_at = UNIX_EPOCH + Duration::new(1_700_000_000, 1_000);
    let timeout = shipping_timeout(due_at, b"fire");
    runtime().block_on(async {
        let store = SqliteStore::open(&path)
            .await
            .expect("a version 2 file opens");
        assert_eq!(*store.head().borrow(), 3, "the head is the old file's");
        let page = store
            .read_all(0, 10, &evoq::store::EventFilter::All)
            .await
            .expect("read_all");
        let read: Vec<_> = page.events.iter().map(|e| e.event_id).collect();
        assert_eq!(read, ids, "every event of the old file is kept, in order");
        let record = store
            .find_command(CommandLookup::Key("v2-key"), UNIX_EPOCH)
            .await
            .expect("find_command")
            .expect("the command log is kept");
        assert_eq!(
            (record.command_id, record.version, record.last_position),
            (command_id, 2, 2)
        );
        assert_eq!(store.load_checkpoint("h").await.expect("load"), Some(3));
        let letter = store
            .load_dead_letter("h", ids[0])
            .await
            .expect("load_dead_letter")
            .expect("the dead letter is kept");
        assert_eq!(
            (
                &*letter.error,
                letter.attempts,
                letter.kind,
                &*letter.reason,
                &letter.raw_row
            ),
            ("boom", 6, evoq::FailureKind::HandlerError, "", &None),
            "a dead letter written before kinds existed reads as a handler error"
        );
        let snapshot = store
            .load_snapshot("A-1")
            .await
            .expect("load")
            .expect("the snapshot is kept");
        assert_eq!((snapshot.version, snapshot.data), (2, b"{}".to_vec()));
        assert_eq!(
            store
                .load_saga_state("Shipping", "order-1")
                .await
                .expect("load")
                .as_deref(),
            Some(&[0x00, 0xFF, 0x01][..]),
            "the saga state is kept"
        );
        store
            .schedule_timeout(timeout.clone())
            .await
            .expect("schedule a timeout on the migrated file");
    });
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(
            store
                .due_timeouts("Shipping", due_at, 10)
                .await
                .expect("due_timeouts"),
            [timeout],
            "the migrated file keeps timeouts"
        );
        assert_eq!(
            store
                .cancel_timeouts("Shipping", "order-1")
                .await
                .expect("cancel"),
            1
        );
    });
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let version: i64 = conn
        .query_row("SELECT version FROM evoq_schema", [], |r| r.get(0))
        .expect("read the schema version");
    assert_eq!(version, 6, "the file is at the current schema version, 6");
    let indexes: Vec<String> = conn
        .prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'timeouts' AND sql IS NOT NULL ORDER BY name")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .expect("read the indexes of `timeouts`");
    assert!(
        indexes.iter().any(|sql| sql.contains("(saga, due_at, id)"))
            && indexes.iter().any(|sql| sql.contains("(saga, instance)")),
        "`timeouts` is indexed for due_timeouts and cancel_timeouts: {indexes:?}"
    );
}

/// The steps from schema version 2 to 4 as the files of version 4 hold them (the sagas'
/// timeouts; the dead letters' kind, reason and raw row, and the handlers' requests): a fixture
/// that stays as it is whatever the current schema becomes.
const SCHEMA_V3_V4_STEPS: &str = "
CREATE TABLE timeouts (
    id       BLOB    NOT NULL PRIMARY KEY,
    saga     TEXT    NOT NULL,
    instance TEXT    NOT NULL,
    due_at   INTEGER NOT NULL,
    payload  BLOB    NOT NULL
);
CREATE INDEX timeouts_by_due ON timeouts (saga, due_at, id);
CREATE INDEX timeouts_by_instance ON timeouts (saga, instance);
ALTER TABLE dead_letters ADD COLUMN kind TEXT NOT NULL DEFAULT 'handler_error';
ALTER TABLE dead_letters ADD COLUMN reason TEXT NOT NULL DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN raw_row TEXT;
CREATE TABLE requests (
    id           BLOB    NOT NULL PRIMARY KEY,
    handler      TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    event_id     BLOB,
    requested_at INTEGER NOT NULL
);
CREATE INDEX requests_by_handler ON requests (handler, id);
UPDATE evoq_schema SET version = 4;
";

/// Writes a version-4 file at `path`: the events of [`write_version_2_file`] (positions 1 to 3,
/// untagged), then, as version 4 stored tags (in the metadata only), `BookLent` at 4 tagged
/// `member:m1` and `book:b1`, `BookLent` at 5 with a user entry named `tags` and no tag,
/// `BookLent` at 6 whose metadata does not decode, and `BookReturned` at 7 tagged `book:b1`.
fn write_version_4_file(path: &std::path::Path) {
    write_version_2_file(path);
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.execute_batch(SCHEMA_V3_V4_STEPS)
        .expect("migrate the fixture to version 4");
    let rows: [(&str, &str, &str); 4] = [
        (
            "Lending-b1",
            "BookLent",
            r#"{"tags":["member:m1","book:b1"]}"#,
        ),
        ("Lending-b2", "BookLent", r#"{"user":{"tags":"none"}}"#),
        ("Lending-b3", "BookLent", r#"{"tags":[1]}"#),
        ("Lending-b1", "BookReturned", r#"{"tags":["book:b1"]}"#),
    ];
    for (position, (stream, event_type, metadata)) in (4i64..).zip(rows) {
        conn.execute(
            "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at) VALUES (?1, ?2, (SELECT COUNT(*) + 1 FROM events WHERE stream_id = ?2), ?3, ?4, 1, X'7B7D', ?5, 1700000000000000000)",
            rusqlite::params![
                position,
                stream,
                evoq::Uuid::now_v7().as_bytes().as_slice(),
                event_type,
                metadata.as_bytes()
            ],
        )
        .expect("insert a version 4 event");
    }
}

#[test]
fn a_version_4_file_is_migrated_with_the_tag_index_filled_from_the_stored_events() {
    let dir = TempDir::new("sqlite-v4");
    let path = dir.file("events.db");
    write_version_4_file(&path);
    runtime().block_on(async {
        let store = SqliteStore::open(&path)
            .await
            .expect("a version 4 file opens, whatever its metadata holds");
        assert_eq!(*store.head().borrow(), 7, "the head is the old file's");
        let positions = |page: evoq::store::AllPage| -> Vec<u64> {
            page.events.iter().map(|e| e.global_position).collect()
        };
        let book = store
            .read_query(&EventQuery::tag("book:b1"), 0, 10)
            .await
            .expect("read_query");
        assert_eq!(positions(book), [4, 7], "the old events' tags are indexed");
        let lends_of_m1 = EventQuery::types(["BookLent"]).and(EventQuery::tag("member:m1"));
        let lends = store
            .read_query(&lends_of_m1, 0, 10)
            .await
            .expect("read_query");
        assert_eq!(positions(lends), [4]);
        let untagged = store
            .read_query(&EventQuery::tag("none"), 0, 10)
            .await
            .expect("read_query");
        assert!(
            untagged.events.is_empty(),
            "a user entry named `tags` is no tag"
        );
        let refused = store
            .append_if(
                "Lending-b1",
                vec![tagged_event("BookLent", &["member:m1", "book:b1"])],
                &AppendCondition {
                    query: EventQuery::tag("book:b1"),
                    after: 4,
                },
                None,
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(StoreError::ConditionFailed { position: 7, .. })
            ),
            "an old event violates a condition: {refused:?}"
        );
        let appended = store
            .append_if(
                "Lending-b1",
                vec![tagged_event("BookLent", &["member:m1", "book:b1"])],
                &AppendCondition {
                    query: EventQuery::tag("book:b1"),
                    after: 7,
                },
                None,
            )
            .await
            .expect("a condition that holds after the old events");
        assert_eq!((appended.version, appended.first_position), (3, 8));
        // Version 6's column: a request marked failed keeps its reason.
        let failed = evoq::store::HandlerRequest {
            failed: Some("not a projection".to_owned()),
            ..evoq::store::HandlerRequest::new("notifier", evoq::store::RequestedAction::Rebuild)
        };
        store
            .save_request(failed.clone())
            .await
            .expect("save_request");
        assert_eq!(
            store
                .load_request("notifier", failed.id)
                .await
                .expect("load_request"),
            Some(failed)
        );
        assert!(
            store
                .list_requests("notifier", 10)
                .await
                .expect("list_requests")
                .is_empty()
        );
    });
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let version: i64 = conn
        .query_row("SELECT version FROM evoq_schema", [], |r| r.get(0))
        .expect("read the schema version");
    assert_eq!(version, 6, "the file is at the current schema version, 6");
    let rows: Vec<(String, i64)> = conn
        .prepare("SELECT tag, position FROM event_tags ORDER BY position, tag")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .expect("read the tag index");
    let rows: Vec<(&str, i64)> = rows.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    assert_eq!(
        rows,
        [
            ("book:b1", 4),
            ("member:m1", 4),
            ("book:b1", 7),
            ("book:b1", 8),
            ("member:m1", 8)
        ],
        "one row per tag of each event, none for an undecodable or untagged one"
    );
}

/// A new event of `event_type` carrying `tags`.
fn tagged_event(event_type: &str, tags: &[&str]) -> NewEvent {
    let mut event = event("Tagged", 0);
    event.event_type = event_type.to_owned().into();
    event.metadata.tags = tags.iter().copied().collect();
    event
}

#[test]
fn tags_and_conditions_hold_across_a_reopen() {
    let dir = TempDir::new("sqlite-tags-reopen");
    let path = dir.file("events.db");
    let lends_of_b1 = EventQuery::types(["BookLent"]).and(EventQuery::tag("book:b1"));
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .append(
                "Lending-b1",
                ExpectedVersion::NoStream,
                vec![tagged_event("BookLent", &["member:m1", "book:b1"])],
            )
            .await
            .expect("append");
        store
            .append_command(
                "Member-m2",
                ExpectedVersion::NoStream,
                vec![tagged_event("MemberJoined", &["member:m2"])],
                deposit("join-m2"),
            )
            .await
            .expect("append_command");
        store
            .append_if(
                "Lending-b2",
                vec![tagged_event("BookLent", &["member:m2", "book:b2"])],
                &AppendCondition {
                    query: EventQuery::tag("book:b2"),
                    after: 0,
                },
                None,
            )
            .await
            .expect("append_if");
        store.close().await.expect("close");
    });
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("reopen");
        let found = store
            .read_query(&lends_of_b1.clone().or(EventQuery::tag("member:m2")), 0, 10)
            .await
            .expect("read_query");
        let found: Vec<u64> = found.events.iter().map(|e| e.global_position).collect();
        assert_eq!(found, [1, 2, 3], "every path indexed its tags, durably");
        let refused = store
            .append_if(
                "Lending-b1",
                vec![tagged_event("BookLent", &["member:m3", "book:b1"])],
                &AppendCondition {
                    query: lends_of_b1.clone(),
                    after: 0,
                },
                None,
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(StoreError::ConditionFailed { position: 1, .. })
            ),
            "an event appended before the reopen violates the condition: {refused:?}"
        );
        let appended = store
            .append_if(
                "Lending-b1",
                vec![tagged_event("BookReturned", &["member:m1", "book:b1"])],
                &AppendCondition {
                    query: lends_of_b1,
                    after: 1,
                },
                None,
            )
            .await
            .expect("a condition that holds");
        assert_eq!((appended.version, appended.first_position), (2, 4));
    });
}

#[test]
fn a_corrupt_row_is_a_typed_error_naming_stream_and_version_and_affects_nothing_else() {
    let dir = TempDir::new("sqlite-corrupt");
    let path = dir.file("events.db");
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        for s in ["Good-1", "Bad-1"] {
            store
                .append(
                    s,
                    ExpectedVersion::NoStream,
                    (1..=3).map(|n| event(s, n)).collect(),
                )
                .await
                .expect("append");
        }
        drop(store);
    });
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute(
        "UPDATE events SET metadata = X'7B6E6F74206A736F6E' WHERE stream_id = 'Bad-1' AND version = 2",
        [],
    )
    .expect("corrupt the metadata of Bad-1 version 2");
    conn.execute(
        "UPDATE events SET event_id = X'00' WHERE stream_id = 'Bad-1' AND version = 3",
        [],
    )
    .expect("corrupt the id of Bad-1 version 3");
    drop(conn);
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("reopen");
        for (version, what) in [(2, "metadata"), (3, "id")] {
            let error = store
                .read_stream("Bad-1", version, Direction::Forward, 1)
                .await
                .expect_err("a corrupt row must not decode");
            match &error {
                StoreError::Integrity { location, reason } => {
                    assert!(
                        location.contains("`Bad-1`")
                            && location.contains(&format!("version {version}")),
                        "the error must name stream and version: {location}"
                    );
                    assert!(reason.contains(what), "{reason}");
                }
                other => panic!("expected an integrity error, got {other:?}"),
            }
        }
        let first = store
            .read_stream("Bad-1", 1, Direction::Forward, 1)
            .await
            .expect("the intact row of the same stream reads");
        assert_eq!(first.len(), 1);
        let good = store
            .read_stream("Good-1", 0, Direction::Forward, 10)
            .await
            .expect("another stream is not affected");
        assert_eq!(good.len(), 3);
        store
            .append(
                "Good-1",
                ExpectedVersion::Exact(3),
                vec![event("Good-1", 4)],
            )
            .await
            .expect("appends go on");
        store
            .append("Bad-1", ExpectedVersion::Exact(3), vec![event("Bad-1", 4)])
            .await
            .expect("appends to the damaged stream go on too");
    });
}

// ---------------------------------------------------------------------------------------------
// Crash safety
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "EVOQ_SQLITE_CRASH_CHILD";
const STREAMS: usize = 24;

/// The child side: appends continuously from many concurrent aggregates and prints an `ack`
/// line after each append returns. Does nothing unless started by the crash test.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    runtime().block_on(async move {
        let store = Arc::new(SqliteStore::open(&path).await.expect("child: open"));
        let mut tasks = Vec::new();
        for s in 0..STREAMS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let stream = format!("Crash-{s}");
                let mut version = store.stream_version(&stream).await.expect("child: version");
                loop {
                    let count = 1 + (version % 3);
                    let events = (1..=count).map(|i| event(&stream, version + i)).collect();
                    let appended = store
                        .append(&stream, ExpectedVersion::Exact(version), events)
                        .await
                        .expect("child: append");
                    version = appended.version;
                    let line = format!(
                        "ack {stream} {} {} {}\n",
                        appended.version, appended.first_position, appended.last_position
                    );
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).expect("child: stdout");
                    out.flush().expect("child: flush");
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

#[test]
fn acknowledged_appends_survive_sigkill_at_random_moments() {
    let dir = TempDir::new("sqlite-crash");
    let path = dir.file("events.db");
    let mut clock = KillClock::new();
    let started = Instant::now();
    // stream -> highest acknowledged version
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut total_acks = 0usize;
    let kills = 22;
    let path_text = path.display().to_string();
    for round in 0..kills {
        // Wait for the child to be appending, then kill it at a random moment.
        let after = clock.between(Duration::from_millis(60), Duration::from_millis(240));
        let lines = run_and_kill("crash_child", &[(CHILD_ENV, &path_text)], after);
        let acks: Vec<&String> = lines.iter().filter(|l| l.starts_with("ack ")).collect();
        for ack in &acks {
            let parts: Vec<&str> = ack.split(' ').collect();
            let version: u64 = parts[2].parse().expect("version");
            let slot = acked.entry(parts[1].to_owned()).or_default();
            *slot = (*slot).max(version);
        }
        total_acks += acks.len();
        verify(&path, &acked, round);
    }
    assert!(total_acks > 0, "the child never acknowledged an append");
    println!(
        "{kills} kills, {total_acks} acknowledged appends, {:?}",
        started.elapsed()
    );
}

/// Reopens the file and checks every acknowledged event, contiguous versions and positions, and
/// that every visible event is whole.
fn verify(path: &std::path::Path, acked: &HashMap<String, u64>, round: usize) {
    runtime().block_on(async {
        let store = SqliteStore::open(path)
            .await
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        let head = *store.head().borrow();
        let mut per_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut after = 0;
        let mut expected_position = 1;
        loop {
            let page = store
                .read_all(after, 10_000, &evoq::store::EventFilter::All)
                .await
                .unwrap_or_else(|e| panic!("round {round}: read_all: {e}"));
            for e in &page.events {
                assert_eq!(
                    e.global_position, expected_position,
                    "round {round}: positions must be contiguous"
                );
                expected_position += 1;
                let want = format!("{{\"stream\":\"{}\",\"n\":{}}}", e.stream_id, e.stream_version);
                assert_eq!(
                    e.data,
                    want.as_bytes(),
                    "round {round}: a partial or foreign event is visible at {}",
                    e.global_position
                );
                per_stream
                    .entry(e.stream_id().to_owned())
                    .or_default()
                    .push(e.stream_version);
            }
            if page.scanned_through >= head {
                break;
            }
            after = page.scanned_through;
        }
        assert_eq!(expected_position - 1, head, "round {round}: the head is the last event");
        for (stream, versions) in &per_stream {
            let contiguous: Vec<u64> = (1..=versions.len() as u64).collect();
            assert_eq!(versions, &contiguous, "round {round}: `{stream}` versions must be contiguous");
        }
        for (stream, version) in acked {
            let have = per_stream.get(stream).map_or(0, |v| v.len() as u64);
            assert!(
                have >= *version,
                "round {round}: `{stream}` was acknowledged at version {version} but holds {have} events after SIGKILL"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Failing safe: one store per file, clean close, foreign and read-only files, bounded memory
// ---------------------------------------------------------------------------------------------

const OPEN_CHILD_ENV: &str = "EVOQ_SQLITE_OPEN_CHILD";

/// The child side of the tests that open a file from another process: opens the store at the
/// path in `EVOQ_SQLITE_OPEN_CHILD` and prints one line, `open-child: ok <head>` or
/// `open-child: <variant>|<holder>|<message>`. Does nothing unless started by such a test.
#[test]
fn open_child() {
    let Ok(path) = std::env::var(OPEN_CHILD_ENV) else {
        return;
    };
    let line = runtime().block_on(async move {
        match SqliteStore::open(&path).await {
            Ok(store) => format!("ok {}", *store.head().borrow()),
            Err(error) => {
                let (variant, holder) = match &error {
                    StoreError::Locked { holder, .. } => ("Locked", holder.as_str()),
                    StoreError::ReadOnly { .. } => ("ReadOnly", ""),
                    StoreError::NotAnEventStore { .. } => ("NotAnEventStore", ""),
                    _ => ("Other", ""),
                };
                format!("{variant}|{holder}|{error}")
            }
        }
    });
    println!("open-child: {line}");
}

/// Runs the test `test` of this test binary in a child process with `env` set, as `user` if
/// given (a uid, also used as gid), waits for it, and returns what it printed after `prefix`
/// (the test harness may print its own words before it on the line).
fn run_child(test: &str, env: &[(&str, &str)], user: Option<u32>, prefix: &str) -> String {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([
            "--exact",
            test,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::null());
    if let Some(id) = user {
        command.uid(id).gid(id);
    }
    let output = command.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    stdout
        .lines()
        .find_map(|line| {
            line.find(prefix)
                .map(|at| line[at + prefix.len()..].to_owned())
        })
        .unwrap_or_else(|| panic!("the child printed no `{prefix}` line: {stdout}"))
}

#[test]
fn a_second_process_is_refused_at_open_while_the_first_keeps_writing() {
    let dir = TempDir::new("sqlite-second-process");
    let path = dir.file("events.db");
    let path_text = path.display().to_string();
    runtime().block_on(async {
        let store = Arc::new(SqliteStore::open(&path).await.expect("open"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut version = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    store
                        .append(
                            "Holder-1",
                            ExpectedVersion::Exact(version),
                            vec![event("Holder-1", version + 1)],
                        )
                        .await
                        .expect("the holder keeps writing while the second process tries");
                    version += 1;
                }
                version
            })
        };
        let line = tokio::task::spawn_blocking(move || {
            run_child(
                "open_child",
                &[(OPEN_CHILD_ENV, &path_text)],
                None,
                "open-child: ",
            )
        })
        .await
        .expect("the child ran");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let written = writer.await.expect("the writer task");
        let parts: Vec<&str> = line.splitn(3, '|').collect();
        assert_eq!(
            parts[0], "Locked",
            "the second process must be refused: {line}"
        );
        assert!(
            parts[1].contains(&format!("process {}", std::process::id())),
            "the error names the holder's process id: {line}"
        );
        assert!(
            parts[2].contains("events.db") && parts[2].contains("already open"),
            "the message names the file and what is wrong: {line}"
        );
        assert!(
            written > 0,
            "the holder wrote while the second process tried"
        );
        let appended = store
            .append(
                "Holder-1",
                ExpectedVersion::Exact(written),
                vec![event("Holder-1", written + 1)],
            )
            .await
            .expect("the holder goes on writing after the refusal");
        assert_eq!(appended.version, written + 1);
        let events = store
            .read_stream("Holder-1", 1, Direction::Forward, usize::MAX)
            .await
            .expect("read");
        assert_eq!(
            events.len() as u64,
            written + 1,
            "every event of the holder is there"
        );
        assert_eq!(
            *store.head().borrow(),
            written + 1,
            "nothing else was written"
        );
    });
}

#[test]
fn a_second_open_in_the_same_process_shares_the_open_store_and_never_makes_a_second_writer() {
    let dir = TempDir::new("sqlite-second-store");
    let path = dir.file("events.db");
    runtime().block_on(async {
        let first = SqliteStore::open(&path).await.expect("open");
        first
            .append("A-1", ExpectedVersion::NoStream, vec![event("A-1", 1)])
            .await
            .expect("append");
        // Through another spelling of the same file, too.
        let again = dir.path().join(".").join("events.db");
        let second = SqliteStore::open_with(&again, SqliteOptions::default().stream_cache(0))
            .await
            .expect("a second open of an open file gives a handle on its store");
        let appended = second
            .append("A-1", ExpectedVersion::Exact(1), vec![event("A-1", 2)])
            .await
            .expect("the second handle appends after the first's event");
        assert_eq!((appended.version, appended.last_position), (2, 2));
        let stale = first
            .append("A-1", ExpectedVersion::Exact(1), vec![event("A-1", 0)])
            .await;
        assert!(
            matches!(
                stale,
                Err(StoreError::WrongExpectedVersion { actual: 2, .. })
            ),
            "one writer sees both handles' appends: {stale:?}"
        );
        second.close().await.expect("close");
        assert!(
            matches!(
                first.stream_version("A-1").await,
                Err(StoreError::Closed { .. })
            ),
            "closing one handle closes the store they share"
        );
        let third = SqliteStore::open(&path)
            .await
            .expect("a closed store's file opens as a new store");
        assert_eq!(third.stream_version("A-1").await.expect("version"), 2);
        drop((first, second));
        assert_eq!(
            third
                .append("A-1", ExpectedVersion::Exact(2), vec![event("A-1", 3)])
                .await
                .expect("the new store is not closed by the old handles going")
                .version,
            3
        );
    });
}

#[test]
fn after_the_holder_is_killed_with_sigkill_a_new_process_opens_the_file() {
    use std::io::BufRead;
    let dir = TempDir::new("sqlite-sigkill-holder");
    let path = dir.file("events.db");
    let path_text = path.display().to_string();
    let mut child = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "crash_child",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path_text)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the holder");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("the holder's stdout"));
    let mut acked: HashMap<String, u64> = HashMap::new();
    let record = |line: &str, acked: &mut HashMap<String, u64>| {
        let parts: Vec<&str> = line.split(' ').collect();
        if parts.len() == 5 && parts[0] == "ack" {
            let version = parts[2].parse().expect("a version");
            let slot = acked.entry(parts[1].to_owned()).or_default();
            *slot = (*slot).max(version);
        }
    };
    let mut line = String::new();
    while acked.values().sum::<u64>() < 50 {
        line.clear();
        let read = lines
            .read_line(&mut line)
            .expect("read the holder's output");
        assert!(read > 0, "the holder stopped before it appended");
        record(line.trim_end(), &mut acked);
    }
    // While the holder lives, the file is refused, naming it.
    runtime().block_on(async {
        match SqliteStore::open(&path).await {
            Err(StoreError::Locked { holder, .. }) => assert!(
                holder.contains(&format!("process {}", child.id())),
                "the holder is the child: {holder}"
            ),
            other => panic!("the file must be refused while the holder lives: {other:?}"),
        }
    });
    child.kill().expect("SIGKILL the holder");
    child.wait().expect("the holder is gone");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut lines, &mut rest);
    for line in rest.lines() {
        record(line, &mut acked);
    }
    // A new process opens it: the dead holder's lock went with it.
    let opened = run_child(
        "open_child",
        &[(OPEN_CHILD_ENV, &path_text)],
        None,
        "open-child: ",
    );
    let head: u64 = opened
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("a new process must open the file: {opened}"))
        .parse()
        .expect("the head");
    assert!(head > 0, "the new process sees the holder's events");
    verify(&path, &acked, 0);
}

/// The number of bytes of the file at `path`, 0 when there is none.
fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// `path` with `suffix` appended (`events.db` and `-wal`: `events.db-wal`).
fn side_file(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Copies the database file alone (no `-wal`, no `-shm`) into a new directory and returns its
/// head and the number of events of `stream` there.
fn copy_alone_and_count(path: &std::path::Path, stream: &str) -> (u64, usize) {
    let elsewhere = TempDir::new("sqlite-copy");
    let copy = elsewhere.file("copy.db");
    std::fs::copy(path, &copy).expect("copy the database file");
    let conn = rusqlite::Connection::open(&copy).expect("open the copy");
    let head: i64 = conn
        .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
            r.get(0)
        })
        .expect("the copy's head");
    let count: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE stream_id = ?1",
            [stream],
            |r| r.get(0),
        )
        .expect("count the copy's events");
    (head as u64, count as usize)
}

#[test]
fn after_close_a_copy_of_the_database_file_alone_holds_every_event() {
    let dir = TempDir::new("sqlite-close");
    let path = dir.file("events.db");
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        let other = store.clone();
        let mut tasks = Vec::new();
        for s in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let stream = format!("Backup-{s}");
                for n in 0..50u64 {
                    store
                        .append(
                            &stream,
                            ExpectedVersion::Exact(n),
                            vec![event(&stream, n + 1)],
                        )
                        .await
                        .expect("append");
                }
            }));
        }
        for task in tasks {
            task.await.expect("appender");
        }
        store.save_checkpoint("h", 400).await.expect("checkpoint");
        assert!(
            file_len(&side_file(&path, "-wal")) > 0,
            "while open, recent events live in the WAL"
        );
        store.close().await.expect("close");
        store.close().await.expect("closing twice is fine");
        assert!(
            matches!(
                other
                    .append(
                        "Backup-0",
                        ExpectedVersion::Exact(50),
                        vec![event("Backup-0", 51)]
                    )
                    .await,
                Err(StoreError::Closed { .. })
            ),
            "every handle of a closed store refuses writes"
        );
        assert!(
            matches!(
                other.stream_version("Backup-0").await,
                Err(StoreError::Closed { .. })
            ),
            "and reads"
        );
    });
    assert_eq!(
        file_len(&side_file(&path, "-wal")),
        0,
        "no WAL content is left after close"
    );
    assert_eq!(copy_alone_and_count(&path, "Backup-7"), (400, 50));
    let elsewhere = TempDir::new("sqlite-copy-open");
    let copy = elsewhere.file("events.db");
    std::fs::copy(&path, &copy).expect("copy");
    runtime().block_on(async {
        let store = SqliteStore::open(&copy)
            .await
            .expect("the copy opens as a store");
        assert_eq!(*store.head().borrow(), 400);
        assert_eq!(store.load_checkpoint("h").await.expect("load"), Some(400));
        drop(store);
        let reopened = SqliteStore::open(&path)
            .await
            .expect("the closed store's file opens again: its lock was released");
        assert_eq!(
            reopened.stream_version("Backup-3").await.expect("version"),
            50
        );
    });
}

#[test]
fn after_a_runtime_stops_and_is_dropped_the_database_file_alone_holds_every_event() {
    use evoq_tests::bank::{Deposit, OpenAccount};
    let dir = TempDir::new("sqlite-stop");
    let path = dir.file("events.db");
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        let app = evoq::Evoq::builder()
            .store(store)
            .start()
            .await
            .expect("start");
        app.dispatch(OpenAccount {
            account: "acct-1".into(),
            initial_balance: 0,
        })
        .await
        .expect("open the account");
        for _ in 0..99 {
            app.dispatch(Deposit {
                account: "acct-1".into(),
                amount: 1,
            })
            .await
            .expect("deposit");
        }
        app.stop().await;
        drop(app);
    });
    assert_eq!(
        file_len(&side_file(&path, "-wal")),
        0,
        "no WAL content is left once the runtime's last handle on its store is gone"
    );
    let stream = evoq::stream_id("BankAccount", "acct-1");
    assert_eq!(copy_alone_and_count(&path, &stream), (100, 100));
}

/// The bytes of `path`.
fn bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).expect("read the file")
}

#[test]
fn another_applications_database_is_refused_and_left_byte_identical_in_its_journal_mode() {
    let dir = TempDir::new("sqlite-foreign");
    let path = dir.file("crm.db");
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO customers (name) VALUES ('Ada'), ('Grace');",
    )
    .expect("another application's tables");
    drop(conn);
    let before = bytes(&path);
    runtime().block_on(async {
        let error = SqliteStore::open(&path)
            .await
            .expect_err("a foreign database must be refused");
        match &error {
            StoreError::NotAnEventStore {
                location, found, ..
            } => {
                assert!(location.contains("crm.db"), "{location}");
                assert!(
                    found.contains("`customers`"),
                    "it says what it found: {found}"
                );
            }
            other => panic!("expected StoreError::NotAnEventStore, got {other:?}"),
        }
        assert!(
            error.to_string().contains("nothing in it was changed"),
            "{error}"
        );
    });
    assert_eq!(bytes(&path), before, "the file is byte for byte as it was");
    assert!(
        !side_file(&path, "-wal").exists() && !side_file(&path, "-shm").exists(),
        "no WAL was started on it"
    );
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "delete", "its journal mode is unchanged");
    drop(conn);

    // Not a database at all: refused the same way, untouched.
    let text = dir.file("notes.txt");
    std::fs::write(
        &text,
        b"these are not the events you are looking for\n".repeat(200),
    )
    .expect("write a text file");
    let before = bytes(&text);
    runtime().block_on(async {
        let error = SqliteStore::open(&text)
            .await
            .expect_err("a file that is no database must be refused");
        assert!(
            matches!(error, StoreError::NotAnEventStore { .. }),
            "{error:?}"
        );
    });
    assert_eq!(bytes(&text), before, "the text file is unchanged");
}

#[test]
fn a_read_only_database_file_is_refused_at_open_naming_the_file() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = TempDir::new("sqlite-read-only");
    let path = dir.file("events.db");
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .append("A-1", ExpectedVersion::NoStream, vec![event("A-1", 1)])
            .await
            .expect("append");
    });
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))
        .expect("make the file read-only");
    let before = bytes(&path);
    // Root writes any file whatever its permissions: the child then runs as `nobody`.
    let root = std::fs::metadata(dir.path()).expect("the directory").uid() == 0;
    let path_text = path.display().to_string();
    let line = run_child(
        "open_child",
        &[(OPEN_CHILD_ENV, &path_text)],
        root.then_some(65534),
        "open-child: ",
    );
    let parts: Vec<&str> = line.splitn(3, '|').collect();
    assert_eq!(
        parts[0], "ReadOnly",
        "a read-only file must be refused at open: {line}"
    );
    assert!(
        parts[2].contains("events.db") && parts[2].contains("writable"),
        "the message names the file and says it must be writable: {line}"
    );
    assert_eq!(bytes(&path), before, "the file is unchanged");
}

#[test]
fn appends_to_more_streams_than_the_stream_cache_holds_keep_versions_and_detect_conflicts() {
    let dir = TempDir::new("sqlite-stream-cache");
    let path = dir.file("events.db");
    const STREAMS: u64 = 40;
    runtime().block_on(async {
        let store = Arc::new(
            SqliteStore::open_with(&path, SqliteOptions::default().stream_cache(4))
                .await
                .expect("open"),
        );
        for round in 0..3u64 {
            // Concurrently, so that the writer commits many streams in one group.
            let mut tasks = Vec::new();
            for s in 0..STREAMS {
                let store = Arc::clone(&store);
                tasks.push(tokio::spawn(async move {
                    let stream = format!("Cache-{s}");
                    let appended = store
                        .append(
                            &stream,
                            ExpectedVersion::Exact(round * 2),
                            vec![event(&stream, round * 2 + 1), event(&stream, round * 2 + 2)],
                        )
                        .await
                        .unwrap_or_else(|e| panic!("round {round}: `{stream}`: {e}"));
                    assert_eq!(appended.version, round * 2 + 2, "`{stream}`");
                    // A stale writer of the same stream, while the other streams' appends fill
                    // the writer's groups.
                    let stale = store
                        .append(
                            &stream,
                            ExpectedVersion::Exact(round * 2),
                            vec![event(&stream, 0)],
                        )
                        .await;
                    match stale {
                        Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                            assert_eq!(
                                actual,
                                round * 2 + 2,
                                "`{stream}`: the conflict names the version"
                            );
                        }
                        other => panic!(
                            "round {round}: `{stream}`: a stale append must conflict: {other:?}"
                        ),
                    }
                    let fresh = store
                        .append(&stream, ExpectedVersion::NoStream, vec![event(&stream, 0)])
                        .await;
                    assert!(
                        matches!(fresh, Err(StoreError::WrongExpectedVersion { .. })),
                        "round {round}: `{stream}` exists: {fresh:?}"
                    );
                }));
            }
            for task in tasks {
                task.await.expect("an appender failed");
            }
        }
        // One at a time, so that every stream has long left the cache before its next append.
        for s in 0..STREAMS {
            let stream = format!("Cache-{s}");
            let conflict = store
                .append(&stream, ExpectedVersion::Exact(5), vec![event(&stream, 0)])
                .await;
            assert!(
                matches!(
                    conflict,
                    Err(StoreError::WrongExpectedVersion { actual: 6, .. })
                ),
                "`{stream}`: {conflict:?}"
            );
            let appended = store
                .append(&stream, ExpectedVersion::Exact(6), vec![event(&stream, 7)])
                .await
                .expect("append after eviction");
            assert_eq!(appended.version, 7);
        }
        assert_eq!(
            *store.head().borrow(),
            STREAMS * 7,
            "no event was lost or doubled"
        );
        for s in 0..STREAMS {
            let stream = format!("Cache-{s}");
            let versions: Vec<u64> = store
                .read_stream(&stream, 1, Direction::Forward, usize::MAX)
                .await
                .expect("read")
                .iter()
                .map(|e| e.stream_version)
                .collect();
            assert_eq!(versions, (1..=7).collect::<Vec<_>>(), "`{stream}`");
        }
    });
}

#[test]
fn a_failed_write_says_the_backend_once_and_keeps_its_cause() {
    let dir = TempDir::new("sqlite-error-text");
    let path = dir.file("events.db");
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .append("A-1", ExpectedVersion::NoStream, vec![event("A-1", 1)])
            .await
            .expect("append");
        // Another connection takes the next position behind the writer's back.
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute(
            "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at) VALUES (2, 'Foreign', 1, X'00', 'T', 1, X'', X'7B7D', 0)",
            [],
        )
        .expect("insert a row at the next position");
        drop(conn);
        let error = store
            .append("B-1", ExpectedVersion::NoStream, vec![event("B-1", 1)])
            .await
            .expect_err("the append collides with the foreign row");
        let text = error.to_string();
        assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
        assert_eq!(
            text.matches("event store backend `sqlite` failed").count(),
            1,
            "one prefix: {text}"
        );
        assert!(
            text.contains("UNIQUE constraint failed") && text.contains("events.db"),
            "the cause and the file are kept: {text}"
        );
    });
}

#[test]
fn after_stop_with_the_store_still_open_a_copy_of_the_database_file_alone_holds_every_event() {
    use evoq_tests::bank::{Deposit, OpenAccount};
    let dir = TempDir::new("sqlite-stop-open");
    let path = dir.file("events.db");
    runtime().block_on(async {
        let store = SqliteStore::open(&path).await.expect("open");
        let app = evoq::Evoq::builder()
            .store(store.clone())
            .start()
            .await
            .expect("start");
        app.dispatch(OpenAccount {
            account: "acct-2".into(),
            initial_balance: 0,
        })
        .await
        .expect("open the account");
        for _ in 0..49 {
            app.dispatch(Deposit {
                account: "acct-2".into(),
                amount: 1,
            })
            .await
            .expect("deposit");
        }
        app.stop().await;
        // The runtime and the store are still there (the application goes on reading it).
        assert_eq!(
            file_len(&side_file(&path, "-wal")),
            0,
            "stop checkpointed the WAL into the database file"
        );
        let stream = evoq::stream_id("BankAccount", "acct-2");
        assert_eq!(copy_alone_and_count(&path, &stream), (50, 50));
        assert_eq!(store.stream_version(&stream).await.expect("still open"), 50);
        drop(app);
    });
}

/// One append of each round of 40 that a trigger refuses (`RAISE(ABORT)`, `RAISE(FAIL)` or
/// `RAISE(ROLLBACK)`, which ends the whole transaction), among keyed appends and checkpoint
/// saves sent at once, so that they share group commits: the refused append fails alone with
/// `Unstorable` in the trigger's words, and every other write commits.
#[test]
fn an_append_a_trigger_refuses_fails_alone_and_every_other_write_of_its_group_commits() {
    for raise in ["ABORT", "FAIL", "ROLLBACK"] {
        let dir = TempDir::new("sqlite-refused");
        let path = dir.file("events.db");
        runtime().block_on(async {
            let store: Arc<dyn EventStore> =
                Arc::new(SqliteStore::open(&path).await.expect("open"));
            // An operator's trigger, added beside the running store.
            rusqlite::Connection::open(&path)
                .expect("raw open")
                .execute_batch(&format!(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON events \
                     WHEN NEW.stream_id LIKE 'Poison-%' \
                     BEGIN SELECT RAISE({raise}, 'operator says no'); END;"
                ))
                .expect("the trigger is added");
            for round in 0..5 {
                let writes: Vec<_> = (0..40)
                    .map(|n| {
                        let store = Arc::clone(&store);
                        let stream = match n {
                            17 => format!("Poison-{round}"),
                            _ => format!("Account-{round}-{n}"),
                        };
                        tokio::spawn(async move {
                            let events = vec![event(&stream, 1)];
                            let result = match n % 4 {
                                0 => store.save_checkpoint(&stream, 1).await.map(|()| None),
                                1 => store
                                    .append_command(
                                        &stream,
                                        ExpectedVersion::NoStream,
                                        events,
                                        deposit(&format!("key-{stream}")),
                                    )
                                    .await
                                    .map(Some),
                                _ => store
                                    .append(&stream, ExpectedVersion::NoStream, events)
                                    .await
                                    .map(Some),
                            };
                            (stream, result)
                        })
                    })
                    .collect();
                for write in writes {
                    let (stream, result) = write.await.expect("no panic");
                    if !stream.starts_with("Poison") {
                        result.unwrap_or_else(|e| panic!("{raise}: `{stream}` failed: {e}"));
                        continue;
                    }
                    let error = result.expect_err("the refused append fails");
                    assert!(
                        matches!(
                            &error,
                            StoreError::Unstorable {
                                what: "events of the stream",
                                ..
                            }
                        ),
                        "{raise}: {error:?}"
                    );
                    let message = error.to_string();
                    assert!(message.contains("operator says no"), "{message}");
                    assert!(message.contains(&stream), "names the stream: {message}");
                    assert_eq!(
                        evoq::Error::Store(error).kind(),
                        evoq::ErrorKind::InvalidInput
                    );
                }
            }
            // Ten checkpoints in each round, the rest appends: every append but the refused ones.
            let counts = store.count_events().await.expect("count");
            assert_eq!(counts.events, 5 * 29, "{raise}");
            assert_eq!(store.stream_version("Poison-0").await.unwrap(), 0);
            assert_eq!(
                store.load_checkpoint("Account-4-0").await.unwrap(),
                Some(1),
                "{raise}"
            );
        });
    }
}

/// Leaves `path`, an evoq store with committed events, as a process killed in the middle of a
/// write in SQLite's rollback mode leaves it: part of the write in the file, the pages it
/// replaced in a hot `-journal` beside it. Returns the store's head.
fn leave_a_hot_journal(path: &std::path::Path) -> u64 {
    runtime().block_on(async {
        let store = SqliteStore::open(path).await.expect("open");
        for n in 1..=3 {
            store
                .append("Counter-a", ExpectedVersion::Any, vec![event("a", n)])
                .await
                .expect("append");
        }
        store.close().await.expect("close");
    });
    // The write, copied while it is half-done: a cache of a few pages makes SQLite write
    // changed pages to the file before the commit, their old contents saved in the journal.
    let work = TempDir::new("sqlite-hot-journal-work");
    let scratch = work.file("scratch.db");
    std::fs::copy(path, &scratch).expect("copy the store");
    let conn = rusqlite::Connection::open(&scratch).expect("raw open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .expect("rollback mode");
    assert_eq!(mode, "delete");
    conn.execute_batch("PRAGMA cache_size = 2; BEGIN IMMEDIATE;")
        .expect("begin");
    for n in 0..400 {
        conn.execute(
            "INSERT INTO saga_state (saga, instance, state) VALUES ('s', ?1, zeroblob(2000))",
            [n.to_string()],
        )
        .expect("a write that spills");
    }
    assert!(
        file_len(&side_file(&scratch, "-journal")) > 0,
        "the write has a journal"
    );
    std::fs::copy(&scratch, path).expect("the half-done file");
    std::fs::copy(side_file(&scratch, "-journal"), side_file(path, "-journal"))
        .expect("its journal");
    conn.execute_batch("ROLLBACK").expect("rollback");
    3
}

#[test]
fn a_file_left_with_a_hot_journal_opens_with_every_committed_event_and_nothing_of_the_half_done_write()
 {
    let dir = TempDir::new("sqlite-hot-journal");
    let path = dir.file("events.db");
    let head = leave_a_hot_journal(&path);
    // The inspector reads only: it says what to do instead of failing on a read.
    runtime().block_on(async {
        match SqliteStore::open_for_inspection(&path).await {
            Err(error) => assert!(
                error.to_string().contains("-journal")
                    && error.to_string().contains("open the store once"),
                "{error}"
            ),
            Ok(_) => panic!("an inspection cannot roll the journal back"),
        }
    });
    runtime().block_on(async {
        let store = SqliteStore::open(&path)
            .await
            .expect("a file a killed writer left opens");
        assert_eq!(*store.head().borrow(), head);
        assert_eq!(store.stream_version("Counter-a").await.unwrap(), 3);
        assert_eq!(
            store.load_saga_state("s", "0").await.unwrap(),
            None,
            "the half-done write is rolled back"
        );
        store
            .append("Counter-a", ExpectedVersion::Exact(3), vec![event("a", 4)])
            .await
            .expect("the store writes on");
        store.close().await.expect("close");
    });
    assert_eq!(file_len(&side_file(&path, "-journal")), 0);
    runtime().block_on(async {
        SqliteStore::open_for_inspection(&path)
            .await
            .expect("inspected after the application opened it");
    });
}

#[test]
fn a_process_killed_during_the_first_open_of_a_new_file_leaves_a_file_that_opens() {
    let dir = TempDir::new("sqlite-first-open-kill");
    let mut clock = KillClock::new();
    for round in 0..30 {
        let path = dir.file(&format!("events-{round}.db"));
        let path_text = path.display().to_string();
        run_and_kill(
            "open_child",
            &[(OPEN_CHILD_ENV, &path_text)],
            clock.between(Duration::from_millis(1), Duration::from_millis(40)),
        );
        runtime().block_on(async {
            let store = SqliteStore::open(&path).await.unwrap_or_else(|error| {
                panic!("round {round}: the file a killed first open left must open: {error}")
            });
            store
                .append("Counter-a", ExpectedVersion::NoStream, vec![event("a", 1)])
                .await
                .unwrap_or_else(|error| panic!("round {round}: {error}"));
            store.close().await.expect("close");
        });
    }
}

/// Opens `path` and returns the error, which must be [`StoreError::InvalidLocation`] whose
/// message contains `says`.
fn refused_location(path: &std::path::Path, says: &str) -> String {
    let error = runtime().block_on(async {
        SqliteStore::open(path)
            .await
            .map(|_| ())
            .expect_err("the path must be refused")
    });
    match &error {
        StoreError::InvalidLocation { reason, .. } => {
            assert!(reason.contains(says), "the reason says {says:?}: {reason}");
        }
        other => panic!("expected StoreError::InvalidLocation for {path:?}, got {other:?}"),
    }
    error.to_string()
}

#[test]
fn a_path_that_cannot_hold_a_database_file_is_refused_with_what_to_give_instead() {
    let dir = TempDir::new("sqlite-location");
    let cwd = std::env::current_dir().expect("the working directory");
    let left_in_cwd = |name: &str| cwd.join(name).exists();

    let empty = refused_location(std::path::Path::new(""), "empty");
    assert!(empty.contains("give the path of a file"), "{empty}");
    assert!(
        !left_in_cwd("-lock"),
        "nothing is created for an empty path"
    );

    let memory = refused_location(std::path::Path::new(":memory:"), "InMemoryStore");
    assert!(memory.contains("`:memory:`"), "it names the path: {memory}");
    let lock = cwd.join(":memory:-lock");
    let created = lock.exists();
    let _ = std::fs::remove_file(&lock);
    assert!(!created, "nothing is created for `:memory:`");
    refused_location(std::path::Path::new("file:events.db?mode=memory"), "URI");

    let missing = dir.path().join("no-such-dir").join("events.db");
    let message = refused_location(&missing, "does not exist");
    assert!(
        message.contains("no-such-dir") && message.contains("create it"),
        "it names the directory and says to create it: {message}"
    );
    assert!(
        !dir.path().join("no-such-dir").exists(),
        "the directory is not created"
    );

    let message = refused_location(dir.path(), "is a directory");
    assert!(
        message.contains("events.db"),
        "it suggests a file in it: {message}"
    );

    let file = dir.file("plain.txt");
    std::fs::write(&file, b"not a directory").expect("write a file");
    refused_location(&file.join("events.db"), "not a directory");
    assert_eq!(
        std::fs::read(&file).expect("read"),
        b"not a directory",
        "the file in the way is unchanged"
    );

    // The error is a configuration mistake: dispatches never meet it, a builder's open does.
    let error = evoq::Error::from(StoreError::InvalidLocation {
        backend: "sqlite",
        location: "``".into(),
        reason: "the path is empty".into(),
    });
    assert_eq!(error.kind(), evoq::ErrorKind::Config);
}
