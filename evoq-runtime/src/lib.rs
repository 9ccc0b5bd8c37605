//! The runtime of evoq, a CQRS / event-sourcing framework.
//!
//! Users depend on the facade crate `evoq`, which re-exports this crate and the macros; see its
//! documentation. This crate never depends on the macro crate.

#![warn(clippy::unwrap_used)]

mod actor;
pub mod aggregate;
mod app;
pub mod command;
mod compact;
pub mod config;
pub mod dispatch;
pub mod envelope;
pub mod error;
pub mod event;
pub mod handler;
mod idle;
mod ids;
pub mod lifespan;
pub mod memory_monitor;
mod partition;
pub mod projection;
pub mod saga;
pub mod store;
pub mod subscription;
pub mod testing;
pub mod upcast;

pub use crate::aggregate::Aggregate;
pub use crate::app::{CommandBuilder, DispatchFuture, Evoq, EvoqBuilder};
pub use crate::command::{Command, DomainError, Rejection, Route};
pub use crate::config::{AggregateDefaults, Config, MemoryMonitorConfig};
pub use crate::dispatch::{CommandContext, DispatchOptions, Dispatched, Middleware, Pipeline};
pub use crate::envelope::{Metadata, NewEvent, RecordedEvent, UserEntries, stream_id};
pub use crate::error::Error;
pub use crate::event::{AppliedBy, Event, EventSet};
pub use crate::handler::{EventHandler, EventMeta, HandlerFailure};
pub use crate::lifespan::{DefaultLifespan, Idle, Lifespan, OnTimeout};
pub use crate::memory_monitor::{MemoryMonitor, MemoryProbe, PressureLevel, SystemMemory};
pub use crate::partition::AggregateStats;
pub use crate::projection::{
    InMemoryReadModel, Projection, ProjectionError, ReadModel, ReadModelError,
};
pub use crate::saga::{Commands, CorrelationKey, ExecutedCommand, FailedCommand, Saga};
pub use crate::store::{DeadLetter, EventStore, ExpectedVersion, StoreError};
pub use crate::subscription::{
    Consistency, DeadLetterQueue, HandlerConfig, HandlerOptions, HandlerStats, OnError,
    RetryStrategy, StartFrom,
};
pub use crate::testing::AggregateTest;
pub use crate::upcast::{DecodeError, UpcastError, Upcaster};
