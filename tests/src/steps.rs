//! An order that runs three steps through a saga, and a reminder saga with a timeout: the
//! fixtures of the saga durability tests (outbox, timeouts, kill -9).
//!
//! Every command writes to a stream of its own (`Step-<order>.<n>`, `Notice-<order>.<channel>`),
//! so that how many times it ran is the length of that stream.

use std::sync::Arc;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::{Direction, EventStore};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OrderPlaced {
    pub order: String,
    /// The step that fails (its command is rejected), if any.
    pub fail_at: Option<u8>,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OrderClosed {
    pub order: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StepDone {
    pub order: String,
    pub step: u8,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StepUndone {
    pub order: String,
    pub step: u8,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Notified {
    pub order: String,
    pub channel: String,
}

/// The reminder saga's timeout event.
#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PaymentOverdue {
    pub order: String,
}

#[derive(Command, Debug, Clone)]
pub struct PlaceOrder {
    #[aggregate_id]
    pub order: String,
    pub fail_at: Option<u8>,
}

#[derive(Command, Debug, Clone)]
pub struct CloseOrder {
    #[aggregate_id]
    pub order: String,
}

#[derive(Command, Debug, Clone)]
pub struct RunStep {
    /// `<order>.<step>`.
    #[aggregate_id]
    pub id: String,
    pub order: String,
    pub step: u8,
    pub fail: bool,
}

#[derive(Command, Debug, Clone)]
pub struct UndoStep {
    #[aggregate_id]
    pub id: String,
    pub order: String,
    pub step: u8,
}

#[derive(Command, Debug, Clone)]
pub struct Notify {
    /// `<order>.<channel>`.
    #[aggregate_id]
    pub id: String,
    pub order: String,
    pub channel: String,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum StepError {
    #[error("step {0} failed")]
    Failed(u8),
}

#[derive(Default)]
pub struct Order;

#[aggregate]
impl Order {
    #[handles]
    fn place(&self, c: &PlaceOrder) -> Result<OrderPlaced, StepError> {
        Ok(OrderPlaced {
            order: c.order.clone(),
            fail_at: c.fail_at,
        })
    }

    #[handles]
    fn close(&self, c: &CloseOrder) -> Result<OrderClosed, StepError> {
        Ok(OrderClosed {
            order: c.order.clone(),
        })
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}

    #[apply]
    fn closed(&mut self, _: &OrderClosed) {}
}

#[derive(Default)]
pub struct Step;

#[aggregate]
impl Step {
    #[handles]
    fn run(&self, c: &RunStep) -> Result<StepDone, StepError> {
        if c.fail {
            return Err(StepError::Failed(c.step));
        }
        Ok(StepDone {
            order: c.order.clone(),
            step: c.step,
        })
    }

    #[handles]
    fn undo(&self, c: &UndoStep) -> Result<StepUndone, StepError> {
        Ok(StepUndone {
            order: c.order.clone(),
            step: c.step,
        })
    }

    #[apply]
    fn done(&mut self, _: &StepDone) {}

    #[apply]
    fn undone(&mut self, _: &StepUndone) {}
}

#[derive(Default)]
pub struct Notice;

#[aggregate]
impl Notice {
    #[handles]
    fn notify(&self, c: &Notify) -> Result<Notified, StepError> {
        Ok(Notified {
            order: c.order.clone(),
            channel: c.channel.clone(),
        })
    }

    #[apply]
    fn notified(&mut self, _: &Notified) {}
}

pub fn run_step(order: &str, step: u8, fail: bool) -> RunStep {
    RunStep {
        id: format!("{order}.{step}"),
        order: order.to_owned(),
        step,
        fail,
    }
}

pub fn notify(order: &str, channel: &str) -> Notify {
    Notify {
        id: format!("{order}.{channel}"),
        order: order.to_owned(),
        channel: channel.to_owned(),
    }
}

/// Three steps, then the order is closed; closing notifies by e-mail and by SMS (two commands
/// of a `#[stops]` method). A failed step undoes the done ones, newest first.
#[derive(Default, Serialize, Deserialize)]
pub struct Checkout {
    pub order: String,
    pub fail_at: Option<u8>,
}

#[saga(name = "checkout")]
impl Checkout {
    #[starts(by = order)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        self.order = e.order.clone();
        self.fail_at = e.fail_at;
        commands![run_step(&e.order, 1, e.fail_at == Some(1))]
    }

    #[continues(by = order)]
    fn step_done(&mut self, e: &StepDone) -> Commands {
        if e.step < 3 {
            let next = e.step + 1;
            commands![run_step(&e.order, next, self.fail_at == Some(next))]
        } else {
            commands![CloseOrder {
                order: e.order.clone()
            }]
        }
    }

    #[stops(by = order)]
    fn closed(&mut self, e: &OrderClosed) -> Commands {
        commands![notify(&e.order, "email"), notify(&e.order, "sms")]
    }

    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        let mut undo = Commands::none();
        for step in failed.executed() {
            if step.name == "RunStep" {
                let (order, n) = step
                    .aggregate_id
                    .rsplit_once('.')
                    .expect("a step id is <order>.<step>");
                undo.add(UndoStep {
                    id: step.aggregate_id.clone(),
                    order: order.to_owned(),
                    step: n.parse().expect("a step number"),
                });
                undo.mark_undone(step);
            }
        }
        undo
    }
}

/// How long the reminder waits for the order to close.
pub const REMINDER_DELAY: Duration = Duration::from_millis(300);

/// Reminds by a notice when an order is still open [`REMINDER_DELAY`] after it was placed.
#[derive(Default, Serialize, Deserialize)]
pub struct Reminder {
    pub reminded: bool,
}

#[saga(name = "reminder")]
impl Reminder {
    #[starts(by = order)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        Commands::none().timeout_after(
            REMINDER_DELAY,
            PaymentOverdue {
                order: e.order.clone(),
            },
        )
    }

    #[continues(by = order)]
    fn overdue(&mut self, e: &PaymentOverdue) -> Commands {
        self.reminded = true;
        commands![notify(&e.order, "overdue")]
    }

    #[stops(by = order)]
    fn closed(&mut self, _: &OrderClosed) -> Commands {
        Commands::none()
    }
}

/// The types of the events of `aggregate` `id`, in order.
pub async fn events_of(store: &dyn EventStore, aggregate: &str, id: &str) -> Vec<String> {
    store
        .read_stream(
            &format!("{aggregate}-{id}"),
            1,
            Direction::Forward,
            usize::MAX,
        )
        .await
        .expect("read a stream")
        .iter()
        .map(|event| event.event_type.to_string())
        .collect()
}

/// How many events of type `event_type` the whole store holds.
pub async fn count_of(store: &dyn EventStore, event_type: &str) -> usize {
    let filter = evoq::store::EventFilter::types([event_type]);
    let head = *store.head().borrow();
    let (mut after, mut count) = (0, 0);
    while after < head {
        let page = store
            .read_all(after, usize::MAX, &filter)
            .await
            .expect("read the log");
        count += page.events.len();
        if page.scanned_through <= after {
            break;
        }
        after = page.scanned_through;
    }
    count
}

/// Waits until the saga (or handler) `name` has handled everything in the store and the head
/// stays still for a moment (its commands append new events it handles in turn); panics after
/// `limit`.
pub async fn settle(app: &Evoq, name: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut quiet = 0;
    let mut last = u64::MAX;
    while quiet < 3 {
        let head = *app.store().head().borrow();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::timeout(left, app.wait_for_named(name, head).without_deadline())
            .await
            .unwrap_or_else(|_| panic!("`{name}` did not reach position {head} in {limit:?}"))
            .unwrap_or_else(|error| panic!("`{name}` stopped: {error}"));
        quiet = if head == last { quiet + 1 } else { 0 };
        last = head;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The store of `app`, shared.
pub fn store_of(app: &Evoq) -> Arc<dyn EventStore> {
    Arc::clone(app.store())
}
