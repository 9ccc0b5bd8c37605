//! The host of live aggregate instances: per aggregate type, a registry of partitions holding
//! each instance's cell (or its hibernated state), the instance's actor that runs commands in
//! the caller's task, the idle timers, and the memory monitor that scales them.
//!
//! Files, each importing only those above it: `cell` (an instance's state and lock), `idle`
//! (the timer queue), `memory_monitor`, `registry` (partitions and slots), `actor` (running a
//! command, timing out), `decision` (running a command routed to a decision: no live
//! instance, a read of its query and a conditional append).

pub(crate) mod actor;
pub(crate) mod cell;
pub mod decision;
pub(crate) mod idle;
pub mod memory_monitor;
pub(crate) mod registry;

pub use self::registry::AggregateStats;
