//! The actor of one live aggregate instance: it owns the state, runs the commands routed to it
//! one at a time in arrival order, appends their events, takes snapshots, and leaves memory
//! (passivates, stops or hibernates) when its lifespan says so.
//!
//! An actor has no task of its own. Its state sits in a [`Cell`] behind a fair (first in, first
//! out) async lock, and whoever holds the lock runs the actor's next step: the dispatching task
//! runs its own command, in place, without a hop to another task and back; the registry's idle
//! timer ([`idle`](super::idle)) runs the timeout. So commands to one instance still run one at a
//! time in arrival order, different instances in parallel, and a live idle instance costs a
//! cell and a timer entry instead of a task and a mailbox.

use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tracing::Instrument;

use super::cell::{Cell, Core, Frozen, Instance, NEVER, OnIdle};
use super::idle::{Expiry, IdleTimers, Taken};
use super::registry::{Leave, Partitions, Registry};
use crate::aggregate::Aggregate;
use crate::aggregate::command::Decide;
use crate::aggregate::context::{CommandContext, DispatchOptions, Dispatched};
use crate::aggregate::lifespan::{Idle, OnTimeout};
use crate::aggregate::{recorded, replay};
use crate::envelope::{Metadata, NewEvent, RecordedEvent, Tags};
use crate::error::{Decider, Error};
use crate::event::EventSet;
use crate::store::{
    Direction, EventStore, ExpectedVersion, NewCommand, Snapshot, SnapshotAndEvents, StoreError,
};
use crate::util::backoff::jittered;
use crate::util::panic::{CatchPanic, Serde, panic_message, serde_guarded};
use crate::util::time::micros_since;

/// How many events activation reads per page (there is no cap on the stream's length).
pub(crate) const REPLAY_PAGE: usize = 1_000;

/// The pause before the second re-run after version conflicts, doubled for each further one
/// (with a random factor in `[0.5, 1.5)`); the first re-run goes at once.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(2);

/// The longest pause between re-runs after version conflicts.
const CONFLICT_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Runs `command` on the live instance of aggregate `id` in `partitions` (thawed or started if
/// need be), in the caller's task; `None` when `wanted` says, once its turn has come, that
/// nobody waits for it any more (it does not run then).
///
/// `deduplicate_since` is the command's [`NewCommand::deduplicate_since`]: `Some` for a
/// command that may be a resend (a key, or a command id the caller chose), whose append then
/// checks the command log and which is recorded even when it appends nothing.
pub(crate) async fn run_in<A: Aggregate>(
    partitions: &Partitions,
    id: &str,
    command: &dyn Decide<A>,
    context: &CommandContext,
    options: &DispatchOptions,
    deduplicate_since: Option<SystemTime>,
    wanted: impl Fn() -> bool,
) -> Option<Result<Dispatched<A>, Error>> {
    // One async fn from the registry to the actor's step: every layer of a dispatch's future
    // keeps its arguments, and the whole of it is allocated and copied per dispatch.
    let taken = partitions.with_registry::<A, _>(|registry| match &registry.name_taken {
        Some(refused) => Err(refused.error()),
        None => Ok((Arc::clone(registry), registry.take(id))),
    });
    let (registry, cell) = match taken {
        Ok(taken) => taken,
        Err(refused) => return Some(Err(refused)),
    };
    let mut taken = Taken::new(&registry, &cell);
    let mut core = cell.core.lock().await;
    if !wanted() {
        return None;
    }
    let run = Run {
        context,
        options,
        deduplicate_since,
    };
    let mut actor = Actor {
        registry: &registry,
        cell: &cell,
        core: &mut core,
    };
    let (result, idle) = actor.handle(command, &run).await;
    // A failed command that left no instance (its activation failed, or it was dropped after
    // a panic or an unknown outcome) leaves no cell behind either, unless other commands wait
    // for it: the next one starts afresh.
    if !(result.is_err() && actor.core.instance.is_none() && actor.abandon()) {
        actor.arm(idle);
    }
    // Given back before the lock is released: whoever takes the lock next and counts the
    // users (an idle timeout about to leave) sees only those still waiting. The timer armed
    // above may have come due already and been dropped while this command held the cell: the
    // give-back queues it again then.
    taken.give_back();
    drop(core);
    Some(result)
}

/// What one run of a command is given besides the command.
struct Run<'a> {
    context: &'a CommandContext,
    options: &'a DispatchOptions,
    /// See [`run_in`].
    deduplicate_since: Option<SystemTime>,
}

/// The idle timer of `cell` fired: hibernate, passivate, stop or stay, as its stage and the
/// lifespan say. The cell was taken for this timeout from `registry`.
pub(crate) async fn time_out<A: Aggregate>(registry: Arc<Registry<A>>, cell: Arc<Cell<A>>) {
    let mut taken = Taken::new(&registry, &cell);
    let mut core = cell.core.lock().await;
    // A command that ran while this timeout waited for the lock moved the deadline.
    if cell.deadline.load(Ordering::Acquire) > registry.now_millis() {
        return;
    }
    let mut actor = Actor {
        registry: &registry,
        cell: &cell,
        core: &mut core,
    };
    actor.on_idle().await;
    taken.give_back();
    drop(core);
}

/// The actor's state borrowed from its locked cell, with the registry it lives in.
struct Actor<'a, A: Aggregate> {
    registry: &'a Arc<Registry<A>>,
    cell: &'a Arc<Cell<A>>,
    core: &'a mut Core<A>,
}

impl<A: Aggregate> Actor<'_, A> {
    /// The aggregate id.
    fn id(&self) -> &str {
        self.cell.id()
    }

    fn stream(&self) -> &str {
        &self.cell.stream
    }

    /// Runs one command and returns its outcome and what the lifespan says about the next
    /// timeout.
    ///
    /// This and [`execute`](Self::execute) are `async` blocks rather than `async fn`s: an
    /// `async fn` moves its arguments into locals of its own, beside the ones it was called
    /// with, and every command's future holds these steps.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps its arguments twice in its future, which every dispatch allocates"
    )]
    fn handle(
        &mut self,
        command: &dyn Decide<A>,
        run: &Run<'_>,
    ) -> impl Future<Output = (Result<Dispatched<A>, Error>, Idle)> {
        async move {
            let context = run.context;
            let span = tracing::debug_span!(
                "evoq.aggregate.execute",
                aggregate = A::NAME,
                aggregate_id = %self.id(),
                command = command.name(),
                command_id = %context.command_id,
            );
            // Timed only when the events that carry the duration are on.
            let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
            let version_before = self.core.instance.as_ref().map(|i| i.version);
            // User code (`#[handles]`, `#[apply]`) is caught where it runs; this catches the rest
            // (an event store that panics), so no panic reaches the caller.
            let result = if span.is_disabled() {
                CatchPanic::new(self.execute(command, run)).await
            } else {
                let execute = self.execute(command, run);
                Box::pin(CatchPanic::new(execute.instrument(span.clone()))).await
            };
            let result = result.unwrap_or_else(|panic| {
                // The append's outcome is unknown: rebuild from the store on the next command.
                self.core.instance = None;
                let message = panic_message(&*panic);
                tracing::error!(
                    name: "evoq.aggregate.execute",
                    stage = "exception",
                    aggregate = A::NAME,
                    aggregate_id = %self.id(),
                    panic = %message,
                    "evoq.aggregate.execute",
                );
                Err(StoreError::Backend {
                    backend: "event store",
                    message: format!(
                        "the store panicked running `{}` on `{}` ({message}); the instance is rebuilt from the store on the next command",
                        command.name(),
                        self.stream(),
                    ),
                }
                .into())
            });
            span.in_scope(|| match &result {
                Ok(done) => tracing::debug!(
                    name: "evoq.aggregate.execute",
                    stage = "stop",
                    version = done.version,
                    events = done.events.len(),
                    duration_us = micros_since(started),
                    "evoq.aggregate.execute",
                ),
                Err(error) => tracing::debug!(
                    name: "evoq.aggregate.execute",
                    stage = "exception",
                    error = %error,
                    duration_us = micros_since(started),
                    "evoq.aggregate.execute",
                ),
            });
            let idle = self.next_idle(&result, command.command());
            // Due when the command's own events carried the version past a multiple: not
            // measured from 0 for an instance activated or thawed by this command, nor over
            // events other nodes appended before it.
            let snapshot_due = match &result {
                Ok(done) => {
                    let from = done.version.saturating_sub(done.events.len() as u64);
                    let before = version_before.map_or(from, |before| before.max(from));
                    self.crosses_snapshot_boundary(before, done.version)
                }
                Err(_) => false,
            };
            if snapshot_due {
                Box::pin(self.save_snapshot()).await;
            }
            (result, idle)
        }
    }

    /// Runs the command against the instance's state and appends what it decides, re-running it
    /// on a fresh state when the stream moved behind the instance's back.
    ///
    /// The instance's state may be older than the stream when another runtime (node) or a
    /// direct append wrote it. An append of events catches that: its expected version fails,
    /// and the command re-runs on the rebuilt state. A decision that appends nothing (a
    /// rejection, a success without events) is confirmed instead, on a store shared by several
    /// runtimes: the instance catches up with the stream and, when it moved, decides again; a
    /// keyed command records its event-less success with an append that checks the version
    /// too. A dispatch with an `expected_version` is confirmed the same way on every store
    /// (a direct append may have moved the stream), and an `expected_version` that the
    /// instance disagrees with is checked against the stream before it fails.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps its arguments twice in its future, which every dispatch allocates"
    )]
    fn execute(
        &mut self,
        command: &dyn Decide<A>,
        run: &Run<'_>,
    ) -> impl Future<Output = Result<Dispatched<A>, Error>> {
        async move {
            let name = command.name();
            let (context, options) = (run.context, run.options);
            let shared = self.registry.env.store.is_shared();
            // The rare paths (catching up, looking the log up, backing off) are boxed, so that the
            // future of every command stays small.
            // Whether the state is known to include every commit made before the command was
            // sent: on a store this runtime owns, the instance has seen every write but the
            // direct appends; a dispatch that names the version it expects is answered on the
            // stream's, so it reads the stream before answering without an append.
            let mut fresh = !shared && options.expected_version.is_none();
            // Whether the stream is known to be ahead of the instance (an append conflicted).
            let mut behind = false;
            // How many times the command was run (not how often the stream was read).
            let mut attempts: u32 = 0;
            loop {
                if behind {
                    Box::pin(self.catch_up(name)).await?;
                    fresh = true;
                }
                if self.core.instance.is_none() && Box::pin(self.activate(name)).await? {
                    // Rebuilt from the store just now (not thawed from hibernation).
                    fresh = true;
                }
                if let Some(expected) = options.expected_version
                    && self.version() != expected
                {
                    // The instance may be behind the stream (another runtime, a direct append),
                    // whatever the store: the stream decides.
                    if !fresh {
                        Box::pin(self.catch_up(name)).await?;
                        fresh = true;
                    }
                    if self.version() != expected {
                        return Err(self.conflict(name, expected, self.version(), attempts));
                    }
                }
                let Some(instance) = self.core.instance.as_ref() else {
                    unreachable!("activated above")
                };
                let version = instance.version;
                attempts += 1;
                let events =
                    match catch_unwind(AssertUnwindSafe(|| command.decide(&instance.state, &[]))) {
                        Ok(Ok(events)) => events,
                        Ok(Err(rejection)) => {
                            if !fresh {
                                fresh = true;
                                if Box::pin(self.catch_up(name)).await? {
                                    continue;
                                }
                            }
                            if shared && run.deduplicate_since.is_some() {
                                // Another node may have run this very command since it was looked up.
                                if let Some(done) = Box::pin(self.ran_before(name, run)).await? {
                                    return Ok(done);
                                }
                            }
                            return Err(Error::Rejected {
                                decider: Decider::Aggregate,
                                aggregate: A::NAME,
                                id: self.id().to_owned(),
                                command: name,
                                source: rejection.into_inner(),
                            });
                        }
                        Err(panic) => return Err(self.panicked(name, &*panic, false)),
                    };
                if events.is_empty() && run.deduplicate_since.is_none() {
                    if !fresh {
                        fresh = true;
                        if Box::pin(self.catch_up(name)).await? {
                            continue;
                        }
                    }
                    return Ok(Dispatched {
                        version,
                        events,
                        position: None,
                        token: *self.registry.env.store.head().borrow(),
                        command_id: context.command_id,
                    });
                }
                let new_events = encode(&events, name, context)?;
                let logged = NewCommand {
                    command_id: context.command_id,
                    idempotency_key: context.idempotency_key.clone(),
                    command: Cow::Borrowed(name),
                    aggregate: Cow::Borrowed(A::NAME),
                    deduplicate_since: run.deduplicate_since,
                };
                // Out of the cell while the append runs: if this future is dropped before the
                // outcome is known (the caller went away), the next command rebuilds from the store.
                let Some(mut instance) = self.core.instance.take() else {
                    unreachable!("activated above")
                };
                // Borrowed for the registry's lifetime, not this actor's: no reference count to
                // touch on every command.
                let registry = self.registry;
                let store = &*registry.env.store;
                let appended = store
                    .append_command(
                        &self.cell.stream,
                        ExpectedVersion::Exact(version),
                        new_events,
                        logged,
                    )
                    .await;
                match appended {
                    Ok(appended) => {
                        let applied = catch_unwind(AssertUnwindSafe(|| {
                            for event in &events {
                                instance.state.apply(event);
                            }
                        }));
                        if let Err(panic) = applied {
                            return Err(self.panicked(name, &*panic, true));
                        }
                        instance.version = appended.version;
                        self.core.instance = Some(instance);
                        let position = (!events.is_empty()).then_some(appended.last_position);
                        let token = match position {
                            Some(position) => position,
                            None => *store.head().borrow(),
                        };
                        return Ok(Dispatched {
                            version: appended.version,
                            events,
                            position,
                            token,
                            command_id: context.command_id,
                        });
                    }
                    Err(StoreError::DuplicateCommand { record }) => {
                        // Another runtime ran it first; nothing of this run was stored, so the
                        // instance is as good as before.
                        self.core.instance = Some(instance);
                        return Box::pin(recorded::first_result::<A>(
                            store,
                            &record,
                            name,
                            self.id(),
                            Decider::Aggregate,
                        ))
                        .await;
                    }
                    Err(StoreError::WrongExpectedVersion { actual, .. }) if actual < version => {
                        // The instance is ahead of its stream: it was activated from a snapshot of
                        // events the stream does not hold (the stream was restored from an older
                        // backup, say). Rebuilt from the stream alone, the command runs again.
                        drop(instance);
                        self.set_aside_snapshot_ahead(version, actual);
                        let mut rebuilt = Instance {
                            state: A::default(),
                            version: 0,
                        };
                        Box::pin(self.replay_onto(&mut rebuilt, u64::MAX, name)).await?;
                        self.core.instance = Some(rebuilt);
                    }
                    Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                        // Someone wrote behind this instance's back. Nothing of this run was
                        // stored, so the state is right for `version`: catch it up with the
                        // stream, then re-run the command (unless the caller pinned a version).
                        self.core.instance = Some(instance);
                        if options.expected_version.is_some() || attempts > options.retry_limit {
                            return Err(self.conflict(name, version, actual, attempts));
                        }
                        metrics::counter!("evoq_aggregate_conflicts_total", "aggregate" => A::NAME)
                            .increment(1);
                        tracing::debug!(
                            name: "evoq.aggregate.conflict",
                            stream = %self.stream(),
                            expected = version,
                            actual,
                            attempt = attempts,
                            "evoq.aggregate.conflict",
                        );
                        behind = true;
                        if attempts > 1 {
                            // Writers that keep colliding (several nodes on one hot stream) fall
                            // out of step instead of retrying in lockstep.
                            Box::pin(tokio::time::sleep(jittered(
                                CONFLICT_BACKOFF,
                                CONFLICT_BACKOFF_MAX,
                                attempts - 1,
                            )))
                            .await;
                        }
                    }
                    // The append's outcome is unknown to us: rebuild before the next command.
                    Err(error) => {
                        let error =
                            Error::of_store(Decider::Aggregate, A::NAME, name, self.id(), error);
                        error.alarm("append", self.stream());
                        return Err(error);
                    }
                }
            }
        }
    }

    /// The live instance's version (0 before activation).
    fn version(&self) -> u64 {
        self.core.instance.as_ref().map_or(0, |i| i.version)
    }

    /// The first result of this command, when the command log shows that it already ran.
    async fn ran_before(
        &self,
        name: &'static str,
        run: &Run<'_>,
    ) -> Result<Option<Dispatched<A>>, Error> {
        let Some(since) = run.deduplicate_since else {
            return Ok(None);
        };
        let store = &*self.registry.env.store;
        recorded::ran_before::<A>(
            store,
            run.context,
            since,
            name,
            self.id(),
            Decider::Aggregate,
        )
        .await
    }

    /// Applies the events the stream holds beyond the live instance's version; whether there
    /// were any. The instance is out of the cell meanwhile: if this fails (or is dropped), the
    /// next command rebuilds it from the store.
    async fn catch_up(&mut self, command: &'static str) -> Result<bool, Error> {
        let Some(mut instance) = self.core.instance.take() else {
            return Ok(false);
        };
        let before = instance.version;
        self.replay_onto(&mut instance, u64::MAX, command).await?;
        let moved = instance.version != before;
        if moved {
            tracing::debug!(
                name: "evoq.aggregate.refresh",
                aggregate = A::NAME,
                aggregate_id = %self.id(),
                from = before,
                to = instance.version,
                "evoq.aggregate.refresh",
            );
        }
        self.core.instance = Some(instance);
        Ok(moved)
    }

    /// Makes the instance live: thawed from hibernation (`false`), or rebuilt from the store
    /// (`true`).
    async fn activate(&mut self, command: &'static str) -> Result<bool, Error> {
        if let Some(frozen) = self.core.thaw.take() {
            self.core.instance = self.thawed(*frozen);
            if let Some(instance) = &self.core.instance {
                self.initialized("hibernation", instance.version);
                return Ok(false);
            }
        }
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
            "evoq.aggregate.activate",
        );
        let from = if instance.version == 0 {
            "new"
        } else {
            "store"
        };
        self.initialized(from, instance.version);
        self.core.instance = Some(instance);
        Ok(true)
    }

    /// Reports `evoq.aggregate.init`: an instance came to life `from` a new stream, the store
    /// or hibernation, at `version`.
    fn initialized(&self, from: &'static str, version: u64) {
        tracing::debug!(
            name: "evoq.aggregate.init",
            aggregate = A::NAME,
            aggregate_id = %self.id(),
            from,
            version,
            "evoq.aggregate.init",
        );
    }

    fn thawed(&mut self, frozen: Frozen) -> Option<Instance<A>> {
        match decoded_state::<A>(frozen.state.as_bytes()) {
            Some(Ok(state)) => {
                if frozen.snapshotted {
                    self.core.snapshot_version = frozen.version;
                }
                Some(Instance {
                    state,
                    version: frozen.version,
                })
            }
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
    /// stream when there is no usable snapshot. The snapshot and the first page come in one call
    /// to the store ([`read_from_snapshot`](EventStore::read_from_snapshot)): a new aggregate's
    /// activation is that one call, which the in-memory store answers without reading.
    async fn rebuild(&mut self, command: &'static str) -> Result<Instance<A>, Error> {
        let registry = self.registry;
        let start = registry
            .env
            .store
            .read_from_snapshot(self.stream(), REPLAY_PAGE)
            .await
            .map_err(|error| {
                Error::of_store(Decider::Aggregate, A::NAME, command, self.id(), error)
            });
        let SnapshotAndEvents { snapshot, events } = self.alarmed(start)?;
        let mut instance = Instance {
            state: A::default(),
            version: 0,
        };
        if let Some(snapshot) = snapshot {
            let version = snapshot.version;
            match self.restored(snapshot) {
                // Nothing after it: the stream may not even reach it.
                Some(restored) if events.is_empty() => {
                    instance = Box::pin(self.unless_ahead(restored, command)).await?;
                }
                Some(restored) => instance = restored,
                // Not usable: the events it stands for are replayed before the page after it.
                None => self.replay_onto(&mut instance, version, command).await?,
            }
        }
        let full = events.len() == REPLAY_PAGE;
        let applied = self.apply_page(&mut instance, events, command);
        self.alarmed(applied)?;
        if full {
            self.replay_onto(&mut instance, u64::MAX, command).await?;
        }
        Ok(instance)
    }

    /// `restored`, the state of a snapshot with no event after it, unless the snapshot is ahead
    /// of its stream (the stream was restored from an older backup, or the row was changed by
    /// hand): such a snapshot is set aside with a warning, like one that no longer decodes,
    /// and the state is the whole stream replayed.
    async fn unless_ahead(
        &mut self,
        restored: Instance<A>,
        command: &'static str,
    ) -> Result<Instance<A>, Error> {
        let stream_version = self
            .registry
            .env
            .store
            .stream_version(self.stream())
            .await
            .map_err(|error| {
                Error::of_store(Decider::Aggregate, A::NAME, command, self.id(), error)
            });
        let stream_version = self.alarmed(stream_version)?;
        if stream_version >= restored.version {
            return Ok(restored);
        }
        self.set_aside_snapshot_ahead(restored.version, stream_version);
        let mut replayed = Instance {
            state: A::default(),
            version: 0,
        };
        self.replay_onto(&mut replayed, u64::MAX, command).await?;
        Ok(replayed)
    }

    /// Forgets the snapshot at `version`, ahead of its stream at `stream_version`, with a
    /// warning: the state is rebuilt from the stream alone.
    fn set_aside_snapshot_ahead(&mut self, version: u64, stream_version: u64) {
        tracing::warn!(
            name: "evoq.aggregate.snapshot_load",
            stage = "exception",
            aggregate = A::NAME,
            aggregate_id = %self.id(),
            version,
            stream_version,
            error = "the snapshot is ahead of its stream",
            "ignoring the snapshot; replaying the whole stream",
        );
        self.core.snapshot_version = 0;
    }

    /// Applies to `instance` the events of the stream after its version, through version
    /// `through` at most, page by page, through their upcasters.
    async fn replay_onto(
        &self,
        instance: &mut Instance<A>,
        through: u64,
        command: &'static str,
    ) -> Result<(), Error> {
        let result = self.replay_pages(instance, through, command).await;
        self.alarmed(result)
    }

    /// `result`, with the integrity alarm raised (stage `rebuild`) when it is an integrity
    /// error of the store.
    fn alarmed<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(error) = &result {
            error.alarm("rebuild", self.stream());
        }
        result
    }

    async fn replay_pages(
        &self,
        instance: &mut Instance<A>,
        through: u64,
        command: &'static str,
    ) -> Result<(), Error> {
        let store = &*self.registry.env.store;
        loop {
            let left = through.saturating_sub(instance.version);
            let wanted = usize::try_from(left).map_or(REPLAY_PAGE, |left| left.min(REPLAY_PAGE));
            if wanted == 0 {
                return Ok(());
            }
            let page = store
                .read_stream(
                    self.stream(),
                    instance.version + 1,
                    Direction::Forward,
                    wanted,
                )
                .await?;
            let full = page.len() == wanted;
            self.apply_page(instance, page, command)?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Applies one page of the stream (the events right after `instance`'s version, in order)
    /// to `instance`, through their upcasters.
    fn apply_page(
        &self,
        instance: &mut Instance<A>,
        page: Vec<Arc<RecordedEvent>>,
        command: &'static str,
    ) -> Result<(), Error> {
        for recorded in page {
            if recorded.stream_version != instance.version + 1 {
                return Err(StoreError::Integrity {
                    location: format!("stream `{}`", self.stream()),
                    reason: format!(
                        "expected version {} next, the store returned version {}",
                        instance.version + 1,
                        recorded.stream_version
                    ),
                }
                .into());
            }
            // Through the event's upcasters, as every read path.
            let event = replay::decode::<A>(&recorded, Decider::Aggregate)?;
            let state = &mut instance.state;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| state.apply(&event))) {
                return Err(Error::Panicked {
                    decider: Decider::Aggregate,
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
        Ok(())
    }

    /// The instance a loaded snapshot holds, when it decodes. A snapshot that no longer
    /// decodes (the state type changed) is ignored with a warning.
    fn restored(&mut self, snapshot: Snapshot) -> Option<Instance<A>> {
        match decoded_state::<A>(&snapshot.data) {
            Some(Ok(state)) => {
                tracing::debug!(
                    name: "evoq.aggregate.snapshot_load",
                    stage = "stop",
                    aggregate = A::NAME,
                    aggregate_id = %self.id(),
                    version = snapshot.version,
                    "evoq.aggregate.snapshot_load",
                );
                self.core.snapshot_version = snapshot.version;
                Some(Instance {
                    state,
                    version: snapshot.version,
                })
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
                None
            }
            None => None,
        }
    }

    fn crosses_snapshot_boundary(&self, before: u64, after: u64) -> bool {
        let every = self.registry.kind.snapshot_every;
        every > 0 && after / every > before / every
    }

    /// Saves the current state as a snapshot, unless it is not serializable or already saved.
    /// A failure is logged: it never fails a command whose events are stored.
    async fn save_snapshot(&mut self) {
        let Some(instance) = self.core.instance.as_ref() else {
            return;
        };
        if instance.version == 0 || instance.version == self.core.snapshot_version {
            return;
        }
        let version = instance.version;
        let data = match encoded_state(&instance.state) {
            None => return,
            Some(Ok(data)) => data,
            Some(Err(error)) => {
                tracing::warn!(
                    name: "evoq.aggregate.snapshot_save",
                    stage = "exception",
                    aggregate = A::NAME,
                    aggregate_id = %self.id(),
                    error = %error,
                    "evoq.aggregate.snapshot_save",
                );
                return;
            }
        };
        let snapshot = Snapshot {
            stream_id: self.stream().to_owned(),
            version,
            data,
            taken_at: SystemTime::now(),
        };
        match self.registry.env.store.save_snapshot(snapshot).await {
            Ok(()) => {
                self.core.snapshot_version = version;
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
                    "evoq.aggregate.snapshot_save",
                );
            }
            Err(error) => tracing::warn!(
                name: "evoq.aggregate.snapshot_save",
                stage = "exception",
                aggregate = A::NAME,
                aggregate_id = %self.id(),
                version,
                error = %error,
                "evoq.aggregate.snapshot_save",
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
                "evoq.aggregate.lifespan",
            );
            Idle::Configured
        })
    }

    /// Sets the next idle timer for `idle`, scaled by the memory monitor's current factor.
    fn arm(&mut self, idle: Idle) {
        let now = Instant::now();
        let kind = &self.registry.kind;
        let timeout = match idle {
            Idle::Infinity => return self.set_timer(None),
            Idle::Hibernate => {
                return self.set_timer(Some((
                    now,
                    OnIdle::Hibernate {
                        passivate_at: NEVER,
                    },
                )));
            }
            Idle::Configured => kind.idle_timeout,
            Idle::After(timeout) => timeout,
        };
        let factor = self.registry.env.monitor.ttl_factor();
        // The factor is 1 unless memory is under pressure: skip the float round trips then.
        let scale = |duration: Duration| {
            if factor == 1.0 {
                duration
            } else {
                Duration::try_from_secs_f64(duration.as_secs_f64() * factor)
                    .unwrap_or(Duration::MAX)
            }
        };
        let timeout = scale(timeout);
        // A time too far for the clock (`Idle::After(Duration::MAX)`, say) never comes.
        let timeout_at = now.checked_add(timeout);
        if let Some(hibernate_after) = kind.hibernate_after.map(scale)
            && hibernate_after < timeout
            && let Some(hibernate_at) = now.checked_add(hibernate_after)
        {
            return self.set_timer(Some((
                hibernate_at,
                OnIdle::Hibernate {
                    passivate_at: timeout_at.map_or(NEVER, |at| self.registry.millis_at(at)),
                },
            )));
        }
        self.set_timer(timeout_at.map(|at| (at, OnIdle::Timeout)));
    }

    fn set_timer(&mut self, timer: Option<(Instant, OnIdle)>) {
        match timer {
            None => self.cell.deadline.store(NEVER, Ordering::Release),
            Some((at, stage)) => self.set_deadline(self.registry.millis_at(at), stage),
        }
    }

    /// Sets the idle timer to fire at `deadline` (milliseconds since the registry's epoch).
    fn set_deadline(&mut self, deadline: u64, stage: OnIdle) {
        self.core.stage = stage;
        self.cell.deadline.store(deadline, Ordering::Release);
        self.registry
            .timers
            .schedule(self.registry, self.cell, deadline);
    }

    /// The idle timer fired: hibernate, passivate, stop or stay.
    async fn on_idle(&mut self) {
        let action = match self.core.stage {
            OnIdle::Hibernate { passivate_at } => match self.freeze(passivate_at) {
                Some(frozen) => return self.leave(Leave::Hibernate(frozen), "hibernate"),
                // Not serializable (or never activated): time out as usual instead.
                None if passivate_at == NEVER => OnTimeout::Passivate,
                None => return self.set_deadline(passivate_at, OnIdle::Timeout),
            },
            OnIdle::Timeout => match &self.core.instance {
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
                self.leave(Leave::Remove, "passivate");
            }
            OnTimeout::Stop => self.leave(Leave::Remove, "stop"),
            OnTimeout::Hibernate { snapshot } => {
                if snapshot {
                    self.save_snapshot().await;
                }
                match self.freeze(NEVER) {
                    Some(frozen) => self.leave(Leave::Hibernate(frozen), "hibernate"),
                    None => self.leave(Leave::Remove, "passivate"),
                }
            }
            OnTimeout::Keep { snapshot } => {
                if snapshot {
                    self.save_snapshot().await;
                }
                self.arm(Idle::Configured);
            }
        }
    }

    /// The instance's serialized state, for a hibernated slot.
    fn freeze(&self, passivate_at: u64) -> Option<Frozen> {
        let instance = self.core.instance.as_ref()?;
        match encoded_state(&instance.state)? {
            Ok(state) => Some(Frozen::new(
                &state,
                instance.version,
                passivate_at,
                self.core.snapshot_version == instance.version,
            )),
            Err(error) => {
                tracing::warn!(
                    name: "evoq.aggregate.hibernate",
                    stage = "exception",
                    aggregate = A::NAME,
                    aggregate_id = %self.id(),
                    error = %error,
                    "evoq.aggregate.hibernate",
                );
                None
            }
        }
    }

    /// Leaves the registry, unless commands wait for this instance: it stays for them then,
    /// with a fresh idle timeout in case they all give up.
    /// Takes the cell out of the registry when no other command holds it; whether it left.
    fn abandon(&mut self) -> bool {
        self.registry.leave(self.cell, Leave::Abandon)
    }

    fn leave(&mut self, how: Leave, action: &'static str) {
        if !self.registry.leave(self.cell, how) {
            self.arm(Idle::Configured);
            return;
        }
        let version = self.core.instance.as_ref().map_or(0, |i| i.version);
        self.core.instance = None;
        let id = self.id();
        match action {
            "hibernate" => tracing::debug!(
                name: "evoq.aggregate.hibernate",
                stage = "stop",
                aggregate = A::NAME,
                aggregate_id = %id,
                version,
                "evoq.aggregate.hibernate",
            ),
            "stop" => tracing::debug!(
                name: "evoq.aggregate.stop",
                stage = "stop",
                aggregate = A::NAME,
                aggregate_id = %id,
                version,
                "evoq.aggregate.stop",
            ),
            _ => tracing::debug!(
                name: "evoq.aggregate.passivate",
                stage = "stop",
                aggregate = A::NAME,
                aggregate_id = %id,
                version,
                "evoq.aggregate.passivate",
            ),
        }
    }

    fn conflict(&self, command: &'static str, expected: u64, actual: u64, attempts: u32) -> Error {
        Error::Conflict {
            stream: self.stream().to_owned(),
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
        self.core.instance = None;
        let message = panic_message(panic);
        tracing::error!(
            name: "evoq.aggregate.execute",
            stage = "exception",
            aggregate = A::NAME,
            aggregate_id = %self.id(),
            command,
            panic = %message,
            events_stored,
            "evoq.aggregate.execute",
        );
        Error::Panicked {
            decider: Decider::Aggregate,
            aggregate: A::NAME,
            id: self.id().to_owned(),
            command,
            message,
            events_stored,
        }
    }
}

/// The command's `metadata` with one event's `tags`.
fn tagged(metadata: &Metadata, tags: Tags) -> Metadata {
    let mut metadata = metadata.clone();
    metadata.tags = tags;
    metadata
}

/// Serializes the events of one command with the command's metadata (and each event's tags).
pub(crate) fn encode<E: EventSet>(
    events: &[E],
    command: &'static str,
    context: &CommandContext,
) -> Result<Vec<NewEvent>, Error> {
    let metadata = context.event_metadata();
    // Sized up front (collecting through `Result` would start at four events), and the
    // thread's spare vector when the store gave the last one back.
    let mut encoded = NewEvent::batch(events.len());
    for event in events {
        let mut data = event.encode().map_err(|error| Error::Encode {
            command,
            event_type: event.event_type(),
            reason: error.to_string(),
        })?;
        // A store may keep the data for good: no spare capacity (a no-op for the derived
        // events, which encode to exact vectors).
        data.shrink_to_fit();
        encoded.push(NewEvent {
            event_id: crate::util::ids::new_v7(),
            event_type: event.event_type().into(),
            schema_version: event.schema_version(),
            data,
            metadata: tagged(&metadata, event.tags()),
        });
    }
    Ok(encoded)
}

impl<A: Aggregate> Expiry<A> for Registry<A> {
    fn timers(&self) -> &IdleTimers<A> {
        &self.timers
    }

    fn epoch(&self) -> Instant {
        self.epoch
    }

    fn now_millis(&self) -> u64 {
        Registry::now_millis(self)
    }

    fn take_idle(&self, cell: &Arc<Cell<A>>) -> bool {
        Registry::take_idle(self, cell)
    }

    fn time_out(self: Arc<Self>, cell: Arc<Cell<A>>) -> impl Future<Output = ()> + Send {
        time_out(self, cell)
    }
}

/// `A`'s state decoded by [`Aggregate::decode_state`], whose `Deserialize` is user code: its
/// panic is a decode error saying so, which the caller reports like any state that does not
/// decode (the snapshot set aside, the hibernated state rebuilt from the store).
fn decoded_state<A: Aggregate>(data: &[u8]) -> Option<Result<A, serde_json::Error>> {
    serde_guarded::<A, _>(Serde::Deserialize, || A::decode_state(data).transpose()).transpose()
}

/// `state` encoded by [`Aggregate::encode_state`], whose `Serialize` is user code: its panic
/// is an encode error saying so, which the caller logs (no snapshot, no hibernation), never a
/// failure of the command whose events are stored.
fn encoded_state<A: Aggregate>(state: &A) -> Option<Result<Vec<u8>, serde_json::Error>> {
    serde_guarded::<A, _>(Serde::Serialize, || state.encode_state().transpose()).transpose()
}
