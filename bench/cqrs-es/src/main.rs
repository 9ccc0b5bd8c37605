//! The bank-account workload on cqrs-es 0.5, with its in-memory store (`MemStore`) and a `Query`
//! that counts `MoneyDeposited` per account, driven by the same code as evoq and the floor
//! (`bench/src/workload.rs`, included below):
//!
//! ```sh
//! cargo run --release --manifest-path bench/cqrs-es/Cargo.toml -- \
//!     --accounts 1000 --commands-per-account 100 --concurrency 64 --store memory [--runs N]
//! ```
//!
//! `MemStore` prints two lines per command on stdout (`loading: ...`, `storing: ...`). So that
//! the workload's JSON line is the only output, stdout goes to `/dev/null` while the workload
//! runs (the cheapest place for those lines: their cost is part of `MemStore` and is measured)
//! and comes back for the JSON line.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use cqrs_es::mem_store::MemStore;
use cqrs_es::{AggregateError, CqrsFramework, EventEnvelope, Query};

#[path = "../../src/allocations.rs"]
#[allow(dead_code)]
mod allocations;
#[path = "../../src/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "../../src/workload.rs"]
#[allow(dead_code)]
mod workload;

mod bank_account;

use bank_account::{BankAccount, BankAccountCommand, BankAccountEvent, BankError};
use workload::{Args, BankCommand, Done, Failure, Peer, Report};

/// The system's allocator, counting allocations with `--count-allocations`.
#[global_allocator]
static ALLOCATOR: allocations::Counting = allocations::Counting;

/// The read side: a query that counts deposits per account.
#[derive(Default)]
struct DepositCounter {
    counts: Mutex<HashMap<String, u64>>,
}

struct CountDeposits(Arc<DepositCounter>);

#[async_trait]
impl Query<BankAccount> for CountDeposits {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<BankAccount>]) {
        let mut counts = self.0.counts.lock().unwrap_or_else(PoisonError::into_inner);
        for event in events {
            if let BankAccountEvent::MoneyDeposited { .. } = event.payload {
                match counts.get_mut(aggregate_id) {
                    Some(count) => *count += 1,
                    None => {
                        counts.insert(aggregate_id.to_owned(), 1);
                    }
                }
            }
        }
    }
}

struct CqrsEs {
    cqrs: CqrsFramework<BankAccount, MemStore<BankAccount>>,
    counter: Arc<DepositCounter>,
}

impl Peer for CqrsEs {
    fn name(&self) -> &'static str {
        "cqrs-es"
    }

    fn version(&self) -> &'static str {
        "0.5.0"
    }

    async fn dispatch(&self, account: &str, command: BankCommand) -> Result<Done, Failure> {
        let command = match command {
            BankCommand::Open { initial_balance } => {
                BankAccountCommand::OpenAccount { initial_balance }
            }
            BankCommand::Deposit { amount } => BankAccountCommand::Deposit { amount },
            BankCommand::Withdraw { amount } => BankAccountCommand::Withdraw { amount },
        };
        match self.cqrs.execute(account, command).await {
            // Every accepted command of the workload emits one event; cqrs-es has no global
            // position.
            Ok(()) => Ok(Done {
                events: 1,
                position: 0,
            }),
            Err(AggregateError::UserError(BankError::InsufficientFunds { .. })) => {
                Err(Failure::Rejected)
            }
            Err(error) => Err(Failure::Other(error.to_string())),
        }
    }

    async fn caught_up(&self, _position: u64, _events: u64) {
        // Queries run inside `execute`, before it returns: nothing is left to wait for.
    }

    fn deposits_projected(&self) -> u64 {
        self.counter
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }
}

/// Sends stdout (fd 1) to /dev/null until the guard is dropped.
struct Silenced {
    saved: libc::c_int,
}

impl Silenced {
    fn stdout() -> Option<Silenced> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let _ = std::io::stdout().flush();
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .ok()?;
        // SAFETY: dup/dup2 on file descriptors this process owns; fd 1 is restored on drop.
        unsafe {
            let saved = libc::dup(1);
            if saved < 0 || libc::dup2(null.as_raw_fd(), 1) < 0 {
                return None;
            }
            Some(Silenced { saved })
        }
    }
}

impl Drop for Silenced {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: restores the descriptor saved in `stdout`.
        unsafe {
            libc::dup2(self.saved, 1);
            libc::close(self.saved);
        }
    }
}

fn main() -> ExitCode {
    let args = match Args::parse("cqrs-es") {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}");
            eprintln!(
                "usage: evoq-bench-cqrs-es --accounts N --commands-per-account M --concurrency C --store memory [--runs N] [--count-allocations]"
            );
            return ExitCode::from(2);
        }
    };
    if args.settings.store != "memory" {
        eprintln!(
            "cqrs-es runs on its in-memory store only here (`--store memory`), not `{}`",
            args.settings.store
        );
        return ExitCode::from(2);
    }
    if args.peer != "cqrs-es" {
        eprintln!("this binary runs cqrs-es only (`--peer cqrs-es`)");
        return ExitCode::from(2);
    }
    if args.telemetry {
        eprintln!("cqrs-es has no tracing instrumentation: `--telemetry` changes nothing");
    }
    if args.runs > 1 {
        return ExitCode::from(args.run_in_children() as u8);
    }
    if args.count_allocations {
        allocations::start();
    }
    let runtime = match workload::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start tokio: {error}");
            return ExitCode::FAILURE;
        }
    };
    let counter = Arc::new(DepositCounter::default());
    let peer = CqrsEs {
        cqrs: CqrsFramework::new(
            MemStore::default(),
            vec![Box::new(CountDeposits(Arc::clone(&counter)))],
            (),
        ),
        counter,
    };
    let silenced = Silenced::stdout();
    if silenced.is_none() {
        eprintln!("cannot send stdout to /dev/null: MemStore's lines will mix with the JSON line");
    }
    let report: Report =
        runtime.block_on(async { workload::run(Arc::new(peer), &args.settings).await });
    drop(silenced);
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
