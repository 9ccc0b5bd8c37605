// A return type that is not `Result<Events, Error>` written out is checked through its alias:
// each mistake is one error on the return type.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent;
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLost;

#[derive(Command)]
struct LendBook(#[aggregate_id] String);
#[derive(Command)]
struct LoseBook(#[aggregate_id] String);
#[derive(Command)]
struct ShelveBook(#[aggregate_id] String);

#[derive(Debug)]
struct NotAnError;

// The error is not an error type.
type Result<T> = std::result::Result<T, NotAnError>;
// The event is not applied.
type Lost = std::result::Result<Vec<BookLost>, std::io::Error>;

#[derive(Default)]
struct Book;

#[aggregate]
impl Book {
    #[handles]
    fn lend(&self, _: &LendBook) -> Result<BookLent> {
        Ok(BookLent)
    }

    #[handles]
    fn lose(&self, _: &LoseBook) -> Lost {
        Ok(vec![BookLost])
    }

    // Not a `Result` at all.
    #[handles]
    fn shelve(&self, _: &ShelveBook) -> BookLent {
        BookLent
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {}
}

fn main() {}
