//! The fault suite (issue 17): clients, an event handler, a projection and a saga run over a
//! [`ChaosStore`] that injects latency, transient errors and panics into every store method,
//! drawn from a fixed seed. Then the store calms down, everything drains, and the suite checks
//! what the framework promises (docs/semantics.md §3, §5, §6, §7):
//!
//! - every command a client saw succeed is stored exactly once, with the command id it was
//!   told, and a resend of a keyed command returns the first result; a command that failed is
//!   stored at most once (an ambiguous commit may have stored it); the state of every
//!   aggregate (rebuilt from snapshots and streams after faults) counts its stream's events;
//! - the handler and the projection saw every event of their types exactly once, or
//!   dead-lettered it (only their poison events, each entry counting the attempts made);
//! - every saga command took effect at most once, and exactly once unless the saga was told it
//!   failed (and compensated it); every saga timeout fired;
//! - no task stalled: every consumer reaches the head after the calm and none stopped, the saga
//!   timer and the command-log sweeper keep calling the store, idle aggregates leave memory,
//!   and no store panic reached a caller.
//!
//! Every violation is collected, so a failing seed lists all it found, with the faults the
//! store injected per method. `EVOQ_FAULT_SUITE_NO_PANICS_IN=read_all,save_checkpoint,...`
//! (trait method names) spares those methods from panics, to find out which panics cause what;
//! the suite then says loudly that it ran weakened. `EVOQ_FAULT_SUITE_BACKEND=sqlite` (or
//! `postgres`) runs it over another store than the in-memory one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use evoq::prelude::*;
use evoq::store::{EventFilter, EventStore};
use evoq::{
    AggregateDefaults, CommandBuilder, Config, HandlerConfig, HandlerOptions, RecordedEvent,
    RetryStrategy, Route, Uuid,
};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::chaos_store::{
    ChaosConfig, ChaosRng, ChaosStore, Method, PANIC_PREFIX, quiet_injected_panics,
};
use evoq_tests::ledger::{Alpha, Beta, Failed, Gamma, Kind, LedgerError};
use evoq_tests::steps::{
    CloseOrder, OrderClosed, OrderPlaced, PaymentOverdue, PlaceOrder, StepDone, UndoStep, notify,
    run_step,
};
use serde::{Deserialize, Serialize};

// ----- the scenario -----

/// Client commands on journals (each emits one to three events).
const JOTS: usize = 6_000;
/// Orders placed by clients; the saga runs each through three steps.
const ORDERS: usize = 200;
/// Journals the commands spread over.
const JOURNALS: u64 = 150;
/// Concurrent clients.
const CLIENTS: usize = 8;
/// Attempts of a client for a command it can resend (a command id or a key).
const CLIENT_ATTEMPTS: u32 = 12;
/// How long the storm goes on at most after the clients are done, while the consumers catch up.
const STORM_DRAIN: Duration = Duration::from_secs(6);
/// How long everything has to drain once the store is calm.
const DRAIN: Duration = Duration::from_secs(10);

const HANDLER: &str = "chaos-recorder";
const PROJECTION: &str = "chaos-tallies";
const SAGA: &str = "chaos-checkout";
/// Delivery attempts of the handler and the projection (their poison events fail each one).
const MAX_ATTEMPTS: u32 = 3;
/// Delivery attempts of the saga: it has no poison, so only injected faults fail it, and it
/// must not give an event up for them.
const SAGA_ATTEMPTS: u32 = 40;
/// When an order's reminder fires (its saga instance is still open then, or not).
const OVERDUE: Duration = Duration::from_millis(250);
const COMMAND_LOG_SWEEP: Duration = Duration::from_millis(100);
const IDLE_TIMEOUT: Duration = Duration::from_millis(60);

/// The handler fails on every attempt for these `Beta`s.
fn handler_poison(n: u64) -> bool {
    n % 89 == 3
}

/// The projection fails on every attempt for these `Gamma`s.
fn projection_poison(n: u64) -> bool {
    n % 83 == 5
}

fn config() -> Config {
    Config {
        dispatch_timeout: Duration::from_secs(5),
        command_log_sweep_interval: COMMAND_LOG_SWEEP,
        hibernation_sweep_interval: Duration::from_millis(50),
        // No hibernation: an idle instance passivates from the idle timer, with a snapshot.
        aggregate_defaults: AggregateDefaults {
            idle_timeout: IDLE_TIMEOUT,
            hibernate_after: None,
            snapshot_every: 3,
        },
        handlers: HandlerConfig {
            retry: RetryStrategy::exponential_jitter(
                Duration::from_millis(2),
                Duration::from_millis(40),
            ),
            max_attempts: MAX_ATTEMPTS,
            checkpoint_every: 10,
            page_size: 64,
            ..HandlerConfig::default()
        },
        ..Config::default()
    }
}

// ----- the journals: what clients write -----

/// Emits one event per kind, numbered from `n`.
#[derive(Command, Debug, Clone)]
struct Jot {
    #[aggregate_id]
    id: String,
    kinds: Vec<Kind>,
    n: u64,
}

/// Emits `Counted` with how many events the journal's state has applied.
#[derive(Command, Debug, Clone)]
struct Count {
    #[aggregate_id]
    id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Counted {
    id: String,
    seen: u64,
}

/// The ledger of `tests/src/ledger.rs` with a state that serializes: its instances save
/// snapshots (every 3 events, and when they passivate) and load them when they activate.
#[derive(Default, Debug, Serialize, Deserialize)]
struct Journal {
    seen: u64,
}

#[aggregate]
impl Journal {
    #[handles]
    fn jot(&self, cmd: &Jot) -> Result<Vec<JournalEvent>, LedgerError> {
        Ok((cmd.n..)
            .zip(&cmd.kinds)
            .map(|(n, kind)| {
                let id = cmd.id.clone();
                match kind {
                    Kind::A => JournalEvent::Alpha(Alpha { id, n }),
                    Kind::B => JournalEvent::Beta(Beta { id, n }),
                    Kind::C => JournalEvent::Gamma(Gamma { id, n }),
                }
            })
            .collect())
    }

    #[handles]
    fn count(&self, cmd: &Count) -> Result<Counted, LedgerError> {
        Ok(Counted {
            id: cmd.id.clone(),
            seen: self.seen,
        })
    }

    #[apply]
    fn alpha(&mut self, _: &Alpha) {
        self.seen += 1;
    }

    #[apply]
    fn beta(&mut self, _: &Beta) {
        self.seen += 1;
    }

    #[apply]
    fn gamma(&mut self, _: &Gamma) {
        self.seen += 1;
    }

    #[apply]
    fn counted(&mut self, _: &Counted) {}
}

// ----- the consumers -----

/// Counts every `Alpha` and `Beta` it handles, by event id; fails on the poison `Beta`s.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<HashMap<Uuid, u32>>>,
}

impl Recorder {
    fn see(&self, meta: &EventMeta) {
        *self
            .seen
            .lock()
            .unwrap()
            .entry(meta.event_id())
            .or_default() += 1;
    }
}

#[event_handler(name = "chaos-recorder")]
impl Recorder {
    #[handles]
    async fn alpha(&mut self, _: &Alpha, meta: &EventMeta) -> Result<(), Failed> {
        self.see(meta);
        Ok(())
    }

    #[handles]
    async fn beta(&mut self, e: &Beta, meta: &EventMeta) -> Result<(), Failed> {
        if handler_poison(e.n) {
            return Err(Failed(format!("beta {} is poison", e.n)));
        }
        self.see(meta);
        Ok(())
    }
}

/// Counts every `Alpha` and `Gamma` in its read model, under `seen/<event id>`; fails on the
/// poison `Gamma`s.
struct Tallies {
    model: InMemoryReadModel,
}

impl Tallies {
    fn count(&self, meta: &EventMeta) -> Result<(), ProjectionError> {
        let key = format!("seen/{}", meta.event_id());
        let seen: u32 = self.model.get(&key)?.unwrap_or(0);
        self.model.put(&key, &(seen + 1))?;
        Ok(())
    }
}

#[projection(name = "chaos-tallies", read_model = model)]
impl Tallies {
    #[handles]
    async fn alpha(&mut self, _: &Alpha, meta: &EventMeta) -> Result<(), ProjectionError> {
        self.count(meta)
    }

    #[handles]
    async fn gamma(&mut self, e: &Gamma, meta: &EventMeta) -> Result<(), ProjectionError> {
        if projection_poison(e.n) {
            return Err(ProjectionError::new(format!("gamma {} is poison", e.n)));
        }
        self.count(meta)
    }
}

/// Every command failure the saga was told about (its `#[compensates]` method ran): (order,
/// "<command> <aggregate id>: <error>"). Order ids carry the seed, so the seeds of one process
/// do not mix.
static SAGA_FAILURES: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());

/// The checkout of `tests/src/steps.rs` (three steps, then the order is closed and two notices
/// go out; a failed step undoes the done ones) with the reminder folded in (a notice when the
/// order is still open after [`OVERDUE`]), recording every failure it is told about.
#[derive(Default, Serialize, Deserialize)]
struct Fulfilment {
    order: String,
    fail_at: Option<u8>,
}

#[saga(name = "chaos-checkout")]
impl Fulfilment {
    #[starts(by = order)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        self.order = e.order.clone();
        self.fail_at = e.fail_at;
        commands![run_step(&e.order, 1, e.fail_at == Some(1))].timeout_after(
            OVERDUE,
            PaymentOverdue {
                order: e.order.clone(),
            },
        )
    }

    #[continues(by = order)]
    fn step_done(&mut self, e: &StepDone) -> Commands {
        if e.step < 3 {
            let next = e.step + 1;
            commands![run_step(&e.order, next, self.fail_at == Some(next))]
        } else {
            commands![CloseOrder {
                order: e.order.clone()
            }]
        }
    }

    #[continues(by = order)]
    fn overdue(&mut self, e: &PaymentOverdue) -> Commands {
        commands![notify(&e.order, "overdue")]
    }

    #[stops(by = order)]
    fn closed(&mut self, e: &OrderClosed) -> Commands {
        commands![notify(&e.order, "email"), notify(&e.order, "sms")]
    }

    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        SAGA_FAILURES.lock().unwrap().insert((
            failed.instance().to_owned(),
            format!(
                "{} {}: {}",
                failed.command(),
                failed.aggregate_id(),
                failed.error()
            ),
        ));
        let mut undo = Commands::none();
        for step in failed.executed() {
            if step.name == "RunStep" {
                let (order, n) = step
                    .aggregate_id
                    .rsplit_once('.')
                    .expect("a step id is <order>.<step>");
                undo.add(UndoStep {
                    id: step.aggregate_id.clone(),
                    order: order.to_owned(),
                    step: n.parse().expect("a step number"),
                });
                undo.mark_undone(step);
            }
        }
        undo
    }
}

// ----- the clients -----

/// How a client identifies a command, which decides whether it may resend it.
#[derive(Clone, Debug)]
enum Identity {
    /// A generated command id: never resent.
    Generated,
    CommandId(Uuid),
    Key(String),
}

#[derive(Clone, Debug)]
enum Op {
    Jot {
        journal: String,
        kinds: Vec<Kind>,
        n: u64,
    },
    Place {
        order: String,
        fail_at: Option<u8>,
    },
}

#[derive(Clone, Debug)]
struct Planned {
    op: Op,
    identity: Identity,
    /// Sent once more after it succeeded (a client that did not get the answer).
    resend: bool,
}

/// The commands of a seed, in the order the clients take them.
fn plan(seed: u64) -> Vec<Planned> {
    let mut rng = ChaosRng::new(seed ^ 0x5EED_C0DE);
    let total = JOTS + ORDERS;
    let every = total / ORDERS;
    let mut planned = Vec::with_capacity(total);
    let mut orders = 0;
    for i in 0..total {
        if i % every == every / 2 && orders < ORDERS {
            let fail_at = (rng.below(5) == 0).then(|| 1 + rng.below(3) as u8);
            planned.push(Planned {
                op: Op::Place {
                    order: format!("s{seed}-o{orders}"),
                    fail_at,
                },
                identity: Identity::CommandId(uuid(&mut rng)),
                resend: rng.chance(0.1),
            });
            orders += 1;
            continue;
        }
        let all = [Kind::A, Kind::B, Kind::C];
        let kinds = (0..1 + rng.below(3))
            .map(|_| all[rng.below(3) as usize])
            .collect();
        let identity = match rng.below(100) {
            0..30 => Identity::Generated,
            30..65 => Identity::CommandId(uuid(&mut rng)),
            _ => Identity::Key(format!("s{seed}-k{i}")),
        };
        let resend = !matches!(identity, Identity::Generated) && rng.chance(0.05);
        planned.push(Planned {
            op: Op::Jot {
                journal: format!("s{seed}-j{}", rng.below(JOURNALS)),
                kinds,
                // Room for the three events of a command.
                n: i as u64 * 4,
            },
            identity,
            resend,
        });
    }
    planned
}

fn uuid(rng: &mut ChaosRng) -> Uuid {
    let bytes = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())).to_le_bytes();
    Uuid::from_bytes(bytes)
}

/// What a client was told of a success.
#[derive(Clone, Debug, PartialEq)]
struct Done {
    command_id: Uuid,
    version: u64,
    position: Option<u64>,
    events: usize,
}

impl Done {
    fn of<A: Aggregate>(done: &Dispatched<A>) -> Self {
        Done {
            command_id: done.command_id,
            version: done.version,
            position: done.position,
            events: done.events.len(),
        }
    }
}

#[derive(Clone, Debug)]
struct Outcome {
    /// The success, or the last error.
    first: Result<Done, String>,
    resend: Option<Result<Done, String>>,
}

/// What the clients saw besides their outcomes.
#[derive(Default)]
struct ClientLog {
    /// Errors by kind (`Store/Backend`, `Timeout`, ...).
    errors: Mutex<BTreeMap<String, u64>>,
    /// Panics that came out of a dispatch into the caller's task.
    panics: Mutex<Vec<String>>,
    /// `Error::Stopped` while the runtime ran.
    stopped: Mutex<Vec<String>>,
}

fn identify<'a, C: Route>(
    builder: CommandBuilder<'a, C>,
    identity: &Identity,
) -> CommandBuilder<'a, C> {
    match identity {
        Identity::Generated => builder,
        Identity::CommandId(id) => builder.command_id(*id),
        Identity::Key(key) => builder.idempotency_key(key.clone()),
    }
}

async fn send_once(app: &Evoq, planned: &Planned) -> Result<Done, evoq::Error> {
    match &planned.op {
        Op::Jot { journal, kinds, n } => {
            let jot = Jot {
                id: journal.clone(),
                kinds: kinds.clone(),
                n: *n,
            };
            identify(app.command(jot), &planned.identity)
                .dispatch()
                .await
                .map(|done| Done::of(&done))
        }
        Op::Place { order, fail_at } => identify(
            app.command(PlaceOrder {
                order: order.clone(),
                fail_at: *fail_at,
            }),
            &planned.identity,
        )
        .dispatch()
        .await
        .map(|done| Done::of(&done)),
    }
}

/// Sends `planned` as a client would: a command it can resend (it has an id or a key) up to
/// [`CLIENT_ATTEMPTS`] times with the same identity, any other once.
async fn send(app: &Evoq, planned: &Planned, log: &ClientLog) -> Result<Done, String> {
    let attempts = match planned.identity {
        Identity::Generated => 1,
        _ => CLIENT_ATTEMPTS,
    };
    let mut last = String::new();
    for attempt in 1..=attempts {
        match CatchUnwind(Box::pin(send_once(app, planned))).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(error)) => {
                let kind = error_kind(&error);
                *log.errors.lock().unwrap().entry(kind).or_default() += 1;
                if matches!(error, evoq::Error::Stopped { .. }) {
                    log.stopped
                        .lock()
                        .unwrap()
                        .push(format!("{planned:?}: {error}"));
                }
                last = error.to_string();
            }
            Err(panic) => {
                log.panics
                    .lock()
                    .unwrap()
                    .push(format!("{planned:?}: {panic}"));
                last = format!("panicked: {panic}");
            }
        }
        tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)))).await;
    }
    Err(last)
}

/// `Store/Backend`, `Timeout`, ...: the error's variant (and the store error's).
fn error_kind(error: &evoq::Error) -> String {
    let debug = format!("{error:?}");
    let mut words = debug
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty());
    let first = words.next().unwrap_or("?").to_owned();
    match (first.as_str(), words.next()) {
        ("Store", Some(inner)) => format!("Store/{inner}"),
        _ => first,
    }
}

async fn client(
    app: Evoq,
    plan: Arc<Vec<Planned>>,
    next: Arc<AtomicUsize>,
    outcomes: Arc<Mutex<Vec<Option<Outcome>>>>,
    log: Arc<ClientLog>,
) {
    loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(planned) = plan.get(i) else {
            return;
        };
        let first = send(&app, planned, &log).await;
        let resend = match (&first, planned.resend) {
            (Ok(_), true) => Some(send(&app, planned, &log).await),
            _ => None,
        };
        outcomes.lock().unwrap()[i] = Some(Outcome { first, resend });
    }
}

/// A future whose panic becomes an `Err` with the panic's message.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned()))),
        }
    }
}

// ----- what the store holds -----

/// Violations by kind, each with its details, so that a failing seed lists everything it found
/// without drowning the causes in their consequences.
#[derive(Default)]
struct Violations(BTreeMap<String, Vec<String>>);

impl Violations {
    fn add(&mut self, kind: impl Into<String>, detail: String) {
        self.0.entry(kind.into()).or_default().push(detail);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn report(&self) -> String {
        const SHOWN: usize = 5;
        let mut out = String::new();
        for (kind, details) in &self.0 {
            let _ = writeln!(out, "- {kind} ({}):", details.len());
            // The causes are listed whole, their consequences cut short.
            let shown = if kind.starts_with("(likely cause)") {
                details.len()
            } else {
                SHOWN
            };
            for detail in details.iter().take(shown) {
                let _ = writeln!(out, "    {detail}");
            }
            if details.len() > shown {
                let _ = writeln!(out, "    ... and {} more", details.len() - shown);
            }
        }
        out
    }
}

/// Every event of the store, read without faults.
async fn all_events(store: &dyn EventStore) -> Vec<Arc<RecordedEvent>> {
    let head = *store.head().borrow();
    let (mut after, mut events) = (0, Vec::new());
    while after < head {
        let page = store
            .read_all(after, 10_000, &EventFilter::All)
            .await
            .expect("read the log");
        events.extend(page.events);
        if page.scanned_through <= after {
            break;
        }
        after = page.scanned_through;
    }
    events
}

/// The `(id, n)` of an `Alpha`, `Beta` or `Gamma`.
#[derive(Deserialize)]
struct Numbered {
    id: String,
    n: u64,
}

fn numbered(event: &RecordedEvent) -> Numbered {
    serde_json::from_slice(&event.data).expect("an Alpha, Beta or Gamma")
}

// ----- the run -----

/// Runs the scenario on `seed` and returns every violation found (empty: all promises held).
async fn run(seed: u64) -> Violations {
    quiet_injected_panics();
    let chaos_config = chaos_config();
    let backend = backend();
    let place = Place::new(backend, &format!("fault_suite_{seed}"))
        .await
        .unwrap_or_else(|| panic!("the {backend:?} store is not available"));
    let chaos = Arc::new(ChaosStore::new(place.open().await, seed, chaos_config));
    let born = Instant::now();
    // Started calm (a start that fails is the caller's to retry; not what this suite is about).
    chaos.calm();
    let recorder = Recorder::default();
    let seen = Arc::clone(&recorder.seen);
    let model = InMemoryReadModel::new();
    let app = Evoq::builder()
        .shared_store(Arc::clone(&chaos) as Arc<dyn EventStore>)
        .config(config())
        .handler(recorder)
        .projection(Tallies {
            model: model.clone(),
        })
        .saga_with::<Fulfilment>(HandlerOptions::new().max_attempts(SAGA_ATTEMPTS))
        .start()
        .await
        .expect("the runtime starts");
    let started = Instant::now();
    chaos.storm();

    let plan = Arc::new(plan(seed));
    let outcomes = Arc::new(Mutex::new(vec![None; plan.len()]));
    let log = Arc::new(ClientLog::default());
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(client(
                app.clone(),
                Arc::clone(&plan),
                Arc::clone(&next),
                Arc::clone(&outcomes),
                Arc::clone(&log),
            ))
        })
        .collect();
    for client in clients {
        client.await.expect("a client ends");
    }
    let sent = started.elapsed();
    // The storm goes on while the consumers catch up, so that their delivery meets faults too.
    let consumers = [HANDLER, PROJECTION, SAGA];
    let head = *app.store().head().borrow();
    for name in consumers {
        let left = STORM_DRAIN.saturating_sub(started.elapsed() - sent);
        let _ = app
            .wait_for_named(name, head)
            .timeout(left.max(Duration::from_millis(1)))
            .await;
    }
    let stormed = started.elapsed();
    chaos.calm();
    let calm_at = Instant::now();

    let mut violations = Violations::default();
    drain(&app, &chaos, &consumers, &mut violations).await;
    let drained = calm_at.elapsed();
    let inner = Arc::clone(chaos.inner());
    let events = all_events(&*inner).await;
    let outcomes: Vec<Outcome> = outcomes
        .lock()
        .unwrap()
        .iter()
        .map(|o| o.clone().expect("every planned command was sent"))
        .collect();

    check_clients(&plan, &outcomes, &log, &events, &mut violations);
    check_handler(&app, &seen, &events, &mut violations).await;
    check_projection(&app, &model, &events, &mut violations).await;
    check_saga(&app, seed, &plan, &events, &mut violations).await;
    check_background(&app, &chaos, &plan, &events, &mut violations).await;
    check_faults(&chaos, &mut violations);

    let stats = app.handler_stats();
    app.stop().await;
    drop(place);
    let errors = log.errors.lock().unwrap().clone();
    println!(
        "seed {seed} on {backend:?}: {} commands sent in {sent:?}, storm ended at {stormed:?}, drained in {drained:?} after it, {} events stored, whole run {:?}",
        plan.len(),
        events.len(),
        started.elapsed()
    );
    println!("seed {seed}: errors the clients saw: {errors:?}");
    for s in &stats {
        println!(
            "seed {seed}: {} at {} (lag {}), handled {}, retries {}, dead letters {}, stopped {:?}",
            s.name, s.position, s.lag, s.handled, s.retries, s.dead_letters, s.stopped
        );
    }
    println!("{}", chaos.summary());
    let panics = chaos.injected_panics();
    println!(
        "seed {seed}: {} injected panics (since the store was made; the storm began at {:.3}s):",
        panics.len(),
        (started - born).as_secs_f64(),
    );
    for panic in &panics {
        println!("  {panic}");
    }
    if !violations.is_empty() {
        // What most likely caused them: the panics no `CatchPanic` of the runtime turned into
        // an error.
        for panic in panics.iter().filter(|p| !p.caught_by_runtime()) {
            violations.add(
                "(likely cause) an injected panic no `CatchPanic` of the runtime caught",
                format!("{panic}"),
            );
        }
    }
    violations
}

/// The store under the chaos: in memory, unless `EVOQ_FAULT_SUITE_BACKEND` says `sqlite` or
/// `postgres` (at `EVOQ_TEST_PG_URL`).
fn backend() -> Backend {
    match std::env::var("EVOQ_FAULT_SUITE_BACKEND").as_deref() {
        Err(_) | Ok("memory") => Backend::Memory,
        Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => {
            panic!("EVOQ_FAULT_SUITE_BACKEND is memory, sqlite or postgres, not `{other}`")
        }
    }
}

/// The chaos of the suite: the defaults on every method, minus the panics spared through
/// `EVOQ_FAULT_SUITE_NO_PANICS_IN` (a diagnosis aid).
fn chaos_config() -> ChaosConfig {
    let config = ChaosConfig::default();
    let Ok(spared) = std::env::var("EVOQ_FAULT_SUITE_NO_PANICS_IN") else {
        return config;
    };
    let methods: Vec<Method> = spared
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            Method::from_name(name).unwrap_or_else(|| panic!("no store method is named `{name}`"))
        })
        .collect();
    eprintln!(
        "WEAKENED: EVOQ_FAULT_SUITE_NO_PANICS_IN spares {methods:?} from panics; the suite does not inject panics on every method"
    );
    config.panics_in(&methods, 0.0)
}

/// Waits until every consumer has reached the store's head and the head has stayed still
/// (the saga's commands append events it handles in turn) with no saga timeout left, within
/// [`DRAIN`]; a consumer that does not get there is a violation.
async fn drain(app: &Evoq, chaos: &ChaosStore, consumers: &[&str], violations: &mut Violations) {
    let deadline = Instant::now() + DRAIN;
    let (mut quiet, mut last) = (0, u64::MAX);
    loop {
        let head = *app.store().head().borrow();
        let stats = app.handler_stats();
        let behind = stats
            .iter()
            .any(|s| consumers.contains(&s.name.as_str()) && s.position < head);
        let pending = chaos
            .inner()
            .next_timeout(SAGA)
            .await
            .expect("read the timeouts");
        quiet = if head == last && !behind && pending.is_none() {
            quiet + 1
        } else {
            0
        };
        last = head;
        if quiet == 3 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let head = *app.store().head().borrow();
    for &name in consumers {
        let reached = app
            .wait_for_named(name, head)
            .timeout(Duration::from_millis(50))
            .await;
        if let Err(error) = reached {
            let stats = app.handler_stats().into_iter().find(|s| s.name == name);
            violations.add(
                "stalled: a consumer did not reach the head after the calm",
                format!("`{name}`, {DRAIN:?} after the calm: {error}; its stats: {stats:?}"),
            );
        }
    }
    if let Some(next) = chaos.inner().next_timeout(SAGA).await.unwrap() {
        let due = chaos
            .inner()
            .due_timeouts(SAGA, std::time::SystemTime::now(), usize::MAX)
            .await
            .unwrap();
        violations.add("stalled: saga timeouts were not fired", format!(
            "saga timeouts are still stored {DRAIN:?} after the calm ({} due now, the next at {next:?}): the saga's timer does not fire them",
            due.len()
        ));
    }
    for stats in app.handler_stats() {
        if let Some(reason) = &stats.stopped {
            violations.add(
                "stopped: a consumer stopped",
                format!("`{}` stopped: {reason}", stats.name),
            );
        }
    }
}

/// Every success stored exactly once with the id the client was told; failures at most once;
/// resends answered with the first result; no stray events; no panic or `Stopped` at a client.
fn check_clients(
    plan: &[Planned],
    outcomes: &[Outcome],
    log: &ClientLog,
    events: &[Arc<RecordedEvent>],
    violations: &mut Violations,
) {
    // (event type, journal, n) -> the stored events.
    let mut jotted: HashMap<(String, String, u64), Vec<&RecordedEvent>> = HashMap::new();
    let mut placed: HashMap<String, Vec<&RecordedEvent>> = HashMap::new();
    for event in events {
        match &*event.event_type {
            "Alpha" | "Beta" | "Gamma" => {
                let Numbered { id, n } = numbered(event);
                jotted
                    .entry((event.event_type.to_string(), id, n))
                    .or_default()
                    .push(event);
            }
            "OrderPlaced" => {
                let placed_event: OrderPlaced =
                    serde_json::from_slice(&event.data).expect("an OrderPlaced");
                placed.entry(placed_event.order).or_default().push(event);
            }
            _ => {}
        }
    }
    let mut expected = BTreeSet::new();
    for (planned, outcome) in plan.iter().zip(outcomes) {
        // The stored events of this command, one list per event it emits.
        let stored: Vec<(String, Vec<&RecordedEvent>)> = match &planned.op {
            Op::Jot { journal, kinds, n } => kinds
                .iter()
                .zip(*n..)
                .map(|(kind, n)| {
                    let key = (kind.name().to_owned(), journal.clone(), n);
                    expected.insert(key.clone());
                    let found = jotted.get(&key).cloned().unwrap_or_default();
                    (format!("{} {journal} #{n}", kind.name()), found)
                })
                .collect(),
            Op::Place { order, .. } => vec![(
                format!("OrderPlaced {order}"),
                placed.get(order).cloned().unwrap_or_default(),
            )],
        };
        match &outcome.first {
            Ok(done) => {
                if let Identity::CommandId(id) = planned.identity
                    && done.command_id != id
                {
                    violations.add(
                        "client: a success carries another command id than the one given",
                        format!(
                            "{planned:?} succeeded with command id {} instead of its own",
                            done.command_id
                        ),
                    );
                }
                if done.events != stored.len() {
                    violations.add(
                        "client: a success reports another number of events",
                        format!(
                            "{planned:?} succeeded with {} events, expected {}",
                            done.events,
                            stored.len()
                        ),
                    );
                }
                for (what, found) in &stored {
                    if found.len() != 1 {
                        violations.add("client: an event of a command seen to succeed is not stored exactly once", format!(
                            "{what} of a command the client saw succeed ({planned:?}) is stored {} times",
                            found.len()
                        ));
                    }
                    for event in found {
                        if event.metadata.command_id != Some(done.command_id) {
                            violations.add("client: an event is stored with another command id than the client was told", format!(
                                "{what} is stored with command id {:?}, but the client was told {}",
                                event.metadata.command_id, done.command_id
                            ));
                        }
                    }
                }
                let last = stored
                    .last()
                    .and_then(|(_, found)| found.first())
                    .map(|event| event.global_position);
                if stored.iter().all(|(_, found)| found.len() == 1) && done.position != last {
                    violations.add(
                        "client: a success reports another position than its last event's",
                        format!(
                            "{planned:?} was told position {:?}, its last event is at {last:?}",
                            done.position
                        ),
                    );
                }
                if let Some(resend) = &outcome.resend {
                    match resend {
                        Ok(again) if again == done => {}
                        Ok(again) => violations.add("client: a resend did not return the first result", format!(
                            "the resend of {planned:?} returned {again:?}, not the first result {done:?}"
                        )),
                        Err(error) => violations.add("client: a resend of a success failed", format!(
                            "the resend of {planned:?}, which had succeeded, failed {CLIENT_ATTEMPTS} times: {error}"
                        )),
                    }
                }
            }
            Err(error) => {
                if !matches!(planned.identity, Identity::Generated) {
                    violations.add(
                        "client: a keyed command failed every attempt",
                        format!(
                            "{planned:?} failed {CLIENT_ATTEMPTS} times in a row; last: {error}"
                        ),
                    );
                }
                for (what, found) in &stored {
                    if found.len() > 1 {
                        violations.add(
                            "client: an event of a failed command is stored more than once",
                            format!(
                                "{what} of a failed command ({planned:?}) is stored {} times",
                                found.len()
                            ),
                        );
                    }
                }
            }
        }
    }
    for key in jotted.keys() {
        if !expected.contains(key) {
            violations.add(
                "client: a stray event is stored",
                format!("a stray event {key:?} is stored"),
            );
        }
    }
    for panic in log.panics.lock().unwrap().iter() {
        violations.add(
            "client: a store panic reached the caller of a dispatch",
            format!("a store panic reached the caller of a dispatch: {panic}"),
        );
    }
    for stopped in log.stopped.lock().unwrap().iter() {
        violations.add(
            "client: a dispatch failed with `Error::Stopped` while the runtime ran",
            format!("a dispatch failed with `Error::Stopped` while the runtime ran: {stopped}"),
        );
    }
}

/// The dead letters of `name` (the store is calm), by event id.
async fn dead_letters(app: &Evoq, name: &str) -> HashMap<Uuid, evoq::DeadLetter> {
    app.dead_letters(name)
        .list(0, usize::MAX)
        .await
        .expect("list the dead letters")
        .into_iter()
        .map(|entry| (entry.event.event_id, entry))
        .collect()
}

/// Checks that `counted` holds every event of `types` once, except the poison ones, which
/// are dead-lettered (after `MAX_ATTEMPTS` attempts) and not counted.
async fn check_exactly_once(
    app: &Evoq,
    name: &str,
    types: [&str; 2],
    poison: impl Fn(&str, u64) -> bool,
    counted: &HashMap<Uuid, u32>,
    events: &[Arc<RecordedEvent>],
    violations: &mut Violations,
) {
    let letters = dead_letters(app, name).await;
    let mut stored = BTreeSet::new();
    for event in events {
        if !types.contains(&&*event.event_type) {
            continue;
        }
        stored.insert(event.event_id);
        let n = numbered(event).n;
        let seen = counted.get(&event.event_id).copied().unwrap_or(0);
        let what = format!(
            "{} #{n} at {} ({})",
            event.event_type, event.global_position, event.event_id
        );
        if poison(&event.event_type, n) {
            match letters.get(&event.event_id) {
                None => violations.add(format!("`{name}`: a poison event is not dead-lettered"), format!(
                    "`{name}`: the poison {what} is not dead-lettered"
                )),
                Some(letter) if letter.attempts != MAX_ATTEMPTS => violations.add(format!("`{name}`: a dead letter counts other attempts than the deliveries"), format!(
                    "`{name}`: the dead letter of {what} says {} attempts, but it was delivered {MAX_ATTEMPTS} times",
                    letter.attempts
                )),
                Some(_) => {}
            }
            if seen != 0 {
                violations.add(
                    format!("`{name}`: a poison event was counted"),
                    format!("`{name}`: the poison {what} was counted {seen} times"),
                );
            }
        } else {
            if seen != 1 {
                violations.add(
                    format!("`{name}`: an event was not seen exactly once"),
                    format!("`{name}` saw {what} {seen} times, not once"),
                );
            }
            if letters.contains_key(&event.event_id) {
                violations.add(
                    format!("`{name}`: an event that is no poison was dead-lettered"),
                    format!("`{name}` dead-lettered {what}, which is no poison"),
                );
            }
        }
    }
    for id in counted.keys().chain(letters.keys()) {
        if !stored.contains(id) {
            violations.add(format!("`{name}`: an event it saw is not in the store"), format!(
                "`{name}` saw (or dead-lettered) the event {id}, which the store does not hold among its types"
            ));
        }
    }
}

async fn check_handler(
    app: &Evoq,
    seen: &Mutex<HashMap<Uuid, u32>>,
    events: &[Arc<RecordedEvent>],
    violations: &mut Violations,
) {
    let counted = seen.lock().unwrap().clone();
    check_exactly_once(
        app,
        HANDLER,
        ["Alpha", "Beta"],
        |kind, n| kind == "Beta" && handler_poison(n),
        &counted,
        events,
        violations,
    )
    .await;
}

async fn check_projection(
    app: &Evoq,
    model: &InMemoryReadModel,
    events: &[Arc<RecordedEvent>],
    violations: &mut Violations,
) {
    let counted: HashMap<Uuid, u32> = model
        .list::<u32>("seen/")
        .expect("read the model")
        .into_iter()
        .map(|(key, seen)| {
            let id = key.strip_prefix("seen/").expect("the prefix");
            (id.parse().expect("an event id"), seen)
        })
        .collect();
    check_exactly_once(
        app,
        PROJECTION,
        ["Alpha", "Gamma"],
        |kind, n| kind == "Gamma" && projection_poison(n),
        &counted,
        events,
        violations,
    )
    .await;
}

/// Every saga command at most once; exactly once for the orders whose saga was told of no
/// failure but the one planned; every reminder of an order left open fired.
async fn check_saga(
    app: &Evoq,
    seed: u64,
    plan: &[Planned],
    events: &[Arc<RecordedEvent>],
    violations: &mut Violations,
) {
    let mut streams: HashMap<&str, Vec<&str>> = HashMap::new();
    for event in events {
        streams
            .entry(&event.stream_id)
            .or_default()
            .push(&event.event_type);
    }
    let count = |stream: &str, event_type: &str| {
        streams.get(stream).map_or(0, |types| {
            types.iter().filter(|t| **t == event_type).count()
        })
    };
    let failures = SAGA_FAILURES.lock().unwrap().clone();
    let letters = dead_letters(app, SAGA).await;
    for letter in letters.values() {
        violations.add(
            "saga: an event was dead-lettered",
            format!(
                "gave up {} at {} after {} attempts of injected faults: {}",
                letter.event.event_type,
                letter.event.global_position,
                letter.attempts,
                letter.error
            ),
        );
    }
    let prefix = format!("s{seed}-");
    for planned in plan {
        let Op::Place { order, fail_at } = &planned.op else {
            continue;
        };
        if count(&format!("Order-{order}"), "OrderPlaced") == 0 {
            continue;
        }
        let step = |k: u8| format!("Step-{order}.{k}");
        let notice = |channel: &str| count(&format!("Notice-{order}.{channel}"), "Notified");
        let overdue = count(&format!("saga.{SAGA}-{order}"), "PaymentOverdue");
        let closed = count(&format!("Order-{order}"), "OrderClosed");
        let mut seen = Vec::new();
        let mut at_most_once = |what: String, n: usize| {
            if n > 1 {
                violations.add(
                    "saga: a command took effect more than once",
                    format!("{what} of order {order} is stored {n} times"),
                );
            }
            seen.push((what, n));
        };
        for k in 1..=3 {
            at_most_once(format!("StepDone {k}"), count(&step(k), "StepDone"));
            at_most_once(format!("StepUndone {k}"), count(&step(k), "StepUndone"));
        }
        at_most_once("OrderClosed".into(), closed);
        for channel in ["email", "sms", "overdue"] {
            at_most_once(format!("Notified {channel}"), notice(channel));
        }
        at_most_once("PaymentOverdue".into(), overdue);
        for k in 1..=3 {
            if count(&step(k), "StepUndone") > count(&step(k), "StepDone") {
                violations.add(
                    "saga: a step is undone but was never done",
                    format!("step {k} of order {order} is undone but was never done"),
                );
            }
        }
        // Exactly once, unless the saga was told of a failure it did not plan.
        let planned_failure = fail_at.map(|k| format!("RunStep {order}.{k}: "));
        let unplanned: Vec<&String> = failures
            .iter()
            .filter(|(instance, _)| instance == order)
            .map(|(_, failure)| failure)
            .filter(|failure| {
                planned_failure
                    .as_ref()
                    .is_none_or(|planned| !failure.starts_with(planned))
            })
            .collect();
        if !unplanned.is_empty() || !order.starts_with(&prefix) {
            continue;
        }
        // A closed order's instance is removed; a failed one's stays, waiting for a close.
        let live = app
            .saga_state::<Fulfilment>(order)
            .await
            .expect("read the saga's state")
            .is_some();
        // What the store holds of the order, in order: `position type stream`.
        let story = || {
            let own = format!("-{order}");
            let part = format!("-{order}.");
            events
                .iter()
                .filter(|e| e.stream_id.ends_with(&own) || e.stream_id.contains(&part))
                .map(|e| format!("{} {} {}", e.global_position, e.event_type, e.stream_id))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut expect = |what: &str, found: usize, wanted: usize| {
            if found != wanted {
                violations.add("saga: a command the saga was not told failed did not take effect exactly once (or one took effect that should not)", format!(
                    "order {order} (fail at {fail_at:?}, no failure reported to the saga) has {what} {found} times, expected {wanted}; the store holds: {}",
                    story()
                ));
            }
        };
        match fail_at {
            None => {
                for k in 1..=3 {
                    expect(&format!("StepDone {k}"), count(&step(k), "StepDone"), 1);
                    expect(&format!("StepUndone {k}"), count(&step(k), "StepUndone"), 0);
                }
                expect("OrderClosed", closed, 1);
                expect("Notified email", notice("email"), 1);
                expect("Notified sms", notice("sms"), 1);
                expect("a saga instance", usize::from(live), 0);
                if notice("overdue") > overdue {
                    violations.add(
                        "saga: an order was reminded without its reminder firing",
                        format!("order {order} was reminded without its reminder firing"),
                    );
                }
            }
            Some(fail) => {
                for k in 1..=3 {
                    let done = usize::from(k < *fail);
                    expect(&format!("StepDone {k}"), count(&step(k), "StepDone"), done);
                }
                expect("OrderClosed", closed, 0);
                expect("Notified email", notice("email"), 0);
                expect("Notified sms", notice("sms"), 0);
                // The instance never stops: its reminder fires, once.
                expect("PaymentOverdue", overdue, 1);
                expect("Notified overdue", notice("overdue"), 1);
                expect("a saga instance", usize::from(live), 1);
            }
        }
    }
}

/// The tasks that are not consumers: idle instances leave memory (the idle timers run), the
/// command-log sweeper and the saga's timer keep calling the store. And the state of every
/// journal (rebuilt from snapshots, thawed, caught up after ambiguous commits) counts the
/// events its stream holds.
async fn check_background(
    app: &Evoq,
    chaos: &ChaosStore,
    plan: &[Planned],
    events: &[Arc<RecordedEvent>],
    violations: &mut Violations,
) {
    let journals: BTreeSet<String> = plan
        .iter()
        .filter_map(|p| match &p.op {
            Op::Jot { journal, .. } => Some(journal.clone()),
            Op::Place { .. } => None,
        })
        .collect();
    let mut stored: HashMap<&str, u64> = HashMap::new();
    for event in events {
        if ["Alpha", "Beta", "Gamma"].contains(&&*event.event_type) {
            *stored.entry(&event.stream_id).or_default() += 1;
        }
    }
    // One last command per journal (calm), which also sets every idle timer again: an
    // instance whose last command failed would otherwise wait the 5 minutes after an error.
    let counts: Vec<_> = journals
        .iter()
        .map(|journal| {
            let (app, id) = (app.clone(), journal.clone());
            let count = async move { app.dispatch(Count { id }).await };
            (journal, tokio::spawn(CatchUnwind(Box::pin(count))))
        })
        .collect();
    for (journal, count) in counts {
        match count.await.expect("the count's task") {
            Ok(Ok(done)) => {
                let stream = format!("Journal-{journal}");
                let expected = stored.get(stream.as_str()).copied().unwrap_or(0);
                match done.events.as_slice() {
                    [JournalEvent::Counted(counted)] if counted.seen == expected => {}
                    other => violations.add(
                        "client: a journal's state does not count the events of its stream",
                        format!(
                            "journal {journal} holds {expected} events, its state says {other:?}"
                        ),
                    ),
                }
            }
            Ok(Err(error)) => violations.add(
                "stalled: a command after the calm failed",
                format!("a command to journal {journal} after the calm failed: {error}"),
            ),
            Err(panic) => violations.add(
                "stalled: a command after the calm panicked",
                format!("a command to journal {journal} after the calm panicked: {panic}"),
            ),
        }
    }
    let deadline = Instant::now() + IDLE_TIMEOUT * 12;
    loop {
        let stats = app.aggregate_stats::<Journal>();
        if stats.live + stats.hibernated == 0 {
            break;
        }
        if Instant::now() > deadline {
            violations.add("stalled: idle aggregates stay in memory", format!(
                "{} journals are still in memory {:?} after their idle timeout of {IDLE_TIMEOUT:?} (the idle timer does not run?): {stats:?}",
                stats.live + stats.hibernated,
                IDLE_TIMEOUT * 11
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (method, within, task) in [
        (
            Method::SweepCommands,
            COMMAND_LOG_SWEEP * 10,
            "the command-log sweeper",
        ),
        (
            Method::DueTimeouts,
            Duration::from_millis(2_500),
            "the saga's timer",
        ),
    ] {
        let before = chaos.faults(method).calls;
        let deadline = Instant::now() + within;
        while chaos.faults(method).calls == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if chaos.faults(method).calls == before {
            violations.add(
                "stalled: a background task stopped calling the store",
                format!("{task} made no `{method}` call in {within:?} after the calm"),
            );
        }
    }
}

/// The faults really happened: errors and panics, before and after the inner call, on the
/// methods called often.
fn check_faults(chaos: &ChaosStore, violations: &mut Violations) {
    let total = chaos.total();
    for (what, n) in [
        ("errors before the inner call", total.errors_before),
        ("errors after the inner call", total.errors_after),
        ("panics before the inner call", total.panics_before),
        ("panics after the inner call", total.panics_after),
        ("sleeps", total.delays),
    ] {
        if n == 0 {
            violations.add(
                "chaos: a kind of fault was never injected",
                format!("no {what} were injected"),
            );
        }
    }
    for method in Method::ALL {
        let counts = chaos.faults(method);
        if counts.stormy >= 400 && counts.errors() == 0 {
            violations.add(
                "chaos: a method called often never failed",
                format!(
                    "`{method}` was called {} times in the storm without an injected error",
                    counts.stormy
                ),
            );
        }
    }
    for method in [Method::AppendCommand, Method::ReadAll] {
        if chaos.faults(method).faults() == 0 {
            violations.add(
                "chaos: a method was never faulted",
                format!("no fault was injected into `{method}`"),
            );
        }
    }
}

async fn assert_promises_hold(seed: u64) {
    let violations = run(seed).await;
    assert!(
        violations.is_empty(),
        "seed {seed}: promises broken under injected faults (the injected panics' messages start with `{PANIC_PREFIX}`):\n{}",
        violations.report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_1_no_command_is_lost_or_applied_twice_and_no_task_stalls_under_store_faults() {
    assert_promises_hold(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_2_no_command_is_lost_or_applied_twice_and_no_task_stalls_under_store_faults() {
    assert_promises_hold(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_3_no_command_is_lost_or_applied_twice_and_no_task_stalls_under_store_faults() {
    assert_promises_hold(3).await;
}
