//! The library domain of the HTTP service example: books that are added to the catalog, lent to
//! a member and returned. Its error says which HTTP status each refusal answers with.

use std::borrow::Cow;

use axum::http::StatusCode;
use evoq::axum::HttpStatus;
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct BookAdded {
    pub(crate) isbn: String,
    pub(crate) title: String,
    pub(crate) author: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct BookLent {
    pub(crate) isbn: String,
    pub(crate) member: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct BookReturned {
    pub(crate) isbn: String,
    pub(crate) member: String,
}

/// Adds a book to the catalog; the request body of `POST /books` as it is.
#[derive(Command, Deserialize, Debug, Clone)]
pub(crate) struct AddBook {
    #[aggregate_id]
    pub(crate) isbn: String,
    pub(crate) title: String,
    pub(crate) author: String,
}

#[derive(Command, Debug, Clone)]
pub(crate) struct LendBook {
    #[aggregate_id]
    pub(crate) isbn: String,
    pub(crate) member: String,
}

#[derive(Command, Debug, Clone)]
pub(crate) struct ReturnBook {
    #[aggregate_id]
    pub(crate) isbn: String,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum LibraryError {
    #[error("book `{0}` is already in the catalog")]
    AlreadyInCatalog(String),
    #[error("book `{0}` is not in the catalog")]
    NotInCatalog(String),
    #[error("a book needs a title and an author")]
    MissingDetails,
    #[error("book `{isbn}` is already lent to `{member}`")]
    AlreadyLent { isbn: String, member: String },
    #[error("book `{0}` is not lent")]
    NotLent(String),
}

/// How each refusal answers over HTTP: the status, and a problem type a client can match on.
/// The problem's `detail` is the message above.
impl HttpStatus for LibraryError {
    fn status(&self) -> StatusCode {
        match self {
            LibraryError::AlreadyInCatalog(_) => StatusCode::CONFLICT,
            LibraryError::NotInCatalog(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn problem_type(&self) -> Option<Cow<'static, str>> {
        Some(Cow::Borrowed(match self {
            LibraryError::AlreadyInCatalog(_) => "/problems/already-in-catalog",
            LibraryError::NotInCatalog(_) => "/problems/not-in-catalog",
            LibraryError::MissingDetails => "/problems/missing-details",
            LibraryError::AlreadyLent { .. } => "/problems/already-lent",
            LibraryError::NotLent(_) => "/problems/not-lent",
        }))
    }
}

/// One book: whether it is in the catalog, and who has it.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct Book {
    pub(crate) in_catalog: bool,
    pub(crate) lent_to: Option<String>,
}

#[aggregate]
impl Book {
    #[handles]
    fn add(&self, cmd: &AddBook) -> Result<BookAdded, LibraryError> {
        if self.in_catalog {
            return Err(LibraryError::AlreadyInCatalog(cmd.isbn.clone()));
        }
        if cmd.title.trim().is_empty() || cmd.author.trim().is_empty() {
            return Err(LibraryError::MissingDetails);
        }
        Ok(BookAdded {
            isbn: cmd.isbn.clone(),
            title: cmd.title.clone(),
            author: cmd.author.clone(),
        })
    }

    #[handles]
    fn lend(&self, cmd: &LendBook) -> Result<BookLent, LibraryError> {
        if !self.in_catalog {
            return Err(LibraryError::NotInCatalog(cmd.isbn.clone()));
        }
        if let Some(member) = &self.lent_to {
            return Err(LibraryError::AlreadyLent {
                isbn: cmd.isbn.clone(),
                member: member.clone(),
            });
        }
        Ok(BookLent {
            isbn: cmd.isbn.clone(),
            member: cmd.member.clone(),
        })
    }

    #[handles]
    fn give_back(&self, cmd: &ReturnBook) -> Result<BookReturned, LibraryError> {
        if !self.in_catalog {
            return Err(LibraryError::NotInCatalog(cmd.isbn.clone()));
        }
        match &self.lent_to {
            Some(member) => Ok(BookReturned {
                isbn: cmd.isbn.clone(),
                member: member.clone(),
            }),
            None => Err(LibraryError::NotLent(cmd.isbn.clone())),
        }
    }

    #[apply]
    fn added(&mut self, _: &BookAdded) {
        self.in_catalog = true;
    }

    #[apply]
    fn lent(&mut self, e: &BookLent) {
        self.lent_to = Some(e.member.clone());
    }

    #[apply]
    fn returned(&mut self, _: &BookReturned) {
        self.lent_to = None;
    }
}
