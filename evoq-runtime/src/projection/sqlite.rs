//! SQL read models on SQLite (feature `sqlite`): a projection's tables in the store's own file,
//! changed in the transaction that saves the projection's checkpoint.
//!
//! # How it works
//!
//! - **One transaction per event.** A projection method opens the event's transaction with
//!   [`SqliteReadModel::begin`], writes through it ([`SqliteEventTransaction::execute`] and its
//!   queries, which see the event's own writes) and ends with
//!   [`finish`](SqliteEventTransaction::finish). The transaction stays open: the runtime then
//!   calls [`ReadModel::commit`], which saves the projection's checkpoint **in that transaction**
//!   and commits both. A transaction handle dropped without `finish` (the method returned an
//!   error with `?`, or panicked) rolls its changes back at once, so a failed event leaves neither
//!   rows nor checkpoint behind, and its retry starts from a clean state.
//! - **The checkpoint is the store's.** It is the projection's row of the store's `checkpoints`
//!   table (the row the runtime reads for any subscriber), written only in the read model's
//!   transactions. The read model keeps its checkpoint ([`ReadModel::keeps_checkpoint`]): a
//!   restarted projection resumes after the last event whose changes were committed, never
//!   before (no event applied twice) and never after (none skipped), even after `kill -9`.
//! - **Never twice.** The checkpoint only moves forward, in the event's transaction: changes of
//!   an event the checkpoint already covers (a replay from the origin, say) are rolled back.
//! - **Migrations** ([`SqliteReadModelBuilder::migration`]): an ordered list of SQL scripts, each
//!   run once per database, in a transaction of its own with the row that records it (table
//!   `evoq_read_model_migrations`: read model, version from 1, name, checksum of the SQL, time).
//!   A failing migration is rolled back whole and reported by version and name
//!   ([`SqliteReadModelError::Migration`]); an applied migration whose name or SQL changed, or a
//!   database that holds more migrations than the list, is refused before anything runs.
//! - **Rebuild** ([`Evoq::rebuild`](crate::Evoq::rebuild)): [`ReadModel::clear`] deletes every row
//!   of the tables named with [`SqliteReadModelBuilder::tables`] and the projection's checkpoint,
//!   in one transaction; the runtime then replays every event.
//! - **Queries** ([`SqliteReadModel::read`]) run on read-only connections of their own, off the
//!   async runtime: they see committed data only, never an event half applied.
//! - **One writer at a time.** SQLite in WAL mode has one write lock per file, which the read
//!   model shares with the store's writer thread (and with the other read models of the file).
//!   An event's transaction holds it from `begin` to the runtime's commit, so keep projection
//!   methods short and never wait, while the transaction is open, for anything that appends
//!   (a dispatch): the append would wait for the lock until the store's busy timeout. `begin`
//!   waits for the lock without blocking the async runtime, up to the store's busy timeout, and
//!   the read models of one file take it in the order they asked.
//! - **Durability**: the read model's commits use `synchronous=NORMAL` by default
//!   ([`SqliteReadModelBuilder::durability`]): a power loss may undo its last commits, changes
//!   and checkpoint together, and the projection then applies those events again. A process
//!   crash loses nothing.
//!
//! One read model serves one projection: its checkpoint is that projection's, and a rebuild
//! clears all its tables. The projection it belongs to is recorded in table
//! `evoq_read_model_owners` when the runtime first binds it ([`ReadModel::bind`], at start),
//! and a projection of another name is refused from then on, across restarts and nodes
//! (`Refused`, and the runtime does not start): a projection renamed in the code keeps its old
//! name at run time (`HandlerOptions::name`). A read model an earlier version of evoq filled is
//! recorded for the projection whose checkpoint is there, and refused to another while its
//! tables hold rows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Params, Row, params};
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use super::definition::{ProjectionError, ReadModel, ReadModelError};
use super::sql::{
    self, IDENTIFIER_RULE, Mismatch, Owner, Refusal, checksum, is_identifier, now_micros,
    quote_sql, to_db,
};
use crate::delivery::consumer::EventMeta;
use crate::store::StoreError;
use crate::store::sqlite::{
    ADVANCE_CHECKPOINT_SQL, DELETE_CHECKPOINT_SQL, Durability, LOAD_CHECKPOINT_SQL,
    SAVE_CHECKPOINT_SQL, SqliteStore, take_dead_letter,
};

/// The SQLite driver the read model's API speaks: `params!`, `Row`, `Connection`, `Error`.
/// Use this one, not a `rusqlite` of another version.
pub use rusqlite;

/// The table that records the migrations applied, per read model.
const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS evoq_read_model_migrations (
    model      TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    checksum   INTEGER NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (model, version)
)";

/// The table that records the projection each read model of the file belongs to.
const OWNERS_TABLE: &str = "CREATE TABLE IF NOT EXISTS evoq_read_model_owners (
    model      TEXT    NOT NULL PRIMARY KEY,
    projection TEXT    NOT NULL,
    bound_at   INTEGER NOT NULL
)";

/// The most idle query connections a read model keeps.
const READERS: usize = 4;

/// A projection's read model in the SQLite store's file: its tables change in the transaction
/// that saves the projection's checkpoint, so each event changes them exactly once, even across
/// a crash. See the [module docs](self).
///
/// Cheap to clone: every clone is the same read model (the projection holds one, the queries
/// another).
///
/// ```
/// use evoq::prelude::*;
/// use evoq::projection::sqlite::rusqlite::params;
/// use evoq::projection::sqlite::SqliteReadModel;
/// use evoq::store::sqlite::SqliteStore;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// struct Deposited { account: String, amount: i64 }
/// #[derive(Command, Debug)]
/// struct Deposit { #[aggregate_id] account: String, amount: i64 }
/// #[derive(Debug, thiserror::Error)]
/// #[error("never")]
/// struct Never;
/// #[derive(Default)]
/// struct Account;
/// #[aggregate]
/// impl Account {
///     #[handles]
///     fn deposit(&self, cmd: &Deposit) -> Result<Deposited, Never> {
///         Ok(Deposited { account: cmd.account.clone(), amount: cmd.amount })
///     }
///     #[apply]
///     fn deposited(&mut self, _: &Deposited) {}
/// }
///
/// struct Balances { model: SqliteReadModel }
///
/// #[projection(name = "balances", read_model = model)]
/// impl Balances {
///     #[handles]
///     async fn deposited(&mut self, e: &Deposited, meta: &EventMeta) -> Result<(), ProjectionError> {
///         let tx = self.model.begin(meta).await?;
///         tx.execute(
///             "INSERT INTO balances (account, balance) VALUES (?1, ?2)
///              ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
///             params![e.account, e.amount],
///         )?;
///         tx.finish()?; // committed by the runtime, with the checkpoint
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("evoq-doc-{}", evoq::Uuid::now_v7()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("app.db");
/// let store = SqliteStore::open(&path).await?;
/// let model = SqliteReadModel::builder(&store, "balances")
///     .migration("create balances", "CREATE TABLE balances (account TEXT PRIMARY KEY, balance INTEGER NOT NULL)")
///     .tables(["balances"])
///     .open()
///     .await?;
/// let app = Evoq::builder()
///     .store(store)
///     .projection(Balances { model: model.clone() })
///     .start()
///     .await?;
/// let done = app.dispatch(Deposit { account: "acc-1".into(), amount: 5 }).await?;
/// app.wait_for::<Balances>(done.token).await?;
/// let balance: i64 = model
///     .read(|conn| conn.query_row("SELECT balance FROM balances WHERE account = 'acc-1'", [], |row| row.get(0)))
///     .await?;
/// assert_eq!(balance, 5);
/// app.stop().await;
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteReadModel {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// The tables a rebuild clears, in order.
    tables: Vec<String>,
    store: SqliteStore,
    busy_timeout: Duration,
    /// The file's gate: the read models of one file take SQLite's write lock in turn.
    gate: Arc<tokio::sync::Mutex<()>>,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
}

/// The read model's writing connection and where its transaction is.
struct Writer {
    conn: Connection,
    state: State,
    /// The number of the last transaction handle given out.
    generation: u64,
    /// The checkpoint last committed or read.
    committed: u64,
    /// Whether `committed` is known to be the stored one: it is read again before the first
    /// transaction after the runtime asked for the checkpoint (on a store shared by several
    /// nodes, the runtime may resume further, where another node's commits took it).
    fresh: bool,
    /// The projection it serves, once bound to it (see [`Inner::bind`]).
    projection: Option<String>,
    /// Why it refuses every write and commit: a second projection, or a commit that failed.
    refused: Option<Refusal>,
}

enum State {
    Idle,
    /// `begin` waits for the write lock.
    Starting,
    /// The transaction of the event at `position` is open, used through handle `generation`.
    Open {
        generation: u64,
        position: u64,
        _gate: OwnedMutexGuard<()>,
    },
    /// The handle finished: the changes wait for the runtime's commit, with the checkpoint.
    Staged {
        position: u64,
        _gate: OwnedMutexGuard<()>,
    },
}

/// What went wrong with a [`SqliteReadModel`]. Each variant names the read model and what to
/// do; it converts into [`ProjectionError`] with `?` in a projection method.
///
/// ```
/// use evoq::projection::sqlite::{SqliteReadModel, SqliteReadModelError};
/// use evoq::store::sqlite::SqliteStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("evoq-doc-{}", evoq::Uuid::now_v7()));
/// # std::fs::create_dir_all(&dir)?;
/// let store = SqliteStore::open(dir.join("app.db")).await?;
/// let failed = SqliteReadModel::builder(&store, "report")
///     .migration("create rows", "CREATE TABLE rows (id INTEGER PRIMARY KEY)")
///     .migration("broken", "CREATE TABLE later (id INTEGER); CREATE TABLE rows (id INTEGER)")
///     .open()
///     .await;
/// match failed {
///     Err(SqliteReadModelError::Migration { version, migration, .. }) => {
///         assert_eq!((version, migration.as_str()), (2, "broken")); // rolled back whole
///     }
///     other => panic!("{:?}", other.err()),
/// }
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteReadModelError {
    /// A name given to the builder is not usable.
    #[error("read model `{model}`: the {what} `{name}` is not valid: {rule}")]
    InvalidName {
        /// The read model.
        model: String,
        /// What the name is of (`read model name`, `table name`, `migration name`).
        what: &'static str,
        /// The name.
        name: String,
        /// What it may be.
        rule: &'static str,
    },
    /// A migration failed: it was rolled back whole, and the migrations before it stay applied.
    #[error(
        "read model `{model}`: migration {version} `{migration}` failed and was rolled back (nothing of it is applied): {source}; fix its SQL and open the read model again"
    )]
    Migration {
        /// The read model.
        model: String,
        /// Its version (its place in the list, from 1).
        version: u32,
        /// Its name.
        migration: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// An applied migration is no longer the one at its version in the list.
    #[error(
        "read model `{model}`: migration {version} {reason}; applied migrations never change: put the change in a new migration at the end of the list"
    )]
    MigrationChanged {
        /// The read model.
        model: String,
        /// The migration's version.
        version: u32,
        /// What changed.
        reason: String,
    },
    /// The database holds more migrations than the list.
    #[error(
        "read model `{model}`: the database has {applied} migration(s) applied but the list has {known}: a newer build migrated it, or migrations were removed from the list (they are append-only); nothing was changed"
    )]
    MigrationsTooNew {
        /// The read model.
        model: String,
        /// The migrations applied in the database.
        applied: u32,
        /// The migrations in the list.
        known: u32,
    },
    /// A table named for rebuilds does not exist once the migrations ran.
    #[error(
        "read model `{model}`: table `{table}`, named in `tables` for rebuilds, does not exist after the migrations: create it in a migration or fix its name"
    )]
    UnknownTable {
        /// The read model.
        model: String,
        /// The table.
        table: String,
    },
    /// A rebuild asked to clear a read model that names no table.
    #[error(
        "read model `{model}` names no table to clear for a rebuild: list its tables with `SqliteReadModelBuilder::tables`"
    )]
    NothingToClear {
        /// The read model.
        model: String,
    },
    /// A statement or a query failed.
    #[error("read model `{model}`: {what} failed: {source}")]
    Sql {
        /// The read model.
        model: String,
        /// The statement (its SQL, shortened) or the step.
        what: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite's write lock stayed taken for the whole busy timeout.
    #[error(
        "read model `{model}`: the database file stayed locked for {waited:?} while {what}: another connection holds a write transaction open that long (keep projection methods short, and never dispatch from one while its transaction is open)"
    )]
    Busy {
        /// The read model.
        model: String,
        /// What waited.
        what: &'static str,
        /// How long.
        waited: Duration,
    },
    /// An event's transaction was used in a way that cannot work.
    #[error("read model `{model}`: {reason}")]
    Transaction {
        /// The read model.
        model: String,
        /// What happened and what to do.
        reason: String,
    },
    /// The read model refuses writes (see the reason).
    #[error("read model `{model}` refuses writes: {reason}")]
    Refused {
        /// The read model.
        model: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A query given to [`SqliteReadModel::read`] panicked.
    #[error("read model `{model}`: a query panicked: {message}")]
    Panicked {
        /// The read model.
        model: String,
        /// The panic's message.
        message: String,
    },
    /// The store's file could not be opened for the read model.
    #[error("read model `{model}`: {source}")]
    Store {
        /// The read model.
        model: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
}

impl From<SqliteReadModelError> for ProjectionError {
    fn from(error: SqliteReadModelError) -> Self {
        ProjectionError::caused_by(error)
    }
}

impl From<SqliteReadModelError> for ReadModelError {
    fn from(error: SqliteReadModelError) -> Self {
        match error {
            SqliteReadModelError::Refused { model, reason } => ReadModelError::Refused {
                read_model: model,
                reason,
            },
            error => ReadModelError::Backend(error.to_string()),
        }
    }
}

/// How to open a [`SqliteReadModel`]: its name, its migrations, the tables a rebuild clears.
///
/// ```
/// use evoq::projection::sqlite::SqliteReadModel;
/// use evoq::store::sqlite::{Durability, SqliteStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("evoq-doc-{}", evoq::Uuid::now_v7()));
/// # std::fs::create_dir_all(&dir)?;
/// let store = SqliteStore::open(dir.join("app.db")).await?;
/// let model = SqliteReadModel::builder(&store, "orders")
///     .migration("create orders", "CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER NOT NULL)")
///     .migration("add lines", "CREATE TABLE lines (order_id TEXT NOT NULL, sku TEXT NOT NULL)")
///     .migration("index lines", "CREATE INDEX lines_by_order ON lines (order_id)")
///     .tables(["lines", "orders"]) // what a rebuild clears
///     .durability(Durability::Full)
///     .open()
///     .await?; // runs the migrations not applied yet, once each
/// assert_eq!(model.name(), "orders");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is awaited"]
pub struct SqliteReadModelBuilder {
    store: SqliteStore,
    name: String,
    migrations: Vec<(String, String)>,
    tables: Vec<String>,
    durability: Durability,
}

impl SqliteReadModelBuilder {
    /// Adds the next migration: `sql` (one or more statements, no `BEGIN`/`COMMIT`), known by
    /// `name`. Its version is its place in the list, from 1. Migrations are append-only: once
    /// applied, a migration's name and SQL must not change.
    pub fn migration(mut self, name: impl Into<String>, sql: impl Into<String>) -> Self {
        self.migrations.push((name.into(), sql.into()));
        self
    }

    /// Adds a table a rebuild clears (tables are cleared in the order given).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.tables.push(table.into());
        self
    }

    /// Adds the tables a rebuild clears (in the order given: list a table that references
    /// another before it).
    pub fn tables<I, S>(mut self, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tables.extend(tables.into_iter().map(Into::into));
        self
    }

    /// How far the read model's commits survive (default [`Durability::Normal`]: a power loss
    /// may undo the last ones, changes and checkpoint together, which the projection then
    /// applies again; [`Durability::Full`] syncs every commit, at the cost of catch-up speed).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Opens the read model: checks the names, runs the migrations not applied yet (each once,
    /// in a transaction of its own), checks that the tables to clear exist.
    pub async fn open(self) -> Result<SqliteReadModel, SqliteReadModelError> {
        let name = self.name;
        let invalid = |what: &'static str, value: &str| SqliteReadModelError::InvalidName {
            model: name.clone(),
            what,
            name: value.to_owned(),
            rule: IDENTIFIER_RULE,
        };
        if !is_identifier(&name) {
            return Err(invalid("read model name", &name));
        }
        if let Some(table) = self.tables.iter().find(|t| !is_identifier(t)) {
            return Err(invalid("table name", table));
        }
        if let Some((migration, _)) = self.migrations.iter().find(|(m, _)| m.trim().is_empty()) {
            return Err(SqliteReadModelError::InvalidName {
                model: name.clone(),
                what: "migration name",
                name: migration.clone(),
                rule: "give every migration a name that says what it does",
            });
        }
        let store = self.store;
        let opened = {
            let store = store.clone();
            let name = name.clone();
            let tables = self.tables.clone();
            let migrations = self.migrations;
            let durability = self.durability;
            tokio::task::spawn_blocking(move || {
                open_writer(&store, &name, &migrations, &tables, durability)
            })
            .await
        };
        let conn = match opened {
            Ok(result) => result?,
            Err(error) => {
                return Err(SqliteReadModelError::Panicked {
                    model: name,
                    message: error.to_string(),
                });
            }
        };
        Ok(SqliteReadModel {
            inner: Arc::new(Inner {
                gate: gate_of(store.path()),
                busy_timeout: store.busy_timeout(),
                store,
                name,
                tables: self.tables,
                writer: Mutex::new(Writer {
                    conn,
                    state: State::Idle,
                    generation: 0,
                    committed: 0,
                    fresh: false,
                    projection: None,
                    refused: None,
                }),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }
}

impl SqliteReadModel {
    /// The builder of the read model `name` in `store`'s file: add its migrations and the
    /// tables a rebuild clears, then [`open`](SqliteReadModelBuilder::open) it. `name` (1 to 63
    /// ASCII letters, digits or `_`) keys its migrations.
    pub fn builder(store: &SqliteStore, name: impl Into<String>) -> SqliteReadModelBuilder {
        SqliteReadModelBuilder {
            store: store.clone(),
            name: name.into(),
            migrations: Vec::new(),
            tables: Vec::new(),
            durability: Durability::Normal,
        }
    }

    /// The read model's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Opens the transaction of `event` (the event the projection method is handling): wait for
    /// it, write through it, then [`finish`](SqliteEventTransaction::finish) it; the runtime
    /// commits its changes with the checkpoint. Dropped unfinished, it rolls back.
    ///
    /// Waits for SQLite's write lock without blocking the async runtime, up to the store's busy
    /// timeout ([`SqliteReadModelError::Busy`]). One transaction per event: a second `begin`
    /// while one is open is an error.
    pub async fn begin(
        &self,
        event: &EventMeta,
    ) -> Result<SqliteEventTransaction, SqliteReadModelError> {
        let inner = &self.inner;
        let position = event.global_position();
        {
            let mut writer = inner.writer();
            writer.usable(&inner.name)?;
            if !writer.fresh {
                writer.reload(inner)?;
            }
            match &writer.state {
                State::Idle => {}
                State::Starting | State::Open { .. } => {
                    return Err(inner.transaction_error(
                        "a transaction of this read model is already open: open one per event, and pass `&tx` to the code that writes",
                    ));
                }
                State::Staged {
                    position: staged, ..
                } => {
                    // Finished, then the method failed: this is its retry. (Another event
                    // means a commit never came: its changes go too.)
                    if *staged != position {
                        tracing::warn!(
                            name: "evoq.projection.read_model",
                            read_model = %inner.name,
                            position = *staged,
                            "changes finished but never committed are rolled back",
                        );
                    }
                    writer.rollback();
                }
            }
            writer.state = State::Starting;
        }
        let starting = Starting(inner);
        let gate = inner
            .write_lock(
                |writer| writer.conn.execute_batch("BEGIN IMMEDIATE"),
                "starting an event's transaction",
            )
            .await?
            .1;
        let mut writer = inner.writer();
        writer.generation += 1;
        let generation = writer.generation;
        writer.state = State::Open {
            generation,
            position,
            _gate: gate,
        };
        drop(writer);
        drop(starting);
        Ok(SqliteEventTransaction {
            inner: Arc::clone(inner),
            generation,
            position,
            event_id: event.event_id(),
            finished: false,
        })
    }

    /// Runs `query` on a read-only connection of its own, off the async runtime: it sees what
    /// is committed (every event up to the projection's checkpoint, none half applied).
    ///
    /// ```
    /// # use evoq::projection::sqlite::SqliteReadModel;
    /// # async fn demo(model: SqliteReadModel) -> Result<(), evoq::projection::sqlite::SqliteReadModelError> {
    /// let account = "acc-1".to_owned();
    /// let balance: Option<i64> = model
    ///     .read(move |conn| {
    ///         use evoq::projection::sqlite::rusqlite::OptionalExtension;
    ///         conn.query_row("SELECT balance FROM balances WHERE account = ?1", [&account], |row| row.get(0))
    ///             .optional()
    ///     })
    ///     .await?;
    /// # let _ = balance;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read<T, F>(&self, query: F) -> Result<T, SqliteReadModelError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let ran =
            tokio::task::spawn_blocking(move || {
                let idle = inner
                    .readers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop();
                let conn =
                    match idle {
                        Some(conn) => conn,
                        None => inner.store.connect(true).map_err(|source| {
                            SqliteReadModelError::Store {
                                model: inner.name.clone(),
                                source: Box::new(source),
                            }
                        })?,
                    };
                let result = query(&conn).map_err(|source| SqliteReadModelError::Sql {
                    model: inner.name.clone(),
                    what: "a query".to_owned(),
                    source,
                });
                let mut readers = inner.readers.lock().unwrap_or_else(PoisonError::into_inner);
                if readers.len() < READERS {
                    readers.push(conn);
                }
                result
            })
            .await;
        ran.unwrap_or_else(|error| {
            Err(SqliteReadModelError::Panicked {
                model: self.inner.name.clone(),
                message: error.to_string(),
            })
        })
    }
}

impl std::fmt::Debug for SqliteReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReadModel")
            .field("name", &self.inner.name)
            .field("path", &self.inner.store.path())
            .field("tables", &self.inner.tables)
            .finish_non_exhaustive()
    }
}

/// The transaction of one event in a [`SqliteReadModel`]: what the projection method writes,
/// committed by the runtime with the projection's checkpoint once the method
/// [`finish`](Self::finish)es it. Dropped without `finish`, it rolls back at once.
///
/// Its statements and queries run on the read model's connection inside the transaction (they
/// see the event's own writes); they are quick and never wait for a lock, so they are plain
/// calls, not futures.
///
/// ```
/// use evoq::prelude::*;
/// use evoq::projection::sqlite::rusqlite::params;
/// use evoq::projection::sqlite::{SqliteEventTransaction, SqliteReadModel, SqliteReadModelError};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// # struct ItemAdded { cart: String, sku: String }
///
/// struct Carts { model: SqliteReadModel }
///
/// /// A helper that writes through the event's transaction.
/// fn add_item(tx: &SqliteEventTransaction, cart: &str, sku: &str) -> Result<(), SqliteReadModelError> {
///     let lines: i64 = tx.query_one("SELECT COUNT(*) FROM lines WHERE cart = ?1", [cart], |row| row.get(0))?;
///     tx.execute("INSERT INTO lines (cart, line, sku) VALUES (?1, ?2, ?3)", params![cart, lines + 1, sku])?;
///     Ok(())
/// }
///
/// #[projection(name = "carts", read_model = model)]
/// impl Carts {
///     #[handles]
///     async fn added(&mut self, e: &ItemAdded, meta: &EventMeta) -> Result<(), ProjectionError> {
///         let tx = self.model.begin(meta).await?;
///         add_item(&tx, &e.cart, &e.sku)?; // an error here drops `tx`: rolled back
///         tx.finish()?;
///         Ok(())
///     }
/// }
/// ```
#[must_use = "an event's transaction rolls back unless `finish` is called"]
pub struct SqliteEventTransaction {
    inner: Arc<Inner>,
    generation: u64,
    position: u64,
    event_id: Uuid,
    finished: bool,
}

impl SqliteEventTransaction {
    /// The global position of the event the transaction is for.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Runs one statement (`INSERT`, `UPDATE`, `DELETE`, ...) with `params`
    /// (`rusqlite::params![...]`, an array, or `[]`); the number of rows changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize, SqliteReadModelError> {
        self.with(
            || format!("the statement {}", quote_sql(sql)),
            |conn| conn.prepare_cached(sql)?.execute(params),
        )
    }

    /// The first row of a query, mapped by `map`; an error when it returns no row.
    pub fn query_one<T, P, F>(
        &self,
        sql: &str,
        params: P,
        map: F,
    ) -> Result<T, SqliteReadModelError>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.with(
            || format!("the query {}", quote_sql(sql)),
            |conn| conn.prepare_cached(sql)?.query_row(params, map),
        )
    }

    /// The first row of a query, mapped by `map`, or `None` when it returns no row.
    pub fn query_opt<T, P, F>(
        &self,
        sql: &str,
        params: P,
        map: F,
    ) -> Result<Option<T>, SqliteReadModelError>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.with(
            || format!("the query {}", quote_sql(sql)),
            |conn| conn.prepare_cached(sql)?.query_row(params, map).optional(),
        )
    }

    /// Runs `f` with the connection, inside the transaction: for what the methods above do not
    /// cover (a prepared statement run many times, `query_map`). Never end the transaction
    /// (`COMMIT`, `ROLLBACK`): [`finish`](Self::finish) would refuse it.
    pub fn with_connection<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SqliteReadModelError> {
        self.with(|| "a statement run through `with_connection`".to_owned(), f)
    }

    /// The event's changes are complete: the runtime commits them with the checkpoint once the
    /// method returns. Call it last: a method that fails after it has its changes rolled back
    /// before its retry, but not when the error policy then skips or dead-letters the event.
    ///
    /// For an event already behind the checkpoint: a dead letter delivered again
    /// ([`DeadLetterQueue::retry`](crate::DeadLetterQueue::retry)) commits here, without moving
    /// the checkpoint; any other (its changes are committed already: another node's delivery,
    /// a replay from the origin) is rolled back, changing nothing.
    pub fn finish(mut self) -> Result<(), SqliteReadModelError> {
        self.finished = true;
        let inner = &self.inner;
        let mut writer = inner.writer();
        let open = matches!(
            &writer.state,
            State::Open { generation, .. } if *generation == self.generation
        );
        if !open {
            return Err(inner.transaction_error(
                "this event's transaction is over (rolled back, or replaced by another): nothing of it will be committed",
            ));
        }
        if writer.conn.is_autocommit() {
            writer.state = State::Idle;
            return Err(inner.transaction_error(
                "a statement of the projection ended the event's transaction (`COMMIT` or `ROLLBACK`), so its changes were committed or dropped without the checkpoint: never end it, `finish` it",
            ));
        }
        let State::Open {
            position, _gate, ..
        } = std::mem::replace(&mut writer.state, State::Idle)
        else {
            return Ok(());
        };
        // The event's dead letter, if it has one, ends in the transaction of its changes: once
        // they are committed, no retry of it applies them again.
        let redelivered = match &writer.projection {
            Some(projection) => take_dead_letter(&writer.conn, projection, self.event_id),
            None => Ok(false),
        };
        if position <= writer.committed {
            // Behind the checkpoint: a dead letter delivered again commits now; an event whose
            // changes are committed already (another node's delivery, a replay from the origin)
            // changes nothing.
            let committed = match redelivered {
                Ok(true) => writer.conn.execute_batch("COMMIT"),
                Ok(false) => {
                    writer.rollback();
                    tracing::warn!(
                        name: "evoq.projection.read_model",
                        read_model = %inner.name,
                        position,
                        "the event was already committed: its changes were rolled back",
                    );
                    return Ok(());
                }
                Err(error) => Err(error),
            };
            if let Err(source) = committed {
                writer.rollback();
                return Err(inner.sql("committing a dead letter delivered again", source));
            }
            return Ok(());
        }
        if let Err(source) = redelivered {
            writer.rollback();
            return Err(inner.sql("removing the event's dead letter", source));
        }
        writer.state = State::Staged { position, _gate };
        Ok(())
    }

    fn with<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, SqliteReadModelError> {
        let inner = &self.inner;
        let writer = inner.writer();
        match &writer.state {
            State::Open { generation, .. } if *generation == self.generation => {}
            _ => {
                return Err(inner.transaction_error(
                    "this event's transaction is over (finished, rolled back, or replaced by another)",
                ));
            }
        }
        f(&writer.conn).map_err(|source| SqliteReadModelError::Sql {
            model: inner.name.clone(),
            what: what(),
            source,
        })
    }
}

impl Drop for SqliteEventTransaction {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut writer = self.inner.writer();
        if matches!(
            &writer.state,
            State::Open { generation, .. } if *generation == self.generation
        ) {
            writer.rollback();
        }
    }
}

impl std::fmt::Debug for SqliteEventTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEventTransaction")
            .field("read_model", &self.inner.name)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// Puts a `begin` that did not get its transaction (an error, or its future dropped) back to
/// idle.
struct Starting<'a>(&'a Inner);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        let mut writer = self.0.writer();
        if matches!(writer.state, State::Starting) {
            writer.state = State::Idle;
        }
    }
}

impl Inner {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn transaction_error(&self, reason: &str) -> SqliteReadModelError {
        SqliteReadModelError::Transaction {
            model: self.name.clone(),
            reason: reason.to_owned(),
        }
    }

    fn sql(&self, what: &str, source: rusqlite::Error) -> SqliteReadModelError {
        SqliteReadModelError::Sql {
            model: self.name.clone(),
            what: what.to_owned(),
            source,
        }
    }

    /// Takes the file's gate, then runs `first` (`BEGIN IMMEDIATE`, or a write in autocommit)
    /// until SQLite grants its write lock: at once if it can, else again after short sleeps
    /// (the async runtime goes on meanwhile), up to the busy timeout. Returns what `first`
    /// returned and the gate, held until the transaction ends.
    async fn write_lock<T>(
        &self,
        mut first: impl FnMut(&mut Writer) -> rusqlite::Result<T> + Send,
        what: &'static str,
    ) -> Result<(T, OwnedMutexGuard<()>), SqliteReadModelError> {
        let gate = Arc::clone(&self.gate).lock_owned().await;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let result = {
                let mut writer = self.writer();
                first(&mut writer)
            };
            match result {
                Ok(value) => return Ok((value, gate)),
                Err(error) if is_busy(&error) => {}
                Err(source) => return Err(self.sql(what, source)),
            }
            let waited = started.elapsed();
            if waited >= self.busy_timeout {
                return Err(SqliteReadModelError::Busy {
                    model: self.name.clone(),
                    what,
                    waited,
                });
            }
            tokio::time::sleep(pause.min(self.busy_timeout - waited)).await;
            pause = (pause * 2).min(Duration::from_millis(8));
        }
    }

    /// Binds the read model to `projection`, the projection it serves from now on: recorded in
    /// table `evoq_read_model_owners` at its first use (see [`claim`]). A projection another
    /// is recorded for, or whose rows are there without its checkpoint, is refused; so is a
    /// second projection of this process, for good (the first one's writes included).
    async fn bind(&self, projection: &str) -> Result<(), SqliteReadModelError> {
        {
            let mut writer = self.writer();
            if let Some(bound) = writer.projection.clone() {
                if bound == projection {
                    return Ok(());
                }
                return Err(writer.refuse_second(&bound, projection, &self.name));
            }
            if matches!(writer.state, State::Open { .. } | State::Staged { .. }) {
                writer.rollback();
            }
        }
        let (model, tables) = (&self.name, &self.tables);
        let (owner, gate) = self
            .write_lock(
                |writer| {
                    writer.conn.execute_batch("BEGIN IMMEDIATE")?;
                    let claimed = claim(&writer.conn, model, projection, tables)
                        .and_then(|owner| writer.conn.execute_batch("COMMIT").map(|()| owner));
                    if claimed.is_err() && !writer.conn.is_autocommit() {
                        let _ = writer.conn.execute_batch("ROLLBACK");
                    }
                    claimed
                },
                "recording the projection the read model belongs to",
            )
            .await?;
        drop(gate);
        if let Some(reason) = owner.refusal(projection, "SqliteReadModel::builder") {
            return Err(SqliteReadModelError::Refused {
                model: self.name.clone(),
                reason,
            });
        }
        let mut writer = self.writer();
        match writer.projection.clone() {
            None => {
                writer.projection = Some(projection.to_owned());
                Ok(())
            }
            Some(bound) if bound == projection => Ok(()),
            Some(bound) => Err(writer.refuse_second(&bound, projection, &self.name)),
        }
    }

    /// Binds the read model to `projection` before a commit, when the runtime could not bind it
    /// at start: changes made before it knew its projection are rolled back with an error (the
    /// event is delivered again, and commits then).
    async fn bound_for_commit(&self, projection: &str) -> Result<(), SqliteReadModelError> {
        let pending = {
            let writer = self.writer();
            if writer.projection.as_deref() == Some(projection) {
                return Ok(());
            }
            matches!(writer.state, State::Open { .. } | State::Staged { .. })
        };
        self.bind(projection).await?;
        if pending {
            return Err(self.transaction_error(
                "the read model learnt its projection only at the commit of the event's changes (it could not be bound when the runtime started), so they were rolled back: the event is delivered again",
            ));
        }
        Ok(())
    }

    async fn commit(&self, projection: &str, position: u64) -> Result<(), SqliteReadModelError> {
        let db_position = to_db(position);
        self.bound_for_commit(projection).await?;
        {
            let mut writer = self.writer();
            writer.usable(&self.name)?;
            match std::mem::replace(&mut writer.state, State::Idle) {
                State::Staged {
                    position: staged,
                    _gate,
                } if staged <= position => {
                    let writer = &mut *writer;
                    let advanced = writer
                        .conn
                        .prepare_cached(ADVANCE_CHECKPOINT_SQL)
                        .and_then(|mut advance| advance.execute(params![projection, db_position]));
                    if let Ok(0) = advanced {
                        // The checkpoint is already there: another delivery of the event
                        // committed it, with its changes. These go.
                        writer.rollback();
                        writer.committed = writer.committed.max(position);
                        tracing::warn!(
                            name: "evoq.projection.read_model",
                            read_model = %self.name,
                            projection,
                            position,
                            "the event was already committed: its changes were rolled back",
                        );
                        return Ok(());
                    }
                    let committed = advanced.and_then(|_| writer.conn.execute_batch("COMMIT"));
                    return match committed {
                        Ok(()) => {
                            writer.committed = position;
                            writer.fresh = true;
                            Ok(())
                        }
                        Err(source) => {
                            writer.rollback();
                            let error = self
                                .sql("committing an event's changes with the checkpoint", source);
                            writer.refused = Some(Refusal::FailedCommit(format!(
                                "the commit of the changes of the event at position {staged} failed ({error}); they were rolled back, and the checkpoint stays at {}: the read model takes no write until its checkpoint is read again, which the runtime does before it delivers the events after it again",
                                writer.committed
                            )));
                            Err(error)
                        }
                    };
                }
                // Changes of an event the runtime does not count as processed (the runtime
                // stopped during it), or of a handle never finished: not committed.
                State::Staged { .. } | State::Open { .. } => writer.rollback(),
                State::Starting => writer.state = State::Starting,
                State::Idle => {}
            }
        }
        // Forward only: a checkpoint another delivery moved further stays.
        self.write_checkpoint(
            ADVANCE_CHECKPOINT_SQL,
            projection,
            position,
            "saving the checkpoint",
        )
        .await?;
        let mut writer = self.writer();
        writer.committed = writer.committed.max(position);
        writer.fresh = true;
        Ok(())
    }

    async fn checkpoint(&self, projection: &str) -> Result<Option<u64>, SqliteReadModelError> {
        self.bind(projection).await?;
        let mut writer = self.writer();
        let found: Option<i64> = writer
            .conn
            .prepare_cached(LOAD_CHECKPOINT_SQL)
            .and_then(|mut load| load.query_row([projection], |row| row.get(0)).optional())
            .map_err(|source| self.sql("reading the checkpoint", source))?;
        // Read again before the first transaction (see `Writer::fresh`).
        writer.fresh = false;
        let position = sql::checkpoint_read(found, &mut writer.refused).map_err(|found| {
            SqliteReadModelError::Transaction {
                model: self.name.clone(),
                reason: format!(
                    "the checkpoint of projection `{projection}` is negative ({found}): fix or delete its row in table `checkpoints`"
                ),
            }
        })?;
        writer.committed = position.unwrap_or(0);
        Ok(position)
    }

    /// Sets the checkpoint of `projection` to `position`, back or forward, outside any event's
    /// transaction (see [`ReadModel::rewind`]).
    async fn rewind(&self, projection: &str, position: u64) -> Result<(), SqliteReadModelError> {
        self.bind(projection).await?;
        {
            let mut writer = self.writer();
            writer.usable(&self.name)?;
            if matches!(writer.state, State::Open { .. } | State::Staged { .. }) {
                writer.rollback();
            }
        }
        self.write_checkpoint(
            SAVE_CHECKPOINT_SQL,
            projection,
            position,
            "moving the checkpoint back",
        )
        .await?;
        let mut writer = self.writer();
        writer.committed = position;
        writer.fresh = true;
        Ok(())
    }

    /// Runs checkpoint statement `sql` (`?1` the projection, `?2` the position) outside any
    /// event's transaction, under the write lock.
    async fn write_checkpoint(
        &self,
        sql: &'static str,
        projection: &str,
        position: u64,
        what: &'static str,
    ) -> Result<(), SqliteReadModelError> {
        let db_position = to_db(position);
        self.write_lock(
            |writer| {
                writer
                    .conn
                    .prepare_cached(sql)?
                    .execute(params![projection, db_position])
            },
            what,
        )
        .await?;
        Ok(())
    }

    async fn clear(&self) -> Result<(), SqliteReadModelError> {
        if self.tables.is_empty() {
            return Err(SqliteReadModelError::NothingToClear {
                model: self.name.clone(),
            });
        }
        let projection = {
            let mut writer = self.writer();
            if let Some(Refusal::TwoProjections(reason)) = &writer.refused {
                return Err(SqliteReadModelError::Refused {
                    model: self.name.clone(),
                    reason: reason.clone(),
                });
            }
            if matches!(writer.state, State::Open { .. } | State::Staged { .. }) {
                writer.rollback();
            }
            writer.projection.clone()
        };
        let deletes: Vec<String> = self
            .tables
            .iter()
            .map(|table| format!("DELETE FROM \"{table}\""))
            .collect();
        self.write_lock(
            |writer| {
                writer.conn.execute_batch("BEGIN IMMEDIATE")?;
                let cleared = (|| {
                    for delete in &deletes {
                        writer.conn.execute(delete, [])?;
                    }
                    if let Some(projection) = &projection {
                        writer.conn.execute(DELETE_CHECKPOINT_SQL, [projection])?;
                    }
                    writer.conn.execute_batch("COMMIT")
                })();
                if cleared.is_err() {
                    writer.rollback();
                }
                cleared
            },
            "clearing the read model",
        )
        .await?;
        let mut writer = self.writer();
        writer.committed = 0;
        writer.fresh = true;
        if matches!(writer.refused, Some(Refusal::FailedCommit(_))) {
            // Cleared with its checkpoint: consistent again, and replayed from the start.
            writer.refused = None;
        }
        Ok(())
    }
}

impl Writer {
    /// Reads the stored checkpoint again, once the projection is known.
    fn reload(&mut self, inner: &Inner) -> Result<(), SqliteReadModelError> {
        let Some(projection) = &self.projection else {
            return Ok(());
        };
        let found: Option<i64> = self
            .conn
            .prepare_cached(LOAD_CHECKPOINT_SQL)
            .and_then(|mut load| load.query_row([projection], |row| row.get(0)).optional())
            .map_err(|source| inner.sql("reading the checkpoint", source))?;
        if let Some(found) = found.and_then(|found| u64::try_from(found).ok()) {
            self.committed = self.committed.max(found);
        }
        self.fresh = true;
        Ok(())
    }

    /// Rolls back the open transaction, if any; idle.
    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.state = State::Idle;
    }

    /// Fails when the read model refuses writes.
    fn usable(&self, model: &str) -> Result<(), SqliteReadModelError> {
        match &self.refused {
            None => Ok(()),
            Some(refusal) => Err(SqliteReadModelError::Refused {
                model: model.to_owned(),
                reason: refusal.reason().to_owned(),
            }),
        }
    }

    /// The refusal of `projection`, a second projection of this process besides `bound`: from
    /// now on the read model refuses every write, `bound`'s included.
    fn refuse_second(
        &mut self,
        bound: &str,
        projection: &str,
        model: &str,
    ) -> SqliteReadModelError {
        let reason = sql::second_projection(bound, projection, "SqliteReadModel::builder");
        self.rollback();
        self.refused = Some(Refusal::TwoProjections(reason.clone()));
        SqliteReadModelError::Refused {
            model: model.to_owned(),
            reason,
        }
    }
}

#[async_trait]
impl ReadModel for SqliteReadModel {
    /// Binds the read model to `projection`: recorded in table `evoq_read_model_owners` at its
    /// first use; another projection is refused ([`SqliteReadModelError::Refused`]).
    async fn bind(&self, projection: &str) -> Result<(), ReadModelError> {
        Ok(self.inner.bind(projection).await?)
    }

    /// Deletes every row of the read model's tables and the projection's checkpoint, in one
    /// transaction (the start of a rebuild).
    async fn clear(&self) -> Result<(), ReadModelError> {
        Ok(self.inner.clear().await?)
    }

    /// Saves the checkpoint in the event's transaction and commits both; `true`.
    async fn commit(&self, projection: &str, position: u64) -> Result<bool, ReadModelError> {
        self.inner.commit(projection, position).await?;
        Ok(true)
    }

    /// The checkpoint committed with the read model's changes (the store's row for
    /// `projection`).
    async fn checkpoint(&self, projection: &str) -> Result<Option<u64>, ReadModelError> {
        Ok(self.inner.checkpoint(projection).await?)
    }

    /// `true`: the checkpoint lives in the read model's transactions.
    fn keeps_checkpoint(&self) -> bool {
        true
    }

    /// Sets the projection's checkpoint to `position` (the store's row for `projection`).
    async fn rewind(&self, projection: &str, position: u64) -> Result<(), ReadModelError> {
        Ok(self.inner.rewind(projection, position).await?)
    }

    /// Rolls back the transaction of the event being handled, finished or not.
    async fn roll_back(&self) -> Result<(), ReadModelError> {
        self.inner.writer().rollback();
        Ok(())
    }

    /// Whether an event's transaction was finished and waits for its commit.
    fn has_finished_changes(&self) -> bool {
        matches!(self.inner.writer().state, State::Staged { .. })
    }
}

/// Opens the read model's writing connection, runs its pending migrations, checks its tables.
fn open_writer(
    store: &SqliteStore,
    model: &str,
    migrations: &[(String, String)],
    tables: &[String],
    durability: Durability,
) -> Result<Connection, SqliteReadModelError> {
    let conn = store
        .connect(false)
        .map_err(|source| SqliteReadModelError::Store {
            model: model.to_owned(),
            source: Box::new(source),
        })?;
    let sql = |what: &str, source| SqliteReadModelError::Sql {
        model: model.to_owned(),
        what: what.to_owned(),
        source,
    };
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous = {synchronous}"))
        .map_err(|e| sql("configuring the connection", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&conn, model, migrations)?;
    for table in tables {
        let exists = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |_| Ok(()),
            )
            .optional()
            .map_err(|e| sql("looking for the tables to clear", e))?;
        if exists.is_none() {
            return Err(SqliteReadModelError::UnknownTable {
                model: model.to_owned(),
                table: table.clone(),
            });
        }
    }
    // From now on the read model waits for locks itself, off the thread (see `write_lock`).
    conn.busy_timeout(Duration::ZERO)
        .map_err(|e| sql("configuring the connection", e))?;
    Ok(conn)
}

/// Runs the migrations not applied yet, each in a transaction of its own with its record.
fn migrate(
    conn: &Connection,
    model: &str,
    migrations: &[(String, String)],
) -> Result<(), SqliteReadModelError> {
    let sql = |what: &str, source| SqliteReadModelError::Sql {
        model: model.to_owned(),
        what: what.to_owned(),
        source,
    };
    conn.execute_batch(MIGRATIONS_TABLE)
        .map_err(|e| sql("creating table `evoq_read_model_migrations`", e))?;
    conn.execute_batch(OWNERS_TABLE)
        .map_err(|e| sql("creating table `evoq_read_model_owners`", e))?;
    loop {
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| sql("starting a migration", e))?;
        let step = (|| {
            let applied = conn
                .prepare(
                    "SELECT version, name, checksum FROM evoq_read_model_migrations WHERE model = ?1 ORDER BY version",
                )
                .and_then(|mut select| {
                    select
                        .query_map([model], |row| {
                            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(|e| sql("reading the migrations applied", e))?;
            let next = check_applied(model, &applied, migrations)?;
            let Some((name, script)) = migrations.get(next) else {
                return Ok(false);
            };
            let version = u32::try_from(next + 1).unwrap_or(u32::MAX);
            let failed = |source| SqliteReadModelError::Migration {
                model: model.to_owned(),
                version,
                migration: name.clone(),
                source,
            };
            conn.execute_batch(script).map_err(failed)?;
            if conn.is_autocommit() {
                return Err(SqliteReadModelError::MigrationChanged {
                    model: model.to_owned(),
                    version,
                    reason: format!(
                        "`{name}` ended its transaction (`COMMIT` or `ROLLBACK` in its SQL), so it may be applied without its record: remove those statements (each migration runs in a transaction of its own), then check the tables by hand"
                    ),
                });
            }
            conn.execute(
                "INSERT INTO evoq_read_model_migrations (model, version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![model, i64::from(version), name, checksum(script), now_micros()],
            )
            .map_err(failed)?;
            Ok(true)
        })();
        match step {
            Ok(more) => {
                conn.execute_batch("COMMIT")
                    .map_err(|e| sql("committing a migration", e))?;
                if !more {
                    return Ok(());
                }
            }
            Err(error) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                return Err(error);
            }
        }
    }
}

/// Whose the read model `model` is, for `projection`, in the open transaction: the projection
/// recorded in table `evoq_read_model_owners`; when none is, `projection` is recorded unless
/// one of `tables` holds rows and `projection` has no checkpoint (a model an earlier evoq,
/// which kept no record, filled for another projection).
fn claim(
    conn: &Connection,
    model: &str,
    projection: &str,
    tables: &[String],
) -> rusqlite::Result<Owner> {
    let recorded: Option<String> = conn
        .prepare_cached("SELECT projection FROM evoq_read_model_owners WHERE model = ?1")?
        .query_row([model], |row| row.get(0))
        .optional()?;
    if let Some(owner) = recorded {
        return Ok(if owner == projection {
            Owner::Projection
        } else {
            Owner::Other(owner)
        });
    }
    let checkpointed = conn
        .prepare_cached(LOAD_CHECKPOINT_SQL)?
        .query_row([projection], |_| Ok(()))
        .optional()?
        .is_some();
    if !checkpointed {
        for table in tables {
            let filled = conn
                .query_row(
                    &format!("SELECT 1 FROM \"{table}\" LIMIT 1"),
                    [],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if filled {
                return Ok(Owner::Unrecorded {
                    table: table.clone(),
                });
            }
        }
    }
    conn.execute(
        "INSERT INTO evoq_read_model_owners (model, projection, bound_at) VALUES (?1, ?2, ?3)",
        params![model, projection, now_micros()],
    )?;
    Ok(Owner::Projection)
}

/// Checks the migrations applied (version, name, checksum) against the list: how many are
/// applied.
fn check_applied(
    model: &str,
    applied: &[(i64, String, i64)],
    migrations: &[(String, String)],
) -> Result<usize, SqliteReadModelError> {
    sql::check_applied(applied, migrations).map_err(|mismatch| match mismatch {
        Mismatch::TooNew { applied, known } => SqliteReadModelError::MigrationsTooNew {
            model: model.to_owned(),
            applied,
            known,
        },
        Mismatch::Changed { version, reason } => SqliteReadModelError::MigrationChanged {
            model: model.to_owned(),
            version,
            reason,
        },
    })
}

/// One gate per database file, shared by the read models of the file.
fn gate_of(path: &Path) -> Arc<tokio::sync::Mutex<()>> {
    type Gates = Vec<(PathBuf, Weak<tokio::sync::Mutex<()>>)>;
    static GATES: Mutex<Gates> = Mutex::new(Vec::new());
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
    gates.retain(|(_, gate)| gate.strong_count() > 0);
    if let Some(gate) = gates
        .iter()
        .filter(|(at, _)| *at == key)
        .find_map(|(_, gate)| gate.upgrade())
    {
        return gate;
    }
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    gates.push((key, Arc::downgrade(&gate)));
    gate
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), format!("CREATE TABLE {n} (x)")))
            .collect()
    }

    #[test]
    fn applied_migrations_must_match_the_list_by_version_name_and_sql() {
        let given = list(&["a", "b"]);
        let record =
            |v: i64, n: &str| (v, n.to_owned(), checksum(&format!("CREATE TABLE {n} (x)")));
        assert_eq!(check_applied("m", &[], &given).unwrap(), 0);
        assert_eq!(check_applied("m", &[record(1, "a")], &given).unwrap(), 1);
        assert!(matches!(
            check_applied(
                "m",
                &[record(1, "a"), record(2, "b"), record(3, "c")],
                &given
            ),
            Err(SqliteReadModelError::MigrationsTooNew {
                applied: 3,
                known: 2,
                ..
            })
        ));
        assert!(matches!(
            check_applied("m", &[record(1, "z")], &given),
            Err(SqliteReadModelError::MigrationChanged { version: 1, .. })
        ));
        let edited = (1, "a".to_owned(), checksum("CREATE TABLE a (y)"));
        let error = check_applied("m", &[edited], &given).unwrap_err();
        assert!(error.to_string().contains("other SQL"), "{error}");
        assert!(matches!(
            check_applied("m", &[record(2, "a")], &given),
            Err(SqliteReadModelError::MigrationChanged { version: 1, .. })
        ));
    }

    #[test]
    fn long_sql_is_quoted_on_one_line_and_shortened() {
        assert_eq!(quote_sql("SELECT\n  1"), "`SELECT 1`");
        let long = "x ".repeat(200);
        let quoted = quote_sql(&long);
        assert!(quoted.ends_with("...`") && quoted.len() < 200, "{quoted}");
    }
}
