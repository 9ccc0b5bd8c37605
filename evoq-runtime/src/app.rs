//! The runtime handle, [`Evoq`], and its builder.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::actor::Job;
use crate::command::Route;
use crate::dispatch::{CommandContext, DispatchOptions, Dispatched};
use crate::envelope::stream_id;
use crate::error::Error;
use crate::handler::EventHandler;
use crate::partition::Partitions;
use crate::store::EventStore;
use crate::store::memory::InMemoryStore;
use crate::subscription::{Consistency, HandlerConfig, HandlerOptions, Registration, Registry};

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
    /// Defaults of every event handler: retries, error policy, checkpoints.
    pub handlers: HandlerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            partitions: 4,
            dispatch_timeout: Duration::from_secs(5),
            conflict_retries: 10,
            mailbox_capacity: 1_024,
            handlers: HandlerConfig::default(),
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
        self.handlers
            .check()
            .map_err(|(key, reason)| Error::Config { key, reason })?;
        Ok(())
    }
}

/// Builds an [`Evoq`] runtime: `Evoq::builder() ... .start().await`.
#[must_use = "a builder does nothing until `.start().await`"]
pub struct EvoqBuilder {
    store: Option<Arc<dyn EventStore>>,
    config: Config,
    handlers: Vec<Registration>,
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

    /// The defaults of every event handler (retries, error policy, checkpoints).
    pub fn handler_defaults(mut self, defaults: HandlerConfig) -> Self {
        self.config.handlers = defaults;
        self
    }

    /// Validates the configuration, loads the handlers' checkpoints and starts the runtime.
    pub async fn start(self) -> Result<Evoq, Error> {
        self.config.validate()?;
        let store = self.store.unwrap_or_else(|| Arc::new(InMemoryStore::new()));
        let handlers =
            Registry::start(self.handlers, Arc::clone(&store), &self.config.handlers).await?;
        tracing::debug!(
            name: "evoq.runtime.start",
            partitions = self.config.partitions,
        );
        Ok(Evoq {
            inner: Arc::new(Inner {
                partitions: Partitions::new(self.config.partitions, self.config.mailbox_capacity),
                store,
                handlers,
                config: self.config,
                stopped: AtomicBool::new(false),
            }),
        })
    }
}

struct Inner {
    store: Arc<dyn EventStore>,
    handlers: Registry,
    partitions: Partitions,
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
            handlers: Vec::new(),
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
            consistency: Consistency::Eventual,
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

    /// The runtime's event handlers.
    pub(crate) fn handlers(&self) -> &Registry {
        &self.inner.handlers
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
    /// accepted complete; event handlers stop after saving their checkpoints.
    pub async fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.partitions.clear();
        self.inner.handlers.stop().await;
        tracing::debug!(name: "evoq.runtime.stop", partitions = self.inner.partitions.count());
    }

    async fn run<C: Route>(
        &self,
        command: C,
        context: CommandContext,
        options: DispatchOptions,
    ) -> Result<Dispatched<C::Aggregate>, Error> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(Error::Stopped { command: C::NAME });
        }
        let id = command.aggregate_id();
        let timeout = options.timeout;
        let (reply, outcome) = oneshot::channel();
        let mut job = Job {
            decide: Box::new(move |state| C::handle(state, &command)),
            command: C::NAME,
            context,
            options,
            reply,
        };
        let deliver = async {
            loop {
                let mailbox = self
                    .inner
                    .partitions
                    .mailbox::<C::Aggregate>(&id, &self.inner.store);
                match mailbox.send(job).await {
                    Ok(()) => break,
                    // The instance ended between lookup and send: start a new one.
                    Err(returned) => job = returned.0,
                }
                if self.inner.stopped.load(Ordering::SeqCst) {
                    return Err(Error::Stopped { command: C::NAME });
                }
            }
            outcome
                .await
                .map_err(|_| Error::Stopped { command: C::NAME })?
        };
        match tokio::time::timeout(timeout, deliver).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                command: C::NAME,
                stream: stream_id(<C::Aggregate as crate::Aggregate>::NAME, &id),
                after: timeout,
            }),
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
    consistency: Consistency,
}

impl<'a, C> CommandBuilder<'a, C> {
    /// Sets the command id (default: a fresh UUID v7).
    pub fn command_id(mut self, id: Uuid) -> Self {
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

    /// The stream must be at `version` (0 = new); otherwise the dispatch fails with
    /// [`Error::Conflict`] and nothing is appended.
    pub fn expected_version(mut self, version: u64) -> Self {
        self.options.expected_version = Some(version);
        self
    }

    /// How long to wait for the command, its consistency wait included (default: the
    /// runtime's `dispatch_timeout`).
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
        let CommandBuilder {
            app,
            command,
            context,
            options,
            consistency,
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
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + options.timeout;
        let timeout = options.timeout;
        let result = async {
            let required = app.inner.handlers.required(&consistency)?;
            let done = app.run(command, context, options).await?;
            crate::subscription::settle::<C>(&required, done, deadline, timeout).await
        }
        .instrument(span.clone())
        .await;
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
