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
struct Checking;

#[aggregate]
impl Checking {
    #[handles]
    fn deposit(&self, _: &Deposit) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited)
    }

    #[apply]
    fn deposited(&mut self, _: &MoneyDeposited) {}
}

#[derive(Default)]
struct Savings;

#[aggregate]
impl Savings {
    #[handles]
    fn deposit(&self, _: &Deposit) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited)
    }

    #[apply]
    fn deposited(&mut self, _: &MoneyDeposited) {}
}

fn main() {}
