use std::sync::Arc;
use std::time::Duration;

use super::command_log::CommandRecord;
use super::expected_version::ExpectedVersion;

/// An error of the event store.
///
/// [`Clone`]: one failure can answer several callers (the PostgreSQL store's group-commit writer
/// gives each append of a batch that failed as a whole a copy of the batch's error), and a
/// copy says exactly what the original says.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the version the append expected; nothing was appended.
    #[error(
        "wrong expected version for stream `{stream}`: the append expected {expected}, but the stream is at version {actual}; nothing was appended"
    )]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's actual version.
        actual: u64,
    },
    /// The command already ran: the command log holds `record`, of the same command id or
    /// idempotency key; nothing was appended. See
    /// [`EventStore::append_command`](super::EventStore::append_command).
    #[error(
        "command `{}` ({}) already ran on `{}`, recorded at version {}; nothing was appended",
        record.command,
        record.idempotency_key.as_ref().map_or_else(|| format!("command id {}", record.command_id), |key| format!("idempotency key `{key}`")),
        record.stream_id,
        record.version
    )]
    DuplicateCommand {
        /// The entry of the first run.
        record: Box<CommandRecord>,
    },
    /// A conditional append was refused: an event matching its condition's query was appended
    /// after the position the condition names; nothing was appended. See
    /// [`EventStore::append_if`](super::EventStore::append_if).
    #[error(
        "the append to stream `{stream}` was refused: an event matching {query} was appended at position {position}, after position {after} that the decision read up to; nothing was appended (read again and decide again)"
    )]
    ConditionFailed {
        /// The stream the append was for.
        stream: String,
        /// The condition's query, as text.
        query: String,
        /// The position the condition allowed matching events up to.
        after: u64,
        /// The position of a matching event above `after`.
        position: u64,
    },
    /// Stored data is corrupt or does not satisfy the store's invariants; never retried.
    #[error("integrity error in the event store at {location}: {reason}")]
    Integrity {
        /// Where (stream and version, table, ...).
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend failed (I/O, connection, ...); the operation may be retried.
    #[error("event store backend `{backend}` failed: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What failed.
        message: String,
    },
    /// The database holds a schema written by a newer version of evoq; nothing was changed.
    #[error(
        "the {backend} event store at {location} has schema version {found}, newer than the {supported} this version of evoq knows: upgrade evoq, or open another database"
    )]
    SchemaTooNew {
        /// Which backend.
        backend: &'static str,
        /// Which database (file path, or schema name; never a password).
        location: String,
        /// The version found in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The store's file is already open in another process (or, in this one, by a store that
    /// is closing); nothing was read or changed. One process at a time opens a file: stop that
    /// process first, or use PostgreSQL for several processes or nodes.
    #[error(
        "the {backend} event store at {location} is already open in {holder}; nothing was changed: one process at a time opens a file, so stop that process first (to share events between several processes or nodes, use PostgreSQL)"
    )]
    Locked {
        /// Which backend.
        backend: &'static str,
        /// Which database (file path).
        location: String,
        /// Who holds it: `process 1234 ...`, `this process (pid 1234) ...`, or a process that
        /// has not recorded its id yet.
        holder: String,
    },
    /// The store cannot write its database (file permissions, a read-only file system, a
    /// directory where it cannot create its side files); nothing was changed.
    #[error(
        "the {backend} event store at {location} cannot be written ({reason}): evoq writes the database file and, beside it, its `-wal`, `-shm` and `-lock` files; make the file and its directory writable by this process, or open a writable copy"
    )]
    ReadOnly {
        /// Which backend.
        backend: &'static str,
        /// Which database (file path).
        location: String,
        /// What cannot be written, and the system's error.
        reason: String,
    },
    /// The database is not an evoq event store (another application's tables, or not a database
    /// at all); nothing in it was changed.
    #[error(
        "{location} is not an evoq {backend} event store ({found}); nothing in it was changed: give evoq a new or empty file, or one that evoq created"
    )]
    NotAnEventStore {
        /// Which backend.
        backend: &'static str,
        /// Which database (file path).
        location: String,
        /// What was found instead (some of its tables, or why it is not a database).
        found: String,
    },
    /// The location given to the store cannot hold its database: an empty path, a name that is
    /// not a file (SQLite's `:memory:`, a `file:` URI), a directory, or a file in a directory
    /// that does not exist. Nothing was created. Give the path of a file in an existing
    /// directory (for events that need not outlive the process, the in-memory store).
    #[error("{location} cannot hold the {backend} event store: {reason}; nothing was created")]
    InvalidLocation {
        /// Which backend.
        backend: &'static str,
        /// The location as given.
        location: String,
        /// What is wrong with it, and what to give instead.
        reason: String,
    },
    /// The store was closed (`SqliteStore::close`); nothing was read or written. Open the file
    /// again for a new store.
    #[error("the {backend} event store at {location} is closed; nothing was done: open it again")]
    Closed {
        /// Which backend.
        backend: &'static str,
        /// Which database (file path).
        location: String,
    },
    /// The backend did not answer in time: opening a connection (reaching the server, the
    /// handshake, the login) or waiting for one from the pool took longer than the store's
    /// connect timeout. The server may be down, unreachable, or overloaded.
    #[error(
        "event store backend `{backend}` at {location} did not answer within {after:?} while {what}: check that the server runs and answers there, or raise the store's connect timeout"
    )]
    ConnectTimeout {
        /// Which backend.
        backend: &'static str,
        /// Which server (host, port, database; never a password).
        location: String,
        /// What the store was doing.
        what: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// Every connection of the store's pool stayed in use for as long as the store waits for
    /// one (its connect timeout), after the store's retries: the server answers, but the pool
    /// is too small for the work, or something holds its connections long (long transactions,
    /// slow queries, many waiting on a lock). Raise the pool size (`PostgresOptions::pool_size`)
    /// or find what holds the connections (`pg_stat_activity`). Trying again later may work.
    #[error(
        "event store backend `{backend}` at {location} had no free connection while {what}: all {size} pooled connections stayed in use for {waited:?} (after {retries} retries); the server answers, but the pool is too small for the work or something holds its connections long: raise the store's pool size, or look for long transactions and slow queries (`pg_stat_activity`)"
    )]
    PoolExhausted {
        /// Which backend.
        backend: &'static str,
        /// Which server (host, port, database; never a password).
        location: String,
        /// What the store was doing.
        what: String,
        /// The pool's size: how many connections were in use.
        size: usize,
        /// How long it waited for one to come free, each time.
        waited: Duration,
        /// How many times the store tried again.
        retries: u32,
    },
    /// The backend's server could not be reached (the connection was refused, reset or broke
    /// off) while the store was doing something, after the store's retries: the server may be
    /// down, restarting, or listening elsewhere. Trying again later may work.
    #[error(
        "event store backend `{backend}` at {location} could not be reached while {what}: {reason} (after {retries} retries): check that the server runs and listens there"
    )]
    Unreachable {
        /// Which backend.
        backend: &'static str,
        /// Which server (host, port, database; never a password).
        location: String,
        /// What the store was doing.
        what: String,
        /// Why, in the operating system's or the driver's words (`Connection refused`, ...).
        reason: String,
        /// How many times the store tried again.
        retries: u32,
        /// The backend's error.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// A statement waited for a lock that another session holds longer than the store's lock
    /// timeout (PostgreSQL: SQLSTATE `55P03`, `lock_not_available`), again on each of the
    /// store's retries: nothing was changed by it. Another session holds a lock on a table (or
    /// a row) the store needs: an operator's `LOCK TABLE`, a transaction left open. Find it
    /// (`pg_locks` joined with `pg_stat_activity`) and end it, or raise the store's lock
    /// timeout (`PostgresOptions::lock_timeout`). Trying again later may work.
    #[error(
        "event store backend `{backend}` at {location} waited longer than its lock timeout of {after:?} for a lock{} while {what} (after {retries} retries); nothing was changed: another session holds a lock the store needs, so find it (`SELECT a.pid, a.state, a.xact_start, a.query FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.granted AND l.relation IS NOT NULL`) and end its transaction (or `pg_terminate_backend(pid)`), or raise the store's lock timeout",
        relation.as_ref().map_or_else(String::new, |relation| format!(" on {relation}"))
    )]
    LockTimeout {
        /// Which backend.
        backend: &'static str,
        /// Which server (host, port, database; never a password).
        location: String,
        /// What the store was doing.
        what: String,
        /// The table (and row) whose lock it waited for, when the server said:
        /// `relation "checkpoints"`, `tuple (0,1) of relation "evoq_head"`.
        relation: Option<String>,
        /// The lock timeout each wait ran into.
        after: Duration,
        /// How many times the store tried again.
        retries: u32,
    },
    /// The backend refused the operation for a reason that a retry does not fix (a database
    /// that does not exist, a refused login, a missing privilege, ...): it was not retried.
    #[error("event store backend `{backend}` at {location} refused {reason}")]
    Refused {
        /// Which backend.
        backend: &'static str,
        /// Which server (host, port, database; never a password).
        location: String,
        /// The server's error code, when it gave one (PostgreSQL: the SQLSTATE, such as
        /// `3D000` for a database that does not exist, `28P01` for a wrong password).
        code: Option<String>,
        /// What the store was doing, the server's own words, and what to do about it.
        reason: String,
        /// The backend's error.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// A value the backend cannot hold: text with a character it cannot store (PostgreSQL's
    /// text holds no NUL), or an indexed value (a stream id, an idempotency key, a tag) longer
    /// than its indexes take. Nothing was read or written, and no other operation failed with
    /// it. Not retried: the value has to change.
    #[error(
        "event store backend `{backend}` cannot hold the {what} {value}: {reason}; nothing was read or written"
    )]
    Unstorable {
        /// Which backend.
        backend: &'static str,
        /// What the value is: `stream id`, `idempotency key`, `tag`, `event type`,
        /// `command type`, `aggregate type`, or `events of the stream` (data of an append
        /// that the database refused; the value is then the stream id).
        what: &'static str,
        /// The value, quoted and cut to its first 64 characters.
        value: String,
        /// Why, and what to do instead.
        reason: String,
    },
}

impl StoreError {
    /// What a [`StoreError::Unstorable`] names for a stream id (the aggregate id's fault when
    /// a dispatch meets it).
    pub(crate) const STREAM_ID: &'static str = "stream id";

    /// How many characters of a value a [`StoreError::Unstorable`] shows.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) const SHOWN: usize = 64;

    /// The [`StoreError::Unstorable`] of `backend` for `value`, the `what` of an operation,
    /// quoted and cut to its first [`SHOWN`](Self::SHOWN) characters.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn unstorable(
        backend: &'static str,
        what: &'static str,
        value: &str,
        reason: String,
    ) -> StoreError {
        let mut shown: String = value.chars().take(Self::SHOWN).collect();
        if shown.len() < value.len() {
            shown.push_str("...");
        }
        StoreError::Unstorable {
            backend,
            what,
            value: format!("{shown:?}"),
            reason,
        }
    }
}
