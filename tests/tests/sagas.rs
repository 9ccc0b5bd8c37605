//! Sagas: instance lifecycle, persistence, re-delivery safety through
//! deterministic command ids, compensation (docs/semantics.md §6).

use std::sync::Arc;
use std::time::Duration;

use evoq::prelude::*;
use evoq::store::Direction;
use evoq::store::memory::InMemoryStore;
use evoq::{ExecutedCommand, HandlerOptions, RecordedEvent};
use serde::{Deserialize, Serialize};

// ----- the domain: orders, payments, stock, shipping, notes -----

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct OrderPlaced {
    order_id: String,
    auto_ship: bool,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct PaymentCharged {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct PaymentRefunded {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct StockReserved {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct StockReleased {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct OrderShipped {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct NoteAdded {
    note: String,
    order_id: String,
}

/// A coupon, applied to an order or to none (`order_id: None`).
#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct CouponApplied {
    code: String,
    order_id: Option<String>,
}

#[derive(Command, Debug, Clone)]
struct ApplyCoupon {
    #[aggregate_id]
    code: String,
    order_id: Option<String>,
}

#[derive(Command, Debug, Clone)]
struct PlaceOrder {
    #[aggregate_id]
    order_id: String,
    auto_ship: bool,
}

#[derive(Command, Debug, Clone)]
struct ChargePayment {
    #[aggregate_id]
    order_id: String,
}

#[derive(Command, Debug, Clone)]
struct RefundPayment {
    #[aggregate_id]
    order_id: String,
}

#[derive(Command, Debug, Clone)]
struct ReserveStock {
    #[aggregate_id]
    order_id: String,
}

#[derive(Command, Debug, Clone)]
struct ReleaseStock {
    #[aggregate_id]
    order_id: String,
}

#[derive(Command, Debug, Clone)]
struct ShipOrder {
    #[aggregate_id]
    order_id: String,
}

#[derive(Command, Debug, Clone)]
struct AddNote {
    #[aggregate_id]
    note: String,
    order_id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Order;

#[aggregate]
impl Order {
    #[handles]
    fn place(&self, c: &PlaceOrder) -> Result<OrderPlaced, Refused> {
        Ok(OrderPlaced {
            order_id: c.order_id.clone(),
            auto_ship: c.auto_ship,
        })
    }

    #[apply]
    fn placed(&mut self, _e: &OrderPlaced) {}
}

#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Payment;

#[aggregate]
impl Payment {
    #[handles]
    fn charge(&self, c: &ChargePayment) -> Result<PaymentCharged, Refused> {
        Ok(PaymentCharged {
            order_id: c.order_id.clone(),
        })
    }

    #[handles]
    fn refund(&self, c: &RefundPayment) -> Result<PaymentRefunded, Refused> {
        Ok(PaymentRefunded {
            order_id: c.order_id.clone(),
        })
    }

    #[apply]
    fn charged(&mut self, _e: &PaymentCharged) {}

    #[apply]
    fn refunded(&mut self, _e: &PaymentRefunded) {}
}

#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Stock;

#[aggregate]
impl Stock {
    #[handles]
    fn reserve(&self, c: &ReserveStock) -> Result<StockReserved, Refused> {
        Ok(StockReserved {
            order_id: c.order_id.clone(),
        })
    }

    #[handles]
    fn release(&self, c: &ReleaseStock) -> Result<StockReleased, Refused> {
        Ok(StockReleased {
            order_id: c.order_id.clone(),
        })
    }

    #[apply]
    fn reserved(&mut self, _e: &StockReserved) {}

    #[apply]
    fn released(&mut self, _e: &StockReleased) {}
}

#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Shipping;

#[aggregate]
impl Shipping {
    /// Orders whose id starts with `fail` cannot be shipped.
    #[handles]
    fn ship(&self, c: &ShipOrder) -> Result<OrderShipped, Refused> {
        if c.order_id.starts_with("fail") {
            return Err(Refused(format!("no carrier for order {}", c.order_id)));
        }
        Ok(OrderShipped {
            order_id: c.order_id.clone(),
        })
    }

    #[apply]
    fn shipped(&mut self, _e: &OrderShipped) {}
}

#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Note;

#[aggregate]
impl Note {
    #[handles]
    fn add(&self, c: &AddNote) -> Result<NoteAdded, Refused> {
        Ok(NoteAdded {
            note: c.note.clone(),
            order_id: c.order_id.clone(),
        })
    }

    #[apply]
    fn added(&mut self, _e: &NoteAdded) {}
}

#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Coupon;

#[aggregate]
impl Coupon {
    #[handles]
    fn apply(&self, c: &ApplyCoupon) -> Result<CouponApplied, Refused> {
        Ok(CouponApplied {
            code: c.code.clone(),
            order_id: c.order_id.clone(),
        })
    }

    #[apply]
    fn applied(&mut self, _e: &CouponApplied) {}
}

// ----- the sagas -----

/// A saga correlated by an `Option<String>`: `None` belongs to no instance.
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Discounts {
    codes: Vec<String>,
}

#[saga(name = "discounts")]
impl Discounts {
    #[starts(by = order_id)]
    fn applied(&mut self, e: &CouponApplied) -> Commands {
        self.codes.push(e.code.clone());
        Commands::none()
    }
}

#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Fulfillment {
    order_id: String,
    placed: bool,
    paid: bool,
    notes: u32,
    compensated: Vec<String>,
}

#[saga(name = "fulfillment")]
impl Fulfillment {
    #[starts(by = order_id)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        self.order_id = e.order_id.clone();
        self.placed = true;
        commands![ChargePayment {
            order_id: e.order_id.clone()
        }]
    }

    /// Reserves the stock and, for an order placed with `auto_ship`, ships it at once: two
    /// commands from one event (the shipment fails for `fail...` orders).
    #[continues(by = order_id)]
    fn paid(&mut self, e: &PaymentCharged) -> Commands {
        self.paid = true;
        let reserve = ReserveStock {
            order_id: e.order_id.clone(),
        };
        if self.placed_with_auto_ship() {
            commands![
                reserve,
                ShipOrder {
                    order_id: e.order_id.clone()
                }
            ]
        } else {
            Commands::none().push(reserve)
        }
    }

    #[continues(by = order_id)]
    fn noted(&mut self, _e: &NoteAdded) -> Commands {
        self.notes += 1;
        Commands::none()
    }

    #[stops(by = order_id)]
    fn shipped(&mut self, _e: &OrderShipped) -> Commands {
        Commands::none()
    }

    /// Undoes every executed step, newest first.
    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        let mut undo = Commands::none();
        for step in failed.executed() {
            self.compensated.push(step.name.clone());
            undo_step(&mut undo, step);
        }
        undo
    }
}

/// Adds the command that undoes `step` (if any) to `undo`, and marks `step` as undone.
fn undo_step(undo: &mut Commands, step: &ExecutedCommand) {
    if step.name == "ReserveStock" {
        undo.add(ReleaseStock {
            order_id: step.aggregate_id.clone(),
        });
    } else if step.name == "ChargePayment" {
        undo.add(RefundPayment {
            order_id: step.aggregate_id.clone(),
        });
    }
    undo.mark_undone(step);
}

/// A saga that tolerates its first failure (an empty compensation) and undoes everything on
/// the later ones: what `executed()` holds across failures.
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Tolerant {
    /// The names in `executed()` at each failure, in the order of the failures.
    seen: Vec<Vec<String>>,
}

#[saga(name = "tolerant")]
impl Tolerant {
    /// Charges and ships; with `auto_ship`, ships first: the shipment fails for `fail...` orders.
    #[starts(by = order_id)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        let charge = ChargePayment {
            order_id: e.order_id.clone(),
        };
        let ship = ShipOrder {
            order_id: e.order_id.clone(),
        };
        if e.auto_ship {
            commands![ship, charge]
        } else {
            commands![charge, ship]
        }
    }

    /// Reserves the stock and tries the shipment again.
    #[continues(by = order_id)]
    fn noted(&mut self, e: &NoteAdded) -> Commands {
        commands![
            ReserveStock {
                order_id: e.order_id.clone()
            },
            ShipOrder {
                order_id: e.order_id.clone()
            }
        ]
    }

    /// The first failure is tolerated (nothing undone); later ones undo every step.
    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        let names = failed.executed().iter().map(|step| step.name.clone());
        self.seen.push(names.collect());
        let mut undo = Commands::none();
        if self.seen.len() > 1 {
            for step in failed.executed() {
                undo_step(&mut undo, step);
            }
        }
        undo
    }
}

impl Fulfillment {
    fn placed_with_auto_ship(&self) -> bool {
        self.order_id.starts_with("auto") || self.order_id.starts_with("fail")
    }
}

// ----- helpers -----

async fn start(store: &Arc<InMemoryStore>) -> Evoq {
    Evoq::builder()
        .shared_store(store.clone())
        .saga::<Fulfillment>()
        .start()
        .await
        .unwrap()
}

/// Waits until the saga has handled every stored event and the store stops growing.
async fn settle(app: &Evoq) {
    settle_saga(app, "fulfillment").await;
}

/// Waits until the saga `saga` has handled every stored event and the store stops growing.
async fn settle_saga(app: &Evoq, saga: &str) {
    loop {
        let head = *app.store().head().borrow();
        tokio::time::timeout(
            Duration::from_secs(10),
            app.wait_for_named(saga, head).without_deadline(),
        )
        .await
        .expect("the saga got there in time")
        .expect("the saga runs");
        if *app.store().head().borrow() == head {
            return;
        }
    }
}

async fn stream(store: &InMemoryStore, aggregate: &str, id: &str) -> Vec<Arc<RecordedEvent>> {
    store
        .read_stream(
            &evoq::stream_id(aggregate, id),
            1,
            Direction::Forward,
            usize::MAX,
        )
        .await
        .unwrap()
}

async fn instance(store: &InMemoryStore, id: &str) -> Option<serde_json::Value> {
    saga_state(store, "fulfillment", id).await
}

async fn saga_state(store: &InMemoryStore, saga: &str, id: &str) -> Option<serde_json::Value> {
    store
        .load_saga_state(saga, id)
        .await
        .unwrap()
        .map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["state"].clone())
}

async fn place(app: &Evoq, order_id: &str) {
    app.dispatch(PlaceOrder {
        order_id: order_id.to_owned(),
        auto_ship: false,
    })
    .await
    .unwrap();
}

// ----- the tests -----

#[tokio::test]
async fn order_placed_creates_the_instance_and_dispatches_charge_payment_once() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "o1").await;
    settle(&app).await;

    let charges = stream(&store, "Payment", "o1").await;
    assert_eq!(charges.len(), 1, "ChargePayment ran once");
    let placed = &stream(&store, "Order", "o1").await[0];
    // The command went out with the event's correlation id.
    assert_eq!(
        charges[0].metadata.correlation_id,
        placed.metadata.correlation_id
    );
    let state = instance(&store, "o1").await.expect("instance o1 exists");
    assert_eq!(state["order_id"], "o1");
    assert_eq!(state["placed"], true);
    app.stop().await;
}

#[tokio::test]
async fn payment_charged_reaches_the_same_instance_and_order_shipped_stops_it() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "o1").await;
    settle(&app).await;
    // OrderPlaced started it, PaymentCharged (from its ChargePayment) continued it.
    let state = instance(&store, "o1").await.unwrap();
    assert_eq!(state["placed"], true);
    assert_eq!(state["paid"], true);
    assert_eq!(stream(&store, "Stock", "o1").await.len(), 1);
    assert_eq!(
        store
            .list_saga_instances("fulfillment", None, usize::MAX)
            .await
            .unwrap(),
        ["o1"]
    );

    app.dispatch(ShipOrder {
        order_id: "o1".into(),
    })
    .await
    .unwrap();
    settle(&app).await;
    assert!(
        instance(&store, "o1").await.is_none(),
        "stopped and removed"
    );
    assert!(
        store
            .list_saga_instances("fulfillment", None, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn continue_on_a_missing_instance_starts_it() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    app.dispatch(AddNote {
        note: "n1".into(),
        order_id: "o7".into(),
    })
    .await
    .unwrap();
    settle(&app).await;
    let state = instance(&store, "o7")
        .await
        .expect("the continue started o7");
    assert_eq!(state["notes"], 1);
    assert_eq!(state["placed"], false);
    app.stop().await;
}

#[tokio::test]
async fn stop_on_a_missing_instance_is_ignored() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    app.dispatch(ShipOrder {
        order_id: "o9".into(),
    })
    .await
    .unwrap();
    settle(&app).await;
    assert!(instance(&store, "o9").await.is_none());
    assert_eq!(store.load_checkpoint("fulfillment").await.unwrap(), Some(1));
    app.stop().await;
}

#[tokio::test]
async fn an_uncorrelated_event_creates_nothing() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    app.dispatch(AddNote {
        note: "n2".into(),
        order_id: String::new(),
    })
    .await
    .unwrap();
    settle(&app).await;
    assert!(
        store
            .list_saga_instances("fulfillment", None, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_restart_that_redelivers_the_events_does_not_dispatch_their_commands_again() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "o2").await;
    settle(&app).await;
    app.stop().await;
    drop(app);

    // Force the re-delivery of every event: the checkpoint back to the start.
    store.save_checkpoint("fulfillment", 0).await.unwrap();
    let app = start(&store).await;
    settle(&app).await;
    assert_eq!(stream(&store, "Payment", "o2").await.len(), 1);
    assert_eq!(stream(&store, "Stock", "o2").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_restart_with_the_instance_state_lost_still_runs_each_command_once() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "o3").await;
    settle(&app).await;
    app.stop().await;
    drop(app);

    // The saga runs every method again from scratch: the deterministic command ids and the
    // pipeline's idempotency are all that keep the commands from running twice.
    store.save_checkpoint("fulfillment", 0).await.unwrap();
    assert!(store.delete_saga_state("fulfillment", "o3").await.unwrap());
    let app = start(&store).await;
    settle(&app).await;
    assert_eq!(stream(&store, "Payment", "o3").await.len(), 1);
    assert_eq!(stream(&store, "Stock", "o3").await.len(), 1);
    assert_eq!(instance(&store, "o3").await.unwrap()["paid"], true);
    app.stop().await;
}

#[tokio::test]
async fn a_redelivered_event_does_not_charge_twice_however_far_the_target_stream_grew() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "o4").await;
    settle(&app).await;
    // The payment stream grows by far more than any window of recent events since.
    for _ in 0..150 {
        app.dispatch(RefundPayment {
            order_id: "o4".into(),
        })
        .await
        .unwrap();
    }
    settle(&app).await;
    app.stop().await;
    drop(app);

    store.save_checkpoint("fulfillment", 0).await.unwrap();
    assert!(store.delete_saga_state("fulfillment", "o4").await.unwrap());
    let app = start(&store).await;
    settle(&app).await;
    let charges = stream(&store, "Payment", "o4")
        .await
        .iter()
        .filter(|e| &*e.event_type == "PaymentCharged")
        .count();
    assert_eq!(charges, 1, "the command log answered the re-sent charge");
    app.stop().await;
}

#[tokio::test]
async fn a_failing_command_triggers_the_compensating_commands_exactly_once() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "fail-1").await;
    settle(&app).await;
    let payments = stream(&store, "Payment", "fail-1").await;
    assert_eq!(payments.len(), 2);
    assert_eq!(payments[1].event_type, "PaymentRefunded");
    assert_eq!(stream(&store, "Shipping", "fail-1").await.len(), 0);
    let stock = stream(&store, "Stock", "fail-1").await;
    assert_eq!(
        stock.len(),
        2,
        "reserved (before the failed shipment), released"
    );
    app.stop().await;
    drop(app);

    // Re-delivered, the failure compensates with the same ids: nothing runs twice.
    store.save_checkpoint("fulfillment", 0).await.unwrap();
    let app = start(&store).await;
    settle(&app).await;
    assert_eq!(stream(&store, "Payment", "fail-1").await.len(), 2);
    assert_eq!(stream(&store, "Stock", "fail-1").await.len(), 2);
    // The method ran again on the state it had before the event, with the same input.
    assert_eq!(
        instance(&store, "fail-1").await.unwrap()["compensated"],
        serde_json::json!(["ReserveStock", "ChargePayment"])
    );
    app.stop().await;
}

#[tokio::test]
async fn a_two_step_chain_compensates_newest_first() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "fail-2").await;
    settle(&app).await;
    let state = instance(&store, "fail-2").await.unwrap();
    assert_eq!(
        state["compensated"],
        serde_json::json!(["ReserveStock", "ChargePayment"])
    );
    let released = &stream(&store, "Stock", "fail-2").await[1];
    let refunded = &stream(&store, "Payment", "fail-2").await[1];
    assert_eq!(released.event_type, "StockReleased");
    assert_eq!(refunded.event_type, "PaymentRefunded");
    assert!(released.global_position < refunded.global_position);
    app.stop().await;
}

async fn start_tolerant(store: &Arc<InMemoryStore>) -> Evoq {
    Evoq::builder()
        .shared_store(store.clone())
        .saga::<Tolerant>()
        .start()
        .await
        .unwrap()
}

async fn note(app: &Evoq, note: &str, order_id: &str) {
    app.dispatch(AddNote {
        note: note.to_owned(),
        order_id: order_id.to_owned(),
    })
    .await
    .unwrap();
}

fn event_types(events: &[Arc<RecordedEvent>]) -> Vec<&str> {
    events.iter().map(|e| &*e.event_type).collect()
}

#[tokio::test]
async fn an_empty_compensation_keeps_the_earlier_steps_for_a_later_failure() {
    let store = Arc::new(InMemoryStore::new());
    let app = start_tolerant(&store).await;
    // Charge, then a failed shipment: tolerated, the charge stays in `executed()`.
    place(&app, "fail-t1").await;
    settle_saga(&app, "tolerant").await;
    assert_eq!(
        event_types(&stream(&store, "Payment", "fail-t1").await),
        ["PaymentCharged"]
    );
    // Reserve, then a failed shipment again: this compensation undoes the reservation and
    // the charge of the earlier event, newest first, and marks them undone.
    note(&app, "n1", "fail-t1").await;
    settle_saga(&app, "tolerant").await;
    // Reserve, then a third failed shipment: only the new reservation is left to undo.
    note(&app, "n2", "fail-t1").await;
    settle_saga(&app, "tolerant").await;

    let state = saga_state(&store, "tolerant", "fail-t1").await.unwrap();
    assert_eq!(
        state["seen"],
        serde_json::json!([
            ["ChargePayment"],
            ["ReserveStock", "ChargePayment"],
            ["ReserveStock"]
        ])
    );
    assert_eq!(
        event_types(&stream(&store, "Payment", "fail-t1").await),
        ["PaymentCharged", "PaymentRefunded"]
    );
    assert_eq!(
        event_types(&stream(&store, "Stock", "fail-t1").await),
        [
            "StockReserved",
            "StockReleased",
            "StockReserved",
            "StockReleased"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_command_that_succeeds_after_the_failing_one_of_its_batch_is_in_its_executed() {
    let store = Arc::new(InMemoryStore::new());
    let app = start_tolerant(&store).await;
    // Ship (fails), then charge: both are dispatched before the failure is compensated.
    app.dispatch(PlaceOrder {
        order_id: "fail-t2".into(),
        auto_ship: true,
    })
    .await
    .unwrap();
    settle_saga(&app, "tolerant").await;
    let state = saga_state(&store, "tolerant", "fail-t2").await.unwrap();
    assert_eq!(state["seen"], serde_json::json!([["ChargePayment"]]));
    app.stop().await;
}

#[tokio::test]
async fn an_option_key_correlates_some_and_ignores_none() {
    let store = Arc::new(InMemoryStore::new());
    let app = Evoq::builder()
        .shared_store(store.clone())
        .saga::<Discounts>()
        .start()
        .await
        .unwrap();
    let apply = |code: &str, order_id: Option<&str>| ApplyCoupon {
        code: code.to_owned(),
        order_id: order_id.map(str::to_owned),
    };
    app.dispatch(apply("none", None)).await.unwrap();
    settle_saga(&app, "discounts").await;
    let instances = || store.list_saga_instances("discounts", None, usize::MAX);
    assert!(
        instances().await.unwrap().is_empty(),
        "None creates nothing"
    );

    app.dispatch(apply("c1", Some("o1"))).await.unwrap();
    app.dispatch(apply("again-none", None)).await.unwrap();
    app.dispatch(apply("c2", Some("o1"))).await.unwrap();
    settle_saga(&app, "discounts").await;
    assert_eq!(instances().await.unwrap(), ["o1"]);
    let state = saga_state(&store, "discounts", "o1").await.unwrap();
    assert_eq!(state["codes"], serde_json::json!(["c1", "c2"]));
    app.stop().await;
}

/// The names of the tracing events emitted while it is installed.
#[derive(Clone, Default)]
struct Names(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Names {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let name = event.metadata().name().to_owned();
        self.0.lock().unwrap().push(name);
    }
}

#[tokio::test]
async fn the_telemetry_names_are_saga_names() {
    use tracing_subscriber::layer::SubscriberExt;
    let names = Names::default();
    let subscriber = tracing_subscriber::registry()
        .with(names.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let _guard = tracing::subscriber::set_default(subscriber);
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "fail-tel").await; // start, command, a failed command, compensate
    place(&app, "auto-tel").await; // runs to its stop
    settle(&app).await;
    app.stop().await;

    let seen = names.0.lock().unwrap().clone();
    for name in [
        "evoq.saga.start",
        "evoq.saga.command",
        "evoq.saga.compensate",
        "evoq.saga.stop",
    ] {
        assert!(seen.iter().any(|seen| seen == name), "{name} in {seen:?}");
    }
    assert!(
        !seen.iter().any(|name| name.contains("process_manager")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_order_placed_with_auto_ship_runs_to_the_end_and_is_removed() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "auto-1").await;
    settle(&app).await;
    assert_eq!(stream(&store, "Shipping", "auto-1").await.len(), 1);
    assert!(instance(&store, "auto-1").await.is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_after_a_saga_was_registered_dispatches_nothing() {
    let store = evoq_tests::faulty_store::FaultyStore::new();
    // An order placed by an earlier run: the saga would answer it with a charge.
    let app = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    place(&app, "o1").await;
    app.stop().await;
    let head = *store.head().borrow();

    // A second consumer, registered after the saga, cannot read its checkpoint: the start fails.
    *store.failing_checkpoint_load.lock().unwrap() = Some("late".to_owned());
    let error = Evoq::builder()
        .shared_store(store.clone())
        .saga::<Fulfillment>()
        .saga_with::<Fulfillment>(HandlerOptions::new().name("late"))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, evoq::Error::Store(_)), "{error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *store.head().borrow(),
        head,
        "a runtime that failed to start must not have run a saga's commands"
    );
}

#[tokio::test]
async fn instances_survive_a_restart_on_sqlite() {
    use evoq::store::sqlite::SqliteStore;
    let dir = evoq_tests::temp::TempDir::new("sagas");
    let path = dir.file("events.db");
    let count = |store: Arc<dyn EventStore>, aggregate: &'static str| async move {
        store
            .read_stream(
                &evoq::stream_id(aggregate, "o5"),
                1,
                Direction::Forward,
                usize::MAX,
            )
            .await
            .unwrap()
            .len()
    };
    {
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
        let app = Evoq::builder()
            .shared_store(store.clone())
            .saga::<Fulfillment>()
            .start()
            .await
            .unwrap();
        place(&app, "o5").await;
        settle(&app).await;
        app.stop().await;
    }
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let saved = store.load_saga_state("fulfillment", "o5").await.unwrap();
    assert!(saved.is_some(), "the instance survived the restart");
    store.save_checkpoint("fulfillment", 0).await.unwrap();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .saga::<Fulfillment>()
        .start()
        .await
        .unwrap();
    app.dispatch(ShipOrder {
        order_id: "o5".into(),
    })
    .await
    .unwrap();
    settle(&app).await;
    assert_eq!(count(store.clone(), "Payment").await, 1);
    assert_eq!(count(store.clone(), "Stock").await, 1);
    assert!(
        store
            .load_saga_state("fulfillment", "o5")
            .await
            .unwrap()
            .is_none()
    );
    app.stop().await;
}

// ----- reading an instance's state: `Evoq::saga_state` -----

#[tokio::test]
async fn saga_state_reads_a_started_instance_with_its_fields() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "read-1").await;
    settle(&app).await;
    let state = app
        .saga_state::<Fulfillment>("read-1")
        .await
        .unwrap()
        .expect("the instance was started");
    assert_eq!(state.order_id, "read-1");
    assert!(state.placed);
    assert!(state.paid);
    assert_eq!(state.notes, 0);
    assert!(state.compensated.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn saga_state_is_none_for_an_unknown_instance() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    assert!(
        app.saga_state::<Fulfillment>("never")
            .await
            .unwrap()
            .is_none()
    );
    app.stop().await;
}

#[tokio::test]
async fn saga_state_is_none_for_a_stopped_instance() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "read-2").await;
    settle(&app).await;
    assert!(
        app.saga_state::<Fulfillment>("read-2")
            .await
            .unwrap()
            .is_some()
    );
    app.dispatch(ShipOrder {
        order_id: "read-2".into(),
    })
    .await
    .unwrap();
    settle(&app).await;
    assert!(
        app.saga_state::<Fulfillment>("read-2")
            .await
            .unwrap()
            .is_none()
    );
    app.stop().await;
}

#[tokio::test]
async fn saga_state_of_a_saga_not_registered_is_an_error_naming_it() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    place(&app, "read-3").await;
    settle(&app).await;
    let error = app.saga_state::<Tolerant>("read-3").await.unwrap_err();
    assert!(
        matches!(&error, evoq::Error::UnknownSaga { saga: "tolerant", known } if known == "`fulfillment`"),
        "{error}"
    );
    assert!(error.to_string().contains("saga::<S>()"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn saga_state_that_does_not_decode_is_an_error_naming_saga_and_instance() {
    let store = Arc::new(InMemoryStore::new());
    let app = start(&store).await;
    store
        .save_saga_state(
            "fulfillment",
            "read-4",
            br#"{"state":{"order_id":7}}"#.to_vec(),
        )
        .await
        .unwrap();
    let error = app.saga_state::<Fulfillment>("read-4").await.unwrap_err();
    assert!(
        matches!(&error, evoq::Error::SagaState { saga: "fulfillment", instance, .. } if instance == "read-4"),
        "{error}"
    );
    app.stop().await;
}

// ----- the dispatch options of a saga's commands: `SagaOptions` -----

/// Charges each order placed, and records why its commands failed.
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Hasty {
    /// The error of each failed command, in order.
    errors: Vec<String>,
    /// How many charges it saw.
    charged: u32,
}

#[saga(name = "hasty")]
impl Hasty {
    #[starts(by = order_id)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        commands![ChargePayment {
            order_id: e.order_id.clone()
        }]
    }

    /// Sees its own charge: a saga whose commands waited for every strong handler, itself
    /// included, would wait here for the event it is handling.
    #[continues(by = order_id)]
    fn charged(&mut self, _e: &PaymentCharged) -> Commands {
        self.charged += 1;
        Commands::none()
    }

    /// Records the failure (the compensation ran).
    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        self.errors.push(failed.error().to_owned());
        Commands::none()
    }
}

/// Ships each order placed, and records why its shipments failed.
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
struct Shipper {
    errors: Vec<String>,
}

#[saga(name = "shipper")]
impl Shipper {
    #[starts(by = order_id)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        commands![ShipOrder {
            order_id: e.order_id.clone()
        }]
    }

    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        self.errors.push(failed.error().to_owned());
        Commands::none()
    }
}

#[tokio::test]
async fn a_rejected_command_is_compensated_with_the_domain_errors_own_words_as_in_saga_test() {
    let app = Evoq::builder().saga::<Shipper>().start().await.unwrap();
    place(&app, "fail-1").await;
    settle_saga(&app, "shipper").await;
    let state = app.saga_state::<Shipper>("fail-1").await.unwrap().unwrap();
    assert_eq!(state.errors, ["no carrier for order fail-1"]);
    // The test kit, given the words the aggregate's error displays, sees the same.
    SagaTest::<Shipper>::new("fail-1")
        .given(OrderPlaced {
            order_id: "fail-1".into(),
            auto_ship: false,
        })
        .when_failed::<ShipOrder>("no carrier for order fail-1")
        .then_state(|saga| assert_eq!(saga.errors, state.errors));
    app.stop().await;
}

/// Takes every charge slowly: a consistency wait on it outlives a short command timeout.
#[derive(Default)]
struct SlowLedger;

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[event_handler(name = "slow_ledger")]
impl SlowLedger {
    #[handles]
    async fn charged(&mut self, _e: &PaymentCharged, _meta: &EventMeta) -> Result<(), Never> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

async fn start_hasty(
    store: &Arc<evoq_tests::faulty_store::FaultyStore>,
    options: evoq::SagaOptions,
) -> Evoq {
    Evoq::builder()
        .shared_store(store.clone())
        .saga_with::<Hasty>(options)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_short_command_timeout_fails_a_slow_command_and_compensates_it() {
    use std::sync::atomic::Ordering;
    let store = evoq_tests::faulty_store::FaultyStore::new();
    let app = start_hasty(
        &store,
        evoq::SagaOptions::new().command_timeout(Duration::from_millis(50)),
    )
    .await;
    place(&app, "slow-1").await;
    // The saga's charge is appended after this (the test runs on one thread): it is slow.
    store.append_delay_ms.store(300, Ordering::SeqCst);
    settle_saga(&app, "hasty").await;
    let state = app.saga_state::<Hasty>("slow-1").await.unwrap().unwrap();
    assert_eq!(state.errors.len(), 1, "{:?}", state.errors);
    assert!(
        state.errors[0].contains("ChargePayment")
            && state.errors[0].contains("timed out after 50ms"),
        "{:?}",
        state.errors
    );
    store.append_delay_ms.store(0, Ordering::SeqCst);
    app.stop().await;
}

#[tokio::test]
async fn the_runtime_timeout_applies_to_a_saga_registered_without_one() {
    use std::sync::atomic::Ordering;
    let store = evoq_tests::faulty_store::FaultyStore::new();
    let app = start_hasty(&store, evoq::SagaOptions::new()).await;
    place(&app, "slow-2").await;
    store.append_delay_ms.store(300, Ordering::SeqCst);
    settle_saga(&app, "hasty").await;
    let state = app.saga_state::<Hasty>("slow-2").await.unwrap().unwrap();
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    store.append_delay_ms.store(0, Ordering::SeqCst);
    app.stop().await;
}

#[tokio::test]
async fn a_command_retry_limit_of_zero_fails_a_conflicting_command_at_once() {
    use std::sync::atomic::Ordering;
    let store = evoq_tests::faulty_store::FaultyStore::new();
    let app = start_hasty(&store, evoq::SagaOptions::new().command_retry_limit(0)).await;
    place(&app, "race-1").await;
    // A foreign writer appends to the charge's stream just before it: a version conflict.
    store.interfere.store(1, Ordering::SeqCst);
    settle_saga(&app, "hasty").await;
    let state = app.saga_state::<Hasty>("race-1").await.unwrap().unwrap();
    assert_eq!(state.errors.len(), 1, "{:?}", state.errors);
    assert!(
        state.errors[0].contains("version conflict")
            && state.errors[0].contains("after 1 attempt(s)"),
        "{:?}",
        state.errors
    );
    app.stop().await;
}

#[tokio::test]
async fn a_command_consistency_makes_each_command_wait_for_the_handlers_it_names() {
    let store = evoq_tests::faulty_store::FaultyStore::new();
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler(SlowLedger)
        .saga_with::<Hasty>(
            evoq::SagaOptions::new()
                .command_timeout(Duration::from_millis(100))
                .command_consistency(Consistency::handlers(["slow_ledger"])),
        )
        .start()
        .await
        .unwrap();
    place(&app, "wait-1").await;
    settle_saga(&app, "hasty").await;
    let state = app.saga_state::<Hasty>("wait-1").await.unwrap().unwrap();
    assert_eq!(state.errors.len(), 1, "{:?}", state.errors);
    assert!(
        state.errors[0].contains("WERE stored") && state.errors[0].contains("slow_ledger"),
        "{:?}",
        state.errors
    );
    app.stop().await;
}

#[tokio::test]
async fn a_strong_saga_never_waits_for_itself() {
    let store = Arc::new(InMemoryStore::new());
    let app = Evoq::builder()
        .shared_store(store.clone())
        .saga_with::<Hasty>(
            evoq::SagaOptions::new()
                .delivery(HandlerOptions::new().strong(true))
                .command_timeout(Duration::from_millis(500))
                .command_consistency(Consistency::Strong),
        )
        .start()
        .await
        .unwrap();
    place(&app, "self-1").await;
    settle_saga(&app, "hasty").await;
    let state = app.saga_state::<Hasty>("self-1").await.unwrap().unwrap();
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    assert_eq!(state.charged, 1);
    assert_eq!(stream(&store, "Payment", "self-1").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_command_consistency_naming_an_unknown_handler_fails_the_start() {
    let error = Evoq::builder()
        .saga_with::<Hasty>(
            evoq::SagaOptions::new().command_consistency(Consistency::handlers(["nowhere"])),
        )
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, evoq::Error::UnknownHandler { handler, .. } if handler == "nowhere"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_of_events_handled_right_at_start_wait_for_their_consistency_too() {
    let store = evoq_tests::faulty_store::FaultyStore::new();
    // Orders placed by an earlier run: the saga handles them as soon as its task starts.
    let app = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();
    place(&app, "early-1").await;
    app.stop().await;
    let app = Evoq::builder()
        .shared_store(store.clone())
        .handler(SlowLedger)
        .saga_with::<Hasty>(
            evoq::SagaOptions::new()
                .command_timeout(Duration::from_millis(100))
                .command_consistency(Consistency::handlers(["slow_ledger"])),
        )
        .start()
        .await
        .unwrap();
    settle_saga(&app, "hasty").await;
    let state = app.saga_state::<Hasty>("early-1").await.unwrap().unwrap();
    assert_eq!(state.errors.len(), 1, "{:?}", state.errors);
    assert!(
        state.errors[0].contains("WERE stored"),
        "{:?}",
        state.errors
    );
    app.stop().await;
}

// ----- `#[init]`: a new instance made from its id -----

/// No `Default`: a new instance is made from its id, which it keeps and charges by.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChargeById {
    /// The instance id, from `#[init]`.
    order_id: String,
    /// The events the instance handled.
    events: u32,
}

#[saga(name = "charge_by_id")]
impl ChargeById {
    #[init]
    fn init(instance: &str) -> Self {
        ChargeById {
            order_id: format!("kept-{instance}"),
            events: 0,
        }
    }

    /// Charges the order named by the state, not by the event.
    #[starts(by = order_id)]
    fn placed(&mut self, _e: &OrderPlaced) -> Commands {
        self.events += 1;
        commands![ChargePayment {
            order_id: self.order_id.clone()
        }]
    }
}

#[tokio::test]
async fn an_init_method_makes_the_instance_from_its_id_and_a_command_uses_the_kept_id() {
    let store = Arc::new(InMemoryStore::new());
    let app = Evoq::builder()
        .shared_store(store.clone())
        .saga::<ChargeById>()
        .start()
        .await
        .unwrap();
    place(&app, "init-1").await;
    settle_saga(&app, "charge_by_id").await;

    let state = app
        .saga_state::<ChargeById>("init-1")
        .await
        .unwrap()
        .expect("the instance was started");
    assert_eq!(
        state.order_id, "kept-init-1",
        "made by `#[init]` from its id"
    );
    assert_eq!(state.events, 1, "then the `#[starts]` method ran on it");
    // The charge went to the aggregate the state named, and only there.
    let charged = stream(&store, "Payment", "kept-init-1").await;
    assert_eq!(charged.len(), 1);
    assert_eq!(charged[0].event_type, "PaymentCharged");
    assert!(stream(&store, "Payment", "init-1").await.is_empty());
    app.stop().await;
}

// ----- a saga's name cannot take the form of the runtime's own records -----

#[tokio::test]
async fn a_saga_named_with_a_hash_is_refused_at_start_since_its_stop_records_would_clash() {
    let store = Arc::new(InMemoryStore::new());
    // `fulfillment#stopped` is where the stops of the saga `fulfillment` are recorded: a saga
    // so named would read them as its instances, and its own as stops.
    let error = Evoq::builder()
        .shared_store(store.clone())
        .saga::<Fulfillment>()
        .saga_with::<Fulfillment>(HandlerOptions::new().name("fulfillment#stopped"))
        .start()
        .await
        .unwrap_err();
    match &error {
        evoq::Error::Config { key, reason } => {
            assert_eq!(key, "saga");
            assert!(
                reason.contains("`fulfillment#stopped`") && reason.contains('#'),
                "it names the saga and the character: {reason}"
            );
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
    assert_eq!(error.kind(), evoq::ErrorKind::Config);
    assert_eq!(*store.head().borrow(), 0, "nothing ran");
}
