//! The memory monitor: reads how much of the system's memory is used and turns it into a
//! pressure level whose factor scales every aggregate idle timeout set from then on.
//!
//! | used fraction | level | TTL factor |
//! |---|---|---|
//! | below `elevated_threshold` (0.70) | normal | 1.0 |
//! | from `elevated_threshold` | elevated | 0.5 |
//! | from `critical_threshold` (0.85) | critical | 0.1 |
//!
//! It checks every `check_interval` (10 s by default) and emits telemetry only when the level
//! changes (`evoq.memory.pressure`, `evoq.memory.ttl_adjusted`). The probe is pluggable
//! ([`MemoryProbe`]): [`SystemMemory`] reads the system with `sysinfo`; tests drive their own.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde::Deserialize;

use crate::util::bounds::within;
use crate::util::panic::panic_message;

/// Settings of the memory monitor.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryMonitorConfig {
    /// Whether the monitor runs (default true).
    pub enabled: bool,
    /// How often it reads memory use (default 10 s).
    #[serde(deserialize_with = "crate::util::duration::deserialize")]
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

impl MemoryMonitorConfig {
    /// Checks every value: the key (with its section) and what to set instead.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.check_interval.is_zero() {
            return Err((
                "memory_monitor.check_interval",
                "must be longer than zero (the default is 10 s)".to_owned(),
            ));
        }
        within(
            self.check_interval,
            Duration::ZERO,
            Duration::from_secs(3_600),
            "the default is 10 s",
        )
        .map_err(|reason| ("memory_monitor.check_interval", reason))?;
        for (key, value) in [
            ("memory_monitor.elevated_threshold", self.elevated_threshold),
            ("memory_monitor.critical_threshold", self.critical_threshold),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                return Err((
                    key,
                    format!("must be a fraction above 0 and at most 1, got {value}"),
                ));
            }
        }
        if self.critical_threshold <= self.elevated_threshold {
            return Err((
                "memory_monitor.critical_threshold",
                format!(
                    "must be above memory_monitor.elevated_threshold ({}), got {}",
                    self.elevated_threshold, self.critical_threshold
                ),
            ));
        }
        Ok(())
    }
}

/// Where the monitor reads memory use from.
pub trait MemoryProbe: Send + Sync + 'static {
    /// The fraction of memory in use, from 0.0 to 1.0; `None` when it cannot be read (the
    /// level then stays as it is, as it does when the probe panics).
    fn used_fraction(&self) -> Option<f64>;
}

/// Reads the system's memory with `sysinfo`: used = 1 - available / total.
pub struct SystemMemory {
    /// `None` when this platform's memory cannot be read.
    system: Option<Mutex<sysinfo::System>>,
}

impl SystemMemory {
    /// A probe of this machine's memory.
    pub fn new() -> Self {
        SystemMemory {
            system: sysinfo::System::new().ok().map(Mutex::new),
        }
    }
}

impl Default for SystemMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SystemMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemMemory")
    }
}

impl MemoryProbe for SystemMemory {
    fn used_fraction(&self) -> Option<f64> {
        let mut system = self
            .system
            .as_ref()?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        system.refresh_memory();
        let total = system.total_memory();
        if total == 0 {
            return None;
        }
        let available = system.available_memory().min(total);
        Some(1.0 - available as f64 / total as f64)
    }
}

/// A memory pressure level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PressureLevel {
    /// Below the elevated threshold: idle timeouts as configured.
    Normal,
    /// From the elevated threshold: idle timeouts halved.
    Elevated,
    /// From the critical threshold: idle timeouts at a tenth.
    Critical,
}

impl PressureLevel {
    /// The factor applied to idle timeouts at this level.
    pub fn ttl_factor(self) -> f64 {
        match self {
            PressureLevel::Normal => 1.0,
            PressureLevel::Elevated => 0.5,
            PressureLevel::Critical => 0.1,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            2 => PressureLevel::Critical,
            1 => PressureLevel::Elevated,
            _ => PressureLevel::Normal,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PressureLevel::Normal => "normal",
            PressureLevel::Elevated => "elevated",
            PressureLevel::Critical => "critical",
        }
    }
}

impl fmt::Display for PressureLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The monitor: the current level, and the probe it reads.
pub struct MemoryMonitor {
    probe: Arc<dyn MemoryProbe>,
    config: MemoryMonitorConfig,
    level: AtomicU8,
}

impl MemoryMonitor {
    pub(crate) fn new(probe: Arc<dyn MemoryProbe>, config: MemoryMonitorConfig) -> Self {
        MemoryMonitor {
            probe,
            config,
            level: AtomicU8::new(PressureLevel::Normal as u8),
        }
    }

    /// The current level.
    pub fn level(&self) -> PressureLevel {
        PressureLevel::from_u8(self.level.load(Ordering::Relaxed))
    }

    /// The factor applied to idle timeouts set now.
    pub fn ttl_factor(&self) -> f64 {
        if self.config.enabled {
            self.level().ttl_factor()
        } else {
            1.0
        }
    }

    /// The level a used fraction maps to.
    pub fn level_for(&self, used: f64) -> PressureLevel {
        if used >= self.config.critical_threshold {
            PressureLevel::Critical
        } else if used >= self.config.elevated_threshold {
            PressureLevel::Elevated
        } else {
            PressureLevel::Normal
        }
    }

    /// Reads the probe now and updates the level (what the periodic check does). A probe that
    /// panics is a read that failed: the level stays as it is (logged, `evoq.memory.probe`).
    pub fn check_now(&self) -> PressureLevel {
        let read = std::panic::catch_unwind(AssertUnwindSafe(|| self.probe.used_fraction()));
        let used = match read {
            Ok(Some(used)) => used,
            Ok(None) => return self.level(),
            Err(panic) => {
                tracing::warn!(
                    name: "evoq.memory.probe",
                    stage = "exception",
                    error = %panic_message(&*panic),
                    "evoq.memory.probe",
                );
                return self.level();
            }
        };
        let level = self.level_for(used);
        let previous = PressureLevel::from_u8(self.level.swap(level as u8, Ordering::Relaxed));
        if previous != level {
            tracing::info!(
                name: "evoq.memory.pressure",
                level = level.as_str(),
                previous = previous.as_str(),
                used_fraction = used,
                "evoq.memory.pressure",
            );
            tracing::info!(
                name: "evoq.memory.ttl_adjusted",
                factor = level.ttl_factor(),
                previous_factor = previous.ttl_factor(),
                "evoq.memory.ttl_adjusted",
            );
        }
        level
    }

    /// Checks every `check_interval` until the monitor is dropped.
    pub(crate) fn spawn_checks(monitor: &Arc<MemoryMonitor>) {
        if !monitor.config.enabled {
            return;
        }
        let weak: Weak<MemoryMonitor> = Arc::downgrade(monitor);
        let interval = monitor.config.check_interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(monitor) = weak.upgrade() else {
                    return;
                };
                monitor.check_now();
            }
        });
    }
}

impl fmt::Debug for MemoryMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryMonitor")
            .field("level", &self.level())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
