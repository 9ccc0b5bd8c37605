//! The actor of one live aggregate instance: it owns the state, runs the commands routed to it
//! one at a time in arrival order, appends their events, takes snapshots, and leaves memory
//! (passivates, stops or hibernates) when its lifespan says so.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;
use tracing::Instrument;

use crate::aggregate::Aggregate;
use crate::command::{Rejection, Route};
use crate::dispatch::{CommandContext, DispatchOptions, Dispatched};
use crate::envelope::{NewEvent, stream_id};
use crate::error::Error;
use crate::event::EventSet;
use crate::lifespan::{Idle, OnTimeout};
use crate::mailbox::Receiver;
use crate::partition::{Frozen, Leave, Left, Registry};
use crate::store::{Direction, ExpectedVersion, Snapshot, StoreError};

/// How many events activation reads per page (there is no cap on the stream's length).
pub(crate) const REPLAY_PAGE: usize = 1_000;

/// The decision half of a command: runs the routed handler against a state.
type Decide<A> = fn(&A, &dyn Any) -> Result<Vec<<A as Aggregate>::Event>, Rejection>;

/// One command on its way to an aggregate actor.
///
/// The job travels as a thin `Box<Job<A>>`: a fat pointer (the command inline as an unsized
/// tail) saves one allocation per command but makes every idle actor bigger (its mailbox and
/// its task's future hold job pointers), which costs more than it saves.
pub(crate) struct Job<A: Aggregate> {
    /// The command, or an `Arc` of it when middleware share it.
    command: Box<dyn Any + Send>,
    decide: Decide<A>,
    /// The command itself, seen through `command` (for the lifespan's `after_command`).
    peek: fn(&dyn Any) -> &dyn Any,
    name: &'static str,
    context: CommandContext,
    options: DispatchOptions,
    /// Taken when the job runs.
    reply: Option<oneshot::Sender<Result<Dispatched<A>, Error>>>,
}

/// The receiver of a job's outcome.
pub(crate) type Outcome<A> = oneshot::Receiver<Result<Dispatched<A>, Error>>;

impl<A: Aggregate> Job<A> {
    /// A job for `command`, and the receiver of its outcome.
    pub(crate) fn new<C: Route<Aggregate = A>>(
        command: C,
        context: CommandContext,
        options: DispatchOptions,
    ) -> (Box<Self>, Outcome<A>) {
        let (reply, outcome) = oneshot::channel();
        let job = Box::new(Job {
            command: Box::new(command),
            decide: decide::<C, C>,
            peek: peek::<C, C>,
            name: C::NAME,
            context,
            options,
            reply: Some(reply),
        });
        (job, outcome)
    }

    /// A job for a command shared with the dispatch's middleware.
    pub(crate) fn shared<C: Route<Aggregate = A> + Sync>(
        command: Arc<C>,
        context: CommandContext,
        options: DispatchOptions,
    ) -> (Box<Self>, Outcome<A>) {
        let (reply, outcome) = oneshot::channel();
        let job = Box::new(Job {
            command: Box::new(command),
            decide: decide::<C, Arc<C>>,
            peek: peek::<C, Arc<C>>,
            name: C::NAME,
            context,
            options,
            reply: Some(reply),
        });
        (job, outcome)
    }
}

/// How a job holds its command: by value, or shared.
trait Holds<C>: Any {
    fn command(&self) -> &C;
}

impl<C: 'static> Holds<C> for C {
    fn command(&self) -> &C {
        self
    }
}

impl<C: 'static> Holds<C> for Arc<C> {
    fn command(&self) -> &C {
        self
    }
}

fn decide<C: Route, H: Holds<C>>(
    state: &C::Aggregate,
    command: &dyn Any,
) -> Result<Vec<<C::Aggregate as Aggregate>::Event>, Rejection> {
    match command.downcast_ref::<H>() {
        Some(held) => C::handle(state, held.command()),
        None => unreachable!("a job's decide fn is built for its own command type"),
    }
}

fn peek<C: 'static, H: Holds<C>>(command: &dyn Any) -> &dyn Any {
    match command.downcast_ref::<H>() {
        Some(held) => held.command(),
        None => command,
    }
}

/// A state at a known stream version.
struct Instance<A> {
    state: A,
    version: u64,
}

/// What the idle timer does when it fires.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// Hibernate; the hibernated state is passivated at `passivate_at` (if any).
    Hibernate { passivate_at: Option<Instant> },
    /// Ask the lifespan's `on_timeout`.
    Timeout,
}

/// An actor that stays after its idle timer fired: its mailbox, commands to run first, and its
/// next timer.
type Stay<A> = (
    Receiver<Box<Job<A>>>,
    Vec<Box<Job<A>>>,
    Option<(Instant, Stage)>,
);

/// What woke an idle actor.
enum Wake<J> {
    Job(Option<J>),
    Timer,
}

/// The actor of aggregate `A` with id `id`.
pub(crate) struct Actor<A: Aggregate> {
    /// `"<aggregate name>-<id>"`; the id is the part after the prefix.
    stream: String,
    registry: Arc<Registry<A>>,
    /// `None` until activated, and again after a panic or an unknown append outcome: the next
    /// command rebuilds the instance from the store.
    instance: Option<Instance<A>>,
    /// The hibernated state this actor was started from, decoded on the first command.
    thaw: Option<Frozen>,
    /// The version of the last snapshot this actor saved or loaded.
    snapshot_version: u64,
}

impl<A: Aggregate> Actor<A> {
    pub(crate) fn new(id: String, registry: Arc<Registry<A>>, thaw: Option<Frozen>) -> Self {
        Actor {
            stream: stream_id(A::NAME, &id),
            registry,
            instance: None,
            thaw,
            snapshot_version: 0,
        }
    }

    /// The aggregate id.
    fn id(&self) -> &str {
        &self.stream[A::NAME.len() + 1..]
    }

    /// Runs commands until the instance leaves memory or the runtime stops.
    pub(crate) async fn run(mut self, mut mailbox: Receiver<Box<Job<A>>>) {
        tracing::debug!(
            name: "evoq.aggregate.init",
            stage = "start",
            aggregate = A::NAME,
            aggregate_id = %self.id(),
            thawed = self.thaw.is_some(),
        );
        let mut pending: VecDeque<Box<Job<A>>> = VecDeque::new();
        let mut timer: Option<(Instant, Stage)> = None;
        let sleep = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            let job = if let Some(job) = pending.pop_front() {
                job
            } else if let Some((deadline, stage)) = timer {
                // Re-registered after every command. Moving it only when the deadline comes
                // earlier would save a timer-wheel update per command, but needs the deadline
                // kept across this wait: 32 more bytes of future, which pushed each live
                // aggregate's task into the next 128-byte size of tokio's task cells.
                sleep.as_mut().reset(deadline.into());
                let woke = tokio::select! {
                    biased;
                    job = mailbox.recv() => Wake::Job(job),
                    () = &mut sleep => Wake::Timer,
                };
                match woke {
                    Wake::Job(Some(job)) => job,
                    Wake::Job(None) => return,
                    Wake::Timer => match Box::pin(self.on_idle(stage, mailbox)).await {
                        None => return,
                        Some((receiver, queued, next)) => {
                            mailbox = receiver;
                            pending.extend(queued);
                            timer = next;
                            continue;
                        }
                    },
                }
            } else {
                match mailbox.recv().await {
                    Some(job) => job,
                    None => return,
                }
            };
            let idle = Box::pin(self.handle(job)).await;
            timer = self.arm(idle);
        }
    }

    /// Runs one command, replies, and returns what the lifespan says about the next timeout.
    async fn handle(&mut self, mut job: Box<Job<A>>) -> Idle {
        let job = &mut *job;
        let reply = match job.reply.take() {
            // The caller gave up (timeout) before the command started: do not run it.
            Some(reply) if !reply.is_closed() => reply,
            _ => return Idle::Configured,
        };
        let (decide, peek, name) = (job.decide, job.peek, job.name);
        let span = tracing::debug_span!(
            "evoq.aggregate.execute",
            aggregate = A::NAME,
            aggregate_id = %self.id(),
            command = name,
            command_id = %job.context.command_id,
        );
        // Timed only when the events that carry the duration are on.
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let version_before = self.instance.as_ref().map(|i| i.version);
        let execute = self.execute(&mut *job.command, decide, name, &job.context, &job.options);
        let result = if span.is_disabled() {
            execute.await
        } else {
            execute.instrument(span.clone()).await
        };
        span.in_scope(|| match &result {
            Ok(done) => tracing::debug!(
                name: "evoq.aggregate.execute",
                stage = "stop",
                version = done.version,
                events = done.events.len(),
                duration_us = micros_since(started),
            ),
            Err(error) => tracing::debug!(
                name: "evoq.aggregate.execute",
                stage = "exception",
                error = %error,
                duration_us = micros_since(started),
            ),
        });
        let idle = self.next_idle(&result, peek(&*job.command));
        let snapshot_due = match (&result, version_before) {
            (Ok(done), Some(before)) => self.crosses_snapshot_boundary(before, done.version),
            (Ok(done), None) => self.crosses_snapshot_boundary(0, done.version),
            (Err(_), _) => false,
        };
        // The caller may have timed out meanwhile; the outcome is in the store either way.
        let _ = reply.send(result);
        if snapshot_due {
            self.save_snapshot().await;
        }
        idle
    }

    async fn execute(
        &mut self,
        command: &mut (dyn Any + Send),
        decide: Decide<A>,
        name: &'static str,
        context: &CommandContext,
        options: &DispatchOptions,
    ) -> Result<Dispatched<A>, Error> {
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let instance = self.activated(name).await?;
            if let Some(expected) = options.expected_version
                && instance.version != expected
            {
                let actual = instance.version;
                return Err(self.conflict(name, expected, actual, attempts));
            }
            let version = instance.version;
            let events = match catch_unwind(AssertUnwindSafe(|| decide(&instance.state, &*command)))
            {
                Ok(Ok(events)) => events,
                Ok(Err(rejection)) => {
                    return Err(Error::Rejected {
                        aggregate: A::NAME,
                        id: self.id().to_owned(),
                        command: name,
                        source: rejection.into_inner(),
                    });
                }
                Err(panic) => return Err(self.panicked(name, &*panic, false)),
            };
            if events.is_empty() {
                return Ok(Dispatched {
                    version,
                    events,
                    position: None,
                    command_id: context.command_id,
                });
            }
            let new_events = encode(&events, name, context)?;
            match self
                .registry
                .env
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
                        return Err(self.panicked(name, &*panic, true));
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
                        return Err(self.conflict(name, version, actual, attempts));
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

    /// The live instance: thawed from hibernation, or rebuilt from the store, if need be.
    async fn activated(&mut self, command: &'static str) -> Result<&mut Instance<A>, Error> {
        if self.instance.is_none()
            && let Some(frozen) = self.thaw.take()
        {
            self.instance = self.thawed(frozen);
        }
        if self.instance.is_none() {
            let started = Instant::now();
            let instance = self.rebuild(command).await?;
            self.registry
                .counters
                .activations
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                name: "evoq.aggregate.activate",
                stage = "stop",
                aggregate = A::NAME,
                aggregate_id = %self.id(),
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

    fn thawed(&self, frozen: Frozen) -> Option<Instance<A>> {
        match A::decode_state(frozen.state.as_bytes()) {
            Some(Ok(state)) => Some(Instance {
                state,
                version: frozen.version,
            }),
            other => {
                tracing::warn!(
                    name: "evoq.aggregate.thaw",
                    stage = "exception",
                    aggregate = A::NAME,
                    aggregate_id = %self.id(),
                    error = %other.and_then(Result::err).map_or_else(|| "not serializable".to_owned(), |e| e.to_string()),
                    "the hibernated state does not decode; rebuilding from the store",
                );
                None
            }
        }
    }

    /// The latest snapshot that decodes, then the events after it, page by page; or the whole
    /// stream when there is no usable snapshot.
    async fn rebuild(&mut self, command: &'static str) -> Result<Instance<A>, Error> {
        let store = Arc::clone(&self.registry.env.store);
        let mut instance = match self.load_snapshot().await? {
            Some(instance) => instance,
            None => Instance {
                state: A::default(),
                version: 0,
            },
        };
        loop {
            let page = store
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
                // Through the event's upcasters, as every read path.
                let event = crate::dispatch::idempotency::decode::<A>(&recorded)?;
                let state = &mut instance.state;
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| state.apply(&event))) {
                    return Err(Error::Panicked {
                        aggregate: A::NAME,
                        id: self.id().to_owned(),
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

    /// The latest snapshot as an instance, when there is one and it decodes. A snapshot that
    /// no longer decodes (the state type changed) is ignored with a warning.
    async fn load_snapshot(&mut self) -> Result<Option<Instance<A>>, Error> {
        let Some(snapshot) = self.registry.env.store.load_snapshot(&self.stream).await? else {
            return Ok(None);
        };
        match A::decode_state(&snapshot.data) {
            Some(Ok(state)) => {
                tracing::debug!(
                    name: "evoq.aggregate.snapshot_load",
                    stage = "stop",
                    aggregate = A::NAME,
                    aggregate_id = %self.id(),
                    version = snapshot.version,
                );
                self.snapshot_version = snapshot.version;
                Ok(Some(Instance {
                    state,
                    version: snapshot.version,
                }))
            }
            Some(Err(error)) => {
                tracing::warn!(
                    name: "evoq.aggregate.snapshot_load",
                    stage = "exception",
                    aggregate = A::NAME,
                    aggregate_id = %self.id(),
                    version = snapshot.version,
                    error = %error,
                    "the snapshot no longer decodes; replaying the whole stream",
                );
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn crosses_snapshot_boundary(&self, before: u64, after: u64) -> bool {
        let every = self.registry.kind.snapshot_every;
        every > 0 && after / every > before / every
    }

    /// Saves the current state as a snapshot, unless it is not serializable or already saved.
    /// A failure is logged: it never fails a command whose events are stored.
    async fn save_snapshot(&mut self) {
        let Some(instance) = self.instance.as_ref() else {
            return;
        };
        if instance.version == 0 || instance.version == self.snapshot_version {
            return;
        }
        let version = instance.version;
        let data = match instance.state.encode_state() {
            None => return,
            Some(Ok(data)) => data,
            Some(Err(error)) => {
                tracing::warn!(
                    name: "evoq.aggregate.snapshot_save",
                    stage = "exception",
                    aggregate = A::NAME,
                    aggregate_id = %self.id(),
                    error = %error,
                );
                return;
            }
        };
        let snapshot = Snapshot {
            stream_id: self.stream.clone(),
            version,
            data,
            taken_at: SystemTime::now(),
        };
        match self.registry.env.store.save_snapshot(snapshot).await {
            Ok(()) => {
                self.snapshot_version = version;
                self.registry
                    .counters
                    .snapshots_saved
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    name: "evoq.aggregate.snapshot_save",
                    stage = "stop",
                    aggregate = A::NAME,
                    aggregate_id = %self.id(),
                    version,
                );
            }
            Err(error) => tracing::warn!(
                name: "evoq.aggregate.snapshot_save",
                stage = "exception",
                aggregate = A::NAME,
                aggregate_id = %self.id(),
                version,
                error = %error,
            ),
        }
    }

    /// What the lifespan says after a command (a panicking hook means the default).
    fn next_idle(&self, result: &Result<Dispatched<A>, Error>, command: &dyn Any) -> Idle {
        let lifespan = &*self.registry.kind.lifespan;
        let decided = catch_unwind(AssertUnwindSafe(|| match result {
            Ok(done) => match done.events.last() {
                Some(_) => done
                    .events
                    .iter()
                    .fold(Idle::Configured, |_, event| lifespan.after_event(event)),
                None => lifespan.after_command(command),
            },
            Err(error) => lifespan.after_error(error),
        }));
        decided.unwrap_or_else(|panic| {
            tracing::error!(
                name: "evoq.aggregate.lifespan",
                stage = "exception",
                aggregate = A::NAME,
                panic = %panic_message(&*panic),
            );
            Idle::Configured
        })
    }

    /// The next timer for `idle`, scaled by the memory monitor's current factor.
    fn arm(&self, idle: Idle) -> Option<(Instant, Stage)> {
        let now = Instant::now();
        let kind = &self.registry.kind;
        let timeout = match idle {
            Idle::Infinity => return None,
            Idle::Hibernate => return Some((now, Stage::Hibernate { passivate_at: None })),
            Idle::Configured => kind.idle_timeout,
            Idle::After(timeout) => timeout,
        };
        let factor = self.registry.env.monitor.ttl_factor();
        // The factor is 1 unless memory is under pressure: skip the float round trips then.
        let scale = |duration: Duration| {
            if factor == 1.0 {
                duration
            } else {
                duration.mul_f64(factor)
            }
        };
        let timeout = scale(timeout);
        if let Some(hibernate_after) = kind.hibernate_after.map(scale)
            && hibernate_after < timeout
        {
            return Some((
                now + hibernate_after,
                Stage::Hibernate {
                    passivate_at: Some(now + timeout),
                },
            ));
        }
        Some((now + timeout, Stage::Timeout))
    }

    /// The idle timer fired: hibernate, passivate, stop or stay. `None` when the actor left.
    async fn on_idle(&mut self, stage: Stage, mailbox: Receiver<Box<Job<A>>>) -> Option<Stay<A>> {
        let action = match stage {
            Stage::Hibernate { passivate_at } => match self.freeze(passivate_at) {
                Some(frozen) => return self.leave(mailbox, Leave::Hibernate(frozen), "hibernate"),
                // Not serializable (or never activated): time out as usual instead.
                None => match passivate_at {
                    Some(at) => return Some((mailbox, Vec::new(), Some((at, Stage::Timeout)))),
                    None => OnTimeout::Passivate,
                },
            },
            Stage::Timeout => match &self.instance {
                Some(instance) => {
                    let lifespan = &*self.registry.kind.lifespan;
                    let state = &instance.state;
                    catch_unwind(AssertUnwindSafe(|| lifespan.on_timeout(state)))
                        .unwrap_or(OnTimeout::Passivate)
                }
                None => OnTimeout::Stop,
            },
        };
        match action {
            OnTimeout::Passivate => {
                self.save_snapshot().await;
                self.leave(mailbox, Leave::Remove, "passivate")
            }
            OnTimeout::Stop => self.leave(mailbox, Leave::Remove, "stop"),
            OnTimeout::Hibernate { snapshot } => {
                if snapshot {
                    self.save_snapshot().await;
                }
                match self.freeze(None) {
                    Some(frozen) => self.leave(mailbox, Leave::Hibernate(frozen), "hibernate"),
                    None => self.leave(mailbox, Leave::Remove, "passivate"),
                }
            }
            OnTimeout::Keep { snapshot } => {
                if snapshot {
                    self.save_snapshot().await;
                }
                Some((mailbox, Vec::new(), self.arm(Idle::Configured)))
            }
        }
    }

    /// The instance's serialized state, for a hibernated slot.
    fn freeze(&self, passivate_at: Option<Instant>) -> Option<Frozen> {
        let instance = self.instance.as_ref()?;
        match instance.state.encode_state()? {
            Ok(state) => Some(self.registry.frozen(&state, instance.version, passivate_at)),
            Err(error) => {
                tracing::warn!(
                    name: "evoq.aggregate.hibernate",
                    stage = "exception",
                    aggregate = A::NAME,
                    aggregate_id = %self.id(),
                    error = %error,
                );
                None
            }
        }
    }

    fn leave(
        &mut self,
        mailbox: Receiver<Box<Job<A>>>,
        how: Leave,
        action: &'static str,
    ) -> Option<Stay<A>> {
        match self.registry.leave(self.id(), mailbox, how) {
            Left::Gone => {
                let version = self.instance.as_ref().map_or(0, |i| i.version);
                let id = self.id();
                match action {
                    "hibernate" => tracing::debug!(
                        name: "evoq.aggregate.hibernate",
                        stage = "stop",
                        aggregate = A::NAME,
                        aggregate_id = %id,
                        version,
                    ),
                    "stop" => tracing::debug!(
                        name: "evoq.aggregate.stop",
                        stage = "stop",
                        aggregate = A::NAME,
                        aggregate_id = %id,
                        version,
                    ),
                    _ => tracing::debug!(
                        name: "evoq.aggregate.passivate",
                        stage = "stop",
                        aggregate = A::NAME,
                        aggregate_id = %id,
                        version,
                    ),
                }
                None
            }
            Left::Stay(mailbox, queued) => Some((mailbox, queued, None)),
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
            aggregate_id = %self.id(),
            command,
            panic = %message,
            events_stored,
        );
        Error::Panicked {
            aggregate: A::NAME,
            id: self.id().to_owned(),
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
            let mut data = event.encode().map_err(|error| Error::Encode {
                command,
                event_type: event.event_type(),
                reason: error.to_string(),
            })?;
            // A store may keep the data for good: no spare capacity (a no-op for the derived
            // events, which encode to exact vectors).
            data.shrink_to_fit();
            Ok(NewEvent {
                event_id: crate::ids::new_v7(),
                event_type: event.event_type().into(),
                schema_version: event.schema_version(),
                data,
                metadata: metadata.clone(),
            })
        })
        .collect()
}

/// Microseconds since `started` (0 when it was not taken).
pub(crate) fn micros_since(started: Option<Instant>) -> u64 {
    started.map_or(0, |started| started.elapsed().as_micros() as u64)
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
