//! Retry strategies, error policies, start positions and the options of one handler.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::util::backoff::{exponential, random_factor};
use crate::util::bounds::within;

/// How long to wait before the next attempt after a failed delivery.
///
/// Every strategy is bounded by a number of attempts ([`HandlerOptions::max_attempts`],
/// [`HandlerConfig::max_attempts`]): after the last one, the handler's [`OnError`] policy
/// applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryStrategy {
    /// Retry at once.
    Immediate,
    /// Wait the same time before every retry.
    Fixed(Duration),
    /// Wait `base * 2^(attempt - 1)`, at most `max`: 100 ms, 200 ms, 400 ms, ... for a base of
    /// 100 ms.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// [`Exponential`](Self::Exponential) times a random factor in `[0.5, 1.5]`, at most `max`:
    /// spreads the retries of many handlers failing together (the default, with a base of
    /// 100 ms and a max of 10 s).
    ExponentialJitter {
        /// The first delay (before the jitter).
        base: Duration,
        /// The longest delay.
        max: Duration,
    },
}

impl RetryStrategy {
    /// [`RetryStrategy::Immediate`].
    pub const fn immediate() -> Self {
        RetryStrategy::Immediate
    }

    /// [`RetryStrategy::Fixed`].
    pub const fn fixed(delay: Duration) -> Self {
        RetryStrategy::Fixed(delay)
    }

    /// [`RetryStrategy::Exponential`].
    pub const fn exponential(base: Duration, max: Duration) -> Self {
        RetryStrategy::Exponential { base, max }
    }

    /// [`RetryStrategy::ExponentialJitter`].
    pub const fn exponential_jitter(base: Duration, max: Duration) -> Self {
        RetryStrategy::ExponentialJitter { base, max }
    }

    /// The delay after failed attempt number `attempt` (from 1), before the next attempt.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evoq_runtime::RetryStrategy;
    ///
    /// let ms = Duration::from_millis;
    /// let strategy = RetryStrategy::exponential(ms(100), ms(1_000));
    /// let delays: Vec<_> = (1..=5).map(|attempt| strategy.delay(attempt)).collect();
    /// assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800), ms(1_000)]);
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with_factor(attempt, random_factor())
    }

    /// The delay after failed attempt `attempt`, with `factor` (clamped to `[0.5, 1.5]`) as
    /// the jitter of [`ExponentialJitter`](Self::ExponentialJitter); the other strategies
    /// ignore it. [`delay`](Self::delay) draws the factor at random.
    pub fn delay_with_factor(&self, attempt: u32, factor: f64) -> Duration {
        match *self {
            RetryStrategy::Immediate => Duration::ZERO,
            RetryStrategy::Fixed(delay) => delay,
            RetryStrategy::Exponential { base, max } => exponential(base, max, attempt),
            RetryStrategy::ExponentialJitter { base, max } => {
                let factor = if factor.is_nan() {
                    1.0
                } else {
                    factor.clamp(0.5, 1.5)
                };
                let delay = exponential(base, max, attempt);
                Duration::try_from_secs_f64(delay.as_secs_f64() * factor)
                    .unwrap_or(max)
                    .min(max)
            }
        }
    }

    /// Why the strategy cannot be used, if it cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        match *self {
            RetryStrategy::Exponential { base, max }
            | RetryStrategy::ExponentialJitter { base, max } => {
                if base.is_zero() {
                    Err("an exponential retry needs a base longer than zero (the default is 100 ms); use `RetryStrategy::Immediate` to retry at once".into())
                } else if max < base {
                    Err(format!(
                        "an exponential retry's max ({max:?}) must not be below its base ({base:?})"
                    ))
                } else {
                    Ok(())
                }
            }
            RetryStrategy::Immediate | RetryStrategy::Fixed(_) => Ok(()),
        }
    }
}

/// What a handler does with an event once every attempt has failed. In a configuration file:
/// `dead_letter`, `skip` or `stop`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Store the event in the dead-letter store and go on with the next event (default).
    #[default]
    DeadLetter,
    /// Log the failure and go on with the next event: no dead letter; the checkpoint moves on.
    Skip,
    /// Stop the handler: its checkpoint stays before the event, which is delivered again when
    /// the runtime restarts. Consistency waits on a stopped handler fail at once.
    Stop,
}

/// Where a handler starts reading the global order when the runtime starts. In a
/// configuration file: `checkpoint`, `origin` or `current`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// After its saved checkpoint, or from the first event when it has none (default).
    #[default]
    Checkpoint,
    /// From the first event, whatever its checkpoint (every event is delivered again).
    Origin,
    /// From the current end of the store, whatever its checkpoint: only events stored from
    /// now on.
    Current,
}

/// The options of one event handler. Each one left unset falls back to the option given in
/// the handler's attribute, then to the runtime's [`HandlerConfig`].
///
/// ```
/// use std::time::Duration;
/// use evoq_runtime::{HandlerOptions, OnError, RetryStrategy};
///
/// let options = HandlerOptions::new()
///     .retry(RetryStrategy::fixed(Duration::from_secs(1)))
///     .max_attempts(3)
///     .on_error(OnError::Skip)
///     .strong(true);
/// assert_eq!(options.max_attempts, Some(3));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandlerOptions {
    /// The name to run the handler under (see [`HandlerOptions::name`]).
    pub name: Option<Cow<'static, str>>,
    /// The retry strategy.
    pub retry: Option<RetryStrategy>,
    /// Attempts in all, first delivery included.
    pub max_attempts: Option<u32>,
    /// What to do once every attempt failed.
    pub on_error: Option<OnError>,
    /// Whether `Consistency::Strong` dispatches wait for the handler.
    pub strong: Option<bool>,
    /// Where to start reading when the runtime starts.
    pub start_from: Option<StartFrom>,
}

impl HandlerOptions {
    /// No option set.
    pub const fn new() -> Self {
        HandlerOptions {
            name: None,
            retry: None,
            max_attempts: None,
            on_error: None,
            strong: None,
            start_from: None,
        }
    }

    /// Runs the handler under another name (its checkpoint and dead letters follow the name):
    /// to run one handler type twice, or to rename it without losing its checkpoint.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The retry strategy.
    pub const fn retry(mut self, retry: RetryStrategy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The number of attempts in all, first delivery included (at least 1; 1 = no retry).
    pub const fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// What to do once every attempt failed.
    pub const fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = Some(on_error);
        self
    }

    /// Whether `Consistency::Strong` dispatches wait for this handler.
    pub const fn strong(mut self, strong: bool) -> Self {
        self.strong = Some(strong);
        self
    }

    /// Where to start reading when the runtime starts.
    pub const fn start_from(mut self, start_from: StartFrom) -> Self {
        self.start_from = Some(start_from);
        self
    }

    /// The name a handler runs under: this name, else `fallback`'s (its attribute's), else
    /// `default_name` (its type's).
    pub(crate) fn name_over<'a>(
        &'a self,
        fallback: &'a HandlerOptions,
        default_name: &'a str,
    ) -> &'a str {
        self.name
            .as_deref()
            .or(fallback.name.as_deref())
            .unwrap_or(default_name)
    }

    /// These options over `fallback`'s (each unset option taken from `fallback`), over the
    /// runtime's `defaults`.
    pub(crate) fn resolve(
        &self,
        fallback: &HandlerOptions,
        default_name: &'static str,
        defaults: &HandlerConfig,
    ) -> Resolved {
        let name: Arc<str> = Arc::from(self.name_over(fallback, default_name));
        Resolved {
            name,
            retry: self.retry.or(fallback.retry).unwrap_or(defaults.retry),
            max_attempts: self
                .max_attempts
                .or(fallback.max_attempts)
                .unwrap_or(defaults.max_attempts),
            on_error: self
                .on_error
                .or(fallback.on_error)
                .unwrap_or(defaults.on_error),
            strong: self.strong.or(fallback.strong).unwrap_or(false),
            start_from: self
                .start_from
                .or(fallback.start_from)
                .unwrap_or(defaults.start_from),
        }
    }
}

/// The options of one handler, every one decided.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) name: Arc<str>,
    pub(crate) retry: RetryStrategy,
    pub(crate) max_attempts: u32,
    pub(crate) on_error: OnError,
    pub(crate) strong: bool,
    pub(crate) start_from: StartFrom,
}

impl Resolved {
    /// Why the options cannot be used, naming the handler.
    pub(crate) fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if name.trim().is_empty() {
            return Err("an event handler's name cannot be empty".into());
        }
        if self.max_attempts == 0 {
            return Err(format!(
                "handler `{name}`: `max_attempts` must be at least 1 (1 = no retry; the default is 6)"
            ));
        }
        self.retry
            .check()
            .map_err(|reason| format!("handler `{name}`: {reason}"))
    }
}

/// The runtime's defaults for every event handler (`Config::handlers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerConfig {
    /// The retry strategy (default: exponential with jitter, base 100 ms, max 10 s).
    pub retry: RetryStrategy,
    /// Attempts in all, first delivery included (default 6).
    pub max_attempts: u32,
    /// What to do once every attempt failed (default: dead-letter).
    pub on_error: OnError,
    /// Where handlers start (default: their checkpoint, else the first event).
    pub start_from: StartFrom,
    /// A handler saves its checkpoint at least every this many events while it is busy, and
    /// whenever it has caught up with the store (default 100, at least 1). After a crash, at
    /// most this many events are delivered again (delivery is at least once).
    pub checkpoint_every: u64,
    /// Events read from the store per page (default 1,000, at least 1).
    pub page_size: usize,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            retry: RetryStrategy::exponential_jitter(
                Duration::from_millis(100),
                Duration::from_secs(10),
            ),
            max_attempts: 6,
            on_error: OnError::DeadLetter,
            start_from: StartFrom::Checkpoint,
            checkpoint_every: 100,
            page_size: 1_000,
        }
    }
}

impl HandlerConfig {
    /// Checks every value: the key and what to set instead.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_attempts == 0 {
            return Err((
                "handlers.max_attempts",
                "must be at least 1 (1 = no retry; the default is 6)".into(),
            ));
        }
        if self.checkpoint_every == 0 {
            return Err((
                "handlers.checkpoint_every",
                "must be at least 1 (the default is 100)".into(),
            ));
        }
        if self.page_size == 0 {
            return Err((
                "handlers.page_size",
                "must be at least 1 (the default is 1000)".into(),
            ));
        }
        within(self.max_attempts, 1, 1_000, "the default is 6")
            .map_err(|reason| ("handlers.max_attempts", reason))?;
        within(self.checkpoint_every, 1, 1_000_000, "the default is 100")
            .map_err(|reason| ("handlers.checkpoint_every", reason))?;
        within(
            self.page_size,
            1,
            100_000,
            "each page is held in memory; the default is 1000",
        )
        .map_err(|reason| ("handlers.page_size", reason))?;
        self.retry.check().map_err(|reason| {
            // Only an exponential retry is checked: a zero base, or a max below the base.
            let key = match self.retry {
                RetryStrategy::Exponential { base, .. }
                | RetryStrategy::ExponentialJitter { base, .. }
                    if base.is_zero() =>
                {
                    "handlers.retry_base"
                }
                _ => "handlers.retry_max",
            };
            (key, reason)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn immediate_waits_nothing() {
        for attempt in [1, 2, 6, u32::MAX] {
            assert_eq!(RetryStrategy::immediate().delay(attempt), Duration::ZERO);
        }
    }

    #[test]
    fn fixed_waits_the_same_every_time() {
        let strategy = RetryStrategy::fixed(Duration::from_secs(1));
        for attempt in [1, 2, 6, u32::MAX] {
            assert_eq!(strategy.delay(attempt), Duration::from_secs(1));
        }
    }

    #[test]
    fn exponential_doubles_from_the_base_and_caps_at_the_max() {
        let strategy = RetryStrategy::exponential(ms(100), Duration::from_secs(10));
        let delays: Vec<Duration> = (1..=9).map(|attempt| strategy.delay(attempt)).collect();
        assert_eq!(
            delays,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1_600),
                ms(3_200),
                ms(6_400),
                ms(10_000),
                ms(10_000)
            ]
        );
        for attempt in [30, 63, 64, 65, 1_000, u32::MAX] {
            assert_eq!(strategy.delay(attempt), ms(10_000), "attempt {attempt}");
        }
        // Attempt 0 is treated as the first.
        assert_eq!(strategy.delay(0), ms(100));
        // Huge bases and maxima do not overflow.
        let huge = RetryStrategy::exponential(Duration::MAX / 2, Duration::MAX);
        assert_eq!(huge.delay(3), Duration::MAX);
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half_and_under_the_cap() {
        let max = Duration::from_secs(10);
        let strategy = RetryStrategy::exponential_jitter(ms(100), max);
        let plain = RetryStrategy::exponential(ms(100), max);
        let mut spread = (Duration::MAX, Duration::ZERO);
        for attempt in 1..=12 {
            let base = plain.delay(attempt);
            for _ in 0..500 {
                let delay = strategy.delay(attempt);
                assert!(
                    delay >= base.mul_f64(0.5) && delay <= base.mul_f64(1.5),
                    "attempt {attempt}: {delay:?} is not within [0.5, 1.5] of {base:?}"
                );
                assert!(
                    delay <= max,
                    "attempt {attempt}: {delay:?} is above the cap"
                );
                if attempt == 1 {
                    spread = (spread.0.min(delay), spread.1.max(delay));
                }
            }
        }
        assert!(
            spread.0 < ms(70) && spread.1 > ms(130),
            "the jitter is random: {spread:?}"
        );
        assert_eq!(strategy.delay_with_factor(1, 0.5), ms(50));
        assert_eq!(strategy.delay_with_factor(1, 1.5), ms(150));
        assert_eq!(strategy.delay_with_factor(1, 9.0), ms(150), "clamped");
        assert_eq!(strategy.delay_with_factor(1, f64::NAN), ms(100));
        assert_eq!(strategy.delay_with_factor(8, 1.5), max, "capped");
    }

    #[test]
    fn options_fall_back_to_the_attribute_then_to_the_defaults() {
        let defaults = HandlerConfig::default();
        let attribute = HandlerOptions::new().max_attempts(3).strong(true);
        let builder = HandlerOptions::new()
            .max_attempts(2)
            .on_error(OnError::Skip)
            .name("renamed");
        let resolved = builder.resolve(&attribute, "notifier", &defaults);
        assert_eq!(&*resolved.name, "renamed");
        assert_eq!(resolved.max_attempts, 2);
        assert_eq!(resolved.on_error, OnError::Skip);
        assert!(resolved.strong);
        assert_eq!(resolved.retry, defaults.retry);
        let plain = HandlerOptions::new().resolve(&HandlerOptions::new(), "notifier", &defaults);
        assert_eq!(&*plain.name, "notifier");
        assert_eq!(plain.max_attempts, 6);
        assert!(!plain.strong);
        assert!(plain.check().is_ok());
        let broken = HandlerOptions::new()
            .max_attempts(0)
            .resolve(&attribute, "n", &defaults);
        assert!(broken.check().unwrap_err().contains("max_attempts"));
        assert!(
            RetryStrategy::exponential(ms(10), ms(5))
                .check()
                .unwrap_err()
                .contains("must not be below")
        );
    }
}

/// The TOML form of [`HandlerConfig`].
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HandlersToml {
    retry: RetryName,
    #[serde(deserialize_with = "crate::util::duration::deserialize")]
    retry_base: Duration,
    #[serde(deserialize_with = "crate::util::duration::deserialize")]
    retry_max: Duration,
    max_attempts: u32,
    on_error: OnError,
    start_from: StartFrom,
    checkpoint_every: u64,
    page_size: usize,
}

/// The strategy named by `retry` (its durations are keys of their own).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RetryName {
    Immediate,
    Fixed,
    Exponential,
    ExponentialJitter,
}

impl Default for HandlersToml {
    fn default() -> Self {
        let defaults = HandlerConfig::default();
        HandlersToml {
            retry: RetryName::ExponentialJitter,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            max_attempts: defaults.max_attempts,
            on_error: defaults.on_error,
            start_from: defaults.start_from,
            checkpoint_every: defaults.checkpoint_every,
            page_size: defaults.page_size,
        }
    }
}

impl<'de> Deserialize<'de> for HandlerConfig {
    /// Each name is read under its own key (`handlers.on_error`, ...), so that an unknown one
    /// is reported there.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let toml = HandlersToml::deserialize(deserializer)?;
        let (base, max) = (toml.retry_base, toml.retry_max);
        let retry = match toml.retry {
            RetryName::Immediate => RetryStrategy::Immediate,
            RetryName::Fixed => RetryStrategy::Fixed(base),
            RetryName::Exponential => RetryStrategy::exponential(base, max),
            RetryName::ExponentialJitter => RetryStrategy::exponential_jitter(base, max),
        };
        Ok(HandlerConfig {
            retry,
            max_attempts: toml.max_attempts,
            on_error: toml.on_error,
            start_from: toml.start_from,
            checkpoint_every: toml.checkpoint_every,
            page_size: toml.page_size,
        })
    }
}
