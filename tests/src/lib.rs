//! Shared fixtures of the integration tests: the bank-account domain, a second aggregate type
//! that shares ids with it, a ledger that emits any mix of three event types (for event
//! handlers), and store wrappers that inject faults (by knobs, or seeded chaos).

#![allow(missing_docs, unreachable_pub)]

pub mod backends;
pub mod bank;
pub mod chaos_store;
pub mod crash;
pub mod faulty_store;
pub mod ledger;
pub mod library;
pub mod lifecycle;
pub mod pg;
pub mod spy_store;
pub mod sql_models;
pub mod steps;
pub mod temp;
