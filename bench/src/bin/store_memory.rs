//! What the in-memory store keeps per event: appends N one-event commands shaped like the
//! workload's (data `{"amount":100}`, metadata with command, correlation and causation ids)
//! to `--streams` streams, round-robin, and prints one JSON line with the resident memory
//! grown per event and the size of a record.
//!
//! ```sh
//! cargo build --release -p evoq-bench --bin store_memory
//! ./target/release/store_memory --events 500000 --streams 100000
//! ```

use std::borrow::Cow;

use evoq::store::memory::InMemoryStore;
use evoq::{EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, Uuid};
use evoq_bench::measure::rss_bytes;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let events = arg("--events", 500_000);
    let streams = arg("--streams", 100_000).max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|error| {
            eprintln!("cannot start tokio: {error}");
            std::process::exit(1)
        });
    let ids: Vec<String> = (0..streams)
        .map(|i| format!("BankAccount-acct-{i:08}"))
        .collect();
    let store = InMemoryStore::new();
    let before = rss_bytes();
    runtime.block_on(async {
        for n in 0..events {
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
                .append(&ids[n % streams], ExpectedVersion::Any, vec![event])
                .await
            {
                eprintln!("append failed: {error}");
                std::process::exit(1);
            }
        }
    });
    let after = rss_bytes();
    let per_event = after.saturating_sub(before) as f64 / events.max(1) as f64;
    println!(
        "{{\"events\":{events},\"streams\":{streams},\"record_size\":{},\"rss_growth_bytes\":{},\"bytes_per_event\":{per_event:.1}}}",
        std::mem::size_of::<RecordedEvent>(),
        after.saturating_sub(before),
    );
}
