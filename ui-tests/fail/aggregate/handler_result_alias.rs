// A one-parameter `Result` alias hides the error type: the signature must spell both.
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

type BankResult<T> = Result<T, Closed>;

#[derive(Default)]
struct BankAccount;

#[aggregate]
impl BankAccount {
    #[handles]
    fn deposit(&self, _: &Deposit) -> BankResult<MoneyDeposited> {
        Ok(MoneyDeposited)
    }

    #[apply]
    fn deposited(&mut self, _: &MoneyDeposited) {}
}

fn main() {}
