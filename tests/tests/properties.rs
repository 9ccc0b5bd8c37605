//! Property tests of the aggregate core and of subscriptions, on random inputs:
//!
//! - for random command sequences (some rejected), the state a live instance decides on equals
//!   a sequential model of the accepted commands, and so does the state rebuilt from a snapshot
//!   plus the events after it (a restart), and the state replayed from the first event with no
//!   snapshot; restarts at random points of the sequence (passivation and reactivation) change
//!   nothing;
//! - for random page sizes and random interleavings of appends and reads, a subscription yields
//!   every position exactly once, in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use evoq::prelude::*;
use evoq::store::memory::InMemoryStore;
use evoq::store::{EventFilter, Subscription};
use evoq::{ExpectedVersion, NewEvent};
use evoq_tests::faulty_store::FaultyStore;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Credited {
    amount: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Debited {
    amount: u64,
}

#[derive(Command, Debug, Clone)]
struct Credit {
    #[aggregate_id]
    id: String,
    amount: u64,
}

#[derive(Command, Debug, Clone)]
struct Debit {
    #[aggregate_id]
    id: String,
    amount: u64,
}

/// Accepted only when the instance's state is exactly `balance` (and `moves`): how a test
/// reads the state an instance decides on, without a query API.
#[derive(Command, Debug, Clone)]
struct Expect {
    #[aggregate_id]
    id: String,
    balance: u64,
    moves: u64,
}

#[derive(Debug, thiserror::Error)]
enum PurseError {
    #[error("insufficient funds: balance {balance}, debit {amount}")]
    Insufficient { balance: u64, amount: u64 },
    #[error("the state is balance {balance} after {moves} moves")]
    Differs { balance: u64, moves: u64 },
}

/// A purse that snapshots every third event.
#[derive(Default, Serialize, Deserialize)]
struct Purse {
    balance: u64,
    moves: u64,
}

#[aggregate(snapshot_every = 3)]
impl Purse {
    #[handles]
    fn credit(&self, c: &Credit) -> Result<Credited, PurseError> {
        Ok(Credited { amount: c.amount })
    }

    #[handles]
    fn debit(&self, c: &Debit) -> Result<Debited, PurseError> {
        if c.amount > self.balance {
            return Err(PurseError::Insufficient {
                balance: self.balance,
                amount: c.amount,
            });
        }
        Ok(Debited { amount: c.amount })
    }

    #[handles]
    fn expect(&self, c: &Expect) -> Result<(), PurseError> {
        if (self.balance, self.moves) == (c.balance, c.moves) {
            Ok(())
        } else {
            Err(PurseError::Differs {
                balance: self.balance,
                moves: self.moves,
            })
        }
    }

    #[apply]
    fn credited(&mut self, e: &Credited) {
        self.balance += e.amount;
        self.moves += 1;
    }

    #[apply]
    fn debited(&mut self, e: &Debited) {
        self.balance -= e.amount;
        self.moves += 1;
    }
}

/// One step of a random run.
#[derive(Clone, Debug)]
enum Step {
    Credit(u64),
    Debit(u64),
    /// Stop the runtime and start a new one on the same store: every instance leaves memory
    /// and comes back from its snapshot and the events after it.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u64..100).prop_map(Step::Credit),
        4 => (1u64..150).prop_map(Step::Debit),
        1 => Just(Step::Restart),
    ]
}

async fn start(store: &Arc<FaultyStore>) -> Evoq {
    Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .expect("the runtime starts")
}

/// Whether the instance decides on exactly this state.
async fn decides_on(app: &Evoq, id: &str, balance: u64, moves: u64) -> Result<(), String> {
    app.dispatch(Expect {
        id: id.to_owned(),
        balance,
        moves,
    })
    .await
    .map(|_| ())
    .map_err(|error| error.to_string())
}

fn run_purse(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async move {
        let store = FaultyStore::new();
        let mut app = start(&store).await;
        let (mut balance, mut moves) = (0u64, 0u64);
        for step in steps {
            match step {
                Step::Credit(amount) => {
                    app.dispatch(Credit {
                        id: "p".into(),
                        amount,
                    })
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    balance += amount;
                    moves += 1;
                }
                Step::Debit(amount) => {
                    let outcome = app
                        .dispatch(Debit {
                            id: "p".into(),
                            amount,
                        })
                        .await;
                    prop_assert_eq!(outcome.is_ok(), amount <= balance, "debit {}", amount);
                    if amount <= balance {
                        balance -= amount;
                        moves += 1;
                    }
                }
                Step::Restart => {
                    app.stop().await;
                    app = start(&store).await;
                }
            }
        }
        // Live: the running instance.
        decides_on(&app, "p", balance, moves)
            .await
            .map_err(|e| TestCaseError::fail(format!("live: {e}")))?;
        app.stop().await;
        // Snapshot + tail: a new runtime activates it from its latest snapshot.
        let app = start(&store).await;
        decides_on(&app, "p", balance, moves)
            .await
            .map_err(|e| TestCaseError::fail(format!("snapshot + tail: {e}")))?;
        app.stop().await;
        // Replay: no snapshot, every event from the first.
        store.hide_snapshots.store(true, Ordering::SeqCst);
        let app = start(&store).await;
        decides_on(&app, "p", balance, moves)
            .await
            .map_err(|e| TestCaseError::fail(format!("replay: {e}")))?;
        app.stop().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn live_state_equals_replay_equals_snapshot_plus_tail(steps in prop::collection::vec(step(), 1..60)) {
        run_purse(steps)?;
    }

    #[test]
    fn a_subscription_yields_every_position_once_in_order(
        page_size in 1usize..20,
        batches in prop::collection::vec(1usize..6, 1..40),
        reads_between in prop::collection::vec(0usize..4, 1..40),
    ) {
        run_subscription(page_size, batches, reads_between)?;
    }
}

fn raw(n: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "Credited".into(),
        schema_version: 1,
        data: format!(r#"{{"amount":{n}}}"#).into_bytes(),
        metadata: Default::default(),
    }
}

/// Appends `batches` (of so many events, to streams in turn) while a subscription with
/// `page_size` reads, `reads_between[i]` reads between two batches; then drains it.
fn run_subscription(
    page_size: usize,
    batches: Vec<usize>,
    reads_between: Vec<usize>,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async move {
        let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
        // Some events before the subscription starts.
        store
            .append("Purse-before", ExpectedVersion::Any, vec![raw(0), raw(1)])
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut subscription =
            Subscription::new(Arc::clone(&store), EventFilter::All, 0).with_page_size(page_size);
        let mut seen = Vec::new();
        let mut total = 2u64;
        for (index, size) in batches.iter().enumerate() {
            let events = (0..*size).map(raw).collect();
            store
                .append(
                    &format!("Purse-s{}", index % 3),
                    ExpectedVersion::Any,
                    events,
                )
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            total += *size as u64;
            for _ in 0..reads_between[index % reads_between.len()] {
                if seen.len() as u64 == total {
                    break;
                }
                let event = subscription
                    .next()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                seen.push(event.global_position);
            }
        }
        while (seen.len() as u64) < total {
            let event = subscription
                .next()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            seen.push(event.global_position);
        }
        let expected: Vec<u64> = (1..=total).collect();
        prop_assert_eq!(seen, expected);
        // Nothing more is buffered or stored.
        prop_assert!(!subscription.has_buffered());
        prop_assert_eq!(subscription.scanned_through(), total);
        Ok(())
    })
}
