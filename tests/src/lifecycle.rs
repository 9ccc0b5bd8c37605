//! What the tests of the aggregate lifecycle share: a counter aggregate declared in one line
//! (each declaration has its own commands, event and `#[aggregate(...)]` arguments, so that each
//! test's lifecycle settings are its own), a memory probe the test drives, and a poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use evoq::MemoryProbe;

/// A memory probe that reports what the test [`set`](Self::set).
#[derive(Clone, Default)]
pub struct DrivenProbe(Arc<AtomicU64>);

impl DrivenProbe {
    /// Reports `used` (a fraction of the memory) from now on.
    pub fn set(&self, used: f64) {
        self.0.store(used.to_bits(), Ordering::SeqCst);
    }
}

impl MemoryProbe for DrivenProbe {
    fn used_fraction(&self) -> Option<f64> {
        Some(f64::from_bits(self.0.load(Ordering::SeqCst)))
    }
}

/// Polls `condition` every 5 ms until it holds or `limit` passes; returns how long it took.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// `counter!(State, Ping, Touch, Fail, Pinged, [aggregate arguments])`: the aggregate `State`
/// (a count) and its commands `Ping` (one `Pinged` event), `Touch` (no event) and `Fail` (a
/// refusal). The caller's scope provides `Serialize`, `Deserialize`, evoq's prelude and a
/// `Refused` error type.
#[macro_export]
macro_rules! counter {
    ($state:ident, $ping:ident, $touch:ident, $fail:ident, $event:ident, [$($args:tt)*]) => {
        #[derive(Default, Debug, Serialize, Deserialize)]
        struct $state {
            count: u64,
        }
        #[derive(Command, Debug)]
        struct $ping {
            #[aggregate_id]
            id: String,
        }
        #[derive(Command, Debug)]
        struct $touch {
            #[aggregate_id]
            id: String,
        }
        #[derive(Command, Debug)]
        struct $fail {
            #[aggregate_id]
            id: String,
        }
        #[derive(Event, Serialize, Deserialize, Clone, Debug)]
        struct $event {
            count: u64,
        }
        #[aggregate($($args)*)]
        impl $state {
            #[handles]
            fn ping(&self, _: &$ping) -> Result<$event, Refused> {
                Ok($event { count: self.count + 1 })
            }
            #[handles]
            fn touch(&self, _: &$touch) -> Result<(), Refused> {
                Ok(())
            }
            #[handles]
            fn fail(&self, _: &$fail) -> Result<(), Refused> {
                Err(Refused)
            }
            #[apply]
            fn pinged(&mut self, event: &$event) {
                self.count = event.count;
            }
        }
    };
}
