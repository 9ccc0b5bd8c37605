//! `SagaTest`: sagas tested without a runtime. The first saga is the one of
//! `examples/order_fulfillment.rs` (an example cannot be imported: its types are copied, its
//! compensation without the print); the others add what it lacks: a longer chain, a timeout, a
//! stop that sends a command, an `Option` correlation field, an `#[init]` method.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use evoq::prelude::*;
use evoq::{Due, SagaOutcome};
use serde::{Deserialize, Serialize};

// ----- events and commands (those of the example, and a few more) -----

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    order_id: String,
    amount: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct PaymentCharged {
    order_id: String,
    amount: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct PaymentRefunded {
    order_id: String,
    amount: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderShipped {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct StockReserved {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct StockReleased {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderClosed {
    order_id: String,
}

/// The timeout of a checkout whose payment did not come.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct PaymentDue {
    order_id: String,
}

/// A coupon applied to an order, or to none.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CouponApplied {
    code: String,
    order_id: Option<String>,
}

#[derive(Command)]
struct ChargePayment {
    #[aggregate_id]
    order_id: String,
    amount: u64,
}

#[derive(Command)]
struct RefundPayment {
    #[aggregate_id]
    order_id: String,
    amount: u64,
}

#[derive(Command)]
struct ShipOrder {
    #[aggregate_id]
    order_id: String,
}

#[derive(Command)]
struct ReserveStock {
    #[aggregate_id]
    order_id: String,
}

#[derive(Command)]
struct ReleaseStock {
    #[aggregate_id]
    order_id: String,
}

#[derive(Command)]
struct CloseOrder {
    #[aggregate_id]
    order_id: String,
}

#[derive(Debug, thiserror::Error)]
enum ShopError {
    #[error("no carrier delivers order {0}")]
    NoCarrier(String),
}

// ----- aggregates: every command a saga sends must have a route -----

#[derive(Default)]
struct Order;

#[aggregate]
impl Order {
    #[handles]
    fn close(&self, c: &CloseOrder) -> Result<OrderClosed, ShopError> {
        Ok(OrderClosed {
            order_id: c.order_id.clone(),
        })
    }

    #[apply]
    fn closed(&mut self, _: &OrderClosed) {}
}

#[derive(Default)]
struct Payment {
    charged: u64,
}

#[aggregate]
impl Payment {
    #[handles]
    fn charge(&self, c: &ChargePayment) -> Result<PaymentCharged, ShopError> {
        Ok(PaymentCharged {
            order_id: c.order_id.clone(),
            amount: c.amount,
        })
    }

    #[handles]
    fn refund(&self, c: &RefundPayment) -> Result<PaymentRefunded, ShopError> {
        Ok(PaymentRefunded {
            order_id: c.order_id.clone(),
            amount: c.amount.min(self.charged),
        })
    }

    #[apply]
    fn charged(&mut self, e: &PaymentCharged) {
        self.charged += e.amount;
    }

    #[apply]
    fn refunded(&mut self, e: &PaymentRefunded) {
        self.charged -= e.amount;
    }
}

#[derive(Default)]
struct Shipment;

#[aggregate]
impl Shipment {
    #[handles]
    fn ship(&self, c: &ShipOrder) -> Result<OrderShipped, ShopError> {
        if c.order_id.starts_with("nowhere") {
            return Err(ShopError::NoCarrier(c.order_id.clone()));
        }
        Ok(OrderShipped {
            order_id: c.order_id.clone(),
        })
    }

    #[apply]
    fn shipped(&mut self, _: &OrderShipped) {}
}

#[derive(Default)]
struct Stock;

#[aggregate]
impl Stock {
    #[handles]
    fn reserve(&self, c: &ReserveStock) -> Result<StockReserved, ShopError> {
        Ok(StockReserved {
            order_id: c.order_id.clone(),
        })
    }

    #[handles]
    fn release(&self, c: &ReleaseStock) -> Result<StockReleased, ShopError> {
        Ok(StockReleased {
            order_id: c.order_id.clone(),
        })
    }

    #[apply]
    fn reserved(&mut self, _: &StockReserved) {}

    #[apply]
    fn released(&mut self, _: &StockReleased) {}
}

// ----- the example's saga -----

/// One instance per order, keyed by `order_id`.
#[derive(Default, Serialize, Deserialize)]
struct OrderFulfillment {
    amount: u64,
}

#[saga(name = "order_fulfillment")]
impl OrderFulfillment {
    #[starts(by = order_id)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        self.amount = e.amount;
        commands![ChargePayment {
            order_id: e.order_id.clone(),
            amount: e.amount,
        }]
    }

    #[continues(by = order_id)]
    fn paid(&mut self, e: &PaymentCharged) -> Commands {
        commands![ShipOrder {
            order_id: e.order_id.clone(),
        }]
    }

    #[stops(by = order_id)]
    fn shipped(&mut self, _: &OrderShipped) -> Commands {
        Commands::none()
    }

    /// The shipment failed: refund what was charged (every executed step, newest first).
    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        let mut undo = Commands::none();
        for step in failed.executed() {
            if step.name == <ChargePayment as evoq::Command>::NAME {
                undo.add(RefundPayment {
                    order_id: step.aggregate_id.clone(),
                    amount: self.amount,
                });
            }
            // Undone (or nothing to undo): a later failure need not see it again.
            undo.mark_undone(step);
        }
        undo
    }
}

fn placed(order_id: &str, amount: u64) -> OrderPlaced {
    OrderPlaced {
        order_id: order_id.into(),
        amount,
    }
}

fn charged(order_id: &str, amount: u64) -> PaymentCharged {
    PaymentCharged {
        order_id: order_id.into(),
        amount,
    }
}

fn shipped(order_id: &str) -> OrderShipped {
    OrderShipped {
        order_id: order_id.into(),
    }
}

fn fulfillment(instance: &str) -> SagaTest<OrderFulfillment> {
    SagaTest::new(instance)
}

// ----- the example's paths -----

#[test]
fn an_order_placed_creates_the_instance_and_charges_its_amount() {
    fulfillment("order-1")
        .when(placed("order-1", 40))
        .then_created()
        .then_command_names(["ChargePayment"])
        .then_command(|charge: &ChargePayment| {
            assert_eq!(charge.order_id, "order-1");
            assert_eq!(charge.amount, 40);
        })
        .then_state(|saga| assert_eq!(saga.amount, 40));
}

#[test]
fn the_happy_path_charges_ships_and_stops_the_instance() {
    let outcome = fulfillment("order-1")
        .given(placed("order-1", 40))
        .when(charged("order-1", 40))
        .then_command(|ship: &ShipOrder| assert_eq!(ship.order_id, "order-1"))
        .then_state(|saga| assert_eq!(saga.amount, 40));
    assert!(!outcome.created(), "the charge continued the placed order");
    assert_eq!(
        outcome
            .executed()
            .iter()
            .map(|step| step.name.as_str())
            .collect::<Vec<_>>(),
        ["ShipOrder", "ChargePayment"],
        "both commands count as executed, newest first"
    );
    let stopped = outcome
        .and_when(shipped("order-1"))
        .then_no_commands()
        .then_no_instance();
    assert!(stopped.state().is_none());
    assert!(!stopped.ignored());
}

#[test]
fn a_stop_removes_the_instance_so_a_second_stop_is_ignored() {
    fulfillment("order-1")
        .given(placed("order-1", 40))
        .when(shipped("order-1"))
        .then_no_instance()
        .and_when(shipped("order-1"))
        .then_ignored()
        .then_no_commands();
}

#[test]
fn a_stop_for_an_instance_that_never_started_is_ignored() {
    fulfillment("order-9")
        .when(shipped("order-9"))
        .then_ignored()
        .then_no_instance();
}

#[test]
fn a_start_after_a_stop_creates_a_fresh_instance() {
    let outcome = fulfillment("order-1")
        .given(placed("order-1", 40))
        .given(shipped("order-1"))
        .when(placed("order-1", 5))
        .then_created()
        .then_state(|saga| assert_eq!(saga.amount, 5));
    assert_eq!(outcome.executed().len(), 1, "the old history went with it");
}

#[test]
fn a_continue_without_an_instance_creates_one() {
    fulfillment("order-3")
        .when(charged("order-3", 7))
        .then_created()
        .then_command_names(["ShipOrder"])
        .then_state(|saga| assert_eq!(saga.amount, 0, "`placed` never ran"));
}

#[test]
fn a_start_on_an_existing_instance_runs_on_it_without_creating_another() {
    let outcome = fulfillment("order-1")
        .given(placed("order-1", 40))
        .when(placed("order-1", 15))
        .then_command(|charge: &ChargePayment| assert_eq!(charge.amount, 15))
        .then_state(|saga| assert_eq!(saga.amount, 15));
    assert!(!outcome.created());
    let history = outcome.executed();
    assert_eq!(history.len(), 2, "one history: both charges are in it");
    assert_ne!(history[0].command_id, history[1].command_id);
}

#[test]
fn an_empty_correlation_value_is_ignored() {
    let outcome = fulfillment("order-1")
        .when(placed("", 40))
        .then_ignored()
        .then_no_commands()
        .then_no_instance();
    assert!(outcome.commands().is_empty());
}

#[test]
fn a_failed_shipment_refunds_the_charge_and_marks_it_undone() {
    let outcome = fulfillment("nowhere-2")
        .given(placed("nowhere-2", 40))
        .given(charged("nowhere-2", 40))
        .when_failed::<ShipOrder>("no carrier delivers order nowhere-2")
        .then_command(|refund: &RefundPayment| {
            assert_eq!(refund.order_id, "nowhere-2");
            assert_eq!(refund.amount, 40);
        })
        .then_undone(["ChargePayment"])
        .then_state(|saga| assert_eq!(saga.amount, 40, "the instance stays"));
    let failed = outcome.failed().expect("the compensation got the failure");
    assert!(failed.is::<ShipOrder>());
    assert_eq!(failed.instance(), "nowhere-2");
    assert_eq!(failed.aggregate_id(), "nowhere-2");
    assert_eq!(failed.error(), "no carrier delivers order nowhere-2");
    assert_eq!(
        failed.executed().len(),
        1,
        "the failed command is not executed"
    );
    assert!(outcome.executed().is_empty(), "the charge left the history");
}

#[test]
fn a_step_marked_undone_is_not_compensated_again_by_a_later_failure() {
    fulfillment("nowhere-3")
        .given(placed("nowhere-3", 40))
        .given(charged("nowhere-3", 40))
        .when_failed::<ShipOrder>("no carrier")
        .then_command_names(["RefundPayment"])
        // The shipment is tried again, and fails again: nothing is left to refund.
        .and_when(charged("nowhere-3", 40))
        .then_command_names(["ShipOrder"])
        .and_when_failed::<ShipOrder>("no carrier")
        .then_no_commands()
        .then_undone([]);
}

// ----- a longer chain: newest first, partial compensation, a timeout, a stop that sends -----

/// Reserves the stock and charges, ships once paid, closes the order when shipped. Each
/// failure undoes the newest step only, so a later failure sees the others.
#[derive(Default, Serialize, Deserialize)]
struct Checkout {
    amount: u64,
    /// The names of the steps the compensations undid, in order.
    undone: Vec<String>,
    /// How many reminders came.
    reminders: u32,
}

#[saga(name = "checkout")]
impl Checkout {
    #[starts(by = order_id)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        self.amount = e.amount;
        commands![
            ReserveStock {
                order_id: e.order_id.clone(),
            },
            ChargePayment {
                order_id: e.order_id.clone(),
                amount: e.amount,
            }
        ]
        .timeout_after(
            Duration::from_secs(30 * 60),
            PaymentDue {
                order_id: e.order_id.clone(),
            },
        )
    }

    #[continues(by = order_id)]
    fn paid(&mut self, e: &PaymentCharged) -> Commands {
        commands![ShipOrder {
            order_id: e.order_id.clone(),
        }]
    }

    #[continues(by = order_id)]
    fn due(&mut self, _: &PaymentDue) -> Commands {
        self.reminders += 1;
        Commands::none()
    }

    #[stops(by = order_id)]
    fn shipped(&mut self, e: &OrderShipped) -> Commands {
        commands![CloseOrder {
            order_id: e.order_id.clone(),
        }]
    }

    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        let Some(newest) = failed.executed().first() else {
            return Commands::none();
        };
        self.undone.push(newest.name.clone());
        let order_id = newest.aggregate_id.clone();
        let undo = match newest.name.as_str() {
            "ChargePayment" => commands![RefundPayment {
                order_id,
                amount: self.amount,
            }],
            "ReserveStock" => commands![ReleaseStock { order_id }],
            _ => Commands::none(),
        };
        undo.undoes(newest)
    }
}

fn checkout(instance: &str) -> SagaTest<Checkout> {
    SagaTest::new(instance)
}

fn names(outcome: &SagaOutcome<Checkout>) -> Vec<String> {
    let failed = outcome.failed().expect("a compensation ran");
    failed
        .executed()
        .iter()
        .map(|step| step.name.clone())
        .collect()
}

#[test]
fn the_compensation_sees_the_executed_steps_newest_first() {
    let outcome = checkout("order-1")
        .given(placed("order-1", 40))
        .given(charged("order-1", 40))
        .when_failed::<ShipOrder>("no carrier");
    assert_eq!(
        names(&outcome),
        ["ChargePayment", "ReserveStock"],
        "the batch [ReserveStock, ChargePayment], newest first"
    );
    outcome
        .then_command(|refund: &RefundPayment| assert_eq!(refund.amount, 40))
        .then_undone(["ChargePayment"]);
}

#[test]
fn a_step_not_marked_undone_stays_for_the_next_failure() {
    let outcome = checkout("order-1")
        .given(placed("order-1", 40))
        .given(charged("order-1", 40))
        .when_failed::<ShipOrder>("no carrier")
        .then_undone(["ChargePayment"])
        .and_when(charged("order-1", 40))
        .and_when_failed::<ShipOrder>("no carrier again");
    assert_eq!(names(&outcome), ["ReserveStock"]);
    outcome
        .then_command(|release: &ReleaseStock| assert_eq!(release.order_id, "order-1"))
        .then_undone(["ReserveStock"])
        .then_state(|saga| assert_eq!(saga.undone, ["ChargePayment", "ReserveStock"]));
}

#[test]
fn a_failure_in_the_middle_of_a_batch_sees_the_commands_after_it_as_executed() {
    // At run time a batch is dispatched whole before its failures are compensated.
    let outcome = checkout("order-1")
        .given(placed("order-1", 40))
        .when_failed::<ReserveStock>("out of stock");
    assert_eq!(names(&outcome), ["ChargePayment"]);
    outcome
        .then_command_names(["RefundPayment"])
        .then_undone(["ChargePayment"]);
}

#[test]
fn the_commands_of_a_stop_can_still_fail_and_are_compensated_on_the_stopped_state() {
    let outcome = checkout("order-1")
        .given(placed("order-1", 40))
        .given(charged("order-1", 40))
        .when(shipped("order-1"))
        .then_command_names(["CloseOrder"])
        .then_no_instance()
        .and_when_failed::<CloseOrder>("closed already");
    assert_eq!(
        names(&outcome),
        ["ShipOrder", "ChargePayment", "ReserveStock"]
    );
    outcome
        .then_no_commands()
        .then_undone(["ShipOrder"])
        .then_no_instance();
}

#[test]
fn timeouts_are_read_back_by_type_with_when_they_are_due() {
    checkout("order-1")
        .when(placed("order-1", 40))
        .then_commands(|commands| {
            assert_eq!(commands.timeout_names(), ["PaymentDue"]);
            let timeouts = commands.timeouts_of::<PaymentDue>();
            assert_eq!(timeouts.len(), 1);
            let (event, due) = timeouts[0];
            assert_eq!(event.order_id, "order-1");
            assert_eq!(due, Due::After(Duration::from_secs(30 * 60)));
            assert!(commands.timeouts_of::<OrderShipped>().is_empty());
        })
        // A timeout event reaches its method like any other event.
        .and_when(PaymentDue {
            order_id: "order-1".into(),
        })
        .then_no_commands()
        .then_state(|saga| assert_eq!(saga.reminders, 1));
}

#[test]
fn commands_are_read_back_by_type_and_by_index() {
    checkout("order-1")
        .when(placed("order-1", 40))
        .then_commands(|commands| {
            assert_eq!(commands.names(), ["ReserveStock", "ChargePayment"]);
            assert_eq!(commands.of::<ChargePayment>().len(), 1);
            assert_eq!(commands.of::<ShipOrder>().len(), 0);
            let reserve = commands
                .get::<ReserveStock>(0)
                .expect("a ReserveStock first");
            assert_eq!(reserve.order_id, "order-1");
            assert!(commands.get::<ReserveStock>(1).is_none(), "a ChargePayment");
            assert_eq!(
                commands.get::<ChargePayment>(1).map(|charge| charge.amount),
                Some(40)
            );
            assert!(commands.get::<ChargePayment>(2).is_none(), "out of range");
        });
}

// ----- an `Option` correlation field, an `#[init]` method, what a save loses -----

/// The coupons of one order; a coupon for no order (`None`) belongs to no instance. Its new
/// instances are made from their id.
#[derive(Serialize, Deserialize)]
struct Discounts {
    order_id: String,
    codes: Vec<String>,
    /// Not saved: at run time every event finds it at its default.
    #[serde(skip)]
    in_memory: u32,
}

#[saga(name = "discounts")]
impl Discounts {
    #[init]
    fn init(instance: &str) -> Self {
        Discounts {
            order_id: instance.to_owned(),
            codes: Vec::new(),
            in_memory: 0,
        }
    }

    #[starts(by = order_id)]
    fn applied(&mut self, e: &CouponApplied) -> Commands {
        self.codes.push(e.code.clone());
        self.in_memory += 1;
        Commands::none()
    }
}

fn coupon(code: &str, order_id: Option<&str>) -> CouponApplied {
    CouponApplied {
        code: code.into(),
        order_id: order_id.map(Into::into),
    }
}

#[test]
fn a_none_correlation_is_ignored_and_a_some_creates_the_instance() {
    SagaTest::<Discounts>::new("order-1")
        .when(coupon("c0", None))
        .then_ignored()
        .then_no_instance()
        .and_when(coupon("c1", Some("order-1")))
        .then_created()
        .then_state(|saga| assert_eq!(saga.codes, ["c1"]));
}

#[test]
fn an_init_method_gets_the_instance_id_under_test() {
    SagaTest::<Discounts>::new("order-7")
        .when(coupon("c1", Some("order-7")))
        .then_state(|saga| assert_eq!(saga.order_id, "order-7"));
}

#[test]
fn a_field_the_runtime_does_not_save_is_lost_between_events_as_at_run_time() {
    SagaTest::<Discounts>::new("order-1")
        .given(coupon("c1", Some("order-1")))
        .when(coupon("c2", Some("order-1")))
        .then_state(|saga| {
            assert_eq!(saga.codes, ["c1", "c2"]);
            assert_eq!(saga.in_memory, 0, "skipped by serde: saved as nothing");
        });
}

/// Charges an order and keeps a field serde skips, which its compensation reads.
#[derive(Default, Serialize, Deserialize)]
struct Rebate {
    kept: u64,
    #[serde(skip)]
    scratch: u64,
}

#[saga(name = "rebate")]
impl Rebate {
    #[starts(by = order_id)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        self.kept = e.amount;
        self.scratch = e.amount;
        commands![ChargePayment {
            order_id: e.order_id.clone(),
            amount: e.amount,
        }]
    }

    #[continues(by = order_id)]
    fn shipped(&mut self, _: &OrderShipped) -> Commands {
        Commands::none()
    }

    #[compensates]
    fn failed(&mut self, _: &FailedCommand) -> Commands {
        commands![RefundPayment {
            order_id: format!("kept {} scratch {}", self.kept, self.scratch),
            amount: 0,
        }]
    }
}

#[test]
fn a_failure_of_the_last_events_commands_is_compensated_on_the_state_its_method_left() {
    let refund = |outcome: &SagaOutcome<Rebate>| {
        outcome.commands().of::<RefundPayment>()[0].order_id.clone()
    };
    // At run time the command fails while its event is handled: the compensation runs on the
    // state as the method left it, before it is saved.
    let now = SagaTest::<Rebate>::new("order-1")
        .when(placed("order-1", 7))
        .and_when_failed::<ChargePayment>("declined");
    assert_eq!(refund(&now), "kept 7 scratch 7");
    // After another event, the state is the saved one.
    let later = SagaTest::<Rebate>::new("order-1")
        .given(placed("order-1", 7))
        .given(shipped("order-1"))
        .when_failed::<ChargePayment>("declined");
    assert_eq!(refund(&later), "kept 7 scratch 0");
    later.then_state(|saga| assert_eq!((saga.kept, saga.scratch), (7, 0)));
}

// ----- the messages of a failing test -----

/// The message of the panic `run` raises.
fn panic_message(run: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(run)).expect_err("the assertion fails");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn other_commands_than_expected_say_which_were_expected_and_which_came() {
    let message = panic_message(|| {
        fulfillment("order-1")
            .when(placed("order-1", 40))
            .then_command_names(["ShipOrder"]);
    });
    assert!(
        message
            .contains("event `OrderPlaced` on instance `order-1` of the saga `order_fulfillment`")
            && message.contains(r#"expected: ["ShipOrder"]"#)
            && message.contains(r#"got: ["ChargePayment"]"#)
            && message.contains("a new instance"),
        "{message}"
    );
}

#[test]
fn a_missing_typed_command_names_the_type_and_the_commands_that_came() {
    let message = panic_message(|| {
        fulfillment("order-1")
            .when(placed("order-1", 40))
            .then_command(|_: &ShipOrder| {});
    });
    assert!(
        message.contains("returned 0 commands of type `ShipOrder`, expected one")
            && message.contains(r#"["ChargePayment"]"#),
        "{message}"
    );
}

#[test]
fn an_event_expected_to_be_ignored_that_ran_says_what_it_ran() {
    let message = panic_message(|| {
        fulfillment("order-1")
            .given(placed("order-1", 40))
            .when(charged("order-1", 40))
            .then_ignored();
    });
    assert!(
        message.contains("was expected to be ignored")
            && message.contains(r#"["ShipOrder"]"#)
            && message.contains("`#[continues]` method on the existing instance"),
        "{message}"
    );
}

#[test]
fn a_state_expected_after_a_stop_says_there_is_none() {
    let message = panic_message(|| {
        fulfillment("order-1")
            .given(placed("order-1", 40))
            .when(shipped("order-1"))
            .then_state(|_| {});
    });
    assert!(
        message.contains("left no instance") && message.contains("`#[stops]`"),
        "{message}"
    );
}

#[test]
fn a_live_instance_where_none_was_expected_shows_its_state() {
    let message = panic_message(|| {
        fulfillment("order-1")
            .when(placed("order-1", 40))
            .then_no_instance();
    });
    assert!(
        message.contains(r#"live with the state {"amount":40}, expected none"#),
        "{message}"
    );
}

#[test]
fn other_steps_undone_than_expected_say_which_and_what_was_executed() {
    let message = panic_message(|| {
        checkout("order-1")
            .given(placed("order-1", 40))
            .when_failed::<ChargePayment>("declined")
            .then_undone(["ReserveStock", "ChargePayment"]);
    });
    assert!(
        message.contains("the failure of `ChargePayment` on instance `order-1`")
            && message.contains(r#"expected: ["ReserveStock", "ChargePayment"]"#)
            && message.contains(r#"got: ["ReserveStock"]"#)
            && message.contains(r#"executed before, newest first: ["ReserveStock"]"#),
        "{message}"
    );
}

#[test]
fn failing_a_command_the_instance_never_sent_is_a_mistake_of_the_test() {
    let message = panic_message(|| {
        let _ = fulfillment("order-1")
            .given(placed("order-1", 40))
            .when_failed::<ShipOrder>("no carrier");
    });
    assert!(
        message.contains("sent no `ShipOrder` that could fail")
            && message.contains(r#"["ChargePayment"]"#),
        "{message}"
    );
    let message = panic_message(|| {
        let _ = fulfillment("order-1").when_failed::<ShipOrder>("no carrier");
    });
    assert!(message.contains("has no state"), "{message}");
}

#[test]
fn an_event_for_another_instance_is_a_mistake_of_the_test() {
    let message = panic_message(|| {
        let _ = fulfillment("order-1").when(placed("order-2", 40));
    });
    assert!(
        message.contains("correlates to instance `order-2`")
            && message.contains("this test is about instance `order-1`"),
        "{message}"
    );
}

#[test]
fn an_event_the_saga_does_not_take_is_a_mistake_of_the_test() {
    let message = panic_message(|| {
        let _ = fulfillment("order-1").when(PaymentRefunded {
            order_id: "order-1".into(),
            amount: 1,
        });
    });
    assert!(
        message.contains("the saga `order_fulfillment` takes no `PaymentRefunded` event")
            && message.contains("OrderPlaced"),
        "{message}"
    );
}
