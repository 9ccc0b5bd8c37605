use evoq::prelude::*;
use serde::{Deserialize, Serialize};

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

#[derive(Debug)]
enum BankError {
    Closed,
}

#[derive(Default)]
struct BankAccount {
    balance: u64,
}

#[aggregate]
impl BankAccount {
    #[handles]
    fn deposit(&self, cmd: &Deposit) -> Result<MoneyDeposited, BankError> {
        if cmd.amount == 0 {
            return Err(BankError::Closed);
        }
        Ok(MoneyDeposited { amount: cmd.amount })
    }

    #[apply]
    fn deposited(&mut self, event: &MoneyDeposited) {
        self.balance += event.amount;
    }
}

fn main() {}
