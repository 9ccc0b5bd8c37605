//! Catch-up of a projection into a SQL read model, against the in-memory read model in the same
//! run, on each durable store:
//!
//! - `events` (default 100,000) `Deposited { account, amount }` events are stored first
//!   (appends of 100 events, to 1,000 accounts), straight through the store;
//! - then, for each read model, a new runtime with one projection that keeps a balance per
//!   account: timed from `start()` until the projection has processed the last event
//!   (`wait_for`);
//!   - **memory**: `InMemoryReadModel`, per event a `get` and a `put` of the balance;
//!   - **sql**: `SqliteReadModel` or `PostgresReadModel` (in the store's database), per event one
//!     upsert in the event's transaction, committed with the projection's checkpoint.
//!
//! The two alternate, `runs` times each (default 3), each run a new projection (a new name, and
//! a new table for the SQL model) over the same stored events; every run checks the sum of the
//! balances. SQLite: a temporary file (`synchronous=NORMAL` for the appends, which are not
//! measured), removed at the end. PostgreSQL: `EVOQ_BENCH_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), a fresh schema dropped at the end with `psql`.
//! `EVOQ_BENCH_SYNC=1` makes the SQL read model's commits synchronous (`synchronous=FULL`,
//! `synchronous_commit=on`) instead of the defaults (`NORMAL`, `off`).
//!
//! `contended` (SQLite only): the SQL projection catches up while 4 tasks append events of
//! another type to the same file, back to back, then every 10 ms: its rate, and the appends'
//! count and slowest latency (none may fail: the store's writer and the read model share
//! SQLite's one write lock).
//!
//! `cargo run --release -p evoq-bench --bin read_models [sqlite|postgres|all|contended] [events] [runs]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use evoq::prelude::*;
use evoq::projection::postgres::PostgresReadModel;
use evoq::projection::sqlite::{SqliteReadModel, rusqlite};
use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq::store::sqlite::{Durability, SqliteOptions, SqliteStore};
use evoq::{EventStore, EvoqBuilder, ExpectedVersion, HandlerOptions, NewEvent};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Deposited {
    account: String,
    amount: i64,
}

const ACCOUNTS: u64 = 1_000;
const PER_APPEND: u64 = 100;

fn amount_of(n: u64) -> i64 {
    (n % 100) as i64 + 1
}

/// The balance per account, in memory.
struct MemoryBalances {
    model: InMemoryReadModel,
}

#[projection(name = "memory_balances", read_model = model)]
impl MemoryBalances {
    #[handles]
    async fn deposited(&mut self, e: &Deposited, _: &EventMeta) -> Result<(), ProjectionError> {
        let balance: i64 = self.model.get(&e.account)?.unwrap_or(0);
        self.model.put(&e.account, &(balance + e.amount))?;
        Ok(())
    }
}

/// The balance per account, in the SQLite file.
struct SqliteBalances {
    model: SqliteReadModel,
    upsert: String,
}

#[projection(name = "sqlite_balances", read_model = model)]
impl SqliteBalances {
    #[handles]
    async fn deposited(&mut self, e: &Deposited, meta: &EventMeta) -> Result<(), ProjectionError> {
        let tx = self.model.begin(meta).await?;
        tx.execute(&self.upsert, rusqlite::params![e.account, e.amount])?;
        tx.finish()?;
        Ok(())
    }
}

/// The balance per account, in the PostgreSQL database.
struct PostgresBalances {
    model: PostgresReadModel,
    upsert: String,
}

#[projection(name = "postgres_balances", read_model = model)]
impl PostgresBalances {
    #[handles]
    async fn deposited(&mut self, e: &Deposited, meta: &EventMeta) -> Result<(), ProjectionError> {
        let tx = self.model.begin(meta).await?;
        tx.execute(&self.upsert, &[&e.account, &e.amount]).await?;
        tx.finish().await?;
        Ok(())
    }
}

/// Stores `events` deposits, numbered from 0; returns their sum.
async fn store_events(store: &dyn EventStore, events: u64) -> i64 {
    let mut n = 0;
    let mut sum = 0;
    while n < events {
        let count = PER_APPEND.min(events - n);
        let batch: Vec<NewEvent> = (n..n + count)
            .map(|i| {
                sum += amount_of(i);
                NewEvent {
                    event_id: evoq::Uuid::now_v7(),
                    event_type: "Deposited".into(),
                    schema_version: 1,
                    data: serde_json::to_vec(&Deposited {
                        account: format!("acc-{}", i % ACCOUNTS),
                        amount: amount_of(i),
                    })
                    .expect("json"),
                    metadata: Default::default(),
                }
            })
            .collect();
        store
            .append(
                &format!("Account-{}", (n / PER_APPEND) % ACCOUNTS),
                ExpectedVersion::Any,
                batch,
            )
            .await
            .expect("append");
        n += count;
    }
    sum
}

/// Starts `builder` (the store and one projection named `name`) and waits until the
/// projection has processed `head`; the seconds it took.
async fn catch_up(builder: EvoqBuilder, name: &str, head: u64) -> (Evoq, f64) {
    let started = Instant::now();
    let app = builder.start().await.expect("start");
    app.wait_for_named(name, head)
        .without_deadline()
        .await
        .expect("the projection catches up");
    (app, started.elapsed().as_secs_f64())
}

/// The in-memory model over `store`; events per second.
async fn memory_run(store: &Arc<dyn EventStore>, run: usize, head: u64, sum: i64) -> f64 {
    let name = format!("memory_{run}");
    let model = InMemoryReadModel::new();
    let builder = Evoq::builder()
        .shared_store(Arc::clone(store))
        .projection_with(
            MemoryBalances {
                model: model.clone(),
            },
            HandlerOptions::new().name(name.clone()),
        );
    let (app, secs) = catch_up(builder, &name, head).await;
    app.stop().await;
    let total: i64 = model
        .list::<i64>("")
        .expect("balances")
        .into_iter()
        .map(|(_, b)| b)
        .sum();
    assert_eq!(total, sum, "every event applied once");
    head as f64 / secs
}

fn sync() -> bool {
    std::env::var("EVOQ_BENCH_SYNC").as_deref() == Ok("1")
}

async fn sqlite(events: u64, runs: usize) {
    let dir = std::env::temp_dir().join(format!("evoq-bench-rm-{}", evoq::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let store = SqliteStore::open_with(
        dir.join("events.db"),
        SqliteOptions::default().durability(Durability::Normal),
    )
    .await
    .expect("open the SQLite store");
    let sum = store_events(&store, events).await;
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let head = *shared.head().borrow();
    let durability = if sync() {
        Durability::Full
    } else {
        Durability::Normal
    };
    for run in 0..runs {
        let memory = memory_run(&shared, run, head, sum).await;
        let name = format!("sqlite_{run}");
        let table = format!("balances_{run}");
        let model = SqliteReadModel::builder(&store, name.as_str())
            .migration(
                "create balances",
                format!(
                    "CREATE TABLE {table} (account TEXT PRIMARY KEY, balance INTEGER NOT NULL)"
                ),
            )
            .tables([table.as_str()])
            .durability(durability)
            .open()
            .await
            .expect("open the read model");
        let builder = Evoq::builder()
            .shared_store(Arc::clone(&shared))
            .projection_with(
                SqliteBalances {
                    model: model.clone(),
                    upsert: format!(
                        "INSERT INTO {table} (account, balance) VALUES (?1, ?2)
                     ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance"
                    ),
                },
                HandlerOptions::new().name(name.clone()),
            );
        let (app, secs) = catch_up(builder, &name, head).await;
        app.stop().await;
        let select = format!("SELECT SUM(balance) FROM {table}");
        let total: i64 = model
            .read(move |conn| conn.query_row(&select, [], |row| row.get(0)))
            .await
            .expect("the sum");
        assert_eq!(total, sum, "every event applied once");
        println!(
            "sqlite,   run {run}: in-memory model {memory:>9.0} events/s, SQL read model ({durability:?}) {:>9.0} events/s ({head} events in {secs:.2} s)",
            head as f64 / secs
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SQLite only: a new SQL projection catches up over the stored events while 4 tasks append
/// events of another type, one per append, back to back (`pause` zero) or every `pause`: how
/// fast it catches up, and how the appends fare (none may fail).
async fn contended(events: u64, pause: Duration) {
    let dir = std::env::temp_dir().join(format!("evoq-bench-rm-{}", evoq::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let store = SqliteStore::open_with(
        dir.join("events.db"),
        SqliteOptions::default().durability(Durability::Normal),
    )
    .await
    .expect("open the SQLite store");
    let sum = store_events(&store, events).await;
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let head = *shared.head().borrow();
    let model = SqliteReadModel::builder(&store, "contended")
        .migration(
            "create balances",
            "CREATE TABLE balances (account TEXT PRIMARY KEY, balance INTEGER NOT NULL)",
        )
        .tables(["balances"])
        .open()
        .await
        .expect("open the read model");
    let done = Arc::new(AtomicBool::new(false));
    let appenders: Vec<_> = (0..4)
        .map(|task| {
            let shared = Arc::clone(&shared);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let (mut ok, mut failed, mut slowest) = (0u64, 0u64, Duration::ZERO);
                while !done.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let event = NewEvent {
                        event_id: evoq::Uuid::now_v7(),
                        event_type: "Other".into(),
                        schema_version: 1,
                        data: b"{}".to_vec(),
                        metadata: Default::default(),
                    };
                    let stream = format!("Other-{task}");
                    match shared
                        .append(&stream, ExpectedVersion::Any, vec![event])
                        .await
                    {
                        Ok(_) => ok += 1,
                        Err(error) => {
                            failed += 1;
                            eprintln!("an append failed: {error}");
                        }
                    }
                    slowest = slowest.max(started.elapsed());
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                (ok, failed, slowest)
            })
        })
        .collect();
    let builder = Evoq::builder()
        .shared_store(Arc::clone(&shared))
        .projection_with(
            SqliteBalances {
                model: model.clone(),
                upsert: "INSERT INTO balances (account, balance) VALUES (?1, ?2)
                     ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance"
                    .to_owned(),
            },
            HandlerOptions::new().name("contended"),
        );
    let (app, secs) = catch_up(builder, "contended", head).await;
    done.store(true, Ordering::Relaxed);
    let (mut ok, mut failed, mut slowest) = (0, 0, Duration::ZERO);
    for appender in appenders {
        let (o, f, s) = appender.await.expect("an appender");
        (ok, failed, slowest) = (ok + o, failed + f, slowest.max(s));
    }
    app.stop().await;
    let total: i64 = model
        .read(|conn| conn.query_row("SELECT SUM(balance) FROM balances", [], |row| row.get(0)))
        .await
        .expect("the sum");
    assert_eq!(total, sum, "every event applied once");
    assert_eq!(failed, 0, "no append failed");
    let how = if pause.is_zero() {
        "back to back".to_owned()
    } else {
        format!("every {pause:?}")
    };
    println!(
        "sqlite, contended: SQL read model {:>9.0} events/s ({head} events in {secs:.2} s) while 4 tasks appended {how}: {ok} appends, {failed} failed, the slowest took {slowest:.1?}",
        head as f64 / secs
    );
    drop(model);
    drop(shared);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn postgres(events: u64, runs: usize) {
    let url = std::env::var("EVOQ_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("evoq_bench_{}", evoq::Uuid::now_v7().simple());
    let store = PostgresStore::connect_with(&url, PostgresOptions::default().schema(&*schema))
        .await
        .expect("connect to PostgreSQL");
    let sum = store_events(&store, events).await;
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let head = store.read_head().await.expect("the head");
    for run in 0..runs {
        let memory = memory_run(&shared, run, head, sum).await;
        let name = format!("postgres_{run}");
        let table = format!("balances_{run}");
        let model = PostgresReadModel::builder(&store, name.as_str())
            .migration(
                "create balances",
                format!("CREATE TABLE {table} (account TEXT PRIMARY KEY, balance BIGINT NOT NULL)"),
            )
            .tables([table.as_str()])
            .synchronous_commit(sync())
            .open()
            .await
            .expect("open the read model");
        let builder = Evoq::builder().shared_store(Arc::clone(&shared)).projection_with(
            PostgresBalances {
                model: model.clone(),
                upsert: format!(
                    "INSERT INTO {table} (account, balance) VALUES ($1, $2)
                     ON CONFLICT (account) DO UPDATE SET balance = {table}.balance + EXCLUDED.balance"
                ),
            },
            HandlerOptions::new().name(name.clone()),
        );
        let (app, secs) = catch_up(builder, &name, head).await;
        app.stop().await;
        let total: i64 = model
            .query_one(&format!("SELECT SUM(balance)::BIGINT FROM {table}"), &[])
            .await
            .expect("the sum")
            .get(0);
        assert_eq!(total, sum, "every event applied once");
        println!(
            "postgres, run {run}: in-memory model {memory:>9.0} events/s, SQL read model (synchronous_commit={}) {:>9.0} events/s ({head} events in {secs:.2} s)",
            if sync() { "on" } else { "off" },
            head as f64 / secs
        );
    }
    drop(shared);
    drop(store);
    // Drop the schema with `psql` (the benchmark has no SQL client of its own).
    if let Ok(status) = std::process::Command::new("psql")
        .args([
            &url,
            "-qc",
            &format!("SET client_min_messages = warning; DROP SCHEMA \"{schema}\" CASCADE"),
        ])
        .status()
        && !status.success()
    {
        eprintln!("could not drop schema {schema}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("all", String::as_str).to_owned();
    let events: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "projection catch-up over {events} stored events ({ACCOUNTS} accounts), {cores} cores, {runs} run(s) per read model"
    );
    runtime.block_on(async {
        if matches!(which.as_str(), "sqlite" | "all") {
            sqlite(events, runs).await;
        }
        if matches!(which.as_str(), "postgres" | "all") {
            postgres(events, runs).await;
        }
        if which == "contended" {
            for _ in 0..runs {
                contended(events, Duration::ZERO).await;
                contended(events, Duration::from_millis(10)).await;
            }
        }
    });
}
