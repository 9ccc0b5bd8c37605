//! An `#[init]` method that takes `self`: there is no instance yet.
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
    fn init(&self, instance: &str) -> Self {
        Fulfillment {
            order_id: instance.to_owned(),
        }
    }

    #[starts(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }
}

fn main() {}
