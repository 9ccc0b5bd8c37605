//! Middleware and dispatch options through the pipeline (docs/semantics.md §2 and §4):
//! order, halting, after_dispatch / after_failure, assigns, panics, timeouts, expected version.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evoq::dispatch::Stage;
use evoq::prelude::*;
use evoq::store::Direction;
use evoq::{EventStore, RecordedEvent};
use evoq_tests::bank::*;
use evoq_tests::faulty_store::FaultyStore;

/// What the middleware saw, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

type Hook = Box<dyn Fn(&mut Pipeline<'_>) + Send + Sync>;

/// A middleware that logs every hook as `<name>.<hook>` and then runs an optional closure.
struct Probe {
    name: &'static str,
    log: Log,
    before: Option<Hook>,
    after: Option<Hook>,
    failure: Option<Hook>,
}

impl Probe {
    fn new(name: &'static str, log: &Log) -> Self {
        Probe {
            name,
            log: log.clone(),
            before: None,
            after: None,
            failure: None,
        }
    }

    fn before(mut self, hook: impl Fn(&mut Pipeline<'_>) + Send + Sync + 'static) -> Self {
        self.before = Some(Box::new(hook));
        self
    }

    fn after(mut self, hook: impl Fn(&mut Pipeline<'_>) + Send + Sync + 'static) -> Self {
        self.after = Some(Box::new(hook));
        self
    }

    fn failure(mut self, hook: impl Fn(&mut Pipeline<'_>) + Send + Sync + 'static) -> Self {
        self.failure = Some(Box::new(hook));
        self
    }
}

#[evoq::async_trait]
impl Middleware for Probe {
    fn name(&self) -> &str {
        self.name
    }

    async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) {
        self.log.push(format!("{}.before", self.name));
        if let Some(hook) = &self.before {
            hook(pipeline);
        }
    }

    async fn after_dispatch(&self, pipeline: &mut Pipeline<'_>) {
        self.log.push(format!("{}.after", self.name));
        if let Some(hook) = &self.after {
            hook(pipeline);
        }
    }

    async fn after_failure(&self, pipeline: &mut Pipeline<'_>) {
        self.log.push(format!("{}.after_failure", self.name));
        if let Some(hook) = &self.failure {
            hook(pipeline);
        }
    }
}

fn open(account: &str) -> OpenAccount {
    OpenAccount {
        account: account.into(),
        initial_balance: 0,
    }
}

fn deposit(account: &str, amount: u64) -> Deposit {
    Deposit {
        account: account.into(),
        amount,
    }
}

async fn stored(store: &Arc<dyn EventStore>, account: &str) -> Vec<Arc<RecordedEvent>> {
    store
        .read_stream(&account_stream(account), 1, Direction::Forward, usize::MAX)
        .await
        .expect("the stream reads")
}

#[tokio::test]
async fn middleware_order_is_global_then_per_dispatch_left_to_right_for_every_stage() {
    let log = Log::default();
    let app = Evoq::builder()
        .middleware(Probe::new("A", &log))
        .start()
        .await
        .unwrap();
    app.command(open("a"))
        .middleware(Probe::new("B", &log))
        .dispatch()
        .await
        .unwrap();
    assert_eq!(
        log.entries(),
        ["A.before", "B.before", "A.after", "B.after"]
    );

    // Several of each: still global first, then per dispatch, in registration order.
    let log = Log::default();
    let app = Evoq::builder()
        .middleware(Probe::new("G1", &log))
        .middleware(Probe::new("G2", &log))
        .start()
        .await
        .unwrap();
    app.command(deposit("nobody", 1))
        .middleware(Probe::new("L1", &log))
        .middleware(Probe::new("L2", &log))
        .dispatch()
        .await
        .unwrap_err();
    assert_eq!(
        log.entries(),
        [
            "G1.before",
            "G2.before",
            "L1.before",
            "L2.before",
            "G1.after_failure",
            "G2.after_failure",
            "L1.after_failure",
            "L2.after_failure"
        ]
    );
}

#[tokio::test]
async fn a_halt_in_before_dispatch_skips_later_middleware_and_the_aggregate_and_returns_the_halting_response()
 {
    let log = Log::default();
    let app = Evoq::builder()
        .middleware(Probe::new("A", &log).before(|p| p.halt("not allowed")))
        .start()
        .await
        .unwrap();
    let error = app
        .command(open("a"))
        .middleware(Probe::new("B", &log))
        .dispatch()
        .await
        .unwrap_err();
    match &error {
        evoq::Error::Halted {
            middleware,
            command,
            reason,
        } => {
            assert_eq!(middleware, "A");
            assert_eq!(*command, "OpenAccount");
            assert_eq!(reason, "not allowed");
        }
        other => panic!("expected a halt, got {other:?}"),
    }
    assert_eq!(log.entries(), ["A.before"], "no B, no after stage");
    assert_eq!(
        app.live_aggregates::<BankAccount>(),
        0,
        "the aggregate was not touched"
    );
    assert!(stored(app.store(), "a").await.is_empty());
}

/// A middleware with no `name()` of its own.
struct Gate;

#[evoq::async_trait]
impl Middleware for Gate {
    async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) {
        pipeline.fail(evoq::Error::Halted {
            middleware: "Gate".into(),
            command: pipeline.command_name(),
            reason: format!("account {} is frozen", pipeline.aggregate_id()),
        });
    }
}

#[tokio::test]
async fn a_failure_set_in_before_dispatch_halts_with_that_error_and_the_default_name_is_the_type_path()
 {
    assert!(Gate.name().ends_with("Gate"), "{}", Gate.name());
    let app = Evoq::builder().middleware(Gate).start().await.unwrap();
    let error = app.dispatch(open("a")).await.unwrap_err();
    assert!(error.is_halted(), "{error:?}");
    assert!(error.to_string().contains("account a is frozen"), "{error}");
    assert!(stored(app.store(), "a").await.is_empty());
}

#[tokio::test]
async fn after_failure_runs_instead_of_after_dispatch_on_a_domain_error_and_can_replace_the_error()
{
    let log = Log::default();
    let seen_error = Log::default();
    let seen = seen_error.clone();
    let app = Evoq::builder()
        .middleware(Probe::new("A", &log).failure(move |p| {
            assert_eq!(p.stage(), Stage::AfterFailure);
            seen.push(p.assigned("error").unwrap().as_str().unwrap());
            assert!(p.error().unwrap().is_rejection());
        }))
        .start()
        .await
        .unwrap();
    let error = app
        .command(deposit("a", 1))
        .middleware(Probe::new("B", &log).failure(|p| {
            p.map_error(|original| evoq::Error::Halted {
                middleware: "B".into(),
                command: "Deposit",
                reason: format!("translated: {original}"),
            });
        }))
        .dispatch()
        .await
        .unwrap_err();
    assert_eq!(
        log.entries(),
        ["A.before", "B.before", "A.after_failure", "B.after_failure"]
    );
    assert!(
        seen_error.entries()[0].contains("account `a` is not open"),
        "{:?}",
        seen_error.entries()
    );
    assert!(matches!(&error, evoq::Error::Halted { middleware, .. } if middleware == "B"));
    assert!(
        error.to_string().contains("translated: command `Deposit`"),
        "{error}"
    );
}

#[tokio::test]
async fn after_dispatch_can_replace_a_success_with_an_error_and_the_events_stay_stored() {
    let log = Log::default();
    let app = Evoq::builder().start().await.unwrap();
    let error = app
        .command(open("a"))
        .middleware(Probe::new("Reject", &log).after(|p| {
            p.fail(evoq::Error::Halted {
                middleware: "Reject".into(),
                command: p.command_name(),
                reason: "response replaced".into(),
            });
        }))
        .middleware(Probe::new("Later", &log).after(|p| {
            assert!(
                !p.is_success(),
                "later middleware see the replaced response"
            );
        }))
        .dispatch()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("response replaced"), "{error}");
    assert_eq!(
        log.entries(),
        [
            "Reject.before",
            "Later.before",
            "Reject.after",
            "Later.after"
        ]
    );
    assert_eq!(stored(app.store(), "a").await.len(), 1);
}

#[tokio::test]
async fn a_halt_in_after_dispatch_stops_the_rest_of_the_chain_and_keeps_the_response() {
    let log = Log::default();
    let app = Evoq::builder()
        .middleware(Probe::new("A", &log).after(|p| p.halt("enough")))
        .middleware(Probe::new("B", &log))
        .start()
        .await
        .unwrap();
    let done = app.dispatch(open("a")).await.unwrap();
    assert_eq!(done.version, 1);
    assert_eq!(log.entries(), ["A.before", "B.before", "A.after"]);
}

#[tokio::test]
async fn the_framework_assigns_events_version_and_position_and_middleware_assigns_flow_to_later_hooks()
 {
    let log = Log::default();
    let seen = Arc::new(Mutex::new(None));
    let record = Arc::clone(&seen);
    let app = Evoq::builder()
        .middleware(Probe::new("A", &log).before(|p| {
            p.assign("started_by", "A");
        }))
        .middleware(Probe::new("B", &log).after(move |p| {
            *record.lock().unwrap() = Some(p.assigns().clone());
        }))
        .start()
        .await
        .unwrap();
    app.dispatch(open("a")).await.unwrap();
    app.dispatch(DepositMany {
        account: "a".into(),
        amount: 4,
        times: 2,
    })
    .await
    .unwrap();
    let assigns = seen.lock().unwrap().clone().unwrap();
    assert_eq!(assigns["started_by"], "A");
    assert_eq!(assigns["version"], 3);
    assert_eq!(assigns["position"], 3);
    assert_eq!(
        assigns["events"],
        serde_json::json!([
            { "type": "MoneyDeposited", "data": { "account": "a", "amount": 4 } },
            { "type": "MoneyDeposited", "data": { "account": "a", "amount": 4 } },
        ])
    );
    assert!(!assigns.contains_key("error"));
}

#[tokio::test]
async fn before_dispatch_sees_the_typed_command_and_can_add_metadata_that_every_event_carries() {
    let log = Log::default();
    let app = Evoq::builder()
        .middleware(Probe::new("Tenant", &log).before(|p| {
            assert_eq!(p.aggregate(), "BankAccount");
            assert_eq!(p.aggregate_id(), "a");
            if let Some(cmd) = p.command_as::<DepositMany>() {
                assert_eq!(p.command_name(), "DepositMany");
                let times = cmd.times.to_string();
                p.context_mut().metadata.insert("times".into(), times);
            }
        }))
        .start()
        .await
        .unwrap();
    app.dispatch(open("a")).await.unwrap();
    let done = app
        .command(DepositMany {
            account: "a".into(),
            amount: 1,
            times: 2,
        })
        .metadata("user", "alice")
        .dispatch()
        .await
        .unwrap();
    let events = stored(app.store(), "a").await;
    assert!(!events[0].metadata.user.contains_key("times"));
    for event in &events[1..] {
        assert_eq!(event.metadata.user["times"], "2");
        assert_eq!(event.metadata.user["user"], "alice");
        assert_eq!(event.metadata.command_id, Some(done.command_id));
    }
}

/// Panics in the hook named by its field.
struct Boom(Stage);

#[evoq::async_trait]
impl Middleware for Boom {
    fn name(&self) -> &str {
        "Boom"
    }

    async fn before_dispatch(&self, _: &mut Pipeline<'_>) {
        assert!(self.0 != Stage::BeforeDispatch, "boom before");
    }

    async fn after_dispatch(&self, _: &mut Pipeline<'_>) {
        assert!(self.0 != Stage::AfterDispatch, "boom after");
    }
}

#[tokio::test]
async fn a_panicking_middleware_is_a_typed_error_naming_it_and_the_runtime_keeps_working() {
    let app = Evoq::builder().start().await.unwrap();
    let error = app
        .command(open("a"))
        .middleware(Boom(Stage::BeforeDispatch))
        .dispatch()
        .await
        .unwrap_err();
    match &error {
        evoq::Error::MiddlewarePanicked {
            middleware,
            stage,
            command,
            message,
        } => {
            assert_eq!(middleware, "Boom");
            assert_eq!(*stage, Stage::BeforeDispatch);
            assert_eq!(*command, "OpenAccount");
            assert!(message.contains("boom before"), "{message}");
        }
        other => panic!("expected a middleware panic, got {other:?}"),
    }
    assert!(stored(app.store(), "a").await.is_empty());

    let error = app
        .command(open("a"))
        .middleware(Boom(Stage::AfterDispatch))
        .dispatch()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            evoq::Error::MiddlewarePanicked {
                stage: Stage::AfterDispatch,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("WERE stored"), "{error}");
    assert_eq!(stored(app.store(), "a").await.len(), 1);
    // The runtime and the aggregate keep working.
    assert_eq!(app.dispatch(deposit("a", 1)).await.unwrap().version, 2);
}

#[tokio::test]
async fn a_duplicate_runs_no_middleware() {
    let log = Log::default();
    let app = Evoq::builder()
        .middleware(Probe::new("A", &log))
        .start()
        .await
        .unwrap();
    let first = app
        .command(open("a"))
        .idempotency_key("k")
        .dispatch()
        .await
        .unwrap();
    let second = app
        .command(open("a"))
        .idempotency_key("k")
        .middleware(Probe::new("B", &log))
        .dispatch()
        .await
        .unwrap();
    assert_eq!(first.version, second.version);
    assert_eq!(log.entries(), ["A.before", "A.after"]);
}

/// Sleeps in `before_dispatch`.
struct Slow(Duration);

#[evoq::async_trait]
impl Middleware for Slow {
    async fn before_dispatch(&self, _: &mut Pipeline<'_>) {
        tokio::time::sleep(self.0).await;
    }
}

#[tokio::test]
async fn an_async_middleware_slowed_past_the_timeout_returns_a_timeout_error_and_appends_nothing() {
    let app = Evoq::builder()
        .middleware(Slow(Duration::from_millis(300)))
        .start()
        .await
        .unwrap();
    let error = app
        .command(open("a"))
        .timeout(Duration::from_millis(50))
        .dispatch()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(error.to_string().contains("BankAccount-a"), "{error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stored(app.store(), "a").await.is_empty());
}

#[tokio::test]
async fn a_store_append_slowed_past_the_timeout_returns_a_timeout_error_with_middleware_registered()
{
    let faulty = FaultyStore::new();
    let log = Log::default();
    let app = Evoq::builder()
        .shared_store(faulty.clone())
        .middleware(Probe::new("A", &log))
        .start()
        .await
        .unwrap();
    app.dispatch(open("a")).await.unwrap();
    faulty.append_delay_ms.store(300, Ordering::SeqCst);
    let error = app
        .command(deposit("a", 1))
        .timeout(Duration::from_millis(50))
        .dispatch()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(
        log.entries(),
        ["A.before", "A.after", "A.before"],
        "past the deadline no after stage runs"
    );
}

#[tokio::test]
async fn an_expected_version_that_does_not_match_is_a_conflict_that_appends_nothing_and_reaches_after_failure()
 {
    let log = Log::default();
    let app = Evoq::builder()
        .middleware(Probe::new("A", &log).failure(|p| {
            assert!(p.error().unwrap().is_conflict());
        }))
        .start()
        .await
        .unwrap();
    app.dispatch(open("a")).await.unwrap();
    let error = app
        .command(deposit("a", 1))
        .expected_version(7)
        .dispatch()
        .await
        .unwrap_err();
    assert!(error.is_conflict(), "{error}");
    assert_eq!(stored(app.store(), "a").await.len(), 1);
    assert_eq!(
        log.entries(),
        ["A.before", "A.after", "A.before", "A.after_failure"]
    );
    let ok = app
        .command(deposit("a", 1))
        .expected_version(1)
        .dispatch()
        .await
        .unwrap();
    assert_eq!(ok.version, 2);
}

#[tokio::test]
async fn the_retry_limit_is_honoured_through_the_pipeline() {
    let faulty = FaultyStore::new();
    let log = Log::default();
    let app = Evoq::builder()
        .shared_store(faulty.clone())
        .middleware(Probe::new("A", &log))
        .start()
        .await
        .unwrap();
    app.dispatch(open("a")).await.unwrap();
    faulty.interfere.store(100, Ordering::SeqCst);
    let error = app
        .command(deposit("a", 1))
        .retry_limit(1)
        .dispatch()
        .await
        .unwrap_err();
    assert!(
        matches!(error, evoq::Error::Conflict { attempts: 2, .. }),
        "{error:?}"
    );
    faulty.interfere.store(0, Ordering::SeqCst);
}
