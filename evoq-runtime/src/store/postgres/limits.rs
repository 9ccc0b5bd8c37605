//! What PostgreSQL cannot hold, refused before it reaches the database: text with a NUL
//! character (PostgreSQL's `TEXT` never holds one), and indexed text (a stream id, an
//! idempotency key, a tag) longer than [`MAX_INDEXED_BYTES`] (a B-tree entry holds about
//! 2.7 KB). Refused up front, such a value is a typed error of its own call
//! ([`StoreError::Unstorable`]) and never enters a group commit, whose other appends the
//! database would fail with it.

use super::BACKEND;
use crate::store::{EventQuery, StoreError};

/// The longest stream id, idempotency key or tag the store holds, in bytes.
pub(crate) const MAX_INDEXED_BYTES: usize = 2048;

/// `value`, the `what` of an operation, as PostgreSQL can hold it in a `TEXT` column: no NUL.
pub(super) fn text(what: &'static str, value: &str) -> Result<(), StoreError> {
    if value.contains('\0') {
        return Err(unstorable(
            what,
            value,
            "PostgreSQL's text cannot hold a NUL character (`\\0`); leave it out".to_owned(),
        ));
    }
    Ok(())
}

/// `value` as PostgreSQL can hold it in an indexed `TEXT` column: no NUL, and at most
/// [`MAX_INDEXED_BYTES`].
pub(super) fn indexed(what: &'static str, value: &str) -> Result<(), StoreError> {
    text(what, value)?;
    if value.len() > MAX_INDEXED_BYTES {
        return Err(unstorable(
            what,
            value,
            format!(
                "it is {} bytes long, and the PostgreSQL store indexes at most {MAX_INDEXED_BYTES} bytes of it; use a shorter one (a hash of it, say)",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The types and tags of `query` as PostgreSQL can compare them.
pub(super) fn query(query: &EventQuery) -> Result<(), StoreError> {
    for item in query.items() {
        for event_type in &item.types {
            text("event type", event_type)?;
        }
        for tag in &item.tags {
            text("tag", tag)?;
        }
    }
    Ok(())
}

/// The error for `value`, cut to its first characters.
pub(super) fn unstorable(what: &'static str, value: &str, reason: String) -> StoreError {
    StoreError::unstorable(BACKEND, what, value, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_up_to_the_limit_passes_and_one_byte_more_is_refused_naming_it() {
        assert!(indexed("stream id", &"s".repeat(MAX_INDEXED_BYTES)).is_ok());
        let error = indexed("stream id", &"s".repeat(MAX_INDEXED_BYTES + 1)).unwrap_err();
        let StoreError::Unstorable {
            what,
            value,
            reason,
            ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(*what, "stream id");
        assert_eq!(
            value.chars().filter(|c| *c == 's').count(),
            StoreError::SHOWN
        );
        assert!(reason.contains("2049 bytes"), "{reason}");
    }

    #[test]
    fn a_nul_is_refused_in_any_text_and_shown_escaped() {
        assert!(text("event type", "Opened").is_ok());
        let error = text("tag", "book:\0").unwrap_err();
        assert!(error.to_string().contains("\"book:\\0\""), "{error}");
        assert!(error.to_string().contains("NUL"), "{error}");
        assert!(matches!(
            indexed("stream id", "a\0b"),
            Err(StoreError::Unstorable {
                what: "stream id",
                ..
            })
        ));
    }
}
