//! Projections and read models: checkpoints that advance with the read model, restarts,
//! errors, rebuilds, reading one's own writes (docs/semantics.md §7).

use std::sync::Arc;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::memory::InMemoryStore;
use evoq::{ExpectedVersion, HandlerConfig, HandlerOptions, OnError, RetryStrategy};
use evoq_tests::bank::{Deposit, MoneyDeposited, OpenAccount};
use evoq_tests::ledger::*;
use serde::{Deserialize, Serialize};

/// What the ledger projection keeps per aggregate id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    alphas: u64,
    gammas: u64,
    sum: u64,
    last_position: u64,
}

/// Projects `Alpha` and `Gamma` (never `Beta`) into one tally per id; fails on `fail_on`.
struct Tallies {
    model: InMemoryReadModel,
    log: Log,
    fail_on: Option<u64>,
}

impl Tallies {
    fn new(model: &InMemoryReadModel) -> Self {
        Tallies {
            model: model.clone(),
            log: Log::default(),
            fail_on: None,
        }
    }

    fn record(&mut self, id: &str, n: u64, meta: &EventMeta) -> Result<Tally, ProjectionError> {
        if self.fail_on == Some(n) {
            return Err(ProjectionError::new(format!("cannot project event {n}")));
        }
        self.log.push(Seen::of(meta, n));
        let mut tally: Tally = self.model.get(id)?.unwrap_or_default();
        tally.sum += n;
        tally.last_position = meta.global_position();
        Ok(tally)
    }
}

#[projection(name = "tallies", read_model = model)]
impl Tallies {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), ProjectionError> {
        let mut tally = self.record(&e.id, e.n, meta)?;
        tally.alphas += 1;
        self.model.put(&e.id, &tally)?;
        Ok(())
    }

    #[handles]
    async fn gamma(&mut self, e: &Gamma, meta: &EventMeta) -> Result<(), ProjectionError> {
        let mut tally = self.record(&e.id, e.n, meta)?;
        tally.gammas += 1;
        self.model.put(&e.id, &tally)?;
        Ok(())
    }
}

async fn wait(app: &Evoq, name: &str, position: u64) {
    tokio::time::timeout(
        Duration::from_secs(10),
        app.wait_for_named(name, position).without_deadline(),
    )
    .await
    .expect("the projection got there in time")
    .expect("the projection runs");
}

fn fast_failures() -> HandlerConfig {
    HandlerConfig {
        retry: RetryStrategy::immediate(),
        max_attempts: 2,
        ..HandlerConfig::default()
    }
}

#[tokio::test]
async fn a_fresh_projection_sees_the_first_event_at_position_1() {
    let store = Arc::new(InMemoryStore::new());
    store
        .append(
            &ledger_stream("a"),
            ExpectedVersion::NoStream,
            vec![raw(Kind::A, "a", 1), raw(Kind::B, "a", 2)],
        )
        .await
        .unwrap();
    let model = InMemoryReadModel::new();
    let tallies = Tallies::new(&model);
    let log = tallies.log.clone();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .projection(tallies)
        .start()
        .await
        .unwrap();
    wait(&app, "tallies", 2).await;
    assert_eq!(log.positions(), [1]);
    assert_eq!(model.get::<Tally>("a").unwrap().unwrap().last_position, 1);
    // The skipped `Beta` still moved the checkpoint (kept by the in-memory read model).
    assert_eq!(
        ReadModel::checkpoint(&model, "tallies").await.unwrap(),
        Some(2)
    );
    app.stop().await;
}

#[tokio::test]
async fn after_a_restart_with_a_saved_checkpoint_only_later_events_are_projected() {
    let store = Arc::new(InMemoryStore::new());
    let model = InMemoryReadModel::new();
    let first = Tallies::new(&model);
    let first_log = first.log.clone();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .projection(first)
        .start()
        .await
        .unwrap();
    let done = app
        .dispatch(Emit::new("x", &[Kind::A, Kind::C, Kind::A], 1))
        .await
        .unwrap();
    wait(&app, "tallies", done.position.unwrap()).await;
    app.stop().await;
    assert_eq!(first_log.positions(), [1, 2, 3]);
    assert_eq!(
        ReadModel::checkpoint(&model, "tallies").await.unwrap(),
        Some(3)
    );

    store
        .append(
            &ledger_stream("x"),
            ExpectedVersion::Exact(3),
            vec![raw(Kind::C, "x", 4), raw(Kind::A, "x", 5)],
        )
        .await
        .unwrap();
    let second = Tallies::new(&model);
    let second_log = second.log.clone();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .projection(second)
        .start()
        .await
        .unwrap();
    wait(&app, "tallies", 5).await;
    assert_eq!(second_log.positions(), [4, 5], "only the later events");
    let tally: Tally = model.get("x").unwrap().unwrap();
    assert_eq!((tally.alphas, tally.gammas, tally.sum), (3, 2, 15));
    assert_eq!(
        ReadModel::checkpoint(&model, "tallies").await.unwrap(),
        Some(5)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_read_model_checkpoint_beyond_the_head_resumes_at_the_head_and_skips_no_new_event() {
    let store = Arc::new(InMemoryStore::new());
    store
        .append(
            &ledger_stream("b"),
            ExpectedVersion::NoStream,
            vec![raw(Kind::A, "b", 1), raw(Kind::A, "b", 2)],
        )
        .await
        .unwrap();
    // The model was filled from a store that held more (or restored from a newer backup).
    let model = InMemoryReadModel::new();
    ReadModel::commit(&model, "tallies", 500).await.unwrap();
    let tallies = Tallies::new(&model);
    let log = tallies.log.clone();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .projection(tallies)
        .start()
        .await
        .unwrap();
    let done = app.dispatch(Emit::new("c", &[Kind::A], 3)).await.unwrap();
    wait(&app, "tallies", done.token).await;
    assert_eq!(
        log.positions(),
        [3],
        "the new event is projected, not skipped"
    );
    assert_eq!(
        ReadModel::checkpoint(&model, "tallies").await.unwrap(),
        Some(3),
        "the checkpoint follows the store again"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_error_leaves_the_checkpoint_on_the_last_good_event() {
    let store = Arc::new(InMemoryStore::new());
    let model = InMemoryReadModel::new();
    let mut tallies = Tallies::new(&model);
    tallies.fail_on = Some(3);
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler_defaults(fast_failures())
        .projection_with(tallies, HandlerOptions::new().on_error(OnError::Stop))
        .start()
        .await
        .unwrap();
    app.dispatch(Emit::new("e", &[Kind::A, Kind::C, Kind::A, Kind::A], 1))
        .await
        .unwrap();
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        app.wait_for_named("tallies", 4).without_deadline(),
    )
    .await
    .expect("in time");
    assert!(stopped.is_err(), "the projection stopped before event 3");
    assert_eq!(
        ReadModel::checkpoint(&model, "tallies").await.unwrap(),
        Some(2)
    );
    assert_eq!(model.get::<Tally>("e").unwrap().unwrap().last_position, 2);
    let stats = app.handler_stats();
    assert_eq!(stats[0].position, 2);
    assert_eq!(stats[0].retries, 1);
    app.stop().await;
    assert_eq!(
        ReadModel::checkpoint(&model, "tallies").await.unwrap(),
        Some(2)
    );
}

#[tokio::test]
async fn the_checkpoint_passes_a_failed_event_once_it_is_dead_lettered() {
    let store = Arc::new(InMemoryStore::new());
    let model = InMemoryReadModel::new();
    let mut tallies = Tallies::new(&model);
    tallies.fail_on = Some(2);
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler_defaults(fast_failures())
        .projection(tallies)
        .start()
        .await
        .unwrap();
    app.dispatch(Emit::new("d", &[Kind::A, Kind::A, Kind::A], 1))
        .await
        .unwrap();
    wait(&app, "tallies", 3).await;
    let dead = app.dead_letters("tallies").list(0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.global_position, 2);
    assert_eq!(
        ReadModel::checkpoint(&model, "tallies").await.unwrap(),
        Some(3)
    );
    assert_eq!(model.get::<Tally>("d").unwrap().unwrap().alphas, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_over_5000_mixed_events_ends_equal_to_the_live_read_model() {
    let store = Arc::new(InMemoryStore::new());
    let model = InMemoryReadModel::new();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .projection(Tallies::new(&model))
        .start()
        .await
        .unwrap();
    let kinds = [Kind::A, Kind::B, Kind::C, Kind::A, Kind::C];
    let mut n = 0;
    for batch in 0..100 {
        let id = format!("id-{}", batch % 7);
        let events: Vec<_> = (0..50)
            .map(|i| {
                n += 1;
                raw(kinds[(batch + i) % kinds.len()], &id, n)
            })
            .collect();
        store
            .append(&ledger_stream(&id), ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let head = *store.head().borrow();
    assert_eq!(head, 5_000);
    wait(&app, "tallies", head).await;
    let live = model.to_map();
    assert_eq!(live.len(), 7);

    let reached = app.rebuild("tallies").await.unwrap();
    assert_eq!(reached, 5_000);
    assert_eq!(
        model.to_map(),
        live,
        "the rebuilt read model equals the live one"
    );
    assert_eq!(
        ReadModel::checkpoint(&model, "tallies").await.unwrap(),
        Some(5_000)
    );

    // And it goes on live.
    let done = app
        .dispatch(Emit::new("after", &[Kind::C], 9))
        .await
        .unwrap();
    wait(&app, "tallies", done.position.unwrap()).await;
    assert_eq!(model.get::<Tally>("after").unwrap().unwrap().gammas, 1);
    assert_eq!(
        ReadModel::checkpoint(&model, "tallies").await.unwrap(),
        done.position
    );
    app.stop().await;
}

#[tokio::test]
async fn only_projections_can_be_rebuilt() {
    #[derive(Default)]
    struct Plain;

    #[event_handler(name = "plain")]
    impl Plain {
        #[handles]
        async fn alpha(&mut self, _: &Alpha, _: &EventMeta) -> Result<(), Failed> {
            Ok(())
        }
    }

    let app = Evoq::builder().handler(Plain).start().await.unwrap();
    let error = app.rebuild("plain").await.unwrap_err();
    assert!(error.to_string().contains("not a projection"), "{error}");
    let unknown = app.rebuild("nope").await.unwrap_err();
    assert!(unknown.to_string().contains("nope"), "{unknown}");
    app.stop().await;
}

/// The balance of every account, from the bank's events.
struct Balances {
    model: InMemoryReadModel,
}

#[projection(name = "balances", read_model = model)]
impl Balances {
    #[handles]
    async fn opened(
        &mut self,
        e: &evoq_tests::bank::AccountOpened,
        _: &EventMeta,
    ) -> Result<(), ProjectionError> {
        self.model.put(&e.account, &e.initial_balance)?;
        Ok(())
    }

    #[handles]
    async fn deposited(
        &mut self,
        e: &MoneyDeposited,
        _: &EventMeta,
    ) -> Result<(), ProjectionError> {
        let balance: u64 = self.model.get(&e.account)?.unwrap_or_default();
        self.model.put(&e.account, &(balance + e.amount))?;
        Ok(())
    }
}

#[tokio::test]
async fn dispatch_then_wait_for_the_projection_then_a_read_sees_the_write() {
    let model = InMemoryReadModel::new();
    let app = Evoq::builder()
        .projection(Balances {
            model: model.clone(),
        })
        .start()
        .await
        .unwrap();
    app.dispatch(OpenAccount {
        account: "acc-1".into(),
        initial_balance: 10,
    })
    .await
    .unwrap();
    for _ in 0..20 {
        let done = app
            .dispatch(Deposit {
                account: "acc-1".into(),
                amount: 5,
            })
            .await
            .unwrap();
        app.wait_for_named("balances", done.position.unwrap())
            .without_deadline()
            .await
            .unwrap();
        let expected = 10 + 5 * (done.version - 1);
        assert_eq!(model.get::<u64>("acc-1").unwrap(), Some(expected));
    }
    app.stop().await;
}

#[tokio::test]
async fn the_in_memory_read_model_gets_puts_deletes_lists_by_prefix_and_clears() {
    let model = InMemoryReadModel::new();
    model.put("user/2", &Tally::default()).unwrap();
    model
        .put(
            "user/1",
            &Tally {
                sum: 3,
                ..Tally::default()
            },
        )
        .unwrap();
    model.put("order/1", &"x").unwrap();
    let users: Vec<(String, Tally)> = model.list("user/").unwrap();
    assert_eq!(
        users.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["user/1", "user/2"]
    );
    assert_eq!(users[0].1.sum, 3);
    assert!(
        model.get::<u64>("order/1").is_err(),
        "a typed read of another type fails"
    );
    assert!(model.delete("user/1"));
    assert!(!model.delete("user/1"));
    assert_eq!(model.len(), 2);
    ReadModel::clear(&model).await.unwrap();
    assert!(model.is_empty());
}

/// A read model that keeps the checkpoint itself, as a SQL backend committing both in one
/// transaction would.
#[derive(Clone, Default)]
struct KeepsCheckpoint {
    entries: InMemoryReadModel,
    checkpoint: Arc<std::sync::Mutex<Option<u64>>>,
    commits: Arc<std::sync::atomic::AtomicU64>,
}

#[evoq::async_trait]
impl ReadModel for KeepsCheckpoint {
    async fn clear(&self) -> Result<(), evoq::ReadModelError> {
        self.entries.clear();
        Ok(())
    }

    async fn commit(&self, _: &str, position: u64) -> Result<bool, evoq::ReadModelError> {
        *self.checkpoint.lock().unwrap() = Some(position);
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    async fn checkpoint(&self, _: &str) -> Result<Option<u64>, evoq::ReadModelError> {
        Ok(*self.checkpoint.lock().unwrap())
    }
}

struct Counted {
    model: KeepsCheckpoint,
    log: Log,
}

#[projection(name = "counted", read_model = model)]
impl Counted {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.log.push(Seen::of(meta, e.n));
        self.model.entries.put(meta.event_id().to_string(), &e.n)?;
        Ok(())
    }
}

#[tokio::test]
async fn a_read_model_that_commits_the_checkpoint_keeps_it_and_resumes_from_it() {
    let store = Arc::new(InMemoryStore::new());
    let model = KeepsCheckpoint::default();
    let log = Log::default();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .projection(Counted {
            model: model.clone(),
            log: log.clone(),
        })
        .start()
        .await
        .unwrap();
    app.dispatch(Emit::new("k", &[Kind::A, Kind::B, Kind::A], 1))
        .await
        .unwrap();
    wait(&app, "counted", 3).await;
    app.stop().await;
    assert_eq!(*model.checkpoint.lock().unwrap(), Some(3));
    assert_eq!(
        store.load_checkpoint("counted").await.unwrap(),
        None,
        "the read model kept it: nothing in the event store"
    );
    assert_eq!(log.positions(), [1, 3]);

    store
        .append(
            &ledger_stream("k"),
            ExpectedVersion::Exact(3),
            vec![raw(Kind::A, "k", 4)],
        )
        .await
        .unwrap();
    let log = Log::default();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .projection(Counted {
            model: model.clone(),
            log: log.clone(),
        })
        .start()
        .await
        .unwrap();
    wait(&app, "counted", 4).await;
    assert_eq!(
        log.positions(),
        [4],
        "resumed after the read model's checkpoint"
    );
    assert_eq!(model.entries.len(), 3);
    app.stop().await;
}

/// How a [`Binding`] read model answers `bind`.
#[derive(Clone, Copy)]
enum BindAnswer {
    Refuse,
    Fail,
    Panic,
}

/// A read model whose `bind` answers as told, remembering the names it was asked for.
#[derive(Clone)]
struct Binding {
    entries: InMemoryReadModel,
    answer: BindAnswer,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
}

#[evoq::async_trait]
impl ReadModel for Binding {
    async fn bind(&self, projection: &str) -> Result<(), evoq::ReadModelError> {
        self.asked.lock().unwrap().push(projection.to_owned());
        match self.answer {
            BindAnswer::Refuse => Err(evoq::ReadModelError::Refused {
                read_model: "bound".to_owned(),
                reason: "it belongs to projection `other`".to_owned(),
            }),
            BindAnswer::Fail => Err(evoq::ReadModelError::Backend(
                "the database does not answer".to_owned(),
            )),
            BindAnswer::Panic => panic!("bind panics"),
        }
    }

    async fn clear(&self) -> Result<(), evoq::ReadModelError> {
        self.entries.clear();
        Ok(())
    }
}

struct BoundProjection {
    model: Binding,
}

#[projection(name = "bound", read_model = model)]
impl BoundProjection {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.model.entries.put(meta.event_id().to_string(), &e.n)?;
        Ok(())
    }
}

/// At start the runtime binds each projection's read model to the name it runs under, before
/// any event: a refusal fails the start (`Error::Config`, key `projection`, naming it and the
/// read model's reason) and nothing is delivered; any other failure of `bind`, a panic
/// included, is logged and the projection runs.
#[tokio::test]
async fn a_read_model_refusing_its_projection_at_bind_fails_the_start_and_nothing_else_does() {
    for answer in [BindAnswer::Refuse, BindAnswer::Fail, BindAnswer::Panic] {
        let store = Arc::new(InMemoryStore::new());
        store
            .append(
                &ledger_stream("k"),
                ExpectedVersion::NoStream,
                vec![raw(Kind::A, "k", 1)],
            )
            .await
            .unwrap();
        let model = Binding {
            entries: InMemoryReadModel::new(),
            answer,
            asked: Arc::default(),
        };
        let started = Evoq::builder()
            .shared_store(store)
            .projection_with(
                BoundProjection {
                    model: model.clone(),
                },
                HandlerOptions::new().name("bound_v2"),
            )
            .start()
            .await;
        assert_eq!(*model.asked.lock().unwrap(), ["bound_v2"]);
        match answer {
            BindAnswer::Refuse => {
                let Err(error) = started else {
                    panic!("the start is refused");
                };
                assert!(
                    matches!(&error, evoq::Error::Config { key, .. } if key == "projection"),
                    "{error:?}"
                );
                assert_eq!(
                    error.to_string(),
                    "invalid configuration `projection`: projection `bound_v2` cannot start: read model `bound` refuses writes: it belongs to projection `other`"
                );
                assert!(model.entries.is_empty(), "nothing delivered");
            }
            BindAnswer::Fail | BindAnswer::Panic => {
                let app = started.expect("the runtime starts");
                wait(&app, "bound_v2", 1).await;
                app.stop().await;
                assert_eq!(model.entries.len(), 1);
            }
        }
    }
}

/// An in-memory read model over a durable store: a new process starts with an empty model, and
/// the projection replays every event into it (it does not resume after a checkpoint of the
/// store's), so the model is whole again; a token from before the restart is reached only once
/// the model holds its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_read_model_over_sqlite_is_whole_again_after_a_restart() {
    use evoq_tests::backends::{Backend, Place};
    let place = Place::new(Backend::Sqlite, "inmem-restart")
        .await
        .expect("a temporary directory");
    let first = InMemoryReadModel::new();
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .projection(Tallies::new(&first))
        .start()
        .await
        .unwrap();
    let mut token = 0;
    for n in 0..200u64 {
        token = app
            .dispatch(Emit::new(&format!("k{}", n % 7), &[Kind::A, Kind::C], n))
            .await
            .unwrap()
            .token;
    }
    wait(&app, "tallies", token).await;
    let before = first.to_map();
    assert_eq!(before.len(), 7);
    app.stop().await;
    drop(app);

    // A new process: a new, empty in-memory model over the same file.
    let second = InMemoryReadModel::new();
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .projection(Tallies::new(&second))
        .start()
        .await
        .unwrap();
    app.wait_for::<Tallies>(token)
        .timeout(Duration::from_secs(20))
        .await
        .expect("the replay reaches the old token");
    assert_eq!(
        second.to_map(),
        before,
        "once the old token is reached, the model holds everything it held"
    );
    app.stop().await;
}

/// An in-memory model lives in one process: on a store shared by nodes, each node that wants
/// the model names its projection for itself, so each takes a lease of its own and fills its
/// own model, and a wait on either node reaches what was dispatched on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_models_on_two_postgres_nodes_fill_on_each_under_names_of_their_own() {
    use evoq_tests::backends::{Backend, Place};
    let Some(place) = Place::new(Backend::Postgres, "inmem_nodes").await else {
        return;
    };
    let node = |name: &'static str, model: &InMemoryReadModel| {
        let (place, model) = (&place, model.clone());
        async move {
            Evoq::builder()
                .shared_store(place.open().await)
                .projection_with(Balances { model }, HandlerOptions::new().name(name))
                .start()
                .await
                .expect("the node starts")
        }
    };
    let (model_a, model_b) = (InMemoryReadModel::new(), InMemoryReadModel::new());
    let a = node("balances@a", &model_a).await;
    let b = node("balances@b", &model_b).await;
    a.dispatch(OpenAccount {
        account: "acc-1".into(),
        initial_balance: 10,
    })
    .await
    .unwrap();
    let done = b
        .dispatch(Deposit {
            account: "acc-1".into(),
            amount: 5,
        })
        .await
        .unwrap();
    for (app, name) in [(&a, "balances@a"), (&b, "balances@b")] {
        app.wait_for_named(name, done.token)
            .timeout(Duration::from_secs(20))
            .await
            .expect("each node's projection reaches the other's write");
    }
    assert_eq!(model_a.get::<u64>("acc-1").unwrap(), Some(15));
    assert_eq!(model_b.get::<u64>("acc-1").unwrap(), Some(15));
    a.stop().await;
    b.stop().await;
}

/// Counts `Alpha`s in its model, each once its gate lets it; says which `Alpha` it is in.
struct Gated {
    model: InMemoryReadModel,
    gate: Arc<tokio::sync::Semaphore>,
    entered: Arc<std::sync::atomic::AtomicU64>,
    log: Log,
}

#[projection(name = "gated", read_model = model)]
impl Gated {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.entered.store(e.n, std::sync::atomic::Ordering::SeqCst);
        self.gate.acquire().await.expect("the gate stays").forget();
        self.log.push(Seen::of(meta, e.n));
        let seen: u64 = self.model.get("alphas")?.unwrap_or(0);
        self.model.put("alphas", &(seen + 1))?;
        Ok(())
    }
}

/// Waits until the projection is inside the `Alpha` numbered `n`.
async fn entered(entered: &std::sync::atomic::AtomicU64, n: u64) {
    let started = std::time::Instant::now();
    while entered.load(std::sync::atomic::Ordering::SeqCst) != n {
        assert!(started.elapsed() < Duration::from_secs(10), "never in {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A rebuild asked while the projection is busy with an event, and given up by its caller
/// before it began, never begins; one that began before its caller gave up finishes.
async fn a_rebuild_given_up_before_it_began_never_begins(backend: evoq_tests::backends::Backend) {
    use evoq_tests::backends::Place;
    let Some(place) = Place::new(backend, "rebuild_given_up").await else {
        return;
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(1));
    let model = InMemoryReadModel::new();
    let log = Log::default();
    let inside = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .projection(Gated {
            model: model.clone(),
            gate: Arc::clone(&gate),
            entered: Arc::clone(&inside),
            log: log.clone(),
        })
        .start()
        .await
        .unwrap();
    let first = app.dispatch(Emit::new("g", &[Kind::A], 1)).await.unwrap();
    wait(&app, "gated", first.token).await;
    app.dispatch(Emit::new("g", &[Kind::A], 2)).await.unwrap();
    entered(&inside, 2).await;

    let gave_up = tokio::time::timeout(Duration::from_millis(200), app.rebuild("gated")).await;
    assert!(
        gave_up.is_err(),
        "{backend:?}: the projection is busy: {gave_up:?}"
    );
    gate.add_permits(1_000);
    let third = app.dispatch(Emit::new("g", &[Kind::A], 3)).await.unwrap();
    wait(&app, "gated", third.token).await;
    assert_eq!(log.positions(), [1, 2, 3], "{backend:?}: nothing replayed");
    assert_eq!(model.get::<u64>("alphas").unwrap(), Some(3), "{backend:?}");
    assert_eq!(
        ReadModel::checkpoint(&model, "gated").await.unwrap(),
        Some(third.token),
        "{backend:?}: the checkpoint was never reset"
    );

    // Asked while the projection waits for events, a rebuild begins at once: its replay,
    // held at the first event, goes on after its caller gave up, to the end.
    gate.forget_permits(gate.available_permits());
    let gave_up = tokio::time::timeout(Duration::from_millis(300), app.rebuild("gated")).await;
    assert!(
        gave_up.is_err(),
        "{backend:?}: the replay is held: {gave_up:?}"
    );
    assert_eq!(
        model.get::<u64>("alphas").unwrap(),
        None,
        "{backend:?}: begun"
    );
    gate.add_permits(1_000);
    wait(&app, "gated", third.token).await;
    assert_eq!(log.positions(), [1, 2, 3, 1, 2, 3], "{backend:?}: replayed");
    assert_eq!(model.get::<u64>("alphas").unwrap(), Some(3), "{backend:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_given_up_by_its_caller_before_it_began_never_begins_in_memory() {
    a_rebuild_given_up_before_it_began_never_begins(evoq_tests::backends::Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_given_up_by_its_caller_before_it_began_never_begins_on_sqlite() {
    a_rebuild_given_up_before_it_began_never_begins(evoq_tests::backends::Backend::Sqlite).await;
}

/// A projection registered as a plain handler would keep no read-model checkpoint and could not
/// be rebuilt (after a restart, its in-memory model would miss every earlier event): the start
/// refuses it, saying to use `.projection(...)`; an unknown name's advice names it too.
#[tokio::test]
async fn a_projection_registered_as_a_handler_is_refused_at_start_with_the_right_call() {
    let error = Evoq::builder()
        .handler(Tallies::new(&InMemoryReadModel::new()))
        .start()
        .await
        .unwrap_err();
    match &error {
        evoq::Error::Config { key, reason } => {
            assert_eq!(key, "handler");
            assert!(
                reason.contains("`tallies`") && reason.contains(".projection("),
                "{reason}"
            );
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
    let app = Evoq::builder().start().await.unwrap();
    let unknown = app.rebuild("tallies").await.unwrap_err();
    assert!(
        unknown.to_string().contains(".projection("),
        "an unknown name's advice names the projection's call: {unknown}"
    );
}
