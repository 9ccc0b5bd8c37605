//! An `Option` correlation field whose value cannot be a key: the error names the value's type.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug)]
struct OrderRef {
    id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    order: Option<OrderRef>,
}

#[derive(Default, Serialize, Deserialize)]
struct Fulfillment;

#[saga(name = "fulfillment")]
impl Fulfillment {
    #[starts(by = order)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }
}

fn main() {}
