//! The bank account of the workload on cqrs-es 0.5: state, commands, events and rules, shared
//! by the in-memory peer (this package) and the PostgreSQL one (`bench/postgres-es`, through
//! `#[path]`), so both run the same aggregate.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// The account's state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BankAccount {
    balance: i64,
}

#[derive(Debug, Deserialize)]
pub enum BankAccountCommand {
    OpenAccount { initial_balance: i64 },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BankAccountEvent {
    AccountOpened { initial_balance: i64 },
    MoneyDeposited { amount: i64 },
    MoneyWithdrawn { amount: i64 },
}

impl DomainEvent for BankAccountEvent {
    fn event_type(&self) -> String {
        match self {
            BankAccountEvent::AccountOpened { .. } => "AccountOpened",
            BankAccountEvent::MoneyDeposited { .. } => "MoneyDeposited",
            BankAccountEvent::MoneyWithdrawn { .. } => "MoneyWithdrawn",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: i64, requested: i64 },
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "BankAccount";
    type Command = BankAccountCommand;
    type Event = BankAccountEvent;
    type Error = BankError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            BankAccountCommand::OpenAccount { initial_balance } => {
                BankAccountEvent::AccountOpened { initial_balance }
            }
            BankAccountCommand::Deposit { amount } => BankAccountEvent::MoneyDeposited { amount },
            BankAccountCommand::Withdraw { amount } => {
                if amount > self.balance {
                    return Err(BankError::InsufficientFunds {
                        balance: self.balance,
                        requested: amount,
                    });
                }
                BankAccountEvent::MoneyWithdrawn { amount }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BankAccountEvent::AccountOpened { initial_balance } => self.balance = initial_balance,
            BankAccountEvent::MoneyDeposited { amount } => self.balance += amount,
            BankAccountEvent::MoneyWithdrawn { amount } => self.balance -= amount,
        }
    }
}
