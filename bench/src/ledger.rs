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

/// Credits an account, within its ceiling.
#[derive(Command, Debug)]
pub struct Credit {
    /// The account (the stream the event is appended to: `Ledger-<account>`).
    #[aggregate_id]
    pub account: String,
    /// How much.
    pub amount: i64,
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
        if self.balance.saturating_add(command.amount) > CEILING {
            return Err(OverCeiling);
        }
        Ok(Credited {
            account: command.account.clone(),
            amount: command.amount,
        })
    }

    #[apply]
    fn credited(&mut self, event: &Credited) {
        self.balance += event.amount;
    }
}
