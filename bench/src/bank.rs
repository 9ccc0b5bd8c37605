//! The bank account of the benchmark workload.

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

/// An account was opened.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
pub struct AccountOpened {
    /// Its balance at opening.
    pub initial_balance: i64,
}

/// Money was deposited.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
pub struct MoneyDeposited {
    /// How much.
    pub amount: i64,
}

/// Money was withdrawn.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
pub struct MoneyWithdrawn {
    /// How much.
    pub amount: i64,
}

/// Opens an account.
#[derive(Command, Debug)]
pub struct OpenAccount {
    /// The account.
    #[aggregate_id]
    pub account: String,
    /// Its balance at opening.
    pub initial_balance: i64,
}

/// Deposits money.
#[derive(Command, Debug)]
pub struct Deposit {
    /// The account.
    #[aggregate_id]
    pub account: String,
    /// How much.
    pub amount: i64,
}

/// Withdraws money; rejected when the balance is too small.
#[derive(Command, Debug)]
pub struct Withdraw {
    /// The account.
    #[aggregate_id]
    pub account: String,
    /// How much.
    pub amount: i64,
}

/// The domain error.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The balance is too small.
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds {
        /// The balance.
        balance: i64,
        /// The amount asked for.
        requested: i64,
    },
}

/// The account's state.
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct BankAccount {
    /// The balance.
    pub balance: i64,
}

#[aggregate]
impl BankAccount {
    #[handles]
    fn open(&self, cmd: &OpenAccount) -> Result<AccountOpened, BankError> {
        Ok(AccountOpened {
            initial_balance: cmd.initial_balance,
        })
    }

    #[handles]
    fn deposit(&self, cmd: &Deposit) -> Result<MoneyDeposited, BankError> {
        Ok(MoneyDeposited { amount: cmd.amount })
    }

    #[handles]
    fn withdraw(&self, cmd: &Withdraw) -> Result<MoneyWithdrawn, BankError> {
        if cmd.amount > self.balance {
            return Err(BankError::InsufficientFunds {
                balance: self.balance,
                requested: cmd.amount,
            });
        }
        Ok(MoneyWithdrawn { amount: cmd.amount })
    }

    #[apply]
    fn opened(&mut self, event: &AccountOpened) {
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

/// The workload's account id: `acct-00000042`.
pub fn account_id(index: usize) -> String {
    crate::workload::account_id(index)
}
