use std::rc::Rc;

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

async fn send_email() {}

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles]
    async fn opened(&mut self, _: &AccountOpened, _: &EventMeta) -> Result<(), Failed> {
        let not_send = Rc::new(1);
        send_email().await;
        drop(not_send);
        Ok(())
    }

    #[handles]
    async fn closed(&mut self, _: &AccountClosed, _: &EventMeta) -> Result<(), Failed> {
        send_email().await;
        Ok(())
    }
}

fn main() {}
