//! The bank-account domain the examples share: events, commands, the domain error and the
//! aggregate. Each example includes it with `#[path = "bank/domain.rs"] mod domain;`.

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct AccountOpened {
    pub(crate) account: String,
    pub(crate) initial_balance: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct MoneyDeposited {
    pub(crate) account: String,
    pub(crate) amount: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct MoneyWithdrawn {
    pub(crate) account: String,
    pub(crate) amount: u64,
}

#[derive(Command, Debug, Clone)]
pub(crate) struct OpenAccount {
    #[aggregate_id]
    pub(crate) account: String,
    pub(crate) initial_balance: u64,
}

#[derive(Command, Debug, Clone)]
pub(crate) struct Deposit {
    #[aggregate_id]
    pub(crate) account: String,
    pub(crate) amount: u64,
}

#[derive(Command, Debug, Clone)]
pub(crate) struct Withdraw {
    #[aggregate_id]
    pub(crate) account: String,
    pub(crate) amount: u64,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum BankError {
    #[error("account `{0}` is already open")]
    AlreadyOpen(String),
    #[error("account `{0}` is not open")]
    NotOpen(String),
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
}

#[derive(Default, Serialize, Deserialize)]
pub(crate) struct BankAccount {
    pub(crate) open: bool,
    pub(crate) balance: u64,
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
