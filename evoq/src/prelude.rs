//! `use evoq::prelude::*;` brings the macros and the types most programs use.

pub use evoq_macros::{
    Command, Event, aggregate, apply, event_handler, handles, projection, upcaster,
};
pub use evoq_runtime::{
    Aggregate, AggregateTest, Command, Consistency, Dispatched, Error, Event, EventHandler,
    EventMeta, EventSet, EventStore, Evoq, InMemoryReadModel, Metadata, Middleware, Pipeline,
    Projection, ProjectionError, ReadModel, UpcastError,
};
