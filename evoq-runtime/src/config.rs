//! The runtime's configuration: a typed struct with the defaults of the specification, which
//! also deserializes from TOML with the keys of the Erlang evoq's `sys.config`.
//!
//! ```toml
//! store = "memory"
//! partitions = 4                 # aggregate_partitions
//! dispatch_timeout = "5s"
//! conflict_retries = 10
//! idempotency_ttl = "1h"
//! idempotency_capacity = 100000
//! idempotency_lookback = 100
//!
//! [aggregate_defaults]
//! idle_timeout = "30m"
//! hibernate_after = "1m"         # or "never"
//! snapshot_every = 100
//!
//! [memory_monitor]
//! enabled = true
//! check_interval = "10s"
//! elevated_threshold = 0.70
//! critical_threshold = 0.85
//!
//! [handlers]                     # handler_defaults
//! retry = "exponential_jitter"   # immediate | fixed | exponential | exponential_jitter
//! retry_base = "100ms"           # the fixed delay, or the exponential base
//! retry_max = "10s"
//! max_attempts = 6
//! on_error = "dead_letter"       # dead_letter | skip | stop
//! start_from = "checkpoint"      # checkpoint | origin | current
//! checkpoint_every = 100
//! page_size = 1000
//! ```
//!
//! Durations are strings with a unit (`"250ms"`, `"10s"`, `"30m"`, `"1h"`) or integers of
//! milliseconds. Unknown keys are errors. [`Config::validate`] rejects values that cannot work
//! (zero partitions, a critical threshold below the elevated one, ...) with an error naming the
//! key; the builder validates before it starts anything.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::Error;
use crate::subscription::{HandlerConfig, OnError, RetryStrategy, StartFrom};

/// Runtime settings, with the defaults of the specification.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The event store (`"memory"`; the durable stores are given to the builder directly).
    pub store: String,
    /// Number of partition registries (default 4, at least 1).
    pub partitions: usize,
    /// Default time a dispatch may take (default 5 s).
    #[serde(deserialize_with = "duration")]
    pub dispatch_timeout: Duration,
    /// Default number of re-runs after a version conflict (default 10).
    pub conflict_retries: u32,
    /// How long a successful dispatch's result answers duplicates of its idempotency key or
    /// command id (default 1 h).
    #[serde(deserialize_with = "duration")]
    pub idempotency_ttl: Duration,
    /// How many results the idempotency cache keeps at most; the oldest go first (default
    /// 100,000, at least 1).
    pub idempotency_capacity: usize,
    /// How many of a stream's newest events are searched for a caller-supplied command id that
    /// the cache does not know, so a command re-sent after a restart is not appended twice
    /// (default 100; 0 turns the search off).
    pub idempotency_lookback: usize,
    /// Lifecycle defaults of every aggregate type (overridden by `#[aggregate(...)]`).
    pub aggregate_defaults: AggregateDefaults,
    /// How often hibernated instances are checked for passivation (default 1 s).
    #[serde(deserialize_with = "duration")]
    pub hibernation_sweep_interval: Duration,
    /// The memory monitor.
    pub memory_monitor: MemoryMonitorConfig,
    /// Defaults of every event handler: retries, error policy, start, checkpoints.
    pub handlers: HandlerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: "memory".to_owned(),
            partitions: 4,
            dispatch_timeout: Duration::from_secs(5),
            conflict_retries: 10,
            idempotency_ttl: Duration::from_secs(3_600),
            idempotency_capacity: 100_000,
            idempotency_lookback: 100,
            aggregate_defaults: AggregateDefaults::default(),
            hibernation_sweep_interval: Duration::from_secs(1),
            memory_monitor: MemoryMonitorConfig::default(),
            handlers: HandlerConfig::default(),
        }
    }
}

/// Lifecycle defaults of every aggregate type.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateDefaults {
    /// Idle time after which an instance times out (default 30 min).
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Idle time after which an instance hibernates, before its idle timeout (default 1 min,
    /// `"never"` or absent in TOML: never).
    #[serde(deserialize_with = "optional_duration")]
    pub hibernate_after: Option<Duration>,
    /// Save a snapshot every this many events (default 100).
    pub snapshot_every: u64,
}

impl Default for AggregateDefaults {
    fn default() -> Self {
        AggregateDefaults {
            idle_timeout: Duration::from_secs(30 * 60),
            hibernate_after: Some(Duration::from_secs(60)),
            snapshot_every: 100,
        }
    }
}

/// Settings of the memory monitor.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryMonitorConfig {
    /// Whether the monitor runs (default true).
    pub enabled: bool,
    /// How often it reads memory use (default 10 s).
    #[serde(deserialize_with = "duration")]
    pub check_interval: Duration,
    /// Used fraction from which the level is elevated (default 0.70).
    pub elevated_threshold: f64,
    /// Used fraction from which the level is critical (default 0.85).
    pub critical_threshold: f64,
}

impl Default for MemoryMonitorConfig {
    fn default() -> Self {
        MemoryMonitorConfig {
            enabled: true,
            check_interval: Duration::from_secs(10),
            elevated_threshold: 0.70,
            critical_threshold: 0.85,
        }
    }
}

impl Config {
    /// Parses TOML text; the error names the key that is wrong. Does not validate.
    pub fn from_toml_str(text: &str) -> Result<Config, Error> {
        let deserializer = toml::Deserializer::parse(text).map_err(|error| Error::Config {
            key: "<toml>".to_owned(),
            reason: format!("the configuration is not valid TOML: {}", error.message()),
        })?;
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            Error::Config {
                key: if key == "." { "<root>".to_owned() } else { key },
                reason: error.inner().message().to_owned(),
            }
        })
    }

    /// Reads and parses a TOML file. Does not validate.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| Error::Config {
            key: "<file>".to_owned(),
            reason: format!("cannot read `{}`: {error}", path.display()),
        })?;
        Self::from_toml_str(&text)
    }

    /// Checks every value; the error names the key and says what to set.
    pub fn validate(&self) -> Result<(), Error> {
        fn invalid(key: &str, reason: impl Into<String>) -> Result<(), Error> {
            Err(Error::Config {
                key: key.to_owned(),
                reason: reason.into(),
            })
        }
        if self.store != "memory" {
            return invalid(
                "store",
                format!(
                    "unknown store `{}`: the configuration can name `memory`; give a durable store to the builder with `.store(...)`",
                    self.store
                ),
            );
        }
        if self.partitions == 0 {
            return invalid("partitions", "must be at least 1 (the default is 4)");
        }
        if self.dispatch_timeout.is_zero() {
            return invalid(
                "dispatch_timeout",
                "must be longer than zero (the default is 5 s)",
            );
        }
        if self.idempotency_ttl.is_zero() {
            return invalid(
                "idempotency_ttl",
                "must be longer than zero (the default is 1 h)",
            );
        }
        if self.idempotency_capacity == 0 {
            return invalid(
                "idempotency_capacity",
                "must be at least 1 (the default is 100000)",
            );
        }
        let aggregates = &self.aggregate_defaults;
        if aggregates.idle_timeout.is_zero() {
            return invalid(
                "aggregate_defaults.idle_timeout",
                "must be longer than zero (the default is 30 min)",
            );
        }
        if aggregates
            .hibernate_after
            .is_some_and(|after| after.is_zero())
        {
            return invalid(
                "aggregate_defaults.hibernate_after",
                "must be longer than zero, or \"never\" (the default is 1 min)",
            );
        }
        if aggregates.snapshot_every == 0 {
            return invalid(
                "aggregate_defaults.snapshot_every",
                "must be at least 1 (the default is 100)",
            );
        }
        if self.hibernation_sweep_interval.is_zero() {
            return invalid(
                "hibernation_sweep_interval",
                "must be longer than zero (the default is 1 s)",
            );
        }
        let memory = &self.memory_monitor;
        if memory.check_interval.is_zero() {
            return invalid(
                "memory_monitor.check_interval",
                "must be longer than zero (the default is 10 s)",
            );
        }
        for (key, value) in [
            (
                "memory_monitor.elevated_threshold",
                memory.elevated_threshold,
            ),
            (
                "memory_monitor.critical_threshold",
                memory.critical_threshold,
            ),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                return invalid(
                    key,
                    format!("must be a fraction above 0 and at most 1, got {value}"),
                );
            }
        }
        if let Err((key, reason)) = self.handlers.check() {
            return invalid(key, reason);
        }
        if memory.critical_threshold <= memory.elevated_threshold {
            return invalid(
                "memory_monitor.critical_threshold",
                format!(
                    "must be above memory_monitor.elevated_threshold ({}), got {}",
                    memory.elevated_threshold, memory.critical_threshold
                ),
            );
        }
        Ok(())
    }
}

/// Parses `"250ms"`, `"10s"`, `"30m"`, `"1h"` (whole numbers, optional space before the unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write a whole number and a unit, like \"250ms\", \"10s\", \"30m\" or \"1h\""))?;
    let millis = match unit.trim() {
        "ms" => Some(value),
        "s" => value.checked_mul(1_000),
        "m" | "min" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}`: use ms, s, m or h"
            ));
        }
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// The TOML form of [`HandlerConfig`].
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HandlersToml {
    retry: String,
    #[serde(deserialize_with = "duration")]
    retry_base: Duration,
    #[serde(deserialize_with = "duration")]
    retry_max: Duration,
    max_attempts: u32,
    on_error: String,
    start_from: String,
    checkpoint_every: u64,
    page_size: usize,
}

impl Default for HandlersToml {
    fn default() -> Self {
        let defaults = HandlerConfig::default();
        HandlersToml {
            retry: "exponential_jitter".to_owned(),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            max_attempts: defaults.max_attempts,
            on_error: "dead_letter".to_owned(),
            start_from: "checkpoint".to_owned(),
            checkpoint_every: defaults.checkpoint_every,
            page_size: defaults.page_size,
        }
    }
}

impl<'de> Deserialize<'de> for HandlerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let toml = HandlersToml::deserialize(deserializer)?;
        let (base, max) = (toml.retry_base, toml.retry_max);
        let retry = match toml.retry.as_str() {
            "immediate" => RetryStrategy::Immediate,
            "fixed" => RetryStrategy::Fixed(base),
            "exponential" => RetryStrategy::exponential(base, max),
            "exponential_jitter" => RetryStrategy::exponential_jitter(base, max),
            other => {
                return Err(D::Error::custom(format!(
                    "unknown retry `{other}`: use immediate, fixed, exponential or exponential_jitter"
                )));
            }
        };
        let on_error = match toml.on_error.as_str() {
            "dead_letter" => OnError::DeadLetter,
            "skip" => OnError::Skip,
            "stop" => OnError::Stop,
            other => {
                return Err(D::Error::custom(format!(
                    "unknown on_error `{other}`: use dead_letter, skip or stop"
                )));
            }
        };
        let start_from = match toml.start_from.as_str() {
            "checkpoint" => StartFrom::Checkpoint,
            "origin" => StartFrom::Origin,
            "current" => StartFrom::Current,
            other => {
                return Err(D::Error::custom(format!(
                    "unknown start_from `{other}`: use checkpoint, origin or current"
                )));
            }
        };
        Ok(HandlerConfig {
            retry,
            max_attempts: toml.max_attempts,
            on_error,
            start_from,
            checkpoint_every: toml.checkpoint_every,
            page_size: toml.page_size,
        })
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Millis(u64),
    Text(String),
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match DurationValue::deserialize(deserializer)? {
        DurationValue::Millis(millis) => Ok(Duration::from_millis(millis)),
        DurationValue::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(
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
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1 h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("ten seconds").is_err());
        assert!(parse_duration("10 fortnights").is_err());
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn toml_sets_every_section() {
        let config = Config::from_toml_str(
            r#"
            partitions = 8
            dispatch_timeout = 2000
            [aggregate_defaults]
            idle_timeout = "5m"
            hibernate_after = "never"
            snapshot_every = 10
            [memory_monitor]
            check_interval = "1s"
            elevated_threshold = 0.6
            critical_threshold = 0.9
            "#,
        )
        .unwrap();
        assert_eq!(config.partitions, 8);
        assert_eq!(config.dispatch_timeout, Duration::from_secs(2));
        assert_eq!(
            config.aggregate_defaults.idle_timeout,
            Duration::from_secs(300)
        );
        assert_eq!(config.aggregate_defaults.hibernate_after, None);
        assert_eq!(config.aggregate_defaults.snapshot_every, 10);
        assert_eq!(config.memory_monitor.critical_threshold, 0.9);
        assert!(config.validate().is_ok());
    }

    fn key_of(error: Error) -> String {
        match error {
            Error::Config { key, .. } => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let error =
            Config::from_toml_str("[aggregate_defaults]\nidle_timeout = \"soon\"").unwrap_err();
        assert!(error.to_string().contains("soon"), "{error}");
        assert_eq!(key_of(error), "aggregate_defaults.idle_timeout");
        let error = Config::from_toml_str("partitions = \"four\"").unwrap_err();
        assert_eq!(key_of(error), "partitions");
        let error =
            Config::from_toml_str("[memory_monitor]\ncheck_intervall = \"1s\"").unwrap_err();
        assert!(error.to_string().contains("check_intervall"), "{error}");
    }

    #[test]
    fn handler_defaults_read_from_toml() {
        let config = Config::from_toml_str(
            "[handlers]\nretry = \"fixed\"\nretry_base = \"1s\"\nmax_attempts = 2\non_error = \"skip\"",
        )
        .unwrap();
        assert_eq!(
            config.handlers.retry,
            RetryStrategy::Fixed(Duration::from_secs(1))
        );
        assert_eq!(config.handlers.max_attempts, 2);
        assert_eq!(config.handlers.on_error, OnError::Skip);
        assert_eq!(
            Config::from_toml_str("[handlers]").unwrap(),
            Config::default()
        );
        let error = Config::from_toml_str("[handlers]\non_error = \"explode\"").unwrap_err();
        assert!(error.to_string().contains("explode"), "{error}");
        assert_eq!(key_of(error), "handlers");
        let config = Config::from_toml_str("[handlers]\nmax_attempts = 0").unwrap();
        assert_eq!(
            key_of(config.validate().unwrap_err()),
            "handlers.max_attempts"
        );
    }

    #[test]
    fn invalid_values_are_rejected_with_the_key() {
        let config = Config::from_toml_str(
            "[memory_monitor]\nelevated_threshold = 0.9\ncritical_threshold = 0.8",
        )
        .unwrap();
        assert_eq!(
            key_of(config.validate().unwrap_err()),
            "memory_monitor.critical_threshold"
        );
        let config = Config::from_toml_str("partitions = 0").unwrap();
        assert_eq!(key_of(config.validate().unwrap_err()), "partitions");
        let config = Config::from_toml_str("store = \"cassandra\"").unwrap();
        assert_eq!(key_of(config.validate().unwrap_err()), "store");
    }
}
