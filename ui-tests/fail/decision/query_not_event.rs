use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent {
    #[tag("book")]
    book: String,
}

// Serializable, but not an `Event`.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct BookReturned {
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
struct Lending {
    lent: bool,
}

#[decision]
impl Lending {
    #[handles]
    #[query(all_of(types(BookLent, BookReturned), tag("book", &command.book)))]
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
