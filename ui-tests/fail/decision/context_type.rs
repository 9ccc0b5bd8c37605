use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent {
    #[tag("book")]
    book: String,
}

#[derive(Command)]
struct LendBook {
    #[aggregate_id]
    book: String,
}

#[derive(Debug, thiserror::Error)]
#[error("already lent")]
struct AlreadyLent;

#[derive(Default)]
struct Lending;

#[decision]
impl Lending {
    // The list holds the decision's events (`LendingEvent`), not one event type.
    #[handles]
    #[query(all_of(types(BookLent), tag("book", &command.book)))]
    fn lend(&self, command: &LendBook, context: &[BookLent]) -> Result<BookLent, AlreadyLent> {
        if !context.is_empty() {
            return Err(AlreadyLent);
        }
        Ok(BookLent { book: command.book.clone() })
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {}
}

fn main() {}
