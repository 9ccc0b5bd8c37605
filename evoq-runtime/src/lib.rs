//! The runtime of evoq, a CQRS / event-sourcing framework.
//!
//! Users depend on the facade crate `evoq`, which re-exports this crate and the macros; see its
//! documentation. This crate never depends on the macro crate.

pub mod aggregate;
pub mod command;
pub mod envelope;
pub mod error;
pub mod event;
pub mod store;

pub use crate::aggregate::Aggregate;
pub use crate::command::{Command, DomainError, Rejection, Route};
pub use crate::envelope::{Metadata, NewEvent, RecordedEvent};
pub use crate::error::Error;
pub use crate::event::{AppliedBy, Event, EventSet};
pub use crate::store::{EventStore, ExpectedVersion, StoreError};
