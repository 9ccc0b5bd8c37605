use evoq::prelude::*;
use serde::{Deserialize, Serialize};

mod v1 {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct AccountOpened;
}

mod v2 {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct AccountOpened;
}

#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Failed;

#[derive(Default)]
struct Notifier;

#[event_handler(name = "notifier")]
impl Notifier {
    #[handles]
    async fn old(&mut self, _: &v1::AccountOpened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }

    #[handles]
    async fn new(&mut self, _: &v2::AccountOpened, _: &EventMeta) -> Result<(), Failed> {
        Ok(())
    }
}

fn main() {}
