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

#[derive(Command)]
struct ReserveBook {
    #[aggregate_id]
    book: String,
}

#[derive(Command)]
struct RenewBook {
    #[aggregate_id]
    book: String,
}

#[derive(Debug, thiserror::Error)]
#[error("already lent")]
struct AlreadyLent;

#[derive(Default)]
struct Lending {
    lent: bool,
}

#[decision(attempts = 0)]
impl Lending {
    // No query: the decision would not know what to read.
    #[handles]
    fn lend(&self, command: &LendBook) -> Result<BookLent, AlreadyLent> {
        Ok(BookLent { book: command.book.clone() })
    }

    // Not a query of the grammar.
    #[handles]
    #[query(everything())]
    fn reserve(&self, command: &ReserveBook) -> Result<BookLent, AlreadyLent> {
        Ok(BookLent { book: command.book.clone() })
    }

    #[handles]
    #[query(all_of(types(BookLent), tag("book", &command.book)))]
    #[query(types(BookLent))]
    fn renew(&self, command: &RenewBook) -> Result<BookLent, AlreadyLent> {
        Ok(BookLent { book: command.book.clone() })
    }

    // A query on an `#[apply]` method.
    #[apply]
    #[query(types(BookLent))]
    fn lent(&mut self, _: &BookLent) {
        self.lent = true;
    }
}

// `#[query]` outside a decision.
struct Elsewhere;

impl Elsewhere {
    #[query(types(BookLent))]
    fn nothing(&self) {}
}

fn main() {}
