//! Sagas whose new instances are made by an `#[init]` method from the instance id, as `&str` or
//! as `String`, with no `Default` on the state.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    order_id: String,
}

#[derive(Command)]
struct ChargePayment {
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

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}
}

/// Made from `&str`.
#[derive(Serialize, Deserialize)]
struct Fulfillment {
    order_id: String,
}

#[saga(name = "fulfillment")]
impl Fulfillment {
    #[init]
    fn new(instance: &str) -> Self {
        Fulfillment {
            order_id: instance.to_owned(),
        }
    }

    #[starts(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        commands![ChargePayment {
            order_id: self.order_id.clone(),
        }]
    }
}

/// Made from `String`, with the attribute's path spelled out and the type named in the return.
#[derive(Serialize, Deserialize)]
struct Audit {
    order_id: String,
}

#[saga(name = "audit")]
impl Audit {
    #[evoq::init]
    fn from_id(instance: String) -> Audit {
        Audit { order_id: instance }
    }

    #[starts(by = order_id)]
    fn placed(&mut self, _: &OrderPlaced) -> Commands {
        Commands::none()
    }
}

pub(crate) fn main() {
    assert_eq!(<Fulfillment as Saga>::init("o1").order_id, "o1");
    assert_eq!(<Audit as Saga>::init("o2").order_id, "o2");
    // The inherent methods stay callable as written.
    assert_eq!(Fulfillment::new("o3").order_id, "o3");
    assert_eq!(Audit::from_id("o4".to_owned()).order_id, "o4");
}
