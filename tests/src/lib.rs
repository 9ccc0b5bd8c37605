//! Shared fixtures of the integration tests: the bank-account domain, a second aggregate type
//! that shares ids with it, and store wrappers that inject faults.

#![allow(missing_docs, unreachable_pub)]

pub mod bank;
pub mod faulty_store;
