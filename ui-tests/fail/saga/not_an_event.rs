//! A saga method taking a type that is not an event.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

struct NotAnEvent {
    order_id: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Fulfillment;

#[saga(name = "fulfillment")]
impl Fulfillment {
    #[starts(by = order_id)]
    fn placed(&mut self, _: &NotAnEvent) -> Commands {
        Commands::none()
    }
}

fn main() {}
