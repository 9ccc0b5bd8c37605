//! Decisions: commands decided on events selected across streams, by tags and types (dynamic
//! consistency boundaries).
//!
//! An aggregate decides on its own stream. Some rules span several: "a member holds at most 3
//! books, and a book is lent to one member at a time" involves every lend of the member and
//! every lend of the book. A decision reads exactly those events (an [`EventQuery`] of event
//! types and [tags](Tags), `member:m1` or `book:b7`, built from the command), folds them into
//! a fresh model with its `#[apply]` methods, runs the command's `#[handles]` method on it
//! (and on the same events as a list, `&[ModelEvent]`, for a method that takes them: see
//! [`Route::decide_on`](crate::Route::decide_on)),
//! and appends the events it returns under an [`AppendCondition`]: no event matching the same
//! query was appended after the highest position it read (none at all when it read nothing).
//! The store checks the condition and appends in one atomic step, on every backend and across
//! nodes.
//!
//! When the condition fails (another command decided on the same events first), the runtime
//! reads again and decides again, after a jittered pause that doubles each time (1 ms to
//! 100 ms), up to the decision's budget of attempts (`#[decision(attempts = N)]`, else the
//! dispatch's retry limit plus one); then the dispatch fails with
//! [`Error::DecisionConflict`](crate::Error::DecisionConflict). A rejection is the handler's
//! typed domain error, as for an aggregate ([`Error::Rejected`](crate::Error::Rejected)).
//!
//! `#[decision]` (see the facade's guide, `evoq::guide::decisions`) implements
//! [`Aggregate`] for the model (its name prefixes the stream the events are appended to,
//! `<name>-<the command's #[aggregate_id]>`) and [`Route`](crate::Route) for each command, so a
//! decision's command is dispatched, deduplicated (idempotency key, command id, command log),
//! wrapped by middleware, traced and measured like any other, and its result is a
//! [`Dispatched`] of the model's event enum. The compiler rejects a command routed both to an
//! aggregate and to a decision (two `Route` impls).
//!
//! By default nothing stays in memory between commands: every command reads what it decides on.
//! A decision marked `#[decision(cached)]` keeps its model per boundary (the query), like a live
//! aggregate: the first command reads the whole context, each later one only the events after
//! the position the model includes; commands of one boundary take the model one at a time; a
//! violated condition catches the model up from where it is; a model idle for longer than the
//! decision's idle timeout (`idle_timeout`, else the runtime's, scaled by the memory monitor)
//! is dropped. The condition is the same, so the outcome is the same as without the cache.
//!
//! Runtime parts: [`EventQuery`] (with [`QueryItem`]), [`AppendCondition`], [`Tags`] and
//! [`tag`], the store calls [`EventStore::read_query`] and [`EventStore::append_if`].

pub use crate::envelope::{Tags, tag};
pub use crate::store::{AppendCondition, EventQuery, QueryItem};

use std::any::Any;
use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, SystemTime};

use super::actor::encode;
use super::decision_models::{DecisionModels, HeldModel, Model};
use crate::aggregate::Aggregate;
use crate::aggregate::command::Decide;
use crate::aggregate::context::{CommandContext, DispatchOptions, Dispatched};
use crate::aggregate::recorded::{first_result, ran_before};
use crate::aggregate::replay::decode_known;
use crate::envelope::stream_id;
use crate::error::{Decider, Error};
use crate::store::{EventStore, GuardedStore, NewCommand, StoreError};
use crate::util::backoff::jittered;
use crate::util::panic::panic_message;

/// How many events one read of a decision's context returns at most (there is no cap on the
/// context's size: the reads continue).
const CONTEXT_PAGE: usize = 1_000;

/// The pause before the second attempt, doubled for each further one (with a random factor in
/// `[0.5, 1.5)`), whatever the budget.
const BACKOFF: Duration = Duration::from_millis(1);

/// The longest pause between attempts.
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Decides `command` of decision `A` on the events `query` selects, as the
/// [module docs](self) say, and appends its events to the stream `<A::NAME>-<id>` with its
/// command-log entry. A cached decision starts from its boundary's kept model (`models`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<A: Aggregate>(
    store: &GuardedStore,
    models: &DecisionModels,
    idle: Duration,
    id: &str,
    command: &dyn Decide<A>,
    mut query: EventQuery,
    context: &CommandContext,
    options: &DispatchOptions,
    deduplicate_since: Option<SystemTime>,
) -> Result<Dispatched<A>, Error> {
    let name = command.name();
    if options.expected_version.is_some() {
        return Err(Error::UnsupportedOption {
            command: name,
            option: "expected_version",
            reason: "a decision appends under the condition that none of the events it read changed, not at a stream version; dispatch it without `expected_version`",
        });
    }
    let stream = stream_id(A::NAME, id);
    let budget = command
        .decision_attempts()
        .unwrap_or_else(|| options.retry_limit.saturating_add(1))
        .max(1);
    // Whether the handler takes the context's events: the model keeps them as a list too.
    let listed = command.decision_context();
    // A cached decision's boundary, taken for this command (the next waits). A handler that
    // takes the list has a boundary of its own: a model kept for one that does not has none.
    let mut slot = match command.decision_cached() {
        true => Some(models.take::<A>(&query, listed, idle).await),
        false => None,
    };
    let mut model: Model<A> = slot.as_mut().map_or_else(Model::default, HeldModel::take);
    let mut attempt: u32 = 0;
    let result = loop {
        attempt += 1;
        // What a command that appends nothing saw: the head before its read.
        let head = *store.head().borrow();
        // A model that failed to read or apply an event is not kept (the slot stays empty).
        catch_up(store, &query, &mut model, listed, name, id).await?;
        let events = match decide(command, &model, name, id) {
            Ok(events) => events,
            Err(error @ Error::Rejected { .. }) => {
                // A resend may be refused by its own first run's events (another node ran it
                // since it was looked up): the first result, not the refusal.
                if let Some(since) = deduplicate_since
                    && let Some(done) =
                        ran_before::<A>(store, context, since, name, id, Decider::Decision).await?
                {
                    break Ok(done);
                }
                break Err(error);
            }
            Err(error) => return Err(error),
        };
        if events.is_empty() && deduplicate_since.is_none() {
            let version = match store.stream_version(&stream).await {
                Ok(version) => version,
                Err(error) => break Err(error.into()),
            };
            break Ok(Dispatched {
                version,
                events,
                position: None,
                token: head.max(model.highest),
                command_id: context.command_id,
            });
        }
        let new_events = encode(&events, name, context)?;
        // For a kept model: which of its events the query selects, and so advance it (those it
        // does not select are not in a fresh fold either). Nothing to compute without a cache.
        let selected: Vec<bool> = match slot {
            Some(_) => new_events
                .iter()
                .map(|event| query.matches(&event.event_type, &event.metadata.tags))
                .collect(),
            None => Vec::new(),
        };
        let logged = NewCommand {
            command_id: context.command_id,
            idempotency_key: context.idempotency_key.clone(),
            command: Cow::Borrowed(name),
            aggregate: Cow::Borrowed(A::NAME),
            deduplicate_since,
        };
        let condition = AppendCondition {
            query,
            after: model.highest,
        };
        match store
            .append_if(&stream, new_events, &condition, Some(logged))
            .await
        {
            Ok(appended) => {
                let position = (!events.is_empty()).then_some(appended.last_position);
                if slot.is_some()
                    && !advance(
                        &mut model,
                        &events,
                        &selected,
                        listed,
                        appended.last_position,
                    )
                {
                    // The model panicked applying its own events: not kept.
                    slot = None;
                }
                break Ok(Dispatched {
                    version: appended.version,
                    events,
                    position,
                    token: position.unwrap_or(head.max(model.highest)),
                    command_id: context.command_id,
                });
            }
            Err(StoreError::DuplicateCommand { record }) => {
                break first_result::<A>(store, &record, name, id, Decider::Decision).await;
            }
            Err(StoreError::ConditionFailed { position, .. }) => {
                metrics::counter!("evoq_decision_conflicts_total", "decision" => A::NAME)
                    .increment(1);
                tracing::debug!(
                    name: "evoq.decision.conflict",
                    decision = A::NAME,
                    command = name,
                    after = condition.after,
                    position,
                    attempt,
                    budget,
                    "evoq.decision.conflict",
                );
                if attempt >= budget {
                    break Err(Error::DecisionConflict {
                        decision: A::NAME,
                        command: name,
                        stream,
                        query: condition.query.to_string(),
                        attempts: attempt,
                    });
                }
                tokio::time::sleep(jittered(BACKOFF, BACKOFF_MAX, attempt)).await;
                // The model is right up to what it read: the next attempt reads what is new.
                query = condition.query;
            }
            Err(error) => {
                break Err(Error::of_store(Decider::Decision, A::NAME, name, id, error));
            }
        }
    };
    if let Some(slot) = slot.as_mut() {
        slot.keep(model);
    }
    result
}

/// Reads the events `query` selects after the model's position, oldest first, and applies
/// those `A` applies (and, `listed`, adds them to the model's list); every selected event
/// moves the position (those `A` does not apply count for the condition).
async fn catch_up<A: Aggregate>(
    store: &GuardedStore,
    query: &EventQuery,
    model: &mut Model<A>,
    listed: bool,
    name: &'static str,
    id: &str,
) -> Result<(), Error> {
    loop {
        let page = store.read_query(query, model.highest, CONTEXT_PAGE).await?;
        let read = page.events.len() + page.undecodable.len();
        if let Some(row) = page.undecodable.first() {
            return Err(Error::Decode {
                stream: row.stream_id.clone(),
                version: row.stream_version,
                event_type: row.event_type.clone(),
                schema_version: 0,
                reason: "the stored row cannot be read back as an event".to_owned(),
            });
        }
        let mut decoded = Vec::with_capacity(page.events.len());
        for recorded in &page.events {
            if let Some(event) = decode_known::<A>(recorded)? {
                decoded.push(event);
            }
        }
        let applied = catch_unwind(AssertUnwindSafe(|| {
            for event in &decoded {
                model.state.apply(event);
            }
        }));
        if let Err(panic) = applied {
            return Err(panicked::<A>(&*panic, name, id));
        }
        if listed {
            model.context.extend(decoded);
        }
        if let Some(last) = page.events.last() {
            model.highest = model.highest.max(last.global_position);
        }
        if read < CONTEXT_PAGE {
            return Ok(());
        }
        model.highest = model.highest.max(page.scanned_through);
    }
}

/// Applies the command's own events the query selects to the kept model (and, `listed`, adds
/// them to its list), which then includes everything up to `last_position` (the condition
/// held: nothing else selected was appended since its read); whether it applied them without
/// a panic.
fn advance<A: Aggregate>(
    model: &mut Model<A>,
    events: &[A::Event],
    selected: &[bool],
    listed: bool,
    last_position: u64,
) -> bool {
    let own = || {
        events
            .iter()
            .zip(selected)
            .filter(|(_, selected)| **selected)
            .map(|(event, _)| event)
    };
    let applied = catch_unwind(AssertUnwindSafe(|| {
        for event in own() {
            model.state.apply(event);
        }
    }));
    if listed {
        model.context.extend(own().cloned());
    }
    model.highest = model.highest.max(last_position);
    applied.is_ok()
}

/// Runs the command on the model (its state, and its list of events for a handler that takes
/// them): its events, or its rejection; a panic of the handler is an error.
fn decide<A: Aggregate>(
    command: &dyn Decide<A>,
    model: &Model<A>,
    name: &'static str,
    id: &str,
) -> Result<Vec<A::Event>, Error> {
    match catch_unwind(AssertUnwindSafe(|| {
        command.decide(&model.state, &model.context)
    })) {
        Ok(Ok(events)) => Ok(events),
        Ok(Err(rejection)) => Err(Error::Rejected {
            decider: Decider::Decision,
            aggregate: A::NAME,
            id: id.to_owned(),
            command: name,
            source: rejection.into_inner(),
        }),
        Err(panic) => Err(panicked::<A>(&*panic, name, id)),
    }
}

/// The error of a panic in the model or the handler of decision `A`, logged.
fn panicked<A: Aggregate>(panic: &(dyn Any + Send), name: &'static str, id: &str) -> Error {
    let message = panic_message(panic);
    tracing::error!(
        name: "evoq.decision.execute",
        stage = "exception",
        decision = A::NAME,
        aggregate_id = %id,
        command = name,
        panic = %message,
        "evoq.decision.execute",
    );
    Error::Panicked {
        decider: Decider::Decision,
        aggregate: A::NAME,
        id: id.to_owned(),
        command: name,
        message,
        events_stored: false,
    }
}
