//! A command's aggregate id as the runtime routes by it: `Command::aggregate_id_str` is the id
//! `aggregate_id` formats, lent by the command when its `#[aggregate_id]` field is a string
//! (so a dispatch copies no id) and formatted otherwise.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use evoq::prelude::*;
use evoq_tests::bank::{BankAccount, OpenAccount, account_stream};

#[derive(Command)]
struct ByString {
    #[aggregate_id]
    id: String,
}

#[derive(Command)]
struct ByStatic(#[aggregate_id] &'static str);

#[derive(Command)]
struct ByBox {
    #[aggregate_id]
    id: Box<str>,
}

#[derive(Command)]
struct ByArc {
    #[aggregate_id]
    id: Arc<str>,
}

#[derive(Command)]
struct ByCow {
    #[aggregate_id]
    id: Cow<'static, str>,
}

#[derive(Command)]
struct ByNumber {
    #[aggregate_id]
    id: u64,
}

/// An id whose `Display` is not the string it holds: only `Display` names the aggregate.
struct Prefixed(String);

impl fmt::Display for Prefixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p-{}", self.0)
    }
}

impl AsRef<str> for Prefixed {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[derive(Command)]
struct ByDisplay {
    #[aggregate_id]
    id: Prefixed,
}

/// `command`'s id as the runtime routes by it, checked equal to `aggregate_id`.
fn routed<C: Command>(command: &C) -> Cow<'_, str> {
    let id = command.aggregate_id_str();
    assert_eq!(id, command.aggregate_id(), "the same id as `aggregate_id`");
    id
}

#[test]
fn a_string_id_field_is_lent_and_any_other_is_formatted_as_aggregate_id_formats_it() {
    let by_string = ByString { id: "a-1".into() };
    let lent = routed(&by_string);
    assert!(
        matches!(lent, Cow::Borrowed(id) if std::ptr::eq(id, by_string.id.as_str())),
        "a `String` field is lent: {lent:?}"
    );
    assert!(matches!(routed(&ByStatic("a-2")), Cow::Borrowed("a-2")));
    assert!(matches!(
        routed(&ByBox { id: "a-3".into() }),
        Cow::Borrowed("a-3")
    ));
    assert!(matches!(
        routed(&ByArc { id: "a-4".into() }),
        Cow::Borrowed("a-4")
    ));
    assert!(matches!(
        routed(&ByCow {
            id: Cow::Owned("a-5".into())
        }),
        Cow::Borrowed("a-5")
    ));

    let number = ByNumber { id: 42 };
    assert!(matches!(routed(&number), Cow::Owned(id) if id == "42"));
    let display = ByDisplay {
        id: Prefixed("6".into()),
    };
    assert!(
        matches!(routed(&display), Cow::Owned(id) if id == "p-6"),
        "an id type that is not a string is formatted, whatever else it implements"
    );
}

#[tokio::test]
async fn a_dispatch_routes_by_the_lent_id_to_the_aggregates_stream() {
    let app = Evoq::builder().start().await.expect("the runtime starts");
    let done = app
        .dispatch(OpenAccount {
            account: "acc-routed".into(),
            initial_balance: 10,
        })
        .await
        .expect("the command runs");
    assert_eq!(done.version, 1);
    let stream = app
        .store()
        .read_stream(
            &account_stream("acc-routed"),
            1,
            evoq::store::Direction::Forward,
            10,
        )
        .await
        .expect("the stream reads");
    assert_eq!(stream.len(), 1, "the event is in the account's stream");
    assert_eq!(app.live_aggregates::<BankAccount>(), 1);
}
