//! The PostgreSQL event store (feature `postgres`): one database shared by several application
//! nodes.
//!
//! # How it works
//!
//! - **Connection string** `postgres://user:password@host:port/database` (any form
//!   [tokio-postgres](https://docs.rs/tokio-postgres) accepts), plus [`PostgresOptions`]: the
//!   schema the tables live in (default `evoq`), the pool size, the connect timeout. The
//!   password never appears in an error or a log line.
//! - **One deadline for a connection** ([`PostgresOptions::connect_timeout`], default 10 s):
//!   reaching the server, the handshake and the login of every connection, and the wait for a
//!   free slot of the pool (bounded apart: a call that waits for a slot, then opens a connection
//!   in it, takes up to twice the deadline). [`PostgresStore::connect_with`] as a whole fails within it with
//!   [`StoreError::ConnectTimeout`], naming the host, when the server does not answer (a
//!   listener that accepts and never speaks, a server stuck in its start). A wait for a pooled
//!   connection that ends because all of them stayed in use is told apart: the server answers,
//!   the pool is too small for the work (or something holds its connections long), and it
//!   fails, past the retries, with [`StoreError::PoolExhausted`].
//! - **A deadline for every lock wait** ([`PostgresOptions::lock_timeout`], default 1 s): set
//!   as `lock_timeout` on every session the store opens (pooled, the writer's, the leases',
//!   the listener's) and on those of the PostgreSQL read models on it. A statement that waits
//!   longer for a lock another session holds is ended by the server, retried, and past the
//!   retries fails with [`StoreError::LockTimeout`], naming what the store was doing.
//! - **Versioned schema**, created or migrated on start under an advisory lock (so nodes that
//!   start together do not race), in table `evoq_schema`; a schema written by a newer evoq is
//!   refused with [`StoreError::SchemaTooNew`].
//! - **Gap-free global order.** Every append transaction locks the single row of `evoq_head`
//!   (`UPDATE ... RETURNING`), takes the next positions from it and commits while holding the
//!   lock. So positions are given out in commit order: when a reader sees position `p`, every
//!   position below it is committed and visible, and a transaction that got a lower position can
//!   never become visible after a higher one (the problem of `SEQUENCE`/`IDENTITY` columns,
//!   which readers skip past). The trade-off: appends are serialized across the whole cluster,
//!   one transaction at a time. To keep throughput up, each node groups the appends waiting for
//!   the lock into one transaction (group commit, up to [`PostgresOptions::max_batch`]), so the
//!   lock is taken once per batch rather than once per append. A batch is one call of a
//!   set-based function (a fixed number of statements whatever its size: one lookup of every
//!   stream's version, one insert of every event, one of every command entry), and the writer
//!   lets the callers its last commit answered run their next command before it closes the
//!   next batch, so the more commands are in flight, the more each commit carries.
//! - **Head watch.** A node moves its head after its own commits; the commit also runs
//!   `pg_notify`, and a listener connection (LISTEN) moves the head of every other node. A
//!   periodic poll of `evoq_head` ([`PostgresOptions::poll_interval`], default 1 s) covers a
//!   lost notification or a broken listener (which reconnects with backoff).
//! - **Command log** ([`EventStore::append_command`]): table `commands`, written by the same
//!   append transaction as the command's events. The deduplication check runs inside that
//!   transaction after it took the `evoq_head` lock, so it is serialized with every other append
//!   of the cluster: of two nodes running one command (one idempotency key) at once, exactly one
//!   succeeds. Within a batch, each append sees the entries of the appends before it (a batch
//!   ends before an append that shares a stream, a key or a command id with one in it).
//! - **Tags and conditional appends.** Every tag of an event has a row in `evoq_event_tags`
//!   (tag, position), written by the append's transaction: [`EventStore::read_query`] reads
//!   it item by item of the query, up to the head like `read_all`; [`EventStore::append_if`]
//!   goes through the group-commit writer like every append, and the append function checks
//!   its condition through the index after it took the `evoq_head` lock, before the append
//!   takes its positions (in a batch, against the events of the appends before it too), so of
//!   two nodes appending under conditions that each match the other's events, one fails (see
//!   `postgres/writer.rs`).
//! - **Saga timeouts** (table `timeouts`) keep their due time in microseconds since the Unix
//!   epoch, negative before it. A due time more than about 292,000 years from 1970 is clamped to
//!   that range, never refused (see `time_to_micros` in `store/codec.rs`): it is due, or not,
//!   for every `now` inside the range as it would have been.
//! - **Leases** ([`EventStore::try_lease`]): a session-level advisory lock per subscriber name,
//!   on a connection of its own held by the [`Lease`]. So each handler (and projection, saga)
//!   runs on one node at a time; when the node stops (the lease is dropped) or dies (its
//!   connection closes), the lock is freed and another node's handler, which asks every 200 ms,
//!   takes over from the checkpoint the first node saved. The lock lives as long as that
//!   session: if the connection breaks (a network fault, `pg_terminate_backend`), the server
//!   frees it at once. So [`Lease::confirm`] asks the lease's own connection whether its
//!   session still holds the lock (`pg_locks`), within the connect timeout; the subscription
//!   engine confirms before each page it delivers and each checkpoint it saves, and stops
//!   delivering on this node once the lease is not confirmed.
//! - **Errors a retry fixes** (a connection refused or broken, a server shutting down or
//!   starting, too many connections, a serialization failure or a deadlock, a connect timeout)
//!   are retried with exponential backoff up to [`PostgresOptions::retries`] times. **Errors
//!   it does not fix** (a database that does not exist, a refused login, a missing privilege,
//!   a missing table, ...) fail at once with [`StoreError::Refused`]: the SQLSTATE, the
//!   server's message and what to do, the driver's error as its source. An append whose
//!   connection broke after its statement was sent may have committed: before it tries again,
//!   the writer cancels the statement (should it still run), then looks, on another connection
//!   and under the `evoq_head` lock, for the batch's events by their ids and for its command
//!   entries by their ids and the attempt's time stamp. An append found there is answered with
//!   its stored version and positions (never appended twice, never a conflict with itself); a
//!   batch of which nothing is stored did not commit and is tried again; when the lookup itself
//!   fails, the append fails with an error that says its outcome is unknown.
//! - **What PostgreSQL cannot hold** fails its own call, never a group commit: text with a NUL
//!   character (a stream id, an idempotency key, a tag, a type name), and a stream id,
//!   idempotency key or tag over 2,048 bytes (a B-tree entry holds about 2.7 KB) are refused
//!   before they reach the database, with [`StoreError::Unstorable`] naming the value. Data the
//!   database itself refuses at commit (a constraint or trigger an operator added) makes the
//!   writer commit the batch again in halves, until the append that holds it fails alone.
//!
//! ```no_run
//! # async fn demo() -> Result<(), evoq_runtime::StoreError> {
//! use evoq_runtime::store::postgres::{PostgresOptions, PostgresStore};
//!
//! let store = PostgresStore::connect_with(
//!     "postgres://app:secret@db.example:5432/events",
//!     PostgresOptions::default().schema("billing").pool_size(32),
//! )
//! .await?;
//! # let _ = store;
//! # Ok(())
//! # }
//! ```

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::store::codec::prefix_end;
use crate::store::codec::{
    all_page, column_text, decode_failure_kind, decode_metadata, decode_raw_row, decode_request,
    encode_metadata, encode_raw_row, from_db, micros_to_time, nanos_to_time, redact_url,
    shared_stream_id, time_to_micros, time_to_nanos, to_db, undecodable_reason,
};
use crate::store::{
    AllPage, AppendCondition, Appended, CommandLookup, CommandRecord, DeadLetter, Direction,
    EventFilter, EventQuery, EventStore, ExpectedVersion, HandlerRequest, Lease, NewCommand,
    Snapshot, SnapshotAndEvents, StoreError, StoredRow, Timeout, UndecodableRow,
};
use crate::store::{EventCounts, StreamInfo};

mod limits;
mod tags;
mod writer;

use tags::Matching;
use writer::{Append, AppendFunction, AppendJob, Writer, append_statement};

const BACKEND: &str = "postgres";

/// The schema version this build writes: 1, the events; 2, the command log; 3, the sagas'
/// timeouts; 4, the dead letters' kind, reason and raw row; 5, the set-based append of a
/// batch (`writer::append_batch_ddl`); 6, the tag index (`tags::tags_ddl`); 7, the conditional
/// appends in the batch (`writer::append_batch_ddl`); 8, why a handler's task could not carry
/// a request out (`requests.failed`).
const SCHEMA_VERSION: i64 = 8;

/// The columns of an event, in the order [`decode_event`] reads them.
const EVENT_COLUMNS: &str = "position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at";

/// The columns of a command-log entry, in the order [`decode_command`] reads them.
const COMMAND_COLUMNS: [&str; 11] = [
    "command_id",
    "idempotency_key",
    "command",
    "aggregate",
    "aggregate_id",
    "stream_id",
    "version",
    "event_count",
    "first_position",
    "last_position",
    "recorded_at",
];

/// Options of [`PostgresStore::connect_with`].
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    schema: String,
    pool_size: usize,
    max_batch: usize,
    poll_interval: Duration,
    retries: u32,
    connect_timeout: Duration,
    lock_timeout: Duration,
    migrate: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "evoq".to_owned(),
            pool_size: 16,
            max_batch: 512,
            poll_interval: Duration::from_secs(1),
            retries: 5,
            connect_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(1),
            migrate: true,
        }
    }
}

impl PostgresOptions {
    /// The schema the tables live in (default `evoq`; letters, digits and `_` only, at most 63
    /// characters). It is created if need be.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most pooled connections (default 16, at least 2). Leases and the listener use
    /// connections of their own.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(2);
        self
    }

    /// The most appends committed in one transaction (default 512, at least 1).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// How often the head is polled besides LISTEN/NOTIFY (default 1 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How many times an operation that failed with a transient error is retried (default 5).
    /// An error a retry cannot fix (a database that does not exist, a refused login, a missing
    /// privilege) is never retried.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The deadline of opening a connection, from reaching the server through the handshake
    /// and the login, and, apart, of the wait for a free slot of the pool (default 10 s, at
    /// least 1 ms; a call that waits for a slot, then opens a connection in it, takes up to
    /// twice this). [`PostgresStore::connect_with`] as a whole, retries included, fails within
    /// it with [`StoreError::ConnectTimeout`] when the server does not answer; it replaces any
    /// `connect_timeout` of the connection string. A lease's connection is confirmed within it
    /// too. A wait for a pooled connection that ends with every connection of the pool still
    /// in use is not the server's fault: it is retried, then fails with
    /// [`StoreError::PoolExhausted`] (raise [`pool_size`](Self::pool_size)).
    pub fn connect_timeout(mut self, deadline: Duration) -> Self {
        self.connect_timeout = deadline.max(Duration::from_millis(1));
        self
    }

    /// How long a statement waits for a lock that another session holds (default 1 s, at least
    /// 1 ms): PostgreSQL's `lock_timeout`, set on every session the store opens (its pooled
    /// connections, the group-commit writer's, each lease's, the listener's) and on those of
    /// the PostgreSQL read models opened on it; it replaces any `lock_timeout` of the
    /// connection string's `options`. A wait past it is retried like the other transient
    /// failures (see [`retries`](Self::retries)); once the retries are spent the operation
    /// fails with [`StoreError::LockTimeout`], which names what the store was doing and the
    /// table when the server says. So a session holding a lock on a table evoq needs (an
    /// operator's `LOCK TABLE`, a transaction left open) fails a start, a stop or a command
    /// within about `(retries + 1) × lock_timeout` plus the backoff, instead of hanging it.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Whether connecting creates the schema and its tables when they are missing and brings
    /// an older schema up to date (default `true`). With `false` (operators' tools, such as
    /// the `evoq` inspector), connecting changes nothing: a schema that does not hold an evoq
    /// store is refused with [`StoreError::NotAnEventStore`], and an older one is used as it
    /// is (what it lacks fails when used).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }
}

/// The event store on PostgreSQL. See the [module docs](self).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq::Error> {
/// use evoq::store::postgres::{PostgresOptions, PostgresStore};
///
/// let options = PostgresOptions::default().schema("billing");
/// let store = PostgresStore::connect_with("postgres://app@db/app", options).await?;
/// let app = evoq::Evoq::builder().store(store).start().await?;
/// # Ok(())
/// # }
/// ```
///
/// A handle: [`Clone`] is cheap and clones share the pool, the writer and the listener, which
/// stop when the last handle is dropped. Each node opens its own store on the same database and
/// schema.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: tokio_postgres::Config,
    /// The quoted schema, ready for SQL.
    schema: String,
    /// The URL without its password, for messages.
    location: String,
    head: watch::Sender<u64>,
    writer: mpsc::UnboundedSender<AppendJob>,
    options: PostgresOptions,
    background: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.inner.location)
            .field("schema", &self.inner.options.schema)
            .field("head", &*self.inner.head.borrow())
            .finish_non_exhaustive()
    }
}

/// Whether `error` may go away on a retry: a broken or refused connection, a server that is
/// shutting down or starting, too many connections, a serialization failure or a deadlock, a
/// timeout. Anything else the server said (a database that does not exist, a refused login, a
/// missing privilege, a missing table, ...) or a local error (an invalid configuration, a value
/// that does not convert) comes back the same on a retry.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        None => {
            error.source_io().is_some()
                // The timeout of tokio-postgres's own TCP connect (`Kind::Timeout`, which has
                // no accessor).
                || error.to_string() == "timeout waiting for server"
        }
        Some(code) => {
            [
                &SqlState::T_R_SERIALIZATION_FAILURE,
                &SqlState::T_R_DEADLOCK_DETECTED,
                &SqlState::ADMIN_SHUTDOWN,
                &SqlState::CRASH_SHUTDOWN,
                &SqlState::CANNOT_CONNECT_NOW,
                &SqlState::TOO_MANY_CONNECTIONS,
                &SqlState::INSUFFICIENT_RESOURCES,
                &SqlState::OUT_OF_MEMORY,
                &SqlState::LOCK_NOT_AVAILABLE,
                &SqlState::QUERY_CANCELED,
            ]
            .contains(&code)
                || code.code().starts_with("08")
        }
    }
}

trait SourceIo {
    fn source_io(&self) -> Option<&std::io::Error>;
}

impl SourceIo for tokio_postgres::Error {
    fn source_io(&self) -> Option<&std::io::Error> {
        std::error::Error::source(self).and_then(|s| s.downcast_ref::<std::io::Error>())
    }
}

/// What `error` says, in full: the server's SQLSTATE, message, detail and hint, or for an
/// error of the client the chain of its causes ("error connecting to server: Connection
/// refused (os error 111)"). Never the connection string.
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} {}", db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!(" (hint: {hint})"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// What to do about a permanent error, by its SQLSTATE (`None`: an error of the client).
fn advice(code: Option<&SqlState>) -> &'static str {
    match code {
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            "create the database, or name an existing one in the connection string"
        }
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            "check the user and password of the connection string, and the server's pg_hba.conf"
        }
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            "grant the role what the store needs: CREATE on the database (to create the schema), USAGE and CREATE on the schema, and access to its tables"
        }
        Some(c) if *c == SqlState::INVALID_SCHEMA_NAME || *c == SqlState::UNDEFINED_TABLE => {
            "the store's schema or tables are missing (dropped while the store ran?): restart the store to create them again"
        }
        Some(_) => "a retry would fail the same way",
        None => "check the connection string, and that a PostgreSQL server answers there",
    }
}

/// Backoff before retry `attempt` (1-based): 50 ms doubling, at most 2 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6).saturating_sub(1)))
        .min(Duration::from_secs(2))
}

/// Why an operation failed, and whether to retry it.
enum Failure {
    /// May go away on a retry; the error to give when the retries run out.
    Transient(StoreError),
    /// Will not go away.
    Fatal(StoreError),
    /// A lock wait ran past the sessions' lock timeout while doing `what` (SQLSTATE `55P03`):
    /// may go away on a retry, and becomes [`StoreError::LockTimeout`] when the retries run out.
    Locked {
        what: String,
        location: String,
        /// The table (and row) locked, when the server said.
        relation: Option<String>,
    },
}

impl Failure {
    /// The failure of a statement (or a connection) while doing `what` on `location`.
    fn sql(what: &str, location: &str, error: tokio_postgres::Error) -> Failure {
        if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            Failure::Locked {
                what: what.to_owned(),
                location: location.to_owned(),
                relation: error.as_db_error().and_then(locked_relation),
            }
        } else if is_transient(&error) && error.as_db_error().is_none() {
            // No answer of the server's: the connection itself failed.
            let reason = describe(&error);
            Failure::Transient(StoreError::Unreachable {
                backend: BACKEND,
                location: location.to_owned(),
                what: what.to_owned(),
                reason,
                retries: 0,
                source: Some(Arc::new(error)),
            })
        } else if is_transient(&error) {
            Failure::Transient(StoreError::Backend {
                backend: BACKEND,
                message: format!("{what} on {location}: {}", describe(&error)),
            })
        } else {
            Failure::Fatal(refused(what, location, error))
        }
    }

    /// The failure of a wait for a connection of `pool`, before doing `what`: no slot came free
    /// within `deadline` (the pool is exhausted), or a new connection did not (the server does
    /// not answer).
    fn pool(
        what: &str,
        location: &str,
        deadline: Duration,
        pool: &Pool,
        error: PoolError,
    ) -> Failure {
        match error {
            PoolError::Backend(error) => {
                Failure::sql(&format!("a connection for {what}"), location, error)
            }
            // A slot is held while its connection is being opened, and counted in the pool's
            // size only once open: a wait that ends with fewer connections than slots waited
            // on connections that do not open (a server that does not answer), not on work.
            PoolError::Timeout(TimeoutType::Wait)
                if pool.status().size < pool.status().max_size =>
            {
                Failure::Transient(connect_timeout(what, location, deadline))
            }
            PoolError::Timeout(TimeoutType::Wait) => {
                Failure::Transient(StoreError::PoolExhausted {
                    backend: BACKEND,
                    location: location.to_owned(),
                    what: what.to_owned(),
                    size: pool.status().max_size,
                    waited: deadline,
                    retries: 0,
                })
            }
            PoolError::Timeout(_) => Failure::Transient(connect_timeout(what, location, deadline)),
            other => Failure::Fatal(StoreError::Backend {
                backend: BACKEND,
                message: format!("{what} on {location}: no connection from the pool: {other}"),
            }),
        }
    }

    /// The error to give: after `retries` retries for a transient failure, with the sessions'
    /// `lock_timeout` for a lock wait that ran past it.
    fn into_error(self, retries: u32, lock_timeout: Duration) -> StoreError {
        match self {
            Failure::Fatal(error) => error,
            Failure::Locked {
                what,
                location,
                relation,
            } => StoreError::LockTimeout {
                backend: BACKEND,
                location,
                what,
                relation,
                after: lock_timeout,
                retries,
            },
            Failure::Transient(StoreError::Backend { backend, message }) if retries > 0 => {
                StoreError::Backend {
                    backend,
                    message: format!("{message} (after {retries} retries)"),
                }
            }
            Failure::Transient(StoreError::Unreachable {
                backend,
                location,
                what,
                reason,
                source,
                ..
            }) => StoreError::Unreachable {
                backend,
                location,
                what,
                reason,
                retries,
                source,
            },
            Failure::Transient(StoreError::PoolExhausted {
                backend,
                location,
                what,
                size,
                waited,
                ..
            }) => StoreError::PoolExhausted {
                backend,
                location,
                what,
                size,
                waited,
                retries,
            },
            Failure::Transient(error) => error,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Fatal(error)
    }
}

/// The table (and row) a lock wait was for, from the server's context of a `lock_not_available`
/// error (`while locking tuple (0,1) in relation "evoq_head"`): `tuple (0,1) of relation
/// "evoq_head"`. `None` when the server did not say (a wait for a table's lock).
fn locked_relation(error: &tokio_postgres::error::DbError) -> Option<String> {
    if let (Some(schema), Some(table)) = (error.schema(), error.table()) {
        return Some(format!("relation \"{schema}\".\"{table}\""));
    }
    let context = error.where_()?;
    let at = context.find("relation \"")?;
    let relation = context[at..].lines().next()?.trim_end();
    let tuple = context[..at]
        .rfind("tuple (")
        .and_then(|start| context[start..at].split(')').next())
        .map(|tuple| format!("{tuple}) of "));
    Some(format!("{}{relation}", tuple.unwrap_or_default()))
}

/// The error of a permanent failure while doing `what`: the server's reason, what to do, and
/// the error itself as its source.
fn refused(what: &str, location: &str, error: tokio_postgres::Error) -> StoreError {
    let code = error.code();
    StoreError::Refused {
        backend: BACKEND,
        location: location.to_owned(),
        code: code.map(|c| c.code().to_owned()),
        reason: format!("{what}: {}; {}", describe(&error), advice(code)),
        source: Some(Arc::new(error)),
    }
}

/// The error of a connection that did not come within `deadline`, while doing `what`.
fn connect_timeout(what: &str, location: &str, deadline: Duration) -> StoreError {
    StoreError::ConnectTimeout {
        backend: BACKEND,
        location: location.to_owned(),
        what: what.to_owned(),
        after: deadline,
    }
}

/// A connection of its own (not pooled), as `connect_own` opens it: the client, and the
/// connection to drive.
type OwnConnection = (
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
);

/// Opens a connection of its own (not pooled) for `what`, within `deadline`.
async fn connect_own(
    config: &tokio_postgres::Config,
    deadline: Duration,
    what: &str,
    location: &str,
) -> Result<OwnConnection, Failure> {
    match tokio::time::timeout(deadline, config.connect(NoTls)).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(error)) => Err(Failure::sql(
            &format!("a connection for {what}"),
            location,
            error,
        )),
        Err(_) => Err(Failure::Transient(connect_timeout(
            what, location, deadline,
        ))),
    }
}

impl Inner {
    /// A pooled connection within the connect timeout, for doing `what`.
    async fn pooled(&self, what: &str) -> Result<deadpool_postgres::Object, Failure> {
        pooled(
            &self.pool,
            what,
            &self.location,
            self.options.connect_timeout,
        )
        .await
    }
}

/// A connection of `pool` (on `location`), for doing `what`: the pool bounds the wait for a
/// free slot and the opening of a connection by `deadline` each (see
/// [`PostgresStore::connect_with`]).
async fn pooled(
    pool: &Pool,
    what: &str,
    location: &str,
    deadline: Duration,
) -> Result<deadpool_postgres::Object, Failure> {
    pool.get()
        .await
        .map_err(|error| Failure::pool(what, location, deadline, pool, error))
}

/// What follows `failure` on attempt `attempt` (0 for the first try) of an operation allowed
/// `retries` retries, on sessions whose lock timeout is `lock_timeout`: the error to give (a
/// fatal failure, or the retries spent), or, after a warning and the backoff, the number of the
/// next attempt.
async fn retry_after(
    failure: Failure,
    attempt: u32,
    retries: u32,
    lock_timeout: Duration,
) -> Result<u32, StoreError> {
    if matches!(failure, Failure::Fatal(_)) || attempt >= retries {
        return Err(failure.into_error(attempt, lock_timeout));
    }
    let attempt = attempt + 1;
    tracing::warn!(
        name: "evoq.store.retry",
        backend = BACKEND,
        attempt,
        error = %failure,
        "evoq.store.retry",
    );
    tokio::time::sleep(backoff(attempt)).await;
    Ok(attempt)
}

/// Runs `$body` (an async block using `$client`, a pooled connection, and returning
/// `Result<T, Failure>`) and retries it on transient failures with backoff.
macro_rules! retrying {
    ($inner:expr, $what:expr, |$client:ident| $body:expr) => {{
        let inner: &Inner = $inner;
        let mut attempt = 0u32;
        loop {
            let result: Result<_, Failure> = async {
                let $client = inner.pooled(&$what).await?;
                $body.await
            }
            .await;
            match result {
                Ok(value) => break Ok(value),
                Err(failure) => {
                    let options = &inner.options;
                    match retry_after(failure, attempt, options.retries, options.lock_timeout).await
                    {
                        Ok(next) => attempt = next,
                        Err(error) => break Err(error),
                    }
                }
            }
        }
    }};
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(error) | Failure::Fatal(error) => error.fmt(f),
            Failure::Locked { what, relation, .. } => match relation {
                Some(relation) => write!(
                    f,
                    "a lock wait on {relation} ran past the lock timeout while {what}"
                ),
                None => write!(f, "a lock wait ran past the lock timeout while {what}"),
            },
        }
    }
}

impl PostgresStore {
    /// A pooled connection of the store, for what shares its database (the PostgreSQL read
    /// model), for doing `what`: within the connect timeout, a failure as the store's
    /// [`StoreError`] (`Refused`, `ConnectTimeout`, `Backend`), not retried.
    #[allow(
        dead_code,
        reason = "the PostgreSQL read model takes its connections here"
    )]
    pub(crate) async fn pooled_client(
        &self,
        what: &str,
    ) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner
            .pooled(what)
            .await
            .map_err(|failure| failure.into_error(0, self.inner.options.lock_timeout))
    }
}

impl PostgresStore {
    /// Connects to the database at `url` with the default options (schema `evoq`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to the database at `url` with `options`: creates or migrates the schema, reads
    /// the head, starts the group-commit writer, the listener and the head poll.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        // A URL shows its host without its password; a `key=value` string is shown by its
        // parsed parts, which never include the password.
        let is_url = url.contains("://");
        let location = if is_url {
            redact_url(url)
        } else {
            "the connection string (not shown: it may hold a password)".to_owned()
        };
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Backend {
                backend: BACKEND,
                message: format!("{location} is invalid: {e}"),
            })?;
        let location = if is_url {
            location
        } else {
            describe_config(&config)
        };
        let deadline = options.connect_timeout;
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.connect_timeout(deadline);
        // Every session the store opens (and each read model's, which starts from this
        // configuration) waits at most this long for a lock: the server ends the wait with
        // `lock_not_available`, which the store retries, then reports as a lock timeout.
        let session_options = format!(
            "{} -c lock_timeout={}ms",
            config.get_options().unwrap_or_default(),
            options.lock_timeout.as_millis().max(1)
        );
        config.options(session_options.trim());
        if config.get_application_name().is_none() {
            config.application_name("evoq");
        }
        let schema_name = &options.schema;
        if schema_name.is_empty()
            || schema_name.len() > 63
            || !schema_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::Backend {
                backend: BACKEND,
                message: format!(
                    "the schema name `{schema_name}` is not valid: use 1 to 63 letters, digits or `_`"
                ),
            });
        }
        let schema = format!("\"{schema_name}\"");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // The pool bounds each step of a `get` by the connect timeout: the wait for a free slot
        // (past it, the pool is exhausted: `PoolExhausted`), and the creation or the check of a
        // connection (past it, the server does not answer: `ConnectTimeout`).
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(deadline))
            .create_timeout(Some(deadline))
            .recycle_timeout(Some(deadline))
            .build()
            .map_err(|e| StoreError::Backend {
                backend: BACKEND,
                message: format!("cannot build the connection pool for {location}: {e}"),
            })?;
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let (head_tx, _) = watch::channel(0);
        let mut inner = Inner {
            pool,
            config,
            schema,
            location,
            head: head_tx,
            writer: writer_tx,
            options,
            background: Vec::new(),
        };
        // One deadline over the whole start: a server that accepts connections and never
        // answers fails it there, as one that keeps refusing them does.
        let head = tokio::time::timeout(deadline, migrate(&inner))
            .await
            .map_err(|_| {
                connect_timeout(
                    &format!("connecting and opening schema `{}`", inner.options.schema),
                    &inner.location,
                    deadline,
                )
            })??;
        inner.head.send_replace(head);

        let channel = channel_name(&inner.options.schema);
        let writer = Writer {
            pool: inner.pool.clone(),
            statement: append_statement(&inner.schema),
            schema: inner.schema.clone(),
            location: inner.location.clone(),
            channel: channel.clone(),
            head: inner.head.clone(),
            max_batch: inner.options.max_batch,
            retries: inner.options.retries,
            connect_timeout: deadline,
            lock_timeout: inner.options.lock_timeout,
        };
        inner
            .background
            .push(tokio::spawn(writer.run(writer_rx)).abort_handle());
        inner.background.push(
            tokio::spawn(listen(
                inner.config.clone(),
                channel,
                inner.head.clone(),
                inner.location.clone(),
                deadline,
            ))
            .abort_handle(),
        );
        inner.background.push(
            tokio::spawn(poll_head(
                inner.pool.clone(),
                inner.schema.clone(),
                inner.head.clone(),
                inner.options.poll_interval,
                deadline,
            ))
            .abort_handle(),
        );
        Ok(PostgresStore {
            inner: Arc::new(inner),
        })
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.inner.options.schema
    }

    /// How the store connects (without its pool): for a SQL read model of the projection layer,
    /// which writes its tables and its projection's checkpoint in transactions of its own.
    pub(crate) fn connection_config(&self) -> &tokio_postgres::Config {
        &self.inner.config
    }

    /// The database's URL without its password, for messages.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// Moves checkpoint `$1` forward to position `$2` (a `BIGINT`), creating it: changes no row
    /// when it is already there or past it. For a SQL read model's commit without changes.
    pub(crate) fn advance_checkpoint_sql(&self) -> String {
        format!(
            "INSERT INTO {s}.checkpoints (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position \
             WHERE {s}.checkpoints.position < EXCLUDED.position",
            s = self.inner.schema
        )
    }

    /// Moves checkpoint `$1` forward to position `$2` like
    /// [`advance_checkpoint_sql`](Self::advance_checkpoint_sql), and fails with
    /// `division_by_zero` (SQLSTATE 22012) when it does not move: run by a SQL read model in the
    /// transaction of its changes, with the `COMMIT` sent right behind it, so that the failure
    /// rolls the changes back (another delivery of the event committed first).
    pub(crate) fn advance_checkpoint_or_fail_sql(&self) -> String {
        format!(
            "WITH moved AS ({} RETURNING 1) SELECT 1 / (SELECT COUNT(*)::INT FROM moved)",
            self.advance_checkpoint_sql()
        )
    }

    /// Removes subscriber `$1`'s dead letter for the event `$2` (a `UUID`); one row affected
    /// when there was one. Run by a SQL read model in the transaction of the event's changes, so
    /// that the changes and the end of the dead letter commit together: a dead letter delivered
    /// again is told from an event delivered twice, and once its changes are committed no retry
    /// finds it again.
    pub(crate) fn take_dead_letter_sql(&self) -> String {
        format!(
            "DELETE FROM {}.dead_letters WHERE handler = $1 AND event_id = $2",
            self.inner.schema
        )
    }

    /// Saves checkpoint `$1` at position `$2` (a `BIGINT`).
    pub(crate) fn save_checkpoint_sql(&self) -> String {
        format!(
            "INSERT INTO {}.checkpoints (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
            self.inner.schema
        )
    }

    /// The position of checkpoint `$1`.
    pub(crate) fn load_checkpoint_sql(&self) -> String {
        format!(
            "SELECT position FROM {}.checkpoints WHERE name = $1",
            self.inner.schema
        )
    }

    /// Removes checkpoint `$1` (a SQL read model's rebuild, in the transaction that clears it).
    pub(crate) fn delete_checkpoint_sql(&self) -> String {
        format!(
            "DELETE FROM {}.checkpoints WHERE name = $1",
            self.inner.schema
        )
    }

    /// The database's head position, read now (the [`head`](EventStore::head) watch follows it
    /// through notifications and polls).
    pub async fn read_head(&self) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let sql = format!(
            "SELECT position FROM {}.evoq_head WHERE id = 1",
            inner.schema
        );
        retrying!(inner, "reading the head", |client| async {
            let row = client
                .query_one(&sql, &[])
                .await
                .map_err(|e| Failure::sql("reading the head", &inner.location, e))?;
            Ok(from_db(row.get(0), || "evoq_head".to_owned(), "the head")?)
        })
    }
}

/// Where a `key=value` connection string points: user, hosts and ports, database (never the
/// password).
fn describe_config(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// The NOTIFY channel of a schema: short whatever the schema's length.
fn channel_name(schema: &str) -> String {
    format!("evoq_head_{:016x}", fnv1a(schema.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Checks that the schema holds an evoq store this build can read, changing nothing (see
/// [`PostgresOptions::migrate`]); returns the head.
async fn check_existing(inner: &Inner) -> Result<u64, StoreError> {
    let s = &inner.schema;
    let what = format!("checking schema `{}`", inner.options.schema);
    retrying!(inner, what, |client| async {
        let fail = |e| Failure::sql(&what, &inner.location, e);
        let tables: Option<String> = client
            .query_one(
                "SELECT to_regclass($1)::TEXT",
                &[&format!("{s}.evoq_schema")],
            )
            .await
            .map_err(fail)?
            .get(0);
        if tables.is_none() {
            return Err(Failure::Fatal(StoreError::NotAnEventStore {
                backend: BACKEND,
                location: format!("{} (schema `{}`)", inner.location, inner.options.schema),
                found: "the schema does not exist or holds no `evoq_schema` table".to_owned(),
            }));
        }
        let found: Option<i64> = client
            .query_one(&format!("SELECT MAX(version) FROM {s}.evoq_schema"), &[])
            .await
            .map_err(fail)?
            .get(0);
        let found = found.unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(Failure::Fatal(StoreError::SchemaTooNew {
                backend: BACKEND,
                location: format!("{} (schema `{}`)", inner.location, inner.options.schema),
                found,
                supported: SCHEMA_VERSION,
            }));
        }
        let head: i64 = client
            .query_one(
                &format!("SELECT position FROM {s}.evoq_head WHERE id = 1"),
                &[],
            )
            .await
            .map_err(fail)?
            .get(0);
        Ok(from_db(head, || "evoq_head".to_owned(), "the head")?)
    })
}

/// Creates or migrates the schema; returns the head.
async fn migrate(inner: &Inner) -> Result<u64, StoreError> {
    if !inner.options.migrate {
        return check_existing(inner).await;
    }
    let s = &inner.schema;
    let lock_key = fnv1a(format!("evoq-migrate:{}", inner.options.schema).as_bytes()) as i64;
    let v1 = format!(
        "
CREATE TABLE {s}.events (
    position       BIGINT PRIMARY KEY,
    stream_id      TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    event_id       UUID   NOT NULL,
    event_type     TEXT   NOT NULL,
    schema_version BIGINT NOT NULL,
    data           BYTEA  NOT NULL,
    metadata       BYTEA  NOT NULL,
    recorded_at    BIGINT NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE {s}.evoq_head (id INT PRIMARY KEY, position BIGINT NOT NULL);
INSERT INTO {s}.evoq_head (id, position) VALUES (1, 0);
CREATE TABLE {s}.snapshots (
    stream_id TEXT PRIMARY KEY,
    version   BIGINT NOT NULL,
    data      BYTEA  NOT NULL,
    taken_at  BIGINT NOT NULL
);
CREATE TABLE {s}.checkpoints (name TEXT PRIMARY KEY, position BIGINT NOT NULL);
CREATE TABLE {s}.dead_letters (
    handler         TEXT   NOT NULL,
    event_id        UUID   NOT NULL,
    position        BIGINT NOT NULL,
    stream_id       TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    event_type      TEXT   NOT NULL,
    schema_version  BIGINT NOT NULL,
    data            BYTEA  NOT NULL,
    metadata        BYTEA  NOT NULL,
    recorded_at     BIGINT NOT NULL,
    error           TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    first_failed_at BIGINT NOT NULL,
    last_failed_at  BIGINT NOT NULL,
    PRIMARY KEY (handler, event_id)
);
CREATE INDEX ON {s}.dead_letters (handler, position, event_id);
CREATE TABLE {s}.saga_state (
    saga     TEXT  NOT NULL,
    instance TEXT  COLLATE \"C\" NOT NULL,
    state    BYTEA NOT NULL,
    PRIMARY KEY (saga, instance)
);
CREATE FUNCTION {s}.evoq_append(
    p_streams TEXT[], p_expected BIGINT[], p_counts INT[],
    e_ids UUID[], e_types TEXT[], e_schema_versions BIGINT[], e_data BYTEA[], e_metadata BYTEA[],
    p_recorded_at BIGINT, p_channel TEXT)
RETURNS TABLE (job INT, actual BIGINT, first_position BIGINT, ok BOOLEAN)
LANGUAGE plpgsql AS $body$
DECLARE
    v_head BIGINT;
    v_next BIGINT;
    v_event INT := 1;
    v_count INT;
    v_current BIGINT;
BEGIN
    -- The lock that orders every append of the cluster, held until the commit.
    SELECT h.position INTO v_head FROM {s}.evoq_head h WHERE h.id = 1 FOR UPDATE;
    v_next := v_head + 1;
    FOR i IN 1 .. COALESCE(array_length(p_streams, 1), 0) LOOP
        v_count := p_counts[i];
        SELECT COALESCE(MAX(e.version), 0) INTO v_current FROM {s}.events e WHERE e.stream_id = p_streams[i];
        job := i;
        actual := v_current;
        IF p_expected[i] >= 0 AND p_expected[i] <> v_current THEN
            first_position := 0;
            ok := FALSE;
        ELSE
            IF v_count > 0 THEN
                INSERT INTO {s}.events (position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at)
                SELECT v_next + k - 1, p_streams[i], v_current + k, e_ids[v_event + k - 1], e_types[v_event + k - 1],
                       e_schema_versions[v_event + k - 1], e_data[v_event + k - 1], e_metadata[v_event + k - 1], p_recorded_at
                FROM generate_series(1, v_count) AS k;
                first_position := v_next;
            ELSE
                first_position := 0;
            END IF;
            ok := TRUE;
            v_next := v_next + v_count;
        END IF;
        v_event := v_event + v_count;
        RETURN NEXT;
    END LOOP;
    IF v_next > v_head + 1 THEN
        UPDATE {s}.evoq_head SET position = v_next - 1 WHERE id = 1;
        PERFORM pg_notify(p_channel, (v_next - 1)::TEXT);
    END IF;
END
$body$;
"
    );
    let v2 = command_log_ddl(s);
    let v3 = timeouts_ddl(s);
    // What kind of failure dead-lettered an event, why it was dead-lettered, and the raw row
    // of one that could not be read back (JSON pairs); older entries read as handler errors.
    // And the requests for handlers' tasks (`requested_at` in nanoseconds since the epoch).
    let v4 = format!(
        "ALTER TABLE {s}.dead_letters ADD COLUMN kind TEXT NOT NULL DEFAULT 'handler_error', \
         ADD COLUMN reason TEXT NOT NULL DEFAULT '', ADD COLUMN raw_row TEXT; \
         CREATE TABLE {s}.requests (id UUID PRIMARY KEY, handler TEXT NOT NULL, action TEXT NOT NULL, \
         event_id UUID, requested_at BIGINT NOT NULL); \
         CREATE INDEX ON {s}.requests (handler, id);"
    );
    let v5 = writer::append_batch_ddl(s, AppendFunction::Batch);
    let v6 = tags::tags_ddl(s);
    let v7 = writer::append_batch_ddl(s, AppendFunction::Conditional);
    let v8 = format!("ALTER TABLE {s}.requests ADD COLUMN IF NOT EXISTS failed TEXT;");
    let what = format!("opening schema `{}`", inner.options.schema);
    retrying!(inner, what, |client| async {
        let fail = |e| Failure::sql(&what, &inner.location, e);
        client.batch_execute("BEGIN").await.map_err(fail)?;
        let result: Result<u64, Failure> = async {
            client
                .execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key])
                .await
                .map_err(fail)?;
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {s}; CREATE TABLE IF NOT EXISTS {s}.evoq_schema (version BIGINT NOT NULL);"
                ))
                .await
                .map_err(fail)?;
            let found: Option<i64> = client
                .query_one(&format!("SELECT MAX(version) FROM {s}.evoq_schema"), &[])
                .await
                .map_err(fail)?
                .get(0);
            let found = found.unwrap_or(0);
            if found > SCHEMA_VERSION {
                return Err(Failure::Fatal(StoreError::SchemaTooNew {
                    backend: BACKEND,
                    location: format!("{} (schema `{}`)", inner.location, inner.options.schema),
                    found,
                    supported: SCHEMA_VERSION,
                }));
            }
            if found < 1 {
                client.batch_execute(&v1).await.map_err(fail)?;
            }
            if found < 2 {
                client.batch_execute(&v2).await.map_err(fail)?;
            }
            if found < 3 {
                client.batch_execute(&v3).await.map_err(fail)?;
            }
            if found < 4 {
                client.batch_execute(&v4).await.map_err(fail)?;
            }
            if found < 5 {
                client.batch_execute(&v5).await.map_err(fail)?;
            }
            if found < 6 {
                client.batch_execute(&v6).await.map_err(fail)?;
            }
            if found < 7 {
                client.batch_execute(&v7).await.map_err(fail)?;
            }
            if found < 8 {
                client.batch_execute(&v8).await.map_err(fail)?;
            }
            // Later versions migrate here, one step at a time: `if found < 9 { ... }`.
            if found < SCHEMA_VERSION {
                client
                    .batch_execute(&format!(
                        "DELETE FROM {s}.evoq_schema; INSERT INTO {s}.evoq_schema (version) VALUES ({SCHEMA_VERSION});"
                    ))
                    .await
                    .map_err(fail)?;
            }
            let head: i64 = client
                .query_one(&format!("SELECT position FROM {s}.evoq_head WHERE id = 1"), &[])
                .await
                .map_err(fail)?
                .get(0);
            Ok(from_db(head, || "evoq_head".to_owned(), "the head")?)
        }
        .await;
        match result {
            Ok(head) => {
                client.batch_execute("COMMIT").await.map_err(fail)?;
                Ok(head)
            }
            Err(error) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(error)
            }
        }
    })
}

/// Schema version 2, on top of version 1 (whose tables it leaves as they are): the command
/// log and `evoq_append_commands`, the append function that writes it.
///
/// `evoq_append` stays: a node of version 1 still running during a rolling upgrade appends
/// with it (recording no command), under the same head lock as everyone else.
///
/// The new function does what `evoq_append` does, plus, per append (job) in order, after the
/// head lock: with the check set, the command's lookup (its key, else its id) finds a live
/// entry (recorded at or after `c_since`: outcome `duplicate` with that entry, nothing
/// written) or removes the expired ones; then the expected version (outcome `conflict`); then
/// the events, and the command's entry (for an append without events only when checked).
fn command_log_ddl(s: &str) -> String {
    format!(
        "
CREATE TABLE {s}.commands (
    command_id      UUID   NOT NULL,
    idempotency_key TEXT,
    command         TEXT   NOT NULL,
    aggregate       TEXT   NOT NULL,
    aggregate_id    TEXT   NOT NULL,
    stream_id       TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    event_count     BIGINT NOT NULL,
    first_position  BIGINT NOT NULL,
    last_position   BIGINT NOT NULL,
    recorded_at     BIGINT NOT NULL
);
CREATE INDEX ON {s}.commands (command_id);
CREATE UNIQUE INDEX ON {s}.commands (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE FUNCTION {s}.evoq_append_commands(
    p_streams TEXT[], p_expected BIGINT[], p_counts INT[],
    e_ids UUID[], e_types TEXT[], e_schema_versions BIGINT[], e_data BYTEA[], e_metadata BYTEA[],
    c_has BOOLEAN[], c_ids UUID[], c_keys TEXT[], c_commands TEXT[], c_aggregates TEXT[],
    c_aggregate_ids TEXT[], c_check BOOLEAN[], c_since BIGINT[],
    p_recorded_at BIGINT, p_channel TEXT)
RETURNS TABLE (job INT, outcome TEXT, actual BIGINT, first_position BIGINT, duplicate {s}.commands)
LANGUAGE plpgsql AS $body$
DECLARE
    v_head BIGINT;
    v_next BIGINT;
    v_event INT := 1;
    v_count INT;
    v_current BIGINT;
    v_duplicate BOOLEAN;
BEGIN
    -- The lock that orders every append (and every command check) of the cluster, held until
    -- the commit.
    SELECT h.position INTO v_head FROM {s}.evoq_head h WHERE h.id = 1 FOR UPDATE;
    v_next := v_head + 1;
    FOR i IN 1 .. COALESCE(array_length(p_streams, 1), 0) LOOP
        v_count := p_counts[i];
        job := i;
        actual := 0;
        first_position := 0;
        duplicate := NULL;
        v_duplicate := FALSE;
        IF c_has[i] AND c_check[i] THEN
            IF c_keys[i] IS NULL THEN
                SELECT c.* INTO duplicate FROM {s}.commands c
                WHERE c.command_id = c_ids[i] AND c.recorded_at >= c_since[i]
                ORDER BY c.recorded_at DESC LIMIT 1;
                v_duplicate := FOUND;
                IF NOT v_duplicate THEN
                    DELETE FROM {s}.commands c WHERE c.command_id = c_ids[i];
                END IF;
            ELSE
                SELECT c.* INTO duplicate FROM {s}.commands c
                WHERE c.idempotency_key = c_keys[i] AND c.recorded_at >= c_since[i];
                v_duplicate := FOUND;
                IF NOT v_duplicate THEN
                    DELETE FROM {s}.commands c WHERE c.idempotency_key = c_keys[i];
                END IF;
            END IF;
        END IF;
        IF v_duplicate THEN
            outcome := 'duplicate';
        ELSE
            SELECT COALESCE(MAX(e.version), 0) INTO v_current FROM {s}.events e WHERE e.stream_id = p_streams[i];
            actual := v_current;
            IF p_expected[i] >= 0 AND p_expected[i] <> v_current THEN
                outcome := 'conflict';
            ELSE
                IF v_count > 0 THEN
                    INSERT INTO {s}.events (position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at)
                    SELECT v_next + k - 1, p_streams[i], v_current + k, e_ids[v_event + k - 1], e_types[v_event + k - 1],
                           e_schema_versions[v_event + k - 1], e_data[v_event + k - 1], e_metadata[v_event + k - 1], p_recorded_at
                    FROM generate_series(1, v_count) AS k;
                    first_position := v_next;
                END IF;
                IF c_has[i] AND (v_count > 0 OR c_check[i]) THEN
                    -- An unchecked command with a key replaces the key's entry.
                    IF c_keys[i] IS NOT NULL AND NOT c_check[i] THEN
                        DELETE FROM {s}.commands c WHERE c.idempotency_key = c_keys[i];
                    END IF;
                    INSERT INTO {s}.commands (command_id, idempotency_key, command, aggregate, aggregate_id, stream_id, version, event_count, first_position, last_position, recorded_at)
                    VALUES (c_ids[i], c_keys[i], c_commands[i], c_aggregates[i], c_aggregate_ids[i], p_streams[i], v_current + v_count, v_count,
                            CASE WHEN v_count > 0 THEN v_next ELSE 0 END,
                            CASE WHEN v_count > 0 THEN v_next + v_count - 1 ELSE 0 END,
                            p_recorded_at);
                END IF;
                outcome := 'appended';
                v_next := v_next + v_count;
            END IF;
        END IF;
        v_event := v_event + v_count;
        RETURN NEXT;
    END LOOP;
    IF v_next > v_head + 1 THEN
        UPDATE {s}.evoq_head SET position = v_next - 1 WHERE id = 1;
        PERFORM pg_notify(p_channel, (v_next - 1)::TEXT);
    END IF;
END
$body$;
"
    )
}

/// Schema version 3, on top of version 2 (whose tables it leaves as they are): the sagas'
/// timeouts. `due_at` is in microseconds since the Unix epoch (negative before it).
/// `due_timeouts` and `next_timeout` walk the index on `(saga, due_at, id)` in order;
/// `cancel_timeouts` finds an instance's timeouts through the one on `(saga, instance)`.
fn timeouts_ddl(s: &str) -> String {
    format!(
        "
CREATE TABLE {s}.timeouts (
    id       UUID   PRIMARY KEY,
    saga     TEXT   NOT NULL,
    instance TEXT   NOT NULL,
    due_at   BIGINT NOT NULL,
    payload  BYTEA  NOT NULL
);
CREATE INDEX ON {s}.timeouts (saga, due_at, id);
CREATE INDEX ON {s}.timeouts (saga, instance);
"
    )
}

/// Moves `head` to `position` if that is higher.
fn advance(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|h| {
        let moved = position > *h;
        if moved {
            *h = position;
        }
        moved
    });
}

/// Listens for the commits of every node and moves the head; reconnects with backoff.
async fn listen(
    config: tokio_postgres::Config,
    channel: String,
    head: watch::Sender<u64>,
    location: String,
    deadline: Duration,
) {
    let mut failures = 0u32;
    loop {
        match connect_own(&config, deadline, "listening", &location).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    use futures_util::StreamExt;
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_owned()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {channel}"))
                    .await
                    .is_ok()
                {
                    failures = 0;
                    while let Some(payload) = rx.recv().await {
                        if let Ok(position) = payload.parse::<u64>() {
                            advance(&head, position);
                        }
                    }
                }
                driver.abort();
                drop(client);
            }
            Err(failure) => {
                tracing::warn!(
                    name: "evoq.store.listen",
                    stage = "exception",
                    backend = BACKEND,
                    location = %location,
                    error = %failure,
                    "evoq.store.listen",
                );
            }
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// Polls the head: the fallback when a notification is lost.
async fn poll_head(
    pool: Pool,
    schema: String,
    head: watch::Sender<u64>,
    every: Duration,
    deadline: Duration,
) {
    let sql = format!("SELECT position FROM {schema}.evoq_head WHERE id = 1");
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Ok(Ok(client)) = tokio::time::timeout(deadline, pool.get()).await
            && let Ok(row) = client.query_one(&sql, &[]).await
            && let Ok(position) = u64::try_from(row.get::<_, i64>(0))
        {
            advance(&head, position);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reads and the other writes
// ---------------------------------------------------------------------------------------------

/// The snapshot of `stream` in a row's columns `at..at + 3` (version, data, taken at).
fn decode_snapshot(row: &Row, at: usize, stream: &str) -> Result<Snapshot, StoreError> {
    let corrupt = |e: tokio_postgres::Error| StoreError::Integrity {
        location: format!("the snapshot of `{stream}`"),
        reason: format!("the snapshot does not decode ({e}); remove the row"),
    };
    Ok(Snapshot {
        stream_id: stream.to_owned(),
        version: from_db(
            row.try_get(at).map_err(corrupt)?,
            || format!("snapshot of `{stream}`"),
            "the version",
        )?,
        data: row.try_get(at + 1).map_err(corrupt)?,
        taken_at: nanos_to_time(row.try_get(at + 2).map_err(corrupt)?),
    })
}

/// Decodes an event row (columns [`EVENT_COLUMNS`]); an undecodable row is an integrity error
/// naming its stream and version.
/// Consecutive rows of one stream share its id through `last`.
fn decode_event(row: &Row, last: &mut Option<Arc<str>>) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get(0).unwrap_or(-1);
    let stream_id: String = row.try_get(1).unwrap_or_else(|_| "?".to_owned());
    let version: i64 = row.try_get(2).unwrap_or(-1);
    let location = || format!("stream `{stream_id}` version {version} (position {position})");
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Integrity {
        location: location(),
        reason: format!("the event's {what} does not decode ({e}); repair or remove the row"),
    };
    let event_id: Uuid = row.try_get(3).map_err(|e| corrupt("id", &e))?;
    let event_type: String = row.try_get(4).map_err(|e| corrupt("type", &e))?;
    let schema_version: i64 = row.try_get(5).map_err(|e| corrupt("schema version", &e))?;
    let schema_version =
        u32::try_from(schema_version).map_err(|e| corrupt("schema version", &e))?;
    let data: Vec<u8> = row.try_get(6).map_err(|e| corrupt("data", &e))?;
    let metadata: &[u8] = row.try_get(7).map_err(|e| corrupt("metadata", &e))?;
    let metadata = decode_metadata(metadata, location)?;
    let recorded_at: i64 = row.try_get(8).map_err(|e| corrupt("commit time", &e))?;
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

/// The page of event `rows` (columns [`EVENT_COLUMNS`], in position order, at most
/// `max_count` of them) read up to `head`: a row that does not decode goes in its
/// `undecodable` (see [`all_page`]).
fn event_page(rows: &[Row], max_count: usize, head: u64) -> Result<AllPage, StoreError> {
    let mut last = None;
    let mut page = Vec::with_capacity(rows.len());
    for row in rows {
        page.push(match decode_event(row, &mut last) {
            Ok(event) => StoredRow::Event(Arc::new(event)),
            Err(error) => StoredRow::Undecodable(undecodable_row(row, error)?),
        });
    }
    Ok(all_page(page, max_count, head))
}

fn decode_events(rows: &[Row]) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
    let mut last = None;
    rows.iter()
        .map(|r| decode_event(r, &mut last).map(Arc::new))
        .collect()
}

/// What can be read of an event row that does not decode (`error`); the row's position must
/// read, else there is no place to report it at and `error` stands.
fn undecodable_row(row: &Row, error: StoreError) -> Result<UndecodableRow, StoreError> {
    let Some(global_position) = row
        .try_get::<_, i64>(0)
        .ok()
        .and_then(|p| u64::try_from(p).ok())
    else {
        return Err(error);
    };
    let columns = row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let value = if let Ok(n) = row.try_get::<_, Option<i64>>(i) {
                n.map_or_else(|| "NULL".to_owned(), |n| n.to_string())
            } else if let Ok(n) = row.try_get::<_, Option<i32>>(i) {
                n.map_or_else(|| "NULL".to_owned(), |n| n.to_string())
            } else if let Ok(text) = row.try_get::<_, Option<String>>(i) {
                text.unwrap_or_else(|| "NULL".to_owned())
            } else if let Ok(id) = row.try_get::<_, Option<Uuid>>(i) {
                id.map_or_else(|| "NULL".to_owned(), |id| id.to_string())
            } else if let Ok(bytes) = row.try_get::<_, Option<&[u8]>>(i) {
                bytes.map_or_else(|| "NULL".to_owned(), column_text)
            } else {
                format!("<a value of type {}>", column.type_())
            };
            (column.name().to_owned(), value)
        })
        .collect();
    Ok(UndecodableRow {
        global_position,
        stream_id: row.try_get(1).unwrap_or_default(),
        stream_version: row
            .try_get::<_, i64>(2)
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
        event_type: row.try_get(4).unwrap_or_default(),
        event_id: row.try_get(3).ok(),
        data: row.try_get(6).unwrap_or_default(),
        recorded_at: row.try_get::<_, i64>(8).ok().map(nanos_to_time),
        columns,
        error: undecodable_reason(error),
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const DEAD_LETTER_COLUMNS: &str = "position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at, handler, error, attempts, first_failed_at, last_failed_at, kind, reason, raw_row";

fn decode_dead_letter(row: &Row) -> Result<DeadLetter, StoreError> {
    let event = decode_event(row, &mut None)?;
    let attempts: i64 = row.get(11);
    let handler: String = row.get(9);
    let location = || {
        format!(
            "the dead letter of handler `{handler}` for event {}",
            event.event_id
        )
    };
    let kind = decode_failure_kind(row.get(14), location)?;
    let raw_row = decode_raw_row(row.get(16), location)?;
    Ok(DeadLetter {
        kind,
        reason: row.get(15),
        raw_row,
        handler,
        error: row.get(10),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        first_failed_at: nanos_to_time(row.get(12)),
        last_failed_at: nanos_to_time(row.get(13)),
        event: Arc::new(event),
    })
}

/// Decodes a request row (columns `id, handler, action, event_id, requested_at`).
fn decode_request_row(row: &Row) -> Result<HandlerRequest, StoreError> {
    let handler: String = row.try_get(1).unwrap_or_default();
    let action: String = row.try_get(2).unwrap_or_default();
    decode_request(
        row.try_get(0).ok(),
        handler,
        &action,
        row.try_get::<_, Option<Uuid>>(3)
            .ok()
            .and_then(|e| e.map(Some)),
        nanos_to_time(row.try_get(4).unwrap_or(0)),
        row.try_get(5).unwrap_or_default(),
    )
}

/// Decodes a timeout row of saga `saga` (columns `id, instance, due_at, payload`); an
/// undecodable row is an integrity error naming the saga and, when it decodes, the id.
fn decode_timeout(row: &Row, saga: &str) -> Result<Timeout, StoreError> {
    let id = row.try_get::<_, Uuid>(0);
    let location = || match &id {
        Ok(id) => format!("timeout {id} of saga `{saga}`"),
        Err(_) => format!("a timeout of saga `{saga}`"),
    };
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Integrity {
        location: location(),
        reason: format!("the timeout's {what} does not decode ({e}); repair or remove the row"),
    };
    let due_at: i64 = row.try_get(2).map_err(|e| corrupt("due time", &e))?;
    Ok(Timeout {
        id: *id.as_ref().map_err(|e| corrupt("id", e))?,
        saga: saga.to_owned(),
        instance: row.try_get(1).map_err(|e| corrupt("instance", &e))?,
        due_at: micros_to_time(due_at, location)?,
        payload: row.try_get(3).map_err(|e| corrupt("payload", &e))?,
    })
}

/// Decodes a command-log entry from the columns [`COMMAND_COLUMNS`] of `row`, from column
/// `at` on; an undecodable entry is an integrity error naming its command id.
fn decode_command(row: &Row, at: usize) -> Result<CommandRecord, StoreError> {
    let command_id = row.try_get::<_, Uuid>(at);
    let location = || match &command_id {
        Ok(id) => format!("the command log entry of command id {id}"),
        Err(_) => "a command log entry".to_owned(),
    };
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Integrity {
        location: location(),
        reason: format!("the entry's {what} does not decode ({e}); repair or remove the row"),
    };
    let text = |offset: usize, what: &str| -> Result<String, StoreError> {
        row.try_get(at + offset).map_err(|e| corrupt(what, &e))
    };
    let number = |offset: usize, what: &str| -> Result<u64, StoreError> {
        let n: i64 = row.try_get(at + offset).map_err(|e| corrupt(what, &e))?;
        from_db(n, location, what)
    };
    let recorded_at: i64 = row
        .try_get(at + 10)
        .map_err(|e| corrupt("commit time", &e))?;
    Ok(CommandRecord {
        command_id: *command_id.as_ref().map_err(|e| corrupt("command id", e))?,
        idempotency_key: row
            .try_get(at + 1)
            .map_err(|e| corrupt("idempotency key", &e))?,
        command: text(2, "command")?,
        aggregate: text(3, "aggregate")?,
        aggregate_id: text(4, "aggregate id")?,
        stream_id: text(5, "stream id")?,
        version: number(6, "the version")?,
        event_count: number(7, "the event count")?,
        first_position: number(8, "the first position")?,
        last_position: number(9, "the last position")?,
        recorded_at: nanos_to_time(recorded_at),
    })
}

/// Runs one statement with retries; `$what` names it in errors.
macro_rules! execute {
    ($self:expr, $what:expr, $sql:expr, $params:expr) => {{
        let inner = &*$self.inner;
        let sql = $sql;
        retrying!(inner, $what, |client| async {
            let stmt = client
                .prepare_cached(&sql)
                .await
                .map_err(|e| Failure::sql($what, &inner.location, e))?;
            client
                .execute(&stmt, $params)
                .await
                .map_err(|e| Failure::sql($what, &inner.location, e))
        })
    }};
}

/// Runs one query with retries.
macro_rules! query {
    ($self:expr, $what:expr, $sql:expr, $params:expr) => {{
        let inner = &*$self.inner;
        let sql = $sql;
        retrying!(inner, $what, |client| async {
            let stmt = client
                .prepare_cached(&sql)
                .await
                .map_err(|e| Failure::sql($what, &inner.location, e))?;
            client
                .query(&stmt, $params)
                .await
                .map_err(|e| Failure::sql($what, &inner.location, e))
        })
    }};
}

/// The advisory lock key of a subscriber name in a schema.
fn lease_key(schema: &str, name: &str) -> i64 {
    fnv1a(format!("evoq-lease:{schema}:{name}").as_bytes()) as i64
}

/// What a lease holds: the connection that holds the advisory lock. Dropping it closes the
/// connection, which frees the lock.
struct LeaseGuard {
    client: tokio_postgres::Client,
    driver: AbortHandle,
    /// The subscriber's name, for messages.
    name: String,
    /// The lock's key, as `pg_locks` shows it: its high and low halves.
    classid: u32,
    objid: u32,
    location: String,
    /// How long a confirmation may take before the lease counts as lost.
    deadline: Duration,
    /// The sessions' lock timeout, for messages.
    lock_timeout: Duration,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Whether the session running it holds the advisory lock of a 64-bit key (`pg_locks` shows
/// such a key in halves, `objsubid` 1).
const LEASE_HELD: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND classid = $1 AND objid = $2 AND objsubid = 1)";

impl LeaseGuard {
    /// Asks, on the lease's own connection, whether its session still holds the lock. A
    /// connection that broke or that does not answer within the connect timeout no longer
    /// vouches for it.
    async fn confirm(&self) -> Result<(), StoreError> {
        let what = format!("confirming the lease of `{}`", self.name);
        let parameters: [&(dyn ToSql + Sync); 2] = [&self.classid, &self.objid];
        let asked = self.client.query_one(LEASE_HELD, &parameters);
        match tokio::time::timeout(self.deadline, asked).await {
            Ok(Ok(row)) if row.try_get::<_, bool>(0).unwrap_or(false) => Ok(()),
            Ok(Ok(_)) => Err(StoreError::Backend {
                backend: BACKEND,
                message: format!(
                    "{what} on {}: its connection no longer holds the advisory lock",
                    self.location
                ),
            }),
            Ok(Err(error)) => {
                Err(Failure::sql(&what, &self.location, error).into_error(0, self.lock_timeout))
            }
            Err(_) => Err(connect_timeout(&what, &self.location, self.deadline)),
        }
    }
}

impl PostgresStore {
    /// Hands an append (with the command to record and the condition to check, if any) to the
    /// group-commit writer and waits for its result.
    async fn submit(&self, append: Append) -> Result<Appended, StoreError> {
        append.storable()?;
        let (reply, answer) = oneshot::channel();
        let job = AppendJob { append, reply };
        let stopped = || StoreError::Backend {
            backend: BACKEND,
            message: format!("the writer of {} stopped", self.inner.location),
        };
        self.inner.writer.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        self.submit(Append {
            stream: stream.to_owned(),
            expected,
            events,
            command: None,
            condition: None,
        })
        .await
    }

    /// The check and the entry are written by the append's transaction, after it took the
    /// cluster-wide head lock (see the [module docs](self)).
    async fn append_command(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> Result<Appended, StoreError> {
        self.submit(Append {
            stream: stream.to_owned(),
            expected,
            events,
            command: Some(command),
            condition: None,
        })
        .await
    }

    async fn find_command(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        if let CommandLookup::Key(key) = &lookup {
            limits::text("idempotency key", key)?;
        }
        let (column, value): (&str, &(dyn ToSql + Sync)) = match &lookup {
            CommandLookup::Id(id) => ("command_id", id),
            CommandLookup::Key(key) => ("idempotency_key", key),
        };
        let sql = format!(
            "SELECT {} FROM {}.commands WHERE {column} = $1 AND recorded_at >= $2 ORDER BY recorded_at DESC LIMIT 1",
            COMMAND_COLUMNS.join(", "),
            self.inner.schema
        );
        let what = format!("finding {lookup} in the command log");
        let rows = query!(self, &what, sql, &[value, &time_to_nanos(since)])?;
        rows.first().map(|row| decode_command(row, 0)).transpose()
    }

    /// Deletes at most `max` entries recorded before `before`, in the table's physical order
    /// (oldest first, as rows are appended). There is no index on the time: every append would
    /// pay for it, where the sweep runs once an hour.
    async fn sweep_commands(&self, before: SystemTime, max: usize) -> Result<usize, StoreError> {
        if max == 0 {
            return Ok(0);
        }
        let s = &self.inner.schema;
        let sql = format!(
            "DELETE FROM {s}.commands WHERE ctid IN \
             (SELECT ctid FROM {s}.commands WHERE recorded_at < $1 LIMIT $2)"
        );
        let removed = execute!(
            self,
            "sweeping the command log",
            sql,
            &[&time_to_nanos(before), &limit(max)]
        )?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// Several nodes share one schema.
    fn is_shared(&self) -> bool {
        true
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        limits::text(StoreError::STREAM_ID, stream)?;
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let s = &self.inner.schema;
        let sql = match direction {
            Direction::Forward => format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE stream_id = $1 AND version >= $2 ORDER BY version ASC LIMIT $3"
            ),
            Direction::Backward => format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT $3"
            ),
        };
        let rows = query!(
            self,
            "reading a stream",
            sql,
            &[&stream, &to_db(from), &limit(max_count)]
        )?;
        decode_events(&rows)
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        limits::text(StoreError::STREAM_ID, stream)?;
        let sql = format!(
            "SELECT COALESCE(MAX(version), 0) FROM {}.events WHERE stream_id = $1",
            self.inner.schema
        );
        let rows = query!(self, "reading a stream version", sql, &[&stream])?;
        let v: i64 = rows.first().map_or(0, |r| r.get(0));
        from_db(v, || format!("stream `{stream}`"), "the version")
    }

    async fn read_all(
        &self,
        after: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<AllPage, StoreError> {
        // Every position up to a head this node has seen is committed and visible: positions
        // are given out in commit order (see the module docs).
        let head = *self.inner.head.borrow();
        if max_count == 0 || after >= head {
            return Ok(AllPage {
                events: Vec::new(),
                scanned_through: after,
                undecodable: Vec::new(),
            });
        }
        let s = &self.inner.schema;
        let rows = match filter {
            EventFilter::All => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3"
                );
                query!(
                    self,
                    "reading the global order",
                    sql,
                    &[&to_db(after), &to_db(head), &limit(max_count)]
                )?
            }
            EventFilter::Types(types) => {
                let types: Vec<&str> = types.iter().map(String::as_str).collect();
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE position > $1 AND position <= $2 AND event_type = ANY($4) ORDER BY position LIMIT $3"
                );
                query!(
                    self,
                    "reading the global order",
                    sql,
                    &[&to_db(after), &to_db(head), &limit(max_count), &types]
                )?
            }
        };
        event_page(&rows, max_count, head)
    }

    /// Reads the tag index and the events (see `postgres/tags.rs`) up to the head this node has
    /// seen, as [`read_all`](EventStore::read_all) reads the global order.
    async fn read_query(
        &self,
        query: &EventQuery,
        after: u64,
        max_count: usize,
    ) -> Result<AllPage, StoreError> {
        limits::query(query)?;
        // Every position up to a head this node has seen is committed and visible, its tags
        // with it (one transaction wrote both).
        let head = *self.inner.head.borrow();
        if max_count == 0 || after >= head || query.is_none() {
            return Ok(AllPage {
                events: Vec::new(),
                scanned_through: if max_count == 0 {
                    after
                } else {
                    head.max(after)
                },
                undecodable: Vec::new(),
            });
        }
        let s = &self.inner.schema;
        let matching = Matching::new(s, query);
        let (from, upto, most) = (to_db(after), to_db(head), limit(max_count));
        let rows = query!(
            self,
            "reading events by query",
            matching.read_sql(s),
            &matching.parameters(&from, &upto, &most)
        )?;
        event_page(&rows, max_count, head)
    }

    /// Goes through the group-commit writer like every append: the append function checks the
    /// condition after it took the `evoq_head` lock every append of the cluster takes (see
    /// `postgres/writer.rs`).
    async fn append_if(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
        command: Option<NewCommand>,
    ) -> Result<Appended, StoreError> {
        self.submit(Append {
            stream: stream.to_owned(),
            expected: ExpectedVersion::Any,
            events,
            command,
            condition: Some(condition.clone()),
        })
        .await
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        limits::indexed(StoreError::STREAM_ID, &snapshot.stream_id)?;
        let sql = format!(
            "INSERT INTO {}.snapshots (stream_id, version, data, taken_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, data = EXCLUDED.data, taken_at = EXCLUDED.taken_at",
            self.inner.schema
        );
        execute!(
            self,
            "saving a snapshot",
            sql,
            &[
                &snapshot.stream_id,
                &to_db(snapshot.version),
                &snapshot.data,
                &time_to_nanos(snapshot.taken_at)
            ]
        )?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        limits::text(StoreError::STREAM_ID, stream)?;
        let sql = format!(
            "SELECT version, data, taken_at FROM {}.snapshots WHERE stream_id = $1",
            self.inner.schema
        );
        let rows = query!(self, "loading a snapshot", sql, &[&stream])?;
        rows.first()
            .map(|row| decode_snapshot(row, 0, stream))
            .transpose()
    }

    /// One statement (one round trip, one view of the data): the snapshot's row, if any, then
    /// the events after its version.
    async fn read_from_snapshot(
        &self,
        stream: &str,
        max_count: usize,
    ) -> Result<SnapshotAndEvents, StoreError> {
        limits::text(StoreError::STREAM_ID, stream)?;
        let s = &self.inner.schema;
        let sql = format!(
            "WITH snap AS (SELECT version, data, taken_at FROM {s}.snapshots WHERE stream_id = $1) \
             (SELECT NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::UUID, NULL::TEXT, NULL::BIGINT, \
                     NULL::BYTEA, NULL::BYTEA, NULL::BIGINT, snap.version, snap.data, snap.taken_at FROM snap) \
             UNION ALL \
             (SELECT {EVENT_COLUMNS}, NULL::BIGINT, NULL::BYTEA, NULL::BIGINT FROM {s}.events \
              WHERE stream_id = $1 AND version > COALESCE((SELECT version FROM snap), 0) \
              ORDER BY version ASC LIMIT $2)"
        );
        let rows = query!(
            self,
            "loading a snapshot and the events after it",
            sql,
            &[&stream, &limit(max_count)]
        )?;
        let mut snapshot = None;
        let mut events = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            if row.try_get::<_, Option<i64>>(0).ok().flatten().is_none() {
                snapshot = Some(decode_snapshot(row, 9, stream)?);
            } else {
                events.push(Arc::new(decode_event(row, &mut last)?));
            }
        }
        events.sort_by_key(|event| event.stream_version);
        Ok(SnapshotAndEvents { snapshot, events })
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        let sql = self.save_checkpoint_sql();
        execute!(self, "saving a checkpoint", sql, &[&name, &to_db(position)])?;
        Ok(())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let sql = self.load_checkpoint_sql();
        let rows = query!(self, "loading a checkpoint", sql, &[&name])?;
        rows.first()
            .map(|row| {
                from_db(
                    row.get(0),
                    || format!("checkpoint `{name}`"),
                    "the position",
                )
            })
            .transpose()
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let sql = format!(
            "SELECT name, position FROM {}.checkpoints ORDER BY name COLLATE \"C\"",
            self.inner.schema
        );
        let rows = query!(self, "listing checkpoints", sql, &[])?;
        rows.iter()
            .map(|row| {
                let name: String = row.get(0);
                let position = from_db(
                    row.get(1),
                    || format!("checkpoint `{name}`"),
                    "the position",
                )?;
                Ok((name, position))
            })
            .collect()
    }

    /// Sorts by id in byte order (`COLLATE "C"`), which the index of `(stream_id, version)`
    /// (in the database's collation) does not give: each page scans the events of the
    /// prefix.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let end = prefix_end(prefix);
        let sql = format!(
            "SELECT DISTINCT ON (stream_id COLLATE \"C\") stream_id, version, position, recorded_at \
             FROM {}.events WHERE stream_id COLLATE \"C\" >= $1 \
             AND ($2::TEXT IS NULL OR stream_id COLLATE \"C\" < $2) \
             AND ($3::TEXT IS NULL OR stream_id COLLATE \"C\" > $3) \
             ORDER BY stream_id COLLATE \"C\", version DESC LIMIT $4",
            self.inner.schema
        );
        let rows = query!(
            self,
            "listing streams",
            sql,
            &[&prefix, &end, &after, &limit(max)]
        )?;
        rows.iter()
            .map(|row| {
                let stream_id: String = row.get(0);
                let location = || format!("stream `{stream_id}`");
                Ok(StreamInfo {
                    version: from_db(row.get(1), location, "the version")?,
                    last_position: from_db(row.get(2), location, "the position")?,
                    last_recorded_at: nanos_to_time(row.get(3)),
                    stream_id,
                })
            })
            .collect()
    }

    async fn list_snapshots(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT stream_id, version FROM {}.snapshots \
             WHERE ($1::TEXT IS NULL OR stream_id COLLATE \"C\" > $1) \
             ORDER BY stream_id COLLATE \"C\" LIMIT $2",
            self.inner.schema
        );
        let rows = query!(self, "listing snapshots", sql, &[&after, &limit(max)])?;
        rows.iter()
            .map(|row| {
                let stream: String = row.get(0);
                let version = from_db(
                    row.get(1),
                    || format!("snapshot of `{stream}`"),
                    "the version",
                )?;
                Ok((stream, version))
            })
            .collect()
    }

    /// One statement, so the counts are of one state of the database.
    async fn count_events(&self) -> Result<EventCounts, StoreError> {
        let s = &self.inner.schema;
        let sql = format!(
            "SELECT event_type, COUNT(*), (SELECT COUNT(DISTINCT stream_id) FROM {s}.events) \
             FROM {s}.events GROUP BY event_type ORDER BY event_type COLLATE \"C\""
        );
        let rows = query!(self, "counting events", sql, &[])?;
        let mut counts = EventCounts::default();
        for row in &rows {
            let count = from_db(row.get(1), || "events".into(), "a count")?;
            counts.streams = from_db(row.get(2), || "events".into(), "a count")?;
            counts.events += count;
            counts.by_type.push((row.get(0), count));
        }
        Ok(counts)
    }

    async fn count_dead_letters(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let sql = format!(
            "SELECT handler, COUNT(*) FROM {}.dead_letters GROUP BY handler ORDER BY handler COLLATE \"C\"",
            self.inner.schema
        );
        let rows = query!(self, "counting dead letters", sql, &[])?;
        rows.iter()
            .map(|row| {
                let handler: String = row.get(0);
                let count = from_db(
                    row.get(1),
                    || format!("dead letters of `{handler}`"),
                    "a count",
                )?;
                Ok((handler, count))
            })
            .collect()
    }

    async fn save_dead_letter(&self, entry: DeadLetter) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {}.dead_letters (handler, event_id, position, stream_id, version, event_type, schema_version, data, metadata, recorded_at, error, attempts, first_failed_at, last_failed_at, kind, reason, raw_row) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (handler, event_id) DO UPDATE SET position = EXCLUDED.position, stream_id = EXCLUDED.stream_id, version = EXCLUDED.version, event_type = EXCLUDED.event_type, schema_version = EXCLUDED.schema_version, data = EXCLUDED.data, metadata = EXCLUDED.metadata, recorded_at = EXCLUDED.recorded_at, error = EXCLUDED.error, attempts = EXCLUDED.attempts, first_failed_at = EXCLUDED.first_failed_at, last_failed_at = EXCLUDED.last_failed_at, kind = EXCLUDED.kind, reason = EXCLUDED.reason, raw_row = EXCLUDED.raw_row",
            self.inner.schema
        );
        let e = &entry.event;
        let metadata = encode_metadata(&e.metadata);
        let raw_row = encode_raw_row(entry.raw_row.as_ref());
        execute!(
            self,
            "saving a dead letter",
            sql,
            &[
                &entry.handler,
                &e.event_id,
                &to_db(e.global_position),
                &e.stream_id(),
                &to_db(e.stream_version),
                &e.event_type.as_ref(),
                &i64::from(e.schema_version),
                &e.data,
                &metadata,
                &time_to_nanos(e.recorded_at),
                &entry.error,
                &i64::from(entry.attempts),
                &time_to_nanos(entry.first_failed_at),
                &time_to_nanos(entry.last_failed_at),
                &entry.kind.as_str(),
                &entry.reason,
                &raw_row
            ]
        )?;
        Ok(())
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
        let sql = format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM {}.dead_letters WHERE handler = $1 AND position > $2 ORDER BY position, event_id LIMIT $3",
            self.inner.schema
        );
        let rows = query!(
            self,
            "listing dead letters",
            sql,
            &[&handler, &to_db(after), &limit(max)]
        )?;
        rows.iter().map(decode_dead_letter).collect()
    }

    async fn load_dead_letter(
        &self,
        handler: &str,
        event_id: Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let sql = format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM {}.dead_letters WHERE handler = $1 AND event_id = $2",
            self.inner.schema
        );
        let rows = query!(self, "loading a dead letter", sql, &[&handler, &event_id])?;
        rows.first().map(decode_dead_letter).transpose()
    }

    async fn delete_dead_letter(&self, handler: &str, event_id: Uuid) -> Result<bool, StoreError> {
        let sql = format!(
            "DELETE FROM {}.dead_letters WHERE handler = $1 AND event_id = $2",
            self.inner.schema
        );
        Ok(execute!(self, "deleting a dead letter", sql, &[&handler, &event_id])? > 0)
    }

    async fn save_request(&self, request: HandlerRequest) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {}.requests (id, handler, action, event_id, requested_at, failed) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET handler = EXCLUDED.handler, action = EXCLUDED.action, event_id = EXCLUDED.event_id, requested_at = EXCLUDED.requested_at, failed = EXCLUDED.failed",
            self.inner.schema
        );
        execute!(
            self,
            "saving a handler request",
            sql,
            &[
                &request.id,
                &request.handler,
                &request.action.as_str(),
                &request.action.event_id(),
                &time_to_nanos(request.requested_at),
                &request.failed
            ]
        )?;
        Ok(())
    }

    async fn list_requests(
        &self,
        handler: &str,
        max: usize,
    ) -> Result<Vec<HandlerRequest>, StoreError> {
        let sql = format!(
            "SELECT id, handler, action, event_id, requested_at, failed FROM {}.requests WHERE handler = $1 AND failed IS NULL ORDER BY id LIMIT $2",
            self.inner.schema
        );
        let rows = query!(
            self,
            "listing handler requests",
            sql,
            &[&handler, &limit(max)]
        )?;
        rows.iter().map(decode_request_row).collect()
    }

    async fn count_requests(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let sql = format!(
            "SELECT handler, COUNT(*) FROM {}.requests WHERE failed IS NULL GROUP BY handler ORDER BY handler COLLATE \"C\"",
            self.inner.schema
        );
        let rows = query!(self, "counting handler requests", sql, &[])?;
        rows.iter()
            .map(|row| {
                let handler: String = row.get(0);
                let count = from_db(row.get(1), || format!("requests of `{handler}`"), "a count")?;
                Ok((handler, count))
            })
            .collect()
    }

    async fn load_request(
        &self,
        handler: &str,
        id: Uuid,
    ) -> Result<Option<HandlerRequest>, StoreError> {
        let sql = format!(
            "SELECT id, handler, action, event_id, requested_at, failed FROM {}.requests WHERE handler = $1 AND id = $2",
            self.inner.schema
        );
        let rows = query!(self, "loading a handler request", sql, &[&handler, &id])?;
        rows.first().map(decode_request_row).transpose()
    }

    async fn delete_request(&self, handler: &str, id: Uuid) -> Result<bool, StoreError> {
        let sql = format!(
            "DELETE FROM {}.requests WHERE handler = $1 AND id = $2",
            self.inner.schema
        );
        Ok(execute!(self, "deleting a handler request", sql, &[&handler, &id])? > 0)
    }

    async fn save_saga_state(
        &self,
        saga: &str,
        instance: &str,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {}.saga_state (saga, instance, state) VALUES ($1, $2, $3) \
             ON CONFLICT (saga, instance) DO UPDATE SET state = EXCLUDED.state",
            self.inner.schema
        );
        execute!(
            self,
            "saving a saga state",
            sql,
            &[&saga, &instance, &state]
        )?;
        Ok(())
    }

    async fn load_saga_state(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = format!(
            "SELECT state FROM {}.saga_state WHERE saga = $1 AND instance = $2",
            self.inner.schema
        );
        let rows = query!(self, "loading a saga state", sql, &[&saga, &instance])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn delete_saga_state(&self, saga: &str, instance: &str) -> Result<bool, StoreError> {
        let sql = format!(
            "DELETE FROM {}.saga_state WHERE saga = $1 AND instance = $2",
            self.inner.schema
        );
        Ok(execute!(self, "deleting a saga state", sql, &[&saga, &instance])? > 0)
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
        let sql = format!(
            "SELECT instance FROM {}.saga_state WHERE saga = $1 AND ($2::TEXT IS NULL OR instance > $2) ORDER BY instance LIMIT $3",
            self.inner.schema
        );
        let rows = query!(
            self,
            "listing saga instances",
            sql,
            &[&saga, &after, &limit(max)]
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A due time beyond about 292,000 years from 1970 is clamped (see the [module docs](self)).
    async fn schedule_timeout(&self, timeout: Timeout) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {}.timeouts (id, saga, instance, due_at, payload) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET saga = EXCLUDED.saga, instance = EXCLUDED.instance, due_at = EXCLUDED.due_at, payload = EXCLUDED.payload",
            self.inner.schema
        );
        execute!(
            self,
            "scheduling a timeout",
            sql,
            &[
                &timeout.id,
                &timeout.saga,
                &timeout.instance,
                &time_to_micros(timeout.due_at),
                &timeout.payload
            ]
        )?;
        Ok(())
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
        let sql = format!(
            "SELECT id, instance, due_at, payload FROM {}.timeouts WHERE saga = $1 AND due_at <= $2 ORDER BY due_at, id LIMIT $3",
            self.inner.schema
        );
        let rows = query!(
            self,
            "reading due timeouts",
            sql,
            &[&saga, &time_to_micros(now), &limit(max)]
        )?;
        rows.iter().map(|row| decode_timeout(row, saga)).collect()
    }

    async fn next_timeout(&self, saga: &str) -> Result<Option<SystemTime>, StoreError> {
        let sql = format!(
            "SELECT MIN(due_at) FROM {}.timeouts WHERE saga = $1",
            self.inner.schema
        );
        let rows = query!(self, "reading the next timeout", sql, &[&saga])?;
        let due_at: Option<i64> = rows.first().and_then(|row| row.get(0));
        due_at
            .map(|micros| micros_to_time(micros, || format!("the timeouts of saga `{saga}`")))
            .transpose()
    }

    async fn delete_timeout(&self, saga: &str, id: Uuid) -> Result<bool, StoreError> {
        let sql = format!(
            "DELETE FROM {}.timeouts WHERE id = $1 AND saga = $2",
            self.inner.schema
        );
        Ok(execute!(self, "deleting a timeout", sql, &[&id, &saga])? > 0)
    }

    async fn cancel_timeouts(&self, saga: &str, instance: &str) -> Result<usize, StoreError> {
        let sql = format!(
            "DELETE FROM {}.timeouts WHERE saga = $1 AND instance = $2",
            self.inner.schema
        );
        let removed = execute!(self, "cancelling timeouts", sql, &[&saga, &instance])?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// A session advisory lock on a connection of the lease's own: granted when no other node
    /// holds the name, freed when the lease is dropped or its connection dies. The lease is
    /// confirmed by asking that connection whether its session still holds the lock.
    async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let inner = &*self.inner;
        let key = lease_key(&inner.options.schema, name);
        let deadline = inner.options.connect_timeout;
        let what = format!("the lease of `{name}`");
        let lock_timeout = inner.options.lock_timeout;
        let (client, connection) = connect_own(&inner.config, deadline, &what, &inner.location)
            .await
            .map_err(|failure| failure.into_error(0, lock_timeout))?;
        let (lost_tx, lost_rx) = watch::channel(false);
        let driver = tokio::spawn(async move {
            let _ = connection.await;
            let _ = lost_tx.send(true);
        })
        .abort_handle();
        let guard = LeaseGuard {
            client,
            driver,
            name: name.to_owned(),
            classid: (key as u64 >> 32) as u32,
            objid: key as u64 as u32,
            location: inner.location.clone(),
            deadline,
            lock_timeout,
        };
        let parameters: [&(dyn ToSql + Sync); 1] = [&key];
        let asked = guard
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &parameters);
        let granted: bool = match tokio::time::timeout(deadline, asked).await {
            Ok(Ok(row)) => row.get(0),
            Ok(Err(error)) => {
                return Err(
                    Failure::sql(&format!("asking for {what}"), &inner.location, error)
                        .into_error(0, lock_timeout),
                );
            }
            Err(_) => return Err(connect_timeout(&what, &inner.location, deadline)),
        };
        if !granted {
            return Ok(None);
        }
        let guard = Arc::new(guard);
        let check = Arc::clone(&guard);
        Ok(Some(Lease::shared(Box::new(guard), lost_rx).confirmed_by(
            move || {
                let guard = Arc::clone(&check);
                async move { guard.confirm().await }
            },
        )))
    }
}
