use evoq::prelude::*;

#[derive(Command)]
struct Deposit {
    #[aggregate_id(prefix = "acc")]
    account: String,
    amount: u64,
}

fn main() {}
