//! One handler's task: subscription, delivery with retries, dead letters, checkpoints.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use uuid::Uuid;

use super::consumer::{Consumer, EventMeta, HandlerFailure, HandlerFuture};
use super::policy::{HandlerConfig, OnError, Resolved, RetryStrategy, StartFrom};
use super::state::{Control, Count, Doing, HandlerState, Progress, Retrying};
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::store::{
    DeadLetter, EventFilter, EventStore, FailureKind, HandlerRequest, Lease, RequestedAction,
    StoreError, StoredRow, Subscription, UndecodableRow,
};
use crate::util::panic::{CatchPanic, panic_message};
use crate::util::trace_context::{TRACEPARENT, continue_trace};

/// How the task backs off when the store fails (reads, dead-letter saves).
const STORE_RETRY: RetryStrategy =
    RetryStrategy::exponential(Duration::from_millis(50), Duration::from_secs(5));

/// How often a handler whose lease another node holds asks for it again.
const LEASE_POLL: Duration = Duration::from_millis(200);

/// How long a task that takes a shared lease waits for its node's view of the head to reach
/// the checkpoint another node saved, before it takes the checkpoint for one beyond the head
/// (PostgreSQL's watch follows the other nodes' commits by notification, or by a poll every
/// second by default).
const HEAD_LAG: Duration = Duration::from_secs(5);

/// How long a node whose lease was lost waits before it asks for it again, so that another
/// node (whose connection to the store did not break) takes the handler over.
const LEASE_LOST_PAUSE: Duration = Duration::from_secs(1);

/// How long a shared lease stays confirmed while a page is delivered: past it, the lease is
/// confirmed again before the next event (a page is always confirmed before its first event).
const LEASE_CONFIRM_EVERY: Duration = Duration::from_secs(1);

/// How often the holder of a handler's lease looks for the requests kept for it in the store
/// (dead-letter retries handed over by other nodes, an operator's retries and rebuilds), and
/// how often a node that handed one over looks whether it was carried out.
const REQUEST_POLL: Duration = Duration::from_millis(200);

/// The most requests the holder takes at a time.
const REQUEST_BATCH: usize = 16;

/// The state of one handler's task.
pub(crate) struct Task {
    state: Arc<HandlerState>,
    store: Arc<dyn EventStore>,
    options: Resolved,
    checkpoint_every: u64,
    page_size: usize,
    start_after: u64,
    /// The store's head when the runtime started, before any command of this runtime: what a
    /// checkpoint beyond the head is reset to.
    head_at_start: u64,
    /// Whether the consumer keeps its checkpoint with its data (a read model committing both
    /// in one transaction): then the checkpoint says what its data holds, back as well as
    /// forward (see [`resume_shared`](Self::resume_shared)).
    keeps_checkpoint: bool,
    /// The position last saved, or the start position: nothing up to it needs saving (a
    /// runtime that stops before its handler moved leaves the stored checkpoint alone).
    saved: u64,
    requests: mpsc::Receiver<Control>,
    shutdown: watch::Receiver<bool>,
    /// The position processed through but not published yet (0: none): published, and the
    /// waiters woken, by [`announce`](Self::announce).
    unannounced: u64,
    /// When a shared lease was last confirmed by the store.
    confirmed_at: Instant,
    /// Whether the task has taken the lease before (a task told to start from the origin
    /// starts there at its first lease only).
    leased: bool,
    /// The checkpoint the consumer keeps, when it was beyond the store's head at the start:
    /// moved back to where the task resumes once the task holds the lease (see
    /// [`rewind_kept`](Self::rewind_kept)).
    kept_beyond: Option<u64>,
    /// The exported gauges of the handler's position and of its lag behind the head.
    gauges: Gauges,
    /// Whether the handler's status says it is retrying a failed event (see
    /// [`retrying_event`](Self::retrying_event)).
    failing: bool,
    /// How many commits of a consumer that keeps its checkpoint failed in a row: the back-off
    /// before each delivery again grows with it (see [`save`](Self::save)).
    commit_failures: u32,
}

/// The handler's gauges: `evoq_handler_position{handler}` and `evoq_handler_lag{handler}`, set
/// whenever the task publishes its position, and `evoq_handler_status{handler, status}`, set
/// whenever its status changes.
struct Gauges {
    position: metrics::Gauge,
    lag: metrics::Gauge,
    head: watch::Receiver<u64>,
    /// One per label of [`Doing::LABELS`]: 1 for the handler's status, 0 for the others.
    status: [metrics::Gauge; 3],
}

impl Gauges {
    /// Shows what the handler is doing in `evoq_handler_status`.
    fn show(&self, doing: &Doing<'_>) {
        let label = doing.label();
        for (gauge, each) in self.status.iter().zip(Doing::LABELS) {
            gauge.set(if each == label { 1.0 } else { 0.0 });
        }
    }
}

/// Where a task starts: after this position, and the store's head when the runtime started.
pub(crate) struct StartAt {
    pub(crate) after: u64,
    pub(crate) head: u64,
    /// Whether the consumer keeps its checkpoint itself (see [`Task::keeps_checkpoint`]).
    pub(crate) kept: bool,
}

/// How [`Task::serve`] ended.
enum Served {
    /// The runtime stopped, or the handler did.
    Done,
    /// The lease was lost (why): stop delivering and ask for it again.
    LeaseLost(String),
}

/// What became of a [`Task::save`].
enum Saved {
    /// Saved.
    Done,
    /// Not saved, and nothing to deliver again: a checkpoint of the store the next save
    /// writes.
    Failed,
    /// The commit of a consumer that keeps its checkpoint did not go through and the runtime
    /// is stopping: deliver nothing more (the consumer refuses writes until its checkpoint is
    /// read again), save nothing; the next start resumes after the checkpoint it kept.
    Stopping,
    /// The lease was lost (why): nothing saved.
    LeaseLost(String),
    /// The commit of a consumer that keeps its checkpoint did not go through: deliver the
    /// events after this position, the consumer's checkpoint, again.
    Redeliver(u64),
}

/// What became of one event.
enum Delivered {
    /// Handled, dead-lettered or skipped: go on.
    Next,
    /// The runtime is stopping.
    Shutdown,
    /// `OnError::Stop`: the handler stops before this event.
    Stop(String),
    /// The lease was lost (why) before the event was retried or dead-lettered.
    LeaseLost(String),
}

/// What failed, for the handler's error policy.
#[derive(Clone, Copy)]
enum Failed<'a> {
    /// The handling of an event; `finished` when the consumer holds finished changes of it,
    /// which are committed whatever the policy does (see [`Consumer::has_finished_changes`]).
    Handling { finished: bool },
    /// A stored row that could not be read back, kept whole in its dead letter.
    Row(&'a UndecodableRow),
}

/// An event the handler's retries gave up on, as its dead letter records it.
struct GivenUp<'a> {
    failure: &'a HandlerFailure,
    attempts: u32,
    first_failed_at: SystemTime,
    last_failed_at: SystemTime,
    /// The stored row of an event that could not be read back.
    raw_row: Option<&'a UndecodableRow>,
}

enum Next {
    Shutdown,
    Control(Control),
    Events(Result<Vec<StoredRow>, StoreError>),
    /// The connection holding the lease broke.
    LeaseLost,
    /// Time to look for the requests kept for the handler in the store.
    Requests,
}

/// Why a lease whose connection broke is lost.
const CONNECTION_BROKE: &str = "the connection holding the lease broke";

impl Task {
    pub(crate) fn new(
        state: Arc<HandlerState>,
        store: Arc<dyn EventStore>,
        options: Resolved,
        defaults: &HandlerConfig,
        start: StartAt,
        requests: mpsc::Receiver<Control>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let StartAt {
            after: start_after,
            head: head_at_start,
            kept: keeps_checkpoint,
        } = start;
        let gauges = Gauges {
            position: metrics::gauge!("evoq_handler_position", "handler" => state.name.to_string()),
            lag: metrics::gauge!("evoq_handler_lag", "handler" => state.name.to_string()),
            head: store.head(),
            status: Doing::LABELS.map(|status| {
                metrics::gauge!("evoq_handler_status", "handler" => state.name.to_string(), "status" => status)
            }),
        };
        gauges.show(&state.progress.borrow().doing());
        Task {
            gauges,
            head_at_start,
            keeps_checkpoint,
            state,
            store,
            options,
            checkpoint_every: defaults.checkpoint_every,
            page_size: defaults.page_size,
            start_after,
            saved: start_after,
            requests,
            shutdown,
            unannounced: 0,
            confirmed_at: Instant::now(),
            leased: false,
            kept_beyond: None,
            failing: false,
            commit_failures: 0,
        }
    }

    /// Delivers events to `consumer` until the runtime stops (or the handler does), holding the
    /// store's [`Lease`] on the handler's name while it delivers: on a store shared by several
    /// nodes it waits (polling every [`LEASE_POLL`]) until no other node runs the handler, then
    /// resumes from the checkpoint that node saved.
    ///
    /// A shared lease can be lost while held (its connection broke): the task confirms it with
    /// the store before each page it delivers, before each checkpoint it saves, and at least
    /// every [`LEASE_CONFIRM_EVERY`] during a page; once it is not confirmed, the task delivers
    /// nothing more and saves nothing, waits [`LEASE_LOST_PAUSE`] (another node takes over),
    /// and asks for the lease again.
    ///
    /// The task is supervised: a panic outside the handler's code (the handler's own panics
    /// are failures of their event) is caught and logged at ERROR, the handler's state says
    /// why it is retrying, and after a back-off the task resumes from the position it had
    /// processed through.
    pub(crate) async fn run<C: Consumer>(mut self, mut consumer: C) {
        if C::CHECKPOINT_EVERY_EVENT {
            self.checkpoint_every = 1;
            self.kept_checkpoint(&mut consumer).await;
        }
        let mut panics = 0u32;
        loop {
            let Err(panic) = CatchPanic::new(self.run_leased(&mut consumer)).await else {
                return;
            };
            let resume = self.unannounced.max(self.state.progress.borrow().position);
            let failed = format!(
                "the handler's task panicked outside the handler ({}); it resumes after position {resume}",
                panic_message(&*panic),
            );
            let delay = self.back_off(&mut panics, |_| failed.clone());
            tracing::error!(
                name: "evoq.handler.task",
                stage = "panic",
                handler = &*self.state.name,
                position = resume,
                panics,
                error = %failed,
                retry_in_ms = delay.as_millis() as u64,
                "evoq.handler.task",
            );
            self.start_after = resume;
            if !self.sleep(delay).await {
                self.stop_unleased();
                return;
            }
        }
    }

    /// [`run`](Self::run), unsupervised.
    async fn run_leased<C: Consumer>(&mut self, consumer: &mut C) {
        loop {
            let Some(lease) = self.acquire(consumer).await else {
                self.stop_unleased();
                return;
            };
            let reason = match self.serve(consumer, &lease).await {
                Served::Done => return,
                Served::LeaseLost(reason) => reason,
            };
            drop(lease);
            self.roll_back(consumer).await;
            tracing::warn!(
                name: "evoq.handler.lease",
                stage = "lost",
                handler = &*self.state.name,
                reason = %reason,
                "the handler stopped delivering on this node; another node takes it over",
            );
            if !self.wait_unleased(LEASE_LOST_PAUSE).await {
                self.stop_unleased();
                return;
            }
        }
    }

    /// The end of a task that does not hold the lease: it saves nothing (the holder owns the
    /// checkpoint); waiters learn that it stopped.
    fn stop_unleased(&mut self) {
        self.publish(self.start_after);
        self.announce();
        self.shut_down(self.start_after);
    }

    /// The task ends at `position` because the runtime stops: its status says so (unless its
    /// policy stopped it first, which stays the reason).
    fn shut_down(&self, position: u64) {
        self.change_status(|progress| {
            let first = progress.stopped.is_none();
            if first {
                progress.stopped = Some(Arc::from("the runtime stopped"));
            }
            first
        });
        tracing::debug!(
            name: "evoq.handler.shutdown",
            handler = &*self.state.name,
            position,
            "evoq.handler.shutdown",
        );
    }

    /// Waits `delay` without the lease, unless the runtime stops first (`false`). Requests
    /// that come meanwhile are not left waiting for the lease: a dead-letter retry or a rebuild
    /// is handed to the node that holds it (see [`hand_over_retry`], [`hand_over_rebuild`]),
    /// unless its caller gave up already.
    async fn wait_unleased(&mut self, delay: Duration) -> bool {
        self.announce();
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => return false,
                Some(control) = self.requests.recv() => {
                    if !self.withdrawn(&control) {
                        self.hand_over(control);
                    }
                }
                () = tokio::time::sleep_until(until) => return !self.stopping(),
            }
        }
    }

    /// Whether the caller of `control` gave up before the task began it (see
    /// [`Control::given_up`]): then it is withdrawn, never begun, and the task says so.
    fn withdrawn(&self, control: &Control) -> bool {
        if !control.given_up() {
            return false;
        }
        tracing::info!(
            name: "evoq.handler.request",
            stage = "withdrawn",
            handler = &*self.state.name,
            action = control.action.as_str(),
            event_id = ?control.action.event_id(),
            "a request given up by its caller before it began is withdrawn",
        );
        true
    }

    /// Hands the action of `control` (a dead-letter retry, a rebuild) to the node holding the
    /// lease, in a task of its own that answers its caller once that node carried it out (for
    /// a rebuild, once the replay reached the head).
    fn hand_over(&self, control: Control) {
        let Control { action, reply } = control;
        let store = Arc::clone(&self.store);
        let handler = Arc::clone(&self.state.name);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut reply = reply;
            let (store, handler) = (&*store, &*handler);
            let result = match action {
                RequestedAction::RetryDeadLetter { event_id } => {
                    hand_over_retry(store, handler, event_id, &mut shutdown, &mut reply).await
                }
                RequestedAction::Rebuild => {
                    hand_over_rebuild(store, handler, &mut shutdown, &mut reply).await
                }
            };
            let _ = reply.send(result);
        });
    }

    /// Asks the store whether a shared lease is still held (at once `Ok` for a local one);
    /// `Err` says why it is not.
    async fn still_held(&mut self, lease: &Lease) -> Result<(), String> {
        if !lease.is_shared() {
            return Ok(());
        }
        if lease.is_lost() {
            return Err(CONNECTION_BROKE.to_owned());
        }
        self.announce();
        match lease.confirm().await {
            Ok(()) => {
                self.confirmed_at = Instant::now();
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Where the task resumes once it took a shared lease: after the checkpoint the last holder
    /// saved, when that is further than where the task is. Not at the task's first lease when
    /// it was told to start elsewhere (`StartFrom::Origin` replays from the first event,
    /// whatever the checkpoint), and never past the store's head: a checkpoint beyond it (a
    /// store restored from an older backup) would skip the events appended from now on up to
    /// it, so the task resumes at the head the runtime started at (or where it is, when that
    /// is further), with a warning.
    ///
    /// A consumer that keeps its checkpoint with its data (a SQL read model) is asked for it:
    /// it says what the data holds. One behind where the task is was moved back by the last
    /// holder (a rebuild, which cleared the data), and the task resumes there too, finishing
    /// the replay; except at a first lease with `StartFrom::Current`, which starts at the head.
    async fn resume_shared<C: Consumer>(&mut self, consumer: &mut C) -> Result<(), String> {
        let first = !std::mem::replace(&mut self.leased, true);
        if first && self.options.start_from == StartFrom::Origin {
            return Ok(());
        }
        let saved = if self.keeps_checkpoint {
            let kept = CatchPanic::new(consumer.checkpoint(&self.state.name))
                .await
                .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_message(&*panic))))?;
            // None: the data was cleared (a rebuild that went no further): from the first event.
            Some(kept.unwrap_or(0))
        } else {
            self.store
                .load_checkpoint(&self.state.name)
                .await
                .map_err(|error| error.to_string())?
        };
        let Some(saved) = saved else {
            return Ok(());
        };
        if saved < self.start_after
            && self.keeps_checkpoint
            && !(first && self.options.start_from == StartFrom::Current)
        {
            self.move_back(saved);
            return Ok(());
        }
        if saved <= self.start_after {
            return Ok(());
        }
        // Positions are gap-free: an event at or after `saved` exists exactly when the head has
        // reached it. This node reads up to the head it has seen, which may lag behind the
        // node that saved the checkpoint (by a notification, or a poll of the store's): it
        // waits for it a while first, so that a checkpoint that is not beyond the head is not
        // taken for one (which would deliver again what the other node handled).
        if *self.store.head().borrow() < saved {
            let mut head = self.store.head();
            let _ = tokio::time::timeout(HEAD_LAG, head.wait_for(|head| *head >= saved)).await;
        }
        let reached = self
            .store
            .read_all(saved - 1, 1, &EventFilter::All)
            .await
            .map_err(|error| error.to_string())?;
        if reached.events.is_empty() && reached.undecodable.is_empty() {
            // As at a start: the head the runtime started at (the node that held the lease had
            // handled up to there when its checkpoint went past it, or the start saw that
            // checkpoint), or where the task is, when it processed further itself.
            let position = self.start_after.max(self.head_at_start);
            tracing::warn!(
                name: "evoq.handler.checkpoint",
                stage = "reset",
                handler = &*self.state.name,
                checkpoint = saved,
                position,
                "the saved checkpoint is beyond the store's head; resuming at the head",
            );
            self.start_after = position;
            self.saved = position;
            self.publish(position);
            self.announce();
            return Ok(());
        }
        self.start_after = saved;
        self.saved = saved;
        self.publish(saved);
        self.announce();
        Ok(())
    }

    /// Resumes after `position`, behind where the task is (the checkpoint a rebuild on another
    /// node moved back): the published position goes back with it, so that no wait counts a
    /// position whose changes are not there any more.
    fn move_back(&mut self, position: u64) {
        tracing::info!(
            name: "evoq.handler.checkpoint",
            stage = "moved_back",
            handler = &*self.state.name,
            checkpoint = position,
            position = self.start_after,
            "the checkpoint was moved back by the node that held the lease (a rebuild): resuming after it",
        );
        self.start_after = position;
        self.saved = position;
        self.follow(position);
    }

    /// Publishes `position` as where the handler is, back as well as forward (the checkpoint
    /// the holder of the lease saved: a rebuild moves it back), and wakes the waiters.
    fn follow(&mut self, position: u64) {
        self.unannounced = 0;
        let moved = self.state.progress.send_if_modified(|progress| {
            let moved = progress.position != position;
            progress.position = position;
            moved
        });
        if moved {
            let head = *self.gauges.head.borrow();
            self.gauges.position.set(position as f64);
            self.gauges.lag.set(head.saturating_sub(position) as f64);
        }
    }

    /// Waits for the lease on the handler's name; `None` if the runtime stops first. While
    /// another node holds it, the published position follows the checkpoint that node saves,
    /// back as well as forward. With a shared lease, starts after the checkpoint if another
    /// node moved it further (or back, see [`resume_shared`](Self::resume_shared)).
    async fn acquire<C: Consumer>(&mut self, consumer: &mut C) -> Option<Lease> {
        let mut failures = 0u32;
        loop {
            if self.stopping() {
                return None;
            }
            let delay = match self.store.try_lease(&self.state.name).await {
                // An answer ends the failure that kept the task from asking, or the one that
                // cost it the lease (another node goes on, or this one again).
                Ok(Some(lease)) => {
                    self.recovered();
                    if lease.is_shared() {
                        match self.resume_shared(consumer).await {
                            Ok(()) => {}
                            Err(error) => {
                                drop(lease);
                                failures = failures.saturating_add(1);
                                tracing::warn!(
                                    name: "evoq.handler.checkpoint",
                                    stage = "exception",
                                    handler = &*self.state.name,
                                    error = %error,
                                    "evoq.handler.checkpoint",
                                );
                                if !self.wait_unleased(STORE_RETRY.delay(failures)).await {
                                    return None;
                                }
                                continue;
                            }
                        }
                        self.confirmed_at = Instant::now();
                        tracing::info!(
                            name: "evoq.handler.lease",
                            stage = "acquired",
                            handler = &*self.state.name,
                            position = self.start_after,
                            "evoq.handler.lease",
                        );
                    }
                    return Some(lease);
                }
                Ok(None) => {
                    failures = 0;
                    self.recovered();
                    // Another node runs the handler: follow its checkpoint, so waits on this
                    // node (strong consistency, `wait_for`) see the handler's progress, but
                    // never past the head this node knows: a checkpoint beyond the store's
                    // head (a restored backup) reaches no event yet.
                    if let Ok(Some(saved)) = self.store.load_checkpoint(&self.state.name).await {
                        self.follow(saved.min(*self.store.head().borrow()));
                    }
                    LEASE_POLL
                }
                Err(error) => {
                    let delay = self.back_off(&mut failures, |_| {
                        format!("asking the store for the handler's lease failed ({error})")
                    });
                    tracing::error!(
                        name: "evoq.handler.lease",
                        stage = "exception",
                        handler = &*self.state.name,
                        error = %error,
                        retry_in_ms = delay.as_millis() as u64,
                        "evoq.handler.lease",
                    );
                    delay
                }
            };
            if !self.wait_unleased(delay).await {
                return None;
            }
        }
    }

    /// Delivers while `lease` holds, until the runtime stops, the handler does, or the lease
    /// is lost.
    async fn serve<C: Consumer>(&mut self, consumer: &mut C, lease: &Lease) -> Served {
        if !self.rewind_kept(consumer).await {
            self.finish(consumer, self.start_after, lease).await;
            return Served::Done;
        }
        let shared = lease.is_shared();
        let filter = EventFilter::types(
            self.state
                .event_types
                .iter()
                .copied()
                .chain(self.state.renamed_from.iter().copied()),
        );
        let mut subscription = self.subscribe(&filter, self.start_after);
        let head = self.store.head();
        let mut processed = self.start_after;
        let mut read_failures = 0u32;
        // Whether the page was cut short to deliver again after a failed commit.
        let mut redelivered = false;
        let mut requested = tokio::time::interval(REQUEST_POLL);
        requested.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::debug!(
            name: "evoq.handler.start",
            handler = &*self.state.name,
            position = processed,
            "evoq.handler.start",
        );
        loop {
            if self.stopping() {
                break;
            }
            if lease.is_lost() {
                return Served::LeaseLost(CONNECTION_BROKE.to_owned());
            }
            let next = tokio::select! {
                biased;
                _ = self.shutdown.changed() => Next::Shutdown,
                Some(control) = self.requests.recv() => Next::Control(control),
                () = lease.lost(), if shared => Next::LeaseLost,
                // Before the events, so that a long catch-up does not starve it.
                _ = requested.tick() => Next::Requests,
                events = subscription.next_rows() => Next::Events(events),
            };
            let events = match next {
                Next::Shutdown => break,
                Next::LeaseLost => return Served::LeaseLost(CONNECTION_BROKE.to_owned()),
                Next::Requests => {
                    match self.take_requests(consumer, lease).await {
                        Ok(false) => {}
                        Ok(true) => {
                            // A rebuild: read from the first event again.
                            subscription = self.subscribe(&filter, 0);
                            processed = 0;
                        }
                        Err(reason) => return Served::LeaseLost(reason),
                    }
                    continue;
                }
                Next::Control(control) => {
                    if self.withdrawn(&control) {
                        continue;
                    }
                    if let Err(reason) = self.still_held(lease).await {
                        self.hand_over(control);
                        return Served::LeaseLost(reason);
                    }
                    let Control { action, reply } = control;
                    let result = self.carry_out(consumer, action).await;
                    if result.is_ok() && action == RequestedAction::Rebuild {
                        // Read from the first event again.
                        subscription = self.subscribe(&filter, 0);
                        processed = 0;
                    }
                    let _ = reply.send(result);
                    continue;
                }
                Next::Events(Ok(events)) => {
                    if read_failures > 0 {
                        read_failures = 0;
                        self.recovered();
                    }
                    events
                }
                Next::Events(Err(error)) => {
                    let delay = self.back_off(&mut read_failures, |failures| {
                        format!("reading the events failed {failures} time(s) in a row ({error})")
                    });
                    tracing::error!(
                        name: "evoq.handler.subscription",
                        stage = "exception",
                        handler = &*self.state.name,
                        error = %error,
                        failures = read_failures,
                        retry_in_ms = delay.as_millis() as u64,
                        "evoq.handler.subscription",
                    );
                    if !self.sleep(delay).await {
                        break;
                    }
                    continue;
                }
            };
            // Another node may hold the lease by now (this one's connection broke): deliver
            // nothing the store has not just confirmed.
            if !events.is_empty()
                && let Err(reason) = self.still_held(lease).await
            {
                return Served::LeaseLost(reason);
            }
            for row in events {
                let position = row.global_position();
                if shared {
                    if lease.is_lost() {
                        return Served::LeaseLost(CONNECTION_BROKE.to_owned());
                    }
                    if self.confirmed_at.elapsed() >= LEASE_CONFIRM_EVERY
                        && let Err(reason) = self.still_held(lease).await
                    {
                        return Served::LeaseLost(reason);
                    }
                }
                // The page holds every matching event of the range it scanned: nothing the
                // handler takes lies between the last one and this one.
                if position.saturating_sub(1) > processed {
                    processed = position - 1;
                    self.publish(processed);
                }
                let delivered = match row {
                    StoredRow::Event(record) => {
                        self.deliver(consumer, &EventMeta::new(record), lease).await
                    }
                    StoredRow::Undecodable(row) => {
                        self.deliver_undecodable(consumer, &row, &filter, lease)
                            .await
                    }
                };
                match delivered {
                    Delivered::Next => {}
                    Delivered::Shutdown => {
                        self.finish(consumer, processed, lease).await;
                        return Served::Done;
                    }
                    Delivered::Stop(reason) => {
                        self.publish(processed);
                        self.announce();
                        // Saved before the status says stopped: whoever sees the handler
                        // stopped finds its checkpoint there. (A lost lease saves nothing: the
                        // new holder owns the checkpoint.)
                        if self.saved != processed {
                            let _ = self.save(consumer, processed, lease).await;
                        }
                        self.change_status(|progress| {
                            progress.stopped = Some(Arc::from(reason.as_str()));
                            true
                        });
                        self.finish(consumer, processed, lease).await;
                        return Served::Done;
                    }
                    Delivered::LeaseLost(reason) => return Served::LeaseLost(reason),
                }
                processed = position;
                let saved = if C::CHECKPOINT_EVERY_EVENT {
                    // The read model and the checkpoint advance together, and a waiter on the
                    // position finds both there.
                    let saved = self.save(consumer, processed, lease).await;
                    if matches!(saved, Saved::Done) {
                        self.publish(processed);
                    }
                    saved
                } else {
                    self.publish(processed);
                    let since = processed.saturating_sub(self.saved);
                    if since >= self.checkpoint_every {
                        self.save(consumer, processed, lease).await
                    } else {
                        Saved::Done
                    }
                };
                match saved {
                    Saved::Done | Saved::Failed => {}
                    Saved::LeaseLost(reason) => return Served::LeaseLost(reason),
                    Saved::Stopping => {
                        self.shut_down(self.saved);
                        return Served::Done;
                    }
                    Saved::Redeliver(kept) => {
                        // The rest of the page comes again, after the event whose commit
                        // failed.
                        subscription = self.subscribe(&filter, kept);
                        processed = kept;
                        redelivered = true;
                        break;
                    }
                }
                // Share the thread during a long catch-up of handlers that never wait (and
                // let the waiters know how far it got before it yields).
                let mut budget = pin!(tokio::task::consume_budget());
                if poll_once(budget.as_mut()).await.is_pending() {
                    self.announce();
                    budget.await;
                }
            }
            if std::mem::take(&mut redelivered) {
                continue;
            }
            // Every matching event up to the scanned position has been processed.
            let through = subscription.scanned_through();
            if through > processed {
                processed = through;
                if !C::CHECKPOINT_EVERY_EVENT {
                    self.publish(processed);
                }
            }
            self.announce();
            if self.saved != processed && (processed >= *head.borrow() || C::CHECKPOINT_EVERY_EVENT)
            {
                match self.save(consumer, processed, lease).await {
                    Saved::Done | Saved::Failed => {}
                    Saved::LeaseLost(reason) => return Served::LeaseLost(reason),
                    Saved::Stopping => {
                        self.shut_down(self.saved);
                        return Served::Done;
                    }
                    Saved::Redeliver(kept) => {
                        subscription = self.subscribe(&filter, kept);
                        processed = kept;
                        continue;
                    }
                }
            }
            if C::CHECKPOINT_EVERY_EVENT {
                self.publish(processed);
                self.announce();
            }
        }
        self.finish(consumer, processed, lease).await;
        Served::Done
    }

    /// Carries out the requests kept for the handler in the store (see [`HandlerRequest`]),
    /// oldest first: a dead-letter retry as [`redeliver`](Self::redeliver) does it, a rebuild as
    /// [`rebuild`](Self::rebuild) does; then deletes the request, which tells whoever asked that
    /// it is done, or marks it failed with the reason (see [`HandlerRequest::failed`]), which is
    /// not carried out again. `Ok(true)` when a rebuild was carried out (the caller reads from the first
    /// event again); `Err` when the lease was lost.
    async fn take_requests<C: Consumer>(
        &mut self,
        consumer: &mut C,
        lease: &Lease,
    ) -> Result<bool, String> {
        let name = Arc::clone(&self.state.name);
        self.announce();
        let requests = match self.store.list_requests(&name, REQUEST_BATCH).await {
            Ok(requests) => requests,
            Err(error) => {
                tracing::error!(
                    name: "evoq.handler.request",
                    stage = "exception",
                    handler = &*name,
                    error = %error,
                    "the requests kept for the handler could not be read; trying again",
                );
                return Ok(false);
            }
        };
        let mut rebuilt = false;
        for request in requests {
            if self.stopping() {
                break;
            }
            self.still_held(lease).await?;
            // Looked for again right before it begins: one withdrawn while an earlier request
            // of the batch ran (an operator's `evoq requests withdraw`) is not carried out.
            match self.store.load_request(&name, request.id).await {
                Ok(Some(waiting)) if waiting.failed.is_none() => {}
                Ok(_) => {
                    tracing::info!(
                        name: "evoq.handler.request",
                        stage = "withdrawn",
                        handler = &*name,
                        request = %request.id,
                        action = request.action.as_str(),
                        event_id = ?request.action.event_id(),
                        "a request withdrawn before it began is not carried out",
                    );
                    continue;
                }
                // Read with the next batch.
                Err(_) => break,
            }
            let outcome = self.carry_out(consumer, request.action).await;
            rebuilt |= outcome.is_ok() && request.action == RequestedAction::Rebuild;
            if matches!(outcome, Err(Error::HandlerStopped { .. })) {
                // The runtime stops: the request stays for the next holder.
                break;
            }
            tracing::info!(
                name: "evoq.handler.request",
                stage = "done",
                handler = &*name,
                request = %request.id,
                action = request.action.as_str(),
                event_id = ?request.action.event_id(),
                outcome = %outcome.as_ref().map_or_else(ToString::to_string, |()| "done".to_owned()),
                "evoq.handler.request",
            );
            // Done: removed. Failed: kept with the reason, for whoever asked to read.
            let id = request.id;
            let settled = match outcome {
                Ok(()) => self.store.delete_request(&name, id).await.map(drop),
                Err(error) => {
                    let failed = HandlerRequest {
                        failed: Some(error.to_string().replace('\0', "\\0")),
                        ..request
                    };
                    self.store.save_request(failed).await
                }
            };
            if let Err(error) = settled {
                tracing::error!(
                    name: "evoq.handler.request",
                    stage = "exception",
                    handler = &*name,
                    request = %id,
                    error = %error,
                    "a request was carried out, but its outcome could not be kept; it may run again",
                );
            }
        }
        Ok(rebuilt)
    }

    /// The subscription to the handler's events (`filter`) after `position`.
    fn subscribe(&self, filter: &EventFilter, position: u64) -> Subscription {
        Subscription::new(Arc::clone(&self.store), filter.clone(), position)
            .with_page_size(self.page_size)
    }

    /// Carries out `action` between two events, asked in this runtime or kept in the store: a
    /// dead-letter retry as [`redeliver`](Self::redeliver) does it, a rebuild as
    /// [`rebuild`](Self::rebuild) does (after which the task reads from the first event again).
    async fn carry_out<C: Consumer>(
        &mut self,
        consumer: &mut C,
        action: RequestedAction,
    ) -> Result<(), Error> {
        match action {
            RequestedAction::RetryDeadLetter { event_id } => {
                self.redeliver(consumer, event_id).await
            }
            RequestedAction::Rebuild => self.rebuild(consumer).await,
        }
    }

    /// A consumer that keeps its checkpoint (a read model committing it with its changes)
    /// starts after it, unless told to start elsewhere.
    async fn kept_checkpoint<C: Consumer>(&mut self, consumer: &mut C) {
        if self.options.start_from != StartFrom::Checkpoint {
            return;
        }
        let kept = CatchPanic::new(consumer.checkpoint(&self.state.name))
            .await
            .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_message(&*panic))));
        match kept {
            Ok(Some(kept)) => {
                // As for a checkpoint in the store: one beyond the head (a read model restored
                // from a newer backup than the store, or filled from another store) would skip
                // the events appended from now on up to it; the projection resumes at the head.
                let head = self.head_at_start;
                let position = if kept > head {
                    tracing::warn!(
                        name: "evoq.projection.checkpoint",
                        stage = "reset",
                        projection = &*self.state.name,
                        checkpoint = kept,
                        head,
                        "the read model's checkpoint is beyond the store's head; resuming at the head",
                    );
                    self.kept_beyond = Some(kept);
                    head
                } else {
                    kept
                };
                self.start_after = position;
                self.saved = position;
                self.state.progress.send_modify(|progress| {
                    progress.position = position;
                });
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(
                name: "evoq.projection.checkpoint",
                stage = "exception",
                projection = &*self.state.name,
                error = %error,
                "the read model's checkpoint could not be read; starting from the event store's",
            ),
        }
    }

    /// Moves the checkpoint the consumer keeps back to where the task resumes, when it was
    /// beyond the store's head at the start (see [`kept_checkpoint`](Self::kept_checkpoint)):
    /// a read model would otherwise take the events from there up to it for ones it committed
    /// already, and drop their changes. Done once the task holds the lease, so that where it
    /// resumes is settled (on a shared store, a checkpoint only beyond this node's view of the
    /// head is not one: [`resume_shared`](Self::resume_shared) resumes after it, and nothing
    /// moves back). Tried until it succeeds; `false` if the runtime stops first.
    async fn rewind_kept<C: Consumer>(&mut self, consumer: &mut C) -> bool {
        let Some(kept) = self.kept_beyond else {
            return true;
        };
        let position = self.start_after;
        if kept <= position {
            self.kept_beyond = None;
            return true;
        }
        let name = Arc::clone(&self.state.name);
        let mut failures = 0u32;
        loop {
            let rewound = CatchPanic::new(consumer.rewind(&name, position))
                .await
                .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_message(&*panic))));
            let error = match rewound {
                Ok(()) => {
                    self.kept_beyond = None;
                    if failures > 0 {
                        self.recovered();
                    }
                    tracing::info!(
                        name: "evoq.projection.checkpoint",
                        stage = "rewound",
                        projection = &*name,
                        checkpoint = kept,
                        position,
                        "the read model's checkpoint was moved back to where the projection resumes",
                    );
                    return true;
                }
                Err(error) => error,
            };
            let delay = self.back_off(&mut failures, |_| {
                format!(
                    "moving the read model's checkpoint back from {kept} to {position} failed ({error})"
                )
            });
            tracing::error!(
                name: "evoq.projection.checkpoint",
                stage = "exception",
                projection = &*name,
                checkpoint = kept,
                position,
                error = %error,
                retry_in_ms = delay.as_millis() as u64,
                "the read model's checkpoint beyond the head could not be moved back; no event is delivered until it is",
            );
            if !self.sleep(delay).await {
                return false;
            }
        }
    }

    /// Clears the consumer's state and resets its checkpoint and position to 0; the caller
    /// then reads from the first event again.
    async fn rebuild<C: Consumer>(&mut self, consumer: &mut C) -> Result<(), Error> {
        let name = Arc::clone(&self.state.name);
        let rebuild_error = |reason: String| Error::Rebuild {
            projection: name.to_string(),
            reason,
        };
        let caught =
            |panic: crate::util::panic::Panic| format!("it panicked: {}", panic_message(&*panic));
        CatchPanic::new(consumer.reset())
            .await
            .unwrap_or_else(|panic| Err(caught(panic)))
            .map_err(rebuild_error)?;
        match CatchPanic::new(consumer.commit(&name, 0))
            .await
            .unwrap_or_else(|panic| Err(caught(panic)))
        {
            Ok(true) => {}
            Ok(false) => self
                .store
                .save_checkpoint(&name, 0)
                .await
                .map_err(|error| rebuild_error(error.to_string()))?,
            Err(reason) => return Err(rebuild_error(reason)),
        }
        self.saved = 0;
        self.unannounced = 0;
        self.state
            .progress
            .send_modify(|progress| progress.position = 0);
        tracing::info!(
            name: "evoq.projection.rebuild",
            stage = "start",
            projection = &*name,
            "evoq.projection.rebuild",
        );
        Ok(())
    }

    /// Records a failure outside the handler's code that the task retries after (logged by
    /// the caller): the handler's state says it is retrying, and why.
    fn trouble(&self, reason: String) {
        self.state.counters.count(Count::Fault);
        self.change_status(|progress| {
            progress.trouble = Some(Retrying::Fault.reason(&reason));
            true
        });
    }

    /// One more failure outside the handler's code, in a row of `failures`, which the task
    /// tries again after the store's back-off: counts it, records it with
    /// [`trouble`](Self::trouble) (`failed`, given the failures in a row, says what failed;
    /// the status adds when the next try comes), and returns the delay before that try. The
    /// caller logs the failure with the delay, then waits it.
    fn back_off(&self, failures: &mut u32, failed: impl FnOnce(u32) -> String) -> Duration {
        *failures = failures.saturating_add(1);
        let delay = STORE_RETRY.delay(*failures);
        self.trouble(format!(
            "{}; retrying in {} ms",
            failed(*failures),
            delay.as_millis()
        ));
        delay
    }

    /// Records that the handler's method failed on `event` (attempt `attempt`), which its
    /// retry policy tries again in `delay`: the handler's state says it is retrying that event,
    /// and why, until [`event_settled`](Self::event_settled).
    fn retrying_event(
        &mut self,
        event: &EventMeta,
        failure: &HandlerFailure,
        attempt: u32,
        delay: Duration,
    ) {
        self.failing = true;
        let reason = Retrying::Event.reason(&format!(
            "`{}` at position {} failed on attempt {attempt} of {} ({failure}); the next attempt in {} ms",
            event.event_type(),
            event.global_position(),
            self.options.max_attempts,
            delay.as_millis()
        ));
        self.change_status(|progress| {
            progress.failing = Some(reason);
            true
        });
    }

    /// The event last recorded by [`retrying_event`](Self::retrying_event) was handled or
    /// given up (or is left to another node): the handler's state no longer says it retries
    /// it. Costs nothing when no event was being retried.
    fn event_settled(&mut self) {
        if std::mem::take(&mut self.failing) {
            self.change_status(|progress| progress.failing.take().is_some());
        }
    }

    /// The failure last recorded by [`trouble`](Self::trouble) is over.
    fn recovered(&self) {
        self.change_status(|progress| progress.trouble.take().is_some());
    }

    /// Publishes a change of the handler's status (`change` says whether it changed
    /// anything), and shows the status in its gauge.
    fn change_status(&self, change: impl FnOnce(&mut Progress) -> bool) {
        if self.state.progress.send_if_modified(change) {
            self.gauges.show(&self.state.progress.borrow().doing());
        }
    }

    /// Whether the runtime is stopping (asked to, or dropped).
    fn stopping(&self) -> bool {
        *self.shutdown.borrow() || self.shutdown.has_changed().is_err()
    }

    /// Sleeps `delay` unless the runtime stops first; `false` when it does.
    async fn sleep(&mut self, delay: Duration) -> bool {
        self.announce();
        if delay.is_zero() {
            return !self.stopping();
        }
        tokio::select! {
            _ = self.shutdown.changed() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Records the handler's position, to be published by [`announce`](Self::announce), which
    /// the task calls at the end of every page and before anything that may wait (a handler
    /// that does not complete at once, a yield to the scheduler, a retry delay, a store call,
    /// the wait for new events). Publishing takes the watch's lock and wakes the waiters; this
    /// way a burst of events handled without waiting costs one of each, and no waiter sleeps
    /// while the handler does.
    fn publish(&mut self, position: u64) {
        self.unannounced = self.unannounced.max(position);
    }

    /// Publishes the position recorded since the last call, if it moved, and wakes the waiters.
    /// The rest of an attempt that did not complete at once: waiters learn the position
    /// first; `None` when the runtime stops meanwhile.
    async fn complete<F: Future + Unpin>(&mut self, delivery: F) -> Option<F::Output> {
        self.announce();
        tokio::select! {
            biased;
            result = delivery => Some(result),
            _ = self.shutdown.changed() => None,
        }
    }

    fn announce(&mut self) {
        let position = std::mem::take(&mut self.unannounced);
        if position != 0 {
            let head = *self.gauges.head.borrow();
            self.gauges.position.set(position as f64);
            self.gauges.lag.set(head.saturating_sub(position) as f64);
            self.state.progress.send_if_modified(|progress| {
                let moved = progress.position < position;
                if moved {
                    progress.position = position;
                }
                moved
            });
        }
    }

    /// Saves the checkpoint (with the consumer's state when it keeps it). A shared lease is
    /// confirmed first: when it was lost nothing is saved (the checkpoint belongs to the new
    /// holder), `LeaseLost` says why.
    ///
    /// A failed save of a checkpoint in the store is logged and the next save tries again. A
    /// failed commit of a consumer that keeps its checkpoint (a SQL read model) may or may not
    /// have gone through, and the consumer's changes of the events since its last commit may
    /// be gone: the task reads the consumer's checkpoint again (which ends its refusal of
    /// writes), after the store's back-off ([`back_off`](Self::back_off), counted across
    /// the commits that fail in a row). `Done` when it shows `position` committed; else
    /// `Redeliver` from it, and the task delivers the events after it again. When the runtime
    /// is stopping, the commit is not tried again (`Stopping`): the next start resumes after
    /// the checkpoint the consumer kept.
    async fn save<C: Consumer>(&mut self, consumer: &mut C, position: u64, lease: &Lease) -> Saved {
        if let Err(reason) = self.still_held(lease).await {
            self.roll_back(consumer).await;
            return Saved::LeaseLost(reason);
        }
        self.announce();
        let committed = CatchPanic::new(consumer.commit(&self.state.name, position))
            .await
            .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_message(&*panic))));
        match committed {
            Ok(true) => {
                self.saved = position;
                self.commit_failures = 0;
                self.recovered();
                return Saved::Done;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(
                    name: "evoq.projection.checkpoint",
                    stage = "exception",
                    projection = &*self.state.name,
                    position,
                    error = %error,
                    "evoq.projection.checkpoint",
                );
                if !self.keeps_checkpoint {
                    self.trouble(format!(
                        "committing the read model with checkpoint {position} failed ({error}); the next event or page tries again"
                    ));
                    return Saved::Failed;
                }
                return self.settle_commit(consumer, position, &error).await;
            }
        }
        match self.store.save_checkpoint(&self.state.name, position).await {
            Ok(()) => {
                self.saved = position;
                self.recovered();
            }
            Err(error) => {
                tracing::error!(
                    name: "evoq.handler.checkpoint",
                    stage = "exception",
                    handler = &*self.state.name,
                    position,
                    error = %error,
                    "evoq.handler.checkpoint",
                );
                self.trouble(format!(
                    "saving checkpoint {position} failed ({error}); the next page tries again"
                ));
                return Saved::Failed;
            }
        }
        Saved::Done
    }

    /// After the failed commit (`error`) of the checkpoint `position` of a consumer that keeps
    /// its checkpoint: waits the store's back-off, then reads the consumer's checkpoint again
    /// (again after the back-off, while it cannot be read), which tells whether the commit
    /// went through. See [`save`](Self::save).
    async fn settle_commit<C: Consumer>(
        &mut self,
        consumer: &mut C,
        position: u64,
        error: &str,
    ) -> Saved {
        let name = Arc::clone(&self.state.name);
        let mut failures = self.commit_failures;
        let mut reason = format!(
            "committing the read model with checkpoint {position} failed ({error}); its checkpoint is read again and the events after it are delivered again"
        );
        loop {
            let delay = self.back_off(&mut failures, |failures| {
                format!("{reason} (failure {failures} in a row)")
            });
            self.commit_failures = failures;
            if self.stopping() || !self.sleep(delay).await {
                // The runtime stops: the next start resumes after the kept checkpoint.
                return Saved::Stopping;
            }
            let kept = CatchPanic::new(consumer.checkpoint(&name))
                .await
                .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_message(&*panic))));
            match kept {
                Ok(kept) => {
                    let kept = kept.unwrap_or(0);
                    if kept >= position {
                        // The commit went through; only its answer was lost.
                        self.saved = position;
                        self.commit_failures = 0;
                        self.recovered();
                        return Saved::Done;
                    }
                    tracing::warn!(
                        name: "evoq.projection.checkpoint",
                        stage = "redeliver",
                        projection = &*name,
                        position,
                        checkpoint = kept,
                        "the read model's commit did not go through: the events after its checkpoint are delivered again",
                    );
                    self.saved = kept;
                    return Saved::Redeliver(kept);
                }
                Err(error) => {
                    reason = format!(
                        "reading the read model's checkpoint after a failed commit of checkpoint {position} failed ({error})"
                    );
                }
            }
        }
    }

    /// Drops what the consumer holds of an event given up without a commit (the lease was
    /// lost: the new holder delivers it), so that nothing of it (a SQL read model's open
    /// transaction and its row locks) keeps the new holder waiting. A failure is logged: the
    /// consumer's next event rolls back what is left.
    async fn roll_back<C: Consumer>(&mut self, consumer: &mut C) {
        let rolled_back = CatchPanic::new(consumer.roll_back())
            .await
            .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_message(&*panic))));
        if let Err(error) = rolled_back {
            tracing::error!(
                name: "evoq.projection.read_model",
                stage = "exception",
                projection = &*self.state.name,
                error = %error,
                "the changes of an event given up when the lease was lost could not be rolled back",
            );
        }
    }

    /// The last checkpoint, as the task ends (none when the lease turns out lost); waiters on
    /// the handler learn that it stopped.
    async fn finish<C: Consumer>(&mut self, consumer: &mut C, processed: u64, lease: &Lease) {
        self.publish(processed);
        self.announce();
        if self.saved != processed {
            // A lost lease: the new holder owns the checkpoint, and the next start of this
            // node resumes from it.
            let _ = self.save(consumer, processed, lease).await;
        }
        self.shut_down(processed);
    }

    /// Delivers one event with the handler's retries and error policy. A shared lease is
    /// confirmed before each retry and before a dead letter is saved: once lost, the event is
    /// the new holder's.
    async fn deliver<C: Consumer>(
        &mut self,
        consumer: &mut C,
        event: &EventMeta,
        lease: &Lease,
    ) -> Delivered {
        let mut first_failed_at = None;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let result = if tracing::level_enabled!(tracing::Level::DEBUG) {
                // The `evoq.handler.event` span may be enabled: the full attempt.
                let name = Arc::clone(&self.state.name);
                let mut delivery = pin!(attempt_once(&name, consumer, event, attempt));
                match poll_once(delivery.as_mut()).await {
                    Poll::Ready(result) => result,
                    Poll::Pending => match self.complete(&mut delivery).await {
                        Some(result) => result,
                        None => return Delivered::Shutdown,
                    },
                }
            } else {
                // The span is disabled (`debug_span!` checks this level first): the same
                // attempt without it, in this future's own state.
                match start_attempt(consumer, event) {
                    Err(failure) => Err(failure),
                    Ok(mut delivery) => match poll_once(&mut delivery).await {
                        Poll::Ready(result) => result,
                        // Most handlers complete at once: they never poll the shutdown nor
                        // wake waiters.
                        Poll::Pending => match self.complete(&mut delivery).await {
                            Some(result) => result,
                            None => return Delivered::Shutdown,
                        },
                    },
                }
            };
            let failure = match result {
                Ok(()) => {
                    self.event_settled();
                    self.state.counters.count(Count::Handled);
                    return Delivered::Next;
                }
                Err(failure) => failure,
            };
            let failed = Failed::Handling {
                finished: consumer.has_finished_changes(),
            };
            if let Some(outcome) = self
                .after_failure(
                    event,
                    &failure,
                    attempt,
                    &mut first_failed_at,
                    failed,
                    lease,
                )
                .await
            {
                return outcome;
            }
        }
    }

    /// A stored row that does not decode, delivered as a failure of that event alone: the
    /// handler's policy decides what becomes of it, as for any failed event. Each retry reads
    /// the row again (it may have been repaired meanwhile: then it is delivered as an event);
    /// a dead letter keeps the raw row.
    async fn deliver_undecodable<C: Consumer>(
        &mut self,
        consumer: &mut C,
        row: &UndecodableRow,
        filter: &EventFilter,
        lease: &Lease,
    ) -> Delivered {
        let event = EventMeta::new(Arc::new(row.placeholder()));
        let failure = HandlerFailure::storage(row);
        tracing::error!(
            name: "evoq.handler.undecodable",
            handler = &*self.state.name,
            event_type = event.event_type(),
            position = row.global_position,
            stream_id = %row.stream_id,
            error = %row.error,
            "a stored row does not decode; the handler's error policy decides what becomes of it",
        );
        let mut first_failed_at = None;
        let mut attempt: u32 = 1;
        loop {
            if let Some(outcome) = self
                .after_failure(
                    &event,
                    &failure,
                    attempt,
                    &mut first_failed_at,
                    Failed::Row(row),
                    lease,
                )
                .await
            {
                return outcome;
            }
            attempt = attempt.saturating_add(1);
            self.announce();
            if let Some(record) = self.read_again(row.global_position, filter).await {
                return self.deliver(consumer, &EventMeta::new(record), lease).await;
            }
        }
    }

    /// The event at `position`, read again, when it decodes now.
    async fn read_again(&self, position: u64, filter: &EventFilter) -> Option<Arc<RecordedEvent>> {
        // The runtime's store is guarded: a panic of the backend is an error here.
        match self
            .store
            .read_all(position.saturating_sub(1), 1, filter)
            .await
        {
            Ok(page) => page
                .events
                .into_iter()
                .find(|event| event.global_position == position),
            _ => None,
        }
    }

    /// What follows a failed attempt: `None` once the retry delay has passed (try again), else
    /// what the handler's error policy made of the event.
    ///
    /// An event whose finished changes the consumer holds (a SQL read model's transaction
    /// after `finish`) keeps no dead letter when the policy gives it up: those changes are
    /// committed as the task moves past it, and a retry would apply them a second time.
    async fn after_failure(
        &mut self,
        event: &EventMeta,
        failure: &HandlerFailure,
        attempt: u32,
        first_failed_at: &mut Option<SystemTime>,
        failed: Failed<'_>,
        lease: &Lease,
    ) -> Option<Delivered> {
        let failed_at = SystemTime::now();
        let first_failed_at = *first_failed_at.get_or_insert(failed_at);
        if attempt < self.options.max_attempts {
            let delay = self.options.retry.delay(attempt);
            self.state.counters.count(Count::Retry);
            tracing::info!(
                name: "evoq.handler.retry",
                handler = &*self.state.name,
                event_type = event.event_type(),
                position = event.global_position(),
                event_id = %event.event_id(),
                attempt,
                max_attempts = self.options.max_attempts,
                delay_ms = delay.as_millis() as u64,
                error = %failure,
                "evoq.handler.retry",
            );
            self.retrying_event(event, failure, attempt, delay);
            let outcome = if !self.sleep(delay).await {
                Delivered::Shutdown
            } else if let Err(reason) = self.still_held(lease).await {
                Delivered::LeaseLost(reason)
            } else {
                return None;
            };
            self.event_settled();
            return Some(outcome);
        }
        self.event_settled();
        Some(match self.options.on_error {
            OnError::DeadLetter => {
                if let Err(reason) = self.still_held(lease).await {
                    return Some(Delivered::LeaseLost(reason));
                }
                let raw_row = match failed {
                    Failed::Handling { finished: true } => {
                        self.state.counters.count(Count::DeadLetter);
                        tracing::warn!(
                            name: "evoq.handler.dead_letter",
                            stage = "committed",
                            handler = &*self.state.name,
                            event_type = event.event_type(),
                            position = event.global_position(),
                            event_id = %event.event_id(),
                            attempts = attempt,
                            kind = %failure.kind(),
                            error = %failure,
                            "the method failed after finishing its changes: they are committed, and the event keeps no dead letter (a retry would apply them again)",
                        );
                        return Some(Delivered::Next);
                    }
                    Failed::Handling { finished: false } => None,
                    Failed::Row(row) => Some(row),
                };
                let given_up = GivenUp {
                    failure,
                    attempts: attempt,
                    first_failed_at,
                    last_failed_at: failed_at,
                    raw_row,
                };
                if self.dead_letter(event, given_up).await {
                    Delivered::Next
                } else {
                    Delivered::Shutdown
                }
            }
            OnError::Skip => {
                self.state.counters.count(Count::Skipped);
                tracing::warn!(
                    name: "evoq.handler.skip",
                    handler = &*self.state.name,
                    event_type = event.event_type(),
                    position = event.global_position(),
                    event_id = %event.event_id(),
                    attempts = attempt,
                    kind = %failure.kind(),
                    error = %failure,
                    "evoq.handler.skip",
                );
                Delivered::Next
            }
            OnError::Stop => {
                tracing::error!(
                    name: "evoq.handler.stop",
                    handler = &*self.state.name,
                    event_type = event.event_type(),
                    position = event.global_position(),
                    event_id = %event.event_id(),
                    attempts = attempt,
                    kind = %failure.kind(),
                    error = %failure,
                    "evoq.handler.stop",
                );
                Delivered::Stop(format!(
                    "event `{}` at position {} failed {attempt} time(s): {failure}",
                    event.event_type(),
                    event.global_position()
                ))
            }
        })
    }

    /// Stores the event as a dead letter (merged with an entry left by an earlier run), trying
    /// until the store accepts it: an event is never dropped. `false` if the runtime stopped.
    async fn dead_letter(&mut self, event: &EventMeta, given_up: GivenUp<'_>) -> bool {
        self.announce();
        let mut failures = 0u32;
        // The entry, merged with the one an earlier run left, is built once: a save that
        // stored it but failed to say so must not have its attempts counted again.
        let mut merged = None;
        loop {
            let error = match self.store_dead_letter(event, &given_up, &mut merged).await {
                Ok(entry) => {
                    if failures > 0 {
                        self.recovered();
                    }
                    self.state.counters.count(Count::DeadLetter);
                    tracing::warn!(
                        name: "evoq.handler.dead_letter",
                        handler = &*self.state.name,
                        event_type = event.event_type(),
                        position = event.global_position(),
                        event_id = %event.event_id(),
                        attempts = entry.attempts,
                        kind = %entry.kind,
                        error = %given_up.failure,
                        "evoq.handler.dead_letter",
                    );
                    return true;
                }
                Err(error) => error,
            };
            let delay = self.back_off(&mut failures, |_| {
                format!(
                    "saving the dead letter of the event at position {} failed ({error})",
                    event.global_position()
                )
            });
            tracing::error!(
                name: "evoq.handler.dead_letter",
                stage = "exception",
                handler = &*self.state.name,
                position = event.global_position(),
                error = %error,
                retry_in_ms = delay.as_millis() as u64,
                "evoq.handler.dead_letter",
            );
            if !self.sleep(delay).await {
                return false;
            }
        }
    }

    async fn store_dead_letter(
        &self,
        event: &EventMeta,
        given_up: &GivenUp<'_>,
        merged: &mut Option<DeadLetter>,
    ) -> Result<DeadLetter, StoreError> {
        if let Some(entry) = merged {
            self.store.save_dead_letter(entry.clone()).await?;
            return Ok(entry.clone());
        }
        let name = &*self.state.name;
        let earlier = self.store.load_dead_letter(name, event.event_id()).await?;
        let attempts = given_up.attempts;
        let first_failed_at = given_up.first_failed_at;
        let entry = DeadLetter {
            handler: name.to_owned(),
            event: Arc::clone(event.record()),
            error: given_up.failure.to_string(),
            kind: given_up.failure.kind(),
            reason: format!(
                "{attempts} of {} attempt(s) failed and the handler's policy dead-letters what it cannot handle",
                self.options.max_attempts
            ),
            raw_row: given_up.raw_row.map(|row| row.columns.clone()),
            attempts: earlier
                .as_ref()
                .map_or(attempts, |e| e.attempts.saturating_add(attempts)),
            first_failed_at: earlier
                .as_ref()
                .map_or(first_failed_at, |e| e.first_failed_at.min(first_failed_at)),
            last_failed_at: given_up.last_failed_at,
        };
        *merged = Some(entry.clone());
        self.store.save_dead_letter(entry.clone()).await?;
        Ok(entry)
    }

    /// Delivers a dead letter once more: removed on success, updated on failure.
    async fn redeliver<C: Consumer>(
        &mut self,
        consumer: &mut C,
        event_id: Uuid,
    ) -> Result<(), Error> {
        let name = Arc::clone(&self.state.name);
        let Some(mut entry) = self.store.load_dead_letter(&name, event_id).await? else {
            return Err(Error::DeadLetterNotFound {
                handler: name.to_string(),
                event_id,
            });
        };
        let attempt = entry.attempts.saturating_add(1);
        // A row that could not be read back is read again: delivered once it decodes.
        let repaired = if entry.kind == FailureKind::Storage {
            let position = entry.event.global_position;
            match self.read_again(position, &EventFilter::All).await {
                Some(record) => Some(record),
                None => {
                    entry.attempts = attempt;
                    entry.last_failed_at = SystemTime::now();
                    let error = format!(
                        "the stored row at position {position} still cannot be read: {}",
                        entry.error
                    );
                    self.store.save_dead_letter(entry).await?;
                    return Err(Error::DeadLetterRetryFailed {
                        handler: name.to_string(),
                        event_id,
                        error,
                    });
                }
            }
        } else {
            None
        };
        let event =
            EventMeta::new(repaired.unwrap_or_else(|| Arc::clone(&entry.event))).redelivered();
        let result = tokio::select! {
            biased;
            result = attempt_once(&name, consumer, &event, attempt) => result,
            _ = self.shutdown.changed() => {
                return Err(Error::HandlerStopped {
                    handler: name.to_string(),
                    reason: "the runtime is stopping".into(),
                });
            }
        };
        match result {
            Ok(()) => {
                self.store.delete_dead_letter(&name, event_id).await?;
                self.state.counters.count(Count::Handled);
                tracing::info!(
                    name: "evoq.handler.dead_letter",
                    stage = "redelivered",
                    handler = &*name,
                    event_type = event.event_type(),
                    position = event.global_position(),
                    event_id = %event_id,
                    attempts = attempt,
                    "evoq.handler.dead_letter",
                );
                Ok(())
            }
            Err(failure) => {
                if self
                    .store
                    .load_dead_letter(&name, event_id)
                    .await?
                    .is_none()
                {
                    // The method finished its changes before it failed: they were committed,
                    // and the dead letter with them (a SQL read model). Saved again, a later
                    // retry would apply them a second time.
                    tracing::warn!(
                        name: "evoq.handler.dead_letter",
                        stage = "committed",
                        handler = &*name,
                        event_type = event.event_type(),
                        position = event.global_position(),
                        event_id = %event_id,
                        attempts = attempt,
                        error = %failure,
                        "the method failed after finishing its changes: they are committed, and the dead letter is removed (a retry would apply them again)",
                    );
                    return Err(Error::DeadLetterRetryFailed {
                        handler: name.to_string(),
                        event_id,
                        error: format!(
                            "{failure} (after `finish`: the event's changes are committed and its dead letter is removed)"
                        ),
                    });
                }
                entry.attempts = attempt;
                entry.error = failure.to_string();
                entry.kind = failure.kind();
                entry.last_failed_at = SystemTime::now();
                self.store.save_dead_letter(entry).await?;
                Err(Error::DeadLetterRetryFailed {
                    handler: name.to_string(),
                    event_id,
                    error: failure.to_string(),
                })
            }
        }
    }
}

/// A dead-letter retry asked on a node that does not hold the handler's lease, handed to the
/// node that does through the store: a [`HandlerRequest`] is saved for the holder, which looks
/// for requests every [`REQUEST_POLL`], delivers the event as [`Task::redeliver`] does and
/// removes the request, or marks it failed. Once it is gone or failed, the dead letter tells
/// the outcome: removed (the delivery succeeded) or updated (it failed again); a failed request
/// that left the dead letter as it was says why. The request is withdrawn when the runtime
/// stops or the caller gives up first.
async fn hand_over_retry(
    store: &dyn EventStore,
    handler: &str,
    event_id: Uuid,
    shutdown: &mut watch::Receiver<bool>,
    reply: &mut oneshot::Sender<Result<(), Error>>,
) -> Result<(), Error> {
    let Some(before) = store.load_dead_letter(handler, event_id).await? else {
        return Err(Error::DeadLetterNotFound {
            handler: handler.to_owned(),
            event_id,
        });
    };
    let asked = HandlerRequest::new(handler, RequestedAction::RetryDeadLetter { event_id });
    tracing::info!(
        name: "evoq.handler.dead_letter",
        stage = "handed_over",
        handler,
        event_id = %event_id,
        "another node holds the handler's lease: the retry is handed to it",
    );
    let failed = match carried_out(store, asked, shutdown, reply).await? {
        Settled::Done => None,
        Settled::Failed(reason) => Some(reason),
        Settled::Abandoned => return Ok(()),
    };
    match store.load_dead_letter(handler, event_id).await? {
        None => Ok(()),
        Some(after) => Err(Error::DeadLetterRetryFailed {
            handler: handler.to_owned(),
            event_id,
            error: if (after.attempts, after.last_failed_at)
                != (before.attempts, before.last_failed_at)
            {
                after.error
            } else {
                failed.unwrap_or_else(|| "the node holding the handler's lease took the retry but could not carry it out (see that node's log)".to_owned())
            },
        }),
    }
}

/// A rebuild asked on a node that does not hold the projection's lease, handed to the node that
/// does through the store: a [`HandlerRequest`] that the holder carries out as
/// [`Task::rebuild`] does (it clears the model and moves the checkpoint back to 0) before it
/// removes the request. Once it is gone, the call waits until the shared checkpoint reaches the
/// head of the store as it was when the call was made (the replay got there); a request the
/// holder could not carry out fails with its reason. The request is withdrawn when the runtime
/// stops or the caller gives up first.
async fn hand_over_rebuild(
    store: &dyn EventStore,
    handler: &str,
    shutdown: &mut watch::Receiver<bool>,
    reply: &mut oneshot::Sender<Result<(), Error>>,
) -> Result<(), Error> {
    let head = *store.head().borrow();
    tracing::info!(
        name: "evoq.projection.rebuild",
        stage = "handed_over",
        projection = handler,
        "another node holds the projection's lease: the rebuild is handed to it",
    );
    let asked = HandlerRequest::new(handler, RequestedAction::Rebuild);
    match carried_out(store, asked, shutdown, reply).await? {
        Settled::Done => {}
        Settled::Failed(reason) => {
            return Err(Error::Rebuild {
                projection: handler.to_owned(),
                reason,
            });
        }
        Settled::Abandoned => return Ok(()),
    }
    let mut failures = 0u32;
    loop {
        match store.load_checkpoint(handler).await {
            Ok(Some(position)) if position >= head => return Ok(()),
            Ok(_) => failures = 0,
            Err(_) => failures = failures.saturating_add(1),
        }
        let delay = next_look(failures);
        tokio::select! {
            _ = shutdown.changed() => return Err(stopping(handler, "the rebuild was carried out by the node holding the lease; its replay goes on there")),
            () = reply.closed() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// How long a node that handed a request over waits before it looks again at the store:
/// [`REQUEST_POLL`], or the store's back-off after `failures` looks in a row failed.
fn next_look(failures: u32) -> Duration {
    match failures {
        0 => REQUEST_POLL,
        n => STORE_RETRY.delay(n),
    }
}

/// What became of a request handed to the node holding a handler's lease.
enum Settled {
    /// Carried out (the holder removed it).
    Done,
    /// The holder could not carry it out: why (the request was read, and removed).
    Failed(String),
    /// Nobody waits for the outcome any more: withdrawn, if it had not run yet.
    Abandoned,
}

/// Saves `asked` for the node holding the handler's lease, which looks for requests every
/// [`REQUEST_POLL`], and waits until that node carried it out or marked it failed. Withdrawn
/// when the caller gives up (`reply` closed) or the runtime stops (then `HandlerStopped`).
async fn carried_out(
    store: &dyn EventStore,
    asked: HandlerRequest,
    shutdown: &mut watch::Receiver<bool>,
    reply: &mut oneshot::Sender<Result<(), Error>>,
) -> Result<Settled, Error> {
    let handler = asked.handler.clone();
    let handler = &*handler;
    let (request, action) = (asked.id, asked.action.as_str());
    store.save_request(asked).await?;
    let mut failures = 0u32;
    loop {
        let delay = next_look(failures);
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = store.delete_request(handler, request).await;
                return Err(stopping(handler, &format!("the request (`{action}`) handed to the node holding the lease was withdrawn if it had not run yet")));
            }
            () = reply.closed() => {
                let _ = store.delete_request(handler, request).await;
                return Ok(Settled::Abandoned);
            }
            () = tokio::time::sleep(delay) => {}
        }
        match store.load_request(handler, request).await {
            Ok(Some(HandlerRequest {
                failed: Some(reason),
                ..
            })) => {
                // Read: the failed request has told what it had to.
                let _ = store.delete_request(handler, request).await;
                return Ok(Settled::Failed(reason));
            }
            Ok(Some(_)) => failures = 0,
            Ok(None) => return Ok(Settled::Done),
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(
                    name: "evoq.handler.request",
                    stage = "exception",
                    handler,
                    request = %request,
                    action,
                    error = %error,
                    "could not read whether the handed-over request was carried out; asking again",
                );
            }
        }
    }
}

/// `HandlerStopped` for a handed-over request given up because the runtime is stopping.
fn stopping(handler: &str, what: &str) -> Error {
    Error::HandlerStopped {
        handler: handler.to_owned(),
        reason: format!("the runtime is stopping; {what}"),
    }
}

/// Polls `future` once: its output, or `Pending` (the task's waker is registered).
fn poll_once<F: Future + Unpin>(mut future: F) -> impl Future<Output = Poll<F::Output>> {
    poll_fn(move |cx| Poll::Ready(Pin::new(&mut future).poll(cx)))
}

/// Calls the handler (not polled yet), a panic turned into a failure.
fn start_attempt<'a, C: Consumer>(
    consumer: &'a mut C,
    event: &'a EventMeta,
) -> Result<Attempt<'a>, HandlerFailure> {
    let consumer = AssertUnwindSafe(consumer);
    let event = AssertUnwindSafe(event);
    match catch_unwind(move || {
        // The whole wrappers move in (a closure would capture only their fields).
        let (AssertUnwindSafe(consumer), AssertUnwindSafe(event)) = (consumer, event);
        consumer.consume(event)
    }) {
        Ok(future) => Ok(Attempt(CatchPanic::new(future))),
        Err(panic) => Err(HandlerFailure::panicked(panic_message(&*panic))),
    }
}

/// One call of the handler, in the `evoq.handler.event` span, a panic turned into a failure.
async fn attempt_once<C: Consumer>(
    handler: &str,
    consumer: &mut C,
    event: &EventMeta,
    attempt: u32,
) -> Result<(), HandlerFailure> {
    let span = tracing::debug_span!(
        "evoq.handler.event",
        handler,
        event_type = event.event_type(),
        position = event.global_position(),
        event_id = %event.event_id(),
        attempt,
    );
    let future = start_attempt(consumer, event)?;
    if span.is_disabled() {
        return future.await;
    }
    // The trace of the dispatch that stored the event goes on here.
    if let Some(context) = event.metadata().user.get(TRACEPARENT) {
        continue_trace(&span, context);
    }
    let started = Instant::now();
    span.in_scope(
        || tracing::debug!(name: "evoq.handler.event", stage = "start", "evoq.handler.event"),
    );
    let result = future.instrument(span.clone()).await;
    let duration_us = started.elapsed().as_micros() as u64;
    span.in_scope(|| match &result {
        Ok(()) => tracing::debug!(name: "evoq.handler.event", stage = "stop", duration_us, "evoq.handler.event"),
        Err(failure) => tracing::debug!(
            name: "evoq.handler.event",
            stage = "exception",
            error = %failure,
            duration_us,
            "evoq.handler.event",
        ),
    });
    result
}

/// A delivery under way: the handler's future, whose panic becomes a [`HandlerFailure`].
struct Attempt<'a>(CatchPanic<HandlerFuture<'a>>);

impl Future for Attempt<'_> {
    type Output = Result<(), HandlerFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|outcome| {
            outcome.unwrap_or_else(|panic| Err(HandlerFailure::panicked(panic_message(&*panic))))
        })
    }
}
