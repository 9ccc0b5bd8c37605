//! How long an idle aggregate instance stays in memory, and what happens when it times out.
//!
//! After every command the actor asks the aggregate's [`Lifespan`] for the next idle timeout:
//! [`after_event`](Lifespan::after_event) for each event the command produced (the last one
//! decides), [`after_command`](Lifespan::after_command) when it produced none, and
//! [`after_error`](Lifespan::after_error) when it failed. When the timeout passes with no new
//! command, [`on_timeout`](Lifespan::on_timeout) chooses what to do. Every duration is scaled
//! by the memory monitor's factor (1.0, 0.5 or 0.1) when the timer is set.
//!
//! The defaults: the configured idle timeout (30 minutes unless `#[aggregate(idle_timeout =
//! "...")]` or the app configuration say otherwise) after success, 5 minutes after an error, and
//! snapshot-then-passivate on timeout.

use std::any::Any;
use std::time::Duration;

use crate::aggregate::Aggregate;
use crate::error::Error;

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
