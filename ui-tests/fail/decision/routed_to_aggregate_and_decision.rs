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
struct Book {
    lent: bool,
}

#[aggregate]
impl Book {
    #[handles]
    fn lend(&self, command: &LendBook) -> Result<BookLent, AlreadyLent> {
        if self.lent {
            return Err(AlreadyLent);
        }
        Ok(BookLent { book: command.book.clone() })
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {
        self.lent = true;
    }
}

#[derive(Default)]
struct Lending {
    lent: bool,
}

// The same command, also routed to a decision.
#[decision]
impl Lending {
    #[handles]
    #[query(all_of(types(BookLent), tag("book", &command.book)))]
    fn lend(&self, command: &LendBook) -> Result<BookLent, AlreadyLent> {
        if self.lent {
            return Err(AlreadyLent);
        }
        Ok(BookLent { book: command.book.clone() })
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {
        self.lent = true;
    }
}

fn main() {}
