//! Given / when / then tests of one saga instance, without a runtime or a store: [`SagaTest`].
//!
//! Every event goes through the saga's generated [`Saga::route`], as at run time, from a
//! record built for it: the correlation field picks the instance (an empty or `None` value is
//! ignored), a `#[starts]` or `#[continues]` event creates a missing instance with
//! [`Saga::init`], a `#[stops]` event removes it (and is ignored without one). Each command
//! the saga sends counts as executed, with the id the runtime would give it, until
//! [`SagaTest::when_failed`] says one failed: the `#[compensates]` method then gets the
//! [`FailedCommand`] the runtime would build.

use std::borrow::Cow;
use std::fmt::{self, Display};
use std::sync::Arc;
use std::time::SystemTime;

use uuid::Uuid;

use super::commands::{Commands, ExecutedCommand, FailedCommand};
use super::definition::{Saga, StepKind};
use crate::aggregate::command::Command;
use crate::delivery::consumer::EventMeta;
use crate::envelope::{Metadata, RecordedEvent, stream_id};
use crate::event::definition::Event;
use crate::util::ids::{derived_id, new_v7};

/// One instance of the saga `S` under test: given events it already handled, when an event
/// (or the failure of one of its commands), then its commands, its state, what it undid.
///
/// ```
/// use evoq::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// struct OrderPlaced { order_id: String, amount: u64 }
/// #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// struct PaymentCharged { order_id: String }
/// #[derive(Command)]
/// struct ChargePayment { #[aggregate_id] order_id: String, amount: u64 }
/// #[derive(Command)]
/// struct RefundPayment { #[aggregate_id] order_id: String, amount: u64 }
/// #[derive(Command)]
/// struct ShipOrder { #[aggregate_id] order_id: String }
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # #[derive(Default)] struct Payment;
/// # #[aggregate]
/// # impl Payment {
/// #     #[handles]
/// #     fn charge(&self, c: &ChargePayment) -> Result<PaymentCharged, Never> {
/// #         Ok(PaymentCharged { order_id: c.order_id.clone() })
/// #     }
/// #     #[handles]
/// #     fn refund(&self, _: &RefundPayment) -> Result<(), Never> { Ok(()) }
/// #     #[handles]
/// #     fn ship(&self, _: &ShipOrder) -> Result<(), Never> { Ok(()) }
/// #     #[apply]
/// #     fn charged(&mut self, _: &PaymentCharged) {}
/// # }
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct OrderFulfillment { amount: u64 }
///
/// #[saga(name = "order_fulfillment")]
/// impl OrderFulfillment {
///     #[starts(by = order_id)]
///     fn placed(&mut self, e: &OrderPlaced) -> Commands {
///         self.amount = e.amount;
///         commands![ChargePayment { order_id: e.order_id.clone(), amount: e.amount }]
///     }
///
///     #[continues(by = order_id)]
///     fn paid(&mut self, e: &PaymentCharged) -> Commands {
///         commands![ShipOrder { order_id: e.order_id.clone() }]
///     }
///
///     #[compensates]
///     fn failed(&mut self, failed: &FailedCommand) -> Commands {
///         let mut undo = Commands::none();
///         for step in failed.executed() {
///             if step.name == "ChargePayment" {
///                 undo.add(RefundPayment { order_id: step.aggregate_id.clone(), amount: self.amount });
///             }
///             undo.mark_undone(step);
///         }
///         undo
///     }
/// }
///
/// SagaTest::<OrderFulfillment>::new("order-1")
///     .when(OrderPlaced { order_id: "order-1".into(), amount: 40 })
///     .then_created()
///     .then_command(|charge: &ChargePayment| assert_eq!(charge.amount, 40))
///     .then_state(|saga| assert_eq!(saga.amount, 40))
///     .and_when(PaymentCharged { order_id: "order-1".into() })
///     .then_command_names(["ShipOrder"])
///     // The shipment fails: the charge is refunded and marked undone.
///     .and_when_failed::<ShipOrder>("no carrier")
///     .then_command(|refund: &RefundPayment| assert_eq!(refund.amount, 40))
///     .then_undone(["ChargePayment"]);
///
/// // An order placed without an id correlates to no instance.
/// SagaTest::<OrderFulfillment>::new("order-2")
///     .when(OrderPlaced { order_id: String::new(), amount: 1 })
///     .then_ignored()
///     .then_no_instance();
/// ```
///
/// The test is about one instance, the id given to [`new`](Self::new): an event that
/// correlates to another instance is a mistake of the test, and panics.
pub struct SagaTest<S: Saga> {
    instance: String,
    /// The live instance; `None` before it starts and after it stops. Its state is the one
    /// the next event finds: saved and read back as JSON, as the runtime does between events.
    live: Option<Live<S>>,
    /// The live instance's state as the last event's method left it, before it was saved:
    /// a failure of that event's commands is compensated on it, as the runtime does while it
    /// still handles the event. `None` once another event came.
    fresh: Option<S>,
    /// The instance the last event stopped: the commands of that event may still fail (the
    /// runtime compensates them on the state it stopped with, and saves nothing).
    stopped: Option<Live<S>>,
    /// The correlation id of every event the test feeds.
    correlation_id: Uuid,
    /// The position of the last event fed.
    position: u64,
}

/// An instance's state and the commands it executed, oldest first (as the runtime keeps it).
struct Live<S> {
    state: S,
    executed: Vec<ExecutedCommand>,
}

impl<S: Saga> SagaTest<S> {
    /// The instance `instance` of the saga, before any event (no state yet).
    pub fn new(instance: impl Into<String>) -> Self {
        SagaTest {
            instance: instance.into(),
            live: None,
            fresh: None,
            stopped: None,
            correlation_id: new_v7(),
            position: 0,
        }
    }

    /// The instance after handling `event` as at run time (it may start or stop it, or be
    /// ignored); the commands it returns count as executed. Panics when the saga takes no
    /// event of this type, or when the event correlates to another instance.
    #[track_caller]
    pub fn given<E: Event>(mut self, event: E) -> Self {
        // Its commands are in the instance's history already: nothing to assert on them.
        let _ = self.handle(event);
        self
    }

    /// Runs `event`: assert on what it did with the `then_*` methods of the [`SagaOutcome`].
    /// Panics as [`given`](Self::given) does.
    #[track_caller]
    pub fn when<E: Event>(mut self, event: E) -> SagaOutcome<S> {
        let input = format!("event `{}`", E::NAME);
        let (handling, commands) = self.handle(event);
        SagaOutcome {
            test: self,
            input,
            handling,
            commands,
        }
    }

    /// Fails the newest command of type `C` the instance sent, with `error`: the
    /// `#[compensates]` method gets the [`FailedCommand`] the runtime would build (its
    /// `executed()`: every other command the instance sent and no compensation marked undone,
    /// newest first), and the steps it marks undone leave the instance's history. Panics when
    /// the instance sent no `C` (or has no state: it never started).
    #[track_caller]
    pub fn when_failed<C: Command>(mut self, error: impl Display) -> SagaOutcome<S> {
        let input = format!("the failure of `{}`", C::NAME);
        let (failed, commands) = self.fail::<C>(error.to_string());
        SagaOutcome {
            test: self,
            input,
            handling: Handling::Compensated(failed),
            commands,
        }
    }

    /// The instance id under test.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The instance's state: `None` before it starts and after it stops.
    pub fn state(&self) -> Option<&S> {
        self.live.as_ref().map(|live| &live.state)
    }

    /// The commands the instance executed and no compensation marked undone, newest first (what
    /// a [`FailedCommand::executed`] would list now).
    pub fn executed(&self) -> Vec<&ExecutedCommand> {
        self.live
            .as_ref()
            .or(self.stopped.as_ref())
            .map(|live| live.executed.iter().rev().collect())
            .unwrap_or_default()
    }

    /// Routes `event` and runs the method on the instance, as the saga's consumer does.
    #[track_caller]
    fn handle<E: Event>(&mut self, event: E) -> (Handling, Commands) {
        let saga = S::NAME;
        if !S::EVENT_TYPES.contains(&E::NAME) {
            panic!(
                "the saga `{saga}` takes no `{}` event: its methods take {:?}",
                E::NAME,
                S::EVENT_TYPES
            );
        }
        // The commands of the instance a stop removed could fail until the next event only;
        // the next event finds the saved state.
        self.stopped = None;
        self.fresh = None;
        let meta = self.record(&event);
        let step = match S::route(&meta) {
            Ok(Some(step)) => step,
            Ok(None) => return (Handling::Ignored(Ignored::NoInstance), Commands::none()),
            Err(failure) => panic!(
                "the saga `{saga}` could not take event `{}`: {failure}",
                E::NAME
            ),
        };
        if step.instance != self.instance {
            panic!(
                "event `{}` correlates to instance `{}` of the saga `{saga}`, but this test is about instance `{}`: give the event that instance's id, or test `SagaTest::new({:?})`",
                E::NAME,
                step.instance,
                self.instance,
                step.instance
            );
        }
        let (mut live, created) = match self.live.take() {
            Some(live) => (live, false),
            None if step.kind == StepKind::Stops => {
                return (Handling::Ignored(Ignored::NotStarted), Commands::none());
            }
            None => {
                let live = Live {
                    state: S::init(&self.instance),
                    executed: Vec::new(),
                };
                (live, true)
            }
        };
        let commands = (step.run)(&mut live.state);
        // Dispatched with the ids the runtime derives; every one succeeds until a test says
        // otherwise (`when_failed`).
        let base = format!("{saga}/{}", self.instance);
        for (index, command) in commands.items.iter().enumerate() {
            live.executed.push(ExecutedCommand {
                name: command.name().to_owned(),
                command_id: derived_id(&base, meta.event_id(), index),
                aggregate_id: command.aggregate_id(),
            });
        }
        if step.kind == StepKind::Stops {
            self.stopped = Some(live);
        } else {
            let next = saved(&self.instance, &live.state);
            self.fresh = Some(std::mem::replace(&mut live.state, next));
            self.live = Some(live);
        }
        let handling = Handling::Ran {
            kind: step.kind,
            created,
        };
        (handling, commands)
    }

    /// Fails the newest `C` of the instance's history and runs the compensation.
    #[track_caller]
    fn fail<C: Command>(&mut self, error: String) -> (FailedCommand, Commands) {
        let saga = S::NAME;
        let instance = self.instance.clone();
        let stopped = self.live.is_none();
        let Some(live) = self.live.as_mut().or(self.stopped.as_mut()) else {
            panic!(
                "the instance `{instance}` of the saga `{saga}` has no state (it never started, or it stopped before its last event): it sent no `{}` that could fail",
                C::NAME
            );
        };
        let Some(at) = live.executed.iter().rposition(|step| step.name == C::NAME) else {
            panic!(
                "the instance `{instance}` of the saga `{saga}` sent no `{}` that could fail; the commands it executed, newest first: {:?}",
                C::NAME,
                names(live.executed.iter().rev()),
            );
        };
        let step = live.executed.remove(at);
        let failed = FailedCommand {
            command: C::NAME,
            command_id: step.command_id,
            aggregate_id: step.aggregate_id,
            error,
            instance,
            correlation_id: self.correlation_id,
            executed: live.executed.iter().rev().cloned().collect(),
        };
        // Right after the event that sent it, on the state as its method left it; later, on
        // the saved state (the runtime loads it to compensate).
        let compensation = match self.fresh.as_mut() {
            Some(fresh) if !stopped => fresh.compensate(&failed),
            _ => live.state.compensate(&failed),
        };
        live.executed
            .retain(|step| !compensation.undone.contains(&step.command_id));
        if !stopped {
            let compensated = self.fresh.as_ref().unwrap_or(&live.state);
            live.state = saved(&self.instance, compensated);
        }
        (failed, compensation)
    }

    /// The stored form of `event`, delivered as the store would: its own id and position, the
    /// test's correlation id.
    #[track_caller]
    fn record<E: Event>(&mut self, event: &E) -> EventMeta {
        self.position += 1;
        let data = serde_json::to_vec(event).unwrap_or_else(|error| {
            panic!("event `{}` does not serialize: {error}", E::NAME);
        });
        EventMeta::new(Arc::new(RecordedEvent {
            event_id: new_v7(),
            stream_id: Arc::from(stream_id("SagaTest", &self.instance)),
            stream_version: self.position,
            global_position: self.position,
            event_type: Cow::Borrowed(E::NAME),
            schema_version: E::VERSION,
            data,
            metadata: Metadata {
                correlation_id: Some(self.correlation_id),
                ..Metadata::default()
            },
            recorded_at: SystemTime::now(),
        }))
    }
}

/// `state` as the next event finds it: the runtime saves every instance between two events, so
/// a state that does not come back from its JSON is a failure here too.
#[track_caller]
fn saved<S: Saga>(instance: &str, state: &S) -> S {
    let saga = S::NAME;
    let json = serde_json::to_value(state).unwrap_or_else(|error| {
        panic!(
            "the state of instance `{instance}` of the saga `{saga}` does not serialize: {error}"
        );
    });
    serde_json::from_value(json.clone()).unwrap_or_else(|error| {
        panic!(
            "the state of instance `{instance}` of the saga `{saga}` does not decode from what it saved ({json}): {error}"
        );
    })
}

/// What the event (or the failure) did.
enum Handling {
    /// A method ran on the instance.
    Ran { kind: StepKind, created: bool },
    /// Nothing ran.
    Ignored(Ignored),
    /// The `#[compensates]` method ran for this failure.
    Compensated(FailedCommand),
}

/// Why an event was ignored.
#[derive(Copy, Clone)]
enum Ignored {
    /// Its correlation field is empty or `None`.
    NoInstance,
    /// It stops an instance that does not exist.
    NotStarted,
}

impl fmt::Display for Handling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handling::Ran { kind, created } => {
                let method = match kind {
                    StepKind::Starts => "`#[starts]`",
                    StepKind::Continues => "`#[continues]`",
                    StepKind::Stops => "`#[stops]`",
                };
                let on = if *created { "a new" } else { "the existing" };
                write!(f, "it ran the {method} method on {on} instance")
            }
            Handling::Ignored(Ignored::NoInstance) => f.write_str(
                "it was ignored: its correlation field is empty or `None`, so it belongs to no instance",
            ),
            Handling::Ignored(Ignored::NotStarted) => {
                f.write_str("it was ignored: it stops an instance that does not exist")
            }
            Handling::Compensated(_) => f.write_str("it ran the `#[compensates]` method"),
        }
    }
}

/// What one event (or one failed command) did to a [`SagaTest`]; assert on it with the
/// `then_*` methods, which panic with what was expected and what came.
pub struct SagaOutcome<S: Saga> {
    test: SagaTest<S>,
    /// What was fed, for messages: "event `OrderPlaced`".
    input: String,
    handling: Handling,
    /// What the method returned (none when the event was ignored).
    commands: Commands,
}

impl<S: Saga> SagaOutcome<S> {
    /// The commands (and timeouts) the method returned, for the runtime to dispatch: read
    /// them by type with [`Commands::of`], [`Commands::get`] and [`Commands::timeouts_of`].
    /// None when the event was ignored.
    pub fn commands(&self) -> &Commands {
        &self.commands
    }

    /// The instance's state after it: `None` when it stopped the instance or it never started.
    pub fn state(&self) -> Option<&S> {
        self.test.state()
    }

    /// Whether the event was ignored: it correlates to no instance, or it stops one that does
    /// not exist.
    pub fn ignored(&self) -> bool {
        matches!(self.handling, Handling::Ignored(_))
    }

    /// Whether the event created the instance (a `#[starts]` or `#[continues]` event for an
    /// instance that did not exist).
    pub fn created(&self) -> bool {
        matches!(self.handling, Handling::Ran { created: true, .. })
    }

    /// The failed command the `#[compensates]` method got, after
    /// [`when_failed`](SagaTest::when_failed).
    pub fn failed(&self) -> Option<&FailedCommand> {
        match &self.handling {
            Handling::Compensated(failed) => Some(failed),
            _ => None,
        }
    }

    /// The executed steps the compensation marked undone, in the order marked (none for an
    /// event).
    pub fn undone(&self) -> Vec<&ExecutedCommand> {
        let Some(failed) = self.failed() else {
            return Vec::new();
        };
        self.commands
            .undone()
            .iter()
            .filter_map(|id| failed.executed().iter().find(|step| step.command_id == *id))
            .collect()
    }

    /// The commands the instance executed and no compensation marked undone, newest first.
    pub fn executed(&self) -> Vec<&ExecutedCommand> {
        self.test.executed()
    }

    /// Runs `check` on the commands the method returned.
    #[track_caller]
    pub fn then_commands<F: FnOnce(&Commands)>(self, check: F) -> Self {
        check(&self.commands);
        self
    }

    /// Asserts the method returned commands of exactly these names, in order.
    #[track_caller]
    pub fn then_command_names<'n, I>(self, expected: I) -> Self
    where
        I: IntoIterator<Item = &'n str>,
    {
        let expected: Vec<&str> = expected.into_iter().collect();
        let got = self.commands.names();
        if got != expected {
            self.mismatch(format_args!(
                "returned other commands than expected\n  expected: {expected:?}\n       got: {got:?}"
            ));
        }
        self
    }

    /// Asserts the method returned no command.
    #[track_caller]
    pub fn then_no_commands(self) -> Self {
        self.then_command_names([])
    }

    /// Asserts the method returned exactly one command of type `C` (among any others), and
    /// runs `check` on it.
    #[track_caller]
    pub fn then_command<C: Command, F: FnOnce(&C)>(self, check: F) -> Self {
        match self.commands.of::<C>().as_slice() {
            [command] => check(command),
            found => self.mismatch(format_args!(
                "returned {} commands of type `{}`, expected one; its commands: {:?}",
                found.len(),
                C::NAME,
                self.commands.names()
            )),
        }
        self
    }

    /// Asserts the event was ignored: it correlates to no instance, or it stops one that does
    /// not exist.
    #[track_caller]
    pub fn then_ignored(self) -> Self {
        if !self.ignored() {
            self.mismatch(format_args!(
                "was expected to be ignored, but it returned {:?}",
                self.commands.names()
            ));
        }
        self
    }

    /// Asserts the event created the instance.
    #[track_caller]
    pub fn then_created(self) -> Self {
        if !self.created() {
            self.mismatch(format_args!("was expected to create the instance"));
        }
        self
    }

    /// Runs `check` on the instance's state; panics when there is none (the event stopped
    /// it, or it never started).
    #[track_caller]
    pub fn then_state<F: FnOnce(&S)>(self, check: F) -> Self {
        match self.state() {
            Some(state) => check(state),
            None => self.mismatch(format_args!(
                "left no instance (stopped, or never started), expected its state"
            )),
        }
        self
    }

    /// Asserts there is no instance after it: it stopped the instance, or none started.
    #[track_caller]
    pub fn then_no_instance(self) -> Self {
        if let Some(state) = self.state() {
            let json = serde_json::to_string(state)
                .unwrap_or_else(|error| format!("(does not serialize: {error})"));
            self.mismatch(format_args!(
                "left the instance live with the state {json}, expected none"
            ));
        }
        self
    }

    /// Asserts the compensation marked exactly the executed steps of these names undone, in
    /// the order marked.
    #[track_caller]
    pub fn then_undone<'n, I>(self, expected: I) -> Self
    where
        I: IntoIterator<Item = &'n str>,
    {
        let expected: Vec<&str> = expected.into_iter().collect();
        if self.failed().is_none() {
            self.mismatch(format_args!(
                "ran no compensation, expected one that marks {expected:?} undone (fail a command with `when_failed::<C>(error)`)"
            ));
        }
        let got = names(self.undone());
        if got != expected {
            self.mismatch(format_args!(
                "marked other steps undone than expected\n  expected: {expected:?}\n       got: {got:?}\n  executed before, newest first: {:?}",
                self.failed().map(|failed| names(failed.executed())).unwrap_or_default()
            ));
        }
        self
    }

    /// Runs a further event on the instance as it is now (the commands of this step count
    /// as executed).
    #[track_caller]
    pub fn and_when<E: Event>(self, event: E) -> SagaOutcome<S> {
        self.test.when(event)
    }

    /// Fails the newest command of type `C` the instance sent (see
    /// [`SagaTest::when_failed`]).
    #[track_caller]
    pub fn and_when_failed<C: Command>(self, error: impl Display) -> SagaOutcome<S> {
        self.test.when_failed::<C>(error)
    }

    /// The test, to go on with more given events.
    pub fn into_test(self) -> SagaTest<S> {
        self.test
    }

    /// Panics with `problem`, after what was fed, which instance, and what it did.
    #[track_caller]
    fn mismatch(&self, problem: fmt::Arguments<'_>) -> ! {
        panic!(
            "{} on instance `{}` of the saga `{}` {problem} ({})",
            self.input,
            self.test.instance,
            S::NAME,
            self.handling
        );
    }
}

/// The names of `steps`, for messages.
fn names<'s>(steps: impl IntoIterator<Item = &'s ExecutedCommand>) -> Vec<&'s str> {
    steps.into_iter().map(|step| step.name.as_str()).collect()
}
