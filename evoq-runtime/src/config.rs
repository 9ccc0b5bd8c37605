//! The runtime's configuration: a typed struct with the defaults of docs/semantics.md, which
//! also deserializes from TOML with the keys of the Erlang evoq's `sys.config`. It composes the
//! settings each part of the runtime owns (with their TOML forms and checks):
//! [`AggregateDefaults`], [`MemoryMonitorConfig`] and [`HandlerConfig`].
//!
//! ```toml
//! store = "memory"
//! store_id = "default"           # names this store instance in telemetry
//! partitions = 4                 # aggregate_partitions
//! dispatch_timeout = "5s"
//! conflict_retries = 10
//! idempotency_ttl = "1h"
//! idempotency_capacity = 100000
//! command_log_retention = "7d"
//! command_log_sweep_interval = "1h"
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
//! (zero partitions, a critical threshold below the elevated one, ...) and values outside a sane
//! range (more than 1,024 partitions, a dispatch timeout over a day, ...) with an error naming
//! the key; the builder validates before it starts anything.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use crate::aggregate::lifespan::AggregateDefaults;
pub use crate::delivery::policy::HandlerConfig;
pub use crate::host::memory_monitor::MemoryMonitorConfig;
pub use crate::util::duration::parse_duration;

use crate::error::Error;
use crate::util::bounds::within;

/// A day, in seconds.
const DAY: u64 = 24 * 3_600;

/// Checks a store id: 1 to 64 ASCII letters, digits, `_`, `-` or `.`.
fn check_store_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a store id: use 1 to 64 letters, digits, `_`, `-` or `.` (the default is `default`)"
        ))
    }
}

/// The most partitions a runtime may have: each holds a registry per aggregate type (with its
/// sharded map and idle timers), allocated on first use, so a larger number only costs memory
/// and start-up time (a million made the first dispatch take seconds).
pub const MAX_PARTITIONS: usize = 1_024;

/// Runtime settings, with their defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The event store (`"memory"`; the durable stores are given to the builder directly).
    pub store: String,
    /// The name of this store instance, in telemetry (`evoq.runtime.start` and `.stop`) and in
    /// what operators read (default `default`; 1 to 64 letters, digits, `_`, `-`, `.`).
    pub store_id: String,
    /// Number of partition registries (default 4, at least 1, at most [`MAX_PARTITIONS`]).
    pub partitions: usize,
    /// Default time a dispatch may take (default 5 s).
    #[serde(deserialize_with = "crate::util::duration::deserialize")]
    pub dispatch_timeout: Duration,
    /// Default number of re-runs after a version conflict (default 10).
    pub conflict_retries: u32,
    /// How long a successful dispatch's result answers duplicates of its idempotency key or
    /// command id (default 1 h).
    #[serde(deserialize_with = "crate::util::duration::deserialize")]
    pub idempotency_ttl: Duration,
    /// How many results the idempotency cache keeps at most; the oldest go first (default
    /// 100,000, at least 1).
    pub idempotency_capacity: usize,
    /// How long the store's command log answers a resent command id or idempotency key with
    /// the first result (default 7 days). Older entries count as absent (the command runs
    /// again) and are swept. The idempotency cache never answers for longer than this either.
    #[serde(deserialize_with = "crate::util::duration::deserialize")]
    pub command_log_retention: Duration,
    /// How often the command log's expired entries are swept, in bounded batches (default
    /// 1 h).
    #[serde(deserialize_with = "crate::util::duration::deserialize")]
    pub command_log_sweep_interval: Duration,
    /// Lifecycle defaults of every aggregate type (overridden by `#[aggregate(...)]`).
    pub aggregate_defaults: AggregateDefaults,
    /// How often hibernated instances are checked for passivation (default 1 s).
    #[serde(deserialize_with = "crate::util::duration::deserialize")]
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
            store_id: "default".to_owned(),
            partitions: 4,
            dispatch_timeout: Duration::from_secs(5),
            conflict_retries: 10,
            idempotency_ttl: Duration::from_secs(3_600),
            idempotency_capacity: 100_000,
            command_log_retention: Duration::from_secs(7 * 24 * 3_600),
            command_log_sweep_interval: Duration::from_secs(3_600),
            aggregate_defaults: AggregateDefaults::default(),
            hibernation_sweep_interval: Duration::from_secs(1),
            memory_monitor: MemoryMonitorConfig::default(),
            handlers: HandlerConfig::default(),
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
        if self.partitions > MAX_PARTITIONS {
            return invalid(
                "partitions",
                format!(
                    "must be at most {MAX_PARTITIONS} (it is {}): each partition holds a registry per aggregate type, so more only costs memory; the default is 4, and one or two per core is plenty",
                    self.partitions
                ),
            );
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
        if self.command_log_retention.is_zero() {
            return invalid(
                "command_log_retention",
                "must be longer than zero (the default is 7 days)",
            );
        }
        if self.command_log_sweep_interval.is_zero() {
            return invalid(
                "command_log_sweep_interval",
                "must be longer than zero (the default is 1 h)",
            );
        }
        if let Err(reason) = check_store_id(&self.store_id) {
            return invalid("store_id", reason);
        }
        // Upper bounds: a value past them is a typo, not a setting (the lower ones are above).
        let (ms, day) = (Duration::from_millis(1), Duration::from_secs(DAY));
        let bounds = [
            (
                "dispatch_timeout",
                within(self.dispatch_timeout, ms, day, "the default is 5 s"),
            ),
            (
                "conflict_retries",
                within(self.conflict_retries, 0, 1_000, "the default is 10"),
            ),
            (
                "idempotency_ttl",
                within(self.idempotency_ttl, ms, 365 * day, "the default is 1 h"),
            ),
            (
                "idempotency_capacity",
                within(
                    self.idempotency_capacity,
                    1,
                    10_000_000,
                    "each entry keeps a result in memory; the default is 100000",
                ),
            ),
            (
                "command_log_retention",
                within(
                    self.command_log_retention,
                    ms,
                    10 * 365 * day,
                    "the default is 7 days",
                ),
            ),
            (
                "command_log_sweep_interval",
                within(
                    self.command_log_sweep_interval,
                    ms,
                    day,
                    "the default is 1 h",
                ),
            ),
            (
                "hibernation_sweep_interval",
                within(
                    self.hibernation_sweep_interval,
                    ms,
                    Duration::from_secs(3_600),
                    "the default is 1 s",
                ),
            ),
        ];
        for (key, bound) in bounds {
            bound.or_else(|reason| invalid(key, reason))?;
        }
        // Each section checks itself, naming its keys; the order is the order of the keys.
        if let Err((key, reason)) = self.aggregate_defaults.check() {
            return invalid(key, reason);
        }
        if self.hibernation_sweep_interval.is_zero() {
            return invalid(
                "hibernation_sweep_interval",
                "must be longer than zero (the default is 1 s)",
            );
        }
        for section in [self.memory_monitor.check(), self.handlers.check()] {
            if let Err((key, reason)) = section {
                return invalid(key, reason);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::policy::{OnError, RetryStrategy};

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
            command_log_retention = "7d"
            command_log_sweep_interval = "10m"
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
            config.command_log_retention,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(config.command_log_sweep_interval, Duration::from_secs(600));
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
        assert_eq!(key_of(error), "handlers.on_error");
        for (toml, key) in [
            ("retry = \"sometimes\"", "handlers.retry"),
            ("start_from = \"middle\"", "handlers.start_from"),
        ] {
            let error = Config::from_toml_str(&format!("[handlers]\n{toml}")).unwrap_err();
            assert_eq!(key_of(error), key);
        }
        for (toml, key) in [
            (
                "retry = \"exponential\"\nretry_base = \"0s\"",
                "handlers.retry_base",
            ),
            (
                "retry = \"exponential\"\nretry_base = \"20s\"\nretry_max = \"1s\"",
                "handlers.retry_max",
            ),
        ] {
            let config = Config::from_toml_str(&format!("[handlers]\n{toml}")).unwrap();
            assert_eq!(key_of(config.validate().unwrap_err()), key, "{toml}");
        }
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
        for too_many in [MAX_PARTITIONS + 1, 100_000_000] {
            let config = Config {
                partitions: too_many,
                ..Config::default()
            };
            let error = config.validate().unwrap_err();
            assert!(error.to_string().contains("at most 1024"), "{error}");
            assert_eq!(key_of(error), "partitions");
        }
        let config = Config {
            partitions: MAX_PARTITIONS,
            ..Config::default()
        };
        assert!(config.validate().is_ok());
        let config = Config::from_toml_str("command_log_retention = 0").unwrap();
        assert_eq!(
            key_of(config.validate().unwrap_err()),
            "command_log_retention"
        );
        let config = Config::from_toml_str("store = \"cassandra\"").unwrap();
        assert_eq!(key_of(config.validate().unwrap_err()), "store");
    }

    #[test]
    fn the_store_id_is_accepted_from_toml_and_checked() {
        let config = Config::from_toml_str("store_id = \"orders-eu.1\"").unwrap();
        assert_eq!(config.store_id, "orders-eu.1");
        assert!(config.validate().is_ok());
        assert_eq!(Config::default().store_id, "default");
        for bad in ["", "has space", &"x".repeat(65)] {
            let config = Config {
                store_id: bad.to_owned(),
                ..Config::default()
            };
            match config.validate() {
                Err(Error::Config { key, reason }) => {
                    assert_eq!(key, "store_id");
                    assert!(reason.contains("not a store id"), "{reason}");
                }
                other => panic!("`{bad}`: {other:?}"),
            }
        }
    }

    #[test]
    fn sizes_and_durations_past_their_sane_range_are_refused_naming_the_key() {
        let cases = [
            ("idempotency_capacity = 100000000", "idempotency_capacity"),
            ("dispatch_timeout = \"2d\"", "dispatch_timeout"),
            ("conflict_retries = 5000", "conflict_retries"),
            (
                "hibernation_sweep_interval = \"2h\"",
                "hibernation_sweep_interval",
            ),
            ("[handlers]\npage_size = 1000000", "handlers.page_size"),
            ("[handlers]\nmax_attempts = 100000", "handlers.max_attempts"),
            (
                "[aggregate_defaults]\nsnapshot_every = 100000000",
                "aggregate_defaults.snapshot_every",
            ),
            (
                "[memory_monitor]\ncheck_interval = \"2h\"",
                "memory_monitor.check_interval",
            ),
        ];
        for (toml, expected) in cases {
            let config = Config::from_toml_str(toml).unwrap();
            match config.validate() {
                Err(Error::Config { key, reason }) => {
                    assert_eq!(key, expected, "{toml}");
                    assert!(reason.contains("must be at most"), "{toml}: {reason}");
                }
                other => panic!("{toml}: {other:?}"),
            }
        }
    }
}
