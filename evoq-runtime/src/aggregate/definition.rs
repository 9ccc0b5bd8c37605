//! What an aggregate is: the [`Aggregate`] trait that `#[aggregate]` implements, and the
//! [`Lifespan`] that decides how long its live instances stay in memory (the two name each
//! other, so they live together; the lifecycle rules are in [`lifespan`](super::lifespan)).

use std::any::Any;
use std::time::Duration;

use crate::error::Error;
use crate::event::EventSet;

/// A consistency boundary: state rebuilt from its own stream of events, changed only by
/// commands routed to it (see [`Route`](crate::Route)).
///
/// Implemented by `#[aggregate]` on the `impl` block of the state type. The lifecycle items
/// have defaults: `None` means "the app's `aggregate_defaults`" (see [`Config`](crate::Config)).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an evoq aggregate",
    label = "not an `Aggregate`",
    note = "put `#[aggregate]` on an `impl {Self} {{ ... }}` block with `#[handles]` and `#[apply]` methods"
)]
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate type's name: the prefix of its stream ids (`"<NAME>-<id>"`).
    const NAME: &'static str;

    /// Save a snapshot every this many events (`#[aggregate(snapshot_every = N)]`).
    const SNAPSHOT_EVERY: Option<u64> = None;

    /// Idle time after which an instance times out (`#[aggregate(idle_timeout = "30m")]`).
    const IDLE_TIMEOUT: Option<Duration> = None;

    /// Idle time after which an instance hibernates (`#[aggregate(hibernate_after = "1m")]`):
    /// `Some(None)` for never (`hibernate_after = "never"`).
    const HIBERNATE_AFTER: Option<Option<Duration>> = None;

    /// The enum of every event this aggregate applies.
    type Event: EventSet;

    /// Evolves the state by one event (dispatches to the `#[apply]` methods).
    fn apply(&mut self, event: &Self::Event);

    /// The lifespan of this aggregate's instances (`#[aggregate(lifespan = MyLifespan)]`).
    fn lifespan() -> Box<dyn Lifespan<Self>> {
        Box::new(DefaultLifespan)
    }

    /// The state serialized for snapshots and hibernation; `None` when the state type is not
    /// serializable (`#[aggregate]` implements this with serde when the state derives
    /// `Serialize` and `Deserialize`).
    fn encode_state(&self) -> Option<Result<Vec<u8>, serde_json::Error>> {
        None
    }

    /// The state decoded from [`encode_state`](Aggregate::encode_state)'s output; `None` when
    /// the state type is not serializable.
    fn decode_state(data: &[u8]) -> Option<Result<Self, serde_json::Error>> {
        let _ = data;
        None
    }
}

/// The next idle timeout of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// The configured idle timeout of the aggregate type.
    Configured,
    /// This long.
    After(Duration),
    /// Never time out.
    Infinity,
    /// Hibernate now: keep only the serialized state, drop the live instance.
    Hibernate,
}

/// What a timed-out instance does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTimeout {
    /// Save a snapshot (when the state serializes), then leave memory.
    Passivate,
    /// Leave memory without a snapshot.
    Stop,
    /// Keep only the serialized state in the registry; the next command thaws it without a
    /// store read. `snapshot` also saves it as a snapshot.
    Hibernate {
        /// Also save a snapshot.
        snapshot: bool,
    },
    /// Stay in memory for another idle timeout. `snapshot` saves a snapshot first.
    Keep {
        /// Save a snapshot first.
        snapshot: bool,
    },
}

/// The idle timeout after an error, by default.
pub const DEFAULT_AFTER_ERROR: Duration = Duration::from_secs(5 * 60);

/// Decides the idle timeouts of the instances of aggregate `A`.
///
/// Name your own with `#[aggregate(lifespan = MyLifespan)]` (a type with `Default`); every
/// method has the default of the module docs.
pub trait Lifespan<A: Aggregate>: Send + Sync + 'static {
    /// After a command that produced `event` (called for each event; the last one decides).
    fn after_event(&self, event: &A::Event) -> Idle {
        let _ = event;
        Idle::Configured
    }

    /// After a command that produced no events (`command` downcasts to the command type).
    fn after_command(&self, command: &dyn Any) -> Idle {
        let _ = command;
        Idle::Configured
    }

    /// After a command that failed.
    fn after_error(&self, error: &Error) -> Idle {
        let _ = error;
        Idle::After(DEFAULT_AFTER_ERROR)
    }

    /// When the idle timeout passed.
    fn on_timeout(&self, state: &A) -> OnTimeout {
        let _ = state;
        OnTimeout::Passivate
    }
}

/// The default lifespan (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultLifespan;

impl<A: Aggregate> Lifespan<A> for DefaultLifespan {}
