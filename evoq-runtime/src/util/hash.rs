//! Hashes. FNV-1a, a fixed hash: the same value for the same bytes on every run and every
//! machine; partitions and deterministic ids depend on it, so its values must never change.
//! [`StreamHasher`], a keyed hash for the maps of ids that clients choose.

use std::hash::BuildHasher;

const OFFSET_64: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME_64: u64 = 0x0100_0000_01b3;
const OFFSET_128: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const PRIME_128: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

/// 64-bit FNV-1a, continued from `state` over `bytes`.
pub(crate) fn fnv1a_64_continue(state: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(state, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME_64)
    })
}

/// 64-bit FNV-1a of `bytes`.
pub(crate) fn fnv1a_64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    fnv1a_64_continue(OFFSET_64, bytes)
}

/// 128-bit FNV-1a of `bytes`.
pub(crate) fn fnv1a_128(bytes: impl IntoIterator<Item = u8>) -> u128 {
    bytes.into_iter().fold(OFFSET_128, |hash, byte| {
        (hash ^ u128::from(byte)).wrapping_mul(PRIME_128)
    })
}

/// The hasher of maps keyed by stream ids and other ids clients choose: foldhash (a few instructions per id where SipHash takes a hundred),
/// keyed per store from the operating system's randomness (through std's `RandomState`), so
/// that stream ids chosen by a client cannot be made to collide.
#[derive(Clone)]
pub(crate) struct StreamHasher(foldhash::fast::SeedableRandomState);

impl Default for StreamHasher {
    fn default() -> Self {
        let seed = std::hash::RandomState::new().hash_one(0u64);
        StreamHasher(foldhash::fast::SeedableRandomState::with_seed(
            seed,
            foldhash::SharedSeed::global_random(),
        ))
    }
}

impl BuildHasher for StreamHasher {
    type Hasher = foldhash::fast::FoldHasher;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hashes_match_the_published_fnv1a_values() {
        // Test vectors of the FNV reference: the empty input and "a".
        assert_eq!(fnv1a_64(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_128(*b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
        assert_eq!(
            fnv1a_64_continue(fnv1a_64(*b"ab"), *b"c"),
            fnv1a_64(*b"abc")
        );
    }
}
