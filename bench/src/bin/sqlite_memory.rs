//! What the SQLite store keeps in memory per stream written: appends `--events` one-event
//! appends (default 1,000,000) to `--streams` streams (default as many as events: one event per
//! stream), round-robin, `--in-flight` at a time (default 256, so the writer group-commits), on
//! a fresh file at `synchronous=NORMAL`, and prints one JSON line with the resident memory grown
//! since the store opened.
//!
//! The growth holds SQLite's page cache and the allocator's slack besides the writer's stream
//! versions; run the same number of events on a few streams to get the rest:
//!
//! ```sh
//! cargo build --release -p evoq-bench --bin sqlite_memory
//! ./target/release/sqlite_memory --events 1000000 --streams 1000000   # one event per stream
//! ./target/release/sqlite_memory --events 1000000 --streams 64        # the same appends, 64 streams
//! ```
//!
//! Bytes per stream = (growth with 1,000,000 streams - growth with 64) / 1,000,000.

use std::borrow::Cow;
use std::sync::Arc;

use evoq::store::sqlite::{Durability, SqliteOptions, SqliteStore};
use evoq::{EventStore, ExpectedVersion, Metadata, NewEvent, Uuid};
use evoq_bench::measure::{rss_bytes, status_kib};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn fail(what: &str, error: impl std::fmt::Display) -> ! {
    eprintln!("{what}: {error}");
    std::process::exit(1)
}

fn main() {
    let events = arg("--events", 1_000_000);
    let streams = arg("--streams", events).max(1);
    let in_flight = arg("--in-flight", 256).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| fail("cannot start tokio", error));
    let dir = std::env::temp_dir().join(format!("evoq-bench-sqlite-memory-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| fail("cannot create a directory", error));
    let path = dir.join("events.db");
    let (before, after, seconds) = runtime.block_on(async {
        let store = SqliteStore::open_with(
            &path,
            SqliteOptions::default().durability(Durability::Normal),
        )
        .await
        .unwrap_or_else(|error| fail("cannot open the store", error));
        let store = Arc::new(store);
        let before = rss_bytes();
        let started = std::time::Instant::now();
        let mut tasks = Vec::with_capacity(in_flight);
        for task in 0..in_flight {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for n in (task..events).step_by(in_flight) {
                    let stream = format!("BankAccount-acct-{:08}", n % streams);
                    let command = Uuid::now_v7();
                    let event = NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: Cow::Borrowed("MoneyDeposited"),
                        schema_version: 1,
                        data: br#"{"amount":100}"#.to_vec(),
                        metadata: Metadata {
                            command_id: Some(command),
                            causation_id: Some(command),
                            correlation_id: Some(Uuid::now_v7()),
                            user: Default::default(),
                            tags: Default::default(),
                        },
                    };
                    if let Err(error) = store
                        .append(&stream, ExpectedVersion::Any, vec![event])
                        .await
                    {
                        fail("append failed", error);
                    }
                }
            }));
        }
        for task in tasks {
            if let Err(error) = task.await {
                fail("an appending task failed", error);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        (before, rss_bytes(), seconds)
    });
    drop(runtime);
    let growth = after.saturating_sub(before);
    println!(
        "{{\"events\":{events},\"streams\":{streams},\"in_flight\":{in_flight},\"seconds\":{seconds:.1},\"rss_before_bytes\":{before},\"rss_growth_bytes\":{growth},\"peak_rss_kib\":{},\"growth_per_stream_bytes\":{:.1}}}",
        status_kib("VmHWM"),
        growth as f64 / streams as f64,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
