//! What the durable backends share: how times, metadata and numbers are stored.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::envelope::Metadata;
use crate::store::StoreError;

/// A time as nanoseconds since the Unix epoch (saturating; before the epoch is 0).
pub(crate) fn time_to_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The inverse of [`time_to_nanos`].
pub(crate) fn nanos_to_time(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// A `u64` as a database integer (saturating at `i64::MAX`).
pub(crate) fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A database integer that must be a non-negative `u64`.
pub(crate) fn from_db(
    n: i64,
    location: impl FnOnce() -> String,
    what: &str,
) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Integrity {
        location: location(),
        reason: format!("{what} is negative ({n})"),
    })
}

/// The stream id of a decoded row, shared with the row before it when both are of one stream
/// (every row of a stream read, runs of one stream in the global order), so that their records
/// point at one copy.
pub(crate) fn shared_stream_id(id: &str, last: &mut Option<Arc<str>>) -> Arc<str> {
    match last {
        Some(last) if **last == *id => Arc::clone(last),
        _ => Arc::clone(last.insert(Arc::from(id))),
    }
}

/// Metadata as stored (JSON).
pub(crate) fn encode_metadata(metadata: &Metadata) -> Vec<u8> {
    // Serializing a struct of ids and string maps cannot fail.
    serde_json::to_vec(metadata).unwrap_or_else(|_| b"{}".to_vec())
}

/// Metadata read back; an undecodable value is an integrity error at `location`.
pub(crate) fn decode_metadata(
    bytes: &[u8],
    location: impl FnOnce() -> String,
) -> Result<Metadata, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Integrity {
        location: location(),
        reason: format!("the event's metadata does not decode ({e}); repair or remove the row"),
    })
}

/// `postgres://user:secret@host/db` with the password replaced by `***`, for messages and logs.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_owned(),
    };
    let mut tail = tail.to_owned();
    if let Some(i) = tail.find("password=") {
        let end = tail[i..].find('&').map_or(tail.len(), |e| i + e);
        tail.replace_range(i + "password=".len()..end, "***");
    }
    format!("{scheme}://{user}@{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cr:et@db.example:5432/events"),
            "postgres://app:***@db.example:5432/events"
        );
        assert_eq!(
            redact_url("postgres://app@db/events?password=x&sslmode=require"),
            "postgres://app@db/events?password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/events"), "postgres://db/events");
    }

    #[test]
    fn times_round_trip_to_the_nanosecond() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(nanos_to_time(time_to_nanos(t)), t);
    }
}
