//! Queries may name an event through another name than the `#[apply]` method's: a `use ... as`
//! alias, a `type` alias, a path. The model sees the events they select.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

mod ev {
    use evoq::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct BookReturned {
        #[tag("book")]
        pub book: String,
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent {
    #[tag("book")]
    book: String,
}

use BookLent as Lent;
type Returned = ev::BookReturned;

#[derive(Command)]
struct LendBook {
    #[aggregate_id]
    book: String,
}

#[derive(Command)]
struct ReturnBook {
    #[aggregate_id]
    book: String,
}

#[derive(Debug, thiserror::Error)]
enum LendingError {
    #[error("already lent")]
    AlreadyLent,
    #[error("not lent")]
    NotLent,
}

#[derive(Default)]
struct Lending {
    lent: bool,
}

#[decision]
impl Lending {
    #[handles]
    #[query(all_of(types(Lent, Returned), tag("book", &command.book)))]
    fn lend(&self, command: &LendBook) -> Result<BookLent, LendingError> {
        if self.lent {
            return Err(LendingError::AlreadyLent);
        }
        Ok(BookLent {
            book: command.book.clone(),
        })
    }

    #[handles]
    #[query(all_of(types(BookLent, crate::ev::BookReturned), tag("book", &command.book)))]
    fn return_book(&self, command: &ReturnBook) -> Result<Returned, LendingError> {
        if !self.lent {
            return Err(LendingError::NotLent);
        }
        Ok(ev::BookReturned {
            book: command.book.clone(),
        })
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {
        self.lent = true;
    }

    #[apply]
    fn returned(&mut self, _: &ev::BookReturned) {
        self.lent = false;
    }
}

fn main() {
    AggregateTest::<Lending>::given([BookLent { book: "b".into() }])
        .when(LendBook { book: "b".into() })
        .then_error_matches(|error: &LendingError| matches!(error, LendingError::AlreadyLent));
}
