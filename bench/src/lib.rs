//! Shared parts of the benchmarks: the bank-account domain of the workload
//! (`bench/WORKLOAD.md`) and its driver, the peers it compares (evoq and the floor;
//! cqrs-es lives in its own package, `bench/cqrs-es`), a store that keeps nothing (to measure
//! the runtime alone), process measurements and the allocation counter.

#[expect(
    unsafe_code,
    reason = "a global allocator is an `unsafe impl GlobalAlloc`: the counter passes every call to the system's"
)]
pub mod allocations;
pub mod bank;
pub mod evoq_peer;
pub mod floor;
pub mod ledger;
pub mod measure;
pub mod null_store;
pub mod read_side;
pub mod workload;
