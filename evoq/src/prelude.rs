//! `use evoq::prelude::*;` brings the macros and the types most programs use.

pub use evoq_macros::{
    Command, Event, aggregate, apply, compensates, continues, decision, event_handler, handles,
    init, projection, query, saga, starts, stops, upcaster,
};
pub use evoq_runtime::commands;
pub use evoq_runtime::{
    Aggregate, AggregateTest, Command, Commands, Consistency, Dispatched, Error, Event,
    EventHandler, EventMeta, EventSet, EventStore, Evoq, FailedCommand, InMemoryReadModel,
    Metadata, Middleware, Pipeline, Projection, ProjectionError, ProjectionTest, ReadModel, Saga,
    SagaTest, UpcastError,
};
