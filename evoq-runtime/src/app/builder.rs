//! Building a runtime: [`EvoqBuilder`], from [`Evoq::builder`].

use std::sync::Arc;
use std::time::Duration;

use super::evoq::{Evoq, Inner, RegisteredSaga};
use crate::config::{AggregateDefaults, Config, MemoryMonitorConfig};
use crate::delivery::policy::{HandlerConfig, HandlerOptions};
use crate::delivery::subscribers::{Registration, Subscribers};
use crate::dispatch::Middleware;
use crate::dispatch::dispatcher::{Dispatcher, Settings};
use crate::dispatch::idempotency::Idempotency;
use crate::error::Error;
use crate::handler::{self, EventHandler};
use crate::host::memory_monitor::{MemoryMonitor, MemoryProbe, SystemMemory};
use crate::host::registry::Env;
use crate::projection::{self, Projection};
use crate::saga::{self, Saga, SagaOptions};
use crate::store::memory::InMemoryStore;
use crate::store::{EventStore, GuardedStore};

/// A consumer to start, given the runtime's dispatcher (sagas dispatch through it).
type PendingConsumer = Box<dyn FnOnce(std::sync::Weak<Dispatcher>) -> Registration + Send>;

/// What a consumer needs once every consumer has started (a saga: the handlers its commands
/// wait for).
type PendingLink = Box<dyn FnOnce(&Subscribers) -> Result<(), Error> + Send>;

/// Builds an [`Evoq`] runtime: `Evoq::builder() ... .start().await`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq::Error> {
/// use std::time::Duration;
///
/// let app = evoq::Evoq::builder()
///     .store(evoq::store::memory::InMemoryStore::new()) // the default
///     .partitions(8)
///     .dispatch_timeout(Duration::from_secs(2))
///     .start()
///     .await?;
/// assert_eq!(app.config().partitions, 8);
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until `.start().await`"]
pub struct EvoqBuilder {
    store: Option<Arc<dyn EventStore>>,
    config: Config,
    memory_probe: Option<Arc<dyn MemoryProbe>>,
    middleware: Vec<Arc<dyn Middleware>>,
    /// The event handlers, projections and sagas, in registration order.
    consumers: Vec<PendingConsumer>,
    /// What the consumers need once all have started.
    links: Vec<PendingLink>,
    /// The registered sagas, in registration order.
    sagas: Vec<RegisteredSaga>,
    /// The first registration refused, which fails [`start`](Self::start).
    refused: Option<Error>,
}

impl Evoq {
    /// Starts configuring a runtime.
    pub fn builder() -> EvoqBuilder {
        EvoqBuilder {
            store: None,
            config: Config::default(),
            memory_probe: None,
            middleware: Vec::new(),
            consumers: Vec::new(),
            links: Vec::new(),
            sagas: Vec::new(),
            refused: None,
        }
    }
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

    /// Names this store instance (`Config::store_id`): telemetry and operators' tools show it.
    pub fn store_id(mut self, store_id: impl Into<String>) -> Self {
        self.config.store_id = store_id.into();
        self
    }

    /// Number of partition registries (default 4, at most 1,024).
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
    pub fn hibernation_sweep_interval(mut self, interval: Duration) -> Self {
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

    /// How long the store's command log answers a resent command id or idempotency key with
    /// its first result (default 7 days).
    pub fn command_log_retention(mut self, retention: Duration) -> Self {
        self.config.command_log_retention = retention;
        self
    }

    /// How often the command log's expired entries are swept (default 1 h).
    pub fn command_log_sweep_interval(mut self, interval: Duration) -> Self {
        self.config.command_log_sweep_interval = interval;
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
    ///
    /// A projection (`#[projection]`) given here fails [`start`](Self::start) with
    /// [`Error::Config`]: register it with [`projection`](Self::projection).
    pub fn handler_with<H: EventHandler>(mut self, handler: H, options: HandlerOptions) -> Self {
        if H::IS_PROJECTION {
            let attribute = H::OPTIONS;
            let name = options.name_over(&attribute, H::NAME);
            self.refuse(
                "handler",
                format!(
                    "`{name}` is a projection (`#[projection]`): register it with `Evoq::builder().projection(...)`, which keeps its read model's checkpoint with it and lets it be rebuilt (as a plain handler it would not)"
                ),
            );
        }
        let registration = handler::registration::<H, _>(handler, options);
        self.consumers.push(Box::new(move |_| registration));
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
        let registration = projection::registration(projection, options);
        self.consumers.push(Box::new(move |_| registration));
        self
    }

    /// Registers the saga `S` (see [`saga`](crate::saga)): it runs on the subscription engine
    /// and dispatches its commands through this runtime.
    pub fn saga<S: Saga>(self) -> Self {
        self.saga_with::<S>(HandlerOptions::new())
    }

    /// Registers the saga `S` with `options`: a [`HandlerOptions`] for how its events are
    /// delivered (they take precedence over its attribute's), or a [`SagaOptions`] that also
    /// sets the timeout, conflict retries and consistency of the commands it sends.
    ///
    /// A consistency that names a handler this runtime does not run fails
    /// [`start`](Self::start) with [`Error::UnknownHandler`]; a saga name with a `#` in it
    /// (the mark of the runtime's own records) fails it with [`Error::Config`].
    pub fn saga_with<S: Saga>(mut self, options: impl Into<SagaOptions>) -> Self {
        let options = options.into();
        let settings = Arc::new(saga::CommandSettings::new(&options));
        let own = saga::handler_name::<S>(&options.delivery);
        if let Err(reason) = saga::check_name(&own) {
            self.refuse("saga", reason);
        }
        self.sagas.push(RegisteredSaga {
            type_id: std::any::TypeId::of::<S>(),
            name: own.clone(),
        });
        let consistency = options.command_consistency;
        let linked = Arc::clone(&settings);
        self.links.push(Box::new(move |subscribers| {
            // Resolved even on an error, so that a saga task waiting for it is released (the
            // start then fails and its dispatches with it).
            let required = subscribers.required(&consistency);
            let handlers = required.as_ref().map_or_else(|_| Vec::new(), Clone::clone);
            linked.set_required(handlers, &own);
            required.map(|_| ())
        }));
        let delivery = options.delivery;
        self.consumers.push(Box::new(move |dispatcher| {
            saga::registration::<S>(dispatcher, delivery, settings)
        }));
        self
    }

    /// Keeps the first registration refused, for [`start`](Self::start) to fail with: the
    /// builder's methods chain, so they cannot return it themselves.
    fn refuse(&mut self, key: &str, reason: String) {
        self.refused.get_or_insert(Error::Config {
            key: key.to_owned(),
            reason,
        });
    }

    /// The defaults of every event handler (retries, error policy, checkpoints).
    pub fn handler_defaults(mut self, defaults: HandlerConfig) -> Self {
        self.config.handlers = defaults;
        self
    }

    /// Validates the configuration, loads the handlers' checkpoints and starts the runtime.
    pub async fn start(self) -> Result<Evoq, Error> {
        self.config.validate()?;
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        // Everything the runtime does with the store goes through one guard: a panicking
        // backend fails the one call (a store error, which each caller retries or reports),
        // never a task of the runtime nor a caller's task.
        let given = self.store.unwrap_or_else(|| Arc::new(InMemoryStore::new()));
        let store = GuardedStore::wrap(Arc::clone(&given));
        let probe = self
            .memory_probe
            .unwrap_or_else(|| Arc::new(SystemMemory::new()));
        let monitor = Arc::new(MemoryMonitor::new(
            probe,
            self.config.memory_monitor.clone(),
        ));
        MemoryMonitor::spawn_checks(&monitor);
        let config = self.config;
        let dispatcher = Dispatcher::start(
            Env {
                store: Arc::clone(&store),
                monitor,
                partitions: config.partitions,
                defaults: config.aggregate_defaults.clone(),
            },
            // The cache is the fast path in front of the command log: never longer-lived.
            Idempotency::new(
                config.idempotency_ttl.min(config.command_log_retention),
                config.idempotency_capacity,
            ),
            self.middleware,
            Settings {
                dispatch_timeout: config.dispatch_timeout,
                conflict_retries: config.conflict_retries,
                command_log_retention: config.command_log_retention,
                command_log_sweep_interval: config.command_log_sweep_interval,
                hibernation_sweep_interval: config.hibernation_sweep_interval,
            },
        );
        let registrations = self
            .consumers
            .into_iter()
            .map(|consumer| consumer(Arc::downgrade(&dispatcher)))
            .collect();
        let subscribers = match Subscribers::start(registrations, store, &config.handlers).await {
            Ok(subscribers) => subscribers,
            Err(error) => {
                dispatcher.stop().await;
                return Err(error);
            }
        };
        // Every link runs (no short cut), so that every saga waiting for its handlers is
        // released; the first error fails the start.
        let outcomes: Vec<Result<(), Error>> = self
            .links
            .into_iter()
            .map(|link| link(&subscribers))
            .collect();
        if let Some(Err(error)) = outcomes.into_iter().find(Result::is_err) {
            dispatcher.stop().await;
            subscribers.stop().await;
            return Err(error);
        }
        tracing::debug!(
            name: "evoq.runtime.start",
            store_id = %config.store_id,
            partitions = config.partitions,
            "evoq.runtime.start",
        );
        Ok(Evoq {
            inner: Arc::new(Inner {
                config,
                store: given,
                dispatcher,
                subscribers,
                sagas: self.sagas,
            }),
        })
    }
}

impl std::fmt::Debug for EvoqBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvoqBuilder")
            .field("config", &self.config)
            .field("store", &self.store.as_ref().map(|_| "given"))
            .field("middleware", &self.middleware.len())
            .field("consumers", &self.consumers.len())
            .finish_non_exhaustive()
    }
}
