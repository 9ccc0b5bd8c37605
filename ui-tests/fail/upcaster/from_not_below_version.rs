//! An upcaster from the event's current version (there is no version 3 to upcast to).
use evoq::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(version = 2)]
struct MoneyDeposited {
    amount: u64,
}

#[upcaster(MoneyDeposited, from = 1)]
fn v1_to_v2(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

#[upcaster(MoneyDeposited, from = 2)]
fn v2_to_v3(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

fn main() {}
