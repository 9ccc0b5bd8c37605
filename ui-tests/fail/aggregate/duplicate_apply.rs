use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited {
    amount: u64,
}

#[derive(Default)]
struct BankAccount {
    balance: u64,
    deposits: u64,
}

#[aggregate]
impl BankAccount {
    #[apply]
    fn deposited(&mut self, event: &MoneyDeposited) {
        self.balance += event.amount;
    }

    #[apply]
    fn counted(&mut self, _: &MoneyDeposited) {
        self.deposits += 1;
    }
}

fn main() {}
