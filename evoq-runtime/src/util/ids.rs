//! Command and event ids: UUID v7, generated without a lock or a system call, and the
//! deterministic ids of commands that sagas emit ([`derived_id`]).
//!
//! `Uuid::now_v7` takes a process-wide lock and draws fresh random bits from the operating
//! system (or a cryptographic generator) for every id, and a command needs two ids (its own and
//! its event's). These ids must be unique and ordered by time, not secret: each thread keeps the
//! last millisecond it used, a 42-bit counter (the RFC 9562 "fixed-length dedicated counter",
//! reseeded at random on every new millisecond) and a SplitMix64 generator seeded once from
//! `Uuid::now_v7`. Ids of one thread increase strictly; ids of different threads are ordered by
//! their millisecond.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

struct State {
    millis: Cell<u64>,
    counter: Cell<u64>,
    rng: Cell<u64>,
}

thread_local! {
    static STATE: State = State {
        millis: Cell::new(0),
        counter: Cell::new(0),
        // The 64 low bits of a v7 UUID hold 62 random bits from the system generator.
        rng: Cell::new(Uuid::now_v7().as_u64_pair().1),
    };
}

/// The counter's width: 12 bits in `rand_a`, 30 at the top of `rand_b`.
const COUNTER_BITS: u32 = 42;

/// SplitMix64: one multiply-xorshift step per number.
fn next(state: &Cell<u64>) -> u64 {
    let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(z);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A new UUID v7: the Unix time in milliseconds, the thread's counter, 32 random bits.
pub(crate) fn new_v7() -> Uuid {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    STATE.with(|state| {
        let mut millis = state.millis.get();
        let mut counter = state.counter.get() + 1;
        if now > millis || counter >> COUNTER_BITS != 0 {
            // A new millisecond (or, after 2^41 ids in one, the next one): reseed the counter
            // with its top bit clear, so it can count on.
            millis = now.max(millis + u64::from(now <= millis));
            counter = next(&state.rng) >> (64 - COUNTER_BITS + 1);
        }
        state.millis.set(millis);
        state.counter.set(counter);
        let random = next(&state.rng) >> 32;
        let high = ((millis & 0xffff_ffff_ffff) << 16) | (0x7 << 12) | ((counter >> 30) & 0xfff);
        let low = (0b10 << 62) | ((counter & 0x3fff_ffff) << 32) | random;
        Uuid::from_u64_pair(high, low)
    })
}

/// A deterministic id: the same inputs give the same UUID (version 8, from a 128-bit FNV-1a of
/// the namespace, a separator, the base id and the index). Sagas give the commands of one event
/// these ids, so an event delivered again cannot dispatch its commands a second time.
pub(crate) fn derived_id(namespace: &str, base: Uuid, index: usize) -> Uuid {
    let index = (index as u64).to_be_bytes();
    let bytes = namespace
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(base.as_bytes())
        .chain(&index)
        .copied();
    uuid::Builder::from_u128(crate::util::hash::fnv1a_128(bytes))
        .with_variant(uuid::Variant::RFC4122)
        .with_version(uuid::Version::Custom)
        .into_uuid()
}

#[cfg(test)]
mod tests {

    #[test]
    fn derived_ids_are_deterministic_and_distinct() {
        let base = Uuid::from_u128(7);
        assert_eq!(derived_id("s/o1", base, 0), derived_id("s/o1", base, 0));
        assert_ne!(derived_id("s/o1", base, 0), derived_id("s/o1", base, 1));
        assert_ne!(derived_id("s/o1", base, 0), derived_id("s/o2", base, 0));
        assert_eq!(derived_id("s/o1", base, 0).get_version_num(), 8);
    }

    use super::*;

    #[test]
    fn ids_are_version_7_unique_increasing_within_a_thread_and_carry_the_time() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        let ids: Vec<Uuid> = (0..100_000).map(|_| new_v7()).collect();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        for id in [ids[0], ids[ids.len() - 1]] {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (seconds, nanos) = id.get_timestamp().expect("a v7 timestamp").to_unix();
            let millis = seconds * 1_000 + u64::from(nanos) / 1_000_000;
            assert!(
                millis >= before && millis <= after + 1,
                "{millis} in {before}..={after}"
            );
        }
    }

    #[test]
    fn threads_draw_different_ids() {
        let other: Vec<Uuid> = std::thread::spawn(|| (0..1_000).map(|_| new_v7()).collect())
            .join()
            .expect("thread");
        let mine: std::collections::HashSet<Uuid> = (0..1_000).map(|_| new_v7()).collect();
        assert!(other.iter().all(|id| !mine.contains(id)));
    }
}
