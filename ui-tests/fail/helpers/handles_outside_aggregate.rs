use evoq::prelude::*;

#[derive(Command)]
struct Deposit {
    #[aggregate_id]
    account: String,
}

#[derive(Default)]
struct BankAccount;

impl BankAccount {
    #[handles]
    fn deposit(&self, _: &Deposit) {}
}

fn main() {}
