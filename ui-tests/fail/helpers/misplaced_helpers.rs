use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyWithdrawn;

#[derive(Default)]
struct BankAccount;

#[aggregate]
impl BankAccount {
    #[apply]
    const LIMIT: u64 = 10;

    #[apply]
    #[handles]
    fn deposited(&mut self, _: &MoneyDeposited) {}

    #[apply]
    #[apply]
    fn twice(&mut self, _: &MoneyWithdrawn) {}
}

fn main() {}
