//! The bank account of the README, plus commands that exercise the runtime's edge cases.

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AccountOpened {
    pub account: String,
    pub initial_balance: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MoneyDeposited {
    pub account: String,
    pub amount: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MoneyWithdrawn {
    pub account: String,
    pub amount: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AccountClosed {
    pub account: String,
}

#[derive(Command, Debug, Clone)]
pub struct OpenAccount {
    #[aggregate_id]
    pub account: String,
    pub initial_balance: u64,
}

#[derive(Command, Debug, Clone)]
pub struct Deposit {
    #[aggregate_id]
    pub account: String,
    pub amount: u64,
}

#[derive(Command, Debug, Clone)]
pub struct Withdraw {
    #[aggregate_id]
    pub account: String,
    pub amount: u64,
}

#[derive(Command, Debug, Clone)]
pub struct CloseAccount {
    #[aggregate_id]
    pub account: String,
}

/// Deposits `times` times `amount` in one command: several events from one handler.
#[derive(Command, Debug, Clone)]
pub struct DepositMany {
    #[aggregate_id]
    pub account: String,
    pub amount: u64,
    pub times: u32,
}

/// Does nothing: a handler that returns no events.
#[derive(Command, Debug, Clone)]
pub struct Audit {
    #[aggregate_id]
    pub account: String,
}

/// Panics inside the handler.
#[derive(Command, Debug, Clone)]
pub struct Explode {
    #[aggregate_id]
    pub account: String,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BankError {
    #[error("account `{0}` is already open")]
    AlreadyOpen(String),
    #[error("account `{0}` is not open")]
    NotOpen(String),
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
}

#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankAccount {
    pub open: bool,
    pub balance: u64,
    pub deposits: u64,
}

impl BankAccount {
    fn require_open(&self, account: &str) -> Result<(), BankError> {
        if self.open {
            Ok(())
        } else {
            Err(BankError::NotOpen(account.to_owned()))
        }
    }
}

#[aggregate]
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
        self.require_open(&cmd.account)?;
        Ok(MoneyDeposited {
            account: cmd.account.clone(),
            amount: cmd.amount,
        })
    }

    #[handles]
    fn withdraw(&self, cmd: &Withdraw) -> Result<MoneyWithdrawn, BankError> {
        self.require_open(&cmd.account)?;
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

    #[handles]
    fn close(&self, cmd: &CloseAccount) -> Result<Option<AccountClosed>, BankError> {
        // Closing a closed account is a no-op, not an error.
        Ok(self.open.then(|| AccountClosed {
            account: cmd.account.clone(),
        }))
    }

    #[handles]
    fn deposit_many(&self, cmd: &DepositMany) -> Result<Vec<MoneyDeposited>, BankError> {
        self.require_open(&cmd.account)?;
        Ok((0..cmd.times)
            .map(|_| MoneyDeposited {
                account: cmd.account.clone(),
                amount: cmd.amount,
            })
            .collect())
    }

    #[handles]
    fn audit(&self, _cmd: &Audit) -> Result<(), BankError> {
        Ok(())
    }

    #[handles]
    fn explode(&self, cmd: &Explode) -> Result<(), BankError> {
        panic!("boom in the handler of account {}", cmd.account)
    }

    #[apply]
    fn opened(&mut self, event: &AccountOpened) {
        self.open = true;
        self.balance = event.initial_balance;
    }

    #[apply]
    fn deposited(&mut self, event: &MoneyDeposited) {
        self.balance += event.amount;
        self.deposits += 1;
    }

    #[apply]
    fn withdrawn(&mut self, event: &MoneyWithdrawn) {
        self.balance -= event.amount;
    }

    #[apply]
    fn closed(&mut self, _event: &AccountClosed) {
        self.open = false;
    }
}

/// A second aggregate type, addressed by the same ids as `BankAccount`.
#[derive(Default, Debug)]
pub struct LoyaltyCard {
    pub points: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PointsEarned {
    pub account: String,
    pub points: u64,
}

#[derive(Command, Debug, Clone)]
pub struct EarnPoints {
    #[aggregate_id]
    pub account: String,
    pub points: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("loyalty cards never reject")]
pub struct LoyaltyError;

#[aggregate]
impl LoyaltyCard {
    #[handles]
    fn earn(&self, cmd: &EarnPoints) -> Result<PointsEarned, LoyaltyError> {
        Ok(PointsEarned {
            account: cmd.account.clone(),
            points: cmd.points,
        })
    }

    #[apply]
    fn earned(&mut self, event: &PointsEarned) {
        self.points += event.points;
    }
}

/// The stream id of bank account `id`.
pub fn account_stream(id: &str) -> String {
    evoq::stream_id("BankAccount", id)
}

/// Opens account `id` with a zero balance.
pub fn open(account: &str) -> OpenAccount {
    OpenAccount {
        account: account.into(),
        initial_balance: 0,
    }
}

/// Deposits `amount` to account `id`.
pub fn deposit(account: &str, amount: u64) -> Deposit {
    Deposit {
        account: account.into(),
        amount,
    }
}

/// How many events the stream of account `id` holds.
pub async fn stored(store: &std::sync::Arc<dyn evoq::EventStore>, account: &str) -> usize {
    store
        .read_stream(
            &account_stream(account),
            1,
            evoq::store::Direction::Forward,
            usize::MAX,
        )
        .await
        .expect("the stream reads")
        .len()
}

/// Two dispatch results are the same result: version, position, command id and events.
pub fn assert_same(a: &Dispatched<BankAccount>, b: &Dispatched<BankAccount>) {
    assert_eq!(a.version, b.version, "the same version");
    assert_eq!(a.position, b.position, "the same position");
    assert_eq!(a.command_id, b.command_id, "the same command id");
    assert_eq!(a.events, b.events, "the same events");
}
