//! Saga methods whose signatures have the right shape but the wrong types: an event method
//! that returns a `Result`, and a `#[compensates]` method that takes an event instead of the
//! failed command.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderShipped {
    order_id: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Fulfillment;

#[saga(name = "fulfillment")]
impl Fulfillment {
    #[starts(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Result<Commands, std::io::Error> {
        Ok(Commands::none())
    }

    #[stops(by = order_id)]
    fn shipped(&mut self, _: &OrderShipped) -> Commands {
        Commands::none()
    }

    #[compensates]
    fn failed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }
}

fn main() {}
