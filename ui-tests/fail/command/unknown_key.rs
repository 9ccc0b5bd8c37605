use evoq::prelude::*;

#[derive(Command)]
#[command(name = "Deposit", version = 2)]
struct Deposit {
    #[aggregate_id]
    account: String,
}

fn main() {}
