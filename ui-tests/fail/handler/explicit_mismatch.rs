use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountClosed;

#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Failed;

#[derive(Default)]
struct Notifier;

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles(AccountClosed)]
    async fn opened(&mut self, _: &AccountOpened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

fn main() {}
