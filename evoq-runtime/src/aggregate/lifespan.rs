//! How long an idle aggregate instance stays in memory, and what happens when it times out.
//!
//! After every command the actor asks the aggregate's [`Lifespan`] for the next idle timeout:
//! [`after_event`](Lifespan::after_event) for each event the command produced (the last one
//! decides), [`after_command`](Lifespan::after_command) when it produced none, and
//! [`after_error`](Lifespan::after_error) when it failed. When the timeout passes with no new
//! command, [`on_timeout`](Lifespan::on_timeout) chooses what to do. Every duration is scaled
//! by the memory monitor's factor (1.0, 0.5 or 0.1) when the timer is set.
//!
//! The defaults: the configured idle timeout (30 minutes unless `#[aggregate(idle_timeout =
//! "...")]` or the app configuration say otherwise) after success, 5 minutes after an error, and
//! snapshot-then-passivate on timeout.

use std::time::Duration;

use serde::Deserialize;

use crate::util::bounds::within;

pub use super::definition::{DEFAULT_AFTER_ERROR, DefaultLifespan, Idle, Lifespan, OnTimeout};

/// Lifecycle defaults of every aggregate type.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateDefaults {
    /// Idle time after which an instance times out (default 30 min).
    #[serde(deserialize_with = "crate::util::duration::deserialize")]
    pub idle_timeout: Duration,
    /// Idle time after which an instance hibernates, before its idle timeout (default 1 min,
    /// `"never"` in TOML: never; absent from the TOML: the default).
    #[serde(deserialize_with = "crate::util::duration::deserialize_optional")]
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

impl AggregateDefaults {
    /// Checks every value: the key (with its section) and what to set instead.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.idle_timeout.is_zero() {
            return Err((
                "aggregate_defaults.idle_timeout",
                "must be longer than zero (the default is 30 min)".to_owned(),
            ));
        }
        if self.hibernate_after.is_some_and(|after| after.is_zero()) {
            return Err((
                "aggregate_defaults.hibernate_after",
                "must be longer than zero, or \"never\" (the default is 1 min)".to_owned(),
            ));
        }
        if self.snapshot_every == 0 {
            return Err((
                "aggregate_defaults.snapshot_every",
                "must be at least 1 (the default is 100)".to_owned(),
            ));
        }
        let year = Duration::from_secs(365 * 24 * 3_600);
        within(
            self.idle_timeout,
            Duration::ZERO,
            year,
            "the default is 30 min",
        )
        .map_err(|reason| ("aggregate_defaults.idle_timeout", reason))?;
        if let Some(after) = self.hibernate_after {
            within(after, Duration::ZERO, year, "the default is 1 min")
                .map_err(|reason| ("aggregate_defaults.hibernate_after", reason))?;
        }
        within(self.snapshot_every, 1, 10_000_000, "the default is 100")
            .map_err(|reason| ("aggregate_defaults.snapshot_every", reason))?;
        Ok(())
    }
}
