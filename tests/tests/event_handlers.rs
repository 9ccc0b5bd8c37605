//! Event handlers: subscriptions by event type, global order, catch-up then live, checkpoints
//! and restarts (docs/semantics.md §5).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::memory::InMemoryStore;
use evoq::store::{Direction, EventFilter};
use evoq::{Config, ExpectedVersion, HandlerConfig, HandlerOptions, StartFrom};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::ledger::*;

/// Takes `Alpha` and `Gamma`, never `Beta`.
#[derive(Default)]
struct AlphaGamma {
    log: Log,
}

#[event_handler(name = "alpha_gamma")]
impl AlphaGamma {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }

    #[handles(Gamma)]
    async fn gamma(&mut self, e: &Gamma, meta: &EventMeta) -> Result<(), Failed> {
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

/// Takes every type; can be told to panic on one event number.
#[derive(Default)]
struct Everything {
    log: Log,
    panic_on: Option<u64>,
}

impl Everything {
    fn record(&mut self, n: u64, meta: &EventMeta) -> Result<(), Failed> {
        if self.panic_on == Some(n) {
            panic!("boom on event {n}");
        }
        self.log.push(Seen::of(meta, n));
        Ok(())
    }
}

#[event_handler(name = "everything")]
impl Everything {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        self.record(e.n, meta)
    }

    #[handles]
    async fn beta(&mut self, e: &Beta, meta: &EventMeta) -> Result<(), Failed> {
        tokio::task::yield_now().await;
        self.record(e.n, meta)
    }

    #[handles]
    async fn gamma(&mut self, e: &Gamma, meta: &EventMeta) -> Result<(), Failed> {
        self.record(e.n, meta)
    }
}

/// Takes `Alpha` only.
#[derive(Default)]
struct AlphaOnly {
    log: Log,
}

#[event_handler(name = "alpha_only")]
impl AlphaOnly {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

fn fast_config() -> Config {
    Config {
        handlers: HandlerConfig {
            retry: evoq::RetryStrategy::immediate(),
            max_attempts: 1,
            ..HandlerConfig::default()
        },
        ..Config::default()
    }
}

async fn wait(app: &Evoq, handler: &str, position: u64) {
    tokio::time::timeout(
        Duration::from_secs(20),
        app.wait_for_named(handler, position).without_deadline(),
    )
    .await
    .unwrap_or_else(|_| panic!("`{handler}` did not reach position {position} in time"))
    .expect("the handler runs");
}

fn head(store: &Arc<dyn EventStore>) -> u64 {
    *store.head().borrow()
}

#[test]
fn the_subscription_list_comes_from_the_signatures() {
    assert_eq!(AlphaGamma::NAME, "alpha_gamma");
    assert_eq!(AlphaGamma::EVENT_TYPES, ["Alpha", "Gamma"]);
    assert_eq!(Everything::EVENT_TYPES, ["Alpha", "Beta", "Gamma"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_for_a_and_c_sees_only_a_and_c_from_several_streams_in_global_order() {
    let ac = AlphaGamma::default();
    let log = ac.log.clone();
    let app = Evoq::builder().handler(ac).start().await.unwrap();
    use Kind::*;
    let commands = [
        Emit::new("s1", &[A, B, C], 0),
        Emit::new("s2", &[B, B], 10),
        Emit::new("s3", &[C, A], 20),
        Emit::new("s1", &[A], 30),
        Emit::new("s2", &[C, B, A], 40),
        Emit::new("s3", &[B], 50),
    ];
    let mut last = 0;
    for command in commands {
        last = app.dispatch(command).await.unwrap().position.unwrap();
    }
    wait(&app, "alpha_gamma", last).await;

    let stored = app
        .store()
        .read_all(0, usize::MAX, &EventFilter::types(["Alpha", "Gamma"]))
        .await
        .unwrap();
    let expected: Vec<(String, u64, String)> = stored
        .events
        .iter()
        .map(|e| {
            (
                e.event_type.to_string(),
                e.global_position,
                e.stream_id().to_owned(),
            )
        })
        .collect();
    let seen: Vec<(String, u64, String)> = log
        .all()
        .into_iter()
        .map(|s| (s.event_type, s.position, s.stream))
        .collect();
    assert_eq!(
        seen, expected,
        "exactly the A and C events, in global order"
    );
    assert_eq!(seen.len(), 7);
    let streams: HashSet<&str> = seen.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(streams.len(), 3, "from every stream");
    assert!(seen.iter().all(|s| s.0 != "Beta"));
}

#[tokio::test]
async fn two_events_of_different_types_are_seen_in_append_order() {
    let ac = AlphaGamma::default();
    let log = ac.log.clone();
    let app = Evoq::builder().handler(ac).start().await.unwrap();
    // C then A in one command, then A then C in two commands to two streams.
    app.dispatch(Emit::new("x", &[Kind::C, Kind::A], 1))
        .await
        .unwrap();
    app.dispatch(Emit::new("y", &[Kind::A], 3)).await.unwrap();
    let last = app
        .dispatch(Emit::new("x", &[Kind::C], 4))
        .await
        .unwrap()
        .position
        .unwrap();
    wait(&app, "alpha_gamma", last).await;
    let seen: Vec<(String, u64)> = log.all().into_iter().map(|s| (s.event_type, s.n)).collect();
    assert_eq!(
        seen,
        [
            ("Gamma".to_owned(), 1),
            ("Alpha".to_owned(), 2),
            ("Alpha".to_owned(), 3),
            ("Gamma".to_owned(), 4)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_appended_during_catch_up_are_delivered_exactly_once() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    // 20,000 stored events of the three types over 50 streams.
    let kinds = [Kind::A, Kind::B, Kind::C];
    for batch in 0..400u64 {
        let id = format!("pre-{}", batch % 50);
        let events = (0..50)
            .map(|i| raw(kinds[((batch + i) % 3) as usize], &id, batch * 50 + i))
            .collect();
        store
            .append(&ledger_stream(&id), ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let everything = Everything::default();
    let ac = AlphaGamma::default();
    let (all_log, ac_log) = (everything.log.clone(), ac.log.clone());
    let config = Config {
        handlers: HandlerConfig {
            page_size: 64,
            checkpoint_every: 7,
            ..HandlerConfig::default()
        },
        ..Config::default()
    };
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .config(config)
        .handler(everything)
        .handler(ac)
        .start()
        .await
        .unwrap();
    // Appenders race the handlers' catch-up: they start once the first events are handled.
    while all_log.is_empty() {
        tokio::task::yield_now().await;
    }
    let appenders: Vec<_> = (0..4u64)
        .map(|task| {
            let store = Arc::clone(&store);
            let all_log = all_log.clone();
            tokio::spawn(async move {
                let handled_at_start = all_log.len();
                for round in 0..250u64 {
                    let id = format!("live-{task}-{}", round % 5);
                    let events = (0..(1 + round % 7))
                        .map(|i| raw(kinds[((round + i + task) % 3) as usize], &id, i))
                        .collect();
                    store
                        .append(&ledger_stream(&id), ExpectedVersion::Any, events)
                        .await
                        .unwrap();
                    if round % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                handled_at_start
            })
        })
        .collect();
    for appender in appenders {
        let handled_at_start = appender.await.unwrap();
        assert!(
            handled_at_start < 20_000,
            "the appends must start while the handler is still catching up ({handled_at_start} handled)"
        );
    }
    let end = head(&store);
    assert!(end > 20_000);
    wait(&app, "everything", end).await;
    wait(&app, "alpha_gamma", end).await;

    let stored = app
        .store()
        .read_all(0, usize::MAX, &EventFilter::All)
        .await
        .unwrap()
        .events;
    for (log, filter) in [
        (&all_log, &["Alpha", "Beta", "Gamma"][..]),
        (&ac_log, &["Alpha", "Gamma"][..]),
    ] {
        let seen = log.all();
        let expected: Vec<evoq::Uuid> = stored
            .iter()
            .filter(|e| filter.contains(&&*e.event_type))
            .map(|e| e.event_id)
            .collect();
        let ids: Vec<evoq::Uuid> = seen.iter().map(|s| s.event_id).collect();
        let unique: HashSet<evoq::Uuid> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "no event delivered twice");
        assert_eq!(ids, expected, "every event, once, in global order");
    }
}

#[tokio::test]
async fn restart_resumes_each_handler_from_its_checkpoint() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let first = Everything::default();
    let first_log = first.log.clone();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .config(Config {
            handlers: HandlerConfig {
                checkpoint_every: 3,
                ..HandlerConfig::default()
            },
            ..Config::default()
        })
        .handler(first)
        .start()
        .await
        .unwrap();
    let mut last = 0;
    for n in 0..20 {
        let kinds = [[Kind::A, Kind::B], [Kind::C, Kind::C]][n % 2];
        last = app
            .dispatch(Emit::new(&format!("r{}", n % 3), &kinds, n as u64 * 2))
            .await
            .unwrap()
            .position
            .unwrap();
    }
    wait(&app, "everything", last).await;
    app.stop().await;
    let checkpoint = store.load_checkpoint("everything").await.unwrap();
    assert_eq!(
        checkpoint,
        Some(last),
        "stopping saves the position reached"
    );
    assert_eq!(first_log.len(), 40);

    // Events stored while no runtime runs.
    for n in 0..5u64 {
        store
            .append(
                &ledger_stream("offline"),
                ExpectedVersion::Any,
                vec![raw(Kind::B, "offline", 100 + n)],
            )
            .await
            .unwrap();
    }
    let second = Everything::default();
    let second_log = second.log.clone();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .handler(second)
        .start()
        .await
        .unwrap();
    let more = app
        .dispatch(Emit::new("r0", &[Kind::A, Kind::C], 200))
        .await
        .unwrap()
        .position
        .unwrap();
    wait(&app, "everything", more).await;
    let positions = second_log.positions();
    assert_eq!(
        positions,
        ((last + 1)..=more).collect::<Vec<u64>>(),
        "nothing checkpointed is handled again, nothing after it is skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_saved_while_busy_and_never_ahead_of_the_handled_events() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    for n in 0..50u64 {
        store
            .append(
                &ledger_stream("c"),
                ExpectedVersion::Any,
                vec![raw(Kind::A, "c", n)],
            )
            .await
            .unwrap();
    }
    let release = Arc::new(AtomicBool::new(false));
    let held = Held {
        release: Arc::clone(&release),
        log: Log::default(),
    };
    let log = held.log.clone();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .config(Config {
            handlers: HandlerConfig {
                checkpoint_every: 10,
                ..HandlerConfig::default()
            },
            ..Config::default()
        })
        .handler(held)
        .start()
        .await
        .unwrap();
    // It handles 25 events, then holds the 26th until released.
    tokio::time::timeout(Duration::from_secs(10), async {
        while log.len() < 25 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let saved = store.load_checkpoint("held").await.unwrap().unwrap_or(0);
    assert_eq!(
        saved, 20,
        "saved every 10 events while busy, never ahead of the 25 handled"
    );
    release.store(true, Ordering::SeqCst);
    wait(&app, "held", 50).await;
    assert_eq!(log.len(), 50);
}

/// Handles `Alpha` events, holding the 26th until released.
struct Held {
    release: Arc<AtomicBool>,
    log: Log,
}

#[event_handler(name = "held")]
impl Held {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        if self.log.len() == 25 {
            while !self.release.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

/// On every store, PostgreSQL's shared lease included: taking the lease does not move a
/// handler told to start from the origin up to the checkpoint in the store.
async fn start_from_current_skips_stored_events_and_origin_replays_them(backend: Backend) {
    let Some(place) = Place::new(backend, "start_from").await else {
        return;
    };
    let store = place.open().await;
    for n in 0..3u64 {
        store
            .append(
                &ledger_stream("s"),
                ExpectedVersion::Any,
                vec![raw(Kind::A, "s", n)],
            )
            .await
            .unwrap();
    }
    store.save_checkpoint("from_origin", 3).await.unwrap();
    let current = AlphaOnly::default();
    let origin = AlphaOnly::default();
    let (current_log, origin_log) = (current.log.clone(), origin.log.clone());
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .handler_with(
            current,
            HandlerOptions::new()
                .name("from_current")
                .start_from(StartFrom::Current),
        )
        .handler_with(
            origin,
            HandlerOptions::new()
                .name("from_origin")
                .start_from(StartFrom::Origin),
        )
        .start()
        .await
        .unwrap();
    let last = app
        .dispatch(Emit::new("s2", &[Kind::A], 9))
        .await
        .unwrap()
        .position
        .unwrap();
    wait(&app, "from_current", last).await;
    wait(&app, "from_origin", last).await;
    assert_eq!(current_log.positions(), [4]);
    assert_eq!(
        origin_log.positions(),
        [1, 2, 3, 4],
        "origin ignores the checkpoint"
    );
    app.stop().await;
}

#[tokio::test]
async fn start_from_current_skips_stored_events_and_origin_replays_them_in_memory() {
    start_from_current_skips_stored_events_and_origin_replays_them(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_current_skips_stored_events_and_origin_replays_them_on_sqlite() {
    start_from_current_skips_stored_events_and_origin_replays_them(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_current_skips_stored_events_and_origin_replays_them_on_postgres() {
    start_from_current_skips_stored_events_and_origin_replays_them(Backend::Postgres).await;
}

#[tokio::test]
async fn wait_for_moves_past_events_of_types_the_handler_does_not_take() {
    let only = AlphaOnly::default();
    let log = only.log.clone();
    let app = Evoq::builder().handler(only).start().await.unwrap();
    let done = app
        .dispatch(Emit::new("b", &[Kind::B, Kind::B, Kind::C], 0))
        .await
        .unwrap();
    wait(&app, "alpha_only", done.position.unwrap()).await;
    assert!(log.is_empty());
    let stats = app.handler_stats();
    assert_eq!(stats[0].position, 3);
    assert_eq!(stats[0].lag, 0);
}

#[tokio::test]
async fn the_meta_carries_ids_positions_type_and_metadata() {
    let ac = AlphaGamma::default();
    let log = ac.log.clone();
    let metas: Arc<std::sync::Mutex<Vec<EventMeta>>> = Arc::default();
    let app = Evoq::builder()
        .handler(ac)
        .handler(Keeper {
            metas: Arc::clone(&metas),
        })
        .start()
        .await
        .unwrap();
    let correlation = evoq::Uuid::now_v7();
    let done = app
        .command(Emit::new("m", &[Kind::A], 7))
        .correlation_id(correlation)
        .metadata("user", "alice")
        .dispatch()
        .await
        .unwrap();
    wait(&app, "keeper", done.position.unwrap()).await;
    wait(&app, "alpha_gamma", done.position.unwrap()).await;
    let stored = app
        .store()
        .read_stream(&ledger_stream("m"), 1, Direction::Forward, 10)
        .await
        .unwrap();
    let meta = metas.lock().unwrap()[0].clone();
    let record = &stored[0];
    assert_eq!(meta.event_id(), record.event_id);
    assert_eq!(meta.stream_id(), "Ledger-m");
    assert_eq!(meta.stream_version(), 1);
    assert_eq!(meta.global_position(), 1);
    assert_eq!(meta.event_type(), "Alpha");
    assert_eq!(meta.schema_version(), 1);
    assert_eq!(meta.metadata().correlation_id, Some(correlation));
    assert_eq!(meta.metadata().command_id, Some(done.command_id));
    assert_eq!(meta.metadata().user["user"], "alice");
    assert_eq!(meta.recorded_at(), record.recorded_at);
    assert_eq!(log.all()[0].event_id, record.event_id);
}

/// Keeps every `EventMeta` it gets.
struct Keeper {
    metas: Arc<std::sync::Mutex<Vec<EventMeta>>>,
}

#[event_handler(name = "keeper")]
impl Keeper {
    #[handles]
    async fn alpha(&mut self, _: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        self.metas.lock().unwrap().push(meta.clone());
        Ok(())
    }
}

#[tokio::test]
async fn an_undecodable_event_is_a_failure_that_follows_the_policy_never_a_panic() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let mut bad = raw(Kind::A, "d", 0);
    bad.data = br#"{"id": 42}"#.to_vec();
    store
        .append(
            &ledger_stream("d"),
            ExpectedVersion::Any,
            vec![bad.clone(), raw(Kind::A, "d", 1)],
        )
        .await
        .unwrap();
    let only = AlphaOnly::default();
    let log = only.log.clone();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .config(fast_config())
        .handler(only)
        .start()
        .await
        .unwrap();
    wait(&app, "alpha_only", 2).await;
    assert_eq!(log.positions(), [2], "the next event is handled");
    let letters = app.dead_letters("alpha_only").list(0, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event.event_id, bad.event_id);
    assert!(
        letters[0].error.starts_with("cannot decode event `Alpha`"),
        "{}",
        letters[0].error
    );
}

#[tokio::test]
async fn a_panicking_handler_is_a_failure_not_a_crash() {
    let everything = Everything {
        panic_on: Some(1),
        ..Everything::default()
    };
    let log = everything.log.clone();
    let app = Evoq::builder()
        .config(fast_config())
        .handler(everything)
        .start()
        .await
        .unwrap();
    let last = app
        .dispatch(Emit::new("p", &[Kind::A, Kind::B, Kind::C], 0))
        .await
        .unwrap()
        .position
        .unwrap();
    wait(&app, "everything", last).await;
    assert_eq!(log.positions(), [1, 3]);
    let letters = app.dead_letters("everything").list(0, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].error.contains("boom on event 1"),
        "{}",
        letters[0].error
    );
}

#[tokio::test]
async fn two_handlers_with_one_name_do_not_start() {
    let error = Evoq::builder()
        .handler(AlphaOnly::default())
        .handler(AlphaGamma::default())
        .handler_with(
            AlphaOnly::default(),
            HandlerOptions::new().name("alpha_gamma"),
        )
        .start()
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("two event handlers are named `alpha_gamma`"),
        "{error}"
    );
    // One type twice under two names is fine.
    let app = Evoq::builder()
        .handler(AlphaOnly::default())
        .handler_with(
            AlphaOnly::default(),
            HandlerOptions::new().name("alpha_two"),
        )
        .start()
        .await
        .unwrap();
    let names: Vec<String> = app.handler_stats().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["alpha_only", "alpha_two"]);
}

#[tokio::test]
async fn an_unknown_handler_cannot_be_waited_for() {
    let app = Evoq::builder()
        .handler(AlphaOnly::default())
        .start()
        .await
        .unwrap();
    let error = app
        .wait_for_named("nobody", 1)
        .without_deadline()
        .await
        .unwrap_err();
    assert!(matches!(error, evoq::Error::UnknownHandler { .. }));
    assert!(error.to_string().contains("`alpha_only`"), "{error}");
}

#[tokio::test]
async fn stats_count_handled_events_and_lag() {
    let only = AlphaOnly::default();
    let app = Evoq::builder().handler(only).start().await.unwrap();
    let last = app
        .dispatch(Emit::new("k", &[Kind::A, Kind::A, Kind::B], 0))
        .await
        .unwrap()
        .position
        .unwrap();
    wait(&app, "alpha_only", last).await;
    let stats = &app.handler_stats()[0];
    assert_eq!(stats.name, "alpha_only");
    assert_eq!(stats.event_types, ["Alpha"]);
    assert_eq!(stats.handled, 2);
    assert_eq!(
        (stats.retries, stats.dead_letters, stats.skipped),
        (0, 0, 0)
    );
    assert_eq!((stats.position, stats.lag), (3, 0));
    assert!(!stats.strong);
    assert_eq!(stats.stopped, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_delay_a_handler_but_lose_nothing() {
    use evoq_tests::faulty_store::FaultyStore;
    let faulty = FaultyStore::new();
    let store: Arc<dyn EventStore> = faulty.clone();
    let only = AlphaOnly::default();
    let log = only.log.clone();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .handler(only)
        .start()
        .await
        .unwrap();
    let first = app
        .dispatch(Emit::new("f", &[Kind::A], 0))
        .await
        .unwrap()
        .position
        .unwrap();
    wait(&app, "alpha_only", first).await;
    // Waiters are woken before the checkpoint's store call: let it land first.
    tokio::time::timeout(Duration::from_secs(5), async {
        while store.load_checkpoint("alpha_only").await.unwrap() != Some(first) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the checkpoint is saved");

    // Reads and checkpoint saves fail for a while; events keep coming.
    faulty.fail_read_all.store(true, Ordering::SeqCst);
    faulty.fail_checkpoints.store(true, Ordering::SeqCst);
    let reads_before = faulty.all_reads.load(Ordering::SeqCst);
    let mut last = 0;
    for n in 1..=20 {
        last = app
            .dispatch(Emit::new("f", &[Kind::A, Kind::B], n * 2))
            .await
            .unwrap()
            .position
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        faulty.all_reads.load(Ordering::SeqCst) > reads_before,
        "the handler kept trying"
    );
    assert_eq!(log.len(), 1, "nothing delivered while the store fails");
    faulty.fail_read_all.store(false, Ordering::SeqCst);
    wait(&app, "alpha_only", last).await;
    assert_eq!(log.len(), 21, "every event, once");
    let unique: HashSet<u64> = log.positions().into_iter().collect();
    assert_eq!(unique.len(), 21);

    // The checkpoint is saved once the store takes it again.
    assert_eq!(
        store.load_checkpoint("alpha_only").await.unwrap(),
        Some(first)
    );
    faulty.fail_checkpoints.store(false, Ordering::SeqCst);
    app.stop().await;
    assert_eq!(
        store.load_checkpoint("alpha_only").await.unwrap(),
        Some(last)
    );
}

/// A node whose requests for a handler's lease failed, and then are answered (another node
/// holds it), reads `Running` again: the failure is over, and an alert on `retrying` stops.
#[tokio::test]
async fn a_standby_node_reads_running_again_once_its_lease_requests_are_answered() {
    use evoq_tests::faulty_store::FaultyStore;
    let faulty = FaultyStore::new();
    faulty.lease_failures.store(3, Ordering::SeqCst);
    faulty.lease_held_elsewhere.store(true, Ordering::SeqCst);
    let store: Arc<dyn EventStore> = faulty.clone();
    let app = Evoq::builder()
        .shared_store(store)
        .handler(AlphaOnly::default())
        .start()
        .await
        .unwrap();
    let status = || app.handler_stats()[0].status.clone();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(status(), evoq::HandlerStatus::Retrying { .. }) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("a failing lease request reads retrying");
    tokio::time::timeout(Duration::from_secs(10), async {
        while faulty.lease_failures.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The next request after the failures is answered: another node holds the lease.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    })
    .await
    .expect("the failures pass");
    assert!(
        matches!(status(), evoq::HandlerStatus::Running),
        "once answered, the standby node's handler is running: {:?}",
        status()
    );
    app.stop().await;
}

/// On every store, PostgreSQL's shared lease included: taking the lease does not bring the
/// stale checkpoint back.
async fn a_checkpoint_beyond_the_head_resumes_at_the_head_and_skips_no_new_event(backend: Backend) {
    let Some(place) = Place::new(backend, "beyond_head").await else {
        return;
    };
    let store = place.open().await;
    store
        .append(
            &ledger_stream("b"),
            ExpectedVersion::Any,
            vec![raw(Kind::A, "b", 1), raw(Kind::A, "b", 2)],
        )
        .await
        .unwrap();
    // Saved against a store that held more (restored from an older backup since).
    store.save_checkpoint("beyond", 500).await.unwrap();
    let handler = AlphaOnly::default();
    let log = handler.log.clone();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .handler_with(handler, HandlerOptions::new().name("beyond"))
        .start()
        .await
        .unwrap();
    let last = app
        .dispatch(Emit::new("b2", &[Kind::A], 3))
        .await
        .unwrap()
        .token;
    wait(&app, "beyond", last).await;
    assert_eq!(
        log.positions(),
        [3],
        "the new event is handled, not skipped"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_checkpoint_beyond_the_head_resumes_at_the_head_and_skips_no_new_event_in_memory() {
    a_checkpoint_beyond_the_head_resumes_at_the_head_and_skips_no_new_event(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_beyond_the_head_resumes_at_the_head_and_skips_no_new_event_on_sqlite() {
    a_checkpoint_beyond_the_head_resumes_at_the_head_and_skips_no_new_event(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_beyond_the_head_resumes_at_the_head_and_skips_no_new_event_on_postgres() {
    a_checkpoint_beyond_the_head_resumes_at_the_head_and_skips_no_new_event(Backend::Postgres)
        .await;
}

/// A node waiting for another's lease finds, when it takes it over, a checkpoint beyond the
/// head (the store restored from an older backup meanwhile): it resumes at the head its runtime
/// started at, as a start does, not from where it would have started without a checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_taking_the_lease_over_a_checkpoint_beyond_the_head_resumes_at_the_head_on_postgres()
{
    let Some(place) = Place::new(Backend::Postgres, "takeover_beyond_head").await else {
        return;
    };
    let store = place.open().await;
    for n in 1..=5 {
        store
            .append(
                &ledger_stream("t"),
                ExpectedVersion::Any,
                vec![raw(Kind::A, "t", n)],
            )
            .await
            .unwrap();
    }
    // Another node holds the handler's lease (this test, for it), without a checkpoint yet.
    let held = store
        .try_lease("takeover")
        .await
        .unwrap()
        .expect("the lease is free");
    let handler = AlphaOnly::default();
    let log = handler.log.clone();
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .handler_with(handler, HandlerOptions::new().name("takeover"))
        .start()
        .await
        .unwrap();
    // That node handled the five events, then the store went back to an older backup.
    store.save_checkpoint("takeover", 10_000).await.unwrap();
    drop(held);
    let last = app
        .dispatch(Emit::new("t2", &[Kind::A], 6))
        .await
        .unwrap()
        .token;
    wait(&app, "takeover", last).await;
    assert_eq!(
        log.positions(),
        [6],
        "the events up to the head the runtime started at are not delivered again, the new one is"
    );
    app.stop().await;
}

/// Fails every `Alpha`.
#[derive(Default)]
struct AlwaysFails;

#[event_handler(name = "always_fails")]
impl AlwaysFails {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, _: &EventMeta) -> Result<(), Failed> {
        Err(Failed(format!("down: {}", e.n)))
    }
}

#[tokio::test]
async fn a_wait_that_ends_while_the_handler_retries_a_failed_event_does_not_say_nothing_failed() {
    let app = Evoq::builder()
        .handler_with(
            AlwaysFails,
            HandlerOptions::new()
                .retry(evoq::RetryStrategy::fixed(Duration::from_secs(30)))
                .max_attempts(3),
        )
        .start()
        .await
        .unwrap();
    let head = app
        .dispatch(Emit::new("f", &[Kind::A], 1))
        .await
        .unwrap()
        .token;
    let error = app
        .wait_for::<AlwaysFails>(head)
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(error.is_wait_timeout(), "{error:?}");
    let text = error.to_string();
    assert!(
        !text.contains("nothing failed") && text.contains("retrying a failed event"),
        "{text}"
    );
    assert!(app.handler_stats()[0].retries >= 1);
    app.stop().await;
}

#[tokio::test]
async fn a_wait_past_its_deadline_is_a_typed_timeout_saying_where_the_handler_was() {
    let app = Evoq::builder()
        .handler(AlphaOnly::default())
        .start()
        .await
        .unwrap();
    let head = app
        .dispatch(Emit::new("w", &[Kind::A], 1))
        .await
        .unwrap()
        .token;
    wait(&app, "alpha_only", head).await;
    let started = std::time::Instant::now();
    let error = app
        .wait_for::<AlphaOnly>(head + 10)
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(100));
    match &error {
        evoq::Error::WaitTimeout {
            handler,
            position,
            reached,
            ..
        } => {
            assert_eq!(handler, "alpha_only");
            assert_eq!(*position, head + 10);
            assert_eq!(*reached, head);
        }
        other => panic!("{other:?}"),
    }
    assert!(error.is_wait_timeout());
    // By name, the same; a position reached returns at once.
    assert!(
        app.wait_for_named("alpha_only", head + 10)
            .timeout(Duration::from_millis(20))
            .await
            .unwrap_err()
            .is_wait_timeout()
    );
    app.wait_for_named("alpha_only", head).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_type_under_two_names_is_waited_on_by_name_and_an_unknown_type_is_named() {
    let app = Evoq::builder()
        .handler_with(AlphaOnly::default(), HandlerOptions::new().name("one"))
        .handler_with(AlphaOnly::default(), HandlerOptions::new().name("two"))
        .start()
        .await
        .unwrap();
    let token = app
        .dispatch(Emit::new("n", &[Kind::A], 1))
        .await
        .unwrap()
        .token;
    match app.wait_for::<AlphaOnly>(token).await.unwrap_err() {
        evoq::Error::AmbiguousHandler { names, .. } => {
            assert!(
                names.contains("`one`") && names.contains("`two`"),
                "{names}"
            );
        }
        other => panic!("{other:?}"),
    }
    app.wait_for_named("one", token).await.unwrap();
    app.wait_for_named("two", token).await.unwrap();
    match app.wait_for::<Everything>(token).await.unwrap_err() {
        evoq::Error::UnknownHandler { handler, .. } => assert_eq!(handler, "everything"),
        other => panic!("{other:?}"),
    }
    app.stop().await;
}

#[tokio::test]
async fn a_dispatch_without_events_gives_the_head_as_its_token() {
    use evoq_tests::bank::{Audit, OpenAccount};
    let app = Evoq::builder()
        .handler(AlphaOnly::default())
        .start()
        .await
        .unwrap();
    app.dispatch(Emit::new("t", &[Kind::A, Kind::B], 1))
        .await
        .unwrap();
    let opened = app
        .dispatch(OpenAccount {
            account: "t".into(),
            initial_balance: 1,
        })
        .await
        .unwrap();
    let head = *app.store().head().borrow();
    assert_eq!(opened.token, head);
    let audited = app
        .dispatch(Audit {
            account: "t".into(),
        })
        .await
        .unwrap();
    assert_eq!(audited.position, None, "no event");
    assert_eq!(audited.token, head, "the head its decision saw");
    app.wait_for::<AlphaOnly>(audited.token).await.unwrap();
    app.stop().await;
}

/// Fails each `Alpha` its first `failures` times, then handles it.
#[derive(Clone, Default)]
struct FailsFirst {
    failures: Arc<std::sync::atomic::AtomicU32>,
    log: Log,
}

#[event_handler(name = "fails_first")]
impl FailsFirst {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(Failed(format!("not yet: {} ({left} to go)", e.n)));
        }
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

/// The status of the runtime's one handler.
fn status(app: &Evoq) -> evoq::HandlerStatus {
    app.handler_stats()[0].status.clone()
}

/// Every retrying reason the handler's status shows until `done`, read every 5 ms (at most
/// 20 s).
async fn retrying_reasons(app: &Evoq, done: impl Fn() -> bool) -> Vec<String> {
    let started = std::time::Instant::now();
    let mut reasons: Vec<String> = Vec::new();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(20), "never done");
        if let evoq::HandlerStatus::Retrying { reason } = status(app)
            && reasons.last() != Some(&reason)
        {
            reasons.push(reason);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reasons
}

#[tokio::test]
async fn a_handler_retrying_its_failed_event_is_retrying_with_the_error_and_attempt_then_running() {
    let handler = FailsFirst::default();
    handler.failures.store(2, Ordering::SeqCst);
    let log = handler.log.clone();
    let app = Evoq::builder()
        .handler_with(
            handler,
            HandlerOptions::new()
                .retry(evoq::RetryStrategy::fixed(Duration::from_millis(300)))
                .max_attempts(6),
        )
        .start()
        .await
        .unwrap();
    assert_eq!(status(&app), evoq::HandlerStatus::Running);
    let token = app
        .dispatch(Emit::new("r", &[Kind::A], 7))
        .await
        .unwrap()
        .token;
    let reasons = retrying_reasons(&app, || !log.is_empty()).await;
    assert_eq!(
        reasons,
        [
            "a failed event (`Alpha` at position 1 failed on attempt 1 of 6 (not yet: 7 (2 to go)); the next attempt in 300 ms)",
            "a failed event (`Alpha` at position 1 failed on attempt 2 of 6 (not yet: 7 (1 to go)); the next attempt in 300 ms)",
        ],
        "each failed attempt shows, with the method's error"
    );
    wait(&app, "fails_first", token).await;
    assert_eq!(status(&app), evoq::HandlerStatus::Running, "handled");
    assert_eq!(app.handler_stats()[0].retries, 2);
    assert_eq!(
        app.handler_stats()[0].faults,
        0,
        "no failure outside its code"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_handler_is_running_again_once_its_failed_event_is_dead_lettered_or_skipped() {
    for on_error in [evoq::OnError::DeadLetter, evoq::OnError::Skip] {
        let handler = FailsFirst::default();
        handler.failures.store(u32::MAX, Ordering::SeqCst);
        let app = Evoq::builder()
            .handler_with(
                handler,
                HandlerOptions::new()
                    .retry(evoq::RetryStrategy::fixed(Duration::from_millis(200)))
                    .max_attempts(2)
                    .on_error(on_error),
            )
            .start()
            .await
            .unwrap();
        let token = app
            .dispatch(Emit::new("g", &[Kind::A], 1))
            .await
            .unwrap()
            .token;
        let reasons = retrying_reasons(&app, || app.handler_stats()[0].position >= token).await;
        assert!(
            matches!(&reasons[..], [reason] if reason.contains("attempt 1 of 2")),
            "{on_error:?}: {reasons:?}"
        );
        assert_eq!(
            status(&app),
            evoq::HandlerStatus::Running,
            "{on_error:?}: given up"
        );
        let stats = &app.handler_stats()[0];
        assert_eq!(
            (stats.dead_letters, stats.skipped),
            if on_error == evoq::OnError::DeadLetter {
                (1, 0)
            } else {
                (0, 1)
            }
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_wait_ending_while_the_handler_retries_says_so_with_the_reason() {
    let handler = FailsFirst::default();
    handler.failures.store(u32::MAX, Ordering::SeqCst);
    let app = Evoq::builder()
        .handler_with(
            handler,
            HandlerOptions::new()
                .retry(evoq::RetryStrategy::fixed(Duration::from_secs(30)))
                .max_attempts(3),
        )
        .start()
        .await
        .unwrap();
    let token = app
        .dispatch(Emit::new("w", &[Kind::A], 5))
        .await
        .unwrap()
        .token;
    let error = app
        .wait_for::<FailsFirst>(token)
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    let evoq::Error::WaitTimeout {
        handler,
        reached,
        retrying,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!((handler.as_str(), *reached), ("fails_first", 0));
    let reason = retrying.as_deref().expect("it was retrying");
    assert!(
        reason.starts_with(
            "a failed event (`Alpha` at position 1 failed on attempt 1 of 3 (not yet: 5"
        ),
        "{reason}"
    );
    let evoq::HandlerStatus::Retrying { reason: status } = status(&app) else {
        panic!("{:?}", status(&app));
    };
    assert_eq!(reason, status, "the error says what the status says");
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "(it was at 0); it is retrying {reason}, so wait longer"
        )),
        "{text}"
    );
    assert!(!text.contains("behind"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn a_wait_ending_while_the_handler_runs_behind_says_it_is_behind() {
    let app = Evoq::builder()
        .handler(AlphaOnly::default())
        .start()
        .await
        .unwrap();
    let head = app
        .dispatch(Emit::new("b", &[Kind::A], 1))
        .await
        .unwrap()
        .token;
    wait(&app, "alpha_only", head).await;
    let error = app
        .wait_for::<AlphaOnly>(head + 1)
        .timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, evoq::Error::WaitTimeout { retrying: None, .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "(it was at {head}); it is behind, so wait longer or read it as it is"
        )),
        "{text}"
    );
    assert!(!text.contains("retrying"), "{text}");
    app.stop().await;
}
