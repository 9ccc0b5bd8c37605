//! Which store the command line names, and opening it: to read (while the application may run)
//! or to write (only when it does not).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use evoq_runtime::store::postgres::{PostgresOptions, PostgresStore};
use evoq_runtime::store::sqlite::SqliteStore;
use evoq_runtime::{EventStore, StoreError};

use crate::error::{CliError, Doing};

/// A store named on the command line.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database and the schema of the store.
    Postgres {
        /// The connection string.
        url: String,
        /// The schema.
        schema: String,
    },
}

impl Target {
    /// Parses `--store` and `--schema`.
    pub(crate) fn parse(store: Option<&str>, schema: Option<&str>) -> Result<Target, CliError> {
        let store = store.filter(|s| !s.is_empty()).ok_or(CliError::NoStore)?;
        if store.starts_with("postgres://") || store.starts_with("postgresql://") {
            return Ok(Target::Postgres {
                url: store.to_owned(),
                schema: schema.unwrap_or("evoq").to_owned(),
            });
        }
        if schema.is_some() {
            return Err(CliError::Usage(
                "`--schema` names a PostgreSQL schema; a SQLite store is one file, with no schema"
                    .into(),
            ));
        }
        let path = match store.strip_prefix("sqlite:") {
            Some(rest) => rest.strip_prefix("//").unwrap_or(rest),
            None if store.contains("://") => {
                return Err(CliError::Usage(format!(
                    "`{store}` is not a store this tool opens: use `sqlite:PATH`, a plain path, or `postgres://...`"
                )));
            }
            None => store,
        };
        if path.is_empty() {
            return Err(CliError::Usage(
                "`sqlite:` needs a path: `sqlite:path/to/events.db`".into(),
            ));
        }
        Ok(Target::Sqlite(PathBuf::from(path)))
    }
}

/// Where the store the command opened is, for messages (never a password).
static OPENED_LOCATION: OnceLock<String> = OnceLock::new();

/// Where the store the command opened is (`the store` before it is open).
pub(crate) fn opened_location() -> String {
    OPENED_LOCATION
        .get()
        .cloned()
        .unwrap_or_else(|| "the store".to_owned())
}

/// An open store.
pub(crate) struct Opened {
    /// The store.
    pub(crate) store: Arc<dyn EventStore>,
    /// `sqlite` or `postgres`.
    pub(crate) kind: &'static str,
    /// Where it is, for messages (never a password).
    pub(crate) location: String,
    /// The SQLite store, for its head, and closed when the command is done if it writes.
    file: Option<SqliteStore>,
    /// Whether the store was opened for writing (a SQLite file's lock is taken then).
    writes: bool,
    /// The PostgreSQL store, for its head.
    postgres: Option<PostgresStore>,
}

impl Opened {
    /// The head now, read from the file or the database (the store's head watch may lag
    /// behind the application's commits).
    pub(crate) async fn head(&self) -> Result<u64, StoreError> {
        match (&self.postgres, &self.file) {
            (Some(pg), _) => pg.read_head().await,
            (None, Some(file)) => file.read_head().await,
            (None, None) => Ok(*self.store.head().borrow()),
        }
    }

    /// Waits until reads of the store go past `position`, up to `deadline`: a PostgreSQL
    /// store reads up to the head its watch has seen, which follows the database's with a
    /// notification or a poll. Whether they do.
    pub(crate) async fn readable_past(&self, position: u64, deadline: Duration) -> bool {
        let mut head = self.store.head();
        tokio::time::timeout(deadline, head.wait_for(|head| *head > position))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// Whether this is a PostgreSQL store (shared by nodes: handlers hold leases).
    pub(crate) fn is_shared(&self) -> bool {
        self.postgres.is_some()
    }

    /// Closes a store opened for writing (SQLite: commits, checkpoints the WAL into the file,
    /// releases the lock).
    pub(crate) async fn close(self) -> Result<(), CliError> {
        if let Some(sqlite) = self.file.as_ref().filter(|_| self.writes) {
            sqlite.close().doing("closing the store").await?;
        }
        Ok(())
    }

    /// Notes where the store is, for the messages of the calls that follow.
    fn noted(self) -> Opened {
        let _ = OPENED_LOCATION.set(self.location.clone());
        self
    }
}

/// Opens the store to read it: a SQLite file without its lock (reads work while the
/// application runs), a PostgreSQL schema without creating or migrating anything.
pub(crate) async fn open_for_reading(target: &Target) -> Result<Opened, CliError> {
    match target {
        Target::Sqlite(path) => {
            let store = inspect_file(path).await?;
            Ok(Opened {
                location: format!("`{}`", path.display()),
                store: Arc::new(store.clone()),
                kind: "sqlite",
                file: Some(store),
                writes: false,
                postgres: None,
            }
            .noted())
        }
        Target::Postgres { url, schema } => connect(url, schema).await,
    }
}

/// Opens the store to write it. A SQLite file is opened as the application opens it, taking
/// its lock: refused while an application has it open. A PostgreSQL schema is shared: the
/// command takes what it needs (a handler's lease) itself.
pub(crate) async fn open_for_writing(target: &Target, what: &str) -> Result<Opened, CliError> {
    match target {
        Target::Sqlite(path) => {
            // Checked read-only first: an open for writing would create a missing file.
            drop(inspect_file(path).await?);
            let store = SqliteStore::open(path).await.map_err(|e| match e {
                StoreError::Locked {
                    location, holder, ..
                } => CliError::FileInUse {
                    what: what.to_owned(),
                    location,
                    holder,
                },
                other => open_error(other),
            })?;
            Ok(Opened {
                location: format!("`{}`", path.display()),
                store: Arc::new(store.clone()),
                kind: "sqlite",
                file: Some(store),
                writes: true,
                postgres: None,
            }
            .noted())
        }
        Target::Postgres { url, schema } => connect(url, schema).await,
    }
}

async fn inspect_file(path: &Path) -> Result<SqliteStore, CliError> {
    if !path.exists() {
        return Err(CliError::NoSuchFile {
            path: path.display().to_string(),
        });
    }
    SqliteStore::open_for_inspection(path)
        .await
        .map_err(open_error)
}

async fn connect(url: &str, schema: &str) -> Result<Opened, CliError> {
    let options = PostgresOptions::default()
        .schema(schema)
        .migrate(false)
        .pool_size(2)
        .retries(1)
        .poll_interval(Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(10));
    let store = PostgresStore::connect_with(url, options)
        .await
        .map_err(open_error)?;
    Ok(Opened {
        location: format!("{} (schema `{schema}`)", store.location()),
        store: Arc::new(store.clone()),
        kind: "postgres",
        file: None,
        writes: false,
        postgres: Some(store),
    }
    .noted())
}

fn open_error(error: StoreError) -> CliError {
    match error {
        StoreError::NotAnEventStore {
            location, found, ..
        } => CliError::NotAStore { location, found },
        other => CliError::Open(Box::new(other)),
    }
}
