//! An upcaster for a type that is not an event.
use evoq::prelude::*;
use serde_json::Value;

struct NotAnEvent;

#[upcaster(NotAnEvent, from = 1)]
fn v1_to_v2(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

fn main() {}
