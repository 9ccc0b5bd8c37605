//! The three stores as places a test can restart on: a test body runs once per backend, and
//! `open` gives it a new handle on the same data (the same in-memory store, a reopened SQLite
//! file, a new connection pool on the same PostgreSQL schema), as a restarted process or a
//! second node would have.

use std::sync::Arc;

use evoq::EventStore;
use evoq::store::memory::InMemoryStore;
use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq::store::sqlite::SqliteStore;

use crate::pg::PgSchema;
use crate::temp::TempDir;

/// Which store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

impl Backend {
    /// Every backend, in the order the tests run them.
    pub const ALL: [Backend; 3] = [Backend::Memory, Backend::Sqlite, Backend::Postgres];
}

/// Where a test's data lives; removed when dropped.
pub struct Place {
    pub backend: Backend,
    memory: InMemoryStore,
    dir: Option<TempDir>,
    pg: Option<PgSchema>,
}

impl Place {
    /// A fresh, empty place on `backend`; `None` (after saying why) when PostgreSQL does not
    /// answer and is not required.
    pub async fn new(backend: Backend, label: &str) -> Option<Place> {
        let mut place = Place {
            backend,
            memory: InMemoryStore::new(),
            dir: None,
            pg: None,
        };
        match backend {
            Backend::Memory => {}
            Backend::Sqlite => place.dir = Some(TempDir::new(label)),
            Backend::Postgres => place.pg = Some(PgSchema::new(label).await?),
        }
        Some(place)
    }

    /// Runs `test` on a fresh place of `backend` (made on a runtime of its own, gone before
    /// `test` starts, which drives its children and runtimes itself); nothing runs when the
    /// PostgreSQL place is skipped (no server, and none required).
    pub fn run(backend: Backend, label: &str, test: impl FnOnce(&Place)) {
        let Some(place) = crate::crash::runtime().block_on(Place::new(backend, label)) else {
            return;
        };
        test(&place);
    }

    /// Where another process finds the data: `sqlite:<path>` or `postgres:<schema>@<url>`
    /// (`None` for the in-memory store, which no other process can reach).
    pub fn address(&self) -> Option<String> {
        match (self.backend, &self.dir, &self.pg) {
            (Backend::Sqlite, Some(dir), _) => {
                Some(format!("sqlite:{}", dir.file("events.db").display()))
            }
            (Backend::Postgres, _, Some(pg)) => Some(format!("postgres:{}@{}", pg.schema, pg.url)),
            _ => None,
        }
    }

    /// A new handle on the place's data.
    pub async fn open(&self) -> Arc<dyn EventStore> {
        match self.address() {
            Some(address) => open_at(&address).await,
            None => Arc::new(self.memory.clone()),
        }
    }
}

impl Place {
    /// Runs SQL straight on the place's data, as an operator (or a faulty disk) would: `sqlite`
    /// on the SQLite file, `postgres` on the PostgreSQL schema (`{s}` in it stands for the
    /// schema's quoted name). Nothing for the in-memory store.
    pub async fn execute(&self, sqlite: &str, postgres: &str) {
        match (self.backend, &self.dir, &self.pg) {
            (Backend::Sqlite, Some(dir), _) => {
                let conn = rusqlite::Connection::open(dir.file("events.db")).expect("open");
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .expect("busy timeout");
                conn.execute_batch(sqlite)
                    .expect("the SQL runs on the SQLite file");
            }
            (Backend::Postgres, _, Some(pg)) => {
                let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                let driver = tokio::spawn(connection);
                let sql = postgres.replace("{s}", &format!("\"{}\"", pg.schema));
                client
                    .batch_execute(&sql)
                    .await
                    .expect("the SQL runs on the PostgreSQL schema");
                drop(client);
                let _ = driver.await;
            }
            _ => {}
        }
    }
}

/// A new handle on the data at `address` (see [`Place::address`]), as another process opens it.
pub async fn open_at(address: &str) -> Arc<dyn EventStore> {
    if let Some(path) = address.strip_prefix("sqlite:") {
        Arc::new(
            SqliteStore::open(path)
                .await
                .expect("the SQLite file opens"),
        )
    } else if let Some((schema, url)) = address
        .strip_prefix("postgres:")
        .and_then(|rest| rest.split_once('@'))
    {
        Arc::new(
            PostgresStore::connect_with(url, PostgresOptions::default().schema(schema))
                .await
                .expect("the PostgreSQL schema opens"),
        )
    } else {
        panic!("not a store address: {address}")
    }
}
