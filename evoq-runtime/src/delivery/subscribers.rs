//! The running consumers of one runtime: each one's task, its published progress and its
//! control channel; the names consistency waits and the dead-letter queue look up.

use std::any::TypeId;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use super::consistency::Consistency;
use super::consumer::{BindFuture, Consumer};
use super::policy::{self, HandlerConfig, HandlerOptions, StartFrom};
use super::state::{DeliveryCounters, HandlerState, Progress};
use super::task::{StartAt, Task};
use crate::error::Error;
use crate::event::upcast::{Upcaster, renamed_from};
use crate::store::EventStore;

/// A consumer given to the builder, not started yet.
pub(crate) struct Registration {
    default_name: &'static str,
    event_types: &'static [&'static str],
    /// The renames of its event types (upcasters): (the old wire name, read too; the wire
    /// name of the type it is read as).
    renames: Vec<(&'static str, &'static str)>,
    attribute: HandlerOptions,
    options: HandlerOptions,
    /// The handler's type, for a wait by type.
    handler_type: Option<TypeId>,
    /// The consumer keeps its checkpoint itself (with its read model): the event store's is
    /// not used, not even as the position a wait sees before the task started.
    keeps_checkpoint: bool,
    consumer: Box<dyn Waiting>,
}

/// A registered consumer before its task runs: bound to its name at start, then moved into its
/// task.
trait Waiting: Send {
    /// [`Consumer::bind`].
    fn bind<'a>(&'a mut self, name: &'a str) -> BindFuture<'a>;

    /// Runs the consumer in `task`.
    fn spawn(self: Box<Self>, task: Task) -> JoinHandle<()>;
}

/// A consumer of type `C`, waiting for its task.
struct Unstarted<C>(C);

impl<C: Consumer> Waiting for Unstarted<C> {
    fn bind<'a>(&'a mut self, name: &'a str) -> BindFuture<'a> {
        self.0.bind(name)
    }

    fn spawn(self: Box<Self>, task: Task) -> JoinHandle<()> {
        tokio::spawn(task.run(self.0))
    }
}

impl Registration {
    /// Any consumer of events: its default name, its event types and their upcasters (the
    /// names the types were renamed from are read too), and the options of its attribute and of
    /// the builder.
    pub(crate) fn new<C: Consumer>(
        default_name: &'static str,
        event_types: &'static [&'static str],
        upcasters: &'static [&'static [Upcaster]],
        attribute: HandlerOptions,
        options: HandlerOptions,
        consumer: C,
    ) -> Self {
        Registration {
            default_name,
            event_types,
            renames: event_types
                .iter()
                .zip(upcasters)
                .flat_map(|(&current, steps)| renamed_from(steps).map(move |old| (old, current)))
                .collect(),
            attribute,
            options,
            handler_type: None,
            keeps_checkpoint: false,
            consumer: Box::new(Unstarted(consumer)),
        }
    }

    /// This registration is of the handler type `H` (a wait can name it by type).
    pub(crate) fn of_type<H: 'static>(mut self) -> Self {
        self.handler_type = Some(TypeId::of::<H>());
        self
    }

    /// The consumer keeps its checkpoint itself (see [`Consumer::checkpoint`]).
    pub(crate) fn keeping_checkpoint(mut self, keeps: bool) -> Self {
        self.keeps_checkpoint = keeps;
        self
    }
}

/// Refuses consumers under which the stored events of one name would reach two event types:
/// an upcaster renamed them to one type, and a consumer takes a type that still has their
/// name, or another upcaster renamed them to a third type. A rename is a fact about the stored
/// events, so it holds across consumers: each stored name is read as one type.
fn check_renames(
    registrations: &[Registration],
    resolved: &[policy::Resolved],
) -> Result<(), Error> {
    /// The consumers reading the events stored under a name as the type named `current`.
    struct Reading<'r> {
        stored_as: &'static str,
        current: &'static str,
        readers: Vec<&'r str>,
    }
    let mut readings: Vec<Reading<'_>> = Vec::new();
    for (registration, options) in registrations.iter().zip(resolved) {
        let plain = registration.event_types.iter().map(|&name| (name, name));
        for (stored_as, current) in plain.chain(registration.renames.iter().copied()) {
            let reader = &*options.name;
            match readings
                .iter_mut()
                .find(|reading| reading.stored_as == stored_as && reading.current == current)
            {
                Some(reading) if reading.readers.contains(&reader) => {}
                Some(reading) => reading.readers.push(reader),
                None => readings.push(Reading {
                    stored_as,
                    current,
                    readers: vec![reader],
                }),
            }
        }
    }
    let names = |readers: &[&str]| readers.iter().map(|&name| name.to_owned()).collect();
    for renamed in readings
        .iter()
        .filter(|reading| reading.stored_as != reading.current)
    {
        let reads_stored = |other: &&Reading<'_>| other.stored_as == renamed.stored_as;
        // The type that still has the stored name first, then a second rename of it.
        let other = readings
            .iter()
            .filter(reads_stored)
            .find(|other| other.current == renamed.stored_as)
            .or_else(|| {
                readings
                    .iter()
                    .filter(reads_stored)
                    .find(|other| other.current != renamed.current)
            });
        if let Some(other) = other {
            return Err(Error::RenameConflict {
                stored_as: renamed.stored_as.to_owned(),
                renamed_to: renamed.current.to_owned(),
                readers: names(&renamed.readers),
                other_type: other.current.to_owned(),
                other_readers: names(&other.readers),
            });
        }
    }
    Ok(())
}

/// The running handlers of one runtime.
pub(crate) struct Subscribers {
    handlers: Vec<Arc<HandlerState>>,
    store: Arc<dyn EventStore>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Subscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribers")
            .field("handlers", &self.names())
            .finish_non_exhaustive()
    }
}

impl Subscribers {
    /// Resolves every handler's options, checks them, loads the checkpoints and starts one
    /// task per handler.
    pub(crate) async fn start(
        mut registrations: Vec<Registration>,
        store: Arc<dyn EventStore>,
        defaults: &HandlerConfig,
    ) -> Result<Subscribers, Error> {
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
        check_renames(&registrations, &resolved)?;
        // Each consumer learns the name it runs under before anything is delivered: a
        // projection whose read model belongs to another name is refused here.
        for (registration, options) in registrations.iter_mut().zip(&resolved) {
            registration.consumer.bind(&options.name).await?;
        }

        // Every start position is known before any task runs: a start that fails (a checkpoint
        // that cannot be read) has delivered nothing, so no saga has dispatched a command, and
        // a consumer that starts from the current head does not count another's commands in it.
        let mut starts = Vec::with_capacity(resolved.len());
        let head_at_start = *store.head().borrow();
        for (registration, options) in registrations.iter().zip(&resolved) {
            // A consumer that keeps its checkpoint reads it in its task; until then it is at
            // the start, so that no wait counts a position its read model may not hold.
            let saved = if registration.keeps_checkpoint {
                None
            } else {
                store.load_checkpoint(&options.name).await?
            };
            let head = *store.head().borrow();
            starts.push(match options.start_from {
                // A checkpoint beyond the head (the store was restored from an older backup, or
                // is another store) would skip the events appended from now on up to it,
                // silently: the consumer resumes at the head instead, with a warning.
                StartFrom::Checkpoint => match saved {
                    Some(saved) if saved > head => {
                        tracing::warn!(
                            name: "evoq.handler.checkpoint",
                            stage = "reset",
                            handler = &*options.name,
                            checkpoint = saved,
                            head,
                            "the saved checkpoint is beyond the store's head; resuming at the head",
                        );
                        head
                    }
                    saved => saved.unwrap_or(0),
                },
                StartFrom::Origin => 0,
                StartFrom::Current => head,
            });
        }

        let (shutdown, _) = watch::channel(false);
        let mut handlers = Vec::with_capacity(registrations.len());
        let mut tasks = Vec::with_capacity(registrations.len());
        for ((registration, options), start_after) in
            registrations.into_iter().zip(resolved).zip(starts)
        {
            let (progress, _) = watch::channel(Progress {
                position: start_after,
                ..Progress::default()
            });
            let (control, requests) = mpsc::channel(16);
            let state = Arc::new(HandlerState {
                name: Arc::clone(&options.name),
                event_types: registration.event_types,
                renamed_from: registration.renames.iter().map(|&(old, _)| old).collect(),
                handler_type: registration.handler_type,
                strong: options.strong,
                progress,
                control,
                counters: DeliveryCounters::new(&options.name),
            });
            let task = Task::new(
                Arc::clone(&state),
                Arc::clone(&store),
                options,
                defaults,
                StartAt {
                    after: start_after,
                    head: head_at_start,
                    kept: registration.keeps_checkpoint,
                },
                requests,
                shutdown.subscribe(),
            );
            tasks.push(registration.consumer.spawn(task));
            handlers.push(state);
        }
        Ok(Subscribers {
            handlers,
            store,
            shutdown,
            tasks: Mutex::new(tasks),
        })
    }

    /// The consumer named `name`, or the error that lists those that run.
    pub(crate) fn named(&self, name: &str) -> Result<&Arc<HandlerState>, Error> {
        self.get(name).ok_or_else(|| Error::UnknownHandler {
            handler: name.to_owned(),
            known: self.names(),
        })
    }

    /// The handlers registered as the type `id`, in registration order.
    pub(crate) fn of_type(&self, id: TypeId) -> Vec<&Arc<HandlerState>> {
        self.handlers
            .iter()
            .filter(|handler| handler.handler_type == Some(id))
            .collect()
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
                tracing::error!(name: "evoq.handler.shutdown", error = %error, "evoq.handler.shutdown");
            }
        }
    }
}

impl Subscribers {
    /// The handlers `consistency` requires; an unknown name is an error.
    pub(crate) fn required(
        &self,
        consistency: &Consistency,
    ) -> Result<Vec<Arc<HandlerState>>, Error> {
        match consistency {
            Consistency::Eventual => Ok(Vec::new()),
            Consistency::Strong => Ok(self
                .all()
                .iter()
                .filter(|handler| handler.strong)
                .cloned()
                .collect()),
            Consistency::Handlers(names) => {
                names.iter().map(|name| self.named(name).cloned()).collect()
            }
        }
    }

    /// The names of the handlers, for messages.
    pub(crate) fn names(&self) -> String {
        let names: Vec<String> = self
            .all()
            .iter()
            .map(|handler| format!("`{}`", handler.name))
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}
