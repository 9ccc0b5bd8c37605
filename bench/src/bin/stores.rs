//! Append throughput of the durable stores through the whole runtime: `aggregates` bank
//! accounts (default 64) each get `commands` commands (default 100: one open, then deposits)
//! from a task of their own, all at once, through `Evoq::dispatch`. Every command is
//! acknowledged only once its event is committed.
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
//! `cargo run --release -p evoq-bench --bin stores [memory|sqlite|postgres|pg-probe|all] [aggregates] [commands]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use evoq::prelude::*;
use evoq::store::postgres::{PostgresOptions, PostgresStore};
use evoq::store::sqlite::{Durability, SqliteOptions, SqliteStore};
use evoq::{EventStore, StoreError};
use evoq_bench::bank::{Deposit, OpenAccount, account_id};

/// Runs the workload on `store`; returns commands per second.
async fn run(store: Arc<dyn EventStore>, aggregates: usize, commands: usize) -> (f64, Duration) {
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
        tasks.push(tokio::spawn(async move {
            let account = account_id(a);
            app.dispatch(OpenAccount {
                account: account.clone(),
                initial_balance: 0,
            })
            .await
            .expect("open");
            for _ in 1..commands {
                app.dispatch(Deposit {
                    account: account.clone(),
                    amount: 1,
                })
                .await
                .expect("deposit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a dispatcher failed");
    }
    let elapsed = started.elapsed();
    app.stop().await;
    let total = (aggregates * commands) as f64;
    (total / elapsed.as_secs_f64(), elapsed)
}

async fn sqlite(aggregates: usize, commands: usize) -> Result<(), StoreError> {
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
    let (rate, elapsed) = run(Arc::new(store), aggregates, commands).await;
    println!(
        "sqlite   ({label}): {aggregates} aggregates x {commands} commands in {elapsed:.2?}: {rate:>9.0} commands/s"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn postgres(aggregates: usize, commands: usize) -> Result<(), StoreError> {
    let url = std::env::var("EVOQ_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("evoq_bench_{}", evoq::Uuid::now_v7().simple());
    let store =
        PostgresStore::connect_with(&url, PostgresOptions::default().schema(&*schema)).await?;
    let (rate, elapsed) = run(Arc::new(store), aggregates, commands).await;
    println!(
        "postgres (synchronous_commit=on): {aggregates} aggregates x {commands} commands in {elapsed:.2?}: {rate:>9.0} commands/s"
    );
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
        let (rate, elapsed) = run(Arc::new(store), aggregates, commands).await;
        println!(
            "memory   (baseline, nothing durable): {aggregates} aggregates x {commands} commands in {elapsed:.2?}: {rate:>9.0} commands/s"
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
    if matches!(which.as_str(), "pg-probe" | "all")
        && let Err(error) = pg_probe(aggregates, commands).await
    {
        eprintln!("pg-probe: {error}");
    }
}
