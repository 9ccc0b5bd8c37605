//! `Result` aliases in every kind of block: a `#[handles]` method of an aggregate, an event
//! handler or a projection may return `Result<T>` of a crate's one-parameter alias, or a whole
//! result type by its alias name; the compiler sees the `Ok` and `Err` types through
//! `evoq::checks`. A saga's methods return `Commands` (here by an alias too), and compile in a
//! module whose `Result` is such an alias. Everything runs.
#![deny(warnings)]

use std::sync::{Arc, Mutex};

use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct BookLent {
    book: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct BookReturned {
    book: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct FineCharged {
    book: String,
    cents: u64,
}

#[derive(Command)]
struct LendBook {
    #[aggregate_id]
    book: String,
}

#[derive(Command)]
struct ReturnBook {
    #[aggregate_id]
    book: String,
    late: bool,
}

#[derive(Command)]
struct ChargeFines {
    #[aggregate_id]
    book: String,
    days: u64,
}

#[derive(Command)]
struct RenewBook {
    #[aggregate_id]
    book: String,
}

#[derive(Command)]
struct InspectBook {
    #[aggregate_id]
    book: String,
}

#[derive(Command)]
struct LendAgain {
    #[aggregate_id]
    book: String,
}

#[derive(Debug, thiserror::Error)]
enum BookError {
    #[error("the book is already lent")]
    AlreadyLent,
    #[error("the book is not lent")]
    NotLent,
}

/// The alias many crates define.
type Result<T> = std::result::Result<T, BookError>;

/// A whole result type under a name of its own.
type Returned = std::result::Result<(BookReturned, FineCharged), BookError>;

#[derive(Default)]
struct Book {
    lent: bool,
}

#[aggregate]
impl Book {
    #[handles]
    fn lend(&self, cmd: &LendBook) -> Result<BookLent> {
        if self.lent {
            return Err(BookError::AlreadyLent);
        }
        Ok(BookLent {
            book: cmd.book.clone(),
        })
    }

    #[handles]
    fn give_back(&self, cmd: &ReturnBook) -> Returned {
        if !self.lent {
            return Err(BookError::NotLent);
        }
        let cents = if cmd.late { 50 } else { 0 };
        Ok((
            BookReturned {
                book: cmd.book.clone(),
            },
            FineCharged {
                book: cmd.book.clone(),
                cents,
            },
        ))
    }

    #[handles]
    fn fine(&self, cmd: &ChargeFines) -> Result<Vec<FineCharged>> {
        Ok((0..cmd.days)
            .map(|_| FineCharged {
                book: cmd.book.clone(),
                cents: 10,
            })
            .collect())
    }

    #[handles]
    fn renew(&self, cmd: &RenewBook) -> Result<Option<BookLent>> {
        Ok(self.lent.then(|| BookLent {
            book: cmd.book.clone(),
        }))
    }

    #[handles]
    fn inspect(&self, _: &InspectBook) -> Result<()> {
        Ok(())
    }

    #[handles]
    fn lend_again(&self, cmd: &LendAgain) -> Result<BookEvent> {
        Ok(BookEvent::BookLent(BookLent {
            book: cmd.book.clone(),
        }))
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {
        self.lent = true;
    }

    #[apply]
    fn returned(&mut self, _: &BookReturned) {
        self.lent = false;
    }

    #[apply]
    fn fined(&mut self, _: &FineCharged) {}
}

#[derive(Default)]
struct Notifier {
    seen: Arc<Mutex<Vec<String>>>,
}

#[event_handler(name = "notifier", strong)]
impl Notifier {
    #[handles]
    async fn lent(&mut self, e: &BookLent, _: &EventMeta) -> Result<()> {
        self.seen
            .lock()
            .expect("lock")
            .push(format!("lent {}", e.book));
        Ok(())
    }
}

/// A projection's whole result type under a name of its own.
type Projected = std::result::Result<(), ProjectionError>;

struct Fines {
    totals: InMemoryReadModel,
}

#[projection(name = "fines", read_model = totals, strong)]
impl Fines {
    #[handles]
    async fn fined(&mut self, e: &FineCharged, _: &EventMeta) -> Projected {
        let total: u64 = self.totals.get(&e.book)?.unwrap_or(0);
        self.totals.put(&e.book, &(total + e.cents))?;
        Ok(())
    }
}

mod reminders {
    //! A saga in a module whose `Result` is a one-parameter alias.
    use evoq::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::{BookLent, BookReturned, ChargeFines};

    #[derive(Debug, thiserror::Error)]
    #[error("reminder failed")]
    pub(crate) struct ReminderError;

    #[allow(dead_code)]
    type Result<T> = std::result::Result<T, ReminderError>;

    /// What the saga's methods return, by another name.
    type Sends = Commands;

    #[derive(Default, Serialize, Deserialize)]
    pub(crate) struct Reminder {
        pub(crate) reminded: bool,
    }

    #[saga(name = "reminder")]
    impl Reminder {
        #[starts(by = book)]
        fn lent(&mut self, _: &BookLent) -> Sends {
            Commands::none()
        }

        #[stops(by = book)]
        fn returned(&mut self, e: &BookReturned) -> Sends {
            self.reminded = true;
            commands![ChargeFines {
                book: e.book.clone(),
                days: 0,
            }]
        }
    }
}

pub(crate) fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let notifier = Notifier::default();
        let seen = Arc::clone(&notifier.seen);
        let totals = InMemoryReadModel::new();
        let app = Evoq::builder()
            .handler(notifier)
            .projection(Fines {
                totals: totals.clone(),
            })
            .saga::<reminders::Reminder>()
            .start()
            .await
            .expect("starts");
        let book = || "dune".to_owned();

        let lent = app
            .dispatch(LendBook { book: book() })
            .await
            .expect("lends");
        assert_eq!(lent.events.len(), 1);
        let again = app.dispatch(LendBook { book: book() }).await;
        let rejection = again.expect_err("already lent");
        assert!(rejection.is_rejection());

        let renewed = app
            .dispatch(RenewBook { book: book() })
            .await
            .expect("renews");
        assert!(matches!(renewed.events[..], [BookEvent::BookLent(_)]));
        let inspected = app
            .dispatch(InspectBook { book: book() })
            .await
            .expect("inspects");
        assert!(inspected.events.is_empty());
        let fined = app
            .dispatch(ChargeFines {
                book: book(),
                days: 2,
            })
            .await
            .expect("fines");
        assert_eq!(fined.events.len(), 2);
        let returned = app
            .command(ReturnBook {
                book: book(),
                late: true,
            })
            .consistency(Consistency::Strong)
            .dispatch()
            .await
            .expect("returns");
        assert!(matches!(
            returned.events[..],
            [BookEvent::BookReturned(_), BookEvent::FineCharged(_)]
        ));
        assert_eq!(*seen.lock().expect("lock"), ["lent dune", "lent dune"]);
        assert_eq!(totals.get::<u64>("dune").expect("reads"), Some(70));

        let relent = app
            .dispatch(LendAgain { book: book() })
            .await
            .expect("lends again");
        assert!(matches!(relent.events[..], [BookEvent::BookLent(_)]));
        app.stop().await;
    });
}
