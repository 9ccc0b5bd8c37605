//! The SQLite event store (feature `sqlite`): the durable embedded store, one database file on
//! local disk, inspectable with `sqlite3`.
//!
//! # How it works
//!
//! - **One file, WAL mode.** Readers never block the writer and the writer never blocks
//!   readers. The schema is versioned (table `evoq_schema`): it is created on the first open and
//!   migrated on later opens; a file written by a newer evoq is refused with
//!   [`StoreError::SchemaTooNew`] and left untouched.
//! - **Group commit.** Every write (appends, snapshots, checkpoints, dead letters, saga state
//!   and timeouts, command-log sweeps) goes to one writer thread that owns the only writing
//!   connection. It takes every write that is waiting (up to [`SqliteOptions::max_batch`]) and
//!   commits them in **one** transaction, so concurrent appends to many aggregates share one
//!   `fsync`. Each append is acknowledged (its future completes) only after that transaction
//!   has committed; if the batch fails, each of its writes is tried again alone, so one bad
//!   write fails no other. An append whose data SQLite refuses (a CHECK or NOT NULL constraint,
//!   a trigger's `RAISE`, say, that an operator added) then fails by itself with
//!   [`StoreError::Unstorable`], in SQLite's words; a busy database or an I/O error is
//!   [`StoreError::Backend`].
//! - **Checkpoints every 4,000 WAL pages.** The writer's connection moves the WAL's pages into
//!   the database file once the WAL holds 4,000 pages (16 MB of 4 KB pages), where SQLite's
//!   default is 1,000: a checkpoint runs inside the commit that passes the mark and holds up
//!   the appends waiting for the next one, and a page that several commits rewrote (an index
//!   page of a busy stream) is copied once per checkpoint, so fewer, larger checkpoints copy
//!   less. The `-wal` file stays under about 16 MB plus one batch.
//! - **Durability** ([`Durability`]): by default `synchronous=FULL`: an acknowledged append
//!   survives a process crash *and* a power loss or OS crash. [`Durability::Normal`] keeps
//!   every acknowledged append through a process crash but may lose the last ones on a power
//!   loss, for more throughput.
//! - **Off the async runtime.** The writer is a thread of its own; reads run on a small pool of
//!   reader connections through `tokio::task::spawn_blocking`.
//! - **Command log.** The entry of an
//!   [`append_command`](crate::store::EventStore::append_command) is written by the writer in
//!   the transaction of its events, after the check for an earlier run, which sees every entry
//!   written before it, those of the same batch included: one run of a command wins.
//! - **Positions** are dense from 1, in commit order; an append's events take consecutive
//!   positions and versions. The head watch moves after the commit.
//! - **Tags** (table `event_tags`, see `sqlite/tags.rs`): each tag of an event is a row of the
//!   tag index, written with the event (an untagged event writes none).
//!   [`read_query`](crate::store::EventStore::read_query) reads the index, and
//!   [`append_if`](crate::store::EventStore::append_if) checks its condition on it in the
//!   writer's transaction, after the command's check and before the insert, so no append comes
//!   between the two; a failed condition writes nothing and fails no other write of the batch.
//! - **Saga timeouts** (table `timeouts`) keep their due time in microseconds since the Unix
//!   epoch, negative before it. A due time more than about 292,000 years from 1970 is clamped to
//!   that range, never refused (see `time_to_micros` in `store/codec.rs`): it is due, or not,
//!   for every `now` inside the range as it would have been.
//! - **One store per file.** Opening takes an exclusive lock on the file `<file>-lock` beside
//!   the database (an OS advisory lock, `flock`, which the OS drops when the process ends, even
//!   by `kill -9`, so a dead holder never blocks the next start) and writes its process id into
//!   it. Another process opening the file is refused at open with [`StoreError::Locked`] naming
//!   the file and the holder; use PostgreSQL for several processes or nodes. Within one process,
//!   opening a file again while its store is open gives a handle on that store (as a clone
//!   does), never a second writer. The `-lock` file stays beside the database after a close; it
//!   holds nothing but that id.
//! - **Other connections of the application.** A part of the same application that keeps its
//!   own tables in the file (a SQL read model) opens its connections through the store
//!   (`SqliteStore::connector`, crate-internal): they are configured as the store's, do not take
//!   the lock, and never write the store's own tables, whose only writer is the writer thread.
//! - **Looked at before it is touched.** Before anything is written to an existing file, it is
//!   checked read-only: a file this process cannot write is refused with
//!   [`StoreError::ReadOnly`], one with tables of another application (or no database at all)
//!   with [`StoreError::NotAnEventStore`], one of a newer evoq with
//!   [`StoreError::SchemaTooNew`]; each is left byte for byte as it was, in its journal mode.
//!   Only a new, empty or evoq file is switched to WAL. A path that names no file (empty,
//!   `:memory:`, a `file:` URI, a directory, a file in a directory that does not exist) is
//!   refused with [`StoreError::InvalidLocation`], creating nothing.
//! - **Closing** ([`SqliteStore::close`], or dropping the last handle) commits the writes still
//!   waiting, checkpoints the WAL into the database file (`wal_checkpoint(TRUNCATE)`), closes the
//!   connections and releases the lock: the database file alone then holds every event, so a
//!   byte copy of it is a complete backup.
//! - **Stream versions.** The writer keeps the versions of the streams it wrote last (at most
//!   [`SqliteOptions::stream_cache`], 100,000 by default, about 11 MB); another stream's version
//!   is read from the file inside the writer's transaction. Its memory stays bounded however many
//!   streams the file holds.
//!
//! ```no_run
//! # async fn demo() -> Result<(), evoq_runtime::StoreError> {
//! use evoq_runtime::store::sqlite::{SqliteOptions, SqliteStore};
//!
//! let store = SqliteStore::open("events.db").await?;
//! let faster = SqliteStore::open_with(
//!     "other.db",
//!     SqliteOptions::default().durability(evoq_runtime::store::sqlite::Durability::Normal),
//! )
//! .await?;
//! # let _ = (store, faster);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::store::codec::prefix_end;
use crate::store::codec::{
    all_page, column_text, decode_failure_kind, decode_metadata, decode_raw_row, decode_request,
    encode_metadata, encode_raw_row, from_db, micros_to_time, nanos_to_time, shared_stream_id,
    time_to_micros, time_to_nanos, to_db, undecodable, undecodable_reason,
};
use crate::store::{
    AllPage, AppendCondition, Appended, CommandLookup, CommandRecord, DeadLetter, Direction,
    EventFilter, EventQuery, EventStore, ExpectedVersion, HandlerRequest, NewCommand, Snapshot,
    SnapshotAndEvents, StoreError, StoredRow, Timeout, UndecodableRow,
};
use crate::store::{EventCounts, StreamInfo};
use crate::util::backoff::exponential;
use crate::util::hash::StreamHasher;

mod tags;

use tags::{SCHEMA_V5, index_stored_tags, insert_tags, matching_positions};

const BACKEND: &str = "sqlite";

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 6;

/// How often the head watch of a store opened for inspection reads the file's head.
const INSPECTION_POLL: Duration = Duration::from_millis(200);

/// The WAL's size, in pages, at which the writer's commit checkpoints it into the database file
/// (SQLite's default is 1,000). A checkpoint holds up every append waiting for the next commit,
/// and copies each page once however many commits rewrote it since the last one: at 1,024
/// appends in flight to as many streams, most pages of a commit are index pages rewritten by
/// the next commits, and checkpoints four times rarer made the writer 1.2x faster.
const WAL_CHECKPOINT_PAGES: u32 = 4_000;

/// The first pause before a flush tries again a checkpoint another connection kept busy; it
/// doubles up to [`CHECKPOINT_RETRY_MAX`].
const CHECKPOINT_RETRY: Duration = Duration::from_millis(1);
/// The longest pause between two tries of a busy checkpoint.
const CHECKPOINT_RETRY_MAX: Duration = Duration::from_millis(20);

/// The schema, version 1.
const SCHEMA_V1: &str = "
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

/// The schema's step from version 1 to 2: the command log. `recorded_at` is in nanoseconds since
/// the Unix epoch, like the events'; a command that appended nothing has positions 0. There is
/// no index on `recorded_at`: the sweep walks the rows in insertion order and stops after its
/// batch, so every append pays only for the id index (and the key index, when it has a key).
const SCHEMA_V2: &str = "
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
";

/// The schema's step from version 2 to 3: the sagas' timeouts. `due_at` is in microseconds since
/// the Unix epoch (negative before it). `due_timeouts` and `next_timeout` walk
/// `timeouts_by_due` in order; `cancel_timeouts` finds an instance's timeouts through
/// `timeouts_by_instance`.
const SCHEMA_V3: &str = "
CREATE TABLE timeouts (
    id       BLOB    NOT NULL PRIMARY KEY,
    saga     TEXT    NOT NULL,
    instance TEXT    NOT NULL,
    due_at   INTEGER NOT NULL,
    payload  BLOB    NOT NULL
);
CREATE INDEX timeouts_by_due ON timeouts (saga, due_at, id);
CREATE INDEX timeouts_by_instance ON timeouts (saga, instance);
";

/// The schema's step from version 3 to 4: what kind of failure dead-lettered an event, why it
/// was dead-lettered, and the raw row of one that could not be read back (JSON pairs); entries
/// written by an older version read as handler errors. And the requests for handlers' tasks
/// (`requested_at` in nanoseconds since the Unix epoch).
const SCHEMA_V4: &str = "
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
";

/// The schema's step from version 5 to 6: why a handler's task could not carry a request out
/// (`NULL` while it waits).
const SCHEMA_V6: &str = "ALTER TABLE requests ADD COLUMN failed TEXT;";

/// Saves checkpoint `?1` at position `?2` (table `checkpoints`).
pub(crate) const SAVE_CHECKPOINT_SQL: &str =
    "INSERT OR REPLACE INTO checkpoints (name, position) VALUES (?1, ?2)";

/// Moves checkpoint `?1` forward to position `?2`, creating it: changes no row when it is
/// already there or past it. Run by a SQL read model in the transaction of its changes, which it
/// rolls back then (another delivery of the event committed first).
pub(crate) const ADVANCE_CHECKPOINT_SQL: &str = "INSERT INTO checkpoints (name, position) VALUES (?1, ?2) \
     ON CONFLICT (name) DO UPDATE SET position = excluded.position \
     WHERE excluded.position > checkpoints.position";

/// Removes subscriber `handler`'s dead letter for the event `event_id`; whether there was one.
/// Run by a SQL read model in the transaction of the event's changes, so that the changes and
/// the end of the dead letter commit together: a dead letter delivered again is told from an
/// event delivered twice, and once its changes are committed no retry finds it again.
pub(crate) fn take_dead_letter(
    conn: &Connection,
    handler: &str,
    event_id: Uuid,
) -> rusqlite::Result<bool> {
    conn.prepare_cached("DELETE FROM dead_letters WHERE handler = ?1 AND event_id = ?2")?
        .execute(params![handler, event_id.as_bytes().as_slice()])
        .map(|removed| removed > 0)
}

/// The position of checkpoint `?1`.
pub(crate) const LOAD_CHECKPOINT_SQL: &str = "SELECT position FROM checkpoints WHERE name = ?1";

/// Removes checkpoint `?1` (a SQL read model's rebuild, in the transaction that clears it).
pub(crate) const DELETE_CHECKPOINT_SQL: &str = "DELETE FROM checkpoints WHERE name = ?1";

/// The columns of a command-log entry, in the order [`decode_command`] reads them.
const COMMAND_COLUMNS: &str = "rowid, command_id, idempotency_key, command, aggregate, aggregate_id, stream_id, version, event_count, first_position, last_position, recorded_at";

/// The columns of an event, in the order [`decode_event`] reads them.
const EVENT_COLUMNS: &str = "position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at";

/// How far an acknowledged write is guaranteed to survive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous=FULL` (the default): every acknowledged write survives a process crash, an
    /// OS crash and a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: every acknowledged write survives a process crash; the last ones
    /// may be lost on an OS crash or a power loss (the database stays consistent).
    Normal,
}

/// Options of [`SqliteStore::open_with`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    durability: Durability,
    max_batch: usize,
    readers: usize,
    busy_timeout: Duration,
    stream_cache: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Full,
            max_batch: 512,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            stream_cache: 100_000,
        }
    }
}

impl SqliteOptions {
    /// How far an acknowledged write survives (default [`Durability::Full`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The most writes committed in one transaction (default 512, at least 1).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// How many reader connections are open at most (default 4, at least 1): a read waits for
    /// one of them, which it gives back.
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// How long a connection waits for a lock held by another connection (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How many streams' versions the writer keeps in memory (default 100,000, about 11 MB):
    /// the streams written last. An append to another stream first reads its version from the
    /// file (one index lookup, inside the writer's transaction). 0 keeps none: every append
    /// reads its stream's version; 1 counts as 2.
    pub fn stream_cache(mut self, streams: usize) -> Self {
        self.stream_cache = if streams == 1 { 2 } else { streams };
        self
    }
}

/// The durable embedded event store: one SQLite file. See the [module docs](self).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq::Error> {
/// let store = evoq::store::sqlite::SqliteStore::open("app.db").await?;
/// let app = evoq::Evoq::builder().store(store).start().await?;
/// # Ok(())
/// # }
/// ```
///
/// A handle: [`Clone`] is cheap and clones share the file, the writer and the readers. The
/// store closes ([`close`](Self::close)) when the last handle is dropped: the drop waits for the
/// writer to commit what it was given and to checkpoint the file (call `close().await` to wait
/// off the async runtime's threads instead).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    connector: SqliteConnector,
    /// The writer's queue; `None` once closed.
    writer: Mutex<Option<std_mpsc::Sender<Job>>>,
    /// The writer thread, which answers with how its final checkpoint went; `None` once joined.
    thread: Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per reader connection: a read waits for a connection of the pool rather than
    /// open one of its own (a connection's opening reads the schema and prepares nothing it
    /// keeps), so decisions that read on every command reuse their connections and statements.
    reading: Arc<tokio::sync::Semaphore>,
    closed: AtomicBool,
    /// The file's lock, released once the writer has closed its connection.
    lock: Mutex<Option<FileLock>>,
    head: watch::Sender<u64>,
    /// Opened by [`SqliteStore::open_for_inspection`]: no writer, no lock, and the head is
    /// the file's (another process may be writing it).
    inspection: bool,
}

impl Inner {
    fn path(&self) -> &Path {
        &self.connector.path
    }

    fn closed_error(&self) -> StoreError {
        StoreError::Closed {
            backend: BACKEND,
            location: format!("`{}`", self.path().display()),
        }
    }

    /// Closes the store, blocking: no new reads or writes; the writer commits every write it
    /// was given, checkpoints the WAL into the file and closes its connection; then the lock is
    /// released. A second call waits for the first and returns `Ok`.
    fn shut(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::SeqCst);
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        // The writer sees its queue end once it has taken every write sent before.
        drop(
            self.writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        // Held until the lock is released, so that a concurrent close returns only then.
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match thread.take() {
            Some(writer) => writer.join().unwrap_or_else(|_| {
                Err(backend(
                    "closing",
                    self.path(),
                    "the writer thread panicked; what it committed is in the file and its `-wal` file, keep both",
                ))
            }),
            None => Ok(()),
        };
        drop(
            self.lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(error) = self.shut() {
            tracing::warn!(
                name: "evoq.store.close",
                stage = "exception",
                path = %self.path().display(),
                error = %error,
                "evoq.store.close",
            );
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path())
            .field("head", &*self.inner.head.borrow())
            .finish_non_exhaustive()
    }
}

/// Opens connections to a store's file for other parts of the same application, such as a SQL
/// read model that keeps its tables in the store's file and commits them with its checkpoint.
///
/// Its connections are configured as the store's (busy timeout, durability) and do not take the
/// store's lock: they are for the process that holds the store open, while it does. They must
/// never write the store's own tables (`events`, `event_tags`, `commands`, `snapshots`,
/// `dead_letters`, `saga_state`, `timeouts`, `evoq_schema`): the store's writer thread is their
/// only writer, and keeps stream versions in memory. The one exception is a SQL read model's own
/// row of `checkpoints`, which it writes in the transaction of its changes (the writer caches no
/// checkpoint). A write of theirs waits for the writer's transaction (at most the busy timeout),
/// as the writer waits for theirs.
#[derive(Clone, Debug)]
pub(crate) struct SqliteConnector {
    path: PathBuf,
    options: SqliteOptions,
}

// The SQL read model of the projection layer opens its connections here; until it does, only
// this file's tests use the read-write connection.
#[allow(dead_code)]
impl SqliteConnector {
    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A new read-write connection to the store's file (already in WAL mode).
    pub(crate) fn open(&self) -> Result<Connection, StoreError> {
        self.connect(
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            "opening a connection",
        )
    }

    /// A new read-only connection to the store's file.
    pub(crate) fn open_read_only(&self) -> Result<Connection, StoreError> {
        self.connect(
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            "opening a reader",
        )
    }

    fn connect(&self, flags: OpenFlags, what: &str) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(&self.path, flags)
            .map_err(|e| backend(what, &self.path, e))?;
        configure(&conn, &self.path, &self.options)?;
        Ok(conn)
    }
}

fn backend(what: &str, path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message: format!("{what} on `{}`: {error}", path.display()),
    }
}

/// The error of a write of an append to `stream` (`what`) that SQLite failed: when SQLite
/// refused the append's data, [`StoreError::Unstorable`] in SQLite's words (see
/// [`refuses_data`]); else a [`StoreError::Backend`] error naming the file.
fn append_failure(what: &str, path: &Path, stream: &str, error: rusqlite::Error) -> StoreError {
    if !refuses_data(&error) {
        return backend(what, path, error);
    }
    let words = match &error {
        rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
        other => other.to_string(),
    };
    StoreError::unstorable(
        BACKEND,
        "events of the stream",
        stream,
        format!("the database refused them ({words}); fix their data"),
    )
}

/// Whether SQLite refused the data of a statement, not failed to run it: a CHECK, NOT NULL,
/// foreign key or STRICT type constraint, a trigger's `RAISE` (an operator's constraint or
/// trigger, say), a value too big or of the wrong type. A UNIQUE or primary key failure is not
/// among them: the positions and versions it guards are the writer's, not the append's. Nor are
/// a busy or locked database, I/O errors, a full disk: the file's state, never the data's.
fn refuses_data(error: &rusqlite::Error) -> bool {
    use rusqlite::ffi;
    /// `SQLITE_CONSTRAINT_DATATYPE` (a STRICT table's column type), which the bindings lack.
    const CONSTRAINT_DATATYPE: std::ffi::c_int = ffi::SQLITE_CONSTRAINT | (12 << 8);
    let rusqlite::Error::SqliteFailure(failure, _) = error else {
        return false;
    };
    match failure.code {
        rusqlite::ErrorCode::TooBig | rusqlite::ErrorCode::TypeMismatch => true,
        rusqlite::ErrorCode::ConstraintViolation => [
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_CONSTRAINT_CHECK,
            ffi::SQLITE_CONSTRAINT_NOTNULL,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY,
            ffi::SQLITE_CONSTRAINT_TRIGGER,
            CONSTRAINT_DATATYPE,
        ]
        .contains(&failure.extended_code),
        _ => false,
    }
}

impl SqliteStore {
    /// Opens (creating if need be) the store in the file at `path`, durable against power loss.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (creating if need be) the store in the file at `path` with `options`: checks the
    /// file, takes its lock, creates or migrates the schema, then starts the writer thread.
    ///
    /// When a store of this process has the file open, returns a handle on that store (a clone,
    /// with the options of its first open) rather than a second writer on the file.
    ///
    /// Refused, with nothing written to the file: [`StoreError::InvalidLocation`] for a path
    /// that names no file in an existing directory, [`StoreError::Locked`] while another process
    /// has it open, [`StoreError::ReadOnly`] when this process cannot write it or create the
    /// files beside it, [`StoreError::NotAnEventStore`] for another application's database,
    /// [`StoreError::SchemaTooNew`] for a newer evoq's.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let at = path.clone();
        tokio::task::spawn_blocking(move || open_store(path, options))
            .await
            .map_err(|e| backend("opening the store", &at, e))?
    }

    /// Opens the store in the existing file at `path` to read it, while the application that
    /// owns it may be running: for operators' tools (the `evoq` inspector).
    ///
    /// Takes no lock and writes nothing but requests: it reads through read-only connections
    /// (in WAL mode, reads never wait for the application's writer, nor hold it up). The one
    /// write it makes is a [`HandlerRequest`] (saved or withdrawn), the way an operator asks the
    /// running application for a dead-letter retry or a rebuild; it goes through a connection
    /// of its own and waits for the application's writer like any writer of the file. Every
    /// other write of the handle fails; open the file with [`open`](Self::open) for those,
    /// which needs the application stopped. The head is the file's: [`read_all`](EventStore::read_all) reads
    /// it from the file, and the [`head`](EventStore::head) watch follows it with a poll every
    /// 200 ms, so a reader sees the events the application commits.
    ///
    /// Nothing else of the database is written. On a file that no process has open, SQLite's
    /// read-only connections leave an empty `-wal` file and a `-shm` file beside it, as any
    /// reader of a WAL database does; the application's next open and close remove them.
    ///
    /// Refused: a file that does not exist, is empty, or is not an evoq store
    /// ([`StoreError::NotAnEventStore`]), one of a newer evoq ([`StoreError::SchemaTooNew`]).
    pub async fn open_for_inspection(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let connector = SqliteConnector {
            path: path.as_ref().to_path_buf(),
            options: SqliteOptions::default(),
        };
        let at = connector.path.clone();
        let checked = connector.clone();
        tokio::task::spawn_blocking(move || inspect_existing(&checked))
            .await
            .map_err(|e| backend("opening the store for inspection", &at, e))??;
        let (head, _) = watch::channel(0);
        let readers = connector.options.readers;
        let store = SqliteStore {
            inner: Arc::new(Inner {
                connector,
                writer: Mutex::new(None),
                thread: Mutex::new(None),
                readers: Mutex::new(Vec::new()),
                reading: Arc::new(tokio::sync::Semaphore::new(readers)),
                closed: AtomicBool::new(false),
                lock: Mutex::new(None),
                head,
                inspection: true,
            }),
        };
        store.readable_head().await?;
        let weak = Arc::downgrade(&store.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(INSPECTION_POLL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.closed.load(Ordering::SeqCst) {
                    break;
                }
                // A failed poll is tried again at the next tick; reads report their errors.
                let _ = SqliteStore { inner }.readable_head().await;
            }
        });
        Ok(store)
    }

    /// The head position, read now: the one this store's writer published, or, for a store
    /// opened for inspection ([`open_for_inspection`](Self::open_for_inspection)), the file's
    /// (the [`head`](EventStore::head) watch follows it with a poll).
    pub async fn read_head(&self) -> Result<u64, StoreError> {
        self.readable_head().await
    }

    /// The head reads may go up to: the one the writer published; for a store opened for
    /// inspection, the file's, read now (and published to the head watch).
    async fn readable_head(&self) -> Result<u64, StoreError> {
        if !self.inner.inspection {
            return Ok(*self.inner.head.borrow());
        }
        let path = self.path().to_path_buf();
        let head = self
            .read(move |conn| {
                let head: i64 = conn
                    .prepare_cached("SELECT COALESCE(MAX(position), 0) FROM events")
                    .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
                    .map_err(|e| backend("reading the head", &path, e))?;
                from_db(head, || path.display().to_string(), "the head position")
            })
            .await?;
        self.inner.head.send_if_modified(|published| {
            let moved = head > *published;
            if moved {
                *published = head;
            }
            moved
        });
        Ok(head)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// Closes the store, for every handle (clone) of it: the writes already sent are committed,
    /// the WAL is checkpointed into the database file (`wal_checkpoint(TRUNCATE)`), so that the
    /// file alone holds every event and a byte copy of it is a complete backup; the
    /// connections close and the file's lock is released, so another store may open the file.
    ///
    /// Afterwards every call of every handle fails with [`StoreError::Closed`]. Closing again is
    /// `Ok`. Dropping the last handle closes too, waiting in the dropping thread. Stopping a
    /// runtime does not close its store, but flushes it ([`EventStore::flush`]: the WAL is
    /// checkpointed into the file and emptied), so a copy of the file alone is complete after
    /// [`Evoq::stop`](crate::Evoq::stop) too; `close` also releases the file.
    ///
    /// The checkpoint waits, up to [`SqliteOptions::busy_timeout`], for readers of other
    /// connections and for a checkpoint another connection is running. An error says the
    /// checkpoint or the close failed (another connection kept reading past that time, an I/O
    /// error): the events are then safe in the `-wal` file, which must stay beside the
    /// database file; the lock is released all the same.
    pub async fn close(&self) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.shut())
            .await
            .map_err(|e| backend("closing", self.path(), e))?
    }

    /// Opens connections to this store's file for other parts of the application (a SQL read
    /// model); see [`SqliteConnector`].
    #[allow(dead_code)] // Used by this file's tests; the read models go through `connect`.
    pub(crate) fn connector(&self) -> SqliteConnector {
        self.inner.connector.clone()
    }

    /// A new connection to the store's file, configured as the store's own (its busy timeout
    /// and durability), read-only or read-write: for a SQL read model of the projection layer,
    /// which writes its tables and its projection's checkpoint in transactions of its own.
    pub(crate) fn connect(&self, read_only: bool) -> Result<Connection, StoreError> {
        if read_only {
            self.inner.connector.open_read_only()
        } else {
            self.inner.connector.open()
        }
    }

    /// How long a connection of the store waits for a lock another holds.
    pub(crate) fn busy_timeout(&self) -> Duration {
        self.inner.connector.options.busy_timeout
    }

    /// Sends `op` to the writer and waits for its commit.
    async fn write<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        if self.inner.inspection {
            return Err(StoreError::Backend {
                backend: BACKEND,
                message: format!(
                    "writing on `{}`: the store was opened for inspection, which writes nothing; open it with `SqliteStore::open` to write (the application must not be running)",
                    self.path().display()
                ),
            });
        }
        let (reply, answer) = oneshot::channel();
        let sent = match &*self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(writer) => writer.send(make(reply)).is_ok(),
            None => return Err(self.inner.closed_error()),
        };
        if !sent {
            return Err(backend("writing", self.path(), "the writer thread stopped"));
        }
        answer.await.map_err(|_| {
            backend(
                "writing",
                self.path(),
                "the writer thread stopped before it answered",
            )
        })?
    }

    /// Runs `f`, a write of the requests table, on a read-write connection of its own (a store
    /// opened for inspection has no writer), off the async runtime.
    async fn write_request<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(self.inner.closed_error());
        }
        let connector = self.inner.connector.clone();
        let path = connector.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let conn = connector.open()?;
            f(&conn).map_err(|e| backend("writing a handler request", connector.path(), e))
        })
        .await
        .map_err(|e| backend("writing a handler request", &path, e))?
    }

    /// Runs `f` on a reader connection, off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(self.inner.closed_error());
        }
        let inner = Arc::clone(&self.inner);
        let permit = Arc::clone(&inner.reading)
            .acquire_owned()
            .await
            .map_err(|_| inner.closed_error())?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let conn = match idle {
                Some(conn) => conn,
                None => inner.connector.open_read_only()?,
            };
            let result = f(&conn);
            let mut readers = inner.readers.lock().unwrap_or_else(PoisonError::into_inner);
            // A store closed meanwhile keeps no connection.
            if readers.len() < inner.connector.options.readers
                && !inner.closed.load(Ordering::SeqCst)
            {
                readers.push(conn);
            }
            result
        })
        .await
        .map_err(|e| backend("reading", self.path(), e))?
    }
}

fn configure(conn: &Connection, path: &Path, options: &SqliteOptions) -> Result<(), StoreError> {
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| backend("setting the busy timeout", path, e))?;
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = OFF;"
    ))
    .map_err(|e| backend("configuring the connection", path, e))
}

/// The stores this process has open, by the canonical path of their file: opening one of
/// these files again gives a handle on its store.
static OPEN_STORES: Mutex<Vec<(PathBuf, Weak<Inner>)>> = Mutex::new(Vec::new());

/// Opens the store at `path`, or gives a handle on the store of this process that has the file
/// open. Opens of this process run one at a time, so two of one new file make one store.
fn open_store(path: PathBuf, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
    check_location(&path)?;
    let mut open = OPEN_STORES.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|(_, store)| store.strong_count() > 0);
    if let Ok(canonical) = std::fs::canonicalize(&path) {
        let shared = open
            .iter()
            .filter(|(file, _)| *file == canonical)
            .find_map(|(_, store)| store.upgrade())
            .filter(|inner| !inner.closed.load(Ordering::SeqCst));
        if let Some(inner) = shared {
            return Ok(SqliteStore { inner });
        }
    }
    let connector = SqliteConnector { path, options };
    let path = connector.path.clone();
    let Opened { conn, head, lock } = open_file(&connector)?;
    let (tx, rx) = std_mpsc::channel();
    let (head_tx, _) = watch::channel(head);
    let writer = Writer {
        conn,
        path: path.clone(),
        next_position: head + 1,
        versions: StreamVersions::new(connector.options.stream_cache),
        max_batch: connector.options.max_batch,
        head: head_tx.clone(),
        busy_timeout: connector.options.busy_timeout,
    };
    let thread = std::thread::Builder::new()
        .name("evoq-sqlite-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| backend("starting the writer thread", &path, e))?;
    let readers = connector.options.readers;
    let inner = Arc::new(Inner {
        connector,
        writer: Mutex::new(Some(tx)),
        thread: Mutex::new(Some(thread)),
        readers: Mutex::new(Vec::new()),
        reading: Arc::new(tokio::sync::Semaphore::new(readers)),
        closed: AtomicBool::new(false),
        lock: Mutex::new(Some(lock)),
        head: head_tx,
        inspection: false,
    });
    if let Ok(canonical) = std::fs::canonicalize(&path) {
        open.push((canonical, Arc::downgrade(&inner)));
    }
    Ok(SqliteStore { inner })
}

/// What [`open_file`] gives the store.
struct Opened {
    /// The writer's connection.
    conn: Connection,
    /// The last position written.
    head: u64,
    lock: FileLock,
}

/// Opens the store's file: checks it (writable, new or empty or evoq's) without writing to it,
/// takes its lock, opens the writing connection, sets WAL and creates or migrates the schema.
fn open_file(connector: &SqliteConnector) -> Result<Opened, StoreError> {
    let path = connector.path();
    check_writable(path)?;
    if hot_journal(path) {
        let _lock = FileLock::acquire(path, connector.options.busy_timeout)?;
        roll_back_hot_journal(connector)?;
    }
    inspect(connector)?;
    let lock = FileLock::acquire(path, connector.options.busy_timeout)?;
    let conn = connector.connect(OpenFlags::default(), "opening the database")?;
    // SQLite opens a file it may not write read-only, without a word.
    if conn
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(|e| backend("opening the database", path, e))?
    {
        return Err(read_only(
            path,
            "SQLite could open it for reading only".into(),
        ));
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| backend("switching to WAL mode", path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(backend(
            "switching to WAL mode",
            path,
            format!("the database stays in `{mode}` mode"),
        ));
    }
    migrate(&conn, path)?;
    conn.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}"
    ))
    .map_err(|e| backend("configuring the writer's checkpoints", path, e))?;
    let head: i64 = conn
        .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |row| {
            row.get(0)
        })
        .map_err(|e| backend("reading the head", path, e))?;
    let head = from_db(head, || path.display().to_string(), "the head position")?;
    Ok(Opened { conn, head, lock })
}

/// Whether a process that died while writing `path` in SQLite's rollback mode (before the
/// store switched a new file to WAL, or another tool's write) left its journal,
/// `<file>-journal`, behind: no read-only connection can read the file until a writer rolls
/// that half-done write back.
fn hot_journal(path: &Path) -> bool {
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    std::fs::metadata(journal).is_ok_and(|meta| meta.len() > 0)
}

/// Rolls back the write a killed process left half-done in `path` (see [`hot_journal`]), as
/// SQLite does at the first read of a connection that may write: the file is back at its last
/// committed state. Nothing else is written. Run under the file's lock.
fn roll_back_hot_journal(connector: &SqliteConnector) -> Result<(), StoreError> {
    let path = connector.path();
    let fail = |e: rusqlite::Error| {
        backend(
            "rolling back the write a killed process left half-done (its `-journal` file)",
            path,
            e,
        )
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(connector.options.busy_timeout)
        .map_err(fail)?;
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| {
        row.get::<_, i64>(0)
    })
    .map_err(fail)?;
    Ok(())
}

/// Whether an I/O error says the file cannot be written (permissions, a read-only file system).
fn is_read_only(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
    )
}

fn read_only(path: &Path, reason: String) -> StoreError {
    StoreError::ReadOnly {
        backend: BACKEND,
        location: format!("`{}`", path.display()),
        reason,
    }
}

/// Refuses a path that cannot name the store's file ([`StoreError::InvalidLocation`]): an empty
/// one, a name SQLite reads as something else (`:memory:`, a `file:` URI, which would leave the
/// store's side files beside no database), a directory, or a file in a directory that does not
/// exist (SQLite creates no directory, and neither does the store). Creates nothing.
fn check_location(path: &Path) -> Result<(), StoreError> {
    let refuse = |reason: String| StoreError::InvalidLocation {
        backend: BACKEND,
        location: format!("`{}`", path.display()),
        reason,
    };
    let text = path.to_string_lossy();
    if text.is_empty() {
        return Err(refuse(
            "the path is empty: give the path of a file, such as `events.db`".into(),
        ));
    }
    if text == ":memory:" {
        return Err(refuse(
            "`:memory:` is SQLite's private in-memory database, which each connection of the store would see empty: give the path of a file, or use `InMemoryStore` for events that need not outlive the process".into(),
        ));
    }
    if text.starts_with("file:") {
        return Err(refuse(
            "SQLite URIs (`file:...`) are not taken: give the path of a file (`./file:name` for a file so named)".into(),
        ));
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(refuse(format!(
                "it is a directory: give the path of a file in it, such as `{}`",
                path.join("events.db").display()
            )));
        }
        Ok(_) => return Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {}
        // Whatever else is wrong (permissions, ...) the open itself reports.
        Err(_) => return Ok(()),
    }
    let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    else {
        return Ok(());
    };
    match std::fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(refuse(format!(
            "`{}` is not a directory: give the path of a file in a directory",
            parent.display()
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(refuse(format!(
            "its directory `{}` does not exist: create it first (the store creates the file, not its directory)",
            parent.display()
        ))),
        Err(e) if e.kind() == ErrorKind::NotADirectory => Err(refuse(format!(
            "a part of `{}` is not a directory: give the path of a file in a directory",
            parent.display()
        ))),
        Err(_) => Ok(()),
    }
}

/// Refuses an existing file this process cannot open for writing (opening it so changes
/// nothing); a missing file is created later.
fn check_writable(path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new().write(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if is_read_only(&e) => Err(read_only(
            path,
            format!("the file cannot be opened for writing: {e}"),
        )),
        Err(e) => Err(backend("opening the database", path, e)),
    }
}

/// Looks at an existing, non-empty file through a read-only connection: refuses another
/// application's database and a newer evoq's, before anything is written to it.
fn inspect(connector: &SqliteConnector) -> Result<(), StoreError> {
    let path = connector.path();
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > 0 => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(backend("opening the database", path, e)),
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| backend("opening the database to check it", path, e))?;
    conn.busy_timeout(connector.options.busy_timeout)
        .map_err(|e| backend("setting the busy timeout", path, e))?;
    check_schema(&conn, path)
}

/// Looks at the file an inspection opens: it must exist and be an evoq store of this version or
/// older. Reads only.
fn inspect_existing(connector: &SqliteConnector) -> Result<(), StoreError> {
    let path = connector.path();
    let not_ours = |found: &str| StoreError::NotAnEventStore {
        backend: BACKEND,
        location: format!("`{}`", path.display()),
        found: found.to_owned(),
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Err(not_ours("it is a directory")),
        Ok(meta) if meta.len() == 0 => return Err(not_ours("the file is empty")),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(not_ours("there is no such file"));
        }
        Err(e) => return Err(backend("opening the database to inspect it", path, e)),
    }
    if hot_journal(path) {
        return Err(backend(
            "opening the database to inspect it",
            path,
            "a process was killed while writing it and left its `-journal` file, which only a writer can roll back; open the store once with the application (`SqliteStore::open` rolls it back, keeping every committed event) and inspect it then",
        ));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| backend("opening the database to inspect it", path, e))?;
    conn.busy_timeout(connector.options.busy_timeout)
        .map_err(|e| backend("setting the busy timeout", path, e))?;
    check_schema(&conn, path)?;
    let evoq: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'evoq_schema')",
            [],
            |row| row.get(0),
        )
        .map_err(|e| backend("reading the schema", path, e))?;
    if !evoq {
        return Err(not_ours("the database holds no tables"));
    }
    Ok(())
}

/// Accepts an empty database or an evoq store of this version or older; refuses another
/// application's database ([`StoreError::NotAnEventStore`]) and a newer evoq's
/// ([`StoreError::SchemaTooNew`]). Reads only.
fn check_schema(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let not_ours = |found: String| StoreError::NotAnEventStore {
        backend: BACKEND,
        location: format!("`{}`", path.display()),
        found,
    };
    let tables = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite^_%' ESCAPE '^' ORDER BY name")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        });
    let tables = match tables {
        Ok(tables) => tables,
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            return Err(not_ours(format!("it is not an SQLite database: {e}")));
        }
        Err(e) => return Err(backend("reading the schema", path, e)),
    };
    if tables.is_empty() {
        return Ok(());
    }
    if !tables.iter().any(|t| t == "evoq_schema") {
        let shown: Vec<String> = tables.iter().take(5).map(|t| format!("`{t}`")).collect();
        let more = match tables.len() - shown.len() {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        return Err(not_ours(format!(
            "it holds tables {}{more} and no `evoq_schema`",
            shown.join(", ")
        )));
    }
    let found: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM evoq_schema", [], |row| row.get(0))
        .map_err(|e| backend("reading the schema version", path, e))?;
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            backend: BACKEND,
            location: format!("`{}`", path.display()),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// The exclusive lock of a store's file: an OS advisory lock (`flock`) on `<file>-lock`, held
/// while the file stays open and dropped by the OS when the process ends, however it ends.
/// The file holds the holder's process id, for the message of a refused opener.
struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock of `db`. A store of this process that is closing (its last handle was
    /// dropped on another thread a moment ago) still holds it while its writer checkpoints: it
    /// is waited for, up to `wait`.
    fn acquire(db: &Path, wait: Duration) -> Result<FileLock, StoreError> {
        let mut name = db.as_os_str().to_owned();
        name.push("-lock");
        let path = PathBuf::from(name);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        let mut file = match opened {
            Ok(file) => file,
            Err(e) if is_read_only(&e) => {
                return Err(read_only(
                    db,
                    format!(
                        "its lock file `{}` cannot be created or written: {e}",
                        path.display()
                    ),
                ));
            }
            Err(e) => {
                return Err(backend(
                    "opening the lock file",
                    db,
                    format!("`{}`: {e}", path.display()),
                ));
            }
        };
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let pid = holder_pid(&mut file);
                    if pid == Some(std::process::id()) && started.elapsed() < wait {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    return Err(StoreError::Locked {
                        backend: BACKEND,
                        location: format!("`{}`", db.display()),
                        holder: holder(pid, &path),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(backend(
                        "locking the database",
                        db,
                        format!("`{}`: {e}", path.display()),
                    ));
                }
            }
        }
        // Only the message of a refused opener reads this: the lock itself is the OS's.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(FileLock { _file: file })
    }
}

/// The process id the lock's holder wrote into the lock file, if it did.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Who holds the lock of `path`, from the id its holder wrote.
fn holder(pid: Option<u32>, path: &Path) -> String {
    match pid {
        Some(pid) if pid == std::process::id() => format!(
            "this process (pid {pid}), by a store that did not finish closing within the busy timeout or that opened the file by another name"
        ),
        Some(pid) => format!("process {pid} (its id is in `{}`)", path.display()),
        None => format!(
            "another process, which has not written its id into `{}` yet",
            path.display()
        ),
    }
}

/// Creates the schema in a new file, or brings an older file's schema up to [`SCHEMA_VERSION`]
/// one step at a time, keeping its data, in one transaction; refuses a newer schema untouched.
fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| backend("migrating the schema", path, e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
    let result = (|| {
        // Checked again under the write lock, before the first write.
        check_schema(conn, path)?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS evoq_schema (version INTEGER NOT NULL)")
            .map_err(fail)?;
        let found: Option<i64> = conn
            .query_row("SELECT MAX(version) FROM evoq_schema", [], |row| row.get(0))
            .map_err(fail)?;
        let found = found.unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                backend: BACKEND,
                location: format!("`{}`", path.display()),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < 1 {
            conn.execute_batch(SCHEMA_V1).map_err(fail)?;
        }
        if found < 2 {
            conn.execute_batch(SCHEMA_V2).map_err(fail)?;
        }
        if found < 3 {
            conn.execute_batch(SCHEMA_V3).map_err(fail)?;
        }
        if found < 4 {
            conn.execute_batch(SCHEMA_V4).map_err(fail)?;
        }
        if found < 5 {
            conn.execute_batch(SCHEMA_V5).map_err(fail)?;
            index_stored_tags(conn, path)?;
        }
        if found < 6 {
            conn.execute_batch(SCHEMA_V6).map_err(fail)?;
        }
        // Later versions migrate here, one step at a time: `if found < 7 { ... }`.
        if found < SCHEMA_VERSION {
            conn.execute("DELETE FROM evoq_schema", []).map_err(fail)?;
            conn.execute(
                "INSERT INTO evoq_schema (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )
            .map_err(fail)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(fail),
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------------------------

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write, sent to the writer thread.
enum Job {
    /// An append, with the command to record in the same transaction, if any, and the
    /// condition it is made under, if any ([`EventStore::append_if`]). The inputs stay in the
    /// job until it commits, so that a job given back can be tried again alone.
    Append {
        stream: String,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: Option<NewCommand>,
        condition: Option<AppendCondition>,
        reply: Reply<Appended>,
    },
    /// Removes at most this many command-log entries recorded before this time, oldest first.
    SweepCommands(SystemTime, usize, Reply<usize>),
    Snapshot(Snapshot, Reply<()>),
    Checkpoint(String, u64, Reply<()>),
    SaveDeadLetter(Box<DeadLetter>, Reply<()>),
    DeleteDeadLetter(String, Uuid, Reply<bool>),
    SaveRequest(HandlerRequest, Reply<()>),
    DeleteRequest(String, Uuid, Reply<bool>),
    SaveSaga(String, String, Vec<u8>, Reply<()>),
    DeleteSaga(String, String, Reply<bool>),
    /// Stores a timeout, replacing the one with its id.
    ScheduleTimeout(Timeout, Reply<()>),
    /// Removes the timeout of this saga with this id.
    DeleteTimeout(String, Uuid, Reply<bool>),
    /// Removes every timeout of this saga's instance.
    CancelTimeouts(String, String, Reply<usize>),
    /// Checkpoints the WAL into the database file, between two transactions.
    Flush(Reply<()>),
}

/// The result of one job inside a batch, sent to its caller once the batch commits.
enum Answer {
    Appended(Result<Appended, StoreError>),
    Unit(Result<(), StoreError>),
    Bool(Result<bool, StoreError>),
    /// How many rows a job removed (a sweep of the command log, a cancel of timeouts).
    Count(Result<usize, StoreError>),
}

impl Job {
    /// Sends `answer`, the job's result in a batch that committed, to its caller.
    fn answer(self, answer: Answer) {
        match (self, answer) {
            (Job::Append { reply, .. }, Answer::Appended(result)) => drop(reply.send(result)),
            (
                Job::Snapshot(_, reply)
                | Job::Checkpoint(_, _, reply)
                | Job::SaveDeadLetter(_, reply)
                | Job::SaveRequest(_, reply)
                | Job::SaveSaga(_, _, _, reply)
                | Job::ScheduleTimeout(_, reply)
                | Job::Flush(reply),
                Answer::Unit(result),
            ) => drop(reply.send(result)),
            (
                Job::DeleteDeadLetter(_, _, reply)
                | Job::DeleteRequest(_, _, reply)
                | Job::DeleteSaga(_, _, reply)
                | Job::DeleteTimeout(_, _, reply),
                Answer::Bool(result),
            ) => drop(reply.send(result)),
            (
                Job::SweepCommands(_, _, reply) | Job::CancelTimeouts(_, _, reply),
                Answer::Count(result),
            ) => drop(reply.send(result)),
            // `apply` answers each job with its own kind of answer; this is never reached.
            (job, _) => answer_error(
                job,
                &backend(
                    "answering a write",
                    Path::new("?"),
                    "the writer gave it another write's kind of answer",
                ),
            ),
        }
    }
}

/// The versions of the streams the writer wrote last: at most `capacity` of them, in two
/// generations of `capacity / 2`. A stream is looked up in the young one, then in the old one
/// (and moved to the young one); when the young one is full, it becomes the old one and the
/// old one is emptied for reuse. So a stream written within the last `capacity / 2` distinct
/// streams is always kept, memory never holds more than `capacity` entries, and each lookup is
/// one or two hash probes.
///
/// Only committed versions go in, and this writer is the file's only writer, so a kept version
/// is the file's; a stream that is not kept is read from the file.
struct StreamVersions {
    /// How many entries each generation holds at most; 0 keeps nothing.
    half: usize,
    young: Versions,
    old: Versions,
}

/// Stream versions by stream id.
type Versions = HashMap<String, u64, StreamHasher>;

impl StreamVersions {
    fn new(capacity: usize) -> Self {
        StreamVersions {
            half: (capacity / 2).max(usize::from(capacity > 0)),
            young: Versions::default(),
            old: Versions::default(),
        }
    }

    fn get(&mut self, stream: &str) -> Option<u64> {
        if let Some(version) = self.young.get(stream) {
            return Some(*version);
        }
        let (stream, version) = self.old.remove_entry(stream)?;
        self.put_young(stream, version);
        Some(version)
    }

    fn insert(&mut self, stream: String, version: u64) {
        if self.half == 0 {
            return;
        }
        if let Some(kept) = self.young.get_mut(&stream) {
            *kept = version;
            return;
        }
        self.old.remove(&stream);
        self.put_young(stream, version);
    }

    /// Puts a stream that is not in the young generation into it.
    fn put_young(&mut self, stream: String, version: u64) {
        if self.young.len() >= self.half {
            std::mem::swap(&mut self.young, &mut self.old);
            self.young.clear();
        }
        self.young.insert(stream, version);
    }

    /// How many streams are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// The latest snapshot of `stream`, if any.
fn query_snapshot(
    conn: &Connection,
    path: &Path,
    stream: &str,
) -> Result<Option<Snapshot>, StoreError> {
    let row = conn
        .prepare_cached("SELECT version, data, taken_at FROM snapshots WHERE stream_id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([stream], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .optional()
        })
        .map_err(|e| backend("loading a snapshot", path, e))?;
    row.map(|(version, data, taken_at)| {
        Ok(Snapshot {
            version: from_db(version, || format!("snapshot of `{stream}`"), "the version")?,
            stream_id: stream.to_owned(),
            data,
            taken_at: nanos_to_time(taken_at),
        })
    })
    .transpose()
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    next_position: u64,
    /// The committed versions of the streams written last.
    versions: StreamVersions,
    max_batch: usize,
    head: watch::Sender<u64>,
    /// How long a flush or close waits for a checkpoint that another connection is running.
    busy_timeout: Duration,
}

/// What a batch changed, applied to the writer once it commits, and the time it records its
/// events and commands at.
struct Pending {
    versions: Versions,
    next_position: u64,
    recorded_at: SystemTime,
}

impl Pending {
    /// Takes in an append of this batch to `stream` that made `appended`: an append of events
    /// moves the stream's version and the next position (keyed by the job's own id, so the
    /// first write of a stream in a batch costs no copy of it); one without events, nothing.
    fn advance(&mut self, stream: &str, appended: &Appended) {
        if appended.last_position > 0 {
            self.next_position = appended.last_position + 1;
            self.versions.insert(stream.to_owned(), appended.version);
        }
    }
}

impl Writer {
    /// Commits what comes in until every sender is gone and the queue is empty, then closes
    /// (see [`Writer::close`]).
    fn run(mut self, jobs: std_mpsc::Receiver<Job>) -> Result<(), StoreError> {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Ok(first) = jobs.recv() {
            if let Job::Flush(reply) = first {
                let _ =
                    reply.send(self.checkpoint_wal("checkpointing the WAL into the database file"));
                continue;
            }
            batch.push(first);
            let mut flush = None;
            while batch.len() < self.max_batch {
                match jobs.try_recv() {
                    // A flush ends the batch: it runs once the writes before it committed.
                    Ok(Job::Flush(reply)) => {
                        flush = Some(reply);
                        break;
                    }
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            // If a group fails, all its writes are given back and tried alone, so
            // one bad write fails no other.
            if let Err(jobs_back) = self.commit_group(std::mem::take(&mut batch)) {
                for job in jobs_back {
                    let _ = self.commit_group(vec![job]);
                }
            }
            if let Some(reply) = flush {
                let _ =
                    reply.send(self.checkpoint_wal("checkpointing the WAL into the database file"));
            }
        }
        self.close()
    }

    /// Moves every committed event from the WAL into the database file and empties the WAL
    /// (`wal_checkpoint(TRUNCATE)`), then closes the connection: as the file's last connection
    /// it removes the `-wal` and `-shm` files. The database file alone then holds everything.
    fn close(self) -> Result<(), StoreError> {
        self.checkpoint_wal("checkpointing the WAL into the database file on close")?;
        self.conn
            .close()
            .map_err(|(_, e)| backend("closing the database", &self.path, e))
    }

    /// Moves every committed event from the WAL into the database file and empties the WAL
    /// (`wal_checkpoint(TRUNCATE)`); `what` names the step in an error.
    ///
    /// SQLite waits (through the busy timeout) for readers, but answers "busy" at once while
    /// another connection on the file runs a checkpoint of its own (a SQL read model's
    /// automatic one, a `sqlite3` shell): that is tried again, every few milliseconds, for up
    /// to the busy timeout.
    fn checkpoint_wal(&self, what: &str) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + self.busy_timeout;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let outcome = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                });
            let busy = match outcome {
                Ok((0, _, _)) => return Ok(()),
                Ok((_, log, moved)) => format!("{moved} of {log} pages moved"),
                Err(rusqlite::Error::SqliteFailure(error, _))
                    if error.code == rusqlite::ErrorCode::DatabaseBusy =>
                {
                    "no page moved".to_owned()
                }
                Err(error) => return Err(backend(what, &self.path, error)),
            };
            let pause = exponential(CHECKPOINT_RETRY, CHECKPOINT_RETRY_MAX, attempt);
            if std::time::Instant::now() + pause > deadline {
                return Err(backend(
                    what,
                    &self.path,
                    format!(
                        "another connection kept the WAL busy for {:?} ({busy}); the rest is safe in the `-wal` file: keep it beside the database file",
                        self.busy_timeout
                    ),
                ));
            }
            std::thread::sleep(pause);
        }
    }

    /// One transaction for `jobs`. On a failed transaction with more than one job, gives every
    /// job back (unanswered, whole) to be retried one by one; a lone job is answered with the
    /// error.
    fn commit_group(&mut self, jobs: Vec<Job>) -> Result<(), Vec<Job>> {
        metrics::histogram!("evoq_store_batch_size", "backend" => BACKEND)
            .record(jobs.len() as f64);
        let started = std::time::Instant::now();
        let committed = self.commit_jobs(jobs);
        metrics::histogram!("evoq_store_commit_seconds", "backend" => BACKEND)
            .record(started.elapsed().as_secs_f64());
        committed
    }

    /// [`commit_group`](Self::commit_group), unmeasured.
    fn commit_jobs(&mut self, jobs: Vec<Job>) -> Result<(), Vec<Job>> {
        let single = jobs.len() == 1;
        if let Err(error) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let error = backend("starting a transaction", &self.path, error);
            return self.give_back(jobs, single, &error);
        }
        let mut pending = Pending {
            versions: Versions::default(),
            next_position: self.next_position,
            recorded_at: SystemTime::now(),
        };
        // The jobs stay whole until the batch commits: a failed batch gives every one back.
        let mut answers = Vec::with_capacity(jobs.len());
        let mut failed = None;
        for job in &jobs {
            match self.apply(job, &mut pending) {
                Ok(answer) => answers.push(answer),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        let commit = match failed {
            Some(error) => Err(error),
            None => self
                .conn
                .execute_batch("COMMIT")
                .map_err(|e| backend("committing", &self.path, e)),
        };
        match commit {
            Ok(()) => {
                self.next_position = pending.next_position;
                for (stream, version) in pending.versions {
                    self.versions.insert(stream, version);
                }
                let head = self.next_position - 1;
                self.head.send_if_modified(|h| {
                    let moved = head > *h;
                    if moved {
                        *h = head;
                    }
                    moved
                });
                for (job, answer) in jobs.into_iter().zip(answers) {
                    job.answer(answer);
                }
                Ok(())
            }
            Err(error) => {
                // Nothing of the batch was written (a trigger's `RAISE(ROLLBACK)` may have
                // ended the transaction already).
                let _ = self.conn.execute_batch("ROLLBACK");
                self.give_back(jobs, single, &error)
            }
        }
    }

    fn give_back(&self, jobs: Vec<Job>, single: bool, error: &StoreError) -> Result<(), Vec<Job>> {
        if single {
            for job in jobs {
                answer_error(job, error);
            }
            Ok(())
        } else {
            Err(jobs)
        }
    }

    /// Applies one job inside the open transaction. A wrong expected version, a duplicate
    /// command or a failed condition is an answer, not a failure; an SQL error is the error
    /// that rolls the batch back.
    fn apply(&mut self, job: &Job, pending: &mut Pending) -> Result<Answer, StoreError> {
        match job {
            Job::Append {
                stream,
                expected,
                events,
                command,
                condition,
                ..
            } => {
                let answer = self.append(
                    stream,
                    *expected,
                    events,
                    command.as_ref(),
                    condition.as_ref(),
                    pending,
                )?;
                if let Ok(appended) = &answer {
                    pending.advance(stream, appended);
                }
                Ok(Answer::Appended(answer))
            }
            other => self.apply_other(other),
        }
    }

    fn apply_other(&mut self, job: &Job) -> Result<Answer, StoreError> {
        let conn = &self.conn;
        let path = &self.path;
        macro_rules! run {
            ($what:expr, $sql:expr, $params:expr) => {
                conn.prepare_cached($sql)
                    .and_then(|mut stmt| stmt.execute($params))
                    .map_err(|e| backend($what, path, e))
            };
        }
        match job {
            // Taken out of every batch by the writer's loop; here only if that changes.
            Job::Flush(_) => Ok(Answer::Unit(Err(backend(
                    "checkpointing the WAL",
                    path,
                    "a flush cannot run inside a transaction",
                )),
            )),
            Job::SweepCommands(before, max, _) => {
                run!(
                    "sweeping the command log",
                    "DELETE FROM commands WHERE rowid IN (SELECT rowid FROM commands WHERE recorded_at < ?1 ORDER BY rowid LIMIT ?2)",
                    params![time_to_nanos(*before), limit(*max)]
                ).map(|n| Answer::Count(Ok(n)))
            }
            Job::Snapshot(snapshot, _) => {
                run!(
                    "saving a snapshot",
                    "INSERT OR REPLACE INTO snapshots (stream_id, version, data, taken_at) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        snapshot.stream_id,
                        to_db(snapshot.version),
                        snapshot.data,
                        time_to_nanos(snapshot.taken_at)
                    ]
                ).map(|_| Answer::Unit(Ok(())))
            }
            Job::Checkpoint(name, position, _) => {
                run!(
                    "saving a checkpoint",
                    SAVE_CHECKPOINT_SQL,
                    params![name, to_db(*position)]
                ).map(|_| Answer::Unit(Ok(())))
            }
            Job::SaveDeadLetter(entry, _) => {
                let e = &entry.event;
                run!(
                    "saving a dead letter",
                    "INSERT OR REPLACE INTO dead_letters (handler, event_id, position, stream_id, version, event_type, schema_version, data, metadata, recorded_at, error, attempts, first_failed_at, last_failed_at, kind, reason, raw_row) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                    params![
                        entry.handler,
                        e.event_id.as_bytes().as_slice(),
                        to_db(e.global_position),
                        e.stream_id(),
                        to_db(e.stream_version),
                        e.event_type.as_ref(),
                        i64::from(e.schema_version),
                        e.data,
                        encode_metadata(&e.metadata),
                        time_to_nanos(e.recorded_at),
                        entry.error,
                        i64::from(entry.attempts),
                        time_to_nanos(entry.first_failed_at),
                        time_to_nanos(entry.last_failed_at),
                        entry.kind.as_str(),
                        entry.reason,
                        encode_raw_row(entry.raw_row.as_ref())
                    ]
                ).map(|_| Answer::Unit(Ok(())))
            }
            Job::DeleteDeadLetter(handler, event_id, _) => {
                run!(
                    "deleting a dead letter",
                    "DELETE FROM dead_letters WHERE handler = ?1 AND event_id = ?2",
                    params![handler, event_id.as_bytes().as_slice()]
                ).map(|n| Answer::Bool(Ok(n > 0)))
            }
            Job::SaveRequest(request, _) => {
                save_request_row(conn, request)
                    .map_err(|e| backend("saving a handler request", path, e))
               .map(|_| Answer::Unit(Ok(())))
            }
            Job::DeleteRequest(handler, id, _) => {
                delete_request_row(conn, handler, *id)
                    .map_err(|e| backend("deleting a handler request", path, e))
               .map(|n| Answer::Bool(Ok(n > 0)))
            }
            Job::SaveSaga(saga, instance, state, _) => {
                run!(
                    "saving a saga state",
                    "INSERT OR REPLACE INTO saga_state (saga, instance, state) VALUES (?1, ?2, ?3)",
                    params![saga, instance, state]
                ).map(|_| Answer::Unit(Ok(())))
            }
            Job::DeleteSaga(saga, instance, _) => {
                run!(
                    "deleting a saga state",
                    "DELETE FROM saga_state WHERE saga = ?1 AND instance = ?2",
                    params![saga, instance]
                ).map(|n| Answer::Bool(Ok(n > 0)))
            }
            Job::ScheduleTimeout(timeout, _) => {
                run!(
                    "scheduling a timeout",
                    "INSERT OR REPLACE INTO timeouts (id, saga, instance, due_at, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        timeout.id.as_bytes().as_slice(),
                        timeout.saga,
                        timeout.instance,
                        time_to_micros(timeout.due_at),
                        timeout.payload
                    ]
                ).map(|_| Answer::Unit(Ok(())))
            }
            Job::DeleteTimeout(saga, id, _) => {
                run!(
                    "deleting a timeout",
                    "DELETE FROM timeouts WHERE id = ?1 AND saga = ?2",
                    params![id.as_bytes().as_slice(), saga]
                ).map(|n| Answer::Bool(Ok(n > 0)))
            }
            Job::CancelTimeouts(saga, instance, _) => {
                run!(
                    "cancelling timeouts",
                    "DELETE FROM timeouts WHERE saga = ?1 AND instance = ?2",
                    params![saga, instance]
                ).map(|n| Answer::Count(Ok(n)))
            }
            Job::Append { .. } => unreachable!("appends are applied by `apply`"),
        }
    }

    /// One append inside the open transaction, in the order of
    /// [`EventStore::append_command`] and [`EventStore::append_if`]: the command's check, the
    /// condition, the expected version, the events with their tags, the command's entry. `Ok`
    /// holds the append's answer (a duplicate command, a failed condition and a wrong expected
    /// version are answers, and write nothing); `Err` is an SQL failure, which rolls the batch
    /// back.
    ///
    /// The condition is read in the batch's transaction: it sees the events of the appends of
    /// the batch before it, and no append can come between the check and the insert.
    fn append(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        command: Option<&NewCommand>,
        condition: Option<&AppendCondition>,
        pending: &Pending,
    ) -> Result<Result<Appended, StoreError>, StoreError> {
        if let Some(record) = self.duplicate(command)? {
            let record = Box::new(record);
            return Ok(Err(StoreError::DuplicateCommand { record }));
        }
        if let Some(condition) = condition
            && let Some(position) = self.first_match(&condition.query, condition.after)?
        {
            return Ok(Err(StoreError::ConditionFailed {
                stream: stream.to_owned(),
                query: condition.query.to_string(),
                after: condition.after,
                position,
            }));
        }
        let recorded_at = pending.recorded_at;
        let actual = self.version_of(stream, pending)?;
        if !expected.holds_for(actual) {
            return Ok(Err(StoreError::WrongExpectedVersion {
                stream: stream.to_owned(),
                expected,
                actual,
            }));
        }
        let count = events.len() as u64;
        let first = pending.next_position;
        let appended = appended(actual, first, count);
        if count > 0 {
            self.insert(stream, actual, first, events, recorded_at)?;
        }
        // With no events, only a checked command is recorded (see `NewCommand`).
        if let Some(command) = command.filter(|c| count > 0 || c.deduplicate_since.is_some()) {
            self.record(command, stream, &appended, count, recorded_at)?;
        }
        Ok(Ok(appended))
    }

    /// The lowest position above `after` of an event `query` matches, committed or written
    /// earlier in this transaction.
    fn first_match(&self, query: &EventQuery, after: u64) -> Result<Option<u64>, StoreError> {
        if query.is_none() {
            return Ok(None);
        }
        let (sql, values) = matching_positions(query);
        let bounds = [to_db(after), i64::MAX, 1].map(rusqlite::types::Value::Integer);
        let position: Option<i64> = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_row(params_from_iter(bounds.into_iter().chain(values)), |row| {
                    row.get(0)
                })
                .optional()
            })
            .map_err(|e| backend("checking the condition of an append", &self.path, e))?;
        position
            .map(|p| from_db(p, || "the tag index".to_owned(), "a position"))
            .transpose()
    }

    /// The entry that makes `command` a duplicate when its check is set: the newest of its
    /// lookup recorded at or after the check's time. When there is none, the lookup's entries
    /// recorded before that time have expired and are removed.
    fn duplicate(&self, command: Option<&NewCommand>) -> Result<Option<CommandRecord>, StoreError> {
        let Some((command, since)) = command.and_then(|c| Some((c, c.deduplicate_since?))) else {
            return Ok(None);
        };
        let lookup = command.lookup();
        if let Some(record) = query_command(&self.conn, &self.path, lookup, since)? {
            return Ok(Some(record));
        }
        let (column, value) = lookup_value(lookup);
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM commands WHERE {column} = ?1 AND recorded_at < ?2"
            ))
            .and_then(|mut stmt| stmt.execute(params![value, time_to_nanos(since)]))
            .map_err(|e| {
                backend(
                    &format!("removing expired entries of {lookup}"),
                    &self.path,
                    e,
                )
            })?;
        Ok(None)
    }

    /// Writes the command-log entry of `command`, which made `appended` (`count` events) on
    /// `stream`. A checked command's key is free by now (its entries were found or removed);
    /// an unchecked command with a key takes the key over from an earlier entry, as in the
    /// in-memory store, rather than failing the whole batch.
    fn record(
        &self,
        command: &NewCommand,
        stream: &str,
        appended: &Appended,
        count: u64,
        recorded_at: SystemTime,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO commands (command_id, idempotency_key, command, aggregate, aggregate_id, stream_id, version, event_count, first_position, last_position, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    command.command_id.as_bytes().as_slice(),
                    command.idempotency_key,
                    command.command.as_ref(),
                    command.aggregate.as_ref(),
                    command.aggregate_id(stream),
                    stream,
                    to_db(appended.version),
                    to_db(count),
                    to_db(appended.first_position),
                    to_db(appended.last_position),
                    time_to_nanos(recorded_at)
                ])
            })
            .map_err(|e| {
                let what = format!(
                    "recording command `{}` ({}) on stream `{stream}`",
                    command.command,
                    command.lookup()
                );
                append_failure(&what, &self.path, stream, e)
            })?;
        Ok(())
    }

    /// The version of `stream`, as this batch left it, else as committed: kept for the streams
    /// written last, read from the file (and then kept) for the others.
    fn version_of(&mut self, stream: &str, pending: &Pending) -> Result<u64, StoreError> {
        if let Some(v) = pending.versions.get(stream) {
            return Ok(*v);
        }
        if let Some(v) = self.versions.get(stream) {
            return Ok(v);
        }
        let version: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?1")
            .and_then(|mut stmt| stmt.query_row([stream], |row| row.get(0)))
            .map_err(|e| backend("reading a stream version", &self.path, e))?;
        let version = from_db(version, || format!("stream `{stream}`"), "the version")?;
        self.versions.insert(stream.to_owned(), version);
        Ok(version)
    }

    /// Inserts `events` at the end of `stream` (at version `actual`), from position `first`,
    /// with the tag index's rows of those that have tags.
    fn insert(
        &self,
        stream: &str,
        actual: u64,
        first: u64,
        events: &[NewEvent],
        recorded_at: SystemTime,
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(|e| backend("appending", &self.path, e))?;
        let at = time_to_nanos(recorded_at);
        for (i, event) in (0u64..).zip(events) {
            let position = to_db(first + i);
            stmt.execute(params![
                position,
                stream,
                to_db(actual + 1 + i),
                event.event_id.as_bytes().as_slice(),
                event.event_type.as_ref(),
                i64::from(event.schema_version),
                event.data,
                encode_metadata(&event.metadata),
                at
            ])
            .map_err(|e| {
                append_failure(
                    &format!("appending to stream `{stream}`"),
                    &self.path,
                    stream,
                    e,
                )
            })?;
            // An event without tags costs no statement here.
            if !event.metadata.tags.is_empty() {
                insert_tags(&self.conn, position, &event.metadata.tags).map_err(|e| {
                    append_failure(
                        &format!("indexing the tags of an event of stream `{stream}`"),
                        &self.path,
                        stream,
                        e,
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// Answers `job` with a copy of the writer's `error`: its variant and its words.
fn answer_error(job: Job, error: &StoreError) {
    let again = || error.clone();
    match job {
        Job::Append { reply, .. } => drop(reply.send(Err(again()))),
        Job::Snapshot(_, reply)
        | Job::Checkpoint(_, _, reply)
        | Job::SaveDeadLetter(_, reply)
        | Job::SaveRequest(_, reply)
        | Job::SaveSaga(_, _, _, reply)
        | Job::ScheduleTimeout(_, reply)
        | Job::Flush(reply) => drop(reply.send(Err(again()))),
        Job::DeleteDeadLetter(_, _, reply)
        | Job::DeleteRequest(_, _, reply)
        | Job::DeleteSaga(_, _, reply)
        | Job::DeleteTimeout(_, _, reply) => drop(reply.send(Err(again()))),
        Job::SweepCommands(_, _, reply) | Job::CancelTimeouts(_, _, reply) => {
            drop(reply.send(Err(again())))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

/// Decodes an event row (columns [`EVENT_COLUMNS`]); an undecodable row is an integrity error
/// naming its stream and version.
/// Consecutive rows of one stream share its id through `last`.
fn decode_event(
    row: &rusqlite::Row<'_>,
    last: &mut Option<Arc<str>>,
) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.get(0).unwrap_or(-1);
    let stream_id: String = row.get(1).unwrap_or_else(|_| "?".to_owned());
    let version: i64 = row.get(2).unwrap_or(-1);
    let location = || format!("stream `{stream_id}` version {version} (position {position})");
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Integrity {
        location: location(),
        reason: format!("the event's {what} does not decode ({e}); repair or remove the row"),
    };
    let event_id: Vec<u8> = row.get(3).map_err(|e| corrupt("id", &e))?;
    let event_id = Uuid::from_slice(&event_id).map_err(|e| corrupt("id", &e))?;
    let event_type: String = row.get(4).map_err(|e| corrupt("type", &e))?;
    let schema_version: i64 = row.get(5).map_err(|e| corrupt("schema version", &e))?;
    let schema_version =
        u32::try_from(schema_version).map_err(|e| corrupt("schema version", &e))?;
    let data: Vec<u8> = row.get(6).map_err(|e| corrupt("data", &e))?;
    let metadata: Vec<u8> = row.get(7).map_err(|e| corrupt("metadata", &e))?;
    let metadata = decode_metadata(&metadata, location)?;
    let recorded_at: i64 = row.get(8).map_err(|e| corrupt("commit time", &e))?;
    Ok(RecordedEvent {
        event_id,
        stream_version: from_db(version, location, "the version")?,
        global_position: from_db(position, location, "the position")?,
        stream_id: shared_stream_id(&stream_id, last),
        event_type: event_type.into(),
        schema_version,
        data,
        metadata,
        recorded_at: nanos_to_time(recorded_at),
    })
}

fn query_events(
    conn: &Connection,
    path: &Path,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| backend("reading events", path, e))?;
    let mut rows = stmt
        .query(params)
        .map_err(|e| backend("reading events", path, e))?;
    let mut events = Vec::new();
    let mut last = None;
    while let Some(row) = rows
        .next()
        .map_err(|e| backend("reading events", path, e))?
    {
        events.push(Arc::new(decode_event(row, &mut last)?));
    }
    Ok(events)
}

/// The page of the global order that `sql` selects (columns [`EVENT_COLUMNS`], at most
/// `max_count` rows, none above `head`): a row that does not decode is returned as an
/// [`UndecodableRow`] beside the events, not as an error of the page.
fn query_page(
    conn: &Connection,
    path: &Path,
    sql: &str,
    params: impl rusqlite::Params,
    max_count: usize,
    head: u64,
) -> Result<AllPage, StoreError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| backend("reading events", path, e))?;
    let mut rows = stmt
        .query(params)
        .map_err(|e| backend("reading events", path, e))?;
    let mut page = Vec::new();
    let mut last = None;
    while let Some(row) = rows
        .next()
        .map_err(|e| backend("reading events", path, e))?
    {
        page.push(match decode_event(row, &mut last) {
            Ok(event) => StoredRow::Event(Arc::new(event)),
            Err(error) => StoredRow::Undecodable(undecodable_row(row, error)?),
        });
    }
    Ok(all_page(page, max_count, head))
}

/// What can be read of an event row that does not decode (`error`); the row's position must
/// read, else there is no place to report it at and `error` stands.
fn undecodable_row(
    row: &rusqlite::Row<'_>,
    error: StoreError,
) -> Result<UndecodableRow, StoreError> {
    use rusqlite::types::ValueRef;
    let Ok(position) = row.get::<_, i64>(0) else {
        return Err(error);
    };
    let Ok(global_position) = u64::try_from(position) else {
        return Err(error);
    };
    let columns = EVENT_COLUMNS
        .split(", ")
        .enumerate()
        .map(|(i, name)| {
            let value = match row.get_ref(i) {
                Ok(ValueRef::Null) => "NULL".to_owned(),
                Ok(ValueRef::Integer(n)) => n.to_string(),
                Ok(ValueRef::Real(x)) => x.to_string(),
                Ok(ValueRef::Text(bytes) | ValueRef::Blob(bytes)) => column_text(bytes),
                Err(e) => format!("<unreadable: {e}>"),
            };
            (name.to_owned(), value)
        })
        .collect();
    Ok(UndecodableRow {
        global_position,
        stream_id: row.get(1).unwrap_or_default(),
        stream_version: row
            .get::<_, i64>(2)
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
        event_type: row.get(4).unwrap_or_default(),
        event_id: row
            .get::<_, Vec<u8>>(3)
            .ok()
            .and_then(|id| Uuid::from_slice(&id).ok()),
        data: row.get(6).unwrap_or_default(),
        recorded_at: row.get::<_, i64>(8).ok().map(nanos_to_time),
        columns,
        error: undecodable_reason(error),
    })
}

/// A [`CommandLookup`] that owns its key, to send to a reader thread.
enum OwnedLookup {
    /// [`CommandLookup::Id`].
    Id(Uuid),
    /// [`CommandLookup::Key`], with its key copied.
    Key(String),
}

impl OwnedLookup {
    /// Copies `lookup`'s key.
    fn new(lookup: CommandLookup<'_>) -> Self {
        match lookup {
            CommandLookup::Id(id) => OwnedLookup::Id(id),
            CommandLookup::Key(key) => OwnedLookup::Key(key.to_owned()),
        }
    }

    /// The lookup, borrowing the key.
    fn get(&self) -> CommandLookup<'_> {
        match self {
            OwnedLookup::Id(id) => CommandLookup::Id(*id),
            OwnedLookup::Key(key) => CommandLookup::Key(key),
        }
    }
}

/// The column of the command log that `lookup` matches, and the value it matches.
fn lookup_value(lookup: CommandLookup<'_>) -> (&'static str, rusqlite::types::Value) {
    match lookup {
        CommandLookup::Id(id) => ("command_id", id.as_bytes().to_vec().into()),
        CommandLookup::Key(key) => ("idempotency_key", key.to_owned().into()),
    }
}

/// Decodes a command-log row (columns [`COMMAND_COLUMNS`]); an undecodable row is an
/// integrity error naming the row.
fn decode_command(row: &rusqlite::Row<'_>) -> Result<CommandRecord, StoreError> {
    let rowid: i64 = row.get(0).unwrap_or(-1);
    let location = || format!("table `commands` row {rowid}");
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Integrity {
        location: location(),
        reason: format!("the command's {what} does not decode ({e}); repair or remove the row"),
    };
    let number = |index: usize, what: &str| -> Result<u64, StoreError> {
        let n: i64 = row.get(index).map_err(|e| corrupt(what, &e))?;
        from_db(n, location, what)
    };
    let text = |index: usize, what: &str| -> Result<String, StoreError> {
        row.get(index).map_err(|e| corrupt(what, &e))
    };
    let command_id: Vec<u8> = row.get(1).map_err(|e| corrupt("id", &e))?;
    Ok(CommandRecord {
        command_id: Uuid::from_slice(&command_id).map_err(|e| corrupt("id", &e))?,
        idempotency_key: row.get(2).map_err(|e| corrupt("idempotency key", &e))?,
        command: text(3, "type")?,
        aggregate: text(4, "aggregate type")?,
        aggregate_id: text(5, "aggregate id")?,
        stream_id: text(6, "stream id")?,
        version: number(7, "version")?,
        event_count: number(8, "event count")?,
        first_position: number(9, "first position")?,
        last_position: number(10, "last position")?,
        recorded_at: nanos_to_time(row.get(11).map_err(|e| corrupt("commit time", &e))?),
    })
}

/// The newest command-log entry `lookup` finds among those recorded at or after `since`.
fn query_command(
    conn: &Connection,
    path: &Path,
    lookup: CommandLookup<'_>,
    since: SystemTime,
) -> Result<Option<CommandRecord>, StoreError> {
    let (column, value) = lookup_value(lookup);
    let sql = format!(
        "SELECT {COMMAND_COLUMNS} FROM commands WHERE {column} = ?1 AND recorded_at >= ?2 ORDER BY recorded_at DESC, rowid DESC LIMIT 1"
    );
    let fail = |e: rusqlite::Error| backend(&format!("looking up {lookup}"), path, e);
    let mut stmt = conn.prepare_cached(&sql).map_err(fail)?;
    let mut rows = stmt
        .query(params![value, time_to_nanos(since)])
        .map_err(fail)?;
    rows.next().map_err(fail)?.map(decode_command).transpose()
}

/// A count as an SQL `LIMIT` (saturating at `i64::MAX`).
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The result of an append of `count` events from position `first` to a stream at version
/// `actual` (positions 0 when it appended nothing).
fn appended(actual: u64, first: u64, count: u64) -> Appended {
    match count {
        0 => Appended {
            version: actual,
            first_position: 0,
            last_position: 0,
        },
        _ => Appended {
            version: actual + count,
            first_position: first,
            last_position: first + count - 1,
        },
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn flush(&self) -> Result<(), StoreError> {
        self.write(Job::Flush).await
    }

    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let stream = stream.to_owned();
        self.write(move |reply| Job::Append {
            stream,
            expected,
            events,
            command: None,
            condition: None,
            reply,
        })
        .await
    }

    async fn append_command(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> Result<Appended, StoreError> {
        let stream = stream.to_owned();
        self.write(move |reply| Job::Append {
            stream,
            expected,
            events,
            command: Some(command),
            condition: None,
            reply,
        })
        .await
    }

    /// Checked by the writer in the transaction of the append (see `Writer::append`).
    async fn append_if(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
        command: Option<NewCommand>,
    ) -> Result<Appended, StoreError> {
        let stream = stream.to_owned();
        let condition = condition.clone();
        self.write(move |reply| Job::Append {
            stream,
            expected: ExpectedVersion::Any,
            events,
            command,
            condition: Some(condition),
            reply,
        })
        .await
    }

    async fn find_command(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let lookup = OwnedLookup::new(lookup);
        let path = self.path().to_path_buf();
        self.read(move |conn| query_command(conn, &path, lookup.get(), since))
            .await
    }

    async fn sweep_commands(&self, before: SystemTime, limit: usize) -> Result<usize, StoreError> {
        self.write(move |reply| Job::SweepCommands(before, limit, reply))
            .await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let stream = stream.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let sql = match direction {
                Direction::Forward => format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND version >= ?2 ORDER BY version ASC LIMIT ?3"
                ),
                Direction::Backward => format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND version <= ?2 ORDER BY version DESC LIMIT ?3"
                ),
            };
            query_events(conn, &path, &sql, params![stream, to_db(from), limit(max_count)])
        })
        .await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        let stream = stream.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let v: i64 = conn
                .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?1")
                .and_then(|mut stmt| stmt.query_row([&stream], |row| row.get(0)))
                .map_err(|e| backend("reading a stream version", &path, e))?;
            from_db(v, || format!("stream `{stream}`"), "the version")
        })
        .await
    }

    async fn read_all(
        &self,
        after: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<AllPage, StoreError> {
        // Every position up to the published head is committed.
        let head = self.readable_head().await?;
        if max_count == 0 || after >= head {
            return Ok(AllPage {
                events: Vec::new(),
                scanned_through: after,
                undecodable: Vec::new(),
            });
        }
        let path = self.path().to_path_buf();
        let filter = filter.clone();
        self.read(move |conn| match &filter {
            EventFilter::All => query_page(
                conn,
                &path,
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 AND position <= ?2 ORDER BY position LIMIT ?3"
                ),
                params![to_db(after), to_db(head), limit(max_count)],
                max_count,
                head,
            ),
            EventFilter::Types(types) if types.is_empty() => Ok(AllPage {
                events: Vec::new(),
                scanned_through: head,
                undecodable: Vec::new(),
            }),
            EventFilter::Types(types) => {
                let marks = vec!["?"; types.len()].join(", ");
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position > ? AND position <= ? AND event_type IN ({marks}) ORDER BY position LIMIT ?"
                );
                let mut values: Vec<rusqlite::types::Value> = Vec::with_capacity(types.len() + 3);
                values.push(to_db(after).into());
                values.push(to_db(head).into());
                values.extend(types.iter().map(|t| t.clone().into()));
                values.push(limit(max_count).into());
                query_page(conn, &path, &sql, params_from_iter(values), max_count, head)
            }
        })
        .await
    }

    /// One statement over the tag index and the events (see `store/sqlite/tags.rs`), read up
    /// to the published head like [`read_all`](EventStore::read_all).
    async fn read_query(
        &self,
        query: &EventQuery,
        after: u64,
        max_count: usize,
    ) -> Result<AllPage, StoreError> {
        let head = self.readable_head().await?;
        if max_count == 0 || after >= head || query.is_none() {
            return Ok(AllPage {
                events: Vec::new(),
                scanned_through: if max_count == 0 {
                    after
                } else {
                    after.max(head)
                },
                undecodable: Vec::new(),
            });
        }
        let path = self.path().to_path_buf();
        let (positions, values) = matching_positions(query);
        self.read(move |conn| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE position IN ({positions}) ORDER BY position"
            );
            let bounds = [to_db(after), to_db(head), limit(max_count)]
                .map(rusqlite::types::Value::Integer);
            let params = params_from_iter(bounds.into_iter().chain(values));
            query_page(conn, &path, &sql, params, max_count, head)
        })
        .await
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.write(move |reply| Job::Snapshot(snapshot, reply))
            .await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        let stream = stream.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| query_snapshot(conn, &path, &stream))
            .await
    }

    /// Both reads on one reader connection, in one step of the blocking pool: the snapshot,
    /// then the events after its version (a commit in between only adds events after them).
    async fn read_from_snapshot(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Result<SnapshotAndEvents, StoreError> {
        let stream = stream.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let snapshot = query_snapshot(conn, &path, &stream)?;
            let from = snapshot.as_ref().map_or(1, |snapshot| snapshot.version + 1);
            let events = if max_count == 0 {
                Vec::new()
            } else {
                query_events(
                    conn,
                    &path,
                    &format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND version >= ?2 ORDER BY version ASC LIMIT ?3"
                    ),
                    params![stream, to_db(from), limit(max_count)],
                )?
            };
            Ok(SnapshotAndEvents { snapshot, events })
        })
        .await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write(move |reply| Job::Checkpoint(name, position, reply))
            .await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let name = name.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let position: Option<i64> = conn
                .prepare_cached(LOAD_CHECKPOINT_SQL)
                .and_then(|mut stmt| stmt.query_row([&name], |row| row.get(0)).optional())
                .map_err(|e| backend("loading a checkpoint", &path, e))?;
            position
                .map(|p| from_db(p, || format!("checkpoint `{name}`"), "the position"))
                .transpose()
        })
        .await
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let fail = |e: rusqlite::Error| backend("listing checkpoints", &path, e);
            let mut stmt = conn
                .prepare_cached("SELECT name, position FROM checkpoints ORDER BY name")
                .map_err(fail)?;
            let mut rows = stmt.query([]).map_err(fail)?;
            let mut all = Vec::new();
            while let Some(row) = rows.next().map_err(fail)? {
                let name: String = row.get(0).map_err(fail)?;
                let location = || format!("checkpoint `{name}`");
                let position = from_db(
                    row.get(1)
                        .map_err(|e| undecodable(location, "the position", &e))?,
                    location,
                    "the position",
                )?;
                all.push((name, position));
            }
            Ok(all)
        })
        .await
    }

    /// Walks the index of `(stream_id, version)` from the page's first id.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let (prefix, end) = (prefix.to_owned(), prefix_end(prefix));
        let after = after.map(str::to_owned);
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let fail = |e: rusqlite::Error| backend("listing streams", &path, e);
            // The other columns of a row with `MAX(version)` are that row's (SQLite's rule).
            let mut stmt = conn
                .prepare_cached(
                    "SELECT stream_id, MAX(version), position, recorded_at FROM events \
                     WHERE stream_id >= ?1 AND (?2 IS NULL OR stream_id < ?2) \
                     AND (?3 IS NULL OR stream_id > ?3) \
                     GROUP BY stream_id ORDER BY stream_id LIMIT ?4",
                )
                .map_err(fail)?;
            let mut rows = stmt
                .query(params![prefix, end, after, limit(max)])
                .map_err(fail)?;
            let mut streams = Vec::new();
            while let Some(row) = rows.next().map_err(fail)? {
                let stream_id: String = row.get(0).map_err(fail)?;
                let location = || format!("stream `{stream_id}`");
                streams.push(StreamInfo {
                    version: from_db(row.get(1).map_err(fail)?, location, "the version")?,
                    last_position: from_db(row.get(2).map_err(fail)?, location, "the position")?,
                    last_recorded_at: nanos_to_time(row.get(3).map_err(fail)?),
                    stream_id,
                });
            }
            Ok(streams)
        })
        .await
    }

    async fn list_snapshots(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let after = after.map(str::to_owned);
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let fail = |e: rusqlite::Error| backend("listing snapshots", &path, e);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT stream_id, version FROM snapshots WHERE (?1 IS NULL OR stream_id > ?1) ORDER BY stream_id LIMIT ?2",
                )
                .map_err(fail)?;
            let mut rows = stmt.query(params![after, limit(max)]).map_err(fail)?;
            let mut all = Vec::new();
            while let Some(row) = rows.next().map_err(fail)? {
                let stream: String = row.get(0).map_err(fail)?;
                let location = || format!("snapshot of `{stream}`");
                let version = from_db(
                    row.get(1).map_err(|e| undecodable(location, "the version", &e))?,
                    location,
                    "the version",
                )?;
                all.push((stream, version));
            }
            Ok(all)
        })
        .await
    }

    /// One statement, so the counts are of one state of the file.
    async fn count_events(&self) -> Result<EventCounts, StoreError> {
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let fail = |e: rusqlite::Error| backend("counting events", &path, e);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT event_type, COUNT(*), (SELECT COUNT(DISTINCT stream_id) FROM events) \
                     FROM events GROUP BY event_type ORDER BY event_type",
                )
                .map_err(fail)?;
            let mut rows = stmt.query([]).map_err(fail)?;
            let mut counts = EventCounts::default();
            while let Some(row) = rows.next().map_err(fail)? {
                let count = from_db(row.get(1).map_err(fail)?, || "events".into(), "a count")?;
                counts.streams = from_db(row.get(2).map_err(fail)?, || "events".into(), "a count")?;
                counts.events += count;
                counts.by_type.push((row.get(0).map_err(fail)?, count));
            }
            Ok(counts)
        })
        .await
    }

    async fn count_dead_letters(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            counts_by_handler(
                conn,
                &path,
                "SELECT handler, COUNT(*) FROM dead_letters GROUP BY handler ORDER BY handler",
                "dead letters",
            )
        })
        .await
    }

    async fn save_dead_letter(&self, entry: DeadLetter) -> Result<(), StoreError> {
        self.write(move |reply| Job::SaveDeadLetter(Box::new(entry), reply))
            .await
    }

    async fn list_dead_letters(
        &self,
        handler: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        if max == 0 || after >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let handler = handler.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            query_dead_letters(
                conn,
                &path,
                "WHERE handler = ?1 AND position > ?2 ORDER BY position, event_id LIMIT ?3",
                params![handler, to_db(after), limit(max)],
            )
        })
        .await
    }

    async fn load_dead_letter(
        &self,
        handler: &str,
        event_id: Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let handler = handler.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            Ok(query_dead_letters(
                conn,
                &path,
                "WHERE handler = ?1 AND event_id = ?2",
                params![handler, event_id.as_bytes().as_slice()],
            )?
            .pop())
        })
        .await
    }

    async fn delete_dead_letter(&self, handler: &str, event_id: Uuid) -> Result<bool, StoreError> {
        let handler = handler.to_owned();
        self.write(move |reply| Job::DeleteDeadLetter(handler, event_id, reply))
            .await
    }

    async fn save_request(&self, request: HandlerRequest) -> Result<(), StoreError> {
        if self.inner.inspection {
            return self
                .write_request(move |conn| save_request_row(conn, &request).map(drop))
                .await;
        }
        self.write(move |reply| Job::SaveRequest(request, reply))
            .await
    }

    async fn list_requests(
        &self,
        handler: &str,
        max: usize,
    ) -> Result<Vec<HandlerRequest>, StoreError> {
        let handler = handler.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            query_requests(
                conn,
                &path,
                "WHERE handler = ?1 AND failed IS NULL ORDER BY id LIMIT ?2",
                params![handler, limit(max)],
            )
        })
        .await
    }

    async fn count_requests(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            counts_by_handler(
                conn,
                &path,
                "SELECT handler, COUNT(*) FROM requests WHERE failed IS NULL GROUP BY handler ORDER BY handler",
                "handler requests",
            )
        })
        .await
    }

    async fn load_request(
        &self,
        handler: &str,
        id: Uuid,
    ) -> Result<Option<HandlerRequest>, StoreError> {
        let handler = handler.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            Ok(query_requests(
                conn,
                &path,
                "WHERE handler = ?1 AND id = ?2",
                params![handler, id.as_bytes().as_slice()],
            )?
            .pop())
        })
        .await
    }

    async fn delete_request(&self, handler: &str, id: Uuid) -> Result<bool, StoreError> {
        let handler = handler.to_owned();
        if self.inner.inspection {
            return self
                .write_request(move |conn| delete_request_row(conn, &handler, id).map(|n| n > 0))
                .await;
        }
        self.write(move |reply| Job::DeleteRequest(handler, id, reply))
            .await
    }

    async fn save_saga_state(
        &self,
        saga: &str,
        instance: &str,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (saga, instance) = (saga.to_owned(), instance.to_owned());
        self.write(move |reply| Job::SaveSaga(saga, instance, state, reply))
            .await
    }

    async fn load_saga_state(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (saga, instance) = (saga.to_owned(), instance.to_owned());
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            conn.prepare_cached("SELECT state FROM saga_state WHERE saga = ?1 AND instance = ?2")
                .and_then(|mut stmt| {
                    stmt.query_row(params![saga, instance], |row| row.get(0))
                        .optional()
                })
                .map_err(|e| backend("loading a saga state", &path, e))
        })
        .await
    }

    async fn delete_saga_state(&self, saga: &str, instance: &str) -> Result<bool, StoreError> {
        let (saga, instance) = (saga.to_owned(), instance.to_owned());
        self.write(move |reply| Job::DeleteSaga(saga, instance, reply))
            .await
    }

    async fn list_saga_instances(
        &self,
        saga: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let saga = saga.to_owned();
        let after = after.map(str::to_owned);
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let fail = |e: rusqlite::Error| backend("listing saga instances", &path, e);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT instance FROM saga_state WHERE saga = ?1 AND (?2 IS NULL OR instance > ?2) ORDER BY instance LIMIT ?3",
                )
                .map_err(fail)?;
            let rows = stmt
                .query_map(params![saga, after, limit(max)], |row| row.get(0))
                .map_err(fail)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(fail)
        })
        .await
    }

    /// A due time beyond about 292,000 years from 1970 is clamped (see the [module docs](self)).
    async fn schedule_timeout(&self, timeout: Timeout) -> Result<(), StoreError> {
        self.write(move |reply| Job::ScheduleTimeout(timeout, reply))
            .await
    }

    async fn due_timeouts(
        &self,
        saga: &str,
        now: SystemTime,
        max: usize,
    ) -> Result<Vec<Timeout>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let saga = saga.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let fail = |e: rusqlite::Error| backend("reading due timeouts", &path, e);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, instance, due_at, payload FROM timeouts WHERE saga = ?1 AND due_at <= ?2 ORDER BY due_at, id LIMIT ?3",
                )
                .map_err(fail)?;
            let mut rows = stmt
                .query(params![saga, time_to_micros(now), limit(max)])
                .map_err(fail)?;
            let mut due = Vec::new();
            while let Some(row) = rows.next().map_err(fail)? {
                due.push(decode_timeout(row, &saga)?);
            }
            Ok(due)
        })
        .await
    }

    async fn next_timeout(&self, saga: &str) -> Result<Option<SystemTime>, StoreError> {
        let saga = saga.to_owned();
        let path = self.path().to_path_buf();
        self.read(move |conn| {
            let due_at: Option<i64> = conn
                .prepare_cached("SELECT MIN(due_at) FROM timeouts WHERE saga = ?1")
                .and_then(|mut stmt| stmt.query_row([&saga], |row| row.get(0)))
                .map_err(|e| backend("reading the next timeout", &path, e))?;
            due_at
                .map(|micros| micros_to_time(micros, || format!("the timeouts of saga `{saga}`")))
                .transpose()
        })
        .await
    }

    async fn delete_timeout(&self, saga: &str, id: Uuid) -> Result<bool, StoreError> {
        let saga = saga.to_owned();
        self.write(move |reply| Job::DeleteTimeout(saga, id, reply))
            .await
    }

    async fn cancel_timeouts(&self, saga: &str, instance: &str) -> Result<usize, StoreError> {
        let (saga, instance) = (saga.to_owned(), instance.to_owned());
        self.write(move |reply| Job::CancelTimeouts(saga, instance, reply))
            .await
    }
}

/// Decodes a timeout row of saga `saga` (columns `id, instance, due_at, payload`); an
/// undecodable row is an integrity error naming the saga and, when it decodes, the id.
fn decode_timeout(row: &rusqlite::Row<'_>, saga: &str) -> Result<Timeout, StoreError> {
    let id = row
        .get::<_, Vec<u8>>(0)
        .map_err(|e| e.to_string())
        .and_then(|bytes| Uuid::from_slice(&bytes).map_err(|e| e.to_string()));
    let location = || match &id {
        Ok(id) => format!("timeout {id} of saga `{saga}`"),
        Err(_) => format!("a timeout of saga `{saga}`"),
    };
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Integrity {
        location: location(),
        reason: format!("the timeout's {what} does not decode ({e}); repair or remove the row"),
    };
    let due_at: i64 = row.get(2).map_err(|e| corrupt("due time", &e))?;
    Ok(Timeout {
        id: *id.as_ref().map_err(|e| corrupt("id", e))?,
        saga: saga.to_owned(),
        instance: row.get(1).map_err(|e| corrupt("instance", &e))?,
        due_at: micros_to_time(due_at, location)?,
        payload: row.get(3).map_err(|e| corrupt("payload", &e))?,
    })
}

/// Saves `request` (replacing one with its id): the number of rows written.
fn save_request_row(conn: &Connection, request: &HandlerRequest) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO requests (id, handler, action, event_id, requested_at, failed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        request.id.as_bytes().as_slice(),
        request.handler,
        request.action.as_str(),
        request.action.event_id().map(|id| id.as_bytes().to_vec()),
        time_to_nanos(request.requested_at),
        request.failed
    ])
}

/// Deletes the request `id` of `handler`: the number of rows deleted.
fn delete_request_row(conn: &Connection, handler: &str, id: Uuid) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM requests WHERE handler = ?1 AND id = ?2")?
        .execute(params![handler, id.as_bytes().as_slice()])
}

/// The requests `condition` selects; a row that does not decode is an integrity error.
fn query_requests(
    conn: &Connection,
    path: &Path,
    condition: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<HandlerRequest>, StoreError> {
    let sql = format!(
        "SELECT id, handler, action, event_id, requested_at, failed FROM requests {condition}"
    );
    let fail = |e: rusqlite::Error| backend("reading handler requests", path, e);
    let mut stmt = conn.prepare_cached(&sql).map_err(fail)?;
    let mut rows = stmt.query(params).map_err(fail)?;
    let mut requests = Vec::new();
    while let Some(row) = rows.next().map_err(fail)? {
        let id: Vec<u8> = row.get(0).map_err(fail)?;
        let handler: String = row.get(1).map_err(fail)?;
        let action: String = row.get(2).map_err(fail)?;
        let event_id: Option<Vec<u8>> = row.get(3).map_err(fail)?;
        let requested_at: i64 = row.get(4).map_err(fail)?;
        let failed: Option<String> = row.get(5).map_err(fail)?;
        let id = Uuid::from_slice(&id).ok();
        let event_id = event_id.map(|e| Uuid::from_slice(&e).ok());
        requests.push(decode_request(
            id,
            handler,
            &action,
            event_id,
            nanos_to_time(requested_at),
            failed,
        )?);
    }
    Ok(requests)
}

fn query_dead_letters(
    conn: &Connection,
    path: &Path,
    condition: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<DeadLetter>, StoreError> {
    let sql = format!(
        "SELECT position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at, handler, error, attempts, first_failed_at, last_failed_at, kind, reason, raw_row FROM dead_letters {condition}"
    );
    let fail = |e: rusqlite::Error| backend("reading dead letters", path, e);
    let mut stmt = conn.prepare_cached(&sql).map_err(fail)?;
    let mut rows = stmt.query(params).map_err(fail)?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next().map_err(fail)? {
        let event = decode_event(row, &mut None)?;
        let attempts: i64 = row.get(11).map_err(fail)?;
        let handler: String = row.get(9).map_err(fail)?;
        let location = || {
            format!(
                "the dead letter of handler `{handler}` for event {}",
                event.event_id
            )
        };
        let kind: String = row.get(14).map_err(fail)?;
        let kind = decode_failure_kind(&kind, location)?;
        let raw_row = decode_raw_row(row.get(16).map_err(fail)?, location)?;
        entries.push(DeadLetter {
            kind,
            reason: row.get(15).map_err(fail)?,
            raw_row,
            error: row.get(10).map_err(fail)?,
            handler,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            first_failed_at: nanos_to_time(row.get(12).map_err(fail)?),
            last_failed_at: nanos_to_time(row.get(13).map_err(fail)?),
            event: Arc::new(event),
        });
    }
    Ok(entries)
}

/// The rows of `sql` (a handler and a count, grouped by handler), counting `what` (its words in
/// an error): `count_dead_letters` and `count_requests`.
fn counts_by_handler(
    conn: &Connection,
    path: &Path,
    sql: &str,
    what: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let fail = |e: rusqlite::Error| backend(&format!("counting {what}"), path, e);
    let mut stmt = conn.prepare_cached(sql).map_err(fail)?;
    let mut rows = stmt.query([]).map_err(fail)?;
    let mut all = Vec::new();
    while let Some(row) = rows.next().map_err(fail)? {
        let handler: String = row.get(0).map_err(fail)?;
        let count = from_db(
            row.get(1).map_err(fail)?,
            || format!("{what} of `{handler}`"),
            "a count",
        )?;
        all.push((handler, count));
    }
    Ok(all)
}
#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::UNIX_EPOCH;

    use super::*;

    /// A temporary directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        /// A new, empty directory.
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("evoq-sqlite-unit-{}", Uuid::now_v7()));
            std::fs::create_dir_all(&dir).expect("create a temporary directory");
            TempDir(dir)
        }
    }

    /// A `Deposited` event carrying `data`.
    fn deposited(data: Vec<u8>) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: Cow::Borrowed("Deposited"),
            schema_version: 1,
            data,
            metadata: Default::default(),
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A writer on a fresh file in a temporary directory, driven by hand.
    fn writer() -> (Writer, TempDir) {
        let temp = TempDir::new();
        let path = temp.0.join("events.db");
        let connector = SqliteConnector {
            path: path.clone(),
            options: SqliteOptions::default(),
        };
        let Opened { conn, head, lock } = open_file(&connector).expect("open");
        drop(lock);
        let writer = Writer {
            conn,
            path,
            next_position: head + 1,
            versions: StreamVersions::new(16),
            max_batch: 16,
            head: watch::Sender::new(head),
            busy_timeout: Duration::from_secs(5),
        };
        (writer, temp)
    }

    /// Commits 8 appends of a 32 KB event each (about 70 pages of the WAL) and returns the size
    /// of the `-wal` file after the commit.
    fn commit_large(writer: &mut Writer) -> u64 {
        let jobs: Vec<Job> = (0..8)
            .map(|i| {
                let (mut job, _) = append(&format!("Account-{i}"), None);
                if let Job::Append { events, .. } = &mut job {
                    events[0].data = vec![b'7'; 32 * 1024];
                }
                job
            })
            .collect();
        assert!(writer.commit_group(jobs).is_ok(), "the batch commits");
        let wal = writer.path.with_file_name("events.db-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }

    /// A WAL frame: a page and its header.
    const FRAME: u64 = 4096 + 24;

    #[test]
    fn the_writer_checkpoints_the_wal_at_four_thousand_pages_not_one_thousand() {
        let (mut writer, _dir) = writer();
        // About 10,500 pages: two checkpoints and more.
        let largest = (0..150).map(|_| commit_large(&mut writer)).max();
        let largest = largest.unwrap_or(0);
        assert!(
            largest > 3_000 * FRAME,
            "the WAL grows past SQLite's default of 1,000 pages before a checkpoint ({largest} bytes)"
        );
        assert!(
            largest < (u64::from(WAL_CHECKPOINT_PAGES) + 200) * FRAME,
            "the writer checkpoints at {WAL_CHECKPOINT_PAGES} pages and the WAL starts again ({largest} bytes)"
        );
        assert_eq!(count(&writer, "events"), 150 * 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_under_its_bound_while_appends_go_on() {
        let temp = TempDir::new();
        let dir = temp.0.clone();
        let store = SqliteStore::open(dir.join("events.db"))
            .await
            .expect("open");
        let wal = dir.join("events.db-wal");
        let mut largest_wal = 0;
        // 48 MB of events from 16 writers at a time, with a flush now and then.
        for round in 0..96u64 {
            let appends = (0..16u64).map(|i| {
                let store = store.clone();
                async move {
                    let event = deposited(vec![b'7'; 32 * 1024]);
                    store
                        .append(&format!("Account-{i}"), ExpectedVersion::Any, vec![event])
                        .await
                }
            });
            for appended in join_spawned(appends).await {
                appended.expect("every append commits");
            }
            if round % 32 == 31 {
                store.flush().await.expect("a flush");
            }
            largest_wal = largest_wal.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        let bound = (u64::from(WAL_CHECKPOINT_PAGES) + 1_000) * FRAME;
        assert!(
            largest_wal < bound,
            "the `-wal` file stays under {bound} bytes ({largest_wal})"
        );
        assert_eq!(store.count_events().await.expect("count").events, 96 * 16);
        store.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_waits_out_a_checkpoint_another_connection_is_running() {
        let temp = TempDir::new();
        let dir = temp.0.clone();
        let path = dir.join("events.db");
        let store = SqliteStore::open(&path).await.expect("open");
        // Another connection on the file (a SQL read model's, a `sqlite3` shell) checkpointing
        // the WAL over and over: while it holds the checkpoint lock, SQLite answers a second
        // checkpoint with "busy" at once, without waiting.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let other = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let conn = Connection::open(&path).expect("a second connection");
                let mut checkpoints = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                        .expect("a passive checkpoint");
                    checkpoints += 1;
                }
                checkpoints
            })
        };
        for round in 0..200u64 {
            let event = deposited(vec![b'7'; 64 * 1024]);
            store
                .append(
                    &format!("Account-{}", round % 8),
                    ExpectedVersion::Any,
                    vec![event],
                )
                .await
                .expect("an append");
            if let Err(error) = store.flush().await {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("flush {round} failed: {error}");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(other.join().expect("the other connection") > 0);
        assert_eq!(store.count_events().await.expect("count").events, 200);
        store.close().await.expect("close");
        assert!(
            !dir.join("events.db-wal").exists(),
            "the WAL is checkpointed and removed on close"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_held_up_past_the_busy_timeout_fails_naming_the_wait_and_loses_nothing() {
        let temp = TempDir::new();
        let dir = temp.0.clone();
        let path = dir.join("events.db");
        let options = SqliteOptions::default().busy_timeout(Duration::from_millis(200));
        let store = SqliteStore::open_with(&path, options).await.expect("open");
        let append = || {
            store.append(
                "Account-1",
                ExpectedVersion::Any,
                vec![deposited(b"{}".to_vec())],
            )
        };
        append().await.expect("an append");
        // A reader on another connection keeps a snapshot open across a later commit: the WAL
        // cannot be emptied under it.
        let reader = Connection::open(&path).expect("a second connection");
        reader.execute_batch("BEGIN").expect("begin");
        let seen: i64 = reader
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
            .expect("a read");
        assert_eq!(seen, 1);
        append().await.expect("an append");
        let started = std::time::Instant::now();
        let error = store.flush().await.expect_err("the reader holds the WAL");
        let waited = started.elapsed();
        let message = error.to_string();
        assert!(
            message.contains("kept the WAL busy for 200ms") && message.contains("events.db"),
            "{message}"
        );
        assert!(waited >= Duration::from_millis(200), "waited {waited:?}");
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
        reader.execute_batch("COMMIT").expect("end the read");
        drop(reader);
        store
            .flush()
            .await
            .expect("a flush once the reader is gone");
        assert_eq!(store.count_events().await.expect("count").events, 2);
        store.close().await.expect("close");
    }

    /// Runs `futures` concurrently on the runtime and returns their outputs in order.
    async fn join_spawned<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut outputs = Vec::with_capacity(handles.len());
        for handle in handles {
            outputs.push(handle.await.expect("the append's task"));
        }
        outputs
    }

    /// An append of one event to `stream`, recording `command` if set, and its answer.
    fn append(
        stream: &str,
        command: Option<NewCommand>,
    ) -> (Job, oneshot::Receiver<Result<Appended, StoreError>>) {
        append_tagged(stream, &[], command, None)
    }

    /// An append of one event tagged `tags` to `stream`, recording `command` if set, under
    /// `condition` if set, and its answer.
    fn append_tagged(
        stream: &str,
        tags: &[&str],
        command: Option<NewCommand>,
        condition: Option<AppendCondition>,
    ) -> (Job, oneshot::Receiver<Result<Appended, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let mut event = deposited(b"{}".to_vec());
        event.metadata.tags = tags.iter().copied().collect();
        let job = Job::Append {
            stream: stream.to_owned(),
            expected: ExpectedVersion::Any,
            events: vec![event],
            command,
            condition,
            reply,
        };
        (job, answer)
    }

    /// A checked command with idempotency key `key`.
    fn command(key: &str) -> NewCommand {
        NewCommand {
            command_id: Uuid::now_v7(),
            idempotency_key: Some(key.to_owned()),
            command: Cow::Borrowed("Deposit"),
            aggregate: Cow::Borrowed("Account"),
            deduplicate_since: Some(UNIX_EPOCH),
        }
    }

    /// How many rows `table` holds.
    fn count(writer: &Writer, table: &str) -> i64 {
        writer
            .conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .expect("count")
    }

    #[test]
    fn a_second_run_of_a_command_in_the_same_batch_sees_the_first() {
        let (mut writer, _dir) = writer();
        let first = command("once");
        let (one, one_answer) = append("Account-a", Some(first.clone()));
        let (two, two_answer) = append("Account-b", Some(command("once")));
        let (plain, plain_answer) = append("Account-c", None);
        assert!(
            writer.commit_group(vec![one, two, plain]).is_ok(),
            "the batch commits"
        );
        let one_answer = one_answer.blocking_recv().expect("an answer");
        assert_eq!(one_answer.expect("the first run wins").version, 1);
        match two_answer.blocking_recv().expect("an answer") {
            Err(StoreError::DuplicateCommand { record }) => {
                assert_eq!(
                    record.command_id, first.command_id,
                    "it names the first run"
                );
                assert_eq!(record.stream_id, "Account-a");
            }
            other => panic!("the second run must be a duplicate, got {other:?}"),
        }
        let plain_answer = plain_answer.blocking_recv().expect("an answer");
        assert_eq!(
            plain_answer.expect("the batch goes on").first_position,
            2,
            "the duplicate took no position"
        );
        assert_eq!(
            count(&writer, "events"),
            2,
            "the duplicate appended nothing"
        );
        assert_eq!(count(&writer, "commands"), 1, "one entry: the first run's");
    }

    #[test]
    fn a_conditional_append_sees_the_appends_before_it_in_its_batch_and_fails_alone() {
        let (mut writer, _dir) = writer();
        let unlent = AppendCondition {
            query: EventQuery::tag("book:b1"),
            after: 0,
        };
        let (lend, lend_answer) = append_tagged("Lending-1", &["book:b1"], None, None);
        let (again, again_answer) = append_tagged(
            "Lending-2",
            &["book:b1", "member:m1"],
            Some(command("lend-b1")),
            Some(unlent.clone()),
        );
        let (plain, plain_answer) = append("Account-c", None);
        let (other, other_answer) = append_tagged(
            "Lending-3",
            &["book:b2"],
            None,
            Some(AppendCondition {
                query: EventQuery::tag("book:b2"),
                after: 0,
            }),
        );
        assert!(
            writer.commit_group(vec![lend, again, plain, other]).is_ok(),
            "the batch commits"
        );
        let lend_answer = lend_answer.blocking_recv().expect("an answer");
        assert_eq!(lend_answer.expect("the first lend").first_position, 1);
        match again_answer.blocking_recv().expect("an answer") {
            Err(StoreError::ConditionFailed {
                stream, position, ..
            }) => {
                assert_eq!(stream, "Lending-2");
                assert_eq!(position, 1, "the lend of the same batch violates it");
            }
            other => panic!("the second lend must be refused, got {other:?}"),
        }
        let plain_answer = plain_answer.blocking_recv().expect("an answer");
        assert_eq!(
            plain_answer.expect("the batch goes on").first_position,
            2,
            "the refused append took no position"
        );
        let other_answer = other_answer.blocking_recv().expect("an answer");
        assert_eq!(
            other_answer
                .expect("another book's condition holds")
                .first_position,
            3
        );
        assert_eq!(
            count(&writer, "events"),
            3,
            "the refused append wrote no event"
        );
        assert_eq!(
            count(&writer, "event_tags"),
            2,
            "one index row per tag of the stored events, none for the refused one"
        );
        assert_eq!(
            count(&writer, "commands"),
            0,
            "the refused command is not recorded"
        );
    }

    #[test]
    fn a_batch_that_rolls_back_records_no_command() {
        let (mut writer, _dir) = writer();
        // A foreign row where the batch's second append goes, so that its insert fails.
        writer
            .conn
            .execute(
                "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at) VALUES (2, 'Foreign', 1, X'00', 'T', 1, X'', X'7B7D', 0)",
                [],
            )
            .expect("insert a foreign row");
        let checked = command("rolled-back");
        let (one, mut one_answer) = append("Account-a", Some(checked));
        let (two, _two_answer) = append("Account-b", None);
        let back = writer
            .commit_group(vec![one, two])
            .expect_err("the failed batch gives its jobs back");
        assert!(
            matches!(
                &back[..],
                [Job::Append { stream: a, .. }, Job::Append { stream: b, .. }]
                    if a == "Account-a" && b == "Account-b"
            ),
            "every job comes back whole, the one applied before the failure too, to be tried alone"
        );
        assert!(
            one_answer.try_recv().is_err(),
            "the rolled-back job is not answered yet"
        );
        assert_eq!(count(&writer, "commands"), 0, "the rollback took the entry");
        let mut back = back.into_iter();
        let again = back.next().expect("the first job");
        assert!(writer.commit_group(vec![again]).is_ok());
        let answer = one_answer.blocking_recv().expect("an answer");
        assert_eq!(
            answer.expect("the command runs again").version,
            1,
            "its first run left nothing"
        );
        assert_eq!(count(&writer, "commands"), 1);
    }

    #[test]
    fn the_stream_cache_holds_at_most_its_capacity_and_keeps_the_streams_used_last() {
        let mut cache = StreamVersions::new(10);
        for i in 0..1_000u64 {
            cache.insert(format!("S-{i}"), i);
            assert!(cache.len() <= 10, "{} streams kept", cache.len());
        }
        for i in 995..1_000u64 {
            assert_eq!(
                cache.get(&format!("S-{i}")),
                Some(i),
                "the last five are kept"
            );
        }
        assert_eq!(cache.get("S-0"), None, "the first is long gone");
        cache.insert("S-999".into(), 1_000);
        assert_eq!(
            cache.get("S-999"),
            Some(1_000),
            "an insert replaces the version"
        );

        let mut cache = StreamVersions::new(4);
        cache.insert("hot".into(), 1);
        for i in 0..100u64 {
            cache.insert(format!("cold-{i}"), i);
            assert_eq!(cache.get("hot"), Some(1), "a stream used every time stays");
        }

        let mut off = StreamVersions::new(0);
        off.insert("a".into(), 1);
        assert_eq!(
            (off.get("a"), off.len()),
            (None, 0),
            "capacity 0 keeps nothing"
        );
    }

    #[test]
    fn a_connection_of_the_same_application_writes_its_tables_while_the_store_is_open() {
        let temp = TempDir::new();
        let dir = temp.0.clone();
        let path = dir.join("events.db");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        runtime.block_on(async {
            let store = SqliteStore::open(&path).await.expect("open");
            store
                .append(
                    "Account-a",
                    ExpectedVersion::NoStream,
                    vec![deposited(b"{}".to_vec())],
                )
                .await
                .expect("append");
            let conn = store
                .connector()
                .open()
                .expect("the store's lock does not refuse its own application");
            conn.execute_batch(
                "CREATE TABLE balances (account TEXT PRIMARY KEY, balance INTEGER NOT NULL);
                 INSERT INTO balances VALUES ('a', 100);",
            )
            .expect("a read model writes its own tables");
            let events: i64 = conn
                .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
                .expect("and reads the events");
            assert_eq!(events, 1);
            store
                .save_checkpoint("balances", 1)
                .await
                .expect("the store writes on beside it");
            drop(conn);
            store.close().await.expect("close");
        });
        let conn = Connection::open(&path).expect("raw open");
        let balance: i64 = conn
            .query_row(
                "SELECT balance FROM balances WHERE account = 'a'",
                [],
                |row| row.get(0),
            )
            .expect("the read model's row is in the file");
        assert_eq!(balance, 100);
    }
}
