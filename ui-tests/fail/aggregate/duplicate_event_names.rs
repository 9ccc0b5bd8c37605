use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "Deposited")]
struct MoneyDeposited;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "Deposited")]
struct CashDeposited;

#[derive(Default)]
struct BankAccount;

#[aggregate]
impl BankAccount {
    #[apply]
    fn money(&mut self, _: &MoneyDeposited) {}

    #[apply]
    fn cash(&mut self, _: &CashDeposited) {}
}

fn main() {}
