//! The bank-account workload (`bench/WORKLOAD.md`) on evoq or on the floor:
//!
//! ```sh
//! cargo run --release -p evoq-bench -- --accounts 1000 --commands-per-account 100 \
//!     --concurrency 64 --store memory|sqlite|postgres [--peer evoq|floor] [--runs N] [--telemetry] \
//!     [--metrics] [--count-allocations]
//! ```
//!
//! `--store sqlite`: a new file in a temporary directory, removed at the end (default durability;
//! `EVOQ_BENCH_SQLITE_DURABILITY=normal` for `synchronous=NORMAL`). `--store postgres`: a fresh
//! schema in `EVOQ_BENCH_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`), dropped at
//! the end with `psql`. The floor runs in memory only.
//!
//! Each run prints the workload's JSON line on stdout; a run whose checks fail prints its line
//! and the reason on stderr and exits with 1. `--runs N` runs N times, each in its own process.
//! `--telemetry` installs a `tracing_subscriber::fmt` subscriber at INFO (writing to stderr).
//! `--metrics` installs a metrics recorder (`metrics-exporter-prometheus`, no endpoint), so the
//! runtime's metrics are recorded. `--count-allocations` counts heap allocations (the global
//! allocator is [`Counting`]) and prints, on stderr, those from the first dispatch until the
//! read side caught up, per command.

use std::process::ExitCode;
use std::sync::Arc;

use evoq_bench::allocations::{self, Counting};
use evoq_bench::evoq_peer::{Backend, EvoqPeer};
use evoq_bench::floor::Floor;
use evoq_bench::workload::{self, Args, Peer, Report};

/// The system's allocator, counting allocations with `--count-allocations`.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() -> ExitCode {
    let args = match Args::parse("evoq") {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}");
            eprintln!(
                "usage: evoq-bench --accounts N --commands-per-account M --concurrency C --store memory|sqlite|postgres [--peer evoq|floor] [--runs N] [--telemetry] [--metrics] [--count-allocations]"
            );
            return ExitCode::from(2);
        }
    };
    let Some(backend) = Backend::named(&args.settings.store) else {
        eprintln!(
            "unknown store `{}`: memory, sqlite or postgres",
            args.settings.store
        );
        return ExitCode::from(2);
    };
    if !matches!(args.peer.as_str(), "evoq" | "floor") {
        eprintln!(
            "unknown peer `{}`: evoq or floor (cqrs-es: cargo run --release --manifest-path bench/cqrs-es/Cargo.toml)",
            args.peer
        );
        return ExitCode::from(2);
    }
    if args.peer == "floor" && !matches!(backend, Backend::Memory) {
        eprintln!("the floor keeps its events in a HashMap: `--store memory` only");
        return ExitCode::from(2);
    }
    if args.runs > 1 {
        return ExitCode::from(args.run_in_children() as u8);
    }
    if args.count_allocations {
        allocations::start();
    }
    // Kept alive for the run: the recorder renders nothing, it only records.
    let _recorder = args.metrics.then(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the metrics recorder installs")
    });
    if args.telemetry {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match workload::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start tokio: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(async {
        match args.peer.as_str() {
            "floor" => Ok(drive(Floor::start(), &args).await),
            _ => match EvoqPeer::start(&backend).await {
                Ok(peer) => Ok(drive(peer, &args).await),
                Err(error) => Err(error),
            },
        }
    });
    // The runtime's tasks (and their store connections) end before the store is removed.
    drop(runtime);
    backend.clean_up();
    match report {
        Ok(report) => finish(&report),
        Err(error) => {
            eprintln!("cannot start evoq: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn drive<P: Peer>(peer: P, args: &Args) -> Report {
    workload::run(Arc::new(peer), &args.settings).await
}

fn finish(report: &Report) -> ExitCode {
    if let Some(line) = report.allocations_line() {
        eprintln!("{line}");
    }
    match report.check() {
        Ok(()) => {
            println!("{}", report.json());
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("{}", report.json());
            eprintln!("the run failed its checks (not a result): {reason}");
            ExitCode::FAILURE
        }
    }
}
