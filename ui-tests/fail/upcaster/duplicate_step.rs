//! Two upcasters read version 1 of one event.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(version = 2)]
struct MoneyDeposited {
    amount: u64,
}

#[upcaster(MoneyDeposited, from = 1)]
fn first(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

#[upcaster(MoneyDeposited, from = 1)]
fn second(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

fn main() {}
