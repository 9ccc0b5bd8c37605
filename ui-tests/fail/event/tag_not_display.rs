use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Shelf {
    row: u32,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookShelved {
    // A tag's value is written with `Display`: `Shelf` has none.
    #[tag("shelf")]
    shelf: Shelf,
}

fn main() {}
