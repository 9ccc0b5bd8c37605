//! Telemetry of the command path (docs/semantics.md §9): the `evoq.dispatch` stop event counts
//! the events, a keyed dispatch's aggregate span is a child of its dispatch span, and an
//! integrity violation raises an alarm naming its stage.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use evoq::prelude::*;
use evoq_tests::bank::*;
use evoq_tests::faulty_store::FaultyStore;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One captured event: its name, level and fields.
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    level: Level,
    fields: BTreeMap<String, String>,
}

/// One captured span: its name and its parent's.
#[derive(Clone, Debug)]
struct Opened {
    name: String,
    parent: Option<String>,
}

#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<Seen>>>,
    spans: Arc<Mutex<Vec<Opened>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent().map(|p| p.name().to_owned()));
        self.spans.lock().unwrap().push(Opened {
            name: attrs.metadata().name().to_owned(),
            parent,
        });
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().unwrap().push(Seen {
            name: event.metadata().name().to_owned(),
            level: *event.metadata().level(),
            fields,
        });
    }
}

impl Capture {
    fn events(&self, name: &str) -> Vec<Seen> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.name == name)
            .cloned()
            .collect()
    }

    fn spans(&self, name: &str) -> Vec<Opened> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }
}

fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(capture.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}

#[tokio::test]
async fn the_dispatch_stop_event_counts_the_events_appended() {
    let (capture, _guard) = capture();
    let app = Evoq::builder().start().await.unwrap();
    app.dispatch(OpenAccount {
        account: "a".into(),
        initial_balance: 0,
    })
    .await
    .unwrap();
    app.dispatch(DepositMany {
        account: "a".into(),
        amount: 1,
        times: 3,
    })
    .await
    .unwrap();
    let stops: Vec<_> = capture
        .events("evoq.dispatch")
        .into_iter()
        .filter(|e| e.fields.get("stage").map(String::as_str) == Some("stop"))
        .map(|e| e.fields.get("events").cloned())
        .collect();
    assert_eq!(
        stops,
        [Some("1".to_owned()), Some("3".to_owned())],
        "each stop event carries the number of events"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_keyed_dispatchs_aggregate_span_is_a_child_of_its_dispatch_span() {
    let (capture, _guard) = capture();
    let app = Evoq::builder().start().await.unwrap();
    app.command(OpenAccount {
        account: "a".into(),
        initial_balance: 0,
    })
    .idempotency_key("open-a")
    .dispatch()
    .await
    .unwrap();
    let executes = capture.spans("evoq.aggregate.execute");
    assert_eq!(executes.len(), 1, "{executes:?}");
    assert_eq!(
        executes[0].parent.as_deref(),
        Some("evoq.dispatch"),
        "the keyed job runs in its dispatch's span"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_integrity_violation_raises_an_alarm_naming_its_stage() {
    let (capture, _guard) = capture();
    let store = FaultyStore::new();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    let open = || {
        app.dispatch(OpenAccount {
            account: "a".into(),
            initial_balance: 0,
        })
    };

    store.corrupt_reads.store(true, Ordering::SeqCst);
    let error = open().await.unwrap_err();
    assert!(error.to_string().contains("integrity"), "{error}");
    store.corrupt_reads.store(false, Ordering::SeqCst);

    store.corrupt_appends.store(true, Ordering::SeqCst);
    let error = open().await.unwrap_err();
    assert!(error.to_string().contains("integrity"), "{error}");
    store.corrupt_appends.store(false, Ordering::SeqCst);

    let alarms = capture.events("evoq.integrity");
    let stages: Vec<_> = alarms
        .iter()
        .map(|a| a.fields.get("stage").cloned().unwrap_or_default())
        .collect();
    assert_eq!(stages, ["rebuild", "append"], "{alarms:?}");
    for alarm in &alarms {
        assert!(
            alarm.level <= Level::WARN,
            "an alarm is WARN or above: {alarm:?}"
        );
        assert_eq!(
            alarm.fields.get("stream").map(String::as_str),
            Some("BankAccount-a")
        );
    }
    // Once the store is sound again, the instance is rebuilt and the command runs.
    open().await.unwrap();
    app.stop().await;
}

/// A projection that fails its first attempt at every deposit (so that each deposit reports an
/// exception, then succeeds on the retry).
struct Balances {
    model: InMemoryReadModel,
    failed: std::collections::HashSet<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("first attempt at position {0}")]
struct FirstAttempt(u64);

#[projection(name = "balances", read_model = model)]
impl Balances {
    #[handles]
    async fn opened(&mut self, e: &AccountOpened, _: &EventMeta) -> Result<(), ProjectionError> {
        self.model.put(&e.account, &e.initial_balance)?;
        Ok(())
    }

    #[handles]
    async fn deposited(
        &mut self,
        e: &MoneyDeposited,
        meta: &EventMeta,
    ) -> Result<(), ProjectionError> {
        if self.failed.insert(meta.global_position()) {
            return Err(ProjectionError::caused_by(FirstAttempt(
                meta.global_position(),
            )));
        }
        let balance: u64 = self.model.get(&e.account)?.unwrap_or_default();
        self.model.put(&e.account, &(balance + e.amount))?;
        Ok(())
    }
}

#[tokio::test]
async fn every_projection_event_carries_the_name_the_projection_runs_under() {
    let (capture, _guard) = capture();
    let model = InMemoryReadModel::new();
    let app = Evoq::builder()
        .handler_defaults(evoq::HandlerConfig {
            retry: evoq::RetryStrategy::immediate(),
            ..evoq::HandlerConfig::default()
        })
        .projection_with(
            Balances {
                model: model.clone(),
                failed: Default::default(),
            },
            evoq::HandlerOptions::new().name("balances_v2"),
        )
        .start()
        .await
        .unwrap();
    app.dispatch(OpenAccount {
        account: "a".into(),
        initial_balance: 1,
    })
    .await
    .unwrap();
    let done = app
        .dispatch(Deposit {
            account: "a".into(),
            amount: 2,
        })
        .await
        .unwrap();
    app.wait_for_named("balances_v2", done.token).await.unwrap();
    assert_eq!(model.get::<u64>("a").unwrap(), Some(3));
    app.rebuild("balances_v2").await.unwrap();

    for name in [
        "evoq.projection.event",
        "evoq.projection.exception",
        "evoq.projection.checkpoint",
        "evoq.projection.rebuild",
    ] {
        let events = capture.events(name);
        assert!(!events.is_empty(), "no `{name}` event");
        for event in &events {
            assert_eq!(
                event.fields.get("projection").map(String::as_str),
                Some("balances_v2"),
                "`{name}` names the projection by the name it runs under: {event:?}"
            );
        }
    }
    // The failed first attempts: one per deposit delivered (live, then in the rebuild).
    let exceptions = capture.events("evoq.projection.exception");
    assert!(
        exceptions.iter().all(|event| event.level == Level::WARN
            && event.fields["error"].starts_with("first attempt at position")),
        "{exceptions:?}"
    );
    app.stop().await;
}

/// A counter that hibernates soon after its last command.
#[derive(Default, Debug, serde::Serialize, serde::Deserialize)]
struct Dozing {
    count: u64,
}

#[derive(Command, Debug)]
struct Nudge {
    #[aggregate_id]
    id: String,
}

#[derive(Event, serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Nudged {
    count: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[aggregate(idle_timeout = "1h", hibernate_after = "30ms")]
impl Dozing {
    #[handles]
    fn nudge(&self, _: &Nudge) -> Result<Nudged, Never> {
        Ok(Nudged {
            count: self.count + 1,
        })
    }

    #[apply]
    fn nudged(&mut self, e: &Nudged) {
        self.count = e.count;
    }
}

/// The `from` and `version` of every `evoq.aggregate.init` captured so far.
fn inits(capture: &Capture) -> Vec<(String, String, String)> {
    capture
        .events("evoq.aggregate.init")
        .into_iter()
        .map(|e| {
            assert_eq!(e.level, Level::DEBUG);
            let field = |name: &str| e.fields.get(name).cloned().unwrap_or_default();
            (field("aggregate_id"), field("from"), field("version"))
        })
        .collect()
}

#[tokio::test]
async fn every_instance_brought_to_life_reports_init_with_where_it_came_from() {
    let (capture, _guard) = capture();
    let store = Arc::new(evoq::store::memory::InMemoryStore::new());
    let app = Evoq::builder()
        .shared_store(store.clone())
        .hibernation_sweep_interval(std::time::Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    app.dispatch(Nudge { id: "d".into() }).await.unwrap();
    app.dispatch(Nudge { id: "d".into() }).await.unwrap();
    assert_eq!(
        inits(&capture),
        [("d".into(), "new".into(), "0".into())],
        "a new aggregate: one init, none for its second command"
    );

    let started = std::time::Instant::now();
    while app.aggregate_stats::<Dozing>().hibernated == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "it hibernates"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    app.dispatch(Nudge { id: "d".into() }).await.unwrap();
    assert_eq!(
        inits(&capture)[1..],
        [("d".into(), "hibernation".into(), "2".into())],
        "a thaw"
    );
    app.stop().await;

    let app = Evoq::builder().shared_store(store).start().await.unwrap();
    app.dispatch(Nudge { id: "d".into() }).await.unwrap();
    assert_eq!(
        inits(&capture)[2..],
        [("d".into(), "store".into(), "3".into())],
        "a rebuild from the stored events, in a new runtime"
    );
    app.stop().await;
}

/// A counter that hibernates soon after its last command and passivates from hibernation.
#[derive(Default, Debug, serde::Serialize, serde::Deserialize)]
struct Sleepy {
    count: u64,
}

#[derive(Command, Debug)]
struct Poke {
    #[aggregate_id]
    id: String,
}

#[aggregate(idle_timeout = "60ms", hibernate_after = "20ms")]
impl Sleepy {
    #[handles]
    fn poke(&self, _: &Poke) -> Result<Nudged, Never> {
        Ok(Nudged {
            count: self.count + 1,
        })
    }

    #[apply]
    fn nudged(&mut self, e: &Nudged) {
        self.count = e.count;
    }
}

#[tokio::test]
async fn a_hibernated_instance_passivated_by_the_sweep_reports_its_snapshot_and_names_itself() {
    let (capture, _guard) = capture();
    let app = Evoq::builder()
        .hibernation_sweep_interval(std::time::Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    app.dispatch(Poke { id: "s".into() }).await.unwrap();
    app.dispatch(Poke { id: "s".into() }).await.unwrap();
    let started = std::time::Instant::now();
    while app.aggregate_stats::<Sleepy>().passivations == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "it passivates"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let named = |name: &str| -> Vec<(String, String, String, String)> {
        capture
            .events(name)
            .into_iter()
            .map(|e| {
                let field = |f: &str| e.fields.get(f).cloned().unwrap_or_default();
                (
                    field("stage"),
                    field("aggregate"),
                    field("aggregate_id"),
                    field("version"),
                )
            })
            .collect()
    };
    let stop = |aggregate: &str| {
        (
            "stop".to_owned(),
            aggregate.to_owned(),
            "s".to_owned(),
            "2".to_owned(),
        )
    };
    assert_eq!(app.aggregate_stats::<Sleepy>().snapshots_saved, 1);
    assert_eq!(
        named("evoq.aggregate.snapshot_save"),
        [stop("Sleepy")],
        "the snapshot the sweep saved is reported, as every saved snapshot is"
    );
    assert_eq!(named("evoq.aggregate.passivate"), [stop("Sleepy")]);
    app.stop().await;
}
