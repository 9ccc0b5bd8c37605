//! A projection over the bank account: one summary per account (balance, deposits,
//! withdrawals), kept in the in-memory read model, read right after each dispatch with
//! `wait_for`, and rebuilt from the stored events.
//!
//! Run it with `cargo run --example account_summary`.

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

/// What the read model keeps per account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Summary {
    balance: u64,
    deposits: u32,
    withdrawals: u32,
    /// The global position of the last event applied: a replayed event is ignored.
    last_position: u64,
}

/// The projection: it writes `account/<id>` keys of its read model.
struct AccountSummary {
    summaries: InMemoryReadModel,
}

impl AccountSummary {
    fn update(
        &self,
        account: &str,
        meta: &EventMeta,
        change: impl FnOnce(&mut Summary),
    ) -> Result<(), ProjectionError> {
        let key = format!("account/{account}");
        let mut summary: Summary = self.summaries.get(&key)?.unwrap_or_default();
        if meta.global_position() <= summary.last_position {
            return Ok(()); // delivered again after a crash: already applied
        }
        change(&mut summary);
        summary.last_position = meta.global_position();
        self.summaries.put(key, &summary)?;
        Ok(())
    }
}

#[projection(name = "account_summary", read_model = summaries)]
impl AccountSummary {
    // The checkpoint is saved right after each update; a crash between the two delivers the
    // event again, which `update` recognises by its position.
    #[handles]
    async fn opened(&mut self, e: &AccountOpened, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.update(&e.account, meta, |summary| {
            summary.balance = e.initial_balance;
        })
    }

    #[handles]
    async fn deposited(
        &mut self,
        e: &MoneyDeposited,
        meta: &EventMeta,
    ) -> Result<(), ProjectionError> {
        self.update(&e.account, meta, |summary| {
            summary.balance += e.amount;
            summary.deposits += 1;
        })
    }

    #[handles]
    async fn withdrawn(
        &mut self,
        e: &MoneyWithdrawn,
        meta: &EventMeta,
    ) -> Result<(), ProjectionError> {
        self.update(&e.account, meta, |summary| {
            summary.balance -= e.amount;
            summary.withdrawals += 1;
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let summaries = InMemoryReadModel::new();
    let app = Evoq::builder()
        .projection(AccountSummary {
            summaries: summaries.clone(),
        })
        .start()
        .await?;

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

    // Read your own writes: wait until the projection has processed the last event.
    let position = done.position.unwrap_or_default();
    app.wait_for("account_summary", position).await?;
    for (key, summary) in summaries.list::<Summary>("account/")? {
        println!("{key}: {summary:?}");
    }

    // Rebuild: clear the read model and replay every stored event of its types.
    let before = summaries.to_map();
    let reached = app.rebuild("account_summary").await?;
    println!(
        "rebuilt up to position {reached}; same read model: {}",
        summaries.to_map() == before
    );

    app.stop().await;
    Ok(())
}
