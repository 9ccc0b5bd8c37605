//! A seeded fault-injecting wrapper over any event store: latency, transient errors and panics
//! on every method of [`EventStore`], at configurable rates, the same for the same seed.
//!
//! [`ChaosStore`] decides each call's fate from the seed, the method and the call's number
//! among that method's calls (a counter-based generator, splitmix64), so the `k`-th call of a
//! method always meets the same fate, whatever the interleaving of the others (which caller
//! makes the `k`-th call is up to the scheduler). Faults:
//!
//! - **latency**: a sleep of up to [`ChaosConfig::max_latency`] before the inner call;
//! - **transient errors**: [`StoreError::Backend`] (the variant that says "the operation may be
//!   retried"), with `backend: "chaos"`;
//! - **panics**, with a message that starts with [`PANIC_PREFIX`].
//!
//! An error or a panic comes either *before* the inner call (nothing happened) or *after* it
//! (it took effect, but the caller sees the fault): on `append` / `append_command` that is the
//! ambiguous commit, on the other writes a save or delete that happened although it failed.
//! [`ChaosStore::calm`] turns every fault off (to let the runtime drain), and every injected
//! fault is counted per method ([`ChaosStore::faults`]); every injected panic is logged with
//! the runtime's functions on the stack ([`ChaosStore::injected_panics`]), which tells the
//! task it hit.
//!
//! `head` (a synchronous watch accessor) and `is_shared` pass through untouched.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use evoq::store::memory::InMemoryStore;
use evoq::store::{
    AllPage, Appended, CommandLookup, CommandRecord, DeadLetter, Direction, EventFilter,
    HandlerRequest, Lease, NewCommand, Snapshot, Timeout,
};
use evoq::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError};
use tokio::sync::watch;

/// How every injected panic's message starts (see [`quiet_injected_panics`]).
pub const PANIC_PREFIX: &str = "chaos store: injected panic";

/// The methods of [`EventStore`] the chaos store injects faults into (every `async` one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Append,
    AppendCommand,
    FindCommand,
    SweepCommands,
    ReadStream,
    StreamVersion,
    ReadAll,
    SaveSnapshot,
    LoadSnapshot,
    SaveCheckpoint,
    LoadCheckpoint,
    SaveDeadLetter,
    ListDeadLetters,
    LoadDeadLetter,
    DeleteDeadLetter,
    SaveRequest,
    ListRequests,
    LoadRequest,
    DeleteRequest,
    SaveSagaState,
    LoadSagaState,
    DeleteSagaState,
    ListSagaInstances,
    ScheduleTimeout,
    DueTimeouts,
    NextTimeout,
    DeleteTimeout,
    CancelTimeouts,
    Flush,
    TryLease,
}

impl Method {
    /// Every method, in the trait's order.
    pub const ALL: [Method; 30] = [
        Method::Append,
        Method::AppendCommand,
        Method::FindCommand,
        Method::SweepCommands,
        Method::ReadStream,
        Method::StreamVersion,
        Method::ReadAll,
        Method::SaveSnapshot,
        Method::LoadSnapshot,
        Method::SaveCheckpoint,
        Method::LoadCheckpoint,
        Method::SaveDeadLetter,
        Method::ListDeadLetters,
        Method::LoadDeadLetter,
        Method::DeleteDeadLetter,
        Method::SaveRequest,
        Method::ListRequests,
        Method::LoadRequest,
        Method::DeleteRequest,
        Method::SaveSagaState,
        Method::LoadSagaState,
        Method::DeleteSagaState,
        Method::ListSagaInstances,
        Method::ScheduleTimeout,
        Method::DueTimeouts,
        Method::NextTimeout,
        Method::DeleteTimeout,
        Method::CancelTimeouts,
        Method::Flush,
        Method::TryLease,
    ];

    /// The trait method's name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Append => "append",
            Method::AppendCommand => "append_command",
            Method::FindCommand => "find_command",
            Method::SweepCommands => "sweep_commands",
            Method::ReadStream => "read_stream",
            Method::StreamVersion => "stream_version",
            Method::ReadAll => "read_all",
            Method::SaveSnapshot => "save_snapshot",
            Method::LoadSnapshot => "load_snapshot",
            Method::SaveCheckpoint => "save_checkpoint",
            Method::LoadCheckpoint => "load_checkpoint",
            Method::SaveDeadLetter => "save_dead_letter",
            Method::ListDeadLetters => "list_dead_letters",
            Method::LoadDeadLetter => "load_dead_letter",
            Method::DeleteDeadLetter => "delete_dead_letter",
            Method::SaveRequest => "save_request",
            Method::ListRequests => "list_requests",
            Method::LoadRequest => "load_request",
            Method::DeleteRequest => "delete_request",
            Method::SaveSagaState => "save_saga_state",
            Method::LoadSagaState => "load_saga_state",
            Method::DeleteSagaState => "delete_saga_state",
            Method::ListSagaInstances => "list_saga_instances",
            Method::ScheduleTimeout => "schedule_timeout",
            Method::DueTimeouts => "due_timeouts",
            Method::NextTimeout => "next_timeout",
            Method::DeleteTimeout => "delete_timeout",
            Method::CancelTimeouts => "cancel_timeouts",
            Method::Flush => "flush",
            Method::TryLease => "try_lease",
        }
    }

    /// The method of this trait name, if any.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The chance, per call, of each kind of fault (each between 0 and 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// A transient error ([`StoreError::Backend`]).
    pub error: f64,
    /// A panic.
    pub panic: f64,
    /// A sleep of up to [`ChaosConfig::max_latency`] before the call.
    pub latency: f64,
}

impl Rates {
    /// No fault at all.
    pub const NONE: Rates = Rates {
        error: 0.0,
        panic: 0.0,
        latency: 0.0,
    };
}

/// What a [`ChaosStore`] injects. The default: 2 % errors, 0.5 % panics, a sleep of up to 3 ms
/// on 10 % of the calls, on every method; half of the errors and panics come after the inner
/// call (it took effect).
#[derive(Clone, Debug, PartialEq)]
pub struct ChaosConfig {
    /// The rates of every method without an override.
    pub rates: Rates,
    /// Rates of single methods, winning over `rates` (the last one given for a method wins).
    pub overrides: Vec<(Method, Rates)>,
    /// The longest injected sleep.
    pub max_latency: Duration,
    /// The share of errors and panics injected after the inner call rather than before.
    pub after_share: f64,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            rates: Rates {
                error: 0.02,
                panic: 0.005,
                latency: 0.10,
            },
            overrides: Vec::new(),
            max_latency: Duration::from_millis(3),
            after_share: 0.5,
        }
    }
}

impl ChaosConfig {
    /// The default rates (see [`ChaosConfig`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// No fault on any method (add some with the other builders).
    pub fn none() -> Self {
        ChaosConfig {
            rates: Rates::NONE,
            ..Self::default()
        }
    }

    /// The error rate of every method without an override.
    pub fn errors(mut self, rate: f64) -> Self {
        self.rates.error = check_rate(rate);
        self
    }

    /// The panic rate of every method without an override.
    pub fn panics(mut self, rate: f64) -> Self {
        self.rates.panic = check_rate(rate);
        self
    }

    /// The latency rate of every method without an override, and the longest sleep.
    pub fn latency(mut self, rate: f64, max: Duration) -> Self {
        self.rates.latency = check_rate(rate);
        self.max_latency = max;
        self
    }

    /// The share of errors and panics injected after the inner call (0: all before, 1: all
    /// after).
    pub fn after_share(mut self, share: f64) -> Self {
        self.after_share = check_rate(share);
        self
    }

    /// The error rate of `methods`.
    pub fn errors_in(self, methods: &[Method], rate: f64) -> Self {
        let rate = check_rate(rate);
        self.override_each(methods, |rates| rates.error = rate)
    }

    /// The panic rate of `methods`.
    pub fn panics_in(self, methods: &[Method], rate: f64) -> Self {
        let rate = check_rate(rate);
        self.override_each(methods, |rates| rates.panic = rate)
    }

    /// The latency rate of `methods`.
    pub fn latency_in(self, methods: &[Method], rate: f64) -> Self {
        let rate = check_rate(rate);
        self.override_each(methods, |rates| rates.latency = rate)
    }

    /// The rates that apply to `method`.
    pub fn rates_of(&self, method: Method) -> Rates {
        self.overrides
            .iter()
            .rev()
            .find(|(m, _)| *m == method)
            .map_or(self.rates, |(_, rates)| *rates)
    }

    fn override_each(mut self, methods: &[Method], set: impl Fn(&mut Rates)) -> Self {
        for &method in methods {
            let mut rates = self.rates_of(method);
            set(&mut rates);
            self.overrides.push((method, rates));
        }
        self
    }
}

fn check_rate(rate: f64) -> f64 {
    assert!(
        (0.0..=1.0).contains(&rate),
        "a rate is within 0..=1: {rate}"
    );
    rate
}

/// A small deterministic generator: splitmix64. Also what the chaos store draws from.
#[derive(Clone, Debug)]
pub struct ChaosRng(u64);

impl ChaosRng {
    pub fn new(seed: u64) -> Self {
        ChaosRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What was injected into one method (or into all, summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Calls, calm or not.
    pub calls: u64,
    /// Calls while the store was not calm (those that may meet a fault).
    pub stormy: u64,
    /// Injected sleeps.
    pub delays: u64,
    /// Errors returned without calling the inner store.
    pub errors_before: u64,
    /// Errors returned after the inner call (which took effect, or failed on its own).
    pub errors_after: u64,
    /// Panics before the inner call.
    pub panics_before: u64,
    /// Panics after the inner call.
    pub panics_after: u64,
}

impl FaultCounts {
    /// Injected errors.
    pub fn errors(&self) -> u64 {
        self.errors_before + self.errors_after
    }

    /// Injected panics.
    pub fn panics(&self) -> u64 {
        self.panics_before + self.panics_after
    }

    /// Injected errors and panics (not sleeps).
    pub fn faults(&self) -> u64 {
        self.errors() + self.panics()
    }

    fn add(&mut self, other: &FaultCounts) {
        self.calls += other.calls;
        self.stormy += other.stormy;
        self.delays += other.delays;
        self.errors_before += other.errors_before;
        self.errors_after += other.errors_after;
        self.panics_before += other.panics_before;
        self.panics_after += other.panics_after;
    }
}

/// The counters of one method.
#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    stormy: AtomicU64,
    delays: AtomicU64,
    errors_before: AtomicU64,
    errors_after: AtomicU64,
    panics_before: AtomicU64,
    panics_after: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> FaultCounts {
        FaultCounts {
            calls: self.calls.load(Ordering::Relaxed),
            stormy: self.stormy.load(Ordering::Relaxed),
            delays: self.delays.load(Ordering::Relaxed),
            errors_before: self.errors_before.load(Ordering::Relaxed),
            errors_after: self.errors_after.load(Ordering::Relaxed),
            panics_before: self.panics_before.load(Ordering::Relaxed),
            panics_after: self.panics_after.load(Ordering::Relaxed),
        }
    }
}

/// The fate of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    Error,
    Panic,
}

/// A fault to inject once the inner call returned.
#[must_use]
struct After {
    fault: Fault,
    method: Method,
    call: u64,
}

/// An [`EventStore`] that injects seeded faults into another (see the module docs).
pub struct ChaosStore {
    inner: Arc<dyn EventStore>,
    seed: u64,
    config: ChaosConfig,
    /// The rates of each method, resolved once.
    rates: [Rates; Method::ALL.len()],
    calm: AtomicBool,
    counters: [Counters; Method::ALL.len()],
    /// When the store was made: the injected panics are logged against it.
    born: std::time::Instant,
    /// The injected panics, in order (at most [`PANIC_LOG`]).
    panics: std::sync::Mutex<Vec<InjectedPanic>>,
}

/// How many injected panics [`ChaosStore::injected_panics`] keeps.
const PANIC_LOG: usize = 1_000;

impl ChaosStore {
    /// Injects faults into `inner` as `config` says, drawn from `seed`.
    pub fn new(inner: Arc<dyn EventStore>, seed: u64, config: ChaosConfig) -> Self {
        ChaosStore {
            inner,
            seed,
            rates: Method::ALL.map(|method| config.rates_of(method)),
            config,
            calm: AtomicBool::new(false),
            counters: Default::default(),
            born: std::time::Instant::now(),
            panics: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Over a new [`InMemoryStore`].
    pub fn in_memory(seed: u64, config: ChaosConfig) -> Self {
        Self::new(Arc::new(InMemoryStore::new()), seed, config)
    }

    /// The store the faults are injected into.
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn config(&self) -> &ChaosConfig {
        &self.config
    }

    /// Turns every fault (and sleep) off; calls still count.
    pub fn calm(&self) {
        self.calm.store(true, Ordering::SeqCst);
    }

    /// Turns the faults back on.
    pub fn storm(&self) {
        self.calm.store(false, Ordering::SeqCst);
    }

    pub fn is_calm(&self) -> bool {
        self.calm.load(Ordering::SeqCst)
    }

    /// What was injected into `method` so far.
    pub fn faults(&self, method: Method) -> FaultCounts {
        self.counters[method.index()].snapshot()
    }

    /// What was injected into every method so far, summed.
    pub fn total(&self) -> FaultCounts {
        let mut total = FaultCounts::default();
        for method in Method::ALL {
            total.add(&self.faults(method));
        }
        total
    }

    /// Every panic injected so far (the first `PANIC_LOG`), in order.
    pub fn injected_panics(&self) -> Vec<InjectedPanic> {
        self.panics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A table of the calls and faults of every method that was called.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "chaos store, seed {}: {:<20} {:>7} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7}\n",
            self.seed,
            "method",
            "calls",
            "stormy",
            "sleeps",
            "err-bef",
            "err-aft",
            "pan-bef",
            "pan-aft"
        );
        let pad = " ".repeat(format!("chaos store, seed {}: ", self.seed).len());
        for method in Method::ALL {
            let c = self.faults(method);
            if c.calls == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "{pad}{:<20} {:>7} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7}",
                method.name(),
                c.calls,
                c.stormy,
                c.delays,
                c.errors_before,
                c.errors_after,
                c.panics_before,
                c.panics_after
            );
        }
        out
    }

    /// The fate of call number `call` of `method`: (fault, after the inner call, sleep).
    fn fate(&self, method: Method, call: u64) -> (Fault, bool, Option<Duration>) {
        let rates = self.rates[method.index()];
        let mut rng = ChaosRng::new(
            mix(self.seed ^ mix((method.index() as u64 + 1) << 40)) ^ mix(call.wrapping_add(1)),
        );
        let draw = rng.unit();
        let fault = if draw < rates.panic {
            Fault::Panic
        } else if draw < rates.panic + rates.error {
            Fault::Error
        } else {
            Fault::None
        };
        let after = rng.chance(self.config.after_share);
        let sleep = rng.chance(rates.latency).then(|| {
            let max = self.config.max_latency.as_micros() as u64;
            Duration::from_micros(if max == 0 { 0 } else { rng.below(max + 1) })
        });
        (fault, after, sleep)
    }

    /// Counts the call, sleeps if it is its fate, injects a fault due before the inner call,
    /// and returns the one due after it.
    async fn before(&self, method: Method) -> Result<After, StoreError> {
        let counters = &self.counters[method.index()];
        let call = counters.calls.fetch_add(1, Ordering::Relaxed);
        if self.is_calm() {
            return Ok(After {
                fault: Fault::None,
                method,
                call,
            });
        }
        counters.stormy.fetch_add(1, Ordering::Relaxed);
        let (fault, after, sleep) = self.fate(method, call);
        if let Some(sleep) = sleep {
            counters.delays.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(sleep).await;
        }
        if after {
            return Ok(After {
                fault,
                method,
                call,
            });
        }
        match fault {
            Fault::None => {}
            Fault::Error => {
                counters.errors_before.fetch_add(1, Ordering::Relaxed);
                return Err(self.error(method, call, false));
            }
            Fault::Panic => {
                counters.panics_before.fetch_add(1, Ordering::Relaxed);
                self.panic(method, call, false);
            }
        }
        Ok(After {
            fault: Fault::None,
            method,
            call,
        })
    }

    /// Injects the fault `after` holds into the inner call's `result`.
    fn after<T>(&self, after: After, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let After {
            fault,
            method,
            call,
        } = after;
        if fault == Fault::None || self.is_calm() {
            return result;
        }
        let counters = &self.counters[method.index()];
        match fault {
            Fault::None => result,
            Fault::Error => {
                counters.errors_after.fetch_add(1, Ordering::Relaxed);
                Err(self.error(method, call, true))
            }
            Fault::Panic => {
                counters.panics_after.fetch_add(1, Ordering::Relaxed);
                self.panic(method, call, true)
            }
        }
    }

    fn error(&self, method: Method, call: u64, after: bool) -> StoreError {
        StoreError::Backend {
            backend: "chaos",
            message: format!(
                "injected failure in `{method}` (seed {}, call #{call}, {})",
                self.seed,
                when(after)
            ),
        }
    }

    fn panic(&self, method: Method, call: u64, after: bool) -> ! {
        {
            let mut log = self.panics.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() < PANIC_LOG {
                log.push(InjectedPanic {
                    at: self.born.elapsed(),
                    method,
                    call,
                    after,
                    frames: runtime_frames(),
                });
            }
        }
        panic!(
            "{PANIC_PREFIX} in `{method}` (seed {}, call #{call}, {})",
            self.seed,
            when(after)
        )
    }
}

/// One injected panic, and where in the runtime it hit.
#[derive(Clone, Debug)]
pub struct InjectedPanic {
    /// When, since the store was made.
    pub at: Duration,
    pub method: Method,
    /// The call's number among the method's calls (the same for the same seed).
    pub call: u64,
    /// After the inner call (it took effect) rather than before.
    pub after: bool,
    /// The runtime's functions on the stack, innermost first (from a captured backtrace:
    /// `delivery::task::Task::save`, ..., `delivery::task::Task::run`).
    pub frames: Vec<String>,
}

impl InjectedPanic {
    /// Whether a `CatchPanic` of the runtime was on the stack, which turns the panic into an
    /// error. Without one, the panic ends the task it hit (a handler's, a timer's, an idle
    /// timer's) or reaches the caller (of a dispatch, ...). A diagnosis aid: it reads the
    /// names of the runtime's internals.
    pub fn caught_by_runtime(&self) -> bool {
        self.frames
            .iter()
            .any(|f| f.starts_with("util::panic::CatchPanic"))
    }

    /// The outermost runtime function on the stack: the task (or the API call) it hit.
    pub fn root(&self) -> &str {
        self.frames
            .last()
            .map_or("no runtime frame", String::as_str)
    }
}

impl fmt::Display for InjectedPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frames = match self.frames.len() {
            0 => "no runtime frame (a call of the test's own)".to_owned(),
            1..=5 => self.frames.join(" < "),
            n => format!(
                "{} < ... < {}",
                self.frames[..3].join(" < "),
                self.frames[n - 2..].join(" < ")
            ),
        };
        write!(
            f,
            "{:>7.3}s `{}` call #{} ({}): {frames}",
            self.at.as_secs_f64(),
            self.method,
            self.call,
            if self.after { "after" } else { "before" },
        )
    }
}

/// The runtime's functions on the stack, innermost first.
fn runtime_frames() -> Vec<String> {
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    let mut frames: Vec<String> = Vec::new();
    for line in trace.lines() {
        let Some((number, name)) = line.trim().split_once(": ") else {
            continue;
        };
        if number.parse::<u32>().is_err() {
            continue;
        }
        let name = name.replace("::{{closure}}", "");
        let name = name.trim_start_matches('<');
        let Some(path) = name.strip_prefix("evoq_runtime::") else {
            continue;
        };
        let path = path.split(" as ").next().unwrap_or(path).to_owned();
        if frames.last() != Some(&path) {
            frames.push(path);
        }
    }
    frames
}

fn when(after: bool) -> &'static str {
    if after {
        "after the inner call, which took effect"
    } else {
        "before the inner call"
    }
}

/// Installs a panic hook that prints nothing for the chaos store's injected panics (there are
/// hundreds in a run) and defers to the previous hook for every other panic. Once per process.
pub fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.starts_with(PANIC_PREFIX) {
                previous(info);
            }
        }));
    });
}

/// One call through the chaos: faults before, the inner call, faults after.
macro_rules! chaos {
    ($self:ident, $method:expr, $call:expr) => {{
        let after = $self.before($method).await?;
        let result = $call.await;
        $self.after(after, result)
    }};
}

#[async_trait]
impl EventStore for ChaosStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        chaos!(
            self,
            Method::Append,
            self.inner.append(stream, expected, events)
        )
    }

    async fn append_command(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: NewCommand,
    ) -> Result<Appended, StoreError> {
        chaos!(
            self,
            Method::AppendCommand,
            self.inner.append_command(stream, expected, events, command)
        )
    }

    async fn find_command(
        &self,
        lookup: CommandLookup<'_>,
        since: SystemTime,
    ) -> Result<Option<CommandRecord>, StoreError> {
        chaos!(
            self,
            Method::FindCommand,
            self.inner.find_command(lookup, since)
        )
    }

    async fn sweep_commands(&self, before: SystemTime, limit: usize) -> Result<usize, StoreError> {
        chaos!(
            self,
            Method::SweepCommands,
            self.inner.sweep_commands(before, limit)
        )
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        chaos!(
            self,
            Method::ReadStream,
            self.inner.read_stream(stream, from, direction, max_count)
        )
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        chaos!(
            self,
            Method::StreamVersion,
            self.inner.stream_version(stream)
        )
    }

    async fn read_all(
        &self,
        after: u64,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<AllPage, StoreError> {
        chaos!(
            self,
            Method::ReadAll,
            self.inner.read_all(after, max_count, filter)
        )
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.inner.head()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        chaos!(
            self,
            Method::SaveSnapshot,
            self.inner.save_snapshot(snapshot)
        )
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        chaos!(self, Method::LoadSnapshot, self.inner.load_snapshot(stream))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        chaos!(
            self,
            Method::SaveCheckpoint,
            self.inner.save_checkpoint(name, position)
        )
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        chaos!(
            self,
            Method::LoadCheckpoint,
            self.inner.load_checkpoint(name)
        )
    }

    async fn save_dead_letter(&self, entry: DeadLetter) -> Result<(), StoreError> {
        chaos!(
            self,
            Method::SaveDeadLetter,
            self.inner.save_dead_letter(entry)
        )
    }

    async fn list_dead_letters(
        &self,
        handler: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        chaos!(
            self,
            Method::ListDeadLetters,
            self.inner.list_dead_letters(handler, after, limit)
        )
    }

    async fn load_dead_letter(
        &self,
        handler: &str,
        event_id: uuid::Uuid,
    ) -> Result<Option<DeadLetter>, StoreError> {
        chaos!(
            self,
            Method::LoadDeadLetter,
            self.inner.load_dead_letter(handler, event_id)
        )
    }

    async fn delete_dead_letter(
        &self,
        handler: &str,
        event_id: uuid::Uuid,
    ) -> Result<bool, StoreError> {
        chaos!(
            self,
            Method::DeleteDeadLetter,
            self.inner.delete_dead_letter(handler, event_id)
        )
    }

    async fn save_request(&self, request: HandlerRequest) -> Result<(), StoreError> {
        chaos!(self, Method::SaveRequest, self.inner.save_request(request))
    }

    async fn list_requests(
        &self,
        handler: &str,
        limit: usize,
    ) -> Result<Vec<HandlerRequest>, StoreError> {
        chaos!(
            self,
            Method::ListRequests,
            self.inner.list_requests(handler, limit)
        )
    }

    async fn load_request(
        &self,
        handler: &str,
        id: uuid::Uuid,
    ) -> Result<Option<HandlerRequest>, StoreError> {
        chaos!(
            self,
            Method::LoadRequest,
            self.inner.load_request(handler, id)
        )
    }

    async fn delete_request(&self, handler: &str, id: uuid::Uuid) -> Result<bool, StoreError> {
        chaos!(
            self,
            Method::DeleteRequest,
            self.inner.delete_request(handler, id)
        )
    }

    async fn save_saga_state(
        &self,
        saga: &str,
        instance: &str,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        chaos!(
            self,
            Method::SaveSagaState,
            self.inner.save_saga_state(saga, instance, state)
        )
    }

    async fn load_saga_state(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        chaos!(
            self,
            Method::LoadSagaState,
            self.inner.load_saga_state(saga, instance)
        )
    }

    async fn delete_saga_state(&self, saga: &str, instance: &str) -> Result<bool, StoreError> {
        chaos!(
            self,
            Method::DeleteSagaState,
            self.inner.delete_saga_state(saga, instance)
        )
    }

    async fn list_saga_instances(
        &self,
        saga: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        chaos!(
            self,
            Method::ListSagaInstances,
            self.inner.list_saga_instances(saga, after, limit)
        )
    }

    async fn schedule_timeout(&self, timeout: Timeout) -> Result<(), StoreError> {
        chaos!(
            self,
            Method::ScheduleTimeout,
            self.inner.schedule_timeout(timeout)
        )
    }

    async fn due_timeouts(
        &self,
        saga: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<Timeout>, StoreError> {
        chaos!(
            self,
            Method::DueTimeouts,
            self.inner.due_timeouts(saga, now, limit)
        )
    }

    async fn next_timeout(&self, saga: &str) -> Result<Option<SystemTime>, StoreError> {
        chaos!(self, Method::NextTimeout, self.inner.next_timeout(saga))
    }

    async fn delete_timeout(&self, saga: &str, id: uuid::Uuid) -> Result<bool, StoreError> {
        chaos!(
            self,
            Method::DeleteTimeout,
            self.inner.delete_timeout(saga, id)
        )
    }

    async fn cancel_timeouts(&self, saga: &str, instance: &str) -> Result<usize, StoreError> {
        chaos!(
            self,
            Method::CancelTimeouts,
            self.inner.cancel_timeouts(saga, instance)
        )
    }

    async fn flush(&self) -> Result<(), StoreError> {
        chaos!(self, Method::Flush, self.inner.flush())
    }

    async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        chaos!(self, Method::TryLease, self.inner.try_lease(name))
    }
}
