use evoq::prelude::*;

#[derive(Command)]
struct Deposit<Id> {
    #[aggregate_id]
    account: Id,
}

fn main() {}
