//! The host of live aggregate instances: per aggregate type, a registry of partitions holding
//! each instance's cell (or its hibernated state), the instance's actor that runs commands in
//! the caller's task, the idle timers, and the memory monitor that scales them.
//!
//! Files, each importing only those above it: `cell` (an instance's state and lock), `idle`
//! (the timer queue), `memory_monitor`, `stream_names` (one type per stream name), `registry`
//! (partitions and slots), `actor` (running a
//! command, timing out), `decision_models` (the kept models of cached decisions), `decision` (running a command
//! routed to a decision: a read of its query, or of what is new to its kept model, and a
//! conditional append).

pub(crate) mod actor;
pub(crate) mod cell;
pub mod decision;
pub(crate) mod decision_models;
pub(crate) mod idle;
pub mod memory_monitor;
pub(crate) mod registry;
pub(crate) mod stream_names;

pub use self::registry::AggregateStats;
