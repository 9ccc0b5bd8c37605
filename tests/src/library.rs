//! The library of the decisions guide: a member holds at most three books, a book is lent to
//! one member at a time. The rule spans members and books, so it is a decision over the events
//! tagged with the member and the book, not an aggregate.

use std::collections::HashMap;

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

/// How many books a member may hold at once.
pub const LIMIT: u32 = 3;

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BookLent {
    #[tag("member")]
    pub member: String,
    #[tag("book")]
    pub book: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BookReturned {
    #[tag("member")]
    pub member: String,
    #[tag("book")]
    pub book: String,
}

/// Tagged like the loans, but of a type no query of the library selects.
#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MemberJoined {
    #[tag("member")]
    pub member: String,
}

#[derive(Command, Debug, Clone)]
pub struct LendBook {
    pub member: String,
    #[aggregate_id]
    pub book: String,
}

#[derive(Command, Debug, Clone)]
pub struct ReturnBook {
    pub member: String,
    #[aggregate_id]
    pub book: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LendError {
    #[error("member `{0}` already holds {LIMIT} books")]
    LimitReached(String),
    #[error("book `{0}` is already lent")]
    AlreadyLent(String),
    #[error("member `{member}` does not hold book `{book}`")]
    NotHeld { member: String, book: String },
}

/// A book already lent is a conflict (409); a member at the limit, unprocessable (422).
impl evoq::axum::HttpStatus for LendError {
    fn status(&self) -> axum::http::StatusCode {
        match self {
            LendError::AlreadyLent(_) => axum::http::StatusCode::CONFLICT,
            LendError::LimitReached(_) | LendError::NotHeld { .. } => {
                axum::http::StatusCode::UNPROCESSABLE_ENTITY
            }
        }
    }
}

/// What the loans of one member and one book say: folded from the events tagged with either.
#[derive(Default)]
pub struct Lending {
    /// Books held, by member.
    pub held: HashMap<String, u32>,
    /// Who holds each book that is out.
    pub lent_to: HashMap<String, String>,
}

/// Cached: the model of each boundary is kept between commands (the tests of the uncached path
/// use decisions of their own).
#[decision(name = "Lending", attempts = 64, cached)]
impl Lending {
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

pub fn lend(member: &str, book: &str) -> LendBook {
    LendBook {
        member: member.to_owned(),
        book: book.to_owned(),
    }
}

pub fn give_back(member: &str, book: &str) -> ReturnBook {
    ReturnBook {
        member: member.to_owned(),
        book: book.to_owned(),
    }
}
