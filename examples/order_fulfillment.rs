//! A saga: an order is placed, its payment charged, then it is shipped. A
//! shipment that fails compensates with a refund.
//!
//! Run with `cargo run --example order_fulfillment`.

use std::time::Duration;

use evoq::prelude::*;
use evoq::store::Direction;
use serde::{Deserialize, Serialize};

// ----- events and commands -----

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

#[derive(Command)]
struct PlaceOrder {
    #[aggregate_id]
    order_id: String,
    amount: u64,
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

#[derive(Debug, thiserror::Error)]
enum ShopError {
    #[error("no carrier delivers order {0}")]
    NoCarrier(String),
}

// ----- aggregates -----

#[derive(Default)]
struct Order;

#[aggregate]
impl Order {
    #[handles]
    fn place(&self, c: &PlaceOrder) -> Result<OrderPlaced, ShopError> {
        Ok(OrderPlaced {
            order_id: c.order_id.clone(),
            amount: c.amount,
        })
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}
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
    /// Orders to "nowhere-..." cannot be shipped.
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

// ----- the saga -----

/// One instance per order, keyed by `order_id`; its state survives restarts.
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
        println!(
            "  {} for order {} failed: {}",
            failed.command(),
            failed.instance(),
            failed.error()
        );
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

async fn settle(app: &Evoq) -> Result<(), evoq::Error> {
    loop {
        let head = *app.store().head().borrow();
        app.wait_for_named("order_fulfillment", head).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        if *app.store().head().borrow() == head {
            return Ok(());
        }
    }
}

async fn history(app: &Evoq, order_id: &str) -> Result<Vec<String>, evoq::Error> {
    let mut types = Vec::new();
    for aggregate in ["Order", "Payment", "Shipment"] {
        let events = app
            .store()
            .read_stream(
                &evoq::stream_id(aggregate, order_id),
                1,
                Direction::Forward,
                usize::MAX,
            )
            .await?;
        types.extend(
            events
                .iter()
                .map(|e| format!("{aggregate}: {}", e.event_type)),
        );
    }
    Ok(types)
}

#[tokio::main]
async fn main() -> Result<(), evoq::Error> {
    let app = Evoq::builder().saga::<OrderFulfillment>().start().await?;

    for order_id in ["order-1", "nowhere-2"] {
        println!("placing {order_id}");
        app.dispatch(PlaceOrder {
            order_id: order_id.into(),
            amount: 40,
        })
        .await?;
        settle(&app).await?;
        for line in history(&app, order_id).await? {
            println!("  {line}");
        }
    }
    let open = app
        .store()
        .list_saga_instances("order_fulfillment", None, usize::MAX)
        .await?;
    println!("open instances: {open:?}");
    app.stop().await;
    Ok(())
}
