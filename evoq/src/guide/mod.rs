//! Guides: one page per concept, with examples that compile and run as doc tests.
//!
//! - [`aggregates`]: events, commands, the `#[aggregate]` block, what the runtime guarantees.
//! - [`lifecycle`]: idle TTL, hibernation, passivation, snapshots, lifespans, memory pressure,
//!   configuration.
//! - [`dispatch`]: dispatching commands, ids and metadata, options, errors.
//! - [`pipeline`]: idempotency (keys, command ids, restarts) and middleware.
//! - [`handlers`]: event handlers, delivery, retries, dead letters, strong consistency.
//! - [`projections`]: read models, checkpoints, rebuilds, reading your own writes.
//! - [`sagas`]: instances, commands, re-delivery safety, compensation.
//! - [`decisions`]: rules across streams: events selected by tags and types, decided on and
//!   appended under the condition that nothing they read changed.
//! - [`upcasting`]: schema evolution: upcasters, chains, renames, what the compiler checks.
//! - [`testing`]: given / when / then tests of one aggregate (`AggregateTest`), one saga
//!   instance (`SagaTest`) and one projection (`ProjectionTest`), without a runtime.
//! - [`stores`]: the event store contract, and choosing a store: in-memory, SQLite, PostgreSQL.
//! - [`operations`]: what a running application tells you: logs and traces, metrics, the
//!   counters in the process, health, the inspector CLI.
//! - [`compile_errors`]: every compile-time rule with its message, and the signature each
//!   block wants of its methods.

#[doc = include_str!("aggregates.md")]
pub mod aggregates {}

#[doc = include_str!("lifecycle.md")]
pub mod lifecycle {}

#[doc = include_str!("dispatch.md")]
pub mod dispatch {}

#[doc = include_str!("pipeline.md")]
pub mod pipeline {}
#[doc = include_str!("handlers.md")]
pub mod handlers {}

#[doc = include_str!("projections.md")]
pub mod projections {}

#[doc = include_str!("sagas.md")]
pub mod sagas {}

#[doc = include_str!("decisions.md")]
pub mod decisions {}

#[doc = include_str!("upcasting.md")]
pub mod upcasting {}

#[doc = include_str!("testing.md")]
pub mod testing {}

#[doc = include_str!("stores.md")]
pub mod stores {}

#[doc = include_str!("operations.md")]
pub mod operations {}

#[doc = include_str!("compile_errors.md")]
pub mod compile_errors {}
