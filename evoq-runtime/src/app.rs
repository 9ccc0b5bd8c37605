//! The runtime handle, [`Evoq`], and its builder.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::Instrument;
use uuid::Uuid;

use crate::actor::Job;
use crate::command::Route;
use crate::dispatch::idempotency::Idempotency;
use crate::dispatch::pipeline::{self, Request};
use crate::dispatch::{CommandContext, DispatchOptions, Dispatched, Middleware};
use crate::error::Error;
use crate::partition::Partitions;
use crate::store::EventStore;
use crate::store::memory::InMemoryStore;

/// The future of [`Evoq::dispatch`].
pub type DispatchFuture<'a, A> =
    Pin<Box<dyn Future<Output = Result<Dispatched<A>, Error>> + Send + 'a>>;

/// Runtime settings, with the defaults of the specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of partition registries (default 4, at least 1).
    pub partitions: usize,
    /// Default time a dispatch may take (default 5 s).
    pub dispatch_timeout: Duration,
    /// Default number of re-runs after a version conflict (default 10).
    pub conflict_retries: u32,
    /// Capacity of each aggregate's mailbox (default 1,024, at least 1).
    pub mailbox_capacity: usize,
    /// How long a successful dispatch's result answers duplicates of its idempotency key or
    /// command id (default 1 h).
    pub idempotency_ttl: Duration,
    /// How many results the idempotency cache keeps at most; the oldest go first (default
    /// 100,000, at least 1).
    pub idempotency_capacity: usize,
    /// How many of a stream's newest events are searched for a caller-supplied command id that
    /// the cache does not know, so a command re-sent after a restart is not appended twice
    /// (default 100; 0 turns the search off).
    pub idempotency_lookback: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            partitions: 4,
            dispatch_timeout: Duration::from_secs(5),
            conflict_retries: 10,
            mailbox_capacity: 1_024,
            idempotency_ttl: Duration::from_secs(3_600),
            idempotency_capacity: 100_000,
            idempotency_lookback: 100,
        }
    }
}

impl Config {
    /// Checks every value; the error names the key and says what to set.
    pub fn validate(&self) -> Result<(), Error> {
        if self.partitions == 0 {
            return Err(Error::Config {
                key: "partitions",
                reason: "must be at least 1 (the default is 4)".into(),
            });
        }
        if self.dispatch_timeout.is_zero() {
            return Err(Error::Config {
                key: "dispatch_timeout",
                reason: "must be longer than zero (the default is 5 s)".into(),
            });
        }
        if self.mailbox_capacity == 0 {
            return Err(Error::Config {
                key: "mailbox_capacity",
                reason: "must be at least 1 (the default is 1024)".into(),
            });
        }
        if self.idempotency_ttl.is_zero() {
            return Err(Error::Config {
                key: "idempotency_ttl",
                reason: "must be longer than zero (the default is 1 h)".into(),
            });
        }
        if self.idempotency_capacity == 0 {
            return Err(Error::Config {
                key: "idempotency_capacity",
                reason: "must be at least 1 (the default is 100000)".into(),
            });
        }
        Ok(())
    }
}

/// Builds an [`Evoq`] runtime: `Evoq::builder() ... .start().await`.
#[must_use = "a builder does nothing until `.start().await`"]
pub struct EvoqBuilder {
    store: Option<Arc<dyn EventStore>>,
    config: Config,
    middleware: Vec<Arc<dyn Middleware>>,
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

    /// Validates the configuration and starts the runtime.
    pub async fn start(self) -> Result<Evoq, Error> {
        self.config.validate()?;
        let store = self.store.unwrap_or_else(|| Arc::new(InMemoryStore::new()));
        tracing::debug!(
            name: "evoq.runtime.start",
            partitions = self.config.partitions,
        );
        Ok(Evoq {
            inner: Arc::new(Inner {
                partitions: Partitions::new(self.config.partitions, self.config.mailbox_capacity),
                store,
                idempotency: Arc::new(Idempotency::new(
                    self.config.idempotency_ttl,
                    self.config.idempotency_capacity,
                )),
                middleware: self.middleware.into(),
                config: self.config,
                stopped: AtomicBool::new(false),
            }),
        })
    }
}

struct Inner {
    store: Arc<dyn EventStore>,
    partitions: Partitions,
    idempotency: Arc<Idempotency>,
    middleware: Box<[Arc<dyn Middleware>]>,
    config: Config,
    stopped: AtomicBool,
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
            middleware: Vec::new(),
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
                timeout: self.inner.config.dispatch_timeout,
                expected_version: None,
                retry_limit: self.inner.config.conflict_retries,
            },
            middleware: Vec::new(),
            command_id_supplied: false,
        }
    }

    /// The event store this runtime writes to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// How many dispatch results the idempotency cache remembers now.
    pub fn idempotency_entries(&self) -> usize {
        self.inner.idempotency.len()
    }

    /// How many instances of aggregate `A` are live.
    pub fn live_aggregates<A: crate::Aggregate>(&self) -> usize {
        self.inner.partitions.live::<A>()
    }

    /// The partition that holds aggregate `id` of `A` (stable across runs).
    pub fn partition_of<A: crate::Aggregate>(&self, id: &str) -> usize {
        self.inner.partitions.partition_of(A::NAME, id)
    }

    /// Stops the runtime: new dispatches fail with [`Error::Stopped`]; commands already
    /// accepted complete.
    pub async fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.partitions.clear();
        tracing::debug!(name: "evoq.runtime.stop", partitions = self.inner.partitions.count());
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

    /// Delivers `job` to the live instance of aggregate `id`, starting one if need be.
    pub(crate) async fn submit<A: crate::Aggregate>(
        &self,
        id: &str,
        mut job: Job<A>,
    ) -> Result<(), Error> {
        loop {
            let mailbox = self.inner.partitions.mailbox::<A>(id, &self.inner.store);
            match mailbox.send(job).await {
                Ok(()) => return Ok(()),
                // The instance ended between lookup and send: start a new one.
                Err(returned) => job = returned.0,
            }
            if self.is_stopped() {
                return Err(Error::Stopped {
                    command: job.command,
                });
            }
        }
    }
}

impl std::fmt::Debug for Evoq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evoq")
            .field("config", &self.inner.config)
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

    /// How long to wait for the command, middleware and idempotency waits included (default:
    /// the runtime's `dispatch_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// How many times to re-run the command after a version conflict.
    pub fn retry_limit(mut self, retries: u32) -> Self {
        self.options.retry_limit = retries;
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
        let CommandBuilder {
            app,
            command,
            context,
            options,
            middleware,
            command_id_supplied,
        } = self;
        let span = tracing::debug_span!(
            "evoq.dispatch",
            command = C::NAME,
            aggregate = <C::Aggregate as crate::Aggregate>::NAME,
            aggregate_id = tracing::field::Empty,
            command_id = %context.command_id,
        );
        if !span.is_disabled() {
            span.record("aggregate_id", command.aggregate_id());
        }
        span.in_scope(|| tracing::debug!(name: "evoq.dispatch", stage = "start"));
        let started = Instant::now();
        let request = Request {
            command,
            context,
            options,
            middleware,
            command_id_supplied,
        };
        let result = pipeline::run(app, request).instrument(span.clone()).await;
        span.in_scope(|| match &result {
            Ok(done) => tracing::debug!(
                name: "evoq.dispatch",
                stage = "stop",
                version = done.version,
                duration_us = started.elapsed().as_micros() as u64,
            ),
            Err(error) => tracing::debug!(
                name: "evoq.dispatch",
                stage = "exception",
                error = %error,
                duration_us = started.elapsed().as_micros() as u64,
            ),
        });
        result
    }
}
