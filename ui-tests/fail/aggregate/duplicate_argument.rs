use evoq::prelude::*;

#[derive(Default)]
struct BankAccount;

#[aggregate(name = "bank_account", snapshot_every = 10, name = "account")]
impl BankAccount {}

fn main() {}
