//! An `#[init]` method that takes the instance id as something else than `&str` or `String`.
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
    fn init(instance: u64) -> Self {
        Fulfillment {
            order_id: instance.to_string(),
        }
    }

    #[starts(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }
}

fn main() {}
