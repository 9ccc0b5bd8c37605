//! A decision over two queries, with tags from `#[tag]` fields, the whole grammar, and a
//! command of an aggregate beside it.

use std::collections::HashMap;

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent {
    #[tag("member")]
    member: String,
    #[tag]
    book: u32,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookReturned {
    #[tag("member")]
    member: String,
    #[tag]
    book: u32,
}

#[derive(Command)]
struct LendBook {
    member: String,
    #[aggregate_id]
    book: u32,
}

#[derive(Command)]
struct ReturnBook {
    member: String,
    #[aggregate_id]
    book: u32,
}

#[derive(Debug, thiserror::Error)]
enum LendError {
    #[error("limit reached")]
    Limit,
    #[error("not held")]
    NotHeld,
}

#[derive(Default)]
struct Lending {
    held: HashMap<String, u32>,
    out: HashMap<u32, String>,
}

#[decision(name = "Lending", attempts = 5, cached, idle_timeout = "10m", event_enum = LoanEvent)]
impl Lending {
    #[handles]
    #[query(or(
        and(types(BookLent, BookReturned), tag("member", &command.member)),
        and(types(BookLent), types(BookLent, BookReturned), tag(format!("book:{}", command.book))),
    ))]
    fn lend(&self, command: &LendBook) -> Result<BookLent, LendError> {
        if self.held.get(&command.member).copied().unwrap_or(0) >= 3
            || self.out.contains_key(&command.book)
        {
            return Err(LendError::Limit);
        }
        Ok(BookLent {
            member: command.member.clone(),
            book: command.book,
        })
    }

    #[handles(ReturnBook)]
    #[evoq::query(all_of(types(BookLent, BookReturned), tag("book", command.book)))]
    fn give_back(&self, command: &ReturnBook) -> Result<Option<BookReturned>, LendError> {
        match self.out.get(&command.book) {
            Some(member) if *member == command.member => Ok(Some(BookReturned {
                member: member.clone(),
                book: command.book,
            })),
            Some(_) => Err(LendError::NotHeld),
            None => Ok(None),
        }
    }

    #[apply]
    fn lent(&mut self, event: &BookLent) {
        *self.held.entry(event.member.clone()).or_default() += 1;
        self.out.insert(event.book, event.member.clone());
    }

    #[apply]
    fn returned(&mut self, event: &BookReturned) {
        self.out.remove(&event.book);
    }
}

/// A command decided on the list of the events its query selected.
#[derive(Command)]
struct CountLoans {
    #[aggregate_id]
    book: u32,
}

/// Loans of a book, counted from the list (the model keeps nothing).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct LoansCounted {
    #[tag]
    book: u32,
    loans: usize,
}

#[derive(Default)]
struct Counting;

#[decision]
impl Counting {
    #[handles]
    #[query(all_of(types(BookLent, LoansCounted), tag("book", command.book)))]
    fn count(
        &self,
        command: &CountLoans,
        context: &[CountingEvent],
    ) -> Result<Option<LoansCounted>, LendError> {
        let loans = context
            .iter()
            .filter(|event| matches!(event, CountingEvent::BookLent(_)))
            .count();
        Ok(Some(LoansCounted {
            book: command.book,
            loans,
        }))
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {}

    #[apply]
    fn counted(&mut self, _: &LoansCounted) {}
}

async fn lend(app: &Evoq) -> Result<Dispatched<Lending>, evoq::Error> {
    let done = app
        .dispatch(LendBook {
            member: "m1".into(),
            book: 7,
        })
        .await?;
    let _: &[LoanEvent] = &done.events;
    app.dispatch(ReturnBook {
        member: "m1".into(),
        book: 7,
    })
    .await
}

pub(crate) fn main() {
    let _ = lend;
    assert_eq!(<Lending as Aggregate>::NAME, "Lending");
    assert_eq!(
        <LoanEvent as EventSet>::EVENT_TYPES,
        ["BookLent", "BookReturned"]
    );
    assert_eq!(<LendBook as evoq::Route>::DECISION_ATTEMPTS, Some(5));
    const { assert!(<LendBook as evoq::Route>::DECISION_CACHED) };
    assert_eq!(
        <Lending as Aggregate>::IDLE_TIMEOUT,
        Some(std::time::Duration::from_secs(600))
    );
    let command = LendBook {
        member: "m1".into(),
        book: 7,
    };
    let query = evoq::Route::decision_query(&command).expect("a decision's command has a query");
    assert!(query.matches("BookLent", &["member:m1".into()]));
    assert!(query.matches("BookLent", &["book:7".into()]));
    assert!(!query.matches("BookReturned", &["book:7".into()]));
    let event = BookLent {
        member: "m1".into(),
        book: 7,
    };
    assert_eq!(&evoq::Event::tags(&event)[..], ["member:m1", "book:7"]);
    const { assert!(<CountLoans as evoq::Route>::DECISION_CONTEXT) };
    const { assert!(!<LendBook as evoq::Route>::DECISION_CONTEXT) };
    let counted = <CountLoans as evoq::Route>::decide_on(
        &Counting,
        &CountLoans { book: 7 },
        &[
            CountingEvent::BookLent(event.clone()),
            CountingEvent::BookLent(event),
        ],
    )
    .expect("counted");
    let [CountingEvent::LoansCounted(counted)] = &counted[..] else {
        panic!("one LoansCounted")
    };
    assert_eq!(counted.loans, 2);
}
