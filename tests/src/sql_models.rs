//! SQL read models for the tests: one projection over the ledger's `Alpha` and `Gamma` events
//! (never `Beta`, so its checkpoint also moves past events it does not take), written once
//! against SQLite and once against PostgreSQL, and what the tests compare them with.
//!
//! The projection keeps two tables: `applied` counts how many times each event id was applied
//! (exactly once, or something went wrong), and `tallies` holds, per ledger id, the number of
//! alphas and gammas, the sum of their `n` and the last position applied: what
//! [`expected_tallies`] computes from the events in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evoq::prelude::*;
use evoq::projection::postgres::{PostgresEventTransaction, PostgresReadModel};
use evoq::projection::sqlite::rusqlite;
use evoq::projection::sqlite::{SqliteEventTransaction, SqliteReadModel};
use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq::store::sqlite::SqliteStore;
use evoq::{EventStore, EvoqBuilder, ExpectedVersion, HandlerOptions};

use crate::ledger::{Alpha, Gamma, Kind, raw};
use evoq::projection::postgres::PostgresReadModelError;
use evoq::projection::sqlite::SqliteReadModelError;

/// The projection's name.
pub const NAME: &str = "tallies";

/// The projection's migrations: its two tables (the same SQL on both databases).
pub const MIGRATIONS: [(&str, &str); 2] = [
    (
        "create applied",
        "CREATE TABLE applied (event_id TEXT PRIMARY KEY, times BIGINT NOT NULL)",
    ),
    (
        "create tallies",
        "CREATE TABLE tallies (
            id            TEXT PRIMARY KEY,
            alphas        BIGINT NOT NULL,
            gammas        BIGINT NOT NULL,
            total         BIGINT NOT NULL,
            last_position BIGINT NOT NULL
        )",
    ),
];

/// The tables a rebuild clears.
pub const TABLES: [&str; 2] = ["applied", "tallies"];

/// Per ledger id: alphas, gammas, sum of `n`, last position applied.
pub type Tallies = BTreeMap<String, [i64; 4]>;

/// The kind, ledger id and number of planned event `i` (from 1).
pub fn planned(i: u64) -> (Kind, String, u64) {
    let kinds = [Kind::A, Kind::B, Kind::C, Kind::A, Kind::C];
    (kinds[(i % 5) as usize], format!("id-{}", i % 13), i)
}

/// Appends planned events `from..=to` straight to the store, 50 per append (a fresh store:
/// event `i` lands at position `i`).
pub async fn append_planned(store: &dyn EventStore, from: u64, to: u64) {
    let mut i = from;
    while i <= to {
        let last = (i + 49).min(to);
        let events = (i..=last)
            .map(|j| {
                let (kind, id, n) = planned(j);
                raw(kind, &id, n)
            })
            .collect();
        store
            .append(
                &format!("Ledger-plan-{}", i / 50),
                ExpectedVersion::Any,
                events,
            )
            .await
            .expect("append the planned events");
        i = last + 1;
    }
}

/// The tallies of planned events `1..=to`, applied in order, each once (event `i` at position
/// `i`).
pub fn expected_tallies(to: u64) -> Tallies {
    expected_tallies_of(1..=to)
}

/// The tallies of the planned events `positions`, applied in order, each once.
pub fn expected_tallies_of(positions: impl IntoIterator<Item = u64>) -> Tallies {
    let mut tallies = Tallies::new();
    for i in positions {
        let (kind, id, n) = planned(i);
        if kind == Kind::B {
            continue;
        }
        let tally = tallies.entry(id).or_insert([0; 4]);
        tally[if kind == Kind::A { 0 } else { 1 }] += 1;
        tally[2] += n as i64;
        tally[3] = i as i64;
    }
    tallies
}

/// How many planned events of `1..=to` the projection takes.
pub fn taken(to: u64) -> usize {
    (1..=to).filter(|i| planned(*i).0 != Kind::B).count()
}

/// What a test makes the projection do besides its writes.
#[derive(Clone, Default)]
pub struct Behavior {
    /// Sleep 1 ms, inside the event's transaction, every this many events (0: never).
    pub pause_every: u64,
    /// Events (by `n`) whose method runs a statement on a table that does not exist, after its
    /// writes: a SQL error, every time (until the test removes them).
    pub sql_error_on: Arc<Mutex<BTreeSet<u64>>>,
    /// Events (by `n`) whose first attempt fails after its writes (an error of the method's
    /// own, not SQL); removed once failed.
    pub fail_once_on: Arc<Mutex<BTreeSet<u64>>>,
    /// Events (by `n`) whose method panics after its writes, the first time.
    pub panic_once_on: Arc<Mutex<BTreeSet<u64>>>,
    /// Events (by `n`) whose method fails after `finish`, every time (until the test removes
    /// them): its changes are complete, the method is not.
    pub fail_after_finish_on: Arc<Mutex<BTreeSet<u64>>>,
    /// When set, each event waits for one permit before its transaction.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
    /// PostgreSQL: events (by `n`) whose read model's session is ended by the server (through
    /// `admin_url`) once, after `finish`: the transaction waits for its commit on a
    /// connection that is gone.
    pub end_session_once_on: Arc<Mutex<BTreeSet<u64>>>,
    /// The PostgreSQL server's URL, for `end_session_once_on`.
    pub admin_url: Option<String>,
    /// PostgreSQL through `proxy`: events (by `n`) whose commit reaches the server but whose
    /// answer is lost with the connection, once.
    pub lose_commit_answer_once_on: Arc<Mutex<BTreeSet<u64>>>,
    /// The proxy the store (and so the read model) connects through, for
    /// `lose_commit_answer_once_on`.
    pub proxy: Option<Arc<crate::pg::Proxy>>,
    /// The positions the methods saw, in order (attempts included).
    pub seen: Arc<Mutex<Vec<u64>>>,
}

impl Behavior {
    async fn before(&self, meta: &EventMeta) {
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("the gate stays open").forget();
        }
        self.seen.lock().unwrap().push(meta.global_position());
    }

    /// After the writes, inside the transaction: the faults asked for.
    async fn after(
        &self,
        n: u64,
        sql_error: impl std::future::Future<Output = Result<(), ProjectionError>>,
    ) -> Result<(), ProjectionError> {
        if self.pause_every > 0 && n.is_multiple_of(self.pause_every) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sql_error_now = self.sql_error_on.lock().unwrap().contains(&n);
        if sql_error_now {
            sql_error.await?;
        }
        if self.fail_once_on.lock().unwrap().remove(&n) {
            return Err(ProjectionError::new(format!("event {n} fails once")));
        }
        if self.panic_once_on.lock().unwrap().remove(&n) {
            panic!("event {n} panics once");
        }
        Ok(())
    }

    /// After `finish`: the failure asked for.
    fn after_finish(&self, n: u64) -> Result<(), ProjectionError> {
        if self.fail_after_finish_on.lock().unwrap().contains(&n) {
            return Err(ProjectionError::new(format!(
                "event {n} fails after finish"
            )));
        }
        Ok(())
    }

    /// Ends the PostgreSQL session `pid` from a session of its own, and waits until it is gone
    /// and its client noticed.
    async fn end_session(&self, pid: i32) {
        let url = self.admin_url.as_deref().expect("an admin URL");
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let driver = tokio::spawn(connection);
        client
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .expect("end the session");
        loop {
            let alive = client
                .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .expect("read pg_stat_activity")
                .is_some();
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(client);
        let _ = driver.await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// The positions seen so far.
    pub fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().clone()
    }
}

/// The projection on SQLite.
pub struct SqliteTallies {
    pub model: SqliteReadModel,
    pub behavior: Behavior,
}

impl SqliteTallies {
    async fn apply(
        &self,
        id: &str,
        n: u64,
        alpha: bool,
        meta: &EventMeta,
    ) -> Result<(), ProjectionError> {
        self.behavior.before(meta).await;
        let tx = self.model.begin(meta).await?;
        write_sqlite(&tx, id, n, alpha, meta)?;
        self.behavior
            .after(n, async {
                tx.execute("INSERT INTO nowhere (x) VALUES (1)", [])?;
                Ok(())
            })
            .await?;
        tx.finish()?;
        self.behavior.after_finish(n)
    }
}

fn write_sqlite(
    tx: &SqliteEventTransaction,
    id: &str,
    n: u64,
    alpha: bool,
    meta: &EventMeta,
) -> Result<(), ProjectionError> {
    tx.execute(
        "INSERT INTO applied (event_id, times) VALUES (?1, 1)
         ON CONFLICT (event_id) DO UPDATE SET times = applied.times + 1",
        [meta.event_id().to_string()],
    )?;
    let (alphas, gammas) = if alpha { (1, 0) } else { (0, 1) };
    tx.execute(
        "INSERT INTO tallies (id, alphas, gammas, total, last_position) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET alphas = tallies.alphas + excluded.alphas,
             gammas = tallies.gammas + excluded.gammas, total = tallies.total + excluded.total,
             last_position = excluded.last_position",
        rusqlite::params![id, alphas, gammas, n as i64, meta.global_position() as i64],
    )?;
    Ok(())
}

#[projection(name = "tallies", read_model = model)]
impl SqliteTallies {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.apply(&e.id, e.n, true, meta).await
    }

    #[handles]
    async fn gamma(&mut self, e: &Gamma, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.apply(&e.id, e.n, false, meta).await
    }
}

/// The projection on PostgreSQL.
pub struct PostgresTallies {
    pub model: PostgresReadModel,
    pub behavior: Behavior,
}

impl PostgresTallies {
    async fn apply(
        &self,
        id: &str,
        n: u64,
        alpha: bool,
        meta: &EventMeta,
    ) -> Result<(), ProjectionError> {
        self.behavior.before(meta).await;
        let tx = self.model.begin(meta).await?;
        write_postgres(&tx, id, n, alpha, meta).await?;
        self.behavior
            .after(n, async {
                tx.execute("INSERT INTO nowhere (x) VALUES (1)", &[])
                    .await?;
                Ok(())
            })
            .await?;
        let ending = self.behavior.end_session_once_on.lock().unwrap().remove(&n);
        let pid: Option<i32> = if ending {
            Some(tx.query_one("SELECT pg_backend_pid()", &[]).await?.get(0))
        } else {
            None
        };
        tx.finish().await?;
        if let Some(pid) = pid {
            self.behavior.end_session(pid).await;
        }
        if self
            .behavior
            .lose_commit_answer_once_on
            .lock()
            .unwrap()
            .remove(&n)
        {
            // The next `COMMIT` on the proxy is the runtime's commit of these changes.
            let proxy = self.behavior.proxy.as_ref().expect("a proxy");
            proxy.cut_reply_after(b"COMMIT");
        }
        self.behavior.after_finish(n)
    }
}

async fn write_postgres(
    tx: &PostgresEventTransaction,
    id: &str,
    n: u64,
    alpha: bool,
    meta: &EventMeta,
) -> Result<(), ProjectionError> {
    tx.execute(
        "INSERT INTO applied (event_id, times) VALUES ($1, 1)
         ON CONFLICT (event_id) DO UPDATE SET times = applied.times + 1",
        &[&meta.event_id().to_string()],
    )
    .await?;
    let (alphas, gammas): (i64, i64) = if alpha { (1, 0) } else { (0, 1) };
    tx.execute(
        "INSERT INTO tallies (id, alphas, gammas, total, last_position) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET alphas = tallies.alphas + EXCLUDED.alphas,
             gammas = tallies.gammas + EXCLUDED.gammas, total = tallies.total + EXCLUDED.total,
             last_position = EXCLUDED.last_position",
        &[
            &id,
            &alphas,
            &gammas,
            &(n as i64),
            &(meta.global_position() as i64),
        ],
    )
    .await?;
    Ok(())
}

#[projection(name = "tallies", read_model = model)]
impl PostgresTallies {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.apply(&e.id, e.n, true, meta).await
    }

    #[handles]
    async fn gamma(&mut self, e: &Gamma, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.apply(&e.id, e.n, false, meta).await
    }
}

/// A store and its read model, on either database.
#[derive(Clone)]
pub enum Db {
    Sqlite(SqliteStore, SqliteReadModel),
    Postgres(PostgresStore, PostgresReadModel),
}

impl Db {
    /// Opens the store at `address` (`sqlite:<path>` or `postgres:<schema>@<url>`) and the
    /// projection's read model in it.
    pub async fn open(address: &str) -> Db {
        Db::open_with(address, "tallies", &MIGRATIONS, &TABLES)
            .await
            .expect("the read model opens")
    }

    /// Opens the store at `address`, and the read model `name` with `migrations` and `tables`.
    pub async fn open_with(
        address: &str,
        name: &str,
        migrations: &[(&str, &str)],
        tables: &[&str],
    ) -> Result<Db, OpenError> {
        match store_at(address).await {
            Store::Sqlite(store) => {
                let mut builder =
                    SqliteReadModel::builder(&store, name).tables(tables.iter().copied());
                for (name, sql) in migrations {
                    builder = builder.migration(*name, *sql);
                }
                let model = builder.open().await.map_err(OpenError::Sqlite)?;
                Ok(Db::Sqlite(store, model))
            }
            Store::Postgres(store) => {
                let mut builder =
                    PostgresReadModel::builder(&store, name).tables(tables.iter().copied());
                for (name, sql) in migrations {
                    builder = builder.migration(*name, *sql);
                }
                let model = builder.open().await.map_err(OpenError::Postgres)?;
                Ok(Db::Postgres(store, model))
            }
        }
    }

    /// The store, for the builder and for raw appends.
    pub fn store(&self) -> Arc<dyn EventStore> {
        match self {
            Db::Sqlite(store, _) => Arc::new(store.clone()),
            Db::Postgres(store, _) => Arc::new(store.clone()),
        }
    }

    /// The builder with the store and the projection (with `behavior` and `options`).
    pub fn builder(&self, behavior: Behavior, options: HandlerOptions) -> EvoqBuilder {
        let builder = Evoq::builder().shared_store(self.store());
        match self {
            Db::Sqlite(_, model) => builder.projection_with(
                SqliteTallies {
                    model: model.clone(),
                    behavior,
                },
                options,
            ),
            Db::Postgres(_, model) => builder.projection_with(
                PostgresTallies {
                    model: model.clone(),
                    behavior,
                },
                options,
            ),
        }
    }

    /// Waits (a minute at most) until the projection, by its type, has reached `token`.
    pub async fn wait_for_token(&self, app: &Evoq, token: u64) -> Result<(), evoq::Error> {
        let wait = match self {
            Db::Sqlite(..) => app.wait_for::<SqliteTallies>(token),
            Db::Postgres(..) => app.wait_for::<PostgresTallies>(token),
        };
        wait.timeout(Duration::from_secs(60)).await
    }

    /// Applies the event of `meta` as the projection does (its row of `applied`), then commits
    /// it with the checkpoint as the runtime does: what one node's delivery of it does.
    pub async fn apply_and_commit(&self, meta: &EventMeta) -> Result<(), String> {
        let id = meta.event_id().to_string();
        match self {
            Db::Sqlite(_, model) => {
                let tx = model.begin(meta).await.map_err(|e| e.to_string())?;
                tx.execute(
                    "INSERT INTO applied (event_id, times) VALUES (?1, 1)
                     ON CONFLICT (event_id) DO UPDATE SET times = applied.times + 1",
                    [&id],
                )
                .map_err(|e| e.to_string())?;
                tx.finish().map_err(|e| e.to_string())?;
            }
            Db::Postgres(_, model) => {
                let tx = model.begin(meta).await.map_err(|e| e.to_string())?;
                tx.execute(
                    "INSERT INTO applied (event_id, times) VALUES ($1, 1)
                     ON CONFLICT (event_id) DO UPDATE SET times = applied.times + 1",
                    &[&id],
                )
                .await
                .map_err(|e| e.to_string())?;
                tx.finish().await.map_err(|e| e.to_string())?;
            }
        }
        self.read_model()
            .commit(NAME, meta.global_position())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The read model as the runtime sees it.
    pub fn read_model(&self) -> &dyn ReadModel {
        match self {
            Db::Sqlite(_, model) => model,
            Db::Postgres(_, model) => model,
        }
    }

    /// Every tally, as committed.
    pub async fn tallies(&self) -> Tallies {
        let rows: Vec<(String, [i64; 4])> = match self {
            Db::Sqlite(_, model) => model
                .read(|conn| {
                    let mut select = conn
                        .prepare("SELECT id, alphas, gammas, total, last_position FROM tallies")?;
                    select
                        .query_map([], |row| {
                            Ok((
                                row.get(0)?,
                                [row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?],
                            ))
                        })?
                        .collect()
                })
                .await
                .expect("read the tallies"),
            Db::Postgres(_, model) => model
                .query(
                    "SELECT id, alphas, gammas, total, last_position FROM tallies",
                    &[],
                )
                .await
                .expect("read the tallies")
                .iter()
                .map(|row| (row.get(0), [row.get(1), row.get(2), row.get(3), row.get(4)]))
                .collect(),
        };
        rows.into_iter().collect()
    }

    /// How many times each event id was applied, as committed.
    pub async fn applied(&self) -> BTreeMap<String, i64> {
        let rows: Vec<(String, i64)> = match self {
            Db::Sqlite(_, model) => model
                .read(|conn| {
                    let mut select = conn.prepare("SELECT event_id, times FROM applied")?;
                    select
                        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect()
                })
                .await
                .expect("read the applied events"),
            Db::Postgres(_, model) => model
                .query("SELECT event_id, times FROM applied", &[])
                .await
                .expect("read the applied events")
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect(),
        };
        rows.into_iter().collect()
    }

    /// Runs one query that returns one `BIGINT`, as committed.
    pub async fn count(&self, sql: &'static str) -> i64 {
        match self {
            Db::Sqlite(_, model) => model
                .read(move |conn| conn.query_row(sql, [], |row| row.get(0)))
                .await
                .expect("count"),
            Db::Postgres(_, model) => model
                .query_one(sql, &[])
                .await
                .expect("count")
                .get::<_, i64>(0),
        }
    }

    /// Whether table `table` exists where the read model keeps its tables.
    pub async fn has_table(&self, table: &'static str) -> bool {
        match self {
            Db::Sqlite(_, model) => {
                model
                    .read(move |conn| {
                        conn.query_row(
                            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                            [table],
                            |row| row.get::<_, i64>(0),
                        )
                    })
                    .await
                    .expect("look for the table")
                    > 0
            }
            Db::Postgres(_, model) => {
                model
                    .query_one(
                        "SELECT COUNT(*) FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
                        &[&model.schema(), &table],
                    )
                    .await
                    .expect("look for the table")
                    .get::<_, i64>(0)
                    > 0
            }
        }
    }
}

/// Why a read model did not open, on either database.
#[derive(Debug)]
pub enum OpenError {
    Sqlite(SqliteReadModelError),
    Postgres(PostgresReadModelError),
}

impl OpenError {
    /// The version and name of the migration that failed, for a migration error.
    pub fn failed_migration(&self) -> Option<(u32, String)> {
        match self {
            OpenError::Sqlite(SqliteReadModelError::Migration {
                version, migration, ..
            })
            | OpenError::Postgres(PostgresReadModelError::Migration {
                version, migration, ..
            }) => Some((*version, migration.clone())),
            _ => None,
        }
    }

    /// The version of the applied migration that changed, for that error.
    pub fn changed_migration(&self) -> Option<u32> {
        match self {
            OpenError::Sqlite(SqliteReadModelError::MigrationChanged { version, .. })
            | OpenError::Postgres(PostgresReadModelError::MigrationChanged { version, .. }) => {
                Some(*version)
            }
            _ => None,
        }
    }

    /// (applied, known), for a database with more migrations than the list.
    pub fn too_new(&self) -> Option<(u32, u32)> {
        match self {
            OpenError::Sqlite(SqliteReadModelError::MigrationsTooNew {
                applied, known, ..
            })
            | OpenError::Postgres(PostgresReadModelError::MigrationsTooNew {
                applied,
                known,
                ..
            }) => Some((*applied, *known)),
            _ => None,
        }
    }

    /// (what, name), for a name that is not valid.
    pub fn invalid_name(&self) -> Option<(&'static str, String)> {
        match self {
            OpenError::Sqlite(SqliteReadModelError::InvalidName { what, name, .. })
            | OpenError::Postgres(PostgresReadModelError::InvalidName { what, name, .. }) => {
                Some((*what, name.clone()))
            }
            _ => None,
        }
    }

    /// The table, for a table to clear that does not exist.
    pub fn unknown_table(&self) -> Option<String> {
        match self {
            OpenError::Sqlite(SqliteReadModelError::UnknownTable { table, .. })
            | OpenError::Postgres(PostgresReadModelError::UnknownTable { table, .. }) => {
                Some(table.clone())
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Sqlite(error) => error.fmt(f),
            OpenError::Postgres(error) => error.fmt(f),
        }
    }
}

/// Makes every save of checkpoint `tallies` at `position` fail, from outside the runtime (a
/// trigger on the store's `checkpoints` table), or stops doing so (`None`): a commit that fails.
pub async fn fail_checkpoint_at(address: &str, position: Option<u64>) {
    if let Some(path) = address.strip_prefix("sqlite:") {
        let conn = rusqlite::Connection::open(path).expect("open the file");
        conn.execute_batch(
            "DROP TRIGGER IF EXISTS fail_insert; DROP TRIGGER IF EXISTS fail_update;",
        )
        .expect("drop the triggers");
        if let Some(position) = position {
            conn.execute_batch(&format!(
                "CREATE TRIGGER fail_insert BEFORE INSERT ON checkpoints WHEN NEW.position = {position}
                     BEGIN SELECT RAISE(ABORT, 'the disk is full'); END;
                 CREATE TRIGGER fail_update BEFORE UPDATE ON checkpoints WHEN NEW.position = {position}
                     BEGIN SELECT RAISE(ABORT, 'the disk is full'); END;"
            ))
            .expect("create the triggers");
        }
    } else if let Some((schema, url)) = address
        .strip_prefix("postgres:")
        .and_then(|rest| rest.split_once('@'))
    {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let driver = tokio::spawn(connection);
        let sql = match position {
            Some(position) => format!(
                "CREATE OR REPLACE FUNCTION \"{schema}\".fail_checkpoint() RETURNS trigger
                 LANGUAGE plpgsql AS $$ BEGIN
                     IF NEW.position = {position} THEN RAISE EXCEPTION 'the disk is full'; END IF;
                     RETURN NEW;
                 END $$;
                 DROP TRIGGER IF EXISTS fail_checkpoint ON \"{schema}\".checkpoints;
                 CREATE TRIGGER fail_checkpoint BEFORE INSERT OR UPDATE ON \"{schema}\".checkpoints
                     FOR EACH ROW EXECUTE FUNCTION \"{schema}\".fail_checkpoint();"
            ),
            None => format!("DROP TRIGGER IF EXISTS fail_checkpoint ON \"{schema}\".checkpoints"),
        };
        client.batch_execute(&sql).await.expect("the trigger");
        drop(client);
        let _ = driver.await;
    } else {
        panic!("not a store address: {address}")
    }
}

enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

async fn store_at(address: &str) -> Store {
    if let Some(path) = address.strip_prefix("sqlite:") {
        Store::Sqlite(
            SqliteStore::open(path)
                .await
                .expect("the SQLite file opens"),
        )
    } else if let Some((schema, url)) = address
        .strip_prefix("postgres:")
        .and_then(|rest| rest.split_once('@'))
    {
        Store::Postgres(
            PostgresStore::connect_with(url, PostgresOptions::default().schema(schema))
                .await
                .expect("the PostgreSQL schema opens"),
        )
    } else {
        panic!("not a store address: {address}")
    }
}

/// Waits (a minute at most) until the projection has processed `position`.
pub async fn wait(app: &Evoq, position: u64) {
    tokio::time::timeout(
        Duration::from_secs(60),
        app.wait_for_named(NAME, position).without_deadline(),
    )
    .await
    .expect("the projection got there in time")
    .expect("the projection runs");
}
