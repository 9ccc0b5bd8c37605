// An event is `Clone`, `Debug`, `Send` and `Sync`: each missing one is one error at the type.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct BookLent {
    book: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookCounted {
    copies: std::cell::Cell<u32>,
}

fn main() {}
