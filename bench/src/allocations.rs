//! Counting heap allocations: [`Counting`] is the global allocator of the workload's binaries
//! (`evoq-bench`, and cqrs-es's in `bench/cqrs-es`, which includes this file). It is the
//! system's allocator, and while counting is on ([`start`], the flag `--count-allocations`)
//! it counts every `alloc`, `alloc_zeroed` and `realloc`, so a run can say how many
//! allocations a command costs ([`count`] before and after the timed part).
//!
//! Off, an allocation costs one relaxed load more than the system's. On, one relaxed increment
//! of a counter of the calling thread's own: the counters are striped over cache-line-aligned
//! slots, one per thread (threads beyond [`STRIPES`] share), so two workers allocating at once
//! never pass one cache line back and forth between their cores.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The system's allocator, counting allocations while counting is on.
pub struct Counting;

/// How many counters the threads spread over.
pub const STRIPES: usize = 32;

/// One thread's counter, alone on its cache lines.
#[repr(align(128))]
struct Stripe(AtomicU64);

static COUNTS: [Stripe; STRIPES] = [const { Stripe(AtomicU64::new(0)) }; STRIPES];
static ON: AtomicBool = AtomicBool::new(false);
/// The stripe the next thread to allocate gets.
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe (`usize::MAX` until its first counted allocation). Constant
    /// initialization and no destructor: reading it never allocates.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Turns counting on, for the rest of the process.
pub fn start() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether counting is on.
pub fn counting() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The allocations counted so far, over every thread.
pub fn count() -> u64 {
    COUNTS
        .iter()
        .map(|stripe| stripe.0.load(Ordering::Relaxed))
        .sum()
}

#[inline]
fn counted() {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let index = STRIPE
        .try_with(|stripe| {
            let mut index = stripe.get();
            if index == usize::MAX {
                index = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
                stripe.set(index);
            }
            index
        })
        .unwrap_or(0);
    COUNTS[index].0.fetch_add(1, Ordering::Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; counting touches no memory it returns.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
