//! Durations as people write them: `"250ms"`, `"10s"`, `"30m"`, `"1h 30m"`.
//!
//! One grammar for the whole framework: the configuration and the macros' arguments
//! (`#[aggregate(idle_timeout = "30m")]`, `#[event_handler(retry = fixed("2s"))]`) both parse
//! with [`humantime::parse_duration`]: whole or decimal numbers, each followed by a unit (`ms`,
//! `s`, `m` or `min`, `h`, `d`, and their long forms), several of them summed. In TOML a bare
//! integer is also accepted and counts milliseconds, like the Erlang evoq's `sys.config`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a duration of the framework's one grammar, `humantime`'s: `"250ms"`, `"10s"`, `"30m"`
/// or `"30min"`, `"1h 30m"` (the same strings `#[aggregate(idle_timeout = "...")]` and
/// `#[event_handler(retry = fixed("..."))]` take). The error says what to write.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|error| {
        format!(
            "`{text}` is not a duration ({error}): write a number and a unit, like \"250ms\", \"10s\", \"30m\" or \"1h\""
        )
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Millis(u64),
    Text(String),
}

/// Deserializes a duration: a string of the grammar, or an integer of milliseconds.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    match DurationValue::deserialize(deserializer)? {
        DurationValue::Millis(millis) => Ok(Duration::from_millis(millis)),
        DurationValue::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

/// Deserializes a duration or `"never"` (`None`).
pub(crate) fn deserialize_optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    match DurationValue::deserialize(deserializer)? {
        DurationValue::Text(text) if text.trim() == "never" => Ok(None),
        DurationValue::Millis(millis) => Ok(Some(Duration::from_millis(millis))),
        DurationValue::Text(text) => parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_in_sums() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 30min "), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        let error = parse_duration("5").unwrap_err();
        assert!(error.contains("`5` is not a duration"), "{error}");
    }
}
