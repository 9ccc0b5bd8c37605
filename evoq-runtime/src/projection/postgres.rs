//! SQL read models on PostgreSQL (feature `postgres`): a projection's tables in the store's
//! database, changed in the transaction that saves the projection's checkpoint.
//!
//! # How it works
//!
//! - **One transaction per event.** A projection method opens the event's transaction with
//!   [`PostgresReadModel::begin`], writes through it ([`PostgresEventTransaction::execute`] and
//!   its queries, which see the event's own writes) and ends with
//!   [`finish`](PostgresEventTransaction::finish). The runtime then calls [`ReadModel::commit`],
//!   which saves the projection's checkpoint **in that transaction** and commits both. A
//!   transaction handle dropped without `finish` (the method returned an error with `?`, or
//!   panicked) rolls its changes back, so a failed event leaves neither rows nor checkpoint
//!   behind, and its retry starts from a clean state.
//! - **Where the tables live**: in the store's schema, or in a schema of their own
//!   ([`PostgresReadModelBuilder::schema`], created if need be). The read model's connections
//!   have it as their `search_path`, so its SQL names its tables unqualified.
//! - **The checkpoint is the store's**: the projection's row of the store's `checkpoints`
//!   table, written only in the read model's transactions. The read model keeps its checkpoint
//!   ([`ReadModel::keeps_checkpoint`]): a restarted projection resumes after the last event
//!   whose changes were committed, never before (no event applied twice) and never after (none
//!   skipped), even after `kill -9`. Being the store's row, it is also what another node
//!   follows while this one holds the projection's lease, and where that node resumes.
//! - **Never twice.** The checkpoint only moves forward, in the event's transaction (whose row
//!   lock orders the nodes): changes of an event the checkpoint already covers (a node that
//!   went on delivering after losing the projection's lease, a replay from the origin) are
//!   rolled back.
//! - **Migrations** ([`PostgresReadModelBuilder::migration`]): an ordered list of SQL scripts,
//!   each run once per database, in a transaction of its own with the row that records it
//!   (table `evoq_read_model_migrations` of the read model's schema), under an advisory lock, so
//!   nodes that start together do not race. A failing migration is rolled back whole and
//!   reported by version and name ([`PostgresReadModelError::Migration`]); an applied migration
//!   whose name or SQL changed, or a database that holds more migrations than the list, is
//!   refused before anything runs.
//! - **Rebuild** ([`Evoq::rebuild`](crate::Evoq::rebuild)): [`ReadModel::clear`] deletes every
//!   row of the tables named with [`PostgresReadModelBuilder::tables`] and the projection's
//!   checkpoint, in one transaction; the runtime then replays every event.
//! - **Queries** ([`PostgresReadModel::query`] and its kin) run on pooled connections of their
//!   own: they see committed data only, never an event half applied.
//! - **Durability**: the read model commits with `synchronous_commit = off` by default
//!   ([`PostgresReadModelBuilder::synchronous_commit`]): a server crash may undo its last
//!   commits, changes and checkpoint together, and the projection then applies those events
//!   again. Each event costs two round trips (the first statement goes with its `BEGIN`, the
//!   checkpoint with the `COMMIT`).
//!
//! One read model serves one projection: its checkpoint is that projection's, and a rebuild
//! clears all its tables. The projection it belongs to is recorded in table
//! `evoq_read_model_owners` when the runtime first binds it ([`ReadModel::bind`], at start),
//! and a projection of another name is refused from then on, across restarts and nodes
//! (`Refused`, and the runtime does not start): a projection renamed in the code keeps its old
//! name at run time (`HandlerOptions::name`). A read model an earlier version of evoq filled is
//! recorded for the projection whose checkpoint is there, and refused to another while its
//! tables hold rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::definition::{ProjectionError, ReadModel, ReadModelError};
use super::sql::{
    self, IDENTIFIER_RULE, Mismatch, Owner, Refusal, checksum, is_identifier, now_micros,
    quote_sql, to_db,
};
use crate::delivery::consumer::EventMeta;
use crate::store::postgres::PostgresStore;
use crate::util::hash::fnv1a_64;

/// The PostgreSQL driver the read model's API speaks: `Row`, `types::ToSql`, `Error`. Use this
/// one, not a `tokio-postgres` of another version.
pub use tokio_postgres;

/// The parameters of a statement: `&[&a, &b]`.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A projection's read model in the PostgreSQL store's database: its tables change in the
/// transaction that saves the projection's checkpoint, so each event changes them exactly once,
/// even across a crash. See the [module docs](self).
///
/// Cheap to clone: every clone is the same read model (the projection holds one, the queries
/// another).
///
/// ```no_run
/// use evoq::prelude::*;
/// use evoq::projection::postgres::PostgresReadModel;
/// use evoq::store::postgres::PostgresStore;
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
/// struct Balances { model: PostgresReadModel }
///
/// #[projection(name = "balances", read_model = model)]
/// impl Balances {
///     #[handles]
///     async fn deposited(&mut self, e: &Deposited, meta: &EventMeta) -> Result<(), ProjectionError> {
///         let tx = self.model.begin(meta).await?;
///         tx.execute(
///             "INSERT INTO balances (account, balance) VALUES ($1, $2)
///              ON CONFLICT (account) DO UPDATE SET balance = balances.balance + EXCLUDED.balance",
///             &[&e.account, &e.amount],
///         )
///         .await?;
///         tx.finish().await?; // committed by the runtime, with the checkpoint
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://app@db/app").await?;
/// let model = PostgresReadModel::builder(&store, "balances")
///     .schema("read_models")
///     .migration("create balances", "CREATE TABLE balances (account TEXT PRIMARY KEY, balance BIGINT NOT NULL)")
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
/// let row = model.query_one("SELECT balance FROM balances WHERE account = $1", &[&"acc-1"]).await?;
/// assert_eq!(row.get::<_, i64>(0), 5);
/// app.stop().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresReadModel {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    schema: String,
    /// The tables a rebuild clears, in order, schema-qualified and quoted.
    tables: Vec<String>,
    /// The same tables, by their names alone.
    table_names: Vec<String>,
    location: String,
    /// The read model's connections (its schema as their `search_path`).
    pool: Pool,
    /// Moves the checkpoint forward (or changes nothing).
    advance_checkpoint: String,
    /// Moves the checkpoint forward, or fails (`division_by_zero`) to roll the changes back.
    advance_checkpoint_or_fail: String,
    load_checkpoint: String,
    save_checkpoint: String,
    delete_checkpoint: String,
    take_dead_letter: String,
    /// The projection recorded as the read model's owner.
    select_owner: String,
    /// Records the read model's owner, unless one is recorded.
    insert_owner: String,
    writer: tokio::sync::Mutex<Writer>,
    /// The generation of the last transaction handle dropped unfinished: rolled back by the
    /// next operation that finds it open.
    abandoned: AtomicU64,
}

/// The read model's writing connection and where its transaction is.
struct Writer {
    client: Option<Object>,
    state: State,
    /// The number of the last transaction handle given out.
    generation: u64,
    /// The checkpoint last committed or read.
    committed: u64,
    /// Whether `committed` is known to be the stored one: it is read again before the first
    /// transaction after the runtime asked for the checkpoint (the runtime may resume further,
    /// where another node's commits took it, once it holds the projection's lease).
    fresh: bool,
    /// The projection it serves, once bound to it (see [`Inner::bind`]).
    projection: Option<String>,
    /// Why it refuses every write and commit: a second projection, or a commit that failed.
    refused: Option<Refusal>,
}

#[derive(Clone, Copy)]
enum State {
    Idle,
    /// The transaction of the event at `position`, used through handle `generation`; `begun`
    /// once its `BEGIN` was sent (with its first statement), `failed` once a statement failed
    /// (which aborts it).
    Open {
        generation: u64,
        position: u64,
        begun: bool,
        failed: bool,
    },
    /// The handle finished: the changes wait for the runtime's commit, with the checkpoint (and
    /// the end of the event's dead letter, if it has one).
    Staged {
        position: u64,
        begun: bool,
        event_id: Uuid,
    },
}

/// What went wrong with a [`PostgresReadModel`]. Each variant names the read model and what to
/// do; it converts into [`ProjectionError`] with `?` in a projection method.
///
/// ```no_run
/// use evoq::projection::postgres::{PostgresReadModel, PostgresReadModelError};
///
/// # async fn demo(store: evoq::store::postgres::PostgresStore) {
/// let opened = PostgresReadModel::builder(&store, "report")
///     .migration("create rows", "CREATE TABLE rows (id BIGINT PRIMARY KEY)")
///     .open()
///     .await;
/// if let Err(PostgresReadModelError::Migration { version, migration, source, .. }) = &opened {
///     eprintln!("migration {version} `{migration}` was rolled back: {source}");
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresReadModelError {
    /// A name given to the builder is not usable.
    #[error("read model `{model}`: the {what} `{name}` is not valid: {rule}")]
    InvalidName {
        /// The read model.
        model: String,
        /// What the name is of (`read model name`, `schema name`, `table name`, `migration
        /// name`).
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
        /// What PostgreSQL said.
        #[source]
        source: tokio_postgres::Error,
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
        "read model `{model}`: table `{table}`, named in `tables` for rebuilds, does not exist in schema `{schema}` after the migrations: create it in a migration or fix its name"
    )]
    UnknownTable {
        /// The read model.
        model: String,
        /// Its schema.
        schema: String,
        /// The table.
        table: String,
    },
    /// A rebuild asked to clear a read model that names no table.
    #[error(
        "read model `{model}` names no table to clear for a rebuild: list its tables with `PostgresReadModelBuilder::tables`"
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
        /// What PostgreSQL said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A query that must return a row returned none.
    #[error("read model `{model}`: {what} returned no row")]
    NoRow {
        /// The read model.
        model: String,
        /// The query (its SQL, shortened).
        what: String,
    },
    /// No connection to the database.
    #[error("read model `{model}`: no connection to {location}: {reason}")]
    Connect {
        /// The read model.
        model: String,
        /// The database (its URL without the password).
        location: String,
        /// Why.
        reason: String,
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
}

impl From<PostgresReadModelError> for ProjectionError {
    fn from(error: PostgresReadModelError) -> Self {
        ProjectionError::caused_by(error)
    }
}

impl From<PostgresReadModelError> for ReadModelError {
    fn from(error: PostgresReadModelError) -> Self {
        match error {
            PostgresReadModelError::Refused { model, reason } => ReadModelError::Refused {
                read_model: model,
                reason,
            },
            error => ReadModelError::Backend(error.to_string()),
        }
    }
}

/// How to open a [`PostgresReadModel`]: its name and schema, its migrations, the tables a
/// rebuild clears.
///
/// ```no_run
/// use evoq::projection::postgres::PostgresReadModel;
///
/// # async fn demo(store: evoq::store::postgres::PostgresStore) -> Result<(), evoq::projection::postgres::PostgresReadModelError> {
/// let model = PostgresReadModel::builder(&store, "orders")
///     .schema("read_models") // default: the store's schema
///     .migration("create orders", "CREATE TABLE orders (id TEXT PRIMARY KEY, total BIGINT NOT NULL)")
///     .migration("add lines", "CREATE TABLE lines (order_id TEXT NOT NULL REFERENCES orders (id), sku TEXT NOT NULL)")
///     .tables(["lines", "orders"]) // what a rebuild clears, referencing tables first
///     .pool_size(8)
///     .open()
///     .await?; // runs the migrations not applied yet, once each
/// assert_eq!(model.schema(), "read_models");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is awaited"]
pub struct PostgresReadModelBuilder {
    store: PostgresStore,
    name: String,
    schema: Option<String>,
    migrations: Vec<(String, String)>,
    tables: Vec<String>,
    pool_size: usize,
    synchronous_commit: bool,
}

impl PostgresReadModelBuilder {
    /// The schema of the read model's tables (1 to 63 ASCII letters, digits or `_`; created if
    /// need be). Default: the store's schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

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

    /// The most connections of the read model (default 4, at least 2): one for the
    /// projection's writes, the others for the queries.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(2);
        self
    }

    /// Whether each commit waits for the server to flush it (default `false`: a server crash
    /// may undo the last commits, changes and checkpoint together, which the projection then
    /// applies again; `true` costs a flush per event).
    pub fn synchronous_commit(mut self, on: bool) -> Self {
        self.synchronous_commit = on;
        self
    }

    /// Opens the read model: checks the names, runs the migrations not applied yet (each once,
    /// in a transaction of its own), checks that the tables to clear exist.
    pub async fn open(self) -> Result<PostgresReadModel, PostgresReadModelError> {
        let name = self.name;
        let invalid = |what: &'static str, value: &str| PostgresReadModelError::InvalidName {
            model: name.clone(),
            what,
            name: value.to_owned(),
            rule: IDENTIFIER_RULE,
        };
        if !is_identifier(&name) {
            return Err(invalid("read model name", &name));
        }
        let schema = self
            .schema
            .unwrap_or_else(|| self.store.schema().to_owned());
        if !is_identifier(&schema) {
            return Err(invalid("schema name", &schema));
        }
        if let Some(table) = self.tables.iter().find(|t| !is_identifier(t)) {
            return Err(invalid("table name", table));
        }
        if let Some((migration, _)) = self.migrations.iter().find(|(m, _)| m.trim().is_empty()) {
            return Err(PostgresReadModelError::InvalidName {
                model: name.clone(),
                what: "migration name",
                name: migration.clone(),
                rule: "give every migration a name that says what it does",
            });
        }
        let store = self.store;
        let mut config = store.connection_config().clone();
        let options = format!(
            "{} -c search_path=\"{schema}\" -c synchronous_commit={}",
            config.get_options().unwrap_or_default(),
            if self.synchronous_commit { "on" } else { "off" }
        );
        config.options(options.trim());
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let location = store.location().to_owned();
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .build()
            .map_err(|e| PostgresReadModelError::Connect {
                model: name.clone(),
                location: location.clone(),
                reason: format!("cannot build the connection pool: {e}"),
            })?;
        let inner = Inner {
            tables: self
                .tables
                .iter()
                .map(|table| format!("\"{schema}\".\"{table}\""))
                .collect(),
            table_names: self.tables.clone(),
            location,
            pool,
            advance_checkpoint: store.advance_checkpoint_sql(),
            advance_checkpoint_or_fail: store.advance_checkpoint_or_fail_sql(),
            load_checkpoint: store.load_checkpoint_sql(),
            save_checkpoint: store.save_checkpoint_sql(),
            delete_checkpoint: store.delete_checkpoint_sql(),
            take_dead_letter: store.take_dead_letter_sql(),
            select_owner: format!(
                "SELECT projection FROM \"{schema}\".evoq_read_model_owners WHERE model = $1"
            ),
            insert_owner: format!(
                "INSERT INTO \"{schema}\".evoq_read_model_owners (model, projection, bound_at) VALUES ($1, $2, $3) ON CONFLICT (model) DO NOTHING"
            ),
            writer: tokio::sync::Mutex::new(Writer {
                client: None,
                state: State::Idle,
                generation: 0,
                committed: 0,
                fresh: false,
                projection: None,
                refused: None,
            }),
            abandoned: AtomicU64::new(0),
            name,
            schema,
        };
        inner.migrate(&self.migrations).await?;
        inner.check_tables(&self.tables).await?;
        Ok(PostgresReadModel {
            inner: Arc::new(inner),
        })
    }
}

impl PostgresReadModel {
    /// The builder of the read model `name` in `store`'s database: choose its schema, add its
    /// migrations and the tables a rebuild clears, then
    /// [`open`](PostgresReadModelBuilder::open) it. `name` (1 to 63 ASCII letters, digits or
    /// `_`) keys its migrations.
    pub fn builder(store: &PostgresStore, name: impl Into<String>) -> PostgresReadModelBuilder {
        PostgresReadModelBuilder {
            store: store.clone(),
            name: name.into(),
            schema: None,
            migrations: Vec::new(),
            tables: Vec::new(),
            pool_size: 4,
            synchronous_commit: false,
        }
    }

    /// The read model's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The schema of its tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Opens the transaction of `event` (the event the projection method is handling): write
    /// through it, then [`finish`](PostgresEventTransaction::finish) it; the runtime commits its
    /// changes with the checkpoint. Dropped unfinished, it rolls back.
    ///
    /// Nothing is sent yet: the `BEGIN` goes with the first statement. One transaction per
    /// event: a second `begin` while one is open is an error.
    pub async fn begin(
        &self,
        event: &EventMeta,
    ) -> Result<PostgresEventTransaction, PostgresReadModelError> {
        let inner = &self.inner;
        let position = event.global_position();
        let mut writer = inner.writer.lock().await;
        inner.settle(&mut writer).await;
        writer.usable(&inner.name)?;
        if !writer.fresh {
            inner.reload(&mut writer).await?;
        }
        match writer.state {
            State::Idle => {}
            State::Open { .. } => {
                return Err(inner.transaction_error(
                    "a transaction of this read model is already open: open one per event, and pass `&tx` to the code that writes",
                ));
            }
            State::Staged {
                position: staged, ..
            } => {
                // Finished, then the method failed: this is its retry. (Another event means a
                // commit never came: its changes go too.)
                if staged != position {
                    tracing::warn!(
                        name: "evoq.projection.read_model",
                        read_model = %inner.name,
                        position = staged,
                        "changes finished but never committed are rolled back",
                    );
                }
                inner.rollback(&mut writer).await;
            }
        }
        inner.client(&mut writer).await?;
        writer.generation += 1;
        let generation = writer.generation;
        writer.state = State::Open {
            generation,
            position,
            begun: false,
            failed: false,
        };
        Ok(PostgresEventTransaction {
            inner: Arc::clone(inner),
            generation,
            position,
            event_id: event.event_id(),
            finished: false,
        })
    }

    /// The rows of a query, on a connection of its own: it sees what is committed (every event
    /// up to the projection's checkpoint, none half applied).
    pub async fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, PostgresReadModelError> {
        let inner = &self.inner;
        let client = inner.pool.get().await.map_err(|e| inner.connect_error(e))?;
        let what = || format!("the query {}", quote_sql(sql));
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|source| inner.sql(what(), source))?;
        client
            .query(&statement, params)
            .await
            .map_err(|source| inner.sql(what(), source))
    }

    /// The first row of a query, on a connection of its own; an error when it returns none.
    pub async fn query_one(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Row, PostgresReadModelError> {
        let rows = self.query(sql, params).await?;
        rows.into_iter()
            .next()
            .ok_or_else(|| self.inner.no_row(sql))
    }

    /// The first row of a query, on a connection of its own, or `None` when it returns none.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, PostgresReadModelError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

impl std::fmt::Debug for PostgresReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReadModel")
            .field("name", &self.inner.name)
            .field("location", &self.inner.location)
            .field("schema", &self.inner.schema)
            .field("tables", &self.inner.tables)
            .finish_non_exhaustive()
    }
}

/// The transaction of one event in a [`PostgresReadModel`]: what the projection method writes,
/// committed by the runtime with the projection's checkpoint once the method
/// [`finish`](Self::finish)es it. Dropped without `finish`, it rolls back.
///
/// Its statements and queries run inside the transaction: they see the event's own writes.
/// A statement that fails aborts the transaction (PostgreSQL's rule): return its error.
///
/// ```no_run
/// use evoq::prelude::*;
/// use evoq::projection::postgres::{PostgresEventTransaction, PostgresReadModel, PostgresReadModelError};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// # struct ItemAdded { cart: String, sku: String }
///
/// struct Carts { model: PostgresReadModel }
///
/// /// A helper that writes through the event's transaction.
/// async fn add_item(tx: &PostgresEventTransaction, cart: &str, sku: &str) -> Result<(), PostgresReadModelError> {
///     let lines: i64 = tx.query_one("SELECT COUNT(*) FROM lines WHERE cart = $1", &[&cart]).await?.get(0);
///     tx.execute("INSERT INTO lines (cart, line, sku) VALUES ($1, $2, $3)", &[&cart, &(lines + 1), &sku]).await?;
///     Ok(())
/// }
///
/// #[projection(name = "carts", read_model = model)]
/// impl Carts {
///     #[handles]
///     async fn added(&mut self, e: &ItemAdded, meta: &EventMeta) -> Result<(), ProjectionError> {
///         let tx = self.model.begin(meta).await?;
///         add_item(&tx, &e.cart, &e.sku).await?; // an error here drops `tx`: rolled back
///         tx.finish().await?;
///         Ok(())
///     }
/// }
/// ```
#[must_use = "an event's transaction rolls back unless `finish` is called"]
pub struct PostgresEventTransaction {
    inner: Arc<Inner>,
    generation: u64,
    position: u64,
    event_id: Uuid,
    finished: bool,
}

/// What a statement of an event's transaction returns.
enum Outcome {
    Changed(u64),
    Rows(Vec<Row>),
}

impl PostgresEventTransaction {
    /// The global position of the event the transaction is for.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Runs one statement (`INSERT`, `UPDATE`, `DELETE`, ...) with `params` (`&[&a, &b]`); the
    /// number of rows changed.
    pub async fn execute(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<u64, PostgresReadModelError> {
        match self.run(sql, params, false).await? {
            Outcome::Changed(n) => Ok(n),
            Outcome::Rows(rows) => Ok(rows.len() as u64),
        }
    }

    /// The rows of a query.
    pub async fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, PostgresReadModelError> {
        match self.run(sql, params, true).await? {
            Outcome::Rows(rows) => Ok(rows),
            Outcome::Changed(_) => Ok(Vec::new()),
        }
    }

    /// The first row of a query; an error when it returns none.
    pub async fn query_one(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Row, PostgresReadModelError> {
        self.query(sql, params)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| self.inner.no_row(sql))
    }

    /// The first row of a query, or `None` when it returns none.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, PostgresReadModelError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// The event's changes are complete: the runtime commits them with the checkpoint once the
    /// method returns. Call it last: a method that fails after it has its changes rolled back
    /// before its retry, but not when the error policy then skips or dead-letters the event.
    ///
    /// For an event already behind the checkpoint: a dead letter delivered again
    /// ([`DeadLetterQueue::retry`](crate::DeadLetterQueue::retry)) commits here, without moving
    /// the checkpoint; any other (its changes are committed already: another node's delivery,
    /// a replay from the origin) is rolled back, changing nothing.
    pub async fn finish(mut self) -> Result<(), PostgresReadModelError> {
        self.finished = true;
        let inner = &self.inner;
        let mut writer = inner.writer.lock().await;
        inner.settle(&mut writer).await;
        let State::Open {
            generation,
            position,
            begun,
            failed,
        } = writer.state
        else {
            return Err(inner.over());
        };
        if generation != self.generation {
            return Err(inner.over());
        }
        if failed {
            inner.rollback(&mut writer).await;
            return Err(inner.transaction_error(
                "a statement of this event's transaction failed, which aborted it: it was rolled back; return that statement's error from the projection method",
            ));
        }
        if position <= writer.committed {
            // Behind the checkpoint: a dead letter delivered again commits now; an event whose
            // changes are committed already (another node's delivery, a replay from the
            // origin) changes nothing.
            if !begun {
                writer.state = State::Idle;
                return Ok(());
            }
            let Some(client) = &writer.client else {
                writer.state = State::Idle;
                return Err(inner.over());
            };
            // Removed with the changes it commits: no later retry applies them again.
            let redelivered = match &writer.projection {
                Some(projection) => match client.prepare_cached(&inner.take_dead_letter).await {
                    Ok(take) => client
                        .execute(&take, &[projection, &self.event_id])
                        .await
                        .map(|removed| removed > 0),
                    Err(error) => Err(error),
                },
                None => Ok(false),
            };
            match redelivered {
                Ok(true) => {
                    writer.state = State::Idle;
                    let committed = match &writer.client {
                        Some(client) => client.batch_execute("COMMIT").await,
                        None => return Err(inner.over()),
                    };
                    if let Err(source) = committed {
                        inner.drop_client(&mut writer);
                        return Err(inner.sql(
                            "committing a dead letter delivered again".to_owned(),
                            source,
                        ));
                    }
                }
                Ok(false) => {
                    inner.rollback(&mut writer).await;
                    tracing::warn!(
                        name: "evoq.projection.read_model",
                        read_model = %inner.name,
                        position,
                        "the event was already committed: its changes were rolled back",
                    );
                }
                Err(source) => {
                    inner.rollback(&mut writer).await;
                    return Err(inner.sql("looking for the event's dead letter".to_owned(), source));
                }
            }
            return Ok(());
        }
        writer.state = State::Staged {
            position,
            begun,
            event_id: self.event_id,
        };
        Ok(())
    }

    async fn run(
        &self,
        sql: &str,
        params: Params<'_>,
        rows: bool,
    ) -> Result<Outcome, PostgresReadModelError> {
        let inner = &self.inner;
        let mut writer = inner.writer.lock().await;
        inner.settle(&mut writer).await;
        let State::Open {
            generation,
            begun,
            failed,
            ..
        } = writer.state
        else {
            return Err(inner.over());
        };
        if generation != self.generation {
            return Err(inner.over());
        }
        if failed {
            return Err(inner.transaction_error(
                "an earlier statement of this event's transaction failed, which aborted it: return that statement's error from the projection method",
            ));
        }
        let what = || format!("the statement {}", quote_sql(sql));
        let Some(client) = &writer.client else {
            return Err(inner.over());
        };
        let statement = async {
            let prepared = client.prepare_cached(sql).await?;
            if rows {
                client.query(&prepared, params).await.map(Outcome::Rows)
            } else {
                client
                    .execute(&prepared, params)
                    .await
                    .map(Outcome::Changed)
            }
        };
        let result = if begun {
            statement.await
        } else {
            // One round trip: the `BEGIN` is sent first, the statement right behind it.
            let (began, result) = tokio::join!(client.batch_execute("BEGIN"), statement);
            began.and(result)
        };
        if let State::Open {
            begun, failed: f, ..
        } = &mut writer.state
        {
            *begun = true;
            *f = result.is_err();
        }
        match result {
            Ok(outcome) => Ok(outcome),
            Err(source) => {
                if source.is_closed() {
                    writer.state = State::Idle;
                    inner.drop_client(&mut writer);
                }
                Err(inner.sql(what(), source))
            }
        }
    }
}

impl Drop for PostgresEventTransaction {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.inner
            .abandoned
            .store(self.generation, Ordering::Release);
        // Roll back now if a runtime is there; else the next operation does.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            runtime.spawn(async move {
                let mut writer = inner.writer.lock().await;
                inner.settle(&mut writer).await;
            });
        }
    }
}

impl std::fmt::Debug for PostgresEventTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEventTransaction")
            .field("read_model", &self.inner.name)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn transaction_error(&self, reason: &str) -> PostgresReadModelError {
        PostgresReadModelError::Transaction {
            model: self.name.clone(),
            reason: reason.to_owned(),
        }
    }

    fn over(&self) -> PostgresReadModelError {
        self.transaction_error(
            "this event's transaction is over (finished, rolled back, or replaced by another): nothing more of it will be committed",
        )
    }

    fn sql(&self, what: String, source: tokio_postgres::Error) -> PostgresReadModelError {
        PostgresReadModelError::Sql {
            model: self.name.clone(),
            what,
            source,
        }
    }

    fn no_row(&self, sql: &str) -> PostgresReadModelError {
        PostgresReadModelError::NoRow {
            model: self.name.clone(),
            what: format!("the query {}", quote_sql(sql)),
        }
    }

    fn connect_error(&self, error: impl std::fmt::Display) -> PostgresReadModelError {
        PostgresReadModelError::Connect {
            model: self.name.clone(),
            location: self.location.clone(),
            reason: error.to_string(),
        }
    }

    /// The writing connection, connected if need be.
    async fn client<'w>(
        &self,
        writer: &'w mut Writer,
    ) -> Result<&'w Object, PostgresReadModelError> {
        let client = match writer.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => self.pool.get().await.map_err(|e| self.connect_error(e))?,
        };
        Ok(writer.client.insert(client))
    }

    /// Closes the writing connection (never given back to the pool: it may be inside a
    /// transaction).
    fn drop_client(&self, writer: &mut Writer) {
        if let Some(client) = writer.client.take() {
            drop(Object::take(client));
        }
    }

    /// Rolls back the open transaction, if any; idle.
    async fn rollback(&self, writer: &mut Writer) {
        let begun = matches!(
            writer.state,
            State::Open { begun: true, .. } | State::Staged { begun: true, .. }
        );
        writer.state = State::Idle;
        if begun {
            let rolled_back = match &writer.client {
                Some(client) => client.batch_execute("ROLLBACK").await.is_ok(),
                None => true,
            };
            if !rolled_back {
                self.drop_client(writer);
            }
        }
    }

    /// Rolls back the transaction of a handle dropped unfinished, if it is still open.
    async fn settle(&self, writer: &mut Writer) {
        let abandoned = self.abandoned.load(Ordering::Acquire);
        if matches!(writer.state, State::Open { generation, .. } if generation == abandoned) {
            self.rollback(writer).await;
        }
    }

    /// Binds the read model to `projection`, the projection it serves from now on: recorded in
    /// table `evoq_read_model_owners` at its first use (see [`claim`](Self::claim)). A
    /// projection another is recorded for, or whose rows are there without its checkpoint, is
    /// refused; so is a second projection of this process, for good (the first one's writes
    /// included).
    async fn bind(
        &self,
        writer: &mut Writer,
        projection: &str,
    ) -> Result<(), PostgresReadModelError> {
        if let Some(bound) = writer.projection.clone() {
            if bound == projection {
                return Ok(());
            }
            return Err(writer.refuse_second(&bound, projection, &self.name));
        }
        self.rollback(writer).await;
        let client = self.client(writer).await?;
        let owner = match self.claim(client, projection).await {
            Ok(owner) => owner,
            Err(source) => {
                if source.is_closed() {
                    self.drop_client(writer);
                }
                return Err(self.sql(
                    "recording the projection the read model belongs to".to_owned(),
                    source,
                ));
            }
        };
        if let Some(reason) = owner.refusal(projection, "PostgresReadModel::builder") {
            return Err(PostgresReadModelError::Refused {
                model: self.name.clone(),
                reason,
            });
        }
        writer.projection = Some(projection.to_owned());
        Ok(())
    }

    /// Whose the read model is, for `projection`, in a transaction of its own on `client`: the
    /// projection recorded in table `evoq_read_model_owners`; when none is, `projection` is
    /// recorded unless one of the tables holds rows and `projection` has no checkpoint (a
    /// model an earlier evoq, which kept no record, filled for another projection). Of two
    /// nodes recording at once, the first to commit is the owner.
    async fn claim(
        &self,
        client: &Object,
        projection: &str,
    ) -> Result<Owner, tokio_postgres::Error> {
        let owner_of = |recorded: String| {
            if recorded == projection {
                Owner::Projection
            } else {
                Owner::Other(recorded)
            }
        };
        client.batch_execute("BEGIN").await?;
        let claimed = async {
            if let Some(row) = client
                .query_opt(self.select_owner.as_str(), &[&self.name])
                .await?
            {
                return Ok(owner_of(row.get(0)));
            }
            let checkpointed = client
                .query_opt(self.load_checkpoint.as_str(), &[&projection])
                .await?
                .is_some();
            if !checkpointed {
                for (table, qualified) in self.table_names.iter().zip(&self.tables) {
                    let filled = client
                        .query_opt(format!("SELECT 1 FROM {qualified} LIMIT 1").as_str(), &[])
                        .await?
                        .is_some();
                    if filled {
                        return Ok(Owner::Unrecorded {
                            table: table.clone(),
                        });
                    }
                }
            }
            client
                .execute(
                    self.insert_owner.as_str(),
                    &[&self.name, &projection, &now_micros()],
                )
                .await?;
            let recorded = client
                .query_one(self.select_owner.as_str(), &[&self.name])
                .await?;
            Ok(owner_of(recorded.get(0)))
        }
        .await;
        match claimed {
            Ok(owner) => client.batch_execute("COMMIT").await.map(|()| owner),
            Err(error) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(error)
            }
        }
    }

    /// Binds the read model to `projection` before a commit, when the runtime could not bind it
    /// at start: changes made before it knew its projection are rolled back with an error (the
    /// event is delivered again, and commits then).
    async fn bound_for_commit(
        &self,
        writer: &mut Writer,
        projection: &str,
    ) -> Result<(), PostgresReadModelError> {
        if writer.projection.as_deref() == Some(projection) {
            return Ok(());
        }
        let pending = matches!(writer.state, State::Open { .. } | State::Staged { .. });
        self.bind(writer, projection).await?;
        if pending {
            return Err(self.transaction_error(
                "the read model learnt its projection only at the commit of the event's changes (it could not be bound when the runtime started), so they were rolled back: the event is delivered again",
            ));
        }
        Ok(())
    }

    async fn commit(&self, projection: &str, position: u64) -> Result<(), PostgresReadModelError> {
        let db_position = to_db(position);
        let mut writer = self.writer.lock().await;
        self.settle(&mut writer).await;
        self.bound_for_commit(&mut writer, projection).await?;
        writer.usable(&self.name)?;
        match writer.state {
            State::Staged {
                position: staged,
                begun: true,
                event_id,
            } if staged <= position => {
                writer.state = State::Idle;
                let Some(client) = &writer.client else {
                    return Err(self.over());
                };
                if client.is_closed() {
                    // The connection ended while the transaction waited for its commit (the
                    // server ended the session, the network broke): `COMMIT` was never sent,
                    // so the server rolled it back. The event is delivered again.
                    self.drop_client(&mut writer);
                    let reason = format!(
                        "the connection of the event at position {staged} ended before its changes were committed, so the server rolled them back: the checkpoint stays at {}, and the event is delivered again",
                        writer.committed
                    );
                    writer.refused = Some(Refusal::FailedCommit(reason.clone()));
                    return Err(self.transaction_error(&reason));
                }
                let prepared = match client.prepare_cached(&self.take_dead_letter).await {
                    Ok(take) => client
                        .prepare_cached(&self.advance_checkpoint_or_fail)
                        .await
                        .map(|advance| (take, advance)),
                    Err(error) => Err(error),
                };
                let saved = match prepared {
                    Ok((take, advance)) => {
                        // One round trip: the end of the event's dead letter (if a crash left
                        // one behind a delivery that now succeeds), the checkpoint, then the
                        // `COMMIT` right behind them. After a failed statement, `COMMIT` rolls
                        // back.
                        let params: [&(dyn ToSql + Sync); 2] = [&projection, &db_position];
                        let dead_letter: [&(dyn ToSql + Sync); 2] = [&projection, &event_id];
                        let (taken, advanced, committed) = tokio::join!(
                            client.execute(&take, &dead_letter),
                            client.execute(&advance, &params),
                            client.batch_execute("COMMIT")
                        );
                        let committed = taken.and(committed);
                        match advanced {
                            Err(error)
                                if committed.is_ok()
                                    && error.code() == Some(&SqlState::DIVISION_BY_ZERO) =>
                            {
                                // The checkpoint is already there: another delivery of the
                                // event (another node's) committed it, with its changes.
                                // These were rolled back.
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
                            advanced => advanced.and(committed),
                        }
                    }
                    Err(error) => Err(error),
                };
                return match saved {
                    Ok(_) => {
                        writer.committed = position;
                        writer.fresh = true;
                        Ok(())
                    }
                    Err(source) => {
                        self.drop_client(&mut writer);
                        let error = self.sql(
                            "committing an event's changes with the checkpoint".to_owned(),
                            source,
                        );
                        writer.refused = Some(Refusal::FailedCommit(format!(
                            "the commit of the changes of the event at position {staged} failed ({error}), so they may or may not be committed, and the checkpoint with them: the read model takes no write until its checkpoint is read again (on a new connection), which tells; the runtime does so and delivers the events after it again"
                        )));
                        Err(error)
                    }
                };
            }
            // Nothing written, or changes of an event the runtime does not count as processed
            // (the runtime stopped during it), or of a handle never finished: not committed.
            State::Staged { .. } | State::Open { .. } => self.rollback(&mut writer).await,
            State::Idle => {}
        }
        // Forward only: a checkpoint another delivery moved further stays.
        self.write_checkpoint(
            &mut writer,
            &self.advance_checkpoint,
            projection,
            db_position,
            "saving the checkpoint",
        )
        .await?;
        writer.committed = writer.committed.max(position);
        writer.fresh = true;
        Ok(())
    }

    /// Sets the checkpoint of `projection` to `position`, back or forward, outside any event's
    /// transaction (see [`ReadModel::rewind`]).
    async fn rewind(&self, projection: &str, position: u64) -> Result<(), PostgresReadModelError> {
        let db_position = to_db(position);
        let mut writer = self.writer.lock().await;
        self.bind(&mut writer, projection).await?;
        writer.usable(&self.name)?;
        self.rollback(&mut writer).await;
        self.write_checkpoint(
            &mut writer,
            &self.save_checkpoint,
            projection,
            db_position,
            "moving the checkpoint back",
        )
        .await?;
        writer.committed = position;
        writer.fresh = true;
        Ok(())
    }

    /// Runs checkpoint statement `sql` (`$1` the projection, `$2` the position) on the writing
    /// connection, outside any event's transaction; a connection that broke is dropped.
    async fn write_checkpoint(
        &self,
        writer: &mut Writer,
        sql: &str,
        projection: &str,
        db_position: i64,
        what: &str,
    ) -> Result<(), PostgresReadModelError> {
        let client = self.client(writer).await?;
        let saved = match client.prepare_cached(sql).await {
            Ok(statement) => {
                client
                    .execute(&statement, &[&projection, &db_position])
                    .await
            }
            Err(error) => Err(error),
        };
        if let Err(source) = saved {
            if source.is_closed() {
                self.drop_client(writer);
            }
            return Err(self.sql(what.to_owned(), source));
        }
        Ok(())
    }

    /// Reads the stored checkpoint again, once the projection is known.
    async fn reload(&self, writer: &mut Writer) -> Result<(), PostgresReadModelError> {
        let Some(projection) = writer.projection.clone() else {
            return Ok(());
        };
        let client = self.client(writer).await?;
        let found = match client.prepare_cached(&self.load_checkpoint).await {
            Ok(load) => client.query_opt(&load, &[&projection]).await,
            Err(error) => Err(error),
        };
        match found {
            Ok(row) => {
                let found: Option<i64> = row.map(|row| row.get(0));
                if let Some(found) = found.and_then(|found| u64::try_from(found).ok()) {
                    writer.committed = writer.committed.max(found);
                }
                writer.fresh = true;
                Ok(())
            }
            Err(source) => {
                if source.is_closed() {
                    self.drop_client(writer);
                }
                Err(self.sql("reading the checkpoint".to_owned(), source))
            }
        }
    }

    async fn checkpoint(&self, projection: &str) -> Result<Option<u64>, PostgresReadModelError> {
        let mut writer = self.writer.lock().await;
        self.settle(&mut writer).await;
        self.bind(&mut writer, projection).await?;
        let client = self.client(&mut writer).await?;
        let found = match client.prepare_cached(&self.load_checkpoint).await {
            Ok(load) => client.query_opt(&load, &[&projection]).await,
            Err(error) => Err(error),
        };
        let found: Option<i64> = match found {
            Ok(row) => row.map(|row| row.get(0)),
            Err(source) => {
                if source.is_closed() {
                    self.drop_client(&mut writer);
                }
                return Err(self.sql("reading the checkpoint".to_owned(), source));
            }
        };
        // Read again before the first transaction (see `Writer::fresh`).
        writer.fresh = false;
        let position = sql::checkpoint_read(found, &mut writer.refused).map_err(|found| {
            self.transaction_error(&format!(
                "the checkpoint of projection `{projection}` is negative ({found}): fix or delete its row in the store's table `checkpoints`"
            ))
        })?;
        writer.committed = position.unwrap_or(0);
        Ok(position)
    }

    async fn clear(&self) -> Result<(), PostgresReadModelError> {
        if self.tables.is_empty() {
            return Err(PostgresReadModelError::NothingToClear {
                model: self.name.clone(),
            });
        }
        let mut writer = self.writer.lock().await;
        if let Some(Refusal::TwoProjections(reason)) = &writer.refused {
            return Err(PostgresReadModelError::Refused {
                model: self.name.clone(),
                reason: reason.clone(),
            });
        }
        self.rollback(&mut writer).await;
        let projection = writer.projection.clone();
        let client = self.client(&mut writer).await?;
        let cleared = async {
            client.batch_execute("BEGIN").await?;
            for table in &self.tables {
                client
                    .execute(format!("DELETE FROM {table}").as_str(), &[])
                    .await?;
            }
            if let Some(projection) = &projection {
                client
                    .execute(self.delete_checkpoint.as_str(), &[projection])
                    .await?;
            }
            client.batch_execute("COMMIT").await
        }
        .await;
        if let Err(source) = cleared {
            if client.batch_execute("ROLLBACK").await.is_err() {
                self.drop_client(&mut writer);
            }
            return Err(self.sql("clearing the read model".to_owned(), source));
        }
        writer.committed = 0;
        writer.fresh = true;
        if matches!(writer.refused, Some(Refusal::FailedCommit(_))) {
            // Cleared with its checkpoint: consistent again, and replayed from the start.
            writer.refused = None;
        }
        Ok(())
    }

    /// Runs the migrations not applied yet, each in a transaction of its own with its record,
    /// under an advisory lock on the schema.
    async fn migrate(&self, migrations: &[(String, String)]) -> Result<(), PostgresReadModelError> {
        let client = self.pool.get().await.map_err(|e| self.connect_error(e))?;
        let schema = &self.schema;
        let lock = i64::from_ne_bytes(
            fnv1a_64(format!("evoq-read-model-migrate:{schema}").bytes()).to_ne_bytes(),
        );
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS \"{schema}\".evoq_read_model_migrations (
                 model      TEXT   NOT NULL,
                 version    BIGINT NOT NULL,
                 name       TEXT   NOT NULL,
                 checksum   BIGINT NOT NULL,
                 applied_at BIGINT NOT NULL,
                 PRIMARY KEY (model, version)
             );
             CREATE TABLE IF NOT EXISTS \"{schema}\".evoq_read_model_owners (
                 model      TEXT   NOT NULL PRIMARY KEY,
                 projection TEXT   NOT NULL,
                 bound_at   BIGINT NOT NULL
             )"
        );
        let select = format!(
            "SELECT version, name, checksum FROM \"{schema}\".evoq_read_model_migrations WHERE model = $1 ORDER BY version"
        );
        let insert = format!(
            "INSERT INTO \"{schema}\".evoq_read_model_migrations (model, version, name, checksum, applied_at) VALUES ($1, $2, $3, $4, $5)"
        );
        let sql = |what: &str, source| self.sql(what.to_owned(), source);
        loop {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| sql("starting a migration", e))?;
            let step = async {
                client
                    .execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
                    .await
                    .map_err(|e| sql("locking the schema for the migrations", e))?;
                client
                    .batch_execute(&ddl)
                    .await
                    .map_err(|e| sql("creating the schema and its migrations table", e))?;
                let applied: Vec<(i64, String, i64)> = client
                    .query(select.as_str(), &[&self.name])
                    .await
                    .map_err(|e| sql("reading the migrations applied", e))?
                    .iter()
                    .map(|row| (row.get(0), row.get(1), row.get(2)))
                    .collect();
                let next = check_applied(&self.name, &applied, migrations)?;
                let Some((name, script)) = migrations.get(next) else {
                    return Ok(false);
                };
                let version = u32::try_from(next + 1).unwrap_or(u32::MAX);
                let failed = |source| PostgresReadModelError::Migration {
                    model: self.name.clone(),
                    version,
                    migration: name.clone(),
                    source,
                };
                client.batch_execute(script).await.map_err(failed)?;
                // A migration that ended its transaction would be applied without its record.
                if client
                    .batch_execute("SAVEPOINT evoq_migration; RELEASE SAVEPOINT evoq_migration")
                    .await
                    .is_err()
                {
                    return Err(PostgresReadModelError::MigrationChanged {
                        model: self.name.clone(),
                        version,
                        reason: format!(
                            "`{name}` ended its transaction (`COMMIT` or `ROLLBACK` in its SQL), so it may be applied without its record: remove those statements (each migration runs in a transaction of its own), then check the tables by hand"
                        ),
                    });
                }
                client
                    .execute(
                        insert.as_str(),
                        &[
                            &self.name,
                            &i64::from(version),
                            name,
                            &checksum(script),
                            &now_micros(),
                        ],
                    )
                    .await
                    .map_err(failed)?;
                Ok(true)
            }
            .await;
            match step {
                Ok(more) => {
                    client
                        .batch_execute("COMMIT")
                        .await
                        .map_err(|e| sql("committing a migration", e))?;
                    if !more {
                        return Ok(());
                    }
                }
                Err(error) => {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Fails on a table to clear that does not exist.
    async fn check_tables(&self, tables: &[String]) -> Result<(), PostgresReadModelError> {
        if tables.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await.map_err(|e| self.connect_error(e))?;
        for table in tables {
            let found = client
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2",
                    &[&self.schema, table],
                )
                .await
                .map_err(|e| self.sql("looking for the tables to clear".to_owned(), e))?;
            if found.is_none() {
                return Err(PostgresReadModelError::UnknownTable {
                    model: self.name.clone(),
                    schema: self.schema.clone(),
                    table: table.clone(),
                });
            }
        }
        Ok(())
    }
}

impl Writer {
    /// Fails when the read model refuses writes.
    fn usable(&self, model: &str) -> Result<(), PostgresReadModelError> {
        match &self.refused {
            None => Ok(()),
            Some(refusal) => Err(PostgresReadModelError::Refused {
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
    ) -> PostgresReadModelError {
        let reason = sql::second_projection(bound, projection, "PostgresReadModel::builder");
        self.refused = Some(Refusal::TwoProjections(reason.clone()));
        PostgresReadModelError::Refused {
            model: model.to_owned(),
            reason,
        }
    }
}

#[async_trait]
impl ReadModel for PostgresReadModel {
    /// Binds the read model to `projection`: recorded in table `evoq_read_model_owners` at its
    /// first use; another projection is refused ([`PostgresReadModelError::Refused`]).
    async fn bind(&self, projection: &str) -> Result<(), ReadModelError> {
        let mut writer = self.inner.writer.lock().await;
        self.inner.settle(&mut writer).await;
        Ok(self.inner.bind(&mut writer, projection).await?)
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
        let mut writer = self.inner.writer.lock().await;
        self.inner.rollback(&mut writer).await;
        Ok(())
    }

    /// Whether an event's transaction was finished and waits for its commit.
    fn has_finished_changes(&self) -> bool {
        self.inner
            .writer
            .try_lock()
            .is_ok_and(|writer| matches!(writer.state, State::Staged { .. }))
    }
}

/// Checks the migrations applied (version, name, checksum) against the list: how many are
/// applied.
fn check_applied(
    model: &str,
    applied: &[(i64, String, i64)],
    migrations: &[(String, String)],
) -> Result<usize, PostgresReadModelError> {
    sql::check_applied(applied, migrations).map_err(|mismatch| match mismatch {
        Mismatch::TooNew { applied, known } => PostgresReadModelError::MigrationsTooNew {
            model: model.to_owned(),
            applied,
            known,
        },
        Mismatch::Changed { version, reason } => PostgresReadModelError::MigrationChanged {
            model: model.to_owned(),
            version,
            reason,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_migrations_must_match_the_list_by_version_name_and_sql() {
        let given = vec![
            ("a".to_owned(), "CREATE TABLE a (x INT)".to_owned()),
            ("b".to_owned(), "CREATE TABLE b (x INT)".to_owned()),
        ];
        let record = |v: i64, n: &str| {
            (
                v,
                n.to_owned(),
                checksum(&format!("CREATE TABLE {n} (x INT)")),
            )
        };
        assert_eq!(check_applied("m", &[record(1, "a")], &given).unwrap(), 1);
        assert!(matches!(
            check_applied(
                "m",
                &[record(1, "a"), record(2, "b"), record(3, "c")],
                &given
            ),
            Err(PostgresReadModelError::MigrationsTooNew {
                applied: 3,
                known: 2,
                ..
            })
        ));
        assert!(matches!(
            check_applied("m", &[record(1, "b")], &given),
            Err(PostgresReadModelError::MigrationChanged { version: 1, .. })
        ));
    }
}
