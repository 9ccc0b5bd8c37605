//! Event delivery to handlers over the in-memory store:
//!
//! 1. live delivery to 1 handler and to 10 handlers while 1,000,000 events are appended
//!    (appends of 10 events to 1,000 streams), from the first append until every handler has
//!    processed the last event;
//! 2. catch-up of 1 and of 10 new handlers over the 1,000,000 stored events, from `start()`
//!    until every one has processed the last event.
//!
//! Every run checks that each handler got every event exactly once and decoded it.
//!
//! `cargo run --release -p evoq-bench --bin delivery [events]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use evoq::prelude::*;
use evoq::store::memory::InMemoryStore;
use evoq::{ExpectedVersion, HandlerOptions, NewEvent};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Tick {
    n: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

/// Counts the ticks and sums their numbers (checked at the end).
#[derive(Default)]
struct Counter {
    count: Arc<AtomicU64>,
    sum: Arc<AtomicU64>,
}

#[event_handler(name = "counter")]
impl Counter {
    #[handles]
    async fn tick(&mut self, e: &Tick, _: &EventMeta) -> Result<(), Never> {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(e.n, Ordering::Relaxed);
        Ok(())
    }
}

const STREAMS: u64 = 1_000;
const PER_APPEND: u64 = 10;

fn tick(n: u64) -> NewEvent {
    NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: "Tick".into(),
        schema_version: 1,
        data: serde_json::to_vec(&Tick { n }).expect("json"),
        metadata: Default::default(),
    }
}

/// Appends `events` ticks, numbered from 0, in appends of `PER_APPEND` to `STREAMS` streams.
async fn append_all(store: &Arc<dyn EventStore>, events: u64) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    while n < events {
        let count = PER_APPEND.min(events - n);
        let batch = (n..n + count).map(tick).collect();
        let stream = format!("Ticker-{}", (n / PER_APPEND) % STREAMS);
        store
            .append(&stream, ExpectedVersion::Any, batch)
            .await
            .expect("append");
        n += count;
    }
    started.elapsed()
}

/// One measurement.
struct Run {
    /// From the first append (live) or from `start()` (catch-up) until every handler has
    /// processed the last event.
    secs: f64,
    /// How long the appends took (live: concurrently with the delivery).
    append_secs: f64,
}

/// A runtime on `store` with `handlers` counters named `counter-<i>`.
async fn runtime_with(store: &Arc<dyn EventStore>, handlers: usize) -> (Evoq, Vec<Counted>) {
    let mut builder = Evoq::builder().shared_store(Arc::clone(store));
    let mut counters = Vec::new();
    for index in 0..handlers {
        let counter = Counter::default();
        counters.push((Arc::clone(&counter.count), Arc::clone(&counter.sum)));
        builder = builder.handler_with(
            counter,
            HandlerOptions::new().name(format!("counter-{index}")),
        );
    }
    (builder.start().await.expect("start"), counters)
}

async fn wait_all(app: &Evoq, handlers: usize, position: u64) {
    for index in 0..handlers {
        app.wait_for_named(&format!("counter-{index}"), position)
            .without_deadline()
            .await
            .expect("wait");
    }
}

/// Handlers running while the events are appended.
async fn live(events: u64, handlers: usize) -> Run {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let (app, counters) = runtime_with(&store, handlers).await;
    let started = Instant::now();
    let append = append_all(&store, events).await;
    wait_all(&app, handlers, events).await;
    let secs = started.elapsed().as_secs_f64();
    check(&counters, events);
    app.stop().await;
    Run {
        secs,
        append_secs: append.as_secs_f64(),
    }
}

/// New handlers over events already stored.
async fn catch_up(events: u64, handlers: usize) -> Run {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let append = append_all(&store, events).await;
    let started = Instant::now();
    let (app, counters) = runtime_with(&store, handlers).await;
    wait_all(&app, handlers, events).await;
    let secs = started.elapsed().as_secs_f64();
    check(&counters, events);
    app.stop().await;
    Run {
        secs,
        append_secs: append.as_secs_f64(),
    }
}

type Counted = (Arc<AtomicU64>, Arc<AtomicU64>);

fn check(counters: &[Counted], events: u64) {
    let sum = events * (events.saturating_sub(1)) / 2;
    for (count, total) in counters {
        assert_eq!(
            count.load(Ordering::Relaxed),
            events,
            "every event delivered once"
        );
        assert_eq!(total.load(Ordering::Relaxed), sum, "every event decoded");
    }
}

fn main() {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "event delivery, in-memory store, {events} events (appends of {PER_APPEND} to {STREAMS} streams), {cores} cores"
    );
    runtime.block_on(async {
        for handlers in [1, 10] {
            let run = live(events, handlers).await;
            println!(
                "live,     {handlers:>2} handler(s): {:.3} s, {:>9.0} events/s per handler, {:>9.0} deliveries/s in all (the appends alone: {:.3} s; the handlers were done {:.0} ms after the last append)",
                run.secs,
                events as f64 / run.secs,
                (events * handlers as u64) as f64 / run.secs,
                run.append_secs,
                (run.secs - run.append_secs).max(0.0) * 1_000.0,
            );
        }
        for handlers in [1, 10] {
            let run = catch_up(events, handlers).await;
            println!(
                "catch-up, {handlers:>2} new handler(s) over {events} stored events: {:.3} s, {:>9.0} events/s per handler, {:>9.0} deliveries/s in all (storing them took {:.3} s)",
                run.secs,
                events as f64 / run.secs,
                (events * handlers as u64) as f64 / run.secs,
                run.append_secs,
            );
        }
    });
}
