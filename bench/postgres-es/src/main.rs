//! The durable-store workload of `stores postgres` (`bench/src/bin/stores.rs`) on cqrs-es 0.5
//! with its PostgreSQL backend, postgres-es 0.5: `A` bank accounts, each driven by a tokio task
//! of its own that executes one `OpenAccount` and then `N - 1` `Deposit { amount: 1 }` commands
//! one after the other through `CqrsFramework::execute`, all tasks started together; every
//! command returns only once its event is committed. The clock runs from the start of the tasks
//! until the last one is done; the latency of one command is its `execute` call.
//!
//! ```sh
//! cargo build --release --manifest-path bench/postgres-es/Cargo.toml
//! evoq-bench-postgres-es A N [POOL]
//! ```
//!
//! The server is `EVOQ_BENCH_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`). Each
//! run creates a fresh schema with postgres-es's `events` and `snapshots` tables (its
//! `db/init.sql`), points the pool's `search_path` at it, checks at the end that the schema holds
//! `A * N` events, and drops it. The framework is postgres-es's `postgres_cqrs` as documented:
//! an event store without snapshots, so every command reads its account's whole stream back.
//! `POOL` is the pool's `max_connections`, everything else of the pool is sqlx's default. The
//! connections are plain TCP like those of `stores postgres`, unless the URL has an `sslmode`
//! (sqlx alone would take TLS whenever the server offers it).

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::AggregateError;
use postgres_es::{PostgresCqrs, postgres_cqrs};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection, PgConnection};

/// The pool size when none is given: the fastest of 8, 16, 32 and 64 connections at 64 accounts
/// x 100 commands (2 cores, client and server on one machine): 16, ahead of 32 in 8 paired
/// rounds out of 10 (by 6-9% on a quiet machine) with the lower p99 in every one, and ahead of 8
/// (by 7-28%) and 64 (by 10-33%) in all of them.
const DEFAULT_POOL: u32 = 16;

/// The aggregate of the in-memory cqrs-es peer, the same file: both peers run one bank account.
#[path = "../../cqrs-es/src/bank_account.rs"]
mod bank_account;

use bank_account::{BankAccount, BankAccountCommand, BankError};

/// postgres-es's tables, as its `db/init.sql` defines them (the view table left out: no query
/// runs here).
const TABLES: &str = "
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);";

/// The workload's account id, as `bench/src/workload.rs` spells it: `acct-00000042`.
fn account_id(index: usize) -> String {
    format!("acct-{index:08}")
}

/// One account's commands, one after the other; the latency of each, in nanoseconds.
async fn drive(
    cqrs: Arc<PostgresCqrs<BankAccount>>,
    account: String,
    commands: usize,
) -> Result<Vec<u64>, String> {
    let mut latencies = Vec::with_capacity(commands);
    for i in 0..commands {
        let command = if i == 0 {
            BankAccountCommand::OpenAccount { initial_balance: 0 }
        } else {
            BankAccountCommand::Deposit { amount: 1 }
        };
        let started = Instant::now();
        let result: Result<(), AggregateError<BankError>> = cqrs.execute(&account, command).await;
        latencies.push(started.elapsed().as_nanos() as u64);
        if let Err(error) = result {
            return Err(format!("{account}, command {}: {error}", i + 1));
        }
    }
    Ok(latencies)
}

/// Runs the workload on `pool`; the wall time and every command's latency (sorted).
async fn run(
    pool: sqlx::PgPool,
    accounts: usize,
    commands: usize,
) -> Result<(Duration, Vec<u64>), String> {
    let cqrs = Arc::new(postgres_cqrs(pool, Vec::new(), ()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..accounts)
        .map(|a| tokio::spawn(drive(Arc::clone(&cqrs), account_id(a), commands)))
        .collect();
    let mut latencies = Vec::with_capacity(accounts * commands);
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(account)) => latencies.extend(account),
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(error) => failure = failure.or(Some(format!("a dispatcher failed: {error}"))),
        }
    }
    let elapsed = started.elapsed();
    if let Some(error) = failure {
        return Err(error);
    }
    latencies.sort_unstable();
    Ok((elapsed, latencies))
}

/// The workload in `schema`, which exists and holds the tables: the line to print.
async fn measure(
    options: &PgConnectOptions,
    schema: &str,
    accounts: usize,
    commands: usize,
    pool_size: u32,
) -> Result<String, String> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .connect_with(options.clone().options([("search_path", schema)]))
        .await
        .map_err(|e| format!("cannot open the pool: {e}"))?;
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("SHOW synchronous_commit: {e}"))?;
    let (elapsed, latencies) = run(pool.clone(), accounts, commands).await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("cannot count the events: {e}"))?;
    pool.close().await;
    let expected = accounts * commands;
    if events != expected as i64 {
        return Err(format!(
            "the events table holds {events} events, not {expected}"
        ));
    }
    let at = |q: usize| {
        let index = (latencies.len() * q / 100).min(latencies.len().saturating_sub(1));
        latencies.get(index).map_or(0.0, |l| *l as f64 / 1_000.0)
    };
    let rate = expected as f64 / elapsed.as_secs_f64();
    Ok(format!(
        "postgres-es (synchronous_commit={synchronous_commit}, pool {pool_size}): {accounts} aggregates x {commands} commands in {elapsed:.2?}: {rate:>9.0} commands/s, p50 {:.0} µs, p99 {:.0} µs",
        at(50),
        at(99)
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [a, n] => (a.parse(), n.parse(), Ok(DEFAULT_POOL)),
        [a, n, p] => (a.parse(), n.parse(), p.parse()),
        _ => {
            eprintln!("usage: evoq-bench-postgres-es ACCOUNTS COMMANDS [POOL]");
            return ExitCode::from(2);
        }
    };
    let (accounts, commands, pool_size): (usize, usize, u32) = match parsed {
        (Ok(a), Ok(n), Ok(p)) if a > 0 && n > 0 && p > 0 => (a, n, p),
        _ => {
            eprintln!("usage: evoq-bench-postgres-es ACCOUNTS COMMANDS [POOL] (positive integers)");
            return ExitCode::from(2);
        }
    };
    let url = std::env::var("EVOQ_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let options = match PgConnectOptions::from_str(&url) {
        // `stores postgres` speaks plain TCP (tokio-postgres with `NoTls`) whatever the server
        // offers, where sqlx's default `sslmode=prefer` would take TLS: the same transport
        // unless the URL asks for one.
        Ok(options) if !url.contains("sslmode=") => options.ssl_mode(PgSslMode::Disable),
        Ok(options) => options,
        Err(error) => {
            eprintln!("EVOQ_BENCH_PG_URL {url}: {error}");
            return ExitCode::FAILURE;
        }
    };
    // One connection of its own creates and drops the schema.
    let mut admin = match PgConnection::connect_with(&options).await {
        Ok(connection) => connection,
        Err(error) => {
            eprintln!("cannot connect to {url}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let schema = format!(
        "postgres_es_bench_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let create = format!("CREATE SCHEMA {schema}; SET search_path TO {schema}; {TABLES}");
    if let Err(error) = sqlx::raw_sql(&create).execute(&mut admin).await {
        eprintln!("cannot create schema {schema}: {error}");
        return ExitCode::FAILURE;
    }
    let outcome = measure(&options, &schema, accounts, commands, pool_size).await;
    let drop = format!("SET client_min_messages = warning; DROP SCHEMA {schema} CASCADE");
    if let Err(error) = sqlx::raw_sql(&drop).execute(&mut admin).await {
        eprintln!("could not drop schema {schema}: {error}");
    }
    let _ = admin.close().await;
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("postgres-es: {error}");
            ExitCode::FAILURE
        }
    }
}
