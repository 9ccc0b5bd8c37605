// A command handler's signature in an event handler block: each message names the block whose
// signature it wants, and where the other one belongs.
use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BookLent;

#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Failed;

#[derive(Default)]
struct Notifier;

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles]
    fn lent(&self, _: &BookLent, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

fn main() {}
