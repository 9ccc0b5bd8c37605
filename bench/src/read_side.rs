//! The workload's read side for evoq: counts `MoneyDeposited` per account.
//!
//! Until event handlers (`#[event_handler]`, `EvoqBuilder::handler`, `app.wait_for`) are on
//! main, it is one task reading an [`evoq::store::Subscription`] over the app's store, filtered
//! on `MoneyDeposited`, that publishes the position it has processed. Everything the benchmark
//! knows of it is [`start`] and [`ReadSide::wait_for`] (and the totals): switching to an
//! `#[event_handler]` changes this module only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use evoq::store::{EventFilter, Subscription};
use evoq::{Event, Evoq};
use tokio::sync::{Notify, watch};

use crate::bank::MoneyDeposited;

/// The running deposit counter.
pub struct ReadSide {
    processed: watch::Receiver<u64>,
    poke: Arc<Notify>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

/// Starts counting deposits from the first event of `app`'s store.
pub fn start(app: &Evoq) -> ReadSide {
    let (publish, processed) = watch::channel(0);
    let poke = Arc::new(Notify::new());
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let mut subscription = Subscription::new(
        Arc::clone(app.store()),
        EventFilter::types([MoneyDeposited::NAME]),
        0,
    );
    let (task_poke, task_counts) = (Arc::clone(&poke), Arc::clone(&counts));
    tokio::spawn(async move {
        loop {
            // `biased`: the subscription is polled first, so when the poke wins, the
            // subscription has just read up to the store's head and found nothing to deliver:
            // its scanned position is processed. (Dropping `next_batch` loses nothing: it only
            // moves its position after a read returns.)
            let batch = tokio::select! {
                biased;
                batch = subscription.next_batch() => Some(batch),
                () = task_poke.notified() => None,
            };
            match batch {
                Some(Ok(events)) => {
                    let mut counts = task_counts.lock().unwrap_or_else(PoisonError::into_inner);
                    for event in events {
                        match counts.get_mut(event.stream_id.as_str()) {
                            Some(count) => *count += 1,
                            None => {
                                counts.insert(event.stream_id.clone(), 1);
                            }
                        }
                    }
                }
                Some(Err(error)) => {
                    eprintln!("the deposit counter stopped: {error}");
                    return;
                }
                None => {}
            }
            if !subscription.has_buffered() {
                publish.send_replace(subscription.scanned_through());
            }
        }
    });
    ReadSide {
        processed,
        poke,
        counts,
    }
}

impl ReadSide {
    /// Waits until every event up to global position `position` has been processed.
    pub async fn wait_for(&self, position: u64) {
        let mut processed = self.processed.clone();
        loop {
            if *processed.borrow_and_update() >= position {
                return;
            }
            // The counter publishes after each batch of deposits; a poke makes it publish how
            // far it scanned past the events that are not deposits too.
            self.poke.notify_one();
            if processed.changed().await.is_err() {
                return;
            }
        }
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
