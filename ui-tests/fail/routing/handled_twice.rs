use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited;

#[derive(Command)]
struct Deposit {
    #[aggregate_id]
    account: String,
}

#[derive(Debug, thiserror::Error)]
#[error("closed")]
struct Closed;

#[derive(Default)]
struct BankAccount;

#[aggregate]
impl BankAccount {
    #[handles]
    fn deposit(&self, _: &Deposit) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited)
    }

    #[handles]
    fn deposit_again(&self, _: &Deposit) -> Result<(), Closed> {
        Ok(())
    }

    #[apply]
    fn deposited(&mut self, _: &MoneyDeposited) {}
}

fn main() {}
