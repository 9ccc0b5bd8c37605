//! `Commands`: what a saga method returns; the executed and failed commands it sees.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::options::CommandSettings;
use crate::aggregate::command::{Command, Route};
use crate::aggregate::context::CommandContext;
use crate::delivery::consistency::settle;
use crate::dispatch::dispatcher::{self, Dispatcher, Request};
use crate::error::Error;
use crate::event::definition::Event;
use crate::util::time::deadline_after;

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
    pub(super) command: &'static str,
    pub(super) command_id: Uuid,
    pub(super) aggregate_id: String,
    pub(super) error: String,
    pub(super) instance: String,
    pub(super) correlation_id: Uuid,
    pub(super) executed: Vec<ExecutedCommand>,
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

    /// Why it failed: for a command its aggregate rejected, the domain error's own text (its
    /// `Display`, e.g. `no carrier for order 7`); for any other failure (a conflict, a
    /// timeout, ...), the whole text of the runtime's `Error`.
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
    pub(super) command_id: Uuid,
    pub(super) causation_id: Uuid,
    pub(super) correlation_id: Uuid,
}

pub(super) type DispatchResult<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// A command that can dispatch itself (type erased).
pub(super) trait Dispatchable: Send + 'static {
    fn name(&self) -> &'static str;
    fn aggregate_id(&self) -> String;
    /// The command, to read it back by type ([`Commands::of`]).
    fn as_any(&self) -> &dyn Any;
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

    fn as_any(&self) -> &dyn Any {
        &self.0
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
    pub(super) items: Vec<Box<dyn Dispatchable>>,
    /// The command ids of the executed steps these commands undo (a compensation).
    pub(super) undone: Vec<Uuid>,
    /// The timeouts to schedule, in the order added.
    pub(super) timeouts: Vec<ScheduledTimeout>,
}

/// When a scheduled timeout is due.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// This long after the event the saga method handled was recorded.
    After(Duration),
    /// At this time.
    At(SystemTime),
}

impl Due {
    /// The time it is due, for a method that handled an event recorded at `recorded_at`.
    pub(super) fn at(self, recorded_at: SystemTime) -> SystemTime {
        match self {
            Due::After(delay) => recorded_at.checked_add(delay).unwrap_or(recorded_at),
            Due::At(at) => at,
        }
    }
}

/// An event to append for the instance when it is due (type erased).
pub(super) trait TimeoutEvent: Send + 'static {
    fn name(&self) -> &'static str;
    fn schema_version(&self) -> u32;
    fn encode(&self) -> Result<Vec<u8>, serde_json::Error>;
    fn as_any(&self) -> &dyn Any;
}

impl<E: Event> TimeoutEvent for E {
    fn name(&self) -> &'static str {
        E::NAME
    }

    fn schema_version(&self) -> u32 {
        E::VERSION
    }

    fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A timeout a saga method scheduled: its event, and when it is due.
pub(super) struct ScheduledTimeout {
    pub(super) due: Due,
    pub(super) event: Box<dyn TimeoutEvent>,
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

    /// The commands of type `C`, in order, to read their fields (a test's assertions):
    ///
    /// ```
    /// # use evoq::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    /// # struct Moved { amount: u64 }
    /// # #[derive(Command)]
    /// # struct Deposit { #[aggregate_id] account: String, amount: u64 }
    /// # #[derive(Command)]
    /// # struct Withdraw { #[aggregate_id] account: String, amount: u64 }
    /// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
    /// # #[derive(Default)] struct Account;
    /// # #[aggregate]
    /// # impl Account {
    /// #     #[handles]
    /// #     fn deposit(&self, c: &Deposit) -> Result<Moved, Never> { Ok(Moved { amount: c.amount }) }
    /// #     #[handles]
    /// #     fn withdraw(&self, c: &Withdraw) -> Result<Moved, Never> { Ok(Moved { amount: c.amount }) }
    /// #     #[apply]
    /// #     fn moved(&mut self, _: &Moved) {}
    /// # }
    /// let commands = commands![
    ///     Withdraw { account: "acc-1".into(), amount: 50 },
    ///     Deposit { account: "acc-2".into(), amount: 50 },
    /// ];
    /// let deposits = commands.of::<Deposit>();
    /// assert_eq!(deposits.len(), 1);
    /// assert_eq!(deposits[0].account, "acc-2");
    /// assert_eq!(commands.get::<Withdraw>(0).map(|w| w.amount), Some(50));
    /// assert!(commands.get::<Withdraw>(1).is_none()); // a `Deposit`
    /// ```
    pub fn of<C: Command>(&self) -> Vec<&C> {
        self.items
            .iter()
            .filter_map(|item| item.as_any().downcast_ref::<C>())
            .collect()
    }

    /// The command at `index` (among all of them, in order), if it is a `C`.
    pub fn get<C: Command>(&self, index: usize) -> Option<&C> {
        self.items.get(index)?.as_any().downcast_ref::<C>()
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

    /// These commands, and a timeout: `event` is appended for this instance `delay` after the
    /// event the method handled was recorded, and delivered to the saga's method that takes
    /// its type (so the saga must take it, correlated by one of its fields). A timeout fires
    /// once, also after a restart and across nodes, and never after its instance stopped.
    pub fn timeout_after<E: Event>(mut self, delay: Duration, event: E) -> Self {
        self.add_timeout(Due::After(delay), event);
        self
    }

    /// These commands, and a timeout whose `event` is appended for this instance at `at` (see
    /// [`timeout_after`](Self::timeout_after)).
    pub fn timeout_at<E: Event>(mut self, at: SystemTime, event: E) -> Self {
        self.add_timeout(Due::At(at), event);
        self
    }

    /// Adds a timeout whose `event` is appended for this instance when `due` (see
    /// [`timeout_after`](Self::timeout_after)).
    pub fn add_timeout<E: Event>(&mut self, due: Due, event: E) {
        self.timeouts.push(ScheduledTimeout {
            due,
            event: Box::new(event),
        });
    }

    /// The scheduled timeouts whose event is an `E`, in order, each with when it is due.
    pub fn timeouts_of<E: Event>(&self) -> Vec<(&E, Due)> {
        self.timeouts
            .iter()
            .filter_map(|timeout| {
                let event = timeout.event.as_any().downcast_ref::<E>()?;
                Some((event, timeout.due))
            })
            .collect()
    }

    /// The event types of the scheduled timeouts, in order.
    pub fn timeout_names(&self) -> Vec<&'static str> {
        self.timeouts
            .iter()
            .map(|timeout| timeout.event.name())
            .collect()
    }
}

impl fmt::Debug for Commands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        list.entries(self.names());
        for timeout in &self.timeouts {
            list.entry(&format_args!(
                "timeout {} ({:?})",
                timeout.event.name(),
                timeout.due
            ));
        }
        list.finish()
    }
}

/// A command a saga sends has a route: an aggregate handles it.
///
/// `commands![...]` adds each command through this trait, implemented for every command with a
/// [`Route`], so a command that no aggregate handles is one error on the command's expression,
/// in this trait's words. (In the facade: `evoq::checks::SagaCommand`.)
#[diagnostic::on_unimplemented(
    message = "no aggregate handles the command `{Self}`, so a saga cannot send it",
    label = "`{Self}` has no route to an aggregate",
    note = "add `#[handles] fn name(&self, command: &{Self}) -> Result<SomeEvent, SomeError>` to the `#[aggregate]` block of the aggregate that owns `{Self}`"
)]
pub trait SagaCommand: Sized {
    /// `commands` and this command.
    #[doc(hidden)]
    fn push_into(self, commands: Commands) -> Commands;
}

#[diagnostic::do_not_recommend]
impl<C: Route> SagaCommand for C {
    fn push_into(self, commands: Commands) -> Commands {
        commands.push(self)
    }
}

/// Builds [`Commands`]: `commands![ChargePayment { .. }, ReserveStock { .. }]`.
///
/// Every command must have a route (an aggregate that handles it): one that has none is a
/// compile error on its expression.
#[macro_export]
macro_rules! commands {
    () => { $crate::saga::Commands::none() };
    ($($command:expr),+ $(,)?) => {{
        let commands = $crate::saga::Commands::none();
        $(let commands = $crate::saga::SagaCommand::push_into($command, commands);)+
        commands
    }};
}
