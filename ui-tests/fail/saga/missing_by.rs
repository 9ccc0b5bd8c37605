//! A saga method that does not say which event field correlates it, and one that is `async`.
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
    #[starts]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }

    #[stops(by = order_id)]
    async fn shipped(&mut self, _: &OrderShipped) -> Commands {
        Commands::none()
    }
}

fn main() {}
