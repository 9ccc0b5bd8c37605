//! An `#[apply]` method that takes the aggregate's generated event enum instead of one event.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent {
    book: String,
}

#[derive(Default)]
struct Book;

#[aggregate]
impl Book {
    #[apply]
    fn lent(&mut self, _: &BookLent) {}

    #[apply]
    fn any(&mut self, _: &BookEvent) {}
}

fn main() {}
