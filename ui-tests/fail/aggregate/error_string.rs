// `String` is not an error type: the sentence says what an error type is.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent;

#[derive(Command)]
struct LendBook {
    #[aggregate_id]
    book: String,
}

#[derive(Default)]
struct Book {
    lent: bool,
}

#[aggregate]
impl Book {
    #[handles]
    fn lend(&self, _: &LendBook) -> Result<BookLent, String> {
        if self.lent {
            return Err("the book is already lent".to_owned());
        }
        Ok(BookLent)
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {}
}

fn main() {}
