//! Handler errors: retries, the error policies (dead-letter, skip, stop) and the dead-letter
//! store's list / get / retry / discard (docs/semantics.md §5).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use evoq::prelude::*;
use evoq::{
    Config, Consistency, ExpectedVersion, HandlerConfig, HandlerOptions, OnError, RetryStrategy,
};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::ledger::*;

/// Fails on every `Alpha` whose `n` is in its poison list while `healthy` is false; counts
/// every call per event number.
#[derive(Clone, Default)]
struct Flaky {
    healthy: Arc<AtomicBool>,
    poison: Arc<std::sync::Mutex<Vec<u64>>>,
    calls: Arc<std::sync::Mutex<Vec<u64>>>,
    log: Log,
}

impl Flaky {
    fn poisoned(n: &[u64]) -> Self {
        let flaky = Flaky::default();
        flaky.poison.lock().unwrap().extend_from_slice(n);
        flaky
    }

    fn calls_for(&self, n: u64) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|&&c| c == n)
            .count()
    }
}

#[event_handler(name = "flaky")]
impl Flaky {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        self.calls.lock().unwrap().push(e.n);
        if !self.healthy.load(Ordering::SeqCst) && self.poison.lock().unwrap().contains(&e.n) {
            return Err(Failed(format!("cannot handle alpha {}", e.n)));
        }
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

/// Records every `Alpha` at once.
#[derive(Default)]
struct Fast {
    log: Log,
}

#[event_handler(name = "fast")]
impl Fast {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

/// The policy in the attribute: 2 attempts in all, immediate retry, then skip.
#[derive(Default)]
struct Skipper {
    calls: Arc<AtomicU32>,
}

#[event_handler(name = "skipper", max_attempts = 2, retry = immediate, on_error = skip)]
impl Skipper {
    #[handles]
    async fn alpha(&mut self, _: &Alpha, _: &EventMeta) -> Result<(), Failed> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(Failed("always".into()))
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The default policy (6 attempts, exponential with jitter, dead-letter) with tiny delays.
fn config(base: Duration) -> Config {
    Config {
        handlers: HandlerConfig {
            retry: RetryStrategy::exponential_jitter(base, base * 16),
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

async fn emit(app: &Evoq, id: &str, kinds: &[Kind], n: u64) -> u64 {
    app.dispatch(Emit::new(id, kinds, n))
        .await
        .unwrap()
        .position
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_failing_handler_is_called_6_times_then_the_event_is_dead_lettered_and_another_handler_is_not_delayed()
 {
    let flaky = Flaky::poisoned(&[1]);
    let probe = flaky.clone();
    let fast = Fast::default();
    let fast_log = fast.log.clone();
    // Base 40 ms: the five retries wait about 40 + 80 + 160 + 320 + 640 ms, times the jitter.
    let app = Evoq::builder()
        .config(config(ms(40)))
        .handler(flaky)
        .handler(fast)
        .start()
        .await
        .unwrap();
    assert_eq!(app.config().handlers.max_attempts, 6, "the default policy");

    let started = Instant::now();
    let position = app
        .command(Emit::new("acc", &[Kind::A], 1))
        .consistency(Consistency::handlers(["fast"]))
        .dispatch()
        .await
        .unwrap()
        .position
        .unwrap();
    let fast_done = started.elapsed();
    assert_eq!(fast_log.len(), 1, "the second handler has the event");
    assert!(
        fast_done < ms(400),
        "the second handler is not delayed by the failing one: {fast_done:?}"
    );
    assert!(
        app.dead_letters("flaky")
            .list(0, 10)
            .await
            .unwrap()
            .is_empty(),
        "the failing handler is still retrying"
    );

    wait(&app, "flaky", position).await;
    let failed_for = started.elapsed();
    assert_eq!(probe.calls_for(1), 6, "6 attempts in all");
    assert!(
        failed_for >= ms(600),
        "the retries waited (at least half of 1.24 s): {failed_for:?}"
    );
    let letters = app.dead_letters("flaky").list(0, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let entry = &letters[0];
    assert_eq!(entry.handler, "flaky");
    assert_eq!(entry.event.global_position, position);
    assert_eq!(entry.event.event_type, "Alpha");
    assert_eq!(entry.attempts, 6);
    assert_eq!(entry.error, "cannot handle alpha 1");
    assert!(entry.first_failed_at < entry.last_failed_at);
    assert_eq!(
        app.dead_letters("flaky")
            .get(entry.event.event_id)
            .await
            .unwrap()
            .as_ref(),
        Some(entry)
    );
    let stats = app
        .handler_stats()
        .into_iter()
        .find(|s| s.name == "flaky")
        .unwrap();
    assert_eq!(
        (stats.retries, stats.dead_letters, stats.handled),
        (5, 1, 0)
    );
    assert_eq!(stats.position, position, "the handler moved on");

    // Later events still reach the failing handler.
    let later = emit(&app, "acc", &[Kind::A, Kind::A], 2).await;
    wait(&app, "flaky", later).await;
    assert_eq!(
        probe.log.all().iter().map(|s| s.n).collect::<Vec<_>>(),
        [2, 3]
    );

    // `retry` re-delivers; on success the entry is removed.
    probe.healthy.store(true, Ordering::SeqCst);
    app.dead_letters("flaky")
        .retry(entry.event.event_id)
        .await
        .unwrap();
    assert_eq!(probe.calls_for(1), 7);
    assert_eq!(
        probe.log.all().iter().map(|s| s.n).collect::<Vec<_>>(),
        [2, 3, 1]
    );
    assert!(
        app.dead_letters("flaky")
            .list(0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        app.dead_letters("flaky").retry(entry.event.event_id).await,
        Err(evoq::Error::DeadLetterNotFound { .. })
    ));
}

#[tokio::test]
async fn a_retry_that_fails_again_keeps_the_entry_with_one_more_attempt() {
    let flaky = Flaky::poisoned(&[1]);
    let probe = flaky.clone();
    let app = Evoq::builder()
        .config(config(ms(1)))
        .handler_with(flaky, HandlerOptions::new().max_attempts(2))
        .start()
        .await
        .unwrap();
    let position = emit(&app, "x", &[Kind::A], 1).await;
    wait(&app, "flaky", position).await;
    let queue = app.dead_letters("flaky");
    let before = queue.list(0, 10).await.unwrap().remove(0);
    assert_eq!(before.attempts, 2);
    let error = queue.retry(before.event.event_id).await.unwrap_err();
    assert!(
        matches!(error, evoq::Error::DeadLetterRetryFailed { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("cannot handle alpha 1"),
        "{error}"
    );
    let after = queue.get(before.event.event_id).await.unwrap().unwrap();
    assert_eq!(after.attempts, 3);
    assert_eq!(after.first_failed_at, before.first_failed_at);
    assert!(after.last_failed_at > before.last_failed_at);
    assert_eq!(probe.calls_for(1), 3);
}

#[tokio::test]
async fn max_attempts_2_gives_exactly_2_calls() {
    let flaky = Flaky::poisoned(&[1]);
    let probe = flaky.clone();
    let app = Evoq::builder()
        .config(config(ms(1)))
        .handler_with(flaky, HandlerOptions::new().max_attempts(2))
        .start()
        .await
        .unwrap();
    let position = emit(&app, "x", &[Kind::A], 1).await;
    wait(&app, "flaky", position).await;
    assert_eq!(probe.calls_for(1), 2);
    let letters = app.dead_letters("flaky").list(0, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 2);
}

#[tokio::test]
async fn skip_gives_no_dead_letter_and_the_checkpoint_moves_on() {
    let skipper = Skipper::default();
    let calls = Arc::clone(&skipper.calls);
    let app = Evoq::builder().handler(skipper).start().await.unwrap();
    let position = emit(&app, "x", &[Kind::A, Kind::B], 1).await;
    wait(&app, "skipper", position).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "max_attempts = 2 from the attribute"
    );
    assert!(
        app.dead_letters("skipper")
            .list(0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let stats = &app.handler_stats()[0];
    assert_eq!(
        (stats.skipped, stats.dead_letters, stats.retries),
        (1, 0, 1)
    );
    app.stop().await;
    assert_eq!(
        app.store().load_checkpoint("skipper").await.unwrap(),
        Some(position),
        "the checkpoint moved past the skipped event"
    );
}

#[tokio::test]
async fn builder_options_take_precedence_over_the_attribute() {
    let skipper = Skipper::default();
    let calls = Arc::clone(&skipper.calls);
    let app = Evoq::builder()
        .handler_with(
            skipper,
            HandlerOptions::new()
                .max_attempts(3)
                .on_error(OnError::DeadLetter),
        )
        .start()
        .await
        .unwrap();
    let position = emit(&app, "x", &[Kind::A], 1).await;
    wait(&app, "skipper", position).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        app.dead_letters("skipper").list(0, 10).await.unwrap().len(),
        1
    );
}

/// A handler its policy stops has saved its checkpoint before the event by the time anything
/// says it stopped (a wait, its stats): read right then, the checkpoint is there.
async fn a_stopped_handler_has_saved_its_checkpoint_when_it_says_it_stopped(backend: Backend) {
    let Some(place) = Place::new(backend, "stop_saves").await else {
        return;
    };
    // Stored before the handler runs: it saves no checkpoint until it has caught up (or
    // stops), so the one it stops with is the one saved then.
    let store = place.open().await;
    store
        .append(
            &ledger_stream("x"),
            ExpectedVersion::Any,
            vec![
                raw(Kind::B, "x", 0),
                raw(Kind::A, "x", 1),
                raw(Kind::A, "x", 2),
                raw(Kind::A, "x", 3),
            ],
        )
        .await
        .unwrap();
    let (before, failing) = (3, 4);
    let flaky = Flaky::poisoned(&[3]);
    let app = Evoq::builder()
        .shared_store(store)
        .config(config(ms(1)))
        .handler_with(
            flaky,
            HandlerOptions::new()
                .max_attempts(1)
                .on_error(OnError::Stop),
        )
        .start()
        .await
        .unwrap();
    let error = app
        .wait_for_named("flaky", failing)
        .without_deadline()
        .await
        .unwrap_err();
    assert!(
        matches!(error, evoq::Error::HandlerStopped { .. }),
        "{error}"
    );
    assert_eq!(
        app.store().load_checkpoint("flaky").await.unwrap(),
        Some(before),
        "saved before the wait learned that the handler stopped"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_handler_has_saved_its_checkpoint_when_it_says_it_stopped_on_sqlite() {
    a_stopped_handler_has_saved_its_checkpoint_when_it_says_it_stopped(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_handler_has_saved_its_checkpoint_when_it_says_it_stopped_on_postgres() {
    a_stopped_handler_has_saved_its_checkpoint_when_it_says_it_stopped(Backend::Postgres).await;
}

#[tokio::test]
async fn stop_stops_the_handler_before_the_event_and_waits_on_it_fail_at_once() {
    let flaky = Flaky::poisoned(&[2]);
    let probe = flaky.clone();
    let app = Evoq::builder()
        .config(config(ms(1)))
        .handler_with(
            flaky,
            HandlerOptions::new()
                .max_attempts(2)
                .on_error(OnError::Stop)
                .strong(true),
        )
        .start()
        .await
        .unwrap();
    let first = emit(&app, "x", &[Kind::A], 1).await;
    wait(&app, "flaky", first).await;
    let second = emit(&app, "x", &[Kind::A], 2).await;
    let error = app
        .wait_for_named("flaky", second)
        .without_deadline()
        .await
        .unwrap_err();
    assert!(
        matches!(error, evoq::Error::HandlerStopped { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("cannot handle alpha 2"),
        "{error}"
    );
    assert_eq!(probe.calls_for(2), 2);
    assert!(
        app.dead_letters("flaky")
            .list(0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let stats = &app.handler_stats()[0];
    assert_eq!(stats.position, first, "stopped before the failed event");
    assert!(
        stats
            .stopped
            .as_deref()
            .unwrap()
            .contains("cannot handle alpha 2")
    );

    // A strong dispatch fails at once, saying the events were stored.
    let started = Instant::now();
    let error = app
        .command(Emit::new("x", &[Kind::A], 3))
        .consistency(Consistency::Strong)
        .timeout(Duration::from_secs(5))
        .dispatch()
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(error.is_consistency_timeout(), "{error}");
    assert!(error.to_string().contains("WERE stored"), "{error}");
    assert!(error.to_string().contains("stopped"), "{error}");

    // Its checkpoint stays before the event: a restart delivers it again.
    app.stop().await;
    assert_eq!(
        app.store().load_checkpoint("flaky").await.unwrap(),
        Some(first)
    );
    probe.healthy.store(true, Ordering::SeqCst);
    let app = Evoq::builder()
        .shared_store(Arc::clone(app.store()))
        .handler(probe.clone())
        .start()
        .await
        .unwrap();
    wait(&app, "flaky", second + 1).await;
    assert_eq!(
        probe.log.all().iter().map(|s| s.n).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[tokio::test]
async fn dead_letters_list_by_handler_paged_oldest_first_and_discard_removes_without_delivering() {
    let flaky = Flaky::poisoned(&[1, 3, 4, 6]);
    let probe = flaky.clone();
    let app = Evoq::builder()
        .config(config(ms(1)))
        .handler_with(flaky, HandlerOptions::new().max_attempts(1))
        .handler(Fast::default())
        .start()
        .await
        .unwrap();
    let mut last = 0;
    for n in 1..=6 {
        last = emit(&app, &format!("acc-{}", n % 2), &[Kind::A], n).await;
    }
    wait(&app, "flaky", last).await;
    let queue = app.dead_letters("flaky");
    assert_eq!(queue.handler(), "flaky");
    let numbers = |letters: &[evoq::DeadLetter]| -> Vec<u64> {
        letters.iter().map(|l| l.event.global_position).collect()
    };
    assert_eq!(numbers(&queue.list(0, 10).await.unwrap()), [1, 3, 4, 6]);
    let page = queue.list(0, 2).await.unwrap();
    assert_eq!(numbers(&page), [1, 3]);
    let next = queue.list(page[1].event.global_position, 2).await.unwrap();
    assert_eq!(numbers(&next), [4, 6]);
    assert!(
        app.dead_letters("fast")
            .list(0, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let calls_before = probe.calls.lock().unwrap().len();
    assert!(queue.discard(page[0].event.event_id).await.unwrap());
    assert!(!queue.discard(page[0].event.event_id).await.unwrap());
    assert_eq!(
        probe.calls.lock().unwrap().len(),
        calls_before,
        "discard delivers nothing"
    );
    assert_eq!(numbers(&queue.list(0, 10).await.unwrap()), [3, 4, 6]);
    assert!(matches!(
        app.dead_letters("nobody")
            .retry(page[0].event.event_id)
            .await,
        Err(evoq::Error::UnknownHandler { .. })
    ));
}

#[tokio::test]
async fn a_dead_letter_left_by_an_earlier_run_accumulates_attempts() {
    // The event fails, is dead-lettered, and the runtime stops before saving a checkpoint past
    // it (simulated by rewinding the checkpoint): the next run fails again on it.
    let flaky = Flaky::poisoned(&[1]);
    let app = Evoq::builder()
        .config(config(ms(1)))
        .handler_with(flaky, HandlerOptions::new().max_attempts(2))
        .start()
        .await
        .unwrap();
    let position = emit(&app, "x", &[Kind::A], 1).await;
    wait(&app, "flaky", position).await;
    app.stop().await;
    let store = Arc::clone(app.store());
    let first = store
        .list_dead_letters("flaky", 0, 10)
        .await
        .unwrap()
        .remove(0);
    store.save_checkpoint("flaky", 0).await.unwrap();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .config(config(ms(1)))
        .handler_with(Flaky::poisoned(&[1]), HandlerOptions::new().max_attempts(2))
        .start()
        .await
        .unwrap();
    wait(&app, "flaky", position).await;
    let letters = app.dead_letters("flaky").list(0, 10).await.unwrap();
    assert_eq!(letters.len(), 1, "one entry per (handler, event)");
    assert_eq!(letters[0].attempts, 4);
    assert_eq!(letters[0].first_failed_at, first.first_failed_at);
    assert!(letters[0].last_failed_at > first.last_failed_at);
}

/// Fails `Alpha` 1 while `healthy` is false; holds any other `Alpha` until its gate lets it.
/// Says which `Alpha` it is in.
#[derive(Clone)]
struct Held {
    healthy: Arc<AtomicBool>,
    gate: Arc<tokio::sync::Semaphore>,
    entered: Arc<std::sync::atomic::AtomicU64>,
    log: Log,
}

#[event_handler(name = "held")]
impl Held {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        self.entered.store(e.n, Ordering::SeqCst);
        if e.n == 1 && !self.healthy.load(Ordering::SeqCst) {
            return Err(Failed("not yet".into()));
        }
        if e.n != 1 {
            self.gate.acquire().await.expect("the gate stays").forget();
        }
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

/// A dead-letter retry asked while the handler is busy with an event, and given up by its
/// caller before the delivery began, is never delivered; the entry stays as it was.
async fn a_retry_given_up_before_it_began_is_never_delivered(backend: Backend) {
    let Some(place) = Place::new(backend, "retry_given_up").await else {
        return;
    };
    let held = Held {
        healthy: Arc::default(),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        entered: Arc::default(),
        log: Log::default(),
    };
    let app = Evoq::builder()
        .shared_store(place.open().await)
        .handler_with(
            held.clone(),
            HandlerOptions::new()
                .max_attempts(1)
                .retry(RetryStrategy::immediate()),
        )
        .start()
        .await
        .unwrap();
    let first = emit(&app, "h", &[Kind::A], 1).await;
    wait(&app, "held", first).await;
    let letter = app
        .dead_letters("held")
        .list(0, 10)
        .await
        .unwrap()
        .remove(0);
    emit(&app, "h", &[Kind::A], 2).await;
    let started = Instant::now();
    while held.entered.load(Ordering::SeqCst) != 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "never in 2");
        tokio::time::sleep(ms(5)).await;
    }

    let event_id = letter.event.event_id;
    let gave_up = tokio::time::timeout(ms(200), app.dead_letters("held").retry(event_id)).await;
    assert!(
        gave_up.is_err(),
        "{backend:?}: the handler is busy: {gave_up:?}"
    );
    held.healthy.store(true, Ordering::SeqCst);
    held.gate.add_permits(1_000);
    let third = emit(&app, "h", &[Kind::A], 3).await;
    wait(&app, "held", third).await;
    assert_eq!(
        held.log.positions(),
        [2, 3],
        "{backend:?}: event 1 not delivered"
    );
    let kept = app.dead_letters("held").get(event_id).await.unwrap();
    assert_eq!(
        kept.map(|entry| entry.attempts),
        Some(1),
        "{backend:?}: the entry stays as it was"
    );

    // A retry its caller waits for is delivered.
    app.dead_letters("held").retry(event_id).await.unwrap();
    assert_eq!(held.log.positions(), [2, 3, 1], "{backend:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_given_up_by_its_caller_before_it_began_is_never_delivered_in_memory() {
    a_retry_given_up_before_it_began_is_never_delivered(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_given_up_by_its_caller_before_it_began_is_never_delivered_on_sqlite() {
    a_retry_given_up_before_it_began_is_never_delivered(Backend::Sqlite).await;
}
