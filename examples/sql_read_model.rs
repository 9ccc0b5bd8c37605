//! A SQL read model over the bank account: one summary row per account (balance, deposits,
//! withdrawals) in a table of the SQLite store's own file, written in the transaction that saves
//! the projection's checkpoint, and served to the caller by a query.
//!
//! The program runs the application twice on the same file, as two runs of a service would:
//! the second run resumes after the checkpoint the first committed with its rows, so it applies
//! only the event stored since, never one of the first run's again (no "last position" check is
//! needed in the projection: each event changes the table exactly once, even across a crash).
//!
//! Run it with `cargo run --example sql_read_model`.

/// The bank-account domain: events, commands, `BankError` and the `BankAccount` aggregate.
#[path = "bank/domain.rs"]
mod domain;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use domain::*;
use evoq::prelude::*;
use evoq::projection::sqlite::rusqlite::{OptionalExtension, params};
use evoq::projection::sqlite::{SqliteReadModel, SqliteReadModelError};
use evoq::store::sqlite::SqliteStore;

/// The projection: it keeps table `summaries` of its read model.
struct AccountSummaries {
    model: SqliteReadModel,
    /// How many events this run applied (to show what a restart does).
    applied: Arc<AtomicU64>,
}

impl AccountSummaries {
    /// Runs `sql` with `account` and `amount` in the event's transaction; the runtime commits
    /// it with the checkpoint.
    async fn apply(
        &self,
        meta: &EventMeta,
        sql: &str,
        account: &str,
        amount: u64,
    ) -> Result<(), ProjectionError> {
        let tx = self.model.begin(meta).await?;
        tx.execute(sql, params![account, amount])?;
        tx.finish()?;
        self.applied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[projection(name = "account_summaries", read_model = model)]
impl AccountSummaries {
    #[handles]
    async fn opened(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), ProjectionError> {
        let sql =
            "INSERT INTO summaries (account, balance, deposits, withdrawals) VALUES (?1, ?2, 0, 0)";
        self.apply(meta, sql, &e.account, e.initial_balance).await
    }

    #[handles]
    async fn deposited(
        &mut self,
        e: &MoneyDeposited,
        meta: &EventMeta,
    ) -> Result<(), ProjectionError> {
        let sql = "UPDATE summaries SET balance = balance + ?2, deposits = deposits + 1 WHERE account = ?1";
        self.apply(meta, sql, &e.account, e.amount).await
    }

    #[handles]
    async fn withdrawn(
        &mut self,
        e: &MoneyWithdrawn,
        meta: &EventMeta,
    ) -> Result<(), ProjectionError> {
        let sql = "UPDATE summaries SET balance = balance - ?2, withdrawals = withdrawals + 1 WHERE account = ?1";
        self.apply(meta, sql, &e.account, e.amount).await
    }
}

/// One account's summary, as the application serves it.
#[derive(Debug, PartialEq)]
struct Summary {
    balance: i64,
    deposits: i64,
    withdrawals: i64,
}

/// Reads an account's summary: committed data, on a connection of its own.
async fn summary(
    model: &SqliteReadModel,
    account: &str,
) -> Result<Option<Summary>, SqliteReadModelError> {
    let account = account.to_owned();
    model
        .read(move |conn| {
            conn.query_row(
                "SELECT balance, deposits, withdrawals FROM summaries WHERE account = ?1",
                [&account],
                |row| {
                    Ok(Summary {
                        balance: row.get(0)?,
                        deposits: row.get(1)?,
                        withdrawals: row.get(2)?,
                    })
                },
            )
            .optional()
        })
        .await
}

/// The application on the file at `path`: the store, the read model (its migrations run once per
/// database), the runtime with the projection; and the projection's count of events applied.
async fn start(
    path: &Path,
) -> Result<(Evoq, SqliteReadModel, Arc<AtomicU64>), Box<dyn std::error::Error>> {
    let store = SqliteStore::open(path).await?;
    let model = SqliteReadModel::builder(&store, "account_summaries")
        .migration(
            "create summaries",
            "CREATE TABLE summaries (
                account     TEXT PRIMARY KEY,
                balance     INTEGER NOT NULL,
                deposits    INTEGER NOT NULL,
                withdrawals INTEGER NOT NULL
            )",
        )
        .tables(["summaries"]) // what `app.rebuild("account_summaries")` clears
        .open()
        .await?;
    let applied = Arc::new(AtomicU64::new(0));
    let app = Evoq::builder()
        .store(store)
        .projection(AccountSummaries {
            model: model.clone(),
            applied: Arc::clone(&applied),
        })
        .start()
        .await?;
    Ok((app, model, applied))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("evoq-sql-read-model-{}", evoq::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bank.db");

    // First run: two accounts, a deposit, a withdrawal.
    let (app, model, applied) = start(&path).await?;
    for account in ["acc-1", "acc-2"] {
        app.dispatch(OpenAccount {
            account: account.into(),
            initial_balance: 100,
        })
        .await?;
    }
    app.dispatch(Deposit {
        account: "acc-1".into(),
        amount: 50,
    })
    .await?;
    let done = app
        .dispatch(Withdraw {
            account: "acc-2".into(),
            amount: 30,
        })
        .await?;
    // Read your own writes: once the projection reached the token, its rows are committed.
    app.wait_for::<AccountSummaries>(done.token).await?;
    for account in ["acc-1", "acc-2"] {
        println!(
            "first run:  {account}: {:?}",
            summary(&model, account).await?
        );
    }
    println!(
        "first run applied {} events",
        applied.load(Ordering::Relaxed)
    );
    app.stop().await;
    drop((app, model));

    // Second run on the same file: the projection resumes after its checkpoint.
    let (app, model, applied) = start(&path).await?;
    let done = app
        .dispatch(Deposit {
            account: "acc-2".into(),
            amount: 5,
        })
        .await?;
    app.wait_for::<AccountSummaries>(done.token).await?;
    let acc_2 = summary(&model, "acc-2").await?;
    println!("second run: acc-2: {acc_2:?}");
    println!(
        "second run applied {} event: the first run's were not applied again",
        applied.load(Ordering::Relaxed)
    );
    assert_eq!(applied.load(Ordering::Relaxed), 1);
    assert_eq!(
        acc_2,
        Some(Summary {
            balance: 75,
            deposits: 1,
            withdrawals: 1
        })
    );

    // A rebuild clears the table and the checkpoint in one transaction, then replays.
    let reached = app.rebuild("account_summaries").await?;
    println!(
        "rebuilt up to position {reached}; acc-2: {:?}",
        summary(&model, "acc-2").await?
    );
    app.stop().await;
    drop((app, model));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
