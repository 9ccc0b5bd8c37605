//! `#[init]` outside a `#[saga]` block.
use evoq::prelude::*;

struct Fulfillment {
    order_id: String,
}

impl Fulfillment {
    #[init]
    fn init(instance: &str) -> Self {
        Fulfillment {
            order_id: instance.to_owned(),
        }
    }
}

fn main() {
    let _ = Fulfillment::init("o1").order_id;
}
