//! The decision of the `stores decisions` benchmark: the bank workload's deposits, decided
//! across streams instead of by a live aggregate. Each account is a boundary (the events tagged
//! `account:<id>`), read in full for every command, folded into a fresh model, and appended
//! under the condition that none of them changed.

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

/// The most an account may hold; never reached by the benchmark (the check is the work).
pub const CEILING: i64 = i64::MAX / 2;

/// Money was credited to an account.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
pub struct Credited {
    /// The account, the event's tag.
    #[tag("account")]
    pub account: String,
    /// How much.
    pub amount: i64,
}

/// Credits an account, within its ceiling (decided by [`Ledger`]).
#[derive(Command, Debug)]
pub struct Credit {
    /// The account (the stream the event is appended to: `Ledger-<account>`).
    #[aggregate_id]
    pub account: String,
    /// How much.
    pub amount: i64,
}

/// The same, decided by [`CachedLedger`], which keeps each account's model between commands.
#[derive(Command, Debug)]
pub struct CreditCached {
    /// The account (the stream: `CachedLedger-<account>`).
    #[aggregate_id]
    pub account: String,
    /// How much.
    pub amount: i64,
}

/// The rule both ledgers decide by.
fn credit(balance: i64, account: &str, amount: i64) -> Result<Credited, OverCeiling> {
    if balance.saturating_add(amount) > CEILING {
        return Err(OverCeiling);
    }
    Ok(Credited {
        account: account.to_owned(),
        amount,
    })
}

/// The ceiling would be passed.
#[derive(Debug, thiserror::Error)]
#[error("the account would hold more than its ceiling")]
pub struct OverCeiling;

/// An account's balance, from its credits.
#[derive(Default)]
pub struct Ledger {
    balance: i64,
}

#[decision(name = "Ledger")]
impl Ledger {
    /// Decided on every credit of the account.
    #[handles]
    #[query(all_of(types(Credited), tag("account", &command.account)))]
    fn credit(&self, command: &Credit) -> Result<Credited, OverCeiling> {
        credit(self.balance, &command.account, command.amount)
    }

    #[apply]
    fn credited(&mut self, event: &Credited) {
        self.balance += event.amount;
    }
}

/// [`Ledger`] with its model kept per account between commands (`#[decision(cached)]`).
#[derive(Default)]
pub struct CachedLedger {
    balance: i64,
}

#[decision(name = "CachedLedger", cached)]
impl CachedLedger {
    /// Decided on every credit of the account, read once and then kept.
    #[handles]
    #[query(all_of(types(Credited), tag("account", &command.account)))]
    fn credit(&self, command: &CreditCached) -> Result<Credited, OverCeiling> {
        credit(self.balance, &command.account, command.amount)
    }

    #[apply]
    fn credited(&mut self, event: &Credited) {
        self.balance += event.amount;
    }
}
