use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent {
    #[tag("book")]
    book: String,
}

#[derive(Command)]
struct RenewBook {
    #[aggregate_id]
    book: String,
}

#[derive(Command)]
struct FindBook {
    #[aggregate_id]
    book: String,
}

#[derive(Command)]
struct LoseBook {
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
    // The list is borrowed, not taken.
    #[handles]
    #[query(all_of(types(BookLent), tag("book", &command.book)))]
    fn renew(&self, command: &RenewBook, context: Vec<LendingEvent>) -> Result<(), AlreadyLent> {
        let _ = (command, context);
        Ok(())
    }

    // A slice of the decision's events, not another collection.
    #[handles]
    #[query(all_of(types(BookLent), tag("book", &command.book)))]
    fn find(&self, command: &FindBook, context: &Vec<LendingEvent>) -> Result<(), AlreadyLent> {
        let _ = (command, context);
        Ok(())
    }

    // One list, nothing after it.
    #[handles]
    #[query(all_of(types(BookLent), tag("book", &command.book)))]
    fn lose(
        &self,
        command: &LoseBook,
        context: &[LendingEvent],
        meta: &EventMeta,
    ) -> Result<(), AlreadyLent> {
        let _ = (command, context, meta);
        Ok(())
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {}
}

// An aggregate's handler decides on its own stream: it takes no list.
#[derive(Default)]
struct Shelf;

#[derive(Command)]
struct Shelve {
    #[aggregate_id]
    book: String,
}

#[aggregate]
impl Shelf {
    #[handles]
    fn shelve(&self, command: &Shelve, context: &[ShelfEvent]) -> Result<BookLent, AlreadyLent> {
        let _ = context;
        Ok(BookLent { book: command.book.clone() })
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {}
}

fn main() {}
