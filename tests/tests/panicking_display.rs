//! User types whose `Display` panics (a handler's error, a command's rejection) never panic the
//! runtime: the handler's failure is retried and dead-lettered like any other, the dispatch
//! returns its rejection, with a middleware in the way too (docs/semantics.md §5.5, §10).

use std::time::Duration;

use evoq::prelude::*;
use evoq::{HandlerOptions, Middleware, Pipeline, RetryStrategy};
use evoq_tests::bank::*;

#[derive(Debug)]
struct Weird;

impl std::fmt::Display for Weird {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("weird display")
    }
}

impl std::error::Error for Weird {}

struct Fussy;

#[event_handler(name = "fussy")]
impl Fussy {
    #[handles]
    async fn deposited(&mut self, _: &MoneyDeposited, _: &EventMeta) -> Result<(), Weird> {
        Err(Weird)
    }
}

#[tokio::test]
async fn a_handler_error_whose_display_panics_is_retried_then_dead_lettered_saying_so() {
    let app = Evoq::builder()
        .handler_with(
            Fussy,
            HandlerOptions::new()
                .max_attempts(2)
                .retry(RetryStrategy::immediate()),
        )
        .start()
        .await
        .unwrap();
    app.dispatch(open("a")).await.unwrap();
    let done = app.dispatch(deposit("a", 1)).await.unwrap();
    app.wait_for::<Fussy>(done.token)
        .timeout(Duration::from_secs(10))
        .await
        .expect("the handler gets past the event");
    let letters = app.dead_letters("fussy").list(0, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 2);
    assert!(
        letters[0]
            .error
            .contains("`Display` panicked: weird display"),
        "{}",
        letters[0].error
    );
    let stats = &app.handler_stats()[0];
    assert_eq!(stats.faults, 0, "no fault of the task's own");
    app.stop().await;
}

#[derive(Command, Debug)]
struct Odd {
    #[aggregate_id]
    id: String,
}

#[derive(Event, serde::Serialize, serde::Deserialize, Clone, Debug)]
struct OddHappened;

#[derive(Default)]
struct OddOne;

#[aggregate]
impl OddOne {
    #[handles]
    fn odd(&self, _: &Odd) -> Result<OddHappened, Weird> {
        Err(Weird)
    }

    #[apply]
    fn happened(&mut self, _: &OddHappened) {}
}

struct Watching;

#[evoq::async_trait]
impl Middleware for Watching {
    async fn after_failure(&self, pipeline: &mut Pipeline<'_>) {
        let _ = pipeline.command_name();
    }
}

#[tokio::test]
async fn a_rejection_whose_display_panics_is_returned_through_a_middleware() {
    let app = Evoq::builder().start().await.unwrap();
    let plain = app.dispatch(Odd { id: "1".into() }).await;
    assert!(plain.as_ref().is_err_and(Error::is_rejection));
    let wrapped = tokio::spawn({
        let app = app.clone();
        async move {
            app.command(Odd { id: "1".into() })
                .middleware(Watching)
                .dispatch()
                .await
                .map(|_| ())
                .map_err(|error| error.is_rejection())
        }
    })
    .await;
    assert!(
        matches!(wrapped, Ok(Err(true))),
        "the dispatch panicked or lost its rejection: {wrapped:?}"
    );
    app.stop().await;
}
