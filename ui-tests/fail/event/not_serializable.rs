// An event without serde's derives: one sentence at the type. The impl of `Event` holds only
// for a type that meets its bounds, so a use of the type as an event (here an `#[apply]`) says
// it is not one yet, in the same words as for any other type.
use evoq::prelude::*;

#[derive(Event, Clone, Debug)]
struct BookLent {
    book: String,
}

#[derive(Command)]
struct LendBook {
    #[aggregate_id]
    book: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the book is already lent")]
struct AlreadyLent;

#[derive(Default)]
struct Book;

#[aggregate]
impl Book {
    #[handles]
    fn lend(&self, cmd: &LendBook) -> Result<BookLent, AlreadyLent> {
        Ok(BookLent {
            book: cmd.book.clone(),
        })
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {}
}

fn main() {}
