use evoq::prelude::*;

#[derive(Default)]
struct BankAccount;

#[aggregate(name = "", snapshot_every = 0, event_enum = "Events")]
impl BankAccount {}

fn main() {}
