use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened;

#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Failed;

#[derive(Default)]
struct AccountNotifier;

#[event_handler(strong)]
impl AccountNotifier {
    #[handles]
    async fn opened(&mut self, _: &AccountOpened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

fn main() {
    // The fallback still implements `EventHandler`: no second error here.
    let _ = Evoq::builder().handler(AccountNotifier);
}
