//! evoq: a CQRS / event-sourcing framework for Rust.
//!
//! Describe your domain with plain structs and a few attribute macros; the macros generate the
//! trait impls, the event enums and a type-safe routing table at compile time, and a lean tokio
//! runtime runs one actor per live aggregate over an event store.
//!
//! ```
//! use evoq::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, Clone, Debug)]
//! struct MoneyDeposited { account: String, amount: u64 }
//!
//! #[derive(Command, Debug)]
//! struct Deposit { #[aggregate_id] account: String, amount: u64 }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("deposits must be positive")]
//! struct NotPositive;
//!
//! #[derive(Default)]
//! struct BankAccount { balance: u64 }
//!
//! #[aggregate]
//! impl BankAccount {
//!     #[handles]
//!     fn deposit(&self, cmd: &Deposit) -> Result<MoneyDeposited, NotPositive> {
//!         if cmd.amount == 0 { return Err(NotPositive); }
//!         Ok(MoneyDeposited { account: cmd.account.clone(), amount: cmd.amount })
//!     }
//!
//!     #[apply]
//!     fn deposited(&mut self, e: &MoneyDeposited) { self.balance += e.amount; }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), evoq::Error> {
//! let app = Evoq::builder().start().await?;
//! let done = app.dispatch(Deposit { account: "acc-1".into(), amount: 50 }).await?;
//! assert_eq!(done.version, 1);
//! assert!(app.dispatch(Deposit { account: "acc-1".into(), amount: 0 }).await.unwrap_err().is_rejection());
//! # Ok(())
//! # }
//! ```
//!
//! Wiring mistakes do not compile: dispatching a command that no aggregate handles, a command
//! handled by two aggregates, a handler returning an event its aggregate never applies, a
//! command without an `#[aggregate_id]`, a bad handler signature. Each is one error on your
//! token that says what is wrong and what to write: see [`guide::compile_errors`], and
//! [`checks`] for the traits that carry the type-level rules.
//!
//! Event handlers (`#[event_handler]`) subscribe to event types taken from their signatures and
//! run in a task each, with retries, dead letters, checkpoints and strong consistency: see
//! [`guide::handlers`].
//!
//! Projections (`#[projection]`) maintain read models with a checkpoint saved after every event,
//! can be rebuilt, and let a caller read its own writes: see [`guide::projections`]. Upcasters
//! (`#[upcaster]`) bring events stored at an old schema version to the current one on every read
//! path, with the chain checked at compile time: see [`guide::upcasting`].
//!
//! The [`guide`] has one page per concept. Users depend on this crate alone: it re-exports the
//! runtime (`evoq-runtime`) and the macros (`evoq-macros`).

pub use evoq_macros::{
    Command, Event, aggregate, apply, compensates, continues, decision, event_handler, handles,
    init, projection, query, saga, starts, stops, upcaster,
};
pub use evoq_runtime::*;

#[doc(no_inline)]
pub use async_trait::async_trait;
#[doc(no_inline)]
pub use uuid::Uuid;

/// evoq in an axum web service (feature `axum`): problem responses for evoq's errors, the
/// consistency token header, read-your-writes, readiness and graceful shutdown. See
/// [`evoq_axum`].
#[cfg(feature = "axum")]
pub use evoq_axum as axum;

pub mod checks;
pub mod guide;
pub mod prelude;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

/// The README's quick start, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
