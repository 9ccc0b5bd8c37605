//! `use evoq::prelude::*;` brings the macros and the types most programs use.

pub use evoq_macros::{Command, Event, aggregate, apply, handles};
pub use evoq_runtime::{
    Aggregate, AggregateTest, Command, Dispatched, Error, Event, EventSet, EventStore, Evoq,
    Metadata, Middleware, Pipeline,
};
