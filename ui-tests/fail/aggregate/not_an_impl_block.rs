use evoq::prelude::*;

#[aggregate]
#[derive(Default)]
struct BankAccount;

fn main() {}
