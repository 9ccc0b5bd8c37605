//! The runtime handle, [`Evoq`], and dispatching through it: [`Evoq::dispatch`], and
//! [`CommandBuilder`] for ids, metadata and options.

use std::any::TypeId;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::aggregate::command::Route;
use crate::aggregate::context::{CommandContext, Dispatched};
use crate::config::Config;
use crate::delivery::api::{DeadLetterQueue, HandlerStats};
use crate::delivery::consistency::{Consistency, settle};
use crate::delivery::subscribers::Subscribers;
use crate::dispatch::Middleware;
use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::dispatcher::{self, Request};
use crate::error::Error;
use crate::handler::EventHandler;
use crate::host::memory_monitor::MemoryMonitor;
use crate::host::registry::AggregateStats;
use crate::saga::{self, Saga};
use crate::store::EventStore;
use crate::util::time::deadline_after;

use super::wait::WaitFor;

/// What every clone of a runtime handle shares.
pub(crate) struct Inner {
    pub(crate) config: Config,
    /// The store as the builder was given it (the runtime itself goes through its guard).
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) subscribers: Subscribers,
    /// The registered sagas, in registration order.
    pub(crate) sagas: Vec<RegisteredSaga>,
}

/// A saga registration: the saga's type and the name it runs under.
pub(crate) struct RegisteredSaga {
    pub(crate) type_id: TypeId,
    pub(crate) name: String,
}

/// A running evoq application: dispatch commands to aggregates.
///
/// Cheap to clone; every clone is the same runtime.
///
/// ```
/// use evoq_runtime::Evoq;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq_runtime::Error> {
/// let app = Evoq::builder().partitions(2).start().await?;
/// assert_eq!(app.config().partitions, 2);
/// app.stop().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Evoq {
    pub(crate) inner: Arc<Inner>,
}

impl Evoq {
    /// The event store this runtime writes to: the one given to the builder.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The memory monitor (its level, and `check_now`).
    pub fn memory_monitor(&self) -> &MemoryMonitor {
        self.inner.dispatcher.memory_monitor()
    }

    /// How many instances of aggregate `A` are live (with a running actor).
    pub fn live_aggregates<A: Aggregate>(&self) -> usize {
        self.aggregate_stats::<A>().live as usize
    }

    /// The counters of aggregate type `A`: live, hibernated, passivated, ...
    pub fn aggregate_stats<A: Aggregate>(&self) -> AggregateStats {
        self.all_aggregate_stats()
            .into_iter()
            .find(|stats| stats.aggregate == A::NAME)
            .unwrap_or(AggregateStats {
                aggregate: A::NAME,
                ..AggregateStats::default()
            })
    }

    /// The counters of every aggregate type used so far, sorted by name.
    pub fn all_aggregate_stats(&self) -> Vec<AggregateStats> {
        self.inner.dispatcher.aggregate_stats()
    }

    /// How many dispatch results the idempotency cache remembers now.
    pub fn idempotency_entries(&self) -> usize {
        self.inner.dispatcher.idempotency_entries()
    }

    /// Removes from the store's command log every entry older than
    /// [`Config::command_log_retention`](crate::Config::command_log_retention), in bounded
    /// batches, and returns how many it removed. The runtime does this by itself every
    /// [`Config::command_log_sweep_interval`](crate::Config::command_log_sweep_interval); call
    /// it to sweep now. Expired entries answer no resend even before they are swept.
    pub async fn sweep_command_log(&self) -> Result<usize, Error> {
        self.inner.dispatcher.sweep_command_log().await
    }

    /// The partition that holds aggregate `id` of `A` (stable across runs).
    pub fn partition_of<A: Aggregate>(&self, id: &str) -> usize {
        self.inner.dispatcher.partition_of::<A>(id)
    }

    /// Passivates the hibernated instances whose idle timeout has passed now, and drops the
    /// models of cached decisions idle as long, instead of waiting for the next periodic sweep.
    pub async fn sweep_hibernated(&self) {
        self.inner.dispatcher.sweep_hibernated().await;
    }

    /// How many boundaries of cached decisions (`#[decision(cached)]`) keep a model now.
    pub fn decision_models(&self) -> usize {
        self.inner.dispatcher.decision_models()
    }

    /// Whether [`stop`](Self::stop) was called (by any clone): new dispatches fail with
    /// [`Error::Stopped`]. For a readiness probe, with [`handler_stats`](Self::handler_stats)
    /// for the handlers' own states.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let app = evoq::Evoq::builder().start().await.unwrap();
    /// assert!(!app.is_stopped());
    /// app.stop().await;
    /// assert!(app.is_stopped());
    /// # }
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.inner.dispatcher.is_stopped()
    }

    /// Stops the runtime: new dispatches fail with [`Error::Stopped`]; commands already
    /// accepted complete, and the stop waits for them (a keyed command whose caller gave up
    /// included), so their events are in the store when it returns; event handlers stop after
    /// saving their checkpoints; then the store
    /// is flushed ([`EventStore::flush`]: on SQLite, the WAL is checkpointed into the database
    /// file, so a copy of that file alone holds every event). The store stays open.
    pub async fn stop(&self) {
        self.inner.dispatcher.stop().await;
        self.inner.subscribers.stop().await;
        // Every write of this runtime is in; a copy of the store's files now holds them all.
        if let Err(error) = self.inner.dispatcher.store().flush().await {
            tracing::warn!(
                name: "evoq.runtime.stop",
                stage = "exception",
                store_id = %self.inner.config.store_id,
                error = %error,
                "evoq.runtime.stop",
            );
        }
        tracing::debug!(
            name: "evoq.runtime.stop",
            stage = "stop",
            store_id = %self.inner.config.store_id,
            "evoq.runtime.stop",
        );
    }

    /// Waits until the event handler or projection `H` has processed every one of its events
    /// up to the global `position` (a [`Dispatched::token`](crate::Dispatched::token)): a
    /// caller can read its own writes from what the handler maintains.
    ///
    /// The handler's position also moves past events of types it does not take, so any
    /// position of the store can be waited on. The wait has a deadline, the runtime's
    /// `dispatch_timeout` unless [`WaitFor::timeout`] says otherwise, and ends with
    /// [`Error::WaitTimeout`] there. It fails at once when `H` does not run in this runtime
    /// ([`Error::UnknownHandler`]) or runs under several names ([`Error::AmbiguousHandler`]:
    /// wait by name), and when the handler stops (its `OnError::Stop` policy, or the runtime
    /// stopping) before it gets there. See [`WaitFor`] for an example.
    pub fn wait_for<H: EventHandler>(&self, position: u64) -> WaitFor<'_> {
        let subscribers = &self.inner.subscribers;
        let handlers = subscribers.of_type(TypeId::of::<H>());
        let handler = match handlers.as_slice() {
            [one] => Ok(one.name.to_string()),
            [] => Err(Error::UnknownHandler {
                handler: H::NAME.to_owned(),
                known: subscribers.names(),
            }),
            several => Err(Error::AmbiguousHandler {
                handler_type: std::any::type_name::<H>(),
                names: several
                    .iter()
                    .map(|handler| format!("`{}`", handler.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        };
        WaitFor::new(
            subscribers,
            handler,
            position,
            self.inner.config.dispatch_timeout,
        )
    }

    /// Waits until the handler, projection or saga named `handler` (the name it runs under)
    /// has processed every one of its events up to the global `position`: like
    /// [`wait_for`](Self::wait_for), for a saga, or a handler registered under another name
    /// than its type's.
    pub fn wait_for_named(&self, handler: &str, position: u64) -> WaitFor<'_> {
        WaitFor::new(
            &self.inner.subscribers,
            Ok(handler.to_owned()),
            position,
            self.inner.config.dispatch_timeout,
        )
    }

    /// Rebuilds the projection named `projection`: clears its read model, resets its
    /// checkpoint, replays every event of its types from the first one (no cap, upcast as on
    /// every read), then goes on live. Returns once the replay has reached the store's head as
    /// of the call (the position returned), so the read model is complete up to it.
    ///
    /// The reset happens between two events (the projection sees one event at a time), so the
    /// rebuild waits while the projection is busy with one. A call given up before the reset
    /// (its future dropped: a `tokio::time::timeout` around it, say) withdraws the rebuild, which
    /// never begins; one that began replays to the end, whether or not anyone waits. Its
    /// dead letters are kept. Fails for a name this runtime does not run, for an event
    /// handler, and when the read model cannot be cleared or the checkpoint reset.
    pub async fn rebuild(&self, projection: &str) -> Result<u64, Error> {
        self.inner.subscribers.rebuild(projection).await
    }

    /// The dead letters of the handler named `handler`: list, get, retry, discard.
    ///
    /// Listing, getting and discarding work for any name (the entries are in the store);
    /// retrying needs the handler to run in this runtime.
    pub fn dead_letters(&self, handler: &str) -> DeadLetterQueue<'_> {
        self.inner.subscribers.dead_letters(handler)
    }

    /// The state of instance `instance` of the saga `S`, as its last handled event left it:
    /// `None` when there is no such instance (never started, or stopped).
    ///
    /// It reads the instance under the name `S` runs under (its attribute's, or the one given
    /// with [`HandlerOptions::name`](crate::HandlerOptions::name)). It reads the store, so it
    /// sees the instance as saved, not an event still being handled: wait with
    /// [`wait_for_named`](Self::wait_for_named) on the saga's name to read your own writes.
    /// Fails with [`Error::UnknownSaga`] when the type `S` is not registered in this runtime
    /// (even if the store holds its states, or another registered saga has its name: register
    /// it, or read the store), with [`Error::AmbiguousHandler`] when `S` runs under several
    /// names, and with [`Error::SagaState`] when the saved state does not decode into `S`.
    ///
    /// ```
    /// # use evoq::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    /// # struct Deposited { account: String, amount: u64 }
    /// # #[derive(Command)]
    /// # struct Deposit { #[aggregate_id] account: String, amount: u64 }
    /// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
    /// # #[derive(Default)] struct Account;
    /// # #[aggregate]
    /// # impl Account {
    /// #     #[handles]
    /// #     fn deposit(&self, c: &Deposit) -> Result<Deposited, Never> {
    /// #         Ok(Deposited { account: c.account.clone(), amount: c.amount })
    /// #     }
    /// #     #[apply]
    /// #     fn deposited(&mut self, _e: &Deposited) {}
    /// # }
    /// /// Counts the deposits of each account.
    /// #[derive(Default, Serialize, Deserialize)]
    /// struct Audit { total: u64 }
    ///
    /// #[saga(name = "audit")]
    /// impl Audit {
    ///     #[starts(by = account)]
    ///     fn deposited(&mut self, e: &Deposited) -> Commands {
    ///         self.total += e.amount;
    ///         Commands::none()
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), evoq::Error> {
    /// let app = Evoq::builder().saga::<Audit>().start().await?;
    /// let done = app.dispatch(Deposit { account: "acc-1".into(), amount: 50 }).await?;
    /// app.wait_for_named("audit", done.token).await?;
    ///
    /// let audit = app.saga_state::<Audit>("acc-1").await?.expect("started");
    /// assert_eq!(audit.total, 50);
    /// assert!(app.saga_state::<Audit>("acc-2").await?.is_none());
    /// # app.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn saga_state<S: Saga>(&self, instance: &str) -> Result<Option<S>, Error> {
        let sagas = &self.inner.sagas;
        let names: Vec<&str> = sagas
            .iter()
            .filter(|saga| saga.type_id == TypeId::of::<S>())
            .map(|saga| &*saga.name)
            .collect();
        let name = match names.as_slice() {
            [one] => *one,
            [] => {
                let known: Vec<&str> = sagas.iter().map(|saga| &*saga.name).collect();
                return Err(Error::UnknownSaga {
                    saga: S::NAME,
                    known: known_names(&known),
                });
            }
            several => {
                let names: Vec<String> = several.iter().map(|name| format!("`{name}`")).collect();
                return Err(Error::AmbiguousHandler {
                    handler_type: std::any::type_name::<S>(),
                    names: names.join(", "),
                });
            }
        };
        saga::load_state::<S>(&**self.inner.dispatcher.store(), name, instance).await
    }

    /// The counters of every event handler of this runtime, in registration order.
    pub fn handler_stats(&self) -> Vec<HandlerStats> {
        self.inner.subscribers.handler_stats()
    }
}

/// "`a`, `b`", or "none".
fn known_names(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    quoted.join(", ")
}

impl std::fmt::Debug for Evoq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evoq")
            .field("config", &self.inner.config)
            .field("stopped", &self.inner.dispatcher.is_stopped())
            .finish_non_exhaustive()
    }
}

/// The future of [`Evoq::dispatch`].
pub type DispatchFuture<'a, A> =
    Pin<Box<dyn Future<Output = Result<Dispatched<A>, Error>> + Send + 'a>>;

impl Evoq {
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
            request: Request::new(
                command,
                CommandContext::new(),
                self.inner.dispatcher.default_options(),
            ),
            consistency: Consistency::Eventual,
        }
    }
}

/// A dispatch being prepared: set ids, metadata and options, then `.dispatch().await`.
///
/// ```
/// # use evoq::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// # struct Deposited { amount: u64 }
/// # #[derive(Command)]
/// # struct Deposit { #[aggregate_id] account: String, amount: u64 }
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # #[derive(Default)] struct Account { balance: u64 }
/// # #[aggregate]
/// # impl Account {
/// #     #[handles]
/// #     fn deposit(&self, c: &Deposit) -> Result<Deposited, Never> { Ok(Deposited { amount: c.amount }) }
/// #     #[apply]
/// #     fn deposited(&mut self, e: &Deposited) { self.balance += e.amount; }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), evoq::Error> {
/// let app = Evoq::builder().start().await?;
/// let done = app
///     .command(Deposit { account: "acc-1".into(), amount: 50 })
///     .idempotency_key("request-42") // a retry with this key gets this result back
///     .metadata("user", "alice") // copied into every event's metadata
///     .expected_version(0) // the stream must be new
///     .timeout(std::time::Duration::from_secs(2))
///     .dispatch()
///     .await?;
/// assert_eq!(done.version, 1);
/// # Ok(())
/// # }
/// ```
#[must_use = "a command does nothing until `.dispatch().await`"]
pub struct CommandBuilder<'a, C> {
    app: &'a Evoq,
    request: Request<C>,
    consistency: Consistency,
}

impl<'a, C> CommandBuilder<'a, C> {
    /// Sets the command id (default: a fresh UUID v7). A caller-supplied command id
    /// deduplicates the dispatch when no idempotency key is set: a second dispatch with this id
    /// returns the first one's result, even after a restart when its events are recent in the
    /// stream (see [`idempotency`](crate::dispatch::idempotency)).
    pub fn command_id(mut self, id: Uuid) -> Self {
        let context = &mut self.request.context;
        if context.correlation_id == context.command_id {
            context.correlation_id = id;
        }
        context.command_id = id;
        self.request = self.request.with_supplied_command_id();
        self
    }

    /// Sets the correlation id (default: the command id).
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.request.context.correlation_id = id;
        self
    }

    /// Sets what caused this command.
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.request.context.causation_id = Some(id);
        self
    }

    /// Adds a user metadata entry, copied into every event the command produces.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request
            .context
            .metadata
            .insert(key.into(), value.into());
        self
    }

    /// Deduplicates the dispatch by `key`: while the first successful result with this key is
    /// remembered, a dispatch with the same key returns that result and runs nothing (see
    /// [`idempotency`](crate::dispatch::idempotency)).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.request.context.idempotency_key = Some(key.into());
        self
    }

    /// Runs `middleware` around this dispatch, after the runtime's middleware and the ones added
    /// before it.
    pub fn middleware<M: Middleware>(mut self, middleware: M) -> Self {
        self.request.middleware.push(Arc::new(middleware));
        self
    }

    /// The stream must be at `version` (0 = new); otherwise the dispatch fails with
    /// [`Error::Conflict`] and nothing is appended.
    pub fn expected_version(mut self, version: u64) -> Self {
        self.request.options.expected_version = Some(version);
        self
    }

    /// How long to wait for the command, middleware, idempotency and consistency waits included
    /// (default: the runtime's `dispatch_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.options.timeout = timeout;
        self
    }

    /// How many times to re-run the command after a version conflict.
    pub fn retry_limit(mut self, retries: u32) -> Self {
        self.request.options.retry_limit = retries;
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
        let CommandBuilder {
            app,
            request,
            consistency,
        } = self;
        if matches!(consistency, Consistency::Eventual) {
            // Nothing to wait for: the dispatcher's own future, boxed with nothing around it.
            return Box::pin(dispatcher::dispatch_traced(&app.inner.dispatcher, request));
        }
        Box::pin(consistent(app, request, consistency))
    }
}

/// A dispatch of `request` and the wait for the handlers `consistency` names, which shares the
/// dispatch's deadline and span.
async fn consistent<C: Route>(
    app: &Evoq,
    request: Request<C>,
    consistency: Consistency,
) -> Result<Dispatched<C::Aggregate>, Error> {
    let deadline = deadline_after(request.options.timeout);
    let timeout = request.options.timeout;
    let span = dispatcher::span(&request);
    let dispatch = async {
        let required = app.inner.subscribers.required(&consistency)?;
        let done = dispatcher::dispatch(&app.inner.dispatcher, request, deadline).await?;
        settle::<C>(&required, done, deadline, timeout).await
    };
    dispatcher::metered::<C, _>(dispatcher::observed(span, dispatch)).await
}
