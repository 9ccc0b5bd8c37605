//! The event store: one async trait, [`EventStore`], that every backend implements, and the
//! backends themselves.
//!
//! The contract, for every backend:
//! - stream versions start at 1 (an empty stream is at version 0); an append with an
//!   [`ExpectedVersion`] that does not hold appends nothing and returns
//!   [`StoreError::WrongExpectedVersion`]; concurrent appends to one stream never fork it;
//! - global positions start at 1 and increase strictly in commit order; a reader that has seen
//!   position `p` never later finds a newly committed event below `p`; the events of one append
//!   take consecutive versions and consecutive positions, and no reader sees part of an append;
//! - [`EventStore::read_all`] reports how far it scanned, so a filtered reader can advance past
//!   events it is not interested in;
//! - [`EventStore::head`] gives a watch on the highest committed position, which
//!   [`Subscription`] uses to go from catch-up to live with no gap and no duplicate;
//! - [`EventStore::append_command`] records a successful command in the [command
//!   log](CommandRecord) in the same transaction as its events, and refuses a second run of one
//!   command id or idempotency key ([`StoreError::DuplicateCommand`]), also across nodes;
//! - checkpoints and [dead letters](DeadLetter) of named subscribers, and the per-instance state
//!   of sagas and their scheduled [timeouts](Timeout), are kept beside the events;
//! - every event's [tags](crate::envelope::Tags) are stored with it; [`EventStore::read_query`]
//!   reads the events that match an [`EventQuery`] (types and tags, across streams), and
//!   [`EventStore::append_if`] appends only while no event matching a query was appended after
//!   a position ([`AppendCondition`], refused with [`StoreError::ConditionFailed`]), atomically,
//!   also across nodes;
//! - [`EventStore::try_lease`] grants a named subscriber to one node at a time (single-node
//!   stores grant every lease).
//!
//! Backends: [`memory`] (always there), `sqlite` (feature `sqlite`) and `postgres` (feature
//! `postgres`).
//!
//! The conformance suite (`store::conformance`, run by the `store_conformance_tests!` macro)
//! checks every one of these guarantees; every backend runs it. It is compiled only with the
//! feature `conformance`, for the authors of a backend: an application's build never carries it.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod codec;
mod command_log;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod dead_letter;
mod error;
mod event_store;
mod expected_version;
mod guarded;
mod lease;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod query;
mod request;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod subscription;
mod timeout;
mod undecodable;

pub use self::command_log::{CommandLookup, CommandRecord, NewCommand};
pub use self::dead_letter::{DeadLetter, FailureKind};
pub use self::error::StoreError;
pub use self::event_store::{
    AllPage, AppendNow, Appended, Direction, EventFilter, EventStore, Snapshot, SnapshotAndEvents,
};
pub use self::event_store::{EventCounts, StreamInfo};
pub use self::expected_version::ExpectedVersion;
pub(crate) use self::guarded::GuardedStore;
pub use self::lease::Lease;
pub use self::query::{AppendCondition, EventQuery, QueryItem};
pub use self::request::{HandlerRequest, RequestedAction};
pub use self::subscription::Subscription;
pub use self::timeout::Timeout;
pub use self::undecodable::{StoredRow, UndecodableRow};
