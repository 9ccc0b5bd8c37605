use evoq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Pinged;

#[derive(Command)]
struct Ping {
    #[aggregate_id]
    id: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Counter;

#[aggregate(idle_timeout = "30 fortnights", hibernate_after = 60, snapshot_every = 0)]
impl Counter {
    #[handles]
    fn ping(&self, _: &Ping) -> Result<Pinged, Never> {
        Ok(Pinged)
    }

    #[apply]
    fn pinged(&mut self, _: &Pinged) {}
}

fn main() {}
