use evoq::prelude::*;

#[derive(Default)]
struct BankAccount;

#[aggregate(snapshot = 10)]
impl BankAccount {}

fn main() {}
