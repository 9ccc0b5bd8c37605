//! Every attribute argument that takes a literal takes a `macro_rules!` `$x:literal` (or
//! `$x:expr`) fragment too, which reaches the macro wrapped in an invisible group: names,
//! versions, counts and durations, in every kind of block.
#![deny(warnings)]

use evoq::prelude::*;
use evoq::{HandlerOptions, RetryStrategy};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

macro_rules! library {
    (
        $aggregate:literal, $command:literal, $event:literal, $old:literal, $version:literal,
        $handler:literal, $projection:literal, $saga:literal, $every:literal, $attempts:expr,
        $idle:literal, $hibernate:literal, $base:literal, $max:literal, $fixed:expr
    ) => {
        #[derive(Event, Serialize, Deserialize, Clone, Debug)]
        #[event(name = $event, version = $version)]
        struct BookLent {
            book: String,
        }

        #[upcaster(BookLent, from = 1, renamed_from = $old)]
        fn book_lent_v1(data: serde_json::Value) -> Result<serde_json::Value, UpcastError> {
            Ok(data)
        }

        #[derive(Command)]
        #[command(name = $command)]
        struct LendBook {
            #[aggregate_id]
            book: String,
        }

        #[derive(Default)]
        struct Book;

        #[aggregate(
            name = $aggregate,
            snapshot_every = $every,
            idle_timeout = $idle,
            hibernate_after = $hibernate
        )]
        impl Book {
            #[handles]
            fn lend(&self, cmd: &LendBook) -> Result<BookLent, Never> {
                Ok(BookLent {
                    book: cmd.book.clone(),
                })
            }

            #[apply]
            fn lent(&mut self, _: &BookLent) {}
        }

        #[derive(Default)]
        struct Notifier;

        #[event_handler(name = $handler, max_attempts = $attempts, retry = exponential($base, $max))]
        impl Notifier {
            #[handles]
            async fn lent(&mut self, _: &BookLent, _: &EventMeta) -> Result<(), Never> {
                Ok(())
            }
        }

        struct Loans {
            loans: InMemoryReadModel,
        }

        #[projection(name = $projection, read_model = loans, retry = fixed($fixed))]
        impl Loans {
            #[handles]
            async fn lent(&mut self, e: &BookLent, _: &EventMeta) -> Result<(), ProjectionError> {
                self.loans.put(&e.book, &true)?;
                Ok(())
            }
        }

        #[derive(Default, Serialize, Deserialize)]
        struct Reminder;

        #[saga(name = $saga, retry = exponential_jitter($base, $max))]
        impl Reminder {
            #[starts(by = book)]
            fn lent(&mut self, _: &BookLent) -> Commands {
                Commands::none()
            }
        }
    };
}

library!(
    "Book",
    "LendBook",
    "library.BookLent",
    "BookBorrowed",
    2,
    "notifier",
    "loans",
    "reminder",
    10,
    3,
    "30m",
    "1m",
    "100ms",
    "2s",
    "1s"
);

pub(crate) fn main() {
    use std::time::Duration;

    assert_eq!(<Book as Aggregate>::NAME, "Book");
    assert_eq!(<Book as Aggregate>::SNAPSHOT_EVERY, Some(10));
    assert_eq!(
        <Book as Aggregate>::IDLE_TIMEOUT,
        Some(Duration::from_secs(1800))
    );
    assert_eq!(<LendBook as evoq::Command>::NAME, "LendBook");
    assert_eq!(<BookLent as evoq::Event>::NAME, "library.BookLent");
    assert_eq!(<BookLent as evoq::Event>::VERSION, 2);
    assert_eq!(<BookLent as evoq::Event>::UPCASTERS.len(), 1);
    assert_eq!(<Notifier as EventHandler>::NAME, "notifier");
    assert_eq!(
        <Notifier as EventHandler>::OPTIONS,
        HandlerOptions::new()
            .retry(RetryStrategy::exponential(
                Duration::from_millis(100),
                Duration::from_secs(2)
            ))
            .max_attempts(3)
    );
    assert_eq!(<Loans as EventHandler>::NAME, "loans");
    assert_eq!(
        <Loans as EventHandler>::OPTIONS.retry,
        Some(RetryStrategy::fixed(Duration::from_secs(1)))
    );
    assert_eq!(<Reminder as Saga>::NAME, "reminder");
    let _ = (
        book_lent_v1,
        Notifier,
        Loans {
            loans: InMemoryReadModel::new(),
        },
    );
}
