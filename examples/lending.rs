//! A decision across streams: a library where a member holds at most three books and a book is
//! lent to one member at a time. Fifty members race for twelve books at once; the rule holds,
//! every refusal says why, and after a restart on the same SQLite file the decision still sees
//! every loan.
//!
//! Run with `cargo run --example lending`.

use std::collections::HashMap;
use std::sync::Arc;

use evoq::prelude::*;
use evoq::store::sqlite::SqliteStore;
use serde::{Deserialize, Serialize};

/// How many books a member may hold.
const LIMIT: u32 = 3;

// ----- events and commands -----

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent {
    #[tag("member")]
    member: String,
    #[tag("book")]
    book: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookReturned {
    #[tag("member")]
    member: String,
    #[tag("book")]
    book: String,
}

/// The book's id names the stream the loan is appended to (`Lending-<book>`).
#[derive(Command, Clone)]
struct LendBook {
    member: String,
    #[aggregate_id]
    book: String,
}

#[derive(Command, Clone)]
struct ReturnBook {
    member: String,
    #[aggregate_id]
    book: String,
}

#[derive(Debug, thiserror::Error)]
enum LendError {
    #[error("member `{0}` already holds {LIMIT} books")]
    LimitReached(String),
    #[error("book `{0}` is already lent")]
    AlreadyLent(String),
    #[error("member `{member}` does not hold book `{book}`")]
    NotHeld { member: String, book: String },
}

// ----- the decision -----

/// What the loans of one member and one book say, folded from the events tagged with either.
#[derive(Default)]
struct Lending {
    held: HashMap<String, u32>,
    lent_to: HashMap<String, String>,
}

#[decision(name = "Lending", attempts = 20)]
impl Lending {
    /// Reads every loan and return of the member and of the book, across their streams.
    #[handles]
    #[query(all_of(
        types(BookLent, BookReturned),
        any_of(tag("member", &command.member), tag("book", &command.book)),
    ))]
    fn lend(&self, command: &LendBook) -> Result<BookLent, LendError> {
        if self.lent_to.contains_key(&command.book) {
            return Err(LendError::AlreadyLent(command.book.clone()));
        }
        if self.held.get(&command.member).copied().unwrap_or(0) >= LIMIT {
            return Err(LendError::LimitReached(command.member.clone()));
        }
        Ok(BookLent {
            member: command.member.clone(),
            book: command.book.clone(),
        })
    }

    /// Reads the book's loans only.
    #[handles]
    #[query(all_of(types(BookLent, BookReturned), tag("book", &command.book)))]
    fn give_back(&self, command: &ReturnBook) -> Result<BookReturned, LendError> {
        if self.lent_to.get(&command.book) != Some(&command.member) {
            return Err(LendError::NotHeld {
                member: command.member.clone(),
                book: command.book.clone(),
            });
        }
        Ok(BookReturned {
            member: command.member.clone(),
            book: command.book.clone(),
        })
    }

    #[apply]
    fn lent(&mut self, event: &BookLent) {
        *self.held.entry(event.member.clone()).or_default() += 1;
        self.lent_to
            .insert(event.book.clone(), event.member.clone());
    }

    #[apply]
    fn returned(&mut self, event: &BookReturned) {
        if let Some(held) = self.held.get_mut(&event.member) {
            *held = held.saturating_sub(1);
        }
        self.lent_to.remove(&event.book);
    }
}

fn lend(member: &str, book: &str) -> LendBook {
    LendBook {
        member: member.to_owned(),
        book: book.to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("evoq-lending-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("library.db");

    // Fifty lends at once: five members, twelve books.
    let app = Arc::new(
        Evoq::builder()
            .store(SqliteStore::open(&file).await?)
            .start()
            .await?,
    );
    let attempts: Vec<_> = (0..50)
        .map(|i| {
            let app = Arc::clone(&app);
            let command = lend(&format!("m{}", i % 5), &format!("b{}", (i * 7) % 12));
            tokio::spawn(async move { (command.clone(), app.dispatch(command).await) })
        })
        .collect();
    let (mut lent, mut refused) = (Vec::new(), HashMap::<String, u32>::new());
    for attempt in attempts {
        let (command, result) = attempt.await?;
        match result {
            Ok(_) => lent.push((command.member, command.book)),
            Err(error) => match error.rejection::<LendError>() {
                Some(refusal) => {
                    let reason = match refusal {
                        LendError::LimitReached(_) => "limit reached",
                        LendError::AlreadyLent(_) => "already lent",
                        LendError::NotHeld { .. } => "not held",
                    };
                    *refused.entry(reason.to_owned()).or_default() += 1;
                }
                None => return Err(error.into()),
            },
        }
    }
    lent.sort();
    let mut per_member = HashMap::<&str, u32>::new();
    for (member, _) in &lent {
        *per_member.entry(member.as_str()).or_default() += 1;
    }
    println!("{} lends succeeded: {lent:?}", lent.len());
    println!("refused: {refused:?}");
    assert!(per_member.values().all(|&held| held <= LIMIT));
    let mut books: Vec<_> = lent.iter().map(|(_, book)| book).collect();
    books.dedup();
    assert_eq!(books.len(), lent.len(), "no book is lent twice");
    app.stop().await;

    // A restart on the same file: the decision reads the loans made before it.
    let app = Evoq::builder()
        .store(SqliteStore::open(&file).await?)
        .start()
        .await?;
    let (member, book) = lent[0].clone();
    let again = app.dispatch(lend("someone-else", &book)).await.unwrap_err();
    println!("after the restart, {book} for someone else: {again}");
    let returned = app
        .dispatch(ReturnBook {
            member: member.clone(),
            book: book.clone(),
        })
        .await?;
    println!(
        "{member} returned {book}: stream version {}",
        returned.version
    );
    let relent = app.dispatch(lend("someone-else", &book)).await?;
    println!(
        "then {book} went to someone-else at position {:?}",
        relent.position
    );
    app.stop().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
