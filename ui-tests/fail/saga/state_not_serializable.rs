//! A saga whose state type does not derive `Serialize` and `Deserialize`: instance states are
//! stored between events.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    order_id: String,
}

#[derive(Default)]
struct Fulfillment {
    seen: u32,
}

#[saga(name = "fulfillment")]
impl Fulfillment {
    #[starts(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        self.seen += 1;
        Commands::none()
    }
}

fn main() {}
