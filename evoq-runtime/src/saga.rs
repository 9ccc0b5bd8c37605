//! Sagas: long-running coordinators that react to events with commands.
//!
//! A saga is a state struct (`Default + Serialize + Deserialize`) whose `#[saga(name = "...")]`
//! impl block has methods marked `#[starts(by = field)]`, `#[continues(by = field)]` and
//! `#[stops(by = field)]`, each taking one event and returning the [`Commands`] to dispatch,
//! and optionally one `#[compensates]` method taking a [`FailedCommand`].
//!
//! It runs on the subscription engine like an event handler (one task, global order, retries,
//! dead letters, leases on a shared store, upcasting). For each event of its types:
//!
//! 1. the `by` field of the event gives the *instance* (its correlation value); an empty value
//!    (`""`, `None`) correlates to nothing and the event is ignored;
//! 2. the instance's state is loaded from the store's saga state slots: a start on an existing
//!    instance routes to it, a continue on a missing instance starts one, a stop on a missing
//!    instance is ignored;
//! 3. the method runs; the state, with the position of the event (the instance's checkpoint),
//!    is saved (a stop removes it);
//! 4. the commands are dispatched, every one even if an earlier one fails, with the event as
//!    causation, the event's correlation id, and a deterministic command id made from the
//!    saga, the event id and the command's index: a re-delivered event (after a crash, a
//!    restart, a reset checkpoint) produces the same ids, and the pipeline's idempotency on
//!    caller-supplied command ids returns the first result instead of running them again;
//!    each with the saga's command options ([`SagaOptions`]: timeout, conflict retries,
//!    consistency; the runtime's defaults when unset);
//! 5. a command that fails (after its conflict retries) goes to the `#[compensates]` method as
//!    a [`FailedCommand`], once every command of its batch has been dispatched; its
//!    [`executed()`](FailedCommand::executed) lists every command of the instance that
//!    succeeded (those of the same batch included, before and after the failed one), newest
//!    first, less those an earlier compensation marked undone
//!    ([`Commands::mark_undone`]); the compensating commands it returns are dispatched the same
//!    way (ids from the failed command's id), in the order returned, and the steps they mark
//!    undone leave the list.
//!
//! Telemetry: `evoq.saga.start` (an instance is created), `stop` (removed, or a stop ignored),
//! `command` (a dispatch and its outcome) and `compensate`, at DEBUG (a failed command at WARN).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::aggregate::command::{Command, Route};
use crate::aggregate::context::CommandContext;
use crate::delivery::consistency::{Consistency, settle};
use crate::delivery::consumer::{Consumer, EventMeta, HandlerFailure, HandlerFuture};
use crate::delivery::policy::HandlerOptions;
use crate::delivery::state::HandlerState;
use crate::delivery::subscribers::Registration;
use crate::dispatch::dispatcher::{self, Dispatcher, Request};
use crate::error::Error;
use crate::event::upcast::Upcaster;
use crate::store::EventStore;
use crate::util::ids::derived_id;
use crate::util::time::deadline_after;

/// A saga: implemented by `#[saga(name = "...")]` on the impl block of its state.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an evoq saga",
    label = "not a `Saga`",
    note = "put `#[saga(name = \"...\")]` on an `impl {Self}` block with `#[starts(by = field)]`, `#[continues(by = field)]` and `#[stops(by = field)]` methods"
)]
pub trait Saga: Default + Serialize + DeserializeOwned + Send + 'static {
    /// The saga's stable name: it keys its checkpoint, dead letters and instance states.
    const NAME: &'static str;
    /// The wire names of the event types its methods take.
    const EVENT_TYPES: &'static [&'static str];
    /// The options given in the attribute.
    const OPTIONS: HandlerOptions = HandlerOptions::new();
    /// The upcasters of each type of [`EVENT_TYPES`](Self::EVENT_TYPES), in the same order.
    const UPCASTERS: &'static [&'static [Upcaster]] = &[];

    /// Decodes the event and says which method takes it, for which instance: `Ok(None)` for
    /// an event that correlates to nothing.
    fn route(event: &EventMeta) -> Result<Option<Step<Self>>, HandlerFailure>;

    /// The compensating commands for a failed command (none by default).
    fn compensate(&mut self, failed: &FailedCommand) -> Commands {
        let _ = failed;
        Commands::none()
    }
}

/// What a saga method does to its instance.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// `#[starts]`: creates the instance, or routes to the existing one.
    Starts,
    /// `#[continues]`: routes to the instance, or creates it.
    Continues,
    /// `#[stops]`: runs on the instance and removes it; ignored when there is none.
    Stops,
}

type StepFn<S> = Box<dyn FnOnce(&mut S) -> Commands + Send>;

/// One routed event: the instance it correlates to and the method call (generated code).
pub struct Step<S> {
    kind: StepKind,
    instance: String,
    run: StepFn<S>,
}

impl<S> Step<S> {
    /// A step for the instance `instance` (`None` or empty: the event correlates to nothing).
    pub fn new(kind: StepKind, instance: Option<String>, run: StepFn<S>) -> Option<Self> {
        let instance = instance.filter(|key| !key.is_empty())?;
        Some(Step {
            kind,
            instance,
            run,
        })
    }
}

/// The value of a `by` field, as an instance id. A field of type `Option<T>` correlates
/// through its value, a `T` that implements this trait; `None` correlates to nothing (see
/// [`Correlate`]).
#[diagnostic::on_unimplemented(
    message = "the correlation field (or the value in its `Option`) has type `{Self}`, which cannot identify a saga instance",
    label = "`{Self}` does not implement `std::fmt::Display`",
    note = "a correlation value is a string: use `String`, an integer, a `Uuid`, an `Option` of one, or a type that implements `std::fmt::Display`"
)]
pub trait CorrelationKey {
    /// The instance id; `None` when the value correlates to nothing.
    fn correlation_key(&self) -> Option<String>;
}

#[diagnostic::do_not_recommend]
impl<T: fmt::Display + ?Sized> CorrelationKey for T {
    fn correlation_key(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// Generated code: a `by` field's value, wrapped to pick how it correlates. Method resolution
/// picks [`OptionCorrelation`] for an `Option<T>` (the impl on the value) before
/// [`KeyCorrelation`] for any other type (the impl on a reference, one autoref away), so an
/// `Option` needs no `Display` of its own; the tag returned then requires `CorrelationKey` of
/// the key, which names the field's type in the error when it has none.
#[doc(hidden)]
pub struct Correlate<'a, T: ?Sized>(pub &'a T);

/// Generated code: an `Option<T>` field correlates through its value.
#[doc(hidden)]
pub trait OptionCorrelation {
    /// The tag that reads the key in the `Option`.
    fn correlation(&self) -> OptionKey;
}

impl<T> OptionCorrelation for Correlate<'_, Option<T>> {
    fn correlation(&self) -> OptionKey {
        OptionKey
    }
}

/// Generated code: any other field is the key itself.
#[doc(hidden)]
pub trait KeyCorrelation {
    /// The tag that reads the field as the key.
    fn correlation(&self) -> PlainKey;
}

impl<T: ?Sized> KeyCorrelation for &Correlate<'_, T> {
    fn correlation(&self) -> PlainKey {
        PlainKey
    }
}

/// Generated code: reads the key of an `Option<T>` field (`None`: no instance).
#[doc(hidden)]
#[derive(Copy, Clone, Debug)]
pub struct OptionKey;

impl OptionKey {
    /// The instance id of `value`: `None` for `None` or an empty key.
    pub fn key<T: CorrelationKey>(self, value: &Option<T>) -> Option<String> {
        value.as_ref()?.correlation_key()
    }
}

/// Generated code: reads the key of a field that is not an `Option`.
#[doc(hidden)]
#[derive(Copy, Clone, Debug)]
pub struct PlainKey;

impl PlainKey {
    /// The instance id of `value`.
    pub fn key<T: CorrelationKey + ?Sized>(self, value: &T) -> Option<String> {
        value.correlation_key()
    }
}

/// A command a saga instance dispatched successfully.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutedCommand {
    /// The command's name (`Command::NAME`).
    pub name: String,
    /// Its command id.
    pub command_id: Uuid,
    /// The aggregate it went to.
    pub aggregate_id: String,
}

/// A command of a saga that failed, as its `#[compensates]` method sees it.
#[derive(Clone, Debug)]
pub struct FailedCommand {
    command: &'static str,
    command_id: Uuid,
    aggregate_id: String,
    error: String,
    instance: String,
    correlation_id: Uuid,
    executed: Vec<ExecutedCommand>,
}

impl FailedCommand {
    /// The failed command's name (`Command::NAME`).
    pub fn command(&self) -> &'static str {
        self.command
    }

    /// Whether the failed command is a `C`.
    pub fn is<C: Command>(&self) -> bool {
        self.command == C::NAME
    }

    /// Its command id.
    pub fn command_id(&self) -> Uuid {
        self.command_id
    }

    /// The aggregate it went to.
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }

    /// Why it failed.
    pub fn error(&self) -> &str {
        &self.error
    }

    /// The saga instance (the correlation value).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The correlation id of the event that led to it.
    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id
    }

    /// Every command this instance executed successfully and no compensation marked undone
    /// ([`Commands::mark_undone`]), newest first (in dispatch order): compensate them in this
    /// order. The commands of the failed command's own batch are all in it, those dispatched
    /// after the failed one included: a batch is dispatched whole before its failures are
    /// compensated.
    pub fn executed(&self) -> &[ExecutedCommand] {
        &self.executed
    }
}

/// The ids a saga gives one dispatch.
#[derive(Copy, Clone, Debug)]
pub(crate) struct DispatchIds {
    command_id: Uuid,
    causation_id: Uuid,
    correlation_id: Uuid,
}

type DispatchResult<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// A command that can dispatch itself (type erased).
trait Dispatchable: Send + 'static {
    fn name(&self) -> &'static str;
    fn aggregate_id(&self) -> String;
    fn dispatch<'a>(
        self: Box<Self>,
        dispatcher: &'a Arc<Dispatcher>,
        settings: &'a CommandSettings,
        ids: DispatchIds,
    ) -> DispatchResult<'a>;
}

struct Erased<C>(C);

impl<C: Route> Dispatchable for Erased<C> {
    fn name(&self) -> &'static str {
        C::NAME
    }

    fn aggregate_id(&self) -> String {
        self.0.aggregate_id()
    }

    fn dispatch<'a>(
        self: Box<Self>,
        dispatcher: &'a Arc<Dispatcher>,
        settings: &'a CommandSettings,
        ids: DispatchIds,
    ) -> DispatchResult<'a> {
        Box::pin(async move {
            let context = CommandContext {
                command_id: ids.command_id,
                correlation_id: ids.correlation_id,
                causation_id: Some(ids.causation_id),
                ..CommandContext::new()
            };
            let options = settings.options(dispatcher);
            let request = Request::new(self.0, context, options).with_supplied_command_id();
            let required = settings.required().await;
            if required.is_empty() {
                return dispatcher::dispatch_traced(dispatcher, request)
                    .await
                    .map(|_| ());
            }
            // The wait for the handlers shares the dispatch's deadline and span.
            let timeout = request.options.timeout;
            let deadline = deadline_after(timeout);
            let span = dispatcher::span(&request);
            let run = async {
                let done = dispatcher::dispatch(dispatcher, request, deadline).await?;
                settle::<C>(&required, done, deadline, timeout).await
            };
            dispatcher::observed(span, run).await.map(|_| ())
        })
    }
}

/// The commands a saga method returns, dispatched in order: `commands![a, b]`, or
/// `Commands::none().push(a).push(b)`. Every command must be routable (`Route`): an
/// unroutable command does not compile.
///
/// A `#[compensates]` method also says here which steps of
/// [`FailedCommand::executed`] it undid, with [`undoes`](Self::undoes) or
/// [`mark_undone`](Self::mark_undone): those leave the instance's history, and a later
/// failure no longer sees them. A step not marked stays, whatever commands are returned; an
/// empty compensation thus keeps the whole history for a later failure to undo.
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
/// let commands = commands![
///     Deposit { account: "acc-1".into(), amount: 50 },
///     Deposit { account: "acc-2".into(), amount: 50 },
/// ];
/// assert_eq!(commands.names(), ["Deposit", "Deposit"]);
/// assert!(Commands::none().is_empty());
/// ```
#[derive(Default)]
#[must_use = "a saga dispatches the commands its method returns"]
pub struct Commands {
    items: Vec<Box<dyn Dispatchable>>,
    /// The command ids of the executed steps these commands undo (a compensation).
    undone: Vec<Uuid>,
}

impl Commands {
    /// No command.
    pub fn none() -> Self {
        Commands::default()
    }

    /// These commands and `command`.
    pub fn push<C: Route>(mut self, command: C) -> Self {
        self.add(command);
        self
    }

    /// Adds `command`.
    pub fn add<C: Route>(&mut self, command: C) {
        self.items.push(Box::new(Erased(command)));
    }

    /// How many commands.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The commands' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.items.iter().map(|item| item.name()).collect()
    }

    /// These commands, with `step` (one of [`FailedCommand::executed`]) marked undone.
    pub fn undoes(mut self, step: &ExecutedCommand) -> Self {
        self.mark_undone(step);
        self
    }

    /// Marks `step` (one of [`FailedCommand::executed`]) undone by this compensation: it
    /// leaves the instance's history once the compensation is dispatched. Only a
    /// `#[compensates]` method's marks count; marking a step twice is marking it once.
    pub fn mark_undone(&mut self, step: &ExecutedCommand) {
        if !self.undone.contains(&step.command_id) {
            self.undone.push(step.command_id);
        }
    }

    /// The command ids of the steps marked undone, in the order marked.
    pub fn undone(&self) -> &[Uuid] {
        &self.undone
    }
}

impl fmt::Debug for Commands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Builds [`Commands`]: `commands![ChargePayment { .. }, ReserveStock { .. }]`.
#[macro_export]
macro_rules! commands {
    () => { $crate::saga::Commands::none() };
    ($($command:expr),+ $(,)?) => {
        $crate::saga::Commands::none() $(.push($command))+
    };
}

/// The options of one saga's registration ([`EvoqBuilder::saga_with`](crate::EvoqBuilder::saga_with)):
/// how its events are delivered (a [`HandlerOptions`], as for an event handler) and how the
/// commands it sends, compensations included, are dispatched. A command option left unset is
/// the runtime's default (`dispatch_timeout`, `conflict_retries`, [`Consistency::Eventual`]).
///
/// ```
/// use std::time::Duration;
/// use evoq_runtime::{Consistency, HandlerOptions, OnError, SagaOptions};
///
/// let options = SagaOptions::new()
///     .delivery(HandlerOptions::new().on_error(OnError::Skip))
///     .command_timeout(Duration::from_millis(500))
///     .command_retry_limit(0)
///     .command_consistency(Consistency::handlers(["shipments"]));
/// assert_eq!(options.command_retry_limit, Some(0));
/// // A `HandlerOptions` alone is a `SagaOptions` with the default command options.
/// let options: SagaOptions = HandlerOptions::new().name("fulfillment-v2").into();
/// assert_eq!(options.command_timeout, None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaOptions {
    /// How the saga's events are delivered: name, retries, error policy, start.
    pub delivery: HandlerOptions,
    /// How long each command waits, consistency wait included (default: `dispatch_timeout`).
    pub command_timeout: Option<Duration>,
    /// How many times a command is re-run after a version conflict (default:
    /// `conflict_retries`).
    pub command_retry_limit: Option<u32>,
    /// Which event handlers each command waits for before it counts as done (default:
    /// [`Consistency::Eventual`]). The saga itself is never waited for.
    pub command_consistency: Consistency,
}

impl SagaOptions {
    /// No option set.
    pub fn new() -> Self {
        SagaOptions::default()
    }

    /// How the saga's events are delivered (they take precedence over its attribute's).
    pub fn delivery(mut self, delivery: HandlerOptions) -> Self {
        self.delivery = delivery;
        self
    }

    /// How long each command of the saga waits before it fails with [`Error::Timeout`] (and
    /// is compensated).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = Some(timeout);
        self
    }

    /// How many times each command of the saga is re-run after a version conflict (0: a
    /// conflict fails the command at once, and it is compensated).
    pub fn command_retry_limit(mut self, retries: u32) -> Self {
        self.command_retry_limit = Some(retries);
        self
    }

    /// Which event handlers each command of the saga waits for; a wait that does not end
    /// within the command's timeout fails the command with [`Error::ConsistencyTimeout`] (its
    /// events were stored) and it is compensated.
    pub fn command_consistency(mut self, consistency: Consistency) -> Self {
        self.command_consistency = consistency;
        self
    }
}

impl From<HandlerOptions> for SagaOptions {
    fn from(delivery: HandlerOptions) -> Self {
        SagaOptions::new().delivery(delivery)
    }
}

/// How a saga's commands are dispatched: its [`SagaOptions`], with the handlers its
/// consistency waits for, known once the runtime's handlers have started.
pub(crate) struct CommandSettings {
    timeout: Option<Duration>,
    retry_limit: Option<u32>,
    /// The handlers each command waits for; `None` until the builder resolved them (the saga's
    /// task may start before: its first command waits for them).
    required: watch::Sender<Option<Arc<[Arc<HandlerState>]>>>,
}

impl CommandSettings {
    /// The settings of `options`. With a consistency other than `Eventual`, commands wait
    /// until [`set_required`](Self::set_required) is called.
    pub(crate) fn new(options: &SagaOptions) -> Self {
        let eventual = matches!(options.command_consistency, Consistency::Eventual);
        let required = eventual.then(|| Arc::from(Vec::new()));
        CommandSettings {
            timeout: options.command_timeout,
            retry_limit: options.command_retry_limit,
            required: watch::Sender::new(required),
        }
    }

    /// The handlers each command waits for, the saga `own` itself left out (it would wait
    /// for the event it is handling).
    pub(crate) fn set_required(&self, required: Vec<Arc<HandlerState>>, own: &str) {
        let others: Vec<_> = required
            .into_iter()
            .filter(|handler| &*handler.name != own)
            .collect();
        self.required.send_replace(Some(Arc::from(others)));
    }

    /// The handlers each command waits for, once resolved.
    async fn required(&self) -> Arc<[Arc<HandlerState>]> {
        let mut resolved = self.required.subscribe();
        match resolved.wait_for(Option::is_some).await {
            Ok(required) => required.clone().unwrap_or_else(|| Arc::from(Vec::new())),
            // Unreachable: `self` holds the sender.
            Err(_) => Arc::from(Vec::new()),
        }
    }

    /// The dispatch options of one command.
    fn options(&self, dispatcher: &Dispatcher) -> crate::aggregate::context::DispatchOptions {
        let mut options = dispatcher.default_options();
        if let Some(timeout) = self.timeout {
            options.timeout = timeout;
        }
        if let Some(retries) = self.retry_limit {
            options.retry_limit = retries;
        }
        options
    }
}

/// The state of instance `instance` of the saga `S` in `store`: `None` when it has none (never
/// started, or stopped); [`Error::SagaState`] when the saved state does not decode.
pub(crate) async fn load_state<S: Saga>(
    store: &dyn EventStore,
    instance: &str,
) -> Result<Option<S>, Error> {
    let Some(bytes) = store.load_saga_state(S::NAME, instance).await? else {
        return Ok(None);
    };
    let saved: Instance<S> = serde_json::from_slice(&bytes).map_err(|error| Error::SagaState {
        saga: S::NAME,
        instance: instance.to_owned(),
        reason: error.to_string(),
    })?;
    Ok(Some(saved.state))
}

/// What the store keeps of one instance.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Instance<S: Saga> {
    state: S,
    /// The commands dispatched successfully and not marked undone by a compensation, oldest
    /// first.
    #[serde(default)]
    executed: Vec<ExecutedCommand>,
    /// The last event the instance handled: its position and the state before it, so that a
    /// re-delivery runs the method on the same state again (and dispatches the same ids).
    #[serde(default)]
    last: Option<LastEvent>,
}

#[derive(Serialize, Deserialize)]
struct LastEvent {
    position: u64,
    before: serde_json::Value,
    /// The executed commands before it.
    #[serde(default)]
    executed: Vec<ExecutedCommand>,
}

/// A saga as the subscription engine sees it: it dispatches through a weak handle on the
/// runtime's dispatcher (the runtime owns the dispatcher and the saga's task, not the reverse).
pub(crate) struct SagaConsumer<S> {
    dispatcher: Weak<Dispatcher>,
    settings: Arc<CommandSettings>,
    _saga: std::marker::PhantomData<fn() -> S>,
}

impl<S: Saga> Consumer for SagaConsumer<S> {
    /// A saga's checkpoint advances with its instance states, after every event.
    const CHECKPOINT_EVERY_EVENT: bool = true;

    fn consume<'a>(&'a mut self, event: &'a EventMeta) -> HandlerFuture<'a> {
        Box::pin(async move {
            let Some(dispatcher) = self.dispatcher.upgrade() else {
                return Err(failure(event, "the runtime is gone"));
            };
            handle::<S>(&dispatcher, &self.settings, event).await
        })
    }
}

/// The engine's registration of the saga `S`, with the builder's `options`; its commands go
/// through `dispatcher`, with `settings`.
pub(crate) fn registration<S: Saga>(
    dispatcher: Weak<Dispatcher>,
    options: HandlerOptions,
    settings: Arc<CommandSettings>,
) -> Registration {
    Registration::new(
        S::NAME,
        S::EVENT_TYPES,
        S::UPCASTERS,
        S::OPTIONS,
        options,
        SagaConsumer::<S> {
            dispatcher,
            settings,
            _saga: std::marker::PhantomData,
        },
    )
}

/// The name the saga `S` runs under with `options` (its handler name).
pub(crate) fn handler_name<S: Saga>(options: &HandlerOptions) -> String {
    match options.name.as_ref().or(S::OPTIONS.name.as_ref()) {
        Some(name) => name.to_string(),
        None => S::NAME.to_owned(),
    }
}

fn failure(event: &EventMeta, reason: impl fmt::Display) -> HandlerFailure {
    HandlerFailure::new(SagaError(format!(
        "saga could not handle event {} ({}): {reason}",
        event.event_id(),
        event.event_type()
    )))
}

#[derive(Debug)]
struct SagaError(String);

impl fmt::Display for SagaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SagaError {}

async fn handle<S: Saga>(
    dispatcher: &Arc<Dispatcher>,
    settings: &CommandSettings,
    event: &EventMeta,
) -> Result<(), HandlerFailure> {
    let Some(step) = S::route(event)? else {
        return Ok(());
    };
    let store = dispatcher.store();
    let saga = S::NAME;
    let key = step.instance;
    let loaded = store
        .load_saga_state(saga, &key)
        .await
        .map_err(|error| failure(event, error))?;
    let mut instance: Instance<S> = match loaded {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
            failure(
                event,
                format!("the state of instance `{key}` does not decode: {error}"),
            )
        })?,
        None if step.kind == StepKind::Stops => {
            tracing::debug!(
                name: "evoq.saga.stop",
                stage = "ignored",
                saga,
                instance = %key,
                event_type = event.event_type(),
            );
            return Ok(());
        }
        None => {
            tracing::debug!(
                name: "evoq.saga.start",
                saga,
                instance = %key,
                event_type = event.event_type(),
            );
            Instance {
                state: S::default(),
                executed: Vec::new(),
                last: None,
            }
        }
    };

    let position = event.global_position();
    if let Some(last) = &instance.last {
        if position < last.position {
            // Handled before a later event of this instance: nothing to do again.
            return Ok(());
        }
        if position == last.position {
            instance.state = serde_json::from_value(last.before.clone()).map_err(|error| {
                failure(
                    event,
                    format!("the state of instance `{key}` does not decode: {error}"),
                )
            })?;
            instance.executed = last.executed.clone();
        }
    }
    let before = serde_json::to_value(&instance.state)
        .map_err(|error| failure(event, format!("the state does not serialize: {error}")))?;
    let commands = (step.run)(&mut instance.state);
    instance.last = Some(LastEvent {
        position,
        before,
        executed: instance.executed.clone(),
    });
    let stops = step.kind == StepKind::Stops;
    if stops {
        store
            .delete_saga_state(saga, &key)
            .await
            .map_err(|error| failure(event, error))?;
        tracing::debug!(name: "evoq.saga.stop", stage = "stop", saga, instance = %key);
    } else {
        let bytes = encode(&instance, event)?;
        save(dispatcher, saga, &key, bytes, event).await?;
    }

    // An event stored without a correlation id starts a correlation of its own.
    let correlation_id = event
        .metadata()
        .correlation_id
        .unwrap_or_else(|| event.event_id());
    let base = format!("{saga}/{key}");
    let results = dispatch_all(dispatcher, settings, saga, &key, commands, |index| {
        DispatchIds {
            command_id: derived_id(&base, event.event_id(), index),
            causation_id: event.event_id(),
            correlation_id,
        }
    })
    .await
    .map_err(|error| failure(event, error))?;

    let (done, failures) = split_outcomes(results);
    let mut changed = record_executed(&mut instance.executed, done);
    for failed in failures {
        changed = true;
        let failed = FailedCommand {
            command: failed.command,
            command_id: failed.command_id,
            aggregate_id: failed.aggregate_id,
            error: failed.error,
            instance: key.clone(),
            correlation_id,
            executed: instance.executed.iter().rev().cloned().collect(),
        };
        let compensation = instance.state.compensate(&failed);
        tracing::debug!(
            name: "evoq.saga.compensate",
            saga,
            instance = %key,
            failed = failed.command,
            commands = compensation.len(),
            undone = compensation.undone.len(),
        );
        instance
            .executed
            .retain(|step| !compensation.undone.contains(&step.command_id));
        let cause = event.event_id();
        let compensation_base = format!("{base}/compensate");
        let failed_id = failed.command_id;
        dispatch_all(dispatcher, settings, saga, &key, compensation, |index| {
            DispatchIds {
                command_id: derived_id(&compensation_base, failed_id, index),
                causation_id: cause,
                correlation_id,
            }
        })
        .await
        .map_err(|error| failure(event, error))?;
    }
    if changed && !stops {
        let bytes = encode(&instance, event)?;
        save(dispatcher, saga, &key, bytes, event).await?;
    }
    Ok(())
}

async fn save(
    dispatcher: &Dispatcher,
    saga: &str,
    key: &str,
    bytes: Vec<u8>,
    event: &EventMeta,
) -> Result<(), HandlerFailure> {
    dispatcher
        .store()
        .save_saga_state(saga, key, bytes)
        .await
        .map_err(|error| failure(event, error))
}

fn encode<S: Saga>(instance: &Instance<S>, event: &EventMeta) -> Result<Vec<u8>, HandlerFailure> {
    serde_json::to_vec(instance)
        .map_err(|error| failure(event, format!("the state does not serialize: {error}")))
}

/// The outcome of one dispatched command.
enum CommandOutcome {
    Done(ExecutedCommand),
    Failed(Failure),
}

/// A command that failed, before it is handed to the compensation.
struct Failure {
    command: &'static str,
    command_id: Uuid,
    aggregate_id: String,
    error: String,
}

/// The successes and the failures of a batch, each in dispatch order.
fn split_outcomes(outcomes: Vec<CommandOutcome>) -> (Vec<ExecutedCommand>, Vec<Failure>) {
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for outcome in outcomes {
        match outcome {
            CommandOutcome::Done(executed) => done.push(executed),
            CommandOutcome::Failed(failed) => failures.push(failed),
        }
    }
    (done, failures)
}

/// Appends the successes to the instance's history (oldest first), skipping those it already
/// holds; whether it changed.
fn record_executed(history: &mut Vec<ExecutedCommand>, done: Vec<ExecutedCommand>) -> bool {
    let mut changed = false;
    for executed in done {
        if !history
            .iter()
            .any(|step| step.command_id == executed.command_id)
        {
            history.push(executed);
            changed = true;
        }
    }
    changed
}

/// Dispatches every command, in order, even after a failure; the outcomes in the same order.
/// A runtime that is stopping ends it: the event is delivered again after a restart (with the
/// same ids), and nothing is compensated for a shutdown.
async fn dispatch_all(
    dispatcher: &Arc<Dispatcher>,
    settings: &CommandSettings,
    saga: &'static str,
    instance: &str,
    commands: Commands,
    ids: impl Fn(usize) -> DispatchIds,
) -> Result<Vec<CommandOutcome>, Error> {
    let mut outcomes = Vec::with_capacity(commands.len());
    for (index, command) in commands.items.into_iter().enumerate() {
        let ids = ids(index);
        let name = command.name();
        let aggregate_id = command.aggregate_id();
        match command.dispatch(dispatcher, settings, ids).await {
            Ok(()) => {
                tracing::debug!(
                    name: "evoq.saga.command",
                    stage = "stop",
                    saga,
                    instance,
                    command = name,
                    command_id = %ids.command_id,
                );
                outcomes.push(CommandOutcome::Done(ExecutedCommand {
                    name: name.to_owned(),
                    command_id: ids.command_id,
                    aggregate_id,
                }));
            }
            Err(error @ Error::Stopped { .. }) => return Err(error),
            Err(error) => {
                tracing::warn!(
                    name: "evoq.saga.command",
                    stage = "exception",
                    saga,
                    instance,
                    command = name,
                    command_id = %ids.command_id,
                    error = %error,
                );
                outcomes.push(CommandOutcome::Failed(Failure {
                    command: name,
                    command_id: ids.command_id,
                    aggregate_id,
                    error: error.to_string(),
                }));
            }
        }
    }
    Ok(outcomes)
}
