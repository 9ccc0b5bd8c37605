//! Backoff between retries: exponential growth with a cap, and a random factor to spread
//! retries that would otherwise fall in step.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// `base * 2^(attempt - 1)`, at most `max`, without overflow.
pub(crate) fn exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1);
    if shift >= 64 {
        return max;
    }
    match base.as_nanos().checked_mul(1u128 << shift) {
        Some(nanos) if nanos < max.as_nanos() => {
            // Below `max`, so it fits a `Duration`.
            let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
            Duration::new(secs, (nanos % 1_000_000_000) as u32)
        }
        _ => max,
    }
}

/// A random factor in `[0.5, 1.5)` (xorshift64*, one state per thread, seeded by the standard
/// library's random hasher keys).
pub(crate) fn random_factor() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u64(0x9e37_79b9_7f4a_7c15);
            hasher.finish() | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        let bits = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        0.5 + bits as f64 / (1u64 << 53) as f64
    })
}

/// [`exponential`] times a [`random_factor`], at most `max`.
pub(crate) fn jittered(base: Duration, max: Duration, attempt: u32) -> Duration {
    let delay = exponential(base, max, attempt);
    Duration::try_from_secs_f64(delay.as_secs_f64() * random_factor())
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_delays_grow_stay_under_the_cap_and_vary() {
        let ms = Duration::from_millis;
        for attempt in 1..=40 {
            let delay = jittered(ms(2), ms(100), attempt);
            let plain = exponential(ms(2), ms(100), attempt);
            assert!(delay <= ms(100), "{delay:?}");
            assert!(delay >= plain / 2, "{delay:?} vs {plain:?}");
        }
        let spread: std::collections::BTreeSet<_> =
            (0..50).map(|_| jittered(ms(2), ms(100), 3)).collect();
        assert!(spread.len() > 1, "the factor is random");
    }
}
