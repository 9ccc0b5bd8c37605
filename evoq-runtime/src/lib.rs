//! The runtime of evoq, a CQRS / event-sourcing framework.
//!
//! Users depend on the facade crate `evoq`, which re-exports this crate and the macros; see its
//! documentation. This crate never depends on the macro crate.
//!
//! # Layers
//!
//! The modules form layers whose imports point one way, down this list (ARCHITECTURE.md draws
//! them, and the `layers` test fails on an import that points up):
//!
//! `util` → `envelope` → `store` → `event` → `error` → `aggregate` → `host` → `dispatch`;
//! `delivery` (the subscription engine) → `handler` → `projection` → `saga`; `config`; `app`.

#![warn(clippy::unwrap_used)]

pub mod aggregate;
mod app;
pub mod config;
mod delivery;
pub mod dispatch;
pub mod envelope;
pub mod error;
pub mod event;
pub mod handler;
mod host;
pub mod projection;
pub mod saga;
pub mod store;
mod util;

// Modules whose public paths predate the layers.
pub use crate::aggregate::{command, lifespan, testing};
pub use crate::event::upcast;
pub use crate::host::{decision, memory_monitor};

pub use crate::aggregate::Aggregate;
pub use crate::app::{CommandBuilder, DispatchFuture, Evoq, EvoqBuilder, WaitFor};
pub use crate::command::{Command, DomainError, Rejection, Route};
pub use crate::config::{AggregateDefaults, Config, MemoryMonitorConfig};
pub use crate::delivery::{
    Consistency, DeadLetterQueue, HandlerConfig, HandlerOptions, HandlerStats, HandlerStatus,
    OnError, RetryStrategy, StartFrom,
};
pub use crate::dispatch::{CommandContext, DispatchOptions, Dispatched, Middleware, Pipeline};
pub use crate::envelope::{Metadata, NewEvent, RecordedEvent, UserEntries, stream_id};
pub use crate::error::{Decider, Error, ErrorKind};
pub use crate::event::{AppliedBy, Event, EventSet};
pub use crate::handler::{EventHandler, EventMeta, HandlerFailure};
pub use crate::host::AggregateStats;
pub use crate::lifespan::{DefaultLifespan, Idle, Lifespan, OnTimeout};
pub use crate::memory_monitor::{MemoryMonitor, MemoryProbe, PressureLevel, SystemMemory};
pub use crate::projection::{
    InMemoryReadModel, Projection, ProjectionError, ProjectionOutcome, ProjectionTest, ReadModel,
    ReadModelError,
};
pub use crate::saga::{
    Commands, CorrelationKey, Due, ExecutedCommand, FailedCommand, Saga, SagaOptions, SagaOutcome,
    SagaTest,
};
pub use crate::store::{DeadLetter, EventStore, ExpectedVersion, FailureKind, StoreError};
pub use crate::testing::AggregateTest;
pub use crate::upcast::{DecodeError, UpcastError, Upcaster};
