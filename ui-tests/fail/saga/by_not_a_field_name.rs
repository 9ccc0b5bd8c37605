//! A `by` that is not a field name (a string, an expression): one error each, on the value,
//! not a second one saying `by` is missing.
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
    #[starts(by = "order_id")]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }

    #[stops(by = order_id.len)]
    fn shipped(&mut self, _: &OrderShipped) -> Commands {
        Commands::none()
    }
}

fn main() {}
