//! Strong consistency and consistency tokens: a dispatch that waits for handlers, and
//! `Evoq::wait_for` (docs/semantics.md §5).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use evoq::prelude::*;
use evoq::store::Direction;
use evoq_tests::ledger::*;

/// A strong handler that takes `Alpha` only, slowly.
#[derive(Default)]
struct SlowAlpha {
    log: Log,
}

#[event_handler(name = "slow_alpha", strong)]
impl SlowAlpha {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.log.push(Seen::of(meta, e.n));
        Ok(())
    }
}

/// Never finishes an `Alpha` while `stuck` is set.
#[derive(Default)]
struct Stuck {
    stuck: Arc<AtomicBool>,
}

#[event_handler(name = "stuck")]
impl Stuck {
    #[handles]
    async fn alpha(&mut self, _: &Alpha, _: &EventMeta) -> Result<(), Failed> {
        while self.stuck.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

/// Takes `Gamma` only, and never finishes one.
#[derive(Default)]
struct GammaForever;

#[event_handler(name = "gamma_forever", strong)]
impl GammaForever {
    #[handles]
    async fn gamma(&mut self, _: &Gamma, _: &EventMeta) -> Result<(), Failed> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

fn stuck() -> (Stuck, Arc<AtomicBool>) {
    let stuck = Stuck::default();
    stuck.stuck.store(true, Ordering::SeqCst);
    let flag = Arc::clone(&stuck.stuck);
    (stuck, flag)
}

#[tokio::test]
async fn strong_with_a_3_event_command_whose_handler_takes_only_the_first_type_returns_ok() {
    let slow = SlowAlpha::default();
    let log = slow.log.clone();
    let app = Evoq::builder().handler(slow).start().await.unwrap();
    let started = Instant::now();
    let done = app
        .command(Emit::new("s", &[Kind::A, Kind::B, Kind::C], 1))
        .consistency(Consistency::Strong)
        .timeout(Duration::from_secs(2))
        .dispatch()
        .await
        .expect("no timeout: the handler's position moves past the events it does not take");
    assert_eq!(done.events.len(), 3);
    assert_eq!(done.position, Some(3));
    assert_eq!(
        log.positions(),
        [1],
        "the handler had handled its event when the dispatch returned"
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn handlers_that_take_none_of_the_appended_types_are_satisfied_at_once() {
    let (stuck, _flag) = stuck();
    let app = Evoq::builder()
        .handler(stuck)
        .handler(GammaForever)
        .start()
        .await
        .unwrap();
    // Both are blocked for good on an earlier event.
    app.dispatch(Emit::new("s", &[Kind::A, Kind::C], 1))
        .await
        .unwrap();
    let started = Instant::now();
    app.command(Emit::new("s", &[Kind::B], 3))
        .consistency(Consistency::handlers(["stuck", "gamma_forever"]))
        .timeout(Duration::from_secs(5))
        .dispatch()
        .await
        .expect("no required handler takes `Beta`");
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_never_finishing_handler_gives_the_timeout_error_after_about_the_deadline_and_the_events_are_stored()
 {
    let app = Evoq::builder().handler(GammaForever).start().await.unwrap();
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let error = app
        .command(Emit::new("t", &[Kind::A, Kind::B, Kind::C], 1))
        .consistency(Consistency::Strong)
        .timeout(deadline)
        .dispatch()
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(error.is_consistency_timeout(), "{error}");
    assert!(!error.is_rejection());
    let message = error.to_string();
    assert!(message.contains("WERE stored"), "{message}");
    assert!(
        message.contains("`gamma_forever` (at position 2)"),
        "{message}"
    );
    assert!(
        waited >= deadline && waited < deadline * 3,
        "the error comes after about the deadline: {waited:?}"
    );
    match error {
        evoq::Error::ConsistencyTimeout {
            command, position, ..
        } => {
            assert_eq!(command, "Emit");
            assert_eq!(position, 3);
        }
        other => panic!("{other}"),
    }
    let stored = app
        .store()
        .read_stream(&ledger_stream("t"), 1, Direction::Forward, 10)
        .await
        .unwrap();
    let types: Vec<&str> = stored.iter().map(|e| &*e.event_type).collect();
    assert_eq!(types, ["Alpha", "Beta", "Gamma"], "the events were stored");
}

#[tokio::test]
async fn one_deadline_covers_the_whole_wait() {
    let (first, _a) = stuck();
    let (second, _b) = stuck();
    let app = Evoq::builder()
        .handler_with(first, evoq::HandlerOptions::new().name("first"))
        .handler_with(second, evoq::HandlerOptions::new().name("second"))
        .start()
        .await
        .unwrap();
    let deadline = Duration::from_millis(200);
    let started = Instant::now();
    let error = app
        .command(Emit::new("d", &[Kind::A], 1))
        .consistency(Consistency::handlers(["first", "second"]))
        .timeout(deadline)
        .dispatch()
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited < deadline * 2,
        "two stuck handlers share one deadline: {waited:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("`first` (at position 0), `second` (at position 0)"),
        "{message}"
    );
}

#[tokio::test]
async fn strong_waits_only_for_the_handlers_marked_strong() {
    let (stuck, _flag) = stuck();
    let slow = SlowAlpha::default();
    let log = slow.log.clone();
    let app = Evoq::builder()
        .handler(stuck)
        .handler(slow)
        .start()
        .await
        .unwrap();
    app.command(Emit::new("w", &[Kind::A], 1))
        .consistency(Consistency::Strong)
        .timeout(Duration::from_secs(2))
        .dispatch()
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    let strong: Vec<(String, bool)> = app
        .handler_stats()
        .into_iter()
        .map(|s| (s.name, s.strong))
        .collect();
    assert_eq!(
        strong,
        [("stuck".to_owned(), false), ("slow_alpha".to_owned(), true)]
    );
}

#[tokio::test]
async fn an_unknown_handler_in_the_consistency_fails_before_the_command_runs() {
    let app = Evoq::builder()
        .handler(SlowAlpha::default())
        .start()
        .await
        .unwrap();
    let error = app
        .command(Emit::new("u", &[Kind::A], 1))
        .consistency(Consistency::handlers(["slow_alpha", "typo"]))
        .dispatch()
        .await
        .unwrap_err();
    assert!(matches!(error, evoq::Error::UnknownHandler { ref handler, .. } if handler == "typo"));
    assert_eq!(*app.store().head().borrow(), 0, "nothing was appended");
}

#[tokio::test]
async fn eventual_consistency_does_not_wait() {
    let (stuck, flag) = stuck();
    let app = Evoq::builder().handler(stuck).start().await.unwrap();
    let started = Instant::now();
    let done = app.dispatch(Emit::new("e", &[Kind::A], 1)).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    // The caller can wait on the consistency token later.
    let position = done.position.unwrap();
    assert!(
        tokio::time::timeout(
            Duration::from_millis(50),
            app.wait_for_named("stuck", position).without_deadline()
        )
        .await
        .is_err(),
        "still stuck"
    );
    flag.store(false, Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(5),
        app.wait_for_named("stuck", position).without_deadline(),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn a_command_without_events_does_not_wait() {
    let app = Evoq::builder().handler(GammaForever).start().await.unwrap();
    app.dispatch(Emit::new("n", &[Kind::C], 1)).await.unwrap();
    let done = app
        .command(Emit::new("n", &[], 2))
        .consistency(Consistency::Strong)
        .timeout(Duration::from_millis(100))
        .dispatch()
        .await
        .unwrap();
    assert_eq!(done.position, None);
}

#[tokio::test]
async fn wait_for_fails_when_the_runtime_stops() {
    let (stuck, _flag) = stuck();
    let app = Evoq::builder().handler(stuck).start().await.unwrap();
    let position = app
        .dispatch(Emit::new("z", &[Kind::A], 1))
        .await
        .unwrap()
        .position
        .unwrap();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move {
            app.wait_for_named("stuck", position)
                .without_deadline()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.stop().await;
    let error = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, evoq::Error::HandlerStopped { .. }),
        "{error}"
    );
}

/// Blocks on the `Alpha` numbered 2 until released.
#[derive(Default)]
struct BlockOnSecond {
    release: Arc<AtomicBool>,
}

#[event_handler(name = "block_on_second")]
impl BlockOnSecond {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, _: &EventMeta) -> Result<(), Failed> {
        while e.n == 2 && !self.release.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_waiter_is_woken_once_its_event_is_handled_even_while_the_handler_is_busy_with_the_next()
{
    let store: Arc<dyn EventStore> = Arc::new(evoq::store::memory::InMemoryStore::new());
    // Both events come to the handler in one batch.
    store
        .append(
            &ledger_stream("b"),
            evoq::ExpectedVersion::Any,
            vec![raw(Kind::A, "b", 1), raw(Kind::A, "b", 2)],
        )
        .await
        .unwrap();
    let handler = BlockOnSecond::default();
    let release = Arc::clone(&handler.release);
    let app = Evoq::builder()
        .shared_store(Arc::clone(&store))
        .handler(handler)
        .start()
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        app.wait_for_named("block_on_second", 1).without_deadline(),
    )
    .await
    .expect("woken while the handler waits on the second event")
    .unwrap();
    assert!(
        tokio::time::timeout(
            Duration::from_millis(50),
            app.wait_for_named("block_on_second", 2).without_deadline()
        )
        .await
        .is_err()
    );
    release.store(true, Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(5),
        app.wait_for_named("block_on_second", 2).without_deadline(),
    )
    .await
    .unwrap()
    .unwrap();
}

/// Fails every `Alpha`.
#[derive(Default)]
struct AlwaysFailing;

#[event_handler(name = "always_failing", strong)]
impl AlwaysFailing {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, _: &EventMeta) -> Result<(), Failed> {
        Err(Failed(format!("refused {}", e.n)))
    }
}

#[tokio::test]
async fn a_consistency_timeout_names_a_retrying_handler_in_the_words_of_its_status() {
    let app = Evoq::builder()
        .handler_with(
            AlwaysFailing,
            evoq::HandlerOptions::new()
                .retry(evoq::RetryStrategy::fixed(Duration::from_secs(30)))
                .max_attempts(3),
        )
        .start()
        .await
        .unwrap();
    let error = app
        .command(Emit::new("r", &[Kind::A], 4))
        .consistency(Consistency::Strong)
        .timeout(Duration::from_millis(300))
        .dispatch()
        .await
        .unwrap_err();
    assert!(error.is_consistency_timeout(), "{error}");
    let evoq::HandlerStatus::Retrying { reason } = app.handler_stats()[0].status.clone() else {
        panic!("{:?}", app.handler_stats()[0].status);
    };
    assert!(reason.contains("(refused 4)"), "{reason}");
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "`always_failing` (at position 0, retrying {reason})"
        )),
        "{message}"
    );
    app.stop().await;
}
