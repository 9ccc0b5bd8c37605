use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "")]
struct MoneyDeposited {
    amount: u64,
}

fn main() {}
