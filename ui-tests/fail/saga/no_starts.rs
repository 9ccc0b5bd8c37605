//! Sagas whose blocks have event methods but no `#[starts]` method: one with only a
//! `#[continues]` method, one with only a `#[stops]` method.
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
    #[continues(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Shipping;

#[saga(name = "shipping")]
impl Shipping {
    #[stops(by = order_id)]
    fn shipped(&mut self, _: &OrderShipped) -> Commands {
        Commands::none()
    }
}

fn main() {}
