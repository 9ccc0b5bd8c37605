//! An `#[init]` method with a parameter besides the instance id.
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
    fn init(instance: &str, region: &str) -> Self {
        Fulfillment {
            order_id: format!("{region}/{instance}"),
        }
    }

    #[starts(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }
}

fn main() {}
