//! The bank account: open an account, deposit, withdraw, and see a withdrawal rejected.
//!
//! Run it with `cargo run --example bank_account`.

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct AccountOpened {
    account: String,
    initial_balance: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct MoneyDeposited {
    account: String,
    amount: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct MoneyWithdrawn {
    account: String,
    amount: u64,
}

#[derive(Command, Debug, Clone)]
struct OpenAccount {
    #[aggregate_id]
    account: String,
    initial_balance: u64,
}

#[derive(Command, Debug, Clone)]
struct Deposit {
    #[aggregate_id]
    account: String,
    amount: u64,
}

#[derive(Command, Debug, Clone)]
struct Withdraw {
    #[aggregate_id]
    account: String,
    amount: u64,
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum BankError {
    #[error("account `{0}` is already open")]
    AlreadyOpen(String),
    #[error("account `{0}` is not open")]
    NotOpen(String),
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
}

#[derive(Default, Serialize, Deserialize)]
struct BankAccount {
    open: bool,
    balance: u64,
}

#[aggregate(snapshot_every = 100)]
impl BankAccount {
    #[handles]
    fn open(&self, cmd: &OpenAccount) -> Result<AccountOpened, BankError> {
        if self.open {
            return Err(BankError::AlreadyOpen(cmd.account.clone()));
        }
        Ok(AccountOpened {
            account: cmd.account.clone(),
            initial_balance: cmd.initial_balance,
        })
    }

    #[handles]
    fn deposit(&self, cmd: &Deposit) -> Result<MoneyDeposited, BankError> {
        if !self.open {
            return Err(BankError::NotOpen(cmd.account.clone()));
        }
        Ok(MoneyDeposited {
            account: cmd.account.clone(),
            amount: cmd.amount,
        })
    }

    #[handles]
    fn withdraw(&self, cmd: &Withdraw) -> Result<MoneyWithdrawn, BankError> {
        if !self.open {
            return Err(BankError::NotOpen(cmd.account.clone()));
        }
        if cmd.amount > self.balance {
            return Err(BankError::InsufficientFunds {
                balance: self.balance,
                requested: cmd.amount,
            });
        }
        Ok(MoneyWithdrawn {
            account: cmd.account.clone(),
            amount: cmd.amount,
        })
    }

    #[apply]
    fn opened(&mut self, event: &AccountOpened) {
        self.open = true;
        self.balance = event.initial_balance;
    }

    #[apply]
    fn deposited(&mut self, event: &MoneyDeposited) {
        self.balance += event.amount;
    }

    #[apply]
    fn withdrawn(&mut self, event: &MoneyWithdrawn) {
        self.balance -= event.amount;
    }
}

#[tokio::main]
async fn main() -> Result<(), evoq::Error> {
    // The in-memory store is the default; see the docs of `evoq` for SQLite and PostgreSQL.
    let app = Evoq::builder().start().await?;
    let account = "acc-1".to_owned();

    let opened = app
        .dispatch(OpenAccount {
            account: account.clone(),
            initial_balance: 100,
        })
        .await?;
    println!(
        "opened {account}: version {} {:?}",
        opened.version, opened.events
    );

    let deposited = app
        .command(Deposit {
            account: account.clone(),
            amount: 50,
        })
        .metadata("user", "alice")
        .dispatch()
        .await?;
    println!(
        "deposited 50: version {}, global position {:?}",
        deposited.version, deposited.position
    );

    let withdrawn = app
        .dispatch(Withdraw {
            account: account.clone(),
            amount: 120,
        })
        .await?;
    println!("withdrew 120: version {}", withdrawn.version);

    match app
        .dispatch(Withdraw {
            account: account.clone(),
            amount: 1_000,
        })
        .await
    {
        Err(error) if error.is_rejection() => {
            let reason = error.rejection::<BankError>();
            println!("withdrawing 1000 was rejected: {error}");
            println!("  the domain error: {reason:?}");
        }
        other => println!("unexpected outcome: {other:?}"),
    }

    let stream = evoq::stream_id("BankAccount", &account);
    let stored = app
        .store()
        .read_stream(&stream, 1, evoq::store::Direction::Forward, 100)
        .await?;
    println!("stream `{stream}` holds {} events:", stored.len());
    for event in stored {
        println!(
            "  v{} @{} {} {}",
            event.stream_version,
            event.global_position,
            event.event_type,
            String::from_utf8_lossy(&event.data)
        );
    }
    app.stop().await;
    Ok(())
}
