//! Lifecycle figures of the bank account (issue: aggregate lifecycle):
//!
//! - `lifecycle memory --mode live|hibernated --aggregates N`: resident memory per live idle
//!   aggregate, or per hibernated aggregate (RSS delta / N), on a store that keeps nothing so
//!   that only the runtime is measured. Run each mode in its own process.
//! - `lifecycle burst --aggregates N [--rounds R]`: resident memory before, at the peak of, and
//!   after a burst of N live aggregates that then all passivate (idle timeout 1 s), with the
//!   capacity the registry's tables keep, R times with other aggregates each time: how much of
//!   a burst's memory the runtime gives back, and whether the next burst reuses what is kept.
//! - `lifecycle reactivate --events N`: time to reactivate an aggregate with N events, without
//!   and with a snapshot (first command on a fresh runtime, in-memory store).
//!
//! Each run prints one JSON line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use evoq::store::Snapshot;
use evoq::store::memory::InMemoryStore;
use evoq::{AggregateDefaults, EventStore, Evoq, ExpectedVersion, MemoryMonitorConfig, NewEvent};
use evoq_bench::bank::{BankAccount, Deposit, OpenAccount, account_id};
use evoq_bench::measure::rss_bytes;
use evoq_bench::null_store::NullStore;

const TASKS: usize = 64;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn usage() -> ! {
    eprintln!(
        "usage: lifecycle memory --mode live|hibernated --aggregates N\n       lifecycle burst --aggregates N\n       lifecycle reactivate --events N"
    );
    std::process::exit(2)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| {
            eprintln!("cannot start tokio: {error}");
            std::process::exit(1)
        });
    let result = match std::env::args().nth(1).as_deref() {
        Some("memory") => {
            let mode = arg("--mode").unwrap_or_else(|| usage());
            let aggregates = arg("--aggregates")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| usage());
            runtime.block_on(memory(&mode, aggregates))
        }
        Some("burst") => {
            let aggregates = arg("--aggregates")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| usage());
            let rounds = arg("--rounds").and_then(|n| n.parse().ok()).unwrap_or(1);
            runtime.block_on(burst(aggregates, rounds))
        }
        Some("reactivate") => {
            let events = arg("--events")
                .and_then(|n| n.parse().ok())
                .unwrap_or(10_000);
            runtime.block_on(reactivate(events))
        }
        _ => usage(),
    };
    if let Err(error) = result {
        eprintln!("lifecycle benchmark failed: {error}");
        std::process::exit(1);
    }
}

async fn open_all(app: &Evoq, from: usize, count: usize) -> Result<(), evoq::Error> {
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut index = from + task;
                while index < from + count {
                    app.dispatch(OpenAccount {
                        account: account_id(index),
                        initial_balance: 1_000,
                    })
                    .await?;
                    index += TASKS;
                }
                Ok::<(), evoq::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|error| evoq::Error::Config {
            key: "task".into(),
            reason: error.to_string(),
        })??;
    }
    Ok(())
}

async fn memory(mode: &str, aggregates: usize) -> Result<(), evoq::Error> {
    let hibernate_after = match mode {
        "live" => None,
        "hibernated" => Some(Duration::from_millis(1)),
        _ => usage(),
    };
    let app = Evoq::builder()
        .store(NullStore::new())
        .aggregate_defaults(AggregateDefaults {
            idle_timeout: Duration::from_secs(3600),
            hibernate_after,
            snapshot_every: 1_000_000,
        })
        .memory_monitor(MemoryMonitorConfig {
            enabled: false,
            ..MemoryMonitorConfig::default()
        })
        .start()
        .await?;
    // Warm up with as many aggregates as are measured: the allocator then holds the memory
    // that instances use while they are briefly live (before hibernating), and the delta is
    // what the measured aggregates keep.
    let warm = aggregates;
    open_all(&app, 1_000_000_000, warm).await?;
    settle(&app, mode, warm).await;
    let before = rss_bytes();
    let started = Instant::now();
    open_all(&app, 0, aggregates).await?;
    settle(&app, mode, warm + aggregates).await;
    let secs = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    let stats = app.aggregate_stats::<BankAccount>();
    let per = (after.saturating_sub(before)) as f64 / aggregates as f64;
    let state_bytes = std::mem::size_of::<BankAccount>();
    let serialized = br#"{"balance":1000}"#.len();
    println!(
        "{{\"bench\":\"lifecycle_memory\",\"mode\":\"{mode}\",\"aggregates\":{aggregates},\"live\":{},\"hibernated\":{},\"rss_delta_bytes\":{},\"bytes_per_aggregate\":{per:.0},\"state_bytes\":{state_bytes},\"serialized_state_bytes\":{serialized},\"secs\":{secs:.2}}}",
        stats.live,
        stats.hibernated,
        after.saturating_sub(before),
    );
    Ok(())
}

async fn burst(aggregates: usize, rounds: usize) -> Result<(), evoq::Error> {
    let app = Evoq::builder()
        .store(NullStore::new())
        .aggregate_defaults(AggregateDefaults {
            idle_timeout: Duration::from_secs(1),
            hibernate_after: None,
            snapshot_every: 1_000_000,
        })
        .memory_monitor(MemoryMonitorConfig {
            enabled: false,
            ..MemoryMonitorConfig::default()
        })
        .start()
        .await?;
    let before = rss_bytes();
    for round in 0..rounds {
        // Other accounts each round: the runtime holds none of the earlier ones.
        open_all(&app, round * aggregates, aggregates).await?;
        let peak = rss_bytes();
        let peak_capacity = app.aggregate_stats::<BankAccount>().capacity;
        // Every instance passivates after its idle timeout; the tables shrink as they empty.
        loop {
            let stats = app.aggregate_stats::<BankAccount>();
            if stats.live == 0 && stats.hibernated == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // One more sweep interval, for the last shrink.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_bytes();
        let stats = app.aggregate_stats::<BankAccount>();
        let per = |bytes: u64| bytes as f64 / aggregates as f64;
        println!(
            "{{\"bench\":\"lifecycle_burst\",\"round\":{},\"aggregates\":{aggregates},\"rss_before\":{before},\"rss_peak\":{peak},\"rss_after\":{after},\"bytes_per_aggregate_at_peak\":{:.0},\"bytes_per_aggregate_kept\":{:.0},\"capacity_at_peak\":{peak_capacity},\"capacity_after\":{},\"passivations\":{}}}",
            round + 1,
            per(peak.saturating_sub(before)),
            per(after.saturating_sub(before)),
            stats.capacity,
            stats.passivations,
        );
    }
    Ok(())
}

/// Waits until every aggregate is in the state `mode` measures.
async fn settle(app: &Evoq, mode: &str, total: usize) {
    loop {
        let stats = app.aggregate_stats::<BankAccount>();
        let done = match mode {
            "hibernated" => stats.hibernated as usize >= total,
            _ => stats.live as usize >= total,
        };
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn deposit_event(amount: i64) -> NewEvent {
    NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: "MoneyDeposited".into(),
        schema_version: 1,
        data: format!("{{\"amount\":{amount}}}").into_bytes(),
        metadata: Default::default(),
    }
}

async fn reactivate(events: usize) -> Result<(), evoq::Error> {
    const ACCOUNTS: usize = 5;
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    for index in 0..2 * ACCOUNTS {
        let stream = evoq::stream_id("BankAccount", &account_id(index));
        let mut version = 0;
        let mut opened = deposit_event(0);
        opened.event_type = "AccountOpened".into();
        opened.data = br#"{"initial_balance":0}"#.to_vec();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![opened])
            .await?;
        version += 1;
        while version < events as u64 {
            let batch = (events as u64 - version).min(1_000);
            let page = (0..batch).map(|_| deposit_event(1)).collect();
            store
                .append(&stream, ExpectedVersion::Exact(version), page)
                .await?;
            version += batch;
        }
        if index >= ACCOUNTS {
            store
                .save_snapshot(Snapshot {
                    stream_id: stream,
                    version,
                    data: format!("{{\"balance\":{}}}", version - 1).into_bytes(),
                    taken_at: std::time::SystemTime::now(),
                })
                .await?;
        }
    }
    let mut without = Vec::new();
    let mut with = Vec::new();
    for index in 0..2 * ACCOUNTS {
        let app = Evoq::builder()
            .shared_store(Arc::clone(&store))
            .start()
            .await?;
        let started = Instant::now();
        let done = app
            .dispatch(Deposit {
                account: account_id(index),
                amount: 1,
            })
            .await?;
        let took = started.elapsed().as_secs_f64() * 1_000.0;
        assert_eq!(done.version, events as u64 + 1, "every event was replayed");
        if index < ACCOUNTS {
            without.push(took);
        } else {
            with.push(took);
        }
        app.stop().await;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (without, with) = (median(without), median(with));
    println!(
        "{{\"bench\":\"lifecycle_reactivate\",\"events\":{events},\"without_snapshot_ms\":{without:.3},\"with_snapshot_ms\":{with:.3},\"speedup\":{:.1}}}",
        without / with
    );
    Ok(())
}
