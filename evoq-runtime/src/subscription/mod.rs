//! The subscription engine: the one place where delivery to event handlers, checkpoints,
//! retries and dead letters live (process managers and projections run on it too).
//!
//! # Delivery
//!
//! Each handler runs in a tokio task of its own, so a slow or failing handler delays no other.
//! The task reads the global order through a [`Subscription`](crate::store::Subscription)
//! filtered by the handler's event types: first the stored events (catch-up), then new ones as
//! they are committed (live), with no gap and no duplicate between the two. Events reach the
//! handler one at a time, in global order, across every stream; the next event waits until the
//! previous one is handled, dead-lettered or skipped.
//!
//! # Position and checkpoint
//!
//! A handler's *position* is the global position it has processed through: every event of its
//! types at or below it was handled (or dead-lettered or skipped), and it moves past events of
//! other types as the subscription scans them. It is published in a `tokio::sync::watch`
//! (level-triggered: waiters look at its value, they never match acknowledgements), which is
//! what [`Evoq::wait_for`](crate::Evoq::wait_for) and strong consistency wait on. The value is
//! updated after every event; waiters are woken before anything that makes the task wait (a
//! handler that does not complete at once, a retry delay, a store call, the wait for new
//! events), so a burst of events handled without waiting costs one wake-up and no waiter
//! sleeps while its event is done.
//!
//! The *checkpoint* is the position saved in the store, from which a restarted runtime resumes
//! (by default; see [`StartFrom`]). It is saved in batches: at least every
//! [`HandlerConfig::checkpoint_every`] events (default 100) while the handler is busy, whenever
//! it has caught up with the store's head, and when the runtime stops or is dropped. It is
//! never ahead of the position, so nothing is skipped after a restart; after a crash the events
//! processed since the last save (fewer than `checkpoint_every`, or none when the handler was
//! idle) are delivered again. Delivery is at least once: make effects idempotent with
//! [`EventMeta::event_id`](crate::handler::EventMeta::event_id).
//!
//! # Errors
//!
//! A failed delivery (the handler's error, an event that does not decode, a panic) is retried
//! with the handler's [`RetryStrategy`] up to its number of attempts (default: 6 in all,
//! exponential with jitter from 100 ms); then its [`OnError`] policy applies: dead-letter
//! (default: the event goes to the store's dead letters and the handler moves on), skip (moves
//! on, no dead letter), or stop (the handler stops before the event).

mod api;
mod consistency;
mod delivery;
mod policy;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use self::api::{DeadLetterQueue, HandlerStats};
pub use self::consistency::Consistency;
pub use self::policy::{HandlerConfig, HandlerOptions, OnError, RetryStrategy, StartFrom};

pub(crate) use self::consistency::settle;
use self::delivery::{Consumer, Task};
use crate::error::Error;
use crate::handler::EventHandler;
use crate::projection::{Projected, Projection};
use crate::store::EventStore;

/// A handler given to the builder, not started yet.
pub(crate) struct Registration {
    default_name: &'static str,
    event_types: &'static [&'static str],
    /// The wire names its event types were renamed from (upcasters), read too.
    renamed_from: Vec<&'static str>,
    attribute: HandlerOptions,
    options: HandlerOptions,
    spawn: Box<dyn FnOnce(Task) -> JoinHandle<()> + Send>,
}

impl Registration {
    /// An event handler, with the builder's `options`.
    pub(crate) fn new<H: EventHandler>(handler: H, options: HandlerOptions) -> Self {
        Registration::consumer(H::NAME, H::EVENT_TYPES, H::OPTIONS, options, handler).renamed::<H>()
    }

    /// A projection, with the builder's `options`.
    pub(crate) fn projection<P: Projection>(projection: P, options: HandlerOptions) -> Self {
        Registration::consumer(
            P::NAME,
            P::EVENT_TYPES,
            P::OPTIONS,
            options,
            Projected(projection),
        )
        .renamed::<P>()
    }

    /// Reads the events stored under the names `H`'s event types were renamed from.
    fn renamed<H: EventHandler>(mut self) -> Self {
        self.renamed_from = H::UPCASTERS
            .iter()
            .flat_map(|upcasters| crate::upcast::renamed_from(upcasters))
            .collect();
        self
    }

    /// Any consumer of events (an event handler; a process manager or a projection later):
    /// its name and event types, the options of its attribute and of the builder.
    pub(crate) fn consumer<C: Consumer>(
        default_name: &'static str,
        event_types: &'static [&'static str],
        attribute: HandlerOptions,
        options: HandlerOptions,
        consumer: C,
    ) -> Self {
        Registration {
            default_name,
            event_types,
            renamed_from: Vec::new(),
            attribute,
            options,
            spawn: Box::new(move |task: Task| tokio::spawn(task.run(consumer))),
        }
    }
}

/// What one handler's task publishes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// The position processed through.
    pub(crate) position: u64,
    /// Why the handler stopped, once it has (`OnError::Stop`).
    pub(crate) stopped: Option<Arc<str>>,
}

/// A request to a handler's task.
pub(crate) enum Control {
    /// Deliver this dead letter again, once.
    Redeliver {
        event_id: Uuid,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Clear the projection's read model, reset its checkpoint and replay from the start.
    Rebuild {
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) handled: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) skipped: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the runtime and a handler's task share.
pub(crate) struct HandlerState {
    pub(crate) name: Arc<str>,
    pub(crate) event_types: &'static [&'static str],
    pub(crate) renamed_from: Vec<&'static str>,
    pub(crate) strong: bool,
    pub(crate) progress: watch::Sender<Progress>,
    pub(crate) control: mpsc::Sender<Control>,
    pub(crate) counters: Counters,
}

impl HandlerState {
    /// Whether the handler takes any of `event_types`.
    pub(crate) fn takes_any(&self, event_types: &[&str]) -> bool {
        self.event_types.iter().any(|t| event_types.contains(t))
    }
}

/// The running handlers of one runtime.
pub(crate) struct Registry {
    handlers: Vec<Arc<HandlerState>>,
    store: Arc<dyn EventStore>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("handlers", &self.names())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Resolves every handler's options, checks them, loads the checkpoints and starts one
    /// task per handler.
    pub(crate) async fn start(
        registrations: Vec<Registration>,
        store: Arc<dyn EventStore>,
        defaults: &HandlerConfig,
    ) -> Result<Registry, Error> {
        let mut resolved = Vec::with_capacity(registrations.len());
        for registration in &registrations {
            let options = registration.options.resolve(
                &registration.attribute,
                registration.default_name,
                defaults,
            );
            options.check().map_err(|reason| Error::Config {
                key: "handler".to_owned(),
                reason,
            })?;
            if let Some(twin) = resolved
                .iter()
                .find(|other: &&policy::Resolved| other.name == options.name)
            {
                return Err(Error::Config {
                    key: "handler".to_owned(),
                    reason: format!(
                        "two event handlers are named `{}`: a name keys a handler's checkpoint and dead letters, so it must be unique; rename one with `HandlerOptions::new().name(\"...\")` or in its `#[event_handler(name = \"...\")]`",
                        twin.name
                    ),
                });
            }
            resolved.push(options);
        }

        let (shutdown, _) = watch::channel(false);
        let mut handlers = Vec::with_capacity(registrations.len());
        let mut tasks = Vec::with_capacity(registrations.len());
        for (registration, options) in registrations.into_iter().zip(resolved) {
            let saved = store.load_checkpoint(&options.name).await?;
            let start_after = match options.start_from {
                StartFrom::Checkpoint => saved.unwrap_or(0),
                StartFrom::Origin => 0,
                StartFrom::Current => *store.head().borrow(),
            };
            let (progress, _) = watch::channel(Progress {
                position: start_after,
                stopped: None,
            });
            let (control, requests) = mpsc::channel(16);
            let state = Arc::new(HandlerState {
                name: Arc::clone(&options.name),
                event_types: registration.event_types,
                renamed_from: registration.renamed_from,
                strong: options.strong,
                progress,
                control,
                counters: Counters::default(),
            });
            let task = Task::new(
                Arc::clone(&state),
                Arc::clone(&store),
                options,
                defaults,
                start_after,
                requests,
                shutdown.subscribe(),
            );
            tasks.push((registration.spawn)(task));
            handlers.push(state);
        }
        Ok(Registry {
            handlers,
            store,
            shutdown,
            tasks: Mutex::new(tasks),
        })
    }

    /// The handler named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<HandlerState>> {
        self.handlers.iter().find(|h| &*h.name == name)
    }

    /// Every handler, in registration order.
    pub(crate) fn all(&self) -> &[Arc<HandlerState>] {
        &self.handlers
    }

    pub(crate) fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Stops every handler task and waits for them: each saves its checkpoint. An event being
    /// handled is abandoned (its future dropped) and delivered again after a restart.
    pub(crate) async fn stop(&self) {
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().await);
        for task in tasks {
            if let Err(error) = task.await
                && error.is_panic()
            {
                tracing::error!(name: "evoq.handler.shutdown", error = %error);
            }
        }
    }
}
