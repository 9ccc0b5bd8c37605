//! Metrics through the `metrics` facade: after a workload, a Prometheus exporter's scrape
//! endpoint shows counters that match the work (dispatches by command and outcome, handler
//! events by outcome, position, lag and status, live aggregates, the store's batches).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::sqlite::SqliteStore;
use evoq::{Consistency, ErrorKind, HandlerOptions};
use evoq_tests::bank::*;
use evoq_tests::faulty_store::FaultyStore;
use evoq_tests::ledger::Failed;
use evoq_tests::temp::TempDir;
use metrics_exporter_prometheus::PrometheusBuilder;

/// Takes deposits; fails on every withdrawal (one attempt: dead-lettered at once).
#[derive(Default)]
struct Ledger;

#[event_handler(name = "ledger", max_attempts = 1)]
impl Ledger {
    #[handles]
    async fn deposited(&mut self, _: &MoneyDeposited, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }

    #[handles]
    async fn withdrawn(&mut self, _: &MoneyWithdrawn, _: &EventMeta) -> Result<(), Failed> {
        Err(Failed("no withdrawals today".into()))
    }
}

/// GET / on the exporter: the text exposition, one sample per line.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the exporter listens");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no sample `{name}` in {samples:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_workload_shows_counters_that_match_the_work() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    PrometheusBuilder::new()
        .with_http_listener(([127, 0, 0, 1], port))
        .install()
        .expect("the exporter installs");

    let dir = TempDir::new("metrics");
    let store = SqliteStore::open(dir.file("events.db")).await.unwrap();
    let app = Evoq::builder()
        .store(store)
        .handler(Ledger)
        .start()
        .await
        .unwrap();
    app.dispatch(open("m1")).await.unwrap();
    for _ in 0..9 {
        app.dispatch(deposit("m1", 10)).await.unwrap();
    }
    let rejected = app.dispatch(deposit("nobody", 1)).await;
    assert!(rejected.is_err());
    let last = app
        .dispatch(Withdraw {
            account: "m1".into(),
            amount: 5,
        })
        .await
        .unwrap();
    app.wait_for::<Ledger>(last.token).await.unwrap();
    // Dispatches that wait for handlers are counted as the others are, failures too.
    app.command(Audit {
        account: "m1".into(),
    })
    .consistency(Consistency::Strong)
    .dispatch()
    .await
    .unwrap();
    app.command(Audit {
        account: "m1".into(),
    })
    .consistency(Consistency::Handlers(vec!["ledger".into()]))
    .dispatch()
    .await
    .unwrap();
    let unknown = app
        .command(Audit {
            account: "m1".into(),
        })
        .consistency(Consistency::Handlers(vec!["nobody".into()]))
        .dispatch()
        .await;
    assert_eq!(unknown.unwrap_err().kind(), ErrorKind::NotFound);
    // One sweep of the hibernation sweeper (every second) sets the aggregate gauges.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let samples = tokio::task::spawn_blocking(move || scrape(port))
        .await
        .unwrap();
    assert_eq!(
        sample(
            &samples,
            r#"evoq_dispatch_seconds_count{command="Deposit",outcome="ok"}"#
        ),
        9.0
    );
    assert_eq!(
        sample(
            &samples,
            r#"evoq_dispatch_seconds_count{command="Deposit",outcome="rejected"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            r#"evoq_dispatch_seconds_count{command="OpenAccount",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            r#"evoq_dispatch_seconds_count{command="Audit",outcome="ok"}"#
        ),
        2.0,
        "the strong dispatch and the one waiting for a named handler"
    );
    assert_eq!(
        sample(
            &samples,
            r#"evoq_dispatch_seconds_count{command="Audit",outcome="not_found"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            r#"evoq_handler_events_total{handler="ledger",outcome="handled"}"#
        ),
        9.0,
        "nine deposits handled"
    );
    assert_eq!(
        sample(
            &samples,
            r#"evoq_handler_events_total{handler="ledger",outcome="dead_letter"}"#
        ),
        1.0,
        "the withdrawal dead-lettered"
    );
    assert_eq!(
        sample(&samples, r#"evoq_handler_position{handler="ledger"}"#),
        last.token as f64
    );
    assert_eq!(
        sample(&samples, r#"evoq_handler_lag{handler="ledger"}"#),
        0.0
    );
    assert_eq!(
        sample(&samples, r#"evoq_aggregates_live{aggregate="BankAccount"}"#),
        // `m1` is live; `nobody` was rejected and stays live too (its empty state).
        app.aggregate_stats::<BankAccount>().live as f64
    );
    assert!(
        sample(&samples, r#"evoq_store_batch_size_count{backend="sqlite"}"#) >= 1.0,
        "the store's batches are measured"
    );
    assert!(
        sample(
            &samples,
            r#"evoq_dispatch_seconds_count{command="Deposit",outcome="ok"}"#
        ) == 9.0
    );
    assert_eq!(status_of(&samples, "ledger"), "running");
    app.stop().await;
    let samples = tokio::task::spawn_blocking(move || scrape(port))
        .await
        .unwrap();
    assert_eq!(
        status_of(&samples, "ledger"),
        "stopped",
        "the runtime stopped"
    );

    // A handler whose store fails its reads is retrying until they work again.
    let store = FaultyStore::new();
    store.fail_read_all.store(true, Ordering::SeqCst);
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler_with(Ledger, HandlerOptions::new().name("stalled"))
        .start()
        .await
        .unwrap();
    app.dispatch(open("s1")).await.unwrap();
    app.dispatch(deposit("s1", 1)).await.unwrap();
    let status = |want: &'static str| async move {
        for _ in 0..500 {
            let samples = tokio::task::spawn_blocking(move || scrape(port))
                .await
                .unwrap();
            if samples.contains_key(r#"evoq_handler_status{handler="stalled",status="running"}"#)
                && status_of(&samples, "stalled") == want
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the handler's status gauge never showed `{want}`");
    };
    status("retrying").await;
    store.fail_read_all.store(false, Ordering::SeqCst);
    status("running").await;
    app.stop().await;
    status("stopped").await;
}

/// The one status of `evoq_handler_status{handler}` at 1, the other two at 0.
fn status_of(samples: &BTreeMap<String, f64>, handler: &str) -> &'static str {
    let on: Vec<&'static str> = ["running", "retrying", "stopped"]
        .into_iter()
        .filter(|status| {
            sample(
                samples,
                &format!(r#"evoq_handler_status{{handler="{handler}",status="{status}"}}"#),
            ) == 1.0
        })
        .collect();
    assert_eq!(on.len(), 1, "exactly one status at 1: {on:?}");
    on[0]
}
