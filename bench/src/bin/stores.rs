//! Append throughput of the durable stores through the whole runtime: `aggregates` bank
//! accounts (default 64) each get `commands` commands (default 100: one open, then deposits)
//! from a task of their own, all at once, through `Evoq::dispatch`, so `aggregates` commands
//! are in flight at any time. Every command is acknowledged only once its event is committed.
//! Each line gives commands per second and the median and 99th percentile of one dispatch.
//!
//! - `sqlite`: a temporary file, default durability (`synchronous=FULL`, survives power loss;
//!   `EVOQ_BENCH_SQLITE_DURABILITY=normal` for `synchronous=NORMAL`);
//! - `postgres`: `EVOQ_BENCH_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`), in a
//!   fresh schema dropped at the end.
//!
//! - `memory`: the in-memory store, as the runtime's ceiling on the same machine.
//! - `pg-probe`: no evoq at all: PostgreSQL's batched commit rate on one connection, each
//!   transaction one multi-row insert of `aggregates` rows shaped like evoq's events (`commands`
//!   transactions), in a fresh schema: the bound evoq's `postgres` figure is a ratio of.
//!
//! - `sqlite-probe`: no evoq at all: SQLite's batched commit rate on this disk, the same
//!   durability as `sqlite` (WAL, `synchronous=FULL`, or `NORMAL` as above), one connection,
//!   `commands` transactions of `aggregates` event-shaped rows each (one prepared insert per
//!   row, each row of its own stream as in the workload): SQLite's own bound on evoq's
//!   `sqlite` figure, for this row shape and its index on (stream, version).
//! - `sqlite-fsync-probe`: the same rows and commits, every row of one stream, so that each
//!   commit appends its index entries in order instead of touching a page per stream: the bound
//!   of the disk's batched sync (how many rows its commits can carry), without the cost of an
//!   index that a thousand streams spread over the file.
//! - `sqlite-recent-index-probe` / `sqlite-merged-index-probe` (not part of `all`; a third
//!   argument, default 16,384, sets how many events a merge waits for): the `sqlite-probe` rows
//!   without the index on (stream, version) in the events table; instead a `stream_index` table
//!   filled in (stream, version) order by the commit that brings the unmerged events to that
//!   many, so that a stream's index page is written once per merge, not once per commit. In the
//!   `recent` one every commit also writes its entries into a small `stream_recent` index that
//!   the merge empties (every event stays reachable through an index, as a store needs); the
//!   `merged` one leaves the unmerged events unindexed (the bound of the idea). What a store
//!   with a lazily merged stream index would gain.
//!
//! - `decisions`: on each store (memory, SQLite, PostgreSQL), the workload through the
//!   aggregate path, then the same number of commands decided by a decision (`ledger.rs`: each
//!   command reads its boundary's events across streams and appends under the condition that
//!   none changed), then by the same decision with its model kept per account
//!   (`#[decision(cached)]`), each on a fresh store, and the ratios (not part of `all`; a fourth
//!   argument, `memory`, `sqlite` or `postgres`, runs one store only).
//!
//! `cargo run --release -p evoq-bench --bin stores [memory|sqlite|postgres|pg-probe|sqlite-probe|sqlite-fsync-probe|sqlite-recent-index-probe|sqlite-merged-index-probe|decisions|all] [aggregates] [commands] [merge every]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use evoq::prelude::*;
use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq::store::sqlite::{Durability, SqliteOptions, SqliteStore};
use evoq::{EventStore, StoreError};
use evoq_bench::bank::{Deposit, OpenAccount, account_id};
use evoq_bench::ledger::{Credit, CreditCached};

/// What one run measured.
struct Measured {
    rate: f64,
    elapsed: Duration,
    /// Median and 99th percentile of one dispatch, from the call to its return.
    p50: Duration,
    p99: Duration,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "in {:.2?}: {:>9.0} commands/s, p50 {:.0} µs, p99 {:.0} µs",
            self.elapsed,
            self.rate,
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6
        )
    }
}

/// Runs the bank workload on `store`: each aggregate opened, then deposits.
async fn run(store: Arc<dyn EventStore>, aggregates: usize, commands: usize) -> Measured {
    drive(store, aggregates, commands, |app, account, i| async move {
        if i == 0 {
            app.dispatch(OpenAccount {
                account,
                initial_balance: 0,
            })
            .await
            .expect("open");
        } else {
            app.dispatch(Deposit { account, amount: 1 })
                .await
                .expect("deposit");
        }
    })
    .await
}

/// The same workload decided by a decision: each command reads its account's credits across
/// streams (all of them, or, `cached`, those its kept model has not seen) and appends under the
/// condition that none changed.
async fn run_decisions(
    store: Arc<dyn EventStore>,
    aggregates: usize,
    commands: usize,
    cached: bool,
) -> Measured {
    drive(
        store,
        aggregates,
        commands,
        move |app, account, _| async move {
            let done = match cached {
                true => app
                    .dispatch(CreditCached { account, amount: 1 })
                    .await
                    .map(drop),
                false => app.dispatch(Credit { account, amount: 1 }).await.map(drop),
            };
            done.expect("credit");
        },
    )
    .await
}

/// Starts a runtime on `store` and sends `commands` commands (`send(app, account, i)`) from one
/// task per aggregate, all at once; the rate and the latencies of one dispatch.
async fn drive<F, Fut>(
    store: Arc<dyn EventStore>,
    aggregates: usize,
    commands: usize,
    send: F,
) -> Measured
where
    F: Fn(Arc<Evoq>, String, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let app = Arc::new(
        Evoq::builder()
            .shared_store(store)
            .start()
            .await
            .expect("start the runtime"),
    );
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(aggregates);
    for a in 0..aggregates {
        let app = Arc::clone(&app);
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(commands);
            let account = account_id(a);
            for i in 0..commands {
                let sent = Instant::now();
                send(Arc::clone(&app), account.clone(), i).await;
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(aggregates * commands);
    for task in tasks {
        latencies.extend(task.await.expect("a dispatcher failed"));
    }
    let elapsed = started.elapsed();
    app.stop().await;
    latencies.sort_unstable();
    let at = |q: usize| latencies[(latencies.len() * q / 100).min(latencies.len() - 1)];
    Measured {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        elapsed,
        p50: at(50),
        p99: at(99),
    }
}

/// A fresh SQLite store in a temporary directory, at the durability `EVOQ_BENCH_SQLITE_DURABILITY`
/// asks, its label, and the directory to remove.
async fn sqlite_store() -> Result<(SqliteStore, &'static str, std::path::PathBuf), StoreError> {
    let dir = std::env::temp_dir().join(format!("evoq-bench-{}", evoq::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).map_err(|e| StoreError::Backend {
        backend: "bench",
        message: e.to_string(),
    })?;
    let normal = std::env::var("EVOQ_BENCH_SQLITE_DURABILITY").as_deref() == Ok("normal");
    let (durability, label) = if normal {
        (Durability::Normal, "synchronous=NORMAL")
    } else {
        (Durability::Full, "synchronous=FULL")
    };
    let store = SqliteStore::open_with(
        dir.join("events.db"),
        SqliteOptions::default().durability(durability),
    )
    .await?;
    Ok((store, label, dir))
}

/// A fresh PostgreSQL schema's store, and the URL and schema to drop it.
async fn postgres_store() -> Result<(PostgresStore, String, String), StoreError> {
    let url = std::env::var("EVOQ_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("evoq_bench_{}", evoq::Uuid::now_v7().simple());
    let store =
        PostgresStore::connect_with(&url, PostgresOptions::default().schema(&*schema)).await?;
    Ok((store, url, schema))
}

/// Drops `schema` with `psql` (the benchmark has no SQL client of its own).
fn drop_schema(url: &str, schema: &str) {
    if let Ok(status) = std::process::Command::new("psql")
        .args([
            url,
            "-qc",
            &format!("SET client_min_messages = warning; DROP SCHEMA \"{schema}\" CASCADE"),
        ])
        .status()
        && !status.success()
    {
        eprintln!("could not drop schema {schema}");
    }
}

/// The decisions against the aggregate path, in one run per store: each on a fresh store.
async fn decisions(
    aggregates: usize,
    commands: usize,
    only: Option<&str>,
) -> Result<(), StoreError> {
    for store in ["memory", "sqlite", "postgres"] {
        if only.is_some_and(|only| only != store) {
            continue;
        }
        let mut figures = Vec::new();
        for path in [Path::Aggregates, Path::Decisions, Path::Cached] {
            let (measured, cleanup): (Measured, Box<dyn FnOnce()>) = match store {
                "memory" => {
                    let store: Arc<dyn EventStore> =
                        Arc::new(evoq::store::memory::InMemoryStore::new());
                    (
                        measure(store, aggregates, commands, path).await,
                        Box::new(|| {}),
                    )
                }
                "sqlite" => {
                    let (store, _, dir) = sqlite_store().await?;
                    let measured = measure(Arc::new(store), aggregates, commands, path).await;
                    (
                        measured,
                        Box::new(move || drop(std::fs::remove_dir_all(&dir))),
                    )
                }
                _ => {
                    let (store, url, schema) = postgres_store().await?;
                    let measured = measure(Arc::new(store), aggregates, commands, path).await;
                    (measured, Box::new(move || drop_schema(&url, &schema)))
                }
            };
            cleanup();
            println!(
                "{store:<8} {:<10}: {aggregates} boundaries x {commands} commands {measured}",
                path.name()
            );
            figures.push(measured.rate);
        }
        println!(
            "{store:<8} decisions / aggregates: {:.2}, cached decisions / aggregates: {:.2}",
            figures[1] / figures[0],
            figures[2] / figures[0]
        );
    }
    Ok(())
}

/// The paths `decisions` compares.
#[derive(Clone, Copy)]
enum Path {
    Aggregates,
    Decisions,
    Cached,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Aggregates => "aggregates",
            Path::Decisions => "decisions",
            Path::Cached => "cached",
        }
    }
}

/// [`run`] or [`run_decisions`].
async fn measure(
    store: Arc<dyn EventStore>,
    aggregates: usize,
    commands: usize,
    path: Path,
) -> Measured {
    match path {
        Path::Aggregates => run(store, aggregates, commands).await,
        Path::Decisions => run_decisions(store, aggregates, commands, false).await,
        Path::Cached => run_decisions(store, aggregates, commands, true).await,
    }
}

async fn sqlite(aggregates: usize, commands: usize) -> Result<(), StoreError> {
    let (store, label, dir) = sqlite_store().await?;
    let measured = run(Arc::new(store), aggregates, commands).await;
    println!("sqlite   ({label}): {aggregates} aggregates x {commands} commands {measured}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn postgres(aggregates: usize, commands: usize) -> Result<(), StoreError> {
    let (store, url, schema) = postgres_store().await?;
    let measured = run(Arc::new(store), aggregates, commands).await;
    println!(
        "postgres (synchronous_commit=on): {aggregates} aggregates x {commands} commands {measured}"
    );
    drop_schema(&url, &schema);
    Ok(())
}

/// PostgreSQL alone: `transactions` commits of one insert of `rows` event-shaped rows each, on
/// one connection; rows per second.
async fn pg_probe(rows: usize, transactions: usize) -> Result<(), tokio_postgres::Error> {
    let url = std::env::var("EVOQ_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let schema = format!("evoq_probe_{}", evoq::Uuid::now_v7().simple());
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.events (
                 position BIGINT PRIMARY KEY, stream_id TEXT NOT NULL, version BIGINT NOT NULL,
                 event_id UUID NOT NULL, event_type TEXT NOT NULL, schema_version BIGINT NOT NULL,
                 data BYTEA NOT NULL, metadata BYTEA NOT NULL, recorded_at BIGINT NOT NULL,
                 UNIQUE (stream_id, version))"
        ))
        .await?;
    let insert = format!(
        "INSERT INTO {schema}.events SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::UUID[], $5::TEXT[], $6::BIGINT[], $7::BYTEA[], $8::BYTEA[], $9::BIGINT[])"
    );
    let data = br#"{"account":"account-000042","amount":1}"#.to_vec();
    let metadata = br#"{"command_id":"0190a5e4-0000-7000-8000-000000000000"}"#.to_vec();
    let started = Instant::now();
    let mut position = 0i64;
    for version in 1..=transactions as i64 {
        let mut columns = (
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
            Vec::with_capacity(rows),
        );
        for row in 0..rows {
            position += 1;
            columns.0.push(position);
            columns.1.push(account_id(row));
            columns.2.push(version);
            columns.3.push(evoq::Uuid::now_v7());
            columns.4.push("MoneyDeposited".to_owned());
            columns.5.push(1i64);
            columns.6.push(data.clone());
            columns.7.push(metadata.clone());
            columns.8.push(1_700_000_000_000_000_000i64);
        }
        let transaction = client.transaction().await?;
        transaction
            .execute(
                &insert,
                &[
                    &columns.0, &columns.1, &columns.2, &columns.3, &columns.4, &columns.5,
                    &columns.6, &columns.7, &columns.8,
                ],
            )
            .await?;
        transaction.commit().await?;
    }
    let elapsed = started.elapsed();
    let total = (rows * transactions) as f64;
    println!(
        "pg-probe (PostgreSQL alone, one connection): {transactions} commits of {rows} rows in {elapsed:.2?}: {:>9.0} rows/s",
        total / elapsed.as_secs_f64()
    );
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// The streams of the rows of a SQLite probe.
#[derive(Clone, Copy)]
enum ProbeStreams {
    /// Each row of a commit in a stream of its own (as the workload's accounts).
    OnePerRow,
    /// Every row in one stream: the index on (stream, version) grows at its end only.
    One,
}

/// How a SQLite probe keeps its index on (stream, version).
#[derive(Clone, Copy)]
enum ProbeIndex {
    /// In the events table (`UNIQUE (stream_id, version)`), written by every commit.
    Inline,
    /// In a table of its own, filled from the events in (stream, version) order by the commit
    /// that brings the unmerged events to this many: a stream's index page is then written
    /// once per merge instead of once per commit.
    MergedEvery(usize),
    /// The same, the unmerged entries kept meanwhile in a small index table of their own that
    /// every commit writes (so that every event is found through an index at any time), and
    /// moved to the large one by the merge.
    RecentMergedEvery(usize),
}

/// SQLite alone: `transactions` commits of `rows` event-shaped rows each, on one connection in
/// WAL mode with the durability of the `sqlite` run; rows per second.
fn sqlite_probe(
    rows: usize,
    transactions: usize,
    streams: ProbeStreams,
    index: ProbeIndex,
) -> rusqlite::Result<()> {
    let dir = std::env::temp_dir().join(format!("evoq-probe-{}", evoq::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let normal = std::env::var("EVOQ_BENCH_SQLITE_DURABILITY").as_deref() == Ok("normal");
    let label = if normal { "NORMAL" } else { "FULL" };
    let mut conn = rusqlite::Connection::open(dir.join("probe.db"))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    let (inline, index_tables) = match index {
        ProbeIndex::Inline => (", UNIQUE (stream_id, version)", ""),
        ProbeIndex::MergedEvery(_) | ProbeIndex::RecentMergedEvery(_) => (
            "",
            "CREATE TABLE stream_index (
                 stream_id TEXT NOT NULL, version INTEGER NOT NULL, position INTEGER NOT NULL,
                 PRIMARY KEY (stream_id, version)) WITHOUT ROWID;
             CREATE TABLE stream_recent (
                 stream_id TEXT NOT NULL, version INTEGER NOT NULL, position INTEGER NOT NULL,
                 PRIMARY KEY (stream_id, version)) WITHOUT ROWID;",
        ),
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {label};
         CREATE TABLE events (
             position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, version INTEGER NOT NULL,
             event_id BLOB NOT NULL, event_type TEXT NOT NULL, schema_version INTEGER NOT NULL,
             data BLOB NOT NULL, metadata BLOB NOT NULL, recorded_at INTEGER NOT NULL{inline});
         {index_tables}"
    ))?;
    let mut merged = 0i64;
    let data = br#"{"account":"account-000042","amount":1}"#;
    let metadata = br#"{"command_id":"0190a5e4-0000-7000-8000-000000000000"}"#;
    let started = Instant::now();
    let mut position = 0i64;
    for version in 1..=transactions as i64 {
        let transaction = conn.transaction()?;
        {
            let mut insert = transaction
                .prepare_cached("INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")?;
            for row in 0..rows {
                position += 1;
                let (stream, version) = match streams {
                    ProbeStreams::OnePerRow => (account_id(row), version),
                    ProbeStreams::One => (account_id(0), position),
                };
                insert.execute(rusqlite::params![
                    position,
                    stream,
                    version,
                    evoq::Uuid::now_v7().as_bytes().as_slice(),
                    "MoneyDeposited",
                    1,
                    data.as_slice(),
                    metadata.as_slice(),
                    1_700_000_000_000_000_000i64
                ])?;
                if let ProbeIndex::RecentMergedEvery(_) = index {
                    transaction
                        .prepare_cached(
                            "INSERT INTO stream_recent (stream_id, version, position) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(rusqlite::params![stream, version, position])?;
                }
            }
            let every = match index {
                ProbeIndex::Inline => None,
                ProbeIndex::MergedEvery(every) | ProbeIndex::RecentMergedEvery(every) => {
                    Some(every)
                }
            };
            if let Some(every) = every
                && position - merged >= every as i64
            {
                match index {
                    ProbeIndex::RecentMergedEvery(_) => transaction.execute_batch(
                        "INSERT INTO stream_index SELECT * FROM stream_recent;
                         DELETE FROM stream_recent;",
                    )?,
                    _ => {
                        transaction
                            .prepare_cached(
                                "INSERT INTO stream_index (stream_id, version, position)
                                 SELECT stream_id, version, position FROM events WHERE position > ?1
                                 ORDER BY stream_id, version",
                            )?
                            .execute([merged])?;
                    }
                }
                merged = position;
            }
        }
        transaction.commit()?;
    }
    let elapsed = started.elapsed();
    println!(
        "{} (SQLite alone, synchronous={label}): {transactions} commits of {rows} rows in {elapsed:.2?}: {:>9.0} rows/s",
        match (streams, index) {
            (ProbeStreams::OnePerRow, ProbeIndex::Inline) => "sqlite-probe".to_owned(),
            (ProbeStreams::One, ProbeIndex::Inline) => "sqlite-fsync-probe".to_owned(),
            (_, ProbeIndex::MergedEvery(every)) =>
                format!("sqlite-merged-index-probe (merged every {every} events)"),
            (_, ProbeIndex::RecentMergedEvery(every)) =>
                format!("sqlite-recent-index-probe (merged every {every} events)"),
        },
        (rows * transactions) as f64 / elapsed.as_secs_f64()
    );
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("all", String::as_str).to_owned();
    let aggregates = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let commands = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("{cores} cores; each command acknowledged after its commit");
    if matches!(which.as_str(), "memory" | "all") {
        let store = evoq::store::memory::InMemoryStore::new();
        let measured = run(Arc::new(store), aggregates, commands).await;
        println!(
            "memory   (baseline, nothing durable): {aggregates} aggregates x {commands} commands {measured}"
        );
    }
    if matches!(which.as_str(), "sqlite" | "all")
        && let Err(error) = sqlite(aggregates, commands).await
    {
        eprintln!("sqlite: {error}");
    }
    if matches!(which.as_str(), "postgres" | "all")
        && let Err(error) = postgres(aggregates, commands).await
    {
        eprintln!("postgres: {error}");
    }
    if matches!(which.as_str(), "sqlite-probe" | "all")
        && let Err(error) = sqlite_probe(
            aggregates,
            commands,
            ProbeStreams::OnePerRow,
            ProbeIndex::Inline,
        )
    {
        eprintln!("sqlite-probe: {error}");
    }
    if matches!(which.as_str(), "sqlite-fsync-probe" | "all")
        && let Err(error) =
            sqlite_probe(aggregates, commands, ProbeStreams::One, ProbeIndex::Inline)
    {
        eprintln!("sqlite-fsync-probe: {error}");
    }
    let merged_index = match which.as_str() {
        "sqlite-recent-index-probe" => Some(ProbeIndex::RecentMergedEvery as fn(usize) -> _),
        "sqlite-merged-index-probe" => Some(ProbeIndex::MergedEvery as fn(usize) -> _),
        _ => None,
    };
    if let Some(index) = merged_index {
        let every = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(16_384);
        if let Err(error) =
            sqlite_probe(aggregates, commands, ProbeStreams::OnePerRow, index(every))
        {
            eprintln!("{which}: {error}");
        }
    }
    if which == "decisions"
        && let Err(error) = decisions(aggregates, commands, args.get(3).map(String::as_str)).await
    {
        eprintln!("decisions: {error}");
    }
    if matches!(which.as_str(), "pg-probe" | "all")
        && let Err(error) = pg_probe(aggregates, commands).await
    {
        eprintln!("pg-probe: {error}");
    }
}
