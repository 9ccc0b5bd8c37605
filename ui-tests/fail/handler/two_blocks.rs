//! Two `#[event_handler]` blocks on one type: each implements the handler.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened {
    account: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountClosed {
    account: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Notifier;

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles]
    async fn opened(&mut self, _: &AccountOpened, _: &EventMeta) -> Result<(), Never> {
        Ok(())
    }
}

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles]
    async fn closed(&mut self, _: &AccountClosed, _: &EventMeta) -> Result<(), Never> {
        Ok(())
    }
}

fn main() {}
