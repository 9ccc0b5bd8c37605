//! The [`Aggregate`] trait that `#[aggregate]` implements.

use std::time::Duration;

use crate::event::EventSet;
use crate::lifespan::{DefaultLifespan, Lifespan};

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
