//! What the durable backends share: how times, metadata and numbers are stored.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::envelope::Metadata;
use crate::store::{AllPage, FailureKind, HandlerRequest, RequestedAction, StoreError, StoredRow};

/// A time as nanoseconds since the Unix epoch (saturating; before the epoch is 0).
pub(crate) fn time_to_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The inverse of [`time_to_nanos`].
pub(crate) fn nanos_to_time(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// A time as microseconds since the Unix epoch, negative before it, rounded down to the
/// microsecond (the finer part is dropped, towards the past).
///
/// Clamped, never failing or panicking: a time beyond the range of `i64` microseconds (about
/// 292,000 years either side of 1970) becomes `i64::MIN` or `i64::MAX`. The mapping never
/// reverses an order, so "is due at or before `now`" keeps its answer for any `now` inside the
/// range, and a clamped time stays the earliest (or latest) of all.
pub(crate) fn time_to_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            // Rounded down means away from the epoch: a started microsecond counts whole.
            let micros = before.as_micros() + u128::from(before.subsec_nanos() % 1_000 != 0);
            i64::try_from(micros).map_or(i64::MIN, |m| -m)
        }
    }
}

/// The inverse of [`time_to_micros`]; a value this platform's clock cannot hold (before 1601 on
/// Windows, say) is an integrity error at `location`.
pub(crate) fn micros_to_time(
    micros: i64,
    location: impl FnOnce() -> String,
) -> Result<SystemTime, StoreError> {
    let offset = Duration::from_micros(micros.unsigned_abs());
    let time = if micros >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    time.ok_or_else(|| StoreError::Integrity {
        location: location(),
        reason: format!(
            "the time {micros} µs from the Unix epoch is out of this platform's range; repair or remove the row"
        ),
    })
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

/// A column whose value is not of the column's type (a hand-edited row): an integrity error
/// naming the row, as a value out of range is.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn undecodable(
    location: impl FnOnce() -> String,
    what: &str,
    error: &dyn std::fmt::Display,
) -> StoreError {
    StoreError::Integrity {
        location: location(),
        reason: format!("{what} does not decode ({error}); repair or remove the row"),
    }
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

/// The least string above every string that starts with `prefix` (byte order, which is the
/// order of code points): the exclusive upper bound of a prefix search; `None` when there is
/// none (an empty prefix, or one of only `char::MAX`).
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
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

/// The page of `rows` (in position order, at most `max_count` of them) read up to `head`: a
/// full page was scanned through its last row, a shorter one through the head.
pub(crate) fn all_page(rows: Vec<StoredRow>, max_count: usize, head: u64) -> AllPage {
    let scanned_through = if rows.len() == max_count {
        rows.last().map_or(head, StoredRow::global_position)
    } else {
        head
    };
    let mut page = AllPage {
        events: Vec::with_capacity(rows.len()),
        scanned_through,
        undecodable: Vec::new(),
    };
    for row in rows {
        match row {
            StoredRow::Event(event) => page.events.push(event),
            StoredRow::Undecodable(row) => page.undecodable.push(row),
        }
    }
    page
}

/// Why a row does not decode, from the integrity error its decoding gave.
pub(crate) fn undecodable_reason(error: StoreError) -> String {
    match error {
        StoreError::Integrity { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// A column's bytes as text: UTF-8 as is, anything else as `0x`-prefixed hex.
pub(crate) fn column_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            let mut hex = String::with_capacity(2 + bytes.len() * 2);
            hex.push_str("0x");
            for byte in bytes {
                hex.push_str(&format!("{byte:02x}"));
            }
            hex
        }
    }
}

/// A dead letter's raw row as stored: a JSON array of `[column, value]` pairs.
pub(crate) fn encode_raw_row(raw_row: Option<&Vec<(String, String)>>) -> Option<String> {
    // Serializing pairs of strings cannot fail.
    raw_row.map(|columns| serde_json::to_string(columns).unwrap_or_else(|_| "[]".to_owned()))
}

/// The inverse of [`encode_raw_row`]; undecodable text is an integrity error at `location`.
pub(crate) fn decode_raw_row(
    stored: Option<String>,
    location: impl FnOnce() -> String,
) -> Result<Option<Vec<(String, String)>>, StoreError> {
    stored
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| StoreError::Integrity {
                location: location(),
                reason: format!(
                    "the dead letter's raw row does not decode ({e}); repair or remove the row"
                ),
            })
        })
        .transpose()
}

/// A dead letter's kind as stored ([`FailureKind::as_str`]); another name is an integrity
/// error at `location`.
pub(crate) fn decode_failure_kind(
    name: &str,
    location: impl FnOnce() -> String,
) -> Result<FailureKind, StoreError> {
    FailureKind::from_name(name).ok_or_else(|| StoreError::Integrity {
        location: location(),
        reason: format!(
            "the dead letter's kind `{name}` is none this version knows; repair or remove the row"
        ),
    })
}

/// A stored request, from its columns (an id or event id that did not decode is `None`): an
/// integrity error when they do not make one.
pub(crate) fn decode_request(
    id: Option<Uuid>,
    handler: String,
    action: &str,
    event_id: Option<Option<Uuid>>,
    requested_at: SystemTime,
    failed: Option<String>,
) -> Result<HandlerRequest, StoreError> {
    let corrupt = || StoreError::Integrity {
        location: format!("a request for handler `{handler}`"),
        reason: format!(
            "the request (action `{action}`) does not decode; repair or remove the row"
        ),
    };
    let id = id.ok_or_else(corrupt)?;
    let event_id = event_id.map(|e| e.ok_or_else(corrupt)).transpose()?;
    let action = RequestedAction::from_stored(action, event_id).ok_or_else(corrupt)?;
    Ok(HandlerRequest {
        id,
        handler,
        action,
        requested_at,
        failed,
    })
}

/// A PostgreSQL connection string with every password replaced by `***`, for messages and
/// logs: `postgres://user:secret@host/db`, a `password=` parameter of the URL, or the
/// `key=value` form.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // The `key=value` form: `host=db user=app password=secret`.
        return redact_passwords(url, |c: char| c.is_whitespace());
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    format!(
        "{scheme}://{authority}{}",
        redact_passwords(tail, |c: char| c == '&')
    )
}

/// `text` with the value of every `password=` replaced by `***`; a value ends where `ends`
/// says, or at its closing quote when it is quoted (`password='a b'`).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn redact_passwords(text: &str, ends: impl Fn(char) -> bool) -> String {
    const KEY: &str = "password=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let value = &rest[at + KEY.len()..];
        let len = match value.strip_prefix('\'') {
            Some(quoted) => quoted.find('\'').map_or(value.len(), |end| end + 2),
            None => value.find(&ends).unwrap_or(value.len()),
        };
        out.push_str(&rest[..at + KEY.len()]);
        out.push_str("***");
        rest = &value[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_last_character_moved_up() {
        assert_eq!(prefix_end("Account-"), Some("Account.".to_owned()));
        assert_eq!(prefix_end("a\u{d7ff}"), Some("a\u{e000}".to_owned()));
        assert_eq!(prefix_end("a\u{10ffff}"), Some("b".to_owned()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10ffff}"), None);
    }

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
        // A password given as a parameter, with no user before the host.
        assert_eq!(
            redact_url("postgres://127.0.0.1:5432/test?password=s3cr3t"),
            "postgres://127.0.0.1:5432/test?password=***"
        );
        assert_eq!(
            redact_url("postgres://db?sslmode=disable&password=s3cr3t&user=app"),
            "postgres://db?sslmode=disable&password=***&user=app"
        );
        // The `key=value` form, quoted or not.
        assert_eq!(
            redact_url("host=db user=app password=s3cr3t dbname=events"),
            "host=db user=app password=*** dbname=events"
        );
        assert_eq!(
            redact_url("host=db password='s3 cr3t' dbname=events"),
            "host=db password=*** dbname=events"
        );
    }

    #[test]
    fn times_round_trip_to_the_nanosecond() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(nanos_to_time(time_to_nanos(t)), t);
    }

    fn micros_back(micros: i64) -> SystemTime {
        micros_to_time(micros, || "test".to_owned()).expect("in range")
    }

    #[test]
    fn times_round_trip_to_the_microsecond_on_both_sides_of_the_epoch() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000),
            UNIX_EPOCH - Duration::new(86_400, 1_000),
            UNIX_EPOCH - Duration::from_micros(1),
        ] {
            assert_eq!(micros_back(time_to_micros(t)), t, "{t:?}");
        }
        assert_eq!(
            time_to_micros(UNIX_EPOCH + Duration::new(1, 999)),
            1_000_000,
            "the finer part is dropped"
        );
        assert_eq!(
            time_to_micros(UNIX_EPOCH - Duration::new(1, 1)),
            -1_000_001,
            "before the epoch, rounded down too"
        );
    }

    #[test]
    fn times_out_of_range_are_clamped_in_order() {
        let years = Duration::from_secs(300_000 * 366 * 86_400);
        if let Some(far) = UNIX_EPOCH.checked_add(years) {
            assert_eq!(time_to_micros(far), i64::MAX);
        }
        if let Some(long_ago) = UNIX_EPOCH.checked_sub(years) {
            assert_eq!(time_to_micros(long_ago), i64::MIN);
        }
        assert!(time_to_micros(UNIX_EPOCH - Duration::from_micros(1)) < time_to_micros(UNIX_EPOCH));
        // Whatever the platform, decoding either end never panics.
        let _ = micros_to_time(i64::MAX, || "max".to_owned());
        let _ = micros_to_time(i64::MIN, || "min".to_owned());
    }
}
