use evoq::prelude::*;

#[derive(Command)]
struct Transfer {
    #[aggregate_id]
    from: String,
    #[aggregate_id]
    to: String,
    amount: u64,
}

fn main() {}
