//! Shared parts of the benchmarks: the bank-account domain of the workload
//! (`../shared/bench/WORKLOAD.md`), a store that keeps nothing (to measure the runtime alone),
//! and process measurements.

pub mod bank;
pub mod measure;
pub mod null_store;
