//! One event type taken by two saga methods, once by its imported name and once through its
//! path: the macro sees two types, the wire names are one.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

mod ev {
    use evoq::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct OrderPlaced {
        pub order_id: String,
    }
}

use ev::OrderPlaced;

#[derive(Default, Serialize, Deserialize)]
struct Fulfillment;

#[saga(name = "fulfillment")]
impl Fulfillment {
    #[starts(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }

    #[continues(by = order_id)]
    fn placed_again(&mut self, _: &crate::ev::OrderPlaced) -> Commands {
        Commands::none()
    }
}

fn main() {}
