//! A projection over the bank account: one summary per account (balance, deposits,
//! withdrawals), kept in the in-memory read model, read right after each dispatch with
//! `wait_for`, and rebuilt from the stored events.
//!
//! Run it with `cargo run --example account_summary`.

/// The bank-account domain: events, commands, `BankError` and the `BankAccount` aggregate.
#[path = "bank/domain.rs"]
mod domain;

use domain::*;
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

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
    app.wait_for::<AccountSummary>(done.token).await?;
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
