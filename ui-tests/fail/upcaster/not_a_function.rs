//! `#[upcaster]` on something that is not a function.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited {
    amount: u64,
}

#[upcaster(MoneyDeposited, from = 1)]
struct NotAFunction;

fn main() {}
