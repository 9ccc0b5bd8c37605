//! Decisions across streams (`#[decision]`), on the three stores: the library's rules hold under
//! concurrent lends, a decision sees exactly the events its query selects and appends under the
//! condition of the highest position it read, and its retry budget is kept exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use evoq::NewEvent;
use evoq::prelude::*;
use evoq::store::{EventFilter, ExpectedVersion};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::library::*;
use evoq_tests::spy_store::SpyStore;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

/// Every event of the store, oldest first.
async fn all_events(store: &Arc<dyn EventStore>) -> Vec<Arc<evoq::RecordedEvent>> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_all(after, 500, &EventFilter::All)
            .await
            .expect("read_all");
        let full = page.events.len() == 500;
        after = page.scanned_through;
        events.extend(page.events);
        if !full {
            return events;
        }
    }
}

/// The library's state after applying `lends` one after the other, each checked against the
/// rules: `Err` names the first that breaks them.
fn sequential(lends: &[(String, String)]) -> Result<BTreeMap<String, String>, String> {
    let mut lent_to = BTreeMap::new();
    let mut held: HashMap<&str, u32> = HashMap::new();
    for (member, book) in lends {
        if lent_to.contains_key(book) {
            return Err(format!("book {book} lent twice"));
        }
        let count = held.entry(member.as_str()).or_default();
        if *count >= LIMIT {
            return Err(format!("member {member} above {LIMIT} books"));
        }
        *count += 1;
        lent_to.insert(book.clone(), member.clone());
    }
    Ok(lent_to)
}

/// 100 lends at once, spread over `nodes` runtimes on the same store.
async fn concurrent_lends_keep_the_rules(backend: Backend, nodes: usize) {
    let Some(place) = Place::new(backend, "decisions_lends").await else {
        return;
    };
    let store = place.open().await;
    let mut apps = Vec::new();
    for node in 0..nodes {
        let store = if node == 0 {
            Arc::clone(&store)
        } else {
            place.open().await
        };
        let app = Evoq::builder()
            .shared_store(store)
            .start()
            .await
            .expect("starts");
        apps.push(Arc::new(app));
    }
    const ATTEMPTS: usize = 100;
    let barrier = Arc::new(Barrier::new(ATTEMPTS));
    let tasks: Vec<_> = (0..ATTEMPTS)
        .map(|i| {
            let app = Arc::clone(&apps[i % nodes]);
            let barrier = Arc::clone(&barrier);
            let member = format!("m{}", i % 5);
            let book = format!("b{}", (i * 3 + i / 10) % 10);
            tokio::spawn(async move {
                barrier.wait().await;
                let result = app.dispatch(lend(&member, &book)).await;
                (member, book, result)
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        let (member, book, result) = task.await.expect("the task ends");
        match result {
            Ok(done) => {
                assert_eq!(done.events.len(), 1);
                let LendingEvent::BookLent(event) = &done.events[0] else {
                    panic!("a lend appends a BookLent, got {:?}", done.events)
                };
                assert_eq!((&event.member, &event.book), (&member, &book));
                won.push((done.position.expect("a lend appends"), member, book));
            }
            Err(error) => {
                let refusal = error.rejection::<LendError>().unwrap_or_else(|| {
                    panic!("{backend:?}: every refusal is a typed domain error, got {error}")
                });
                refused.push(refusal.clone());
            }
        }
    }
    assert_eq!(won.len() + refused.len(), ATTEMPTS);
    // What the store holds is what the winners were told, in commit order.
    won.sort();
    let stored: Vec<(String, String)> = all_events(&store)
        .await
        .iter()
        .filter(|event| event.event_type == BookLent::NAME)
        .map(|event| {
            let lent: BookLent = serde_json::from_slice(&event.data).expect("decodes");
            assert!(
                event
                    .metadata
                    .tags
                    .contains(&format!("member:{}", lent.member))
            );
            assert!(event.metadata.tags.contains(&format!("book:{}", lent.book)));
            (lent.member, lent.book)
        })
        .collect();
    let winners: Vec<(String, String)> =
        won.iter().map(|(_, m, b)| (m.clone(), b.clone())).collect();
    assert_eq!(
        stored, winners,
        "{backend:?}: only the winners' lends are stored"
    );
    // The lends, one after the other, keep the rules and give the same state.
    let state = sequential(&stored).unwrap_or_else(|broken| panic!("{backend:?}: {broken}"));
    let mut held: HashMap<&str, u32> = HashMap::new();
    for member in state.values() {
        *held.entry(member.as_str()).or_default() += 1;
    }
    // Every refusal was right: books are never returned here, so a refusal's reason still holds.
    for refusal in &refused {
        match refusal {
            LendError::AlreadyLent(book) => {
                assert!(state.contains_key(book), "{backend:?}: {refusal}")
            }
            LendError::LimitReached(member) => assert_eq!(
                held.get(member.as_str()).copied(),
                Some(LIMIT),
                "{backend:?}: {refusal}"
            ),
            other => panic!("{backend:?}: a lend cannot be refused with {other}"),
        }
    }
    assert!(state.len() <= 10 && !state.is_empty());
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lends_keep_the_library_rules_in_memory() {
    concurrent_lends_keep_the_rules(Backend::Memory, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lends_keep_the_library_rules_on_sqlite() {
    concurrent_lends_keep_the_rules(Backend::Sqlite, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lends_keep_the_library_rules_on_postgres() {
    concurrent_lends_keep_the_rules(Backend::Postgres, 1).await;
}

/// Two runtimes (two nodes, two connection pools) on one PostgreSQL schema, lending at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lends_on_two_nodes_keep_the_library_rules_on_postgres() {
    concurrent_lends_keep_the_rules(Backend::Postgres, 2).await;
}

// ---------------------------------------------------------------------------------------------
// What a decision sees, and the condition it appends under
// ---------------------------------------------------------------------------------------------

/// An audit of one member and one book: its event lists what the model was given.
#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Audited {
    #[tag("audit")]
    book: String,
    seen: Vec<String>,
}

#[derive(Command, Debug, Clone)]
struct Audit {
    member: String,
    #[aggregate_id]
    book: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Seen {
    events: Vec<String>,
}

#[decision(name = "Audit")]
impl Seen {
    #[handles]
    #[query(any_of(
        all_of(
            types(BookLent, BookReturned),
            any_of(tag("member", &command.member), tag("book", &command.book)),
        ),
        all_of(types(Audited), tag(format!("audit:{}", command.book))),
    ))]
    fn audit(&self, command: &Audit) -> Result<Audited, Never> {
        Ok(Audited {
            book: command.book.clone(),
            seen: self.events.clone(),
        })
    }

    #[apply]
    fn lent(&mut self, event: &BookLent) {
        self.events
            .push(format!("lent {} {}", event.member, event.book));
    }

    #[apply]
    fn returned(&mut self, event: &BookReturned) {
        self.events
            .push(format!("returned {} {}", event.member, event.book));
    }

    #[apply]
    fn audited(&mut self, event: &Audited) {
        self.events.push(format!("audited {}", event.seen.len()));
    }
}

/// `event` as the store takes it, with its tags.
fn stored<E: evoq::Event>(event: &E) -> NewEvent {
    NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: E::NAME.into(),
        schema_version: E::VERSION,
        data: serde_json::to_vec(event).expect("encodes"),
        metadata: evoq::Metadata {
            tags: event.tags(),
            ..Default::default()
        },
    }
}

fn lent(member: &str, book: &str) -> BookLent {
    BookLent {
        member: member.into(),
        book: book.into(),
    }
}

/// Appends the events an audit of `m1` and `b1` is decided on: four it selects, among
/// others it does not; their positions, in order.
async fn append_audit_context(store: &Arc<dyn EventStore>) -> Vec<u64> {
    let returned = BookReturned {
        member: "m1".into(),
        book: "b1".into(),
    };
    let appends: Vec<(&str, NewEvent)> = vec![
        ("Loans-1", stored(&lent("m1", "b1"))),
        ("Loans-2", stored(&lent("m2", "b2"))),
        (
            "Members",
            stored(&MemberJoined {
                member: "m1".into(),
            }),
        ),
        ("Loans-1", stored(&returned)),
        ("Loans-3", stored(&lent("m2", "b1"))),
        ("Loans-4", stored(&lent("m3", "b3"))),
        ("Loans-5", stored(&lent("m1", "b5"))),
        ("Loans-6", stored(&lent("m4", "b6"))),
    ];
    let mut positions = Vec::new();
    for (stream, event) in appends {
        let done = store
            .append(stream, ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
        positions.push(done.last_position);
    }
    positions
}

/// A runtime on `store` behind a spy.
async fn start_spied(store: &Arc<dyn EventStore>) -> (Arc<SpyStore>, Evoq) {
    let spy = SpyStore::new(Arc::clone(store));
    let app = Evoq::builder()
        .shared_store(spy.clone())
        .start()
        .await
        .expect("starts");
    (spy, app)
}

async fn decide_sees_exactly_its_events(backend: Backend) {
    let Some(place) = Place::new(backend, "decisions_context").await else {
        return;
    };
    let store = place.open().await;
    let positions = append_audit_context(&store).await;
    let (spy, app) = start_spied(&store).await;
    let done = app
        .dispatch(Audit {
            member: "m1".into(),
            book: "b1".into(),
        })
        .await
        .expect("the audit runs");
    let SeenEvent::Audited(audited) = &done.events[0] else {
        panic!("an audit appends Audited")
    };
    assert_eq!(
        audited.seen,
        ["lent m1 b1", "returned m1 b1", "lent m2 b1", "lent m1 b5"],
        "{backend:?}: decide receives exactly the four selected events, oldest first"
    );
    let conditions = spy.conditions();
    assert_eq!(conditions.len(), 1);
    assert_eq!(
        conditions[0].after, positions[6],
        "{backend:?}: the condition starts after the highest position read"
    );
    assert!(
        conditions[0]
            .query
            .matches("BookLent", &["book:b1".to_owned()])
    );
    // An audit of a member and a book with no event: nothing before the head may match.
    let empty = app
        .dispatch(Audit {
            member: "m9".into(),
            book: "b9".into(),
        })
        .await
        .expect("the audit runs");
    let SeenEvent::Audited(audited) = &empty.events[0] else {
        panic!("an audit appends Audited")
    };
    assert!(audited.seen.is_empty());
    assert_eq!(
        spy.conditions()[1].after,
        0,
        "{backend:?}: an empty context reads nothing"
    );
    // The first audit's own event is in the next context of b1, and counts for the condition.
    let again = app
        .dispatch(Audit {
            member: "m1".into(),
            book: "b1".into(),
        })
        .await
        .expect("the audit runs");
    let SeenEvent::Audited(audited) = &again.events[0] else {
        panic!("an audit appends Audited")
    };
    assert_eq!(audited.seen.last().map(String::as_str), Some("audited 4"));
    assert_eq!(spy.conditions()[2].after, done.position.expect("appended"));
    app.stop().await;
}

#[tokio::test]
async fn decide_sees_exactly_the_selected_events_in_memory() {
    decide_sees_exactly_its_events(Backend::Memory).await;
}

#[tokio::test]
async fn decide_sees_exactly_the_selected_events_on_sqlite() {
    decide_sees_exactly_its_events(Backend::Sqlite).await;
}

#[tokio::test]
async fn decide_sees_exactly_the_selected_events_on_postgres() {
    decide_sees_exactly_its_events(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// A handler that receives the context's events as a list
// ---------------------------------------------------------------------------------------------

/// The audit's command, for the decisions whose handler takes the list.
#[derive(Command, Debug, Clone)]
struct ListAudit {
    member: String,
    #[aggregate_id]
    book: String,
}

/// The same, for the cached one.
#[derive(Command, Debug, Clone)]
struct CachedListAudit {
    member: String,
    #[aggregate_id]
    book: String,
}

/// A decision with no state of its own: its handler reads the list. Its `#[apply]` methods
/// name the events it takes (and do nothing).
#[derive(Default)]
struct Listed;

/// An event of either list decision as `ListedEvent` (their enums have the same members).
fn listed(event: &impl EventSet) -> ListedEvent {
    let data = event.encode().expect("encodes");
    ListedEvent::decode(event.event_type(), &data)
        .expect("decodes")
        .expect("a member of both enums")
}

/// What an event of the list says.
fn describe(event: &impl EventSet) -> String {
    match listed(event) {
        ListedEvent::BookLent(e) => format!("lent {} {}", e.member, e.book),
        ListedEvent::BookReturned(e) => format!("returned {} {}", e.member, e.book),
        ListedEvent::Audited(e) => format!("audited {}", e.seen.len()),
    }
}

#[decision(name = "ListAudit")]
impl Listed {
    #[handles]
    #[query(any_of(
        all_of(
            types(BookLent, BookReturned),
            any_of(tag("member", &command.member), tag("book", &command.book)),
        ),
        all_of(types(Audited), tag(format!("audit:{}", command.book))),
    ))]
    fn audit(&self, command: &ListAudit, context: &[ListedEvent]) -> Result<Audited, Never> {
        Ok(Audited {
            book: command.book.clone(),
            seen: context.iter().map(describe).collect(),
        })
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {}

    #[apply]
    fn returned(&mut self, _: &BookReturned) {}

    #[apply]
    fn audited(&mut self, _: &Audited) {}
}

/// The same decision, its model (the list with it) kept between commands.
#[derive(Default)]
struct CachedListed;

#[decision(name = "CachedListAudit", cached)]
impl CachedListed {
    #[handles]
    #[query(any_of(
        all_of(
            types(BookLent, BookReturned),
            any_of(tag("member", &command.member), tag("book", &command.book)),
        ),
        all_of(types(Audited), tag(format!("audit:{}", command.book))),
    ))]
    fn audit(
        &self,
        command: &CachedListAudit,
        context: &[CachedListedEvent],
    ) -> Result<Audited, Never> {
        Ok(Audited {
            book: command.book.clone(),
            seen: context.iter().map(describe).collect(),
        })
    }

    /// The same query, decided on the model alone: its kept model has no list.
    #[handles]
    #[query(any_of(
        all_of(
            types(BookLent, BookReturned),
            any_of(tag("member", &command.member), tag("book", &command.book)),
        ),
        all_of(types(Audited), tag(format!("audit:{}", command.book))),
    ))]
    fn peek(&self, command: &CachedPeek) -> Result<Option<Audited>, Never> {
        let _ = command;
        Ok(None)
    }

    #[apply]
    fn lent(&mut self, _: &BookLent) {}

    #[apply]
    fn returned(&mut self, _: &BookReturned) {}

    #[apply]
    fn audited(&mut self, _: &Audited) {}
}

/// A command of the cached decision whose handler takes no list.
#[derive(Command, Debug, Clone)]
struct CachedPeek {
    member: String,
    #[aggregate_id]
    book: String,
}

/// What the `Audited` event a dispatch appended lists.
fn seen(events: &[impl EventSet]) -> Vec<String> {
    match events.first().map(listed) {
        Some(ListedEvent::Audited(audited)) => audited.seen,
        _ => panic!("an audit appends Audited"),
    }
}

async fn decide_receives_its_events_as_a_list(backend: Backend) {
    let Some(place) = Place::new(backend, "decisions_list").await else {
        return;
    };
    let store = place.open().await;
    let positions = append_audit_context(&store).await;
    let (spy, app) = start_spied(&store).await;
    let four = ["lent m1 b1", "returned m1 b1", "lent m2 b1", "lent m1 b5"];
    let audit = |member: &str, book: &str| ListAudit {
        member: member.into(),
        book: book.into(),
    };
    let done = app
        .dispatch(audit("m1", "b1"))
        .await
        .expect("the audit runs");
    assert_eq!(
        seen(&done.events),
        four,
        "{backend:?}: the handler receives exactly the four selected events, oldest first"
    );
    assert_eq!(
        spy.conditions()[0].after,
        positions[6],
        "{backend:?}: the condition starts after the highest position read"
    );
    let empty = app
        .dispatch(audit("m9", "b9"))
        .await
        .expect("the audit runs");
    assert!(
        seen(&empty.events).is_empty(),
        "{backend:?}: an empty context is an empty list"
    );
    let again = app
        .dispatch(audit("m1", "b1"))
        .await
        .expect("the audit runs");
    assert_eq!(
        seen(&again.events),
        [&four[..], &["audited 4"]].concat(),
        "{backend:?}: the first audit's own event is in the next list"
    );

    // Cached: the kept list grows with the command's own events and what others append. A
    // model kept for a handler of the same query that takes no list is not the list's.
    app.dispatch(CachedPeek {
        member: "m1".into(),
        book: "b1".into(),
    })
    .await
    .expect("peeked");
    let cached = |member: &str, book: &str| CachedListAudit {
        member: member.into(),
        book: book.into(),
    };
    let first = app
        .dispatch(cached("m1", "b1"))
        .await
        .expect("the audit runs");
    assert_eq!(
        seen(&first.events),
        [&four[..], &["audited 4", "audited 5"]].concat(),
        "{backend:?}: a cached model's first command reads the whole list"
    );
    let read = spy.events_queried.load(Ordering::SeqCst);
    let second = app
        .dispatch(cached("m1", "b1"))
        .await
        .expect("the audit runs");
    assert_eq!(
        seen(&second.events),
        [&four[..], &["audited 4", "audited 5", "audited 6"]].concat(),
        "{backend:?}: the kept list holds the command's own event"
    );
    assert_eq!(
        spy.events_queried.load(Ordering::SeqCst),
        read,
        "{backend:?}: nothing is read back for it"
    );
    store
        .append(
            "Loans-7",
            ExpectedVersion::Any,
            vec![stored(&lent("m7", "b1"))],
        )
        .await
        .expect("append");
    let third = app
        .dispatch(cached("m1", "b1"))
        .await
        .expect("the audit runs");
    assert_eq!(
        seen(&third.events),
        [
            &four[..],
            &[
                "audited 4",
                "audited 5",
                "audited 6",
                "audited 7",
                "lent m7 b1"
            ]
        ]
        .concat(),
        "{backend:?}: what another writer appended joins the list"
    );
    assert_eq!(
        spy.events_queried.load(Ordering::SeqCst),
        read + 1,
        "{backend:?}: only the new event is read"
    );
    app.stop().await;
}

#[tokio::test]
async fn decide_receives_the_selected_events_as_a_list_in_memory() {
    decide_receives_its_events_as_a_list(Backend::Memory).await;
}

#[tokio::test]
async fn decide_receives_the_selected_events_as_a_list_on_sqlite() {
    decide_receives_its_events_as_a_list(Backend::Sqlite).await;
}

#[tokio::test]
async fn decide_receives_the_selected_events_as_a_list_on_postgres() {
    decide_receives_its_events_as_a_list(Backend::Postgres).await;
}

#[test]
fn a_decision_under_test_receives_the_given_events_as_its_list() {
    AggregateTest::<Listed>::given([lent("m1", "b1"), lent("m2", "b1")])
        .when(ListAudit {
            member: "m1".into(),
            book: "b1".into(),
        })
        .then_events([Audited {
            book: "b1".into(),
            seen: vec!["lent m1 b1".into(), "lent m2 b1".into()],
        }])
        .and_when(ListAudit {
            member: "m1".into(),
            book: "b1".into(),
        })
        .then_events([Audited {
            book: "b1".into(),
            seen: vec!["lent m1 b1".into(), "lent m2 b1".into(), "audited 2".into()],
        }]);
}

// ---------------------------------------------------------------------------------------------
// The retry budget
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Strict;

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Marked {
    #[tag("thing")]
    thing: String,
}

#[derive(Command, Debug, Clone)]
struct Mark {
    #[aggregate_id]
    thing: String,
}

#[decision(name = "Strict", attempts = 3)]
impl Strict {
    #[handles]
    #[query(all_of(types(Marked), tag("thing", &command.thing)))]
    fn mark(&self, command: &Mark) -> Result<Marked, Never> {
        Ok(Marked {
            thing: command.thing.clone(),
        })
    }

    #[apply]
    fn marked(&mut self, _: &Marked) {}
}

/// `Strict` with no budget of its own: the dispatch's retry limit plus one.
#[derive(Default)]
struct Lenient;

#[derive(Command, Debug, Clone)]
struct MarkLeniently {
    #[aggregate_id]
    thing: String,
}

#[decision(name = "Lenient")]
impl Lenient {
    #[handles]
    #[query(all_of(types(Marked), tag("thing", &command.thing)))]
    fn mark(&self, command: &MarkLeniently) -> Result<Marked, Never> {
        Ok(Marked {
            thing: command.thing.clone(),
        })
    }

    #[apply]
    fn marked(&mut self, _: &Marked) {}
}

async fn budget_is_kept(backend: Backend) {
    let Some(place) = Place::new(backend, "decisions_budget").await else {
        return;
    };
    let spy = SpyStore::new(place.open().await);
    spy.violations.store(u32::MAX, Ordering::SeqCst);
    let app = Evoq::builder()
        .shared_store(spy.clone())
        .start()
        .await
        .expect("starts");
    let error = app
        .dispatch(Mark { thing: "t1".into() })
        .await
        .expect_err("every attempt is violated");
    match &error {
        evoq::Error::DecisionConflict {
            decision,
            command,
            attempts,
            stream,
            ..
        } => {
            assert_eq!((*decision, *command, *attempts), ("Strict", "Mark", 3));
            assert_eq!(stream, "Strict-t1");
        }
        other => panic!("{backend:?}: a spent budget is DecisionConflict, got {other}"),
    }
    assert!(error.is_conflict());
    assert_eq!(error.kind(), evoq::ErrorKind::Conflict);
    assert_eq!(
        spy.conditional_appends.load(Ordering::SeqCst),
        3,
        "{backend:?}"
    );
    assert_eq!(
        spy.query_reads.load(Ordering::SeqCst),
        3,
        "{backend:?}: a read per attempt"
    );
    // Budgets from the dispatch's retry limit, any size: exactly that many attempts, then the
    // typed error, nothing else.
    for budget in [5u32, 12] {
        spy.conditional_appends.store(0, Ordering::SeqCst);
        let error = app
            .command(MarkLeniently { thing: "t2".into() })
            .retry_limit(budget - 1)
            .dispatch()
            .await
            .expect_err("every attempt is violated");
        assert!(
            matches!(error, evoq::Error::DecisionConflict { attempts, .. } if attempts == budget),
            "{backend:?}: budget {budget}: {error}"
        );
        assert_eq!(
            spy.conditional_appends.load(Ordering::SeqCst),
            budget as usize,
            "{backend:?}"
        );
    }
    // Two violations, then the store lets it through: the third attempt appends.
    spy.conditional_appends.store(0, Ordering::SeqCst);
    spy.violations.store(2, Ordering::SeqCst);
    let done = app
        .dispatch(Mark { thing: "t3".into() })
        .await
        .expect("the third attempt is within the budget");
    assert_eq!(spy.conditional_appends.load(Ordering::SeqCst), 3);
    assert_eq!(done.version, 1);
    assert_eq!(*spy.head().borrow(), done.position.expect("appended"));
    app.stop().await;
}

#[tokio::test]
async fn a_spent_budget_is_a_typed_error_after_exactly_that_many_attempts_in_memory() {
    budget_is_kept(Backend::Memory).await;
}

#[tokio::test]
async fn a_spent_budget_is_a_typed_error_after_exactly_that_many_attempts_on_sqlite() {
    budget_is_kept(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_spent_budget_is_a_typed_error_after_exactly_that_many_attempts_on_postgres() {
    budget_is_kept(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// The same pipeline as an aggregate's
// ---------------------------------------------------------------------------------------------

/// Records what the middleware saw of each dispatch.
#[derive(Clone, Default)]
struct Watch {
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

#[evoq::async_trait]
impl evoq::Middleware for Watch {
    async fn before_dispatch(&self, pipeline: &mut evoq::Pipeline<'_>) {
        let lend = pipeline.command_as::<LendBook>().map(|c| c.member.clone());
        self.seen.lock().expect("not poisoned").push(format!(
            "before {} {} {} {:?}",
            pipeline.command_name(),
            pipeline.aggregate(),
            pipeline.aggregate_id(),
            lend
        ));
        pipeline
            .context_mut()
            .metadata
            .insert("desk".into(), "front".into());
    }

    async fn after_dispatch(&self, pipeline: &mut evoq::Pipeline<'_>) {
        let position = pipeline.assigned("position").cloned();
        self.seen
            .lock()
            .expect("not poisoned")
            .push(format!("after {position:?}"));
    }

    async fn after_failure(&self, pipeline: &mut evoq::Pipeline<'_>) {
        let refused = pipeline
            .error()
            .and_then(|error| error.rejection::<LendError>())
            .cloned();
        self.seen
            .lock()
            .expect("not poisoned")
            .push(format!("failed {refused:?}"));
    }
}

#[tokio::test]
async fn middleware_wraps_a_decision_like_an_aggregate() {
    let watch = Watch::default();
    let app = Evoq::builder()
        .middleware(watch.clone())
        .start()
        .await
        .expect("starts");
    let done = app.dispatch(lend("m1", "b1")).await.expect("lent");
    let refused = app
        .dispatch(lend("m2", "b1"))
        .await
        .expect_err("already lent");
    assert!(refused.rejection::<LendError>().is_some());
    let seen = watch.seen.lock().expect("not poisoned").clone();
    assert_eq!(
        seen,
        [
            "before LendBook Lending b1 Some(\"m1\")".to_owned(),
            format!("after Some(Number({}))", done.position.expect("appended")),
            "before LendBook Lending b1 Some(\"m2\")".to_owned(),
            "failed Some(AlreadyLent(\"b1\"))".to_owned(),
        ]
    );
    // An expected version means nothing to a decision: refused before anything runs.
    let pinned = app
        .command(lend("m3", "b3"))
        .expected_version(0)
        .dispatch()
        .await
        .expect_err("a decision has no expected version");
    assert!(
        matches!(
            pinned,
            evoq::Error::UnsupportedOption {
                option: "expected_version",
                ..
            }
        ),
        "{pinned}"
    );
    assert_eq!(pinned.kind(), evoq::ErrorKind::InvalidInput);
    // The middleware's metadata is in the event, beside its tags.
    let events = app
        .store()
        .read_stream("Lending-b1", 1, evoq::store::Direction::Forward, 10)
        .await
        .expect("read");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].metadata.user.get("desk").map(String::as_str),
        Some("front")
    );
    assert_eq!(&events[0].metadata.tags[..], ["member:m1", "book:b1"]);
    assert_eq!(events[0].metadata.command_id, Some(done.command_id));
    app.stop().await;
}

async fn a_resent_key_gets_the_first_result_after_a_restart(backend: Backend) {
    let Some(place) = Place::new(backend, "decisions_keys").await else {
        return;
    };
    let start = || async {
        Evoq::builder()
            .shared_store(place.open().await)
            .start()
            .await
            .expect("starts")
    };
    let app = start().await;
    let first = app
        .command(lend("m1", "b1"))
        .idempotency_key("lend-1")
        .dispatch()
        .await
        .expect("lent");
    // Resent at once: the cache answers.
    let again = app
        .command(lend("m1", "b1"))
        .idempotency_key("lend-1")
        .dispatch()
        .await
        .expect("the first result, not a refusal");
    assert_eq!(again.position, first.position);
    app.stop().await;
    drop(app);
    // After a restart the command log answers: the book is not "already lent" to its borrower.
    let app = start().await;
    let after_restart = app
        .command(lend("m1", "b1"))
        .idempotency_key("lend-1")
        .dispatch()
        .await
        .expect("the first result, from the command log");
    assert_eq!(after_restart.position, first.position);
    assert_eq!(after_restart.command_id, first.command_id);
    assert_eq!(after_restart.events, first.events);
    // The key with another command is refused as reused.
    let reused = app
        .command(lend("m2", "b2"))
        .idempotency_key("lend-1")
        .dispatch()
        .await
        .expect_err("a key is one command");
    assert!(
        matches!(reused, evoq::Error::IdempotencyKeyReused { .. }),
        "{reused}"
    );
    let lends = all_events(&app.store().clone())
        .await
        .iter()
        .filter(|event| event.event_type == BookLent::NAME)
        .count();
    assert_eq!(lends, 1, "{backend:?}: the lend ran once");
    app.stop().await;
}

#[tokio::test]
async fn a_resent_key_gets_the_first_result_after_a_restart_on_sqlite() {
    a_resent_key_gets_the_first_result_after_a_restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_resent_key_gets_the_first_result_after_a_restart_on_postgres() {
    a_resent_key_gets_the_first_result_after_a_restart(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// Over HTTP, like any command
// ---------------------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct Loan {
    member: String,
}

async fn lend_over_http(
    axum::extract::State(app): axum::extract::State<Evoq>,
    axum::extract::Path(book): axum::extract::Path<String>,
    axum::Json(loan): axum::Json<Loan>,
) -> evoq::axum::ApiResult<evoq::axum::CommandResponse<Dispatched<Lending>>, LendError> {
    Ok(app.dispatch(lend(&loan.member, &book)).await?.into())
}

/// One request over a real TCP connection: the status line, the headers and the body.
async fn post(port: u16, path: &str, body: &str) -> String {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("receive");
        response
    })
    .await
    .expect("the client thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_answers_over_http_with_its_token_and_its_refusals_as_problems() {
    let app = Evoq::builder().start().await.expect("starts");
    let router = axum::Router::new()
        .route("/books/{book}/loan", axum::routing::post(lend_over_http))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let lent = post(port, "/books/b1/loan", r#"{"member":"m1"}"#).await;
    assert!(lent.starts_with("HTTP/1.1 200"), "{lent}");
    assert!(lent.contains("evoq-token: 1"), "{lent}");
    assert!(lent.contains(r#""aggregate":"Lending""#), "{lent}");
    assert!(lent.contains(r#""type":"BookLent""#), "{lent}");
    let taken = post(port, "/books/b1/loan", r#"{"member":"m2"}"#).await;
    assert!(taken.starts_with("HTTP/1.1 409"), "{taken}");
    assert!(taken.contains("application/problem+json"), "{taken}");
    assert!(taken.contains("book `b1` is already lent"), "{taken}");
    for book in ["b2", "b3"] {
        let lent = post(port, &format!("/books/{book}/loan"), r#"{"member":"m1"}"#).await;
        assert!(lent.starts_with("HTTP/1.1 200"), "{lent}");
    }
    let limit = post(port, "/books/b4/loan", r#"{"member":"m1"}"#).await;
    assert!(limit.starts_with("HTTP/1.1 422"), "{limit}");
    assert!(limit.contains("already holds 3 books"), "{limit}");
    server.abort();
    app.stop().await;
}

/// A resend whose first run happened on another node after the resend's log lookup: its own
/// first run's event refuses it ("already lent"), and the runtime answers with the first result
/// from the command log instead of the refusal.
#[tokio::test]
async fn a_resend_refused_by_its_own_first_run_gets_the_first_result() {
    let store: Arc<dyn EventStore> = Arc::new(evoq::store::memory::InMemoryStore::new());
    let first_node = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .start()
        .await
        .expect("starts");
    let first = first_node
        .command(lend("m1", "b1"))
        .idempotency_key("lend-once")
        .dispatch()
        .await
        .expect("lent");
    let spy = SpyStore::new(Arc::clone(&store));
    let second_node = Evoq::builder()
        .shared_store(spy.clone())
        .start()
        .await
        .expect("starts");
    spy.hidden_lookups.store(1, Ordering::SeqCst);
    let resent = second_node
        .command(lend("m1", "b1"))
        .idempotency_key("lend-once")
        .dispatch()
        .await
        .expect("the first result, not \"already lent\"");
    assert_eq!(resent.command_id, first.command_id);
    assert_eq!(resent.position, first.position);
    assert_eq!(
        spy.hidden_lookups.load(Ordering::SeqCst),
        0,
        "the lookup was hidden once"
    );
    first_node.stop().await;
    second_node.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A cached model
// ---------------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Tallied {
    #[tag("tally")]
    tally: String,
    n: u64,
}

#[derive(Command, Debug, Clone)]
struct Tally {
    #[aggregate_id]
    tally: String,
}

#[derive(Default)]
struct TallyModel {
    count: u64,
}

#[decision(name = "Tally", cached, idle_timeout = "50ms")]
impl TallyModel {
    #[handles]
    #[query(all_of(types(Tallied), tag("tally", &command.tally)))]
    fn tally(&self, command: &Tally) -> Result<Tallied, Never> {
        Ok(Tallied {
            tally: command.tally.clone(),
            n: self.count + 1,
        })
    }

    #[apply]
    fn tallied(&mut self, event: &Tallied) {
        self.count = event.n;
    }
}

async fn tally(app: &Evoq, name: &str) -> u64 {
    let done = app
        .dispatch(Tally { tally: name.into() })
        .await
        .expect("tallied");
    let TallyModelEvent::Tallied(event) = &done.events[0];
    event.n
}

#[tokio::test]
async fn a_cached_model_reads_only_what_is_new_and_is_dropped_when_idle() {
    let store: Arc<dyn EventStore> = Arc::new(evoq::store::memory::InMemoryStore::new());
    let spy = SpyStore::new(Arc::clone(&store));
    let app = Evoq::builder()
        .shared_store(spy.clone())
        .start()
        .await
        .expect("starts");
    for expected in 1..=10 {
        assert_eq!(tally(&app, "t1").await, expected);
    }
    assert_eq!(
        spy.events_queried.load(Ordering::SeqCst),
        0,
        "the model applies its own events: nothing is read back"
    );
    assert_eq!(app.decision_models(), 1);
    // Another node appends to the boundary: the next command catches the model up.
    store
        .append(
            "Elsewhere",
            ExpectedVersion::Any,
            vec![stored(&Tallied {
                tally: "t1".into(),
                n: 11,
            })],
        )
        .await
        .expect("append");
    assert_eq!(tally(&app, "t1").await, 12);
    assert_eq!(
        spy.events_queried.load(Ordering::SeqCst),
        1,
        "only the new event is read"
    );
    // Idle past its timeout: swept, and the next command reads the whole context again.
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    app.sweep_hibernated().await;
    assert_eq!(app.decision_models(), 0);
    assert_eq!(tally(&app, "t1").await, 13);
    assert_eq!(spy.events_queried.load(Ordering::SeqCst), 1 + 12);
    // A violated condition catches the model up and decides again.
    spy.violations.store(1, Ordering::SeqCst);
    assert_eq!(tally(&app, "t1").await, 14);
    app.stop().await;
}

/// Two boundaries whose queries print alike (a tag value holding `, tag`) are two models: a
/// cached decision decides as an uncached one.
#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Shelved {
    #[tag("book")]
    book: String,
    #[tag("member")]
    member: String,
}

#[derive(Command, Debug, Clone)]
struct ShelveFor {
    #[aggregate_id]
    shelf: String,
    book: String,
    member: String,
}

#[derive(Command, Debug, Clone)]
struct ShelveAny {
    #[aggregate_id]
    shelf: String,
    book: String,
}

#[derive(Debug, thiserror::Error)]
#[error("taken: {0} event(s) in the context")]
struct Taken(u64);

#[derive(Default)]
struct ShelfModel {
    seen: u64,
}

#[decision(name = "Shelf", cached)]
impl ShelfModel {
    #[handles]
    #[query(all_of(types(Shelved), tag("book", &command.book), tag("member", &command.member)))]
    fn shelve_for(&self, command: &ShelveFor) -> Result<Shelved, Taken> {
        if self.seen > 0 {
            return Err(Taken(self.seen));
        }
        Ok(Shelved {
            book: command.book.clone(),
            member: command.member.clone(),
        })
    }

    #[handles]
    #[query(all_of(types(Shelved), tag("book", &command.book)))]
    fn shelve_any(&self, command: &ShelveAny) -> Result<Shelved, Taken> {
        if self.seen > 0 {
            return Err(Taken(self.seen));
        }
        Ok(Shelved {
            book: command.book.clone(),
            member: String::new(),
        })
    }

    #[apply]
    fn shelved(&mut self, _: &Shelved) {
        self.seen += 1;
    }
}

#[tokio::test]
async fn two_queries_that_print_alike_keep_two_models() {
    let app = Evoq::builder().start().await.expect("starts");
    app.dispatch(ShelveFor {
        shelf: "s1".into(),
        book: "x".into(),
        member: "y".into(),
    })
    .await
    .expect("nothing tagged book x and member y yet");
    // Its query prints as the one above, but selects the events tagged with this one book.
    let spoofed = "x, tag member:y";
    app.dispatch(ShelveAny {
        shelf: "s2".into(),
        book: spoofed.into(),
    })
    .await
    .expect("no event is tagged with this book");
    // And the other way round: the first boundary's model holds its own event only.
    let error = app
        .dispatch(ShelveFor {
            shelf: "s1".into(),
            book: "x".into(),
            member: "y".into(),
        })
        .await
        .expect_err("book x and member y are taken");
    assert!(error.to_string().contains("taken: 1 event"), "{error}");
    let error = app
        .dispatch(ShelveAny {
            shelf: "s2".into(),
            book: spoofed.into(),
        })
        .await
        .expect_err("this book is taken");
    assert!(error.to_string().contains("taken: 1 event"), "{error}");
    assert_eq!(app.decision_models(), 2);
    app.stop().await;
}

/// A model that panics while applying is dropped: the count of kept models says so, and the
/// next command rebuilds it.
#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Counted {
    #[tag("counter")]
    counter: String,
}

#[derive(Command, Debug, Clone)]
struct Count {
    #[aggregate_id]
    counter: String,
}

/// While set, the model of `Counting` panics applying any event.
static COUNTING_PANICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Default)]
struct CountModel {
    count: u64,
}

#[decision(name = "Counting", cached)]
impl CountModel {
    #[handles]
    #[query(all_of(types(Counted), tag("counter", &command.counter)))]
    fn count(&self, command: &Count) -> Result<Counted, Never> {
        Ok(Counted {
            counter: command.counter.clone(),
        })
    }

    #[apply]
    fn counted(&mut self, _: &Counted) {
        assert!(
            !COUNTING_PANICS.load(Ordering::SeqCst),
            "the model cannot apply this event"
        );
        self.count += 1;
    }
}

#[tokio::test]
async fn a_model_dropped_by_a_panic_is_not_counted_as_kept() {
    let app = Evoq::builder().start().await.expect("starts");
    let count = || Count {
        counter: "c1".into(),
    };
    app.dispatch(count()).await.expect("counted");
    assert_eq!(app.decision_models(), 1);
    COUNTING_PANICS.store(true, Ordering::SeqCst);
    let _ = app.dispatch(count()).await;
    COUNTING_PANICS.store(false, Ordering::SeqCst);
    assert_eq!(app.decision_models(), 0, "its model was dropped");
    let done = app
        .dispatch(count())
        .await
        .expect("the next command rebuilds the model");
    assert_eq!(done.version, 3);
    assert_eq!(app.decision_models(), 1);
    app.stop().await;
}

/// A decision's stream id the store cannot hold (PostgreSQL: a NUL character, more than 2,048
/// bytes) is the id's fault, as for an aggregate: `InvalidAggregateId`, naming the decision
/// and the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_id_the_store_cannot_hold_is_an_invalid_aggregate_id_on_postgres() {
    let Some(place) = Place::new(Backend::Postgres, "decision_bad_id").await else {
        return;
    };
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .start()
        .await
        .expect("starts");
    // The id is the stream's only: the events' tags are storable.
    for id in ["bad\0id".to_owned(), "y".repeat(3_000)] {
        let error = app
            .dispatch(ShelveAny {
                shelf: id,
                book: "b".into(),
            })
            .await
            .expect_err("the store cannot hold the stream id");
        assert!(
            matches!(
                &error,
                evoq::Error::InvalidAggregateId {
                    aggregate: "Shelf",
                    command: "ShelveAny",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.kind(), evoq::ErrorKind::InvalidInput);
    }
    assert_eq!(*app.store().head().borrow(), 0, "nothing was appended");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Consistency waits
// ---------------------------------------------------------------------------------------------

/// Counts the lends it has handled, slowly.
#[derive(Clone, Default)]
struct LoanCounter {
    seen: Arc<std::sync::atomic::AtomicU64>,
}

#[event_handler(name = "loan_counter", strong)]
impl LoanCounter {
    #[handles]
    async fn lent(&mut self, _: &BookLent, _: &EventMeta) -> Result<(), Never> {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        self.seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_decision_returns_once_its_strong_handlers_handled_its_events() {
    let counter = LoanCounter::default();
    let seen = Arc::clone(&counter.seen);
    let app = Evoq::builder()
        .handler(counter)
        .start()
        .await
        .expect("starts");
    app.command(lend("m1", "b1"))
        .consistency(evoq::Consistency::Strong)
        .dispatch()
        .await
        .expect("lent");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the handler had handled the lend when the dispatch returned"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input and faults
// ---------------------------------------------------------------------------------------------

#[derive(Command, Debug, Clone)]
struct MarkOrPanic {
    #[aggregate_id]
    thing: String,
    panic_in_handler: bool,
}

#[derive(Default)]
struct Fragile;

#[decision(name = "Fragile")]
impl Fragile {
    #[handles]
    #[query(all_of(types(Marked), tag("thing", &command.thing)))]
    fn mark(&self, command: &MarkOrPanic) -> Result<Marked, Never> {
        assert!(!command.panic_in_handler, "the handler gave up");
        Ok(Marked {
            thing: command.thing.clone(),
        })
    }

    #[apply]
    fn marked(&mut self, _: &Marked) {}
}

#[tokio::test]
async fn a_panicking_decision_is_a_typed_error_and_appends_nothing() {
    let app = Evoq::builder().start().await.expect("starts");
    let error = app
        .dispatch(MarkOrPanic {
            thing: "t1".into(),
            panic_in_handler: true,
        })
        .await
        .expect_err("the handler panicked");
    match &error {
        evoq::Error::Panicked {
            events_stored,
            message,
            ..
        } => {
            assert!(!events_stored);
            assert!(message.contains("the handler gave up"), "{message}");
        }
        other => panic!("a panic is Error::Panicked, got {other}"),
    }
    assert_eq!(*app.store().head().borrow(), 0, "nothing was appended");
    let done = app
        .dispatch(MarkOrPanic {
            thing: "t1".into(),
            panic_in_handler: false,
        })
        .await
        .expect("the next command runs");
    assert_eq!(done.version, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_store_without_conditional_appends_refuses_a_decision_by_name() {
    let app = Evoq::builder()
        .store(evoq_tests::faulty_store::FaultyStore::default())
        .start()
        .await
        .expect("starts");
    let error = app
        .dispatch(lend("m1", "b1"))
        .await
        .expect_err("the store cannot append under a condition");
    assert!(
        matches!(&error, evoq::Error::Store(evoq::StoreError::Refused { reason, .. }) if reason.contains("append_if")),
        "{error}"
    );
    assert_eq!(*app.store().head().borrow(), 0, "nothing was appended");
    app.stop().await;
}
