use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookShelved {
    #[tag("book:x")]
    book: String,
    #[tag = "member"]
    member: String,
    #[tag(prefix)]
    branch: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Renamed(#[tag] String);

fn main() {}
