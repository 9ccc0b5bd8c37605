use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(version = "2")]
struct MoneyDeposited {
    amount: u64,
}

fn main() {}
