//! An `#[init]` method that returns something else than the state.
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
    fn init(instance: &str) -> Option<Self> {
        Some(Fulfillment {
            order_id: instance.to_owned(),
        })
    }

    #[starts(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }
}

fn main() {}
