//! Upcasters: events stored at an old schema version (or under an old name) are read at the
//! current version on every read path; stored data is never rewritten; a missing step is a
//! typed error (docs/semantics.md §8).

use std::sync::Arc;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::Direction;
use evoq::store::memory::InMemoryStore;
use evoq::{
    ErrorKind, ExpectedVersion, FailureKind, HandlerConfig, NewEvent, RetryStrategy, upcast,
};
use evoq_tests::backends::{Backend, Place};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// ----- the event, at version 3 -----
//
// v1: { "wallet", "amount" }                         (stored as "FundsAdded")
// v2: { "wallet", "amount", "currency" }             (renamed to "Deposited")
// v3: { "wallet", "cents", "currency" }              (amount in cents)

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "Deposited", version = 3)]
struct Deposited {
    wallet: String,
    cents: u64,
    currency: String,
}

#[upcaster(Deposited, from = 1, renamed_from = "FundsAdded")]
fn deposited_v1_to_v2(mut data: Value) -> Result<Value, UpcastError> {
    data["currency"] = json!("EUR");
    Ok(data)
}

#[upcaster(Deposited, from = 2)]
fn deposited_v2_to_v3(mut data: Value) -> Result<Value, UpcastError> {
    let amount = data["amount"]
        .as_u64()
        .ok_or_else(|| UpcastError::missing_field("amount"))?;
    data["cents"] = json!(amount * 100);
    data.as_object_mut().map(|object| object.remove("amount"));
    Ok(data)
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Reported {
    wallet: String,
    cents: u64,
    currencies: Vec<String>,
}

#[derive(Command, Debug, Clone)]
struct Report {
    #[aggregate_id]
    wallet: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Wallet {
    cents: u64,
    currencies: Vec<String>,
}

#[aggregate]
impl Wallet {
    #[handles]
    fn report(&self, cmd: &Report) -> Result<Reported, Never> {
        Ok(Reported {
            wallet: cmd.wallet.clone(),
            cents: self.cents,
            currencies: self.currencies.clone(),
        })
    }

    #[apply]
    fn deposited(&mut self, e: &Deposited) {
        self.cents += e.cents;
        self.currencies.push(e.currency.clone());
    }

    #[apply]
    fn reported(&mut self, _: &Reported) {}
}

/// Events as an old version of the code stored them.
fn v1(wallet: &str, amount: u64) -> NewEvent {
    stored(
        "FundsAdded",
        1,
        json!({ "wallet": wallet, "amount": amount }),
    )
}

fn v2(wallet: &str, amount: u64) -> NewEvent {
    stored(
        "Deposited",
        2,
        json!({ "wallet": wallet, "amount": amount, "currency": "USD" }),
    )
}

fn stored(event_type: &'static str, version: u32, data: Value) -> NewEvent {
    NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: version,
        data: serde_json::to_vec(&data).unwrap(),
        metadata: Default::default(),
    }
}

fn wallet_stream(id: &str) -> String {
    evoq::stream_id("Wallet", id)
}

/// A handler and a projection that record what they decode.
#[derive(Default)]
struct Seen {
    events: Arc<std::sync::Mutex<Vec<Deposited>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

#[event_handler(name = "seen")]
impl Seen {
    #[handles]
    async fn deposited(&mut self, e: &Deposited, _: &EventMeta) -> Result<(), Failed> {
        self.events.lock().unwrap().push(e.clone());
        Ok(())
    }
}

struct Totals {
    model: InMemoryReadModel,
}

#[projection(name = "totals", read_model = model)]
impl Totals {
    #[handles]
    async fn deposited(&mut self, e: &Deposited, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.model.put(meta.event_id().to_string(), e)?;
        Ok(())
    }
}

async fn wait(app: &Evoq, name: &str, position: u64) {
    tokio::time::timeout(
        Duration::from_secs(10),
        app.wait_for_named(name, position).without_deadline(),
    )
    .await
    .expect("in time")
    .expect("running");
}

#[tokio::test]
async fn events_stored_at_v1_are_seen_as_v3_by_replay_handlers_projections_and_rebuilds() {
    let store = Arc::new(InMemoryStore::new());
    store
        .append(
            &wallet_stream("w1"),
            ExpectedVersion::NoStream,
            vec![v1("w1", 3), v2("w1", 4)],
        )
        .await
        .unwrap();
    let before = store
        .read_stream(&wallet_stream("w1"), 0, Direction::Forward, 10)
        .await
        .unwrap();

    let seen = Seen::default();
    let handled = seen.events.clone();
    let model = InMemoryReadModel::new();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler(seen)
        .projection(Totals {
            model: model.clone(),
        })
        .start()
        .await
        .unwrap();

    // The aggregate replay.
    let done = app
        .dispatch(Report {
            wallet: "w1".into(),
        })
        .await
        .unwrap();
    let WalletEvent::Reported(report) = &done.events[0] else {
        panic!("a report");
    };
    assert_eq!(report.cents, 700);
    assert_eq!(report.currencies, ["EUR", "USD"]);

    // A handler.
    wait(&app, "seen", 2).await;
    let expected = vec![
        Deposited {
            wallet: "w1".into(),
            cents: 300,
            currency: "EUR".into(),
        },
        Deposited {
            wallet: "w1".into(),
            cents: 400,
            currency: "USD".into(),
        },
    ];
    assert_eq!(*handled.lock().unwrap(), expected);

    // A projection, and its rebuild.
    wait(&app, "totals", 2).await;
    let projected = |model: &InMemoryReadModel| {
        let mut all: Vec<Deposited> = model
            .list::<Deposited>("")
            .unwrap()
            .into_iter()
            .map(|(_, event)| event)
            .collect();
        all.sort_by_key(|event| event.cents);
        all
    };
    assert_eq!(projected(&model), expected);
    app.rebuild("totals").await.unwrap();
    assert_eq!(projected(&model), expected);

    // The stored bytes are unchanged.
    let after = store
        .read_stream(&wallet_stream("w1"), 0, Direction::Forward, 2)
        .await
        .unwrap();
    assert_eq!(after, before[..2]);
    assert_eq!(after[0].event_type, "FundsAdded");
    assert_eq!(after[0].schema_version, 1);
    assert_eq!(
        serde_json::from_slice::<Value>(&after[0].data).unwrap(),
        json!({ "wallet": "w1", "amount": 3 })
    );
    app.stop().await;
}

#[tokio::test]
async fn a_resent_command_id_returns_its_stored_events_upcast() {
    let store = Arc::new(InMemoryStore::new());
    let command_id = evoq::Uuid::now_v7();
    // A command of an old version of the code stored this event at version 1.
    let mut event = v1("w2", 5);
    event.metadata.command_id = Some(command_id);
    // With its command-log entry, as the runtime records every command.
    let command = evoq::store::NewCommand {
        command_id,
        idempotency_key: None,
        command: "Report".into(),
        aggregate: "Wallet".into(),
        deduplicate_since: Some(std::time::UNIX_EPOCH),
    };
    store
        .append_command(
            &wallet_stream("w2"),
            ExpectedVersion::NoStream,
            vec![event],
            command,
        )
        .await
        .unwrap();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    let done = app
        .command(Report {
            wallet: "w2".into(),
        })
        .command_id(command_id)
        .dispatch()
        .await
        .unwrap();
    assert_eq!(done.version, 1, "nothing appended again");
    assert_eq!(store.stream_version(&wallet_stream("w2")).await.unwrap(), 1);
    let WalletEvent::Deposited(deposited) = &done.events[0] else {
        panic!("the stored event");
    };
    assert_eq!(deposited.cents, 500, "read at version 3");
    app.stop().await;
}

#[test]
fn the_chain_runs_every_step_to_the_current_version() {
    let data = serde_json::to_vec(&json!({ "wallet": "w", "amount": 2 })).unwrap();
    let event: Deposited = upcast::decode(1, &data).unwrap();
    assert_eq!(event.cents, 200);
    assert_eq!(event.currency, "EUR");
    assert!(upcast::stored_as::<Deposited>("FundsAdded"));
    assert!(upcast::stored_as::<Deposited>("Deposited"));
    assert!(!upcast::stored_as::<Deposited>("Other"));
    assert_eq!(<Deposited as Event>::UPCASTERS.len(), 2);
}

/// An event implemented by hand, whose chain lacks the step from version 2.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Gappy {
    n: u64,
}

fn identity(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

impl Event for Gappy {
    const NAME: &'static str = "Gappy";
    const VERSION: u32 = 3;
    const UPCASTERS: &'static [evoq::Upcaster] = &[evoq::Upcaster {
        from: 1,
        renamed_from: None,
        upcast: identity,
    }];
}

#[test]
fn a_missing_step_is_a_typed_error_naming_the_event_the_stored_version_and_the_step() {
    let data = br#"{"n":1}"#;
    let error = match upcast::decode::<Gappy>(1, data) {
        Err(evoq::DecodeError::Upcast(error)) => error,
        other => panic!("expected an upcast error, got {other:?}"),
    };
    assert!(error.is_missing_step());
    assert_eq!(error.event(), Some("Gappy"));
    assert_eq!(error.stored_version(), Some(1));
    assert_eq!(error.missing_from(), Some(2));
    let message = error.to_string();
    assert!(
        message.contains("`Gappy` stored at schema version 1"),
        "{message}"
    );
    assert!(
        message.contains("no upcaster from version 2 to 3"),
        "{message}"
    );

    let newer = upcast::upcast::<Gappy>(4, data).unwrap_err();
    assert!(newer.is_newer_than_code(), "{newer}");
}

#[tokio::test]
async fn a_missing_step_fails_the_replay_with_a_typed_error_and_changes_nothing() {
    let store = Arc::new(InMemoryStore::new());
    // Version 0 has no upcaster (versions start at 1).
    store
        .append(
            &wallet_stream("w3"),
            ExpectedVersion::NoStream,
            vec![stored(
                "Deposited",
                0,
                json!({ "wallet": "w3", "amount": 1 }),
            )],
        )
        .await
        .unwrap();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    let error = app
        .dispatch(Report {
            wallet: "w3".into(),
        })
        .await
        .unwrap_err();
    let upcast = error.upcast_error().expect("an upcast error");
    assert!(upcast.is_missing_step());
    assert_eq!(upcast.missing_from(), Some(0));
    assert!(error.to_string().contains("Deposited"), "{error}");
    assert_eq!(store.stream_version(&wallet_stream("w3")).await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_upcaster_error_on_the_handler_path_follows_the_error_policy() {
    let store = Arc::new(InMemoryStore::new());
    // Version 2 without the `amount` the step to version 3 needs.
    store
        .append(
            &wallet_stream("w4"),
            ExpectedVersion::NoStream,
            vec![
                stored("Deposited", 2, json!({ "wallet": "w4", "currency": "USD" })),
                v1("w4", 1),
            ],
        )
        .await
        .unwrap();
    let seen = Seen::default();
    let handled = seen.events.clone();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler_defaults(HandlerConfig {
            retry: RetryStrategy::immediate(),
            max_attempts: 1,
            ..HandlerConfig::default()
        })
        .handler(seen)
        .start()
        .await
        .unwrap();
    wait(&app, "seen", 2).await;
    let dead = app.dead_letters("seen").list(0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .error
            .contains("the stored data has no field `amount`"),
        "{}",
        dead[0].error
    );
    assert_eq!(
        dead[0].event.schema_version, 2,
        "the stored event, unchanged"
    );
    assert_eq!(
        handled.lock().unwrap().len(),
        1,
        "the next event went through"
    );
    app.stop().await;
}

// ----- renames: one stored name, one type -----

/// The old type, kept around: its wire name is the one `Deposited` was renamed from.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "FundsAdded")]
struct FundsAdded {
    wallet: String,
    amount: u64,
}

struct OldFunds;

#[event_handler(name = "old_funds")]
impl OldFunds {
    #[handles]
    async fn added(&mut self, _: &FundsAdded, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

/// One handler that takes both the new type and the old one.
struct Both;

#[event_handler(name = "both")]
impl Both {
    #[handles]
    async fn deposited(&mut self, _: &Deposited, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }

    #[handles]
    async fn added(&mut self, _: &FundsAdded, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

/// A second type that an upcaster also renamed from `FundsAdded`.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(version = 2)]
struct Credited {
    wallet: String,
    amount: u64,
}

#[upcaster(Credited, from = 1, renamed_from = "FundsAdded")]
fn credited_v1_to_v2(data: Value) -> Result<Value, UpcastError> {
    Ok(data)
}

struct Credits;

#[event_handler(name = "credits")]
impl Credits {
    #[handles]
    async fn credited(&mut self, _: &Credited, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

#[tokio::test]
async fn a_consumer_of_the_old_type_beside_consumers_reading_it_as_the_new_type_is_refused_at_start()
 {
    let error = Evoq::builder()
        .handler(Seen::default())
        .projection(Totals {
            model: InMemoryReadModel::new(),
        })
        .handler(OldFunds)
        .start()
        .await
        .unwrap_err();
    let evoq::Error::RenameConflict {
        stored_as,
        renamed_to,
        readers,
        other_type,
        other_readers,
    } = &error
    else {
        panic!("expected a rename conflict, got {error}");
    };
    assert_eq!(
        (stored_as.as_str(), renamed_to.as_str(), other_type.as_str()),
        ("FundsAdded", "Deposited", "FundsAdded")
    );
    assert_eq!(readers, &["seen", "totals"]);
    assert_eq!(other_readers, &["old_funds"]);
    assert_eq!(
        error.to_string(),
        "events stored as `FundsAdded` would reach two event types: `Deposited`, which an upcaster \
         renamed them to (`renamed_from = \"FundsAdded\"`), read by `seen`, `totals`; and the type \
         still named `FundsAdded`, taken by `old_funds`. A stored event is read as one type: \
         handle `Deposited` in place of `FundsAdded` in `old_funds` (the upcaster brings the old \
         events to it), or, if the events named `FundsAdded` are not `Deposited`s, remove \
         `renamed_from = \"FundsAdded\"` from the upcaster of `Deposited`"
    );
}

#[tokio::test]
async fn one_handler_taking_both_the_old_and_the_new_type_is_refused_at_start() {
    let error = Evoq::builder().handler(Both).start().await.unwrap_err();
    let evoq::Error::RenameConflict {
        readers,
        other_readers,
        ..
    } = &error
    else {
        panic!("expected a rename conflict, got {error}");
    };
    assert_eq!(
        (readers, other_readers),
        (&vec!["both".to_owned()], &vec!["both".to_owned()])
    );
    assert!(
        error
            .to_string()
            .contains("handle `Deposited` in place of `FundsAdded` in `both`"),
        "{error}"
    );
}

#[tokio::test]
async fn two_types_renamed_from_one_stored_name_are_refused_at_start() {
    let error = Evoq::builder()
        .handler(Seen::default())
        .handler(Credits)
        .start()
        .await
        .unwrap_err();
    let evoq::Error::RenameConflict {
        renamed_to,
        other_type,
        other_readers,
        ..
    } = &error
    else {
        panic!("expected a rename conflict, got {error}");
    };
    assert_eq!(
        (renamed_to.as_str(), other_type.as_str()),
        ("Deposited", "Credited")
    );
    assert_eq!(other_readers, &["credits"]);
    assert!(
        error.to_string().contains(
            "and `Credited`, which another upcaster renamed them to, read by `credits`. A stored \
             event is read as one type: keep `renamed_from = \"FundsAdded\"` in the upcasters of \
             one of `Deposited` and `Credited` only"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn the_old_type_alone_or_the_new_type_in_several_consumers_starts() {
    // Without a reader of the renamed type, the old type is a type like any other.
    let app = Evoq::builder().handler(OldFunds).start().await.unwrap();
    app.stop().await;
    // Several consumers reading the old name as one type agree.
    let app = Evoq::builder()
        .handler(Seen::default())
        .handler_with(
            Seen::default(),
            evoq::HandlerOptions::new().name("seen_again"),
        )
        .start()
        .await
        .unwrap();
    app.stop().await;
}

/// Records the stored and current names of every `Deposited` it gets.
struct Names {
    seen: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

#[event_handler(name = "names")]
impl Names {
    #[handles]
    async fn deposited(&mut self, _: &Deposited, meta: &EventMeta) -> Result<(), Failed> {
        let names = (meta.event_type().to_owned(), meta.current_type().to_owned());
        self.seen.lock().unwrap().push(names);
        Ok(())
    }
}

#[tokio::test]
async fn a_handler_of_the_new_type_gets_an_event_stored_under_the_old_name_and_meta_names_both() {
    let store = Arc::new(InMemoryStore::new());
    store
        .append(
            &wallet_stream("w5"),
            ExpectedVersion::NoStream,
            vec![v1("w5", 1), v2("w5", 2)],
        )
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = Evoq::builder()
        .shared_store(store)
        .handler(Names { seen: seen.clone() })
        .start()
        .await
        .unwrap();
    wait(&app, "names", 2).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("FundsAdded".to_owned(), "Deposited".to_owned()),
            ("Deposited".to_owned(), "Deposited".to_owned()),
        ]
    );
    app.stop().await;
}

// ----- an upcaster that panics -----
//
// v1: { "jar", "coins" }
// v2: { "jar", "cents" }          (5 cents a coin; the upcaster panics on v1 data with no coins)

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(version = 2)]
struct Tipped {
    #[tag("jar")]
    jar: String,
    cents: u64,
}

#[upcaster(Tipped, from = 1)]
fn tipped_v1_to_v2(mut data: Value) -> Result<Value, UpcastError> {
    let coins = data["coins"]
        .as_u64()
        .unwrap_or_else(|| panic!("a bug in the upcaster: no coins in {data}"));
    data["cents"] = json!(coins * 5);
    Ok(data)
}

#[derive(Command, Debug, Clone)]
struct Tip {
    #[aggregate_id]
    jar: String,
}

#[derive(Default)]
struct Jar {
    cents: u64,
}

#[aggregate]
impl Jar {
    #[handles]
    fn tip(&self, cmd: &Tip) -> Result<Tipped, Never> {
        Ok(Tipped {
            jar: cmd.jar.clone(),
            cents: self.cents + 5,
        })
    }

    #[apply]
    fn tipped(&mut self, e: &Tipped) {
        self.cents = e.cents;
    }
}

#[derive(Command, Debug, Clone)]
struct TipOnce {
    #[aggregate_id]
    jar: String,
}

#[derive(Default)]
struct TipsOfJar {
    tipped: bool,
}

#[decision(name = "TipsOfJar")]
impl TipsOfJar {
    #[handles]
    #[query(all_of(types(Tipped), tag("jar", &command.jar)))]
    fn tip_once(&self, command: &TipOnce) -> Result<Option<Tipped>, Never> {
        Ok((!self.tipped).then(|| Tipped {
            jar: command.jar.clone(),
            cents: 5,
        }))
    }

    #[apply]
    fn tipped(&mut self, _: &Tipped) {
        self.tipped = true;
    }
}

/// A `Tipped` of jar `jar` stored at version 1 without the coins the upcaster needs (tagged as
/// the current code tags it).
fn tipped_v1_without_coins(jar: &str) -> NewEvent {
    let mut event = stored("Tipped", 1, json!({ "jar": jar }));
    event.metadata.tags = vec![format!("jar:{jar}")].into();
    event
}

/// The upcast error of an upcaster's panic, as every read path reports it (§8.5): an
/// `Error::Upcast` naming the event, the stored version and the step, and the panic's message.
fn assert_upcast_panic(error: &Error, path: &str) {
    let upcast = error
        .upcast_error()
        .unwrap_or_else(|| panic!("{path}: an upcast error, not {error:?}"));
    assert_eq!(
        (upcast.event(), upcast.stored_version()),
        (Some("Tipped"), Some(1)),
        "{path}: {error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("the upcaster of `Tipped` from version 1")
            && text.contains("it panicked: a bug in the upcaster"),
        "{path}: {text}"
    );
    assert_ne!(error.kind(), ErrorKind::Unavailable, "{path}: {text}");
}

/// §1.3, §8.5: an upcaster is user code; its panic in a replay is an upcast failure, never a
/// store failure (nor a panic reaching the caller).
async fn an_upcaster_that_panics_fails_a_replay_with_an_upcast_error(backend: Backend) {
    let Some(place) = Place::new(backend, "upcaster_panic_replay").await else {
        return;
    };
    let store = place.open().await;
    store
        .append(
            "Jar-j1",
            ExpectedVersion::NoStream,
            vec![tipped_v1_without_coins("j1")],
        )
        .await
        .unwrap();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    let error = app.dispatch(Tip { jar: "j1".into() }).await.unwrap_err();
    assert_upcast_panic(&error, "replay");
    assert_eq!(store.stream_version("Jar-j1").await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_upcaster_that_panics_fails_a_replay_with_an_upcast_error_in_memory() {
    an_upcaster_that_panics_fails_a_replay_with_an_upcast_error(Backend::Memory).await;
}

#[tokio::test]
async fn an_upcaster_that_panics_fails_a_replay_with_an_upcast_error_on_sqlite() {
    an_upcaster_that_panics_fails_a_replay_with_an_upcast_error(Backend::Sqlite).await;
}

/// §8.5 "Nothing panics": a decision that reads an event its upcaster panics on fails with the
/// upcast error; the panic does not unwind out of `dispatch`.
async fn an_upcaster_that_panics_fails_a_decision_with_an_upcast_error(backend: Backend) {
    let Some(place) = Place::new(backend, "upcaster_panic_decision").await else {
        return;
    };
    let store = place.open().await;
    store
        .append(
            "TipsOfJar-j2",
            ExpectedVersion::NoStream,
            vec![tipped_v1_without_coins("j2")],
        )
        .await
        .unwrap();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    let dispatching = app.clone();
    let joined =
        tokio::spawn(async move { dispatching.dispatch(TipOnce { jar: "j2".into() }).await }).await;
    let error = joined
        .expect("the dispatch returned instead of panicking")
        .unwrap_err();
    assert_upcast_panic(&error, "decision");
    assert_eq!(store.stream_version("TipsOfJar-j2").await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_upcaster_that_panics_fails_a_decision_with_an_upcast_error_in_memory() {
    an_upcaster_that_panics_fails_a_decision_with_an_upcast_error(Backend::Memory).await;
}

#[tokio::test]
async fn an_upcaster_that_panics_fails_a_decision_with_an_upcast_error_on_sqlite() {
    an_upcaster_that_panics_fails_a_decision_with_an_upcast_error(Backend::Sqlite).await;
}

/// §3.6, §8.5: the first result of a resent command, read back through an upcaster that panics,
/// is the upcast error.
#[tokio::test]
async fn a_resent_command_whose_events_an_upcaster_panics_on_gets_an_upcast_error() {
    let store = Arc::new(InMemoryStore::new());
    let command_id = evoq::Uuid::now_v7();
    let mut event = tipped_v1_without_coins("j3");
    event.metadata.command_id = Some(command_id);
    let command = evoq::store::NewCommand {
        command_id,
        idempotency_key: None,
        command: "Tip".into(),
        aggregate: "Jar".into(),
        deduplicate_since: Some(std::time::UNIX_EPOCH),
    };
    store
        .append_command("Jar-j3", ExpectedVersion::NoStream, vec![event], command)
        .await
        .unwrap();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    let error = app
        .command(Tip { jar: "j3".into() })
        .command_id(command_id)
        .dispatch()
        .await
        .unwrap_err();
    assert_upcast_panic(&error, "resent command");
    assert_eq!(store.stream_version("Jar-j3").await.unwrap(), 1);
    app.stop().await;
}

/// A handler of `Tipped`, which records what it decodes.
#[derive(Default)]
struct Tips {
    seen: Arc<std::sync::Mutex<Vec<Tipped>>>,
}

#[event_handler(name = "tips")]
impl Tips {
    #[handles]
    async fn tipped(&mut self, e: &Tipped, _: &EventMeta) -> Result<(), Failed> {
        self.seen.lock().unwrap().push(e.clone());
        Ok(())
    }
}

/// §8.5: on the handler path an upcaster's panic is an upcast failure (a dead letter of kind
/// `upcast`), not a panic of the handler, which was never called.
#[tokio::test]
async fn an_upcaster_that_panics_on_the_handler_path_dead_letters_an_upcast_failure() {
    let store = Arc::new(InMemoryStore::new());
    store
        .append(
            "Jar-j4",
            ExpectedVersion::NoStream,
            vec![
                tipped_v1_without_coins("j4"),
                stored("Tipped", 1, json!({ "jar": "j4", "coins": 2 })),
            ],
        )
        .await
        .unwrap();
    let tips = Tips::default();
    let seen = tips.seen.clone();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler_defaults(HandlerConfig {
            retry: RetryStrategy::immediate(),
            max_attempts: 1,
            ..HandlerConfig::default()
        })
        .handler(tips)
        .start()
        .await
        .unwrap();
    wait(&app, "tips", 2).await;
    let dead = app.dead_letters("tips").list(0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].kind, FailureKind::Upcast, "{}", dead[0].error);
    assert!(
        dead[0].error.contains("it panicked: a bug in the upcaster"),
        "{}",
        dead[0].error
    );
    assert_eq!(
        dead[0].event.schema_version, 1,
        "the stored event, unchanged"
    );
    assert_eq!(
        seen.lock().unwrap()[..],
        [Tipped {
            jar: "j4".into(),
            cents: 10
        }],
        "the next event went through"
    );
    app.stop().await;
}
