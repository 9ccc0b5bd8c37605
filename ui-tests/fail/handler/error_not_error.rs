use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened;

#[derive(Debug)]
struct NotAnError;

#[derive(Default)]
struct Notifier;

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles]
    async fn opened(&mut self, _: &AccountOpened, _: &EventMeta) -> Result<(), NotAnError> {
        Ok(())
    }
}

fn main() {}
