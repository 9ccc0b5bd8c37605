//! A saga that emits a command no aggregate handles.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    order_id: String,
}

#[derive(Command)]
struct ChargePayment {
    #[aggregate_id]
    order_id: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Fulfillment;

#[saga(name = "fulfillment")]
impl Fulfillment {
    #[starts(by = order_id)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        commands![ChargePayment {
            order_id: e.order_id.clone(),
        }]
    }
}

fn main() {}
