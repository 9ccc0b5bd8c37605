use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(nme = "AccountOpened")]
struct AccountOpened;

fn main() {}
