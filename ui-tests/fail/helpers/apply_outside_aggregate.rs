use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited;

#[apply]
fn deposited(_: &MoneyDeposited) {}

fn main() {}
