//! The runtime handle, [`Evoq`], and its builder.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::Instrument;
use uuid::Uuid;

use crate::actor::Decide;
use crate::aggregate::Aggregate;
use crate::command::Route;
use crate::config::{AggregateDefaults, Config, MemoryMonitorConfig};
use crate::dispatch::deadline::deadline_after;
use crate::dispatch::idempotency::Idempotency;
use crate::dispatch::pipeline::{self, Request};
use crate::dispatch::{CommandContext, DispatchOptions, Dispatched, Middleware};
use crate::error::Error;
use crate::handler::EventHandler;
use crate::memory_monitor::{MemoryMonitor, MemoryProbe, SystemMemory};
use crate::partition::{AggregateStats, Env, Partitions};
use crate::projection::Projection;
use crate::store::EventStore;
use crate::store::memory::InMemoryStore;
use crate::subscription::{Consistency, HandlerConfig, HandlerOptions, Registration, Registry};

/// The future of [`Evoq::dispatch`].
pub type DispatchFuture<'a, A> =
    Pin<Box<dyn Future<Output = Result<Dispatched<A>, Error>> + Send + 'a>>;

/// Builds an [`Evoq`] runtime: `Evoq::builder() ... .start().await`.
#[must_use = "a builder does nothing until `.start().await`"]
pub struct EvoqBuilder {
    store: Option<Arc<dyn EventStore>>,
    config: Config,
    memory_probe: Option<Arc<dyn MemoryProbe>>,
    middleware: Vec<Arc<dyn Middleware>>,
    handlers: Vec<Registration>,
    /// The sagas' handles on the runtime, filled in once it has started.
    runtime_slots: Vec<crate::saga::RuntimeSlot>,
}

impl EvoqBuilder {
    /// Uses `store` (the in-memory store when none is given).
    pub fn store<S: EventStore>(self, store: S) -> Self {
        self.shared_store(Arc::new(store))
    }

    /// Uses a store shared with other owners (another runtime, a test that inspects it).
    pub fn shared_store(mut self, store: Arc<dyn EventStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Number of partition registries.
    pub fn partitions(mut self, partitions: usize) -> Self {
        self.config.partitions = partitions;
        self
    }

    /// Default dispatch timeout.
    pub fn dispatch_timeout(mut self, timeout: Duration) -> Self {
        self.config.dispatch_timeout = timeout;
        self
    }

    /// Default number of re-runs after a version conflict.
    pub fn conflict_retries(mut self, retries: u32) -> Self {
        self.config.conflict_retries = retries;
        self
    }

    /// Reads the configuration from a TOML file (see [`Config`]); invalid values fail
    /// [`start`](Self::start) with an error naming the key.
    pub fn config_file(self, path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        Ok(self.config(Config::from_toml_file(path)?))
    }

    /// Lifecycle defaults of every aggregate type (`#[aggregate(...)]` arguments win).
    pub fn aggregate_defaults(mut self, defaults: AggregateDefaults) -> Self {
        self.config.aggregate_defaults = defaults;
        self
    }

    /// How often hibernated instances are checked for passivation (default 1 s).
    pub fn hibernation_sweep_interval(mut self, interval: std::time::Duration) -> Self {
        self.config.hibernation_sweep_interval = interval;
        self
    }

    /// Settings of the memory monitor.
    pub fn memory_monitor(mut self, settings: MemoryMonitorConfig) -> Self {
        self.config.memory_monitor = settings;
        self
    }

    /// Where the memory monitor reads memory use (default: the system, with `sysinfo`).
    pub fn memory_probe(mut self, probe: impl MemoryProbe) -> Self {
        self.memory_probe = Some(Arc::new(probe));
        self
    }

    /// Runs `middleware` around every dispatch, after the middleware registered before it and
    /// before each dispatch's own. See [`Middleware`].
    pub fn middleware<M: Middleware>(mut self, middleware: M) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// How long a result answers duplicates of its idempotency key or command id.
    pub fn idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.config.idempotency_ttl = ttl;
        self
    }

    /// How many results the idempotency cache keeps at most.
    pub fn idempotency_capacity(mut self, capacity: usize) -> Self {
        self.config.idempotency_capacity = capacity;
        self
    }

    /// Runs an event handler (`#[event_handler]`) in its own task, with the options of its
    /// attribute and the runtime's [`HandlerConfig`].
    pub fn handler<H: EventHandler>(self, handler: H) -> Self {
        self.handler_with(handler, HandlerOptions::new())
    }

    /// Runs an event handler with `options`, which take precedence over its attribute's.
    pub fn handler_with<H: EventHandler>(mut self, handler: H, options: HandlerOptions) -> Self {
        self.handlers.push(Registration::new(handler, options));
        self
    }

    /// Runs a projection (`#[projection]`) in its own task, like an event handler, with its
    /// checkpoint saved after every event. Its name shares the namespace of the handlers:
    /// [`Evoq::wait_for`] and [`Evoq::rebuild`] take it.
    pub fn projection<P: Projection>(self, projection: P) -> Self {
        self.projection_with(projection, HandlerOptions::new())
    }

    /// Runs a projection with `options`, which take precedence over its attribute's.
    pub fn projection_with<P: Projection>(
        mut self,
        projection: P,
        options: HandlerOptions,
    ) -> Self {
        self.handlers
            .push(Registration::projection(projection, options));
        self
    }

    /// Registers the saga `S` (see [`crate::saga`]): it runs on the subscription engine and
    /// dispatches its commands through this runtime.
    pub fn saga<S: crate::saga::Saga>(self) -> Self {
        self.saga_with::<S>(HandlerOptions::new())
    }

    /// Registers the saga `S` with `options` (they take precedence over its attribute's).
    pub fn saga_with<S: crate::saga::Saga>(mut self, options: HandlerOptions) -> Self {
        let (slot, runtime) = crate::saga::runtime_slot();
        self.runtime_slots.push(slot);
        self.handlers
            .push(Registration::saga::<S>(runtime, options));
        self
    }

    /// The defaults of every event handler (retries, error policy, checkpoints).
    pub fn handler_defaults(mut self, defaults: HandlerConfig) -> Self {
        self.config.handlers = defaults;
        self
    }

    /// Validates the configuration, loads the handlers' checkpoints and starts the runtime.
    pub async fn start(self) -> Result<Evoq, Error> {
        self.config.validate()?;
        let store = self.store.unwrap_or_else(|| Arc::new(InMemoryStore::new()));
        let probe = self
            .memory_probe
            .unwrap_or_else(|| Arc::new(SystemMemory::new()));
        let monitor = Arc::new(MemoryMonitor::new(
            probe,
            self.config.memory_monitor.clone(),
        ));
        MemoryMonitor::spawn_checks(&monitor);
        let handlers =
            Registry::start(self.handlers, Arc::clone(&store), &self.config.handlers).await?;
        tracing::debug!(
            name: "evoq.runtime.start",
            partitions = self.config.partitions,
        );
        let env = Arc::new(Env {
            store,
            monitor,
            config: self.config,
        });
        let inner = Arc::new(Inner {
            partitions: Partitions::new(Arc::clone(&env)),
            idempotency: Arc::new(Idempotency::new(
                env.config.idempotency_ttl,
                env.config.idempotency_capacity,
            )),
            middleware: self.middleware.into(),
            handlers,
            env,
            stopped: AtomicBool::new(false),
        });
        spawn_sweeper(&inner);
        for slot in self.runtime_slots {
            slot.send_replace(Some(WeakEvoq(Arc::downgrade(&inner))));
        }
        Ok(Evoq { inner })
    }
}

impl std::fmt::Debug for EvoqBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvoqBuilder")
            .field("config", &self.config)
            .field("store", &self.store.as_ref().map(|_| "given"))
            .field("middleware", &self.middleware.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    env: Arc<Env>,
    handlers: Registry,
    partitions: Partitions,
    idempotency: Arc<Idempotency>,
    middleware: Box<[Arc<dyn Middleware>]>,
    stopped: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The registries' idle-timer tasks hold their registries: end them, and drop every
        // instance, once the last handle is gone.
        self.partitions.clear();
    }
}

/// Passivates expired hibernated instances every `hibernation_sweep_interval`, until the
/// runtime is dropped.
fn spawn_sweeper(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let interval = inner.env.config.hibernation_sweep_interval;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            if inner.stopped.load(Ordering::SeqCst) {
                return;
            }
            inner.partitions.sweep().await;
        }
    });
}

/// A running evoq application: dispatch commands to aggregates.
///
/// Cheap to clone; every clone is the same runtime.
#[derive(Clone)]
pub struct Evoq {
    inner: Arc<Inner>,
}

impl Evoq {
    /// Starts configuring a runtime.
    pub fn builder() -> EvoqBuilder {
        EvoqBuilder {
            store: None,
            config: Config::default(),
            memory_probe: None,
            middleware: Vec::new(),
            handlers: Vec::new(),
            runtime_slots: Vec::new(),
        }
    }

    /// Dispatches `command` to the one aggregate that handles it, with fresh ids and the
    /// default options. See [`Evoq::command`] for ids, metadata and options.
    ///
    /// The future is boxed so that a command without a route gives one compile error at the
    /// call, not one per use of the future.
    pub fn dispatch<C: Route>(&self, command: C) -> DispatchFuture<'_, C::Aggregate> {
        self.command(command).dispatch()
    }

    /// Prepares a dispatch of `command` with metadata and options.
    pub fn command<C: Route>(&self, command: C) -> CommandBuilder<'_, C> {
        CommandBuilder {
            app: self,
            command,
            context: CommandContext::new(),
            options: DispatchOptions {
                timeout: self.inner.env.config.dispatch_timeout,
                expected_version: None,
                retry_limit: self.inner.env.config.conflict_retries,
            },
            middleware: Vec::new(),
            command_id_supplied: false,
            consistency: Consistency::Eventual,
        }
    }

    /// The event store this runtime writes to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.env.store
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.env.config
    }

    /// The memory monitor (its level, and `check_now`).
    pub fn memory_monitor(&self) -> &MemoryMonitor {
        &self.inner.env.monitor
    }

    /// How many instances of aggregate `A` are live (with a running actor).
    pub fn live_aggregates<A: Aggregate>(&self) -> usize {
        self.aggregate_stats::<A>().live as usize
    }

    /// The counters of aggregate type `A`: live, hibernated, passivated, ...
    pub fn aggregate_stats<A: Aggregate>(&self) -> AggregateStats {
        self.inner
            .partitions
            .stats()
            .into_iter()
            .find(|stats| stats.aggregate == A::NAME)
            .unwrap_or(AggregateStats {
                aggregate: A::NAME,
                ..AggregateStats::default()
            })
    }

    /// The counters of every aggregate type used so far, sorted by name.
    pub fn all_aggregate_stats(&self) -> Vec<AggregateStats> {
        self.inner.partitions.stats()
    }

    /// How many dispatch results the idempotency cache remembers now.
    pub fn idempotency_entries(&self) -> usize {
        self.inner.idempotency.len()
    }

    /// The runtime's event handlers.
    pub(crate) fn handlers(&self) -> &Registry {
        &self.inner.handlers
    }

    /// The partition that holds aggregate `id` of `A` (stable across runs).
    pub fn partition_of<A: Aggregate>(&self, id: &str) -> usize {
        self.inner.partitions.partition_of::<A>(id)
    }

    /// Passivates the hibernated instances whose idle timeout has passed now, instead of
    /// waiting for the next periodic sweep.
    pub async fn sweep_hibernated(&self) {
        self.inner.partitions.sweep().await;
    }

    /// Stops the runtime: new dispatches fail with [`Error::Stopped`]; commands already
    /// accepted complete; event handlers stop after saving their checkpoints.
    pub async fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.partitions.clear();
        self.inner.handlers.stop().await;
        tracing::debug!(name: "evoq.runtime.stop", stage = "stop");
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    pub(crate) fn idempotency(&self) -> &Arc<Idempotency> {
        &self.inner.idempotency
    }

    pub(crate) fn global_middleware(&self) -> &[Arc<dyn Middleware>] {
        &self.inner.middleware
    }

    /// Runs `command` on the live instance of aggregate `id` (thawed or started if need be),
    /// in the caller's task; `None` when `wanted` says, once its turn has come, that nobody
    /// waits for it any more (it does not run then).
    pub(crate) async fn run_command<A: crate::Aggregate>(
        &self,
        id: &str,
        command: &mut dyn Decide<A>,
        context: &crate::dispatch::CommandContext,
        options: &crate::dispatch::DispatchOptions,
        wanted: impl Fn() -> bool,
    ) -> Option<Result<crate::dispatch::Dispatched<A>, Error>> {
        let (registry, cell) = self
            .inner
            .partitions
            .with_registry::<A, _>(|registry| (Arc::clone(registry), registry.take(id)));
        crate::actor::run(&registry, &cell, command, context, options, wanted).await
    }
}

/// A handle on the runtime that does not keep it alive (the sagas' tasks hold one).
#[derive(Clone)]
pub(crate) struct WeakEvoq(std::sync::Weak<Inner>);

impl WeakEvoq {
    pub(crate) fn upgrade(&self) -> Option<Evoq> {
        self.0.upgrade().map(|inner| Evoq { inner })
    }
}

impl std::fmt::Debug for Evoq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evoq")
            .field("config", &self.inner.env.config)
            .field("stopped", &self.inner.stopped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A dispatch being prepared: set ids, metadata and options, then `.dispatch().await`.
#[must_use = "a command does nothing until `.dispatch().await`"]
pub struct CommandBuilder<'a, C> {
    app: &'a Evoq,
    command: C,
    context: CommandContext,
    options: DispatchOptions,
    middleware: Vec<Arc<dyn Middleware>>,
    command_id_supplied: bool,
    consistency: Consistency,
}

impl<'a, C> CommandBuilder<'a, C> {
    /// Sets the command id (default: a fresh UUID v7). A caller-supplied command id
    /// deduplicates the dispatch when no idempotency key is set: a second dispatch with this id
    /// returns the first one's result, even after a restart when its events are recent in the
    /// stream (see [`idempotency`](crate::dispatch::idempotency)).
    pub fn command_id(mut self, id: Uuid) -> Self {
        self.command_id_supplied = true;
        if self.context.correlation_id == self.context.command_id {
            self.context.correlation_id = id;
        }
        self.context.command_id = id;
        self
    }

    /// Sets the correlation id (default: the command id).
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.context.correlation_id = id;
        self
    }

    /// Sets what caused this command.
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.context.causation_id = Some(id);
        self
    }

    /// Adds a user metadata entry, copied into every event the command produces.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.metadata.insert(key.into(), value.into());
        self
    }

    /// Deduplicates the dispatch by `key`: while the first successful result with this key is
    /// remembered, a dispatch with the same key returns that result and runs nothing (see
    /// [`idempotency`](crate::dispatch::idempotency)).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.context.idempotency_key = Some(key.into());
        self
    }

    /// Runs `middleware` around this dispatch, after the runtime's middleware and the ones added
    /// before it.
    pub fn middleware<M: Middleware>(mut self, middleware: M) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// The stream must be at `version` (0 = new); otherwise the dispatch fails with
    /// [`Error::Conflict`] and nothing is appended.
    pub fn expected_version(mut self, version: u64) -> Self {
        self.options.expected_version = Some(version);
        self
    }

    /// How long to wait for the command, middleware, idempotency and consistency waits included
    /// (default: the runtime's `dispatch_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// How many times to re-run the command after a version conflict.
    pub fn retry_limit(mut self, retries: u32) -> Self {
        self.options.retry_limit = retries;
        self
    }

    /// Which event handlers to wait for before returning (default: none, [`Consistency::Eventual`]).
    /// The wait shares the dispatch's deadline ([`timeout`](Self::timeout)).
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Dispatches the command.
    pub fn dispatch(self) -> DispatchFuture<'a, C::Aggregate>
    where
        C: Route,
    {
        Box::pin(self.run())
    }

    async fn run(self) -> Result<Dispatched<C::Aggregate>, Error>
    where
        C: Route,
    {
        let deadline = deadline_after(self.options.timeout);
        let span = tracing::debug_span!(
            "evoq.dispatch",
            command = C::NAME,
            aggregate = <C::Aggregate as crate::Aggregate>::NAME,
            aggregate_id = tracing::field::Empty,
            command_id = %self.context.command_id,
        );
        if span.is_disabled() && matches!(self.consistency, Consistency::Eventual) {
            // The common case, with nothing to observe or wait for: its future stays small.
            let (app, request, _) = self.into_request();
            return pipeline::run(app, request, deadline).await;
        }
        Box::pin(self.run_observed(span, deadline)).await
    }

    /// A dispatch with a span to record or handlers to wait for.
    async fn run_observed(
        self,
        span: tracing::Span,
        deadline: tokio::time::Instant,
    ) -> Result<Dispatched<C::Aggregate>, Error>
    where
        C: Route,
    {
        if !span.is_disabled() {
            span.record("aggregate_id", self.command.aggregate_id());
        }
        span.in_scope(|| tracing::debug!(name: "evoq.dispatch", stage = "start"));
        // Timed only when the events that carry the duration are on.
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let timeout = self.options.timeout;
        let (app, request, consistency) = self.into_request();
        let dispatch = async {
            let required = app.inner.handlers.required(&consistency)?;
            let done = pipeline::run(app, request, deadline).await?;
            crate::subscription::settle::<C>(&required, done, deadline, timeout).await
        };
        let result = dispatch.instrument(span.clone()).await;
        span.in_scope(|| match &result {
            Ok(done) => tracing::debug!(
                name: "evoq.dispatch",
                stage = "stop",
                version = done.version,
                duration_us = crate::actor::micros_since(started),
            ),
            Err(error) => tracing::debug!(
                name: "evoq.dispatch",
                stage = "exception",
                error = %error,
                duration_us = crate::actor::micros_since(started),
            ),
        });
        result
    }

    fn into_request(self) -> (&'a Evoq, Request<C>, Consistency) {
        let CommandBuilder {
            app,
            command,
            context,
            options,
            middleware,
            command_id_supplied,
            consistency,
        } = self;
        let request = Request {
            command,
            context,
            options,
            middleware,
            command_id_supplied,
        };
        (app, request, consistency)
    }
}
