//! A saga helper attribute outside a `#[saga]` block.
use evoq::prelude::*;

struct Fulfillment;

impl Fulfillment {
    #[starts(by = order_id)]
    fn placed(&mut self) {}
}

fn main() {}
