use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened;

#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Failed;

#[derive(Default)]
struct Notifier;

#[event_handler(name = "notifier", retries = 3)]
impl Notifier {
    #[handles(AccountOpened, retry = 2)]
    async fn opened(&mut self, _: &AccountOpened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

fn main() {}
