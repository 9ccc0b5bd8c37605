//! Small byte strings stored inline: the ids and hibernated states of aggregates are usually
//! a few dozen bytes, and a registry holds millions of them. Inline storage avoids one heap
//! allocation (and its fragmentation) per aggregate.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Bytes kept inline up to [`CompactBytes::INLINE`] long, on the heap beyond. 24 bytes in all.
///
/// Equal and hashed exactly as its content, a `[u8]`: a map keyed by `CompactBytes` is looked
/// up by a `&[u8]`, with no key to build.
#[derive(Clone)]
pub(crate) enum CompactBytes {
    Inline {
        len: u8,
        bytes: [u8; CompactBytes::INLINE],
    },
    Heap(Box<[u8]>),
}

impl CompactBytes {
    /// The longest content kept inline.
    pub(crate) const INLINE: usize = 22;

    pub(crate) fn new(content: &[u8]) -> Self {
        if content.len() <= Self::INLINE {
            let mut bytes = [0; Self::INLINE];
            bytes[..content.len()].copy_from_slice(content);
            CompactBytes::Inline {
                len: content.len() as u8,
                bytes,
            }
        } else {
            CompactBytes::Heap(content.into())
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            CompactBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            CompactBytes::Heap(bytes) => bytes,
        }
    }
}

impl PartialEq for CompactBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for CompactBytes {}

impl Hash for CompactBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes, which `Borrow<[u8]>` requires.
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for CompactBytes {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for CompactBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_content_is_inline_and_long_content_on_the_heap() {
        assert_eq!(std::mem::size_of::<CompactBytes>(), 24);
        let short = CompactBytes::new(b"acct-00000042");
        assert!(matches!(short, CompactBytes::Inline { .. }));
        assert_eq!(short.as_bytes(), b"acct-00000042");
        let exact = CompactBytes::new(&[7; CompactBytes::INLINE]);
        assert!(matches!(exact, CompactBytes::Inline { .. }));
        let long = CompactBytes::new(&[7; CompactBytes::INLINE + 1]);
        assert!(matches!(long, CompactBytes::Heap(_)));
        assert_eq!(long.as_bytes(), &[7; CompactBytes::INLINE + 1]);
        assert_eq!(CompactBytes::new(b"").as_bytes(), b"");
    }

    #[test]
    fn equal_and_hashed_as_the_bytes_it_holds() {
        use std::hash::BuildHasher;
        let hasher = std::hash::RandomState::new();
        for content in [&b""[..], b"acct-00000042", &[7; CompactBytes::INLINE + 9]] {
            let compact = CompactBytes::new(content);
            assert_eq!(hasher.hash_one(&compact), hasher.hash_one(content));
            assert_eq!(Borrow::<[u8]>::borrow(&compact), content);
            assert_eq!(compact, CompactBytes::new(content));
        }
        assert_ne!(CompactBytes::new(b"a"), CompactBytes::new(b"b"));
    }
}
