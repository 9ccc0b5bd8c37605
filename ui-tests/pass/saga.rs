//! A saga with every kind of method, registered with a runtime.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct PaymentCharged {
    order_id: u64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderShipped {
    order_id: String,
}

#[derive(Command)]
struct ChargePayment {
    #[aggregate_id]
    order_id: String,
}

#[derive(Command)]
struct RefundPayment {
    #[aggregate_id]
    order_id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[derive(Default)]
struct Payment;

#[aggregate]
impl Payment {
    #[handles]
    fn charge(&self, c: &ChargePayment) -> Result<OrderPlaced, Refused> {
        Ok(OrderPlaced {
            order_id: c.order_id.clone(),
        })
    }

    #[handles]
    fn refund(&self, c: &RefundPayment) -> Result<OrderShipped, Refused> {
        Ok(OrderShipped {
            order_id: c.order_id.clone(),
        })
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}

    #[apply]
    fn shipped(&mut self, _: &OrderShipped) {}
}

#[derive(Default, Serialize, Deserialize)]
struct Fulfillment {
    charged: bool,
}

#[saga(name = "fulfillment", retry = immediate, max_attempts = 3)]
impl Fulfillment {
    #[starts(by = order_id)]
    fn placed(&mut self, e: &OrderPlaced) -> Commands {
        commands![ChargePayment {
            order_id: e.order_id.clone(),
        }]
    }

    #[continues(by = order_id)]
    fn paid(&mut self, _: &PaymentCharged) -> Commands {
        self.charged = true;
        Commands::none()
    }

    #[stops(by = order_id)]
    fn shipped(&mut self, _: &OrderShipped) -> Commands {
        commands![]
    }

    #[compensates]
    fn failed(&mut self, failed: &FailedCommand) -> Commands {
        if failed.is::<ChargePayment>() {
            return Commands::none().push(RefundPayment {
                order_id: failed.aggregate_id().to_owned(),
            });
        }
        Commands::none()
    }
}

fn main() {
    assert_eq!(
        <Fulfillment as Saga>::EVENT_TYPES,
        ["OrderPlaced", "PaymentCharged", "OrderShipped"]
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let app = Evoq::builder()
            .saga::<Fulfillment>()
            .start()
            .await
            .expect("starts");
        app.stop().await;
    });
}
