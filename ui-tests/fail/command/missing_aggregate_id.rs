use evoq::prelude::*;

#[derive(Command)]
struct Deposit {
    account: String,
    amount: u64,
}

fn main() {}
