use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited;

// No `#[derive(Command)]`.
struct Deposit {
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
    fn deposit(&self, cmd: &Deposit) -> Result<MoneyDeposited, Closed> {
        let _ = &cmd.account;
        Ok(MoneyDeposited)
    }

    #[apply]
    fn deposited(&mut self, _: &MoneyDeposited) {}
}

fn main() {}
