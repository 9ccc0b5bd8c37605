use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited;

#[derive(Debug, thiserror::Error)]
#[error("closed")]
struct Closed;

#[derive(Default)]
struct BankAccount;

#[aggregate]
impl BankAccount {
    #[handles]
    fn deposit(&self) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited)
    }

    #[apply]
    fn deposited(&mut self, _: &MoneyDeposited) {}
}

fn main() {}
