// Every independent mistake is reported in one build, and the type still implements `Event`
// (a stub), so the places that use it report nothing more.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(nam = "Deposited", version = 0, schema = 2)]
struct MoneyDeposited {
    amount: u64,
}

fn needs_an_event<E: Event>() {}

fn main() {
    needs_an_event::<MoneyDeposited>();
}
