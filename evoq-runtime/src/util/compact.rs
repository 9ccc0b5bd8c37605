//! Small byte strings stored inline: the ids and hibernated states of aggregates are usually
//! a few dozen bytes, and a registry holds millions of them. Inline storage avoids one heap
//! allocation (and its fragmentation) per aggregate.

/// Bytes kept inline up to [`CompactBytes::INLINE`] long, on the heap beyond. 24 bytes in all.
#[derive(Clone, PartialEq, Eq)]
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
}
