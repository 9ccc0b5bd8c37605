//! Overhead of the command pipeline per dispatch (issue: command pipeline):
//! `pipeline [--dispatches N] [--runs R]` dispatches N deposits to 1,000 accounts from 64 tasks,
//! on a store that keeps nothing (so only the runtime is measured), four ways:
//!
//! - `plain`: no idempotency key, no middleware (a generated command id is never looked up);
//! - `key`: every dispatch with its own idempotency key (a cache miss, then an entry);
//! - `middleware`: one registered middleware that does nothing at every stage;
//! - `key+middleware`: both.
//!
//! The variants alternate, R runs each; it prints one JSON line per variant with the median
//! time per dispatch and the overhead against `plain` in nanoseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use evoq::dispatch::Middleware;
use evoq::{AggregateDefaults, Evoq, MemoryMonitorConfig};
use evoq_bench::bank::{Deposit, OpenAccount, account_id};
use evoq_bench::null_store::NullStore;

const TASKS: usize = 64;
const ACCOUNTS: usize = 1_000;

/// A middleware that does nothing (every stage is the trait's default).
struct Empty;

#[evoq::async_trait]
impl Middleware for Empty {}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let dispatches = arg("--dispatches", 200_000);
    let runs = arg("--runs", 5);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start tokio: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(measure(dispatches, runs)) {
        eprintln!("pipeline benchmark failed: {error}");
        std::process::exit(1);
    }
}

async fn measure(dispatches: usize, runs: usize) -> Result<(), evoq::Error> {
    let variants = ["plain", "key", "middleware", "key+middleware"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..runs {
        for (index, variant) in variants.iter().enumerate() {
            times[index].push(run(variant, dispatches).await?);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    for (variant, ns) in variants.iter().zip(&medians) {
        println!(
            "{{\"bench\":\"pipeline\",\"variant\":\"{variant}\",\"dispatches\":{dispatches},\"runs\":{runs},\"ns_per_dispatch\":{ns:.0},\"overhead_ns\":{:.0}}}",
            ns - medians[0]
        );
    }
    Ok(())
}

/// Nanoseconds per dispatch (wall clock over all tasks) for one variant.
async fn run(variant: &str, dispatches: usize) -> Result<f64, evoq::Error> {
    let mut builder = Evoq::builder()
        .store(NullStore::new())
        .aggregate_defaults(AggregateDefaults {
            idle_timeout: Duration::from_secs(3600),
            hibernate_after: None,
            snapshot_every: 1_000_000,
        })
        .memory_monitor(MemoryMonitorConfig {
            enabled: false,
            ..MemoryMonitorConfig::default()
        });
    let with_middleware = variant.contains("middleware");
    let with_key = variant.starts_with("key");
    if with_middleware {
        builder = builder.middleware(Empty);
    }
    let app = builder.start().await?;
    for index in 0..ACCOUNTS {
        app.dispatch(OpenAccount {
            account: account_id(index),
            initial_balance: 0,
        })
        .await?;
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let app = app.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n >= dispatches {
                        return Ok::<(), evoq::Error>(());
                    }
                    let command = Deposit {
                        account: account_id(n % ACCOUNTS),
                        amount: 1,
                    };
                    if with_key {
                        app.command(command)
                            .idempotency_key(format!("k-{n}"))
                            .dispatch()
                            .await?;
                    } else {
                        app.dispatch(command).await?;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|error| evoq::Error::Config {
            key: "task".into(),
            reason: error.to_string(),
        })??;
    }
    let elapsed = started.elapsed();
    app.stop().await;
    Ok(elapsed.as_nanos() as f64 / dispatches as f64)
}
