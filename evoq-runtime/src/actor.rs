//! The actor of one live aggregate instance: it owns the state, runs the commands routed to it
//! one at a time in arrival order, and appends their events.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::command::Rejection;
use crate::dispatch::{CommandContext, DispatchOptions, Dispatched};
use crate::envelope::NewEvent;
use crate::error::Error;
use crate::event::EventSet;
use crate::store::{Direction, EventStore, ExpectedVersion, StoreError};

/// How many events activation reads per page (there is no cap on the stream's length).
pub(crate) const REPLAY_PAGE: usize = 1_000;

/// The decision half of a command: runs the routed handler against a state.
pub(crate) type Decide<A> =
    Box<dyn Fn(&A) -> Result<Vec<<A as Aggregate>::Event>, Rejection> + Send>;

/// One command on its way to an aggregate actor.
pub(crate) struct Job<A: Aggregate> {
    pub(crate) decide: Decide<A>,
    pub(crate) command: &'static str,
    pub(crate) context: CommandContext,
    pub(crate) options: DispatchOptions,
    pub(crate) reply: oneshot::Sender<Result<Dispatched<A>, Error>>,
}

/// A state rebuilt from the store, at a known stream version.
struct Instance<A> {
    state: A,
    version: u64,
}

/// The actor of aggregate `A` with id `id`.
pub(crate) struct Actor<A: Aggregate> {
    id: String,
    stream: String,
    store: Arc<dyn EventStore>,
    /// `None` until activated, and again after a panic or an unknown append outcome: the next
    /// command rebuilds the instance from the store.
    instance: Option<Instance<A>>,
}

impl<A: Aggregate> Actor<A> {
    pub(crate) fn new(id: String, stream: String, store: Arc<dyn EventStore>) -> Self {
        Actor {
            id,
            stream,
            store,
            instance: None,
        }
    }

    /// Runs until every sender is gone (the runtime stopped).
    pub(crate) async fn run(mut self, mut mailbox: mpsc::Receiver<Job<A>>) {
        while let Some(job) = mailbox.recv().await {
            let span = tracing::debug_span!(
                "evoq.aggregate.execute",
                aggregate = A::NAME,
                aggregate_id = %self.id,
                command = job.command,
                command_id = %job.context.command_id,
            );
            let Job {
                decide,
                command,
                context,
                options,
                reply,
            } = job;
            if reply.is_closed() {
                // The caller gave up (timeout) before the command started: do not run it.
                continue;
            }
            let started = Instant::now();
            let result = self
                .execute(decide, command, &context, &options)
                .instrument(span.clone())
                .await;
            span.in_scope(|| match &result {
                Ok(done) => tracing::debug!(
                    name: "evoq.aggregate.execute",
                    stage = "stop",
                    version = done.version,
                    events = done.events.len(),
                    duration_us = started.elapsed().as_micros() as u64,
                ),
                Err(error) => tracing::debug!(
                    name: "evoq.aggregate.execute",
                    stage = "exception",
                    error = %error,
                    duration_us = started.elapsed().as_micros() as u64,
                ),
            });
            // The caller may have timed out meanwhile; the outcome is in the store either way.
            let _ = reply.send(result);
        }
    }

    async fn execute(
        &mut self,
        decide: Decide<A>,
        command: &'static str,
        context: &CommandContext,
        options: &DispatchOptions,
    ) -> Result<Dispatched<A>, Error> {
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let instance = self.activated(command).await?;
            if let Some(expected) = options.expected_version
                && instance.version != expected
            {
                let actual = instance.version;
                return Err(self.conflict(command, expected, actual, attempts));
            }
            let version = instance.version;
            let events = match catch_unwind(AssertUnwindSafe(|| decide(&instance.state))) {
                Ok(Ok(events)) => events,
                Ok(Err(rejection)) => {
                    return Err(Error::Rejected {
                        aggregate: A::NAME,
                        id: self.id.clone(),
                        command,
                        source: rejection.into_inner(),
                    });
                }
                Err(panic) => return Err(self.panicked(command, &*panic, false)),
            };
            if events.is_empty() {
                return Ok(Dispatched {
                    version,
                    events,
                    position: None,
                    command_id: context.command_id,
                });
            }
            let new_events = encode(&events, command, context)?;
            match self
                .store
                .append(&self.stream, ExpectedVersion::Exact(version), new_events)
                .await
            {
                Ok(appended) => {
                    let Some(instance) = self.instance.as_mut() else {
                        unreachable!("the instance is only dropped by this task")
                    };
                    let applied = catch_unwind(AssertUnwindSafe(|| {
                        for event in &events {
                            instance.state.apply(event);
                        }
                    }));
                    if let Err(panic) = applied {
                        return Err(self.panicked(command, &*panic, true));
                    }
                    instance.version = appended.version;
                    return Ok(Dispatched {
                        version: appended.version,
                        events,
                        position: Some(appended.last_position),
                        command_id: context.command_id,
                    });
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    // Someone wrote behind this instance's back: rebuild, then re-run the
                    // command against the fresh state (unless the caller pinned a version).
                    self.instance = None;
                    if options.expected_version.is_some() || attempts > options.retry_limit {
                        return Err(self.conflict(command, version, actual, attempts));
                    }
                    tracing::debug!(
                        name: "evoq.aggregate.conflict",
                        stream = %self.stream,
                        expected = version,
                        actual,
                        attempt = attempts,
                    );
                }
                Err(error) => {
                    // The append's outcome is unknown to us: rebuild before the next command.
                    self.instance = None;
                    return Err(error.into());
                }
            }
        }
    }

    /// The live instance, rebuilt from the store first if need be.
    async fn activated(&mut self, command: &'static str) -> Result<&mut Instance<A>, Error> {
        if self.instance.is_none() {
            let started = Instant::now();
            let instance = self.rebuild(command).await?;
            tracing::debug!(
                name: "evoq.aggregate.activate",
                stage = "stop",
                aggregate = A::NAME,
                aggregate_id = %self.id,
                version = instance.version,
                duration_us = started.elapsed().as_micros() as u64,
            );
            self.instance = Some(instance);
        }
        match self.instance.as_mut() {
            Some(instance) => Ok(instance),
            None => unreachable!("set above"),
        }
    }

    /// Replays the whole stream, page by page, into a fresh state.
    async fn rebuild(&self, command: &'static str) -> Result<Instance<A>, Error> {
        let mut instance = Instance {
            state: A::default(),
            version: 0,
        };
        loop {
            let page = self
                .store
                .read_stream(
                    &self.stream,
                    instance.version + 1,
                    Direction::Forward,
                    REPLAY_PAGE,
                )
                .await?;
            let full = page.len() == REPLAY_PAGE;
            for recorded in page {
                if recorded.stream_version != instance.version + 1 {
                    return Err(StoreError::Integrity {
                        location: format!("stream `{}`", self.stream),
                        reason: format!(
                            "expected version {} next, the store returned version {}",
                            instance.version + 1,
                            recorded.stream_version
                        ),
                    }
                    .into());
                }
                let event = match A::Event::decode(&recorded.event_type, &recorded.data) {
                    Ok(Some(event)) => event,
                    Ok(None) => {
                        return Err(Error::UnknownEventType {
                            aggregate: A::NAME,
                            stream: self.stream.clone(),
                            version: recorded.stream_version,
                            event_type: recorded.event_type.to_string(),
                        });
                    }
                    Err(error) => {
                        return Err(Error::Decode {
                            stream: self.stream.clone(),
                            version: recorded.stream_version,
                            event_type: recorded.event_type.to_string(),
                            schema_version: recorded.schema_version,
                            reason: error.to_string(),
                        });
                    }
                };
                let state = &mut instance.state;
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| state.apply(&event))) {
                    return Err(Error::Panicked {
                        aggregate: A::NAME,
                        id: self.id.clone(),
                        command,
                        message: format!(
                            "`#[apply]` panicked replaying version {} ({}): {}",
                            recorded.stream_version,
                            recorded.event_type,
                            panic_message(&*panic)
                        ),
                        events_stored: false,
                    });
                }
                instance.version = recorded.stream_version;
            }
            if !full {
                return Ok(instance);
            }
        }
    }

    fn conflict(&self, command: &'static str, expected: u64, actual: u64, attempts: u32) -> Error {
        Error::Conflict {
            stream: self.stream.clone(),
            command,
            expected,
            actual,
            attempts,
        }
    }

    /// Drops the instance after a panic and describes it.
    fn panicked(
        &mut self,
        command: &'static str,
        panic: &(dyn Any + Send),
        events_stored: bool,
    ) -> Error {
        self.instance = None;
        let message = panic_message(panic);
        tracing::error!(
            name: "evoq.aggregate.execute",
            stage = "exception",
            aggregate = A::NAME,
            aggregate_id = %self.id,
            command,
            panic = %message,
            events_stored,
        );
        Error::Panicked {
            aggregate: A::NAME,
            id: self.id.clone(),
            command,
            message,
            events_stored,
        }
    }
}

/// Serializes the events of one command with the command's metadata.
fn encode<E: EventSet>(
    events: &[E],
    command: &'static str,
    context: &CommandContext,
) -> Result<Vec<NewEvent>, Error> {
    let metadata = context.event_metadata();
    events
        .iter()
        .map(|event| {
            let data = event.encode().map_err(|error| Error::Encode {
                command,
                event_type: event.event_type(),
                reason: error.to_string(),
            })?;
            Ok(NewEvent {
                event_id: Uuid::now_v7(),
                event_type: event.event_type().into(),
                schema_version: event.schema_version(),
                data,
                metadata: metadata.clone(),
            })
        })
        .collect()
}

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
