//! Upcasters with signatures that do not fit, and bad arguments.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(version = 4)]
struct MoneyDeposited {
    amount: u64,
}

#[upcaster(MoneyDeposited, from = 1)]
async fn is_async(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

#[upcaster(MoneyDeposited, from = 2)]
fn two_parameters(data: Value, extra: u32) -> Result<Value, UpcastError> {
    let _ = extra;
    Ok(data)
}

#[upcaster(MoneyDeposited, from = 3)]
fn wrong_types(data: String) -> Value {
    Value::String(data)
}

#[upcaster(MoneyDeposited)]
fn no_from(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

#[upcaster(MoneyDeposited, from = 0, since = 4)]
fn zero_and_unknown(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

fn main() {}
