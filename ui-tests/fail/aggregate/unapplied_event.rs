use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited {
    amount: u64,
}

#[derive(Command)]
struct Deposit {
    #[aggregate_id]
    account: String,
    amount: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("closed")]
struct Closed;

#[derive(Default)]
struct BankAccount {
    open: bool,
}

#[aggregate]
impl BankAccount {
    #[handles]
    fn deposit(&self, cmd: &Deposit) -> Result<MoneyDeposited, Closed> {
        Ok(MoneyDeposited { amount: cmd.amount })
    }

    #[apply]
    fn opened(&mut self, _: &AccountOpened) {
        self.open = true;
    }
}

fn main() {}
