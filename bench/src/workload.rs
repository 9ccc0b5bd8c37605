//! The driver of the bank-account workload (`bench/WORKLOAD.md`), shared word for word
//! by every peer: evoq and the floor here, cqrs-es in `bench/cqrs-es` (which includes this file,
//! so that it never depends on evoq).
//!
//! It knows nothing of any framework: a peer is a [`Peer`] (dispatch one command, wait until its
//! read side has caught up, say how many deposits it projected). [`run`] drives it exactly as the
//! workload says, checks the totals and returns the [`Report`] whose [`json`](Report::json) is the
//! workload's output line.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::allocations;
use crate::measure::status_kib;

/// The balance every account opens with.
pub const INITIAL_BALANCE: i64 = 1_000;
/// What a normal withdrawal takes.
pub const WITHDRAWAL: i64 = 150;
/// What a deposit brings.
pub const DEPOSIT: i64 = 100;
/// The withdrawal that is always rejected.
pub const TOO_MUCH: i64 = i64::MAX / 2;

/// One command of the workload, for any framework.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankCommand {
    /// `OpenAccount { initial_balance }`.
    Open {
        /// The opening balance.
        initial_balance: i64,
    },
    /// `Deposit { amount }`.
    Deposit {
        /// How much.
        amount: i64,
    },
    /// `Withdraw { amount }` (rejected when the balance is too small).
    Withdraw {
        /// How much.
        amount: i64,
    },
}

/// Command `k` of an account (k from 0): the workload's command mix.
pub fn command(k: usize) -> BankCommand {
    if k == 0 {
        BankCommand::Open {
            initial_balance: INITIAL_BALANCE,
        }
    } else if k % 20 == 19 {
        BankCommand::Withdraw { amount: TOO_MUCH }
    } else if k.is_multiple_of(3) {
        BankCommand::Withdraw { amount: WITHDRAWAL }
    } else {
        BankCommand::Deposit { amount: DEPOSIT }
    }
}

/// The workload's account id: `acct-00000042`.
pub fn account_id(index: usize) -> String {
    format!("acct-{index:08}")
}

/// How many deposits and rejected withdrawals `commands_per_account` commands hold per account.
pub fn expected_per_account(commands_per_account: usize) -> (u64, u64) {
    let mut deposits = 0;
    let mut rejected = 0;
    for k in 0..commands_per_account {
        match command(k) {
            BankCommand::Deposit { .. } => deposits += 1,
            BankCommand::Withdraw { amount: TOO_MUCH } => rejected += 1,
            _ => {}
        }
    }
    (deposits, rejected)
}

/// What a successful command did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Done {
    /// How many events it appended.
    pub events: u64,
    /// The global position of its last event (0 when the peer has none, or no event).
    pub position: u64,
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The domain refused it (the only failure the workload expects: a withdrawal).
    Rejected,
    /// Anything else: the run does not count.
    Other(String),
}

/// A framework under test.
pub trait Peer: Send + Sync + 'static {
    /// The `peer` field of the output.
    fn name(&self) -> &'static str;
    /// The `version` field of the output.
    fn version(&self) -> &'static str;
    /// Dispatches one command to account `account` and waits for its outcome.
    fn dispatch(
        &self,
        account: &str,
        command: BankCommand,
    ) -> impl Future<Output = Result<Done, Failure>> + Send;
    /// Waits until the read side has processed every event up to global position `position`
    /// (the highest one any command returned); `events` is how many events the commands
    /// appended in all.
    fn caught_up(&self, position: u64, events: u64) -> impl Future<Output = ()> + Send;
    /// How many `MoneyDeposited` the read side has counted, over every account.
    fn deposits_projected(&self) -> u64;
}

/// The size of a run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Number of accounts.
    pub accounts: usize,
    /// Commands per account.
    pub commands_per_account: usize,
    /// Number of driving tasks.
    pub concurrency: usize,
    /// The store (`mode` in the output).
    pub store: String,
}

/// The outcome of one run: the fields of the output line.
#[derive(Clone, Debug)]
pub struct Report {
    /// The peer's name.
    pub peer: &'static str,
    /// The peer's version.
    pub version: &'static str,
    /// The run's size.
    pub settings: Settings,
    /// Commands dispatched.
    pub commands: u64,
    /// Events appended.
    pub events: u64,
    /// Commands rejected by the domain.
    pub rejected: u64,
    /// Commands that failed otherwise.
    pub failed: u64,
    /// The first other failure, if any.
    pub first_failure: Option<String>,
    /// Deposits the read side counted.
    pub deposits: u64,
    /// Seconds from the first dispatch until every command returned and the read side caught up.
    pub secs: f64,
    /// Latency percentiles of one dispatch, in microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// VmHWM.
    pub peak_rss_kb: u64,
    /// Mean latency of the commands in each tenth of a stream's life (k * 10 / M), in µs.
    pub mean_us_by_stream_decile: [f64; 10],
    /// Heap allocations from the first dispatch until the read side caught up (the clock's
    /// span), when the binary counts them (`--count-allocations`); not part of the JSON line.
    pub allocations: Option<u64>,
}

impl Report {
    /// The workload's output line (one JSON object).
    pub fn json(&self) -> String {
        let s = &self.settings;
        let deciles: Vec<String> = self
            .mean_us_by_stream_decile
            .iter()
            .map(|mean| format!("{mean:.2}"))
            .collect();
        format!(
            concat!(
                "{{\"peer\":\"{}\",\"version\":\"{}\",\"mode\":\"{}\",\"accounts\":{},",
                "\"commands_per_account\":{},\"concurrency\":{},\"commands\":{},\"events\":{},",
                "\"rejected\":{},\"failed\":{},\"secs\":{:.3},\"cmds_per_sec\":{:.0},",
                "\"events_per_sec\":{:.0},\"p50_us\":{:.2},\"p99_us\":{:.2},\"max_us\":{:.2},",
                "\"peak_rss_kb\":{},\"mean_us_by_stream_decile\":[{}]}}"
            ),
            self.peer,
            self.version,
            s.store,
            s.accounts,
            s.commands_per_account,
            s.concurrency,
            self.commands,
            self.events,
            self.rejected,
            self.failed,
            self.secs,
            self.commands as f64 / self.secs,
            self.events as f64 / self.secs,
            self.p50_us,
            self.p99_us,
            self.max_us,
            self.peak_rss_kb,
            deciles.join(","),
        )
    }

    /// The workload's checks; `Err` says which failed (the run is then not a result).
    pub fn check(&self) -> Result<(), String> {
        let s = &self.settings;
        let (deposits, rejected) = expected_per_account(s.commands_per_account);
        let accounts = s.accounts as u64;
        let mut failures = Vec::new();
        if self.failed > 0 {
            failures.push(format!(
                "{} commands failed for another reason than a rejected withdrawal (first: {})",
                self.failed,
                self.first_failure.as_deref().unwrap_or("?")
            ));
        }
        if self.deposits != deposits * accounts {
            failures.push(format!(
                "the read side counted {} deposits, expected {}",
                self.deposits,
                deposits * accounts
            ));
        }
        if self.rejected != rejected * accounts {
            failures.push(format!(
                "{} commands were rejected, expected {}",
                self.rejected,
                rejected * accounts
            ));
        }
        if self.events + self.rejected != self.commands {
            failures.push(format!(
                "{} events for {} commands of which {} rejected: every accepted command appends one event",
                self.events, self.commands, self.rejected
            ));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// What `--count-allocations` prints on stderr: the allocations of the timed part, per
    /// command. `None` when they were not counted.
    pub fn allocations_line(&self) -> Option<String> {
        let allocations = self.allocations?;
        Some(format!(
            "allocations: {allocations} from the first dispatch until the read side caught up, {:.2} per command",
            allocations as f64 / self.commands.max(1) as f64
        ))
    }
}

/// What one driving task measured.
struct TaskStats {
    latencies_ns: Vec<u32>,
    decile_sum_ns: [u64; 10],
    decile_count: [u64; 10],
    events: u64,
    rejected: u64,
    failed: u64,
    first_failure: Option<String>,
    max_position: u64,
}

/// Runs the workload once against `peer`: `concurrency` tasks, account `a` driven by task
/// `a % concurrency`, round by round; the clock runs from the first dispatch until every command
/// has returned and the read side has caught up. The checks are the caller's
/// ([`Report::check`]).
pub async fn run<P: Peer>(peer: Arc<P>, settings: &Settings) -> Report {
    let tasks = settings.concurrency.max(1);
    let per_account = settings.commands_per_account;
    let ids: Vec<Vec<String>> = (0..tasks)
        .map(|task| {
            (task..settings.accounts)
                .step_by(tasks)
                .map(account_id)
                .collect()
        })
        .collect();
    let started = Instant::now();
    let allocated_before = allocations::count();
    let handles: Vec<_> = ids
        .into_iter()
        .map(|accounts| {
            let peer = Arc::clone(&peer);
            tokio::spawn(async move {
                let mut stats = TaskStats {
                    latencies_ns: Vec::with_capacity(accounts.len() * per_account),
                    decile_sum_ns: [0; 10],
                    decile_count: [0; 10],
                    events: 0,
                    rejected: 0,
                    failed: 0,
                    first_failure: None,
                    max_position: 0,
                };
                for k in 0..per_account {
                    let decile = k * 10 / per_account;
                    let command = command(k);
                    for account in &accounts {
                        let sent = Instant::now();
                        let outcome = peer.dispatch(account, command).await;
                        let took = sent.elapsed().as_nanos();
                        let took = u32::try_from(took).unwrap_or(u32::MAX);
                        stats.latencies_ns.push(took);
                        stats.decile_sum_ns[decile] += u64::from(took);
                        stats.decile_count[decile] += 1;
                        match outcome {
                            Ok(done) => {
                                stats.events += done.events;
                                stats.max_position = stats.max_position.max(done.position);
                            }
                            Err(Failure::Rejected) => stats.rejected += 1,
                            Err(Failure::Other(reason)) => {
                                stats.failed += 1;
                                stats.first_failure.get_or_insert(reason);
                            }
                        }
                    }
                }
                stats
            })
        })
        .collect();
    let mut all = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(stats) => all.push(stats),
            Err(error) => all.push(TaskStats {
                latencies_ns: Vec::new(),
                decile_sum_ns: [0; 10],
                decile_count: [0; 10],
                events: 0,
                rejected: 0,
                failed: 1,
                first_failure: Some(format!("a driving task failed: {error}")),
                max_position: 0,
            }),
        }
    }
    let events: u64 = all.iter().map(|s| s.events).sum();
    let max_position = all.iter().map(|s| s.max_position).max().unwrap_or(0);
    if std::env::var_os("EVOQ_BENCH_SPLIT").is_some() {
        eprintln!("commands done after {:?}", started.elapsed());
    }
    peer.caught_up(max_position, events).await;
    let secs = started.elapsed().as_secs_f64();
    let allocated = allocations::counting().then(|| allocations::count() - allocated_before);
    let deposits = peer.deposits_projected();

    let mut latencies: Vec<u32> =
        Vec::with_capacity(all.iter().map(|s| s.latencies_ns.len()).sum());
    let mut sums = [0u64; 10];
    let mut counts = [0u64; 10];
    for stats in &all {
        latencies.extend_from_slice(&stats.latencies_ns);
        for d in 0..10 {
            sums[d] += stats.decile_sum_ns[d];
            counts[d] += stats.decile_count[d];
        }
    }
    latencies.sort_unstable();
    let at = |q: usize| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = (latencies.len() * q / 100).min(latencies.len() - 1);
        f64::from(latencies[index]) / 1_000.0
    };
    let mut deciles = [0.0; 10];
    for d in 0..10 {
        if counts[d] > 0 {
            deciles[d] = sums[d] as f64 / counts[d] as f64 / 1_000.0;
        }
    }
    Report {
        peer: peer.name(),
        version: peer.version(),
        settings: settings.clone(),
        commands: latencies.len() as u64,
        events,
        rejected: all.iter().map(|s| s.rejected).sum(),
        failed: all.iter().map(|s| s.failed).sum(),
        first_failure: all.iter().find_map(|s| s.first_failure.clone()),
        deposits,
        secs,
        p50_us: at(50),
        p99_us: at(99),
        max_us: latencies.last().map_or(0.0, |l| f64::from(*l) / 1_000.0),
        peak_rss_kb: status_kib("VmHWM"),
        mean_us_by_stream_decile: deciles,
        allocations: allocated,
    }
}

/// The command line every benchmark binary of the workload takes.
#[derive(Clone, Debug)]
pub struct Args {
    /// The run's size and store.
    pub settings: Settings,
    /// `--peer` (each binary checks it names a peer it has).
    pub peer: String,
    /// `--runs N`: run N times, each in a fresh process.
    pub runs: usize,
    /// `--telemetry`: install a `tracing` subscriber at INFO.
    pub telemetry: bool,
    /// `--metrics`: install a metrics recorder (Prometheus, without an endpoint).
    pub metrics: bool,
    /// `--count-allocations`: count heap allocations (the binary's global allocator is
    /// [`allocations::Counting`]) and print those of the timed part on stderr.
    pub count_allocations: bool,
}

impl Args {
    /// Parses the process's arguments; `default_peer` when `--peer` is absent.
    pub fn parse(default_peer: &str) -> Result<Args, String> {
        let mut args = Args {
            settings: Settings {
                accounts: 1_000,
                commands_per_account: 100,
                concurrency: 64,
                store: "memory".to_owned(),
            },
            peer: default_peer.to_owned(),
            runs: 1,
            telemetry: false,
            metrics: false,
            count_allocations: false,
        };
        let mut given = std::env::args().skip(1);
        while let Some(flag) = given.next() {
            if flag == "--telemetry" {
                args.telemetry = true;
                continue;
            }
            if flag == "--metrics" {
                args.metrics = true;
                continue;
            }
            if flag == "--count-allocations" {
                args.count_allocations = true;
                continue;
            }
            let value = given
                .next()
                .ok_or_else(|| format!("`{flag}` needs a value"))?;
            let number = || -> Result<usize, String> {
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("`{flag}` takes a positive integer, not `{value}`"))
            };
            match flag.as_str() {
                "--accounts" => args.settings.accounts = number()?,
                "--commands-per-account" => args.settings.commands_per_account = number()?,
                "--concurrency" => args.settings.concurrency = number()?,
                "--runs" => args.runs = number()?,
                "--store" => args.settings.store = value,
                "--peer" => args.peer = value,
                _ => return Err(format!("unknown argument `{flag}`")),
            }
        }
        Ok(args)
    }

    /// Runs this binary `runs` times with the same arguments but `--runs`, one process each (so
    /// that every run has its own peak RSS), passing their output through. The exit code is 1 if
    /// any run failed.
    pub fn run_in_children(&self) -> i32 {
        let program = match std::env::current_exe() {
            Ok(program) => program,
            Err(error) => {
                eprintln!("cannot find this program to re-run it: {error}");
                return 1;
            }
        };
        let mut child_args = Vec::new();
        let mut given = std::env::args().skip(1);
        while let Some(arg) = given.next() {
            if arg == "--runs" {
                given.next();
            } else {
                child_args.push(arg);
            }
        }
        let mut code = 0;
        for _ in 0..self.runs {
            match std::process::Command::new(&program)
                .args(&child_args)
                .status()
            {
                Ok(status) if status.success() => {}
                Ok(_) => code = 1,
                Err(error) => {
                    eprintln!("cannot run {}: {error}", program.display());
                    return 1;
                }
            }
        }
        code
    }
}

/// A tokio runtime with one worker per core, as the workload says.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_mix_gives_the_workloads_totals() {
        assert_eq!(expected_per_account(100).0 * 1_000, 63_000);
        assert_eq!(expected_per_account(10_000).0 * 10, 63_330);
        assert_eq!(expected_per_account(5).0 * 100_000, 300_000);
        assert_eq!(expected_per_account(100).1, 5);
        assert_eq!(account_id(42), "acct-00000042");
    }
}
