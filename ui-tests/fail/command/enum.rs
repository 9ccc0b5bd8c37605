use evoq::prelude::*;

#[derive(Command)]
enum AccountCommand {
    Deposit { account: String, amount: u64 },
    Withdraw { account: String, amount: u64 },
}

fn main() {}
