//! The [`Aggregate`] trait that `#[aggregate]` implements.

use crate::event::EventSet;

/// A consistency boundary: state rebuilt from its own stream of events, changed only by
/// commands routed to it (see [`Route`](crate::Route)).
///
/// Implemented by `#[aggregate]` on the `impl` block of the state type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an evoq aggregate",
    label = "not an `Aggregate`",
    note = "put `#[aggregate]` on an `impl {Self} {{ ... }}` block with `#[handles]` and `#[apply]` methods"
)]
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate type's name: the prefix of its stream ids (`"<NAME>-<id>"`).
    const NAME: &'static str;

    /// Save a snapshot every this many events (`#[aggregate(snapshot_every = N)]`).
    const SNAPSHOT_EVERY: u64;

    /// The enum of every event this aggregate applies.
    type Event: EventSet;

    /// Evolves the state by one event (dispatches to the `#[apply]` methods).
    fn apply(&mut self, event: &Self::Event);
}
