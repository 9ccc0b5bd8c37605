// An event handler's signature in an aggregate block: each message names the block whose
// signature it wants, and where the other one belongs.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent;

#[derive(Command)]
struct LendBook(#[aggregate_id] String);

#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Failed;

#[derive(Default)]
struct Book;

#[aggregate]
impl Book {
    #[handles]
    async fn lend(&mut self, _: &LendBook) -> Result<BookLent, Failed> {
        Ok(BookLent)
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {}
}

fn main() {}
