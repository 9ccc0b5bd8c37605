//! An event at version 3 with an upcaster from version 1 only: the step from 2 is missing.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(version = 3)]
struct MoneyDeposited {
    amount: u64,
}

#[upcaster(MoneyDeposited, from = 1)]
fn v1_to_v2(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

fn main() {}
