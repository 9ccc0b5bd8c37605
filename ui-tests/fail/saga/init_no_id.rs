//! An `#[init]` method that does not take the instance id.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    order_id: String,
}

#[derive(Serialize, Deserialize)]
struct Fulfillment {
    order_id: String,
}

#[saga(name = "fulfillment")]
impl Fulfillment {
    #[init]
    fn init() -> Self {
        Fulfillment {
            order_id: String::new(),
        }
    }

    #[starts(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }
}

fn main() {}
