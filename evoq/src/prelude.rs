//! `use evoq::prelude::*;` brings the macros and the types most programs use.

pub use evoq_macros::{Command, Event, aggregate, apply, event_handler, handles};
pub use evoq_runtime::{
    Aggregate, AggregateTest, Command, Consistency, Dispatched, Error, Event, EventHandler,
    EventMeta, EventSet, EventStore, Evoq, Metadata, Middleware, Pipeline,
};
