//! evoq as a [`Peer`] of the workload: the bank account of [`bank`](crate::bank) on a runtime
//! with the default configuration, on the store the run names, and the deposit counter of
//! [`read_side`].

use std::path::PathBuf;
use std::sync::Arc;

use evoq::store::memory::InMemoryStore;
use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq::store::sqlite::{Durability, SqliteOptions, SqliteStore};
use evoq::{Dispatched, EventStore, Evoq};

use crate::bank::{BankAccount, Deposit, OpenAccount, Withdraw};
use crate::read_side::{self, ReadSide};
use crate::workload::{BankCommand, Done, Failure, Peer};

/// Where the events go: `--store memory|sqlite|postgres`.
#[derive(Debug)]
pub enum Backend {
    /// The in-memory store.
    Memory,
    /// A new SQLite file in a temporary directory (removed by [`Backend::clean_up`]), default
    /// durability (`synchronous=FULL`; `EVOQ_BENCH_SQLITE_DURABILITY=normal` for `NORMAL`).
    Sqlite {
        /// The directory of the file.
        dir: PathBuf,
    },
    /// A fresh schema (dropped by [`Backend::clean_up`] with `psql`) in the database at
    /// `EVOQ_BENCH_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
    Postgres {
        /// The database.
        url: String,
        /// The schema of this run.
        schema: String,
    },
}

impl Backend {
    /// The backend named `store`, with a new file or schema of its own.
    pub fn named(store: &str) -> Option<Backend> {
        let unique = evoq::Uuid::now_v7().simple().to_string();
        match store {
            "memory" => Some(Backend::Memory),
            "sqlite" => Some(Backend::Sqlite {
                dir: std::env::temp_dir().join(format!("evoq-bench-{unique}")),
            }),
            "postgres" => Some(Backend::Postgres {
                url: std::env::var("EVOQ_BENCH_PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
                schema: format!("evoq_bench_{unique}"),
            }),
            _ => None,
        }
    }

    async fn open(&self) -> Result<Arc<dyn EventStore>, evoq::Error> {
        Ok(match self {
            Backend::Memory => Arc::new(InMemoryStore::new()),
            Backend::Sqlite { dir } => {
                std::fs::create_dir_all(dir).map_err(|error| evoq::Error::Config {
                    key: "--store sqlite".into(),
                    reason: format!("cannot create {}: {error}", dir.display()),
                })?;
                let normal =
                    std::env::var("EVOQ_BENCH_SQLITE_DURABILITY").as_deref() == Ok("normal");
                let durability = if normal {
                    Durability::Normal
                } else {
                    Durability::Full
                };
                let options = SqliteOptions::default().durability(durability);
                Arc::new(SqliteStore::open_with(dir.join("events.db"), options).await?)
            }
            Backend::Postgres { url, schema } => {
                let options = PostgresOptions::default().schema(schema.as_str());
                Arc::new(PostgresStore::connect_with(url, options).await?)
            }
        })
    }

    /// Removes the SQLite directory or drops the PostgreSQL schema (with `psql`: the benchmark
    /// has no SQL client of its own).
    pub fn clean_up(&self) {
        match self {
            Backend::Memory => {}
            Backend::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Backend::Postgres { url, schema } => {
                let drop = format!(
                    "SET client_min_messages = warning; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                );
                let dropped = std::process::Command::new("psql")
                    .args([url.as_str(), "-qc", &drop])
                    .status();
                if !matches!(dropped, Ok(status) if status.success()) {
                    eprintln!("could not drop the schema {schema} (psql {url})");
                }
            }
        }
    }
}

/// An evoq runtime (default configuration) and its deposit counter.
pub struct EvoqPeer {
    app: Evoq,
    read_side: ReadSide,
}

impl EvoqPeer {
    /// Starts the runtime on `backend`'s store, with the read side.
    pub async fn start(backend: &Backend) -> Result<Self, evoq::Error> {
        let store = backend.open().await?;
        let (builder, read_side) = read_side::start(Evoq::builder().shared_store(store));
        let app = builder.start().await?;
        Ok(EvoqPeer { app, read_side })
    }

    /// The runtime.
    pub fn app(&self) -> &Evoq {
        &self.app
    }
}

fn outcome(result: Result<Dispatched<BankAccount>, evoq::Error>) -> Result<Done, Failure> {
    match result {
        Ok(done) => Ok(Done {
            events: done.events.len() as u64,
            position: done.position.unwrap_or(0),
        }),
        Err(error) if error.is_rejection() => Err(Failure::Rejected),
        Err(error) => Err(Failure::Other(error.to_string())),
    }
}

impl Peer for EvoqPeer {
    fn name(&self) -> &'static str {
        "evoq"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    async fn dispatch(&self, account: &str, command: BankCommand) -> Result<Done, Failure> {
        let account = account.to_owned();
        let result = match command {
            BankCommand::Open { initial_balance } => {
                self.app
                    .dispatch(OpenAccount {
                        account,
                        initial_balance,
                    })
                    .await
            }
            BankCommand::Deposit { amount } => self.app.dispatch(Deposit { account, amount }).await,
            BankCommand::Withdraw { amount } => {
                self.app.dispatch(Withdraw { account, amount }).await
            }
        };
        outcome(result)
    }

    async fn caught_up(&self, position: u64, _events: u64) {
        if let Err(error) = self.read_side.wait_for(&self.app, position).await {
            eprintln!("the deposit counter did not catch up: {error}");
        }
    }

    fn deposits_projected(&self) -> u64 {
        self.read_side.deposits()
    }
}
