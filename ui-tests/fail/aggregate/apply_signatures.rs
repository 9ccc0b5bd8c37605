use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyWithdrawn;

#[derive(Default)]
struct BankAccount {
    balance: u64,
}

#[aggregate]
impl BankAccount {
    #[apply]
    fn opened(&self, _: &AccountOpened) {}

    #[apply]
    fn deposited(&mut self, _: &MoneyDeposited) -> u64 {
        self.balance
    }

    #[apply]
    fn withdrawn(&mut self, _: MoneyWithdrawn) {}
}

fn main() {}
