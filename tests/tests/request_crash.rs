//! A request kept in the store for a handler's task survives a `kill -9` of the process that
//! was carrying it out: it is deleted only once carried out, so the next runtime on the store
//! carries it out (nothing asked for is lost; a request cut off halfway runs again, at least
//! once). On SQLite and on PostgreSQL, with the child process killed while the handler works on
//! the retried event.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::{EventStore, HandlerRequest, RequestedAction};
use evoq::{HandlerOptions, RetryStrategy};
use evoq_tests::backends::{Backend, Place, open_at};
use evoq_tests::crash::{run_and_kill, runtime};
use evoq_tests::ledger::*;

/// Where the child finds its store: `sqlite:<path>` or `postgres:<schema>@<url>`.
const CHILD_STORE: &str = "EVOQ_REQUEST_CRASH_STORE";

/// Fails every `Alpha` until it is `healthy`; then prints `handling N`, works for `pause`, and
/// prints `handled N`.
#[derive(Clone)]
struct Slow {
    healthy: bool,
    pause: Duration,
    log: Log,
}

#[event_handler(name = "slow")]
impl Slow {
    #[handles]
    async fn alpha(&mut self, e: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        if !self.healthy {
            return Err(Failed(format!("not yet: {}", e.n)));
        }
        say(&format!("handling {}", e.n));
        tokio::time::sleep(self.pause).await;
        self.log.push(Seen::of(meta, e.n));
        say(&format!("handled {}", e.n));
        Ok(())
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn start(store: Arc<dyn EventStore>, slow: Slow) -> Evoq {
    Evoq::builder()
        .shared_store(store)
        .handler_with(
            slow,
            HandlerOptions::new()
                .max_attempts(1)
                .retry(RetryStrategy::immediate()),
        )
        .start()
        .await
        .expect("start")
}

/// The child: carries out the stored request, slowly, until it is killed.
#[test]
#[ignore = "run by the request crash tests in a child process"]
fn request_crash_child_carries_out_requests() {
    let Ok(spec) = std::env::var(CHILD_STORE) else {
        return;
    };
    runtime().block_on(async move {
        let slow = Slow {
            healthy: true,
            pause: Duration::from_secs(60),
            log: Log::default(),
        };
        let _app = start(open_at(&spec).await, slow).await;
        say("started");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

fn a_retry_request_survives_a_kill_of_the_process_carrying_it_out(place: &Place) {
    let spec = place.address().expect("a place another process can reach");
    // One event, dead-lettered; then a retry of it asked for through the store, as the
    // inspector does, while no application runs.
    let (event_id, position, request) = runtime().block_on(async {
        let store = place.open().await;
        let failing = Slow {
            healthy: false,
            pause: Duration::ZERO,
            log: Log::default(),
        };
        let app = start(Arc::clone(&store), failing).await;
        let done = app.dispatch(Emit::new("r", &[Kind::A], 1)).await.unwrap();
        app.wait_for::<Slow>(done.token).await.unwrap();
        let letter = app
            .dead_letters("slow")
            .list(0, 10)
            .await
            .unwrap()
            .remove(0);
        app.stop().await;
        let request = HandlerRequest::new(
            "slow",
            RequestedAction::RetryDeadLetter {
                event_id: letter.event.event_id,
            },
        );
        store.save_request(request.clone()).await.unwrap();
        (letter.event.event_id, done.token, request)
    });

    // The child takes the request up and is killed while the handler works on the event.
    let lines = run_and_kill(
        "request_crash_child_carries_out_requests",
        &[(CHILD_STORE, &spec)],
        // Time to start, find the request (looked for a few times a second) and begin.
        Duration::from_secs(5),
    );
    assert!(
        lines.iter().any(|line| line == "handling 1"),
        "the child was carrying the request out when it was killed: {lines:?}"
    );
    assert!(!lines.iter().any(|line| line == "handled 1"), "{lines:?}");

    runtime().block_on(async {
        let store = place.open().await;
        assert_eq!(
            store.load_request("slow", request.id).await.unwrap(),
            Some(request.clone()),
            "the request cut off by the kill is still in the store"
        );
        let log = Log::default();
        let healthy = Slow {
            healthy: true,
            pause: Duration::ZERO,
            log: log.clone(),
        };
        let app = start(Arc::clone(&store), healthy).await;
        let gone = tokio::time::timeout(Duration::from_secs(20), async {
            while store
                .load_request("slow", request.id)
                .await
                .unwrap()
                .is_some()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "the next runtime carries the request out");
        assert_eq!(log.positions(), [position], "the event is delivered");
        assert_eq!(
            app.dead_letters("slow").get(event_id).await.unwrap(),
            None,
            "and leaves the dead letters"
        );
        app.stop().await;
    });
}

#[test]
fn a_retry_request_survives_a_kill_of_the_process_carrying_it_out_on_sqlite() {
    Place::run(
        Backend::Sqlite,
        "request_crash",
        a_retry_request_survives_a_kill_of_the_process_carrying_it_out,
    );
}

#[test]
fn a_retry_request_survives_a_kill_of_the_process_carrying_it_out_on_postgres() {
    Place::run(
        Backend::Postgres,
        "request_crash",
        a_retry_request_survives_a_kill_of_the_process_carrying_it_out,
    );
}
