//! The path of one dispatch, under one deadline (the dispatch's timeout):
//!
//! 1. a stopped runtime refuses the command;
//! 2. a command whose aggregate id is empty is refused;
//! 3. idempotency ([`idempotency`](super::idempotency)): a remembered success, or one found in
//!    the store's command log for the key or caller-supplied command id, is returned at once; a
//!    running duplicate is waited for;
//! 4. `before_dispatch` of every middleware (the runtime's, then the dispatch's); a halt returns;
//! 5. the aggregate's actor runs the command (expected version, conflict retries, metadata) and
//!    appends its events with its command-log entry, in the caller's task; a keyed command runs
//!    in a task of its own, so that it completes and its success is remembered for its key even
//!    when the caller stops waiting;
//! 6. `after_dispatch` or `after_failure` of every middleware, with the framework's assigns.
//!
//! With no middleware and no key, steps 3, 4 and 6 cost nothing: no allocation, no lock.
//!
//! The dispatcher also sweeps the command log's expired entries, every
//! `command_log_sweep_interval`, in bounded batches.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::idempotency::{Acquired, Claim, Idempotency, Key};
use super::in_flight::InFlight;
use super::metric;
use super::middleware::{Chain, Middleware, Pipeline};
use crate::aggregate::Aggregate;
use crate::aggregate::command::{Decide, Route};
use crate::aggregate::context::{CommandContext, DispatchOptions, Dispatched};
use crate::aggregate::recorded::first_result;
use crate::envelope::stream_id;
use crate::error::{Decider, Error};
use crate::event::EventSet;
use crate::host::decision_models::DecisionModels;
use crate::host::memory_monitor::MemoryMonitor;
use crate::host::registry::{AggregateStats, Env, Partitions};
use crate::host::{actor, decision};
use crate::store::{EventStore, GuardedStore, StoreError};
use crate::util::panic::{CatchPanic, panic_message};
use crate::util::time::{deadline_from, micros_since, within};

/// What the dispatcher is configured with (from the runtime's configuration).
pub(crate) struct Settings {
    /// The default time a dispatch may take.
    pub(crate) dispatch_timeout: Duration,
    /// The default number of re-runs after a version conflict.
    pub(crate) conflict_retries: u32,
    /// How long the command log answers a resent command.
    pub(crate) command_log_retention: Duration,
    /// How often the command log's expired entries are swept.
    pub(crate) command_log_sweep_interval: Duration,
    /// How often hibernated instances are checked for passivation.
    pub(crate) hibernation_sweep_interval: Duration,
}

/// Runs commands: owns the live aggregates (their partitions), the idempotency cache and the
/// runtime's middleware, and takes every dispatch through the path of the
/// [module docs](self). The runtime handle holds it; sagas hold a weak reference.
pub(crate) struct Dispatcher {
    partitions: Partitions,
    /// The kept models of cached decisions.
    decisions: DecisionModels,
    idempotency: Arc<Idempotency>,
    middleware: Box<[Arc<dyn Middleware>]>,
    settings: Settings,
    /// The dispatches under way, which a stop waits for; says whether it was called.
    in_flight: Arc<InFlight>,
    /// Turns `true` on [`stop`](Self::stop): what background tasks tied to the dispatcher
    /// wait on.
    stop_signal: watch::Sender<bool>,
}

impl Dispatcher {
    /// A dispatcher over `env`'s store, with its hibernation sweeper running.
    pub(crate) fn start(
        env: Env,
        idempotency: Idempotency,
        middleware: Vec<Arc<dyn Middleware>>,
        settings: Settings,
    ) -> Arc<Self> {
        let dispatcher = Arc::new(Dispatcher {
            partitions: Partitions::new(Arc::new(env)),
            decisions: DecisionModels::default(),
            idempotency: Arc::new(idempotency),
            middleware: middleware.into(),
            settings,
            in_flight: Arc::default(),
            stop_signal: watch::Sender::new(false),
        });
        spawn_sweeper(&dispatcher);
        spawn_command_log_sweeper(&dispatcher);
        dispatcher
    }

    /// The oldest commit time a command-log entry may have and still answer a resend.
    fn retained_since(&self) -> SystemTime {
        SystemTime::now()
            .checked_sub(self.settings.command_log_retention)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Removes every command-log entry older than the retention, in batches of
    /// [`SWEEP_BATCH`]; returns how many.
    pub(crate) async fn sweep_command_log(&self) -> Result<usize, Error> {
        let before = self.retained_since();
        let mut removed = 0;
        loop {
            let swept = self.store().sweep_commands(before, SWEEP_BATCH).await?;
            removed += swept;
            if swept < SWEEP_BATCH {
                break;
            }
            // Let the store serve others between batches.
            tokio::task::yield_now().await;
        }
        if removed > 0 {
            tracing::debug!(name: "evoq.command_log.sweep", removed, "evoq.command_log.sweep");
        }
        Ok(removed)
    }

    /// The options of a dispatch that sets none.
    pub(crate) fn default_options(&self) -> DispatchOptions {
        DispatchOptions {
            timeout: self.settings.dispatch_timeout,
            expected_version: None,
            retry_limit: self.settings.conflict_retries,
        }
    }

    /// The event store commands append to.
    pub(crate) fn store(&self) -> &Arc<GuardedStore> {
        self.partitions.store()
    }

    /// The memory monitor that scales idle timeouts.
    pub(crate) fn memory_monitor(&self) -> &MemoryMonitor {
        self.partitions.monitor()
    }

    /// Whether [`stop`](Self::stop) was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.in_flight.is_stopped()
    }

    /// A watch that turns `true` when the dispatcher stops.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop_signal.subscribe()
    }

    /// Refuses new dispatches, waits until the dispatches under way are done (a keyed
    /// command whose caller gave up included), then drops every live and hibernated instance.
    pub(crate) async fn stop(&self) {
        self.in_flight.refuse();
        self.stop_signal.send_replace(true);
        self.in_flight.drained().await;
        self.partitions.clear();
        self.decisions.clear();
    }

    /// The counters of every aggregate type used so far, sorted by name.
    pub(crate) fn aggregate_stats(&self) -> Vec<AggregateStats> {
        self.partitions.stats()
    }

    /// The partition that holds aggregate `id` of `A`.
    pub(crate) fn partition_of<A: Aggregate>(&self, id: &str) -> usize {
        self.partitions.partition_of::<A>(id)
    }

    /// Passivates the hibernated instances whose idle timeout has passed, and drops the
    /// cached decision models idle as long.
    pub(crate) async fn sweep_hibernated(&self) {
        self.partitions.sweep().await;
        self.decisions
            .sweep(Instant::now(), self.memory_monitor().ttl_factor());
    }

    /// How many boundaries of cached decisions keep a model.
    pub(crate) fn decision_models(&self) -> usize {
        self.decisions.len()
    }

    /// How many dispatch results the idempotency cache remembers.
    pub(crate) fn idempotency_entries(&self) -> usize {
        self.idempotency.len()
    }

    /// Runs `command` on the live instance of aggregate `id`, in the caller's task; `None` when
    /// `wanted` says, once its turn has come, that nobody waits for it any more. The actor's
    /// future itself, with no layer of its own around it.
    fn run_command<'a, A: Aggregate>(
        &'a self,
        id: &'a str,
        command: &'a dyn Decide<A>,
        context: &'a CommandContext,
        options: &'a DispatchOptions,
        deduplicate_since: Option<SystemTime>,
        wanted: impl Fn() -> bool + Send + 'a,
    ) -> RunCommand<'a, impl Future<Output = Option<Result<Dispatched<A>, Error>>> + 'a, A> {
        if let Some(query) = command.decision_query() {
            // A decision: no live instance, nothing to wait for but the store (and, for a
            // cached one, the commands before it on its boundary).
            let store = self.partitions.store();
            let idle = A::IDLE_TIMEOUT.unwrap_or(self.partitions.defaults().idle_timeout);
            let decided = async move {
                if !wanted() {
                    return None;
                }
                if let Err(refused) = self.partitions.claim_name::<A>() {
                    return Some(Err(refused));
                }
                let run = decision::run(
                    store,
                    &self.decisions,
                    idle,
                    id,
                    command,
                    query,
                    context,
                    options,
                    deduplicate_since,
                );
                Some(run.await)
            };
            return RunCommand::Decision {
                decision: Box::pin(decided),
            };
        }
        RunCommand::Instance {
            instance: actor::run_in(
                &self.partitions,
                id,
                command,
                context,
                options,
                deduplicate_since,
                wanted,
            ),
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        // The registries' idle-timer tasks hold their registries: end them, and drop every
        // instance, once the last handle is gone.
        self.partitions.clear();
    }
}

/// The boxed run of a command routed to a decision.
type DecisionRun<'a, A> =
    Pin<Box<dyn Future<Output = Option<Result<Dispatched<A>, Error>>> + Send + 'a>>;

pin_project_lite::pin_project! {
    /// The run of one command: on its aggregate's live instance (the actor's future, in place),
    /// or by its decision (boxed: the plain path's future does not grow for it).
    #[project = RunCommandProjection]
    pub(crate) enum RunCommand<'a, F, A: Aggregate> {
        Instance { #[pin] instance: F },
        Decision { decision: DecisionRun<'a, A> },
    }
}

impl<F, A> Future for RunCommand<'_, F, A>
where
    F: Future<Output = Option<Result<Dispatched<A>, Error>>>,
    A: Aggregate,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            RunCommandProjection::Instance { instance } => instance.poll(cx),
            RunCommandProjection::Decision { decision } => decision.as_mut().poll(cx),
        }
    }
}

/// How many command-log entries one sweep removes at most, per call to the store.
const SWEEP_BATCH: usize = 1_000;

/// Passivates expired hibernated instances every `hibernation_sweep_interval`, until the
/// dispatcher stops or is dropped.
fn spawn_sweeper(dispatcher: &Arc<Dispatcher>) {
    let interval = dispatcher.settings.hibernation_sweep_interval;
    spawn_every(dispatcher, interval, Instant::now(), |dispatcher| {
        Box::pin(async move {
            dispatcher.sweep_hibernated().await;
            // The gauges of live and hibernated instances, as often as the sweep runs.
            for stats in dispatcher.partitions.stats() {
                metrics::gauge!("evoq_aggregates_live", "aggregate" => stats.aggregate)
                    .set(stats.live as f64);
                metrics::gauge!("evoq_aggregates_hibernated", "aggregate" => stats.aggregate)
                    .set(stats.hibernated as f64);
            }
        })
    });
}

/// Sweeps the command log every `command_log_sweep_interval` (the first sweep one interval
/// after the start), until the dispatcher stops or is dropped. A failed sweep is logged and
/// tried again at the next tick.
fn spawn_command_log_sweeper(dispatcher: &Arc<Dispatcher>) {
    let interval = dispatcher.settings.command_log_sweep_interval;
    spawn_every(
        dispatcher,
        interval,
        Instant::now() + interval,
        |dispatcher| {
            Box::pin(async move {
                if let Err(error) = dispatcher.sweep_command_log().await {
                    tracing::warn!(
                        name: "evoq.command_log.sweep",
                        stage = "exception",
                        error = %error,
                        "evoq.command_log.sweep",
                    );
                }
            })
        },
    );
}

/// Runs `job` at `first`, then every `interval` (a late tick delays the next ones), until the
/// dispatcher stops or is dropped; the task holds only a weak reference between ticks.
fn spawn_every(
    dispatcher: &Arc<Dispatcher>,
    interval: Duration,
    first: Instant,
    job: impl for<'a> Fn(&'a Dispatcher) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>
    + Send
    + 'static,
) {
    let weak = Arc::downgrade(dispatcher);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(first, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(dispatcher) = weak.upgrade() else {
                return;
            };
            if dispatcher.is_stopped() {
                return;
            }
            job(&dispatcher).await;
        }
    });
}

/// Everything a dispatch carries into the pipeline.
pub(crate) struct Request<C> {
    pub(crate) command: C,
    pub(crate) context: CommandContext,
    pub(crate) options: DispatchOptions,
    /// The dispatch's own middleware, run after the runtime's.
    pub(crate) middleware: Vec<Arc<dyn Middleware>>,
    /// Whether the caller set the command id (a generated one is never a duplicate).
    command_id_supplied: bool,
}

impl<C> Request<C> {
    /// A dispatch of `command` with `context` and `options`, no middleware of its own, and a
    /// command id the runtime generated.
    pub(crate) fn new(command: C, context: CommandContext, options: DispatchOptions) -> Self {
        Request {
            command,
            context,
            options,
            middleware: Vec::new(),
            command_id_supplied: false,
        }
    }

    /// The caller chose the command id: a dispatch with the same id is a duplicate.
    pub(crate) fn with_supplied_command_id(mut self) -> Self {
        self.command_id_supplied = true;
        self
    }

    /// No idempotency key, no command id of the caller's and no middleware of its own: a
    /// command that cannot be a resend, run as it is.
    fn is_bare(&self) -> bool {
        self.context.idempotency_key.is_none()
            && !self.command_id_supplied
            && self.middleware.is_empty()
    }
}

/// The `evoq.dispatch` span of `request` (disabled unless DEBUG events are on; the aggregate id
/// is computed only when it is not).
pub(crate) fn span<C: Route>(request: &Request<C>) -> tracing::Span {
    let span = tracing::debug_span!(
        "evoq.dispatch",
        command = C::NAME,
        aggregate = <C::Aggregate as Aggregate>::NAME,
        aggregate_id = tracing::field::Empty,
        command_id = %request.context.command_id,
        correlation_id = %request.context.correlation_id,
        causation_id = tracing::field::Empty,
    );
    if let Some(causation_id) = request.context.causation_id
        && !span.is_disabled()
    {
        span.record("causation_id", tracing::field::display(causation_id));
    }
    if !span.is_disabled() {
        span.record("aggregate_id", request.command.aggregate_id());
    }
    span
}

/// Runs `body` (a dispatch, and whatever its caller waits for after it) in `span`, between the
/// `evoq.dispatch` start and stop (or exception) events.
/// `dispatch`, a dispatch of `C` with more around it (the wait of a consistency), measured in
/// `evoq_dispatch_seconds` as [`dispatch_traced`] measures a bare one: from the call to its
/// result, failures included.
pub(crate) async fn metered<C: Route, T>(
    dispatch: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let started = Instant::now();
    let result = dispatch.await;
    metric::record::<C>(result.as_ref().err(), started);
    result
}

pub(crate) async fn observed<A: Aggregate>(
    span: tracing::Span,
    body: impl Future<Output = Result<Dispatched<A>, Error>>,
) -> Result<Dispatched<A>, Error> {
    span.in_scope(|| tracing::debug!(name: "evoq.dispatch", stage = "start", "evoq.dispatch"));
    // Timed only when the events that carry the duration are on.
    let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
    let result = body.instrument(span.clone()).await;
    span.in_scope(|| match &result {
        Ok(done) => tracing::debug!(
            name: "evoq.dispatch",
            stage = "stop",
            version = done.version,
            events = done.events.len(),
            duration_us = micros_since(started),
            "evoq.dispatch",
        ),
        Err(error) => tracing::debug!(
            name: "evoq.dispatch",
            stage = "exception",
            error = %error,
            duration_us = micros_since(started),
            "evoq.dispatch",
        ),
    });
    result
}

/// Runs `request` under a deadline of its timeout, in its `evoq.dispatch` span when DEBUG
/// events are on (in a box then: the plain dispatch's future stays small), and records its
/// metric.
pub(crate) fn dispatch_traced<'a, C: Route>(
    dispatcher: &'a Arc<Dispatcher>,
    request: Request<C>,
) -> impl Future<Output = Result<Dispatched<C::Aggregate>, Error>> + Send + 'a {
    let start: Dispatching<'a, C, _, Observed<'a, C::Aggregate>, _> = Dispatching::Start {
        dispatcher,
        request: Some(request),
        run: Some(dispatch::<C>),
    };
    start
}

/// The boxed future of a dispatch observed in its span.
type Observed<'a, A> = Pin<Box<dyn Future<Output = Result<Dispatched<A>, Error>> + Send + 'a>>;

pin_project_lite::pin_project! {
    /// The future of [`dispatch_traced`]: its first poll takes the deadline, opens the span
    /// (in the poller's span: a caller's `.instrument(span)` is the dispatch span's parent)
    /// and starts `run`, the dispatch, in place of the request.
    ///
    /// A hand-written state machine rather than an `async fn`: an async layer keeps its
    /// arguments (the request) beside the future it awaits, and a dispatch's whole future is
    /// allocated and copied once per command. Here the request and the dispatch that takes it
    /// over share their place.
    #[project = DispatchingProjection]
    enum Dispatching<'a, C, F, B, M> {
        Start {
            dispatcher: &'a Arc<Dispatcher>,
            request: Option<Request<C>>,
            run: Option<M>,
        },
        Running {
            #[pin]
            traced: Traced<F, B>,
            started: Instant,
        },
    }
}

impl<'a, C, F, M> Future for Dispatching<'a, C, F, Observed<'a, C::Aggregate>, M>
where
    C: Route,
    F: Future<Output = Result<Dispatched<C::Aggregate>, Error>> + Send + 'a,
    M: FnOnce(&'a Arc<Dispatcher>, Request<C>, Instant) -> F,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if let DispatchingProjection::Start {
            dispatcher,
            request,
            run,
        } = self.as_mut().project()
        {
            let (Some(request), Some(run)) = (request.take(), run.take()) else {
                unreachable!("a dispatch starts once")
            };
            let dispatcher = *dispatcher;
            // One clock read: the deadline's start is the metric's.
            let started = Instant::now();
            let deadline = deadline_from(started, request.options.timeout);
            let span = span(&request);
            #[cfg(feature = "opentelemetry")]
            let request = with_trace_context(request, &span);
            let traced = if span.is_disabled() {
                Traced::Plain {
                    dispatch: run(dispatcher, request, deadline),
                }
            } else {
                let observed: Observed<'a, C::Aggregate> =
                    Box::pin(observed(span, run(dispatcher, request, deadline)));
                Traced::Observed { dispatch: observed }
            };
            self.set(Dispatching::Running { traced, started });
        }
        let DispatchingProjection::Running { traced, started } = self.project() else {
            unreachable!("started above")
        };
        let result = std::task::ready!(traced.poll(cx));
        metric::record::<C>(result.as_ref().err(), *started);
        Poll::Ready(result)
    }
}

pin_project_lite::pin_project! {
    /// A dispatch's future, plain or (when its span is enabled) observed in a box.
    #[project = TracedProjection]
    enum Traced<F, B> {
        Plain { #[pin] dispatch: F },
        Observed { dispatch: B },
    }
}

impl<F: Future, B: Future<Output = F::Output> + Unpin> Future for Traced<F, B> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            TracedProjection::Plain { dispatch } => dispatch.poll(cx),
            TracedProjection::Observed { dispatch } => Pin::new(dispatch).poll(cx),
        }
    }
}

/// `request` with the W3C trace context of its dispatch span (of the caller's span when
/// OpenTelemetry does not follow that one: it is disabled, or a layer of its own enabled it and
/// OpenTelemetry's filter did not) in its metadata, unless the caller put one there: the
/// handlers, projections and sagas its events reach continue that trace.
#[cfg(feature = "opentelemetry")]
fn with_trace_context<C: Route>(mut request: Request<C>, span: &tracing::Span) -> Request<C> {
    use crate::util::trace_context::{TRACEPARENT, traceparent};
    if !request.context.metadata.contains_key(TRACEPARENT) {
        let own = if span.is_disabled() {
            None
        } else {
            traceparent(span)
        };
        if let Some(context) = own.or_else(|| traceparent(&tracing::Span::current())) {
            request
                .context
                .metadata
                .insert(TRACEPARENT.to_owned(), context);
        }
    }
    request
}

/// Runs one dispatch through the path of the [module docs](self).
///
/// An `async` block rather than an `async fn`, like the actor's steps: an `async fn` moves its
/// arguments into locals of its own, so its future holds the request twice.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice in its future, which every dispatch allocates"
)]
pub(crate) fn dispatch<C: Route>(
    dispatcher: &Arc<Dispatcher>,
    request: Request<C>,
    deadline: Instant,
) -> impl Future<Output = Result<Dispatched<C::Aggregate>, Error>> {
    async move {
        // Entered before the stop is checked: a stop either refuses it or waits for it.
        let _under_way = dispatcher.in_flight.enter();
        if dispatcher.is_stopped() {
            return Err(Error::Stopped { command: C::NAME });
        }
        // Borrowed from the command where it can be: routing copies no id.
        let id = request.command.aggregate_id_str();
        if id.is_empty() {
            return Err(empty_id::<C>(&request.command));
        }
        if request.is_bare() && dispatcher.middleware.is_empty() {
            // The bare command, run from the request where it lies (no copy of its parts in this
            // future): its future stays small (the one below is boxed).
            let Request {
                command,
                context,
                options,
                ..
            } = &request;
            return match within(
                deadline,
                dispatcher.run_command(&id, command, context, options, None, || true),
            )
            .await
            {
                Some(Some(result)) => result,
                Some(None) => unreachable!("a bare dispatch is always wanted"),
                None => Err(Error::Timeout {
                    command: C::NAME,
                    stream: stream_id(<C::Aggregate as Aggregate>::NAME, &id),
                    after: options.timeout,
                }),
            };
        }
        let id = id.into_owned();
        let Request {
            command,
            context,
            options,
            middleware,
            command_id_supplied,
        } = request;
        Box::pin(run_keyed_or_wrapped(
            dispatcher,
            id,
            command,
            context,
            options,
            middleware,
            command_id_supplied,
            deadline,
        ))
        .await
    }
}

/// The error of `command`, whose aggregate id is empty: no stream can be named for it.
fn empty_id<C: Route>(command: &C) -> Error {
    let decider = command.decider();
    let name = <C::Aggregate as Aggregate>::NAME;
    let reason = match decider {
        Decider::Aggregate => "is empty: every instance needs a non-empty id (its stream is `<aggregate name>-<id>`); set the command's `#[aggregate_id]` field".to_owned(),
        Decider::Decision => format!("is empty: the decision appends to the stream `{name}-<id>`, which needs a non-empty id; set the command's `#[aggregate_id]` field"),
    };
    Error::InvalidAggregateId {
        decider,
        aggregate: name,
        command: C::NAME,
        id: String::new(),
        reason,
    }
}

/// A dispatch with an idempotency key, a caller-supplied command id or middleware.
#[allow(clippy::too_many_arguments)]
async fn run_keyed_or_wrapped<C: Route>(
    dispatcher: &Arc<Dispatcher>,
    id: String,
    command: C,
    context: CommandContext,
    options: DispatchOptions,
    middleware: Vec<Arc<dyn Middleware>>,
    command_id_supplied: bool,
    deadline: Instant,
) -> Result<Dispatched<C::Aggregate>, Error> {
    let after = options.timeout;
    let timed_out = || Error::Timeout {
        command: C::NAME,
        stream: stream_id(<C::Aggregate as Aggregate>::NAME, &id),
        after,
    };

    // Idempotency: the key, else a caller-supplied command id; a generated id cannot repeat.
    let key = match &context.idempotency_key {
        Some(key) => Some(Key::Idempotency(Arc::from(key.as_str()))),
        None if command_id_supplied => Some(Key::CommandId(context.command_id)),
        None => None,
    };
    let claim = match key {
        None => None,
        Some(key) => match within(deadline, dispatcher.idempotency.acquire::<C>(key, &id)).await {
            None => return Err(timed_out()),
            Some(Err(error)) => return Err(error),
            Some(Ok(Acquired::Hit(done))) => return Ok(done),
            Some(Ok(Acquired::Lead(claim))) => Some(claim),
        },
    };
    // A command that may be a resend: the command log answers for it, and records it.
    let deduplicate_since = claim.as_ref().map(|_| dispatcher.retained_since());
    if let (Some(leader), Some(since)) = (&claim, deduplicate_since) {
        let store = &**dispatcher.store();
        let lookup = async {
            match store.find_command(leader.key().lookup(), since).await? {
                Some(record) => {
                    first_result::<C::Aggregate>(store, &record, C::NAME, &id, command.decider())
                        .await
                        .map(Some)
                }
                None => Ok(None),
            }
        };
        // A store that panics fails this dispatch, not the caller's task.
        let Some(found) = within(deadline, CatchPanic::new(lookup)).await else {
            return Err(timed_out());
        };
        let found = found.map_err(|panic| {
            Error::from(StoreError::Backend {
                backend: "event store",
                message: format!(
                    "it panicked looking up command `{}` in the command log: {}",
                    C::NAME,
                    panic_message(&*panic)
                ),
            })
        })?;
        if let Some(done) = found? {
            tracing::debug!(
                name: "evoq.idempotency.hit",
                key = %leader.key(),
                command = C::NAME,
                source = "store",
                version = done.version,
                "evoq.idempotency.hit",
            );
            if let Some(claim) = claim {
                claim.complete(done.clone());
            }
            return Ok(done);
        }
        tracing::debug!(name: "evoq.idempotency.miss", key = %leader.key(), command = C::NAME, "evoq.idempotency.miss");
    }

    let chain = Chain {
        global: &dispatcher.middleware[..],
        local: &middleware,
    };
    if chain.is_empty() {
        return execute(
            dispatcher,
            &id,
            command,
            context,
            options,
            deadline,
            claim,
            deduplicate_since,
        )
        .await
        .unwrap_or_else(|| Err(timed_out()));
    }

    // The middleware see the command before and after the aggregate: share it with the job.
    let command = Arc::new(command);
    let mut pipeline = Pipeline::new(
        &*command,
        C::NAME,
        <C::Aggregate as Aggregate>::NAME,
        &id,
        context,
    );
    if within(deadline, pipeline.run_stage(chain)).await.is_none() {
        return Err(timed_out());
    }
    if let Some(halt) = pipeline.take_halt() {
        return Err(halt);
    }
    let context = pipeline.context_for_job();
    let Some(outcome) = execute(
        dispatcher,
        &id,
        Arc::clone(&command),
        context,
        options,
        deadline,
        claim,
        deduplicate_since,
    )
    .await
    else {
        return Err(timed_out());
    };
    let done = match outcome {
        Ok(done) => {
            pipeline.enter_after(Ok(()));
            assign_success(&mut pipeline, &done);
            Some(done)
        }
        Err(error) => {
            pipeline.enter_after(Err(error));
            None
        }
    };
    if within(deadline, pipeline.run_stage(chain)).await.is_none() {
        return Err(timed_out());
    }
    match (pipeline.into_response(), done) {
        (Err(error), _) => Err(error),
        (Ok(()), Some(done)) => Ok(done),
        (Ok(()), None) => unreachable!("after_failure cannot turn a failure into a success"),
    }
}

/// Runs the command on its aggregate before `deadline`; `None` when the deadline passed.
///
/// An unkeyed command runs in the caller's task. A keyed one runs in a task of its own that
/// completes the claim (the key remembers a success): when the deadline passes after the
/// command started, it still completes, so a retry with the same key gets its result instead of
/// running the command again; when the deadline passes before it started, it never runs and
/// the claim is released.
#[allow(clippy::too_many_arguments)]
async fn execute<A: Aggregate, D: Decide<A> + 'static>(
    dispatcher: &Arc<Dispatcher>,
    id: &str,
    command: D,
    context: CommandContext,
    options: DispatchOptions,
    deadline: Instant,
    claim: Option<Claim>,
    deduplicate_since: Option<SystemTime>,
) -> Option<Result<Dispatched<A>, Error>> {
    let Some(claim) = claim else {
        return within(
            deadline,
            dispatcher.run_command(id, &command, &context, &options, None, || true),
        )
        .await
        .flatten();
    };
    let name = command.name();
    let (reply, outcome) = oneshot::channel();
    let (dispatcher, id) = (Arc::clone(dispatcher), id.to_owned());
    // The command goes on when its caller stops waiting: a stop waits for it too.
    let under_way = dispatcher.in_flight.enter_owned();
    // In the dispatch's span, so the aggregate's span is its child.
    let job = async move {
        let _under_way = under_way;
        let wanted = || !reply.is_closed();
        let ran = dispatcher
            .run_command(&id, &command, &context, &options, deduplicate_since, wanted)
            .await;
        if let Some(result) = ran {
            if let Ok(done) = &result {
                claim.complete(done.clone());
            }
            let _ = reply.send(result);
        }
    };
    tokio::spawn(job.in_current_span());
    within(deadline, outcome)
        .await
        .map(|result| result.unwrap_or(Err(Error::Stopped { command: name })))
}

/// The framework's assigns after a success: `events`, `version`, `position`.
fn assign_success<A: Aggregate>(pipeline: &mut Pipeline<'_>, done: &Dispatched<A>) {
    let events = done
        .events
        .iter()
        .map(|event| serde_json::json!({ "type": event.event_type(), "data": event.to_json() }))
        .collect::<Vec<_>>();
    pipeline.assign("events", events);
    pipeline.assign("version", done.version);
    if let Some(position) = done.position {
        pipeline.assign("position", position);
    }
}
