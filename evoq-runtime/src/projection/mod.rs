//! Projections and read models.
//!
//! A projection is an event handler whose `#[handles]` methods update a [`ReadModel`]. It runs
//! on the subscription engine like any handler (one task, global order, retries, dead letters,
//! [`Evoq::wait_for`](crate::Evoq::wait_for)), with three differences:
//!
//! - its checkpoint is saved after every event, right after the read model was updated, so
//!   the read model and the checkpoint advance together. A read model that can commit its
//!   changes and the checkpoint in one transaction does so through [`ReadModel::commit`]; the
//!   in-memory one cannot, so a crash between the update and the checkpoint delivers that one
//!   event again: write projections that tolerate a replayed event (a `put` of the new value
//!   is, an increment is not unless it checks [`EventMeta::event_id`](crate::EventMeta)). The
//!   SQL read models (modules `sqlite` and `postgres`, with the features of the same names)
//!   commit their tables and the checkpoint in one transaction of the store's database, so each
//!   event changes them exactly once;
//! - [`Evoq::rebuild`](crate::Evoq::rebuild) clears the read model, resets the checkpoint and
//!   replays every event of its types from the first one, with no cap, then continues live;
//! - telemetry: `evoq.projection.event` (start / stop, DEBUG), `evoq.projection.exception`
//!   (a failed attempt, WARN), `evoq.projection.checkpoint` (DEBUG) and
//!   `evoq.projection.rebuild` (INFO), besides the handler's own.
//!
//! A fresh projection starts before position 1, so it sees the first event; after a restart
//! it starts after its checkpoint. The checkpoint also moves past events of other types. A
//! failed event follows the handler's retry and error policy: the checkpoint does not pass it
//! until it is handled, dead-lettered or skipped.
//!
//! [`ProjectionTest`] runs a projection without a runtime: given events (or events stored by
//! older code), then its read model and checkpoint, or the error of one of its methods.

mod consumer;
mod definition;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod testing;

pub use definition::{Projection, ProjectionError, ReadModel, ReadModelError};
pub use memory::InMemoryReadModel;
pub use testing::{ProjectionOutcome, ProjectionTest};

pub(crate) use consumer::registration;
