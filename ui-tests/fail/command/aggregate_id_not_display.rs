use evoq::prelude::*;

struct AccountNumber(u64);

#[derive(Command)]
struct Deposit {
    #[aggregate_id]
    account: AccountNumber,
    amount: u64,
}

fn main() {}
