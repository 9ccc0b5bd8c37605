//! Given events, then the read model: one projection without a runtime or a store,
//! [`ProjectionTest`].
//!
//! Every event goes to the projection as the runtime delivers it: in its stored form (JSON,
//! with its wire name and schema version), in a record of its own at the next global position,
//! through the projection's generated [`EventHandler::handle`](crate::EventHandler::handle)
//! (which matches the stored name, upcasts and decodes); then the read model commits the
//! projection's checkpoint at that position ([`ReadModel::commit`]), as the runtime does after
//! every event.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use super::definition::{Projection, ReadModel};
use crate::delivery::consumer::{EventMeta, HandlerFailure};
use crate::envelope::{Metadata, RecordedEvent, stream_id};
use crate::event::definition::Event;
use crate::event::upcast::renamed_from;
use crate::util::ids::new_v7;

/// A projection under test: given events, then its read model.
///
/// The events are queued by [`given`](Self::given) and
/// [`given_stored`](Self::given_stored) and delivered when the test is awaited, which gives a
/// [`ProjectionOutcome`] to assert on. Read the read model through a handle of one's own (a
/// clone of an [`InMemoryReadModel`](crate::InMemoryReadModel) is the same model), or in
/// [`then`](ProjectionOutcome::then).
///
/// ```
/// use evoq::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// struct AccountOpened { account: String, initial_balance: u64 }
/// #[derive(Event, Serialize, Deserialize, Clone, Debug)]
/// struct MoneyDeposited { account: String, amount: u64 }
///
/// struct AccountSummary { balances: InMemoryReadModel }
///
/// #[projection(name = "account_summary", read_model = balances)]
/// impl AccountSummary {
///     #[handles]
///     async fn opened(&mut self, e: &AccountOpened, _: &EventMeta) -> Result<(), ProjectionError> {
///         self.balances.put(&e.account, &e.initial_balance)?;
///         Ok(())
///     }
///
///     #[handles]
///     async fn deposited(&mut self, e: &MoneyDeposited, _: &EventMeta) -> Result<(), ProjectionError> {
///         let balance: u64 = self.balances.get(&e.account)?
///             .ok_or_else(|| ProjectionError::new(format!("no account `{}`", e.account)))?;
///         self.balances.put(&e.account, &(balance + e.amount))?;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let balances = InMemoryReadModel::new();
/// ProjectionTest::new(AccountSummary { balances: balances.clone() })
///     .given(AccountOpened { account: "acc-1".into(), initial_balance: 10 })
///     .given(MoneyDeposited { account: "acc-1".into(), amount: 5 })
///     .await
///     .then_handled()
///     .then_checkpoint(2);
/// assert_eq!(balances.get::<u64>("acc-1").unwrap(), Some(15));
///
/// // A deposit to an account never opened: the method's error, typed.
/// ProjectionTest::new(AccountSummary { balances: InMemoryReadModel::new() })
///     .given(MoneyDeposited { account: "acc-2".into(), amount: 5 })
///     .await
///     .then_error(|error: &ProjectionError| assert_eq!(error.to_string(), "no account `acc-2`"))
///     .then_no_checkpoint();
/// # }
/// ```
///
/// The first event that fails ends the delivery: the events given after it are not
/// delivered, and the checkpoint stays before it (the runtime would retry it). A panic in a
/// method is not caught: it fails the test where it happens.
#[must_use = "the given events are delivered when the test is awaited"]
pub struct ProjectionTest<P: Projection> {
    projection: P,
    /// The name the projection runs under: it keys the checkpoint.
    name: Arc<str>,
    /// The events given and not delivered yet, in order.
    queued: Vec<Given>,
    /// The position of the last event delivered (0 before any).
    position: u64,
    /// Whether the read model was bound and its own checkpoint read (at the first delivery,
    /// as the runtime does at start).
    resumed: bool,
    /// Every event delivered so far, for messages.
    delivered: Vec<Delivered>,
    /// What the last commit did.
    committed: Option<Committed>,
    /// The checkpoint the runtime would have saved in the event store (the read model's
    /// `commit` returned `false`).
    store_checkpoint: Option<u64>,
}

/// One given event, in its stored form.
struct Given {
    event_type: Cow<'static, str>,
    schema_version: u32,
    data: Vec<u8>,
}

/// One event as delivered, for messages.
struct Delivered {
    event_type: Cow<'static, str>,
    schema_version: u32,
    position: u64,
}

impl fmt::Display for Delivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` (schema version {}) at position {}",
            self.event_type, self.schema_version, self.position
        )
    }
}

/// The last [`ReadModel::commit`]: at which position, and whether the read model kept it.
#[derive(Clone, Copy)]
struct Committed {
    position: u64,
    kept: bool,
}

impl<P: Projection> ProjectionTest<P> {
    /// The projection before any event, under the name it runs under by default (its
    /// attribute's `name`).
    pub fn new(projection: P) -> Self {
        let name = match P::OPTIONS.name.as_ref() {
            Some(name) => Arc::from(&**name),
            None => Arc::from(P::NAME),
        };
        ProjectionTest {
            projection,
            name,
            queued: Vec::new(),
            position: 0,
            resumed: false,
            delivered: Vec::new(),
            committed: None,
            store_checkpoint: None,
        }
    }

    /// Runs the projection under `name`, as `HandlerOptions::name` does: the read model's
    /// checkpoint is committed under it.
    pub fn named(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Arc::from(&*name.into());
        self
    }

    /// Queues `event`, stored as the runtime stores it (its wire name, its current schema
    /// version, its JSON). Panics when the projection takes no event of this type.
    #[track_caller]
    pub fn given<E: Event>(mut self, event: E) -> Self {
        if !P::EVENT_TYPES.contains(&E::NAME) {
            panic!(
                "the projection `{}` takes no `{}` event: its methods take {:?}",
                self.name,
                E::NAME,
                P::EVENT_TYPES
            );
        }
        let data = serde_json::to_vec(&event).unwrap_or_else(|error| {
            panic!("event `{}` does not serialize: {error}", E::NAME);
        });
        self.queued.push(Given {
            event_type: Cow::Borrowed(E::NAME),
            schema_version: E::VERSION,
            data,
        });
        self
    }

    /// Queues an event as an older version of the code stored it: under `event_type` (the
    /// wire name of a type the projection takes, or a name an upcaster renamed it from), at
    /// `schema_version`, with the JSON `data`. The projection reads it through the type's
    /// upcasters, as at run time. Panics when the projection reads no event stored under
    /// `event_type`.
    #[track_caller]
    pub fn given_stored(
        mut self,
        event_type: impl Into<Cow<'static, str>>,
        schema_version: u32,
        data: serde_json::Value,
    ) -> Self {
        let event_type = event_type.into();
        let subscribed = subscription::<P>();
        if !subscribed.contains(&&*event_type) {
            panic!(
                "the projection `{}` reads no event stored as `{event_type}`: it reads {subscribed:?} (the types its methods take and the names their upcasters renamed them from)",
                self.name
            );
        }
        let data = serde_json::to_vec(&data).unwrap_or_else(|error| {
            panic!("the data of the stored `{event_type}` does not serialize: {error}");
        });
        self.queued.push(Given {
            event_type,
            schema_version,
            data,
        });
        self
    }

    /// The projection (its read model among its fields).
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The projection, to go on with it elsewhere.
    pub fn into_projection(self) -> P {
        self.projection
    }

    /// The name the projection runs under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delivers the queued events, in order: each through the projection's
    /// [`EventHandler::handle`](crate::EventHandler::handle), then the read model's
    /// [`commit`](ReadModel::commit) at its position, until one fails. The same as awaiting
    /// the test.
    ///
    /// At the first delivery, the read model is bound to the projection's name
    /// ([`ReadModel::bind`]) and, when it keeps its checkpoint
    /// ([`ReadModel::keeps_checkpoint`]), asked for it, as the runtime does at start: the
    /// events then come after it (a model a previous test left at position 4 gets 5 next).
    /// Panics when the read model fails (its `bind`, its `checkpoint` or its `commit`).
    pub async fn run(mut self) -> ProjectionOutcome<P> {
        if !self.resumed {
            self.resumed = true;
            let read_model = self.projection.read_model();
            if let Err(error) = read_model.bind(&self.name).await {
                panic!(
                    "the read model of the projection `{}` could not be bound to it: {error}",
                    self.name
                );
            }
            if read_model.keeps_checkpoint()
                && let Some(kept) = read_checkpoint(read_model, &self.name).await
            {
                self.position = self.position.max(kept);
            }
        }
        let first = self.delivered.len();
        let mut failed = None;
        let mut queued = std::mem::take(&mut self.queued).into_iter();
        for given in queued.by_ref() {
            self.position += 1;
            let position = self.position;
            let event = EventMeta::new(Arc::new(RecordedEvent {
                event_id: new_v7(),
                stream_id: Arc::from(stream_id("ProjectionTest", &self.name)),
                stream_version: position,
                global_position: position,
                event_type: given.event_type.clone(),
                schema_version: given.schema_version,
                data: given.data,
                metadata: Metadata::default(),
                recorded_at: SystemTime::now(),
            }));
            self.delivered.push(Delivered {
                event_type: given.event_type,
                schema_version: given.schema_version,
                position,
            });
            if let Err(failure) = self.projection.handle(&event).await {
                failed = Some(failure);
                break;
            }
            let read_model = self.projection.read_model();
            let kept = commit(read_model, &self.name, position).await;
            if !kept {
                // The runtime saves it in the event store then.
                self.store_checkpoint = Some(position);
            }
            self.committed = Some(Committed { position, kept });
        }
        let undelivered = queued
            .map(|given| format!("`{}`", given.event_type))
            .collect();
        let failure = failed.map(|failure| Failure {
            failure,
            undelivered,
        });
        let read_model = self.projection.read_model();
        let checkpoint = if read_model.keeps_checkpoint() {
            read_checkpoint(read_model, &self.name).await
        } else {
            self.store_checkpoint
        };
        ProjectionOutcome {
            test: self,
            first,
            failure,
            checkpoint,
        }
    }

    fn read_model(&self) -> &dyn ReadModel {
        self.projection.read_model()
    }
}

impl<P: Projection> IntoFuture for ProjectionTest<P> {
    type Output = ProjectionOutcome<P>;
    type IntoFuture = Pin<Box<dyn Future<Output = ProjectionOutcome<P>> + Send>>;

    /// Delivers the queued events ([`run`](ProjectionTest::run)).
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// The read model's own checkpoint of the projection `name`; panics when it cannot be read.
async fn read_checkpoint(read_model: &dyn ReadModel, name: &str) -> Option<u64> {
    match read_model.checkpoint(name).await {
        Ok(checkpoint) => checkpoint,
        Err(error) => panic!(
            "the read model of the projection `{name}` could not read its checkpoint: {error}"
        ),
    }
}

/// Commits the read model with the checkpoint `position` of the projection `name`, as the
/// runtime does after every event: whether the read model kept it. Panics when it fails.
async fn commit(read_model: &dyn ReadModel, name: &str, position: u64) -> bool {
    match read_model.commit(name, position).await {
        Ok(kept) => kept,
        Err(error) => panic!(
            "the read model of the projection `{name}` could not commit the checkpoint {position}: {error}"
        ),
    }
}

/// The names `P` subscribes to: the wire names of its types, then the names their upcasters
/// renamed them from.
fn subscription<P: Projection>() -> Vec<&'static str> {
    let renamed = P::UPCASTERS.iter().flat_map(|steps| renamed_from(steps));
    P::EVENT_TYPES.iter().copied().chain(renamed).collect()
}

/// The event that failed and why.
struct Failure {
    failure: HandlerFailure,
    /// The events given after it, not delivered.
    undelivered: Vec<String>,
}

/// What the given events did to a [`ProjectionTest`]; assert on it with the `then_*` methods,
/// which panic with what was expected and what came.
pub struct ProjectionOutcome<P: Projection> {
    test: ProjectionTest<P>,
    /// The index of this run's first event in `test.delivered`.
    first: usize,
    /// The event that failed, if one did (the last delivered).
    failure: Option<Failure>,
    /// Where the projection would resume at the next start.
    checkpoint: Option<u64>,
}

impl<P: Projection> ProjectionOutcome<P> {
    /// The projection (its read model among its fields).
    pub fn projection(&self) -> &P {
        &self.test.projection
    }

    /// Why the last event delivered failed, if one did: the method's own error
    /// ([`HandlerFailure::error`]), data that does not decode, or an upcaster's error.
    pub fn failure(&self) -> Option<&HandlerFailure> {
        self.failure.as_ref().map(|failed| &failed.failure)
    }

    /// The position the projection would resume after at the next start, as the runtime
    /// reads it: the read model's own checkpoint when it keeps it
    /// ([`ReadModel::keeps_checkpoint`]), else the last position whose commit returned
    /// `false` (which the runtime saves in the event store). `None`: from the first event.
    pub fn checkpoint(&self) -> Option<u64> {
        self.checkpoint
    }

    /// The global position of the last event delivered (0 before any).
    pub fn position(&self) -> u64 {
        self.test.position
    }

    /// Asserts every given event was handled.
    #[track_caller]
    pub fn then_handled(self) -> Self {
        if let Some(failed) = &self.failure {
            self.mismatch(format_args!(
                "{}; expected every given event to be handled{}",
                self.failed_on(),
                undelivered(&failed.undelivered)
            ));
        }
        self
    }

    /// Asserts every given event was handled, and runs `check` on the projection.
    #[track_caller]
    pub fn then<F: FnOnce(&P)>(self, check: F) -> Self {
        let outcome = self.then_handled();
        check(&outcome.test.projection);
        outcome
    }

    /// Asserts an event failed with the method's own error, of type `E`, and runs `check` on
    /// it.
    #[track_caller]
    pub fn then_error<E, F>(self, check: F) -> Self
    where
        E: StdError + 'static,
        F: FnOnce(&E),
    {
        let Some(failed) = &self.failure else {
            self.mismatch(format_args!(
                "handled every event; expected a failure with an error of type `{}`",
                std::any::type_name::<E>()
            ));
        };
        match failed.failure.error::<E>() {
            Some(error) => check(error),
            None => self.mismatch(format_args!(
                "{}, but not with the method's own error of type `{}`",
                self.failed_on(),
                std::any::type_name::<E>()
            )),
        }
        self
    }

    /// Asserts an event failed, whatever the reason (the method's error, data that does not
    /// decode, an upcaster's error), and runs `check` on the failure.
    #[track_caller]
    pub fn then_failure<F: FnOnce(&HandlerFailure)>(self, check: F) -> Self {
        match &self.failure {
            Some(failed) => check(&failed.failure),
            None => self.mismatch(format_args!("handled every event; expected a failure")),
        }
        self
    }

    /// Asserts the projection would resume after `expected` at the next start (see
    /// [`checkpoint`](Self::checkpoint)).
    #[track_caller]
    pub fn then_checkpoint(self, expected: u64) -> Self {
        if self.checkpoint != Some(expected) {
            self.mismatch(format_args!(
                "left the checkpoint {}; expected {expected} ({}){}",
                show(self.checkpoint),
                self.commits(),
                self.failure_note()
            ));
        }
        self
    }

    /// Asserts the projection has no checkpoint: it would start from the first event.
    #[track_caller]
    pub fn then_no_checkpoint(self) -> Self {
        if let Some(checkpoint) = self.checkpoint {
            self.mismatch(format_args!(
                "left the checkpoint {checkpoint}; expected none ({}){}",
                self.commits(),
                self.failure_note()
            ));
        }
        self
    }

    /// Queues a further event, to deliver by awaiting the test it returns. After a failure,
    /// the failed event stays undelivered, as a dead letter would: the next commit passes it.
    #[track_caller]
    pub fn and_given<E: Event>(self, event: E) -> ProjectionTest<P> {
        self.test.given(event)
    }

    /// Queues a further stored event (see [`ProjectionTest::given_stored`]).
    #[track_caller]
    pub fn and_given_stored(
        self,
        event_type: impl Into<Cow<'static, str>>,
        schema_version: u32,
        data: serde_json::Value,
    ) -> ProjectionTest<P> {
        self.test.given_stored(event_type, schema_version, data)
    }

    /// The test, to go on with it.
    pub fn into_test(self) -> ProjectionTest<P> {
        self.test
    }

    /// What the read model did with the checkpoints, for messages.
    fn commits(&self) -> String {
        let keeps = if self.test.read_model().keeps_checkpoint() {
            "the read model keeps its checkpoint, and reports it"
        } else {
            "the read model does not keep its checkpoint: the runtime saves it in the event store"
        };
        match self.test.committed {
            None => format!("{keeps}; nothing was committed"),
            Some(Committed { position, kept }) => format!(
                "{keeps}; the last commit, at position {position}, returned `{kept}`{}",
                if kept {
                    " (kept by the read model)"
                } else {
                    ""
                }
            ),
        }
    }

    /// Panics with `problem`, after the projection and the events it was given in this run,
    /// and the failure of the last one, if it failed.
    #[track_caller]
    fn mismatch(&self, problem: fmt::Arguments<'_>) -> ! {
        let events = &self.test.delivered[self.first..];
        let given = if events.is_empty() {
            "no event".to_owned()
        } else {
            events
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.failure {
            Some(failed) => panic!(
                "the projection `{}`, given {given}, {problem}\n  failure: {}",
                self.test.name, failed.failure
            ),
            None => panic!(
                "the projection `{}`, given {given}, {problem}",
                self.test.name
            ),
        }
    }

    /// "; the last event failed on ...", or nothing when every event was handled.
    fn failure_note(&self) -> String {
        match &self.failure {
            Some(_) => format!("; the last event {}", self.failed_on()),
            None => String::new(),
        }
    }

    /// "failed on `E` (schema version 1) at position 3", for messages.
    fn failed_on(&self) -> String {
        match self.test.delivered.last() {
            Some(event) => format!("failed on {event}"),
            None => "failed".to_owned(),
        }
    }
}

/// " (the events given after it were not delivered: ...)", or nothing.
fn undelivered(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(
            " (the events given after it were not delivered: {})",
            names.join(", ")
        )
    }
}

/// A checkpoint for messages.
fn show(checkpoint: Option<u64>) -> String {
    match checkpoint {
        Some(position) => position.to_string(),
        None => "none".to_owned(),
    }
}
