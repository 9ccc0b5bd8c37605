//! The workload's read side for evoq: an `#[event_handler]` that counts `MoneyDeposited` per
//! account.
//!
//! Everything the benchmark knows of it is [`start`] (register it on the builder) and
//! [`ReadSide::wait_for`] (wait until it has processed a position), plus the totals. Until event
//! handlers were on main it was a task reading an `evoq::store::Subscription` filtered on
//! `MoneyDeposited`; switching to the handler changed this module only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use evoq::prelude::*;
use evoq::{EventMeta, EvoqBuilder};

use crate::bank::MoneyDeposited;

/// The handler's name.
pub const NAME: &str = "deposit_counter";

/// Deposits per stream (one stream per account), shared with the benchmark. Keyed by the
/// envelope's stream id, which the records of a stream share (as the floor keys its counts by
/// its actors' stream ids): a new account costs no copy of its id.
type Counts = Arc<Mutex<HashMap<Arc<str>, u64>>>;

/// The handler never fails.
#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

/// Counts the deposits of each account.
#[derive(Default)]
pub struct DepositCounter {
    counts: Counts,
}

#[event_handler(name = "deposit_counter")]
impl DepositCounter {
    #[handles]
    async fn deposited(&mut self, _: &MoneyDeposited, meta: &EventMeta) -> Result<(), Never> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        match counts.get_mut(meta.stream_id()) {
            Some(count) => *count += 1,
            None => {
                counts.insert(Arc::clone(&meta.record().stream_id), 1);
            }
        }
        Ok(())
    }
}

/// The running deposit counter.
pub struct ReadSide {
    counts: Counts,
}

/// Registers the deposit counter on `builder`; it runs once the runtime starts.
pub fn start(builder: EvoqBuilder) -> (EvoqBuilder, ReadSide) {
    let counter = DepositCounter::default();
    let read_side = ReadSide {
        counts: Arc::clone(&counter.counts),
    };
    (builder.handler(counter), read_side)
}

impl ReadSide {
    /// Waits until the counter has processed every event up to global position `position`.
    pub async fn wait_for(&self, app: &Evoq, position: u64) -> Result<(), evoq::Error> {
        app.wait_for_named(NAME, position).without_deadline().await
    }

    /// The deposits counted, over every account.
    pub fn deposits(&self) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    /// How many accounts had at least one deposit.
    pub fn accounts(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
